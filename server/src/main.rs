//! The `switchyard` binary: parse flags, set up logging, serve until SIGTERM/SIGINT.

use clap::Parser;
use switchyard::config::LogFormat;
use switchyard::{Config, Server};
use tracing_subscriber::EnvFilter;

// Many small allocations per request (protobuf messages, HTTP/2 frames, JSON):
// mimalloc measured cheaper than the system allocator here (see README, Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run());
    // A model load still building in a blocking thread (shutdown came during
    // it) must not keep the process alive: wait briefly, then exit anyway.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

async fn run() -> std::process::ExitCode {
    let mut argv = std::env::args();
    if std::env::args().nth(1).as_deref() == Some("validate") {
        // `switchyard validate --model-repository DIR`: offline checks for CI/CD.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("warn,ort=error"))
            .with_writer(std::io::stderr)
            .try_init();
        argv.next();
        let ok = switchyard::validate::main(argv).await;
        return if ok {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::FAILURE
        };
    }
    let config = Config::parse();
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    // Spans (`infer` per request, `batch` per execution; debug level) are logged when they close.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    tracing::info!(?config, "starting switchyard {}", env!("CARGO_PKG_VERSION"));
    let server = match Server::start(config).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!(http = %server.http_addr, grpc = %server.grpc_addr, metrics = %server.metrics_addr, "listening");
    match server.run_until(shutdown_signal).await {
        Ok(()) => {
            tracing::info!("stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// SIGINT or SIGTERM (what containers and Kubernetes send).
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
