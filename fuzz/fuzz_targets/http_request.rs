//! The HTTP inference request decoder: a JSON body, or (when the first byte is
//! odd) a JSON header of the length given by the next two bytes followed by
//! binary tensor data, as with `Inference-Header-Content-Length`.
#![no_main]

use std::time::Instant;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchyard::http::codec::decode_request;

/// The element limit of the decoder under test.
const MAX_ELEMENTS: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let (header_len, body) = match data {
        [flag, hi, lo, rest @ ..] if flag & 1 == 1 => (Some(usize::from(u16::from_be_bytes([*hi, *lo]))), rest),
        _ => (None, data),
    };
    let body = Bytes::copy_from_slice(body);
    match decode_request(body, header_len, "m", None, MAX_ELEMENTS, Instant::now()) {
        Ok(decoded) => {
            for t in &decoded.request.inputs {
                assert!(t.data_elements() <= MAX_ELEMENTS, "input '{}' over the limit", t.name);
            }
        }
        Err(e) => assert!(!e.message.is_empty() && e.message.len() <= 1024, "{}", e.message),
    }
});
