//! The direct path's own HTTP/1.1 client connection (issue 16): the request head written straight
//! into the connection's write buffer, the response head parsed in place with httparse (the parser
//! hyper uses), the body framed and unframed here, all of it in the request's own task. hyper's
//! low-level client did the same work through a request channel, a dispatcher and a response
//! oneshot, each polled and woken on every request, and moved the request and response through
//! each; this is a buffer, a parse and a state machine.
//!
//! What it keeps from hyper's client, rule by rule (RFC 9112): the request is framed by its
//! `Content-Length` when it has one valid value (else that header is not sent), else by the
//! body's exact size, else chunked, but a GET, HEAD or CONNECT whose body's length is unknown
//! sends none (hop-by-hop `Transfer-Encoding` never reaches this far); request trailers are
//! dropped, as hyper drops those no `Trailer` header declares (the proxy removes `Trailer`). A
//! response's informational heads (1xx but 101) are skipped; HEAD answers, 204 and 304 have no
//! body; `Transfer-Encoding` ending in `chunked` is chunked (trailers delivered as a trailers
//! frame; a chunk size needs a digit, and every line CRLF, as hyper's decoder wants), any other
//! `Transfer-Encoding` is read to the end of the connection, and one on HTTP/1.0 is refused; then
//! `Content-Length` (several must agree), then to the end of the connection. A connection is kept
//! for the next request only if the answer was HTTP/1.1 (or 1.0 with `keep-alive`) without
//! `close`, was framed by length or chunks (not both), was read to its end with no byte past it,
//! and the request was written whole.
//!
//! Where it differs from hyper's client: after the response head, what is left of the request
//! body is written while the response body is read (hyper's connection task wrote it on its own),
//! and a connection whose upstream answered before reading the whole request is closed, not
//! reused.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use http::{Method, Request, Response};
use hyper::body::{Body, Frame};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use crate::data::body::RequestBody;
use crate::data::forwarding::Added;

pub mod message;

use message::{encode_head, header_map, parse_head, put_hex, Decoder, Out, MAX_HEADERS};

/// The connected stream, plain or TLS, as tokio reads and writes it.
pub type Stream = TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>;

/// The largest response head (hyper's default read buffer limit).
const MAX_HEAD: usize = 8192 + 4096 * 100;
/// The largest chunk-size line (hexadecimal size and extensions).
const MAX_CHUNK_LINE: usize = 4096;
/// The largest trailer section.
const MAX_TRAILERS: usize = 16 * 1024;
/// Room made in the read buffer before a read; doubled while reads fill it, up to [`READ_MAX`].
const READ_MIN: usize = 8 * 1024;
const READ_MAX: usize = 64 * 1024;

/// What failed in an exchange on the direct path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading from or writing to the upstream failed.
    #[error("the upstream connection failed: {0}")]
    Io(#[from] io::Error),
    /// The upstream closed before its answer was complete.
    #[error("the upstream closed the connection before the response was complete")]
    Closed,
    /// The response head did not parse.
    #[error("invalid HTTP response: {0}")]
    Parse(#[from] httparse::Error),
    /// The response broke a framing rule.
    #[error("invalid HTTP response: {0}")]
    Invalid(&'static str),
    /// The request body failed (the handler reads whose fault it was from the body's fault cell).
    #[error("the request body failed: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// True when the upstream's answer is to blame (a response that breaks HTTP/1.1).
    pub fn is_protocol(&self) -> bool {
        matches!(self, Error::Parse(_) | Error::Invalid(_) | Error::Body(_))
    }
}

/// Why a connection gave no response.
pub enum Refused {
    /// Nothing was written: the request comes back, to be sent elsewhere.
    Unsent(Error, Box<Request<RequestBody>>),
    /// Some of it went out: it may have reached the upstream.
    Sent(Error),
}

/// A request body on its way out.
struct Upload {
    body: RequestBody,
    out: Out,
}

/// One HTTP/1.1 connection to an upstream, with the state of the exchange in flight on it.
pub struct Conn {
    io: Stream,
    read: BytesMut,
    write: BytesMut,
    /// Room made before the next read.
    read_size: usize,
    upload: Option<Upload>,
    decoder: Decoder,
    /// The answer allows another request on this connection.
    keep_alive: bool,
    /// Closed, failed, or left mid-message: never used again.
    broken: bool,
}

impl Conn {
    /// A connection over `io`, with nothing in flight.
    pub fn new(io: Stream) -> Self {
        Conn {
            io,
            read: BytesMut::new(),
            write: BytesMut::new(),
            read_size: READ_MIN,
            upload: None,
            decoder: Decoder::Done,
            keep_alive: false,
            broken: false,
        }
    }

    /// Sends `request` (target in absolute form, `Host` set) and reads until the response head
    /// has come. The body is then read through [`Conn::poll_body`], which also writes what is
    /// left of the request body.
    ///
    /// The head is encoded when this is called; the future is a `poll_fn` over what it needs, the
    /// request held once (an `async fn` would hold it three times: as its argument, moved into its
    /// body, and in the `Option` the upload takes it from).
    pub fn send(
        &mut self,
        request: Request<RequestBody>,
        added: &Added,
    ) -> impl Future<Output = Result<Response<()>, Refused>> + '_ {
        let head_only = request.method() == Method::HEAD;
        let mut out = encode_head(&request, added, &mut self.write);
        let mut request = Some(request);
        let mut wrote = false;
        let mut write_failed = None;
        poll_fn(move |cx| {
            // Twice at most: once the head is out, the body is polled in the same turn.
            while write_failed.is_none() {
                match self.poll_upload(cx, &mut wrote) {
                    Poll::Ready(Err(error)) if !wrote => {
                        self.broken = true;
                        let back = request.take().map(Box::new);
                        return Poll::Ready(match back {
                            Some(back) => Err(Refused::Unsent(error, back)),
                            None => Err(Refused::Sent(error)),
                        });
                    }
                    Poll::Ready(Err(error @ Error::Body(_))) => {
                        self.broken = true;
                        return Poll::Ready(Err(Refused::Sent(error)));
                    }
                    // The upstream may have answered before reading the whole request and
                    // closed: its answer, if one came, is still read.
                    Poll::Ready(Err(error)) => {
                        self.broken = true;
                        write_failed = Some(error);
                    }
                    Poll::Ready(Ok(())) | Poll::Pending => {}
                }
                match request.take() {
                    // The head is out: the body is what is left to write.
                    Some(request) if wrote => {
                        let body = request.into_body();
                        self.upload = out.take().map(|out| Upload { body, out });
                        if self.upload.is_none() {
                            break;
                        }
                    }
                    unsent => {
                        request = unsent;
                        break;
                    }
                }
            }
            match ready!(self.poll_head(cx, head_only)) {
                Ok(head) => Poll::Ready(Ok(head)),
                Err(error) => {
                    self.broken = true;
                    Poll::Ready(Err(Refused::Sent(write_failed.take().unwrap_or(error))))
                }
            }
        })
    }

    /// Writes what is buffered, then the request body frame by frame, until all of it is out
    /// (`Ready(Ok)`) or the socket or the body has to wait.
    fn poll_upload(&mut self, cx: &mut Context<'_>, wrote: &mut bool) -> Poll<Result<(), Error>> {
        loop {
            while !self.write.is_empty() {
                let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.write))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
                }
                *wrote = true;
                self.write.advance(n);
            }
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            let Some(upload) = self.upload.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            match ready!(Pin::new(&mut upload.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers are dropped (see the module's notes).
                    if let Ok(data) = frame.into_data() {
                        upload.encode(&data, &mut self.write);
                    }
                    if upload.body.is_end_stream() {
                        self.finish_upload()?;
                    }
                }
                Some(Err(error)) => {
                    self.upload = None;
                    return Poll::Ready(Err(Error::Body(error)));
                }
                None => self.finish_upload()?,
            }
        }
    }

    /// The body has ended: its last bytes are buffered.
    fn finish_upload(&mut self) -> Result<(), Error> {
        match self.upload.take().map(|u| u.out) {
            Some(Out::Chunked) => self.write.put_slice(b"0\r\n\r\n"),
            Some(Out::Length(0)) | None => {}
            Some(Out::Length(_)) => {
                let short = "the request body ended before its Content-Length";
                return Err(Error::Body(short.into()));
            }
        }
        Ok(())
    }

    /// Reads until a final response head has come (informational ones are skipped).
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        head_only: bool,
    ) -> Poll<Result<Response<()>, Error>> {
        loop {
            if !self.read.is_empty() {
                if let Some((response, decoder, keep_alive)) =
                    parse_head(&mut self.read, head_only)?
                {
                    self.decoder = decoder;
                    self.keep_alive = keep_alive;
                    return Poll::Ready(Ok(response));
                }
                if self.read.len() >= MAX_HEAD {
                    return Poll::Ready(Err(Error::Invalid("the response head is too large")));
                }
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(Error::Closed));
            }
        }
    }

    /// Reads once into the read buffer; 0 at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < self.read_size / 2 {
            self.read.reserve(self.read_size);
        }
        let room = self.read.capacity() - self.read.len();
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.read
        ))?;
        if n == room && self.read_size < READ_MAX {
            self.read_size *= 2;
        }
        Poll::Ready(Ok(n))
    }

    /// The next frame of the response body; also writes what is left of the request body.
    pub fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.upload.is_some() || !self.write.is_empty() {
            match self.poll_upload(cx, &mut false) {
                // The answer is what the client waits for; a request body that could not be
                // written whole only means the connection is not used again.
                Poll::Ready(Err(_)) => {
                    self.upload = None;
                    self.write.clear();
                    self.broken = true;
                }
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
        }
        let polled = self.poll_decode(cx);
        if let Poll::Ready(Some(Err(_))) = polled {
            self.broken = true;
            self.decoder = Decoder::Done;
        }
        polled
    }

    fn poll_decode(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        loop {
            match self.decoder {
                Decoder::Done => return Poll::Ready(None),
                Decoder::Length(0) => {
                    self.decoder = Decoder::Done;
                    return Poll::Ready(None);
                }
                Decoder::Length(left) | Decoder::ChunkData(left) if !self.read.is_empty() => {
                    let n = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(self.read.len());
                    let data = self.read.split_to(n).freeze();
                    let left = left - n as u64;
                    self.decoder = match self.decoder {
                        Decoder::Length(_) => Decoder::Length(left),
                        _ if left == 0 => Decoder::ChunkEnd,
                        _ => Decoder::ChunkData(left),
                    };
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decoder::Length(_) | Decoder::ChunkData(_) => {}
                Decoder::Eof if !self.read.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(self.read.split().freeze()))));
                }
                Decoder::Eof => {
                    if ready!(self.poll_fill(cx))? == 0 {
                        self.decoder = Decoder::Done;
                        return Poll::Ready(None);
                    }
                    continue;
                }
                Decoder::ChunkSize => match parse_chunk_size(&self.read) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.read.advance(used);
                        self.decoder = if size == 0 {
                            Decoder::Trailers
                        } else {
                            Decoder::ChunkData(size)
                        };
                        continue;
                    }
                    Ok(httparse::Status::Partial) if self.read.len() < MAX_CHUNK_LINE => {}
                    _ => return Poll::Ready(Some(Err(Error::Invalid("a bad chunk size line")))),
                },
                Decoder::ChunkEnd if self.read.len() >= 2 => {
                    if &self.read[..2] != b"\r\n" {
                        let error = Error::Invalid("a chunk's data is not followed by CRLF");
                        return Poll::Ready(Some(Err(error)));
                    }
                    self.read.advance(2);
                    self.decoder = Decoder::ChunkSize;
                    continue;
                }
                Decoder::ChunkEnd => {}
                Decoder::Trailers => {
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(&self.read, &mut headers) {
                        Ok(httparse::Status::Complete((used, _)))
                            if !crlf_lines(&self.read[..used]) =>
                        {
                            let error = Error::Invalid("a trailer line not ended by CRLF");
                            return Poll::Ready(Some(Err(error)));
                        }
                        Ok(httparse::Status::Complete((used, fields))) => {
                            let trailers =
                                (!fields.is_empty()).then(|| header_map(fields)).transpose();
                            self.read.advance(used);
                            self.decoder = Decoder::Done;
                            return Poll::Ready(match trailers {
                                Ok(Some(map)) => Some(Ok(Frame::trailers(map))),
                                Ok(None) => None,
                                Err(error) => Some(Err(error)),
                            });
                        }
                        Ok(httparse::Status::Partial) if self.read.len() < MAX_TRAILERS => {}
                        Ok(httparse::Status::Partial) => {
                            return Poll::Ready(Some(Err(Error::Invalid("trailers too large"))))
                        }
                        Err(error) => return Poll::Ready(Some(Err(error.into()))),
                    }
                }
            }
            // More bytes are needed; the end of the stream here cuts the body short.
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Some(Err(Error::Closed)));
            }
        }
    }

    /// Lets go of buffers a large message grew past what a read needs, before the connection
    /// idles in a pool.
    pub fn trim(&mut self) {
        if self.write.capacity() > READ_MAX {
            self.write = BytesMut::new();
        }
        if self.read.capacity() > 2 * READ_MAX {
            self.read = BytesMut::new();
        }
    }

    /// True when the response body has been read to its end.
    pub fn is_end_stream(&self) -> bool {
        matches!(self.decoder, Decoder::Done | Decoder::Length(0))
    }

    /// The body's exact size when its framing tells.
    pub fn body_size(&self) -> Option<u64> {
        match self.decoder {
            Decoder::Length(n) => Some(n),
            Decoder::Done => Some(0),
            _ => None,
        }
    }

    /// True when the exchange ended cleanly and another request may follow on this connection.
    pub fn reusable(&self) -> bool {
        !self.broken
            && self.keep_alive
            && self.is_end_stream()
            && self.upload.is_none()
            && self.write.is_empty()
            && self.read.is_empty()
    }

    /// For a connection that idled in a pool: true while the upstream has neither closed it nor
    /// sent anything (bytes before a request are not an answer to it). Reads without waiting.
    pub fn still_open(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.poll_fill(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(_) => {
                self.broken = true;
                false
            }
        }
    }
}

/// httparse's chunk-size parse, stricter where hyper's decoder is: at least one hexadecimal digit,
/// and the line ended by CRLF (httparse takes an empty size as 0, and a bare LF).
fn parse_chunk_size(read: &[u8]) -> Result<httparse::Status<(usize, u64)>, Error> {
    let bad = || Error::Invalid("a bad chunk size line");
    if read.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let status = httparse::parse_chunk_size(read).map_err(|_| bad())?;
    if let httparse::Status::Complete((used, _)) = status {
        if !crlf_lines(&read[..used]) {
            return Err(bad());
        }
    }
    Ok(status)
}

/// True when every line of `section` ends with CRLF.
fn crlf_lines(section: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', section).all(|at| at > 0 && section[at - 1] == b'\r')
}

impl Upload {
    /// Buffers one data frame, framed.
    fn encode(&mut self, data: &Bytes, write: &mut BytesMut) {
        if data.is_empty() {
            return;
        }
        match &mut self.out {
            Out::Length(left) => {
                // As hyper: what is owed, no more (the rest of a GET's unannounced body).
                let owed = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                *left -= owed as u64;
                write.extend_from_slice(&data[..owed]);
            }
            Out::Chunked => {
                put_hex(write, data.len());
                write.put_slice(b"\r\n");
                write.extend_from_slice(data);
                write.put_slice(b"\r\n");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_size_line_needs_a_digit_and_crlf() {
        let complete = |line: &[u8]| match parse_chunk_size(line) {
            Ok(httparse::Status::Complete((used, size))) => Some((used, size)),
            _ => None,
        };
        assert_eq!(complete(b"1f\r\n"), Some((4, 31)));
        assert_eq!(complete(b"5;name=value\r\nhello"), Some((14, 5)));
        assert_eq!(complete(b"0\r\n\r\n"), Some((3, 0)));
        assert!(matches!(
            parse_chunk_size(b"5"),
            Ok(httparse::Status::Partial)
        ));
        for bad in [
            &b"\r\n"[..],
            b";ext\r\n",
            b" 5\r\n",
            b"5\n",
            b"5;a\nb\r\n",
            b"x\r\n",
        ] {
            assert!(parse_chunk_size(bad).is_err(), "{bad:?} was taken");
        }
    }

    #[test]
    fn a_trailer_section_needs_crlf_lines() {
        assert!(crlf_lines(b"x-checksum: 7\r\n\r\n"));
        assert!(crlf_lines(b"\r\n"));
        assert!(!crlf_lines(b"x-checksum: 7\n\r\n"));
        assert!(!crlf_lines(b"\n"));
    }
}
