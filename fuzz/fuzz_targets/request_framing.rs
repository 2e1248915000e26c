//! Arbitrary bytes through the request-framing scanner, whole and in arbitrary pieces: the same
//! events and the same refusal at the same byte however the bytes arrive, never a panic, and
//! never a refusal past the bytes fed. Also with the scanner's buffer released whenever a piece
//! ends between requests, as an idle connection that parks does (`data::http1`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::data::framing::{Event, Refused, Scanner};

const POST: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";

fn scan(pieces: &[&[u8]], park: bool) -> (Vec<Event>, Option<Refused>) {
    let mut scanner = Scanner::new(8192);
    let mut events = Vec::new();
    let mut offset = 0;
    for piece in pieces {
        if let Err(r) = scanner.feed(piece, |e| events.push(e)) {
            assert!(r.at < piece.len(), "refused past the bytes fed");
            return (events, Some(Refused { at: offset + r.at, error: r.error }));
        }
        offset += piece.len();
        if park && events.last() == Some(&Event::Ended) {
            scanner.release();
        }
    }
    (events, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    // Half the inputs start inside a chunked body, where most of the grammar is.
    let input = if mode & 1 == 1 { [POST, rest].concat() } else { rest.to_vec() };
    let whole = scan(&[&input], false);
    // Cut the same bytes into pieces whose lengths come from the mode byte.
    let step = usize::from(mode >> 1).max(1);
    let pieces: Vec<&[u8]> = input.chunks(step).collect();
    assert_eq!(whole, scan(&pieces, false), "the result depends on how the bytes arrive");
    assert_eq!(whole, scan(&pieces, true), "parking between requests changes the result");
    let bytewise: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(whole, scan(&bytewise, false));
});
