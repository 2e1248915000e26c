//! The access log: one JSON line per request from the real binary, with the fields operators
//! read, and sampling that can switch it off.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_writes_one_json_access_line() {
    let stable = Upstream::start("stable").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("switchyard.yaml");
    std::fs::write(
        &file,
        format!(
            r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
routes:
  - name: shop
    versions: [{{ name: stable, endpoints: ["{}"], weight: 1 }}]
"#,
            stable.addr
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["--log-format", "json", "run", "--config"])
        .arg(&file)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = read_listen_addr(child.stdout.take().unwrap());
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("switchyard::access") && tx.send(line).is_err() {
                break;
            }
        }
    });

    let reply = send(
        "POST",
        &format!("http://{addr}/orders/42?x=1"),
        &[("x-request-id", "req-7")],
        "hello",
    )
    .await;
    assert_eq!(reply.status, 200);

    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("an access line");
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let f = &v["fields"];
    assert!(v["timestamp"].is_string(), "{line}");
    assert_eq!(f["request_id"], "req-7", "{line}");
    assert_eq!(f["route"], "shop");
    assert_eq!(f["version"], "stable");
    assert_eq!(f["reason"], "weight");
    assert_eq!(f["method"], "POST");
    assert_eq!(f["path"], "/orders/42?x=1");
    assert_eq!(f["status"], 200);
    assert_eq!(f["upstream"], stable.addr.to_string());
    assert_eq!(f["bytes_in"], 5);
    assert_eq!(f["bytes_out"], "stable\nhello".len());
    assert!(f["duration_ms"].as_f64().unwrap() > 0.0);
}
