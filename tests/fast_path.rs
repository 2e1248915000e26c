//! The fast path (`data::fast`) answers exactly as hyper's server does: the same raw requests,
//! sent to a listener with the fast path and to one without (`fast_path: false`), get the same
//! bytes back, `date` and the generated request id aside; a request the fast path does not take
//! is handed to hyper on the same connection, which is counted. A body that came with its head
//! reaches the upstream as it does through hyper.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that answers each path with fixed bytes, for the answers hyper's client-side
/// types would not make: chunked, a custom reason, 304 with a length, several cookies.
async fn raw_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                // Bounded by the proxy's connection: one answer per request head.
                loop {
                    let mut chunk = [0u8; 4096];
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some((request, len)) = whole_request(&buf) {
                        let head = String::from_utf8_lossy(&request).into_owned();
                        buf.drain(..len);
                        let mut words = head.split_whitespace();
                        let method = words.next().unwrap_or("").to_string();
                        let path = words.next().unwrap_or("").to_string();
                        let answer = if path == "/echo" {
                            let echo = String::from_utf8_lossy(&request).into_owned();
                            format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{echo}",
                                echo.len()
                            )
                            .into_bytes()
                        } else {
                            answer(&method, &path)
                        };
                        if stream.write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// The first whole request in `buf` (head and body, by its `content-length` or chunked up to the
/// last chunk) and its length.
fn whole_request(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let head_end = find(buf, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let end = if let Some(at) = head.find("\r\ncontent-length: ") {
        let value = head[at + 18..].split("\r\n").next().unwrap_or("");
        head_end + value.trim().parse::<usize>().ok()?
    } else if head.contains("\r\ntransfer-encoding: chunked") {
        head_end + find(&buf[head_end..], b"0\r\n\r\n")? + 5
    } else {
        head_end
    };
    (buf.len() >= end).then(|| (buf[..end].to_vec(), end))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn answer(method: &str, path: &str) -> Vec<u8> {
    let body = |text: &str| {
        let shown = if method == "HEAD" { "" } else { text };
        format!("content-length: {}\r\n\r\n{shown}", text.len())
    };
    let answer = match path {
        "/chunked" if method == "HEAD" => "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".into(),
        "/chunked" => "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-kind: stream\r\n\r\n\
                       5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"
            .into(),
        "/nocontent" => "HTTP/1.1 204 No Content\r\nx-kind: empty\r\n\r\n".into(),
        "/notmodified" => "HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\ncontent-length: 10\r\n\r\n".into(),
        "/reason" => format!("HTTP/1.1 200 Fine Thanks\r\n{}", body("fine")),
        "/missing" => format!("HTTP/1.1 404 Not Found\r\n{}", body("no such page")),
        "/cookies" => format!(
            "HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nset-cookie: b=2\r\nvary: accept\r\nvary: cookie\r\n{}",
            body("two cookies")
        ),
        "/dated" => format!(
            "HTTP/1.1 200 OK\r\ndate: Tue, 01 Dec 2026 00:00:00 GMT\r\n{}",
            body("dated")
        ),
        "/closing" => format!("HTTP/1.1 200 OK\r\nconnection: close\r\n{}", body("bye")),
        _ => format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n{}", body("ok\n")),
    };
    answer.into_bytes()
}

/// Two listeners in front of the raw upstream: `fast` with the fast path, `hyper` without.
async fn proxies() -> (switchyard::app::Running, SocketAddr, SocketAddr) {
    proxies_with("").await
}

/// The same, with `extra` lines in the configuration.
async fn proxies_with(extra: &str) -> (switchyard::app::Running, SocketAddr, SocketAddr) {
    let upstream = raw_upstream().await;
    let yaml = format!(
        r#"
{extra}
listeners:
  - {{ name: fast, addr: "127.0.0.1:0" }}
  - {{ name: hyper, addr: "127.0.0.1:0", fast_path: false }}
routes:
  - name: shop
    versions: [{{ name: stable, endpoints: ["{upstream}"], weight: 1 }}]
"#
    );
    let running = start_proxy(&yaml).await;
    let fast = running.addr("fast").unwrap();
    let hyper = running.addr("hyper").unwrap();
    (running, fast, hyper)
}

/// The answer's bytes with what differs between two proxies' answers by design removed: the
/// `date`, and the request id and `traceparent` the proxy generated (in an echoed request).
fn normalized(answer: &str) -> String {
    answer
        .split("\r\n")
        .filter(|line| {
            !["date: ", "x-request-id: ", "traceparent: "]
                .iter()
                .any(|generated| line.starts_with(generated))
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// Sends `raw` to both listeners (one connection each) and checks they answer the same bytes.
async fn same_answer(fast: SocketAddr, hyper: SocketAddr, raw: &str) -> String {
    let limit = Duration::from_secs(5);
    let by_fast = raw_exchange(fast, raw.as_bytes(), limit).await;
    let by_hyper = raw_exchange(hyper, raw.as_bytes(), limit).await;
    assert!(!by_hyper.is_empty(), "hyper answered {raw:?}");
    assert_eq!(
        normalized(&by_fast),
        normalized(&by_hyper),
        "the same answer to {raw:?}"
    );
    by_fast
}

#[tokio::test]
async fn answers_byte_for_byte_as_hyper_does() {
    let (running, fast, hyper) = proxies().await;
    let paths = [
        "/",
        "/chunked",
        "/nocontent",
        "/notmodified",
        "/reason",
        "/missing",
        "/cookies",
        "/dated",
        "/closing",
    ];
    for path in paths {
        for method in ["GET", "HEAD"] {
            // Two requests in one write (pipelined), the second ending the connection.
            let raw = format!(
                "{method} {path} HTTP/1.1\r\nhost: shop\r\n\r\n\
                 {method} {path}?again=1 HTTP/1.1\r\nhost: shop\r\nconnection: close\r\n\r\n"
            );
            let answer = same_answer(fast, hyper, &raw).await;
            let answers = answer.matches("HTTP/1.1 ").count();
            // An upstream's `Connection: close` is its own: the client's connection stays.
            assert_eq!(answers, 2, "two answers to {raw:?}: {answer}");
        }
    }
    let date_lines = raw_exchange(
        fast,
        b"GET / HTTP/1.1\r\nhost: shop\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(date_lines.matches("\r\ndate: ").count(), 1, "{date_lines}");
    let dated = raw_exchange(
        fast,
        b"GET /dated HTTP/1.1\r\nhost: shop\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        dated.contains("\r\ndate: Tue, 01 Dec 2026 00:00:00 GMT\r\n")
            && dated.matches("date: ").count() == 1,
        "the upstream's date kept, none added: {dated}"
    );
    assert_eq!(
        running.metrics().downstream.handed_to_hyper.get(),
        0,
        "every request without a body stayed on the fast path"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn a_request_the_fast_path_does_not_take_goes_to_hyper_on_the_same_connection() {
    let (running, fast, hyper) = proxies().await;
    let cases = [
        // A chunked body: hyper streams it; the GET after it is hyper's too.
        "GET / HTTP/1.1\r\nhost: shop\r\n\r\n\
         POST /echo HTTP/1.1\r\nhost: shop\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
         GET /reason HTTP/1.1\r\nhost: shop\r\nconnection: close\r\n\r\n",
        // HTTP/1.0, and its keep-alive rules.
        "GET / HTTP/1.0\r\nhost: shop\r\n\r\n",
        // A malformed line: hyper's 400.
        "GET / HTTP/1.1\r\nhost: shop\r\nbad header line\r\n\r\n",
        // An expectation without a body.
        "GET / HTTP/1.1\r\nhost: shop\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n",
    ];
    for raw in cases {
        same_answer(fast, hyper, raw).await;
    }
    assert_eq!(running.metrics().downstream.handed_to_hyper.get(), 4);
    running.shutdown().await;
}

#[tokio::test]
async fn a_body_that_came_with_its_head_reaches_the_upstream_as_through_hyper() {
    let (running, fast, hyper) = proxies().await;
    // The upstream answers `/echo` with the request it got, head and body: the same bytes by
    // either listener means the same request forwarded.
    let cases = [
        "POST /echo HTTP/1.1\r\nhost: shop\r\ncontent-type: application/json\r\n\
         content-length: 13\r\n\r\n{\"item\": \"7\"}\
         PUT /echo HTTP/1.1\r\nhost: shop\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        "GET /echo HTTP/1.1\r\nhost: shop\r\ncontent-length: 0\r\n\r\n\
         DELETE /echo HTTP/1.1\r\nhost: shop\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
    ];
    for raw in cases {
        let answer = same_answer(fast, hyper, raw).await;
        assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
    }
    let answer = same_answer(fast, hyper, cases[0]).await;
    assert!(
        answer.contains("\r\n\r\n{\"item\": \"7\"}HTTP/1.1 200 OK"),
        "the body reached the upstream: {answer}"
    );
    assert_eq!(
        running.metrics().downstream.handed_to_hyper.get(),
        0,
        "bodies that came with their heads stayed on the fast path"
    );
    // One whose body is still on its way when the head is read is streamed by hyper.
    let mut stream = TcpStream::connect(fast).await.unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nhost: shop\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhe")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(b"llo").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.ends_with("\r\n\r\nhello"), "{answer}");
    assert_eq!(running.metrics().downstream.handed_to_hyper.get(), 1);
    running.shutdown().await;
}

/// Reads one answer to a request for `/` (the raw upstream's `ok\n`) from `stream`.
async fn read_ok(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let read = async {
        // Bounded by the timeout around it.
        while !answer.ends_with(b"\r\n\r\nok\n") {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "the proxy closed: {}",
                String::from_utf8_lossy(&answer)
            );
            answer.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("an answer within 5 s");
    String::from_utf8(answer).unwrap()
}

#[tokio::test]
async fn a_connection_hyper_served_comes_back_to_the_fast_path_once_idle() {
    let (running, fast, _) = proxies_with("limits: { idle_release_after: 50ms }").await;
    let handed = || running.metrics().downstream.handed_to_hyper.get();
    let mut stream = TcpStream::connect(fast).await.unwrap();
    // A chunked body is hyper's; so is the connection, until it idles.
    let post = b"POST / HTTP/1.1\r\nhost: shop\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
    stream.write_all(post).await.unwrap();
    assert!(read_ok(&mut stream)
        .await
        .starts_with("HTTP/1.1 200 OK\r\n"));
    assert_eq!(handed(), 1);
    stream.write_all(post).await.unwrap();
    read_ok(&mut stream).await;
    assert_eq!(handed(), 1, "hyper kept the busy connection");
    // Idle past the release: the next request is read by the fast path, which hands it over again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    stream.write_all(post).await.unwrap();
    assert!(read_ok(&mut stream)
        .await
        .starts_with("HTTP/1.1 200 OK\r\n"));
    assert_eq!(handed(), 2, "the same connection, back on the fast path");
    running.shutdown().await;
}

#[tokio::test]
async fn a_client_that_asks_to_close_gets_connection_close_and_a_fin() {
    let (running, fast, _) = proxies().await;
    let mut stream = TcpStream::connect(fast).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: shop\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the proxy closes after the answer")
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");
    running.shutdown().await;
}
