//! Raw configuration: the YAML file exactly as serde reads it.
//!
//! Every struct denies unknown fields, so a typo is an error with its path and line rather than a
//! silently ignored key. Nothing here is interpreted: durations stay strings and addresses stay text
//! until `validate` turns them into domain types.

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where the proxy accepts downstream traffic.
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    /// The admin endpoint (health, metrics, API).
    #[serde(default)]
    pub admin: Option<RawAdmin>,
    /// Routes, matched in order.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// How long in-flight requests may run after SIGTERM or SIGINT.
    #[serde(default)]
    pub drain_timeout: Option<String>,
    /// Where weights set through the API, aborts and rollout progress are kept across restarts.
    #[serde(default)]
    pub state_file: Option<String>,
    /// The access log.
    #[serde(default)]
    pub access_log: Option<RawAccessLog>,
    /// Resource limits of the downstream side.
    #[serde(default)]
    pub limits: Option<RawLimits>,
    /// Replicas sharing one runtime state on etcd.
    #[serde(default)]
    pub fleet: Option<RawFleet>,
}

/// The fleet block: this replica's name and the etcd cluster the fleet shares.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    /// This replica's name, unique in the fleet; default: the host name.
    #[serde(default)]
    pub name: Option<String>,
    /// The etcd cluster.
    pub etcd: RawEtcd,
    /// TTL of this replica's lease (presence, windows, rollout leadership).
    #[serde(default)]
    pub lease_ttl: Option<String>,
}

/// Where the fleet's etcd is and how to reach it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcd {
    /// `host:port` or `http(s)://host:port` of each member.
    pub endpoints: Vec<String>,
    /// Every key of the fleet lives under it.
    pub prefix: String,
    /// TLS towards etcd.
    #[serde(default)]
    pub tls: Option<RawEtcdTls>,
    /// etcd user name.
    #[serde(default)]
    pub username: Option<String>,
    /// Name of the environment variable holding the etcd password.
    #[serde(default)]
    pub password_env: Option<String>,
}

/// TLS towards etcd: the CA that signed the members' certificates, and a client certificate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcdTls {
    /// PEM CA bundle.
    pub ca: String,
    /// PEM client certificate (with `key`).
    #[serde(default)]
    pub cert: Option<String>,
    /// PEM client key (with `cert`).
    #[serde(default)]
    pub key: Option<String>,
    /// Name verified in the members' certificates; default: each endpoint's host.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// Resource limits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Open downstream connections across all listeners.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Bytes of a request head (request line and headers); more is answered 431.
    #[serde(default)]
    pub max_request_header_bytes: Option<usize>,
    /// Header lines of a request; more is answered 431.
    #[serde(default)]
    pub max_request_headers: Option<usize>,
    /// How long a client may take to send a request head (slowloris defence).
    #[serde(default)]
    pub header_read_timeout: Option<String>,
    /// How long a connection may stay idle between requests.
    #[serde(default)]
    pub keep_alive_timeout: Option<String>,
    /// An HTTP/1.1 connection idle this long gives its buffers back and keeps only its socket.
    #[serde(default)]
    pub idle_release_after: Option<String>,
    /// A client that pauses its request body longer than this gets 408.
    #[serde(default)]
    pub request_body_idle_timeout: Option<String>,
    /// Concurrent HTTP/2 streams per downstream connection.
    #[serde(default)]
    pub http2_max_concurrent_streams: Option<u32>,
    /// HTTP/2 initial stream window, bytes.
    #[serde(default)]
    pub http2_initial_stream_window: Option<u32>,
    /// HTTP/2 initial connection window, bytes.
    #[serde(default)]
    pub http2_initial_connection_window: Option<u32>,
    /// Interval of HTTP/2 keep-alive pings to downstream clients.
    #[serde(default)]
    pub http2_keepalive_interval: Option<String>,
}

/// Access log settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    /// Log requests at all.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Fraction of requests logged, 0.0 to 1.0.
    #[serde(default)]
    pub sample: Option<f64>,
}

/// One downstream listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// Name used in logs and metrics.
    pub name: String,
    /// `host:port` to bind.
    pub addr: String,
    /// TLS termination.
    #[serde(default)]
    pub tls: Option<RawListenerTls>,
    /// Open connections on this listener at most.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// HTTP/1.1 requests without a body (or with one that came with the head) served by the
    /// fast path (default true).
    #[serde(default)]
    pub fast_path: Option<bool>,
}

/// TLS termination on a listener: one certificate, or several chosen by SNI.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    /// PEM certificate chain (single-certificate form).
    #[serde(default)]
    pub cert: Option<String>,
    /// PEM private key (single-certificate form).
    #[serde(default)]
    pub key: Option<String>,
    /// Several certificates chosen by SNI.
    #[serde(default)]
    pub certificates: Option<Vec<RawCertificate>>,
}

/// One certificate of a listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// SNI names it serves (exact or `*.suffix`); absent: the default certificate.
    #[serde(default)]
    pub server_names: Option<Vec<String>>,
    /// PEM certificate chain.
    pub cert: String,
    /// PEM private key.
    pub key: String,
}

/// The admin endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `host:port` to bind; loopback unless a token is configured.
    pub addr: String,
    /// Name of the environment variable holding the bearer token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Path of a file holding the bearer token.
    #[serde(default)]
    pub token_file: Option<String>,
}

/// One route: a match and the versions it splits between.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Unique route name.
    pub name: String,
    /// Which requests this route takes.
    #[serde(default, rename = "match")]
    pub matcher: RawRouteMatch,
    /// Versions, in declared order (cohort buckets are laid out in this order).
    pub versions: Vec<RawVersion>,
    /// Rules, first match wins, applied before cohort and weights.
    #[serde(default)]
    pub rules: Vec<RawRule>,
    /// Sticky bucketing of users to versions.
    #[serde(default)]
    pub cohort: Option<RawCohort>,
    /// Upstream timeouts.
    #[serde(default)]
    pub timeouts: RawTimeouts,
    /// Add `x-switchyard-version` to responses (debugging aid).
    #[serde(default)]
    pub expose_version_header: bool,
    /// `canary` (default) or `blue_green`.
    #[serde(default)]
    pub strategy: Option<String>,
    /// A progressive rollout of a canary with automatic analysis.
    #[serde(default)]
    pub rollout: Option<RawRollout>,
    /// Active health checks of every endpoint of the route.
    #[serde(default)]
    pub health_check: Option<RawHealthCheck>,
    /// Copy requests to a shadow version and compare its answers (dark launch).
    #[serde(default)]
    pub mirror: Option<RawMirror>,
    /// Request bodies larger than this are refused with 413.
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// Circuit breaker: requests in flight per version at most; beyond, 503.
    #[serde(default)]
    pub max_requests_per_version: Option<u32>,
    /// Token-bucket rate limit per client.
    #[serde(default)]
    pub rate_limit: Option<RawRateLimit>,
    /// Retries of idempotent requests without a body on connect failures.
    #[serde(default)]
    pub retries: Option<RawRetries>,
}

/// Retry settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetries {
    /// Retries per request at most.
    #[serde(default)]
    pub attempts: Option<u32>,
    /// Retries in flight may be at most this percentage of requests in flight (at least 3).
    #[serde(default)]
    pub budget_percent: Option<u32>,
}

/// A route's rate limit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Sustained requests per second per key.
    pub requests_per_second: u32,
    /// Requests allowed at once (bucket size); default: one second's worth.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Key requests by this header (for example an API key); default: the client address.
    #[serde(default)]
    pub key_header: Option<String>,
}

/// Dark launch: what to copy where, and how to compare.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMirror {
    /// The shadow version (weight 0).
    pub version: String,
    /// A second instance of the live version, also mirrored, to tell noise from regressions.
    #[serde(default)]
    pub secondary: Option<String>,
    /// Share of requests copied, 0 to 100 (deterministic per request id).
    #[serde(default)]
    pub percent: Option<f64>,
    /// Methods copied; default GET and HEAD only.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Requests with larger bodies are not copied.
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// How much of each response body is kept for comparison.
    #[serde(default)]
    pub compare_body_bytes: Option<u64>,
    /// Shadow requests waiting at most; more are dropped and counted.
    #[serde(default)]
    pub queue: Option<usize>,
    /// Shadow requests in flight at most.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Timeout of each shadow request.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Append `-shadow` to the Host of shadow requests.
    #[serde(default)]
    pub host_suffix: Option<bool>,
    /// Response headers left out of the comparison (added to the defaults).
    #[serde(default)]
    pub ignore_headers: Option<Vec<String>>,
    /// JSON fields left out of the comparison, as RFC 6901 pointers (`/meta/took_ms`).
    #[serde(default)]
    pub ignore_json_paths: Option<Vec<String>>,
}

/// A progressive rollout.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    /// The version compared against (keeps the rest of the traffic).
    pub baseline: String,
    /// The version being rolled out.
    pub canary: String,
    /// Canary weights in percent, increasing, ending at 100.
    pub steps: Vec<u32>,
    /// The least time at each step.
    #[serde(default)]
    pub step_interval: Option<String>,
    /// Analysis parameters.
    #[serde(default)]
    pub analysis: Option<RawAnalysis>,
    /// URL that receives a JSON event on abort and promotion.
    #[serde(default)]
    pub webhook: Option<String>,
}

/// Canary analysis parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnalysis {
    /// How often the analysis looks.
    #[serde(default)]
    pub interval: Option<String>,
    /// The sliding window compared.
    #[serde(default)]
    pub window: Option<String>,
    /// Requests each side needs in the window before a verdict.
    #[serde(default)]
    pub min_requests: Option<u64>,
    /// Tolerated error-rate excess over the baseline, as a fraction (0.01 = one point).
    #[serde(default)]
    pub max_error_rate_increase: Option<f64>,
    /// Tolerated canary error rate, as a fraction.
    #[serde(default)]
    pub max_error_rate: Option<f64>,
    /// Tolerated latency ratio to the baseline (p50 and p99).
    #[serde(default)]
    pub max_latency_ratio: Option<f64>,
    /// Tolerated latency increase on top of the ratio.
    #[serde(default)]
    pub max_latency_increase: Option<String>,
    /// Significance level of each test at each look.
    #[serde(default)]
    pub alpha: Option<f64>,
}

/// Active health checks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// HTTP path probed with GET; a 2xx answer is healthy.
    #[serde(default)]
    pub path: Option<String>,
    /// Time between probes.
    #[serde(default)]
    pub interval: Option<String>,
    /// Probe timeout.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Consecutive successes that mark an endpoint healthy.
    #[serde(default)]
    pub healthy_threshold: Option<u32>,
    /// Consecutive failures that mark an endpoint unhealthy.
    #[serde(default)]
    pub unhealthy_threshold: Option<u32>,
}

/// Host and path match of a route.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteMatch {
    /// Exact hosts or `*.suffix` wildcards; absent means any host.
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// Path prefix; defaults to `/`.
    #[serde(default)]
    pub path_prefix: Option<String>,
}

/// One version of the service.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVersion {
    /// Unique name within the route (stable, canary, blue, green...).
    pub name: String,
    /// `host:port` of each endpoint.
    pub endpoints: Vec<String>,
    /// Relative share of traffic; a non-negative integer.
    #[serde(deserialize_with = "weight")]
    pub weight: u32,
    /// `http1` (default) or `h2`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Reach the endpoints over TLS.
    #[serde(default)]
    pub tls: Option<RawUpstreamTls>,
}

/// TLS towards a version's endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// PEM CA bundle to verify the endpoints; absent: the webpki roots.
    #[serde(default)]
    pub ca: Option<String>,
    /// Name to verify and send as SNI; absent: the endpoint's host.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// A rule: when the request matches, the version is pinned.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// What to match.
    #[serde(rename = "match")]
    pub matcher: RawRuleMatch,
    /// Name of the version the request is pinned to.
    pub version: String,
}

/// Exactly one of header, cookie or query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuleMatch {
    /// Header equals.
    #[serde(default)]
    pub header: Option<RawNameValue>,
    /// Cookie equals.
    #[serde(default)]
    pub cookie: Option<RawNameValue>,
    /// Query parameter equals.
    #[serde(default)]
    pub query: Option<RawNameValue>,
}

/// A name and the exact value it must have.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNameValue {
    /// Header, cookie or parameter name.
    pub name: String,
    /// Exact value.
    pub value: String,
}

/// Sticky cohort bucketing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCohort {
    /// Where the user key comes from.
    pub key: RawCohortKey,
    /// Salt mixed into the hash, so separate rollouts get independent cohorts.
    #[serde(default)]
    pub salt: String,
}

/// Exactly one of header or cookie.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCohortKey {
    /// Header carrying the user key.
    #[serde(default)]
    pub header: Option<String>,
    /// Cookie carrying the user key.
    #[serde(default)]
    pub cookie: Option<String>,
}

/// Upstream timeouts as humantime strings ("1s", "250ms").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// TCP connect to an endpoint.
    #[serde(default)]
    pub connect: Option<String>,
    /// From sending the request to the upstream's response head.
    #[serde(default)]
    pub response_header: Option<String>,
    /// How long an idle upstream keep-alive connection stays pooled.
    #[serde(default)]
    pub idle: Option<String>,
}

/// A weight: a whole number from 0 to 4294967295, with a message that says so.
fn weight<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = u32;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a non-negative whole number")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u32, E> {
            u32::try_from(v)
                .map_err(|_| E::custom(format!("weight {v} is too large (at most {})", u32::MAX)))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u32, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::custom(format!(
                    "weight {v} is negative; weights are whole numbers from 0"
                ))),
            }
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<u32, E> {
            Err(E::custom(format!(
                "weight {v} is not a whole number; weights are relative, so scale them (5.5 and 94.5 become 55 and 945)"
            )))
        }
    }
    d.deserialize_any(Visitor)
}
