//! Shadow mirroring end to end, through the client on both protocols: copies
//! of production requests run on the policy's shadow after the primary has
//! answered, are compared output by output, and are reported (report
//! endpoint, /metrics, prediction log linked by request id); a failing, a
//! slow and a bounded shadow leave the primary's answers alone; the
//! promotion gate promotes or stops, audited.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{TestServer, WAIT, copy_dir, models_dir, simple_inputs, temp_repo};
use serde_json::Value;
use switchyard_client::{Data, InferOptions};

fn write_policy(repo: &Path, model: &str, text: &str) {
    std::fs::write(repo.join(model).join("traffic.yaml"), text).unwrap();
}

/// A repository with `simple` under the name `name` (versions 1 and 2):
/// tests in one process share one metrics recorder, so each test that reads
/// /metrics has a model of its own.
fn repo_with(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&models_dir().join("simple"), &dir.path().join(name));
    let path = dir.path().join(name).join("config.pbtxt");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("name: \"simple\"", &format!("name: \"{name}\""))).unwrap();
    dir
}

/// Version 3 of `model` (a copy of `simple`) with its two operations swapped:
/// OUTPUT0 = a - b and OUTPUT1 = a + b, a shadow that disagrees with 1 and 2.
fn add_swapped_version(repo: &Path, model: &str) {
    let mut swapped = std::fs::read(repo.join(model).join("2/model.onnx")).unwrap();
    let at = |op: &[u8]| {
        let found: Vec<usize> = (0..swapped.len() - 2).filter(|&i| &swapped[i..i + 3] == op).collect();
        assert_eq!(found.len(), 1, "one {} node", String::from_utf8_lossy(op));
        found[0]
    };
    let (add, sub) = (at(b"Add"), at(b"Sub"));
    swapped[add..add + 3].copy_from_slice(b"Sub");
    swapped[sub..sub + 3].copy_from_slice(b"Add");
    std::fs::create_dir_all(repo.join(model).join("3")).unwrap();
    std::fs::write(repo.join(model).join("3/model.onnx"), swapped).unwrap();
}

/// A copy of `simple` named `name` serving version 2 only, its config
/// changed by `edit`.
fn add_variant(repo: &Path, name: &str, edit: impl Fn(String) -> String) {
    copy_dir(&models_dir().join("simple"), &repo.join(name));
    let path = repo.join(name).join("config.pbtxt");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("name: \"simple\"", &format!("name: \"{name}\""))
        .replace("version_policy: { all {} }", "");
    std::fs::write(&path, edit(text)).unwrap();
    for v in ["1", "2"] {
        // Golden sets of `simple` name it; the variants run without them.
        let _ = std::fs::remove_dir_all(repo.join(name).join(v).join("validation"));
    }
}

async fn report(s: &TestServer, model: &str) -> Value {
    let url = format!("http://{}/v2/models/{model}/shadow", s.server.http_addr);
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// Polls the report until `done` holds (bounded by [`WAIT`]).
async fn report_when(s: &TestServer, model: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = report(s, model).await;
        if done(&r) {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the report never got there: {r:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn pairs(r: &Value) -> u64 {
    n(&r["totals"]["pairs"])
}

fn opts(id: &str) -> InferOptions {
    InferOptions {
        id: Some(id.into()),
        ..InferOptions::default()
    }
}

/// `rows` rows of `simple` inputs; checks the primary's sums (version 1's answer).
async fn infer_both(s: &TestServer, model: &str, count: usize, rows: usize) {
    let a: Vec<i32> = (0..16 * rows as i32).collect();
    let b = vec![3; 16 * rows];
    let want: Vec<i32> = a.iter().map(|x| x + 3).collect();
    for i in 0..count {
        let id = format!("r-{i}");
        let r = if i % 2 == 0 {
            s.http.infer(model, &simple_inputs(&a, &b), &opts(&id)).await
        } else {
            s.grpc.infer(model, &simple_inputs(&a, &b), &opts(&id)).await
        };
        let r = r.unwrap_or_else(|e| panic!("primary request {i} failed: {e}"));
        assert_eq!(r.model_version, "1");
        assert_eq!(r.output("OUTPUT0").unwrap().data, Data::I32(want.clone()));
    }
}

async fn metrics_text(s: &TestServer) -> String {
    let url = format!("http://{}/metrics", s.server.metrics_addr);
    reqwest::get(&url).await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_shadow_matches_and_is_logged_under_the_primary_id() {
    let repo = repo_with("mirror_same");
    write_policy(
        repo.path(),
        "mirror_same",
        "default: 1\nshadow: { target: 2, compare: { top_k: 1 } }\n",
    );
    common::add_parameters(repo.path(), "mirror_same", &[("prediction_log.sample_rate", "1.0")]);
    let log_dir = tempfile::tempdir().unwrap();
    let dir = log_dir.path().to_path_buf();
    let s = TestServer::start(repo.path(), |c| c.prediction_log_dir = Some(dir)).await;
    infer_both(&s, "mirror_same", 20, 1).await;
    let r = report_when(&s, "mirror_same", |r| pairs(r) == 20).await;
    assert_eq!(r["active"], true);
    assert_eq!(n(&r["totals"]["outcomes"]["match"]), 20, "{r:#}");
    let out = &r["outputs"]["OUTPUT0"];
    assert_eq!(
        (n(&out["pairs"]), n(&out["elements"]), n(&out["exact"])),
        (20, 320, 320)
    );
    assert_eq!(out["exact_match_rate"], 1.0);
    assert_eq!(n(&out["top_k_rows"]), 20);
    assert_eq!(r["worst"].as_array().unwrap().len(), 0);
    assert_eq!(r["window"]["pairs"], 20);

    // Histogram samples reach the exposition within the recorder's upkeep interval.
    let latency = "switchyard_shadow_latency_seconds_count{model=\"mirror_same\",side=\"shadow\"} 20";
    let deadline = tokio::time::Instant::now() + WAIT;
    let text = loop {
        let text = metrics_text(&s).await;
        if text.contains(latency) || tokio::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(text.contains(latency), "{text}");
    let line = |needle: &str| text.lines().find(|l| l.starts_with(needle)).map(str::to_string);
    let pairs_line = line("switchyard_shadow_pairs_total{model=\"mirror_same\",outcome=\"match\"}")
        .unwrap_or_else(|| panic!("no pair counter in\n{text}"));
    assert!(pairs_line.ends_with(" 20"), "{pairs_line}");
    assert!(
        text.contains(
            "switchyard_shadow_elements_total{model=\"mirror_same\",output=\"OUTPUT1\",result=\"exact\"} 320"
        )
    );
    // The shadow's runs are shadow traffic of version 2, never its production counts.
    assert!(text.contains("switchyard_inference_requests_total{model=\"mirror_same\",version=\"2\",protocol=\"http\",outcome=\"success\",traffic=\"shadow\"} 10"), "{text}");
    let v2 = s.server.service.registry().resolve("mirror_same", Some("2")).unwrap();
    assert_eq!(v2.stats.success.count(), 0);

    // Both records of a pair carry the request's id; the copy is marked shadow.
    let service = s.server.service.clone();
    assert!(
        tokio::task::spawn_blocking(move || service.prediction_log().flush(WAIT))
            .await
            .unwrap()
    );
    let log = std::fs::read_to_string(log_dir.path().join("predictions.jsonl")).unwrap();
    let records: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let of = |id: &str| records.iter().filter(|r| r["id"] == id).collect::<Vec<_>>();
    let pair = of("r-7");
    assert_eq!(pair.len(), 2, "{log}");
    let primary = pair
        .iter()
        .find(|r| r.get("traffic").is_none())
        .expect("the primary's record");
    let shadow = pair
        .iter()
        .find(|r| r["traffic"] == "shadow")
        .expect("the shadow's record");
    assert_eq!(
        (primary["version"].as_str(), shadow["version"].as_str()),
        (Some("1"), Some("2"))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_divergent_shadow_is_reported_with_its_request_ids() {
    let repo = repo_with("mirror_diff");
    add_swapped_version(repo.path(), "mirror_diff");
    write_policy(repo.path(), "mirror_diff", "default: 1\nshadow: { target: 3 }\n");
    let s = TestServer::start(repo.path(), |_| {}).await;
    infer_both(&s, "mirror_diff", 12, 1).await;
    let r = report_when(&s, "mirror_diff", |r| pairs(r) == 12).await;
    assert_eq!(n(&r["totals"]["outcomes"]["mismatch"]), 12, "{r:#}");
    // a = 0..16, b = 3: a + b vs a - b differ by 6 everywhere.
    let out = &r["outputs"]["OUTPUT0"];
    assert_eq!(n(&out["within_tolerance"]), 0);
    assert_eq!(out["max_abs_diff"], 6.0);
    let worst = r["worst"].as_array().unwrap();
    assert_eq!(worst.len(), 10);
    assert!(
        worst
            .iter()
            .all(|w| w["id"].as_str().unwrap().starts_with("r-") && w["outcome"] == "mismatch")
    );
    let text = metrics_text(&s).await;
    assert!(
        text.contains(
            "switchyard_shadow_output_comparisons_total{model=\"mirror_diff\",output=\"OUTPUT1\",result=\"mismatch\"} 12"
        ),
        "{text}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_a_slow_and_a_full_shadow_leave_the_primary_alone() {
    let repo = temp_repo(&["simple"]);
    // Takes one row only: every two-row copy is refused.
    add_variant(repo.path(), "one_row", |t| {
        t.replace("max_batch_size: 8", "max_batch_size: 0")
            .replace("dims: [ 16 ]", "dims: [ 1, 16 ]")
    });
    // Waits 5 s for a batch of 8 that never comes.
    add_variant(repo.path(), "slow", |t| {
        t + "dynamic_batching { preferred_batch_size: [ 8 ] max_queue_delay_microseconds: 5000000 }\n"
    });
    write_policy(
        repo.path(),
        "simple",
        "default: 1\nshadow: { model: one_row, target: 2 }\n",
    );
    let s = TestServer::start(repo.path(), |_| {}).await;
    infer_both(&s, "simple", 10, 2).await;
    let r = report_when(&s, "simple", |r| pairs(r) == 10).await;
    assert_eq!(n(&r["totals"]["outcomes"]["shadow_error"]), 10, "{r:#}");
    assert!(r["worst"][0]["error"].as_str().unwrap().contains("shape"), "{r:#}");

    // Slow, and at most 3 copies at once with a 1 s deadline: the primaries
    // are answered while the copies wait; the rest are dropped and counted.
    let policy = r#"{"default": 1, "shadow": {"model": "slow", "target": 2, "in_flight": 3, "timeout_ms": 1000}}"#;
    let url = format!("http://{}/v2/models/simple/traffic", s.server.http_addr);
    let put = reqwest::Client::new().put(&url).body(policy).send().await.unwrap();
    assert_eq!(put.status(), 200, "{}", put.text().await.unwrap());
    infer_both(&s, "simple", 12, 1).await;
    let r = report(&s, "simple").await;
    assert_eq!(n(&r["dropped"]["in_flight"]), 9, "{r:#}");
    assert!(
        n(&r["in_flight"]) >= 1,
        "twelve primaries were answered while copies still waited: {r:#}"
    );
    let r = report_when(&s, "simple", |r| n(&r["dropped"]["deadline"]) == 3).await;
    assert_eq!(pairs(&r), 0, "a new policy starts a new report");
    assert_eq!(r["in_flight"], 0);
    common::assert_still_serving(&s).await;
    let v1 = s.server.service.registry().resolve("simple", Some("1")).unwrap();
    assert_eq!(v1.stats.fail.count(), 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_promotes_a_matching_shadow_and_stops_a_divergent_one() {
    let repo = temp_repo(&["simple"]);
    add_swapped_version(repo.path(), "simple");
    write_policy(
        repo.path(),
        "simple",
        "default: 1\nshadow: { target: 2, promote: { min_pairs: 6 } }\n",
    );
    let audit = tempfile::tempdir().unwrap();
    let audit_path = audit.path().join("audit.jsonl");
    let path = audit_path.clone();
    let s = TestServer::start(repo.path(), |c| c.audit_log = Some(path)).await;
    infer_both(&s, "simple", 6, 1).await;
    let r = report_when(&s, "simple", |r| r["gate"]["passed"] == true).await;
    assert!(
        r["gate"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("passed after 6 pairs"),
        "{r:#}"
    );
    let traffic = s.server.service.traffic("simple").unwrap();
    assert_eq!(traffic.source, "override");
    let policy = traffic.policy.unwrap();
    assert_eq!(policy.default.unwrap().as_request(), "2");
    assert!(policy.shadow.is_none());
    let opts = InferOptions::default();
    let r = s
        .http
        .infer("simple", &simple_inputs(&[1; 16], &[2; 16]), &opts)
        .await
        .unwrap();
    assert_eq!(r.model_version, "2", "promoted");

    // A divergent shadow with `on_fail: stop`: the shadow ends, the default stays.
    let policy = r#"{"default": 1, "shadow": {"target": 3, "promote": {"min_pairs": 4, "on_fail": "stop"}}}"#;
    let url = format!("http://{}/v2/models/simple/traffic", s.server.http_addr);
    let put = reqwest::Client::new().put(&url).body(policy).send().await.unwrap();
    assert_eq!(put.status(), 200);
    infer_both(&s, "simple", 4, 1).await;
    let r = report_when(&s, "simple", |r| r["gate"]["passed"] == false).await;
    assert!(r["gate"]["reason"].as_str().unwrap().contains("mismatch rate"), "{r:#}");
    let report_ok = |r: &Value| r["active"] == false;
    report_when(&s, "simple", report_ok).await;
    infer_both(&s, "simple", 4, 1).await;
    assert_eq!(pairs(&report(&s, "simple").await), 4, "no more copies once stopped");
    s.stop().await;

    let log = std::fs::read_to_string(&audit_path).unwrap();
    let gates: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["action"] == "shadow_gate")
        .collect();
    assert_eq!(gates.len(), 2, "{log}");
    assert!(
        gates
            .iter()
            .all(|g| g["actor"] == "shadow-gate" && g["outcome"] == "ok"),
        "{log}"
    );
    assert!(gates[0]["reason"].as_str().unwrap().contains("passed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_of_a_model_without_a_shadow_and_of_an_unknown_model() {
    let repo = temp_repo(&["simple"]);
    let s = TestServer::start(repo.path(), |_| {}).await;
    let r = report(&s, "simple").await;
    assert_eq!(
        (r["active"].clone(), r["shadow"].clone()),
        (Value::Bool(false), Value::Null)
    );
    let url = format!("http://{}/v2/models/nope/shadow", s.server.http_addr);
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("nope"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_wait_to_share_a_batch_of_the_target() {
    let repo = temp_repo(&["simple"]);
    // Batches up to 8 rows; the queue delay alone would run each copy at once.
    add_variant(repo.path(), "batched", |t| t + "dynamic_batching { }\n");
    // Copies may wait 20 s for their batch: only a full one runs them.
    write_policy(
        repo.path(),
        "simple",
        "default: 1\nshadow: { model: batched, target: 2, batch_wait_ms: 20000, timeout_ms: 30000, max_cpu_load: 1 }\n",
    );
    let s = TestServer::start(repo.path(), |_| {}).await;
    infer_both(&s, "simple", 8, 1).await;
    let r = report_when(&s, "simple", |r| pairs(r) == 8).await;
    assert_eq!(n(&r["totals"]["outcomes"]["match"]), 8, "{r:#}");
    let target = s.server.service.registry().resolve("batched", Some("2")).unwrap();
    assert_eq!(target.stats.execution_count.get(), 1, "eight copies, one batch");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_copy_while_the_process_has_no_spare_cpu() {
    let repo = temp_repo(&["simple"]);
    write_policy(
        repo.path(),
        "simple",
        "default: 1\nshadow: { target: 2, max_cpu_load: 0.5 }\n",
    );
    let s = TestServer::start(repo.path(), |_| {}).await;
    // Every CPU of the process busy (this test's threads count as the server's: one process).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spinners: Vec<_> = (0..cpus)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + WAIT;
    while switchyard::util::cpu::load() < 0.7 {
        assert!(std::time::Instant::now() < deadline, "the CPU load never rose");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    infer_both(&s, "simple", 4, 1).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in spinners {
        t.join().unwrap();
    }
    let r = report(&s, "simple").await;
    assert_eq!(n(&r["dropped"]["cpu"]), 4, "{r:#}");
    assert_eq!(pairs(&r), 0, "{r:#}");
    // With the CPUs free again, copies are made.
    let deadline = std::time::Instant::now() + WAIT;
    while switchyard::util::cpu::load() >= 0.4 {
        assert!(std::time::Instant::now() < deadline, "the CPU load never fell");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    infer_both(&s, "simple", 2, 1).await;
    report_when(&s, "simple", |r| pairs(r) == 2).await;
    s.stop().await;
}
