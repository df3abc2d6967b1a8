//! The deploy pipeline of one version, off the serving path: read the file
//! (an unchanged file and config keeps the serving version), build the
//! executors through the [`Backend`] (on the loader pool), warm up, check the
//! golden set and latency budget, and set up the drift reference. It never
//! touches the routing table: [`super::deploy`] publishes what passes.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;

use super::failure::{FailureKind, LoadFailure};
use super::rollback::RollbackPolicy;
use super::{build, golden, warmup};
use crate::drift::{DriftSettings, Profile, VersionDrift};
use crate::metrics::ModelState;
use crate::model::Backend;
use crate::quality::{QualitySettings, VersionQuality};
use crate::registry::VersionHandle;
use crate::repository::{self, ModelSource, Repository};
use crate::util::Background;

/// What loading needs besides the repository.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// Batch size given to config-less batchable models.
    pub default_max_batch_size: u32,
    /// Cores to budget threads against.
    pub cores: usize,
    /// Versions loading at once, across models (the loader pool).
    pub load_threads: usize,
    /// Synthetic warm-up when the config has no `model_warmup`.
    pub synthetic_warmup: bool,
    /// Element limit for warm-up and golden tensors.
    pub max_tensor_elements: usize,
    /// Automatic rollback.
    pub rollback: RollbackPolicy,
    /// The server's owner of executor threads and rollback watchers.
    pub background: Background,
    /// Where labels and traffic overrides are kept across restarts (`--state-dir`).
    pub state_dir: Option<std::path::PathBuf>,
}

impl Default for LoadSettings {
    fn default() -> Self {
        LoadSettings {
            default_max_batch_size: 4,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            load_threads: 1,
            synthetic_warmup: true,
            max_tensor_elements: 16 << 20,
            rollback: RollbackPolicy::default(),
            background: Background::new(),
            state_dir: None,
        }
    }
}

/// What the pipeline made of one version.
#[derive(Debug)]
pub enum Outcome {
    /// Unchanged file and config: the serving version is kept as it is.
    Kept(Arc<VersionHandle>),
    /// Built, warmed up and validated; not yet published (still quiet and warming).
    Ready(Box<VersionHandle>, golden::Report),
    /// Refused, with the model file's digest when it was read.
    Failed(LoadFailure, Option<String>),
}

/// Builds versions with a backend, a bounded number at once.
pub struct Pipeline {
    settings: LoadSettings,
    backend: Arc<dyn Backend>,
    /// The loader pool: versions building at once, across models.
    loaders: Semaphore,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("settings", &self.settings).finish()
    }
}

impl Pipeline {
    /// A pipeline building with `backend`.
    pub fn new(settings: LoadSettings, backend: Arc<dyn Backend>) -> Pipeline {
        Pipeline {
            loaders: Semaphore::new(settings.load_threads.max(1)),
            settings,
            backend,
        }
    }

    /// Load settings.
    pub fn settings(&self) -> &LoadSettings {
        &self.settings
    }

    /// Runs the pipeline on `version` of `source` (model file `file`);
    /// `serving` is the version's current load, if any.
    pub async fn version(
        &self,
        source: &Arc<ModelSource>,
        version: i64,
        file: &Path,
        serving: Option<&Arc<VersionHandle>>,
    ) -> Outcome {
        let name = source.name.clone();
        let read = {
            let (file, name, repo) = (file.to_path_buf(), name.clone(), source.repo.clone());
            tokio::task::spawn_blocking(move || build::read_file(&repo, &name, version, &file)).await
        };
        let (bytes, digest) = match read {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Outcome::Failed(e, None),
            Err(e) => return Outcome::Failed(task_failed(e).at(&name, version), None),
        };
        if let Some(h) = serving
            && h.digest == digest
            && h.source_config == source.config
        {
            return Outcome::Kept(h.clone());
        }
        let label = version.to_string();
        if serving.is_none() {
            crate::metrics::model_state(&name, &label, ModelState::Loading);
        }
        let outcome = match self.build(source, version, bytes, digest.clone()).await {
            Ok((handle, report)) => Outcome::Ready(handle, report),
            Err(e) => Outcome::Failed(e.at(&name, version), Some(digest)),
        };
        if matches!(outcome, Outcome::Failed(..)) && serving.is_none() {
            crate::metrics::model_state(&name, &label, ModelState::Unavailable);
        }
        outcome
    }

    /// Build, warm-up, golden set, drift reference; failures without the
    /// model and version prefix (the caller adds it).
    async fn build(
        &self,
        source: &Arc<ModelSource>,
        version: i64,
        bytes: Vec<u8>,
        digest: String,
    ) -> Result<(Box<VersionHandle>, golden::Report), LoadFailure> {
        let name = source.name.clone();
        let Ok(_permit) = self.loaders.acquire().await else {
            return Err(LoadFailure::new(FailureKind::Resources, "the loader pool is closed"));
        };
        let started = Instant::now();
        let built = {
            let (source, settings, backend) = (source.clone(), self.settings.clone(), self.backend.clone());
            tokio::task::spawn_blocking(move || {
                build::build_version(&source, version, &bytes, digest, &settings, &*backend)
            })
            .await
        };
        // `build_version` prefixes its own failures; strip nothing, re-prefix nothing.
        let mut handle = match built {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return Err(unprefixed(e, &name, version)),
            Err(e) => return Err(task_failed(e)),
        };
        let max = self.settings.max_tensor_elements;
        let version_dir = source.version_dir(version);
        let plan = warmup::plan(
            &handle.config,
            &handle.inputs,
            &source.repo,
            &source.dir,
            self.settings.synthetic_warmup,
            max,
        )?;
        if let Some(warning) = warmup::run(&handle, &plan, handle.instances, max).await? {
            tracing::warn!(model = %name, version, %warning, "warm-up skipped");
            handle.warning = Some(warning);
        }
        let set = golden::load(&source.repo, &version_dir, max)
            .map_err(|e| LoadFailure::new(FailureKind::Config, format!("golden set: {e}")))?;
        let report = match &set {
            Some(set) => golden::check(&handle, set, max).await?,
            None => golden::Report::default(),
        };
        handle.drift = drift_monitor(&handle, (&source.repo, &version_dir), set.as_ref())?;
        let settings = QualitySettings::from_config(&handle.config, &shapes(&handle.inputs), &shapes(&handle.outputs))
            .map_err(|e| LoadFailure::new(FailureKind::Config, format!("quality: {e}")))?;
        handle.quality = settings.map(|s| {
            Arc::new(VersionQuality::new(
                &handle.model,
                &handle.version_label,
                s,
                handle.max_batch_size > 0,
            ))
        });
        let elapsed = started.elapsed();
        crate::metrics::load_duration(&name, &version.to_string(), elapsed.as_secs_f64());
        tracing::debug!(model = %name, version, ?elapsed, "built, warmed up, validated");
        Ok((Box::new(handle), report))
    }
}

/// Names and dims of tensors, as the quality settings read them.
fn shapes(specs: &[crate::registry::TensorSpec]) -> Vec<(&str, &[i64])> {
    specs.iter().map(|s| (s.name.as_str(), s.dims.as_slice())).collect()
}

fn task_failed(e: tokio::task::JoinError) -> LoadFailure {
    LoadFailure::new(FailureKind::Resources, format!("load task failed: {e}"))
}

/// `build_version` names the model and version itself; `version` adds them again.
fn unprefixed(e: LoadFailure, name: &str, version: i64) -> LoadFailure {
    let prefix = format!("model '{name}' version {version}: ");
    match e.message.strip_prefix(&prefix) {
        Some(rest) => LoadFailure::new(e.kind, rest),
        None => e,
    }
}

/// The drift monitor of a version: on when its config has `drift.*`
/// parameters or it ships `validation/profile.json`. The reference is that
/// profile, else the golden set's inputs and expected outputs.
fn drift_monitor(
    handle: &VersionHandle,
    (repo, version_dir): (&Repository, &Path),
    golden: Option<&golden::GoldenSet>,
) -> Result<Option<Arc<VersionDrift>>, LoadFailure> {
    let failure = |msg: String| LoadFailure::new(FailureKind::DriftReference, msg);
    let profile_path = version_dir.join("validation/profile.json");
    let configured = handle.config.parameters.keys().any(|k| k.starts_with("drift."));
    let has_profile = repo.is_file(&profile_path).map_err(failure)?;
    if !configured && !has_profile {
        return Ok(None);
    }
    let base = DriftSettings {
        batched: handle.max_batch_size > 0,
        ..DriftSettings::default()
    };
    let settings = DriftSettings::from_config(&handle.config, &base).map_err(|e| failure(format!("drift: {e}")))?;
    let reference = if has_profile {
        let text = repo
            .read_to_string(&profile_path, repository::files::MAX_SIDE_FILE_BYTES)
            .map_err(failure)?;
        Some(Profile::from_json(&text).map_err(|e| failure(format!("{}: {e}", profile_path.display())))?)
    } else {
        golden.filter(|g| !g.cases.is_empty()).map(|g| {
            let samples: Vec<_> = g
                .cases
                .iter()
                .map(|c| (c.inputs.clone(), c.expected_tensors(&handle.outputs)))
                .collect();
            Profile::from_samples_with(&samples, settings.max_features, settings.batched)
        })
    };
    Ok(Some(VersionDrift::new(
        &handle.model,
        &handle.version_label,
        reference,
        settings,
    )))
}
