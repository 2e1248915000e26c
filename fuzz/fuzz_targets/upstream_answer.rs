//! Arbitrary bytes as an upstream's answer, through the proxy's HTTP/1.1 upstream path (its own
//! client codec, `proxy/data/upstream/h1`, driven in the request's task, connections pooled per
//! endpoint; see `proxy/data/upstream/direct.rs`), on a real proxy and a raw upstream on loopback.
//!
//! Checked for every input: no panic anywhere in the proxy (libfuzzer-sys aborts on a panic in
//! any thread), and no desynchronized pool. After the fuzzed exchange, a well-formed request on a
//! new client connection, to the same endpoint and so to the same pool, must get the answer the
//! upstream gave to *it*: never bytes left over from the fuzzed answer on a pooled connection
//! (an extra response, a body longer than its framing, a response to a HEAD with a body).
//!
//! The first byte chooses the method of the fuzzed request (GET, HEAD, POST with a body, DELETE)
//! and whether the upstream closes its side after answering or keeps the connection open; the rest
//! is the answer, written in one piece. Run (seeds in `fuzz/seeds/upstream_answer`):
//! `cargo fuzz run upstream_answer --fuzz-dir . corpus/upstream_answer seeds/upstream_answer -- -max_len=4096`.
#![no_main]

use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the upstream answers, by case number: the fuzzed bytes, and whether to close after them.
type Answers = Arc<Mutex<HashMap<u64, (Vec<u8>, bool)>>>;

struct Harness {
    runtime: tokio::runtime::Runtime,
    proxy: SocketAddr,
    answers: Answers,
    /// Follow-up cases the upstream answered.
    followed: Arc<Mutex<HashSet<u64>>>,
    next_case: std::cell::Cell<u64>,
    _running: switchyard::app::Running,
}

thread_local! {
    static HARNESS: OnceCell<Harness> = const { OnceCell::new() };
}

fn config(upstream: SocketAddr) -> String {
    // Two versions on the one endpoint share its pool; the follow-up is pinned to the second, so
    // ejection of the first (the fuzzed answers are often 5xx) never stops the follow-up.
    format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
routes:
  - name: fuzz
    timeouts: {{ response_header: 300ms }}
    rules: [{{ match: {{ header: {{ name: x-follow-up, value: "1" }} }}, version: follow }}]
    versions:
      - {{ name: fuzzed, endpoints: ["{upstream}"], weight: 1 }}
      - {{ name: follow, endpoints: ["{upstream}"], weight: 0 }}
"#
    )
}

impl Harness {
    fn start() -> Harness {
        // Two workers, as the proxy runs by default; the runtime outlives every iteration.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let answers = Answers::default();
        let followed = Arc::new(Mutex::new(HashSet::new()));
        let (proxy, running) = runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("upstream port");
            let upstream = listener.local_addr().expect("upstream address");
            tokio::spawn(accept(listener, answers.clone(), followed.clone()));
            let config = switchyard::config::parse(Path::new("fuzz.yaml"), &config(upstream))
                .expect("the harness config is valid");
            let running = switchyard::app::start(config)
                .await
                .expect("the proxy starts");
            (running.addr("public").expect("the listener"), running)
        });
        Harness {
            runtime,
            proxy,
            answers,
            followed,
            next_case: std::cell::Cell::new(0),
            _running: running,
        }
    }

    fn run(&self, mode: u8, answer: &[u8]) {
        let case = self.next_case.get();
        self.next_case.set(case + 1);
        self.answers
            .lock()
            .expect("answers")
            .insert(case, (answer.to_vec(), mode & 1 == 1));
        let method = [Method::GET, Method::HEAD, Method::POST, Method::DELETE]
            [usize::from(mode >> 1) & 3]
            .clone();
        self.runtime.block_on(async {
            // The fuzzed exchange: any outcome (the upstream's answer, a 502 or 504, a cut
            // connection, a body that stalls until the client gives up) is acceptable.
            let body = if method == Method::POST { "hello" } else { "" };
            let fuzzed = request(method, case, false, body);
            let _ = tokio::time::timeout(Duration::from_millis(600), exchange(self.proxy, fuzzed))
                .await;

            let follow = request(Method::GET, case, true, "");
            let got = tokio::time::timeout(Duration::from_secs(10), exchange(self.proxy, follow))
                .await
                .expect("the follow-up was answered within 10 s")
                .expect("the follow-up was answered");
            assert_eq!(got.0, StatusCode::OK, "follow-up of case {case}: {got:?}");
            assert_eq!(
                got.1.get("x-follow-answer").map(|v| v.as_bytes()),
                Some(case.to_string().as_bytes()),
                "the follow-up got another request's answer: {got:?}"
            );
            assert_eq!(got.2, "second", "follow-up body: {got:?}");
            assert!(self.followed.lock().expect("followed").contains(&case));
        });
        self.answers.lock().expect("answers").remove(&case);
    }
}

fn request(method: Method, case: u64, follow_up: bool, body: &'static str) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri("/fuzz")
        .header("host", "fuzz")
        .header("x-case", case);
    if follow_up {
        builder = builder.header("x-follow-up", "1");
    }
    builder
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("a valid request")
}

/// One request on a new client connection: status, headers, body.
async fn exchange(
    proxy: SocketAddr,
    request: Request<Full<Bytes>>,
) -> Option<(StatusCode, http::HeaderMap, Bytes)> {
    let stream = TcpStream::connect(proxy).await.ok()?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await.ok()?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.ok()?.to_bytes();
    Some((parts.status, parts.headers, body))
}

async fn accept(listener: TcpListener, answers: Answers, followed: Arc<Mutex<HashSet<u64>>>) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(serve(stream, answers.clone(), followed.clone()));
    }
}

/// The upstream: reads request heads (and Content-Length bodies); answers a follow-up with a
/// well-formed response naming its case, and any other request with its case's fuzzed bytes.
async fn serve(mut stream: TcpStream, answers: Answers, followed: Arc<Mutex<HashSet<u64>>>) {
    let mut buf = Vec::new();
    for _ in 0..256 {
        let Some(end) = read_head(&mut stream, &mut buf).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
                .map(str::trim)
                .map(str::to_string)
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (case, follow_up) = (
            header("x-case").and_then(|v| v.parse::<u64>().ok()),
            header("x-follow-up"),
        );
        while buf.len() < end + length {
            if !read_more(&mut stream, &mut buf).await {
                return;
            }
        }
        buf.drain(..end + length);
        let Some(case) = case else { return };
        if follow_up.is_some() {
            followed.lock().expect("followed").insert(case);
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: 6\r\nx-follow-answer: {case}\r\n\r\nsecond"
            );
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
            continue;
        }
        let Some((bytes, close)) = answers.lock().expect("answers").get(&case).cloned() else {
            return;
        };
        if stream.write_all(&bytes).await.is_err() {
            return;
        }
        if close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// Reads until `buf` holds a whole head; returns the index past its blank line.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    for _ in 0..1024 {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        if buf.len() > 64 * 1024 || !read_more(stream, buf).await {
            return None;
        }
    }
    None
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, answer)) = data.split_first() else {
        return;
    };
    HARNESS.with(|cell| cell.get_or_init(Harness::start).run(mode, answer));
});
