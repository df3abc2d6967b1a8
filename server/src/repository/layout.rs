//! What the repository root holds. Two layouts are served:
//!
//! - **a repository** in Triton's layout: `<root>/<model>/[config.pbtxt]`,
//!   `<root>/<model>/<version>/model.onnx` (always, and the only layout
//!   without `--model-name`);
//! - **one model's files**, as KServe's storage initializer leaves them under
//!   `/mnt/models` when the storage URI names a model rather than a
//!   repository: `<root>/model.onnx` (the file itself, version 1),
//!   `<root>/<version>/model.onnx`, either with an optional
//!   `<root>/config.pbtxt`. With `--model-name NAME` such a root is the model
//!   directory of `NAME`.
//!
//! The single-model layout is a view over the repository, not a second
//! reader: [`model_dir`] says where a model's directory is and
//! [`list_models`](super::list_models) what the root holds; everything else
//! (config, version policy, limits, golden sets, polling) is the same code.

use std::path::{Path, PathBuf};

use super::files::Repository;

/// How a repository root is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Triton's layout: one directory per model.
    Repository,
    /// The root is the directory of the one model `name`.
    SingleModel {
        /// The name it is served under (`--model-name`).
        name: String,
    },
}

/// The layout of `repo`'s root now. Without a model name it is always a
/// repository; with one, a root holding a model file, a `config.pbtxt` or a
/// version directory is that model's directory. The layout is decided on
/// every scan, so a storage volume filled after start is read right.
pub fn layout(repo: &Repository) -> Layout {
    match repo.model_name() {
        Some(name) if holds_one_model(repo.root()) => Layout::SingleModel { name: name.to_string() },
        _ => Layout::Repository,
    }
}

/// The directory of model `name`, or `None` when the layout has no such model.
pub fn model_dir(repo: &Repository, name: &str) -> Option<PathBuf> {
    match layout(repo) {
        Layout::Repository => Some(repo.root().join(name)),
        Layout::SingleModel { name: served } => (served == name).then(|| repo.root().to_path_buf()),
    }
}

/// Whether `dir` holds one model's files rather than model directories.
fn holds_one_model(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.filter_map(|e| e.ok()).any(|e| {
        let Ok(name) = e.file_name().into_string() else {
            return false;
        };
        name == super::DEFAULT_MODEL_FILENAME
            || name == "config.pbtxt"
            || (e.file_type().is_ok_and(|t| t.is_dir()) && super::parse_version(&name).is_some())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn a_model_name_turns_a_model_directory_into_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(&root.join("simple/1/model.onnx"));
        let named = Repository::new(root).with_model_name(Some("foo".into()));
        // Model directories: a repository, even with a name.
        assert_eq!(layout(&named), Layout::Repository);
        assert_eq!(model_dir(&named, "simple"), Some(root.join("simple")));
        assert_eq!(layout(&Repository::new(root)), Layout::Repository);

        for files in [
            &["model.onnx"][..],
            &["1/model.onnx"],
            &["config.pbtxt", "3/model.onnx"],
        ] {
            let dir = tempfile::tempdir().unwrap();
            for f in files {
                touch(&dir.path().join(f));
            }
            let repo = Repository::new(dir.path()).with_model_name(Some("foo".into()));
            assert_eq!(layout(&repo), Layout::SingleModel { name: "foo".into() }, "{files:?}");
            assert_eq!(model_dir(&repo, "foo"), Some(dir.path().to_path_buf()));
            assert_eq!(model_dir(&repo, "other"), None);
            // Without the name the same files are not a model.
            assert_eq!(layout(&Repository::new(dir.path())), Layout::Repository);
        }
    }
}
