//! The control task: the single writer of the snapshot. The file watch, SIGHUP and the admin API
//! send it commands; it parses, validates, builds, stores, persists and replies, one command at a
//! time, so no two changes can interleave.

pub mod build;
pub mod load;
pub mod state_file;
pub mod watch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::Strategy;
use crate::config::{self, Config};
use crate::data::shared::Shared;
use crate::data::upstream::Clients;
use crate::state::{
    version_names, Abort, Overrides, Phase, RolloutProgress, RolloutState, RouteOverride,
};
use crate::state::{Evidence, FailReason};

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

/// An operator decision about one route.
#[derive(Debug, Clone)]
pub enum Action {
    /// Set every version's weight.
    SetWeights(BTreeMap<String, u32>),
    /// The last declared version (the canary) takes all traffic.
    Promote,
    /// Every version but the baseline (the first declared) to 0 at once; rules stop pinning them.
    Abort {
        /// Why, for the record.
        reason: String,
    },
    /// Lift an abort: the weights from before it return.
    Resume,
    /// Drop every override of the route (weights, abort, rollout): back to the file.
    Reset,
    /// Start the configured rollout at its first step.
    RolloutStart,
    /// Hold the rollout at its step.
    RolloutPause,
    /// Continue a paused rollout.
    RolloutResume,
    /// The analysis passed a full step: move to the next (from the analysis task).
    Advance {
        /// The step the analysis judged; a stale advance is ignored.
        from_step: usize,
    },
    /// The analysis found a regression (from the analysis task).
    AutoAbort {
        /// Which test failed.
        cause: FailReason,
        /// Both sides' figures.
        evidence: Evidence,
    },
    /// Blue/green: the standby takes all traffic, the active becomes standby.
    Switch,
}

impl Action {
    fn as_str(&self) -> &'static str {
        match self {
            Action::SetWeights(_) => "set-weights",
            Action::Promote => "promote",
            Action::Abort { .. } => "abort",
            Action::Resume => "resume",
            Action::Reset => "reset",
            Action::RolloutStart => "rollout-start",
            Action::RolloutPause => "rollout-pause",
            Action::RolloutResume => "rollout-resume",
            Action::Advance { .. } => "rollout-advance",
            Action::AutoAbort { .. } => "auto-abort",
            Action::Switch => "switch",
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

/// Why an action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// No such route.
    #[error("no route named {0:?}")]
    NoRoute(String),
    /// The request names versions or weights the route cannot take.
    #[error("{0}")]
    Invalid(String),
    /// The route's state does not allow it (aborted, single version...).
    #[error("{0}")]
    Conflict(String),
    /// The decision could not be made durable; nothing changed.
    #[error("cannot save the state file: {0}")]
    Persist(String),
    /// The control task is gone (shutting down).
    #[error("the proxy is shutting down")]
    Unavailable,
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
        reply: oneshot::Sender<Result<u64, String>>,
    },
    Act {
        route: String,
        action: Action,
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
    pub async fn reload(&self, source: ReloadSource) -> Result<u64, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Reload { source, reply })
            .await
            .map_err(|_| "the proxy is shutting down".to_string())?;
        rx.await
            .map_err(|_| "the proxy is shutting down".to_string())?
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
                action,
                actor: actor.to_string(),
                reply,
            })
            .await
            .map_err(|_| ActionError::Unavailable)?;
        rx.await.map_err(|_| ActionError::Unavailable)?
    }
}

/// The state the control task owns.
pub struct Control {
    file: Option<PathBuf>,
    loaded_text: Option<String>,
    config: Arc<Config>,
    overrides: Overrides,
    generation: u64,
    shared: Arc<Shared>,
    status: Arc<ArcSwap<ReloadStatus>>,
    resources: build::Resources,
    health_changes: Option<mpsc::Receiver<()>>,
}

pub use crate::state::now_unix_ms;

impl Control {
    /// Builds the first snapshot from `config` and the state file (if any), and returns the
    /// control state, the shared data-path state and the reload status.
    pub fn new(
        config: Config,
        file: Option<PathBuf>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> (Control, Arc<Shared>, Arc<ArcSwap<ReloadStatus>>) {
        let loaded_text = file.as_ref().and_then(|f| std::fs::read_to_string(f).ok());
        let overrides = match &config.state_file {
            None => Overrides::default(),
            Some(path) => {
                match state_file::load(path) {
                    state_file::Loaded::Missing => Overrides::default(),
                    state_file::Loaded::Found(mut o) => {
                        for route in o.prune(&config.routes) {
                            tracing::warn!(route, "saved override dropped: the route or its versions changed in the file");
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
        };
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
            generation: 1,
            shared: shared.clone(),
            status: status.clone(),
            resources,
            health_changes: Some(health_rx),
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
        self.resources.health.track(&self.config);
        tokio::spawn(async move {
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
                        let _ = reply.send(self.act(&route, action, &actor));
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

    fn reload(&mut self, source: ReloadSource) -> Result<u64, String> {
        let Some(file) = self.file.clone() else {
            return Err("this proxy was not started from a configuration file".into());
        };
        let text = std::fs::read_to_string(&file);
        if source == ReloadSource::FileWatch {
            if let (Ok(t), Some(loaded)) = (&text, &self.loaded_text) {
                if t == loaded {
                    // Back to the text in service (say, a bad edit undone): nothing to build.
                    let status = self.status.load();
                    if status.last_error.is_some() {
                        let mut cleared = ReloadStatus::clone(&status);
                        cleared.last_error = None;
                        cleared.last_error_at_unix_ms = None;
                        self.status.store(Arc::new(cleared));
                    }
                    return Ok(self.generation);
                }
            }
        }
        let parsed = text
            .map_err(|source| config::ConfigError::Read {
                file: file.clone(),
                source,
            })
            .and_then(|_| load::load(&file).map(|l| (l.config, l.text)));
        let (config, text) = match parsed {
            Ok(ok) => ok,
            Err(error) => {
                let error = error.to_string();
                tracing::error!(source = source.as_str(), %error, "reload rejected: the running configuration stays");
                self.shared
                    .metrics
                    .config_reloads
                    .with_label_values(&["error"])
                    .inc();
                let mut status = ReloadStatus::clone(&self.status.load());
                status.last_error = Some(error.clone());
                status.last_error_at_unix_ms = Some(now_unix_ms());
                self.status.store(Arc::new(status));
                return Err(error);
            }
        };
        if config.listeners != self.config.listeners || config.admin != self.config.admin {
            tracing::warn!("listener and admin changes take effect at the next restart");
        }
        for route in self.overrides.prune(&config.routes) {
            tracing::warn!(
                route,
                "override dropped: the route or its versions changed in the file"
            );
        }
        self.config = Arc::new(config);
        self.persist();
        self.loaded_text = Some(text);
        self.install();
        self.shared
            .metrics
            .config_reloads
            .with_label_values(&["ok"])
            .inc();
        self.status.store(Arc::new(ReloadStatus {
            file: Some(file),
            generation: self.generation,
            loaded_at_unix_ms: now_unix_ms(),
            last_error: None,
            last_error_at_unix_ms: None,
        }));
        tracing::info!(
            source = source.as_str(),
            generation = self.generation,
            "configuration reloaded"
        );
        Ok(self.generation)
    }

    /// Saves the overrides when a state file is configured; failures are logged.
    fn persist(&self) -> Option<String> {
        let path = self.config.state_file.as_ref()?;
        state_file::save(path, &self.overrides).err().map(|e| {
            let e = format!("{}: {e}", path.display());
            tracing::error!(error = %e, "cannot save the state file");
            e
        })
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

    fn act(&mut self, route_name: &str, action: Action, actor: &str) -> Result<u64, ActionError> {
        let route = self
            .config
            .routes
            .iter()
            .find(|r| r.name == route_name)
            .ok_or_else(|| ActionError::NoRoute(route_name.to_string()))?;
        let names = version_names(route);
        let before = self.weights_in_service(route_name);
        let current = self
            .overrides
            .routes
            .get(route_name)
            .filter(|o| o.applies_to(route))
            .cloned()
            .unwrap_or_else(|| RouteOverride {
                versions: names.clone(),
                weights: None,
                aborted: None,
                rollout: None,
            });
        let aborted = current.aborted.is_some();
        let state = RolloutState::of(Some(&current));
        let rolling = matches!(state, RolloutState::Progressing | RolloutState::Paused);
        let conflict =
            |what: &str| Err(ActionError::Conflict(format!("route {route_name} {what}")));
        let mut next = current.clone();
        let mut aborted_by: Option<&'static str> = None;
        match &action {
            Action::SetWeights(weights) => {
                if aborted {
                    return conflict("is aborted: resume it before setting weights");
                }
                if rolling {
                    return conflict("has a rollout in progress: pause, promote or abort it first");
                }
                next.weights = Some(weights_in_order(&names, weights)?);
            }
            Action::Promote => {
                if names.len() < 2 {
                    return conflict("has one version: nothing to promote");
                }
                if aborted {
                    return conflict("is aborted: resume it before promoting");
                }
                if let Some(progress) = next.rollout.as_mut() {
                    progress.phase = Phase::Promoted;
                    progress.step_started_unix_ms = now_unix_ms();
                } else {
                    let mut w = vec![0; names.len()];
                    w[names.len() - 1] = 100;
                    next.weights = Some(w);
                }
            }
            Action::Abort { reason } => {
                if names.len() < 2 {
                    return conflict("has one version: nothing to abort");
                }
                if !aborted {
                    next.aborted = Some(Abort {
                        reason: reason.clone(),
                        by: actor.to_string(),
                        at_unix_ms: now_unix_ms(),
                        cause: Some(FailReason::Manual),
                        evidence: None,
                    });
                    aborted_by = rolling.then_some("manual");
                }
            }
            Action::AutoAbort { cause, evidence } => {
                if aborted || !rolling {
                    // Stale: the rollout ended or was aborted while the analysis looked.
                    return Ok(self.generation);
                }
                next.aborted = Some(Abort {
                    reason: format!(
                        "analysis: {}",
                        evidence
                            .test
                            .clone()
                            .unwrap_or_else(|| cause.as_str().into())
                    ),
                    by: "analysis".into(),
                    at_unix_ms: now_unix_ms(),
                    cause: Some(*cause),
                    evidence: Some(evidence.clone()),
                });
                aborted_by = Some(cause.as_str());
            }
            Action::RolloutStart => {
                let Some(plan) = &route.rollout else {
                    return conflict("has no rollout configured");
                };
                if aborted {
                    return conflict("is aborted: resume or reset it before a new rollout");
                }
                if rolling {
                    return conflict("already has a rollout in progress");
                }
                next.weights = None;
                let now = now_unix_ms();
                next.rollout = Some(RolloutProgress {
                    phase: if plan.steps.len() == 1 {
                        Phase::Promoted
                    } else {
                        Phase::Progressing
                    },
                    step: 0,
                    step_started_unix_ms: now,
                    started_unix_ms: now,
                });
            }
            Action::RolloutPause => {
                if aborted || state != RolloutState::Progressing {
                    return conflict("has no progressing rollout to pause");
                }
                if let Some(p) = next.rollout.as_mut() {
                    p.phase = Phase::Paused;
                }
            }
            Action::RolloutResume => {
                if aborted || state != RolloutState::Paused {
                    return conflict("has no paused rollout to resume");
                }
                if let Some(p) = next.rollout.as_mut() {
                    p.phase = Phase::Progressing;
                    p.step_started_unix_ms = now_unix_ms();
                }
            }
            Action::Advance { from_step } => {
                let (Some(plan), Some(p)) = (&route.rollout, next.rollout.as_mut()) else {
                    return Ok(self.generation);
                };
                if aborted || p.phase != Phase::Progressing || p.step != *from_step {
                    return Ok(self.generation);
                }
                p.step += 1;
                p.step_started_unix_ms = now_unix_ms();
                if p.step + 1 >= plan.steps.len() {
                    p.step = plan.steps.len() - 1;
                    p.phase = Phase::Promoted;
                }
            }
            Action::Switch => {
                if route.strategy != Strategy::BlueGreen {
                    return conflict("is not a blue_green route");
                }
                if aborted {
                    return conflict("is aborted: resume or reset it before switching");
                }
                let snapshot = self.shared.snapshot.load();
                let index = snapshot.route_index(route_name).unwrap_or(0);
                let weights: Vec<u32> = snapshot.routes[index]
                    .versions
                    .iter()
                    .map(|v| v.weight)
                    .collect();
                let active = weights.iter().position(|w| *w > 0).unwrap_or(0);
                let standby = 1 - active.min(1);
                let standby_state = &snapshot.routes[index].versions[standby];
                if !self
                    .resources
                    .health
                    .any_healthy(&standby_state.endpoints, route.health_check.as_ref())
                {
                    return conflict(&format!(
                        "cannot switch: standby {} has no healthy endpoint",
                        standby_state.name
                    ));
                }
                let mut w = vec![0; 2];
                w[standby] = 100;
                next.weights = Some(w);
            }
            Action::Resume => {
                if !aborted {
                    return Err(ActionError::Conflict(format!(
                        "route {route_name} is not aborted"
                    )));
                }
                next.aborted = None;
            }
            Action::Reset => {
                next.weights = None;
                next.aborted = None;
                next.rollout = None;
            }
        }
        if next == current && !matches!(action, Action::Reset) {
            return Ok(self.generation);
        }

        let previous = self.overrides.clone();
        if next.weights.is_none() && next.aborted.is_none() && next.rollout.is_none() {
            self.overrides.routes.remove(route_name);
        } else {
            self.overrides.routes.insert(route_name.to_string(), next);
        }
        if let Some(error) = self.persist() {
            if !matches!(action, Action::Abort { .. } | Action::AutoAbort { .. }) {
                self.overrides = previous;
                return Err(ActionError::Persist(error));
            }
            // The kill switch applies even when the disk fails: stopping traffic comes first.
        }
        self.install();
        if let Some(reason) = aborted_by {
            self.shared
                .metrics
                .rollout_aborts
                .with_label_values(&[route_name, reason])
                .inc();
        }
        self.notify(route_name, &action, previous.routes.get(route_name));
        let after = self.weights_in_service(route_name);
        tracing::info!(
            target: "switchyard::audit",
            actor,
            action = action.as_str(),
            route = route_name,
            before,
            after,
            generation = self.generation,
            "operator action applied"
        );
        Ok(self.generation)
    }
}

/// Orders an API weight map by the route's versions, refusing missing, unknown or all-zero sets.
fn weights_in_order(
    names: &[String],
    weights: &BTreeMap<String, u32>,
) -> Result<Vec<u32>, ActionError> {
    let unknown: Vec<&str> = weights
        .keys()
        .filter(|k| !names.contains(k))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(ActionError::Invalid(format!(
            "unknown version(s) {} (this route has: {})",
            unknown.join(", "),
            names.join(", ")
        )));
    }
    let missing: Vec<&str> = names
        .iter()
        .filter(|n| !weights.contains_key(*n))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(ActionError::Invalid(format!(
            "every version needs a weight; missing: {}",
            missing.join(", ")
        )));
    }
    let ordered: Vec<u32> = names.iter().map(|n| weights[n]).collect();
    if ordered.iter().all(|w| *w == 0) {
        return Err(ActionError::Invalid(
            "all weights are 0: at least one version needs a positive weight".into(),
        ));
    }
    Ok(ordered)
}
