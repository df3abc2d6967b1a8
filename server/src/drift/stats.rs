//! Numeric building blocks shared by the live statistics and the reference
//! profile: decoding rows to `f64`, the row/feature layout of a tensor,
//! Welford statistics, quantile bin edges and the population stability index.

use crate::tensor::{DataType, Tensor, TensorData};

/// Label of the one aggregate feature of a tensor whose rows hold more than
/// `max_features` elements.
pub const AGGREGATE_FEATURE: &str = "*";
/// `feature` label of the PSI of a class output's argmax distribution.
pub const CLASS_FEATURE: &str = "argmax";
/// Fewest classes for an output to count as class scores.
pub const MIN_CLASSES: usize = 2;
/// Most classes for an output to count as class scores.
pub const MAX_CLASSES: usize = 1000;
/// Proportions below this are raised to it in the PSI, so empty bins stay finite.
pub const PSI_EPSILON: f64 = 1e-4;
/// Quantile bins per feature in a reference profile.
pub const REFERENCE_BINS: usize = 10;

/// How a tensor splits into samples (rows) and features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Samples in the tensor.
    pub rows: usize,
    /// Elements per sample.
    pub per_row: usize,
    /// More than `max_features` elements per row: one aggregate feature.
    pub aggregate: bool,
    /// Class count where the tensor looks like class scores.
    pub classes: Option<usize>,
}

fn is_float(dt: DataType) -> bool {
    matches!(dt, DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64)
}

/// The layout of `t`, or `None` when it is not numeric, empty or inconsistent.
///
/// Rows: `shape[0]` for a tensor of rank ≥ 2 (a batch dimension, or a model's
/// own leading dynamic dimension), and for rank 1 when the model batches;
/// otherwise the whole tensor is one sample.
pub(crate) fn layout(t: &Tensor, is_output: bool, batched: bool, max_features: usize) -> Option<Layout> {
    let size = t.datatype.size()?;
    let TensorData::Fixed(bytes) = &t.data else {
        return None;
    };
    let mut elements: usize = 1;
    for &d in &t.shape {
        elements = elements.checked_mul(usize::try_from(d).ok()?)?;
    }
    if elements == 0 || bytes.len() != elements.checked_mul(size)? {
        return None;
    }
    let rows = match t.shape.len() {
        0 => 1,
        1 if !batched => 1,
        _ => usize::try_from(t.shape[0]).ok()?,
    };
    let per_row = elements / rows;
    let classes =
        (is_output && is_float(t.datatype) && t.shape.len() == 2 && (MIN_CLASSES..=MAX_CLASSES).contains(&per_row))
            .then_some(per_row);
    Some(Layout {
        rows,
        per_row,
        aggregate: per_row > max_features,
        classes,
    })
}

/// The raw bytes of row `row` of `t` (whose layout is `l`).
pub(crate) fn row_bytes<'a>(t: &'a Tensor, l: &Layout, row: usize) -> &'a [u8] {
    let (TensorData::Fixed(bytes), Some(size)) = (&t.data, t.datatype.size()) else {
        return &[];
    };
    let len = l.per_row * size;
    &bytes[row * len..(row + 1) * len]
}

fn arr<const N: usize>(c: &[u8]) -> [u8; N] {
    c.try_into().expect("chunks_exact yields N bytes")
}

/// Decodes little-endian elements of `dt` into `out` (cleared first); BYTES yields nothing.
pub(crate) fn decode(dt: DataType, bytes: &[u8], out: &mut Vec<f64>) {
    out.clear();
    match dt {
        DataType::Bool => out.extend(bytes.iter().map(|&b| f64::from(u8::from(b != 0)))),
        DataType::Uint8 => out.extend(bytes.iter().map(|&b| f64::from(b))),
        DataType::Int8 => out.extend(bytes.iter().map(|&b| f64::from(b as i8))),
        DataType::Uint16 => out.extend(bytes.chunks_exact(2).map(|c| f64::from(u16::from_le_bytes(arr(c))))),
        DataType::Int16 => out.extend(bytes.chunks_exact(2).map(|c| f64::from(i16::from_le_bytes(arr(c))))),
        DataType::Uint32 => out.extend(bytes.chunks_exact(4).map(|c| f64::from(u32::from_le_bytes(arr(c))))),
        DataType::Int32 => out.extend(bytes.chunks_exact(4).map(|c| f64::from(i32::from_le_bytes(arr(c))))),
        DataType::Uint64 => out.extend(bytes.chunks_exact(8).map(|c| u64::from_le_bytes(arr(c)) as f64)),
        DataType::Int64 => out.extend(bytes.chunks_exact(8).map(|c| i64::from_le_bytes(arr(c)) as f64)),
        DataType::Fp16 => out.extend(bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes(arr(c)).to_f64())),
        DataType::Bf16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes(arr(c)).to_f64()),
        ),
        DataType::Fp32 => out.extend(bytes.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes(arr(c))))),
        DataType::Fp64 => out.extend(bytes.chunks_exact(8).map(|c| f64::from_le_bytes(arr(c)))),
        DataType::Bytes => {}
    }
}

/// Index of the largest non-NaN value (the first on ties); `None` when all are NaN.
pub(crate) fn argmax(values: &[f64]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, &x) in values.iter().enumerate() {
        if x.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    best.map(|(i, _)| i)
}

/// Running statistics (Welford): all values are counted, NaN and ±Inf apart;
/// min, max, mean and the population standard deviation cover finite values.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Welford {
    /// Values seen, non-finite included.
    pub count: u64,
    /// NaN values.
    pub nan: u64,
    /// +Inf and -Inf values.
    pub inf: u64,
    /// Finite values.
    pub finite: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl Welford {
    /// Adds one value.
    #[inline]
    pub fn push(&mut self, x: f64) {
        self.count += 1;
        if x.is_nan() {
            self.nan += 1;
        } else if x.is_infinite() {
            self.inf += 1;
        } else {
            self.finite += 1;
            if self.finite == 1 {
                self.min = x;
                self.max = x;
            } else {
                self.min = self.min.min(x);
                self.max = self.max.max(x);
            }
            let d = x - self.mean;
            self.mean += d / self.finite as f64;
            self.m2 += d * (x - self.mean);
        }
    }

    /// Adds everything `other` saw (Chan et al.'s parallel combination).
    pub fn merge(&mut self, other: &Welford) {
        if other.finite > 0 {
            if self.finite == 0 {
                self.mean = other.mean;
                self.m2 = other.m2;
                self.min = other.min;
                self.max = other.max;
            } else {
                let (na, nb) = (self.finite as f64, other.finite as f64);
                let n = na + nb;
                let delta = other.mean - self.mean;
                self.mean += delta * nb / n;
                self.m2 += other.m2 + delta * delta * na * nb / n;
                self.min = self.min.min(other.min);
                self.max = self.max.max(other.max);
            }
        }
        self.count += other.count;
        self.nan += other.nan;
        self.inf += other.inf;
        self.finite += other.finite;
    }

    /// Mean of the finite values.
    pub fn mean(&self) -> Option<f64> {
        (self.finite > 0).then_some(self.mean)
    }

    /// Population standard deviation of the finite values.
    pub fn std(&self) -> Option<f64> {
        (self.finite > 0).then(|| (self.m2 / self.finite as f64).max(0.0).sqrt())
    }

    /// Smallest finite value.
    pub fn min(&self) -> Option<f64> {
        (self.finite > 0).then_some(self.min)
    }

    /// Largest finite value.
    pub fn max(&self) -> Option<f64> {
        (self.finite > 0).then_some(self.max)
    }
}

/// The bin of `x` given ascending inner `edges`: bin `i` is `(edges[i-1], edges[i]]`,
/// with open ends `(-inf, edges[0]]` and `(edges[last], +inf)`. NaN must be filtered out first.
#[inline]
pub(crate) fn bin(edges: &[f64], x: f64) -> usize {
    edges.partition_point(|e| *e < x)
}

/// Up to `bins - 1` strictly ascending inner edges at the quantiles of the sorted finite `values`.
pub(crate) fn quantile_edges(sorted: &[f64], bins: usize) -> Vec<f64> {
    let mut edges: Vec<f64> = Vec::with_capacity(bins.saturating_sub(1));
    if sorted.is_empty() {
        return edges;
    }
    let n = sorted.len();
    for i in 1..bins {
        let idx = (i * (n - 1)) / bins;
        let e = sorted[idx];
        if edges.last().is_none_or(|&last| e > last) {
            edges.push(e);
        }
    }
    edges
}

/// Population stability index of observed `counts` against `expected` proportions:
/// Σ (a − e) · ln(a / e), proportions raised to [`PSI_EPSILON`]; `None` without observations.
pub(crate) fn psi(expected: &[f64], counts: &[u64]) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 || expected.is_empty() {
        return None;
    }
    let total = total as f64;
    let len = expected.len().max(counts.len());
    let mut sum = 0.0;
    for i in 0..len {
        let e = expected.get(i).copied().unwrap_or(0.0).max(PSI_EPSILON);
        let a = (counts.get(i).copied().unwrap_or(0) as f64 / total).max(PSI_EPSILON);
        sum += (a - e) * (a / e).ln();
    }
    Some(sum)
}

/// Counts as proportions of their sum (all zeros when the sum is 0).
pub(crate) fn proportions(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    counts
        .iter()
        .map(|&c| if total == 0 { 0.0 } else { c as f64 / total as f64 })
        .collect()
}
