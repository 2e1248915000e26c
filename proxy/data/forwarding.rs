//! The lines the proxy adds to a request on its way upstream (the `X-Forwarded-*` convention nginx
//! and Envoy follow, W3C Trace Context): the client's address appended to `X-Forwarded-For`,
//! `X-Forwarded-Proto`, `X-Forwarded-Host`, a `traceparent` and an `x-request-id`, each kept or
//! made, from pre-made values and ids written without `fmt`.

use std::net::IpAddr;

use http::header::{Entry, HeaderMap, HeaderName, HeaderValue};

use crate::data::headers::{
    remove_hop_by_hop, TRACEPARENT, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO,
    X_REQUEST_ID,
};
use crate::data::present::Present;

/// Request header lines the proxy adds on the way upstream, kept beside the request's map rather
/// than inserted in it (no name hashed, no map grown): the direct HTTP/1.1 path writes them after
/// the map's own lines; any other way out (the pooled client, a mirror copy) inserts them first.
/// A line the client sent itself is edited in the map instead, so no name is in both.
#[derive(Debug, Default)]
pub struct Added {
    values: [Option<HeaderValue>; 5],
}

/// The names of [`Added`]'s lines, in the order they are written.
static ADDED: [&HeaderName; 5] = [
    &X_FORWARDED_FOR,
    &X_FORWARDED_PROTO,
    &X_FORWARDED_HOST,
    &TRACEPARENT,
    &X_REQUEST_ID,
];
const FOR: usize = 0;
const PROTO: usize = 1;
const HOST: usize = 2;
const TRACE: usize = 3;
const ID: usize = 4;

impl Added {
    /// The lines, name and value.
    pub fn lines(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        ADDED
            .iter()
            .zip(&self.values)
            .filter_map(|(name, value)| Some((&**name, value.as_ref()?)))
    }

    /// Puts the lines in `headers`, each replacing any line of its name.
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        for (name, value) in self.lines() {
            headers.insert(name, value.clone());
        }
    }
}

/// Prepares downstream request headers for the upstream: hop-by-hop removal, `X-Forwarded-For`
/// appended with the client address, `X-Forwarded-Proto`, `X-Forwarded-Host` (the Host the
/// client asked for), a `traceparent` and a request id (each kept, or made when absent).
/// `present` is what one pass over the client's lines found. Returns the request id and the lines
/// to add.
pub fn forward_request(
    headers: &mut HeaderMap,
    present: &Present,
    host: Option<&HeaderValue>,
    client: &HeaderValue,
    proto: &'static str,
) -> (HeaderValue, Added) {
    remove_hop_by_hop(headers);
    let mut added = Added::default();
    if present.forwarded_for {
        append_forwarded_for(headers, client);
    } else {
        // The common case: the connection's ready-made value.
        added.values[FOR] = Some(client.clone());
    }
    if present.forwarded_proto {
        headers.remove(&X_FORWARDED_PROTO);
    }
    added.values[PROTO] = Some(HeaderValue::from_static(proto));
    if let Some(host) = host {
        if present.forwarded_host {
            headers.remove(&X_FORWARDED_HOST);
        }
        added.values[HOST] = Some(host.clone());
    }
    // A line the client sent is read only when the pass saw one (it may have named it in
    // `Connection`, which removed it).
    if !(present.traceparent && headers.contains_key(&TRACEPARENT)) {
        added.values[TRACE] = Some(new_traceparent());
    }
    let kept = present
        .request_id
        .then(|| {
            headers
                .get(&X_REQUEST_ID)
                .filter(|id| !id.is_empty())
                .cloned()
        })
        .flatten();
    let id = match kept {
        Some(id) => id,
        None => {
            if present.request_id {
                headers.remove(&X_REQUEST_ID);
            }
            let fresh = new_request_id();
            added.values[ID] = Some(fresh.clone());
            fresh
        }
    };
    (id, added)
}

/// Every X-Forwarded-For line is one list (RFC 9110 §5.3): all of them, in order, then the peer,
/// as one line.
fn append_forwarded_for(headers: &mut HeaderMap, client: &HeaderValue) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

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

    /// The lines an upstream gets: the map's, then the added ones inserted.
    fn forwarded(h: &mut HeaderMap, host: Option<&HeaderValue>, client: &str) -> HeaderValue {
        let present = Present::scan(h);
        let client = peer_value(client.parse().unwrap());
        let (id, added) = forward_request(h, &present, host, &client, "http");
        added.insert_into(h);
        id
    }

    #[test]
    fn lines_the_client_did_not_send_are_added_beside_the_map_and_its_own_replaced() {
        let mut h = map(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "spoofed.example"),
            ("accept", "*/*"),
        ]);
        let present = Present::scan(&h);
        let host = HeaderValue::from_static("shop.example.com");
        let client = peer_value("127.0.0.1".parse().unwrap());
        let (id, added) = forward_request(&mut h, &present, Some(&host), &client, "http");
        assert_eq!(
            h.len(),
            1,
            "the client's forwarding lines left the map: {h:?}"
        );
        let lines: Vec<(&str, &HeaderValue)> =
            added.lines().map(|(n, v)| (n.as_str(), v)).collect();
        let names: Vec<&str> = lines.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
                "traceparent",
                "x-request-id"
            ]
        );
        assert_eq!(lines[0].1, "127.0.0.1");
        assert_eq!(lines[1].1, "http");
        assert_eq!(lines[2].1, "shop.example.com");
        assert_eq!(lines[4].1, &id);
    }

    #[test]
    fn forwarded_for_is_appended_and_request_id_kept() {
        let mut h = map(&[("x-forwarded-for", "203.0.113.7"), ("x-request-id", "abc")]);
        let host = HeaderValue::from_static("shop.example.com");
        let id = forwarded(&mut h, Some(&host), "127.0.0.1");
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
        forwarded(&mut h, None, "127.0.0.1");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(
            h["x-forwarded-for"],
            "203.0.113.7, 198.51.100.2, 192.0.2.9, 127.0.0.1"
        );
    }

    #[test]
    fn missing_request_id_is_generated() {
        let mut h = HeaderMap::new();
        let id = forwarded(&mut h, None, "::1");
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
        forwarded(&mut h, None, "::1");
        assert_eq!(
            h["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }
}
