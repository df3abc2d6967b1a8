//! OTLP trace export (opt-in, `--otlp-endpoint`): one SERVER span per
//! inference request, in the caller's trace when it sent a `traceparent`
//! (else a new trace), with the request's phases and batch as attributes.
//! Spans go through a bounded queue to one exporter thread that posts them in
//! batches as OTLP/HTTP JSON to `<endpoint>/v1/traces` (any OpenTelemetry
//! Collector, Jaeger, Tempo): a full batch at once, a partial one
//! [`INTERVAL`] after the last post. Idle, the thread blocks on the queue
//! ([`crate::util::drain`]). A full queue or a failed post drops spans and
//! counts them (`switchyard_otlp_dropped_spans_total`); requests never wait.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::metrics::{OTLP_DROPPED as DROPPED, OTLP_EXPORTED as EXPORTED};
use crate::trace::TraceContext;
use crate::util::drain;
use crate::util::hex;

/// Spans waiting for export at most.
const QUEUE: usize = 8192;
/// Spans per post at most.
const BATCH: usize = 512;
/// How long a partial batch waits at most after the last post.
pub const INTERVAL: Duration = Duration::from_millis(500);

/// One finished request span.
#[derive(Debug, Clone)]
pub struct SpanData {
    /// The request's context as the server sees it (our span id).
    pub context: TraceContext,
    /// The caller's span, if the request came with a `traceparent`.
    pub parent: Option<[u8; 8]>,
    /// Start and end.
    pub start: SystemTime,
    /// End.
    pub end: SystemTime,
    /// Attributes (string values).
    pub attributes: Vec<(&'static str, String)>,
    /// Failed (OTLP status ERROR) with this message.
    pub error: Option<String>,
}

/// The exporter handle (cheap to clone); `disabled()` does nothing.
#[derive(Debug, Clone, Default)]
pub struct Exporter {
    tx: Option<SyncSender<SpanData>>,
}

impl Exporter {
    /// No export.
    pub fn disabled() -> Exporter {
        Exporter::default()
    }

    /// Starts the exporter thread posting to `<endpoint>/v1/traces`
    /// (http:// or https://, trusting the system roots plus `extra_ca`).
    pub fn start(endpoint: &str, service_name: &str, extra_ca: Option<&[u8]>) -> anyhow::Result<Exporter> {
        let base = endpoint.trim_end_matches('/');
        anyhow::ensure!(
            base.starts_with("http://") || base.starts_with("https://"),
            "--otlp-endpoint must be an http:// or https:// URL (OTLP/HTTP), got '{endpoint}'"
        );
        let builder = crate::net::tls::sink_client(extra_ca)?;
        let url = if base.ends_with("/v1/traces") {
            base.to_string()
        } else {
            format!("{base}/v1/traces")
        };
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let service = service_name.to_string();
        std::thread::Builder::new()
            .name("sy-otlp".into())
            .spawn(move || run(rx, &url, &service, builder))?;
        Ok(Exporter { tx: Some(tx) })
    }

    /// Whether spans are exported.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues a span; never blocks.
    pub fn export(&self, span: SpanData) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(span) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => metrics::counter!(DROPPED, "reason" => "queue_full").increment(1),
            Err(TrySendError::Disconnected(_)) => metrics::counter!(DROPPED, "reason" => "export_failed").increment(1),
        }
    }
}

fn run(rx: Receiver<SpanData>, url: &str, service: &str, builder: reqwest::ClientBuilder) {
    crate::util::background_priority("otlp");
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        tracing::error!("cannot start the OTLP exporter's runtime: spans are dropped");
        return;
    };
    let client = match builder.timeout(Duration::from_secs(5)).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the OTLP client: spans are dropped");
            return;
        }
    };
    let mut poster = Poster {
        runtime,
        client,
        url,
        service,
        batch: Vec::with_capacity(BATCH),
        last_post: Instant::now(),
        last_warning: None,
    };
    drain::run(&rx, PACE, &mut poster);
}

/// Pace of the exporter thread while spans flow; idle, it blocks on the queue.
const PACE: drain::Pace = drain::Pace {
    tick: Duration::from_millis(20),
    linger: Duration::from_secs(1),
};

/// The exporter thread's state: the batch being filled and the client posting it.
struct Poster<'a> {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    url: &'a str,
    service: &'a str,
    batch: Vec<SpanData>,
    last_post: Instant,
    last_warning: Option<Instant>,
}

impl Poster<'_> {
    fn post(&mut self) {
        let n = self.batch.len() as u64;
        let body = encode(&self.batch, self.service);
        self.batch.clear();
        self.last_post = Instant::now();
        let (client, url) = (&self.client, self.url);
        let result = self.runtime.block_on(async {
            let r = client.post(url).json(&body).send().await?;
            r.error_for_status().map(drop)
        });
        match result {
            Ok(()) => metrics::counter!(EXPORTED).increment(n),
            Err(e) => {
                metrics::counter!(DROPPED, "reason" => "export_failed").increment(n);
                if self.last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(error = %e, url, spans = n, "OTLP export failed; spans dropped");
                    self.last_warning = Some(Instant::now());
                }
            }
        }
    }
}

impl drain::Drain<SpanData> for Poster<'_> {
    fn item(&mut self, span: SpanData) -> bool {
        self.batch.push(span);
        if self.batch.len() >= BATCH {
            self.post();
        }
        true
    }

    fn pass(&mut self, closing: bool) -> Option<Duration> {
        if self.batch.is_empty() {
            return None;
        }
        if closing || self.last_post.elapsed() >= INTERVAL {
            self.post();
            return None;
        }
        // A partial batch waits at most INTERVAL after the last post.
        Some(INTERVAL.saturating_sub(self.last_post.elapsed()))
    }
}

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()).to_string()
}

/// The OTLP/HTTP JSON body (ids in hex, times as decimal strings, as the
/// OTLP JSON encoding specifies).
pub fn encode(spans: &[SpanData], service: &str) -> Value {
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let mut span = json!({
                "traceId": hex(&s.context.trace_id),
                "spanId": hex(&s.context.span_id),
                "name": "infer",
                "kind": 2,
                "startTimeUnixNano": nanos(s.start),
                "endTimeUnixNano": nanos(s.end),
                "attributes": s.attributes.iter()
                    .map(|(k, v)| json!({"key": k, "value": {"stringValue": v}}))
                    .collect::<Vec<_>>(),
                "status": match &s.error {
                    None => json!({"code": 1}),
                    Some(m) => json!({"code": 2, "message": m}),
                },
            });
            if let Some(p) = s.parent {
                span["parentSpanId"] = json!(hex(&p));
            }
            span
        })
        .collect();
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"scope": {"name": "switchyard", "version": env!("CARGO_PKG_VERSION")}, "spans": spans}],
    }]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_otlp_json() {
        let ctx = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let child = ctx.child();
        let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let body = encode(
            &[SpanData {
                context: child,
                parent: Some(ctx.span_id),
                start,
                end: start + Duration::from_micros(250),
                attributes: vec![("model", "simple".into())],
                error: Some("bad".into()),
            }],
            "switchyard",
        );
        let span = &body["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span["parentSpanId"], "00f067aa0ba902b7");
        assert_eq!(span["spanId"], child.span_id_hex());
        assert_eq!(span["startTimeUnixNano"], "1700000000123456789");
        assert_eq!(span["endTimeUnixNano"], "1700000000123706789");
        assert_eq!(span["kind"], 2);
        assert_eq!(span["status"]["code"], 2);
        assert_eq!(span["attributes"][0]["value"]["stringValue"], "simple");
        assert_eq!(
            body["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            "switchyard"
        );
    }

    #[test]
    fn refuses_non_http_endpoints() {
        assert!(Exporter::start("ftp://collector:4318", "s", None).is_err());
        assert!(Exporter::start("collector:4318", "s", None).is_err());
        assert!(!Exporter::disabled().enabled());
    }
}
