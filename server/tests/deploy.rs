//! Deploys: versions swapped under load with no failed request, bad versions
//! refused while the previous ones keep serving, labels, rollback (manual and
//! automatic), admin restrictions, the audit trail and `switchyard validate`.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{TestServer, WAIT, assert_still_serving, simple_inputs, temp_repo};
use switchyard::config::ControlMode;
use switchyard_client::{ClientError, Data, HttpClient, InferOptions};

fn explicit(models: &[&str]) -> impl FnOnce(&mut switchyard::Config) {
    let models: Vec<String> = models.iter().map(|m| m.to_string()).collect();
    move |c| {
        c.model_control_mode = ControlMode::Explicit;
        c.load_models = models;
    }
}

fn only_version(v: i64) -> String {
    format!(r#"{{"max_batch_size": 8, "version_policy": {{"specific": {{"versions": [{v}]}}}}}}"#)
}

/// Executor threads of model `swap` alive in this process (named after model and version).
fn swap_executor_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|t| t.ok())
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .filter(|name| name.starts_with("sy-swap-"))
                .count()
        })
        .unwrap_or(0)
}

fn http_status(e: &ClientError) -> u16 {
    match e {
        ClientError::Http { status, .. } => *status,
        other => panic!("expected an HTTP error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_swaps_under_load_fail_no_request() {
    // `simple` under another name, so that its executor threads can be counted
    // apart from those of the other tests in this process.
    let repo = tempfile::tempdir().unwrap();
    common::copy_dir(&common::models_dir().join("simple"), &repo.path().join("swap"));
    let config = repo.path().join("swap/config.pbtxt");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"simple\"", "\"swap\"");
    std::fs::write(&config, text).unwrap();
    let s = TestServer::start(repo.path(), explicit(&[])).await;
    s.http.load_model("swap", Some(&only_version(1))).await.unwrap();
    let threads_one_version = swap_executor_threads();
    assert!(threads_one_version >= 1);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let served_v2 = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for i in 0..8 {
        let (stop, ok, served_v2) = (stop.clone(), ok.clone(), served_v2.clone());
        let (http, grpc) = (s.http.clone(), s.grpc.clone());
        clients.push(tokio::spawn(async move {
            let a: Vec<i32> = (0..16).map(|x| x + i).collect();
            let b = vec![i; 16];
            let want = Data::I32(a.iter().map(|x| x + i).collect());
            let opts = InferOptions::default();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = if i % 2 == 0 {
                    http.infer("swap", &simple_inputs(&a, &b), &opts).await
                } else {
                    grpc.infer("swap", &simple_inputs(&a, &b), &opts).await
                };
                match r {
                    Ok(r) => {
                        assert_eq!(r.output("OUTPUT0").unwrap().data, want);
                        if r.model_version == "2" {
                            served_v2.fetch_add(1, Ordering::Relaxed);
                        }
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        }));
    }
    let started = Instant::now();
    for cycle in 0..100 {
        let v = if cycle % 2 == 0 { 2 } else { 1 };
        s.http.load_model("swap", Some(&only_version(v))).await.unwrap();
        assert!(started.elapsed() < WAIT * 2, "100 swaps in bounded time");
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.unwrap());
    }
    assert!(failures.is_empty(), "failed requests during swaps: {failures:?}");
    assert!(ok.load(Ordering::Relaxed) > 100, "clients ran during the swaps");
    assert!(served_v2.load(Ordering::Relaxed) > 0, "the swaps took effect");

    // Retired versions free their executors once their last request is done.
    let deadline = Instant::now() + WAIT;
    while swap_executor_threads() > threads_one_version {
        assert!(Instant::now() < deadline, "retired executor threads exited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.stop().await;
}

fn write_case(version_dir: &Path, expected_first: i32) {
    let cases = version_dir.join("validation/cases");
    std::fs::create_dir_all(&cases).unwrap();
    let a: Vec<i32> = (0..16).collect();
    let mut sum: Vec<i32> = a.iter().map(|x| x + 1).collect();
    sum[0] = expected_first;
    let case = serde_json::json!({
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": a},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": vec![1; 16]}
        ],
        "outputs": [{"name": "OUTPUT0", "shape": [1, 16], "data": sum}]
    });
    std::fs::write(cases.join("case.json"), case.to_string()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_versions_are_refused_while_the_previous_ones_serve() {
    let repo = temp_repo(&["simple"]);
    let audit = repo.path().join("audit.jsonl");
    let audit_path = audit.clone();
    let s = TestServer::start(repo.path(), move |c| {
        explicit(&["simple"])(c);
        c.audit_log = Some(audit_path);
    })
    .await;
    let dir = repo.path().join("simple");
    let serving_default = || async { s.http.labels("simple").await.unwrap()["default_version"].clone() };
    assert_eq!(serving_default().await, 2);

    // A corrupt model file as version 3.
    std::fs::create_dir_all(dir.join("3")).unwrap();
    std::fs::write(dir.join("3/model.onnx"), b"\x08\x07garbage").unwrap();
    let err = s.http.load_model("simple", None).await.unwrap_err();
    assert_eq!(http_status(&err), 400);
    assert!(err.to_string().contains("version 3"), "{err}");
    assert_eq!(serving_default().await, 2, "version 2 still serves");
    assert_still_serving(&s).await;
    let index = s.http.repository_index(false).await.unwrap();
    let v3 = index.as_array().unwrap().iter().find(|m| m["version"] == "3").unwrap();
    assert_eq!(v3["state"], "UNAVAILABLE");

    // A version whose outputs fail its golden set.
    std::fs::copy(dir.join("2/model.onnx"), dir.join("3/model.onnx")).unwrap();
    write_case(&dir.join("3"), 999);
    let err = s.grpc.load_model("simple", None).await.unwrap_err();
    assert!(err.to_string().contains("golden case 'case'"), "{err}");
    assert!(err.to_string().contains("OUTPUT0"), "{err}");
    assert_eq!(serving_default().await, 2);
    assert_still_serving(&s).await;

    // Fixed golden set: version 3 is promoted.
    write_case(&dir.join("3"), 1);
    s.http.load_model("simple", None).await.unwrap();
    assert_eq!(serving_default().await, 3);

    // A config that contradicts the model: every version keeps its previous load.
    let bad = r#"{"max_batch_size": 8, "version_policy": {"all": {}},
                  "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [16]},
                            {"name": "INPUT1", "data_type": "TYPE_INT32", "dims": [16]}]}"#;
    let err = s.http.load_model("simple", Some(bad)).await.unwrap_err();
    assert!(err.to_string().contains("INPUT0"), "{err}");
    assert!(err.to_string().contains("serving versions are unchanged"), "{err}");
    assert_eq!(serving_default().await, 3);
    assert_still_serving(&s).await;
    let index = s.http.repository_index(false).await.unwrap();
    for m in index.as_array().unwrap() {
        assert_eq!(m["state"], "READY", "{m}");
    }

    // A model_warmup whose data file is missing.
    let warm = r#"{"max_batch_size": 8, "version_policy": {"all": {}},
                   "model_warmup": [{"name": "w", "batch_size": 2, "count": 1, "inputs": {
                       "INPUT0": {"data_type": "TYPE_INT32", "dims": [16], "input_data_file": "nope.bin"},
                       "INPUT1": {"data_type": "TYPE_INT32", "dims": [16], "zero_data": true}}}]}"#;
    let err = s.http.load_model("simple", Some(warm)).await.unwrap_err();
    assert!(err.to_string().contains("model_warmup 'w'"), "{err}");
    std::fs::create_dir_all(dir.join("warmup")).unwrap();
    std::fs::write(dir.join("warmup/nope.bin"), vec![0u8; 2 * 16 * 4]).unwrap();
    s.http.load_model("simple", Some(warm)).await.unwrap();
    assert_still_serving(&s).await;

    // Statistics and metadata carry the provenance.
    let meta = s.http.model_metadata("simple", None).await.unwrap();
    let digest = meta["properties"]["model_sha256"].as_str().unwrap().to_string();
    assert_eq!(digest.len(), 64);
    assert_eq!(meta["properties"]["config_sha256"].as_str().unwrap().len(), 64);
    let stats = s.grpc.statistics(Some("simple"), Some("3")).await.unwrap();
    assert_eq!(stats.model_stats[0].properties["model_sha256"], digest);
    // Warm-up and golden runs are not counted as traffic.
    let before = stats.model_stats[0].inference_count;
    assert!(before <= 2, "only the requests of assert_still_serving: {before}");

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let has = |action: &str, outcome: &str| {
        lines
            .iter()
            .any(|l| l["action"] == action && l["outcome"] == outcome && l["model"] == "simple")
    };
    assert!(has("load", "ok") && has("load", "failed") && has("validation_failed", "failed"));
    assert!(has("promote", "ok"));
    let promoted = lines
        .iter()
        .find(|l| l["action"] == "promote" && l["version"] == "3")
        .unwrap();
    assert!(
        promoted["actor"].as_str().unwrap().starts_with("peer:127.0.0.1:"),
        "{promoted}"
    );
    assert_eq!(promoted["digest"].as_str().unwrap().len(), 64);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_route_requests_and_rollback_moves_the_default() {
    let repo = temp_repo(&["simple"]);
    let s = TestServer::start(repo.path(), explicit(&["simple"])).await;
    let a: Vec<i32> = (0..16).collect();
    let version_of = |label: Option<&'static str>| {
        let (http, grpc, a) = (s.http.clone(), s.grpc.clone(), a.clone());
        async move {
            let opts = InferOptions {
                model_version: label.map(str::to_string),
                ..Default::default()
            };
            let h = http.infer("simple", &simple_inputs(&a, &a), &opts).await.unwrap();
            let g = grpc.infer("simple", &simple_inputs(&a, &a), &opts).await.unwrap();
            assert_eq!(h.model_version, g.model_version);
            h.model_version
        }
    };
    assert_eq!(version_of(None).await, "2");

    let l = s.http.set_label("simple", "stable", "1").await.unwrap();
    assert_eq!(l["labels"]["stable"], 1);
    s.http.set_label("simple", "canary", "2").await.unwrap();
    assert_eq!(version_of(Some("stable")).await, "1");
    assert_eq!(version_of(Some("canary")).await, "2");
    assert!(s.http.model_ready("simple", Some("stable")).await.unwrap());
    let meta = s.grpc.model_metadata("simple", Some("stable")).await.unwrap();
    assert_eq!(meta.properties["label.stable"], "1");
    assert_eq!(meta.properties["default_version"], "2");

    // Refusals: a version that is not loaded, a bad label name, an unknown label.
    let e = s.http.set_label("simple", "stable", "7").await.unwrap_err();
    assert_eq!(http_status(&e), 409);
    let e = s.http.set_label("simple", "9lives", "1").await.unwrap_err();
    assert_eq!(http_status(&e), 400);
    let e = s
        .http
        .infer(
            "simple",
            &simple_inputs(&a, &a),
            &InferOptions {
                model_version: Some("nightly".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(http_status(&e), 404);

    // Moving a label, then rolling it back.
    s.http.set_label("simple", "stable", "2").await.unwrap();
    assert_eq!(version_of(Some("stable")).await, "2");
    let l = s.http.rollback("simple", Some("stable"), None).await.unwrap();
    assert_eq!(l["labels"]["stable"], 1);

    // Rolling the default back pins it; "latest" follows the newest again.
    let l = s.http.rollback("simple", None, Some("1")).await.unwrap();
    assert_eq!(l["default_version"], 1);
    assert_eq!(l["pinned"], true);
    assert_eq!(version_of(None).await, "1");
    s.http.set_default("simple", "latest").await.unwrap();
    assert_eq!(version_of(None).await, "2");
    let l = s.http.rollback("simple", None, None).await.unwrap();
    assert_eq!(l["default_version"], 1, "back to the previous default");

    // Labels survive a reload; one naming a retired version answers 404.
    s.http.load_model("simple", Some(&only_version(2))).await.unwrap();
    assert_eq!(version_of(None).await, "2", "the pin to a retired version is void");
    let e = s
        .http
        .infer(
            "simple",
            &simple_inputs(&a, &a),
            &InferOptions {
                model_version: Some("stable".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not loaded"), "{e}");
    s.http.delete_label("simple", "stable").await.unwrap();
    let e = s.http.rollback("simple", None, None).await.unwrap_err();
    assert_eq!(http_status(&e), 409, "nothing loaded to roll back to");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_rollback_on_a_latency_breach() {
    let repo = temp_repo(&["simple"]);
    let audit = repo.path().join("audit.jsonl");
    let audit_path = audit.clone();
    let s = TestServer::start(repo.path(), move |c| {
        explicit(&[])(c);
        c.audit_log = Some(audit_path);
        c.auto_rollback_window_secs = 60.0;
        c.auto_rollback_min_requests = 5;
        // Any real request breaches a 1 µs p99 budget.
        c.auto_rollback_max_p99_ms = Some(0.001);
    })
    .await;
    s.http.load_model("simple", Some(&only_version(1))).await.unwrap();
    let both = r#"{"max_batch_size": 8, "version_policy": {"all": {}}}"#;
    s.http.load_model("simple", Some(both)).await.unwrap();
    assert_eq!(s.http.labels("simple").await.unwrap()["default_version"], 2);
    let a: Vec<i32> = (0..16).collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let labels = s.http.labels("simple").await.unwrap();
        if labels["default_version"] == 1 {
            assert_eq!(labels["pinned"], true);
            break;
        }
        assert!(Instant::now() < deadline, "rolled back in time: {labels}");
        s.http
            .infer("simple", &simple_inputs(&a, &a), &InferOptions::default())
            .await
            .unwrap();
    }
    let text = std::fs::read_to_string(&audit).unwrap();
    let rollback: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["action"] == "auto_rollback")
        .expect("audited");
    assert_eq!(rollback["actor"], "auto-rollback");
    assert_eq!(rollback["version"], "1");
    assert!(rollback["reason"].as_str().unwrap().contains("p99"), "{rollback}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_operations_need_the_token_and_the_admin_port() {
    let repo = temp_repo(&["simple"]);
    let tokens = repo.path().join("tokens");
    std::fs::write(&tokens, "ci:ci-token-0123456789abcdef\n").unwrap();
    let audit = repo.path().join("audit.jsonl");
    let (tokens_path, audit_path) = (tokens.clone(), audit.clone());
    let s = TestServer::start(repo.path(), move |c| {
        explicit(&["simple"])(c);
        c.admin_token_file = Some(tokens_path);
        c.admin_http_port = Some(0);
        c.audit_log = Some(audit_path);
    })
    .await;
    let admin_url = format!("http://{}", s.server.admin_addr.expect("admin listener"));
    let admin = HttpClient::new(&admin_url).unwrap();

    let e = s.http.unload_model("simple").await.unwrap_err();
    assert_eq!(http_status(&e), 403, "public port refuses admin operations");
    let e = s.grpc.unload_model("simple").await.unwrap_err();
    assert!(e.to_string().contains("admin address"), "{e}");
    let e = admin.set_label("simple", "stable", "1").await.unwrap_err();
    assert_eq!(http_status(&e), 401, "no token");
    let wrong = HttpClient::new(&admin_url)
        .unwrap()
        .with_admin_token("wrong-token-0123456789abcdef");
    assert_eq!(http_status(&wrong.unload_model("simple").await.unwrap_err()), 401);
    assert!(s.http.model_ready("simple", None).await.unwrap(), "nothing changed");

    let admin = admin.with_admin_token("ci-token-0123456789abcdef");
    admin.set_label("simple", "stable", "1").await.unwrap();
    assert_eq!(
        s.http.labels("simple").await.unwrap()["labels"]["stable"],
        1,
        "reads stay public"
    );
    admin.unload_model("simple").await.unwrap();
    assert!(!s.http.model_ready("simple", None).await.unwrap());

    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(!text.contains("0123456789abcdef"), "tokens never reach the audit log");
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(
        lines
            .iter()
            .any(|l| l["action"] == "denied" && l["outcome"] == "failed")
    );
    let unload = lines.iter().find(|l| l["action"] == "unload").unwrap();
    assert_eq!(unload["actor"], "token:ci");
    assert!(unload["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    s.stop().await;
}

#[test]
fn validate_passes_the_examples_and_names_each_problem() {
    let (ok, report) = common::validate(&common::models_dir());
    assert!(ok, "{report}");
    assert!(
        report.contains("PASS  simple") && report.contains("golden set passed"),
        "{report}"
    );

    let repo = temp_repo(&["simple"]);
    std::fs::write(repo.path().join("simple/2/model.onnx"), b"not onnx").unwrap();
    let (ok, report) = common::validate(repo.path());
    assert!(!ok);
    assert!(
        report.contains("FAIL  simple") && report.contains("version 2"),
        "{report}"
    );

    let repo = temp_repo(&["simple"]);
    write_case(&repo.path().join("simple/1"), 5);
    let (ok, report) = common::validate(repo.path());
    assert!(!ok);
    assert!(
        report.contains("golden case 'case'") && report.contains("element 0"),
        "{report}"
    );

    let repo = temp_repo(&["simple"]);
    let config = repo.path().join("simple/config.pbtxt");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replacen("TYPE_INT32", "TYPE_FP32", 1);
    std::fs::write(&config, text).unwrap();
    let (ok, report) = common::validate(repo.path());
    assert!(!ok);
    assert!(report.contains("INPUT0"), "{report}");

    let repo = temp_repo(&["classifier"]);
    std::fs::write(
        repo.path().join("classifier/1/validation/budget.json"),
        r#"{"p99_ms": 0.000001, "requests": 10}"#,
    )
    .unwrap();
    let (ok, report) = common::validate(repo.path());
    assert!(!ok);
    assert!(report.contains("latency budget"), "{report}");
}
