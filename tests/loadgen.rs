//! The load generator (`switchyard-loadtest`) against a real hyper server on 127.0.0.1:0, and
//! through the real proxy: every count in its report is checked against what the server saw.
//! Counts only: no latency or throughput is judged.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use switchyard_loadtest::{Mode, Plan, Protocol, Scenario, UserKeys};
use tokio::net::TcpListener;

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path_and_query: String,
    version: Version,
    user: Option<String>,
}

/// A real hyper server (HTTP/1.1, and h2c with prior knowledge) that answers 500 when the path
/// ends in an odd digit and 200 otherwise, with `x-served-by: blue` on its odd-numbered requests
/// and `green` on its even-numbered ones.
struct Server {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (accepted, record) = (connections.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let record = record.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let record = record.clone();
                    async move { Ok::<_, Infallible>(answer(&record, &req)) }
                });
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Server {
            addr,
            connections,
            seen,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn answer(record: &Mutex<Vec<Seen>>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let n = {
        let mut seen = record.lock().unwrap();
        seen.push(Seen {
            path_and_query: req.uri().path_and_query().unwrap().to_string(),
            version: req.version(),
            user: req
                .headers()
                .get("x-user-id")
                .map(|v| v.to_str().unwrap().to_string()),
        });
        seen.len()
    };
    let odd_path = req
        .uri()
        .path()
        .chars()
        .last()
        .and_then(|c| c.to_digit(10))
        .is_some_and(|d| d % 2 == 1);
    let mut response = Response::new(Full::new(Bytes::from_static(b"ok\n")));
    if odd_path {
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    }
    let served_by = if n % 2 == 1 { "blue" } else { "green" };
    response
        .headers_mut()
        .insert("x-served-by", http::HeaderValue::from_static(served_by));
    response
}

/// Five targets /item/0 .. /item/4 used round robin: the server answers 500 to /item/1 and
/// /item/3, so exactly 2 requests in 5 fail whatever the order of arrival.
fn items(server: &Server) -> Vec<String> {
    (0..5).map(|i| server.url(&format!("/item/{i}"))).collect()
}

fn count_plan(server: &Server, requests: u64, mode: Mode) -> Plan {
    let mut plan = Plan::new(server.url("/"));
    plan.targets = items(server);
    plan.mode = mode;
    plan.duration = None;
    plan.requests = Some(requests);
    plan.count_header = Some("x-served-by".into());
    plan
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_counts_requests_200s_and_500s_exactly_over_exact_connections() {
    let server = Server::start().await;
    let mut plan = count_plan(&server, 1000, Mode::ClosedLoop { concurrency: 8 });
    plan.connections = Some(4);
    plan.user_keys = Some(UserKeys {
        header: "x-user-id".into(),
        users: 100,
    });
    let report = switchyard_loadtest::run(&plan).await.unwrap();

    assert_eq!(report.sent, 1000);
    assert_eq!(report.completed, 1000);
    assert_eq!(report.statuses, BTreeMap::from([(200, 600), (500, 400)]));
    assert_eq!(report.errors.status, BTreeMap::from([(500, 400)]));
    let e = &report.errors;
    assert_eq!((e.connect, e.timeout, e.other, e.total()), (0, 0, 0, 400));
    let split = report.header_counts.as_ref().unwrap();
    assert_eq!(split.header, "x-served-by");
    let want = BTreeMap::from([("blue".to_string(), 500), ("green".to_string(), 500)]);
    assert_eq!(split.counts, want);

    let seen = server.seen();
    assert_eq!(seen.len(), 1000);
    for i in 0..5 {
        let path = format!("/item/{i}");
        assert_eq!(
            seen.iter().filter(|s| s.path_and_query == path).count(),
            200
        );
    }
    assert!(seen.iter().all(|s| s.version == Version::HTTP_11));
    let users: BTreeSet<_> = seen.iter().map(|s| s.user.clone().unwrap()).collect();
    assert!(users.len() > 1 && users.len() <= 100, "{}", users.len());
    // HTTP/1.1 keep-alive on exactly the connections asked for.
    assert_eq!(server.connections.load(Ordering::SeqCst), 4);
    assert_eq!(report.connections_opened, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_counts_every_scheduled_request_and_ends_in_bounded_time() {
    let server = Server::start().await;
    let plan = count_plan(
        &server,
        200,
        Mode::OpenLoop {
            rate_per_sec: 400.0,
        },
    );
    let report = switchyard_loadtest::run(&plan).await.unwrap();

    assert_eq!(report.sent, 200);
    assert_eq!(report.completed, 200);
    assert_eq!(report.statuses, BTreeMap::from([(200, 120), (500, 80)]));
    assert_eq!(report.errors.total(), 80);
    assert_eq!(server.seen().len(), 200);
    // Bounded: the run stopped by itself. The lower bound is the schedule itself (request 199 is
    // due at 497.5 ms), which a slow machine can only lengthen.
    assert!(report.elapsed_secs < 60.0, "{}", report.elapsed_secs);
    assert!(report.elapsed_secs >= 0.4975, "{}", report.elapsed_secs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_multiplexes_on_the_connections_asked_for() {
    let server = Server::start().await;
    let mut plan = count_plan(&server, 500, Mode::ClosedLoop { concurrency: 16 });
    plan.protocol = Protocol::Http2;
    plan.connections = Some(2);
    let report = switchyard_loadtest::run(&plan).await.unwrap();

    assert_eq!((report.sent, report.completed), (500, 500));
    assert_eq!(report.statuses, BTreeMap::from([(200, 300), (500, 200)]));
    let seen = server.seen();
    assert_eq!(seen.len(), 500);
    assert!(seen.iter().all(|s| s.version == Version::HTTP_2));
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
}

fn scenario_file(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("loadtest/scenarios")
        .join(name)
}

#[test]
fn the_proxy_configs_beside_the_scenarios_are_valid() {
    for name in ["plain-split.yaml", "rules-and-cohort.yaml"] {
        let path = scenario_file(&format!("proxy/{name}"));
        let text = std::fs::read_to_string(&path).unwrap();
        switchyard::config::parse(&path, &text).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_cohort_scenario_through_the_proxy_reports_the_split_the_upstreams_saw() {
    let stable = Server::start().await;
    let canary = Server::start().await;
    let path = scenario_file("proxy/rules-and-cohort.yaml");
    let yaml = std::fs::read_to_string(&path)
        .unwrap()
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9901", "127.0.0.1:0")
        .replace("127.0.0.1:9001", &stable.addr.to_string())
        .replace("127.0.0.1:9101", &canary.addr.to_string());
    let config = switchyard::config::parse(&path, &yaml).unwrap();
    let proxy = switchyard::app::start(config).await.unwrap();
    let base = format!("http://{}", proxy.addr("public").unwrap());

    let scenario = Scenario::load(&scenario_file("rules-and-cohort.yaml")).unwrap();
    let mut plan = scenario.into_plan().unwrap();
    // The scenario's targets, pointed at this proxy; a smaller count.
    plan.targets = plan
        .targets
        .iter()
        .map(|u| u.replace("http://127.0.0.1:8080", &base))
        .collect();
    plan.requests = Some(400);
    plan.timeout = Duration::from_secs(10);
    let report = switchyard_loadtest::run(&plan).await.unwrap();

    assert_eq!((report.sent, report.completed), (400, 400));
    assert_eq!(report.statuses, BTreeMap::from([(200, 400)]));
    let counts = &report.header_counts.as_ref().unwrap().counts;
    let (to_stable, to_canary) = (stable.seen(), canary.seen());
    assert_eq!(
        counts.get("stable").copied().unwrap_or(0),
        to_stable.len() as u64
    );
    assert_eq!(
        counts.get("canary").copied().unwrap_or(0),
        to_canary.len() as u64
    );
    // The rule: every ?canary=always request (one in four) went to the canary.
    let pinned = |seen: &[Seen]| {
        seen.iter()
            .filter(|s| s.path_and_query.ends_with("canary=always"))
            .count()
    };
    assert_eq!((pinned(&to_canary), pinned(&to_stable)), (100, 0));
    // The cohort: outside the rule, no user was seen by both versions.
    let users = |seen: &[Seen]| -> BTreeSet<String> {
        seen.iter()
            .filter(|s| !s.path_and_query.ends_with("canary=always"))
            .map(|s| s.user.clone().unwrap())
            .collect()
    };
    assert!(users(&to_stable).is_disjoint(&users(&to_canary)));
    proxy.shutdown().await;
}
