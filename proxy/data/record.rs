//! The per-request record: one measurement taken when a response ends (or is abandoned), read by
//! every consumer: the version's Prometheus handles, the canary analysis counts and the access log.
//!
//! A [`Record`] is created as soon as a request has a version. It travels with the response body
//! and is finished exactly once, on drop: at the end of the body, when the client goes away
//! mid-body, or when the request is abandoned before a response head (counted as 499, as nginx
//! does).
//!
//! Every outcome is blamed on a side ([`Blame`]) before it is counted. Only the upstream's
//! outcomes feed the version's analysis counts and its endpoint's passive health; a client's
//! fault (a request body that failed by it, a client that left) is counted as a downstream error
//! and the proxy's own failures by their status alone. The access log names the side.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Method};

use crate::data::fault::{Blame, DownstreamFault, FaultCell};
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
    /// The side a failure answered by the proxy is blamed on.
    pub blame: Blame,
    /// The client's fault recorded by the request body, read when the request ends: a body that
    /// failed by the client outweighs whatever the upstream call made of it.
    pub body_fault: Option<Arc<FaultCell>>,
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
            blame: Blame::None,
            body_fault: None,
        }
    }
}

impl Record {
    /// When the request arrived.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Who the outcome is blamed on, all known now.
    fn final_blame(&self) -> Blame {
        if let Some(fault) = self.body_fault.as_ref().and_then(|f| f.get()) {
            return Blame::Downstream(fault);
        }
        match self.blame {
            Blame::None if self.status == CLIENT_CLOSED => {
                Blame::Downstream(DownstreamFault::Closed)
            }
            Blame::None if self.status >= 500 || self.grpc_failure => Blame::Upstream(None),
            blame => blame,
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let route = &self.snapshot.routes[self.route];
        let version = &route.versions[self.version];
        let elapsed = self.started.elapsed();
        version.metrics.in_flight.dec();
        version.metrics.count_status(self.status);
        let blame = self.final_blame();
        match blame {
            // The client's fault never reaches what judges the version: not the analysis, not
            // the endpoint's health (not even as a success, which would reset its error streak).
            Blame::Downstream(fault) => version.metrics.downstream.count(fault),
            Blame::Proxy => {}
            Blame::None | Blame::Upstream(_) => {
                let failed = self.status >= 500 || self.grpc_failure;
                version.metrics.stats.record(failed, elapsed);
                if let Some(endpoint) = &self.endpoint {
                    endpoint.observe(self.status >= 500);
                }
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
                blame = blame.side(),
                fault = blame.kind(),
            );
        }
    }
}
