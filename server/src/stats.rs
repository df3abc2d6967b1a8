//! Per-version statistics in Triton's `ModelStatistics` shape: cumulative
//! counts and nanoseconds per phase, which perf_analyzer reads before and
//! after each measurement window. Lock-free on the request path except the
//! per-batch-size table, touched once per batch.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use switchyard_proto::inference::{InferBatchStatistics, InferStatistics, ModelStatistics, StatisticDuration};

/// Phase durations of one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Time in the queue.
    pub queue: Duration,
    /// Building the batch's input tensors.
    pub compute_input: Duration,
    /// The session run.
    pub compute_infer: Duration,
    /// Splitting and encoding outputs.
    pub compute_output: Duration,
    /// Rows in the batch the request rode in.
    pub batch_rows: usize,
}

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Count(AtomicU64);

impl Count {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why a request left the queue without being computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Refused at admission: the queue was full.
    QueueFull,
    /// Its caller went away.
    Cancelled,
    /// Its queue deadline passed.
    Timeout,
}

/// A count and a total duration.
#[derive(Debug, Default)]
pub struct DurationStat {
    count: Count,
    ns: Count,
}

impl DurationStat {
    /// Records one occurrence lasting `d`.
    pub fn record(&self, d: Duration) {
        self.count.inc();
        self.ns.add(d.as_nanos() as u64);
    }
    /// Occurrences so far.
    pub fn count(&self) -> u64 {
        self.count.get()
    }
    fn proto(&self) -> StatisticDuration {
        StatisticDuration {
            count: self.count.get(),
            ns: self.ns.get(),
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct BatchRow {
    count: u64,
    input_ns: u64,
    infer_ns: u64,
    output_ns: u64,
}

/// Statistics of one model version.
#[derive(Debug, Default)]
pub struct VersionStats {
    /// Requests answered successfully, with their total server time.
    pub success: DurationStat,
    /// Requests that failed after reaching the model, with their server time.
    pub fail: DurationStat,
    /// Mirrored (shadow) requests answered successfully: kept out of `success`
    /// and reported in the statistics' `properties` instead.
    pub shadow_success: DurationStat,
    /// Mirrored (shadow) requests that failed: kept out of `fail`.
    pub shadow_fail: DurationStat,
    /// Time in the queue, per request.
    pub queue: DurationStat,
    /// Input preparation, per request.
    pub compute_input: DurationStat,
    /// Session run, per request.
    pub compute_infer: DurationStat,
    /// Output preparation, per request.
    pub compute_output: DurationStat,
    /// Rows computed (Triton's inference_count).
    pub inference_count: Count,
    /// Batches run (Triton's execution_count).
    pub execution_count: Count,
    /// Requests refused because the queue was full.
    pub rejected: Count,
    /// Requests dropped because their caller went away.
    pub cancelled: Count,
    /// Requests dropped because their deadline passed in the queue.
    pub timed_out: Count,
    last_inference_ms: AtomicU64,
    /// Set while the version warms up and runs its golden set before it is
    /// published: those runs are not traffic and are not counted.
    quiet: AtomicBool,
    batches: Mutex<BTreeMap<u64, BatchRow>>,
    prom: crate::metrics::ExecutionMetrics,
}

impl VersionStats {
    /// Statistics that also feed the Prometheus metrics of `model`/`version`.
    pub fn with_metrics(model: &str, version: &str) -> VersionStats {
        VersionStats {
            prom: crate::metrics::ExecutionMetrics::new(model, version),
            ..Default::default()
        }
    }

    /// Records one batch run.
    /// Stops (`true`) or resumes counting (warm-up and validation runs are not counted).
    pub fn set_quiet(&self, quiet: bool) {
        self.quiet.store(quiet, Ordering::Relaxed);
    }

    fn counting(&self) -> bool {
        !self.quiet.load(Ordering::Relaxed)
    }

    pub fn record_execution(&self, rows: usize, input: Duration, infer: Duration, output: Duration) {
        if !self.counting() {
            return;
        }
        self.execution_count.inc();
        self.inference_count.add(rows as u64);
        self.prom.executions.increment(1);
        self.prom.inferences.increment(rows as u64);
        self.prom.batch_size.record(rows as f64);
        self.prom.compute_input.record(input.as_secs_f64());
        self.prom.compute_infer.record(infer.as_secs_f64());
        self.prom.compute_output.record(output.as_secs_f64());
        self.prom.triton.exec_count.increment(1);
        self.prom.triton.inference_count.increment(rows as u64);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_inference_ms.store(now_ms, Ordering::Relaxed);
        let mut table = self.batches.lock();
        let row = table.entry(rows as u64).or_default();
        row.count += 1;
        row.input_ns += input.as_nanos() as u64;
        row.infer_ns += infer.as_nanos() as u64;
        row.output_ns += output.as_nanos() as u64;
    }

    /// Records the efficiency of one batch: executor CPU time of its session
    /// run and, for batching versions, its rows over `max_batch_size`.
    pub fn record_efficiency(&self, cpu: Option<Duration>, fill_ratio: Option<f64>) {
        if let Some(cpu) = cpu {
            self.prom.compute_cpu.increment(cpu.as_secs_f64());
        }
        if let Some(ratio) = fill_ratio {
            self.prom.fill_ratio.record(ratio);
        }
    }

    /// Adds time an executor spent waiting for work.
    pub fn record_idle(&self, idle: Duration) {
        self.prom.executor_idle.increment(idle.as_secs_f64());
    }

    /// Counts a request that was not computed.
    pub fn record_dropped(&self, why: Dropped) {
        if !self.counting() {
            return;
        }
        let (count, metric) = match why {
            Dropped::QueueFull => (&self.rejected, &self.prom.queue_full),
            Dropped::Cancelled => (&self.cancelled, &self.prom.cancelled),
            Dropped::Timeout => (&self.timed_out, &self.prom.timed_out),
        };
        count.inc();
        metric.increment(1);
    }

    /// Reports the number of queued requests.
    pub fn set_queue_depth(&self, depth: usize) {
        self.prom.queue_depth.set(depth as f64);
        self.prom.triton.pending.set(depth as f64);
    }

    /// Reports how many requests the queue holds at most.
    pub fn set_queue_capacity(&self, capacity: usize) {
        self.prom.queue_capacity.set(capacity as f64);
    }

    /// Records where one request's time went.
    pub fn record_phases(&self, t: &Timings) {
        if !self.counting() {
            return;
        }
        self.queue.record(t.queue);
        self.prom.queue.record(t.queue.as_secs_f64());
        self.compute_input.record(t.compute_input);
        self.compute_infer.record(t.compute_infer);
        self.compute_output.record(t.compute_output);
        self.prom
            .triton
            .record_phases(t.queue, t.compute_input, t.compute_infer, t.compute_output);
    }

    /// Triton's `ModelStatistics` message.
    pub fn to_proto(&self, name: &str, version: &str) -> ModelStatistics {
        let sd = |count: u64, ns: u64| Some(StatisticDuration { count, ns });
        let batch_stats = self
            .batches
            .lock()
            .iter()
            .map(|(&size, r)| InferBatchStatistics {
                batch_size: size,
                compute_input: sd(r.count, r.input_ns),
                compute_infer: sd(r.count, r.infer_ns),
                compute_output: sd(r.count, r.output_ns),
            })
            .collect();
        ModelStatistics {
            name: name.to_string(),
            version: version.to_string(),
            last_inference: self.last_inference_ms.load(Ordering::Relaxed),
            inference_count: self.inference_count.get(),
            execution_count: self.execution_count.get(),
            inference_stats: Some(InferStatistics {
                success: Some(self.success.proto()),
                fail: Some(self.fail.proto()),
                queue: Some(self.queue.proto()),
                compute_input: Some(self.compute_input.proto()),
                compute_infer: Some(self.compute_infer.proto()),
                compute_output: Some(self.compute_output.proto()),
                cache_hit: Some(StatisticDuration::default()),
                cache_miss: Some(StatisticDuration::default()),
            }),
            batch_stats,
            ..Default::default()
        }
    }
}
