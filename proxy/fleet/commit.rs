//! Committing one route's next state: an etcd transaction that compares the route key's
//! mod_revision with the one the change was computed from, and writes the state and its audit
//! record together. Two writers never overwrite each other silently: the loser's transaction
//! fails and it gets the current state back. A decision of the rollout analysis is also fenced on
//! the leader key still naming this replica.

use std::sync::atomic::{AtomicU64, Ordering};

use etcd_client::{Compare, CompareOp, KeyValue, Txn, TxnOp, TxnOpResponse};
use serde::Serialize;

use super::{Fleet, Stored};
use crate::state::{now_unix_ms, RouteOverride};

/// One audit record: who changed which route how, written with the change.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// When (ms since the Unix epoch).
    pub at_unix_ms: u64,
    /// The replica that committed it.
    pub replica: String,
    /// An API peer address, or `analysis`.
    pub actor: String,
    /// The action (`set-weights`, `rollout-advance`...).
    pub action: String,
    /// The route.
    pub route: String,
    /// The route's state before.
    pub before: Option<RouteOverride>,
    /// The route's state after (`null`: back to the file).
    pub after: Option<RouteOverride>,
}

/// A change to commit.
pub struct Commit<'a> {
    /// The route.
    pub route: &'a str,
    /// The mod_revision the change was computed from (0: the key was absent).
    pub expected: i64,
    /// The next state; `None` deletes the key (back to the file).
    pub next: Option<&'a RouteOverride>,
    /// The audit record.
    pub audit: &'a AuditRecord,
    /// Only if this replica still leads the route's rollout.
    pub as_leader: bool,
}

/// Why a commit did not happen.
#[derive(Debug)]
pub enum CommitError {
    /// The route changed since it was read; this is its state now.
    Conflict {
        /// The current state.
        current: Box<Stored>,
        /// The revision it was read at.
        revision: i64,
    },
    /// A leader's decision, but another replica leads now (or none).
    NotLeader(Option<String>),
    /// etcd did not answer, or has no quorum.
    Unreachable(String),
}

static AUDIT_SEQ: AtomicU64 = AtomicU64::new(0);

/// The state stored in a key-value pair; an undecodable value counts as absent (and is logged),
/// so a good write can replace it.
pub fn decode(kv: &KeyValue) -> Stored {
    let state = match serde_json::from_slice::<RouteOverride>(kv.value()) {
        Ok(o) => Some(o),
        Err(error) => {
            tracing::error!(key = ?kv.key_str(), %error, "fleet: undecodable route state ignored");
            None
        }
    };
    Stored {
        state,
        mod_revision: kv.mod_revision(),
    }
}

impl Fleet {
    /// Commits `c`; returns the revision of the write.
    pub async fn commit(&self, c: Commit<'_>) -> Result<i64, CommitError> {
        let result = self.try_commit(&c).await;
        match &result {
            Err(CommitError::Unreachable(e)) => self.down(e),
            _ => self.up(),
        }
        result
    }

    async fn try_commit(&self, c: &Commit<'_>) -> Result<i64, CommitError> {
        let mut client = self.client().await.map_err(CommitError::Unreachable)?;
        let key = self.keys.route(c.route);
        let leader = self.keys.leader(c.route);
        let mut when = vec![Compare::mod_revision(
            key.clone(),
            CompareOp::Equal,
            c.expected,
        )];
        if c.as_leader {
            when.push(Compare::value(
                leader.clone(),
                CompareOp::Equal,
                self.name(),
            ));
        }
        let audit_key = self.keys.audit_record(
            c.audit.at_unix_ms,
            self.name(),
            AUDIT_SEQ.fetch_add(1, Ordering::Relaxed),
        );
        let audit = serde_json::to_vec(c.audit).unwrap_or_default();
        let write = match c.next {
            Some(next) => TxnOp::put(
                key.clone(),
                serde_json::to_vec(next).unwrap_or_default(),
                None,
            ),
            None => TxnOp::delete(key.clone(), None),
        };
        let txn = Txn::new()
            .when(when)
            .and_then(vec![write, TxnOp::put(audit_key, audit, None)])
            .or_else(vec![TxnOp::get(key, None), TxnOp::get(leader, None)]);
        let response = client
            .txn(txn)
            .await
            .map_err(|e| CommitError::Unreachable(e.to_string()))?;
        let revision = response.header().map_or(0, |h| h.revision());
        if response.succeeded() {
            return Ok(revision);
        }
        let mut gets = response.op_responses().into_iter().filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g),
            _ => None,
        });
        let current = gets.next();
        let leader_now = gets.next();
        let current = current
            .and_then(|g| g.kvs().first().map(decode))
            .unwrap_or(Stored {
                state: None,
                mod_revision: 0,
            });
        if current.mod_revision == c.expected {
            // The state compare held, so the leader fence failed.
            let name = leader_now.and_then(|g| {
                g.kvs()
                    .first()
                    .and_then(|kv| kv.value_str().ok().map(String::from))
            });
            return Err(CommitError::NotLeader(name));
        }
        Err(CommitError::Conflict {
            current: Box::new(current),
            revision,
        })
    }
}

impl AuditRecord {
    /// A record of `action` on `route` by `actor`, committed by this replica now.
    pub fn new(
        fleet: &Fleet,
        actor: &str,
        action: &str,
        route: &str,
        before: Option<RouteOverride>,
        after: Option<RouteOverride>,
    ) -> AuditRecord {
        AuditRecord {
            at_unix_ms: now_unix_ms(),
            replica: fleet.name().to_string(),
            actor: actor.to_string(),
            action: action.to_string(),
            route: route.to_string(),
            before,
            after,
        }
    }
}
