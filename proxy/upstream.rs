//! Upstream clients: hyper-util's pooled client, one per distinct set of connection settings,
//! created on first use and kept for the life of the process. Snapshots hold clones, so a reload
//! that keeps a route's settings keeps its warm keep-alive connections (pools are keyed by
//! endpoint inside each client).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use hyper_rustls::{
    ConfigBuilderExt as _, FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder,
};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::RequestBody;
use crate::config::{UpstreamProtocol, UpstreamTls};

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

fn build<B>(key: &ClientKey) -> Client<HttpsConnector<HttpConnector>, B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(key.connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    // The files were checked when the configuration was loaded; if one has gone bad since, the
    // webpki roots stand in (and verification against a private CA fails loudly as a 502).
    let tls = crate::tls::client_config(key.tls.as_ref()).unwrap_or_else(|error| {
        tracing::error!(%error, "upstream TLS: using the webpki roots instead");
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_webpki_roots().with_no_client_auth())
        // The ring provider supports the safe default versions: this cannot fail.
        .expect("ring supports TLS 1.2 and 1.3")
    });
    let mut builder = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    if let Some(name) = key.tls.as_ref().and_then(|t| t.server_name.clone()) {
        if let Ok(name) = rustls::pki_types::ServerName::try_from(name) {
            builder = builder.with_server_name_resolver(FixedServerNameResolver::new(name));
        }
    }
    let mut client = Client::builder(TokioExecutor::new());
    client
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(key.idle_timeout);
    match key.protocol {
        UpstreamProtocol::Http1 => client.build(builder.enable_http1().wrap_connector(http)),
        UpstreamProtocol::H2 => client
            .http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_timeout(Duration::from_secs(10))
            .build(builder.enable_http2().wrap_connector(http)),
    }
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
    /// Classifies a client error by walking its source chain.
    pub fn of(err: &hyper_util::client::legacy::Error) -> Self {
        let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
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
        if err.is_connect() {
            return FailureKind::Connect;
        }
        match hyper_error {
            Some(h) if h.is_parse() || h.is_parse_status() || h.is_user() => FailureKind::Protocol,
            _ => FailureKind::Reset,
        }
    }

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
