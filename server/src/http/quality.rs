//! Ground-truth feedback and the quality and fairness reports over HTTP
//! (Switchyard's own endpoints; KServe V2 has none):
//!
//! - `POST /v2/models/{m}/feedback` — `{"id": "...", "label": 1}`, or
//!   `{"feedback": [{"id": "...", "label": [0, 1]}, {"id": "...", "value": 2.5}]}`:
//!   one label (class index) or value per row of the request that `id`
//!   answered. 200 with a result per entry (`joined`, `unknown`, `expired`,
//!   `duplicate`, `rows_mismatch`, `retired`).
//! - `GET /v2/models/{m}[/versions/{v}]/quality` — the version's live quality and fairness.
//! - `GET /v2/models/{m}[/versions/{v}]/fairness` — the fairness section alone.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{AppState, BodyBytes, HttpResult};
use crate::error::Error;
use crate::quality::{Feedback, MAX_ROWS, Truth};
use crate::service::quality::MAX_FEEDBACK_ENTRIES;

/// The routes (merged into the main router before its access layer).
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/models/{model}/feedback", post(feedback))
        .route("/v2/models/{model}/quality", get(quality))
        .route("/v2/models/{model}/versions/{version}/quality", get(quality_v))
        .route("/v2/models/{model}/fairness", get(fairness))
        .route("/v2/models/{model}/versions/{version}/fairness", get(fairness_v))
}

async fn feedback(
    State(s): State<AppState>,
    Path(model): Path<String>,
    BodyBytes(body): BodyBytes,
) -> HttpResult<Json<Value>> {
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| Error::invalid(format!("malformed feedback body: {e}")))?;
    let entries = parse_feedback(&value)?;
    let report = s.service.feedback(&model, entries).await?;
    Ok(Json(
        serde_json::to_value(report).map_err(|e| Error::internal(e.to_string()))?,
    ))
}

/// The body's entries: one object, or `{"feedback": [...]}`.
pub fn parse_feedback(value: &Value) -> Result<Vec<Feedback>, Error> {
    let items: Vec<&Value> = match value.get("feedback") {
        Some(Value::Array(a)) => {
            if a.len() > MAX_FEEDBACK_ENTRIES {
                return Err(Error::too_large(format!(
                    "feedback holds {} entries; at most {MAX_FEEDBACK_ENTRIES} per call",
                    a.len()
                )));
            }
            a.iter().collect()
        }
        Some(_) => return Err(Error::invalid("'feedback' must be an array of entries")),
        None if value.is_object() => vec![value],
        None => return Err(Error::invalid("feedback must be a JSON object")),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| entry(item).map_err(|e| Error::invalid(format!("feedback entry {i}: {e}"))))
        .collect()
}

fn entry(item: &Value) -> Result<Feedback, String> {
    let id = item
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or("needs 'id', the inference request's id (a non-empty string)")?;
    let (field, truth) = match (item.get("label"), item.get("value")) {
        (Some(l), None) => ("label", l),
        (None, Some(v)) => ("value", v),
        (Some(_), Some(_)) => return Err("give 'label' or 'value', not both".into()),
        (None, None) => return Err("needs 'label' (a class index) or 'value' (a number), or an array of them".into()),
    };
    let values: Vec<&Value> = match truth {
        Value::Array(a) if a.is_empty() => return Err(format!("'{field}' is an empty array")),
        Value::Array(a) if a.len() > MAX_ROWS => return Err(format!("'{field}' has more than {MAX_ROWS} rows")),
        Value::Array(a) => a.iter().collect(),
        v => vec![v],
    };
    let truths = values
        .into_iter()
        .map(|v| match field {
            "label" => v
                .as_u64()
                .and_then(|c| usize::try_from(c).ok())
                .map(Truth::Class)
                .ok_or_else(|| format!("'label' must be a non-negative integer (a class index), got {v}")),
            _ => v
                .as_f64()
                .filter(|x| x.is_finite())
                .map(Truth::Value)
                .ok_or_else(|| format!("'value' must be a finite number, got {v}")),
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Feedback {
        id: id.to_string(),
        truths,
    })
}

async fn quality(State(s): State<AppState>, Path(model): Path<String>) -> HttpResult<Json<Value>> {
    report(&s, &model, None, false)
}

async fn quality_v(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> HttpResult<Json<Value>> {
    report(&s, &model, Some(&version), false)
}

async fn fairness(State(s): State<AppState>, Path(model): Path<String>) -> HttpResult<Json<Value>> {
    report(&s, &model, None, true)
}

async fn fairness_v(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> HttpResult<Json<Value>> {
    report(&s, &model, Some(&version), true)
}

fn report(s: &AppState, model: &str, version: Option<&str>, fairness_only: bool) -> HttpResult<Json<Value>> {
    let r = s.service.quality_report(model, version)?;
    if fairness_only {
        let Some(f) = r.fairness else {
            return Err(Error::new(
                crate::error::ErrorKind::FailedPrecondition,
                format!(
                    "fairness monitoring is off for model '{model}': set fairness.attribute and the favourable outcome"
                ),
            ));
        };
        let mut v = serde_json::to_value(f).map_err(|e| Error::internal(e.to_string()))?;
        v["model_name"] = json!(r.model_name);
        v["model_version"] = json!(r.model_version);
        return Ok(Json(v));
    }
    Ok(Json(
        serde_json::to_value(r).map_err(|e| Error::internal(e.to_string()))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_or_many_with_clear_errors() {
        let one = parse_feedback(&json!({"id": "a", "label": 1})).unwrap();
        assert_eq!(one[0].truths, [Truth::Class(1)]);
        let many =
            parse_feedback(&json!({"feedback": [{"id": "a", "label": [0, 2]}, {"id": "b", "value": 2.5}]})).unwrap();
        assert_eq!(many[0].truths, [Truth::Class(0), Truth::Class(2)]);
        assert_eq!(many[1].truths, [Truth::Value(2.5)]);
        for (body, needle) in [
            (json!({"label": 1}), "needs 'id'"),
            (json!({"id": "", "label": 1}), "needs 'id'"),
            (json!({"id": "a"}), "needs 'label'"),
            (json!({"id": "a", "label": 1, "value": 2}), "not both"),
            (json!({"id": "a", "label": -1}), "non-negative integer"),
            (json!({"id": "a", "label": 1.5}), "non-negative integer"),
            (json!({"id": "a", "value": "x"}), "finite number"),
            (json!({"id": "a", "label": []}), "empty array"),
            (json!({"feedback": {}}), "must be an array"),
            (json!([1]), "JSON object"),
        ] {
            let e = parse_feedback(&body).unwrap_err();
            assert!(e.message.contains(needle), "{body}: {}", e.message);
        }
        let huge: Vec<Value> = (0..=MAX_FEEDBACK_ENTRIES)
            .map(|_| json!({"id": "a", "label": 0}))
            .collect();
        let e = parse_feedback(&json!({ "feedback": huge })).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::TooLarge);
    }
}
