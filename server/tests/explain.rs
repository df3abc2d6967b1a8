//! `POST /v2/models/{m}/explain` on the example `credit` model, whose
//! P(approve) = sigmoid(2·x0 − 1.5·x2 + x5 − 0.25) reads features 0, 2 and 5
//! only: the attributions must find them, with the weights' signs; the
//! refusals (budget, no reference profile, rows, method, target) are clear;
//! explanations leave Triton's statistics alone and do not stop inference.

mod common;

use common::{TestServer, temp_repo};
use serde_json::{Value, json};
use switchyard_client::{ClientError, Data, InferOptions, Tensor};

/// Positive where the model reads (0, 2, 5), arbitrary elsewhere.
const ROW: [f32; 8] = [1.0, 0.3, 0.8, -0.5, 0.2, 1.2, 0.7, 1.0];

fn features(rows: &[[f32; 8]]) -> Vec<Tensor> {
    let data: Vec<f32> = rows.iter().flatten().copied().collect();
    vec![Tensor::new("features", vec![rows.len() as i64, 8], Data::F32(data))]
}

fn params(p: Value) -> InferOptions {
    InferOptions {
        parameters: p.as_object().cloned().unwrap_or_default(),
        ..InferOptions::default()
    }
}

fn attributions(r: &Value) -> Vec<f64> {
    r["attributions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["attribution"].as_f64().unwrap())
        .collect()
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// The status and message of a refused call.
fn refused(r: Result<Value, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Http { status, message }) => (status, message),
        other => panic!("expected an HTTP error, got {other:?}"),
    }
}

async fn inference_count(s: &TestServer) -> u64 {
    let stats = s.http.statistics(Some("credit"), None).await.unwrap();
    let v = &stats["model_stats"][0]["inference_count"];
    v.as_u64().or_else(|| v.as_str()?.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occlusion_finds_the_features_credit_reads_with_their_signs() {
    let repo = temp_repo(&["credit"]);
    let s = TestServer::start(repo.path(), |_| {}).await;
    let counted = inference_count(&s).await;
    let r = s
        .http
        .explain("credit", &features(&[ROW]), &params(json!({})))
        .await
        .unwrap();
    assert_eq!(r["model_name"], "credit");
    assert_eq!(r["model_version"], "1");
    assert_eq!(
        (r["method"].as_str(), r["input"].as_str()),
        (Some("occlusion"), Some("features"))
    );
    assert_eq!(r["output"], "probabilities");
    assert_eq!(r["target"], 1, "the argmax: approve");
    assert_eq!(r["evaluations"], 10, "x, the reference and one row per feature");
    let x: Vec<f64> = ROW.iter().map(|&v| f64::from(v)).collect();
    let z = 2.0 * x[0] - 1.5 * x[2] + x[5] - 0.25;
    assert!((r["prediction"].as_f64().unwrap() - sigmoid(z)).abs() < 1e-5);
    let a = attributions(&r);
    for (i, &v) in a.iter().enumerate() {
        if [0, 2, 5].contains(&i) {
            assert!(v.abs() > 1e-3, "feature {i} is read by the model: {v}");
        } else {
            assert!(v.abs() < 1e-6, "feature {i} is not read by the model: {v}");
        }
    }
    assert!(
        a[0] > 0.0 && a[2] < 0.0 && a[5] > 0.0,
        "signs follow the weights: {a:?}"
    );
    let first = &r["attributions"][0];
    assert_eq!(first["feature"], 0);
    assert_eq!(first["value"], 1.0);
    assert!(first["reference"].as_f64().unwrap().abs() < 0.1, "the profile's mean");
    assert_eq!(
        inference_count(&s).await,
        counted,
        "explanation rows are not Triton inferences"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shapley_ranks_the_read_features_first_and_sums_to_the_change() {
    let repo = temp_repo(&["credit"]);
    let s = TestServer::start(repo.path(), |_| {}).await;
    let ask = params(json!({"method": "shapley", "max_evaluations": 2000, "seed": 42, "target": 1}));
    let r = s.http.explain("credit", &features(&[ROW]), &ask).await.unwrap();
    assert_eq!(r["method"], "shapley");
    assert_eq!((r["permutations"].as_u64(), r["seed"].as_u64()), (Some(285), Some(42)));
    assert_eq!(r["evaluations"], 2 + 285 * 7);
    let a = attributions(&r);
    let mut order: Vec<usize> = (0..8).collect();
    order.sort_by(|&i, &j| a[j].abs().total_cmp(&a[i].abs()));
    let mut top: Vec<usize> = order[..3].to_vec();
    top.sort();
    assert_eq!(top, [0, 2, 5], "{a:?}");
    let change = r["prediction"].as_f64().unwrap() - r["baseline"].as_f64().unwrap();
    assert!(
        (a.iter().sum::<f64>() - change).abs() < 1e-4,
        "{} vs {change}",
        a.iter().sum::<f64>()
    );
    let again = s.http.explain("credit", &features(&[ROW]), &ask).await.unwrap();
    assert_eq!(attributions(&again), a, "the same seed, the same permutations");
    // The recorder is the process's: other tests here add to the same series.
    let metrics = reqwest::get(format!("http://{}/metrics", s.server.metrics_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |prefix: &str, labels: &[&str]| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix) && labels.iter().all(|m| l.contains(m)))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} {labels:?} in\n{metrics}"))
    };
    let shapley = ["model=\"credit\"", "method=\"shapley\"", "outcome=\"success\""];
    assert!(value("switchyard_explanations_total{", &shapley) >= 2.0);
    let rows = value("switchyard_explanation_evaluations_total{", &["model=\"credit\""]);
    assert!(rows >= 2.0 * 1997.0, "{rows}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_what_is_wrong() {
    let repo = temp_repo(&["credit", "simple"]);
    let s = TestServer::start(repo.path(), |_| {}).await;
    let one = features(&[ROW]);
    let call = |p: Value| {
        let (s, one) = (&s, &one);
        async move {
            let options = params(p);
            refused(s.http.explain("credit", one, &options).await)
        }
    };
    let (status, message) = call(json!({"max_evaluations": 9})).await;
    assert_eq!(status, 400);
    assert!(message.contains("needs at least 10 evaluations"), "{message}");
    let (status, message) = call(json!({"method": "shapley", "max_evaluations": 8})).await;
    assert_eq!(status, 400);
    assert!(message.contains("needs at least 9 evaluations"), "{message}");
    let (status, message) = call(json!({"max_evaluations": 100_000})).await;
    assert_eq!(status, 400);
    assert!(message.contains("limit of 16384"), "{message}");
    let (status, message) = call(json!({"method": "lime"})).await;
    assert_eq!(status, 400);
    assert!(message.contains("unknown explanation method 'lime'"), "{message}");
    let (status, message) = call(json!({"target": 2})).await;
    assert_eq!(status, 400);
    assert!(
        message.contains("target 2 is outside output 'probabilities'"),
        "{message}"
    );
    let (status, message) = call(json!({"output": "nope"})).await;
    assert_eq!(status, 400);
    assert!(message.contains("nope"), "{message}");
    let (status, message) = call(json!({"timeout_ms": 0})).await;
    assert_eq!(status, 400);
    assert!(message.contains("timeout_ms"), "{message}");
    let (status, message) = refused(
        s.http
            .explain("credit", &features(&[ROW, ROW]), &params(json!({})))
            .await,
    );
    assert_eq!(status, 400);
    assert!(message.contains("one row; the request has 2"), "{message}");
    // `simple` ships no reference profile: 409, naming what to ship.
    let inputs = common::simple_inputs(&[1; 16], &[2; 16]);
    let (status, message) = refused(
        s.http
            .explain("simple", &inputs, &params(json!({"input": "INPUT0"})))
            .await,
    );
    assert_eq!(status, 409);
    assert!(message.contains("validation/profile.json"), "{message}");
    let (status, message) = refused(s.http.explain("simple", &inputs, &params(json!({}))).await);
    assert_eq!(status, 400);
    assert!(message.contains("parameter 'input'"), "{message}");
    let (status, _) = refused(s.http.explain("absent", &one, &params(json!({}))).await);
    assert_eq!(status, 404);
    // Past its deadline: 504, and the model still answers.
    let ask = json!({"method": "shapley", "max_evaluations": 16384, "timeout_ms": 1});
    let (status, message) = call(ask).await;
    assert_eq!(status, 504);
    assert!(message.contains("timeout_ms"), "{message}");
    s.http.infer("credit", &one, &InferOptions::default()).await.unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_without_a_profile_is_refused() {
    let repo = temp_repo(&["credit"]);
    std::fs::remove_file(repo.path().join("credit/1/validation/profile.json")).unwrap();
    let s = TestServer::start(repo.path(), |_| {}).await;
    let (status, message) = refused(s.http.explain("credit", &features(&[ROW]), &params(json!({}))).await);
    assert_eq!(status, 409);
    assert!(message.contains("cannot be explained"), "{message}");
    assert!(message.contains("validation/profile.json"), "{message}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_goes_on_while_an_explanation_runs() {
    let repo = temp_repo(&["credit"]);
    let s = TestServer::start(repo.path(), |_| {}).await;
    let ask = params(json!({"method": "shapley", "max_evaluations": 16384, "seed": 3}));
    let (row, plain) = (features(&[ROW]), InferOptions::default());
    let mut answered = 0;
    let result = {
        let explanation = s.http.explain("credit", &row, &ask);
        tokio::pin!(explanation);
        loop {
            tokio::select! {
                biased;
                r = &mut explanation => break r,
                r = s.http.infer("credit", &row, &plain) => {
                    let r = r.expect("an inference while the explanation runs");
                    assert!(r.output("probabilities").is_some());
                    answered += 1;
                }
            }
        }
    };
    let r = result.unwrap();
    assert_eq!(r["evaluations"], 2 + 2340 * 7);
    assert!(answered > 0, "requests were answered while the explanation ran");
    s.stop().await;
}
