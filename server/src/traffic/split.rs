//! The canary split: a point in [0, 1) per request (the hash of its sticky
//! key, else a uniform draw), placed against the canary targets' cumulative
//! shares. Canary `i` owns `[sum of the weights before it, that sum + its
//! weight) / 100`; the default owns the rest, up to 1.

use sha2::{Digest, Sha256};

use super::policy::TrafficPolicy;

/// Where a request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// The policy's default target.
    Default,
    /// The canary target at this index.
    Canary(usize),
}

/// The request's point in [0, 1): a stable hash of `key` (the same key gives
/// the same point on every replica and across restarts), or a uniform draw
/// when there is no key.
pub fn point_of(key: Option<&str>) -> f64 {
    match key {
        Some(k) => {
            let mut h = Sha256::new();
            h.update(b"switchyard-traffic\0");
            h.update(k.as_bytes());
            let d = h.finalize();
            let mut first = [0u8; 8];
            first.copy_from_slice(&d[..8]);
            // 53 bits: exactly representable, strictly below 1.
            (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
        }
        None => fastrand::f64(),
    }
}

/// The target owning `point`.
pub fn choose(policy: &TrafficPolicy, point: f64) -> Pick {
    let mut upper = 0.0;
    for (i, c) in policy.canary.iter().enumerate() {
        if c.weight <= 0.0 {
            continue;
        }
        upper += c.weight / 100.0;
        if point < upper {
            return Pick::Canary(i);
        }
    }
    Pick::Default
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::policy::{Canary, Target};

    fn policy(weights: &[f64]) -> TrafficPolicy {
        TrafficPolicy {
            default: Some(Target::Version(1)),
            canary: weights
                .iter()
                .enumerate()
                .map(|(i, &w)| Canary {
                    target: Target::Version(i as i64 + 2),
                    weight: w,
                })
                .collect(),
            ..TrafficPolicy::default()
        }
    }

    #[test]
    fn the_same_key_always_reaches_the_same_target() {
        let p = policy(&[30.0]);
        for i in 0..200 {
            let key = format!("user-{i}");
            let first = choose(&p, point_of(Some(&key)));
            for _ in 0..5 {
                assert_eq!(choose(&p, point_of(Some(&key))), first);
            }
        }
        assert_eq!(point_of(Some("abc")), point_of(Some("abc")));
        assert_ne!(point_of(Some("abc")), point_of(Some("abd")));
    }

    #[test]
    fn zero_and_hundred_percent_are_exact() {
        let none = policy(&[0.0]);
        let all = policy(&[100.0]);
        for i in 0..2000 {
            let key = format!("k{i}");
            assert_eq!(choose(&none, point_of(Some(&key))), Pick::Default);
            assert_eq!(choose(&all, point_of(Some(&key))), Pick::Canary(0));
        }
        // The edges of [0, 1).
        assert_eq!(choose(&all, 0.0), Pick::Canary(0));
        assert_eq!(choose(&all, 1.0 - f64::EPSILON), Pick::Canary(0));
        assert_eq!(choose(&none, 0.0), Pick::Default);
        let half = policy(&[50.0]);
        assert_eq!(choose(&half, 0.5 - f64::EPSILON), Pick::Canary(0));
        assert_eq!(choose(&half, 0.5), Pick::Default);
        // A zero-weight canary between two others owns nothing.
        let mid = policy(&[10.0, 0.0, 10.0]);
        assert_eq!(choose(&mid, 0.1), Pick::Canary(2));
        assert_eq!(choose(&mid, 0.05), Pick::Canary(0));
        assert_eq!(choose(&mid, 0.2), Pick::Default);
    }

    #[test]
    fn ten_thousand_keys_split_within_two_percent_of_the_weights() {
        let p = policy(&[10.0, 25.0]);
        let mut counts = [0usize; 3];
        for i in 0..10_000 {
            match choose(&p, point_of(Some(&format!("user-{i}")))) {
                Pick::Canary(c) => counts[c] += 1,
                Pick::Default => counts[2] += 1,
            }
        }
        let shares: Vec<f64> = counts.iter().map(|&c| c as f64 / 10_000.0).collect();
        for (share, want) in shares.iter().zip([0.10, 0.25, 0.65]) {
            assert!((share - want).abs() < 0.02, "observed {shares:?}");
        }
    }

    #[test]
    fn without_a_key_the_draw_is_uniform() {
        let p = policy(&[20.0]);
        let mut canary = 0;
        for _ in 0..10_000 {
            let x = point_of(None);
            assert!((0.0..1.0).contains(&x));
            if choose(&p, x) == Pick::Canary(0) {
                canary += 1;
            }
        }
        let share = canary as f64 / 10_000.0;
        assert!((share - 0.2).abs() < 0.02, "observed {share}");
    }
}
