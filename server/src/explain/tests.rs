//! The methods on functions whose attributions are known.

use super::*;

const W: [f64; 5] = [2.0, 0.0, -1.5, 0.0, 1.0];

fn linear(row: &[f64]) -> f64 {
    row.iter().zip(W).map(|(x, w)| x * w).sum::<f64>() - 0.25
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn occlusion_of_a_linear_function_is_weight_times_distance() {
    let x = vec![1.0, 5.0, -2.0, 7.0, 0.5];
    let reference = vec![0.5, 1.0, 1.0, 1.0, 0.0];
    let plan = Plan::new(Method::Occlusion, x.clone(), reference.clone(), 7, 0).unwrap();
    assert_eq!(plan.rows(), 7);
    let a = explain_with(&plan, linear);
    for i in 0..5 {
        assert!(close(a[i], W[i] * (x[i] - reference[i])), "feature {i}: {}", a[i]);
    }
    assert_eq!(Plan::new(Method::Occlusion, x, reference, 6, 0).unwrap_err(), 7);
}

#[test]
fn shapley_of_a_linear_function_is_exact_whatever_the_permutations() {
    let x = vec![1.0, 5.0, -2.0, 7.0, 0.5];
    let reference = vec![0.5, 1.0, 1.0, 1.0, 0.0];
    for seed in [1, 2, 3] {
        let plan = Plan::new(Method::Shapley, x.clone(), reference.clone(), 50, seed).unwrap();
        assert_eq!(plan.permutations(), 12, "(50 - 2) / (5 - 1)");
        assert_eq!(plan.rows(), 50);
        let a = explain_with(&plan, linear);
        for i in 0..5 {
            assert!(close(a[i], W[i] * (x[i] - reference[i])), "feature {i}: {}", a[i]);
        }
    }
    assert_eq!(Plan::new(Method::Shapley, x, reference, 5, 0).unwrap_err(), 6);
}

#[test]
fn shapley_attributions_sum_to_the_change_and_split_an_interaction() {
    // f = x0 · x1 + x2: the interaction's change is shared equally by 0 and 1.
    let f = |r: &[f64]| r[0] * r[1] + r[2];
    let x = vec![2.0, 3.0, 1.0];
    let reference = vec![0.0, 0.0, 0.0];
    let plan = Plan::new(Method::Shapley, x.clone(), reference.clone(), 2 + 2 * 40, 7).unwrap();
    let a = explain_with(&plan, f);
    assert!(close(a.iter().sum::<f64>(), f(&x) - f(&reference)));
    // Antithetic pairs: each pair puts 0 before 1 once and after it once.
    assert!(close(a[0], 3.0) && close(a[1], 3.0) && close(a[2], 1.0), "{a:?}");
}

#[test]
fn rows_are_written_on_demand_and_the_same_seed_draws_the_same_permutations() {
    let x = vec![1.0, 2.0, 3.0];
    let reference = vec![0.0; 3];
    let plan = Plan::new(Method::Shapley, x.clone(), reference.clone(), 6, 9).unwrap();
    assert_eq!((plan.permutations(), plan.rows()), (2, 6));
    let mut row = vec![0.0; 3];
    plan.fill_row(ROW_X, &mut row);
    assert_eq!(row, x);
    plan.fill_row(ROW_REFERENCE, &mut row);
    assert_eq!(row, reference);
    // Each walk's rows move one more feature to x; the second walk reverses the first.
    let rows: Vec<Vec<f64>> = (2..6)
        .map(|k| {
            plan.fill_row(k, &mut row);
            row.clone()
        })
        .collect();
    let moved = |r: &[f64]| r.iter().filter(|&&v| v != 0.0).count();
    assert_eq!(rows.iter().map(|r| moved(r)).collect::<Vec<_>>(), [1, 2, 1, 2]);
    let first = rows[0].iter().position(|&v| v != 0.0).unwrap();
    let last_of_reverse = (0..3).find(|&i| rows[3][i] == 0.0).unwrap();
    assert_eq!(first, last_of_reverse);
    let again = Plan::new(Method::Shapley, x, reference, 6, 9).unwrap();
    assert_eq!(again.permutations, plan.permutations);
    let occlusion = Plan::new(Method::Occlusion, vec![1.0, 2.0], vec![0.0, 0.0], 4, 0).unwrap();
    occlusion.fill_row(3, &mut row[..2]);
    assert_eq!(row[..2], [1.0, 0.0]);
}

#[test]
fn one_feature_and_small_budgets() {
    let plan = Plan::new(Method::Shapley, vec![3.0], vec![1.0], 2, 0).unwrap();
    assert_eq!((plan.rows(), plan.permutations()), (2, 1));
    assert_eq!(explain_with(&plan, |r| 2.0 * r[0]), [4.0]);
    assert_eq!(Method::Shapley.min_evaluations(1), 2);
    assert_eq!(Method::Shapley.min_evaluations(8), 9);
    assert_eq!(Method::Occlusion.min_evaluations(8), 10);
    assert_eq!(Method::parse("shapley"), Some(Method::Shapley));
    assert_eq!(Method::parse("lime"), None);
}

#[test]
fn the_default_target_is_the_largest_element() {
    assert_eq!(default_target(&[0.7]), 0);
    assert_eq!(default_target(&[0.2, 0.8]), 1);
    assert_eq!(default_target(&[f64::NAN, 0.1, 0.1]), 1);
    assert_eq!(default_target(&[]), 0);
}
