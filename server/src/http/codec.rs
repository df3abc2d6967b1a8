//! HTTP inference bodies: the KServe V2 request and response JSON and
//! Triton's binary tensor data extension, in both directions. Tensor `data`
//! in JSON is read and written by [`crate::tensor::json`] (its BYTES rule
//! applies); binary data is sliced out of the body without copying.

use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::metrics::Protocol;
use crate::service::{InferRequest, InferResponse, Param};
use crate::tensor::{
    DataType, Tensor, TensorData, bound_message, decode_bytes_elements, echo, echo_shape, element_count, json,
};

mod input;
use input::{InputData, InputJson, InputText};

/// The request, its inputs read one way or the other (see [`input`]).
#[derive(Deserialize)]
#[serde(bound(deserialize = "I: Deserialize<'de>"))]
struct RequestJson<I> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    inputs: Vec<I>,
    #[serde(default)]
    outputs: Option<Vec<OutputJson>>,
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
    let json_text = &body[..json_len];
    let mut parsed: RequestJson<InputJson<'_>> = match serde_json::from_slice(json_text) {
        Ok(parsed) => parsed,
        // Read again, `data` as text, to say what is wrong.
        Err(_) => {
            let text: RequestJson<InputText<'_>> = serde_json::from_slice(json_text)
                .map_err(|e| Error::invalid(bound_message(format!("malformed inference request JSON: {e}"))))?;
            RequestJson {
                id: text.id,
                parameters: text.parameters,
                inputs: text.inputs.into_iter().map(InputJson::from).collect(),
                outputs: text.outputs,
            }
        }
    };
    let mut offset = 0usize;
    let mut inputs = Vec::with_capacity(parsed.inputs.len());
    for input in std::mem::take(&mut parsed.inputs) {
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
            (None, Some(InputData::Text(raw))) => json::parse_data(raw, datatype, count, &name)?,
            (None, Some(InputData::Parsed(data))) => data,
            (None, None) => {
                return Err(Error::invalid(format!(
                    "input '{name}' has neither 'data' nor binary_data_size"
                )));
            }
        };
        inputs.push(Tensor {
            name: input.name,
            datatype,
            shape: input.shape,
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
            id: parsed.id.unwrap_or_default(),
            inputs,
            outputs,
            parameters,
            ..http_request(model, version, received)
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
            raw_input: Some(body),
            ..http_request(model, version, received)
        },
        format: OutputFormat::default(),
    }
}

/// An HTTP request to `model` with nothing in it yet.
fn http_request(model: &str, version: Option<&str>, received: Instant) -> InferRequest {
    InferRequest {
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
        raw_input: None,
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
mod tests;
