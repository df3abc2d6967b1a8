//! In-process ONNX Runtime baseline: loads one model version through the
//! server's own ONNX module (same session options, same tensor building) and
//! runs it in a closed loop on one thread, without any server around it.
//!
//! `cargo run --release -p switchyard-benches --bin inproc -- --model models/simple --batch 1,8`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use switchyard::batching::BatchInput;
use switchyard::model::{SessionSettings, onnx};
use switchyard::repository::{self, config};
use switchyard::tensor::{DataType, TensorData};

#[derive(Parser)]
struct Args {
    /// Model directory in Triton's layout (its latest version is used).
    #[arg(long)]
    model: PathBuf,
    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    batch: Vec<usize>,
    /// Seconds per batch size.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Intra-op threads (0: as the model config says, else one per core).
    #[arg(long, default_value_t = 0)]
    intra_op_threads: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    onnx::init_runtime(None).map_err(anyhow::Error::msg)?;
    let repo = args.model.parent().unwrap_or(&args.model);
    let name = args.model.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let source =
        repository::read_model(&repository::Repository::new(repo), name, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (version, file) = source.versions.last().ok_or_else(|| anyhow::anyhow!("no version"))?;
    let bytes = std::fs::read(file)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut settings: SessionSettings = config::session_settings(&source.config, cores).map_err(anyhow::Error::msg)?;
    if args.intra_op_threads > 0 {
        settings.intra_op_threads = args.intra_op_threads;
    }
    let mut loaded = onnx::load(&bytes, &settings, 1).map_err(anyhow::Error::msg)?;
    let mut cfg = source.config.clone();
    config::complete(&mut cfg, &loaded.signature, name, *version, 4).map_err(anyhow::Error::msg)?;
    let executor = loaded
        .executors
        .first_mut()
        .ok_or_else(|| anyhow::anyhow!("no session"))?;
    println!(
        "model {name} v{version}, intra-op threads {}",
        settings.intra_op_threads
    );
    println!("{:>6} {:>12} {:>12} {:>14}", "batch", "p50 (us)", "p99 (us)", "infer/s");
    let mut results = Vec::new();
    for &batch in &args.batch {
        let inputs: Vec<(String, DataType, Vec<i64>, TensorData)> = cfg
            .input
            .iter()
            .map(|i| {
                let dt = DataType::from_config_enum(i.data_type).unwrap_or(DataType::Fp32);
                let mut shape: Vec<i64> = i.dims.iter().map(|&d| d.max(1)).collect();
                if cfg.max_batch_size > 0 {
                    shape.insert(0, batch as i64);
                }
                let n: usize = shape.iter().product::<i64>() as usize;
                let data = match dt.size() {
                    Some(size) => TensorData::Fixed(Bytes::from(vec![0u8; n * size])),
                    None => TensorData::Bytes(vec![Bytes::from_static(b"x"); n]),
                };
                (i.name.clone(), dt, shape, data)
            })
            .collect();
        let mut hist = Histogram::<u64>::new(3)?;
        let run = |executor: &mut Box<dyn switchyard::batching::Executor>| -> anyhow::Result<Duration> {
            let batch_inputs = inputs
                .iter()
                .map(|(name, dt, shape, data)| BatchInput {
                    name,
                    datatype: *dt,
                    shape: shape.clone(),
                    parts: vec![data],
                })
                .collect();
            let t = Instant::now();
            executor.run(batch_inputs).map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(t.elapsed())
        };
        for _ in 0..50 {
            run(executor)?;
        }
        let start = Instant::now();
        let mut calls = 0u64;
        while start.elapsed().as_secs_f64() < args.seconds {
            hist.record(run(executor)?.as_nanos() as u64)?;
            calls += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        results.push(serde_json::json!({
            "batch": batch,
            "p50_us": hist.value_at_quantile(0.5) as f64 / 1e3,
            "p99_us": hist.value_at_quantile(0.99) as f64 / 1e3,
            "infer_per_s": (calls as f64 * batch as f64) / secs,
        }));
        println!(
            "{batch:>6} {:>12.1} {:>12.1} {:>14.0}",
            hist.value_at_quantile(0.5) as f64 / 1e3,
            hist.value_at_quantile(0.99) as f64 / 1e3,
            (calls as f64 * batch as f64) / secs
        );
    }
    if let Some(path) = args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}
