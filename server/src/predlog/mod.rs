//! The prediction log: a sampled record of inference requests and their
//! results, written off the request path to JSON Lines files and/or a
//! CloudEvents HTTP endpoint in KServe's payload-logger format.
//!
//! The caller decides cheaply with [`PredictionLog::sample`] whether to build a
//! [`PredictionRecord`], then hands it over with [`PredictionLog::submit`],
//! which never blocks: each sink has its own bounded queue and its own thread,
//! and a full queue drops the record (counted as `queue_full`). Privacy rules
//! of the model's [`ModelLogPolicy`] (dropped inputs, hashed inputs, no
//! payloads) are applied by the sinks, not by the caller.
//!
//! # JSON Lines record
//!
//! One object per line:
//!
//! ```json
//! {"time":"2025-01-02T03:04:05.123456Z","id":"r1","model":"m","version":"1","label":null,
//!  "protocol":"http","outcome":"success","latency_us":1234,"trace_id":"abc",
//!  "inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1.0,2.0]},
//!            {"name":"secret","datatype":"BYTES","shape":[1],"sha256":"9f86..."}],
//!  "outputs":[{"name":"y","datatype":"FP32","shape":[1],"data":[3.0]}]}
//! ```
//!
//! - `time` is the record's time in RFC 3339, UTC, with microseconds.
//! - `id` is the request's id, or a generated 32-hex-digit id when it had none
//!   (the same id is the CloudEvents `Ce-Id`).
//! - `outcome` is `"success"` or the error's stable label
//!   ([`ErrorKind::mapping`]), and then `"error"` holds the message.
//! - `trace_id` is present only when known.
//! - `data` is a flat row-major array as in the V2 JSON protocol. FP16 and BF16
//!   are widened to numbers; non-finite floats become `null` (JSON has no NaN);
//!   BYTES elements are strings, invalid UTF-8 replaced by U+FFFD (the rule of
//!   [`crate::tensor::json`]; hash an input to keep a trace of exact bytes).
//! - A hashed input carries `"sha256"` (lowercase hex of its raw bytes: fixed-size
//!   types as little-endian bytes, BYTES as the protocol's 4-byte little-endian
//!   length prefix + bytes per element) instead of `data`; a dropped input is absent.
//! - With `payloads` off, every tensor keeps `name`, `datatype` and `shape` only.
//! - When the version monitors fairness, a successful record also carries
//!   `"fairness": [{"group": "b", "favourable": true}, ...]`, one entry per
//!   row (at most the quality monitor's row cap): the group the row was
//!   counted in and whether its outcome is the favourable one. Computed on the
//!   sink's thread, so it costs the request nothing; kept with payloads off
//!   and with the group's input dropped or hashed, since it is what the
//!   server decided, not what the client sent.
//!
//! # CloudEvents
//!
//! Two binary-mode CloudEvents per record, as KServe's logger sends them: an
//! `org.kubeflow.serving.inference.request` whose body is the V2 request JSON
//! (`{"id","inputs"}`) and an `org.kubeflow.serving.inference.response` whose
//! body is the V2 response JSON (`{"model_name","model_version","id","outputs"}`,
//! or `{"error":msg}` for a failure), both with the same `Ce-Id`. See [`http`].

mod file;
pub mod http;
mod json;
mod sink;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::TrySendError;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use switchyard_proto::inference::ModelConfig;

use crate::error::ErrorKind;
use crate::metrics::Protocol;
use crate::tensor::Tensor;
use sink::{Msg, SinkHandle, spawn_sink};
pub(crate) use sink::{Sink, Stats, Warner};

pub use json::rfc3339_micros;

/// How long written records may stay in the file sink's buffer.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// At most one warning per sink per this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// Prefix of the parameters in `config.pbtxt` that configure a model's log.
pub const PARAMETER_PREFIX: &str = "prediction_log.";

/// Server-wide settings of the prediction log.
#[derive(Debug, Clone)]
pub struct PredictionLogSettings {
    /// Directory of the JSON Lines files; `None`: no file sink.
    pub dir: Option<PathBuf>,
    /// Size at which `predictions.jsonl` is rotated (default 64 MiB).
    pub max_file_bytes: u64,
    /// Rotated files kept; older ones are deleted (default 10).
    pub max_files: usize,
    /// CloudEvents HTTP endpoint (`http://` only); `None`: no HTTP sink.
    pub url: Option<String>,
    /// Records each sink may have waiting (default 4096).
    pub queue_capacity: usize,
    /// Retries of one event after a connection error, timeout or 5xx (default 3).
    pub http_retries: u32,
    /// Timeout of one HTTP attempt (default 2 s).
    pub http_timeout: Duration,
    /// CloudEvents `source`, e.g. `http://host:8000/`.
    pub source: String,
    /// Run the sink threads at the lowest priority (default): they use only
    /// CPU that inference leaves idle, and on a saturated machine records are
    /// dropped (and counted) rather than slowing requests.
    pub low_priority: bool,
    /// Extra CA bundle (PEM) for an https:// URL.
    pub extra_ca: Option<Vec<u8>>,
}

impl Default for PredictionLogSettings {
    fn default() -> Self {
        PredictionLogSettings {
            dir: None,
            max_file_bytes: 64 << 20,
            max_files: 10,
            url: None,
            queue_capacity: 4096,
            http_retries: 3,
            http_timeout: Duration::from_secs(2),
            source: "/switchyard".to_string(),
            low_priority: true,
            extra_ca: None,
        }
    }
}

/// A model's logging policy, from its `config.pbtxt` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelLogPolicy {
    /// Fraction of requests logged, 0 to 1.
    pub sample_rate: f64,
    /// Whether tensor contents are logged (else names, datatypes and shapes only).
    pub payloads: bool,
    /// Inputs left out of the log entirely.
    pub drop_inputs: Vec<String>,
    /// Inputs logged as the SHA-256 of their raw bytes instead of their contents.
    pub hash_inputs: Vec<String>,
}

impl Default for ModelLogPolicy {
    fn default() -> Self {
        ModelLogPolicy {
            sample_rate: 1.0,
            payloads: true,
            drop_inputs: Vec::new(),
            hash_inputs: Vec::new(),
        }
    }
}

impl ModelLogPolicy {
    /// Per-model opt-in from config.pbtxt parameters: keys
    /// `prediction_log.sample_rate` (0..=1; the presence of any
    /// `prediction_log.*` key opts the model in, sample_rate defaults to 1.0),
    /// `prediction_log.payloads` (`"true"`/`"false"`, default true),
    /// `prediction_log.drop_inputs` and `prediction_log.hash_inputs`
    /// (comma-separated input names). Invalid values and unknown
    /// `prediction_log.*` keys → `Err` (a readable message). No keys → `Ok(None)`.
    pub fn from_config(config: &ModelConfig) -> Result<Option<ModelLogPolicy>, String> {
        let mut policy = ModelLogPolicy::default();
        let mut any = false;
        let mut keys: Vec<(&String, &String)> = config
            .parameters
            .iter()
            .filter(|(k, _)| k.starts_with(PARAMETER_PREFIX))
            .map(|(k, v)| (k, &v.string_value))
            .collect();
        keys.sort();
        for (key, value) in keys {
            any = true;
            let value = value.trim();
            match &key[PARAMETER_PREFIX.len()..] {
                "sample_rate" => {
                    policy.sample_rate = value
                        .parse::<f64>()
                        .ok()
                        .filter(|r| (0.0..=1.0).contains(r))
                        .ok_or_else(|| format!("parameter {key}: expected a number from 0 to 1, got '{value}'"))?;
                }
                "payloads" => {
                    policy.payloads = match value.to_ascii_lowercase().as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(format!("parameter {key}: expected 'true' or 'false', got '{value}'")),
                    };
                }
                "drop_inputs" => policy.drop_inputs = split_names(value),
                "hash_inputs" => policy.hash_inputs = split_names(value),
                other => {
                    return Err(format!(
                        "unknown parameter {PARAMETER_PREFIX}{other} (known: sample_rate, payloads, drop_inputs, hash_inputs)"
                    ));
                }
            }
        }
        if !any {
            return Ok(None);
        }
        if let Some(both) = policy.drop_inputs.iter().find(|n| policy.hash_inputs.contains(n)) {
            return Err(format!(
                "input '{both}' is in both {PARAMETER_PREFIX}drop_inputs and {PARAMETER_PREFIX}hash_inputs"
            ));
        }
        Ok(Some(policy))
    }
}

fn split_names(value: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    value
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty() && seen.insert(*n))
        .map(str::to_string)
        .collect()
}

/// One logged inference.
#[derive(Debug, Clone)]
pub struct PredictionRecord {
    /// When the request arrived.
    pub time: SystemTime,
    /// The request's id (may be empty: the log then generates one).
    pub id: String,
    /// Model name.
    pub model: String,
    /// Model version that served (or was asked for).
    pub version: String,
    /// Version label the request used, if any.
    pub label: Option<String>,
    /// Frontend.
    pub protocol: Protocol,
    /// Success, or the error's kind and message.
    pub outcome: Result<(), (ErrorKind, String)>,
    /// Time from arrival to answer.
    pub latency: Duration,
    /// Request inputs.
    pub inputs: Vec<Tensor>,
    /// Response outputs (empty on failure).
    pub outputs: Vec<Tensor>,
    /// Distributed-tracing trace id, if any.
    pub trace_id: Option<String>,
    /// Production, or a mirrored copy (a shadow's record carries
    /// `"traffic": "shadow"` / `ce-traffic: shadow`; production records neither).
    pub traffic: crate::metrics::Traffic,
    /// The version's fairness reading of each row, when it monitors fairness.
    pub fairness: Option<Fairness>,
}

/// One row as fairness monitoring counted it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RowFairness {
    /// The row's group (`null` when it has none).
    pub group: Option<String>,
    /// Whether its outcome is the favourable one.
    pub favourable: Option<bool>,
}

/// Reads a record's rows the way the version's fairness monitor does: given
/// the outputs and the inputs, one [`RowFairness`] per row. Called on the
/// sink's thread, once per record.
#[derive(Clone)]
pub struct Fairness(pub Arc<ReadRows>);

/// `(outputs, inputs)` → one [`RowFairness`] per row.
pub type ReadRows = dyn Fn(&[Tensor], &[Tensor]) -> Vec<RowFairness> + Send + Sync;

impl std::fmt::Debug for Fairness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fairness")
    }
}

/// A record with the privacy rules the sinks apply to it.
pub(crate) struct Job {
    pub(crate) record: PredictionRecord,
    pub(crate) payloads: bool,
    pub(crate) drop_inputs: Vec<String>,
    pub(crate) hash_inputs: Vec<String>,
    /// The record's [`Fairness`] rows, computed by the first sink that writes it.
    pub(crate) fairness_rows: std::sync::OnceLock<Vec<RowFairness>>,
}

impl Job {
    /// The per-row fairness fields of a successful record, if its version has them.
    pub(crate) fn fairness(&self) -> Option<&[RowFairness]> {
        let f = self.record.fairness.as_ref().filter(|_| self.record.outcome.is_ok())?;
        Some(
            self.fairness_rows
                .get_or_init(|| (f.0)(&self.record.outputs, &self.record.inputs)),
        )
    }
}

struct Inner {
    sinks: Vec<SinkHandle>,
    stats: Arc<Stats>,
}

/// The prediction log; cheap to clone. Dropping the last clone lets the sink
/// threads drain their queues, flush and exit.
#[derive(Clone)]
pub struct PredictionLog {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for PredictionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PredictionLog")
            .field("sinks", &self.inner.as_ref().map_or(0, |i| i.sinks.len()))
            .finish()
    }
}

impl PredictionLog {
    /// Creates the directory and starts one thread per configured sink (the
    /// HTTP sink runs its own small current-thread runtime). May be called
    /// inside or outside a tokio runtime. Settings without any sink give a
    /// disabled log.
    pub fn start(settings: PredictionLogSettings) -> anyhow::Result<PredictionLog> {
        anyhow::ensure!(
            settings.queue_capacity > 0,
            "prediction log queue capacity must be at least 1"
        );
        let stats = Arc::new(Stats::default());
        let mut sinks = Vec::new();
        if let Some(dir) = &settings.dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the prediction log directory {}", dir.display()))?;
            let sink = file::FileSink::new(dir.clone(), settings.max_file_bytes, settings.max_files, stats.clone());
            sinks.push(spawn_sink(
                "file",
                settings.queue_capacity,
                settings.low_priority,
                move || Ok(sink),
            )?);
        }
        if let Some(url) = &settings.url {
            let config = http::HttpSinkConfig::new(url, &settings)?;
            let stats = stats.clone();
            sinks.push(spawn_sink(
                "http",
                settings.queue_capacity,
                settings.low_priority,
                move || http::HttpSink::new(config, stats),
            )?);
        }
        if sinks.is_empty() {
            return Ok(PredictionLog::disabled());
        }
        Ok(PredictionLog {
            inner: Some(Arc::new(Inner { sinks, stats })),
        })
    }

    /// A log without sinks: [`PredictionLog::sample`] is always false.
    pub fn disabled() -> PredictionLog {
        PredictionLog { inner: None }
    }

    /// Whether the log has any sink.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The sampling decision (a thread-local xorshift draw): whether the
    /// caller should build and submit a record for this request.
    pub fn sample(&self, policy: &ModelLogPolicy) -> bool {
        if self.inner.is_none() {
            return false;
        }
        let rate = policy.sample_rate;
        if rate >= 1.0 {
            true
        } else if rate > 0.0 {
            random_unit() < rate
        } else {
            false
        }
    }

    /// Hands a record to every sink; never blocks. A sink whose queue is full
    /// drops it (`dropped_total{reason="queue_full"}`). `policy`'s privacy
    /// rules are applied by the sinks.
    pub fn submit(&self, policy: &ModelLogPolicy, mut record: PredictionRecord) {
        let Some(inner) = &self.inner else {
            return;
        };
        if record.id.is_empty() {
            record.id = random_id();
        }
        let job = Arc::new(Job {
            record,
            payloads: policy.payloads,
            drop_inputs: policy.drop_inputs.clone(),
            hash_inputs: policy.hash_inputs.clone(),
            fairness_rows: std::sync::OnceLock::new(),
        });
        for sink in &inner.sinks {
            match sink.tx.try_send(Msg::Job(job.clone())) {
                Ok(()) => {
                    sink.progress.accepted.fetch_add(1, Ordering::SeqCst);
                }
                Err(TrySendError::Full(_)) => inner.stats.drop_one("queue_full"),
                Err(TrySendError::Disconnected(_)) => inner.stats.drop_one("sink_error"),
            }
        }
    }

    /// Records dropped so far, all sinks and reasons together.
    pub fn dropped(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.stats.dropped.load(Ordering::Relaxed))
    }

    /// Records written (file) or delivered (HTTP) so far, summed over sinks.
    pub fn written(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.stats.written.load(Ordering::Relaxed))
    }

    /// Blocks the calling thread (at most `timeout`) until every record
    /// submitted before the call was handled by the sinks and flushed to the
    /// files; true if it was. From async code call it via `spawn_blocking`.
    pub fn flush(&self, timeout: Duration) -> bool {
        let Some(inner) = &self.inner else {
            return true;
        };
        let deadline = Instant::now() + timeout;
        let mut all = true;
        for sink in &inner.sinks {
            let p = &sink.progress;
            let target = p.accepted.load(Ordering::SeqCst);
            p.wanted.fetch_max(target, Ordering::SeqCst);
            // Wakes an idle thread; a full queue wakes it anyway.
            let _ = sink.tx.try_send(Msg::Wake);
            let mut done = p.done.lock().unwrap_or_else(|e| e.into_inner());
            while *done < target && p.alive.load(Ordering::SeqCst) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                done = p.changed.wait_timeout(done, left).unwrap_or_else(|e| e.into_inner()).0;
            }
            all &= *done >= target;
        }
        all
    }
}

thread_local! {
    static RNG: std::cell::Cell<u64> = std::cell::Cell::new(seed());
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish() | 1
}

/// xorshift64*.
fn random_u64() -> u64 {
    RNG.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// Uniform in [0, 1).
fn random_unit() -> f64 {
    (random_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// 32 hex digits.
fn random_id() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
}

#[cfg(test)]
mod tests;
