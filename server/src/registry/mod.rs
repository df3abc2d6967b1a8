//! What is being served: model name → loaded versions, labels and the default
//! route, behind an `ArcSwap` so the request path reads it without locks, and
//! every change (publish, retire, label, default, rollback) is one atomic swap.
//! Also the repository index and its notes (why a version is not serving).
//!
//! This module only holds and changes the table; loading, auditing and the
//! automatic rollback are the deploy pipeline's (`lifecycle`), which
//! serializes the changes to each model. A request holds an `Arc` of the
//! version it was routed to; a retired version closes its queue when its last
//! request is done, and its executors exit and free their sessions.

pub mod route;
pub mod window;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use switchyard_proto::inference::ModelConfig;

use crate::batching::BatchQueue;
use crate::drift::VersionDrift;
use crate::error::{Error, ErrorKind, Result};
use crate::metrics::VersionMetrics;
use crate::model::Device;
use crate::predlog::ModelLogPolicy;
use crate::repository::{self, Repository};
use crate::stats::VersionStats;
use crate::tensor::DataType;
use crate::traffic::TrafficPolicy;
pub use route::RouteReason;
pub use window::HealthWindow;

/// Previous targets remembered per label (and for the default) for rollback.
pub const ROLLBACK_HISTORY: usize = 16;

/// A tensor as requests must present it.
#[derive(Debug, Clone)]
pub struct TensorSpec {
    /// Name.
    pub name: String,
    /// Datatype.
    pub datatype: DataType,
    /// Dims without the batch dimension (when the model batches); -1 = any.
    pub dims: Vec<i64>,
    /// May be left out of a request.
    pub optional: bool,
    /// The model's tensor is a scalar (shape `[]`) that the config describes
    /// as `dims: [1]`, Triton's way: requests may send `[1]` or `[]`.
    pub scalar: bool,
}

/// One loaded, serving model version.
#[derive(Debug)]
pub struct VersionHandle {
    /// Model name.
    pub model: String,
    /// Version number.
    pub version: i64,
    /// Version as a string, as the protocol carries it.
    pub version_label: String,
    /// Effective (completed) config.
    pub config: ModelConfig,
    /// The config as read (before completion): an unchanged file with an
    /// unchanged config is kept across reloads instead of being reloaded.
    pub source_config: ModelConfig,
    /// Inputs requests must send.
    pub inputs: Vec<TensorSpec>,
    /// Outputs the model produces.
    pub outputs: Vec<TensorSpec>,
    /// Rows per request at most; 0 = no batch dimension.
    pub max_batch_size: usize,
    /// Executor instances.
    pub instances: usize,
    /// The version's scheduler.
    pub queue: BatchQueue,
    /// Triton-style statistics.
    pub stats: Arc<VersionStats>,
    /// Prometheus handles.
    pub metrics: VersionMetrics,
    /// Errors and latency since load: written by the service for every
    /// request it routed here, read by the automatic rollback watcher.
    pub health: HealthWindow,
    /// Where its sessions run.
    pub device: Device,
    /// SHA-256 of the model file.
    pub digest: String,
    /// SHA-256 of the effective config (canonical JSON).
    pub config_digest: String,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// Prediction log policy (`prediction_log.*` config parameters), if opted in.
    pub log_policy: Option<ModelLogPolicy>,
    /// Drift monitor (`drift.*` parameters or a shipped reference profile), if on.
    pub drift: Option<Arc<VersionDrift>>,
    /// Quality and fairness monitoring (`quality.*` / `fairness.*` parameters), if on.
    pub quality: Option<Arc<crate::quality::VersionQuality>>,
    /// Why the version serves in a lesser state (a synthetic warm-up that
    /// failed); shown as the repository index's `reason`.
    pub warning: Option<String>,
}

impl VersionHandle {
    /// Provenance facts, for metadata and statistics.
    pub fn provenance(&self) -> Vec<(String, String)> {
        vec![
            ("model_sha256".into(), self.digest.clone()),
            ("config_sha256".into(), self.config_digest.clone()),
            (
                "loaded_at".into(),
                crate::util::rfc3339(self.loaded_at, crate::util::Precision::Millis),
            ),
        ]
    }
}

impl Drop for VersionHandle {
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// A model's serving versions, labels and default route.
#[derive(Debug, Default, Clone)]
pub struct ModelEntry {
    /// Versions, ascending.
    pub versions: BTreeMap<i64, Arc<VersionHandle>>,
    /// Label → version (`stable`, `canary`, ...).
    pub labels: BTreeMap<String, i64>,
    /// The default route pinned to a version (rollback); `None` = the latest.
    pub pin: Option<i64>,
    /// Previous default versions, most recent last.
    pub history: Vec<i64>,
    /// Previous versions of each label, most recent last.
    pub label_history: BTreeMap<String, Vec<i64>>,
    /// The traffic policy read from `<model>/traffic.yaml`, if any.
    pub traffic_file: Option<TrafficPolicy>,
    /// The policy set through the admin API: wins over the file until cleared.
    pub traffic_override: Option<TrafficPolicy>,
    /// The model card (`model_card.md` / `.json`), if the model has a valid one.
    pub card: Option<Arc<repository::card::ModelCard>>,
}

impl ModelEntry {
    /// The version requests that name none go to: the pinned one while it
    /// is loaded, else the latest.
    pub fn default_version(&self) -> Option<i64> {
        self.pin
            .filter(|v| self.versions.contains_key(v))
            .or_else(|| self.versions.keys().next_back().copied())
    }

    /// The version a request names (number or label), or the default.
    pub fn resolve(&self, model: &str, version: Option<&str>) -> Result<Arc<VersionHandle>> {
        let number = match version.filter(|v| !v.is_empty()) {
            None => self.default_version().ok_or_else(|| {
                Error::not_found(format!(
                    "Request for unknown model: '{model}' has no available versions"
                ))
            })?,
            Some(v) => match v.parse::<i64>() {
                Ok(n) => n,
                Err(_) => *self.labels.get(v).ok_or_else(|| {
                    Error::not_found(format!(
                        "Request for unknown model: '{model}' has no version or label '{v}'"
                    ))
                })?,
            },
        };
        self.versions.get(&number).cloned().ok_or_else(|| {
            Error::not_found(match version {
                Some(v) if !v.is_empty() && v.parse::<i64>().is_err() => {
                    format!(
                        "Request for unknown model: '{model}' label '{v}' points to version {number}, which is \
                         not loaded"
                    )
                }
                _ => format!("Request for unknown model: '{model}' version {number} is not found"),
            })
        })
    }
}

/// Triton's message for a model that is not loaded, which its clients look for.
pub fn unknown_model(model: &str) -> Error {
    Error::not_found(format!("Request for unknown model: '{model}' is not found"))
}

fn remember(history: &mut Vec<i64>, version: i64) {
    history.retain(|&v| v != version);
    history.push(version);
    if history.len() > ROLLBACK_HISTORY {
        history.remove(0);
    }
}

/// A routing change as applied: the version it concerns and what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The version now concerned (the label's or the default's target).
    pub version: Option<i64>,
    /// That version's model file digest.
    pub digest: Option<String>,
    /// What changed, for the audit trail.
    pub reason: String,
}

/// A change of the default route made by publishing new versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    /// The default before, if any.
    pub from: Option<i64>,
    /// The default now.
    pub to: i64,
    /// What changed, for the audit trail.
    pub reason: String,
}

impl ModelEntry {
    /// Points a label at a loaded version.
    pub fn set_label(&mut self, name: &str, label: &str, version: i64) -> Result<(Option<i64>, String)> {
        validate_label(label)?;
        if !self.versions.contains_key(&version) {
            return Err(Error::new(
                ErrorKind::FailedPrecondition,
                format!("model '{name}' version {version} is not loaded: a label can only name a loaded version"),
            ));
        }
        let before = self.labels.insert(label.to_string(), version);
        if let Some(b) = before.filter(|&b| b != version) {
            remember(self.label_history.entry(label.to_string()).or_default(), b);
        }
        Ok((
            Some(version),
            match before {
                Some(b) => format!("label '{label}': {b} -> {version}"),
                None => format!("label '{label}' -> {version}"),
            },
        ))
    }

    /// Removes a label.
    pub fn delete_label(&mut self, name: &str, label: &str) -> Result<(Option<i64>, String)> {
        match self.labels.remove(label) {
            Some(v) => {
                self.label_history.remove(label);
                Ok((Some(v), format!("label '{label}' removed (was {v})")))
            }
            None => Err(Error::not_found(format!("model '{name}' has no label '{label}'"))),
        }
    }

    /// Pins the default route to a loaded version, or (`None`) back to the latest.
    pub fn set_default(&mut self, name: &str, version: Option<i64>) -> Result<(Option<i64>, String)> {
        let before = self.default_version();
        if let Some(v) = version
            && !self.versions.contains_key(&v)
        {
            return Err(Error::new(
                ErrorKind::FailedPrecondition,
                format!("model '{name}' version {v} is not loaded"),
            ));
        }
        self.pin = version;
        let after = self.default_version();
        if let Some(b) = before.filter(|&b| Some(b) != after) {
            remember(&mut self.history, b);
        }
        Ok((
            after,
            match version {
                Some(v) => format!("default route pinned to {v}"),
                None => "default route follows the latest version".into(),
            },
        ))
    }

    /// Points the default route (or a label) back to `to`, or to the most
    /// recent previous target that is still loaded; `why` is appended to the reason.
    pub fn roll_back(
        &mut self,
        name: &str,
        label: Option<&str>,
        to: Option<i64>,
        why: &str,
    ) -> Result<(Option<i64>, String)> {
        let (current, history) = match label {
            None => (self.default_version(), self.history.clone()),
            Some(l) => (
                Some(
                    *self
                        .labels
                        .get(l)
                        .ok_or_else(|| Error::not_found(format!("model '{name}' has no label '{l}'")))?,
                ),
                self.label_history.get(l).cloned().unwrap_or_default(),
            ),
        };
        let chosen = match to {
            Some(v) => v,
            None => *history
                .iter()
                .rev()
                .find(|v| Some(**v) != current && self.versions.contains_key(v))
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::FailedPrecondition,
                        format!(
                            "no previous version of model '{name}' is loaded to roll back to (keep it loaded, \
                             e.g. version_policy: {{ latest: {{ num_versions: 2 }} }})"
                        ),
                    )
                })?,
        };
        if !self.versions.contains_key(&chosen) {
            return Err(Error::new(
                ErrorKind::FailedPrecondition,
                format!("model '{name}' version {chosen} is not loaded"),
            ));
        }
        match label {
            None => {
                self.pin = Some(chosen);
                if let Some(c) = current.filter(|&c| c != chosen) {
                    remember(&mut self.history, c);
                }
            }
            Some(l) => {
                self.labels.insert(l.to_string(), chosen);
                if let Some(c) = current.filter(|&c| c != chosen) {
                    remember(self.label_history.entry(l.to_string()).or_default(), c);
                }
            }
        }
        let what = label.map_or("default route".to_string(), |l| format!("label '{l}'"));
        let mut reason = format!("{what}: {} -> {chosen}", current.map_or("-".into(), |c| c.to_string()));
        if !why.is_empty() {
            reason.push_str(": ");
            reason.push_str(why);
        }
        Ok((Some(chosen), reason))
    }

    /// After new versions replaced `old`'s: a version newer than every
    /// version served before is a new deploy and clears a rollback pin; a
    /// changed default route is remembered in the history and returned.
    pub fn promote_if_changed(&mut self, name: &str, old: Option<&ModelEntry>) -> Option<Promotion> {
        let old_default = old.and_then(ModelEntry::default_version);
        let newest_before = old.and_then(|o| o.versions.keys().next_back().copied());
        if let (Some(pin), Some(newest)) = (self.pin, self.versions.keys().next_back().copied())
            && newest_before.is_some_and(|b| newest > b)
        {
            tracing::info!(
                model = name,
                pin,
                newest,
                "a newer version is deployed: the rollback pin is cleared"
            );
            self.pin = None;
        }
        let new = self.default_version()?;
        if Some(new) == old_default {
            return None;
        }
        if let Some(prev) = old_default {
            remember(&mut self.history, prev);
        }
        Some(Promotion {
            from: old_default,
            to: new,
            reason: match old_default {
                Some(p) => format!("default route {p} -> {new}"),
                None => format!("default route -> {new}"),
            },
        })
    }
}

/// State of a model in the repository index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Model name.
    pub name: String,
    /// Version ("" for the model as a whole).
    pub version: String,
    /// READY, UNAVAILABLE or LOADING.
    pub state: String,
    /// Why, when not READY (or why a reload was refused while the previous load serves).
    pub reason: String,
}

impl IndexEntry {
    /// A version (or, with `version` empty, the model) that is not serving, and why.
    pub fn unavailable(name: &str, version: &str, reason: &str) -> IndexEntry {
        IndexEntry {
            name: name.into(),
            version: version.into(),
            state: "UNAVAILABLE".into(),
            reason: reason.into(),
        }
    }
}

/// The routing table and the index notes.
///
/// `models` is written only by the deploy pipeline (`lifecycle`), under its
/// per-model control lock, and read lock-free by every request. `notes` is
/// written by the pipeline after each load or unload and read by the index.
#[derive(Debug, Default)]
pub struct Registry {
    models: ArcSwap<BTreeMap<String, Arc<ModelEntry>>>,
    /// Failures and unloads to show in the repository index.
    notes: Mutex<BTreeMap<String, Vec<IndexEntry>>>,
}

impl Registry {
    /// An empty table.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The model's entry, if loaded.
    pub fn get(&self, model: &str) -> Option<Arc<ModelEntry>> {
        self.models.load().get(model).cloned()
    }

    /// Routes a request to a version.
    pub fn resolve(&self, model: &str, version: Option<&str>) -> Result<Arc<VersionHandle>> {
        let models = self.models.load();
        let entry = models.get(model).ok_or_else(|| unknown_model(model))?;
        entry.resolve(model, version)
    }

    /// Routes a request through the model's entry ([`ModelEntry::route`]).
    pub fn route(
        &self,
        model: &str,
        version: Option<&str>,
        key: impl FnOnce(&TrafficPolicy) -> Option<String>,
    ) -> Result<(Arc<VersionHandle>, RouteReason)> {
        let models = self.models.load();
        let entry = models.get(model).ok_or_else(|| unknown_model(model))?;
        entry.route(model, version, key)
    }

    /// Every loaded model, by name.
    pub fn snapshot(&self) -> Arc<BTreeMap<String, Arc<ModelEntry>>> {
        self.models.load_full()
    }

    /// Replaces (or, with `None`, removes) a model's entry in one swap. The
    /// caller serializes changes to one model.
    pub fn publish(&self, name: &str, entry: Option<ModelEntry>) {
        let entry = entry.map(Arc::new);
        self.models.rcu(|m| {
            let mut m = BTreeMap::clone(m);
            match &entry {
                Some(e) => m.insert(name.to_string(), e.clone()),
                None => m.remove(name),
            };
            m
        });
    }

    /// Applies a routing change to a loaded model and publishes it. The
    /// caller serializes changes to one model.
    pub fn change(
        &self,
        name: &str,
        apply: impl FnOnce(&mut ModelEntry) -> Result<(Option<i64>, String)>,
    ) -> Result<Change> {
        let Some(old) = self.get(name) else {
            return Err(Error::not_found(format!("model '{name}' is not loaded")));
        };
        let mut entry = (*old).clone();
        let (version, reason) = apply(&mut entry)?;
        let digest = version.and_then(|v| entry.versions.get(&v)).map(|h| h.digest.clone());
        self.publish(name, Some(entry));
        Ok(Change {
            version,
            digest,
            reason,
        })
    }

    /// The repository index: every model directory, with the state of each
    /// loaded or failed version.
    pub fn index(&self, repo: &Repository, ready_only: bool) -> Result<Vec<IndexEntry>> {
        let models = self.models.load();
        let notes = self.notes.lock();
        let mut out = Vec::new();
        let mut names = repository::list_models(repo)?;
        names.extend(models.keys().cloned());
        names.sort();
        names.dedup();
        for name in names {
            let model_notes = notes.get(&name);
            let note_of = |v: &str| model_notes.and_then(|n| n.iter().find(|e| e.version == v));
            if let Some(entry) = models.get(&name) {
                for (v, handle) in &entry.versions {
                    let v = v.to_string();
                    let note = note_of(&v).map(|n| n.reason.clone());
                    out.push(IndexEntry {
                        name: name.clone(),
                        reason: note.or_else(|| handle.warning.clone()).unwrap_or_default(),
                        version: v,
                        state: "READY".into(),
                    });
                }
            }
            if ready_only {
                continue;
            }
            let loaded = |v: &str| {
                models
                    .get(&name)
                    .is_some_and(|e| v.parse().is_ok_and(|n: i64| e.versions.contains_key(&n)))
            };
            match model_notes {
                Some(n) => out.extend(n.iter().filter(|e| !loaded(&e.version)).cloned()),
                None if !models.contains_key(&name) => out.push(IndexEntry {
                    name: name.clone(),
                    version: String::new(),
                    state: String::new(),
                    reason: String::new(),
                }),
                None => {}
            }
        }
        Ok(out)
    }

    /// Replaces a model's notes in the index (none: clears them).
    pub fn note(&self, name: &str, entries: Vec<IndexEntry>) {
        let mut notes = self.notes.lock();
        if entries.is_empty() {
            notes.remove(name);
        } else {
            notes.insert(name.to_string(), entries);
        }
    }
}

/// Label names: a letter, then letters, digits, `_`, `-`, `.`; at most 64.
pub fn validate_label(label: &str) -> Result<()> {
    let ok = label.len() <= 64
        && label.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid label '{}': start with a letter, then letters, digits, '_', '-' or '.' (at most 64)",
            label.escape_debug()
        )))
    }
}
