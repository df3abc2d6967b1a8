//! Generates the gRPC service and the model-config types into OUT_DIR, plus a
//! file descriptor set the server uses to parse `config.pbtxt` (protobuf text
//! format) and to print configs as JSON. protoc comes from a crate: no system
//! protoc is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = ["inference/grpc_service.proto", "inference/model_config.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("inference_descriptor.bin"))
        // Raw tensor contents arrive as `Bytes`: sliced out of the gRPC frame, not copied.
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .compile_with_config(config, &protos, &["."])?;
    Ok(())
}
