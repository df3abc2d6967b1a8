//! Running a batch on the submitting thread. When an executor is idle and
//! the batcher would start a request's batch at once, handing it to the
//! executor's thread costs more than a small model's compute: a wake-up, two
//! context switches and the reply's wake-up back (on a VM, tens of
//! microseconds, against 4 µs for the `simple` model). The submitter then
//! lets its async runtime serve whatever else is ready first (other
//! connections' requests join the queue meanwhile), and runs the batch that
//! holds its request itself, on the idle executor's session, provided the
//! version's recent batches computed in under [`IN_PLACE_MAX_COMPUTE`].
//! Otherwise, or when every executor is busy, the request is queued as usual.
//! An executor's session is used by one thread at a time either way, so a
//! version still runs at most one batch per instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::lock_api::ArcMutexGuard;
use parking_lot::{Mutex, RawMutex};

use super::{BatchQueue, Decision, Executor, Job, State, policy};
use crate::error::Result;

/// One executor's session: locked by whoever runs a batch on it.
pub(super) type Slot = Arc<Mutex<Option<Box<dyn Executor>>>>;

type Session = ArcMutexGuard<RawMutex, Option<Box<dyn Executor>>>;

/// A batch runs on the submitting thread only when the version's recent
/// batches computed in less than this: the upper end of what an async
/// runtime's worker may spend between two awaits without starving the other
/// connections it serves.
pub const IN_PLACE_MAX_COMPUTE: Duration = Duration::from_micros(100);

/// Weight of the newest batch in the compute-time average (1/8).
const AVERAGE_SHIFT: u32 = 3;

impl BatchQueue {
    /// Queues a production request, or runs the batch that holds it on the
    /// calling thread (see the module's text); either way its reply comes on
    /// its channel. For async callers that can spare
    /// [`IN_PLACE_MAX_COMPUTE`] of their thread (the frontends' handlers).
    pub async fn submit_or_run(&self, job: Job) -> Result<()> {
        if job.background.is_some() || self.shared.sequencer.is_some() {
            return self.submit(job);
        }
        let Some(seq) = self.enqueue(job, true)? else {
            return Ok(());
        };
        let mut deferred = Deferred {
            queue: self,
            seq: Some(seq),
        };
        // Requests that are ready on this runtime join the batch first.
        tokio::task::yield_now().await;
        deferred.follow_up();
        Ok(())
    }

    /// With the queue locked and a production job just queued at `at`:
    /// whether its batch would start now, in place, cheaply.
    pub(super) fn may_run_in_place(&self, state: &State, at: usize) -> bool {
        let shared = &*self.shared;
        let cheap = shared.recent_compute_ns.load(Ordering::Relaxed) < IN_PLACE_MAX_COMPUTE.as_nanos() as u64;
        if !cheap || state.idle_sleepers == 0 || state.closed || shared.warming.load(Ordering::Relaxed) {
            return false;
        }
        if !state.slots.iter().any(|s| !s.is_locked()) {
            return false;
        }
        let (decision, _) = policy::decide_paced(&state.queue, &shared.policy, &state.pace, Instant::now());
        matches!(decision, Decision::Run(picked) if picked.contains(&at))
    }

    /// The batch holding the job at `at` and an idle session to run it on,
    /// the batch removed from the queue, when it may still run in place.
    fn take_in_place(&self, state: &mut State, at: usize) -> Option<(Vec<Job>, Session)> {
        if !self.may_run_in_place(state, at) {
            return None;
        }
        let (decision, paused) = policy::decide_paced(&state.queue, &self.shared.policy, &state.pace, Instant::now());
        let Decision::Run(picked) = decision else { return None };
        // Never blocks: a session in use belongs to a batch already running.
        let session = state
            .slots
            .iter()
            .filter_map(|s| s.try_lock_arc())
            .find(|s| s.is_some())?;
        Some((self.take(state, picked, paused), session))
    }
}

/// A request queued without waking an executor: its submitter runs its
/// batch in place, or wakes an executor after all (also when dropped first,
/// so a cancelled submitter strands nothing).
struct Deferred<'a> {
    queue: &'a BatchQueue,
    seq: Option<u64>,
}

impl Deferred<'_> {
    fn follow_up(&mut self) {
        let Some(seq) = self.seq.take() else { return };
        let queue = self.queue;
        let mut state = queue.shared.state.lock();
        // Gone: an executor woken meanwhile, or another submitter, took it.
        let Some(at) = state.queue.iter().position(|j| j.seq == seq) else {
            return;
        };
        if let Some((batch, mut session)) = queue.take_in_place(&mut state, at) {
            drop(state);
            if let Some(executor) = session.as_mut() {
                let started = Instant::now();
                queue.run_guarded(executor.as_mut(), batch);
                let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                queue.shared.lent_ns.fetch_add(took, Ordering::Relaxed);
            }
            return;
        }
        let wake = queue.wakes_sooner(&state);
        drop(state);
        if wake {
            queue.shared.wake.notify_one();
        }
    }
}

impl Drop for Deferred<'_> {
    fn drop(&mut self) {
        if self.seq.is_some() {
            self.queue.shared.wake.notify_one();
        }
    }
}

/// The part of an executor's `waited` that counts as idle: less the session
/// time lent meanwhile to batches run in place (the executor slept through
/// them, but its session was busy). At most `waited` is taken; the rest
/// stays for the next executor that reports.
pub(super) fn idle_in(lent_ns: &AtomicU64, waited: Duration) -> Duration {
    let waited_ns = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
    let mut taken = 0;
    let _ = lent_ns.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |lent| {
        taken = lent.min(waited_ns);
        Some(lent - taken)
    });
    waited.saturating_sub(Duration::from_nanos(taken))
}

/// Folds a batch's compute time into the version's recent average.
pub(super) fn record_compute(shared: &super::Shared, took: Duration) {
    let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX - 1);
    let _ = shared
        .recent_compute_ns
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |before| {
            Some(if before == u64::MAX {
                took
            } else {
                before - (before >> AVERAGE_SHIFT) + (took >> AVERAGE_SHIFT)
            })
        });
}

#[cfg(test)]
#[path = "inline_tests.rs"]
mod tests;
