//! The blocking steps of loading one version: read and hash the model file,
//! build its executors through the [`Backend`], complete the config from the
//! model's signature and start the version's queue. Warm-up, the golden set
//! and publication follow in [`super::pipeline`] and [`super::deploy`].

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use switchyard_proto::inference::{
    ModelConfig, ModelDynamicBatching, ModelParameter, ModelQueuePolicy, model_config, model_queue_policy,
};

use super::failure::{FailureKind, LoadFailure};
use super::pipeline::LoadSettings;
use crate::batching::{BatchPolicy, BatchQueue, LevelPolicy, QueuePolicy, policy};
use crate::error::ErrorKind;
use crate::metrics::VersionMetrics;
use crate::model::{Backend, Device};
use crate::predlog::ModelLogPolicy;
use crate::registry::{HealthWindow, TensorSpec, VersionHandle};
use crate::repository::{ModelSource, Repository, config};
use crate::stats::VersionStats;
use crate::tensor::DataType;
use crate::util::hex;

/// Requests a version queues at most when its config sets no `max_queue_size`.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
/// Priority levels a config may declare.
pub const MAX_PRIORITY_LEVELS: usize = 16;

/// The model file's bytes and SHA-256 (blocking).
pub fn read_file(repo: &Repository, name: &str, version: i64, file: &Path) -> Result<(Vec<u8>, String), LoadFailure> {
    let bytes = repo
        .read(file, repo.max_model_file_bytes())
        .map_err(|e| LoadFailure::new(FailureKind::Read, e).at(name, version))?;
    let digest = hex(&Sha256::digest(&bytes));
    Ok((bytes, digest))
}

/// Builds a version's sessions and executors (blocking); not yet warmed up or published.
pub fn build_version(
    source: &ModelSource,
    version: i64,
    bytes: &[u8],
    digest: String,
    settings: &LoadSettings,
    backend: &dyn Backend,
) -> Result<VersionHandle, LoadFailure> {
    let name = &source.name;
    let at = |kind: FailureKind| move |msg: String| LoadFailure::new(kind, msg).at(name, version);
    let mut config = source.config.clone();
    let session_settings = config::session_settings(&config, settings.cores).map_err(at(FailureKind::Config))?;
    let instances = config::instance_count(&config);
    let loaded = backend.load(bytes, &session_settings, instances).map_err(|e| {
        let kind = match e.kind {
            ErrorKind::InvalidArgument => FailureKind::Model,
            _ => FailureKind::Build,
        };
        at(kind)(e.message)
    })?;
    config::complete(
        &mut config,
        &loaded.signature,
        name,
        version,
        settings.default_max_batch_size,
    )
    .map_err(|e| LoadFailure::new(FailureKind::Config, e))?;
    record_device(&mut config, loaded.device, loaded.device_note.as_deref());
    config.parameters.insert(
        "model_sha256".into(),
        ModelParameter {
            string_value: digest.clone(),
        },
    );
    let (inputs, outputs) = tensor_specs(&config, &loaded.signature).map_err(|e| e.at(name, version))?;
    let max_batch_size = config.max_batch_size.max(0) as usize;
    let dynamic = match &config.scheduling_choice {
        Some(model_config::SchedulingChoice::DynamicBatching(d)) => Some(d),
        _ => None,
    };
    let queue_policy = queue_policy(dynamic);
    let mut preferred: Vec<usize> = dynamic
        .map(|d| {
            d.preferred_batch_size
                .iter()
                .filter(|&&n| n > 0)
                .map(|&n| n as usize)
                .collect()
        })
        .unwrap_or_default();
    preferred.sort_unstable();
    let delay = config
        .parameters
        .get(policy::DELAY_PARAMETER)
        .map(|p| p.string_value.as_str());
    let delay = policy::Delay::from_parameter(delay).map_err(|e| LoadFailure::new(FailureKind::Config, e))?;
    let policy = BatchPolicy {
        max_batch_size,
        dynamic: dynamic.is_some() && max_batch_size > 0,
        preferred,
        max_queue_delay: Duration::from_micros(dynamic.map_or(0, |d| d.max_queue_delay_microseconds)),
        delay,
        hold_copies: true,
    };
    let version_label = version.to_string();
    let stats = Arc::new(VersionStats::with_metrics(name, &version_label));
    // Warm-up and golden-set runs are not traffic: counting starts at publication.
    stats.set_quiet(true);
    let queue = BatchQueue::new(policy, queue_policy, stats.clone());
    queue.set_warming(true);
    let threads = queue
        .spawn_executors(&format!("{name}-{version}"), loaded.executors)
        .map_err(|e| at(FailureKind::Resources)(format!("cannot start executor threads: {e}")))?;
    settings.background.adopt(threads);
    let config_digest = hex(&Sha256::digest(config::config_to_json(&config).to_string().as_bytes()));
    Ok(VersionHandle {
        model: name.clone(),
        version,
        instances,
        source_config: source.config.clone(),
        config_digest,
        health: HealthWindow::default(),
        loaded_at: SystemTime::now(),
        log_policy: ModelLogPolicy::from_config(&config)
            .map_err(|e| at(FailureKind::Config)(format!("prediction_log: {e}")))?,
        drift: None,
        quality: None,
        warning: None,
        metrics: VersionMetrics::new(name, &version_label),
        version_label,
        config,
        inputs,
        outputs,
        max_batch_size,
        queue,
        stats,
        device: loaded.device,
        digest,
    })
}

/// Triton's queue policies: a default one, optionally per priority level.
pub fn queue_policy(dynamic: Option<&ModelDynamicBatching>) -> QueuePolicy {
    let Some(d) = dynamic else {
        return QueuePolicy::single(DEFAULT_QUEUE_CAPACITY);
    };
    let level = |p: Option<&ModelQueuePolicy>| LevelPolicy {
        capacity: p
            .map(|q| q.max_queue_size as usize)
            .filter(|&n| n > 0)
            .unwrap_or(DEFAULT_QUEUE_CAPACITY),
        default_timeout: p
            .map(|q| q.default_timeout_microseconds)
            .filter(|&us| us > 0)
            .map(Duration::from_micros),
        allow_timeout_override: p.is_none_or(|q| q.allow_timeout_override),
        delay_on_timeout: p.is_some_and(|q| q.timeout_action == model_queue_policy::TimeoutAction::Delay as i32),
    };
    // Levels beyond a small number are refused at config check; clamp defensively here.
    let count = (d.priority_levels as usize).clamp(1, MAX_PRIORITY_LEVELS);
    let levels = (1..=count as u64)
        .map(|l| level(d.priority_queue_policy.get(&l).or(d.default_queue_policy.as_ref())))
        .collect();
    let default_level = match d.default_priority_level as usize {
        l if l >= 1 && l <= count => l - 1,
        _ => count / 2,
    };
    QueuePolicy {
        levels,
        default_level,
        preserve_ordering: d.preserve_ordering,
    }
}

/// Reports where the sessions run in the effective config, so clients of the
/// config API (and perf_analyzer) see it.
fn record_device(config: &mut ModelConfig, device: Device, note: Option<&str>) {
    use switchyard_proto::inference::model_instance_group::Kind;
    for group in &mut config.instance_group {
        group.kind = match device {
            Device::Cpu => Kind::Cpu as i32,
            Device::Cuda(id) => {
                group.gpus = vec![id];
                Kind::Gpu as i32
            }
        };
    }
    config.parameters.insert(
        "execution_provider".into(),
        ModelParameter {
            string_value: match note {
                Some(n) => format!("{device} ({n})"),
                None => device.to_string(),
            },
        },
    );
}

fn tensor_specs(
    config: &ModelConfig,
    signature: &crate::model::Signature,
) -> Result<(Vec<TensorSpec>, Vec<TensorSpec>), LoadFailure> {
    // A model tensor with no dims besides the batch one, described as `dims: [1]`.
    let batch_rank = usize::from(config.max_batch_size > 0);
    let scalar = |specs: &[crate::model::IoSpec], name: &str, dims: &[i64]| {
        dims == [1] && specs.iter().any(|s| s.name == name && s.dims.len() == batch_rank)
    };
    let dt = |v: i32, name: &str| {
        DataType::from_config_enum(v)
            .ok_or_else(|| LoadFailure::new(FailureKind::Config, format!("tensor '{name}' has no datatype")))
    };
    let inputs = config
        .input
        .iter()
        .map(|i| {
            Ok(TensorSpec {
                name: i.name.clone(),
                datatype: dt(i.data_type, &i.name)?,
                dims: i.dims.clone(),
                optional: i.optional,
                scalar: scalar(&signature.inputs, &i.name, &i.dims),
            })
        })
        .collect::<Result<_, LoadFailure>>()?;
    let outputs = config
        .output
        .iter()
        .map(|o| {
            Ok(TensorSpec {
                name: o.name.clone(),
                datatype: dt(o.data_type, &o.name)?,
                dims: o.dims.clone(),
                optional: false,
                scalar: scalar(&signature.outputs, &o.name, &o.dims),
            })
        })
        .collect::<Result<_, LoadFailure>>()?;
    Ok((inputs, outputs))
}
