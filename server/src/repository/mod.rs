//! The model repository in Triton's layout: `<repo>/<model>/config.pbtxt`
//! (optional) and `<repo>/<model>/<version>/model.onnx`, or one model's files
//! served under `--model-name` (see [`layout`]). This module reads the file
//! system; it decides nothing about serving.

pub mod card;
pub mod config;
pub mod files;
pub mod layout;
pub mod limits;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use switchyard_proto::inference::{ModelConfig, model_version_policy::PolicyChoice};

use crate::error::{Error, Result};
use crate::traffic::{TRAFFIC_FILE, TrafficPolicy};
pub use files::Repository;

/// Default model file name inside a version directory.
pub const DEFAULT_MODEL_FILENAME: &str = "model.onnx";

/// One model as found on disk.
#[derive(Debug, Clone)]
pub struct ModelSource {
    /// The repository it was read from (and the rules for reading its other files).
    pub repo: Repository,
    /// Model name (the directory name).
    pub name: String,
    /// The model's directory.
    pub dir: PathBuf,
    /// The parsed `config.pbtxt` (or the override given to the load API);
    /// not yet completed from the model file.
    pub config: ModelConfig,
    /// Versions selected by the version policy, ascending, with their model file.
    pub versions: Vec<(i64, PathBuf)>,
    /// The model file lies in `dir` itself (one model's files without a
    /// version directory, served as version 1).
    pub flat: bool,
    /// Changes whenever the config, the traffic policy, the model card or
    /// any selected model file changes (for polling).
    pub fingerprint: String,
    /// `<model>/traffic.yaml`: `Ok(None)` when there is none, `Err` (naming
    /// the file and the field) when it is invalid. An invalid policy does
    /// not stop the versions from loading; the previous policy keeps serving.
    pub traffic: std::result::Result<Option<TrafficPolicy>, String>,
    /// `<model>/model_card.md` or `.json` ([`card`]): `Ok(None)` when there
    /// is none, `Err` (naming the file and the field) when it is invalid; an
    /// invalid card does not stop the versions from loading either.
    pub card: std::result::Result<Option<std::sync::Arc<card::ModelCard>>, String>,
}

/// Refuses names that could escape the repository or hide files.
pub fn validate_model_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid model name '{}': use letters, digits, '_', '-' and '.', not starting with '.'",
            name.escape_debug()
        )))
    }
}

/// Names of the model directories in the repository, sorted (the one name
/// of a single-model layout).
pub fn list_models(repo: &Repository) -> Result<Vec<String>> {
    if let layout::Layout::SingleModel { name } = layout::layout(repo) {
        return Ok(vec![name]);
    }
    let root = repo.root();
    let entries = std::fs::read_dir(root)
        .map_err(|e| Error::internal(format!("cannot read model repository {}: {e}", root.display())))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| validate_model_name(n).is_ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Reads one model: its config (or `override_config`) and the versions its
/// version policy selects.
/// The config is checked against the bounds of [`limits`] here, so nothing is
/// sized from an unchecked number.
pub fn read_model(repo: &Repository, name: &str, override_config: Option<ModelConfig>) -> Result<ModelSource> {
    validate_model_name(name)?;
    let single = matches!(layout::layout(repo), layout::Layout::SingleModel { .. });
    let Some(dir) = layout::model_dir(repo, name).filter(|d| d.is_dir()) else {
        return Err(Error::not_found(format!("model '{name}' is not in the repository")));
    };
    let config_path = dir.join("config.pbtxt");
    let mut fingerprint = String::new();
    let config = match override_config {
        Some(c) => {
            fingerprint.push_str("override;");
            c
        }
        None if repo
            .is_file(&config_path)
            .map_err(|e| Error::invalid(format!("model '{name}': {e}")))? =>
        {
            let text = repo
                .read_to_string(&config_path, files::MAX_CONFIG_BYTES)
                .map_err(|e| Error::invalid(format!("model '{name}': {e}")))?;
            fingerprint.push_str(&format!("config:{};", stamp(&config_path)));
            config::parse_text(&text)
                .map_err(|e| Error::invalid(format!("model '{name}': {}: {e}", config_path.display())))?
        }
        None => ModelConfig::default(),
    };
    limits::check(&config).map_err(|e| Error::invalid(format!("model '{name}': {e}")))?;
    if single && !config.name.is_empty() && config.name != name {
        // The one model of a single-model layout is named on the command line, not by a directory.
        return Err(Error::invalid(format!(
            "model '{name}': config name '{}' does not match --model-name '{name}' (leave `name` out of config.pbtxt)",
            config.name.escape_debug()
        )));
    }
    let filename = if config.default_model_filename.is_empty() {
        DEFAULT_MODEL_FILENAME
    } else {
        config.default_model_filename.as_str()
    };
    if filename.contains('/') || filename.starts_with('.') {
        return Err(Error::invalid(format!(
            "model '{name}': default_model_filename '{filename}' must be a plain file name"
        )));
    }
    let mut available: Vec<i64> = std::fs::read_dir(&dir)
        .map_err(|e| Error::internal(format!("cannot read {}: {e}", dir.display())))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| parse_version(&n))
        .collect();
    available.sort_unstable();
    // One model's files with the model file beside the config: version 1.
    let flat = available.is_empty() && single && std::fs::symlink_metadata(dir.join(filename)).is_ok();
    if flat {
        available.push(1);
    }
    let source_dir = |v: i64| if flat { dir.clone() } else { dir.join(v.to_string()) };
    let selected = select_versions(&config, &available);
    let mut versions = Vec::with_capacity(selected.len());
    for v in selected {
        let mut file = source_dir(v).join(filename);
        if file.is_dir() {
            // ONNX models may be a directory holding model.onnx (external data).
            file = file.join(DEFAULT_MODEL_FILENAME);
        }
        fingerprint.push_str(&format!("{v}:{};", stamp(&file)));
        // A changed golden set is a changed version: it is checked again.
        stamp_tree(&source_dir(v).join("validation"), 2, &mut fingerprint);
        versions.push((v, file));
    }
    let traffic = read_traffic(repo, &dir, &versions, &mut fingerprint);
    let card = card::read_card(repo, &dir, &mut fingerprint).map(|c| c.map(std::sync::Arc::new));
    Ok(ModelSource {
        repo: repo.clone(),
        name: name.to_string(),
        dir,
        config,
        versions,
        flat,
        fingerprint,
        traffic,
        card,
    })
}

impl ModelSource {
    /// The directory of `version`'s files (model file, golden set): the
    /// model's directory itself in a flat layout.
    pub fn version_dir(&self, version: i64) -> PathBuf {
        if self.flat {
            self.dir.clone()
        } else {
            self.dir.join(version.to_string())
        }
    }
}

/// Reads and validates `<dir>/traffic.yaml`, if there is one: its version
/// targets must be among the selected versions (labels are resolved per request).
fn read_traffic(
    repo: &Repository,
    dir: &Path,
    versions: &[(i64, PathBuf)],
    fingerprint: &mut String,
) -> std::result::Result<Option<TrafficPolicy>, String> {
    let path = dir.join(TRAFFIC_FILE);
    if !repo.is_file(&path)? {
        return Ok(None);
    }
    fingerprint.push_str(&format!("traffic:{};", stamp(&path)));
    let shown = path.display().to_string();
    let text = repo.read_to_string(&path, files::MAX_CONFIG_BYTES)?;
    let policy = TrafficPolicy::from_yaml(&text, &shown)?;
    check_traffic_targets(&policy, &shown, &versions.iter().map(|(v, _)| *v).collect::<Vec<_>>())?;
    Ok(Some(policy))
}

/// Every version number the policy names is one of `versions`.
pub fn check_traffic_targets(policy: &TrafficPolicy, file: &str, versions: &[i64]) -> std::result::Result<(), String> {
    for (field, target) in policy.targets() {
        if let Some(v) = target.version()
            && !versions.contains(&v)
        {
            return Err(format!(
                "{file}: field `{field}`: version {v} is not among the versions selected ({versions:?})"
            ));
        }
    }
    Ok(())
}

/// Version directories are positive integers without leading zeros.
pub(crate) fn parse_version(name: &str) -> Option<i64> {
    let v: i64 = name.parse().ok()?;
    (v > 0 && v.to_string() == name).then_some(v)
}

/// Applies `version_policy` (default: latest 1) to the available versions.
pub fn select_versions(config: &ModelConfig, available: &[i64]) -> Vec<i64> {
    match config.version_policy.as_ref().and_then(|p| p.policy_choice.as_ref()) {
        Some(PolicyChoice::All(_)) => available.to_vec(),
        Some(PolicyChoice::Specific(s)) => available.iter().copied().filter(|v| s.versions.contains(v)).collect(),
        Some(PolicyChoice::Latest(l)) => {
            let n = (l.num_versions.max(1) as usize).min(available.len());
            available[available.len() - n..].to_vec()
        }
        None => available.last().map(|v| vec![*v]).unwrap_or_default(),
    }
}

/// Appends the stamps of the files under `dir` (down to `depth` levels), sorted.
fn stamp_tree(dir: &Path, depth: usize, out: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            if depth > 1 {
                stamp_tree(&p, depth - 1, out);
            }
        } else {
            out.push_str(&format!("{}:{};", p.display(), stamp(&p)));
        }
    }
}

fn stamp(path: &Path) -> String {
    match std::fs::metadata(path) {
        Ok(m) => {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{}@{mtime}", m.len())
        }
        Err(_) => "missing".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_proto::inference::{ModelVersionPolicy, model_version_policy};

    #[test]
    fn model_names_cannot_escape() {
        for bad in ["", "..", "../x", "a/b", ".hidden", "a\\b", "a\0b", "x y"] {
            assert!(validate_model_name(bad).is_err(), "{bad:?}");
        }
        for good in ["simple", "resnet-50", "a_b.c"] {
            validate_model_name(good).unwrap();
        }
    }

    #[test]
    fn version_directories_and_policies() {
        assert_eq!(parse_version("3"), Some(3));
        for bad in ["0", "01", "-1", "v1", "1.0"] {
            assert_eq!(parse_version(bad), None, "{bad}");
        }
        let avail = [1, 2, 5];
        let with = |p| ModelConfig {
            version_policy: Some(ModelVersionPolicy { policy_choice: Some(p) }),
            ..Default::default()
        };
        assert_eq!(select_versions(&ModelConfig::default(), &avail), [5]);
        assert_eq!(
            select_versions(
                &with(PolicyChoice::Latest(model_version_policy::Latest { num_versions: 2 })),
                &avail
            ),
            [2, 5]
        );
        assert_eq!(
            select_versions(&with(PolicyChoice::All(model_version_policy::All {})), &avail),
            [1, 2, 5]
        );
        assert_eq!(
            select_versions(
                &with(PolicyChoice::Specific(model_version_policy::Specific {
                    versions: vec![1, 7]
                })),
                &avail
            ),
            [1]
        );
    }
}
