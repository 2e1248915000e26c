//! The training run of a profile-guided build (`loadtest/pgo.sh`): drives a `switchyard` binary
//! built with `-Cprofile-generate` through the common paths, then stops it with SIGTERM so it
//! writes its profile. The profile tells the compiler which code requests run through, so the
//! optimised build lays that code out together and moves the rest (errors, refusals, rare
//! branches) away from it.
//!
//! What it sends, over a 90/10 weighted split with cohorts and the access log on: HTTP/1.1 GETs on
//! keep-alive connections (the fast path), POSTs whose small body comes with the head, GETs that
//! close their connection, and h2c requests. Paths it does not train (TLS, upgrades, mirroring,
//! the admin API) are compiled as before, without a profile's hints.
//!
//! Run: `SWITCHYARD_BIN=<instrumented build> cargo run --release --example pgo-train [-- SECONDS]`
//! (default 20, at most 300). Loopback only; exits non-zero when a request fails or the binary
//! does not exit 0.

#![allow(clippy::unwrap_used)] // a build-time harness: a failure should stop the build loudly

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use switchyard_loadtest::{Mode, Plan, Protocol, UserKeys};

/// A POST's body: a small JSON document, sent with its head in one write.
const BODY: &[u8] = br#"{"item": 7, "qty": 2, "note": "a body that comes with its head"}"#;

#[tokio::main]
async fn main() -> ExitCode {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
        .clamp(4, 300);
    let stable = switchyard::cli::demo::spawn_upstream("stable")
        .await
        .unwrap();
    let canary = switchyard::cli::demo::spawn_upstream("canary")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("train.yaml");
    std::fs::write(
        &file,
        format!(
            r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
access_log: {{ enabled: true, sample: 0.01 }}
routes:
  - name: shop
    versions:
      - {{ name: stable, endpoints: ["{stable}"], weight: 90 }}
      - {{ name: canary, endpoints: ["{canary}"], weight: 10 }}
    cohort: {{ key: {{ header: "x-user-id" }} }}
"#
        ),
    )
    .unwrap();
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
    let public = (0..20)
        .find_map(|_| {
            let line = lines.next()?.ok()?;
            Some(line.split("listener public on ").nth(1)?.trim().to_string())
        })
        .expect("the binary names its listener");
    // The access log goes to stdout: read it, or the binary would block on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));

    let phase = Duration::from_secs(seconds / 4);
    let mut failures = 0;
    for (name, protocol, headers) in [
        ("GET, keep-alive", Protocol::Http1, vec![]),
        (
            "GET, connection: close",
            Protocol::Http1,
            vec![("connection".to_string(), "close".to_string())],
        ),
        ("GET, h2c", Protocol::Http2, vec![]),
    ] {
        let mut plan = Plan::new(format!("{public}/"));
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
    }
    let addr = public.trim_start_matches("http://").to_string();
    let posts = post_for(&addr, phase).await;
    println!(
        "POST with its body: {} requests, {} errors",
        posts.0, posts.1
    );
    failures += posts.1;

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

/// POSTs on 16 keep-alive connections for `phase`, each head and body in one write: (answered
/// with 200, failed).
async fn post_for(addr: &str, phase: Duration) -> (u64, u64) {
    let until = Instant::now() + phase;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let addr = addr.to_string();
        tasks.spawn(async move {
            let mut request = format!(
                "POST /orders HTTP/1.1\r\nhost: shop\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\n\r\n",
                BODY.len()
            )
            .into_bytes();
            request.extend_from_slice(BODY);
            let (mut ok, mut failed) = (0, 0);
            let Ok(mut stream) = TcpStream::connect(&addr).await else {
                return (0, 1);
            };
            // Bounded by the phase's end.
            while Instant::now() < until {
                match exchange(&mut stream, &request).await {
                    Some(200) => ok += 1,
                    _ => {
                        failed += 1;
                        break;
                    }
                }
            }
            (ok, failed)
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

/// Writes `request` and reads one answer with a `content-length` body: its status.
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> Option<u16> {
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
