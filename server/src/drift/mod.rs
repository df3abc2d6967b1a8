//! Drift and anomaly signals: running statistics of the tensors a model
//! version sees and answers, compared against a reference profile.
//!
//! - Per model version, per tensor (inputs and outputs), per feature: count,
//!   NaN and ±Inf counts, min, max, mean and standard deviation (Welford). A
//!   row's elements are its features while there are at most `max_features`
//!   of them; larger rows are summarised as one aggregate feature `"*"`, so
//!   metric labels stay bounded. Class-score outputs (rank 2, floating point,
//!   `[rows, C]` with 2 ≤ C ≤ 1000) also get their argmax class distribution.
//! - A [`Profile`] (JSON, built from reference samples or shipped as
//!   `profile.json`) holds quantile bins and reference proportions; the
//!   current traffic is compared by PSI over tumbling windows of `window`
//!   samples (rows). Reported values (gauges and [`DriftReport`]) describe
//!   the current window once it holds `min_samples` rows, else the last
//!   completed one.
//! - Nothing heavy runs on the request path: [`VersionDrift::observe`] decides
//!   by `sample_rate` whether to sample (one atomic add), then `try_send`s the
//!   tensors (reference-counted buffers) into one process-wide bounded queue
//!   drained by one background thread, `sy-drift`. A full queue drops the
//!   sample and counts it in `switchyard_drift_dropped_total`.
//!
//! Unloading: when a [`VersionDrift`] is dropped, its PSI gauges and its alert
//! gauge are set to 0 (the Prometheus recorder cannot remove series), its
//! tensor statistics gauges keep their last values, its state is freed and
//! samples still queued for it are discarded.
//!
//! Memory per version is bounded by its tensors (at most 128 tracked), their
//! features (at most `max_features` + 1 each) and classes (at most 1000):
//! nothing grows with the number of observations.

mod profile;
mod stats;
#[cfg(test)]
mod tests;

pub use profile::{FeatureProfile, PROFILE_FORMAT, Profile, Role, TensorProfile};
pub use stats::{AGGREGATE_FEATURE, CLASS_FEATURE, MAX_CLASSES, MIN_CLASSES, PSI_EPSILON, REFERENCE_BINS};

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, describe_counter, describe_gauge};
use parking_lot::{Condvar, Mutex};
use serde::Serialize;
use switchyard_proto::inference::ModelConfig;

use crate::tensor::Tensor;
use stats::{Layout, Welford};

/// PSI of the reported window against the reference, per tensor and feature (`argmax` for classes).
pub const DRIFT_PSI: &str = "switchyard_drift_psi";
/// 1 while any PSI of a model version is at or above its threshold, else 0.
pub const DRIFT_ALERT: &str = "switchyard_drift_alert";
/// Samples not analysed because the drift queue was full.
pub const DRIFT_DROPPED: &str = "switchyard_drift_dropped_total";
/// Mean of a feature's finite values in the reported window.
pub const TENSOR_MEAN: &str = "switchyard_tensor_mean";
/// Population standard deviation of a feature's finite values in the reported window.
pub const TENSOR_STD: &str = "switchyard_tensor_std";
/// Smallest finite value of a feature in the reported window.
pub const TENSOR_MIN: &str = "switchyard_tensor_min";
/// Largest finite value of a feature in the reported window.
pub const TENSOR_MAX: &str = "switchyard_tensor_max";
/// NaN (`kind="nan"`) and ±Inf (`kind="inf"`) elements seen in a tensor.
pub const TENSOR_NONFINITE: &str = "switchyard_tensor_nonfinite_total";

/// Capacity of the process-wide queue to the drift worker.
pub const QUEUE_CAPACITY: usize = 1024;
/// Largest accepted `max_features`.
pub const MAX_FEATURES_LIMIT: usize = 1024;
/// Tensors tracked per model version; further names are ignored.
const MAX_TENSORS: usize = 128;
/// Decode buffer capacity kept between samples.
const KEEP_BUFFER: usize = 1 << 16;

/// Describes the drift metrics to the installed recorder (idempotent; also
/// done by [`VersionDrift::new`]).
pub fn describe_metrics() {
    describe_gauge!(
        DRIFT_PSI,
        "Population stability index of a tensor feature (or argmax class distribution) against the reference."
    );
    describe_gauge!(
        DRIFT_ALERT,
        "1 while any drift PSI of a model version is at or above its threshold."
    );
    describe_counter!(
        DRIFT_DROPPED,
        "Drift samples dropped because the analysis queue was full."
    );
    describe_gauge!(
        TENSOR_MEAN,
        "Mean of a tensor feature's finite values in the drift window."
    );
    describe_gauge!(
        TENSOR_STD,
        "Standard deviation of a tensor feature's finite values in the drift window."
    );
    describe_gauge!(
        TENSOR_MIN,
        "Smallest finite value of a tensor feature in the drift window."
    );
    describe_gauge!(
        TENSOR_MAX,
        "Largest finite value of a tensor feature in the drift window."
    );
    describe_counter!(TENSOR_NONFINITE, "NaN and infinite elements seen in a tensor, by kind.");
}

/// Drift settings of a model version.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DriftSettings {
    /// Fraction of requests analysed, 0 to 1 (0 turns observation off).
    pub sample_rate: f64,
    /// Samples (rows) per tumbling window.
    pub window: u64,
    /// Samples the current window needs before it is reported instead of the
    /// last completed one (at most `window`).
    pub min_samples: u64,
    /// PSI at or above which the version alerts.
    pub psi_threshold: f64,
    /// Rows with more elements are summarised as one feature `"*"`.
    pub max_features: usize,
    /// Whether the model batches: then rank-1 tensors are `[rows]`; else a
    /// rank-1 tensor is one sample. Tensors of rank ≥ 2 always have rows `shape[0]`.
    pub batched: bool,
}

impl Default for DriftSettings {
    fn default() -> Self {
        DriftSettings {
            sample_rate: 1.0,
            window: 1000,
            min_samples: 100,
            psi_threshold: 0.2,
            max_features: 32,
            batched: true,
        }
    }
}

impl DriftSettings {
    /// `base` overridden by the config's parameters `drift.sample_rate`,
    /// `drift.window`, `drift.min_samples`, `drift.psi_threshold` and
    /// `drift.max_features` (string values); `batched` from `max_batch_size > 0`.
    pub fn from_config(config: &ModelConfig, base: &DriftSettings) -> Result<DriftSettings, String> {
        let param = |key: &str| config.parameters.get(key).map(|p| p.string_value.trim().to_string());
        let mut s = base.clone();
        if let Some(v) = param("drift.sample_rate") {
            s.sample_rate = v
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| format!("parameter 'drift.sample_rate' must be a number from 0 to 1, got '{v}'"))?;
        }
        let positive = |key: &str, v: &str| {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("parameter '{key}' must be a positive integer, got '{v}'"))
        };
        if let Some(v) = param("drift.window") {
            s.window = positive("drift.window", &v)?;
        }
        if let Some(v) = param("drift.min_samples") {
            s.min_samples = positive("drift.min_samples", &v)?;
        }
        if let Some(v) = param("drift.psi_threshold") {
            s.psi_threshold = v
                .parse::<f64>()
                .ok()
                .filter(|t| t.is_finite() && *t > 0.0)
                .ok_or_else(|| format!("parameter 'drift.psi_threshold' must be a positive number, got '{v}'"))?;
        }
        if let Some(v) = param("drift.max_features") {
            s.max_features = v
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= MAX_FEATURES_LIMIT)
                .ok_or_else(|| {
                    format!(
                        "parameter 'drift.max_features' must be an integer from 0 to {MAX_FEATURES_LIMIT}, got '{v}'"
                    )
                })?;
        }
        s.batched = config.max_batch_size > 0;
        Ok(s)
    }

    /// Values forced into range (for settings built by hand).
    fn sanitized(mut self) -> DriftSettings {
        self.sample_rate = if self.sample_rate.is_nan() {
            0.0
        } else {
            self.sample_rate.clamp(0.0, 1.0)
        };
        self.window = self.window.max(1);
        self.min_samples = self.min_samples.clamp(1, self.window);
        if !(self.psi_threshold.is_finite() && self.psi_threshold > 0.0) {
            self.psi_threshold = DriftSettings::default().psi_threshold;
        }
        self.max_features = self.max_features.min(MAX_FEATURES_LIMIT);
        self
    }
}

/// Which window the reported values describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShownWindow {
    /// No window yet: the first has fewer than `min_samples` samples.
    None,
    /// The current window (it has at least `min_samples` samples).
    Current,
    /// The last completed window.
    LastCompleted,
}

/// A snapshot of a version's drift state (served as JSON).
#[derive(Clone, Debug, Serialize)]
pub struct DriftReport {
    /// Model name.
    pub model: String,
    /// Version.
    pub version: String,
    /// Settings in force.
    pub settings: DriftSettings,
    /// Whether a reference profile is loaded (without one there is no PSI).
    pub has_reference: bool,
    /// Whether any reported PSI is at or above the threshold.
    pub alert: bool,
    /// Largest reported PSI.
    pub max_psi: Option<f64>,
    /// `observe` calls.
    pub offered: u64,
    /// Requests queued for analysis (after sampling).
    pub sampled: u64,
    /// Sampled requests dropped because the queue was full.
    pub dropped: u64,
    /// Requests analysed.
    pub processed: u64,
    /// Samples (rows) analysed.
    pub samples_seen: u64,
    /// Window state.
    pub window: WindowReport,
    /// Per tensor, in order of first appearance.
    pub tensors: Vec<TensorReport>,
}

/// Tumbling-window state.
#[derive(Clone, Debug, Serialize)]
pub struct WindowReport {
    /// Samples per window.
    pub size: u64,
    /// Samples in the current window.
    pub current_samples: u64,
    /// Windows completed.
    pub completed: u64,
    /// Which window the reported values describe.
    pub shown: ShownWindow,
    /// Samples in the shown window.
    pub shown_samples: u64,
}

/// One tensor in a [`DriftReport`].
#[derive(Clone, Debug, Serialize)]
pub struct TensorReport {
    /// Tensor name.
    pub name: String,
    /// Input or output.
    pub role: Role,
    /// Datatype name.
    pub datatype: String,
    /// Per feature (`"0"`, `"1"`, ... then `"*"` if the tensor had large rows).
    pub features: Vec<FeatureReport>,
    /// Argmax distribution of a class-score output.
    pub classes: Option<ClassReport>,
}

/// One feature in a [`DriftReport`].
#[derive(Clone, Debug, Serialize)]
pub struct FeatureReport {
    /// Feature label.
    pub feature: String,
    /// Everything analysed since the version loaded.
    pub total: Stats,
    /// The shown window.
    pub window: Option<Stats>,
    /// PSI of the shown window against the reference.
    pub psi: Option<f64>,
    /// The reference's statistics, where the profile has this feature.
    pub reference: Option<ReferenceStats>,
}

/// Statistics of a feature's values.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Stats {
    /// Values, non-finite included.
    pub count: u64,
    /// NaN values.
    pub nan: u64,
    /// ±Inf values.
    pub inf: u64,
    /// Smallest finite value.
    pub min: Option<f64>,
    /// Largest finite value.
    pub max: Option<f64>,
    /// Mean of the finite values.
    pub mean: Option<f64>,
    /// Population standard deviation of the finite values.
    pub std: Option<f64>,
}

impl From<&Welford> for Stats {
    fn from(w: &Welford) -> Stats {
        Stats {
            count: w.count,
            nan: w.nan,
            inf: w.inf,
            min: w.min(),
            max: w.max(),
            mean: w.mean(),
            std: w.std(),
        }
    }
}

/// A feature's reference statistics.
#[derive(Clone, Debug, Serialize)]
pub struct ReferenceStats {
    /// Finite reference values.
    pub count: u64,
    /// Reference mean.
    pub mean: f64,
    /// Reference standard deviation.
    pub std: f64,
}

/// Argmax class distribution of a class-score output.
#[derive(Clone, Debug, Serialize)]
pub struct ClassReport {
    /// Classes (C).
    pub classes: usize,
    /// Rows per argmax class since the version loaded.
    pub total_counts: Vec<u64>,
    /// Class proportions in the shown window.
    pub window_proportions: Option<Vec<f64>>,
    /// Reference class proportions.
    pub reference_proportions: Option<Vec<f64>>,
    /// PSI of the shown window against the reference.
    pub psi: Option<f64>,
}

/// Drift tracking of one model version; cheap to call from request handling.
pub struct VersionDrift {
    shared: Arc<Shared>,
    tx: SyncSender<Job>,
}

impl std::fmt::Debug for VersionDrift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionDrift")
            .field("model", &self.shared.model)
            .field("version", &self.shared.version)
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

impl VersionDrift {
    /// Starts tracking `model` / `version` (and the shared worker, on first use).
    /// Without a `reference` only statistics are kept, no PSI.
    pub fn new(model: &str, version: &str, reference: Option<Profile>, settings: DriftSettings) -> Arc<VersionDrift> {
        VersionDrift::with_sender(model, version, reference, settings, global_sender())
    }

    fn with_sender(
        model: &str,
        version: &str,
        reference: Option<Profile>,
        settings: DriftSettings,
        tx: SyncSender<Job>,
    ) -> Arc<VersionDrift> {
        describe_metrics();
        let shared = Arc::new(Shared {
            model: model.to_string(),
            version: version.to_string(),
            settings: settings.sanitized(),
            state: Mutex::new(State::new(reference)),
            offered: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            done: Mutex::new(0),
            done_cv: Condvar::new(),
            alert: AtomicBool::new(false),
            dropped_counter: metrics::counter!(DRIFT_DROPPED, "model" => model.to_string(), "version" => version.to_string()),
        });
        Arc::new(VersionDrift { shared, tx })
    }

    /// Offers one request's tensors for analysis; never blocks. Sampled by
    /// `sample_rate` (deterministically: exactly that fraction of calls), then
    /// queued, or dropped and counted when the queue is full.
    pub fn observe(self: &Arc<Self>, inputs: Vec<Tensor>, outputs: Vec<Tensor>) {
        let sh = &self.shared;
        let n = sh.offered.fetch_add(1, Ordering::Relaxed);
        let rate = sh.settings.sample_rate;
        if inputs.is_empty() && outputs.is_empty() || rate <= 0.0 {
            return;
        }
        if rate < 1.0 && ((n + 1) as f64 * rate).floor() <= (n as f64 * rate).floor() {
            return;
        }
        let job = Job {
            shared: Arc::clone(sh),
            inputs,
            outputs,
        };
        match self.tx.try_send(job) {
            Ok(()) => {
                sh.sent.fetch_add(1, Ordering::Release);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                sh.dropped.fetch_add(1, Ordering::Relaxed);
                sh.dropped_counter.increment(1);
            }
        }
    }

    /// Waits up to `timeout` until every request queued so far has been
    /// analysed; tells whether it was.
    pub fn flush(&self, timeout: Duration) -> bool {
        let sh = &self.shared;
        let target = sh.sent.load(Ordering::Acquire);
        let deadline = Instant::now() + timeout;
        let mut done = sh.done.lock();
        while *done < target {
            if sh.done_cv.wait_until(&mut done, deadline).timed_out() {
                return *done >= target;
            }
        }
        true
    }

    /// Whether any reported PSI is at or above the threshold.
    pub fn alert(&self) -> bool {
        self.shared.alert.load(Ordering::Relaxed)
    }

    /// The settings in force (sanitised).
    pub fn settings(&self) -> &DriftSettings {
        &self.shared.settings
    }

    /// A snapshot of the statistics, PSIs and counters.
    pub fn report(&self) -> DriftReport {
        let sh = &self.shared;
        let state = sh.state.lock();
        let shown = state.shown(&sh.settings);
        let tensors: Vec<TensorReport> = state.tensors.iter().map(|t| t.report(shown)).collect();
        let max_psi = tensors
            .iter()
            .flat_map(|t| {
                t.features
                    .iter()
                    .map(|f| f.psi)
                    .chain([t.classes.as_ref().and_then(|c| c.psi)])
            })
            .flatten()
            .reduce(f64::max);
        DriftReport {
            model: sh.model.clone(),
            version: sh.version.clone(),
            settings: sh.settings.clone(),
            has_reference: state.reference.is_some(),
            alert: sh.alert.load(Ordering::Relaxed),
            max_psi,
            offered: sh.offered.load(Ordering::Relaxed),
            sampled: sh.sent.load(Ordering::Relaxed),
            dropped: sh.dropped.load(Ordering::Relaxed),
            processed: state.processed,
            samples_seen: state.samples,
            window: WindowReport {
                size: sh.settings.window,
                current_samples: state.window_samples,
                completed: state.windows_completed,
                shown,
                shown_samples: match shown {
                    ShownWindow::None => 0,
                    ShownWindow::Current => state.window_samples,
                    ShownWindow::LastCompleted => sh.settings.window,
                },
            },
            tensors,
        }
    }
}

impl Drop for VersionDrift {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        state.closed = true;
        for t in &state.tensors {
            for f in t.features() {
                if let Some(g) = &f.gauges {
                    g.psi.set(0.0);
                }
            }
            if let Some(g) = t.classes.as_ref().and_then(|c| c.gauge.as_ref()) {
                g.set(0.0);
            }
        }
        if let Some(g) = &state.alert_gauge {
            g.set(0.0);
        }
        state.tensors.clear();
        state.index.clear();
        state.reference = None;
        state.buf = Vec::new();
        self.shared.alert.store(false, Ordering::Relaxed);
    }
}

/// One sampled request on its way to the worker.
struct Job {
    shared: Arc<Shared>,
    inputs: Vec<Tensor>,
    outputs: Vec<Tensor>,
}

/// The process-wide queue; its worker starts on first use.
fn global_sender() -> SyncSender<Job> {
    static TX: OnceLock<SyncSender<Job>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_CAPACITY);
        spawn_worker(rx);
        tx
    })
    .clone()
}

/// Starts a worker thread draining `rx` (if it cannot start, sends fail and count as drops).
fn spawn_worker(rx: Receiver<Job>) {
    // While samples flow the worker drains the queue every few milliseconds
    // instead of blocking on it, so a request never has to wake it (no futex
    // call or context switch per sample); idle for a second, it blocks again.
    let started = std::thread::Builder::new().name("sy-drift".into()).spawn(move || {
        crate::background_priority("drift");
        const LINGER: std::time::Duration = std::time::Duration::from_secs(1);
        const TICK: std::time::Duration = std::time::Duration::from_millis(5);
        'blocking: while let Ok(job) = rx.recv() {
            run_job(job);
            let mut last = std::time::Instant::now();
            loop {
                loop {
                    match rx.try_recv() {
                        Ok(job) => {
                            run_job(job);
                            last = std::time::Instant::now();
                        }
                        Err(std::sync::mpsc::TryRecvError::Empty) => break,
                        Err(std::sync::mpsc::TryRecvError::Disconnected) => break 'blocking,
                    }
                }
                if last.elapsed() >= LINGER {
                    continue 'blocking;
                }
                std::thread::sleep(TICK);
            }
        }
    });
    if let Err(e) = started {
        tracing::error!(error = %e, "cannot start the drift worker: drift samples will be dropped");
    }
}

fn run_job(job: Job) {
    let Job {
        shared,
        inputs,
        outputs,
    } = job;
    {
        let mut state = shared.state.lock();
        if !state.closed {
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| state.process(&shared, &inputs, &outputs)));
            if result.is_err() {
                tracing::error!(model = %shared.model, version = %shared.version, "drift analysis failed on a sample");
            }
        }
    }
    drop((inputs, outputs));
    let mut done = shared.done.lock();
    *done += 1;
    shared.done_cv.notify_all();
}

/// What the request path and the worker share.
struct Shared {
    model: String,
    version: String,
    settings: DriftSettings,
    state: Mutex<State>,
    offered: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
    done: Mutex<u64>,
    done_cv: Condvar,
    alert: AtomicBool,
    dropped_counter: Counter,
}

/// The worker's view of one version.
struct State {
    closed: bool,
    reference: Option<Profile>,
    tensors: Vec<TensorState>,
    index: HashMap<(Role, String), usize>,
    processed: u64,
    samples: u64,
    window_samples: u64,
    windows_completed: u64,
    alert_gauge: Option<Gauge>,
    buf: Vec<f64>,
}

struct View<'a> {
    idx: usize,
    tensor: &'a Tensor,
    layout: Layout,
    nan: u64,
    inf: u64,
}

impl State {
    fn new(reference: Option<Profile>) -> State {
        State {
            closed: false,
            reference,
            tensors: Vec::new(),
            index: HashMap::new(),
            processed: 0,
            samples: 0,
            window_samples: 0,
            windows_completed: 0,
            alert_gauge: None,
            buf: Vec::new(),
        }
    }

    fn shown(&self, s: &DriftSettings) -> ShownWindow {
        if self.window_samples >= s.min_samples {
            ShownWindow::Current
        } else if self.windows_completed > 0 {
            ShownWindow::LastCompleted
        } else {
            ShownWindow::None
        }
    }

    fn tensor_index(&mut self, role: Role, t: &Tensor) -> Option<usize> {
        if let Some(&i) = self.index.get(&(role, t.name.clone())) {
            return Some(i);
        }
        if self.tensors.len() >= MAX_TENSORS {
            return None;
        }
        let reference = self.reference.as_ref().and_then(|p| p.tensor(role, &t.name)).cloned();
        self.tensors.push(TensorState {
            role,
            name: t.name.clone(),
            datatype: t.datatype.as_str(),
            reference,
            per_index: Vec::new(),
            aggregate: None,
            classes: None,
            nonfinite: None,
        });
        let i = self.tensors.len() - 1;
        self.index.insert((role, t.name.clone()), i);
        Some(i)
    }

    fn process(&mut self, sh: &Shared, inputs: &[Tensor], outputs: &[Tensor]) {
        let s = &sh.settings;
        let mut views: Vec<View<'_>> = Vec::new();
        for (role, tensors) in [(Role::Input, inputs), (Role::Output, outputs)] {
            for t in tensors {
                let Some(layout) = stats::layout(t, role == Role::Output, s.batched, s.max_features) else {
                    continue;
                };
                let Some(idx) = self.tensor_index(role, t) else {
                    continue;
                };
                views.push(View {
                    idx,
                    tensor: t,
                    layout,
                    nan: 0,
                    inf: 0,
                });
            }
        }
        let rows = views.iter().map(|v| v.layout.rows).max().unwrap_or(0);
        let mut buf = std::mem::take(&mut self.buf);
        for r in 0..rows {
            for v in views.iter_mut().filter(|v| r < v.layout.rows) {
                stats::decode(v.tensor.datatype, stats::row_bytes(v.tensor, &v.layout, r), &mut buf);
                let (nan, inf) = self.tensors[v.idx].push_row(&buf, &v.layout);
                v.nan += nan;
                v.inf += inf;
            }
            self.samples += 1;
            self.window_samples += 1;
            if self.window_samples >= s.window {
                self.rotate();
            }
        }
        buf.clear();
        buf.shrink_to(KEEP_BUFFER);
        self.buf = buf;
        self.processed += 1;
        for v in &views {
            if v.nan > 0 || v.inf > 0 {
                let t = &mut self.tensors[v.idx];
                let (nan_counter, inf_counter) = t.nonfinite.get_or_insert_with(|| {
                    let counter = |kind: &'static str| {
                        metrics::counter!(TENSOR_NONFINITE, "model" => sh.model.clone(), "version" => sh.version.clone(),
                            "tensor" => t.name.clone(), "kind" => kind)
                    };
                    (counter("nan"), counter("inf"))
                });
                nan_counter.increment(v.nan);
                inf_counter.increment(v.inf);
            }
        }
        self.publish(sh);
    }

    fn rotate(&mut self) {
        for t in &mut self.tensors {
            for f in t.per_index.iter_mut().chain(t.aggregate.as_mut()) {
                f.rotate();
            }
            if let Some(c) = &mut t.classes {
                c.rotate();
            }
        }
        self.window_samples = 0;
        self.windows_completed += 1;
    }

    /// Computes the PSIs of the shown window, sets the gauges and the alert.
    fn publish(&mut self, sh: &Shared) {
        let s = &sh.settings;
        let shown = self.shown(s);
        if shown == ShownWindow::None {
            return;
        }
        let labels = |tensor: &str, feature: &str| {
            [
                ("model", sh.model.clone()),
                ("version", sh.version.clone()),
                ("tensor", tensor.to_string()),
                ("feature", feature.to_string()),
            ]
        };
        // (psi, tensor, feature) of the largest PSI.
        let mut worst: Option<(f64, String, String)> = None;
        let mut consider = |psi: Option<f64>, tensor: &str, feature: &str| {
            if let Some(p) = psi
                && worst.as_ref().is_none_or(|w| p > w.0)
            {
                worst = Some((p, tensor.to_string(), feature.to_string()));
            }
        };
        for t in &mut self.tensors {
            let name = t.name.as_str();
            for f in t.per_index.iter_mut().chain(t.aggregate.as_mut()) {
                let (w, psi) = f.shown(shown);
                let Some(values) = w.map(|w| (w.mean(), w.std(), w.min(), w.max())) else {
                    f.psi = None;
                    continue;
                };
                f.psi = psi;
                let g = f.gauges.get_or_insert_with(|| {
                    let l = labels(name, &f.label);
                    FeatureGauges {
                        psi: metrics::gauge!(DRIFT_PSI, &l),
                        mean: metrics::gauge!(TENSOR_MEAN, &l),
                        std: metrics::gauge!(TENSOR_STD, &l),
                        min: metrics::gauge!(TENSOR_MIN, &l),
                        max: metrics::gauge!(TENSOR_MAX, &l),
                    }
                });
                if let (Some(mean), Some(std), Some(min), Some(max)) = values {
                    g.mean.set(mean);
                    g.std.set(std);
                    g.min.set(min);
                    g.max.set(max);
                }
                if let Some(p) = psi {
                    g.psi.set(p);
                }
                consider(psi, name, &f.label);
            }
            if let Some(c) = &mut t.classes {
                c.psi = c
                    .shown(shown)
                    .and_then(|counts| c.reference.as_deref().and_then(|r| stats::psi(r, counts)));
                if let Some(p) = c.psi {
                    c.gauge
                        .get_or_insert_with(|| metrics::gauge!(DRIFT_PSI, &labels(name, CLASS_FEATURE)))
                        .set(p);
                }
                consider(c.psi, name, CLASS_FEATURE);
            }
        }
        let alert = worst.as_ref().is_some_and(|w| w.0 >= s.psi_threshold);
        self.alert_gauge
            .get_or_insert_with(
                || metrics::gauge!(DRIFT_ALERT, "model" => sh.model.clone(), "version" => sh.version.clone()),
            )
            .set(if alert { 1.0 } else { 0.0 });
        let was = sh.alert.swap(alert, Ordering::Relaxed);
        match (was, alert, worst) {
            (false, true, Some((psi, tensor, feature))) => tracing::warn!(
                model = %sh.model, version = %sh.version, %tensor, %feature, psi, threshold = s.psi_threshold,
                "drift detected: PSI at or above the threshold"
            ),
            (true, false, worst) => tracing::info!(
                model = %sh.model, version = %sh.version, max_psi = worst.map(|w| w.0), threshold = s.psi_threshold,
                "drift alert cleared"
            ),
            _ => {}
        }
    }
}

/// The per-tensor state.
struct TensorState {
    role: Role,
    name: String,
    datatype: &'static str,
    reference: Option<TensorProfile>,
    per_index: Vec<FeatureState>,
    aggregate: Option<FeatureState>,
    classes: Option<ClassState>,
    nonfinite: Option<(Counter, Counter)>,
}

impl TensorState {
    fn features(&self) -> impl Iterator<Item = &FeatureState> {
        self.per_index.iter().chain(self.aggregate.as_ref())
    }

    fn reference_feature(&self, label: &str) -> Option<&FeatureProfile> {
        self.reference.as_ref()?.features.iter().find(|f| f.feature == label)
    }

    /// Adds one row; returns its NaN and ±Inf counts.
    fn push_row(&mut self, values: &[f64], l: &Layout) -> (u64, u64) {
        if l.aggregate {
            if self.aggregate.is_none() {
                self.aggregate = Some(FeatureState::new(
                    AGGREGATE_FEATURE.to_string(),
                    self.reference_feature(AGGREGATE_FEATURE),
                ));
            }
            if let Some(f) = &mut self.aggregate {
                for &x in values {
                    f.push(x);
                }
            }
        } else {
            while self.per_index.len() < values.len() {
                let label = self.per_index.len().to_string();
                let f = FeatureState::new(label.clone(), self.reference_feature(&label));
                self.per_index.push(f);
            }
            for (f, &x) in self.per_index.iter_mut().zip(values) {
                f.push(x);
            }
        }
        if let Some(c) = l.classes
            && let Some(k) = stats::argmax(values)
        {
            let reference = self.reference.as_ref().and_then(|r| r.classes.clone());
            self.classes
                .get_or_insert_with(|| ClassState::new(reference))
                .push(k, c);
        }
        let nan = values.iter().filter(|x| x.is_nan()).count() as u64;
        let inf = values.iter().filter(|x| x.is_infinite()).count() as u64;
        (nan, inf)
    }

    fn report(&self, shown: ShownWindow) -> TensorReport {
        TensorReport {
            name: self.name.clone(),
            role: self.role,
            datatype: self.datatype.to_string(),
            features: self.features().map(|f| f.report(shown)).collect(),
            classes: self.classes.as_ref().map(|c| c.report(shown)),
        }
    }
}

struct FeatureGauges {
    psi: Gauge,
    mean: Gauge,
    std: Gauge,
    min: Gauge,
    max: Gauge,
}

/// One feature: statistics of the completed windows, the current and the
/// last window, and the current / last window's bin counts.
struct FeatureState {
    label: String,
    reference: Option<FeatureProfile>,
    completed: Welford,
    current: Welford,
    last: Option<Welford>,
    bins: Vec<u64>,
    last_bins: Option<Vec<u64>>,
    psi: Option<f64>,
    gauges: Option<FeatureGauges>,
}

impl FeatureState {
    fn new(label: String, reference: Option<&FeatureProfile>) -> FeatureState {
        // A hand-built profile may be inconsistent; such a feature gets no PSI.
        let reference = reference.filter(|r| r.proportions.len() == r.edges.len() + 1);
        let bins = reference.map_or(0, |r| r.proportions.len());
        FeatureState {
            label,
            reference: reference.cloned(),
            completed: Welford::default(),
            current: Welford::default(),
            last: None,
            bins: vec![0; bins],
            last_bins: None,
            psi: None,
            gauges: None,
        }
    }

    #[inline]
    fn push(&mut self, x: f64) {
        self.current.push(x);
        if let Some(r) = &self.reference
            && !x.is_nan()
        {
            self.bins[stats::bin(&r.edges, x)] += 1;
        }
    }

    fn rotate(&mut self) {
        self.completed.merge(&self.current);
        self.last = Some(std::mem::take(&mut self.current));
        if self.reference.is_some() {
            let fresh = vec![0; self.bins.len()];
            self.last_bins = Some(std::mem::replace(&mut self.bins, fresh));
        }
    }

    /// The shown window's statistics and PSI.
    fn shown(&self, shown: ShownWindow) -> (Option<&Welford>, Option<f64>) {
        let (w, bins) = match shown {
            ShownWindow::None => return (None, None),
            ShownWindow::Current => (Some(&self.current), Some(self.bins.as_slice())),
            ShownWindow::LastCompleted => (self.last.as_ref(), self.last_bins.as_deref()),
        };
        let psi = match (&self.reference, bins) {
            (Some(r), Some(b)) => stats::psi(&r.proportions, b),
            _ => None,
        };
        (w, psi)
    }

    fn report(&self, shown: ShownWindow) -> FeatureReport {
        let mut total = self.completed.clone();
        total.merge(&self.current);
        let (w, psi) = self.shown(shown);
        FeatureReport {
            feature: self.label.clone(),
            total: Stats::from(&total),
            window: w.map(Stats::from),
            psi,
            reference: self.reference.as_ref().map(|r| ReferenceStats {
                count: r.count,
                mean: r.mean,
                std: r.std,
            }),
        }
    }
}

/// Argmax counts of a class-score output.
struct ClassState {
    reference: Option<Vec<f64>>,
    total: Vec<u64>,
    current: Vec<u64>,
    last: Option<Vec<u64>>,
    psi: Option<f64>,
    gauge: Option<Gauge>,
}

impl ClassState {
    fn new(reference: Option<Vec<f64>>) -> ClassState {
        ClassState {
            reference,
            total: Vec::new(),
            current: Vec::new(),
            last: None,
            psi: None,
            gauge: None,
        }
    }

    fn push(&mut self, class: usize, classes: usize) {
        let len = classes.min(MAX_CLASSES);
        if class >= len {
            return;
        }
        if self.current.len() < len {
            self.current.resize(len, 0);
            self.total.resize(len, 0);
        }
        self.current[class] += 1;
        self.total[class] += 1;
    }

    fn rotate(&mut self) {
        let fresh = vec![0; self.current.len()];
        self.last = Some(std::mem::replace(&mut self.current, fresh));
    }

    fn shown(&self, shown: ShownWindow) -> Option<&[u64]> {
        match shown {
            ShownWindow::None => None,
            ShownWindow::Current => Some(&self.current),
            ShownWindow::LastCompleted => self.last.as_deref(),
        }
    }

    fn report(&self, shown: ShownWindow) -> ClassReport {
        let counts = self.shown(shown);
        ClassReport {
            classes: self.total.len(),
            total_counts: self.total.clone(),
            window_proportions: counts.map(stats::proportions),
            reference_proportions: self.reference.clone(),
            psi: counts.and_then(|c| self.reference.as_deref().and_then(|r| stats::psi(r, c))),
        }
    }
}
