//! Failing upstreams and a failing configuration: every fault gets a clear answer, none hangs,
//! and the proxy keeps serving.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A raw upstream: reads one request head per connection, then does `act`.
async fn raw_upstream(act: &'static [u8], close: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..50 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(act).await;
                if close {
                    let _ = s.shutdown().await;
                } else {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
            });
        }
    });
    addr
}

fn single(endpoint: SocketAddr) -> String {
    format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
routes:
  - name: shop
    timeouts: {{ response_header: "2s" }}
    versions: [{{ name: stable, endpoints: ["{endpoint}"], weight: 1 }}]
"#
    )
}

#[tokio::test]
async fn garbage_a_silent_close_and_a_reset_mid_body_each_get_a_clear_outcome() {
    // Garbage instead of HTTP: 502 naming an invalid response.
    let garbage = raw_upstream(b"HELLO THERE\r\n\r\n", true).await;
    let proxy = start_proxy(&single(garbage)).await;
    let reply = get(
        &client(),
        &format!("http://{}/", proxy.addr("public").unwrap()),
        &[],
    )
    .await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(
        reply.body.contains("invalid HTTP response") || reply.body.contains("reset"),
        "{}",
        reply.body
    );

    // Closes without answering (half-close after reading): 502.
    let silent = raw_upstream(b"", true).await;
    let proxy = start_proxy(&single(silent)).await;
    let reply = get(
        &client(),
        &format!("http://{}/", proxy.addr("public").unwrap()),
        &[],
    )
    .await;
    assert_eq!(reply.status, 502, "{}", reply.body);

    // Promises 100 bytes, sends 10, closes: the client sees the status, then a broken body,
    // never a hang and never a complete-looking answer.
    let reset = raw_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
        true,
    )
    .await;
    let proxy = start_proxy(&single(reset)).await;
    let url = format!("http://{}/", proxy.addr("public").unwrap());
    let request = http::Request::get(&url)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect()).await;
    assert!(
        matches!(body, Ok(Err(_))),
        "the truncated body ends in an error"
    );

    // A slow upstream past the timeout: 504, and the proxy still serves the next request.
    let slow = raw_upstream(b"", false).await;
    let proxy = start_proxy(&single(slow)).await;
    let reply = get(
        &client(),
        &format!("http://{}/", proxy.addr("public").unwrap()),
        &[],
    )
    .await;
    assert_eq!(reply.status, 504, "{}", reply.body);
}

#[tokio::test]
async fn a_deleted_config_file_keeps_the_running_configuration() {
    let stable = Upstream::start("stable").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("switchyard.yaml");
    std::fs::write(
        &file,
        single(stable.addr).replace("listeners:", "admin: { addr: \"127.0.0.1:0\" }\nlisteners:"),
    )
    .unwrap();
    let proxy = switchyard::app::start_from_file(&file).await.unwrap();
    let admin = format!("http://{}", proxy.admin_addr().unwrap());
    std::fs::remove_file(&file).unwrap();
    let reload = send("POST", &format!("{admin}/api/v1/reload"), &[], "").await;
    assert_eq!(reload.status, 422, "{}", reload.body);
    assert!(reload.body.contains("cannot read"), "{}", reload.body);
    let config = get(&client(), &format!("{admin}/api/v1/config"), &[]).await;
    assert!(config.body.contains("cannot read"), "{}", config.body);
    let reply = get(
        &client(),
        &format!("http://{}/", proxy.addr("public").unwrap()),
        &[],
    )
    .await;
    assert_eq!(reply.status, 200, "still serving");
}
