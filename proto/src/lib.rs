//! Wire types of the KServe V2 / Open Inference Protocol with Triton's
//! extensions (`package inference`), generated at build time from `proto/`.
//!
//! The `.proto` files are Switchyard's own wire-compatible definitions: same
//! service, RPC, message and field names and numbers as Triton's, so unmodified
//! Triton clients interoperate.

#![allow(clippy::all, missing_docs)]

/// `package inference`: the gRPC service, its messages and Triton's `ModelConfig`.
pub mod inference {
    tonic::include_proto!("inference");
}

/// Encoded `FileDescriptorSet` of every generated message (for reflection:
/// text-format parsing of `config.pbtxt`, JSON printing of configs).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("inference_descriptor");
