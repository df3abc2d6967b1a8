//! `POST /v2/models/{model}[/versions/{version}]/explain`: KServe V1 has
//! `:explain`, V2 has no explanation API, so the shape is Switchyard's own:
//! the body is a V2 inference request (JSON, or with binary tensor data)
//! holding one row, its `parameters` the explanation's settings; the answer
//! is the service's [`crate::service::explain::ExplainResponse`] as JSON.

use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::routing::post;

use super::{AppState, HttpResult, codec, parse_header_len, read_body};
use crate::service::explain::ExplainResponse;

/// The explanation routes (merged into the main router before its access layer).
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/models/{model}/explain", post(explain))
        .route("/v2/models/{model}/versions/{version}/explain", post(explain_v))
}

async fn explain(
    State(s): State<AppState>,
    Path(model): Path<String>,
    req: Request,
) -> HttpResult<Json<ExplainResponse>> {
    do_explain(s, model, None, req).await
}

async fn explain_v(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    req: Request,
) -> HttpResult<Json<ExplainResponse>> {
    do_explain(s, model, Some(version), req).await
}

async fn do_explain(
    s: AppState,
    model: String,
    version: Option<String>,
    req: Request,
) -> HttpResult<Json<ExplainResponse>> {
    let received = Instant::now();
    let header_len = parse_header_len(req.headers())?;
    let body = read_body(req.into_body(), s.max_body).await?;
    let decoded = codec::decode_request(
        body,
        header_len,
        &model,
        version.as_deref(),
        s.service.max_tensor_elements(),
        received,
    )?;
    Ok(Json(s.service.explain(decoded.request).await?))
}
