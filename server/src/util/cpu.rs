//! How busy this process keeps the CPUs it may use: CPU time (user and
//! system, every thread) per wall-clock time, as a share of the CPUs the
//! process may run on (its affinity mask and cgroup quota), smoothed over
//! the last ~50 ms. Shadow mirroring reads it to make copies only from spare
//! capacity.
//!
//! Sampled lazily by the callers (at most once per [`MIN_INTERVAL`], one
//! `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)` call), so nothing runs while
//! nobody asks.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Samples closer together than this reuse the last value.
pub const MIN_INTERVAL: Duration = Duration::from_millis(5);
/// Time constant of the smoothing.
pub const SMOOTHING: Duration = Duration::from_millis(50);

/// One reading: when, and the process's CPU time until then.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    cpu: Duration,
}

struct Sampler {
    cpus: f64,
    last: Mutex<Option<Reading>>,
    /// The smoothed load, as f32 bits.
    load: AtomicU32,
}

/// The next smoothed load from the previous one and the CPU time used over
/// `wall` of elapsed time on `cpus` CPUs (an exponential average with time
/// constant [`SMOOTHING`]: a gap longer than it mostly replaces the value).
pub fn smooth(previous: f64, cpu: Duration, wall: Duration, cpus: f64) -> f64 {
    if wall.is_zero() || cpus <= 0.0 {
        return previous;
    }
    let now = cpu.as_secs_f64() / wall.as_secs_f64() / cpus;
    let keep = (-wall.as_secs_f64() / SMOOTHING.as_secs_f64()).exp();
    previous * keep + now * (1.0 - keep)
}

fn process_cpu_time() -> Option<Duration> {
    cpu_time::ProcessTime::try_now().ok().map(|t| t.as_duration())
}

fn sampler() -> &'static Sampler {
    static SAMPLER: OnceLock<Sampler> = OnceLock::new();
    SAMPLER.get_or_init(|| Sampler {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
        last: Mutex::new(None),
        load: AtomicU32::new(0f32.to_bits()),
    })
}

/// This process's CPU load in [0, ~1]: 1 = every CPU it may use is busy
/// with its threads.
pub fn load() -> f64 {
    let s = sampler();
    let cached = || f32::from_bits(s.load.load(Ordering::Relaxed)) as f64;
    // A caller that finds another sampling uses the last value.
    let Some(mut last) = s.last.try_lock() else {
        return cached();
    };
    let now = Instant::now();
    if last.is_some_and(|r| now.duration_since(r.at) < MIN_INTERVAL) {
        return cached();
    }
    let Some(cpu) = process_cpu_time() else {
        return cached();
    };
    let reading = Reading { at: now, cpu };
    let value = match last.replace(reading) {
        None => return cached(),
        Some(prev) => smooth(
            cached(),
            cpu.saturating_sub(prev.cpu),
            now.duration_since(prev.at),
            s.cpus,
        ),
    };
    s.load.store((value as f32).to_bits(), Ordering::Relaxed);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn smoothing_follows_the_load_with_a_50_ms_time_constant() {
        // Two CPUs, one fully busy: 0.5.
        let one = smooth(0.0, MS(10), MS(10), 2.0);
        assert!((one - 0.5 * (1.0 - (-0.2f64).exp())).abs() < 1e-12, "{one}");
        // A long gap replaces the old value almost entirely.
        let long = smooth(1.0, MS(0), MS(1000), 2.0);
        assert!(long < 1e-8, "{long}");
        // Steady full load converges to 1.
        let mut v = 0.0;
        for _ in 0..100 {
            v = smooth(v, MS(20), MS(10), 2.0);
        }
        assert!((v - 1.0).abs() < 1e-6, "{v}");
        // No time elapsed, or no CPUs: unchanged.
        assert_eq!(smooth(0.3, MS(5), Duration::ZERO, 2.0), 0.3);
        assert_eq!(smooth(0.3, MS(5), MS(5), 0.0), 0.3);
    }

    #[test]
    fn a_busy_thread_raises_the_load() {
        let deadline = Instant::now() + Duration::from_secs(10);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spin = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        };
        let cpus = sampler().cpus;
        let mut seen = 0.0;
        // One busy thread of `cpus`: at least ~1/cpus once the average settles.
        while seen < 0.8 / cpus && Instant::now() < deadline {
            std::thread::sleep(MS(10));
            seen = load();
        }
        stop.store(true, Ordering::Relaxed);
        spin.join().unwrap();
        assert!(seen >= 0.8 / cpus, "load {seen} with one busy thread of {cpus} CPUs");
    }
}
