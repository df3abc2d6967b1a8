//! Command-line flags and their `SWITCHYARD_*` environment variables. Flag
//! names follow Triton's so existing launch scripts and manifests carry over.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::access::{HeaderRestriction, TokenFile};
use crate::metrics::MetricsSettings;

/// How the set of served models is decided (Triton's `--model-control-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ControlMode {
    /// Load every model in the repository at start; the repository API refuses changes.
    None,
    /// Like `none`, then re-scan the repository every `--repository-poll-secs`:
    /// load new models and versions, reload changed ones, unload removed ones.
    Poll,
    /// Load only `--load-model` at start; the repository API loads and unloads.
    Explicit,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Switchyard: serves ONNX models over KServe V2 / Triton-compatible HTTP and gRPC.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "switchyard",
    version,
    about,
    after_help = "Offline check of a model repository (for CI/CD): switchyard validate --model-repository DIR"
)]
pub struct Config {
    /// Model repository in Triton's layout: `<repo>/<model>/[config.pbtxt]` and
    /// `<repo>/<model>/<version>/model.onnx`.
    #[arg(long, env = "SWITCHYARD_MODEL_REPOSITORY")]
    pub model_repository: PathBuf,
    /// Serve a `--model-repository` that holds one model's files rather than
    /// model directories (`model.onnx`, `<version>/model.onnx`, optional
    /// `config.pbtxt`: what KServe's storage initializer puts in `/mnt/models`)
    /// as the model NAME. A Triton repository is served as usual.
    #[arg(long, env = "SWITCHYARD_MODEL_NAME", value_name = "NAME")]
    pub model_name: Option<String>,

    /// Address the HTTP (KServe V2 REST) endpoint binds to.
    #[arg(long, env = "SWITCHYARD_HTTP_ADDRESS", default_value = "0.0.0.0")]
    pub http_address: IpAddr,
    /// HTTP port.
    #[arg(long, env = "SWITCHYARD_HTTP_PORT", default_value_t = 8000)]
    pub http_port: u16,
    /// Address the gRPC endpoint binds to.
    #[arg(long, env = "SWITCHYARD_GRPC_ADDRESS", default_value = "0.0.0.0")]
    pub grpc_address: IpAddr,
    /// gRPC port.
    #[arg(long, env = "SWITCHYARD_GRPC_PORT", default_value_t = 8001)]
    pub grpc_port: u16,
    /// Address the Prometheus `/metrics` endpoint binds to.
    #[arg(long, env = "SWITCHYARD_METRICS_ADDRESS", default_value = "0.0.0.0")]
    pub metrics_address: IpAddr,
    /// Metrics port.
    #[arg(long, env = "SWITCHYARD_METRICS_PORT", default_value_t = 8002)]
    pub metrics_port: u16,

    /// Serve gRPC over TLS (Triton's flag).
    #[arg(long, env = "SWITCHYARD_GRPC_USE_SSL", default_value_t = false, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub grpc_use_ssl: bool,
    /// gRPC: require client certificates signed by `--grpc-root-cert` (mTLS; implies `--grpc-use-ssl`).
    #[arg(long, env = "SWITCHYARD_GRPC_USE_SSL_MUTUAL", default_value_t = false, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub grpc_use_ssl_mutual: bool,
    /// gRPC: server certificate chain (PEM); reloaded when the file changes.
    #[arg(long, env = "SWITCHYARD_GRPC_SERVER_CERT")]
    pub grpc_server_cert: Option<PathBuf>,
    /// gRPC: server private key (PEM).
    #[arg(long, env = "SWITCHYARD_GRPC_SERVER_KEY")]
    pub grpc_server_key: Option<PathBuf>,
    /// gRPC: CA bundle (PEM) client certificates must chain to.
    #[arg(long, env = "SWITCHYARD_GRPC_ROOT_CERT")]
    pub grpc_root_cert: Option<PathBuf>,
    /// Serve HTTP over TLS.
    #[arg(long, env = "SWITCHYARD_HTTP_USE_SSL", default_value_t = false, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub http_use_ssl: bool,
    /// HTTP: require client certificates signed by `--http-root-cert` (implies `--http-use-ssl`).
    #[arg(long, env = "SWITCHYARD_HTTP_USE_SSL_MUTUAL", default_value_t = false, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub http_use_ssl_mutual: bool,
    /// HTTP (and metrics/admin with TLS): server certificate chain (PEM); reloaded when the file changes.
    #[arg(long, env = "SWITCHYARD_HTTP_SERVER_CERT")]
    pub http_server_cert: Option<PathBuf>,
    /// HTTP (and metrics/admin with TLS): server private key (PEM).
    #[arg(long, env = "SWITCHYARD_HTTP_SERVER_KEY")]
    pub http_server_key: Option<PathBuf>,
    /// HTTP (and metrics/admin with mTLS): CA bundle (PEM) client certificates must chain to.
    #[arg(long, env = "SWITCHYARD_HTTP_ROOT_CERT")]
    pub http_root_cert: Option<PathBuf>,
    /// Serve metrics over TLS, with the HTTP certificate.
    #[arg(long, env = "SWITCHYARD_METRICS_USE_SSL", default_value_t = false, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub metrics_use_ssl: bool,
    /// Metrics: require client certificates signed by `--http-root-cert`.
    #[arg(long, env = "SWITCHYARD_METRICS_USE_SSL_MUTUAL", default_value_t = false, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub metrics_use_ssl_mutual: bool,
    /// Serve the admin port over TLS, with the HTTP certificate.
    #[arg(long, env = "SWITCHYARD_ADMIN_USE_SSL", default_value_t = false, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub admin_use_ssl: bool,
    /// Admin port: require client certificates signed by `--http-root-cert`.
    #[arg(long, env = "SWITCHYARD_ADMIN_USE_SSL_MUTUAL", default_value_t = false, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub admin_use_ssl_mutual: bool,
    /// Extra CA bundle (PEM) trusted by the https:// prediction-log and OTLP sinks (besides the system roots).
    #[arg(long, env = "SWITCHYARD_TLS_SINK_CA_FILE")]
    pub tls_sink_ca_file: Option<PathBuf>,

    /// Model control mode: none, poll or explicit.
    #[arg(long, env = "SWITCHYARD_MODEL_CONTROL_MODE", value_enum, default_value_t = ControlMode::None)]
    pub model_control_mode: ControlMode,
    /// Model to load at start in explicit mode (repeatable; `*` loads all).
    #[arg(long = "load-model", env = "SWITCHYARD_LOAD_MODEL", value_delimiter = ',')]
    pub load_models: Vec<String>,
    /// Seconds between repository scans in poll mode.
    #[arg(long, env = "SWITCHYARD_REPOSITORY_POLL_SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub repository_poll_secs: u64,
    /// Ready only when every model meant to serve at start is loaded (`false`:
    /// ready as soon as the server listens, even if some model failed).
    #[arg(long, env = "SWITCHYARD_STRICT_READINESS", default_value_t = true, action = clap::ArgAction::Set)]
    pub strict_readiness: bool,
    /// Seconds in-flight requests get to finish once the listeners stop
    /// accepting (after the drain period), before the process exits anyway.
    #[arg(long, env = "SWITCHYARD_EXIT_TIMEOUT_SECS", default_value_t = 30)]
    pub exit_timeout_secs: u64,
    /// Seconds between SIGTERM/SIGINT and closing the listeners: readiness is
    /// false at once (load balancers and Kubernetes endpoints take the replica
    /// out), requests keep being served meanwhile. A second signal ends the
    /// drain early.
    #[arg(long, env = "SWITCHYARD_SHUTDOWN_DRAIN_SECS", default_value_t = 5)]
    pub shutdown_drain_secs: u64,

    /// Open connections per listener at most; beyond it a new connection is
    /// closed at once (plain HTTP: after a 503) and counted. Lowered at start
    /// to fit the process's file-descriptor limit.
    #[arg(long, env = "SWITCHYARD_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u32).range(1..), |v| v as usize))]
    pub max_connections: usize,
    /// Close a connection that has had no request in flight for this many
    /// seconds (0 = never).
    #[arg(long, env = "SWITCHYARD_CONNECTION_IDLE_TIMEOUT_SECS", default_value_t = 120)]
    pub connection_idle_timeout_secs: u64,
    /// HTTP/1: seconds a client has to send a request's headers (slowloris).
    #[arg(long, env = "SWITCHYARD_HEADER_READ_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_secs: u64,
    /// Longest pause, in seconds, between two pieces of a request body
    /// (slow or stalled uploads: 408).
    #[arg(long, env = "SWITCHYARD_BODY_READ_TIMEOUT_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub body_read_timeout_secs: u64,
    /// Largest request head (HTTP/1) or header list (HTTP/2, gRPC metadata), in bytes.
    #[arg(long, env = "SWITCHYARD_MAX_HEADER_BYTES", default_value_t = 64 << 10,
          value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u32).range(1024..), |v| v as usize))]
    pub max_header_bytes: usize,
    /// Most header fields in an HTTP/1 request.
    #[arg(long, env = "SWITCHYARD_MAX_HEADERS", default_value_t = 100,
          value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u32).range(1..=10_000), |v| v as usize))]
    pub max_headers: usize,
    /// HTTP/2 streams (concurrent requests) one connection may have open, on
    /// the HTTP and gRPC listeners; clients queue beyond it.
    #[arg(long, env = "SWITCHYARD_HTTP2_MAX_CONCURRENT_STREAMS", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub http2_max_concurrent_streams: u32,
    /// Seconds between HTTP/2 keep-alive pings to a connection's peer (0 = no pings).
    #[arg(long, env = "SWITCHYARD_HTTP2_KEEPALIVE_INTERVAL_SECS", default_value_t = 60)]
    pub http2_keepalive_interval_secs: u64,
    /// Seconds a keep-alive ping may go unanswered before the connection is closed.
    #[arg(long, env = "SWITCHYARD_HTTP2_KEEPALIVE_TIMEOUT_SECS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub http2_keepalive_timeout_secs: u64,

    /// ONNX Runtime shared library (`libonnxruntime.so`). When absent, looked up
    /// in `ORT_DYLIB_PATH`, next to the executable, then in `.ort/lib/` of the
    /// working directory and its parents.
    #[arg(long, env = "SWITCHYARD_ORT_LIBRARY")]
    pub ort_library: Option<PathBuf>,
    /// max_batch_size given to a model whose config omits it and whose ONNX
    /// inputs and outputs all have a variable first dimension.
    #[arg(long, env = "SWITCHYARD_DEFAULT_MAX_BATCH_SIZE", default_value_t = 4)]
    pub default_max_batch_size: u32,

    /// Largest HTTP request body accepted, in bytes (larger: 413).
    #[arg(long, env = "SWITCHYARD_HTTP_MAX_BODY_BYTES", default_value_t = 64 << 20)]
    pub http_max_body_bytes: usize,
    /// Largest gRPC message accepted or sent, in bytes (larger: RESOURCE_EXHAUSTED).
    #[arg(long, env = "SWITCHYARD_GRPC_MAX_MESSAGE_BYTES", default_value_t = 64 << 20)]
    pub grpc_max_message_bytes: usize,
    /// Largest model file read from the repository, in bytes (larger: the
    /// version is refused).
    #[arg(long, env = "SWITCHYARD_MAX_MODEL_FILE_BYTES", default_value_t = crate::repository::files::DEFAULT_MAX_MODEL_FILE_BYTES)]
    pub max_model_file_bytes: u64,
    /// Follow symlinks that lead out of the model repository (refused by
    /// default: a link to a system file would be read as a model or config).
    #[arg(long, env = "SWITCHYARD_ALLOW_SYMLINKS_OUTSIDE_REPOSITORY", default_value_t = false, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub allow_symlinks_outside_repository: bool,
    /// Largest number of elements a single request tensor may declare.
    #[arg(long, env = "SWITCHYARD_MAX_TENSOR_ELEMENTS", default_value_t = 16 << 20)]
    pub max_tensor_elements: usize,

    /// Versions that may load at once, across models (the loader pool). Loads
    /// run off the serving path; fewer at once leaves more CPU to serving.
    #[arg(long, env = "SWITCHYARD_MODEL_LOAD_THREAD_COUNT", default_value_t = 1,
          value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u16).range(1..=64), usize::from))]
    pub model_load_thread_count: usize,
    /// Synthetic warm-up (zero data at batch size 1, the preferred sizes and
    /// max_batch_size) for models whose config has no `model_warmup`.
    #[arg(long, env = "SWITCHYARD_MODEL_WARMUP", default_value_t = true, action = clap::ArgAction::Set)]
    pub model_warmup: bool,
    /// Append every control action (load, unload, promote, label, rollback,
    /// validation failure, refused admin call) to this JSONL file.
    #[arg(long, env = "SWITCHYARD_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
    /// Keep labels and traffic overrides here (one JSON file per model,
    /// written atomically) and apply them again when the model loads after a
    /// restart. Without it they last as long as the process.
    #[arg(long, env = "SWITCHYARD_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Admin tokens, one per line (`id:token` or a bare token): load, unload,
    /// labels and rollback then need `Authorization: Bearer <token>`. A token
    /// can also come from the `SWITCHYARD_ADMIN_TOKEN` environment variable.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Serve the admin operations on their own HTTP port (and refuse them on
    /// the public HTTP and gRPC ports).
    #[arg(long, env = "SWITCHYARD_ADMIN_HTTP_PORT")]
    pub admin_http_port: Option<u16>,
    /// Address of the admin HTTP port.
    #[arg(long, env = "SWITCHYARD_ADMIN_ADDRESS", default_value = "127.0.0.1")]
    pub admin_address: IpAddr,
    /// Triton's restricted APIs: `<groups>:<header>=<value>` (repeatable)
    /// makes HTTP requests to the comma-separated API groups (health,
    /// metadata, inference, shared-memory, model-config, model-repository,
    /// statistics, trace, logging) need that header (else 403). A group may
    /// be named in one restriction only.
    #[arg(long = "http-restricted-api", env = "SWITCHYARD_HTTP_RESTRICTED_API",
          value_parser = HeaderRestriction::parse_http)]
    pub http_restricted_api: Vec<HeaderRestriction>,
    /// The same for gRPC: `<groups>:<key>=<value>` (repeatable); the header
    /// is `triton-grpc-protocol-<key>` (else UNAVAILABLE).
    #[arg(long = "grpc-restricted-protocol", env = "SWITCHYARD_GRPC_RESTRICTED_PROTOCOL",
          value_parser = HeaderRestriction::parse_grpc)]
    pub grpc_restricted_protocol: Vec<HeaderRestriction>,
    /// `<groups>:<path>` (repeatable): requests to those API groups, on HTTP
    /// and gRPC, need `Authorization: Bearer <token>` with a token from the
    /// file (`id:token` lines, as `--admin-token-file`).
    #[arg(long = "api-token-file", env = "SWITCHYARD_API_TOKEN_FILE", value_parser = TokenFile::parse)]
    pub api_token_files: Vec<TokenFile>,
    /// Watch a newly promoted version for this many seconds and point the
    /// default back to the previous version if it breaches the budgets below
    /// (0 = off).
    #[arg(long, env = "SWITCHYARD_AUTO_ROLLBACK_WINDOW_SECS", default_value_t = 0.0)]
    pub auto_rollback_window_secs: f64,
    /// Largest share of server-side errors a promoted version may have.
    #[arg(long, env = "SWITCHYARD_AUTO_ROLLBACK_MAX_ERROR_RATE", default_value_t = 0.05)]
    pub auto_rollback_max_error_rate: f64,
    /// Largest p99 latency (ms) a promoted version may have (unset: not checked).
    #[arg(long, env = "SWITCHYARD_AUTO_ROLLBACK_MAX_P99_MS")]
    pub auto_rollback_max_p99_ms: Option<f64>,
    /// Requests a promoted version must serve before it is judged.
    #[arg(long, env = "SWITCHYARD_AUTO_ROLLBACK_MIN_REQUESTS", default_value_t = 50)]
    pub auto_rollback_min_requests: u64,

    /// Bucket bounds, in seconds, of every `*_seconds` latency histogram
    /// (comma-separated; default 50 µs to 10 s).
    #[arg(long, env = "SWITCHYARD_METRICS_LATENCY_BUCKETS", value_delimiter = ',', value_parser = parse_bucket)]
    pub metrics_latency_buckets: Vec<f64>,
    /// Bucket bounds, in rows, of `switchyard_batch_size` (comma-separated; default 1, 2, 4 … 1024).
    #[arg(long, env = "SWITCHYARD_METRICS_BATCH_BUCKETS", value_delimiter = ',', value_parser = parse_bucket)]
    pub metrics_batch_buckets: Vec<f64>,
    /// Also export Triton's metric names (`nv_inference_*`, labels `model` and `version`).
    #[arg(long, env = "SWITCHYARD_METRICS_TRITON_NAMES", default_value_t = false, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub metrics_triton_names: bool,

    /// Collect and serve Prometheus metrics (Triton's flag); `false` turns every metric into a no-op.
    #[arg(long, env = "SWITCHYARD_ALLOW_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub allow_metrics: bool,
    /// Export a span per inference request over OTLP/HTTP (JSON) to this
    /// http:// endpoint (e.g. an OpenTelemetry Collector on :4318); requests
    /// without a `traceparent` start a new trace.
    #[arg(long, env = "SWITCHYARD_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    #[arg(long, env = "SWITCHYARD_OTLP_SERVICE_NAME", default_value = "switchyard")]
    pub otlp_service_name: String,
    /// Header (gRPC metadata) that marks a request as mirrored traffic when
    /// set to anything but empty, `0` or `false`; a Host / `:authority`
    /// ending in `-shadow` marks it too. Mirrored requests are answered
    /// normally and kept out of production statistics and health.
    #[arg(long, env = "SWITCHYARD_SHADOW_HEADER", default_value = "x-shadow-request")]
    pub shadow_header: String,
    /// Prediction log: directory of the JSONL files (models opt in with
    /// `prediction_log.*` config parameters).
    #[arg(long, env = "SWITCHYARD_PREDICTION_LOG_DIR")]
    pub prediction_log_dir: Option<PathBuf>,
    /// Prediction log: also post CloudEvents (KServe logger format) to this http:// URL.
    #[arg(long, env = "SWITCHYARD_PREDICTION_LOG_URL")]
    pub prediction_log_url: Option<String>,
    /// Prediction log: size in MiB at which a file is rotated.
    #[arg(long, env = "SWITCHYARD_PREDICTION_LOG_MAX_FILE_MB", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub prediction_log_max_file_mb: u64,
    /// Prediction log: rotated files kept.
    #[arg(long, env = "SWITCHYARD_PREDICTION_LOG_MAX_FILES", default_value_t = 10)]
    pub prediction_log_max_files: usize,
    /// Prediction log: records waiting for the sinks at most (beyond: dropped and counted).
    #[arg(long, env = "SWITCHYARD_PREDICTION_LOG_QUEUE", default_value_t = 4096,
          value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u32).range(1..), |v| v as usize))]
    pub prediction_log_queue: usize,
    /// Prediction log: run the sink threads at the lowest CPU priority (records
    /// are dropped, and counted, when inference leaves no idle CPU); `false`
    /// writes every record at the cost of inference throughput.
    #[arg(long, env = "SWITCHYARD_PREDICTION_LOG_LOW_PRIORITY", default_value_t = true, action = clap::ArgAction::Set)]
    pub prediction_log_low_priority: bool,
    /// Feedback: the store of recent predictions that ground-truth feedback
    /// joins with (an embedded database file). Default: `feedback.redb` under
    /// `--state-dir`; without either, kept in memory (lost on restart).
    #[arg(long, env = "SWITCHYARD_FEEDBACK_STORE")]
    pub feedback_store: Option<PathBuf>,
    /// Feedback: predictions kept at most (the oldest go first).
    #[arg(long, env = "SWITCHYARD_FEEDBACK_MAX_RECORDS", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub feedback_max_records: u64,
    /// Feedback: predictions older than this many seconds are dropped (default 7 days).
    #[arg(long, env = "SWITCHYARD_FEEDBACK_RETENTION_SECS", default_value_t = 604_800,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub feedback_retention_secs: u64,

    /// Log format.
    #[arg(long, env = "SWITCHYARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter in `RUST_LOG` syntax (e.g. `info,switchyard=debug`).
    #[arg(long, env = "SWITCHYARD_LOG", default_value = "info,ort=warn")]
    pub log: String,
}

/// A histogram bucket bound: a finite number.
fn parse_bucket(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("'{s}' is not a finite number")),
    }
}

impl Config {
    /// The recorder settings of the `--metrics-*` flags (empty bucket lists: the defaults).
    pub fn metrics_settings(&self) -> MetricsSettings {
        let defaults = MetricsSettings::default();
        let or_default = |given: &[f64], default: Vec<f64>| if given.is_empty() { default } else { given.to_vec() };
        MetricsSettings {
            latency_buckets: or_default(&self.metrics_latency_buckets, defaults.latency_buckets),
            batch_buckets: or_default(&self.metrics_batch_buckets, defaults.batch_buckets),
            triton_names: self.metrics_triton_names,
        }
    }

    /// The TLS files of a listener (`grpc`, `http`, `metrics`, `admin`), or
    /// `None` for plaintext; an incomplete setting is an error.
    pub fn tls_files(&self, listener: &str) -> anyhow::Result<Option<crate::net::TlsFiles>> {
        let (on, mutual) = match listener {
            "grpc" => (self.grpc_use_ssl, self.grpc_use_ssl_mutual),
            "http" => (self.http_use_ssl, self.http_use_ssl_mutual),
            "metrics" => (self.metrics_use_ssl, self.metrics_use_ssl_mutual),
            "admin" => (self.admin_use_ssl, self.admin_use_ssl_mutual),
            _ => (false, false),
        };
        if !on && !mutual {
            return Ok(None);
        }
        let (cert, key, root, prefix) = if listener == "grpc" {
            (
                &self.grpc_server_cert,
                &self.grpc_server_key,
                &self.grpc_root_cert,
                "grpc",
            )
        } else {
            (
                &self.http_server_cert,
                &self.http_server_key,
                &self.http_root_cert,
                "http",
            )
        };
        let need = |p: &Option<PathBuf>, flag: &str| {
            p.clone()
                .ok_or_else(|| anyhow::anyhow!("TLS on the {listener} listener needs --{prefix}-{flag}"))
        };
        Ok(Some(crate::net::TlsFiles {
            cert: need(cert, "server-cert")?,
            key: need(key, "server-key")?,
            client_ca: if mutual {
                Some(need(root, "root-cert")?)
            } else {
                root.clone()
            },
            mutual,
        }))
    }

    /// The connection limits of every listener.
    pub fn connection_limits(&self) -> crate::net::Limits {
        let secs = |s: u64| (s > 0).then(|| std::time::Duration::from_secs(s));
        crate::net::Limits {
            max_connections: self.max_connections,
            idle_timeout: secs(self.connection_idle_timeout_secs),
            header_read_timeout: std::time::Duration::from_secs(self.header_read_timeout_secs),
            max_header_bytes: self.max_header_bytes,
            max_headers: self.max_headers,
            http2_max_concurrent_streams: self.http2_max_concurrent_streams,
            http2_keepalive_interval: secs(self.http2_keepalive_interval_secs),
            http2_keepalive_timeout: std::time::Duration::from_secs(self.http2_keepalive_timeout_secs),
        }
    }

    /// The model repository with its reading rules.
    pub fn repository(&self) -> crate::repository::Repository {
        crate::repository::Repository::with_limits(
            &self.model_repository,
            self.max_model_file_bytes,
            self.allow_symlinks_outside_repository,
        )
        .with_model_name(self.model_name.clone())
    }

    /// A configuration for tests and embedding: every listener on 127.0.0.1
    /// with an ephemeral port, everything else at its default.
    pub fn for_repository(repo: impl Into<PathBuf>) -> Config {
        let mut c = Config::parse_from(["switchyard", "--model-repository", "."]);
        c.model_repository = repo.into();
        let lo: IpAddr = [127, 0, 0, 1].into();
        (c.http_address, c.grpc_address, c.metrics_address) = (lo, lo, lo);
        (c.http_port, c.grpc_port, c.metrics_port) = (0, 0, 0);
        c.admin_address = lo;
        // Tests and embedders stop at once; a real deployment drains first.
        c.shutdown_drain_secs = 0;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        Config::command().debug_assert();
    }

    #[test]
    fn triton_flag_names_parse() {
        let c = Config::try_parse_from([
            "switchyard",
            "--model-repository",
            "/m",
            "--model-control-mode",
            "explicit",
            "--load-model",
            "a",
            "--load-model",
            "b",
            "--strict-readiness",
            "false",
            "--http-port",
            "9000",
        ])
        .unwrap();
        assert_eq!(c.model_control_mode, ControlMode::Explicit);
        assert_eq!(c.load_models, ["a", "b"]);
        assert!(!c.strict_readiness);
        assert_eq!(c.http_port, 9000);
        assert!(
            Config::try_parse_from(["switchyard", "--model-repository", "/m", "--repository-poll-secs", "0"]).is_err()
        );
    }

    #[test]
    fn restriction_flags_parse_and_hide_secrets() {
        let c = Config::try_parse_from([
            "switchyard",
            "--model-repository",
            "/m",
            "--http-restricted-api",
            "inference,metadata:infer-key=http-secret-value",
            "--http-restricted-api",
            "model-repository:admin-key=admin-secret",
            "--grpc-restricted-protocol",
            "inference:infer-key=grpc-secret-value",
            "--api-token-file",
            "statistics,model-config:/etc/switchyard/tokens",
        ])
        .unwrap();
        assert_eq!(c.http_restricted_api.len(), 2);
        assert_eq!(c.grpc_restricted_protocol[0].key, "infer-key");
        assert_eq!(c.api_token_files[0].path, PathBuf::from("/etc/switchyard/tokens"));
        let logged = format!("{c:?}");
        for secret in ["http-secret-value", "admin-secret", "grpc-secret-value"] {
            assert!(!logged.contains(secret), "the logged configuration shows {secret}");
        }
        for bad in ["inferenc:k=v", "inference,inference:k=v", "inference:k"] {
            let args = ["switchyard", "--model-repository", "/m", "--http-restricted-api", bad];
            assert!(Config::try_parse_from(args).is_err(), "{bad}");
        }
    }

    #[test]
    fn metrics_flags_parse() {
        let c = Config::try_parse_from(["switchyard", "--model-repository", "/m"]).unwrap();
        assert_eq!(c.metrics_settings(), MetricsSettings::default());
        let c = Config::try_parse_from([
            "switchyard",
            "--model-repository",
            "/m",
            "--metrics-latency-buckets",
            "0.001,0.01,0.1",
            "--metrics-batch-buckets",
            "1,8",
            "--metrics-triton-names",
        ])
        .unwrap();
        let s = c.metrics_settings();
        assert_eq!(s.latency_buckets, [0.001, 0.01, 0.1]);
        assert_eq!(s.batch_buckets, [1.0, 8.0]);
        assert!(s.triton_names);
        let c = Config::try_parse_from([
            "switchyard",
            "--model-repository",
            "/m",
            "--metrics-triton-names",
            "false",
        ])
        .unwrap();
        assert!(!c.metrics_triton_names);
        for bad in ["x", "NaN", "inf"] {
            let args = [
                "switchyard",
                "--model-repository",
                "/m",
                "--metrics-latency-buckets",
                bad,
            ];
            assert!(Config::try_parse_from(args).is_err(), "{bad}");
        }
    }
}
