//! Prometheus metrics: names in one place, described once, units in the
//! names, bounded labels only (model, version, protocol, outcome, reason,
//! state). Handles are created once per model version so the request path
//! does no label hashing.
//!
//! The recorder is process-wide: [`install_with`] installs it once, and the
//! first call's [`MetricsSettings`] win for the life of the process (tests
//! that start several servers in one process share one recorder and one
//! bucket layout).

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::ErrorKind;

/// Requests by outcome (`success`, or the error table's label).
pub const REQUESTS: &str = "switchyard_inference_requests_total";
/// Server time of each request, from decode to reply.
pub const REQUEST_DURATION: &str = "switchyard_request_duration_seconds";
/// Time in the batch queue.
pub const QUEUE_DURATION: &str = "switchyard_queue_duration_seconds";
/// Building a batch's input tensors, per batch.
pub const COMPUTE_INPUT_DURATION: &str = "switchyard_compute_input_duration_seconds";
/// Session run time per batch.
pub const COMPUTE_INFER_DURATION: &str = "switchyard_compute_infer_duration_seconds";
/// Splitting a batch's outputs, per batch.
pub const COMPUTE_OUTPUT_DURATION: &str = "switchyard_compute_output_duration_seconds";
/// Rows per executed batch.
pub const BATCH_SIZE: &str = "switchyard_batch_size";
/// Rows of a batch over the version's `max_batch_size`.
pub const BATCH_FILL_RATIO: &str = "switchyard_batch_fill_ratio";
/// Rows computed.
pub const INFERENCES: &str = "switchyard_inferences_total";
/// Batches executed.
pub const EXECUTIONS: &str = "switchyard_executions_total";
/// Requests that left the queue without being computed, by reason.
pub const DROPPED: &str = "switchyard_dropped_requests_total";
/// Requests waiting in a version's queue.
pub const QUEUE_DEPTH: &str = "switchyard_queue_depth";
/// Requests a version's queue holds at most (all priority levels).
pub const QUEUE_CAPACITY: &str = "switchyard_queue_capacity";
/// Requests of a version between routing and reply.
pub const INFLIGHT: &str = "switchyard_inflight_requests";
/// 1 per loaded model version.
pub const MODEL_READY: &str = "switchyard_model_ready";
/// One-hot state of a model version (`state` = LOADING, READY or UNAVAILABLE).
pub const MODEL_STATE: &str = "switchyard_model_state";
/// Time to load a model version.
pub const MODEL_LOAD_DURATION: &str = "switchyard_model_load_duration_seconds";
/// Executor-thread CPU time spent in session runs.
pub const COMPUTE_CPU: &str = "switchyard_compute_cpu_seconds_total";
/// Time executors waited for work.
pub const EXECUTOR_IDLE: &str = "switchyard_executor_idle_seconds_total";
/// CPU time of the whole process (Prometheus' standard name).
pub const PROCESS_CPU: &str = "process_cpu_seconds_total";
/// Resident memory of the process (Prometheus' standard name).
pub const PROCESS_RSS: &str = "process_resident_memory_bytes";
/// Counter: TLS certificate reloads by `outcome` (ok, refused).
pub const TLS_RELOADS: &str = "switchyard_tls_reloads_total";
/// Gauge: open connections per listener (`listener`: http, grpc, metrics, admin).
pub const CONNECTIONS: &str = "switchyard_connections";
/// Counter: connections accepted per listener.
pub const CONNECTIONS_ACCEPTED: &str = "switchyard_connections_accepted_total";
/// Counter: connections refused or closed by a limit, by `listener` and
/// `reason` (limit, idle, handshake, accept_error).
pub const CONNECTIONS_CLOSED: &str = "switchyard_connections_closed_total";
/// Counter: requests refused by an API group's access check, by `protocol`,
/// `group` (health, metadata, inference, …) and `reason` (missing_header,
/// wrong_header, missing_token, invalid_token).
pub const AUTH_FAILURES: &str = "switchyard_auth_failures_total";

/// Triton's names, exported as well with `--metrics-triton-names` (labels `model`, `version`).
pub mod triton {
    /// Successful requests.
    pub const REQUEST_SUCCESS: &str = "nv_inference_request_success";
    /// Failed requests.
    pub const REQUEST_FAILURE: &str = "nv_inference_request_failure";
    /// Rows computed.
    pub const INFERENCE_COUNT: &str = "nv_inference_count";
    /// Batches executed.
    pub const EXEC_COUNT: &str = "nv_inference_exec_count";
    /// Cumulative request time, µs.
    pub const REQUEST_DURATION_US: &str = "nv_inference_request_duration_us";
    /// Cumulative queue time, µs.
    pub const QUEUE_DURATION_US: &str = "nv_inference_queue_duration_us";
    /// Cumulative input preparation time, µs.
    pub const COMPUTE_INPUT_DURATION_US: &str = "nv_inference_compute_input_duration_us";
    /// Cumulative session run time, µs.
    pub const COMPUTE_INFER_DURATION_US: &str = "nv_inference_compute_infer_duration_us";
    /// Cumulative output preparation time, µs.
    pub const COMPUTE_OUTPUT_DURATION_US: &str = "nv_inference_compute_output_duration_us";
    /// Requests waiting for execution.
    pub const PENDING_REQUEST_COUNT: &str = "nv_inference_pending_request_count";
}

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

/// The settings the recorder was installed with (first install wins).
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
                .expect("bucket lists are non-empty");
            let _ = SETTINGS.set(settings);
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Histogram samples buffer in the recorder until drained; without a
            // scrape they would grow with every request. Drain them periodically.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("sy-metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(1));
                        upkeep.run_upkeep();
                        update_process_metrics();
                    }
                });
            // Another recorder may already be installed (embedding, tests):
            // then this handle renders nothing, which is harmless.
            let _ = metrics::set_global_recorder(recorder);
            describe_all();
            MetricsHandle { inner: handle }
        })
        .clone()
}

fn describe_all() {
    describe_counter!(REQUESTS, "Inference requests by model, version, protocol and outcome.");
    describe_histogram!(REQUEST_DURATION, Unit::Seconds, "Server time per inference request.");
    describe_histogram!(QUEUE_DURATION, Unit::Seconds, "Time requests wait in the batch queue.");
    describe_histogram!(
        COMPUTE_INPUT_DURATION,
        Unit::Seconds,
        "Time to build a batch's input tensors, per batch."
    );
    describe_histogram!(COMPUTE_INFER_DURATION, Unit::Seconds, "Session run time per batch.");
    describe_histogram!(
        COMPUTE_OUTPUT_DURATION,
        Unit::Seconds,
        "Time to split a batch's outputs per request, per batch."
    );
    describe_histogram!(BATCH_SIZE, "Rows per executed batch.");
    describe_histogram!(
        BATCH_FILL_RATIO,
        "Rows per executed batch over the version's max_batch_size (batching models only)."
    );
    describe_counter!(INFERENCES, "Rows computed.");
    describe_counter!(EXECUTIONS, "Batches executed.");
    describe_counter!(
        DROPPED,
        "Requests not computed: queue_full (refused), cancelled (caller gone), timeout (queue deadline)."
    );
    describe_gauge!(QUEUE_DEPTH, "Requests waiting in the batch queue of a model version.");
    describe_gauge!(
        QUEUE_CAPACITY,
        "Requests the batch queue of a model version holds at most, all priority levels together."
    );
    describe_gauge!(INFLIGHT, "Requests of a model version between routing and reply.");
    describe_gauge!(CONNECTIONS, "Open client connections per listener.");
    describe_counter!(
        TLS_RELOADS,
        "TLS certificate reloads after the files changed: ok, or refused (the previous certificate keeps serving)."
    );
    describe_counter!(CONNECTIONS_ACCEPTED, "Client connections accepted per listener.");
    describe_counter!(
        CONNECTIONS_CLOSED,
        "Connections refused or closed by the server: limit (over --max-connections), idle \
         (--connection-idle-timeout-secs), handshake (TLS failed or too slow), accept_error (e.g. out of file descriptors)."
    );
    describe_counter!(
        AUTH_FAILURES,
        "Requests refused by an API group's access check (--http-restricted-api, --grpc-restricted-protocol, \
         --api-token-file), by protocol, group and reason (missing_header, wrong_header, missing_token, invalid_token)."
    );
    describe_gauge!(MODEL_READY, "1 while a model version is loaded and serving.");
    describe_gauge!(
        MODEL_STATE,
        "1 for the current state of a model version (LOADING, READY, UNAVAILABLE), 0 for the others."
    );
    describe_histogram!(MODEL_LOAD_DURATION, Unit::Seconds, "Time to load a model version.");
    describe_gauge!(
        COMPUTE_CPU,
        Unit::Seconds,
        "Executor-thread CPU seconds spent in session runs (a counter; excludes ONNX Runtime's intra-op pool threads)."
    );
    describe_gauge!(
        EXECUTOR_IDLE,
        Unit::Seconds,
        "Seconds executor threads waited for work, summed over a version's executors (a counter)."
    );
    describe_gauge!(
        PROCESS_CPU,
        Unit::Seconds,
        "Total user and system CPU time of the process (a counter)."
    );
    describe_gauge!(PROCESS_RSS, Unit::Bytes, "Resident memory of the process.");
    if triton_names() {
        use triton::*;
        describe_counter!(
            REQUEST_SUCCESS,
            "Number of successful inference requests (Triton's name)."
        );
        describe_counter!(REQUEST_FAILURE, "Number of failed inference requests (Triton's name).");
        describe_counter!(INFERENCE_COUNT, "Number of inferences performed, rows (Triton's name).");
        describe_counter!(EXEC_COUNT, "Number of batch executions (Triton's name).");
        describe_counter!(
            REQUEST_DURATION_US,
            Unit::Microseconds,
            "Cumulative successful request time in microseconds (Triton's name)."
        );
        describe_counter!(
            QUEUE_DURATION_US,
            Unit::Microseconds,
            "Cumulative queue time in microseconds (Triton's name)."
        );
        describe_counter!(
            COMPUTE_INPUT_DURATION_US,
            Unit::Microseconds,
            "Cumulative compute input time in microseconds, per request (Triton's name)."
        );
        describe_counter!(
            COMPUTE_INFER_DURATION_US,
            Unit::Microseconds,
            "Cumulative compute infer time in microseconds, per request (Triton's name)."
        );
        describe_counter!(
            COMPUTE_OUTPUT_DURATION_US,
            Unit::Microseconds,
            "Cumulative compute output time in microseconds, per request (Triton's name)."
        );
        describe_gauge!(PENDING_REQUEST_COUNT, "Requests awaiting execution (Triton's name).");
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

/// `VmRSS` of `/proc/self/status`, in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A counter of Triton's when `--metrics-triton-names` is on, a no-op otherwise.
fn triton_counter(name: &'static str, model: &str, version: &str) -> Counter {
    if triton_names() {
        metrics::counter!(name, "model" => model.to_string(), "version" => version.to_string())
    } else {
        Counter::noop()
    }
}

/// Cumulative microseconds of `d`, for Triton's `*_duration_us` counters.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Lifecycle state of a model version, for `switchyard_model_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelState {
    /// Being loaded.
    Loading,
    /// Loaded and serving.
    Ready,
    /// Not serving: unloaded, or its load failed.
    Unavailable,
}

impl ModelState {
    const ALL: [ModelState; 3] = [ModelState::Loading, ModelState::Ready, ModelState::Unavailable];

    /// The `state` label value (the repository index's spelling).
    pub fn label(self) -> &'static str {
        match self {
            ModelState::Loading => "LOADING",
            ModelState::Ready => "READY",
            ModelState::Unavailable => "UNAVAILABLE",
        }
    }
}

/// Sets `switchyard_model_state{model,version,state}`: 1 for `state`, 0 for
/// the others, and `switchyard_model_ready` (1 only while READY). Called where
/// a version is published, retired or starts loading — never from object
/// lifetimes, so a version warming up reads 0 and a reload that replaces (or
/// fails to replace) a serving version does not zero it.
pub fn model_state(model: &str, version: &str, state: ModelState) {
    let ready = if state == ModelState::Ready { 1.0 } else { 0.0 };
    metrics::gauge!(MODEL_READY, "model" => model.to_string(), "version" => version.to_string()).set(ready);
    for s in ModelState::ALL {
        let value = if s == state { 1.0 } else { 0.0 };
        metrics::gauge!(MODEL_STATE, "model" => model.to_string(), "version" => version.to_string(),
            "state" => s.label())
        .set(value);
    }
}

/// Records how long loading `model`/`version` took (the histogram carries the model label only).
pub fn load_duration(model: &str, version: &str, seconds: f64) {
    tracing::debug!(model, version, seconds, "model version load time recorded");
    metrics::histogram!(MODEL_LOAD_DURATION, "model" => model.to_string()).record(seconds);
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
    /// The metric label value: `"http"` or `"grpc"`.
    pub fn label(self) -> &'static str {
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
    inflight: Gauge,
    nv_success: Counter,
    nv_failure: Counter,
    nv_request_us: Counter,
}

/// Counts a request as in flight until dropped (see [`VersionMetrics::start_request`]).
#[derive(Debug)]
#[must_use = "the request counts as in flight only while the guard lives"]
pub struct InflightGuard<'a> {
    gauge: &'a Gauge,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
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
        VersionMetrics {
            success: [http_ok, grpc_ok],
            duration: [http_d, grpc_d],
            inflight: metrics::gauge!(INFLIGHT, "model" => m.clone(), "version" => v.clone()),
            nv_success: triton_counter(triton::REQUEST_SUCCESS, model, version),
            nv_failure: triton_counter(triton::REQUEST_FAILURE, model, version),
            nv_request_us: triton_counter(triton::REQUEST_DURATION_US, model, version),
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

    /// Counts a routed request as in flight until the returned guard drops.
    pub fn start_request(&self) -> InflightGuard<'_> {
        self.inflight.increment(1.0);
        InflightGuard { gauge: &self.inflight }
    }

    /// Records a successful request.
    pub fn success(&self, p: Protocol, seconds: f64) {
        self.success[Self::index(p)].increment(1);
        self.duration[Self::index(p)].record(seconds);
        self.nv_success.increment(1);
        self.nv_request_us
            .increment(micros(Duration::from_secs_f64(seconds.max(0.0))));
    }

    /// Records a failed request (rare path: the handle is looked up by label).
    pub fn failure(&self, p: Protocol, kind: ErrorKind, seconds: f64) {
        metrics::counter!(REQUESTS, "model" => self.model.clone(), "version" => self.version.clone(),
            "protocol" => p.label(), "outcome" => kind.mapping().label)
        .increment(1);
        self.duration[Self::index(p)].record(seconds);
        self.nv_failure.increment(1);
    }
}

/// Records a request that failed before reaching a model version (unknown model, bad request).
pub fn unrouted_failure(p: Protocol, kind: ErrorKind) {
    metrics::counter!(REQUESTS, "model" => "", "version" => "", "protocol" => p.label(),
        "outcome" => kind.mapping().label)
    .increment(1);
}

/// Counts a request refused by the access check of API `group`.
pub fn auth_failure(p: Protocol, group: &'static str, reason: &'static str) {
    metrics::counter!(AUTH_FAILURES, "protocol" => p.label(), "group" => group, "reason" => reason).increment(1);
}

/// Handles updated by the executors, once per batch or per request.
#[derive(Debug)]
pub struct ExecutionMetrics {
    /// Queue time per request.
    pub queue: Histogram,
    /// Input preparation time per batch.
    pub compute_input: Histogram,
    /// Session run time per batch.
    pub compute_infer: Histogram,
    /// Output preparation time per batch.
    pub compute_output: Histogram,
    /// Rows per batch.
    pub batch_size: Histogram,
    /// Rows per batch over max_batch_size.
    pub fill_ratio: Histogram,
    /// Rows computed.
    pub inferences: Counter,
    /// Batches run.
    pub executions: Counter,
    /// Executor CPU seconds in session runs (a float counter kept in a gauge).
    pub compute_cpu: Gauge,
    /// Executor seconds spent waiting for work (a float counter kept in a gauge).
    pub executor_idle: Gauge,
    /// Requests waiting.
    pub queue_depth: Gauge,
    /// Requests the queue holds at most.
    pub queue_capacity: Gauge,
    /// Refused because the queue was full.
    pub queue_full: Counter,
    /// Dropped because the caller went away.
    pub cancelled: Counter,
    /// Dropped because the queue deadline passed.
    pub timed_out: Counter,
    /// Triton's names (no-ops unless `--metrics-triton-names`).
    pub triton: TritonExecutionMetrics,
}

/// Triton-named handles updated by the executors.
#[derive(Debug)]
pub struct TritonExecutionMetrics {
    /// `nv_inference_count`.
    pub inference_count: Counter,
    /// `nv_inference_exec_count`.
    pub exec_count: Counter,
    /// `nv_inference_queue_duration_us`.
    pub queue_us: Counter,
    /// `nv_inference_compute_input_duration_us`.
    pub compute_input_us: Counter,
    /// `nv_inference_compute_infer_duration_us`.
    pub compute_infer_us: Counter,
    /// `nv_inference_compute_output_duration_us`.
    pub compute_output_us: Counter,
    /// `nv_inference_pending_request_count`.
    pub pending: Gauge,
}

impl Default for TritonExecutionMetrics {
    fn default() -> Self {
        TritonExecutionMetrics {
            inference_count: Counter::noop(),
            exec_count: Counter::noop(),
            queue_us: Counter::noop(),
            compute_input_us: Counter::noop(),
            compute_infer_us: Counter::noop(),
            compute_output_us: Counter::noop(),
            pending: Gauge::noop(),
        }
    }
}

impl TritonExecutionMetrics {
    fn new(model: &str, version: &str) -> TritonExecutionMetrics {
        if !triton_names() {
            return TritonExecutionMetrics::default();
        }
        TritonExecutionMetrics {
            inference_count: triton_counter(triton::INFERENCE_COUNT, model, version),
            exec_count: triton_counter(triton::EXEC_COUNT, model, version),
            queue_us: triton_counter(triton::QUEUE_DURATION_US, model, version),
            compute_input_us: triton_counter(triton::COMPUTE_INPUT_DURATION_US, model, version),
            compute_infer_us: triton_counter(triton::COMPUTE_INFER_DURATION_US, model, version),
            compute_output_us: triton_counter(triton::COMPUTE_OUTPUT_DURATION_US, model, version),
            pending: metrics::gauge!(triton::PENDING_REQUEST_COUNT, "model" => model.to_string(),
                "version" => version.to_string()),
        }
    }

    /// Adds one request's phase times, in microseconds.
    pub fn record_phases(&self, queue: Duration, input: Duration, infer: Duration, output: Duration) {
        self.queue_us.increment(micros(queue));
        self.compute_input_us.increment(micros(input));
        self.compute_infer_us.increment(micros(infer));
        self.compute_output_us.increment(micros(output));
    }
}

impl Default for ExecutionMetrics {
    fn default() -> Self {
        ExecutionMetrics {
            queue: Histogram::noop(),
            compute_input: Histogram::noop(),
            compute_infer: Histogram::noop(),
            compute_output: Histogram::noop(),
            batch_size: Histogram::noop(),
            fill_ratio: Histogram::noop(),
            inferences: Counter::noop(),
            executions: Counter::noop(),
            compute_cpu: Gauge::noop(),
            executor_idle: Gauge::noop(),
            queue_depth: Gauge::noop(),
            queue_capacity: Gauge::noop(),
            queue_full: Counter::noop(),
            cancelled: Counter::noop(),
            timed_out: Counter::noop(),
            triton: TritonExecutionMetrics::default(),
        }
    }
}

impl ExecutionMetrics {
    /// Registers the handles of `model`/`version`.
    pub fn new(model: &str, version: &str) -> ExecutionMetrics {
        let labels = [("model", model.to_string()), ("version", version.to_string())];
        ExecutionMetrics {
            queue: metrics::histogram!(QUEUE_DURATION, &labels),
            compute_input: metrics::histogram!(COMPUTE_INPUT_DURATION, &labels),
            compute_infer: metrics::histogram!(COMPUTE_INFER_DURATION, &labels),
            compute_output: metrics::histogram!(COMPUTE_OUTPUT_DURATION, &labels),
            batch_size: metrics::histogram!(BATCH_SIZE, &labels),
            fill_ratio: metrics::histogram!(BATCH_FILL_RATIO, &labels),
            inferences: metrics::counter!(INFERENCES, &labels),
            executions: metrics::counter!(EXECUTIONS, &labels),
            compute_cpu: metrics::gauge!(COMPUTE_CPU, &labels),
            executor_idle: metrics::gauge!(EXECUTOR_IDLE, &labels),
            queue_depth: metrics::gauge!(QUEUE_DEPTH, &labels),
            queue_capacity: metrics::gauge!(QUEUE_CAPACITY, &labels),
            queue_full: metrics::counter!(DROPPED, "model" => model.to_string(), "version" => version.to_string(), "reason" => "queue_full"),
            cancelled: metrics::counter!(DROPPED, "model" => model.to_string(), "version" => version.to_string(), "reason" => "cancelled"),
            timed_out: metrics::counter!(DROPPED, "model" => model.to_string(), "version" => version.to_string(), "reason" => "timeout"),
            triton: TritonExecutionMetrics::new(model, version),
        }
    }
}

/// CPU time of the calling thread, for per-batch compute accounting
/// (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`; `None` where unsupported).
pub fn thread_cpu_time() -> Option<Duration> {
    cpu_time::ThreadTime::try_now().ok().map(|t| t.as_duration())
}

/// Counter: versions refused by the deploy pipeline, by `model` and `reason`
/// (the failure kind's label: read, config, model, build, warmup, golden,
/// budget, drift_reference, resources).
pub const MODEL_LOAD_FAILURES: &str = "switchyard_model_load_failures_total";

/// Counts one version refused by the deploy pipeline.
pub fn load_failure(model: &str, reason: &'static str) {
    metrics::counter!(MODEL_LOAD_FAILURES, "model" => model.to_string(), "reason" => reason).increment(1);
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
