//! `/metrics` end to end: a real server, real requests, the exposition parsed
//! with a Prometheus text-format parser.
//!
//! The recorder is process-wide and the first install wins, so this binary
//! starts every server with the same recorder settings (Triton's names on).

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, simple_inputs, temp_repo};
use prometheus_parse::{Sample, Scrape, Value};
use switchyard::metrics::{self, ModelState};
use switchyard_client::{Data, InferOptions, Tensor};

async fn scrape(server: &TestServer) -> Scrape {
    let url = format!("http://{}/metrics", server.server.metrics_addr);
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    // Shown on failure, or with --nocapture (e.g. for `promtool check metrics`).
    println!("{text}");
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text")
}

fn matches(s: &Sample, name: &str, labels: &[(&str, &str)]) -> bool {
    s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
}

fn number(v: &Value) -> f64 {
    match v {
        Value::Counter(x) | Value::Gauge(x) | Value::Untyped(x) => *x,
        Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
        Value::Summary(_) => panic!("unexpected summary"),
    }
}

/// Sum of every sample of `name` carrying `labels` (0 when absent).
fn sum(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| matches(s, name, labels))
        .map(|s| number(&s.value))
        .sum()
}

fn value_of<'a>(scrape: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> &'a Value {
    &scrape
        .samples
        .iter()
        .find(|s| matches(s, name, labels))
        .unwrap_or_else(|| panic!("{name}{labels:?} is exported"))
        .value
}

/// The recorder's settings. The first server of this binary to start installs
/// the process-wide recorder, so every test here starts with the same ones.
fn recorder_settings(c: &mut switchyard::config::Config) {
    c.metrics_triton_names = true;
    c.metrics_latency_buckets = vec![0.0001, 0.001, 0.01, 0.1, 1.0, 10.0];
}

/// The version that serves requests without one: the latest of `simple`'s two.
const SIMPLE: &[(&str, &str)] = &[("model", "simple"), ("version", "2")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_inferences() {
    let repo = temp_repo(&["simple"]);
    let s = TestServer::start(repo.path(), recorder_settings).await;
    let before = scrape(&s).await;

    let (http_n, grpc_n) = (4, 3);
    let n = (http_n + grpc_n) as f64;
    let a: Vec<i32> = (0..16).collect();
    let b = vec![1; 16];
    let opts = InferOptions::default();
    for _ in 0..http_n {
        s.http.infer("simple", &simple_inputs(&a, &b), &opts).await.unwrap();
    }
    for _ in 0..grpc_n {
        s.grpc.infer("simple", &simple_inputs(&a, &b), &opts).await.unwrap();
    }
    // One routed failure: an input the model does not have.
    let mut bad = simple_inputs(&a, &b);
    bad.push(Tensor::new("BOGUS", vec![1, 16], Data::I32(a.clone())));
    assert!(s.http.infer("simple", &bad, &opts).await.is_err());
    // Model state and load time as the registry reports them.
    metrics::model_state("loaded_elsewhere", "3", ModelState::Loading);
    metrics::model_state("loaded_elsewhere", "3", ModelState::Ready);
    metrics::load_duration("loaded_elsewhere", "3", 0.25);

    let after = scrape(&s).await;
    let delta = |name: &str, labels: &[(&str, &str)]| sum(&after, name, labels) - sum(&before, name, labels);

    // Requests by outcome, and their latency histogram (failures included).
    let ok = [("model", "simple"), ("outcome", "success")];
    assert_eq!(delta("switchyard_inference_requests_total", &ok), n);
    let all = delta("switchyard_inference_requests_total", &[("model", "simple")]);
    assert_eq!(all, n + 1.0, "one failure");
    assert_eq!(delta("switchyard_request_duration_seconds_count", SIMPLE), n + 1.0);
    assert_eq!(
        delta(
            "switchyard_request_duration_seconds_count",
            &[("model", "simple"), ("protocol", "grpc")]
        ),
        grpc_n as f64
    );
    // The configured latency buckets are the ones exported.
    let Value::Histogram(buckets) = value_of(&after, "switchyard_request_duration_seconds", SIMPLE) else {
        panic!("request duration is a histogram");
    };
    let bounds: Vec<f64> = buckets.iter().map(|b| b.less_than).collect();
    assert_eq!(bounds, [0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, f64::INFINITY]);

    // Phases: queue per request, compute per batch (no dynamic batching: one request per batch).
    for phase in ["queue", "compute_input", "compute_infer", "compute_output"] {
        let name = format!("switchyard_{phase}_duration_seconds_count");
        assert_eq!(delta(&name, SIMPLE), n, "{name}");
    }
    assert_eq!(delta("switchyard_inferences_total", SIMPLE), n);
    assert_eq!(delta("switchyard_executions_total", SIMPLE), n);
    assert_eq!(delta("switchyard_batch_size_count", SIMPLE), n);
    assert_eq!(delta("switchyard_batch_size_sum", SIMPLE), n);
    // max_batch_size 8, one row per batch.
    assert_eq!(delta("switchyard_batch_fill_ratio_count", SIMPLE), n);
    assert!((delta("switchyard_batch_fill_ratio_sum", SIMPLE) - n / 8.0).abs() < 1e-9);

    // Efficiency: float counters, typed as counters.
    let cpu = value_of(&after, "switchyard_compute_cpu_seconds_total", SIMPLE);
    assert!(matches!(cpu, Value::Counter(x) if *x > 0.0), "{cpu:?}");
    assert!(delta("switchyard_compute_cpu_seconds_total", SIMPLE) > 0.0);
    // An executor reports its idle time when it wakes, and wakes at least
    // once a second with no work: requests that ran in place on its session
    // (cheap batches on an idle executor) may not have woken it yet.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = scrape(&s).await;
        let idle = value_of(&now, "switchyard_executor_idle_seconds_total", SIMPLE);
        if matches!(idle, Value::Counter(x) if *x > 0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "the idle counter did not move: {idle:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Gauges.
    assert_eq!(sum(&after, "switchyard_inflight_requests", SIMPLE), 0.0);
    assert_eq!(sum(&after, "switchyard_queue_depth", SIMPLE), 0.0);
    assert!(sum(&after, "switchyard_queue_capacity", SIMPLE) > 0.0);
    assert_eq!(sum(&after, "switchyard_model_ready", SIMPLE), 1.0);
    let state = |st: &str| {
        sum(
            &after,
            "switchyard_model_state",
            &[("model", "loaded_elsewhere"), ("state", st)],
        )
    };
    assert_eq!(
        (state("LOADING"), state("READY"), state("UNAVAILABLE")),
        (0.0, 1.0, 0.0)
    );
    let load = [("model", "loaded_elsewhere")];
    assert_eq!(sum(&after, "switchyard_model_load_duration_seconds_count", &load), 1.0);
    let Value::Histogram(buckets) = value_of(&after, "switchyard_model_load_duration_seconds", &load) else {
        panic!("load duration is a histogram");
    };
    assert!(
        buckets.iter().any(|b| b.less_than >= 300.0),
        "load buckets reach minutes"
    );
    let load_series = after
        .samples
        .iter()
        .find(|s| s.metric == "switchyard_model_load_duration_seconds");
    assert_eq!(load_series.unwrap().labels.get("version"), None, "model label only");

    // Process metrics.
    let cpu = value_of(&after, "process_cpu_seconds_total", &[]);
    assert!(matches!(cpu, Value::Counter(x) if *x > 0.0), "{cpu:?}");
    let rss = value_of(&after, "process_resident_memory_bytes", &[]);
    assert!(matches!(rss, Value::Gauge(x) if *x > 1e6), "{rss:?}");

    // Triton's names and labels.
    assert_eq!(delta("nv_inference_request_success", SIMPLE), n);
    assert_eq!(delta("nv_inference_request_failure", SIMPLE), 1.0);
    assert_eq!(delta("nv_inference_count", SIMPLE), n);
    assert_eq!(delta("nv_inference_exec_count", SIMPLE), n);
    for name in [
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_input_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_compute_output_duration_us",
    ] {
        assert!(
            matches!(value_of(&after, name, SIMPLE), Value::Counter(_)),
            "{name} is a counter"
        );
    }
    assert!(delta("nv_inference_request_duration_us", SIMPLE) > 0.0);
    assert!(matches!(
        value_of(&after, "nv_inference_pending_request_count", SIMPLE),
        Value::Gauge(x) if *x == 0.0
    ));

    // Every family is described.
    for name in [
        "switchyard_compute_cpu_seconds_total",
        "switchyard_batch_fill_ratio",
        "switchyard_inflight_requests",
        "process_cpu_seconds_total",
        "nv_inference_request_success",
    ] {
        assert!(after.docs.contains_key(name), "{name} has HELP");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_ready_follows_serving_state_across_reloads() {
    // A model of its own name: the recorder is shared by every test of this binary.
    let repo = temp_repo(&[]);
    common::copy_dir(&common::models_dir().join("simple"), &repo.path().join("rdy"));
    let config = std::fs::read_to_string(repo.path().join("rdy/config.pbtxt")).unwrap();
    std::fs::write(
        repo.path().join("rdy/config.pbtxt"),
        config.replace("name: \"simple\"", "name: \"rdy\""),
    )
    .unwrap();
    let s = TestServer::start(repo.path(), |c| {
        recorder_settings(c);
        c.model_control_mode = switchyard::config::ControlMode::Explicit;
    })
    .await;
    const RDY: &[(&str, &str)] = &[("model", "rdy"), ("version", "2")];
    s.http.load_model("rdy", None).await.unwrap();
    assert_eq!(sum(&scrape(&s).await, "switchyard_model_ready", RDY), 1.0, "first load");

    // A failed reload leaves the serving version ready.
    let file = repo.path().join("rdy/2/model.onnx");
    let good = std::fs::read(&file).unwrap();
    std::fs::write(&file, b"not an onnx file").unwrap();
    assert!(s.http.load_model("rdy", None).await.is_err());
    assert_eq!(
        sum(&scrape(&s).await, "switchyard_model_ready", RDY),
        1.0,
        "failed reload"
    );

    // A reload of a changed file replaces the version; the retired object does not zero it.
    std::fs::write(&file, std::fs::read(repo.path().join("rdy/1/model.onnx")).unwrap()).unwrap();
    s.http.load_model("rdy", None).await.unwrap();
    std::fs::write(&file, good).unwrap();
    s.http.load_model("rdy", None).await.unwrap();
    assert_eq!(
        sum(&scrape(&s).await, "switchyard_model_ready", RDY),
        1.0,
        "changed file"
    );

    s.http.unload_model("rdy").await.unwrap();
    assert_eq!(sum(&scrape(&s).await, "switchyard_model_ready", RDY), 0.0, "unloaded");
    s.stop().await;
}
