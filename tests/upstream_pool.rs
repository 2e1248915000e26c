//! The direct HTTP/1.1 path to upstreams (`proxy/data/upstream/direct.rs`): connections driven by
//! the request's task and kept in per-worker pools are reused whatever the response's framing,
//! survive an upstream that closes them while idle, and are not kept past the route's idle
//! timeout. Real upstreams on loopback count the connections they accept and see closed.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Connections an upstream accepted, and how many of them the proxy has closed.
#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    closed: AtomicUsize,
}

/// A loopback upstream that counts the connections it accepts (at most 100) and the ones whose
/// `serve` has ended, serving each connection with `serve`.
async fn counted<F, Fut>(serve: F) -> (SocketAddr, Arc<Counts>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let seen = counts.clone();
    tokio::spawn(async move {
        for _ in 0..100 {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            seen.accepted.fetch_add(1, Ordering::SeqCst);
            let (seen, served) = (seen.clone(), serve(stream));
            tokio::spawn(async move {
                served.await;
                seen.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, counts)
}

/// An HTTP/1.1 upstream answering by path: `/length` a body with a length, `/chunked` a body
/// streamed in three chunks, `/empty` 204, `/echo` the request body back.
async fn counting_upstream() -> (SocketAddr, Arc<Counts>) {
    counted(|stream| async move {
        let service = service_fn(|request: Request<Incoming>| async move {
            Ok::<_, Infallible>(answer(request).await)
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    })
    .await
}

type Answer = Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>;

async fn answer(request: Request<Incoming>) -> Answer {
    let path = request.uri().path().to_string();
    match path.as_str() {
        "/chunked" => {
            let frames = ["one ", "two ", "three"]
                .map(|s| Ok::<_, Infallible>(Frame::data(Bytes::from_static(s.as_bytes()))));
            Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        }
        "/empty" => {
            let mut response = Response::new(Full::new(Bytes::new()).boxed());
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        "/echo" => {
            let body = request.into_body().collect().await.unwrap().to_bytes();
            Response::new(Full::new(body).boxed())
        }
        _ => Response::new(Full::new(Bytes::from_static(b"with a length")).boxed()),
    }
}

fn route(upstream: SocketAddr, timeouts: &str) -> String {
    format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
routes:
  - name: shop
    timeouts: {{ {timeouts} }}
    versions: [{{ name: stable, endpoints: ["{upstream}"], weight: 1 }}]
"#
    )
}

#[tokio::test]
async fn one_upstream_connection_serves_every_framing_in_turn() {
    let (upstream, counts) = counting_upstream().await;
    let proxy = start_proxy(&route(upstream, "idle: 60s")).await;
    let base = format!("http://{}", proxy.addr("public").unwrap());
    let client = client();
    for round in 0..3 {
        let reply = get(&client, &format!("{base}/length"), &[]).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "with a length")
        );
        let reply = get(&client, &format!("{base}/chunked"), &[]).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "one two three")
        );
        let reply = get(&client, &format!("{base}/empty"), &[]).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        let head = send("HEAD", &format!("{base}/length"), &[], "").await;
        assert_eq!((head.status, head.body.as_str()), (StatusCode::OK, ""));
        let echoed = send(
            "POST",
            &format!("{base}/echo"),
            &[],
            &format!("round {round}"),
        )
        .await;
        assert_eq!(echoed.body, format!("round {round}"));
    }
    assert_eq!(
        counts.accepted.load(Ordering::SeqCst),
        1,
        "fifteen requests in turn, one upstream connection"
    );
}

/// An upstream that answers each request with a keep-alive response, then closes the connection
/// a moment later without saying so (as a server whose keep-alive timeout is short does).
async fn closing_upstream() -> (SocketAddr, Arc<Counts>) {
    counted(|mut stream| async move {
        let mut buf = [0u8; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    })
    .await
}

#[tokio::test]
async fn an_upstream_closing_idle_connections_costs_no_request() {
    let (upstream, counts) = closing_upstream().await;
    let proxy = start_proxy(&route(upstream, "idle: 60s")).await;
    let url = format!("http://{}/", proxy.addr("public").unwrap());
    let client = client();
    for _ in 0..5 {
        let reply = get(&client, &url, &[]).await;
        assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "ok"));
        // Past the upstream's close: the pooled connection is found closed, not used.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn an_upstream_connection_is_not_kept_past_the_idle_timeout() {
    let (upstream, counts) = counting_upstream().await;
    let proxy = start_proxy(&route(upstream, "idle: 200ms")).await;
    let url = format!("http://{}/length", proxy.addr("public").unwrap());
    let client = client();
    let reply = get(&client, &url, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(counts.closed.load(Ordering::SeqCst), 0, "kept while fresh");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let reply = get(&client, &url, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        counts.accepted.load(Ordering::SeqCst),
        2,
        "the idle connection is not used again"
    );
    assert!(
        eventually(Duration::from_secs(5), async || {
            counts.closed.load(Ordering::SeqCst) >= 1
        })
        .await,
        "the proxy closed the expired connection"
    );
}

#[tokio::test]
async fn an_idle_upstream_connection_is_closed_at_its_idle_timeout_without_more_traffic() {
    let (upstream, counts) = counting_upstream().await;
    let proxy = start_proxy(&route(upstream, "idle: 300ms")).await;
    let url = format!("http://{}/length", proxy.addr("public").unwrap());
    let reply = get(&client(), &url, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(counts.closed.load(Ordering::SeqCst), 0, "kept while fresh");
    // No request comes again: the reaper, not a next use of the pool, closes it.
    assert!(
        eventually(Duration::from_secs(5), async || {
            counts.closed.load(Ordering::SeqCst) == 1
        })
        .await,
        "the idle connection was closed with no traffic"
    );
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 1);
}

/// An endpoint a reload takes out has its idle connections closed (on every worker with
/// [`Accept::PerWorker`]), and the new endpoint's are kept. Each request is from a new client,
/// so that with several workers connections land on each.
async fn reload_takes_out_an_endpoint(accept: switchyard::app::Accept, workers: usize) {
    let (old, old_counts) = counting_upstream().await;
    let (new, new_counts) = counting_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("switchyard.yaml");
    // An idle timeout far past the test: only the reload can end the old endpoint's connections.
    std::fs::write(&file, route(old, "idle: 10m")).unwrap();
    let proxy = switchyard::app::start_from_file_with(&file, accept)
        .await
        .unwrap();
    let url = format!("http://{}/length", proxy.addr("public").unwrap());
    for _ in 0..8 {
        assert_eq!(get(&client(), &url, &[]).await.status, StatusCode::OK);
    }
    let kept = old_counts.accepted.load(Ordering::SeqCst);
    assert!(
        (1..=workers).contains(&kept),
        "{kept} connections for 8 requests on {workers} worker(s)"
    );

    std::fs::write(&file, route(new, "idle: 10m")).unwrap();
    proxy
        .control()
        .reload(switchyard::control::ReloadSource::Api)
        .await
        .unwrap();
    assert_eq!(get(&client(), &url, &[]).await.status, StatusCode::OK);
    assert_eq!(new_counts.accepted.load(Ordering::SeqCst), 1);
    assert!(
        eventually(Duration::from_secs(5), async || {
            old_counts.closed.load(Ordering::SeqCst) == kept
        })
        .await,
        "the removed endpoint's connections were closed"
    );
    assert_eq!(
        new_counts.closed.load(Ordering::SeqCst),
        0,
        "the new one's are kept"
    );
}

#[tokio::test]
async fn an_endpoint_taken_out_by_a_reload_has_its_idle_connections_closed() {
    reload_takes_out_an_endpoint(switchyard::app::Accept::Shared, 1).await;
}

/// `clients` keep-alive clients at once, each sending `requests` requests to `url` in turn; every
/// answer must be 200.
async fn keep_alive_clients(url: &str, clients: usize, requests: usize) {
    let running: Vec<_> = (0..clients)
        .map(|_| {
            let url = url.to_string();
            tokio::spawn(async move {
                let client = client();
                for _ in 0..requests {
                    assert_eq!(get(&client, &url, &[]).await.status, StatusCode::OK);
                }
            })
        })
        .collect();
    for c in running {
        c.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_shared_by_the_worker_threads() {
    // Tasks move between workers: a pool per worker would leave connections idle on one while
    // the other opens new ones (measured: 74 for 4 clients before the pool was shared).
    let (upstream, counts) = counting_upstream().await;
    let proxy = start_proxy(&route(upstream, "idle: 60s")).await;
    let url = format!("http://{}/length", proxy.addr("public").unwrap());
    keep_alive_clients(&url, 4, 200).await;
    let accepted = counts.accepted.load(Ordering::SeqCst);
    assert!(
        accepted <= 8,
        "800 requests from 4 clients took {accepted} upstream connections"
    );
}

/// The answers of [`scripted_upstream`], by path: how each ends decides whether the connection
/// may carry the next request.
fn scripted(path: &str) -> (&'static [u8], bool) {
    match path {
        // Informational heads before the answer are skipped.
        "/informational" => (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
              HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\ninformational",
            true,
        ),
        // Chunk extensions, and a trailer section.
        "/trailers" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
              4;note=first\r\ntrai\r\n4\r\nlers\r\n0\r\nx-checksum: 7\r\n\r\n",
            true,
        ),
        // Kept open by the upstream, but it said close: not used again.
        "/close" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nclose",
            true,
        ),
        // HTTP/1.0 without a length: the body runs to the close.
        "/to-the-close" => (b"HTTP/1.0 200 OK\r\n\r\nread to the close", false),
        _ => (b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nlength", true),
    }
}

/// A raw upstream that reads request heads (requests without bodies) and writes the bytes of
/// [`scripted`] for each path, keeping the connection open unless the script closes it.
async fn scripted_upstream() -> (SocketAddr, Arc<Counts>) {
    counted(|mut stream| async move {
        let mut pending = Vec::new();
        let mut buf = [0u8; 4096];
        for _ in 0..100 {
            let end = loop {
                if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                }
            };
            let head: Vec<u8> = pending.drain(..end).collect();
            let head = String::from_utf8_lossy(&head);
            let path = head.split(' ').nth(1).unwrap_or("/").to_string();
            let (answer, keep_open) = scripted(&path);
            if stream.write_all(answer).await.is_err() || !keep_open {
                return;
            }
        }
    })
    .await
}

#[tokio::test]
async fn every_response_shape_is_read_and_only_a_reusable_connection_is_reused() {
    let (upstream, counts) = scripted_upstream().await;
    let proxy = start_proxy(&route(upstream, "idle: 60s")).await;
    let base = format!("http://{}", proxy.addr("public").unwrap());
    let client = client();
    let expect = |path: &str, body: &str, connections: usize| {
        let url = format!("{base}{path}");
        let body = body.to_string();
        let client = client.clone();
        let counts = counts.clone();
        async move {
            let reply = get(&client, &url, &[]).await;
            assert_eq!(
                (reply.status, reply.body.as_str()),
                (StatusCode::OK, &*body),
                "{url}"
            );
            assert_eq!(
                counts.accepted.load(Ordering::SeqCst),
                connections,
                "after {url}"
            );
        }
    };
    expect("/informational", "informational", 1).await;
    expect("/trailers", "trailers", 1).await;
    expect("/length", "length", 1).await;
    expect("/close", "close", 1).await;
    // The answer said close: a new connection.
    expect("/to-the-close", "read to the close", 2).await;
    // That one ended at the close: another.
    expect("/length", "length", 3).await;
    expect("/length", "length", 3).await;

    // An HTTP/2 client is sent the trailers the HTTP/1.1 upstream wrote after the last chunk.
    let h2c: hyper_util::client::legacy::Client<_, http_body_util::Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let response = h2c
        .request(
            Request::get(format!("{base}/trailers"))
                .body(http_body_util::Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers came through");
    assert_eq!(trailers["x-checksum"], "7");
    assert_eq!(collected.to_bytes(), "trailers");
}

/// The proxy of `yaml` with one accept loop per worker (`run --reuse-port`), two workers.
async fn start_per_worker(file: &std::path::Path) -> switchyard::app::Running {
    switchyard::app::start_from_file_with(file, switchyard::app::Accept::PerWorker(2))
        .await
        .unwrap()
}

#[tokio::test]
async fn reuse_port_workers_keep_their_own_connections_and_close_them_when_idle() {
    let (upstream, counts) = counting_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("switchyard.yaml");
    std::fs::write(&file, route(upstream, "idle: 300ms")).unwrap();
    let proxy = start_per_worker(&file).await;
    let url = format!("http://{}/length", proxy.addr("public").unwrap());
    // Four keep-alive clients, each on one worker: a worker reuses its own connections.
    keep_alive_clients(&url, 4, 50).await;
    let accepted = counts.accepted.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&accepted),
        "200 requests from 4 clients took {accepted} upstream connections"
    );
    // No traffic: each worker's reaper closes its own.
    assert!(
        eventually(Duration::from_secs(5), async || {
            counts.closed.load(Ordering::SeqCst) == accepted
        })
        .await,
        "the workers closed their idle connections"
    );
}

#[tokio::test]
async fn reuse_port_workers_close_the_connections_of_an_endpoint_a_reload_took_out() {
    reload_takes_out_an_endpoint(switchyard::app::Accept::PerWorker(2), 2).await;
}
