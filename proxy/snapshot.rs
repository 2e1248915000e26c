//! The snapshot: immutable routing state with a generation number, swapped whole through arc-swap.
//!
//! A request loads the current snapshot once and keeps it to the end, so a reload never changes
//! the state a request started with. Everything a request needs is resolved here, at build time:
//! the routing tables, effective weights (file plus overrides), parsed endpoints, the upstream
//! client and the metric handles of each version, the header value naming each version.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderValue;

use crate::config::{Config, Endpoint, Timeouts};
use crate::control::overrides::{effective, Overrides, WeightSource};
use crate::health::{EndpointHealth, Health};
use crate::metrics::{Metrics, VersionMetrics};
use crate::route::RouteTable;
use crate::upstream::{ClientKey, Clients, UpstreamClient};

/// The process-lifetime things a snapshot resolves handles into.
pub struct Resources {
    /// Upstream clients by connection settings.
    pub clients: Clients,
    /// Metric families.
    pub metrics: Arc<Metrics>,
    /// Endpoint health.
    pub health: Arc<Health>,
    /// Dark-launch dispatchers and reports.
    pub mirrors: Arc<crate::mirror::Mirrors>,
    /// Rate limiters.
    pub limiters: Arc<crate::ratelimit::Limiters>,
}

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
    pub mirror: Option<crate::mirror::RouteMirror>,
    /// Request bodies larger than this are refused with 413.
    pub max_body_bytes: Option<u64>,
    /// Circuit breaker: requests in flight per version at most.
    pub max_requests_per_version: Option<u32>,
    /// Retries on connect failures, when configured.
    pub retries: Option<crate::config::Retries>,
    /// The route's rate limiter and the counter of requests it refused.
    pub rate_limit: Option<(Arc<crate::ratelimit::RouteLimiter>, prometheus::IntCounter)>,
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
    /// The same settings, for shadow copies.
    pub mirror_client: crate::upstream::MirrorClient,
    /// `http` or `https` towards the endpoints.
    pub scheme: http::uri::Scheme,
    /// The HTTP version spoken to the endpoints.
    pub http_version: http::Version,
    /// Metric handles, resolved for this (route, version).
    pub metrics: VersionMetrics,
    /// Retries in flight, for the retry budget.
    pub retries_in_flight: std::sync::atomic::AtomicU32,
    next: AtomicUsize,
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
    /// Builds a snapshot of `config` with `overrides` applied, resolving clients and metric
    /// handles, and prunes the metric series of versions that are gone.
    pub fn build(
        config: Arc<Config>,
        overrides: Overrides,
        generation: u64,
        resources: &Resources,
    ) -> Snapshot {
        let Resources {
            clients,
            metrics,
            health,
            mirrors,
            limiters,
        } = resources;
        let mut tables = Vec::with_capacity(config.routes.len());
        let mut routes = Vec::with_capacity(config.routes.len());
        let mut labelled = HashSet::new();
        for route in &config.routes {
            let mut e = effective(route, overrides.routes.get(&route.name));
            if route.health_check.is_some() {
                // A version whose endpoints are all down loses its share to the others, unless
                // every version with traffic is down (then nothing would be served at all).
                let down: Vec<bool> = route
                    .versions
                    .iter()
                    .map(|v| !v.endpoints.iter().any(|ep| health.of(ep).usable()))
                    .collect();
                let any_up = e.weights.iter().zip(&down).any(|(w, d)| *w > 0 && !d);
                if any_up {
                    for (i, d) in down.iter().enumerate() {
                        if *d && e.weights[i] > 0 {
                            e.weights[i] = 0;
                            e.sources[i] = WeightSource::Unhealthy;
                        }
                    }
                }
            }
            tables.push(RouteTable::with_stopped(route, &e.weights, &e.stopped));
            let timeouts = route.timeouts;
            let versions = route
                .versions
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    labelled.insert((route.name.clone(), v.name.clone()));
                    VersionState {
                        name: v.name.clone(),
                        // Names are validated to letters, digits, '-', '_' and '.'.
                        name_header: HeaderValue::from_str(&v.name)
                            .unwrap_or_else(|_| HeaderValue::from_static("invalid-name")),
                        weight: e.weights[i],
                        source: e.sources[i],
                        endpoints: v.endpoints.clone(),
                        health: v.endpoints.iter().map(|ep| health.of(ep)).collect(),
                        client: clients.get(ClientKey {
                            connect_timeout: timeouts.connect,
                            idle_timeout: timeouts.idle,
                            protocol: v.protocol,
                            tls: v.tls.clone(),
                        }),
                        mirror_client: clients.get_mirror(ClientKey {
                            connect_timeout: timeouts.connect,
                            idle_timeout: timeouts.idle,
                            protocol: v.protocol,
                            tls: v.tls.clone(),
                        }),
                        scheme: if v.tls.is_some() {
                            http::uri::Scheme::HTTPS
                        } else {
                            http::uri::Scheme::HTTP
                        },
                        http_version: match v.protocol {
                            crate::config::UpstreamProtocol::Http1 => http::Version::HTTP_11,
                            crate::config::UpstreamProtocol::H2 => http::Version::HTTP_2,
                        },
                        metrics: metrics.version(&route.name, &v.name, e.weights[i]),
                        next: AtomicUsize::new(0),
                        retries_in_flight: std::sync::atomic::AtomicU32::new(0),
                    }
                })
                .collect();
            routes.push(RouteState {
                name: route.name.clone(),
                versions,
                timeouts: route.timeouts,
                expose_version_header: route.expose_version_header,
                max_body_bytes: route.max_body_bytes,
                max_requests_per_version: route.max_requests_per_version,
                retries: route.retries,
                rate_limit: route.rate_limit.as_ref().map(|rl| {
                    (
                        limiters.get(&route.name, rl),
                        metrics.rate_limited.with_label_values(&[&route.name]),
                    )
                }),
                mirror: route.mirror.as_ref().map(|m| crate::mirror::RouteMirror {
                    settings: m.clone(),
                    queue: mirrors.queue(&route.name, m),
                    metrics: metrics.mirror(&route.name),
                }),
            });
        }
        metrics.retain(&labelled);
        metrics.config_generation.set(generation as i64);
        Snapshot {
            generation,
            built_at: SystemTime::now(),
            config,
            overrides,
            tables,
            routes,
        }
    }

    /// The index of route `name`.
    pub fn route_index(&self, name: &str) -> Option<usize> {
        self.routes.iter().position(|r| r.name == name)
    }
}
