//! The machinery of a run: the prepared request ([`Target`]), the shared
//! [`Recorder`] that turns completions into per-window statistics, and the two
//! load loops (closed: N workers back to back; open: sends on a schedule).
//!
//! Ownership: `run` owns the stop channel and the task set of the load; every
//! request task holds an `Arc` of the target and the recorder. Completions
//! outside a measurement window (warm-up, after the end) are not recorded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::schedule::Schedule;
use crate::{ClientError, GrpcClient, HttpClient, proto};

/// Largest latency the histograms hold (60 s, in µs); longer ones are
/// recorded as this.
const MAX_LATENCY_US: u64 = 60_000_000;

/// One prepared inference request and where to send it. Encoded once: every
/// send reuses the same body (HTTP) or message (gRPC, whose raw contents are
/// reference-counted `Bytes`).
#[derive(Debug)]
pub(crate) enum Target {
    Http {
        client: HttpClient,
        model: String,
        version: Option<String>,
        body: Bytes,
        header_len: Option<usize>,
    },
    Grpc {
        /// One client per connection; send `k` goes to `clients[k % len]`.
        clients: Vec<GrpcClient>,
        request: proto::ModelInferRequest,
    },
}

impl Target {
    /// Sends the request once, on connection `k` (modulo the number of them).
    /// The response is received in full but not decoded.
    pub(crate) async fn send(&self, k: usize) -> Result<(), ClientError> {
        match self {
            Target::Http {
                client,
                model,
                version,
                body,
                header_len,
            } => client
                .infer_encoded(model, version.as_deref(), body.clone(), *header_len)
                .await
                .map(drop),
            Target::Grpc { clients, request } => clients[k % clients.len()].infer_raw(request.clone()).await.map(drop),
        }
    }
}

/// The short name an error is counted under in a report.
pub(crate) fn error_kind(e: &ClientError) -> String {
    match e {
        ClientError::Http { status, .. } => format!("HTTP {status}"),
        ClientError::Grpc { code, .. } => format!("gRPC {code:?}"),
        ClientError::Timeout { .. } => "timeout".into(),
        ClientError::Transport(_) => "transport".into(),
        ClientError::Decode(_) => "decode".into(),
        ClientError::InvalidArgument(_) => "invalid argument".into(),
    }
}

/// What one measurement window saw.
#[derive(Debug)]
pub(crate) struct Window {
    /// Latencies of the successful requests, µs.
    pub(crate) latency: Histogram<u64>,
    pub(crate) requests: u64,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) first_error: Option<String>,
    /// Open loop: sends skipped because too many requests were outstanding.
    pub(crate) dropped: u64,
    /// Open loop: how late each send started after its scheduled time, µs.
    pub(crate) send_lag: Histogram<u64>,
    pub(crate) start: Instant,
    pub(crate) end: Instant,
}

impl Window {
    fn new(start: Instant) -> Window {
        let histogram = || Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds");
        Window {
            latency: histogram(),
            requests: 0,
            errors: BTreeMap::new(),
            first_error: None,
            dropped: 0,
            send_lag: histogram(),
            start,
            end: start,
        }
    }
}

#[derive(Debug)]
enum Phase {
    Warmup,
    Window(usize),
    Done,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    windows: Vec<Window>,
}

/// Collects completions into the current window. One `std` mutex, held for a
/// few hundred nanoseconds per completion and never across an `.await`.
#[derive(Debug)]
pub(crate) struct Recorder {
    state: Mutex<State>,
    max_requests: Option<u64>,
    /// The number of windows that reached `max_requests`; `run` waits on it.
    full: watch::Sender<usize>,
}

impl Recorder {
    pub(crate) fn new(max_requests: Option<u64>) -> Recorder {
        Recorder {
            state: Mutex::new(State {
                phase: Phase::Warmup,
                windows: Vec::new(),
            }),
            max_requests,
            full: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent counters behind.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one completed request that took `latency`.
    pub(crate) fn record(&self, latency: Duration, result: Result<(), ClientError>) {
        let mut state = self.lock();
        let Phase::Window(i) = state.phase else { return };
        let w = &mut state.windows[i];
        match result {
            Ok(()) => {
                w.latency.saturating_record(micros(latency));
                w.requests += 1;
                if self.max_requests == Some(w.requests) {
                    self.full.send_modify(|n| *n = (*n).max(i + 1));
                }
            }
            Err(e) => {
                *w.errors.entry(error_kind(&e)).or_default() += 1;
                w.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }

    /// Records how late an open-loop send started.
    pub(crate) fn send_lag(&self, lag: Duration) {
        let mut state = self.lock();
        if let Phase::Window(i) = state.phase {
            state.windows[i].send_lag.saturating_record(micros(lag));
        }
    }

    /// Counts a send skipped by the open loop.
    pub(crate) fn dropped(&self) {
        let mut state = self.lock();
        if let Phase::Window(i) = state.phase {
            state.windows[i].dropped += 1;
        }
    }

    /// Ends the current window, if any, and starts the next one now.
    pub(crate) fn next_window(&self) {
        let now = Instant::now();
        let mut state = self.lock();
        if let Phase::Window(i) = state.phase {
            state.windows[i].end = now;
        }
        state.windows.push(Window::new(now));
        state.phase = Phase::Window(state.windows.len() - 1);
    }

    /// Ends the last window and returns them all; later completions are ignored.
    pub(crate) fn finish(&self) -> Vec<Window> {
        let now = Instant::now();
        let mut state = self.lock();
        if let Phase::Window(i) = state.phase {
            state.windows[i].end = now;
        }
        state.phase = Phase::Done;
        std::mem::take(&mut state.windows)
    }

    /// A receiver of the count of windows that reached `max_requests`.
    pub(crate) fn full_windows(&self) -> watch::Receiver<usize> {
        self.full.subscribe()
    }
}

/// `d` in whole µs, within the histograms' bounds.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_LATENCY_US)
}

/// Shared by every load task.
#[derive(Debug, Clone)]
pub(crate) struct Load {
    pub(crate) target: Arc<Target>,
    pub(crate) recorder: Arc<Recorder>,
    /// Turns true once when the run ends; nothing new is sent after that.
    pub(crate) stop: watch::Receiver<bool>,
}

/// Closed loop: `concurrency` workers, each sending its next request as soon
/// as the previous one completes. Worker `i` uses connection `i`.
pub(crate) fn spawn_closed(load: &Load, concurrency: usize, tasks: &mut JoinSet<()>) {
    for i in 0..concurrency {
        let load = load.clone();
        tasks.spawn(async move {
            while !*load.stop.borrow() {
                let start = Instant::now();
                let result = load.target.send(i).await;
                load.recorder.record(start.elapsed(), result);
            }
        });
    }
}

/// Open loop: requests are sent on `schedule` whatever the completions do,
/// each in a task of its own, at most `max_outstanding` at a time (a send that
/// finds the bound reached is skipped and counted as dropped). Latency counts
/// from the scheduled send time, so a server that falls behind (or a client
/// that does) shows up in the latencies instead of quietly lowering the rate.
///
/// The schedule is kept by a plain thread: tokio's timer works in whole
/// milliseconds and rounds up, which would put about 1 ms of lag on every
/// send, while a thread sleeps with the OS's precision (tens of µs). It hands
/// each scheduled time to the sending task over a channel bounded to
/// `max_outstanding` (full: the task is that far behind; the send is dropped
/// and counted), and ends at its first tick after the task has gone. On stop
/// the task waits up to `drain` for the outstanding requests, then abandons them.
pub(crate) fn spawn_open(
    load: &Load,
    mut schedule: Schedule,
    max_outstanding: usize,
    drain: Duration,
    tasks: &mut JoinSet<()>,
) -> Result<(), ClientError> {
    let (tick_tx, mut ticks) = mpsc::channel::<Instant>(max_outstanding);
    let recorder = load.recorder.clone();
    std::thread::Builder::new()
        .name("perf-schedule".into())
        .spawn(move || {
            let mut next = Instant::now();
            loop {
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                match tick_tx.try_send(next) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => recorder.dropped(),
                    Err(TrySendError::Closed(_)) => break,
                }
                next += schedule.next_gap();
            }
        })
        .map_err(|e| ClientError::Transport(format!("starting the schedule thread: {e}")))?;

    let mut load = load.clone();
    tasks.spawn(async move {
        // The request tasks; finished ones are reaped before each send, so the
        // length is the number outstanding.
        let mut in_flight = JoinSet::new();
        for k in 0usize.. {
            let scheduled = tokio::select! {
                tick = ticks.recv() => match tick {
                    Some(t) => t,
                    None => break,
                },
                _ = load.stop.wait_for(|stop| *stop) => break,
            };
            while in_flight.try_join_next().is_some() {}
            if in_flight.len() >= max_outstanding {
                load.recorder.dropped();
                continue;
            }
            let (target, recorder) = (load.target.clone(), load.recorder.clone());
            in_flight.spawn(async move {
                recorder.send_lag(scheduled.elapsed());
                let result = target.send(k).await;
                recorder.record(scheduled.elapsed(), result);
            });
        }
        drop(ticks);
        let _ = tokio::time::timeout(drain, async { while in_flight.join_next().await.is_some() {} }).await;
        in_flight.abort_all();
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Result<(), ClientError> {
        Ok(())
    }

    #[test]
    fn the_recorder_fills_the_current_window_only() {
        let r = Recorder::new(Some(3));
        let full = r.full_windows();
        r.record(Duration::from_millis(1), ok()); // warm-up: not recorded
        r.next_window();
        r.record(Duration::from_micros(500), ok());
        r.record(
            Duration::from_micros(700),
            Err(ClientError::Http {
                status: 503,
                message: "full".into(),
            }),
        );
        r.record(Duration::ZERO, ok());
        r.send_lag(Duration::from_micros(40));
        r.dropped();
        assert_eq!(*full.borrow(), 0);
        r.record(Duration::from_secs(100), ok()); // above the histogram: saturates
        assert_eq!(*full.borrow(), 1, "the third success fills window 0");
        r.next_window();
        let grpc = tonic::Status::unavailable("queue full");
        r.record(Duration::from_micros(900), Err(grpc.into()));
        let windows = r.finish();
        r.record(Duration::from_micros(1), ok()); // after the end: ignored
        assert_eq!(windows.len(), 2);
        let w = &windows[0];
        assert_eq!((w.requests, w.dropped, w.latency.len()), (3, 1, 3));
        assert_eq!(
            (w.latency.min(), w.latency.max()),
            (1, w.latency.highest_equivalent(MAX_LATENCY_US))
        );
        assert_eq!(w.errors, BTreeMap::from([("HTTP 503".to_string(), 1)]));
        assert_eq!(w.first_error.as_deref(), Some("HTTP 503: full"));
        assert_eq!(w.send_lag.len(), 1);
        assert!(w.end >= w.start && windows[1].start >= w.end);
        assert_eq!(windows[1].requests, 0);
        assert_eq!(windows[1].errors["gRPC Unavailable"], 1);
    }
}
