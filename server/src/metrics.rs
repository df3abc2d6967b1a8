//! Prometheus metrics: names in one place, described once, units in the
//! names, bounded labels only (model, version, protocol, outcome, reason).
//! Handles are created once per model version so the request path does no
//! label hashing.

use std::sync::OnceLock;

use metrics::{Counter, Histogram, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::ErrorKind;

/// Requests by outcome (`success`, or the error table's label).
pub const REQUESTS: &str = "switchyard_inference_requests_total";
/// Server time of each request, from decode to reply.
pub const REQUEST_DURATION: &str = "switchyard_request_duration_seconds";
/// Time in the batch queue.
pub const QUEUE_DURATION: &str = "switchyard_queue_duration_seconds";
/// Session run time per batch.
pub const COMPUTE_INFER_DURATION: &str = "switchyard_compute_infer_duration_seconds";
/// Rows per executed batch.
pub const BATCH_SIZE: &str = "switchyard_batch_size";
/// Rows computed.
pub const INFERENCES: &str = "switchyard_inferences_total";
/// Batches executed.
pub const EXECUTIONS: &str = "switchyard_executions_total";
/// Requests that left the queue without being computed, by reason.
pub const DROPPED: &str = "switchyard_dropped_requests_total";
/// Requests waiting in a version's queue.
pub const QUEUE_DEPTH: &str = "switchyard_queue_depth";
/// 1 per loaded model version.
pub const MODEL_READY: &str = "switchyard_model_ready";

/// Latency buckets in seconds: 50 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// Installs the process-wide recorder once and returns its handle (rendered on the metrics port).
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_BUCKETS))
                .expect("bucket lists are non-empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Histogram samples buffer in the recorder until drained; without a
            // scrape they would grow with every request. Drain them periodically.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("sy-metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            // Another recorder may already be installed (embedding, tests):
            // then this handle renders nothing, which is harmless.
            let _ = metrics::set_global_recorder(recorder);
            describe_counter!(REQUESTS, "Inference requests by model, version, protocol and outcome.");
            describe_histogram!(
                REQUEST_DURATION,
                metrics::Unit::Seconds,
                "Server time per inference request."
            );
            describe_histogram!(
                QUEUE_DURATION,
                metrics::Unit::Seconds,
                "Time requests wait in the batch queue."
            );
            describe_histogram!(
                COMPUTE_INFER_DURATION,
                metrics::Unit::Seconds,
                "Session run time per batch."
            );
            describe_histogram!(BATCH_SIZE, "Rows per executed batch.");
            describe_counter!(INFERENCES, "Rows computed.");
            describe_counter!(EXECUTIONS, "Batches executed.");
            describe_counter!(
                DROPPED,
                "Requests not computed: queue_full (refused), cancelled (caller gone), timeout (queue deadline)."
            );
            describe_gauge!(QUEUE_DEPTH, "Requests waiting in the batch queue of a model version.");
            describe_gauge!(MODEL_READY, "1 while a model version is loaded and serving.");
            handle
        })
        .clone()
}

/// Which frontend a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP / REST.
    Http,
    /// gRPC.
    Grpc,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        }
    }
}

/// Pre-registered handles of one model version.
#[derive(Debug)]
pub struct VersionMetrics {
    model: String,
    version: String,
    success: [Counter; 2],
    duration: [Histogram; 2],
}

impl VersionMetrics {
    /// Registers the handles of `model`/`version`.
    pub fn new(model: &str, version: &str) -> VersionMetrics {
        let (m, v) = (model.to_string(), version.to_string());
        let per_protocol = |p: Protocol| {
            (
                metrics::counter!(REQUESTS, "model" => m.clone(), "version" => v.clone(), "protocol" => p.label(), "outcome" => "success"),
                metrics::histogram!(REQUEST_DURATION, "model" => m.clone(), "version" => v.clone(), "protocol" => p.label()),
            )
        };
        let (http_ok, http_d) = per_protocol(Protocol::Http);
        let (grpc_ok, grpc_d) = per_protocol(Protocol::Grpc);
        metrics::gauge!(MODEL_READY, "model" => m.clone(), "version" => v.clone()).set(1.0);
        VersionMetrics {
            success: [http_ok, grpc_ok],
            duration: [http_d, grpc_d],
            model: m,
            version: v,
        }
    }

    fn index(p: Protocol) -> usize {
        match p {
            Protocol::Http => 0,
            Protocol::Grpc => 1,
        }
    }

    /// Records a successful request.
    pub fn success(&self, p: Protocol, seconds: f64) {
        self.success[Self::index(p)].increment(1);
        self.duration[Self::index(p)].record(seconds);
    }

    /// Records a failed request (rare path: the handle is looked up by label).
    pub fn failure(&self, p: Protocol, kind: ErrorKind, seconds: f64) {
        metrics::counter!(REQUESTS, "model" => self.model.clone(), "version" => self.version.clone(),
            "protocol" => p.label(), "outcome" => kind.mapping().label)
        .increment(1);
        self.duration[Self::index(p)].record(seconds);
    }
}

impl Drop for VersionMetrics {
    fn drop(&mut self) {
        metrics::gauge!(MODEL_READY, "model" => self.model.clone(), "version" => self.version.clone()).set(0.0);
    }
}

/// Records a request that failed before reaching a model version (unknown model, bad request).
pub fn unrouted_failure(p: Protocol, kind: ErrorKind) {
    metrics::counter!(REQUESTS, "model" => "", "version" => "", "protocol" => p.label(),
        "outcome" => kind.mapping().label)
    .increment(1);
}

/// Handles updated by the executors, once per batch or per request.
#[derive(Debug)]
pub struct ExecutionMetrics {
    /// Queue time per request.
    pub queue: Histogram,
    /// Session run time per batch.
    pub compute_infer: Histogram,
    /// Rows per batch.
    pub batch_size: Histogram,
    /// Rows computed.
    pub inferences: Counter,
    /// Batches run.
    pub executions: Counter,
    /// Requests waiting.
    pub queue_depth: metrics::Gauge,
    /// Refused because the queue was full.
    pub queue_full: Counter,
    /// Dropped because the caller went away.
    pub cancelled: Counter,
    /// Dropped because the queue deadline passed.
    pub timed_out: Counter,
}

impl Default for ExecutionMetrics {
    fn default() -> Self {
        ExecutionMetrics {
            queue: Histogram::noop(),
            compute_infer: Histogram::noop(),
            batch_size: Histogram::noop(),
            inferences: Counter::noop(),
            executions: Counter::noop(),
            queue_depth: metrics::Gauge::noop(),
            queue_full: Counter::noop(),
            cancelled: Counter::noop(),
            timed_out: Counter::noop(),
        }
    }
}

impl ExecutionMetrics {
    /// Registers the handles of `model`/`version`.
    pub fn new(model: &str, version: &str) -> ExecutionMetrics {
        let labels = [("model", model.to_string()), ("version", version.to_string())];
        ExecutionMetrics {
            queue: metrics::histogram!(QUEUE_DURATION, &labels),
            compute_infer: metrics::histogram!(COMPUTE_INFER_DURATION, &labels),
            batch_size: metrics::histogram!(BATCH_SIZE, &labels),
            inferences: metrics::counter!(INFERENCES, &labels),
            executions: metrics::counter!(EXECUTIONS, &labels),
            queue_depth: metrics::gauge!(QUEUE_DEPTH, &labels),
            queue_full: metrics::counter!(DROPPED, "model" => model.to_string(), "version" => version.to_string(), "reason" => "queue_full"),
            cancelled: metrics::counter!(DROPPED, "model" => model.to_string(), "version" => version.to_string(), "reason" => "cancelled"),
            timed_out: metrics::counter!(DROPPED, "model" => model.to_string(), "version" => version.to_string(), "reason" => "timeout"),
        }
    }
}
