//! The ordered shutdown, driven from outside as Kubernetes drives it: the real
//! binary gets SIGTERM while a client polls readiness and others send
//! requests. Readiness falls first, no request fails during the drain period,
//! every request the server answered was answered successfully, and the
//! process exits 0.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{WAIT, simple_inputs, temp_repo};
use switchyard_client::{ClientError, ClientOptions, GrpcClient, HttpClient, InferOptions};

const DRAIN: Duration = Duration::from_secs(2);

/// Starts the binary and returns it with its HTTP and gRPC addresses (from its "listening" log line).
fn spawn(repo: &std::path::Path) -> (KillOnDrop, SocketAddr, SocketAddr) {
    let drain = DRAIN.as_secs().to_string();
    let (child, http, grpc, _) = spawn_with(repo, &["--shutdown-drain-secs", &drain, "--exit-timeout-secs", "10"]);
    (child, http, grpc)
}

/// Starts the binary with `extra` flags; returns it with its HTTP, gRPC and metrics addresses.
fn spawn_with(repo: &std::path::Path, extra: &[&str]) -> (KillOnDrop, SocketAddr, SocketAddr, SocketAddr) {
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["--model-repository"])
        .arg(repo)
        .args(["--http-address", "127.0.0.1", "--http-port", "0"])
        .args(["--grpc-address", "127.0.0.1", "--grpc-port", "0"])
        .args(["--metrics-address", "127.0.0.1", "--metrics-port", "0"])
        .args(["--log-format", "json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the server binary starts");
    // Killed if the test fails before the server exits by itself.
    let mut child = KillOnDrop(Some(child));
    let stdout = child.0.as_mut().unwrap().stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr_of = |line: &str, key: &str| -> Option<SocketAddr> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        v["fields"][key].as_str()?.parse().ok()
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let line = lines.next().expect("the server logs").unwrap();
        if let (Some(http), Some(grpc), Some(metrics)) = (
            addr_of(&line, "http"),
            addr_of(&line, "grpc"),
            addr_of(&line, "metrics"),
        ) {
            // Keep draining the log so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines.by_ref() {});
            return (child, http, grpc, metrics);
        }
        assert!(Instant::now() < deadline, "no 'listening' line");
    }
}

/// When a request finished, on which protocol, and how.
type Record = (Instant, &'static str, Outcome);

struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0
            && c.try_wait().ok().flatten().is_none()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Debug, Clone)]
enum Outcome {
    Ok,
    /// The server answered with an error status: a lost request.
    Refused(String),
    /// No connection (after the listeners closed): the client goes elsewhere.
    Unreachable,
}

fn classify(r: Result<(), ClientError>) -> Outcome {
    match r {
        Ok(()) => Outcome::Ok,
        Err(ClientError::Http { status, message }) => Outcome::Refused(format!("{status} {message}")),
        // A stream the server never took (opened as its GOAWAY crossed) fails in
        // the client's transport: not answered, so not lost.
        Err(ClientError::Grpc { code, message })
            if code != tonic::Code::Unavailable && !message.contains("transport error") =>
        {
            Outcome::Refused(format!("{code:?} {message}"))
        }
        Err(_) => Outcome::Unreachable,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_turns_readiness_false_first_and_loses_no_request() {
    let repo = temp_repo(&["simple"]);
    let (child, http_addr, grpc_addr) = spawn(repo.path());
    let opts = ClientOptions::default()
        .with_connect_timeout(Duration::from_secs(2))
        .with_request_timeout(Duration::from_secs(10));
    let http = HttpClient::with_options(&format!("http://{http_addr}"), &opts).unwrap();
    let deadline = Instant::now() + WAIT;
    while !http.ready().await.unwrap_or(false) {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let grpc = GrpcClient::connect_with_options(&format!("http://{grpc_addr}"), &opts)
        .await
        .unwrap();

    let stop_at = Instant::now() + DRAIN + Duration::from_secs(15);
    let readiness: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
    let results: Arc<Mutex<Vec<Record>>> = Arc::default();
    let mut tasks = Vec::new();
    {
        let (http, readiness) = (http.clone(), readiness.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop_at {
                let ready = http.ready().await;
                readiness
                    .lock()
                    .unwrap()
                    .push((Instant::now(), matches!(ready, Ok(true))));
                if ready.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    let a: Vec<i32> = (0..16).collect();
    for _ in 0..2 {
        let (http, grpc, results, a) = (http.clone(), grpc.clone(), results.clone(), a.clone());
        tasks.push(tokio::spawn(async move {
            let inputs = simple_inputs(&a, &a);
            let mut unreachable = 0;
            while Instant::now() < stop_at && unreachable < 5 {
                let o = classify(
                    http.infer("simple", &inputs, &InferOptions::default())
                        .await
                        .map(|_| ()),
                );
                results.lock().unwrap().push((Instant::now(), "http", o.clone()));
                let g = classify(
                    grpc.infer("simple", &inputs, &InferOptions::default())
                        .await
                        .map(|_| ()),
                );
                results.lock().unwrap().push((Instant::now(), "grpc", g.clone()));
                if matches!(o, Outcome::Unreachable) && matches!(g, Outcome::Unreachable) {
                    unreachable += 1;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sigterm = Instant::now();
    let status = terminate_and_wait(child).await;
    let exited = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(status.success(), "exit status {status}");
    assert!(exited.duration_since(sigterm) >= DRAIN, "the drain period was skipped");

    let readiness = readiness.lock().unwrap().clone();
    let fell = readiness
        .iter()
        .find(|(t, ready)| *t > sigterm && !ready)
        .map(|(t, _)| *t)
        .expect("readiness never turned false");
    assert!(fell.duration_since(sigterm) < DRAIN / 2, "readiness fell late");
    let results = results.lock().unwrap().clone();
    assert!(
        results.iter().any(|(t, _, o)| *t > fell && matches!(o, Outcome::Ok)),
        "served while not ready"
    );
    for (t, protocol, outcome) in &results {
        match outcome {
            Outcome::Ok => {}
            Outcome::Refused(why) => panic!("a {protocol} request was answered with an error: {why}"),
            Outcome::Unreachable => assert!(
                t.duration_since(sigterm) >= DRAIN,
                "a {protocol} request found no server {:?} after SIGTERM, inside the drain period",
                t.duration_since(sigterm)
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_model_load_still_exits() {
    // A load that takes seconds: a golden-set latency budget of 100,000 requests.
    let repo = temp_repo(&["simple"]);
    let version = repo.path().join("simple/2");
    let cases = version.join("validation/cases");
    std::fs::create_dir_all(&cases).unwrap();
    let a: Vec<i32> = (0..16).collect();
    let case = serde_json::json!({
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": a},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": vec![1; 16]}
        ],
        "outputs": [{"name": "OUTPUT0", "shape": [1, 16], "data": a.iter().map(|x| x + 1).collect::<Vec<_>>()}]
    });
    std::fs::write(cases.join("case.json"), case.to_string()).unwrap();
    std::fs::write(
        version.join("validation/budget.json"),
        r#"{"p99_ms": 10000, "requests": 100000}"#,
    )
    .unwrap();
    let (child, http_addr, _, metrics_addr) = spawn_with(
        repo.path(),
        &[
            "--model-control-mode",
            "explicit",
            "--shutdown-drain-secs",
            "0",
            "--exit-timeout-secs",
            "60",
        ],
    );
    let http = HttpClient::new(&format!("http://{http_addr}")).unwrap();
    let loading = tokio::spawn(async move { http.load_model("simple", None).await });
    // Wait until the load is running (the version is LOADING), then signal.
    let metrics = reqwest::Client::new();
    let metrics_url = format!("http://{metrics_addr}/metrics");
    let deadline = Instant::now() + WAIT;
    loop {
        let text = metrics.get(&metrics_url).send().await.unwrap().text().await.unwrap();
        if text
            .lines()
            .any(|l| l.starts_with("switchyard_model_state{") && l.contains("state=\"LOADING\"") && l.ends_with(" 1"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the load never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sigterm = Instant::now();
    let status = terminate_and_wait(child).await;
    assert!(status.success(), "exit status {status}");
    // Well within the exit timeout (60 s): the load did not hold the process.
    assert!(
        sigterm.elapsed() < Duration::from_secs(10),
        "exit took {:?}",
        sigterm.elapsed()
    );
    let answer = loading.await.unwrap();
    assert!(
        matches!(&answer, Err(ClientError::Http { status: 503, .. }) | Ok(())),
        "the load request was answered: {answer:?}"
    );
}

/// Sends SIGTERM and waits (bounded) for the process to exit.
async fn terminate_and_wait(mut child: KillOnDrop) -> std::process::ExitStatus {
    let pid = child.0.as_ref().unwrap().id();
    let sent = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(sent.success());
    tokio::task::spawn_blocking(move || {
        let process = child.0.as_mut().unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = process.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "the server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_every_background_task_and_joins_the_executors() {
    use switchyard_proto::inference::{self as pb, grpc_inference_service_client::GrpcInferenceServiceClient};
    let repo = temp_repo(&["simple"]);
    let s = common::TestServer::start(repo.path(), |c| c.exit_timeout_secs = 1).await;
    let background = s.server.service.background().clone();
    // Both versions of `simple`, one executor each.
    assert_eq!(background.threads(), 2);

    // A gRPC stream left open by its client: its reader task is the server's.
    let mut grpc = GrpcInferenceServiceClient::connect(format!("http://{}", s.server.grpc_addr))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let request = |id: &str| {
        let mut r = pb::ModelInferRequest {
            model_name: "simple".into(),
            id: id.into(),
            ..Default::default()
        };
        for name in ["INPUT0", "INPUT1"] {
            r.inputs.push(pb::model_infer_request::InferInputTensor {
                name: name.into(),
                datatype: "INT32".into(),
                shape: vec![1, 16],
                ..Default::default()
            });
            r.raw_input_contents.push(vec![0u8; 64].into());
        }
        r
    };
    tx.send(request("first")).await.unwrap();
    let mut responses = grpc
        .model_stream_infer(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = responses.message().await.unwrap().unwrap();
    assert_eq!(first.error_message, "");
    assert!(background.tasks() >= 1, "the stream's reader is tracked");

    s.stop().await;
    assert_eq!(background.tasks(), 0, "no task outlives the server");
    assert_eq!(background.threads(), 0, "every executor thread was joined");
    drop(tx);
}
