//! Tensors as they cross the server: a datatype, a shape and little-endian
//! bytes. Frontends decode into this form; the executor concatenates rows of
//! several requests once into the batch buffer and slices results back.
//! [`json`] reads and writes their data as V2 JSON.

pub mod json;

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};

/// Longest piece of client- or file-supplied text (a name, a datatype) that an
/// error message echoes.
pub const MAX_ECHO: usize = 64;
/// Longest error message built around a parser's own message, which may quote
/// the input.
pub const MAX_MESSAGE: usize = 512;

/// `text` as an error message echoes it: at most [`MAX_ECHO`] bytes, cut on a
/// character boundary, with the full length noted where it was cut.
pub fn echo(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_ECHO {
        return Cow::Borrowed(text);
    }
    Cow::Owned(format!("{}… ({} bytes)", prefix(text, MAX_ECHO - 16), text.len()))
}

/// A shape as an error message echoes it: at most 8 dimensions, then how many
/// there are.
pub fn echo_shape(shape: &[i64]) -> String {
    if shape.len() <= 8 {
        return format!("{shape:?}");
    }
    let shown: Vec<String> = shape[..8].iter().map(i64::to_string).collect();
    format!("[{}, … ({} dimensions)]", shown.join(", "), shape.len())
}

/// Bounds a message to [`MAX_MESSAGE`] bytes, keeping its start (what went
/// wrong) and its end (where parsers say line and column).
pub fn bound_message(message: String) -> String {
    if message.len() <= MAX_MESSAGE {
        return message;
    }
    let head = prefix(&message, MAX_MESSAGE * 3 / 4);
    let mut tail_start = message.len() - MAX_MESSAGE / 5;
    while !message.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    format!(
        "{head} … ({} bytes left out) … {}",
        tail_start - head.len(),
        &message[tail_start..]
    )
}

fn prefix(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The 14 datatypes of the protocol (Triton's list, which adds BF16 to OIP's 13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// 1 byte, 0 or 1.
    Bool,
    /// Unsigned 8-bit integer.
    Uint8,
    /// Unsigned 16-bit integer.
    Uint16,
    /// Unsigned 32-bit integer.
    Uint32,
    /// Unsigned 64-bit integer.
    Uint64,
    /// Signed 8-bit integer.
    Int8,
    /// Signed 16-bit integer.
    Int16,
    /// Signed 32-bit integer.
    Int32,
    /// Signed 64-bit integer.
    Int64,
    /// IEEE half precision (in JSON: numbers, rounded to nearest).
    Fp16,
    /// IEEE single precision.
    Fp32,
    /// IEEE double precision.
    Fp64,
    /// Variable-length byte strings.
    Bytes,
    /// bfloat16 (in JSON: numbers, rounded to nearest).
    Bf16,
}

impl DataType {
    /// Every datatype, in the order of Triton's config enum.
    pub const ALL: [DataType; 14] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
        DataType::Bf16,
    ];

    /// The protocol's name (`"FP32"`, `"BYTES"`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
            DataType::Bf16 => "BF16",
        }
    }

    /// Parses the protocol's name.
    pub fn parse(name: &str) -> Result<DataType> {
        DataType::ALL
            .into_iter()
            .find(|d| d.as_str() == name)
            .ok_or_else(|| Error::invalid(format!("unknown datatype '{}'", echo(name))))
    }

    /// Size of one element in bytes; `None` for BYTES.
    pub const fn size(self) -> Option<usize> {
        match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => Some(1),
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 | DataType::Bf16 => Some(2),
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => Some(4),
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => Some(8),
            DataType::Bytes => None,
        }
    }

    /// Number in Triton's `DataType` config enum (`TYPE_FP32` = 11, ...).
    pub fn config_enum(self) -> i32 {
        DataType::ALL.iter().position(|d| *d == self).unwrap_or(0) as i32 + 1
    }

    /// From Triton's `DataType` config enum.
    pub fn from_config_enum(value: i32) -> Option<DataType> {
        usize::try_from(value - 1)
            .ok()
            .and_then(|i| DataType::ALL.get(i).copied())
    }

    /// Triton's config spelling (`TYPE_FP32`, `TYPE_STRING` for BYTES).
    pub fn config_name(self) -> &'static str {
        match self {
            DataType::Bytes => "TYPE_STRING",
            DataType::Bool => "TYPE_BOOL",
            DataType::Uint8 => "TYPE_UINT8",
            DataType::Uint16 => "TYPE_UINT16",
            DataType::Uint32 => "TYPE_UINT32",
            DataType::Uint64 => "TYPE_UINT64",
            DataType::Int8 => "TYPE_INT8",
            DataType::Int16 => "TYPE_INT16",
            DataType::Int32 => "TYPE_INT32",
            DataType::Int64 => "TYPE_INT64",
            DataType::Fp16 => "TYPE_FP16",
            DataType::Fp32 => "TYPE_FP32",
            DataType::Fp64 => "TYPE_FP64",
            DataType::Bf16 => "TYPE_BF16",
        }
    }
}

/// The elements of a tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// Fixed-size elements, little-endian, row-major, no padding.
    Fixed(Bytes),
    /// BYTES elements, one entry per element (arbitrary bytes, not only UTF-8).
    Bytes(Vec<Bytes>),
}

/// A named tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Input or output name.
    pub name: String,
    /// Element type.
    pub datatype: DataType,
    /// Shape; every dimension is non-negative once validated.
    pub shape: Vec<i64>,
    /// Elements.
    pub data: TensorData,
}

impl Tensor {
    /// Number of elements in `data`.
    pub fn data_elements(&self) -> usize {
        match (&self.data, self.datatype.size()) {
            (TensorData::Fixed(b), Some(size)) => b.len() / size,
            (TensorData::Fixed(b), None) => b.len(),
            (TensorData::Bytes(v), _) => v.len(),
        }
    }

    /// Bytes the tensor occupies in raw form (BYTES: with 4-byte length prefixes).
    pub fn raw_len(&self) -> usize {
        match &self.data {
            TensorData::Fixed(b) => b.len(),
            TensorData::Bytes(v) => v.iter().map(|e| e.len() + 4).sum(),
        }
    }

    /// The elements as `f64` (numeric types; BOOL as 0/1), for comparisons and
    /// statistics off the hot path. `None` for BYTES or a malformed buffer.
    pub fn values_f64(&self) -> Option<Vec<f64>> {
        let TensorData::Fixed(b) = &self.data else {
            return None;
        };
        let size = self.datatype.size()?;
        if b.len() % size != 0 {
            return None;
        }
        Some(b.chunks_exact(size).map(|c| self.decode_f64(c)).collect())
    }

    /// Elements of a numeric tensor (`None` for BYTES or ragged data).
    pub fn numeric_len(&self) -> Option<usize> {
        let TensorData::Fixed(b) = &self.data else {
            return None;
        };
        let size = self.datatype.size()?;
        (b.len() % size == 0).then_some(b.len() / size)
    }

    /// Element `i` of a numeric tensor as `f64` (`None` for BYTES or past the end):
    /// one element decoded, where [`Tensor::values_f64`] decodes them all.
    pub fn value_f64(&self, i: usize) -> Option<f64> {
        let TensorData::Fixed(b) = &self.data else {
            return None;
        };
        let size = self.datatype.size()?;
        let start = i.checked_mul(size)?;
        let c = b.get(start..start.checked_add(size)?)?;
        Some(self.decode_f64(c))
    }

    /// One element's little-endian bytes as `f64`.
    fn decode_f64(&self, c: &[u8]) -> f64 {
        match self.datatype {
            DataType::Bool => f64::from(u8::from(c[0] != 0)),
            DataType::Uint8 => f64::from(c[0]),
            DataType::Int8 => f64::from(c[0] as i8),
            DataType::Uint16 => f64::from(u16::from_le_bytes([c[0], c[1]])),
            DataType::Int16 => f64::from(i16::from_le_bytes([c[0], c[1]])),
            DataType::Uint32 => f64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            DataType::Int32 => f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            DataType::Fp32 => f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            DataType::Uint64 => u64::from_le_bytes(c.try_into().unwrap_or_default()) as f64,
            DataType::Int64 => i64::from_le_bytes(c.try_into().unwrap_or_default()) as f64,
            DataType::Fp64 => f64::from_le_bytes(c.try_into().unwrap_or_default()),
            DataType::Fp16 => half::f16::from_le_bytes([c[0], c[1]]).to_f64(),
            DataType::Bf16 => half::bf16::from_le_bytes([c[0], c[1]]).to_f64(),
            DataType::Bytes => f64::NAN,
        }
    }

    /// A numeric tensor from `f64` values (rounded / saturated to the datatype);
    /// `None` for BYTES or when the count does not match the shape.
    pub fn from_f64(name: &str, datatype: DataType, shape: Vec<i64>, values: &[f64]) -> Option<Tensor> {
        let count: usize = shape
            .iter()
            .map(|&d| usize::try_from(d).ok())
            .product::<Option<usize>>()?;
        if count != values.len() {
            return None;
        }
        let mut out = Vec::with_capacity(count * datatype.size()?);
        for &v in values {
            match datatype {
                DataType::Bool => out.push(u8::from(v != 0.0)),
                DataType::Uint8 => out.push(v as u8),
                DataType::Int8 => out.push(v as i8 as u8),
                DataType::Uint16 => out.extend_from_slice(&(v as u16).to_le_bytes()),
                DataType::Int16 => out.extend_from_slice(&(v as i16).to_le_bytes()),
                DataType::Uint32 => out.extend_from_slice(&(v as u32).to_le_bytes()),
                DataType::Int32 => out.extend_from_slice(&(v as i32).to_le_bytes()),
                DataType::Uint64 => out.extend_from_slice(&(v as u64).to_le_bytes()),
                DataType::Int64 => out.extend_from_slice(&(v as i64).to_le_bytes()),
                DataType::Fp16 => out.extend_from_slice(&half::f16::from_f64(v).to_le_bytes()),
                DataType::Bf16 => out.extend_from_slice(&half::bf16::from_f64(v).to_le_bytes()),
                DataType::Fp32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
                DataType::Fp64 => out.extend_from_slice(&v.to_le_bytes()),
                DataType::Bytes => return None,
            }
        }
        Some(Tensor {
            name: name.to_string(),
            datatype,
            shape,
            data: TensorData::Fixed(Bytes::from(out)),
        })
    }

    /// A tensor of `shape` filled with zeros (BYTES: empty strings). The caller
    /// bounds the element count.
    pub fn zeros(name: &str, datatype: DataType, shape: Vec<i64>) -> Tensor {
        let count: usize = shape.iter().map(|&d| d.max(0) as usize).product();
        let data = match datatype.size() {
            Some(size) => TensorData::Fixed(Bytes::from(vec![0u8; count * size])),
            None => TensorData::Bytes(vec![Bytes::new(); count]),
        };
        Tensor {
            name: name.to_string(),
            datatype,
            shape,
            data,
        }
    }

    /// The raw form: fixed types as they are, BYTES length-prefixed.
    pub fn to_raw(&self) -> Bytes {
        match &self.data {
            TensorData::Fixed(b) => b.clone(),
            TensorData::Bytes(v) => encode_bytes_elements(v),
        }
    }
}

/// Element count of `shape`, checked: negative dims and overflow are errors,
/// and so is a count above `limit` (checked before anything is allocated).
pub fn element_count(shape: &[i64], limit: usize) -> Result<usize> {
    let mut count: usize = 1;
    for &d in shape {
        let d = usize::try_from(d)
            .map_err(|_| Error::invalid(format!("invalid shape {}: negative dimension", echo_shape(shape))))?;
        count = count
            .checked_mul(d)
            .ok_or_else(|| Error::invalid(format!("invalid shape {}: element count overflows", echo_shape(shape))))?;
    }
    if count > limit {
        return Err(Error::too_large(format!(
            "shape {} has {count} elements, more than the limit of {limit}",
            echo_shape(shape)
        )));
    }
    Ok(count)
}

/// Decodes raw BYTES contents (4-byte little-endian length + bytes, repeated)
/// into `expected` elements, slicing `raw` without copying.
pub fn decode_bytes_elements(raw: &Bytes, expected: usize, name: &str) -> Result<Vec<Bytes>> {
    let name = echo(name);
    // Each element takes at least 4 bytes: a bound on the allocation that the
    // client's shape cannot push past the size of the body it actually sent.
    let mut out = Vec::with_capacity(expected.min(raw.len() / 4));
    let mut pos = 0usize;
    while pos < raw.len() {
        let Some(prefix) = raw.get(pos..pos + 4) else {
            return Err(Error::invalid(format!(
                "input '{name}': truncated BYTES element length at offset {pos}"
            )));
        };
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let start = pos + 4;
        let end = start.checked_add(len).filter(|&e| e <= raw.len()).ok_or_else(|| {
            Error::invalid(format!(
                "input '{name}': BYTES element at offset {pos} declares {len} bytes but only {} remain",
                raw.len() - start
            ))
        })?;
        if out.len() == expected {
            return Err(Error::invalid(format!(
                "input '{name}': more BYTES elements than the {expected} its shape holds"
            )));
        }
        out.push(raw.slice(start..end));
        pos = end;
    }
    if out.len() != expected {
        return Err(Error::invalid(format!(
            "input '{name}': {} BYTES elements, but the shape holds {expected}",
            out.len()
        )));
    }
    Ok(out)
}

/// Encodes BYTES elements in raw form.
pub fn encode_bytes_elements(elements: &[Bytes]) -> Bytes {
    let total: usize = elements.iter().map(|e| e.len() + 4).sum();
    let mut buf = BytesMut::with_capacity(total);
    for e in elements {
        buf.put_u32_le(e.len() as u32);
        buf.put_slice(e);
    }
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatype_round_trips() {
        for d in DataType::ALL {
            assert_eq!(DataType::parse(d.as_str()).unwrap(), d);
            assert_eq!(DataType::from_config_enum(d.config_enum()), Some(d));
        }
        assert_eq!(DataType::Fp32.config_enum(), 11);
        assert_eq!(DataType::Bytes.config_enum(), 13);
        assert_eq!(DataType::Bf16.config_enum(), 14);
        assert!(DataType::parse("FLOAT").is_err());
        assert_eq!(DataType::from_config_enum(0), None);
    }

    #[test]
    fn one_element_decodes_like_all_of_them() {
        let t = Tensor::from_f64("x", DataType::Int16, vec![3], &[1.0, -2.0, 3.0]).unwrap();
        assert_eq!(t.numeric_len(), Some(3));
        let all = t.values_f64().unwrap();
        let one: Vec<f64> = (0..3).map(|i| t.value_f64(i).unwrap()).collect();
        assert_eq!(one, all);
        assert_eq!(t.value_f64(3), None);
        assert_eq!(t.value_f64(usize::MAX), None);
    }

    #[test]
    fn element_count_rejects_overflow_and_limits() {
        assert_eq!(element_count(&[2, 3], 100).unwrap(), 6);
        assert_eq!(element_count(&[], 100).unwrap(), 1);
        let e = element_count(&[1 << 32, 1 << 32], usize::MAX).unwrap_err();
        assert!(e.message.contains("overflows"), "{e}");
        assert!(element_count(&[-1, 2], 100).is_err());
        let e = element_count(&[1000, 1000], 10).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::TooLarge);
    }

    #[test]
    fn echoes_are_bounded() {
        assert_eq!(echo("INPUT0"), "INPUT0");
        let long = "é".repeat(1000);
        let e = echo(&long);
        assert!(e.len() <= MAX_ECHO && e.ends_with("… (2000 bytes)"), "{e}");
        assert_eq!(echo_shape(&[1, -2]), "[1, -2]");
        assert_eq!(echo_shape(&[3; 9]), "[3, 3, 3, 3, 3, 3, 3, 3, … (9 dimensions)]");
        assert_eq!(bound_message("short".into()), "short");
        let m = bound_message(format!("bad {} at line 1 column 7", "é".repeat(5000)));
        assert!(m.len() <= MAX_MESSAGE + 40 && m.starts_with("bad é") && m.ends_with("at line 1 column 7"));
        assert!(m.contains("bytes left out"), "{m}");
    }

    #[test]
    fn bytes_elements_round_trip_arbitrary_bytes() {
        let elems = vec![
            Bytes::from_static(b""),
            Bytes::from_static(b"\0\xff\xfe"),
            Bytes::from_static(b"hello"),
        ];
        let raw = encode_bytes_elements(&elems);
        assert_eq!(decode_bytes_elements(&raw, 3, "x").unwrap(), elems);
        assert!(decode_bytes_elements(&raw, 2, "x").is_err());
        assert!(decode_bytes_elements(&raw, 4, "x").is_err());
        assert!(decode_bytes_elements(&raw.slice(..raw.len() - 1), 3, "x").is_err());
        let huge = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 1]);
        assert!(decode_bytes_elements(&huge, 1, "x").is_err());
    }
}
