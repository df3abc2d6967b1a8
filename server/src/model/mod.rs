//! Models as the rest of the server sees them: a signature (inputs and
//! outputs with types and shapes) and executors that run batches, built by a
//! [`Backend`] from a model file's bytes. Only `onnx` touches ONNX Runtime;
//! the deploy pipeline sees the [`Backend`] trait, so it runs with a mock in tests.

pub mod onnx;

use crate::error::Result;
use crate::tensor::{DataType, Tensor, TensorData};

/// Runs one batch. Implemented by the ONNX Runtime session wrapper; tests
/// use mocks. Each executor thread of the `batching` scheduler owns one.
pub trait Executor: Send + 'static {
    /// Runs `inputs` (in model input order, each already batched) and returns
    /// every model output for the whole batch.
    fn run(&mut self, inputs: Vec<BatchInput<'_>>) -> Result<Vec<Tensor>>;

    /// Runs like [`Executor::run`], then gives back the memory the runtime
    /// kept from this run for later ones. Warm-up runs use it, so that an
    /// idle version does not hold the peak of its largest warm-up batch.
    fn run_releasing(&mut self, inputs: Vec<BatchInput<'_>>) -> Result<Vec<Tensor>> {
        self.run(inputs)
    }
}

/// One input of a batch: the parts of every request, to be concatenated
/// along the batch dimension by the executor (once, into its own buffer).
#[derive(Debug)]
pub struct BatchInput<'a> {
    /// Input name.
    pub name: &'a str,
    /// Element type.
    pub datatype: crate::tensor::DataType,
    /// Shape of the whole batch.
    pub shape: Vec<i64>,
    /// Each request's data, in batch order.
    pub parts: Vec<&'a TensorData>,
}

/// Builds the executors of a model version.
pub trait Backend: Send + Sync + 'static {
    /// `instances` executors for the model file `model` (blocking). An
    /// `InvalidArgument` error means the file was refused; any other kind is
    /// the server's failure.
    fn load(&self, model: &[u8], settings: &SessionSettings, instances: usize) -> Result<Loaded>;
}

/// Sessions of one model version, ready to execute.
pub struct Loaded {
    /// The model's inputs and outputs.
    pub signature: Signature,
    /// One executor per instance.
    pub executors: Vec<Box<dyn Executor>>,
    /// Where the sessions run.
    pub device: Device,
    /// Why the device differs from the request, when it does.
    pub device_note: Option<String>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded").field("device", &self.device).finish()
    }
}

/// One input or output as the model file declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct IoSpec {
    /// Tensor name.
    pub name: String,
    /// Element type; `Err` holds the runtime's name of a type the protocol cannot carry.
    pub datatype: Result<DataType, String>,
    /// Full shape as declared by the model; -1 marks a variable dimension.
    pub dims: Vec<i64>,
}

/// Inputs and outputs of a model file, in the model's order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Signature {
    /// Inputs.
    pub inputs: Vec<IoSpec>,
    /// Outputs.
    pub outputs: Vec<IoSpec>,
    /// Inputs with a default value in the file (ONNX initializers that a
    /// request may override). They are inputs only where the configuration
    /// names them, as Triton's optional inputs: a model file of an older IR
    /// lists every weight this way, so they are never added on their own.
    pub defaulted_inputs: Vec<IoSpec>,
}

/// Where a session's kernels run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// CPU execution provider.
    #[default]
    Cpu,
    /// CUDA execution provider on the given device.
    Cuda(i32),
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(id) => write!(f, "cuda:{id}"),
        }
    }
}

/// What a model's config asks of the execution provider.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DeviceRequest {
    /// CPU only (`KIND_CPU`).
    #[default]
    Cpu,
    /// GPU if the CUDA provider attaches, CPU otherwise (`KIND_AUTO`), reported.
    Auto,
    /// GPU required (`KIND_GPU` or a `gpu_execution_accelerator`); CPU only when
    /// the config sets the `allow_cpu_fallback` parameter.
    Gpu {
        /// CUDA device id.
        device_id: i32,
        /// Fall back to CPU (reported) when CUDA cannot be registered.
        allow_cpu_fallback: bool,
    },
}

/// Session options drawn from the model config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionSettings {
    /// Intra-op threads (0: ONNX Runtime's default).
    pub intra_op_threads: usize,
    /// Inter-op threads (0: ONNX Runtime's default).
    pub inter_op_threads: usize,
    /// Run independent graph branches in parallel.
    pub parallel_execution: bool,
    /// Graph optimization level as Triton spells it: -1 basic, 1 extended, 2 disabled; 0 = all.
    pub graph_optimization_level: i32,
    /// Requested device.
    pub device: DeviceRequest,
    /// Let ONNX Runtime's pool threads spin between work items (its default).
    /// Off by default here: the server's network and executor threads share the
    /// cores, and spinning pool threads take CPU from them.
    pub allow_spinning: bool,
    /// ONNX Runtime's CPU memory arena (its default: on). Off, tensors are
    /// allocated and freed per run, and idle memory goes back.
    pub mem_arena: bool,
    /// ONNX Runtime's memory pattern optimisation (its default: on).
    pub mem_pattern: bool,
}
