//! The fleet's side of the rollout analysis: every replica publishes its own window of each
//! rolling route (requests, errors, latency buckets of baseline and canary) under a leased key
//! at every look; the leader of the route reads the live ones back and judges their sum. A
//! replica that dies takes its window with it (its lease), so the sum is always over live
//! replicas; a new leader has every other replica's window at once, not an empty history.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use etcd_client::{GetOptions, PutOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::Fleet;
use crate::metrics::latency::{Counts, LATENCY_BUCKETS};
use crate::release::analysis::{Exchange, Role, Window};
use crate::state::{now_unix_ms, Share};

/// How often a leader reads the other replicas' windows.
const COLLECT_EVERY: Duration = Duration::from_millis(250);

/// Counts as stored in etcd.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WireCounts {
    requests: u64,
    errors: u64,
    /// Requests per latency bucket (see `metrics::latency`).
    latency: Vec<u64>,
}

impl WireCounts {
    fn of(c: &Counts) -> WireCounts {
        WireCounts {
            requests: c.requests,
            errors: c.errors,
            latency: c.latency.to_vec(),
        }
    }

    fn counts(&self) -> Counts {
        let mut c = Counts {
            requests: self.requests,
            errors: self.errors,
            ..Counts::default()
        };
        for (slot, n) in c.latency.iter_mut().zip(&self.latency) {
            *slot = *n;
        }
        c
    }
}

/// One replica's window of one rollout, as published.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Published {
    replica: String,
    /// The rollout's start: windows of another rollout are not summed.
    rollout: u64,
    at_unix_ms: u64,
    baseline: WireCounts,
    canary: WireCounts,
}

/// Adds `b` into `a`.
fn add(a: &mut Counts, b: &Counts) {
    a.requests += b.requests;
    a.errors += b.errors;
    for i in 0..LATENCY_BUCKETS {
        a.latency[i] += b.latency[i];
    }
}

/// The exchange of windows, plugged into the analysis task.
pub struct Windows {
    fleet: Arc<Fleet>,
    outbox: mpsc::Sender<(String, Published)>,
    /// Route to the other replicas' windows, for the routes this replica leads.
    collected: Arc<ArcSwap<HashMap<String, Vec<Published>>>>,
}

impl Windows {
    /// Starts the publishing and collecting tasks; they end when `shutdown` fires.
    pub fn spawn(fleet: Arc<Fleet>, shutdown: watch::Receiver<bool>) -> Arc<Windows> {
        let (outbox, inbox) = mpsc::channel(64);
        let collected: Arc<ArcSwap<HashMap<String, Vec<Published>>>> = Arc::default();
        tokio::spawn(publish(fleet.clone(), inbox, shutdown.clone()));
        tokio::spawn(collect(fleet.clone(), collected.clone(), shutdown));
        Arc::new(Windows {
            fleet,
            outbox,
            collected,
        })
    }
}

impl Exchange for Windows {
    fn exchange(&self, route: &str, rollout: u64, local: &Window) -> Role {
        let me = self.fleet.name();
        let mine = Published {
            replica: me.to_string(),
            rollout,
            at_unix_ms: now_unix_ms(),
            baseline: WireCounts::of(&local.baseline),
            canary: WireCounts::of(&local.canary),
        };
        // Dropped when the publisher is behind: the next look publishes a newer window.
        let _ = self.outbox.try_send((route.to_string(), mine));
        if !self.fleet.status().up {
            return Role::CutOff;
        }
        if !self.fleet.leads(route) {
            return Role::Follow;
        }
        let mut total = Box::new(local.clone());
        let mut shares = vec![Share {
            replica: me.to_string(),
            baseline_requests: local.baseline.requests,
            canary_requests: local.canary.requests,
        }];
        let fresh_after =
            now_unix_ms().saturating_sub(2 * self.fleet.settings.lease_ttl.as_millis() as u64);
        let live = self.fleet.live();
        if let Some(others) = self.collected.load().get(route) {
            for p in others.iter().filter(|p| {
                p.replica != me
                    && p.rollout == rollout
                    && p.at_unix_ms >= fresh_after
                    && live.replicas.contains_key(&p.replica)
            }) {
                let (b, c) = (p.baseline.counts(), p.canary.counts());
                add(&mut total.baseline, &b);
                add(&mut total.canary, &c);
                shares.push(Share {
                    replica: p.replica.clone(),
                    baseline_requests: b.requests,
                    canary_requests: c.requests,
                });
            }
        }
        Role::Lead { total, shares }
    }
}

/// Writes this replica's windows under its lease, the newest per route.
async fn publish(
    fleet: Arc<Fleet>,
    mut inbox: mpsc::Receiver<(String, Published)>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            m = inbox.recv() => m,
            _ = shutdown.changed() => return,
        };
        let Some(first) = first else { return };
        let mut newest = HashMap::from([first]);
        while let Ok((route, p)) = inbox.try_recv() {
            newest.insert(route, p);
        }
        let lease = fleet.lease.load(Ordering::Acquire);
        let Ok(mut client) = fleet.client().await else {
            continue;
        };
        if lease == 0 {
            continue;
        }
        for (route, p) in newest {
            let Ok(body) = serde_json::to_vec(&p) else {
                continue;
            };
            let key = fleet.keys.window(&route, fleet.name());
            let put = client.put(key, body, Some(PutOptions::new().with_lease(lease)));
            if let Err(error) = put.await {
                tracing::debug!(route, %error, "analysis window not published");
            }
        }
    }
}

/// For the routes this replica leads, reads every replica's window.
async fn collect(
    fleet: Arc<Fleet>,
    collected: Arc<ArcSwap<HashMap<String, Vec<Published>>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(COLLECT_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        let led: Vec<String> = fleet
            .live()
            .leaders
            .iter()
            .filter(|(_, l)| l.as_str() == fleet.name())
            .map(|(r, _)| r.clone())
            .collect();
        if led.is_empty() {
            if !collected.load().is_empty() {
                collected.store(Arc::default());
            }
            continue;
        }
        let Ok(mut client) = fleet.client().await else {
            continue;
        };
        let mut next = HashMap::new();
        for route in led {
            let read = client
                .get(
                    fleet.keys.windows(&route),
                    Some(GetOptions::new().with_prefix()),
                )
                .await;
            let Ok(response) = read else { continue };
            let windows = response
                .kvs()
                .iter()
                .filter_map(|kv| serde_json::from_slice::<Published>(kv.value()).ok())
                .collect();
            next.insert(route, windows);
        }
        collected.store(Arc::new(next));
    }
}
