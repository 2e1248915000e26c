//! What a replica publishes about itself, and the fleet as the API shows it. Plain data shared by
//! the presence task, the admin API and `switchyard ctl fleet`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::Route;

/// A replica's presence record, under a leased key: gone within the lease TTL once the replica
/// stops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaRecord {
    /// The replica's name.
    pub name: String,
    /// Listener name to bound address.
    pub listeners: BTreeMap<String, String>,
    /// The admin endpoint's bound address, when it has one.
    #[serde(default)]
    pub admin: Option<String>,
    /// A digest of every route's definition: equal on replicas running the same routes.
    pub config_digest: String,
    /// Each route's definition digest.
    pub routes: BTreeMap<String, String>,
    /// The generation of the snapshot in service.
    pub generation: u64,
    /// When this record was last written (ms since the Unix epoch).
    pub heartbeat_unix_ms: u64,
    /// When the replica started (ms since the Unix epoch).
    pub started_unix_ms: u64,
}

/// `GET /api/v1/fleet`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetView {
    /// False when the replica runs without a `fleet` block (then the rest is empty).
    pub enabled: bool,
    /// The replica answering.
    #[serde(default)]
    pub name: Option<String>,
    /// The etcd key prefix.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The fleet store (etcd) as this replica sees it.
    #[serde(default)]
    pub store: Option<StoreView>,
    /// Live replicas (their leases have not expired), by name.
    #[serde(default)]
    pub replicas: Vec<ReplicaRecord>,
    /// Route name to the replica leading its rollout.
    #[serde(default)]
    pub leaders: BTreeMap<String, String>,
}

/// The control plane's health.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreView {
    /// `up` or `down`.
    pub state: String,
    /// Since when (ms since the Unix epoch).
    pub since_unix_ms: u64,
    /// Why it is down.
    #[serde(default)]
    pub last_error: Option<String>,
    /// The members this replica dials.
    pub endpoints: Vec<String>,
}

/// A digest of a route's definition: versions, endpoints, matches, rules, rollout. Two replicas
/// with the same digest split the route the same way.
pub fn route_digest(route: &Route) -> String {
    digest(format!("{route:?}").as_bytes())
}

/// A digest of all routes, in order.
pub fn config_digest(routes: &[Route]) -> String {
    let all: Vec<String> = routes
        .iter()
        .map(|r| format!("{}={}", r.name, route_digest(r)))
        .collect();
    digest(all.join(",").as_bytes())
}

fn digest(bytes: &[u8]) -> String {
    let (a, b) = mur3::murmurhash3_x64_128(bytes, 0);
    format!("{a:016x}{b:016x}")
}

impl FleetView {
    /// The view of this replica without a fleet.
    pub fn disabled() -> FleetView {
        FleetView {
            enabled: false,
            name: None,
            prefix: None,
            store: None,
            replicas: Vec::new(),
            leaders: BTreeMap::new(),
        }
    }

    /// The view of a replica in a fleet.
    pub fn of(fleet: &super::Fleet) -> FleetView {
        let status = fleet.status();
        let live = fleet.live();
        FleetView {
            enabled: true,
            name: Some(fleet.name().to_string()),
            prefix: Some(fleet.keys().prefix().to_string()),
            store: Some(StoreView {
                state: if status.up { "up" } else { "down" }.into(),
                since_unix_ms: status.since_unix_ms,
                last_error: status.last_error.clone(),
                endpoints: fleet.settings().etcd.endpoints.clone(),
            }),
            replicas: live.replicas.values().cloned().collect(),
            leaders: live.leaders.clone(),
        }
    }
}
