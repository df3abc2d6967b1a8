//! The store of recent predictions that feedback joins with: an embedded
//! [redb] database (`--feedback-store`, default `<state-dir>/feedback.redb`,
//! in memory without a state directory), keyed by model, request id and
//! version. Bounded twice: at most `max_records` predictions (the oldest go
//! first) and none older than `retention`; both are enforced by the writer
//! after each batch, so the file never grows without bound. A joined
//! prediction stays, marked, until it ages out, so a second label for the
//! same request is answered "duplicate".
//!
//! Writes come in batches from the quality worker, committed without a sync
//! ([`Durability::None`]) and made durable by a synced commit at most a
//! second later and at shutdown: a restart keeps everything but the last
//! second before a crash.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

/// Longest request id stored (longer ids are not kept; feedback for them is "unknown").
pub const MAX_ID_BYTES: usize = 256;

const PREDICTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("predictions");
const BY_TIME: TableDefinition<(u64, u64), &str> = TableDefinition::new("by_time");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Where and how much the store keeps.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// The database file; `None` keeps it in memory (lost on restart).
    pub path: Option<PathBuf>,
    /// Most predictions kept.
    pub max_records: u64,
    /// Predictions older than this are dropped.
    pub retention: Duration,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            path: None,
            max_records: 1_000_000,
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// One row's prediction, as kept for joining.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Classifiers: the argmax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<u32>,
    /// Classifiers with probability outputs: the argmax's probability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    /// Regressors: the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The row's group (fairness), if monitored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Whether the prediction is the favourable outcome (fairness).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub favourable: Option<bool>,
}

/// One request's predictions by one version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// When it was predicted (ms since the Unix epoch).
    pub t_ms: u64,
    /// A mirrored (shadow) copy.
    #[serde(default)]
    pub shadow: bool,
    /// Feedback has been joined with it.
    #[serde(default)]
    pub labelled: bool,
    /// Per row.
    pub rows: Vec<Row>,
    /// Write number (ties the time index to this record).
    #[serde(default)]
    pub seq: u64,
}

/// A prediction to write.
#[derive(Debug, Clone)]
pub struct Put {
    /// Model name.
    pub model: String,
    /// Request id.
    pub id: String,
    /// Version label.
    pub version: String,
    /// The record.
    pub record: Stored,
}

/// What the store knows of one request id.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// Its predictions (version, record) not yet labelled; now marked.
    Joined(Vec<(String, Stored)>),
    /// No prediction under this id.
    Unknown,
    /// Kept but older than the retention (removed now).
    Expired,
    /// Every prediction under this id was labelled before.
    Duplicate,
    /// The predictions have this many rows, not as many as the truths sent (nothing marked).
    Mismatch(usize),
}

/// The store; cheap to share behind an `Arc`.
pub struct FeedbackStore {
    /// `None` once closed (shutdown): the file's lock is released.
    db: parking_lot::RwLock<Option<Database>>,
    settings: StoreSettings,
}

impl std::fmt::Debug for FeedbackStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedbackStore")
            .field("settings", &self.settings)
            .finish()
    }
}

fn key(model: &str, id: &str, version: &str) -> String {
    format!("{model}\0{id}\0{version}")
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

type DbResult<T> = Result<T, String>;

fn db_err(e: impl std::fmt::Display) -> String {
    format!("feedback store: {e}")
}

impl FeedbackStore {
    /// Opens (or creates) the store.
    pub fn open(settings: StoreSettings) -> DbResult<FeedbackStore> {
        let db = match &settings.path {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                }
                Database::create(p).map_err(|e| format!("cannot open the feedback store {}: {e}", p.display()))?
            }
            None => Database::builder()
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(db_err)?,
        };
        let txn = db.begin_write().map_err(db_err)?;
        {
            txn.open_table(PREDICTIONS).map_err(db_err)?;
            txn.open_table(BY_TIME).map_err(db_err)?;
            txn.open_table(META).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(FeedbackStore {
            db: parking_lot::RwLock::new(Some(db)),
            settings,
        })
    }

    /// Closes the database (its file can be opened again); later writes are
    /// dropped and joins refused.
    pub fn close(&self) {
        self.db.write().take();
    }

    /// The store's bounds.
    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    /// Writes `puts` in one transaction (synced when `durable`), then drops
    /// what is past the bounds. Ids that are empty, too long or hold a NUL are skipped.
    pub fn write(&self, puts: Vec<Put>, durable: bool) -> DbResult<()> {
        let db = self.db.read();
        let Some(db) = db.as_ref() else {
            return Ok(());
        };
        let mut txn = db.begin_write().map_err(db_err)?;
        if !durable {
            txn.set_durability(Durability::None).map_err(db_err)?;
        }
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let mut seq = meta.get("seq").map_err(db_err)?.map_or(0, |v| v.value());
            let mut table = txn.open_table(PREDICTIONS).map_err(db_err)?;
            let mut by_time = txn.open_table(BY_TIME).map_err(db_err)?;
            for mut p in puts {
                if p.id.is_empty() || p.id.len() > MAX_ID_BYTES || p.id.contains('\0') {
                    continue;
                }
                seq += 1;
                p.record.seq = seq;
                let k = key(&p.model, &p.id, &p.version);
                let value = serde_json::to_vec(&p.record).map_err(db_err)?;
                table.insert(k.as_str(), value.as_slice()).map_err(db_err)?;
                by_time.insert((p.record.t_ms, seq), k.as_str()).map_err(db_err)?;
            }
            meta.insert("seq", seq).map_err(db_err)?;
            let cutoff = now_ms().saturating_sub(self.settings.retention.as_millis() as u64);
            loop {
                let over = table.len().map_err(db_err)? > self.settings.max_records;
                let Some((t, s, k)) = by_time
                    .first()
                    .map_err(db_err)?
                    .map(|(t, k)| (t.value().0, t.value().1, k.value().to_string()))
                else {
                    break;
                };
                if !over && t >= cutoff {
                    break;
                }
                by_time.remove((t, s)).map_err(db_err)?;
                // The record may have been written again since (same id): only its own entry removes it.
                let current = table
                    .get(k.as_str())
                    .map_err(db_err)?
                    .and_then(|v| serde_json::from_slice::<Stored>(v.value()).ok())
                    .map(|r| r.seq);
                if current == Some(s) {
                    table.remove(k.as_str()).map_err(db_err)?;
                }
            }
        }
        txn.commit().map_err(db_err)
    }

    /// Looks up `ids` of `model` (each with the number of rows its truths
    /// cover) and marks what it finds as labelled, in one transaction.
    pub fn join(&self, model: &str, ids: &[(&str, usize)]) -> DbResult<Vec<Found>> {
        let db = self.db.read();
        let db = db
            .as_ref()
            .ok_or("the feedback store is closed: the server is shutting down")?;
        let txn = db.begin_write().map_err(db_err)?;
        let cutoff = now_ms().saturating_sub(self.settings.retention.as_millis() as u64);
        let mut out = Vec::with_capacity(ids.len());
        {
            let mut table = txn.open_table(PREDICTIONS).map_err(db_err)?;
            for &(id, rows) in ids {
                if id.is_empty() || id.len() > MAX_ID_BYTES || id.contains('\0') {
                    out.push(Found::Unknown);
                    continue;
                }
                let (start, end) = (format!("{model}\0{id}\0"), format!("{model}\0{id}\u{1}"));
                let mut found = Vec::new();
                for item in table.range(start.as_str()..end.as_str()).map_err(db_err)? {
                    let (k, v) = item.map_err(db_err)?;
                    if let Ok(r) = serde_json::from_slice::<Stored>(v.value()) {
                        let version = k.value()[start.len()..].to_string();
                        found.push((version, r));
                    }
                }
                let outcome = if found.is_empty() {
                    Found::Unknown
                } else if found.iter().all(|(_, r)| r.t_ms < cutoff) {
                    for (v, _) in &found {
                        table.remove(key(model, id, v).as_str()).map_err(db_err)?;
                    }
                    Found::Expired
                } else if found.iter().all(|(_, r)| r.labelled) {
                    Found::Duplicate
                } else if let Some((_, r)) = found.iter().find(|(_, r)| !r.labelled && r.rows.len() != rows) {
                    Found::Mismatch(r.rows.len())
                } else {
                    let mut joined = Vec::new();
                    for (v, mut r) in found.into_iter().filter(|(_, r)| !r.labelled) {
                        r.labelled = true;
                        let value = serde_json::to_vec(&r).map_err(db_err)?;
                        table
                            .insert(key(model, id, &v).as_str(), value.as_slice())
                            .map_err(db_err)?;
                        joined.push((v, r));
                    }
                    Found::Joined(joined)
                };
                out.push(outcome);
            }
        }
        txn.commit().map_err(db_err)?;
        Ok(out)
    }

    /// Predictions kept.
    pub fn records(&self) -> u64 {
        let read = || -> DbResult<u64> {
            let db = self.db.read();
            let txn = db.as_ref().ok_or("closed")?.begin_read().map_err(db_err)?;
            txn.open_table(PREDICTIONS).map_err(db_err)?.len().map_err(db_err)
        };
        read().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(id: &str, version: &str, t_ms: u64) -> Put {
        Put {
            model: "m".into(),
            id: id.into(),
            version: version.into(),
            record: Stored {
                t_ms,
                rows: vec![Row {
                    class: Some(1),
                    ..Row::default()
                }],
                ..Stored::default()
            },
        }
    }

    #[test]
    fn joins_once_then_answers_duplicate_and_unknown() {
        let s = FeedbackStore::open(StoreSettings::default()).unwrap();
        let now = now_ms();
        s.write(vec![put("a", "1", now), put("a", "2", now), put("b", "1", now)], false)
            .unwrap();
        let found = s.join("m", &[("a", 1), ("zzz", 1), ("", 1), ("a\0b", 1)]).unwrap();
        let Found::Joined(pairs) = &found[0] else {
            panic!("{found:?}")
        };
        let versions: Vec<&str> = pairs.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(versions, ["1", "2"]);
        assert_eq!(found[1..], [Found::Unknown, Found::Unknown, Found::Unknown]);
        assert_eq!(s.join("m", &[("a", 1)]).unwrap(), [Found::Duplicate]);
        assert_eq!(s.join("m", &[("b", 3)]).unwrap(), [Found::Mismatch(1)]);
        assert!(matches!(s.join("m", &[("b", 1)]).unwrap()[0], Found::Joined(_)));
        // Another model's ids are apart.
        assert_eq!(s.join("other", &[("b", 1)]).unwrap(), [Found::Unknown]);
    }

    #[test]
    fn bounded_by_count_and_age() {
        let s = FeedbackStore::open(StoreSettings {
            max_records: 3,
            retention: Duration::from_secs(3600),
            path: None,
        })
        .unwrap();
        let now = now_ms();
        let old = now - 7_200_000;
        s.write(vec![put("old", "1", old)], false).unwrap();
        assert_eq!(s.records(), 0, "older than the retention: dropped at once");
        for i in 0..5 {
            s.write(vec![put(&format!("r{i}"), "1", now + i)], false).unwrap();
        }
        assert_eq!(s.records(), 3);
        assert_eq!(
            s.join("m", &[("r0", 1), ("r1", 1)]).unwrap(),
            [Found::Unknown, Found::Unknown]
        );
        assert!(matches!(s.join("m", &[("r4", 1)]).unwrap()[0], Found::Joined(_)));
        // Writing an id again keeps the newer record when the older time entry is pruned.
        s.write(vec![put("r2", "1", now + 10)], false).unwrap();
        s.write(vec![put("x", "1", now + 11), put("y", "1", now + 12)], false)
            .unwrap();
        assert!(matches!(s.join("m", &[("y", 1)]).unwrap()[0], Found::Joined(_)));
    }

    #[test]
    fn survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let settings = StoreSettings {
            path: Some(dir.path().join("sub/feedback.redb")),
            ..StoreSettings::default()
        };
        {
            let s = FeedbackStore::open(settings.clone()).unwrap();
            s.write(vec![put("a", "1", now_ms())], false).unwrap();
            s.write(Vec::new(), true).unwrap();
        }
        let s = FeedbackStore::open(settings).unwrap();
        assert_eq!(s.records(), 1);
        assert!(matches!(s.join("m", &[("a", 1)]).unwrap()[0], Found::Joined(_)));
    }
}
