//! Arbitrary bytes through the Host / authority syntax check: never a panic, and what it accepts
//! holds none of the characters that would let routing and the upstream read it differently, and
//! parses as an `http` authority.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::data::authority;

fuzz_target!(|data: &[u8]| {
    if authority::check(data).is_ok() {
        assert!(!data.is_empty());
        assert!(
            !data.iter().any(|b| b"/?#@\\ \t\r\n\"<>{}|^`".contains(b) || *b < 0x20 || *b >= 0x7f),
            "accepted {data:?}"
        );
        assert!(http::uri::Authority::try_from(data).is_ok(), "http refuses {data:?}");
    }
});
