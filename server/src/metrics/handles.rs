//! Metric handles of the request path and the executors, registered once
//! per model version so that recording does no label hashing, and the
//! version lifecycle gauges.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

use super::names::*;
use super::triton_names;
use crate::error::ErrorKind;

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

/// Counts one version refused by the deploy pipeline (`reason`: the failure kind's label).
pub fn load_failure(model: &str, reason: &'static str) {
    metrics::counter!(MODEL_LOAD_FAILURES, "model" => model.to_string(), "reason" => reason).increment(1);
}

/// How many route reasons a version caches the routing counter of (see
/// [`VersionMetrics::routed`]).
pub const ROUTE_REASON_SLOTS: usize = 8;

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

/// Whether a request is production traffic or a mirrored (shadow) copy of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Traffic {
    /// Real traffic, whose answers reach users.
    #[default]
    Production,
    /// A mirrored copy (Host `*-shadow`, or the `--shadow-header`): answered
    /// normally, kept out of production statistics and health.
    Shadow,
}

impl Traffic {
    /// The metric label value: `"production"` or `"shadow"`.
    pub fn label(self) -> &'static str {
        match self {
            Traffic::Production => "production",
            Traffic::Shadow => "shadow",
        }
    }

    fn index(self) -> usize {
        match self {
            Traffic::Production => 0,
            Traffic::Shadow => 1,
        }
    }
}

/// Pre-registered handles of one model version, by protocol and traffic.
#[derive(Debug)]
pub struct VersionMetrics {
    model: String,
    version: String,
    success: [[Counter; 2]; 2],
    duration: [[Histogram; 2]; 2],
    inflight: Gauge,
    nv_success: Counter,
    nv_failure: Counter,
    nv_request_us: Counter,
    /// `switchyard_routing_decisions_total{model,target=version,reason}` by
    /// reason slot, registered on first use so that a reason never taken
    /// has no series.
    routing: [OnceLock<Counter>; ROUTE_REASON_SLOTS],
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
        let success = |p: Protocol, t: Traffic| {
            metrics::counter!(REQUESTS, "model" => m.clone(), "version" => v.clone(), "protocol" => p.label(),
                "outcome" => "success", "traffic" => t.label())
        };
        let duration = |p: Protocol, t: Traffic| {
            metrics::histogram!(REQUEST_DURATION, "model" => m.clone(), "version" => v.clone(),
                "protocol" => p.label(), "traffic" => t.label())
        };
        let (http, grpc, prod, shadow) = (Protocol::Http, Protocol::Grpc, Traffic::Production, Traffic::Shadow);
        VersionMetrics {
            success: [
                [success(http, prod), success(http, shadow)],
                [success(grpc, prod), success(grpc, shadow)],
            ],
            duration: [
                [duration(http, prod), duration(http, shadow)],
                [duration(grpc, prod), duration(grpc, shadow)],
            ],
            inflight: metrics::gauge!(INFLIGHT, "model" => m.clone(), "version" => v.clone()),
            nv_success: triton_counter(triton::REQUEST_SUCCESS, model, version),
            nv_failure: triton_counter(triton::REQUEST_FAILURE, model, version),
            nv_request_us: triton_counter(triton::REQUEST_DURATION_US, model, version),
            routing: Default::default(),
            model: m,
            version: v,
        }
    }

    /// Counts one request routed to this version: `reason` is the route's
    /// label (explicit, no_policy, policy_default, canary, fallback) and
    /// `slot` its index below [`ROUTE_REASON_SLOTS`] (its own per reason).
    pub fn routed(&self, slot: usize, reason: &'static str) {
        let register = || {
            metrics::counter!(ROUTING_DECISIONS, "model" => self.model.clone(), "target" => self.version.clone(),
                "reason" => reason)
        };
        match self.routing.get(slot) {
            Some(cell) => cell.get_or_init(register).increment(1),
            None => register().increment(1),
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

    /// Records a successful request (Triton's `nv_*` counters: production only).
    pub fn success(&self, p: Protocol, t: Traffic, seconds: f64) {
        self.success[Self::index(p)][t.index()].increment(1);
        self.duration[Self::index(p)][t.index()].record(seconds);
        if t == Traffic::Production {
            self.nv_success.increment(1);
            self.nv_request_us
                .increment(micros(Duration::from_secs_f64(seconds.max(0.0))));
        }
    }

    /// Records a failed request (rare path: the handle is looked up by label;
    /// Triton's `nv_*` counter: production only).
    pub fn failure(&self, p: Protocol, t: Traffic, kind: ErrorKind, seconds: f64) {
        metrics::counter!(REQUESTS, "model" => self.model.clone(), "version" => self.version.clone(),
            "protocol" => p.label(), "outcome" => kind.mapping().label, "traffic" => t.label())
        .increment(1);
        self.duration[Self::index(p)][t.index()].record(seconds);
        if t == Traffic::Production {
            self.nv_failure.increment(1);
        }
    }
}

/// Records a request that failed before reaching a model version (unknown model, bad request).
pub fn unrouted_failure(p: Protocol, t: Traffic, kind: ErrorKind) {
    metrics::counter!(REQUESTS, "model" => "", "version" => "", "protocol" => p.label(),
        "outcome" => kind.mapping().label, "traffic" => t.label())
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
