//! Where Triton's clients depend on Triton's exact behaviour: raw binary
//! requests, BYTES outputs that JSON cannot carry, duplicate requested
//! outputs, the wording clients look for, the extension endpoints answered
//! over HTTP, the nesting limit of `data`, and errors that are always JSON.

mod common;

use common::{TestServer, assert_still_serving, models_dir};
use serde_json::{Value, json};
use switchyard_client::{ClientError, proto};
use tonic::Code;

async fn post(s: &TestServer, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, Value) {
    let (status, _, body) = s.http.post_raw(path, headers, body).await.unwrap();
    let text = String::from_utf8_lossy(&body).to_string();
    let v = serde_json::from_slice(&body).unwrap_or_else(|_| panic!("{path}: a JSON body, got {status} {text}"));
    (status, v)
}

fn error(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("an {{\"error\"}} body, got {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_binary_requests_are_the_single_inputs_bytes() {
    let s = TestServer::start(&models_dir(), |_| {}).await;
    let hdr = [("Inference-Header-Content-Length", "0")];
    // classifier: one FP32 input of dims [16], batching; 16 floats are one row.
    let row: Vec<u8> = (0..16).flat_map(|i| (i as f32 * 0.1).to_le_bytes()).collect();
    let (status, v) = post(&s, "/v2/models/classifier/infer", &hdr, row.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["outputs"][0]["shape"], json!([1, 4]), "{v}");
    // The same row as JSON gives the same answer.
    let data: Vec<f32> = (0..16).map(|i| i as f32 * 0.1).collect();
    let body = json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 16], "data": data}]});
    let (_, j) = post(&s, "/v2/models/classifier/infer", &[], body.to_string().into_bytes()).await;
    assert_eq!(j["outputs"][0]["data"], v["outputs"][0]["data"]);
    // Bytes that are not a whole row, and a model with two inputs: clear 400s.
    let (status, v) = post(&s, "/v2/models/classifier/infer", &hdr, row[..10].to_vec()).await;
    assert_eq!(status, 400, "{v}");
    assert!(error(&v).contains("10 bytes do not fit dims [16]"), "{v}");
    let (status, v) = post(&s, "/v2/models/simple/infer", &hdr, vec![0; 128]).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        error(&v).contains("needs a model with one input; model 'simple' has 2"),
        "{v}"
    );
    assert_still_serving(&s).await;
}

/// A `datatypes` request whose `IN_BYTES` elements are `elements`, sent as binary data.
fn datatypes_request(elements: &[&[u8]], bytes_output_binary: bool) -> (Vec<u8>, String) {
    let mut inputs = Vec::new();
    for t in [
        "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64",
        "BF16",
    ] {
        let zero = if t == "BOOL" { json!(false) } else { json!(0) };
        inputs.push(json!({"name": format!("IN_{t}"), "datatype": t, "shape": [1, 4], "data": vec![zero; 4]}));
    }
    let mut raw = Vec::new();
    for e in elements {
        raw.extend_from_slice(&(e.len() as u32).to_le_bytes());
        raw.extend_from_slice(e);
    }
    inputs.push(json!({"name": "IN_BYTES", "datatype": "BYTES", "shape": [1, 4],
        "parameters": {"binary_data_size": raw.len()}}));
    let outputs = json!([{"name": "OUT_BYTES", "parameters": {"binary_data": bytes_output_binary}}]);
    let header = json!({"inputs": inputs, "outputs": outputs}).to_string();
    let len = header.len().to_string();
    let mut body = header.into_bytes();
    body.extend_from_slice(&raw);
    (body, len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_outputs_that_are_not_utf8_are_never_altered() {
    let s = TestServer::start(&models_dir(), |_| {}).await;
    let path = "/v2/models/datatypes/infer";
    let elements: [&[u8]; 4] = [b"ok", b"\xff\xfe", b"", "é".as_bytes()];
    let (body, len) = datatypes_request(&elements, false);
    let (status, v) = post(&s, path, &[("Inference-Header-Content-Length", &len)], body).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        error(&v).contains("output 'OUT_BYTES': BYTES element 1 is not valid UTF-8"),
        "{v}"
    );
    assert!(error(&v).contains("binary_data"), "{v}");
    // Asked for in binary form, the same bytes come back exactly.
    let (body, len) = datatypes_request(&elements, true);
    let (status, headers, out) = s
        .http
        .post_raw(path, &[("Inference-Header-Content-Length", &len)], body)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let n: usize = headers["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let expected: Vec<u8> = elements
        .iter()
        .flat_map(|e| [(e.len() as u32).to_le_bytes().to_vec(), e.to_vec()].concat())
        .collect();
    assert_eq!(&out[n..], &expected[..]);
    // Valid UTF-8 still comes back as JSON strings.
    let (body, len) = datatypes_request(&[b"a", b"b", b"", b"c"], false);
    let (status, v) = post(&s, path, &[("Inference-Header-Content-Length", &len)], body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["outputs"][0]["data"], json!(["a", "b", "", "c"]));
}

fn simple_json(outputs: Value) -> Vec<u8> {
    let input = |name: &str| json!({"name": name, "datatype": "INT32", "shape": [1, 16], "data": vec![1; 16]});
    json!({"inputs": [input("INPUT0"), input("INPUT1")], "outputs": outputs})
        .to_string()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_refused_with_the_words_tritons_clients_know() {
    let s = TestServer::start(&models_dir(), |_| {}).await;
    let twice = json!([{"name": "OUTPUT0"}, {"name": "OUTPUT0"}]);
    let (status, v) = post(&s, "/v2/models/simple/infer", &[], simple_json(twice)).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(error(&v), "output 'OUTPUT0' already exists in request");
    let tensor = |name: &str| proto::model_infer_request::InferInputTensor {
        name: name.into(),
        datatype: "INT32".into(),
        shape: vec![1, 16],
        ..Default::default()
    };
    let out = |name: &str| proto::model_infer_request::InferRequestedOutputTensor {
        name: name.into(),
        ..Default::default()
    };
    let request = proto::ModelInferRequest {
        model_name: "simple".into(),
        inputs: vec![tensor("INPUT0"), tensor("INPUT1")],
        outputs: vec![out("OUTPUT1"), out("OUTPUT1")],
        raw_input_contents: vec![vec![0u8; 64].into(), vec![0u8; 64].into()],
        ..Default::default()
    };
    match s.grpc.infer_raw(request.clone()).await {
        Err(ClientError::Grpc { code, message }) => {
            assert_eq!(code, Code::InvalidArgument);
            assert_eq!(message, "output 'OUTPUT1' already exists in request");
        }
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
    // Unknown models and versions: Triton's prefix, on both protocols.
    let (status, v) = post(&s, "/v2/models/nope/infer", &[], simple_json(json!([]))).await;
    assert_eq!(status, 404);
    assert_eq!(error(&v), "Request for unknown model: 'nope' is not found");
    let (status, v) = post(&s, "/v2/models/simple/versions/9/infer", &[], simple_json(json!([]))).await;
    assert_eq!(status, 404);
    assert!(
        error(&v).starts_with("Request for unknown model: 'simple' version 9"),
        "{v}"
    );
    let mut unknown = request;
    unknown.model_name = "nope".into();
    unknown.outputs.clear();
    match s.grpc.infer_raw(unknown).await {
        Err(ClientError::Grpc { code, message }) => {
            assert_eq!(code, Code::NotFound);
            assert!(message.starts_with("Request for unknown model: 'nope'"), "{message}");
        }
        other => panic!("expected NOT_FOUND, got {other:?}"),
    }
    // `data` nested deeper than 100 arrays.
    let deep = format!("{}1{}", "[".repeat(101), "]".repeat(101));
    let body =
        format!(r#"{{"inputs": [{{"name": "features", "datatype": "FP32", "shape": [1, 16], "data": {deep}}}]}}"#);
    let (status, v) = post(&s, "/v2/models/classifier/infer", &[], body.into_bytes()).await;
    assert_eq!(status, 400, "{v}");
    assert!(error(&v).contains("nested more than 100 deep"), "{v}");
    assert_still_serving(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_endpoints_answer_over_http_as_over_grpc() {
    let s = TestServer::start(&models_dir(), |c| c.http_max_body_bytes = 16 << 10).await;
    for kind in ["systemsharedmemory", "cudasharedmemory"] {
        let (status, body) = s.http.get_raw(&format!("/v2/{kind}/status")).await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"[]"[..]), "{kind}");
        let (status, v) = post(&s, &format!("/v2/{kind}/unregister"), &[], Vec::new()).await;
        assert_eq!((status, v), (200, json!({})));
        let register = json!({"key": "k", "offset": 0, "byte_size": 64})
            .to_string()
            .into_bytes();
        let (status, v) = post(&s, &format!("/v2/{kind}/region/r/register"), &[], register).await;
        assert_eq!(status, 501, "{v}");
        assert!(error(&v).contains("shared memory is not supported"), "{v}");
    }
    for path in ["/v2/trace/setting", "/v2/models/simple/trace/setting", "/v2/logging"] {
        let (status, body) = s.http.get_raw(path).await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"{}"[..]), "{path}");
        let (status, v) = post(&s, path, &[], b"{}".to_vec()).await;
        assert_eq!((status, v), (200, json!({})), "{path}");
        let change = br#"{"trace_level": ["TIMESTAMPS"], "log_verbose_level": 1}"#.to_vec();
        let (status, v) = post(&s, path, &[], change).await;
        assert_eq!(status, 501, "{v}");
        assert!(error(&v).contains("cannot be changed at run time"), "{v}");
    }
    // Errors are JSON on every endpoint: an oversized repository index
    // request, a method an endpoint does not take.
    let (status, v) = post(&s, "/v2/repository/index", &[], vec![b' '; 20 << 10]).await;
    assert_eq!(status, 413, "{v}");
    assert!(error(&v).contains("larger than the limit"), "{v}");
    let (status, body) = s.http.get_raw("/v2/models/simple/infer").await.unwrap();
    assert_eq!(status, 405);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(error(&v).contains("does not accept this method"), "{v}");
    assert_still_serving(&s).await;
}
