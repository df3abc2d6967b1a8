//! One accepted connection: the socket plus what the listener needs to bound
//! it — the connection-limit permit it holds, its activity clock for the
//! idle timeout, and the number of requests it has in flight.
//!
//! Idle means: no request in flight, and none started or finished, for the
//! idle timeout. Bytes do not count: HTTP/2 keep-alive pings and a client
//! dribbling bytes would otherwise hold a connection forever. A watchdog task
//! per connection checks that and then makes the next read return
//! end-of-file, so HTTP/1, HTTP/2 and gRPC connections all close the same way
//! (a client sees the server close an idle connection, as behind any proxy,
//! and reconnects). A request that computes, or a gRPC stream that stays
//! open, for longer than the timeout keeps its connection: it is in flight
//! until its response body ends.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;

/// Shared state of one connection. Written by the connection's I/O (activity),
/// the request tracker (in-flight) and the watchdog (closing); read by the watchdog.
#[derive(Debug)]
pub struct ConnState {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last request start or end.
    last_activity_ms: AtomicU64,
    in_flight: AtomicUsize,
    /// Set by the watchdog: the next read returns end-of-file.
    closing: AtomicBool,
    /// The reader to wake when `closing` is set.
    reader: AtomicWaker,
    /// Peer address.
    pub remote: SocketAddr,
    /// Listener name, for metrics.
    pub listener: &'static str,
}

impl ConnState {
    fn new(remote: SocketAddr, listener: &'static str) -> ConnState {
        ConnState {
            epoch: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            reader: AtomicWaker::new(),
            remote,
            listener,
        }
    }

    fn touch(&self) {
        self.last_activity_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }

    /// Marks a request in flight until the guard drops (also when its future is cancelled).
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        InFlight(self.clone())
    }

    fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.reader.wake();
    }
}

/// A request in flight on a connection.
#[derive(Debug)]
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Request extension naming the connection a request came on (HTTP and gRPC).
#[derive(Debug, Clone)]
pub struct ConnInfo(pub Arc<ConnState>);

/// Holds the listener's gauge of open connections while the connection lives.
#[derive(Debug)]
struct OpenGuard(&'static str);

impl OpenGuard {
    fn new(listener: &'static str) -> OpenGuard {
        metrics::gauge!(crate::metrics::CONNECTIONS, "listener" => listener).increment(1.0);
        OpenGuard(listener)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        metrics::gauge!(crate::metrics::CONNECTIONS, "listener" => self.0).decrement(1.0);
    }
}

/// An accepted connection over the transport `T` (TCP, or TLS over TCP).
#[derive(Debug)]
pub struct Conn<T> {
    io: T,
    state: Arc<ConnState>,
    _permit: OwnedSemaphorePermit,
    _open: OpenGuard,
}

impl<T> Conn<T> {
    /// Wraps an accepted transport; starts the idle watchdog when `idle_timeout` is set.
    pub fn new(
        io: T,
        remote: SocketAddr,
        listener: &'static str,
        permit: OwnedSemaphorePermit,
        idle_timeout: Option<Duration>,
    ) -> Conn<T> {
        let state = Arc::new(ConnState::new(remote, listener));
        if let Some(idle) = idle_timeout {
            tokio::spawn(watchdog(Arc::downgrade(&state), idle));
        }
        Conn {
            io,
            state,
            _permit: permit,
            _open: OpenGuard::new(listener),
        }
    }

    /// The connection's shared state.
    pub fn state(&self) -> &Arc<ConnState> {
        &self.state
    }

    /// Swaps the transport (after a TLS handshake), keeping permit and state.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Conn<U> {
        Conn {
            io: f(self.io),
            state: self.state,
            _permit: self._permit,
            _open: self._open,
        }
    }

    /// Takes the transport out (for a handshake), keeping permit and state.
    pub fn take(self) -> (T, Conn<()>) {
        (
            self.io,
            Conn {
                io: (),
                state: self.state,
                _permit: self._permit,
                _open: self._open,
            },
        )
    }

    /// The transport.
    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

/// Closes the connection once it has been idle for `idle`; ends with the connection.
async fn watchdog(state: Weak<ConnState>, idle: Duration) {
    let mut wait = idle;
    loop {
        tokio::time::sleep(wait).await;
        let Some(state) = state.upgrade() else { return };
        let idle_for = state.idle_for();
        if state.in_flight.load(Ordering::Relaxed) > 0 {
            wait = idle;
        } else if idle_for >= idle {
            metrics::counter!(crate::metrics::CONNECTIONS_CLOSED, "listener" => state.listener, "reason" => "idle")
                .increment(1);
            tracing::debug!(peer = %state.remote, listener = state.listener, "closing an idle connection");
            state.close();
            return;
        } else {
            wait = idle - idle_for;
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Conn<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.state.closing.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        this.state.reader.register(cx.waker());
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Conn<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<T: Send + Sync + 'static> tonic::transport::server::Connected for Conn<T> {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo(self.state.clone())
    }
}

/// Tower layer that marks each request in flight on its connection (found in
/// the request's [`ConnInfo`] extension) until its response body ends, and
/// gives tonic handlers the peer address they look for.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackRequestsLayer;

impl<S> tower::Layer<S> for TrackRequestsLayer {
    type Service = TrackRequests<S>;

    fn layer(&self, inner: S) -> TrackRequests<S> {
        TrackRequests { inner }
    }
}

/// See [`TrackRequestsLayer`].
#[derive(Debug, Clone)]
pub struct TrackRequests<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for TrackRequests<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<TrackedBody<RB>>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let guard = req.extensions().get::<ConnInfo>().map(|c| c.0.clone()).map(|state| {
            req.extensions_mut().insert(tonic::transport::server::TcpConnectInfo {
                local_addr: None,
                remote_addr: Some(state.remote),
            });
            state.start_request()
        });
        let future = self.inner.call(req);
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|body| TrackedBody { body, _guard: guard }))
        })
    }
}

/// A response body that holds its request's [`InFlight`] guard until it ends.
#[derive(Debug)]
pub struct TrackedBody<B> {
    body: B,
    _guard: Option<InFlight>,
}

impl<B: http_body::Body + Unpin> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
