//! The server's side of the network: accepting connections on every listener
//! (HTTP, gRPC, metrics, admin) under limits no client can push past.
//!
//! - At most `max_connections` open connections per listener; beyond that a
//!   new connection is closed at once (plain HTTP listeners first get a 503
//!   with a JSON error) and counted, so connections that are held open cannot
//!   exhaust file descriptors or memory.
//! - Accept errors (such as running out of file descriptors) are counted and
//!   retried after a short pause: a listener never stops accepting for good.
//! - Every connection is closed once idle (see [`conn`]); HTTP/1 request
//!   headers must arrive within `header_read_timeout` (slowloris), and header
//!   sizes and counts are bounded on both HTTP versions.
//! - HTTP/2 (and so gRPC) advertises `max_concurrent_streams`, pings idle
//!   peers, and bounds streams a client resets before they are accepted (the
//!   rapid-reset attack) through hyper's and h2's limits.
//!
//! Each accept loop stops on its cancellation token; connection tasks are
//! tracked so that shutdown can wait for them.

pub mod conn;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;

pub use conn::{Conn, ConnInfo, ConnState, TrackRequestsLayer};
pub use tls::{Tls, TlsFiles};

/// A connection's transport: plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum Transport {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

macro_rules! delegate {
    ($self:ident, $io:ident => $e:expr) => {
        match $self.get_mut() {
            Transport::Plain($io) => {
                let $io = std::pin::Pin::new($io);
                $e
            }
            Transport::Tls($io) => {
                let $io = std::pin::Pin::new($io.as_mut());
                $e
            }
        }
    };
}

impl tokio::io::AsyncRead for Transport {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        delegate!(self, io => io.poll_read(cx, buf))
    }
}

impl tokio::io::AsyncWrite for Transport {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        delegate!(self, io => io.poll_write(cx, data))
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        delegate!(self, io => io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Plain(io) => io.is_write_vectored(),
            Transport::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        delegate!(self, io => io.poll_flush(cx))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        delegate!(self, io => io.poll_shutdown(cx))
    }
}

/// Connection-level limits of one listener (from the `--max-connections`,
/// `--*-timeout-secs`, `--max-header-*` and `--http2-*` flags).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Close a connection with no request in flight for this long.
    pub idle_timeout: Option<Duration>,
    /// HTTP/1: the request head must arrive within this time.
    pub header_read_timeout: Duration,
    /// Largest request head (HTTP/1) or header list (HTTP/2), in bytes.
    pub max_header_bytes: usize,
    /// Most header fields in an HTTP/1 request.
    pub max_headers: usize,
    /// HTTP/2 streams a client may have open at once on one connection.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 keep-alive ping interval (`None`: no pings).
    pub http2_keepalive_interval: Option<Duration>,
    /// How long a ping may go unanswered before the connection is closed.
    pub http2_keepalive_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            idle_timeout: Some(Duration::from_secs(120)),
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 << 10,
            max_headers: 100,
            http2_max_concurrent_streams: 200,
            http2_keepalive_interval: Some(Duration::from_secs(60)),
            http2_keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// Pause after an accept error, so a listener out of file descriptors does
/// not spin; it accepts again as soon as connections close.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// What a plain-HTTP listener answers a connection over its limit.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
connection: close\r\ncontent-length: 46\r\n\r\n{\"error\":\"too many connections to the server\"}";

/// One listener: its socket, name (for metrics and logs), limits and TLS.
#[derive(Debug)]
pub struct Endpoint {
    /// The bound socket.
    pub tcp: TcpListener,
    /// `http`, `grpc`, `metrics` or `admin`.
    pub name: &'static str,
    /// Its limits.
    pub limits: Limits,
    /// TLS, when the listener serves it.
    pub tls: Option<Tls>,
}

/// Accepts connections until `stop` is cancelled, handing each one within the
/// limit (after its TLS handshake, which must finish within the header read
/// timeout) to `handle`. Plain-HTTP listeners (`http_refusal`) answer a
/// connection over the limit with a 503 first.
pub fn accept_loop(
    endpoint: Endpoint,
    http_refusal: bool,
    stop: CancellationToken,
    handle: impl Fn(Conn<Transport>) + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    let Endpoint { tcp, name, limits, tls } = endpoint;
    let http_refusal = http_refusal && tls.is_none();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let idle = limits.idle_timeout;
    let handshake_timeout = limits.header_read_timeout;
    let handle = Arc::new(handle);
    tokio::spawn(async move {
        let mut last_warning: Option<Instant> = None;
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                r = tcp.accept() => r,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    metrics::counter!(crate::metrics::CONNECTIONS_CLOSED, "listener" => name, "reason" => "accept_error")
                        .increment(1);
                    if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(listener = name, error = %e, "cannot accept a connection; retrying");
                        last_warning = Some(Instant::now());
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                    }
                    continue;
                }
            };
            metrics::counter!(crate::metrics::CONNECTIONS_ACCEPTED, "listener" => name).increment(1);
            match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let _ = stream.set_nodelay(true);
                    let conn = Conn::new(stream, peer, name, permit, idle);
                    match &tls {
                        None => handle(conn.map(Transport::Plain)),
                        Some(tls) => {
                            let (acceptor, handle) = (tls.acceptor(), handle.clone());
                            tokio::spawn(async move {
                                let (tcp, conn) = conn.take();
                                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                                    Ok(Ok(stream)) => handle(conn.map(|()| Transport::Tls(Box::new(stream)))),
                                    Ok(Err(e)) => {
                                        metrics::counter!(crate::metrics::CONNECTIONS_CLOSED, "listener" => name, "reason" => "handshake").increment(1);
                                        tracing::debug!(listener = name, %peer, error = %e, "TLS handshake failed");
                                    }
                                    Err(_) => {
                                        metrics::counter!(crate::metrics::CONNECTIONS_CLOSED, "listener" => name, "reason" => "handshake").increment(1);
                                        tracing::debug!(listener = name, %peer, "TLS handshake timed out");
                                    }
                                }
                            });
                        }
                    }
                }
                Err(_) => {
                    metrics::counter!(crate::metrics::CONNECTIONS_CLOSED, "listener" => name, "reason" => "limit")
                        .increment(1);
                    tracing::debug!(listener = name, %peer, "connection refused: over --max-connections");
                    if http_refusal {
                        // Best effort and bounded: a full socket buffer just gets the close.
                        let mut stream = stream;
                        tokio::spawn(async move {
                            let write = async {
                                stream.write_all(TOO_MANY_CONNECTIONS).await?;
                                stream.shutdown().await
                            };
                            let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
                        });
                    }
                }
            }
        }
    })
}

/// Serves `router` over HTTP/1.1 and HTTP/2 (h2c) on `tcp` until `stop`;
/// connections are tracked by `tracker` and shut down gracefully on `stop`.
pub fn serve_http(
    endpoint: Endpoint,
    router: axum::Router,
    stop: CancellationToken,
    tracker: TaskTracker,
) -> tokio::task::JoinHandle<()> {
    let conn_limits = Arc::new(endpoint.limits.clone());
    let conn_stop = stop.clone();
    accept_loop(endpoint, true, stop, move |conn| {
        let (router, limits, stop) = (router.clone(), conn_limits.clone(), conn_stop.clone());
        tracker.spawn(serve_connection(conn, router, limits, stop));
    })
}

async fn serve_connection<T>(conn: Conn<T>, router: axum::Router, limits: Arc<Limits>, stop: CancellationToken)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let state = conn.state().clone();
    let remote: SocketAddr = state.remote;
    let service = ServiceBuilder::new()
        .map_request(move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(remote));
            req.extensions_mut().insert(ConnInfo(state.clone()));
            req
        })
        .layer(TrackRequestsLayer)
        .service(router);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // A client that closes its side after sending still gets its request
        // carried out (a load it asked for is not abandoned half-way).
        .half_close(true)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes as u32)
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(limits.http2_keepalive_timeout);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(conn), TowerToHyperService::new(service));
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stop.cancelled() => {
            // Finish what is in flight; HTTP/1 closes after it, HTTP/2 sends GOAWAY.
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
