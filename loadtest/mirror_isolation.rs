//! Latency isolation of mirroring: live p50/p99 at a fixed rate with no mirror, with a shadow that
//! answers in 500 ms, and with a shadow that refuses connections, alternated over rounds
//! (A B C, then C B A) so drift cancels.
//!
//! Run: `cargo run --release --example mirror-isolation` (about two minutes). Loopback only.

#![allow(clippy::unwrap_used)] // a benchmark harness: a failure should stop it loudly

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use switchyard_loadtest::{Mode, Plan};

const RATE: f64 = 500.0;
const SECONDS: u64 = 8;
const ROUNDS: usize = 4;

async fn slow_upstream(delay: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = service_fn(
                move |_req: http::Request<hyper::body::Incoming>| async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                        b"hello from dark\n",
                    ))))
                },
            );
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

fn config(live: SocketAddr, shadow: Option<SocketAddr>) -> String {
    let (dark, mirror) = match shadow {
        Some(s) => (
            format!("      - {{ name: dark, endpoints: [\"{s}\"], weight: 0 }}\n"),
            "    mirror: { version: dark, timeout: 2s }\n".to_string(),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
access_log: {{ enabled: false }}
routes:
  - name: shop
    versions:
      - {{ name: stable, endpoints: ["{live}"], weight: 1 }}
{dark}{mirror}"#
    )
}

async fn measure(yaml: &str) -> (f64, f64, u64, String) {
    let config = switchyard::config::parse(std::path::Path::new("bench.yaml"), yaml).unwrap();
    let proxy = switchyard::app::start(config).await.unwrap();
    let mut plan = Plan::new(format!("http://{}/", proxy.addr("public").unwrap()));
    plan.mode = Mode::OpenLoop { rate_per_sec: RATE };
    plan.duration = Some(Duration::from_secs(SECONDS));
    plan.warmup = Some(Duration::from_secs(1));
    plan.connections = Some(32);
    let report = switchyard_loadtest::run(&plan).await.unwrap();
    let metrics = String::from_utf8_lossy(&proxy.metrics().encode()).into_owned();
    let mirror: Vec<String> = metrics
        .lines()
        .filter(|l| l.starts_with("switchyard_mirror_requests_total") && !l.ends_with(" 0"))
        .map(|l| {
            l.split_once("outcome=\"")
                .map_or(l, |(_, r)| r)
                .replace("\",route=\"shop\"}", "=")
        })
        .collect();
    proxy.shutdown().await;
    (
        report.latency_ms.p50,
        report.latency_ms.p99,
        report.errors.total(),
        mirror.join(" "),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let live = switchyard::cli::demo::spawn_upstream("stable")
        .await
        .unwrap();
    let slow = slow_upstream(Duration::from_millis(500)).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let candidates = [
        ("no mirror", config(live, None)),
        ("shadow answering in 500 ms", config(live, Some(slow))),
        ("shadow refusing connections", config(live, Some(dead))),
    ];
    let mut results: Vec<Vec<(f64, f64, u64, String)>> = vec![Vec::new(); candidates.len()];
    for round in 0..ROUNDS {
        let order: Vec<usize> = if round % 2 == 0 {
            vec![0, 1, 2]
        } else {
            vec![2, 1, 0]
        };
        for i in order {
            results[i].push(measure(&candidates[i].1).await);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let base_p99: Vec<f64> = results[0].iter().map(|r| r.1).collect();
    println!("Live latency at {RATE} req/s open loop, {SECONDS} s per run, {ROUNDS} runs each, alternating order (median of runs; ratio = median of same-round ratios to no mirror)\n");
    println!("| Candidate | live p50 | live p99 | p99 vs no mirror | errors | mirror outcomes (last run) |");
    println!("|---|---|---|---|---|---|");
    for (i, (name, _)) in candidates.iter().enumerate() {
        let p50 = median(results[i].iter().map(|r| r.0).collect());
        let p99 = median(results[i].iter().map(|r| r.1).collect());
        let ratio = median(
            results[i]
                .iter()
                .zip(&base_p99)
                .map(|(r, b)| r.1 / b)
                .collect(),
        );
        let errors: u64 = results[i].iter().map(|r| r.2).sum();
        let outcomes = results[i].last().map(|r| r.3.clone()).unwrap_or_default();
        println!(
            "| {name} | {p50:.2} ms | {p99:.2} ms | {:+.1}% | {errors} | {outcomes} |",
            (ratio - 1.0) * 100.0
        );
    }
}
