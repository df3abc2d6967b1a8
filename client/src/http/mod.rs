//! The HTTP/REST client (KServe V2 with Triton's extensions).

pub(crate) mod codec;

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, RequestBuilder, Url};
use serde_json::{Value, json};

use crate::options::resolve_scheme;
use crate::{ClientError, ClientOptions, InferOptions, InferResult, Tensor, TimeoutPhase};

/// A client of one server's HTTP endpoint. Cheap to clone (connections are
/// pooled and shared between clones).
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    base: Url,
    /// Sent as `Authorization: Bearer` on every request (admin operations).
    token: Option<String>,
    /// Sent on every request (see [`HttpClient::with_header`]).
    headers: std::sync::Arc<HeaderMap>,
    /// The configured timeouts, to name the one that expired.
    connect_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
}

impl HttpClient {
    /// A client for `base_url` (`"http://127.0.0.1:8000"`, or without scheme
    /// `"127.0.0.1:8000"`; a path prefix is kept) with the default
    /// [`ClientOptions`]. Connects directly: proxy environment variables are
    /// ignored, as Triton's clients do.
    pub fn new(base_url: &str) -> Result<HttpClient, ClientError> {
        HttpClient::with_options(base_url, &ClientOptions::default())
    }

    /// A client for `base_url` with `options`: timeouts, and TLS for an
    /// `https://` URL (or one without a scheme when TLS options are set; see
    /// [`TlsOptions`](crate::TlsOptions)). The TLS options are checked here:
    /// unreadable PEM data is an [`ClientError::InvalidArgument`].
    pub fn with_options(base_url: &str, options: &ClientOptions) -> Result<HttpClient, ClientError> {
        let (with_scheme, use_tls) = resolve_scheme(base_url, &options.tls)?;
        let invalid = |why: String| ClientError::Transport(format!("invalid URL '{base_url}': {why}"));
        let base = Url::parse(&with_scheme).map_err(|e| invalid(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(invalid("not an http:// or https:// URL".into()));
        }
        let mut builder = reqwest::Client::builder().no_proxy();
        if let Some(t) = options.connect_timeout {
            builder = builder.connect_timeout(t);
        }
        if let Some(t) = options.request_timeout {
            builder = builder.timeout(t);
        }
        if use_tls {
            builder = builder.use_preconfigured_tls(crate::tls::rustls_config(&options.tls)?);
        }
        let client = builder.build().map_err(|e| ClientError::transport(&e))?;
        Ok(HttpClient {
            client,
            base,
            token: None,
            headers: Default::default(),
            connect_timeout: options.connect_timeout,
            request_timeout: options.request_timeout,
        })
    }

    /// A reqwest error as a [`ClientError`]: [`ClientError::Timeout`] when one
    /// of the configured timeouts expired.
    fn error(&self, e: reqwest::Error) -> ClientError {
        if e.is_timeout() {
            let timeout = if e.is_connect() {
                self.connect_timeout.map(|d| (TimeoutPhase::Connect, d))
            } else {
                self.request_timeout.map(|d| (TimeoutPhase::Request, d))
            };
            if let Some((phase, after)) = timeout {
                return ClientError::Timeout { phase, after };
            }
        }
        ClientError::transport(&e)
    }

    /// The same client, sending `Authorization: Bearer <token>` (the server's
    /// admin token, needed for load, unload, labels and rollback when set).
    pub fn with_admin_token(mut self, token: &str) -> HttpClient {
        self.token = Some(token.to_string());
        self
    }

    /// The same client, sending the header `name: value` on every request
    /// (e.g. the header of a Triton restricted API, `--http-restricted-api`).
    pub fn with_header(mut self, name: &str, value: &str) -> Result<HttpClient, ClientError> {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ClientError::InvalidArgument(format!("'{name}' is not a valid header name")))?;
        let mut value = reqwest::header::HeaderValue::from_str(value)
            .map_err(|_| ClientError::InvalidArgument(format!("the value of '{name}' is not a valid header value")))?;
        // Values may be secrets: `Debug` does not show them.
        value.set_sensitive(true);
        std::sync::Arc::make_mut(&mut self.headers).insert(name, value);
        Ok(self)
    }

    /// The base URL with `segments` appended, each percent-encoded.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked in new(): the base URL is http(s)")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// `v2/models/{model}[/versions/{version}]` followed by `tail`.
    fn model_url(&self, model: &str, version: Option<&str>, tail: &[&str]) -> Url {
        let mut segments = vec!["v2", "models", model];
        if let Some(v) = version {
            segments.extend(["versions", v]);
        }
        segments.extend(tail);
        self.url(&segments)
    }

    /// The base URL joined with a literal `path` (not encoded).
    fn raw_url(&self, path: &str) -> Result<Url, ClientError> {
        let base = self.base.as_str().trim_end_matches('/');
        let sep = if path.starts_with('/') { "" } else { "/" };
        Url::parse(&format!("{base}{sep}{path}"))
            .map_err(|e| ClientError::Transport(format!("invalid path '{path}': {e}")))
    }

    async fn send(&self, request: RequestBuilder) -> Result<(u16, HeaderMap, Bytes), ClientError> {
        let request = if self.headers.is_empty() {
            request
        } else {
            request.headers(HeaderMap::clone(&self.headers))
        };
        let request = match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let response = request.send().await.map_err(|e| self.error(e))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| self.error(e))?;
        Ok((status, headers, body))
    }

    /// Sends a request and returns its body, or the server's error.
    async fn call(&self, request: RequestBuilder) -> Result<(HeaderMap, Bytes), ClientError> {
        let (status, headers, body) = self.send(request).await?;
        if (200..300).contains(&status) {
            Ok((headers, body))
        } else {
            Err(ClientError::Http {
                status,
                message: codec::error_message(&body),
            })
        }
    }

    async fn get_json(&self, url: Url) -> Result<Value, ClientError> {
        let (_, body) = self.call(self.client.get(url)).await?;
        parse_json(&body)
    }

    async fn post_json(&self, url: Url, body: &Value) -> Result<Bytes, ClientError> {
        let request = self.client.post(url).json(body);
        Ok(self.call(request).await?.1)
    }

    async fn status_is_ok(&self, url: Url) -> Result<bool, ClientError> {
        let (status, _, _) = self.send(self.client.get(url)).await?;
        Ok(status == 200)
    }

    /// `GET /v2/health/live`: true iff the server answers 200.
    pub async fn live(&self) -> Result<bool, ClientError> {
        self.status_is_ok(self.url(&["v2", "health", "live"])).await
    }

    /// `GET /v2/health/ready`: true iff the server answers 200.
    pub async fn ready(&self) -> Result<bool, ClientError> {
        self.status_is_ok(self.url(&["v2", "health", "ready"])).await
    }

    /// `GET /v2/models/{model}[/versions/{version}]/ready`: true iff 200.
    pub async fn model_ready(&self, model: &str, version: Option<&str>) -> Result<bool, ClientError> {
        self.status_is_ok(self.model_url(model, version, &["ready"])).await
    }

    /// `GET /v2`: name, version and extensions.
    pub async fn server_metadata(&self) -> Result<Value, ClientError> {
        self.get_json(self.url(&["v2"])).await
    }

    /// `GET /v2/models/{model}[/versions/{version}]`.
    pub async fn model_metadata(&self, model: &str, version: Option<&str>) -> Result<Value, ClientError> {
        self.get_json(self.model_url(model, version, &[])).await
    }

    /// `GET /v2/models/{model}[/versions/{version}]/config`.
    pub async fn model_config(&self, model: &str, version: Option<&str>) -> Result<Value, ClientError> {
        self.get_json(self.model_url(model, version, &["config"])).await
    }

    /// `GET /v2/models[/{model}[/versions/{version}]]/stats`; `version` is
    /// ignored without a `model`.
    pub async fn statistics(&self, model: Option<&str>, version: Option<&str>) -> Result<Value, ClientError> {
        let url = match model {
            Some(m) => self.model_url(m, version, &["stats"]),
            None => self.url(&["v2", "models", "stats"]),
        };
        self.get_json(url).await
    }

    /// `POST /v2/repository/index`: the models of the repository (only the
    /// ready ones with `ready_only`).
    pub async fn repository_index(&self, ready_only: bool) -> Result<Value, ClientError> {
        let body = self
            .post_json(
                self.url(&["v2", "repository", "index"]),
                &json!({ "ready": ready_only }),
            )
            .await?;
        parse_json(&body)
    }

    /// `POST /v2/repository/models/{model}/load`, with an optional JSON model
    /// configuration that overrides the repository's.
    pub async fn load_model(&self, model: &str, config_json: Option<&str>) -> Result<(), ClientError> {
        let body = match config_json {
            Some(config) => json!({ "parameters": { "config": config } }),
            None => json!({}),
        };
        let url = self.url(&["v2", "repository", "models", model, "load"]);
        self.post_json(url, &body).await.map(drop)
    }

    /// `POST /v2/repository/models/{model}/unload`.
    pub async fn unload_model(&self, model: &str) -> Result<(), ClientError> {
        let url = self.url(&["v2", "repository", "models", model, "unload"]);
        self.post_json(url, &json!({})).await.map(drop)
    }

    /// `GET /v2/models/{model}/labels`: versions, default route, labels.
    pub async fn labels(&self, model: &str) -> Result<Value, ClientError> {
        self.get_json(self.url(&["v2", "models", model, "labels"])).await
    }

    /// `PUT /v2/models/{model}/labels/{label}`: points a label at a loaded version.
    pub async fn set_label(&self, model: &str, label: &str, version: &str) -> Result<Value, ClientError> {
        let url = self.url(&["v2", "models", model, "labels", label]);
        let (_, body) = self
            .call(self.client.put(url).json(&json!({ "version": version })))
            .await?;
        parse_json(&body)
    }

    /// `DELETE /v2/models/{model}/labels/{label}`.
    pub async fn delete_label(&self, model: &str, label: &str) -> Result<Value, ClientError> {
        let url = self.url(&["v2", "models", model, "labels", label]);
        let (_, body) = self.call(self.client.delete(url)).await?;
        parse_json(&body)
    }

    /// `GET /v2/models/{model}/card`: the model card (format, digest, title,
    /// sections, owners, missing sections and the file's text).
    pub async fn model_card(&self, model: &str) -> Result<Value, ClientError> {
        self.get_json(self.url(&["v2", "models", model, "card"])).await
    }

    /// `GET /v2/models/{model}/traffic`: the effective traffic policy and its
    /// source (`file`, `override` or `none`).
    pub async fn traffic(&self, model: &str) -> Result<Value, ClientError> {
        self.get_json(self.url(&["v2", "models", model, "traffic"])).await
    }

    /// `GET /v2/models/{model}/shadow`: the shadow experiment's report.
    pub async fn shadow_report(&self, model: &str) -> Result<Value, ClientError> {
        self.get_json(self.url(&["v2", "models", model, "shadow"])).await
    }

    /// `POST /v2/models/{model}/feedback`: ground truth for earlier requests,
    /// `{"id": ..., "label": ...}` or `{"feedback": [...]}`; the result per entry.
    pub async fn feedback(&self, model: &str, body: &Value) -> Result<Value, ClientError> {
        let url = self.url(&["v2", "models", model, "feedback"]);
        let (_, body) = self.call(self.client.post(url).json(body)).await?;
        parse_json(&body)
    }

    /// `GET /v2/models/{model}[/versions/{version}]/quality`: live quality and fairness.
    pub async fn quality(&self, model: &str, version: Option<&str>) -> Result<Value, ClientError> {
        self.get_json(self.model_url(model, version, &["quality"])).await
    }

    /// `GET /v2/models/{model}[/versions/{version}]/fairness`: the fairness figures per group.
    pub async fn fairness(&self, model: &str, version: Option<&str>) -> Result<Value, ClientError> {
        self.get_json(self.model_url(model, version, &["fairness"])).await
    }

    /// `PUT /v2/models/{model}/traffic`: overrides the traffic policy with
    /// `policy` (the structure of `traffic.yaml`, as JSON).
    pub async fn set_traffic(&self, model: &str, policy: &Value) -> Result<Value, ClientError> {
        let url = self.url(&["v2", "models", model, "traffic"]);
        let (_, body) = self.call(self.client.put(url).json(policy)).await?;
        parse_json(&body)
    }

    /// `DELETE /v2/models/{model}/traffic`: clears the override (back to the file).
    pub async fn clear_traffic(&self, model: &str) -> Result<Value, ClientError> {
        let url = self.url(&["v2", "models", model, "traffic"]);
        let (_, body) = self.call(self.client.delete(url)).await?;
        parse_json(&body)
    }

    /// `PUT /v2/models/{model}/default`: pins the default route to a version,
    /// or `"latest"` to follow the newest again.
    pub async fn set_default(&self, model: &str, version: &str) -> Result<Value, ClientError> {
        let url = self.url(&["v2", "models", model, "default"]);
        let (_, body) = self
            .call(self.client.put(url).json(&json!({ "version": version })))
            .await?;
        parse_json(&body)
    }

    /// `POST /v2/models/{model}/rollback`: points the default route (or
    /// `label`) back to `version`, or to the previous version when `None`.
    pub async fn rollback(
        &self,
        model: &str,
        label: Option<&str>,
        version: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut body = serde_json::Map::new();
        if let Some(l) = label {
            body.insert("label".into(), json!(l));
        }
        if let Some(v) = version {
            body.insert("version".into(), json!(v));
        }
        let bytes = self
            .post_json(self.url(&["v2", "models", model, "rollback"]), &Value::Object(body))
            .await?;
        parse_json(&bytes)
    }

    /// `POST /v2/models/{model}[/versions/{version}]/infer`, with inputs and
    /// outputs encoded as `opts` asks.
    pub async fn infer(&self, model: &str, inputs: &[Tensor], opts: &InferOptions) -> Result<InferResult, ClientError> {
        let encoded = codec::encode_request(inputs, opts)?;
        let version = opts.model_version.as_deref();
        let (headers, body) = self
            .infer_encoded(model, version, encoded.body.into(), encoded.header_len)
            .await?;
        let header_len = match headers.get(codec::HEADER_LEN) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|s| s.trim().parse::<usize>().ok())
                    .ok_or_else(|| ClientError::Decode(format!("invalid Inference-Header-Content-Length {v:?}")))?,
            ),
        };
        codec::decode_response(&body, header_len)
    }

    /// `POST /v2/models/{model}[/versions/{version}]/explain` (Switchyard's
    /// explanation endpoint): `inputs` hold one row; the settings (`method`,
    /// `input`, `output`, `target`, `max_evaluations`, `timeout_ms`, `seed`)
    /// travel in `opts.parameters`. Returns the explanation's JSON.
    pub async fn explain(&self, model: &str, inputs: &[Tensor], opts: &InferOptions) -> Result<Value, ClientError> {
        let encoded = codec::encode_request(inputs, opts)?;
        let url = self.model_url(model, opts.model_version.as_deref(), &["explain"]);
        let mut request = self.client.post(url);
        request = match encoded.header_len {
            Some(n) => request
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(codec::HEADER_LEN, n),
            None => request.header(CONTENT_TYPE, "application/json"),
        };
        let (_, body) = self.call(request.body(encoded.body)).await?;
        parse_json(&body)
    }

    /// `POST .../infer` with a body from [`codec::encode_request`] (JSON, and
    /// binary inputs after `header_len` bytes); the response's headers and
    /// body come back undecoded. The load generator encodes once and sends
    /// the same body many times.
    pub(crate) async fn infer_encoded(
        &self,
        model: &str,
        version: Option<&str>,
        body: Bytes,
        header_len: Option<usize>,
    ) -> Result<(HeaderMap, Bytes), ClientError> {
        let mut request = self.client.post(self.model_url(model, version, &["infer"]));
        request = match header_len {
            Some(n) => request
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(codec::HEADER_LEN, n),
            None => request.header(CONTENT_TYPE, "application/json"),
        };
        self.call(request.body(body)).await
    }

    /// Sends an arbitrary POST (for tests of malformed requests): returns
    /// status, headers and body, whatever the status. `path` is appended to
    /// the base URL as is (e.g. `"/v2/models/simple/infer"`).
    pub async fn post_raw(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(u16, HeaderMap, Bytes), ClientError> {
        let mut request = self.client.request(Method::POST, self.raw_url(path)?);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request.body(body)).await
    }

    /// Sends an arbitrary GET: returns status and body, whatever the status.
    pub async fn get_raw(&self, path: &str) -> Result<(u16, Bytes), ClientError> {
        let (status, _, body) = self.send(self.client.get(self.raw_url(path)?)).await?;
        Ok((status, body))
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::Decode(format!("malformed JSON response: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_accept_a_missing_scheme_and_encode_names() {
        let c = HttpClient::new("127.0.0.1:8000").unwrap();
        assert_eq!(
            c.url(&["v2", "health", "live"]).as_str(),
            "http://127.0.0.1:8000/v2/health/live"
        );
        assert_eq!(
            c.model_url("a b/c", Some("2"), &["infer"]).as_str(),
            "http://127.0.0.1:8000/v2/models/a%20b%2Fc/versions/2/infer"
        );
        let c = HttpClient::new("http://localhost:8000/prefix/").unwrap();
        assert_eq!(
            c.model_url("m", None, &["ready"]).as_str(),
            "http://localhost:8000/prefix/v2/models/m/ready"
        );
        assert_eq!(c.raw_url("v2").unwrap().as_str(), "http://localhost:8000/prefix/v2");
        let c = HttpClient::new("localhost:8000").unwrap();
        assert_eq!(
            c.raw_url("/v2/models/m/infer").unwrap().as_str(),
            "http://localhost:8000/v2/models/m/infer"
        );
        assert!(matches!(HttpClient::new("ftp://host/"), Err(ClientError::Transport(_))));
        assert!(matches!(HttpClient::new("http://"), Err(ClientError::Transport(_))));
    }
}
