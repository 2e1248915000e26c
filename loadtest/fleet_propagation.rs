//! Propagation in a fleet: three replicas on a 3-member etcd cluster (Debian's `etcd`, on loopback
//! ports), 50 weight changes each sent through one replica's admin API in turn; for each, the
//! time until the API answered (the change is committed in etcd) and until all three replicas
//! serve it (their snapshots carry the new weights). Prints p50, p99 and max of both.
//!
//! Run: `cargo run --release --example fleet-propagation` (about 15 s). Loopback only.

#![allow(clippy::unwrap_used)] // a benchmark harness: a failure should stop it loudly

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use switchyard_loadtest::etcd::Cluster;

const CHANGES: usize = 50;
const REPLICAS: usize = 3;

fn config(i: usize, endpoints: &[String]) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
admin: {{ addr: "127.0.0.1:0" }}
access_log: {{ enabled: false }}
fleet:
  name: edge-{i}
  etcd: {{ endpoints: [{}], prefix: /switchyard/propagation }}
routes:
  - name: shop
    versions:
      - {{ name: stable, endpoints: ["127.0.0.1:9"], weight: 100 }}
      - {{ name: canary, endpoints: ["127.0.0.1:9"], weight: 0 }}
"#,
        endpoints.join(", ")
    )
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn line(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<28} p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms   ({} changes)",
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap()),
        samples.len()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3).expect("etcd starts (install etcd-server)");
    let mut replicas = Vec::new();
    for i in 0..REPLICAS {
        let file = dir.path().join(format!("edge-{i}.yaml"));
        std::fs::write(&file, config(i, &cluster.endpoints())).unwrap();
        replicas.push(switchyard::app::start_from_file(&file).await.unwrap());
    }
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let (mut answered, mut everywhere) = (Vec::new(), Vec::new());
    for n in 0..CHANGES {
        let canary = (n % 99 + 1) as u32;
        let writer = &replicas[n % REPLICAS];
        let url = format!(
            "http://{}/api/v1/routes/shop/weights",
            writer.admin_addr().unwrap()
        );
        let body = format!(r#"{{"stable": {}, "canary": {canary}}}"#, 100 - canary);
        let request = http::Request::put(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let started = Instant::now();
        let response = client.request(request).await.unwrap();
        let status = response.status();
        let _ = response.into_body().collect().await;
        assert!(status.is_success(), "change {n} refused: {status}");
        answered.push(started.elapsed());
        let deadline = started + Duration::from_secs(5);
        loop {
            let done = replicas.iter().all(|r| {
                let s = r.snapshot();
                s.routes[0].versions[1].weight == canary
            });
            if done {
                everywhere.push(started.elapsed());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "change {n} not everywhere in 5 s"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    println!("fleet propagation: {REPLICAS} replicas, 3-member etcd on loopback, {CHANGES} weight changes");
    line("API answered (committed)", answered);
    line("in force on all replicas", everywhere);
    for r in replicas {
        r.shutdown().await;
    }
}
