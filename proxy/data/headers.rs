//! Pure header transforms of a proxy (RFC 9110 §7.6): hop-by-hop removal, which upgrades pass,
//! the head's ambiguities, and the names of the lines the proxy adds (`forwarding` makes them).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-forwarded-for`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-forwarded-host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `traceparent` (W3C Trace Context).
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `x-switchyard-version`: names the version that served, when a route exposes it.
pub static X_SWITCHYARD_VERSION: HeaderName = HeaderName::from_static("x-switchyard-version");

const HOPS: usize = 8;
/// Where `Connection` is in [`HOP_BY_HOP`].
const CONNECTION_AT: usize = 0;
/// Headers that are hop-by-hop whatever `Connection` says.
const HOP_BY_HOP: [HeaderName; HOPS] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    // Only meaningful with `Upgrade: h2c`, which is never passed on.
    HeaderName::from_static("http2-settings"),
];

/// The position of `name` in [`HOP_BY_HOP`]; the length is compared first, so most names cost
/// one comparison of lengths.
fn hop_index(name: &HeaderName) -> Option<usize> {
    let name = name.as_str();
    let candidates: &[usize] = match name.len() {
        2 => &[3],
        7 => &[4, 6],
        10 => &[0, 1],
        14 => &[7],
        16 => &[2],
        17 => &[5],
        _ => return None,
    };
    candidates
        .iter()
        .copied()
        .find(|&i| HOP_BY_HOP[i].as_str() == name)
}

/// Removes `Connection`, every header it names, and the fixed hop-by-hop headers.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present rather than a lookup per hop-by-hop name; `Connection` is
    // read only when there is one.
    let mut present = [false; HOPS];
    for name in headers.keys() {
        if let Some(i) = hop_index(name) {
            present[i] = true;
        }
    }
    if present[CONNECTION_AT] && names_others(headers) {
        remove_connection_named(headers);
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
}

/// The header names a `Connection` value lists beside `keep-alive` (removed with the fixed names).
fn named_in(connection: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    tokens(connection.as_bytes()).filter(|t| !t.eq_ignore_ascii_case(b"keep-alive"))
}

/// True when a `Connection` line names a header: most say only `keep-alive`, and need no lookup
/// per token.
fn names_others(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| named_in(v).next().is_some())
}

/// Removes every header a `Connection` line names (RFC 9110 §7.6.1).
#[cold]
fn remove_connection_named(headers: &mut HeaderMap) {
    // Values are cloned one at a time (a refcount, no copy) so the map can be edited meanwhile.
    let mut nth = 0;
    while let Some(value) = headers.get_all(header::CONNECTION).iter().nth(nth).cloned() {
        nth += 1;
        for name in named_in(&value).filter_map(|n| std::str::from_utf8(n).ok()) {
            headers.remove(name);
        }
    }
}

/// True for an HTTP/1.1 upgrade request the proxy passes on: see [`upgrade_offered`].
pub fn is_upgrade<B>(request: &http::Request<B>) -> bool {
    let h = request.headers();
    let values = |name| h.get_all(name).iter().map(HeaderValue::as_bytes);
    request.version() == http::Version::HTTP_11
        && upgrade_offered(values(header::CONNECTION), values(header::UPGRADE))
}

/// A `Content-Length` value read by the one rule the framing scanner, the upstream codec and the
/// fast path share: ASCII digits only (no sign, space or list); `None` for anything else and for a
/// number past `u64`.
pub fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// True when a comma-separated list (`Connection`, say) holds `token`, in any case.
pub fn lists(value: &[u8], token: &[u8]) -> bool {
    tokens(value).any(|t| t.eq_ignore_ascii_case(token))
}

fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// `h2c` (with or without a version): HTTP/2 over cleartext, which the proxy serves itself by
/// prior knowledge. Passed upstream, an `Upgrade: h2c` would let a client open an HTTP/2
/// connection to the endpoint past routing and limits; RFC 9113 §3.1 deprecates it anyway.
fn is_h2c(protocol: &[u8]) -> bool {
    let name = protocol.split(|b| *b == b'/').next().unwrap_or(protocol);
    name.eq_ignore_ascii_case(b"h2c")
}

/// True when `Connection` lists `upgrade` and `Upgrade` names a protocol other than `h2c`: the
/// upgrades the proxy splices (WebSocket). Also read by the request-framing scanner, so both agree
/// on which requests end the HTTP/1.1 stream.
pub fn upgrade_offered<'a>(
    connection: impl Iterator<Item = &'a [u8]>,
    upgrade: impl Iterator<Item = &'a [u8]>,
) -> bool {
    connection
        .flat_map(tokens)
        .any(|t| t.eq_ignore_ascii_case(b"upgrade"))
        && upgrade.flat_map(tokens).any(|t| !is_h2c(t))
}

/// The `Upgrade` value to pass upstream: the offered protocols without `h2c`.
pub fn upgrade_without_h2c(value: &HeaderValue) -> Option<HeaderValue> {
    let kept: Vec<&[u8]> = tokens(value.as_bytes()).filter(|t| !is_h2c(t)).collect();
    HeaderValue::from_bytes(&kept.join(&b", "[..])).ok()
}

/// True when `TE` lists `trailers` (gRPC clients send it).
pub fn wants_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
}

/// Why a request's target is ambiguous, when it is: several Host header lines, or an HTTP/1.1
/// request with no Host at all (RFC 9112 §3.2). hyper already refuses ambiguous framing
/// (conflicting lengths, bad encodings, obs-fold) and handles Content-Length with
/// Transfer-Encoding as RFC 9112 §6.1 says: by the encoding, then closing the connection.
/// `host_lines` is how many Host lines the request has.
pub fn ambiguous_framing<B>(request: &http::Request<B>, host_lines: u8) -> Option<&'static str> {
    if host_lines > 1 {
        return Some("more than one Host header");
    }
    if request.version() == http::Version::HTTP_11
        && request.uri().authority().is_none()
        && host_lines == 0
    {
        return Some("HTTP/1.1 request without Host");
    }
    None
}

/// `grpc-status`.
pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// True when headers or trailers carry a `grpc-status` other than 0 (OK).
pub fn grpc_failed(headers: &HeaderMap) -> bool {
    headers
        .get(&GRPC_STATUS)
        .is_some_and(|v| v.as_bytes() != b"0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_is_digits_only_and_fits_a_u64() {
        assert_eq!(decimal(b"0"), Some(0));
        assert_eq!(decimal(b"0042"), Some(42));
        assert_eq!(decimal(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"18446744073709551616",
            b"+5",
            b"-5",
            b" 5",
            b"5 ",
            b"5,5",
            b"0x5",
            b"5e2",
        ] {
            assert_eq!(decimal(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn every_fixed_hop_by_hop_name_and_no_other_is_found() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_index(name), Some(i), "{name}");
        }
        for other in [
            "host",
            "user-agent",
            "x-request-id",
            "te-x",
            "upgrades",
            "traceparent",
        ] {
            assert_eq!(hop_index(&HeaderName::from_static(other)), None, "{other}");
        }
    }

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn connection_named_headers_are_removed() {
        let mut h = map(&[
            ("connection", "Keep-Alive, close, X-Secret"),
            ("connection", "x-other"),
            ("x-secret", "s"),
            ("x-other", "o"),
            ("keep-alive", "timeout=5"),
            ("te", "gzip"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "k"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "only x-kept remains: {h:?}");
        assert_eq!(h["x-kept"], "k");
    }

    #[test]
    fn keep_alive_alone_removes_only_the_hop_by_hop_headers() {
        let mut h = map(&[
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("close", "c"),
            ("x-kept", "k"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["close"], "c");
        assert_eq!(h["x-kept"], "k");
        let mut h = map(&[("connection", "close"), ("close", "c"), ("x-kept", "k")]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "a header Connection names goes: {h:?}");
    }

    #[test]
    fn h2c_is_never_an_upgrade_the_proxy_passes_on() {
        let offered = |c: &str, u: &str| {
            upgrade_offered([c.as_bytes()].into_iter(), [u.as_bytes()].into_iter())
        };
        assert!(offered("Upgrade", "websocket"));
        assert!(offered("keep-alive, upgrade", "WebSocket/13"));
        assert!(!offered("Upgrade, HTTP2-Settings", "h2c"));
        assert!(!offered("Upgrade", "H2C/1"));
        assert!(!offered("keep-alive", "websocket"));
        assert!(offered("upgrade", "h2c, websocket"));
        let v = HeaderValue::from_static("h2c, websocket");
        assert_eq!(upgrade_without_h2c(&v).unwrap(), "websocket");
        let mut h = map(&[("http2-settings", "AAMAAABkAAQAAP__"), ("x-kept", "k")]);
        remove_hop_by_hop(&mut h);
        assert!(!h.contains_key("http2-settings"));
    }
}
