//! Routing a request to a version: the explicit version or label, else the
//! model's traffic policy, else the default route.

use std::sync::Arc;

use super::{ModelEntry, VersionHandle};
use crate::error::Result;
use crate::traffic::{self, Pick, TrafficPolicy};

/// Why a request went where it went (the `reason` of the routing counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteReason {
    /// The request named a version or label.
    Explicit,
    /// No traffic policy: the default route.
    NoPolicy,
    /// The policy's default target.
    PolicyDefault,
    /// A canary target of the policy.
    Canary,
    /// The policy's target is not loaded (or its label is unset): the default route.
    Fallback,
}

impl RouteReason {
    /// Its slot in a version's cache of routing counters.
    pub fn slot(self) -> usize {
        self as usize
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            RouteReason::Explicit => "explicit",
            RouteReason::NoPolicy => "no_policy",
            RouteReason::PolicyDefault => "policy_default",
            RouteReason::Canary => "canary",
            RouteReason::Fallback => "fallback",
        }
    }
}

impl ModelEntry {
    /// The effective traffic policy and where it comes from (`override` or `file`).
    pub fn traffic(&self) -> Option<(&TrafficPolicy, &'static str)> {
        match (&self.traffic_override, &self.traffic_file) {
            (Some(p), _) => Some((p, "override")),
            (None, Some(p)) => Some((p, "file")),
            (None, None) => None,
        }
    }

    /// Routes a request: a version or label it names wins; else the traffic
    /// policy picks (`key` reads the request's sticky key); else the default.
    pub fn route(
        &self,
        model: &str,
        version: Option<&str>,
        key: impl FnOnce(&TrafficPolicy) -> Option<String>,
    ) -> Result<(Arc<VersionHandle>, RouteReason)> {
        if version.is_some_and(|v| !v.is_empty()) {
            return Ok((self.resolve(model, version)?, RouteReason::Explicit));
        }
        let Some((policy, _)) = self.traffic() else {
            return Ok((self.resolve(model, None)?, RouteReason::NoPolicy));
        };
        let point = traffic::point_of(key(policy).as_deref());
        let (target, reason) = match traffic::choose(policy, point) {
            Pick::Canary(i) => (Some(&policy.canary[i].target), RouteReason::Canary),
            Pick::Default => (policy.default.as_ref(), RouteReason::PolicyDefault),
        };
        match target.map(|t| self.resolve(model, Some(&t.as_request()))) {
            None => Ok((self.resolve(model, None)?, reason)),
            Some(Ok(h)) => Ok((h, reason)),
            Some(Err(_)) => Ok((self.resolve(model, None)?, RouteReason::Fallback)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RouteReason::{self, *};

    #[test]
    fn each_reason_has_its_own_cached_counter_slot() {
        let all: [RouteReason; 5] = [Explicit, NoPolicy, PolicyDefault, Canary, Fallback];
        let slots: std::collections::BTreeSet<usize> = all.iter().map(|r| r.slot()).collect();
        assert_eq!(slots.len(), all.len());
        assert!(
            slots.iter().all(|&s| s < crate::metrics::ROUTE_REASON_SLOTS),
            "{slots:?}"
        );
    }
}
