//! The one internal API that both frontends call: health, metadata,
//! configuration, statistics, repository operations and inference. Protocol
//! code converts to and from these types; the decisions are made here.
//!
//! - [`infer`]: route → run → observe.
//! - [`observe`]: what consumes finished requests (statistics, spans, drift,
//!   prediction log), behind one small trait.
//! - [`control`]: load parameters, explicit mode, admin authorization, and
//!   the deploy pipeline's operations.
//! - [`card`]: model cards and their summary in metadata.
//! - [`shadow`]: mirroring to the traffic policy's shadow, comparison, report
//!   and promotion gate.
//! - [`quality`]: ground-truth feedback, live quality and fairness reports.
//! - [`explain`]: attributions of one row, its perturbed rows run as
//!   background work on the version's queue.

pub mod card;
pub mod control;
pub mod explain;
pub mod infer;
pub mod observe;
pub mod quality;
pub mod shadow;
mod traffic;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use switchyard_proto::inference::{ModelConfig, ModelStatistics};

use crate::access::Access;
use crate::access::admin::AdminAuth;
pub use crate::admission::{Param, check_extensions};
use crate::batching::Timings;
use crate::config::{Config, ControlMode};
use crate::error::{Error, Result};
use crate::lifecycle::audit::Audit;
use crate::lifecycle::{Deployer, LoadSettings, RollbackPolicy};
pub use crate::metrics::{Protocol, Traffic};
use crate::predlog::{PredictionLog, PredictionLogSettings};
use crate::registry::{IndexEntry, Registry, TensorSpec, VersionHandle};
use crate::repository;
use crate::tensor::{DataType, Tensor};
use crate::trace::TraceContext;
pub use control::{LoadParam, TrafficView, load_config};
pub use traffic::traffic_of;

/// Extensions advertised in server metadata.
pub const EXTENSIONS: &[&str] = &[
    "binary_tensor_data",
    "model_repository",
    "model_configuration",
    "statistics",
    "parameters",
];

/// Triton's shared-memory extensions are not offered: registering a region is
/// refused (status lists none; unregistering is a no-op), on both protocols.
pub fn shared_memory_refused(cuda: bool) -> Error {
    let kind = if cuda {
        "CUDA shared memory"
    } else {
        "system shared memory"
    };
    Error::unsupported(format!(
        "{kind} is not supported: send tensors in the request (binary tensor data or raw contents)"
    ))
}

/// Triton's trace and logging settings: nothing can be changed at run time
/// (tracing is W3C `traceparent` with OTLP export, logging `--log`, both set at
/// start), so reading answers no settings and a change is refused.
pub fn runtime_settings(what: &str, changes: usize) -> Result<()> {
    if changes == 0 {
        return Ok(());
    }
    Err(Error::unsupported(format!(
        "{what} settings cannot be changed at run time; they are set by the server's command line"
    )))
}

/// An inference request, decoded from either protocol.
#[derive(Debug, Clone)]
pub struct InferRequest {
    /// Model name.
    pub model: String,
    /// Version; `None` or empty = the latest loaded.
    pub version: Option<String>,
    /// Echoed in the response.
    pub id: String,
    /// Input tensors.
    pub inputs: Vec<Tensor>,
    /// Outputs to return; empty = all.
    pub outputs: Vec<String>,
    /// Request parameters (`timeout` in microseconds is honoured).
    pub parameters: Vec<(String, Param)>,
    /// Frontend, for metrics.
    pub protocol: Protocol,
    /// When the frontend started on it.
    pub received: Instant,
    /// The caller's W3C trace context, if it sent one.
    pub trace: Option<TraceContext>,
    /// Production, or a mirrored copy ([`traffic_of`]).
    pub traffic: Traffic,
    /// The request's HTTP headers / gRPC metadata, where a traffic policy's
    /// sticky key may be read.
    pub headers: Option<Arc<http::HeaderMap>>,
    /// A raw binary request's body (Triton's `Inference-Header-Content-Length:
    /// 0`): the data of the model's only input, whose shape the routed
    /// version decides; `inputs` is empty then.
    pub raw_input: Option<bytes::Bytes>,
}

/// The response header / gRPC metadata key naming the version that answered.
pub const ROUTED_TO: &str = "x-switchyard-routed-to";

/// An inference response.
#[derive(Debug)]
pub struct InferResponse {
    /// Model name.
    pub model: String,
    /// The version that computed it.
    pub version: String,
    /// The request's id.
    pub id: String,
    /// Output tensors in the model's output order.
    pub outputs: Vec<Tensor>,
    /// Phase durations.
    pub timings: Timings,
    /// The server's span in the caller's trace (a child of the request's context).
    pub trace: Option<TraceContext>,
}

/// Tensor metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorMeta {
    /// Name.
    pub name: String,
    /// Datatype.
    pub datatype: DataType,
    /// Full shape, -1 for variable dimensions (the batch dimension included).
    pub shape: Vec<i64>,
}

/// Model metadata.
#[derive(Debug, Clone)]
pub struct ModelMetadata {
    /// Name.
    pub name: String,
    /// Loaded versions.
    pub versions: Vec<String>,
    /// `onnxruntime_onnx`.
    pub platform: String,
    /// Inputs.
    pub inputs: Vec<TensorMeta>,
    /// Outputs.
    pub outputs: Vec<TensorMeta>,
    /// Extra facts: execution provider, model digest.
    pub parameters: Vec<(String, String)>,
}

/// A model's routing: versions, default, labels.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Labels {
    /// Model name.
    pub model: String,
    /// Loaded versions.
    pub versions: Vec<i64>,
    /// Where requests without a version go.
    pub default_version: Option<i64>,
    /// Whether the default is pinned (rollback) rather than the latest.
    pub pinned: bool,
    /// Label → version.
    pub labels: std::collections::BTreeMap<String, i64>,
    /// Previous defaults, most recent last.
    pub history: Vec<i64>,
}

/// Server metadata.
#[derive(Debug, Clone)]
pub struct ServerMetadata {
    /// Server name.
    pub name: &'static str,
    /// Server version.
    pub version: &'static str,
    /// Supported protocol extensions.
    pub extensions: &'static [&'static str],
}

struct Inner {
    repo: repository::Repository,
    control_mode: ControlMode,
    max_tensor_elements: usize,
    /// Loads and routing changes (the only writer of the routing table).
    deployer: Arc<Deployer>,
    /// The routing table, read by every request.
    registry: Arc<Registry>,
    admin: AdminAuth,
    access: Access,
    predictions: PredictionLog,
    otlp: crate::otlp::Exporter,
    /// The header (metadata) that marks a request as mirrored, lowercase.
    shadow_header: String,
    /// Consumers of finished requests, in order (fixed at construction).
    observers: Vec<Box<dyn observe::Observer>>,
    /// Shadow experiments, per model.
    mirror: shadow::Mirror,
    /// Predictions kept for feedback, live quality and fairness.
    quality: Arc<crate::quality::Monitor>,
    /// The bound on concurrent explanations.
    explanations: explain::Explanations,
    /// Written by the control plane once start-up loading is done, read by health checks.
    ready: AtomicBool,
    /// Written once at the start of shutdown, read by health checks.
    shutting_down: AtomicBool,
    /// Cancelled when the listeners close at shutdown: loads still running are
    /// answered (503) instead of holding their connection until the exit timeout.
    stopping: tokio_util::sync::CancellationToken,
}

/// Cheap to clone; shared by the frontends.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("repo", &self.inner.repo).finish()
    }
}

impl Service {
    /// A service over `config`'s repository with nothing loaded yet. Opens the
    /// audit log and reads the admin tokens (`--admin-token-file`, and the
    /// `SWITCHYARD_ADMIN_TOKEN` environment variable, read here so that it
    /// never appears in the logged configuration).
    pub fn new(config: &Config) -> anyhow::Result<Service> {
        Service::with_backend(config, Arc::new(crate::model::onnx::OnnxBackend))
    }

    /// A service whose model versions are built by `backend` (ONNX Runtime in
    /// [`Service::new`]; tests use a mock).
    pub fn with_backend(config: &Config, backend: Arc<dyn crate::model::Backend>) -> anyhow::Result<Service> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let settings = LoadSettings {
            default_max_batch_size: config.default_max_batch_size,
            cores,
            load_threads: config.model_load_thread_count,
            synthetic_warmup: config.model_warmup,
            max_tensor_elements: config.max_tensor_elements,
            rollback: RollbackPolicy {
                window: Duration::from_secs_f64(config.auto_rollback_window_secs),
                max_error_rate: config.auto_rollback_max_error_rate,
                max_p99: config
                    .auto_rollback_max_p99_ms
                    .map(|ms| Duration::from_secs_f64(ms / 1000.0)),
                min_requests: config.auto_rollback_min_requests,
            },
            background: crate::util::Background::new(),
            state_dir: config.state_dir.clone(),
        };
        let audit =
            Audit::open(config.audit_log.as_deref()).map_err(|e| anyhow::anyhow!("cannot open the audit log: {e}"))?;
        let env_token = std::env::var("SWITCHYARD_ADMIN_TOKEN").ok();
        let admin = AdminAuth::new(
            config.admin_token_file.as_deref(),
            env_token.as_deref(),
            config.admin_http_port.is_some(),
        )?;
        let sink_ca = config
            .tls_sink_ca_file
            .as_ref()
            .map(|p| std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display())))
            .transpose()?;
        let access = Access::new(
            &config.http_restricted_api,
            &config.grpc_restricted_protocol,
            &config.api_token_files,
        )?;
        let predictions = PredictionLog::start(PredictionLogSettings {
            dir: config.prediction_log_dir.clone(),
            max_file_bytes: config.prediction_log_max_file_mb << 20,
            max_files: config.prediction_log_max_files,
            url: config.prediction_log_url.clone(),
            queue_capacity: config.prediction_log_queue,
            low_priority: config.prediction_log_low_priority,
            extra_ca: sink_ca.clone(),
            source: format!("http://{}:{}/", config.http_address, config.http_port),
            ..PredictionLogSettings::default()
        })?;
        let otlp = match &config.otlp_endpoint {
            Some(e) => crate::otlp::Exporter::start(e, &config.otlp_service_name, sink_ca.as_deref())?,
            None => crate::otlp::Exporter::disabled(),
        };
        let deployer = Deployer::new(settings, audit, backend);
        let quality =
            Arc::new(crate::quality::Monitor::start(quality::store_settings(config)).map_err(anyhow::Error::msg)?);
        let observers: Vec<Box<dyn observe::Observer>> = vec![
            Box::new(observe::Statistics),
            Box::new(observe::Spans(otlp.clone())),
            Box::new(observe::Drift),
            Box::new(observe::Predictions(predictions.clone())),
            Box::new(observe::Quality(quality.clone())),
        ];
        Ok(Service {
            inner: Arc::new(Inner {
                observers,
                mirror: shadow::Mirror::default(),
                quality,
                explanations: explain::Explanations::default(),
                predictions,
                otlp,
                shadow_header: config.shadow_header.to_ascii_lowercase(),
                repo: config.repository(),
                control_mode: config.model_control_mode,
                max_tensor_elements: config.max_tensor_elements,
                registry: deployer.registry().clone(),
                deployer,
                admin,
                access,
                ready: AtomicBool::new(false),
                shutting_down: AtomicBool::new(false),
                stopping: tokio_util::sync::CancellationToken::new(),
            }),
        })
    }

    /// Who may call which API group (the frontends check every request).
    pub fn access(&self) -> &Access {
        &self.inner.access
    }

    /// The routing table.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Loads, unloads and routing changes (for the control plane).
    pub fn deployer(&self) -> &Deployer {
        &self.inner.deployer
    }

    /// The header (gRPC metadata) that marks a request as mirrored, lowercase.
    pub fn shadow_header(&self) -> &str {
        &self.inner.shadow_header
    }

    /// Largest element count one tensor may declare.
    pub fn max_tensor_elements(&self) -> usize {
        self.inner.max_tensor_elements
    }

    /// The process is up.
    pub fn live(&self) -> bool {
        true
    }

    /// Ready to take traffic: start-up loading done and not shutting down.
    pub fn ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire) && !self.inner.shutting_down.load(Ordering::Acquire)
    }

    /// Marks start-up complete (or not).
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::Release);
    }

    /// First step of shutdown: readiness turns false.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
    }

    /// The server's background tasks and threads (executors, rollback
    /// watchers, gRPC stream readers); stopped at the end of shutdown.
    pub fn background(&self) -> &crate::util::Background {
        &self.inner.deployer.settings().background
    }

    /// Shutdown, step 2 (the listeners close): model loads requested through
    /// the API stop waiting and are answered 503; the process exits without them.
    pub fn stop_control(&self) {
        self.inner.stopping.cancel();
    }

    /// Server name, version and extensions.
    pub fn server_metadata(&self) -> ServerMetadata {
        ServerMetadata {
            name: "switchyard",
            version: env!("CARGO_PKG_VERSION"),
            extensions: EXTENSIONS,
        }
    }

    /// Whether a model (version) is loaded and serving.
    pub fn model_ready(&self, model: &str, version: Option<&str>) -> bool {
        self.inner.registry.resolve(model, version).is_ok()
    }

    /// Inputs, outputs and versions of a model.
    pub fn model_metadata(&self, model: &str, version: Option<&str>) -> Result<ModelMetadata> {
        let handle = self.inner.registry.resolve(model, version)?;
        let entry = self.inner.registry.get(model).unwrap_or_default();
        let versions = entry.versions.keys().map(|v| v.to_string()).collect();
        let meta = |specs: &[TensorSpec]| -> Vec<TensorMeta> {
            specs
                .iter()
                .map(|s| TensorMeta {
                    name: s.name.clone(),
                    datatype: s.datatype,
                    shape: if handle.max_batch_size > 0 {
                        std::iter::once(-1).chain(s.dims.iter().copied()).collect()
                    } else {
                        s.dims.clone()
                    },
                })
                .collect()
        };
        let provider = handle
            .config
            .parameters
            .get("execution_provider")
            .map(|p| p.string_value.clone())
            .unwrap_or_default();
        Ok(ModelMetadata {
            name: handle.model.clone(),
            versions,
            platform: handle.config.platform.clone(),
            inputs: meta(&handle.inputs),
            outputs: meta(&handle.outputs),
            parameters: {
                let mut p = vec![("execution_provider".into(), provider)];
                p.extend(handle.provenance());
                if let Some(d) = entry.default_version() {
                    p.push(("default_version".into(), d.to_string()));
                }
                p.extend(entry.labels.iter().map(|(l, v)| (format!("label.{l}"), v.to_string())));
                if let Some((policy, source)) = entry.traffic() {
                    p.push(("traffic_policy".into(), policy.to_json()));
                    p.push(("traffic_source".into(), source.into()));
                }
                p.extend(card::properties(&entry));
                p
            },
        })
    }

    /// The effective (completed) configuration of a model version.
    pub fn model_config(&self, model: &str, version: Option<&str>) -> Result<ModelConfig> {
        Ok(self.inner.registry.resolve(model, version)?.config.clone())
    }

    /// Statistics of one model (version), or of every loaded model when `model` is empty.
    pub fn model_statistics(&self, model: &str, version: Option<&str>) -> Result<Vec<ModelStatistics>> {
        if model.is_empty() {
            let snapshot = self.inner.registry.snapshot();
            return Ok(snapshot
                .values()
                .flat_map(|e| e.versions.values())
                .map(|h| version_statistics(h))
                .collect());
        }
        match version.filter(|v| !v.is_empty()) {
            Some(_) => {
                let h = self.inner.registry.resolve(model, version)?;
                Ok(vec![version_statistics(&h)])
            }
            None => {
                let entry = self
                    .inner
                    .registry
                    .get(model)
                    .ok_or_else(|| crate::registry::unknown_model(model))?;
                Ok(entry.versions.values().map(|h| version_statistics(h)).collect())
            }
        }
    }

    /// Models in the repository and their state.
    pub fn repository_index(&self, ready_only: bool) -> Result<Vec<IndexEntry>> {
        self.inner.registry.index(&self.inner.repo, ready_only)
    }

    /// The drift report of a model version (404 when drift monitoring is off for it).
    pub fn drift_report(&self, model: &str, version: Option<&str>) -> Result<crate::drift::DriftReport> {
        let h = self.inner.registry.resolve(model, version)?;
        h.drift.as_ref().map(|d| d.report()).ok_or_else(|| {
            Error::not_found(format!(
                "drift monitoring is off for model '{model}' version {} (set drift.* parameters or ship \
                 validation/profile.json)",
                h.version
            ))
        })
    }

    /// The prediction log (for flushing at shutdown and in tests).
    pub fn prediction_log(&self) -> &PredictionLog {
        &self.inner.predictions
    }

    /// Labels, default route and versions of a model.
    pub fn labels(&self, model: &str) -> Result<Labels> {
        let entry = self
            .inner
            .registry
            .get(model)
            .ok_or_else(|| crate::registry::unknown_model(model))?;
        Ok(Labels {
            model: model.to_string(),
            versions: entry.versions.keys().copied().collect(),
            default_version: entry.default_version(),
            pinned: entry.pin.is_some(),
            labels: entry.labels.clone(),
            history: entry.history.clone(),
        })
    }
}

/// Triton's statistics of a version plus its provenance.
fn version_statistics(h: &VersionHandle) -> ModelStatistics {
    let mut s = h.stats.to_proto(&h.model, &h.version_label);
    s.properties = h.provenance().into_iter().collect();
    s.properties.insert(
        "shadow_success_count".into(),
        h.stats.shadow_success.count().to_string(),
    );
    s.properties
        .insert("shadow_fail_count".into(), h.stats.shadow_fail.count().to_string());
    s
}
