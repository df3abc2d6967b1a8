//! A model version's drift settings: defaults, the `drift.*` config
//! parameters, and the ranges hand-built settings are forced into.

use serde::Serialize;
use switchyard_proto::inference::ModelConfig;

use super::MAX_FEATURES_LIMIT;

/// Drift settings of a model version.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DriftSettings {
    /// Fraction of requests analysed, 0 to 1 (0 turns observation off).
    pub sample_rate: f64,
    /// Samples (rows) per tumbling window.
    pub window: u64,
    /// Samples the current window needs before it is reported instead of the
    /// last completed one (at most `window`).
    pub min_samples: u64,
    /// PSI at or above which the version alerts.
    pub psi_threshold: f64,
    /// Rows with more elements are summarised as one feature `"*"`.
    pub max_features: usize,
    /// Whether the model batches: then rank-1 tensors are `[rows]`; else a
    /// rank-1 tensor is one sample. Tensors of rank ≥ 2 always have rows `shape[0]`.
    pub batched: bool,
}

impl Default for DriftSettings {
    fn default() -> Self {
        DriftSettings {
            sample_rate: 1.0,
            window: 1000,
            min_samples: 100,
            psi_threshold: 0.2,
            max_features: 32,
            batched: true,
        }
    }
}

impl DriftSettings {
    /// `base` overridden by the config's parameters `drift.sample_rate`,
    /// `drift.window`, `drift.min_samples`, `drift.psi_threshold` and
    /// `drift.max_features` (string values); `batched` from `max_batch_size > 0`.
    pub fn from_config(config: &ModelConfig, base: &DriftSettings) -> Result<DriftSettings, String> {
        let param = |key: &str| config.parameters.get(key).map(|p| p.string_value.trim().to_string());
        let mut s = base.clone();
        if let Some(v) = param("drift.sample_rate") {
            s.sample_rate = v
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| format!("parameter 'drift.sample_rate' must be a number from 0 to 1, got '{v}'"))?;
        }
        let positive = |key: &str, v: &str| {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("parameter '{key}' must be a positive integer, got '{v}'"))
        };
        if let Some(v) = param("drift.window") {
            s.window = positive("drift.window", &v)?;
        }
        if let Some(v) = param("drift.min_samples") {
            s.min_samples = positive("drift.min_samples", &v)?;
        }
        if let Some(v) = param("drift.psi_threshold") {
            s.psi_threshold = v
                .parse::<f64>()
                .ok()
                .filter(|t| t.is_finite() && *t > 0.0)
                .ok_or_else(|| format!("parameter 'drift.psi_threshold' must be a positive number, got '{v}'"))?;
        }
        if let Some(v) = param("drift.max_features") {
            s.max_features = v
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= MAX_FEATURES_LIMIT)
                .ok_or_else(|| {
                    format!(
                        "parameter 'drift.max_features' must be an integer from 0 to {MAX_FEATURES_LIMIT}, got '{v}'"
                    )
                })?;
        }
        s.batched = config.max_batch_size > 0;
        Ok(s)
    }

    /// Values forced into range (for settings built by hand).
    pub(super) fn sanitized(mut self) -> DriftSettings {
        self.sample_rate = if self.sample_rate.is_nan() {
            0.0
        } else {
            self.sample_rate.clamp(0.0, 1.0)
        };
        self.window = self.window.max(1);
        self.min_samples = self.min_samples.clamp(1, self.window);
        if !(self.psi_threshold.is_finite() && self.psi_threshold > 0.0) {
            self.psi_threshold = DriftSettings::default().psi_threshold;
        }
        self.max_features = self.max_features.min(MAX_FEATURES_LIMIT);
        self
    }
}
