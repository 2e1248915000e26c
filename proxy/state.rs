//! Runtime overrides: operator decisions made through the API (weights, abort, promote) that sit
//! on top of the configuration file, and the rule that combines the two into effective weights.
//!
//! Precedence: the file defines routes and versions; an override lasts until `reset`, or until the
//! file changes that route's set of versions (then it no longer applies and is dropped). An abort
//! holds the route's canaries at 0 until an operator resumes it, whatever else changes.
//!
//! Pure data and pure functions: unit-tested without sockets or files.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::Route;

mod clock;
mod evidence;
pub use clock::now_unix_ms;
pub use evidence::{Evidence, FailReason, Share, Side};

/// All routes' overrides, by route name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Overrides {
    /// Per route.
    pub routes: BTreeMap<String, RouteOverride>,
}

/// The operator's decisions for one route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteOverride {
    /// The route's version names, in order, when the override was made.
    pub versions: Vec<String>,
    /// Weights set through the API, one per version, when any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Vec<u32>>,
    /// Set by an abort; cleared by resume or reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted: Option<Abort>,
    /// Progress of the route's rollout, once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutProgress>,
}

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutProgress {
    /// Progressing, paused or promoted.
    pub phase: Phase,
    /// Index into the rollout's steps.
    pub step: usize,
    /// When the current step began (ms since the Unix epoch).
    pub step_started_unix_ms: u64,
    /// When this rollout started: a new rollout starts a new analysis window.
    #[serde(default)]
    pub started_unix_ms: u64,
}

/// A rollout's phase; an aborted rollout is a progress with an abort on the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Stepping up as the analysis passes.
    Progressing,
    /// Held at its step by an operator; the analysis still aborts on a regression.
    Paused,
    /// The canary has all the traffic.
    Promoted,
}

/// The rollout state shown by the API and `switchyard_rollout_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Not started (or reset).
    Idle,
    /// Stepping up.
    Progressing,
    /// Held by an operator.
    Paused,
    /// The canary took all traffic.
    Promoted,
    /// Stopped: canary at 0 until resumed.
    Aborted,
}

impl RolloutState {
    /// The value of `switchyard_rollout_state`.
    pub fn code(self) -> i64 {
        match self {
            RolloutState::Idle => 0,
            RolloutState::Progressing => 1,
            RolloutState::Paused => 2,
            RolloutState::Promoted => 3,
            RolloutState::Aborted => 4,
        }
    }

    /// The state of a route with this override.
    pub fn of(o: Option<&RouteOverride>) -> RolloutState {
        match o {
            Some(RouteOverride {
                aborted: Some(_), ..
            }) => RolloutState::Aborted,
            Some(RouteOverride {
                rollout: Some(r), ..
            }) => match r.phase {
                Phase::Progressing => RolloutState::Progressing,
                Phase::Paused => RolloutState::Paused,
                Phase::Promoted => RolloutState::Promoted,
            },
            _ => RolloutState::Idle,
        }
    }
}

/// Why and when a route's canaries were stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Abort {
    /// What caused it.
    pub reason: String,
    /// Who did it: an API peer address, `state-file`, or the analysis.
    pub by: String,
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The test that failed, for an automatic abort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<FailReason>,
    /// Both sides' figures when the analysis aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
}

/// Where a version's effective weight comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightSource {
    /// The configuration file.
    File,
    /// A weight set through the API (or a promotion or blue/green switch).
    Api,
    /// The rollout's current step.
    Rollout,
    /// Held at 0: every endpoint of the version is down.
    Unhealthy,
    /// An abort holds it.
    Abort,
}

/// The weights a route serves with, and whether its canaries are held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// One weight per version, in declared order.
    pub weights: Vec<u32>,
    /// Where each weight comes from.
    pub sources: Vec<WeightSource>,
    /// Versions stopped by an abort: rules no longer pin requests to them.
    pub stopped: Vec<bool>,
}

/// The version names of a route, in declared order.
pub fn version_names(route: &Route) -> Vec<String> {
    route.versions.iter().map(|v| v.name.clone()).collect()
}

impl RouteOverride {
    /// True when this override was made for the route's current set of versions.
    pub fn applies_to(&self, route: &Route) -> bool {
        self.versions.len() == route.versions.len()
            && self
                .versions
                .iter()
                .zip(&route.versions)
                .all(|(a, b)| *a == b.name)
    }
}

/// The version that keeps the traffic on an abort: the rollout's baseline, else the first.
pub fn baseline_of(route: &Route) -> usize {
    route.rollout.as_ref().map_or(0, |r| r.baseline)
}

/// Combines the file's weights with an override, in order of precedence: an abort, a rollout,
/// API weights, the file.
///
/// An abort gives the baseline all traffic and stops every other version; a route with one version
/// cannot be aborted (the API refuses it). A rollout at step `s` gives the canary `steps[s]`
/// percent and the baseline the rest; other versions get nothing.
pub fn effective(route: &Route, o: Option<&RouteOverride>) -> Effective {
    let n = route.versions.len();
    let file: Vec<u32> = route.versions.iter().map(|v| v.weight).collect();
    let o = o.filter(|o| o.applies_to(route));
    let only = |weights: &[(usize, u32)], source| {
        let mut w = vec![0; n];
        for (i, v) in weights {
            w[*i] = *v;
        }
        Effective {
            weights: w,
            sources: vec![source; n],
            stopped: vec![false; n],
        }
    };
    match (o, &route.rollout) {
        (
            Some(RouteOverride {
                aborted: Some(_), ..
            }),
            _,
        ) if n > 1 => {
            let b = baseline_of(route);
            let mut e = only(&[(b, 100)], WeightSource::Abort);
            e.stopped = (0..n).map(|i| i != b).collect();
            e
        }
        (
            Some(RouteOverride {
                rollout: Some(progress),
                ..
            }),
            Some(plan),
        ) => {
            let canary = match progress.phase {
                Phase::Promoted => 100,
                _ => plan.steps.get(progress.step).copied().unwrap_or(100),
            };
            only(
                &[(plan.baseline, 100 - canary), (plan.canary, canary)],
                WeightSource::Rollout,
            )
        }
        (
            Some(RouteOverride {
                weights: Some(w), ..
            }),
            _,
        ) if w.len() == n => Effective {
            weights: w.clone(),
            sources: vec![WeightSource::Api; n],
            stopped: vec![false; n],
        },
        _ => Effective {
            weights: file,
            sources: vec![WeightSource::File; n],
            stopped: vec![false; n],
        },
    }
}

impl Overrides {
    /// Drops overrides of routes that are gone or whose versions changed. Returns the dropped
    /// route names, for the log.
    pub fn prune(&mut self, routes: &[Route]) -> Vec<String> {
        let mut dropped = Vec::new();
        self.routes.retain(|name, o| {
            let keep = routes.iter().any(|r| r.name == *name && o.applies_to(r));
            if !keep {
                dropped.push(name.clone());
            }
            keep
        });
        dropped
    }

    /// Holds every canary at 0 on routes whose file weights give a non-baseline version traffic:
    /// used when the state file cannot be read, so a canary that had been aborted is never
    /// silently given users again.
    pub fn hold_all_canaries(routes: &[Route], reason: &str, at_unix_ms: u64) -> Overrides {
        let mut o = Overrides::default();
        for r in routes {
            if r.versions.iter().skip(1).any(|v| v.weight > 0) {
                o.routes.insert(
                    r.name.clone(),
                    RouteOverride {
                        versions: version_names(r),
                        weights: None,
                        aborted: Some(Abort {
                            reason: reason.to_string(),
                            by: "state-file".into(),
                            at_unix_ms,
                            cause: None,
                            evidence: None,
                        }),
                        rollout: None,
                    },
                );
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> Route {
        let c = crate::config::parse(
            std::path::Path::new("t.yaml"),
            r#"
listeners: [{ name: p, addr: "127.0.0.1:0" }]
routes:
  - name: shop
    versions:
      - { name: stable, endpoints: ["127.0.0.1:1"], weight: 95 }
      - { name: canary, endpoints: ["127.0.0.1:2"], weight: 5 }
"#,
        )
        .unwrap();
        c.routes[0].clone()
    }

    fn abort() -> Abort {
        Abort {
            reason: "r".into(),
            by: "t".into(),
            at_unix_ms: 1,
            cause: None,
            evidence: None,
        }
    }

    #[test]
    fn file_weights_without_override() {
        let e = effective(&route(), None);
        assert_eq!(e.weights, [95, 5]);
        assert_eq!(e.sources, [WeightSource::File; 2]);
    }

    #[test]
    fn api_weights_override_the_file() {
        let o = RouteOverride {
            versions: vec!["stable".into(), "canary".into()],
            weights: Some(vec![50, 50]),
            aborted: None,
            rollout: None,
        };
        assert_eq!(effective(&route(), Some(&o)).weights, [50, 50]);
    }

    #[test]
    fn abort_wins_over_api_weights_and_stops_rules() {
        let o = RouteOverride {
            versions: vec!["stable".into(), "canary".into()],
            weights: Some(vec![50, 50]),
            aborted: Some(abort()),
            rollout: None,
        };
        let e = effective(&route(), Some(&o));
        assert_eq!(e.weights, [100, 0]);
        assert_eq!(e.stopped, [false, true]);
    }

    #[test]
    fn an_override_for_other_versions_does_not_apply_and_is_pruned() {
        let o = RouteOverride {
            versions: vec!["stable".into(), "canary-v2".into()],
            weights: Some(vec![0, 100]),
            aborted: None,
            rollout: None,
        };
        assert_eq!(effective(&route(), Some(&o)).weights, [95, 5]);
        let mut all = Overrides::default();
        all.routes.insert("shop".into(), o);
        all.routes.insert("gone".into(), RouteOverride::default());
        let mut dropped = all.prune(&[route()]);
        dropped.sort();
        assert_eq!(dropped, ["gone", "shop"]);
        assert!(all.routes.is_empty());
    }

    #[test]
    fn unreadable_state_holds_canaries_that_the_file_gives_traffic() {
        let o = Overrides::hold_all_canaries(&[route()], "corrupt", 7);
        assert_eq!(effective(&route(), o.routes.get("shop")).weights, [100, 0]);
    }
}
