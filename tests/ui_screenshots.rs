//! The README's pictures of the release page, taken in a real browser against a proxy driven into
//! each state: a rollout stepping up, the same rollout after the canary starts failing and the
//! proxy aborts it, and a dark launch's report. Not a test of behaviour (tests/ui.rs is), so it is
//! ignored; regenerate the PNGs in docs/ with
//! `cargo test --test ui_screenshots -- --ignored` (about a minute).

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use browser::Browser;
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// A JSON catalogue. Every build answers an item by its number; `served_at` differs on every
/// answer (ignored by configuration), `request_id` differs between any two instances (noise the
/// secondary shows), and the `dark` build charges one more for every fourth item, adds a field
/// and takes a few milliseconds longer: the differences the report should find.
async fn catalogue(build: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let served = served.clone();
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let n = served.fetch_add(1, Ordering::Relaxed);
                async move {
                    let item: u64 = req
                        .uri()
                        .path()
                        .rsplit('/')
                        .next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    let dark = build == "dark";
                    let price = 10 + item % 7 + u64::from(dark && item.is_multiple_of(4));
                    let beta = if dark { r#", "beta": true"# } else { "" };
                    let body = format!(
                        r#"{{"id": {item}, "name": "item {item}", "price": {price}, "currency": "EUR", "served_at": {n}, "request_id": "{build}-{n}"{beta}}}"#
                    );
                    let wait = if dark { 4 + n % 5 } else { 1 + n % 3 };
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    let mut r = http::Response::new(Full::new(Bytes::from(body)));
                    r.headers_mut().insert(
                        "content-type",
                        http::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(r)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// Steady traffic: three clients on `shop`, one on `catalog`, until `stop` (three minutes at most).
fn traffic(base: String, stop: Arc<AtomicBool>) {
    for client_no in 0..4u64 {
        let (base, stop) = (base.clone(), stop.clone());
        tokio::spawn(async move {
            let client = client();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                let url = if client_no == 0 {
                    format!("{base}/catalog/items/{}", n % 40)
                } else {
                    format!("{base}/")
                };
                let request = http::Request::get(url)
                    .body(http_body_util::Empty::new())
                    .unwrap();
                if let Ok(r) = client.request(request).await {
                    let _ = r.into_body().collect().await;
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(if client_no == 0 { 40 } else { 12 }))
                    .await;
            }
        });
    }
}

async fn route(admin: &str, name: &str) -> Value {
    let reply = get(&client(), &format!("{admin}/api/v1/routes/{name}"), &[]).await;
    serde_json::from_str(&reply.body).unwrap()
}

/// Polls the route until `done` holds (at most `limit`).
async fn wait_for(admin: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let mut v = Value::Null;
    let reached = eventually(limit, async || {
        v = route(admin, "shop").await;
        done(&v)
    })
    .await;
    assert!(reached, "never reached: {v:#}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "regenerates docs/ui-*.png; run with --ignored"]
async fn screenshots_of_a_rollout_an_automatic_abort_and_a_dark_launch() {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    for u in [&stable, &canary] {
        u.faults.jitter_ms.store(12, Ordering::Relaxed);
    }
    let (live, secondary, dark) = (
        catalogue("live").await,
        catalogue("live-b").await,
        catalogue("dark").await,
    );
    let proxy = start_proxy(&format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
admin: {{ addr: "127.0.0.1:0" }}
access_log: {{ enabled: false }}
routes:
  - name: catalog
    match: {{ path_prefix: "/catalog/" }}
    versions:
      - {{ name: stable, endpoints: ["{live}"], weight: 100 }}
      - {{ name: stable-b, endpoints: ["{secondary}"], weight: 0 }}
      - {{ name: dark, endpoints: ["{dark}"], weight: 0 }}
    mirror: {{ version: dark, secondary: stable-b, ignore_json_paths: ["/served_at"] }}
  - name: shop
    versions:
      - {{ name: stable, endpoints: ["{s}"], weight: 100 }}
      - {{ name: canary, endpoints: ["{c}"], weight: 0 }}
    rollout:
      baseline: stable
      canary: canary
      steps: [10, 25, 50, 100]
      step_interval: "8s"
      analysis: {{ interval: "1s", window: "10s", min_requests: 30 }}
"#,
        s = stable.addr,
        c = canary.addr,
    ))
    .await;
    let admin = format!("http://{}", proxy.admin_addr().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    traffic(
        format!("http://{}", proxy.addr("public").unwrap()),
        stop.clone(),
    );
    let docs = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/docs"));
    let browser = Browser::start(1200, 3000).await;
    browser.goto(&format!("{admin}/ui/")).await;
    tokio::time::sleep(Duration::from_secs(6)).await;

    // A rollout stepping up: started from the API, photographed at its third step.
    let started = send(
        "POST",
        &format!("{admin}/api/v1/routes/shop/rollout/start"),
        &[],
        "",
    )
    .await;
    assert_eq!(started.status, 200, "{}", started.body);
    wait_for(&admin, Duration::from_secs(60), |v| {
        v["rollout"]["step"] == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    browser
        .screenshot_of("[data-route='shop']", &docs.join("ui-rollout.png"))
        .await;

    // The canary starts failing one request in four: the proxy aborts the rollout by itself.
    canary.faults.error_every.store(4, Ordering::Relaxed);
    let v = wait_for(&admin, Duration::from_secs(60), |v| {
        v["rollout"]["state"] == "aborted"
    })
    .await;
    assert_eq!(v["aborted"]["by"], "analysis", "{v:#}");
    // Past the table's 10 s window, so its figures are the canary's after the abort.
    tokio::time::sleep(Duration::from_secs(11)).await;
    browser
        .screenshot_of("[data-route='shop']", &docs.join("ui-abort.png"))
        .await;

    // The dark launch's report, after a minute of copies.
    let report = browser
        .execute(
            "return document.querySelector(`[data-route='catalog'] .panel.shadow .figure-value`)?.textContent;",
            json!([]),
        )
        .await;
    assert!(report.as_str().is_some_and(|n| n != "0"), "{report}");
    browser
        .screenshot_of("[data-route='catalog']", &docs.join("ui-shadow.png"))
        .await;
    assert_eq!(browser.severe_log().await, Vec::<String>::new());
    browser.quit().await;
    stop.store(true, Ordering::Relaxed);
    proxy.shutdown().await;
}
