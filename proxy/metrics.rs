//! Prometheus metrics: one registry and its families, created once for the life of the process.
//! Per-version handles are resolved when a snapshot is built ([`Metrics::version`]), so a request
//! only indexes an array and increments: no label hashing, formatting or allocation per request.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub mod downstream;
pub mod latency;

use latency::{DurationFamily, StatsByVersion, VersionStats};

/// Latency buckets of the shadow requests: 1 ms to 30 s.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const FAILURE_KINDS: [FailureKind; 4] = [
    FailureKind::Connect,
    FailureKind::Timeout,
    FailureKind::Reset,
    FailureKind::Protocol,
];

/// The registry and every metric family.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    upstream_errors: IntCounterVec,
    in_flight: IntGaugeVec,
    weight: IntGaugeVec,
    /// `switchyard_config_generation`.
    pub config_generation: IntGauge,
    /// `switchyard_config_reloads_total{result}`.
    pub config_reloads: IntCounterVec,
    /// `switchyard_no_route_total`: requests that matched no route.
    pub no_route: IntCounter,
    /// `switchyard_rollout_state{route}`: 0 idle, 1 progressing, 2 paused, 3 promoted, 4 aborted.
    pub rollout_state: IntGaugeVec,
    /// `switchyard_rollout_canary_weight{route}`: the canary's share in percent during a rollout.
    pub rollout_canary_weight: IntGaugeVec,
    /// `switchyard_rollout_aborts_total{route,reason}`.
    pub rollout_aborts: IntCounterVec,
    /// `switchyard_state_persist_failures_total`: release-state changes the store refused.
    pub state_persist_failures: IntCounter,
    mirror_requests: IntCounterVec,
    retries: IntCounterVec,
    /// `switchyard_rate_limited_total{route}`: requests answered 429.
    pub rate_limited: IntCounterVec,
    shadow_comparisons: IntCounterVec,
    shadow_duration: HistogramVec,
    /// `switchyard_downstream_errors_total` and `switchyard_downstream_refused_total`.
    pub downstream: downstream::DownstreamFamilies,
    /// `switchyard_worker_connections_total{worker}`: connections each worker's accept loop
    /// took (`run --reuse-port` only).
    pub worker_connections: IntCounterVec,
    /// Label sets (route, version) that have series, so removed versions can be pruned.
    labelled: Mutex<HashSet<(String, String)>>,
    /// The latency and outcome record per (route, version): exported as
    /// `switchyard_request_duration_seconds` and read by the analysis.
    stats: StatsByVersion,
}

/// The handles of one (route, version), resolved once per snapshot.
#[derive(Clone)]
pub struct VersionMetrics {
    requests: [IntCounter; 5],
    upstream_errors: [IntCounter; 4],
    /// Requests being served.
    pub in_flight: IntGauge,
    /// Retries sent.
    pub retries: IntCounter,
    /// The one latency and outcome record: `/metrics` exports it, the analysis reads it.
    pub stats: Arc<VersionStats>,
    /// Requests of this version that failed by the client's fault.
    pub downstream: downstream::VersionFaults,
}

impl VersionMetrics {
    /// Counts one finished request under its status class.
    pub fn count_status(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].inc();
    }

    /// Counts one upstream failure.
    pub fn count_failure(&self, kind: FailureKind) {
        let i = FAILURE_KINDS.iter().position(|k| *k == kind).unwrap_or(0);
        self.upstream_errors[i].inc();
    }
}

/// Creates and registers metric families.
struct Families<'a>(&'a Registry);

impl Families<'_> {
    fn register<C: prometheus::core::Collector + Clone + 'static>(
        &self,
        c: Result<C, prometheus::Error>,
    ) -> Result<C, prometheus::Error> {
        let c = c?;
        self.0.register(Box::new(c.clone()))?;
        Ok(c)
    }

    fn counters(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, prometheus::Error> {
        self.register(IntCounterVec::new(Opts::new(name, help), labels))
    }

    fn gauges(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, prometheus::Error> {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels))
    }

    fn counter(&self, name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
        self.register(IntCounter::new(name, help))
    }
}

impl Metrics {
    /// Creates a registry with every family registered.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let f = Families(&registry);
        let rv = &["route", "version"];
        let stats = StatsByVersion::default();
        registry.register(Box::new(DurationFamily::new(stats.clone())?))?;
        let config_reloads = f.counters(
            "switchyard_config_reloads_total",
            "Configuration reloads, by result (ok, error).",
            &["result"],
        )?;
        for result in ["ok", "error"] {
            config_reloads.with_label_values(&[result]);
        }
        f.gauges(
            "switchyard_build_info",
            "Always 1; labelled with the version.",
            &["version"],
        )?
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
        Ok(Metrics {
            downstream: downstream::DownstreamFamilies::register(&registry)?,
            requests: f.counters(
                "switchyard_requests_total",
                "Requests finished, by route, version and status class.",
                &["route", "version", "status_class"],
            )?,
            upstream_errors: f.counters(
                "switchyard_upstream_errors_total",
                "Upstream failures before a complete response head, by kind.",
                &["route", "version", "kind"],
            )?,
            in_flight: f.gauges("switchyard_requests_in_flight", "Requests being served.", rv)?,
            weight: f.gauges(
                "switchyard_route_weight",
                "Effective weight of each version in the current snapshot.",
                rv,
            )?,
            config_generation: f.register(IntGauge::new(
                "switchyard_config_generation",
                "Generation of the routing snapshot in service.",
            ))?,
            config_reloads,
            no_route: f.counter(
                "switchyard_no_route_total",
                "Requests that matched no route (answered 404).",
            )?,
            rollout_state: f.gauges(
                "switchyard_rollout_state",
                "Rollout state: 0 idle, 1 progressing, 2 paused, 3 promoted, 4 aborted.",
                &["route"],
            )?,
            rollout_canary_weight: f.gauges(
                "switchyard_rollout_canary_weight",
                "The canary's share of traffic in percent, by rollout step.",
                &["route"],
            )?,
            rollout_aborts: f.counters(
                "switchyard_rollout_aborts_total",
                "Rollouts aborted, by reason.",
                &["route", "reason"],
            )?,
            state_persist_failures: f.counter(
                "switchyard_state_persist_failures_total",
                "Release-state changes the state store could not save (refused, or for an \
                 analysis abort applied in this process only).",
            )?,
            mirror_requests: f.counters(
                "switchyard_mirror_requests_total",
                "Mirroring decisions: sent, dropped_queue_full, skipped_method, skipped_body_size, failed.",
                &["route", "outcome"],
            )?,
            retries: f.counters(
                "switchyard_retries_total",
                "Requests retried on another endpoint after a connect failure.",
                rv,
            )?,
            rate_limited: f.counters(
                "switchyard_rate_limited_total",
                "Requests refused with 429 by a route's rate limit.",
                &["route"],
            )?,
            shadow_comparisons: f.counters(
                "switchyard_shadow_comparisons_total",
                "Shadow answers compared with live: identical, different, incomplete.",
                &["route", "result"],
            )?,
            shadow_duration: f.register(HistogramVec::new(
                HistogramOpts::new(
                    "switchyard_shadow_duration_seconds",
                    "Duration of shadow requests, to the last byte.",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                &["route"],
            ))?,
            worker_connections: f.counters(
                "switchyard_worker_connections_total",
                "Connections accepted by each worker's accept loop (run --reuse-port only).",
                &["worker"],
            )?,
            registry,
            labelled: Mutex::default(),
            stats,
        })
    }

    /// Resolves the handles of one version and publishes its weight. Called at snapshot build.
    pub fn version(&self, route: &str, version: &str, weight: u32) -> VersionMetrics {
        self.weight
            .with_label_values(&[route, version])
            .set(i64::from(weight));
        self.labelled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((route.to_string(), version.to_string()));
        VersionMetrics {
            requests: STATUS_CLASSES
                .map(|class| self.requests.with_label_values(&[route, version, class])),
            upstream_errors: FAILURE_KINDS.map(|k| {
                self.upstream_errors
                    .with_label_values(&[route, version, k.as_str()])
            }),
            in_flight: self.in_flight.with_label_values(&[route, version]),
            retries: self.retries.with_label_values(&[route, version]),
            downstream: self.downstream.version(route, version),
            stats: self
                .stats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry((route.to_string(), version.to_string()))
                .or_default()
                .clone(),
        }
    }

    /// Resolves the mirror handles of a route. Called at snapshot build.
    pub fn mirror(&self, route: &str) -> MirrorMetrics {
        let outcome = |o: &str| self.mirror_requests.with_label_values(&[route, o]);
        let result = |r: &str| self.shadow_comparisons.with_label_values(&[route, r]);
        MirrorMetrics {
            sent: outcome("sent"),
            dropped_queue_full: outcome("dropped_queue_full"),
            skipped_method: outcome("skipped_method"),
            skipped_body_size: outcome("skipped_body_size"),
            failed: outcome("failed"),
            compared: [
                result("identical"),
                result("different"),
                result("incomplete"),
            ],
            duration: self.shadow_duration.with_label_values(&[route]),
        }
    }

    /// Drops the series of (route, version) pairs no longer in `keep`, so removed versions do not
    /// linger in /metrics.
    pub fn retain(&self, keep: &HashSet<(String, String)>) {
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| keep.contains(k));
        let mut labelled = self.labelled.lock().unwrap_or_else(|e| e.into_inner());
        labelled.retain(|(route, version)| {
            if keep.contains(&(route.clone(), version.clone())) {
                return true;
            }
            let rv = [route.as_str(), version.as_str()];
            let _ = self.weight.remove_label_values(&rv);
            let _ = self.in_flight.remove_label_values(&rv);
            let _ = self.retries.remove_label_values(&rv);
            self.downstream.remove(route, version);
            for class in STATUS_CLASSES {
                let _ = self.requests.remove_label_values(&[route, version, class]);
            }
            for kind in FAILURE_KINDS {
                let _ = self
                    .upstream_errors
                    .remove_label_values(&[route, version, kind.as_str()]);
            }
            false
        });
    }

    /// Registers a family owned elsewhere (the fleet's), exported with the others.
    pub fn register(
        &self,
        collector: Box<dyn prometheus::core::Collector>,
    ) -> Result<(), prometheus::Error> {
        self.registry.register(collector)
    }

    /// The text exposition format.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec only fails on invalid metric families, which registration rules out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// The metric handles of one route's mirror, resolved at snapshot build.
#[derive(Clone)]
pub struct MirrorMetrics {
    /// outcome="sent".
    pub sent: IntCounter,
    /// outcome="dropped_queue_full".
    pub dropped_queue_full: IntCounter,
    /// outcome="skipped_method".
    pub skipped_method: IntCounter,
    /// outcome="skipped_body_size".
    pub skipped_body_size: IntCounter,
    /// outcome="failed".
    pub failed: IntCounter,
    /// result="identical", "different", "incomplete".
    pub compared: [IntCounter; 3],
    /// switchyard_shadow_duration_seconds.
    pub duration: Histogram,
}

/// What went wrong talking to an upstream, as far as the status code cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The TCP connection could not be made (refused, unreachable, DNS).
    Connect,
    /// A connect or response-header timeout.
    Timeout,
    /// The connection was reset or closed before a complete response head.
    Reset,
    /// The upstream spoke invalid HTTP.
    Protocol,
}

impl FailureKind {
    /// What happened, for the error body a client reads.
    pub fn describe(self) -> &'static str {
        match self {
            FailureKind::Connect => "connection failed",
            FailureKind::Timeout => "timed out",
            FailureKind::Reset => "connection reset before a response",
            FailureKind::Protocol => "invalid HTTP response",
        }
    }

    /// A short label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::Reset => "reset",
            FailureKind::Protocol => "protocol",
        }
    }
}
