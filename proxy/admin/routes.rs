//! The admin listener's operations as one table: the dispatcher matches requests against it,
//! and `tests/openapi.rs` compares it with `docs/openapi.yaml` both ways, so an operation cannot be
//! documented without being served, or served without being documented.

use http::Method;

/// One operation of the admin listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `GET /healthz`.
    Healthz,
    /// `GET /readyz`.
    Readyz,
    /// `GET /metrics`.
    Metrics,
    /// `GET /api/v1/routes`.
    ListRoutes,
    /// `GET /api/v1/routes/{route}`.
    ShowRoute,
    /// `PUT /api/v1/routes/{route}/weights`.
    SetWeights,
    /// `POST /api/v1/routes/{route}/promote`.
    Promote,
    /// `POST /api/v1/routes/{route}/abort`.
    Abort,
    /// `POST /api/v1/routes/{route}/resume`.
    Resume,
    /// `POST /api/v1/routes/{route}/reset`.
    Reset,
    /// `POST /api/v1/routes/{route}/rollout/start`.
    RolloutStart,
    /// `POST /api/v1/routes/{route}/rollout/pause`.
    RolloutPause,
    /// `POST /api/v1/routes/{route}/rollout/resume`.
    RolloutResume,
    /// `POST /api/v1/routes/{route}/rollout/promote`.
    RolloutPromote,
    /// `POST /api/v1/routes/{route}/rollout/abort`.
    RolloutAbort,
    /// `POST /api/v1/routes/{route}/switch`.
    Switch,
    /// `GET /api/v1/routes/{route}/shadow/report`.
    ShadowReport,
    /// `POST /api/v1/routes/{route}/shadow/reset`.
    ShadowReset,
    /// `GET /api/v1/stats`.
    Stats,
    /// `GET /api/v1/fleet`.
    Fleet,
    /// `GET /api/v1/config`.
    Config,
    /// `POST /api/v1/reload`.
    Reload,
}

/// Every operation: method, path pattern (`{route}` stands for one segment), operation.
pub const OPERATIONS: &[(&str, &str, Op)] = &[
    ("GET", "/healthz", Op::Healthz),
    ("GET", "/readyz", Op::Readyz),
    ("GET", "/metrics", Op::Metrics),
    ("GET", "/api/v1/routes", Op::ListRoutes),
    ("GET", "/api/v1/routes/{route}", Op::ShowRoute),
    ("PUT", "/api/v1/routes/{route}/weights", Op::SetWeights),
    ("POST", "/api/v1/routes/{route}/promote", Op::Promote),
    ("POST", "/api/v1/routes/{route}/abort", Op::Abort),
    ("POST", "/api/v1/routes/{route}/resume", Op::Resume),
    ("POST", "/api/v1/routes/{route}/reset", Op::Reset),
    (
        "POST",
        "/api/v1/routes/{route}/rollout/start",
        Op::RolloutStart,
    ),
    (
        "POST",
        "/api/v1/routes/{route}/rollout/pause",
        Op::RolloutPause,
    ),
    (
        "POST",
        "/api/v1/routes/{route}/rollout/resume",
        Op::RolloutResume,
    ),
    (
        "POST",
        "/api/v1/routes/{route}/rollout/promote",
        Op::RolloutPromote,
    ),
    (
        "POST",
        "/api/v1/routes/{route}/rollout/abort",
        Op::RolloutAbort,
    ),
    ("POST", "/api/v1/routes/{route}/switch", Op::Switch),
    (
        "GET",
        "/api/v1/routes/{route}/shadow/report",
        Op::ShadowReport,
    ),
    (
        "POST",
        "/api/v1/routes/{route}/shadow/reset",
        Op::ShadowReset,
    ),
    ("GET", "/api/v1/stats", Op::Stats),
    ("GET", "/api/v1/fleet", Op::Fleet),
    ("GET", "/api/v1/config", Op::Config),
    ("POST", "/api/v1/reload", Op::Reload),
];

/// What a request's method and path select.
#[derive(Debug, PartialEq, Eq)]
pub enum Found<'a> {
    /// An operation, with the `{route}` segment when the path has one.
    Op(Op, Option<&'a str>),
    /// The path exists for another method.
    MethodNotAllowed(&'static str),
    /// No operation has this path.
    NoSuchPath,
}

/// Matches `path` against a pattern; returns the `{route}` segment, if any, on a match.
fn matches<'a>(pattern: &str, path: &'a str) -> Option<Option<&'a str>> {
    let mut route = None;
    let mut got = path.trim_end_matches('/').split('/');
    for want in pattern.split('/') {
        let segment = got.next()?;
        if want == "{route}" && !segment.is_empty() {
            route = Some(segment);
        } else if want != segment {
            return None;
        }
    }
    got.next().is_none().then_some(route)
}

/// The operation a request selects.
pub fn find<'a>(method: &Method, path: &'a str) -> Found<'a> {
    let mut allowed = None;
    for (m, pattern, op) in OPERATIONS {
        if let Some(route) = matches(pattern, path) {
            if method.as_str() == *m || (*m == "GET" && method == Method::HEAD) {
                return Found::Op(*op, route);
            }
            allowed.get_or_insert(*m);
        }
    }
    match allowed {
        Some(m) => Found::MethodNotAllowed(m),
        None => Found::NoSuchPath,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_select_their_operation_and_route() {
        assert_eq!(
            find(&Method::PUT, "/api/v1/routes/shop/weights"),
            Found::Op(Op::SetWeights, Some("shop"))
        );
        assert_eq!(
            find(&Method::POST, "/api/v1/routes/shop/rollout/abort"),
            Found::Op(Op::RolloutAbort, Some("shop"))
        );
        assert_eq!(find(&Method::GET, "/metrics"), Found::Op(Op::Metrics, None));
        assert_eq!(
            find(&Method::GET, "/api/v1/routes/shop/weights"),
            Found::MethodNotAllowed("PUT")
        );
        assert_eq!(
            find(&Method::GET, "/api/v1/routes/shop/nope"),
            Found::NoSuchPath
        );
        assert_eq!(
            find(&Method::GET, "/api/v1/routes//weights"),
            Found::NoSuchPath
        );
        assert_eq!(find(&Method::GET, "/api/v2/routes"), Found::NoSuchPath);
    }
}
