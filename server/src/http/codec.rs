//! HTTP inference bodies: the KServe V2 request and response JSON and
//! Triton's binary tensor data extension, in both directions. Tensor `data`
//! in JSON is read and written by [`crate::tensor::json`] (its BYTES rule
//! applies); binary data is sliced out of the body without copying.

use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::metrics::Protocol;
use crate::service::{InferRequest, InferResponse, Param};
use crate::tensor::{
    DataType, Tensor, TensorData, bound_message, decode_bytes_elements, echo, echo_shape, element_count, json,
};

#[derive(Deserialize)]
struct RequestJson<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(borrow)]
    inputs: Vec<InputJson<'a>>,
    #[serde(default)]
    outputs: Option<Vec<OutputJson>>,
}

#[derive(Deserialize)]
struct InputJson<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// A decoded HTTP inference request and how its response is to be encoded.
#[derive(Debug)]
pub struct DecodedRequest {
    /// The request for the service.
    pub request: InferRequest,
    /// How to encode the response.
    pub format: OutputFormat,
}

/// Which outputs go back in binary form.
#[derive(Debug, Default)]
pub struct OutputFormat {
    /// Outputs the client asked for in binary form (by name), or all when
    /// `all_binary`.
    pub binary_outputs: Vec<String>,
    /// `binary_data_output: true` at request level.
    pub all_binary: bool,
    /// Outputs that asked explicitly for JSON.
    pub json_outputs: Vec<String>,
}

/// Decodes a request body. `header_len` is `Inference-Header-Content-Length`
/// when present: the JSON is the first `header_len` bytes and binary tensor
/// data follows.
pub fn decode_request(
    body: Bytes,
    header_len: Option<usize>,
    model: &str,
    version: Option<&str>,
    max_elements: usize,
    received: Instant,
) -> Result<DecodedRequest> {
    if header_len == Some(0) {
        return Ok(raw_request(body, model, version, received));
    }
    let json_len = match header_len {
        Some(n) if n > body.len() => {
            return Err(Error::invalid(format!(
                "Inference-Header-Content-Length {n} is larger than the request body ({} bytes)",
                body.len()
            )));
        }
        Some(n) => n,
        None => body.len(),
    };
    let binary = body.slice(json_len..);
    let parsed: RequestJson<'_> = serde_json::from_slice(&body[..json_len])
        .map_err(|e| Error::invalid(bound_message(format!("malformed inference request JSON: {e}"))))?;
    let mut offset = 0usize;
    let mut inputs = Vec::with_capacity(parsed.inputs.len());
    for input in &parsed.inputs {
        let name = echo(&input.name);
        let datatype = DataType::parse(&input.datatype).map_err(|e| Error::invalid(format!("input '{name}': {e}")))?;
        let count = element_count(&input.shape, max_elements)
            .map_err(|e| Error::new(e.kind, format!("input '{name}': {}", e.message)))?;
        let binary_size = match input.parameters.as_ref().and_then(|p| p.get("binary_data_size")) {
            None => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                Error::invalid(format!(
                    "input '{name}': parameter binary_data_size must be a non-negative integer"
                ))
            })? as usize),
        };
        let data = match (binary_size, input.data) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid(format!(
                    "input '{name}' has both 'data' and binary_data_size"
                )));
            }
            (Some(size), None) => {
                let end = offset.checked_add(size).filter(|&e| e <= binary.len()).ok_or_else(|| {
                    Error::invalid(format!(
                        "input '{name}': binary_data_size {size} goes past the end of the body ({} binary bytes, {} used before)",
                        binary.len(),
                        offset
                    ))
                })?;
                let chunk = binary.slice(offset..end);
                offset = end;
                match datatype.size() {
                    None => TensorData::Bytes(decode_bytes_elements(&chunk, count, &input.name)?),
                    Some(size) => {
                        if chunk.len() != count * size {
                            return Err(Error::invalid(format!(
                                "input '{name}': binary_data_size {} does not match shape {} of {} ({} bytes expected)",
                                chunk.len(),
                                echo_shape(&input.shape),
                                datatype.as_str(),
                                count * size
                            )));
                        }
                        TensorData::Fixed(chunk)
                    }
                }
            }
            (None, Some(raw)) => json::parse_data(raw, datatype, count, &name)?,
            (None, None) => {
                return Err(Error::invalid(format!(
                    "input '{name}' has neither 'data' nor binary_data_size"
                )));
            }
        };
        inputs.push(Tensor {
            name: input.name.clone(),
            datatype,
            shape: input.shape.clone(),
            data,
        });
    }
    if offset != binary.len() {
        return Err(Error::invalid(format!(
            "the body has {} bytes of binary tensor data but the inputs declare {offset}",
            binary.len()
        )));
    }
    let parameters = convert_params(parsed.parameters.as_ref())?;
    let all_binary = flag(parsed.parameters.as_ref(), "binary_data_output")?.unwrap_or(false);
    let outputs_parameters = parsed.outputs.iter().flatten().filter_map(|o| o.parameters.as_ref());
    crate::service::check_extensions(
        parameters.iter().map(|(k, _)| k.as_str()),
        outputs_parameters.flat_map(|p| p.keys()).map(String::as_str),
    )?;
    let mut outputs = Vec::new();
    let mut binary_outputs = Vec::new();
    let mut json_outputs = Vec::new();
    for o in parsed.outputs.unwrap_or_default() {
        match flag(o.parameters.as_ref(), "binary_data")? {
            Some(true) => binary_outputs.push(o.name.clone()),
            Some(false) => json_outputs.push(o.name.clone()),
            None => {}
        }
        outputs.push(o.name);
    }
    Ok(DecodedRequest {
        request: InferRequest {
            model: model.to_string(),
            version: version.map(str::to_string),
            id: parsed.id.unwrap_or_default(),
            inputs,
            outputs,
            parameters,
            protocol: Protocol::Http,
            received,
            trace: None,
            traffic: crate::service::Traffic::Production,
            headers: None,
            raw_input: None,
        },
        format: OutputFormat {
            binary_outputs,
            all_binary,
            json_outputs,
        },
    })
}

/// Triton's raw binary request: no JSON, the body is the only input's data;
/// the outputs are all returned, as JSON.
fn raw_request(body: Bytes, model: &str, version: Option<&str>, received: Instant) -> DecodedRequest {
    DecodedRequest {
        request: InferRequest {
            model: model.to_string(),
            version: version.map(str::to_string),
            id: String::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            parameters: Vec::new(),
            protocol: Protocol::Http,
            received,
            trace: None,
            traffic: crate::service::Traffic::Production,
            headers: None,
            raw_input: Some(body),
        },
        format: OutputFormat::default(),
    }
}

fn flag(params: Option<&Map<String, Value>>, key: &str) -> Result<Option<bool>> {
    match params.and_then(|p| p.get(key)) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Error::invalid(format!("parameter '{}' must be a boolean", echo(key)))),
    }
}

fn convert_params(params: Option<&Map<String, Value>>) -> Result<Vec<(String, Param)>> {
    let Some(params) = params else {
        return Ok(Vec::new());
    };
    params
        .iter()
        .map(|(k, v)| {
            let p = match v {
                Value::Bool(b) => Param::Bool(*b),
                Value::String(s) => Param::Str(s.clone()),
                Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                    (Some(i), _, _) => Param::Int(i),
                    (_, Some(u), _) => Param::Uint(u),
                    (_, _, Some(f)) => Param::Double(f),
                    _ => {
                        return Err(Error::invalid(format!("parameter '{}' is not a valid number", echo(k))));
                    }
                },
                _ => {
                    return Err(Error::invalid(format!(
                        "parameter '{}' must be a string, number or boolean",
                        echo(k)
                    )));
                }
            };
            Ok((k.clone(), p))
        })
        .collect()
}

#[derive(Serialize)]
struct ResponseJson<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    id: &'a str,
    outputs: Vec<OutputOut<'a>>,
}

#[derive(Serialize)]
struct OutputOut<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinaryParams>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<json::Data<'a>>,
}

#[derive(Serialize)]
struct BinaryParams {
    binary_data_size: usize,
}

/// An encoded response body and, when it carries binary data, the length of its JSON header.
#[derive(Debug)]
pub struct EncodedResponse {
    /// Body bytes.
    pub body: Bytes,
    /// `Inference-Header-Content-Length`, when binary data follows the JSON.
    pub header_len: Option<usize>,
}

/// Encodes a response, sending outputs in binary form where the request asked for it.
pub fn encode_response(resp: &InferResponse, decoded: &OutputFormat) -> Result<EncodedResponse> {
    let binary = |name: &str| {
        if decoded.binary_outputs.iter().any(|n| n == name) {
            true
        } else if decoded.json_outputs.iter().any(|n| n == name) {
            false
        } else {
            decoded.all_binary
        }
    };
    let mut binary_parts = Vec::new();
    let outputs = resp
        .outputs
        .iter()
        .map(|t| {
            if binary(&t.name) {
                let raw = t.to_raw();
                let size = raw.len();
                binary_parts.push(raw);
                Ok(OutputOut {
                    name: &t.name,
                    datatype: t.datatype.as_str(),
                    shape: &t.shape,
                    parameters: Some(BinaryParams { binary_data_size: size }),
                    data: None,
                })
            } else {
                if let Some(i) = json::invalid_utf8_element(t) {
                    // Triton's rule: JSON would have to change the bytes, so refuse.
                    return Err(Error::invalid(format!(
                        "output '{}': BYTES element {i} is not valid UTF-8 and cannot be returned as JSON \
                         without changing it; request the output as binary data (output parameter \
                         \"binary_data\": true)",
                        echo(&t.name)
                    )));
                }
                Ok(OutputOut {
                    name: &t.name,
                    datatype: t.datatype.as_str(),
                    shape: &t.shape,
                    parameters: None,
                    data: Some(json::Data(t)),
                })
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let json = ResponseJson {
        model_name: &resp.model,
        model_version: &resp.version,
        id: &resp.id,
        outputs,
    };
    let binary_len: usize = binary_parts.iter().map(Bytes::len).sum();
    let mut buf = BytesMut::with_capacity(256 + binary_len).writer();
    serde_json::to_writer(&mut buf, &json).map_err(|e| Error::internal(format!("encoding response: {e}")))?;
    let mut buf = buf.into_inner();
    if binary_parts.is_empty() {
        return Ok(EncodedResponse {
            body: buf.freeze(),
            header_len: None,
        });
    }
    let header_len = buf.len();
    for part in binary_parts {
        buf.put_slice(&part);
    }
    Ok(EncodedResponse {
        body: buf.freeze(),
        header_len: Some(header_len),
    })
}

#[cfg(test)]
mod tests {
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
        let nested =
            decode(r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[[1,2],[3,4]]}]}"#).unwrap();
        assert_eq!(fixed(&flat.request.inputs[0]), fixed(&nested.request.inputs[0]));
        assert_eq!(fixed(&flat.request.inputs[0])[4..8], 2i32.to_le_bytes());
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
}
