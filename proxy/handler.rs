//! One request, in named phases: load the snapshot once, decide, rewrite headers, call the
//! upstream under its timeout, answer. Every failure goes through `ProxyError::into_response`.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::uri::{PathAndQuery, Scheme};
use http::{header, HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;

use crate::body::ResponseBody;
use crate::error::ProxyError;
use crate::headers::{self, X_REQUEST_ID, X_SWITCHYARD_VERSION};
use crate::route::{self, NoDecision, RequestHead};
use crate::snapshot::Snapshot;
use crate::upstream::FailureKind;

/// What every request handler shares.
pub struct Shared {
    /// The current snapshot; the control plane is its only writer.
    pub snapshot: ArcSwap<Snapshot>,
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
    let snapshot = shared.snapshot.load_full();
    match forward(&snapshot, downstream, request).await {
        Ok(response) => response,
        Err(error) => {
            if let ProxyError::Upstream { .. } = error {
                tracing::warn!(error = %error, source = ?std::error::Error::source(&error).map(|s| s.to_string()), "upstream failure");
            }
            error.into_response()
        }
    }
}

async fn forward(
    snapshot: &Snapshot,
    downstream: Downstream,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let (mut parts, body) = request.into_parts();

    // Decide. The thread-local RNG is borrowed only for this synchronous call.
    let decision = route::decide(&RequestHead::of(&parts), &snapshot.tables, &mut rand::rng())
        .map_err(|e| match e {
            NoDecision::NoRoute => ProxyError::NoRoute,
            NoDecision::NoVersion(r) => ProxyError::NoVersion {
                route: snapshot.routes[r].name.clone(),
            },
        })?;
    let route = &snapshot.routes[decision.route];
    let version = &route.versions[decision.version];
    let endpoint = version
        .next_endpoint()
        .ok_or_else(|| ProxyError::NoVersion {
            route: route.name.clone(),
        })?;

    // Headers. HTTP/2 clients send :authority instead of Host; the upstream gets it as Host.
    let host = match parts.headers.get(header::HOST) {
        Some(h) => Some(h.clone()),
        None => parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    let request_id = headers::forward_request(
        &mut parts.headers,
        host.as_ref(),
        downstream.peer.ip(),
        downstream.proto,
    );
    if let Some(host) = &host {
        parts.headers.insert(header::HOST, host.clone());
    }

    // Target: same path and query on the chosen endpoint.
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(endpoint.0.clone());
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    parts.uri = Uri::from_parts(uri).map_err(|_| ProxyError::NoRoute)?;
    parts.version = http::Version::HTTP_11;

    tracing::debug!(route = %route.name, version = %version.name, reason = decision.reason.as_str(), endpoint = %endpoint, "forwarding");

    let call = version.client.request(Request::from_parts(parts, body));
    let upstream_error = |kind, source| ProxyError::Upstream {
        route: route.name.clone(),
        version: version.name.clone(),
        endpoint: endpoint.to_string(),
        kind,
        source,
    };
    let response = match tokio::time::timeout(route.timeouts.response_header, call).await {
        Err(_elapsed) => return Err(upstream_error(FailureKind::Timeout, None)),
        Ok(Err(e)) => return Err(upstream_error(FailureKind::of(&e), Some(e))),
        Ok(Ok(response)) => response,
    };

    let (mut parts, body) = response.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    parts.headers.entry(&X_REQUEST_ID).or_insert(request_id);
    if route.expose_version_header {
        parts
            .headers
            .insert(X_SWITCHYARD_VERSION.clone(), version.name_header.clone());
    }
    Ok(Response::from_parts(parts, ResponseBody::Upstream(body)))
}
