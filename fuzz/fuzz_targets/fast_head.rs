//! Arbitrary bytes through the fast path's head step (`data::fast::head`), as a connection reads
//! them: never a panic; a head left to hyper (or not yet whole) leaves every byte in place, so
//! hyper reads the request as it came; a taken request consumes exactly its head's and its whole
//! body's bytes, the next request's stay; the same request whether the bytes come at once or in
//! pieces, except that a body still on its way when its head is whole is left to hyper. A taken
//! request then gets a response head written with its own lines as the response's, which must end
//! the head once, where it should.
#![no_main]

use bytes::BytesMut;
use http::Response;
use libfuzzer_sys::fuzz_target;
use switchyard::data::fast::head::{encode, take, BodyHint, HeadLimits, Taken};
use switchyard::data::shared::Inbound;

const LIMITS: HeadLimits = HeadLimits {
    max_bytes: 8192,
    max_headers: 64,
};

/// What `take` makes of `input` fed in pieces of `step` bytes, retrying after each piece, how
/// many bytes a taken request used, and how many of them were its body.
fn read(input: &[u8], step: usize) -> (String, usize, usize) {
    let mut buffer = BytesMut::new();
    let mut lines = Vec::new();
    for piece in input.chunks(step.max(1)) {
        buffer.extend_from_slice(piece);
        let before = buffer.clone();
        match take(&mut buffer, LIMITS, &mut lines) {
            Taken::Partial => assert_eq!(buffer, before, "a partial head moved bytes"),
            Taken::Hyper => {
                assert_eq!(buffer, before, "a head left to hyper lost bytes");
                return ("hyper".into(), 0, 0);
            }
            Taken::Request { request, keep_alive } => {
                let used = before.len() - buffer.len();
                assert_eq!(&before[used..], &buffer[..], "the bytes after the request moved");
                let body = match request.body() {
                    Inbound::Whole(body) => body.clone(),
                    Inbound::Empty => Default::default(),
                    Inbound::Streamed(_) => panic!("the fast path streams no body"),
                };
                let head = used - body.len();
                assert!(before[..head].ends_with(b"\n"), "a head ends with its empty line");
                assert_eq!(&before[head..used], &body[..], "the body is the bytes after the head");
                respond(&request);
                let seen = format!("{request:?} {keep_alive}");
                return (seen, used, body.len());
            }
        }
    }
    ("partial".into(), 0, 0)
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
    let (whole, used, body) = read(input, input.len());
    let (pieces, used_in_pieces, _) = read(input, usize::from(step));
    if body > 0 && pieces == "hyper" {
        // The head was whole in an earlier piece than the end of its body: hyper streams it.
        return;
    }
    // Only the first request counts, so the pieces it arrives in change nothing.
    assert_eq!(whole, pieces, "the result depends on how the bytes arrive");
    assert_eq!(used, used_in_pieces, "the request's length depends on how the bytes arrive");
});
