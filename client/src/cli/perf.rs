//! `perf`: the load generator on the command line. One run per concurrency
//! (or one open-loop run), each printed as a perf_analyzer-like block; a
//! sweep ends with a summary table, and can be saved as JSON and as an SVG
//! chart.

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{ArgGroup, Args, ValueEnum};
use switchyard_client::perf::{self, Distribution, Mode, PerfConfig, PerfReport};
use switchyard_client::{ClientOptions, Encoding};

use super::output::table;
use super::plot::{self, PlotPoint};
use super::{Protocol, default_url};

/// Arguments of `perf`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("load").args(["concurrency", "concurrency_range", "request_rate"])))]
pub struct PerfArgs {
    /// Model name.
    #[arg(short = 'm', long)]
    pub model: String,
    /// Model version (default: the server's choice).
    #[arg(long)]
    pub version: Option<String>,
    /// HTTP: send inputs and receive outputs with the binary tensor data extension.
    #[arg(long)]
    pub binary: bool,
    /// Rows per request (generated inputs; 1 for a model that does not batch).
    #[arg(short = 'b', long, default_value_t = 1)]
    pub batch: usize,
    /// Closed loop: requests kept outstanding [default: 1].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Closed-loop sweep: one run per concurrency from START to END (inclusive) by STEP (default 1).
    #[arg(long, value_name = "START:END[:STEP]")]
    pub concurrency_range: Option<ConcurrencyRange>,
    /// Open loop: requests per second, sent on schedule whatever the completions.
    #[arg(long, value_name = "R")]
    pub request_rate: Option<f64>,
    /// Open loop: gaps between sends.
    #[arg(long, value_enum, default_value_t = DistributionArg::Constant, requires = "request_rate")]
    pub distribution: DistributionArg,
    /// Seconds of load before each measurement (not recorded).
    #[arg(long, value_name = "S", default_value_t = 1.0, value_parser = parse_secs)]
    pub warmup_secs: f64,
    /// Seconds of each measurement window.
    #[arg(long, value_name = "S", default_value_t = 5.0, value_parser = parse_secs)]
    pub measurement_secs: f64,
    /// Measurement windows per run; the one with the median throughput is reported.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub windows: usize,
    /// End a window early once it has this many successful requests.
    #[arg(long, value_name = "N")]
    pub max_requests: Option<u64>,
    /// gRPC: connections, used round-robin (HTTP pools its own).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub connections: usize,
    /// Open loop: the most requests outstanding; sends beyond it are dropped and counted.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub max_outstanding: usize,
    /// Send the inputs of this KServe V2 JSON request body instead of random ones.
    #[arg(long, value_name = "FILE.json")]
    pub input_data: Option<PathBuf>,
    /// Write the reports as a JSON array.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write an SVG chart of p50 and p99 latency against throughput.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// Open-loop gap distribution on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DistributionArg {
    /// Evenly spaced sends.
    Constant,
    /// Exponential gaps (Poisson arrivals).
    Poisson,
}

/// `START:END[:STEP]`, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcurrencyRange {
    start: usize,
    end: usize,
    step: usize,
}

impl ConcurrencyRange {
    /// Every concurrency of the range, in order.
    pub fn values(&self) -> Vec<usize> {
        (self.start..=self.end).step_by(self.step).collect()
    }
}

impl FromStr for ConcurrencyRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let number = |p: &str| {
            p.trim()
                .parse::<usize>()
                .map_err(|_| format!("'{s}': '{p}' is not a whole number"))
        };
        let (start, end, step) = match parts[..] {
            [a, b] => (number(a)?, number(b)?, 1),
            [a, b, c] => (number(a)?, number(b)?, number(c)?),
            _ => return Err(format!("'{s}' is not START:END[:STEP]")),
        };
        if start == 0 || step == 0 || end < start {
            return Err(format!("'{s}': need 1 <= START <= END and STEP >= 1"));
        }
        Ok(ConcurrencyRange { start, end, step })
    }
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v >= 0.0 && Duration::try_from_secs_f64(v).is_ok() => Ok(v),
        _ => Err(format!("'{s}' is not a number of seconds")),
    }
}

impl PerfArgs {
    /// The runs to make, in order.
    fn modes(&self) -> Vec<Mode> {
        if let Some(rate) = self.request_rate {
            let distribution = match self.distribution {
                DistributionArg::Constant => Distribution::Constant,
                DistributionArg::Poisson => Distribution::Poisson,
            };
            return vec![Mode::Open { rate, distribution }];
        }
        let concurrencies = match self.concurrency_range {
            Some(range) => range.values(),
            None => vec![self.concurrency.unwrap_or(1)],
        };
        concurrencies
            .into_iter()
            .map(|concurrency| Mode::Closed { concurrency })
            .collect()
    }

    fn config(&self, protocol: Protocol, url: &str, options: &ClientOptions, mode: Mode) -> PerfConfig {
        let protocol = match protocol {
            Protocol::Http => perf::Protocol::Http,
            Protocol::Grpc => perf::Protocol::Grpc,
        };
        let mut c = PerfConfig::new(url, protocol, &self.model, mode);
        c.http_encoding = if self.binary { Encoding::Binary } else { Encoding::Json };
        c.model_version = self.version.clone();
        c.batch = self.batch;
        c.warmup = Duration::from_secs_f64(self.warmup_secs);
        c.measurement = Duration::from_secs_f64(self.measurement_secs);
        c.windows = self.windows;
        c.max_requests = self.max_requests;
        c.input_data = self.input_data.clone();
        c.connections = self.connections;
        c.max_outstanding = self.max_outstanding;
        c.client = options.clone();
        c
    }
}

/// Runs `perf`: fails on the first run that cannot start; exits with 1 when
/// a run completed no request at all.
pub async fn run(protocol: Protocol, url: Option<&str>, options: &ClientOptions, args: PerfArgs) -> Result<ExitCode> {
    let url = url.unwrap_or(default_url(protocol));
    let mut reports = Vec::new();
    for mode in args.modes() {
        let report = perf::run(&args.config(protocol, url, options, mode))
            .await
            .with_context(|| format!("{} on '{}' at {url}", mode_label(&mode), args.model))?;
        println!("{}", block(&report));
        reports.push(report);
    }
    if reports.len() > 1 {
        println!("{}", summary(&reports));
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&reports)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let title = format!("{} ({:?}, batch {})", args.model, protocol, args.batch).to_lowercase();
        let svg = plot::latency_svg(&title, &plot_points(&reports));
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if reports.iter().all(|r| r.requests > 0) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn mode_label(mode: &Mode) -> String {
    match mode {
        Mode::Closed { concurrency } => format!("Concurrency: {concurrency}"),
        Mode::Open { rate, distribution } => {
            let distribution = match distribution {
                Distribution::Constant => "constant",
                Distribution::Poisson => "poisson",
            };
            format!("Request rate: {rate}/sec ({distribution})")
        }
    }
}

/// One run, as perf_analyzer prints it, plus request counts, errors and the
/// server's breakdown.
pub fn block(r: &PerfReport) -> String {
    let l = &r.latency_us;
    let mut out = format!(
        "{}, throughput: {:.1} infer/sec, latency p50 {} usec, p90 {} usec, p95 {} usec, p99 {} usec\n",
        mode_label(&r.mode),
        r.throughput_infer_per_s,
        l.p50,
        l.p90,
        l.p95,
        l.p99
    );
    out.push_str(&format!(
        "  Client: {} requests in {:.2} s ({:.1} req/sec, batch {}), avg latency {:.0} usec, p99.9 {} usec, max {} usec\n",
        r.requests,
        r.duration.as_secs_f64(),
        r.throughput_req_per_s,
        r.batch,
        l.mean,
        l.p999,
        l.max
    ));
    let errors = r.error_count();
    out.push_str(&format!("  Errors: {errors}"));
    if errors > 0 {
        let kinds: Vec<String> = r.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        out.push_str(&format!(" ({})", kinds.join(", ")));
        if let Some(first) = &r.first_error {
            out.push_str(&format!(", first: {first}"));
        }
    }
    if matches!(r.mode, Mode::Open { .. }) {
        out.push_str(&format!(", dropped (over max outstanding): {}", r.dropped));
    }
    out.push('\n');
    if let Some(lag) = &r.send_lag_us {
        out.push_str(&format!(
            "  Send lag behind schedule: p50 {} usec, p99 {} usec, max {} usec\n",
            lag.p50, lag.p99, lag.max
        ));
    }
    if r.window_throughputs.len() > 1 {
        let all: Vec<String> = r.window_throughputs.iter().map(|t| format!("{t:.1}")).collect();
        out.push_str(&format!("  Windows: {} infer/sec (median reported)\n", all.join(", ")));
    }
    match &r.server {
        Some(s) => out.push_str(&format!(
            "  Server: avg queue {:.0} us, compute input {:.0} us, compute infer {:.0} us, compute output {:.0} us, \
             avg batch {:.2} ({} requests, {} executions, avg request {:.0} us)\n",
            s.avg_queue_us,
            s.avg_compute_input_us,
            s.avg_compute_infer_us,
            s.avg_compute_output_us,
            s.avg_batch_size,
            s.request_count,
            s.execution_count,
            s.avg_request_us
        )),
        None => out.push_str("  Server: statistics unavailable\n"),
    }
    out
}

/// The table after a sweep: one row per run.
fn summary(reports: &[PerfReport]) -> String {
    let rows: Vec<[String; 10]> = reports
        .iter()
        .map(|r| {
            let l = &r.latency_us;
            let server = |f: fn(&perf::ServerStats) -> f64, precision: usize| {
                r.server
                    .as_ref()
                    .map_or("-".to_string(), |s| format!("{:.*}", precision, f(s)))
            };
            [
                match r.mode {
                    Mode::Closed { concurrency } => concurrency.to_string(),
                    Mode::Open { rate, .. } => format!("{rate}/s"),
                },
                format!("{:.1}", r.throughput_infer_per_s),
                l.p50.to_string(),
                l.p90.to_string(),
                l.p95.to_string(),
                l.p99.to_string(),
                r.error_count().to_string(),
                server(|s| s.avg_queue_us, 0),
                server(|s| s.avg_compute_infer_us, 0),
                server(|s| s.avg_batch_size, 2),
            ]
        })
        .collect();
    let header = [
        "CONCURRENCY",
        "INFER/SEC",
        "P50 US",
        "P90 US",
        "P95 US",
        "P99 US",
        "ERRORS",
        "QUEUE US",
        "INFER US",
        "AVG BATCH",
    ];
    table(&header, &rows)
}

fn plot_points(reports: &[PerfReport]) -> Vec<PlotPoint> {
    reports
        .iter()
        .map(|r| PlotPoint {
            label: match r.mode {
                Mode::Closed { concurrency } => format!("c={concurrency}"),
                Mode::Open { rate, .. } => format!("{rate}/s"),
            },
            throughput: r.throughput_infer_per_s,
            p50: r.latency_us.p50 as f64,
            p99: r.latency_us.p99 as f64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{Cli, Command};
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<PerfArgs, clap::Error> {
        let cli = Cli::try_parse_from(["switchyard-client", "perf", "-m", "simple"].iter().chain(args))?;
        match cli.command {
            Command::Perf(args) => Ok(args),
            other => panic!("not perf: {other:?}"),
        }
    }

    #[test]
    fn concurrency_ranges_parse() {
        let r = |s: &str| s.parse::<ConcurrencyRange>().map(|r| r.values());
        assert_eq!(r("1:4"), Ok(vec![1, 2, 3, 4]));
        assert_eq!(r("1:8:2"), Ok(vec![1, 3, 5, 7]));
        assert_eq!(r("2:16:7"), Ok(vec![2, 9, 16]));
        assert_eq!(r("3:3"), Ok(vec![3]));
        for bad in ["4", "0:4", "4:1", "1:4:0", "1:x", "1:2:3:4", ""] {
            assert!(r(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn perf_arguments_pick_the_runs() {
        let args = parse(&["--concurrency-range", "1:8:3", "-b", "4", "--binary"]).unwrap();
        let modes = args.modes();
        assert_eq!(modes, [1, 4, 7].map(|concurrency| Mode::Closed { concurrency }));
        assert_eq!((args.batch, args.binary), (4, true));
        assert_eq!(parse(&[]).unwrap().modes(), [Mode::Closed { concurrency: 1 }]);
        let open = parse(&["--request-rate", "200", "--distribution", "poisson"]).unwrap();
        assert_eq!(
            open.modes(),
            [Mode::Open {
                rate: 200.0,
                distribution: Distribution::Poisson
            }]
        );
        let options = ClientOptions::default().with_request_timeout(Duration::from_millis(300));
        let config = open.config(Protocol::Grpc, "127.0.0.1:1", &options, open.modes()[0]);
        assert_eq!(config.protocol, perf::Protocol::Grpc);
        assert_eq!(config.client.request_timeout, Some(Duration::from_millis(300)));
        assert_eq!(config.measurement, Duration::from_secs(5));
        // One kind of load at a time; a distribution needs a rate.
        assert!(parse(&["--concurrency", "2", "--request-rate", "5"]).is_err());
        assert!(parse(&["--concurrency", "2", "--concurrency-range", "1:2"]).is_err());
        assert!(parse(&["--distribution", "poisson"]).is_err());
        assert!(parse(&["--measurement-secs", "-1"]).is_err());
        assert!(parse(&["--warmup-secs", "1e300"]).is_err());
        assert!(parse(&["--concurrency-range", "8:1"]).is_err());
    }

    #[test]
    fn blocks_read_like_perf_analyzer() {
        let report = sample_report();
        let text = block(&report);
        assert!(
            text.starts_with("Concurrency: 4, throughput: 2000.0 infer/sec, latency p50 "),
            "{text}"
        );
        assert!(text.contains("Errors: 2 (HTTP 503: 2), first: HTTP 503: queue full"));
        assert!(text.contains("Server: avg queue 12 us"));
        assert!(text.contains("avg batch 2.50"));
        let table = summary(&[report.clone(), report]);
        assert!(table.starts_with("CONCURRENCY"));
        assert_eq!(table.lines().count(), 3);
    }

    fn sample_report() -> PerfReport {
        use std::collections::BTreeMap;
        use switchyard_client::perf::{Latency, ServerStats};
        PerfReport {
            model: "simple".into(),
            protocol: perf::Protocol::Http,
            mode: Mode::Closed { concurrency: 4 },
            batch: 2,
            requests: 5000,
            inferences: 10000,
            errors: BTreeMap::from([("HTTP 503".to_string(), 2)]),
            first_error: Some("HTTP 503: queue full".into()),
            dropped: 0,
            duration: Duration::from_secs(5),
            throughput_infer_per_s: 2000.0,
            throughput_req_per_s: 1000.0,
            latency_us: Latency {
                p50: 900,
                p90: 1200,
                p95: 1300,
                p99: 2000,
                p999: 3000,
                max: 4000,
                mean: 950.0,
            },
            send_lag_us: None,
            window_throughputs: vec![2000.0],
            server: Some(ServerStats {
                request_count: 5000,
                avg_queue_us: 12.4,
                avg_batch_size: 2.5,
                ..Default::default()
            }),
        }
    }
}
