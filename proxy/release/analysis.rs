//! Canary analysis: per-version counts fed by every request, sliding windows over them, and the
//! statistical judgement of a canary against its baseline, run by one background task.
//!
//! Every `interval` the task copies the cumulative counts of each rolling route's baseline and
//! canary, subtracts the copy from `window` ago, and judges the difference ([`stats::judge`]). A
//! failure, or a canary with no usable endpoint, sends an abort to the control task; a pass after
//! `step_interval` at the current step sends an advance. The task only reads and sends commands:
//! the control task stays the single writer.

pub mod stats;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::state::{Phase, RolloutState};
use tokio::sync::mpsc;

use crate::data::shared::Shared;
use crate::state::now_unix_ms;
pub use crate::state::Share;
use stats::{judge, Counts, Evidence, FailReason, Verdict};

/// How often the task wakes to see which routes are due for a look.
const TICK: Duration = Duration::from_millis(250);

/// The last look at a route, for the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Look {
    /// When (ms since the Unix epoch).
    pub at_unix_ms: u64,
    /// Pass, hold or fail.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// The window's figures.
    pub evidence: Evidence,
}

/// The last look at each rolling route, shared with the admin API.
pub type Looks = Arc<ArcSwap<HashMap<String, Look>>>;

struct RouteHistory {
    /// The rollout these samples belong to (its start time).
    rollout: u64,
    samples: VecDeque<(Instant, Counts, Counts)>,
    last_look: Option<Instant>,
}

/// What the analysis asks the control task to do with a route's rollout.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// The canary passed a full step: move to the next (ignored if the step changed meanwhile).
    Advance {
        /// The step the analysis judged.
        from_step: usize,
    },
    /// The canary regressed: abort.
    Abort {
        /// Which test failed.
        cause: FailReason,
        /// Both sides' figures.
        evidence: Evidence,
    },
}

/// A rollout's window: the baseline's and the canary's counts over the same span.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    /// The baseline's counts.
    pub baseline: Counts,
    /// The canary's counts.
    pub canary: Counts,
}

/// What this replica may decide about a rollout, and on which numbers.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// A single proxy: decide on the local window.
    Alone,
    /// Lead the fleet's analysis of the route: decide on the live replicas' windows summed.
    Lead {
        /// The sum.
        total: Box<Window>,
        /// Each replica's part of it.
        shares: Vec<Share>,
    },
    /// Another replica leads: look (for the API) but decide nothing.
    Follow,
    /// The fleet store is unreachable: the only decision left is the safe one, an abort on the
    /// local window; never an advance.
    CutOff,
}

/// Where windows are shared beyond this replica (the fleet); `None` for a single proxy.
pub trait Exchange: Send + Sync {
    /// Shares this replica's window of a route's rollout (started at `rollout`), and says what
    /// this replica may decide. Called from the analysis task: must not block.
    fn exchange(&self, route: &str, rollout: u64, local: &Window) -> Role;
}

/// Starts the analysis task; it ends when `shutdown` fires. Findings leave through `findings`
/// (route name, finding): the control task applies them, so it stays the single writer.
pub fn spawn(
    shared: Arc<Shared>,
    findings: mpsc::Sender<(String, Finding)>,
    shutdown: watch::Receiver<bool>,
) -> Looks {
    spawn_with(shared, findings, shutdown, None)
}

/// [`spawn`], sharing windows through `exchange` (a fleet).
pub fn spawn_with(
    shared: Arc<Shared>,
    findings: mpsc::Sender<(String, Finding)>,
    mut shutdown: watch::Receiver<bool>,
    exchange: Option<Arc<dyn Exchange>>,
) -> Looks {
    let looks: Looks = Arc::default();
    let published = looks.clone();
    tokio::spawn(async move {
        let mut history: HashMap<String, RouteHistory> = HashMap::new();
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => break,
            }
            let actions = look_at_all(&shared, &mut history, &published, exchange.as_deref());
            for finding in actions {
                if findings.send(finding).await.is_err() {
                    return;
                }
            }
        }
    });
    looks
}

fn look_at_all(
    shared: &Shared,
    history: &mut HashMap<String, RouteHistory>,
    published: &Looks,
    exchange: Option<&dyn Exchange>,
) -> Vec<(String, Finding)> {
    let snapshot = shared.snapshot.load();
    let now = Instant::now();
    let mut actions = Vec::new();
    let mut looks = HashMap::clone(&published.load());
    let mut live = Vec::new();
    for (i, route) in snapshot.config.routes.iter().enumerate() {
        let Some(plan) = &route.rollout else { continue };
        let o = snapshot
            .overrides
            .routes
            .get(&route.name)
            .filter(|o| o.applies_to(route));
        let state = RolloutState::of(o);
        if !matches!(state, RolloutState::Progressing | RolloutState::Paused) {
            history.remove(&route.name);
            continue;
        }
        live.push(route.name.clone());
        let Some(progress) = o.and_then(|o| o.rollout.as_ref()) else {
            continue;
        };
        let versions = &snapshot.routes[i].versions;
        let (baseline, canary) = (&versions[plan.baseline], &versions[plan.canary]);

        let h = history
            .entry(route.name.clone())
            .or_insert_with(|| RouteHistory {
                rollout: progress.started_unix_ms,
                samples: VecDeque::new(),
                last_look: None,
            });
        if h.rollout != progress.started_unix_ms {
            // A new rollout since the last look: its window starts empty.
            *h = RouteHistory {
                rollout: progress.started_unix_ms,
                samples: VecDeque::new(),
                last_look: None,
            };
        }
        if h.last_look
            .is_some_and(|t| now.duration_since(t) < plan.analysis.interval)
        {
            continue;
        }
        h.last_look = Some(now);
        h.samples.push_back((
            now,
            baseline.metrics.stats.counts(),
            canary.metrics.stats.counts(),
        ));
        // Keep the newest sample at least a window old as the reference, and nothing older.
        while h.samples.len() > 2 && now.duration_since(h.samples[1].0) >= plan.analysis.window {
            h.samples.pop_front();
        }
        let (Some(reference), Some(latest)) = (h.samples.front(), h.samples.back()) else {
            continue;
        };
        let local = Window {
            baseline: latest.1.since(&reference.1),
            canary: latest.2.since(&reference.2),
        };
        let role = exchange.map_or(Role::Alone, |x| {
            x.exchange(&route.name, progress.started_unix_ms, &local)
        });
        let canary_usable = canary.health.iter().any(|e| e.usable());
        let (look, finding) = look_at(
            route,
            plan,
            progress,
            local,
            role,
            canary_usable,
            &canary.name,
        );
        actions.extend(finding.map(|f| (route.name.clone(), f)));
        looks.insert(route.name.clone(), look);
    }
    history.retain(|name, _| live.contains(name));
    published.store(Arc::new(looks));
    actions
}

/// Judges one rollout's window in the role this replica has; returns the look for the API and
/// the decision, if any.
fn look_at(
    route: &crate::config::Route,
    plan: &crate::config::Rollout,
    progress: &crate::state::RolloutProgress,
    local: Window,
    role: Role,
    canary_usable: bool,
    canary_name: &str,
) -> (Look, Option<Finding>) {
    let (judged, shares, may_advance, may_abort) = match role {
        Role::Alone => (local, Vec::new(), true, true),
        Role::Lead { total, shares } => (*total, shares, true, true),
        Role::Follow => (local, Vec::new(), false, false),
        Role::CutOff => (local, Vec::new(), false, true),
    };
    let (mut verdict, mut evidence) =
        judge(&plan.analysis.thresholds, &judged.baseline, &judged.canary);
    evidence.replicas = shares;
    if !canary_usable {
        verdict = Verdict::Fail {
            reason: FailReason::NoHealthyEndpoint,
        };
    }
    let finding = match &verdict {
        Verdict::Fail { reason } if may_abort => {
            let mut evidence = evidence.clone();
            if *reason == FailReason::NoHealthyEndpoint {
                evidence.test = Some(format!("no endpoint of {canary_name} is healthy"));
            }
            tracing::warn!(route = %route.name, reason = reason.as_str(), test = ?evidence.test, "canary failed analysis: aborting");
            Some(Finding::Abort {
                cause: *reason,
                evidence,
            })
        }
        Verdict::Pass if may_advance && progress.phase == Phase::Progressing => {
            let at_step = now_unix_ms().saturating_sub(progress.step_started_unix_ms);
            (at_step >= plan.step_interval.as_millis() as u64).then_some(Finding::Advance {
                from_step: progress.step,
            })
        }
        _ => None,
    };
    let look = Look {
        at_unix_ms: now_unix_ms(),
        verdict,
        evidence,
    };
    (look, finding)
}
