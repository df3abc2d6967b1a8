//! The quality worker and feedback joining. A finished request whose version
//! monitors quality hands its tensors (shared buffers, no copy) to one
//! worker thread through a bounded queue (full: the request is not kept,
//! counted); the worker turns them into per-row predictions, counts them for
//! fairness, writes them to the [`FeedbackStore`] in batches (one
//! transaction per `GATHER` at load) and refreshes the gauges. Feedback
//! first waits (briefly) for the worker to catch up, so a label sent right
//! after its answer finds its prediction.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::VersionQuality;
use super::store::{FeedbackStore, Found, Put, StoreSettings, Stored, now_ms};
use crate::metrics::quality as names;
use crate::tensor::Tensor;

/// Capacity of the queue to the worker.
pub const QUEUE_CAPACITY: usize = 4096;
/// Observations written per store transaction at most.
const BATCH: usize = 2048;
/// How long the worker lets observations gather after the first one: at
/// load, one store transaction and one wake-up per this, not per request.
const GATHER: Duration = Duration::from_millis(20);
/// How long feedback waits for the worker to store what came before it.
const CATCH_UP: Duration = Duration::from_secs(2);

/// One request's truth: a class per row (classifiers) or a value per row (regressors).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Truth {
    /// The true class.
    Class(usize),
    /// The true value.
    Value(f64),
}

/// Ground truth for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Feedback {
    /// The inference request's id (as answered).
    pub id: String,
    /// One truth per row of the request.
    pub truths: Vec<Truth>,
}

/// What became of one feedback entry.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FeedbackOutcome {
    /// The id.
    pub id: String,
    /// `joined`, `unknown`, `expired`, `duplicate`, `rows_mismatch` or `retired`.
    pub outcome: &'static str,
    /// The versions whose predictions it was joined with.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<String>,
    /// Why it was not joined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A finished request, for the worker.
#[derive(Debug)]
pub struct Observation {
    /// Its version's monitor.
    pub quality: Arc<VersionQuality>,
    /// The request id (the server made one if the client sent none).
    pub id: String,
    /// A mirrored copy.
    pub shadow: bool,
    /// The outputs.
    pub outputs: Vec<Tensor>,
    /// The inputs (only when the group is read from one).
    pub inputs: Vec<Tensor>,
    /// The group, when read from a request parameter.
    pub group: Option<String>,
}

struct Progress {
    sent: u64,
    done: u64,
}

/// The quality worker and the store; one per server.
pub struct Monitor {
    store: Arc<FeedbackStore>,
    tx: SyncSender<Observation>,
    progress: Arc<(Mutex<Progress>, Condvar)>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Monitor {
    /// Opens the store and starts the worker (it exits when the monitor is dropped).
    pub fn start(settings: StoreSettings) -> Result<Monitor, String> {
        let store = Arc::new(FeedbackStore::open(settings)?);
        let (tx, rx) = sync_channel(QUEUE_CAPACITY);
        let progress = Arc::new((Mutex::new(Progress { sent: 0, done: 0 }), Condvar::new()));
        let (s, p) = (store.clone(), progress.clone());
        std::thread::Builder::new()
            .name("quality".into())
            // At normal priority: a worker at the lowest one is starved on a
            // saturated core and the predictions are lost to feedback; gathering
            // (GATHER) keeps its cost to a few µs per request.
            .spawn(move || work(&s, &rx, &p))
            .map_err(|e| format!("cannot start the quality worker: {e}"))?;
        metrics::gauge!(names::STORE_RECORDS).set(store.records() as f64);
        Ok(Monitor { store, tx, progress })
    }

    /// Hands a finished request to the worker; never blocks.
    pub fn submit(&self, o: Observation) {
        let mut p = self.progress.0.lock();
        match self.tx.try_send(o) {
            Ok(()) => p.sent += 1,
            Err(TrySendError::Full(o)) => {
                metrics::counter!(names::QUALITY_DROPPED, "model" => o.quality.model.clone(), "reason" => "queue_full")
                    .increment(1);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Waits until everything submitted before the call is stored, at most `timeout`.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (lock, cv) = &*self.progress;
        let deadline = Instant::now() + timeout;
        let mut p = lock.lock();
        let target = p.sent;
        while p.done < target {
            if cv.wait_until(&mut p, deadline).timed_out() {
                return p.done >= target;
            }
        }
        true
    }

    /// Shutdown: stores what was submitted (waiting at most `timeout`),
    /// syncs the store to disk and closes it.
    pub fn close(&self, timeout: Duration) {
        self.flush(timeout);
        if let Err(e) = self.store.write(Vec::new(), true) {
            tracing::error!(error = %e, "feedback store sync failed");
        }
        self.store.close();
    }

    /// The store's bounds and size.
    pub fn store(&self) -> &FeedbackStore {
        &self.store
    }

    /// Joins `feedback` for `model`; `quality_of(version)` is the monitor of a
    /// loaded version. Blocking (a store transaction): run off the runtime.
    pub fn join(
        &self,
        model: &str,
        feedback: &[Feedback],
        quality_of: impl Fn(&str) -> Option<Arc<VersionQuality>>,
    ) -> Result<Vec<FeedbackOutcome>, String> {
        self.flush(CATCH_UP);
        let ids: Vec<(&str, usize)> = feedback.iter().map(|f| (f.id.as_str(), f.truths.len())).collect();
        let found = self.store.join(model, &ids)?;
        let now = now_ms();
        let mut touched: Vec<Arc<VersionQuality>> = Vec::new();
        let outcomes = feedback
            .iter()
            .zip(found)
            .map(|(f, found)| {
                let mut out = FeedbackOutcome {
                    id: f.id.clone(),
                    outcome: "joined",
                    versions: Vec::new(),
                    message: None,
                };
                match found {
                    Found::Joined(records) => {
                        for (version, record) in records {
                            if let Some(q) = quality_of(&version) {
                                q.join(&record.rows, &f.truths, now);
                                out.versions.push(version);
                                if !touched.iter().any(|t| Arc::ptr_eq(t, &q)) {
                                    touched.push(q);
                                }
                            }
                        }
                        if out.versions.is_empty() {
                            out.outcome = "retired";
                            out.message = Some("the versions that predicted it are no longer loaded".into());
                        }
                    }
                    Found::Unknown => {
                        out.outcome = "unknown";
                        out.message = Some(format!(
                            "no prediction of model '{model}' is kept under this id (never made, not sampled, \
                             or dropped: the store keeps {} predictions for {} s)",
                            self.store.settings().max_records,
                            self.store.settings().retention.as_secs()
                        ));
                    }
                    Found::Expired => {
                        out.outcome = "expired";
                        out.message = Some(format!(
                            "the prediction is older than the retention of {} s",
                            self.store.settings().retention.as_secs()
                        ));
                    }
                    Found::Duplicate => {
                        out.outcome = "duplicate";
                        out.message = Some("feedback for this id was already joined".into());
                    }
                    Found::Mismatch(rows) => {
                        out.outcome = "rows_mismatch";
                        out.message = Some(format!(
                            "the request had {rows} rows; send one label (or value) per row, got {}",
                            f.truths.len()
                        ));
                    }
                }
                metrics::counter!(names::FEEDBACK, "model" => model.to_string(), "outcome" => out.outcome).increment(1);
                out
            })
            .collect();
        for q in touched {
            q.publish();
        }
        Ok(outcomes)
    }
}

fn work(store: &FeedbackStore, rx: &Receiver<Observation>, progress: &(Mutex<Progress>, Condvar)) {
    let mut last_sync = Instant::now();
    let mut last_publish = Instant::now();
    let mut dirty: Vec<Arc<VersionQuality>> = Vec::new();
    let mut open = true;
    while open {
        let mut batch = Vec::new();
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(o) => batch.push(o),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => open = false,
        }
        if open && !batch.is_empty() {
            std::thread::sleep(GATHER);
        }
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let n = batch.len() as u64;
        let now = now_ms();
        let puts: Vec<Put> = batch
            .into_iter()
            .filter_map(|o| {
                let rows = o.quality.rows(&o.outputs, &o.inputs, o.group.as_deref());
                if rows.is_empty() {
                    return None;
                }
                if !o.shadow {
                    o.quality.record_predictions(&rows, now);
                }
                if !dirty.iter().any(|d| Arc::ptr_eq(d, &o.quality)) {
                    dirty.push(o.quality.clone());
                }
                Some(Put {
                    model: o.quality.model.clone(),
                    id: o.id,
                    version: o.quality.version.clone(),
                    record: Stored {
                        t_ms: now,
                        shadow: o.shadow,
                        rows,
                        ..Stored::default()
                    },
                })
            })
            .collect();
        let durable = !open || last_sync.elapsed() >= Duration::from_secs(1);
        if !puts.is_empty() || durable {
            if let Err(e) = store.write(puts, durable) {
                tracing::error!(error = %e, "feedback store write failed");
            }
            if durable {
                last_sync = Instant::now();
            }
            metrics::gauge!(names::STORE_RECORDS).set(store.records() as f64);
        }
        if n > 0 {
            let (lock, cv) = progress;
            lock.lock().done += n;
            cv.notify_all();
        }
        if last_publish.elapsed() >= Duration::from_secs(1) || !open {
            for q in dirty.drain(..) {
                q.publish();
            }
            last_publish = Instant::now();
        }
    }
}
