//! The admin endpoint, on its own listener: health (`/healthz`, `/readyz`), Prometheus metrics
//! (`/metrics`) and the JSON API under `/api/v1` (see `docs/openapi.yaml`).
//!
//! Reads are open; every mutation needs `Authorization: Bearer <token>` when a token is
//! configured, compared in constant time. Without a token the admin endpoint must be on loopback
//! (checked at start).

pub mod api;
pub mod fleet;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use subtle::ConstantTimeEq;

use crate::control::{ControlHandle, ReloadStatus};
use crate::data::body::ResponseBody;
use crate::data::shared::Shared;

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
    fn authorized(&self, request: &Request<Incoming>) -> bool {
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
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let path = request.uri().path().to_string();
    match (request.method(), path.as_str()) {
        (&Method::GET, "/healthz") => plain(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => readiness(&admin),
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(ResponseBody::bytes(admin.shared.metrics.encode()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        (_, "/healthz" | "/readyz" | "/metrics") => api::method_not_allowed("GET"),
        (_, p) if p.starts_with("/api/v1/") => {
            let mutation = request.method() != Method::GET && request.method() != Method::HEAD;
            if mutation && !admin.authorized(&request) {
                tracing::warn!(target: "switchyard::audit", %peer, method = %request.method(), path = p, "unauthorized admin request refused");
                let mut r = api::error(
                    StatusCode::UNAUTHORIZED,
                    "a valid bearer token is required (Authorization: Bearer <token>)",
                );
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return r;
            }
            api::dispatch(&admin, peer, request).await
        }
        _ => api::error(StatusCode::NOT_FOUND, "no such admin path"),
    }
}

fn readiness(admin: &Admin) -> Response<ResponseBody> {
    if !admin.listening.load(Ordering::Acquire) {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: listeners not bound yet\n",
        );
    }
    let snapshot = admin.shared.snapshot.load();
    for route in &snapshot.routes {
        for v in &route.versions {
            if v.weight > 0 && v.endpoints.is_empty() {
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "not ready: route {} version {} has traffic and no endpoint\n",
                        route.name, v.name
                    ),
                );
            }
        }
    }
    plain(StatusCode::OK, "ready\n")
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
