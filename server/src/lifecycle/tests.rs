//! The deploy pipeline with a mock backend: no ONNX Runtime, no routing table.

use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;

use super::audit::Audit;
use super::failure::FailureKind;
use super::pipeline::{LoadSettings, Outcome, Pipeline};
use super::{Deployer, LoadFailure};
use crate::access::Actor;
use crate::batching::{BatchInput, Executor};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Backend, Device, IoSpec, Loaded, SessionSettings, Signature};
use crate::repository::{self, Repository};
use crate::tensor::{DataType, Tensor, TensorData};

/// `OUT = IN` (FP32, `[-1, 2]`); fails to build when `fail` says so.
struct MockBackend {
    fail: Option<ErrorKind>,
}

/// Echoes; with `refuse_zeros`, refuses all-zero inputs, as a graph that
/// parses its input can (what a synthetic warm-up sends).
struct Echo {
    refuse_zeros: bool,
}

impl Executor for Echo {
    fn run(&mut self, inputs: Vec<BatchInput<'_>>) -> Result<Vec<Tensor>> {
        let input = &inputs[0];
        let mut data = BytesMut::new();
        for part in &input.parts {
            match part {
                TensorData::Fixed(b) => data.extend_from_slice(b),
                TensorData::Bytes(_) => return Err(Error::internal("unexpected BYTES")),
            }
        }
        if self.refuse_zeros && data.iter().all(|&b| b == 0) {
            return Err(Error::invalid("zeros do not parse"));
        }
        Ok(vec![Tensor {
            name: "OUT".into(),
            datatype: DataType::Fp32,
            shape: input.shape.clone(),
            data: TensorData::Fixed(data.freeze()),
        }])
    }
}

impl Backend for MockBackend {
    fn load(&self, _model: &[u8], _settings: &SessionSettings, instances: usize) -> Result<Loaded> {
        if let Some(kind) = self.fail.filter(|&k| k != ErrorKind::Unsupported) {
            return Err(Error::new(kind, "the mock backend refuses"));
        }
        let spec = |name: &str| IoSpec {
            name: name.into(),
            datatype: Ok(DataType::Fp32),
            dims: vec![-1, 2],
        };
        Ok(Loaded {
            signature: Signature {
                inputs: vec![spec("IN")],
                outputs: vec![spec("OUT")],
                defaulted_inputs: Vec::new(),
            },
            executors: (0..instances)
                .map(|_| {
                    Box::new(Echo {
                        refuse_zeros: self.fail == Some(ErrorKind::Unsupported),
                    }) as Box<dyn Executor>
                })
                .collect(),
            device: Device::Cpu,
            device_note: None,
        })
    }
}

/// A repository with model `m` version 1 (any bytes: the mock reads none),
/// optionally with one golden case expecting `expected` for input `[1, 2]`.
fn repository(expected: Option<[f32; 2]>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let version = dir.path().join("m/1");
    std::fs::create_dir_all(&version).unwrap();
    std::fs::write(version.join("model.onnx"), b"not an onnx file").unwrap();
    if let Some([a, b]) = expected {
        let cases = version.join("validation/cases");
        std::fs::create_dir_all(&cases).unwrap();
        let case = serde_json::json!({
            "inputs": [{"name": "IN", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}],
            "outputs": [{"name": "OUT", "shape": [1, 2], "data": [a, b]}],
        });
        std::fs::write(cases.join("one.json"), case.to_string()).unwrap();
    }
    dir
}

async fn run(root: &Path, fail: Option<ErrorKind>) -> Outcome {
    let repo = Repository::new(root);
    let source = Arc::new(repository::read_model(&repo, "m", None).unwrap());
    let pipeline = Pipeline::new(LoadSettings::default(), Arc::new(MockBackend { fail }));
    let (version, file) = source.versions[0].clone();
    pipeline.version(&source, version, &file, None).await
}

fn failure(outcome: Outcome) -> LoadFailure {
    match outcome {
        Outcome::Failed(f, _) => f,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_version_passes_warm_up_and_its_golden_set() {
    let dir = repository(Some([1.0, 2.0]));
    match run(dir.path(), None).await {
        Outcome::Ready(handle, report) => {
            assert_eq!(report.cases, 1);
            assert_eq!(handle.version, 1);
            assert_eq!(handle.inputs[0].name, "IN");
            assert_eq!(handle.max_batch_size, 4, "completed from the signature");
            assert_eq!(handle.digest.len(), 64);
        }
        other => panic!("expected a ready version, got {other:?}"),
    }
}

/// `fail: Some(Unsupported)` makes the mock build executors that refuse zeros.
const REFUSES_ZEROS: Option<ErrorKind> = Some(ErrorKind::Unsupported);

#[tokio::test]
async fn a_failed_synthetic_warm_up_loads_the_version_with_a_warning() {
    let dir = repository(None);
    match run(dir.path(), REFUSES_ZEROS).await {
        Outcome::Ready(handle, _) => {
            let warning = handle.warning.as_deref().expect("a warning");
            assert!(
                warning.starts_with("synthetic warm-up 'synthetic batch 1' failed"),
                "{warning}"
            );
            assert!(warning.contains("zeros do not parse"), "{warning}");
        }
        other => panic!("a synthetic warm-up must not refuse a version: {other:?}"),
    }
    // The repository index shows it as the READY version's reason.
    let mut config = crate::Config::for_repository(dir.path());
    config.model_control_mode = crate::config::ControlMode::Explicit;
    let service = crate::Service::with_backend(&config, Arc::new(MockBackend { fail: REFUSES_ZEROS })).unwrap();
    let router = crate::http::router(service.clone(), 1 << 20, false);
    let request = axum::http::Request::post("/v2/repository/models/m/load")
        .body(axum::body::Body::empty())
        .unwrap();
    use tower::ServiceExt;
    assert_eq!(router.oneshot(request).await.unwrap().status().as_u16(), 200);
    let index = service.repository_index(true).unwrap();
    assert_eq!(index[0].state, "READY");
    assert!(index[0].reason.contains("loaded without warm-up"), "{:?}", index[0]);

    // An explicit model_warmup that fails still refuses the version.
    let config = "name: \"m\"\nmax_batch_size: 4\ninput [ { name: \"IN\" data_type: TYPE_FP32 dims: [ 2 ] } ]\n\
        output [ { name: \"OUT\" data_type: TYPE_FP32 dims: [ 2 ] } ]\nmodel_warmup [ { name: \"zeros\" \
        batch_size: 1 inputs { key: \"IN\" value: { data_type: TYPE_FP32 dims: [ 2 ] zero_data: true } } } ]\n";
    std::fs::write(dir.path().join("m/config.pbtxt"), config).unwrap();
    let f = failure(run(dir.path(), REFUSES_ZEROS).await);
    assert_eq!(f.kind, FailureKind::Warmup);
    assert!(f.message.contains("warm-up 'zeros' failed"), "{}", f.message);
}

#[tokio::test]
async fn an_executor_that_cannot_start_is_the_servers_fault() {
    let dir = repository(None);
    let f = failure(run(dir.path(), Some(ErrorKind::Internal)).await);
    assert_eq!(f.kind, FailureKind::Build);
    assert!(f.message.starts_with("model 'm' version 1: "), "{}", f.message);
    assert_eq!(Error::from(f).kind.mapping().http_status, 500);
}

#[tokio::test]
async fn a_refused_model_file_is_the_clients_fault() {
    let dir = repository(None);
    let f = failure(run(dir.path(), Some(ErrorKind::InvalidArgument)).await);
    assert_eq!(f.kind, FailureKind::Model);
    assert_eq!(Error::from(f).kind.mapping().http_status, 400);
}

#[tokio::test]
async fn a_wrong_golden_answer_is_a_validation_failure() {
    let dir = repository(Some([1.0, 3.0]));
    let f = failure(run(dir.path(), None).await);
    assert_eq!(f.kind, FailureKind::Golden);
    assert!(f.message.contains("golden case 'one'"), "{}", f.message);
    assert_eq!(f.mapping().audit_action, "validation_failed");
    assert_eq!(f.mapping().label, "golden");
    assert_eq!(Error::from(f).kind.mapping().http_status, 400);
}

#[tokio::test]
async fn the_deployer_audits_a_golden_failure_as_validation_failed() {
    let dir = repository(Some([0.0, 0.0]));
    let log = dir.path().join("audit.jsonl");
    let audit = Audit::open(Some(&log)).unwrap();
    let deployer = Deployer::new(LoadSettings::default(), audit, Arc::new(MockBackend { fail: None }));
    let repo = Repository::new(dir.path());
    let e = deployer.load(&repo, "m", None, &Actor::Startup).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(deployer.registry().get("m").is_none());
    let text = std::fs::read_to_string(&log).unwrap();
    let record: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(record["action"], "validation_failed");
    assert_eq!(record["actor"], "startup");
    assert_eq!(record["outcome"], "failed");

    // A build failure answers 500 and is audited as a failed load.
    let deployer = Deployer::new(
        LoadSettings::default(),
        Audit::default(),
        Arc::new(MockBackend {
            fail: Some(ErrorKind::Internal),
        }),
    );
    let e = deployer.load(&repo, "m", None, &Actor::Startup).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Internal);
}

#[tokio::test]
async fn load_failures_answer_500_for_the_server_and_400_for_the_repository() {
    use tower::ServiceExt;
    let cases = [
        (Some(ErrorKind::Internal), None, 500),
        (Some(ErrorKind::InvalidArgument), None, 400),
        (None, Some([0.0, 0.0]), 400),
        (None, Some([1.0, 2.0]), 200),
    ];
    for (fail, golden, status) in cases {
        let dir = repository(golden);
        let mut config = crate::Config::for_repository(dir.path());
        config.model_control_mode = crate::config::ControlMode::Explicit;
        let service = crate::Service::with_backend(&config, Arc::new(MockBackend { fail })).unwrap();
        let router = crate::http::router(service, 1 << 20, false);
        let request = axum::http::Request::post("/v2/repository/models/m/load")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{fail:?} {golden:?}");
    }
}

#[tokio::test]
async fn only_observers_that_ask_get_the_tensors() {
    use crate::service::observe::{Finished, Observer, Payload, notify};
    use std::sync::Mutex;

    type Seen = Arc<Mutex<Vec<(usize, Option<usize>)>>>;
    struct Probe(usize, bool, Seen);
    impl Observer for Probe {
        fn wants_payload(&self, _: &crate::registry::VersionHandle) -> bool {
            self.1
        }
        fn observe(&self, _: &Finished<'_>, payload: Option<Payload>) {
            self.2.lock().unwrap().push((self.0, payload.map(|p| p.inputs.len())));
        }
    }

    let dir = repository(None);
    let Outcome::Ready(handle, _) = run(dir.path(), None).await else {
        panic!("the mock version should load");
    };
    let seen: Seen = Arc::default();
    let wants = [false, true, false, true];
    let observers: Vec<Box<dyn Observer>> = wants
        .iter()
        .enumerate()
        .map(|(i, &w)| Box::new(Probe(i, w, seen.clone())) as Box<dyn Observer>)
        .collect();
    let wanted: Vec<bool> = observers.iter().map(|o| o.wants_payload(&handle)).collect();
    let result = Err(Error::invalid("refused"));
    let done = Finished {
        handle: &handle,
        protocol: crate::metrics::Protocol::Http,
        id: "r",
        label: None,
        elapsed: std::time::Duration::ZERO,
        result: &result,
        trace: None,
        parent: None,
        traffic: crate::metrics::Traffic::Production,
        group: None,
    };
    let inputs = vec![Tensor::zeros("IN", DataType::Fp32, vec![1, 2])];
    notify(&observers, &wanted, &done, Some(inputs));
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(0, None), (1, Some(1)), (2, None), (3, Some(1))]
    );
}
