//! The reference profile: what "normal" traffic looks like, per tensor and
//! feature, as quantile bins with their reference proportions (and class
//! proportions for class-score outputs). Built from reference samples (a
//! golden set) or shipped as `profile.json`.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::stats::{self, AGGREGATE_FEATURE, REFERENCE_BINS, Welford};
use crate::tensor::{Tensor, bound_message, echo};

/// The `format` field of profiles this version reads and writes.
pub const PROFILE_FORMAT: &str = "switchyard-drift-profile/1";

/// Reference values kept per feature when building a profile (reservoir sample).
const RESERVOIR: usize = 200_000;

/// Whether a tensor is a request input or a response output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A request input.
    Input,
    /// A response output.
    Output,
}

/// A reference profile of one model version (serialised as JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Always [`PROFILE_FORMAT`].
    pub format: String,
    /// Rows with more elements than this were summarised as one feature `"*"`.
    pub max_features: usize,
    /// Whether rank-1 tensors were read as `[rows]` (a batching model) rather than one sample.
    pub batched: bool,
    /// Reference samples (rows) the profile was built from.
    pub samples: u64,
    /// Per tensor.
    pub tensors: Vec<TensorProfile>,
}

/// The reference of one tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorProfile {
    /// Tensor name.
    pub name: String,
    /// Input or output.
    pub role: Role,
    /// Datatype name (`"FP32"`, ...), informational.
    pub datatype: String,
    /// Per feature: `"0"`, `"1"`, ... (flat index within a row) or `"*"` (aggregate).
    pub features: Vec<FeatureProfile>,
    /// Argmax class proportions of a class-score output (index = class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<f64>>,
}

/// The reference distribution of one feature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureProfile {
    /// Feature label.
    pub feature: String,
    /// Finite reference values.
    pub count: u64,
    /// Mean of the finite reference values.
    pub mean: f64,
    /// Population standard deviation of the finite reference values.
    pub std: f64,
    /// Strictly ascending, finite inner bin edges; the bins are `(-inf, e0]`,
    /// `(e0, e1]`, ..., `(e_last, +inf)`.
    pub edges: Vec<f64>,
    /// Reference proportion of each bin (`edges.len() + 1` values summing to 1).
    pub proportions: Vec<f64>,
}

impl Profile {
    /// Builds a profile from reference `(inputs, outputs)` pairs of a batching
    /// model (a leading batch dimension; see [`Profile::from_samples_with`]).
    pub fn from_samples(samples: &[(Vec<Tensor>, Vec<Tensor>)], max_features: usize) -> Profile {
        Profile::from_samples_with(samples, max_features, true)
    }

    /// Builds a profile; `batched` says whether rank-1 tensors are `[rows]`
    /// (as [`super::DriftSettings::batched`]). Ten quantile bins per feature
    /// (fewer where values repeat); features without finite values are left out.
    pub fn from_samples_with(samples: &[(Vec<Tensor>, Vec<Tensor>)], max_features: usize, batched: bool) -> Profile {
        let mut builder = Builder::default();
        let mut rows_seen: u64 = 0;
        let mut buf = Vec::new();
        for (inputs, outputs) in samples {
            let mut rows = 0;
            for (role, tensors) in [(Role::Input, inputs), (Role::Output, outputs)] {
                for t in tensors {
                    let Some(l) = stats::layout(t, role == Role::Output, batched, max_features) else {
                        continue;
                    };
                    rows = rows.max(l.rows);
                    let acc = builder.tensor(role, t);
                    for r in 0..l.rows {
                        stats::decode(t.datatype, stats::row_bytes(t, &l, r), &mut buf);
                        acc.push_row(&buf, &l);
                    }
                }
            }
            rows_seen += rows as u64;
        }
        Profile {
            format: PROFILE_FORMAT.to_string(),
            max_features,
            batched,
            samples: rows_seen,
            tensors: builder.finish(),
        }
    }

    /// Reads and checks a profile from a JSON file.
    pub fn load(path: impl AsRef<Path>) -> Result<Profile, String> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Profile::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses and checks a profile from JSON text.
    pub fn from_json(text: &str) -> Result<Profile, String> {
        let p: Profile =
            serde_json::from_str(text).map_err(|e| bound_message(format!("invalid drift profile: {e}")))?;
        p.validate()?;
        Ok(p)
    }

    /// The profile as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a profile serialises")
    }

    /// Writes the profile as JSON to `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), String> {
        let path = path.as_ref();
        std::fs::write(path, self.to_json()).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Checks the format tag and the shape of every bin table.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != PROFILE_FORMAT {
            return Err(format!(
                "unsupported drift profile format '{}' (expected '{PROFILE_FORMAT}')",
                echo(&self.format)
            ));
        }
        for t in &self.tensors {
            for f in &t.features {
                let at = || format!("tensor '{}' feature '{}'", echo(&t.name), echo(&f.feature));
                if f.proportions.len() != f.edges.len() + 1 {
                    return Err(format!(
                        "{}: {} edges need {} proportions",
                        at(),
                        f.edges.len(),
                        f.edges.len() + 1
                    ));
                }
                if f.edges.iter().any(|e| !e.is_finite()) || f.edges.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(format!("{}: edges must be finite and strictly ascending", at()));
                }
                if f.proportions.iter().any(|p| !p.is_finite() || *p < 0.0) {
                    return Err(format!("{}: proportions must be finite and non-negative", at()));
                }
            }
            if let Some(c) = &t.classes
                && c.iter().any(|p| !p.is_finite() || *p < 0.0)
            {
                return Err(format!(
                    "tensor '{}': class proportions must be finite and non-negative",
                    echo(&t.name)
                ));
            }
        }
        Ok(())
    }

    /// The reference of one tensor.
    pub fn tensor(&self, role: Role, name: &str) -> Option<&TensorProfile> {
        self.tensors.iter().find(|t| t.role == role && t.name == name)
    }
}

/// Accumulates reference values per tensor and feature.
#[derive(Default)]
struct Builder {
    order: Vec<(Role, String)>,
    tensors: HashMap<(Role, String), TensorAcc>,
}

impl Builder {
    fn tensor(&mut self, role: Role, t: &Tensor) -> &mut TensorAcc {
        let key = (role, t.name.clone());
        if !self.tensors.contains_key(&key) {
            self.order.push(key.clone());
        }
        self.tensors.entry(key).or_insert_with(|| TensorAcc {
            datatype: t.datatype.as_str().to_string(),
            per_index: Vec::new(),
            aggregate: None,
            classes: Vec::new(),
        })
    }

    fn finish(mut self) -> Vec<TensorProfile> {
        let mut out = Vec::new();
        for key in &self.order {
            let Some(acc) = self.tensors.remove(key) else { continue };
            let features = acc
                .per_index
                .into_iter()
                .enumerate()
                .map(|(i, f)| (i.to_string(), f))
                .chain(acc.aggregate.map(|f| (AGGREGATE_FEATURE.to_string(), f)))
                .filter_map(|(label, f)| f.finish(label))
                .collect();
            let classes = (acc.classes.iter().sum::<u64>() > 0).then(|| stats::proportions(&acc.classes));
            out.push(TensorProfile {
                name: key.1.clone(),
                role: key.0,
                datatype: acc.datatype,
                features,
                classes,
            });
        }
        out
    }
}

struct TensorAcc {
    datatype: String,
    per_index: Vec<FeatureAcc>,
    aggregate: Option<FeatureAcc>,
    classes: Vec<u64>,
}

impl TensorAcc {
    fn push_row(&mut self, values: &[f64], l: &stats::Layout) {
        if l.aggregate {
            let f = self.aggregate.get_or_insert_with(FeatureAcc::default);
            for &x in values {
                f.push(x);
            }
        } else {
            if self.per_index.len() < values.len() {
                self.per_index.resize_with(values.len(), FeatureAcc::default);
            }
            for (f, &x) in self.per_index.iter_mut().zip(values) {
                f.push(x);
            }
        }
        if let Some(c) = l.classes
            && let Some(k) = stats::argmax(values)
        {
            if self.classes.len() < c {
                self.classes.resize(c, 0);
            }
            self.classes[k] += 1;
        }
    }
}

/// Welford statistics plus a deterministic reservoir of finite values.
#[derive(Default)]
struct FeatureAcc {
    stats: Welford,
    reservoir: Vec<f64>,
    rng: u64,
}

impl FeatureAcc {
    fn push(&mut self, x: f64) {
        self.stats.push(x);
        if !x.is_finite() {
            return;
        }
        let seen = self.stats.finite as usize;
        if self.reservoir.len() < RESERVOIR {
            self.reservoir.push(x);
            return;
        }
        // Algorithm R with a fixed-seed xorshift: the same samples give the same profile.
        if self.rng == 0 {
            self.rng = 0x9E37_79B9_7F4A_7C15;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let j = (self.rng % seen as u64) as usize;
        if j < RESERVOIR {
            self.reservoir[j] = x;
        }
    }

    fn finish(mut self, feature: String) -> Option<FeatureProfile> {
        if self.reservoir.is_empty() {
            return None;
        }
        self.reservoir.sort_by(f64::total_cmp);
        let edges = stats::quantile_edges(&self.reservoir, REFERENCE_BINS);
        let mut counts = vec![0u64; edges.len() + 1];
        for &x in &self.reservoir {
            counts[stats::bin(&edges, x)] += 1;
        }
        Some(FeatureProfile {
            feature,
            count: self.stats.finite,
            mean: self.stats.mean().unwrap_or(0.0),
            std: self.stats.std().unwrap_or(0.0),
            edges,
            proportions: stats::proportions(&counts),
        })
    }
}
