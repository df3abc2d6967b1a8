//! The control side of serving: loads (every selected version through the
//! [`Pipeline`], then one publication), unloads and routing changes (labels,
//! default, rollback). Changes to one model are serialized by its control
//! lock, models load in parallel; every action is audited; a promotion starts
//! the automatic rollback watcher.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use switchyard_proto::inference::ModelConfig;

use super::audit::{Audit, Event};
use super::failure::LoadFailure;
use super::pipeline::{LoadSettings, Outcome, Pipeline};
use super::{golden, rollback, state};
use crate::access::Actor;
use crate::error::{Error, ErrorKind, Result};
use crate::metrics::ModelState;
use crate::model::Backend;
use crate::registry::{Change, IndexEntry, ModelEntry, Registry, validate_label};
use crate::repository::{self, Repository};
use crate::traffic::TrafficPolicy;

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
    pub failed: Vec<(i64, LoadFailure)>,
}

/// Loads, unloads and routes models into a [`Registry`].
#[derive(Debug)]
pub struct Deployer {
    registry: Arc<Registry>,
    pipeline: Pipeline,
    audit: Audit,
    /// One control lock per model: changes to a model are serialized, models
    /// load in parallel (the request path never takes these).
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    myself: Weak<Deployer>,
}

impl Deployer {
    /// A deployer over an empty table, building executors with `backend`.
    pub fn new(settings: LoadSettings, audit: Audit, backend: Arc<dyn Backend>) -> Arc<Deployer> {
        Arc::new_cyclic(|myself| Deployer {
            registry: Arc::new(Registry::new()),
            pipeline: Pipeline::new(settings, backend),
            audit,
            locks: Mutex::new(HashMap::new()),
            myself: myself.clone(),
        })
    }

    /// The routing table it publishes to.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Load settings.
    pub fn settings(&self) -> &LoadSettings {
        self.pipeline.settings()
    }

    /// The audit trail.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    fn lock_of(&self, model: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().entry(model.to_string()).or_default().clone()
    }

    /// Loads (or reloads) a model: every version its policy selects whose file
    /// or config changed goes through the pipeline off the serving path;
    /// unchanged versions are kept as they are. The new entry is published in
    /// one swap. A version that fails keeps its previous load serving (if
    /// any); the error lists every failure.
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
                let kept = self.registry.get(name).is_some();
                self.registry
                    .note(name, vec![IndexEntry::unavailable(name, "", &e.message)]);
                self.audit
                    .record(actor, event("load", name, None, None, false, &e.message));
                return Err(if kept {
                    Error::new(e.kind, format!("{} (the serving versions are unchanged)", e.message))
                } else {
                    e
                });
            }
        };
        let old = self.registry.get(name);
        let serving = |v: i64| old.as_ref().and_then(|o| o.versions.get(&v));
        let outcomes = futures::future::join_all(
            source
                .versions
                .iter()
                .map(|(v, file)| self.pipeline.version(&source, *v, file, serving(*v))),
        )
        .await;

        let mut entry = old.as_deref().cloned().unwrap_or_default();
        entry.versions.clear();
        let mut report = LoadReport::default();
        let mut notes = Vec::new();
        for ((version, _), outcome) in source.versions.iter().zip(outcomes) {
            let version = *version;
            let v = version.to_string();
            match outcome {
                Outcome::Kept(h) => {
                    entry.versions.insert(version, h);
                    report.kept.push(version);
                }
                Outcome::Ready(h, golden) => {
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
                Outcome::Failed(failure, digest) => {
                    let reason = &failure.message;
                    let mapping = failure.mapping();
                    tracing::error!(model = name, version, %reason, kind = mapping.label, "version refused");
                    crate::metrics::load_failure(name, mapping.label);
                    self.audit.record(
                        actor,
                        event(mapping.audit_action, name, Some(&v), digest.as_deref(), false, reason),
                    );
                    let shown = match serving(version) {
                        Some(p) => {
                            entry.versions.insert(version, p.clone());
                            format!("{reason} (the previous load of version {version} keeps serving)")
                        }
                        None => reason.clone(),
                    };
                    notes.push(IndexEntry::unavailable(name, &v, &shown));
                    report.failed.push((version, failure));
                }
            }
        }
        if let Some(old) = &old {
            for (v, h) in &old.versions {
                if !entry.versions.contains_key(v) {
                    report.retired.push(*v);
                    let v = v.to_string();
                    self.audit.record(
                        actor,
                        event("unload", name, Some(&v), Some(&h.digest), true, "no longer selected"),
                    );
                }
            }
        }
        if entry.versions.is_empty() {
            // Nothing loaded and nothing serving.
            self.registry.note(name, notes);
            return Err(load_error(name, &report, false));
        }
        self.promote_if_changed(name, old.as_deref(), &mut entry, actor);
        let traffic_error = self.apply_traffic_file(name, &source, &mut entry, &mut notes, actor);
        let card_error = super::card::apply_card_file(&self.audit, name, &source, &mut entry, &mut notes, actor);
        if old.is_none() {
            self.restore_state(name, &mut entry);
        }
        for (v, _) in &report.loaded {
            crate::metrics::model_state(name, &v.to_string(), ModelState::Ready);
        }
        for v in &report.retired {
            crate::metrics::model_state(name, &v.to_string(), ModelState::Unavailable);
        }
        self.registry.publish(name, Some(entry));
        if !report.loaded.is_empty() {
            // What building and warming the sessions freed is not kept resident for nothing.
            release_free_heap_off_thread();
        }
        self.registry.note(name, notes);
        let file_errors: Vec<String> = traffic_error.into_iter().chain(card_error).collect();
        if report.failed.is_empty() && !file_errors.is_empty() {
            Err(Error::invalid(format!("model '{name}': {}", file_errors.join("; "))))
        } else if report.failed.is_empty() {
            Ok(report)
        } else {
            Err(load_error(name, &report, old.is_some()))
        }
    }

    /// Audits a change of the default route made by a load and, when it is
    /// an upgrade from a version still loaded, starts the rollback watcher.
    fn promote_if_changed(&self, name: &str, old: Option<&ModelEntry>, entry: &mut ModelEntry, actor: &Actor) {
        let Some(promotion) = entry.promote_if_changed(name, old) else {
            return;
        };
        let new = promotion.to;
        let digest = entry.versions.get(&new).map(|h| h.digest.clone());
        let version = new.to_string();
        self.audit.record(
            actor,
            event(
                "promote",
                name,
                Some(&version),
                digest.as_deref(),
                true,
                &promotion.reason,
            ),
        );
        let policy = &self.settings().rollback;
        if let Some(prev) = promotion.from
            && new > prev
            && entry.versions.contains_key(&prev)
            && !policy.window.is_zero()
        {
            let background = &self.settings().background;
            rollback::watch(
                background,
                self.myself.clone(),
                policy.clone(),
                name.to_string(),
                new,
                prev,
            );
        }
    }

    /// Takes the traffic policy of `traffic.yaml` into `entry` (audited when
    /// it changes). An invalid file keeps the previous policy: the error goes
    /// to the index notes and is returned.
    fn apply_traffic_file(
        &self,
        name: &str,
        source: &repository::ModelSource,
        entry: &mut ModelEntry,
        notes: &mut Vec<IndexEntry>,
        actor: &Actor,
    ) -> Option<String> {
        match &source.traffic {
            Ok(policy) if *policy == entry.traffic_file => None,
            Ok(policy) => {
                if entry.traffic_override.is_some() {
                    tracing::warn!(
                        model = name,
                        "traffic.yaml changed while an override is set: the override keeps routing"
                    );
                }
                let detail = match policy {
                    Some(p) => format!("traffic policy from file: {}", p.to_json()),
                    None => "traffic policy file removed".to_string(),
                };
                self.audit
                    .record(actor, event("traffic", name, None, None, true, &detail));
                entry.traffic_file = policy.clone();
                None
            }
            Err(e) => {
                let shown = format!("{e} (the previous traffic policy keeps serving)");
                tracing::error!(model = name, error = %e, "traffic policy refused");
                self.audit.record(actor, event("traffic", name, None, None, false, e));
                notes.push(IndexEntry {
                    state: "READY".into(),
                    ..IndexEntry::unavailable(name, "", &shown)
                });
                Some(shown)
            }
        }
    }

    /// The labels and traffic override kept under `--state-dir`, applied on
    /// the model's first load in this process.
    fn restore_state(&self, name: &str, entry: &mut ModelEntry) {
        let Some(dir) = &self.settings().state_dir else {
            return;
        };
        match state::load(dir, name) {
            Ok(Some(saved)) => {
                for skipped in state::apply(saved, entry) {
                    tracing::warn!(model = name, %skipped, "saved routing state not applied");
                }
                tracing::info!(
                    model = name,
                    labels = entry.labels.len(),
                    traffic_override = entry.traffic_override.is_some(),
                    "routing state restored"
                );
            }
            Ok(None) => {}
            Err(e) => tracing::error!(model = name, error = %e, "cannot read the saved routing state"),
        }
    }

    /// Writes the model's labels and traffic override under `--state-dir`.
    fn persist(&self, name: &str) {
        if let (Some(dir), Some(entry)) = (&self.settings().state_dir, self.registry.get(name))
            && let Err(e) = state::save(dir, name, &entry)
        {
            tracing::error!(model = name, error = %e, "cannot save the routing state");
        }
    }

    /// Stops routing to a model; in-flight requests finish on their versions.
    pub async fn unload(&self, name: &str, actor: &Actor) -> Result<()> {
        let lock = self.lock_of(name);
        let _guard = lock.lock().await;
        let Some(old) = self.registry.get(name) else {
            return Err(Error::not_found(format!("model '{name}' is not loaded")));
        };
        self.registry.publish(name, None);
        for (v, h) in &old.versions {
            let v = v.to_string();
            crate::metrics::model_state(name, &v, ModelState::Unavailable);
            self.audit
                .record(actor, event("unload", name, Some(&v), Some(&h.digest), true, ""));
        }
        self.registry
            .note(name, vec![IndexEntry::unavailable(name, "", "unloaded")]);
        tracing::info!(model = name, "model unloaded");
        Ok(())
    }

    /// Points a label at a loaded version.
    pub async fn set_label(&self, name: &str, label: &str, version: i64, actor: &Actor) -> Result<()> {
        validate_label(label)?;
        self.change(name, actor, "label", |e| e.set_label(name, label, version))
            .await
            .map(drop)
    }

    /// Removes a label.
    pub async fn delete_label(&self, name: &str, label: &str, actor: &Actor) -> Result<()> {
        self.change(name, actor, "label", |e| e.delete_label(name, label))
            .await
            .map(drop)
    }

    /// Overrides the model's traffic policy (`None`: back to `traffic.yaml`).
    /// Version targets must be loaded; the override wins over the file until cleared.
    pub async fn set_traffic(&self, name: &str, policy: Option<TrafficPolicy>, actor: &Actor) -> Result<()> {
        self.change(name, actor, "traffic", |e| {
            if let Some(p) = &policy {
                let loaded: Vec<i64> = e.versions.keys().copied().collect();
                repository::check_traffic_targets(p, "override", &loaded)
                    .map_err(|m| Error::new(ErrorKind::FailedPrecondition, m))?;
            }
            let reason = match &policy {
                Some(p) => format!("traffic override: {}", p.to_json()),
                None if e.traffic_override.is_none() => {
                    return Err(Error::not_found(format!("model '{name}' has no traffic override")));
                }
                None => "traffic override cleared: the file's policy applies".to_string(),
            };
            e.traffic_override = policy;
            Ok((None, reason))
        })
        .await
        .map(drop)
    }

    /// The shadow gate's action: `policy` becomes the model's traffic
    /// override, audited as `shadow_gate` with the gate's `verdict`.
    pub async fn shadow_gate(&self, name: &str, policy: TrafficPolicy, actor: &Actor, verdict: &str) -> Result<()> {
        self.change(name, actor, "shadow_gate", |e| {
            let reason = format!("shadow gate {verdict}; traffic override: {}", policy.to_json());
            e.traffic_override = Some(policy);
            Ok((None, reason))
        })
        .await
        .map(drop)
    }

    /// Pins the default route to a loaded version, or (`None`) back to the latest.
    pub async fn set_default(&self, name: &str, version: Option<i64>, actor: &Actor) -> Result<()> {
        self.change(name, actor, "promote", |e| e.set_default(name, version))
            .await
            .map(drop)
    }

    /// Points the default route (or a label) back to `to`, or to the most
    /// recent previous target that is still loaded; returns the version now served.
    pub async fn rollback(
        &self,
        name: &str,
        label: Option<&str>,
        to: Option<i64>,
        actor: &Actor,
        why: &str,
    ) -> Result<i64> {
        let action = match actor {
            Actor::AutoRollback => "auto_rollback",
            _ => "rollback",
        };
        let change = self
            .change(name, actor, action, |e| e.roll_back(name, label, to, why))
            .await?;
        Ok(change.version.unwrap_or_default())
    }

    /// Applies a routing change under the model's lock, publishes it and audits it.
    async fn change(
        &self,
        name: &str,
        actor: &Actor,
        action: &str,
        apply: impl FnOnce(&mut ModelEntry) -> Result<(Option<i64>, String)>,
    ) -> Result<Change> {
        let lock = self.lock_of(name);
        let _guard = lock.lock().await;
        match self.registry.change(name, apply) {
            Ok(change) => {
                self.persist(name);
                let version = change.version.map(|v| v.to_string());
                self.audit.record(
                    actor,
                    event(
                        action,
                        name,
                        version.as_deref(),
                        change.digest.as_deref(),
                        true,
                        &change.reason,
                    ),
                );
                tracing::info!(model = name, reason = %change.reason, "routing changed");
                Ok(change)
            }
            Err(e) => {
                self.audit
                    .record(actor, event(action, name, None, None, false, &e.message));
                Err(e)
            }
        }
    }
}

fn golden_summary(r: &golden::Report) -> String {
    match (r.cases, r.p99_ms) {
        (0, _) => String::new(),
        (n, None) => format!("golden set passed ({n} cases)"),
        (n, Some(p)) => format!("golden set passed ({n} cases, p99 {p:.3} ms)"),
    }
}

/// The error of a load with failures: the server's fault (500) when any
/// failure is, else the repository's (400).
fn load_error(name: &str, report: &LoadReport, kept: bool) -> Error {
    let reasons: Vec<&str> = report.failed.iter().map(|(_, f)| f.message.as_str()).collect();
    let kind = report
        .failed
        .iter()
        .map(|(_, f)| f.mapping().error)
        .find(|&k| k == ErrorKind::Internal)
        .unwrap_or(ErrorKind::InvalidArgument);
    let kept = if kept {
        " (the serving versions are unchanged)"
    } else {
        ""
    };
    Error::new(
        kind,
        format!("failed to load model '{name}'{kept}: {}", reasons.join("; ")),
    )
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

/// [`crate::model::onnx::release_free_heap`] on a blocking thread when on a
/// runtime (it can take milliseconds), in place otherwise.
fn release_free_heap_off_thread() {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(crate::model::onnx::release_free_heap)),
        Err(_) => crate::model::onnx::release_free_heap(),
    }
}
