//! Target URLs: parsing them and the loopback rule.
//!
//! A load generator on a shared machine must never send traffic anywhere but this machine, so a
//! target is accepted only when its host is a loopback IP literal (127.0.0.0/8 or `::1`) or the
//! name `localhost`, which is mapped to 127.0.0.1 without asking a resolver. No DNS lookup is ever
//! made. Only `http://` is supported. What leaves this module is a [`Target`]: the socket address
//! to connect to and the request-target pieces, checked once before the run starts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;

/// Why a target URL was refused.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The text is not a URL.
    #[error("target {url:?}: not a valid URL")]
    Invalid {
        /// The URL as given.
        url: String,
        /// What the URI parser said.
        #[source]
        source: http::uri::InvalidUri,
    },
    /// The scheme is missing or is not `http`.
    #[error("target {url:?}: only http:// URLs are supported")]
    NotHttp {
        /// The URL as given.
        url: String,
    },
    /// The URL has no host, or port 0.
    #[error("target {url:?}: a host and a port from 1 to 65535 are required")]
    NoHost {
        /// The URL as given.
        url: String,
    },
    /// The host is not a loopback address.
    #[error(
        "target {url:?}: host {host:?} is not a loopback address; \
         only 127.0.0.0/8, ::1 and localhost may be load-tested"
    )]
    NotLoopback {
        /// The URL as given.
        url: String,
        /// The host that was refused.
        host: String,
    },
}

/// One checked target URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as given, for the report.
    pub url: String,
    /// Where connections go: always a loopback address.
    pub addr: SocketAddr,
    /// `host[:port]` as written in the URL: the Host header and the HTTP/2 `:authority`.
    pub authority: Authority,
    /// Path and query sent on every request (`/` when the URL has none).
    pub path_and_query: PathAndQuery,
}

impl Target {
    /// Parses `url` and applies the loopback rule.
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        let uri: Uri = url.parse().map_err(|source| TargetError::Invalid {
            url: url.to_string(),
            source,
        })?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(TargetError::NotHttp {
                url: url.to_string(),
            });
        }
        let no_host = || TargetError::NoHost {
            url: url.to_string(),
        };
        let (Some(authority), Some(host)) = (uri.authority(), uri.host()) else {
            return Err(no_host());
        };
        // `Uri::port` is `None` both without a port and with one that is not a u16 (":99999").
        let written_port = authority
            .as_str()
            .rsplit_once(':')
            .filter(|(_, p)| !p.contains(']'))
            .is_some();
        let port = match uri.port_u16() {
            Some(port) => port,
            None if written_port => return Err(no_host()),
            None => 80,
        };
        if port == 0 || host.is_empty() {
            return Err(no_host());
        }
        let ip = loopback_ip(host).ok_or_else(|| TargetError::NotLoopback {
            url: url.to_string(),
            host: host.to_string(),
        })?;
        Ok(Target {
            url: url.to_string(),
            addr: SocketAddr::new(ip, port),
            authority: authority.clone(),
            path_and_query: uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        })
    }
}

/// The address to connect to when `host` is a loopback host, `None` otherwise.
fn loopback_ip(host: &str) -> Option<IpAddr> {
    if host.eq_ignore_ascii_case("localhost") {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    // IPv6 literals keep their brackets in `Uri::host`.
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: IpAddr = literal.parse().ok()?;
    // `is_loopback` is exactly 127.0.0.0/8 for IPv4 and ::1 for IPv6.
    ip.is_loopback().then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_accepted_with_their_ports_and_paths() {
        let t = Target::parse("http://127.0.0.1:8080/a?b=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.authority.as_str(), "127.0.0.1:8080");
        assert_eq!(t.path_and_query.as_str(), "/a?b=1");

        let t = Target::parse("http://127.9.8.7").unwrap();
        assert_eq!(t.addr, "127.9.8.7:80".parse().unwrap());
        assert_eq!(t.path_and_query.as_str(), "/");

        let t = Target::parse("http://LocalHost:9000/").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(t.authority.as_str(), "LocalHost:9000");

        let t = Target::parse("http://[::1]:8080/x").unwrap();
        assert_eq!(t.addr, "[::1]:8080".parse().unwrap());
    }

    #[test]
    fn hosts_off_this_machine_are_refused_without_a_lookup() {
        for url in [
            "http://10.0.0.1/",
            "http://192.168.1.10:8080/",
            "http://8.8.8.8/",
            "http://0.0.0.0:8080/",
            "http://[::ffff:127.0.0.1]/",
            "http://[fe80::1]/",
            "http://example.com/",
            "http://localhost.example.com/",
        ] {
            let err = Target::parse(url).unwrap_err();
            assert!(
                matches!(err, TargetError::NotLoopback { .. }),
                "{url}: {err}"
            );
            assert!(err.to_string().contains("not a loopback address"));
        }
    }

    #[test]
    fn non_http_and_malformed_urls_are_refused() {
        assert!(matches!(
            Target::parse("https://127.0.0.1/"),
            Err(TargetError::NotHttp { .. })
        ));
        assert!(matches!(
            Target::parse("/just/a/path"),
            Err(TargetError::NotHttp { .. })
        ));
        assert!(matches!(
            Target::parse("http://127.0.0.1:0/"),
            Err(TargetError::NoHost { .. })
        ));
        for url in [
            "http://127.0.0.1:99999/",
            "http://127.0.0.1:/",
            "http://[::1]:x/",
        ] {
            assert!(Target::parse(url).is_err(), "{url}");
        }
        assert!(matches!(
            Target::parse("not a url"),
            Err(TargetError::Invalid { .. })
        ));
    }
}
