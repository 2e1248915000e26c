//! The runtime handles that the data path and the control plane share: the snapshot cell (one
//! writer, the control task; many readers, one load per request) and the metric families. Kept
//! apart from the handler so the control plane never imports the data path's request code.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::data::snapshot::Snapshot;
use crate::metrics::Metrics;

/// What every request handler shares.
pub struct Shared {
    /// The current snapshot; the control task is its only writer.
    pub snapshot: ArcSwap<Snapshot>,
    /// Process-wide metric families.
    pub metrics: Arc<Metrics>,
}

/// A request's body as the service gets it.
#[derive(Debug)]
pub enum Inbound {
    /// None at all: a request the fast path read without a `Content-Length`.
    Empty,
    /// Streamed by hyper's server as it arrives.
    Streamed(hyper::body::Incoming),
    /// Read whole by the fast path, with its head (`data::fast` takes a body only when all of
    /// it came with the head).
    Whole(Bytes),
}

impl Body for Inbound {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        match this {
            Inbound::Streamed(body) => Pin::new(body).poll_frame(cx),
            Inbound::Whole(data) => {
                let data = std::mem::take(data);
                *this = Inbound::Empty;
                Poll::Ready((!data.is_empty()).then(|| Ok(Frame::data(data))))
            }
            Inbound::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Inbound::Streamed(body) => body.is_end_stream(),
            Inbound::Whole(data) => data.is_empty(),
            Inbound::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Inbound::Streamed(body) => body.size_hint(),
            Inbound::Whole(data) => SizeHint::with_exact(data.len() as u64),
            Inbound::Empty => SizeHint::with_exact(0),
        }
    }
}

/// Where a request came from.
#[derive(Clone)]
pub struct Downstream {
    /// The client's address.
    pub peer: SocketAddr,
    /// The client's address as a header value (made once per connection).
    pub peer_ip: http::HeaderValue,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The request's view of its connection: the framing the scanner found in its body.
    pub conn: Option<crate::data::conn::RequestConn>,
}
