//! The live statistics of one model version, owned by the drift worker:
//! per tensor and feature the Welford accumulators of the completed, current
//! and last windows, their PSI bins, argmax class counts, and the gauges they
//! publish. Only the worker (and [`super::VersionDrift::report`] / its drop,
//! under the same mutex) touches it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use metrics::{Counter, Gauge};

use super::stats::{self, Layout, Welford};
use super::{
    AGGREGATE_FEATURE, CLASS_FEATURE, ClassReport, DriftSettings, FeatureProfile, FeatureReport, MAX_CLASSES, Profile,
    ReferenceStats, Role, Shared, ShownWindow, Stats, TensorProfile, TensorReport,
};
use crate::metrics::{DRIFT_ALERT, DRIFT_PSI, TENSOR_MAX, TENSOR_MEAN, TENSOR_MIN, TENSOR_NONFINITE, TENSOR_STD};
use crate::tensor::Tensor;

/// Tensors tracked per model version; further names are ignored.
const MAX_TENSORS: usize = 128;
/// Decode buffer capacity kept between samples.
const KEEP_BUFFER: usize = 1 << 16;

/// The worker's view of one version.
pub(super) struct State {
    pub(super) closed: bool,
    pub(super) reference: Option<Profile>,
    pub(super) tensors: Vec<TensorState>,
    pub(super) index: HashMap<(Role, String), usize>,
    pub(super) processed: u64,
    pub(super) samples: u64,
    pub(super) window_samples: u64,
    pub(super) windows_completed: u64,
    pub(super) alert_gauge: Option<Gauge>,
    pub(super) buf: Vec<f64>,
}

pub(super) struct View<'a> {
    pub(super) idx: usize,
    pub(super) tensor: &'a Tensor,
    pub(super) layout: Layout,
    pub(super) nan: u64,
    pub(super) inf: u64,
}

impl State {
    pub(super) fn new(reference: Option<Profile>) -> State {
        State {
            closed: false,
            reference,
            tensors: Vec::new(),
            index: HashMap::new(),
            processed: 0,
            samples: 0,
            window_samples: 0,
            windows_completed: 0,
            alert_gauge: None,
            buf: Vec::new(),
        }
    }

    pub(super) fn shown(&self, s: &DriftSettings) -> ShownWindow {
        if self.window_samples >= s.min_samples {
            ShownWindow::Current
        } else if self.windows_completed > 0 {
            ShownWindow::LastCompleted
        } else {
            ShownWindow::None
        }
    }

    pub(super) fn tensor_index(&mut self, role: Role, t: &Tensor) -> Option<usize> {
        if let Some(&i) = self.index.get(&(role, t.name.clone())) {
            return Some(i);
        }
        if self.tensors.len() >= MAX_TENSORS {
            return None;
        }
        let reference = self.reference.as_ref().and_then(|p| p.tensor(role, &t.name)).cloned();
        self.tensors.push(TensorState {
            role,
            name: t.name.clone(),
            datatype: t.datatype.as_str(),
            reference,
            per_index: Vec::new(),
            aggregate: None,
            classes: None,
            nonfinite: None,
        });
        let i = self.tensors.len() - 1;
        self.index.insert((role, t.name.clone()), i);
        Some(i)
    }

    pub(super) fn process(&mut self, sh: &Shared, inputs: &[Tensor], outputs: &[Tensor]) {
        let s = &sh.settings;
        let mut views: Vec<View<'_>> = Vec::new();
        for (role, tensors) in [(Role::Input, inputs), (Role::Output, outputs)] {
            for t in tensors {
                let Some(layout) = stats::layout(t, role == Role::Output, s.batched, s.max_features) else {
                    continue;
                };
                let Some(idx) = self.tensor_index(role, t) else {
                    continue;
                };
                views.push(View {
                    idx,
                    tensor: t,
                    layout,
                    nan: 0,
                    inf: 0,
                });
            }
        }
        let rows = views.iter().map(|v| v.layout.rows).max().unwrap_or(0);
        let mut buf = std::mem::take(&mut self.buf);
        for r in 0..rows {
            for v in views.iter_mut().filter(|v| r < v.layout.rows) {
                stats::decode(v.tensor.datatype, stats::row_bytes(v.tensor, &v.layout, r), &mut buf);
                let (nan, inf) = self.tensors[v.idx].push_row(&buf, &v.layout);
                v.nan += nan;
                v.inf += inf;
            }
            self.samples += 1;
            self.window_samples += 1;
            if self.window_samples >= s.window {
                self.rotate();
            }
        }
        buf.clear();
        buf.shrink_to(KEEP_BUFFER);
        self.buf = buf;
        self.processed += 1;
        for v in &views {
            if v.nan > 0 || v.inf > 0 {
                let t = &mut self.tensors[v.idx];
                let (nan_counter, inf_counter) = t.nonfinite.get_or_insert_with(|| {
                    let counter = |kind: &'static str| {
                        metrics::counter!(TENSOR_NONFINITE, "model" => sh.model.clone(), "version" => sh.version.clone(),
                            "tensor" => t.name.clone(), "kind" => kind)
                    };
                    (counter("nan"), counter("inf"))
                });
                nan_counter.increment(v.nan);
                inf_counter.increment(v.inf);
            }
        }
        self.publish(sh);
    }

    pub(super) fn rotate(&mut self) {
        for t in &mut self.tensors {
            for f in t.per_index.iter_mut().chain(t.aggregate.as_mut()) {
                f.rotate();
            }
            if let Some(c) = &mut t.classes {
                c.rotate();
            }
        }
        self.window_samples = 0;
        self.windows_completed += 1;
    }

    /// Computes the PSIs of the shown window, sets the gauges and the alert.
    pub(super) fn publish(&mut self, sh: &Shared) {
        let s = &sh.settings;
        let shown = self.shown(s);
        if shown == ShownWindow::None {
            return;
        }
        let labels = |tensor: &str, feature: &str| {
            [
                ("model", sh.model.clone()),
                ("version", sh.version.clone()),
                ("tensor", tensor.to_string()),
                ("feature", feature.to_string()),
            ]
        };
        // (psi, tensor, feature) of the largest PSI.
        let mut worst: Option<(f64, String, String)> = None;
        let mut consider = |psi: Option<f64>, tensor: &str, feature: &str| {
            if let Some(p) = psi
                && worst.as_ref().is_none_or(|w| p > w.0)
            {
                worst = Some((p, tensor.to_string(), feature.to_string()));
            }
        };
        for t in &mut self.tensors {
            let name = t.name.as_str();
            for f in t.per_index.iter_mut().chain(t.aggregate.as_mut()) {
                let (w, psi) = f.shown(shown);
                let Some(values) = w.map(|w| (w.mean(), w.std(), w.min(), w.max())) else {
                    f.psi = None;
                    continue;
                };
                f.psi = psi;
                let g = f.gauges.get_or_insert_with(|| {
                    let l = labels(name, &f.label);
                    FeatureGauges {
                        psi: metrics::gauge!(DRIFT_PSI, &l),
                        mean: metrics::gauge!(TENSOR_MEAN, &l),
                        std: metrics::gauge!(TENSOR_STD, &l),
                        min: metrics::gauge!(TENSOR_MIN, &l),
                        max: metrics::gauge!(TENSOR_MAX, &l),
                    }
                });
                if let (Some(mean), Some(std), Some(min), Some(max)) = values {
                    g.mean.set(mean);
                    g.std.set(std);
                    g.min.set(min);
                    g.max.set(max);
                }
                if let Some(p) = psi {
                    g.psi.set(p);
                }
                consider(psi, name, &f.label);
            }
            if let Some(c) = &mut t.classes {
                c.psi = c
                    .shown(shown)
                    .and_then(|counts| c.reference.as_deref().and_then(|r| stats::psi(r, counts)));
                if let Some(p) = c.psi {
                    c.gauge
                        .get_or_insert_with(|| metrics::gauge!(DRIFT_PSI, &labels(name, CLASS_FEATURE)))
                        .set(p);
                }
                consider(c.psi, name, CLASS_FEATURE);
            }
        }
        let alert = worst.as_ref().is_some_and(|w| w.0 >= s.psi_threshold);
        self.alert_gauge
            .get_or_insert_with(
                || metrics::gauge!(DRIFT_ALERT, "model" => sh.model.clone(), "version" => sh.version.clone()),
            )
            .set(if alert { 1.0 } else { 0.0 });
        let was = sh.alert.swap(alert, Ordering::Relaxed);
        match (was, alert, worst) {
            (false, true, Some((psi, tensor, feature))) => tracing::warn!(
                model = %sh.model, version = %sh.version, %tensor, %feature, psi, threshold = s.psi_threshold,
                "drift detected: PSI at or above the threshold"
            ),
            (true, false, worst) => tracing::info!(
                model = %sh.model, version = %sh.version, max_psi = worst.map(|w| w.0), threshold = s.psi_threshold,
                "drift alert cleared"
            ),
            _ => {}
        }
    }
}

/// The per-tensor state.
pub(super) struct TensorState {
    pub(super) role: Role,
    pub(super) name: String,
    pub(super) datatype: &'static str,
    pub(super) reference: Option<TensorProfile>,
    pub(super) per_index: Vec<FeatureState>,
    pub(super) aggregate: Option<FeatureState>,
    pub(super) classes: Option<ClassState>,
    pub(super) nonfinite: Option<(Counter, Counter)>,
}

impl TensorState {
    pub(super) fn features(&self) -> impl Iterator<Item = &FeatureState> {
        self.per_index.iter().chain(self.aggregate.as_ref())
    }

    pub(super) fn reference_feature(&self, label: &str) -> Option<&FeatureProfile> {
        self.reference.as_ref()?.features.iter().find(|f| f.feature == label)
    }

    /// Adds one row; returns its NaN and ±Inf counts.
    pub(super) fn push_row(&mut self, values: &[f64], l: &Layout) -> (u64, u64) {
        if l.aggregate {
            if self.aggregate.is_none() {
                self.aggregate = Some(FeatureState::new(
                    AGGREGATE_FEATURE.to_string(),
                    self.reference_feature(AGGREGATE_FEATURE),
                ));
            }
            if let Some(f) = &mut self.aggregate {
                for &x in values {
                    f.push(x);
                }
            }
        } else {
            while self.per_index.len() < values.len() {
                let label = self.per_index.len().to_string();
                let f = FeatureState::new(label.clone(), self.reference_feature(&label));
                self.per_index.push(f);
            }
            for (f, &x) in self.per_index.iter_mut().zip(values) {
                f.push(x);
            }
        }
        if let Some(c) = l.classes
            && let Some(k) = stats::argmax(values)
        {
            let reference = self.reference.as_ref().and_then(|r| r.classes.clone());
            self.classes
                .get_or_insert_with(|| ClassState::new(reference))
                .push(k, c);
        }
        let nan = values.iter().filter(|x| x.is_nan()).count() as u64;
        let inf = values.iter().filter(|x| x.is_infinite()).count() as u64;
        (nan, inf)
    }

    pub(super) fn report(&self, shown: ShownWindow) -> TensorReport {
        TensorReport {
            name: self.name.clone(),
            role: self.role,
            datatype: self.datatype.to_string(),
            features: self.features().map(|f| f.report(shown)).collect(),
            classes: self.classes.as_ref().map(|c| c.report(shown)),
        }
    }
}

pub(super) struct FeatureGauges {
    pub(super) psi: Gauge,
    pub(super) mean: Gauge,
    pub(super) std: Gauge,
    pub(super) min: Gauge,
    pub(super) max: Gauge,
}

/// One feature: statistics of the completed windows, the current and the
/// last window, and the current / last window's bin counts.
pub(super) struct FeatureState {
    pub(super) label: String,
    pub(super) reference: Option<FeatureProfile>,
    pub(super) completed: Welford,
    pub(super) current: Welford,
    pub(super) last: Option<Welford>,
    pub(super) bins: Vec<u64>,
    pub(super) last_bins: Option<Vec<u64>>,
    pub(super) psi: Option<f64>,
    pub(super) gauges: Option<FeatureGauges>,
}

impl FeatureState {
    pub(super) fn new(label: String, reference: Option<&FeatureProfile>) -> FeatureState {
        // A hand-built profile may be inconsistent; such a feature gets no PSI.
        let reference = reference.filter(|r| r.proportions.len() == r.edges.len() + 1);
        let bins = reference.map_or(0, |r| r.proportions.len());
        FeatureState {
            label,
            reference: reference.cloned(),
            completed: Welford::default(),
            current: Welford::default(),
            last: None,
            bins: vec![0; bins],
            last_bins: None,
            psi: None,
            gauges: None,
        }
    }

    #[inline]
    pub(super) fn push(&mut self, x: f64) {
        self.current.push(x);
        if let Some(r) = &self.reference
            && !x.is_nan()
        {
            self.bins[stats::bin(&r.edges, x)] += 1;
        }
    }

    pub(super) fn rotate(&mut self) {
        self.completed.merge(&self.current);
        self.last = Some(std::mem::take(&mut self.current));
        if self.reference.is_some() {
            let fresh = vec![0; self.bins.len()];
            self.last_bins = Some(std::mem::replace(&mut self.bins, fresh));
        }
    }

    /// The shown window's statistics and PSI.
    pub(super) fn shown(&self, shown: ShownWindow) -> (Option<&Welford>, Option<f64>) {
        let (w, bins) = match shown {
            ShownWindow::None => return (None, None),
            ShownWindow::Current => (Some(&self.current), Some(self.bins.as_slice())),
            ShownWindow::LastCompleted => (self.last.as_ref(), self.last_bins.as_deref()),
        };
        let psi = match (&self.reference, bins) {
            (Some(r), Some(b)) => stats::psi(&r.proportions, b),
            _ => None,
        };
        (w, psi)
    }

    pub(super) fn report(&self, shown: ShownWindow) -> FeatureReport {
        let mut total = self.completed.clone();
        total.merge(&self.current);
        let (w, psi) = self.shown(shown);
        FeatureReport {
            feature: self.label.clone(),
            total: Stats::from(&total),
            window: w.map(Stats::from),
            psi,
            reference: self.reference.as_ref().map(|r| ReferenceStats {
                count: r.count,
                mean: r.mean,
                std: r.std,
            }),
        }
    }
}

/// Argmax counts of a class-score output.
pub(super) struct ClassState {
    pub(super) reference: Option<Vec<f64>>,
    pub(super) total: Vec<u64>,
    pub(super) current: Vec<u64>,
    pub(super) last: Option<Vec<u64>>,
    pub(super) psi: Option<f64>,
    pub(super) gauge: Option<Gauge>,
}

impl ClassState {
    pub(super) fn new(reference: Option<Vec<f64>>) -> ClassState {
        ClassState {
            reference,
            total: Vec::new(),
            current: Vec::new(),
            last: None,
            psi: None,
            gauge: None,
        }
    }

    pub(super) fn push(&mut self, class: usize, classes: usize) {
        let len = classes.min(MAX_CLASSES);
        if class >= len {
            return;
        }
        if self.current.len() < len {
            self.current.resize(len, 0);
            self.total.resize(len, 0);
        }
        self.current[class] += 1;
        self.total[class] += 1;
    }

    pub(super) fn rotate(&mut self) {
        let fresh = vec![0; self.current.len()];
        self.last = Some(std::mem::replace(&mut self.current, fresh));
    }

    pub(super) fn shown(&self, shown: ShownWindow) -> Option<&[u64]> {
        match shown {
            ShownWindow::None => None,
            ShownWindow::Current => Some(&self.current),
            ShownWindow::LastCompleted => self.last.as_deref(),
        }
    }

    pub(super) fn report(&self, shown: ShownWindow) -> ClassReport {
        let counts = self.shown(shown);
        ClassReport {
            classes: self.total.len(),
            total_counts: self.total.clone(),
            window_proportions: counts.map(stats::proportions),
            reference_proportions: self.reference.clone(),
            psi: counts.and_then(|c| self.reference.as_deref().and_then(|r| stats::psi(r, c))),
        }
    }
}
