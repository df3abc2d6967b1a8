//! Typed tensors and their two wire forms: raw little-endian bytes (gRPC
//! `raw_*_contents`, the HTTP binary extension) and JSON `data` arrays
//! (in [`json`]).

mod json;

pub(crate) use json::JsonData;
use serde_json::Value;

use crate::ClientError;

/// Tensor element data, typed. FP16/BF16 carried as raw u16 bits.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// `BOOL` (one byte on the wire, 0 or 1).
    Bool(Vec<bool>),
    /// `UINT8`.
    U8(Vec<u8>),
    /// `UINT16`.
    U16(Vec<u16>),
    /// `UINT32`.
    U32(Vec<u32>),
    /// `UINT64`.
    U64(Vec<u64>),
    /// `INT8`.
    I8(Vec<i8>),
    /// `INT16`.
    I16(Vec<i16>),
    /// `INT32`.
    I32(Vec<i32>),
    /// `INT64`.
    I64(Vec<i64>),
    /// `FP16`, as the bits of each IEEE half-precision value.
    F16(Vec<u16>),
    /// `FP32`.
    F32(Vec<f32>),
    /// `FP64`.
    F64(Vec<f64>),
    /// `BYTES`: one byte string per element.
    Bytes(Vec<Vec<u8>>),
    /// `BF16`, as the bits of each bfloat16 value.
    Bf16(Vec<u16>),
}

/// Runs `$body` with `$v` bound to the vector inside any [`Data`] variant.
macro_rules! with_vec {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            Data::Bool($v) => $body,
            Data::U8($v) => $body,
            Data::U16($v) => $body,
            Data::U32($v) => $body,
            Data::U64($v) => $body,
            Data::I8($v) => $body,
            Data::I16($v) => $body,
            Data::I32($v) => $body,
            Data::I64($v) => $body,
            Data::F16($v) => $body,
            Data::F32($v) => $body,
            Data::F64($v) => $body,
            Data::Bytes($v) => $body,
            Data::Bf16($v) => $body,
        }
    };
}

impl Data {
    /// Number of elements.
    pub fn len(&self) -> usize {
        with_vec!(self, v => v.len())
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The protocol's datatype name (`"FP32"`, `"BYTES"`, ...).
    pub fn datatype(&self) -> &'static str {
        match self {
            Data::Bool(_) => "BOOL",
            Data::U8(_) => "UINT8",
            Data::U16(_) => "UINT16",
            Data::U32(_) => "UINT32",
            Data::U64(_) => "UINT64",
            Data::I8(_) => "INT8",
            Data::I16(_) => "INT16",
            Data::I32(_) => "INT32",
            Data::I64(_) => "INT64",
            Data::F16(_) => "FP16",
            Data::F32(_) => "FP32",
            Data::F64(_) => "FP64",
            Data::Bytes(_) => "BYTES",
            Data::Bf16(_) => "BF16",
        }
    }

    /// Decodes `count` elements of `datatype` from raw little-endian bytes.
    fn from_raw(datatype: &str, count: usize, raw: &[u8]) -> Result<Data, String> {
        macro_rules! fixed {
            ($variant:ident, $t:ty) => {{
                const N: usize = std::mem::size_of::<$t>();
                let need = count
                    .checked_mul(N)
                    .ok_or_else(|| format!("{count} elements of {datatype} are more than memory can hold"))?;
                if raw.len() != need {
                    return Err(format!(
                        "{} bytes of {datatype} data, but {count} elements need {need}",
                        raw.len()
                    ));
                }
                Data::$variant(
                    raw.chunks_exact(N)
                        .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunks_exact yields N bytes")))
                        .collect(),
                )
            }};
        }
        Ok(match datatype {
            "BOOL" => {
                if raw.len() != count {
                    return Err(format!(
                        "{} bytes of BOOL data, but {count} elements need {count}",
                        raw.len()
                    ));
                }
                Data::Bool(raw.iter().map(|&b| b != 0).collect())
            }
            "UINT8" => fixed!(U8, u8),
            "UINT16" => fixed!(U16, u16),
            "UINT32" => fixed!(U32, u32),
            "UINT64" => fixed!(U64, u64),
            "INT8" => fixed!(I8, i8),
            "INT16" => fixed!(I16, i16),
            "INT32" => fixed!(I32, i32),
            "INT64" => fixed!(I64, i64),
            "FP16" => fixed!(F16, u16),
            "FP32" => fixed!(F32, f32),
            "FP64" => fixed!(F64, f64),
            "BF16" => fixed!(Bf16, u16),
            "BYTES" => Data::Bytes(decode_bytes(raw, count)?),
            other => return Err(format!("unknown datatype '{other}'")),
        })
    }
}

/// Splits BYTES raw data (4-byte little-endian length, then the bytes, per
/// element) into exactly `count` elements.
fn decode_bytes(mut raw: &[u8], count: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::with_capacity(count.min(raw.len() / 4));
    while !raw.is_empty() {
        let Some((len, rest)) = raw.split_first_chunk::<4>() else {
            return Err(format!("BYTES element {} has a truncated length prefix", out.len()));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(format!(
                "BYTES element {} declares {len} bytes but only {} remain",
                out.len(),
                rest.len()
            ));
        }
        out.push(rest[..len].to_vec());
        raw = &rest[len..];
    }
    if out.len() != count {
        return Err(format!("{} BYTES elements, but the shape holds {count}", out.len()));
    }
    Ok(out)
}

/// The 4-byte little-endian length prefix of a BYTES element of `len` bytes.
fn bytes_length_prefix(len: usize) -> Result<[u8; 4], String> {
    u32::try_from(len).map(u32::to_le_bytes).map_err(|_| {
        format!(
            "{len} bytes is too long: the raw format's length prefix holds at most {} bytes",
            u32::MAX
        )
    })
}

/// Number of elements of `shape`; an empty shape is a scalar (one element).
pub(crate) fn element_count(shape: &[i64]) -> Result<usize, String> {
    shape.iter().try_fold(1usize, |acc, &d| {
        let d = usize::try_from(d).map_err(|_| format!("shape {shape:?} has a negative dimension"))?;
        acc.checked_mul(d).ok_or_else(|| format!("shape {shape:?} overflows"))
    })
}

/// A named, shaped tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Input or output name.
    pub name: String,
    /// Dimensions, row-major.
    pub shape: Vec<i64>,
    /// The elements.
    pub data: Data,
}

impl Tensor {
    /// A tensor; the data is not checked against the shape (the server does).
    pub fn new(name: impl Into<String>, shape: Vec<i64>, data: Data) -> Tensor {
        Tensor {
            name: name.into(),
            shape,
            data,
        }
    }

    /// The protocol's datatype name (`"BOOL"`, `"UINT8"`, ... `"BYTES"`, `"BF16"`).
    pub fn datatype(&self) -> &'static str {
        self.data.datatype()
    }

    /// Raw little-endian bytes, row-major, no padding; BYTES elements each
    /// take a 4-byte little-endian length prefix followed by their bytes.
    /// Fails with [`ClientError::Decode`] when a BYTES element is 4 GiB or
    /// larger (the prefix cannot express it).
    pub fn to_raw(&self) -> Result<Vec<u8>, ClientError> {
        macro_rules! le {
            ($v:expr, $n:literal) => {{
                let mut out = Vec::with_capacity($v.len() * $n);
                for x in $v {
                    out.extend_from_slice(&x.to_le_bytes());
                }
                out
            }};
        }
        Ok(match &self.data {
            Data::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
            Data::U8(v) => v.clone(),
            Data::I8(v) => v.iter().map(|x| x.to_le_bytes()[0]).collect(),
            Data::U16(v) | Data::F16(v) | Data::Bf16(v) => le!(v, 2),
            Data::I16(v) => le!(v, 2),
            Data::U32(v) => le!(v, 4),
            Data::I32(v) => le!(v, 4),
            Data::F32(v) => le!(v, 4),
            Data::U64(v) => le!(v, 8),
            Data::I64(v) => le!(v, 8),
            Data::F64(v) => le!(v, 8),
            Data::Bytes(v) => {
                let mut out = Vec::with_capacity(v.iter().map(|e| e.len() + 4).sum());
                for (i, e) in v.iter().enumerate() {
                    let prefix = bytes_length_prefix(e.len())
                        .map_err(|m| ClientError::Decode(format!("tensor '{}': BYTES element {i}: {m}", self.name)))?;
                    out.extend_from_slice(&prefix);
                    out.extend_from_slice(e);
                }
                out
            }
        })
    }

    /// Decodes raw little-endian bytes (the inverse of [`Tensor::to_raw`]);
    /// the byte count must match `shape` exactly.
    pub fn from_raw(name: &str, datatype: &str, shape: Vec<i64>, raw: &[u8]) -> Result<Tensor, ClientError> {
        let data = element_count(&shape)
            .and_then(|count| Data::from_raw(datatype, count, raw))
            .map_err(|e| ClientError::Decode(format!("tensor '{name}': {e}")))?;
        Ok(Tensor::new(name, shape, data))
    }

    /// Decodes a JSON `data` value, flat or nested, whose element count must
    /// match `shape`. FP16/BF16 accept numbers (converted to the nearest
    /// value) although the protocol has no JSON form for them.
    pub fn from_json(name: &str, datatype: &str, shape: Vec<i64>, data: &Value) -> Result<Tensor, ClientError> {
        let data = element_count(&shape)
            .and_then(|count| Data::from_json(datatype, count, data))
            .map_err(|e| ClientError::Decode(format!("tensor '{name}': {e}")))?;
        Ok(Tensor::new(name, shape, data))
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn every_datatype() -> Vec<Tensor> {
        vec![
            Tensor::new("b", vec![2, 2], Data::Bool(vec![true, false, false, true])),
            Tensor::new("u8", vec![3], Data::U8(vec![0, 7, u8::MAX])),
            Tensor::new("u16", vec![3], Data::U16(vec![0, 7, u16::MAX])),
            Tensor::new("u32", vec![3], Data::U32(vec![0, 7, u32::MAX])),
            Tensor::new("u64", vec![3], Data::U64(vec![0, 7, u64::MAX])),
            Tensor::new("i8", vec![3], Data::I8(vec![i8::MIN, -1, i8::MAX])),
            Tensor::new("i16", vec![3], Data::I16(vec![i16::MIN, -1, i16::MAX])),
            Tensor::new("i32", vec![3], Data::I32(vec![i32::MIN, -1, i32::MAX])),
            Tensor::new("i64", vec![3], Data::I64(vec![i64::MIN, -1, i64::MAX])),
            Tensor::new("f16", vec![3], Data::F16(vec![0x3c00, 0xc000, 0x7c00])),
            Tensor::new("f32", vec![1, 3], Data::F32(vec![1.5, -0.1, f32::MAX])),
            Tensor::new("f64", vec![3, 1], Data::F64(vec![1.5, -0.1, f64::MIN_POSITIVE])),
            Tensor::new(
                "bytes",
                vec![4],
                Data::Bytes(vec![
                    b"abc".to_vec(),
                    vec![],
                    vec![0xff, 0x00, 0xfe],
                    "é".as_bytes().to_vec(),
                ]),
            ),
            Tensor::new("bf16", vec![3], Data::Bf16(vec![0x3f80, 0xc000, 0x7f80])),
            Tensor::new("scalar", vec![], Data::I32(vec![42])),
            Tensor::new("empty", vec![0, 4], Data::F32(vec![])),
            Tensor::new("empty_bytes", vec![2, 0], Data::Bytes(vec![])),
        ]
    }

    #[test]
    fn raw_round_trips_every_datatype() {
        for t in every_datatype() {
            let raw = t.to_raw().unwrap();
            let back = Tensor::from_raw(&t.name, t.datatype(), t.shape.clone(), &raw).unwrap();
            assert_eq!(back, t, "{}", t.name);
        }
    }

    #[test]
    fn raw_layout_is_little_endian_with_length_prefixed_bytes() {
        let t = Tensor::new("x", vec![2], Data::I32(vec![1, -2]));
        assert_eq!(t.to_raw().unwrap(), [1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff]);
        let t = Tensor::new("x", vec![2], Data::Bool(vec![true, false]));
        assert_eq!(t.to_raw().unwrap(), [1, 0]);
        let t = Tensor::new("x", vec![3], Data::Bytes(vec![b"ab".to_vec(), vec![], vec![0xff]]));
        assert_eq!(
            t.to_raw().unwrap(),
            [2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0, 1, 0, 0, 0, 0xff]
        );
        let t = Tensor::new("x", vec![1], Data::F16(vec![0x3c00]));
        assert_eq!(t.to_raw().unwrap(), [0x00, 0x3c]);
    }

    #[test]
    fn bytes_elements_too_long_for_the_length_prefix_are_an_error() {
        assert_eq!(bytes_length_prefix(0), Ok([0; 4]));
        assert_eq!(bytes_length_prefix(0x0102_0304), Ok([4, 3, 2, 1]));
        assert_eq!(bytes_length_prefix(u32::MAX as usize), Ok([0xff; 4]));
        let e = bytes_length_prefix(u32::MAX as usize + 1).unwrap_err();
        assert!(e.contains("4294967296 bytes is too long"), "{e}");
        assert!(bytes_length_prefix(usize::MAX).is_err());
    }

    #[test]
    fn absurd_shapes_are_errors_not_panics() {
        let huge = vec![1i64 << 62];
        let e = Tensor::from_raw("t", "INT64", huge.clone(), &[]).unwrap_err();
        assert!(e.to_string().contains("more than memory can hold"), "{e}");
        let e = Tensor::from_json("t", "INT64", huge, &json!([1])).unwrap_err();
        assert!(e.to_string().contains("has 1 elements"), "{e}");
        let e = Tensor::from_raw("t", "BYTES", vec![1i64 << 62], &[]).unwrap_err();
        assert!(e.to_string().contains("the shape holds"), "{e}");
    }

    #[test]
    fn raw_data_that_does_not_match_the_shape_is_rejected() {
        let cases: [(&str, Vec<i64>, Vec<u8>, &str); 7] = [
            ("INT32", vec![2], vec![0; 7], "need 8"),
            ("BOOL", vec![3], vec![0; 2], "need 3"),
            ("BYTES", vec![2], [1, 0, 0, 0, b'a'].to_vec(), "the shape holds 2"),
            ("BYTES", vec![1], [5, 0, 0, 0, b'a'].to_vec(), "declares 5 bytes"),
            (
                "BYTES",
                vec![1],
                [1, 0, 0, 0, b'a', 0].to_vec(),
                "truncated length prefix",
            ),
            ("FP32", vec![-1], vec![], "negative dimension"),
            ("FLOAT", vec![1], vec![0; 4], "unknown datatype"),
        ];
        for (dt, shape, raw, expect) in cases {
            let e = Tensor::from_raw("t", dt, shape, &raw).unwrap_err();
            assert!(
                matches!(&e, ClientError::Decode(m) if m.contains(expect) && m.contains("'t'")),
                "{dt}: {e}"
            );
        }
    }

    #[test]
    fn json_data_round_trips_where_json_is_exact() {
        for t in every_datatype() {
            if !t.data.json_exact() {
                continue;
            }
            let value = t.data.to_json();
            let back = Tensor::from_json(&t.name, t.datatype(), t.shape.clone(), &value).unwrap();
            assert_eq!(back, t, "{}", t.name);
        }
    }

    #[test]
    fn json_data_may_be_nested_and_converts_half_floats() {
        let t = Tensor::from_json("x", "INT8", vec![2, 2], &json!([[1, -2], [3.0, 4]])).unwrap();
        assert_eq!(t.data, Data::I8(vec![1, -2, 3, 4]));
        let t = Tensor::from_json("x", "FP16", vec![2], &json!([1.0, -2.0])).unwrap();
        assert_eq!(t.data, Data::F16(vec![0x3c00, 0xc000]));
        let t = Tensor::from_json("x", "BF16", vec![1], &json!([1.0])).unwrap();
        assert_eq!(t.data, Data::Bf16(vec![0x3f80]));
        assert_eq!(Data::F16(vec![0x3c00, 0x3800]).to_json(), json!([1.0, 0.5]));
        let t = Tensor::from_json("x", "FP32", vec![1], &json!([null])).unwrap();
        assert!(matches!(t.data, Data::F32(ref v) if v[0].is_nan()));
        let t = Tensor::from_json("x", "INT64", vec![], &json!(5)).unwrap();
        assert_eq!(t.data, Data::I64(vec![5]));
    }

    #[test]
    fn bad_json_data_is_rejected() {
        let cases = [
            ("INT8", vec![1], json!([300]), "out of range"),
            ("UINT32", vec![1], json!([-1]), "out of range"),
            ("INT32", vec![1], json!([1.5]), "not an integer"),
            ("INT32", vec![3], json!([1, 2]), "has 2 elements"),
            ("BOOL", vec![1], json!([1]), "not a boolean"),
            ("BYTES", vec![1], json!([1]), "not a string"),
            ("FP32", vec![1], json!(["a"]), "not a number"),
        ];
        for (dt, shape, value, expect) in cases {
            let e = Tensor::from_json("t", dt, shape, &value).unwrap_err();
            assert!(e.to_string().contains(expect), "{dt}: {e}");
        }
    }

    #[test]
    fn display_json_keeps_non_utf8_bytes_and_names_non_finite_floats() {
        let d = Data::Bytes(vec![b"ok".to_vec(), vec![0xff, 1]]);
        assert_eq!(d.to_json(), json!(["ok", [255, 1]]));
        assert!(!d.json_exact());
        let d = Data::F32(vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.1]);
        assert_eq!(d.to_json(), json!(["NaN", "Infinity", "-Infinity", 0.1]));
        assert!(!d.json_exact());
        let back = Tensor::from_json("x", "FP32", vec![4], &d.to_json()).unwrap();
        assert_eq!(format!("{:?}", back.data), format!("{d:?}"));
        let h = Data::Bf16(vec![0x7f80, 0x3f80]);
        assert_eq!(h.to_json(), json!(["Infinity", 1.0]));
        assert!(!Data::F16(vec![]).json_exact());
        assert!(Data::I32(vec![1]).json_exact());
    }
}
