//! The store of recent predictions that feedback joins with: an embedded
//! [redb] database (`--feedback-store`, default `<state-dir>/feedback.redb`,
//! in memory without a state directory). Bounded twice: at most
//! `max_records` predictions (the oldest go first) and none older than
//! `retention`; both are enforced by the writer after each batch, so the
//! file never grows without bound. A joined prediction stays, marked, until
//! it ages out, so a second label for the same request is answered
//! "duplicate".
//!
//! Predictions are appended under a write number, so a batch of writes
//! dirties the last page or two of one B-tree and pruning takes from its
//! front: request ids are random, and a table keyed by them turns every
//! write into a page copy somewhere in the file. The lookup by id is an
//! in-memory index of (hash of model and id, write number), about 30 bytes
//! per kept prediction, rebuilt from the file on open; the hash is keyed
//! per process, so clients cannot pile their ids onto one entry.
//!
//! Writes come in batches from the quality worker, committed without a sync
//! ([`Durability::None`]) and made durable by a synced commit at most a
//! second later and at shutdown: a restart keeps everything but the last
//! second before a crash.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use redb::{Database, Durability, ReadableTable, TableDefinition, TableHandle};
use serde::{Deserialize, Serialize};

/// Longest request id stored (longer ids are not kept; feedback for them is "unknown").
pub const MAX_ID_BYTES: usize = 256;

/// Write number → encoded record (see [`encode`]).
const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
/// Tables of the earlier layout (keyed by id), dropped on open.
const LEGACY: [&str; 3] = ["predictions", "by_time", "meta"];
/// The first byte of an encoded record.
const FORMAT: u8 = 1;

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
    /// Write number (the record's key).
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

struct Open {
    db: Database,
    /// (hash of model and id, write number), one entry per record.
    index: BTreeSet<(u64, u64)>,
    next_seq: u64,
}

/// The store; cheap to share behind an `Arc`.
pub struct FeedbackStore {
    /// `None` once closed (shutdown): the file's lock is released.
    open: parking_lot::Mutex<Option<Open>>,
    hasher: RandomState,
    settings: StoreSettings,
}

impl std::fmt::Debug for FeedbackStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedbackStore")
            .field("settings", &self.settings)
            .finish()
    }
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

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_BYTES && !id.contains('\0')
}

/// A record's bytes: the format byte, the time (u64 LE), model, id and
/// version (each a u16 LE length and the bytes), then the record as JSON.
fn encode(model: &str, id: &str, version: &str, record: &Stored) -> DbResult<Vec<u8>> {
    let mut out = Vec::with_capacity(16 + model.len() + id.len() + version.len() + 64 * record.rows.len());
    out.push(FORMAT);
    out.extend_from_slice(&record.t_ms.to_le_bytes());
    for field in [model, id, version] {
        let n = u16::try_from(field.len()).map_err(|_| db_err("a name or id is too long"))?;
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    serde_json::to_writer(&mut out, record).map_err(db_err)?;
    Ok(out)
}

/// The fixed part of an encoded record.
struct Header<'a> {
    t_ms: u64,
    model: &'a str,
    id: &'a str,
    version: &'a str,
    body: &'a [u8],
}

fn header(bytes: &[u8]) -> Option<Header<'_>> {
    let (&format, rest) = bytes.split_first()?;
    if format != FORMAT {
        return None;
    }
    let (t, mut rest) = rest.split_at_checked(8)?;
    let t_ms = u64::from_le_bytes(t.try_into().ok()?);
    let mut field = || -> Option<&str> {
        let (n, r) = rest.split_at_checked(2)?;
        let (f, r) = r.split_at_checked(u16::from_le_bytes([n[0], n[1]]) as usize)?;
        rest = r;
        std::str::from_utf8(f).ok()
    };
    let (model, id, version) = (field()?, field()?, field()?);
    Some(Header {
        t_ms,
        model,
        id,
        version,
        body: rest,
    })
}

impl FeedbackStore {
    /// Opens (or creates) the store and indexes what it holds.
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
        let hasher = RandomState::new();
        let mut index = BTreeSet::new();
        let mut next_seq = 1;
        let txn = db.begin_write().map_err(db_err)?;
        {
            for t in txn.list_tables().map_err(db_err)? {
                if LEGACY.contains(&t.name()) {
                    txn.delete_table(t).map_err(db_err)?;
                }
            }
            let table = txn.open_table(RECORDS).map_err(db_err)?;
            for item in table.iter().map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                let seq = k.value();
                next_seq = seq + 1;
                if let Some(h) = header(v.value()) {
                    index.insert((hasher.hash_one((h.model, h.id)), seq));
                }
            }
        }
        txn.commit().map_err(db_err)?;
        let store = FeedbackStore {
            open: parking_lot::Mutex::new(Some(Open { db, index, next_seq })),
            hasher,
            settings,
        };
        // The bounds may be tighter than when the file was written.
        store.write(Vec::new(), true)?;
        Ok(store)
    }

    /// Closes the database (its file can be opened again); later writes are
    /// dropped and joins refused.
    pub fn close(&self) {
        self.open.lock().take();
    }

    /// The store's bounds.
    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    fn hash(&self, model: &str, id: &str) -> u64 {
        self.hasher.hash_one((model, id))
    }

    /// Writes `puts` in one transaction (synced when `durable`), then drops
    /// what is past the bounds. Ids that are empty, too long or hold a NUL are skipped.
    pub fn write(&self, puts: Vec<Put>, durable: bool) -> DbResult<()> {
        let mut guard = self.open.lock();
        let Some(open) = guard.as_mut() else {
            return Ok(());
        };
        let mut txn = open.db.begin_write().map_err(db_err)?;
        if !durable {
            txn.set_durability(Durability::None).map_err(db_err)?;
        }
        let mut added = Vec::with_capacity(puts.len());
        let mut removed = Vec::new();
        {
            let mut table = txn.open_table(RECORDS).map_err(db_err)?;
            let mut seq = open.next_seq;
            for mut p in puts {
                if !valid_id(&p.id) {
                    continue;
                }
                p.record.seq = seq;
                let value = encode(&p.model, &p.id, &p.version, &p.record)?;
                table.insert(seq, value.as_slice()).map_err(db_err)?;
                added.push((self.hash(&p.model, &p.id), seq));
                seq += 1;
            }
            let cutoff = now_ms().saturating_sub(self.settings.retention.as_millis() as u64);
            let mut len = open.index.len() + added.len();
            loop {
                let over = len as u64 > self.settings.max_records;
                let Some((k, h)) = table
                    .first()
                    .map_err(db_err)?
                    .map(|(k, v)| (k.value(), header(v.value()).map(|h| (h.t_ms, self.hash(h.model, h.id)))))
                else {
                    break;
                };
                if !over && h.is_some_and(|(t, _)| t >= cutoff) {
                    break;
                }
                table.remove(k).map_err(db_err)?;
                len -= 1;
                if let Some((_, hash)) = h {
                    removed.push((hash, k));
                }
            }
            open.next_seq = seq;
        }
        txn.commit().map_err(db_err)?;
        open.index.extend(added);
        for entry in removed {
            open.index.remove(&entry);
        }
        Ok(())
    }

    /// Looks up `ids` of `model` (each with the number of rows its truths
    /// cover) and marks what it finds as labelled, in one transaction.
    pub fn join(&self, model: &str, ids: &[(&str, usize)]) -> DbResult<Vec<Found>> {
        let mut guard = self.open.lock();
        let open = guard
            .as_mut()
            .ok_or("the feedback store is closed: the server is shutting down")?;
        let txn = open.db.begin_write().map_err(db_err)?;
        let cutoff = now_ms().saturating_sub(self.settings.retention.as_millis() as u64);
        let mut out = Vec::with_capacity(ids.len());
        let mut removed = Vec::new();
        {
            let mut table = txn.open_table(RECORDS).map_err(db_err)?;
            for &(id, rows) in ids {
                if !valid_id(id) {
                    out.push(Found::Unknown);
                    continue;
                }
                let hash = self.hash(model, id);
                // (seq, version, record), oldest first.
                let mut found: Vec<(u64, String, Stored)> = Vec::new();
                for &(_, seq) in open.index.range((hash, 0)..=(hash, u64::MAX)) {
                    let Some(v) = table.get(seq).map_err(db_err)? else {
                        continue;
                    };
                    let Some(h) = header(v.value()).filter(|h| h.model == model && h.id == id) else {
                        continue;
                    };
                    if let Ok(r) = serde_json::from_slice::<Stored>(h.body) {
                        found.push((seq, h.version.to_string(), r));
                    }
                }
                // The same id written again by one version: the newest counts.
                let mut latest: Vec<(u64, String, Stored)> = Vec::new();
                for f in found.into_iter().rev() {
                    if !latest.iter().any(|(_, v, _)| *v == f.1) {
                        latest.push(f);
                    }
                }
                latest.reverse();
                let outcome = if latest.is_empty() {
                    Found::Unknown
                } else if latest.iter().all(|(_, _, r)| r.t_ms < cutoff) {
                    for (seq, _, _) in &latest {
                        table.remove(*seq).map_err(db_err)?;
                        removed.push((hash, *seq));
                    }
                    Found::Expired
                } else if latest.iter().all(|(_, _, r)| r.labelled) {
                    Found::Duplicate
                } else if let Some((_, _, r)) = latest.iter().find(|(_, _, r)| !r.labelled && r.rows.len() != rows) {
                    Found::Mismatch(r.rows.len())
                } else {
                    let mut joined = Vec::new();
                    for (seq, v, mut r) in latest.into_iter().filter(|(_, _, r)| !r.labelled) {
                        r.labelled = true;
                        let value = encode(model, id, &v, &r)?;
                        table.insert(seq, value.as_slice()).map_err(db_err)?;
                        joined.push((v, r));
                    }
                    Found::Joined(joined)
                };
                out.push(outcome);
            }
        }
        txn.commit().map_err(db_err)?;
        for entry in removed {
            open.index.remove(&entry);
        }
        Ok(out)
    }

    /// Predictions kept.
    pub fn records(&self) -> u64 {
        self.open.lock().as_ref().map_or(0, |o| o.index.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

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
    fn the_newest_write_of_an_id_by_one_version_counts() {
        let s = FeedbackStore::open(StoreSettings::default()).unwrap();
        let now = now_ms();
        let mut second = put("a", "1", now + 1);
        second.record.rows.push(Row::default());
        s.write(vec![put("a", "1", now)], false).unwrap();
        s.write(vec![second], false).unwrap();
        assert_eq!(s.records(), 2);
        assert_eq!(s.join("m", &[("a", 1)]).unwrap(), [Found::Mismatch(2)]);
        let Found::Joined(pairs) = &s.join("m", &[("a", 2)]).unwrap()[0] else {
            panic!("not joined")
        };
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].1.t_ms, now + 1);
        assert_eq!(s.join("m", &[("a", 2)]).unwrap(), [Found::Duplicate]);
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
            s.write(vec![put("a", "1", now_ms()), put("b", "1", now_ms())], false)
                .unwrap();
            assert!(matches!(s.join("m", &[("b", 1)]).unwrap()[0], Found::Joined(_)));
            s.write(Vec::new(), true).unwrap();
        }
        let s = FeedbackStore::open(settings.clone()).unwrap();
        assert_eq!(s.records(), 2);
        // New writes continue after the kept ones instead of replacing them.
        s.write(vec![put("c", "1", now_ms())], true).unwrap();
        assert_eq!(s.records(), 3);
        assert!(matches!(s.join("m", &[("a", 1)]).unwrap()[0], Found::Joined(_)));
        assert_eq!(s.join("m", &[("b", 1)]).unwrap(), [Found::Duplicate]);
        assert!(matches!(s.join("m", &[("c", 1)]).unwrap()[0], Found::Joined(_)));
        s.close();
        // Tighter bounds on the next start are applied at once.
        let s = FeedbackStore::open(StoreSettings {
            max_records: 1,
            ..settings
        })
        .unwrap();
        assert_eq!(s.records(), 1);
        assert_eq!(s.join("m", &[("c", 1)]).unwrap(), [Found::Duplicate]);
    }

    #[test]
    fn the_earlier_layout_is_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("feedback.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let t: TableDefinition<&str, &[u8]> = TableDefinition::new("predictions");
                txn.open_table(t).unwrap().insert("m\0a", b"{}".as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let s = FeedbackStore::open(StoreSettings {
            path: Some(path.clone()),
            ..StoreSettings::default()
        })
        .unwrap();
        assert_eq!(s.records(), 0);
        s.close();
        let db = Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let names: Vec<String> = txn.list_tables().unwrap().map(|t| t.name().to_string()).collect();
        assert_eq!(names, ["records"]);
    }
}
