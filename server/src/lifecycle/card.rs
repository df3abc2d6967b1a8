//! The model card on load: the card read with the model is taken into its
//! registry entry and audited (`model_card`, with the card's digest) when it
//! changes; an invalid card keeps the previous one serving, as an invalid
//! `traffic.yaml` keeps the previous policy: the error goes to the index
//! notes and the audit trail, and the versions load regardless.

use super::audit::{Audit, Event};
use crate::access::Actor;
use crate::registry::{IndexEntry, ModelEntry};
use crate::repository::ModelSource;

/// The audit action of a card change.
pub const AUDIT_ACTION: &str = "model_card";

/// Takes `source`'s card into `entry`. Returns the error shown for an
/// invalid card (also pushed to `notes`).
pub fn apply_card_file(
    audit: &Audit,
    name: &str,
    source: &ModelSource,
    entry: &mut ModelEntry,
    notes: &mut Vec<IndexEntry>,
    actor: &Actor,
) -> Option<String> {
    let record = |digest: Option<&str>, ok: bool, reason: &str| {
        audit.record(
            actor,
            Event {
                action: AUDIT_ACTION,
                model: name,
                version: None,
                digest,
                ok,
                reason,
            },
        )
    };
    match &source.card {
        Ok(card)
            if card.as_ref().map(|c| (&c.file, &c.sha256)) == entry.card.as_ref().map(|c| (&c.file, &c.sha256)) =>
        {
            None
        }
        Ok(Some(card)) => {
            let missing = card.missing();
            let mut detail = format!("model card {}: sections {}", card.file, list(&card.present()));
            if !missing.is_empty() {
                detail.push_str(&format!("; missing {}", missing.join(", ")));
            }
            tracing::info!(model = name, file = %card.file, sha256 = %card.sha256, "model card read");
            record(Some(&card.sha256), true, &detail);
            entry.card = Some(card.clone());
            None
        }
        Ok(None) => {
            record(None, true, "model card removed");
            entry.card = None;
            None
        }
        Err(e) => {
            let kept = if entry.card.is_some() {
                " (the previous model card keeps being served)"
            } else {
                ""
            };
            let shown = format!("{e}{kept}");
            tracing::error!(model = name, error = %e, "model card refused");
            record(None, false, e);
            notes.push(IndexEntry {
                state: "READY".into(),
                ..IndexEntry::unavailable(name, "", &shown)
            });
            Some(shown)
        }
    }
}

fn list(fields: &[&str]) -> String {
    if fields.is_empty() {
        "none".into()
    } else {
        fields.join(", ")
    }
}
