//! Prometheus metrics: the process-wide recorder, its settings and the
//! process metrics. Every name lives in [`names`] (shadow mirroring's in
//! [`shadow`], explanations' in [`explain`]; all re-exported here) and is
//! described once; per-version handles, created once so the request path
//! does no label hashing, are in [`handles`] (re-exported too).
//!
//! The recorder is process-wide: [`install_with`] installs it once, and the
//! first call's [`MetricsSettings`] win for the life of the process (tests
//! that start several servers in one process share one recorder and one
//! bucket layout).

pub mod explain;
pub mod handles;
pub mod names;
pub mod quality;
pub mod shadow;

pub use explain::*;
pub use handles::*;
pub use names::*;
pub use shadow::*;

use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Counters whose values are fractional seconds. The `metrics` crate's
/// counters are integers, so these are kept in gauges (which add `f64`) and
/// rendered with `# TYPE ... counter`; they only ever increase.
const FLOAT_COUNTERS: &[&str] = &[COMPUTE_CPU, EXECUTOR_IDLE, PROCESS_CPU];

/// Default latency buckets in seconds: 50 µs to 10 s.
pub const DEFAULT_LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Default batch-size buckets in rows.
pub const DEFAULT_BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];
const FILL_RATIO_BUCKETS: &[f64] = &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];
const LOAD_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// How the recorder is set up (`--metrics-*` flags).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSettings {
    /// Bucket bounds of every `*_seconds` latency histogram.
    pub latency_buckets: Vec<f64>,
    /// Bucket bounds of `switchyard_batch_size`.
    pub batch_buckets: Vec<f64>,
    /// Also export Triton's `nv_inference_*` metrics.
    pub triton_names: bool,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            latency_buckets: DEFAULT_LATENCY_BUCKETS.to_vec(),
            batch_buckets: DEFAULT_BATCH_BUCKETS.to_vec(),
            triton_names: false,
        }
    }
}

/// Sorted, deduplicated finite bounds; `default` when none are left.
fn bucket_bounds(given: &[f64], default: &[f64]) -> Vec<f64> {
    let mut b: Vec<f64> = given.iter().copied().filter(|x| x.is_finite()).collect();
    b.sort_by(f64::total_cmp);
    b.dedup();
    if b.is_empty() { default.to_vec() } else { b }
}

/// The settings the recorder was installed with: written once, by the first
/// [`install_with`]; read by the handle constructors (whether Triton's names
/// are registered) and by [`describe_all`].
static SETTINGS: OnceLock<MetricsSettings> = OnceLock::new();

/// Whether Triton's names are exported (false before any install).
fn triton_names() -> bool {
    SETTINGS.get().is_some_and(|s| s.triton_names)
}

/// Renders the process-wide recorder for `/metrics`.
#[derive(Debug, Clone)]
pub struct MetricsHandle {
    inner: PrometheusHandle,
}

impl MetricsHandle {
    /// Prometheus text exposition of every metric, process metrics refreshed.
    pub fn render(&self) -> String {
        update_process_metrics();
        let mut text = self.inner.render();
        for name in FLOAT_COUNTERS {
            let (gauge, counter) = (format!("# TYPE {name} gauge\n"), format!("# TYPE {name} counter\n"));
            if let Some(at) = text.find(&gauge) {
                text.replace_range(at..at + gauge.len(), &counter);
            }
        }
        text
    }
}

/// Installs the process-wide recorder once with default settings.
pub fn install() -> MetricsHandle {
    install_with(&MetricsSettings::default())
}

/// Installs the process-wide recorder once and returns its handle (rendered on
/// the metrics port). Only the first call's `settings` take effect: later
/// calls, from other servers in the same process, get the same recorder.
pub fn install_with(settings: &MetricsSettings) -> MetricsHandle {
    static HANDLE: OnceLock<MetricsHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let settings = MetricsSettings {
                latency_buckets: bucket_bounds(&settings.latency_buckets, DEFAULT_LATENCY_BUCKETS),
                batch_buckets: bucket_bounds(&settings.batch_buckets, DEFAULT_BATCH_BUCKETS),
                triton_names: settings.triton_names,
            };
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &settings.latency_buckets)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), &settings.batch_buckets))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_FILL_RATIO.into()), FILL_RATIO_BUCKETS))
                // Full matchers take precedence over the suffix one.
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(MODEL_LOAD_DURATION.into()), LOAD_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(SHADOW_MAX_ABS.into()), DIFF_BUCKETS))
                .expect("bucket lists are non-empty");
            let _ = SETTINGS.set(settings);
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (embedding, tests):
            // then this handle renders nothing, which is harmless.
            let _ = metrics::set_global_recorder(recorder);
            describe_all(triton_names());
            MetricsHandle { inner: handle }
        })
        .clone()
}

/// Keeps the recorder's upkeep thread running while held. Histogram samples
/// buffer in the recorder until drained; without a scrape they would grow
/// with every request, so a thread drains them every second. Each running
/// server holds one [`Upkeep`]; the thread starts with the first and is
/// stopped and joined when the last is dropped.
#[derive(Debug)]
pub struct Upkeep(());

/// The upkeep thread and the channel whose closing stops it.
type UpkeepThread = (std::sync::mpsc::Sender<()>, JoinHandle<()>);

/// Servers holding an [`Upkeep`], and the thread.
static UPKEEP: Mutex<(usize, Option<UpkeepThread>)> = Mutex::new((0, None));

/// Starts (or shares) the upkeep thread of `handle`'s recorder.
pub fn upkeep(handle: &MetricsHandle) -> Upkeep {
    let mut held = UPKEEP.lock();
    held.0 += 1;
    if held.1.is_none() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let recorder = handle.inner.clone();
        let started = std::thread::Builder::new()
            .name("sy-metrics-upkeep".into())
            .spawn(move || {
                // Every second until the stop channel closes.
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(1)) {
                    recorder.run_upkeep();
                    update_process_metrics();
                }
            });
        match started {
            Ok(thread) => held.1 = Some((tx, thread)),
            Err(e) => tracing::warn!(error = %e, "cannot start the metrics upkeep thread"),
        }
    }
    Upkeep(())
}

impl Drop for Upkeep {
    fn drop(&mut self) {
        let stopped = {
            let mut held = UPKEEP.lock();
            held.0 -= 1;
            if held.0 == 0 { held.1.take() } else { None }
        };
        if let Some((tx, thread)) = stopped {
            drop(tx);
            let _ = thread.join();
        }
    }
}

/// Sets the process CPU time and resident memory (Linux; elsewhere RSS stays unset).
fn update_process_metrics() {
    if let Ok(cpu) = cpu_time::ProcessTime::try_now() {
        metrics::gauge!(PROCESS_CPU).set(cpu.as_duration().as_secs_f64());
    }
    if let Some(rss) = resident_bytes() {
        metrics::gauge!(PROCESS_RSS).set(rss as f64);
    }
}

/// `VmRSS` of `/proc/self/status`, in bytes (`None` where there is none).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time of the calling thread, for per-batch compute accounting
/// (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`; `None` where unsupported).
pub fn thread_cpu_time() -> Option<Duration> {
    cpu_time::ThreadTime::try_now().ok().map(|t| t.as_duration())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_bounds_sort_dedup_and_fall_back() {
        assert_eq!(bucket_bounds(&[0.5, 0.1, 0.5, f64::NAN], &[9.0]), vec![0.1, 0.5]);
        assert_eq!(bucket_bounds(&[], &[9.0]), vec![9.0]);
    }

    #[test]
    fn process_rss_is_read() {
        if cfg!(target_os = "linux") {
            assert!(resident_bytes().is_some_and(|b| b > 0));
        }
    }

    #[test]
    fn thread_cpu_time_moves_and_is_cheap() {
        let Some(start) = thread_cpu_time() else { return };
        let n = 10_000u32;
        let wall = std::time::Instant::now();
        let mut last = start;
        for _ in 0..n {
            last = thread_cpu_time().unwrap();
        }
        let per_read = wall.elapsed() / n;
        println!("thread CPU time read: {per_read:?} per call");
        assert!(last > start);
        // Generous bound: the read is one (v)syscall, it runs twice per batch.
        assert!(per_read < Duration::from_micros(50), "{per_read:?}");
    }
}
