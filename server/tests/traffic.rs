//! Traffic policies: `traffic.yaml` read at start and on every poll, an
//! invalid file refused while the previous policy keeps serving, the canary
//! split (sticky by header or parameter), an explicit version winning, and
//! the routed version in the response, its header / metadata, metadata
//! properties and the routing counter — on both protocols.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{TestServer, WAIT, simple_inputs, temp_repo};
use switchyard::config::ControlMode;
use switchyard_client::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use switchyard_client::{InferOptions, proto};

fn write_policy(repo: &Path, text: &str) {
    std::fs::write(repo.join("simple/traffic.yaml"), text).unwrap();
}

fn with_param(key: &str, value: &str) -> InferOptions {
    let mut o = InferOptions::default();
    o.parameters.insert(key.into(), value.into());
    o
}

fn version_opts(v: &str) -> InferOptions {
    InferOptions {
        model_version: Some(v.into()),
        ..InferOptions::default()
    }
}

async fn http_version(s: &TestServer, opts: &InferOptions) -> String {
    let r = s
        .http
        .infer("simple", &simple_inputs(&[1; 16], &[2; 16]), opts)
        .await
        .unwrap();
    r.model_version
}

async fn grpc_version(s: &TestServer, opts: &InferOptions) -> String {
    let r = s
        .grpc
        .infer("simple", &simple_inputs(&[1; 16], &[2; 16]), opts)
        .await
        .unwrap();
    r.model_version
}

/// An inference through plain HTTP with `headers`: (version, x-switchyard-routed-to).
async fn raw_http(s: &TestServer, headers: &[(&str, &str)]) -> (String, String) {
    let body = serde_json::json!({"inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": vec![1; 16]},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": vec![2; 16]},
    ]});
    let mut req = reqwest::Client::new()
        .post(format!("http://{}/v2/models/simple/infer", s.server.http_addr))
        .json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    assert!(resp.status().is_success());
    let routed = resp.headers()["x-switchyard-routed-to"].to_str().unwrap().to_string();
    let v: serde_json::Value = resp.json().await.unwrap();
    (v["model_version"].as_str().unwrap().to_string(), routed)
}

/// An inference through plain gRPC with `metadata`: (version, x-switchyard-routed-to).
async fn raw_grpc(s: &TestServer, metadata: &[(&'static str, &str)]) -> (String, String) {
    let mut client = GrpcInferenceServiceClient::connect(format!("http://{}", s.server.grpc_addr))
        .await
        .unwrap();
    let tensor = |name: &str| proto::model_infer_request::InferInputTensor {
        name: name.into(),
        datatype: "INT32".into(),
        shape: vec![1, 16],
        ..Default::default()
    };
    let raw = |x: i32| bytes::Bytes::from((0..16).flat_map(|_| x.to_le_bytes()).collect::<Vec<u8>>());
    let mut req = tonic::Request::new(proto::ModelInferRequest {
        model_name: "simple".into(),
        inputs: vec![tensor("INPUT0"), tensor("INPUT1")],
        raw_input_contents: vec![raw(1), raw(2)],
        ..Default::default()
    });
    for (k, v) in metadata {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    let resp = client.model_infer(req).await.unwrap();
    let routed = resp
        .metadata()
        .get("x-switchyard-routed-to")
        .expect("routed-to metadata")
        .to_str()
        .unwrap()
        .to_string();
    (resp.into_inner().model_version, routed)
}

async fn metadata_text(s: &TestServer) -> String {
    reqwest::get(format!("http://{}/v2/models/simple", s.server.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_file_routes_requests_and_an_explicit_version_wins() {
    let repo = temp_repo(&["simple"]);
    write_policy(repo.path(), "default: 1\ncanary:\n  - target: 2\n    weight: 100\n");
    let s = TestServer::start(repo.path(), |_| {}).await;
    for _ in 0..5 {
        assert_eq!(http_version(&s, &InferOptions::default()).await, "2");
        assert_eq!(grpc_version(&s, &InferOptions::default()).await, "2");
        assert_eq!(http_version(&s, &version_opts("1")).await, "1");
        assert_eq!(grpc_version(&s, &version_opts("1")).await, "1");
    }
    assert_eq!(raw_http(&s, &[]).await, ("2".into(), "2".into()));
    assert_eq!(raw_grpc(&s, &[]).await, ("2".into(), "2".into()));
    let meta = metadata_text(&s).await;
    assert!(
        meta.contains("traffic_policy") && meta.contains("\"traffic_source\""),
        "{meta}"
    );
    assert!(meta.contains("file"), "{meta}");

    let metrics = reqwest::get(format!("http://{}/metrics", s.server.metrics_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = |reason: &str, target: &str| {
        metrics.lines().any(|l| {
            l.starts_with("switchyard_routing_decisions_total{")
                && l.contains("model=\"simple\"")
                && l.contains(&format!("reason=\"{reason}\""))
                && l.contains(&format!("target=\"{target}\""))
        })
    };
    assert!(line("canary", "2") && line("explicit", "1"), "{metrics}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_key_always_reaches_the_same_version_on_both_protocols() {
    let repo = temp_repo(&["simple"]);
    write_policy(
        repo.path(),
        "default: 1\ncanary: [{ target: 2, weight: 50 }]\nsticky_key: { parameter: user }\n",
    );
    let s = TestServer::start(repo.path(), |_| {}).await;
    let mut seen = BTreeMap::new();
    for i in 0..24 {
        let key = format!("user-{i}");
        let first = http_version(&s, &with_param("user", &key)).await;
        for _ in 0..2 {
            assert_eq!(http_version(&s, &with_param("user", &key)).await, first, "{key}");
            assert_eq!(grpc_version(&s, &with_param("user", &key)).await, first, "{key}");
        }
        *seen.entry(first).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "both versions get keys: {seen:?}");
    s.stop().await;

    // By header (HTTP) and metadata (gRPC): one rule for both.
    write_policy(
        repo.path(),
        "default: 1\ncanary: [{ target: 2, weight: 50 }]\nsticky_key: { header: X-User }\n",
    );
    let s = TestServer::start(repo.path(), |_| {}).await;
    let mut seen = BTreeMap::new();
    for i in 0..24 {
        let key = format!("user-{i}");
        let (v, routed) = raw_http(&s, &[("x-user", &key)]).await;
        assert_eq!(v, routed);
        for _ in 0..2 {
            assert_eq!(raw_http(&s, &[("x-user", &key)]).await.0, v, "{key}");
            assert_eq!(raw_grpc(&s, &[("x-user", &key)]).await.0, v, "{key}");
        }
        *seen.entry(v).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "both versions get keys: {seen:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_picks_up_a_changed_file_and_an_invalid_one_keeps_the_previous_policy() {
    let repo = temp_repo(&["simple"]);
    write_policy(repo.path(), "default: 1\ncanary: [{ target: 2, weight: 0 }]\n");
    let s = TestServer::start(repo.path(), |c| {
        c.model_control_mode = ControlMode::Poll;
        c.repository_poll_secs = 1;
    })
    .await;
    assert_eq!(http_version(&s, &InferOptions::default()).await, "1");
    write_policy(repo.path(), "default: 1\ncanary: [{ target: 2, weight: 100 }]\n");
    let deadline = tokio::time::Instant::now() + WAIT;
    while http_version(&s, &InferOptions::default()).await != "2" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the changed policy was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    write_policy(repo.path(), "default: 1\ncanary: [{ target: 2, weight: 120 }]\n");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let index = s.http.repository_index(false).await.unwrap().to_string();
        if index.contains("canary[0].weight") {
            assert!(index.contains("traffic.yaml"), "{index}");
            assert!(index.contains("previous traffic policy keeps serving"), "{index}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the invalid policy was not reported: {index}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..5 {
        assert_eq!(http_version(&s, &InferOptions::default()).await, "2");
        assert_eq!(grpc_version(&s, &InferOptions::default()).await, "2");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_naming_an_unselected_version_is_refused_at_start() {
    let repo = temp_repo(&["simple"]);
    write_policy(repo.path(), "canary: [{ target: 7, weight: 10 }]\n");
    let s = TestServer::start(repo.path(), |_| {}).await;
    let index = s.http.repository_index(false).await.unwrap().to_string();
    assert!(
        index.contains("canary[0].target") && index.contains("version 7"),
        "{index}"
    );
    // No policy: the default route (the latest version).
    assert_eq!(http_version(&s, &InferOptions::default()).await, "2");
    assert!(!metadata_text(&s).await.contains("traffic_policy"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_needs_the_admin_token_is_audited_and_clears_back_to_the_file() {
    let repo = temp_repo(&["simple"]);
    write_policy(repo.path(), "default: 1\n");
    let tokens = repo.path().join("tokens");
    std::fs::write(&tokens, "ci:ci-token-0123456789abcdef\n").unwrap();
    let audit = repo.path().join("audit.jsonl");
    let (tokens_path, audit_path) = (tokens.clone(), audit.clone());
    let s = TestServer::start(repo.path(), move |c| {
        c.admin_token_file = Some(tokens_path);
        c.admin_http_port = Some(0);
        c.audit_log = Some(audit_path);
    })
    .await;
    let admin_url = format!("http://{}", s.server.admin_addr.expect("admin listener"));
    let policy = serde_json::json!({"default": 1, "canary": [{"target": 2, "weight": 100}]});
    let anonymous = switchyard_client::HttpClient::new(&admin_url).unwrap();
    assert!(anonymous.set_traffic("simple", &policy).await.is_err(), "no token");
    assert!(
        s.http.set_traffic("simple", &policy).await.is_err(),
        "not on the public port"
    );
    assert_eq!(http_version(&s, &InferOptions::default()).await, "1");

    let admin = anonymous.with_admin_token("ci-token-0123456789abcdef");
    let shown = admin.set_traffic("simple", &policy).await.unwrap();
    assert_eq!(shown["source"], "override", "{shown}");
    assert_eq!(shown["file"]["default"], 1, "{shown}");
    assert_eq!(http_version(&s, &InferOptions::default()).await, "2");
    assert_eq!(grpc_version(&s, &InferOptions::default()).await, "2");
    assert!(metadata_text(&s).await.contains("override"));
    // Invalid overrides are refused, naming the field; the override stays.
    let bad = serde_json::json!({"canary": [{"target": 2, "weight": 101}]});
    let e = admin.set_traffic("simple", &bad).await.unwrap_err();
    assert!(e.to_string().contains("canary[0].weight"), "{e}");
    let unloaded = serde_json::json!({"canary": [{"target": 9, "weight": 1}]});
    assert!(admin.set_traffic("simple", &unloaded).await.is_err());
    assert_eq!(s.http.traffic("simple").await.unwrap()["source"], "override");

    let shown = admin.clear_traffic("simple").await.unwrap();
    assert_eq!(shown["source"], "file", "{shown}");
    assert_eq!(http_version(&s, &InferOptions::default()).await, "1");
    assert!(admin.clear_traffic("simple").await.is_err(), "nothing left to clear");

    let text = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let set = lines
        .iter()
        .find(|l| l["action"] == "traffic" && l["reason"].as_str().unwrap().starts_with("traffic override:"))
        .expect("the override is audited");
    assert_eq!(set["actor"], "token:ci");
    assert!(lines.iter().any(|l| l["action"] == "denied"));
    assert!(
        lines
            .iter()
            .any(|l| l["action"] == "traffic" && l["reason"].as_str().unwrap().contains("cleared"))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_and_overrides_survive_a_restart_with_a_state_dir() {
    let repo = temp_repo(&["simple"]);
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_path_buf();
    let with_state = |dir: std::path::PathBuf| {
        move |c: &mut switchyard::Config| {
            c.state_dir = Some(dir);
        }
    };
    let s = TestServer::start(repo.path(), with_state(dir.clone())).await;
    s.http.set_label("simple", "stable", "1").await.unwrap();
    let policy = serde_json::json!({"default": 2, "canary": [{"target": "stable", "weight": 100}]});
    s.http.set_traffic("simple", &policy).await.unwrap();
    assert_eq!(http_version(&s, &InferOptions::default()).await, "1");
    s.stop().await;
    assert!(dir.join("simple.json").is_file());

    let s = TestServer::start(repo.path(), with_state(dir.clone())).await;
    assert_eq!(s.http.labels("simple").await.unwrap()["labels"]["stable"], 1);
    let shown = s.http.traffic("simple").await.unwrap();
    assert_eq!(shown["source"], "override", "{shown}");
    assert_eq!(http_version(&s, &InferOptions::default()).await, "1");
    assert_eq!(grpc_version(&s, &InferOptions::default()).await, "1");
    s.http.clear_traffic("simple").await.unwrap();
    s.stop().await;

    // Without the state directory nothing is kept.
    let s = TestServer::start(repo.path(), |_| {}).await;
    assert!(s.http.labels("simple").await.unwrap()["labels"].get("stable").is_none());
    assert_eq!(s.http.traffic("simple").await.unwrap()["source"], "none");
    s.stop().await;
    // The cleared override stays cleared after a restart.
    let s = TestServer::start(repo.path(), with_state(dir)).await;
    assert_eq!(s.http.traffic("simple").await.unwrap()["source"], "none");
    assert_eq!(s.http.labels("simple").await.unwrap()["labels"]["stable"], 1);
    s.stop().await;
}

#[test]
fn validate_checks_the_traffic_policy() {
    let repo = temp_repo(&["simple"]);
    write_policy(repo.path(), "default: 1\ncanary: [{ target: 2, weight: 10 }]\n");
    let (ok, report) = common::validate(repo.path());
    assert!(ok, "{report}");
    assert!(report.contains("traffic.yaml:"), "{report}");

    write_policy(repo.path(), "default: 1\ncanary: [{ target: 3, weight: 10 }]\n");
    let (ok, report) = common::validate(repo.path());
    assert!(!ok);
    assert!(
        report.contains("traffic.yaml") && report.contains("canary[0].target"),
        "{report}"
    );

    write_policy(repo.path(), "default: 1\nweights: 3\n");
    let (ok, report) = common::validate(repo.path());
    assert!(!ok);
    assert!(
        report.contains("traffic.yaml") && report.contains("weights"),
        "{report}"
    );
}
