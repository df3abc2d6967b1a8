//! The automatic rollback: after a promotion, the new default version is
//! watched for the rollback window; when its server-side error rate or p99
//! latency breaks the budget, the default route points back to the version
//! served before (audited as `auto_rollback` by [`Actor::AutoRollback`]).

use std::sync::Weak;
use std::time::{Duration, Instant};

use super::deploy::Deployer;
use crate::access::Actor;
use crate::registry::window::Health;
use crate::util::Background;

/// Automatic rollback after a promotion (off when `window` is zero).
#[derive(Debug, Clone, Default)]
pub struct RollbackPolicy {
    /// How long a newly promoted version is watched.
    pub window: Duration,
    /// Largest acceptable share of server-side errors.
    pub max_error_rate: f64,
    /// Largest acceptable p99 latency.
    pub max_p99: Option<Duration>,
    /// Requests needed before judging.
    pub min_requests: u64,
}

impl RollbackPolicy {
    /// Why `health` breaks the budget, if it does (and enough requests were seen).
    pub fn breach(&self, health: &Health) -> Option<String> {
        if health.requests < self.min_requests {
            None
        } else if health.error_rate() > self.max_error_rate {
            Some(format!(
                "error rate {:.3} over {} requests is above {}",
                health.error_rate(),
                health.requests,
                self.max_error_rate
            ))
        } else {
            self.max_p99
                .filter(|&m| health.p99 > m)
                .map(|m| format!("p99 {:?} over {} requests is above {m:?}", health.p99, health.requests))
        }
    }
}

/// Watches `promoted` for the policy's window, as a task of `background`
/// (on the current runtime, if any); on a breach, points the default back to
/// `previous`. Stops early when the default moves elsewhere, the deployer is
/// gone or the server stops.
pub fn watch(
    background: &Background,
    deployer: Weak<Deployer>,
    policy: RollbackPolicy,
    name: String,
    promoted: i64,
    previous: i64,
) {
    let stopping = background.stopping().clone();
    background.spawn(async move {
        let deadline = Instant::now() + policy.window;
        let tick = (policy.window / 20).clamp(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = stopping.cancelled() => return,
            }
            let Some(deployer) = deployer.upgrade() else { return };
            let Some(entry) = deployer.registry().get(&name) else {
                return;
            };
            if entry.default_version() != Some(promoted) {
                return;
            }
            let Some(h) = entry.versions.get(&promoted) else { return };
            let health = h.health.snapshot();
            // Live quality (ground-truth feedback) below the version's own thresholds counts as a breach too.
            let quality = h.quality.as_ref().and_then(|q| {
                let r = q.report();
                let alerts: Vec<&str> = r
                    .alerts
                    .iter()
                    .map(String::as_str)
                    .filter(|a| !a.starts_with("fairness:"))
                    .collect();
                (!alerts.is_empty()).then(|| {
                    format!(
                        "live quality alert ({}) over {} labelled rows",
                        alerts.join(", "),
                        r.window.labelled
                    )
                })
            });
            if let Some(reason) = policy.breach(&health).or(quality) {
                tracing::warn!(model = %name, promoted, previous, %reason, "automatic rollback");
                let actor = Actor::AutoRollback;
                if let Err(e) = deployer.rollback(&name, None, Some(previous), &actor, &reason).await {
                    tracing::error!(model = %name, error = %e, "automatic rollback failed");
                }
                return;
            }
            if Instant::now() >= deadline {
                tracing::info!(model = %name, promoted, ?health, "promotion held through the rollback window");
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaches_need_enough_requests() {
        let policy = RollbackPolicy {
            window: Duration::from_secs(1),
            max_error_rate: 0.1,
            max_p99: Some(Duration::from_millis(10)),
            min_requests: 10,
        };
        let h = |requests, errors, p99_ms| Health {
            requests,
            errors,
            p99: Duration::from_millis(p99_ms),
        };
        assert_eq!(policy.breach(&h(5, 5, 100)), None);
        assert!(policy.breach(&h(10, 2, 1)).unwrap().contains("error rate"));
        assert!(policy.breach(&h(10, 0, 20)).unwrap().contains("p99"));
        assert_eq!(policy.breach(&h(10, 1, 5)), None);
    }
}
