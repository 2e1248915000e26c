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
            let path = if n.is_multiple_of(4) {
                "/catalog/items/1"
            } else {
                "/"
            };
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

/// Runs `script` until it returns `want`, for at most `limit`; returns the last value.
async fn until_page_shows(
    browser: &Browser,
    limit: Duration,
    want: &Value,
    script: &str,
    args: Value,
) -> Value {
    let mut seen = Value::Null;
    eventually(limit, async || {
        seen = browser.execute(script, args.clone()).await;
        &seen == want
    })
    .await;
    seen
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
        eventually(Duration::from_secs(5), async || canary_weight(&admin).await
            == 0)
        .await,
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

#[tokio::test]
async fn the_page_and_its_files_come_from_the_binary_under_a_strict_policy() {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    let proxy = start_proxy(
        &two_versions(&stable, &canary, (90, 10), "")
            .replace("listeners:", "admin: { addr: \"127.0.0.1:0\" }\nlisteners:"),
    )
    .await;
    let admin = format!("http://{}", proxy.admin_addr().unwrap());

    let bare = get(&client(), &format!("{admin}/ui"), &[]).await;
    assert_eq!(bare.status, 308);
    assert_eq!(bare.headers["location"], "/ui/");

    let page = get(&client(), &format!("{admin}/ui/"), &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert!(
        page.body.contains(r#"rel="icon""#),
        "the page declares its icon"
    );
    assert!(
        !page.body.contains("://"),
        "nothing is loaded from another site"
    );

    // Every file the page and its modules name is served, with its type; nothing else is.
    let mut files = vec![
        "errors.js".to_string(),
        "app.js".into(),
        "style.css".into(),
        "favicon.svg".into(),
    ];
    let mut i = 0;
    while i < files.len() {
        let reply = get(&client(), &format!("{admin}/ui/{}", files[i]), &[]).await;
        assert_eq!(reply.status, 200, "{}", files[i]);
        let kind = reply.headers["content-type"].to_str().unwrap();
        let want = match files[i].rsplit('.').next() {
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            _ => "image/svg+xml",
        };
        assert_eq!(kind, want, "{}", files[i]);
        // The SVG namespace is a name, not an address: nothing else may name another site.
        assert!(
            !reply
                .body
                .replace("http://www.w3.org/2000/svg", "")
                .contains("://"),
            "{} loads nothing from elsewhere",
            files[i]
        );
        for line in reply.body.lines().filter(|l| l.starts_with("import ")) {
            let name = line
                .rsplit("\"./")
                .next()
                .unwrap()
                .trim_end_matches("\";")
                .to_string();
            if !files.contains(&name) {
                files.push(name);
            }
        }
        i += 1;
    }
    assert!(files.len() >= 8, "the modules were followed: {files:?}");
    assert_eq!(
        get(&client(), &format!("{admin}/ui/secret.txt"), &[])
            .await
            .status,
        404
    );
    assert_eq!(
        get(&client(), &format!("{admin}/ui/../metrics"), &[])
            .await
            .status,
        404,
        "only the embedded files, by exact name"
    );
    assert_eq!(
        send("POST", &format!("{admin}/ui/"), &[], "").await.status,
        405
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_stats_count_every_request_of_each_version_with_its_latency() {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    canary.faults.error_every.store(2, Ordering::Relaxed);
    let proxy = start_proxy(
        &two_versions(&stable, &canary, (50, 50), "")
            .replace("listeners:", "admin: { addr: \"127.0.0.1:0\" }\nlisteners:"),
    )
    .await;
    let admin = format!("http://{}", proxy.admin_addr().unwrap());
    let url = format!("http://{}/", proxy.addr("public").unwrap());
    let (mut to_stable, mut to_canary) = (0u64, 0u64);
    for _ in 0..60 {
        match get(&client(), &url, &[]).await.served_by() {
            "stable" => to_stable += 1,
            _ => to_canary += 1,
        }
    }
    let admin_stats = format!("{admin}/api/v1/stats");
    let read = async || {
        let reply = get(&client(), &admin_stats, &[]).await;
        assert_eq!(reply.status, 200);
        serde_json::from_str::<Value>(&reply.body).unwrap()
    };
    let counted = |stats: &Value| -> u64 {
        stats["routes"][0]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["requests"].as_u64().unwrap())
            .sum()
    };
    // A request is counted when its response body ends, just after the client has it.
    let mut stats = Value::Null;
    eventually(Duration::from_secs(5), async || {
        stats = read().await;
        counted(&stats) == 60
    })
    .await;
    let route = &stats["routes"][0];
    assert_eq!(
        (route["name"].as_str(), route["strategy"].as_str()),
        (Some("shop"), Some("canary"))
    );
    assert_eq!(route["shadow"], Value::Null);
    let version = |i: usize| &route["versions"][i];
    assert_eq!(version(0)["name"], "stable");
    assert_eq!(version(0)["requests"], to_stable);
    assert_eq!(version(0)["errors"], 0);
    assert_eq!(version(1)["requests"], to_canary);
    assert_eq!(
        version(1)["errors"],
        to_canary / 2,
        "every second canary answer is a 500"
    );
    for i in 0..2 {
        let latency: u64 = version(i)["latency"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap())
            .sum();
        assert_eq!(
            Some(latency),
            version(i)["requests"].as_u64(),
            "each request in one bucket"
        );
        assert_eq!(version(i)["in_flight"], 0);
    }
    let bounds = stats["latency_bucket_upper_ms"].as_array().unwrap();
    assert_eq!(
        (bounds[0].as_f64(), bounds[1].as_f64()),
        (Some(0.5), Some(0.6))
    );
    assert_eq!(
        bounds.last().unwrap(),
        &Value::Null,
        "the last bucket is unbounded"
    );
    assert!(stats["at_unix_ms"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(
        send("POST", &format!("{admin}/api/v1/stats"), &[], "")
            .await
            .status,
        405
    );
    proxy.shutdown().await;
}
