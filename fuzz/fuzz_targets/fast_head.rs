//! Arbitrary bytes through the fast path's head step (`data::fast::head`), as a connection reads
//! them: never a panic; a head left to hyper (or not yet whole) leaves every byte in place, so
//! hyper reads the request as it came; a taken head consumes exactly its own bytes, the next
//! request's stay; the same request whether the bytes come at once or in pieces. A taken request
//! then gets a response head written with its own lines as the response's, which must end the head
//! once, where it should.
#![no_main]

use bytes::BytesMut;
use http::Response;
use libfuzzer_sys::fuzz_target;
use switchyard::data::fast::head::{encode, take, BodyHint, HeadLimits, Taken};

const LIMITS: HeadLimits = HeadLimits {
    max_bytes: 8192,
    max_headers: 64,
};

/// What `take` makes of `input` fed in pieces of `step` bytes, retrying after each piece, and
/// how many bytes a taken head used.
fn read(input: &[u8], step: usize) -> (String, usize) {
    let mut buffer = BytesMut::new();
    let mut lines = Vec::new();
    for piece in input.chunks(step.max(1)) {
        buffer.extend_from_slice(piece);
        let before = buffer.clone();
        match take(&mut buffer, LIMITS, &mut lines) {
            Taken::Partial => assert_eq!(buffer, before, "a partial head moved bytes"),
            Taken::Hyper => {
                assert_eq!(buffer, before, "a head left to hyper lost bytes");
                return ("hyper".into(), 0);
            }
            Taken::Request { request, keep_alive } => {
                let used = before.len() - buffer.len();
                assert_eq!(&before[used..], &buffer[..], "the bytes after the head moved");
                assert!(before[..used].ends_with(b"\n"), "a head ends with its empty line");
                respond(&request);
                let seen = format!("{request:?} {keep_alive}");
                return (seen, used);
            }
        }
    }
    ("partial".into(), 0)
}

/// Writes a response head carrying the request's lines: one blank line, at the end.
fn respond(request: &http::Request<switchyard::data::shared::Inbound>) {
    let mut response = Response::new(());
    *response.headers_mut() = request.headers().clone();
    let (parts, ()) = response.into_parts();
    for (hint, head) in [(BodyHint::Known(3), false), (BodyHint::Unknown, true), (BodyHint::Empty, false)] {
        let mut out = Vec::new();
        if encode(&parts, hint, head, hint == BodyHint::Empty, &mut out).is_ok() {
            let end = out.windows(4).position(|w| w == b"\r\n\r\n");
            assert_eq!(end, Some(out.len() - 4), "the head ends once, at its end");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else { return };
    let (whole, used) = read(input, input.len());
    let (pieces, used_in_pieces) = read(input, usize::from(step));
    // Only the first head counts, so the pieces it arrives in change nothing.
    assert_eq!(whole, pieces, "the result depends on how the bytes arrive");
    assert_eq!(used, used_in_pieces, "the head's length depends on how the bytes arrive");
});
