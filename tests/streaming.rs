//! Bodies stream through the proxy both ways: each side sees the first chunk before the other
//! side has sent the last one, so nothing is buffered whole.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::channel::Channel;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Mutex};

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn request_and_response_bodies_stream_chunk_by_chunk() {
    // The upstream reports the first request chunk as soon as it arrives, then answers with a
    // first response chunk and holds the rest until the test releases it.
    let (first_in_tx, first_in_rx) = oneshot::channel::<Bytes>();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let first_in_tx = std::sync::Arc::new(Mutex::new(Some(first_in_tx)));
    let release_rx = std::sync::Arc::new(Mutex::new(Some(release_rx)));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service = service_fn(move |req: Request<Incoming>| {
            let first_in_tx = first_in_tx.clone();
            let release_rx = release_rx.clone();
            async move {
                let mut body = req.into_body();
                let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
                first_in_tx
                    .lock()
                    .await
                    .take()
                    .unwrap()
                    .send(first)
                    .unwrap();
                let rest = body.collect().await.unwrap().to_bytes();
                let (mut tx, response_body) = Channel::<Bytes, Infallible>::new(4);
                let release = release_rx.lock().await.take().unwrap();
                tokio::spawn(async move {
                    tx.send_data(Bytes::from_static(b"first-out"))
                        .await
                        .unwrap();
                    let _ = release.await;
                    tx.send_data(rest).await.unwrap();
                });
                Ok::<_, Infallible>(Response::new(response_body))
            }
        });
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await
            .unwrap();
    });

    let proxy = common::start_proxy(&format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
routes:
  - name: up
    versions: [{{ name: stable, endpoints: ["{upstream}"], weight: 1 }}]
"#
    ))
    .await;

    let (mut body_tx, request_body) = Channel::<Bytes, Infallible>::new(4);
    let client: Client<_, Channel<Bytes, Infallible>> =
        Client::builder(TokioExecutor::new()).build_http();
    let request = Request::post(format!("http://{}/upload", proxy.addr("public").unwrap()))
        .body(request_body)
        .unwrap();
    let call = tokio::spawn(async move { client.request(request).await });

    body_tx
        .send_data(Bytes::from_static(b"first-in"))
        .await
        .unwrap();
    let first_in = tokio::time::timeout(LIMIT, first_in_rx)
        .await
        .expect("the upstream got the first request chunk before the body ended")
        .unwrap();
    assert_eq!(first_in, "first-in");
    body_tx
        .send_data(Bytes::from_static(b"last-in"))
        .await
        .unwrap();
    drop(body_tx);

    let response = tokio::time::timeout(LIMIT, call)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first_out = tokio::time::timeout(LIMIT, body.frame())
        .await
        .expect("the client got the first response chunk while the upstream held the rest")
        .unwrap()
        .unwrap();
    assert_eq!(first_out.into_data().unwrap(), "first-out");
    release_tx.send(()).unwrap();
    let rest = tokio::time::timeout(LIMIT, body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(rest, "last-in");
}
