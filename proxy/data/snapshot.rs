//! The snapshot: immutable routing state with a generation number, swapped whole through arc-swap.
//!
//! A request loads the current snapshot once and keeps it to the end, so a reload never changes
//! the state a request started with. Everything a request needs is resolved here, at build time:
//! the routing tables, effective weights (file plus overrides), parsed endpoints, the upstream
//! client and the metric handles of each version, the header value naming each version.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderValue;

use crate::config::{Config, Endpoint, Timeouts};
use crate::data::endpoint::EndpointHealth;
use crate::data::upstream::UpstreamClient;
use crate::metrics::VersionMetrics;
use crate::route::RouteTable;
use crate::state::{Overrides, WeightSource};

/// Immutable routing state.
pub struct Snapshot {
    /// Increases by one with every successful build.
    pub generation: u64,
    /// When this snapshot was built.
    pub built_at: SystemTime,
    /// The configuration this snapshot was built from.
    pub config: Arc<Config>,
    /// The overrides applied on top of it.
    pub overrides: Overrides,
    /// What the routing decision reads, one entry per route.
    pub tables: Vec<RouteTable>,
    /// What forwarding needs, one entry per route, same order as `tables`.
    pub routes: Vec<RouteState>,
}

/// Forwarding state of one route.
pub struct RouteState {
    /// Route name.
    pub name: String,
    /// Versions in declared order.
    pub versions: Vec<VersionState>,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// Whether responses carry `x-switchyard-version`.
    pub expose_version_header: bool,
    /// Dark launch, when configured.
    pub mirror: Option<crate::data::tap::RouteMirror>,
    /// Request bodies larger than this are refused with 413.
    pub max_body_bytes: Option<u64>,
    /// Circuit breaker: requests in flight per version at most.
    pub max_requests_per_version: Option<u32>,
    /// Retries on connect failures, when configured.
    pub retries: Option<crate::config::Retries>,
    /// The route's rate limiter and the counter of requests it refused.
    pub rate_limit: Option<(
        Arc<crate::data::ratelimit::RouteLimiter>,
        prometheus::IntCounter,
    )>,
}

/// Forwarding state of one version.
pub struct VersionState {
    /// Version name.
    pub name: String,
    /// The version name as a header value, for `x-switchyard-version`.
    pub name_header: HeaderValue,
    /// Effective weight in this snapshot.
    pub weight: u32,
    /// Where that weight comes from.
    pub source: WeightSource,
    /// Endpoints, balanced round robin.
    pub endpoints: Vec<Endpoint>,
    /// Each endpoint's health, same order as `endpoints`.
    pub health: Vec<Arc<EndpointHealth>>,
    /// The pooled client for this version's connection settings.
    pub client: UpstreamClient,
    /// The direct path to HTTP/1.1 endpoints (`None` for HTTP/2).
    pub direct: Option<crate::data::upstream::Direct>,
    /// The same settings, for shadow copies.
    pub mirror_client: crate::data::upstream::MirrorClient,
    /// `http` or `https` towards the endpoints.
    pub scheme: http::uri::Scheme,
    /// The HTTP version spoken to the endpoints.
    pub http_version: http::Version,
    /// Metric handles, resolved for this (route, version).
    pub metrics: VersionMetrics,
    /// Retries in flight, for the retry budget.
    pub retries_in_flight: std::sync::atomic::AtomicU32,
    /// The round-robin cursor over `endpoints`.
    pub(crate) next: AtomicUsize,
}

impl VersionState {
    /// The next usable endpoint in round-robin order, skipping endpoints that are down or
    /// ejected; when all are, the next one anyway (failing open beats refusing every request).
    /// `None` only when the version has no endpoint.
    pub fn next_endpoint(&self) -> Option<(&Endpoint, &Arc<EndpointHealth>)> {
        let len = self.endpoints.len();
        if len == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let pick = (0..len)
            .map(|k| (start + k) % len)
            .find(|i| self.health[*i].usable())
            .unwrap_or(start % len);
        Some((&self.endpoints[pick], &self.health[pick]))
    }
}

impl Snapshot {
    /// The index of route `name`.
    pub fn route_index(&self, name: &str) -> Option<usize> {
        self.routes.iter().position(|r| r.name == name)
    }
}
