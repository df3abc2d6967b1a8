//! The audit trail: one JSON line per control action (load, unload, promote,
//! label change, rollback, validation failure), appended to `--audit-log`
//! and always echoed to the log under the target `switchyard::audit`.
//! Tokens are never written: an actor is a token's id or a peer address.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use crate::util::{Precision, rfc3339};
use parking_lot::Mutex;
use serde::Serialize;

pub use crate::access::Actor;

/// One audit record.
#[derive(Debug, Clone, Serialize)]
pub struct Record<'a> {
    /// RFC 3339 UTC.
    pub time: String,
    /// Who.
    pub actor: &'a str,
    /// Peer address, when over the network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<&'a str>,
    /// `load`, `unload`, `promote`, `label`, `rollback`, `auto_rollback`, `validation_failed`,
    /// `traffic`, `model_card`, `denied`.
    pub action: &'a str,
    /// Model.
    pub model: &'a str,
    /// Version, when one is concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'a str>,
    /// SHA-256 of the version's model file (`model_card`: of the card's file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<&'a str>,
    /// `ok` or `failed`.
    pub outcome: &'a str,
    /// Why (failures), or what changed.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub reason: &'a str,
}

/// The audit sink.
#[derive(Debug, Default)]
pub struct Audit {
    file: Option<Mutex<File>>,
}

/// One event to record.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// What happened.
    pub action: &'a str,
    /// Model.
    pub model: &'a str,
    /// Version.
    pub version: Option<&'a str>,
    /// Model file digest.
    pub digest: Option<&'a str>,
    /// Success or not.
    pub ok: bool,
    /// Why / what.
    pub reason: &'a str,
}

impl Audit {
    /// Appends to `path` (created if missing); `None` logs only.
    pub fn open(path: Option<&Path>) -> std::io::Result<Audit> {
        let file = match path {
            Some(p) => {
                if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)?;
                }
                Some(Mutex::new(OpenOptions::new().create(true).append(true).open(p)?))
            }
            None => None,
        };
        Ok(Audit { file })
    }

    /// Records one event (control actions are rare: written and flushed at once).
    pub fn record(&self, actor: &Actor, event: Event<'_>) {
        let name = actor.name();
        let record = Record {
            time: rfc3339(SystemTime::now(), Precision::Millis),
            actor: &name,
            peer: actor.peer(),
            action: event.action,
            model: event.model,
            version: event.version,
            digest: event.digest,
            outcome: if event.ok { "ok" } else { "failed" },
            reason: event.reason,
        };
        let Ok(mut line) = serde_json::to_string(&record) else {
            return;
        };
        tracing::info!(target: "switchyard::audit", "{line}");
        if let Some(file) = &self.file {
            line.push('\n');
            if let Err(e) = file.lock().write_all(line.as_bytes()) {
                tracing::error!(error = %e, "cannot write the audit log");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit/audit.jsonl");
        let audit = Audit::open(Some(&path)).unwrap();
        let actor = Actor::Api {
            token: Some("ci".into()),
            peer: Some("127.0.0.1:5000".into()),
        };
        for ok in [true, false] {
            audit.record(
                &actor,
                Event {
                    action: "load",
                    model: "m",
                    version: Some("2"),
                    digest: Some("abc"),
                    ok,
                    reason: if ok { "" } else { "bad" },
                },
            );
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["actor"], "token:ci");
        assert_eq!(lines[0]["outcome"], "ok");
        assert!(lines[0].get("reason").is_none());
        assert_eq!(lines[1]["outcome"], "failed");
        assert_eq!(lines[1]["reason"], "bad");
        assert_eq!(lines[1]["digest"], "abc");
    }
}
