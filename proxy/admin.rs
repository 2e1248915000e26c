//! The admin endpoint, on its own listener: health (`/healthz`, `/readyz`), Prometheus metrics
//! (`/metrics`), the JSON API under `/api/v1` (see `docs/openapi.yaml`) and the release page
//! (`/ui/`).
//!
//! Reads are open; every mutation needs `Authorization: Bearer <token>` when a token is
//! configured, compared in constant time. Without a token the admin endpoint must be on loopback
//! (checked at start).

pub mod api;
pub mod fleet;
pub mod routes;
pub mod stats;
pub mod ui;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use subtle::ConstantTimeEq;

use crate::control::{ControlHandle, ReloadStatus};
use crate::data::body::ResponseBody;
use crate::data::shared::{Inbound, Shared};
use routes::{Found, Op};

/// What the admin handlers share.
pub struct Admin {
    /// The data path's shared state (snapshot and metrics).
    pub shared: Arc<Shared>,
    /// The control task.
    pub control: ControlHandle,
    /// Outcome of the last reloads.
    pub status: Arc<ArcSwap<ReloadStatus>>,
    /// The bearer token mutations must carry, when configured.
    pub token: Option<String>,
    /// Set once every listener is bound.
    pub listening: AtomicBool,
    /// The analysis's last look at each rolling route.
    pub looks: crate::release::analysis::Looks,
    /// Dark-launch reports.
    pub mirrors: std::sync::Arc<crate::shadow::mirror::Mirrors>,
    /// The fleet this replica belongs to, when configured.
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
}

impl Admin {
    /// True when the request carries the configured token (or none is configured).
    fn authorized(&self, request: &Request<Inbound>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or(b"");
        bool::from(presented.ct_eq(token.as_bytes()))
    }
}

/// Answers one admin request.
pub async fn handle(
    admin: Arc<Admin>,
    peer: SocketAddr,
    request: Request<Inbound>,
) -> Response<ResponseBody> {
    let path = request.uri().path().to_string();
    if path == "/ui" || path.starts_with("/ui/") {
        return ui::serve(request.method(), &path); // static files, not an API operation
    }
    let (op, route) = match routes::find(request.method(), &path) {
        Found::Op(op, route) => (op, route.map(str::to_string)),
        Found::MethodNotAllowed(allow) => return api::method_not_allowed(allow),
        Found::NoSuchPath => return api::no_such_path(&path),
    };
    match op {
        Op::Healthz => plain(StatusCode::OK, "ok\n"),
        Op::Readyz => readiness(&admin),
        Op::Metrics => {
            let mut r = Response::new(ResponseBody::bytes(admin.shared.metrics.encode()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        _ => {
            let mutation = request.method() != Method::GET && request.method() != Method::HEAD;
            if mutation && cross_origin(&request) {
                tracing::warn!(target: "switchyard::audit", %peer, method = %request.method(), path, "cross-origin admin change refused");
                return api::error(
                    StatusCode::FORBIDDEN,
                    "a change from another origin is refused (a web page cannot drive the admin API; ctl and the release page can)",
                );
            }
            if mutation && !admin.authorized(&request) {
                tracing::warn!(target: "switchyard::audit", %peer, method = %request.method(), path, "unauthorized admin request refused");
                let mut r = api::error(
                    StatusCode::UNAUTHORIZED,
                    "a valid bearer token is required (Authorization: Bearer <token>)",
                );
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return r;
            }
            api::dispatch(&admin, peer, op, route.as_deref().unwrap_or(""), request).await
        }
    }
}

/// True when a browser sent the request from a page of another origin. Browsers send `Origin` on
/// cross-origin POST and PUT; `ctl` and scripts send none; the release page sends its own, which
/// matches `Host`. Without this, any page open in a browser on the operator's machine could abort
/// a route through a loopback admin endpoint that has no token.
fn cross_origin(request: &Request<Inbound>) -> bool {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return false;
    };
    let host = request
        .headers()
        .get(header::HOST)
        .map(HeaderValue::as_bytes);
    let origin_host = origin
        .as_bytes()
        .strip_prefix(b"http://")
        .or_else(|| origin.as_bytes().strip_prefix(b"https://"));
    origin_host.is_none() || origin_host != host
}

/// Ready when every listener is bound and a snapshot is in service. The body names the
/// snapshot's generation and every version whose endpoints are all down on their health checks:
/// the proxy still serves (their share went to the others), so it stays ready, but an operator
/// reading `/readyz` sees why.
fn readiness(admin: &Admin) -> Response<ResponseBody> {
    if !admin.listening.load(Ordering::Acquire) {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: listeners not bound yet\n",
        );
    }
    let snapshot = admin.shared.snapshot.load();
    let mut body = format!("ready: generation {}\n", snapshot.generation);
    for route in &snapshot.routes {
        for v in &route.versions {
            if !v.health.is_empty() && v.health.iter().all(|h| h.down_on_checks()) {
                body.push_str(&format!(
                    "down: route {} version {}: all {} endpoint(s) fail their health check\n",
                    route.name,
                    v.name,
                    v.health.len()
                ));
            }
        }
    }
    plain(StatusCode::OK, body)
}

fn plain(status: StatusCode, text: impl Into<bytes::Bytes>) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::text(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
