//! The data path's side of a dark launch: decide whether a request is copied, and hand the copy
//! over without waiting.
//!
//! A mirrored request costs a header-map clone, a `try_send` into the route's bounded queue and
//! references to the body chunks as they stream (no copy, no wait): the live request never waits
//! for the shadow. A full queue drops the copy (counted). The shadow module owns the other end of
//! the queue: the dispatcher, the comparison and the reports.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use tokio::sync::{mpsc, oneshot};

use crate::config::Mirror;
use crate::data::forwarding::Added;
use crate::data::snapshot::Snapshot;
use crate::metrics::MirrorMetrics;

/// `x-switchyard-shadow: 1` marks every shadow request so the shadow can suppress side effects.
pub static X_SWITCHYARD_SHADOW: HeaderName = HeaderName::from_static("x-switchyard-shadow");

/// One complete answer, as far as it was kept.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body, up to the capture cap.
    pub body: Bytes,
    /// True when the body was longer than the cap (only a prefix was kept).
    pub truncated: bool,
}

/// Where the data path sends the live answer once it has streamed to the client.
pub type LiveSender = oneshot::Sender<(Answer, Duration)>;

/// A copy waiting to be sent: what the shadow dispatcher receives.
pub struct Job {
    pub snapshot: Arc<Snapshot>,
    pub route: usize,
    pub method: Method,
    pub path: Option<PathAndQuery>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub live: oneshot::Receiver<(Answer, Duration)>,
}

/// A route's mirror as the data path sees it.
#[derive(Clone)]
pub struct RouteMirror {
    /// The settings.
    pub settings: Mirror,
    /// The queue into the route's dispatcher.
    pub queue: mpsc::Sender<Job>,
    /// Counters.
    pub metrics: MirrorMetrics,
}

/// What the data path hands over for one mirrored request.
pub struct Draft {
    mirror: RouteMirror,
    job: Job,
}

/// The data path's mirror decision for one request: `None` when it is not copied (counted).
/// The draft still needs the request body (see [`Draft::send`]) and gives the live capture.
pub fn offer(
    snapshot: &Arc<Snapshot>,
    route: usize,
    parts: &http::request::Parts,
    added: &Added,
    request_id: &HeaderValue,
) -> Option<(Draft, LiveSender)> {
    let mirror = snapshot.routes[route].mirror.as_ref()?;
    let m = &mirror.settings;
    if !m.methods.contains(&parts.method) {
        mirror.metrics.skipped_method.inc();
        return None;
    }
    if m.percent_buckets < 10_000 {
        // Deterministic per request id: retries of one request are copied or not alike.
        let bucket = crate::route::bucket_of("mirror", request_id.as_bytes());
        if bucket >= m.percent_buckets {
            return None;
        }
    }
    // A shadow whose endpoints are all down or ejected is not hammered with copies: they fail
    // at once (counted) until an endpoint is usable again.
    let shadow = &snapshot.routes[route].versions[m.version];
    if !shadow.health.iter().any(|h| h.usable()) {
        mirror.metrics.failed.inc();
        return None;
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > m.max_body_bytes) {
        mirror.metrics.skipped_body_size.inc();
        return None;
    }
    let (tx, rx) = oneshot::channel();
    let mut headers = parts.headers.clone();
    added.insert_into(&mut headers);
    Some((
        Draft {
            mirror: mirror.clone(),
            job: Job {
                snapshot: snapshot.clone(),
                route,
                method: parts.method.clone(),
                path: parts.uri.path_and_query().cloned(),
                headers,
                body: Bytes::new(),
                live: rx,
            },
        },
        tx,
    ))
}

impl Draft {
    /// The most request body bytes this copy may carry.
    pub fn max_body_bytes(&self) -> u64 {
        self.mirror.settings.max_body_bytes
    }

    /// Counts a copy given up because its body grew past the limit.
    pub fn skip_body_size(self) {
        self.mirror.metrics.skipped_body_size.inc();
    }

    /// Queues the copy with its complete body; never waits. A full queue drops it (counted).
    pub fn send(mut self, body: Bytes) {
        self.job.body = body;
        match self.mirror.queue.try_send(self.job) {
            Ok(()) => {}
            Err(_) => self.mirror.metrics.dropped_queue_full.inc(),
        }
    }
}
