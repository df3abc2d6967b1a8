//! A load generator that reports like Triton's `perf_analyzer`.
//!
//! [`run`] fetches the model's metadata and configuration, prepares one
//! request (random inputs of the right datatypes and shapes from a fixed seed,
//! or the inputs of a KServe V2 JSON request file), sends it once to fail
//! fast, then keeps the server busy: in a closed loop ([`Mode::Closed`], N
//! requests always outstanding) or an open loop ([`Mode::Open`], requests
//! sent on a schedule whatever the completions). After the warm-up it
//! measures `windows` back-to-back windows of `measurement` each and reports
//! the window with the median throughput ([`PerfReport`]): client-side
//! counts, throughput and latency percentiles, and the server's own
//! statistics over the same window ([`ServerStats`]).
//!
//! Only successful requests count towards throughput and latency; failures
//! are counted by kind. Latency is measured from the send (closed loop) or
//! from the scheduled send time (open loop, to avoid coordinated omission).

mod inputs;
mod load;
mod schedule;
mod stats;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Serialize, Serializer};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use stats::ServerStats;

use crate::{ClientError, ClientOptions, Encoding, GrpcClient, HttpClient, InferOptions, Tensor};
use load::{Load, Recorder, Target, Window};
use stats::Snapshot;

/// Seed of the generated inputs and of the Poisson schedule.
const SEED: u64 = 0x5eed_1234_abcd_0001;

/// The lowest open-loop rate, requests per second: the gaps of lower rates
/// would overflow the clock.
const MIN_RATE: f64 = 1e-6;

/// How long the end of a run waits for outstanding requests before it
/// abandons them.
const DRAIN: Duration = Duration::from_secs(5);

/// Wire protocol of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// KServe V2 REST.
    Http,
    /// KServe V2 gRPC.
    Grpc,
}

/// Gaps between the sends of an open loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Exactly `1 / rate` apart.
    Constant,
    /// Exponentially distributed with mean `1 / rate` (Poisson arrivals).
    Poisson,
}

/// How load is offered.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Mode {
    /// `concurrency` requests always outstanding: each worker sends its next
    /// request when the previous one completes.
    Closed {
        /// Number of workers.
        concurrency: usize,
    },
    /// Requests sent at `rate` per second on a schedule, whatever the
    /// completions do.
    Open {
        /// Requests per second.
        rate: f64,
        /// Gaps between sends.
        distribution: Distribution,
    },
}

/// What to run. [`PerfConfig::new`] fills in the defaults.
#[derive(Debug, Clone)]
pub struct PerfConfig {
    /// Server address (`http://127.0.0.1:8000`, `127.0.0.1:8001`).
    pub url: String,
    /// Wire protocol.
    pub protocol: Protocol,
    /// HTTP only: JSON or binary tensors (inputs and outputs).
    pub http_encoding: Encoding,
    /// Model name.
    pub model: String,
    /// Model version; `None` lets the server choose.
    pub model_version: Option<String>,
    /// Rows per request for generated inputs (1 for a model that does not batch).
    pub batch: usize,
    /// Closed or open loop.
    pub mode: Mode,
    /// Load before the measurement, not recorded (default 1 s).
    pub warmup: Duration,
    /// Length of one measurement window (default 5 s).
    pub measurement: Duration,
    /// Measurement windows, back to back (default 1); the report is the one
    /// with the median throughput, and lists the throughput of every window.
    pub windows: usize,
    /// A window also ends once it has recorded this many successful requests.
    pub max_requests: Option<u64>,
    /// A KServe V2 JSON request body whose inputs are sent instead of
    /// generated ones (rows per request: their first dimension).
    pub input_data: Option<PathBuf>,
    /// gRPC only: connections, used round-robin (default 1; tonic multiplexes
    /// every request over one). HTTP pools connections by itself.
    pub connections: usize,
    /// Open loop: the most requests outstanding at once (default 4096).
    pub max_outstanding: usize,
    /// Timeouts and TLS of every connection (default: [`ClientOptions::default`]).
    /// A request that times out counts as an error of kind `"timeout"`.
    pub client: ClientOptions,
}

impl PerfConfig {
    /// A configuration with the defaults: JSON over HTTP, batch 1, 1 s warm-up,
    /// one 5 s window, one connection, at most 4096 outstanding, the default
    /// client options.
    pub fn new(url: impl Into<String>, protocol: Protocol, model: impl Into<String>, mode: Mode) -> PerfConfig {
        PerfConfig {
            url: url.into(),
            protocol,
            http_encoding: Encoding::Json,
            model: model.into(),
            model_version: None,
            batch: 1,
            mode,
            warmup: Duration::from_secs(1),
            measurement: Duration::from_secs(5),
            windows: 1,
            max_requests: None,
            input_data: None,
            connections: 1,
            max_outstanding: 4096,
            client: ClientOptions::default(),
        }
    }

    fn validate(&self) -> Result<(), ClientError> {
        let invalid = |m: &str| Err(ClientError::InvalidArgument(m.into()));
        match self.mode {
            Mode::Closed { concurrency: 0 } => return invalid("concurrency must be at least 1"),
            Mode::Open { rate, .. } if !(rate.is_finite() && rate >= MIN_RATE) => {
                return invalid("the request rate must be a number of requests per second of at least 0.000001");
            }
            _ => {}
        }
        if self.windows == 0 || self.measurement.is_zero() {
            return invalid("the measurement needs at least one window of non-zero length");
        }
        if self.connections == 0 || self.max_outstanding == 0 {
            return invalid("connections and max_outstanding must be at least 1");
        }
        if self.max_requests == Some(0) {
            return invalid("max_requests must be at least 1");
        }
        Ok(())
    }
}

/// Client-side latency of the successful requests, µs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Latency {
    /// Percentiles of a histogram of µs (all 0 when it is empty).
    pub fn from_histogram(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p95: h.value_at_quantile(0.95),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// The result of one run: the measurement window with the median throughput.
#[derive(Debug, Clone, Serialize)]
pub struct PerfReport {
    /// Model name.
    pub model: String,
    /// Wire protocol.
    pub protocol: Protocol,
    /// How load was offered.
    #[serde(flatten)]
    pub mode: Mode,
    /// Rows per request.
    pub batch: usize,
    /// Successful requests.
    pub requests: u64,
    /// Successful inferences: `requests × batch`.
    pub inferences: u64,
    /// Failed requests by kind (`"HTTP 503"`, `"gRPC Unavailable"`, `"transport"`, ...).
    pub errors: BTreeMap<String, u64>,
    /// The message of the first failure, if any.
    pub first_error: Option<String>,
    /// Open loop: sends skipped because `max_outstanding` requests were outstanding.
    pub dropped: u64,
    /// Length of the window.
    #[serde(rename = "duration_s", serialize_with = "seconds")]
    pub duration: Duration,
    /// Inferences per second.
    pub throughput_infer_per_s: f64,
    /// Requests per second.
    pub throughput_req_per_s: f64,
    /// Latency of the successful requests.
    pub latency_us: Latency,
    /// Open loop: how late sends started after their scheduled time (timer
    /// granularity and a busy client show up here and in `latency_us`).
    pub send_lag_us: Option<Latency>,
    /// Inferences per second of every window, in order (to judge stability).
    pub window_throughputs: Vec<f64>,
    /// The server's statistics over the window (`None` when unavailable).
    pub server: Option<ServerStats>,
}

fn seconds<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl PerfReport {
    /// Total failed requests.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Connections to the server, one kind or the other.
enum Conn {
    Http(HttpClient),
    Grpc(Vec<GrpcClient>),
}

impl Conn {
    async fn open(config: &PerfConfig) -> Result<Conn, ClientError> {
        Ok(match config.protocol {
            Protocol::Http => Conn::Http(HttpClient::with_options(&config.url, &config.client)?),
            Protocol::Grpc => {
                let mut clients = Vec::with_capacity(config.connections);
                for _ in 0..config.connections {
                    clients.push(GrpcClient::connect_with_options(&config.url, &config.client).await?);
                }
                Conn::Grpc(clients)
            }
        })
    }

    /// The inputs to send and the model's `max_batch_size`.
    async fn inputs(&self, config: &PerfConfig) -> Result<(Vec<Tensor>, u64), ClientError> {
        let (model, version) = (config.model.as_str(), config.model_version.as_deref());
        let (specs, max_batch_size) = match self {
            Conn::Http(c) => {
                let specs = inputs::specs_from_json(&c.model_metadata(model, version).await?)?;
                (
                    specs,
                    inputs::max_batch_from_json(&c.model_config(model, version).await?),
                )
            }
            Conn::Grpc(c) => {
                let specs = inputs::specs_from_proto(&c[0].model_metadata(model, version).await?);
                let max = c[0].model_config(model, version).await?.max_batch_size;
                (specs, u64::try_from(max).unwrap_or(0))
            }
        };
        let tensors = match &config.input_data {
            Some(path) => {
                let read_error = |e: String| ClientError::InvalidArgument(format!("{}: {e}", path.display()));
                let text = std::fs::read(path).map_err(|e| read_error(e.to_string()))?;
                let body = serde_json::from_slice(&text).map_err(|e| read_error(e.to_string()))?;
                inputs::from_request_json(&body).map_err(|e| read_error(e.to_string()))?
            }
            None => inputs::generate(&specs, max_batch_size, config.batch, SEED)?,
        };
        Ok((tensors, max_batch_size))
    }

    fn target(&self, config: &PerfConfig, inputs: &[Tensor]) -> Result<Target, ClientError> {
        let opts = InferOptions {
            model_version: config.model_version.clone(),
            input_encoding: config.http_encoding,
            output_encoding: config.http_encoding,
            ..Default::default()
        };
        Ok(match self {
            Conn::Http(client) => {
                let encoded = crate::http::codec::encode_request(inputs, &opts)?;
                Target::Http {
                    client: client.clone(),
                    model: config.model.clone(),
                    version: config.model_version.clone(),
                    body: encoded.body.into(),
                    header_len: encoded.header_len,
                }
            }
            Conn::Grpc(clients) => Target::Grpc {
                clients: clients.clone(),
                request: crate::grpc::raw_request(&config.model, inputs, &opts)?,
            },
        })
    }

    /// The model's cumulative statistics now (`None` if the server has none).
    async fn snapshot(&self, config: &PerfConfig) -> Option<Snapshot> {
        let (model, version) = (Some(config.model.as_str()), config.model_version.as_deref());
        match self {
            Conn::Http(c) => Snapshot::from_json(&c.statistics(model, version).await.ok()?).ok(),
            Conn::Grpc(c) => Some(Snapshot::from_proto(&c[0].statistics(model, version).await.ok()?)),
        }
    }
}

/// Runs the load described by `config` and reports on it. Fails before any
/// load when the model cannot be inspected or the first request fails.
pub async fn run(config: &PerfConfig) -> Result<PerfReport, ClientError> {
    config.validate()?;
    let conn = Conn::open(config).await?;
    let (tensors, max_batch_size) = conn.inputs(config).await?;
    let batch = inputs::rows(&tensors, max_batch_size);
    let target = Arc::new(conn.target(config, &tensors)?);
    target.send(0).await?;

    let recorder = Arc::new(Recorder::new(config.max_requests));
    let (stop_tx, stop) = watch::channel(false);
    let load = Load {
        target,
        recorder: recorder.clone(),
        stop,
    };
    let mut tasks = JoinSet::new();
    match config.mode {
        Mode::Closed { concurrency } => load::spawn_closed(&load, concurrency, &mut tasks),
        Mode::Open { rate, distribution } => {
            let schedule = schedule::Schedule::new(rate, distribution, SEED);
            load::spawn_open(&load, schedule, config.max_outstanding, DRAIN, &mut tasks)?;
        }
    }

    tokio::time::sleep(config.warmup).await;
    let mut full = recorder.full_windows();
    recorder.next_window();
    let mut snapshots = vec![conn.snapshot(config).await];
    for i in 0..config.windows {
        tokio::select! {
            _ = tokio::time::sleep(config.measurement) => {}
            _ = full.wait_for(|&n| n > i) => {}
        }
        if i + 1 < config.windows {
            recorder.next_window();
            snapshots.push(conn.snapshot(config).await);
        }
    }
    let windows = recorder.finish();
    snapshots.push(conn.snapshot(config).await);
    stop_tx.send_replace(true);
    let _ = tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    Ok(report(config, batch, windows, &snapshots))
}

/// The report of the window with the median throughput.
fn report(config: &PerfConfig, batch: usize, windows: Vec<Window>, snapshots: &[Option<Snapshot>]) -> PerfReport {
    let rate = |w: &Window| w.requests as f64 / w.end.duration_since(w.start).as_secs_f64().max(1e-9);
    let window_throughputs: Vec<f64> = windows.iter().map(|w| rate(w) * batch as f64).collect();
    let mut order: Vec<usize> = (0..windows.len()).collect();
    order.sort_by(|&a, &b| window_throughputs[a].total_cmp(&window_throughputs[b]));
    let median = order[(order.len() - 1) / 2];
    let w = &windows[median];
    let server = match (&snapshots[median], &snapshots[median + 1]) {
        (Some(before), Some(after)) => Some(after.since(before)),
        _ => None,
    };
    PerfReport {
        model: config.model.clone(),
        protocol: config.protocol,
        mode: config.mode,
        batch,
        requests: w.requests,
        inferences: w.requests * batch as u64,
        errors: w.errors.clone(),
        first_error: w.first_error.clone(),
        dropped: w.dropped,
        duration: w.end.duration_since(w.start),
        throughput_infer_per_s: window_throughputs[median],
        throughput_req_per_s: rate(w),
        latency_us: Latency::from_histogram(&w.latency),
        send_lag_us: matches!(config.mode, Mode::Open { .. }).then(|| Latency::from_histogram(&w.send_lag)),
        window_throughputs,
        server,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        h.record(50_000).unwrap();
        let l = Latency::from_histogram(&h);
        assert_eq!((l.p50, l.p90, l.p95, l.p99), (501, 901, 951, 991));
        assert_eq!(l.p999, 1000);
        assert!((49_990..=50_050).contains(&l.max), "{}", l.max);
        assert!((l.mean - 550.0).abs() < 1.0, "{}", l.mean);
        let empty = Histogram::<u64>::new(3).unwrap();
        assert_eq!(Latency::from_histogram(&empty), Latency::default());
    }

    #[test]
    fn invalid_configurations_are_refused() {
        let closed = |c| PerfConfig::new("x", Protocol::Http, "m", Mode::Closed { concurrency: c });
        assert!(closed(1).validate().is_ok());
        assert!(closed(0).validate().is_err());
        let open = |rate| {
            let mode = Mode::Open {
                rate,
                distribution: Distribution::Poisson,
            };
            PerfConfig::new("x", Protocol::Grpc, "m", mode)
        };
        assert!(open(10.0).validate().is_ok());
        assert!(open(0.0).validate().is_err());
        assert!(open(f64::NAN).validate().is_err());
        assert!(open(f64::INFINITY).validate().is_err());
        assert!(open(1e-300).validate().is_err());
        assert!(open(MIN_RATE).validate().is_ok());
        // The slowest accepted schedule still has representable gaps.
        for distribution in [Distribution::Constant, Distribution::Poisson] {
            let mut slowest = schedule::Schedule::new(MIN_RATE, distribution, SEED);
            assert!((0..1000).all(|_| slowest.next_gap() > Duration::from_secs(1)));
        }
        let mut c = closed(1);
        c.windows = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn reports_serialize_with_flat_mode_and_seconds() {
        let report = PerfReport {
            model: "m".into(),
            protocol: Protocol::Grpc,
            mode: Mode::Closed { concurrency: 4 },
            batch: 2,
            requests: 10,
            inferences: 20,
            errors: BTreeMap::from([("HTTP 503".to_string(), 1)]),
            first_error: None,
            dropped: 0,
            duration: Duration::from_millis(1500),
            throughput_infer_per_s: 13.3,
            throughput_req_per_s: 6.6,
            latency_us: Latency::default(),
            send_lag_us: None,
            window_throughputs: vec![13.3],
            server: None,
        };
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(v["mode"], "closed");
        assert_eq!(v["concurrency"], 4);
        assert_eq!(v["protocol"], "grpc");
        assert_eq!(v["duration_s"], 1.5);
        assert_eq!(v["errors"]["HTTP 503"], 1);
        assert_eq!(report.error_count(), 1);
    }

    #[test]
    fn the_report_is_the_median_window() {
        let recorder = Recorder::new(None);
        for requests in [5, 9, 1] {
            recorder.next_window();
            for _ in 0..requests {
                recorder.record(Duration::from_micros(100 * requests), Ok(()));
            }
            // Windows of about equal length, so their throughputs order like their
            // request counts whatever the scheduling jitter.
            std::thread::sleep(Duration::from_millis(30));
        }
        let windows = recorder.finish();
        let snapshot = |n| {
            Some(Snapshot {
                inference_count: n,
                execution_count: n,
                ..Default::default()
            })
        };
        let snapshots = [snapshot(0), snapshot(10), snapshot(30), None];
        let config = PerfConfig::new("x", Protocol::Http, "m", Mode::Closed { concurrency: 1 });
        let r = report(&config, 2, windows, &snapshots);
        assert_eq!((r.requests, r.inferences), (5, 10));
        assert_eq!(r.latency_us.p50, 500);
        assert_eq!(r.window_throughputs.len(), 3);
        assert_eq!(r.server.map(|s| s.inference_count), Some(10));
        assert_eq!(r.send_lag_us, None);
    }
}
