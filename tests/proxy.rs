//! The core proxy end to end: real upstreams, the real proxy, a real HTTP client, all on
//! ephemeral loopback ports.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_is_within_one_and_a_half_points_over_10000_requests() {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    let proxy = start_proxy(&two_versions(&stable, &canary, (90, 10), "")).await;
    let url = format!("http://{}/", proxy.addr("public").unwrap());

    let client = client();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            let mut canary = 0u32;
            for _ in 0..10_000 / 32 + 1 {
                let reply = get(&client, &url, &[]).await;
                assert_eq!(reply.status, 200);
                canary += u32::from(reply.served_by() == "canary");
            }
            canary
        });
    }
    let mut on_canary = 0;
    while let Some(n) = tasks.join_next().await {
        on_canary += n.unwrap();
    }
    let total = (10_000 / 32 + 1) * 32;
    let share = f64::from(on_canary) * 100.0 / f64::from(total);
    assert!(
        (share - 10.0).abs() <= 1.5,
        "canary got {share:.2}% of {total}"
    );
    assert_eq!(
        stable.count() + canary.count(),
        total as usize,
        "every request reached one version"
    );
}

#[tokio::test]
async fn rules_pin_requests_to_a_version_with_weight_zero() {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    let rules = r#"
    rules:
      - match: { header: { name: "x-canary", value: "always" } }
        version: canary
      - match: { cookie: { name: "beta", value: "1" } }
        version: canary
      - match: { query: { name: "ring", value: "1" } }
        version: canary
"#;
    let proxy = start_proxy(&two_versions(&stable, &canary, (100, 0), rules)).await;
    let base = format!("http://{}", proxy.addr("public").unwrap());
    let client = client();

    for _ in 0..20 {
        assert_eq!(
            get(&client, &format!("{base}/"), &[("x-canary", "always")])
                .await
                .served_by(),
            "canary"
        );
        assert_eq!(
            get(
                &client,
                &format!("{base}/"),
                &[("cookie", "theme=dark; beta=1")]
            )
            .await
            .served_by(),
            "canary"
        );
        assert_eq!(
            get(&client, &format!("{base}/p?x=2&ring=1"), &[])
                .await
                .served_by(),
            "canary"
        );
        assert_eq!(
            get(&client, &format!("{base}/"), &[("x-canary", "sometimes")])
                .await
                .served_by(),
            "stable"
        );
        assert_eq!(
            get(&client, &format!("{base}/"), &[("cookie", "beta=2")])
                .await
                .served_by(),
            "stable"
        );
    }
    assert_eq!(
        canary.count(),
        60,
        "only pinned requests reach the weight-0 canary"
    );
}

#[tokio::test]
async fn cohort_users_stay_in_their_version_and_only_move_to_the_canary_as_it_grows() {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    let cohort = r#"
    cohort: { key: { header: "x-user-id" }, salt: "shop-2026-11" }
"#;
    // Two proxies with different canary weights stand for one proxy before and after a weight
    // change, and for two members of a fleet: the hash must agree across processes.
    let small = start_proxy(&two_versions(&stable, &canary, (90, 10), cohort)).await;
    let large = start_proxy(&two_versions(&stable, &canary, (50, 50), cohort)).await;
    let client = client();

    let mut at_10 = HashMap::new();
    let mut at_50 = HashMap::new();
    for i in 0..300 {
        let user = format!("user-{i}");
        for (proxy, seen) in [(&small, &mut at_10), (&large, &mut at_50)] {
            let url = format!("http://{}/", proxy.addr("public").unwrap());
            let first = get(&client, &url, &[("x-user-id", &user)])
                .await
                .served_by()
                .to_string();
            for _ in 0..3 {
                let again = get(&client, &url, &[("x-user-id", &user)]).await;
                assert_eq!(
                    again.served_by(),
                    first,
                    "{user} changed version between requests"
                );
            }
            seen.insert(user.clone(), first);
        }
    }
    let canary_at_10 = at_10.values().filter(|v| *v == "canary").count();
    let canary_at_50 = at_50.values().filter(|v| *v == "canary").count();
    for (user, version) in &at_10 {
        if version == "canary" {
            assert_eq!(
                at_50[user], "canary",
                "{user} moved back from canary to stable"
            );
        }
    }
    assert!(
        (10..=60).contains(&canary_at_10),
        "about 10% of 300 users: {canary_at_10}"
    );
    assert!(
        (110..=190).contains(&canary_at_50),
        "about 50% of 300 users: {canary_at_50}"
    );
}

#[tokio::test]
async fn headers_named_in_connection_do_not_reach_the_upstream() {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    let proxy = start_proxy(&two_versions(&stable, &canary, (1, 0), "")).await;

    let mut socket = tokio::net::TcpStream::connect(proxy.addr("public").unwrap())
        .await
        .unwrap();
    socket
        .write_all(
            b"GET /secret HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close, X-Secret\r\n\
              X-Secret: hunter2\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
              X-Kept: yes\r\n\r\n",
        )
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut response))
        .await
        .expect("the proxy closes the connection as asked")
        .unwrap();
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&response)
    );

    let seen = stable.last();
    assert_eq!(seen.path, "/secret");
    for name in ["x-secret", "keep-alive", "proxy-connection"] {
        assert!(
            !seen.headers.contains_key(name),
            "{name} reached the upstream: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.headers["x-kept"], "yes");
    assert_eq!(seen.headers["host"], "shop.example.com", "Host is kept");
}

#[tokio::test]
async fn forwarded_headers_and_request_id_are_set() {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    let proxy = start_proxy(&two_versions(&stable, &canary, (1, 0), "")).await;
    let base = format!("http://{}", proxy.addr("public").unwrap());
    let client = client();

    let reply = get(
        &client,
        &format!("{base}/a"),
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-request-id", "req-42"),
        ],
    )
    .await;
    let seen = stable.last();
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(
        seen.headers["x-forwarded-host"],
        format!("{}", proxy.addr("public").unwrap())
    );
    assert_eq!(seen.headers["x-request-id"], "req-42");
    assert_eq!(reply.headers["x-request-id"], "req-42");

    // What a client says of its own protocol and host is replaced, once, not passed beside ours.
    get(
        &client,
        &format!("{base}/spoof"),
        &[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ],
    )
    .await;
    let seen = stable.last();
    let lines = |name| seen.headers.get_all(name).iter().collect::<Vec<_>>();
    assert_eq!(lines("x-forwarded-proto"), ["http"]);
    assert_eq!(
        lines("x-forwarded-host"),
        [&proxy.addr("public").unwrap().to_string()]
    );

    let reply = get(&client, &format!("{base}/b"), &[]).await;
    let seen = stable.last();
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    let generated = seen.headers["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    assert_eq!(
        reply.headers["x-request-id"],
        generated.as_str(),
        "the client sees the same id"
    );
}

#[tokio::test]
async fn version_header_is_off_by_default_and_names_the_version_when_exposed() {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    let hidden = start_proxy(&two_versions(&stable, &canary, (0, 1), "")).await;
    let shown = start_proxy(&two_versions(
        &stable,
        &canary,
        (0, 1),
        "    expose_version_header: true",
    ))
    .await;
    let client = client();
    let reply = get(
        &client,
        &format!("http://{}/", hidden.addr("public").unwrap()),
        &[],
    )
    .await;
    assert!(!reply.headers.contains_key("x-switchyard-version"));
    let reply = get(
        &client,
        &format!("http://{}/", shown.addr("public").unwrap()),
        &[],
    )
    .await;
    assert_eq!(reply.headers["x-switchyard-version"], "canary");
}

#[tokio::test]
async fn dead_endpoint_answers_502_naming_route_and_version() {
    let stable = Upstream::start("stable").await;
    let dead = dead_port();
    let yaml = format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
routes:
  - name: shop
    versions:
      - {{ name: stable, endpoints: ["{}"], weight: 0 }}
      - {{ name: canary, endpoints: ["{dead}"], weight: 1 }}
"#,
        stable.addr
    );
    let proxy = start_proxy(&yaml).await;
    let reply = get(
        &client(),
        &format!("http://{}/", proxy.addr("public").unwrap()),
        &[],
    )
    .await;
    assert_eq!(reply.status, 502);
    assert!(
        reply.body.contains("route shop") && reply.body.contains("version canary"),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("connection failed"), "{}", reply.body);
}

#[tokio::test]
async fn slow_upstream_answers_504_after_the_response_header_timeout() {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    let timeouts = r#"    timeouts: { response_header: "200ms" }"#;
    let proxy = start_proxy(&two_versions(&stable, &canary, (1, 0), timeouts)).await;
    let base = format!("http://{}", proxy.addr("public").unwrap());
    let client = client();

    let reply = get(&client, &format!("{base}/?delay_ms=5000"), &[]).await;
    assert_eq!(reply.status, 504);
    assert!(
        reply.body.contains("route shop") && reply.body.contains("timed out"),
        "{}",
        reply.body
    );
    // The same proxy still serves a fast request.
    assert_eq!(get(&client, &format!("{base}/"), &[]).await.status, 200);
}

#[tokio::test]
async fn unmatched_host_answers_404() {
    let stable = Upstream::start("stable").await;
    let yaml = format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
routes:
  - name: shop
    match: {{ hosts: ["shop.example.com"] }}
    versions: [{{ name: stable, endpoints: ["{}"], weight: 1 }}]
"#,
        stable.addr
    );
    let proxy = start_proxy(&yaml).await;
    let url = format!("http://{}/", proxy.addr("public").unwrap());
    let client = client();
    let reply = get(&client, &url, &[("host", "other.example.com")]).await;
    assert_eq!(reply.status, 404);
    assert!(reply.body.contains("no route"), "{}", reply.body);
    let reply = get(&client, &url, &[("host", "Shop.Example.com:8080")]).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn endpoints_of_a_version_share_the_load() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let yaml = format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
routes:
  - name: shop
    versions: [{{ name: stable, endpoints: ["{}", "{}"], weight: 1 }}]
"#,
        a.addr, b.addr
    );
    let proxy = start_proxy(&yaml).await;
    let url = format!("http://{}/", proxy.addr("public").unwrap());
    let client = client();
    for _ in 0..100 {
        assert_eq!(get(&client, &url, &[]).await.status, 200);
    }
    assert_eq!((a.count(), b.count()), (50, 50), "round robin");
}

#[tokio::test]
async fn an_http_1_0_upstream_does_not_close_the_client_keep_alive_connection() {
    // An upstream that speaks HTTP/1.0 and closes after each answer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..10 {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
        }
    });
    let proxy = start_proxy(&format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
routes:
  - name: old
    versions: [{{ name: stable, endpoints: ["{upstream}"], weight: 1 }}]
"#
    ))
    .await;
    // One client connection, three requests on it.
    let stream = tokio::net::TcpStream::connect(proxy.addr("public").unwrap())
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for i in 0..3 {
        let request = http::Request::get("/")
            .header("host", "old.example.com")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender
            .send_request(request)
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), http::Version::HTTP_11);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(body, "ok");
    }
}
