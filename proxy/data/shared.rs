//! The runtime handles that the data path and the control plane share: the snapshot cell (one
//! writer, the control task; many readers, one load per request) and the metric families. Kept
//! apart from the handler so the control plane never imports the data path's request code.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::data::snapshot::Snapshot;
use crate::metrics::Metrics;

/// What every request handler shares.
pub struct Shared {
    /// The current snapshot; the control task is its only writer.
    pub snapshot: ArcSwap<Snapshot>,
    /// Process-wide metric families.
    pub metrics: Arc<Metrics>,
}

/// A request's body as the service gets it: hyper's, or `None` for a request the fast path read,
/// which has none (`data::fast` takes only requests without a body).
pub type Inbound = Option<hyper::body::Incoming>;

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
