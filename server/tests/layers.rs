//! The server crate's layers: every `crate::<module>` path in a module's
//! source (in `use` items, grouped imports and inline paths) must name a
//! module of a lower layer, so dependencies point one way and no two modules
//! need each other. The README's "Layout" section draws the same order;
//! `scripts/module-graph.sh` shows the graph as cargo-modules sees it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level modules by layer, lowest first. A module may use only modules
/// of lower layers. A new module gets a row here.
const LAYERS: &[&[&str]] = &[
    &["error", "util", "explain"],
    &["tensor", "metrics", "trace"],
    &["model", "net", "stats", "access", "traffic"],
    &["repository", "drift", "predlog", "otlp", "quality"],
    &["config", "batching"],
    &["registry"],
    &["admission"],
    &["lifecycle"],
    &["service"],
    &["http", "grpc", "validate"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The top-level modules named by `crate::` paths in `source`.
fn crate_paths(source: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = source;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        // `$crate::` and `other_crate::` are not this crate.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::b, c, d::{e, f}}`: the first segment of each path at depth 1.
            let (mut depth, mut start) = (1usize, true);
            let mut ident = String::new();
            for c in group.chars() {
                if depth == 1 && start && (c.is_alphanumeric() || c == '_') {
                    ident.push(c);
                    continue;
                }
                if !ident.is_empty() {
                    found.insert(std::mem::take(&mut ident));
                    start = false;
                }
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => start = true,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
            }
        } else {
            let ident: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            found.insert(ident);
        }
    }
    found
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_uses_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .to_string();
        let module = first.trim_end_matches(".rs").to_string();
        // The crate root and the binary sit above every layer; tests may reach anywhere.
        if module == "lib" || module == "main" || rel.ends_with("tests.rs") {
            continue;
        }
        let source = std::fs::read_to_string(file).unwrap();
        for used in crate_paths(&source) {
            if used != module {
                edges.entry(module.clone()).or_default().insert(used);
            }
        }
    }
    assert!(edges.len() > 10, "the scan found the modules: {edges:?}");
    let mut problems = Vec::new();
    for (module, used) in &edges {
        let Some(own) = layer_of(module) else {
            problems.push(format!("module `{module}` has no layer in LAYERS"));
            continue;
        };
        for u in used {
            match layer_of(u) {
                None => problems.push(format!("`{module}` uses `crate::{u}`, which is not a layered module")),
                Some(l) if l >= own => problems.push(format!(
                    "`{module}` (layer {own}) uses `{u}` (layer {l}): dependencies must point down"
                )),
                Some(_) => {}
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_scanner_reads_grouped_and_inline_paths() {
    let found =
        crate_paths("use crate::{a::b, c, d::{e, f}};\nlet x = crate::g::h();\nuse other_crate::z;\nmacro $crate::y;");
    let found: Vec<&str> = found.iter().map(String::as_str).collect();
    assert_eq!(found, ["a", "c", "d", "g"]);
}
