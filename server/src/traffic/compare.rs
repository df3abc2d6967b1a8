//! Comparing a shadow's outputs with the primary's, output by output: shape
//! and datatype agreement, exact and within-tolerance element counts, the
//! largest and mean absolute and relative differences, and top-k agreement
//! per row for classifier outputs.
//!
//! An element is within tolerance when `|s - p| <= absolute + relative * |p|`
//! (`p` the primary's value, `s` the shadow's: NumPy's `isclose` rule); NaN
//! equals NaN, and equal infinities are equal. BYTES outputs compare exactly,
//! element by element.

use serde::Serialize;

use super::Compare;
use crate::tensor::{Tensor, TensorData};

/// How one output of one request pair compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputDiff {
    /// Output name.
    pub name: String,
    /// The shadow returned an output of this name.
    pub present: bool,
    /// Same shape on both sides.
    pub shape_match: bool,
    /// Same datatype on both sides.
    pub datatype_match: bool,
    /// Elements compared (0 unless shapes match).
    pub elements: u64,
    /// Elements bit-for-bit equal (NaN = NaN).
    pub exact: u64,
    /// Elements within the tolerance (exact ones included).
    pub within: u64,
    /// Largest absolute difference (0 for BYTES).
    pub max_abs: f64,
    /// Sum of absolute differences, for the mean.
    pub sum_abs: f64,
    /// Largest relative difference, `|s - p| / |p|` (∞ where p = 0 and s ≠ 0).
    pub max_rel: f64,
    /// Sum of finite relative differences, for the mean.
    pub sum_rel: f64,
    /// Rows whose top-k class sets were compared (with `top_k` > 0 and a
    /// numeric output of rank ≥ 1 with at least k classes).
    pub topk_rows: u64,
    /// Rows whose top-k class sets agree.
    pub topk_agree: u64,
}

impl OutputDiff {
    fn missing(name: &str) -> OutputDiff {
        OutputDiff {
            name: name.to_string(),
            present: false,
            shape_match: false,
            datatype_match: false,
            elements: 0,
            exact: 0,
            within: 0,
            max_abs: 0.0,
            sum_abs: 0.0,
            max_rel: 0.0,
            sum_rel: 0.0,
            topk_rows: 0,
            topk_agree: 0,
        }
    }

    /// Shape and datatype agree, every element is within tolerance, and every
    /// compared row's top-k agrees.
    pub fn matches(&self) -> bool {
        self.present
            && self.shape_match
            && self.datatype_match
            && self.within == self.elements
            && self.topk_agree == self.topk_rows
    }
}

/// Compares every primary output with the shadow's output of the same name.
pub fn compare(primary: &[Tensor], shadow: &[Tensor], settings: &Compare) -> Vec<OutputDiff> {
    primary
        .iter()
        .map(|p| match shadow.iter().find(|s| s.name == p.name) {
            Some(s) => compare_one(p, s, settings),
            None => OutputDiff::missing(&p.name),
        })
        .collect()
}

fn compare_one(p: &Tensor, s: &Tensor, settings: &Compare) -> OutputDiff {
    let mut d = OutputDiff::missing(&p.name);
    d.present = true;
    d.shape_match = p.shape == s.shape;
    d.datatype_match = p.datatype == s.datatype;
    if !d.shape_match {
        return d;
    }
    match (&p.data, &s.data) {
        (TensorData::Bytes(a), TensorData::Bytes(b)) => {
            d.elements = a.len().min(b.len()) as u64;
            d.exact = a.iter().zip(b).filter(|(x, y)| x == y).count() as u64;
            d.within = d.exact;
            // Counted elements differ only for a malformed tensor: never a match.
            if a.len() != b.len() {
                d.elements = d.elements.max(1);
                d.within = d.within.min(d.elements - 1);
            }
        }
        _ => {
            let (Some(a), Some(b)) = (p.values_f64(), s.values_f64()) else {
                // A numeric and a BYTES tensor of one shape: nothing agrees.
                d.elements = 1;
                return d;
            };
            numeric(&mut d, &a, &b, settings);
            if settings.top_k > 0 {
                top_k(&mut d, &a, &b, &p.shape, settings.top_k as usize);
            }
        }
    }
    d
}

fn numeric(d: &mut OutputDiff, a: &[f64], b: &[f64], settings: &Compare) {
    d.elements = a.len().max(b.len()) as u64;
    for (&x, &y) in a.iter().zip(b) {
        let same = x == y || (x.is_nan() && y.is_nan());
        if same {
            d.exact += 1;
            d.within += 1;
            continue;
        }
        let abs = (y - x).abs();
        if abs <= settings.absolute + settings.relative * x.abs() {
            d.within += 1;
        }
        // NaN on one side only, or opposite infinities: as far apart as can be.
        let abs = if abs.is_nan() { f64::INFINITY } else { abs };
        d.max_abs = d.max_abs.max(abs);
        if abs.is_finite() {
            d.sum_abs += abs;
        }
        let rel = if x == 0.0 { f64::INFINITY } else { abs / x.abs() };
        d.max_rel = d.max_rel.max(rel);
        if rel.is_finite() {
            d.sum_rel += rel;
        }
    }
}

/// Indices of the `k` largest values of `row`, as a sorted set (NaN lowest;
/// ties broken by the lower index).
fn top_indices(row: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    let key = |i: usize| if row[i].is_nan() { f64::NEG_INFINITY } else { row[i] };
    idx.sort_by(|&i, &j| key(j).total_cmp(&key(i)).then(i.cmp(&j)));
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

fn top_k(d: &mut OutputDiff, a: &[f64], b: &[f64], shape: &[i64], k: usize) {
    let classes = match shape.last() {
        Some(&c) if c > 0 => c as usize,
        _ => return,
    };
    if classes < k || a.len() != b.len() || !a.len().is_multiple_of(classes) {
        return;
    }
    for (ra, rb) in a.chunks_exact(classes).zip(b.chunks_exact(classes)) {
        d.topk_rows += 1;
        if top_indices(ra, k) == top_indices(rb, k) {
            d.topk_agree += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DataType;

    fn fp32(name: &str, shape: Vec<i64>, v: &[f64]) -> Tensor {
        Tensor::from_f64(name, DataType::Fp32, shape, v).unwrap()
    }

    fn settings(top_k: u32) -> Compare {
        Compare {
            absolute: 1e-3,
            relative: 1e-2,
            top_k,
        }
    }

    #[test]
    fn identical_outputs_match_exactly() {
        let p = [fp32("y", vec![2, 3], &[0.1, 0.7, 0.2, 0.5, 0.3, 0.2])];
        let d = compare(&p, &p.clone(), &settings(1));
        assert_eq!(d.len(), 1);
        let d = &d[0];
        assert!(d.matches(), "{d:?}");
        assert_eq!((d.elements, d.exact, d.within), (6, 6, 6));
        assert_eq!((d.max_abs, d.max_rel), (0.0, 0.0));
        assert_eq!((d.topk_rows, d.topk_agree), (2, 2));
    }

    #[test]
    fn differences_inside_and_outside_the_tolerance() {
        let p = [fp32("y", vec![4], &[1.0, 100.0, 0.0, 2.0])];
        // 1.0005: abs 5e-4 within 1e-3. 100.5: abs 0.5 <= 1e-3 + 1.0 within. 0.01: abs 0.01 outside.
        let s = [fp32("y", vec![4], &[1.0005, 100.5, 0.01, 2.0])];
        let d = &compare(&p, &s, &settings(0))[0];
        assert_eq!((d.elements, d.exact, d.within), (4, 1, 3));
        assert!(!d.matches());
        assert!((d.max_abs - 0.5).abs() < 1e-6, "{}", d.max_abs);
        assert!(d.max_rel.is_infinite(), "0 → 0.01 is an infinite relative difference");
        assert!((d.sum_abs - (0.0005 + 0.5 + 0.01)).abs() < 1e-4);
        // Relative: 5e-4 and 5e-3 are finite; the infinite one is left out of the sum.
        assert!((d.sum_rel - (0.0005 + 0.005)).abs() < 1e-4, "{}", d.sum_rel);
    }

    #[test]
    fn nan_equals_nan_and_a_one_sided_nan_is_infinitely_far() {
        let p = [fp32("y", vec![2], &[f64::NAN, 1.0])];
        let s = [fp32("y", vec![2], &[f64::NAN, f64::NAN])];
        let d = &compare(&p, &s, &settings(0))[0];
        assert_eq!((d.exact, d.within), (1, 1));
        assert!(d.max_abs.is_infinite());
        assert_eq!(d.sum_abs, 0.0);
    }

    #[test]
    fn shape_datatype_and_missing_outputs_never_match() {
        let p = [fp32("y", vec![2], &[1.0, 2.0]), fp32("z", vec![1], &[1.0])];
        let s = [fp32("y", vec![1, 2], &[1.0, 2.0])];
        let d = compare(&p, &s, &settings(0));
        assert!(!d[0].shape_match && d[0].present && d[0].elements == 0 && !d[0].matches());
        assert!(!d[1].present && !d[1].matches());
        let s64 = [Tensor::from_f64("y", DataType::Fp64, vec![2], &[1.0, 2.0]).unwrap()];
        let d = &compare(&p[..1], &s64, &settings(0))[0];
        assert!(d.shape_match && !d.datatype_match && !d.matches());
        assert_eq!(d.exact, 2, "the values themselves agree");
    }

    #[test]
    fn top_k_agreement_per_row() {
        let p = [fp32("y", vec![3, 3], &[0.1, 0.8, 0.1, 0.5, 0.3, 0.2, 0.2, 0.3, 0.5])];
        // Row 0: same argmax. Row 1: argmax moves 0 → 1. Row 2: same argmax, values shifted.
        let s = [fp32("y", vec![3, 3], &[0.2, 0.7, 0.1, 0.3, 0.5, 0.2, 0.25, 0.3, 0.45])];
        let d = &compare(&p, &s, &settings(1))[0];
        assert_eq!((d.topk_rows, d.topk_agree), (3, 2));
        // Top-2 of row 1 is {0, 1} on both sides; row 2 {1, 2} on both; row 0 {0,1} vs {0,1}.
        let d = &compare(&p, &s, &settings(2))[0];
        assert_eq!((d.topk_rows, d.topk_agree), (3, 3));
        // k larger than the classes: not compared.
        let d = &compare(&p, &s, &settings(4))[0];
        assert_eq!(d.topk_rows, 0);
    }

    #[test]
    fn bytes_outputs_compare_exactly() {
        let t = |v: &[&str]| Tensor {
            name: "s".into(),
            datatype: DataType::Bytes,
            shape: vec![v.len() as i64],
            data: TensorData::Bytes(v.iter().map(|s| bytes::Bytes::from(s.to_string())).collect()),
        };
        let d = &compare(&[t(&["a", "b"])], &[t(&["a", "c"])], &settings(1))[0];
        assert_eq!((d.elements, d.exact, d.within), (2, 1, 1));
        assert!(!d.matches());
        assert!(compare(&[t(&["a"])], &[t(&["a"])], &settings(0))[0].matches());
    }
}
