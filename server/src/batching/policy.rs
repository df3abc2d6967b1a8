//! Batch forming as a pure function of the queue, the policy and the time:
//! no locks, no clocks, no threads, so every rule is unit-tested directly.
//!
//! Rules (Triton's dynamic batcher): requests join the head request's batch
//! only if their non-batch shapes match; a batch never exceeds
//! `max_batch_size` rows; a full batch, or one of a preferred size, runs at
//! once; otherwise the batcher waits until the oldest request has waited
//! `max_queue_delay`, then runs what it has.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

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

/// Decides what to run next.
pub fn decide<P: Pending>(queue: &VecDeque<P>, policy: &BatchPolicy, now: Instant) -> Decision {
    let Some(head) = queue.front() else {
        return Decision::Idle;
    };
    if !policy.dynamic || policy.max_batch_size == 0 {
        return Decision::Run(vec![0]);
    }
    let max = policy.max_batch_size;
    // Compatible requests in arrival order, while they fit in one batch.
    let mut picked = Vec::new();
    let mut cumulative = Vec::new();
    let mut rows = 0usize;
    for (i, p) in queue.iter().enumerate() {
        if p.shape_key() != head.shape_key() {
            continue;
        }
        if rows + p.rows() > max {
            if picked.is_empty() {
                // A request larger than the batch limit was rejected at
                // admission; run it alone rather than stall the queue.
                return Decision::Run(vec![i]);
            }
            break;
        }
        rows += p.rows();
        picked.push(i);
        cumulative.push(rows);
        if rows == max {
            return Decision::Run(picked);
        }
    }
    let deadline = head.enqueued() + policy.max_queue_delay;
    if now >= deadline {
        return Decision::Run(picked);
    }
    // Largest preferred size that a prefix of the picked requests fills exactly.
    if let Some(n) = (0..cumulative.len())
        .rev()
        .find(|&n| policy.preferred.contains(&cumulative[n]))
    {
        picked.truncate(n + 1);
        return Decision::Run(picked);
    }
    Decision::WaitUntil(deadline)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct P {
        rows: usize,
        key: Vec<i64>,
        at: Instant,
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
    }

    fn queue(t0: Instant, items: &[(usize, i64, u64)]) -> VecDeque<P> {
        items
            .iter()
            .map(|&(rows, key, us)| P {
                rows,
                key: vec![key],
                at: t0 + Duration::from_micros(us),
            })
            .collect()
    }

    fn policy(max: usize, delay_us: u64, preferred: &[usize]) -> BatchPolicy {
        BatchPolicy {
            max_batch_size: max,
            dynamic: true,
            preferred: preferred.to_vec(),
            max_queue_delay: Duration::from_micros(delay_us),
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
}
