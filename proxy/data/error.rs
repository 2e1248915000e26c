//! Proxy failures and the one place their status codes and bodies are chosen.

use http::{header, HeaderValue, Response, StatusCode};

use crate::data::body::ResponseBody;
use crate::data::fault::{Blame, DownstreamFault};
use crate::data::upstream::FailureKind;

/// A request the proxy answers itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request is malformed or ambiguous.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The request asks for a method or transfer coding the proxy does not implement.
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
    /// The client's request body failed: malformed framing, or it ended or was abandoned early.
    #[error("route {route}: the request body is {}{}", fault.as_str(), detail.map(|d| format!(": {d}")).unwrap_or_default())]
    BadBody {
        /// Route name.
        route: String,
        /// What the client did wrong.
        fault: DownstreamFault,
        /// What was wrong with its framing, when the connection's scanner found it.
        detail: Option<crate::data::framing::FramingError>,
    },
    /// No route matched host and path.
    #[error("no route matches this host and path")]
    NoRoute,
    /// The version has as many requests in flight as its circuit breaker allows.
    #[error("route {route}: version {version} is at its limit of {limit} requests in flight")]
    Overloaded {
        /// Route name.
        route: String,
        /// Version name.
        version: String,
        /// The limit.
        limit: u32,
    },
    /// The client is over the route's rate limit.
    #[error("route {route}: rate limit exceeded; retry after {retry_after_secs} s")]
    RateLimited {
        /// Route name.
        route: String,
        /// Seconds until a token is available (at least 1).
        retry_after_secs: u64,
    },
    /// The client stopped sending its request body.
    #[error("route {route}: the request body stalled for longer than {} s", timeout.as_secs())]
    BodyStalled {
        /// Route name.
        route: String,
        /// The limit.
        timeout: std::time::Duration,
    },
    /// The request body is larger than the route allows.
    #[error("route {route}: request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// Route name.
        route: String,
        /// The route's limit.
        limit: u64,
    },
    /// The route matched but no version has a positive weight.
    #[error("route {route}: no version has traffic weight")]
    NoVersion {
        /// Route name.
        route: String,
    },
    /// The upstream failed before a complete response head.
    #[error("route {route}: version {version}: upstream {endpoint}: {}", kind.describe())]
    Upstream {
        /// Route name.
        route: String,
        /// Version name.
        version: String,
        /// `host:port`.
        endpoint: String,
        /// What failed.
        kind: FailureKind,
        /// The underlying error, for logs.
        #[source]
        // Boxed: the client's error is large, and every `Result<_, ProxyError>` carries it.
        source: Option<Box<crate::data::upstream::CallError>>,
    },
}

impl ProxyError {
    /// The status this failure is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) | ProxyError::BadBody { .. } => StatusCode::BAD_REQUEST,
            ProxyError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::BodyStalled { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NoVersion { .. } | ProxyError::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Upstream { kind, .. } => match kind {
                FailureKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
                FailureKind::Connect | FailureKind::Reset | FailureKind::Protocol => {
                    StatusCode::BAD_GATEWAY
                }
            },
        }
    }

    /// The side this failure is blamed on: what it counts toward (see [`crate::data::fault`]).
    pub fn blame(&self) -> Blame {
        match self {
            ProxyError::Upstream { kind, .. } => Blame::Upstream(Some(*kind)),
            ProxyError::BadBody { fault, .. } => Blame::Downstream(*fault),
            ProxyError::BodyStalled { .. } => Blame::Downstream(DownstreamFault::Stalled),
            ProxyError::PayloadTooLarge { .. } => Blame::Downstream(DownstreamFault::TooLarge),
            ProxyError::BadRequest(_) | ProxyError::NotImplemented(_) => {
                Blame::Downstream(DownstreamFault::Malformed)
            }
            ProxyError::NoVersion { .. } | ProxyError::Overloaded { .. } => Blame::Proxy,
            ProxyError::NoRoute | ProxyError::RateLimited { .. } => Blame::None,
        }
    }

    /// The plain-text response: status and one line naming the route and the cause.
    pub fn into_response(self) -> Response<ResponseBody> {
        let status = self.status();
        let retry_after = match &self {
            ProxyError::RateLimited {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        };
        let close = matches!(
            self,
            ProxyError::BadRequest(_)
                | ProxyError::NotImplemented(_)
                | ProxyError::BadBody { .. }
                | ProxyError::PayloadTooLarge { .. }
                | ProxyError::BodyStalled { .. }
        );
        let mut response = Response::new(ResponseBody::text(format!("switchyard: {self}\n")));
        *response.status_mut() = status;
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if close {
            // After an ambiguous request the rest of the connection cannot be trusted.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(kind: FailureKind) -> ProxyError {
        ProxyError::Upstream {
            route: "shop".into(),
            version: "canary".into(),
            endpoint: "127.0.0.1:9".into(),
            kind,
            source: None,
        }
    }

    #[test]
    fn each_failure_has_its_status() {
        assert_eq!(ProxyError::NoRoute.status(), 404);
        assert_eq!(ProxyError::BadRequest("x").status(), 400);
        let too_large = ProxyError::PayloadTooLarge {
            route: "r".into(),
            limit: 1,
        };
        assert_eq!(too_large.status(), 413);
        assert_eq!(ProxyError::NoVersion { route: "r".into() }.status(), 503);
        assert_eq!(upstream(FailureKind::Connect).status(), 502);
        assert_eq!(upstream(FailureKind::Reset).status(), 502);
        assert_eq!(upstream(FailureKind::Protocol).status(), 502);
        assert_eq!(upstream(FailureKind::Timeout).status(), 504);
        assert_eq!(ProxyError::NotImplemented("x").status(), 501);
        let stalled = ProxyError::BodyStalled {
            route: "r".into(),
            timeout: std::time::Duration::from_secs(1),
        };
        assert_eq!(stalled.status(), 408);
        for fault in [
            DownstreamFault::Malformed,
            DownstreamFault::Truncated,
            DownstreamFault::Closed,
        ] {
            let bad = ProxyError::BadBody {
                route: "r".into(),
                fault,
                detail: None,
            };
            assert_eq!(bad.status(), 400);
        }
    }

    #[test]
    fn each_failure_is_blamed_on_its_side() {
        assert_eq!(
            upstream(FailureKind::Protocol).blame(),
            Blame::Upstream(Some(FailureKind::Protocol))
        );
        let bad = ProxyError::BadBody {
            route: "shop".into(),
            fault: DownstreamFault::Malformed,
            detail: Some(crate::data::framing::FramingError::ChunkSize),
        };
        assert_eq!(bad.blame(), Blame::Downstream(DownstreamFault::Malformed));
        assert_eq!(
            bad.to_string(),
            "route shop: the request body is malformed: chunk size is not hexadecimal digits"
        );
        let too_large = ProxyError::PayloadTooLarge {
            route: "r".into(),
            limit: 1,
        };
        assert_eq!(
            too_large.blame(),
            Blame::Downstream(DownstreamFault::TooLarge)
        );
        assert_eq!(
            ProxyError::NoVersion { route: "r".into() }.blame(),
            Blame::Proxy
        );
    }

    #[test]
    fn body_names_route_version_and_cause() {
        assert_eq!(
            upstream(FailureKind::Timeout).to_string(),
            "route shop: version canary: upstream 127.0.0.1:9: timed out"
        );
    }
}
