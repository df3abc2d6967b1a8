//! The codec's unit tests: JSON and binary requests, FP16/BF16 numbers, responses.

use super::*;

fn decode(body: &str) -> Result<DecodedRequest> {
    decode_request(Bytes::from(body.to_string()), None, "m", None, 1 << 20, Instant::now())
}

fn fixed(t: &Tensor) -> &[u8] {
    match &t.data {
        TensorData::Fixed(b) => b,
        TensorData::Bytes(_) => panic!("not fixed"),
    }
}

#[test]
fn nested_and_flat_data_parse_to_the_same_bytes() {
    let flat = decode(r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[1,2,3,4]}]}"#).unwrap();
    let nested = decode(r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[[1,2],[3,4]]}]}"#).unwrap();
    assert_eq!(fixed(&flat.request.inputs[0]), fixed(&nested.request.inputs[0]));
    assert_eq!(fixed(&flat.request.inputs[0])[4..8], 2i32.to_le_bytes());
}

#[test]
fn data_read_in_one_pass_or_after_its_datatype_is_the_same() {
    // datatype and shape first (every client): one pass; data first: read as text, then parsed.
    let ahead = decode(
        r#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","parameters":{},"extra":[1],"data":[1.5,-2,3e2]}],"id":"a"}"#,
    )
    .unwrap();
    let behind =
        decode(r#"{"id":"a","inputs":[{"data":[1.5,-2,3e2],"name":"x","datatype":"FP32","shape":[3]}]}"#).unwrap();
    for d in [&ahead, &behind] {
        let t = &d.request.inputs[0];
        assert_eq!(
            (t.name.as_str(), t.shape.as_slice(), t.datatype),
            ("x", &[3i64][..], DataType::Fp32)
        );
        assert_eq!(d.request.id, "a");
    }
    let floats: Vec<u8> = [1.5f32, -2.0, 300.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(fixed(&ahead.request.inputs[0]), floats.as_slice());
    assert_eq!(fixed(&behind.request.inputs[0]), floats.as_slice());
    // What the one pass cannot read is read again to name the input and the fault.
    let e = decode(r#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,2]}]}"#).unwrap_err();
    assert!(
        e.message
            .contains("input 'x': 'data' has 2 elements but the shape holds 3"),
        "{}",
        e.message
    );
    let e = decode(r#"{"inputs":[{"name":"x","name":"y","shape":[1],"datatype":"FP32","data":[1]}]}"#).unwrap_err();
    assert!(e.message.contains("duplicate field `name`"), "{}", e.message);
}

#[test]
fn bad_json_data_is_rejected_with_a_reason() {
    let cases = [
        (
            r#"{"inputs":[{"name":"x","shape":[2],"datatype":"INT32","data":[1.5,2]}]}"#,
            "not an integer",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[2],"datatype":"INT8","data":[1,300]}]}"#,
            "out of range",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,2]}]}"#,
            "has 2 elements",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1,2]}]}"#,
            "more elements",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[NaN]}]}"#,
            "malformed",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":["a"]}]}"#,
            "found a string",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FLOAT","data":[1]}]}"#,
            "unknown datatype",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[4294967296,4294967296],"datatype":"FP32","data":[1]}]}"#,
            "overflows",
        ),
        (r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32"}]}"#, "neither"),
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"BOOL","data":[1]}]}"#,
            "found a number",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}"#,
            "malformed",
        ),
    ];
    for (body, expect) in cases {
        let e = decode(body).unwrap_err();
        assert!(e.message.contains(expect), "{body}: {e}");
    }
}

fn half_bits(body: &str) -> Vec<u16> {
    let d = decode(body).unwrap_or_else(|e| panic!("{body}: {e}"));
    fixed(&d.request.inputs[0])
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

fn half_request(datatype: &str, data: &str) -> String {
    let n = data.split(',').count();
    format!(r#"{{"inputs":[{{"name":"h","shape":[{n}],"datatype":"{datatype}","data":[{data}]}}]}}"#)
}

#[test]
fn fp16_and_bf16_json_numbers_round_to_nearest() {
    assert_eq!(
        half_bits(&half_request("FP16", "1, -2.5, 65504, 0.1, 1e6, -0.0, -1e-30, 6e-8")),
        [0x3c00, 0xc100, 0x7bff, 0x2e66, 0x7c00, 0x8000, 0x8000, 0x0001]
    );
    // Exactly between two FP16 values: ties to even. Just above (by 2^-40,
    // lost when rounding through f32 or from the top 32 bits of the f64): up.
    assert_eq!(
        half_bits(&half_request(
            "FP16",
            "1.00048828125, 1.0004882812509095, 1.0014648437500000"
        )),
        [0x3c00, 0x3c01, 0x3c02]
    );
    // Integers, also beyond 2^53: 2^63 + 2^55 is a BF16 tie, one more is not.
    assert_eq!(
        half_bits(&half_request("FP16", "2049, 2051, 65519, 65520, -65520")),
        [0x6800, 0x6802, 0x7bff, 0x7c00, 0xfc00]
    );
    assert_eq!(
        half_bits(&half_request(
            "BF16",
            "1, -2, 1.00390625, 1.0039062500009095, 9259400833873739776, 9259400833873739777, 3.4e38, 1e39"
        )),
        [0x3f80, 0xc000, 0x3f80, 0x3f81, 0x5f00, 0x5f01, 0x7f80, 0x7f80]
    );
    let nested = half_bits(r#"{"inputs":[{"name":"h","shape":[2,1],"datatype":"BF16","data":[[0.5],[2]]}]}"#);
    assert_eq!(nested, [0x3f00, 0x4000]);
    for (body, expect) in [
        (
            r#"{"inputs":[{"name":"h","shape":[1],"datatype":"FP16","data":[true]}]}"#,
            "found a boolean",
        ),
        (
            r#"{"inputs":[{"name":"h","shape":[1],"datatype":"BF16","data":["1"]}]}"#,
            "found a string",
        ),
        (
            r#"{"inputs":[{"name":"h","shape":[3],"datatype":"FP16","data":[1,2]}]}"#,
            "has 2 elements",
        ),
    ] {
        let e = decode(body).unwrap_err();
        assert!(e.message.contains(expect), "{body}: {e}");
    }
}

#[test]
fn every_finite_fp16_and_bf16_value_round_trips_through_json() {
    for (datatype, finite) in [
        (DataType::Fp16, (|b: u16| b & 0x7c00 != 0x7c00) as fn(u16) -> bool),
        (DataType::Bf16, |b: u16| b & 0x7f80 != 0x7f80),
    ] {
        let bits: Vec<u16> = (0..=u16::MAX).filter(|&b| finite(b)).collect();
        let raw: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        let t = Tensor {
            name: "h".into(),
            datatype,
            shape: vec![bits.len() as i64],
            data: TensorData::Fixed(Bytes::from(raw.clone())),
        };
        let resp = InferResponse {
            model: "m".into(),
            version: "1".into(),
            id: String::new(),
            outputs: vec![t],
            timings: Default::default(),
            trace: None,
        };
        let encoded = encode_response(&resp, &OutputFormat::default()).unwrap();
        let v: Value = serde_json::from_slice(&encoded.body).unwrap();
        let out = &v["outputs"][0];
        assert_eq!(out["datatype"], datatype.as_str());
        assert!(out["data"][1].is_number(), "{datatype:?} outputs are JSON numbers");
        // The response's output, sent back as a request's input, decodes to the same bits.
        let body = serde_json::to_vec(&serde_json::json!({ "inputs": [out] })).unwrap();
        let back = decode_request(Bytes::from(body), None, "m", None, 1 << 20, Instant::now()).unwrap();
        assert!(fixed(&back.request.inputs[0]) == raw.as_slice(), "{datatype:?}");
    }
}

#[test]
fn binary_sections_are_checked_against_the_header() {
    let json = r#"{"inputs":[{"name":"x","shape":[2],"datatype":"INT32","parameters":{"binary_data_size":8}}]}"#;
    let mut body = json.as_bytes().to_vec();
    body.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
    let ok = decode_request(
        Bytes::from(body.clone()),
        Some(json.len()),
        "m",
        None,
        1 << 20,
        Instant::now(),
    )
    .unwrap();
    assert_eq!(fixed(&ok.request.inputs[0]), &[1, 0, 0, 0, 2, 0, 0, 0]);
    let short = decode_request(
        Bytes::from(body[..body.len() - 1].to_vec()),
        Some(json.len()),
        "m",
        None,
        1 << 20,
        Instant::now(),
    );
    assert!(short.unwrap_err().message.contains("past the end"));
    let mut long = body.clone();
    long.push(0);
    let long = decode_request(Bytes::from(long), Some(json.len()), "m", None, 1 << 20, Instant::now());
    assert!(long.unwrap_err().message.contains("binary tensor data"));
    let beyond = decode_request(
        Bytes::from(body.clone()),
        Some(body.len() + 1),
        "m",
        None,
        1 << 20,
        Instant::now(),
    );
    assert!(beyond.unwrap_err().message.contains("larger than the request body"));
}

#[test]
fn responses_encode_json_and_binary() {
    let t = Tensor {
        name: "y".into(),
        datatype: DataType::Fp32,
        shape: vec![2],
        data: TensorData::Fixed(Bytes::from([1.5f32.to_le_bytes(), 2f32.to_le_bytes()].concat())),
    };
    let resp = InferResponse {
        model: "m".into(),
        version: "1".into(),
        id: "abc".into(),
        outputs: vec![t],
        timings: Default::default(),
        trace: None,
    };
    let mut d = OutputFormat::default();
    let e = encode_response(&resp, &d).unwrap();
    let v: Value = serde_json::from_slice(&e.body).unwrap();
    assert_eq!(v["outputs"][0]["data"], serde_json::json!([1.5, 2.0]));
    assert_eq!(v["id"], "abc");
    d.all_binary = true;
    let e = encode_response(&resp, &d).unwrap();
    let n = e.header_len.unwrap();
    let v: Value = serde_json::from_slice(&e.body[..n]).unwrap();
    assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 8);
    assert_eq!(e.body.len(), n + 8);
}
