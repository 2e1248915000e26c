//! Upstream clients. HTTP/1.1 endpoints are reached on the direct path ([`direct`]): our own
//! HTTP/1.1 client connection ([`h1`]) driven by the request's own task, from shared pools. HTTP/2 endpoints,
//! upgrades, shadow copies and health checks use hyper-util's pooled client, one per distinct set
//! of connection settings, created on first use and kept for the life of the process. Snapshots
//! hold clones (and the direct path's pool slots are numbered by settings and endpoint), so a
//! reload that keeps a route's settings keeps its warm keep-alive connections.

mod direct;
pub mod h1;

pub use direct::{close_worker_pools, reap_worker_pools, Direct, UpstreamBody};

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use std::sync::atomic::Ordering;

use http::request::Parts;
use http::{Request, Response, Uri};

use crate::config::{Endpoint, UpstreamProtocol, UpstreamTls};
use crate::data::body::RequestBody;
use crate::data::forwarding::Added;
use crate::data::record::Record;
use crate::data::snapshot::{RouteState, VersionState};
pub use crate::metrics::FailureKind;

/// A pooled client: HTTP/1.1 or HTTP/2, cleartext or TLS.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, RequestBody>;

/// The same, for shadow copies, whose bodies are complete buffers.
pub type MirrorClient = Client<HttpsConnector<HttpConnector>, http_body_util::Full<bytes::Bytes>>;

/// The settings that need a client of their own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub idle_timeout: Duration,
    /// HTTP/1.1 or HTTP/2.
    pub protocol: UpstreamProtocol,
    /// TLS settings, when the endpoints are reached over TLS.
    pub tls: Option<UpstreamTls>,
}

/// Every client the process has made, by settings. Only snapshot builds touch the lock.
#[derive(Default)]
pub struct Clients {
    by_key: Mutex<HashMap<ClientKey, UpstreamClient>>,
    mirror_by_key: Mutex<HashMap<ClientKey, MirrorClient>>,
    direct_slots: direct::Registry,
}

impl Clients {
    /// The client for these settings, created on first use.
    pub fn get(&self, key: ClientKey) -> UpstreamClient {
        get_or_build(&self.by_key, key)
    }

    /// The client for shadow copies with these settings, created on first use.
    pub fn get_mirror(&self, key: ClientKey) -> MirrorClient {
        get_or_build(&self.mirror_by_key, key)
    }

    /// The direct path to these HTTP/1.1 endpoints (in this order); `None` for HTTP/2.
    pub fn direct(&self, key: &ClientKey, endpoints: &[Endpoint]) -> Option<Direct> {
        if key.protocol != UpstreamProtocol::Http1 {
            return None;
        }
        let slots = endpoints
            .iter()
            .map(|e| self.direct_slots.slot(key, e))
            .collect();
        Some(Direct::new(connector(key), slots))
    }
}

fn get_or_build<B>(
    map: &Mutex<HashMap<ClientKey, Client<HttpsConnector<HttpConnector>, B>>>,
    key: ClientKey,
) -> Client<HttpsConnector<HttpConnector>, B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // A poisoned lock only means another builder panicked mid-insert; the map is still usable.
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(client) = map.get(&key) {
        return client.clone();
    }
    let client = build(&key);
    map.insert(key, client.clone());
    client
}

/// A client for these settings with a pool of its own (the active health checks use one, so
/// they reach an endpoint exactly as requests do: TLS, SNI, CA and HTTP version included).
pub fn build<B>(key: &ClientKey) -> Client<HttpsConnector<HttpConnector>, B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connector = connector(key);
    let mut client = Client::builder(TokioExecutor::new());
    client
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(key.idle_timeout);
    match key.protocol {
        UpstreamProtocol::Http1 => client.build(connector),
        UpstreamProtocol::H2 => client
            .http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_timeout(Duration::from_secs(10))
            .build(connector),
    }
}

/// The connector for these settings: TCP connect timeout and no delay, TLS with the configured
/// CA and server name, ALPN for the protocol.
fn connector(key: &ClientKey) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(key.connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    // The files were checked when the configuration was loaded; if one has gone bad since, no
    // root is trusted: the handshake fails (a 502 naming the upstream) rather than trusting the
    // public roots in place of the configured CA.
    let tls = crate::data::tls::client_config(key.tls.as_ref()).unwrap_or_else(|error| {
        tracing::error!(%error, "upstream TLS: the CA file no longer loads; trusting no root");
        crate::data::tls::client_config_trusting_nothing()
    });
    let mut builder = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    if let Some(name) = key.tls.as_ref().and_then(|t| t.server_name.clone()) {
        if let Ok(name) = rustls::pki_types::ServerName::try_from(name) {
            builder = builder.with_server_name_resolver(FixedServerNameResolver::new(name));
        }
    }
    match key.protocol {
        UpstreamProtocol::Http1 => builder.enable_http1().wrap_connector(http),
        UpstreamProtocol::H2 => builder.enable_http2().wrap_connector(http),
    }
}

/// What failed on the way to an upstream, from either client.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// hyper-util's pooled client.
    #[error(transparent)]
    Pooled(#[from] hyper_util::client::legacy::Error),
    /// The direct path's connect (TCP or TLS).
    #[error("connecting to the upstream: {0}")]
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The direct path's HTTP/1.1 exchange.
    #[error(transparent)]
    Exchange(h1::Error),
}

/// Classifies an upstream client error by walking its source chain.
pub fn failure_kind(err: &CallError) -> FailureKind {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut hyper_error = None;
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return FailureKind::Timeout;
            }
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            hyper_error.get_or_insert(h);
        }
        source = e.source();
    }
    let connect = match err {
        CallError::Pooled(e) => e.is_connect(),
        CallError::Connect(_) => true,
        CallError::Exchange(e) if e.is_protocol() => return FailureKind::Protocol,
        CallError::Exchange(_) => false,
    };
    if connect {
        return FailureKind::Connect;
    }
    match hyper_error {
        Some(h) if h.is_parse() || h.is_parse_status() || h.is_user() => FailureKind::Protocol,
        _ => FailureKind::Reset,
    }
}

/// Why a call to the upstream produced no response.
pub enum Failure<'a> {
    /// No response head within the route's response-header timeout.
    Timeout {
        /// The endpoint last tried.
        endpoint: &'a Endpoint,
    },
    /// The client failed (connect, reset, invalid response, or the request body failed).
    Error {
        /// The endpoint last tried.
        endpoint: &'a Endpoint,
        /// What failed.
        error: CallError,
    },
}

/// What a retry sends again: the head of an idempotent request without a body.
struct RetryHead {
    method: http::Method,
    uri: Uri,
    headers: http::HeaderMap,
    version: http::Version,
}

/// Calls `endpoint` under the route's response-header deadline; after a connect failure, an
/// idempotent request without a body is tried on another endpoint, within the route's retries
/// and the version's retry budget. The endpoint that refused counts it towards its ejection.
/// `added` are the lines the proxy adds to the head (see [`Added`]), sent with every attempt.
///
/// A plain function returning an `async move` block, as `send` below: an `async fn` would keep the
/// request's head and body twice in its state.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub fn call<'a, 'b>(
    route: &'b RouteState,
    version: &'a VersionState,
    endpoint: &'a Endpoint,
    (parts, added): (Parts, Added),
    body: RequestBody,
    record: &'b mut Record,
) -> impl Future<Output = Result<Response<UpstreamBody>, Failure<'a>>> + Send + use<'a, 'b> {
    async move {
        // A retry needs the head again: kept only for idempotent requests without a body, on routes
        // with retries and versions with another endpoint to try.
        let retry = match route.retries {
            Some(r) if idempotent(&parts.method) && body.ended() && version.endpoints.len() > 1 => {
                Some((
                    r,
                    RetryHead {
                        method: parts.method.clone(),
                        uri: parts.uri.clone(),
                        headers: parts.headers.clone(),
                        version: parts.version,
                    },
                ))
            }
            _ => None,
        };
        let deadline = tokio::time::Instant::now() + route.timeouts.response_header;
        let mut endpoint = endpoint;
        let mut request = Request::from_parts(parts, body);
        // One await site for every attempt: each site would hold room for its own send future.
        let mut attempt = 0;
        loop {
            if attempt > 0 {
                version.retries_in_flight.fetch_add(1, Ordering::Relaxed);
            }
            let outcome =
                tokio::time::timeout_at(deadline, send(version, endpoint, request, &added)).await;
            if attempt > 0 {
                version.retries_in_flight.fetch_sub(1, Ordering::Relaxed);
            }
            let error = match outcome {
                Err(_elapsed) => return Err(Failure::Timeout { endpoint }),
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(error)) => error,
            };
            let next = match &retry {
                Some((retries, head))
                    if failure_kind(&error) == FailureKind::Connect
                        && attempt < retries.attempts =>
                {
                    next_retry_endpoint(version, endpoint, retries.budget_percent)
                        .and_then(|(next, health)| Some((next, health, head.to(next)?)))
                }
                _ => None,
            };
            let Some((next, health, again)) = next else {
                return Err(Failure::Error { endpoint, error });
            };
            endpoint = next;
            if let Some(failed) = record.endpoint.replace(health.clone()) {
                failed.observe(true);
            }
            version.metrics.retries.inc();
            request = again;
            attempt += 1;
        }
    }
}

impl RetryHead {
    /// The same request for another endpoint, without a body.
    fn to(&self, endpoint: &Endpoint) -> Option<Request<RequestBody>> {
        let mut target = self.uri.clone().into_parts();
        target.authority = Some(endpoint.0.clone());
        let target = Uri::from_parts(target).ok()?;
        let mut request = Request::new(RequestBody::empty());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = target;
        *request.headers_mut() = self.headers.clone();
        *request.version_mut() = self.version;
        Some(request)
    }
}

/// Sends one request to `endpoint`: on the direct path for an HTTP/1.1 version, else (HTTP/2, or
/// an upgrade, whose connection must outlive the exchange) through the pooled client.
#[allow(clippy::manual_async_fn)] // on purpose: the request is not kept twice (see `call`)
fn send<'a>(
    version: &'a VersionState,
    endpoint: &'a Endpoint,
    mut request: Request<RequestBody>,
    added: &'a Added,
) -> impl Future<Output = Result<Response<UpstreamBody>, CallError>> + Send + 'a {
    async move {
        let direct = version.direct.as_ref().and_then(|direct| {
            let index = version
                .endpoints
                .iter()
                .position(|e| std::ptr::eq(e, endpoint))?;
            let upgrade = request.headers().contains_key(http::header::UPGRADE);
            (!upgrade).then_some((direct, index))
        });
        match direct {
            Some((direct, index)) => direct.send(index, request, added).await,
            None => {
                added.insert_into(request.headers_mut());
                Ok(version
                    .client
                    .request(request)
                    .await?
                    .map(UpstreamBody::pooled))
            }
        }
    }
}

/// Another usable endpoint for a retry, when the budget allows one: retries in flight stay
/// under a share of the requests in flight (at least 3), so retries cannot multiply an outage.
fn next_retry_endpoint<'a>(
    version: &'a VersionState,
    failed: &Endpoint,
    budget_percent: u32,
) -> Option<(
    &'a Endpoint,
    &'a std::sync::Arc<crate::data::endpoint::EndpointHealth>,
)> {
    let in_flight = version.metrics.in_flight.get().max(0) as u64;
    let allowed = (in_flight * u64::from(budget_percent) / 100).max(3);
    let active = version.retries_in_flight.load(Ordering::Relaxed);
    if u64::from(active) >= allowed {
        return None;
    }
    version.next_endpoint().filter(|(e, _)| *e != failed)
}

/// Methods a retry cannot turn into a duplicate side effect (RFC 9110 §9.2.2).
fn idempotent(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
            | http::Method::TRACE
    )
}
