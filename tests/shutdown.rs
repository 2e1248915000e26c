//! SIGTERM with requests in flight: the real binary stops accepting, lets every request finish
//! with 200, and exits 0.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_and_exits_zero() {
    let stable = Upstream::start("stable").await;
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(
        dir.path(),
        &format!(
            r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
drain_timeout: "20s"
routes:
  - name: shop
    versions: [{{ name: stable, endpoints: ["{}"], weight: 1 }}]
"#,
            stable.addr
        ),
    );

    let (mut child, addr) = spawn_proxy(&["run"], &file);

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

    sigterm(&child);

    let mut completed = 0;
    while let Some(reply) = in_flight.join_next().await {
        let reply = reply.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        completed += 1;
    }
    assert_eq!(completed, 10);

    let status = exit_within(&mut child, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no longer accepting connections"
    );
}
