//! The audit export verifier (`hearth audit verify --file`): a file a person hands over.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = hearth_core::export::verify_export(text.lines());
});
