//! The tensors a load run sends: generated from the model's metadata and
//! configuration, or read from a KServe V2 JSON request body.

use serde_json::Value;

use super::schedule::XorShift;
use crate::{ClientError, Data, Tensor, proto};

/// One input as the model's metadata describes it (`-1` for a variable dimension).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct InputSpec {
    pub(crate) name: String,
    pub(crate) datatype: String,
    pub(crate) shape: Vec<i64>,
}

/// The most elements one generated input may have (a shape beyond it is
/// a mistake, or needs `input_data`).
const MAX_GENERATED_ELEMENTS: usize = 1 << 28;

fn invalid(message: String) -> ClientError {
    ClientError::InvalidArgument(message)
}

/// The inputs of an HTTP model metadata document.
pub(crate) fn specs_from_json(metadata: &Value) -> Result<Vec<InputSpec>, ClientError> {
    let bad = |what: &str| ClientError::Decode(format!("model metadata: {what}"));
    metadata
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no 'inputs' array"))?
        .iter()
        .map(|i| {
            let field = |key: &str| i.get(key).and_then(Value::as_str).map(str::to_string);
            Ok(InputSpec {
                name: field("name").ok_or_else(|| bad("an input without a name"))?,
                datatype: field("datatype").ok_or_else(|| bad("an input without a datatype"))?,
                shape: i
                    .get("shape")
                    .and_then(Value::as_array)
                    .and_then(|dims| dims.iter().map(Value::as_i64).collect())
                    .ok_or_else(|| bad("an input without a shape"))?,
            })
        })
        .collect()
}

/// The inputs of a gRPC `ModelMetadataResponse`.
pub(crate) fn specs_from_proto(metadata: &proto::ModelMetadataResponse) -> Vec<InputSpec> {
    metadata
        .inputs
        .iter()
        .map(|i| InputSpec {
            name: i.name.clone(),
            datatype: i.datatype.clone(),
            shape: i.shape.clone(),
        })
        .collect()
}

/// `max_batch_size` of an HTTP model configuration (0 when absent).
pub(crate) fn max_batch_from_json(config: &Value) -> u64 {
    match config.get("max_batch_size") {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

/// Checks `batch` against the model's `max_batch_size` (0: no batching).
pub(crate) fn check_batch(batch: usize, max_batch_size: u64) -> Result<(), ClientError> {
    if batch == 0 {
        return Err(invalid("the batch size must be at least 1".into()));
    }
    if max_batch_size == 0 && batch > 1 {
        return Err(invalid(format!(
            "the model does not batch (max_batch_size 0): batch {batch} is not possible, use 1"
        )));
    }
    if max_batch_size > 0 && batch as u64 > max_batch_size {
        return Err(invalid(format!(
            "batch {batch} is above the model's max_batch_size {max_batch_size}"
        )));
    }
    Ok(())
}

/// A concrete shape: with batching the first dimension is the batch, and any
/// other variable dimension becomes 1.
pub(crate) fn concrete_shape(shape: &[i64], batching: bool, batch: usize) -> Vec<i64> {
    shape
        .iter()
        .enumerate()
        .map(|(i, &d)| match (i, batching) {
            (0, true) => batch as i64,
            _ if d < 0 => 1,
            _ => d,
        })
        .collect()
}

/// Random tensors for `specs`, the same for the same `seed`: integers in
/// 0..64, floating point in [0, 1), BYTES as 1 to 8 ASCII letters and digits.
pub(crate) fn generate(
    specs: &[InputSpec],
    max_batch_size: u64,
    batch: usize,
    seed: u64,
) -> Result<Vec<Tensor>, ClientError> {
    check_batch(batch, max_batch_size)?;
    let mut rng = XorShift::new(seed);
    specs
        .iter()
        .map(|spec| {
            let shape = concrete_shape(&spec.shape, max_batch_size > 0, batch);
            let count =
                crate::tensor::element_count(&shape).map_err(|e| invalid(format!("input '{}': {e}", spec.name)))?;
            if count > MAX_GENERATED_ELEMENTS {
                return Err(invalid(format!(
                    "input '{}': shape {shape:?} holds {count} elements, more than the {MAX_GENERATED_ELEMENTS} \
                     that are generated; give the inputs as request data instead",
                    spec.name
                )));
            }
            let data = random_data(&spec.datatype, count, &mut rng)
                .map_err(|e| invalid(format!("input '{}': {e}", spec.name)))?;
            Ok(Tensor::new(spec.name.clone(), shape, data))
        })
        .collect()
}

fn random_data(datatype: &str, count: usize, rng: &mut XorShift) -> Result<Data, String> {
    macro_rules! ints {
        ($variant:ident, $t:ty) => {
            Data::$variant((0..count).map(|_| rng.below(64) as $t).collect())
        };
    }
    let mut floats = || (0..count).map(|_| rng.next_f64() as f32).collect::<Vec<f32>>();
    Ok(match datatype {
        "BOOL" => Data::Bool((0..count).map(|_| rng.below(2) == 1).collect()),
        "UINT8" => ints!(U8, u8),
        "UINT16" => ints!(U16, u16),
        "UINT32" => ints!(U32, u32),
        "UINT64" => ints!(U64, u64),
        "INT8" => ints!(I8, i8),
        "INT16" => ints!(I16, i16),
        "INT32" => ints!(I32, i32),
        "INT64" => ints!(I64, i64),
        "FP16" => Data::F16(floats().into_iter().map(|x| half::f16::from_f32(x).to_bits()).collect()),
        "FP32" => Data::F32(floats()),
        "FP64" => Data::F64((0..count).map(|_| rng.next_f64()).collect()),
        "BF16" => Data::Bf16(
            floats()
                .into_iter()
                .map(|x| half::bf16::from_f32(x).to_bits())
                .collect(),
        ),
        "BYTES" => {
            const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
            Data::Bytes(
                (0..count)
                    .map(|_| {
                        let len = 1 + rng.below(8);
                        (0..len)
                            .map(|_| CHARS[rng.below(CHARS.len() as u64) as usize])
                            .collect()
                    })
                    .collect(),
            )
        }
        other => return Err(format!("datatype '{other}' cannot be generated")),
    })
}

/// The inputs of a KServe V2 JSON inference request body (each with `name`,
/// `datatype`, `shape` and `data`); anything else in the body is ignored.
pub(crate) fn from_request_json(body: &Value) -> Result<Vec<Tensor>, ClientError> {
    let inputs = body
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("the request needs an 'inputs' array".into()))?;
    inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let field = |key: &str| {
                input
                    .get(key)
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("input {i} needs a string '{key}'")))
            };
            let (name, datatype) = (field("name")?, field("datatype")?);
            let shape = input
                .get("shape")
                .and_then(Value::as_array)
                .and_then(|dims| dims.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
                .ok_or_else(|| invalid(format!("input '{name}' needs a 'shape' array of integers")))?;
            let data = input
                .get("data")
                .ok_or_else(|| invalid(format!("input '{name}' has no 'data'")))?;
            Tensor::from_json(name, datatype, shape, data)
        })
        .collect()
}

/// Rows per request: the first dimension of the first input when the model
/// batches, else 1.
pub(crate) fn rows(inputs: &[Tensor], max_batch_size: u64) -> usize {
    match inputs.first().and_then(|t| t.shape.first()) {
        Some(&d) if max_batch_size > 0 => usize::try_from(d).unwrap_or(0),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_take_the_batch_first_and_1_elsewhere() {
        assert_eq!(concrete_shape(&[-1, 16], true, 4), [4, 16]);
        assert_eq!(concrete_shape(&[-1, -1, 3], true, 2), [2, 1, 3]);
        assert_eq!(concrete_shape(&[-1, 16], false, 1), [1, 16]);
        assert_eq!(concrete_shape(&[], false, 1), Vec::<i64>::new());
        assert!(check_batch(8, 8).is_ok());
        assert!(check_batch(9, 8).unwrap_err().to_string().contains("max_batch_size 8"));
        assert!(check_batch(2, 0).unwrap_err().to_string().contains("does not batch"));
        assert!(check_batch(0, 8).is_err());
    }

    #[test]
    fn generated_inputs_follow_the_metadata() {
        let metadata = json!({"name": "datatypes", "inputs": [
            {"name": "A", "datatype": "INT32", "shape": [-1, 16]},
            {"name": "B", "datatype": "BYTES", "shape": [-1, 3]},
            {"name": "C", "datatype": "FP16", "shape": [-1, 2]},
            {"name": "D", "datatype": "BOOL", "shape": [-1, 1]},
        ]});
        let specs = specs_from_json(&metadata).unwrap();
        let config = json!({"max_batch_size": 8});
        let inputs = generate(&specs, max_batch_from_json(&config), 4, 1).unwrap();
        assert_eq!(inputs[0].shape, [4, 16]);
        assert_eq!(inputs[0].len(), 64);
        let Data::I32(a) = &inputs[0].data else { panic!() };
        assert!(a.iter().all(|x| (0..64).contains(x)));
        let Data::Bytes(b) = &inputs[1].data else { panic!() };
        assert_eq!(b.len(), 12);
        assert!(b.iter().all(|s| (1..=8).contains(&s.len()) && s.is_ascii()));
        assert_eq!(inputs[2].datatype(), "FP16");
        assert_eq!(inputs[3].len(), 4);
        assert_eq!(rows(&inputs, 8), 4);
        // Fixed seed: the same data every time.
        assert_eq!(generate(&specs, 8, 4, 1).unwrap(), inputs);
        let unknown = [InputSpec {
            name: "X".into(),
            datatype: "FP8".into(),
            shape: vec![1],
        }];
        assert!(generate(&unknown, 0, 1, 1).unwrap_err().to_string().contains("FP8"));
        let huge = [InputSpec {
            name: "X".into(),
            datatype: "FP32".into(),
            shape: vec![1 << 40, 1 << 20],
        }];
        assert!(
            generate(&huge, 0, 1, 1)
                .unwrap_err()
                .to_string()
                .contains("more than the")
        );
    }

    #[test]
    fn request_files_give_inputs() {
        let body =
            json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}]});
        let inputs = from_request_json(&body).unwrap();
        assert_eq!(
            inputs[0],
            Tensor::new("features", vec![2, 2], Data::F32(vec![1.0, 2.0, 3.0, 4.0]))
        );
        assert_eq!(rows(&inputs, 32), 2);
        assert_eq!(rows(&inputs, 0), 1);
        let no_data = json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]});
        assert!(
            from_request_json(&no_data)
                .unwrap_err()
                .to_string()
                .contains("no 'data'")
        );
    }
}
