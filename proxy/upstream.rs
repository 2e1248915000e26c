//! Upstream clients: hyper-util's pooled client, one per distinct set of connection settings,
//! created on first use and kept for the life of the process. Snapshots hold clones, so a reload
//! that keeps a route's settings keeps its warm keep-alive connections (pools are keyed by
//! endpoint inside each client).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::body::RequestBody;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// A pooled HTTP/1.1 client.
pub type UpstreamClient = Client<HttpConnector, RequestBody>;

/// The settings that need a client of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub idle_timeout: Duration,
}

/// Every client the process has made, by settings. Only snapshot builds touch the lock.
#[derive(Default)]
pub struct Clients {
    by_key: Mutex<HashMap<ClientKey, UpstreamClient>>,
}

impl Clients {
    /// The client for these settings, created on first use.
    pub fn get(&self, key: ClientKey) -> UpstreamClient {
        // A poisoned lock only means another builder panicked mid-insert; the map is still usable.
        let mut map = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key).or_insert_with(|| build(key)).clone()
    }
}

fn build(key: ClientKey) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(key.connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(key.idle_timeout)
        .build(connector)
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
