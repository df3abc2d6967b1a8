//! Running one batch on an executor: concatenating the requests' inputs
//! along the batch dimension, the session run, slicing each request's rows
//! out of the outputs, and the replies (with the phase timings and metrics;
//! explanation rows are left out of the version's statistics).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;

use super::{Background, BatchInput, Executor, Job, JobOutput, Shared, Timings};
use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorData};

/// Counts a session run while it lasts, a panic included (before any reply goes out).
struct Running<'a>(&'a AtomicUsize);

impl<'a> Running<'a> {
    fn start(count: &'a AtomicUsize) -> Running<'a> {
        count.fetch_add(1, Ordering::Relaxed);
        Running(count)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Concatenates, runs, splits, replies. Never panics on a runtime error:
/// every request of the batch gets the error instead.
pub(super) fn run_batch(executor: &mut dyn Executor, batch: Vec<Job>, shared: &Shared) {
    // One span per batch, naming the traces of the requests it carries (the
    // link from each request's span to the batch that computed it).
    let _span = tracing::enabled!(tracing::Level::DEBUG).then(|| {
        let traces: Vec<String> = batch.iter().filter_map(|j| j.trace.map(|t| t.to_string())).collect();
        let rows: usize = batch.iter().map(|j| j.rows).sum();
        let executor = std::thread::current().name().unwrap_or("").to_string();
        tracing::debug_span!("batch", %executor, requests = batch.len(), rows, traces = ?traces).entered()
    });
    let stats = &shared.stats;
    let started = Instant::now();
    let total_rows: usize = batch.iter().map(|j| j.rows).sum();
    let batched = batch.len() > 1;
    let first = &batch[0];
    let inputs: Vec<BatchInput<'_>> = first
        .inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut shape = t.shape.clone();
            if batched {
                shape[0] = total_rows as i64;
            }
            BatchInput {
                name: &t.name,
                datatype: t.datatype,
                shape,
                parts: batch.iter().map(|j| &j.inputs[i].data).collect(),
            }
        })
        .collect();
    let built = Instant::now();
    let cpu_before = crate::metrics::thread_cpu_time();
    let result = {
        let _running = Running::start(&shared.running);
        if shared.warming.load(Ordering::Relaxed) {
            executor.run_releasing(inputs)
        } else {
            executor.run(inputs)
        }
    };
    let ran = Instant::now();
    let cpu = cpu_before
        .zip(crate::metrics::thread_cpu_time())
        .map(|(a, b)| b.saturating_sub(a));
    let max_rows = shared.policy.max_batch_size;
    let fill_ratio = (max_rows > 0).then(|| total_rows as f64 / max_rows as f64);
    stats.record_efficiency(cpu, fill_ratio);
    let compute_input = built - started;
    let compute_infer = ran - built;
    super::inline::record_compute(shared, compute_infer);
    match result {
        Err(e) => {
            for job in batch {
                shared.reply(job.seq, job.reply, Err(e.clone()));
            }
        }
        Ok(outputs) => {
            let mut offset = 0usize;
            let mut replies = Vec::with_capacity(batch.len());
            for job in &batch {
                let selected = outputs
                    .iter()
                    .filter(|o| job.outputs.is_empty() || job.outputs.contains(&o.name));
                let split: Result<Vec<Tensor>> = if batched {
                    selected.map(|o| slice_rows(o, offset, job.rows, total_rows)).collect()
                } else {
                    Ok(selected.cloned().collect())
                };
                offset += job.rows;
                replies.push(split);
            }
            let compute_output = ran.elapsed();
            // Explanation rows are not traffic: Triton's counts leave them out.
            let counted = |j: &Job| j.background != Some(Background::Explanation);
            let counted_rows: usize = batch.iter().filter(|j| counted(j)).map(|j| j.rows).sum();
            if counted_rows > 0 {
                stats.record_execution(counted_rows, compute_input, compute_infer, compute_output);
            }
            for (job, split) in batch.into_iter().zip(replies) {
                let timings = Timings {
                    queue: started.saturating_duration_since(job.enqueued),
                    compute_input,
                    compute_infer,
                    compute_output,
                    batch_rows: total_rows,
                };
                if counted(&job) {
                    stats.record_phases(&timings);
                }
                shared.reply(job.seq, job.reply, split.map(|outputs| JobOutput { outputs, timings }));
            }
        }
    }
}

/// Rows `[offset, offset + rows)` of a batch output; fixed-size data is
/// sliced without copying.
fn slice_rows(output: &Tensor, offset: usize, rows: usize, total_rows: usize) -> Result<Tensor> {
    let mismatch = || {
        Error::internal(format!(
            "output '{}' has shape {:?}, which does not split into a batch of {total_rows} rows",
            output.name, output.shape
        ))
    };
    if output.shape.first().copied() != Some(total_rows as i64) {
        return Err(mismatch());
    }
    let mut shape = output.shape.clone();
    shape[0] = rows as i64;
    let data = match &output.data {
        TensorData::Fixed(bytes) => {
            if bytes.len() % total_rows != 0 {
                return Err(mismatch());
            }
            let per_row = bytes.len() / total_rows;
            TensorData::Fixed(bytes.slice(offset * per_row..(offset + rows) * per_row))
        }
        TensorData::Bytes(elements) => {
            if elements.len() % total_rows != 0 {
                return Err(mismatch());
            }
            let per_row = elements.len() / total_rows;
            TensorData::Bytes(elements[offset * per_row..(offset + rows) * per_row].to_vec())
        }
    };
    Ok(Tensor {
        name: output.name.clone(),
        datatype: output.datatype,
        shape,
        data,
    })
}

/// Concatenates fixed-size parts into one buffer (used by executors).
pub fn concat_fixed(parts: &[&TensorData]) -> Bytes {
    if let [TensorData::Fixed(only)] = parts {
        return only.clone();
    }
    let total = parts
        .iter()
        .map(|p| match p {
            TensorData::Fixed(b) => b.len(),
            TensorData::Bytes(_) => 0,
        })
        .sum();
    let mut buf = Vec::with_capacity(total);
    for p in parts {
        if let TensorData::Fixed(b) = p {
            buf.extend_from_slice(b);
        }
    }
    Bytes::from(buf)
}
