//! Model-agnostic attributions for one row, computed from the model's
//! answers on perturbed copies of the row: which of the row's features moved
//! one output element (the *target*) away from its value at a reference point
//! (the reference profile's per-feature means).
//!
//! Pure and synchronous: a [`Plan`] lists the rows to evaluate (row 0 is the
//! explained row `x`, row 1 the reference, then the method's rows), the
//! caller evaluates them however it likes (the service sends them through
//! the version's queue in batches, as background work) and hands back the
//! target's value for each, and [`Plan::attributions`] combines them. A plan
//! never holds its rows: [`Plan::fill_row`] writes one on demand, so memory
//! stays at one batch of rows whatever the budget.
//!
//! - **Occlusion**: attribution_i = f(x) − f(x with x_i replaced by
//!   reference_i); `features + 2` evaluations (the reference is evaluated for
//!   the response's baseline).
//! - **Shapley** (permutation sampling): walk a random permutation from the
//!   reference to `x`, one feature at a time; each step's change of f is that
//!   feature's marginal contribution; attributions are the mean over the
//!   permutations. Every walk shares the evaluations of its two ends (f(x)
//!   and f(reference)), so the attributions sum to f(x) − f(reference) up to
//!   rounding, and a permutation costs `features − 1` evaluations beyond the
//!   first two. Permutations come in antithetic pairs (each one followed by
//!   its reverse), which halves the variance for models with pairwise
//!   interactions and makes two-feature explanations exact.

/// An attribution method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// One feature at a time replaced by its reference value.
    Occlusion,
    /// Sampled Shapley values (permutation sampling).
    Shapley,
}

impl Method {
    /// The method called `name` (`occlusion`, `shapley`).
    pub fn parse(name: &str) -> Option<Method> {
        match name {
            "occlusion" => Some(Method::Occlusion),
            "shapley" => Some(Method::Shapley),
            _ => None,
        }
    }

    /// Its name, as requests and metric labels spell it.
    pub fn label(self) -> &'static str {
        match self {
            Method::Occlusion => "occlusion",
            Method::Shapley => "shapley",
        }
    }

    /// Evaluations the method needs at least for a row of `features`
    /// features (Shapley: one permutation).
    pub fn min_evaluations(self, features: usize) -> usize {
        match self {
            Method::Occlusion => features.saturating_add(2),
            Method::Shapley => features.max(1).saturating_add(1),
        }
    }
}

/// The rows one explanation evaluates, and how their answers combine.
#[derive(Debug, Clone)]
pub struct Plan {
    method: Method,
    x: Vec<f64>,
    reference: Vec<f64>,
    /// Shapley only: feature indices, one permutation after another
    /// (`features` entries each).
    permutations: Vec<u32>,
}

/// Row 0 is the explained row.
pub const ROW_X: usize = 0;
/// Row 1 is the reference.
pub const ROW_REFERENCE: usize = 1;

impl Plan {
    /// The plan of `method` for row `x` against `reference` within `budget`
    /// evaluations (Shapley takes as many permutations as fit, `seed` drawing
    /// them). `Err(needed)` when the method needs more than the budget. The
    /// two rows must have the same, non-zero length (the caller checks).
    pub fn new(method: Method, x: Vec<f64>, reference: Vec<f64>, budget: usize, seed: u64) -> Result<Plan, usize> {
        debug_assert_eq!(x.len(), reference.len());
        let n = x.len();
        let needed = method.min_evaluations(n);
        if needed > budget {
            return Err(needed);
        }
        let mut permutations = Vec::new();
        if method == Method::Shapley && n >= 2 {
            // Capped by the budget, which the caller caps: at most ~2 × budget indices.
            let count = (budget - 2) / (n - 1);
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut perm: Vec<u32> = (0..n as u32).collect();
            permutations.reserve(count * n);
            for p in 0..count {
                if p % 2 == 0 {
                    rng.shuffle(&mut perm);
                } else {
                    perm.reverse();
                }
                permutations.extend_from_slice(&perm);
            }
        }
        Ok(Plan {
            method,
            x,
            reference,
            permutations,
        })
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// Features of the row.
    pub fn features(&self) -> usize {
        self.x.len()
    }

    /// The explained row.
    pub fn x(&self) -> &[f64] {
        &self.x
    }

    /// The reference point.
    pub fn reference(&self) -> &[f64] {
        &self.reference
    }

    /// Shapley permutations sampled (0 for occlusion; 1 for a one-feature row).
    pub fn permutations(&self) -> usize {
        match self.method {
            Method::Occlusion => 0,
            Method::Shapley if self.x.len() < 2 => 1,
            Method::Shapley => self.permutations.len() / self.x.len(),
        }
    }

    /// Rows to evaluate (the evaluations the explanation costs).
    pub fn rows(&self) -> usize {
        let n = self.x.len();
        match self.method {
            Method::Occlusion => n + 2,
            Method::Shapley if n < 2 => 2,
            Method::Shapley => 2 + self.permutations() * (n - 1),
        }
    }

    /// Writes row `k` (`k < rows()`) into `out` (`features()` long).
    pub fn fill_row(&self, k: usize, out: &mut [f64]) {
        let n = self.x.len();
        match k {
            ROW_X => out.copy_from_slice(&self.x),
            ROW_REFERENCE => out.copy_from_slice(&self.reference),
            _ => match self.method {
                Method::Occlusion => {
                    out.copy_from_slice(&self.x);
                    out[k - 2] = self.reference[k - 2];
                }
                Method::Shapley => {
                    // Permutation p, after its first `s` features moved to x (1 ≤ s < n).
                    let (p, s) = ((k - 2) / (n - 1), (k - 2) % (n - 1) + 1);
                    out.copy_from_slice(&self.reference);
                    for &i in &self.permutations[p * n..p * n + s] {
                        out[i as usize] = self.x[i as usize];
                    }
                }
            },
        }
    }

    /// The attribution of every feature from the target's value on each row
    /// (`values[k]` for row `k`; `rows()` values).
    pub fn attributions(&self, values: &[f64]) -> Vec<f64> {
        let n = self.x.len();
        let (fx, fref) = (values[ROW_X], values[ROW_REFERENCE]);
        match self.method {
            Method::Occlusion => (0..n).map(|i| fx - values[2 + i]).collect(),
            Method::Shapley if n < 2 => vec![fx - fref; n],
            Method::Shapley => {
                let mut sums = vec![0.0; n];
                let count = self.permutations();
                for p in 0..count {
                    let mut previous = fref;
                    for s in 1..=n {
                        let current = if s == n { fx } else { values[2 + p * (n - 1) + s - 1] };
                        sums[self.permutations[p * n + s - 1] as usize] += current - previous;
                        previous = current;
                    }
                }
                sums.iter().map(|s| s / count as f64).collect()
            }
        }
    }
}

/// Evaluates every row of `plan` with `f` (the target's value of one row)
/// and combines: the synchronous path, for callers that can evaluate
/// directly (and tests).
pub fn explain_with(plan: &Plan, mut f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    let mut row = vec![0.0; plan.features()];
    let values: Vec<f64> = (0..plan.rows())
        .map(|k| {
            plan.fill_row(k, &mut row);
            f(&row)
        })
        .collect();
    plan.attributions(&values)
}

/// The default target of an output row: its largest element (the first on
/// ties, NaN never) for rows of two or more elements, else element 0.
pub fn default_target(row: &[f64]) -> usize {
    if row.len() < 2 {
        return 0;
    }
    let mut best: Option<(usize, f64)> = None;
    for (i, &v) in row.iter().enumerate() {
        if !v.is_nan() && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map_or(0, |(i, _)| i)
}

#[cfg(test)]
mod tests;
