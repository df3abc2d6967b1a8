use std::collections::HashMap;

use switchyard_proto::inference::{ModelConfig, ModelParameter};

use super::*;
use crate::tensor::DataType;

fn spec<'a>(name: &'a str, dims: &'a [i64]) -> settings::Shape<'a> {
    (name, dims)
}

fn config(params: &[(&str, &str)]) -> ModelConfig {
    let parameters: HashMap<String, ModelParameter> = params
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                ModelParameter {
                    string_value: v.to_string(),
                },
            )
        })
        .collect();
    ModelConfig {
        max_batch_size: 8,
        parameters,
        ..ModelConfig::default()
    }
}

fn credit_settings(extra: &[(&str, &str)]) -> QualitySettings {
    let mut params = vec![
        ("fairness.attribute", "input:features[7]"),
        ("fairness.favourable_class", "1"),
        ("fairness.privileged", "1"),
        ("quality.min_samples", "4"),
        ("quality.min_accuracy", "0.8"),
    ];
    params.extend_from_slice(extra);
    QualitySettings::from_config(
        &config(&params),
        &[spec("features", &[8])],
        &[spec("probabilities", &[2])],
    )
    .unwrap()
    .unwrap()
}

fn tensor(name: &str, rows: usize, values: &[f64]) -> Tensor {
    let width = values.len() / rows;
    Tensor::from_f64(name, DataType::Fp32, vec![rows as i64, width as i64], values).unwrap()
}

#[test]
fn settings_are_off_without_parameters_and_checked_with_them() {
    let outputs = [spec("probabilities", &[2])];
    let inputs = [spec("features", &[8])];
    assert_eq!(QualitySettings::from_config(&config(&[]), &inputs, &outputs), Ok(None));
    let s = QualitySettings::from_config(&config(&[("quality.window_secs", "60")]), &inputs, &outputs)
        .unwrap()
        .unwrap();
    assert_eq!(s.task, Task::Classification);
    assert_eq!(s.output, "probabilities");
    assert_eq!(s.window.as_secs(), 60);
    let regression = QualitySettings::from_config(&config(&[("quality.max_mae", "2")]), &inputs, &[spec("y", &[1])]);
    assert_eq!(regression.unwrap().unwrap().task, Task::Regression);
    for (params, needle) in [
        (vec![("quality.typo", "1")], "unknown parameter 'quality.typo'"),
        (vec![("quality.output", "nope")], "no output 'nope'"),
        (vec![("quality.sample_rate", "2")], "quality.sample_rate"),
        (vec![("quality.window_secs", "0")], "quality.window_secs"),
        (vec![("fairness.attribute", "input:features[8]")], "past the input's 8"),
        (vec![("fairness.attribute", "input:nope[1]")], "does not have"),
        (vec![("fairness.attribute", "column 3")], "must be"),
        (vec![("fairness.attribute", "parameter:group")], "favourable_class"),
        (vec![("fairness.privileged", "1")], "needs 'fairness.attribute'"),
        (
            vec![
                ("fairness.attribute", "parameter:g"),
                ("fairness.favourable_class", "2"),
            ],
            "below 2",
        ),
    ] {
        let e = QualitySettings::from_config(&config(&params), &inputs, &outputs).unwrap_err();
        assert!(e.contains(needle), "{params:?}: {e}");
    }
}

#[test]
fn rows_carry_class_confidence_group_and_outcome() {
    let q = VersionQuality::new("credit", "1", credit_settings(&[]), true);
    let outputs = [tensor("probabilities", 2, &[0.3, 0.7, 0.9, 0.1])];
    let mut features = vec![0.0; 16];
    features[7] = 1.0;
    features[15] = 0.0;
    let inputs = [tensor("features", 2, &features)];
    let rows = q.rows(&outputs, &inputs, None);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].class, Some(1));
    assert!((rows[0].confidence.unwrap() - 0.7).abs() < 1e-6);
    assert_eq!(rows[0].group.as_deref(), Some("1"));
    assert_eq!(rows[0].favourable, Some(true));
    assert_eq!(rows[1].class, Some(0));
    assert_eq!(rows[1].group.as_deref(), Some("0"));
    assert_eq!(rows[1].favourable, Some(false));
    // A missing output or input gives nothing or no group, never a panic.
    assert!(q.rows(&[], &inputs, None).is_empty());
    assert_eq!(q.rows(&outputs, &[], None)[0].group, None);
    // Scores that are not probabilities carry no confidence.
    let scores = [tensor("probabilities", 1, &[3.0, -1.0])];
    assert_eq!(q.rows(&scores, &inputs[..0], None)[0].confidence, None);
}

#[test]
fn joined_feedback_gives_accuracy_and_alerts() {
    let q = VersionQuality::new("credit", "1", credit_settings(&[]), true);
    let row = |class: u32| store::Row {
        class: Some(class),
        confidence: Some(0.9),
        ..store::Row::default()
    };
    let now = store::now_ms();
    // 3 of 4 right: 0.75 < 0.8 with min_samples 4: alert.
    for (p, t) in [(1, 1), (0, 0), (1, 1), (1, 0)] {
        q.join(&[row(p)], &[Truth::Class(t)], now);
    }
    let r = q.report();
    assert_eq!(r.window.labelled, 4);
    assert_eq!(r.window.accuracy, Some(0.75));
    assert_eq!(r.alerts, ["accuracy"]);
    let class1 = &r.window.classes[1];
    assert_eq!((class1.precision, class1.recall), (Some(2.0 / 3.0), Some(1.0)));
    q.join(&[row(1)], &[Truth::Class(1)], now);
    assert!(q.report().alerts.is_empty(), "0.8 is not below 0.8");
}

#[test]
fn fairness_figures_against_the_privileged_group() {
    let q = VersionQuality::new("credit", "1", credit_settings(&[]), true);
    let now = store::now_ms();
    let row = |group: &str, fav: bool| store::Row {
        class: Some(u32::from(fav)),
        group: Some(group.into()),
        favourable: Some(fav),
        ..store::Row::default()
    };
    // Group 1 (privileged): 8 of 10 favourable; group 0: 4 of 10.
    let mut rows = Vec::new();
    for i in 0..10 {
        rows.push(row("1", i < 8));
        rows.push(row("0", i < 4));
    }
    q.record_predictions(&rows, now);
    let r = q.report();
    let f = r.fairness.as_ref().unwrap();
    let g0 = f.groups.iter().find(|g| g.group == "0").unwrap();
    let g1 = f.groups.iter().find(|g| g.group == "1").unwrap();
    assert_eq!(g0.favourable_rate, Some(0.4));
    assert!((g0.statistical_parity_difference.unwrap() + 0.4).abs() < 1e-12);
    assert!((g0.disparate_impact_ratio.unwrap() - 0.5).abs() < 1e-12);
    assert!(g0.alert, "DI 0.5 is below 0.8");
    assert_eq!(g1.statistical_parity_difference, None, "the reference itself");
    assert!(!g1.alert);
    assert_eq!(r.alerts, ["fairness:0"]);
    // Equal opportunity from feedback: of truly favourable rows, the share predicted so.
    q.join(
        &[row("0", false), row("0", true)],
        &[Truth::Class(1), Truth::Class(1)],
        now,
    );
    q.join(&[row("1", true)], &[Truth::Class(1)], now);
    let r = q.report();
    let f = r.fairness.unwrap();
    let g0 = f.groups.iter().find(|g| g.group == "0").unwrap();
    assert_eq!(g0.true_positive_rate, Some(0.5));
    assert_eq!(g0.equal_opportunity_difference, Some(-0.5));
}

#[test]
fn groups_past_the_cap_are_other() {
    let q = VersionQuality::new("credit", "1", credit_settings(&[("fairness.max_groups", "2")]), true);
    let now = store::now_ms();
    let rows: Vec<store::Row> = (0..50)
        .map(|i| store::Row {
            group: Some(format!("g{i}")),
            favourable: Some(true),
            ..store::Row::default()
        })
        .collect();
    q.record_predictions(&rows, now);
    let r = q.report();
    let groups: Vec<(String, u64)> = r
        .fairness
        .unwrap()
        .groups
        .iter()
        .map(|g| (g.group.clone(), g.rows))
        .collect();
    assert_eq!(groups, [("g0".into(), 1), ("g1".into(), 1), (OTHER_GROUP.into(), 48)]);
}

#[test]
fn sampling_keeps_the_configured_share() {
    let q = VersionQuality::new("credit", "1", credit_settings(&[("quality.sample_rate", "0.25")]), true);
    let kept = (0..1000).filter(|_| q.sample()).count();
    assert_eq!(kept, 250);
}
