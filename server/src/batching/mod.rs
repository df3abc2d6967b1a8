//! The scheduler of one model version: a bounded queue shared by that
//! version's executor threads, each of which owns one session.
//!
//! Ownership and bounds:
//! - `BatchQueue` is shared (Arc) by the version handle, which submits, and by
//!   the executor threads, which take batches. Capacity is fixed at creation:
//!   a full queue refuses at once with UNAVAILABLE, so memory stays bounded
//!   under overload.
//! - The version handle closes the queue when it is retired; executors then
//!   finish what is queued and exit, dropping their sessions.
//! - Replies travel over one `oneshot` per request. A request whose caller
//!   has gone (receiver dropped) or whose deadline passed is dropped before
//!   compute and counted.

pub mod policy;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::error::{Error, ErrorKind, Result};
use crate::stats::VersionStats;
use crate::tensor::{Tensor, TensorData};
pub use policy::{BatchPolicy, Decision, Pending};

/// Runs one batch. Implemented by the ONNX Runtime session wrapper; tests
/// use mocks. Each executor thread owns one.
pub trait Executor: Send + 'static {
    /// Runs `inputs` (in model input order, each already batched) and returns
    /// every model output for the whole batch.
    fn run(&mut self, inputs: Vec<BatchInput<'_>>) -> Result<Vec<Tensor>>;
}

/// One input of a batch: the parts of every request, to be concatenated
/// along the batch dimension by the executor (once, into its own buffer).
#[derive(Debug)]
pub struct BatchInput<'a> {
    /// Input name.
    pub name: &'a str,
    /// Element type.
    pub datatype: crate::tensor::DataType,
    /// Shape of the whole batch.
    pub shape: Vec<i64>,
    /// Each request's data, in batch order.
    pub parts: Vec<&'a TensorData>,
}

/// Phase durations of one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Time in the queue.
    pub queue: Duration,
    /// Building the batch's input tensors.
    pub compute_input: Duration,
    /// The session run.
    pub compute_infer: Duration,
    /// Splitting and encoding outputs.
    pub compute_output: Duration,
    /// Rows in the batch the request rode in.
    pub batch_rows: usize,
}

/// What a request gets back from the executor.
#[derive(Debug)]
pub struct JobOutput {
    /// The request's rows of every requested output.
    pub outputs: Vec<Tensor>,
    /// Where its time went.
    pub timings: Timings,
}

/// A request waiting for execution.
#[derive(Debug)]
pub struct Job {
    /// Inputs in the model's input order.
    pub inputs: Vec<Tensor>,
    /// Rows along the batch dimension (1 for models without one).
    pub rows: usize,
    /// Non-batch dims of every input, flattened: the batching compatibility key.
    pub shape_key: Vec<i64>,
    /// Output names to return; empty = all.
    pub outputs: Vec<String>,
    /// When it was queued.
    pub enqueued: Instant,
    /// When it stops being worth computing.
    pub deadline: Option<Instant>,
    /// Where the result goes.
    pub reply: oneshot::Sender<Result<JobOutput>>,
}

impl Pending for Job {
    fn rows(&self) -> usize {
        self.rows
    }
    fn shape_key(&self) -> &[i64] {
        &self.shape_key
    }
    fn enqueued(&self) -> Instant {
        self.enqueued
    }
}

struct State {
    queue: VecDeque<Job>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled on submit and close; executors wait on it.
    wake: Condvar,
    policy: BatchPolicy,
    /// `policy` without the queue delay, used once the queue is closed.
    drain_policy: BatchPolicy,
    capacity: usize,
    stats: Arc<VersionStats>,
}

/// The bounded queue of one model version.
#[derive(Clone)]
pub struct BatchQueue {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BatchQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchQueue")
            .field("capacity", &self.shared.capacity)
            .finish()
    }
}

impl BatchQueue {
    /// A queue holding at most `capacity` requests.
    pub fn new(policy: BatchPolicy, capacity: usize, stats: Arc<VersionStats>) -> BatchQueue {
        BatchQueue {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::with_capacity(capacity.min(1024)),
                    closed: false,
                }),
                wake: Condvar::new(),
                drain_policy: BatchPolicy {
                    max_queue_delay: Duration::ZERO,
                    ..policy.clone()
                },
                policy,
                capacity: capacity.max(1),
                stats,
            }),
        }
    }

    /// Enqueues a request, or refuses at once when the queue is full or closed.
    pub fn submit(&self, job: Job) -> Result<()> {
        let mut state = self.shared.state.lock();
        if state.closed {
            return Err(Error::unavailable("model version is being unloaded"));
        }
        if state.queue.len() >= self.shared.capacity {
            self.shared.stats.rejected.inc();
            return Err(Error::unavailable(format!(
                "inference request exceeds maximum queue size ({}) of the model version",
                self.shared.capacity
            )));
        }
        state.queue.push_back(job);
        drop(state);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Requests waiting now.
    pub fn depth(&self) -> usize {
        self.shared.state.lock().queue.len()
    }

    /// Stops accepting requests; executors finish the queued ones and exit.
    pub fn close(&self) {
        self.shared.state.lock().closed = true;
        self.shared.wake.notify_all();
    }

    /// Blocks until a batch is ready; `None` once closed and drained.
    fn next_batch(&self) -> Option<Vec<Job>> {
        let shared = &*self.shared;
        let mut state = shared.state.lock();
        loop {
            let now = Instant::now();
            self.drop_dead(&mut state.queue, now);
            // Draining: no new request will come to fill a batch, so do not wait.
            let policy = if state.closed {
                &shared.drain_policy
            } else {
                &shared.policy
            };
            match policy::decide(&state.queue, policy, now) {
                Decision::Run(picked) => {
                    let mut batch = Vec::with_capacity(picked.len());
                    for (taken, i) in picked.into_iter().enumerate() {
                        if let Some(job) = state.queue.remove(i - taken) {
                            batch.push(job);
                        }
                    }
                    if !state.queue.is_empty() {
                        // Another executor may start on what is left.
                        shared.wake.notify_one();
                    }
                    return Some(batch);
                }
                Decision::Idle if state.closed => return None,
                Decision::Idle => shared.wake.wait(&mut state),
                Decision::WaitUntil(t) => {
                    shared.wake.wait_until(&mut state, t);
                }
            }
        }
    }

    /// Removes requests whose caller went away or whose deadline passed.
    fn drop_dead(&self, queue: &mut VecDeque<Job>, now: Instant) {
        let stats = &self.shared.stats;
        queue.retain_mut(|job| {
            if job.reply.is_closed() {
                stats.cancelled.inc();
                return false;
            }
            if job.deadline.is_some_and(|d| d <= now) {
                stats.timed_out.inc();
                let (tx, _) = oneshot::channel();
                let reply = std::mem::replace(&mut job.reply, tx);
                let _ = reply.send(Err(Error::new(
                    ErrorKind::Timeout,
                    "request timed out in the queue before execution",
                )));
                return false;
            }
            true
        });
    }

    /// Starts one thread per executor; they run until the queue is closed and drained.
    pub fn spawn_executors(&self, label: &str, executors: Vec<Box<dyn Executor>>) -> std::io::Result<()> {
        for (i, executor) in executors.into_iter().enumerate() {
            let queue = self.clone();
            std::thread::Builder::new()
                .name(format!("sy-{label}-{i}"))
                .spawn(move || queue.executor_loop(executor))?;
        }
        Ok(())
    }

    fn executor_loop(self, mut executor: Box<dyn Executor>) {
        while let Some(batch) = self.next_batch() {
            run_batch(executor.as_mut(), batch, &self.shared.stats);
        }
    }
}

/// Concatenates, runs, splits, replies. Never panics on a runtime error:
/// every request of the batch gets the error instead.
fn run_batch(executor: &mut dyn Executor, batch: Vec<Job>, stats: &VersionStats) {
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
    let result = executor.run(inputs);
    let ran = Instant::now();
    let compute_input = built - started;
    let compute_infer = ran - built;
    match result {
        Err(e) => {
            for job in batch {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
        Ok(outputs) => {
            let mut offset = 0usize;
            let mut replies = Vec::with_capacity(batch.len());
            for job in &batch {
                let selected = outputs
                    .iter()
                    .filter(|o| job.outputs.is_empty() || job.outputs.iter().any(|n| *n == o.name));
                let split: Result<Vec<Tensor>> = if batched {
                    selected.map(|o| slice_rows(o, offset, job.rows, total_rows)).collect()
                } else {
                    Ok(selected.cloned().collect())
                };
                offset += job.rows;
                replies.push(split);
            }
            let compute_output = ran.elapsed();
            stats.record_execution(total_rows, compute_input, compute_infer, compute_output);
            for (job, split) in batch.into_iter().zip(replies) {
                let timings = Timings {
                    queue: started.saturating_duration_since(job.enqueued),
                    compute_input,
                    compute_infer,
                    compute_output,
                    batch_rows: total_rows,
                };
                stats.record_phases(&timings);
                let _ = job.reply.send(split.map(|outputs| JobOutput { outputs, timings }));
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
