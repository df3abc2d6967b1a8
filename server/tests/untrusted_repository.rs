//! A model repository, or a config given to the load API, is not trusted to be
//! sane: every number that sizes threads, memory or time is bounded, files
//! must be regular files inside the repository, and a load does not depend on
//! the connection that asked for it.

mod common;

use std::time::Instant;

use common::{TestServer, WAIT, assert_still_serving, temp_repo};
use switchyard::config::ControlMode;
use switchyard_client::ClientError;

fn explicit(c: &mut switchyard::Config) {
    c.model_control_mode = ControlMode::Explicit;
    c.load_models = vec![];
}

fn http_error(e: ClientError) -> (u16, String) {
    match e {
        ClientError::Http { status, message } => (status, message),
        other => panic!("expected an HTTP error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_numbers_that_size_threads_memory_or_time_are_bounded() {
    let repo = temp_repo(&["simple"]);
    let s = TestServer::start(repo.path(), explicit).await;
    let cases = [
        (
            r#"{"parameters": {"intra_op_thread_count": {"string_value": "100000"}}}"#,
            "parameters.intra_op_thread_count",
        ),
        (r#"{"instance_group": [{"count": 10000}]}"#, "instance_group[0].count"),
        (
            r#"{"max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": "4611686018427387904"}}"#,
            "max_queue_delay_microseconds",
        ),
        (
            r#"{"max_batch_size": 8, "dynamic_batching": {"preferred_batch_size": [16]}}"#,
            "preferred_batch_size",
        ),
        (
            r#"{"max_batch_size": 8, "dynamic_batching": {"priority_levels": "4611686018427387904"}}"#,
            "priority_levels",
        ),
    ];
    for (config, field) in cases {
        let started = Instant::now();
        let (status, message) = http_error(s.http.load_model("simple", Some(config)).await.unwrap_err());
        assert_eq!(status, 400, "{config}: {message}");
        assert!(message.contains(field), "{config}: {message}");
        assert!(started.elapsed() < WAIT);
        let e = s.grpc.load_model("simple", Some(config)).await.unwrap_err();
        assert!(e.to_string().contains(field), "{e}");
    }
    // Nothing was loaded by any of them; a sane load still works.
    s.http.load_model("simple", None).await.unwrap();
    assert_still_serving(&s).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_finishes_and_is_audited_when_its_client_goes_away() {
    let repo = temp_repo(&["simple"]);
    let audit = tempfile::NamedTempFile::new().unwrap();
    let audit_path = audit.path().to_path_buf();
    let s = TestServer::start(repo.path(), |c| {
        explicit(c);
        c.audit_log = Some(audit_path.clone());
    })
    .await;
    // Warm-up long enough that the client is gone well before the load ends.
    let input = r#"{"data_type": "TYPE_INT32", "dims": [16], "zero_data": true}"#;
    let config = format!(
        r#"{{"max_batch_size": 8, "model_warmup": [{{"name": "w", "batch_size": 8, "count": 1000, "inputs": {{"INPUT0": {input}, "INPUT1": {input}}}}}]}}"#
    );
    let body = serde_json::json!({ "parameters": { "config": config } }).to_string();
    let request = format!(
        "POST /v2/repository/models/simple/load HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    {
        use tokio::io::AsyncWriteExt;
        let mut c = tokio::net::TcpStream::connect(s.server.http_addr).await.unwrap();
        c.write_all(request.as_bytes()).await.unwrap();
        // Gone without waiting for the answer.
    }
    let deadline = Instant::now() + WAIT;
    while !s.http.model_ready("simple", None).await.unwrap() {
        assert!(Instant::now() < deadline, "the abandoned load never finished");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let log = std::fs::read_to_string(&audit_path).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("\"action\":\"load\"") && l.contains("\"outcome\":\"ok\"")),
        "{log}"
    );
    assert_still_serving(&s).await;
    s.stop().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_fifos_and_links_out_of_the_repository_are_refused() {
    let repo = temp_repo(&["simple"]);
    let outside = tempfile::tempdir().unwrap();
    let root = repo.path();
    // model.onnx -> /dev/zero would be read until memory runs out.
    std::fs::create_dir_all(root.join("zero/1")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", root.join("zero/1/model.onnx")).unwrap();
    // A FIFO would block a loader thread forever.
    std::fs::create_dir_all(root.join("fifo/1")).unwrap();
    let fifo = root.join("fifo/1/model.onnx");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // A config linked to a file outside must not be read (nor quoted).
    std::fs::create_dir_all(root.join("secret/1")).unwrap();
    std::fs::copy(root.join("simple/1/model.onnx"), root.join("secret/1/model.onnx")).unwrap();
    std::fs::write(outside.path().join("shadow"), "root:hunter2:0:0").unwrap();
    std::os::unix::fs::symlink(outside.path().join("shadow"), root.join("secret/config.pbtxt")).unwrap();
    // A model file linked outside, allowed only with the opt-in.
    std::fs::create_dir_all(root.join("linked/1")).unwrap();
    std::fs::copy(root.join("simple/1/model.onnx"), outside.path().join("model.onnx")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("model.onnx"), root.join("linked/1/model.onnx")).unwrap();

    let s = TestServer::start_unready(root, |_| {}).await;
    let ready = tokio::time::timeout(WAIT, s.server.wait_started()).await.unwrap();
    assert!(!ready, "the refused models keep a strict server unready");
    let index = s.http.repository_index(false).await.unwrap();
    let reason = |name: &str| {
        index
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {index}"))["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        reason("zero").contains("outside the model repository"),
        "{}",
        reason("zero")
    );
    assert!(reason("fifo").contains("not a regular file"), "{}", reason("fifo"));
    let secret = reason("secret");
    assert!(secret.contains("outside") && !secret.contains("hunter2"), "{secret}");
    assert!(reason("linked").contains("outside"), "{}", reason("linked"));
    assert!(s.http.model_ready("simple", None).await.unwrap());
    assert_still_serving(&s).await;
    s.stop().await;

    // Opted in, the linked model loads (devices and FIFOs are still refused).
    let s = TestServer::start_unready(root, |c| c.allow_symlinks_outside_repository = true).await;
    tokio::time::timeout(WAIT, s.server.wait_started()).await.unwrap();
    assert!(s.http.model_ready("linked", None).await.unwrap());
    assert!(!s.http.model_ready("zero", None).await.unwrap());
    s.stop().await;
}
