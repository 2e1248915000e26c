//! A fleet of three replicas (real processes) on a real 3-member etcd cluster: a change through
//! one replica is in force on all; one analysis, on every replica's traffic, aborts a bad canary
//! everywhere; a rollout survives its leader's SIGKILL and ends promoted exactly once; without
//! etcd quorum every replica keeps serving and changes wait.
//!
//! The scenarios run one at a time (each starts its own cluster and replicas).

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

#[path = "../common/mod.rs"]
mod common;
mod rig;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rig::{fleet, route, until, weights, Rig, RolloutSpec};
use serde_json::Value;

/// One scenario at a time: each runs a cluster and three replicas.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SLOW: RolloutSpec = RolloutSpec {
    steps: "[10, 50, 100]",
    step_interval: "1h",
    min_requests: 40,
};

async fn put_weights(r: &rig::Replica, stable: u32, canary: u32) -> common::Reply {
    common::send(
        "PUT",
        &r.admin_url("/api/v1/routes/shop/weights"),
        &[("content-type", "application/json")],
        &format!(r#"{{"stable": {stable}, "canary": {canary}}}"#),
    )
    .await
}

async fn post(r: &rig::Replica, path: &str) -> common::Reply {
    common::send("POST", &r.admin_url(path), &[], "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weight_set_on_one_replica_is_in_force_on_all_three_within_a_second() {
    let _one = SERIAL.lock().await;
    let rig = Rig::start(3, SLOW).await;
    // Every replica's view, not only the first's: a replica's view of the fleet may lag a
    // heartbeat behind, and `ctl fleet` asks the second below.
    for r in &rig.replicas {
        assert!(
            until(Duration::from_secs(10), || async {
                let view = fleet(r).await;
                view["replicas"].as_array().is_some_and(|l| l.len() == 3)
                    && view["store"]["state"] == "up"
            })
            .await,
            "{} lists all three replicas and the store up: {}",
            r.name,
            fleet(r).await
        );
    }
    for (n, (stable, canary)) in [(90, 10), (70, 30), (50, 50), (20, 80), (100, 0), (95, 5)]
        .into_iter()
        .enumerate()
    {
        let writer = &rig.replicas[n % 3];
        let reply = put_weights(writer, stable, canary).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        for r in &rig.replicas {
            let want = vec![u64::from(stable), u64::from(canary)];
            assert!(
                until(Duration::from_secs(1), || async {
                    weights(r).await == want
                })
                .await,
                "{} serves {:?} within 1 s of {} answering (it has {:?})",
                r.name,
                want,
                writer.name,
                weights(r).await
            );
        }
    }

    let ctl = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["ctl", "--admin", &rig.replicas[1].admin_url(""), "fleet"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&ctl.stdout);
    assert!(
        ctl.status.success(),
        "{}",
        String::from_utf8_lossy(&ctl.stderr)
    );
    for name in ["edge-0", "edge-1", "edge-2", "store up"] {
        assert!(table.contains(name), "ctl fleet shows {name}:\n{table}");
    }

    // A route defined differently on a live replica: changes that move traffic wait.
    let changed = rig.config(2, "    max_body_bytes: 1024\n");
    std::fs::write(&rig.replicas[2].config, changed).unwrap();
    assert_eq!(post(&rig.replicas[2], "/api/v1/reload").await.status, 200);
    let mut refused = None;
    for _ in 0..100 {
        let reply = put_weights(&rig.replicas[0], 60, 40).await;
        if reply.status == 409 {
            refused = Some(reply.body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = refused.expect("a weight change is refused while definitions differ");
    assert!(
        body.contains("edge-2") && body.contains("defined differently"),
        "{body}"
    );
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["route"]["name"], "shop",
        "the current state comes with a 409"
    );
    let abort = post(&rig.replicas[0], "/api/v1/routes/shop/abort").await;
    assert_eq!(
        abort.status, 200,
        "an abort is always allowed: {}",
        abort.body
    );
    assert_eq!(
        post(&rig.replicas[0], "/api/v1/routes/shop/reset")
            .await
            .status,
        200
    );
    std::fs::write(&rig.replicas[2].config, rig.config(2, "")).unwrap();
    assert_eq!(post(&rig.replicas[2], "/api/v1/reload").await.status, 200);
    assert!(
        until(Duration::from_secs(10), || async {
            put_weights(&rig.replicas[0], 60, 40).await.status == 200
        })
        .await,
        "changes work again once the definitions agree"
    );

    // Two writers on one revision: the second loses with the current state, not silently.
    compare_and_swap_loser_gets_the_current_state(&rig).await;
}

async fn compare_and_swap_loser_gets_the_current_state(rig: &Rig) {
    use switchyard::fleet::{AuditRecord, Commit, CommitError, Fleet};
    let text = rig.config(7, "");
    let config = switchyard::config::parse(&rig.dir.path().join("x.yaml"), &text).unwrap();
    let metrics = switchyard::metrics::Metrics::new().unwrap();
    let fleet = Fleet::new(config.fleet.unwrap(), &metrics).unwrap();
    let route = config.routes[0].clone();
    let mut state = switchyard::state::RouteOverride {
        versions: switchyard::state::version_names(&route),
        weights: Some(vec![1, 1]),
        ..Default::default()
    };
    let audit = AuditRecord::new(&fleet, "test", "set-weights", "shop", None, None);
    let stale = Commit {
        route: "shop",
        expected: 1,
        next: Some(&state),
        audit: &audit,
        as_leader: false,
    };
    let Err(CommitError::Conflict { current, .. }) = fleet.commit(stale).await else {
        panic!("a commit on a stale revision is refused");
    };
    assert_eq!(current.state.unwrap().weights, Some(vec![60, 40]));
    state.weights = Some(vec![2, 1]);
    let fresh = Commit {
        route: "shop",
        expected: current.mod_revision,
        next: Some(&state),
        audit: &audit,
        as_leader: false,
    };
    assert!(
        fleet.commit(fresh).await.is_ok(),
        "the current revision wins"
    );
    for r in &rig.replicas {
        assert!(
            until(Duration::from_secs(1), || async {
                weights(r).await == [2, 1]
            })
            .await,
            "{} took the committed state: {:?}",
            r.name,
            weights(r).await
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_canary_is_aborted_on_all_three_by_one_analysis_counting_every_replica() {
    let _one = SERIAL.lock().await;
    let rig = Rig::start(
        3,
        RolloutSpec {
            min_requests: 30,
            ..SLOW
        },
    )
    .await;
    // Slow, not failing: failures would eject the endpoint and abort on health alone.
    rig.canary.faults.delay_ms.store(80, Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let load = rig.load(stop.clone(), 100);
    let start = post(&rig.replicas[1], "/api/v1/routes/shop/rollout/start").await;
    assert_eq!(start.status, 200, "{}", start.body);
    for r in &rig.replicas {
        assert!(
            until(Duration::from_secs(30), || async {
                route(r).await["state"] == "aborted"
            })
            .await,
            "{} aborted: {}",
            r.name,
            route(r).await
        );
        assert_eq!(weights(r).await, [100, 0]);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    let views: Vec<Value> = {
        let mut v = Vec::new();
        for r in &rig.replicas {
            v.push(route(r).await["aborted"].clone());
        }
        v
    };
    let abort = &views[0];
    assert!(
        views.iter().all(|v| v == abort),
        "one decision everywhere: {views:?}"
    );
    assert!(
        abort["by"]
            .as_str()
            .unwrap()
            .starts_with("analysis on edge-"),
        "{abort}"
    );
    let evidence = &abort["evidence"];
    let shares = evidence["replicas"].as_array().unwrap();
    assert_eq!(
        shares.len(),
        3,
        "every replica's window counted: {evidence}"
    );
    let summed: u64 = shares
        .iter()
        .map(|s| {
            let n = s["canary_requests"].as_u64().unwrap();
            assert!(n > 0, "{} served canary requests: {evidence}", s["replica"]);
            n
        })
        .sum();
    assert_eq!(evidence["canary"]["requests"].as_u64(), Some(summed));
    let aborted_events = rig
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "rollout_aborted")
        .count();
    assert!(aborted_events <= 1, "one replica committed the abort");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_mid_rollout_the_others_end_it_promoted_exactly_once() {
    let _one = SERIAL.lock().await;
    let mut rig = Rig::start(
        3,
        RolloutSpec {
            steps: "[10, 40, 70, 100]",
            step_interval: "1500ms",
            min_requests: 20,
        },
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = rig.load(stop.clone(), 100);
    let start = post(&rig.replicas[0], "/api/v1/routes/shop/rollout/start").await;
    assert_eq!(start.status, 200, "{}", start.body);
    assert!(
        until(Duration::from_secs(30), || async {
            route(&rig.replicas[0]).await["rollout"]["step"].as_u64() >= Some(1)
        })
        .await,
        "the rollout advanced once: {}",
        route(&rig.replicas[0]).await
    );
    let leader = fleet(&rig.replicas[0]).await["leaders"]["shop"]
        .as_str()
        .unwrap()
        .to_string();
    let index = rig.replicas.iter().position(|r| r.name == leader).unwrap();
    rig.replicas[index].kill();
    let killed = rig.replicas.remove(index);
    for r in &rig.replicas {
        assert!(
            until(Duration::from_secs(60), || async {
                route(r).await["rollout"]["state"] == "promoted"
            })
            .await,
            "{} promoted after {} was killed: {}",
            r.name,
            killed.name,
            route(r).await
        );
        assert_eq!(weights(r).await, [0, 100]);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    let new_leader = fleet(&rig.replicas[0]).await["leaders"]["shop"].clone();
    assert_ne!(
        new_leader.as_str(),
        Some(leader.as_str()),
        "another replica took over"
    );

    // The audit trail: every step once, in order, and one promotion.
    let steps = advances(&rig).await;
    assert_eq!(
        steps,
        [1, 2, 3],
        "each step advanced exactly once: {steps:?}"
    );
    assert!(
        until(Duration::from_secs(5), || async {
            promoted_events(&rig) >= 1
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(promoted_events(&rig), 1, "one promotion was announced");
}

fn promoted_events(rig: &Rig) -> usize {
    rig.events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "rollout_promoted")
        .count()
}

/// The steps the audit trail records the rollout advancing to, in order.
async fn advances(rig: &Rig) -> Vec<u64> {
    let mut client = rig.etcd().await;
    let audit = client
        .get(
            format!("{}/audit/", rig::PREFIX),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    audit
        .kvs()
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(kv.value()).ok())
        .filter(|r| r["action"] == "rollout-advance")
        .filter_map(|r| r["after"]["rollout"]["step"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_etcd_quorum_every_replica_keeps_serving_and_changes_wait() {
    let _one = SERIAL.lock().await;
    let mut rig = Rig::start(3, SLOW).await;
    assert_eq!(put_weights(&rig.replicas[0], 80, 20).await.status, 200);
    for r in &rig.replicas {
        assert!(
            until(Duration::from_secs(1), || async {
                weights(r).await == [80, 20]
            })
            .await
        );
    }
    rig.cluster.stop_member(1);
    rig.cluster.stop_member(2);

    let refused = put_weights(&rig.replicas[1], 50, 50).await;
    assert!(
        refused.status.is_server_error(),
        "{}: {}",
        refused.status,
        refused.body
    );
    assert!(refused.body.contains("fleet store"), "{}", refused.body);
    let ctl = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["ctl", "--admin", &rig.replicas[2].admin_url("")])
        .args(["weights", "shop", "stable=50", "canary=50"])
        .output()
        .unwrap();
    assert_eq!(
        ctl.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&ctl.stderr)
    );
    for r in &rig.replicas {
        assert!(
            until(Duration::from_secs(15), || async {
                fleet(r).await["store"]["state"] == "down"
            })
            .await,
            "{} shows the control plane down: {}",
            r.name,
            fleet(r).await
        );
        let metrics = common::send("GET", &r.admin_url("/metrics"), &[], "").await;
        assert_eq!(
            common::metric(&metrics.body, "switchyard_fleet_store_up"),
            Some(0.0)
        );
        let ready = common::send("GET", &r.admin_url("/readyz"), &[], "").await;
        assert_eq!(ready.status, 200);
        let served = common::get(&common::client(), &format!("http://{}/", r.public), &[]).await;
        assert_eq!(served.status, 200, "{} keeps serving", r.name);
        assert_eq!(weights(r).await, [80, 20], "nothing moved on {}", r.name);
    }

    // A replica restarted meanwhile serves what the fleet last agreed (its cache), not the file.
    rig.replicas[2].kill();
    let restarted = rig.spawn(2, "").await;
    rig.replicas[2] = restarted;
    assert_eq!(weights(&rig.replicas[2]).await, [80, 20]);

    rig.cluster.start_member(1).unwrap();
    rig.cluster.start_member(2).unwrap();
    assert!(
        rig.quorum(Duration::from_secs(60)),
        "the restarted members rejoined"
    );
    assert!(
        until(Duration::from_secs(30), || async {
            put_weights(&rig.replicas[0], 50, 50).await.status == 200
        })
        .await,
        "changes work again once quorum is back"
    );
    for r in &rig.replicas {
        assert!(
            until(Duration::from_secs(10), || async {
                weights(r).await == [50, 50]
            })
            .await,
            "{} took the change: {:?}",
            r.name,
            weights(r).await
        );
        assert!(
            until(Duration::from_secs(10), || async {
                fleet(r).await["store"]["state"] == "up"
            })
            .await
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_from_etcd_a_replica_stops_a_failing_canary_alone_and_publishes_the_abort_later() {
    let _one = SERIAL.lock().await;
    let mut rig = Rig::start(
        3,
        RolloutSpec {
            min_requests: 10,
            ..SLOW
        },
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = rig.load(stop.clone(), 100);
    let start = post(&rig.replicas[0], "/api/v1/routes/shop/rollout/start").await;
    assert_eq!(start.status, 200, "{}", start.body);
    for r in &rig.replicas {
        assert!(
            until(Duration::from_secs(5), || async {
                weights(r).await == [90, 10]
            })
            .await
        );
    }
    rig.cluster.stop_member(1);
    rig.cluster.stop_member(2);
    for r in &rig.replicas {
        assert!(
            until(Duration::from_secs(15), || async {
                fleet(r).await["store"]["state"] == "down"
            })
            .await
        );
    }
    rig.canary.faults.delay_ms.store(80, Ordering::Relaxed);
    for r in &rig.replicas {
        assert!(
            until(Duration::from_secs(30), || async {
                route(r).await["state"] == "aborted"
            })
            .await,
            "{} stopped the canary on its own: {}",
            r.name,
            route(r).await
        );
        assert_eq!(weights(r).await, [100, 0]);
        let by = route(r).await["aborted"]["by"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(by, format!("analysis on {}", r.name), "its own analysis");
    }
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;

    rig.cluster.start_member(1).unwrap();
    rig.cluster.start_member(2).unwrap();
    // The clock starts once etcd has quorum again: how long the members take to rejoin is etcd's.
    assert!(
        rig.quorum(Duration::from_secs(60)),
        "the restarted members rejoined"
    );
    let mut client = rig.etcd().await;
    let key = format!("{}/routes/shop", rig::PREFIX);
    let mut stored = Value::Null;
    let published = common::eventually(Duration::from_secs(30), async || {
        if let Ok(r) = client.get(key.clone(), None).await {
            if let Some(kv) = r.kvs().first() {
                stored = serde_json::from_slice(kv.value()).unwrap();
            }
        }
        stored["aborted"].is_object()
    })
    .await;
    assert!(published, "the abort reached etcd: {stored}");
    let by = stored["aborted"]["by"].as_str().unwrap();
    for r in &rig.replicas {
        assert!(
            until(Duration::from_secs(10), || async {
                route(r).await["aborted"]["by"] == by
            })
            .await,
            "{} serves the fleet's abort: {}",
            r.name,
            route(r).await
        );
        assert_eq!(weights(r).await, [100, 0]);
    }
}
