//! Edge trust on raw sockets: what a client does wrong is answered 4xx and counted as the
//! client's (`switchyard_downstream_errors_total` once routed, `_refused_total` before), never as
//! the version's 5xx, an upstream error, an analysis count or toward passive ejection; the
//! upstream never sees a second, smuggled request. One test per family of RFC 9112 / RFC 9110
//! cases: chunked framing, a body that fails after the upstream got part of it, a truncated body,
//! a client that leaves, a chunk past the body limit, Host and target syntax, transfer codings and
//! methods, X-Forwarded-For, `Upgrade: h2c`, and the framing of the upstream's answer.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(5);
const POST: &[u8] = b"POST /pay HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n";
const SMUGGLED: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: shop\r\n\r\n";

fn single(endpoint: SocketAddr, extra: &str) -> String {
    format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
access_log: {{ enabled: false }}
routes:
  - name: shop
{extra}
    versions: [{{ name: stable, endpoints: ["{endpoint}"], weight: 1 }}]
"#
    )
}

/// The counters a test reads before and after each case.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Counts {
    malformed: f64,
    truncated: f64,
    too_large: f64,
    closed: f64,
    refused_malformed: f64,
    refused_unsupported: f64,
    upstream_errors: f64,
    requests: f64,
    five_xx: f64,
    /// The canary analysis's request count for the version.
    analysed: u64,
}

fn counts(proxy: &switchyard::app::Running) -> Counts {
    let text = String::from_utf8_lossy(&proxy.metrics().encode()).into_owned();
    let m = |series: &str| metric(&text, series).unwrap_or(0.0);
    let fault = |kind: &str| {
        m(&format!(
            "switchyard_downstream_errors_total{{kind=\"{kind}\",route=\"shop\",version=\"stable\"}}"
        ))
    };
    let class = |c: &str| {
        m(&format!(
            "switchyard_requests_total{{route=\"shop\",status_class=\"{c}\",version=\"stable\"}}"
        ))
    };
    Counts {
        malformed: fault("malformed"),
        truncated: fault("truncated"),
        too_large: fault("too_large"),
        closed: fault("closed"),
        refused_malformed: m("switchyard_downstream_refused_total{kind=\"malformed\"}"),
        refused_unsupported: m("switchyard_downstream_refused_total{kind=\"unsupported\"}"),
        upstream_errors: ["connect", "timeout", "reset", "protocol"]
            .iter()
            .map(|k| {
                m(&format!(
                    "switchyard_upstream_errors_total{{kind=\"{k}\",route=\"shop\",version=\"stable\"}}"
                ))
            })
            .sum(),
        requests: ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().map(|c| class(c)).sum(),
        five_xx: class("5xx"),
        analysed: proxy.snapshot().routes[0].versions[0]
            .metrics
            .stats
            .counts()
            .requests,
    }
}

/// Waits (bounded) until the counters satisfy `check` (a request is counted when its response
/// body is dropped, just after the client has read it); returns them either way.
async fn settle(proxy: &switchyard::app::Running, check: impl Fn(&Counts) -> bool) -> Counts {
    for _ in 0..200 {
        let c = counts(proxy);
        if check(&c) {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    counts(proxy)
}

fn smuggled(upstream: &Upstream) -> bool {
    upstream
        .seen
        .lock()
        .unwrap()
        .iter()
        .any(|s| s.path == "/smuggled")
}

#[tokio::test]
async fn malformed_chunked_bodies_get_400_counted_as_the_clients_and_nothing_is_smuggled() {
    let upstream = Upstream::start("stable").await;
    let proxy = start_proxy(&single(upstream.addr, "")).await;
    let addr = proxy.addr("public").unwrap();
    let cases: &[(&str, &[u8])] = &[
        ("a size that is not hex", b"zz\r\nabc\r\n0\r\n\r\n"),
        ("a 0x prefix", b"0x3\r\nabc\r\n0\r\n\r\n"),
        ("a plus sign", b"+3\r\nabc\r\n0\r\n\r\n"),
        ("a minus sign", b"-3\r\nabc\r\n0\r\n\r\n"),
        ("an underscore", b"3_0\r\nabc\r\n0\r\n\r\n"),
        ("whitespace before the size", b" 3\r\nabc\r\n0\r\n\r\n"),
        ("whitespace after the size", b"3 \r\nabc\r\n0\r\n\r\n"),
        ("a tab after the size", b"3\t\r\nabc\r\n0\r\n\r\n"),
        ("a bare LF after the size", b"3\nabc\r\n0\r\n\r\n"),
        ("a CR without LF after the size", b"3\rabc\r\n0\r\n\r\n"),
        ("data not followed by CRLF", b"3\r\nabcX0\r\n\r\n"),
        ("more data than the size", b"3\r\nabcd\r\n0\r\n\r\n"),
        ("a bare LF after the data", b"3\r\nabc\n0\r\n\r\n"),
        ("a bare LF after the last chunk", b"3\r\nabc\r\n0\n\r\n"),
        ("a bare LF ending the body", b"3\r\nabc\r\n0\r\n\n"),
        (
            "a size of 18 hex digits",
            b"000000000000000003\r\nabc\r\n0\r\n\r\n",
        ),
        (
            "a size past 64 bits",
            b"fffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        ),
        (
            "a control character in an extension",
            b"3;a=\x01\r\nabc\r\n0\r\n\r\n",
        ),
        ("a NUL in an extension", b"3;a\x00b\r\nabc\r\n0\r\n\r\n"),
        (
            "an extension name that is not a token",
            b"3;@\r\nabc\r\n0\r\n\r\n",
        ),
        (
            "whitespace before CRLF in an extension",
            b"3;a \r\nabc\r\n0\r\n\r\n",
        ),
        (
            "an unterminated quoted extension",
            b"3;a=\"x\r\nabc\r\n0\r\n\r\n",
        ),
        ("a bare LF in an extension", b"3;a\nabc\r\n0\r\n\r\n"),
        (
            "a trailer ending in a bare LF",
            b"3\r\nabc\r\n0\r\nX-T: v\n\r\n",
        ),
        (
            "a space in a trailer name",
            b"3\r\nabc\r\n0\r\nX T: v\r\n\r\n",
        ),
        (
            "whitespace before a trailer's colon",
            b"3\r\nabc\r\n0\r\nX-T : v\r\n\r\n",
        ),
        (
            "a trailer without a colon",
            b"3\r\nabc\r\n0\r\nnocolon\r\n\r\n",
        ),
        ("an obs-folded trailer", b"3\r\nabc\r\n0\r\n folded\r\n\r\n"),
        (
            "a NUL in a trailer value",
            b"3\r\nabc\r\n0\r\nX-T: a\x00b\r\n\r\n",
        ),
    ];
    for (what, body) in cases {
        let before = counts(&proxy);
        let seen = upstream.count();
        let answer = raw_exchange(addr, &[POST, body, SMUGGLED].concat(), LIMIT).await;
        assert_eq!(status_of(&answer), 400, "{what}: {answer}");
        assert!(
            answer.contains("the request body is malformed"),
            "{what}: {answer}"
        );
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{what}: {answer}"
        );
        assert!(upstream.count() <= seen + 1, "{what}: a second request");
        assert!(!smuggled(&upstream), "{what}: smuggled");
        let after = settle(&proxy, |c| c.malformed > before.malformed).await;
        assert_eq!(
            after,
            Counts {
                malformed: before.malformed + 1.0,
                requests: before.requests + 1.0,
                ..before
            },
            "{what}: counted once, as the client's, and nowhere else"
        );
    }
    assert!(
        proxy.snapshot().routes[0].versions[0].health[0].usable(),
        "no ejection"
    );

    // The strict reading still takes every valid form: BWS before extensions, quoted values,
    // leading zeros up to 16 digits, upper-case hex, trailers.
    let valid = b"3 ;a = b ; c=\"q \\\" \"\r\nabc\r\n000000000000000A\r\n0123456789\r\n\
0;last\r\nX-Sum: 1\r\n\r\n";
    let answer = raw_exchange(
        addr,
        &[&POST[..POST.len() - 2], b"Connection: close\r\n\r\n", valid].concat(),
        LIMIT,
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(answer.ends_with("stable\nabc0123456789"), "{answer}");
}

/// An upstream that reads each body frame by frame and records how much arrived and whether it
/// ended cleanly; it counts the connections it accepted and the request heads it saw.
struct BodyUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    heads: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<(usize, bool)>>>,
}

impl BodyUpstream {
    async fn start() -> BodyUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (connections, heads) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let (c, h, b) = (connections.clone(), heads.clone(), bodies.clone());
        tokio::spawn(async move {
            for _ in 0..100 {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::Relaxed);
                let (h, b) = (h.clone(), b.clone());
                let service = service_fn(move |req: http::Request<Incoming>| {
                    let (h, b) = (h.clone(), b.clone());
                    async move {
                        h.fetch_add(1, Ordering::Relaxed);
                        let mut body = req.into_body();
                        let mut got = 0;
                        let complete = loop {
                            match body.frame().await {
                                Some(Ok(f)) => got += f.data_ref().map_or(0, |d| d.len()),
                                Some(Err(_)) => break false,
                                None => break true,
                            }
                        };
                        b.lock().unwrap().push((got, complete));
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("ok"))))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        BodyUpstream {
            addr,
            connections,
            heads,
            bodies,
        }
    }
}

/// Sends `first`, waits until the upstream has the request head, sends `rest`; returns the answer.
async fn in_two_parts(addr: SocketAddr, up: &BodyUpstream, first: &[u8], rest: &[u8]) -> String {
    let heads = up.heads.load(Ordering::Relaxed);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(first).await.unwrap();
    assert!(
        eventually(LIMIT, async || up.heads.load(Ordering::Relaxed) > heads).await,
        "the upstream got the head"
    );
    s.write_all(rest).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(LIMIT, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_body_that_fails_after_the_upstream_got_part_of_it_aborts_that_upstream_request() {
    let up = BodyUpstream::start().await;
    let proxy = start_proxy(&single(up.addr, "")).await;
    let addr = proxy.addr("public").unwrap();
    let before = counts(&proxy);

    let answer = in_two_parts(addr, &up, &[POST, b"5\r\nhello\r\n"].concat(), b"zz\r\n").await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert!(
        answer.contains("malformed: chunk size is not hexadecimal digits"),
        "{answer}"
    );
    assert!(
        eventually(LIMIT, async || !up.bodies.lock().unwrap().is_empty()).await,
        "the upstream's request ended"
    );
    assert_eq!(
        up.bodies.lock().unwrap()[0],
        (5, false),
        "the upstream got the first chunk, then its request was aborted"
    );
    let after = settle(&proxy, |c| c.malformed > before.malformed).await;
    assert_eq!(
        after,
        Counts {
            malformed: before.malformed + 1.0,
            requests: before.requests + 1.0,
            ..before
        }
    );

    // The aborted upstream connection is not reused: the next request opens another one.
    let reply = send("POST", &format!("http://{addr}/next"), &[], "fine").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(up.connections.load(Ordering::Relaxed), 2);
    assert_eq!(up.bodies.lock().unwrap()[1], (4, true));
}

#[tokio::test]
async fn a_truncated_body_and_a_client_that_leaves_are_the_clients_faults() {
    let up = BodyUpstream::start().await;
    let proxy = start_proxy(&single(up.addr, "")).await;
    let addr = proxy.addr("public").unwrap();
    let before = counts(&proxy);

    // Ten bytes promised, three sent, then the client closes its sending side.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /t HTTP/1.1\r\nHost: shop\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(LIMIT, s.read_to_end(&mut out)).await;
    let answer = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert!(answer.contains("the request body is truncated"), "{answer}");
    let after = settle(&proxy, |c| c.truncated > before.truncated).await;
    assert_eq!(
        after,
        Counts {
            truncated: before.truncated + 1.0,
            requests: before.requests + 1.0,
            ..before
        }
    );
    assert!(eventually(LIMIT, async || !up.bodies.lock().unwrap().is_empty()).await);
    assert!(
        !up.bodies.lock().unwrap()[0].1,
        "the upstream request was aborted"
    );

    // A client that leaves with its chunked body half sent.
    let before = after;
    let heads = up.heads.load(Ordering::Relaxed);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&[POST, b"5\r\nhello\r\n"].concat())
        .await
        .unwrap();
    assert!(eventually(LIMIT, async || up.heads.load(Ordering::Relaxed) > heads).await);
    drop(s);
    let after = settle(&proxy, |c| c.requests > before.requests).await;
    assert_eq!(after.upstream_errors, before.upstream_errors);
    assert_eq!(after.five_xx, before.five_xx);
    assert_eq!(after.analysed, before.analysed);
    assert_eq!(
        after.truncated + after.closed,
        before.truncated + before.closed + 1.0,
        "{after:?}"
    );
}

#[tokio::test]
async fn a_chunk_announced_past_the_body_limit_is_refused_before_its_data_goes_upstream() {
    let up = BodyUpstream::start().await;
    let proxy = start_proxy(&single(up.addr, "    max_body_bytes: 1000")).await;
    let addr = proxy.addr("public").unwrap();
    let before = counts(&proxy);

    // The first chunk says a megabyte: 413 before anything is sent upstream.
    let big = [POST, b"100000\r\n", &[b'x'; 100][..]].concat();
    let answer = raw_exchange(addr, &big, LIMIT).await;
    assert_eq!(status_of(&answer), 413, "{answer}");
    assert_eq!(
        up.heads.load(Ordering::Relaxed),
        0,
        "the upstream saw nothing"
    );
    let after = settle(&proxy, |c| c.too_large > before.too_large).await;
    assert_eq!(
        after,
        Counts {
            too_large: before.too_large + 1.0,
            requests: before.requests + 1.0,
            ..before
        }
    );

    // A small first chunk goes through; the next one announces too much and is refused before
    // any of its bytes are forwarded.
    let answer = in_two_parts(
        addr,
        &up,
        &[POST, b"10\r\n0123456789abcdef\r\n"].concat(),
        &[&b"fffff\r\n"[..], &[b'y'; 200]].concat(),
    )
    .await;
    assert_eq!(status_of(&answer), 413, "{answer}");
    assert!(eventually(LIMIT, async || !up.bodies.lock().unwrap().is_empty()).await);
    let (got, complete) = up.bodies.lock().unwrap()[0];
    assert!(
        !complete && got <= 16,
        "got {got} bytes, complete: {complete}"
    );
    let after = settle(&proxy, |c| c.too_large > before.too_large + 1.0).await;
    assert_eq!(after.too_large, before.too_large + 2.0);
    assert_eq!((after.upstream_errors, after.five_xx), (0.0, 0.0));
}

#[tokio::test]
async fn invalid_host_and_target_syntax_gets_400_before_routing() {
    let upstream = Upstream::start("stable").await;
    let proxy = start_proxy(&single(upstream.addr, "")).await;
    let addr = proxy.addr("public").unwrap();
    let head = |line: &str, host: &str| {
        format!("{line} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("a slash", head("GET /", "shop/evil"), "invalid Host"),
        (
            "user information",
            head("GET /", "user@shop"),
            "invalid Host",
        ),
        ("a space", head("GET /", "shop evil"), "invalid Host"),
        (
            "an empty Host",
            head("GET /", ""),
            "invalid Host: empty host",
        ),
        (
            "a port that is not a number",
            head("GET /", "shop:http"),
            "invalid port",
        ),
        (
            "a port past 65535",
            head("GET /", "shop:65536"),
            "invalid port",
        ),
        ("an empty port", head("GET /", "shop:"), "invalid port"),
        ("a backslash", head("GET /", "shop\\evil"), "invalid Host"),
        (
            "a bad percent-encoding",
            head("GET /", "sh%zzop"),
            "invalid Host",
        ),
        (
            "an invalid IPv6 literal",
            head("GET /", "[zz::1]:80"),
            "invalid Host",
        ),
        (
            "an IPv6 zone",
            head("GET /", "[fe80::1%25eth0]"),
            "invalid Host",
        ),
        (
            "user information in the target",
            head("GET http://user@shop/", "shop"),
            "invalid target authority",
        ),
        (
            "a target scheme that is not http",
            head("GET ftp://shop/", "shop"),
            "scheme is not http",
        ),
        (
            "an asterisk target on GET",
            head("GET *", "shop"),
            "asterisk-form",
        ),
    ];
    for (what, bytes, reason) in cases {
        let before = counts(&proxy);
        let seen = upstream.count();
        let answer = raw_exchange(addr, &bytes, LIMIT).await;
        assert_eq!(status_of(&answer), 400, "{what}: {answer}");
        assert!(answer.contains(reason), "{what}: {answer}");
        assert_eq!(upstream.count(), seen, "{what}: reached the upstream");
        let after = settle(&proxy, |c| c.refused_malformed > before.refused_malformed).await;
        assert_eq!(
            after,
            Counts {
                refused_malformed: before.refused_malformed + 1.0,
                ..before
            },
            "{what}"
        );
    }
    // Valid forms pass: a port, an IP literal, an absolute-form target (its authority wins).
    for (line, host) in [
        ("GET /", "shop:8080"),
        ("GET /", "[::1]:80"),
        ("GET http://shop/x", "other"),
    ] {
        let answer = raw_exchange(addr, &head(line, host), LIMIT).await;
        assert_eq!(status_of(&answer), 200, "{line} {host}: {answer}");
    }
}

#[tokio::test]
async fn an_http2_host_that_contradicts_the_authority_gets_400() {
    let upstream = Upstream::start("stable").await;
    let proxy = start_proxy(&single(upstream.addr, "")).await;
    let addr = proxy.addr("public").unwrap();
    let h2: hyper_util::client::legacy::Client<_, http_body_util::Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    // The authority is the proxy's address (what the client connects to); Host names another.
    let url = format!("http://{addr}/x");
    let ask = |host: &str| {
        http::Request::get(&url)
            .header("host", host)
            .body(http_body_util::Empty::new())
            .unwrap()
    };
    let before = counts(&proxy);
    let refused = h2.request(ask("other.example")).await.unwrap();
    assert_eq!(refused.status(), 400);
    let body = refused.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("Host differs from :authority"),
        "{body:?}"
    );
    assert_eq!(upstream.count(), 0);
    let after = settle(&proxy, |c| c.refused_malformed > before.refused_malformed).await;
    assert_eq!(after.refused_malformed, before.refused_malformed + 1.0);
    let same = h2.request(ask(&addr.to_string())).await.unwrap();
    assert_eq!(same.status(), 200);
}

#[tokio::test]
async fn transfer_codings_other_than_one_chunked_and_connect_are_refused() {
    let upstream = Upstream::start("stable").await;
    let proxy = start_proxy(&single(upstream.addr, "")).await;
    let addr = proxy.addr("public").unwrap();
    let te = |codings: &str| {
        format!("POST /p HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: {codings}\r\n\r\n0\r\n\r\n")
            .into_bytes()
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("chunked twice", te("chunked, chunked"), 400),
        (
            "chunked on two lines",
            te("chunked\r\nTransfer-Encoding: chunked"),
            400,
        ),
        ("gzip before chunked", te("gzip, chunked"), 501),
        ("an unknown coding", te("x-custom, chunked"), 501),
        (
            "CONNECT",
            b"CONNECT shop:443 HTTP/1.1\r\nHost: shop:443\r\n\r\n".to_vec(),
            501,
        ),
    ];
    for (what, bytes, status) in cases {
        let before = counts(&proxy);
        let answer = raw_exchange(addr, &[&bytes[..], SMUGGLED].concat(), LIMIT).await;
        assert_eq!(status_of(&answer), status, "{what}: {answer}");
        assert_eq!(upstream.count(), 0, "{what}: reached the upstream");
        let after = settle(&proxy, |c| {
            c.refused_malformed + c.refused_unsupported
                > before.refused_malformed + before.refused_unsupported
        })
        .await;
        let (malformed, unsupported) = if status == 400 {
            (1.0, 0.0)
        } else {
            (0.0, 1.0)
        };
        assert_eq!(
            after,
            Counts {
                refused_malformed: before.refused_malformed + malformed,
                refused_unsupported: before.refused_unsupported + unsupported,
                ..before
            },
            "{what}"
        );
    }
    // Chunked alone, in any case, passes.
    let answer = raw_exchange(
        addr,
        b"POST /p HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
        LIMIT,
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
}

#[tokio::test]
async fn every_forwarded_for_line_reaches_the_upstream_as_one_list_with_the_peer_last() {
    let upstream = Upstream::start("stable").await;
    let proxy = start_proxy(&single(upstream.addr, "")).await;
    let answer = raw_exchange(
        proxy.addr("public").unwrap(),
        b"GET /xff HTTP/1.1\r\nHost: shop\r\nX-Forwarded-For: 203.0.113.7\r\n\
X-Forwarded-For: 198.51.100.2, 192.0.2.1\r\nConnection: close\r\n\r\n",
        LIMIT,
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let seen = upstream.last();
    let lines: Vec<_> = seen.headers.get_all("x-forwarded-for").iter().collect();
    assert_eq!(
        lines,
        ["203.0.113.7, 198.51.100.2, 192.0.2.1, 127.0.0.1"],
        "one line, every hop in order"
    );
}

/// A raw upstream: reads one request head per connection, answers `answer`, closes.
async fn canned(answer: &'static [u8]) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..50 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(answer).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn upgrade_h2c_is_never_passed_upstream() {
    let upstream = Upstream::start("stable").await;
    let proxy = start_proxy(&single(upstream.addr, "")).await;
    let request =
        b"GET /h2c HTTP/1.1\r\nHost: shop\r\nConnection: Upgrade, HTTP2-Settings, close\r\n\
Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n";
    let answer = raw_exchange(proxy.addr("public").unwrap(), request, LIMIT).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "served as HTTP/1.1: {answer}"
    );
    let seen = upstream.last();
    for name in ["upgrade", "http2-settings", "connection"] {
        assert!(
            !seen.headers.contains_key(name),
            "{name} reached the upstream"
        );
    }

    // An upstream that switches protocols for a request that offered none is answering wrong.
    let switching =
        canned(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
            .await;
    let proxy = start_proxy(&single(switching, "")).await;
    let before = counts(&proxy);
    let answer = raw_exchange(proxy.addr("public").unwrap(), request, LIMIT).await;
    assert_eq!(status_of(&answer), 502, "{answer}");
    let after = settle(&proxy, |c| c.upstream_errors > before.upstream_errors).await;
    assert_eq!(
        after.upstream_errors,
        before.upstream_errors + 1.0,
        "the upstream's fault"
    );
    assert_eq!(after.malformed, before.malformed);
}

#[tokio::test]
async fn an_upstream_answer_is_sent_on_with_one_framing_or_refused() {
    // Both Content-Length and Transfer-Encoding: framed by the encoding, sent on without the
    // length.
    let both = canned(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n\
5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let proxy = start_proxy(&single(both, "")).await;
    let answer = raw_exchange(
        proxy.addr("public").unwrap(),
        b"GET / HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
        LIMIT,
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(!lower.contains("content-length"), "{answer}");
    assert!(lower.contains("transfer-encoding: chunked"), "{answer}");
    assert!(answer.ends_with("5\r\nhello\r\n0\r\n\r\n"), "{answer:?}");

    // A transfer coding the proxy would pass on undecoded: an invalid answer, the upstream's.
    for coding in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello",
    ] {
        let coded = canned(coding).await;
        let proxy = start_proxy(&single(coded, "")).await;
        let before = counts(&proxy);
        let answer = raw_exchange(
            proxy.addr("public").unwrap(),
            b"GET / HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
            LIMIT,
        )
        .await;
        assert_eq!(status_of(&answer), 502, "{answer}");
        let after = settle(&proxy, |c| c.upstream_errors > before.upstream_errors).await;
        assert_eq!(after.upstream_errors, before.upstream_errors + 1.0);
        assert_eq!(after.five_xx, before.five_xx + 1.0);
    }
}
