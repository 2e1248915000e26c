//! One request, in named phases: load the snapshot once, decide, start the record, rewrite
//! headers, call the upstream under its timeout, answer. Every failure goes through
//! `ProxyError::into_response`; every routed request is measured by its `Record`.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{header, HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use rand::Rng;

use crate::body::{RequestBody, ResponseBody};
use crate::error::ProxyError;
use crate::headers::{self, X_REQUEST_ID, X_SWITCHYARD_VERSION};
use crate::metrics::Metrics;
use crate::record::{AccessEntry, Record};
use crate::route::{self, Decision, NoDecision, RequestHead};
use crate::snapshot::Snapshot;
use crate::upstream::FailureKind;

/// What every request handler shares.
pub struct Shared {
    /// The current snapshot; the control task is its only writer.
    pub snapshot: ArcSwap<Snapshot>,
    /// Process-wide metric families.
    pub metrics: Arc<Metrics>,
}

/// Where a request came from.
#[derive(Debug, Clone, Copy)]
pub struct Downstream {
    /// The client's address.
    pub peer: SocketAddr,
    /// `http` or `https`.
    pub proto: &'static str,
}

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

    // Headers. The target's authority (HTTP/2 :authority, or an HTTP/1.1 absolute-form target)
    // wins over Host (RFC 9112 §3.2.2), as it did for routing; the upstream gets it as Host.
    let host = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    };
    let te_trailers = headers::wants_trailers(&parts.headers);
    let upgrade_protocol = upgrade
        .as_ref()
        .and_then(|_| parts.headers.get(header::UPGRADE).cloned());
    let request_id = headers::forward_request(
        &mut parts.headers,
        host.as_ref(),
        downstream.peer.ip(),
        downstream.proto,
    );
    if let Some(host) = &host {
        parts.headers.insert(header::HOST, host.clone());
    }
    // gRPC needs `te: trailers` end to end; the proxy sends its own to the next hop.
    if te_trailers {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(protocol) = &upgrade_protocol {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol.clone());
    }
    // An upgraded connection is not copied: a shadow cannot join a WebSocket.
    let mirror = match upgrade_protocol {
        Some(_) => None,
        None => crate::mirror::offer(snapshot, decision.route, &parts, &request_id),
    };
    let bytes_in = record.access.as_mut().map(|a| {
        a.request_id = request_id.clone();
        a.endpoint = Some(endpoint.0.clone());
        a.bytes_in.clone()
    });

    // Target: same path and query on the chosen endpoint.
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.scheme = Some(version.scheme.clone());
    uri.authority = Some(endpoint.0.clone());
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    parts.uri = Uri::from_parts(uri).map_err(|_| ProxyError::NoRoute)?;
    let downstream_version = parts.version;
    parts.version = if upgrade_protocol.is_some() {
        http::Version::HTTP_11
    } else {
        version.http_version
    };

    let mut body = RequestBody::new(body, bytes_in);
    let mut too_large = None;
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
                let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
                body = body.with_limit(max, flag.clone());
                too_large = Some(flag);
            }
        }
    }
    let live_capture = match mirror {
        Some((draft, live)) => {
            body = body.with_mirror(draft);
            Some(live)
        }
        None => None,
    };
    let idle_timeout = snapshot.config.limits.request_body_idle_timeout;
    let stalled = (!body.ended()).then(|| Arc::new(std::sync::atomic::AtomicBool::new(false)));
    if let Some(flag) = &stalled {
        body = body.with_idle_timeout(idle_timeout, flag.clone());
    }
    // A retry needs the head again: kept only for idempotent requests without a body, on routes
    // with retries and versions with another endpoint to try.
    let retry_head = match route.retries {
        Some(r) if idempotent(&parts.method) && body.ended() && version.endpoints.len() > 1 => {
            Some((
                r,
                parts.method.clone(),
                parts.uri.clone(),
                parts.headers.clone(),
                parts.version,
            ))
        }
        _ => None,
    };
    let deadline = tokio::time::Instant::now() + route.timeouts.response_header;
    let call = version.client.request(Request::from_parts(parts, body));
    let mut endpoint = endpoint;
    let upstream_error = |endpoint: &crate::config::Endpoint, kind, source| ProxyError::Upstream {
        route: route.name.clone(),
        version: version.name.clone(),
        endpoint: endpoint.to_string(),
        kind,
        source,
    };
    let mut outcome = tokio::time::timeout_at(deadline, call).await;
    let mut attempt = 0;
    while let (Some((retries, method, uri, headers, http_version)), Ok(Err(e))) =
        (&retry_head, &outcome)
    {
        if FailureKind::of(e) != FailureKind::Connect || attempt >= retries.attempts {
            break;
        }
        // The budget: retries in flight stay under a share of the requests in flight (at least
        // 3), so retries cannot multiply an outage.
        let in_flight = version.metrics.in_flight.get().max(0) as u64;
        let allowed = (in_flight * u64::from(retries.budget_percent) / 100).max(3);
        let active = version
            .retries_in_flight
            .load(std::sync::atomic::Ordering::Relaxed);
        if u64::from(active) >= allowed {
            break;
        }
        let Some((next, health)) = version.next_endpoint().filter(|(e, _)| *e != endpoint) else {
            break;
        };
        attempt += 1;
        endpoint = next;
        // The endpoint that refused the connection counts it towards its ejection.
        if let Some(failed) = record.endpoint.replace(health.clone()) {
            failed.observe(true);
        }
        version.metrics.retries.inc();
        let mut target = uri.clone().into_parts();
        target.authority = Some(next.0.clone());
        let Ok(target) = Uri::from_parts(target) else {
            break;
        };
        let mut request = Request::new(RequestBody::empty());
        *request.method_mut() = method.clone();
        *request.uri_mut() = target;
        *request.headers_mut() = headers.clone();
        *request.version_mut() = *http_version;
        version
            .retries_in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        outcome = tokio::time::timeout_at(deadline, version.client.request(request)).await;
        version
            .retries_in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
    let response = match outcome {
        Err(_elapsed) => return Err(upstream_error(endpoint, FailureKind::Timeout, None)),
        Ok(Err(_)) if stalled.is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed)) => {
            return Err(ProxyError::BodyStalled {
                route: route.name.clone(),
                timeout: idle_timeout,
            })
        }
        Ok(Err(_)) if too_large.is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed)) => {
            return Err(ProxyError::PayloadTooLarge {
                route: route.name.clone(),
                limit: route.max_body_bytes.unwrap_or(0),
            })
        }
        Ok(Err(e)) => return Err(upstream_error(endpoint, FailureKind::of(&e), Some(e))),
        Ok(Ok(response)) => response,
    };

    let mut response = response;
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        if let Some(downstream_upgrade) = upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(splice(downstream_upgrade, upstream_upgrade));
        }
    }
    let (mut parts, body) = response.into_parts();
    // The downstream connection keeps its own protocol: an HTTP/1.0 upstream answer must not
    // make hyper close a keep-alive client connection.
    parts.version = downstream_version;
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
    parts.headers.entry(&X_REQUEST_ID).or_insert(request_id);
    if route.expose_version_header {
        parts
            .headers
            .insert(X_SWITCHYARD_VERSION.clone(), version.name_header.clone());
    }
    let mut body = ResponseBody::upstream(body);
    if let (Some(tx), Some(m)) = (live_capture, &route.mirror) {
        body = body.with_capture(crate::body::Capture::new(
            tx,
            (parts.status.as_u16(), parts.headers.clone()),
            m.settings.compare_body_bytes,
            record.started(),
        ));
    }
    Ok(Response::from_parts(parts, body))
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

/// Methods a retry cannot turn into a duplicate side effect (RFC 9110 §9.2.2).
fn idempotent(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
            | http::Method::TRACE
    )
}
