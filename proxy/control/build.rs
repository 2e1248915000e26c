//! Building a snapshot: the configuration, the runtime state on top of it and the process-lifetime
//! resources (clients, endpoint health, mirror queues, rate limiters, metric handles) resolved into
//! the immutable state a request reads. Only the control task builds.

use std::collections::HashSet;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderValue;

use crate::config::{Config, Route, UpstreamProtocol, Version};
use crate::data::snapshot::{RouteState, Snapshot, VersionState};
use crate::data::upstream::{ClientKey, Clients};
use crate::metrics::Metrics;
use crate::release::health::Health;
use crate::route::RouteTable;
use crate::state::{effective, Effective, Overrides, WeightSource};

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
    let mut tables = Vec::with_capacity(config.routes.len());
    let mut routes = Vec::with_capacity(config.routes.len());
    let mut labelled = HashSet::new();
    for route in &config.routes {
        let mut e = effective(route, overrides.routes.get(&route.name));
        if route.health_check.is_some() {
            shift_from_down_versions(route, &mut e, &resources.health);
        }
        tables.push(RouteTable::with_stopped(route, &e.weights, &e.stopped));
        let versions = route
            .versions
            .iter()
            .enumerate()
            .map(|(i, v)| {
                labelled.insert((route.name.clone(), v.name.clone()));
                version_state(route, v, e.weights[i], e.sources[i], resources)
            })
            .collect();
        routes.push(route_state(route, versions, resources));
    }
    resources.metrics.retain(&labelled);
    resources.metrics.config_generation.set(generation as i64);
    Snapshot {
        generation,
        built_at: SystemTime::now(),
        config,
        overrides,
        tables,
        routes,
    }
}

/// A version whose endpoints are all down loses its share to the others, unless every version
/// with traffic is down (then nothing would be served at all).
fn shift_from_down_versions(route: &Route, e: &mut Effective, health: &Health) {
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

/// The forwarding state of one version: endpoints with their health, the pooled clients for
/// its connection settings, its metric handles.
fn version_state(
    route: &Route,
    v: &Version,
    weight: u32,
    source: WeightSource,
    resources: &Resources,
) -> VersionState {
    let key = || ClientKey {
        connect_timeout: route.timeouts.connect,
        idle_timeout: route.timeouts.idle,
        protocol: v.protocol,
        tls: v.tls.clone(),
    };
    VersionState {
        name: v.name.clone(),
        // Names are validated to letters, digits, '-', '_' and '.'.
        name_header: HeaderValue::from_str(&v.name)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-name")),
        weight,
        source,
        endpoints: v.endpoints.clone(),
        health: v
            .endpoints
            .iter()
            .map(|ep| resources.health.of(ep))
            .collect(),
        client: resources.clients.get(key()),
        direct: resources.clients.direct(&key(), &v.endpoints),
        mirror_client: resources.clients.get_mirror(key()),
        scheme: if v.tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        },
        http_version: match v.protocol {
            UpstreamProtocol::Http1 => http::Version::HTTP_11,
            UpstreamProtocol::H2 => http::Version::HTTP_2,
        },
        metrics: resources.metrics.version(&route.name, &v.name, weight),
        next: AtomicUsize::new(0),
        retries_in_flight: std::sync::atomic::AtomicU32::new(0),
    }
}

/// The forwarding state of one route around its versions.
fn route_state(route: &Route, versions: Vec<VersionState>, resources: &Resources) -> RouteState {
    let metrics = &resources.metrics;
    RouteState {
        name: route.name.clone(),
        versions,
        timeouts: route.timeouts,
        expose_version_header: route.expose_version_header,
        max_body_bytes: route.max_body_bytes,
        max_requests_per_version: route.max_requests_per_version,
        retries: route.retries,
        rate_limit: route.rate_limit.as_ref().map(|rl| {
            (
                resources.limiters.get(&route.name, rl),
                metrics.rate_limited.with_label_values(&[&route.name]),
            )
        }),
        mirror: route
            .mirror
            .as_ref()
            .map(|m| crate::data::tap::RouteMirror {
                settings: m.clone(),
                queue: resources.mirrors.queue(&route.name, m),
                metrics: metrics.mirror(&route.name),
            }),
    }
}
