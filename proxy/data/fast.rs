//! The fast path: HTTP/1.1 requests without a body, or with one that came whole with its head,
//! served in the connection's own task, without hyper's server.
//!
//! hyper's HTTP/1.1 server reads a request through its own buffer, parses it a second time after
//! the framing scanner, builds its dispatcher's state, and writes the answer through its encoder;
//! at a fixed rate, where each request finds the core's caches cold, that code is most of what
//! Switchyard costs above the floor (docs/performance.md, "The floor"). Here one loop per
//! connection reads the head into a reused buffer (still through the connection's `Guarded`
//! stream, so the scanner keeps the phases and timeouts), parses it in place
//! ([`head::take`]), calls the same handler as hyper's path, writes the response head as hyper
//! would ([`head::encode`]) and copies the body out, the head and a small body in one write.
//!
//! A request it does not take (a chunked body or one still on its way, an upgrade, `Expect`,
//! HTTP/1.0, a head hyper would refuse) is handed to hyper on the same connection with the bytes
//! already read, and hyper serves the connection until it idles. A connection idle for `limits.idle_release_after`
//! leaves the loop with its stream alone (it parks, or rests in the hall), as after hyper.

pub mod head;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Sleep;

use crate::data::body::ResponseBody;
use crate::data::conn::{Conn, Guarded};
use crate::data::shared::Inbound;
use crate::data::upstream::h1::message;
use head::{BodyHint, Framing, HeadLimits, Taken};

/// The handler as the fast path calls it: the request, its response (a failure is a response).
pub type Service = Arc<
    dyn Fn(Request<Inbound>) -> Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>>
        + Send
        + Sync,
>;

/// What a listener's connections need to serve through the fast path.
#[derive(Clone)]
pub struct Setup {
    /// The handler, as hyper's path calls it.
    pub service: Service,
    /// The listener's head limits (hyper's).
    pub limits: HeadLimits,
    /// Counts the requests handed to hyper, when the listener counts.
    pub handed: Option<prometheus::IntCounter>,
}

/// Bytes read at a time while a head comes in.
const READ_SIZE: usize = 4096;
/// Body bytes gathered behind the head (or a chunk's line) before they are written.
const GATHER: usize = 16 * 1024;

/// How the loop ended, and what the connection's stream does next.
pub enum Ended<T> {
    /// The client closed, or the stream failed; nothing is left to do.
    Finished(Result<(), io::Error>),
    /// Idle long enough: the stream parks (or rests in the hall) without buffers.
    Idle(Guarded<T>),
    /// The connection ends gracefully: a drain, a client's or a response's `Connection: close`.
    Close(Guarded<T>),
    /// A request the fast path does not serve: hyper reads it from these bytes on.
    Hyper(Guarded<T>, Bytes),
}

/// What one connection's loop needs besides its stream.
pub struct Loop {
    /// The handler.
    pub service: Service,
    /// The listener's head limits.
    pub limits: HeadLimits,
    /// The connection's phase, for the idle time.
    pub conn: Arc<Conn>,
    /// Set by a graceful shutdown: finish the response under way, then close.
    pub closing: Arc<AtomicBool>,
}

/// Serves requests on `io` until the connection idles, closes, or a request is hyper's.
pub async fn serve<T>(mut io: Guarded<T>, on: Loop) -> Ended<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut input = BytesMut::new();
    let mut output = Vec::new();
    let mut lines = Vec::with_capacity(16);
    let mut release = Box::pin(tokio::time::sleep(on.conn.release_after()));
    // Bounded by the connection: each pass serves one request the client sent.
    loop {
        if input.is_empty() {
            match wait_for_head(&mut io, &mut input, &mut release, &on).await {
                Ok(Waited::Bytes) => {}
                Ok(Waited::Eof) => return Ended::Finished(Ok(())),
                Ok(Waited::Release) => return Ended::Idle(io),
                Ok(Waited::Closing) => return Ended::Close(io),
                Err(error) => return Ended::Finished(Err(error)),
            }
        }
        let (request, keep_alive) = loop {
            match head::take(&mut input, on.limits, &mut lines) {
                Taken::Request {
                    request,
                    keep_alive,
                } => break (request, keep_alive),
                Taken::Hyper => return Ended::Hyper(io, input.freeze()),
                Taken::Partial => match read_more(&mut io, &mut input).await {
                    Ok(n) if n > 0 => {}
                    // A client that ends inside a head: hyper answers that as it always has.
                    Ok(_) => return Ended::Hyper(io, input.freeze()),
                    Err(error) => return Ended::Finished(Err(error)),
                },
            }
        };
        let head_request = request.method() == Method::HEAD;
        let response = (on.service)(request).await;
        let keep_alive = keep_alive && !on.closing.load(Ordering::Relaxed);
        match respond(&mut io, &mut output, response, head_request, keep_alive).await {
            Ok(true) => {}
            Ok(false) => return Ended::Close(io),
            Err(error) => return Ended::Finished(Err(error)),
        }
        if output.capacity() > GATHER * 2 {
            // A large answer's buffer is not kept for the next one.
            output = Vec::new();
        }
    }
}

enum Waited {
    Bytes,
    Eof,
    Release,
    Closing,
}

/// Waits for the first bytes of the next head, the idle release, or a graceful shutdown.
fn wait_for_head<'a, T>(
    io: &'a mut Guarded<T>,
    input: &'a mut BytesMut,
    release: &'a mut Pin<Box<Sleep>>,
    on: &'a Loop,
) -> impl Future<Output = io::Result<Waited>> + 'a
where
    T: AsyncRead + Unpin,
{
    input.reserve(READ_SIZE);
    std::future::poll_fn(move |cx| {
        if on.closing.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(Waited::Closing));
        }
        if let Poll::Ready(read) = tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, input) {
            return Poll::Ready(read.map(|n| if n == 0 { Waited::Eof } else { Waited::Bytes }));
        }
        if on.conn.poll_release(release, cx) {
            return Poll::Ready(Ok(Waited::Release));
        }
        Poll::Pending
    })
}

async fn read_more<T: AsyncRead + Unpin>(
    io: &mut Guarded<T>,
    input: &mut BytesMut,
) -> io::Result<usize> {
    input.reserve(READ_SIZE);
    std::future::poll_fn(|cx| tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, input)).await
}

/// Writes `response`; true when the connection stays open after it.
async fn respond<T>(
    io: &mut Guarded<T>,
    output: &mut Vec<u8>,
    response: Response<ResponseBody>,
    head_request: bool,
    keep_alive: bool,
) -> io::Result<bool>
where
    T: AsyncWrite + Unpin,
{
    let (parts, mut body) = response.into_parts();
    let hint = if body.is_end_stream() {
        BodyHint::Empty
    } else {
        body.size_hint()
            .exact()
            .map_or(BodyHint::Unknown, BodyHint::Known)
    };
    output.clear();
    let (framing, keep) = head::encode(&parts, hint, head_request, keep_alive, output)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
    drop(parts);
    if framing != Framing::Length(0) {
        send_body(io, output, &mut body, framing).await?;
    }
    io.write_all(output).await?;
    io.flush().await?;
    Ok(keep)
}

/// Copies the body out behind the head in `output`: frames that are ready are gathered, and
/// written when the body waits or the buffer is full. Trailers are not sent (hyper sends them
/// only to a client that asked with `TE: trailers`, whose requests go to hyper).
async fn send_body<T>(
    io: &mut Guarded<T>,
    output: &mut Vec<u8>,
    body: &mut ResponseBody,
    framing: Framing,
) -> io::Result<()>
where
    T: AsyncWrite + Unpin,
{
    let mut left = match framing {
        Framing::Length(n) => Some(n),
        Framing::Chunked => None,
    };
    // Bounded by the body: each pass takes one frame, and the body ends.
    loop {
        let frame = match poll_ready_frame(body).await {
            Some(frame) => frame,
            None => {
                io.write_all(output).await?;
                output.clear();
                body.frame().await
            }
        };
        let data = match frame {
            None => break,
            Some(Err(error)) => return Err(io::Error::other(error)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
        };
        match left.as_mut() {
            Some(left) => {
                *left = left.checked_sub(data.len() as u64).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "body longer than its length")
                })?;
                gather(io, output, &data).await?;
            }
            None => {
                output.extend_from_slice(message::hex(data.len(), &mut [0; 16]));
                output.extend_from_slice(b"\r\n");
                gather(io, output, &data).await?;
                output.extend_from_slice(b"\r\n");
            }
        }
        if output.len() >= GATHER {
            io.write_all(output).await?;
            output.clear();
        }
    }
    match left {
        Some(0) => Ok(()),
        Some(_) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "body shorter than its length",
        )),
        None => {
            output.extend_from_slice(b"0\r\n\r\n");
            Ok(())
        }
    }
}

/// The body's next frame if it is ready now (`None` when it is not).
async fn poll_ready_frame(
    body: &mut ResponseBody,
) -> Option<Option<Result<http_body::Frame<Bytes>, <ResponseBody as Body>::Error>>> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(frame) => Some(frame),
            Poll::Pending => None,
        })
    })
    .await
}

/// Small data joins `output`; large data is written as it is, after what `output` holds.
async fn gather<T>(io: &mut Guarded<T>, output: &mut Vec<u8>, data: &Bytes) -> io::Result<()>
where
    T: AsyncWrite + Unpin,
{
    if data.len() < GATHER {
        output.extend_from_slice(data);
        return Ok(());
    }
    io.write_all(output).await?;
    output.clear();
    io.write_all(data).await
}
