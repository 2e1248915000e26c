//! The textbook hyper proxy (`loadtest/textbook_proxy/serve.rs`), the yardstick of issue 16,
//! forwards what it is sent to its path, appends the client's address to X-Forwarded-For and adds
//! nothing else, with either downstream server.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

#[path = "../loadtest/textbook_proxy/serve.rs"]
mod textbook;

use std::time::Duration;

use common::*;
use tokio::net::TcpListener;

async fn forwards_and_appends_x_forwarded_for(
    server: textbook::Server,
    client_kind: textbook::ClientKind,
) {
    let upstream = Upstream::start("stable").await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(textbook::serve(
        listener,
        upstream.addr.to_string().parse().unwrap(),
        Duration::from_secs(60),
        server,
        client_kind,
    ));
    let reply = get(
        &client(),
        &format!("http://{addr}/shop/cart?item=7"),
        &[("x-forwarded-for", "10.0.0.1"), ("x-custom", "kept")],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.served_by(), "stable");
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
    assert!(seen.headers.get("x-request-id").is_none());
    assert!(seen.headers.get("x-forwarded-proto").is_none());
}

#[tokio::test]
async fn http1_server_forwards_and_appends_x_forwarded_for() {
    forwards_and_appends_x_forwarded_for(textbook::Server::Http1, textbook::ClientKind::Legacy)
        .await;
}

#[tokio::test]
async fn inline_client_forwards_and_appends_x_forwarded_for() {
    forwards_and_appends_x_forwarded_for(textbook::Server::Http1, textbook::ClientKind::Inline)
        .await;
}

#[tokio::test]
async fn auto_server_forwards_and_appends_x_forwarded_for() {
    forwards_and_appends_x_forwarded_for(textbook::Server::Auto, textbook::ClientKind::Legacy)
        .await;
}
