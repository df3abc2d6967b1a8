//! Model cards: `<model>/model_card.md` or `<model>/model_card.json` beside
//! the versions, describing the model for the people who run and audit it
//! (intended use, limitations, training data, evaluation, fairness
//! evaluation, owners). This module reads and parses the file; the deploy
//! pipeline keeps the card in the model's entry and the service serves it.
//!
//! - JSON: an object; the recognised fields are strings (`owners`: a string
//!   or a list of strings), `title` a string; other fields are kept.
//! - Markdown: the first `# ` heading is the title; `## ` headings open
//!   sections, matched case-insensitively to the recognised names
//!   ("Intended use", ...; `_` and `-` count as spaces); the owners are the
//!   section's bullet lines (or its lines, without bullets). Other sections
//!   are kept.
//!
//! Errors name the file and the field; a card is never required to be
//! complete: the sections it lacks are listed as missing.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Repository, files, stamp};

/// The Markdown card's file name.
pub const CARD_MARKDOWN: &str = "model_card.md";
/// The JSON card's file name.
pub const CARD_JSON: &str = "model_card.json";

/// The recognised sections: (field name, Markdown heading), in the order shown.
pub const SECTIONS: [(&str, &str); 6] = [
    ("intended_use", "Intended use"),
    ("limitations", "Limitations"),
    ("training_data", "Training data"),
    ("evaluation", "Evaluation"),
    ("fairness_evaluation", "Fairness evaluation"),
    ("owners", "Owners"),
];

/// How a card is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardFormat {
    /// `model_card.md`.
    Markdown,
    /// `model_card.json`.
    Json,
}

impl CardFormat {
    /// `markdown` or `json`, as the card endpoint shows it.
    pub const fn name(self) -> &'static str {
        match self {
            CardFormat::Markdown => "markdown",
            CardFormat::Json => "json",
        }
    }
}

/// A parsed model card.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCard {
    /// The file's name (`model_card.md` or `model_card.json`).
    pub file: String,
    /// Markdown or JSON.
    pub format: CardFormat,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
    /// The title (Markdown: the first `# ` heading; JSON: `title`), if any.
    pub title: Option<String>,
    /// The recognised text sections present (field name → text), owners aside.
    pub sections: BTreeMap<String, String>,
    /// The owners, in the card's order.
    pub owners: Vec<String>,
    /// Everything else the card holds (JSON: other fields; Markdown: other
    /// `##` sections, by heading).
    pub extra: serde_json::Map<String, Value>,
    /// The file's text.
    pub content: String,
}

impl ModelCard {
    /// The recognised sections the card lacks (owners included), in [`SECTIONS`] order.
    pub fn missing(&self) -> Vec<&'static str> {
        SECTIONS
            .iter()
            .map(|(field, _)| *field)
            .filter(|f| match *f {
                "owners" => self.owners.is_empty(),
                f => !self.sections.contains_key(f),
            })
            .collect()
    }

    /// The recognised sections present (owners included), in [`SECTIONS`] order.
    pub fn present(&self) -> Vec<&'static str> {
        let missing = self.missing();
        SECTIONS
            .iter()
            .map(|(field, _)| *field)
            .filter(|f| !missing.contains(f))
            .collect()
    }

    /// Parses `bytes`, read from the file named `file` (its name decides the format).
    pub fn parse(file: &str, bytes: &[u8]) -> Result<ModelCard, String> {
        let format = if file.ends_with(".json") {
            CardFormat::Json
        } else {
            CardFormat::Markdown
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|e| format!("{file}: not UTF-8 text (invalid byte at offset {})", e.valid_up_to()))?;
        let mut card = ModelCard {
            file: Path::new(file)
                .file_name()
                .map_or_else(|| file.to_string(), |n| n.to_string_lossy().into_owned()),
            format,
            sha256: hex::encode(Sha256::digest(bytes)),
            title: None,
            sections: BTreeMap::new(),
            owners: Vec::new(),
            extra: serde_json::Map::new(),
            content: text.to_string(),
        };
        match format {
            CardFormat::Json => parse_json(file, text, &mut card)?,
            CardFormat::Markdown => parse_markdown(file, text, &mut card)?,
        }
        Ok(card)
    }
}

/// Reads `<dir>/model_card.md` or `<dir>/model_card.json`, if there is one,
/// and stamps it into `fingerprint` (a changed card is a changed model for
/// polling). Both present is an error naming both.
pub fn read_card(repo: &Repository, dir: &Path, fingerprint: &mut String) -> Result<Option<ModelCard>, String> {
    let md = dir.join(CARD_MARKDOWN);
    let json = dir.join(CARD_JSON);
    let found: Vec<&Path> = [md.as_path(), json.as_path()]
        .into_iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok())
        .collect();
    for p in &found {
        fingerprint.push_str(&format!("card:{}:{};", p.display(), stamp(p)));
    }
    let path = match found.as_slice() {
        [] => return Ok(None),
        [one] => *one,
        _ => {
            return Err(format!(
                "{} and {}: a model has one card: remove one of them",
                md.display(),
                json.display()
            ));
        }
    };
    let shown = path.display().to_string();
    let bytes = repo.read(path, files::MAX_CARD_BYTES)?;
    ModelCard::parse(&shown, &bytes).map(Some)
}

fn parse_json(file: &str, text: &str, card: &mut ModelCard) -> Result<(), String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("{file}: invalid JSON: {e}"))?;
    let Value::Object(fields) = value else {
        return Err(format!("{file}: a model card is a JSON object"));
    };
    for (key, value) in fields {
        let wrong = |want: &str| format!("{file}: field `{key}`: {want}");
        match key.as_str() {
            "owners" => {
                card.owners = match &value {
                    Value::String(s) => vec![s.trim().to_string()],
                    Value::Array(items) => items
                        .iter()
                        .map(|v| v.as_str().map(|s| s.trim().to_string()))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| wrong("a list of strings"))?,
                    _ => return Err(wrong("a string or a list of strings")),
                };
                card.owners.retain(|o| !o.is_empty());
            }
            "title" => {
                let s = value.as_str().ok_or_else(|| wrong("a string"))?.trim();
                card.title = (!s.is_empty()).then(|| s.to_string());
            }
            k if SECTIONS.iter().any(|(f, _)| *f == k) => {
                let s = value.as_str().ok_or_else(|| wrong("a string"))?.trim();
                if !s.is_empty() {
                    card.sections.insert(key.clone(), s.to_string());
                }
            }
            _ => {
                card.extra.insert(key, value);
            }
        }
    }
    Ok(())
}

/// The recognised field a `##` heading names, if any.
fn field_of(heading: &str) -> Option<&'static str> {
    let norm = |s: &str| {
        s.replace(['_', '-'], " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    let h = norm(heading);
    SECTIONS.iter().find(|(_, name)| norm(name) == h).map(|(f, _)| *f)
}

fn heading<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(marker)?;
    // `## Title ##` is a heading too (closing hashes).
    Some(rest.trim().trim_end_matches('#').trim())
}

fn parse_markdown(file: &str, text: &str, card: &mut ModelCard) -> Result<(), String> {
    // (heading, body lines) of each `##` section.
    let mut sections: Vec<(String, Vec<&str>)> = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fenced = !fenced;
        } else if !fenced {
            if let Some(h) = heading(line, "## ") {
                sections.push((h.to_string(), Vec::new()));
                continue;
            }
            if let Some(h) = heading(line, "# ") {
                if card.title.is_none() && !h.is_empty() {
                    card.title = Some(h.to_string());
                }
                // A top-level heading ends the section before it.
                sections.push((String::new(), Vec::new()));
                continue;
            }
        }
        if let Some((_, body)) = sections.last_mut() {
            body.push(line);
        }
    }
    for (heading, body) in sections.into_iter().filter(|(h, _)| !h.is_empty()) {
        let text = body.join("\n").trim().to_string();
        match field_of(&heading) {
            Some(field) if card.sections.contains_key(field) || (field == "owners" && !card.owners.is_empty()) => {
                return Err(format!("{file}: section `{heading}` ({field}) appears twice"));
            }
            Some("owners") => card.owners = owners(&body),
            Some(field) if !text.is_empty() => {
                card.sections.insert(field.to_string(), text);
            }
            Some(_) => {}
            None if !text.is_empty() => {
                card.extra.insert(heading, Value::String(text));
            }
            None => {}
        }
    }
    Ok(())
}

/// The owners of a Markdown section: its bullet lines, or (without bullets) its non-empty lines.
fn owners(body: &[&str]) -> Vec<String> {
    let bullet = |l: &str| {
        let t = l.trim_start();
        ["- ", "* ", "+ "]
            .iter()
            .find_map(|b| t.strip_prefix(b))
            .map(|s| s.trim().to_string())
    };
    let bullets: Vec<String> = body
        .iter()
        .filter_map(|l| bullet(l))
        .filter(|s| !s.is_empty())
        .collect();
    if !bullets.is_empty() {
        return bullets;
    }
    body.iter()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD: &str = "# Credit scorer\n\nA logistic model.\n\n## Intended use\nRanking applications.\nSecond line.\n\n\
                      ## LIMITATIONS ##\nSynthetic data only.\n\n```\n## not a heading\n# nor this\n```\n\n\
                      ## Training-data\nSeeded.\n\n### Details\nMore.\n\n## Owners\n- risk-team\n* ml-platform\n\n\
                      ## Contact\nops@example.com\n";

    #[test]
    fn markdown_sections_title_and_owners() {
        let c = ModelCard::parse("m/model_card.md", MD.as_bytes()).unwrap();
        assert_eq!(c.file, "model_card.md");
        assert_eq!(c.format, CardFormat::Markdown);
        assert_eq!(c.title.as_deref(), Some("Credit scorer"));
        assert_eq!(c.sections["intended_use"], "Ranking applications.\nSecond line.");
        let limits = &c.sections["limitations"];
        assert!(limits.starts_with("Synthetic data only."), "{limits}");
        assert!(
            limits.contains("## not a heading"),
            "fenced code stays in the body: {limits}"
        );
        assert_eq!(c.sections["training_data"], "Seeded.\n\n### Details\nMore.");
        assert_eq!(c.owners, ["risk-team", "ml-platform"]);
        assert_eq!(c.missing(), ["evaluation", "fairness_evaluation"]);
        assert_eq!(c.present(), ["intended_use", "limitations", "training_data", "owners"]);
        assert_eq!(c.extra["Contact"], "ops@example.com");
        assert_eq!(c.content, MD);
        // SHA-256 of the bytes.
        assert_eq!(c.sha256, hex::encode(Sha256::digest(MD.as_bytes())));
        assert_eq!(c.sha256.len(), 64);
    }

    #[test]
    fn markdown_owners_without_bullets_and_empty_sections() {
        let c = ModelCard::parse("model_card.md", b"## owners\nalice\n\nbob\n## Evaluation\n\n").unwrap();
        assert_eq!(c.owners, ["alice", "bob"]);
        assert!(c.title.is_none());
        assert!(c.missing().contains(&"evaluation"), "an empty section is missing");
        let e = ModelCard::parse("x/model_card.md", b"## Evaluation\na\n## evaluation\nb\n").unwrap_err();
        assert!(
            e.contains("x/model_card.md") && e.contains("evaluation") && e.contains("twice"),
            "{e}"
        );
    }

    #[test]
    fn json_fields_types_and_extras() {
        let text = r#"{"title": "Classifier", "intended_use": "demos", "owners": ["a", " b "],
                       "evaluation": "golden set", "version_notes": {"v1": "first"}}"#;
        let c = ModelCard::parse("model_card.json", text.as_bytes()).unwrap();
        assert_eq!(c.format, CardFormat::Json);
        assert_eq!(c.title.as_deref(), Some("Classifier"));
        assert_eq!(c.owners, ["a", "b"]);
        assert_eq!(c.sections["intended_use"], "demos");
        assert_eq!(c.extra["version_notes"]["v1"], "first");
        assert_eq!(c.missing(), ["limitations", "training_data", "fairness_evaluation"]);
        let c = ModelCard::parse("model_card.json", br#"{"owners": "team"}"#).unwrap();
        assert_eq!(c.owners, ["team"]);
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let cases: [(&[u8], &str); 6] = [
            (b"{\"owners\": 3}", "field `owners`"),
            (b"{\"owners\": [\"a\", 1]}", "field `owners`"),
            (b"{\"limitations\": [\"x\"]}", "field `limitations`"),
            (b"{\"title\": false}", "field `title`"),
            (b"[1, 2]", "JSON object"),
            (b"{\"intended_use\": ", "invalid JSON"),
        ];
        for (bytes, want) in cases {
            let e = ModelCard::parse("m/model_card.json", bytes).unwrap_err();
            assert!(e.contains("m/model_card.json") && e.contains(want), "{e}");
        }
        let e = ModelCard::parse("m/model_card.md", b"# T\n\xff\xfe").unwrap_err();
        assert!(e.contains("m/model_card.md") && e.contains("UTF-8"), "{e}");
    }

    #[test]
    fn reads_one_card_and_refuses_two() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::new(dir.path());
        let mut fp = String::new();
        assert_eq!(read_card(&repo, dir.path(), &mut fp).unwrap(), None);
        assert!(fp.is_empty());
        std::fs::write(dir.path().join(CARD_MARKDOWN), "# A\n## Owners\n- x\n").unwrap();
        let c = read_card(&repo, dir.path(), &mut fp).unwrap().unwrap();
        assert_eq!(c.owners, ["x"]);
        assert!(fp.contains("card:"), "{fp}");
        std::fs::write(dir.path().join(CARD_JSON), "{}").unwrap();
        let e = read_card(&repo, dir.path(), &mut String::new()).unwrap_err();
        assert!(e.contains(CARD_MARKDOWN) && e.contains(CARD_JSON), "{e}");
        std::fs::remove_file(dir.path().join(CARD_MARKDOWN)).unwrap();
        // Bounded: a card over the limit is refused without reading it all.
        let big = vec![b' '; files::MAX_CARD_BYTES as usize + 1];
        std::fs::write(dir.path().join(CARD_JSON), big).unwrap();
        let e = read_card(&repo, dir.path(), &mut String::new()).unwrap_err();
        assert!(e.contains("larger than the limit"), "{e}");
    }
}
