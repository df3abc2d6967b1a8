//! The shadow report of one model: totals since the experiment started, a
//! window of the most recent pairs, the worst divergences with their request
//! ids, and the gate's verdict. Plain data, kept under a lock by the service
//! and shown at `GET /v2/models/{m}/shadow`.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::compare::OutputDiff;
use super::gate::{GateInput, Verdict};

/// Pairs kept in the recent window.
pub const WINDOW: usize = 1000;
/// Worst divergences kept.
pub const WORST: usize = 10;
/// Longest error message kept per divergence.
const MESSAGE_CHARS: usize = 256;

/// How a mirrored pair ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Both answered, every output agrees.
    Match,
    /// Both answered, some output disagrees.
    Mismatch,
    /// The primary answered, the shadow failed.
    ShadowError,
    /// The shadow answered, the primary failed.
    PrimaryError,
    /// Both failed.
    BothError,
}

impl Outcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Match => "match",
            Outcome::Mismatch => "mismatch",
            Outcome::ShadowError => "shadow_error",
            Outcome::PrimaryError => "primary_error",
            Outcome::BothError => "both_error",
        }
    }
}

/// One finished pair, as the report takes it.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The request id (generated when the client sent none).
    pub id: String,
    /// When the primary was received.
    pub time: SystemTime,
    /// The version that answered the primary.
    pub primary_version: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Per output, when both answered.
    pub outputs: Vec<OutputDiff>,
    /// The error of whichever side failed (the shadow's when both did).
    pub error: Option<String>,
    /// The primary's latency, from receipt to answer.
    pub primary_latency: Duration,
    /// The shadow's latency, from submission to answer.
    pub shadow_latency: Duration,
}

/// Per-output totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutputTotals {
    /// Pairs in which both sides answered.
    pub pairs: u64,
    /// Pairs in which the output agreed.
    pub matched: u64,
    /// The shadow lacked the output.
    pub missing: u64,
    /// Shapes differed.
    pub shape_mismatch: u64,
    /// Datatypes differed.
    pub datatype_mismatch: u64,
    /// Elements compared.
    pub elements: u64,
    /// Elements equal.
    pub exact: u64,
    /// Elements within the tolerance.
    pub within_tolerance: u64,
    /// `exact / elements`.
    pub exact_match_rate: f64,
    /// `within_tolerance / elements`.
    pub tolerance_match_rate: f64,
    /// Largest absolute difference seen.
    pub max_abs_diff: f64,
    /// Mean absolute difference per element.
    pub mean_abs_diff: f64,
    /// Largest relative difference seen (may be infinite: p = 0, s ≠ 0).
    #[serde(serialize_with = "finite_or_string")]
    pub max_rel_diff: f64,
    /// Mean finite relative difference per element.
    pub mean_rel_diff: f64,
    /// Rows whose top-k was compared.
    pub top_k_rows: u64,
    /// Of those, rows that agree.
    pub top_k_agree: u64,
    /// `top_k_agree / top_k_rows`.
    pub top_k_agreement: f64,
    #[serde(skip)]
    sum_abs: f64,
    #[serde(skip)]
    sum_rel: f64,
}

/// JSON has no infinity: write it as the string `"inf"`.
fn finite_or_string<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_str("inf")
    }
}

fn rate(n: u64, of: u64) -> f64 {
    if of == 0 { 0.0 } else { n as f64 / of as f64 }
}

impl OutputTotals {
    fn add(&mut self, d: &OutputDiff) {
        self.pairs += 1;
        self.matched += u64::from(d.matches());
        self.missing += u64::from(!d.present);
        self.shape_mismatch += u64::from(d.present && !d.shape_match);
        self.datatype_mismatch += u64::from(d.present && !d.datatype_match);
        self.elements += d.elements;
        self.exact += d.exact;
        self.within_tolerance += d.within;
        self.max_abs_diff = self.max_abs_diff.max(d.max_abs);
        self.max_rel_diff = self.max_rel_diff.max(d.max_rel);
        self.sum_abs += d.sum_abs;
        self.sum_rel += d.sum_rel;
        self.top_k_rows += d.topk_rows;
        self.top_k_agree += d.topk_agree;
        self.exact_match_rate = rate(self.exact, self.elements);
        self.tolerance_match_rate = rate(self.within_tolerance, self.elements);
        let differing = self.elements.saturating_sub(self.exact);
        self.mean_abs_diff = if self.elements == 0 {
            0.0
        } else {
            self.sum_abs / self.elements as f64
        };
        self.mean_rel_diff = if differing == 0 {
            0.0
        } else {
            self.sum_rel / self.elements as f64
        };
        self.top_k_agreement = rate(self.top_k_agree, self.top_k_rows);
    }
}

/// Counts of pairs by outcome, and latency sums.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Pairs finished (any outcome).
    pub pairs: u64,
    /// By outcome label.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Mean primary latency over pairs both answered, ms.
    pub primary_latency_ms: f64,
    /// Mean shadow latency over pairs both answered, ms.
    pub shadow_latency_ms: f64,
    #[serde(skip)]
    primary_sum: f64,
    #[serde(skip)]
    shadow_sum: f64,
}

impl Totals {
    fn add(&mut self, p: &Pair) {
        self.pairs += 1;
        *self.outcomes.entry(p.outcome.label()).or_default() += 1;
        if matches!(p.outcome, Outcome::Match | Outcome::Mismatch) {
            self.primary_sum += p.primary_latency.as_secs_f64();
            self.shadow_sum += p.shadow_latency.as_secs_f64();
            let n = self.compared() as f64;
            self.primary_latency_ms = self.primary_sum / n * 1e3;
            self.shadow_latency_ms = self.shadow_sum / n * 1e3;
        }
    }

    fn count(&self, o: Outcome) -> u64 {
        self.outcomes.get(o.label()).copied().unwrap_or(0)
    }

    /// Pairs both sides answered.
    pub fn compared(&self) -> u64 {
        self.count(Outcome::Match) + self.count(Outcome::Mismatch)
    }

    /// What the gate reads.
    pub fn gate_input(&self) -> GateInput {
        GateInput {
            pairs: self.pairs,
            compared: self.compared(),
            mismatched: self.count(Outcome::Mismatch),
            shadow_errors: self.count(Outcome::ShadowError),
            primary_latency: self.primary_latency_ms,
            shadow_latency: self.shadow_latency_ms,
            quality: None,
        }
    }
}

/// A pair that diverged, for the report's worst list.
#[derive(Debug, Clone, Serialize)]
pub struct Divergence {
    /// The request id, as in both prediction-log records.
    pub id: String,
    /// When the primary was received (RFC 3339).
    pub time: String,
    /// The primary's version.
    pub primary_version: String,
    /// How the pair ended.
    pub outcome: Outcome,
    /// The output that differed most (by absolute difference), if compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Its largest absolute difference.
    pub max_abs_diff: f64,
    /// Its share of elements outside the tolerance.
    pub outside_tolerance: f64,
    /// The error, when a side failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    score: f64,
}

/// The recent window, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct WindowView {
    /// Pairs in the window (at most [`WINDOW`]).
    pub pairs: usize,
    /// By outcome label.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Share of compared pairs that matched.
    pub match_rate: f64,
    /// Median of shadow − primary latency over compared pairs, ms.
    pub latency_diff_p50_ms: f64,
    /// 99th percentile of shadow − primary latency, ms.
    pub latency_diff_p99_ms: f64,
}

#[derive(Debug, Clone, Copy)]
struct Recent {
    outcome: Outcome,
    latency_diff: f64,
}

/// The report of one model's shadow experiment.
#[derive(Debug, Clone)]
pub struct Report {
    since: SystemTime,
    totals: Totals,
    outputs: BTreeMap<String, OutputTotals>,
    window: VecDeque<Recent>,
    worst: Vec<Divergence>,
    verdict: Option<Verdict>,
}

impl Report {
    /// An empty report, starting now.
    pub fn new() -> Report {
        Report {
            since: SystemTime::now(),
            totals: Totals::default(),
            outputs: BTreeMap::new(),
            window: VecDeque::with_capacity(WINDOW),
            worst: Vec::with_capacity(WORST + 1),
            verdict: None,
        }
    }

    /// Adds a finished pair.
    pub fn add(&mut self, p: &Pair) {
        self.totals.add(p);
        for d in &p.outputs {
            self.outputs.entry(d.name.clone()).or_default().add(d);
        }
        if self.window.len() == WINDOW {
            self.window.pop_front();
        }
        let latency_diff = p.shadow_latency.as_secs_f64() - p.primary_latency.as_secs_f64();
        self.window.push_back(Recent {
            outcome: p.outcome,
            latency_diff,
        });
        if p.outcome != Outcome::Match {
            self.note_divergence(p);
        }
    }

    fn note_divergence(&mut self, p: &Pair) {
        let worst = p
            .outputs
            .iter()
            .filter(|d| !d.matches())
            .max_by(|a, b| a.max_abs.total_cmp(&b.max_abs).then(b.within.cmp(&a.within)));
        let outside = worst.map_or(0.0, |d| rate(d.elements - d.within, d.elements));
        let max_abs = worst.map_or(0.0, |d| if d.max_abs.is_finite() { d.max_abs } else { f64::MAX });
        // One-sided errors first, then the largest difference, then the most elements outside.
        let score = match p.outcome {
            Outcome::ShadowError | Outcome::PrimaryError => f64::INFINITY,
            _ => max_abs + outside,
        };
        if self.worst.len() == WORST && self.worst.last().is_some_and(|w| w.score >= score) {
            return;
        }
        let error = p.error.as_ref().map(|e| e.chars().take(MESSAGE_CHARS).collect());
        let at = self.worst.partition_point(|w| w.score >= score);
        self.worst.insert(
            at,
            Divergence {
                id: p.id.clone(),
                time: crate::util::rfc3339(p.time, crate::util::Precision::Millis),
                primary_version: p.primary_version.clone(),
                outcome: p.outcome,
                output: worst.map(|d| d.name.clone()),
                max_abs_diff: max_abs,
                outside_tolerance: outside,
                error,
                score,
            },
        );
        self.worst.truncate(WORST);
    }

    /// The totals since the start.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// The gate's verdict, once given.
    pub fn verdict(&self) -> Option<&Verdict> {
        self.verdict.as_ref()
    }

    /// Records the gate's verdict (once; later calls are ignored).
    pub fn set_verdict(&mut self, v: Verdict) {
        self.verdict.get_or_insert(v);
    }

    /// The recent window, summarised.
    pub fn window(&self) -> WindowView {
        let mut outcomes = BTreeMap::new();
        let mut diffs = Vec::with_capacity(self.window.len());
        for r in &self.window {
            *outcomes.entry(r.outcome.label()).or_default() += 1;
            if matches!(r.outcome, Outcome::Match | Outcome::Mismatch) {
                diffs.push(r.latency_diff);
            }
        }
        diffs.sort_by(f64::total_cmp);
        let q = |p: f64| {
            if diffs.is_empty() {
                0.0
            } else {
                diffs[((diffs.len() - 1) as f64 * p).round() as usize] * 1e3
            }
        };
        let matched = outcomes.get("match").copied().unwrap_or(0);
        WindowView {
            pairs: self.window.len(),
            match_rate: rate(matched, diffs.len() as u64),
            outcomes,
            latency_diff_p50_ms: q(0.5),
            latency_diff_p99_ms: q(0.99),
        }
    }

    /// The whole report as JSON, under `head` (model, targets, state).
    pub fn to_json(&self, head: serde_json::Map<String, serde_json::Value>) -> serde_json::Value {
        let mut out = head;
        out.insert(
            "since".into(),
            crate::util::rfc3339(self.since, crate::util::Precision::Millis).into(),
        );
        let value = |v: serde_json::Result<serde_json::Value>| v.unwrap_or(serde_json::Value::Null);
        out.insert("totals".into(), value(serde_json::to_value(&self.totals)));
        out.insert("outputs".into(), value(serde_json::to_value(&self.outputs)));
        out.insert("window".into(), value(serde_json::to_value(self.window())));
        out.insert("worst".into(), value(serde_json::to_value(&self.worst)));
        out.insert("gate".into(), value(serde_json::to_value(&self.verdict)));
        serde_json::Value::Object(out)
    }
}

impl Default for Report {
    fn default() -> Self {
        Report::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{DataType, Tensor};
    use crate::traffic::{Compare, compare::compare};

    fn pair(id: &str, primary: &[f64], shadow: &[f64], outcome: Option<Outcome>) -> Pair {
        let t = |v: &[f64]| vec![Tensor::from_f64("y", DataType::Fp32, vec![v.len() as i64], v).unwrap()];
        let outputs = compare(&t(primary), &t(shadow), &Compare::default());
        let outcome = outcome.unwrap_or(if outputs.iter().all(OutputDiff::matches) {
            Outcome::Match
        } else {
            Outcome::Mismatch
        });
        let errored = matches!(outcome, Outcome::ShadowError);
        Pair {
            id: id.into(),
            time: SystemTime::now(),
            primary_version: "1".into(),
            outcome,
            outputs: if errored { vec![] } else { outputs },
            error: errored.then(|| "x".repeat(1000)),
            primary_latency: Duration::from_millis(2),
            shadow_latency: Duration::from_millis(3),
        }
    }

    #[test]
    fn totals_window_and_worst() {
        let mut r = Report::new();
        r.add(&pair("a", &[1.0, 2.0], &[1.0, 2.0], None));
        r.add(&pair("b", &[1.0, 2.0], &[1.0, 2.5], None));
        r.add(&pair("c", &[1.0, 2.0], &[1.1, 2.0], None));
        r.add(&pair("d", &[1.0], &[1.0], Some(Outcome::ShadowError)));
        let t = r.totals();
        assert_eq!((t.pairs, t.compared()), (4, 3));
        assert_eq!(t.outcomes["mismatch"], 2);
        assert!((t.shadow_latency_ms - 3.0).abs() < 1e-9);
        let g = t.gate_input();
        assert_eq!((g.pairs, g.compared, g.mismatched, g.shadow_errors), (4, 3, 2, 1));
        let j = r.to_json(Default::default());
        let y = &j["outputs"]["y"];
        assert_eq!(y["pairs"], 3);
        assert_eq!(y["elements"], 6);
        assert_eq!(y["exact"], 4);
        assert!((y["max_abs_diff"].as_f64().unwrap() - 0.5).abs() < 1e-6);
        // Worst first: the one-sided error, then the larger difference.
        let ids: Vec<_> = j["worst"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["d", "b", "c"]);
        assert_eq!(j["worst"][0]["error"].as_str().unwrap().len(), MESSAGE_CHARS);
        assert_eq!(j["worst"][1]["output"], "y");
        let w = r.window();
        assert_eq!(w.pairs, 4);
        assert!((w.match_rate - 1.0 / 3.0).abs() < 1e-9);
        assert!((w.latency_diff_p50_ms - 1.0).abs() < 1e-6, "{}", w.latency_diff_p50_ms);
    }

    #[test]
    fn the_window_and_the_worst_list_stay_bounded() {
        let mut r = Report::new();
        for i in 0..(WINDOW + 50) {
            let off = 1.0 + i as f64;
            r.add(&pair(&i.to_string(), &[0.0], &[off], None));
        }
        assert_eq!(r.window().pairs, WINDOW);
        assert_eq!(r.totals().pairs, (WINDOW + 50) as u64);
        let j = r.to_json(Default::default());
        let worst = j["worst"].as_array().unwrap();
        assert_eq!(worst.len(), WORST);
        // The largest differences were the last ones added.
        assert_eq!(worst[0]["id"], (WINDOW + 49).to_string());
        assert_eq!(j["outputs"]["y"]["max_rel_diff"], "inf");
    }
}
