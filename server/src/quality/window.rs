//! Sliding windows of counts: a ring of buckets, each covering a fixed slice
//! of time, summed on read. Memory is fixed by the bucket count; a bucket
//! older than the window is cleared when its slot comes round again.

use std::collections::BTreeMap;
use std::time::Duration;

/// Buckets per window.
pub const BUCKETS: u64 = 12;
/// Classes kept apart in per-class figures; higher class indexes are counted
/// in accuracy but not per class.
pub const MAX_CLASSES: usize = 64;
/// Calibration bins (by confidence, 0.1 wide).
pub const CALIBRATION_BINS: usize = 10;

/// Something counted in buckets and summed.
pub trait Merge: Default + Clone {
    /// Adds `other` into `self`.
    fn merge(&mut self, other: &Self);
}

/// A sliding window of `T` over `window`, in [`BUCKETS`] buckets.
#[derive(Debug, Clone)]
pub struct Sliding<T> {
    slice_ms: u64,
    /// (bucket number, counts), indexed by bucket number modulo [`BUCKETS`].
    slots: Vec<(u64, T)>,
    /// Everything since the monitor started.
    total: T,
}

impl<T: Merge> Sliding<T> {
    /// An empty window.
    pub fn new(window: Duration) -> Sliding<T> {
        let ms = (window.as_millis() as u64).max(BUCKETS);
        Sliding {
            slice_ms: ms / BUCKETS,
            slots: (0..BUCKETS).map(|_| (u64::MAX, T::default())).collect(),
            total: T::default(),
        }
    }

    /// The bucket of `now_ms` (cleared if it held an older slice), updated by `f`.
    pub fn add(&mut self, now_ms: u64, f: impl Fn(&mut T)) {
        let n = now_ms / self.slice_ms;
        let slot = &mut self.slots[(n % BUCKETS) as usize];
        if slot.0 != n {
            *slot = (n, T::default());
        }
        f(&mut slot.1);
        f(&mut self.total);
    }

    /// The sum of the buckets within the window ending at `now_ms`.
    pub fn sum(&self, now_ms: u64) -> T {
        let n = now_ms / self.slice_ms;
        let mut out = T::default();
        for (b, t) in &self.slots {
            if *b != u64::MAX && *b + BUCKETS > n && *b <= n {
                out.merge(t);
            }
        }
        out
    }

    /// Everything since the start.
    pub fn total(&self) -> &T {
        &self.total
    }
}

/// Per-class counts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClassCounts {
    /// Predicted this class and it was.
    pub tp: u64,
    /// Predicted this class and it was not.
    pub fp: u64,
    /// Did not predict this class and it was.
    pub fn_: u64,
}

/// One calibration bin.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bin {
    /// Rows whose confidence fell here.
    pub n: u64,
    /// Sum of their confidences.
    pub confidence: f64,
    /// Of them, correct.
    pub correct: u64,
}

/// Joined (prediction, truth) pairs of one version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QualityCounts {
    /// Labelled rows.
    pub n: u64,
    /// Classifiers: rows whose argmax was the true class.
    pub correct: u64,
    /// Classifiers: per class, up to [`MAX_CLASSES`].
    pub classes: Vec<ClassCounts>,
    /// Probability outputs: calibration bins.
    pub bins: [Bin; CALIBRATION_BINS],
    /// Regressors: sum of |error|.
    pub abs_error: f64,
    /// Regressors: sum of error².
    pub sq_error: f64,
}

impl QualityCounts {
    /// One classified row.
    pub fn classified(&mut self, predicted: usize, truth: usize, confidence: Option<f64>) {
        self.n += 1;
        let correct = predicted == truth;
        self.correct += u64::from(correct);
        let need = predicted.max(truth) + 1;
        if need <= MAX_CLASSES && self.classes.len() < need {
            self.classes.resize(need, ClassCounts::default());
        }
        if correct {
            if let Some(c) = self.classes.get_mut(predicted) {
                c.tp += 1;
            }
        } else {
            if let Some(c) = self.classes.get_mut(predicted) {
                c.fp += 1;
            }
            if let Some(c) = self.classes.get_mut(truth) {
                c.fn_ += 1;
            }
        }
        if let Some(p) = confidence.filter(|p| (0.0..=1.0).contains(p)) {
            let bin = &mut self.bins[((p * CALIBRATION_BINS as f64) as usize).min(CALIBRATION_BINS - 1)];
            bin.n += 1;
            bin.confidence += p;
            bin.correct += u64::from(correct);
        }
    }

    /// One regressed row.
    pub fn regressed(&mut self, predicted: f64, truth: f64) {
        let e = predicted - truth;
        if !e.is_finite() {
            return;
        }
        self.n += 1;
        self.abs_error += e.abs();
        self.sq_error += e * e;
    }

    /// Accuracy, if any row is labelled.
    pub fn accuracy(&self) -> Option<f64> {
        (self.n > 0).then(|| self.correct as f64 / self.n as f64)
    }

    /// Mean absolute error.
    pub fn mae(&self) -> Option<f64> {
        (self.n > 0).then(|| self.abs_error / self.n as f64)
    }

    /// Root mean squared error.
    pub fn rmse(&self) -> Option<f64> {
        (self.n > 0).then(|| (self.sq_error / self.n as f64).sqrt())
    }

    /// Expected calibration error over the bins (rows with a confidence only).
    pub fn calibration_error(&self) -> Option<f64> {
        let n: u64 = self.bins.iter().map(|b| b.n).sum();
        (n > 0).then(|| {
            self.bins
                .iter()
                .filter(|b| b.n > 0)
                .map(|b| (b.n as f64 / n as f64) * (b.correct as f64 / b.n as f64 - b.confidence / b.n as f64).abs())
                .sum()
        })
    }
}

impl Merge for QualityCounts {
    fn merge(&mut self, o: &Self) {
        self.n += o.n;
        self.correct += o.correct;
        if self.classes.len() < o.classes.len() {
            self.classes.resize(o.classes.len(), ClassCounts::default());
        }
        for (a, b) in self.classes.iter_mut().zip(&o.classes) {
            a.tp += b.tp;
            a.fp += b.fp;
            a.fn_ += b.fn_;
        }
        for (a, b) in self.bins.iter_mut().zip(&o.bins) {
            a.n += b.n;
            a.confidence += b.confidence;
            a.correct += b.correct;
        }
        self.abs_error += o.abs_error;
        self.sq_error += o.sq_error;
    }
}

/// One group's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GroupCounts {
    /// Rows predicted.
    pub n: u64,
    /// Of them, with the favourable outcome.
    pub favourable: u64,
    /// Rows whose truth is favourable (from feedback).
    pub actual_favourable: u64,
    /// Of those, predicted favourable.
    pub true_favourable: u64,
}

impl GroupCounts {
    /// Favourable-outcome rate.
    pub fn rate(&self) -> Option<f64> {
        (self.n > 0).then(|| self.favourable as f64 / self.n as f64)
    }

    /// True-positive rate (equal opportunity), from feedback.
    pub fn tpr(&self) -> Option<f64> {
        (self.actual_favourable > 0).then(|| self.true_favourable as f64 / self.actual_favourable as f64)
    }

    fn add(&mut self, o: &GroupCounts) {
        self.n += o.n;
        self.favourable += o.favourable;
        self.actual_favourable += o.actual_favourable;
        self.true_favourable += o.true_favourable;
    }
}

/// Counts per group (the group's index in the monitor's group list).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Groups(pub BTreeMap<usize, GroupCounts>);

impl Groups {
    /// The counts of `group`, created empty.
    pub fn of(&mut self, group: usize) -> &mut GroupCounts {
        self.0.entry(group).or_default()
    }

    /// The sum over every group but `except`.
    pub fn rest(&self, except: usize) -> GroupCounts {
        let mut out = GroupCounts::default();
        for (g, c) in &self.0 {
            if *g != except {
                out.add(c);
            }
        }
        out
    }
}

impl Merge for Groups {
    fn merge(&mut self, o: &Self) {
        for (g, c) in &o.0 {
            self.of(*g).add(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_leave_the_window_as_time_passes() {
        let mut w: Sliding<QualityCounts> = Sliding::new(Duration::from_secs(12));
        w.add(0, |q| q.classified(1, 1, None));
        w.add(5_500, |q| q.classified(0, 1, None));
        assert_eq!(w.sum(6_000).n, 2);
        assert_eq!(w.sum(11_999).n, 2);
        // The first bucket (0-1 s) has left a 12 s window at 12 s.
        assert_eq!(w.sum(12_000).n, 1);
        assert_eq!(w.sum(16_999).n, 1);
        assert_eq!(w.sum(17_000).n, 0);
        // A slot is reused: the old slice's counts are gone, the total keeps them.
        w.add(24_100, |q| q.classified(2, 2, None));
        assert_eq!(w.sum(24_100).n, 1);
        assert_eq!(w.total().n, 3);
    }

    #[test]
    fn accuracy_per_class_figures_and_calibration() {
        let mut q = QualityCounts::default();
        q.classified(1, 1, Some(0.9));
        q.classified(1, 0, Some(0.9));
        q.classified(0, 0, Some(0.6));
        q.classified(0, 0, Some(0.65));
        assert_eq!(q.accuracy(), Some(0.75));
        assert_eq!(q.classes[1], ClassCounts { tp: 1, fp: 1, fn_: 0 });
        assert_eq!(q.classes[0], ClassCounts { tp: 2, fp: 0, fn_: 1 });
        // Bin 0.9: confidence 0.9, accuracy 0.5; bin 0.6: confidence 0.625, accuracy 1.
        let ece = 0.5 * (0.9f64 - 0.5).abs() + 0.5 * (0.625f64 - 1.0).abs();
        assert!((q.calibration_error().unwrap() - ece).abs() < 1e-12);
        // Classes past the cap count in accuracy only.
        q.classified(500, 500, None);
        assert_eq!(q.n, 5);
        assert_eq!(q.classes.len(), 2);
    }

    #[test]
    fn regression_errors() {
        let mut q = QualityCounts::default();
        q.regressed(1.0, 2.0);
        q.regressed(3.0, 0.0);
        q.regressed(f64::NAN, 0.0);
        assert_eq!(q.n, 2);
        assert_eq!(q.mae(), Some(2.0));
        assert!((q.rmse().unwrap() - 5f64.sqrt()).abs() < 1e-12);
    }
}
