use std::time::{Duration, Instant};

use bytes::Bytes;
use switchyard_proto::inference::{ModelConfig, ModelParameter};

use super::stats::{self, Welford};
use super::*;
use crate::tensor::{DataType, Tensor, TensorData};

const WAIT: Duration = Duration::from_secs(60);

/// Deterministic xorshift generator with normal samples (Box–Muller).
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

fn fp32(name: &str, shape: &[i64], values: &[f32]) -> Tensor {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Tensor {
        name: name.into(),
        datatype: DataType::Fp32,
        shape: shape.to_vec(),
        data: TensorData::Fixed(Bytes::from(bytes)),
    }
}

/// `rows` × `cols` normal values, `shift` added to column 0.
fn normal_batch(rng: &mut Rng, rows: usize, cols: usize, shift: f64) -> Vec<f32> {
    (0..rows * cols)
        .map(|i| (rng.normal() + if i % cols == 0 { shift } else { 0.0 }) as f32)
        .collect()
}

/// `batches` requests of 100 rows: input `x` [100, 3], output `y` [100, 1].
fn requests(seed: u64, batches: usize, shift: f64) -> Vec<(Vec<Tensor>, Vec<Tensor>)> {
    let mut rng = Rng(seed);
    (0..batches)
        .map(|_| {
            let x = normal_batch(&mut rng, 100, 3, shift);
            let y: Vec<f32> = x.chunks(3).map(|r| r.iter().sum()).collect();
            (vec![fp32("x", &[100, 3], &x)], vec![fp32("y", &[100, 1], &y)])
        })
        .collect()
}

fn settings(window: u64, min_samples: u64) -> DriftSettings {
    DriftSettings {
        window,
        min_samples,
        ..DriftSettings::default()
    }
}

fn feature<'a>(r: &'a DriftReport, tensor: &str, feature: &str) -> &'a FeatureReport {
    r.tensors
        .iter()
        .find(|t| t.name == tensor)
        .and_then(|t| t.features.iter().find(|f| f.feature == feature))
        .unwrap_or_else(|| panic!("no {tensor}/{feature} in the report"))
}

fn direct(values: &[f64]) -> (f64, f64, f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (mean, var.sqrt(), min, max)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn welford_matches_direct_computation_and_merges() {
    let mut rng = Rng(7);
    let values: Vec<f64> = (0..5000).map(|_| 10.0 + 3.0 * rng.normal()).collect();
    let mut all = Welford::default();
    let (mut a, mut b) = (Welford::default(), Welford::default());
    for (i, &v) in values.iter().enumerate() {
        all.push(v);
        if i < 1234 { a.push(v) } else { b.push(v) }
    }
    a.merge(&b);
    let (mean, std, min, max) = direct(&values);
    for w in [&all, &a] {
        assert_eq!(w.finite, 5000);
        assert!(close(w.mean().unwrap(), mean));
        assert!(close(w.std().unwrap(), std));
        assert_eq!((w.min().unwrap(), w.max().unwrap()), (min, max));
    }
    assert_eq!(Welford::default().mean(), None);
}

#[test]
fn report_statistics_match_direct_computation() {
    // 1500 rows, window 1000: the total merges a completed window with the current one;
    // min_samples 600 keeps the completed window (rows 0..1000) shown.
    let d = VersionDrift::new("stats", "1", None, settings(1000, 600));
    let reqs = requests(11, 15, 0.0);
    for (i, o) in &reqs {
        d.observe(i.clone(), o.clone());
    }
    assert!(d.flush(WAIT));
    let r = d.report();
    assert_eq!((r.processed, r.samples_seen, r.dropped), (15, 1500, 0));
    assert_eq!(r.window.completed, 1);
    assert_eq!(r.window.current_samples, 500);
    assert_eq!(r.window.shown, ShownWindow::LastCompleted);
    assert!(!r.has_reference && r.max_psi.is_none() && !r.alert);
    let column = |c: usize, rows: std::ops::Range<usize>| -> Vec<f64> {
        reqs.iter()
            .flat_map(|(i, _)| {
                let TensorData::Fixed(b) = &i[0].data else {
                    unreachable!()
                };
                b.chunks_exact(4)
                    .map(|x| f64::from(f32::from_le_bytes(x.try_into().unwrap())))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
            .chunks(3)
            .map(|row| row[c])
            .skip(rows.start)
            .take(rows.len())
            .collect()
    };
    for c in 0..3 {
        let f = feature(&r, "x", &c.to_string());
        let (mean, std, min, max) = direct(&column(c, 0..1500));
        assert_eq!(f.total.count, 1500);
        assert!(close(f.total.mean.unwrap(), mean), "{:?} vs {mean}", f.total.mean);
        assert!(close(f.total.std.unwrap(), std));
        assert_eq!((f.total.min.unwrap(), f.total.max.unwrap()), (min, max));
        let w = f.window.as_ref().unwrap();
        let (mean, std, _, _) = direct(&column(c, 0..1000));
        assert_eq!(w.count, 1000);
        assert!(close(w.mean.unwrap(), mean) && close(w.std.unwrap(), std));
    }
    assert_eq!(feature(&r, "y", "0").total.count, 1500);
    assert_eq!(
        r.tensors.iter().map(|t| t.role).collect::<Vec<_>>(),
        [Role::Input, Role::Output]
    );
}

#[test]
fn nan_and_inf_are_counted_apart() {
    let d = VersionDrift::new("nonfinite", "1", None, settings(1000, 1));
    let values = [1.0, f32::NAN, 3.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
    d.observe(vec![fp32("x", &[6, 1], &values)], vec![]);
    assert!(d.flush(WAIT));
    let r = d.report();
    let f = feature(&r, "x", "0");
    assert_eq!((f.total.count, f.total.nan, f.total.inf), (6, 2, 2));
    assert_eq!(
        (f.total.mean, f.total.min, f.total.max),
        (Some(2.0), Some(1.0), Some(3.0))
    );
    assert_eq!(f.total.std, Some(1.0));
    assert_eq!(r.window.shown, ShownWindow::Current);
}

#[test]
fn same_distribution_has_low_psi_and_no_alert() {
    let profile = Profile::from_samples(&requests(1, 50, 0.0), 32);
    assert_eq!(profile.samples, 5000);
    let d = VersionDrift::new("same", "1", Some(profile), settings(1000, 100));
    for (i, o) in requests(2, 20, 0.0) {
        d.observe(i, o);
    }
    assert!(d.flush(WAIT));
    let r = d.report();
    assert!(r.has_reference);
    assert_eq!((r.window.completed, r.window.shown), (2, ShownWindow::LastCompleted));
    for (t, f) in [("x", "0"), ("x", "1"), ("x", "2"), ("y", "0")] {
        let psi = feature(&r, t, f).psi.unwrap();
        assert!(psi < 0.1, "{t}/{f}: psi {psi}");
    }
    assert!(!r.alert && !d.alert());
    assert!(r.max_psi.unwrap() < 0.1);
}

#[test]
fn shifted_input_raises_psi_and_alerts() {
    let profile = Profile::from_samples(&requests(1, 50, 0.0), 32);
    let d = VersionDrift::new("shifted", "1", Some(profile), settings(1000, 100));
    for (i, o) in requests(3, 10, 3.0) {
        d.observe(i, o);
    }
    assert!(d.flush(WAIT));
    let r = d.report();
    let psi = feature(&r, "x", "0").psi.unwrap();
    assert!(psi > 0.2, "shifted feature psi {psi}");
    assert!(feature(&r, "x", "1").psi.unwrap() < 0.1);
    let w = feature(&r, "x", "0").window.clone().unwrap();
    assert!((w.mean.unwrap() - 3.0).abs() < 0.2);
    assert!(d.alert() && r.alert);
    assert_eq!(r.max_psi, Some(psi));
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["alert"], true);
    assert_eq!(json["window"]["shown"], "last_completed");
}

/// Class-score outputs `[100, 3]` whose argmax is class 0 with probability `p0`, else 1 or 2.
fn class_requests(seed: u64, batches: usize, p0: f64) -> Vec<(Vec<Tensor>, Vec<Tensor>)> {
    let mut rng = Rng(seed);
    (0..batches)
        .map(|_| {
            let mut scores = Vec::new();
            for _ in 0..100 {
                let u = rng.uniform();
                let k = if u < p0 {
                    0
                } else if u < p0 + (1.0 - p0) / 2.0 {
                    1
                } else {
                    2
                };
                for c in 0..3 {
                    let base = if c == k { 0.7 } else { 0.1 };
                    scores.push((base + 0.05 * rng.uniform()) as f32);
                }
            }
            (vec![], vec![fp32("probs", &[100, 3], &scores)])
        })
        .collect()
}

#[test]
fn class_distribution_shift_is_detected() {
    let profile = Profile::from_samples(&class_requests(5, 30, 1.0 / 3.0), 32);
    let reference = profile.tensor(Role::Output, "probs").unwrap().classes.clone().unwrap();
    assert_eq!(reference.len(), 3);
    assert!(reference.iter().all(|p| (p - 1.0 / 3.0).abs() < 0.05), "{reference:?}");

    let same = VersionDrift::new("classes", "same", Some(profile.clone()), settings(1000, 100));
    let shifted = VersionDrift::new("classes", "shifted", Some(profile), settings(1000, 100));
    for (i, o) in class_requests(6, 10, 1.0 / 3.0) {
        same.observe(i, o);
    }
    for (i, o) in class_requests(7, 10, 0.8) {
        shifted.observe(i, o);
    }
    assert!(same.flush(WAIT) && shifted.flush(WAIT));
    let class_psi = |d: &VersionDrift| {
        let r = d.report();
        let c = r.tensors[0].classes.clone().unwrap();
        assert_eq!(c.classes, 3);
        assert_eq!(c.total_counts.iter().sum::<u64>(), 1000);
        c.psi.unwrap()
    };
    let (low, high) = (class_psi(&same), class_psi(&shifted));
    assert!(low < 0.1, "same class psi {low}");
    assert!(high > 0.2, "shifted class psi {high}");
    assert!(!same.alert() && shifted.alert());
    let c = shifted.report().tensors[0].classes.clone().unwrap();
    assert!(c.window_proportions.unwrap()[0] > 0.7);
}

#[test]
fn wide_tensors_become_one_aggregate_feature() {
    let mut rng = Rng(9);
    let reference: Vec<_> = (0..10)
        .map(|_| {
            (
                vec![fp32("img", &[10, 100], &normal_batch(&mut rng, 10, 100, 0.0))],
                vec![],
            )
        })
        .collect();
    let profile = Profile::from_samples(&reference, 32);
    let features = &profile.tensor(Role::Input, "img").unwrap().features;
    assert_eq!(features.len(), 1);
    assert_eq!(features[0].feature, AGGREGATE_FEATURE);
    assert_eq!(features[0].count, 10_000);
    assert_eq!(features[0].edges.len(), 9);
    let d = VersionDrift::new("wide", "1", Some(profile), settings(100, 100));
    for _ in 0..10 {
        d.observe(
            vec![fp32("img", &[10, 100], &normal_batch(&mut rng, 10, 100, 0.0))],
            vec![],
        );
    }
    assert!(d.flush(WAIT));
    let r = d.report();
    assert_eq!(r.tensors[0].features.len(), 1);
    let f = feature(&r, "img", "*");
    assert_eq!(f.total.count, 10_000);
    assert!(f.psi.unwrap() < 0.1);
}

#[test]
fn profile_json_round_trip_and_validation() {
    let mut samples = requests(1, 5, 0.0);
    samples.extend(class_requests(2, 2, 0.5));
    let profile = Profile::from_samples(&samples, 32);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("profile.json");
    profile.save(&path).unwrap();
    let loaded = Profile::load(&path).unwrap();
    assert_eq!(loaded, profile);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(json["format"], PROFILE_FORMAT);
    assert_eq!(json["tensors"][0]["role"], "input");
    assert_eq!(
        json["tensors"][0]["features"][0]["proportions"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
    assert!(json["tensors"][2]["classes"].is_array());

    assert!(Profile::load(dir.path().join("missing.json")).is_err());
    assert!(Profile::from_json("{").is_err());
    let mut wrong = profile.clone();
    wrong.format = "other/9".into();
    assert!(Profile::from_json(&wrong.to_json()).unwrap_err().contains("format"));
    let mut wrong = profile.clone();
    wrong.tensors[0].features[0].proportions.pop();
    assert!(Profile::from_json(&wrong.to_json()).is_err());
    let mut wrong = profile;
    wrong.tensors[0].features[0].edges.reverse();
    assert!(Profile::from_json(&wrong.to_json()).is_err());
}

#[test]
fn observe_never_blocks_when_the_queue_is_full() {
    // A private queue of 8 with no worker yet: a saturated worker.
    let (tx, rx) = std::sync::mpsc::sync_channel(8);
    let d = VersionDrift::with_sender("saturated", "1", None, settings(1000, 1), Arc::new(tx));
    let (inputs, outputs) = requests(1, 1, 0.0).remove(0);
    let start = Instant::now();
    for _ in 0..10_000 {
        d.observe(inputs.clone(), outputs.clone());
    }
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(2), "10000 observes took {elapsed:?}");
    let r = d.report();
    assert_eq!((r.offered, r.sampled, r.dropped, r.processed), (10_000, 8, 9_992, 0));
    assert!(!d.flush(Duration::from_millis(10)));
    spawn_worker(rx);
    assert!(d.flush(WAIT));
    let r = d.report();
    assert_eq!((r.processed, r.samples_seen), (8, 800));
}

#[test]
fn sample_rate_selects_that_fraction() {
    let d = VersionDrift::new(
        "sampled",
        "1",
        None,
        DriftSettings {
            sample_rate: 0.25,
            ..settings(1000, 1)
        },
    );
    let (inputs, outputs) = requests(1, 1, 0.0).remove(0);
    for _ in 0..100 {
        d.observe(inputs.clone(), outputs.clone());
    }
    assert!(d.flush(WAIT));
    let r = d.report();
    assert_eq!((r.offered, r.sampled, r.processed), (100, 25, 25));
    let off = VersionDrift::new(
        "sampled",
        "0",
        None,
        DriftSettings {
            sample_rate: 0.0,
            ..settings(1000, 1)
        },
    );
    off.observe(inputs, outputs);
    assert!(off.flush(WAIT));
    assert_eq!((off.report().offered, off.report().sampled), (1, 0));
}

#[test]
fn before_min_samples_nothing_is_shown() {
    let profile = Profile::from_samples(&requests(1, 10, 0.0), 32);
    let d = VersionDrift::new("early", "1", Some(profile), settings(1000, 200));
    let (inputs, outputs) = requests(2, 1, 5.0).remove(0);
    d.observe(inputs, outputs);
    assert!(d.flush(WAIT));
    let r = d.report();
    assert_eq!(r.window.shown, ShownWindow::None);
    assert!(feature(&r, "x", "0").psi.is_none() && feature(&r, "x", "0").window.is_none());
    assert!(!d.alert());
}

#[test]
fn dropping_closes_the_version() {
    let profile = Profile::from_samples(&requests(1, 10, 0.0), 32);
    let d = VersionDrift::new("dropped", "1", Some(profile), settings(100, 100));
    let (inputs, outputs) = requests(2, 1, 5.0).remove(0);
    d.observe(inputs, outputs);
    assert!(d.flush(WAIT) && d.alert());
    let shared = Arc::clone(&d.shared);
    drop(d);
    let state = shared.state.lock();
    assert!(state.closed && state.tensors.is_empty());
    assert!(!shared.alert.load(Ordering::Relaxed));
}

fn config(max_batch_size: i32, params: &[(&str, &str)]) -> ModelConfig {
    let mut c = ModelConfig {
        max_batch_size,
        ..ModelConfig::default()
    };
    for (k, v) in params {
        c.parameters.insert(
            k.to_string(),
            ModelParameter {
                string_value: v.to_string(),
            },
        );
    }
    c
}

#[test]
fn settings_from_config() {
    let base = DriftSettings::default();
    let s = DriftSettings::from_config(&config(8, &[]), &base).unwrap();
    assert_eq!(s, base);
    let s = DriftSettings::from_config(&config(0, &[]), &base).unwrap();
    assert!(!s.batched);
    let s = DriftSettings::from_config(
        &config(
            4,
            &[
                ("drift.sample_rate", " 0.5 "),
                ("drift.window", "500"),
                ("drift.min_samples", "50"),
                ("drift.psi_threshold", "0.25"),
                ("drift.max_features", "8"),
            ],
        ),
        &base,
    )
    .unwrap();
    assert_eq!(
        s,
        DriftSettings {
            sample_rate: 0.5,
            window: 500,
            min_samples: 50,
            psi_threshold: 0.25,
            max_features: 8,
            batched: true
        }
    );
    for (key, value) in [
        ("drift.sample_rate", "1.5"),
        ("drift.sample_rate", "-0.1"),
        ("drift.sample_rate", "often"),
        ("drift.sample_rate", "NaN"),
        ("drift.window", "0"),
        ("drift.window", "-5"),
        ("drift.window", "1e3"),
        ("drift.min_samples", "x"),
        ("drift.psi_threshold", "0"),
        ("drift.psi_threshold", "inf"),
        ("drift.max_features", "5000"),
    ] {
        let e = DriftSettings::from_config(&config(4, &[(key, value)]), &base).unwrap_err();
        assert!(e.contains(key) && e.contains(value), "{e}");
    }
    // Settings built by hand are forced into range.
    let s = DriftSettings {
        sample_rate: f64::NAN,
        window: 0,
        min_samples: 5000,
        ..base
    }
    .sanitized();
    assert_eq!((s.sample_rate, s.window, s.min_samples), (0.0, 1, 1));
}

#[test]
fn layouts_and_decoding() {
    let t = |dt: DataType, shape: &[i64], bytes: Vec<u8>| Tensor {
        name: "t".into(),
        datatype: dt,
        shape: shape.to_vec(),
        data: TensorData::Fixed(Bytes::from(bytes)),
    };
    let f = fp32("t", &[5], &[0.0; 5]);
    assert_eq!(
        stats::layout(&f, false, true, 32).map(|l| (l.rows, l.per_row)),
        Some((5, 1))
    );
    assert_eq!(
        stats::layout(&f, false, false, 32).map(|l| (l.rows, l.per_row)),
        Some((1, 5))
    );
    let scores = fp32("t", &[2, 3], &[0.0; 6]);
    assert_eq!(stats::layout(&scores, true, true, 32).unwrap().classes, Some(3));
    assert_eq!(stats::layout(&scores, false, true, 32).unwrap().classes, None);
    assert!(stats::layout(&scores, true, true, 2).unwrap().aggregate);
    assert_eq!(
        stats::layout(&t(DataType::Int32, &[2, 3], vec![0; 24]), true, true, 32)
            .unwrap()
            .classes,
        None
    );
    assert!(stats::layout(&fp32("t", &[2, 3], &[0.0; 5]), false, true, 32).is_none());
    assert!(stats::layout(&fp32("t", &[0, 3], &[]), false, true, 32).is_none());
    let strings = Tensor {
        name: "s".into(),
        datatype: DataType::Bytes,
        shape: vec![1],
        data: TensorData::Bytes(vec![Bytes::from_static(b"a")]),
    };
    assert!(stats::layout(&strings, false, true, 32).is_none());

    let mut out = Vec::new();
    let h: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
        .collect();
    stats::decode(DataType::Fp16, &h, &mut out);
    assert_eq!(out, [1.5, -2.0]);
    let b: Vec<u8> = [0.5f32, 4.0]
        .iter()
        .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
        .collect();
    stats::decode(DataType::Bf16, &b, &mut out);
    assert_eq!(out, [0.5, 4.0]);
    stats::decode(DataType::Int8, &[0xFF, 3], &mut out);
    assert_eq!(out, [-1.0, 3.0]);
    stats::decode(DataType::Bool, &[0, 1, 2], &mut out);
    assert_eq!(out, [0.0, 1.0, 1.0]);
    stats::decode(DataType::Int64, &(-7i64).to_le_bytes(), &mut out);
    assert_eq!(out, [-7.0]);
    stats::decode(DataType::Uint16, &[0x34, 0x12], &mut out);
    assert_eq!(out, [4660.0]);
}

#[test]
fn bins_edges_and_psi() {
    let edges = [0.0, 1.0];
    assert_eq!(stats::bin(&edges, f64::NEG_INFINITY), 0);
    assert_eq!(stats::bin(&edges, 0.0), 0);
    assert_eq!(stats::bin(&edges, 0.5), 1);
    assert_eq!(stats::bin(&edges, 1.0), 1);
    assert_eq!(stats::bin(&edges, f64::INFINITY), 2);
    // Discrete values keep one edge per distinct value.
    let sorted: Vec<f64> = [0.0; 70].into_iter().chain([1.0; 30]).collect();
    assert_eq!(stats::quantile_edges(&sorted, 10), [0.0, 1.0]);
    assert_eq!(stats::psi(&[0.5, 0.5], &[10, 10]), Some(0.0));
    assert_eq!(stats::psi(&[0.5, 0.5], &[0, 0]), None);
    let p = stats::psi(&[0.5, 0.5, 0.0], &[0, 10, 10]).unwrap();
    assert!(p.is_finite() && p > 1.0);
}
