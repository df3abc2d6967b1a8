//! The audit trail: one JSON line per control action (load, unload, promote,
//! label change, rollback, validation failure), appended to `--audit-log`
//! and always echoed to the log under the target `switchyard::audit`.
//! Tokens are never written: an actor is a token's id or a peer address.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

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
    /// `load`, `unload`, `promote`, `label`, `rollback`, `auto_rollback`, `validation_failed`, `denied`.
    pub action: &'a str,
    /// Model.
    pub model: &'a str,
    /// Version, when one is concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'a str>,
    /// SHA-256 of the version's model file.
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
            time: rfc3339(SystemTime::now()),
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

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_utc_times() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_708_800_123); // 2026-11-26
        assert_eq!(rfc3339(t), "2026-11-26T16:00:00.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

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
