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
//! - Nothing heavy runs on the request path: [`VersionDrift::sample`] decides
//!   by `sample_rate` whether to sample (one atomic add) before any tensor is
//!   copied, then [`VersionDrift::submit`] `try_send`s the tensors
//!   (reference-counted buffers) into one bounded queue shared by every
//!   version, drained by one background thread, `sy-drift`, which exits once
//!   the last tracked version is dropped. A full queue drops the sample and
//!   counts it in `switchyard_drift_dropped_total`.
//!
//! Unloading: when a [`VersionDrift`] is dropped, its PSI gauges and its alert
//! gauge are set to 0 (the Prometheus recorder cannot remove series), its
//! tensor statistics gauges keep their last values, its state is freed and
//! samples still queued for it are discarded.
//!
//! Memory per version is bounded by its tensors (at most 128 tracked), their
//! features (at most `max_features` + 1 each) and classes (at most 1000):
//! nothing grows with the number of observations.

mod means;
mod profile;
mod report;
mod settings;
mod state;
mod stats;
#[cfg(test)]
mod tests;

pub use profile::{FeatureProfile, PROFILE_FORMAT, Profile, Role, TensorProfile};
pub use report::{
    ClassReport, DriftReport, FeatureReport, ReferenceStats, ShownWindow, Stats, TensorReport, WindowReport,
};
pub use settings::DriftSettings;
pub use stats::{AGGREGATE_FEATURE, CLASS_FEATURE, MAX_CLASSES, MIN_CLASSES, PSI_EPSILON, REFERENCE_BINS};

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use metrics::Counter;
use parking_lot::{Condvar, Mutex};

use crate::metrics::DRIFT_DROPPED;
use crate::tensor::Tensor;
use crate::util::drain;
use state::State;

/// Capacity of the queue to the drift worker.
pub const QUEUE_CAPACITY: usize = 1024;
/// Largest accepted `max_features`.
pub const MAX_FEATURES_LIMIT: usize = 1024;

/// Drift tracking of one model version; cheap to call from request handling.
pub struct VersionDrift {
    shared: Arc<Shared>,
    /// The worker's queue, shared by every tracked version: the worker exits
    /// once the last version using it is dropped (the server retired its models).
    tx: Arc<SyncSender<Job>>,
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
        tx: Arc<SyncSender<Job>>,
    ) -> Arc<VersionDrift> {
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

    /// Offers one request's tensors for analysis; never blocks: [`sample`]
    /// then, when sampled, [`submit`].
    ///
    /// [`sample`]: VersionDrift::sample
    /// [`submit`]: VersionDrift::submit
    pub fn observe(self: &Arc<Self>, inputs: Vec<Tensor>, outputs: Vec<Tensor>) {
        if self.sample() {
            self.submit(inputs, outputs);
        }
    }

    /// Counts one request as offered and tells whether it is sampled, by
    /// `sample_rate` (deterministically: exactly that fraction of calls). The
    /// request path asks this before it copies any tensor.
    pub fn sample(&self) -> bool {
        let sh = &self.shared;
        let n = sh.offered.fetch_add(1, Ordering::Relaxed);
        let rate = sh.settings.sample_rate;
        rate >= 1.0 || rate > 0.0 && ((n + 1) as f64 * rate).floor() > (n as f64 * rate).floor()
    }

    /// Queues one sampled request's tensors, or drops and counts them when
    /// the queue is full; never blocks.
    pub fn submit(self: &Arc<Self>, inputs: Vec<Tensor>, outputs: Vec<Tensor>) {
        let sh = &self.shared;
        if inputs.is_empty() && outputs.is_empty() {
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

/// The queue of the running worker, or of a new one: a worker lives while
/// some tracked version holds its queue, so none outlives the server's models.
fn global_sender() -> Arc<SyncSender<Job>> {
    static TX: Mutex<Weak<SyncSender<Job>>> = Mutex::new(Weak::new());
    let mut current = TX.lock();
    if let Some(tx) = current.upgrade() {
        return tx;
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_CAPACITY);
    spawn_worker(rx);
    let tx = Arc::new(tx);
    *current = Arc::downgrade(&tx);
    tx
}

/// Starts a worker thread draining `rx` (if it cannot start, sends fail and count as drops).
fn spawn_worker(rx: Receiver<Job>) {
    struct Worker;
    impl drain::Drain<Job> for Worker {
        fn item(&mut self, job: Job) -> bool {
            run_job(job);
            true
        }
        fn pass(&mut self, _closing: bool) -> Option<Duration> {
            None
        }
    }
    let started = std::thread::Builder::new().name("sy-drift".into()).spawn(move || {
        crate::util::background_priority("drift");
        drain::run(&rx, drain::Pace::DEFAULT, &mut Worker);
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

/// What the request path, the worker and the report readers share.
///
/// Writers and readers of each field:
/// - `model`, `version`, `settings`, `dropped_counter`: set at creation, read-only after.
/// - `state`: the worker (under the mutex, per sample); [`VersionDrift::report`]
///   reads it and the drop of [`VersionDrift`] clears it, both under the mutex.
/// - `offered`: incremented by [`VersionDrift::sample`] on every call (it is
///   also the sampling counter); read by reports.
/// - `sent`: incremented (Release) by `observe` once a job is queued; read
///   (Acquire) by [`VersionDrift::flush`] as the target to wait for.
/// - `dropped`: incremented by `observe` when the queue is full; read by reports.
/// - `done` / `done_cv`: the worker counts each finished job under the mutex
///   and notifies; `flush` waits on them.
/// - `alert`: written by the worker when it publishes (and cleared by drop);
///   read by [`VersionDrift::alert`] and reports. Relaxed: a flag, no data
///   hangs on it.
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
