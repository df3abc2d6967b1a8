//! Client library for Switchyard and other KServe V2 / Triton servers.
//!
//! The crate has one tensor model and two transports. [`Tensor`] holds typed
//! element data ([`Data`]) and converts to and from the two wire forms the
//! protocol knows: raw little-endian bytes (gRPC `raw_*_contents`, the HTTP
//! binary tensor data extension) and JSON `data` arrays. [`HttpClient`] speaks
//! the REST protocol over `reqwest` and can send and receive tensors as JSON or
//! binary ([`Encoding`]); [`GrpcClient`] wraps the generated tonic client of
//! `inference.GRPCInferenceService`. Both take the same [`InferOptions`] and
//! return the same [`InferResult`], so callers (the CLI, the server's
//! integration tests, load generators) can switch protocols freely. Errors from
//! the server keep their protocol's status ([`ClientError::Http`],
//! [`ClientError::Grpc`]) so tests can assert on them.
//!
//! Connections take [`ClientOptions`]: a connect and a request timeout (a
//! call that exceeds one fails with [`ClientError::Timeout`]) and
//! [`TlsOptions`] (rustls: a CA bundle, a client certificate for mutual TLS,
//! the server name to expect), the same for both protocols.
//!
//! The HTTP wire format lives in `http::codec` as pure functions, unit-tested
//! without a server. [`perf`] is a load generator on top of both transports
//! (the CLI's `perf` subcommand, and usable in-process by benchmarks).

mod error;
mod grpc;
mod http;
mod options;
pub mod perf;
mod tensor;
mod tls;

pub use error::{ClientError, TimeoutPhase};
pub use grpc::GrpcClient;
pub use http::HttpClient;
pub use options::{ClientOptions, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, TlsOptions};
pub use switchyard_proto::inference as proto;
pub use tensor::{Data, Tensor};

/// How tensors travel over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// JSON `data` arrays.
    #[default]
    Json,
    /// Triton's binary tensor data extension: raw bytes after the JSON header.
    Binary,
}

/// Options of one inference request, shared by both protocols.
#[derive(Debug, Clone, Default)]
pub struct InferOptions {
    /// Model version; `None` lets the server choose.
    pub model_version: Option<String>,
    /// Request id, echoed back by the server.
    pub id: Option<String>,
    /// Outputs to return; empty means all.
    pub outputs: Vec<String>,
    /// Request-level parameters. Over gRPC they become `InferParameter`s
    /// (bool, int64 — or uint64 above `i64::MAX` —, double, string); other
    /// JSON values are rejected.
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// HTTP only: how inputs are sent. FP16/BF16 tensors, BYTES tensors with a
    /// non-UTF-8 element and floating-point tensors holding NaN or infinity
    /// have no JSON form and are always sent binary.
    pub input_encoding: Encoding,
    /// HTTP only: how outputs are asked for (`binary_data_output`).
    pub output_encoding: Encoding,
}

/// The outputs of one inference request.
#[derive(Debug, Clone, PartialEq)]
pub struct InferResult {
    /// Model that answered.
    pub model_name: String,
    /// Version that answered (empty when the server does not say).
    pub model_version: String,
    /// The request id, echoed back (empty when none was given).
    pub id: String,
    /// Output tensors, in the server's order.
    pub outputs: Vec<Tensor>,
}

impl InferResult {
    /// The output called `name`, if the server returned it.
    pub fn output(&self, name: &str) -> Option<&Tensor> {
        self.outputs.iter().find(|t| t.name == name)
    }
}
