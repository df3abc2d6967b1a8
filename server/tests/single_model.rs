//! `--model-name`: a model repository that holds one model's files (what
//! KServe's storage initializer leaves in `/mnt/models`) is served as that
//! model, version 1 for a bare `model.onnx`; a Triton repository is served as
//! usual with or without the flag.

mod common;

use std::path::Path;

use common::{TestServer, models_dir, simple_inputs, validate};
use switchyard_client::{Data, InferOptions};

fn with_name(c: &mut switchyard::Config) {
    c.model_name = Some("foo".into());
}

/// `simple`'s config without its `name` (the served name comes from the flag).
fn config_without_name(to: &Path) {
    let text = std::fs::read_to_string(models_dir().join("simple/config.pbtxt")).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("name:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(to.join("config.pbtxt"), text).unwrap();
}

async fn assert_sums(s: &TestServer, model: &str, version: &str) {
    let a: Vec<i32> = (0..16).collect();
    let b = vec![3; 16];
    let want: Vec<i32> = a.iter().map(|x| x + 3).collect();
    let opts = InferOptions::default();
    let r = s.http.infer(model, &simple_inputs(&a, &b), &opts).await.unwrap();
    assert_eq!(r.output("OUTPUT0").unwrap().data, Data::I32(want.clone()));
    assert_eq!(r.model_version, version);
    let r = s.grpc.infer(model, &simple_inputs(&a, &b), &opts).await.unwrap();
    assert_eq!(r.output("OUTPUT0").unwrap().data, Data::I32(want));
    assert_eq!(r.model_version, version);
}

async fn index_names(s: &TestServer) -> Vec<(String, String)> {
    let index = s.http.repository_index(false).await.unwrap();
    let rows = index.as_array().unwrap();
    rows.iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["version"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_model_file_is_served_as_version_1_of_the_named_model() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(models_dir().join("simple/1/model.onnx"), dir.path().join("model.onnx")).unwrap();
    let s = TestServer::start(dir.path(), with_name).await;
    assert_sums(&s, "foo", "1").await;
    assert_eq!(index_names(&s).await, [("foo".to_string(), "1".to_string())]);
    assert!(s.http.model_metadata("model.onnx", None).await.is_err());
    s.stop().await;
    let (ok, report) = validate_named(dir.path());
    assert!(ok, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_directory_with_config_and_versions_is_served_under_the_name() {
    let dir = tempfile::tempdir().unwrap();
    for v in ["1", "2"] {
        std::fs::create_dir_all(dir.path().join(v)).unwrap();
        std::fs::copy(
            models_dir().join("simple").join(v).join("model.onnx"),
            dir.path().join(v).join("model.onnx"),
        )
        .unwrap();
    }
    config_without_name(dir.path());
    let s = TestServer::start(dir.path(), with_name).await;
    // The config's `version_policy: all` applies: both versions, the default route on the latest.
    assert_sums(&s, "foo", "2").await;
    let versions = index_names(&s).await;
    assert_eq!(versions.len(), 2, "{versions:?}");
    let config = s.http.model_config("foo", None).await.unwrap();
    assert_eq!(config["name"], "foo");
    assert_eq!(config["max_batch_size"], 8);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_file_beside_its_config_is_version_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(models_dir().join("simple/1/model.onnx"), dir.path().join("model.onnx")).unwrap();
    config_without_name(dir.path());
    let s = TestServer::start(dir.path(), with_name).await;
    assert_sums(&s, "foo", "1").await;
    assert_eq!(s.http.model_config("foo", None).await.unwrap()["max_batch_size"], 8);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_naming_another_model_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(models_dir().join("simple/1/model.onnx"), dir.path().join("model.onnx")).unwrap();
    std::fs::copy(
        models_dir().join("simple/config.pbtxt"),
        dir.path().join("config.pbtxt"),
    )
    .unwrap();
    let (ok, report) = validate_named(dir.path());
    assert!(!ok, "{report}");
    assert!(
        report.contains("config name 'simple' does not match --model-name 'foo'"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_triton_repository_is_served_as_usual_with_a_model_name() {
    let repo = common::temp_repo(&["simple"]);
    let s = TestServer::start(repo.path(), with_name).await;
    assert_sums(&s, "simple", "2").await;
    assert!(s.http.model_metadata("foo", None).await.is_err());
    s.stop().await;
    assert!(validate(repo.path()).0);
}

#[test]
fn an_invalid_model_name_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["--model-repository"])
        .arg(dir.path())
        .args([
            "--model-name",
            "../x",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("--model-name: invalid model name"), "{text}");
}

/// `switchyard validate --model-name foo` on `dir`.
fn validate_named(dir: &Path) -> (bool, String) {
    common::validate_with(dir, &["--model-name", "foo"])
}
