//! SIGTERM with requests in flight: the real binary stops accepting, lets every request finish
//! with 200, and exits 0.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_and_exits_zero() {
    let stable = Upstream::start("stable").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("switchyard.yaml");
    std::fs::write(
        &file,
        format!(
            r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
drain_timeout: "20s"
routes:
  - name: shop
    versions: [{{ name: stable, endpoints: ["{}"], weight: 1 }}]
"#,
            stable.addr
        ),
    )
    .unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", "--config"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = read_listen_addr(child.stdout.take().unwrap());

    // Ten slow requests, each on its own connection.
    let mut in_flight = tokio::task::JoinSet::new();
    for i in 0..10 {
        let url = format!("http://{addr}/slow/{i}?delay_ms=1500");
        in_flight.spawn(async move { get(&client(), &url, &[]).await });
    }
    assert!(
        eventually(Duration::from_secs(10), async || stable.count() == 10).await,
        "all ten requests reached the upstream before the signal"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let mut completed = 0;
    while let Some(reply) = in_flight.join_next().await {
        let reply = reply.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        completed += 1;
    }
    assert_eq!(completed, 10);

    let mut status = None;
    eventually(Duration::from_secs(10), async || {
        status = child.try_wait().unwrap();
        status.is_some()
    })
    .await;
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the proxy did not exit within 10 s of draining")
    });
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no longer accepting connections"
    );
}
