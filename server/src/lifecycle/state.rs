//! Routing state kept across restarts (`--state-dir`): per model, its labels
//! and its traffic override, as `<dir>/<model>.json`, written atomically
//! (a temporary file, then a rename) after every change and applied again
//! when the model first loads in a new process. Without a state directory
//! nothing is kept.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::registry::ModelEntry;
use crate::repository;
use crate::traffic::TrafficPolicy;

/// What is kept of a model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    /// Label → version.
    #[serde(default)]
    pub labels: BTreeMap<String, i64>,
    /// The traffic override, if one is set.
    #[serde(default)]
    pub traffic_override: Option<TrafficPolicy>,
}

/// Writes `entry`'s labels and override to `<dir>/<model>.json`.
pub fn save(dir: &Path, model: &str, entry: &ModelEntry) -> std::io::Result<()> {
    let saved = Saved {
        labels: entry.labels.clone(),
        traffic_override: entry.traffic_override.clone(),
    };
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{model}.json"));
    let tmp = dir.join(format!(".{model}.json.tmp"));
    let text = serde_json::to_vec_pretty(&saved).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)
}

/// Reads `<dir>/<model>.json`; `Ok(None)` when there is none.
pub fn load(dir: &Path, model: &str) -> Result<Option<Saved>, String> {
    let path = dir.join(format!("{model}.json"));
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Applies `saved` to a freshly loaded `entry`: labels of loaded versions,
/// and the override when its version targets are loaded. Returns what was
/// skipped, for the log.
pub fn apply(saved: Saved, entry: &mut ModelEntry) -> Vec<String> {
    let mut skipped = Vec::new();
    for (label, v) in saved.labels {
        if entry.versions.contains_key(&v) {
            entry.labels.insert(label, v);
        } else {
            skipped.push(format!("label '{label}' -> {v}: version not loaded"));
        }
    }
    if let Some(p) = saved.traffic_override {
        let loaded: Vec<i64> = entry.versions.keys().copied().collect();
        match repository::check_traffic_targets(&p, "saved override", &loaded) {
            Ok(()) => entry.traffic_override = Some(p),
            Err(e) => skipped.push(e),
        }
    }
    skipped
}
