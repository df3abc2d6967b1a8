//! The scheduler of one model version: a bounded queue shared by that
//! version's executor threads, each of which runs one session (a submitter
//! may borrow an idle one for a cheap batch: see `inline`).
//!
//! Ownership and bounds:
//! - `BatchQueue` is shared (Arc) by the version handle, which submits, and by
//!   the executor threads, which take batches. Capacity is fixed at creation:
//!   a full queue refuses at once with UNAVAILABLE, so memory stays bounded
//!   under overload.
//! - The version handle closes the queue when it is retired; executors then
//!   finish what is queued and exit, dropping their sessions.
//! - Replies travel over one `oneshot` per request. A request whose caller
//!   has gone (receiver dropped) or whose deadline passed is dropped before
//!   compute and counted.

mod execute;
mod inline;
mod job;
pub mod policy;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::error::{Error, ErrorKind, Result};
pub use crate::stats::Timings;
use crate::stats::{Dropped, VersionStats};
pub use execute::concat_fixed;
use execute::run_batch;
pub use job::{Background, Job, JobOutput};
pub use policy::{BatchPolicy, Decision, Pending};

pub use crate::model::{BatchInput, Executor};

/// Queue policy of one priority level (Triton's `ModelQueuePolicy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelPolicy {
    /// Requests this level may hold.
    pub capacity: usize,
    /// Timeout of requests that set none.
    pub default_timeout: Option<Duration>,
    /// Requests may set a shorter timeout than the default.
    pub allow_timeout_override: bool,
    /// On timeout, delay the request behind all others instead of rejecting it.
    pub delay_on_timeout: bool,
}

/// Priorities and queue policies of a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePolicy {
    /// One entry per priority level; index 0 is the highest priority (Triton's level 1).
    pub levels: Vec<LevelPolicy>,
    /// Level index of requests without a (valid) priority.
    pub default_level: usize,
    /// Answer requests in arrival order (Triton's `preserve_ordering`).
    pub preserve_ordering: bool,
}

impl QueuePolicy {
    /// One level holding `capacity` requests, no timeout.
    pub fn single(capacity: usize) -> QueuePolicy {
        QueuePolicy {
            levels: vec![LevelPolicy {
                capacity,
                default_timeout: None,
                allow_timeout_override: true,
                delay_on_timeout: false,
            }],
            default_level: 0,
            preserve_ordering: false,
        }
    }

    fn level_of(&self, priority: u64) -> usize {
        match usize::try_from(priority) {
            Ok(p) if p >= 1 && p <= self.levels.len() => p - 1,
            _ => self.default_level,
        }
    }

    fn deadline(&self, level: usize, requested: Option<Duration>, enqueued: Instant) -> Option<Instant> {
        let policy = &self.levels[level];
        let timeout = match (policy.default_timeout, requested) {
            (None, r) => r,
            (Some(d), Some(r)) if policy.allow_timeout_override => Some(r.min(d)),
            (Some(d), _) => Some(d),
        };
        // Bounded at admission; an overflow would mean no deadline at all.
        timeout.and_then(|t| enqueued.checked_add(t))
    }
}

struct State {
    /// Production requests by level, then arrival; then delayed ones, by
    /// arrival; then background jobs (shadow copies, explanation rows), by
    /// arrival. The head is the oldest
    /// request of the highest non-empty priority.
    queue: VecDeque<Job>,
    /// Requests held per level (background jobs not included).
    counts: Vec<usize>,
    /// Background jobs held.
    backgrounds: usize,
    /// Arrival number of the next request.
    next_seq: u64,
    closed: bool,
    /// What the adaptive delay has learned of the arrivals.
    pace: policy::Pace,
    /// Executors waiting with nothing queued.
    idle_sleepers: usize,
    /// Executors waiting for a batch to fill, and the earliest instant one of
    /// them wakes by itself (earlier than any still waiting, never later).
    timed_sleepers: usize,
    wakes_at: Option<Instant>,
    /// Every executor's session, locked while it runs (by its thread, or by
    /// a submitter running a batch in place: see [`BatchQueue::submit_or_run`]).
    slots: Vec<inline::Slot>,
}

impl State {
    /// Production requests waiting (the queue-depth metric).
    fn depth(&self) -> usize {
        self.queue.len() - self.backgrounds
    }

    fn remove(&mut self, index: usize) -> Option<Job> {
        let job = self.queue.remove(index)?;
        if job.background.is_some() {
            self.backgrounds -= 1;
        } else {
            self.counts[job.level] -= 1;
        }
        Some(job)
    }
}

/// What the version handle (submitting, closing) and the executor threads
/// (taking batches, replying) share. `state` is read and written by both,
/// always under its mutex; `wake` is notified by submit and close and waited
/// on by idle executors; `sequencer` is locked by executors as they reply;
/// the policies and `stats` are set at creation (the stats' own counters are
/// atomics written by both sides).
struct Shared {
    state: Mutex<State>,
    /// Signalled on submit and close; executors wait on it.
    wake: Condvar,
    policy: BatchPolicy,
    /// `policy` without the queue delay, used once the queue is closed.
    drain_policy: BatchPolicy,
    queue_policy: QueuePolicy,
    stats: Arc<VersionStats>,
    /// With `preserve_ordering`: replies wait here until every earlier request is answered.
    sequencer: Option<Mutex<Sequencer>>,
    /// Batches in the session run now (counted before replies go out).
    pub(super) running: AtomicUsize,
    /// Warm-up runs before publication: no traffic will fill a batch, so
    /// batches run without the queue delay, and they give their memory back
    /// ([`Executor::run_releasing`]). Set under `state`'s lock, so a waiting
    /// executor sees it when woken.
    pub(super) warming: std::sync::atomic::AtomicBool,
    /// The last batches' compute time (nanoseconds, a moving average;
    /// `u64::MAX` before the first): what a batch run in place would cost.
    recent_compute_ns: AtomicU64,
    /// Session time lent to batches run in place while executors slept, not
    /// yet taken off a reported wait (nanoseconds; [`inline::idle_in`]).
    lent_ns: AtomicU64,
}

type Reply = oneshot::Sender<Result<JobOutput>>;

/// Releases replies in arrival order.
#[derive(Default)]
struct Sequencer {
    next: u64,
    /// Finished requests waiting for an earlier one; `None` for requests that need no reply.
    ready: std::collections::BTreeMap<u64, Option<(Reply, Result<JobOutput>)>>,
}

impl Sequencer {
    fn finish(&mut self, seq: u64, reply: Option<(Reply, Result<JobOutput>)>) {
        if seq < self.next {
            if let Some((tx, result)) = reply {
                let _ = tx.send(result);
            }
            return;
        }
        self.ready.insert(seq, reply);
        while let Some(done) = self.ready.remove(&self.next) {
            if let Some((tx, result)) = done {
                let _ = tx.send(result);
            }
            self.next += 1;
        }
    }
}

impl Shared {
    /// Answers a request, in arrival order when the policy asks for it.
    fn reply(&self, seq: u64, reply: Reply, result: Result<JobOutput>) {
        match &self.sequencer {
            Some(s) => s.lock().finish(seq, Some((reply, result))),
            None => {
                let _ = reply.send(result);
            }
        }
    }

    /// Records that a request left without an answer (its caller is gone).
    fn skip(&self, seq: u64) {
        if let Some(s) = &self.sequencer {
            s.lock().finish(seq, None);
        }
    }
}

/// Longest an idle executor sleeps before accounting its idle time.
const IDLE_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// The bounded queue of one model version.
#[derive(Clone)]
pub struct BatchQueue {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BatchQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchQueue")
            .field("policy", &self.shared.policy)
            .finish()
    }
}

impl BatchQueue {
    /// A queue with the given batching and queue policies.
    pub fn new(policy: BatchPolicy, queue_policy: QueuePolicy, stats: Arc<VersionStats>) -> BatchQueue {
        let levels = queue_policy.levels.len();
        stats.set_queue_capacity(
            queue_policy
                .levels
                .iter()
                .fold(0usize, |n, l| n.saturating_add(l.capacity)),
        );
        BatchQueue {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::with_capacity(64),
                    counts: vec![0; levels],
                    backgrounds: 0,
                    next_seq: 0,
                    closed: false,
                    pace: policy::Pace::default(),
                    idle_sleepers: 0,
                    timed_sleepers: 0,
                    wakes_at: None,
                    slots: Vec::new(),
                }),
                wake: Condvar::new(),
                drain_policy: BatchPolicy {
                    max_queue_delay: Duration::ZERO,
                    hold_copies: false,
                    ..policy.clone()
                },
                policy,
                sequencer: queue_policy.preserve_ordering.then(Mutex::default),
                running: AtomicUsize::new(0),
                warming: std::sync::atomic::AtomicBool::new(false),
                recent_compute_ns: AtomicU64::new(u64::MAX),
                lent_ns: AtomicU64::new(0),
                queue_policy,
                stats,
            }),
        }
    }

    /// Enqueues a request at its priority, or refuses at once when its
    /// level is full or the queue is closed.
    pub fn submit(&self, job: Job) -> Result<()> {
        self.enqueue(job, false).map(|_| ())
    }

    /// Queues `job` like [`BatchQueue::submit`]. `may_defer`: when the job's
    /// batch would start at once on an idle executor and could run in place
    /// (see [`BatchQueue::submit_or_run`]), the executor is not woken and the
    /// job's arrival number comes back: the caller must then follow up.
    fn enqueue(&self, mut job: Job, may_defer: bool) -> Result<Option<u64>> {
        let qp = &self.shared.queue_policy;
        job.delayed = false;
        if job.background.is_some() {
            job.level = qp.levels.len() - 1;
            job.deadline = job.timeout.and_then(|t| job.enqueued.checked_add(t));
            let mut state = self.shared.state.lock();
            if state.closed {
                return Err(Error::unavailable("model version is being unloaded"));
            }
            job.seq = state.next_seq;
            state.next_seq += 1;
            state.queue.push_back(job);
            state.backgrounds += 1;
            let wake = self.wakes_sooner(&state);
            drop(state);
            if wake {
                self.shared.wake.notify_one();
            }
            return Ok(None);
        }
        job.level = qp.level_of(job.priority);
        job.deadline = qp.deadline(job.level, job.timeout, job.enqueued);
        let mut state = self.shared.state.lock();
        if state.closed {
            return Err(Error::unavailable("model version is being unloaded"));
        }
        let capacity = qp.levels[job.level].capacity;
        if state.counts[job.level] >= capacity {
            drop(state);
            self.shared.stats.record_dropped(Dropped::QueueFull);
            return Err(Error::unavailable(format!(
                "inference request exceeds maximum queue size ({capacity}) of the model version"
            )));
        }
        job.seq = state.next_seq;
        state.next_seq += 1;
        let level = job.level;
        let at = state
            .queue
            .partition_point(|j| j.background.is_none() && !j.delayed && j.level <= level);
        state.queue.insert(at, job);
        state.counts[level] += 1;
        let depth = state.depth();
        let deferred = may_defer && self.may_run_in_place(&state, at);
        let wake = !deferred && self.wakes_sooner(&state);
        let seq = state.queue[at].seq;
        drop(state);
        self.shared.stats.set_queue_depth(depth);
        if wake {
            self.shared.wake.notify_one();
        }
        Ok(deferred.then_some(seq))
    }

    /// Whether a request just queued must wake an executor: one is idle, or
    /// the batcher would now run (or stop waiting) sooner than the waiting
    /// executors wake by themselves. A request that only joins a filling
    /// batch does not: that executor would wake, decide to wait on, and sleep
    /// again (two context switches per request, on the core the transport
    /// shares). With no executor waiting, notifying costs nothing.
    fn wakes_sooner(&self, state: &State) -> bool {
        let Some(wakes_at) = state.wakes_at.filter(|_| state.idle_sleepers == 0) else {
            return true;
        };
        let policy = self.policy_now(state);
        match policy::decide_paced(&state.queue, policy, &state.pace, Instant::now()).0 {
            Decision::WaitUntil(t) => t < wakes_at,
            Decision::Run(_) | Decision::Idle => true,
        }
    }

    /// Draining or warming: no new request will come to fill a batch, so
    /// batches do not wait.
    fn policy_now(&self, state: &State) -> &BatchPolicy {
        let shared = &*self.shared;
        if state.closed || shared.warming.load(Ordering::Relaxed) {
            &shared.drain_policy
        } else {
            &shared.policy
        }
    }

    /// Production requests waiting now (background jobs not included).
    pub fn depth(&self) -> usize {
        self.shared.state.lock().depth()
    }

    /// Batches executing now (on as many executors).
    pub fn running(&self) -> usize {
        self.shared.running.load(Ordering::Relaxed)
    }

    /// While warming (before the version is published), batches run without
    /// the queue delay: warm-up and golden-set requests are all there is.
    pub fn set_warming(&self, warming: bool) {
        let _state = self.shared.state.lock();
        self.shared.warming.store(warming, Ordering::Relaxed);
        self.shared.wake.notify_all();
    }

    /// Stops accepting requests; executors finish the queued ones and exit.
    pub fn close(&self) {
        self.shared.state.lock().closed = true;
        self.shared.wake.notify_all();
    }

    /// Blocks until a batch is ready; `None` once closed and drained.
    fn next_batch(&self) -> Option<Vec<Job>> {
        let shared = &*self.shared;
        let mut state = shared.state.lock();
        loop {
            let now = Instant::now();
            self.drop_dead(&mut state, now);
            let policy = self.policy_now(&state);
            let (decision, paused) = policy::decide_paced(&state.queue, policy, &state.pace, now);
            match decision {
                Decision::Run(picked) => return Some(self.take(&mut state, picked, paused)),
                Decision::Idle if state.closed => return None,
                // Bounded, so the idle-time counter moves while no work comes.
                Decision::Idle => {
                    let waited = Instant::now();
                    state.idle_sleepers += 1;
                    shared.wake.wait_for(&mut state, IDLE_REPORT_INTERVAL);
                    state.idle_sleepers -= 1;
                    shared
                        .stats
                        .record_idle(inline::idle_in(&shared.lent_ns, waited.elapsed()));
                }
                Decision::WaitUntil(t) => {
                    let waited = Instant::now();
                    state.timed_sleepers += 1;
                    state.wakes_at = Some(state.wakes_at.map_or(t, |w| w.min(t)));
                    shared.wake.wait_until(&mut state, t);
                    state.timed_sleepers -= 1;
                    if state.timed_sleepers == 0 {
                        state.wakes_at = None;
                    }
                    shared
                        .stats
                        .record_idle(inline::idle_in(&shared.lent_ns, waited.elapsed()));
                }
            }
        }
    }

    /// Removes the batch `picked` from the queue (`paused`: it runs because
    /// arrivals paused, for the adaptive delay's record).
    fn take(&self, state: &mut State, picked: Vec<usize>, paused: bool) -> Vec<Job> {
        let shared = &*self.shared;
        let policy = self.policy_now(state);
        if policy.delay == policy::Delay::Adaptive {
            // Production arrivals only: copies come when their primaries finish.
            let max_delay = policy.max_queue_delay;
            let State { queue, pace, .. } = &mut *state;
            let arrivals = picked.iter().map(|&i| &queue[i]).filter(|j| j.background.is_none());
            pace.observe(arrivals.map(|j| j.enqueued), paused, max_delay);
        }
        let mut batch = Vec::with_capacity(picked.len());
        for (taken, i) in picked.into_iter().enumerate() {
            if let Some(job) = state.remove(i - taken) {
                batch.push(job);
            }
        }
        shared.stats.set_queue_depth(state.depth());
        if !state.queue.is_empty() {
            // Another executor may start on what is left.
            shared.wake.notify_one();
        }
        batch
    }

    /// Removes requests whose caller went away, rejects those whose deadline
    /// passed, and moves timed-out requests of DELAY levels to the back.
    fn drop_dead(&self, state: &mut State, now: Instant) {
        let shared = &*self.shared;
        let stats = &shared.stats;
        let levels = &shared.queue_policy.levels;
        let State {
            queue,
            counts,
            backgrounds,
            ..
        } = state;
        let mut delayed = Vec::new();
        queue.retain_mut(|job| {
            if job.reply.is_closed() {
                if job.background.is_some() {
                    *backgrounds -= 1;
                } else {
                    stats.record_dropped(Dropped::Cancelled);
                    counts[job.level] -= 1;
                }
                shared.skip(job.seq);
                return false;
            }
            if job.deadline.is_some_and(|d| d <= now) {
                if job.background.is_none() && levels[job.level].delay_on_timeout {
                    job.deadline = None;
                    job.delayed = true;
                    delayed.push(std::mem::replace(job, placeholder()));
                    return false;
                }
                if job.background.is_some() {
                    *backgrounds -= 1;
                } else {
                    stats.record_dropped(Dropped::Timeout);
                    counts[job.level] -= 1;
                }
                let reply = std::mem::replace(&mut job.reply, oneshot::channel().0);
                let timeout = Error::new(ErrorKind::Timeout, "request timed out in the queue before execution");
                shared.reply(job.seq, reply, Err(timeout));
                return false;
            }
            true
        });
        // Behind production requests, ahead of background jobs.
        let at = queue.partition_point(|j| j.background.is_none());
        for (i, job) in delayed.into_iter().enumerate() {
            queue.insert(at + i, job);
        }
    }

    /// Starts one thread per executor; they run until the queue is closed
    /// and drained. The caller owns the handles (the server joins them at
    /// shutdown).
    pub fn spawn_executors(
        &self,
        label: &str,
        executors: Vec<Box<dyn Executor>>,
    ) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
        let mut threads = Vec::with_capacity(executors.len());
        let slots: Vec<inline::Slot> = executors.into_iter().map(|e| Arc::new(Mutex::new(Some(e)))).collect();
        self.shared.state.lock().slots.extend(slots.iter().cloned());
        for (i, slot) in slots.into_iter().enumerate() {
            let queue = self.clone();
            let started = std::thread::Builder::new()
                .name(format!("sy-{label}-{i}"))
                .spawn(move || queue.executor_loop(slot));
            match started {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // The ones started exit once the queue is closed.
                    self.close();
                    return Err(e);
                }
            }
        }
        Ok(threads)
    }

    /// Takes batches and runs them on this thread's session until the queue
    /// is closed and drained, then drops the session (here, so that an
    /// unloaded version's memory goes when its threads end).
    fn executor_loop(self, slot: inline::Slot) {
        while let Some(batch) = self.next_batch() {
            // Held by a submitter running a batch in place, for as long as that batch runs.
            let mut session = slot.lock();
            let Some(executor) = session.as_mut() else { break };
            if batch.iter().all(|j| j.background == Some(Background::Shadow)) {
                // Shadow copies only: on a helper thread in the idle scheduling class, so they
                // take only CPU that production leaves unused. This thread waits; the session
                // is still used by one thread at a time. (Explanation rows run here, at normal
                // priority: their caller paces them and production goes first in the queue, and
                // an idle-class helper starved by other processes would hold this executor.)
                let name = format!("{}-background", std::thread::current().name().unwrap_or("sy"));
                std::thread::scope(|scope| {
                    let helper = std::thread::Builder::new().name(name).spawn_scoped(scope, || {
                        crate::util::idle_priority("background");
                        self.run_guarded(executor.as_mut(), batch);
                    });
                    match helper {
                        Ok(h) => {
                            let _ = h.join();
                        }
                        // The batch went with the closure: its jobs fail as the executor's.
                        Err(e) => tracing::warn!(error = %e, "cannot start a thread for background work"),
                    }
                });
            } else {
                self.run_guarded(executor.as_mut(), batch);
            }
        }
        slot.lock().take();
        // The session's weights and arena go back to the system, not to the C heap's free lists.
        crate::model::onnx::release_free_heap();
    }

    /// A panic inside the runtime must not take the executor down with it: the
    /// batch's callers get an error (their reply channels drop) and the loop goes on.
    fn run_guarded(&self, executor: &mut dyn Executor, batch: Vec<Job>) {
        let seqs: Vec<u64> = batch.iter().map(|j| j.seq).collect();
        let run = std::panic::AssertUnwindSafe(|| run_batch(executor, batch, &self.shared));
        if std::panic::catch_unwind(run).is_err() {
            tracing::error!("executor panicked while running a batch; the batch failed");
            for seq in seqs {
                self.shared.skip(seq);
            }
        }
    }
}

/// An empty job, swapped in while moving a real one.
fn placeholder() -> Job {
    Job::new(Vec::new(), 0, Vec::new(), Vec::new(), oneshot::channel().0)
}

#[cfg(test)]
mod tests;
