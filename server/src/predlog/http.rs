//! The CloudEvents HTTP sink, in the format of KServe's payload logger.
//!
//! Each record becomes two binary-mode CloudEvents 1.0, POSTed one after the
//! other to the configured URL with `Content-Type: application/json`:
//!
//! | header                    | value                                                     |
//! |---------------------------|-----------------------------------------------------------|
//! | `Ce-Specversion`          | `1.0`                                                     |
//! | `Ce-Id`                   | the record's id (the same on both events)                 |
//! | `Ce-Type`                 | [`REQUEST_TYPE`], then [`RESPONSE_TYPE`]                  |
//! | `Ce-Source`               | [`PredictionLogSettings::source`]                         |
//! | `Ce-Time`                 | the record's time, RFC 3339                               |
//! | `Ce-Inferenceservicename` | the model name (KServe's extension)                       |
//! | `Ce-Component`            | `predictor` (KServe's extension)                          |
//! | `Ce-Endpoint`             | `default` (KServe's extension; no canaries here)          |
//! | `Ce-Modelversion`         | the model version (Switchyard's extension)                |
//! | `Ce-Outcome`              | `success` or the error label (Switchyard's extension)     |
//! | `Ce-Traceid`              | the trace id, when known (Switchyard's extension)         |
//!
//! Header values are percent-encoded as the CloudEvents HTTP binding asks.
//! A connection error, timeout, 429 or 5xx is retried up to `http_retries`
//! times with exponential backoff (50 ms, 100 ms, ... at most 1 s); another
//! status or exhausted retries drop the record (`reason="sink_error"`). If the
//! request event fails, the response event is not sent. Only `http://` URLs
//! are supported (the server is built without TLS).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use super::json::{RequestBody, ResponseBody, rfc3339_micros};
use super::{Job, PredictionLogSettings, Sink, Stats, Warner};

/// `Ce-Type` of the request event.
pub const REQUEST_TYPE: &str = "org.kubeflow.serving.inference.request";
/// `Ce-Type` of the response event.
pub const RESPONSE_TYPE: &str = "org.kubeflow.serving.inference.response";

const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The validated settings of the HTTP sink.
pub(crate) struct HttpSinkConfig {
    url: reqwest::Url,
    source: String,
    retries: u32,
    timeout: Duration,
    extra_ca: Option<Vec<u8>>,
}

impl HttpSinkConfig {
    pub(crate) fn new(url: &str, settings: &PredictionLogSettings) -> anyhow::Result<Self> {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| anyhow::anyhow!("invalid prediction log URL '{url}': {e}"))?;
        anyhow::ensure!(
            matches!(parsed.scheme(), "http" | "https"),
            "prediction log URL '{url}': only http:// and https:// are supported"
        );
        Ok(HttpSinkConfig {
            url: parsed,
            source: settings.source.clone(),
            retries: settings.http_retries,
            timeout: settings.http_timeout,
            extra_ca: settings.extra_ca.clone(),
        })
    }
}

pub(crate) struct HttpSink {
    config: HttpSinkConfig,
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    stats: Arc<Stats>,
    warner: Warner,
}

impl HttpSink {
    /// Builds the sink's own current-thread runtime and client (on the sink's thread).
    pub(crate) fn new(config: HttpSinkConfig, stats: Arc<Stats>) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = {
            let _guard = runtime.enter();
            crate::net::tls::sink_client(config.extra_ca.as_deref())?
                .connect_timeout(config.timeout)
                .pool_max_idle_per_host(2)
                .build()?
        };
        Ok(HttpSink {
            config,
            runtime,
            client,
            stats,
            warner: Warner::new("http"),
        })
    }

    fn headers(&self, job: &Job, ce_type: &'static str) -> HeaderMap {
        let r = &job.record;
        let mut h = HeaderMap::with_capacity(13);
        let mut put = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(&percent_encode(value)) {
                h.insert(HeaderName::from_static(name), v);
            }
        };
        put("ce-specversion", "1.0");
        put("ce-id", &r.id);
        put("ce-type", ce_type);
        put("ce-source", &self.config.source);
        put("ce-time", &rfc3339_micros(r.time));
        put("ce-inferenceservicename", &r.model);
        put("ce-component", "predictor");
        put("ce-endpoint", "default");
        put("ce-modelversion", &r.version);
        // Extension attribute of mirrored requests only (as the JSONL `traffic` field).
        if r.traffic == crate::metrics::Traffic::Shadow {
            put("ce-traffic", r.traffic.label());
        }
        put(
            "ce-outcome",
            match &r.outcome {
                Ok(()) => "success",
                Err((kind, _)) => kind.mapping().label,
            },
        );
        if let Some(trace) = &r.trace_id {
            put("ce-traceid", trace);
        }
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h
    }

    /// POSTs one event, retrying transient failures.
    async fn send(&self, headers: HeaderMap, body: Bytes) -> Result<(), String> {
        let mut backoff = BACKOFF_START;
        let mut attempt = 0;
        loop {
            let result = self
                .client
                .post(self.config.url.clone())
                .headers(headers.clone())
                .body(body.clone())
                .timeout(self.config.timeout)
                .send()
                .await;
            let error = match result {
                Ok(resp) if resp.status().is_success() => return Ok(()),
                Ok(resp) => {
                    let status = resp.status();
                    if !(status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS) {
                        return Err(format!("{}: HTTP {status}", self.config.url));
                    }
                    format!("{}: HTTP {status}", self.config.url)
                }
                Err(e) => format!("{}: {e}", self.config.url),
            };
            if attempt >= self.config.retries {
                return Err(format!("{error} (after {} attempts)", attempt + 1));
            }
            attempt += 1;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

impl Sink for HttpSink {
    fn handle(&mut self, job: &Job) {
        let bodies =
            serde_json::to_vec(&RequestBody(job)).and_then(|req| Ok((req, serde_json::to_vec(&ResponseBody(job))?)));
        let (request, response) = match bodies {
            Ok(b) => b,
            Err(e) => {
                self.stats.drop_one("sink_error");
                self.warner.warn(&e);
                return;
            }
        };
        let request_headers = self.headers(job, REQUEST_TYPE);
        let response_headers = self.headers(job, RESPONSE_TYPE);
        let result = self.runtime.block_on(async {
            self.send(request_headers, Bytes::from(request)).await?;
            self.send(response_headers, Bytes::from(response)).await
        });
        match result {
            Ok(()) => self.stats.wrote("http"),
            Err(e) => {
                self.stats.drop_one("sink_error");
                self.warner.warn(&e);
            }
        }
    }

    fn flush(&mut self) {}
}

/// Percent-encodes what the CloudEvents HTTP binding asks for in header
/// values: anything outside printable ASCII, space, `"` and `%`.
fn percent_encode(value: &str) -> std::borrow::Cow<'_, str> {
    let plain = |b: u8| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'%';
    if value.bytes().all(plain) {
        return value.into();
    }
    let mut out = String::with_capacity(value.len() + 8);
    for b in value.bytes() {
        if plain(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::percent_encode;

    #[test]
    fn header_values_are_percent_encoded() {
        assert_eq!(percent_encode("model_1.v2"), "model_1.v2");
        assert_eq!(percent_encode("a b\"%é"), "a%20b%22%25%C3%A9");
    }
}
