//! Batches run in place: on the submitter's thread when an executor is idle
//! and the version computes cheaply, on the executor's thread otherwise, and
//! never more at once than there are sessions.

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::super::{BatchInput, BatchPolicy, BatchQueue, Executor, Job, JobOutput, QueuePolicy, policy};
use super::IN_PLACE_MAX_COMPUTE;
use crate::error::Result;
use crate::stats::VersionStats;
use crate::tensor::{DataType, Tensor, TensorData};

/// Echoes its input; reports the thread each batch ran on and its rows; with
/// a gate, waits for a go before answering.
struct Echo {
    ran: mpsc::Sender<(String, usize)>,
    gate: Option<mpsc::Receiver<()>>,
}

impl Executor for Echo {
    fn run(&mut self, inputs: Vec<BatchInput<'_>>) -> Result<Vec<Tensor>> {
        let thread = std::thread::current().name().unwrap_or("").to_string();
        let _ = self.ran.send((thread, inputs[0].shape[0] as usize));
        if let Some(gate) = &self.gate {
            let _ = gate.recv_timeout(Duration::from_secs(10));
        }
        Ok(vec![Tensor {
            name: "y".into(),
            datatype: DataType::Uint8,
            shape: inputs[0].shape.clone(),
            data: TensorData::Fixed(super::super::concat_fixed(&inputs[0].parts)),
        }])
    }
}

/// No batching: every request is its own batch and runs at once.
fn unbatched() -> BatchPolicy {
    BatchPolicy {
        max_batch_size: 8,
        dynamic: false,
        preferred: Vec::new(),
        max_queue_delay: Duration::ZERO,
        delay: policy::Delay::Adaptive,
        hold_copies: true,
    }
}

fn queue_with(policy: BatchPolicy, gate: Option<mpsc::Receiver<()>>) -> (BatchQueue, mpsc::Receiver<(String, usize)>) {
    let queue = BatchQueue::new(
        policy,
        QueuePolicy::single(16),
        std::sync::Arc::new(VersionStats::default()),
    );
    let (ran, ran_rx) = mpsc::channel();
    queue
        .spawn_executors("inplace", vec![Box::new(Echo { ran, gate })])
        .unwrap();
    (queue, ran_rx)
}

fn job(byte: u8) -> (Job, oneshot::Receiver<Result<JobOutput>>) {
    let (tx, rx) = oneshot::channel();
    let input = Tensor {
        name: "x".into(),
        datatype: DataType::Uint8,
        shape: vec![1, 1],
        data: TensorData::Fixed(Bytes::from(vec![byte])),
    };
    (Job::new(vec![input], 1, vec![1], Vec::new(), tx), rx)
}

/// Until the executor sleeps with nothing queued (bounded).
fn wait_idle(queue: &BatchQueue) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while queue.shared.state.lock().idle_sleepers == 0 {
        assert!(std::time::Instant::now() < deadline, "the executor never went idle");
        std::thread::yield_now();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs one request through the executor's thread so the version has a
/// measured compute time, then waits for the executor to go idle again.
fn measured(queue: &BatchQueue, ran: &mpsc::Receiver<(String, usize)>) {
    let (j, rx) = job(0);
    queue.submit(j).unwrap();
    assert_eq!(ran.recv_timeout(Duration::from_secs(10)).unwrap().0, "sy-inplace-0");
    rx.blocking_recv().unwrap().unwrap();
    wait_idle(queue);
}

fn set_recent_compute(queue: &BatchQueue, took: Duration) {
    let ns = took.as_nanos() as u64;
    queue
        .shared
        .recent_compute_ns
        .store(ns, std::sync::atomic::Ordering::Relaxed);
}

#[test]
fn a_cheap_batch_on_an_idle_version_runs_on_the_submitters_thread() {
    let (queue, ran) = queue_with(unbatched(), None);
    measured(&queue, &ran);
    set_recent_compute(&queue, Duration::from_micros(5));
    let (j, mut rx) = job(7);
    runtime().block_on(queue.submit_or_run(j)).unwrap();
    // Answered before submit_or_run returned, on this thread.
    let out = rx.try_recv().expect("answered in place").unwrap();
    assert_eq!(out.outputs[0].data, TensorData::Fixed(Bytes::from_static(&[7])));
    let (thread, rows) = ran.try_recv().unwrap();
    assert_ne!(thread, "sy-inplace-0");
    assert_eq!(rows, 1);
}

#[test]
fn an_unmeasured_or_costly_version_runs_on_its_executor() {
    let (queue, ran) = queue_with(unbatched(), None);
    // Nothing measured yet.
    let (j, rx) = job(1);
    runtime().block_on(queue.submit_or_run(j)).unwrap();
    assert_eq!(ran.recv_timeout(Duration::from_secs(10)).unwrap().0, "sy-inplace-0");
    rx.blocking_recv().unwrap().unwrap();
    wait_idle(&queue);
    set_recent_compute(&queue, IN_PLACE_MAX_COMPUTE * 2);
    let (j, rx) = job(2);
    runtime().block_on(queue.submit_or_run(j)).unwrap();
    assert_eq!(ran.recv_timeout(Duration::from_secs(10)).unwrap().0, "sy-inplace-0");
    rx.blocking_recv().unwrap().unwrap();
}

#[test]
fn a_busy_executor_keeps_its_session_and_the_request_waits_its_turn() {
    let (go, gate) = mpsc::channel();
    let (queue, ran) = queue_with(unbatched(), Some(gate));
    go.send(()).unwrap();
    measured(&queue, &ran);
    set_recent_compute(&queue, Duration::from_micros(5));
    // The executor takes the first request and holds it.
    let (first, first_rx) = job(1);
    queue.submit(first).unwrap();
    assert_eq!(ran.recv_timeout(Duration::from_secs(10)).unwrap().0, "sy-inplace-0");
    let (second, mut second_rx) = job(2);
    runtime().block_on(queue.submit_or_run(second)).unwrap();
    // Not run here: the only session is in use.
    assert!(second_rx.try_recv().is_err());
    assert!(ran.try_recv().is_err());
    go.send(()).unwrap();
    first_rx.blocking_recv().unwrap().unwrap();
    assert_eq!(ran.recv_timeout(Duration::from_secs(10)).unwrap().0, "sy-inplace-0");
    go.send(()).unwrap();
    let out = second_rx.blocking_recv().unwrap().unwrap();
    assert_eq!(out.outputs[0].data, TensorData::Fixed(Bytes::from_static(&[2])));
}

#[test]
fn a_submitter_cancelled_before_its_follow_up_leaves_the_request_to_the_executor() {
    let (queue, ran) = queue_with(unbatched(), None);
    measured(&queue, &ran);
    set_recent_compute(&queue, Duration::from_micros(5));
    let (j, rx) = job(9);
    // Polled once (queued, executor not woken), then dropped at its yield.
    {
        let mut submitting = std::pin::pin!(queue.submit_or_run(j));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            submitting.as_mut().poll(&mut cx).is_pending(),
            "the submitter yields once queued"
        );
    }
    // Woken by the dropped follow-up, not by its idle timer a second later.
    let woken = ran.recv_timeout(super::super::IDLE_REPORT_INTERVAL / 2);
    assert_eq!(woken.expect("the executor was woken").0, "sy-inplace-0");
    let out = rx.blocking_recv().unwrap().unwrap();
    assert_eq!(out.outputs[0].data, TensorData::Fixed(Bytes::from_static(&[9])));
}

#[test]
fn the_fixed_delay_is_never_cut_short_by_running_in_place() {
    let mut policy = unbatched();
    policy.dynamic = true;
    policy.delay = policy::Delay::Fixed;
    policy.max_queue_delay = Duration::from_millis(50);
    let (queue, ran) = queue_with(policy, None);
    set_recent_compute(&queue, Duration::from_micros(5));
    wait_idle(&queue);
    let (j, rx) = job(3);
    let started = std::time::Instant::now();
    runtime().block_on(queue.submit_or_run(j)).unwrap();
    assert_eq!(ran.recv_timeout(Duration::from_secs(10)).unwrap().0, "sy-inplace-0");
    rx.blocking_recv().unwrap().unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "the batch waited its delay"
    );
}

#[test]
fn time_lent_to_in_place_batches_is_not_counted_as_idle() {
    let (queue, ran) = queue_with(unbatched(), None);
    measured(&queue, &ran);
    set_recent_compute(&queue, Duration::from_micros(5));
    let lent = |q: &BatchQueue| q.shared.lent_ns.load(std::sync::atomic::Ordering::Relaxed);
    // The executor may have reported (and taken) time before this point.
    let before = lent(&queue);
    let (j, mut rx) = job(3);
    runtime().block_on(queue.submit_or_run(j)).unwrap();
    rx.try_recv().expect("answered in place").unwrap();
    assert!(ran.try_recv().unwrap().0 != "sy-inplace-0");
    assert!(lent(&queue) > before, "an in-place run lends its session time");
}

#[test]
fn a_report_takes_at_most_its_own_wait_off_the_lent_time() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let lent = AtomicU64::new(30_000_000);
    assert_eq!(super::idle_in(&lent, Duration::from_millis(20)), Duration::ZERO);
    assert_eq!(
        lent.load(Ordering::Relaxed),
        10_000_000,
        "the rest stays for the next report"
    );
    assert_eq!(
        super::idle_in(&lent, Duration::from_millis(50)),
        Duration::from_millis(40)
    );
    assert_eq!(
        super::idle_in(&lent, Duration::from_millis(50)),
        Duration::from_millis(50)
    );
    assert_eq!(lent.load(Ordering::Relaxed), 0);
}
