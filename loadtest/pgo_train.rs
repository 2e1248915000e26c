//! The training run of a profile-guided build (`loadtest/pgo.sh`): drives a `switchyard` binary
//! built with `-Cprofile-generate` through the common paths, then stops it with SIGTERM so it
//! writes its profile. The profile tells the compiler which code requests run through, so the
//! optimised build lays that code out together and moves the rest (errors, refusals, rare
//! branches) away from it.
//!
//! What it sends, over a 90/10 weighted split with cohorts and the access log on (one request in a
//! hundred logged): HTTP/1.1 GETs on keep-alive connections (the fast path), GETs that close their
//! connection, h2c requests, GETs mirrored to a dark version, GETs to a version whose endpoints
//! speak HTTP/2 (`protocol: h2`, as gRPC services do), POSTs whose small body comes with the head,
//! and GETs over TLS (the development certificates of `certs-dev/`), on kept connections and with
//! a handshake each. Code it does not reach (upgrades, the admin API, the release analysis) is
//! treated as cold:
//! compiled for size and placed away from the hot code, so a path that matters at speed belongs
//! here.
//!
//! Run: `SWITCHYARD_BIN=<instrumented build> cargo run --release --example pgo-train [-- SECONDS]`
//! (default 32, from 8 to 300: eight phases). Loopback only; exits non-zero when a request fails or
//! the binary does not exit 0.

#![allow(clippy::unwrap_used)] // a build-time harness: a failure should stop the build loudly

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use switchyard_loadtest::{Mode, Plan, Protocol, UserKeys};

/// A POST's body: a small JSON document, sent with its head in one write.
const BODY: &[u8] = br#"{"item": 7, "qty": 2, "note": "a body that comes with its head"}"#;

#[tokio::main]
async fn main() -> ExitCode {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(32)
        .clamp(8, 300);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("train.yaml");
    std::fs::write(&file, config().await).unwrap();
    let binary =
        std::env::var("SWITCHYARD_BIN").unwrap_or_else(|_| "target/release/switchyard".into());
    let mut child = Command::new(&binary)
        .args(["run", "--config"])
        .arg(&file)
        .env("SWITCHYARD_WORKER_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{binary}: {e}"));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let markers = ["listener public on http://", "listener tls on https://"];
    let [public, tls]: [String; 2] = switchyard_loadtest::announced(&mut lines, &markers, 20)
        .try_into()
        .unwrap();
    assert!(
        !public.is_empty() && !tls.is_empty(),
        "the binary names its listeners"
    );
    // The access log goes to stdout: read it, or the binary would block on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));

    let phase = Duration::from_secs(seconds / 8);
    let mut failures = plans(&public, phase).await;
    let posts = requests_for(&public, None, phase, post_request()).await;
    println!(
        "POST with its body: {} requests, {} errors",
        posts.0, posts.1
    );
    let connector = tls_connector();
    let kept = requests_for(&tls, Some((&connector, false)), phase, get_request(false)).await;
    println!(
        "GET over TLS, keep-alive: {} requests, {} errors",
        kept.0, kept.1
    );
    let each = requests_for(&tls, Some((&connector, true)), phase, get_request(true)).await;
    println!(
        "GET over TLS, a handshake each: {} requests, {} errors",
        each.0, each.1
    );
    failures += posts.1 + kept.1 + each.1;

    // SIGTERM without kill(1), which a build image may lack. The pid is the child's, which has
    // not been waited for, so it cannot have been reused.
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) takes plain integers and touches no memory of this process.
    #[allow(unsafe_code)]
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0, "kill({pid}, SIGTERM)");
    let status = child.wait().unwrap();
    println!("SIGTERM: exit {:?}", status.code());
    if failures == 0 && status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Three upstreams of the demo and one speaking HTTP/2, and the configuration in front of them: a
/// cleartext listener and a TLS one, a 90/10 split with cohorts, a route mirrored to a dark version
/// (host `mirrored`), a route to the HTTP/2 upstream (host `grpc`), one request in a hundred
/// logged.
async fn config() -> String {
    let stable = switchyard::cli::demo::spawn_upstream("stable")
        .await
        .unwrap();
    let canary = switchyard::cli::demo::spawn_upstream("canary")
        .await
        .unwrap();
    let dark = switchyard::cli::demo::spawn_upstream("dark").await.unwrap();
    let h2 = spawn_h2_upstream().await;
    let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs-dev");
    let (cert, key) = (
        certs.join("localhost.crt").display().to_string(),
        certs.join("localhost.key").display().to_string(),
    );
    format!(
        r#"
listeners:
  - {{ name: public, addr: "127.0.0.1:0" }}
  - name: tls
    addr: "127.0.0.1:0"
    tls: {{ certificates: [{{ cert: "{cert}", key: "{key}" }}] }}
access_log: {{ enabled: true, sample: 0.01 }}
routes:
  - name: dark-launch
    match: {{ hosts: ["mirrored"] }}
    versions:
      - {{ name: stable, endpoints: ["{stable}"], weight: 1 }}
      - {{ name: dark, endpoints: ["{dark}"], weight: 0 }}
    mirror: {{ version: dark, percent: 100 }}
  - name: grpc
    match: {{ hosts: ["grpc"] }}
    versions: [{{ name: stable, endpoints: ["{h2}"], protocol: h2, weight: 1 }}]
  - name: shop
    versions:
      - {{ name: stable, endpoints: ["{stable}"], weight: 90 }}
      - {{ name: canary, endpoints: ["{canary}"], weight: 10 }}
    cohort: {{ key: {{ header: "x-user-id" }} }}
"#
    )
}

/// GETs through the load generator: keep-alive, `connection: close`, h2c, mirrored, to an HTTP/2
/// upstream. Returns the failures.
async fn plans(public: &str, phase: Duration) -> u64 {
    let mut failures = 0;
    let host = |name: &str| vec![("host".to_string(), name.to_string())];
    // The last field: the upstream that must have answered every request of the phase.
    for (name, protocol, headers, answered_by) in [
        ("GET, keep-alive", Protocol::Http1, vec![], None),
        (
            "GET, connection: close",
            Protocol::Http1,
            vec![("connection".to_string(), "close".to_string())],
            None,
        ),
        ("GET, h2c", Protocol::Http2, vec![], None),
        (
            "GET, mirrored to a dark version",
            Protocol::Http1,
            host("mirrored"),
            None,
        ),
        (
            "GET, to an HTTP/2 upstream",
            Protocol::Http1,
            host("grpc"),
            Some(&H2_SERVED),
        ),
    ] {
        let mut plan = Plan::new(format!("http://{public}/"));
        plan.protocol = protocol;
        plan.headers = headers;
        plan.mode = Mode::ClosedLoop { concurrency: 32 };
        plan.duration = Some(phase);
        plan.user_keys = Some(UserKeys {
            header: "x-user-id".into(),
            users: 10_000,
        });
        let report = switchyard_loadtest::run(&plan).await.unwrap();
        println!(
            "{name}: {} requests, {} errors",
            report.completed,
            report.errors.total()
        );
        failures += report.errors.total();
        if let Some(served) = answered_by {
            let served = served.load(Ordering::Relaxed);
            println!("  the HTTP/2 upstream answered {served}");
            failures += report.completed.saturating_sub(served);
        }
    }
    failures
}

/// Requests the HTTP/2 upstream answered: the training fails when its phase reached another route.
static H2_SERVED: AtomicU64 = AtomicU64::new(0);

/// An upstream speaking HTTP/2 with prior knowledge (h2c), answering every request with a short
/// body.
async fn spawn_h2_upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let http = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        // Ends with the training process.
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let service = service_fn(|_request: Request<Incoming>| async {
                H2_SERVED.fetch_add(1, Ordering::Relaxed);
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                    b"hello from h2\n",
                ))))
            });
            tokio::spawn(http.serve_connection(TokioIo::new(stream), service));
        }
    });
    addr
}

/// A client for the development certificates' authority.
fn tls_connector() -> tokio_rustls::TlsConnector {
    let ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs-dev/ca.crt");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn get_request(close: bool) -> Vec<u8> {
    let connection = if close { "connection: close\r\n" } else { "" };
    format!("GET /catalog HTTP/1.1\r\nhost: localhost\r\n{connection}\r\n").into_bytes()
}

fn post_request() -> Vec<u8> {
    let mut request = format!(
        "POST /orders HTTP/1.1\r\nhost: shop\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        BODY.len()
    )
    .into_bytes();
    request.extend_from_slice(BODY);
    request
}

/// `request` sent on 16 connections for `phase`, each request in one write, over TLS when a
/// connector is given (with a new connection and handshake for each request when its flag says
/// so): (answered with 200, failed).
async fn requests_for(
    addr: &str,
    tls: Option<(&tokio_rustls::TlsConnector, bool)>,
    phase: Duration,
    request: Vec<u8>,
) -> (u64, u64) {
    let until = Instant::now() + phase;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (addr, request) = (addr.to_string(), request.clone());
        let tls = tls.map(|(connector, each)| (connector.clone(), each));
        tasks.spawn(async move {
            let mut ok = 0;
            // Bounded by the phase's end; a failure ends the connection's loop.
            while Instant::now() < until {
                let Ok(tcp) = TcpStream::connect(&addr).await else {
                    return (ok, 1);
                };
                let answered = match &tls {
                    None => keep_asking(tcp, &request, until).await,
                    Some((connector, each)) => {
                        let name = ServerName::try_from("localhost").unwrap();
                        let Ok(stream) = connector.connect(name, tcp).await else {
                            return (ok, 1);
                        };
                        let until = if *each { Instant::now() } else { until };
                        keep_asking(stream, &request, until).await
                    }
                };
                match answered {
                    Ok(n) => ok += n,
                    Err(n) => return (ok + n, 1),
                }
            }
            (ok, 0)
        });
    }
    let (mut ok, mut failed) = (0, 0);
    while let Some(result) = tasks.join_next().await {
        let (o, f) = result.unwrap_or((0, 1));
        ok += o;
        failed += f;
    }
    (ok, failed)
}

/// Sends `request` on `stream` and reads its answer, again until `until` (at least once): the
/// answers with 200, or `Err` with them when one failed.
async fn keep_asking<S>(mut stream: S, request: &[u8], until: Instant) -> Result<u64, u64>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut ok = 0;
    // Bounded by `until`.
    loop {
        match exchange(&mut stream, request).await {
            Some(200) => ok += 1,
            _ => return Err(ok),
        }
        if Instant::now() >= until {
            return Ok(ok);
        }
    }
}

/// Writes `request` and reads one answer with a `content-length` body: its status.
async fn exchange<S>(stream: &mut S, request: &[u8]) -> Option<u16>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(request).await.ok()?;
    let mut buf = Vec::with_capacity(1024);
    // Bounded by the answer's size (at most 64 KB) and a five-second timeout per read.
    while buf.len() < 64 * 1024 {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut answer = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head) = answer.parse(&buf).ok()? else {
            continue;
        };
        let length: usize = answer
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())?;
        if buf.len() >= head + length {
            return answer.code;
        }
    }
    None
}
