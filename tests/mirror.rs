//! Dark launch: copies reach the shadow without ever touching the live answer, writes are not
//! copied unless asked, the comparison reports real differences at their JSON pointer and leaves
//! out ignored fields and noise, and a full queue drops copies and counts them.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;

fn mirrored(live: &Upstream, shadow: SocketAddr, mirror: &str) -> String {
    format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
admin: {{ addr: "127.0.0.1:0" }}
access_log: {{ enabled: false }}
routes:
  - name: shop
    versions:
      - {{ name: stable, endpoints: ["{}"], weight: 1 }}
      - {{ name: dark, endpoints: ["{shadow}"], weight: 0 }}
    mirror: {mirror}
"#,
        live.addr
    )
}

async fn metrics_of(proxy: &switchyard::app::Running) -> String {
    get(
        &client(),
        &format!("http://{}/metrics", proxy.admin_addr().unwrap()),
        &[],
    )
    .await
    .body
}

fn outcome(text: &str, outcome: &str) -> f64 {
    metric(
        text,
        &format!("switchyard_mirror_requests_total{{outcome=\"{outcome}\",route=\"shop\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn a_post_is_not_copied_by_default_and_is_when_opted_in() {
    let live = Upstream::start("stable").await;
    let shadow = Upstream::start("dark").await;
    let proxy = start_proxy(&mirrored(&live, shadow.addr, "{ version: dark }")).await;
    let base = format!("http://{}", proxy.addr("public").unwrap());
    let reply = send(
        "POST",
        &format!("{base}/charge"),
        &[("host", "shop.example.com")],
        "card=1",
    )
    .await;
    assert_eq!((reply.status.as_u16(), reply.served_by()), (200, "stable"));
    let reply = get(
        &client(),
        &format!("{base}/item"),
        &[("host", "shop.example.com")],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(
        eventually(Duration::from_secs(10), async || shadow.count() == 1).await,
        "the GET is copied"
    );
    assert_eq!(shadow.last().path, "/item", "the POST was not");
    assert_eq!(outcome(&metrics_of(&proxy).await, "skipped_method"), 1.0);

    let shadow2 = Upstream::start("dark").await;
    let opted = start_proxy(&mirrored(
        &live,
        shadow2.addr,
        "{ version: dark, methods: [GET, POST] }",
    ))
    .await;
    let base = format!("http://{}", opted.addr("public").unwrap());
    let reply = send(
        "POST",
        &format!("{base}/charge"),
        &[("host", "shop.example.com:8080")],
        "card=1",
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(
        eventually(Duration::from_secs(10), async || shadow2.count() == 1).await,
        "the POST is copied"
    );
    let seen = shadow2.last();
    assert_eq!(seen.path, "/charge");
    assert_eq!(seen.headers["x-switchyard-shadow"], "1");
    assert_eq!(seen.headers["host"], "shop.example.com-shadow:8080");
    // The copy carries the lines the proxy adds, as the live request did.
    let live_seen = live.last();
    assert_eq!(
        seen.headers["x-request-id"],
        live_seen.headers["x-request-id"]
    );
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert!(seen.headers.contains_key("traceparent"));
}

#[tokio::test]
async fn a_dead_or_slow_shadow_leaves_live_answers_intact() {
    let live = Upstream::start("stable").await;
    let dead = dead_port();
    let proxy = start_proxy(&mirrored(&live, dead, "{ version: dark, timeout: 1s }")).await;
    let url = format!("http://{}/a", proxy.addr("public").unwrap());
    for _ in 0..20 {
        let reply = get(&client(), &url, &[]).await;
        assert_eq!(
            (reply.status.as_u16(), reply.body.as_str()),
            (200, "stable\n")
        );
    }
    assert!(
        eventually(Duration::from_secs(10), async || {
            let m = proxy.metrics().encode();
            outcome(&String::from_utf8_lossy(&m), "failed") == 20.0
        })
        .await,
        "every copy failed, and was counted"
    );

    let slow = Upstream::start("dark").await;
    slow.faults.delay_ms.store(3_000, Ordering::Relaxed);
    let proxy = start_proxy(&mirrored(
        &live,
        slow.addr,
        "{ version: dark, timeout: 10s }",
    ))
    .await;
    let url = format!("http://{}/b", proxy.addr("public").unwrap());
    for _ in 0..10 {
        assert_eq!(get(&client(), &url, &[]).await.status, 200);
    }
    // The live answers are all back while every copy is still waiting on the shadow.
    let text = metrics_of(&proxy).await;
    let compared: f64 = ["identical", "different", "incomplete"]
        .iter()
        .filter_map(|r| {
            metric(
                &text,
                &format!("switchyard_shadow_comparisons_total{{result=\"{r}\",route=\"shop\"}}"),
            )
        })
        .sum();
    assert_eq!(compared, 0.0, "no live request waited for its copy");
}

/// An upstream answering JSON made by `body(n)` for its n-th request.
async fn json_upstream(name: &'static str, body: fn(u64) -> String) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let served = served.clone();
            let service = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                let n = served.fetch_add(1, Ordering::Relaxed);
                async move {
                    let mut r = http::Response::new(Full::new(Bytes::from(body(n))));
                    r.headers_mut().insert(
                        "content-type",
                        http::HeaderValue::from_static("application/json"),
                    );
                    r.headers_mut()
                        .insert("x-served-by", http::HeaderValue::from_static(name));
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

#[tokio::test]
async fn the_report_names_real_differences_and_leaves_out_ignored_fields_and_noise() {
    // Live and secondary are two instances of the same version: `nonce` differs between them
    // (noise). The shadow changes `price` (a regression), and `took` differs everywhere but is
    // ignored by configuration.
    let live = json_upstream("stable", |n| {
        format!(r#"{{"id": 7, "price": 10, "took": {n}, "nonce": "a{n}"}}"#)
    })
    .await;
    let secondary = json_upstream("stable-b", |n| {
        format!(
            r#"{{"id": 7, "price": 10, "took": {}, "nonce": "b{n}"}}"#,
            n + 5
        )
    })
    .await;
    let shadow = json_upstream("dark", |n| {
        format!(
            r#"{{"id": 7, "price": 12, "took": {}, "nonce": "c{n}"}}"#,
            n + 9
        )
    })
    .await;
    let proxy = start_proxy(&format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
admin: {{ addr: "127.0.0.1:0" }}
routes:
  - name: shop
    versions:
      - {{ name: stable, endpoints: ["{live}"], weight: 1 }}
      - {{ name: stable-b, endpoints: ["{secondary}"], weight: 0 }}
      - {{ name: dark, endpoints: ["{shadow}"], weight: 0 }}
    mirror: {{ version: dark, secondary: stable-b, ignore_json_paths: ["/took"] }}
"#
    ))
    .await;
    let base = format!("http://{}", proxy.addr("public").unwrap());
    for i in 0..30 {
        assert_eq!(
            get(&client(), &format!("{base}/items/{i}"), &[])
                .await
                .status,
            200
        );
    }
    let admin = format!("http://{}", proxy.admin_addr().unwrap());
    let mut report = Value::Null;
    eventually(Duration::from_secs(10), async || {
        let url = format!("{admin}/api/v1/routes/shop/shadow/report");
        report = serde_json::from_str(&get(&client(), &url, &[]).await.body).unwrap();
        report["total"]["compared"] == 30
    })
    .await;
    assert_eq!(report["total"]["compared"], 30, "{report:#}");
    assert_eq!(report["total"]["identical"], 0);
    let top = report["total"]["top_differences"].as_array().unwrap();
    let paths: Vec<&str> = top.iter().map(|d| d["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/price"], "only the regression: {report:#}");
    assert_eq!(top[0]["count"], 30);
    assert_eq!(
        (top[0]["live"].as_str(), top[0]["shadow"].as_str()),
        (Some("10"), Some("12"))
    );
    assert!(
        report["paths"]["/items/{n}"]["compared"] == 30,
        "paths are normalised: {report:#}"
    );

    // The table a performance engineer reads, from the same API.
    let view: switchyard::shadow::report::ReportView =
        serde_json::from_value(report.clone()).unwrap();
    let text = switchyard::cli::ctl::shadow_report(&view);
    assert!(text.contains("30 compared, 0.0% identical"), "{text}");
    assert!(
        text.contains("/price") && text.contains("10 -> 12"),
        "{text}"
    );

    let reset = send(
        "POST",
        &format!("{admin}/api/v1/routes/shop/shadow/reset"),
        &[],
        "",
    )
    .await;
    let v: Value = serde_json::from_str(&reset.body).unwrap();
    assert_eq!(v["total"]["compared"], 0);
}

#[tokio::test]
async fn a_full_queue_drops_copies_and_counts_them() {
    let live = Upstream::start("stable").await;
    let slow = Upstream::start("dark").await;
    slow.faults.delay_ms.store(2_000, Ordering::Relaxed);
    let proxy = start_proxy(&mirrored(
        &live,
        slow.addr,
        "{ version: dark, queue: 1, concurrency: 1, timeout: 10s }",
    ))
    .await;
    let url = format!("http://{}/c", proxy.addr("public").unwrap());
    for _ in 0..20 {
        assert_eq!(
            get(&client(), &url, &[]).await.status,
            200,
            "live traffic is served whatever the queue"
        );
    }
    let text = metrics_of(&proxy).await;
    let dropped = outcome(&text, "dropped_queue_full");
    assert!(
        dropped >= 17.0,
        "one copy in flight, one waiting for it, one queued at most: {dropped} dropped\n{text}"
    );
    assert!(slow.count() <= 3);
}
