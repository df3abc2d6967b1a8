//! Model quality in production: predictions kept for joining with ground
//! truth that arrives later ([`store`]), live quality figures per version
//! over a sliding window (accuracy, per-class precision and recall,
//! calibration; MAE and RMSE), and fairness signals per group of a protected
//! attribute (favourable-outcome rate, statistical parity difference,
//! disparate impact ratio, equal opportunity). All of it off the request
//! path: the request only hands its (shared) tensors to the [`monitor`]'s
//! worker.
//!
//! - [`settings`]: the `quality.*` and `fairness.*` config parameters.
//! - [`window`]: sliding-window counters.
//! - [`store`]: the embedded prediction store.
//! - [`monitor`]: the worker, feedback joining.
//! - [`report`]: the figures, gauges and alerts.

pub mod monitor;
pub mod report;
pub mod settings;
pub mod store;
pub mod window;

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

pub use monitor::{Feedback, FeedbackOutcome, Monitor, Truth};
pub use report::QualityReport;
pub use settings::{Attribute, FairnessSettings, QualitySettings, Task};
use store::Row;
use window::{Groups, QualityCounts, Sliding};

use crate::tensor::Tensor;

/// Rows of one request judged at most (the rest are not kept).
pub const MAX_ROWS: usize = 4096;
/// The group that collects values past `fairness.max_groups`.
pub const OTHER_GROUP: &str = "other";

/// Quality and fairness state of one model version.
pub struct VersionQuality {
    /// Model name.
    pub model: String,
    /// Version label.
    pub version: String,
    settings: QualitySettings,
    batched: bool,
    offered: AtomicU64,
    state: Mutex<State>,
}

impl std::fmt::Debug for VersionQuality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionQuality")
            .field("model", &self.model)
            .field("version", &self.version)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

struct State {
    quality: Sliding<QualityCounts>,
    fairness: Sliding<Groups>,
    /// Group index → value; the last one may be [`OTHER_GROUP`].
    groups: Vec<String>,
    report: report::Published,
}

impl VersionQuality {
    /// Quality monitoring of `model` / `version` (`batched`: the model has a batch dimension).
    pub fn new(model: &str, version: &str, settings: QualitySettings, batched: bool) -> VersionQuality {
        VersionQuality {
            model: model.to_string(),
            version: version.to_string(),
            batched,
            offered: AtomicU64::new(0),
            state: Mutex::new(State {
                quality: Sliding::new(settings.window),
                fairness: Sliding::new(settings.window),
                groups: Vec::new(),
                report: report::Published::new(model, version),
            }),
            settings,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &QualitySettings {
        &self.settings
    }

    /// Whether this request's predictions are kept (exactly `sample_rate` of calls).
    pub fn sample(&self) -> bool {
        let rate = self.settings.sample_rate;
        if rate >= 1.0 {
            return true;
        }
        let n = self.offered.fetch_add(1, Ordering::Relaxed);
        ((n + 1) as f64 * rate).floor() > (n as f64 * rate).floor()
    }

    /// The request parameter that names a request's group, if fairness reads one.
    pub fn group_parameter(&self) -> Option<&str> {
        match &self.settings.fairness.as_ref()?.attribute {
            Attribute::Parameter(name) => Some(name),
            Attribute::Input { .. } => None,
        }
    }

    /// Whether fairness is monitored (rows carry a group and an outcome).
    pub fn has_fairness(&self) -> bool {
        self.settings.fairness.is_some()
    }

    /// Whether the group is read from an input (so the inputs must be kept).
    pub fn needs_inputs(&self) -> bool {
        matches!(
            self.settings.fairness.as_ref().map(|f| &f.attribute),
            Some(Attribute::Input { .. })
        )
    }

    /// One request's predictions, per row (at most [`MAX_ROWS`]); empty when
    /// the monitored output is missing or not numeric.
    pub fn rows(&self, outputs: &[Tensor], inputs: &[Tensor], group: Option<&str>) -> Vec<Row> {
        let Some(out) = outputs.iter().find(|t| t.name == self.settings.output) else {
            return Vec::new();
        };
        let Some(values) = out.values_f64() else {
            return Vec::new();
        };
        let n = self.row_count(out);
        if n == 0 || values.is_empty() || values.len() % n != 0 {
            return Vec::new();
        }
        let width = values.len() / n;
        let fairness = self.settings.fairness.as_ref();
        let group_values = match fairness.map(|f| &f.attribute) {
            Some(Attribute::Input { tensor, index }) => inputs
                .iter()
                .find(|t| &t.name == tensor)
                .and_then(|t| Some((t, t.numeric_len()?)))
                .filter(|&(t, len)| self.row_count(t) == n && len % n == 0 && *index < len / n)
                .map(|(t, len)| {
                    // Only the attribute's element of each row is decoded.
                    let w = len / n;
                    (0..n.min(MAX_ROWS))
                        .map(|r| group_name(t.value_f64(r * w + index).unwrap_or(f64::NAN)))
                        .collect::<Vec<_>>()
                }),
            _ => None,
        };
        values
            .chunks(width)
            .take(n.min(MAX_ROWS))
            .enumerate()
            .map(|(r, row)| {
                let mut out = Row::default();
                match self.settings.task {
                    Task::Classification => {
                        let (class, top) = argmax(row);
                        out.class = Some(class as u32);
                        let probabilities =
                            row.iter().all(|p| (0.0..=1.0).contains(p)) && (row.iter().sum::<f64>() - 1.0).abs() < 1e-3;
                        out.confidence = probabilities.then_some(top as f32);
                    }
                    Task::Regression => out.value = Some(row[0]),
                }
                if let Some(f) = fairness {
                    out.group = match &group_values {
                        Some(g) => Some(g[r].clone()),
                        None => group.map(str::to_string),
                    };
                    out.favourable = Some(favourable(f, self.settings.task, row));
                }
                out
            })
            .collect()
    }

    fn row_count(&self, t: &Tensor) -> usize {
        if self.batched {
            t.shape.first().map_or(0, |&d| usize::try_from(d).unwrap_or(0))
        } else {
            1
        }
    }

    /// Counts a production request's predicted rows for fairness.
    pub fn record_predictions(&self, rows: &[Row], now_ms: u64) {
        let Some(f) = &self.settings.fairness else {
            return;
        };
        let mut st = self.state.lock();
        for row in rows {
            let Some(g) = &row.group else { continue };
            let i = st.group_index(g, f.max_groups);
            let fav = row.favourable == Some(true);
            st.fairness.add(now_ms, |c| {
                let c = c.of(i);
                c.n += 1;
                c.favourable += u64::from(fav);
            });
        }
    }

    /// Joins a request's predicted rows with their truths (same length; checked by the caller).
    pub fn join(&self, rows: &[Row], truths: &[Truth], now_ms: u64) {
        let mut st = self.state.lock();
        for (row, truth) in rows.iter().zip(truths) {
            match (self.settings.task, row, truth) {
                (Task::Classification, Row { class: Some(c), .. }, Truth::Class(t)) => {
                    let conf = row.confidence.map(f64::from);
                    st.quality.add(now_ms, |q| q.classified(*c as usize, *t, conf));
                }
                (Task::Regression, Row { value: Some(v), .. }, Truth::Value(t)) => {
                    st.quality.add(now_ms, |q| q.regressed(*v, *t));
                }
                (Task::Regression, Row { value: Some(v), .. }, Truth::Class(t)) => {
                    st.quality.add(now_ms, |q| q.regressed(*v, *t as f64));
                }
                _ => continue,
            }
            if let (Some(f), Some(g)) = (&self.settings.fairness, &row.group) {
                let actual = match truth {
                    Truth::Class(t) => f.favourable_class == Some(*t),
                    Truth::Value(v) => f.favourable_threshold.is_some_and(|x| *v >= x),
                };
                if actual {
                    let i = st.group_index(g, f.max_groups);
                    let predicted = row.favourable == Some(true);
                    st.fairness.add(now_ms, |c| {
                        let c = c.of(i);
                        c.actual_favourable += 1;
                        c.true_favourable += u64::from(predicted);
                    });
                }
            }
        }
    }
}

impl State {
    fn group_index(&mut self, value: &str, max_groups: usize) -> usize {
        if let Some(i) = self.groups.iter().position(|g| g == value) {
            return i;
        }
        if self.groups.len() < max_groups {
            self.groups.push(value.to_string());
            return self.groups.len() - 1;
        }
        // Past the cap: everything else is one group.
        if self.groups.len() == max_groups {
            self.groups.push(OTHER_GROUP.to_string());
        }
        max_groups
    }
}

/// A group's name from a feature value: integers without a fraction.
fn group_name(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn argmax(row: &[f64]) -> (usize, f64) {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, &v) in row.iter().enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best
}

fn favourable(f: &FairnessSettings, task: Task, row: &[f64]) -> bool {
    match task {
        Task::Classification => {
            let Some(class) = f.favourable_class else { return false };
            let top = argmax(row).0 == class;
            match f.favourable_threshold {
                Some(x) => row.get(class).is_some_and(|p| *p >= x),
                None => top,
            }
        }
        Task::Regression => f.favourable_threshold.is_some_and(|x| row[0] >= x),
    }
}

#[cfg(test)]
mod tests;
