//! One request, in named phases: refuse a malformed head, load the snapshot once, decide, start
//! the record, rewrite headers, call the upstream under its timeout, check the answer's framing,
//! answer. Every failure goes through `ProxyError::into_response`, blamed on the side that caused
//! it; every routed request is measured by its `Record`.

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use http::request::Parts;
use http::uri::PathAndQuery;
use http::{header, HeaderValue, Request, Response, Uri};

use crate::data::upstream::UpstreamBody;
use rand::Rng;

use crate::config::Endpoint;
use crate::data::body::{RequestBody, ResponseBody};
use crate::data::error::ProxyError;
use crate::data::fault::{DownstreamFault, FaultCell, Refusal};
use crate::data::forwarding::{self, Added};
use crate::data::headers::{self, X_REQUEST_ID, X_SWITCHYARD_VERSION};
use crate::data::present::Present;
use crate::data::record::{AccessEntry, Record};
use crate::data::shared::{Downstream, Inbound, Shared};
use crate::data::snapshot::Snapshot;
use crate::data::snapshot::{RouteState, VersionState};
use crate::data::upstream::{self, FailureKind};
use crate::route::{self, Decision, NoDecision, RequestHead};

/// Proxies one request. Never fails: errors become responses.
///
/// This function and the ones it awaits down to the upstream call are plain functions returning
/// `async move` blocks: an `async fn` keeps each argument twice in its state (as captured, and as
/// moved into its body), and the request's head and body are large; each copy is a `memcpy` per
/// request and room in the boxed future.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub fn handle(
    shared: Arc<Shared>,
    downstream: Downstream,
    mut request: Request<Inbound>,
) -> impl Future<Output = Response<ResponseBody>> + Send {
    async move {
        let started = Instant::now();
        let present = Present::scan(request.headers());
        if let Some(refused) = refuse_head(&shared, &request, &present) {
            return refused.into_response();
        }
        let snapshot = shared.snapshot.load_full();
        // An HTTP/1.1 upgrade (WebSocket) is routed like any request, then spliced after the 101.
        let upgrade = (present.connection && present.upgrade && headers::is_upgrade(&request))
            .then(|| hyper::upgrade::on(&mut request));
        let (parts, body) = request.into_parts();

        // The thread-local RNG is borrowed only for this synchronous call.
        let decision = match route::decide(
            &route_head(&parts, &present),
            &snapshot.tables,
            &mut rand::rng(),
        ) {
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

        let head = Head {
            parts,
            present,
            upgrade,
        };
        let response = match forward(&snapshot, decision, &downstream, head, body, &mut record)
            .await
        {
            Ok(response) => response,
            Err(error) => {
                record.blame = error.blame();
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
}

/// What the proxy refuses before routing: an ambiguous or malformed head (400), a method or
/// transfer coding it does not implement (501). Counted as refused, by kind.
fn refuse_head(
    shared: &Shared,
    request: &Request<Inbound>,
    present: &Present,
) -> Option<ProxyError> {
    let refused = match headers::ambiguous_framing(request, present.host_lines) {
        Some(reason) => ProxyError::BadRequest(reason),
        None => match crate::data::strict::check(request, present) {
            Ok(()) => return None,
            Err(crate::data::strict::Refused::BadRequest(reason)) => ProxyError::BadRequest(reason),
            Err(crate::data::strict::Refused::NotImplemented(reason)) => {
                ProxyError::NotImplemented(reason)
            }
        },
    };
    let kind = match refused {
        ProxyError::NotImplemented(_) => Refusal::Unsupported,
        _ => Refusal::Malformed,
    };
    shared.metrics.downstream.refused(kind);
    Some(refused)
}

/// What routing reads of a request: its target, or its first `Host` line, and its head.
fn route_head<'a>(parts: &'a Parts, present: &'a Present) -> RequestHead<'a> {
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| present.host.as_ref().and_then(|h| h.to_str().ok()));
    RequestHead {
        host,
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
    }
}

/// A request head as it arrived, what one pass over its lines found, and its upgrade if it
/// offered one the proxy passes on.
struct Head {
    parts: Parts,
    present: Present,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
}

/// The request's way to the upstream and back, in phases: endpoint, head, target, body, call,
/// answer.
#[allow(clippy::manual_async_fn)] // on purpose: see `handle`
fn forward<'a>(
    snapshot: &'a Arc<Snapshot>,
    decision: Decision,
    downstream: &'a Downstream,
    head: Head,
    body: Inbound,
    record: &'a mut Record,
) -> impl Future<Output = Result<Response<ResponseBody>, ProxyError>> + Send + 'a {
    // Taken apart here, not in the block: a field moved out there would be held twice in its state.
    let Head {
        mut parts,
        present,
        upgrade,
    } = head;
    async move {
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
            .and_then(|_| parts.headers.get(header::UPGRADE))
            .and_then(headers::upgrade_without_h2c);
        let (request_id, added) =
            rewrite_head(&mut parts, downstream, present, upgrade_protocol.as_ref());
        // An upgraded connection is not copied: a shadow cannot join a WebSocket.
        let mirror = match upgrade_protocol {
            Some(_) => None,
            None => crate::data::tap::offer(snapshot, decision.route, &parts, &added, &request_id),
        };
        let bytes_in = record.access.as_mut().map(|a| {
            a.request_id = request_id.clone();
            a.endpoint = Some(endpoint.0.clone());
            a.bytes_in.clone()
        });
        let downstream_version = parts.version;
        set_target(&mut parts, version, endpoint, upgrade_protocol.is_some())?;

        let (draft, live_capture) = mirror.unzip();
        let GuardedBody { body, fault } =
            guard_body(route, &parts, body, bytes_in, draft, snapshot, downstream)?;
        record.body_fault = fault.clone();
        let outcome = upstream::call(route, version, endpoint, (parts, added), body, record).await;
        let response = match outcome {
            Ok(response) => response,
            Err(failure) => {
                let fault = fault.and_then(|f| f.get());
                return Err(blame(route, version, failure, fault, snapshot, downstream));
            }
        };
        let response = check_answer(response, route, version, endpoint, upgrade.is_some())?;
        let answer = Answer {
            downstream_version,
            request_id,
            live_capture,
            upgrade,
        };
        Ok(answer_with(response, route, version, answer, record))
    }
}

/// Rewrites the request head for the upstream: hop-by-hop headers out, X-Forwarded-*, request id
/// and traceparent, Host. Returns the request id.
fn rewrite_head(
    parts: &mut Parts,
    downstream: &Downstream,
    mut present: Present,
    upgrade_protocol: Option<&HeaderValue>,
) -> (HeaderValue, Added) {
    // The target's authority (HTTP/2 :authority, or an HTTP/1.1 absolute-form target) wins over
    // Host (RFC 9112 §3.2.2), as it did for routing; the upstream gets it as Host. Otherwise the
    // one Host line stays as it is (several were refused), unless `Connection` named it.
    let (host, set_host) = match parts.uri.authority() {
        Some(a) => (HeaderValue::from_str(a.as_str()).ok(), true),
        None => (present.host.take(), present.connection),
    };
    let te_trailers = present.te && headers::wants_trailers(&parts.headers);
    let (request_id, added) = forwarding::forward_request(
        &mut parts.headers,
        &present,
        host.as_ref(),
        &downstream.peer_ip,
        downstream.proto,
    );
    if let (Some(host), true) = (host, set_host) {
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
    (request_id, added)
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

/// The request body on its way upstream, and where it records the client's fault.
struct GuardedBody {
    body: RequestBody,
    /// Present when there is a body to fail.
    fault: Option<Arc<FaultCell>>,
}

/// Wraps the request body in its guards: the route's size limit (413 at once when declared or
/// when a chunk is announced past it, or while streaming), the mirror tee, the idle timeout, and
/// the record of the client's fault. A body whose framing the connection already refused is
/// answered 400 before anything is sent upstream.
fn guard_body(
    route: &RouteState,
    parts: &Parts,
    body: Inbound,
    bytes_in: Option<Arc<AtomicU64>>,
    draft: Option<crate::data::tap::Draft>,
    snapshot: &Snapshot,
    downstream: &Downstream,
) -> Result<GuardedBody, ProxyError> {
    let mut body = RequestBody::new(body, bytes_in);
    if let Some(error) = downstream.conn.as_ref().and_then(|c| c.framing_error()) {
        return Err(ProxyError::BadBody {
            route: route.name.clone(),
            fault: DownstreamFault::Malformed,
            detail: Some(error),
        });
    }
    let too_large = || ProxyError::PayloadTooLarge {
        route: route.name.clone(),
        limit: route.max_body_bytes.unwrap_or(0),
    };
    if let Some(max) = route.max_body_bytes {
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared {
            Some(n) if n > max => return Err(too_large()),
            Some(_) => {}
            None => {
                body = body.with_limit(max);
                if let Some(conn) = &downstream.conn {
                    body = body.with_conn(conn.clone());
                }
                if body.announced_past_limit() {
                    return Err(too_large());
                }
            }
        }
    }
    if let Some(draft) = draft {
        body = body.with_mirror(draft);
    }
    let mut fault = None;
    if body.streamed() {
        let cell = Arc::new(FaultCell::default());
        body = body
            .with_idle_timeout(snapshot.config.limits.request_body_idle_timeout)
            .with_fault(cell.clone());
        fault = Some(cell);
    }
    Ok(GuardedBody { body, fault })
}

/// Names the side that failed: a request body that failed by the client (malformed, truncated,
/// abandoned, stalled, past the limit) is the client's, answered 4xx; anything else is the
/// upstream's.
fn blame(
    route: &RouteState,
    version: &VersionState,
    failure: upstream::Failure,
    fault: Option<DownstreamFault>,
    snapshot: &Snapshot,
    downstream: &Downstream,
) -> ProxyError {
    match (failure, fault) {
        (_, Some(DownstreamFault::Stalled)) => ProxyError::BodyStalled {
            route: route.name.clone(),
            timeout: snapshot.config.limits.request_body_idle_timeout,
        },
        (_, Some(DownstreamFault::TooLarge)) => ProxyError::PayloadTooLarge {
            route: route.name.clone(),
            limit: route.max_body_bytes.unwrap_or(0),
        },
        (_, Some(fault)) => ProxyError::BadBody {
            route: route.name.clone(),
            fault,
            detail: downstream.conn.as_ref().and_then(|c| c.framing_error()),
        },
        (upstream::Failure::Timeout { endpoint }, None) => ProxyError::Upstream {
            route: route.name.clone(),
            version: version.name.clone(),
            endpoint: endpoint.to_string(),
            kind: FailureKind::Timeout,
            source: None,
        },
        (upstream::Failure::Error { endpoint, error }, None) => ProxyError::Upstream {
            route: route.name.clone(),
            version: version.name.clone(),
            endpoint: endpoint.to_string(),
            kind: upstream::failure_kind(&error),
            source: Some(Box::new(error)),
        },
    }
}

/// Checks the framing of the upstream's answer (RFC 9112 §6): a `101` to a request that offered
/// no upgrade, or a transfer coding other than chunked (which would reach the client undecoded
/// under a framing that no longer says so), is an invalid response. A `Content-Length` next to
/// `Transfer-Encoding` is removed: hyper framed the body by the encoding, and the client gets the
/// body with one framing only.
fn check_answer(
    mut response: Response<UpstreamBody>,
    route: &RouteState,
    version: &VersionState,
    endpoint: &Endpoint,
    upgrade: bool,
) -> Result<Response<UpstreamBody>, ProxyError> {
    let invalid = || ProxyError::Upstream {
        route: route.name.clone(),
        version: version.name.clone(),
        endpoint: endpoint.to_string(),
        kind: FailureKind::Protocol,
        source: None,
    };
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS && !upgrade {
        return Err(invalid());
    }
    let h = response.headers_mut();
    if h.contains_key(header::TRANSFER_ENCODING) {
        let codings: Vec<&[u8]> = h
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|c| !c.is_empty())
            .collect();
        if !matches!(codings[..], [c] if c.eq_ignore_ascii_case(b"chunked")) {
            return Err(invalid());
        }
        h.remove(header::CONTENT_LENGTH);
    }
    Ok(response)
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
    mut response: Response<UpstreamBody>,
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
    let upgraded_to = switching
        .then(|| parts.headers.get(header::UPGRADE).cloned())
        .flatten();
    headers::remove_hop_by_hop(&mut parts.headers);
    if let Some(protocol) = upgraded_to {
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
