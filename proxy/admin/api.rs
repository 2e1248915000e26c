//! The JSON API under `/api/v1`: route views, weight changes, promote, abort, resume, reset,
//! config status and reload. Errors are JSON `{"error": {"status": N, "message": "..."}}`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::{Deserialize, Serialize};

use super::routes::Op;
use super::Admin;
use crate::control::{Action, ActionError, ReloadError, ReloadSource};
use crate::data::body::ResponseBody;
use crate::data::shared::Inbound;
use crate::data::snapshot::Snapshot;
use crate::state::{Abort, RolloutState, WeightSource};

/// The largest request body the API reads.
const MAX_BODY: usize = 64 * 1024;

/// One route as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct RouteView {
    /// Route name.
    pub name: String,
    /// Snapshot generation these figures come from.
    pub generation: u64,
    /// `steady` or `aborted`.
    pub state: String,
    /// The abort, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aborted: Option<AbortView>,
    /// Versions in declared order.
    pub versions: Vec<VersionView>,
    /// The rollout, when the route has one configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutView>,
}

/// A rollout as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct RolloutView {
    /// idle, progressing, paused, promoted or aborted.
    pub state: String,
    /// Baseline version.
    pub baseline: String,
    /// Canary version.
    pub canary: String,
    /// Canary percentages.
    pub steps: Vec<u32>,
    /// Current step index, once started.
    pub step: Option<usize>,
    /// The canary's current weight.
    pub canary_weight: u32,
    /// The analysis's last look: verdict and both sides' figures.
    pub analysis: Option<crate::release::analysis::Look>,
}

/// An abort as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct AbortView {
    /// Why.
    pub reason: String,
    /// Who.
    pub by: String,
    /// When (ms since the Unix epoch).
    pub at_unix_ms: u64,
    /// The analysis's figures, for an automatic abort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<crate::state::Evidence>,
}

/// One version as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct VersionView {
    /// Version name.
    pub name: String,
    /// Effective weight.
    pub weight: u32,
    /// The weight the configuration file gives.
    pub file_weight: u32,
    /// Where the effective weight comes from: `file`, `api` or `abort`.
    pub source: String,
    /// Endpoints.
    pub endpoints: Vec<String>,
}

/// The answer to a reload.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReloadView {
    /// Generation of the snapshot now in service.
    pub generation: u64,
}

/// All routes.
#[derive(Debug, Serialize, Deserialize)]
pub struct RoutesView {
    /// Snapshot generation.
    pub generation: u64,
    /// Routes in match order.
    pub routes: Vec<RouteView>,
}

fn route_view(admin: &Admin, snapshot: &Snapshot, index: usize) -> RouteView {
    let route = &snapshot.routes[index];
    let file = &snapshot.config.routes[index];
    let o = snapshot
        .overrides
        .routes
        .get(&route.name)
        .filter(|o| o.applies_to(file));
    let aborted: Option<&Abort> = o.and_then(|o| o.aborted.as_ref());
    let rollout = file.rollout.as_ref().map(|plan| {
        let state = RolloutState::of(o);
        RolloutView {
            state: serde_json::to_value(state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            baseline: file.versions[plan.baseline].name.clone(),
            canary: file.versions[plan.canary].name.clone(),
            steps: plan.steps.clone(),
            step: o.and_then(|o| o.rollout.as_ref()).map(|r| r.step),
            canary_weight: route.versions[plan.canary].weight,
            analysis: admin.looks.load().get(&route.name).cloned(),
        }
    });
    RouteView {
        name: route.name.clone(),
        generation: snapshot.generation,
        state: if aborted.is_some() {
            "aborted"
        } else {
            "steady"
        }
        .into(),
        aborted: aborted.map(|a| AbortView {
            reason: a.reason.clone(),
            by: a.by.clone(),
            at_unix_ms: a.at_unix_ms,
            evidence: a.evidence.clone(),
        }),
        rollout,
        versions: route
            .versions
            .iter()
            .zip(&file.versions)
            .map(|(v, f)| VersionView {
                name: v.name.clone(),
                weight: v.weight,
                file_weight: f.weight,
                source: match v.source {
                    WeightSource::File => "file",
                    WeightSource::Api => "api",
                    WeightSource::Abort => "abort",
                    WeightSource::Rollout => "rollout",
                    WeightSource::Unhealthy => "unhealthy",
                }
                .into(),
                endpoints: v.endpoints.iter().map(|e| e.to_string()).collect(),
            })
            .collect(),
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AbortBody {
    #[serde(default)]
    reason: Option<String>,
}

/// Serves one `/api/v1` operation; `name` is the route segment of the path, if it has one.
pub async fn dispatch(
    admin: &Admin,
    peer: SocketAddr,
    op: Op,
    name: &str,
    request: Request<Inbound>,
) -> Response<ResponseBody> {
    let actor = peer.to_string();
    let action = match op {
        Op::ListRoutes => return list_routes(admin),
        Op::ShowRoute => return show_route(admin, name),
        Op::ShadowReport | Op::ShadowReset => return shadow(admin, op, name, &actor),
        Op::Config => return json(StatusCode::OK, &**admin.status.load()),
        Op::Stats => return super::stats::answer(admin),
        Op::Fleet => return super::fleet::answer(admin),
        Op::Reload => return reload(admin).await,
        Op::SetWeights => match read_json::<BTreeMap<String, u32>>(request).await {
            Ok(weights) => Action::SetWeights(weights),
            Err(r) => return r,
        },
        Op::Promote | Op::RolloutPromote => Action::Promote,
        Op::Resume => Action::Resume,
        Op::Reset => Action::Reset,
        Op::RolloutStart => Action::RolloutStart,
        Op::RolloutPause => Action::RolloutPause,
        Op::RolloutResume => Action::RolloutResume,
        Op::Switch => Action::Switch,
        Op::Abort | Op::RolloutAbort => {
            let default = if op == Op::Abort {
                "aborted by an operator"
            } else {
                "rollout aborted by an operator"
            };
            match abort_action(request, default).await {
                Ok(a) => a,
                Err(r) => return r,
            }
        }
        Op::Healthz | Op::Readyz | Op::Metrics => return no_such_path(request.uri().path()),
    };
    act(admin, name, action, &actor).await
}

fn list_routes(admin: &Admin) -> Response<ResponseBody> {
    let snapshot = admin.shared.snapshot.load();
    json(
        StatusCode::OK,
        &RoutesView {
            generation: snapshot.generation,
            routes: (0..snapshot.routes.len())
                .map(|i| route_view(admin, &snapshot, i))
                .collect(),
        },
    )
}

fn shadow(admin: &Admin, op: Op, name: &str, actor: &str) -> Response<ResponseBody> {
    if admin.shared.snapshot.load().route_index(name).is_none() {
        return no_such_route(name);
    }
    if op == Op::ShadowReset {
        admin.mirrors.reset(name);
        tracing::info!(target: "switchyard::audit", actor, action = "shadow-reset", route = name, "shadow report reset");
    }
    json(StatusCode::OK, &admin.mirrors.report(name))
}

async fn reload(admin: &Admin) -> Response<ResponseBody> {
    match admin.control.reload(ReloadSource::Api).await {
        Ok(generation) => json(StatusCode::OK, &ReloadView { generation }),
        Err(e @ ReloadError::Unavailable) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
    }
}

/// An abort with the reason from an optional JSON body `{"reason": "..."}`.
async fn abort_action(
    request: Request<Inbound>,
    default_reason: &str,
) -> Result<Action, Response<ResponseBody>> {
    let body: AbortBody = read_json_or_empty(request).await?;
    Ok(Action::Abort {
        reason: body.reason.unwrap_or_else(|| default_reason.to_string()),
    })
}

fn show_route(admin: &Admin, name: &str) -> Response<ResponseBody> {
    let snapshot = admin.shared.snapshot.load();
    match snapshot.route_index(name) {
        Some(i) => json(StatusCode::OK, &route_view(admin, &snapshot, i)),
        None => no_such_route(name),
    }
}

async fn act(admin: &Admin, name: &str, action: Action, actor: &str) -> Response<ResponseBody> {
    match admin.control.act(name, action, actor).await {
        Ok(_) => show_route(admin, name),
        Err(e) => {
            let status = match e {
                ActionError::NoRoute(_) => return no_such_route(name),
                ActionError::UnknownVersions { .. }
                | ActionError::MissingWeights(_)
                | ActionError::AllZero => StatusCode::UNPROCESSABLE_ENTITY,
                ActionError::Conflict { .. } => StatusCode::CONFLICT,
                // Nothing was acknowledged: the store could not make the change durable.
                ActionError::Persist(_) | ActionError::Unavailable => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            };
            if status == StatusCode::CONFLICT {
                // The route's current state, so the caller can decide again on it.
                return conflict(admin, name, &e.to_string());
            }
            error(status, &e.to_string())
        }
    }
}

/// 409 with the route's current state beside the error.
fn conflict(admin: &Admin, name: &str, message: &str) -> Response<ResponseBody> {
    let snapshot = admin.shared.snapshot.load();
    let current = snapshot
        .route_index(name)
        .and_then(|i| serde_json::to_value(route_view(admin, &snapshot, i)).ok());
    let status = StatusCode::CONFLICT;
    json(
        status,
        &serde_json::json!({
            "error": { "status": status.as_u16(), "message": message },
            "route": current,
        }),
    )
}

async fn read_body(request: Request<Inbound>) -> Result<Bytes, Response<ResponseBody>> {
    Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the request body (at most {MAX_BODY} bytes): {e}"),
            )
        })
}

async fn read_json<T: serde::de::DeserializeOwned>(
    request: Request<Inbound>,
) -> Result<T, Response<ResponseBody>> {
    let body = read_body(request).await?;
    serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}")))
}

async fn read_json_or_empty<T: serde::de::DeserializeOwned + Default>(
    request: Request<Inbound>,
) -> Result<T, Response<ResponseBody>> {
    let body = read_body(request).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}")))
}

/// A JSON response.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<ResponseBody> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(ResponseBody::bytes(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A JSON error: `{"error": {"status": N, "message": "..."}}`.
pub fn error(status: StatusCode, message: &str) -> Response<ResponseBody> {
    json(
        status,
        &serde_json::json!({ "error": { "status": status.as_u16(), "message": message } }),
    )
}

/// 404 for a path the API does not have: `{"error": {"code": "no_such_path", ...}}`.
pub fn no_such_path(path: &str) -> Response<ResponseBody> {
    coded_error(
        StatusCode::NOT_FOUND,
        "no_such_path",
        &format!("no admin path {path}"),
    )
}

/// 404 for an operation on a route the configuration does not have:
/// `{"error": {"code": "no_such_route", ...}}`.
pub fn no_such_route(name: &str) -> Response<ResponseBody> {
    coded_error(
        StatusCode::NOT_FOUND,
        "no_such_route",
        &format!("no route named {name:?}"),
    )
}

fn coded_error(status: StatusCode, code: &str, message: &str) -> Response<ResponseBody> {
    json(
        status,
        &serde_json::json!({ "error": { "status": status.as_u16(), "code": code, "message": message } }),
    )
}

/// 405 with the allowed method.
pub fn method_not_allowed(allow: &'static str) -> Response<ResponseBody> {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("method not allowed here; use {allow}"),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}
