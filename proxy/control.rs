//! The control task: the single writer of the snapshot. The file watch, SIGHUP, the admin API and
//! the analysis send it commands; it handles one at a time, so no two changes interleave:
//!
//! command -> pure transition ([`apply::apply`]) -> persist ([`store::StateStore`]) -> install
//! (build a snapshot, swap it) -> reply.
//!
//! A change the store cannot make durable is refused and the state in service stays as it was.
//!
//! In a fleet (`fleet_link`) etcd is the store of record: an action commits with a
//! compare-and-swap on the route's revision before it is installed, and the changes made through
//! other replicas arrive from the watch as commands like any other; the state file is then a cache.

pub mod apply;
pub mod build;
mod fleet_link;
pub mod load;
mod reload;
pub mod state_file;
pub mod store;
pub mod watch;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::data::shared::Shared;
use crate::data::upstream::Clients;
pub use crate::state::now_unix_ms;
use crate::state::{Overrides, RolloutState, RouteOverride};
pub use apply::{Action, ActionError, Conflict};
pub use reload::ReloadError;
use store::StateStore;

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadSource {
    /// The file watch saw the directory change.
    FileWatch,
    /// SIGHUP.
    Signal,
    /// `POST /api/v1/reload`.
    Api,
}

impl ReloadSource {
    fn as_str(self) -> &'static str {
        match self {
            ReloadSource::FileWatch => "file-watch",
            ReloadSource::Signal => "sighup",
            ReloadSource::Api => "api",
        }
    }
}

impl From<crate::release::analysis::Finding> for Action {
    fn from(finding: crate::release::analysis::Finding) -> Action {
        use crate::release::analysis::Finding;
        match finding {
            Finding::Advance { from_step } => Action::Advance { from_step },
            Finding::Abort { cause, evidence } => Action::AutoAbort { cause, evidence },
        }
    }
}

/// The outcome of the last reload attempts, for `GET /api/v1/config`.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    /// The configuration file, when the proxy runs from one.
    pub file: Option<PathBuf>,
    /// Generation of the snapshot in service.
    pub generation: u64,
    /// When the configuration in service was loaded (ms since the Unix epoch).
    pub loaded_at_unix_ms: u64,
    /// The last failed reload's error, until a reload succeeds.
    pub last_error: Option<String>,
    /// When that failure happened.
    pub last_error_at_unix_ms: Option<u64>,
}

enum Command {
    Reload {
        source: ReloadSource,
        reply: oneshot::Sender<Result<u64, ReloadError>>,
    },
    Act {
        route: String,
        action: Box<Action>,
        actor: String,
        reply: oneshot::Sender<Result<u64, ActionError>>,
    },
}

/// Sends commands to the control task.
#[derive(Clone)]
pub struct ControlHandle {
    tx: mpsc::Sender<Command>,
}

impl ControlHandle {
    /// Reloads the configuration file; returns the new generation or the error that kept the
    /// running configuration in place.
    pub async fn reload(&self, source: ReloadSource) -> Result<u64, ReloadError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Reload { source, reply })
            .await
            .map_err(|_| ReloadError::Unavailable)?;
        rx.await.map_err(|_| ReloadError::Unavailable)?
    }

    /// True once the control task has stopped (the process is shutting down).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Applies an operator action; returns the new generation.
    pub async fn act(&self, route: &str, action: Action, actor: &str) -> Result<u64, ActionError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Act {
                route: route.to_string(),
                action: Box::new(action),
                actor: actor.to_string(),
                reply,
            })
            .await
            .map_err(|_| ActionError::Unavailable)?;
        rx.await.map_err(|_| ActionError::Unavailable)?
    }
}

/// What [`Control::tell`] reports about an applied action.
struct Told<'a> {
    action: &'a Action,
    actor: &'a str,
    aborted_rollout: Option<&'static str>,
    previous: Option<&'a RouteOverride>,
    /// `name=weight` in service before.
    before: String,
}

/// A route's next state as it is kept: `None` when nothing is left to override (back to the file).
fn stored_form(next: RouteOverride) -> Option<RouteOverride> {
    (next.weights.is_some() || next.aborted.is_some() || next.rollout.is_some()).then_some(next)
}

/// The state the control task owns.
pub struct Control {
    file: Option<PathBuf>,
    loaded_text: Option<String>,
    config: Arc<Config>,
    overrides: Overrides,
    store: Box<dyn StateStore>,
    generation: u64,
    shared: Arc<Shared>,
    status: Arc<ArcSwap<ReloadStatus>>,
    resources: build::Resources,
    health_changes: Option<mpsc::Receiver<()>>,
    /// The fleet this replica shares its release state with, when configured.
    fleet: Option<fleet_link::FleetLink>,
}

/// The overrides to start from: the state file's, pruned to the routes the file still has; with
/// every canary held at 0 when the state file cannot be read.
fn initial_overrides(config: &Config) -> Overrides {
    let Some(path) = &config.state_file else {
        return Overrides::default();
    };
    match state_file::load(path) {
        state_file::Loaded::Missing => Overrides::default(),
        state_file::Loaded::Found(mut o) => {
            for route in o.prune(&config.routes) {
                tracing::warn!(
                    route,
                    "saved override dropped: the route or its versions changed in the file"
                );
            }
            o
        }
        state_file::Loaded::Unreadable { error, set_aside } => {
            tracing::error!(
                %error,
                set_aside = ?set_aside,
                "state file unreadable: starting from the configuration file with every canary held at 0 until resumed"
            );
            Overrides::hold_all_canaries(
                &config.routes,
                &format!("state file unreadable at start: {error}"),
                now_unix_ms(),
            )
        }
    }
}

impl Control {
    /// Builds the first snapshot from `config` and the state file (if any), and returns the
    /// control state, the shared data-path state and the reload status.
    pub fn new(
        config: Config,
        file: Option<PathBuf>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> (Control, Arc<Shared>, Arc<ArcSwap<ReloadStatus>>) {
        let loaded_text = file.as_ref().and_then(|f| std::fs::read_to_string(f).ok());
        let overrides = initial_overrides(&config);
        let store = store::for_config(config.state_file.as_deref());
        let config = Arc::new(config);
        let (health_tx, health_rx) = mpsc::channel(1);
        let health = Arc::new(crate::release::health::Health::new(health_tx));
        let mirrors = Arc::new(crate::shadow::mirror::Mirrors::default());
        let resources = build::Resources {
            clients: Clients::default(),
            metrics: metrics.clone(),
            health,
            mirrors,
            limiters: Arc::default(),
        };
        let snapshot = build::build(config.clone(), overrides.clone(), 1, &resources);
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
        });
        let status = Arc::new(ArcSwap::from_pointee(ReloadStatus {
            file: file.clone(),
            generation: 1,
            loaded_at_unix_ms: now_unix_ms(),
            last_error: None,
            last_error_at_unix_ms: None,
        }));
        let control = Control {
            file,
            loaded_text,
            config,
            overrides,
            store,
            generation: 1,
            shared: shared.clone(),
            status: status.clone(),
            resources,
            health_changes: Some(health_rx),
            fleet: None,
        };
        (control, shared, status)
    }

    /// The dark-launch dispatchers and reports.
    pub fn mirrors(&self) -> Arc<crate::shadow::mirror::Mirrors> {
        self.resources.mirrors.clone()
    }

    /// Runs the task until every handle is dropped.
    pub fn spawn(mut self) -> ControlHandle {
        let (tx, mut rx) = mpsc::channel(64);
        let mut health_changes = self.health_changes.take();
        let mut remote = self.fleet.as_mut().and_then(|f| f.remote.take());
        self.resources.health.track(&self.config);
        tokio::spawn(async move {
            let mut retry = tokio::time::interval(fleet_link::PENDING_RETRY);
            retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let command = tokio::select! {
                    c = rx.recv() => c,
                    Some(()) = async {
                        match health_changes.as_mut() {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    } => {
                        // An endpoint changed state: rebuild so a version with no healthy
                        // endpoint loses its share.
                        self.install();
                        continue;
                    }
                    Some(change) = async {
                        match remote.as_mut() {
                            Some(r) => r.recv().await,
                            None => std::future::pending().await,
                        }
                    } => {
                        self.on_remote(change).await;
                        continue;
                    }
                    _ = retry.tick(), if self.has_pending() => {
                        // An abort that waits for etcd: no change from the watch need come to
                        // carry it (a watch can outlive a short loss of quorum).
                        self.retry_pending().await;
                        continue;
                    }
                };
                let Some(command) = command else { break };
                match command {
                    Command::Reload { source, reply } => {
                        let _ = reply.send(self.reload(source));
                    }
                    Command::Act {
                        route,
                        action,
                        actor,
                        reply,
                    } => {
                        let outcome = if self.fleet.is_some() {
                            self.act_fleet(&route, *action, &actor).await
                        } else {
                            self.act(&route, *action, &actor)
                        };
                        let _ = reply.send(outcome);
                    }
                }
            }
        });
        ControlHandle { tx }
    }

    fn install(&mut self) {
        self.generation += 1;
        let snapshot = build::build(
            self.config.clone(),
            self.overrides.clone(),
            self.generation,
            &self.resources,
        );
        for route in &self.config.routes {
            if let Some(plan) = &route.rollout {
                let o = self
                    .overrides
                    .routes
                    .get(&route.name)
                    .filter(|o| o.applies_to(route));
                let state = RolloutState::of(o);
                let m = &self.shared.metrics;
                m.rollout_state
                    .with_label_values(&[&route.name])
                    .set(state.code());
                let weight = snapshot
                    .route_index(&route.name)
                    .map_or(0, |i| snapshot.routes[i].versions[plan.canary].weight);
                m.rollout_canary_weight
                    .with_label_values(&[&route.name])
                    .set(i64::from(weight));
            }
        }
        self.shared.snapshot.store(Arc::new(snapshot));
        self.resources.health.track(&self.config);
    }

    /// Sends the rollout's webhook an event for aborts and promotions, off the control task.
    fn notify(&self, route_name: &str, action: &Action, before: Option<&RouteOverride>) {
        let Some(route) = self.config.routes.iter().find(|r| r.name == route_name) else {
            return;
        };
        let Some(url) = route.rollout.as_ref().and_then(|r| r.webhook.clone()) else {
            return;
        };
        let after = self.overrides.routes.get(route_name);
        let (was, now) = (RolloutState::of(before), RolloutState::of(after));
        let event = match (was, now) {
            (w, RolloutState::Aborted) if w != RolloutState::Aborted => "rollout_aborted",
            (w, RolloutState::Promoted) if w != RolloutState::Promoted => "rollout_promoted",
            _ => return,
        };
        let body = serde_json::json!({
            "event": event,
            "route": route_name,
            "action": action.as_str(),
            "at_unix_ms": now_unix_ms(),
            "abort": after.and_then(|o| o.aborted.as_ref()),
            "rollout": after.and_then(|o| o.rollout.as_ref()),
        });
        crate::release::webhook::spawn_post(url, body);
    }

    /// One action: the pure transition, then persist, install and tell (metrics, webhook, audit).
    fn act(&mut self, route_name: &str, action: Action, actor: &str) -> Result<u64, ActionError> {
        let Some((_, transition)) = self.prepare(route_name, &action, actor)? else {
            return Ok(self.generation);
        };
        let before = self.weights_in_service(route_name);
        let previous = self.commit(route_name, transition.next, &action)?;
        let told = Told {
            action: &action,
            actor,
            aborted_rollout: transition.aborted_rollout,
            previous: previous.as_ref(),
            before,
        };
        self.tell(route_name, told);
        Ok(self.generation)
    }

    /// The route's state in service and the transition `action` makes from it; `None` when the
    /// action changes nothing.
    fn prepare(
        &self,
        route_name: &str,
        action: &Action,
        actor: &str,
    ) -> Result<Option<(RouteOverride, apply::Transition)>, ActionError> {
        let config = self.config.clone();
        let route = config
            .routes
            .iter()
            .find(|r| r.name == route_name)
            .ok_or_else(|| ActionError::NoRoute(route_name.to_string()))?;
        let current = self
            .overrides
            .routes
            .get(route_name)
            .filter(|o| o.applies_to(route))
            .cloned()
            .unwrap_or_else(|| RouteOverride {
                versions: crate::state::version_names(route),
                ..RouteOverride::default()
            });
        let (in_service, healthy) = self.facts_in_service(route);
        let facts = apply::Facts {
            route,
            actor,
            now_unix_ms: now_unix_ms(),
            in_service: &in_service,
            healthy: &healthy,
        };
        Ok(apply::apply(&current, action, &facts)?.map(|t| (current, t)))
    }

    /// Tells about an applied action: the aborts metric, the webhook, the audit log.
    fn tell(&self, route_name: &str, told: Told<'_>) {
        if let Some(reason) = told.aborted_rollout {
            self.shared
                .metrics
                .rollout_aborts
                .with_label_values(&[route_name, reason])
                .inc();
        }
        self.notify(route_name, told.action, told.previous);
        self.audit(route_name, &told);
    }

    /// The audit log line of an applied action.
    fn audit(&self, route_name: &str, told: &Told<'_>) {
        tracing::info!(
            target: "switchyard::audit",
            actor = told.actor,
            action = told.action.as_str(),
            route = route_name,
            before = told.before,
            after = self.weights_in_service(route_name),
            generation = self.generation,
            "operator action applied"
        );
    }

    /// Persists the route's next state, then installs it; returns the route's previous state.
    /// When the store refuses, nothing changes, except for an abort decided by the analysis:
    /// stopping traffic to a failing canary comes first, so it applies in this process and the
    /// failure is logged and counted.
    fn commit(
        &mut self,
        route_name: &str,
        next: RouteOverride,
        action: &Action,
    ) -> Result<Option<RouteOverride>, ActionError> {
        let mut overrides = self.overrides.clone();
        let previous = match stored_form(next) {
            None => overrides.routes.remove(route_name),
            Some(next) => overrides.routes.insert(route_name.to_string(), next),
        };
        if let Err(error) = self.store.save(&overrides) {
            self.shared.metrics.state_persist_failures.inc();
            tracing::error!(%error, store = self.store.describe(), action = action.as_str(), "release state not saved");
            if !matches!(action, Action::AutoAbort { .. }) {
                return Err(ActionError::Persist(error));
            }
        }
        self.overrides = overrides;
        self.install();
        Ok(previous)
    }

    /// Each version's weight in service and whether it has an endpoint its health check lets
    /// through: what the transition may need to know.
    fn facts_in_service(&self, route: &crate::config::Route) -> (Vec<u32>, Vec<bool>) {
        let snapshot = self.shared.snapshot.load();
        let Some(index) = snapshot.route_index(&route.name) else {
            return (Vec::new(), Vec::new());
        };
        let versions = &snapshot.routes[index].versions;
        let in_service = versions.iter().map(|v| v.weight).collect();
        let healthy = versions
            .iter()
            .map(|v| {
                self.resources
                    .health
                    .any_healthy(&v.endpoints, route.health_check.as_ref())
            })
            .collect();
        (in_service, healthy)
    }

    /// `name=weight` of each version of a route in the snapshot in service, for audit events.
    fn weights_in_service(&self, route_name: &str) -> String {
        let snapshot = self.shared.snapshot.load();
        snapshot
            .route_index(route_name)
            .map(|i| {
                snapshot.routes[i]
                    .versions
                    .iter()
                    .map(|v| format!("{}={}", v.name, v.weight))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    }
}
