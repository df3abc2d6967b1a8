//! Admission: whether a request may enter a version's queue. Inputs are
//! checked against the version's signature (names, datatypes, shapes, batch
//! size, element counts), request parameters (`timeout`, `priority`) are
//! read, and the request becomes a [`Job`] with its batching key. Served
//! traffic and the deploy pipeline's warm-up and golden runs go through the
//! same checks.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::batching::{Job, JobOutput};
use crate::error::{Error, Result};
use crate::registry::{TensorSpec, VersionHandle};
use crate::tensor::{Tensor, TensorData, element_count};
use bytes::Bytes;

/// A request parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// Boolean.
    Bool(bool),
    /// Signed integer.
    Int(i64),
    /// Unsigned integer.
    Uint(u64),
    /// Floating point.
    Double(f64),
    /// String.
    Str(String),
}

impl Param {
    /// The value as a non-negative integer, when it is one.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Param::Int(v) => u64::try_from(v).ok(),
            Param::Uint(v) => Some(v),
            Param::Double(v) if v >= 0.0 && v.fract() == 0.0 => Some(v as u64),
            _ => None,
        }
    }
}

/// Refuses Triton's classification extension, which this server does not
/// offer, whether the request's parameters or an output's ask for it.
pub fn check_extensions<'a>(
    request_parameters: impl IntoIterator<Item = &'a str>,
    output_parameters: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    let asked = |k: &str| k == "classification";
    if request_parameters.into_iter().any(asked) || output_parameters.into_iter().any(asked) {
        return Err(Error::unsupported("the classification extension is not supported"));
    }
    Ok(())
}

/// Triton's raw binary request (`Inference-Header-Content-Length: 0`): the
/// whole body is the data of the model's only input. Its datatype is the
/// model's; its shape is the config's (with a batch of 1 when the model
/// batches), one variable-sized dimension taken from the body's size; a BYTES
/// input must hold one element, the whole body.
pub fn raw_input(handle: &VersionHandle, body: Bytes) -> Result<Tensor> {
    let model = &handle.model;
    let [spec] = handle.inputs.as_slice() else {
        return Err(Error::invalid(format!(
            "a raw binary request (Inference-Header-Content-Length: 0) needs a model with one input; model \
             '{model}' has {}",
            handle.inputs.len()
        )));
    };
    let name = &spec.name;
    let mut shape: Vec<i64> = if handle.max_batch_size > 0 { vec![1] } else { Vec::new() };
    let mut variable = None;
    let mut elements = 1usize;
    for &d in &spec.dims {
        if d < 0 {
            if variable.is_some() {
                return Err(Error::invalid(format!(
                    "the shape of raw input '{name}' cannot be deduced: it has more than one variable-sized dimension"
                )));
            }
            variable = Some(shape.len());
        } else {
            elements = elements.saturating_mul(d as usize);
        }
        shape.push(d);
    }
    let data = match spec.datatype.size() {
        None => {
            if variable.is_some() || elements != 1 {
                return Err(Error::invalid(format!(
                    "raw input '{name}' is BYTES: the model's input must have shape [1] for a raw binary request"
                )));
            }
            TensorData::Bytes(vec![body])
        }
        Some(size) => {
            let per = elements.saturating_mul(size);
            match variable {
                Some(axis) if per > 0 && body.len().is_multiple_of(per) => shape[axis] = (body.len() / per) as i64,
                None if body.len() == per => {}
                _ => {
                    return Err(Error::invalid(format!(
                        "raw input '{name}': {} bytes do not fit dims {:?} of {}",
                        body.len(),
                        spec.dims,
                        spec.datatype.as_str()
                    )));
                }
            }
            TensorData::Fixed(body)
        }
    };
    Ok(Tensor {
        name: name.clone(),
        datatype: spec.datatype,
        shape,
        data,
    })
}

/// Checks the request against the model and builds its queue entry.
pub fn prepare_job(
    handle: &VersionHandle,
    mut inputs: Vec<Tensor>,
    outputs: Vec<String>,
    parameters: &[(String, Param)],
    received: Instant,
    max_tensor_elements: usize,
) -> Result<(Job, oneshot::Receiver<Result<JobOutput>>)> {
    let model = &handle.model;
    if inputs.is_empty() && !handle.inputs.is_empty() {
        // Every input optional: the batch size still comes from what the request sends.
        return Err(Error::invalid(format!("the request has no inputs for model '{model}'")));
    }
    for t in &inputs {
        if !handle.inputs.iter().any(|s| s.name == t.name) {
            return Err(Error::invalid(format!(
                "unexpected inference input '{}' for model '{model}'",
                t.name
            )));
        }
    }
    let mut ordered = Vec::with_capacity(handle.inputs.len());
    let mut rows: Option<usize> = None;
    let mut shape_key = Vec::new();
    for spec in &handle.inputs {
        let Some(pos) = inputs.iter().position(|t| t.name == spec.name) else {
            if spec.optional {
                // Requests batch together only when the same optional inputs are present.
                push_key(&mut shape_key, None);
                continue;
            }
            return Err(Error::invalid(format!(
                "expected {} inputs but got {} inputs for model '{model}': input '{}' is missing",
                handle.inputs.len(),
                inputs.len() + ordered.len(),
                spec.name
            )));
        };
        let mut tensor = inputs.swap_remove(pos);
        if inputs.iter().any(|t| t.name == spec.name) {
            return Err(Error::invalid(format!("input '{}' appears more than once", spec.name)));
        }
        let batch_rank = usize::from(handle.max_batch_size > 0);
        if spec.scalar && tensor.shape.len() == batch_rank {
            // A scalar sent without its `[1]`: the config's form is checked.
            tensor.shape.push(1);
        }
        let r = check_input(handle, spec, &tensor, max_tensor_elements)?;
        if spec.scalar {
            // The model file's form: no dims besides the batch one.
            tensor.shape.pop();
        }
        match rows {
            None => rows = Some(r),
            Some(prev) if prev != r => {
                return Err(Error::invalid(format!(
                    "input '{}' has batch size {r} but other inputs have {prev}",
                    spec.name
                )));
            }
            _ => {}
        }
        let skip = usize::from(handle.max_batch_size > 0);
        push_key(&mut shape_key, Some(&tensor.shape[skip..]));
        ordered.push(tensor);
    }
    for (i, name) in outputs.iter().enumerate() {
        if outputs[..i].contains(name) {
            // Triton's wording, which its clients know.
            return Err(Error::invalid(format!("output '{name}' already exists in request")));
        }
        if !handle.outputs.iter().any(|o| o.name == *name) {
            return Err(Error::invalid(format!(
                "unexpected inference output '{name}' for model '{model}'"
            )));
        }
    }
    let param = |key: &str| -> Result<Option<u64>> {
        parameters
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| {
                v.as_u64()
                    .ok_or_else(|| Error::invalid(format!("parameter '{key}' must be a non-negative integer")))
            })
            .transpose()
    };
    let timeout = param("timeout")?;
    if let Some(us) = timeout {
        crate::repository::limits::check_request_timeout(us).map_err(Error::invalid)?;
    }
    let timeout = timeout.filter(|&us| us > 0).map(Duration::from_micros);
    let priority = param("priority")?.unwrap_or(0);
    let (tx, rx) = oneshot::channel();
    let mut job = Job::new(ordered, rows.unwrap_or(1), shape_key, outputs, tx);
    job.enqueued = received;
    job.priority = priority;
    job.timeout = timeout;
    Ok((job, rx))
}

/// Appends one input to a batching compatibility key: `-1` when it is absent,
/// else its number of dims and the dims. Every input's part can be read back
/// unambiguously, so two requests share a key only when the same inputs are
/// present with the same shapes (with two optional inputs, "only X" and
/// "only Y" no longer collide, whatever their shapes).
fn push_key(key: &mut Vec<i64>, dims: Option<&[i64]>) {
    match dims {
        None => key.push(-1),
        Some(d) => {
            key.push(d.len() as i64);
            key.extend_from_slice(d);
        }
    }
}

/// Validates one input; returns its batch size (1 without a batch dimension).
fn check_input(handle: &VersionHandle, spec: &TensorSpec, t: &Tensor, max_tensor_elements: usize) -> Result<usize> {
    let name = &spec.name;
    if t.datatype != spec.datatype {
        return Err(Error::invalid(format!(
            "input '{name}': datatype {} does not match the model's {}",
            t.datatype.as_str(),
            spec.datatype.as_str()
        )));
    }
    let batching = handle.max_batch_size > 0;
    let expected_rank = spec.dims.len() + usize::from(batching);
    let shape_error = || {
        let want: Vec<i64> = if batching {
            std::iter::once(-1).chain(spec.dims.iter().copied()).collect()
        } else {
            spec.dims.clone()
        };
        Error::invalid(format!(
            "input '{name}': shape {:?} does not match the model's {want:?}",
            t.shape
        ))
    };
    if t.shape.len() != expected_rank {
        return Err(shape_error());
    }
    let (rows, rest) = if batching {
        (t.shape[0], &t.shape[1..])
    } else {
        (1, &t.shape[..])
    };
    if rest.iter().zip(&spec.dims).any(|(&s, &d)| s < 0 || (d != -1 && s != d)) {
        return Err(shape_error());
    }
    if batching && (rows < 1 || rows as usize > handle.max_batch_size) {
        return Err(Error::invalid(format!(
            "input '{name}': batch size {rows} is outside 1..={} (max_batch_size of model '{}')",
            handle.max_batch_size, handle.model
        )));
    }
    let count = element_count(&t.shape, max_tensor_elements)?;
    if t.data_elements() != count || t.datatype.size().is_some_and(|s| t.raw_len() != count * s) {
        return Err(Error::invalid(format!(
            "input '{name}': {} elements of data for shape {:?} ({count} elements)",
            t.data_elements(),
            t.shape
        )));
    }
    Ok(rows as usize)
}

#[cfg(test)]
mod tests {
    use super::push_key;

    fn key(inputs: &[Option<&[i64]>]) -> Vec<i64> {
        let mut k = Vec::new();
        for i in inputs {
            push_key(&mut k, *i);
        }
        k
    }

    #[test]
    fn batch_keys_tell_which_optional_inputs_are_present() {
        // Two optional scalar (per-row) inputs: only X vs only Y.
        assert_ne!(key(&[Some(&[]), None]), key(&[None, Some(&[])]));
        assert_ne!(key(&[Some(&[4]), None]), key(&[None, Some(&[4])]));
        assert_ne!(key(&[Some(&[2, 3]), None]), key(&[Some(&[2]), Some(&[3])]));
        assert_eq!(key(&[Some(&[4]), None]), key(&[Some(&[4]), None]));
    }
}
