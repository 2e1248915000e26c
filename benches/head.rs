//! Criterion benches of the per-request head work in front of the routing decision: the framing
//! scanner reading a request head as it arrives (the proxy's own parse, beside hyper's), httparse
//! alone on the same bytes (what hyper's parse costs, for scale), and the forwarding rewrite
//! (the one pass over the lines, hop-by-hop removal, X-Forwarded-*, traceparent, request id) on the
//! parsed header map; then the
//! upstream side of the direct path's own HTTP/1.1 codec: the request head written for the
//! upstream, and the upstream's response head parsed into a response; and the fast path's head
//! steps (the request head taken into the handler's request, with and without the rewrite; the
//! response head written).
//! Run: `cargo bench --bench head`.

#![allow(clippy::unwrap_used)] // bench set-up may unwrap

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::{HeaderMap, HeaderName, HeaderValue};
use switchyard::data::forwarding::{forward_request, peer_value};
use switchyard::data::framing::Scanner;
use switchyard::data::present::Present;

/// A browser-like GET: 11 header lines, 468 bytes.
const BROWSER_GET: &[u8] = b"GET /shop/cart?item=42&ref=home HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Connection: keep-alive\r\n\
Cookie: session=0123456789abcdef; beta=1\r\n\
X-Forwarded-For: 203.0.113.7\r\n\
X-User-Id: user-31337\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Priority: u=0, i\r\n\r\n";

/// A chunked POST head with a small body of two chunks.
const CHUNKED_POST: &[u8] = b"POST /api/orders HTTP/1.1\r\nHost: shop.example.com\r\n\
Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
10\r\n{\"item\":42,\"n\":1\r\n1\r\n}\r\n0\r\n\r\n";

fn parsed(head: &[u8]) -> HeaderMap {
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut fields);
    request.parse(head).unwrap();
    let mut map = HeaderMap::with_capacity(request.headers.len() + 6);
    for f in request.headers.iter() {
        map.append(
            HeaderName::from_bytes(f.name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(f.value).unwrap(),
        );
    }
    map
}

fn scan(c: &mut Criterion) {
    let mut group = c.benchmark_group("head");
    for (name, bytes) in [("browser_get", BROWSER_GET), ("chunked_post", CHUNKED_POST)] {
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(format!("scanner/{name}"), |b| {
            // One scanner per connection, as the proxy has: it reads request after request.
            let mut scanner = Scanner::new(64 * 1024);
            let mut events = 0u32;
            b.iter(|| {
                scanner.feed(black_box(bytes), |_| events += 1).unwrap();
            });
            black_box(events);
        });
    }
    group.throughput(Throughput::Bytes(BROWSER_GET.len() as u64));
    group.bench_function("httparse/browser_get", |b| {
        b.iter(|| {
            let mut fields = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut fields);
            black_box(request.parse(black_box(BROWSER_GET)).unwrap());
        });
    });
    group.finish();
}

fn rewrite(c: &mut Criterion) {
    let map = parsed(BROWSER_GET);
    let host = map.get("host").cloned();
    let client = peer_value("198.51.100.23".parse::<IpAddr>().unwrap());
    // The rewrite changes the map: each iteration works on a fresh clone. The clone alone is
    // measured beside it; the rewrite's own cost is the difference.
    c.bench_function("head/clone_only/browser_get", |b| {
        b.iter(|| black_box(map.clone()));
    });
    c.bench_function("head/clone_and_rewrite/browser_get", |b| {
        b.iter(|| {
            let mut headers = map.clone();
            // The one pass over the lines is part of the rewrite's cost.
            let present = Present::scan(&headers);
            let added = forward_request(&mut headers, &present, host.as_ref(), &client, "https");
            black_box(added);
            headers
        });
    });
}

/// An upstream's answer as nginx writes it (`return 200`), with its 2-byte body.
const UPSTREAM_ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\
Date: Mon, 30 Nov 2026 09:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\
Connection: keep-alive\r\nx-upstream: stable\r\n\r\nok";

fn upstream(c: &mut Criterion) {
    use switchyard::data::body::RequestBody;
    use switchyard::data::upstream::h1::message::{encode_head, parse_head};
    let mut request = http::Request::new(RequestBody::empty());
    *request.uri_mut() = "http://127.0.0.1:8081/shop/cart?item=42&ref=home"
        .parse()
        .unwrap();
    // The head as the rewrite leaves it: its own lines, and the five the proxy adds beside them.
    let mut headers = parsed(BROWSER_GET);
    let present = Present::scan(&headers);
    let client = peer_value("198.51.100.23".parse::<IpAddr>().unwrap());
    let host = headers.get("host").cloned();
    let (_, added) = forward_request(&mut headers, &present, host.as_ref(), &client, "https");
    *request.headers_mut() = headers;
    c.bench_function("head/upstream_encode/browser_get", |b| {
        let mut write = bytes::BytesMut::with_capacity(4096);
        b.iter(|| {
            black_box(encode_head(black_box(&request), &added, &mut write));
            write.clear();
        });
    });
    c.bench_function("head/upstream_parse/nginx_answer", |b| {
        // A connection's read buffer, refilled with the answer each time, as a read does.
        let mut read = bytes::BytesMut::with_capacity(8192);
        b.iter(|| {
            read.clear();
            read.extend_from_slice(UPSTREAM_ANSWER);
            black_box(parse_head(&mut read, false).unwrap());
        });
    });
}

/// The fast path's head steps (`data::fast::head`): the browser GET taken from a connection's
/// read buffer into the request the handler gets (parsed in place, values sharing the buffer),
/// then the same with the forwarding rewrite after it (the path a request's head takes before
/// routing), and the response head written as hyper's server writes it.
fn fast(c: &mut Criterion) {
    use switchyard::data::fast::head::{encode, take, BodyHint, HeadLimits, Taken};
    let limits = HeadLimits {
        max_bytes: 64 * 1024,
        max_headers: 100,
    };
    let client = peer_value("198.51.100.23".parse::<IpAddr>().unwrap());
    let mut read = bytes::BytesMut::with_capacity(4096);
    let mut lines = Vec::with_capacity(16);
    let mut taken = move || {
        read.clear();
        read.extend_from_slice(BROWSER_GET);
        match take(&mut read, limits, &mut lines) {
            Taken::Request { request, .. } => request,
            other => panic!("the browser GET is the fast path's: {other:?}"),
        }
    };
    c.bench_function("head/fast_take/browser_get", |b| {
        b.iter(|| black_box(taken()));
    });
    c.bench_function("head/fast_take_and_rewrite/browser_get", |b| {
        b.iter(|| {
            let mut request = taken();
            let present = Present::scan(request.headers());
            let host = present.host.clone();
            let added = forward_request(
                request.headers_mut(),
                &present,
                host.as_ref(),
                &client,
                "https",
            );
            black_box(added);
            request
        });
    });
    let mut response = http::Response::new(());
    for (name, value) in [
        ("server", "nginx/1.22.1"),
        ("date", "Mon, 30 Nov 2026 09:00:00 GMT"),
        ("content-type", "text/plain"),
        ("content-length", "2"),
        ("x-upstream", "stable"),
        ("x-request-id", "4bf92f3577b34da6a3ce929d0e0e4736"),
    ] {
        response
            .headers_mut()
            .append(name, HeaderValue::from_static(value));
    }
    let (parts, ()) = response.into_parts();
    c.bench_function("head/fast_encode/nginx_answer", |b| {
        let mut write = Vec::with_capacity(4096);
        b.iter(|| {
            write.clear();
            black_box(encode(&parts, BodyHint::Known(2), false, true, &mut write).unwrap());
        });
    });
}

criterion_group!(benches, scan, rewrite, upstream, fast);
criterion_main!(benches);
