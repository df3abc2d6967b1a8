//! The shadow's promotion gate: thresholds in the policy, decided once, after
//! enough request pairs, on the totals since the experiment started.

use serde::{Deserialize, Serialize};

/// What the gate does when every threshold holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnPass {
    /// The shadow's target becomes the policy's default; canaries and the
    /// shadow end (a traffic override, audited as `shadow_gate`).
    #[default]
    Promote,
    /// Only the report says so.
    Report,
}

/// What the gate does when a threshold is breached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFail {
    /// Mirroring stops (a traffic override without the shadow, audited).
    #[default]
    Stop,
    /// Only the report says so.
    Report,
}

fn default_min_pairs() -> u64 {
    1000
}
fn default_mismatch() -> f64 {
    0.01
}
fn default_error() -> f64 {
    0.001
}
fn one() -> f64 {
    1.0
}

/// The promotion gate of a shadow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// Mirrored pairs that must have finished (compared, or failed on either
    /// side) before the gate decides, in [1, 10^9].
    #[serde(default = "default_min_pairs")]
    pub min_pairs: u64,
    /// Largest share of pairs, both sides answered, whose outputs disagree
    /// beyond the tolerance, in [0, 1].
    #[serde(default = "default_mismatch")]
    pub max_mismatch_rate: f64,
    /// Largest share of pairs that failed on the shadow only, in [0, 1].
    #[serde(default = "default_error")]
    pub max_error_rate: f64,
    /// Largest ratio of the shadow's mean latency to the primary's, in
    /// (0, 1000]; absent = latency is not judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_ratio: Option<f64>,
    /// Rows labelled by ground-truth feedback that each side (primary and
    /// shadow, over their quality windows) needs before the gate decides, in
    /// [1, 10^9]; absent = live quality is not judged. Both versions need
    /// quality monitoring (`quality.*` parameters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_labelled: Option<u64>,
    /// With `min_labelled`, classifiers: largest drop of the shadow's live
    /// accuracy below the primary's, in [0, 1].
    #[serde(default)]
    pub max_accuracy_drop: f64,
    /// With `min_labelled`, regressors: largest ratio of the shadow's live
    /// mean absolute error to the primary's, in (0, 1000].
    #[serde(default = "one")]
    pub max_error_ratio: f64,
    /// When every threshold holds.
    #[serde(default)]
    pub on_pass: OnPass,
    /// When a threshold is breached.
    #[serde(default)]
    pub on_fail: OnFail,
}

/// What the gate found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Every threshold held.
    pub passed: bool,
    /// One line: the rates against their thresholds.
    pub reason: String,
}

/// The counts the gate reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct GateInput {
    /// Pairs finished (compared, or an error on either side).
    pub pairs: u64,
    /// Pairs both sides answered.
    pub compared: u64,
    /// Of those, pairs whose outputs disagree.
    pub mismatched: u64,
    /// Pairs that failed on the shadow only.
    pub shadow_errors: u64,
    /// Mean latency of the primary and of the shadow (one unit for both),
    /// over the compared pairs.
    pub primary_latency: f64,
    /// See `primary_latency`.
    pub shadow_latency: f64,
    /// Live quality of both sides, when the gate judges it.
    pub quality: Option<QualityInput>,
}

/// Live quality (from feedback) of the primary and the shadow, over their windows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QualityInput {
    /// Labelled rows of the primary.
    pub primary_labelled: u64,
    /// Labelled rows of the shadow.
    pub shadow_labelled: u64,
    /// Accuracy of the primary (classifiers).
    pub primary_accuracy: Option<f64>,
    /// Accuracy of the shadow.
    pub shadow_accuracy: Option<f64>,
    /// Mean absolute error of the primary (regressors).
    pub primary_mae: Option<f64>,
    /// Mean absolute error of the shadow.
    pub shadow_mae: Option<f64>,
}

impl Gate {
    /// Checks the bounds: `Err((field, why))`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=1_000_000_000).contains(&self.min_pairs) {
            return Err(("min_pairs", format!("{} is not in [1, 1000000000]", self.min_pairs)));
        }
        for (field, v) in [
            ("max_mismatch_rate", self.max_mismatch_rate),
            ("max_error_rate", self.max_error_rate),
        ] {
            if !v.is_finite() || !(0.0..=1.0).contains(&v) {
                return Err((field, format!("{v} is not in [0, 1]")));
            }
        }
        if let Some(r) = self.max_latency_ratio
            && !(r.is_finite() && r > 0.0 && r <= 1000.0)
        {
            return Err(("max_latency_ratio", format!("{r} is not in (0, 1000]")));
        }
        if let Some(n) = self.min_labelled
            && !(1..=1_000_000_000).contains(&n)
        {
            return Err(("min_labelled", format!("{n} is not in [1, 1000000000]")));
        }
        if !(self.max_accuracy_drop.is_finite() && (0.0..=1.0).contains(&self.max_accuracy_drop)) {
            return Err((
                "max_accuracy_drop",
                format!("{} is not in [0, 1]", self.max_accuracy_drop),
            ));
        }
        let r = self.max_error_ratio;
        if !(r.is_finite() && r > 0.0 && r <= 1000.0) {
            return Err(("max_error_ratio", format!("{r} is not in (0, 1000]")));
        }
        Ok(())
    }

    /// `None` until `min_pairs` pairs have finished (and, with
    /// `min_labelled`, both sides have that many labelled rows); then the verdict.
    pub fn decide(&self, c: &GateInput) -> Option<Verdict> {
        if c.pairs < self.min_pairs {
            return None;
        }
        let quality = match self.min_labelled {
            Some(n) => {
                let q = c.quality?;
                if q.primary_labelled < n || q.shadow_labelled < n {
                    return None;
                }
                Some(q)
            }
            None => None,
        };
        let rate = |n: u64, of: u64| if of == 0 { 0.0 } else { n as f64 / of as f64 };
        let mismatch = rate(c.mismatched, c.compared);
        let errors = rate(c.shadow_errors, c.pairs);
        let mut breaches = Vec::new();
        let mut facts = vec![
            format!("mismatch rate {mismatch:.4} (max {})", self.max_mismatch_rate),
            format!("shadow-only error rate {errors:.4} (max {})", self.max_error_rate),
        ];
        if mismatch > self.max_mismatch_rate {
            breaches.push("mismatch rate");
        }
        if errors > self.max_error_rate {
            breaches.push("error rate");
        }
        if c.compared == 0 {
            breaches.push("no pair was compared");
        }
        if let Some(max) = self.max_latency_ratio {
            let ratio = if c.primary_latency > 0.0 {
                c.shadow_latency / c.primary_latency
            } else {
                1.0
            };
            facts.push(format!("latency ratio {ratio:.3} (max {max})"));
            if ratio > max {
                breaches.push("latency ratio");
            }
        }
        if let Some(q) = quality {
            if let (Some(p), Some(s)) = (q.primary_accuracy, q.shadow_accuracy) {
                facts.push(format!(
                    "live accuracy {s:.4} vs primary {p:.4} (max drop {})",
                    self.max_accuracy_drop
                ));
                if p - s > self.max_accuracy_drop {
                    breaches.push("live accuracy");
                }
            }
            if let (Some(p), Some(s)) = (q.primary_mae, q.shadow_mae) {
                let ratio = if p > 0.0 {
                    s / p
                } else if s > 0.0 {
                    f64::INFINITY
                } else {
                    1.0
                };
                facts.push(format!("live MAE ratio {ratio:.3} (max {})", self.max_error_ratio));
                if ratio > self.max_error_ratio {
                    breaches.push("live error");
                }
            }
        }
        let passed = breaches.is_empty();
        let head = if passed {
            format!("passed after {} pairs", c.pairs)
        } else {
            format!("failed after {} pairs ({})", c.pairs, breaches.join(", "))
        };
        Some(Verdict {
            passed,
            reason: format!("{head}: {}", facts.join(", ")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> Gate {
        serde_yaml_ng::from_str("{min_pairs: 100, max_latency_ratio: 2}").unwrap()
    }

    fn input(pairs: u64, mismatched: u64, shadow_errors: u64, latency: (f64, f64)) -> GateInput {
        GateInput {
            pairs,
            compared: pairs - shadow_errors,
            mismatched,
            shadow_errors,
            primary_latency: latency.0,
            shadow_latency: latency.1,
            quality: None,
        }
    }

    #[test]
    fn live_quality_waits_for_labels_then_refuses_a_worse_candidate() {
        let g: Gate = serde_yaml_ng::from_str("{min_pairs: 10, min_labelled: 50, max_accuracy_drop: 0.02}").unwrap();
        assert!(g.validate().is_ok());
        let mut c = input(10, 0, 0, (1.0, 1.0));
        assert_eq!(g.decide(&c), None, "no quality figures yet");
        let q = QualityInput {
            primary_labelled: 50,
            shadow_labelled: 49,
            primary_accuracy: Some(0.90),
            shadow_accuracy: Some(0.85),
            ..QualityInput::default()
        };
        c.quality = Some(q);
        assert_eq!(g.decide(&c), None, "the shadow has 49 labelled rows of 50");
        c.quality = Some(QualityInput {
            shadow_labelled: 50,
            ..q
        });
        let v = g.decide(&c).unwrap();
        assert!(
            !v.passed && v.reason.contains("live accuracy 0.8500 vs primary 0.9000"),
            "{v:?}"
        );
        c.quality = Some(QualityInput {
            shadow_labelled: 50,
            shadow_accuracy: Some(0.89),
            ..q
        });
        assert!(g.decide(&c).unwrap().passed);
        // Regressors: the MAE ratio.
        let g: Gate = serde_yaml_ng::from_str("{min_pairs: 10, min_labelled: 1, max_error_ratio: 1.1}").unwrap();
        c.quality = Some(QualityInput {
            primary_labelled: 5,
            shadow_labelled: 5,
            primary_mae: Some(1.0),
            shadow_mae: Some(1.2),
            ..QualityInput::default()
        });
        assert!(!g.decide(&c).unwrap().passed);
        for (text, field) in [
            ("{min_labelled: 0}", "min_labelled"),
            ("{max_accuracy_drop: 2}", "max_accuracy_drop"),
            ("{max_error_ratio: 0}", "max_error_ratio"),
        ] {
            let g: Gate = serde_yaml_ng::from_str(text).unwrap();
            assert_eq!(g.validate().unwrap_err().0, field, "{text}");
        }
    }

    #[test]
    fn defaults_and_bounds() {
        let g: Gate = serde_yaml_ng::from_str("{}").unwrap();
        assert_eq!(
            (g.min_pairs, g.on_pass, g.on_fail),
            (1000, OnPass::Promote, OnFail::Stop)
        );
        assert!(g.validate().is_ok());
        for (text, field) in [
            ("{min_pairs: 0}", "min_pairs"),
            ("{max_mismatch_rate: 1.5}", "max_mismatch_rate"),
            ("{max_error_rate: -0.1}", "max_error_rate"),
            ("{max_latency_ratio: 0}", "max_latency_ratio"),
        ] {
            let g: Gate = serde_yaml_ng::from_str(text).unwrap();
            assert_eq!(g.validate().unwrap_err().0, field, "{text}");
        }
        assert!(serde_yaml_ng::from_str::<Gate>("{on_pass: maybe}").is_err());
    }

    #[test]
    fn decides_only_after_min_pairs_then_on_every_threshold() {
        let g = gate();
        assert_eq!(g.decide(&input(99, 0, 0, (1.0, 1.0))), None);
        let v = g.decide(&input(100, 1, 0, (1.0, 1.5))).unwrap();
        assert!(v.passed, "{}", v.reason);
        assert!(v.reason.starts_with("passed after 100 pairs"), "{}", v.reason);
        // 2 of 100 mismatched > 1 %.
        let v = g.decide(&input(100, 2, 0, (1.0, 1.0))).unwrap();
        assert!(!v.passed && v.reason.contains("(mismatch rate)"), "{}", v.reason);
        // One shadow-only error in 100 > 0.1 %.
        let v = g.decide(&input(100, 0, 1, (1.0, 1.0))).unwrap();
        assert!(!v.passed && v.reason.contains("error rate"), "{}", v.reason);
        // Three times slower > 2x.
        let v = g.decide(&input(100, 0, 0, (1.0, 3.0))).unwrap();
        assert!(!v.passed && v.reason.contains("latency ratio"), "{}", v.reason);
        // Every pair failed on the shadow: nothing compared is never a pass.
        let lenient = Gate {
            max_error_rate: 1.0,
            ..gate()
        };
        let v = lenient.decide(&input(100, 0, 100, (1.0, 1.0))).unwrap();
        assert!(!v.passed, "{}", v.reason);
    }
}
