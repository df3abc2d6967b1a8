//! Switchyard serves ONNX models over the KServe V2 / Open Inference Protocol
//! with Triton's extensions, on HTTP and gRPC.
//!
//! Architecture, from the wire inwards:
//! - `http` (axum) and `grpc` (tonic) decode requests into the core's types,
//!   call [`service::Service`] — the one internal API — and encode the result.
//!   They never touch batching, the registry or ONNX Runtime.
//! - `service` routes a request through the `registry` (an `ArcSwap`'d table
//!   of loaded model versions), has `admission` check it against the
//!   version's signature, queues it on the version's bounded `batching`
//!   queue, and hands the finished request to its observers (statistics,
//!   spans, drift, prediction log). `access` decides who may call what.
//! - Executor threads (one per model instance, each owning its ONNX Runtime
//!   session from `model::onnx`) form batches, run them, split the results
//!   and answer each request over a oneshot channel. ONNX Runtime never runs
//!   on the async runtime's workers.
//! - `repository` reads Triton's layout and `config.pbtxt`; `lifecycle` is
//!   the deploy pipeline (build through a `model::Backend`, warm-up, golden
//!   set, drift reference) that the control plane (start-up loading,
//!   polling, the repository API) drives; it publishes new versions with one
//!   atomic swap, audits every action and watches promotions for automatic
//!   rollback; retired versions drain and free themselves.
//!
//! Dependencies point one way: frontends → service → {admission, lifecycle,
//! registry} → batching → model.
//! - `stats` (Triton's ModelStatistics) and `metrics` (Prometheus) observe it all.
//! - `explain` is pure: attribution methods over an evaluation closure; the
//!   service runs their rows through the version's queue as background work.

pub mod access;
pub mod admission;
pub mod batching;
pub mod config;
pub mod drift;
pub mod error;
pub mod explain;
pub mod grpc;
pub mod http;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod net;
pub mod otlp;
pub mod predlog;
pub mod quality;
pub mod registry;
pub mod repository;
pub mod service;
pub mod stats;
pub mod tensor;
pub mod trace;
pub mod traffic;
pub mod util;
pub mod validate;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::response::IntoResponse;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic_health::ServingStatus;

pub use config::Config;
use config::ControlMode;
use lifecycle::audit::Actor;
pub use service::Service;

/// The bound listeners.
#[derive(Debug)]
pub struct Listeners {
    /// HTTP / REST.
    pub http: TcpListener,
    /// gRPC.
    pub grpc: TcpListener,
    /// Prometheus metrics.
    pub metrics: TcpListener,
    /// Admin HTTP (only with `--admin-http-port`).
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses and ports of `config` (port 0 = ephemeral).
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let bind = |ip, port, what: &'static str| async move {
            let addr = SocketAddr::new(ip, port);
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot bind the {what} port {addr}"))
        };
        Ok(Listeners {
            http: bind(config.http_address, config.http_port, "HTTP").await?,
            grpc: bind(config.grpc_address, config.grpc_port, "gRPC").await?,
            metrics: bind(config.metrics_address, config.metrics_port, "metrics").await?,
            admin: match config.admin_http_port {
                Some(port) => Some(bind(config.admin_address, port, "admin HTTP").await?),
                None => None,
            },
        })
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// The core (for embedding and tests).
    pub service: Service,
    /// HTTP address.
    pub http_addr: SocketAddr,
    /// gRPC address.
    pub grpc_addr: SocketAddr,
    /// Metrics address.
    pub metrics_addr: SocketAddr,
    /// Admin HTTP address, when configured.
    pub admin_addr: Option<SocketAddr>,
    /// `None` while start-up loading runs, then whether the server became ready.
    ready: watch::Receiver<Option<bool>>,
    /// Cancelled to begin the shutdown; cancelled again (a second signal) ends the drain early.
    shutdown: CancellationToken,
    drain_cut: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Checks the configuration, loads ONNX Runtime, binds the listeners and
    /// starts serving; models load in the background (see [`Server::wait_ready`]).
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        let runtime = model::onnx::init_runtime(config.ort_library.as_deref()).map_err(anyhow::Error::msg)?;
        tracing::info!(%runtime, "ONNX Runtime loaded");
        anyhow::ensure!(
            config.model_repository.is_dir(),
            "model repository {} is not a directory",
            config.model_repository.display()
        );
        if let Some(name) = &config.model_name {
            repository::validate_model_name(name).map_err(|e| anyhow::anyhow!("--model-name: {e}"))?;
        }
        let listeners = Listeners::bind(&config).await?;
        Self::start_on(config, listeners)
    }

    /// Starts serving on already-bound listeners.
    ///
    /// Shutdown, in order: readiness turns false (HTTP 503, gRPC `ServerReady`
    /// false, `grpc.health.v1` NOT_SERVING) while requests are still served for
    /// `--shutdown-drain-secs`; then the listeners stop accepting and open
    /// connections are shut down gracefully; in-flight requests get
    /// `--exit-timeout-secs`; then every model is retired (queues drain,
    /// executors exit), the control plane stops, and the prediction log and
    /// audit trail are flushed.
    pub fn start_on(config: Config, listeners: Listeners) -> anyhow::Result<Server> {
        // Without --allow-metrics no recorder is installed: every metric is a no-op.
        let prometheus = config
            .allow_metrics
            .then(|| metrics::install_with(&config.metrics_settings()));
        let upkeep = prometheus.as_ref().map(metrics::upkeep);
        let service = Service::new(&config)?;
        let http_addr = listeners.http.local_addr()?;
        let admin_addr = listeners.admin.as_ref().map(|l| l.local_addr()).transpose()?;
        let grpc_addr = listeners.grpc.local_addr()?;
        let metrics_addr = listeners.metrics.local_addr()?;
        let limits = fit_to_descriptors(config.connection_limits(), 3 + usize::from(listeners.admin.is_some()));
        // `shutdown`: the signal came. `stop`: listeners stop accepting. `tracker`: HTTP connections.
        let (shutdown, drain_cut, stop) = (
            CancellationToken::new(),
            CancellationToken::new(),
            CancellationToken::new(),
        );
        let tracker = TaskTracker::new();
        let (ready_tx, ready) = watch::channel(None);
        // TLS per listener (certificates reload until `stop`); ALPN h2 for gRPC.
        let tls = |name: &str, alpn: &[&[u8]]| -> anyhow::Result<Option<net::Tls>> {
            config
                .tls_files(name)?
                .map(|files| net::Tls::start(files, alpn, stop.clone()))
                .transpose()
                .with_context(|| format!("TLS of the {name} listener"))
        };
        const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];
        let endpoint = |tcp, name, tls| net::Endpoint {
            tcp,
            name,
            limits: limits.clone(),
            tls,
        };

        let (health, health_service) = tonic_health::server::health_reporter();
        let grpc_service = grpc::GrpcInferenceServiceServer::new(grpc::GrpcService::new(service.clone()))
            .max_decoding_message_size(config.grpc_max_message_bytes)
            .max_encoding_message_size(config.grpc_max_message_bytes);
        // Accepted connections wait here for tonic (which accepts as fast as they come).
        let (conns, incoming) = tokio::sync::mpsc::channel::<std::io::Result<net::Conn<net::Transport>>>(64);
        let grpc_endpoint = endpoint(listeners.grpc, "grpc", tls("grpc", &[b"h2"])?);
        let grpc_accept = net::accept_loop(grpc_endpoint, false, stop.clone(), move |conn| {
            let conns = conns.clone();
            tokio::spawn(async move {
                let _ = conns.send(Ok(conn)).await;
            });
        });
        let grpc_task = tokio::spawn(
            tonic::transport::Server::builder()
                .max_concurrent_streams(limits.http2_max_concurrent_streams)
                .http2_keepalive_interval(limits.http2_keepalive_interval)
                .http2_keepalive_timeout(Some(limits.http2_keepalive_timeout))
                .http2_max_header_list_size(limits.max_header_bytes as u32)
                .layer(net::TrackRequestsLayer)
                .layer(grpc::AccessLayer::new(&service))
                .layer(tower::util::MapResponseLayer::new(
                    grpc::too_large_is_resource_exhausted,
                ))
                .add_service(health_service)
                .add_service(grpc_service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::ReceiverStream::new(incoming),
                    stop.clone().cancelled_owned(),
                ),
        );
        let body_timeout = Duration::from_secs(config.body_read_timeout_secs);
        let http_router = |admin: bool| {
            http::router(service.clone(), config.http_max_body_bytes, admin)
                .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(body_timeout))
        };
        let mut accept_loops = vec![grpc_accept];
        accept_loops.push(net::serve_http(
            endpoint(listeners.http, "http", tls("http", HTTP_ALPN)?),
            http_router(false),
            stop.clone(),
            tracker.clone(),
        ));
        if let Some(listener) = listeners.admin {
            accept_loops.push(net::serve_http(
                endpoint(listener, "admin", tls("admin", HTTP_ALPN)?),
                http_router(true),
                stop.clone(),
                tracker.clone(),
            ));
        }
        let metrics_router = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let p = prometheus.clone();
                async move {
                    match p {
                        Some(p) => p.render().into_response(),
                        None => (
                            axum::http::StatusCode::NOT_FOUND,
                            "metrics are disabled (--allow-metrics false)\n",
                        )
                            .into_response(),
                    }
                }
            }),
        );
        accept_loops.push(net::serve_http(
            endpoint(listeners.metrics, "metrics", tls("metrics", HTTP_ALPN)?),
            metrics_router,
            stop.clone(),
            tracker.clone(),
        ));

        let control = tokio::spawn(control_plane(
            config.clone(),
            service.clone(),
            health.clone(),
            ready_tx,
            stop.clone(),
        ));
        let exit_timeout = Duration::from_secs(config.exit_timeout_secs);
        let drain = Duration::from_secs(config.shutdown_drain_secs);
        let (svc, signal, cut) = (service.clone(), shutdown.clone(), drain_cut.clone());
        let task = tokio::spawn(async move {
            signal.cancelled().await;
            // 1. Readiness false first, so load balancers stop sending while we still serve.
            svc.begin_shutdown();
            health.set_service_status("", ServingStatus::NotServing).await;
            health
                .set_not_serving::<grpc::GrpcInferenceServiceServer<grpc::GrpcService>>()
                .await;
            if !drain.is_zero() {
                tracing::info!(?drain, "shutting down: not ready; serving during the drain period");
                tokio::select! {
                    _ = tokio::time::sleep(drain) => {}
                    _ = cut.cancelled() => tracing::info!("second signal: ending the drain early"),
                }
            }
            // 2. Stop accepting; open connections finish what is in flight.
            tracing::info!("shutting down: closing the listeners, finishing in-flight requests");
            stop.cancel();
            svc.stop_control();
            tracker.close();
            let drained = async {
                for accept in accept_loops {
                    let _ = accept.await;
                }
                let grpc = grpc_task.await;
                tracker.wait().await;
                grpc
            };
            let result = match tokio::time::timeout(exit_timeout, drained).await {
                Ok(Ok(r)) => r.map_err(anyhow::Error::from),
                Ok(Err(e)) => Err(anyhow::Error::from(e)),
                Err(_) => {
                    tracing::warn!(?exit_timeout, "in-flight requests did not finish in time");
                    Ok(())
                }
            };
            // 3. Stop the control plane (a load in progress is abandoned), retire
            //    every model (queues drain, executors exit).
            control.abort();
            let _ = control.await;
            // Bounded: a reload still holding a model's control lock must not hold the exit.
            let _ = tokio::time::timeout(Duration::from_secs(5), svc.retire_all()).await;
            // 4. Background work ends: rollback watchers and stream readers are
            //    cancelled, the retired versions' executor threads joined.
            if svc.background().shutdown(Duration::from_secs(5)).await {
                tracing::info!("background tasks ended, executor threads joined");
            }
            // 5. Records already taken are written before the process exits.
            let log = svc.prediction_log().clone();
            let _ = tokio::task::spawn_blocking(move || log.flush(Duration::from_secs(5))).await;
            //    Predictions kept for feedback are synced to their store, which closes.
            let svc = svc.clone();
            let _ = tokio::task::spawn_blocking(move || svc.close_quality(Duration::from_secs(5))).await;
            drop(upkeep);
            result
        });
        Ok(Server {
            service,
            http_addr,
            grpc_addr,
            metrics_addr,
            admin_addr,
            ready,
            shutdown,
            drain_cut,
            task,
        })
    }

    /// Resolves once start-up loading is done and the server is ready.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.clone();
        let _ = rx.wait_for(|r| *r == Some(true)).await;
    }

    /// Resolves once start-up loading is done; tells whether the server became ready.
    pub async fn wait_started(&self) -> bool {
        let mut rx = self.ready.clone();
        rx.wait_for(Option::is_some)
            .await
            .map(|r| *r == Some(true))
            .unwrap_or(false)
    }

    /// Starts a graceful shutdown; called again while draining, ends the drain early.
    pub fn shutdown(&self) {
        if self.shutdown.is_cancelled() {
            self.drain_cut.cancel();
        }
        self.shutdown.cancel();
    }

    /// Waits for the server to stop.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await?
    }

    /// Runs until `signal` resolves, then shuts down gracefully; a second
    /// `signal` ends the drain period early.
    pub async fn run_until<F: Future<Output = ()>>(self, mut signal: impl FnMut() -> F) -> anyhow::Result<()> {
        let (shutdown, cut) = (self.shutdown.clone(), self.drain_cut.clone());
        let waiter = self.wait();
        tokio::pin!(waiter);
        tokio::select! {
            r = &mut waiter => return r,
            _ = signal() => {}
        }
        shutdown.cancel();
        tokio::select! {
            r = &mut waiter => return r,
            _ = signal() => cut.cancel(),
        }
        waiter.await
    }
}

/// Lowers the per-listener connection limit so that every listener at its
/// limit still fits the file-descriptor limit (raised to its hard limit
/// first), with room left for model files, logs and outgoing connections.
fn fit_to_descriptors(mut limits: net::Limits, listeners: usize) -> net::Limits {
    const RESERVED: u64 = 256;
    let Ok(nofile) = rlimit::increase_nofile_limit(u64::MAX) else {
        return limits;
    };
    let fits = nofile.saturating_sub(RESERVED) / listeners as u64;
    if (limits.max_connections as u64) > fits {
        let lowered = fits.max(16) as usize;
        tracing::warn!(
            requested = limits.max_connections,
            lowered,
            nofile,
            "--max-connections lowered to fit the file-descriptor limit (raise `ulimit -n` to allow more)"
        );
        limits.max_connections = lowered;
    }
    limits
}

/// Start-up loading, then (poll mode) re-scanning the repository.
async fn control_plane(
    config: Config,
    service: Service,
    health: tonic_health::server::HealthReporter,
    ready: watch::Sender<Option<bool>>,
    stop: CancellationToken,
) {
    let repo = &config.repository();
    let all = || {
        repository::list_models(repo).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot list the model repository");
            Vec::new()
        })
    };
    let names: Vec<String> = match config.model_control_mode {
        ControlMode::Explicit if config.load_models.iter().any(|m| m == "*") => all(),
        ControlMode::Explicit => config.load_models.clone(),
        ControlMode::None | ControlMode::Poll => all(),
    };
    // Fingerprints taken before loading: a file changed while (or right after)
    // the models load is picked up by the first poll.
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    if config.model_control_mode == ControlMode::Poll {
        for name in &names {
            if let Ok(src) = repository::read_model(repo, name, None) {
                seen.insert(name.clone(), src.fingerprint);
            }
        }
    }
    // Models load concurrently; the loader pool bounds how many versions build at once.
    let startup = Actor::Startup;
    let loads = futures::future::join_all(names.iter().map(|name| service.load_now(name, None, &startup)));
    let results = tokio::select! {
        r = loads => r,
        _ = stop.cancelled() => return,
    };
    let mut ok = true;
    for (name, result) in names.iter().zip(results) {
        if let Err(e) = result {
            tracing::error!(model = %name, error = %e, "model failed to load");
            ok = false;
        }
    }
    let is_ready = ok || !config.strict_readiness;
    if is_ready {
        service.set_ready(true);
        health.set_service_status("", ServingStatus::Serving).await;
        health
            .set_serving::<grpc::GrpcInferenceServiceServer<grpc::GrpcService>>()
            .await;
        tracing::info!(models = names.len(), "server ready");
    } else {
        tracing::error!("not ready: a model meant to serve at start failed to load (--strict-readiness)");
    }
    let _ = ready.send(Some(is_ready));
    if config.model_control_mode != ControlMode::Poll {
        return;
    }
    let mut interval = tokio::time::interval(Duration::from_secs(config.repository_poll_secs));
    interval.tick().await;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.cancelled() => return,
        }
        poll_once(&service, repo, &mut seen).await;
    }
}

/// One poll: loads new or changed models, unloads removed ones.
async fn poll_once(service: &Service, repo: &repository::Repository, seen: &mut BTreeMap<String, String>) {
    let current = repository::list_models(repo).unwrap_or_default();
    for name in &current {
        let Ok(src) = repository::read_model(repo, name, None) else {
            continue;
        };
        if seen.get(name) == Some(&src.fingerprint) {
            continue;
        }
        tracing::info!(model = %name, "repository change detected: loading");
        if let Err(e) = service.load_now(name, None, &Actor::Poll).await {
            tracing::error!(model = %name, error = %e, "reload failed");
        }
        seen.insert(name.clone(), src.fingerprint);
    }
    let removed: Vec<String> = seen.keys().filter(|n| !current.contains(n)).cloned().collect();
    for name in removed {
        seen.remove(&name);
        if service.registry().get(&name).is_some() {
            let _ = service.deployer().unload(&name, &Actor::Poll).await;
        }
    }
}
