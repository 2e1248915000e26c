//! Connections that never speak: the header-read timeout counts from accept (on cleartext
//! HTTP/1.1, before an HTTP/2 preface, after a TLS handshake), a connection idle between requests
//! is closed by the keep-alive timeout and not by the header-read timeout, and a request being
//! served is cut by neither. Raw sockets; every wait is bounded and no duration is judged.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long a test waits for the proxy to close a connection: far past every timeout set here.
const BOUND: Duration = Duration::from_secs(10);

fn config(upstream: &Upstream, limits: &str, listener_tls: &str) -> String {
    format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0"{listener_tls} }}]
limits: {{ {limits} }}
routes:
  - name: shop
    versions: [{{ name: stable, endpoints: ["{}"], weight: 1 }}]
"#,
        upstream.addr
    )
}

fn header_timeouts(proxy: &switchyard::app::Running) -> f64 {
    let text = String::from_utf8_lossy(&proxy.metrics().encode()).into_owned();
    metric(
        &text,
        "switchyard_downstream_refused_total{kind=\"header_timeout\"}",
    )
    .unwrap_or(0.0)
}

/// Sends `first` (maybe nothing), then waits for the proxy to close the connection; returns
/// whether it did within [`BOUND`] and what it sent.
async fn closed_after<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, first: &[u8]) -> (bool, String) {
    if !first.is_empty() {
        s.write_all(first).await.unwrap();
    }
    let mut out = Vec::new();
    let closed = matches!(
        tokio::time::timeout(BOUND, s.read_to_end(&mut out)).await,
        Ok(Ok(_)) | Ok(Err(_))
    );
    (closed, String::from_utf8_lossy(&out).into_owned())
}

/// Reads one response with a Content-Length body from a kept-alive connection.
async fn read_response<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..100 {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_string)
                })
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        let n = tokio::time::timeout(BOUND, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed mid-response: {text}");
        got.extend_from_slice(&buf[..n]);
    }
    panic!("no complete response");
}

#[tokio::test]
async fn a_connection_that_never_sends_a_byte_is_closed_by_the_header_read_timeout() {
    let upstream = Upstream::start("stable").await;
    let proxy = start_proxy(&config(&upstream, "header_read_timeout: 300ms", "")).await;
    let s = tokio::net::TcpStream::connect(proxy.addr("public").unwrap())
        .await
        .unwrap();
    let (closed, answer) = closed_after(s, b"").await;
    assert!(closed, "the silent connection was closed");
    assert_eq!(answer, "", "nothing was answered");
    assert!(eventually(BOUND, async || header_timeouts(&proxy) == 1.0).await);
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn first_bytes_that_never_complete_a_head_or_the_http2_preface_are_closed_too() {
    let upstream = Upstream::start("stable").await;
    let proxy = start_proxy(&config(&upstream, "header_read_timeout: 300ms", "")).await;
    let addr = proxy.addr("public").unwrap();
    let cases: [(&str, &[u8]); 4] = [
        ("part of the HTTP/2 preface", b"PRI * HTTP/2.0\r\n"),
        (
            "the preface but its last bytes",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n",
        ),
        (
            "part of a request head",
            b"GET / HTTP/1.1\r\nHost: shop\r\n",
        ),
        ("empty lines only", b"\r\n\r\n"),
    ];
    for (i, (what, first)) in cases.into_iter().enumerate() {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (closed, _) = closed_after(s, first).await;
        assert!(closed, "{what}: closed");
        assert!(
            eventually(BOUND, async || header_timeouts(&proxy) == (i + 1) as f64).await,
            "{what}: counted"
        );
    }
    assert_eq!(upstream.count(), 0);
}

fn dev(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("certs-dev")
        .join(file)
}

/// The listener's TLS settings (the development certificate), as a YAML fragment.
fn tls_listener() -> String {
    format!(
        ", tls: {{ cert: \"{}\", key: \"{}\" }}",
        dev("localhost.crt").display(),
        dev("localhost.key").display()
    )
}

async fn tls_connect(
    addr: SocketAddr,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dev("ca.crt")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_tls_connection_that_never_sends_a_request_is_closed() {
    let upstream = Upstream::start("stable").await;
    let tls = tls_listener();
    let proxy = start_proxy(&config(&upstream, "header_read_timeout: 300ms", &tls)).await;
    let addr = proxy.addr("public").unwrap();
    for (i, alpn) in [&b"http/1.1"[..], b"h2"].into_iter().enumerate() {
        let s = tls_connect(addr, alpn).await;
        let (closed, _) = closed_after(s, b"").await;
        assert!(closed, "{}: closed", String::from_utf8_lossy(alpn));
        assert!(eventually(BOUND, async || header_timeouts(&proxy) == (i + 1) as f64).await);
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout() {
    let upstream = Upstream::start("stable").await;
    let proxy = start_proxy(&config(
        &upstream,
        "header_read_timeout: 10s, keep_alive_timeout: 300ms",
        "",
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr("public").unwrap())
        .await
        .unwrap();
    s.write_all(b"GET /1 HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (closed, rest) = closed_after(s, b"").await;
    assert!(closed, "the idle connection was closed");
    assert_eq!(rest, "");
    assert_eq!(
        header_timeouts(&proxy),
        0.0,
        "an idle close is no client fault"
    );
}

#[tokio::test]
async fn between_requests_the_keep_alive_timeout_applies_not_the_header_read_timeout() {
    let upstream = Upstream::start("stable").await;
    let proxy = start_proxy(&config(
        &upstream,
        "header_read_timeout: 300ms, keep_alive_timeout: 60s",
        "",
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr("public").unwrap())
        .await
        .unwrap();
    s.write_all(b"GET /1 HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    // Idle for several header-read timeouts, far from the keep-alive timeout.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    s.write_all(b"GET /2 HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(upstream.count(), 2);
    assert_eq!(header_timeouts(&proxy), 0.0);
}

#[tokio::test]
async fn a_request_being_served_is_cut_by_neither_timeout() {
    let upstream = Upstream::start("stable").await;
    let proxy = start_proxy(&config(
        &upstream,
        "header_read_timeout: 200ms, keep_alive_timeout: 200ms",
        "",
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr("public").unwrap())
        .await
        .unwrap();
    // The upstream takes several times both timeouts to answer.
    s.write_all(b"GET /slow?delay_ms=1000 HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(header_timeouts(&proxy), 0.0);
}

#[tokio::test]
async fn a_stalled_head_after_a_refused_upgrade_is_still_closed() {
    // After a request asking to upgrade, the framing scanner steps aside for good (the bytes that
    // follow may be a tunnel's), so the supervisor sets no header-read deadline; when the upstream
    // answers without switching protocols the connection goes on as HTTP/1.1, and hyper's
    // header-read timer (the backstop, checked on the supervisor's ticks) must close a head that
    // never completes.
    let upstream = Upstream::start("stable").await;
    let proxy = start_proxy(&config(
        &upstream,
        "header_read_timeout: 200ms, keep_alive_timeout: 200ms",
        "",
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr("public").unwrap())
        .await
        .unwrap();
    s.write_all(
        b"GET /1 HTTP/1.1\r\nHost: shop\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = read_response(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (closed, rest) = closed_after(s, b"GET /2 HTTP/1.1\r\nHost: sh").await;
    assert!(closed, "the stalled head was closed");
    assert!(!rest.contains("HTTP/1.1 200"), "{rest}");
    assert_eq!(upstream.count(), 1);
}

fn parked(proxy: &switchyard::app::Running) -> f64 {
    let text = String::from_utf8_lossy(&proxy.metrics().encode()).into_owned();
    metric(&text, "switchyard_downstream_connections_parked").unwrap_or(-1.0)
}

/// Sends one GET on a kept-alive connection and returns the answer.
async fn get_on<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, path: &str) -> String {
    let head = format!("GET {path} HTTP/1.1\r\nHost: shop\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    read_response(s).await
}

/// An idle HTTP/1.1 connection parks (its buffers given back), and its next request, whole or
/// in pieces, is served on the same socket; in cleartext and over TLS.
async fn parks_and_serves_on<S: AsyncRead + AsyncWrite + Unpin>(
    proxy: &switchyard::app::Running,
    upstream: &Upstream,
    mut s: S,
) {
    let before = upstream.count();
    assert!(get_on(&mut s, "/1").await.starts_with("HTTP/1.1 200"));
    assert!(
        eventually(BOUND, async || parked(proxy) == 1.0).await,
        "the idle connection parked"
    );
    let answer = get_on(&mut s, "/2").await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "after parking: {answer}"
    );
    assert!(eventually(BOUND, async || parked(proxy) == 1.0).await);
    // A head split by a pause longer than the release delay: a connection reading a head is
    // not idle, so it does not park in the middle of it.
    s.write_all(b"GET /3 HTTP/1.1\r\nHo").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(b"st: shop\r\n\r\n").await.unwrap();
    let answer = read_response(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "split head: {answer}");
    assert_eq!(upstream.count(), before + 3);
    assert_eq!(upstream.last().path, "/3");
}

#[tokio::test]
async fn an_idle_connection_parks_and_serves_its_next_request_on_the_same_socket() {
    let upstream = Upstream::start("stable").await;
    let tls = tls_listener();
    for listener_tls in ["", tls.as_str()] {
        let proxy = start_proxy(&config(&upstream, "idle_release_after: 50ms", listener_tls)).await;
        let addr = proxy.addr("public").unwrap();
        assert_eq!(parked(&proxy), 0.0);
        if listener_tls.is_empty() {
            let s = tokio::net::TcpStream::connect(addr).await.unwrap();
            parks_and_serves_on(&proxy, &upstream, s).await;
        } else {
            parks_and_serves_on(&proxy, &upstream, tls_connect(addr, b"http/1.1").await).await;
        }
    }
}

#[tokio::test]
async fn a_parked_connection_is_closed_by_the_keep_alive_timeout_and_by_a_drain() {
    let upstream = Upstream::start("stable").await;
    let limits = "idle_release_after: 50ms, keep_alive_timeout: 400ms";
    let proxy = start_proxy(&config(&upstream, limits, "")).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr("public").unwrap())
        .await
        .unwrap();
    assert!(get_on(&mut s, "/1").await.starts_with("HTTP/1.1 200"));
    assert!(eventually(BOUND, async || parked(&proxy) == 1.0).await);
    let (closed, rest) = closed_after(s, b"").await;
    assert!(
        closed,
        "the parked connection was closed at the keep-alive timeout"
    );
    assert_eq!(rest, "");
    assert_eq!(parked(&proxy), 0.0, "no longer counted once closed");
    assert_eq!(
        header_timeouts(&proxy),
        0.0,
        "an idle close is no client fault"
    );

    // Draining closes a parked connection at once instead of waiting for its next request.
    let limits = "idle_release_after: 50ms, keep_alive_timeout: 60s";
    let proxy = start_proxy(&config(&upstream, limits, "")).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr("public").unwrap())
        .await
        .unwrap();
    assert!(get_on(&mut s, "/1").await.starts_with("HTTP/1.1 200"));
    assert!(eventually(BOUND, async || parked(&proxy) == 1.0).await);
    let stopped = tokio::spawn(proxy.shutdown());
    let (closed, rest) = closed_after(s, b"").await;
    assert!(closed, "the parked connection was closed by the drain");
    assert_eq!(rest, "");
    tokio::time::timeout(BOUND, stopped).await.unwrap().unwrap();
}

/// Reads until the proxy closes a TLS connection; true for a clean close (`close_notify`, then
/// the end) within [`BOUND`]: a bare FIN reads as an error.
async fn closed_cleanly(mut s: impl AsyncRead + Unpin) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(BOUND, s.read_to_end(&mut rest)).await,
        Ok(Ok(0))
    )
}

#[tokio::test]
async fn a_parked_tls_connection_is_closed_with_a_close_notify_by_the_keep_alive_timeout_and_by_a_drain(
) {
    let upstream = Upstream::start("stable").await;
    let tls = tls_listener();
    let limits = "idle_release_after: 50ms, keep_alive_timeout: 400ms";
    let proxy = start_proxy(&config(&upstream, limits, &tls)).await;
    let mut s = tls_connect(proxy.addr("public").unwrap(), b"http/1.1").await;
    assert!(get_on(&mut s, "/1").await.starts_with("HTTP/1.1 200"));
    assert!(eventually(BOUND, async || parked(&proxy) == 1.0).await);
    assert!(closed_cleanly(s).await, "closed at the keep-alive timeout");
    assert_eq!(parked(&proxy), 0.0, "no longer counted once closed");

    let limits = "idle_release_after: 50ms, keep_alive_timeout: 60s";
    let proxy = start_proxy(&config(&upstream, limits, &tls)).await;
    let mut s = tls_connect(proxy.addr("public").unwrap(), b"http/1.1").await;
    assert!(get_on(&mut s, "/1").await.starts_with("HTTP/1.1 200"));
    assert!(eventually(BOUND, async || parked(&proxy) == 1.0).await);
    let stopped = tokio::spawn(proxy.shutdown());
    assert!(closed_cleanly(s).await, "closed by the drain");
    tokio::time::timeout(BOUND, stopped).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_first_segment_of_one_byte_is_waited_on_then_served_as_http1() {
    // `P` could start a POST or h2c's `PRI`: the proxy peeks again until it can tell.
    let upstream = Upstream::start("stable").await;
    let proxy = start_proxy(&config(&upstream, "", "")).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr("public").unwrap())
        .await
        .unwrap();
    s.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"OST /p HTTP/1.1\r\nHost: shop\r\nContent-Length: 2\r\n\r\nok")
        .await
        .unwrap();
    let answer = read_response(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(upstream.last().path, "/p");
}
