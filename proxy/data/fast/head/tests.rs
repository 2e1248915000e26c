use super::*;

const LIMITS: HeadLimits = HeadLimits {
    max_bytes: 1024,
    max_headers: 8,
};

fn take_from(bytes: &[u8]) -> (Taken, BytesMut) {
    let mut input = BytesMut::from(bytes);
    let taken = take(&mut input, LIMITS, &mut Vec::new());
    (taken, input)
}

#[test]
fn a_get_is_taken_with_its_lines_in_order_and_the_next_request_left() {
    let first =
        "GET /cart?item=7 HTTP/1.1\r\nHost: shop\r\nX-A: 1\r\nx-a: 2\r\nAccept: */*\r\n\r\n";
    let second = "GET /next HTTP/1.1\r\nhost: shop\r\n\r\n";
    let (taken, left) = take_from(format!("{first}{second}").as_bytes());
    let Taken::Request {
        request,
        keep_alive,
    } = taken
    else {
        panic!("taken: {taken:?}");
    };
    assert!(keep_alive);
    assert_eq!(request.method(), Method::GET);
    assert_eq!(request.uri(), "/cart?item=7");
    assert_eq!(request.version(), Version::HTTP_11);
    assert!(matches!(request.body(), Inbound::Empty), "no body");
    let lines: Vec<_> = request
        .headers()
        .iter()
        .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
        .collect();
    assert_eq!(lines, ["host: shop", "x-a: 1", "x-a: 2", "accept: */*"]);
    assert_eq!(&left[..], second.as_bytes(), "the pipelined request stays");
}

#[test]
fn a_head_not_yet_whole_waits_and_moves_no_byte() {
    let (taken, left) = take_from(b"GET / HTTP/1.1\r\nHost: sh");
    assert!(matches!(taken, Taken::Partial), "{taken:?}");
    assert_eq!(&left[..], b"GET / HTTP/1.1\r\nHost: sh");
}

#[test]
fn what_the_fast_path_does_not_serve_is_left_to_hyper_byte_for_byte() {
    let many_lines = format!("GET / HTTP/1.1\r\n{}\r\n", "a: 1\r\n".repeat(9));
    let too_long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(1100));
    let cases: [&str; 15] = [
        // A body not all here yet: hyper streams it.
        "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\nhi",
        // Lengths hyper judges: two lines, a list, a sign, not a number.
        "POST / HTTP/1.1\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nhi",
        "POST / HTTP/1.1\r\ncontent-length: 2, 2\r\n\r\nhi",
        "POST / HTTP/1.1\r\ncontent-length: +2\r\n\r\nhi",
        "POST / HTTP/1.1\r\ncontent-length: 0x2\r\n\r\nhi",
        "POST / HTTP/1.1\r\ncontent-length: 99999999999999999999\r\n\r\nhi",
        "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: a\r\nTE: trailers\r\n\r\n",
        "GET / HTTP/1.0\r\nhost: a\r\n\r\n",
        "CONNECT a:443 HTTP/1.1\r\nhost: a:443\r\n\r\n",
        "GET / HTTP/1.1\r\nbad line\r\n\r\n",
        &many_lines,
        &too_long,
    ];
    for case in cases {
        let (taken, left) = take_from(case.as_bytes());
        assert!(matches!(taken, Taken::Hyper), "{case:?}: {taken:?}");
        assert_eq!(
            &left[..],
            case.as_bytes(),
            "{case:?}: every byte left for hyper"
        );
    }
}

#[test]
fn a_body_that_came_with_its_head_is_taken_whole_and_the_next_request_left() {
    let first = "POST /orders HTTP/1.1\r\nhost: shop\r\nContent-Length: 5\r\n\r\nhello";
    let second = "GET /next HTTP/1.1\r\nhost: shop\r\n\r\n";
    let (taken, left) = take_from(format!("{first}{second}").as_bytes());
    let Taken::Request { request, .. } = taken else {
        panic!("taken: {taken:?}");
    };
    assert_eq!(request.method(), Method::POST);
    assert!(matches!(request.body(), Inbound::Whole(b) if b == "hello"));
    assert_eq!(request.headers()["content-length"], "5", "the line kept");
    assert_eq!(&left[..], second.as_bytes(), "the pipelined request stays");
    // A declared length of 0 is a whole, empty body.
    let (taken, left) = take_from(b"GET / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    let Taken::Request { request, .. } = taken else {
        panic!("taken: {taken:?}");
    };
    assert!(matches!(request.body(), Inbound::Whole(b) if b.is_empty()));
    assert!(left.is_empty());
}

#[test]
fn a_target_the_uri_type_refuses_goes_back_whole_to_hyper() {
    // httparse reads any visible byte in a target; `http::Uri` refuses `<`, `>` and a backtick.
    assert!(Uri::from_maybe_shared(Bytes::from_static(b"/a<b")).is_err());
    for raw in [
        "GET /a<b HTTP/1.1\r\nhost: a\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        "POST /a<b HTTP/1.1\r\ncontent-length: 2\r\n\r\nhiGET / HTTP/1.1\r\n\r\n",
    ] {
        let (taken, left) = take_from(raw.as_bytes());
        assert!(matches!(taken, Taken::Hyper), "{taken:?}");
        assert_eq!(&left[..], raw.as_bytes());
    }
}

#[test]
fn connection_close_anywhere_in_the_list_ends_the_connection() {
    for value in ["close", "Close", "keep-alive, CLOSE", " close ,x"] {
        let raw = format!("GET / HTTP/1.1\r\nhost: a\r\nconnection: {value}\r\n\r\n");
        let (taken, _) = take_from(raw.as_bytes());
        let Taken::Request { keep_alive, .. } = taken else {
            panic!("{value}: {taken:?}");
        };
        assert!(!keep_alive, "{value}");
    }
    let (taken, _) = take_from(b"GET / HTTP/1.1\r\nconnection: closed\r\n\r\n");
    assert!(
        matches!(
            taken,
            Taken::Request {
                keep_alive: true,
                ..
            }
        ),
        "{taken:?}"
    );
}

fn head(parts: &Parts, body: BodyHint, head_request: bool, keep: bool) -> (String, Framing, bool) {
    let mut out = Vec::new();
    let (framing, kept) = encode(parts, body, head_request, keep, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.ends_with("\r\n\r\n"), "{text}");
    let date = text.lines().filter(|l| l.starts_with("date: ")).count();
    assert_eq!(date, 1, "one date line: {text}");
    // The date aside, for comparison.
    let text = text
        .split("\r\n")
        .filter(|l| !l.starts_with("date: "))
        .collect::<Vec<_>>()
        .join("\r\n");
    (text, framing, kept)
}

fn response(status: u16, lines: &[(&str, &str)]) -> Parts {
    let mut response = http::Response::new(());
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    for (name, value) in lines {
        response.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    response.into_parts().0
}

#[test]
fn a_response_head_is_framed_by_its_body() {
    let ok = response(200, &[("x-a", "1")]);
    let (text, framing, kept) = head(&ok, BodyHint::Known(5), false, true);
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 5\r\n\r\n"
    );
    assert_eq!((framing, kept), (Framing::Length(5), true));
    let (text, framing, _) = head(&ok, BodyHint::Unknown, false, true);
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    assert_eq!(framing, Framing::Chunked);
    let (text, framing, _) = head(&ok, BodyHint::Empty, false, true);
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n"
    );
    assert_eq!(framing, Framing::Length(0));
}

#[test]
fn head_204_and_304_send_no_body_and_keep_their_length_lines_as_hyper_does() {
    let with_length = response(200, &[("content-length", "12")]);
    let (text, framing, _) = head(&with_length, BodyHint::Empty, true, true);
    assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n");
    assert_eq!(framing, Framing::Length(0));
    let (text, framing, _) = head(&response(204, &[]), BodyHint::Unknown, false, true);
    assert_eq!(text, "HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(framing, Framing::Length(0));
    let not_modified = response(304, &[("etag", "\"v1\"")]);
    let (text, framing, _) = head(&not_modified, BodyHint::Known(10), false, true);
    assert_eq!(text, "HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\n\r\n");
    assert_eq!(framing, Framing::Length(0));
}

#[test]
fn a_connection_not_kept_says_close_once() {
    let (text, _, kept) = head(&response(200, &[]), BodyHint::Empty, false, false);
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
    );
    assert!(!kept);
    let listed = response(200, &[("connection", "x-trace")]);
    let (text, _, _) = head(&listed, BodyHint::Empty, false, false);
    assert!(
        text.contains("\r\nconnection: x-trace, close\r\n"),
        "{text}"
    );
    let closing = response(200, &[("connection", "close")]);
    let (text, _, kept) = head(&closing, BodyHint::Empty, false, true);
    assert!(!kept, "a response's close ends the connection");
    assert_eq!(text.matches("close").count(), 1, "{text}");
}

#[test]
fn a_coding_without_chunked_last_gets_it_and_values_join() {
    let gzip = response(
        200,
        &[("transfer-encoding", "gzip"), ("vary", "a"), ("vary", "b")],
    );
    let (text, framing, _) = head(&gzip, BodyHint::Unknown, false, true);
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\nvary: a\r\nvary: b\r\n\r\n"
    );
    assert_eq!(framing, Framing::Chunked);
    // `chunked` already last, in one value with another coding: nothing added.
    let listed = response(200, &[("transfer-encoding", "gzip, chunked")]);
    let (text, _, _) = head(&listed, BodyHint::Unknown, false, true);
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n"
    );
}

#[test]
fn heads_hyper_refuses_are_refused() {
    let mut out = Vec::new();
    let early = response(103, &[]);
    assert_eq!(
        encode(&early, BodyHint::Empty, false, true, &mut out),
        Err(HeadError::Informational)
    );
    let bad = response(200, &[("content-length", "x")]);
    assert_eq!(
        encode(&bad, BodyHint::Unknown, false, true, &mut out),
        Err(HeadError::ContentLength)
    );
    let two = response(200, &[("content-length", "1"), ("content-length", "2")]);
    assert_eq!(
        encode(&two, BodyHint::Unknown, false, true, &mut out),
        Err(HeadError::ContentLength)
    );
}

#[test]
fn a_reason_phrase_from_the_upstream_is_kept() {
    let mut parts = response(200, &[]);
    parts
        .extensions
        .insert(hyper::ext::ReasonPhrase::from_static(b"Fine Thanks"));
    let (text, _, _) = head(&parts, BodyHint::Empty, false, true);
    assert!(text.starts_with("HTTP/1.1 200 Fine Thanks\r\n"), "{text}");
    let (text, _, _) = head(&response(599, &[]), BodyHint::Empty, false, true);
    assert!(text.starts_with("HTTP/1.1 599 <none>\r\n"), "{text}");
}
