//! JSON of log records and CloudEvents bodies, serialized straight from the
//! tensors' bytes, and RFC 3339 timestamps.

use std::time::SystemTime;

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use sha2::{Digest, Sha256};

use super::Job;
use crate::tensor::{DataType, Tensor, TensorData};

/// `time` as RFC 3339 in UTC with microseconds, e.g. `2025-01-02T03:04:05.123456Z`
/// (times before 1970 are clamped to the epoch).
pub fn rfc3339_micros(time: SystemTime) -> String {
    let d = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// One JSONL line (without the newline).
pub(crate) struct RecordJson<'a>(pub(crate) &'a Job);

impl Serialize for RecordJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let job = self.0;
        let r = &job.record;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("time", &rfc3339_micros(r.time))?;
        map.serialize_entry("id", &r.id)?;
        map.serialize_entry("model", &r.model)?;
        map.serialize_entry("version", &r.version)?;
        map.serialize_entry("label", &r.label)?;
        map.serialize_entry("protocol", r.protocol.label())?;
        match &r.outcome {
            Ok(()) => map.serialize_entry("outcome", "success")?,
            Err((kind, message)) => {
                map.serialize_entry("outcome", kind.mapping().label)?;
                map.serialize_entry("error", message)?;
            }
        }
        map.serialize_entry("latency_us", &u64::try_from(r.latency.as_micros()).unwrap_or(u64::MAX))?;
        if let Some(trace) = &r.trace_id {
            map.serialize_entry("trace_id", trace)?;
        }
        map.serialize_entry("inputs", &Tensors::inputs(job))?;
        map.serialize_entry("outputs", &Tensors::outputs(job))?;
        map.end()
    }
}

/// The CloudEvents request body: the V2 request JSON.
pub(crate) struct RequestBody<'a>(pub(crate) &'a Job);

impl Serialize for RequestBody<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("id", &self.0.record.id)?;
        map.serialize_entry("inputs", &Tensors::inputs(self.0))?;
        map.end()
    }
}

/// The CloudEvents response body: the V2 response JSON, or `{"error": msg}`.
pub(crate) struct ResponseBody<'a>(pub(crate) &'a Job);

impl Serialize for ResponseBody<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = &self.0.record;
        match &r.outcome {
            Err((_, message)) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("error", message)?;
                map.end()
            }
            Ok(()) => {
                let mut map = s.serialize_map(Some(4))?;
                map.serialize_entry("model_name", &r.model)?;
                map.serialize_entry("model_version", &r.version)?;
                map.serialize_entry("id", &r.id)?;
                map.serialize_entry("outputs", &Tensors::outputs(self.0))?;
                map.end()
            }
        }
    }
}

/// A tensor list with the job's privacy rules applied.
struct Tensors<'a> {
    job: &'a Job,
    tensors: &'a [Tensor],
    inputs: bool,
}

impl<'a> Tensors<'a> {
    fn inputs(job: &'a Job) -> Self {
        Tensors {
            job,
            tensors: &job.record.inputs,
            inputs: true,
        }
    }
    fn outputs(job: &'a Job) -> Self {
        Tensors {
            job,
            tensors: &job.record.outputs,
            inputs: false,
        }
    }
}

enum Content {
    Data,
    Hash,
    None,
}

impl Serialize for Tensors<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let named = |list: &[String], t: &Tensor| self.inputs && list.contains(&t.name);
        let mut seq = s.serialize_seq(None)?;
        for t in self.tensors {
            if named(&self.job.drop_inputs, t) {
                continue;
            }
            let content = if !self.job.payloads {
                Content::None
            } else if named(&self.job.hash_inputs, t) {
                Content::Hash
            } else {
                Content::Data
            };
            seq.serialize_element(&TensorJson { t, content })?;
        }
        seq.end()
    }
}

struct TensorJson<'a> {
    t: &'a Tensor,
    content: Content,
}

impl Serialize for TensorJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.t;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("name", &t.name)?;
        map.serialize_entry("datatype", t.datatype.as_str())?;
        map.serialize_entry("shape", &t.shape)?;
        match self.content {
            Content::Data => map.serialize_entry("data", &Data(t))?,
            Content::Hash => map.serialize_entry("sha256", &sha256_hex(t))?,
            Content::None => {}
        }
        map.end()
    }
}

/// SHA-256 of the tensor's raw form (BYTES: 4-byte LE length prefix + bytes per element).
pub(crate) fn sha256_hex(t: &Tensor) -> String {
    let mut h = Sha256::new();
    match &t.data {
        TensorData::Fixed(b) => h.update(b),
        TensorData::Bytes(elements) => {
            for e in elements {
                h.update((e.len() as u32).to_le_bytes());
                h.update(e);
            }
        }
    }
    hex(&h.finalize())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Standard base64 with padding.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// A BYTES element: a string when valid UTF-8, else `{"b64": ...}`.
struct BytesElement<'a>(&'a [u8]);

impl Serialize for BytesElement<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("b64", &base64(self.0))?;
                map.end()
            }
        }
    }
}

/// Tensor data as a flat JSON array straight from its bytes.
struct Data<'a>(&'a Tensor);

impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.0;
        let mut seq = s.serialize_seq(Some(t.data_elements()))?;
        match &t.data {
            TensorData::Bytes(elements) => {
                for e in elements {
                    seq.serialize_element(&BytesElement(e))?;
                }
            }
            // Raw BYTES (length-prefixed) in a fixed buffer: logged as its hex.
            TensorData::Fixed(b) if t.datatype == DataType::Bytes => seq.serialize_element(&hex(b))?,
            TensorData::Fixed(b) => crate::http::codec::serialize_fixed(&mut seq, t.datatype, b)?,
        }
        seq.end()
    }
}
