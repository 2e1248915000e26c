//! Soak run: the release `switchyard` binary under steady load for ten minutes (bounded), with
//! a canary split, a cohort, mirroring and rotating weight changes through the admin API, sampling
//! its resident memory (in all, the main heap, other anonymous mappings) and open file descriptors
//! every 30 seconds; at the end, the memory glibc gives back on `malloc_trim(0)` (through gdb).
//!
//! Run: `cargo build --release && cargo run --release --example soak [-- SECONDS]` (default 600, at most 3600).
//! Loopback only; the binary is started and stopped by the runner.

#![allow(clippy::unwrap_used)] // a benchmark harness: a failure should stop it loudly

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use switchyard_loadtest::{Mode, Plan, UserKeys};

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Resident kilobytes of the main heap (`[heap]`, glibc's main arena) and of the other anonymous
/// mappings (thread arenas, thread stacks), from `/proc/PID/smaps`.
fn heap_and_anon_kb(pid: u32) -> (u64, u64) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut heap, mut anon, mut region) = (0, 0, "");
    for line in smaps.lines() {
        if let Some(kb) = line.strip_prefix("Rss:") {
            let kb: u64 = kb
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            match region {
                "[heap]" => heap += kb,
                "" => anon += kb,
                _ => {}
            }
        } else if line
            .split_whitespace()
            .next()
            .is_some_and(|f| f.contains('-'))
        {
            // A mapping's header: "start-end perms offset dev inode [path]".
            region = line.split_whitespace().nth(5).unwrap_or("");
        }
    }
    (heap, anon)
}

/// Asks glibc to give its free memory back (`malloc_trim(0)`, called through gdb) and returns
/// the resident kilobytes after, or None without gdb. What the trim gives back was free memory
/// kept by the allocator, not memory the proxy still holds.
fn rss_after_malloc_trim(pid: u32) -> Option<u64> {
    let status = Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "call (int) malloc_trim(0)",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    status.success().then(|| rss_kb(pid))
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(600)
        .min(3600);
    let stable = switchyard::cli::demo::spawn_upstream("stable")
        .await
        .unwrap();
    let canary = switchyard::cli::demo::spawn_upstream("canary")
        .await
        .unwrap();
    let dark = switchyard::cli::demo::spawn_upstream("dark").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("soak.yaml");
    std::fs::write(
        &file,
        format!(
            r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
admin: {{ addr: "127.0.0.1:0" }}
access_log: {{ enabled: false }}
routes:
  - name: shop
    versions:
      - {{ name: stable, endpoints: ["{stable}"], weight: 90 }}
      - {{ name: canary, endpoints: ["{canary}"], weight: 10 }}
      - {{ name: dark, endpoints: ["{dark}"], weight: 0 }}
    cohort: {{ key: {{ header: "x-user-id" }} }}
    mirror: {{ version: dark, percent: 20 }}
"#
        ),
    )
    .unwrap();
    let binary =
        std::env::var("SWITCHYARD_BIN").unwrap_or_else(|_| "target/release/switchyard".into());
    let mut child = Command::new(&binary)
        .args(["run", "--config"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{binary}: {e} (build it with cargo build --release)"));
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let [public, admin]: [String; 2] =
        switchyard_loadtest::announced(&mut lines, &["listener public on ", "admin on "], 10)
            .try_into()
            .unwrap();

    // Weight changes every 5 s through the admin API, in the background.
    let weights_admin = admin.clone();
    let stop_weights = Instant::now() + Duration::from_secs(seconds);
    tokio::spawn(async move {
        let mut i = 0u32;
        while Instant::now() < stop_weights {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let canary = [5, 10, 25, 10][(i % 4) as usize];
            i += 1;
            let body = format!(
                r#"{{"stable": {}, "canary": {canary}, "dark": 0}}"#,
                100 - canary
            );
            let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http();
            let request = http::Request::put(format!("{weights_admin}/api/v1/routes/shop/weights"))
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap();
            let _ = client.request(request).await;
        }
    });

    println!("Soak: {seconds} s at 1000 req/s open loop, 64 connections, 10,000 cohort users, 20% mirrored, weights changed every 5 s\n");
    println!("| Elapsed | RSS | of which [heap] | other anonymous | Open fds | Requests | Errors | p99 |");
    println!("|---|---|---|---|---|---|---|---|");
    let (heap, anon) = heap_and_anon_kb(pid);
    println!(
        "| 0 s | {:.1} MB | {:.1} MB | {:.1} MB | {} | - | - | - |",
        rss_kb(pid) as f64 / 1024.0,
        heap as f64 / 1024.0,
        anon as f64 / 1024.0,
        fds(pid)
    );
    let started = Instant::now();
    let slice = 30u64;
    let mut total = 0;
    while started.elapsed().as_secs() + slice <= seconds {
        let mut plan = Plan::new(format!("{public}/"));
        plan.mode = Mode::OpenLoop {
            rate_per_sec: 1000.0,
        };
        plan.duration = Some(Duration::from_secs(slice));
        plan.connections = Some(64);
        plan.user_keys = Some(UserKeys {
            header: "x-user-id".into(),
            users: 10_000,
        });
        let report = switchyard_loadtest::run(&plan).await.unwrap();
        total += report.completed;
        let (heap, anon) = heap_and_anon_kb(pid);
        println!(
            "| {} s | {:.1} MB | {:.1} MB | {:.1} MB | {} | {} | {} | {:.2} ms |",
            started.elapsed().as_secs(),
            rss_kb(pid) as f64 / 1024.0,
            heap as f64 / 1024.0,
            anon as f64 / 1024.0,
            fds(pid),
            total,
            report.errors.total(),
            report.latency_ms.p99
        );
    }
    let before = rss_kb(pid);
    match rss_after_malloc_trim(pid) {
        Some(after) => println!(
            "\nmalloc_trim(0) at the end: RSS {:.1} MB -> {:.1} MB (the difference was free memory the allocator kept)",
            before as f64 / 1024.0,
            after as f64 / 1024.0
        ),
        None => println!("\n(no gdb: the allocator's free memory was not measured)"),
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = child.wait().unwrap();
    println!("\nSIGTERM: exit {:?}", status.code());
}
