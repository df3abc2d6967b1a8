//! Per-version health since load: requests, server-side errors and a
//! lock-free latency histogram (8 buckets per power of two, ~9 % wide), read
//! by the automatic rollback after a promotion. Recording is two relaxed
//! atomic increments.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::ErrorKind;

const LINEAR: usize = 16;
const SUB: usize = 8;
const OCTAVES: usize = 40;
const BUCKETS: usize = LINEAR + OCTAVES * SUB;

/// Health counters of one version.
#[derive(Debug)]
pub struct HealthWindow {
    requests: AtomicU64,
    errors: AtomicU64,
    buckets: Box<[AtomicU64]>,
}

impl Default for HealthWindow {
    fn default() -> Self {
        HealthWindow {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// A snapshot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Health {
    /// Requests finished.
    pub requests: u64,
    /// Of which failed on the server's side.
    pub errors: u64,
    /// 99th percentile latency (upper bound of its bucket).
    pub p99: Duration,
}

impl Health {
    /// errors / requests (0 without requests).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

fn bucket(us: u64) -> usize {
    if us < LINEAR as u64 {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros() as usize; // >= 4
    let sub = ((us >> (exp - 3)) & (SUB as u64 - 1)) as usize;
    (LINEAR + (exp - 4) * SUB + sub).min(BUCKETS - 1)
}

fn upper_us(index: usize) -> u64 {
    if index < LINEAR {
        return index as u64 + 1;
    }
    let exp = (index - LINEAR) / SUB + 4;
    let sub = ((index - LINEAR) % SUB) as u64;
    (SUB as u64 + sub + 1) << (exp - 3)
}

/// Whether an error counts against the version (not the client's fault).
pub fn is_server_error(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::Internal | ErrorKind::Unavailable | ErrorKind::Timeout)
}

impl HealthWindow {
    /// Records one finished request.
    pub fn record(&self, latency: Duration, error: Option<ErrorKind>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error.is_some_and(is_server_error) {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests, errors and p99 so far.
    pub fn snapshot(&self) -> Health {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let mut p99 = Duration::ZERO;
        if total > 0 {
            let rank = (total as f64 * 0.99).ceil() as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    p99 = Duration::from_micros(upper_us(i));
                    break;
                }
            }
        }
        Health {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            p99,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_tight() {
        let mut last = 0;
        for us in (0..100_000u64).chain([1 << 30, u64::MAX]) {
            let b = bucket(us);
            assert!(b >= last, "monotonic at {us}");
            last = b;
            if us < 1 << 30 {
                assert!(upper_us(b) > us, "upper bound above {us}");
                assert!(upper_us(b) as f64 <= (us as f64 + 1.0) * 1.13 + 1.0, "tight at {us}");
            }
        }
    }

    #[test]
    fn p99_and_error_rate() {
        let w = HealthWindow::default();
        for i in 0..990 {
            w.record(Duration::from_micros(100 + i % 10), None);
        }
        for _ in 0..10 {
            w.record(Duration::from_millis(50), Some(ErrorKind::Internal));
        }
        w.record(Duration::from_micros(10), Some(ErrorKind::InvalidArgument));
        let h = w.snapshot();
        assert_eq!(h.requests, 1001);
        assert_eq!(h.errors, 10, "client errors do not count");
        assert!(
            h.p99 >= Duration::from_micros(100) && h.p99 < Duration::from_micros(120),
            "{h:?}"
        );
        assert!((h.error_rate() - 10.0 / 1001.0).abs() < 1e-9);
    }
}
