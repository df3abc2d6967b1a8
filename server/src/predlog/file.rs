//! The JSON Lines file sink: `predictions.jsonl` in the log directory,
//! rotated by size to `predictions-<unix millis>-<sequence>.jsonl`, keeping
//! the newest `max_files` rotated files.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::json::RecordJson;
use super::{Job, Sink, Stats, Warner};

/// Name of the file being written.
pub(crate) const CURRENT: &str = "predictions.jsonl";
const PREFIX: &str = "predictions-";
const SUFFIX: &str = ".jsonl";

pub(crate) struct FileSink {
    dir: PathBuf,
    max_file_bytes: u64,
    max_files: usize,
    stats: Arc<Stats>,
    warner: Warner,
    file: Option<BufWriter<File>>,
    /// Bytes in the current file, buffered ones included.
    size: u64,
    line: Vec<u8>,
    rotations: u64,
}

impl FileSink {
    pub(crate) fn new(dir: PathBuf, max_file_bytes: u64, max_files: usize, stats: Arc<Stats>) -> Self {
        FileSink {
            dir,
            max_file_bytes: max_file_bytes.max(1),
            max_files,
            stats,
            warner: Warner::new("file"),
            file: None,
            size: 0,
            line: Vec::with_capacity(4096),
            rotations: 0,
        }
    }

    fn open(&mut self) -> std::io::Result<()> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(CURRENT))?;
        self.size = f.metadata()?.len();
        self.file = Some(BufWriter::with_capacity(64 << 10, f));
        Ok(())
    }

    fn write_line(&mut self) -> std::io::Result<()> {
        let len = self.line.len() as u64;
        if self.file.is_none() {
            self.open()?;
        }
        if self.size > 0 && self.size + len > self.max_file_bytes {
            self.rotate()?;
            self.open()?;
        }
        let file = self.file.as_mut().expect("opened above");
        file.write_all(&self.line)?;
        self.size += len;
        Ok(())
    }

    /// Closes the current file, renames it and deletes the oldest rotated files.
    fn rotate(&mut self) -> std::io::Result<()> {
        if let Some(mut f) = self.file.take() {
            f.flush()?;
        }
        self.size = 0;
        let millis = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        self.rotations += 1;
        let name = format!("{PREFIX}{millis}-{}{SUFFIX}", self.rotations);
        std::fs::rename(self.dir.join(CURRENT), self.dir.join(name))?;
        prune(&self.dir, self.max_files)
    }
}

/// The rotated files of `dir`, oldest first.
pub(crate) fn rotated_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found: Vec<((u128, u64), PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(key) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX)?.strip_suffix(SUFFIX))
            .and_then(|stem| {
                let (millis, seq) = stem.split_once('-')?;
                Some((millis.parse().ok()?, seq.parse().ok()?))
            })
        else {
            continue;
        };
        found.push((key, entry.path()));
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

fn prune(dir: &Path, keep: usize) -> std::io::Result<()> {
    let files = rotated_files(dir)?;
    let excess = files.len().saturating_sub(keep);
    for old in &files[..excess] {
        std::fs::remove_file(old)?;
    }
    Ok(())
}

impl Sink for FileSink {
    fn handle(&mut self, job: &Job) {
        self.line.clear();
        if let Err(e) = serde_json::to_writer(&mut self.line, &RecordJson(job)) {
            self.stats.drop_one("sink_error");
            self.warner.warn(&e);
            return;
        }
        self.line.push(b'\n');
        match self.write_line() {
            Ok(()) => self.stats.wrote("file"),
            Err(e) => {
                // Reopen on the next record (the directory may come back).
                self.file = None;
                self.stats.drop_one("sink_error");
                self.warner.warn(&format_args!("{}: {e}", self.dir.display()));
            }
        }
    }

    fn flush(&mut self) {
        if let Some(f) = &mut self.file
            && let Err(e) = f.flush()
        {
            self.file = None;
            self.warner.warn(&format_args!("{}: {e}", self.dir.display()));
        }
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        self.flush();
    }
}
