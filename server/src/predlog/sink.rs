//! The sink threads of the prediction log: each sink owns a bounded queue
//! and a thread that drains it ([`crate::util::drain`]), handles records in
//! order, flushes when idle and when a `flush()` waits, and exits once the
//! log is dropped and the queue is empty.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use metrics::counter;

#[cfg(doc)]
use super::PredictionLog;
use super::{FLUSH_INTERVAL, Job, WARN_INTERVAL};
use crate::metrics::{PREDLOG_DROPPED, PREDLOG_RECORDS};
use crate::util::drain;

/// Counters shared by every sink thread (writers) and
/// [`PredictionLog::dropped`] / [`PredictionLog::written`] (readers); Relaxed,
/// they are statistics.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) written: AtomicU64,
    pub(crate) dropped: AtomicU64,
}

impl Stats {
    pub(crate) fn wrote(&self, sink: &'static str) {
        self.written.fetch_add(1, Ordering::Relaxed);
        counter!(PREDLOG_RECORDS, "sink" => sink).increment(1);
    }

    pub(crate) fn drop_one(&self, reason: &'static str) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        counter!(PREDLOG_DROPPED, "reason" => reason).increment(1);
    }
}

/// Warns at most once per [`WARN_INTERVAL`], counting what it kept quiet about.
pub(crate) struct Warner {
    sink: &'static str,
    last: Option<Instant>,
    suppressed: u64,
}

impl Warner {
    pub(crate) fn new(sink: &'static str) -> Self {
        Warner {
            sink,
            last: None,
            suppressed: 0,
        }
    }

    pub(crate) fn warn(&mut self, error: &dyn std::fmt::Display) {
        if self.last.is_some_and(|t| t.elapsed() < WARN_INTERVAL) {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(sink = self.sink, %error, suppressed = self.suppressed, "prediction log: record dropped");
        self.last = Some(Instant::now());
        self.suppressed = 0;
    }
}

/// What a sink's thread does with records.
pub(crate) trait Sink: Send + 'static {
    /// Writes or delivers one record, counting it as written or dropped.
    fn handle(&mut self, job: &Job);
    /// Pushes buffered records out.
    fn flush(&mut self);
}

/// What a sink's queue carries.
pub(super) enum Msg {
    Job(Arc<Job>),
    Wake,
}

/// Progress of one sink, shared between its thread, [`PredictionLog::submit`]
/// and [`PredictionLog::flush`]. All atomics are SeqCst: `flush` compares
/// counts written by different threads.
pub(super) struct Progress {
    /// Records handled (written or dropped) and flushed: written by the sink
    /// thread after each flush, under the mutex; `flush` waits on it.
    pub(super) done: Mutex<u64>,
    /// Notified by the sink thread when `done` or `alive` changes.
    pub(super) changed: Condvar,
    /// Highest record count a `flush()` waits for: raised by `flush`, read by
    /// the sink thread, which then flushes at once.
    pub(super) wanted: AtomicU64,
    /// Records accepted into the queue: incremented by `submit`, read by `flush`.
    pub(super) accepted: AtomicU64,
    /// Whether the thread is still running: cleared by the sink thread when
    /// it exits (or fails to start), read by `flush`.
    pub(super) alive: AtomicBool,
}

/// The request path's end of one sink: its queue and its progress.
pub(super) struct SinkHandle {
    pub(super) tx: SyncSender<Msg>,
    pub(super) progress: Arc<Progress>,
}

/// Starts a sink's thread; returns once the sink is built (or failed to be).
pub(super) fn spawn_sink<S: Sink>(
    name: &'static str,
    capacity: usize,
    low_priority: bool,
    make: impl FnOnce() -> anyhow::Result<S> + Send + 'static,
) -> anyhow::Result<SinkHandle> {
    let (tx, rx) = mpsc::sync_channel(capacity);
    let progress = Arc::new(Progress {
        done: Mutex::new(0),
        changed: Condvar::new(),
        wanted: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        alive: AtomicBool::new(true),
    });
    let p = progress.clone();
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name(format!("predlog-{name}"))
        .spawn(move || {
            if low_priority {
                crate::util::background_priority("prediction log");
            }
            match make() {
                Ok(sink) => {
                    let _ = ready_tx.send(Ok(()));
                    run_sink(sink, rx, &p);
                }
                Err(e) => {
                    p.alive.store(false, Ordering::SeqCst);
                    let _ = ready_tx.send(Err(e));
                }
            }
        })
        .context("cannot start a prediction log thread")?;
    ready_rx
        .recv()
        .context("the prediction log thread exited at start")?
        .with_context(|| format!("cannot start the prediction log's {name} sink"))?;
    Ok(SinkHandle { tx, progress })
}

/// A sink thread: handles records in order, flushes when idle for
/// [`FLUSH_INTERVAL`] after a write and whenever `flush()` waits, and exits
/// once every sender is gone and the queue is drained.
fn run_sink<S: Sink>(sink: S, rx: Receiver<Msg>, progress: &Progress) {
    struct Exit<'a>(&'a Progress);
    impl Drop for Exit<'_> {
        fn drop(&mut self) {
            self.0.alive.store(false, Ordering::SeqCst);
            let _guard = self.0.done.lock();
            self.0.changed.notify_all();
        }
    }
    let _exit = Exit(progress);
    let mut state = SinkLoop {
        sink,
        progress,
        handled: 0,
        published: 0,
        dirty: false,
        last_flush: Instant::now(),
    };
    drain::run(&rx, drain::Pace::DEFAULT, &mut state);
}

/// A sink thread's state between passes over its queue.
struct SinkLoop<'a, S> {
    sink: S,
    progress: &'a Progress,
    /// Records handled so far.
    handled: u64,
    /// `handled` at the last flush, as published to `progress.done`.
    published: u64,
    /// Records handled since the last flush.
    dirty: bool,
    last_flush: Instant,
}

impl<S: Sink> drain::Drain<Msg> for SinkLoop<'_, S> {
    fn item(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Job(job) => {
                self.sink.handle(&job);
                self.handled += 1;
                self.dirty = true;
                true
            }
            Msg::Wake => false,
        }
    }

    fn pass(&mut self, closing: bool) -> Option<Duration> {
        let flush_waits = self.progress.wanted.load(Ordering::SeqCst) > self.published;
        if closing || flush_waits || (self.dirty && self.last_flush.elapsed() >= FLUSH_INTERVAL) {
            if self.dirty {
                self.sink.flush();
                self.dirty = false;
            }
            self.last_flush = Instant::now();
            self.published = self.handled;
            let mut done = self.progress.done.lock().unwrap_or_else(|e| e.into_inner());
            *done = self.handled;
            self.progress.changed.notify_all();
        }
        self.dirty
            .then(|| FLUSH_INTERVAL.saturating_sub(self.last_flush.elapsed()))
    }
}
