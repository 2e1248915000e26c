//! The snapshot: immutable routing state with a generation number, swapped whole through arc-swap.
//!
//! A request loads the current snapshot once and keeps it to the end, so a reload never changes
//! the state a request started with. Everything a request needs is resolved here, at build time:
//! the routing tables, parsed endpoints, the upstream client of each version and the header value
//! naming each version.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::HeaderValue;

use crate::config::{Config, Endpoint, Timeouts};
use crate::route::RouteTable;
use crate::upstream::{ClientKey, Clients, UpstreamClient};

/// Immutable routing state.
pub struct Snapshot {
    /// Increases by one with every successful build.
    pub generation: u64,
    /// The configuration this snapshot was built from.
    pub config: Arc<Config>,
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
}

/// Forwarding state of one version.
pub struct VersionState {
    /// Version name.
    pub name: String,
    /// The version name as a header value, for `x-switchyard-version`.
    pub name_header: HeaderValue,
    /// Effective weight in this snapshot.
    pub weight: u32,
    /// Endpoints, balanced round robin.
    pub endpoints: Vec<Endpoint>,
    /// The pooled client for this route's connection settings.
    pub client: UpstreamClient,
    next: AtomicUsize,
}

impl VersionState {
    /// The next endpoint in round-robin order, or `None` when the version has none.
    pub fn next_endpoint(&self) -> Option<&Endpoint> {
        if self.endpoints.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.endpoints.get(n % self.endpoints.len())
    }
}

impl Snapshot {
    /// Builds a snapshot of `config` with the configured weights.
    pub fn build(config: Arc<Config>, generation: u64, clients: &Clients) -> Snapshot {
        let mut tables = Vec::with_capacity(config.routes.len());
        let mut routes = Vec::with_capacity(config.routes.len());
        for route in &config.routes {
            let weights: Vec<u32> = route.versions.iter().map(|v| v.weight).collect();
            tables.push(RouteTable::new(route, &weights));
            let client = clients.get(ClientKey {
                connect_timeout: route.timeouts.connect,
                idle_timeout: route.timeouts.idle,
            });
            let versions = route
                .versions
                .iter()
                .zip(&weights)
                .map(|(v, weight)| VersionState {
                    name: v.name.clone(),
                    name_header: HeaderValue::from_str(&v.name)
                        .unwrap_or_else(|_| HeaderValue::from_static("invalid-name")),
                    weight: *weight,
                    endpoints: v.endpoints.clone(),
                    client: client.clone(),
                    next: AtomicUsize::new(0),
                })
                .collect();
            routes.push(RouteState {
                name: route.name.clone(),
                versions,
                timeouts: route.timeouts,
                expose_version_header: route.expose_version_header,
            });
        }
        Snapshot {
            generation,
            config,
            tables,
            routes,
        }
    }
}
