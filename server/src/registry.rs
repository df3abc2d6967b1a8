//! What is being served: model name → loaded versions, behind an `ArcSwap`
//! so the request path reads it without locks, and every change (load,
//! reload, unload) is one atomic swap. A request holds an `Arc` of the
//! version it was routed to; a retired version closes its queue when its
//! last request is done, and its executors exit and free their sessions.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use switchyard_proto::inference::{
    ModelConfig, ModelDynamicBatching, ModelParameter, ModelQueuePolicy, model_config, model_queue_policy,
};

use crate::batching::{BatchPolicy, BatchQueue, LevelPolicy, QueuePolicy};
use crate::error::{Error, Result};
use crate::metrics::VersionMetrics;
use crate::model::{Device, onnx};
use crate::repository::{self, ModelSource, config};
use crate::stats::VersionStats;
use crate::tensor::DataType;

/// Requests a version queues at most when its config sets no `max_queue_size`.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
/// Priority levels a config may declare.
pub const MAX_PRIORITY_LEVELS: usize = 16;

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
    /// Inputs requests must send.
    pub inputs: Vec<TensorSpec>,
    /// Outputs the model produces.
    pub outputs: Vec<TensorSpec>,
    /// Rows per request at most; 0 = no batch dimension.
    pub max_batch_size: usize,
    /// The version's scheduler.
    pub queue: BatchQueue,
    /// Triton-style statistics.
    pub stats: Arc<VersionStats>,
    /// Prometheus handles.
    pub metrics: VersionMetrics,
    /// Where its sessions run.
    pub device: Device,
    /// SHA-256 of the model file.
    pub digest: String,
}

impl Drop for VersionHandle {
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// A model's serving versions.
#[derive(Debug, Default)]
pub struct ModelEntry {
    /// Versions, ascending.
    pub versions: BTreeMap<i64, Arc<VersionHandle>>,
}

impl ModelEntry {
    /// The version a request names, or the latest when it names none.
    pub fn resolve(&self, model: &str, version: Option<&str>) -> Result<Arc<VersionHandle>> {
        let found = match version.filter(|v| !v.is_empty()) {
            None => self.versions.values().next_back(),
            Some(v) => {
                let n: i64 = v
                    .parse()
                    .map_err(|_| Error::not_found(format!("model '{model}' has no version '{v}'")))?;
                self.versions.get(&n)
            }
        };
        found.cloned().ok_or_else(|| {
            Error::not_found(match version {
                Some(v) if !v.is_empty() => format!("model '{model}' version {v} is not loaded"),
                _ => format!("model '{model}' has no loaded version"),
            })
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
    /// Why, when not READY.
    pub reason: String,
}

/// The routing table and the load history.
#[derive(Debug)]
pub struct Registry {
    models: ArcSwap<BTreeMap<String, Arc<ModelEntry>>>,
    /// Failures and unloads to show in the repository index.
    notes: Mutex<BTreeMap<String, Vec<IndexEntry>>>,
    /// Serializes loads and unloads (the request path never takes it).
    control: tokio::sync::Mutex<()>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            models: ArcSwap::from_pointee(BTreeMap::new()),
            notes: Mutex::new(BTreeMap::new()),
            control: tokio::sync::Mutex::new(()),
        }
    }
}

/// What loading needs besides the repository.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// Batch size given to config-less batchable models.
    pub default_max_batch_size: u32,
    /// Cores to budget threads against.
    pub cores: usize,
}

impl Registry {
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

    /// The repository index: every model directory, with the state of each
    /// loaded or failed version.
    pub fn index(&self, repo: &Path, ready_only: bool) -> Result<Vec<IndexEntry>> {
        let models = self.models.load();
        let notes = self.notes.lock();
        let mut out = Vec::new();
        let mut names = repository::list_models(repo)?;
        names.extend(models.keys().cloned());
        names.sort();
        names.dedup();
        for name in names {
            if let Some(entry) = models.get(&name) {
                for v in entry.versions.keys() {
                    out.push(IndexEntry {
                        name: name.clone(),
                        version: v.to_string(),
                        state: "READY".into(),
                        reason: String::new(),
                    });
                }
            }
            if ready_only {
                continue;
            }
            match notes.get(&name) {
                Some(n) => out.extend(n.iter().cloned()),
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

    /// Loads (or reloads) a model: every version its policy selects is read,
    /// checked against its config, given its sessions and executors, and the
    /// result replaces the previous entry in one swap. A reload that fails for
    /// any version leaves the serving versions as they were.
    pub async fn load(
        &self,
        repo: &Path,
        name: &str,
        override_config: Option<ModelConfig>,
        settings: &LoadSettings,
    ) -> Result<()> {
        let _guard = self.control.lock().await;
        let source = {
            let (repo, name) = (repo.to_path_buf(), name.to_string());
            tokio::task::spawn_blocking(move || repository::read_model(&repo, &name, override_config))
                .await
                .map_err(|e| Error::internal(format!("load task failed: {e}")))??
        };
        if source.versions.is_empty() {
            let msg = format!("model '{name}' has no version directory selected by its version policy");
            self.note(name, vec![failed(name, "", &msg)]);
            return Err(Error::invalid(msg));
        }
        let settings = settings.clone();
        let results = tokio::task::spawn_blocking(move || load_versions(&source, &settings))
            .await
            .map_err(|e| Error::internal(format!("load task failed: {e}")))?;
        let mut entry = ModelEntry::default();
        let mut failures = Vec::new();
        for (version, result) in results {
            match result {
                Ok(handle) => {
                    entry.versions.insert(version, Arc::new(handle));
                }
                Err(reason) => {
                    tracing::error!(model = name, version, %reason, "version failed to load");
                    failures.push(failed(name, &version.to_string(), &reason));
                }
            }
        }
        let had_entry = self.get(name).is_some();
        let publish = !entry.versions.is_empty() && (failures.is_empty() || !had_entry);
        if publish {
            for (v, h) in &entry.versions {
                tracing::info!(model = name, version = v, device = %h.device, digest = %h.digest, "version ready");
            }
            let entry = Arc::new(entry);
            self.models.rcu(|m| {
                let mut m = BTreeMap::clone(m);
                m.insert(name.to_string(), entry.clone());
                m
            });
        }
        let error = (!failures.is_empty()).then(|| {
            let reasons: Vec<&str> = failures.iter().map(|f| f.reason.as_str()).collect();
            let kept = if had_entry && !publish {
                " (the serving versions are unchanged)"
            } else {
                ""
            };
            Error::invalid(format!("failed to load model '{name}'{kept}: {}", reasons.join("; ")))
        });
        self.note(name, failures);
        error.map_or(Ok(()), Err)
    }

    /// Stops routing to a model; in-flight requests finish on their versions.
    pub async fn unload(&self, name: &str) -> Result<()> {
        let _guard = self.control.lock().await;
        if self.get(name).is_none() {
            return Err(Error::not_found(format!("model '{name}' is not loaded")));
        }
        self.models.rcu(|m| {
            let mut m = BTreeMap::clone(m);
            m.remove(name);
            m
        });
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

    fn note(&self, name: &str, entries: Vec<IndexEntry>) {
        let mut notes = self.notes.lock();
        if entries.is_empty() {
            notes.remove(name);
        } else {
            notes.insert(name.to_string(), entries);
        }
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

/// Loads every selected version (blocking: file reads and session builds).
fn load_versions(source: &ModelSource, settings: &LoadSettings) -> Vec<(i64, Result<VersionHandle, String>)> {
    source
        .versions
        .iter()
        .map(|(version, file)| (*version, load_version(source, *version, file, settings)))
        .collect()
}

fn load_version(
    source: &ModelSource,
    version: i64,
    file: &Path,
    settings: &LoadSettings,
) -> Result<VersionHandle, String> {
    let name = &source.name;
    let at = |msg: String| format!("model '{name}' version {version}: {msg}");
    let bytes = std::fs::read(file).map_err(|e| at(format!("cannot read {}: {e}", file.display())))?;
    let digest = hex(&Sha256::digest(&bytes));
    let mut config = source.config.clone();
    let session_settings = config::session_settings(&config, settings.cores).map_err(at)?;
    let instances = config::instance_count(&config);
    let loaded = onnx::load(&bytes, &session_settings, instances).map_err(&at)?;
    config::complete(
        &mut config,
        &loaded.signature,
        name,
        version,
        settings.default_max_batch_size,
    )?;
    record_device(&mut config, loaded.device, loaded.device_note.as_deref());
    config.parameters.insert(
        "model_sha256".into(),
        ModelParameter {
            string_value: digest.clone(),
        },
    );
    let (inputs, outputs) = tensor_specs(&config).map_err(at)?;
    let max_batch_size = config.max_batch_size.max(0) as usize;
    let dynamic = match &config.scheduling_choice {
        Some(model_config::SchedulingChoice::DynamicBatching(d)) => Some(d),
        _ => None,
    };
    let queue_policy = queue_policy(dynamic);
    let mut preferred: Vec<usize> = dynamic
        .map(|d| {
            d.preferred_batch_size
                .iter()
                .filter(|&&n| n > 0)
                .map(|&n| n as usize)
                .collect()
        })
        .unwrap_or_default();
    preferred.sort_unstable();
    let policy = BatchPolicy {
        max_batch_size,
        dynamic: dynamic.is_some() && max_batch_size > 0,
        preferred,
        max_queue_delay: Duration::from_micros(dynamic.map_or(0, |d| d.max_queue_delay_microseconds)),
    };
    let version_label = version.to_string();
    let stats = Arc::new(VersionStats::with_metrics(name, &version_label));
    let queue = BatchQueue::new(policy, queue_policy, stats.clone());
    queue
        .spawn_executors(&format!("{name}-{version}"), loaded.executors)
        .map_err(|e| at(format!("cannot start executor threads: {e}")))?;
    Ok(VersionHandle {
        model: name.clone(),
        version,
        metrics: VersionMetrics::new(name, &version_label),
        version_label,
        config,
        inputs,
        outputs,
        max_batch_size,
        queue,
        stats,
        device: loaded.device,
        digest,
    })
}

/// Triton's queue policies: a default one, optionally per priority level.
fn queue_policy(dynamic: Option<&ModelDynamicBatching>) -> QueuePolicy {
    let Some(d) = dynamic else {
        return QueuePolicy::single(DEFAULT_QUEUE_CAPACITY);
    };
    let level = |p: Option<&ModelQueuePolicy>| LevelPolicy {
        capacity: p
            .map(|q| q.max_queue_size as usize)
            .filter(|&n| n > 0)
            .unwrap_or(DEFAULT_QUEUE_CAPACITY),
        default_timeout: p
            .map(|q| q.default_timeout_microseconds)
            .filter(|&us| us > 0)
            .map(Duration::from_micros),
        allow_timeout_override: p.is_none_or(|q| q.allow_timeout_override),
        delay_on_timeout: p.is_some_and(|q| q.timeout_action == model_queue_policy::TimeoutAction::Delay as i32),
    };
    // Levels beyond a small number are refused at config check; clamp defensively here.
    let count = (d.priority_levels as usize).clamp(1, MAX_PRIORITY_LEVELS);
    let levels = (1..=count as u64)
        .map(|l| level(d.priority_queue_policy.get(&l).or(d.default_queue_policy.as_ref())))
        .collect();
    let default_level = match d.default_priority_level as usize {
        l if l >= 1 && l <= count => l - 1,
        _ => count / 2,
    };
    QueuePolicy {
        levels,
        default_level,
        preserve_ordering: d.preserve_ordering,
    }
}

/// Reports where the sessions run in the effective config, so clients of the
/// config API (and perf_analyzer) see it.
fn record_device(config: &mut ModelConfig, device: Device, note: Option<&str>) {
    use switchyard_proto::inference::model_instance_group::Kind;
    for group in &mut config.instance_group {
        group.kind = match device {
            Device::Cpu => Kind::Cpu as i32,
            Device::Cuda(id) => {
                group.gpus = vec![id];
                Kind::Gpu as i32
            }
        };
    }
    config.parameters.insert(
        "execution_provider".into(),
        ModelParameter {
            string_value: match note {
                Some(n) => format!("{device} ({n})"),
                None => device.to_string(),
            },
        },
    );
}

fn tensor_specs(config: &ModelConfig) -> Result<(Vec<TensorSpec>, Vec<TensorSpec>), String> {
    let dt =
        |v: i32, name: &str| DataType::from_config_enum(v).ok_or_else(|| format!("tensor '{name}' has no datatype"));
    let inputs = config
        .input
        .iter()
        .map(|i| {
            Ok(TensorSpec {
                name: i.name.clone(),
                datatype: dt(i.data_type, &i.name)?,
                dims: i.dims.clone(),
                optional: i.optional,
            })
        })
        .collect::<Result<_, String>>()?;
    let outputs = config
        .output
        .iter()
        .map(|o| {
            Ok(TensorSpec {
                name: o.name.clone(),
                datatype: dt(o.data_type, &o.name)?,
                dims: o.dims.clone(),
                optional: false,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok((inputs, outputs))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
