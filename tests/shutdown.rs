//! SIGTERM with requests in flight: the real binary stops accepting, lets every request finish
//! with 200, and exits 0.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_and_exits_zero() {
    let stable = Upstream::start("stable").await;
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(
        dir.path(),
        &format!(
            r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
drain_timeout: "20s"
routes:
  - name: shop
    versions: [{{ name: stable, endpoints: ["{}"], weight: 1 }}]
"#,
            stable.addr
        ),
    );

    let (mut child, addr) = spawn_proxy(&["run"], &file);

    // Ten slow requests, each on its own connection.
    let mut in_flight = tokio::task::JoinSet::new();
    for i in 0..10 {
        let url = format!("http://{addr}/slow/{i}?delay_ms=1500");
        in_flight.spawn(async move { get(&client(), &url, &[]).await });
    }
    assert!(
        eventually(Duration::from_secs(10), async || stable.count() == 10).await,
        "all ten requests reached the upstream before the signal"
    );

    sigterm(&child);

    let mut completed = 0;
    while let Some(reply) = in_flight.join_next().await {
        let reply = reply.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        completed += 1;
    }
    assert_eq!(completed, 10);

    let status = exit_within(&mut child, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no longer accepting connections"
    );
}

/// Keep-alive connections that have served requests see the drain: the request each has in
/// flight is answered with `connection: close` and the connection ends, on the fast path and on a
/// connection handed to hyper's server (a chunked body), long before the drain timeout; the binary
/// then exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_busy_keep_alive_connections_after_their_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let stable = Upstream::start("stable").await;
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(
        dir.path(),
        &one_route(
            "127.0.0.1:0",
            &stable.addr.to_string(),
            r#"drain_timeout: "60s""#,
        ),
    );
    let (mut child, addr) = spawn_proxy(&["run"], &file);

    let fast = b"GET /first HTTP/1.1\r\nhost: shop\r\n\r\n".as_slice();
    let handed = b"POST /first HTTP/1.1\r\nhost: shop\r\ntransfer-encoding: chunked\r\n\r\n\
                   2\r\nhi\r\n0\r\n\r\n"
        .as_slice();
    let mut connections = Vec::new();
    for first in [fast, handed] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(first).await.unwrap();
        let answer = read_answer(&mut stream).await;
        assert_eq!(status_of(&answer), 200, "{answer}");
        assert!(!answer.contains("connection: close"), "{answer}");
        stream
            .write_all(b"GET /slow?delay_ms=1500 HTTP/1.1\r\nhost: shop\r\n\r\n")
            .await
            .unwrap();
        connections.push(stream);
    }
    assert!(
        eventually(Duration::from_secs(10), async || stable.count() == 4).await,
        "both slow requests reached the upstream before the signal"
    );

    sigterm(&child);

    for mut stream in connections {
        let mut rest = Vec::new();
        let ended =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
        let rest = String::from_utf8_lossy(&rest);
        assert!(
            ended.is_ok(),
            "the connection was not closed after its answer: {rest}"
        );
        assert_eq!(status_of(&rest), 200, "{rest}");
        assert!(rest.contains("connection: close"), "{rest}");
    }
    let status = exit_within(&mut child, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}

/// Reads one answer with a `content-length` body from `stream`.
async fn read_answer(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    // Bounded: at most 64 reads, five seconds each.
    for _ in 0..64 {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("an answer within five seconds")
            .unwrap();
        assert!(n > 0, "the connection closed inside an answer");
        answer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&answer).into_owned();
        let Some(head_end) = text.find("\r\n\r\n") else {
            continue;
        };
        let length: usize = text[..head_end]
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .expect("an answer with a content-length");
        if answer.len() >= head_end + 4 + length {
            return text;
        }
    }
    panic!("no whole answer in 64 reads");
}
