//! Observability end to end: the prediction log (JSON Lines file and
//! CloudEvents sink), drift detection and W3C trace context, on a real server
//! driven over HTTP and gRPC.
//!
//! The metrics recorder is process-wide (the first server of this binary
//! installs it and every server shares it), so metric assertions are deltas or
//! use series only one test touches.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{TestServer, WAIT, simple_inputs, temp_repo};
use prometheus_parse::{Scrape, Value as PromValue};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use switchyard::drift::Profile;
use switchyard::tensor::{DataType, Tensor as ServerTensor};
use switchyard_client::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use switchyard_client::{ClientError, Data, InferOptions, Tensor, proto};

/// The W3C specification's example.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn opts_with_id(id: &str) -> InferOptions {
    InferOptions {
        id: Some(id.to_string()),
        ..InferOptions::default()
    }
}

/// Row `i` of `simple` test data: `a` and `b` with distinct values per row.
fn simple_row(i: i32) -> (Vec<i32>, Vec<i32>) {
    let a: Vec<i32> = (0..16).map(|k| k * 3 + i).collect();
    let b: Vec<i32> = (0..16).map(|k| 100 * i - k).collect();
    (a, b)
}

fn sums(a: &[i32], b: &[i32]) -> Vec<i32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

fn diffs(a: &[i32], b: &[i32]) -> Vec<i32> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

fn json_i32s(v: &Value) -> Vec<i32> {
    v.as_array()
        .unwrap_or_else(|| panic!("an array: {v}"))
        .iter()
        .map(|x| x.as_i64().unwrap() as i32)
        .collect()
}

/// The tensor called `name` in a JSON tensor list.
fn tensor<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("tensor {name} in {list}"))
}

/// A V2 JSON body of a one-row `simple` request.
fn simple_json(id: &str, a: &[i32], b: &[i32]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id,
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": a},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": b},
        ]
    }))
    .unwrap()
}

async fn flush_prediction_log(s: &TestServer) {
    let service = s.server.service.clone();
    let flushed = tokio::task::spawn_blocking(move || service.prediction_log().flush(WAIT))
        .await
        .unwrap();
    assert!(flushed, "the prediction log flushed in time");
}

async fn scrape(s: &TestServer) -> Scrape {
    let url = format!("http://{}/metrics", s.server.metrics_addr);
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text")
}

fn number(v: &PromValue) -> f64 {
    match v {
        PromValue::Counter(x) | PromValue::Gauge(x) | PromValue::Untyped(x) => *x,
        other => panic!("unexpected metric value {other:?}"),
    }
}

/// Values of every sample of `name` carrying `labels`.
fn samples(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| number(&s.value))
        .collect()
}

fn sum(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(scrape, name, labels).iter().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prediction_log_records_http_and_grpc_including_failures() {
    let repo = temp_repo(&["simple"]);
    common::add_parameters(
        repo.path(),
        "simple",
        &[
            ("prediction_log.sample_rate", "1.0"),
            ("prediction_log.hash_inputs", "INPUT1"),
        ],
    );
    let log_dir = tempfile::tempdir().unwrap();
    let dir = log_dir.path().to_path_buf();
    let s = TestServer::start(repo.path(), |c| c.prediction_log_dir = Some(dir)).await;

    // (id, a, b) of the requests that succeed.
    let mut sent: HashMap<String, (Vec<i32>, Vec<i32>)> = HashMap::new();
    let n = 5;
    for i in 0..n {
        let (a, b) = simple_row(i);
        let id = format!("http-{i}");
        let r = s
            .http
            .infer("simple", &simple_inputs(&a, &b), &opts_with_id(&id))
            .await
            .unwrap();
        assert_eq!(r.output("OUTPUT0").unwrap().data, Data::I32(sums(&a, &b)));
        sent.insert(id, (a, b));
    }
    for i in 0..n {
        let (a, b) = simple_row(100 + i);
        let id = format!("grpc-{i}");
        let r = s
            .grpc
            .infer("simple", &simple_inputs(&a, &b), &opts_with_id(&id))
            .await
            .unwrap();
        assert_eq!(r.output("OUTPUT0").unwrap().data, Data::I32(sums(&a, &b)));
        sent.insert(id, (a, b));
    }
    // Routed failures: INPUT0 has 8 elements per row where the model wants 16.
    let bad = |i: i32| {
        let (a, b) = simple_row(200 + i);
        vec![
            Tensor::new("INPUT0", vec![1, 8], Data::I32(a[..8].to_vec())),
            Tensor::new("INPUT1", vec![1, 16], Data::I32(b)),
        ]
    };
    for i in 0..2 {
        match s
            .http
            .infer("simple", &bad(i), &opts_with_id(&format!("bad-http-{i}")))
            .await
        {
            Err(ClientError::Http { status: 400, .. }) => {}
            other => panic!("expected HTTP 400, got {other:?}"),
        }
    }
    match s.grpc.infer("simple", &bad(2), &opts_with_id("bad-grpc-0")).await {
        Err(ClientError::Grpc {
            code: tonic::Code::InvalidArgument,
            ..
        }) => {}
        other => panic!("expected gRPC InvalidArgument, got {other:?}"),
    }
    // A traced request.
    let (a, b) = simple_row(300);
    let (status, headers, _) = s
        .http
        .post_raw(
            "/v2/models/simple/infer",
            &[("content-type", "application/json"), ("traceparent", TRACEPARENT)],
            simple_json("traced", &a, &b),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(headers.contains_key("traceparent"));
    sent.insert("traced".to_string(), (a, b));

    flush_prediction_log(&s).await;
    let text = std::fs::read_to_string(log_dir.path().join("predictions.jsonl")).unwrap();
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(records.len(), 14, "{text}");
    let by_id: HashMap<&str, &Value> = records.iter().map(|r| (r["id"].as_str().unwrap(), r)).collect();
    assert_eq!(by_id.len(), records.len(), "ids are unique and round-trip");

    let count = |key: &str, value: &str| records.iter().filter(|r| r[key] == value).count();
    assert_eq!(count("protocol", "http"), 8);
    assert_eq!(count("protocol", "grpc"), 6);
    assert_eq!(count("outcome", "success"), 11);
    assert_eq!(count("outcome", "invalid_argument"), 3);

    for r in &records {
        let id = r["id"].as_str().unwrap();
        assert_eq!(r["model"], "simple", "{r}");
        assert_eq!(r["version"], "2", "{r}");
        assert!(r["label"].is_null(), "{r}");
        assert!(r["latency_us"].as_u64().unwrap() > 0, "{r}");
        let time = r["time"].as_str().unwrap();
        assert!(time.len() == 27 && time.ends_with('Z'), "{time}");
        let expected_protocol = if id.starts_with("grpc") || id.starts_with("bad-grpc") {
            "grpc"
        } else {
            "http"
        };
        assert_eq!(r["protocol"], expected_protocol, "{r}");
        if id == "traced" {
            assert_eq!(r["trace_id"], TRACE_ID, "{r}");
        } else {
            assert!(r.get("trace_id").is_none(), "{r}");
        }

        // INPUT1 is hashed: the SHA-256 of its little-endian bytes, no data.
        let input1 = tensor(&r["inputs"], "INPUT1");
        assert!(input1.get("data").is_none(), "{r}");
        let hash = input1["sha256"].as_str().unwrap();
        assert!(
            hash.len() == 64 && hash.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
            "{hash}"
        );
        assert_eq!(input1["shape"], json!([1, 16]));

        if id.starts_with("bad-") {
            assert_eq!(r["outcome"], "invalid_argument", "{r}");
            assert!(!r["error"].as_str().unwrap().is_empty(), "{r}");
            assert_eq!(r["outputs"], json!([]), "{r}");
            assert_eq!(tensor(&r["inputs"], "INPUT0")["shape"], json!([1, 8]));
            continue;
        }
        assert_eq!(r["outcome"], "success", "{r}");
        assert!(r.get("error").is_none(), "{r}");
        let (a, b) = &sent[id];
        let le: Vec<u8> = b.iter().flat_map(|x| x.to_le_bytes()).collect();
        let want: String = Sha256::digest(&le).iter().map(|x| format!("{x:02x}")).collect();
        assert_eq!(hash, want, "{r}");
        let input0 = tensor(&r["inputs"], "INPUT0");
        assert_eq!(input0["datatype"], "INT32");
        assert_eq!(json_i32s(&input0["data"]), *a, "{r}");
        assert_eq!(json_i32s(&tensor(&r["outputs"], "OUTPUT0")["data"]), sums(a, b), "{r}");
        assert_eq!(json_i32s(&tensor(&r["outputs"], "OUTPUT1")["data"]), diffs(a, b), "{r}");
    }
    s.stop().await;
}

/// One received event: lowercase header names to values, and the body.
type Event = (HashMap<String, String>, Value);

/// An HTTP receiver on 127.0.0.1 that forwards every POSTed event.
async fn event_receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let headers = headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let _ = tx.send((headers, body));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_sink_receives_request_and_response_events() {
    let (url, mut events) = event_receiver().await;
    let repo = temp_repo(&["simple"]);
    common::add_parameters(repo.path(), "simple", &[("prediction_log.sample_rate", "1")]);
    let s = TestServer::start(repo.path(), |c| c.prediction_log_url = Some(url)).await;

    let mut sent = HashMap::new();
    for i in 0..3 {
        let (a, b) = simple_row(i);
        let id = format!("ce-{i}");
        let client_opts = opts_with_id(&id);
        if i == 1 {
            s.grpc
                .infer("simple", &simple_inputs(&a, &b), &client_opts)
                .await
                .unwrap();
        } else {
            s.http
                .infer("simple", &simple_inputs(&a, &b), &client_opts)
                .await
                .unwrap();
        }
        sent.insert(id, (a, b));
    }
    let bad = vec![
        Tensor::new("INPUT0", vec![1, 8], Data::I32(vec![1; 8])),
        Tensor::new("INPUT1", vec![1, 16], Data::I32(vec![1; 16])),
    ];
    assert!(s.http.infer("simple", &bad, &opts_with_id("ce-bad")).await.is_err());
    let (a, b) = simple_row(7);
    let (status, _, _) = s
        .http
        .post_raw(
            "/v2/models/simple/infer",
            &[("content-type", "application/json"), ("traceparent", TRACEPARENT)],
            simple_json("ce-traced", &a, &b),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    sent.insert("ce-traced".to_string(), (a, b));

    // Two events per record, request first.
    let records = sent.len() + 1;
    let mut by_id: HashMap<String, Vec<Event>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    for _ in 0..2 * records {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("every event arrives in time")
            .expect("the receiver runs");
        let id = event.0.get("ce-id").cloned().expect("Ce-Id");
        by_id.entry(id).or_default().push(event);
    }
    assert_eq!(by_id.len(), records, "{:?}", by_id.keys());
    for (id, list) in &by_id {
        assert_eq!(list.len(), 2, "{id}: {list:?}");
        let (req_h, req_body) = &list[0];
        let (resp_h, resp_body) = &list[1];
        assert_eq!(req_h["ce-type"], "org.kubeflow.serving.inference.request", "{id}");
        assert_eq!(resp_h["ce-type"], "org.kubeflow.serving.inference.response", "{id}");
        for h in [req_h, resp_h] {
            assert_eq!(h["ce-specversion"], "1.0");
            assert_eq!(h["ce-inferenceservicename"], "simple");
            assert_eq!(h["ce-modelversion"], "2");
            assert_eq!(h["content-type"], "application/json");
            assert!(h.contains_key("ce-source") && h.contains_key("ce-time"), "{h:?}");
            assert_eq!(
                h.get("ce-traceid").map(String::as_str),
                (id == "ce-traced").then_some(TRACE_ID)
            );
        }
        assert_eq!(req_body["id"], id.as_str());
        if id == "ce-bad" {
            assert_eq!(req_h["ce-outcome"], "invalid_argument");
            assert_eq!(resp_h["ce-outcome"], "invalid_argument");
            assert!(!resp_body["error"].as_str().unwrap().is_empty(), "{resp_body}");
            continue;
        }
        let (a, b) = &sent[id];
        assert_eq!(resp_h["ce-outcome"], "success");
        assert_eq!(json_i32s(&tensor(&req_body["inputs"], "INPUT0")["data"]), *a);
        assert_eq!(json_i32s(&tensor(&req_body["inputs"], "INPUT1")["data"]), *b);
        assert_eq!(resp_body["model_name"], "simple");
        assert_eq!(resp_body["model_version"], "2");
        assert_eq!(resp_body["id"], id.as_str());
        assert_eq!(json_i32s(&tensor(&resp_body["outputs"], "OUTPUT0")["data"]), sums(a, b));
        assert_eq!(
            json_i32s(&tensor(&resp_body["outputs"], "OUTPUT1")["data"]),
            diffs(a, b)
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_sink_never_slows_requests() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let repo = temp_repo(&["simple"]);
    common::add_parameters(repo.path(), "simple", &[("prediction_log.sample_rate", "1.0")]);
    let s = TestServer::start(repo.path(), |c| {
        c.prediction_log_url = Some(url);
        c.prediction_log_queue = 4;
    })
    .await;
    let before = scrape(&s).await;

    let requests: u32 = 200;
    let started = Instant::now();
    let (a, b) = simple_row(1);
    let inputs = simple_inputs(&a, &b);
    let opts = InferOptions::default();
    for i in 0..requests {
        let r = if i % 2 == 0 {
            s.http.infer("simple", &inputs, &opts).await
        } else {
            s.grpc.infer("simple", &inputs, &opts).await
        };
        assert_eq!(r.unwrap().output("OUTPUT0").unwrap().data, Data::I32(sums(&a, &b)));
    }
    let elapsed = started.elapsed();
    // One stalled delivery alone takes the sink's 2 s timeout (times 4 attempts):
    // requests waiting on the sink would take minutes.
    assert!(elapsed < Duration::from_secs(20), "200 requests took {elapsed:?}");

    let after = scrape(&s).await;
    let dropped = |sc: &Scrape| {
        sum(
            sc,
            "switchyard_prediction_log_dropped_total",
            &[("reason", "queue_full")],
        )
    };
    let delta = dropped(&after) - dropped(&before);
    // At most the queue (4) and the record in delivery got in.
    assert!(
        delta >= f64::from(requests - 5),
        "dropped rose by {delta} (before {}, after {})",
        dropped(&before),
        dropped(&after)
    );
    assert!(s.server.service.prediction_log().dropped() >= u64::from(requests - 5));
    s.stop().await;
    holder.abort();
}

/// Deterministic N(mean, 1) values: xorshift64* and Box-Muller.
struct Normal(u64);

impl Normal {
    fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        ((x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn rows(&mut self, rows: usize, mean: f64) -> Vec<f32> {
        (0..rows * 16)
            .map(|_| {
                let (u, v) = (self.unit(), self.unit());
                let z = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
                (mean + z) as f32
            })
            .collect()
    }
}

async fn drift_report(s: &TestServer) -> Value {
    let (status, body) = s.http.get_raw("/v2/models/classifier/versions/1/drift").await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// Polls the drift report until `rows` input rows were analysed (there is no
/// readiness signal for the background analysis).
async fn drift_report_after(s: &TestServer, rows: u64) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = drift_report(s).await;
        if r["samples_seen"].as_u64().unwrap() >= rows {
            return r;
        }
        assert!(Instant::now() < deadline, "drift analysis did not catch up: {r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `rows` rows of N(mean, 1) features in batches of 25.
async fn classify(s: &TestServer, rng: &mut Normal, rows: usize, mean: f64) {
    let opts = InferOptions::default();
    for _ in 0..rows / 25 {
        let t = Tensor::new("features", vec![25, 16], Data::F32(rng.rows(25, mean)));
        let r = s.http.infer("classifier", &[t], &opts).await.unwrap();
        assert_eq!(r.output("probabilities").unwrap().shape, vec![25, 4]);
    }
}

fn max_feature_psi(report: &Value) -> f64 {
    let features = &report["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "features")
        .unwrap()["features"];
    features
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["psi"].as_f64().expect("a PSI per feature"))
        .fold(0.0, f64::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_gauge_and_alert_on_shifted_inputs() {
    let repo = temp_repo(&["classifier"]);
    let window = 500;
    common::add_parameters(
        repo.path(),
        "classifier",
        &[
            ("drift.window", "500"),
            ("drift.min_samples", "100"),
            ("drift.psi_threshold", "0.2"),
        ],
    );
    // The reference: 4000 rows of N(0, 1) features (inputs only).
    let mut rng = Normal(0x9E37_79B9_7F4A_7C15);
    let reference_rows = 4000;
    let values: Vec<f64> = rng.rows(reference_rows, 0.0).into_iter().map(f64::from).collect();
    let features =
        ServerTensor::from_f64("features", DataType::Fp32, vec![reference_rows as i64, 16], &values).unwrap();
    let profile = Profile::from_samples(&[(vec![features], vec![])], 32);
    profile
        .save(repo.path().join("classifier/1/validation/profile.json"))
        .unwrap();
    let s = TestServer::start(repo.path(), |_| {}).await;

    let r = drift_report(&s).await;
    assert_eq!(r["has_reference"], true, "{r}");
    assert_eq!(r["alert"], false, "{r}");

    // In distribution: one full window.
    classify(&s, &mut rng, window, 0.0).await;
    let r = drift_report_after(&s, window as u64).await;
    assert!(r["window"]["completed"].as_u64().unwrap() >= 1, "{r}");
    let psi = max_feature_psi(&r);
    assert!(psi < 0.1, "in-distribution max PSI {psi}: {r}");
    assert_eq!(r["alert"], false, "{r}");
    let m = scrape(&s).await;
    assert_eq!(
        samples(
            &m,
            "switchyard_drift_alert",
            &[("model", "classifier"), ("version", "1")]
        ),
        vec![0.0]
    );

    // Shifted by +3: the next full window drifts.
    classify(&s, &mut rng, window, 3.0).await;
    let r = drift_report_after(&s, 2 * window as u64).await;
    assert!(r["window"]["completed"].as_u64().unwrap() >= 2, "{r}");
    let psi = max_feature_psi(&r);
    assert!(psi > 1.0, "shifted max PSI {psi}: {r}");
    assert!(r["max_psi"].as_f64().unwrap() >= psi, "{r}");
    assert_eq!(r["alert"], true, "{r}");

    let m = scrape(&s).await;
    assert_eq!(
        samples(
            &m,
            "switchyard_drift_alert",
            &[("model", "classifier"), ("version", "1")]
        ),
        vec![1.0]
    );
    let psis = samples(
        &m,
        "switchyard_drift_psi",
        &[("model", "classifier"), ("version", "1"), ("tensor", "features")],
    );
    assert_eq!(psis.len(), 16, "one PSI gauge per feature");
    assert!(psis.iter().all(|p| *p > 0.2), "{psis:?}");
    s.stop().await;
}

fn trace_parts(header: &str) -> (String, String) {
    let parts: Vec<&str> = header.split('-').collect();
    assert_eq!(parts.len(), 4, "{header}");
    assert_eq!(parts[0], "00", "{header}");
    assert_eq!(parts[1].len(), 32, "{header}");
    assert_eq!(parts[2].len(), 16, "{header}");
    assert_eq!(parts[3], "01", "flags are kept: {header}");
    (parts[1].to_string(), parts[2].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_round_trips_on_http_and_grpc() {
    let repo = temp_repo(&["simple"]);
    let s = TestServer::start(repo.path(), |_| {}).await;
    let (a, b) = simple_row(3);
    let path = "/v2/models/simple/infer";

    // HTTP: a child of the caller's span comes back.
    let mut spans = Vec::new();
    for _ in 0..2 {
        let (status, headers, body) = s
            .http
            .post_raw(
                path,
                &[("content-type", "application/json"), ("traceparent", TRACEPARENT)],
                simple_json("t", &a, &b),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let back = headers
            .get("traceparent")
            .expect("a traceparent back")
            .to_str()
            .unwrap();
        let (trace, span) = trace_parts(back);
        assert_eq!(trace, TRACE_ID);
        assert_ne!(span, PARENT_SPAN);
        assert_ne!(span, "0000000000000000");
        spans.push(span);
    }
    assert_ne!(spans[0], spans[1], "every request gets its own span");

    // Malformed or absent: ignored, no header back.
    for bad in [
        Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
        Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        Some("garbage"),
        None,
    ] {
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(bad.map(|v| ("traceparent", v)));
        let (status, back, _) = s.http.post_raw(path, &headers, simple_json("u", &a, &b)).await.unwrap();
        assert_eq!(status, 200);
        assert!(back.get("traceparent").is_none(), "{bad:?}: {back:?}");
    }

    // gRPC: the same through metadata.
    let mut client = GrpcInferenceServiceClient::connect(format!("http://{}", s.server.grpc_addr))
        .await
        .unwrap();
    let request = || {
        let tensor = |name: &str| proto::model_infer_request::InferInputTensor {
            name: name.into(),
            datatype: "INT32".into(),
            shape: vec![1, 16],
            ..Default::default()
        };
        let raw = |v: &[i32]| bytes::Bytes::from(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
        proto::ModelInferRequest {
            model_name: "simple".into(),
            inputs: vec![tensor("INPUT0"), tensor("INPUT1")],
            raw_input_contents: vec![raw(&a), raw(&b)],
            ..Default::default()
        }
    };
    let mut req = tonic::Request::new(request());
    req.metadata_mut().insert("traceparent", TRACEPARENT.parse().unwrap());
    let resp = client.model_infer(req).await.unwrap();
    let back = resp
        .metadata()
        .get("traceparent")
        .expect("traceparent metadata back")
        .to_str()
        .unwrap();
    let (trace, span) = trace_parts(back);
    assert_eq!(trace, TRACE_ID);
    assert_ne!(span, PARENT_SPAN);
    assert!(!spans.contains(&span));
    let names: Vec<&str> = resp.get_ref().outputs.iter().map(|o| o.name.as_str()).collect();
    let i0 = names.iter().position(|n| *n == "OUTPUT0").expect("OUTPUT0");
    let got: Vec<i32> = resp.get_ref().raw_output_contents[i0]
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(got, sums(&a, &b), "{names:?}");

    let mut req = tonic::Request::new(request());
    req.metadata_mut().insert("traceparent", "garbage".parse().unwrap());
    let resp = client.model_infer(req).await.unwrap();
    assert!(resp.metadata().get("traceparent").is_none());
    let resp = client.model_infer(tonic::Request::new(request())).await.unwrap();
    assert!(resp.metadata().get("traceparent").is_none());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_exports_one_span_per_request_in_the_callers_trace() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let repo = temp_repo(&["simple"]);
    let s = TestServer::start(repo.path(), move |c| c.otlp_endpoint = Some(endpoint)).await;
    let (a, b) = simple_row(4);
    // With the caller's traceparent (HTTP) ...
    let (status, headers, _) = s
        .http
        .post_raw(
            "/v2/models/simple/infer",
            &[("content-type", "application/json"), ("traceparent", TRACEPARENT)],
            simple_json("otlp-1", &a, &b),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (_, server_span) = trace_parts(headers.get("traceparent").unwrap().to_str().unwrap());
    // ... and without one (gRPC): a new trace.
    s.grpc
        .infer("simple", &simple_inputs(&a, &b), &opts_with_id("otlp-2"))
        .await
        .unwrap();

    let mut spans: Vec<Value> = Vec::new();
    let deadline = Instant::now() + WAIT;
    while spans.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let body = tokio::time::timeout(left, rx.recv())
            .await
            .expect("spans exported in time")
            .unwrap();
        assert_eq!(
            body["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            "switchyard"
        );
        spans.extend(
            body["resourceSpans"][0]["scopeSpans"][0]["spans"]
                .as_array()
                .unwrap()
                .iter()
                .cloned(),
        );
    }
    let attr = |span: &Value, key: &str| {
        span["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == key)
            .map(|a| a["value"]["stringValue"].as_str().unwrap().to_string())
    };
    let traced = spans
        .iter()
        .find(|s| attr(s, "request.id").as_deref() == Some("otlp-1"))
        .unwrap();
    assert_eq!(traced["traceId"], TRACE_ID);
    assert_eq!(traced["parentSpanId"], PARENT_SPAN);
    assert_eq!(
        traced["spanId"],
        server_span.as_str(),
        "the exported span is the one returned to the caller"
    );
    assert_eq!(traced["kind"], 2);
    assert_eq!(attr(traced, "model").as_deref(), Some("simple"));
    assert!(attr(traced, "batch_rows").is_some());
    assert_eq!(attr(traced, "switchyard.traffic").as_deref(), Some("production"));
    let start: u128 = traced["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
    let end: u128 = traced["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
    assert!(start > 0 && end > start);
    let root = spans
        .iter()
        .find(|s| attr(s, "request.id").as_deref() == Some("otlp-2"))
        .unwrap();
    assert_ne!(root["traceId"], TRACE_ID);
    assert!(root.get("parentSpanId").is_none());
    assert_eq!(attr(root, "protocol").as_deref(), Some("grpc"));
    s.stop().await;
}
