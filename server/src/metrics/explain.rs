//! Metrics of explanations (`POST /v2/models/{m}/explain`), by `model`,
//! `method` and `outcome`: bounded labels only. Their rows are background
//! work, kept out of the request metrics and Triton's statistics.

use metrics::describe_counter;

/// Counter: explanation calls finished, by `method` (occlusion, shapley,
/// unknown) and `outcome` (success, busy, over_budget, no_reference, or the
/// error table's label: invalid_argument, timeout, unavailable, ...).
pub const EXPLANATIONS: &str = "switchyard_explanations_total";
/// Counter: rows evaluated for explanations (perturbed copies of the
/// explained row, the row itself and its reference).
pub const EXPLANATION_EVALUATIONS: &str = "switchyard_explanation_evaluations_total";

pub(super) fn describe() {
    describe_counter!(
        EXPLANATIONS,
        "Explanation calls finished, by model, method and outcome (success, busy, over_budget, no_reference, or an error label)."
    );
    describe_counter!(
        EXPLANATION_EVALUATIONS,
        "Rows evaluated by the model for explanations, by model."
    );
}

/// One finished explanation call.
pub fn explanation(model: &str, method: &'static str, outcome: &'static str) {
    metrics::counter!(EXPLANATIONS, "model" => model.to_string(), "method" => method, "outcome" => outcome)
        .increment(1);
}

/// `rows` rows evaluated for an explanation of `model`.
pub fn explanation_evaluations(model: &str, rows: u64) {
    metrics::counter!(EXPLANATION_EVALUATIONS, "model" => model.to_string()).increment(rows);
}
