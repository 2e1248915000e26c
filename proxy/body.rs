//! Body types. Downstream responses stream the upstream's body (or a short body the proxy wrote)
//! and carry the request's [`Record`], finished when the body ends or is dropped. Request bodies
//! stream to the upstream and count their bytes when the access log wants them.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::record::Record;

/// Where a response body's bytes come from.
#[derive(Debug)]
enum Source {
    /// Streamed from the upstream, frame by frame, trailers included.
    Upstream(Incoming),
    /// Written by the proxy.
    Local(Full<Bytes>),
}

/// A downstream response body.
pub struct ResponseBody {
    source: Source,
    record: Option<Record>,
}

impl ResponseBody {
    /// A body the proxy writes itself.
    pub fn text(text: impl Into<Bytes>) -> Self {
        ResponseBody {
            source: Source::Local(Full::new(text.into())),
            record: None,
        }
    }

    /// A body of bytes the proxy wrote.
    pub fn bytes(bytes: Vec<u8>) -> Self {
        Self::text(bytes)
    }

    /// The upstream's body, streamed.
    pub fn upstream(body: Incoming) -> Self {
        ResponseBody {
            source: Source::Upstream(body),
            record: None,
        }
    }

    /// Attaches the request's record, finished when this body ends or is dropped.
    pub fn with_record(mut self, record: Record) -> Self {
        self.record = Some(record);
        self
    }

    fn finish(&mut self, complete: bool) {
        if let Some(mut record) = self.record.take() {
            record.complete = complete;
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        // Every field is Unpin, so projecting through get_mut is sound.
        let this = self.get_mut();
        let polled = match &mut this.source {
            Source::Upstream(b) => Pin::new(b).poll_frame(cx),
            Source::Local(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(record) = &mut this.record {
                    if let Some(data) = frame.data_ref() {
                        record.bytes_out += data.len() as u64;
                    } else if let Some(trailers) = frame.trailers_ref() {
                        record.grpc_failure |= crate::headers::grpc_failed(trailers);
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

/// The downstream request body on its way upstream, streamed as it arrives.
pub struct RequestBody {
    inner: Incoming,
    bytes: Option<Arc<AtomicU64>>,
}

impl RequestBody {
    /// Wraps a request body; `bytes`, when given, counts the bytes read.
    pub fn new(inner: Incoming, bytes: Option<Arc<AtomicU64>>) -> Self {
        RequestBody { inner, bytes }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(bytes)) = (&polled, &this.bytes) {
            if let Some(data) = frame.data_ref() {
                bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
