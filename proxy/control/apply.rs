//! The pure transition of a route's release state: `apply(current, action, facts)` returns the
//! next state or why the action is refused. No I/O, no clock, no snapshot: what the transition
//! needs to know (the time, the weights in service, which versions have a healthy endpoint) comes
//! in `Facts`, so every rule is a row in a unit-test table.

use std::collections::BTreeMap;

use crate::config::{Route, Strategy};
use crate::state::{
    Abort, Evidence, FailReason, Phase, RolloutProgress, RolloutState, RouteOverride,
};

/// An operator (or analysis) decision about one route.
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
    /// The action's name in audit records and webhooks.
    pub fn as_str(&self) -> &'static str {
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

/// Why a route's state does not allow an action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// Weights cannot be set on an aborted route.
    #[error("is aborted: resume it before setting weights")]
    AbortedSetWeights,
    /// Weights cannot be set while a rollout moves them.
    #[error("has a rollout in progress: pause, promote or abort it first")]
    RollingSetWeights,
    /// Promote and abort need a second version.
    #[error("has one version: nothing to {0}")]
    OneVersion(&'static str),
    /// An aborted route is not promoted.
    #[error("is aborted: resume it before promoting")]
    AbortedPromote,
    /// `rollout start` on a route without a rollout section.
    #[error("has no rollout configured")]
    NoRollout,
    /// `rollout start` on an aborted route.
    #[error("is aborted: resume or reset it before a new rollout")]
    AbortedRolloutStart,
    /// `rollout start` twice.
    #[error("already has a rollout in progress")]
    AlreadyRolling,
    /// `rollout pause` without a progressing rollout.
    #[error("has no progressing rollout to pause")]
    NothingToPause,
    /// `rollout resume` without a paused rollout.
    #[error("has no paused rollout to resume")]
    NothingToResume,
    /// `switch` on a weighted or canary route.
    #[error("is not a blue_green route")]
    NotBlueGreen,
    /// `switch` on an aborted route.
    #[error("is aborted: resume or reset it before switching")]
    AbortedSwitch,
    /// `switch` towards a standby that would fail every request.
    #[error("cannot switch: standby {0} has no healthy endpoint")]
    StandbyUnhealthy(String),
    /// `resume` of a route that is not aborted.
    #[error("is not aborted")]
    NotAborted,
    /// In a fleet: another replica or operator changed the route since this replica read it.
    #[error(
        "was changed meanwhile through another replica or by the rollout leader: nothing was \
         applied; the route's current state is in this answer"
    )]
    ChangedElsewhere,
    /// In a fleet: live replicas define the route differently (a configuration update half-way).
    #[error(
        "is defined differently on live replica(s) {}: rollouts and weight changes wait until \
         every replica runs the same definition", .0.join(", ")
    )]
    DefinitionDiffers(Vec<String>),
    /// In a fleet: a rollout decision from a replica that no longer leads the rollout.
    #[error("has its rollout led by {0}, not by this replica")]
    NotLeader(String),
}

/// Why an action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// No such route.
    #[error("no route named {0:?}")]
    NoRoute(String),
    /// The weights name versions the route does not have.
    #[error("unknown version(s) {} (this route has: {})", .unknown.join(", "), .known.join(", "))]
    UnknownVersions {
        /// The names not in the route.
        unknown: Vec<String>,
        /// The route's versions.
        known: Vec<String>,
    },
    /// The weights leave out some of the route's versions.
    #[error("every version needs a weight; missing: {}", .0.join(", "))]
    MissingWeights(Vec<String>),
    /// Every weight is 0.
    #[error("all weights are 0: at least one version needs a positive weight")]
    AllZero,
    /// The route's state does not allow it.
    #[error("route {route} {conflict}")]
    Conflict {
        /// The route.
        route: String,
        /// Why not.
        conflict: Conflict,
    },
    /// The decision could not be made durable; nothing changed.
    #[error(transparent)]
    Persist(#[from] crate::control::store::StoreError),
    /// The control task is gone (shutting down).
    #[error("the proxy is shutting down")]
    Unavailable,
}

/// What the transition needs to know besides the state and the action.
pub struct Facts<'a> {
    /// The route as the configuration file defines it.
    pub route: &'a Route,
    /// Who acts, for the abort record.
    pub actor: &'a str,
    /// The release clock (ms since the Unix epoch).
    pub now_unix_ms: u64,
    /// Each version's weight in the snapshot in service.
    pub in_service: &'a [u32],
    /// Whether each version has an endpoint that its health check (if any) lets through.
    pub healthy: &'a [bool],
}

/// A transition that changes the state.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The route's next state.
    pub next: RouteOverride,
    /// Set when the transition aborts a rollout: `manual` or the failing test's label.
    pub aborted_rollout: Option<&'static str>,
}

/// The next state of a route after `action`, `Ok(None)` when nothing changes (a repeated or stale
/// action), or why it is refused.
pub fn apply(
    current: &RouteOverride,
    action: &Action,
    facts: &Facts<'_>,
) -> Result<Option<Transition>, ActionError> {
    let route = facts.route;
    let refuse = |conflict| ActionError::Conflict {
        route: route.name.clone(),
        conflict,
    };
    let aborted = current.aborted.is_some();
    let state = RolloutState::of(Some(current));
    let rolling = matches!(state, RolloutState::Progressing | RolloutState::Paused);
    let mut next = current.clone();
    let mut aborted_rollout = None;
    match action {
        Action::SetWeights(weights) => {
            if aborted {
                return Err(refuse(Conflict::AbortedSetWeights));
            }
            if rolling {
                return Err(refuse(Conflict::RollingSetWeights));
            }
            next.weights = Some(weights_in_order(&current.versions, weights)?);
        }
        Action::Promote => promote(&mut next, aborted, facts).map_err(refuse)?,
        Action::Abort { reason } => {
            if current.versions.len() < 2 {
                return Err(refuse(Conflict::OneVersion("abort")));
            }
            if !aborted {
                next.aborted = Some(Abort {
                    reason: reason.clone(),
                    by: facts.actor.to_string(),
                    at_unix_ms: facts.now_unix_ms,
                    cause: Some(FailReason::Manual),
                    evidence: None,
                });
                aborted_rollout = rolling.then_some("manual");
            }
        }
        Action::AutoAbort { cause, evidence } => {
            if aborted || !rolling {
                // Stale: the rollout ended or was aborted while the analysis looked.
                return Ok(None);
            }
            next.aborted = Some(Abort {
                reason: format!(
                    "analysis: {}",
                    evidence.test.as_deref().unwrap_or(cause.as_str())
                ),
                by: "analysis".into(),
                at_unix_ms: facts.now_unix_ms,
                cause: Some(*cause),
                evidence: Some(evidence.clone()),
            });
            aborted_rollout = Some(cause.as_str());
        }
        Action::RolloutStart => {
            start_rollout(&mut next, aborted, rolling, facts).map_err(refuse)?
        }
        Action::RolloutPause => {
            if aborted || state != RolloutState::Progressing {
                return Err(refuse(Conflict::NothingToPause));
            }
            if let Some(p) = next.rollout.as_mut() {
                p.phase = Phase::Paused;
            }
        }
        Action::RolloutResume => {
            if aborted || state != RolloutState::Paused {
                return Err(refuse(Conflict::NothingToResume));
            }
            if let Some(p) = next.rollout.as_mut() {
                p.phase = Phase::Progressing;
                p.step_started_unix_ms = facts.now_unix_ms;
            }
        }
        Action::Advance { from_step } => advance(&mut next, aborted, *from_step, facts),
        Action::Switch => switch(&mut next, aborted, facts).map_err(refuse)?,
        Action::Resume => {
            if !aborted {
                return Err(refuse(Conflict::NotAborted));
            }
            next.aborted = None;
        }
        Action::Reset => {
            next.weights = None;
            next.aborted = None;
            next.rollout = None;
        }
    }
    if next == *current && !matches!(action, Action::Reset) {
        return Ok(None);
    }
    Ok(Some(Transition {
        next,
        aborted_rollout,
    }))
}

fn promote(next: &mut RouteOverride, aborted: bool, facts: &Facts<'_>) -> Result<(), Conflict> {
    let n = next.versions.len();
    if n < 2 {
        return Err(Conflict::OneVersion("promote"));
    }
    if aborted {
        return Err(Conflict::AbortedPromote);
    }
    if let Some(progress) = next.rollout.as_mut() {
        progress.phase = Phase::Promoted;
        progress.step_started_unix_ms = facts.now_unix_ms;
    } else {
        let mut w = vec![0; n];
        w[n - 1] = 100;
        next.weights = Some(w);
    }
    Ok(())
}

fn start_rollout(
    next: &mut RouteOverride,
    aborted: bool,
    rolling: bool,
    facts: &Facts<'_>,
) -> Result<(), Conflict> {
    let Some(plan) = &facts.route.rollout else {
        return Err(Conflict::NoRollout);
    };
    if aborted {
        return Err(Conflict::AbortedRolloutStart);
    }
    if rolling {
        return Err(Conflict::AlreadyRolling);
    }
    next.weights = None;
    next.rollout = Some(RolloutProgress {
        phase: if plan.steps.len() == 1 {
            Phase::Promoted
        } else {
            Phase::Progressing
        },
        step: 0,
        step_started_unix_ms: facts.now_unix_ms,
        started_unix_ms: facts.now_unix_ms,
    });
    Ok(())
}

/// Moves a progressing rollout past `from_step`; a stale advance (another step, paused, aborted)
/// changes nothing.
fn advance(next: &mut RouteOverride, aborted: bool, from_step: usize, facts: &Facts<'_>) {
    let (Some(plan), Some(p)) = (&facts.route.rollout, next.rollout.as_mut()) else {
        return;
    };
    if aborted || p.phase != Phase::Progressing || p.step != from_step {
        return;
    }
    p.step += 1;
    p.step_started_unix_ms = facts.now_unix_ms;
    if p.step + 1 >= plan.steps.len() {
        p.step = plan.steps.len() - 1;
        p.phase = Phase::Promoted;
    }
}

fn switch(next: &mut RouteOverride, aborted: bool, facts: &Facts<'_>) -> Result<(), Conflict> {
    if facts.route.strategy != Strategy::BlueGreen {
        return Err(Conflict::NotBlueGreen);
    }
    if aborted {
        return Err(Conflict::AbortedSwitch);
    }
    let active = facts.in_service.iter().position(|w| *w > 0).unwrap_or(0);
    let standby = 1 - active.min(1);
    if !facts.healthy.get(standby).copied().unwrap_or(false) {
        let name = next.versions.get(standby).cloned().unwrap_or_default();
        return Err(Conflict::StandbyUnhealthy(name));
    }
    let mut w = vec![0; 2];
    w[standby] = 100;
    next.weights = Some(w);
    Ok(())
}

/// Orders an API weight map by the route's versions, refusing missing, unknown or all-zero sets.
fn weights_in_order(
    names: &[String],
    weights: &BTreeMap<String, u32>,
) -> Result<Vec<u32>, ActionError> {
    let unknown: Vec<String> = weights
        .keys()
        .filter(|k| !names.contains(k))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(ActionError::UnknownVersions {
            unknown,
            known: names.to_vec(),
        });
    }
    let missing: Vec<String> = names
        .iter()
        .filter(|n| !weights.contains_key(*n))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(ActionError::MissingWeights(missing));
    }
    let ordered: Vec<u32> = names.iter().map(|n| weights[n]).collect();
    if ordered.iter().all(|w| *w == 0) {
        return Err(ActionError::AllZero);
    }
    Ok(ordered)
}

#[cfg(test)]
mod tests;
