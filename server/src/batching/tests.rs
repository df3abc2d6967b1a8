//! Queue and executor behaviour with a mock executor that runs only when the
//! test lets it: bounds, cancellation, deadlines, priorities, batching and
//! splitting.

use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;

use crate::tensor::Tensor;

use super::*;
use crate::tensor::{DataType, TensorData};

/// Where a batch ran: the thread's name and scheduling policy.
type RanOn = (String, Option<thread_priority::unix::ThreadSchedulePolicy>);

/// Echoes its one input as output `y`; announces each batch (and where it
/// runs) and waits for a go.
struct Mock {
    started: mpsc::Sender<(Vec<u8>, RanOn)>,
    go: mpsc::Receiver<()>,
}

impl Executor for Mock {
    fn run(&mut self, inputs: Vec<BatchInput<'_>>) -> Result<Vec<Tensor>> {
        let data = concat_fixed(&inputs[0].parts);
        let thread = std::thread::current().name().unwrap_or("").to_string();
        let policy = thread_priority::unix::thread_schedule_policy().ok();
        let _ = self.started.send((data.to_vec(), (thread, policy)));
        let _ = self.go.recv_timeout(Duration::from_secs(10));
        Ok(vec![Tensor {
            name: "y".into(),
            datatype: DataType::Uint8,
            shape: inputs[0].shape.clone(),
            data: TensorData::Fixed(data),
        }])
    }
}

struct Harness {
    queue: BatchQueue,
    started: mpsc::Receiver<(Vec<u8>, RanOn)>,
    go: mpsc::Sender<()>,
    stats: Arc<VersionStats>,
}

impl Harness {
    fn new(policy: BatchPolicy, queue_policy: QueuePolicy) -> Harness {
        let stats = Arc::new(VersionStats::default());
        let queue = BatchQueue::new(policy, queue_policy, stats.clone());
        let (started_tx, started) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let mock = Mock {
            started: started_tx,
            go: go_rx,
        };
        queue.spawn_executors("test", vec![Box::new(mock)]).unwrap();
        Harness {
            queue,
            started,
            go,
            stats,
        }
    }

    /// Submits a request whose rows carry the byte values in `rows`.
    fn submit(
        &self,
        rows: &[u8],
        priority: u64,
        timeout: Option<Duration>,
    ) -> Result<oneshot::Receiver<Result<JobOutput>>> {
        self.submit_job(rows, |job| {
            job.priority = priority;
            job.timeout = timeout;
        })
    }

    /// Submits a request of `rows`, its job adjusted by `set` first.
    fn submit_job(&self, rows: &[u8], set: impl FnOnce(&mut Job)) -> Result<oneshot::Receiver<Result<JobOutput>>> {
        let (tx, rx) = oneshot::channel();
        let input = Tensor {
            name: "x".into(),
            datatype: DataType::Uint8,
            shape: vec![rows.len() as i64, 1],
            data: TensorData::Fixed(Bytes::copy_from_slice(rows)),
        };
        let mut job = Job::new(vec![input], rows.len(), vec![1], Vec::new(), tx);
        set(&mut job);
        self.queue.submit(job).map(|()| rx)
    }

    /// Waits for the executor to start a batch and returns its rows.
    fn next_started(&self) -> Vec<u8> {
        self.next_started_on().0
    }

    /// Waits for the executor to start a batch; its rows and where it runs.
    fn next_started_on(&self) -> (Vec<u8>, RanOn) {
        self.started
            .recv_timeout(Duration::from_secs(10))
            .expect("a batch started")
    }

    fn release(&self) {
        self.go.send(()).unwrap();
    }
}

fn dynamic(max: usize, delay: Duration) -> BatchPolicy {
    BatchPolicy {
        max_batch_size: max,
        dynamic: true,
        preferred: Vec::new(),
        max_queue_delay: delay,
        delay: policy::Delay::Fixed,
        hold_copies: true,
    }
}

fn one_by_one() -> BatchPolicy {
    BatchPolicy {
        max_batch_size: 8,
        dynamic: false,
        ..Default::default()
    }
}

fn output(rx: oneshot::Receiver<Result<JobOutput>>) -> Result<Vec<u8>> {
    let out = rx.blocking_recv().expect("a reply")?;
    match &out.outputs[0].data {
        TensorData::Fixed(b) => Ok(b.to_vec()),
        TensorData::Bytes(_) => unreachable!(),
    }
}

#[test]
fn a_full_queue_refuses_at_once() {
    let h = Harness::new(one_by_one(), QueuePolicy::single(2));
    let first = h.submit(&[1], 0, None).unwrap();
    assert_eq!(h.next_started(), [1]);
    let queued: Vec<_> = [2u8, 3].iter().map(|&v| h.submit(&[v], 0, None).unwrap()).collect();
    let e = h.submit(&[4], 0, None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable);
    assert!(e.message.contains("exceeds maximum queue size (2)"), "{e}");
    assert_eq!(h.stats.rejected.get(), 1);
    for _ in 0..3 {
        h.release();
    }
    assert_eq!(output(first).unwrap(), [1]);
    for (rx, want) in queued.into_iter().zip([2u8, 3]) {
        assert_eq!(output(rx).unwrap(), [want]);
    }
}

#[test]
fn requests_whose_caller_left_are_not_computed() {
    let h = Harness::new(one_by_one(), QueuePolicy::single(8));
    let first = h.submit(&[1], 0, None).unwrap();
    assert_eq!(h.next_started(), [1]);
    let gone = h.submit(&[2], 0, None).unwrap();
    let kept = h.submit(&[3], 0, None).unwrap();
    drop(gone);
    h.release();
    assert_eq!(h.next_started(), [3], "the abandoned request was skipped");
    h.release();
    assert_eq!(output(first).unwrap(), [1]);
    assert_eq!(output(kept).unwrap(), [3]);
    assert_eq!(h.stats.cancelled.get(), 1);
    assert_eq!(h.stats.execution_count.get(), 2);
}

#[test]
fn expired_requests_are_rejected_before_compute() {
    let h = Harness::new(one_by_one(), QueuePolicy::single(8));
    let first = h.submit(&[1], 0, None).unwrap();
    assert_eq!(h.next_started(), [1]);
    let late = h.submit(&[2], 0, Some(Duration::from_millis(1))).unwrap();
    let fine = h.submit(&[3], 0, None).unwrap();
    // The deadline passes while the executor is busy.
    std::thread::sleep(Duration::from_millis(5));
    h.release();
    assert_eq!(h.next_started(), [3]);
    h.release();
    assert_eq!(output(first).unwrap(), [1]);
    let e = output(late).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert_eq!(output(fine).unwrap(), [3]);
    assert_eq!(h.stats.timed_out.get(), 1);
}

#[test]
fn queued_requests_merge_into_one_batch_and_split_back() {
    let h = Harness::new(dynamic(8, Duration::ZERO), QueuePolicy::single(64));
    let first = h.submit(&[1], 0, None).unwrap();
    assert_eq!(h.next_started(), [1]);
    let a = h.submit(&[10, 11], 0, None).unwrap();
    let b = h.submit(&[20], 0, None).unwrap();
    let c = h.submit(&[30, 31, 32], 0, None).unwrap();
    let d = h.submit(&[40, 41, 42], 0, None).unwrap();
    h.release();
    // 2 + 1 + 3 rows fit in 8; the next 3 would not.
    assert_eq!(h.next_started(), [10, 11, 20, 30, 31, 32]);
    h.release();
    assert_eq!(h.next_started(), [40, 41, 42]);
    h.release();
    assert_eq!(output(first).unwrap(), [1]);
    assert_eq!(output(a).unwrap(), [10, 11]);
    assert_eq!(output(b).unwrap(), [20]);
    assert_eq!(output(c).unwrap(), [30, 31, 32]);
    assert_eq!(output(d).unwrap(), [40, 41, 42]);
    assert_eq!(h.stats.execution_count.get(), 3);
    assert_eq!(h.stats.inference_count.get(), 10);
}

/// Waits (bounded) until the executor sleeps for a batch to fill.
fn wait_for_timed_sleep(queue: &BatchQueue) {
    let until = Instant::now() + Duration::from_secs(10);
    while queue.shared.state.lock().timed_sleepers == 0 {
        assert!(
            Instant::now() < until,
            "the executor never waited for the batch to fill"
        );
        std::thread::yield_now();
    }
}

#[test]
fn joining_a_filling_batch_leaves_the_executor_asleep_and_filling_it_wakes_it() {
    // A minute's delay: only a wake-up can start the full batch within the test's bounds.
    let h = Harness::new(dynamic(3, Duration::from_secs(60)), QueuePolicy::single(64));
    let a = h.submit(&[1], 0, None).unwrap();
    wait_for_timed_sleep(&h.queue);
    let b = h.submit(&[2], 0, None).unwrap();
    {
        // Two of three rows: the batcher would wait as long as the executor already does.
        let state = h.queue.shared.state.lock();
        assert_eq!(state.timed_sleepers, 1);
        assert!(!h.queue.wakes_sooner(&state));
    }
    let c = h.submit(&[3], 0, None).unwrap();
    assert_eq!(h.next_started(), [1, 2, 3]);
    h.release();
    assert_eq!(output(a).unwrap(), [1]);
    assert_eq!(output(b).unwrap(), [2]);
    assert_eq!(output(c).unwrap(), [3]);
}

#[test]
fn a_request_that_ends_the_wait_sooner_wakes_the_executor() {
    // Preferred size 2: the second request makes a batch that runs at once.
    let policy = BatchPolicy {
        preferred: vec![2],
        ..dynamic(8, Duration::from_secs(60))
    };
    let h = Harness::new(policy, QueuePolicy::single(64));
    let a = h.submit(&[1], 0, None).unwrap();
    wait_for_timed_sleep(&h.queue);
    let b = h.submit(&[2], 0, None).unwrap();
    assert_eq!(h.next_started(), [1, 2]);
    h.release();
    assert_eq!(output(a).unwrap(), [1]);
    assert_eq!(output(b).unwrap(), [2]);
}

fn two_levels(delay_low: bool) -> QueuePolicy {
    let level = |delay_on_timeout| LevelPolicy {
        capacity: 8,
        default_timeout: None,
        allow_timeout_override: true,
        delay_on_timeout,
    };
    QueuePolicy {
        levels: vec![level(false), level(delay_low)],
        default_level: 1,
        preserve_ordering: false,
    }
}

#[test]
fn higher_priority_requests_run_first() {
    let h = Harness::new(one_by_one(), two_levels(false));
    let first = h.submit(&[1], 0, None).unwrap();
    assert_eq!(h.next_started(), [1]);
    let low = h.submit(&[2], 2, None).unwrap();
    let default = h.submit(&[3], 0, None).unwrap();
    let high = h.submit(&[4], 1, None).unwrap();
    let invalid = h.submit(&[5], 99, None).unwrap();
    let mut order = Vec::new();
    for _ in 0..4 {
        h.release();
        order.extend(h.next_started());
    }
    h.release();
    assert_eq!(order, [4, 2, 3, 5], "level 1 first, then level 2 in arrival order");
    for rx in [first, low, default, high, invalid] {
        output(rx).unwrap();
    }
}

#[test]
fn delay_policy_moves_expired_requests_to_the_back() {
    let h = Harness::new(one_by_one(), two_levels(true));
    let first = h.submit(&[1], 0, None).unwrap();
    assert_eq!(h.next_started(), [1]);
    let slow = h.submit(&[2], 2, Some(Duration::from_millis(1))).unwrap();
    let other = h.submit(&[3], 2, None).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    h.release();
    assert_eq!(h.next_started(), [3], "the timed-out request waits behind the others");
    h.release();
    assert_eq!(h.next_started(), [2], "and is still computed");
    h.release();
    for rx in [first, slow, other] {
        output(rx).unwrap();
    }
    assert_eq!(h.stats.timed_out.get(), 0);
}

#[test]
fn closing_drains_what_is_queued() {
    let h = Harness::new(dynamic(8, Duration::from_secs(60)), QueuePolicy::single(8));
    let first = h.submit(&[1], 0, None).unwrap();
    h.queue.close();
    // Even with a long queue delay, a closed queue runs what it holds at once.
    assert_eq!(h.next_started(), [1]);
    h.release();
    assert_eq!(output(first).unwrap(), [1]);
    assert_eq!(h.submit(&[2], 0, None).unwrap_err().kind, ErrorKind::Unavailable);
}

#[test]
fn preserve_ordering_answers_in_arrival_order() {
    let mut policy = two_levels(false);
    policy.preserve_ordering = true;
    let h = Harness::new(one_by_one(), policy);
    let first = h.submit(&[1], 0, None).unwrap();
    assert_eq!(h.next_started(), [1]);
    let low = h.submit(&[2], 2, None).unwrap();
    let gone = h.submit(&[3], 2, None).unwrap();
    let mut high = h.submit(&[4], 1, None).unwrap();
    drop(gone);
    h.release();
    assert_eq!(h.next_started(), [4], "priority still decides what runs first");
    h.release();
    assert_eq!(h.next_started(), [2]);
    // The high-priority request finished first but arrived after `low`: its answer waits.
    assert!(high.try_recv().is_err());
    h.release();
    assert_eq!(output(first).unwrap(), [1]);
    assert_eq!(output(low).unwrap(), [2]);
    assert_eq!(output(high).unwrap(), [4]);
}

impl Harness {
    fn submit_shadow(&self, rows: &[u8], timeout: Duration) -> Result<oneshot::Receiver<Result<JobOutput>>> {
        self.submit_job(rows, |job| {
            job.background = Some(crate::batching::Background::Shadow);
            job.priority = 1;
            job.timeout = Some(timeout);
        })
    }
}

#[test]
fn shadow_copies_wait_behind_every_request_and_take_no_capacity() {
    let h = Harness::new(one_by_one(), two_levels(false));
    let first = h.submit(&[1], 0, None).unwrap();
    assert_eq!(h.next_started(), [1]);
    // Asks for the highest priority: a shadow copy gets the lowest all the same.
    let shadow = h.submit_shadow(&[9], Duration::from_secs(30)).unwrap();
    let low = h.submit(&[2], 2, None).unwrap();
    let high = h.submit(&[3], 1, None).unwrap();
    assert_eq!(
        h.queue.depth(),
        2,
        "the queue-depth metric counts production requests only"
    );
    let mut order = Vec::new();
    for _ in 0..3 {
        h.release();
        order.extend(h.next_started());
    }
    h.release();
    assert_eq!(order, [3, 2, 9]);
    for rx in [first, shadow, low, high] {
        output(rx).unwrap();
    }
}

#[test]
fn copies_only_batches_run_in_the_idle_scheduling_class() {
    use thread_priority::unix::{NormalThreadSchedulePolicy, ThreadSchedulePolicy};
    let h = Harness::new(dynamic(8, Duration::ZERO), QueuePolicy::single(8));
    let first = h.submit(&[1], 0, None).unwrap();
    let (rows, (thread, policy)) = h.next_started_on();
    assert_eq!(rows, [1]);
    assert_eq!(thread, "sy-test-0");
    assert_ne!(
        policy,
        Some(ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle))
    );
    let copies = [
        h.submit_shadow(&[8], Duration::from_secs(30)).unwrap(),
        h.submit_shadow(&[9], Duration::from_secs(30)).unwrap(),
    ];
    h.release();
    let (rows, (thread, policy)) = h.next_started_on();
    assert_eq!(rows, [8, 9], "the two copies share a batch");
    assert_eq!(thread, "sy-test-0-background");
    assert_eq!(
        policy,
        Some(ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle))
    );
    h.release();
    // The executor thread itself keeps its class: the next production batch runs there.
    let after = h.submit(&[2], 0, None).unwrap();
    let (_, (thread, policy)) = h.next_started_on();
    assert_eq!(thread, "sy-test-0");
    assert_ne!(
        policy,
        Some(ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle))
    );
    h.release();
    for rx in copies.into_iter().chain([first, after]) {
        output(rx).unwrap();
    }
}

#[test]
fn shadow_copies_have_their_own_deadline_and_are_not_counted_as_dropped() {
    let h = Harness::new(one_by_one(), QueuePolicy::single(1));
    let first = h.submit(&[1], 0, None).unwrap();
    assert_eq!(h.next_started(), [1]);
    // The level holds one request: the copies do not take its place.
    let late = h.submit_shadow(&[8], Duration::from_millis(1)).unwrap();
    let cancelled = h.submit_shadow(&[7], Duration::from_secs(30)).unwrap();
    drop(cancelled);
    let queued = h.submit(&[2], 0, None).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    h.release();
    assert_eq!(h.next_started(), [2]);
    h.release();
    let e = output(late).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout);
    output(first).unwrap();
    output(queued).unwrap();
    let s = &h.stats;
    assert_eq!((s.timed_out.get(), s.cancelled.get(), s.rejected.get()), (0, 0, 0));
}

/// Records which run method each batch used.
struct Recorder(Arc<parking_lot::Mutex<Vec<&'static str>>>);

impl Executor for Recorder {
    fn run(&mut self, inputs: Vec<BatchInput<'_>>) -> Result<Vec<Tensor>> {
        self.0.lock().push("run");
        Ok(echo(&inputs))
    }
    fn run_releasing(&mut self, inputs: Vec<BatchInput<'_>>) -> Result<Vec<Tensor>> {
        self.0.lock().push("run_releasing");
        Ok(echo(&inputs))
    }
}

fn echo(inputs: &[BatchInput<'_>]) -> Vec<Tensor> {
    vec![Tensor {
        name: "y".into(),
        datatype: DataType::Uint8,
        shape: inputs[0].shape.clone(),
        data: TensorData::Fixed(concat_fixed(&inputs[0].parts)),
    }]
}

#[test]
fn warm_up_runs_give_their_memory_back_and_traffic_runs_keep_it() {
    let calls = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let queue = BatchQueue::new(one_by_one(), QueuePolicy::single(8), Arc::new(VersionStats::default()));
    queue
        .spawn_executors("rec", vec![Box::new(Recorder(calls.clone()))])
        .unwrap();
    let submit = |v: u8| {
        let (tx, rx) = oneshot::channel();
        let input = Tensor {
            name: "x".into(),
            datatype: DataType::Uint8,
            shape: vec![1, 1],
            data: TensorData::Fixed(Bytes::copy_from_slice(&[v])),
        };
        queue.submit(Job::new(vec![input], 1, vec![1], Vec::new(), tx)).unwrap();
        output(rx).unwrap()
    };
    queue.set_warming(true);
    assert_eq!(submit(1), [1]);
    queue.set_warming(false);
    assert_eq!(submit(2), [2]);
    assert_eq!(*calls.lock(), ["run_releasing", "run"]);
    queue.close();
}

#[test]
fn explanation_rows_wait_like_copies_and_stay_out_of_the_statistics() {
    let h = Harness::new(dynamic(8, Duration::ZERO), QueuePolicy::single(1));
    let explain = |rows: &[u8]| {
        h.submit_job(rows, |job| {
            job.background = Some(Background::Explanation);
            job.timeout = Some(Duration::from_secs(30));
        })
        .unwrap()
    };
    let first = h.submit(&[1], 0, None).unwrap();
    assert_eq!(h.next_started(), [1]);
    // Takes no place in the level (capacity 1), and queues behind the request after it.
    let mixed = explain(&[7, 8]);
    let queued = h.submit(&[2], 0, None).unwrap();
    h.release();
    let (rows, (thread, _)) = h.next_started_on();
    assert_eq!(rows, [2, 7, 8], "production first; rows that fit fill its batch");
    assert_eq!(thread, "sy-test-0");
    h.release();
    let alone = explain(&[9]);
    let (rows, (thread, _)) = h.next_started_on();
    assert_eq!(rows, [9]);
    // On the executor itself, at normal priority (only shadow-only batches go to the idle-class helper).
    assert_eq!(thread, "sy-test-0");
    h.release();
    assert_eq!(output(mixed).unwrap(), [7, 8]);
    assert_eq!(output(alone).unwrap(), [9]);
    output(first).unwrap();
    output(queued).unwrap();
    let s = &h.stats;
    assert_eq!(
        (s.execution_count.get(), s.inference_count.get()),
        (2, 2),
        "batches and rows of production requests only"
    );
    assert_eq!(s.queue.count(), 2, "phase timings of production requests only");
}
