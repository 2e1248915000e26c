//! Body types. Downstream responses stream the upstream's body (or a short body the proxy wrote)
//! and carry the request's [`Record`], finished when the body ends or is dropped. Request bodies
//! stream to the upstream, count their bytes when the access log wants them, and record in a
//! [`FaultCell`] why they failed when the client is to blame (malformed or truncated framing, a
//! client that left, stalled or went over the route's limit), since the upstream call that reads
//! them learns only that the body failed.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;

use crate::data::conn::{InFlight, RequestConn};
use crate::data::fault::{classify_body_error, DownstreamFault, FaultCell};
use crate::data::record::Record;
use crate::data::shared::Inbound;

/// Where a response body's bytes come from.
#[derive(Debug)]
enum Source {
    /// Streamed from the upstream, frame by frame, trailers included.
    Upstream(crate::data::upstream::UpstreamBody),
    /// Written by the proxy.
    Local(Full<Bytes>),
}

/// A downstream response body.
pub struct ResponseBody {
    source: Source,
    record: Option<Record>,
    capture: Option<Capture>,
    /// Keeps the request in flight on its connection (no idle timeout) until dropped.
    in_flight: Option<InFlight>,
}

/// A copy of a live answer for the shadow comparison, kept as it streams (up to a cap) and handed
/// to the mirror job when the body ends.
pub struct Capture {
    /// Where the complete answer goes.
    pub tx: tokio::sync::oneshot::Sender<(crate::data::tap::Answer, std::time::Duration)>,
    /// Status and headers of the answer.
    pub head: (u16, http::HeaderMap),
    /// Bytes kept at most.
    pub cap: usize,
    /// When the request arrived.
    pub started: std::time::Instant,
    kept: bytes::BytesMut,
    truncated: bool,
}

impl Capture {
    /// Starts a capture of an answer with this head.
    pub fn new(
        tx: tokio::sync::oneshot::Sender<(crate::data::tap::Answer, std::time::Duration)>,
        head: (u16, http::HeaderMap),
        cap: usize,
        started: std::time::Instant,
    ) -> Self {
        Capture {
            tx,
            head,
            cap,
            started,
            kept: bytes::BytesMut::new(),
            truncated: false,
        }
    }

    fn keep(&mut self, data: &Bytes) {
        let room = self.cap.saturating_sub(self.kept.len());
        self.truncated |= data.len() > room;
        self.kept.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn finish(self) {
        let answer = crate::data::tap::Answer {
            status: self.head.0,
            headers: self.head.1,
            body: self.kept.freeze(),
            truncated: self.truncated,
        };
        // The mirror job may have given up waiting; then nobody needs the answer.
        let _ = self.tx.send((answer, self.started.elapsed()));
    }
}

impl ResponseBody {
    /// A body the proxy writes itself.
    pub fn text(text: impl Into<Bytes>) -> Self {
        ResponseBody {
            source: Source::Local(Full::new(text.into())),
            record: None,
            capture: None,
            in_flight: None,
        }
    }

    /// A body of bytes the proxy wrote.
    pub fn bytes(bytes: Vec<u8>) -> Self {
        Self::text(bytes)
    }

    /// The upstream's body, streamed.
    pub fn upstream(body: crate::data::upstream::UpstreamBody) -> Self {
        ResponseBody {
            source: Source::Upstream(body),
            record: None,
            capture: None,
            in_flight: None,
        }
    }

    /// Attaches the request's record, finished when this body ends or is dropped.
    pub fn with_record(mut self, record: Record) -> Self {
        self.record = Some(record);
        self
    }

    /// Keeps the request counted in flight on its connection until this body is dropped.
    pub fn with_in_flight(mut self, in_flight: InFlight) -> Self {
        self.in_flight = Some(in_flight);
        self
    }

    /// Keeps a copy of this answer for the shadow comparison.
    pub fn with_capture(mut self, capture: Capture) -> Self {
        self.capture = Some(capture);
        self
    }

    fn finish(&mut self, complete: bool) {
        if let Some(mut record) = self.record.take() {
            record.complete = complete;
        }
        if let Some(capture) = self.capture.take() {
            if complete {
                capture.finish();
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Every field is Unpin, so projecting through get_mut is sound.
        let this = self.get_mut();
        let polled = match &mut this.source {
            Source::Upstream(b) => Pin::new(b).poll_frame(cx),
            Source::Local(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(capture), Some(data)) = (&mut this.capture, frame.data_ref()) {
                    capture.keep(data);
                }
                if let Some(record) = &mut this.record {
                    if let Some(data) = frame.data_ref() {
                        record.bytes_out += data.len() as u64;
                    } else if let Some(trailers) = frame.trailers_ref() {
                        record.grpc_failure |= crate::data::headers::grpc_failed(trailers);
                    }
                }
                if this.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Upstream(b) => b.is_end_stream(),
            Source::Local(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Upstream(b) => b.size_hint(),
            Source::Local(b) => b.size_hint(),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The downstream request body on its way upstream, streamed as it arrives.
pub struct RequestBody {
    /// Hyper's stream, the fast path's whole body, or none (a retried request that had none).
    inner: Inbound,
    bytes: Option<Arc<AtomicU64>>,
    /// Boxed: a mirrored request is the rare one, and the request's body is moved through every
    /// layer of the forwarding future, each keeping room for it.
    tee: Option<Box<Tee>>,
    limit: Option<BodyLimit>,
    idle: Option<Idle>,
    /// Where the client's fault is recorded when the body fails by it.
    fault: Option<Arc<FaultCell>>,
    /// The connection's scanner, for chunk sizes announced past the limit.
    conn: Option<RequestConn>,
}

/// A client that stops sending its body for longer than this is cut off (408).
struct Idle {
    timeout: std::time::Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

/// The error of a body whose client stopped sending.
#[derive(Debug, thiserror::Error)]
#[error("the client stopped sending the request body")]
pub struct BodyIdle;

/// A route's body limit on a body of unknown length: past it (or once a chunk is announced past
/// it), the body fails and the fault cell tells the handler to answer 413 rather than 502.
struct BodyLimit {
    max: u64,
    seen: u64,
}

/// The error of a body cut off at its route's limit.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the route's limit")]
pub struct BodyTooLarge;

/// References to the chunks of a mirrored request's body, handed to the mirror when it ends.
struct Tee {
    draft: crate::data::tap::Draft,
    chunks: Vec<Bytes>,
    size: u64,
}

impl RequestBody {
    /// Wraps a request body; `bytes`, when given, counts the bytes read.
    pub fn new(inner: Inbound, bytes: Option<Arc<AtomicU64>>) -> Self {
        RequestBody {
            inner,
            bytes,
            tee: None,
            limit: None,
            idle: None,
            fault: None,
            conn: None,
        }
    }

    /// Fails the body when no frame arrives for `timeout` (a stalled client).
    pub fn with_idle_timeout(mut self, timeout: std::time::Duration) -> Self {
        if !self.ended() {
            self.idle = Some(Idle {
                timeout,
                sleep: Box::pin(tokio::time::sleep(timeout)),
            });
        }
        self
    }

    /// Records in `cell` the client's fault when this body fails by it.
    pub fn with_fault(mut self, cell: Arc<FaultCell>) -> Self {
        self.fault = Some(cell);
        self
    }

    /// Reads the chunk sizes the connection's scanner saw, so a chunk announced past the limit
    /// fails the body before its data is forwarded.
    pub fn with_conn(mut self, conn: RequestConn) -> Self {
        self.conn = Some(conn);
        self
    }

    /// True when this body's chunks have announced more than its limit.
    pub fn announced_past_limit(&self) -> bool {
        match (&self.limit, &self.conn) {
            (Some(limit), Some(conn)) => conn.declared().is_some_and(|d| d > limit.max),
            _ => false,
        }
    }

    /// Fails the body by the client's `fault`.
    fn fail(
        &mut self,
        fault: DownstreamFault,
        error: BoxError,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(cell) = &self.fault {
            cell.set(fault);
        }
        self.tee = None;
        Poll::Ready(Some(Err(error)))
    }

    /// An empty body, for a retry of a request that had none.
    pub fn empty() -> Self {
        RequestBody {
            inner: Inbound::Empty,
            bytes: None,
            tee: None,
            limit: None,
            idle: None,
            fault: None,
            conn: None,
        }
    }

    /// True while frames may still come from the client (hyper's body, not yet ended); a whole
    /// body read by the fast path cannot stall or fail by the client.
    pub fn streamed(&self) -> bool {
        matches!(&self.inner, Inbound::Streamed(b) if !b.is_end_stream())
    }

    /// True when no more frames will come (an empty body is ended from the start).
    pub fn ended(&self) -> bool {
        self.inner.is_end_stream()
    }

    /// Cuts the body off after `max` bytes.
    pub fn with_limit(mut self, max: u64) -> Self {
        self.limit = Some(BodyLimit { max, seen: 0 });
        self
    }

    /// Tees the body into a shadow copy; an empty body sends the copy at once.
    pub fn with_mirror(mut self, draft: crate::data::tap::Draft) -> Self {
        if self.ended() {
            draft.send(Bytes::new());
        } else {
            self.tee = Some(Box::new(Tee {
                draft,
                chunks: Vec::new(),
                size: 0,
            }));
        }
        self
    }

    fn tee_frame(&mut self, frame: Option<&Frame<Bytes>>) {
        let Some(tee) = self.tee.as_mut() else { return };
        if let Some(data) = frame.and_then(|f| f.data_ref()) {
            tee.size += data.len() as u64;
            if tee.size > tee.draft.max_body_bytes() {
                if let Some(t) = self.tee.take() {
                    t.draft.skip_body_size();
                }
                return;
            }
            tee.chunks.push(data.clone());
        }
        if frame.is_none() || self.ended() {
            if let Some(t) = self.tee.take() {
                let body = if t.chunks.len() == 1 {
                    t.chunks[0].clone()
                } else {
                    Bytes::from(t.chunks.concat())
                };
                t.draft.send(body);
            }
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Inbound::Empty = this.inner {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(idle) = this.idle.as_mut() {
            if polled.is_pending() {
                if idle.sleep.as_mut().poll(cx).is_ready() {
                    return this.fail(DownstreamFault::Stalled, Box::new(BodyIdle));
                }
            } else {
                let deadline = tokio::time::Instant::now() + idle.timeout;
                idle.sleep.as_mut().reset(deadline);
            }
        }
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(bytes), Some(data)) = (&this.bytes, frame.data_ref()) {
                    bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                if let (Some(limit), Some(data)) = (&mut this.limit, frame.data_ref()) {
                    limit.seen += data.len() as u64;
                    if limit.seen > limit.max {
                        return this.fail(DownstreamFault::TooLarge, Box::new(BodyTooLarge));
                    }
                }
                if this.announced_past_limit() {
                    return this.fail(DownstreamFault::TooLarge, Box::new(BodyTooLarge));
                }
                this.tee_frame(Some(frame));
            }
            Poll::Ready(None) => this.tee_frame(None),
            // A broken upload is not copied: the tee is dropped with the body.
            Poll::Ready(Some(Err(error))) => {
                if let Some(cell) = &this.fault {
                    cell.set(classify_body_error(error));
                }
                this.tee = None;
            }
            Poll::Pending => {}
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.ended()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
