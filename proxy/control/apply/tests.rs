//! The transition as a table: (state, action, facts) -> next state or refusal.

use super::*;
use crate::config::Config;
use crate::state::Side;

const CONFIG: &str = r#"
listeners: [{ name: public, addr: "127.0.0.1:8080" }]
routes:
  - name: shop
    versions:
      - { name: stable, endpoints: ["127.0.0.1:9001"], weight: 100 }
      - { name: canary, endpoints: ["127.0.0.1:9101"], weight: 0 }
    rollout:
      baseline: stable
      canary: canary
      steps: [10, 50, 100]
      step_interval: "1m"
  - name: site
    strategy: blue_green
    versions:
      - { name: blue, endpoints: ["127.0.0.1:9201"], weight: 100 }
      - { name: green, endpoints: ["127.0.0.1:9202"], weight: 0 }
  - name: solo
    versions:
      - { name: only, endpoints: ["127.0.0.1:9301"], weight: 100 }
"#;

fn config() -> Config {
    crate::config::parse(std::path::Path::new("test.yaml"), CONFIG).expect("test config is valid")
}

fn idle(route: &Route) -> RouteOverride {
    RouteOverride {
        versions: crate::state::version_names(route),
        ..RouteOverride::default()
    }
}

fn rolling(route: &Route, step: usize, phase: Phase) -> RouteOverride {
    RouteOverride {
        rollout: Some(RolloutProgress {
            phase,
            step,
            step_started_unix_ms: 1_000,
            started_unix_ms: 1_000,
        }),
        ..idle(route)
    }
}

fn aborted(route: &Route) -> RouteOverride {
    RouteOverride {
        aborted: Some(Abort {
            reason: "test".into(),
            by: "op".into(),
            at_unix_ms: 1,
            cause: Some(FailReason::Manual),
            evidence: None,
        }),
        ..rolling(route, 1, Phase::Progressing)
    }
}

fn run(
    route: &Route,
    current: &RouteOverride,
    action: Action,
    healthy: &[bool],
) -> Result<Option<Transition>, ActionError> {
    let facts = Facts {
        route,
        actor: "op",
        now_unix_ms: 5_000,
        in_service: &[100, 0],
        healthy,
    };
    apply(current, &action, &facts)
}

fn conflict(result: Result<Option<Transition>, ActionError>) -> Conflict {
    match result {
        Err(ActionError::Conflict { conflict, .. }) => conflict,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn next(result: Result<Option<Transition>, ActionError>) -> RouteOverride {
    match result {
        Ok(Some(t)) => t.next,
        other => panic!("expected a change, got {other:?}"),
    }
}

fn evidence() -> Evidence {
    let side = Side {
        requests: 100,
        errors: 10,
        error_rate: 0.1,
        p50_ms: None,
        p99_ms: None,
    };
    Evidence {
        baseline: side.clone(),
        canary: side,
        test: Some("error rate".into()),
        replicas: Vec::new(),
    }
}

#[test]
fn refusals_name_the_state_that_forbids_the_action() {
    let c = config();
    let (shop, site, solo) = (&c.routes[0], &c.routes[1], &c.routes[2]);
    let weights = Action::SetWeights([("stable".into(), 50), ("canary".into(), 50)].into());
    let table: Vec<(&Route, RouteOverride, Action, Conflict)> = vec![
        (
            shop,
            aborted(shop),
            weights.clone(),
            Conflict::AbortedSetWeights,
        ),
        (
            shop,
            rolling(shop, 0, Phase::Progressing),
            weights,
            Conflict::RollingSetWeights,
        ),
        (
            solo,
            idle(solo),
            Action::Promote,
            Conflict::OneVersion("promote"),
        ),
        (
            solo,
            idle(solo),
            Action::Abort { reason: "x".into() },
            Conflict::OneVersion("abort"),
        ),
        (
            shop,
            aborted(shop),
            Action::Promote,
            Conflict::AbortedPromote,
        ),
        (site, idle(site), Action::RolloutStart, Conflict::NoRollout),
        (
            shop,
            aborted(shop),
            Action::RolloutStart,
            Conflict::AbortedRolloutStart,
        ),
        (
            shop,
            rolling(shop, 0, Phase::Paused),
            Action::RolloutStart,
            Conflict::AlreadyRolling,
        ),
        (
            shop,
            idle(shop),
            Action::RolloutPause,
            Conflict::NothingToPause,
        ),
        (
            shop,
            rolling(shop, 0, Phase::Progressing),
            Action::RolloutResume,
            Conflict::NothingToResume,
        ),
        (shop, idle(shop), Action::Switch, Conflict::NotBlueGreen),
        (shop, idle(shop), Action::Resume, Conflict::NotAborted),
    ];
    for (route, state, action, expected) in table {
        let what = format!("{} on {}", action.as_str(), route.name);
        assert_eq!(
            conflict(run(route, &state, action, &[true, true])),
            expected,
            "{what}"
        );
    }
}

#[test]
fn a_rollout_starts_advances_one_step_at_a_time_and_promotes_at_the_last() {
    let c = config();
    let shop = &c.routes[0];
    let started = next(run(shop, &idle(shop), Action::RolloutStart, &[true, true]));
    let p = started.rollout.clone().expect("a rollout");
    assert_eq!(
        (p.phase, p.step, p.started_unix_ms),
        (Phase::Progressing, 0, 5_000)
    );

    let one = next(run(
        shop,
        &started,
        Action::Advance { from_step: 0 },
        &[true, true],
    ));
    assert_eq!(one.rollout.as_ref().map(|p| p.step), Some(1));
    // A stale advance (judged at step 0) changes nothing.
    assert!(
        run(shop, &one, Action::Advance { from_step: 0 }, &[true, true])
            .expect("stale advance is not an error")
            .is_none()
    );
    let last = next(run(
        shop,
        &one,
        Action::Advance { from_step: 1 },
        &[true, true],
    ));
    let p = last.rollout.expect("a rollout");
    assert_eq!((p.phase, p.step), (Phase::Promoted, 2));
}

#[test]
fn a_paused_rollout_does_not_advance_and_resumes_with_a_new_step_start() {
    let c = config();
    let shop = &c.routes[0];
    let paused = rolling(shop, 1, Phase::Paused);
    assert!(run(
        shop,
        &paused,
        Action::Advance { from_step: 1 },
        &[true, true]
    )
    .expect("ok")
    .is_none());
    let resumed = next(run(shop, &paused, Action::RolloutResume, &[true, true]));
    let p = resumed.rollout.expect("a rollout");
    assert_eq!(
        (p.phase, p.step_started_unix_ms),
        (Phase::Progressing, 5_000)
    );
}

#[test]
fn an_analysis_abort_records_its_evidence_and_a_stale_one_is_ignored() {
    let c = config();
    let shop = &c.routes[0];
    let action = Action::AutoAbort {
        cause: FailReason::ErrorRate,
        evidence: evidence(),
    };
    let t = run(
        shop,
        &rolling(shop, 1, Phase::Progressing),
        action.clone(),
        &[true, true],
    )
    .expect("ok")
    .expect("a change");
    assert_eq!(t.aborted_rollout, Some("error_rate"));
    let abort = t.next.aborted.expect("aborted");
    assert_eq!(abort.by, "analysis");
    assert_eq!(abort.reason, "analysis: error rate");
    assert_eq!(abort.evidence, Some(evidence()));
    // No rollout in progress: the analysis looked at a rollout that has since ended.
    assert!(run(shop, &idle(shop), action, &[true, true])
        .expect("ok")
        .is_none());
}

#[test]
fn a_manual_abort_of_a_rolling_route_is_counted_as_manual_and_resume_lifts_it() {
    let c = config();
    let shop = &c.routes[0];
    let t = run(
        shop,
        &rolling(shop, 0, Phase::Progressing),
        Action::Abort {
            reason: "bad".into(),
        },
        &[true, true],
    )
    .expect("ok")
    .expect("a change");
    assert_eq!(t.aborted_rollout, Some("manual"));
    assert_eq!(t.next.aborted.as_ref().map(|a| a.by.as_str()), Some("op"));
    let resumed = next(run(shop, &t.next, Action::Resume, &[true, true]));
    assert!(resumed.aborted.is_none());
    assert!(
        resumed.rollout.is_some(),
        "resume keeps the rollout's progress"
    );
}

#[test]
fn weights_must_name_every_version_and_only_those_and_not_all_zero() {
    let c = config();
    let shop = &c.routes[0];
    let set = |pairs: &[(&str, u32)]| {
        Action::SetWeights(pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect())
    };
    let unknown = run(
        shop,
        &idle(shop),
        set(&[("stable", 1), ("canary", 1), ("x", 1)]),
        &[],
    );
    assert_eq!(
        unknown.expect_err("refused").to_string(),
        "unknown version(s) x (this route has: stable, canary)"
    );
    let missing = run(shop, &idle(shop), set(&[("stable", 1)]), &[]);
    assert!(matches!(missing, Err(ActionError::MissingWeights(m)) if m == ["canary"]));
    let zero = run(shop, &idle(shop), set(&[("stable", 0), ("canary", 0)]), &[]);
    assert!(matches!(zero, Err(ActionError::AllZero)));
    let ok = next(run(
        shop,
        &idle(shop),
        set(&[("stable", 90), ("canary", 10)]),
        &[],
    ));
    assert_eq!(ok.weights, Some(vec![90, 10]));
}

#[test]
fn switch_moves_all_traffic_to_a_healthy_standby_only() {
    let c = config();
    let site = &c.routes[1];
    let refused = conflict(run(site, &idle(site), Action::Switch, &[true, false]));
    assert_eq!(refused, Conflict::StandbyUnhealthy("green".into()));
    let switched = next(run(site, &idle(site), Action::Switch, &[true, true]));
    assert_eq!(switched.weights, Some(vec![0, 100]));
}

#[test]
fn a_repeated_action_changes_nothing_but_reset_always_applies() {
    let c = config();
    let shop = &c.routes[0];
    let a = aborted(shop);
    assert!(run(
        shop,
        &a,
        Action::Abort {
            reason: "again".into()
        },
        &[]
    )
    .expect("ok")
    .is_none());
    let reset = next(run(shop, &idle(shop), Action::Reset, &[]));
    assert_eq!(reset, idle(shop));
}
