//! The JSON wire form of client tensors: `data` arrays read (flat or nested,
//! lenient where nothing is lost) and written straight from the typed
//! vectors. BYTES elements are JSON strings; for display, a non-UTF-8
//! element is written as the array of its byte values.

use serde::ser::{Serialize, SerializeSeq, Serializer};
use serde_json::Value;

use super::Data;

impl Data {
    /// The elements as a flat JSON array, for display: FP16/BF16 as their
    /// numeric values, NaN and infinities as the strings `"NaN"`, `"Infinity"`
    /// and `"-Infinity"`, BYTES as strings (a non-UTF-8 element as an array of
    /// its byte values).
    pub fn to_json(&self) -> Value {
        // Through text rather than `to_value`: single-precision values keep
        // their shortest form (0.1, not 0.10000000149011612).
        serde_json::to_string(&JsonData(self))
            .and_then(|text| serde_json::from_str(&text))
            .unwrap_or(Value::Null)
    }

    /// Whether the JSON form carries these elements exactly. FP16/BF16 have no
    /// JSON form in the protocol, JSON strings must be UTF-8 and JSON numbers
    /// cannot be NaN or infinite.
    pub(crate) fn json_exact(&self) -> bool {
        match self {
            Data::F16(_) | Data::Bf16(_) => false,
            Data::Bytes(v) => v.iter().all(|e| std::str::from_utf8(e).is_ok()),
            Data::F32(v) => v.iter().all(|x| x.is_finite()),
            Data::F64(v) => v.iter().all(|x| x.is_finite()),
            _ => true,
        }
    }

    /// Decodes `count` elements of `datatype` from a flat or nested JSON array
    /// (a scalar counts as a one-element array). Lenient where nothing is lost:
    /// integral floats for integer types; for floating types `null` (what
    /// serializers write for NaN) and the strings `"NaN"`, `"Infinity"`,
    /// `"-Infinity"`; numbers for FP16/BF16.
    pub(super) fn from_json(datatype: &str, count: usize, value: &Value) -> Result<Data, String> {
        // No capacity from `count`: it comes from a shape, which may be absurd.
        let mut flat = Vec::new();
        flatten(value, &mut flat);
        if flat.len() != count {
            return Err(format!(
                "'data' has {} elements but the shape holds {count}",
                flat.len()
            ));
        }
        macro_rules! each {
            ($variant:ident, $conv:expr) => {
                Data::$variant(flat.into_iter().map($conv).collect::<Result<_, String>>()?)
            };
        }
        Ok(match datatype {
            "BOOL" => each!(Bool, |v: &Value| v
                .as_bool()
                .ok_or_else(|| format!("{v} is not a boolean"))),
            "UINT8" => each!(U8, json_int),
            "UINT16" => each!(U16, json_int),
            "UINT32" => each!(U32, json_int),
            "UINT64" => each!(U64, json_int),
            "INT8" => each!(I8, json_int),
            "INT16" => each!(I16, json_int),
            "INT32" => each!(I32, json_int),
            "INT64" => each!(I64, json_int),
            "FP16" => each!(F16, |v| json_float(v).map(|x| half::f16::from_f64(x).to_bits())),
            "FP32" => each!(F32, |v| json_float(v).map(|x| x as f32)),
            "FP64" => each!(F64, json_float),
            "BF16" => each!(Bf16, |v| json_float(v).map(|x| half::bf16::from_f64(x).to_bits())),
            "BYTES" => each!(Bytes, |v: &Value| v
                .as_str()
                .map(|s| s.as_bytes().to_vec())
                .ok_or_else(|| format!("{v} is not a string"))),
            other => return Err(format!("unknown datatype '{other}'")),
        })
    }
}

fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        v => out.push(v),
    }
}

fn json_int<T: TryFrom<i128>>(v: &Value) -> Result<T, String> {
    let wide = match (v.as_i64(), v.as_u64(), v.as_f64()) {
        (Some(i), _, _) => Some(i128::from(i)),
        (_, Some(u), _) => Some(i128::from(u)),
        (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1.9e19 => Some(f as i128),
        _ => None,
    };
    let wide = wide.ok_or_else(|| format!("{v} is not an integer"))?;
    T::try_from(wide).map_err(|_| format!("{v} is out of range for {}", std::any::type_name::<T>()))
}

fn json_float(v: &Value) -> Result<f64, String> {
    match v {
        Value::Null => Ok(f64::NAN),
        Value::String(s) if s == "NaN" => Ok(f64::NAN),
        Value::String(s) if s == "Infinity" => Ok(f64::INFINITY),
        Value::String(s) if s == "-Infinity" => Ok(f64::NEG_INFINITY),
        v => v.as_f64().ok_or_else(|| format!("{v} is not a number")),
    }
}

/// Serializes [`Data`] as a flat JSON array without building `Value`s.
pub(crate) struct JsonData<'a>(pub(crate) &'a Data);

impl Serialize for JsonData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let data = self.0;
        let mut seq = s.serialize_seq(Some(data.len()))?;
        match data {
            Data::F16(v) => v
                .iter()
                .try_for_each(|&x| seq.serialize_element(&Float(half::f16::from_bits(x).to_f32())))?,
            Data::Bf16(v) => v
                .iter()
                .try_for_each(|&x| seq.serialize_element(&Float(half::bf16::from_bits(x).to_f32())))?,
            Data::Bytes(v) => {
                for e in v {
                    match std::str::from_utf8(e) {
                        Ok(s) => seq.serialize_element(s)?,
                        Err(_) => seq.serialize_element(e)?,
                    }
                }
            }
            Data::Bool(v) => v.iter().try_for_each(|x| seq.serialize_element(x))?,
            Data::U8(v) => v.iter().try_for_each(|x| seq.serialize_element(x))?,
            Data::U16(v) => v.iter().try_for_each(|x| seq.serialize_element(x))?,
            Data::U32(v) => v.iter().try_for_each(|x| seq.serialize_element(x))?,
            Data::U64(v) => v.iter().try_for_each(|x| seq.serialize_element(x))?,
            Data::I8(v) => v.iter().try_for_each(|x| seq.serialize_element(x))?,
            Data::I16(v) => v.iter().try_for_each(|x| seq.serialize_element(x))?,
            Data::I32(v) => v.iter().try_for_each(|x| seq.serialize_element(x))?,
            Data::I64(v) => v.iter().try_for_each(|x| seq.serialize_element(x))?,
            Data::F32(v) => v.iter().try_for_each(|&x| seq.serialize_element(&Float(x)))?,
            Data::F64(v) => v.iter().try_for_each(|&x| seq.serialize_element(&Float(x)))?,
        }
        seq.end()
    }
}

/// A float as a JSON number, or as the string `"NaN"`, `"Infinity"` or
/// `"-Infinity"` (JSON numbers cannot express those).
struct Float<T>(T);

macro_rules! float_serialize {
    ($t:ty, $method:ident) => {
        impl Serialize for Float<$t> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let x = self.0;
                if x.is_nan() {
                    s.serialize_str("NaN")
                } else if x == <$t>::INFINITY {
                    s.serialize_str("Infinity")
                } else if x == <$t>::NEG_INFINITY {
                    s.serialize_str("-Infinity")
                } else {
                    s.$method(x)
                }
            }
        }
    };
}
float_serialize!(f32, serialize_f32);
float_serialize!(f64, serialize_f64);
