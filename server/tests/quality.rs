//! Ground-truth feedback, live quality and fairness on the example `credit`
//! model, end to end over HTTP and gRPC, and the store surviving a restart.

mod common;

use common::{TestServer, add_parameters, temp_repo};
use serde_json::{Value, json};
use switchyard_client::{Data, InferOptions, Tensor};

/// P(approve) of the credit model (its weights: features 0, 2 and 5).
fn approve(x: &[f32]) -> f64 {
    let z = 2.0 * x[0] as f64 - 1.5 * x[2] as f64 + x[5] as f64 - 0.25;
    1.0 / (1.0 + (-z).exp())
}

/// Row `i`: group `i % 2`; group 1 mostly approved, group 0 mostly denied.
fn applicant(i: usize) -> Vec<f32> {
    let group = (i % 2) as f32;
    let lean = if group == 1.0 { 1.0 } else { -1.0 };
    let wobble = ((i * 7919) % 13) as f32 / 13.0 - 0.5;
    let mut x = vec![0.0f32; 8];
    x[0] = lean * (0.5 + wobble);
    x[2] = -lean * 0.3;
    x[5] = wobble;
    x[7] = group;
    // Every fourth applicant of group 1 is denied, every fourth of group 0 approved.
    if i % 8 == 1 {
        x[0] = -2.0;
    }
    if i.is_multiple_of(8) {
        x[0] = 2.0;
    }
    x
}

fn features(rows: &[Vec<f32>]) -> Vec<Tensor> {
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    vec![Tensor::new("features", vec![rows.len() as i64, 8], Data::F32(flat))]
}

fn opts(id: &str) -> InferOptions {
    InferOptions {
        id: Some(id.to_string()),
        ..InferOptions::default()
    }
}

async fn metrics(s: &TestServer) -> String {
    let client = switchyard_client::HttpClient::new(&format!("http://{}", s.server.metrics_addr)).unwrap();
    let (_, body) = client.get_raw("/metrics").await.unwrap();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn feedback_joins_predictions_into_live_accuracy_and_fairness() {
    let repo = temp_repo(&["credit", "simple"]);
    add_parameters(repo.path(), "credit", &[("quality.min_samples", "10")]);
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_path_buf();
    let s = TestServer::start(repo.path(), |c| c.state_dir = Some(state_dir.clone())).await;

    // 40 predictions, half over each protocol; the truth is the prediction for 30 of them.
    let mut feedback = Vec::new();
    let mut predicted = Vec::new();
    for i in 0..40 {
        let x = applicant(i);
        let id = format!("app-{i}");
        let r = if i % 2 == 0 {
            s.http
                .infer("credit", &features(std::slice::from_ref(&x)), &opts(&id))
                .await
                .unwrap()
        } else {
            s.grpc
                .infer("credit", &features(std::slice::from_ref(&x)), &opts(&id))
                .await
                .unwrap()
        };
        assert_eq!(r.id, id);
        let Data::F32(p) = &r.output("probabilities").unwrap().data else {
            panic!("FP32 probabilities")
        };
        assert!((p[1] as f64 - approve(&x)).abs() < 1e-5);
        let class = usize::from(p[1] > p[0]);
        predicted.push((class, x[7]));
        // Every fourth truth is the other class: accuracy 0.75.
        let truth = if i % 4 == 3 { 1 - class } else { class };
        feedback.push(json!({"id": id, "label": truth}));
    }
    // Kept back for after the restart.
    let later = feedback.split_off(36);
    let r = s
        .http
        .feedback("credit", &json!({ "feedback": feedback }))
        .await
        .unwrap();
    assert_eq!(r["joined"], 36, "{r}");
    assert_eq!(r["results"][0]["outcome"], "joined");
    assert_eq!(r["results"][0]["versions"], json!(["1"]));

    // Unknown, duplicate and mismatched entries are answered one by one.
    let r = s
        .http
        .feedback(
            "credit",
            &json!({"feedback": [
                {"id": "never-made", "label": 1},
                {"id": "app-0", "label": 1},
                {"id": "app-37", "label": [1, 0]},
            ]}),
        )
        .await
        .unwrap();
    let outcomes: Vec<&str> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["unknown", "duplicate", "rows_mismatch"], "{r}");
    assert!(r["results"][0]["message"].as_str().unwrap().contains("no prediction"));
    assert_eq!(r["joined"], 0);

    let q = s.http.quality("credit", None).await.unwrap();
    assert_eq!(q["window"]["labelled"], 36, "{q}");
    let wrong = (0..36).filter(|i| i % 4 == 3).count() as f64;
    let accuracy = q["window"]["accuracy"].as_f64().unwrap();
    assert!((accuracy - (36.0 - wrong) / 36.0).abs() < 1e-9, "{q}");
    assert_eq!(
        q["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| *a == "accuracy")
            .count(),
        1,
        "{q}"
    );
    assert!(q["window"]["calibration_error"].as_f64().is_some());
    assert_eq!(q["window"]["classes"].as_array().unwrap().len(), 2);

    // Fairness: the favourable rate per group matches what the model answered.
    let f = s.http.fairness("credit", None).await.unwrap();
    let groups = f["groups"].as_array().unwrap();
    for g in ["0", "1"] {
        let rows: Vec<_> = predicted.iter().filter(|(_, grp)| format!("{grp}") == g).collect();
        let rate = rows.iter().filter(|(c, _)| *c == 1).count() as f64 / rows.len() as f64;
        let got = groups
            .iter()
            .find(|x| x["group"] == g)
            .unwrap_or_else(|| panic!("group {g}: {f}"));
        assert_eq!(got["rows"], rows.len());
        assert!((got["favourable_rate"].as_f64().unwrap() - rate).abs() < 1e-9, "{f}");
    }
    let g0 = groups.iter().find(|x| x["group"] == "0").unwrap();
    let dir = g0["disparate_impact_ratio"].as_f64().unwrap();
    assert!(dir < 0.8, "group 0 is approved far less often: {f}");
    assert_eq!(g0["alert"], true);
    assert!(g0["true_positive_rate"].as_f64().is_some(), "feedback gives TPR: {f}");

    let text = metrics(&s).await;
    for needle in [
        "switchyard_quality_accuracy{model=\"credit\",version=\"1\"}",
        "switchyard_quality_alert{model=\"credit\",version=\"1\",metric=\"accuracy\"} 1",
        "switchyard_fairness_disparate_impact_ratio{model=\"credit\",version=\"1\",group=\"0\"}",
    ] {
        assert!(text.contains(needle), "{needle} in\n{text}");
    }
    // Counters are the process's (other tests run beside this one): at least this test's.
    let counter = |outcome: &str| -> f64 {
        let key = format!("switchyard_feedback_total{{model=\"credit\",outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    assert!(counter("joined") >= 36.0 && counter("unknown") >= 1.0, "{text}");

    // A request without an id gets one, so its answer can be labelled.
    let r = s
        .http
        .infer("credit", &features(&[applicant(3)]), &InferOptions::default())
        .await
        .unwrap();
    assert_eq!(r.id.len(), 32, "a made id: {}", r.id);
    let made = r.id.clone();

    // Errors: a model without monitoring, an unknown model, a malformed body.
    for (path, body, status, needle) in [
        (
            "/v2/models/simple/feedback",
            json!({"id": "a", "label": 1}),
            409,
            "quality monitoring is off",
        ),
        ("/v2/models/nope/feedback", json!({"id": "a", "label": 1}), 404, "nope"),
        ("/v2/models/credit/feedback", json!({"id": "a"}), 400, "needs 'label'"),
    ] {
        let (code, _, body) = s
            .http
            .post_raw(
                path,
                &[("content-type", "application/json")],
                body.to_string().into_bytes(),
            )
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(code, status, "{path}: {v}");
        assert!(v["error"].as_str().unwrap().contains(needle), "{path}: {v}");
    }
    let (code, _) = s.http.get_raw("/v2/models/simple/quality").await.unwrap();
    assert_eq!(code, 409);
    s.stop().await;

    // The store survives a restart: the kept-back ids and the made one still join.
    let s = TestServer::start(repo.path(), |c| c.state_dir = Some(state.path().to_path_buf())).await;
    let mut later = later;
    later.push(json!({"id": made, "label": 0}));
    let r = s.http.feedback("credit", &json!({ "feedback": later })).await.unwrap();
    assert_eq!(r["joined"], 5, "{r}");
    let r = s
        .http
        .feedback("credit", &json!({"id": "app-0", "label": 1}))
        .await
        .unwrap();
    assert_eq!(
        r["results"][0]["outcome"], "duplicate",
        "labelled before the restart: {r}"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_batch_request_takes_one_label_per_row_and_groups_can_come_from_a_parameter() {
    let repo = temp_repo(&["credit"]);
    // The group from a request parameter instead of feature 7.
    let config = repo.path().join("credit/config.pbtxt");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("input:features[7]", "parameter:region")
        .replace(
            "key: \"fairness.privileged\" value: { string_value: \"1\" }",
            "key: \"fairness.privileged\" value: { string_value: \"north\" }",
        );
    std::fs::write(&config, text).unwrap();
    let s = TestServer::start(repo.path(), |_| {}).await;
    let rows: Vec<Vec<f32>> = (0..4).map(applicant).collect();
    for (id, region) in [("b1", "north"), ("b2", "south")] {
        let mut o = opts(id);
        o.parameters.insert("region".into(), json!(region));
        s.http.infer("credit", &features(&rows), &o).await.unwrap();
    }
    let r = s
        .http
        .feedback(
            "credit",
            &json!({"feedback": [{"id": "b1", "label": [1, 0, 1, 0]}, {"id": "b2", "label": [0, 0, 0, 0]}]}),
        )
        .await
        .unwrap();
    assert_eq!(r["joined"], 2, "{r}");
    let q = s.http.quality("credit", Some("1")).await.unwrap();
    assert_eq!(q["window"]["labelled"], 8, "{q}");
    let f = s.http.fairness("credit", Some("1")).await.unwrap();
    let groups: Vec<(String, u64)> = f["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["group"].as_str().unwrap().to_string(), g["rows"].as_u64().unwrap()))
        .collect();
    assert_eq!(groups, [("north".to_string(), 4), ("south".to_string(), 4)], "{f}");
    assert_eq!(f["reference"], "the privileged group 'north'");
    s.stop().await;
}

#[tokio::test]
async fn the_shadow_gate_waits_for_feedback_on_both_versions_before_it_promotes() {
    let repo = temp_repo(&["credit"]);
    common::copy_dir(&repo.path().join("credit/1"), &repo.path().join("credit/2"));
    let config = repo.path().join("credit/config.pbtxt");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}version_policy: {{ all {{}} }}\n")).unwrap();
    std::fs::write(
        repo.path().join("credit/traffic.yaml"),
        "default: 1\nshadow: { target: 2, promote: { min_pairs: 4, min_labelled: 8, max_accuracy_drop: 0.05 } }\n",
    )
    .unwrap();
    let s = TestServer::start(repo.path(), |_| {}).await;
    let ids: Vec<String> = (0..8).map(|i| format!("g-{i}")).collect();
    let mut labels = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let r = s
            .http
            .infer("credit", &features(&[applicant(i)]), &opts(id))
            .await
            .unwrap();
        assert_eq!(r.model_version, "1");
        let Data::F32(p) = &r.output("probabilities").unwrap().data else {
            panic!("FP32")
        };
        labels.push(json!({"id": id, "label": usize::from(p[1] > p[0])}));
    }
    // Enough pairs, no labels: the gate waits (the report has no verdict).
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let r = s.http.shadow_report("credit").await.unwrap();
        if r["totals"]["pairs"].as_u64().unwrap_or(0) >= 8 {
            assert!(
                r["gate"].is_null() || r["gate"]["passed"].is_null(),
                "decided without labels: {r}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the pairs never finished: {r}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Labels judge both versions (the shadow's copies were kept under the same ids).
    let r = s.http.feedback("credit", &json!({ "feedback": labels })).await.unwrap();
    assert_eq!(r["joined"], 8, "{r}");
    assert_eq!(r["results"][0]["versions"], json!(["1", "2"]), "{r}");
    // The next pair lets the gate decide: equal live accuracy, promoted.
    let deadline = std::time::Instant::now() + common::WAIT;
    let mut i = 100;
    let report = loop {
        s.http
            .infer("credit", &features(&[applicant(i)]), &opts(&format!("n-{i}")))
            .await
            .unwrap();
        i += 1;
        let r = s.http.shadow_report("credit").await.unwrap();
        if r["gate"]["passed"] == true {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "the gate never decided: {r}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let reason = report["gate"]["reason"].as_str().unwrap();
    assert!(reason.contains("live accuracy 1.0000 vs primary 1.0000"), "{reason}");
    let r = s
        .http
        .infer("credit", &features(&[applicant(1)]), &opts("after"))
        .await
        .unwrap();
    assert_eq!(r.model_version, "2", "promoted");
    s.stop().await;
}

#[tokio::test]
async fn a_promoted_version_whose_live_accuracy_falls_below_its_threshold_is_rolled_back() {
    let repo = temp_repo(&["credit"]);
    add_parameters(repo.path(), "credit", &[("quality.min_samples", "8")]);
    let config = repo.path().join("credit/config.pbtxt");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}version_policy: {{ all {{}} }}\n")).unwrap();
    let s = TestServer::start(repo.path(), |c| {
        c.model_control_mode = switchyard::config::ControlMode::Explicit;
        c.load_models = vec!["credit".into()];
        c.auto_rollback_window_secs = 60.0;
        c.auto_rollback_min_requests = 1_000_000; // errors and latency never decide here
    })
    .await;
    common::copy_dir(&repo.path().join("credit/1"), &repo.path().join("credit/2"));
    s.http.load_model("credit", None).await.unwrap();
    assert_eq!(s.http.labels("credit").await.unwrap()["default_version"], 2);
    // Version 2 answers; the truth says it is wrong half the time: accuracy 0.5 < 0.8.
    let mut labels = Vec::new();
    for i in 0..8 {
        let id = format!("r-{i}");
        let r = s
            .http
            .infer("credit", &features(&[applicant(i)]), &opts(&id))
            .await
            .unwrap();
        assert_eq!(r.model_version, "2");
        let Data::F32(p) = &r.output("probabilities").unwrap().data else {
            panic!("FP32")
        };
        let class = usize::from(p[1] > p[0]);
        labels.push(json!({"id": id, "label": if i % 2 == 0 { class } else { 1 - class }}));
    }
    s.http.feedback("credit", &json!({ "feedback": labels })).await.unwrap();
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let l = s.http.labels("credit").await.unwrap();
        if l["default_version"] == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never rolled back: {l}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn the_prediction_log_records_each_rows_group_and_outcome() {
    let repo = temp_repo(&["credit"]);
    // The features are not written, yet the group read from them is.
    add_parameters(
        repo.path(),
        "credit",
        &[
            ("prediction_log.sample_rate", "1.0"),
            ("prediction_log.drop_inputs", "features"),
        ],
    );
    let log_dir = tempfile::tempdir().unwrap();
    let dir = log_dir.path().to_path_buf();
    let s = TestServer::start(repo.path(), |c| c.prediction_log_dir = Some(dir)).await;
    let rows: Vec<Vec<f32>> = (0..3).map(applicant).collect();
    s.http.infer("credit", &features(&rows), &opts("log-1")).await.unwrap();
    let service = s.server.service.clone();
    let flushed =
        tokio::task::spawn_blocking(move || service.prediction_log().flush(std::time::Duration::from_secs(10)))
            .await
            .unwrap();
    assert!(flushed);
    let text = std::fs::read_to_string(log_dir.path().join("predictions.jsonl")).unwrap();
    let line: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["id"], "log-1");
    assert_eq!(line["inputs"], json!([]), "{line}");
    let expected: Vec<Value> = rows
        .iter()
        .map(|x| json!({"group": format!("{}", x[7]), "favourable": approve(x) >= 0.5}))
        .collect();
    assert_eq!(line["fairness"], json!(expected), "{line}");
    s.stop().await;
}
