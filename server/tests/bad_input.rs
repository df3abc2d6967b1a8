//! Every class of bad input gets a clear error with the right status, and the
//! server keeps serving afterwards.

mod common;

use common::{TestServer, assert_still_serving, models_dir, simple_inputs};
use serde_json::{Value, json};
use switchyard_client::{ClientError, Data, InferOptions, Tensor, proto};
use tonic::Code;

fn simple_body(input0: Value, input1: Value) -> Vec<u8> {
    json!({ "inputs": [input0, input1] }).to_string().into_bytes()
}

fn int_input(name: &str, shape: Value, data: Value) -> Value {
    json!({ "name": name, "shape": shape, "datatype": "INT32", "data": data })
}

fn ones() -> Value {
    json!(vec![1; 16])
}

async fn expect_http(s: &TestServer, path: &str, headers: &[(&str, &str)], body: Vec<u8>, status: u16, needle: &str) {
    let (got, _, body) = s.http.post_raw(path, headers, body).await.unwrap();
    let text = String::from_utf8_lossy(&body).to_string();
    assert_eq!(got, status, "{path}: {text}");
    let v: Value = serde_json::from_slice(&body).unwrap_or_else(|_| panic!("JSON error body, got {text}"));
    let msg = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{{\"error\": ...}} body, got {text}"));
    assert!(msg.contains(needle), "expected '{needle}' in '{msg}'");
    assert_still_serving(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bad_inputs_get_clear_errors() {
    let s = TestServer::start(&models_dir(), |c| {
        // Small enough that an over-limit body fits in the socket buffers: the
        // 413 is sent before the body is read, and the client must see it.
        c.http_max_body_bytes = 16 << 10;
        c.max_tensor_elements = 100_000;
    })
    .await;
    let infer = "/v2/models/simple/infer";
    let good0 = int_input("INPUT0", json!([1, 16]), ones());
    let good1 = int_input("INPUT1", json!([1, 16]), ones());

    expect_http(&s, infer, &[], b"{\"inputs\": [".to_vec(), 400, "malformed").await;
    expect_http(&s, infer, &[], b"not json".to_vec(), 400, "malformed").await;
    expect_http(&s, infer, &[], b"{\"inputs\": 3}".to_vec(), 400, "malformed").await;
    let wrong_type = json!({"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": ones()});
    expect_http(
        &s,
        infer,
        &[],
        simple_body(wrong_type, good1.clone()),
        400,
        "datatype FP32",
    )
    .await;
    let wrong_shape = int_input("INPUT0", json!([1, 15]), json!(vec![1; 15]));
    expect_http(
        &s,
        infer,
        &[],
        simple_body(wrong_shape, good1.clone()),
        400,
        "shape [1, 15]",
    )
    .await;
    let short = int_input("INPUT0", json!([1, 16]), json!(vec![1; 15]));
    expect_http(
        &s,
        infer,
        &[],
        simple_body(short, good1.clone()),
        400,
        "has 15 elements",
    )
    .await;
    let long = int_input("INPUT0", json!([1, 16]), json!(vec![1; 17]));
    expect_http(&s, infer, &[], simple_body(long, good1.clone()), 400, "more elements").await;
    let big_batch = int_input("INPUT0", json!([9, 16]), json!(vec![1; 144]));
    let big_batch1 = int_input("INPUT1", json!([9, 16]), json!(vec![1; 144]));
    expect_http(&s, infer, &[], simple_body(big_batch, big_batch1), 400, "batch size 9").await;
    let missing = json!({ "inputs": [good0.clone()] }).to_string().into_bytes();
    expect_http(&s, infer, &[], missing, 400, "'INPUT1' is missing").await;
    let unknown = json!({ "inputs": [good0.clone(), good1.clone(), int_input("EXTRA", json!([1, 16]), ones())] });
    expect_http(
        &s,
        infer,
        &[],
        unknown.to_string().into_bytes(),
        400,
        "unexpected inference input 'EXTRA'",
    )
    .await;
    let overflow = int_input("INPUT0", json!([4294967296u64, 4294967296u64]), json!([1]));
    expect_http(&s, infer, &[], simple_body(overflow, good1.clone()), 400, "overflows").await;
    let over_limit = int_input("INPUT0", json!([1000, 1000]), json!([1]));
    expect_http(&s, infer, &[], simple_body(over_limit, good1.clone()), 413, "limit").await;
    let fractional = int_input("INPUT0", json!([1, 16]), json!(vec![1.5; 16]));
    expect_http(
        &s,
        infer,
        &[],
        simple_body(fractional, good1.clone()),
        400,
        "not an integer",
    )
    .await;
    let nan = br#"{"inputs":[{"name":"INPUT0","shape":[1,16],"datatype":"INT32","data":[NaN]}]}"#.to_vec();
    expect_http(&s, infer, &[], nan, 400, "malformed").await;
    let infinity = br#"{"inputs":[{"name":"INPUT0","shape":[1,16],"datatype":"FP32","data":[Infinity]}]}"#.to_vec();
    expect_http(&s, infer, &[], infinity, 400, "malformed").await;
    expect_http(&s, infer, &[], vec![b' '; 20 << 10], 413, "larger than the limit").await;
    let body = simple_body(good0.clone(), good1.clone());
    expect_http(
        &s,
        "/v2/models/nope/infer",
        &[],
        body.clone(),
        404,
        "Request for unknown model: 'nope' is not found",
    )
    .await;
    expect_http(
        &s,
        "/v2/models/simple/versions/7/infer",
        &[],
        body.clone(),
        404,
        "version 7",
    )
    .await;
    let bad_output = json!({ "inputs": [good0.clone(), good1.clone()], "outputs": [{"name": "NOPE"}] });
    expect_http(
        &s,
        infer,
        &[],
        bad_output.to_string().into_bytes(),
        400,
        "unexpected inference output 'NOPE'",
    )
    .await;

    // Binary extension: sizes must add up exactly.
    let header = json!({ "inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": 64}},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": 64}},
    ]})
    .to_string();
    let with_binary = |extra: usize, cut: usize| {
        let mut b = header.clone().into_bytes();
        b.extend(std::iter::repeat_n(0u8, 128 + extra - cut));
        b
    };
    let len = header.len().to_string();
    let hdr = [
        ("Inference-Header-Content-Length", len.as_str()),
        ("Content-Type", "application/octet-stream"),
    ];
    expect_http(&s, infer, &hdr, with_binary(0, 1), 400, "past the end").await;
    expect_http(&s, infer, &hdr, with_binary(1, 0), 400, "binary tensor data").await;
    let beyond = (header.len() + 1000).to_string();
    let hdr_beyond = [("Inference-Header-Content-Length", beyond.as_str())];
    expect_http(
        &s,
        infer,
        &hdr_beyond,
        with_binary(0, 0),
        400,
        "larger than the request body",
    )
    .await;
    let (status, _, _) = s.http.post_raw(infer, &hdr, with_binary(0, 0)).await.unwrap();
    assert_eq!(status, 200, "the well-formed binary request succeeds");
    s.stop().await;
}

fn grpc_simple_request() -> proto::ModelInferRequest {
    let tensor = |name: &str| proto::model_infer_request::InferInputTensor {
        name: name.into(),
        datatype: "INT32".into(),
        shape: vec![1, 16],
        ..Default::default()
    };
    proto::ModelInferRequest {
        model_name: "simple".into(),
        inputs: vec![tensor("INPUT0"), tensor("INPUT1")],
        raw_input_contents: vec![vec![0u8; 64].into(), vec![0u8; 64].into()],
        ..Default::default()
    }
}

async fn expect_grpc(s: &TestServer, req: proto::ModelInferRequest, code: Code, needle: &str) {
    match s.grpc.infer_raw(req).await {
        Err(ClientError::Grpc { code: got, message }) => {
            assert_eq!(got, code, "{message}");
            assert!(message.contains(needle), "expected '{needle}' in '{message}'");
        }
        other => panic!("expected gRPC {code:?}, got {other:?}"),
    }
    assert_still_serving(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_bad_inputs_get_clear_errors() {
    let s = TestServer::start(&models_dir(), |c| {
        c.grpc_max_message_bytes = 1 << 20;
        c.max_tensor_elements = 100_000;
    })
    .await;
    s.grpc
        .infer_raw(grpc_simple_request())
        .await
        .expect("baseline request works");

    let mut r = grpc_simple_request();
    r.inputs[0].contents = Some(proto::InferTensorContents {
        int_contents: vec![1; 16],
        ..Default::default()
    });
    expect_grpc(&s, r, Code::InvalidArgument, "cannot both be used").await;

    let mut r = grpc_simple_request();
    r.raw_input_contents[0] = vec![0u8; 60].into();
    expect_grpc(&s, r, Code::InvalidArgument, "has 60 bytes").await;

    let mut r = grpc_simple_request();
    r.raw_input_contents.pop();
    expect_grpc(&s, r, Code::InvalidArgument, "raw_input_contents").await;

    let mut r = grpc_simple_request();
    r.inputs[0].shape = vec![1 << 32, 1 << 32];
    expect_grpc(&s, r, Code::InvalidArgument, "overflows").await;

    let mut r = grpc_simple_request();
    r.inputs[0].shape = vec![1000, 1000];
    expect_grpc(&s, r, Code::ResourceExhausted, "limit").await;

    let mut r = grpc_simple_request();
    r.inputs[0].datatype = "FP32".into();
    expect_grpc(&s, r, Code::InvalidArgument, "datatype").await;

    let mut r = grpc_simple_request();
    r.inputs[0].datatype = "FLOAT".into();
    expect_grpc(&s, r, Code::InvalidArgument, "unknown datatype").await;

    let mut r = grpc_simple_request();
    r.inputs[0].shape = vec![16];
    r.inputs[1].shape = vec![16];
    expect_grpc(&s, r, Code::InvalidArgument, "shape [16]").await;

    let mut r = grpc_simple_request();
    r.model_name = "nope".into();
    expect_grpc(&s, r, Code::NotFound, "unknown model").await;

    let mut r = grpc_simple_request();
    r.model_version = "9".into();
    expect_grpc(&s, r, Code::NotFound, "version 9").await;

    let mut r = grpc_simple_request();
    r.inputs[0].shape = vec![1, 16];
    r.raw_input_contents = vec![];
    r.inputs[0].contents = Some(proto::InferTensorContents {
        int_contents: vec![1; 15],
        ..Default::default()
    });
    r.inputs[1].contents = Some(proto::InferTensorContents {
        int_contents: vec![1; 16],
        ..Default::default()
    });
    expect_grpc(&s, r, Code::InvalidArgument, "hold 15").await;

    let mut r = grpc_simple_request();
    r.raw_input_contents = vec![vec![0u8; 2 << 20].into(), vec![0u8; 64].into()];
    expect_grpc(&s, r, Code::ResourceExhausted, "too large").await;

    // Typed FP16 does not exist in the protocol.
    let bad = Tensor::new("IN_FP16", vec![1, 4], Data::F16(vec![0; 4]));
    let e = s.grpc.infer_typed("datatypes", &[bad], &InferOptions::default()).await;
    assert!(e.is_err(), "FP16 cannot be sent typed");
    assert_still_serving(&s).await;

    let inputs = simple_inputs(&[1; 16], &[1; 16]);
    let r = s
        .grpc
        .infer_typed("simple", &inputs, &InferOptions::default())
        .await
        .unwrap();
    assert_eq!(r.output("OUTPUT0").unwrap().data, Data::I32(vec![2; 16]));
    s.stop().await;
}
