//! Conversions between the client's [`Tensor`]s and options and the gRPC
//! proto messages: requests (raw or typed contents, parameters) and
//! responses (raw or typed outputs back into tensors).

use std::collections::HashMap;

use serde_json::Value;

use crate::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use crate::proto::{self, infer_parameter::ParameterChoice};
use crate::{ClientError, Data, InferOptions, InferResult, Tensor};

/// A complete `ModelInferRequest` with inputs in `raw_input_contents`.
pub(crate) fn raw_request(
    model: &str,
    inputs: &[Tensor],
    opts: &InferOptions,
) -> Result<proto::ModelInferRequest, ClientError> {
    let mut request = request_header(model, inputs, opts)?;
    request.raw_input_contents = inputs
        .iter()
        .map(|t| t.to_raw().map(Into::into))
        .collect::<Result<_, _>>()?;
    Ok(request)
}

/// A request with everything but the tensor data.
pub(super) fn request_header(
    model: &str,
    inputs: &[Tensor],
    opts: &InferOptions,
) -> Result<proto::ModelInferRequest, ClientError> {
    Ok(proto::ModelInferRequest {
        model_name: model.to_string(),
        model_version: opts.model_version.clone().unwrap_or_default(),
        id: opts.id.clone().unwrap_or_default(),
        parameters: convert_parameters(&opts.parameters)?,
        inputs: inputs
            .iter()
            .map(|t| InferInputTensor {
                name: t.name.clone(),
                datatype: t.datatype().to_string(),
                shape: t.shape.clone(),
                parameters: HashMap::new(),
                contents: None,
            })
            .collect(),
        outputs: opts
            .outputs
            .iter()
            .map(|name| InferRequestedOutputTensor {
                name: name.clone(),
                parameters: HashMap::new(),
            })
            .collect(),
        raw_input_contents: Vec::new(),
    })
}

/// JSON parameters as `InferParameter`s: booleans, integers (int64, or uint64
/// above `i64::MAX`), other numbers as doubles, strings.
pub(crate) fn convert_parameters(
    params: &serde_json::Map<String, Value>,
) -> Result<HashMap<String, proto::InferParameter>, ClientError> {
    params
        .iter()
        .map(|(k, v)| {
            let choice = match v {
                Value::Bool(b) => ParameterChoice::BoolParam(*b),
                Value::String(s) => ParameterChoice::StringParam(s.clone()),
                Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                    (Some(i), _, _) => ParameterChoice::Int64Param(i),
                    (_, Some(u), _) => ParameterChoice::Uint64Param(u),
                    (_, _, Some(f)) => ParameterChoice::DoubleParam(f),
                    _ => {
                        return Err(ClientError::Decode(format!(
                            "parameter '{k}': {n} is not representable"
                        )));
                    }
                },
                other => {
                    return Err(ClientError::Decode(format!(
                        "parameter '{k}': {other} is not a boolean, number or string"
                    )));
                }
            };
            let p = proto::InferParameter {
                parameter_choice: Some(choice),
            };
            Ok((k.clone(), p))
        })
        .collect()
}

/// The typed contents of `t` (narrow integers widen to 32 bits).
pub(crate) fn typed_contents(t: &Tensor) -> Result<proto::InferTensorContents, ClientError> {
    let mut c = proto::InferTensorContents::default();
    match &t.data {
        Data::Bool(v) => c.bool_contents = v.clone(),
        Data::U8(v) => c.uint_contents = v.iter().map(|&x| u32::from(x)).collect(),
        Data::U16(v) => c.uint_contents = v.iter().map(|&x| u32::from(x)).collect(),
        Data::U32(v) => c.uint_contents = v.clone(),
        Data::U64(v) => c.uint64_contents = v.clone(),
        Data::I8(v) => c.int_contents = v.iter().map(|&x| i32::from(x)).collect(),
        Data::I16(v) => c.int_contents = v.iter().map(|&x| i32::from(x)).collect(),
        Data::I32(v) => c.int_contents = v.clone(),
        Data::I64(v) => c.int64_contents = v.clone(),
        Data::F32(v) => c.fp32_contents = v.clone(),
        Data::F64(v) => c.fp64_contents = v.clone(),
        Data::Bytes(v) => c.bytes_contents = v.clone(),
        Data::F16(_) | Data::Bf16(_) => {
            return Err(ClientError::Decode(format!(
                "input '{}': {} tensors have no typed contents; send them raw",
                t.name,
                t.datatype()
            )));
        }
    }
    Ok(c)
}

/// Converts a response, taking each output's data from `raw_output_contents`
/// when present, else from its typed `contents`.
pub(crate) fn decode_response(resp: proto::ModelInferResponse) -> Result<InferResult, ClientError> {
    let raw = resp.raw_output_contents;
    if !raw.is_empty() && raw.len() != resp.outputs.len() {
        return Err(ClientError::Decode(format!(
            "{} raw_output_contents for {} outputs",
            raw.len(),
            resp.outputs.len()
        )));
    }
    let outputs = resp
        .outputs
        .into_iter()
        .enumerate()
        .map(|(i, o)| match raw.get(i) {
            Some(bytes) => Tensor::from_raw(&o.name, &o.datatype, o.shape, bytes),
            None => from_typed(o.name, &o.datatype, o.shape, o.contents.unwrap_or_default()),
        })
        .collect::<Result<_, _>>()?;
    Ok(InferResult {
        model_name: resp.model_name,
        model_version: resp.model_version,
        id: resp.id,
        outputs,
    })
}

/// Converts typed contents, checking narrow integers' range and the count.
pub(super) fn from_typed(
    name: String,
    datatype: &str,
    shape: Vec<i64>,
    c: proto::InferTensorContents,
) -> Result<Tensor, ClientError> {
    let err = |m: String| ClientError::Decode(format!("output '{name}': {m}"));
    fn narrow<S: Copy + std::fmt::Display, T: TryFrom<S>>(v: Vec<S>) -> Result<Vec<T>, String> {
        v.into_iter()
            .map(|x| T::try_from(x).map_err(|_| format!("{x} is out of range for {}", std::any::type_name::<T>())))
            .collect()
    }
    let data = match datatype {
        "BOOL" => Data::Bool(c.bool_contents),
        "UINT8" => Data::U8(narrow(c.uint_contents).map_err(err)?),
        "UINT16" => Data::U16(narrow(c.uint_contents).map_err(err)?),
        "UINT32" => Data::U32(c.uint_contents),
        "UINT64" => Data::U64(c.uint64_contents),
        "INT8" => Data::I8(narrow(c.int_contents).map_err(err)?),
        "INT16" => Data::I16(narrow(c.int_contents).map_err(err)?),
        "INT32" => Data::I32(c.int_contents),
        "INT64" => Data::I64(c.int64_contents),
        "FP32" => Data::F32(c.fp32_contents),
        "FP64" => Data::F64(c.fp64_contents),
        "BYTES" => Data::Bytes(c.bytes_contents),
        "FP16" | "BF16" => return Err(err(format!("{datatype} output without raw_output_contents"))),
        other => return Err(err(format!("unknown datatype '{other}'"))),
    };
    let count = crate::tensor::element_count(&shape).map_err(err)?;
    if data.len() != count {
        return Err(err(format!("{} elements but the shape holds {count}", data.len())));
    }
    Ok(Tensor::new(name, shape, data))
}
