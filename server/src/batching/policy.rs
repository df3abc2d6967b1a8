//! Batch forming as a pure function of the queue, the policy and the time:
//! no locks, no clocks, no threads, so every rule is unit-tested directly.
//!
//! Rules (Triton's dynamic batcher): requests join the head request's batch
//! only if their non-batch shapes match; a batch never exceeds
//! `max_batch_size` rows; a full batch, or one of a preferred size, runs at
//! once; otherwise the batcher waits until the oldest request has waited
//! `max_queue_delay`, then runs what it has. Shadow copies (always behind
//! production requests) at the head may wait longer, up to their own batch
//! wait, so that copies share batches instead of each costing a run.

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
    /// Whether a shadow copy at the head waits until it is [`Pending::held_until`]
    /// for more copies (off while draining or warming up).
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
    /// For a shadow copy: how long it may wait for other copies to fill its
    /// batch; `None` for production requests.
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
    let mut deadline = head.enqueued() + policy.max_queue_delay;
    if policy.hold_copies
        && let Some(held) = head.held_until()
    {
        deadline = deadline.max(held);
    }
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
}
