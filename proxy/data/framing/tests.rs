//! The scanner on whole requests and on every split of them: what it reports, what it refuses and
//! at which byte.

use super::*;

const POST: &[u8] = b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";

/// Feeds `bytes` in one piece; returns the events and the refusal, with `at` relative to `bytes`.
fn scan(bytes: &[u8]) -> (Vec<Event>, Option<Refused>) {
    let mut scanner = Scanner::new(65536);
    let mut events = Vec::new();
    let refused = scanner.feed(bytes, |e| events.push(e)).err();
    (events, refused)
}

/// Feeds `bytes` one byte at a time; the result must not depend on how the bytes arrive.
fn scan_bytewise(bytes: &[u8]) -> (Vec<Event>, Option<Refused>) {
    let mut scanner = Scanner::new(65536);
    let mut events = Vec::new();
    for (i, b) in bytes.iter().enumerate() {
        if let Err(r) = scanner.feed(std::slice::from_ref(b), |e| events.push(e)) {
            return (
                events,
                Some(Refused {
                    at: i + r.at,
                    error: r.error,
                }),
            );
        }
    }
    (events, None)
}

fn chunked(body: &[u8]) -> Vec<u8> {
    [POST, body].concat()
}

/// The refusal of a chunked body, with `at` relative to the body.
fn refusal(body: &[u8]) -> Option<(usize, FramingError)> {
    let whole = scan(&chunked(body));
    assert_eq!(
        whole,
        scan_bytewise(&chunked(body)),
        "split changes the result"
    );
    whole.1.map(|r| (r.at - POST.len(), r.error))
}

#[test]
fn valid_chunked_bodies_pass_with_their_sizes() {
    for body in [
        &b"3\r\nabc\r\n0\r\n\r\n"[..],
        b"A\r\n0123456789\r\n0\r\n\r\n",
        b"a;name\r\n0123456789\r\n0;last=1\r\n\r\n",
        b"3 ;a = b ; c=\"q \\\" \xe9\"\r\nabc\r\n0\r\n\r\n",
        b"000000000000003\r\nabc\r\n0\r\nX-Sum: 1\r\nX-Other:\tv w\r\n\r\n",
        b"0\r\n\r\n",
    ] {
        let (events, refused) = scan(&chunked(body));
        assert_eq!(refused, None, "{:?}", String::from_utf8_lossy(body));
        assert_eq!(events.first(), Some(&Event::Started));
        assert_eq!(events.get(1), Some(&Event::Head));
        assert_eq!(events.last(), Some(&Event::Ended), "{events:?}");
        assert_eq!(scan_bytewise(&chunked(body)), (events, None));
    }
    let (events, _) = scan(&chunked(b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n"));
    assert_eq!(
        events,
        [
            Event::Started,
            Event::Head,
            Event::Chunk(3),
            Event::Chunk(16),
            Event::Ended
        ]
    );
}

#[test]
fn malformed_chunk_lines_are_refused_at_the_offending_byte() {
    use FramingError as E;
    let cases: &[(&[u8], usize, FramingError)] = &[
        (b"zz\r\nabc\r\n0\r\n\r\n", 0, E::ChunkSize),
        (b"0x3\r\nabc\r\n0\r\n\r\n", 1, E::ChunkSize),
        (b"+3\r\nabc\r\n0\r\n\r\n", 0, E::ChunkSize),
        (b"-3\r\nabc\r\n0\r\n\r\n", 0, E::ChunkSize),
        (b" 3\r\nabc\r\n0\r\n\r\n", 0, E::ChunkSize),
        (b"3 \r\nabc\r\n0\r\n\r\n", 2, E::ChunkSize),
        (b"3\t\r\nabc\r\n0\r\n\r\n", 2, E::ChunkSize),
        (b"3_0\r\nabc\r\n0\r\n\r\n", 1, E::ChunkSize),
        (b"3\nabc\r\n0\r\n\r\n", 1, E::LineEnding),
        (b"3\rabc\r\n0\r\n\r\n", 2, E::LineEnding),
        (b"3\r\nabc\n0\r\n\r\n", 6, E::ChunkData),
        (b"3\r\nabcX0\r\n\r\n", 6, E::ChunkData),
        (b"3\r\nab\r\n\r\n0\r\n\r\n", 6, E::ChunkData),
        (b"3\r\nabc\r\n0\n\r\n", 9, E::LineEnding),
        (b"3\r\nabc\r\n0\r\n\n", 11, E::LineEnding),
        (
            b"000000000000000003\r\nabc\r\n0\r\n\r\n",
            16,
            E::ChunkSizeTooLong,
        ),
        (
            b"fffffffffffffffff\r\nabc\r\n0\r\n\r\n",
            16,
            E::ChunkSizeTooLong,
        ),
        (b"3;a=\x01\r\nabc\r\n0\r\n\r\n", 4, E::ChunkExtension),
        (b"3;a\x00b\r\nabc\r\n0\r\n\r\n", 3, E::ChunkExtension),
        (b"3;@\r\nabc\r\n0\r\n\r\n", 2, E::ChunkExtension),
        (b"3;a \r\nabc\r\n0\r\n\r\n", 4, E::ChunkExtension),
        (b"3;a=\"x\"y\r\nabc\r\n0\r\n\r\n", 7, E::ChunkExtension),
        (b"3;a=\"x\r\nabc\r\n0\r\n\r\n", 6, E::ChunkExtension),
        (b"3;a\nabc\r\n0\r\n\r\n", 3, E::LineEnding),
        (b"3\r\nabc\r\n0\r\nX-T: v\n\r\n", 17, E::LineEnding),
        (b"3\r\nabc\r\n0\r\nX T: v\r\n\r\n", 12, E::Trailer),
        (b"3\r\nabc\r\n0\r\nX-T : v\r\n\r\n", 14, E::Trailer),
        (b"3\r\nabc\r\n0\r\nnocolon\r\n\r\n", 18, E::Trailer),
        (b"3\r\nabc\r\n0\r\n folded\r\n\r\n", 11, E::Trailer),
        (b"3\r\nabc\r\n0\r\nX-T: a\x00b\r\n\r\n", 17, E::Trailer),
    ];
    for (body, at, error) in cases {
        assert_eq!(
            refusal(body),
            Some((*at, *error)),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn long_chunk_lines_and_trailer_sections_are_refused() {
    let mut line = b"3;".to_vec();
    line.extend(std::iter::repeat_n(b'a', MAX_CHUNK_LINE));
    assert_eq!(
        refusal(&line),
        Some((MAX_CHUNK_LINE, FramingError::ChunkLineTooLong))
    );
    let mut trailers = b"0\r\n".to_vec();
    for i in 0..=MAX_TRAILER_LINES {
        trailers.extend(format!("x-{i}: v\r\n").bytes());
    }
    assert_eq!(
        refusal(&trailers).map(|r| r.1),
        Some(FramingError::TrailerTooLarge)
    );
}

#[test]
fn content_length_bodies_and_pipelined_requests_are_followed() {
    let two = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\r\n\
GET /b HTTP/1.1\r\nHost: a\r\n\r\n";
    let (events, refused) = scan(two);
    assert_eq!(refused, None);
    assert_eq!(
        events,
        [
            Event::Started,
            Event::Head,
            Event::Ended,
            Event::Started,
            Event::Head,
            Event::Ended
        ]
    );
    assert_eq!(scan_bytewise(two), (events, None));
    // A second request's bad chunk is refused at its own byte.
    let bad = [&two[..], POST, b"x\r\n"].concat();
    let (events, refused) = scan(&bad);
    assert_eq!(events.iter().filter(|e| **e == Event::Head).count(), 3);
    assert_eq!(refused.map(|r| r.at), Some(two.len() + POST.len()));
}

#[test]
fn the_scanner_steps_aside_for_what_it_does_not_follow() {
    for head in [
        &b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"[..],
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
    ] {
        let (events, refused) = scan(&[head, b"zz\r\n"].concat());
        assert_eq!(refused, None);
        assert_eq!(
            events.last(),
            Some(&Event::Opaque),
            "{:?}",
            String::from_utf8_lossy(head)
        );
    }
    // h2c is not an upgrade the proxy performs: the scanner keeps following the connection.
    let h2c =
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n";
    let (events, refused) = scan(&[&h2c[..], POST, b"zz"].concat());
    assert_eq!(events[..3], [Event::Started, Event::Head, Event::Ended]);
    assert!(refused.is_some());
}

#[test]
fn the_http2_preface_is_recognised_only_whole_and_first() {
    let (events, _) = scan(H2_PREFACE);
    assert_eq!(events, [Event::Started, Event::Preface, Event::Opaque]);
    assert_eq!(scan_bytewise(H2_PREFACE).0, events);
    let (events, _) = scan(&H2_PREFACE[..20]);
    assert_eq!(events, [Event::Started]);
    let (events, _) = scan(b"PRI * HTTP/2.0\r\n\r\nXX");
    assert_eq!(events, [Event::Started, Event::Opaque]);
}

#[test]
fn empty_lines_before_a_request_start_it() {
    let (events, refused) = scan(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(refused, None);
    assert_eq!(events, [Event::Started, Event::Head, Event::Ended]);
}
