//! Request limits: oversized heads (431), too many headers (431), bodies over a route's limit
//! (413, declared or streamed), a slowloris connection closed within the header-read bound, and a
//! connection limit that holds extra connections back without refusing accepted ones.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::channel::Channel;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(upstream: &Upstream, extra_top: &str, extra_route: &str) -> String {
    format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
{extra_top}
routes:
  - name: shop
{extra_route}
    versions: [{{ name: stable, endpoints: ["{}"], weight: 1 }}]
"#,
        upstream.addr
    )
}

async fn raw_status(addr: std::net::SocketAddr, bytes: &[u8]) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn oversized_heads_and_too_many_headers_get_431() {
    let upstream = Upstream::start("stable").await;
    let proxy = start_proxy(&config(
        &upstream,
        "limits: { max_request_header_bytes: 16384, max_request_headers: 20 }",
        "",
    ))
    .await;
    let addr = proxy.addr("public").unwrap();
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "x".repeat(40_000)
    );
    assert_eq!(raw_status(addr, big.as_bytes()).await, 431);
    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..40 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(raw_status(addr, many.as_bytes()).await, 431);
    assert_eq!(upstream.count(), 0);
    let ok = get(&client(), &format!("http://{addr}/"), &[("x-small", "1")]).await;
    assert_eq!(ok.status, 200, "a normal request still passes");
}

#[tokio::test]
async fn bodies_over_the_route_limit_get_413_declared_or_streamed() {
    let upstream = Upstream::start("stable").await;
    let proxy = start_proxy(&config(&upstream, "", "    max_body_bytes: 1000")).await;
    let url = format!("http://{}/upload", proxy.addr("public").unwrap());

    let reply = send("POST", &url, &[], &"x".repeat(2000)).await;
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert!(
        reply.body.contains("larger than 1000 bytes"),
        "{}",
        reply.body
    );
    assert_eq!(
        upstream.count(),
        0,
        "a declared oversize body is refused before the upstream"
    );
    assert_eq!(send("POST", &url, &[], &"x".repeat(500)).await.status, 200);

    // Chunked, no length: cut off at the limit.
    let (mut tx, body) = Channel::<Bytes, Infallible>::new(4);
    let client: Client<_, Channel<Bytes, Infallible>> =
        Client::builder(TokioExecutor::new()).build_http();
    let call = tokio::spawn(async move {
        client
            .request(http::Request::post(url).body(body).unwrap())
            .await
    });
    for _ in 0..5 {
        if tx.send_data(Bytes::from(vec![b'y'; 400])).await.is_err() {
            break;
        }
    }
    drop(tx);
    let response = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap()
        .unwrap();
    // The proxy may answer before the client finished sending; either way, never a 2xx.
    if let Ok(r) = response {
        assert_eq!(r.status(), 413);
    }
}

#[tokio::test]
async fn a_slowloris_connection_is_closed_within_the_header_read_timeout() {
    let upstream = Upstream::start("stable").await;
    let proxy = start_proxy(&config(
        &upstream,
        "limits: { header_read_timeout: 500ms }",
        "",
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr("public").unwrap())
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the connection was closed");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn a_listener_at_its_connection_limit_holds_new_connections_back() {
    let upstream = Upstream::start("stable").await;
    let yaml = config(&upstream, "", "").replace(
        r#"addr: "127.0.0.1:0" }"#,
        r#"addr: "127.0.0.1:0", max_connections: 1 }"#,
    );
    let proxy = start_proxy(&yaml).await;
    let addr = proxy.addr("public").unwrap();
    // The first connection is served and stays open (keep-alive).
    let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
    first
        .write_all(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = first.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    // A second one is accepted by the kernel but not served while the first is open.
    let second = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    });
    assert!(
        !eventually(Duration::from_millis(300), async || upstream.count() > 1).await,
        "the second connection waits"
    );
    drop(first);
    let answer = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "served once the first closed: {answer}"
    );
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn a_version_at_its_circuit_breaker_limit_answers_503() {
    let upstream = Upstream::start("stable").await;
    let proxy = start_proxy(&config(&upstream, "", "    max_requests_per_version: 2")).await;
    let base = format!("http://{}", proxy.addr("public").unwrap());
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let url = format!("{base}/slow?delay_ms=1500");
        slow.spawn(async move { get(&client(), &url, &[]).await.status });
    }
    assert!(eventually(Duration::from_secs(10), async || upstream.count() == 2).await);
    let reply = get(&client(), &format!("{base}/fast"), &[]).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(
        reply.body.contains("at its limit of 2 requests in flight"),
        "{}",
        reply.body
    );
    while let Some(s) = slow.join_next().await {
        assert_eq!(s.unwrap(), 200, "the admitted requests complete");
    }
    assert_eq!(
        get(&client(), &format!("{base}/fast"), &[]).await.status,
        200,
        "room again"
    );
}

#[tokio::test]
async fn a_client_over_the_rate_limit_gets_429_with_retry_after() {
    let upstream = Upstream::start("stable").await;
    let proxy = start_proxy(&config(
        &upstream,
        "",
        "    rate_limit: { requests_per_second: 1, burst: 3, key_header: x-api-key }",
    ))
    .await;
    let url = format!("http://{}/", proxy.addr("public").unwrap());
    let client = client();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(get(&client, &url, &[("x-api-key", "team-a")]).await);
    }
    let codes: Vec<u16> = statuses.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(&codes[..3], [200, 200, 200], "the burst passes: {codes:?}");
    assert_eq!(codes[4], 429, "{codes:?}");
    let refused = statuses.iter().find(|r| r.status == 429).unwrap();
    let retry: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    // Another key has its own bucket.
    assert_eq!(
        get(&client, &url, &[("x-api-key", "team-b")]).await.status,
        200
    );
    let text = String::from_utf8_lossy(&proxy.metrics().encode()).into_owned();
    let limited = metric(&text, "switchyard_rate_limited_total{route=\"shop\"}").unwrap();
    assert!((1.0..=2.0).contains(&limited), "{limited}");
}

/// The retry test below leans on its dead endpoint staying dead while other tests start
/// listeners in parallel: no listener can take the port, and a connection to it is refused.
#[tokio::test]
async fn a_dead_port_stays_dead() {
    let dead = dead_port();
    let taken = tokio::net::TcpListener::bind(dead).await;
    assert!(taken.is_err(), "a listener took the dead port {dead}");
    let refused = tokio::net::TcpStream::connect(dead).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn an_idempotent_request_is_retried_on_another_endpoint_after_a_connect_failure() {
    let live = Upstream::start("stable").await;
    let dead = dead_port();
    let yaml = |retries: &str| {
        format!(
            r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
routes:
  - name: shop
{retries}
    versions: [{{ name: stable, endpoints: ["{dead}", "{}"], weight: 1 }}]
"#,
            live.addr
        )
    };
    let proxy = start_proxy(&yaml("    retries: { attempts: 1 }")).await;
    let url = format!("http://{}/", proxy.addr("public").unwrap());
    // Round robin starts at the dead endpoint: the GET is retried on the live one.
    let reply = get(&client(), &url, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let text = String::from_utf8_lossy(&proxy.metrics().encode()).into_owned();
    assert_eq!(
        metric(
            &text,
            "switchyard_retries_total{route=\"shop\",version=\"stable\"}"
        ),
        Some(1.0)
    );
    // A POST with a body is never retried.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(send("POST", &url, &[], "pay=1").await.status.as_u16());
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [200, 502],
        "the POST that met the dead endpoint failed"
    );

    // Without retries configured, the GET that meets the dead endpoint fails.
    let plain = start_proxy(&yaml("")).await;
    let reply = get(
        &client(),
        &format!("http://{}/", plain.addr("public").unwrap()),
        &[],
    )
    .await;
    assert_eq!(reply.status, 502);
}

#[tokio::test]
async fn a_client_that_stalls_its_body_gets_408() {
    let upstream = Upstream::start("stable").await;
    let proxy = start_proxy(&config(
        &upstream,
        "limits: { request_body_idle_timeout: 300ms }",
        "",
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr("public").unwrap())
        .await
        .unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("stalled"), "{answer}");
}
