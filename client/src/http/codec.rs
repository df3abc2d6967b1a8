//! HTTP inference bodies: the JSON request and response of KServe V2 and
//! Triton's binary tensor data extension, as pure functions.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::tensor::JsonData;
use crate::{ClientError, Encoding, InferOptions, InferResult, Tensor};

/// Header carrying the length of the JSON part of a body with binary data.
pub const HEADER_LEN: &str = "inference-header-content-length";

/// An encoded request body.
#[derive(Debug)]
pub struct EncodedRequest {
    /// JSON, followed by the binary inputs in order.
    pub body: Vec<u8>,
    /// Length of the JSON part when binary data follows it.
    pub header_len: Option<usize>,
}

#[derive(Serialize)]
struct RequestJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    parameters: Map<String, Value>,
    inputs: Vec<InputJson<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    outputs: Vec<OutputJson<'a>>,
}

#[derive(Serialize)]
struct InputJson<'a> {
    name: &'a str,
    shape: &'a [i64],
    datatype: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonData<'a>>,
}

#[derive(Serialize, Deserialize)]
struct BinarySize {
    binary_data_size: usize,
}

#[derive(Serialize)]
struct OutputJson<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinaryData>,
}

#[derive(Serialize)]
struct BinaryData {
    binary_data: bool,
}

/// Encodes an inference request. Inputs go binary when `input_encoding` is
/// binary or when JSON cannot carry them exactly; binary outputs are asked for
/// with `binary_data_output` and, for each named output, `binary_data`.
pub fn encode_request(inputs: &[Tensor], opts: &InferOptions) -> Result<EncodedRequest, ClientError> {
    let binary_outputs = opts.output_encoding == Encoding::Binary;
    let mut parameters = opts.parameters.clone();
    if binary_outputs {
        parameters.insert("binary_data_output".into(), Value::Bool(true));
    }
    let mut raw_parts = Vec::new();
    let inputs = inputs
        .iter()
        .map(|t| {
            let binary = opts.input_encoding == Encoding::Binary || !t.data.json_exact();
            Ok(if binary {
                let raw = t.to_raw()?;
                let size = raw.len();
                raw_parts.push(raw);
                InputJson {
                    name: &t.name,
                    shape: &t.shape,
                    datatype: t.datatype(),
                    parameters: Some(BinarySize { binary_data_size: size }),
                    data: None,
                }
            } else {
                InputJson {
                    name: &t.name,
                    shape: &t.shape,
                    datatype: t.datatype(),
                    parameters: None,
                    data: Some(JsonData(&t.data)),
                }
            })
        })
        .collect::<Result<_, ClientError>>()?;
    let outputs = opts
        .outputs
        .iter()
        .map(|name| OutputJson {
            name,
            parameters: binary_outputs.then_some(BinaryData { binary_data: true }),
        })
        .collect();
    let request = RequestJson {
        id: opts.id.as_deref(),
        parameters,
        inputs,
        outputs,
    };
    let mut body =
        serde_json::to_vec(&request).map_err(|e| ClientError::Decode(format!("encoding the request: {e}")))?;
    if raw_parts.is_empty() {
        return Ok(EncodedRequest { body, header_len: None });
    }
    let header_len = body.len();
    body.reserve(raw_parts.iter().map(Vec::len).sum());
    for part in raw_parts {
        body.extend_from_slice(&part);
    }
    Ok(EncodedRequest {
        body,
        header_len: Some(header_len),
    })
}

#[derive(Deserialize)]
struct ResponseJson {
    model_name: String,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    outputs: Vec<OutputIn>,
}

#[derive(Deserialize)]
struct OutputIn {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default)]
    data: Option<Value>,
}

/// Decodes an inference response body. `header_len` is the response's
/// `Inference-Header-Content-Length`: when present, the JSON is that many
/// bytes and outputs with `binary_data_size` take their bytes, in order, from
/// what follows; every byte after the JSON must belong to an output.
pub fn decode_response(body: &[u8], header_len: Option<usize>) -> Result<InferResult, ClientError> {
    let decode = ClientError::Decode;
    let json_len = header_len.unwrap_or(body.len());
    if json_len > body.len() {
        return Err(decode(format!(
            "Inference-Header-Content-Length {json_len} is larger than the body ({} bytes)",
            body.len()
        )));
    }
    let (json, binary) = body.split_at(json_len);
    let parsed: ResponseJson =
        serde_json::from_slice(json).map_err(|e| decode(format!("malformed inference response: {e}")))?;
    let mut offset = 0usize;
    let mut outputs = Vec::with_capacity(parsed.outputs.len());
    for o in parsed.outputs {
        let size = o.parameters.as_ref().and_then(|p| p.get("binary_data_size"));
        let tensor = match (size, &o.data) {
            (Some(size), _) => {
                let size = size.as_u64().and_then(|s| usize::try_from(s).ok()).ok_or_else(|| {
                    decode(format!(
                        "output '{}': binary_data_size {size} is not a byte count",
                        o.name
                    ))
                })?;
                let end = offset.checked_add(size).filter(|&e| e <= binary.len()).ok_or_else(|| {
                    decode(format!(
                        "output '{}': binary_data_size {size} goes past the end of the body ({} binary bytes, {offset} used before)",
                        o.name,
                        binary.len()
                    ))
                })?;
                let t = Tensor::from_raw(&o.name, &o.datatype, o.shape, &binary[offset..end])?;
                offset = end;
                t
            }
            (None, Some(data)) => Tensor::from_json(&o.name, &o.datatype, o.shape, data)?,
            (None, None) => {
                return Err(decode(format!(
                    "output '{}' has neither data nor binary_data_size",
                    o.name
                )));
            }
        };
        outputs.push(tensor);
    }
    if offset != binary.len() {
        return Err(decode(format!(
            "the body has {} bytes of binary data but the outputs declare {offset}",
            binary.len()
        )));
    }
    Ok(InferResult {
        model_name: parsed.model_name,
        model_version: parsed.model_version.unwrap_or_default(),
        id: parsed.id.unwrap_or_default(),
        outputs,
    })
}

/// The message of an error response: the `error` field of a JSON body, else
/// the body as text.
pub fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorJson {
        error: String,
    }
    match serde_json::from_slice::<ErrorJson>(body) {
        Ok(e) => e.error,
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Data;
    use serde_json::json;

    fn simple_inputs() -> Vec<Tensor> {
        vec![
            Tensor::new("INPUT0", vec![1, 2], Data::I32(vec![1, 2])),
            Tensor::new("TEXT", vec![2], Data::Bytes(vec![b"hi".to_vec(), vec![]])),
        ]
    }

    fn json_of(req: &EncodedRequest) -> Value {
        let end = req.header_len.unwrap_or(req.body.len());
        serde_json::from_slice(&req.body[..end]).unwrap()
    }

    #[test]
    fn json_request_carries_data_and_options() {
        let mut opts = InferOptions {
            id: Some("r1".into()),
            outputs: vec!["OUTPUT0".into()],
            ..Default::default()
        };
        opts.parameters.insert("priority".into(), json!(2));
        let req = encode_request(&simple_inputs(), &opts).unwrap();
        assert_eq!(req.header_len, None);
        assert_eq!(
            json_of(&req),
            json!({
                "id": "r1",
                "parameters": {"priority": 2},
                "inputs": [
                    {"name": "INPUT0", "shape": [1, 2], "datatype": "INT32", "data": [1, 2]},
                    {"name": "TEXT", "shape": [2], "datatype": "BYTES", "data": ["hi", ""]},
                ],
                "outputs": [{"name": "OUTPUT0"}],
            })
        );
        let bare = encode_request(&simple_inputs()[..1], &InferOptions::default()).unwrap();
        assert_eq!(
            String::from_utf8(bare.body).unwrap(),
            r#"{"inputs":[{"name":"INPUT0","shape":[1,2],"datatype":"INT32","data":[1,2]}]}"#
        );
    }

    #[test]
    fn binary_request_puts_raw_inputs_after_the_json_in_order() {
        let opts = InferOptions {
            input_encoding: Encoding::Binary,
            output_encoding: Encoding::Binary,
            outputs: vec!["OUTPUT0".into()],
            ..Default::default()
        };
        let req = encode_request(&simple_inputs(), &opts).unwrap();
        let n = req.header_len.unwrap();
        assert_eq!(
            json_of(&req),
            json!({
                "parameters": {"binary_data_output": true},
                "inputs": [
                    {"name": "INPUT0", "shape": [1, 2], "datatype": "INT32", "parameters": {"binary_data_size": 8}},
                    {"name": "TEXT", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 10}},
                ],
                "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": true}}],
            })
        );
        assert_eq!(
            req.body[n..],
            [1, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, b'h', b'i', 0, 0, 0, 0]
        );
    }

    #[test]
    fn inputs_without_an_exact_json_form_go_binary_anyway() {
        let inputs = vec![
            Tensor::new("A", vec![1], Data::I32(vec![7])),
            Tensor::new("H", vec![1], Data::F16(vec![0x3c00])),
            Tensor::new("B", vec![1], Data::Bytes(vec![vec![0xff]])),
            Tensor::new("N", vec![1], Data::F64(vec![f64::INFINITY])),
        ];
        let req = encode_request(&inputs, &InferOptions::default()).unwrap();
        let n = req.header_len.unwrap();
        let v = json_of(&req);
        assert_eq!(v["inputs"][0]["data"], json!([7]));
        assert_eq!(v["inputs"][1]["parameters"]["binary_data_size"], 2);
        assert_eq!(v["inputs"][2]["parameters"]["binary_data_size"], 5);
        assert_eq!(v["inputs"][3]["parameters"]["binary_data_size"], 8);
        assert!(v.get("parameters").is_none());
        let mut tail = vec![0x00, 0x3c, 1, 0, 0, 0, 0xff];
        tail.extend_from_slice(&f64::INFINITY.to_le_bytes());
        assert_eq!(req.body[n..], tail);
    }

    #[test]
    fn binary_response_outputs_are_sliced_in_order() {
        let json = json!({
            "model_name": "m",
            "model_version": "2",
            "id": "r1",
            "outputs": [
                {"name": "A", "datatype": "INT16", "shape": [2], "parameters": {"binary_data_size": 4}},
                {"name": "J", "datatype": "FP32", "shape": [1, 2], "data": [[0.5, 1]]},
                {"name": "S", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}},
            ],
        })
        .to_string();
        let mut body = json.as_bytes().to_vec();
        body.extend_from_slice(&[1, 0, 0xff, 0xff, 2, 0, 0, 0, 0xff, 0]);
        let r = decode_response(&body, Some(json.len())).unwrap();
        assert_eq!(
            (r.model_name.as_str(), r.model_version.as_str(), r.id.as_str()),
            ("m", "2", "r1")
        );
        assert_eq!(r.output("A").unwrap().data, Data::I16(vec![1, -1]));
        assert_eq!(r.output("J").unwrap().data, Data::F32(vec![0.5, 1.0]));
        assert_eq!(r.output("S").unwrap().data, Data::Bytes(vec![vec![0xff, 0]]));
        assert_eq!(
            r.outputs.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["A", "J", "S"]
        );

        let short = decode_response(&body[..body.len() - 1], Some(json.len())).unwrap_err();
        assert!(short.to_string().contains("past the end"), "{short}");
        let mut long = body.clone();
        long.push(0);
        let long = decode_response(&long, Some(json.len())).unwrap_err();
        assert!(long.to_string().contains("outputs declare 10"), "{long}");
        let beyond = decode_response(&body, Some(body.len() + 1)).unwrap_err();
        assert!(beyond.to_string().contains("larger than the body"), "{beyond}");
    }

    #[test]
    fn json_response_without_version_or_id_decodes() {
        let body = br#"{"model_name":"m","outputs":[{"name":"Y","datatype":"BOOL","shape":[2],"data":[true,false]}]}"#;
        let r = decode_response(body, None).unwrap();
        assert_eq!((r.model_version.as_str(), r.id.as_str()), ("", ""));
        assert_eq!(r.outputs[0].data, Data::Bool(vec![true, false]));
        let e = decode_response(
            br#"{"model_name":"m","outputs":[{"name":"Y","datatype":"BOOL","shape":[1]}]}"#,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("neither"), "{e}");
    }

    #[test]
    fn error_bodies_give_their_message() {
        assert_eq!(error_message(br#"{"error":"no such model"}"#), "no such model");
        assert_eq!(error_message(b"  plain text\n"), "plain text");
    }
}
