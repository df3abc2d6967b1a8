//! Readiness, shutdown, model control modes and refusing bad models.

mod common;

use std::time::Duration;

use common::{TestServer, WAIT, assert_still_serving, temp_repo};
use switchyard::config::ControlMode;
use switchyard_client::{ClientError, InferOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_false_first_at_shutdown() {
    let repo = temp_repo(&["simple"]);
    let s = TestServer::start(repo.path(), |_| {}).await;
    assert!(s.http.ready().await.unwrap());
    s.server.service.begin_shutdown();
    assert!(!s.http.ready().await.unwrap(), "HTTP readiness false while draining");
    assert!(!s.grpc.ready().await.unwrap(), "gRPC readiness false while draining");
    assert!(s.http.live().await.unwrap(), "still live");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_readiness_waits_for_every_model() {
    let repo = temp_repo(&["simple"]);
    std::fs::create_dir_all(repo.path().join("broken/1")).unwrap();
    std::fs::write(repo.path().join("broken/1/model.onnx"), b"not an onnx file").unwrap();
    let s = TestServer::start_unready(repo.path(), |_| {}).await;
    let ready = tokio::time::timeout(WAIT, s.server.wait_started())
        .await
        .expect("start-up loading ends");
    assert!(!ready, "a failed start-up model keeps the server unready");
    let index = s.http.repository_index(false).await.unwrap();
    let broken = index
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "broken")
        .unwrap()
        .clone();
    assert_eq!(broken["state"], "UNAVAILABLE");
    assert!(
        broken["reason"].as_str().unwrap().contains("cannot load the model"),
        "{broken}"
    );
    assert!(!s.http.ready().await.unwrap());
    assert!(
        s.http.model_ready("simple", None).await.unwrap(),
        "the good model still serves"
    );
    s.stop().await;

    let s = TestServer::start(repo.path(), |c| c.strict_readiness = false).await;
    assert!(s.http.ready().await.unwrap());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_mode_loads_and_unloads() {
    let repo = temp_repo(&["simple", "classifier"]);
    let s = TestServer::start(repo.path(), |c| {
        c.model_control_mode = ControlMode::Explicit;
        c.load_models = vec!["simple".into()];
    })
    .await;
    assert!(s.http.model_ready("simple", None).await.unwrap());
    assert!(!s.http.model_ready("classifier", None).await.unwrap());
    s.http.load_model("classifier", None).await.unwrap();
    assert!(s.grpc.model_ready("classifier", None).await.unwrap());

    // A config override: only version 1 of simple, via the JSON `config` parameter.
    let cfg = r#"{"max_batch_size": 8, "version_policy": {"specific": {"versions": [1]}}}"#;
    s.grpc.load_model("simple", Some(cfg)).await.unwrap();
    assert!(s.http.model_ready("simple", Some("1")).await.unwrap());
    assert!(!s.http.model_ready("simple", Some("2")).await.unwrap());

    s.grpc.unload_model("classifier").await.unwrap();
    assert!(!s.http.model_ready("classifier", None).await.unwrap());
    let index = s.grpc.repository_index(false).await.unwrap();
    let c = index.models.iter().find(|m| m.name == "classifier").unwrap();
    assert_eq!((c.state.as_str(), c.reason.as_str()), ("UNAVAILABLE", "unloaded"));

    match s.http.load_model("../etc", None).await {
        Err(ClientError::Http { status: 400, message }) => assert!(message.contains("invalid model name")),
        other => panic!("path escape refused, got {other:?}"),
    }
    match s.http.load_model("absent", None).await {
        Err(ClientError::Http { status: 404, .. }) => {}
        other => panic!("unknown model is 404, got {other:?}"),
    }
    assert_still_serving(&s).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contradicting_config_is_refused_and_the_serving_version_stays() {
    let repo = temp_repo(&["simple"]);
    let s = TestServer::start(repo.path(), |c| c.model_control_mode = ControlMode::Explicit).await;
    s.http.load_model("simple", None).await.unwrap();
    let bad = r#"{"max_batch_size": 8, "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [16]}]}"#;
    match s.http.load_model("simple", Some(bad)).await {
        Err(ClientError::Http { status: 400, message }) => {
            assert!(message.contains("model 'simple' version"), "{message}");
            assert!(
                message.contains("input[0] 'INPUT0'") && message.contains("TYPE_FP32"),
                "{message}"
            );
            assert!(message.contains("serving versions are unchanged"), "{message}");
        }
        other => panic!("contradiction refused, got {other:?}"),
    }
    assert_still_serving(&s).await;

    // Load / unload are refused outside explicit mode.
    s.stop().await;
    let s = TestServer::start(repo.path(), |_| {}).await;
    match s.http.unload_model("simple").await {
        Err(ClientError::Http { status: 503, message }) => assert!(message.contains("explicit")),
        other => panic!("refused in mode none, got {other:?}"),
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_picks_up_new_versions_and_removals() {
    let repo = temp_repo(&["simple", "classifier"]);
    std::fs::write(
        repo.path().join("simple/config.pbtxt"),
        std::fs::read_to_string(repo.path().join("simple/config.pbtxt"))
            .unwrap()
            .replace("all { }", "latest { num_versions: 1 }")
            .replace("all {}", "latest { num_versions: 1 }"),
    )
    .unwrap();
    std::fs::remove_dir_all(repo.path().join("simple/2")).unwrap();
    let s = TestServer::start(repo.path(), |c| {
        c.model_control_mode = ControlMode::Poll;
        c.repository_poll_secs = 1;
    })
    .await;
    assert!(s.http.model_ready("simple", Some("1")).await.unwrap());
    common::copy_dir(&common::models_dir().join("simple/2"), &repo.path().join("simple/2"));
    std::fs::remove_dir_all(repo.path().join("classifier")).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v2 = s.http.model_ready("simple", Some("2")).await.unwrap();
        let v1 = s.http.model_ready("simple", Some("1")).await.unwrap();
        let classifier = s.http.model_ready("classifier", None).await.unwrap();
        if v2 && !v1 && !classifier {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "poll picked up the changes in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = s
        .grpc
        .infer(
            "simple",
            &common::simple_inputs(&[1; 16], &[1; 16]),
            &InferOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(r.model_version, "2");
    s.stop().await;
}
