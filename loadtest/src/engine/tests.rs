//! The engine against tiny raw-TCP HTTP/1.1 servers on 127.0.0.1:0: exact counts, never timings.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::plan::{Mode, Plan, UserKeys};
use crate::{run, LoadError, PlanError};

/// What the test server saw.
#[derive(Default)]
struct Seen {
    connections: AtomicU64,
    requests: AtomicU64,
    heads: Mutex<Vec<String>>,
}

/// A server that answers each request (numbered from 1 across connections) with `status(n)`,
/// and `x-served-by: a` or `b` by parity; `None` means never answer.
async fn server(status: fn(u64) -> Option<u16>) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/path", listener.local_addr().unwrap());
    let seen = Arc::new(Seen::default());
    let shared = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            shared.connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream, shared.clone(), status));
        }
    });
    (url, seen)
}

async fn serve(mut stream: TcpStream, seen: Arc<Seen>, status: fn(u64) -> Option<u16>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head: Vec<u8> = buf.drain(..end + 4).collect();
        seen.heads
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(&head).into_owned());
        let n = seen.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let Some(code) = status(n) else {
            // Hold the connection open without answering.
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        };
        let who = if n.is_multiple_of(2) { "a" } else { "b" };
        let response =
            format!("HTTP/1.1 {code} X\r\ncontent-length: 2\r\nx-served-by: {who}\r\n\r\nok");
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn every_third_fails(n: u64) -> Option<u16> {
    Some(if n.is_multiple_of(3) { 503 } else { 200 })
}

fn counted(url: &str, requests: u64, concurrency: usize) -> Plan {
    let mut plan = Plan::new(url);
    plan.duration = None;
    plan.requests = Some(requests);
    plan.mode = Mode::ClosedLoop { concurrency };
    plan
}

#[tokio::test]
async fn closed_loop_counts_every_request_and_status_exactly_on_the_given_connections() {
    let (url, seen) = server(every_third_fails).await;
    let mut plan = counted(&url, 300, 4);
    plan.connections = Some(2);
    plan.count_header = Some("x-served-by".into());
    let report = run(&plan).await.unwrap();

    assert_eq!(report.sent, 300);
    assert_eq!(report.completed, 300);
    assert_eq!(report.statuses.get(&200), Some(&200));
    assert_eq!(report.statuses.get(&503), Some(&100));
    assert_eq!(report.errors.status.len(), 1);
    assert_eq!(report.errors.total(), 100);
    assert_eq!(report.errors.first, None);
    let counts = report.header_counts.unwrap().counts;
    assert_eq!(counts.get("a"), Some(&150));
    assert_eq!(counts.get("b"), Some(&150));
    assert_eq!(seen.requests.load(Ordering::SeqCst), 300);
    // Keep-alive: exactly the allowed connections, reused.
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
    assert_eq!(report.connections_opened, 2);
}

#[tokio::test]
async fn open_loop_sends_exactly_the_count_and_records_each_latency() {
    let (url, seen) = server(every_third_fails).await;
    let mut plan = counted(&url, 60, 1);
    plan.mode = Mode::OpenLoop {
        rate_per_sec: 1000.0,
    };
    let report = run(&plan).await.unwrap();
    assert_eq!((report.sent, report.completed), (60, 60));
    assert_eq!(report.statuses.get(&503), Some(&20));
    assert_eq!(seen.requests.load(Ordering::SeqCst), 60);
    assert!(report.latency_ms.max > 0.0);
    assert!(report.latency_ms.p50 <= report.latency_ms.max);
}

#[tokio::test]
async fn requests_without_an_answer_count_as_timeouts() {
    let (url, _seen) = server(|_| None).await;
    let mut plan = counted(&url, 3, 3);
    plan.timeout = Duration::from_millis(100);
    let report = run(&plan).await.unwrap();
    assert_eq!(report.sent, 3);
    assert_eq!(report.completed, 0);
    assert_eq!(report.errors.timeout, 3);
    assert_eq!(report.errors.total(), 3);
}

#[tokio::test]
async fn a_closed_port_counts_connect_errors_with_a_message() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    drop(listener);
    let report = run(&counted(&url, 5, 1)).await.unwrap();
    assert_eq!(report.sent, 5);
    assert_eq!(report.errors.connect, 5);
    assert_eq!(report.completed, 0);
    assert!(report
        .errors
        .first
        .unwrap()
        .starts_with("connect 127.0.0.1:"));
}

#[tokio::test]
async fn method_host_and_user_headers_are_sent_as_planned() {
    let (url, seen) = server(|_| Some(200)).await;
    let mut plan = counted(&url, 50, 2);
    plan.method = http::Method::POST;
    plan.headers = vec![
        ("host".into(), "shop.example.com".into()),
        ("x-canary".into(), "always".into()),
    ];
    plan.user_keys = Some(UserKeys {
        header: "x-user-id".into(),
        users: 5,
    });
    let report = run(&plan).await.unwrap();
    assert_eq!(report.completed, 50);

    let heads = seen.heads.lock().unwrap();
    assert_eq!(heads.len(), 50);
    let mut users = std::collections::BTreeSet::new();
    for head in heads.iter() {
        let head = head.to_ascii_lowercase();
        assert!(head.starts_with("post /path http/1.1\r\n"), "{head}");
        assert!(head.contains("\r\nhost: shop.example.com\r\n"), "{head}");
        assert!(head.contains("\r\nx-canary: always\r\n"), "{head}");
        let user = head
            .split("\r\n")
            .find_map(|l| l.strip_prefix("x-user-id: "))
            .unwrap()
            .to_string();
        users.insert(user);
    }
    assert!(users.len() <= 5 && users.len() > 1, "{users:?}");
    assert!(users.iter().all(|u| u.starts_with("user-")));
}

#[tokio::test]
async fn the_warm_up_is_left_out_of_the_report() {
    let (url, seen) = server(|_| Some(200)).await;
    let mut plan = counted(&url, 10, 1);
    plan.warmup = Some(Duration::from_millis(100));
    let report = run(&plan).await.unwrap();
    assert_eq!((report.sent, report.completed), (10, 10));
    assert!(seen.requests.load(Ordering::SeqCst) > 10);
}

#[tokio::test]
async fn a_target_off_this_machine_is_refused_before_anything_is_sent() {
    let plan = counted("http://192.168.1.1:8080/", 10, 1);
    let err = run(&plan).await.unwrap_err();
    assert!(
        matches!(err, LoadError::Plan(PlanError::Target(_))),
        "{err}"
    );
}
