//! Pure header transforms of a proxy (RFC 9110 §7.6): hop-by-hop removal, `X-Forwarded-*`, and the
//! request id.

use std::net::IpAddr;

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

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
    // Values are cloned one at a time (a refcount, no copy) so the map can be edited meanwhile.
    let mut nth = 0;
    while let Some(value) = headers.get_all(header::CONNECTION).iter().nth(nth).cloned() {
        nth += 1;
        if let Ok(list) = value.to_str() {
            // `keep-alive`, the usual token, is removed with the fixed names below: no lookup.
            for name in list
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty() && !n.eq_ignore_ascii_case("keep-alive"))
            {
                headers.remove(name);
            }
        }
    }
    // One pass over the names present rather than a lookup per hop-by-hop name.
    let mut present = [false; HOPS];
    for name in headers.keys() {
        if let Some(i) = hop_index(name) {
            present[i] = true;
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
}

/// Prepares downstream request headers for the upstream: hop-by-hop removal, `X-Forwarded-For`
/// appended with the client address, `X-Forwarded-Proto`, `X-Forwarded-Host` (the Host the
/// client asked for) and a request id (kept, or generated when absent). Returns the request id.
pub fn forward_request(
    headers: &mut HeaderMap,
    host: Option<&HeaderValue>,
    client: &HeaderValue,
    proto: &'static str,
) -> HeaderValue {
    remove_hop_by_hop(headers);
    // Room for the five headers below at once: a map sized for a short request (wrk sends one
    // header) would otherwise grow two or three times, each a rehash of every entry. It cannot
    // fail: hyper admits at most 100 headers, and a map holds 32,768.
    let _ = headers.try_reserve(5);

    // Every X-Forwarded-For line is one list (RFC 9110 §5.3): all of them, in order, then the peer.
    // Without one (the common case) the list is the connection's ready-made value. Each header
    // below is looked up once (an entry), not once to read and again to write.
    match headers.entry(&X_FORWARDED_FOR) {
        Entry::Vacant(slot) => {
            slot.insert(client.clone());
        }
        Entry::Occupied(mut lines) => {
            let mut list = Vec::with_capacity(64);
            for value in lines
                .iter()
                .filter(|v| v.to_str().is_ok())
                .map(|v| v.as_bytes().trim_ascii())
                .filter(|v| !v.is_empty())
            {
                list.extend_from_slice(value);
                list.extend_from_slice(b", ");
            }
            list.extend_from_slice(client.as_bytes());
            // Visible ASCII from valid values and an address: always a valid header value.
            let joined = HeaderValue::from_maybe_shared(bytes::Bytes::from(list))
                .unwrap_or_else(|_| client.clone());
            // Replaces every earlier line with the single joined list.
            lines.insert(joined);
        }
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
    }
    headers.entry(&TRACEPARENT).or_insert_with(new_traceparent);
    match headers.entry(&X_REQUEST_ID) {
        Entry::Occupied(id) if !id.get().is_empty() => id.get().clone(),
        Entry::Occupied(mut id) => {
            let fresh = new_request_id();
            id.insert(fresh.clone());
            fresh
        }
        Entry::Vacant(slot) => slot.insert(new_request_id()).clone(),
    }
}

/// The client's address as a header value, made once per connection (and once per wake-up from
/// the hall) for `X-Forwarded-For`. IPv4 is written digit by digit, without `fmt`.
pub fn peer_value(ip: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = ip else {
        // An IP address in text is digits, dots, colons and hex: always a valid header value.
        let text = ip.to_string();
        return HeaderValue::from_str(&text)
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    };
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        // Hundreds and tens only when there are any; units always.
        for place in [100, 10, 1] {
            if octet >= place || place == 1 {
                text[len] = b'0' + octet / place % 10;
                len += 1;
            }
        }
    }
    HeaderValue::from_bytes(&text[..len]).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// A fresh W3C `traceparent` for a request that arrived without one: random trace and parent
/// ids, flags `00` (not sampled), so services with parent-based samplers do not all start
/// tracing because the proxy made up a context.
pub fn new_traceparent() -> HeaderValue {
    let mut ids: [u8; 24] = random_bytes();
    // Both ids must not be all zero (W3C Trace Context §3.2.2.3); setting one bit guarantees it.
    ids[15] |= 1;
    ids[23] |= 1;
    // "00-" 32 hex digits "-" 16 hex digits "-00", written on the stack: no formatting machinery,
    // one allocation (the header value's own).
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex_into(&mut text[3..35], &ids[..16]);
    hex_into(&mut text[36..52], &ids[16..]);
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Writes `bytes` in lower-case hex into `out` (two digits a byte, most significant first).
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

thread_local! {
    /// A fast generator per thread for request and trace ids, seeded from the thread's
    /// OS-seeded generator: ids must be unique and unpredictable enough to not collide, not secret.
    static IDS: std::cell::RefCell<rand::rngs::SmallRng> = std::cell::RefCell::new(
        rand::SeedableRng::from_rng(&mut rand::rng()),
    );
}

/// `N` random bytes from the thread's id generator.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    let filled = IDS.try_with(|rng| rand::RngCore::fill_bytes(&mut *rng.borrow_mut(), &mut bytes));
    if filled.is_err() {
        // Only while the thread exits: the thread's OS-seeded generator still works.
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    }
    bytes
}

/// A fresh random request id (UUID v4).
pub fn new_request_id() -> HeaderValue {
    let mut buf = uuid::Uuid::encode_buffer();
    let id = uuid::Builder::from_random_bytes(random_bytes()).into_uuid();
    let text = id.hyphenated().encode_lower(&mut buf);
    // A hyphenated UUID is ASCII hex and dashes: always a valid header value.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// True for an HTTP/1.1 upgrade request the proxy passes on: see [`upgrade_offered`].
pub fn is_upgrade<B>(request: &http::Request<B>) -> bool {
    let h = request.headers();
    let values = |name| h.get_all(name).iter().map(HeaderValue::as_bytes);
    request.version() == http::Version::HTTP_11
        && upgrade_offered(values(header::CONNECTION), values(header::UPGRADE))
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
pub fn ambiguous_framing<B>(request: &http::Request<B>) -> Option<&'static str> {
    let h = request.headers();
    if h.get_all(header::HOST).iter().nth(1).is_some() {
        return Some("more than one Host header");
    }
    if request.version() == http::Version::HTTP_11
        && request.uri().authority().is_none()
        && !h.contains_key(header::HOST)
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
    fn a_peer_address_reads_as_std_writes_it() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.0.100.7",
            "192.168.20.255",
            "255.255.255.255",
            "::1",
            "2001:db8::ff00:42:8329",
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(peer_value(addr).to_str().unwrap(), addr.to_string());
        }
    }

    #[test]
    fn request_ids_are_distinct_version_4_uuids() {
        let ids: std::collections::HashSet<String> = (0..1_000)
            .map(|_| new_request_id().to_str().unwrap().to_string())
            .collect();
        assert_eq!(ids.len(), 1_000);
        for id in ids.iter().take(10) {
            let parsed = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(parsed.get_version_num(), 4, "{id}");
            assert_eq!(
                id,
                &parsed.hyphenated().to_string(),
                "lower-case, hyphenated"
            );
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
    fn forwarded_for_is_appended_and_request_id_kept() {
        let mut h = map(&[("x-forwarded-for", "203.0.113.7"), ("x-request-id", "abc")]);
        let host = HeaderValue::from_static("shop.example.com");
        let id = forward_request(
            &mut h,
            Some(&host),
            &peer_value("127.0.0.1".parse().unwrap()),
            "http",
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "shop.example.com");
        assert_eq!(id, "abc");
    }

    #[test]
    fn every_forwarded_for_line_is_kept_in_order_with_the_peer_last() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.7, 198.51.100.2"),
            ("x-forwarded-for", " "),
            ("x-forwarded-for", "192.0.2.9"),
        ]);
        forward_request(
            &mut h,
            None,
            &peer_value("127.0.0.1".parse().unwrap()),
            "http",
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(
            h["x-forwarded-for"],
            "203.0.113.7, 198.51.100.2, 192.0.2.9, 127.0.0.1"
        );
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

    #[test]
    fn missing_request_id_is_generated() {
        let mut h = HeaderMap::new();
        let id = forward_request(&mut h, None, &peer_value("::1".parse().unwrap()), "http");
        assert_eq!(id.len(), 36);
        assert_eq!(h["x-request-id"], id);
        assert_eq!(h["x-forwarded-for"], "::1");
        let tp = h["traceparent"].to_str().unwrap();
        assert_eq!(tp.len(), 55, "{tp}");
        assert!(tp.starts_with("00-") && tp.ends_with("-00"), "{tp}");
    }

    #[test]
    fn traceparent_ids_are_written_as_fmt_would() {
        for value in [
            1u128,
            0xabc,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        ] {
            let mut out = [0u8; 32];
            hex_into(&mut out, &value.to_be_bytes());
            assert_eq!(std::str::from_utf8(&out).unwrap(), format!("{value:032x}"));
            let mut out = [0u8; 16];
            hex_into(&mut out, &(value as u64).to_be_bytes());
            assert_eq!(
                std::str::from_utf8(&out).unwrap(),
                format!("{:016x}", value as u64)
            );
        }
        let tp = new_traceparent();
        let parts: Vec<&str> = tp.to_str().unwrap().split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len(), parts[3]),
            ("00", 32, 16, "00")
        );
        assert!(parts[1..3].iter().all(|p| p
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())));
        assert!(parts[1] != "0".repeat(32) && parts[2] != "0".repeat(16));
    }

    #[test]
    fn an_incoming_traceparent_is_kept() {
        let mut h = map(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]);
        forward_request(&mut h, None, &peer_value("::1".parse().unwrap()), "http");
        assert_eq!(
            h["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }
}
