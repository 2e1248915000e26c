//! Malformed and ambiguous requests on a raw socket: the client gets 400 (or what RFC 9112 says),
//! and the upstream never sees a second, smuggled request.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends raw bytes, returns what the proxy answers until it closes (at most 3 s).
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn ambiguous_and_malformed_requests_never_reach_the_upstream_twice() {
    let upstream = Upstream::start("stable").await;
    let proxy = start_proxy(&format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
routes:
  - name: shop
    match: {{ hosts: ["shop.example.com"] }}
    versions: [{{ name: stable, endpoints: ["{}"], weight: 1 }}]
"#,
        upstream.addr
    ))
    .await;
    let addr = proxy.addr("public").unwrap();
    let smuggled = b"GET /smuggled HTTP/1.1\r\nHost: shop.example.com\r\n\r\n";

    // Content-Length with Transfer-Encoding: RFC 9112 §6.1 lets a server process it by
    // Transfer-Encoding alone and then close the connection, which hyper does: the upstream gets
    // the one chunked request, the client gets the connection closed, nothing is smuggled.
    let before = upstream.count();
    let answer = raw(
        addr,
        &[&b"POST /a HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..], smuggled].concat(),
    )
    .await;
    assert!([200, 400].contains(&status_of(&answer)), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(upstream.count() <= before + 1);
    assert!(
        !upstream
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.path == "/smuggled"),
        "smuggled: {answer}"
    );

    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        (
            "two different Content-Length values",
            [&b"POST /a HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 3\r\nContent-Length: 50\r\n\r\nabc"[..], smuggled].concat(),
            &[400],
        ),
        (
            "obfuscated Transfer-Encoding",
            [&b"POST /a HTTP/1.1\r\nHost: shop.example.com\r\nTransfer-Encoding: xchunked\r\nContent-Length: 3\r\n\r\nabc"[..], smuggled].concat(),
            &[400, 501],
        ),
        (
            "Transfer-Encoding not ending in chunked",
            [&b"POST /a HTTP/1.1\r\nHost: shop.example.com\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"[..], smuggled].concat(),
            &[400, 501],
        ),
        (
            "obs-fold header continuation",
            [&b"GET /a HTTP/1.1\r\nHost: shop.example.com\r\nX-Folded: a\r\n b\r\n\r\n"[..], smuggled].concat(),
            &[400],
        ),
        (
            "invalid header name",
            b"GET /a HTTP/1.1\r\nHost: shop.example.com\r\nBad Header: x\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "NUL in a header value",
            b"GET /a HTTP/1.1\r\nHost: shop.example.com\r\nX-A: a\x00b\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "two Host headers",
            b"GET /a HTTP/1.1\r\nHost: shop.example.com\r\nHost: evil.example\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "HTTP/1.1 without Host",
            b"GET /a HTTP/1.1\r\n\r\n".to_vec(),
            &[400],
        ),
    ];
    for (what, bytes, allowed) in cases {
        let before = upstream.count();
        let answer = raw(addr, &bytes).await;
        let status = status_of(&answer);
        assert!(
            allowed.contains(&status),
            "{what}: answered {status}: {answer:?}"
        );
        assert_eq!(
            upstream.count(),
            before,
            "{what}: the upstream saw a request"
        );
        assert!(
            !upstream
                .seen
                .lock()
                .unwrap()
                .iter()
                .any(|s| s.path == "/smuggled"),
            "{what}: smuggled"
        );
    }
}

#[tokio::test]
async fn an_absolute_form_target_decides_the_route_and_the_host_the_upstream_sees() {
    let shop = Upstream::start("shop").await;
    let other = Upstream::start("other").await;
    let proxy = start_proxy(&format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
routes:
  - name: shop
    match: {{ hosts: ["shop.example.com"] }}
    versions: [{{ name: stable, endpoints: ["{}"], weight: 1 }}]
  - name: other
    versions: [{{ name: stable, endpoints: ["{}"], weight: 1 }}]
"#,
        shop.addr, other.addr
    ))
    .await;
    // RFC 9112 §3.2.2: the target's authority wins over the Host header.
    let answer = raw(
        proxy.addr("public").unwrap(),
        b"GET http://shop.example.com/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(shop.count(), 1, "routed by the target's authority");
    assert_eq!(other.count(), 0);
    assert_eq!(
        shop.last().headers["host"],
        "shop.example.com",
        "the Host sent on matches the route"
    );
    assert_eq!(shop.last().path, "/x");
}
