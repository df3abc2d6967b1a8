//! `GET /v2/models/{model}/card`: the model card of a loaded model, parsed
//! (title, recognised sections, owners, what is missing) and as written.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{AppState, HttpResult};
use crate::service::card::ModelCard;

/// The card route (merged into the main router before its access layer).
pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/v2/models/{model}/card", get(card))
}

async fn card(State(s): State<AppState>, Path(model): Path<String>) -> HttpResult<Json<Value>> {
    let card = s.service.model_card(&model)?;
    Ok(Json(card_json(&model, &card)))
}

/// The endpoint's JSON of `card`.
fn card_json(model: &str, card: &ModelCard) -> Value {
    let mut v = json!({
        "model": model,
        "file": card.file,
        "format": card.format.name(),
        "sha256": card.sha256,
        "title": card.title,
        "sections": card.sections,
        "owners": card.owners,
        "missing": card.missing(),
        "content": card.content,
    });
    if !card.extra.is_empty() {
        v["other"] = Value::Object(card.extra.clone());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_has_every_part() {
        let card = ModelCard::parse("model_card.md", b"# T\n## Evaluation\ngood\n## Notes\nn\n").unwrap();
        let v = card_json("m", &card);
        assert_eq!(v["model"], "m");
        assert_eq!(v["format"], "markdown");
        assert_eq!(v["title"], "T");
        assert_eq!(v["sections"]["evaluation"], "good");
        assert_eq!(v["owners"], json!([]));
        assert_eq!(v["missing"][0], "intended_use");
        assert_eq!(v["other"]["Notes"], "n");
        assert_eq!(v["sha256"], card.sha256);
        assert!(v["content"].as_str().unwrap().starts_with("# T"));
    }
}
