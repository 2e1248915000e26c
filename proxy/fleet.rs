//! The fleet: replicas that share one release state through etcd, so that a weight, a rollout step
//! or an abort decided through any replica is in force on all of them.
//!
//! What it owns: the etcd client and the key layout ([`keys`]), the compare-and-swap commit of a
//! route's state with its audit record ([`commit`]), the watch that brings every change to the
//! control task ([`sync`]), this replica's lease, presence record and rollout leadership
//! ([`presence`]), and the exchange of analysis windows ([`windows`]). What it does not own: the
//! snapshot. Changes leave as [`Remote`] messages to the control task, which stays the single
//! writer; the control task commits through [`Fleet::commit`] before it installs anything.
//!
//! Faults are static: when etcd is unreachable every replica keeps the last agreed state, and the
//! status here (`up`, the last error) says so to the API and `switchyard_fleet_store_up`.

pub mod commit;
pub mod keys;
pub mod presence;
pub mod sync;
pub mod view;
pub mod windows;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use prometheus::{IntGauge, IntGaugeVec, Opts};

use crate::config::Route;
use crate::state::{now_unix_ms, RouteOverride};
pub use commit::{AuditRecord, Commit, CommitError};
pub use keys::Keys;
pub use view::{FleetView, ReplicaRecord};

/// How long one etcd request may take before the fleet store counts as unreachable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// One route's release state as etcd holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The state; `None` when the key is absent (never set, or reset).
    pub state: Option<RouteOverride>,
    /// The key's mod_revision, 0 when absent: what the next compare-and-swap compares.
    pub mod_revision: i64,
}

/// A change of the fleet's release state, for the control task.
#[derive(Debug)]
pub enum Remote {
    /// Every route's state at `revision`, after (re)connecting: routes not listed are absent.
    Synced {
        /// The etcd revision of this view.
        revision: i64,
        /// Route name to its stored state.
        routes: BTreeMap<String, Stored>,
    },
    /// One route's state changed at `revision`.
    Changed {
        /// The route.
        route: String,
        /// Its new state.
        stored: Box<Stored>,
        /// The revision of the change.
        revision: i64,
    },
}

/// Why the fleet could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A TLS file does not load.
    #[error("fleet.etcd.tls: cannot read {path}: {source}")]
    TlsFile {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The password variable is not set.
    #[error("fleet.etcd.password_env names {0}, which is not set")]
    Password(String),
    /// The metrics registry refused a family (a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Whether etcd answered lately.
#[derive(Debug, Clone, Default)]
pub struct StoreStatus {
    /// The last request to etcd succeeded.
    pub up: bool,
    /// Since when it is up or down (ms since the Unix epoch).
    pub since_unix_ms: u64,
    /// The last failure, while down.
    pub last_error: Option<String>,
}

/// Who is in the fleet, from the watch: live replicas and rollout leaders.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Replica name to its presence record.
    pub replicas: BTreeMap<String, ReplicaRecord>,
    /// Route name to the replica that leads its rollout.
    pub leaders: BTreeMap<String, String>,
}

struct FleetMetrics {
    store_up: IntGauge,
    replicas: IntGauge,
    leader: IntGaugeVec,
}

/// A replica's membership of the fleet: shared by the control task, the analysis, the API and the
/// fleet's own tasks.
pub struct Fleet {
    settings: crate::config::Fleet,
    keys: Keys,
    client: tokio::sync::Mutex<Option<Client>>,
    options: ConnectOptions,
    status: ArcSwap<StoreStatus>,
    live: ArcSwap<Live>,
    /// This replica's lease id (0: none yet).
    lease: AtomicI64,
    /// Until when the lease is known to be alive (ms since the Unix epoch).
    lease_valid_until: AtomicU64,
    /// Woken when a leader key disappears: campaign at once.
    wake: tokio::sync::Notify,
    /// Set once the control task installed the first full state.
    installed: tokio::sync::watch::Sender<bool>,
    metrics: FleetMetrics,
}

impl Fleet {
    /// Prepares the client (without contacting etcd) and registers the fleet's metrics.
    pub fn new(
        settings: crate::config::Fleet,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Arc<Fleet>, FleetError> {
        let options = connect_options(&settings)?;
        let m = FleetMetrics {
            store_up: IntGauge::new(
                "switchyard_fleet_store_up",
                "1 while the fleet's etcd answers this replica, 0 while it is unreachable or without quorum.",
            )?,
            replicas: IntGauge::new(
                "switchyard_fleet_replicas",
                "Live replicas of the fleet, as this replica sees them.",
            )?,
            leader: IntGaugeVec::new(
                Opts::new(
                    "switchyard_fleet_rollout_leader",
                    "1 when this replica leads the route's rollout analysis.",
                ),
                &["route"],
            )?,
        };
        metrics.register(Box::new(m.store_up.clone()))?;
        metrics.register(Box::new(m.replicas.clone()))?;
        metrics.register(Box::new(m.leader.clone()))?;
        let keys = Keys::new(&settings.etcd.prefix);
        Ok(Arc::new(Fleet {
            settings,
            keys,
            client: tokio::sync::Mutex::new(None),
            options,
            status: ArcSwap::from_pointee(StoreStatus {
                up: false,
                since_unix_ms: now_unix_ms(),
                last_error: Some("not connected yet".into()),
            }),
            live: ArcSwap::default(),
            lease: AtomicI64::new(0),
            lease_valid_until: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            installed: tokio::sync::watch::channel(false).0,
            metrics: m,
        }))
    }

    /// This replica's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The fleet's settings.
    pub fn settings(&self) -> &crate::config::Fleet {
        &self.settings
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Whether etcd answered lately.
    pub fn status(&self) -> Arc<StoreStatus> {
        self.status.load_full()
    }

    /// Live replicas and leaders.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// The client, connecting on first use (a replica starts while etcd is unreachable).
    async fn client(&self) -> Result<Client, String> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let connect = Client::connect(&self.settings.etcd.endpoints, Some(self.options.clone()));
        let client = tokio::time::timeout(REQUEST_TIMEOUT, connect)
            .await
            .map_err(|_| "no answer from etcd".to_string())?
            .map_err(|e| e.to_string())?;
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Records a successful exchange with etcd.
    fn up(&self) {
        if !self.status.load().up {
            tracing::info!(prefix = %self.keys.prefix(), "fleet store reachable");
            self.status.store(Arc::new(StoreStatus {
                up: true,
                since_unix_ms: now_unix_ms(),
                last_error: None,
            }));
            self.metrics.store_up.set(1);
        }
    }

    /// Records a failed exchange with etcd.
    fn down(&self, error: &str) {
        let was = self.status.load();
        if was.up || was.last_error.as_deref() != Some(error) {
            if was.up {
                tracing::error!(%error, "fleet store unreachable: serving the last agreed state");
            }
            self.status.store(Arc::new(StoreStatus {
                up: false,
                since_unix_ms: if was.up {
                    now_unix_ms()
                } else {
                    was.since_unix_ms
                },
                last_error: Some(error.to_string()),
            }));
            self.metrics.store_up.set(0);
        }
    }

    /// True when this replica leads `route`'s rollout now: etcd says so, and its lease is alive.
    pub fn leads(&self, route: &str) -> bool {
        self.status.load().up
            && self.lease_valid_until.load(Ordering::Acquire) > now_unix_ms()
            && self.live.load().leaders.get(route).map(String::as_str) == Some(self.name())
    }

    /// The live replicas, other than this one, whose definition of `route` differs from this
    /// replica's (or that do not have the route).
    pub fn differing(&self, route: &Route) -> Vec<String> {
        let mine = view::route_digest(route);
        self.live
            .load()
            .replicas
            .values()
            .filter(|r| r.name != self.name())
            .filter(|r| r.routes.get(&route.name) != Some(&mine))
            .map(|r| r.name.clone())
            .collect()
    }

    /// Tells the fleet that the control task installed the first full state.
    pub fn mark_installed(&self) {
        self.installed.send_replace(true);
    }

    /// Waits (at most `limit`) for the control task to install the fleet's state; false when it
    /// did not come in time (etcd unreachable at start).
    pub async fn wait_installed(&self, limit: Duration) -> bool {
        let mut rx = self.installed.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|v| *v))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn set_live(&self, live: Live) {
        self.metrics.replicas.set(live.replicas.len() as i64);
        let before = self.live.swap(Arc::new(live));
        let now = self.live.load();
        if before.leaders.keys().any(|r| !now.leaders.contains_key(r)) {
            // A leader's lease ended: campaign now rather than at the next beat.
            self.wake.notify_one();
        }
        for route in before.leaders.keys().chain(now.leaders.keys()) {
            let mine = now.leaders.get(route).map(String::as_str) == Some(self.name());
            self.metrics
                .leader
                .with_label_values(&[route])
                .set(i64::from(mine));
        }
    }
}

fn connect_options(settings: &crate::config::Fleet) -> Result<ConnectOptions, FleetError> {
    let mut options = ConnectOptions::new()
        .with_require_leader(true)
        .with_timeout(REQUEST_TIMEOUT)
        .with_connect_timeout(Duration::from_secs(1))
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
    if let Some(tls) = &settings.etcd.tls {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|source| FleetError::TlsFile {
                path: p.display().to_string(),
                source,
            })
        };
        let mut t = TlsOptions::new().ca_certificate(Certificate::from_pem(read(&tls.ca)?));
        if let Some((cert, key)) = &tls.identity {
            t = t.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(name) = &tls.server_name {
            t = t.domain_name(name.clone());
        }
        options = options.with_tls(t);
    }
    if let Some((user, var)) = &settings.etcd.user {
        let password = std::env::var(var).map_err(|_| FleetError::Password(var.clone()))?;
        options = options
            .with_user(user.clone(), password)
            .with_auto_token_refresh(true);
    }
    Ok(options)
}

/// Checks that the TLS files the fleet block names can be read, for `check` and reloads.
pub fn check_files(config: &crate::config::Config) -> Result<(), FleetError> {
    match &config.fleet {
        Some(f) if f.etcd.tls.is_some() => connect_options(f).map(|_| ()).or_else(|e| match e {
            // The password is read at start, not by `check`.
            FleetError::Password(_) => Ok(()),
            e => Err(e),
        }),
        _ => Ok(()),
    }
}
