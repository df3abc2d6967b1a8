use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::AtomicUsize;

use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use switchyard_proto::inference::ModelParameter;

use super::*;
use crate::tensor::{DataType, TensorData};

const WAIT: Duration = Duration::from_secs(30);

fn f32_tensor(name: &str, values: &[f32]) -> Tensor {
    Tensor {
        name: name.into(),
        datatype: DataType::Fp32,
        shape: vec![1, values.len() as i64],
        data: TensorData::Fixed(values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into()),
    }
}

fn bytes_tensor(name: &str, elements: &[&[u8]]) -> Tensor {
    Tensor {
        name: name.into(),
        datatype: DataType::Bytes,
        shape: vec![elements.len() as i64],
        data: TensorData::Bytes(elements.iter().map(|e| Bytes::copy_from_slice(e)).collect()),
    }
}

fn record(id: &str) -> PredictionRecord {
    PredictionRecord {
        time: SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
        id: id.into(),
        model: "m".into(),
        version: "1".into(),
        label: None,
        protocol: Protocol::Http,
        outcome: Ok(()),
        latency: Duration::from_micros(1234),
        inputs: vec![f32_tensor("x", &[1.0, 2.5])],
        outputs: vec![f32_tensor("y", &[3.5])],
        trace_id: None,
        traffic: crate::metrics::Traffic::Production,
        fairness: None,
    }
}

fn file_settings(dir: &std::path::Path) -> PredictionLogSettings {
    PredictionLogSettings {
        dir: Some(dir.to_path_buf()),
        ..PredictionLogSettings::default()
    }
}

fn read_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn all() -> ModelLogPolicy {
    ModelLogPolicy::default()
}

#[test]
fn records_round_trip_through_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = PredictionLog::start(file_settings(dir.path())).unwrap();

    // 1: success, with a hashed, a dropped and a non-UTF-8 input.
    let policy = ModelLogPolicy {
        drop_inputs: vec!["pin".into()],
        hash_inputs: vec!["email".into()],
        ..all()
    };
    let mut r = record("req-1");
    r.label = Some("stable".into());
    r.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
    r.inputs.push(bytes_tensor("email", &[b"a@b.c"]));
    r.inputs.push(bytes_tensor("pin", &[b"1234"]));
    r.inputs.push(bytes_tensor("blob", &[b"text", &[0xff, 0x00, 0x01]]));
    r.inputs.push(Tensor {
        name: "h".into(),
        datatype: DataType::Fp16,
        shape: vec![2],
        data: TensorData::Fixed(
            [half::f16::from_f32(0.5), half::f16::from_f32(-2.0)]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        ),
    });
    log.submit(&policy, r);

    // 2: failure, on gRPC, with an empty id.
    let mut r = record("");
    r.protocol = Protocol::Grpc;
    r.outcome = Err((ErrorKind::InvalidArgument, "bad shape".into()));
    r.outputs.clear();
    log.submit(&all(), r);

    // 3: payloads off.
    let quiet = ModelLogPolicy {
        payloads: false,
        ..all()
    };
    log.submit(&quiet, record("req-3"));

    assert!(log.flush(WAIT));
    assert_eq!((log.written(), log.dropped()), (3, 0));
    let lines = read_lines(&dir.path().join(file::CURRENT));
    assert_eq!(lines.len(), 3);

    let l = &lines[0];
    assert_eq!(l["time"], "2023-11-14T22:13:20.123456Z");
    assert_eq!(l["id"], "req-1");
    assert_eq!(l["model"], "m");
    assert_eq!(l["version"], "1");
    assert_eq!(l["label"], "stable");
    assert_eq!(l["protocol"], "http");
    assert_eq!(l["outcome"], "success");
    assert!(l.get("error").is_none());
    assert_eq!(l["latency_us"], 1234);
    assert_eq!(l["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    let inputs = l["inputs"].as_array().unwrap();
    let names: Vec<&str> = inputs.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["x", "email", "blob", "h"], "pin is dropped");
    assert_eq!(
        inputs[0],
        json!({"name":"x","datatype":"FP32","shape":[1,2],"data":[1.0,2.5]})
    );
    let mut h = Sha256::new();
    h.update(5u32.to_le_bytes());
    h.update(b"a@b.c");
    let expected = crate::util::hex(&h.finalize());
    assert_eq!(
        inputs[1],
        json!({"name":"email","datatype":"BYTES","shape":[1],"sha256":expected})
    );
    assert_eq!(inputs[2]["data"], json!(["text", "\u{fffd}\u{0}\u{1}"]));
    assert_eq!(inputs[3]["data"], json!([0.5, -2.0]));
    assert_eq!(
        l["outputs"],
        json!([{"name":"y","datatype":"FP32","shape":[1,1],"data":[3.5]}])
    );

    let l = &lines[1];
    assert_eq!(l["protocol"], "grpc");
    assert_eq!(l["outcome"], "invalid_argument");
    assert_eq!(l["error"], "bad shape");
    assert_eq!(l["label"], Value::Null);
    assert!(l.get("trace_id").is_none());
    let id = l["id"].as_str().unwrap();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "generated id {id}"
    );
    assert_eq!(l["outputs"], json!([]));

    let l = &lines[2];
    assert_eq!(l["inputs"], json!([{"name":"x","datatype":"FP32","shape":[1,2]}]));
    assert_eq!(l["outputs"], json!([{"name":"y","datatype":"FP32","shape":[1,1]}]));
}

#[test]
fn fairness_rows_are_written_once_per_successful_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = PredictionLog::start(file_settings(dir.path())).unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let fairness = super::Fairness(Arc::new(move |outputs: &[Tensor], inputs: &[Tensor]| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert_eq!((outputs[0].name.as_str(), inputs[0].name.as_str()), ("y", "x"));
        vec![super::RowFairness {
            group: Some("b".into()),
            favourable: Some(true),
        }]
    }));
    let mut r = record("ok");
    r.fairness = Some(fairness.clone());
    // The group is what the server decided: kept with payloads off.
    let quiet = ModelLogPolicy {
        payloads: false,
        ..all()
    };
    log.submit(&quiet, r);
    let mut r = record("failed");
    r.outcome = Err((ErrorKind::Internal, "boom".into()));
    r.fairness = Some(fairness);
    log.submit(&all(), r);
    assert!(log.flush(WAIT));
    let lines = read_lines(&dir.path().join(file::CURRENT));
    assert_eq!(lines[0]["fairness"], json!([{"group": "b", "favourable": true}]));
    assert!(lines[1].get("fairness").is_none(), "{}", lines[1]);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn files_rotate_by_size_and_keep_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let log = PredictionLog::start(PredictionLogSettings {
        max_file_bytes: 600,
        max_files: 3,
        ..file_settings(dir.path())
    })
    .unwrap();
    let line_len = serde_json::to_vec(&json::RecordJson(&Job {
        record: record("rec-00"),
        payloads: true,
        drop_inputs: vec![],
        hash_inputs: vec![],
        fairness_rows: std::sync::OnceLock::new(),
    }))
    .unwrap()
    .len() as u64
        + 1;
    assert!(
        line_len * 2 <= 600 && line_len * 3 > 600,
        "two lines per file ({line_len} bytes each)"
    );
    for i in 0..20 {
        log.submit(&all(), record(&format!("rec-{i:02}")));
    }
    assert!(log.flush(WAIT));
    assert_eq!(log.written(), 20);

    let rotated = file::rotated_files(dir.path()).unwrap();
    assert_eq!(rotated.len(), 3, "retention keeps max_files rotated files");
    let mut ids = Vec::new();
    for path in rotated.iter().chain([&dir.path().join(file::CURRENT)]) {
        assert!(std::fs::metadata(path).unwrap().len() <= 600);
        ids.extend(read_lines(path).iter().map(|l| l["id"].as_str().unwrap().to_string()));
    }
    let expected: Vec<String> = (12..20).map(|i| format!("rec-{i:02}")).collect();
    assert_eq!(ids, expected, "the newest records survive, in order");
    let all_files = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(all_files, 4);
}

#[test]
fn an_unwritable_directory_counts_sink_errors_and_keeps_running() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("logs");
    let log = PredictionLog::start(file_settings(&dir)).unwrap();
    // The directory becomes a plain file: opening predictions.jsonl fails.
    std::fs::remove_dir(&dir).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    log.submit(&all(), record("a"));
    log.submit(&all(), record("b"));
    assert!(log.flush(WAIT));
    assert_eq!((log.written(), log.dropped()), (0, 2));
    // It recovers once the directory is back.
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    log.submit(&all(), record("c"));
    assert!(log.flush(WAIT));
    assert_eq!((log.written(), log.dropped()), (1, 2));
    assert_eq!(read_lines(&dir.join(file::CURRENT))[0]["id"], "c");
}

#[test]
fn sampling_follows_the_rate() {
    let dir = tempfile::tempdir().unwrap();
    let log = PredictionLog::start(file_settings(dir.path())).unwrap();
    let rate = |r: f64| ModelLogPolicy {
        sample_rate: r,
        ..all()
    };
    let count = |p: &ModelLogPolicy| (0..10_000).filter(|_| log.sample(p)).count();
    assert_eq!(count(&rate(0.0)), 0);
    assert_eq!(count(&rate(1.0)), 10_000);
    let half = count(&rate(0.5));
    assert!((4_000..=6_000).contains(&half), "{half} of 10000 at rate 0.5");
    let tenth = count(&rate(0.1));
    assert!((500..=1_500).contains(&tenth), "{tenth} of 10000 at rate 0.1");

    let off = PredictionLog::disabled();
    assert!(!off.sample(&rate(1.0)));
    off.submit(&all(), record("x"));
    assert!(off.flush(Duration::ZERO));
    assert_eq!((off.written(), off.dropped()), (0, 0));
    assert!(
        !PredictionLog::start(PredictionLogSettings::default())
            .unwrap()
            .is_enabled()
    );
}

#[test]
fn a_stalled_http_sink_never_blocks_submit() {
    // Accepts connections (through the backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let log = PredictionLog::start(PredictionLogSettings {
        url: Some(format!("http://{}/", silent.local_addr().unwrap())),
        queue_capacity: 1,
        http_retries: 0,
        ..PredictionLogSettings::default()
    })
    .unwrap();
    let started = Instant::now();
    for i in 0..10_000 {
        log.submit(&all(), record(&format!("r{i}")));
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "10k submits took {took:?}");
    // At most one record in flight and one queued; the rest are dropped.
    assert!(log.dropped() >= 9_998, "dropped {}", log.dropped());
    assert_eq!(log.written(), 0);
    assert!(!log.flush(Duration::from_millis(10)), "nothing can be delivered");
}

/// A CloudEvents receiver on its own thread and runtime; answers 500 to the
/// first `failures` requests.
struct EventReceiver {
    addr: SocketAddr,
    events: Arc<StdMutex<Vec<(HeaderMap, Bytes)>>>,
    hits: Arc<AtomicUsize>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl EventReceiver {
    fn start(failures: usize) -> EventReceiver {
        let events: Arc<StdMutex<Vec<(HeaderMap, Bytes)>>> = Arc::default();
        let hits = Arc::new(AtomicUsize::new(0));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ev, h) = (events.clone(), hits.clone());
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (ev, h) = (ev.clone(), h.clone());
                async move {
                    if h.fetch_add(1, Ordering::SeqCst) < failures {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    ev.lock().unwrap().push((headers, body));
                    StatusCode::OK
                }
            }),
        );
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        EventReceiver {
            addr,
            events,
            hits,
            _stop: stop,
        }
    }

    fn settings(&self, retries: u32) -> PredictionLogSettings {
        PredictionLogSettings {
            url: Some(format!("http://{}/", self.addr)),
            http_retries: retries,
            source: "http://test-host:8000/".into(),
            ..PredictionLogSettings::default()
        }
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_str()
        .unwrap()
}

#[test]
fn cloudevents_arrive_in_pairs_with_one_id() {
    let rx = EventReceiver::start(0);
    let log = PredictionLog::start(rx.settings(0)).unwrap();
    let policy = ModelLogPolicy {
        hash_inputs: vec!["x".into()],
        ..all()
    };
    let mut ok = record("req-7");
    ok.trace_id = Some("t1".into());
    log.submit(&policy, ok);
    let mut failed = record("req-8");
    failed.outcome = Err((ErrorKind::Timeout, "too slow".into()));
    failed.outputs.clear();
    failed.traffic = crate::metrics::Traffic::Shadow;
    log.submit(&all(), failed);
    assert!(log.flush(WAIT));
    assert_eq!((log.written(), log.dropped()), (2, 0));

    let events = rx.events.lock().unwrap();
    assert_eq!(events.len(), 4);
    let (req_h, req_b) = &events[0];
    let (resp_h, resp_b) = &events[1];
    for (h, ce_type) in [(req_h, http::REQUEST_TYPE), (resp_h, http::RESPONSE_TYPE)] {
        assert_eq!(header(h, "ce-specversion"), "1.0");
        assert_eq!(header(h, "ce-id"), "req-7");
        assert_eq!(header(h, "ce-type"), ce_type);
        assert_eq!(header(h, "ce-source"), "http://test-host:8000/");
        assert_eq!(header(h, "ce-time"), "2023-11-14T22:13:20.123456Z");
        assert_eq!(header(h, "ce-inferenceservicename"), "m");
        assert_eq!(header(h, "ce-modelversion"), "1");
        assert_eq!(header(h, "ce-component"), "predictor");
        assert_eq!(header(h, "ce-traceid"), "t1");
        assert_eq!(header(h, "content-type"), "application/json");
        assert!(h.get("ce-traffic").is_none(), "production events carry no ce-traffic");
    }
    let req: Value = serde_json::from_slice(req_b).unwrap();
    assert_eq!(req["id"], "req-7");
    assert_eq!(req["inputs"][0]["name"], "x");
    assert!(
        req["inputs"][0]["sha256"].is_string(),
        "privacy applies to CloudEvents too"
    );
    let resp: Value = serde_json::from_slice(resp_b).unwrap();
    assert_eq!(
        resp,
        json!({"model_name":"m","model_version":"1","id":"req-7",
               "outputs":[{"name":"y","datatype":"FP32","shape":[1,1],"data":[3.5]}]})
    );

    let (h, body) = &events[2];
    assert_eq!(header(h, "ce-id"), "req-8");
    assert_eq!(header(h, "ce-type"), http::REQUEST_TYPE);
    assert_eq!(
        serde_json::from_slice::<Value>(body).unwrap()["inputs"][0]["data"],
        json!([1.0, 2.5])
    );
    let (h, body) = &events[3];
    assert_eq!(header(h, "ce-id"), "req-8");
    assert_eq!(header(h, "ce-type"), http::RESPONSE_TYPE);
    assert_eq!(header(h, "ce-outcome"), "timeout");
    assert_eq!(header(h, "ce-traffic"), "shadow", "a mirrored request's events say so");
    assert_eq!(
        serde_json::from_slice::<Value>(body).unwrap(),
        json!({"error":"too slow"})
    );
}

#[test]
fn server_errors_are_retried() {
    let rx = EventReceiver::start(2);
    let log = PredictionLog::start(rx.settings(3)).unwrap();
    log.submit(&all(), record("r"));
    assert!(log.flush(WAIT));
    assert_eq!((log.written(), log.dropped()), (1, 0));
    assert_eq!(rx.hits.load(Ordering::SeqCst), 4, "2 failures + request + response");
    let events = rx.events.lock().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(header(&events[0].0, "ce-type"), http::REQUEST_TYPE);
    assert_eq!(header(&events[1].0, "ce-type"), http::RESPONSE_TYPE);
}

#[test]
fn exhausted_retries_drop_the_record() {
    let rx = EventReceiver::start(usize::MAX);
    let log = PredictionLog::start(rx.settings(1)).unwrap();
    log.submit(&all(), record("r"));
    assert!(log.flush(WAIT));
    assert_eq!((log.written(), log.dropped()), (0, 1));
    assert_eq!(
        rx.hits.load(Ordering::SeqCst),
        2,
        "one try + one retry; no response event"
    );
}

#[test]
fn http_sink_needs_an_http_or_https_url() {
    for url in ["ftp://example.com/", "not a url"] {
        let settings = PredictionLogSettings {
            url: Some(url.into()),
            ..PredictionLogSettings::default()
        };
        assert!(PredictionLog::start(settings).is_err(), "{url}");
    }
}

fn config(params: &[(&str, &str)]) -> ModelConfig {
    ModelConfig {
        parameters: params
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    ModelParameter {
                        string_value: v.to_string(),
                    },
                )
            })
            .collect::<HashMap<_, _>>(),
        ..ModelConfig::default()
    }
}

#[test]
fn policy_from_config() {
    assert_eq!(ModelLogPolicy::from_config(&config(&[])), Ok(None));
    assert_eq!(ModelLogPolicy::from_config(&config(&[("other", "1")])), Ok(None));
    assert_eq!(
        ModelLogPolicy::from_config(&config(&[("prediction_log.payloads", "true")])),
        Ok(Some(ModelLogPolicy::default()))
    );
    assert_eq!(
        ModelLogPolicy::from_config(&config(&[
            ("prediction_log.sample_rate", "0.25"),
            ("prediction_log.payloads", "False"),
            ("prediction_log.drop_inputs", " a, b ,,a"),
            ("prediction_log.hash_inputs", "c"),
        ])),
        Ok(Some(ModelLogPolicy {
            sample_rate: 0.25,
            payloads: false,
            drop_inputs: vec!["a".into(), "b".into()],
            hash_inputs: vec!["c".into()],
        }))
    );
    assert_eq!(
        ModelLogPolicy::from_config(&config(&[("prediction_log.sample_rate", "0")])).map(|p| p.map(|p| p.sample_rate)),
        Ok(Some(0.0))
    );
    for bad in ["1.5", "-0.1", "NaN", "half", ""] {
        let err = ModelLogPolicy::from_config(&config(&[("prediction_log.sample_rate", bad)])).unwrap_err();
        assert!(err.contains("prediction_log.sample_rate"), "{err}");
    }
    let err = ModelLogPolicy::from_config(&config(&[("prediction_log.payloads", "yes")])).unwrap_err();
    assert!(err.contains("'true' or 'false'"), "{err}");
    let err = ModelLogPolicy::from_config(&config(&[("prediction_log.sample", "1")])).unwrap_err();
    assert!(err.contains("unknown parameter prediction_log.sample"), "{err}");
    let err = ModelLogPolicy::from_config(&config(&[
        ("prediction_log.drop_inputs", "a"),
        ("prediction_log.hash_inputs", "a"),
    ]))
    .unwrap_err();
    assert!(err.contains("both"), "{err}");
}

#[test]
fn timestamps() {
    let at = |micros: u64| rfc3339_micros(SystemTime::UNIX_EPOCH + Duration::from_micros(micros));
    assert_eq!(at(0), "1970-01-01T00:00:00.000000Z");
    assert_eq!(at(951_782_400_000_001), "2000-02-29T00:00:00.000001Z");
    assert_eq!(at(4_102_444_799_999_999), "2099-12-31T23:59:59.999999Z");
    assert_eq!(rfc3339_micros(SystemTime::UNIX_EPOCH - Duration::from_secs(1)), at(0));
}
