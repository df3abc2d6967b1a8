//! Model cards through the service: the card of a loaded model, and its
//! summary in the model's metadata `properties`.

use std::sync::Arc;

use super::Service;
use crate::error::{Error, Result};
use crate::registry::ModelEntry;
pub use crate::repository::card::ModelCard;
use crate::repository::card::{CARD_JSON, CARD_MARKDOWN};

/// Longest `model_card_intended_use` property, in characters.
pub const INTENDED_USE_CHARS: usize = 200;

impl Service {
    /// The model card of a loaded model (404 when the model is not loaded or has no card).
    pub fn model_card(&self, model: &str) -> Result<Arc<ModelCard>> {
        let entry = self
            .inner
            .registry
            .get(model)
            .ok_or_else(|| crate::registry::unknown_model(model))?;
        entry.card.clone().ok_or_else(|| {
            Error::not_found(format!(
                "model '{model}' has no model card (add {CARD_MARKDOWN} or {CARD_JSON} beside its versions)"
            ))
        })
    }
}

/// The card's summary as metadata properties: digest, title, owners and
/// the first line of the intended use (none without a card).
pub fn properties(entry: &ModelEntry) -> Vec<(String, String)> {
    let Some(card) = &entry.card else {
        return Vec::new();
    };
    let mut p = vec![("model_card_sha256".to_string(), card.sha256.clone())];
    if let Some(t) = &card.title {
        p.push(("model_card_title".into(), t.clone()));
    }
    if !card.owners.is_empty() {
        p.push(("model_card_owners".into(), card.owners.join(",")));
    }
    if let Some(use_) = card.sections.get("intended_use") {
        let first = use_.lines().next().unwrap_or_default().trim();
        p.push((
            "model_card_intended_use".into(),
            first.chars().take(INTENDED_USE_CHARS).collect(),
        ));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_summarise_the_card() {
        let mut entry = ModelEntry::default();
        assert!(properties(&entry).is_empty());
        let long = "x".repeat(300);
        let text = format!("# T\n## Intended use\n{long}\nsecond\n## Owners\n- a\n- b\n");
        entry.card = Some(Arc::new(ModelCard::parse("model_card.md", text.as_bytes()).unwrap()));
        let p: std::collections::BTreeMap<_, _> = properties(&entry).into_iter().collect();
        assert_eq!(p["model_card_title"], "T");
        assert_eq!(p["model_card_owners"], "a,b");
        assert_eq!(p["model_card_intended_use"], "x".repeat(INTENDED_USE_CHARS));
        assert_eq!(p["model_card_sha256"].len(), 64);
    }
}
