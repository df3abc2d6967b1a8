//! Every metric name the server exports, each described once
//! ([`describe_all`], run when the recorder is installed). Units are in the
//! names; labels are bounded (model, version, protocol, outcome, reason,
//! state, listener, tensor, feature, sink, traffic).

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Requests by outcome (`success`, or the error table's label) and `traffic`
/// (`production`, or `shadow` for mirrored requests).
pub const REQUESTS: &str = "switchyard_inference_requests_total";
/// Server time of each request, from decode to reply, by `traffic` too.
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
/// Versions refused by the deploy pipeline, by `model` and `reason`.
pub const MODEL_LOAD_FAILURES: &str = "switchyard_model_load_failures_total";
/// Routing decisions of requests, by `model`, `target` (version) and `reason`.
pub const ROUTING_DECISIONS: &str = "switchyard_routing_decisions_total";
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

/// PSI of the reported window against the reference, per tensor and feature (`argmax` for classes).
pub const DRIFT_PSI: &str = "switchyard_drift_psi";
/// 1 while any PSI of a model version is at or above its threshold, else 0.
pub const DRIFT_ALERT: &str = "switchyard_drift_alert";
/// Samples not analysed because the drift queue was full.
pub const DRIFT_DROPPED: &str = "switchyard_drift_dropped_total";
/// Mean of a feature's finite values in the reported window.
pub const TENSOR_MEAN: &str = "switchyard_tensor_mean";
/// Population standard deviation of a feature's finite values in the reported window.
pub const TENSOR_STD: &str = "switchyard_tensor_std";
/// Smallest finite value of a feature in the reported window.
pub const TENSOR_MIN: &str = "switchyard_tensor_min";
/// Largest finite value of a feature in the reported window.
pub const TENSOR_MAX: &str = "switchyard_tensor_max";
/// NaN (`kind="nan"`) and ±Inf (`kind="inf"`) elements seen in a tensor.
pub const TENSOR_NONFINITE: &str = "switchyard_tensor_nonfinite_total";
/// Counter: prediction-log records handed to a sink successfully, by `sink` (`file`, `http`).
pub const PREDLOG_RECORDS: &str = "switchyard_prediction_log_records_total";
/// Counter: prediction-log records not logged, by `reason` (`queue_full`, `sink_error`).
pub const PREDLOG_DROPPED: &str = "switchyard_prediction_log_dropped_total";
/// Trace spans dropped (queue full or export failed), by `reason`.
pub const OTLP_DROPPED: &str = "switchyard_otlp_dropped_spans_total";
/// Trace spans exported.
pub const OTLP_EXPORTED: &str = "switchyard_otlp_exported_spans_total";

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

/// Describes every metric to the installed recorder (Triton's names only
/// when they are exported).
pub(super) fn describe_all(triton_names: bool) {
    describe_counter!(
        REQUESTS,
        "Inference requests by model, version, protocol, outcome and traffic (production, or shadow for mirrored requests)."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Server time per inference request, by traffic (production, shadow)."
    );
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
    describe_counter!(
        MODEL_LOAD_FAILURES,
        "Versions refused by the deploy pipeline, by model and reason (read, config, model, build, warmup, golden, \
         budget, drift_reference, resources)."
    );
    describe_counter!(
        ROUTING_DECISIONS,
        "Requests routed, by model, target version and reason (explicit, no_policy, policy_default, canary, \
         fallback)."
    );
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
    describe_gauge!(
        DRIFT_PSI,
        "Population stability index of a tensor feature (or argmax class distribution) against the reference."
    );
    describe_gauge!(
        DRIFT_ALERT,
        "1 while any drift PSI of a model version is at or above its threshold."
    );
    describe_counter!(
        DRIFT_DROPPED,
        "Drift samples dropped because the analysis queue was full."
    );
    describe_gauge!(
        TENSOR_MEAN,
        "Mean of a tensor feature's finite values in the drift window."
    );
    describe_gauge!(
        TENSOR_STD,
        "Standard deviation of a tensor feature's finite values in the drift window."
    );
    describe_gauge!(
        TENSOR_MIN,
        "Smallest finite value of a tensor feature in the drift window."
    );
    describe_gauge!(
        TENSOR_MAX,
        "Largest finite value of a tensor feature in the drift window."
    );
    describe_counter!(TENSOR_NONFINITE, "NaN and infinite elements seen in a tensor, by kind.");
    describe_counter!(
        PREDLOG_RECORDS,
        "Prediction-log records handed to a sink, by sink (file, http)."
    );
    describe_counter!(
        PREDLOG_DROPPED,
        "Prediction-log records not logged: queue_full (sink queue full), sink_error (write or delivery failed)."
    );
    describe_counter!(OTLP_DROPPED, "Trace spans not exported: queue_full or export_failed.");
    describe_counter!(OTLP_EXPORTED, "Trace spans exported over OTLP.");
    super::shadow::describe();
    super::quality::describe();
    super::explain::describe();
    if triton_names {
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
