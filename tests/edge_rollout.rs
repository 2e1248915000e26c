//! Malformed requests pinned to a canary during a rollout (issue 14's reproduction: 36 POSTs with
//! broken chunked bodies, on main each a 502 counted against the canary, which was aborted): they
//! are answered 400, the rollout keeps progressing, the canary's endpoint is not ejected, and
//! `/metrics` and the access log count them as the client's errors.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

/// Collects the JSON log lines written by the process-wide subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn access_lines(&self) -> Vec<Value> {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines()
            .filter(|l| l.contains("switchyard::access"))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// The six malformed chunked bodies of the issue's reproduction.
const MALFORMED: [&[u8]; 6] = [
    b"zz\r\nabc\r\n0\r\n\r\n",
    b"0x3\r\nabc\r\n0\r\n\r\n",
    b"+3\r\nabc\r\n0\r\n\r\n",
    b"3\nabc\r\n0\r\n\r\n",
    b"3\r\nabcX0\r\n\r\n",
    b"000000000000000003\r\nabc\r\n0\r\n\r\n",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_pinned_to_a_canary_neither_abort_its_rollout_nor_eject_it() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .try_init()
        .unwrap();

    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    let proxy = start_proxy(&format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
admin: {{ addr: "127.0.0.1:0" }}
routes:
  - name: shop
    versions:
      - {{ name: stable, endpoints: ["{}"], weight: 100 }}
      - {{ name: canary, endpoints: ["{}"], weight: 0 }}
    rules:
      - {{ match: {{ header: {{ name: x-canary, value: always }} }}, version: canary }}
    rollout:
      baseline: stable
      canary: canary
      steps: [10, 50, 100]
      step_interval: "60s"
      analysis: {{ interval: "100ms", window: "3s", min_requests: 20 }}
"#,
        stable.addr, canary.addr
    ))
    .await;
    let admin = format!("http://{}", proxy.admin_addr().unwrap());
    let addr = proxy.addr("public").unwrap();
    let url = format!("http://{addr}/");
    let route = || async {
        let reply = get(&client(), &format!("{admin}/api/v1/routes/shop"), &[]).await;
        serde_json::from_str::<Value>(&reply.body).unwrap()
    };

    let start = send(
        "POST",
        &format!("{admin}/api/v1/routes/shop/rollout/start"),
        &[],
        "",
    )
    .await;
    assert_eq!(start.status, 200, "{}", start.body);
    // Steady traffic, so both sides have requests in every analysis window.
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..2 {
        let (url, stop) = (url.clone(), stop.clone());
        tokio::spawn(async move {
            let client = client();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                let _ = get(&client, &url, &[]).await;
                let _ = get(&client, &url, &[("x-canary", "always")]).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }

    // 36 malformed POSTs pinned to the canary, each answered 400.
    let burst_started = switchyard::state::now_unix_ms();
    for round in 0..6 {
        for body in MALFORMED {
            let head = b"POST /pay HTTP/1.1\r\nHost: shop\r\nX-Canary: always\r\n\
Transfer-Encoding: chunked\r\n\r\n";
            let answer =
                raw_exchange(addr, &[&head[..], body].concat(), Duration::from_secs(5)).await;
            assert_eq!(status_of(&answer), 400, "round {round}: {answer}");
        }
    }
    let burst_ended = switchyard::state::now_unix_ms();

    // Wait for an analysis window that holds the whole burst and enough canary requests, and
    // make sure no look before it aborted.
    let mut judged = Value::Null;
    for _ in 0..(LIMIT.as_millis() / 50) {
        let v = route().await;
        assert_ne!(v["rollout"]["state"], "aborted", "{v:#}");
        let look = &v["rollout"]["analysis"];
        let after_burst = look["at_unix_ms"].as_u64().unwrap_or(0) > burst_ended + 500;
        let canary_requests = look["evidence"]["canary"]["requests"].as_u64().unwrap_or(0);
        if after_burst && canary_requests >= 20 {
            judged = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    assert_eq!(judged["rollout"]["state"], "progressing", "{judged:#}");
    assert_eq!(
        judged["rollout"]["analysis"]["evidence"]["canary"]["errors"], 0,
        "{judged:#}"
    );
    assert!(
        burst_ended - burst_started < 3_000,
        "the burst fits in one analysis window"
    );
    let canary_state = &proxy.snapshot().routes[0].versions[1];
    assert!(
        canary_state.health[0].usable(),
        "the canary's endpoint is not ejected"
    );

    let metrics = get(&client(), &format!("{admin}/metrics"), &[]).await.body;
    let series = |s: &str| metric(&metrics, s).unwrap_or(0.0);
    assert_eq!(
        series(
            "switchyard_downstream_errors_total{kind=\"malformed\",route=\"shop\",version=\"canary\"}"
        ),
        36.0,
        "{metrics}"
    );
    for kind in ["connect", "timeout", "reset", "protocol"] {
        assert_eq!(
            series(&format!(
                "switchyard_upstream_errors_total{{kind=\"{kind}\",route=\"shop\",version=\"canary\"}}"
            )),
            0.0,
            "{kind}"
        );
    }
    assert_eq!(
        series("switchyard_requests_total{route=\"shop\",status_class=\"5xx\",version=\"canary\"}"),
        0.0
    );
    assert!(
        !metrics.contains("switchyard_rollout_aborts_total{"),
        "{metrics}"
    );

    let refused: Vec<Value> = captured
        .access_lines()
        .into_iter()
        .filter(|l| l["fields"]["path"] == "/pay")
        .collect();
    assert_eq!(refused.len(), 36);
    for line in &refused {
        let f = &line["fields"];
        assert_eq!(
            (&f["version"], &f["status"], &f["blame"], &f["fault"]),
            (
                &Value::from("canary"),
                &Value::from(400),
                &Value::from("downstream"),
                &Value::from("malformed")
            ),
            "{line}"
        );
    }
    let served = captured
        .access_lines()
        .into_iter()
        .find(|l| l["fields"]["status"] == 200)
        .unwrap();
    assert_eq!(served["fields"]["blame"], "-", "{served}");
}
