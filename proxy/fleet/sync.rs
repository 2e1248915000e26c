//! The watch: reads the fleet's routes, replicas and leaders at one revision, hands the routes to
//! the control task as [`Remote::Synced`], then watches the three prefixes from the next revision
//! and forwards every route change as [`Remote::Changed`]. Replicas and leaders are kept here, for
//! the API, the leader checks and the definition checks.
//!
//! When the watch breaks (etcd unreachable, quorum lost: the client asks for a leader, so a member
//! without one cancels the watch) the task reconnects with backoff and starts over with a full
//! read, so no change is missed even if the history was compacted meanwhile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse, WatchOptions};
use tokio::sync::{mpsc, watch};

use super::commit::decode;
use super::{Fleet, Keys, Live, Remote, ReplicaRecord, Stored};

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Starts the watch task; it ends when `shutdown` fires or the control task is gone.
pub fn spawn(fleet: Arc<Fleet>, remote: mpsc::Sender<Remote>, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut backoff = BACKOFF_FIRST;
        loop {
            let outcome = tokio::select! {
                o = follow(&fleet, &remote, &mut backoff) => o,
                _ = shutdown.changed() => return,
            };
            match outcome {
                Ok(()) => return,
                Err(error) => {
                    fleet.down(&error);
                    tracing::debug!(%error, "fleet watch interrupted: reconnecting");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    });
}

/// One connection's worth: a full read, then the watch until it breaks. `Ok` only when the
/// control task is gone.
async fn follow(
    fleet: &Fleet,
    remote: &mpsc::Sender<Remote>,
    backoff: &mut Duration,
) -> Result<(), String> {
    let mut client = fleet.client().await?;
    let keys = fleet.keys();
    let prefixed = || Some(GetOptions::new().with_prefix());
    let read = Txn::new().and_then(vec![
        TxnOp::get(keys.routes(), prefixed()),
        TxnOp::get(keys.replicas(), prefixed()),
        TxnOp::get(keys.leaders(), prefixed()),
    ]);
    let response = client.txn(read).await.map_err(|e| e.to_string())?;
    let revision = response.header().map_or(0, |h| h.revision());
    let mut gets = response.op_responses().into_iter().map(|r| match r {
        TxnOpResponse::Get(g) => g.kvs().to_vec(),
        _ => Vec::new(),
    });
    let (routes_kvs, replicas_kvs, leaders_kvs) = (
        gets.next().unwrap_or_default(),
        gets.next().unwrap_or_default(),
        gets.next().unwrap_or_default(),
    );
    let routes: BTreeMap<String, Stored> = routes_kvs
        .iter()
        .filter_map(|kv| {
            let name = Keys::name_under(&keys.routes(), kv.key_str().ok()?)?;
            Some((name.to_string(), decode(kv)))
        })
        .collect();
    let mut live = Live::default();
    for kv in replicas_kvs.iter().chain(&leaders_kvs) {
        apply_live(keys, &mut live, kv, EventType::Put);
    }
    fleet.set_live(live.clone());
    if remote
        .send(Remote::Synced { revision, routes })
        .await
        .is_err()
    {
        return Ok(());
    }

    let from = Some(
        WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1),
    );
    let mut stream = client
        .watch(keys.routes(), from.clone())
        .await
        .map_err(|e| e.to_string())?;
    for prefix in [keys.replicas(), keys.leaders()] {
        stream
            .watch(prefix, from.clone())
            .await
            .map_err(|e| e.to_string())?;
    }
    fleet.up();
    *backoff = BACKOFF_FIRST;
    loop {
        let Some(message) = stream.message().await.map_err(|e| e.to_string())? else {
            return Err("the watch stream ended".into());
        };
        if message.canceled() {
            return Err(format!("watch cancelled: {}", message.cancel_reason()));
        }
        let mut changed_live = false;
        for event in message.events() {
            let Some(kv) = event.kv() else { continue };
            let Ok(key) = kv.key_str() else { continue };
            if let Some(route) = Keys::name_under(&keys.routes(), key) {
                let stored = Box::new(match event.event_type() {
                    EventType::Put => decode(kv),
                    EventType::Delete => Stored {
                        state: None,
                        mod_revision: 0,
                    },
                });
                let change = Remote::Changed {
                    route: route.to_string(),
                    stored,
                    revision: kv.mod_revision(),
                };
                if remote.send(change).await.is_err() {
                    return Ok(());
                }
            } else {
                if !changed_live {
                    live = Live::clone(&fleet.live());
                    changed_live = true;
                }
                apply_live(keys, &mut live, kv, event.event_type());
            }
        }
        if changed_live {
            fleet.set_live(live.clone());
        }
        fleet.up();
    }
}

/// Applies a put or delete of a presence or leader key to the live view.
fn apply_live(keys: &Keys, live: &mut Live, kv: &KeyValue, kind: EventType) {
    let Ok(key) = kv.key_str() else { return };
    if let Some(name) = Keys::name_under(&keys.replicas(), key) {
        match kind {
            EventType::Put => match serde_json::from_slice::<ReplicaRecord>(kv.value()) {
                Ok(record) => {
                    live.replicas.insert(name.to_string(), record);
                }
                Err(error) => tracing::warn!(replica = name, %error, "undecodable presence record"),
            },
            EventType::Delete => {
                live.replicas.remove(name);
            }
        }
    } else if let Some(route) = Keys::name_under(&keys.leaders(), key) {
        match (kind, kv.value_str()) {
            (EventType::Put, Ok(leader)) => {
                live.leaders.insert(route.to_string(), leader.to_string());
            }
            _ => {
                live.leaders.remove(route);
            }
        }
    }
}
