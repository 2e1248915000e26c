//! Real parts for integration tests: recording upstream servers and a proxy on ephemeral
//! loopback ports, and a real HTTP client.
#![allow(dead_code)] // each test binary uses a different subset

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// What an upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
}

/// Faults an upstream injects, changeable while it runs.
#[derive(Default)]
pub struct Faults {
    /// Every Nth request answers 500 (0: never).
    pub error_every: AtomicU64,
    /// Added delay for every request, in ms.
    pub delay_ms: AtomicU64,
    /// Random extra delay from 0 to this many ms, for latency noise.
    pub jitter_ms: AtomicU64,
    /// Status of `GET /healthz` (0 means 200).
    pub health_status: AtomicU64,
    served: AtomicU64,
}

/// A real HTTP/1.1 server that answers with its name and records what it received.
///
/// Behaviour by query: `delay_ms=N` waits N ms before answering; `status=N` answers with N.
/// Behaviour by [`Faults`]: errors, delay and health status set while it runs.
pub struct Upstream {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub faults: Arc<Faults>,
}

impl Upstream {
    pub async fn start(name: &'static str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let faults = Arc::new(Faults::default());
        let record = seen.clone();
        let injected = faults.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let record = record.clone();
                let injected = injected.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let record = record.clone();
                    let injected = injected.clone();
                    async move { Ok::<_, Infallible>(answer(name, record, injected, req).await) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Upstream {
            name,
            addr,
            seen,
            faults,
        }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("no request seen")
    }
}

fn query_param(query: Option<&str>, name: &str) -> Option<u64> {
    query?
        .split('&')
        .find_map(|p| p.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

async fn answer(
    name: &'static str,
    record: Arc<Mutex<Vec<Seen>>>,
    faults: Arc<Faults>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.uri().path() == "/healthz" {
        let code = faults.health_status.load(Ordering::Relaxed);
        let mut r = Response::new(Full::new(Bytes::from_static(b"health\n")));
        *r.status_mut() = StatusCode::from_u16(if code == 0 { 200 } else { code as u16 })
            .unwrap_or(StatusCode::OK);
        return r;
    }
    record.lock().unwrap().push(Seen {
        path: req.uri().path().to_string(),
        headers: req.headers().clone(),
    });
    let n = faults.served.fetch_add(1, Ordering::Relaxed) + 1;
    let query = req.uri().query();
    let jitter = faults.jitter_ms.load(Ordering::Relaxed);
    let noise = if jitter > 0 {
        rand::random_range(0..jitter)
    } else {
        0
    };
    let delay = query_param(query, "delay_ms").unwrap_or(0)
        + faults.delay_ms.load(Ordering::Relaxed)
        + noise;
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay.min(30_000))).await;
    }
    let every = faults.error_every.load(Ordering::Relaxed);
    let status = query_param(query, "status")
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(if every > 0 && n.is_multiple_of(every) {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        });
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let mut text = format!("{name}\n").into_bytes();
    if let Ok(b) = body {
        text.extend_from_slice(&b);
    }
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("x-served-by", http::HeaderValue::from_static(name));
    response
}

/// Starts the proxy in this process with a configuration given as YAML.
pub async fn start_proxy(yaml: &str) -> switchyard::app::Running {
    let config = switchyard::config::parse(Path::new("test.yaml"), yaml)
        .unwrap_or_else(|e| panic!("test config refused: {e}"));
    switchyard::app::start(config).await.unwrap()
}

/// A route `shop` over stable and canary with the given weights, on a listener `public`.
pub fn two_versions(
    stable: &Upstream,
    canary: &Upstream,
    weights: (u32, u32),
    extra: &str,
) -> String {
    format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
routes:
  - name: shop
    versions:
      - {{ name: stable, endpoints: ["{}"], weight: {} }}
      - {{ name: canary, endpoints: ["{}"], weight: {} }}
{extra}
"#,
        stable.addr, weights.0, canary.addr, weights.1
    )
}

pub type TestClient = Client<HttpConnector, Empty<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A finished exchange.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn served_by(&self) -> &str {
        self.headers
            .get("x-served-by")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// GET `url` with extra headers; panics if the exchange fails at the HTTP level.
pub async fn get(client: &TestClient, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::get(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = client
        .request(request.body(Empty::new()).unwrap())
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A loopback port with nothing listening on it, that stays so for the whole test binary: a
/// socket binds it (without `SO_REUSEADDR`, never listening) and is kept open until the process
/// exits. A port merely freed could be taken by another test's listener running in parallel (it
/// happened in CI: the "dead" endpoint answered 200), or be a client's own ephemeral port (a TCP
/// self-connection); a bound port is neither, and a connection to it is refused.
pub fn dead_port() -> SocketAddr {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    // Held, not closed, until the test binary exits: one descriptor per call, a handful in all.
    std::mem::forget(socket);
    addr
}

/// Polls `check` every 10 ms for at most `limit`; returns whether it became true. The one
/// polling loop of the test suite: `check` may await (an HTTP call, a metrics scrape).
pub async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check().await
}

/// Any method with a text body and headers; the body of the reply is collected.
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut request = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = client
        .request(
            request
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Reads one sample's value from a Prometheus text exposition, e.g.
/// `metric(text, "switchyard_requests_total{route=\"shop\",version=\"stable\",status_class=\"2xx\"}")`.
pub fn metric(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// Reads the bound address from the binary's stdout line `switchyard: listener NAME on http://ADDR`
/// (`https://` for a TLS listener).
pub fn read_listen_addr(stdout: std::process::ChildStdout) -> SocketAddr {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(stdout).lines();
    for _ in 0..20 {
        let line = lines
            .next()
            .expect("the proxy printed its listener")
            .unwrap();
        if let Some((_, addr)) = line
            .split_once("://")
            .filter(|_| line.contains(" listener "))
        {
            return addr.trim().parse().unwrap();
        }
    }
    panic!("no listener line in the first 20 lines of output");
}

/// Sends raw bytes on a new connection; returns everything answered until the proxy closes the
/// connection or `limit` passes.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], limit: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw HTTP/1.1 answer (0 when there is none).
pub fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A listener on `listen` and one route to `endpoint`, with `extra` lines.
pub fn one_route(listen: &str, endpoint: &str, extra: &str) -> String {
    format!(
        r#"
listeners: [{{ name: public, addr: "{listen}" }}]
{extra}
routes:
  - name: shop
    versions: [{{ name: stable, endpoints: ["{endpoint}"], weight: 1 }}]
"#
    )
}

/// Writes `yaml` to `switchyard.yaml` in `dir` and returns its path.
pub fn config_file(dir: &Path, yaml: &str) -> std::path::PathBuf {
    let file = dir.join("switchyard.yaml");
    std::fs::write(&file, yaml).unwrap();
    file
}

/// Sends a real SIGTERM to `child` (through kill(1)).
pub fn sigterm(child: &std::process::Child) {
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success(), "kill -TERM {}", child.id());
}

/// How `child` exited, waiting up to `limit` for it (killed, and the test failed, if it has not).
pub async fn exit_within(
    child: &mut std::process::Child,
    limit: Duration,
) -> std::process::ExitStatus {
    let mut status = None;
    eventually(limit, async || {
        status = child.try_wait().unwrap();
        status.is_some()
    })
    .await;
    status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the proxy did not exit within {limit:?}")
    })
}

/// Starts the real binary with `args`, then `--config file`, stdout read for the first listener's
/// address (and then closed), stderr discarded.
pub fn spawn_proxy(args: &[&str], file: &Path) -> (std::process::Child, SocketAddr) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .arg("--config")
        .arg(file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = read_listen_addr(child.stdout.take().unwrap());
    (child, addr)
}
