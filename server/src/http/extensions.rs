//! Triton's extension endpoints that Switchyard answers without offering the
//! feature, as its gRPC frontend does: shared-memory status lists no region,
//! unregistering is a no-op and registering is refused (501); trace and
//! logging settings read as none and cannot be changed. Triton's clients call
//! these (`get_system_shared_memory_status`, `get_trace_settings`, ...) and
//! expect JSON, not 404.

use axum::Json;
use axum::Router;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::{AppState, BodyBytes, HttpResult};
use crate::error::Error;
use crate::service::{runtime_settings, shared_memory_refused};

/// The extension routes (merged into the main router before its access layer).
pub(super) fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for (prefix, cuda) in [("/v2/systemsharedmemory", false), ("/v2/cudasharedmemory", true)] {
        let refuse = move || async move { shared_memory_refused(cuda) };
        router = router
            .route(&format!("{prefix}/status"), get(no_regions))
            .route(&format!("{prefix}/region/{{region}}/status"), get(no_regions))
            .route(&format!("{prefix}/region/{{region}}/register"), post(refuse))
            .route(&format!("{prefix}/unregister"), post(unregistered))
            .route(&format!("{prefix}/region/{{region}}/unregister"), post(unregistered));
    }
    router
        .route("/v2/trace/setting", get(no_settings).post(trace_update))
        .route("/v2/models/{model}/trace/setting", get(no_settings).post(trace_update))
        .route("/v2/logging", get(no_settings).post(log_update))
}

async fn no_regions() -> Json<Value> {
    Json(json!([]))
}

async fn unregistered() -> Json<Value> {
    Json(json!({}))
}

async fn no_settings() -> Json<Value> {
    Json(json!({}))
}

/// The number of settings a settings update asks to change (an empty body or `{}`: none).
fn changes(body: &[u8]) -> HttpResult<usize> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(0);
    }
    let settings: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| Error::invalid(format!("malformed settings request: {e}")))?;
    Ok(settings.len())
}

async fn trace_update(BodyBytes(body): BodyBytes) -> HttpResult<Json<Value>> {
    runtime_settings("trace", changes(&body)?)?;
    Ok(Json(json!({})))
}

async fn log_update(BodyBytes(body): BodyBytes) -> HttpResult<Json<Value>> {
    runtime_settings("log", changes(&body)?)?;
    Ok(Json(json!({})))
}
