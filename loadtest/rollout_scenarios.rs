//! The rollout scenario runner: the real proxy (in this process), real upstreams whose error rate
//! and latency are set per scenario and change mid-run, constant-rate traffic, and the time from
//! the fault to the automatic abort.
//!
//! Run: `cargo run --release --example rollout-scenarios` (about five minutes). It prints the
//! table quoted in the README. Everything listens on 127.0.0.1 and every loop is bounded.

#![allow(clippy::unwrap_used)] // a benchmark harness: a failure should stop it loudly

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng;
use serde_json::Value;

/// Faults of one upstream, in parts per million so they can change atomically mid-run.
#[derive(Default)]
struct Faults {
    error_ppm: AtomicU64,
    slow_ppm: AtomicU64,
    slow_ms: AtomicU64,
    dead: AtomicBool,
}

/// Latency noise of a healthy service: about 5 ms median with a long tail (1% near 60 ms).
fn noise_ms(rng: &mut impl Rng) -> f64 {
    let base = 3.0 + rng.random::<f64>() * 4.0;
    let tail = if rng.random::<f64>() < 0.05 {
        rng.random::<f64>() * 25.0
    } else {
        0.0
    };
    let spike = if rng.random::<f64>() < 0.01 {
        40.0 + rng.random::<f64>() * 20.0
    } else {
        0.0
    };
    base + tail + spike
}

async fn upstream(faults: Arc<Faults>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            if faults.dead.load(Ordering::Relaxed) {
                // Dead: stop listening and cut every open connection.
                connections.abort_all();
                return;
            }
            let accepted = tokio::time::timeout(Duration::from_millis(50), listener.accept()).await;
            let Ok(Ok((stream, _))) = accepted else {
                continue;
            };
            let faults = faults.clone();
            let service = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                let faults = faults.clone();
                async move {
                    let (delay, fail) = {
                        let mut rng = rand::rng();
                        let mut ms = noise_ms(&mut rng);
                        if rng.random_range(0..1_000_000) < faults.slow_ppm.load(Ordering::Relaxed)
                        {
                            ms += faults.slow_ms.load(Ordering::Relaxed) as f64;
                        }
                        (
                            ms,
                            rng.random_range(0..1_000_000)
                                < faults.error_ppm.load(Ordering::Relaxed),
                        )
                    };
                    tokio::time::sleep(Duration::from_secs_f64(delay / 1000.0)).await;
                    let mut r = http::Response::new(Full::new(Bytes::from_static(b"ok\n")));
                    if fail {
                        *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    Ok::<_, Infallible>(r)
                }
            });
            connections.spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

struct Run {
    proxy: switchyard::app::Running,
    admin: String,
    stable: Arc<Faults>,
    canary: Arc<Faults>,
    stop: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

async fn start(steps: &str, step_interval: &str, health: bool) -> Run {
    let (stable, canary) = (Arc::new(Faults::default()), Arc::new(Faults::default()));
    for f in [&stable, &canary] {
        f.error_ppm.store(1_000, Ordering::Relaxed); // 0.1% background errors on both
    }
    let (s, c) = (
        upstream(stable.clone()).await,
        upstream(canary.clone()).await,
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("switchyard.yaml");
    let health_check = if health {
        "    health_check: { path: /healthz, interval: 500ms, timeout: 250ms, unhealthy_threshold: 2 }\n"
    } else {
        ""
    };
    std::fs::write(
        &file,
        format!(
            r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
admin: {{ addr: "127.0.0.1:0" }}
access_log: {{ enabled: false }}
routes:
  - name: shop
    timeouts: {{ connect: "250ms" }}
{health_check}    versions:
      - {{ name: stable, endpoints: ["{s}"], weight: 100 }}
      - {{ name: canary, endpoints: ["{c}"], weight: 0 }}
    rollout:
      baseline: stable
      canary: canary
      steps: {steps}
      step_interval: "{step_interval}"
"#
        ),
    )
    .unwrap();
    let proxy = switchyard::app::start_from_file(&file).await.unwrap();
    let admin = format!("http://{}", proxy.admin_addr().unwrap());
    Run {
        proxy,
        admin,
        stable,
        canary,
        stop: Arc::new(AtomicBool::new(false)),
        _dir: dir,
    }
}

impl Run {
    /// Open-loop traffic at `rate` requests/s until stopped (at most five minutes).
    fn traffic(&self, rate: u64) {
        let url = format!("http://{}/", self.proxy.addr("public").unwrap());
        let stop = self.stop.clone();
        tokio::spawn(async move {
            let client: Client<_, Empty<Bytes>> =
                Client::builder(TokioExecutor::new()).build_http();
            let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            let deadline = Instant::now() + Duration::from_secs(300);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                ticker.tick().await;
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move {
                    let request = http::Request::get(url).body(Empty::new()).unwrap();
                    if let Ok(r) = client.request(request).await {
                        let _ = r.into_body().collect().await;
                    }
                });
            }
        });
    }

    async fn route(&self) -> Value {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let request = http::Request::get(format!("{}/api/v1/routes/shop", self.admin))
            .body(Empty::new())
            .unwrap();
        let body = client
            .request(request)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        serde_json::from_slice(&body).unwrap()
    }

    async fn post(&self, path: &str) {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let request = http::Request::post(format!("{}/api/v1/routes/shop/{path}", self.admin))
            .body(Empty::new())
            .unwrap();
        let status = client.request(request).await.unwrap().status();
        assert!(status.is_success(), "{path}: {status}");
    }

    /// Polls every 50 ms until the rollout is in one of `states` or `limit` passes.
    async fn wait_for(&self, states: &[&str], limit: Duration) -> Option<(String, Value)> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let v = self.route().await;
            let state = v["rollout"]["state"].as_str().unwrap_or("").to_string();
            if states.contains(&state.as_str()) {
                return Some((state, v));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.proxy.shutdown().await;
    }
}

/// Runs a fault scenario: warm up at the first step, inject the fault, time the abort.
async fn fault(
    name: &str,
    rate: u64,
    health: bool,
    inject: impl FnOnce(&Run),
) -> (String, Option<f64>, String) {
    let run = start("[20, 50, 100]", "10m", health).await;
    run.traffic(rate);
    run.post("rollout/start").await;
    tokio::time::sleep(Duration::from_secs(5)).await; // warm-up: the window fills with healthy data
    let at = Instant::now();
    inject(&run);
    let outcome = run.wait_for(&["aborted"], Duration::from_secs(60)).await;
    let elapsed = outcome.as_ref().map(|_| at.elapsed().as_secs_f64());
    let why = outcome
        .map(|(_, v)| v["aborted"]["reason"].as_str().unwrap_or("").to_string())
        .unwrap_or_else(|| "not aborted within 60 s".into());
    run.finish().await;
    (name.to_string(), elapsed, why)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("Rollout scenarios: the real proxy, steps [20, 50, 100], default analysis (interval 1s, window 10s, min 20 requests, alpha 1e-3)");
    println!("Traffic open loop, canary at the first step (20%); both versions: ~5 ms median latency with a tail, 0.1% errors.\n");

    let mut rows = Vec::new();
    rows.push((
        fault(
            "canary +5 points of 5xx, 20 canary req/s",
            100,
            false,
            |r| {
                r.canary.error_ppm.store(51_000, Ordering::Relaxed);
            },
        )
        .await,
        10.0,
    ));
    rows.push((
        fault(
            "canary +5 points of 5xx, 50 canary req/s",
            250,
            false,
            |r| {
                r.canary.error_ppm.store(51_000, Ordering::Relaxed);
            },
        )
        .await,
        10.0,
    ));
    rows.push((
        fault(
            "canary +300 ms on 5% of requests (p99 +300 ms)",
            100,
            false,
            |r| {
                r.canary.slow_ms.store(300, Ordering::Relaxed);
                r.canary.slow_ppm.store(50_000, Ordering::Relaxed);
            },
        )
        .await,
        15.0,
    ));
    rows.push((
        fault(
            "every canary endpoint dies, 20 canary req/s",
            100,
            true,
            |r| {
                r.canary.dead.store(true, Ordering::Relaxed);
            },
        )
        .await,
        3.0,
    ));

    println!("| Scenario | Target | Time from fault to abort | Result | Abort reason |");
    println!("|---|---|---|---|---|");
    for ((name, elapsed, why), target) in &rows {
        let (time, ok) = match elapsed {
            Some(t) => (format!("{t:.1} s"), *t <= *target),
            None => ("-".to_string(), false),
        };
        println!(
            "| {name} | ≤ {target} s | {time} | {} | {} |",
            if ok { "met" } else { "MISSED" },
            why.replace('|', "/")
        );
    }

    // Healthy canaries with the same noise on both sides: how many rollouts abort?
    let rounds = 20;
    let mut false_aborts = 0;
    let mut promoted = 0;
    let started = Instant::now();
    for _ in 0..rounds {
        let run = start("[10, 25, 50, 100]", "1500ms", false).await;
        let _ = (&run.stable, &run.canary);
        run.traffic(100);
        run.post("rollout/start").await;
        match run
            .wait_for(&["promoted", "aborted"], Duration::from_secs(60))
            .await
        {
            Some((s, _)) if s == "promoted" => promoted += 1,
            Some(_) => false_aborts += 1,
            None => {}
        }
        run.finish().await;
    }
    println!(
        "\nHealthy canary, {rounds} rollouts of 4 steps (1.5 s each at least): {promoted} promoted, {false_aborts} false aborts ({:.0} s).",
        started.elapsed().as_secs_f64()
    );
}
