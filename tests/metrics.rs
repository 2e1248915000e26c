//! Per-version metrics are exact: known traffic in, the same numbers out of /metrics.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_traffic_gives_exact_counters_and_histogram_counts() {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    // The canary has weight 0: only the header rule sends requests to it, so the counts are exact.
    let rules = r#"
    rules:
      - match: { header: { name: "x-canary", value: "1" } }
        version: canary
"#;
    let yaml = two_versions(&stable, &canary, (1, 0), rules).replace(
        "listeners:",
        "admin: { addr: \"127.0.0.1:0\" }\naccess_log: { enabled: false }\nlisteners:",
    );
    let proxy = start_proxy(&yaml).await;
    let base = format!("http://{}", proxy.addr("public").unwrap());
    let admin = format!("http://{}", proxy.admin_addr().unwrap());

    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..10 {
        let base = base.clone();
        tasks.spawn(async move {
            let client = client();
            for i in 0..90 {
                assert_eq!(
                    get(&client, &format!("{base}/s/{worker}/{i}"), &[])
                        .await
                        .status,
                    200
                );
            }
            for i in 0..10 {
                // One canary request in ten answers 500.
                let path = if i == 0 { "?status=500" } else { "" };
                let reply = get(&client, &format!("{base}/c{path}"), &[("x-canary", "1")]).await;
                assert_eq!(reply.status, if i == 0 { 500 } else { 200 });
            }
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }

    let series = |version: &str, class: &str| {
        format!("switchyard_requests_total{{route=\"shop\",status_class=\"{class}\",version=\"{version}\"}}")
    };
    let mut text = String::new();
    // Records finish when each response body ends; poll briefly until all 1000 are in.
    eventually(Duration::from_secs(10), async || {
        text = get(&client(), &format!("{admin}/metrics"), &[]).await.body;
        let total: f64 = [("stable", "2xx"), ("canary", "2xx"), ("canary", "5xx")]
            .iter()
            .filter_map(|(v, c)| metric(&text, &series(v, c)))
            .sum();
        total >= 1000.0
    })
    .await;
    assert_eq!(
        metric(&text, &series("stable", "2xx")),
        Some(900.0),
        "{text}"
    );
    assert_eq!(metric(&text, &series("stable", "5xx")), Some(0.0));
    assert_eq!(metric(&text, &series("canary", "2xx")), Some(90.0));
    assert_eq!(metric(&text, &series("canary", "5xx")), Some(10.0));
    assert_eq!(
        metric(
            &text,
            "switchyard_request_duration_seconds_count{route=\"shop\",version=\"stable\"}"
        ),
        Some(900.0)
    );
    assert_eq!(
        metric(
            &text,
            "switchyard_request_duration_seconds_count{route=\"shop\",version=\"canary\"}"
        ),
        Some(100.0)
    );
    assert_eq!(
        metric(
            &text,
            "switchyard_requests_in_flight{route=\"shop\",version=\"stable\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            "switchyard_route_weight{route=\"shop\",version=\"stable\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "switchyard_route_weight{route=\"shop\",version=\"canary\"}"
        ),
        Some(0.0)
    );
    assert_eq!(metric(&text, "switchyard_config_generation"), Some(1.0));
    assert!(text.contains("switchyard_build_info{version=\""), "{text}");
}

#[tokio::test]
async fn upstream_failures_are_counted_by_kind_under_the_status_the_proxy_answered() {
    let stable = Upstream::start("stable").await;
    let dead = dead_port();
    let yaml = format!(
        r#"
admin: {{ addr: "127.0.0.1:0" }}
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
routes:
  - name: shop
    timeouts: {{ response_header: "100ms" }}
    versions:
      - {{ name: stable, endpoints: ["{}"], weight: 1 }}
      - {{ name: canary, endpoints: ["{dead}"], weight: 0 }}
    rules:
      - match: {{ header: {{ name: "x-canary", value: "1" }} }}
        version: canary
"#,
        stable.addr
    );
    let proxy = start_proxy(&yaml).await;
    let base = format!("http://{}", proxy.addr("public").unwrap());
    let admin = format!("http://{}", proxy.admin_addr().unwrap());
    let client = client();
    for _ in 0..3 {
        assert_eq!(
            get(&client, &format!("{base}/"), &[("x-canary", "1")])
                .await
                .status,
            502
        );
    }
    for _ in 0..2 {
        assert_eq!(
            get(&client, &format!("{base}/?delay_ms=2000"), &[])
                .await
                .status,
            504
        );
    }
    let text = get(&client, &format!("{admin}/metrics"), &[]).await.body;
    let errors = |v: &str, kind: &str| {
        metric(&text, &format!("switchyard_upstream_errors_total{{kind=\"{kind}\",route=\"shop\",version=\"{v}\"}}"))
    };
    assert_eq!(errors("canary", "connect"), Some(3.0), "{text}");
    assert_eq!(errors("stable", "timeout"), Some(2.0));
    assert_eq!(errors("stable", "connect"), Some(0.0));
    assert_eq!(
        metric(
            &text,
            "switchyard_requests_total{route=\"shop\",status_class=\"5xx\",version=\"canary\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &text,
            "switchyard_requests_total{route=\"shop\",status_class=\"5xx\",version=\"stable\"}"
        ),
        Some(2.0)
    );
}
