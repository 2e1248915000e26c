//! This replica's lease and what hangs on it: the presence record (name, addresses, config
//! digests, snapshot generation, heartbeat) and the leadership of rollouts.
//!
//! Every beat (a third of the lease TTL, at most a second) the task renews the lease, rewrites the
//! presence record and campaigns for every route with a rollout that has no leader: a
//! transaction that creates the leader key with this replica's lease only if the key does not
//! exist. A replica that dies stops renewing; etcd deletes its keys when the lease expires, the
//! watch sees the leader key go, and the others campaign at once. A replica that stops cleanly
//! revokes its lease on the way out, so its leadership moves without waiting for the TTL.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp,
};
use tokio::sync::watch;

use super::view::{config_digest, route_digest};
use super::{Fleet, ReplicaRecord, REQUEST_TIMEOUT};
use crate::data::shared::Shared;
use crate::state::now_unix_ms;

/// Where this replica can be reached, for its presence record.
#[derive(Debug, Clone, Default)]
pub struct Addresses {
    /// Listener name to bound address.
    pub listeners: BTreeMap<String, String>,
    /// The admin endpoint's bound address.
    pub admin: Option<String>,
}

type Keeper = Option<(LeaseKeeper, LeaseKeepAliveStream)>;

/// Starts the presence task; it revokes the lease and ends when `shutdown` fires.
pub fn spawn(
    fleet: Arc<Fleet>,
    shared: Arc<Shared>,
    addresses: Addresses,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let ttl = fleet.settings.lease_ttl;
    let beat_every = (ttl / 3).min(Duration::from_secs(1));
    let started = now_unix_ms();
    tokio::spawn(async move {
        let mut keeper: Keeper = None;
        loop {
            let outcome = tokio::time::timeout(
                REQUEST_TIMEOUT * 2,
                beat(&fleet, &shared, &addresses, started, &mut keeper),
            )
            .await
            .unwrap_or_else(|_| Err("no answer from etcd".into()));
            match outcome {
                Ok(()) => fleet.up(),
                Err(error) => {
                    keeper = None;
                    fleet.down(&error);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(beat_every) => {}
                _ = fleet.wake.notified() => {}
                _ = shutdown.changed() => break,
            }
        }
        let lease = fleet.lease.swap(0, Ordering::AcqRel);
        if lease != 0 {
            if let Ok(mut client) = fleet.client().await {
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), client.lease_revoke(lease)).await;
            }
        }
    })
}

/// Renews (or takes) the lease, rewrites the presence record, campaigns.
async fn beat(
    fleet: &Fleet,
    shared: &Shared,
    addresses: &Addresses,
    started: u64,
    keeper: &mut Keeper,
) -> Result<(), String> {
    let mut client = fleet.client().await?;
    let lease = renew(fleet, &mut client, keeper).await?;
    let snapshot = shared.snapshot.load();
    let record = ReplicaRecord {
        name: fleet.name().to_string(),
        listeners: addresses.listeners.clone(),
        admin: addresses.admin.clone(),
        config_digest: config_digest(&snapshot.config.routes),
        routes: snapshot
            .config
            .routes
            .iter()
            .map(|r| (r.name.clone(), route_digest(r)))
            .collect(),
        generation: snapshot.generation,
        heartbeat_unix_ms: now_unix_ms(),
        started_unix_ms: started,
    };
    let body = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
    client
        .put(
            fleet.keys.replica(fleet.name()),
            body,
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .map_err(|e| e.to_string())?;
    let rolling: Vec<String> = snapshot
        .config
        .routes
        .iter()
        .filter(|r| r.rollout.is_some())
        .map(|r| r.name.clone())
        .collect();
    campaign(fleet, &mut client, lease, &rolling).await
}

/// Keeps the lease alive, or grants a new one when there is none or it expired.
async fn renew(fleet: &Fleet, client: &mut Client, keeper: &mut Keeper) -> Result<i64, String> {
    let ttl = fleet.settings.lease_ttl;
    let mut lease = fleet.lease.load(Ordering::Acquire);
    let sent_at = now_unix_ms();
    if lease != 0 && keeper.is_none() {
        match client.lease_keep_alive(lease).await {
            Ok(k) => *keeper = Some(k),
            // The client's answer when etcd says the lease has no time left: it expired while
            // this replica could not renew it (beats failed while etcd was out of reach, and
            // the first one after quorum came back too late). Asking again for the same lease
            // would fail every beat from now on, and this replica would never show up again.
            Err(etcd_client::Error::LeaseKeepAliveError(reason)) => {
                tracing::warn!(lease, %reason, "fleet lease gone: taking a new one");
                lease = 0;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    if lease != 0 {
        if let Some((k, stream)) = keeper.as_mut() {
            k.keep_alive().await.map_err(|e| e.to_string())?;
            let answer = stream
                .message()
                .await
                .map_err(|e| e.to_string())?
                .ok_or("the lease keep-alive stream ended")?;
            if answer.ttl() <= 0 {
                tracing::warn!(lease, "fleet lease expired: taking a new one");
                lease = 0;
                *keeper = None;
            }
        }
    }
    if lease == 0 {
        let granted = client
            .lease_grant(ttl.as_secs().max(2) as i64, None)
            .await
            .map_err(|e| e.to_string())?;
        lease = granted.id();
        fleet.lease.store(lease, Ordering::Release);
        *keeper = None;
    }
    fleet
        .lease_valid_until
        .store(sent_at + ttl.as_millis() as u64, Ordering::Release);
    Ok(lease)
}

/// Takes the lead of every rolling route that has no leader; gives up routes this replica no
/// longer has.
async fn campaign(
    fleet: &Fleet,
    client: &mut Client,
    lease: i64,
    rolling: &[String],
) -> Result<(), String> {
    let live = fleet.live();
    for route in rolling {
        if live.leaders.contains_key(route) {
            continue;
        }
        let key = fleet.keys.leader(route);
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(
                key,
                fleet.name(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let won = client.txn(txn).await.map_err(|e| e.to_string())?;
        if won.succeeded() {
            tracing::info!(route, "leading the route's rollout");
        }
    }
    for (route, leader) in &live.leaders {
        if leader == fleet.name() && !rolling.contains(route) {
            let key = fleet.keys.leader(route);
            let txn = Txn::new()
                .when(vec![Compare::value(
                    key.clone(),
                    CompareOp::Equal,
                    fleet.name(),
                )])
                .and_then(vec![TxnOp::delete(key, None)]);
            client.txn(txn).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
