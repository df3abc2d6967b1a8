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
//! is in, not when the delay runs out. [`Pace`] is learned by the queue
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
        let resume = latest + pace.patience();
        if now >= resume {
            return (Decision::Run(picked), true);
        }
        return (Decision::WaitUntil(resume.min(deadline)), false);
    }
    (Decision::WaitUntil(deadline), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decision with nothing learned yet.
    fn decide<P: Pending>(queue: &VecDeque<P>, policy: &BatchPolicy, now: Instant) -> Decision {
        decide_paced(queue, policy, &Pace::default(), now).0
    }

    struct P {
        rows: usize,
        key: Vec<i64>,
        at: Instant,
        held: Option<Instant>,
    }
    impl Pending for P {
        fn rows(&self) -> usize {
            self.rows
        }
        fn shape_key(&self) -> &[i64] {
            &self.key
        }
        fn enqueued(&self) -> Instant {
            self.at
        }
        fn held_until(&self) -> Option<Instant> {
            self.held
        }
    }

    fn queue(t0: Instant, items: &[(usize, i64, u64)]) -> VecDeque<P> {
        items
            .iter()
            .map(|&(rows, key, us)| P {
                rows,
                key: vec![key],
                at: t0 + Duration::from_micros(us),
                held: None,
            })
            .collect()
    }

    fn policy(max: usize, delay_us: u64, preferred: &[usize]) -> BatchPolicy {
        BatchPolicy {
            max_batch_size: max,
            dynamic: true,
            preferred: preferred.to_vec(),
            max_queue_delay: Duration::from_micros(delay_us),
            delay: Delay::Fixed,
            hold_copies: true,
        }
    }

    #[test]
    fn empty_queue_is_idle() {
        let q: VecDeque<P> = VecDeque::new();
        assert_eq!(decide(&q, &policy(8, 0, &[]), Instant::now()), Decision::Idle);
    }

    #[test]
    fn without_dynamic_batching_requests_run_one_by_one() {
        let t0 = Instant::now();
        let q = queue(t0, &[(1, 0, 0), (1, 0, 0)]);
        let mut p = policy(8, 0, &[]);
        p.dynamic = false;
        assert_eq!(decide(&q, &p, t0), Decision::Run(vec![0]));
    }

    #[test]
    fn zero_delay_runs_what_is_there() {
        let t0 = Instant::now();
        let q = queue(t0, &[(1, 0, 0), (2, 0, 0), (1, 0, 0)]);
        assert_eq!(decide(&q, &policy(8, 0, &[]), t0), Decision::Run(vec![0, 1, 2]));
    }

    #[test]
    fn never_exceeds_max_batch_size() {
        let t0 = Instant::now();
        let q = queue(t0, &[(3, 0, 0), (3, 0, 0), (3, 0, 0)]);
        assert_eq!(decide(&q, &policy(8, 0, &[]), t0), Decision::Run(vec![0, 1]));
        let q = queue(t0, &[(4, 0, 0), (4, 0, 0), (4, 0, 0)]);
        assert_eq!(decide(&q, &policy(8, 1000, &[]), t0), Decision::Run(vec![0, 1]));
    }

    #[test]
    fn mismatched_shapes_form_their_own_batches() {
        let t0 = Instant::now();
        let q = queue(t0, &[(1, 7, 0), (1, 9, 0), (1, 7, 0)]);
        assert_eq!(decide(&q, &policy(8, 0, &[]), t0), Decision::Run(vec![0, 2]));
    }

    #[test]
    fn waits_for_the_delay_then_runs_a_partial_batch() {
        let t0 = Instant::now();
        let q = queue(t0, &[(1, 0, 0), (1, 0, 10)]);
        let p = policy(8, 100, &[]);
        let deadline = t0 + Duration::from_micros(100);
        assert_eq!(
            decide(&q, &p, t0 + Duration::from_micros(20)),
            Decision::WaitUntil(deadline)
        );
        assert_eq!(decide(&q, &p, deadline), Decision::Run(vec![0, 1]));
    }

    #[test]
    fn preferred_size_runs_before_the_delay() {
        let t0 = Instant::now();
        let q = queue(t0, &[(1, 0, 0), (1, 0, 0), (1, 0, 0)]);
        let p = policy(8, 1_000_000, &[2, 4]);
        assert_eq!(decide(&q, &p, t0), Decision::Run(vec![0, 1]));
    }

    #[test]
    fn oversized_request_runs_alone() {
        let t0 = Instant::now();
        let q = queue(t0, &[(9, 0, 0), (1, 0, 0)]);
        assert_eq!(decide(&q, &policy(8, 0, &[]), t0), Decision::Run(vec![0]));
    }

    #[test]
    fn shadow_copies_wait_for_their_batch_unless_draining_or_full() {
        let t0 = Instant::now();
        let us = Duration::from_micros;
        let mut q = queue(t0, &[(1, 0, 0), (1, 0, 100)]);
        for p in &mut q {
            p.held = Some(p.at + us(20_000));
        }
        let p = policy(4, 500, &[]);
        // Past the queue delay but not the hold: wait for the hold.
        assert_eq!(decide(&q, &p, t0 + us(600)), Decision::WaitUntil(t0 + us(20_000)));
        assert_eq!(decide(&q, &p, t0 + us(20_000)), Decision::Run(vec![0, 1]));
        // Draining (or warming up): no hold.
        let drain = BatchPolicy {
            hold_copies: false,
            ..p.clone()
        };
        assert_eq!(decide(&q, &drain, t0 + us(600)), Decision::Run(vec![0, 1]));
        // A full batch runs at once.
        for i in 0..2 {
            q.push_back(P {
                rows: 1,
                key: vec![0],
                at: t0 + us(200 + i),
                held: Some(t0 + us(20_200)),
            });
        }
        assert_eq!(decide(&q, &p, t0 + us(300)), Decision::Run(vec![0, 1, 2, 3]));
        // A production request ahead of the copies runs on the queue delay and takes copies along.
        q.push_front(P {
            rows: 1,
            key: vec![0],
            at: t0 + us(250),
            held: None,
        });
        assert_eq!(
            decide(&q, &policy(8, 500, &[]), t0 + us(750)),
            Decision::Run(vec![0, 1, 2, 3, 4])
        );
    }

    fn adaptive(max: usize, delay_us: u64) -> BatchPolicy {
        BatchPolicy {
            delay: Delay::Adaptive,
            ..policy(max, delay_us, &[])
        }
    }

    fn pace(gap_us: u64) -> Pace {
        Pace {
            gap: Duration::from_micros(gap_us),
            requests16: 0,
        }
    }

    #[test]
    fn adaptive_runs_a_lone_request_at_once_when_nothing_was_learned() {
        let t0 = Instant::now();
        let q = queue(t0, &[(1, 0, 0)]);
        let d = decide_paced(&q, &adaptive(64, 500), &Pace::default(), t0);
        assert_eq!(d, (Decision::Run(vec![0]), true));
        // The fixed rule waits the whole delay.
        assert_eq!(
            decide(&q, &policy(64, 500, &[]), t0),
            Decision::WaitUntil(t0 + Duration::from_micros(500))
        );
    }

    #[test]
    fn adaptive_waits_while_arrivals_keep_coming_and_never_past_the_delay() {
        let t0 = Instant::now();
        let us = Duration::from_micros;
        let q = queue(t0, &[(1, 0, 0), (1, 0, 10), (1, 0, 20)]);
        // Learned gap 10 µs: patience 80 µs after the latest arrival.
        let p = adaptive(64, 500);
        assert_eq!(
            decide_paced(&q, &p, &pace(10), t0 + us(30)),
            (Decision::WaitUntil(t0 + us(100)), false)
        );
        assert_eq!(
            decide_paced(&q, &p, &pace(10), t0 + us(100)),
            (Decision::Run(vec![0, 1, 2]), true)
        );
        // Recent batches had 4 requests: three are still filling, a pause does not end the wait.
        let fuller = Pace {
            requests16: 4 * 16,
            ..pace(10)
        };
        assert_eq!(
            decide_paced(&q, &p, &fuller, t0 + us(100)),
            (Decision::WaitUntil(t0 + us(500)), false)
        );
        let typical = Pace {
            requests16: 3 * 16,
            ..pace(10)
        };
        assert_eq!(
            decide_paced(&q, &p, &typical, t0 + us(100)),
            (Decision::Run(vec![0, 1, 2]), true)
        );
        // The queue delay still bounds the wait.
        let short = adaptive(64, 50);
        assert_eq!(
            decide_paced(&q, &short, &pace(10), t0 + us(30)),
            (Decision::WaitUntil(t0 + us(50)), false)
        );
        assert_eq!(
            decide_paced(&q, &short, &pace(10), t0 + us(50)),
            (Decision::Run(vec![0, 1, 2]), true)
        );
        // The fixed rule ignores what was learned.
        assert_eq!(
            decide_paced(&q, &policy(64, 500, &[]), &pace(10), t0 + us(100)),
            (Decision::WaitUntil(t0 + us(500)), false)
        );
    }

    #[test]
    fn adaptive_keeps_full_and_preferred_batches_and_held_copies() {
        let t0 = Instant::now();
        let us = Duration::from_micros;
        let q = queue(t0, &[(1, 0, 0), (1, 0, 5), (1, 0, 10)]);
        let patient = pace(1000);
        assert_eq!(
            decide_paced(&q, &adaptive(3, 500), &patient, t0 + us(10)).0,
            Decision::Run(vec![0, 1, 2])
        );
        let preferred = BatchPolicy {
            delay: Delay::Adaptive,
            ..policy(8, 500, &[2])
        };
        assert_eq!(
            decide_paced(&q, &preferred, &patient, t0 + us(10)).0,
            Decision::Run(vec![0, 1])
        );
        // Held copies wait for their hold, not for arrivals to pause.
        let mut copies = queue(t0, &[(1, 0, 0)]);
        copies[0].held = Some(t0 + us(20_000));
        let d = decide_paced(&copies, &adaptive(8, 500), &Pace::default(), t0 + us(10));
        assert_eq!(d, (Decision::WaitUntil(t0 + us(20_000)), false));
    }

    #[test]
    fn pace_learns_gaps_within_batches_and_halves_after_a_vain_wait() {
        let t0 = Instant::now();
        let us = Duration::from_micros;
        let cap = us(500);
        let mut p = Pace::default();
        // Steady 8 µs gaps: the average converges to 8 µs.
        p.observe((0..64).map(|i| t0 + us(8 * i)), false, cap);
        assert!(p.gap >= us(7) && p.gap <= us(8), "{:?}", p.gap);
        // The end of a burst waits in vain once: that teaches nothing.
        let before = p.gap;
        p.observe([t0, t0 + us(8)], true, cap);
        assert_eq!(p.gap, (before * 7 + us(8)) / 8);
        // A lone request that waited in vain halves it.
        let before = p.gap;
        p.observe([t0], true, cap);
        assert_eq!(p.gap, before / 2);
        // A gap longer than the queue delay counts as the delay.
        let mut q = Pace::default();
        q.observe([t0, t0 + Duration::from_secs(1)], false, cap);
        assert_eq!(q.gap, cap / 8);
        // Requests per batch: an average over ~8 batches.
        let mut r = Pace::default();
        for _ in 0..64 {
            r.observe([t0; 12], false, cap);
        }
        assert_eq!(r.expected(), 11, "approaches 12 from below: {}", r.requests16);
        for _ in 0..64 {
            r.observe([t0], true, cap);
        }
        assert_eq!(r.expected(), 1);
    }

    #[test]
    fn a_closed_loop_client_stops_paying_for_waits() {
        // One client, one request at a time: what a burst taught the batcher
        // fades with every wait in vain, and the wait goes to nothing.
        let t0 = Instant::now();
        let p = adaptive(64, 500);
        let mut learned = pace(20);
        let mut waited = Vec::new();
        let mut now = t0;
        for _ in 0..12 {
            let q = queue(now, &[(1, 0, 0)]);
            let (mut decision, mut paused) = decide_paced(&q, &p, &learned, now);
            let arrived = now;
            if let Decision::WaitUntil(t) = decision {
                now = t;
                (decision, paused) = decide_paced(&q, &p, &learned, now);
            }
            assert_eq!((decision, paused), (Decision::Run(vec![0]), true));
            waited.push(now - arrived);
            learned.observe([arrived], paused, Duration::from_micros(500));
            now += Duration::from_micros(100);
        }
        assert_eq!(waited[0], Duration::from_micros(160));
        assert!(waited[11] < Duration::from_micros(1), "{waited:?}");
    }

    #[test]
    fn a_gap_learned_in_a_burst_fades_even_when_it_outlasts_the_delay() {
        // A burst (many requests per batch, slow arrivals) taught a gap whose
        // patience (8 x 400 µs) is longer than the 500 µs delay; then one
        // closed-loop client: each lone request first runs at the deadline,
        // and each such vain wait halves the gap until it runs at once.
        let t0 = Instant::now();
        let p = adaptive(64, 500);
        let mut learned = Pace {
            gap: Duration::from_micros(400),
            requests16: 8 * 16,
        };
        let mut waited = Vec::new();
        let mut now = t0;
        for _ in 0..40 {
            let q = queue(now, &[(1, 0, 0)]);
            let arrived = now;
            let (mut decision, mut paused) = decide_paced(&q, &p, &learned, now);
            if let Decision::WaitUntil(t) = decision {
                now = t;
                (decision, paused) = decide_paced(&q, &p, &learned, now);
            }
            assert_eq!((decision, paused), (Decision::Run(vec![0]), true));
            waited.push(now - arrived);
            learned.observe([arrived], paused, Duration::from_micros(500));
            now += Duration::from_micros(100);
        }
        assert_eq!(waited[0], Duration::from_micros(500));
        assert!(waited[39] < Duration::from_micros(1), "{waited:?}");
        // The fixed rule still waits the whole delay, and says nothing of pauses.
        let q = queue(t0, &[(1, 0, 0)]);
        let fixed = policy(64, 500, &[]);
        assert_eq!(
            decide_paced(&q, &fixed, &learned, t0 + Duration::from_micros(500)),
            (Decision::Run(vec![0]), false)
        );
    }
}
