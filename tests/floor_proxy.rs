//! The floor proxy (`loadtest/floor_proxy/serve.rs`), the yardstick of issue 16's purpose-built
//! path, forwards a request without a body to its path with the client's address added to
//! X-Forwarded-For and its hop-by-hop lines dropped, keeps the connection for the next request,
//! and refuses a request with a body (501) rather than forward part of it.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

#[path = "../loadtest/floor_proxy/serve.rs"]
mod floor;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Starts the floor on this test's thread (its pool is thread-local) in front of `upstream`.
async fn start(local: &tokio::task::LocalSet, upstream: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    local.spawn_local(floor::serve(listener, upstream, Duration::from_secs(60)));
    addr
}

/// Sends `raw` on `stream` and reads until the answer's head and `body_len` bytes of body came.
async fn exchange(stream: &mut TcpStream, raw: &[u8], body_len: usize) -> String {
    stream.write_all(raw).await.unwrap();
    let mut got = Vec::new();
    let read = async {
        loop {
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some(end) = text.find("\r\n\r\n") {
                if got.len() >= end + 4 + body_len || n == 0 {
                    return;
                }
            }
            if n == 0 {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer within 10 s");
    String::from_utf8(got).unwrap()
}

#[tokio::test]
async fn forwards_a_request_and_adds_x_forwarded_for() {
    let upstream = Upstream::start("stable").await;
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let addr = start(&local, upstream.addr).await;
            let mut stream = TcpStream::connect(addr).await.unwrap();
            for n in 0..2 {
                let raw = format!(
                    "GET /shop/cart?item={n} HTTP/1.1\r\nhost: shop.example\r\n\
                     x-forwarded-for: 10.0.0.1\r\nconnection: keep-alive\r\n\
                     keep-alive: timeout=5\r\nx-custom: kept\r\n\r\n"
                );
                let answer = exchange(&mut stream, raw.as_bytes(), "stable\n".len()).await;
                assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
                assert!(answer.contains("x-served-by: stable"), "{answer}");
                let seen = upstream.last();
                assert_eq!(seen.path, "/shop/cart");
                let forwarded: Vec<_> = seen
                    .headers
                    .get_all("x-forwarded-for")
                    .iter()
                    .map(|v| v.to_str().unwrap().to_string())
                    .collect();
                assert_eq!(forwarded, ["10.0.0.1", "127.0.0.1"]);
                assert_eq!(seen.headers.get("x-custom").unwrap(), "kept");
                assert_eq!(seen.headers.get("host").unwrap(), "shop.example");
                assert!(seen.headers.get("keep-alive").is_none());
            }
            assert_eq!(
                upstream.count(),
                2,
                "both requests on one client connection"
            );
        })
        .await;
}

#[tokio::test]
async fn refuses_a_request_with_a_body() {
    let upstream = Upstream::start("stable").await;
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let addr = start(&local, upstream.addr).await;
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let raw = b"POST /orders HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\nhi";
            let answer = exchange(&mut stream, raw, 0).await;
            assert!(answer.starts_with("HTTP/1.1 501"), "{answer}");
            assert_eq!(upstream.count(), 0, "nothing of it forwarded");
        })
        .await;
}
