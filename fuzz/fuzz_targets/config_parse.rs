//! Any text given to the configuration parser and validator gives a config or an error, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = switchyard::config::parse(std::path::Path::new("fuzz.yaml"), &text);
});
