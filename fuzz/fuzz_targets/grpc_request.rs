//! The gRPC path of a request: protobuf decoding of `ModelInferRequest` (as
//! tonic does it), then the conversion to the core's request (typed contents
//! and `raw_input_contents` checked against shapes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use switchyard_proto::inference::ModelInferRequest;

/// The element limit of the conversion under test.
const MAX_ELEMENTS: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = ModelInferRequest::decode(data) else {
        return;
    };
    match switchyard::grpc::decode_request(request, MAX_ELEMENTS) {
        Ok(r) => {
            for t in &r.inputs {
                assert!(t.data_elements() <= MAX_ELEMENTS, "input '{}' over the limit", t.name);
            }
        }
        Err(e) => assert!(!e.message.is_empty() && e.message.len() <= 1024, "{}", e.message),
    }
});
