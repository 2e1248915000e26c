//! The per-request record: one measurement taken when a response ends (or is abandoned), read by
//! every consumer: the version's Prometheus handles, the canary analysis counts and the access log.
//!
//! A [`Record`] is created as soon as a request has a version. It travels with the response body
//! and is finished exactly once, on drop: at the end of the body, when the client goes away
//! mid-body, or when the request is abandoned before a response head (counted as 499, as nginx
//! does).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Method};

use crate::data::snapshot::Snapshot;
use crate::route::Reason;

/// Status recorded for a request whose client went away before a response head (nginx's 499).
pub const CLIENT_CLOSED: u16 = 499;

/// Fields only the access log needs; present only for requests the log samples.
pub struct AccessEntry {
    /// `x-request-id` as forwarded.
    pub request_id: HeaderValue,
    /// Request method.
    pub method: Method,
    /// Path and query as received.
    pub path: Option<PathAndQuery>,
    /// Why the version was chosen.
    pub reason: Reason,
    /// The endpoint the request went to.
    pub endpoint: Option<Authority>,
    /// Request body bytes read from the client, counted as they stream.
    pub bytes_in: Arc<AtomicU64>,
}

/// The measurement of one routed request.
pub struct Record {
    snapshot: Arc<Snapshot>,
    route: usize,
    version: usize,
    started: Instant,
    /// Status sent downstream; [`CLIENT_CLOSED`] until a response head exists.
    pub status: u16,
    /// Response body bytes sent downstream.
    pub bytes_out: u64,
    /// Whether the whole response body was sent.
    pub complete: bool,
    /// Present when the access log samples this request.
    pub access: Option<Box<AccessEntry>>,
    /// The endpoint's health, fed by the outcome (passive ejection).
    pub endpoint: Option<Arc<crate::data::endpoint::EndpointHealth>>,
    /// A gRPC failure status in the response headers or trailers: an error for the analysis.
    pub grpc_failure: bool,
}

impl Record {
    /// Starts the record of a request routed to (route, version) of `snapshot`.
    pub fn start(snapshot: Arc<Snapshot>, route: usize, version: usize, started: Instant) -> Self {
        snapshot.routes[route].versions[version]
            .metrics
            .in_flight
            .inc();
        Record {
            snapshot,
            route,
            version,
            started,
            status: CLIENT_CLOSED,
            bytes_out: 0,
            complete: false,
            access: None,
            endpoint: None,
            grpc_failure: false,
        }
    }
}

impl Record {
    /// When the request arrived.
    pub fn started(&self) -> Instant {
        self.started
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let route = &self.snapshot.routes[self.route];
        let version = &route.versions[self.version];
        let elapsed = self.started.elapsed();
        version.metrics.in_flight.dec();
        version.metrics.count_status(self.status);
        if self.status != CLIENT_CLOSED {
            let failed = self.status >= 500 || self.grpc_failure;
            version.metrics.stats.record(failed, elapsed);
            if let Some(endpoint) = &self.endpoint {
                endpoint.observe(self.status >= 500);
            }
        }
        if let Some(a) = &self.access {
            tracing::info!(
                target: "switchyard::access",
                request_id = a.request_id.to_str().unwrap_or("-"),
                route = %route.name,
                version = %version.name,
                reason = a.reason.as_str(),
                method = %a.method,
                path = a.path.as_ref().map_or("-", |p| p.as_str()),
                status = self.status,
                upstream = %a.endpoint.as_ref().map_or("-", |e| e.as_str()),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                bytes_in = a.bytes_in.load(Ordering::Relaxed),
                bytes_out = self.bytes_out,
                complete = self.complete,
            );
        }
    }
}
