//! Ground-truth feedback and the quality and fairness reports: the core's
//! side of `POST /v2/models/{m}/feedback`, `GET .../quality` and
//! `GET .../fairness` (the frontends decode and encode; the joining is
//! [`crate::quality::Monitor`]'s).

use std::sync::Arc;
use std::time::Duration;

use super::Service;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::quality::store::StoreSettings;
use crate::quality::{Feedback, FeedbackOutcome, QualityReport, VersionQuality};

/// Feedback entries one call may carry.
pub const MAX_FEEDBACK_ENTRIES: usize = 10_000;

/// The store's settings from the command line.
pub(super) fn store_settings(config: &Config) -> StoreSettings {
    StoreSettings {
        path: config
            .feedback_store
            .clone()
            .or_else(|| config.state_dir.as_ref().map(|d| d.join("feedback.redb"))),
        max_records: config.feedback_max_records,
        retention: Duration::from_secs(config.feedback_retention_secs),
    }
}

/// What a feedback call did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeedbackReport {
    /// Model name.
    pub model_name: String,
    /// Entries joined with a prediction.
    pub joined: usize,
    /// Entries not joined (unknown, expired, duplicate, mismatched, retired).
    pub rejected: usize,
    /// Per entry, in the order sent.
    pub results: Vec<FeedbackOutcome>,
}

impl Service {
    /// Joins ground truth with the predictions `model` made.
    pub async fn feedback(&self, model: &str, feedback: Vec<Feedback>) -> Result<FeedbackReport> {
        let entry = self
            .inner
            .registry
            .get(model)
            .ok_or_else(|| crate::registry::unknown_model(model))?;
        if !entry.versions.values().any(|h| h.quality.is_some()) {
            return Err(off(model));
        }
        if feedback.is_empty() {
            return Err(Error::invalid("feedback holds no entries"));
        }
        if feedback.len() > MAX_FEEDBACK_ENTRIES {
            return Err(Error::too_large(format!(
                "feedback holds {} entries; at most {MAX_FEEDBACK_ENTRIES} per call",
                feedback.len()
            )));
        }
        let (monitor, registry, name) = (self.inner.quality.clone(), self.clone(), model.to_string());
        let results = tokio::task::spawn_blocking(move || {
            monitor.join(&name, &feedback, |version| registry.version_quality(&name, version))
        })
        .await
        .map_err(|e| Error::internal(format!("feedback task failed: {e}")))?
        .map_err(Error::internal)?;
        let joined = results.iter().filter(|r| r.outcome == "joined").count();
        Ok(FeedbackReport {
            model_name: model.to_string(),
            joined,
            rejected: results.len() - joined,
            results,
        })
    }

    fn version_quality(&self, model: &str, version: &str) -> Option<Arc<VersionQuality>> {
        let entry = self.inner.registry.get(model)?;
        entry.versions.get(&version.parse::<i64>().ok()?)?.quality.clone()
    }

    /// The quality report of a model version (its default without one).
    pub fn quality_report(&self, model: &str, version: Option<&str>) -> Result<QualityReport> {
        let h = self.inner.registry.resolve(model, version)?;
        h.quality.as_ref().map(|q| q.report()).ok_or_else(|| off(model))
    }

    /// Shutdown: stores what the request path handed over, syncs the
    /// feedback store and closes it.
    pub fn close_quality(&self, timeout: Duration) {
        self.inner.quality.close(timeout);
    }
}

fn off(model: &str) -> Error {
    Error::new(
        crate::error::ErrorKind::FailedPrecondition,
        format!(
            "quality monitoring is off for model '{model}': set quality.* or fairness.* parameters in its config.pbtxt"
        ),
    )
}
