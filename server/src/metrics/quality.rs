//! Metrics of live quality and fairness, by `model` and `version` (plus
//! `class` up to 32 classes, `metric`, or the fairness `group`, capped by
//! `fairness.max_groups`): bounded labels only. Request ids are never labels.

use metrics::{describe_counter, describe_gauge};

/// Gauge: labelled rows in a version's quality window.
pub const QUALITY_LABELLED: &str = "switchyard_quality_labelled_rows";
/// Gauge: accuracy over the window (classifiers).
pub const QUALITY_ACCURACY: &str = "switchyard_quality_accuracy";
/// Gauge: precision per `class` over the window.
pub const QUALITY_PRECISION: &str = "switchyard_quality_precision";
/// Gauge: recall per `class` over the window.
pub const QUALITY_RECALL: &str = "switchyard_quality_recall";
/// Gauge: expected calibration error over the window (probability outputs).
pub const QUALITY_CALIBRATION: &str = "switchyard_quality_calibration_error";
/// Gauge: mean absolute error over the window (regressors).
pub const QUALITY_MAE: &str = "switchyard_quality_mean_absolute_error";
/// Gauge: root mean squared error over the window (regressors).
pub const QUALITY_RMSE: &str = "switchyard_quality_root_mean_squared_error";
/// Gauge: 1 while a quality threshold is crossed, by `metric`.
pub const QUALITY_ALERT: &str = "switchyard_quality_alert";
/// Counter: finished requests not kept for joining, by `reason` (queue_full).
pub const QUALITY_DROPPED: &str = "switchyard_quality_dropped_total";
/// Counter: feedback entries, by `outcome` (joined, unknown, expired,
/// duplicate, rows_mismatch, retired).
pub const FEEDBACK: &str = "switchyard_feedback_total";
/// Gauge: predictions kept in the feedback store.
pub const STORE_RECORDS: &str = "switchyard_feedback_store_records";
/// Gauge: rows predicted per `group` in the fairness window.
pub const FAIRNESS_ROWS: &str = "switchyard_fairness_rows";
/// Gauge: favourable-outcome rate per `group`.
pub const FAIRNESS_RATE: &str = "switchyard_fairness_favourable_rate";
/// Gauge: statistical parity difference per `group` (its rate minus the reference's).
pub const FAIRNESS_SPD: &str = "switchyard_fairness_statistical_parity_difference";
/// Gauge: disparate impact ratio per `group` (its rate over the reference's).
pub const FAIRNESS_DIR: &str = "switchyard_fairness_disparate_impact_ratio";
/// Gauge: equal opportunity difference per `group` (true-positive rates, from feedback).
pub const FAIRNESS_EOD: &str = "switchyard_fairness_equal_opportunity_difference";
/// Gauge: 1 while a `group` is outside the fairness thresholds.
pub const FAIRNESS_ALERT: &str = "switchyard_fairness_alert";

pub(super) fn describe() {
    describe_gauge!(
        QUALITY_LABELLED,
        "Labelled rows (joined with feedback) in the quality window."
    );
    describe_gauge!(QUALITY_ACCURACY, "Accuracy of a classifier over the quality window.");
    describe_gauge!(QUALITY_PRECISION, "Precision of one class over the quality window.");
    describe_gauge!(QUALITY_RECALL, "Recall of one class over the quality window.");
    describe_gauge!(
        QUALITY_CALIBRATION,
        "Expected calibration error (10 confidence bins) over the quality window."
    );
    describe_gauge!(
        QUALITY_MAE,
        "Mean absolute error of a regressor over the quality window."
    );
    describe_gauge!(
        QUALITY_RMSE,
        "Root mean squared error of a regressor over the quality window."
    );
    describe_gauge!(QUALITY_ALERT, "1 while a quality threshold is crossed, by metric.");
    describe_counter!(
        QUALITY_DROPPED,
        "Finished requests not kept for feedback joining, by reason."
    );
    describe_counter!(FEEDBACK, "Feedback entries received, by outcome.");
    describe_gauge!(STORE_RECORDS, "Predictions kept in the feedback store.");
    describe_gauge!(
        FAIRNESS_ROWS,
        "Rows predicted per protected group in the fairness window."
    );
    describe_gauge!(FAIRNESS_RATE, "Favourable-outcome rate per protected group.");
    describe_gauge!(
        FAIRNESS_SPD,
        "Statistical parity difference: a group's favourable rate minus the reference's."
    );
    describe_gauge!(
        FAIRNESS_DIR,
        "Disparate impact ratio: a group's favourable rate over the reference's."
    );
    describe_gauge!(
        FAIRNESS_EOD,
        "Equal opportunity difference: a group's true-positive rate minus the reference's."
    );
    describe_gauge!(
        FAIRNESS_ALERT,
        "1 while a protected group is outside the fairness thresholds."
    );
}
