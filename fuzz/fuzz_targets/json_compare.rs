//! Any two bodies (JSON or not) through the shadow comparison: a list of differences, never a
//! panic.
#![no_main]

use bytes::Bytes;
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use switchyard::shadow::compare::{diff, normalize_path, Answer, Ignore};

fuzz_target!(|data: &[u8]| {
    let cut = data.iter().position(|b| *b == 0).unwrap_or(data.len() / 2);
    let (left, right) = data.split_at(cut);
    let answer = |body: &[u8]| Answer {
        status: 200,
        headers: HeaderMap::new(),
        body: Bytes::copy_from_slice(body),
        truncated: false,
    };
    let ignore_paths = vec!["/a".to_string(), "/b/0".to_string()];
    let ignore = Ignore { headers: &[], json_paths: &ignore_paths };
    let _ = diff(&answer(left), &answer(right), &ignore);
    let _ = normalize_path(&String::from_utf8_lossy(left));
});
