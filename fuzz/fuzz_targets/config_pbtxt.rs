//! `config.pbtxt` text format and the load API's JSON config (the same bytes
//! through both parsers).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::repository::config::{parse_json, parse_text};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for result in [parse_text(&text), parse_json(&text)] {
        if let Err(e) = result {
            assert!(!e.is_empty() && e.len() <= 1024, "{e}");
        }
    }
});
