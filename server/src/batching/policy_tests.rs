//! The batch-forming rules, with explicit clocks.

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

/// A learned gap, after batches of up to 64 requests.
fn pace(gap_us: u64) -> Pace {
    Pace {
        gap: Duration::from_micros(gap_us),
        requests16: 0,
        largest16: 64 * 16,
    }
}

#[test]
fn adaptive_runs_a_lone_request_at_once_when_nothing_was_learned() {
    let t0 = Instant::now();
    let q = queue(t0, &[(1, 0, 0)]);
    let d = decide_paced(&q, &adaptive(64, 500), &Pace::default(), t0);
    // As large as any batch yet (none): it runs without waiting for a pause.
    assert_eq!(d, (Decision::Run(vec![0]), false));
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
        largest16: 8 * 16,
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
        assert_eq!(decision, Decision::Run(vec![0]));
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

#[test]
fn a_batch_as_large_as_the_largest_recent_one_runs_at_once() {
    // Eight closed-loop clients: every batch has had eight requests.
    let t0 = Instant::now();
    let us = Duration::from_micros;
    let p = adaptive(64, 500);
    let mut learned = Pace::default();
    for _ in 0..32 {
        learned.observe((0..8).map(|i| t0 + us(10 * i)), false, us(500));
    }
    assert_eq!((learned.expected(), learned.largest()), (7, 8));
    // The eighth is in: no wait for arrivals to pause.
    let q = queue(
        t0,
        &[
            (1, 0, 0),
            (1, 0, 10),
            (1, 0, 20),
            (1, 0, 30),
            (1, 0, 40),
            (1, 0, 50),
            (1, 0, 60),
            (1, 0, 70),
        ],
    );
    assert_eq!(
        decide_paced(&q, &p, &learned, t0 + us(70)),
        (Decision::Run((0..8).collect()), false)
    );
    // Seven: more may come; wait for the pause (8 x the 10 µs gap).
    let seven: VecDeque<P> = queue(
        t0,
        &[
            (1, 0, 0),
            (1, 0, 10),
            (1, 0, 20),
            (1, 0, 30),
            (1, 0, 40),
            (1, 0, 50),
            (1, 0, 60),
        ],
    );
    assert_eq!(
        decide_paced(&seven, &p, &learned, t0 + us(60)),
        (Decision::WaitUntil(t0 + us(60) + learned.patience()), false)
    );
    // The largest shrinks by an eighth with each smaller batch.
    learned.observe([t0; 4], true, us(500));
    assert_eq!(learned.largest16, 8 * 16 - 16);
    // The fixed rule waits the delay out.
    assert_eq!(
        decide_paced(&q, &policy(64, 500, &[]), &learned, t0 + us(70)),
        (Decision::WaitUntil(t0 + us(500)), false)
    );
}
