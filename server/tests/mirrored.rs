//! Mirrored (shadow) traffic end to end: requests whose Host / `:authority`
//! ends in `-shadow`, or that carry the `--shadow-header`, are answered like
//! any other and kept apart: `traffic="shadow"` in /metrics, their own
//! statistics counters (Triton's success and fail counts unchanged), marked
//! prediction-log records, and no entry in the rollback health window.

mod common;

use std::collections::HashMap;

use common::{TestServer, WAIT, simple_inputs, temp_repo};
use prometheus_parse::{Scrape, Value as PromValue};
use serde_json::{Value, json};
use switchyard_client::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use switchyard_client::{Data, InferOptions, proto};

/// The header this test's server is told to read (mixed case: names are case-insensitive).
const HEADER: &str = "X-Mirrored";

async fn scrape(s: &TestServer) -> Scrape {
    let url = format!("http://{}/metrics", s.server.metrics_addr);
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text")
}

fn count(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            PromValue::Counter(x) | PromValue::Gauge(x) | PromValue::Untyped(x) => *x,
            PromValue::Histogram(b) => b.iter().map(|b| b.count).fold(0.0, f64::max),
            PromValue::Summary(_) => 0.0,
        })
        .sum()
}

fn row(i: i32) -> (Vec<i32>, Vec<i32>, Vec<i32>) {
    let a: Vec<i32> = (0..16).map(|k| k + i).collect();
    let b: Vec<i32> = (0..16).map(|k| 2 * k).collect();
    let sum = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    (a, b, sum)
}

/// One HTTP request through reqwest, with `headers` set (Host included).
async fn http_infer(s: &TestServer, id: &str, headers: &[(&str, &str)], i: i32) {
    let (a, b, want) = row(i);
    let body = json!({
        "id": id,
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": a},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": b},
        ]
    });
    let mut req = reqwest::Client::new()
        .post(format!("http://{}/v2/models/simple/infer", s.server.http_addr))
        .json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200, "{id}");
    let v: Value = resp.json().await.unwrap();
    let out = v["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "OUTPUT0")
        .unwrap();
    let got: Vec<i32> = out["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap() as i32)
        .collect();
    assert_eq!(got, want, "{id} is answered normally");
}

/// One gRPC request with `authority` as the `:authority` and `metadata` set.
async fn grpc_infer(s: &TestServer, id: &str, authority: Option<&str>, metadata: &[(&'static str, &str)], i: i32) {
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", s.server.grpc_addr)).unwrap();
    if let Some(a) = authority {
        endpoint = endpoint.origin(format!("http://{a}").parse().unwrap());
    }
    let mut client = GrpcInferenceServiceClient::new(endpoint.connect().await.unwrap());
    let (a, b, want) = row(i);
    let tensor = |name: &str, data: Vec<i32>| proto::model_infer_request::InferInputTensor {
        name: name.into(),
        datatype: "INT32".into(),
        shape: vec![1, 16],
        contents: Some(proto::InferTensorContents {
            int_contents: data,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut req = tonic::Request::new(proto::ModelInferRequest {
        model_name: "simple".into(),
        id: id.into(),
        inputs: vec![tensor("INPUT0", a), tensor("INPUT1", b)],
        ..Default::default()
    });
    for (k, v) in metadata {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    let resp = client.model_infer(req).await.unwrap().into_inner();
    let i = resp.outputs.iter().position(|o| o.name == "OUTPUT0").unwrap();
    let got: Vec<i32> = resp.raw_output_contents[i]
        .chunks(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(got, want, "{id} is answered normally");
}

fn triton_counts(s: &TestServer) -> (u64, u64, HashMap<String, String>) {
    let stats = s.server.service.model_statistics("simple", Some("2")).unwrap();
    let st = &stats[0];
    let inf = st.inference_stats.as_ref().unwrap();
    let (ok, fail) = (inf.success.unwrap().count, inf.fail.unwrap().count);
    (ok, fail, st.properties.clone().into_iter().collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_requests_are_answered_and_kept_apart() {
    let repo = temp_repo(&["simple"]);
    common::add_parameters(repo.path(), "simple", &[("prediction_log.sample_rate", "1.0")]);
    let log_dir = tempfile::tempdir().unwrap();
    let dir = log_dir.path().to_path_buf();
    let s = TestServer::start(repo.path(), |c| {
        c.prediction_log_dir = Some(dir);
        c.shadow_header = HEADER.into();
    })
    .await;
    let handle = s.server.service.registry().resolve("simple", None).unwrap();
    assert_eq!(handle.version, 2);
    let before = scrape(&s).await;
    let (ok_before, fail_before, _) = triton_counts(&s);
    let health_before = handle.health.snapshot().requests;

    // Production: the client library, a plain Host, a header saying "false".
    let opts = InferOptions {
        id: Some("prod-client".into()),
        ..InferOptions::default()
    };
    let (a, b, want) = row(0);
    let r = s.http.infer("simple", &simple_inputs(&a, &b), &opts).await.unwrap();
    assert_eq!(r.output("OUTPUT0").unwrap().data, Data::I32(want));
    http_infer(&s, "prod-host", &[("host", "simple:8000")], 1).await;
    http_infer(&s, "prod-false", &[(HEADER, "false")], 2).await;
    grpc_infer(&s, "prod-grpc", Some("simple:8001"), &[("x-mirrored", "0")], 3).await;
    // Shadow: Host / :authority ending in -shadow, or the header.
    http_infer(&s, "shadow-host", &[("host", "Simple-Shadow:8000")], 4).await;
    http_infer(&s, "shadow-header", &[("x-mirrored", "1")], 5).await;
    grpc_infer(&s, "shadow-authority", Some("simple-shadow:8001"), &[], 6).await;
    grpc_infer(&s, "shadow-metadata", None, &[("x-mirrored", "true")], 7).await;
    // The default header name is not this server's.
    http_infer(&s, "prod-other-header", &[("x-shadow-request", "1")], 8).await;
    let (production, shadow) = (5.0, 4.0);

    let after = scrape(&s).await;
    let delta = |labels: &[(&str, &str)]| {
        let name = "switchyard_inference_requests_total";
        count(&after, name, labels) - count(&before, name, labels)
    };
    let v2 = [("model", "simple"), ("version", "2"), ("outcome", "success")];
    let with = |t: &'static str, p: Option<&'static str>| {
        let mut l = v2.to_vec();
        l.push(("traffic", t));
        if let Some(p) = p {
            l.push(("protocol", p));
        }
        l
    };
    assert_eq!(delta(&with("production", None)), production);
    assert_eq!(delta(&with("shadow", None)), shadow);
    assert_eq!(delta(&with("shadow", Some("http"))), 2.0);
    assert_eq!(delta(&with("shadow", Some("grpc"))), 2.0);
    let hist = "switchyard_request_duration_seconds_count";
    let shadow_hist = [("model", "simple"), ("version", "2"), ("traffic", "shadow")];
    assert_eq!(
        count(&after, hist, &shadow_hist) - count(&before, hist, &shadow_hist),
        shadow
    );

    // Triton's statistics count production only; the shadow has its own counters.
    let (ok, fail, properties) = triton_counts(&s);
    assert_eq!((ok - ok_before, fail - fail_before), (production as u64, 0));
    assert_eq!(properties["shadow_success_count"], "4", "{properties:?}");
    assert_eq!(properties["shadow_fail_count"], "0");
    // The rollback window saw production only.
    assert_eq!(handle.health.snapshot().requests - health_before, production as u64);

    // Prediction-log records say which traffic they were.
    let service = s.server.service.clone();
    let flushed = tokio::task::spawn_blocking(move || service.prediction_log().flush(WAIT))
        .await
        .unwrap();
    assert!(flushed);
    let text = std::fs::read_to_string(log_dir.path().join("predictions.jsonl")).unwrap();
    // Shadow records carry `"traffic": "shadow"`; production records have no such field.
    let traffic: HashMap<String, Option<Value>> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|r| (r["id"].as_str().unwrap().to_string(), r.get("traffic").cloned()))
        .collect();
    assert_eq!(traffic.len(), 9, "{text}");
    for (id, t) in &traffic {
        let want = id.starts_with("shadow-").then(|| json!("shadow"));
        assert_eq!(t, &want, "{id}");
    }
    s.stop().await;
}
