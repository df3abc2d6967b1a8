//! What is being served: model name → loaded versions, labels and the default
//! route, behind an `ArcSwap` so the request path reads it without locks, and
//! every change (load, reload, unload, label, rollback) is one atomic swap.
//!
//! A request holds an `Arc` of the version it was routed to; a retired
//! version closes its queue when its last request is done, and its executors
//! exit and free their sessions. New versions are loaded, warmed up and
//! checked against their golden set off the serving path (a loader pool with
//! a bounded number of concurrent loads) and published only when they pass;
//! a version that fails never replaces the one serving.

mod load;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use switchyard_proto::inference::ModelConfig;
use tokio::sync::Semaphore;

use crate::batching::BatchQueue;
use crate::drift::{DriftSettings, Profile, VersionDrift};
use crate::error::{Error, ErrorKind, Result};
use crate::lifecycle::audit::{Actor, Audit, Event};
use crate::lifecycle::window::HealthWindow;
use crate::lifecycle::{golden, warmup};
use crate::metrics::{ModelState, VersionMetrics};
use crate::model::Device;
use crate::predlog::ModelLogPolicy;
use crate::repository::{self, ModelSource, Repository};
use crate::stats::VersionStats;
use crate::tensor::DataType;

/// Requests a version queues at most when its config sets no `max_queue_size`.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
/// Priority levels a config may declare.
pub const MAX_PRIORITY_LEVELS: usize = 16;
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
    /// Errors and latency since load (automatic rollback).
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
}

impl VersionHandle {
    /// Provenance facts, for metadata and statistics.
    pub fn provenance(&self) -> Vec<(String, String)> {
        vec![
            ("model_sha256".into(), self.digest.clone()),
            ("config_sha256".into(), self.config_digest.clone()),
            ("loaded_at".into(), crate::lifecycle::audit::rfc3339(self.loaded_at)),
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
            None => self
                .default_version()
                .ok_or_else(|| Error::not_found(format!("model '{model}' has no loaded version")))?,
            Some(v) => match v.parse::<i64>() {
                Ok(n) => n,
                Err(_) => *self
                    .labels
                    .get(v)
                    .ok_or_else(|| Error::not_found(format!("model '{model}' has no version or label '{v}'")))?,
            },
        };
        self.versions.get(&number).cloned().ok_or_else(|| {
            Error::not_found(match version {
                Some(v) if !v.is_empty() && v.parse::<i64>().is_err() => {
                    format!("label '{v}' of model '{model}' points to version {number}, which is not loaded")
                }
                _ => format!("model '{model}' version {number} is not loaded"),
            })
        })
    }
}

fn remember(history: &mut Vec<i64>, version: i64) {
    history.retain(|&v| v != version);
    history.push(version);
    if history.len() > ROLLBACK_HISTORY {
        history.remove(0);
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

/// Automatic rollback after a promotion (off when `window` is zero).
#[derive(Debug, Clone, Default)]
pub struct RollbackPolicy {
    /// How long a newly promoted version is watched.
    pub window: Duration,
    /// Largest acceptable share of server-side errors.
    pub max_error_rate: f64,
    /// Largest acceptable p99 latency.
    pub max_p99: Option<Duration>,
    /// Requests needed before judging.
    pub min_requests: u64,
}

/// What loading needs besides the repository.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// Batch size given to config-less batchable models.
    pub default_max_batch_size: u32,
    /// Cores to budget threads against.
    pub cores: usize,
    /// Versions loading at once, across models (the loader pool).
    pub load_threads: usize,
    /// Synthetic warm-up when the config has no `model_warmup`.
    pub synthetic_warmup: bool,
    /// Element limit for warm-up and golden tensors.
    pub max_tensor_elements: usize,
    /// Automatic rollback.
    pub rollback: RollbackPolicy,
}

impl Default for LoadSettings {
    fn default() -> Self {
        LoadSettings {
            default_max_batch_size: 4,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            load_threads: 1,
            synthetic_warmup: true,
            max_tensor_elements: 16 << 20,
            rollback: RollbackPolicy::default(),
        }
    }
}

/// What a load did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Versions built, warmed up and validated now, with what was checked.
    pub loaded: Vec<(i64, String)>,
    /// Versions kept as they were (unchanged file and config).
    pub kept: Vec<i64>,
    /// Versions no longer selected, retired.
    pub retired: Vec<i64>,
    /// Versions refused, with the reason.
    pub failed: Vec<(i64, String)>,
}

/// The routing table and the load history.
#[derive(Debug)]
pub struct Registry {
    models: ArcSwap<BTreeMap<String, Arc<ModelEntry>>>,
    /// Failures and unloads to show in the repository index.
    notes: Mutex<BTreeMap<String, Vec<IndexEntry>>>,
    /// One control lock per model: changes to a model are serialized, models
    /// load in parallel (the request path never takes these).
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The loader pool: versions building at once.
    loaders: Semaphore,
    settings: LoadSettings,
    audit: Audit,
    myself: Weak<Registry>,
}

enum Step {
    Keep(Arc<VersionHandle>),
    Loaded(Box<VersionHandle>, golden::Report),
    Failed(String, Option<String>),
}

impl Registry {
    /// An empty table.
    pub fn new(settings: LoadSettings, audit: Audit) -> Arc<Registry> {
        Arc::new_cyclic(|myself| Registry {
            models: ArcSwap::from_pointee(BTreeMap::new()),
            notes: Mutex::new(BTreeMap::new()),
            locks: Mutex::new(HashMap::new()),
            loaders: Semaphore::new(settings.load_threads.max(1)),
            settings,
            audit,
            myself: myself.clone(),
        })
    }

    /// Load settings.
    pub fn settings(&self) -> &LoadSettings {
        &self.settings
    }

    /// The audit trail.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// The model's entry, if loaded.
    pub fn get(&self, model: &str) -> Option<Arc<ModelEntry>> {
        self.models.load().get(model).cloned()
    }

    /// Routes a request to a version.
    pub fn resolve(&self, model: &str, version: Option<&str>) -> Result<Arc<VersionHandle>> {
        let models = self.models.load();
        let entry = models
            .get(model)
            .ok_or_else(|| Error::not_found(format!("unknown model '{model}'")))?;
        entry.resolve(model, version)
    }

    /// Every loaded model, by name.
    pub fn snapshot(&self) -> Arc<BTreeMap<String, Arc<ModelEntry>>> {
        self.models.load_full()
    }

    fn lock_of(&self, model: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().entry(model.to_string()).or_default().clone()
    }

    fn publish(&self, name: &str, entry: Option<ModelEntry>) {
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
                for v in entry.versions.keys() {
                    let v = v.to_string();
                    out.push(IndexEntry {
                        name: name.clone(),
                        reason: note_of(&v).map(|n| n.reason.clone()).unwrap_or_default(),
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

    /// Loads (or reloads) a model: every version its policy selects whose file
    /// or config changed is built, warmed up and checked against its golden set
    /// off the serving path; unchanged versions are kept as they are. The new
    /// table is published in one swap. A version that fails keeps its previous
    /// load serving (if any); the error lists every failure.
    pub async fn load(
        &self,
        repo: &Repository,
        name: &str,
        override_config: Option<ModelConfig>,
        actor: &Actor,
    ) -> Result<LoadReport> {
        let lock = self.lock_of(name);
        let _guard = lock.lock().await;
        let source = {
            let (repo, name) = (repo.clone(), name.to_string());
            tokio::task::spawn_blocking(move || repository::read_model(&repo, &name, override_config))
                .await
                .map_err(|e| Error::internal(format!("load task failed: {e}")))?
        };
        let source = match source {
            Ok(s) if s.versions.is_empty() => Err(Error::invalid(format!(
                "model '{name}' has no version directory selected by its version policy"
            ))),
            other => other,
        };
        let source = match source {
            Ok(s) => Arc::new(s),
            Err(e) => {
                let kept = self.get(name).is_some();
                self.note(name, vec![failed(name, "", &e.message)]);
                self.audit
                    .record(actor, event("load", name, None, None, false, &e.message));
                return Err(if kept {
                    Error::new(e.kind, format!("{} (the serving versions are unchanged)", e.message))
                } else {
                    e
                });
            }
        };
        let old = self.get(name);
        let steps = futures::future::join_all(
            source
                .versions
                .iter()
                .map(|(v, file)| self.load_step(&source, *v, file, old.as_deref())),
        )
        .await;

        let mut entry = old.as_deref().cloned().unwrap_or_default();
        entry.versions.clear();
        let mut report = LoadReport::default();
        let mut notes = Vec::new();
        for ((version, _), step) in source.versions.iter().zip(steps) {
            let version = *version;
            let v = version.to_string();
            match step {
                Step::Keep(h) => {
                    entry.versions.insert(version, h);
                    report.kept.push(version);
                }
                Step::Loaded(h, golden) => {
                    tracing::info!(model = name, version, device = %h.device, digest = %h.digest,
                        golden_cases = golden.cases, golden_p99_ms = ?golden.p99_ms, "version ready");
                    h.stats.set_quiet(false);
                    h.queue.set_warming(false);
                    let summary = golden_summary(&golden);
                    self.audit
                        .record(actor, event("load", name, Some(&v), Some(&h.digest), true, &summary));
                    let detail = match summary.as_str() {
                        "" => format!("sha256 {}, {}, no golden set", h.digest, h.device),
                        s => format!("sha256 {}, {}, {s}", h.digest, h.device),
                    };
                    entry.versions.insert(version, Arc::from(h));
                    report.loaded.push((version, detail));
                }
                Step::Failed(reason, digest) => {
                    tracing::error!(model = name, version, %reason, "version refused");
                    let action = if reason.contains("golden case") || reason.contains("latency budget") {
                        "validation_failed"
                    } else {
                        "load"
                    };
                    self.audit
                        .record(actor, event(action, name, Some(&v), digest.as_deref(), false, &reason));
                    let previous = old.as_ref().and_then(|o| o.versions.get(&version));
                    let shown = match previous {
                        Some(p) => {
                            entry.versions.insert(version, p.clone());
                            format!("{reason} (the previous load of version {version} keeps serving)")
                        }
                        None => reason.clone(),
                    };
                    notes.push(failed(name, &v, &shown));
                    report.failed.push((version, reason));
                }
            }
        }
        if let Some(old) = &old {
            for (v, h) in &old.versions {
                if !entry.versions.contains_key(v) {
                    report.retired.push(*v);
                    self.audit.record(
                        actor,
                        event(
                            "unload",
                            name,
                            Some(&v.to_string()),
                            Some(&h.digest),
                            true,
                            "no longer selected",
                        ),
                    );
                }
            }
        }
        if entry.versions.is_empty() {
            // Nothing loaded and nothing serving.
            self.note(name, notes);
            return Err(load_error(name, &report, false));
        }
        self.promote_if_changed(name, old.as_deref(), &mut entry, actor);
        for (v, _) in &report.loaded {
            crate::metrics::model_state(name, &v.to_string(), ModelState::Ready);
        }
        for v in &report.retired {
            crate::metrics::model_state(name, &v.to_string(), ModelState::Unavailable);
        }
        self.publish(name, Some(entry));
        self.note(name, notes);
        if report.failed.is_empty() {
            Ok(report)
        } else {
            Err(load_error(name, &report, old.is_some()))
        }
    }

    async fn load_step(&self, source: &Arc<ModelSource>, version: i64, file: &Path, old: Option<&ModelEntry>) -> Step {
        let name = source.name.clone();
        let read = {
            let (file, name, repo) = (file.to_path_buf(), name.clone(), source.repo.clone());
            tokio::task::spawn_blocking(move || load::read_file(&repo, &name, version, &file)).await
        };
        let (bytes, digest) = match read {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Step::Failed(e, None),
            Err(e) => return Step::Failed(format!("load task failed: {e}"), None),
        };
        if let Some(h) = old.and_then(|o| o.versions.get(&version))
            && h.digest == digest
            && h.source_config == source.config
        {
            return Step::Keep(h.clone());
        }
        let at = |msg: String| format!("model '{name}' version {version}: {msg}");
        let label = version.to_string();
        if old.is_none_or(|o| !o.versions.contains_key(&version)) {
            crate::metrics::model_state(&name, &label, ModelState::Loading);
        }
        let step = self.build_step(source, version, (bytes, digest), &at).await;
        match &step {
            Step::Loaded(..) => {}
            Step::Failed(..) if old.is_some_and(|o| o.versions.contains_key(&version)) => {}
            _ => crate::metrics::model_state(&name, &label, ModelState::Unavailable),
        }
        step
    }

    async fn build_step(
        &self,
        source: &Arc<ModelSource>,
        version: i64,
        (bytes, digest): (Vec<u8>, String),
        at: &(dyn Fn(String) -> String + Sync),
    ) -> Step {
        let name = source.name.clone();
        let Ok(_permit) = self.loaders.acquire().await else {
            return Step::Failed(at("the loader pool is closed".into()), Some(digest));
        };
        let started = Instant::now();
        let built = {
            let (source, settings, digest) = (source.clone(), self.settings.clone(), digest.clone());
            tokio::task::spawn_blocking(move || load::load_version(&source, version, &bytes, digest, &settings)).await
        };
        let mut handle = match built {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return Step::Failed(e, Some(digest)),
            Err(e) => return Step::Failed(at(format!("load task failed: {e}")), Some(digest)),
        };
        let max = self.settings.max_tensor_elements;
        let version_dir = source.dir.join(version.to_string());
        let plan = warmup::plan(
            &handle.config,
            &handle.inputs,
            &source.repo,
            &source.dir,
            self.settings.synthetic_warmup,
            max,
        );
        let warm = match plan {
            Ok(plan) => warmup::run(&handle, &plan, handle.instances, max).await,
            Err(e) => Err(e),
        };
        if let Err(e) = warm {
            return Step::Failed(at(e), Some(digest));
        }
        let set = match golden::load(&source.repo, &version_dir, &name, max) {
            Ok(set) => set,
            Err(e) => return Step::Failed(at(format!("golden set: {e}")), Some(digest)),
        };
        let golden = match &set {
            Some(set) => golden::check(&handle, set, max).await,
            None => Ok(golden::Report::default()),
        };
        let report = match golden {
            Ok(report) => report,
            Err(e) => return Step::Failed(at(e), Some(digest)),
        };
        match drift_monitor(&handle, (&source.repo, &version_dir), set.as_ref()) {
            Ok(d) => handle.drift = d,
            Err(e) => return Step::Failed(at(e), Some(digest)),
        }
        let elapsed = started.elapsed();
        crate::metrics::load_duration(&name, &version.to_string(), elapsed.as_secs_f64());
        tracing::debug!(model = %name, version, ?elapsed, "built, warmed up, validated");
        Step::Loaded(Box::new(handle), report)
    }

    /// Records a change of the default route (history, audit, automatic
    /// rollback watch). A version newer than every version served before is a
    /// new deploy: it clears a rollback pin.
    fn promote_if_changed(&self, name: &str, old: Option<&ModelEntry>, entry: &mut ModelEntry, actor: &Actor) {
        let old_default = old.and_then(ModelEntry::default_version);
        let newest_before = old.and_then(|o| o.versions.keys().next_back().copied());
        if let (Some(pin), Some(newest)) = (entry.pin, entry.versions.keys().next_back().copied())
            && newest_before.is_some_and(|b| newest > b)
        {
            tracing::info!(
                model = name,
                pin,
                newest,
                "a newer version is deployed: the rollback pin is cleared"
            );
            entry.pin = None;
        }
        let new_default = entry.default_version();
        if new_default == old_default {
            return;
        }
        let Some(new) = new_default else { return };
        if let Some(prev) = old_default {
            remember(&mut entry.history, prev);
        }
        let digest = entry.versions.get(&new).map(|h| h.digest.clone());
        let reason = match old_default {
            Some(p) => format!("default route {p} -> {new}"),
            None => format!("default route -> {new}"),
        };
        self.audit.record(
            actor,
            event(
                "promote",
                name,
                Some(&new.to_string()),
                digest.as_deref(),
                true,
                &reason,
            ),
        );
        if let Some(prev) = old_default
            && new > prev
            && entry.versions.contains_key(&prev)
            && !self.settings.rollback.window.is_zero()
        {
            self.watch(name, new, prev);
        }
    }

    /// Watches a promoted version for the rollback window; on a breach of the
    /// error-rate or p99 budget, points the default back to `previous`.
    fn watch(&self, name: &str, promoted: i64, previous: i64) {
        let (Some(registry), Ok(rt)) = (self.myself.upgrade(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        let policy = self.settings.rollback.clone();
        let name = name.to_string();
        drop(registry);
        let weak = self.myself.clone();
        rt.spawn(async move {
            let deadline = Instant::now() + policy.window;
            let tick = (policy.window / 20).clamp(Duration::from_millis(50), Duration::from_secs(1));
            loop {
                tokio::time::sleep(tick).await;
                let Some(registry) = weak.upgrade() else { return };
                let Some(entry) = registry.get(&name) else { return };
                if entry.default_version() != Some(promoted) {
                    return;
                }
                let Some(h) = entry.versions.get(&promoted) else { return };
                let health = h.health.snapshot();
                let breach = if health.requests < policy.min_requests {
                    None
                } else if health.error_rate() > policy.max_error_rate {
                    Some(format!(
                        "error rate {:.3} over {} requests is above {}",
                        health.error_rate(),
                        health.requests,
                        policy.max_error_rate
                    ))
                } else {
                    policy
                        .max_p99
                        .filter(|&m| health.p99 > m)
                        .map(|m| format!("p99 {:?} over {} requests is above {m:?}", health.p99, health.requests))
                };
                if let Some(reason) = breach {
                    tracing::warn!(model = %name, promoted, previous, %reason, "automatic rollback");
                    let actor = Actor::AutoRollback;
                    if let Err(e) = registry.rollback(&name, None, Some(previous), &actor, &reason).await {
                        tracing::error!(model = %name, error = %e, "automatic rollback failed");
                    }
                    return;
                }
                if Instant::now() >= deadline {
                    tracing::info!(model = %name, promoted, ?health, "promotion held through the rollback window");
                    return;
                }
            }
        });
    }

    /// Stops routing to a model; in-flight requests finish on their versions.
    pub async fn unload(&self, name: &str, actor: &Actor) -> Result<()> {
        let lock = self.lock_of(name);
        let _guard = lock.lock().await;
        let Some(old) = self.get(name) else {
            return Err(Error::not_found(format!("model '{name}' is not loaded")));
        };
        self.publish(name, None);
        for (v, h) in &old.versions {
            crate::metrics::model_state(name, &v.to_string(), ModelState::Unavailable);
            self.audit.record(
                actor,
                event("unload", name, Some(&v.to_string()), Some(&h.digest), true, ""),
            );
        }
        self.note(
            name,
            vec![IndexEntry {
                name: name.into(),
                version: String::new(),
                state: "UNAVAILABLE".into(),
                reason: "unloaded".into(),
            }],
        );
        tracing::info!(model = name, "model unloaded");
        Ok(())
    }

    /// Points a label at a loaded version.
    pub async fn set_label(&self, name: &str, label: &str, version: i64, actor: &Actor) -> Result<()> {
        validate_label(label)?;
        self.change(name, actor, "label", |entry| {
            if !entry.versions.contains_key(&version) {
                return Err(Error::new(
                    ErrorKind::FailedPrecondition,
                    format!("model '{name}' version {version} is not loaded: a label can only name a loaded version"),
                ));
            }
            let before = entry.labels.insert(label.to_string(), version);
            if let Some(b) = before.filter(|&b| b != version) {
                remember(entry.label_history.entry(label.to_string()).or_default(), b);
            }
            Ok((
                Some(version),
                match before {
                    Some(b) => format!("label '{label}': {b} -> {version}"),
                    None => format!("label '{label}' -> {version}"),
                },
            ))
        })
        .await
    }

    /// Removes a label.
    pub async fn delete_label(&self, name: &str, label: &str, actor: &Actor) -> Result<()> {
        self.change(name, actor, "label", |entry| match entry.labels.remove(label) {
            Some(v) => {
                entry.label_history.remove(label);
                Ok((Some(v), format!("label '{label}' removed (was {v})")))
            }
            None => Err(Error::not_found(format!("model '{name}' has no label '{label}'"))),
        })
        .await
    }

    /// Pins the default route to a loaded version, or (`None`) back to the latest.
    pub async fn set_default(&self, name: &str, version: Option<i64>, actor: &Actor) -> Result<()> {
        self.change(name, actor, "promote", |entry| {
            let before = entry.default_version();
            if let Some(v) = version
                && !entry.versions.contains_key(&v)
            {
                return Err(Error::new(
                    ErrorKind::FailedPrecondition,
                    format!("model '{name}' version {v} is not loaded"),
                ));
            }
            entry.pin = version;
            let after = entry.default_version();
            if let Some(b) = before.filter(|&b| Some(b) != after) {
                remember(&mut entry.history, b);
            }
            Ok((
                after,
                match version {
                    Some(v) => format!("default route pinned to {v}"),
                    None => "default route follows the latest version".into(),
                },
            ))
        })
        .await
    }

    /// Points the default route (or a label) back to `to`, or to the most
    /// recent previous target that is still loaded.
    pub async fn rollback(
        &self,
        name: &str,
        label: Option<&str>,
        to: Option<i64>,
        actor: &Actor,
        why: &str,
    ) -> Result<i64> {
        let action = if *actor == Actor::AutoRollback {
            "auto_rollback"
        } else {
            "rollback"
        };
        let mut target = 0;
        self.change(name, actor, action, |entry| {
            let (current, history) = match label {
                None => (entry.default_version(), entry.history.clone()),
                Some(l) => (
                    Some(
                        *entry
                            .labels
                            .get(l)
                            .ok_or_else(|| Error::not_found(format!("model '{name}' has no label '{l}'")))?,
                    ),
                    entry.label_history.get(l).cloned().unwrap_or_default(),
                ),
            };
            let chosen = match to {
                Some(v) => v,
                None => *history
                    .iter()
                    .rev()
                    .find(|v| Some(**v) != current && entry.versions.contains_key(v))
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
            if !entry.versions.contains_key(&chosen) {
                return Err(Error::new(
                    ErrorKind::FailedPrecondition,
                    format!("model '{name}' version {chosen} is not loaded"),
                ));
            }
            match label {
                None => {
                    entry.pin = Some(chosen);
                    if let Some(c) = current.filter(|&c| c != chosen) {
                        remember(&mut entry.history, c);
                    }
                }
                Some(l) => {
                    entry.labels.insert(l.to_string(), chosen);
                    if let Some(c) = current.filter(|&c| c != chosen) {
                        remember(entry.label_history.entry(l.to_string()).or_default(), c);
                    }
                }
            }
            target = chosen;
            let what = label.map_or("default route".to_string(), |l| format!("label '{l}'"));
            let mut reason = format!("{what}: {} -> {chosen}", current.map_or("-".into(), |c| c.to_string()));
            if !why.is_empty() {
                reason.push_str(": ");
                reason.push_str(why);
            }
            Ok((Some(chosen), reason))
        })
        .await?;
        Ok(target)
    }

    /// Applies a routing change under the model's lock, publishes it and audits it.
    async fn change(
        &self,
        name: &str,
        actor: &Actor,
        action: &str,
        apply: impl FnOnce(&mut ModelEntry) -> Result<(Option<i64>, String)>,
    ) -> Result<()> {
        let lock = self.lock_of(name);
        let _guard = lock.lock().await;
        let Some(old) = self.get(name) else {
            return Err(Error::not_found(format!("model '{name}' is not loaded")));
        };
        let mut entry = (*old).clone();
        match apply(&mut entry) {
            Ok((version, reason)) => {
                let digest = version.and_then(|v| entry.versions.get(&v)).map(|h| h.digest.clone());
                self.publish(name, Some(entry));
                self.audit.record(
                    actor,
                    event(
                        action,
                        name,
                        version.map(|v| v.to_string()).as_deref(),
                        digest.as_deref(),
                        true,
                        &reason,
                    ),
                );
                tracing::info!(model = name, %reason, "routing changed");
                Ok(())
            }
            Err(e) => {
                self.audit
                    .record(actor, event(action, name, None, None, false, &e.message));
                Err(e)
            }
        }
    }

    fn note(&self, name: &str, entries: Vec<IndexEntry>) {
        let mut notes = self.notes.lock();
        if entries.is_empty() {
            notes.remove(name);
        } else {
            notes.insert(name.to_string(), entries);
        }
    }
}

/// The drift monitor of a version: on when its config has `drift.*`
/// parameters or it ships `validation/profile.json`. The reference is that
/// profile, else the golden set's inputs and expected outputs.
fn drift_monitor(
    handle: &VersionHandle,
    (repo, version_dir): (&Repository, &Path),
    golden: Option<&golden::GoldenSet>,
) -> Result<Option<Arc<VersionDrift>>, String> {
    let profile_path = version_dir.join("validation/profile.json");
    let configured = handle.config.parameters.keys().any(|k| k.starts_with("drift."));
    let has_profile = repo.is_file(&profile_path)?;
    if !configured && !has_profile {
        return Ok(None);
    }
    let base = DriftSettings {
        batched: handle.max_batch_size > 0,
        ..DriftSettings::default()
    };
    let settings = DriftSettings::from_config(&handle.config, &base).map_err(|e| format!("drift: {e}"))?;
    let reference = if has_profile {
        let text = repo.read_to_string(&profile_path, repository::files::MAX_SIDE_FILE_BYTES)?;
        Some(Profile::from_json(&text).map_err(|e| format!("{}: {e}", profile_path.display()))?)
    } else {
        golden.filter(|g| !g.cases.is_empty()).map(|g| {
            let samples: Vec<_> = g
                .cases
                .iter()
                .map(|c| (c.inputs.clone(), c.expected_tensors(&handle.outputs)))
                .collect();
            Profile::from_samples_with(&samples, settings.max_features, settings.batched)
        })
    };
    Ok(Some(VersionDrift::new(
        &handle.model,
        &handle.version_label,
        reference,
        settings,
    )))
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

fn golden_summary(r: &golden::Report) -> String {
    match (r.cases, r.p99_ms) {
        (0, _) => String::new(),
        (n, None) => format!("golden set passed ({n} cases)"),
        (n, Some(p)) => format!("golden set passed ({n} cases, p99 {p:.3} ms)"),
    }
}

fn load_error(name: &str, report: &LoadReport, kept: bool) -> Error {
    let reasons: Vec<&str> = report.failed.iter().map(|(_, r)| r.as_str()).collect();
    let kept = if kept {
        " (the serving versions are unchanged)"
    } else {
        ""
    };
    Error::invalid(format!("failed to load model '{name}'{kept}: {}", reasons.join("; ")))
}

fn event<'a>(
    action: &'a str,
    model: &'a str,
    version: Option<&'a str>,
    digest: Option<&'a str>,
    ok: bool,
    reason: &'a str,
) -> Event<'a> {
    Event {
        action,
        model,
        version,
        digest,
        ok,
        reason,
    }
}

fn failed(name: &str, version: &str, reason: &str) -> IndexEntry {
    IndexEntry {
        name: name.into(),
        version: version.into(),
        state: "UNAVAILABLE".into(),
        reason: reason.into(),
    }
}
