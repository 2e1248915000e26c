//! The fleet rig: a real 3-member etcd cluster, upstreams and a webhook receiver in this process,
//! and replicas of the real binary, each its own process with its own configuration file, ports
//! read from its stdout.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use switchyard_loadtest::etcd::Cluster;

use crate::common::{self, Upstream};

pub const PREFIX: &str = "/switchyard/test";

/// One replica process.
pub struct Replica {
    pub name: String,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
    child: Child,
}

impl Replica {
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// SIGKILL: no drain, no lease revocation.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The rollout section the replicas' route carries.
pub struct RolloutSpec {
    pub steps: &'static str,
    pub step_interval: &'static str,
    pub min_requests: u32,
}

pub struct Rig {
    pub dir: tempfile::TempDir,
    pub cluster: Cluster,
    pub stable: Upstream,
    pub canary: Upstream,
    pub events: Arc<Mutex<Vec<Value>>>,
    hook: SocketAddr,
    pub replicas: Vec<Replica>,
    rollout: RolloutSpec,
}

impl Rig {
    /// A cluster and `n` replicas of route `shop` (stable 100, canary 0, with a rollout).
    pub async fn start(n: usize, rollout: RolloutSpec) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let cluster = Cluster::start(dir.path(), 3).expect("a 3-member etcd cluster starts");
        let stable = Upstream::start("stable").await;
        let canary = Upstream::start("canary").await;
        let (hook, events) = webhook().await;
        let mut rig = Rig {
            dir,
            cluster,
            stable,
            canary,
            events,
            hook,
            replicas: Vec::new(),
            rollout,
        };
        for i in 0..n {
            let r = rig.spawn(i, "").await;
            rig.replicas.push(r);
        }
        rig
    }

    /// A client of the test's own on the cluster, every request bounded (a member without a
    /// leader answers with an error instead of holding the request).
    pub async fn etcd(&self) -> etcd_client::Client {
        let options = etcd_client::ConnectOptions::new()
            .with_require_leader(true)
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(2));
        etcd_client::Client::connect(self.cluster.endpoints(), Some(options))
            .await
            .unwrap()
    }

    /// Waits (at most `limit`) until every running etcd member reports a leader.
    pub fn quorum(&self, limit: Duration) -> bool {
        tokio::task::block_in_place(|| self.cluster.wait_healthy(limit))
    }

    /// The configuration of replica `i`; `extra` goes into the route (a definition change).
    pub fn config(&self, i: usize, extra: &str) -> String {
        let endpoints: Vec<String> = self
            .cluster
            .endpoints()
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect();
        format!(
            r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
admin: {{ addr: "127.0.0.1:0" }}
access_log: {{ enabled: false }}
state_file: "{state}"
fleet:
  name: edge-{i}
  lease_ttl: 2s
  etcd:
    endpoints: [{endpoints}]
    prefix: "{PREFIX}"
routes:
  - name: shop
    versions:
      - {{ name: stable, endpoints: ["{s}"], weight: 100 }}
      - {{ name: canary, endpoints: ["{c}"], weight: 0 }}
{extra}    rollout:
      baseline: stable
      canary: canary
      steps: {steps}
      step_interval: "{interval}"
      webhook: "http://{hook}/events"
      analysis: {{ interval: "100ms", window: "3s", min_requests: {min} }}
"#,
            state = self.dir.path().join(format!("state-{i}.json")).display(),
            endpoints = endpoints.join(", "),
            s = self.stable.addr,
            c = self.canary.addr,
            steps = self.rollout.steps,
            interval = self.rollout.step_interval,
            hook = self.hook,
            min = self.rollout.min_requests,
        )
    }

    /// Starts replica `i` as a process and reads its ports.
    pub async fn spawn(&self, i: usize, extra: &str) -> Replica {
        let config = self.dir.path().join(format!("edge-{i}.yaml"));
        std::fs::write(&config, self.config(i, extra)).unwrap();
        let log = std::fs::File::create(self.dir.path().join(format!("edge-{i}.log"))).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (public, admin) = tokio::task::spawn_blocking(move || read_ports(stdout))
            .await
            .unwrap();
        Replica {
            name: format!("edge-{i}"),
            public,
            admin,
            config,
            child,
        }
    }

    /// Steady traffic spread over the replicas (requests to a dead one just fail) until `stop`,
    /// for at most two minutes: one client per replica, about `per_second` requests a second
    /// each. Returns how many requests were answered.
    pub fn load(&self, stop: Arc<AtomicBool>, per_second: u64) -> tokio::task::JoinHandle<u64> {
        let targets: Vec<String> = self
            .replicas
            .iter()
            .map(|r| format!("http://{}/", r.public))
            .collect();
        tokio::spawn(async move {
            let mut clients = tokio::task::JoinSet::new();
            for url in targets {
                let stop = stop.clone();
                clients.spawn(async move {
                    let client = common::client();
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
                    let pause = Duration::from_micros(1_000_000 / per_second.max(1));
                    let mut answered = 0u64;
                    while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                        let request = http::Request::get(&url)
                            .body(http_body_util::Empty::new())
                            .unwrap();
                        let sent = client.request(request);
                        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(2), sent).await
                        {
                            use http_body_util::BodyExt;
                            let _ = r.into_body().collect().await;
                            answered += 1;
                        } else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        tokio::time::sleep(pause).await;
                    }
                    answered
                });
            }
            let mut total = 0;
            while let Some(n) = clients.join_next().await {
                total += n.unwrap_or(0);
            }
            total
        })
    }
}

/// Reads `listener public on http://ADDR` and `admin on http://ADDR` from the replica's stdout.
fn read_ports(stdout: std::process::ChildStdout) -> (SocketAddr, SocketAddr) {
    let mut lines = std::io::BufReader::new(stdout).lines();
    let (mut public, mut admin) = (None, None);
    for _ in 0..20 {
        let Some(Ok(line)) = lines.next() else { break };
        let addr = line
            .split("on http://")
            .nth(1)
            .map(|a| a.trim().parse().unwrap());
        if line.contains("listener public") {
            public = addr;
        } else if line.contains("admin on") {
            admin = addr;
        }
        if let (Some(p), Some(a)) = (public, admin) {
            // Keep reading (and dropping) stdout so the replica never blocks on it.
            std::thread::spawn(move || for _ in lines {});
            return (p, a);
        }
    }
    panic!("the replica did not print its listener and admin addresses");
}

/// A webhook receiver that keeps every JSON body it is sent.
async fn webhook() -> (SocketAddr, Arc<Mutex<Vec<Value>>>) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let store = events.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let store = store.clone();
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let store = store.clone();
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        if let Ok(v) = serde_json::from_slice(&body) {
                            store.lock().unwrap().push(v);
                        }
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::new()),
                        ))
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    (addr, events)
}

/// The route as a replica shows it.
pub async fn route(r: &Replica) -> Value {
    let reply = common::send("GET", &r.admin_url("/api/v1/routes/shop"), &[], "").await;
    serde_json::from_str(&reply.body).unwrap()
}

/// The weights a replica serves the route with.
pub async fn weights(r: &Replica) -> Vec<u64> {
    route(r).await["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["weight"].as_u64().unwrap())
        .collect()
}

/// The fleet as a replica shows it.
pub async fn fleet(r: &Replica) -> Value {
    let reply = common::send("GET", &r.admin_url("/api/v1/fleet"), &[], "").await;
    serde_json::from_str(&reply.body).unwrap()
}

/// Polls `check` every 20 ms for at most `limit`.
pub async fn until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
