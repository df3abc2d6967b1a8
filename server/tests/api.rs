//! The KServe V2 / Triton API end to end through the client library.

mod common;

use common::{TestServer, models_dir, simple_inputs};
use switchyard_client::{Data, Encoding, InferOptions, Tensor};

fn datatype_inputs() -> Vec<Tensor> {
    let shape = vec![2, 4];
    let t = |name: &str, data: Data| Tensor::new(format!("IN_{name}"), shape.clone(), data);
    vec![
        t(
            "BOOL",
            Data::Bool(vec![true, false, true, true, false, false, true, false]),
        ),
        t("UINT8", Data::U8(vec![0, 1, 2, 255, 4, 5, 6, 7])),
        t("UINT16", Data::U16(vec![0, 1, 65535, 3, 4, 5, 6, 7])),
        t("UINT32", Data::U32(vec![0, 1, u32::MAX, 3, 4, 5, 6, 7])),
        t("UINT64", Data::U64(vec![0, 1, u64::MAX, 3, 4, 5, 6, 7])),
        t("INT8", Data::I8(vec![-128, 1, 127, 3, 4, 5, 6, -7])),
        t("INT16", Data::I16(vec![i16::MIN, 1, i16::MAX, 3, 4, 5, 6, -7])),
        t("INT32", Data::I32(vec![i32::MIN, 1, i32::MAX, 3, 4, 5, 6, -7])),
        t("INT64", Data::I64(vec![i64::MIN, 1, i64::MAX, 3, 4, 5, 6, -7])),
        t("FP16", Data::F16(vec![0x3c00, 0xc000, 0x7bff, 0, 1, 2, 3, 0x8000])),
        t("FP32", Data::F32(vec![0.5, -1.25, f32::MAX, 3.0, 4.0, 5.0, 6.0, -7.0])),
        t("FP64", Data::F64(vec![0.5, -1.25, f64::MAX, 3.0, 4.0, 5.0, 6.0, -7.0])),
        t("BF16", Data::Bf16(vec![0x3f80, 0xc000, 0x7f7f, 0, 1, 2, 3, 0x8000])),
        t(
            "BYTES",
            Data::Bytes(vec![
                b"".to_vec(),
                b"plain".to_vec(),
                vec![0, 255, 254],
                b"a\0b".to_vec(),
                "\u{e9}t\u{e9}".as_bytes().to_vec(),
                vec![0xff; 3],
                b"x".to_vec(),
                b"end".to_vec(),
            ]),
        ),
    ]
}

/// Every datatype, with BYTES elements JSON can carry (UTF-8).
fn utf8_datatype_inputs() -> Vec<Tensor> {
    datatype_inputs()
        .into_iter()
        .map(|mut t| {
            if let Data::Bytes(_) = t.data {
                t.data = Data::Bytes((0..8).map(|i| format!("s{i}\u{e9}").into_bytes()).collect());
            }
            t
        })
        .collect()
}

fn check_identity(inputs: &[Tensor], result: &switchyard_client::InferResult, skip_non_utf8: bool) {
    for input in inputs {
        let name = input.name.replace("IN_", "OUT_");
        let out = result.output(&name).unwrap_or_else(|| panic!("output {name}"));
        assert_eq!(out.shape, input.shape, "{name}");
        if skip_non_utf8 && matches!(input.data, Data::Bytes(_)) {
            continue;
        }
        assert_eq!(out.data, input.data, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_datatype_round_trips_on_every_transport() {
    let s = TestServer::start(&models_dir(), |_| {}).await;
    let all = datatype_inputs();
    let binary = InferOptions {
        input_encoding: Encoding::Binary,
        output_encoding: Encoding::Binary,
        ..Default::default()
    };
    let r = s.http.infer("datatypes", &all, &binary).await.unwrap();
    check_identity(&all, &r, false);
    let r = s.grpc.infer("datatypes", &all, &InferOptions::default()).await.unwrap();
    check_identity(&all, &r, false);

    // JSON cannot carry non-UTF-8 strings; the client sends FP16/BF16 binary
    // (their bits as they are). FP16/BF16 as JSON numbers: the next test.
    let json_inputs = utf8_datatype_inputs();
    let r = s
        .http
        .infer("datatypes", &json_inputs, &InferOptions::default())
        .await
        .unwrap();
    check_identity(&json_inputs, &r, false);

    // Typed gRPC contents cannot carry FP16/BF16, which this model requires, so the
    // typed path is covered on the `simple` model (bad_input.rs).
    s.stop().await;
}

/// A V2 JSON request body of `inputs`, with `data` as each tensor's elements.
fn json_body(inputs: &[Tensor], data: impl Fn(&Tensor) -> serde_json::Value) -> serde_json::Value {
    let inputs: Vec<serde_json::Value> = inputs
        .iter()
        .map(|t| serde_json::json!({ "name": t.name, "shape": t.shape, "datatype": t.datatype(), "data": data(t) }))
        .collect();
    serde_json::json!({ "inputs": inputs })
}

/// A hand-written JSON body (as KServe and MLServer clients send it) with all 14
/// datatypes as JSON numbers, booleans and strings, FP16 and BF16 included;
/// the response's JSON outputs carry FP16/BF16 as numbers too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fp16_and_bf16_travel_as_json_numbers() {
    let s = TestServer::start(&models_dir(), |_| {}).await;
    let inputs = utf8_datatype_inputs();
    let url = format!("http://{}/v2/models/datatypes/infer", s.server.http_addr);
    let http = reqwest::Client::new();
    let infer = |body: serde_json::Value| {
        let request = http.post(&url).json(&body);
        async move {
            let resp = request.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let v: serde_json::Value = resp.json().await.unwrap();
            v["outputs"].as_array().unwrap().clone()
        }
    };
    let output = |outputs: &[serde_json::Value], name: &str| -> Tensor {
        let out = outputs.iter().find(|o| o["name"] == name).unwrap();
        let datatype = out["datatype"].as_str().unwrap();
        Tensor::from_json(name, datatype, vec![2, 4], &out["data"]).unwrap()
    };

    let outputs = infer(json_body(&inputs, |t| t.data.to_json())).await;
    for t in &inputs {
        let back = output(&outputs, &t.name.replace("IN_", "OUT_"));
        assert_eq!(back.data, t.data, "{}", t.name);
    }
    let fp16 = outputs.iter().find(|o| o["name"] == "OUT_FP16").unwrap();
    assert_eq!(fp16["datatype"], "FP16");
    assert_eq!(
        (fp16["data"][0].as_f64(), fp16["data"][2].as_f64()),
        (Some(1.0), Some(65504.0))
    );

    // Numbers between two representable values round to the nearest one (ties to even).
    let outputs = infer(json_body(&inputs, |t| match t.datatype() {
        "FP16" => serde_json::json!([0.1, 1.0004882812509095, 65519, -65504.1, -0.0, 3.0, 1e-9, 2049]),
        "BF16" => serde_json::json!([0.1, 1.00390625, 1.0039062500009095, -3.39e38, -0.0, 3.0, 1e-50, 257]),
        _ => t.data.to_json(),
    }))
    .await;
    let fp16 = [0x2e66, 0x3c01, 0x7bff, 0xfbff, 0x8000, 0x4200, 0x0000, 0x6800];
    assert_eq!(output(&outputs, "OUT_FP16").data, Data::F16(fp16.to_vec()));
    let bf16 = [0x3dcd, 0x3f80, 0x3f81, 0xff7f, 0x8000, 0x4040, 0x0000, 0x4380];
    assert_eq!(output(&outputs, "OUT_BF16").data, Data::Bf16(bf16.to_vec()));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_config_statistics_and_versions() {
    let s = TestServer::start(&models_dir(), |_| {}).await;
    assert!(s.http.live().await.unwrap() && s.http.ready().await.unwrap());
    assert!(s.grpc.live().await.unwrap() && s.grpc.ready().await.unwrap());
    let meta = s.http.server_metadata().await.unwrap();
    for ext in [
        "binary_tensor_data",
        "statistics",
        "model_repository",
        "model_configuration",
    ] {
        assert!(meta["extensions"].as_array().unwrap().iter().any(|e| e == ext), "{ext}");
    }
    assert_eq!(s.grpc.server_metadata().await.unwrap().name, "switchyard");

    let m = s.http.model_metadata("simple", None).await.unwrap();
    assert_eq!(m["platform"], "onnxruntime_onnx");
    assert_eq!(m["versions"], serde_json::json!(["1", "2"]));
    assert_eq!(m["inputs"][0]["shape"], serde_json::json!([-1, 16]));
    assert_eq!(m["parameters"]["model_sha256"].as_str().unwrap().len(), 64);
    let gm = s.grpc.model_metadata("simple", Some("1")).await.unwrap();
    assert_eq!(gm.inputs[1].name, "INPUT1");
    assert_eq!(gm.inputs[1].datatype, "INT32");

    // Auto-completed config of a model without config.pbtxt.
    let c = s.grpc.model_config("datatypes", None).await.unwrap();
    assert_eq!(c.max_batch_size, 4);
    assert_eq!(c.platform, "onnxruntime_onnx");
    assert_eq!(c.input.len(), 14);
    let hc = s.http.model_config("simple", Some("2")).await.unwrap();
    assert_eq!(hc["max_batch_size"], 8);
    assert_eq!(hc["input"][0]["data_type"], "TYPE_INT32");
    assert_eq!(hc["instance_group"][0]["kind"], "KIND_CPU");

    assert!(s.http.model_ready("simple", Some("1")).await.unwrap());
    assert!(!s.http.model_ready("simple", Some("3")).await.unwrap());
    assert!(!s.grpc.model_ready("nope", None).await.unwrap());

    // Versions: explicit, and latest by default; id echoed; output subset.
    let a: Vec<i32> = (0..48).collect();
    let b = vec![1; 48];
    for version in ["1", "2"] {
        let opts = InferOptions {
            model_version: Some(version.into()),
            id: Some(format!("req-{version}")),
            outputs: vec!["OUTPUT1".into()],
            ..Default::default()
        };
        for r in [
            s.http.infer("simple", &simple_inputs(&a, &b), &opts).await.unwrap(),
            s.grpc.infer("simple", &simple_inputs(&a, &b), &opts).await.unwrap(),
        ] {
            assert_eq!(r.model_version, version);
            assert_eq!(r.id, format!("req-{version}"));
            assert_eq!(r.outputs.len(), 1);
            assert_eq!(r.outputs[0].shape, vec![3, 16]);
            assert_eq!(r.outputs[0].data, Data::I32(a.iter().map(|x| x - 1).collect()));
        }
    }
    let r = s
        .http
        .infer("simple", &simple_inputs(&a, &b), &InferOptions::default())
        .await
        .unwrap();
    assert_eq!(r.model_version, "2");

    // Statistics count what ran.
    let stats = s.grpc.statistics(Some("simple"), Some("1")).await.unwrap();
    let st = &stats.model_stats[0];
    assert_eq!(st.inference_count, 6, "two requests of 3 rows");
    assert_eq!(st.execution_count, 2);
    let inf = st.inference_stats.as_ref().unwrap();
    assert_eq!(inf.success.as_ref().unwrap().count, 2);
    assert!(inf.compute_infer.as_ref().unwrap().ns > 0);
    assert!(st.last_inference > 0);
    let hs = s.http.statistics(Some("simple"), None).await.unwrap();
    assert_eq!(hs["model_stats"].as_array().unwrap().len(), 2);
    let all = s.http.statistics(None, None).await.unwrap();
    assert!(all["model_stats"].as_array().unwrap().len() >= 4);

    let index = s.grpc.repository_index(true).await.unwrap();
    assert_eq!(index.models.iter().filter(|m| m.state == "READY").count(), 6);

    // Prometheus text on the metrics port.
    let metrics_client = switchyard_client::HttpClient::new(&format!("http://{}", s.server.metrics_addr)).unwrap();
    let (status, body) = metrics_client.get_raw("/metrics").await.unwrap();
    assert_eq!(status, 200);
    let metrics = String::from_utf8(body.to_vec()).unwrap();
    assert!(metrics.contains("switchyard_inference_requests_total{"), "{metrics}");
    assert!(
        metrics.contains("switchyard_request_duration_seconds_bucket{"),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_outputs_and_mixed_encodings() {
    let s = TestServer::start(&models_dir(), |_| {}).await;
    let features: Vec<f32> = (0..32).map(|i| i as f32 / 10.0).collect();
    let input = [Tensor::new("features", vec![2, 16], Data::F32(features))];
    let json = s
        .http
        .infer("classifier", &input, &InferOptions::default())
        .await
        .unwrap();
    let bin = s
        .http
        .infer(
            "classifier",
            &input,
            &InferOptions {
                input_encoding: Encoding::Binary,
                output_encoding: Encoding::Binary,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let grpc = s
        .grpc
        .infer("classifier", &input, &InferOptions::default())
        .await
        .unwrap();
    assert_eq!(bin.outputs, grpc.outputs, "binary HTTP and gRPC carry the same bytes");
    let (Data::F32(a), Data::F32(b)) = (&json.outputs[0].data, &bin.outputs[0].data) else {
        panic!("FP32 outputs")
    };
    assert_eq!(a.len(), 8);
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-6 * y.abs().max(1.0), "{x} vs {y}");
    }
    for row in b.chunks(4) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "softmax rows sum to 1");
    }
    s.stop().await;
}
