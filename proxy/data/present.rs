//! Which of the header lines the proxy looks for a head carries, found in one pass.
//!
//! A `HeaderMap` lookup hashes the name and probes the table; a request used to look up `Host`
//! five times (refusal, authority check, routing, forwarding, `X-Forwarded-Host`), `Connection`,
//! `Upgrade`, `TE` and `Transfer-Encoding` once or twice each, and the five forwarding headers to
//! replace or keep them, though most requests carry none of them but `Host`. One walk over the
//! head's lines, comparing names (a byte compare for the standard ones, lengths first for the
//! others), tells which are there; each is then read only when it is.

use http::header::{self, HeaderMap, HeaderValue};

use crate::data::headers::{
    TRACEPARENT, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUEST_ID,
};

/// What one pass over a head found.
#[derive(Debug, Default)]
pub struct Present {
    /// The first `Host` line.
    pub host: Option<HeaderValue>,
    /// How many `Host` lines, counted up to 255.
    pub host_lines: u8,
    /// A `Connection` line.
    pub connection: bool,
    /// An `Upgrade` line.
    pub upgrade: bool,
    /// A `TE` line.
    pub te: bool,
    /// A `Transfer-Encoding` line.
    pub transfer_encoding: bool,
    /// Lines the forwarding rewrite replaces or keeps: `X-Forwarded-For`, `X-Forwarded-Proto`,
    /// `X-Forwarded-Host`, `traceparent`, `x-request-id`.
    pub forwarded_for: bool,
    pub forwarded_proto: bool,
    pub forwarded_host: bool,
    pub traceparent: bool,
    pub request_id: bool,
}

impl Present {
    /// Walks the head's lines once.
    pub fn scan(headers: &HeaderMap) -> Self {
        let mut present = Present::default();
        for (name, value) in headers {
            if name == header::HOST {
                if present.host_lines == 0 {
                    present.host = Some(value.clone());
                }
                present.host_lines = present.host_lines.saturating_add(1);
            } else if name == header::CONNECTION {
                present.connection = true;
            } else if name == header::UPGRADE {
                present.upgrade = true;
            } else if name == header::TE {
                present.te = true;
            } else if name == header::TRANSFER_ENCODING {
                present.transfer_encoding = true;
            } else if name == X_FORWARDED_FOR {
                present.forwarded_for = true;
            } else if name == X_FORWARDED_PROTO {
                present.forwarded_proto = true;
            } else if name == X_FORWARDED_HOST {
                present.forwarded_host = true;
            } else if name == TRACEPARENT {
                present.traceparent = true;
            } else if name == X_REQUEST_ID {
                present.request_id = true;
            }
        }
        present
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_finds_each_line_the_proxy_reads() {
        let mut h = HeaderMap::new();
        assert!(!Present::scan(&h).connection);
        h.append("Host", HeaderValue::from_static("a.example"));
        h.append("accept", HeaderValue::from_static("*/*"));
        h.append("HOST", HeaderValue::from_static("b.example"));
        h.append("te", HeaderValue::from_static("trailers"));
        let p = Present::scan(&h);
        assert_eq!(p.host.as_ref().unwrap(), "a.example");
        assert_eq!(p.host_lines, 2);
        assert!(p.te && !p.connection && !p.upgrade && !p.transfer_encoding);
        h.append("connection", HeaderValue::from_static("upgrade"));
        h.append("upgrade", HeaderValue::from_static("websocket"));
        h.append("transfer-encoding", HeaderValue::from_static("chunked"));
        let p = Present::scan(&h);
        assert!(p.connection && p.upgrade && p.transfer_encoding);
        assert!(!p.forwarded_for && !p.request_id);
        for name in [
            "x-forwarded-for",
            "X-Forwarded-Proto",
            "x-forwarded-host",
            "traceparent",
            "x-request-id",
        ] {
            h.append(name, HeaderValue::from_static("v"));
        }
        let p = Present::scan(&h);
        assert!(p.forwarded_for && p.forwarded_proto && p.forwarded_host);
        assert!(p.traceparent && p.request_id);
    }
}
