//! The fast path's two heads, without I/O: a request head parsed in place into the request the
//! handler takes (or left to hyper), and a response head written as hyper's server writes it.
//!
//! A head is taken only when the fast path serves it exactly as hyper would: HTTP/1.1, no body or
//! one `Content-Length` of plain digits whose bytes all came with the head (no
//! `Transfer-Encoding`), no `Upgrade`, `Expect` or `TE`, not `CONNECT`, within the listener's
//! header limits, and a method, target and lines the `http` types accept. Everything else, a
//! malformed head and a body still on its way included, goes to hyper from the same bytes, so
//! hyper's answers (400, 431, 414, 100-continue, upgrades, HTTP/1.0's keep-alive rules) and its
//! streaming of a body stay the only ones.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::response::Parts;
use http::{HeaderMap, Method, Request, StatusCode, Uri, Version};

use crate::data::shared::Inbound;
use crate::data::upstream::h1::message;
use crate::data::{framing, headers};

/// Header lines parsed on the stack: hyper's default, which parses as many.
pub const MAX_HEADERS: usize = 100;
/// hyper answers a longer request target 414.
const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;

/// The listener's limits on a request head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Bytes of a head at most (hyper answers a longer one 431).
    pub max_bytes: usize,
    /// Header lines at most.
    pub max_headers: usize,
}

/// What the bytes read so far hold.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // made once per request and moved into the handler at once: a box would add an allocation
pub enum Taken {
    /// Not a whole head yet.
    Partial,
    /// A request the fast path serves; its head's and body's bytes have left the buffer.
    Request {
        request: Request<Inbound>,
        /// The client keeps the connection (no `Connection: close`).
        keep_alive: bool,
    },
    /// Anything else: hyper serves it, from the bytes still in the buffer.
    Hyper,
}

/// Where a line's name and value lie in the head.
#[derive(Clone, Copy)]
pub struct Line {
    name: (usize, usize),
    value: (usize, usize),
}

/// Reads a request head from the front of `input`. Bytes after a taken head (a pipelined
/// request) stay in `input`. The parser's slots are left uninitialised (httparse fills the ones
/// it uses) and `lines`, where the head's lines lie, is the connection's scratch list, kept between
/// requests: nothing of either is cleared per request.
pub fn take(input: &mut BytesMut, limits: HeadLimits, lines: &mut Vec<Line>) -> Taken {
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(input, &mut headers) {
        Ok(httparse::Status::Complete(len)) if len <= limits.max_bytes => len,
        Ok(httparse::Status::Partial) if input.len() < limits.max_bytes => return Taken::Partial,
        // Too large, too many lines, or malformed: hyper answers it.
        _ => return Taken::Hyper,
    };
    let (Some(method), Some(path), Some(1)) = (parsed.method, parsed.path, parsed.version) else {
        return Taken::Hyper;
    };
    if parsed.headers.len() > limits.max_headers || path.len() > MAX_URI_LEN || method == "CONNECT"
    {
        return Taken::Hyper;
    }
    let base = input.as_ptr() as usize;
    let at = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    lines.clear();
    let mut keep_alive = true;
    let mut length = None;
    for header in parsed.headers.iter() {
        let name = header.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            // One line of plain digits; a second line, a list or a sign is hyper's to judge.
            match (length, plain_length(header.value)) {
                (None, Some(n)) => length = Some(n),
                _ => return Taken::Hyper,
            }
        } else if hands_to_hyper(name) {
            return Taken::Hyper;
        }
        if name.eq_ignore_ascii_case(b"connection") && headers::lists(header.value, b"close") {
            keep_alive = false;
        }
        lines.push(Line {
            name: at(name),
            value: at(header.value),
        });
    }
    let body_len = match length {
        // The whole body came with the head; one still on its way is streamed by hyper.
        Some(n) if n <= input.len() - len => Some(n),
        Some(_) => return Taken::Hyper,
        None => None,
    };
    let (method, path) = (at(method.as_bytes()), at(path.as_bytes()));
    let head = input.split_to(len).freeze();
    let Some((method, uri, headers)) = build(&head, method, path, lines) else {
        // Put back what was split off: hyper reads the request as it came.
        let rest = input.split();
        input.extend_from_slice(&head);
        input.unsplit(rest);
        return Taken::Hyper;
    };
    let body = match body_len {
        Some(n) => Inbound::Whole(input.split_to(n).freeze()),
        None => Inbound::Empty,
    };
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Taken::Request {
        request,
        keep_alive,
    }
}

/// A `Content-Length` value the framing scanner reads the same way: digits only, as many as it
/// allows.
fn plain_length(value: &[u8]) -> Option<usize> {
    if value.len() > framing::MAX_LENGTH_DIGITS {
        return None;
    }
    usize::try_from(headers::decimal(value)?).ok()
}

/// A line that makes the request hyper's: a streamed body, an upgrade, an expectation, `TE`
/// (trailers).
fn hands_to_hyper(name: &[u8]) -> bool {
    const NAMES: [&[u8]; 4] = [b"transfer-encoding", b"upgrade", b"expect", b"te"];
    NAMES.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// The request's method, target and lines, values sharing the head's bytes; `None` where the
/// `http` types refuse a part (hyper then answers it).
fn build(
    head: &Bytes,
    method: (usize, usize),
    path: (usize, usize),
    lines: &[Line],
) -> Option<(Method, Uri, HeaderMap)> {
    let slice = |(at, len): (usize, usize)| head.slice(at..at + len);
    let method = Method::from_bytes(&head[method.0..method.0 + method.1]).ok()?;
    let uri = Uri::from_maybe_shared(slice(path)).ok()?;
    let mut headers = HeaderMap::with_capacity(lines.len());
    for line in lines {
        let name = HeaderName::from_bytes(&head[line.name.0..line.name.0 + line.name.1]).ok()?;
        let value = HeaderValue::from_maybe_shared(slice(line.value)).ok()?;
        headers.append(name, value);
    }
    Some((method, uri, headers))
}

/// How a response's body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (0: none, as for `HEAD`, 204 and 304).
    Length(u64),
    /// Chunked.
    Chunked,
}

/// What the body tells before it is polled (hyper's `BodyLength`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyHint {
    /// Ended already.
    Empty,
    /// Exactly this long.
    Known(u64),
    /// Unknown.
    Unknown,
}

/// A response head that cannot be written (hyper refuses the same: the connection closes).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    /// A 1xx status as the final answer.
    #[error("a 1xx status cannot be a response")]
    Informational,
    /// `Content-Length` not a number, or two that differ.
    #[error("invalid content-length in the response")]
    ContentLength,
}

/// Writes the response head into `dst` as hyper's HTTP/1.1 server does for an HTTP/1.1
/// request: status line, the lines in the map's order (lower case; `Connection`,
/// `Transfer-Encoding` values joined), `connection: close` added when the connection is not
/// kept, `content-length` or `transfer-encoding: chunked` from the body, `date` when missing.
/// Returns the body's framing and whether the connection stays open after it.
pub fn encode(
    parts: &Parts,
    body: BodyHint,
    head_request: bool,
    keep_alive: bool,
    dst: &mut Vec<u8>,
) -> Result<(Framing, bool), HeadError> {
    let status = parts.status;
    if status.is_informational() {
        return Err(HeadError::Informational);
    }
    status_line(parts, dst);
    let can_have_body = !head_request && !matches!(status.as_u16(), 204 | 304);
    let can_have_length = !matches!(status.as_u16(), 204 | 304);
    let mut keep = keep_alive;
    let mut framing = None;
    let mut wrote_date = false;
    let mut connection_line = false;
    // In the map's order, every value: a name's values come together, so a line that joins
    // them (or frames the body) is written at its name's first value and the others skipped.
    let mut previous: Option<&HeaderName> = None;
    for (name, value) in parts.headers.iter() {
        let first = previous != Some(name);
        previous = Some(name);
        if !first && is_joined(name) {
            continue;
        }
        match *name {
            header::CONTENT_LENGTH => {
                let all = parts.headers.get_all(name);
                framing = content_length(body, head_request, all.iter(), dst)?.or(framing);
            }
            header::TRANSFER_ENCODING | header::TRAILER if !can_have_body => {}
            header::TRANSFER_ENCODING => {
                framing = Some(Framing::Chunked);
                let all = parts.headers.get_all(name);
                // The last coding of the last value, as hyper reads it (an empty one counts).
                let chunked_last = joined_line(name, all.iter(), dst).is_some_and(|last| {
                    last.rsplit(|b| *b == b',')
                        .next()
                        .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
                });
                if !chunked_last {
                    // `chunked` must be the last coding: hyper adds it.
                    dst.truncate(dst.len() - 2);
                    dst.extend_from_slice(b", chunked\r\n");
                }
            }
            header::CONNECTION => {
                connection_line = true;
                let all = parts.headers.get_all(name);
                if all.iter().any(|v| headers::lists(v.as_bytes(), b"close")) {
                    keep = false;
                    joined_line(name, all.iter(), dst);
                } else if keep {
                    joined_line(name, all.iter(), dst);
                } else {
                    // Not kept: `close` joins the values the response has.
                    dst.extend_from_slice(b"connection: ");
                    for value in all.iter() {
                        dst.extend_from_slice(value.as_bytes());
                        dst.extend_from_slice(b", ");
                    }
                    dst.extend_from_slice(b"close\r\n");
                }
            }
            header::TRAILER => {
                joined_line(name, parts.headers.get_all(name).iter(), dst);
            }
            _ => {
                wrote_date |= *name == header::DATE;
                line(name.as_str().as_bytes(), value.as_bytes(), dst);
            }
        }
    }
    if !keep && !connection_line {
        dst.extend_from_slice(b"connection: close\r\n");
    }
    let framing = match framing {
        Some(framing) => framing,
        None => implicit_framing(body, head_request, can_have_length, dst),
    };
    if !wrote_date {
        dst.extend_from_slice(b"date: ");
        DATE.with(|date| dst.extend_from_slice(date.borrow_mut().now()));
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    let framing = if can_have_body {
        framing
    } else {
        Framing::Length(0)
    };
    Ok((framing, keep))
}

/// The names whose values hyper writes on one line, or reads together to frame the body.
fn is_joined(name: &HeaderName) -> bool {
    [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::TRAILER,
    ]
    .contains(name)
}

fn status_line(parts: &Parts, dst: &mut Vec<u8>) {
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
    if parts.status == StatusCode::OK && reason.is_none() {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    dst.extend_from_slice(b"HTTP/1.1 ");
    dst.extend_from_slice(parts.status.as_str().as_bytes());
    dst.push(b' ');
    match reason {
        Some(reason) => dst.extend_from_slice(reason.as_bytes()),
        None => dst.extend_from_slice(
            parts
                .status
                .canonical_reason()
                .unwrap_or("<none>")
                .as_bytes(),
        ),
    }
    dst.extend_from_slice(b"\r\n");
}

fn line(name: &[u8], value: &[u8], dst: &mut Vec<u8>) {
    dst.extend_from_slice(name);
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value);
    dst.extend_from_slice(b"\r\n");
}

/// One line with every value of `name`, joined by ", "; returns the last value.
fn joined_line<'a>(
    name: &HeaderName,
    values: impl Iterator<Item = &'a HeaderValue>,
    dst: &mut Vec<u8>,
) -> Option<&'a [u8]> {
    dst.extend_from_slice(name.as_str().as_bytes());
    dst.extend_from_slice(b": ");
    let mut last = None;
    for value in values {
        if last.is_some() {
            dst.extend_from_slice(b", ");
        }
        dst.extend_from_slice(value.as_bytes());
        last = Some(value.as_bytes());
    }
    dst.extend_from_slice(b"\r\n");
    last
}

/// The `Content-Length` lines: hyper writes the first and frames the body by it (by the body's
/// own length when it knows one); with no body it keeps the line only for `HEAD`.
fn content_length<'a>(
    body: BodyHint,
    head_request: bool,
    mut values: impl Iterator<Item = &'a HeaderValue>,
    dst: &mut Vec<u8>,
) -> Result<Option<Framing>, HeadError> {
    let Some(first) = values.next() else {
        return Ok(None);
    };
    let parse = |v: &HeaderValue| {
        std::str::from_utf8(v.as_bytes())
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    match body {
        BodyHint::Empty if !head_request => Ok(None),
        BodyHint::Empty => {
            for value in std::iter::once(first).chain(values) {
                line(b"content-length", value.as_bytes(), dst);
            }
            Ok(Some(Framing::Length(0)))
        }
        BodyHint::Known(known) => {
            line(b"content-length", first.as_bytes(), dst);
            Ok(Some(Framing::Length(known)))
        }
        BodyHint::Unknown => {
            let len = parse(first).ok_or(HeadError::ContentLength)?;
            if values.any(|v| parse(v) != Some(len)) {
                return Err(HeadError::ContentLength);
            }
            line(b"content-length", first.as_bytes(), dst);
            Ok(Some(Framing::Length(len)))
        }
    }
}

/// The framing hyper adds when the response has no line for it.
fn implicit_framing(
    body: BodyHint,
    head_request: bool,
    can_have_length: bool,
    dst: &mut Vec<u8>,
) -> Framing {
    match body {
        BodyHint::Unknown if head_request || !can_have_length => Framing::Length(0),
        BodyHint::Unknown => {
            dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Framing::Chunked
        }
        BodyHint::Empty | BodyHint::Known(0) => {
            if can_have_length && !head_request {
                dst.extend_from_slice(b"content-length: 0\r\n");
            }
            Framing::Length(0)
        }
        BodyHint::Known(len) => {
            if can_have_length {
                dst.extend_from_slice(b"content-length: ");
                dst.extend_from_slice(message::itoa_u64(len, &mut [0; 20]));
                dst.extend_from_slice(b"\r\n");
                Framing::Length(len)
            } else {
                Framing::Length(0)
            }
        }
    }
}

thread_local! {
    /// The `date` value, formatted once a second per thread (as hyper does).
    static DATE: RefCell<CachedDate> = const {
        RefCell::new(CachedDate {
            second: 0,
            text: Vec::new(),
        })
    };
}

struct CachedDate {
    second: u64,
    text: Vec<u8>,
}

impl CachedDate {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = httpdate::fmt_http_date(now).into_bytes();
        }
        &self.text
    }
}

#[cfg(test)]
mod tests;
