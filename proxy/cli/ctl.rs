//! `switchyard ctl`: a client of the admin API for people and release pipelines. Human tables by
//! default, the API's JSON with `--json`; errors carry the API's message and map to exit codes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::admin::api::{ReloadView, RouteView, RoutesView};
use crate::release::analysis::stats::Verdict;
use crate::release::analysis::Look;
use crate::shadow::report::ReportView;
use crate::state::Side;

mod fleet;

/// Where the admin API is and how to reach it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Base URL, such as `http://127.0.0.1:9901`.
    pub admin: String,
    /// Bearer token for mutations.
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    pub json: bool,
}

/// One ctl command.
#[derive(Debug, Clone)]
pub enum CtlCommand {
    /// Every route, its versions and weights.
    Status,
    /// Set weights: `(route, [(version, weight)])`.
    Weights(String, Vec<(String, u32)>),
    /// The canary takes all traffic.
    Promote(String),
    /// The kill switch, with an optional reason.
    Abort(String, Option<String>),
    /// Lift an abort.
    Resume(String),
    /// Back to the file's weights.
    Reset(String),
    /// Reload the configuration file.
    Reload,
    /// A rollout verb (`start`, `pause`, `resume`, `promote`, `abort`) on a route.
    Rollout(String, String),
    /// Blue/green switch.
    Switch(String),
    /// The shadow comparison report of a route.
    Report(String),
    /// The live replicas of the fleet, the store's health, the rollout leaders.
    Fleet,
}

/// Why a ctl command failed; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The admin endpoint could not be reached.
    #[error("cannot reach the admin API at {url}: {reason}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// Why.
        reason: String,
    },
    /// The API refused the request.
    #[error("{status}: {message}")]
    Refused {
        /// HTTP status.
        status: StatusCode,
        /// The API's message.
        message: String,
    },
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
}

impl CtlError {
    /// 1 when the API refused, 2 for bad arguments, 3 when the API could not be reached.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Refused { .. } => 1,
            CtlError::Usage(_) => 2,
            CtlError::Unreachable { .. } => 3,
        }
    }
}

/// Parses `name=weight` pairs.
pub fn parse_weights(pairs: &[String]) -> Result<Vec<(String, u32)>, CtlError> {
    pairs
        .iter()
        .map(|p| {
            let (name, weight) = p.split_once('=').ok_or_else(|| {
                CtlError::Usage(format!("{p:?}: write VERSION=WEIGHT, e.g. canary=10"))
            })?;
            let weight = weight.parse().map_err(|_| {
                CtlError::Usage(format!("{p:?}: the weight must be a whole number ≥ 0"))
            })?;
            Ok((name.to_string(), weight))
        })
        .collect()
}

/// Runs a command and returns what to print.
pub async fn run(target: &Target, command: &CtlCommand) -> Result<String, CtlError> {
    let (method, path, body) = match command {
        CtlCommand::Status => (Method::GET, "/api/v1/routes".to_string(), None),
        CtlCommand::Weights(route, pairs) => {
            let map: BTreeMap<&str, u32> = pairs.iter().map(|(n, w)| (n.as_str(), *w)).collect();
            let body = serde_json::to_vec(&map).map_err(|e| CtlError::Usage(e.to_string()))?;
            (
                Method::PUT,
                format!("/api/v1/routes/{route}/weights"),
                Some(body),
            )
        }
        CtlCommand::Promote(route) => (
            Method::POST,
            format!("/api/v1/routes/{route}/promote"),
            None,
        ),
        CtlCommand::Abort(route, reason) => {
            let body = reason
                .as_ref()
                .map(|r| serde_json::json!({ "reason": r }).to_string().into_bytes());
            (Method::POST, format!("/api/v1/routes/{route}/abort"), body)
        }
        CtlCommand::Resume(route) => (Method::POST, format!("/api/v1/routes/{route}/resume"), None),
        CtlCommand::Reset(route) => (Method::POST, format!("/api/v1/routes/{route}/reset"), None),
        CtlCommand::Reload => (Method::POST, "/api/v1/reload".to_string(), None),
        CtlCommand::Rollout(verb, route) => (
            Method::POST,
            format!("/api/v1/routes/{route}/rollout/{verb}"),
            None,
        ),
        CtlCommand::Switch(route) => (Method::POST, format!("/api/v1/routes/{route}/switch"), None),
        CtlCommand::Report(route) => (
            Method::GET,
            format!("/api/v1/routes/{route}/shadow/report"),
            None,
        ),
        CtlCommand::Fleet => (Method::GET, "/api/v1/fleet".to_string(), None),
    };
    let text = call(target, method, &path, body).await?;
    if target.json {
        return Ok(text);
    }
    let parse_err = |e: serde_json::Error| CtlError::Refused {
        status: StatusCode::OK,
        message: format!("unexpected answer from the API: {e}"),
    };
    Ok(match command {
        CtlCommand::Status => {
            let view: RoutesView = serde_json::from_str(&text).map_err(parse_err)?;
            let mut out = table(&view.routes);
            let _ = writeln!(out, "generation {}", view.generation);
            out
        }
        CtlCommand::Reload => {
            let view: ReloadView = serde_json::from_str(&text).map_err(parse_err)?;
            format!("reloaded: generation {}\n", view.generation)
        }
        CtlCommand::Report(_) => {
            let view: ReportView = serde_json::from_str(&text).map_err(parse_err)?;
            shadow_report(&view)
        }
        CtlCommand::Fleet => fleet::table(&serde_json::from_str(&text).map_err(parse_err)?),
        _ => {
            let view: RouteView = serde_json::from_str(&text).map_err(parse_err)?;
            table(std::slice::from_ref(&view))
        }
    })
}

async fn call(
    target: &Target,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<String, CtlError> {
    let url = format!("{}{path}", target.admin.trim_end_matches('/'));
    let mut request = Request::builder().method(method).uri(&url);
    if let Some(token) = &target.token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| CtlError::Usage(format!("bad admin URL {url:?}: {e}")))?;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let unreachable = |reason: String| CtlError::Unreachable {
        url: url.clone(),
        reason,
    };
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(10), client.request(request))
            .await
            .map_err(|_| unreachable("no answer within 10 s".into()))?
            .map_err(|e| {
                unreachable(format!(
                    "{e} ({:?})",
                    std::error::Error::source(&e).map(|s| s.to_string())
                ))
            })?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    if status.is_success() {
        return Ok(text);
    }
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or(text);
    Err(CtlError::Refused { status, message })
}

/// Writes `rows` as left-aligned columns two spaces apart (the first row is the header).
pub(crate) fn write_columns<const N: usize>(out: &mut String, rows: &[[String; N]]) {
    let widths: Vec<usize> = (0..N)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
}

/// A human table of routes and versions.
pub fn table(routes: &[RouteView]) -> String {
    let mut rows = vec![[
        "ROUTE".to_string(),
        "STATE".into(),
        "VERSION".into(),
        "WEIGHT".into(),
        "SOURCE".into(),
        "FILE".into(),
        "ENDPOINTS".into(),
    ]];
    for r in routes {
        for (i, v) in r.versions.iter().enumerate() {
            let first = i == 0;
            rows.push([
                if first { r.name.clone() } else { String::new() },
                if first {
                    r.state.clone()
                } else {
                    String::new()
                },
                v.name.clone(),
                v.weight.to_string(),
                v.source.clone(),
                v.file_weight.to_string(),
                v.endpoints.join(","),
            ]);
        }
    }
    let mut out = String::new();
    write_columns(&mut out, &rows);
    for r in routes {
        if let Some(ro) = &r.rollout {
            let step = ro.step.map_or("-".to_string(), |s| {
                format!("{} of {}", s + 1, ro.steps.len())
            });
            let _ = writeln!(
                out,
                "{}: rollout {} -> {} {} (step {step}, canary at {}%, steps {:?})",
                r.name, ro.baseline, ro.canary, ro.state, ro.canary_weight, ro.steps
            );
            if let Some(look) = &ro.analysis {
                let _ = writeln!(out, "{}", analysis_lines(look));
            }
        }
        if let Some(a) = &r.aborted {
            let _ = writeln!(out, "{}: aborted by {}: {}", r.name, a.by, a.reason);
        }
    }
    out
}

/// The analysis' last look: the verdict and both sides' figures.
fn analysis_lines(look: &Look) -> String {
    let (verdict, why) = match &look.verdict {
        Verdict::Pass => ("pass", None),
        Verdict::Hold { why } => ("hold", Some(why.clone())),
        Verdict::Fail { reason } => ("fail", Some(reason.as_str().to_string())),
    };
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
    let side = |s: &Side| {
        format!(
            "{} req, {:.2}% errors, p50 {} ms, p99 {} ms",
            s.requests,
            s.error_rate * 100.0,
            ms(s.p50_ms),
            ms(s.p99_ms),
        )
    };
    format!(
        "  analysis: {verdict}{}\n  baseline: {}\n  canary:   {}",
        why.map(|w| format!(" ({w})")).unwrap_or_default(),
        side(&look.evidence.baseline),
        side(&look.evidence.canary),
    )
}

/// The shadow report as a performance engineer reads it.
pub fn shadow_report(v: &ReportView) -> String {
    let t = &v.total;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} compared, {:?}% identical ({} identical once noise is set aside), {} status mismatches, {} shadow failures, {} live incomplete",
        v.route,
        t.compared,
        t.identical_percent,
        t.noise_only,
        t.status_mismatches,
        t.shadow_failures,
        t.live_incomplete,
    );
    let ms = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1} ms"));
    let pct = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:+.1}%"));
    let l = &t.latency;
    let _ = writeln!(
        out,
        "{:<10}{:>12}{:>12}{:>12}",
        "latency", "p50", "p95", "p99"
    );
    for (label, row, f) in [
        ("live", &l.live_ms, &ms as &dyn Fn(Option<f64>) -> String),
        ("shadow", &l.shadow_ms, &ms),
        ("change", &l.change_percent, &pct),
    ] {
        let _ = writeln!(
            out,
            "{label:<10}{:>12}{:>12}{:>12}",
            f(row[0]),
            f(row[1]),
            f(row[2])
        );
    }
    let _ = writeln!(
        out,
        "errors    live {:.2}%, shadow {:.2}%",
        l.live_error_rate * 100.0,
        l.shadow_error_rate * 100.0
    );
    if !t.top_differences.is_empty() {
        let _ = writeln!(
            out,
            "top differences (count, field, example live -> shadow):"
        );
        for d in &t.top_differences {
            let _ = writeln!(
                out,
                "  {:>6}  {:<28} {} -> {}",
                d.count, d.path, d.live, d.shadow
            );
        }
    }
    if !v.paths.is_empty() {
        let _ = writeln!(out, "per path: compared, identical %, shadow p99 change");
        for (path, p) in &v.paths {
            let _ = writeln!(
                out,
                "  {:<32} {:>7} {:>8?}% {:>9}",
                path,
                p.compared,
                p.identical_percent,
                pct(p.latency.change_percent[2])
            );
        }
    }
    out
}
