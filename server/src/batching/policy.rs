//! Batch forming as a pure function of the queue, the policy and the time:
//! no locks, no clocks, no threads, so every rule is unit-tested directly.
//!
//! Rules (Triton's dynamic batcher): requests join the head request's batch
//! only if their non-batch shapes match; a batch never exceeds
//! `max_batch_size` rows; a full batch, or one of a preferred size, runs at
//! once; otherwise the batcher waits until the oldest request has waited
//! `max_queue_delay`, then runs what it has ([`Delay::Fixed`]).
//!
//! [`Delay::Adaptive`] (the default) keeps that contract but also runs as
//! soon as arrivals pause: once the batch has as many requests as recent
//! batches had ([`Pace::expected`]) and no request has joined for
//! [`Pace::patience`] (a few of the gaps seen between requests that shared
//! a batch). A lone request of a closed-loop client (nothing else is
//! coming) then runs at once, and a burst of requests runs when the burst
//! is in, not when the delay runs out; a batch as large as the largest
//! recent one runs without waiting for the pause (closed-loop clients that
//! are all queued send nothing more until they are answered). [`Pace`] is learned by the queue
//! from the batches it runs. Shadow copies (always behind
//! production requests) at the head may wait longer, up to their own batch
//! wait, so that copies share batches instead of each costing a run.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How a batch that is neither full nor of a preferred size waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delay {
    /// Until the oldest request has waited `max_queue_delay` (Triton's rule).
    #[default]
    Fixed,
    /// Also no longer than arrivals keep coming (see [`Pace`]).
    Adaptive,
}

/// The model config parameter that selects the [`Delay`].
pub const DELAY_PARAMETER: &str = "dynamic_batching_delay";

impl Delay {
    /// The delay named by the [`DELAY_PARAMETER`] value (`adaptive`, the
    /// default, or `fixed`).
    pub fn from_parameter(value: Option<&str>) -> Result<Delay, String> {
        match value.map(str::trim) {
            None | Some("adaptive") => Ok(Delay::Adaptive),
            Some("fixed") => Ok(Delay::Fixed),
            Some(other) => Err(format!(
                "parameter '{DELAY_PARAMETER}' must be 'adaptive' or 'fixed', got '{other}'"
            )),
        }
    }
}

/// Gaps between arrivals, in units of the learned gap, that the adaptive
/// batcher waits for the next request.
pub const PATIENCE_GAPS: u32 = 8;

/// What the adaptive batcher has learned about arrivals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pace {
    /// Typical gap between consecutive requests that shared a batch (an
    /// average that halves each time a request waited alone in vain); zero
    /// until such requests are seen.
    pub gap: Duration,
    /// Typical production requests per batch, in 1/16ths (an average over
    /// the last ~8 batches): a batch smaller than that is still filling.
    pub requests16: u32,
    /// The largest recent batch, in 1/16ths (shrinking by an eighth with
    /// each smaller batch): a batch that has as many requests runs at once,
    /// since waiting has not given a larger one lately (a closed loop whose
    /// every client is in the queue).
    pub largest16: u32,
}

impl Pace {
    /// How long after the latest arrival another request is still expected.
    pub fn patience(&self) -> Duration {
        self.gap * PATIENCE_GAPS
    }

    /// Requests recent batches had (rounded down): while a batch has fewer,
    /// more are expected and a pause does not end the wait.
    pub fn expected(&self) -> usize {
        (self.requests16 / 16) as usize
    }

    /// Requests of the largest recent batch (rounded up, at least
    /// [`Pace::expected`]): a batch this large stops waiting.
    pub fn largest(&self) -> usize {
        (self.largest16.div_ceil(16) as usize).max(self.expected())
    }

    /// Learns from a batch about to run: `arrivals` are its requests' arrival
    /// times in arrival order; `paused` says it ran because arrivals paused
    /// (the wait for one more was in vain). Gaps count up to `cap` (the
    /// queue delay): a longer one is no gap within a batch.
    pub fn observe(&mut self, arrivals: impl IntoIterator<Item = Instant>, paused: bool, cap: Duration) {
        let mut previous: Option<Instant> = None;
        let mut requests = 0;
        for at in arrivals {
            if let Some(p) = previous {
                let gap = at.saturating_duration_since(p).min(cap);
                // An average over the last ~8 gaps.
                self.gap = (self.gap * 7 + gap) / 8;
            }
            previous = Some(at);
            requests += 1;
        }
        // A request that waited alone in vain: nothing else was coming. (The
        // end of a burst always waits in vain once; that teaches nothing.)
        if paused && requests <= 1 {
            self.gap /= 2;
        }
        if requests > 0 {
            let requests = requests.min(u32::MAX as usize / 32) as u32;
            self.requests16 = (self.requests16 * 7 + requests * 16) / 8;
            self.largest16 = (requests * 16).max(self.largest16 - self.largest16 / 8);
        }
    }
}

/// Batching parameters of one model version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchPolicy {
    /// Rows per batch at most; 0 means the model has no batch dimension and
    /// every request runs on its own.
    pub max_batch_size: usize,
    /// Whether requests may be merged at all (`dynamic_batching` present).
    pub dynamic: bool,
    /// Batch sizes to prefer, ascending.
    pub preferred: Vec<usize>,
    /// How long the oldest request may wait for a batch to fill.
    pub max_queue_delay: Duration,
    /// Whether the wait also ends when arrivals pause.
    pub delay: Delay,
    /// Whether a background job (shadow copy, explanation rows) at the head
    /// waits until it is [`Pending::held_until`] for more such jobs (off while
    /// draining or warming up).
    pub hold_copies: bool,
}

/// What the batcher needs to know about a queued request.
pub trait Pending {
    /// Rows (size of the batch dimension) the request carries.
    fn rows(&self) -> usize;
    /// Non-batch dimensions of every input, flattened: requests batch together
    /// only when these are equal.
    fn shape_key(&self) -> &[i64];
    /// When the request entered the queue.
    fn enqueued(&self) -> Instant;
    /// For a background job: how long it may wait for other background jobs
    /// to fill its batch; `None` for production requests.
    fn held_until(&self) -> Option<Instant> {
        None
    }
}

/// The batcher's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing queued.
    Idle,
    /// Run these queue positions (ascending) as one batch now.
    Run(Vec<usize>),
    /// Nothing to run before this instant unless more requests arrive.
    WaitUntil(Instant),
}

/// Decides what to run next, and whether a batch runs because arrivals
/// paused (for [`Pace::observe`]).
pub fn decide_paced<P: Pending>(
    queue: &VecDeque<P>,
    policy: &BatchPolicy,
    pace: &Pace,
    now: Instant,
) -> (Decision, bool) {
    let Some(head) = queue.front() else {
        return (Decision::Idle, false);
    };
    if !policy.dynamic || policy.max_batch_size == 0 {
        return (Decision::Run(vec![0]), false);
    }
    let max = policy.max_batch_size;
    // Compatible requests in arrival order, while they fit in one batch.
    let mut picked = Vec::new();
    let mut cumulative = Vec::new();
    let mut rows = 0usize;
    let mut latest = head.enqueued();
    for (i, p) in queue.iter().enumerate() {
        if p.shape_key() != head.shape_key() {
            continue;
        }
        if rows + p.rows() > max {
            if picked.is_empty() {
                // A request larger than the batch limit was rejected at
                // admission; run it alone rather than stall the queue.
                return (Decision::Run(vec![i]), false);
            }
            break;
        }
        rows += p.rows();
        picked.push(i);
        cumulative.push(rows);
        latest = latest.max(p.enqueued());
        if rows == max {
            return (Decision::Run(picked), false);
        }
    }
    let mut deadline = head.enqueued() + policy.max_queue_delay;
    let held = policy.hold_copies.then(|| head.held_until()).flatten();
    if let Some(held) = held {
        deadline = deadline.max(held);
    }
    if now >= deadline {
        // Under the adaptive delay a production batch that reached the
        // deadline also waited in vain: a lone request that waited this long
        // teaches that nothing else was coming (else a gap learned in a burst,
        // longer than the delay allows, would make every later lone request
        // wait the whole delay).
        let adaptive = policy.delay == Delay::Adaptive && held.is_none();
        return (Decision::Run(picked), adaptive);
    }
    // Largest preferred size that a prefix of the picked requests fills exactly.
    if let Some(n) = (0..cumulative.len())
        .rev()
        .find(|&n| policy.preferred.contains(&cumulative[n]))
    {
        picked.truncate(n + 1);
        return (Decision::Run(picked), false);
    }
    // Held copies wait for their batch; production requests, under the
    // adaptive delay, only while arrivals keep coming.
    if policy.delay == Delay::Adaptive && held.is_none() && picked.len() >= pace.expected() {
        if picked.len() >= pace.largest() {
            return (Decision::Run(picked), false);
        }
        let resume = latest + pace.patience();
        if now >= resume {
            return (Decision::Run(picked), true);
        }
        return (Decision::WaitUntil(resume.min(deadline)), false);
    }
    (Decision::WaitUntil(deadline), false)
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
