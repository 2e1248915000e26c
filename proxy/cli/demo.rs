//! `switchyard demo`: two built-in upstreams (stable and canary) on loopback, the proxy in front
//! of them with an embedded configuration, a little traffic with a printed account of what
//! happened, then the proxy keeps serving until Ctrl-C.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::app;
use crate::data::headers::X_SWITCHYARD_VERSION;
use crate::route::{bucket_of, BUCKETS};

/// Why the demo stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A socket could not be bound.
    #[error("cannot bind a loopback port: {0}")]
    Bind(#[from] std::io::Error),
    /// The embedded configuration was refused (a bug).
    #[error("embedded configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The proxy did not start.
    #[error(transparent)]
    Start(#[from] app::StartError),
    /// A demo request failed.
    #[error("demo request failed: {0}")]
    Request(String),
}

/// Options of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the proxy listens; when taken, any free loopback port is used instead.
    pub listen: SocketAddr,
    /// Where the admin API listens; when taken, any free loopback port is used instead.
    pub admin: SocketAddr,
    /// Print the account and exit instead of serving until Ctrl-C.
    pub once: bool,
}

const SALT: &str = "demo-2026";
const CANARY_WEIGHT: u32 = 10;

fn demo_config(
    listen: SocketAddr,
    admin: SocketAddr,
    stable: SocketAddr,
    canary: SocketAddr,
    catalog: (SocketAddr, SocketAddr),
) -> String {
    format!(
        r#"
listeners:
  - name: public
    addr: "{listen}"
admin:
  addr: "{admin}"
drain_timeout: "5s"
access_log: {{ enabled: false }}
routes:
  - name: catalog
    match: {{ path_prefix: "/catalog/" }}
    versions:
      - name: stable
        endpoints: ["{catalog_live}"]
        weight: 100
      - name: dark
        endpoints: ["{catalog_dark}"]
        weight: 0
    mirror: {{ version: dark, ignore_json_paths: ["/served_at"] }}
  - name: shop
    expose_version_header: true
    versions:
      - name: stable
        endpoints: ["{stable}"]
        weight: {stable_weight}
      - name: canary
        endpoints: ["{canary}"]
        weight: {CANARY_WEIGHT}
    rules:
      - match: {{ header: {{ name: "x-canary", value: "always" }} }}
        version: canary
    cohort:
      key: {{ header: "x-user-id" }}
      salt: "{SALT}"
    rollout:
      baseline: stable
      canary: canary
      steps: [10, 50, 100]
      step_interval: "2s"
      analysis: {{ interval: "500ms", window: "4s", min_requests: 20 }}
"#,
        stable_weight = 100 - CANARY_WEIGHT,
        catalog_live = catalog.0,
        catalog_dark = catalog.1,
    )
}

/// A JSON catalogue service. The dark build charges one more for every fourth item, adds a field,
/// and is a little slower: the differences the dark launch should find.
pub async fn spawn_catalog(dark: bool) -> Result<SocketAddr, std::io::Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let service = service_fn(move |req: Request<hyper::body::Incoming>| async move {
                let item: u64 = req
                    .uri()
                    .path()
                    .rsplit('/')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let mut price = 10 * item;
                if dark {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    if item.is_multiple_of(4) {
                        price += 1;
                    }
                }
                let served_at = crate::control::now_unix_ms();
                let beta = if dark { r#", "beta": true"# } else { "" };
                let body = format!(
                    r#"{{"item": {item}, "price": {price}, "currency": "EUR", "served_at": {served_at}{beta}}}"#
                );
                let mut response = Response::new(Full::new(Bytes::from(body)));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                Ok::<_, Infallible>(response)
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    Ok(addr)
}

/// Starts a built-in upstream that answers every request with `hello from NAME`.
pub async fn spawn_upstream(name: &'static str) -> Result<SocketAddr, std::io::Error> {
    spawn_faulty_upstream(name, Arc::default()).await
}

/// Like [`spawn_upstream`], answering 500 to one request in `fail_every` (0: never).
pub async fn spawn_faulty_upstream(
    name: &'static str,
    fail_every: Arc<AtomicU64>,
) -> Result<SocketAddr, std::io::Error> {
    let served = Arc::new(AtomicU64::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let mut http = hyper::server::conn::http1::Builder::new();
        http.keep_alive(true);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            let (fail_every, served) = (fail_every.clone(), served.clone());
            let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                let n = served.fetch_add(1, Ordering::Relaxed) + 1;
                let every = fail_every.load(Ordering::Relaxed);
                async move {
                    let mut response =
                        Response::new(Full::new(Bytes::from(format!("hello from {name}\n"))));
                    if every > 0 && n.is_multiple_of(every) {
                        *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    response
                        .headers_mut()
                        .insert("x-served-by", http::HeaderValue::from_static(name));
                    Ok::<_, Infallible>(response)
                }
            });
            let connection = http.serve_connection(TokioIo::new(stream), service);
            tokio::spawn(connection);
        }
    });
    Ok(addr)
}

/// What the demo started: the upstreams and the proxy in front of them.
struct Demo {
    running: app::Running,
    stable: SocketAddr,
    canary: SocketAddr,
    canary_faults: Arc<AtomicU64>,
    base: String,
    admin_url: String,
}

/// Starts the upstreams and the proxy; the wanted ports when free, any free port otherwise.
async fn start(options: &DemoOptions) -> Result<Demo, DemoError> {
    let stable = spawn_upstream("stable").await?;
    let canary_faults = Arc::new(AtomicU64::new(0));
    let canary = spawn_faulty_upstream("canary", canary_faults.clone()).await?;
    let free_or_any = |wanted: SocketAddr| match std::net::TcpListener::bind(wanted) {
        Ok(probe) => {
            drop(probe);
            wanted
        }
        Err(_) => SocketAddr::new(wanted.ip(), 0),
    };
    let listen = free_or_any(options.listen);
    let admin = free_or_any(options.admin);
    let catalog = (spawn_catalog(false).await?, spawn_catalog(true).await?);
    let config = crate::config::parse(
        Path::new("<demo>"),
        &demo_config(listen, admin, stable, canary, catalog),
    )?;
    let running = app::start(config).await?;
    let proxy = running
        .addr("public")
        .ok_or_else(|| DemoError::Request("no listener".into()))?;
    let admin = running
        .admin_addr()
        .ok_or_else(|| DemoError::Request("no admin listener".into()))?;
    Ok(Demo {
        running,
        stable,
        canary,
        canary_faults,
        base: format!("http://{proxy}"),
        admin_url: format!("http://{admin}"),
    })
}

/// Sends the demo's requests and reads which version answered.
struct Probe {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    base: String,
}

impl Probe {
    /// One GET with `headers`; returns the `x-switchyard-version` that answered.
    async fn get(&self, headers: &[(&str, &str)]) -> Result<String, DemoError> {
        let mut request = Request::get(format!("{}/", self.base));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| DemoError::Request(e.to_string()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| DemoError::Request(e.to_string()))?;
        let version = response
            .headers()
            .get(&X_SWITCHYARD_VERSION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_string();
        // Drain the body so the connection returns to the pool.
        let _ = response.into_body().collect().await;
        Ok(version)
    }

    /// The same request `n` times; the versions that answered.
    async fn repeat(&self, n: usize, headers: &[(&str, &str)]) -> Result<Vec<String>, DemoError> {
        let mut seen = Vec::with_capacity(n);
        for _ in 0..n {
            seen.push(self.get(headers).await?);
        }
        Ok(seen)
    }

    /// 1,000 requests; prints the split.
    async fn split(&self) -> Result<(), DemoError> {
        let total = 1_000u32;
        let mut on_canary = 0u32;
        for _ in 0..total {
            if self.get(&[]).await? == "canary" {
                on_canary += 1;
            }
        }
        println!(
            "     stable {:>4} ({:.1}%)   canary {:>4} ({:.1}%)",
            total - on_canary,
            f64::from(total - on_canary) / 10.0,
            on_canary,
            f64::from(on_canary) / 10.0
        );
        Ok(())
    }
}

/// Runs the demo.
pub async fn run(options: DemoOptions) -> Result<(), DemoError> {
    let demo = start(&options).await?;
    let (base, admin_url) = (demo.base.clone(), demo.admin_url.clone());
    println!("Switchyard demo");
    println!("  stable upstream   {}", demo.stable);
    println!("  canary upstream   {}", demo.canary);
    println!(
        "  proxy             {base}   route \"shop\": stable {}, canary {CANARY_WEIGHT}",
        100 - CANARY_WEIGHT
    );
    println!("  admin API         {admin_url}");
    println!("  release page      {admin_url}/ui/");
    println!();

    let probe = Probe {
        client: Client::builder(TokioExecutor::new()).build_http(),
        base: base.clone(),
    };
    splits(&probe, &admin_url).await?;
    rollouts(&admin_url, &base, &demo.canary_faults).await?;
    dark_launch(&admin_url, &base).await?;

    if options.once {
        demo.running.shutdown().await;
        return Ok(());
    }
    // Light traffic while serving, so the release page's figures move (stops after 30 minutes).
    tokio::spawn(background_traffic(
        base.clone(),
        Duration::from_secs(30 * 60),
    ));
    let signal = app::shutdown_signal();
    println!("Try it:");
    println!("  open {admin_url}/ui/ in a browser: weights, live figures, the aborted rollout, the dark launch's report");
    println!("  curl -si {base}/");
    println!("  curl -si -H 'x-canary: always' {base}/");
    println!("  curl -si -H 'x-user-id: alice' {base}/");
    println!("  curl -s {admin_url}/metrics | grep switchyard_requests_total");
    println!("  cargo run --release -- ctl --admin {admin_url} status");
    println!("  cargo run --release -- ctl --admin {admin_url} abort shop --reason 'demo'");
    println!("  cargo run --release -- ctl --admin {admin_url} reset shop   # lift the abort, back to the file");
    println!("  cargo run --release -- ctl --admin {admin_url} rollout start shop");
    println!("Serving until Ctrl-C.");
    let signal = signal.await;
    println!("{signal}: draining and exiting.");
    demo.running.shutdown().await;
    Ok(())
}

/// Parts 1 to 4 of the tour: a weighted split, a rule, a cohort, a weight change through `ctl`
/// that leaves the cohort where it was.
async fn splits(probe: &Probe, admin_url: &str) -> Result<(), DemoError> {
    println!("1. 1000 requests, split by weight:");
    probe.split().await?;
    let pinned = probe.repeat(5, &[("x-canary", "always")]).await?;
    println!("2. 5 requests with header x-canary: always (a rule pins them):");
    println!("     {}", pinned.join(" "));
    let alice = probe.repeat(5, &[("x-user-id", "alice")]).await?;
    let bucket = bucket_of(SALT, b"alice");
    let canary_from = BUCKETS - CANARY_WEIGHT * BUCKETS / 100;
    println!("3. 5 requests from user alice (cohort on x-user-id):");
    println!(
        "     {}   (bucket {bucket} of {BUCKETS}; the canary owns {canary_from}..{})",
        alice.join(" "),
        BUCKETS - 1
    );

    println!("4. A weight change through the admin API, as a release pipeline would make it:");
    println!("     $ switchyard ctl --admin {admin_url} weights shop stable=50 canary=50");
    let target = crate::cli::ctl::Target {
        admin: admin_url.to_string(),
        token: None,
        json: false,
    };
    let command = crate::cli::ctl::CtlCommand::Weights(
        "shop".into(),
        vec![("stable".into(), 50), ("canary".into(), 50)],
    );
    let table = crate::cli::ctl::run(&target, &command)
        .await
        .map_err(|e| DemoError::Request(e.to_string()))?;
    for line in table.lines() {
        println!("     {line}");
    }
    println!("   1000 more requests:");
    probe.split().await?;
    let alice = probe.repeat(3, &[("x-user-id", "alice")]).await?;
    println!(
        "   alice (bucket {bucket}) stays where she was: {}   (the canary now owns 5000..9999)",
        alice.join(" ")
    );
    println!();
    Ok(())
}

/// About 20 requests a second to `base` for at most `limit`.
async fn background_traffic(base: String, limit: Duration) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(request) = Request::get(format!("{base}/")).body(Empty::new()) {
            if let Ok(r) = client.request(request).await {
                let _ = r.into_body().collect().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Part 5 and 6 of the tour: a rollout that steps up to promotion on a healthy canary, then one
/// that the analysis aborts on its own when the canary fails one request in five.
async fn rollouts(
    admin_url: &str,
    base: &str,
    canary_faults: &Arc<AtomicU64>,
) -> Result<(), DemoError> {
    let target = crate::cli::ctl::Target {
        admin: admin_url.to_string(),
        token: None,
        json: false,
    };
    let ctl = |command: crate::cli::ctl::CtlCommand| {
        let target = target.clone();
        async move {
            crate::cli::ctl::run(&target, &command)
                .await
                .map_err(|e| DemoError::Request(e.to_string()))
        }
    };
    let route = || async {
        let text = ctl(crate::cli::ctl::CtlCommand::Status).await?;
        Ok::<_, DemoError>(text)
    };
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..4 {
        let (stop, url) = (stop.clone(), format!("{base}/"));
        tokio::spawn(async move {
            let client: Client<_, Empty<Bytes>> =
                Client::builder(TokioExecutor::new()).build_http();
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok(request) = Request::get(url.as_str()).body(Empty::new()) {
                    if let Ok(r) = client.request(request).await {
                        let _ = r.into_body().collect().await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }

    println!(
        "5. A rollout, steps [10, 50, 100], 2 s at least per step, the analysis judging each step:"
    );
    println!("     $ switchyard ctl --admin {admin_url} rollout start shop");
    ctl(crate::cli::ctl::CtlCommand::Reset("shop".into())).await?;
    ctl(crate::cli::ctl::CtlCommand::Rollout(
        "start".into(),
        "shop".into(),
    ))
    .await?;
    let outcome = follow(&route, &["promoted", "aborted"]).await?;
    println!("     -> {outcome}");

    println!(
        "6. The next canary answers 500 to one request in five; the proxy aborts it by itself:"
    );
    ctl(crate::cli::ctl::CtlCommand::Reset("shop".into())).await?;
    canary_faults.store(5, Ordering::Relaxed);
    let started = Instant::now();
    ctl(crate::cli::ctl::CtlCommand::Rollout(
        "start".into(),
        "shop".into(),
    ))
    .await?;
    let _ = follow(&route, &["aborted", "promoted"]).await?;
    println!(
        "     aborted {:.1} s after the start:",
        started.elapsed().as_secs_f64()
    );
    for line in route()
        .await?
        .lines()
        .filter(|l| !l.starts_with("generation"))
    {
        println!("     {line}");
    }
    stop.store(true, Ordering::Relaxed);
    canary_faults.store(0, Ordering::Relaxed);
    // The aborted rollout stays, with its evidence, for the release page to show.
    println!();
    Ok(())
}

/// Prints each new rollout line of `ctl status` until the state is one of `until` (30 s at most).
async fn follow<F, Fut>(route: &F, until: &[&str]) -> Result<String, DemoError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<String, DemoError>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        let status = route().await?;
        if let Some(line) = status.lines().find(|l| l.contains(": rollout ")) {
            let state = line.split_whitespace().nth(5).unwrap_or("").to_string();
            if line != last {
                println!("     {}", line.trim_start_matches("shop: "));
                last = line.to_string();
            }
            if until.contains(&state.as_str()) {
                return Ok(state);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok("still running after 30 s".into())
}

/// Part 7: a dark launch of a new catalogue build, and the comparison report.
async fn dark_launch(admin_url: &str, base: &str) -> Result<(), DemoError> {
    println!(
        "7. A dark launch: /catalog/ is copied to a new build (weight 0) that users never see;"
    );
    println!("   200 requests, then the comparison (served_at ignored by configuration):");
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    for i in 0..200 {
        let request = Request::get(format!("{base}/catalog/items/{i}"))
            .body(Empty::new())
            .map_err(|e| DemoError::Request(e.to_string()))?;
        let response = client
            .request(request)
            .await
            .map_err(|e| DemoError::Request(e.to_string()))?;
        let _ = response.into_body().collect().await;
    }
    let target = crate::cli::ctl::Target {
        admin: admin_url.to_string(),
        token: None,
        json: true,
    };
    let command = crate::cli::ctl::CtlCommand::Report("catalog".into());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut report = None;
    while Instant::now() < deadline {
        let text = crate::cli::ctl::run(&target, &command)
            .await
            .map_err(|e| DemoError::Request(e.to_string()))?;
        let view: crate::shadow::report::ReportView =
            serde_json::from_str(&text).map_err(|e| DemoError::Request(e.to_string()))?;
        let enough = view.total.compared >= 200;
        report = Some(view);
        if enough {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("     $ switchyard ctl --admin {admin_url} report catalog");
    let report = report.ok_or_else(|| DemoError::Request("no shadow report".into()))?;
    for line in crate::cli::ctl::shadow_report(&report).lines() {
        println!("     {line}");
    }
    println!();
    Ok(())
}
