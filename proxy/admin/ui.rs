//! The release page, `GET /ui/`: static files embedded in the binary (HTML, one stylesheet, plain
//! JavaScript modules, an SVG icon), nothing fetched from elsewhere, no build step.
//!
//! The page reads the open JSON API (`/api/v1/routes`, `/api/v1/stats`, the shadow reports) about
//! once a second and draws from it; its buttons call the same API with the bearer token the user
//! types in, which the page keeps in the tab's session storage. The server side holds no state and
//! no secret: this module only maps a path to an embedded file and sets headers that keep the page
//! from running anything but its own files (a strict Content-Security-Policy) or being framed.

use http::{header, HeaderValue, Method, Response, StatusCode};

use super::api;
use crate::data::body::ResponseBody;

/// The files under `/ui/`: name, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    (
        "",
        "text/html; charset=utf-8",
        include_str!("ui/index.html"),
    ),
    (
        "errors.js",
        "text/javascript; charset=utf-8",
        include_str!("ui/errors.js"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("ui/app.js"),
    ),
    (
        "actions.js",
        "text/javascript; charset=utf-8",
        include_str!("ui/actions.js"),
    ),
    (
        "chart.js",
        "text/javascript; charset=utf-8",
        include_str!("ui/chart.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("ui/dom.js"),
    ),
    (
        "model.js",
        "text/javascript; charset=utf-8",
        include_str!("ui/model.js"),
    ),
    (
        "panels.js",
        "text/javascript; charset=utf-8",
        include_str!("ui/panels.js"),
    ),
    (
        "view.js",
        "text/javascript; charset=utf-8",
        include_str!("ui/view.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("ui/style.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("ui/favicon.svg"),
    ),
];

/// Only the page's own files run, only the admin API is called, and no other site may frame it.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Answers a request for `/ui` or a path under `/ui/`.
pub fn serve(method: &Method, path: &str) -> Response<ResponseBody> {
    if method != Method::GET && method != Method::HEAD {
        return api::method_not_allowed("GET");
    }
    if path == "/ui" {
        let mut r = Response::new(ResponseBody::text(""));
        *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
        r.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("/ui/"));
        return r;
    }
    let name = path.strip_prefix("/ui/").unwrap_or_default();
    let Some((_, content_type, content)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return api::no_such_path(path);
    };
    let mut r = Response::new(ResponseBody::text(*content));
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The binary is the version: revalidate so an upgraded proxy never serves a stale script.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}
