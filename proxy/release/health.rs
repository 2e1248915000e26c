//! Endpoint health: active checks (an HTTP GET per endpoint at an interval, with healthy and
//! unhealthy thresholds, spoken as the version speaks to it: over TLS with its CA and server name
//! when the version has `tls`, HTTP/2 for an `h2` version) and passive ejection (consecutive 5xx or connect failures eject an
//! endpoint for a time that doubles with each ejection, in the manner of Envoy's outlier
//! detection).
//!
//! State is kept per endpoint for the life of the process, so it survives reloads. The data path
//! reads it through `Arc<EndpointHealth>` handles resolved at snapshot build; the checker tasks
//! are started and stopped by the control task as the configuration changes, and report state
//! changes back to it (a version whose endpoints are all down gets no traffic).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Empty;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{Config, Endpoint, HealthCheck, UpstreamProtocol, UpstreamTls};
pub use crate::data::endpoint::EndpointHealth;
use crate::data::upstream::ClientKey;

/// How a version reaches its endpoints, as far as a probe cares.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Reach {
    protocol: UpstreamProtocol,
    tls: Option<UpstreamTls>,
}

/// One checker: an endpoint, the route's check, and how its version reaches it.
type CheckerKey = (Endpoint, HealthCheck, Reach);

/// Every endpoint's health and the checker tasks.
pub struct Health {
    endpoints: Mutex<HashMap<Endpoint, Arc<EndpointHealth>>>,
    checkers: Mutex<HashMap<CheckerKey, JoinHandle<()>>>,
    changed: mpsc::Sender<()>,
}

impl Health {
    /// Creates the registry; `changed` receives a message whenever an active check flips an
    /// endpoint's state.
    pub fn new(changed: mpsc::Sender<()>) -> Health {
        Health {
            endpoints: Mutex::default(),
            checkers: Mutex::default(),
            changed,
        }
    }

    /// The health handle of an endpoint, created on first use.
    pub fn of(&self, endpoint: &Endpoint) -> Arc<EndpointHealth> {
        self.endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(endpoint.clone())
            .or_default()
            .clone()
    }

    /// True when at least one endpoint may take traffic; with a check configured, it must also
    /// have passed it.
    pub fn any_healthy(&self, endpoints: &[Endpoint], check: Option<&HealthCheck>) -> bool {
        endpoints.iter().any(|e| {
            let h = self.of(e);
            h.usable() && (check.is_none() || h.checked_healthy())
        })
    }

    /// Starts checkers for every (endpoint, check) of `config` and stops the others.
    pub fn track(self: &Arc<Self>, config: &Config) {
        let mut wanted = HashMap::new();
        for route in &config.routes {
            if let Some(check) = &route.health_check {
                for v in &route.versions {
                    let reach = Reach {
                        protocol: v.protocol,
                        tls: v.tls.clone(),
                    };
                    for e in &v.endpoints {
                        wanted.insert((e.clone(), check.clone(), reach.clone()), ());
                    }
                }
            }
        }
        let mut checkers = self.checkers.lock().unwrap_or_else(|e| e.into_inner());
        checkers.retain(|key, task| {
            let keep = wanted.contains_key(key);
            if !keep {
                task.abort();
            }
            keep
        });
        for key in wanted.into_keys() {
            if let std::collections::hash_map::Entry::Vacant(slot) = checkers.entry(key) {
                let (endpoint, check, reach) = slot.key().clone();
                let health = self.of(&endpoint);
                slot.insert(tokio::spawn(check_loop(
                    endpoint,
                    check,
                    reach,
                    health,
                    self.changed.clone(),
                )));
            }
        }
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        for task in self
            .checkers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            task.abort();
        }
    }
}

async fn check_loop(
    endpoint: Endpoint,
    check: HealthCheck,
    reach: Reach,
    health: Arc<EndpointHealth>,
    changed: mpsc::Sender<()>,
) {
    let (scheme, version) = (
        if reach.tls.is_some() { "https" } else { "http" },
        match reach.protocol {
            UpstreamProtocol::Http1 => http::Version::HTTP_11,
            UpstreamProtocol::H2 => http::Version::HTTP_2,
        },
    );
    let client = crate::data::upstream::build::<Empty<Bytes>>(&ClientKey {
        connect_timeout: check.timeout,
        idle_timeout: std::time::Duration::from_secs(90),
        protocol: reach.protocol,
        tls: reach.tls,
    });
    let url = format!("{scheme}://{endpoint}{}", check.path);
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let probe = http::Request::get(&url).version(version);
        let ok = match probe.body(Empty::new()) {
            Ok(request) => matches!(
                tokio::time::timeout(check.timeout, client.request(request)).await,
                Ok(Ok(r)) if r.status().is_success()
            ),
            Err(_) => false,
        };
        if health.probe(ok, &check) {
            tracing::info!(%endpoint, healthy = ok, "endpoint health changed");
            // A full channel already holds a wake-up for the control task.
            let _ = changed.try_send(());
        }
    }
}
