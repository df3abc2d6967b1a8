//! A request as the queue holds it ([`Job`]), what it gets back
//! ([`JobOutput`]), and the kinds of background work ([`Background`]).

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::Timings;
use super::policy::Pending;
use crate::error::Result;
use crate::tensor::Tensor;

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
    /// Priority the request asked for (0 = the model's default level).
    pub priority: u64,
    /// Queue timeout the request asked for (Triton's `timeout` parameter).
    pub timeout: Option<Duration>,
    /// Set by the queue: when the request stops being worth computing.
    pub deadline: Option<Instant>,
    /// Set by the queue: the priority level's index (0 = highest).
    pub level: usize,
    /// Set by the queue: the request timed out under a DELAY policy and now
    /// waits behind every other request.
    pub delayed: bool,
    /// Set by the queue: arrival number, for `preserve_ordering`.
    pub seq: u64,
    /// The request's W3C trace context (its server span), for the batch span.
    pub trace: Option<crate::trace::TraceContext>,
    /// Background work (a shadow copy, an explanation's rows) rather than a
    /// production request: queued behind every production request, its
    /// deadline its own `timeout`, not counted against the levels' capacities
    /// (its sender bounds what it has in flight) nor in dropped statistics;
    /// a batch of shadow copies only runs on an idle-priority thread.
    pub background: Option<Background>,
    /// A background job at the head of the queue waits this long after its
    /// arrival for other background jobs to share its batch.
    pub batch_wait: Duration,
    /// Where the result goes.
    pub reply: oneshot::Sender<Result<JobOutput>>,
}

/// What kind of background work a [`Job`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Background {
    /// A mirrored copy (shadow traffic): counted in the version's execution
    /// statistics like any batch.
    Shadow,
    /// Perturbed rows of an explanation: left out of the version's
    /// statistics (the explanation has its own counters).
    Explanation,
}

impl Job {
    /// A request of `rows` rows for the queue, enqueued now with the default
    /// priority and no timeout. The queue fills in its level, deadline and
    /// arrival number on submit.
    pub fn new(
        inputs: Vec<Tensor>,
        rows: usize,
        shape_key: Vec<i64>,
        outputs: Vec<String>,
        reply: oneshot::Sender<Result<JobOutput>>,
    ) -> Job {
        Job {
            inputs,
            rows,
            shape_key,
            outputs,
            enqueued: Instant::now(),
            priority: 0,
            timeout: None,
            deadline: None,
            level: 0,
            delayed: false,
            seq: 0,
            trace: None,
            background: None,
            batch_wait: Duration::ZERO,
            reply,
        }
    }
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
    fn held_until(&self) -> Option<Instant> {
        self.background.is_some().then(|| self.enqueued + self.batch_wait)
    }
}
