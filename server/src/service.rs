//! The one internal API that both frontends call: health, metadata,
//! configuration, statistics, repository operations and inference. Protocol
//! code converts to and from these types; the decisions are made here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use switchyard_proto::inference::{ModelConfig, ModelStatistics};

use crate::access::Access;
use crate::access::admin::{AdminAuth, Caller};
pub use crate::admission::Param;
use crate::admission::prepare_job;
use crate::batching::Timings;
use crate::config::{Config, ControlMode};
use crate::error::{Error, Result};
use crate::lifecycle::audit::{Actor, Audit, Event};
use crate::lifecycle::{Deployer, LoadReport, LoadSettings, RollbackPolicy};
use crate::metrics::{self, Protocol};
use crate::predlog::{PredictionLog, PredictionLogSettings, PredictionRecord};
use crate::registry::{IndexEntry, Registry, TensorSpec, VersionHandle};
use crate::repository;
use crate::tensor::{DataType, Tensor};
use crate::trace::TraceContext;
use tracing::Instrument;

/// Extensions advertised in server metadata.
pub const EXTENSIONS: &[&str] = &[
    "binary_tensor_data",
    "model_repository",
    "model_configuration",
    "statistics",
    "parameters",
];

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
}

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
    ready: AtomicBool,
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
        let deployer = Deployer::new(settings, audit, Arc::new(crate::model::onnx::OnnxBackend));
        Ok(Service {
            inner: Arc::new(Inner {
                predictions,
                otlp,
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
                    .ok_or_else(|| Error::not_found(format!("unknown model '{model}'")))?;
                Ok(entry.versions.values().map(|h| version_statistics(h)).collect())
            }
        }
    }

    /// Models in the repository and their state.
    pub fn repository_index(&self, ready_only: bool) -> Result<Vec<IndexEntry>> {
        self.inner.registry.index(&self.inner.repo, ready_only)
    }

    /// Loads or reloads a model (explicit mode only, admin), optionally with a JSON config override.
    pub async fn load_model(&self, model: &str, config_json: Option<&str>, caller: &Caller) -> Result<()> {
        let actor = self.authorize(caller, "load", model)?;
        self.require_explicit()?;
        repository::validate_model_name(model)?;
        let override_config = config_json
            .map(|j| {
                repository::config::parse_json(j)
                    .map_err(|e| Error::invalid(format!("model '{model}': invalid 'config' parameter: {e}")))
            })
            .transpose()?;
        // The load runs as a task of its own: a client that disconnects does
        // not abandon it half-way; it finishes (or fails) and is audited either way.
        let (service, model) = (self.clone(), model.to_string());
        let load = tokio::spawn(async move { service.load_now(&model, override_config, &actor).await });
        tokio::select! {
            r = load => r.map_err(|e| Error::internal(format!("the load task failed: {e}")))?.map(|_| ()),
            _ = self.inner.stopping.cancelled() => Err(Error::unavailable(
                "the server is shutting down: the load was abandoned",
            )),
        }
    }

    /// Stops routing to every model (at shutdown): in-flight requests finish,
    /// then queues close and executor threads exit.
    pub async fn retire_all(&self) {
        let actor = Actor::Shutdown;
        for name in self.inner.registry.snapshot().keys() {
            let _ = self.inner.deployer.unload(name, &actor).await;
        }
    }

    /// Loads a model whatever the control mode (start-up and polling).
    pub async fn load_now(
        &self,
        model: &str,
        override_config: Option<ModelConfig>,
        actor: &Actor,
    ) -> Result<LoadReport> {
        self.inner
            .deployer
            .load(&self.inner.repo, model, override_config, actor)
            .await
    }

    /// Unloads a model (explicit mode only, admin).
    pub async fn unload_model(&self, model: &str, caller: &Caller) -> Result<()> {
        let actor = self.authorize(caller, "unload", model)?;
        self.require_explicit()?;
        let (service, model) = (self.clone(), model.to_string());
        tokio::spawn(async move { service.inner.deployer.unload(&model, &actor).await })
            .await
            .map_err(|e| Error::internal(format!("the unload task failed: {e}")))?
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
            .ok_or_else(|| Error::not_found(format!("unknown model '{model}'")))?;
        Ok(Labels {
            model: model.to_string(),
            versions: entry.versions.keys().copied().collect(),
            default_version: entry.default_version(),
            pinned: entry.pin.is_some(),
            labels: entry.labels.clone(),
            history: entry.history.clone(),
        })
    }

    /// Points a label at a loaded version (admin).
    pub async fn set_label(&self, model: &str, label: &str, version: &str, caller: &Caller) -> Result<()> {
        let actor = self.authorize(caller, "label", model)?;
        let v = parse_version(version)?;
        self.inner.deployer.set_label(model, label, v, &actor).await
    }

    /// Removes a label (admin).
    pub async fn delete_label(&self, model: &str, label: &str, caller: &Caller) -> Result<()> {
        let actor = self.authorize(caller, "label", model)?;
        self.inner.deployer.delete_label(model, label, &actor).await
    }

    /// Pins the default route to a version, or `latest` to follow the newest again (admin).
    pub async fn set_default(&self, model: &str, version: &str, caller: &Caller) -> Result<()> {
        let actor = self.authorize(caller, "promote", model)?;
        let v = if version == "latest" {
            None
        } else {
            Some(parse_version(version)?)
        };
        self.inner.deployer.set_default(model, v, &actor).await
    }

    /// Points the default route (or a label) back to a previous version (admin);
    /// returns the version now served.
    pub async fn rollback(&self, model: &str, label: Option<&str>, to: Option<&str>, caller: &Caller) -> Result<i64> {
        let actor = self.authorize(caller, "rollback", model)?;
        let to = to.map(parse_version).transpose()?;
        self.inner.deployer.rollback(model, label, to, &actor, "").await
    }

    fn authorize(&self, caller: &Caller, action: &str, model: &str) -> Result<Actor> {
        let (actor, verdict) = self.inner.admin.authorize(caller);
        if let Err(e) = &verdict {
            self.inner.deployer.audit().record(
                &actor,
                Event {
                    action: "denied",
                    model,
                    version: None,
                    digest: None,
                    ok: false,
                    reason: &format!("{action}: {}", e.message),
                },
            );
        }
        verdict.map(|()| actor)
    }

    fn require_explicit(&self) -> Result<()> {
        if self.inner.control_mode == ControlMode::Explicit {
            Ok(())
        } else {
            Err(Error::unavailable(
                "explicit model load / unload is not allowed unless --model-control-mode=explicit",
            ))
        }
    }

    /// Runs an inference request.
    pub async fn infer(&self, request: InferRequest) -> Result<InferResponse> {
        let protocol = request.protocol;
        let handle = match self.inner.registry.resolve(&request.model, request.version.as_deref()) {
            Ok(h) => h,
            Err(e) => {
                metrics::unrouted_failure(protocol, e.kind);
                return Err(e);
            }
        };
        let _inflight = handle.metrics.start_request();
        let received = request.received;
        // Prediction log and drift monitor: decided before the inputs move into the queue.
        let log_policy = handle.log_policy.as_ref().filter(|p| self.inner.predictions.sample(p));
        let observed = (log_policy.is_some() || handle.drift.is_some()).then(|| {
            let label = request.version.clone().filter(|v| v.parse::<i64>().is_err());
            (request.inputs.clone(), request.id.clone(), label)
        });
        let parent = request.trace;
        let trace = match parent {
            Some(p) => Some(p.child()),
            None if self.inner.otlp.enabled() => Some(TraceContext::root()),
            None => None,
        };
        let span_id_of_request = self.inner.otlp.enabled().then(|| request.id.clone());
        let span = match (&trace, &request.trace) {
            (Some(t), Some(parent)) => tracing::debug_span!("infer", model = %handle.model, version = handle.version,
                id = %request.id, trace_id = %t.trace_id_hex(), span_id = %t.span_id_hex(),
                parent_id = %parent.span_id_hex()),
            _ => tracing::debug_span!("infer", model = %handle.model, version = handle.version, id = %request.id),
        };
        let result = self.run(&handle, request, trace).instrument(span).await;
        let elapsed = received.elapsed();
        handle.health.record(elapsed, result.as_ref().err().map(|e| e.kind));
        match &result {
            Ok(_) => {
                handle.stats.success.record(elapsed);
                handle.metrics.success(protocol, elapsed.as_secs_f64());
            }
            Err(e) => {
                handle.stats.fail.record(elapsed);
                handle.metrics.failure(protocol, e.kind, elapsed.as_secs_f64());
            }
        }
        if let (Some(t), Some(id)) = (trace.filter(TraceContext::sampled), span_id_of_request) {
            let end = std::time::SystemTime::now();
            let mut attributes = vec![
                ("model", handle.model.clone()),
                ("model.version", handle.version_label.clone()),
                ("request.id", id),
                ("protocol", protocol.label().to_string()),
            ];
            if let Ok(r) = &result {
                let us = |d: Duration| d.as_micros().to_string();
                attributes.extend([
                    ("queue_us", us(r.timings.queue)),
                    ("compute_infer_us", us(r.timings.compute_infer)),
                    ("batch_rows", r.timings.batch_rows.to_string()),
                ]);
            }
            self.inner.otlp.export(crate::otlp::SpanData {
                context: t,
                parent: parent.map(|p| p.span_id),
                start: end.checked_sub(elapsed).unwrap_or(end),
                end,
                attributes,
                error: result.as_ref().err().map(|e| e.message.clone()),
            });
        }
        if let Some((inputs, id, label)) = observed {
            let outputs = result.as_ref().map(|r| r.outputs.clone()).unwrap_or_default();
            if let (Some(drift), Ok(_)) = (&handle.drift, &result) {
                drift.observe(inputs.clone(), outputs.clone());
            }
            if let Some(policy) = log_policy {
                self.inner.predictions.submit(
                    policy,
                    PredictionRecord {
                        time: std::time::SystemTime::now()
                            .checked_sub(elapsed)
                            .unwrap_or_else(std::time::SystemTime::now),
                        id,
                        model: handle.model.clone(),
                        version: handle.version_label.clone(),
                        label,
                        protocol,
                        outcome: result.as_ref().map(|_| ()).map_err(|e| (e.kind, e.message.clone())),
                        latency: elapsed,
                        inputs,
                        outputs,
                        trace_id: trace.map(|t| t.trace_id_hex()),
                    },
                );
            }
        }
        result
    }

    async fn run(
        &self,
        handle: &Arc<VersionHandle>,
        request: InferRequest,
        trace: Option<TraceContext>,
    ) -> Result<InferResponse> {
        let (mut job, rx) = prepare_job(
            handle,
            request.inputs,
            request.outputs,
            &request.parameters,
            request.received,
            self.inner.max_tensor_elements,
        )?;
        job.trace = trace;
        handle.queue.submit(job)?;
        let output = rx
            .await
            .map_err(|_| Error::internal("the executor stopped before answering"))??;
        Ok(InferResponse {
            model: handle.model.clone(),
            version: handle.version_label.clone(),
            id: request.id,
            outputs: output.outputs,
            timings: output.timings,
            trace,
        })
    }
}

fn parse_version(v: &str) -> Result<i64> {
    v.parse::<i64>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| Error::invalid(format!("'{}' is not a version number", v.escape_debug())))
}

/// Triton's statistics of a version plus its provenance.
fn version_statistics(h: &VersionHandle) -> ModelStatistics {
    let mut s = h.stats.to_proto(&h.model, &h.version_label);
    s.properties = h.provenance().into_iter().collect();
    s
}
