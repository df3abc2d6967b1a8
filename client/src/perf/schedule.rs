//! The open-loop send schedule and the small deterministic random number
//! generator behind it and behind the generated inputs.

use std::time::Duration;

use super::Distribution;

/// xorshift64* (Vigna): fast, tiny, and good enough for test data and
/// exponential gaps. Not for anything that needs unpredictability.
#[derive(Debug, Clone)]
pub(crate) struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (0 is replaced: the state must not be 0).
    pub(crate) fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 { 0x9e37_79b9_7f4a_7c15 } else { seed })
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1), with 53 random bits.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n` > 0; the modulo bias is irrelevant here).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The gaps between the scheduled send times of an open-loop run: constant
/// (`1 / rate`) or exponential with mean `1 / rate` (a Poisson process).
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    mean_gap_s: f64,
    distribution: Distribution,
    rng: XorShift,
}

impl Schedule {
    /// A schedule of `rate` requests per second (`rate` > 0).
    pub(crate) fn new(rate: f64, distribution: Distribution, seed: u64) -> Schedule {
        Schedule {
            mean_gap_s: 1.0 / rate,
            distribution,
            rng: XorShift::new(seed),
        }
    }

    /// The time from one scheduled send to the next.
    pub(crate) fn next_gap(&mut self) -> Duration {
        let gap = match self.distribution {
            Distribution::Constant => self.mean_gap_s,
            // Inverse transform sampling; 1 - u lies in (0, 1], so ln is finite.
            Distribution::Poisson => -(1.0 - self.rng.next_f64()).ln() * self.mean_gap_s,
        };
        Duration::from_secs_f64(gap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_schedule_spaces_sends_evenly() {
        let mut s = Schedule::new(200.0, Distribution::Constant, 1);
        let gaps: Vec<Duration> = (0..1000).map(|_| s.next_gap()).collect();
        assert!(gaps.iter().all(|&g| g == Duration::from_millis(5)), "{:?}", &gaps[..3]);
        let total: Duration = gaps.iter().sum();
        assert_eq!(total, Duration::from_secs(5));
    }

    #[test]
    fn poisson_schedule_keeps_the_mean_rate() {
        let rate = 250.0;
        let n = 200_000;
        let mut s = Schedule::new(rate, Distribution::Poisson, 42);
        let gaps: Vec<f64> = (0..n).map(|_| s.next_gap().as_secs_f64()).collect();
        let mean = gaps.iter().sum::<f64>() / n as f64;
        let observed_rate = 1.0 / mean;
        assert!((observed_rate - rate).abs() / rate < 0.01, "rate {observed_rate}");
        // Exponential gaps: the standard deviation equals the mean, and the
        // gaps really vary (unlike the constant schedule).
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n as f64;
        let cv = var.sqrt() / mean;
        assert!((cv - 1.0).abs() < 0.02, "coefficient of variation {cv}");
        assert!(gaps.iter().all(|&g| g.is_finite() && g >= 0.0));
        // The same seed gives the same schedule.
        let mut again = Schedule::new(rate, Distribution::Poisson, 42);
        assert_eq!(again.next_gap().as_secs_f64(), gaps[0]);
    }

    #[test]
    fn xorshift_is_deterministic_and_spread() {
        let mut a = XorShift::new(7);
        let mut b = XorShift::new(7);
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        assert_eq!(xs, (0..100).map(|_| b.next_u64()).collect::<Vec<_>>());
        let mut z = XorShift::new(0);
        assert_ne!(z.next_u64(), 0);
        let mut r = XorShift::new(3);
        let mut buckets = [0u32; 10];
        for _ in 0..10_000 {
            let u = r.next_f64();
            assert!((0.0..1.0).contains(&u));
            buckets[(u * 10.0) as usize] += 1;
        }
        assert!(buckets.iter().all(|&c| (800..1200).contains(&c)), "{buckets:?}");
    }
}
