//! A real browser for tests: Debian's `chromium`, headless, driven through `chromedriver` over
//! the W3C WebDriver protocol (JSON over HTTP on loopback). The dozen commands the tests need are
//! spoken directly with the test suite's own HTTP client, plus chromedriver's browser-log endpoint
//! (`/se/log`), which is how console errors are read.
//!
//! Each [`Browser`] starts its own chromedriver on an ephemeral port and a Chromium with a fresh
//! profile directory; [`Browser::quit`] (or, after a failed assertion, `Drop`) ends the session,
//! which closes Chromium, then stops chromedriver.
#![allow(dead_code)] // each test uses a different subset

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

/// The Chromium flags every session runs with.
const FLAGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// How long chromedriver may take to answer its status endpoint after starting.
const DRIVER_START: Duration = Duration::from_secs(20);

/// One chromedriver and one browser session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: Client<HttpConnector, Full<Bytes>>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver (`SWITCHYARD_CHROMEDRIVER`, or `chromedriver` on PATH) and a headless
    /// Chromium of `width` × `height`. Panics, saying what to install, when chromedriver is absent.
    pub async fn start(width: u32, height: u32) -> Browser {
        let program =
            std::env::var("SWITCHYARD_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let driver = match Command::new(&program)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => panic!(
                "cannot run {program:?} ({e}): the browser tests need Debian's chromium and \
                 chromium-driver (apt-get install -y chromium chromium-driver; .ci/run installs \
                 them when chromedriver is missing)"
            ),
        };
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            _profile: profile,
        };
        browser.wait_for_driver().await;
        let mut args: Vec<String> = FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            browser._profile.path().display()
        ));
        args.push(format!("--window-size={width},{height}"));
        let mut options = json!({ "args": args });
        if let Ok(binary) = std::env::var("SWITCHYARD_CHROMIUM") {
            options["binary"] = json!(binary);
        }
        let created = browser
            .call(
                "POST",
                "/session",
                Some(json!({ "capabilities": { "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:loggingPrefs": { "browser": "ALL" },
                    "goog:chromeOptions": options,
                }}})),
            )
            .await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver created no session: {created}"))
            .to_string();
        browser
    }

    async fn wait_for_driver(&mut self) {
        let (driver, client) = (&mut self.driver, &self.client);
        let status = format!("{}/status", self.base);
        let up = crate::common::eventually(DRIVER_START, async || {
            if let Ok(Some(exit)) = driver.try_wait() {
                panic!("chromedriver exited at start ({exit}); is chromium installed?");
            }
            let request = http::Request::get(&status)
                .body(Full::new(Bytes::new()))
                .expect("a status request");
            let answer = tokio::time::timeout(Duration::from_secs(2), client.request(request));
            matches!(answer.await, Ok(Ok(r)) if r.status().is_success())
        })
        .await;
        assert!(up, "chromedriver did not answer within {DRIVER_START:?}");
    }

    /// One WebDriver command; returns its `value`, panics on a WebDriver error.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a WebDriver request");
        let response = tokio::time::timeout(Duration::from_secs(60), self.client.request(request))
            .await
            .unwrap_or_else(|_| panic!("WebDriver {method} {path}: no answer in 60 s"))
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("a WebDriver answer")
            .to_bytes();
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "WebDriver {method} {path} failed ({status}): {answer}"
        );
        answer["value"].clone()
    }

    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    /// Opens `url` and waits for the document to load.
    pub async fn goto(&self, url: &str) {
        self.call("POST", &self.at("/url"), Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page; returns its result.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.at("/execute/sync"),
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// The WebDriver id of the first element matching `css`.
    pub async fn find(&self, css: &str) -> String {
        let found = self
            .call(
                "POST",
                &self.at("/element"),
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string()
    }

    /// Clicks the element matching `css`, as a user would (it must be visible and enabled).
    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call(
            "POST",
            &self.at(&format!("/element/{id}/click")),
            Some(json!({})),
        )
        .await;
    }

    /// Types `text` into the element matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(
            "POST",
            &self.at(&format!("/element/{id}/value")),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// The browser's log entries at level SEVERE since the last call (console errors, failed
    /// loads, uncaught exceptions), as chromedriver reports them.
    pub async fn severe_log(&self) -> Vec<String> {
        let entries = self
            .call(
                "POST",
                &self.at("/se/log"),
                Some(json!({ "type": "browser" })),
            )
            .await;
        entries
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Saves a PNG of the element matching `css` to `file`.
    pub async fn screenshot_of(&self, css: &str, file: &Path) {
        let id = self.find(css).await;
        let png = self
            .call("GET", &self.at(&format!("/element/{id}/screenshot")), None)
            .await;
        let bytes = base64_decode(png.as_str().expect("a base64 screenshot"));
        std::fs::write(file, bytes).expect("the screenshot is written");
    }

    /// Ends the session (Chromium closes) and stops chromedriver.
    pub async fn quit(mut self) {
        self.call("DELETE", &self.at(""), None).await;
        self.session.clear();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    /// After a failed assertion: end the session with a plain blocking request, so Chromium does
    /// not outlive the test, then stop chromedriver.
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let addr = self.base.trim_start_matches("http://").to_string();
            if let Ok(mut stream) = TcpStream::connect(&addr) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = write!(
                    stream,
                    "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    self.session
                );
                let _ = stream.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (with padding), as WebDriver sends screenshots.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let clean: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let digits: Vec<u8> = chunk
            .iter()
            .filter(|c| **c != b'=')
            .map(|c| value(*c))
            .collect();
        let n = digits
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | (u32::from(*d) << (18 - 6 * i)));
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..digits.len()]);
    }
    out
}
