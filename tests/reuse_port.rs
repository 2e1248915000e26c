//! `run --reuse-port`: one SO_REUSEPORT socket and accept loop per worker thread. The listener's
//! port has one listening socket per worker, the kernel spreads connections over them, every
//! worker serves the snapshot the control plane installs, and a drain lets in-flight requests on
//! every worker finish.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use switchyard::app::Accept;
use switchyard::control::Action;

/// Listening TCP sockets bound to `addr`, read from /proc/net/tcp as `ss -ltn` does.
fn listening_sockets(addr: SocketAddr) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = format!(":{:04X}", addr.port());
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local address (hex ip:port), state 0A = LISTEN
            fields.len() > 3 && fields[1].ends_with(&port) && fields[3] == "0A"
        })
        .count()
}

/// One request on a new connection; the answer's status and `x-served-by`.
async fn one_request(addr: SocketAddr, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n");
    let answer = raw_exchange(addr, request.as_bytes(), Duration::from_secs(10)).await;
    let served_by = answer
        .lines()
        .find_map(|l| l.strip_prefix("x-served-by: "))
        .unwrap_or("")
        .trim()
        .to_string();
    (status_of(&answer), served_by)
}

fn exposition(running: &switchyard::app::Running) -> String {
    String::from_utf8_lossy(&running.metrics().encode()).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_accepts_on_its_own_socket_and_serves_the_installed_snapshot() {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    let yaml = two_versions(&stable, &canary, (100, 0), "");
    let config = switchyard::config::parse(std::path::Path::new("test.yaml"), &yaml).unwrap();
    let running = switchyard::app::start_accepting(config, Accept::PerWorker(2))
        .await
        .unwrap();
    let addr = running.addr("public").unwrap();
    assert_eq!(
        listening_sockets(addr),
        2,
        "one listening socket per worker"
    );

    // 64 connections: the kernel hashes each to one of the two sockets.
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..64 {
        clients.spawn(async move { one_request(addr, &format!("/before/{i}")).await });
    }
    while let Some(reply) = clients.join_next().await {
        assert_eq!(reply.unwrap(), (200, "stable".to_string()));
    }
    let metrics = exposition(&running);
    let per_worker = [0, 1].map(|w| {
        metric(
            &metrics,
            &format!("switchyard_worker_connections_total{{worker=\"{w}\"}}"),
        )
        .unwrap_or(0.0)
    });
    assert_eq!(per_worker[0] + per_worker[1], 64.0, "{per_worker:?}");
    assert!(
        per_worker.iter().all(|n| *n >= 1.0),
        "both workers accepted connections: {per_worker:?}"
    );

    // A change installed by the control plane reaches every worker.
    running
        .control()
        .act("shop", Action::Promote, "test")
        .await
        .unwrap();
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..32 {
        clients.spawn(async move { one_request(addr, &format!("/after/{i}")).await });
    }
    while let Some(reply) = clients.join_next().await {
        assert_eq!(reply.unwrap(), (200, "canary".to_string()));
    }

    // Slow requests on connections spread over both workers, then a shutdown: all finish.
    let mut slow = tokio::task::JoinSet::new();
    for i in 0..16 {
        slow.spawn(async move { one_request(addr, &format!("/slow/{i}?delay_ms=800")).await });
    }
    assert!(
        eventually(Duration::from_secs(10), async || canary.count() == 32 + 16).await,
        "the slow requests reached the upstream"
    );
    tokio::time::timeout(Duration::from_secs(10), running.shutdown())
        .await
        .expect("the workers drained within 10 s");
    while let Some(reply) = slow.join_next().await {
        assert_eq!(reply.unwrap(), (200, "canary".to_string()));
    }
    assert_eq!(listening_sockets(addr), 0, "every worker closed its socket");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[test]
fn a_port_taken_without_reuse_port_is_refused_at_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(dir.path(), &one_route(&addr.to_string(), "127.0.0.1:9", ""));
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", "--reuse-port", "--worker-threads", "2", "--config"])
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("public: cannot bind {addr}")),
        "names the listener and the address: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_with_reuse_port_serves_and_exits_zero_on_sigterm() {
    let stable = Upstream::start("stable").await;
    let dir = tempfile::tempdir().unwrap();
    let admin = r#"admin: { addr: "127.0.0.1:0" }"#;
    let file = config_file(
        dir.path(),
        &one_route("127.0.0.1:0", &stable.addr.to_string(), admin),
    );
    let (mut child, addr) = spawn_proxy(&["run", "--reuse-port", "--worker-threads", "3"], &file);
    assert_eq!(
        listening_sockets(addr),
        3,
        "one listening socket per worker"
    );
    let names = std::fs::read_dir(format!("/proc/{}/task", child.id()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("switchyard-work"))
        .count();
    assert_eq!(names, 3, "three worker threads");
    for i in 0..12 {
        assert_eq!(
            one_request(addr, &format!("/{i}")).await,
            (200, "stable".to_string())
        );
    }
    let slow = tokio::spawn(async move { one_request(addr, "/slow?delay_ms=800").await });
    assert!(eventually(Duration::from_secs(10), async || stable.count() == 13).await);
    sigterm(&child);
    assert_eq!(slow.await.unwrap(), (200, "stable".to_string()));
    let status = exit_within(&mut child, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}
