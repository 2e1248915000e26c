//! The rollout as a state machine on paused time: the control task, the analysis task and the
//! per-version counts, with traffic recorded straight into the counts a second at a time. No
//! sockets and no wall clock: minutes of rollout run in milliseconds, the same every time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::*;
use crate::state::Phase;

const CONFIG: &str = r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
routes:
  - name: shop
    versions:
      - { name: stable, endpoints: ["127.0.0.1:9001"], weight: 100 }
      - { name: canary, endpoints: ["127.0.0.1:9101"], weight: 0 }
    rollout:
      baseline: stable
      canary: canary
      steps: [10, 50, 100]
      step_interval: "30s"
      analysis: { interval: "1s", window: "10s", min_requests: 20 }
"#;

/// A control task and an analysis task over `CONFIG`, the analysis' findings applied.
async fn rollout() -> (ControlHandle, Arc<Shared>, watch::Sender<bool>) {
    let config = crate::config::parse(std::path::Path::new("test.yaml"), CONFIG)
        .expect("the test configuration is valid");
    let metrics = Arc::new(crate::metrics::Metrics::new().expect("metrics register"));
    let (control, shared, _status) = Control::new(config, None, metrics);
    let handle = control.spawn();
    let (tx, mut rx) = mpsc::channel(16);
    let (stop, stopped) = watch::channel(false);
    crate::release::analysis::spawn(shared.clone(), tx, stopped);
    let applier = handle.clone();
    tokio::spawn(async move {
        while let Some((route, finding)) = rx.recv().await {
            let _ = applier.act(&route, Action::from(finding), "analysis").await;
        }
    });
    handle
        .act("shop", Action::RolloutStart, "test")
        .await
        .expect("the rollout starts");
    (handle, shared, stop)
}

/// One simulated second of traffic: 100 requests on each version, `canary_errors` of the
/// canary's failing.
async fn second_of_traffic(shared: &Shared, canary_errors: u32) {
    let snapshot = shared.snapshot.load_full();
    let versions = &snapshot.routes[0].versions;
    for i in 0..100 {
        versions[0]
            .metrics
            .stats
            .record(false, Duration::from_millis(5));
        versions[1]
            .metrics
            .stats
            .record(i < canary_errors, Duration::from_millis(5));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
}

fn progress(shared: &Shared) -> Option<crate::state::RolloutProgress> {
    shared
        .snapshot
        .load()
        .overrides
        .routes
        .get("shop")
        .and_then(|o| o.rollout.clone())
}

#[tokio::test(start_paused = true)]
async fn a_healthy_canary_steps_up_once_per_step_interval_and_is_promoted() {
    let (_control, shared, _stop) = rollout().await;
    let mut steps_seen = vec![0];
    for _ in 0..120 {
        second_of_traffic(&shared, 0).await;
        let p = progress(&shared).expect("a rollout");
        if steps_seen.last() != Some(&p.step) {
            steps_seen.push(p.step);
        }
        if p.phase == Phase::Promoted {
            break;
        }
    }
    let p = progress(&shared).expect("a rollout");
    assert_eq!(p.phase, Phase::Promoted);
    assert_eq!(steps_seen, [0, 1, 2], "each step taken once, in order");
    let canary = &shared.snapshot.load().routes[0].versions[1];
    assert_eq!(canary.weight, 100);
}

#[tokio::test(start_paused = true)]
async fn a_failing_canary_is_aborted_with_its_evidence_within_the_window() {
    let (_control, shared, _stop) = rollout().await;
    let started = tokio::time::Instant::now();
    let mut aborted = None;
    for _ in 0..30 {
        second_of_traffic(&shared, 20).await;
        let snapshot = shared.snapshot.load();
        if let Some(a) = snapshot
            .overrides
            .routes
            .get("shop")
            .and_then(|o| o.aborted.clone())
        {
            aborted = Some(a);
            break;
        }
    }
    let abort = aborted.expect("the analysis aborts a canary failing 20% of its requests");
    assert_eq!(abort.by, "analysis");
    use crate::state::FailReason;
    assert!(
        matches!(
            abort.cause,
            Some(FailReason::ErrorRate | FailReason::ErrorRateAbsolute)
        ),
        "{:?}",
        abort.cause
    );
    let evidence = abort.evidence.expect("evidence recorded");
    assert!(evidence.canary.errors > 0 && evidence.canary.requests >= 20);
    // Virtual time: the first look with enough requests fails (20 per side needed, 100 a second).
    assert!(
        started.elapsed() <= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let canary = &shared.snapshot.load().routes[0].versions[1];
    assert_eq!(canary.weight, 0, "aborted: the canary gets nothing");
}
