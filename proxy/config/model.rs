//! Validated configuration: domain types with names resolved to indices, durations parsed and
//! addresses checked. Built only by `validate`, so holding a `Config` means holding a valid one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::header::HeaderName;
use http::uri::Authority;

/// A whole, valid configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Downstream listeners.
    pub listeners: Vec<Listener>,
    /// The admin endpoint, when configured.
    pub admin: Option<Admin>,
    /// Routes in match order.
    pub routes: Vec<Route>,
    /// How long in-flight requests may run after a shutdown signal.
    pub drain_timeout: Duration,
    /// Where runtime decisions (API weights, aborts) are persisted, when configured.
    pub state_file: Option<PathBuf>,
    /// Access log settings.
    pub access_log: AccessLog,
    /// Downstream resource limits.
    pub limits: Limits,
    /// The fleet this replica belongs to, when configured.
    pub fleet: Option<Fleet>,
}

/// A fleet: replicas sharing their runtime state through etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// This replica's name, unique in the fleet.
    pub name: String,
    /// The etcd cluster.
    pub etcd: Etcd,
    /// TTL of this replica's lease: presence, published windows and rollout leadership end this
    /// long after the replica stops renewing it.
    pub lease_ttl: Duration,
}

/// How to reach the fleet's etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Etcd {
    /// Member URLs, `http://host:port` or `https://host:port`.
    pub endpoints: Vec<String>,
    /// Key prefix, starting with `/`, without a trailing `/`.
    pub prefix: String,
    /// TLS towards the members.
    pub tls: Option<EtcdTls>,
    /// User name, and the environment variable holding the password.
    pub user: Option<(String, String)>,
}

/// TLS files towards etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// CA bundle.
    pub ca: PathBuf,
    /// Client certificate and key.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Name verified in the members' certificates.
    pub server_name: Option<String>,
}

/// Downstream resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections across all listeners.
    pub max_connections: usize,
    /// Bytes of a request head; more is answered 431.
    pub max_request_header_bytes: usize,
    /// Header lines of a request; more is answered 431.
    pub max_request_headers: usize,
    /// How long a client may take to send a request head.
    pub header_read_timeout: Duration,
    /// How long a connection may stay idle between requests.
    pub keep_alive_timeout: Duration,
    /// An HTTP/1.1 connection idle this long gives its buffers back and keeps only its socket.
    pub idle_release_after: Duration,
    /// A client that pauses its request body longer than this gets 408.
    pub request_body_idle_timeout: Duration,
    /// Concurrent HTTP/2 streams per downstream connection.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 initial stream window, bytes.
    pub http2_initial_stream_window: u32,
    /// HTTP/2 initial connection window, bytes.
    pub http2_initial_connection_window: u32,
    /// Interval of HTTP/2 keep-alive pings.
    pub http2_keepalive_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_request_header_bytes: 64 * 1024,
            max_request_headers: 100,
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(75),
            idle_release_after: Duration::from_secs(1),
            request_body_idle_timeout: Duration::from_secs(60),
            http2_max_concurrent_streams: 256,
            http2_initial_stream_window: 1024 * 1024,
            http2_initial_connection_window: 4 * 1024 * 1024,
            http2_keepalive_interval: Duration::from_secs(20),
        }
    }
}

/// Access log settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AccessLog {
    /// Whether requests are logged at all.
    pub enabled: bool,
    /// Fraction of requests logged, 0.0 to 1.0.
    pub sample: f64,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog {
            enabled: true,
            sample: 1.0,
        }
    }
}

/// A downstream listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Name for logs.
    pub name: String,
    /// Address to bind.
    pub addr: SocketAddr,
    /// TLS termination, when configured.
    pub tls: Option<ListenerTls>,
    /// Open connections on this listener at most.
    pub max_connections: Option<usize>,
    /// HTTP/1.1 requests without a body, or whose body came whole with the head, are served by
    /// the fast path (`data::fast`), not hyper.
    pub fast_path: bool,
}

/// The certificates of a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// In order; the first without server names is the default.
    pub certificates: Vec<CertificateFiles>,
}

/// One certificate and the names it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// SNI names, lowercased; empty for the default certificate.
    pub server_names: Vec<HostPattern>,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The protocol spoken to a version's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 (prior knowledge in cleartext, ALPN `h2` over TLS).
    H2,
}

/// TLS towards a version's endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    /// CA bundle; `None` means the webpki roots.
    pub ca: Option<PathBuf>,
    /// Name verified and sent as SNI; `None` means the endpoint's host.
    pub server_name: Option<String>,
}

/// The admin endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// Address to bind.
    pub addr: SocketAddr,
    /// Where the bearer token comes from.
    pub token: Option<TokenSource>,
}

/// Where the admin bearer token is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// An environment variable.
    Env(String),
    /// A file (trailing whitespace is trimmed).
    File(PathBuf),
}

/// A route: which requests it takes and how it splits them.
#[derive(Debug, Clone)]
pub struct Route {
    /// Unique name.
    pub name: String,
    /// Host patterns; empty means any host.
    pub hosts: Vec<HostPattern>,
    /// Path prefix, always starting with `/`.
    pub path_prefix: String,
    /// Versions in declared order.
    pub versions: Vec<Version>,
    /// Rules in order; the first match pins the version.
    pub rules: Vec<Rule>,
    /// Sticky bucketing, when configured.
    pub cohort: Option<Cohort>,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// Whether responses carry `x-switchyard-version`.
    pub expose_version_header: bool,
    /// Canary (default) or blue/green.
    pub strategy: Strategy,
    /// The progressive rollout, when configured.
    pub rollout: Option<Rollout>,
    /// Active health checks, when configured.
    pub health_check: Option<HealthCheck>,
    /// Dark launch, when configured.
    pub mirror: Option<Mirror>,
    /// Request bodies larger than this are refused with 413.
    pub max_body_bytes: Option<u64>,
    /// Circuit breaker: requests in flight per version at most; beyond, 503.
    pub max_requests_per_version: Option<u32>,
    /// Token-bucket rate limit per client, when configured.
    pub rate_limit: Option<RateLimit>,
    /// Retries on connect failures, when configured.
    pub retries: Option<Retries>,
}

/// Retries of idempotent requests without a body, on connect failures, to another endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    /// Retries per request at most.
    pub attempts: u32,
    /// Retries in flight at most this percentage of requests in flight (and at least 3).
    pub budget_percent: u32,
}

/// A route's rate limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// Sustained requests per second per key.
    pub per_second: std::num::NonZeroU32,
    /// Bucket size.
    pub burst: std::num::NonZeroU32,
    /// The header keying requests; `None` keys by client address.
    pub key_header: Option<HeaderName>,
}

/// Dark launch settings of a route.
#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    /// Index of the shadow version.
    pub version: usize,
    /// Index of the secondary (a second instance of the live version), when configured.
    pub secondary: Option<usize>,
    /// Copied share in hundredths of a percent (0..=10000).
    pub percent_buckets: u32,
    /// Methods copied.
    pub methods: Vec<http::Method>,
    /// Requests with larger bodies are not copied.
    pub max_body_bytes: u64,
    /// Response body bytes kept for comparison.
    pub compare_body_bytes: usize,
    /// Shadow queue capacity.
    pub queue: usize,
    /// Shadow requests in flight at most.
    pub concurrency: usize,
    /// Timeout of each shadow request.
    pub timeout: Duration,
    /// Append `-shadow` to the Host header.
    pub host_suffix: bool,
    /// Response headers not compared, lowercased.
    pub ignore_headers: Vec<String>,
    /// JSON pointers not compared.
    pub ignore_json_paths: Vec<String>,
}

/// Response headers never compared: they differ on every answer or between hops.
pub const DEFAULT_IGNORED_HEADERS: [&str; 12] = [
    "date",
    "server",
    "x-request-id",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "x-served-by",
];

/// How a route's versions take turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Weights, rules and cohorts; rollouts.
    Canary,
    /// Two versions, one active (the one with weight in the file); `switch` swaps them.
    BlueGreen,
}

/// A progressive rollout of `canary` against `baseline`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// Index of the baseline version.
    pub baseline: usize,
    /// Index of the canary version.
    pub canary: usize,
    /// Canary weights in percent, increasing, ending at 100.
    pub steps: Vec<u32>,
    /// The least time at each step.
    pub step_interval: Duration,
    /// Analysis parameters.
    pub analysis: Analysis,
    /// URL that receives JSON events on abort and promotion.
    pub webhook: Option<http::Uri>,
}

/// Canary analysis parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Analysis {
    /// How often the analysis looks.
    pub interval: Duration,
    /// The sliding window compared.
    pub window: Duration,
    /// Test thresholds.
    pub thresholds: Thresholds,
}

/// Active health checks of a route's endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    /// Path probed with GET.
    pub path: String,
    /// Time between probes.
    pub interval: Duration,
    /// Probe timeout.
    pub timeout: Duration,
    /// Consecutive successes to become healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures to become unhealthy.
    pub unhealthy_threshold: u32,
}

/// A host pattern, lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// The host must equal this name.
    Exact(String),
    /// `*.example.com`: holds `.example.com`; matches any name with at least one label before it.
    Suffix(String),
}

/// One version of the service.
#[derive(Debug, Clone)]
pub struct Version {
    /// Unique name within the route.
    pub name: String,
    /// Endpoints, balanced round robin.
    pub endpoints: Vec<Endpoint>,
    /// Relative share of traffic.
    pub weight: u32,
    /// Protocol spoken to the endpoints.
    pub protocol: UpstreamProtocol,
    /// TLS towards the endpoints, when configured.
    pub tls: Option<UpstreamTls>,
}

/// One upstream `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint(pub Authority);

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A rule: a condition and the index of the version it pins.
#[derive(Debug, Clone)]
pub struct Rule {
    /// What the request must carry.
    pub condition: Condition,
    /// Index into the route's versions.
    pub version: usize,
}

/// A rule's condition: an exact value of a header, cookie or query parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Header `name` equals `value`.
    Header {
        /// Header name.
        name: HeaderName,
        /// Exact value.
        value: String,
    },
    /// Cookie `name` equals `value`.
    Cookie {
        /// Cookie name.
        name: String,
        /// Exact value.
        value: String,
    },
    /// Query parameter `name` equals `value` (compared without percent-decoding).
    Query {
        /// Parameter name.
        name: String,
        /// Exact value.
        value: String,
    },
}

/// Sticky cohort: where the user key comes from and the salt of the hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cohort {
    /// Source of the user key.
    pub key: CohortKey,
    /// Salt mixed into the hash.
    pub salt: String,
}

/// Source of a cohort's user key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CohortKey {
    /// A request header.
    Header(HeaderName),
    /// A cookie.
    Cookie(String),
}

/// Upstream timeouts of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timeouts {
    /// TCP connect to an endpoint.
    pub connect: Duration,
    /// From sending the request to receiving the response head.
    pub response_header: Duration,
    /// How long an idle pooled upstream connection is kept.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(1),
            response_header: Duration::from_secs(15),
            idle: Duration::from_secs(60),
        }
    }
}

/// Default drain deadline after a shutdown signal.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Thresholds and parameters of the analysis (validated configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Requests each side needs in the window before any verdict other than hold.
    pub min_requests: u64,
    /// Largest tolerated error-rate excess of the canary over the baseline (0.01 = one point).
    pub max_error_rate_increase: f64,
    /// Largest tolerated canary error rate, whatever the baseline does.
    pub max_error_rate: f64,
    /// Canary latency quantiles may reach baseline × this ...
    pub max_latency_ratio: f64,
    /// ... plus this many milliseconds.
    pub max_latency_increase_ms: f64,
    /// Significance level of each test at each look.
    pub alpha: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_requests: 20,
            max_error_rate_increase: 0.01,
            max_error_rate: 0.05,
            max_latency_ratio: 1.5,
            max_latency_increase_ms: 50.0,
            alpha: 1e-3,
        }
    }
}
