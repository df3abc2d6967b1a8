//! Shared helpers: a server on 127.0.0.1 with ephemeral ports, driven through
//! the real client library.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use switchyard::{Config, Server};
use switchyard_client::{Data, GrpcClient, HttpClient, InferOptions, Tensor};

/// Upper bound for any wait in the tests.
pub const WAIT: Duration = Duration::from_secs(60);

/// The example repository.
pub fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// A running server and clients for both protocols.
pub struct TestServer {
    pub server: Server,
    pub http: HttpClient,
    pub grpc: GrpcClient,
}

impl TestServer {
    /// Starts on `repo` with `tweak` applied to the default test config, and waits until ready.
    pub async fn start(repo: &Path, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let server = Self::start_unready(repo, tweak).await;
        tokio::time::timeout(WAIT, server.server.wait_ready())
            .await
            .expect("server became ready in time");
        server
    }

    /// Starts without waiting for readiness.
    pub async fn start_unready(repo: &Path, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config::for_repository(repo);
        tweak(&mut config);
        let server = Server::start(config).await.expect("server starts");
        let http = HttpClient::new(&format!("http://{}", server.http_addr)).unwrap();
        let grpc = GrpcClient::connect(&format!("http://{}", server.grpc_addr))
            .await
            .unwrap();
        TestServer { server, http, grpc }
    }

    /// Shuts down and waits (bounded) for a clean exit.
    pub async fn stop(self) {
        self.server.shutdown();
        tokio::time::timeout(WAIT, self.server.wait())
            .await
            .expect("server stopped in time")
            .expect("server stopped cleanly");
    }
}

/// Copies some example models into a fresh temporary repository.
pub fn temp_repo(models: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for m in models {
        copy_dir(&models_dir().join(m), &dir.path().join(m));
    }
    dir
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Inputs of the `simple` model for one row.
pub fn simple_inputs(a: &[i32], b: &[i32]) -> Vec<Tensor> {
    let rows = (a.len() / 16) as i64;
    vec![
        Tensor::new("INPUT0", vec![rows, 16], Data::I32(a.to_vec())),
        Tensor::new("INPUT1", vec![rows, 16], Data::I32(b.to_vec())),
    ]
}

/// Runs a valid `simple` request on both protocols and checks the sums: the
/// server still serves after whatever the test did before.
pub async fn assert_still_serving(s: &TestServer) {
    let a: Vec<i32> = (0..16).collect();
    let b = vec![2; 16];
    let want: Vec<i32> = a.iter().map(|x| x + 2).collect();
    let opts = InferOptions::default();
    let r = s.http.infer("simple", &simple_inputs(&a, &b), &opts).await.unwrap();
    assert_eq!(r.output("OUTPUT0").unwrap().data, Data::I32(want.clone()));
    let r = s.grpc.infer("simple", &simple_inputs(&a, &b), &opts).await.unwrap();
    assert_eq!(r.output("OUTPUT0").unwrap().data, Data::I32(want));
}

/// Appends `parameters` entries to `<repo>/<model>/config.pbtxt`.
pub fn add_parameters(repo: &Path, model: &str, params: &[(&str, &str)]) {
    let path = repo.join(model).join("config.pbtxt");
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (k, v) in params {
        text.push_str(&format!(
            "\nparameters {{ key: \"{k}\" value: {{ string_value: \"{v}\" }} }}\n"
        ));
    }
    std::fs::write(&path, text).unwrap();
}

/// Runs `switchyard validate` on `repo`: whether it passed, and its report.
pub fn validate(repo: &Path) -> (bool, String) {
    validate_with(repo, &[])
}

/// Runs `switchyard validate` with `args` on `repo`.
pub fn validate_with(repo: &Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("validate")
        .args(args)
        .arg("--model-repository")
        .arg(repo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
