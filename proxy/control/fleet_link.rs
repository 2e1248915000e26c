//! The control task in a fleet: the same single writer, with etcd as the store of record.
//!
//! An action is computed by the same pure transition on the state at the revision last seen for
//! the route, then committed with a compare-and-swap on that revision ([`crate::fleet::Fleet::commit`]);
//! only a committed change is installed and acknowledged. A lost race answers 409 and installs the
//! winner's state; an unreachable etcd answers 503 and changes nothing, except for the safe
//! direction: an abort from this replica's own analysis applies here at once and is published
//! when etcd answers again: with the next change from the watch, or at the next retry
//! ([`PENDING_RETRY`] while the fleet store answers, slower while it looks down), whichever
//! comes first (a watch can outlive a short loss of quorum, so no change need ever come).
//! Changes made through other replicas arrive from the watch ([`Remote`]) and are installed
//! like local ones. The state file, when configured, caches the last state seen, so a restart
//! without etcd serves what the fleet last agreed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::store::StoreError;
use super::{stored_form, Action, ActionError, Conflict, Control, Told};
use crate::fleet::{AuditRecord, Commit, CommitError, Fleet, Remote, Stored};
use crate::state::RouteOverride;

/// How often the control task tries again to publish an abort that waits for etcd, while the
/// fleet store answers.
pub(super) const PENDING_RETRY: Duration = Duration::from_millis(500);

/// How often it tries while the store looks down: the presence beat and the watch find out
/// sooner when it is back, but the publication must not hang on them alone, and a try while
/// etcd is out of reach holds the control task for up to a request timeout.
const PENDING_RETRY_DOWN: Duration = Duration::from_secs(5);

/// What the control task keeps about the fleet.
pub(super) struct FleetLink {
    fleet: Arc<Fleet>,
    /// The watch's changes, taken by the control loop.
    pub(super) remote: Option<mpsc::Receiver<Remote>>,
    /// Per route: what was seen of its key.
    seen: BTreeMap<String, Seen>,
    /// Aborts of this replica's analysis that etcd has not taken yet, with the fleet's state of
    /// the route as last seen (the abort is applied again on top of it).
    pending: BTreeMap<String, (Action, Option<RouteOverride>)>,
    /// When the pending aborts were last tried.
    tried_at: Option<tokio::time::Instant>,
}

/// What the control task last saw of a route's key.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    /// What the next compare-and-swap compares: the key's mod_revision, 0 when absent.
    mod_revision: i64,
    /// The revision of the last change applied: older news is ignored.
    applied_at: i64,
}

/// Whether an action is new, or an abort this replica already applied on its own and now
/// publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Publishing {
    /// An action from the API or the analysis.
    New,
    /// A pending abort, tried again.
    Again,
}

/// Actions that move traffic towards a version: refused while live replicas disagree on the
/// route's definition. Aborts, pauses and resets are always allowed.
fn raises_traffic(action: &Action) -> bool {
    matches!(
        action,
        Action::SetWeights(_)
            | Action::Promote
            | Action::Switch
            | Action::RolloutStart
            | Action::RolloutResume
            | Action::Advance { .. }
            | Action::Resume
    )
}

impl Control {
    /// Makes this control task a member of `fleet`: changes commit to etcd, and `remote` brings
    /// the changes made elsewhere.
    pub fn join_fleet(&mut self, fleet: Arc<Fleet>, remote: mpsc::Receiver<Remote>) {
        self.fleet = Some(FleetLink {
            fleet,
            remote: Some(remote),
            seen: BTreeMap::new(),
            pending: BTreeMap::new(),
            tried_at: None,
        });
    }

    /// One action in a fleet: transition, compare-and-swap commit, then install and tell.
    pub(super) async fn act_fleet(
        &mut self,
        route_name: &str,
        action: Action,
        actor: &str,
    ) -> Result<u64, ActionError> {
        self.commit_in_fleet(route_name, action, actor, Publishing::New)
            .await
    }

    /// [`Control::act_fleet`], or the publication of an abort this replica took alone
    /// ([`Publishing::Again`]: told already, so only the commit is logged).
    async fn commit_in_fleet(
        &mut self,
        route_name: &str,
        action: Action,
        actor: &str,
        publishing: Publishing,
    ) -> Result<u64, ActionError> {
        let Some(fleet) = self.fleet.as_ref().map(|l| l.fleet.clone()) else {
            return self.act(route_name, action, actor);
        };
        if let Some(route) = self.config.routes.iter().find(|r| r.name == route_name) {
            let differing = fleet.differing(route);
            if raises_traffic(&action) && !differing.is_empty() {
                return Err(ActionError::Conflict {
                    route: route_name.to_string(),
                    conflict: Conflict::DefinitionDiffers(differing),
                });
            }
        }
        let Some((_, mut transition)) = self.prepare(route_name, &action, actor)? else {
            self.link().pending.remove(route_name);
            return Ok(self.generation);
        };
        if let (Action::AutoAbort { .. }, Some(abort)) = (&action, transition.next.aborted.as_mut())
        {
            abort.by = format!("analysis on {}", fleet.name());
        }
        let next = stored_form(transition.next);
        let previous = self.overrides.routes.get(route_name).cloned();
        let expected = self
            .link()
            .seen
            .get(route_name)
            .map_or(0, |s| s.mod_revision);
        let audit = AuditRecord::new(
            &fleet,
            actor,
            action.as_str(),
            route_name,
            previous.clone(),
            next.clone(),
        );
        let before = self.weights_in_service(route_name);
        let commit = Commit {
            route: route_name,
            expected,
            next: next.as_ref(),
            audit: &audit,
            as_leader: matches!(action, Action::Advance { .. }),
        };
        let outcome = fleet.commit(commit).await;
        let told = Told {
            action: &action,
            actor,
            aborted_rollout: transition.aborted_rollout,
            previous: previous.as_ref(),
            before,
        };
        match outcome {
            Ok(revision) => {
                let seen = Seen {
                    mod_revision: if next.is_some() { revision } else { 0 },
                    applied_at: revision,
                };
                self.link().seen.insert(route_name.to_string(), seen);
                self.link().pending.remove(route_name);
                self.set_route(route_name, next);
                self.install_and_cache();
                match publishing {
                    Publishing::New => self.tell(route_name, told),
                    // The metric and the webhook counted it when this replica took it alone.
                    Publishing::Again => self.audit(route_name, &told),
                }
                Ok(self.generation)
            }
            Err(CommitError::Conflict { current, revision }) => {
                if self.take_remote(route_name, *current, revision) {
                    self.install_and_cache();
                }
                Err(ActionError::Conflict {
                    route: route_name.to_string(),
                    conflict: Conflict::ChangedElsewhere,
                })
            }
            Err(CommitError::NotLeader(leader)) => Err(ActionError::Conflict {
                route: route_name.to_string(),
                conflict: Conflict::NotLeader(leader.unwrap_or_else(|| "no replica".into())),
            }),
            Err(CommitError::Unreachable(reason)) => {
                self.shared.metrics.state_persist_failures.inc();
                if !matches!(action, Action::AutoAbort { .. }) {
                    return Err(ActionError::Persist(StoreError::FleetUnreachable {
                        reason,
                    }));
                }
                // The safe direction: stop the failing canary here now, tell the fleet later.
                let link = self.link();
                link.pending
                    .insert(route_name.to_string(), (action.clone(), previous.clone()));
                link.tried_at = Some(tokio::time::Instant::now());
                self.set_route(route_name, next);
                self.install_and_cache();
                // A retry was told when the abort was taken: the metric, the webhook and the
                // audit log count it once, not once per try.
                if publishing == Publishing::New {
                    tracing::error!(route = route_name, %reason, "fleet store unreachable: canary held at 0 on this replica; the abort is published when etcd answers");
                    self.tell(route_name, told);
                }
                Ok(self.generation)
            }
        }
    }

    /// A change from the watch (or a full read after reconnecting): take it, publish the aborts
    /// that waited for etcd, install once.
    pub(super) async fn on_remote(&mut self, change: Remote) {
        let mut changed = false;
        let mut synced = false;
        match change {
            Remote::Synced { revision, routes } => {
                synced = true;
                let mut names: Vec<String> = self.overrides.routes.keys().cloned().collect();
                names.extend(self.link().seen.keys().cloned());
                names.extend(routes.keys().cloned());
                names.sort();
                names.dedup();
                for name in names {
                    let stored = routes.get(&name).cloned().unwrap_or(Stored {
                        state: None,
                        mod_revision: 0,
                    });
                    changed |= self.take_remote(&name, stored, revision);
                }
            }
            Remote::Changed {
                route,
                stored,
                revision,
            } => changed = self.take_remote(&route, *stored, revision),
        }
        changed |= self.publish_pending().await;
        if changed {
            self.install_and_cache();
        }
        if synced {
            if let Some(link) = &self.fleet {
                link.fleet.mark_installed();
            }
        }
    }

    /// True while an abort of this replica's analysis waits for etcd.
    pub(super) fn has_pending(&self) -> bool {
        self.fleet.as_ref().is_some_and(|l| !l.pending.is_empty())
    }

    /// The retry of the aborts that wait for etcd, when no change from the watch came to carry
    /// them: at every tick while the fleet store answers, else every [`PENDING_RETRY_DOWN`].
    pub(super) async fn retry_pending(&mut self) {
        let link = self.link();
        let up = link.fleet.status().up;
        let due = link
            .tried_at
            .is_none_or(|t| t.elapsed() >= PENDING_RETRY_DOWN);
        if (up || due) && self.publish_pending().await {
            self.install_and_cache();
        }
    }

    /// Publishes the aborts that waited for etcd, each on top of the fleet's state of its route
    /// (or keeps it pending while etcd is out of reach, or drops it when the fleet already ended
    /// the rollout). A lost race is tried again at once on the winner's state; one lost three
    /// times stays pending, with the canary still held at 0 here. True when the overrides
    /// changed (not installed yet).
    async fn publish_pending(&mut self) -> bool {
        self.link().tried_at = Some(tokio::time::Instant::now());
        let pending = std::mem::take(&mut self.link().pending);
        let changed = !pending.is_empty();
        for (route, (action, agreed)) in pending {
            // What this replica serves meanwhile: the abort applied on its own.
            let held = self.set_route(&route, agreed);
            let mut lost = 0;
            while lost < 3 {
                let again =
                    self.commit_in_fleet(&route, action.clone(), "analysis", Publishing::Again);
                match again.await {
                    Err(ActionError::Conflict {
                        conflict: Conflict::ChangedElsewhere,
                        ..
                    }) => lost += 1,
                    Err(error) => {
                        tracing::warn!(route, %error, "pending abort not published");
                        break;
                    }
                    Ok(_) => break,
                }
            }
            if lost == 3 {
                tracing::warn!(
                    route,
                    "pending abort lost three races in a row: trying again shortly"
                );
                let agreed = self.set_route(&route, held);
                self.link().pending.insert(route, (action, agreed));
            }
        }
        changed
    }

    /// Takes a route's state from etcd into the overrides (not installed yet) unless it is older
    /// than what was applied, or the route holds a local abort waiting for etcd. True when the
    /// overrides changed.
    fn take_remote(&mut self, route: &str, stored: Stored, revision: i64) -> bool {
        let link = self.link();
        let seen = link.seen.get(route).copied().unwrap_or_default();
        if revision <= seen.applied_at {
            return false;
        }
        link.seen.insert(
            route.to_string(),
            Seen {
                mod_revision: stored.mod_revision,
                applied_at: revision,
            },
        );
        if let Some((_, agreed)) = link.pending.get_mut(route) {
            // The canary stays at 0 here until the abort is applied again on top of this.
            *agreed = stored.state;
            return false;
        }
        let before = self.overrides.routes.get(route).cloned();
        self.set_route(route, stored.state);
        before != self.overrides.routes.get(route).cloned()
    }

    fn set_route(&mut self, route: &str, state: Option<RouteOverride>) -> Option<RouteOverride> {
        match state {
            Some(s) => self.overrides.routes.insert(route.to_string(), s),
            None => self.overrides.routes.remove(route),
        }
    }

    /// Installs the overrides and writes them to the cache (the state file), whose failure is
    /// logged only: etcd is the store of record.
    fn install_and_cache(&mut self) {
        self.install();
        if let Err(error) = self.store.save(&self.overrides) {
            tracing::warn!(%error, store = self.store.describe(), "fleet state not cached");
        }
    }

    fn link(&mut self) -> &mut FleetLink {
        self.fleet
            .as_mut()
            .expect("fleet methods run only on a control task that joined a fleet")
    }
}
