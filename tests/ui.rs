//! The release page (`/ui/`): its files come from the binary under a strict policy, the stats
//! endpoint counts what the data path records, and in a real browser (headless Chromium through
//! chromedriver) the page loads clean, shows each version's share, follows a change made with
//! `switchyard ctl` without a reload, and aborts a canary when told to with the token.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use browser::Browser;
use common::*;
use serde_json::{json, Value};

const TOKEN: &str = "s3cret-for-the-page-test";

/// Two routes: `shop` (stable 90, canary 10, a rollout configured) and `catalog` (a dark launch).
fn config(stable: &Upstream, canary: &Upstream, token_file: &std::path::Path) -> String {
    format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
admin: {{ addr: "127.0.0.1:0", token_file: "{token}" }}
access_log: {{ enabled: false }}
routes:
  - name: catalog
    match: {{ path_prefix: "/catalog/" }}
    versions:
      - {{ name: stable, endpoints: ["{s}"], weight: 100 }}
      - {{ name: dark, endpoints: ["{c}"], weight: 0 }}
    mirror: {{ version: dark }}
  - name: shop
    versions:
      - {{ name: stable, endpoints: ["{s}"], weight: 90 }}
      - {{ name: canary, endpoints: ["{c}"], weight: 10 }}
    rollout:
      baseline: stable
      canary: canary
      steps: [10, 50, 100]
      step_interval: "60s"
"#,
        token = token_file.display(),
        s = stable.addr,
        c = canary.addr,
    )
}

/// Requests to both routes every 20 ms until `stop` (two minutes at most).
fn traffic(proxy: &switchyard::app::Running, stop: Arc<AtomicBool>) {
    let base = format!("http://{}", proxy.addr("public").unwrap());
    tokio::spawn(async move {
        let client = client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
            let path = if n % 4 == 0 { "/catalog/items/1" } else { "/" };
            let request = http::Request::get(format!("{base}{path}"))
                .body(http_body_util::Empty::new())
                .unwrap();
            if let Ok(r) = client.request(request).await {
                let _ = http_body_util::BodyExt::collect(r.into_body()).await;
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

/// Runs `script` every 50 ms until it returns `want`, for at most `limit`; returns the last value.
async fn until_page_shows(
    browser: &Browser,
    limit: Duration,
    want: &Value,
    script: &str,
    args: Value,
) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let seen = browser.execute(script, args.clone()).await;
        if &seen == want || tokio::time::Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const SHARES: &str = "return [...document.querySelectorAll(`[data-route='${arguments[0]}'] tr[data-version] td.name`)]
    .map(td => td.innerText.replace(/\\s+/g, ' ').trim());";
const MESSAGE: &str =
    "return document.querySelector(`[data-route='${arguments[0]}'] .action-message`).textContent;";

async fn canary_weight(admin: &str) -> u64 {
    let reply = get(&client(), &format!("{admin}/api/v1/routes/shop"), &[]).await;
    let v: Value = serde_json::from_str(&reply.body).unwrap();
    v["versions"][1]["weight"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_split_follows_a_ctl_change_live_and_aborts_with_the_token() {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let file = dir.path().join("switchyard.yaml");
    std::fs::write(&file, config(&stable, &canary, &token_file)).unwrap();
    let proxy = switchyard::app::start_from_file(&file).await.unwrap();
    let admin = format!("http://{}", proxy.admin_addr().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    traffic(&proxy, stop.clone());

    let browser = Browser::start(1280, 1000).await;
    browser.goto(&format!("{admin}/ui/")).await;
    let want = json!(["stable 90%", "canary 10%"]);
    let seen = until_page_shows(
        &browser,
        Duration::from_secs(10),
        &want,
        SHARES,
        json!(["shop"]),
    )
    .await;
    assert_eq!(seen, want, "the page shows each version's share");
    // A few polls in, with traffic drawn and the dark launch's report shown: still no error.
    let rate = until_page_shows(
        &browser,
        Duration::from_secs(10),
        &json!(true),
        "return [...document.querySelectorAll(`[data-route='shop'] .chart path`)].length > 0
            && document.querySelector(`[data-route='catalog'] .panel.shadow .figure-value`) !== null;",
        json!([]),
    )
    .await;
    assert_eq!(rate, json!(true), "charts and the shadow report are drawn");
    assert_eq!(
        browser.severe_log().await,
        Vec::<String>::new(),
        "console errors at load"
    );
    assert_eq!(
        browser.execute("return window.__errors;", json!([])).await,
        json!([])
    );

    // A change made elsewhere shows within 2 s, on the same page (no reload).
    browser
        .execute("window.__samePage = true;", json!([]))
        .await;
    let ctl = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["ctl", "--admin", &admin, "--token", TOKEN])
        .args(["weights", "shop", "stable=70", "canary=30"])
        .output()
        .unwrap();
    assert!(
        ctl.status.success(),
        "ctl: {}",
        String::from_utf8_lossy(&ctl.stderr)
    );
    let changed = tokio::time::Instant::now();
    let want = json!(["stable 70%", "canary 30%"]);
    let seen = until_page_shows(
        &browser,
        Duration::from_secs(2),
        &want,
        SHARES,
        json!(["shop"]),
    )
    .await;
    assert_eq!(
        seen,
        want,
        "the page follows ctl within 2 s ({:?})",
        changed.elapsed()
    );
    assert_eq!(
        browser
            .execute("return window.__samePage;", json!([]))
            .await,
        json!(true)
    );

    // Without the token the abort is refused, and the page says why.
    browser
        .click("[data-route='shop'] button[data-action='abort']")
        .await;
    browser.click("#confirm-ok").await;
    let message = until_page_shows(
        &browser,
        Duration::from_secs(5),
        &json!("abort: this change needs the admin token: type it in at the top of the page"),
        MESSAGE,
        json!(["shop"]),
    )
    .await;
    assert!(
        message.as_str().unwrap().contains("needs the admin token"),
        "{message}"
    );
    assert_eq!(canary_weight(&admin).await, 30);

    // With the token typed in, the abort takes the canary to 0.
    browser.type_into("#token", TOKEN).await;
    browser.click("#token-save").await;
    browser
        .click("[data-route='shop'] button[data-action='abort']")
        .await;
    browser.click("#confirm-ok").await;
    assert!(
        until_zero(Duration::from_secs(5), || canary_weight(&admin)).await == 0,
        "the canary is at 0 after the abort"
    );
    let want = json!(["stable 100%", "canary 0%"]);
    let seen = until_page_shows(
        &browser,
        Duration::from_secs(5),
        &want,
        SHARES,
        json!(["shop"]),
    )
    .await;
    assert_eq!(seen, want);
    let route: Value = serde_json::from_str(
        &get(&client(), &format!("{admin}/api/v1/routes/shop"), &[])
            .await
            .body,
    )
    .unwrap();
    assert_eq!(route["aborted"]["reason"], "aborted from the release page");

    // The token lives in this tab's session storage only, never in the page.
    let kept = browser
        .execute(
            "return [sessionStorage.getItem('switchyard.admin-token'), localStorage.length,
                     document.documentElement.outerHTML.includes(arguments[0])];",
            json!([TOKEN]),
        )
        .await;
    assert_eq!(kept, json!([TOKEN, 0, false]));
    assert_eq!(
        browser.execute("return window.__errors;", json!([])).await,
        json!([])
    );
    browser.quit().await;
    stop.store(true, Ordering::Relaxed);
    proxy.shutdown().await;
}

/// Calls `read` every 50 ms until it returns 0 or `limit` passes; returns the last value.
async fn until_zero<F, Fut>(limit: Duration, mut read: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let v = read().await;
        if v == 0 || tokio::time::Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
