//! The reference point of explanations: the per-feature means of one input
//! in a version's reference profile (`validation/profile.json`, or the one
//! built from its golden set).

use super::{AGGREGATE_FEATURE, Role, VersionDrift};

impl VersionDrift {
    /// The reference means of input `input`'s features `0..features`, in
    /// order. Refused, with a message naming what is missing, when the
    /// version has no reference profile, the profile has no such input, it
    /// summarises the input as one aggregate feature (`"*"`: rows wider than
    /// its `max_features`), or its feature count is not `features` (a feature
    /// without finite reference values is left out of a profile).
    pub fn reference_means(&self, input: &str, features: usize) -> Result<Vec<f64>, String> {
        let state = self.shared.state.lock();
        let Some(profile) = state.reference.as_ref() else {
            return Err("its drift monitor has no reference profile".into());
        };
        let Some(tensor) = profile.tensor(Role::Input, input) else {
            return Err(format!("its reference profile has no input '{input}'"));
        };
        if tensor.features.iter().any(|f| f.feature == AGGREGATE_FEATURE) {
            return Err(format!(
                "its reference profile summarises input '{input}' as one aggregate feature '*' (rows wider than \
                 its max_features {})",
                profile.max_features
            ));
        }
        let mut means = vec![None; features];
        for f in &tensor.features {
            match f.feature.parse::<usize>() {
                Ok(i) if i < features => means[i] = Some(f.mean),
                _ => {
                    return Err(format!(
                        "its reference profile of input '{input}' has feature '{}', outside the row's {features} \
                         features",
                        f.feature
                    ));
                }
            }
        }
        means
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.ok_or_else(|| {
                    format!("its reference profile of input '{input}' has no mean for feature {i} (of {features})")
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::drift::{DriftSettings, Profile, VersionDrift};
    use crate::tensor::{DataType, Tensor};

    fn row(values: &[f64]) -> Tensor {
        Tensor::from_f64("x", DataType::Fp32, vec![1, values.len() as i64], values).unwrap()
    }

    #[test]
    fn means_in_feature_order_or_a_reason() {
        let samples: Vec<_> = [[1.0, 10.0, -2.0], [3.0, 30.0, -4.0]]
            .iter()
            .map(|r| (vec![row(r)], Vec::new()))
            .collect();
        let profile = Profile::from_samples(&samples, 32);
        let drift = VersionDrift::new("m", "1", Some(profile.clone()), DriftSettings::default());
        assert_eq!(drift.reference_means("x", 3).unwrap(), [2.0, 20.0, -3.0]);
        assert!(
            drift
                .reference_means("x", 4)
                .unwrap_err()
                .contains("no mean for feature 3")
        );
        assert!(
            drift
                .reference_means("x", 2)
                .unwrap_err()
                .contains("outside the row's 2")
        );
        assert!(drift.reference_means("y", 3).unwrap_err().contains("no input 'y'"));
        let narrow = Profile::from_samples(&samples, 2);
        let drift = VersionDrift::new("m", "2", Some(narrow), DriftSettings::default());
        assert!(drift.reference_means("x", 3).unwrap_err().contains("aggregate"));
        let none = VersionDrift::new("m", "3", None, DriftSettings::default());
        assert!(
            none.reference_means("x", 3)
                .unwrap_err()
                .contains("no reference profile")
        );
    }
}
