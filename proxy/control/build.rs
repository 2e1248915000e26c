//! Building a snapshot: the configuration, the runtime state on top of it and the process-lifetime
//! resources (clients, endpoint health, mirror queues, rate limiters, metric handles) resolved into
//! the immutable state a request reads. Only the control task builds.

use std::collections::HashSet;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderValue;

use crate::config::Config;
use crate::data::snapshot::{RouteState, Snapshot, VersionState};
use crate::data::upstream::{ClientKey, Clients};
use crate::metrics::Metrics;
use crate::release::health::Health;
use crate::route::RouteTable;
use crate::state::{effective, Overrides, WeightSource};

/// The process-lifetime things a snapshot resolves handles into.
pub struct Resources {
    /// Upstream clients by connection settings.
    pub clients: Clients,
    /// Metric families.
    pub metrics: Arc<Metrics>,
    /// Endpoint health.
    pub health: Arc<Health>,
    /// Dark-launch dispatchers and reports.
    pub mirrors: Arc<crate::shadow::mirror::Mirrors>,
    /// Rate limiters.
    pub limiters: Arc<crate::data::ratelimit::Limiters>,
}

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
            mirror: route
                .mirror
                .as_ref()
                .map(|m| crate::data::tap::RouteMirror {
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
