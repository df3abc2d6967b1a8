//! Hot-swap benchmark: continuous load from concurrent HTTP and gRPC clients
//! while a model's serving version is swapped N times through the repository
//! API. Reports failed requests, p50/p99 in a steady phase and during the
//! swaps (and their ratio), and the process RSS after the first and the last
//! swap (server and clients share the process; the clients' share is flat).
//!
//! `cargo run --release -p switchyard-benches --bin swap -- --swaps 100`

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use switchyard::config::ControlMode;
use switchyard::{Config, Server};
use switchyard_client::{Data, GrpcClient, HttpClient, InferOptions, Tensor};

#[derive(Parser)]
struct Args {
    /// Model repository (default: the bundled examples).
    #[arg(long, default_value = "models")]
    model_repository: PathBuf,
    /// Swaps to perform (alternating versions 1 and 2 of `simple`).
    #[arg(long, default_value_t = 100)]
    swaps: usize,
    /// Pause between swaps, milliseconds.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// Concurrent clients (half HTTP, half gRPC).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds of steady load before the swaps.
    #[arg(long, default_value_t = 10.0)]
    steady_secs: f64,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Each client's histogram of a phase, merged at the end.
type Shared = std::sync::Mutex<Vec<Histogram<u64>>>;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn only_version(v: i64) -> String {
    format!(r#"{{"max_batch_size": 8, "version_policy": {{"specific": {{"versions": [{v}]}}}}}}"#)
}

fn inputs(i: i32) -> (Vec<Tensor>, Data) {
    let a: Vec<i32> = (0..16).map(|x| x + i).collect();
    let want = Data::I32(a.iter().map(|x| x + 1).collect());
    (
        vec![
            Tensor::new("INPUT0", vec![1, 16], Data::I32(a)),
            Tensor::new("INPUT1", vec![1, 16], Data::I32(vec![1; 16])),
        ],
        want,
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = Config::for_repository(&args.model_repository);
    config.model_control_mode = ControlMode::Explicit;
    let server = Server::start(config).await?;
    server.wait_ready().await;
    let http = HttpClient::new(&format!("http://{}", server.http_addr))?;
    let grpc = GrpcClient::connect(&format!("http://{}", server.grpc_addr)).await?;
    http.load_model("simple", Some(&only_version(1))).await?;

    // 0 = steady, 1 = swapping, 2 = stop.
    let phase = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let steady = Arc::new(Shared::default());
    let swapping = Arc::new(Shared::default());
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let (phase, failed, steady, swapping) = (phase.clone(), failed.clone(), steady.clone(), swapping.clone());
        let (http, grpc) = (http.clone(), grpc.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = [Histogram::<u64>::new(3).unwrap(), Histogram::<u64>::new(3).unwrap()];
            let (tensors, want) = inputs(i as i32);
            let opts = InferOptions::default();
            loop {
                let p = phase.load(Ordering::Relaxed);
                if p >= 2 {
                    break;
                }
                let t = Instant::now();
                let r = if i % 2 == 0 {
                    http.infer("simple", &tensors, &opts).await
                } else {
                    grpc.infer("simple", &tensors, &opts).await
                };
                let us = t.elapsed().as_micros() as u64;
                match r {
                    Ok(r) if r.output("OUTPUT0").map(|o| &o.data) == Some(&want) => {
                        let _ = h[p as usize].record(us.max(1));
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let [a, b] = h;
            steady.lock().unwrap().push(a);
            swapping.lock().unwrap().push(b);
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.steady_secs)).await;
    phase.store(1, Ordering::Relaxed);
    let mut rss_first = 0;
    let swap_started = Instant::now();
    for cycle in 0..args.swaps {
        let v = if cycle % 2 == 0 { 2 } else { 1 };
        http.load_model("simple", Some(&only_version(v))).await?;
        if cycle == 0 {
            rss_first = rss_kib();
        }
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
    let swap_secs = swap_started.elapsed().as_secs_f64();
    let rss_last = rss_kib();
    phase.store(2, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let merge = |s: &Shared| {
        let mut all = Histogram::<u64>::new(3).unwrap();
        for h in s.lock().unwrap().iter() {
            all.add(h).unwrap();
        }
        all
    };
    let (st, sw) = (merge(&steady), merge(&swapping));
    let failed = failed.load(Ordering::Relaxed);
    let ratio = sw.value_at_quantile(0.99) as f64 / st.value_at_quantile(0.99).max(1) as f64;
    let rss_ratio = rss_last as f64 / rss_first.max(1) as f64;
    println!("swaps: {} in {swap_secs:.1} s, {} clients", args.swaps, args.clients);
    println!("failed requests: {failed}");
    println!(
        "steady:   {} requests, p50 {} us, p99 {} us",
        st.len(),
        st.value_at_quantile(0.5),
        st.value_at_quantile(0.99)
    );
    println!(
        "swapping: {} requests, p50 {} us, p99 {} us",
        sw.len(),
        sw.value_at_quantile(0.5),
        sw.value_at_quantile(0.99)
    );
    println!("p99 swapping / steady: {ratio:.2}");
    println!(
        "RSS after swap 1: {rss_first} KiB, after swap {}: {rss_last} KiB ({rss_ratio:.3}x)",
        args.swaps
    );
    if let Some(path) = &args.json {
        let j = serde_json::json!({
            "swaps": args.swaps, "clients": args.clients, "failed": failed,
            "steady": {"requests": st.len(), "p50_us": st.value_at_quantile(0.5), "p99_us": st.value_at_quantile(0.99)},
            "swapping": {"requests": sw.len(), "p50_us": sw.value_at_quantile(0.5), "p99_us": sw.value_at_quantile(0.99)},
            "p99_ratio": ratio, "rss_first_kib": rss_first, "rss_last_kib": rss_last, "rss_ratio": rss_ratio,
        });
        std::fs::write(path, serde_json::to_string_pretty(&j)?)?;
    }
    server.shutdown();
    server.wait().await?;
    anyhow::ensure!(failed == 0, "{failed} requests failed during the swaps");
    Ok(())
}
