//! Live control: weight changes through the admin API and file rewrites under continuous load
//! drop no request; decisions survive a restart; the admin API refuses the unauthorised; a
//! Kubernetes ConfigMap symlink swap is picked up.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const TOKEN: &str = "test-token-0123456789";
const LIMIT: Duration = Duration::from_secs(10);

struct Setup {
    dir: tempfile::TempDir,
    stable: Upstream,
    canary: Upstream,
}

impl Setup {
    async fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
        Setup {
            dir,
            stable: Upstream::start("stable").await,
            canary: Upstream::start("canary").await,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self, stable: u32, canary: u32) -> String {
        format!(
            r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
admin: {{ addr: "127.0.0.1:0", token_file: "{token}" }}
state_file: "{state}"
access_log: {{ enabled: false }}
routes:
  - name: shop
    versions:
      - {{ name: stable, endpoints: ["{s}"], weight: {stable} }}
      - {{ name: canary, endpoints: ["{c}"], weight: {canary} }}
"#,
            token = self.path("token").display(),
            state = self.path("state.json").display(),
            s = self.stable.addr,
            c = self.canary.addr,
        )
    }
}

/// Writes a file the way editors do: a temporary file renamed over the old one.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn generation(admin: &str) -> u64 {
    let reply = get(&client(), &format!("{admin}/api/v1/config"), &[]).await;
    let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    v["generation"].as_u64().unwrap()
}

async fn wait_for_generation_above(admin: &str, previous: u64) -> u64 {
    let mut g = previous;
    let moved = eventually(LIMIT, async || {
        g = generation(admin).await;
        g > previous
    })
    .await;
    assert!(moved, "generation stayed at {previous} for {LIMIT:?}");
    g
}

/// Sends `n` requests and returns how many the canary served.
async fn canary_share(url: &str, n: usize) -> usize {
    let client = client();
    let mut on_canary = 0;
    for _ in 0..n {
        let reply = get(&client, url, &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        on_canary += usize::from(reply.served_by() == "canary");
    }
    on_canary
}

/// A proxy started from `file`, with its public URL and its admin API's base URL.
async fn start(file: &Path) -> (switchyard::app::Running, String, String) {
    let proxy = switchyard::app::start_from_file(file).await.unwrap();
    let url = format!("http://{}/", proxy.addr("public").unwrap());
    let admin = format!("http://{}", proxy.admin_addr().unwrap());
    (proxy, url, admin)
}

fn bearer() -> (&'static str, String) {
    ("authorization", format!("Bearer {TOKEN}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_changes_and_file_rewrites_under_load_drop_no_request() {
    let s = Setup::new().await;
    let file = s.path("switchyard.yaml");
    std::fs::write(&file, s.config(100, 0)).unwrap();
    let (proxy, url, admin) = start(&file).await;

    // Continuous load: 6 clients, until told to stop (and never longer than two minutes).
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (stop, sent, failed, url) = (stop.clone(), sent.clone(), failed.clone(), url.clone());
        load.spawn(async move {
            let client = client();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                let request = http::Request::get(&url)
                    .body(http_body_util::Empty::new())
                    .unwrap();
                match client.request(request).await {
                    Ok(r) if r.status() == 200 => {
                        let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    // 20 rewrites of the file, the 10th invalid; the split follows each valid one.
    let mut g = generation(&admin).await;
    let mut valid = 0;
    for i in 0..20 {
        if i == 9 {
            write_atomically(&file, &s.config(100, 0).replace("weight: 0", "weight: -1"));
            let mut error = None;
            eventually(LIMIT, async || {
                let reply = get(&client(), &format!("{admin}/api/v1/config"), &[]).await;
                let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
                let Some(e) = v["last_error"].as_str() else {
                    return false;
                };
                error = Some(e.to_string());
                assert_eq!(
                    v["generation"].as_u64().unwrap(),
                    g,
                    "the running config stays"
                );
                true
            })
            .await;
            let error = error.expect("the invalid file was reported");
            assert!(
                error.contains("switchyard.yaml:") && error.contains("weight -1 is negative"),
                "{error}"
            );
            let metrics = get(&client(), &format!("{admin}/metrics"), &[]).await.body;
            assert_eq!(
                metric(
                    &metrics,
                    "switchyard_config_reloads_total{result=\"error\"}"
                ),
                Some(1.0)
            );
            continue;
        }
        let canary = if valid % 2 == 0 { 100 } else { 0 };
        valid += 1;
        write_atomically(&file, &s.config(100 - canary, canary));
        g = wait_for_generation_above(&admin, g).await;
        assert_eq!(
            canary_share(&url, 10).await,
            canary as usize / 10,
            "after rewrite {i}"
        );
    }

    let config = get(&client(), &format!("{admin}/api/v1/config"), &[])
        .await
        .body;
    assert!(
        config.contains("\"last_error\": null"),
        "a good reload clears the error: {config}"
    );

    // 100 weight changes through the API; the split follows each.
    for i in 0..100 {
        let canary = if i % 2 == 0 { 100 } else { 0 };
        let body = format!(r#"{{"stable": {}, "canary": {canary}}}"#, 100 - canary);
        let reply = send(
            "PUT",
            &format!("{admin}/api/v1/routes/shop/weights"),
            &[(bearer().0, &bearer().1)],
            &body,
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(
            canary_share(&url, 4).await,
            canary as usize / 25,
            "after API change {i}"
        );
    }

    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(sent > 500, "the load ran throughout: {sent} requests");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed during changes"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_restart_keeps_api_weights_and_an_abort() {
    let s = Setup::new().await;
    let file = s.path("switchyard.yaml");
    std::fs::write(&file, s.config(95, 5)).unwrap();
    let auth = bearer();

    let (proxy, _, admin) = start(&file).await;
    let reply = send(
        "PUT",
        &format!("{admin}/api/v1/routes/shop/weights"),
        &[(auth.0, &auth.1)],
        r#"{"stable": 70, "canary": 30}"#,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    proxy.shutdown().await;

    let (proxy, _, admin) = start(&file).await;
    let view = get(&client(), &format!("{admin}/api/v1/routes/shop"), &[]).await;
    let v: serde_json::Value = serde_json::from_str(&view.body).unwrap();
    assert_eq!(v["versions"][1]["weight"], 30, "{}", view.body);
    assert_eq!(v["versions"][1]["source"], "api");
    assert_eq!(v["versions"][1]["file_weight"], 5);

    let reply = send(
        "POST",
        &format!("{admin}/api/v1/routes/shop/abort"),
        &[(auth.0, &auth.1)],
        r#"{"reason": "error rate"}"#,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    proxy.shutdown().await;

    let (proxy, url, admin) = start(&file).await;
    let view = get(&client(), &format!("{admin}/api/v1/routes/shop"), &[]).await;
    let v: serde_json::Value = serde_json::from_str(&view.body).unwrap();
    assert_eq!(v["state"], "aborted", "{}", view.body);
    assert_eq!(v["aborted"]["reason"], "error rate");
    assert_eq!(
        canary_share(&url, 50).await,
        0,
        "an aborted canary gets no traffic after a restart"
    );

    // Resume brings back the weights from before the abort.
    let reply = send(
        "POST",
        &format!("{admin}/api/v1/routes/shop/resume"),
        &[(auth.0, &auth.1)],
        "",
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(v["versions"][1]["weight"], 30, "{}", reply.body);
    // Reset goes back to the file.
    let reply = send(
        "POST",
        &format!("{admin}/api/v1/routes/shop/reset"),
        &[(auth.0, &auth.1)],
        "",
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(v["versions"][1]["weight"], 5, "{}", reply.body);
    assert_eq!(v["versions"][1]["source"], "file");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_corrupt_state_file_is_set_aside_and_canaries_are_held() {
    let s = Setup::new().await;
    let file = s.path("switchyard.yaml");
    std::fs::write(&file, s.config(50, 50)).unwrap();
    std::fs::write(s.path("state.json"), "{ truncated").unwrap();

    let (proxy, url, admin) = start(&file).await;
    assert_eq!(
        canary_share(&url, 50).await,
        0,
        "the canary is held until resumed"
    );
    let view = get(&client(), &format!("{admin}/api/v1/routes/shop"), &[]).await;
    assert!(view.body.contains("state file unreadable"), "{}", view.body);
    let set_aside = std::fs::read_dir(s.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.json.corrupt-")
        });
    assert!(set_aside, "the corrupt file was renamed, not deleted");
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_admin_api_refuses_unauthorised_and_malformed_changes() {
    let s = Setup::new().await;
    let file = s.path("switchyard.yaml");
    std::fs::write(&file, s.config(95, 5)).unwrap();
    let (proxy, _, admin) = start(&file).await;
    let weights = format!("{admin}/api/v1/routes/shop/weights");
    let body = r#"{"stable": 0, "canary": 100}"#;

    let reply = send("PUT", &weights, &[], body).await;
    assert_eq!(reply.status, 401);
    assert!(reply.body.contains("bearer token"), "{}", reply.body);
    let reply = send(
        "PUT",
        &weights,
        &[("authorization", "Bearer wrong-token-0123456789")],
        body,
    )
    .await;
    assert_eq!(reply.status, 401);
    let reply = send(
        "POST",
        &format!("{admin}/api/v1/routes/shop/abort"),
        &[],
        "",
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        proxy.snapshot().routes[0].versions[1].weight,
        5,
        "nothing changed"
    );

    let auth = bearer();
    let h = [(auth.0, auth.1.as_str())];
    for (method, url, body, status, says) in [
        ("PUT", weights.clone(), "not json", 400, "invalid JSON"),
        (
            "PUT",
            weights.clone(),
            r#"{"stable": 1}"#,
            422,
            "missing: canary",
        ),
        (
            "PUT",
            weights.clone(),
            r#"{"stable": 0, "canary": 0}"#,
            422,
            "all weights are 0",
        ),
        (
            "PUT",
            weights.clone(),
            r#"{"stable": -1, "canary": 0}"#,
            400,
            "invalid JSON",
        ),
        (
            "PUT",
            format!("{admin}/api/v1/routes/nope/weights"),
            body,
            404,
            "no route named",
        ),
        (
            "POST",
            format!("{admin}/api/v1/routes/shop/resume"),
            "",
            409,
            "not aborted",
        ),
        ("DELETE", weights.clone(), "", 405, "use PUT"),
        (
            "GET",
            format!("{admin}/api/v1/nothing"),
            "",
            404,
            "no admin path",
        ),
    ] {
        let reply = send(method, &url, &h, body).await;
        assert_eq!(
            reply.status, status,
            "{method} {url} {body}: {}",
            reply.body
        );
        let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{method} {url}: {message}");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_non_loopback_admin_without_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("exposed.yaml");
    std::fs::write(
        &file,
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
admin: { addr: "0.0.0.0:0" }
routes:
  - name: shop
    versions: [{ name: stable, endpoints: ["127.0.0.1:9"], weight: 1 }]
"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("admin.addr: 0.0.0.0:0 is not loopback and no token is configured"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_configmap_symlink_swap_is_picked_up() {
    // The Kubernetes layout: config.yaml -> ..data/config.yaml, ..data -> ..<timestamp>/,
    // and an update swaps ..data atomically.
    let s = Setup::new().await;
    let root = s.dir.path();
    std::fs::create_dir(root.join("..2026_11_25_a")).unwrap();
    std::fs::write(root.join("..2026_11_25_a/config.yaml"), s.config(100, 0)).unwrap();
    std::os::unix::fs::symlink("..2026_11_25_a", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/config.yaml", root.join("config.yaml")).unwrap();

    let (proxy, url, admin) = start(&root.join("config.yaml")).await;
    assert_eq!(canary_share(&url, 10).await, 0);
    let g = generation(&admin).await;

    std::fs::create_dir(root.join("..2026_11_25_b")).unwrap();
    std::fs::write(root.join("..2026_11_25_b/config.yaml"), s.config(0, 100)).unwrap();
    std::os::unix::fs::symlink("..2026_11_25_b", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();

    wait_for_generation_above(&admin, g).await;
    assert_eq!(
        canary_share(&url, 10).await,
        10,
        "the swapped config is in service"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_file_written_beside_the_config_does_not_reload_it() {
    // Only events naming the configuration (or Kubernetes' ..data entries) reload it; a log or
    // state file written in the same directory costs the proxy nothing. To see that an event
    // naming another file reloads nothing, that file is a hard link to the configuration:
    // written through it, the content changes while the event names the link.
    let s = Setup::new().await;
    let file = s.path("switchyard.yaml");
    std::fs::write(&file, s.config(100, 0)).unwrap();
    let (proxy, url, admin) = start(&file).await;
    let beside = s.path("access.log");
    std::fs::hard_link(&file, &beside).unwrap();
    let g = generation(&admin).await;

    std::fs::write(&beside, s.config(0, 100)).unwrap();
    // Four times the watcher's debounce: a reload it started would be done.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        generation(&admin).await,
        g,
        "an event for another file reloaded"
    );
    assert_eq!(canary_share(&url, 10).await, 0);

    // The same content written through the configuration's own name is picked up.
    std::fs::write(&file, s.config(0, 100)).unwrap();
    wait_for_generation_above(&admin, g).await;
    assert_eq!(canary_share(&url, 10).await, 10);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_cannot_be_saved_is_refused_and_changes_nothing() {
    let s = Setup::new().await;
    let state_dir = s.path("state");
    std::fs::create_dir(&state_dir).unwrap();
    let text = s.config(90, 10).replace(
        &s.path("state.json").display().to_string(),
        &state_dir.join("state.json").display().to_string(),
    );
    let file = s.path("switchyard.yaml");
    std::fs::write(&file, text).unwrap();
    let (proxy, _, admin) = start(&file).await;
    // The disk goes away under the running proxy.
    std::fs::remove_dir_all(&state_dir).unwrap();

    let (name, value) = bearer();
    let reply = send(
        "POST",
        &format!("{admin}/api/v1/routes/shop/abort"),
        &[(name, &value)],
        "",
    )
    .await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(
        reply.body.contains("cannot save the state file") && reply.body.contains("state.json"),
        "names the file and the cause: {}",
        reply.body
    );
    let route = get(&client(), &format!("{admin}/api/v1/routes/shop"), &[]).await;
    let v: serde_json::Value = serde_json::from_str(&route.body).unwrap();
    assert_eq!(v["state"], "steady", "nothing changed: {v:#}");
    assert_eq!(v["versions"][1]["weight"], 10);

    let args = ["ctl", "abort", "shop", "--admin", &admin, "--token", TOKEN].map(String::from);
    let ctl = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(args)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(ctl.status.code(), Some(1), "{ctl:?}");
    assert!(String::from_utf8_lossy(&ctl.stderr).contains("cannot save the state file"));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_refuses_what_a_start_would_refuse_a_broken_ca_file() {
    let s = Setup::new().await;
    let file = s.path("switchyard.yaml");
    std::fs::write(&file, s.config(90, 10)).unwrap();
    let (proxy, _, admin) = start(&file).await;
    let before = generation(&admin).await;

    std::fs::write(s.path("ca.pem"), "not a certificate\n").unwrap();
    let with_tls = s.config(90, 10).replace(
        &format!("endpoints: [\"{}\"]", s.canary.addr),
        &format!(
            "endpoints: [\"{}\"], tls: {{ ca: \"{}\" }}",
            s.canary.addr,
            s.path("ca.pem").display()
        ),
    );
    assert_ne!(with_tls, s.config(90, 10), "the canary got a tls section");
    std::fs::write(&file, &with_tls).unwrap();
    let (name, value) = bearer();
    let reply = send(
        "POST",
        &format!("{admin}/api/v1/reload"),
        &[(name, &value)],
        "",
    )
    .await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert!(
        reply.body.contains("ca.pem"),
        "names the CA file: {}",
        reply.body
    );
    assert_eq!(
        generation(&admin).await,
        before,
        "the running configuration stays"
    );

    let check = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(2), "check refuses it too");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_web_page_of_another_origin_cannot_change_a_loopback_admin_without_a_token() {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    let proxy = start_proxy(
        &two_versions(&stable, &canary, (90, 10), "")
            .replace("listeners:", "admin: { addr: \"127.0.0.1:0\" }\nlisteners:"),
    )
    .await;
    let admin_addr = proxy.admin_addr().unwrap();
    let abort = format!("http://{admin_addr}/api/v1/routes/shop/abort");
    // What a browser sends for a form or fetch() POST from another site.
    let reply = send("POST", &abort, &[("origin", "http://evil.example")], "").await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(
        proxy.snapshot().routes[0].versions[1].weight,
        10,
        "nothing changed"
    );
    // The release page, served by the admin listener itself, is the same origin.
    let own = format!("http://{admin_addr}");
    let reply = send("POST", &abort, &[("origin", own.as_str())], "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(proxy.snapshot().routes[0].versions[1].weight, 0);
    proxy.shutdown().await;
}
