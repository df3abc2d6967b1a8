//! The traffic policy file, `<model>/traffic.yaml` (the same structure as
//! JSON for the admin override):
//!
//! ```yaml
//! default: 1                 # version number or label; absent = the model's default route
//! canary:                    # each target gets weight % of the requests that name no version
//!   - target: 2              # version number or label
//!     weight: 10             # in [0, 100]; the weights add up to at most 100
//! sticky_key: { header: x-user-id }    # or { parameter: user }; absent = a uniform draw
//! shadow:                    # a sampled share of requests is mirrored and compared
//!   target: 2                # version or label (of `model`, when given)
//!   model: other             # absent = this model; else another model with the same inputs
//!   sample_rate: 1.0
//!   compare: { absolute: 1e-5, relative: 1e-4, top_k: 1 }
//!   in_flight: 64
//!   timeout_ms: 1000
//!   batch_wait_ms: 20        # a copy waits this long at most for others to share its batch
//!   max_cpu_load: 0.8        # no copy while the process uses this share of its CPUs or more
//!   promote:                 # optional gate, decided once after `min_pairs` pairs
//!     min_pairs: 1000
//!     max_mismatch_rate: 0.01
//!     max_error_rate: 0.001
//!     max_latency_ratio: 1.5
//!     on_pass: promote       # or report
//!     on_fail: stop          # or report
//! ```
//!
//! Unknown fields are refused; every error names the file and the field.

use serde::{Deserialize, Serialize};

pub use super::gate::{Gate, OnFail, OnPass};

/// The policy's file name in a model's directory.
pub const TRAFFIC_FILE: &str = "traffic.yaml";

/// Canary targets per policy, at most.
pub const MAX_CANARIES: usize = 16;

/// A version number or a label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Target {
    /// A version number.
    Version(i64),
    /// A label (a string of digits is read as a version number).
    Label(String),
}

impl Target {
    /// As a request names it: the number, or the label.
    pub fn as_request(&self) -> String {
        match self {
            Target::Version(v) => v.to_string(),
            Target::Label(l) => l.clone(),
        }
    }

    /// The version number, when it names one.
    pub fn version(&self) -> Option<i64> {
        match self {
            Target::Version(v) => Some(*v),
            Target::Label(l) => l.parse().ok(),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_request())
    }
}

/// One canary target and its share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    /// Version or label.
    pub target: Target,
    /// Percent of the requests that name no version, in [0, 100].
    pub weight: f64,
}

/// Where the sticky key of a request is read: exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickyKey {
    /// An HTTP request header / gRPC request metadata key (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A request parameter (its string, integer or boolean value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
}

/// How shadow outputs are compared with the primary's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compare {
    /// Absolute tolerance per element.
    #[serde(default = "default_absolute")]
    pub absolute: f64,
    /// Relative tolerance per element.
    #[serde(default = "default_relative")]
    pub relative: f64,
    /// Top-k classes that must agree (0 = not compared).
    #[serde(default)]
    pub top_k: u32,
}

impl Default for Compare {
    fn default() -> Self {
        Compare {
            absolute: default_absolute(),
            relative: default_relative(),
            top_k: 0,
        }
    }
}

fn default_absolute() -> f64 {
    1e-5
}
fn default_relative() -> f64 {
    1e-4
}
fn default_rate() -> f64 {
    1.0
}
fn default_in_flight() -> u32 {
    64
}
fn default_timeout_ms() -> u64 {
    1000
}
fn default_batch_wait_ms() -> u64 {
    20
}
fn default_max_cpu_load() -> f64 {
    0.8
}

/// The shadow (mirroring) settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shadow {
    /// Version or label that receives the copies.
    pub target: Target,
    /// Another model (with the same inputs) whose `target` receives them;
    /// `None` = this model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Share of the requests mirrored, in [0, 1].
    #[serde(default = "default_rate")]
    pub sample_rate: f64,
    /// Output comparison.
    #[serde(default)]
    pub compare: Compare,
    /// Mirrored requests in flight at most, in [1, 10000].
    #[serde(default = "default_in_flight")]
    pub in_flight: u32,
    /// Deadline of a mirrored request, in [1, 600000] ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How long a copy may wait in the target's queue for other copies to
    /// share its batch, in [0, timeout_ms) ms (0: it runs as soon as the
    /// target is free).
    #[serde(default = "default_batch_wait_ms")]
    pub batch_wait_ms: u64,
    /// No copy while this process's CPU load (share of the CPUs it may
    /// use, last ~50 ms) is at or above this, in (0, 1]; 1 turns the rule off.
    #[serde(default = "default_max_cpu_load")]
    pub max_cpu_load: f64,
    /// The promotion gate, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<Gate>,
}

/// A model's traffic policy.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficPolicy {
    /// Where the rest goes; `None` = the model's default route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Target>,
    /// Canary targets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canary: Vec<Canary>,
    /// Where the sticky key is read; `None` = a uniform draw per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_key: Option<StickyKey>,
    /// Mirroring settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Shadow>,
}

impl TrafficPolicy {
    /// Parses and validates YAML; `file` names the source in errors.
    pub fn from_yaml(text: &str, file: &str) -> Result<TrafficPolicy, String> {
        let p: TrafficPolicy = serde_yaml_ng::from_str(text).map_err(|e| format!("{file}: {e}"))?;
        p.validate(file)?;
        Ok(p)
    }

    /// Parses and validates JSON; `file` names the source in errors.
    pub fn from_json(text: &str, file: &str) -> Result<TrafficPolicy, String> {
        let p: TrafficPolicy = serde_json::from_str(text).map_err(|e| format!("{file}: {e}"))?;
        p.validate(file)?;
        Ok(p)
    }

    /// Compact JSON, for metadata.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Every target of this model the policy names, with its field (a
    /// shadow target of another model is not among them).
    pub fn targets(&self) -> Vec<(String, &Target)> {
        let mut out = Vec::new();
        if let Some(d) = &self.default {
            out.push(("default".to_string(), d));
        }
        for (i, c) in self.canary.iter().enumerate() {
            out.push((format!("canary[{i}].target"), &c.target));
        }
        if let Some(s) = self.shadow.as_ref().filter(|s| s.model.is_none()) {
            out.push(("shadow.target".to_string(), &s.target));
        }
        out
    }

    /// Checks the bounds; errors read `FILE: field F: why`.
    pub fn validate(&self, file: &str) -> Result<(), String> {
        let err = |field: &str, why: String| Err(format!("{file}: field `{field}`: {why}"));
        if let Some(s) = self.shadow.as_ref().filter(|s| s.model.is_some())
            && let Err(why) = check_target(&s.target)
        {
            return err("shadow.target", why);
        }
        for (field, t) in self.targets() {
            if let Err(why) = check_target(t) {
                return err(&field, why);
            }
        }
        if self.canary.len() > MAX_CANARIES {
            return err("canary", format!("at most {MAX_CANARIES} targets"));
        }
        let mut total = 0.0;
        for (i, c) in self.canary.iter().enumerate() {
            if !c.weight.is_finite() || !(0.0..=100.0).contains(&c.weight) {
                return err(
                    &format!("canary[{i}].weight"),
                    format!("{} is not in [0, 100]", c.weight),
                );
            }
            if self.canary[..i].iter().any(|o| same(&o.target, &c.target)) {
                return err(&format!("canary[{i}].target"), format!("'{}' is named twice", c.target));
            }
            if self.default.as_ref().is_some_and(|d| same(d, &c.target)) {
                return err(&format!("canary[{i}].target"), format!("'{}' is the default", c.target));
            }
            total += c.weight;
        }
        if total > 100.0 + 1e-9 {
            return err("canary", format!("the weights add up to {total}, more than 100"));
        }
        if let Some(k) = &self.sticky_key {
            match (&k.header, &k.parameter) {
                (Some(h), None) => {
                    let ok = !h.is_empty()
                        && h.len() <= 128
                        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                    if !ok {
                        return err(
                            "sticky_key.header",
                            format!("'{}' is not a header name", h.escape_debug()),
                        );
                    }
                }
                (None, Some(p)) => {
                    if p.is_empty() || p.len() > 128 {
                        return err("sticky_key.parameter", "must be 1 to 128 characters".into());
                    }
                }
                _ => return err("sticky_key", "give exactly one of `header` and `parameter`".into()),
            }
        }
        if let Some(s) = &self.shadow {
            if !s.sample_rate.is_finite() || !(0.0..=1.0).contains(&s.sample_rate) {
                return err("shadow.sample_rate", format!("{} is not in [0, 1]", s.sample_rate));
            }
            for (field, v) in [("absolute", s.compare.absolute), ("relative", s.compare.relative)] {
                if !v.is_finite() || !(0.0..=1e6).contains(&v) {
                    return err(&format!("shadow.compare.{field}"), format!("{v} is not in [0, 1e6]"));
                }
            }
            if s.compare.top_k > 1000 {
                return err("shadow.compare.top_k", format!("{} is more than 1000", s.compare.top_k));
            }
            if !(1..=10_000).contains(&s.in_flight) {
                return err("shadow.in_flight", format!("{} is not in [1, 10000]", s.in_flight));
            }
            if !(1..=600_000).contains(&s.timeout_ms) {
                return err("shadow.timeout_ms", format!("{} is not in [1, 600000]", s.timeout_ms));
            }
            if s.batch_wait_ms >= s.timeout_ms {
                let why = format!("{} is not below timeout_ms ({})", s.batch_wait_ms, s.timeout_ms);
                return err("shadow.batch_wait_ms", why);
            }
            if !s.max_cpu_load.is_finite() || s.max_cpu_load <= 0.0 || s.max_cpu_load > 1.0 {
                return err("shadow.max_cpu_load", format!("{} is not in (0, 1]", s.max_cpu_load));
            }
            if let Some(m) = &s.model
                && let Err(why) = check_model_name(m)
            {
                return err("shadow.model", why);
            }
            if let Some(g) = &s.promote {
                if let Err((field, why)) = g.validate() {
                    return err(&format!("shadow.promote.{field}"), why);
                }
                if s.model.is_some() && g.on_pass == OnPass::Promote {
                    return err(
                        "shadow.promote.on_pass",
                        "`promote` needs a shadow target of this model (without `shadow.model`)".into(),
                    );
                }
            }
        }
        Ok(())
    }

    /// The sticky key of a request: the header's value (`header` looks one
    /// up by lower-case name) or the parameter's; `None` = a uniform draw.
    pub fn key_of<'a>(
        &self,
        header: impl Fn(&str) -> Option<&'a str>,
        parameter: impl Fn(&str) -> Option<String>,
    ) -> Option<String> {
        let k = self.sticky_key.as_ref()?;
        match (&k.header, &k.parameter) {
            (Some(h), _) => header(&h.to_ascii_lowercase()).map(str::to_string),
            (None, Some(p)) => parameter(p),
            _ => None,
        }
    }
}

/// A model name as the repository accepts one: 1 to 128 characters, no
/// path separators, not `.` or `..`.
fn check_model_name(m: &str) -> Result<(), String> {
    let ok = !m.is_empty()
        && m.len() <= 128
        && m != "."
        && m != ".."
        && !m.contains(['/', '\\', '\0'])
        && !m.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(format!("'{}' is not a model name", m.escape_debug()))
    }
}

fn same(a: &Target, b: &Target) -> bool {
    a.as_request() == b.as_request()
}

/// A positive version number, or a label: a letter, then letters, digits,
/// `_`, `-`, `.`; at most 64 (the rule of labels).
fn check_target(t: &Target) -> Result<(), String> {
    match t {
        Target::Version(v) if *v > 0 => Ok(()),
        Target::Version(v) => Err(format!("version {v} is not a positive number")),
        Target::Label(l) if l.parse::<i64>().is_ok_and(|v| v > 0) => Ok(()),
        Target::Label(l) => {
            let ok = l.len() <= 64
                && l.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "'{}' is neither a version number nor a label",
                    l.escape_debug()
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: &str = "m/traffic.yaml";

    #[test]
    fn the_documented_example_parses() {
        let p = TrafficPolicy::from_yaml(
            "default: 1\ncanary:\n  - target: 2\n    weight: 10\n  - target: beta\n    weight: 0\n\
             sticky_key: { header: X-User-Id }\n\
             shadow: { target: 2, sample_rate: 0.5, compare: { absolute: 1e-5, relative: 1e-4, top_k: 1 }, \
             in_flight: 64, timeout_ms: 1000, batch_wait_ms: 20, max_cpu_load: 0.8 }\n",
            F,
        )
        .unwrap();
        assert_eq!(p.default, Some(Target::Version(1)));
        assert_eq!(p.canary[1].target, Target::Label("beta".into()));
        assert_eq!(p.canary[0].weight, 10.0);
        assert_eq!(p.shadow.as_ref().unwrap().compare.top_k, 1);
        // JSON round trip, for overrides and metadata.
        let back = TrafficPolicy::from_json(&p.to_json(), "override").unwrap();
        assert_eq!(back, p);
        let key = p.key_of(|h| (h == "x-user-id").then_some("u1"), |_| None);
        assert_eq!(key.as_deref(), Some("u1"));
        assert_eq!(TrafficPolicy::from_yaml("{}", F).unwrap(), TrafficPolicy::default());
        let q = TrafficPolicy::from_yaml("sticky_key: { parameter: user }\ncanary: [{target: '3', weight: 5}]", F);
        let q = q.unwrap();
        assert_eq!(q.canary[0].target.version(), Some(3));
        assert_eq!(
            q.key_of(|_| None, |p| (p == "user").then(|| "7".into())).as_deref(),
            Some("7")
        );
    }

    #[test]
    fn every_error_names_the_file_and_the_field() {
        let cases = [
            ("canary: [{target: 2, weight: 120}]", "canary[0].weight"),
            ("canary: [{target: 2, weight: -1}]", "canary[0].weight"),
            ("canary: [{target: 2, weight: 60}, {target: 3, weight: 50}]", "canary"),
            (
                "canary: [{target: 2, weight: 1}, {target: 2, weight: 1}]",
                "canary[1].target",
            ),
            ("default: 2\ncanary: [{target: 2, weight: 1}]", "canary[0].target"),
            ("default: 0", "default"),
            ("default: 'no good'", "default"),
            ("canary: [{target: 2, weight: 1, extra: 1}]", "extra"),
            ("colour: blue", "colour"),
            ("canary: [{target: 2, weight: ten}]", "canary[0].weight"),
            ("sticky_key: {}", "sticky_key"),
            ("sticky_key: { header: a, parameter: b }", "sticky_key"),
            ("sticky_key: { header: 'a b' }", "sticky_key.header"),
            ("shadow: { target: 2, sample_rate: 1.5 }", "shadow.sample_rate"),
            ("shadow: { target: 2, in_flight: 0 }", "shadow.in_flight"),
            ("shadow: { target: 2, timeout_ms: 0 }", "shadow.timeout_ms"),
            (
                "shadow: { target: 2, timeout_ms: 50, batch_wait_ms: 50 }",
                "shadow.batch_wait_ms",
            ),
            ("shadow: { target: 2, max_cpu_load: 0 }", "shadow.max_cpu_load"),
            ("shadow: { target: 2, max_cpu_load: 1.5 }", "shadow.max_cpu_load"),
            (
                "shadow: { target: 2, compare: { top_k: 5000 } }",
                "shadow.compare.top_k",
            ),
            (
                "shadow: { target: 2, compare: { absolute: -1 } }",
                "shadow.compare.absolute",
            ),
            ("shadow: { target: -3 }", "shadow.target"),
        ];
        for (text, field) in cases {
            let e = TrafficPolicy::from_yaml(text, F).unwrap_err();
            assert!(e.starts_with(F), "{text}: {e}");
            assert!(e.contains(field), "{text}: {e} does not name {field}");
        }
    }
}
