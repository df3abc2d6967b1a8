//! Reading files of the model repository safely. A repository is often a
//! volume that others write to (CI, a storage initializer, a ConfigMap), so
//! every file the server reads from it goes through [`Repository::read`]:
//!
//! - regular files only: a FIFO would block a loader thread forever and a
//!   device such as `/dev/zero` would be read until memory runs out;
//! - a size limit per kind of file, checked before and while reading;
//! - no symlink that leads out of the repository (unless the operator opts in
//!   with `--allow-symlinks-outside-repository`): links inside it, as
//!   Kubernetes ConfigMap volumes make them, are fine;
//! - errors name the path and the rule, never the content of a file.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest `config.pbtxt` read.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;
/// Largest model card (`model_card.md` / `model_card.json`) read.
pub const MAX_CARD_BYTES: u64 = 1 << 20;
/// Largest golden-set case, budget, drift profile or warm-up data file read.
pub const MAX_SIDE_FILE_BYTES: u64 = 256 << 20;
/// Default limit of one model file (`--max-model-file-bytes`).
pub const DEFAULT_MAX_MODEL_FILE_BYTES: u64 = 4 << 30;

/// The repository root and the rules for reading from it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Repository {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    /// `root` with symlinks resolved, for the containment check.
    canonical_root: PathBuf,
    max_model_file_bytes: u64,
    allow_outside: bool,
    /// `--model-name`: the name a root holding one model's files is served
    /// under (see [`super::layout`]).
    model_name: Option<String>,
}

impl Repository {
    /// A repository at `root` with the default limits.
    pub fn new(root: impl Into<PathBuf>) -> Repository {
        Repository::with_limits(root, DEFAULT_MAX_MODEL_FILE_BYTES, false)
    }

    /// A repository at `root`: model files of at most `max_model_file_bytes`;
    /// `allow_outside` lets symlinks lead out of it.
    pub fn with_limits(root: impl Into<PathBuf>, max_model_file_bytes: u64, allow_outside: bool) -> Repository {
        let root = root.into();
        let canonical_root = std::fs::canonicalize(&root).unwrap_or_else(|_| root.clone());
        Repository {
            inner: Arc::new(Inner {
                root,
                canonical_root,
                max_model_file_bytes,
                allow_outside,
                model_name: None,
            }),
        }
    }

    /// The same repository, serving a root that holds one model's files as the
    /// model `name` (`--model-name`; see [`super::layout`]).
    pub fn with_model_name(self, name: Option<String>) -> Repository {
        let inner = &self.inner;
        Repository {
            inner: Arc::new(Inner {
                root: inner.root.clone(),
                canonical_root: inner.canonical_root.clone(),
                max_model_file_bytes: inner.max_model_file_bytes,
                allow_outside: inner.allow_outside,
                model_name: name,
            }),
        }
    }

    /// The name a single model's files are served under, if one was given.
    pub fn model_name(&self) -> Option<&str> {
        self.inner.model_name.as_deref()
    }

    /// The root as given.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Largest model file read.
    pub fn max_model_file_bytes(&self) -> u64 {
        self.inner.max_model_file_bytes
    }

    /// Whether `path` exists as a regular file (after the containment check):
    /// for optional files such as `config.pbtxt`. A path that exists but breaks
    /// a rule is an error, so a FIFO or a link out of the repository is not
    /// silently ignored.
    pub fn is_file(&self, path: &Path) -> Result<bool, String> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
            Ok(_) => self.checked(path).map(|_| true),
        }
    }

    /// Reads a whole file of at most `limit` bytes.
    pub fn read(&self, path: &Path, limit: u64) -> Result<Vec<u8>, String> {
        let target = self.checked(path)?;
        let mut options = std::fs::OpenOptions::new();
        options.read(true);
        #[cfg(unix)]
        {
            // Never block on open: the type check above can race with a swap to a FIFO.
            use std::os::unix::fs::OpenOptionsExt;
            options.custom_flags(libc::O_NONBLOCK);
        }
        let file = options
            .open(&target)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(not_regular(path));
        }
        if meta.len() > limit {
            return Err(too_big(path, limit));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        // The size can change while reading: never read past the limit.
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if bytes.len() as u64 > limit {
            return Err(too_big(path, limit));
        }
        Ok(bytes)
    }

    /// Reads a UTF-8 text file of at most `limit` bytes.
    pub fn read_to_string(&self, path: &Path, limit: u64) -> Result<String, String> {
        String::from_utf8(self.read(path, limit)?).map_err(|_| format!("{} is not UTF-8 text", path.display()))
    }

    /// Resolves `path` and checks it is a regular file inside the repository.
    fn checked(&self, path: &Path) -> Result<PathBuf, String> {
        let target = std::fs::canonicalize(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if !self.inner.allow_outside && !target.starts_with(&self.inner.canonical_root) {
            return Err(format!(
                "{} leads outside the model repository (a symlink?): refused \
                 (--allow-symlinks-outside-repository allows it)",
                path.display()
            ));
        }
        let meta = std::fs::metadata(&target).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(not_regular(path));
        }
        Ok(target)
    }
}

fn not_regular(path: &Path) -> String {
    format!("{} is not a regular file: refused", path.display())
}

fn too_big(path: &Path, limit: u64) -> String {
    format!("{} is larger than the limit of {limit} bytes", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_regular_files_within_limits() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::new(dir.path());
        let f = dir.path().join("a.txt");
        std::fs::write(&f, b"hello").unwrap();
        assert_eq!(repo.read(&f, 5).unwrap(), b"hello");
        let e = repo.read(&f, 4).unwrap_err();
        assert!(e.contains("larger than the limit of 4 bytes"), "{e}");
        assert!(!repo.is_file(&dir.path().join("missing")).unwrap());
        assert!(repo.is_file(&f).unwrap());
    }

    #[cfg(unix)]
    #[test]
    fn refuses_devices_fifos_and_links_out() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let repo = Repository::new(dir.path());
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let e = repo.read(&zero, 1 << 20).unwrap_err();
        assert!(e.contains("outside the model repository"), "{e}");
        let e = Repository::with_limits(dir.path(), 1 << 20, true)
            .read(&zero, 1 << 20)
            .unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");

        let fifo = dir.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let e = repo.read(&fifo, 1 << 20).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        assert!(repo.is_file(&fifo).is_err());

        let secret = outside.path().join("secret");
        std::fs::write(&secret, b"password: hunter2").unwrap();
        let link = dir.path().join("config.pbtxt");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let e = repo.read(&link, 1 << 20).unwrap_err();
        assert!(e.contains("outside") && !e.contains("hunter2"), "{e}");
        let e = repo.is_file(&link).unwrap_err();
        assert!(e.contains("outside"), "{e}");

        // Links inside the repository (ConfigMap volumes) are followed.
        let real = dir.path().join("real.txt");
        std::fs::write(&real, b"x").unwrap();
        let inside = dir.path().join("inside.txt");
        std::os::unix::fs::symlink(&real, &inside).unwrap();
        assert_eq!(repo.read(&inside, 10).unwrap(), b"x");
    }
}
