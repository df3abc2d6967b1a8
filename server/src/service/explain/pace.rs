//! How an explanation call yields to production traffic (see [`Pace`]).

use std::time::{Duration, Instant};

use super::Subject;

/// Explanations take only what production leaves. Before each job a call
/// waits (in 1 ms steps; the call's deadline bounds it) while production
/// requests are queued on the version or the process is busy (CPU load ≥
/// [`YIELD_CPU_LOAD`]), and while it has been working (not waiting) for more
/// than [`SHARE`] of its time so far: a call at the evaluation budget's limit
/// never holds the version's executor, or the core it shares with the
/// transport, for long stretches.
pub(super) struct Pace {
    started: Instant,
    /// Time spent waiting here.
    waited: Duration,
}

impl Pace {
    pub(super) fn new(now: Instant) -> Pace {
        Pace {
            started: now,
            waited: Duration::ZERO,
        }
    }

    pub(super) async fn wait(&mut self, s: &Subject) {
        let from = Instant::now();
        let pause = Duration::from_millis(1);
        loop {
            let now = Instant::now();
            let waited = self.waited + now.duration_since(from);
            if now >= s.deadline
                || (s.handle.queue.depth() == 0
                    && crate::util::cpu::load() < YIELD_CPU_LOAD
                    && owed(now.duration_since(self.started), waited) < pause)
            {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        self.waited += from.elapsed();
    }
}

/// How long a call that has run for `elapsed`, `waited` of it waiting, must
/// still wait for its working time to be [`SHARE`] of its time.
fn owed(elapsed: Duration, waited: Duration) -> Duration {
    elapsed.saturating_sub(waited).div_f64(SHARE).saturating_sub(elapsed)
}

/// The share of its time an explanation call may spend working.
pub const SHARE: f64 = 0.1;

/// The process CPU load above which an explanation waits before its next job.
pub const YIELD_CPU_LOAD: f64 = 0.9;

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// `owed` in whole microseconds (the share is a float).
    fn owed_us(elapsed: u64, waited: u64) -> u128 {
        (owed(ms(elapsed), ms(waited)).as_nanos() + 500) / 1000
    }

    #[test]
    fn a_call_works_a_tenth_of_its_time() {
        assert_eq!(SHARE, 0.1);
        // Just started, or has waited nine times what it worked (or more): nothing owed.
        assert_eq!(owed_us(0, 0), 0);
        assert_eq!(owed_us(100, 90), 0);
        assert_eq!(owed_us(100, 95), 0);
        // Worked 10 ms straight: owes 90 ms; after waiting 10 of them, 80.
        assert_eq!(owed_us(10, 0), 90_000);
        assert_eq!(owed_us(20, 10), 80_000);
        assert_eq!(owed_us(40, 30), 60_000);
        // A wait longer than the elapsed time (clock skew) owes nothing.
        assert_eq!(owed_us(5, 9), 0);
    }
}
