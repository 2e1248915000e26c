//! One request, in named phases: load the snapshot once, decide, start the record, rewrite
//! headers, call the upstream under its timeout, answer. Every failure goes through
//! `ProxyError::into_response`; every routed request is measured by its `Record`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::request::Parts;
use http::uri::PathAndQuery;
use http::{header, HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use rand::Rng;

use crate::config::Endpoint;
use crate::data::body::{RequestBody, ResponseBody};
use crate::data::error::ProxyError;
use crate::data::headers::{self, X_REQUEST_ID, X_SWITCHYARD_VERSION};
use crate::data::record::{AccessEntry, Record};
use crate::data::shared::{Downstream, Shared};
use crate::data::snapshot::Snapshot;
use crate::data::snapshot::{RouteState, VersionState};
use crate::data::upstream::{self, FailureKind};
use crate::route::{self, Decision, NoDecision, RequestHead};

/// Proxies one request. Never fails: errors become responses.
pub async fn handle(
    shared: Arc<Shared>,
    downstream: Downstream,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let snapshot = shared.snapshot.load_full();
    if let Some(refusal) = headers::ambiguous_framing(&request) {
        return ProxyError::BadRequest(refusal).into_response();
    }
    let mut request = request;
    // An HTTP/1.1 upgrade (WebSocket) is routed like any request, then spliced after the 101.
    let upgrade = headers::is_upgrade(&request).then(|| hyper::upgrade::on(&mut request));
    let (parts, body) = request.into_parts();

    // The thread-local RNG is borrowed only for this synchronous call.
    let decision = match route::decide(&RequestHead::of(&parts), &snapshot.tables, &mut rand::rng())
    {
        Ok(d) => d,
        Err(NoDecision::NoRoute) => {
            shared.metrics.no_route.inc();
            return ProxyError::NoRoute.into_response();
        }
        Err(NoDecision::NoVersion(r)) => {
            return ProxyError::NoVersion {
                route: snapshot.routes[r].name.clone(),
            }
            .into_response()
        }
    };

    let route_state = &snapshot.routes[decision.route];
    if let Some((limiter, refused)) = &route_state.rate_limit {
        if let Err(wait) = limiter.check(&parts.headers, downstream.peer.ip()) {
            refused.inc();
            return ProxyError::RateLimited {
                route: route_state.name.clone(),
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            }
            .into_response();
        }
    }
    // Circuit breaker: the in-flight gauge is the count (one atomic load).
    let version_state = &route_state.versions[decision.version];
    if let Some(limit) = route_state.max_requests_per_version {
        if version_state.metrics.in_flight.get() >= i64::from(limit) {
            version_state.metrics.count_status(503);
            return ProxyError::Overloaded {
                route: route_state.name.clone(),
                version: version_state.name.clone(),
                limit,
            }
            .into_response();
        }
    }
    let mut record = Record::start(snapshot.clone(), decision.route, decision.version, started);
    let log = snapshot.config.access_log;
    if log.enabled && (log.sample >= 1.0 || rand::rng().random::<f64>() < log.sample) {
        record.access = Some(Box::new(AccessEntry {
            request_id: HeaderValue::from_static("-"),
            method: parts.method.clone(),
            path: parts.uri.path_and_query().cloned(),
            reason: decision.reason,
            endpoint: None,
            bytes_in: Arc::new(AtomicU64::new(0)),
        }));
    }

    let response = match forward(
        &snapshot,
        decision,
        downstream,
        parts,
        body,
        upgrade,
        &mut record,
    )
    .await
    {
        Ok(response) => response,
        Err(error) => {
            if let ProxyError::Upstream { kind, .. } = &error {
                snapshot.routes[decision.route].versions[decision.version]
                    .metrics
                    .count_failure(*kind);
                tracing::warn!(%error, cause = ?std::error::Error::source(&error).map(|s| s.to_string()), "upstream failure");
            }
            error.into_response()
        }
    };
    record.status = response.status().as_u16();
    response.map(|body| body.with_record(record))
}

/// The request's way to the upstream and back, in phases: endpoint, head, target, body, call,
/// answer.
async fn forward(
    snapshot: &Arc<Snapshot>,
    decision: Decision,
    downstream: Downstream,
    mut parts: Parts,
    body: Incoming,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    record: &mut Record,
) -> Result<Response<ResponseBody>, ProxyError> {
    let route = &snapshot.routes[decision.route];
    let version = &route.versions[decision.version];
    let (endpoint, health) = version
        .next_endpoint()
        .ok_or_else(|| ProxyError::NoVersion {
            route: route.name.clone(),
        })?;
    record.endpoint = Some(health.clone());

    let upgrade_protocol = upgrade
        .as_ref()
        .and_then(|_| parts.headers.get(header::UPGRADE).cloned());
    let request_id = rewrite_head(&mut parts, downstream, upgrade_protocol.as_ref());
    // An upgraded connection is not copied: a shadow cannot join a WebSocket.
    let mirror = match upgrade_protocol {
        Some(_) => None,
        None => crate::data::tap::offer(snapshot, decision.route, &parts, &request_id),
    };
    let bytes_in = record.access.as_mut().map(|a| {
        a.request_id = request_id.clone();
        a.endpoint = Some(endpoint.0.clone());
        a.bytes_in.clone()
    });
    let downstream_version = parts.version;
    set_target(&mut parts, version, endpoint, upgrade_protocol.is_some())?;

    let (draft, live_capture) = mirror.unzip();
    let body = guard_body(route, &parts, body, bytes_in, draft, snapshot)?;
    let outcome = upstream::call(route, version, endpoint, parts, body.body, record).await;
    let response = match outcome {
        Ok(response) => response,
        Err(failure) => return Err(blame(route, version, failure, &body.flags, snapshot)),
    };
    let answer = Answer {
        downstream_version,
        request_id,
        live_capture,
        upgrade,
    };
    Ok(answer_with(response, route, version, answer, record))
}

/// Rewrites the request head for the upstream: hop-by-hop headers out, X-Forwarded-*, request id
/// and traceparent, Host. Returns the request id.
fn rewrite_head(
    parts: &mut Parts,
    downstream: Downstream,
    upgrade_protocol: Option<&HeaderValue>,
) -> HeaderValue {
    // The target's authority (HTTP/2 :authority, or an HTTP/1.1 absolute-form target) wins over
    // Host (RFC 9112 §3.2.2), as it did for routing; the upstream gets it as Host.
    let host = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    };
    let te_trailers = headers::wants_trailers(&parts.headers);
    let request_id = headers::forward_request(
        &mut parts.headers,
        host.as_ref(),
        downstream.peer.ip(),
        downstream.proto,
    );
    if let Some(host) = host {
        parts.headers.insert(header::HOST, host);
    }
    // gRPC needs `te: trailers` end to end; the proxy sends its own to the next hop.
    if te_trailers {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(protocol) = upgrade_protocol {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol.clone());
    }
    request_id
}

/// Points the request at the chosen endpoint: same path and query, the version's scheme and
/// HTTP version (HTTP/1.1 for an upgrade).
fn set_target(
    parts: &mut Parts,
    version: &VersionState,
    endpoint: &Endpoint,
    upgrade: bool,
) -> Result<(), ProxyError> {
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.scheme = Some(version.scheme.clone());
    uri.authority = Some(endpoint.0.clone());
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    parts.uri = Uri::from_parts(uri).map_err(|_| ProxyError::NoRoute)?;
    parts.version = if upgrade {
        http::Version::HTTP_11
    } else {
        version.http_version
    };
    Ok(())
}

/// What the request body's guards saw, read when the upstream call fails.
#[derive(Default)]
struct BodyFlags {
    too_large: Option<Arc<AtomicBool>>,
    stalled: Option<Arc<AtomicBool>>,
}

struct GuardedBody {
    body: RequestBody,
    flags: BodyFlags,
}

/// Wraps the request body in its guards: the route's size limit (413 at once when declared, or
/// while streaming), the mirror tee, the idle timeout.
fn guard_body(
    route: &RouteState,
    parts: &Parts,
    body: Incoming,
    bytes_in: Option<Arc<AtomicU64>>,
    draft: Option<crate::data::tap::Draft>,
    snapshot: &Snapshot,
) -> Result<GuardedBody, ProxyError> {
    let mut body = RequestBody::new(body, bytes_in);
    let mut flags = BodyFlags::default();
    if let Some(max) = route.max_body_bytes {
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared {
            Some(n) if n > max => {
                return Err(ProxyError::PayloadTooLarge {
                    route: route.name.clone(),
                    limit: max,
                })
            }
            Some(_) => {}
            None => {
                let flag = Arc::new(AtomicBool::new(false));
                body = body.with_limit(max, flag.clone());
                flags.too_large = Some(flag);
            }
        }
    }
    if let Some(draft) = draft {
        body = body.with_mirror(draft);
    }
    if !body.ended() {
        let flag = Arc::new(AtomicBool::new(false));
        body = body.with_idle_timeout(
            snapshot.config.limits.request_body_idle_timeout,
            flag.clone(),
        );
        flags.stalled = Some(flag);
    }
    Ok(GuardedBody { body, flags })
}

/// Names the side that failed: a request body that stalled or grew past the limit is the
/// client's; anything else is the upstream's.
fn blame(
    route: &RouteState,
    version: &VersionState,
    failure: upstream::Failure,
    flags: &BodyFlags,
    snapshot: &Snapshot,
) -> ProxyError {
    let set = |f: &Option<Arc<AtomicBool>>| f.as_ref().is_some_and(|f| f.load(Ordering::Relaxed));
    match failure {
        upstream::Failure::Error { .. } if set(&flags.stalled) => ProxyError::BodyStalled {
            route: route.name.clone(),
            timeout: snapshot.config.limits.request_body_idle_timeout,
        },
        upstream::Failure::Error { .. } if set(&flags.too_large) => ProxyError::PayloadTooLarge {
            route: route.name.clone(),
            limit: route.max_body_bytes.unwrap_or(0),
        },
        upstream::Failure::Timeout { endpoint } => ProxyError::Upstream {
            route: route.name.clone(),
            version: version.name.clone(),
            endpoint: endpoint.to_string(),
            kind: FailureKind::Timeout,
            source: None,
        },
        upstream::Failure::Error { endpoint, error } => ProxyError::Upstream {
            route: route.name.clone(),
            version: version.name.clone(),
            endpoint: endpoint.to_string(),
            kind: upstream::failure_kind(&error),
            source: Some(Box::new(error)),
        },
    }
}

/// What the answer phase needs from the request.
struct Answer {
    downstream_version: http::Version,
    request_id: HeaderValue,
    live_capture: Option<crate::data::tap::LiveSender>,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
}

/// Turns the upstream's response into the client's: the downstream's HTTP version, hop-by-hop
/// headers out, request id, version header, the live capture for the comparison, and the splice
/// of an upgraded connection.
fn answer_with(
    mut response: Response<Incoming>,
    route: &RouteState,
    version: &VersionState,
    answer: Answer,
    record: &mut Record,
) -> Response<ResponseBody> {
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        if let Some(downstream_upgrade) = answer.upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(splice(downstream_upgrade, upstream_upgrade));
        }
    }
    let (mut parts, body) = response.into_parts();
    // The downstream connection keeps its own protocol: an HTTP/1.0 upstream answer must not
    // make hyper close a keep-alive client connection.
    parts.version = answer.downstream_version;
    let switching = parts.status == http::StatusCode::SWITCHING_PROTOCOLS;
    let upgraded_to = parts.headers.get(header::UPGRADE).cloned();
    headers::remove_hop_by_hop(&mut parts.headers);
    if let (true, Some(protocol)) = (switching, upgraded_to) {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol);
    }
    if headers::grpc_failed(&parts.headers) {
        record.grpc_failure = true;
    }
    parts
        .headers
        .entry(&X_REQUEST_ID)
        .or_insert(answer.request_id);
    if route.expose_version_header {
        parts
            .headers
            .insert(X_SWITCHYARD_VERSION.clone(), version.name_header.clone());
    }
    let mut body = ResponseBody::upstream(body);
    if let (Some(tx), Some(m)) = (answer.live_capture, &route.mirror) {
        body = body.with_capture(crate::data::body::Capture::new(
            tx,
            (parts.status.as_u16(), parts.headers.clone()),
            m.settings.compare_body_bytes,
            record.started(),
        ));
    }
    Response::from_parts(parts, body)
}

/// Copies bytes both ways between the client and the upstream after a 101, until either closes.
async fn splice(downstream: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (down, up) = match tokio::try_join!(downstream, upstream) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(%error, "upgrade did not complete");
            return;
        }
    };
    let mut down = hyper_util::rt::TokioIo::new(down);
    let mut up = hyper_util::rt::TokioIo::new(up);
    if let Err(error) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
        tracing::debug!(%error, "upgraded connection ended with an error");
    }
}
