//! The drift report: a serialisable snapshot of a version's statistics,
//! PSIs and counters (served as JSON by the admin API).

use serde::Serialize;

use super::stats::Welford;
use super::{DriftSettings, Role};

/// Which window the reported values describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShownWindow {
    /// No window yet: the first has fewer than `min_samples` samples.
    None,
    /// The current window (it has at least `min_samples` samples).
    Current,
    /// The last completed window.
    LastCompleted,
}

/// A snapshot of a version's drift state (served as JSON).
#[derive(Clone, Debug, Serialize)]
pub struct DriftReport {
    /// Model name.
    pub model: String,
    /// Version.
    pub version: String,
    /// Settings in force.
    pub settings: DriftSettings,
    /// Whether a reference profile is loaded (without one there is no PSI).
    pub has_reference: bool,
    /// Whether any reported PSI is at or above the threshold.
    pub alert: bool,
    /// Largest reported PSI.
    pub max_psi: Option<f64>,
    /// Requests routed to the version and put to the sampler (failures included).
    pub offered: u64,
    /// Requests queued for analysis (after sampling).
    pub sampled: u64,
    /// Sampled requests dropped because the queue was full.
    pub dropped: u64,
    /// Requests analysed.
    pub processed: u64,
    /// Samples (rows) analysed.
    pub samples_seen: u64,
    /// Window state.
    pub window: WindowReport,
    /// Per tensor, in order of first appearance.
    pub tensors: Vec<TensorReport>,
}

/// Tumbling-window state.
#[derive(Clone, Debug, Serialize)]
pub struct WindowReport {
    /// Samples per window.
    pub size: u64,
    /// Samples in the current window.
    pub current_samples: u64,
    /// Windows completed.
    pub completed: u64,
    /// Which window the reported values describe.
    pub shown: ShownWindow,
    /// Samples in the shown window.
    pub shown_samples: u64,
}

/// One tensor in a [`DriftReport`].
#[derive(Clone, Debug, Serialize)]
pub struct TensorReport {
    /// Tensor name.
    pub name: String,
    /// Input or output.
    pub role: Role,
    /// Datatype name.
    pub datatype: String,
    /// Per feature (`"0"`, `"1"`, ... then `"*"` if the tensor had large rows).
    pub features: Vec<FeatureReport>,
    /// Argmax distribution of a class-score output.
    pub classes: Option<ClassReport>,
}

/// One feature in a [`DriftReport`].
#[derive(Clone, Debug, Serialize)]
pub struct FeatureReport {
    /// Feature label.
    pub feature: String,
    /// Everything analysed since the version loaded.
    pub total: Stats,
    /// The shown window.
    pub window: Option<Stats>,
    /// PSI of the shown window against the reference.
    pub psi: Option<f64>,
    /// The reference's statistics, where the profile has this feature.
    pub reference: Option<ReferenceStats>,
}

/// Statistics of a feature's values.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Stats {
    /// Values, non-finite included.
    pub count: u64,
    /// NaN values.
    pub nan: u64,
    /// ±Inf values.
    pub inf: u64,
    /// Smallest finite value.
    pub min: Option<f64>,
    /// Largest finite value.
    pub max: Option<f64>,
    /// Mean of the finite values.
    pub mean: Option<f64>,
    /// Population standard deviation of the finite values.
    pub std: Option<f64>,
}

impl From<&Welford> for Stats {
    fn from(w: &Welford) -> Stats {
        Stats {
            count: w.count,
            nan: w.nan,
            inf: w.inf,
            min: w.min(),
            max: w.max(),
            mean: w.mean(),
            std: w.std(),
        }
    }
}

/// A feature's reference statistics.
#[derive(Clone, Debug, Serialize)]
pub struct ReferenceStats {
    /// Finite reference values.
    pub count: u64,
    /// Reference mean.
    pub mean: f64,
    /// Reference standard deviation.
    pub std: f64,
}

/// Argmax class distribution of a class-score output.
#[derive(Clone, Debug, Serialize)]
pub struct ClassReport {
    /// Classes (C).
    pub classes: usize,
    /// Rows per argmax class since the version loaded.
    pub total_counts: Vec<u64>,
    /// Class proportions in the shown window.
    pub window_proportions: Option<Vec<f64>>,
    /// Reference class proportions.
    pub reference_proportions: Option<Vec<f64>>,
    /// PSI of the shown window against the reference.
    pub psi: Option<f64>,
}
