//! V2 JSON for tensor data, protocol-neutral: the HTTP codec, golden-set
//! case files and the prediction log read and write tensor `data` here.
//!
//! Reading: a flat or nested JSON array is parsed straight into the typed
//! little-endian buffer of [`TensorData`] (no intermediate `Value` per
//! element). Integers are range-checked for their type; FP16 and BF16
//! elements are JSON numbers rounded to the nearest value of the type (ties
//! to even; beyond its range ±infinity).
//!
//! Writing: [`Data`] serialises a tensor's data as a flat JSON array straight
//! from its bytes: numbers (FP16 and BF16 widened to f32, which prints the
//! shortest decimal that reads back as the same value; NaN and ±Inf as
//! `null`, JSON having neither) and booleans as `true` / `false`.
//!
//! # BYTES
//!
//! One rule, the KServe V2 one: a BYTES element is a JSON string. Read, the
//! string's UTF-8 bytes are the element. Written, an element that is valid
//! UTF-8 is that string. An inference response never writes one that is not
//! (the HTTP codec asks [`invalid_utf8_element`] first and answers 400: such
//! an output must be requested in binary form, as in Triton); records the
//! server writes for itself (the prediction log) have each invalid sequence
//! replaced by U+FFFD, so the JSON stays valid, and can record a tensor's
//! SHA-256 instead of its data. Exact arbitrary bytes travel in the binary
//! forms (HTTP `binary_data`, gRPC raw contents).

use std::fmt;

use bytes::{BufMut, Bytes};
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::ser::{Error as _, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::{DataType, Tensor, TensorData, bound_message, echo, element_count};
use crate::error::{Error, Result};

/// How deeply `data` arrays may nest (Triton's limit): a tensor of rank 100
/// written as nested arrays, and no deeper.
pub const MAX_DATA_DEPTH: usize = 100;

/// Parses the JSON text `raw` (a flat or nested array) as `count` elements
/// of `datatype`; errors name the tensor `name` (already echo-bounded).
pub fn parse_data(raw: &RawValue, datatype: DataType, count: usize, name: &str) -> Result<TensorData> {
    // Each JSON element takes at least two bytes ("0,"): the allocation is
    // bounded by what the client actually sent, not by the shape it declared.
    let bound = count.min(raw.get().len() / 2 + 1);
    let mut de = serde_json::Deserializer::from_str(raw.get());
    parse_with(&mut de, datatype, count, bound, name)
}

/// Parses an already parsed JSON value (a flat or nested array) as `count`
/// elements of `datatype`.
pub fn parse_value(value: &Value, datatype: DataType, count: usize, name: &str) -> Result<TensorData> {
    // The value is in memory already: start small and grow with what it holds.
    parse_with(value, datatype, count, count.min(1024), name)
}

/// Parses a V2 JSON tensor object, `{"name", "datatype", "shape", "data"}`
/// (other members are ignored), with at most `max_elements` elements.
pub fn parse_tensor(value: &Value, max_elements: usize) -> Result<Tensor> {
    #[derive(Deserialize)]
    struct Head {
        name: String,
        shape: Vec<i64>,
        datatype: String,
    }
    let head = Head::deserialize(value).map_err(|e| Error::invalid(bound_message(format!("malformed tensor: {e}"))))?;
    let name = echo(&head.name);
    let datatype = DataType::parse(&head.datatype).map_err(|e| Error::invalid(format!("input '{name}': {e}")))?;
    let count = element_count(&head.shape, max_elements)
        .map_err(|e| Error::new(e.kind, format!("input '{name}': {}", e.message)))?;
    let data = value
        .get("data")
        .ok_or_else(|| Error::invalid(format!("input '{name}' has no 'data'")))?;
    let data = parse_value(data, datatype, count, &name)?;
    Ok(Tensor {
        name: head.name,
        datatype,
        shape: head.shape,
        data,
    })
}

fn parse_with<'de, D: Deserializer<'de>>(
    de: D,
    datatype: DataType,
    count: usize,
    capacity: usize,
    name: &str,
) -> Result<TensorData> {
    let mut sink = Sink::new(datatype, count, capacity);
    (&mut sink)
        .deserialize(de)
        .map_err(|e| Error::invalid(bound_message(format!("input '{name}': {e}"))))?;
    if sink.seen != count {
        return Err(Error::invalid(format!(
            "input '{name}': 'data' has {} elements but the shape holds {count}",
            sink.seen
        )));
    }
    Ok(sink.finish())
}

/// Elements a one-pass read reserves room for before it has seen any: it
/// does not know the size of the body, so a declared shape must not decide
/// the first allocation (a 78-byte body declaring 65,536 elements would take
/// 512 KiB); the buffer grows by doubling with what the client actually sent.
const ONE_PASS_CAPACITY: usize = 1024;

/// Reads `count` elements of `datatype` straight from a deserializer at a
/// `data` array, in the same pass as the rest of the request (the HTTP
/// codec, when `datatype` and `shape` come before `data`). Every failure,
/// a count other than `count` included, is the deserializer's error without
/// the tensor's name: the caller reads the request again the two-pass way
/// ([`parse_data`]) to say what is wrong.
pub fn deserialize_data<'de, D: Deserializer<'de>>(
    de: D,
    datatype: DataType,
    count: usize,
) -> Result<TensorData, D::Error> {
    let mut sink = Sink::new(datatype, count, count.min(ONE_PASS_CAPACITY));
    (&mut sink).deserialize(de)?;
    if sink.seen != count {
        return Err(de::Error::custom("'data' does not hold as many elements as the shape"));
    }
    Ok(sink.finish())
}

struct Sink {
    datatype: DataType,
    expected: usize,
    seen: usize,
    fixed: Vec<u8>,
    strings: Vec<Bytes>,
    /// Arrays open around the element being read.
    depth: usize,
}

impl Sink {
    fn new(datatype: DataType, expected: usize, capacity: usize) -> Sink {
        Sink {
            datatype,
            expected,
            seen: 0,
            fixed: Vec::with_capacity(capacity * datatype.size().unwrap_or(0)),
            strings: Vec::new(),
            depth: 0,
        }
    }

    fn finish(self) -> TensorData {
        match self.datatype {
            DataType::Bytes => TensorData::Bytes(self.strings),
            _ => TensorData::Fixed(Bytes::from(self.fixed)),
        }
    }

    fn admit<E: de::Error>(&mut self) -> Result<(), E> {
        if self.seen == self.expected {
            return Err(E::custom(format!(
                "'data' has more elements than the shape holds ({})",
                self.expected
            )));
        }
        self.seen += 1;
        Ok(())
    }

    fn push_int<E: de::Error>(&mut self, v: i128) -> Result<(), E> {
        self.admit()?;
        let dt = self.datatype;
        let range = |lo: i128, hi: i128| {
            if v < lo || v > hi {
                Err(E::custom(format!("{v} is out of range for {}", dt.as_str())))
            } else {
                Ok(())
            }
        };
        let out = &mut self.fixed;
        match dt {
            DataType::Uint8 => range(0, u8::MAX as i128).map(|_| out.put_u8(v as u8)),
            DataType::Uint16 => range(0, u16::MAX as i128).map(|_| out.put_u16_le(v as u16)),
            DataType::Uint32 => range(0, u32::MAX as i128).map(|_| out.put_u32_le(v as u32)),
            DataType::Uint64 => range(0, u64::MAX as i128).map(|_| out.put_u64_le(v as u64)),
            DataType::Int8 => range(i8::MIN as i128, i8::MAX as i128).map(|_| out.put_i8(v as i8)),
            DataType::Int16 => range(i16::MIN as i128, i16::MAX as i128).map(|_| out.put_i16_le(v as i16)),
            DataType::Int32 => range(i32::MIN as i128, i32::MAX as i128).map(|_| out.put_i32_le(v as i32)),
            DataType::Int64 => range(i64::MIN as i128, i64::MAX as i128).map(|_| out.put_i64_le(v as i64)),
            DataType::Fp32 => {
                out.put_f32_le(v as f32);
                Ok(())
            }
            DataType::Fp64 => {
                out.put_f64_le(v as f64);
                Ok(())
            }
            DataType::Fp16 | DataType::Bf16 => {
                put_half(out, dt, int_to_f64_odd(v));
                Ok(())
            }
            _ => Err(E::custom(format!("expected {} elements, found a number", dt.as_str()))),
        }
    }
}

/// Appends `v` as FP16 or BF16, rounded to nearest (ties to even). `v` must
/// carry at most 21 significant bits, rounded to odd ([`round_to_odd`],
/// [`int_to_f64_odd`]): rounding that once more to 11 (FP16) or 8 (BF16) bits
/// gives the value nearest to the original number, whichever way `half`
/// converts (through f32 in hardware, or from the top 32 bits of the f64).
fn put_half(out: &mut Vec<u8>, datatype: DataType, v: f64) {
    match datatype {
        DataType::Fp16 => out.put_u16_le(half::f16::from_f64(v).to_bits()),
        _ => out.put_u16_le(half::bf16::from_f64(v).to_bits()),
    }
}

/// Bits of an f64 below its 21 most significant ones.
const BELOW_21_BITS: u64 = (1 << 32) - 1;

/// `v` rounded to odd at 21 significant bits: cut the lower mantissa bits and,
/// when any was set, set the last bit kept. Infinities and NaN keep their class.
fn round_to_odd(v: f64) -> f64 {
    let bits = v.to_bits();
    if bits & BELOW_21_BITS == 0 {
        v
    } else {
        f64::from_bits((bits & !BELOW_21_BITS) | (BELOW_21_BITS + 1))
    }
}

/// An integer as an f64 rounded to odd at 21 significant bits (exact up to 2^21).
fn int_to_f64_odd(v: i128) -> f64 {
    let m = v.unsigned_abs();
    let bits = 128 - m.leading_zeros();
    let r = if bits <= 21 {
        m as f64
    } else {
        let shift = bits - 21;
        let mut q = m >> shift;
        if m & ((1u128 << shift) - 1) != 0 {
            q |= 1;
        }
        // q < 2^21 and the scale is a power of two: both exact.
        q as f64 * f64::from_bits(u64::from(1023 + shift) << 52)
    };
    if v < 0 { -r } else { r }
}

impl<'de> DeserializeSeed<'de> for &mut Sink {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for &mut Sink {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a flat or nested array of {} values", self.datatype.as_str())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth == MAX_DATA_DEPTH {
            return Err(de::Error::custom(format!(
                "'data' arrays are nested more than {MAX_DATA_DEPTH} deep"
            )));
        }
        self.depth += 1;
        while seq.next_element_seed(&mut *self)?.is_some() {}
        self.depth -= 1;
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        if self.datatype != DataType::Bool {
            return Err(E::custom(format!(
                "expected {} elements, found a boolean",
                self.datatype.as_str()
            )));
        }
        self.admit()?;
        self.fixed.push(u8::from(v));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push_int(v as i128)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push_int(v as i128)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        match self.datatype {
            DataType::Fp32 => {
                self.admit()?;
                self.fixed.put_f32_le(v as f32);
                Ok(())
            }
            DataType::Fp64 => {
                self.admit()?;
                self.fixed.put_f64_le(v);
                Ok(())
            }
            dt @ (DataType::Fp16 | DataType::Bf16) => {
                self.admit()?;
                put_half(&mut self.fixed, dt, round_to_odd(v));
                Ok(())
            }
            dt if v.fract() == 0.0 && v.abs() < 1.8e19 => {
                if dt == DataType::Bool || dt == DataType::Bytes {
                    return Err(E::custom(format!("expected {} elements, found a number", dt.as_str())));
                }
                self.push_int(v as i128)
            }
            dt => Err(E::custom(format!(
                "{v} is not an integer, as {} elements must be",
                dt.as_str()
            ))),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        if self.datatype != DataType::Bytes {
            return Err(E::custom(format!(
                "expected {} elements, found a string",
                self.datatype.as_str()
            )));
        }
        self.admit()?;
        self.strings.push(Bytes::copy_from_slice(v.as_bytes()));
        Ok(())
    }
}

/// The index of the first BYTES element of `t` that is not valid UTF-8 (and
/// so cannot be a JSON string without changing it); `None` for other types.
pub fn invalid_utf8_element(t: &Tensor) -> Option<usize> {
    if t.datatype != DataType::Bytes {
        return None;
    }
    match &t.data {
        TensorData::Bytes(elements) => elements.iter().position(|e| std::str::from_utf8(e).is_err()),
        TensorData::Fixed(b) => {
            let mut rest: &[u8] = b;
            let mut index = 0;
            while rest.len() >= 4 {
                let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let element = rest.get(4..4 + len)?;
                if std::str::from_utf8(element).is_err() {
                    return Some(index);
                }
                rest = &rest[4 + len..];
                index += 1;
            }
            None
        }
    }
}

/// A tensor's data as a flat JSON array, serialised straight from its bytes
/// (BYTES elements by the module's rule).
pub struct Data<'a>(pub &'a Tensor);

impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.0;
        let mut seq = s.serialize_seq(Some(t.data_elements()))?;
        match &t.data {
            TensorData::Bytes(elements) => {
                for e in elements {
                    seq.serialize_element(&String::from_utf8_lossy(e))?;
                }
            }
            // BYTES in raw form (4-byte little-endian length, then the bytes).
            TensorData::Fixed(b) if t.datatype == DataType::Bytes => {
                let mut rest: &[u8] = b;
                while !rest.is_empty() {
                    let len = rest
                        .get(..4)
                        .map(|p| u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as usize)
                        .filter(|&len| len <= rest.len() - 4)
                        .ok_or_else(|| S::Error::custom("malformed raw BYTES data"))?;
                    seq.serialize_element(&String::from_utf8_lossy(&rest[4..4 + len]))?;
                    rest = &rest[4 + len..];
                }
            }
            TensorData::Fixed(b) => serialize_fixed(&mut seq, t.datatype, b)?,
        }
        seq.end()
    }
}

/// Appends the elements of a fixed-size buffer to a JSON sequence, straight
/// from the little-endian bytes. BYTES buffers add nothing here: [`Data`]
/// handles them.
fn serialize_fixed<S: SerializeSeq>(seq: &mut S, datatype: DataType, b: &[u8]) -> Result<(), S::Error> {
    macro_rules! each {
        ($n:literal, $conv:expr) => {
            for c in b.chunks_exact($n) {
                let arr: [u8; $n] = c.try_into().expect("chunks_exact yields full chunks");
                seq.serialize_element(&$conv(arr))?;
            }
        };
    }
    match datatype {
        DataType::Bool => each!(1, |a: [u8; 1]| a[0] != 0),
        DataType::Uint8 => each!(1, u8::from_le_bytes),
        DataType::Int8 => each!(1, i8::from_le_bytes),
        DataType::Uint16 => each!(2, u16::from_le_bytes),
        DataType::Int16 => each!(2, i16::from_le_bytes),
        DataType::Fp16 => each!(2, |a| half::f16::from_le_bytes(a).to_f32()),
        DataType::Bf16 => each!(2, |a| half::bf16::from_le_bytes(a).to_f32()),
        DataType::Uint32 => each!(4, u32::from_le_bytes),
        DataType::Int32 => each!(4, i32::from_le_bytes),
        DataType::Fp32 => each!(4, f32::from_le_bytes),
        DataType::Uint64 => each!(8, u64::from_le_bytes),
        DataType::Int64 => each!(8, i64::from_le_bytes),
        DataType::Fp64 => each!(8, f64::from_le_bytes),
        DataType::Bytes => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_tensor(elements: &[&[u8]]) -> Tensor {
        Tensor {
            name: "s".into(),
            datatype: DataType::Bytes,
            shape: vec![elements.len() as i64],
            data: TensorData::Bytes(elements.iter().map(|e| Bytes::copy_from_slice(e)).collect()),
        }
    }

    #[test]
    fn bytes_elements_are_strings_and_invalid_utf8_is_replaced() {
        let t = bytes_tensor(&[b"text", b"", "é".as_bytes(), b"\xff\x00\x01"]);
        let v = serde_json::to_value(Data(&t)).unwrap();
        assert_eq!(v, serde_json::json!(["text", "", "é", "\u{fffd}\u{0}\u{1}"]));
        // The raw (length-prefixed) form writes the same strings.
        let raw = Tensor {
            data: TensorData::Fixed(t.to_raw()),
            ..t.clone()
        };
        assert_eq!(serde_json::to_value(Data(&raw)).unwrap(), v);
        let truncated = Tensor {
            data: TensorData::Fixed(t.to_raw().slice(..5)),
            ..t
        };
        assert!(serde_json::to_value(Data(&truncated)).is_err());
    }

    #[test]
    fn invalid_utf8_elements_are_found_in_both_forms() {
        let t = bytes_tensor(&[b"text", "é".as_bytes(), b"\xff\x00"]);
        assert_eq!(invalid_utf8_element(&t), Some(2));
        let raw = Tensor {
            data: TensorData::Fixed(t.to_raw()),
            ..t.clone()
        };
        assert_eq!(invalid_utf8_element(&raw), Some(2));
        assert_eq!(invalid_utf8_element(&bytes_tensor(&[b"ok", b""])), None);
        assert_eq!(invalid_utf8_element(&Tensor::zeros("f", DataType::Fp32, vec![2])), None);
    }

    #[test]
    fn data_nests_at_most_the_documented_depth() {
        let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let raw = serde_json::value::RawValue::from_string(nested(MAX_DATA_DEPTH)).unwrap();
        assert!(parse_data(&raw, DataType::Int32, 1, "x").is_ok());
        let raw = serde_json::value::RawValue::from_string(nested(MAX_DATA_DEPTH + 1)).unwrap();
        let e = parse_data(&raw, DataType::Int32, 1, "x").unwrap_err();
        assert!(e.message.contains("nested more than 100 deep"), "{}", e.message);
    }

    #[test]
    fn bytes_strings_read_back_as_their_utf8() {
        let v = serde_json::json!({"name": "s", "datatype": "BYTES", "shape": [2], "data": [["é"], ["\u{fffd}"]]});
        let t = parse_tensor(&v, 16).unwrap();
        assert_eq!(t.data, bytes_tensor(&["é".as_bytes(), "\u{fffd}".as_bytes()]).data);
        let raw = RawValue::from_string(r#"["a", 1]"#.into()).unwrap();
        let e = parse_data(&raw, DataType::Bytes, 2, "s").unwrap_err();
        assert!(e.message.contains("found a number"), "{e}");
    }

    #[test]
    fn numbers_round_trip_and_non_finite_floats_are_null() {
        let v = serde_json::json!({"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [[1.5, -2], [0, 3]]});
        let t = parse_tensor(&v, 16).unwrap();
        assert_eq!(
            serde_json::to_value(Data(&t)).unwrap(),
            serde_json::json!([1.5, -2.0, 0.0, 3.0])
        );
        let nan = Tensor::from_f64("n", DataType::Fp64, vec![2], &[f64::NAN, f64::INFINITY]).unwrap();
        assert_eq!(
            serde_json::to_value(Data(&nan)).unwrap(),
            serde_json::json!([null, null])
        );
        let b = Tensor::from_f64("b", DataType::Bool, vec![2], &[1.0, 0.0]).unwrap();
        assert_eq!(
            serde_json::to_value(Data(&b)).unwrap(),
            serde_json::json!([true, false])
        );
    }

    #[test]
    fn tensor_objects_are_checked() {
        for (v, expect) in [
            (
                serde_json::json!({"name": "x", "datatype": "FP32", "shape": [2]}),
                "no 'data'",
            ),
            (
                serde_json::json!({"name": "x", "datatype": "FLOAT", "shape": [1], "data": [1]}),
                "unknown datatype",
            ),
            (
                serde_json::json!({"name": "x", "datatype": "FP32", "shape": [100], "data": []}),
                "limit",
            ),
            (
                serde_json::json!({"name": "x", "datatype": "INT8", "shape": [1], "data": [300]}),
                "out of range",
            ),
            (
                serde_json::json!({"datatype": "FP32", "shape": [1], "data": [1]}),
                "malformed tensor",
            ),
            (serde_json::json!([1]), "malformed tensor"),
        ] {
            let e = parse_tensor(&v, 16).unwrap_err();
            assert!(e.message.contains(expect), "{v}: {e}");
        }
    }
}
