//! Micro-benchmarks of the request hot paths, without ONNX Runtime: the HTTP
//! JSON / binary codec, the gRPC conversions and the protobuf encoding tonic
//! does around them, batch concatenation, and the batch queue round trip with
//! an echo executor, and the feedback store's batched writes.
//!
//! `cargo bench -p switchyard-benches --bench hot_paths -- --warm-up-time 1 --measurement-time 2`
//!
//! Tensors are FP32 `[1, n]`, the shape of one MLP request. JSON element
//! values are written the way Python clients send them (an f32 widened to
//! f64, up to 17 significant digits), which is what the JSON parser sees from
//! `tritonclient`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use switchyard::batching::{BatchInput, BatchPolicy, BatchQueue, Executor, Job, JobOutput, QueuePolicy, concat_fixed};
use switchyard::error::Result;
use switchyard::http::codec::{self, OutputFormat};
use switchyard::service::InferResponse;
use switchyard::stats::VersionStats;
use switchyard::tensor::{DataType, Tensor, TensorData};
use switchyard_proto::inference as pb;
use tokio::sync::oneshot;

/// Elements per tensor: a tiny request, a typical feature vector, an image-sized input.
const SIZES: [usize; 3] = [16, 1024, 8192];
/// The server's default element limit is far above every size here.
const MAX_ELEMENTS: usize = 1 << 26;

/// Deterministic values in [-1, 1).
fn values(n: usize) -> Vec<f32> {
    let mut state = 0x2545_f491_u32;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

fn le_bytes(v: &[f32]) -> Bytes {
    v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>().into()
}

fn fp32_tensor(name: &str, v: &[f32]) -> Tensor {
    Tensor {
        name: name.into(),
        datatype: DataType::Fp32,
        shape: vec![1, v.len() as i64],
        data: TensorData::Fixed(le_bytes(v)),
    }
}

fn response(v: &[f32]) -> InferResponse {
    InferResponse {
        model: "mlp".into(),
        version: "1".into(),
        id: "42".into(),
        outputs: vec![fp32_tensor("y", v)],
        timings: Default::default(),
        trace: None,
    }
}

/// A KServe V2 JSON body with the data inline.
fn json_body(v: &[f32]) -> Bytes {
    let data: Vec<f64> = v.iter().map(|&x| f64::from(x)).collect();
    // Members in the order clients write them (`datatype` and `shape` before
    // `data`, which the codec reads in one pass); `json!` would sort them.
    let data = serde_json::to_string(&data).unwrap();
    let n = v.len();
    format!(r#"{{"id":"42","inputs":[{{"name":"x","shape":[1,{n}],"datatype":"FP32","data":{data}}}],"outputs":[{{"name":"y"}}]}}"#)
        .into_bytes()
        .into()
}

/// A binary-extension body: the JSON header, then the raw tensor bytes.
fn binary_body(v: &[f32]) -> (Bytes, usize) {
    let header = serde_json::json!({
        "id": "42",
        "inputs": [{
            "name": "x", "shape": [1, v.len()], "datatype": "FP32",
            "parameters": {"binary_data_size": v.len() * 4},
        }],
        "outputs": [{"name": "y", "parameters": {"binary_data": true}}],
    });
    let mut body = serde_json::to_vec(&header).unwrap();
    let header_len = body.len();
    body.extend_from_slice(&le_bytes(v));
    (body.into(), header_len)
}

fn grpc_request(v: &[f32], raw: bool) -> pb::ModelInferRequest {
    let input = pb::model_infer_request::InferInputTensor {
        name: "x".into(),
        datatype: "FP32".into(),
        shape: vec![1, v.len() as i64],
        contents: (!raw).then(|| pb::InferTensorContents {
            fp32_contents: v.to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    };
    pb::ModelInferRequest {
        model_name: "mlp".into(),
        id: "42".into(),
        inputs: vec![input],
        outputs: vec![pb::model_infer_request::InferRequestedOutputTensor {
            name: "y".into(),
            ..Default::default()
        }],
        raw_input_contents: if raw { vec![le_bytes(v)] } else { Vec::new() },
        ..Default::default()
    }
}

fn http_codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("http_decode");
    for n in SIZES {
        let v = values(n);
        g.throughput(Throughput::Elements(n as u64));
        let body = json_body(&v);
        g.bench_with_input(BenchmarkId::new("json", n), &body, |b, body| {
            b.iter(|| codec::decode_request(body.clone(), None, "mlp", None, MAX_ELEMENTS, Instant::now()).unwrap())
        });
        let (body, header_len) = binary_body(&v);
        g.bench_with_input(BenchmarkId::new("binary", n), &body, |b, body| {
            b.iter(|| {
                codec::decode_request(
                    body.clone(),
                    Some(header_len),
                    "mlp",
                    None,
                    MAX_ELEMENTS,
                    Instant::now(),
                )
                .unwrap()
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("http_encode");
    let binary = OutputFormat {
        all_binary: true,
        ..Default::default()
    };
    for n in SIZES {
        let resp = response(&values(n));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("json", n), &resp, |b, resp| {
            b.iter(|| codec::encode_response(resp, &OutputFormat::default()).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("binary", n), &resp, |b, resp| {
            b.iter(|| codec::encode_response(resp, &binary).unwrap())
        });
    }
    g.finish();
}

fn grpc_codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("grpc_decode");
    for n in SIZES {
        let v = values(n);
        g.throughput(Throughput::Elements(n as u64));
        for (label, raw) in [("raw", true), ("fp32_contents", false)] {
            let req = grpc_request(&v, raw);
            // The clone is set-up: tonic hands the decoder an owned message.
            g.bench_with_input(BenchmarkId::new(label, n), &req, |b, req| {
                b.iter_batched(
                    || req.clone(),
                    |r| switchyard::grpc::decode_request(r, MAX_ELEMENTS).unwrap(),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("grpc_encode");
    for n in SIZES {
        let v = values(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("raw", n), &v, |b, v| {
            b.iter_batched(|| response(v), switchyard::grpc::encode_response, BatchSize::SmallInput)
        });
    }
    g.finish();

    // What tonic does around the conversions: protobuf decoding of the
    // request (from `Bytes`, as tonic's buffer lets raw contents be sliced,
    // not copied) and encoding of the response.
    let mut g = c.benchmark_group("prost");
    for n in SIZES {
        let v = values(n);
        g.throughput(Throughput::Elements(n as u64));
        for (label, raw) in [("raw", true), ("fp32_contents", false)] {
            let req = grpc_request(&v, raw);
            let wire = Bytes::from(req.encode_to_vec());
            g.bench_with_input(
                BenchmarkId::new(format!("decode_request_{label}"), n),
                &wire,
                |b, wire| b.iter(|| pb::ModelInferRequest::decode(wire.clone()).unwrap()),
            );
            g.bench_with_input(
                BenchmarkId::new(format!("encode_request_{label}"), n),
                &req,
                |b, req| b.iter(|| req.encode_to_vec()),
            );
        }
        let resp = switchyard::grpc::encode_response(response(&v));
        g.bench_with_input(BenchmarkId::new("encode_response_raw", n), &resp, |b, resp| {
            b.iter(|| resp.encode_to_vec())
        });
    }
    g.finish();
}

fn batch_concat(c: &mut Criterion) {
    const ROW: usize = 256;
    let mut g = c.benchmark_group("concat_fixed");
    for parts in [1usize, 32] {
        let data: Vec<TensorData> = (0..parts).map(|_| TensorData::Fixed(le_bytes(&values(ROW)))).collect();
        let refs: Vec<&TensorData> = data.iter().collect();
        g.throughput(Throughput::Elements((parts * ROW) as u64));
        g.bench_with_input(BenchmarkId::new("fp32x256", parts), &refs, |b, refs| {
            b.iter(|| concat_fixed(black_box(refs)))
        });
    }
    g.finish();
}

/// Returns its first input, concatenated, as output `y`: the queue, batch
/// building, splitting and replies without any model.
struct Echo;

impl Executor for Echo {
    fn run(&mut self, inputs: Vec<BatchInput<'_>>) -> Result<Vec<Tensor>> {
        let first = &inputs[0];
        Ok(vec![Tensor {
            name: "y".into(),
            datatype: first.datatype,
            shape: first.shape.clone(),
            data: TensorData::Fixed(concat_fixed(&first.parts)),
        }])
    }
}

/// A queue with one echo executor thread.
struct EchoQueue {
    queue: BatchQueue,
    stats: Arc<VersionStats>,
    row: Bytes,
}

impl EchoQueue {
    fn new(max_queue_delay: Duration) -> EchoQueue {
        let policy = BatchPolicy {
            max_batch_size: 32,
            dynamic: true,
            max_queue_delay,
            ..Default::default()
        };
        let stats = Arc::new(VersionStats::default());
        let queue = BatchQueue::new(policy, QueuePolicy::single(1024), stats.clone());
        queue.spawn_executors("bench", vec![Box::new(Echo)]).unwrap();
        EchoQueue {
            queue,
            stats,
            row: le_bytes(&values(256)),
        }
    }

    /// Queues one `[1, 256]` FP32 request, as the service does after validation.
    fn submit(&self) -> oneshot::Receiver<Result<JobOutput>> {
        let (reply, rx) = oneshot::channel();
        let input = Tensor {
            name: "x".into(),
            datatype: DataType::Fp32,
            shape: vec![1, 256],
            data: TensorData::Fixed(self.row.clone()),
        };
        let job = Job::new(vec![input], 1, vec![256], Vec::new(), reply);
        self.queue.submit(job).unwrap();
        rx
    }

    /// Mean rows per batch since the last call.
    fn rows_per_batch(&self, before: (u64, u64)) -> f64 {
        let rows = self.stats.inference_count.get() - before.0;
        let batches = self.stats.execution_count.get() - before.1;
        rows as f64 / batches.max(1) as f64
    }

    fn counts(&self) -> (u64, u64) {
        (self.stats.inference_count.get(), self.stats.execution_count.get())
    }
}

impl Drop for EchoQueue {
    fn drop(&mut self) {
        // Lets the executor thread drain and exit.
        self.queue.close();
    }
}

fn batch_queue(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_queue");
    // One request at a time: submit, executor wake-up, run, reply, caller wake-up.
    let q = EchoQueue::new(Duration::ZERO);
    g.throughput(Throughput::Elements(1));
    g.bench_function("round_trip/1", |b| {
        b.iter(|| q.submit().blocking_recv().unwrap().unwrap())
    });
    drop(q);

    // 32 requests queued back to back, then every reply awaited. With a
    // queue delay they ride in one batch of 32; without one, the executor
    // takes whatever has arrived each time it wakes.
    for (label, delay) in [
        ("burst32_delay1ms", Duration::from_millis(1)),
        ("burst32_nodelay", Duration::ZERO),
    ] {
        let q = EchoQueue::new(delay);
        let before = q.counts();
        g.throughput(Throughput::Elements(32));
        g.bench_function(label, |b| {
            b.iter(|| {
                let replies: Vec<_> = (0..32).map(|_| q.submit()).collect();
                for rx in replies {
                    black_box(rx.blocking_recv().unwrap().unwrap());
                }
            })
        });
        eprintln!("batch_queue/{label}: {:.1} rows per batch", q.rows_per_batch(before));
    }
    g.finish();
}

/// The feedback store's write path as the quality worker drives it: batches
/// of 512 one-row predictions under random 32-hex ids (what clients send),
/// into a file that already holds 100,000, without a sync per batch.
fn feedback_store(c: &mut Criterion) {
    use switchyard::quality::store::{FeedbackStore, Put, Row, StoreSettings, Stored, now_ms};
    let dir = std::env::temp_dir().join(format!("switchyard-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = FeedbackStore::open(StoreSettings {
        path: Some(dir.join("feedback.redb")),
        ..StoreSettings::default()
    })
    .unwrap();
    let batch = |n: usize| -> Vec<Put> {
        (0..n)
            .map(|_| Put {
                model: "mlp".into(),
                id: format!("{:032x}", fastrand::u128(..)),
                version: "1".into(),
                record: Stored {
                    t_ms: now_ms(),
                    rows: vec![Row {
                        class: Some(fastrand::u32(..10)),
                        confidence: Some(0.9),
                        ..Row::default()
                    }],
                    ..Stored::default()
                },
            })
            .collect()
    };
    for _ in 0..100_000 / 512 {
        store.write(batch(512), false).unwrap();
    }
    let mut g = c.benchmark_group("feedback_store");
    g.throughput(Throughput::Elements(512));
    g.bench_function("write/512", |b| {
        b.iter_batched(
            || batch(512),
            |puts| store.write(puts, false).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(
    benches,
    http_codec,
    grpc_codec,
    batch_concat,
    batch_queue,
    feedback_store
);
criterion_main!(benches);
