//! Warm-up: a new version runs some requests before it is published, so its
//! first real requests do not pay for lazy allocations and kernel selection.
//!
//! With `model_warmup` in the config, those requests run (Triton's semantics:
//! `batch_size`, per-input `zero_data` / `random_data` / `input_data_file`
//! under `<model>/warmup/`, `count` repetitions) and a failure refuses the
//! version. Without it, and unless disabled, a synthetic warm-up runs
//! zero-filled requests (BYTES elements are the string "0", which a graph
//! that parses numbers accepts) at batch size 1, every preferred batch size
//! and `max_batch_size`. Synthetic warm-up never refuses a valid model: when
//! it cannot be planned or fails, the version loads anyway, with a warning in
//! the log and in the repository index. Every request runs once per model
//! instance, concurrently, so each instance's session is warm.

use crate::repository::Repository;
use crate::repository::files::MAX_SIDE_FILE_BYTES;
use std::path::Path;

use bytes::Bytes;
use switchyard_proto::inference::model_warmup::input::InputDataType;
use switchyard_proto::inference::{ModelConfig, model_config};

use super::failure::{FailureKind, LoadFailure};
use crate::registry::{TensorSpec, VersionHandle};
use crate::tensor::{DataType, Tensor, TensorData, decode_bytes_elements, element_count};

/// Repetitions one warm-up entry may ask for at most.
pub const MAX_WARMUP_COUNT: u32 = 1000;

/// One warm-up request and how often it runs.
#[derive(Debug, Clone)]
pub struct WarmupRequest {
    /// The config entry's name (or "synthetic batch N").
    pub name: String,
    /// Its inputs.
    pub inputs: Vec<Tensor>,
    /// Repetitions.
    pub count: u32,
    /// Made up by the server rather than asked for by the config.
    pub synthetic: bool,
}

/// The warm-up requests of a version.
pub fn plan(
    config: &ModelConfig,
    inputs: &[TensorSpec],
    repo: &Repository,
    model_dir: &Path,
    synthetic: bool,
    max_elements: usize,
) -> Result<Vec<WarmupRequest>, LoadFailure> {
    plan_requests(config, inputs, repo, model_dir, synthetic, max_elements)
        .map_err(|e| LoadFailure::new(FailureKind::Config, e))
}

fn plan_requests(
    config: &ModelConfig,
    inputs: &[TensorSpec],
    repo: &Repository,
    model_dir: &Path,
    synthetic: bool,
    max_elements: usize,
) -> Result<Vec<WarmupRequest>, String> {
    let max_batch = config.max_batch_size.max(0) as i64;
    if !config.model_warmup.is_empty() {
        return config
            .model_warmup
            .iter()
            .map(|w| configured(w, inputs, max_batch, (repo, model_dir), max_elements))
            .collect();
    }
    if !synthetic {
        return Ok(Vec::new());
    }
    Ok(synthetic_plan(config, inputs, max_batch, max_elements))
}

/// Zero-filled requests at batch 1, the preferred sizes and the maximum;
/// sizes whose tensors exceed the element limit are left out.
fn synthetic_plan(
    config: &ModelConfig,
    inputs: &[TensorSpec],
    max_batch: i64,
    max_elements: usize,
) -> Vec<WarmupRequest> {
    let mut sizes: Vec<i64> = vec![1];
    if max_batch > 0 {
        if let Some(model_config::SchedulingChoice::DynamicBatching(d)) = &config.scheduling_choice {
            sizes.extend(
                d.preferred_batch_size
                    .iter()
                    .map(|&n| i64::from(n))
                    .filter(|&n| n <= max_batch),
            );
        }
        sizes.push(max_batch);
    }
    sizes.sort_unstable();
    sizes.dedup();
    // The required inputs; a model whose inputs are all optional gets all of them.
    let all_optional = inputs.iter().all(|s| s.optional);
    sizes
        .into_iter()
        .filter_map(|batch| {
            let tensors = inputs
                .iter()
                .filter(|s| all_optional || !s.optional)
                .map(|s| {
                    let dims = s.dims.iter().map(|&d| if d < 0 { 1 } else { d });
                    let shape: Vec<i64> = if max_batch > 0 {
                        std::iter::once(batch).chain(dims).collect()
                    } else {
                        dims.collect()
                    };
                    let count = element_count(&shape, max_elements).ok()?;
                    Some(synthetic_tensor(s, shape, count))
                })
                .collect::<Option<Vec<_>>>()?;
            Some(WarmupRequest {
                name: format!("synthetic batch {batch}"),
                inputs: tensors,
                count: 1,
                synthetic: true,
            })
        })
        .collect()
}

/// Zeros; for BYTES, the string "0" (an empty string fails a graph that casts
/// its strings to numbers, and "0" is also valid text).
pub fn synthetic_tensor(spec: &TensorSpec, shape: Vec<i64>, count: usize) -> Tensor {
    if spec.datatype == DataType::Bytes {
        return Tensor {
            name: spec.name.clone(),
            datatype: DataType::Bytes,
            shape,
            data: TensorData::Bytes(vec![Bytes::from_static(b"0"); count]),
        };
    }
    Tensor::zeros(&spec.name, spec.datatype, shape)
}

fn configured(
    w: &switchyard_proto::inference::ModelWarmup,
    specs: &[TensorSpec],
    max_batch: i64,
    (repo, model_dir): (&Repository, &Path),
    max_elements: usize,
) -> Result<WarmupRequest, String> {
    let at = |msg: String| format!("model_warmup '{}': {msg}", w.name);
    if w.count > MAX_WARMUP_COUNT {
        return Err(at(format!(
            "count {} is above the limit of {MAX_WARMUP_COUNT}",
            w.count
        )));
    }
    let batch = i64::from(w.batch_size.max(1));
    if max_batch > 0 && batch > max_batch {
        return Err(at(format!("batch_size {batch} is above max_batch_size {max_batch}")));
    }
    for name in w.inputs.keys() {
        if !specs.iter().any(|s| &s.name == name) {
            return Err(at(format!("the model has no input '{name}'")));
        }
    }
    let mut tensors = Vec::new();
    for spec in specs {
        let Some(input) = w.inputs.get(&spec.name) else {
            if spec.optional {
                continue;
            }
            return Err(at(format!("input '{}' is missing", spec.name)));
        };
        let datatype = DataType::from_config_enum(input.data_type)
            .ok_or_else(|| at(format!("input '{}' has no data_type", spec.name)))?;
        if datatype != spec.datatype {
            return Err(at(format!(
                "input '{}': data_type {} differs from the model's {}",
                spec.name,
                datatype.config_name(),
                spec.datatype.config_name()
            )));
        }
        let shape: Vec<i64> = if max_batch > 0 {
            std::iter::once(batch).chain(input.dims.iter().copied()).collect()
        } else {
            input.dims.clone()
        };
        let count = element_count(&shape, max_elements).map_err(|e| at(e.message))?;
        let data = match &input.input_data_type {
            None | Some(InputDataType::ZeroData(_)) => Tensor::zeros(&spec.name, datatype, shape.clone()).data,
            Some(InputDataType::RandomData(_)) => random_data(datatype, count),
            Some(InputDataType::InputDataFile(file)) => {
                if file.contains('/') || file.contains('\\') || file.starts_with('.') {
                    return Err(at(format!("input_data_file '{file}' must be a plain file name")));
                }
                let path = model_dir.join("warmup").join(file);
                let raw = repo.read(&path, MAX_SIDE_FILE_BYTES).map_err(at)?;
                match datatype.size() {
                    Some(size) if raw.len() == count * size => TensorData::Fixed(Bytes::from(raw)),
                    Some(size) => {
                        return Err(at(format!(
                            "{} has {} bytes, shape {shape:?} of {} needs {}",
                            path.display(),
                            raw.len(),
                            datatype.as_str(),
                            count * size
                        )));
                    }
                    None => TensorData::Bytes(
                        decode_bytes_elements(&Bytes::from(raw), count, &spec.name).map_err(|e| at(e.message))?,
                    ),
                }
            }
        };
        tensors.push(Tensor {
            name: spec.name.clone(),
            datatype,
            shape,
            data,
        });
    }
    Ok(WarmupRequest {
        name: w.name.clone(),
        inputs: tensors,
        count: w.count.max(1),
        synthetic: false,
    })
}

/// Plausible random values: floats in [0, 1), integers in 0..10, booleans,
/// short ASCII strings (random bit patterns would be NaNs and out-of-range indices).
fn random_data(datatype: DataType, count: usize) -> TensorData {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = Vec::with_capacity(count * datatype.size().unwrap_or(0));
    if datatype == DataType::Bytes {
        return TensorData::Bytes(
            (0..count)
                .map(|_| Bytes::from((0..8).map(|_| b'a' + (next() % 26) as u8).collect::<Vec<u8>>()))
                .collect(),
        );
    }
    for _ in 0..count {
        let unit = (next() >> 11) as f64 / (1u64 << 53) as f64;
        let small = next() % 10;
        match datatype {
            DataType::Bool => out.push((small & 1) as u8),
            DataType::Uint8 | DataType::Int8 => out.push(small as u8),
            DataType::Uint16 | DataType::Int16 => out.extend_from_slice(&(small as u16).to_le_bytes()),
            DataType::Uint32 | DataType::Int32 => out.extend_from_slice(&(small as u32).to_le_bytes()),
            DataType::Uint64 | DataType::Int64 => out.extend_from_slice(&small.to_le_bytes()),
            DataType::Fp16 => out.extend_from_slice(&half::f16::from_f64(unit).to_le_bytes()),
            DataType::Bf16 => out.extend_from_slice(&half::bf16::from_f64(unit).to_le_bytes()),
            DataType::Fp32 => out.extend_from_slice(&(unit as f32).to_le_bytes()),
            DataType::Fp64 => out.extend_from_slice(&unit.to_le_bytes()),
            DataType::Bytes => {}
        }
    }
    TensorData::Fixed(Bytes::from(out))
}

/// Runs the plan: every request `count` times, each time once per instance,
/// concurrently. A configured request that fails refuses the version; a
/// synthetic one ends the warm-up and its failure comes back as `Ok(Some)`,
/// a warning (the version still loads).
pub async fn run(
    handle: &VersionHandle,
    plan: &[WarmupRequest],
    instances: usize,
    max_elements: usize,
) -> Result<Option<String>, LoadFailure> {
    for request in plan {
        for _ in 0..request.count {
            let runs = (0..instances.max(1)).map(|_| super::run_direct(handle, request.inputs.clone(), max_elements));
            for result in futures::future::join_all(runs).await {
                match result {
                    Ok(_) => {}
                    Err(e) if request.synthetic => {
                        return Ok(Some(format!(
                            "synthetic warm-up '{}' failed, loaded without warm-up (add model_warmup to the \
                             config to warm it up with real data): {e}",
                            request.name
                        )));
                    }
                    Err(e) => {
                        return Err(LoadFailure::new(
                            FailureKind::Warmup,
                            format!("warm-up '{}' failed: {e}", request.name),
                        ));
                    }
                }
            }
        }
    }
    Ok(None)
}
