//! Endpoint health: active checks (an HTTP GET per endpoint at an interval, with healthy and
//! unhealthy thresholds) and passive ejection (consecutive 5xx or connect failures eject an
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
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{Config, Endpoint, HealthCheck};
pub use crate::data::endpoint::EndpointHealth;

/// Every endpoint's health and the checker tasks.
pub struct Health {
    endpoints: Mutex<HashMap<Endpoint, Arc<EndpointHealth>>>,
    checkers: Mutex<HashMap<(Endpoint, HealthCheck), JoinHandle<()>>>,
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
                    for e in &v.endpoints {
                        wanted.insert((e.clone(), check.clone()), ());
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
                let (endpoint, check) = slot.key().clone();
                let health = self.of(&endpoint);
                slot.insert(tokio::spawn(check_loop(
                    endpoint,
                    check,
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
    health: Arc<EndpointHealth>,
    changed: mpsc::Sender<()>,
) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let url = format!("http://{endpoint}{}", check.path);
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let ok = match http::Request::get(&url).body(Empty::new()) {
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
