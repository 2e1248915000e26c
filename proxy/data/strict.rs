//! What the proxy refuses in a request head before routing it, where hyper lets it through.
//!
//! hyper refuses malformed request lines and header fields, conflicting lengths and a
//! `Transfer-Encoding` whose last coding is not chunked; what it accepts and nginx or HAProxy
//! refuse is refused here, each with the status RFC 9110/9112 names:
//!
//! - an invalid `Host`, absolute-form authority or `:authority` ([`crate::data::authority`]): 400;
//! - an absolute-form target whose scheme is not `http` or `https`: 400;
//! - an HTTP/2 request whose `Host` names another authority than `:authority` (RFC 9113
//!   §8.3.1): 400;
//! - `chunked` applied more than once (RFC 9112 §6.1): 400; another transfer coding before it,
//!   which the proxy would pass on undecoded under a framing that no longer says so: 501;
//! - `CONNECT`: 501, a reverse proxy opens no tunnels;
//! - an asterisk-form target (`*`) on a method other than `OPTIONS` (RFC 9112 §3.2.4): 400.
//!
//! Pure: a request head in, a verdict out.

use http::{header, Method, Request, Version};

use crate::data::authority;
use crate::data::present::Present;

/// Why a request head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// 400: the request is malformed.
    BadRequest(&'static str),
    /// 501: the request asks for something the proxy does not implement.
    NotImplemented(&'static str),
}

fn authority_reason(error: authority::AuthorityError, host_header: bool) -> &'static str {
    use authority::AuthorityError as E;
    match (host_header, error) {
        (true, E::Empty) => "invalid Host: empty host",
        (true, E::UserInfo) => "invalid Host: user information is not allowed",
        (true, E::Host) => "invalid Host: not a host name or IP literal",
        (true, E::Port) => "invalid Host: invalid port",
        (false, E::Empty) => "invalid target authority: empty host",
        (false, E::UserInfo) => "invalid target authority: user information is not allowed",
        (false, E::Host) => "invalid target authority: not a host name or IP literal",
        (false, E::Port) => "invalid target authority: invalid port",
    }
}

/// Checks a request head; `Ok` when nothing in it is refused here. `present` is what one pass
/// over its lines found.
pub fn check<B>(request: &Request<B>, present: &Present) -> Result<(), Refused> {
    if request.method() == Method::CONNECT {
        return Err(Refused::NotImplemented(
            "CONNECT is not supported by a reverse proxy",
        ));
    }
    if request.uri().path() == "*" && request.method() != Method::OPTIONS {
        return Err(Refused::BadRequest(
            "an asterisk-form target is only for OPTIONS",
        ));
    }
    let host = present.host.as_ref();
    if let Some(host) = host {
        authority::check(host.as_bytes())
            .map_err(|e| Refused::BadRequest(authority_reason(e, true)))?;
    }
    let uri = request.uri();
    if let Some(target) = uri.authority() {
        authority::check(target.as_str().as_bytes())
            .map_err(|e| Refused::BadRequest(authority_reason(e, false)))?;
        if request.version() == Version::HTTP_2
            && host.is_some_and(|h| {
                !h.as_bytes()
                    .eq_ignore_ascii_case(target.as_str().as_bytes())
            })
        {
            return Err(Refused::BadRequest("Host differs from :authority"));
        }
    }
    if let Some(scheme) = uri.scheme_str() {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(Refused::BadRequest("target scheme is not http or https"));
        }
    }
    if present.transfer_encoding {
        transfer_codings(request)?;
    }
    Ok(())
}

/// A request's `Transfer-Encoding` must be exactly `chunked`: hyper has already checked that the
/// last coding is chunked (or refused the request).
fn transfer_codings<B>(request: &Request<B>) -> Result<(), Refused> {
    let mut chunked = 0;
    let mut other = false;
    for coding in request
        .headers()
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty())
    {
        if coding.eq_ignore_ascii_case(b"chunked") {
            chunked += 1;
        } else {
            other = true;
        }
    }
    if chunked > 1 {
        return Err(Refused::BadRequest("chunked applied more than once"));
    }
    if other {
        return Err(Refused::NotImplemented(
            "transfer coding not implemented: only chunked",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(request: &Request<()>) -> Result<(), Refused> {
        check(request, &Present::scan(request.headers()))
    }

    fn request(lines: &[(&str, &str)]) -> http::request::Builder {
        let mut b = Request::builder().uri("/x");
        for (k, v) in lines {
            b = b.header(*k, *v);
        }
        b
    }

    #[test]
    fn valid_heads_pass() {
        let r = request(&[
            ("host", "shop.example.com:8080"),
            ("transfer-encoding", "Chunked"),
        ]);
        assert_eq!(checked(&r.body(()).unwrap()), Ok(()));
        let h2 = Request::builder()
            .version(Version::HTTP_2)
            .uri("https://Shop.example.com/x")
            .header("host", "shop.example.com")
            .body(())
            .unwrap();
        assert_eq!(checked(&h2), Ok(()));
    }

    #[test]
    fn each_refusal_has_its_status_and_reason() {
        let bad = |r: http::request::Builder| checked(&r.body(()).unwrap()).unwrap_err();
        assert_eq!(
            bad(request(&[("host", "a/b")])),
            Refused::BadRequest("invalid Host: not a host name or IP literal")
        );
        assert_eq!(
            bad(Request::builder().uri("http://u@a/x")),
            Refused::BadRequest("invalid target authority: user information is not allowed")
        );
        assert_eq!(
            bad(Request::builder().uri("ftp://a/x")),
            Refused::BadRequest("target scheme is not http or https")
        );
        assert_eq!(
            bad(Request::builder()
                .version(Version::HTTP_2)
                .uri("https://a/x")
                .header("host", "b")),
            Refused::BadRequest("Host differs from :authority")
        );
        assert_eq!(
            bad(request(&[("transfer-encoding", "chunked, chunked")])),
            Refused::BadRequest("chunked applied more than once")
        );
        assert!(matches!(
            bad(request(&[("transfer-encoding", "gzip, chunked")])),
            Refused::NotImplemented(_)
        ));
        assert!(matches!(
            bad(Request::builder().method(Method::CONNECT).uri("a:443")),
            Refused::NotImplemented(_)
        ));
        assert_eq!(
            bad(Request::builder().uri("*")),
            Refused::BadRequest("an asterisk-form target is only for OPTIONS")
        );
        let options = Request::builder().method(Method::OPTIONS).uri("*");
        assert_eq!(checked(&options.body(()).unwrap()), Ok(()));
    }
}
