//! The figures of a version's quality and fairness windows: the report
//! endpoint's JSON, the Prometheus gauges (set by the monitor's worker after
//! the counts change, at most once a second per version) and the alerts,
//! each warned about once when it starts.

use std::collections::BTreeSet;

use serde::Serialize;

use super::settings::{FairnessSettings, Task};
use super::window::{CALIBRATION_BINS, GroupCounts, Groups, QualityCounts};
use super::{State, VersionQuality};
use crate::metrics::quality as names;

/// Per-class figures reported at most (and exported as gauges).
pub const MAX_REPORTED_CLASSES: usize = 32;

/// Figures over a set of joined pairs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Labelled rows.
    pub labelled: u64,
    /// Classifiers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Classifiers: per class (up to 32).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<ClassFigures>,
    /// Probability outputs: expected calibration error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration_error: Option<f64>,
    /// Probability outputs: per confidence bin.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub calibration: Vec<BinFigures>,
    /// Regressors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    /// Regressors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
}

/// One class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassFigures {
    /// Class index.
    pub class: usize,
    /// Of rows predicted as this class, the share that were.
    pub precision: Option<f64>,
    /// Of rows of this class, the share predicted as it.
    pub recall: Option<f64>,
    /// Rows of this class.
    pub support: u64,
}

/// One calibration bin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BinFigures {
    /// Lower edge of the confidence bin.
    pub from: f64,
    /// Rows.
    pub rows: u64,
    /// Mean confidence.
    pub confidence: f64,
    /// Accuracy.
    pub accuracy: f64,
}

/// One group's fairness figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupFigures {
    /// The group's value.
    pub group: String,
    /// Rows predicted in the window.
    pub rows: u64,
    /// Favourable-outcome rate.
    pub favourable_rate: Option<f64>,
    /// Its rate minus the reference's (TrustyAI's SPD).
    pub statistical_parity_difference: Option<f64>,
    /// Its rate over the reference's (TrustyAI's DIR).
    pub disparate_impact_ratio: Option<f64>,
    /// With feedback: of rows whose truth is favourable, the share predicted so.
    pub true_positive_rate: Option<f64>,
    /// Its true-positive rate minus the reference's.
    pub equal_opportunity_difference: Option<f64>,
    /// Outside the thresholds with enough rows.
    pub alert: bool,
}

/// The fairness section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FairnessReport {
    /// The settings.
    pub settings: FairnessSettings,
    /// What each group is compared with.
    pub reference: String,
    /// Per group.
    pub groups: Vec<GroupFigures>,
}

/// A version's report (`GET /v2/models/{m}/quality`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityReport {
    /// Model name.
    pub model_name: String,
    /// Version.
    pub model_version: String,
    /// Task.
    pub task: Task,
    /// The output judged.
    pub output: String,
    /// Window length in seconds.
    pub window_secs: u64,
    /// Labelled rows the figures need before they alert.
    pub min_samples: u64,
    /// Over the window.
    pub window: Figures,
    /// Since the version was loaded.
    pub total: Figures,
    /// Active alerts (`accuracy`, `mae`, `rmse`, `calibration_error`, `fairness:<group>`).
    pub alerts: Vec<String>,
    /// Fairness, when a protected attribute is declared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fairness: Option<FairnessReport>,
}

fn figures(q: &QualityCounts, task: Task) -> Figures {
    let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
    let mut f = Figures {
        labelled: q.n,
        ..Figures::default()
    };
    match task {
        Task::Classification => {
            f.accuracy = q.accuracy();
            f.classes = q
                .classes
                .iter()
                .enumerate()
                .take(MAX_REPORTED_CLASSES)
                .map(|(class, c)| ClassFigures {
                    class,
                    precision: ratio(c.tp, c.tp + c.fp),
                    recall: ratio(c.tp, c.tp + c.fn_),
                    support: c.tp + c.fn_,
                })
                .collect();
            f.calibration_error = q.calibration_error();
            f.calibration = q
                .bins
                .iter()
                .enumerate()
                .filter(|(_, b)| b.n > 0)
                .map(|(i, b)| BinFigures {
                    from: i as f64 / CALIBRATION_BINS as f64,
                    rows: b.n,
                    confidence: b.confidence / b.n as f64,
                    accuracy: b.correct as f64 / b.n as f64,
                })
                .collect();
        }
        Task::Regression => {
            f.mae = q.mae();
            f.rmse = q.rmse();
        }
    }
    f
}

fn fairness(s: &FairnessSettings, groups: &Groups, names: &[String], min_samples: u64) -> FairnessReport {
    let privileged = s.privileged.as_ref().and_then(|p| names.iter().position(|g| g == p));
    let figures = groups
        .0
        .iter()
        .map(|(&i, c)| {
            let reference: GroupCounts = match privileged {
                Some(p) => groups.0.get(&p).copied().unwrap_or_default(),
                None => groups.rest(i),
            };
            let own = privileged == Some(i);
            let rate = c.rate();
            let (spd, dir) = match (rate, reference.rate(), own) {
                (Some(r), Some(base), false) => (Some(r - base), (base > 0.0).then(|| r / base)),
                _ => (None, None),
            };
            let eod = match (c.tpr(), reference.tpr(), own) {
                (Some(a), Some(b), false) => Some(a - b),
                _ => None,
            };
            let enough = c.n >= min_samples && reference.n >= min_samples;
            let alert = enough
                && (dir.is_some_and(|d| d < s.min_disparate_impact || d > s.max_disparate_impact)
                    || spd.is_some_and(|d| d.abs() > s.max_parity_difference));
            GroupFigures {
                group: names.get(i).cloned().unwrap_or_default(),
                rows: c.n,
                favourable_rate: rate,
                statistical_parity_difference: spd,
                disparate_impact_ratio: dir,
                true_positive_rate: c.tpr(),
                equal_opportunity_difference: eod,
                alert,
            }
        })
        .collect();
    FairnessReport {
        settings: s.clone(),
        reference: match &s.privileged {
            Some(p) => format!("the privileged group '{p}'"),
            None => "all other groups".into(),
        },
        groups: figures,
    }
}

impl VersionQuality {
    /// The current report.
    pub fn report(&self) -> QualityReport {
        let st = self.state.lock();
        self.report_of(&st, super::store::now_ms())
    }

    fn report_of(&self, st: &State, now_ms: u64) -> QualityReport {
        let s = &self.settings;
        let window = figures(&st.quality.sum(now_ms), s.task);
        let fairness = s
            .fairness
            .as_ref()
            .map(|f| fairness(f, &st.fairness.sum(now_ms), &st.groups, s.min_samples));
        let mut alerts = Vec::new();
        if window.labelled >= s.min_samples {
            let below = |v: Option<f64>, min: Option<f64>| matches!((v, min), (Some(v), Some(m)) if v < m);
            let above = |v: Option<f64>, max: Option<f64>| matches!((v, max), (Some(v), Some(m)) if v > m);
            for (name, on) in [
                ("accuracy", below(window.accuracy, s.min_accuracy)),
                ("mae", above(window.mae, s.max_mae)),
                ("rmse", above(window.rmse, s.max_rmse)),
                (
                    "calibration_error",
                    above(window.calibration_error, s.max_calibration_error),
                ),
            ] {
                if on {
                    alerts.push(name.to_string());
                }
            }
        }
        if let Some(f) = &fairness {
            alerts.extend(
                f.groups
                    .iter()
                    .filter(|g| g.alert)
                    .map(|g| format!("fairness:{}", g.group)),
            );
        }
        QualityReport {
            model_name: self.model.clone(),
            model_version: self.version.clone(),
            task: s.task,
            output: s.output.clone(),
            window_secs: s.window.as_secs(),
            min_samples: s.min_samples,
            total: figures(st.quality.total(), s.task),
            window,
            alerts,
            fairness,
        }
    }

    /// Sets the gauges from the current window and warns about alerts that just started.
    pub fn publish(&self) {
        let mut st = self.state.lock();
        let r = self.report_of(&st, super::store::now_ms());
        st.report.set(&r);
    }
}

/// The gauges of one version, and the alerts already warned about.
pub(super) struct Published {
    labels: [(&'static str, String); 2],
    alerts: BTreeSet<String>,
}

impl Published {
    pub(super) fn new(model: &str, version: &str) -> Published {
        Published {
            labels: [("model", model.to_string()), ("version", version.to_string())],
            alerts: BTreeSet::new(),
        }
    }

    fn gauge(&self, name: &'static str, extra: Option<(&'static str, String)>, value: Option<f64>) {
        let mut labels: Vec<(&'static str, String)> = self.labels.to_vec();
        if let Some(e) = &extra {
            labels.push(e.clone());
        }
        if let Some(v) = value {
            metrics::gauge!(name, &labels).set(v);
        }
    }

    fn set(&mut self, r: &QualityReport) {
        let w = &r.window;
        self.gauge(names::QUALITY_LABELLED, None, Some(w.labelled as f64));
        self.gauge(names::QUALITY_ACCURACY, None, w.accuracy);
        self.gauge(names::QUALITY_MAE, None, w.mae);
        self.gauge(names::QUALITY_RMSE, None, w.rmse);
        self.gauge(names::QUALITY_CALIBRATION, None, w.calibration_error);
        for c in &w.classes {
            self.gauge(
                names::QUALITY_PRECISION,
                Some(("class", c.class.to_string())),
                c.precision,
            );
            self.gauge(names::QUALITY_RECALL, Some(("class", c.class.to_string())), c.recall);
        }
        for metric in ["accuracy", "mae", "rmse", "calibration_error"] {
            let on = r.alerts.iter().any(|a| a == metric);
            self.gauge(
                names::QUALITY_ALERT,
                Some(("metric", metric.into())),
                Some(f64::from(u8::from(on))),
            );
        }
        if let Some(f) = &r.fairness {
            for g in &f.groups {
                let l = || Some(("group", g.group.clone()));
                self.gauge(names::FAIRNESS_ROWS, l(), Some(g.rows as f64));
                self.gauge(names::FAIRNESS_RATE, l(), g.favourable_rate);
                self.gauge(names::FAIRNESS_SPD, l(), g.statistical_parity_difference);
                self.gauge(names::FAIRNESS_DIR, l(), g.disparate_impact_ratio);
                self.gauge(names::FAIRNESS_EOD, l(), g.equal_opportunity_difference);
                self.gauge(names::FAIRNESS_ALERT, l(), Some(f64::from(u8::from(g.alert))));
            }
        }
        let now: BTreeSet<String> = r.alerts.iter().cloned().collect();
        for started in now.difference(&self.alerts) {
            tracing::warn!(model = %r.model_name, version = %r.model_version, alert = %started,
                window = ?r.window, "model quality alert");
        }
        self.alerts = now;
    }
}
