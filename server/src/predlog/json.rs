//! JSON of log records and CloudEvents bodies, serialized straight from the
//! tensors' bytes (tensor data by [`crate::tensor::json`], whose BYTES rule
//! applies), and RFC 3339 timestamps.

use std::time::SystemTime;

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use sha2::{Digest, Sha256};

use super::Job;
use crate::tensor::json::Data;
use crate::tensor::{Tensor, TensorData};
use crate::util::hex;

/// `time` as RFC 3339 in UTC with microseconds, e.g. `2025-01-02T03:04:05.123456Z`
/// (times before 1970 are clamped to the epoch).
pub fn rfc3339_micros(time: SystemTime) -> String {
    crate::util::rfc3339(time, crate::util::Precision::Micros)
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
        // Written for mirrored requests only: production records stay as they were.
        if r.traffic == crate::metrics::Traffic::Shadow {
            map.serialize_entry("traffic", r.traffic.label())?;
        }
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
        if let Some(rows) = job.fairness() {
            map.serialize_entry("fairness", rows)?;
        }
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
