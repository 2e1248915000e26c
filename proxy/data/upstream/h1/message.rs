//! The HTTP/1.1 messages of the direct path's client: the request head as it is written, the
//! response head as it is parsed, and the framing rules that decide how each body is read
//! (see [`super`] for the rules).

use std::mem::MaybeUninit;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Body;

use super::Error;
use crate::data::body::RequestBody;
use crate::data::forwarding::Added;

/// Headers read at most in a response head or trailer section (hyper's default).
pub const MAX_HEADERS: usize = 100;

/// How the request body is framed on the wire.
pub enum Out {
    /// This many bytes still to write.
    Length(u64),
    /// In chunks, ended by a zero-size chunk.
    Chunked,
}

/// How the rest of the response body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    /// This many bytes more.
    Length(u64),
    /// Chunked: at a chunk-size line.
    ChunkSize,
    /// Chunked: this many bytes of the current chunk more.
    ChunkData(u64),
    /// Chunked: at the CRLF after a chunk's data.
    ChunkEnd,
    /// Chunked: at the trailer section (or the CRLF that ends the body).
    Trailers,
    /// Until the upstream closes.
    Eof,
    /// Read to its end.
    Done,
}

/// Writes the request head into `write`, its own lines then `added`; returns how the body is
/// framed, `None` without a body.
pub fn encode_head(
    request: &Request<RequestBody>,
    added: &Added,
    write: &mut BytesMut,
) -> Option<Out> {
    let body = request.body();
    let headers = request.headers();
    let declared = declared_length(headers);
    // The framing, and a length to announce when the request has none of its own.
    let (out, announce) = if body.is_end_stream() {
        (None, None)
    } else if let Some(len) = declared {
        (Some(Out::Length(len)), None)
    } else if let Some(len) = body.size_hint().exact() {
        (Some(Out::Length(len)), Some(len))
    } else if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::CONNECT
    ) {
        // As hyper: these almost never have a body, and an upstream may refuse one framed in
        // chunks; a body that comes anyway is not sent.
        (Some(Out::Length(0)), None)
    } else {
        (Some(Out::Chunked), None)
    };
    write.put_slice(request.method().as_str().as_bytes());
    write.put_u8(b' ');
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    write.put_slice(target.as_bytes());
    write.put_slice(b" HTTP/1.1\r\n");
    // A `Content-Length` that is not the framing (invalid, or values that disagree) is not sent,
    // so an upstream never sees two framings.
    let keep_length = out.is_none() || declared.is_some();
    let lines = headers.iter().chain(added.lines());
    for (name, value) in lines {
        if !keep_length && name == CONTENT_LENGTH {
            continue;
        }
        write.put_slice(name.as_str().as_bytes());
        write.put_slice(b": ");
        write.put_slice(value.as_bytes());
        write.put_slice(b"\r\n");
    }
    if let Some(len) = announce {
        write.put_slice(b"content-length: ");
        write.put_slice(itoa_u64(len, &mut [0; 20]));
        write.put_slice(b"\r\n");
    } else if let Some(Out::Chunked) = out {
        write.put_slice(b"transfer-encoding: chunked\r\n");
    }
    write.put_slice(b"\r\n");
    out
}

/// The request's own `Content-Length`, when it has one valid value.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    content_length(headers).ok().flatten()
}

/// Parses a response head at the start of `read`, taking it out of the buffer. `None` until the
/// head is whole; informational heads are consumed and skipped.
pub fn parse_head(
    read: &mut BytesMut,
    head_only: bool,
) -> Result<Option<(Response<()>, Decoder, bool)>, Error> {
    loop {
        // Uninitialized: a hundred empty headers would be a 3 KB fill on every response.
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let config = httparse::ParserConfig::default();
        let len = match config.parse_response_with_uninit_headers(&mut parsed, read, &mut fields)? {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => return Ok(None),
        };
        let code = parsed.code.unwrap_or(0);
        let status =
            StatusCode::from_u16(code).map_err(|_| Error::Invalid("a status code out of range"))?;
        if status.is_informational() {
            if code == 101 {
                return Err(Error::Invalid("101 to a request that asked for no upgrade"));
            }
            read.advance(len);
            continue;
        }
        let version = if parsed.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let reason = parsed
            .reason
            .filter(|r| Some(*r) != status.canonical_reason())
            .map(|r| Bytes::copy_from_slice(r.as_bytes()));
        let mut notes = Notes::default();
        let headers = if parsed.headers.len() <= SHARED_HEADERS {
            // Each value a slice of the head, which is taken out of the buffer whole.
            let mut spans = [[0usize; 4]; SHARED_HEADERS];
            let base = read.as_ptr() as usize;
            let at = |s: &[u8]| s.as_ptr() as usize - base;
            for (span, field) in spans.iter_mut().zip(parsed.headers.iter()) {
                let name = field.name.as_bytes();
                *span = [at(name), name.len(), at(field.value), field.value.len()];
            }
            let count = parsed.headers.len();
            let head = read.split_to(len).freeze();
            shared_header_map(&head, &spans[..count], &mut notes)?
        } else {
            let headers = noted_header_map(parsed.headers, &mut notes)?;
            read.advance(len);
            headers
        };
        let (decoder, framed) = decoder(status, version, head_only, &notes)?;
        let keep_alive = framed && notes.keeps_alive(version);
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        if let Some(reason) = reason {
            if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason) {
                response.extensions_mut().insert(reason);
            }
        }
        return Ok(Some((response, decoder, keep_alive)));
    }
}

/// A response head with up to this many headers keeps their values in place (one allocation,
/// the head, shared); one with more copies each value.
const SHARED_HEADERS: usize = 32;

/// Room a response's header map is made with, at least. hyper's server keeps the map of the
/// response it wrote to parse the connection's next request into: a map sized for the upstream's
/// few headers would grow (a rehash of every entry) whenever a client sends more.
const RESPONSE_MAP_ROOM: usize = 24;

/// The header map of `head`, whose fields are at `spans` (name offset and length, value offset
/// and length), each value a slice of `head`; the framing fields are noted on the way.
fn shared_header_map(
    head: &Bytes,
    spans: &[[usize; 4]],
    notes: &mut Notes,
) -> Result<HeaderMap, Error> {
    let fields = spans.iter().map(|&[name, name_len, value, value_len]| {
        (
            &head[name..name + name_len],
            head.slice(value..value + value_len),
        )
    });
    build_map(fields, spans.len().max(RESPONSE_MAP_ROOM), notes)
}

/// The fields as a header map, each value copied.
pub fn header_map(fields: &[httparse::Header<'_>]) -> Result<HeaderMap, Error> {
    noted_header_map(fields, &mut Notes::default())
}

/// The same, noting the framing fields.
fn noted_header_map(
    fields: &[httparse::Header<'_>],
    notes: &mut Notes,
) -> Result<HeaderMap, Error> {
    let copies = fields
        .iter()
        .map(|f| (f.name.as_bytes(), Bytes::copy_from_slice(f.value)));
    build_map(copies, fields.len(), notes)
}

/// A header map of `capacity` or more from (name, value) pairs, noting the framing fields.
fn build_map<'a>(
    fields: impl Iterator<Item = (&'a [u8], Bytes)>,
    capacity: usize,
    notes: &mut Notes,
) -> Result<HeaderMap, Error> {
    let mut headers = HeaderMap::with_capacity(capacity);
    for (name, value) in fields {
        let name = HeaderName::from_bytes(name).map_err(|_| Error::Invalid("a bad header name"))?;
        if !notes.note(&name, &value) {
            continue;
        }
        let value = HeaderValue::from_maybe_shared(value)
            .map_err(|_| Error::Invalid("a bad header value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// What the framing rules read from a response head's fields, noted while its map is built (so
/// no field is looked up again).
#[derive(Default)]
struct Notes {
    /// A `Transfer-Encoding` field, and whether the last one ends in `chunked`.
    transfer_encoding: bool,
    chunked_last: bool,
    /// A `Content-Length` field, its agreed value, and the first thing wrong with its values.
    content_length: bool,
    length: Option<u64>,
    bad_length: Option<&'static str>,
    /// `Connection` tokens.
    close: bool,
    keep_alive: bool,
}

impl Notes {
    /// Notes a field; false for one the map need not hold: a `Connection` line that says only
    /// `keep-alive` or `close`, read here, and hop-by-hop, so the answer's rewrite would look it
    /// up only to remove it.
    fn note(&mut self, name: &HeaderName, value: &[u8]) -> bool {
        if *name == TRANSFER_ENCODING {
            self.transfer_encoding = true;
            self.chunked_last = elements(value)
                .next_back()
                .is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked"));
        } else if *name == CONTENT_LENGTH {
            self.content_length = true;
            for part in elements(value) {
                self.length_element(part);
            }
        } else if *name == CONNECTION {
            let mut options_only = true;
            for token in elements(value) {
                let close = token.eq_ignore_ascii_case(b"close");
                let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
                self.close |= close;
                self.keep_alive |= keep_alive;
                options_only &= close || keep_alive;
            }
            return !options_only;
        }
        true
    }

    /// One element of a `Content-Length` list: digits only, equal to the others.
    fn length_element(&mut self, part: &[u8]) {
        if self.bad_length.is_some() {
            return;
        }
        let n = crate::data::headers::decimal(part);
        match (n, self.length) {
            (None, _) => self.bad_length = Some("an invalid Content-Length"),
            (Some(n), Some(seen)) if seen != n => {
                self.bad_length = Some("Content-Length values disagree")
            }
            (Some(n), _) => self.length = Some(n),
        }
    }

    /// Whether the upstream keeps the connection open after this answer.
    fn keeps_alive(&self, version: Version) -> bool {
        !self.close && (version == Version::HTTP_11 || self.keep_alive)
    }
}

/// The comma-separated elements of a field value, trimmed.
fn elements(value: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(<[u8]>::trim_ascii)
}

/// How the body after this head is read, and whether it is framed (not read to the close).
fn decoder(
    status: StatusCode,
    version: Version,
    head_only: bool,
    notes: &Notes,
) -> Result<(Decoder, bool), Error> {
    if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Decoder::Done, true));
    }
    if notes.transfer_encoding {
        if version == Version::HTTP_10 {
            return Err(Error::Invalid("Transfer-Encoding in an HTTP/1.0 response"));
        }
        // With a Content-Length beside it (RFC 9112 §6.3: an error a recipient may read
        // through), the chunks are read but the connection is not used again.
        return Ok(if notes.chunked_last {
            (Decoder::ChunkSize, !notes.content_length)
        } else {
            (Decoder::Eof, false)
        });
    }
    if let Some(wrong) = notes.bad_length {
        return Err(Error::Invalid(wrong));
    }
    Ok(match notes.length {
        Some(len) => (Decoder::Length(len), true),
        None => (Decoder::Eof, false),
    })
}

/// The request's `Content-Length`: `None` without one, an error when values are invalid or
/// disagree.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Error> {
    let mut notes = Notes::default();
    for value in headers.get_all(CONTENT_LENGTH) {
        for part in elements(value.as_bytes()) {
            notes.length_element(part);
        }
    }
    match notes.bad_length {
        Some(wrong) => Err(Error::Invalid(wrong)),
        None => Ok(notes.length),
    }
}

/// `n` in lowercase hexadecimal.
pub fn put_hex(write: &mut BytesMut, n: usize) {
    write.put_slice(hex(n, &mut [0; 16]));
}

/// `n` in lowercase hexadecimal, in `buf` (a chunk's size; the fast path's too).
pub fn hex(mut n: usize, buf: &mut [u8; 16]) -> &[u8] {
    let mut at = buf.len();
    // Bounded: a usize has at most 16 hex digits.
    loop {
        at -= 1;
        buf[at] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// `n` in decimal, in `buf` (a length; the fast path's too).
pub fn itoa_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[at..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<(Response<()>, Decoder, bool)>, Error> {
        parse_head(&mut BytesMut::from(text.as_bytes()), false)
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let framed = |text: &str| head(text).ok().flatten().map(|(_, d, k)| (d, k));
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"),
            Some((Decoder::Length(5), true))
        );
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\ncontent-length: 5\r\n\r\n"),
            Some((Decoder::Length(5), true))
        );
        assert_eq!(
            framed(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 5\r\n\r\n"
            ),
            Some((Decoder::ChunkSize, false))
        );
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n"),
            Some((Decoder::Eof, false))
        );
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\n\r\n"),
            Some((Decoder::Eof, false))
        );
        assert_eq!(
            framed("HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n"),
            Some((Decoder::Done, true))
        );
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"),
            Some((Decoder::Length(0), false))
        );
        assert_eq!(
            framed("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n"),
            Some((Decoder::Length(1), false))
        );
        assert_eq!(
            framed("HTTP/1.0 200 OK\r\ncontent-length: 1\r\nconnection: keep-alive\r\n\r\n"),
            Some((Decoder::Length(1), true))
        );
        assert_eq!(
            framed("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"),
            Some((Decoder::Length(2), true))
        );
        assert_eq!(framed("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n"), None);
    }

    #[test]
    fn bad_framing_is_refused() {
        for text in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999999\r\n\r\n",
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HELLO THERE\r\n\r\n",
        ] {
            assert!(head(text).is_err(), "{text:?} was taken");
        }
    }

    #[test]
    fn a_connection_line_of_options_only_is_read_not_kept() {
        let parsed = |text: &str| head(text).ok().flatten().map(|(r, _, k)| (r, k)).unwrap();
        let (response, keep) = parsed(
            "HTTP/1.1 200 OK\r\nconnection: keep-alive\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n",
        );
        assert!(keep);
        assert!(!response.headers().contains_key(CONNECTION));
        assert_eq!(response.headers()["x-a"], "1");
        let (response, keep) =
            parsed("HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 0\r\n\r\n");
        assert!(!keep);
        assert!(!response.headers().contains_key(CONNECTION));
        // A line that names a header stays, for the answer's rewrite to remove what it names.
        let (response, keep) = parsed(
            "HTTP/1.1 200 OK\r\nconnection: keep-alive, x-a\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n",
        );
        assert!(keep);
        assert_eq!(response.headers()[CONNECTION], "keep-alive, x-a");
    }

    #[test]
    fn a_head_answer_has_no_body_and_a_reason_phrase_is_kept() {
        let mut read = BytesMut::from(&b"HTTP/1.1 200 Fine\r\ncontent-length: 9\r\n\r\n"[..]);
        let (response, decoder, keep) = parse_head(&mut read, true)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("a whole head"));
        assert_eq!((decoder, keep), (Decoder::Done, true));
        assert!(read.is_empty());
        let reason = response.extensions().get::<hyper::ext::ReasonPhrase>();
        assert_eq!(reason.map(|r| r.as_bytes()), Some(&b"Fine"[..]));
    }

    #[test]
    fn numbers_are_written_without_fmt() {
        let mut out = BytesMut::new();
        for n in [0, 9, 10, 255, 4096, usize::MAX] {
            put_hex(&mut out, n);
            assert_eq!(out.split().as_ref(), format!("{n:x}").as_bytes());
        }
        for n in [0, 7, 10, 1234567, u64::MAX] {
            assert_eq!(itoa_u64(n, &mut [0; 20]), n.to_string().as_bytes());
        }
    }
}
