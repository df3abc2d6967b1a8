//! Tensors from the command line (`--input NAME:DATATYPE:SHAPE:VALUES`) and
//! from KServe V2 JSON request files.

use std::fmt::Display;
use std::str::FromStr;

use serde_json::Value;
use switchyard_client::{Data, InferOptions, Tensor};

const DATATYPES: &str = "BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES, BF16";

/// Parses `NAME:DATATYPE:SHAPE:VALUES`. SHAPE is dimensions joined by `x`
/// (`1x16`; empty for a scalar); VALUES are comma-separated (BYTES values are
/// taken verbatim, so they cannot contain commas), or `@PATH` for a file of
/// raw little-endian bytes.
pub fn parse_input(spec: &str) -> Result<Tensor, String> {
    let mut parts = spec.splitn(4, ':');
    let (Some(name), Some(datatype), Some(shape), Some(values)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("'{spec}' is not NAME:DATATYPE:SHAPE:VALUES"));
    };
    if name.is_empty() {
        return Err(format!("'{spec}' has an empty name"));
    }
    let datatype = datatype.to_ascii_uppercase();
    let shape = parse_shape(shape)?;
    if let Some(path) = values.strip_prefix('@') {
        let raw = std::fs::read(path).map_err(|e| format!("reading {path}: {e}"))?;
        return Tensor::from_raw(name, &datatype, shape, &raw).map_err(|e| e.to_string());
    }
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
        .ok_or_else(|| format!("shape {shape:?} is too large"))?;
    let tokens: Vec<&str> = if values.is_empty() && (count == 0 || datatype != "BYTES") {
        Vec::new()
    } else if datatype == "BYTES" {
        values.split(',').collect()
    } else {
        values.split(',').map(str::trim).collect()
    };
    if tokens.len() != count {
        return Err(format!(
            "input '{name}': {} values given but shape {shape:?} holds {count} elements",
            tokens.len()
        ));
    }
    let data = parse_values(&datatype, &tokens).map_err(|e| format!("input '{name}': {e}"))?;
    Ok(Tensor::new(name, shape, data))
}

fn parse_shape(shape: &str) -> Result<Vec<i64>, String> {
    if shape.trim().is_empty() {
        return Ok(Vec::new());
    }
    shape
        .split(['x', 'X', ','])
        .map(|d| match d.trim().parse::<i64>() {
            Ok(d) if d >= 0 => Ok(d),
            _ => Err(format!(
                "shape '{shape}': '{d}' is not a dimension (a non-negative integer)"
            )),
        })
        .collect()
}

fn parse_all<T: FromStr>(tokens: &[&str]) -> Result<Vec<T>, String>
where
    T::Err: Display,
{
    tokens
        .iter()
        .map(|t| {
            t.parse::<T>()
                .map_err(|e| format!("'{t}' is not a {}: {e}", std::any::type_name::<T>()))
        })
        .collect()
}

fn parse_values(datatype: &str, tokens: &[&str]) -> Result<Data, String> {
    Ok(match datatype {
        "BOOL" => Data::Bool(
            tokens
                .iter()
                .map(|t| match t.to_ascii_lowercase().as_str() {
                    "true" | "1" => Ok(true),
                    "false" | "0" => Ok(false),
                    _ => Err(format!("'{t}' is not a boolean (true, false, 1 or 0)")),
                })
                .collect::<Result<_, _>>()?,
        ),
        "UINT8" => Data::U8(parse_all(tokens)?),
        "UINT16" => Data::U16(parse_all(tokens)?),
        "UINT32" => Data::U32(parse_all(tokens)?),
        "UINT64" => Data::U64(parse_all(tokens)?),
        "INT8" => Data::I8(parse_all(tokens)?),
        "INT16" => Data::I16(parse_all(tokens)?),
        "INT32" => Data::I32(parse_all(tokens)?),
        "INT64" => Data::I64(parse_all(tokens)?),
        "FP16" => Data::F16(
            parse_all::<f32>(tokens)?
                .into_iter()
                .map(|x| half::f16::from_f32(x).to_bits())
                .collect(),
        ),
        "FP32" => Data::F32(parse_all(tokens)?),
        "FP64" => Data::F64(parse_all(tokens)?),
        "BF16" => Data::Bf16(
            parse_all::<f32>(tokens)?
                .into_iter()
                .map(|x| half::bf16::from_f32(x).to_bits())
                .collect(),
        ),
        "BYTES" => Data::Bytes(tokens.iter().map(|t| t.as_bytes().to_vec()).collect()),
        other => return Err(format!("unknown datatype '{other}' (one of {DATATYPES})")),
    })
}

/// Converts a KServe V2 JSON inference request body into tensors and options
/// (id, parameters, outputs). Inputs need `data`: a file cannot carry binary
/// data.
pub fn request_from_json(body: &Value) -> Result<(Vec<Tensor>, InferOptions), String> {
    let str_field = |v: &Value, key: &str, what: &str| -> Result<String, String> {
        v.get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("{what} needs a string '{key}'"))
    };
    let inputs = body
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or("the request needs an 'inputs' array")?;
    let tensors = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let what = format!("input {i}");
            let name = str_field(input, "name", &what)?;
            let datatype = str_field(input, "datatype", &what)?;
            let shape = input
                .get("shape")
                .and_then(Value::as_array)
                .and_then(|dims| dims.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
                .ok_or_else(|| format!("input '{name}' needs a 'shape' array of integers"))?;
            let data = input.get("data").ok_or_else(|| {
                format!("input '{name}' has no 'data' (for binary data use --input {name}:{datatype}:SHAPE:@FILE)")
            })?;
            Tensor::from_json(&name, &datatype, shape, data).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut opts = InferOptions {
        id: body.get("id").and_then(Value::as_str).map(str::to_string),
        ..Default::default()
    };
    if let Some(params) = body.get("parameters") {
        opts.parameters = params.as_object().cloned().ok_or("'parameters' must be an object")?;
    }
    if let Some(outputs) = body.get("outputs") {
        opts.outputs = outputs
            .as_array()
            .ok_or("'outputs' must be an array")?
            .iter()
            .enumerate()
            .map(|(i, o)| str_field(o, "name", &format!("output {i}")))
            .collect::<Result<_, _>>()?;
    }
    Ok((tensors, opts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_parse_for_every_datatype() {
        let cases = [
            ("A:BOOL:2:true,0", vec![2], Data::Bool(vec![true, false])),
            ("A:uint8:1x2:0,255", vec![1, 2], Data::U8(vec![0, 255])),
            ("A:UINT16:1:65535", vec![1], Data::U16(vec![65535])),
            ("A:UINT32:1:7", vec![1], Data::U32(vec![7])),
            ("A:UINT64:1:18446744073709551615", vec![1], Data::U64(vec![u64::MAX])),
            ("A:INT8:2:-128, 127", vec![2], Data::I8(vec![-128, 127])),
            ("A:INT16:1:-2", vec![1], Data::I16(vec![-2])),
            ("A:INT32:2x2:1,2,3,4", vec![2, 2], Data::I32(vec![1, 2, 3, 4])),
            ("A:INT64:1:-9", vec![1], Data::I64(vec![-9])),
            ("A:FP16:2:1,-2", vec![2], Data::F16(vec![0x3c00, 0xc000])),
            ("A:FP32:2:0.5,1e3", vec![2], Data::F32(vec![0.5, 1000.0])),
            ("A:FP64:1:-0.25", vec![1], Data::F64(vec![-0.25])),
            ("A:BF16:1:1", vec![1], Data::Bf16(vec![0x3f80])),
            (
                "A:BYTES:3:a b,,c:d",
                vec![3],
                Data::Bytes(vec![b"a b".to_vec(), vec![], b"c:d".to_vec()]),
            ),
            ("A:BYTES:1:", vec![1], Data::Bytes(vec![vec![]])),
            ("A:INT32::5", vec![], Data::I32(vec![5])),
            ("A:FP32:0x4:", vec![0, 4], Data::F32(vec![])),
        ];
        for (spec, shape, data) in cases {
            assert_eq!(parse_input(spec), Ok(Tensor::new("A", shape, data)), "{spec}");
        }
    }

    #[test]
    fn bad_inputs_are_rejected_with_a_reason() {
        let cases = [
            ("A:INT32:2", "NAME:DATATYPE:SHAPE:VALUES"),
            (":INT32:1:1", "empty name"),
            ("A:INT32:2:1", "holds 2 elements"),
            ("A:INT32:-1:1", "not a dimension"),
            ("A:INT8:1:128", "is not a i8"),
            ("A:BOOL:1:yes", "not a boolean"),
            ("A:FLOAT:1:1", "unknown datatype"),
            ("A:INT32:1:@/nonexistent/x.bin", "reading /nonexistent/x.bin"),
        ];
        for (spec, expect) in cases {
            let e = parse_input(spec).unwrap_err();
            assert!(e.contains(expect), "{spec}: {e}");
        }
    }

    #[test]
    fn inputs_read_raw_bytes_from_files() {
        let dir = std::env::temp_dir().join(format!("switchyard-client-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("in.bin");
        let t = Tensor::new("S", vec![2], Data::Bytes(vec![vec![0xff, 0], b"x".to_vec()]));
        std::fs::write(&path, t.to_raw().unwrap()).unwrap();
        assert_eq!(parse_input(&format!("S:BYTES:2:@{}", path.display())), Ok(t));
        std::fs::write(&path, [1, 0, 0, 0, 2, 0]).unwrap();
        let e = parse_input(&format!("X:INT32:2:@{}", path.display())).unwrap_err();
        assert!(e.contains("need 8"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn request_files_convert_to_tensors_and_options() {
        let body = json!({
            "id": "r1",
            "parameters": {"priority": 1},
            "inputs": [
                {"name": "INPUT0", "shape": [1, 2], "datatype": "INT32", "data": [[1, 2]]},
                {"name": "T", "shape": [1], "datatype": "BYTES", "data": ["hi"]},
            ],
            "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": true}}],
        });
        let (tensors, opts) = request_from_json(&body).unwrap();
        assert_eq!(tensors[0], Tensor::new("INPUT0", vec![1, 2], Data::I32(vec![1, 2])));
        assert_eq!(tensors[1], Tensor::new("T", vec![1], Data::Bytes(vec![b"hi".to_vec()])));
        assert_eq!(opts.id.as_deref(), Some("r1"));
        assert_eq!(opts.parameters["priority"], 1);
        assert_eq!(opts.outputs, ["OUTPUT0"]);

        let binary =
            json!({"inputs": [{"name": "X", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]});
        assert!(request_from_json(&binary).unwrap_err().contains("no 'data'"));
        assert!(request_from_json(&json!({"inputs": 1})).is_err());
        let short = json!({"inputs": [{"name": "X", "shape": [2], "datatype": "FP32", "data": [1]}]});
        assert!(request_from_json(&short).unwrap_err().contains("has 1 elements"));
    }
}
