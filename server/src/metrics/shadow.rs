//! Metrics of shadow mirroring, by the primary's `model` (and the output's
//! name, from the model's signature): bounded labels only. Request ids of
//! divergent pairs are in the report endpoint, never in labels.

use metrics::{Unit, describe_counter, describe_histogram};

/// Counter: mirrored pairs finished, by `outcome` (match, mismatch,
/// shadow_error, primary_error, both_error).
pub const SHADOW_PAIRS: &str = "switchyard_shadow_pairs_total";
/// Counter: copies not mirrored or not compared, by `reason` (in_flight,
/// load, deadline, unavailable, signature, same_target).
pub const SHADOW_DROPPED: &str = "switchyard_shadow_dropped_total";
/// Counter: output comparisons of pairs both sides answered, by `output` and
/// `result` (match, mismatch, shape, datatype, missing).
pub const SHADOW_OUTPUTS: &str = "switchyard_shadow_output_comparisons_total";
/// Counter: elements compared, by `output` and `result` (exact,
/// within_tolerance for the inexact ones inside it, outside_tolerance).
pub const SHADOW_ELEMENTS: &str = "switchyard_shadow_elements_total";
/// Histogram: the largest absolute difference of an output in a pair.
pub const SHADOW_MAX_ABS: &str = "switchyard_shadow_max_abs_difference";
/// Counter: rows whose top-k classes were compared, by `output` and
/// `result` (agree, disagree).
pub const SHADOW_TOP_K: &str = "switchyard_shadow_top_k_rows_total";
/// Histogram: latency of each side of a compared pair, by `side` (primary:
/// receipt to answer; shadow: submission to answer).
pub const SHADOW_LATENCY: &str = "switchyard_shadow_latency_seconds";

/// Buckets of [`SHADOW_MAX_ABS`]: decades from 1e-9 to 1e3.
pub const DIFF_BUCKETS: &[f64] = &[
    1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0,
];

pub(super) fn describe() {
    describe_counter!(
        SHADOW_PAIRS,
        "Mirrored request pairs finished, by the primary's model and outcome."
    );
    describe_counter!(
        SHADOW_DROPPED,
        "Shadow copies not mirrored or not compared, by reason (in_flight, load, deadline, unavailable, signature, same_target)."
    );
    describe_counter!(
        SHADOW_OUTPUTS,
        "Output comparisons of pairs both sides answered, by output and result (match, mismatch, shape, datatype, missing)."
    );
    describe_counter!(
        SHADOW_ELEMENTS,
        "Output elements compared, by result (exact, within_tolerance, outside_tolerance)."
    );
    describe_histogram!(
        SHADOW_MAX_ABS,
        "Largest absolute difference between the shadow's and the primary's output, per pair."
    );
    describe_counter!(
        SHADOW_TOP_K,
        "Rows of classifier outputs whose top-k classes were compared, by result (agree, disagree)."
    );
    describe_histogram!(
        SHADOW_LATENCY,
        Unit::Seconds,
        "Latency of the primary and the shadow of compared pairs, by side."
    );
}

/// A copy not mirrored or not compared.
pub fn shadow_dropped(model: &str, reason: &'static str) {
    metrics::counter!(SHADOW_DROPPED, "model" => model.to_string(), "reason" => reason).increment(1);
}

/// A finished pair; the latencies only for pairs both sides answered.
pub fn shadow_pair(model: &str, outcome: &'static str, latencies: Option<(f64, f64)>) {
    metrics::counter!(SHADOW_PAIRS, "model" => model.to_string(), "outcome" => outcome).increment(1);
    if let Some((primary, shadow)) = latencies {
        metrics::histogram!(SHADOW_LATENCY, "model" => model.to_string(), "side" => "primary").record(primary);
        metrics::histogram!(SHADOW_LATENCY, "model" => model.to_string(), "side" => "shadow").record(shadow);
    }
}

/// How one output of a pair compared.
#[derive(Debug, Clone, Copy)]
pub struct OutputCounts {
    /// match, mismatch, shape, datatype or missing.
    pub result: &'static str,
    /// Elements equal.
    pub exact: u64,
    /// Elements inexact but within the tolerance.
    pub within: u64,
    /// Elements outside the tolerance.
    pub outside: u64,
    /// Largest absolute difference, when elements were compared.
    pub max_abs: Option<f64>,
    /// Top-k rows that agree and that do not.
    pub top_k: (u64, u64),
}

/// One output of a pair both sides answered.
pub fn shadow_output(model: &str, output: &str, c: &OutputCounts) {
    let (m, o) = (model.to_string(), output.to_string());
    metrics::counter!(SHADOW_OUTPUTS, "model" => m.clone(), "output" => o.clone(), "result" => c.result).increment(1);
    for (result, n) in [
        ("exact", c.exact),
        ("within_tolerance", c.within),
        ("outside_tolerance", c.outside),
    ] {
        if n > 0 {
            metrics::counter!(SHADOW_ELEMENTS, "model" => m.clone(), "output" => o.clone(), "result" => result)
                .increment(n);
        }
    }
    if let Some(d) = c.max_abs {
        metrics::histogram!(SHADOW_MAX_ABS, "model" => m.clone(), "output" => o.clone()).record(d);
    }
    for (result, n) in [("agree", c.top_k.0), ("disagree", c.top_k.1)] {
        if n > 0 {
            metrics::counter!(SHADOW_TOP_K, "model" => m.clone(), "output" => o.clone(), "result" => result)
                .increment(n);
        }
    }
}
