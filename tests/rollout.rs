//! Progressive delivery end to end: rollouts step up on a healthy canary, abort by themselves on
//! errors, latency or a dead canary, report to a webhook, survive a restart; blue/green switches
//! only to a healthy standby.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

/// A webhook receiver that keeps every JSON body it is sent.
async fn webhook() -> (SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let store = events.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let store = store.clone();
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let store = store.clone();
                async move {
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    store
                        .lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, events)
}

struct Rig {
    _dir: tempfile::TempDir,
    file: std::path::PathBuf,
    proxy: Option<switchyard::app::Running>,
    stable: Upstream,
    canary: Upstream,
    events: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
}

impl Rig {
    async fn new(steps: &str, step_interval: &str) -> Rig {
        let stable = Upstream::start("stable").await;
        let canary = Upstream::start("canary").await;
        let (hook, events) = webhook().await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("switchyard.yaml");
        std::fs::write(
            &file,
            format!(
                r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
admin: {{ addr: "127.0.0.1:0" }}
state_file: "{state}"
access_log: {{ enabled: false }}
routes:
  - name: shop
    versions:
      - {{ name: stable, endpoints: ["{s}"], weight: 100 }}
      - {{ name: canary, endpoints: ["{c}"], weight: 0 }}
    rollout:
      baseline: stable
      canary: canary
      steps: {steps}
      step_interval: "{step_interval}"
      webhook: "http://{hook}/events"
      analysis: {{ interval: "100ms", window: "3s", min_requests: 20 }}
"#,
                state = dir.path().join("state.json").display(),
                s = stable.addr,
                c = canary.addr,
            ),
        )
        .unwrap();
        let proxy = switchyard::app::start_from_file(&file).await.unwrap();
        Rig {
            _dir: dir,
            file,
            proxy: Some(proxy),
            stable,
            canary,
            events,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    fn proxy(&self) -> &switchyard::app::Running {
        self.proxy.as_ref().unwrap()
    }

    fn admin(&self) -> String {
        format!("http://{}", self.proxy().admin_addr().unwrap())
    }

    /// Steady traffic from 4 clients until the rig stops (at most two minutes).
    fn traffic(&self) {
        let url = format!("http://{}/", self.proxy().addr("public").unwrap());
        for _ in 0..4 {
            let (url, stop) = (url.clone(), self.stop.clone());
            tokio::spawn(async move {
                let client = client();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                    let request = http::Request::get(&url)
                        .body(http_body_util::Empty::new())
                        .unwrap();
                    if let Ok(r) = client.request(request).await {
                        let _ = r.into_body().collect().await;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            });
        }
    }

    async fn act(&self, path: &str) -> Reply {
        send(
            "POST",
            &format!("{}/api/v1/routes/shop/{path}", self.admin()),
            &[],
            "",
        )
        .await
    }

    async fn route(&self) -> Value {
        let reply = get(
            &client(),
            &format!("{}/api/v1/routes/shop", self.admin()),
            &[],
        )
        .await;
        serde_json::from_str(&reply.body).unwrap()
    }

    async fn wait_for_state(&self, state: &str) -> Value {
        let mut v = Value::Null;
        let reached = eventually(LIMIT, async || {
            v = self.route().await;
            v["rollout"]["state"] == state
        })
        .await;
        assert!(reached, "never reached {state}: {v:#}");
        v
    }

    async fn wait_for_event(&self, event: &str) -> Value {
        let find = || {
            let events = self.events.lock().unwrap();
            events.iter().find(|e| e["event"] == event).cloned()
        };
        let seen = eventually(LIMIT, async || find().is_some()).await;
        assert!(seen, "no {event} event");
        find().unwrap()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_noisy_canary_steps_up_to_promotion_without_an_abort() {
    let rig = Rig::new("[10, 30, 60, 100]", "400ms").await;
    for u in [&rig.stable, &rig.canary] {
        u.faults.jitter_ms.store(15, Ordering::Relaxed);
        u.faults.error_every.store(200, Ordering::Relaxed);
    }
    rig.traffic();
    let reply = rig.act("rollout/start").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let v = rig.wait_for_state("promoted").await;
    assert_eq!(v["rollout"]["canary_weight"], 100, "{v:#}");
    assert_eq!(v["versions"][1]["weight"], 100);
    assert!(v.get("aborted").is_none(), "{v:#}");
    let event = rig.wait_for_event("rollout_promoted").await;
    assert_eq!(event["route"], "shop");
    assert!(rig
        .events
        .lock()
        .unwrap()
        .iter()
        .all(|e| e["event"] != "rollout_aborted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_on_the_canary_abort_the_rollout_with_evidence_and_the_abort_survives_a_restart() {
    let mut rig = Rig::new("[20, 50, 100]", "60s").await;
    rig.canary.faults.error_every.store(4, Ordering::Relaxed); // 25% errors
    rig.traffic();
    assert_eq!(rig.act("rollout/start").await.status, 200);
    let v = rig.wait_for_state("aborted").await;
    assert_eq!(v["versions"][1]["weight"], 0, "{v:#}");
    assert_eq!(v["aborted"]["by"], "analysis");
    let evidence = &v["aborted"]["evidence"];
    assert!(evidence["canary"]["errors"].as_u64().unwrap() > 0, "{v:#}");
    assert!(
        evidence["canary"]["error_rate"].as_f64().unwrap()
            > evidence["baseline"]["error_rate"].as_f64().unwrap()
    );
    assert!(evidence["test"].as_str().unwrap().contains("p = "), "{v:#}");

    let event = rig.wait_for_event("rollout_aborted").await;
    assert_eq!(event["abort"]["by"], "analysis");
    let metrics = get(&client(), &format!("{}/metrics", rig.admin()), &[])
        .await
        .body;
    assert_eq!(
        metric(&metrics, "switchyard_rollout_state{route=\"shop\"}"),
        Some(4.0)
    );
    let aborts: f64 = ["error_rate", "error_rate_absolute"]
        .iter()
        .filter_map(|r| {
            metric(
                &metrics,
                &format!("switchyard_rollout_aborts_total{{reason=\"{r}\",route=\"shop\"}}"),
            )
        })
        .sum();
    assert_eq!(aborts, 1.0, "{metrics}");

    // The abort holds across a restart, and the canary gets nothing.
    rig.stop.store(true, Ordering::Relaxed);
    rig.proxy.take().unwrap().shutdown().await;
    rig.proxy = Some(switchyard::app::start_from_file(&rig.file).await.unwrap());
    let v = rig.route().await;
    assert_eq!(v["rollout"]["state"], "aborted", "{v:#}");
    let before = rig.canary.count();
    let url = format!("http://{}/", rig.proxy().addr("public").unwrap());
    for _ in 0..50 {
        assert_eq!(get(&client(), &url, &[]).await.served_by(), "stable");
    }
    assert_eq!(rig.canary.count(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_canary_aborts_on_latency() {
    let rig = Rig::new("[50, 100]", "60s").await;
    rig.canary.faults.delay_ms.store(300, Ordering::Relaxed);
    rig.traffic();
    assert_eq!(rig.act("rollout/start").await.status, 200);
    let v = rig.wait_for_state("aborted").await;
    let test = v["aborted"]["evidence"]["test"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(test.contains("slower than"), "{v:#}");
    let metrics = get(&client(), &format!("{}/metrics", rig.admin()), &[])
        .await
        .body;
    let latency: f64 = ["latency_p99", "latency_p50"]
        .iter()
        .filter_map(|r| {
            metric(
                &metrics,
                &format!("switchyard_rollout_aborts_total{{reason=\"{r}\",route=\"shop\"}}"),
            )
        })
        .sum();
    assert_eq!(latency, 1.0, "{metrics}");
}

#[tokio::test]
async fn each_rollout_transition_is_driven_by_the_api() {
    let rig = Rig::new("[10, 50, 100]", "60s").await;
    let weight = |v: &Value| v["versions"][1]["weight"].as_u64().unwrap();

    assert_eq!(rig.route().await["rollout"]["state"], "idle");
    assert_eq!(
        rig.act("rollout/pause").await.status,
        409,
        "nothing to pause"
    );
    let r = rig.act("rollout/start").await;
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (v["rollout"]["state"].as_str(), weight(&v)),
        (Some("progressing"), 10),
        "{v:#}"
    );
    assert_eq!(
        rig.act("rollout/start").await.status,
        409,
        "already in progress"
    );
    let weights = send(
        "PUT",
        &format!("{}/api/v1/routes/shop/weights", rig.admin()),
        &[],
        r#"{"stable": 0, "canary": 100}"#,
    )
    .await;
    assert_eq!(weights.status, 409, "no manual weights during a rollout");

    let v: Value = serde_json::from_str(&rig.act("rollout/pause").await.body).unwrap();
    assert_eq!(v["rollout"]["state"], "paused");
    let v: Value = serde_json::from_str(&rig.act("rollout/resume").await.body).unwrap();
    assert_eq!(v["rollout"]["state"], "progressing");
    let v: Value = serde_json::from_str(&rig.act("rollout/abort").await.body).unwrap();
    assert_eq!(
        (v["rollout"]["state"].as_str(), weight(&v)),
        (Some("aborted"), 0)
    );
    assert_eq!(
        rig.act("rollout/start").await.status,
        409,
        "an aborted route needs resume or reset"
    );
    let v: Value = serde_json::from_str(&rig.act("resume").await.body).unwrap();
    assert_eq!(
        (v["rollout"]["state"].as_str(), weight(&v)),
        (Some("progressing"), 10)
    );
    let v: Value = serde_json::from_str(&rig.act("rollout/promote").await.body).unwrap();
    assert_eq!(
        (v["rollout"]["state"].as_str(), weight(&v)),
        (Some("promoted"), 100)
    );
    let v: Value = serde_json::from_str(&rig.act("rollout/start").await.body).unwrap();
    assert_eq!(
        v["rollout"]["state"], "progressing",
        "a new rollout after a promotion"
    );
    let v: Value = serde_json::from_str(&rig.act("reset").await.body).unwrap();
    assert_eq!(
        (v["rollout"]["state"].as_str(), weight(&v)),
        (Some("idle"), 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_whose_endpoints_all_fail_health_checks_is_aborted() {
    let rig = Rig::new("[50, 100]", "60s").await;
    // Add health checks by rewriting the file; the watch reloads it.
    let text = std::fs::read_to_string(&rig.file).unwrap().replace(
        "    rollout:",
        "    health_check: { path: /healthz, interval: 100ms, timeout: 500ms, unhealthy_threshold: 2 }\n    rollout:",
    );
    std::fs::write(&rig.file, text).unwrap();
    let reply = send("POST", &format!("{}/api/v1/reload", rig.admin()), &[], "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    rig.traffic();
    assert_eq!(rig.act("rollout/start").await.status, 200);
    rig.canary
        .faults
        .health_status
        .store(503, Ordering::Relaxed);
    let v = rig.wait_for_state("aborted").await;
    assert!(
        v["aborted"]["reason"]
            .as_str()
            .unwrap()
            .contains("no endpoint of canary is healthy"),
        "{v:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_switches_only_to_a_healthy_standby_and_in_flight_requests_finish() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    green.faults.health_status.store(503, Ordering::Relaxed);
    let proxy = start_proxy(&format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
admin: {{ addr: "127.0.0.1:0" }}
routes:
  - name: site
    strategy: blue_green
    health_check: {{ path: /healthz, interval: 100ms, timeout: 500ms, healthy_threshold: 1, unhealthy_threshold: 1 }}
    versions:
      - {{ name: blue, endpoints: ["{}"], weight: 100 }}
      - {{ name: green, endpoints: ["{}"], weight: 0 }}
"#,
        blue.addr, green.addr
    ))
    .await;
    let admin = format!("http://{}", proxy.admin_addr().unwrap());
    let url = format!("http://{}/", proxy.addr("public").unwrap());
    let switch = format!("{admin}/api/v1/routes/site/switch");

    // Refused while green fails (or has not yet passed) its checks.
    let reply = send("POST", &switch, &[], "").await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert!(
        reply.body.contains("standby green has no healthy endpoint"),
        "{}",
        reply.body
    );

    green.faults.health_status.store(200, Ordering::Relaxed);
    // A slow request on blue is in flight while the switch happens.
    let slow_url = format!("{url}slow?delay_ms=1500");
    let in_flight = tokio::spawn(async move { get(&client(), &slow_url, &[]).await });
    assert!(eventually(Duration::from_secs(10), async || blue.count() >= 1).await);
    let switched = eventually(Duration::from_secs(5), async || {
        send("POST", &switch, &[], "").await.status == 200
    })
    .await;
    assert!(
        switched,
        "the switch went through once green passed its checks"
    );
    for _ in 0..20 {
        assert_eq!(get(&client(), &url, &[]).await.served_by(), "green");
    }
    let slow = in_flight.await.unwrap();
    assert_eq!(
        (slow.status.as_u16(), slow.served_by()),
        (200, "blue"),
        "the in-flight request finished on blue"
    );

    // And back: blue is the standby now, healthy, ready for an instant switch back.
    assert_eq!(send("POST", &switch, &[], "").await.status, 200);
    assert_eq!(get(&client(), &url, &[]).await.served_by(), "blue");
}

#[tokio::test]
async fn an_endpoint_failing_five_times_in_a_row_is_ejected() {
    let bad = Upstream::start("bad").await;
    let good = Upstream::start("good").await;
    bad.faults.error_every.store(1, Ordering::Relaxed);
    let proxy = start_proxy(&format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
routes:
  - name: shop
    versions: [{{ name: stable, endpoints: ["{}", "{}"], weight: 1 }}]
"#,
        bad.addr, good.addr
    ))
    .await;
    let url = format!("http://{}/", proxy.addr("public").unwrap());
    let client = client();
    for _ in 0..40 {
        get(&client, &url, &[]).await;
    }
    assert_eq!(bad.count(), 5, "ejected after its fifth consecutive 5xx");
    assert_eq!(good.count(), 35);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_whose_endpoints_fail_health_checks_loses_its_share() {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    canary.faults.health_status.store(503, Ordering::Relaxed);
    let proxy = start_proxy(&two_versions(
        &stable,
        &canary,
        (50, 50),
        "    health_check: { path: /healthz, interval: 50ms, timeout: 500ms, unhealthy_threshold: 2 }",
    )
    .replace("listeners:", "admin: { addr: \"127.0.0.1:0\" }\nlisteners:"))
    .await;
    let admin = format!("http://{}", proxy.admin_addr().unwrap());
    let mut source = Value::Null;
    eventually(Duration::from_secs(5), async || {
        let url = format!("{admin}/api/v1/routes/shop");
        let v: Value = serde_json::from_str(&get(&client(), &url, &[]).await.body).unwrap();
        source = v["versions"][1]["source"].clone();
        source == "unhealthy"
    })
    .await;
    assert_eq!(source, "unhealthy");
    let before = canary.count();
    let url = format!("http://{}/", proxy.addr("public").unwrap());
    for _ in 0..40 {
        assert_eq!(get(&client(), &url, &[]).await.served_by(), "stable");
    }
    assert_eq!(canary.count(), before);
    let metrics = get(&client(), &format!("{admin}/metrics"), &[]).await.body;
    assert_eq!(
        metric(
            &metrics,
            "switchyard_route_weight{route=\"shop\",version=\"canary\"}"
        ),
        Some(0.0)
    );

    // Healthy again: the share comes back.
    canary.faults.health_status.store(200, Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(10), async || proxy.snapshot().routes[0]
            .versions[1]
            .weight
            == 50)
        .await
    );
}
