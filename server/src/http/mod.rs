//! The HTTP frontend (KServe V2 REST with Triton's extensions). Handlers
//! decode, call the service, encode — nothing else.

mod card;
pub mod codec;
mod explain;
mod extensions;
pub mod quality;

use std::time::Instant;

use axum::body::Body;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::access::admin::Caller;
use crate::access::{GrantedToken, http_group};
use crate::error::Error;
use crate::metrics::Protocol;
use crate::repository::config::{config_to_json, message_to_json};
use crate::service::{LoadParam, ModelMetadata, Service, TensorMeta};
use crate::trace::{TRACEPARENT, TraceContext};
use switchyard_proto::inference::ModelStatisticsResponse;

/// Header carrying the JSON length of a body with binary tensor data.
pub const HEADER_LEN: &str = "inference-header-content-length";

#[derive(Clone)]
struct AppState {
    service: Service,
    max_body: usize,
    /// This router serves the admin listener.
    admin: bool,
}

/// Who is calling an admin endpoint: peer address, `Authorization`, listener.
struct AdminCaller(Caller);

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(AdminCaller(Caller {
            peer: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.to_string()),
            authorization: parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            admin_listener: state.admin,
            api_token: parts.extensions.get::<GrantedToken>().map(|t| t.0.clone()),
        }))
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.kind.mapping().http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(json!({ "error": self.client_message() }))).into_response()
    }
}

type HttpResult<T> = Result<T, Error>;

/// The HTTP router over `service` (`admin`: the router of the admin listener).
/// Serve it with `into_make_service_with_connect_info::<SocketAddr>()` so the
/// audit trail names the peer.
pub fn router(service: Service, max_body: usize, admin: bool) -> Router {
    let state = AppState {
        service,
        max_body,
        admin,
    };
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/stats", get(all_stats))
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/versions/{version}", get(model_metadata_v))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route("/v2/models/{model}/versions/{version}/ready", get(model_ready_v))
        .route("/v2/models/{model}/config", get(model_config))
        .route("/v2/models/{model}/versions/{version}/config", get(model_config_v))
        .route("/v2/models/{model}/stats", get(model_stats))
        .route("/v2/models/{model}/versions/{version}/stats", get(model_stats_v))
        .route("/v2/models/{model}/infer", post(infer))
        .route("/v2/models/{model}/versions/{version}/infer", post(infer_v))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{model}/load", post(load))
        .route("/v2/repository/models/{model}/unload", post(unload))
        .route("/v2/models/{model}/labels", get(labels))
        .route("/v2/models/{model}/drift", get(drift))
        .route("/v2/models/{model}/versions/{version}/drift", get(drift_v))
        .route("/v2/models/{model}/labels/{label}", put(set_label).delete(delete_label))
        .route("/v2/models/{model}/default", put(set_default))
        .route(
            "/v2/models/{model}/traffic",
            get(traffic).put(set_traffic).delete(clear_traffic),
        )
        .route("/v2/models/{model}/rollback", post(rollback))
        .route("/v2/models/{model}/shadow", get(shadow))
        .merge(extensions::routes())
        .merge(quality::routes())
        .merge(card::routes())
        .merge(explain::routes())
        // After routing (the route decides the group); unknown paths stay 404.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), restrict))
        .fallback(|| async { Error::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            Error::new(
                crate::error::ErrorKind::MethodNotAllowed,
                "the endpoint does not accept this method",
            )
        })
        .with_state(state)
}

/// The access check of the route's API group (`--http-restricted-api`,
/// `--api-token-file`), before the handler reads the body.
async fn restrict(
    State(s): State<AppState>,
    route: MatchedPath,
    mut req: Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(group) = http_group(route.as_str()) {
        let headers = req.headers();
        let lookup = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match s.service.access().check(Protocol::Http, group, lookup) {
            Ok(Some(token)) => {
                req.extensions_mut().insert(GrantedToken(token));
            }
            Ok(None) => {}
            Err(e) => return e.into_response(),
        }
    }
    next.run(req).await
}

async fn live(State(s): State<AppState>) -> Response {
    health(s.service.live(), "live")
}

async fn ready(State(s): State<AppState>) -> Response {
    health(s.service.ready(), "ready")
}

/// 200 when true; 503 when false, so load balancers and probes take it out.
fn health(ok: bool, key: &str) -> Response {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ key: ok }))).into_response()
}

async fn server_metadata(State(s): State<AppState>) -> Json<Value> {
    let m = s.service.server_metadata();
    Json(json!({ "name": m.name, "version": m.version, "extensions": m.extensions }))
}

fn metadata_json(m: ModelMetadata) -> Json<Value> {
    let tensors = |ts: Vec<TensorMeta>| -> Vec<Value> {
        ts.into_iter()
            .map(|t| json!({ "name": t.name, "datatype": t.datatype.as_str(), "shape": t.shape }))
            .collect()
    };
    let params: serde_json::Map<String, Value> = m.parameters.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    Json(json!({
        "name": m.name,
        "versions": m.versions,
        "platform": m.platform,
        "inputs": tensors(m.inputs),
        "outputs": tensors(m.outputs),
        "parameters": params.clone(),
        "properties": params,
    }))
}

async fn model_metadata(State(s): State<AppState>, Path(model): Path<String>) -> HttpResult<Json<Value>> {
    s.service.model_metadata(&model, None).map(metadata_json)
}

async fn model_metadata_v(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> HttpResult<Json<Value>> {
    s.service.model_metadata(&model, Some(&version)).map(metadata_json)
}

fn model_ready_response(s: &AppState, model: &str, version: Option<&str>) -> Response {
    let ready = s.service.model_ready(model, version);
    let status = if ready { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    (status, Json(json!({ "name": model, "ready": ready }))).into_response()
}

async fn model_ready(State(s): State<AppState>, Path(model): Path<String>) -> Response {
    model_ready_response(&s, &model, None)
}

async fn model_ready_v(State(s): State<AppState>, Path((model, version)): Path<(String, String)>) -> Response {
    model_ready_response(&s, &model, Some(&version))
}

async fn model_config(State(s): State<AppState>, Path(model): Path<String>) -> HttpResult<Json<Value>> {
    s.service.model_config(&model, None).map(|c| Json(config_to_json(&c)))
}

async fn model_config_v(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> HttpResult<Json<Value>> {
    s.service
        .model_config(&model, Some(&version))
        .map(|c| Json(config_to_json(&c)))
}

fn stats_json(s: &AppState, model: &str, version: Option<&str>) -> HttpResult<Json<Value>> {
    let model_stats = s.service.model_statistics(model, version)?;
    let resp = ModelStatisticsResponse { model_stats };
    Ok(Json(message_to_json(&resp, "inference.ModelStatisticsResponse")))
}

async fn all_stats(State(s): State<AppState>) -> HttpResult<Json<Value>> {
    stats_json(&s, "", None)
}

async fn model_stats(State(s): State<AppState>, Path(model): Path<String>) -> HttpResult<Json<Value>> {
    stats_json(&s, &model, None)
}

async fn model_stats_v(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> HttpResult<Json<Value>> {
    stats_json(&s, &model, Some(&version))
}

#[derive(Deserialize, Default)]
struct IndexRequest {
    #[serde(default)]
    ready: bool,
}

async fn repository_index(State(s): State<AppState>, BodyBytes(body): BodyBytes) -> HttpResult<Json<Value>> {
    let req: IndexRequest = if body.is_empty() {
        IndexRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| Error::invalid(format!("malformed index request: {e}")))?
    };
    let entries = s.service.repository_index(req.ready)?;
    Ok(Json(Value::Array(
        entries
            .into_iter()
            .map(|e| {
                let mut o = json!({ "name": e.name });
                for (k, v) in [("version", e.version), ("state", e.state), ("reason", e.reason)] {
                    if !v.is_empty() {
                        o[k] = Value::String(v);
                    }
                }
                o
            })
            .collect(),
    )))
}

#[derive(Deserialize, Default)]
struct LoadRequest {
    #[serde(default)]
    parameters: serde_json::Map<String, Value>,
}

async fn load(
    State(s): State<AppState>,
    Path(model): Path<String>,
    AdminCaller(caller): AdminCaller,
    BodyBytes(body): BodyBytes,
) -> HttpResult<Json<Value>> {
    let req: LoadRequest = if body.is_empty() {
        LoadRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| Error::invalid(format!("malformed load request: {e}")))?
    };
    let parameters: Vec<(String, LoadParam)> = req
        .parameters
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(c) => (k, LoadParam::Str(c)),
            _ => (k, LoadParam::Other),
        })
        .collect();
    s.service.load_model(&model, &parameters, &caller).await?;
    Ok(Json(json!({})))
}

async fn unload(
    State(s): State<AppState>,
    Path(model): Path<String>,
    AdminCaller(caller): AdminCaller,
) -> HttpResult<Json<Value>> {
    s.service.unload_model(&model, &caller).await?;
    Ok(Json(json!({})))
}

async fn drift(State(s): State<AppState>, Path(model): Path<String>) -> HttpResult<Json<Value>> {
    let r = s.service.drift_report(&model, None)?;
    Ok(Json(
        serde_json::to_value(r).map_err(|e| Error::internal(e.to_string()))?,
    ))
}

async fn drift_v(State(s): State<AppState>, Path((model, version)): Path<(String, String)>) -> HttpResult<Json<Value>> {
    let r = s.service.drift_report(&model, Some(&version))?;
    Ok(Json(
        serde_json::to_value(r).map_err(|e| Error::internal(e.to_string()))?,
    ))
}

async fn shadow(State(s): State<AppState>, Path(model): Path<String>) -> HttpResult<Json<Value>> {
    Ok(Json(s.service.shadow_report(&model)?))
}

async fn labels(State(s): State<AppState>, Path(model): Path<String>) -> HttpResult<Json<Value>> {
    let l = s.service.labels(&model)?;
    Ok(Json(
        serde_json::to_value(l).map_err(|e| Error::internal(e.to_string()))?,
    ))
}

/// `{"version": "2"}` (a number is accepted too).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionBody {
    version: Value,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    version: Option<Value>,
}

fn version_string(v: &Value) -> HttpResult<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(Error::invalid("'version' must be a string or a number")),
    }
}

fn json_body<T: serde::de::DeserializeOwned + Default>(body: &[u8], empty_ok: bool) -> HttpResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) && empty_ok {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Error::invalid(format!("malformed request body: {e}")))
}

async fn set_label(
    State(s): State<AppState>,
    Path((model, label)): Path<(String, String)>,
    AdminCaller(caller): AdminCaller,
    BodyBytes(body): BodyBytes,
) -> HttpResult<Json<Value>> {
    let b: VersionBody =
        serde_json::from_slice(&body).map_err(|e| Error::invalid(format!("malformed request body: {e}")))?;
    s.service
        .set_label(&model, &label, &version_string(&b.version)?, &caller)
        .await?;
    labels(State(s), Path(model)).await
}

async fn delete_label(
    State(s): State<AppState>,
    Path((model, label)): Path<(String, String)>,
    AdminCaller(caller): AdminCaller,
) -> HttpResult<Json<Value>> {
    s.service.delete_label(&model, &label, &caller).await?;
    labels(State(s), Path(model)).await
}

async fn traffic(State(s): State<AppState>, Path(model): Path<String>) -> HttpResult<Json<Value>> {
    let t = s.service.traffic(&model)?;
    Ok(Json(
        serde_json::to_value(t).map_err(|e| Error::internal(e.to_string()))?,
    ))
}

async fn set_traffic(
    State(s): State<AppState>,
    Path(model): Path<String>,
    AdminCaller(caller): AdminCaller,
    BodyBytes(body): BodyBytes,
) -> HttpResult<Json<Value>> {
    s.service.set_traffic(&model, Some(&body), &caller).await?;
    traffic(State(s), Path(model)).await
}

async fn clear_traffic(
    State(s): State<AppState>,
    Path(model): Path<String>,
    AdminCaller(caller): AdminCaller,
) -> HttpResult<Json<Value>> {
    s.service.set_traffic(&model, None, &caller).await?;
    traffic(State(s), Path(model)).await
}

async fn set_default(
    State(s): State<AppState>,
    Path(model): Path<String>,
    AdminCaller(caller): AdminCaller,
    BodyBytes(body): BodyBytes,
) -> HttpResult<Json<Value>> {
    let b: VersionBody =
        serde_json::from_slice(&body).map_err(|e| Error::invalid(format!("malformed request body: {e}")))?;
    s.service
        .set_default(&model, &version_string(&b.version)?, &caller)
        .await?;
    labels(State(s), Path(model)).await
}

async fn rollback(
    State(s): State<AppState>,
    Path(model): Path<String>,
    AdminCaller(caller): AdminCaller,
    BodyBytes(body): BodyBytes,
) -> HttpResult<Json<Value>> {
    let b: RollbackBody = json_body(&body, true)?;
    let to = b.version.as_ref().map(version_string).transpose()?;
    s.service
        .rollback(&model, b.label.as_deref(), to.as_deref(), &caller)
        .await?;
    labels(State(s), Path(model)).await
}

async fn infer(State(s): State<AppState>, Path(model): Path<String>, req: Request) -> HttpResult<Response> {
    do_infer(s, model, None, req).await
}

async fn infer_v(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    req: Request,
) -> HttpResult<Response> {
    do_infer(s, model, Some(version), req).await
}

async fn do_infer(s: AppState, model: String, version: Option<String>, req: Request) -> HttpResult<Response> {
    let received = Instant::now();
    let header_len = parse_header_len(req.headers())?;
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > s.max_body
    {
        return Err(too_large(s.max_body));
    }
    let trace = req
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse);
    let traffic = traffic_of(&s.service, &req);
    // Moved, not copied: the headers are where a traffic policy's sticky key may be.
    let (parts, body) = req.into_parts();
    let request_headers = std::sync::Arc::new(parts.headers);
    let body = read_body(body, s.max_body).await?;
    let decoded = codec::decode_request(
        body,
        header_len,
        &model,
        version.as_deref(),
        s.service.max_tensor_elements(),
        received,
    );
    let mut decoded = s.service.decoded(Protocol::Http, traffic, decoded)?;
    decoded.request.trace = trace;
    decoded.request.traffic = traffic;
    decoded.request.headers = Some(request_headers);
    let response = s.service.infer(decoded.request).await?;
    let encoded = codec::encode_response(&response, &decoded.format)?;
    let mut resp = Response::new(Body::from(encoded.body));
    let headers = resp.headers_mut();
    match encoded.header_len {
        Some(n) => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(HEADER_LEN, HeaderValue::from(n));
        }
        None => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
    }
    if let Some(value) = response.trace.and_then(|t| HeaderValue::from_str(&t.to_string()).ok()) {
        headers.insert(TRACEPARENT, value);
    }
    if let Ok(value) = HeaderValue::from_str(&response.version) {
        headers.insert(crate::service::ROUTED_TO, value);
    }
    Ok(resp)
}

/// A request body read whole, within the body limit, with errors that say what
/// went wrong: over the limit (413), too slow (408), or malformed or cut short
/// (400) — always as JSON.
struct BodyBytes(axum::body::Bytes);

impl axum::extract::FromRequest<AppState> for BodyBytes {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Error> {
        read_body(req.into_body(), state.max_body).await.map(BodyBytes)
    }
}

/// Production or mirrored: the `Host` header (HTTP/1) or the URI's authority
/// (HTTP/2), and the `--shadow-header`.
fn traffic_of(service: &crate::service::Service, req: &Request) -> crate::service::Traffic {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let marker = headers.get(service.shadow_header()).and_then(|v| v.to_str().ok());
    crate::service::traffic_of(host, marker)
}

async fn read_body(body: Body, limit: usize) -> HttpResult<axum::body::Bytes> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if err.is::<http_body_util::LengthLimitError>() {
                return too_large(limit);
            }
            if err.is::<tower_http::timeout::TimeoutError>() {
                return Error::new(
                    crate::error::ErrorKind::ClientTimeout,
                    "the request body arrived too slowly (--body-read-timeout-secs)",
                );
            }
            source = err.source();
        }
        Error::invalid(format!("malformed or incomplete request body: {e}"))
    })
}

fn too_large(limit: usize) -> Error {
    Error::too_large(format!("request body is larger than the limit of {limit} bytes"))
}

fn parse_header_len(headers: &HeaderMap) -> HttpResult<Option<usize>> {
    headers
        .get(HEADER_LEN)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| Error::invalid("Inference-Header-Content-Length must be a non-negative integer"))
        })
        .transpose()
}
