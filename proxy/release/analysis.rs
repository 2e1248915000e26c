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

/// Starts the analysis task; it ends when `shutdown` fires. Findings leave through `findings`
/// (route name, finding): the control task applies them, so it stays the single writer.
pub fn spawn(
    shared: Arc<Shared>,
    findings: mpsc::Sender<(String, Finding)>,
    mut shutdown: watch::Receiver<bool>,
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
            let actions = look_at_all(&shared, &mut history, &published);
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
        let base_window = latest.1.since(&reference.1);
        let canary_window = latest.2.since(&reference.2);
        let (mut verdict, evidence) =
            judge(&plan.analysis.thresholds, &base_window, &canary_window);

        if !canary.health.iter().any(|e| e.usable()) {
            verdict = Verdict::Fail {
                reason: FailReason::NoHealthyEndpoint,
            };
        }
        match &verdict {
            Verdict::Fail { reason } => {
                let mut evidence = evidence.clone();
                if *reason == FailReason::NoHealthyEndpoint {
                    evidence.test = Some(format!("no endpoint of {} is healthy", canary.name));
                }
                tracing::warn!(route = %route.name, reason = reason.as_str(), test = ?evidence.test, "canary failed analysis: aborting");
                actions.push((
                    route.name.clone(),
                    Finding::Abort {
                        cause: *reason,
                        evidence,
                    },
                ));
            }
            Verdict::Pass if progress.phase == Phase::Progressing => {
                let at_step = now_unix_ms().saturating_sub(progress.step_started_unix_ms);
                if at_step >= plan.step_interval.as_millis() as u64 {
                    actions.push((
                        route.name.clone(),
                        Finding::Advance {
                            from_step: progress.step,
                        },
                    ));
                }
            }
            _ => {}
        }
        looks.insert(
            route.name.clone(),
            Look {
                at_unix_ms: now_unix_ms(),
                verdict,
                evidence,
            },
        );
    }
    history.retain(|name, _| live.contains(name));
    published.store(Arc::new(looks));
    actions
}
