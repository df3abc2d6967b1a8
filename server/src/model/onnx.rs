//! ONNX Runtime through `ort`: the only module that imports it. It resolves
//! and loads the shared library, builds sessions (CPU or CUDA), reads a
//! model's signature and runs batches.
//!
//! `unsafe` is allowed here and nowhere else: building tensors straight from
//! little-endian bytes (one copy from the requests into the runtime's
//! buffer, for every datatype including FP16/BF16) and reading BYTES tensors
//! with embedded NULs go through the C API; so does handing the heaps'
//! free pages back ([`release_free_heap`]).
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bytes::Bytes;
use ort::AsPointer;
use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider};
use ort::memory::Allocator;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{RunOptions, Session, SessionInputValue};
use ort::value::{DynTensor, DynTensorValueType, DynValue, TensorElementType, ValueType};

use super::{BatchInput, Device, DeviceRequest, Executor, IoSpec, Loaded, SessionSettings, Signature};
use crate::error::{Error, Result};
use crate::tensor::{DataType, Tensor, TensorData};

/// Library file name looked up in the default locations.
pub const LIBRARY_NAME: &str = "libonnxruntime.so";

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();

/// Where the runtime library is looked for, in order: the explicit path,
/// `ORT_DYLIB_PATH`, next to the executable, then `.ort/lib/` in the working
/// directory or any parent.
pub fn library_candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = explicit {
        out.push(p.to_path_buf());
        return out;
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        out.push(PathBuf::from(p));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push(dir.join(LIBRARY_NAME));
    }
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            out.push(dir.join(".ort/lib").join(LIBRARY_NAME));
        }
    }
    out
}

/// Loads ONNX Runtime once per process. Returns the library path and the
/// runtime version, or a clear error listing where it looked.
pub fn init_runtime(explicit: Option<&Path>) -> std::result::Result<String, String> {
    static INIT: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    INIT.get_or_init(|| {
        let candidates = library_candidates(explicit);
        let mut tried = Vec::new();
        for path in &candidates {
            if !path.is_file() {
                tried.push(format!("{} (missing)", path.display()));
                continue;
            }
            match ort::init_from(path) {
                Ok(builder) => {
                    let env = builder
                        .with_name("switchyard")
                        .with_telemetry(false)
                        .build()
                        .map_err(|e| format!("ONNX Runtime at {}: {e}", path.display()))?;
                    let _ = ENVIRONMENT.set(env);
                    return Ok(format!("{} ({})", path.display(), ort::info()));
                }
                Err(e) => tried.push(format!("{} ({e})", path.display())),
            }
        }
        Err(format!(
            "ONNX Runtime library not found or not loadable; run scripts/setup-ort.sh or pass --ort-library. Tried: {}",
            tried.join("; ")
        ))
    })
    .clone()
}

fn environment() -> Result<&'static Environment> {
    ENVIRONMENT
        .get()
        .ok_or_else(|| Error::internal("ONNX Runtime is not initialised"))
}

/// The ONNX Runtime backend: builds sessions with [`load`]. A file the
/// runtime refuses is the model's fault (400), not the server's.
#[derive(Debug, Clone, Copy, Default)]
pub struct OnnxBackend;

impl super::Backend for OnnxBackend {
    fn load(&self, model: &[u8], settings: &SessionSettings, instances: usize) -> Result<Loaded> {
        load(model, settings, instances).map_err(Error::invalid)
    }
}

/// Returns the free pages of both heaps to the operating system; what is in
/// use stays. ONNX Runtime allocates with the C library's `malloc`, not the
/// server's allocator, and building a session (parsing, graph optimisation)
/// and warming it up at `max_batch_size` free most of what they take; glibc
/// keeps those pages of each thread's arena resident for reuse (~9 MB with
/// the three benchmark models; `malloc_trim`, a no-op on other C libraries).
/// The model file's bytes, read through the server's allocator (mimalloc),
/// are freed on a thread that then goes idle, and mimalloc purges freed
/// memory only on a later allocation (~5 MB for the MLP; `mi_collect`).
/// Called once a load is over and when a session is dropped. It can take
/// milliseconds: off the request path.
pub fn release_free_heap() {
    // SAFETY: mi_collect takes no pointers; it frees what mimalloc's own
    // structures hold unused (a no-op when mimalloc is not the global allocator).
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it walks the allocator's own free lists under its locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Builds `instances` sessions from a model file's bytes.
pub fn load(model: &[u8], settings: &SessionSettings, instances: usize) -> std::result::Result<Loaded, String> {
    let env = environment().map_err(|e| e.message)?;
    let mut executors: Vec<Box<dyn Executor>> = Vec::with_capacity(instances);
    let mut signature = Signature::default();
    let mut device = Device::Cpu;
    let mut device_note = None;
    for i in 0..instances {
        let (session, dev, note) = build_session(env, model, settings)?;
        if i == 0 {
            signature = read_signature(&session);
            (device, device_note) = (dev, note);
        }
        executors.push(Box::new(OnnxExecutor { session }));
    }
    Ok(Loaded {
        signature,
        executors,
        device,
        device_note,
    })
}

fn build_session(
    env: &Environment,
    model: &[u8],
    settings: &SessionSettings,
) -> std::result::Result<(Session, Device, Option<String>), String> {
    let mut builder = configure(env, settings).map_err(|e| format!("session options: {e}"))?;
    let (device, note) = attach_device(&mut builder, &settings.device)?;
    let session = builder
        .commit_from_memory(model)
        .map_err(|e| format!("ONNX Runtime cannot load the model: {e}"))?;
    Ok((session, device, note))
}

fn configure(env: &Environment, s: &SessionSettings) -> ort::Result<SessionBuilder> {
    let level = match s.graph_optimization_level {
        -1 => GraphOptimizationLevel::Level1,
        1 => GraphOptimizationLevel::Level2,
        2 => GraphOptimizationLevel::Disable,
        _ => GraphOptimizationLevel::All,
    };
    let mut b = Session::builder(env)?
        .with_optimization_level(level)?
        .with_parallel_execution(s.parallel_execution)?
        .with_intra_op_spinning(s.allow_spinning)?
        .with_inter_op_spinning(s.allow_spinning)?
        .with_memory_pattern(s.mem_pattern)?;
    // A session option (Enable/DisableCpuMemArena), not an extra provider.
    ep::CPU::default().with_arena_allocator(s.mem_arena).register(&mut b)?;
    if s.intra_op_threads > 0 {
        b = b.with_intra_threads(s.intra_op_threads)?;
    }
    if s.inter_op_threads > 0 {
        b = b.with_inter_threads(s.inter_op_threads)?;
    }
    Ok(b)
}

/// Applies the device rule: CPU as asked; `Auto` tries CUDA and reports
/// falling back; `Gpu` fails the load unless the config allows the fallback.
fn attach_device(
    builder: &mut SessionBuilder,
    request: &DeviceRequest,
) -> std::result::Result<(Device, Option<String>), String> {
    let (device_id, allow_fallback) = match *request {
        DeviceRequest::Cpu => return Ok((Device::Cpu, None)),
        DeviceRequest::Auto => (0, true),
        DeviceRequest::Gpu {
            device_id,
            allow_cpu_fallback,
        } => (device_id, allow_cpu_fallback),
    };
    match ep::CUDA::default().with_device_id(device_id).register(builder) {
        Ok(()) => Ok((Device::Cuda(device_id), None)),
        Err(e) if allow_fallback => {
            let note = format!("CUDA unavailable, fell back to CPU: {e}");
            if matches!(request, DeviceRequest::Gpu { .. }) {
                tracing::warn!(%note, "GPU requested; running on CPU");
            } else {
                tracing::info!(%note, "instance kind AUTO: running on CPU");
            }
            Ok((Device::Cpu, Some(note)))
        }
        Err(e) => Err(format!(
            "the config asks for a GPU (KIND_GPU or a gpu_execution_accelerator) but the CUDA execution provider cannot be registered: {e}; set parameter allow_cpu_fallback=\"true\" to run on CPU instead"
        )),
    }
}

fn read_signature(session: &Session) -> Signature {
    let spec = |name: &str, ty: &ValueType| -> IoSpec {
        match ty {
            ValueType::Tensor { ty, shape, .. } => IoSpec {
                name: name.to_string(),
                datatype: to_datatype(*ty).ok_or_else(|| format!("{ty:?}")),
                dims: shape.iter().copied().collect(),
            },
            other => IoSpec {
                name: name.to_string(),
                datatype: Err(format!("{other}")),
                dims: Vec::new(),
            },
        }
    };
    Signature {
        inputs: session.inputs().iter().map(|o| spec(o.name(), o.dtype())).collect(),
        outputs: session.outputs().iter().map(|o| spec(o.name(), o.dtype())).collect(),
        defaulted_inputs: session
            .overridable_initializers()
            .iter()
            .map(|o| spec(o.name(), o.dtype()))
            .collect(),
    }
}

fn to_datatype(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        TensorElementType::Bfloat16 => DataType::Bf16,
        _ => return None,
    })
}

fn to_element_type(dt: DataType) -> TensorElementType {
    match dt {
        DataType::Bool => TensorElementType::Bool,
        DataType::Uint8 => TensorElementType::Uint8,
        DataType::Uint16 => TensorElementType::Uint16,
        DataType::Uint32 => TensorElementType::Uint32,
        DataType::Uint64 => TensorElementType::Uint64,
        DataType::Int8 => TensorElementType::Int8,
        DataType::Int16 => TensorElementType::Int16,
        DataType::Int32 => TensorElementType::Int32,
        DataType::Int64 => TensorElementType::Int64,
        DataType::Fp16 => TensorElementType::Float16,
        DataType::Fp32 => TensorElementType::Float32,
        DataType::Fp64 => TensorElementType::Float64,
        DataType::Bytes => TensorElementType::String,
        DataType::Bf16 => TensorElementType::Bfloat16,
    }
}

/// One session, owned by one executor thread.
struct OnnxExecutor {
    session: Session,
}

impl OnnxExecutor {
    fn run_with(&mut self, inputs: Vec<BatchInput<'_>>, options: Option<&RunOptions>) -> Result<Vec<Tensor>> {
        let runtime = |e: ort::Error| Error::internal(format!("ONNX Runtime: {e}"));
        let mut feed: Vec<(String, SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
        for input in &inputs {
            let value = build_input(input).map_err(runtime)?;
            feed.push((input.name.to_string(), value.into()));
        }
        let outputs = match options {
            Some(o) => self.session.run_with_options(feed, o),
            None => self.session.run(feed),
        }
        .map_err(runtime)?;
        let mut result = Vec::with_capacity(outputs.len());
        for (name, value) in outputs.into_iter() {
            result.push(read_output(name, &value).map_err(runtime)?);
        }
        Ok(result)
    }
}

impl Executor for OnnxExecutor {
    fn run(&mut self, inputs: Vec<BatchInput<'_>>) -> Result<Vec<Tensor>> {
        self.run_with(inputs, None)
    }

    fn run_releasing(&mut self, inputs: Vec<BatchInput<'_>>) -> Result<Vec<Tensor>> {
        // ONNX Runtime frees the CPU arena's unused chunks at the end of this run.
        let mut options = RunOptions::new().map_err(|e| Error::internal(format!("ONNX Runtime: {e}")))?;
        options
            .set("memory.enable_memory_arena_shrinkage", "cpu:0")
            .map_err(|e| Error::internal(format!("ONNX Runtime: {e}")))?;
        self.run_with(inputs, Some(&options))
    }
}

/// Builds one input tensor, concatenating the requests' parts with a single
/// copy into the runtime-owned buffer.
fn build_input(input: &BatchInput<'_>) -> ort::Result<DynTensor> {
    let first = input.parts.first().ok_or_else(|| ort::Error::new("empty batch"))?;
    let allocator = Allocator::default();
    match first {
        TensorData::Fixed(_) => {
            let mut tensor = DynTensor::new(&allocator, to_element_type(input.datatype), input.shape.clone())?;
            let need = tensor.size().unwrap_or(0);
            let mut total = 0usize;
            for part in &input.parts {
                match part {
                    TensorData::Fixed(b) => total += b.len(),
                    TensorData::Bytes(_) => return Err(ort::Error::new("mixed tensor data in one batch")),
                }
            }
            if total != need {
                return Err(ort::Error::new(format!(
                    "input '{}': {total} bytes of data for {need} bytes of tensor",
                    input.name
                )));
            }
            if need > 0 {
                let dst = tensor.data_ptr_mut() as *mut u8;
                let mut offset = 0usize;
                for part in &input.parts {
                    if let TensorData::Fixed(b) = part {
                        // SAFETY: `dst` points to `need` bytes owned by `tensor`;
                        // the parts' lengths sum to `need` (checked above).
                        unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), dst.add(offset), b.len()) };
                        offset += b.len();
                    }
                }
            }
            Ok(tensor)
        }
        TensorData::Bytes(_) => {
            let mut tensor = DynTensor::new(&allocator, TensorElementType::String, input.shape.clone())?;
            let mut index = 0usize;
            let expected: usize = input.shape.iter().map(|&d| d.max(0) as usize).product();
            for part in &input.parts {
                let TensorData::Bytes(elements) = part else {
                    return Err(ort::Error::new("mixed tensor data in one batch"));
                };
                for element in elements {
                    if index >= expected {
                        return Err(ort::Error::new("more BYTES elements than the shape holds"));
                    }
                    let mut buf: *mut std::ffi::c_char = std::ptr::null_mut();
                    // SAFETY: index < element count of `tensor`; ORT returns a
                    // buffer of exactly `element.len()` bytes for that element.
                    let status = unsafe {
                        (ort::api().GetResizedStringTensorElementBuffer)(
                            tensor.ptr_mut(),
                            index,
                            element.len(),
                            &mut buf,
                        )
                    };
                    unsafe { ort::Error::result_from_status(status) }?;
                    if !element.is_empty() {
                        unsafe { std::ptr::copy_nonoverlapping(element.as_ptr(), buf as *mut u8, element.len()) };
                    }
                    index += 1;
                }
            }
            Ok(tensor)
        }
    }
}

/// Copies one output out of the runtime (the only copy on the way out).
fn read_output(name: &str, value: &DynValue) -> ort::Result<Tensor> {
    let view = value.view();
    let tensor = view.downcast::<DynTensorValueType>()?;
    let ty = *tensor.data_type();
    let datatype =
        to_datatype(ty).ok_or_else(|| ort::Error::new(format!("output '{name}' has unsupported type {ty:?}")))?;
    let shape: Vec<i64> = tensor.shape().iter().copied().collect();
    let data = if datatype == DataType::Bytes {
        TensorData::Bytes(read_strings(value, shape.iter().map(|&d| d.max(0) as usize).product())?)
    } else {
        if !tensor.memory_info().is_cpu_accessible() {
            return Err(ort::Error::new(format!("output '{name}' is not in CPU memory")));
        }
        let len = tensor.size().unwrap_or(0);
        let ptr = tensor.data_ptr() as *const u8;
        if len == 0 || ptr.is_null() {
            TensorData::Fixed(Bytes::new())
        } else {
            // SAFETY: the runtime owns `len` readable bytes at `ptr` while `value` lives.
            TensorData::Fixed(Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(ptr, len) }))
        }
    };
    Ok(Tensor {
        name: name.to_string(),
        datatype,
        shape,
        data,
    })
}

fn read_strings(value: &DynValue, count: usize) -> ort::Result<Vec<Bytes>> {
    let api = ort::api();
    let mut total = 0usize;
    // SAFETY: `value` is a live string tensor (checked by the caller's type match).
    unsafe { ort::Error::result_from_status((api.GetStringTensorDataLength)(value.ptr(), &mut total)) }?;
    let mut data = vec![0u8; total];
    let mut offsets = vec![0usize; count + 1];
    unsafe {
        ort::Error::result_from_status((api.GetStringTensorContent)(
            value.ptr(),
            data.as_mut_ptr().cast(),
            total,
            offsets.as_mut_ptr(),
            count,
        ))
    }?;
    offsets[count] = total;
    let data = Bytes::from(data);
    Ok(offsets.windows(2).map(|w| data.slice(w[0]..w[1])).collect())
}
