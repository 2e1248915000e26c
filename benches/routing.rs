//! Criterion benches of the routing decision (weight, rule and cohort paths), the cohort hash, the
//! per-request metrics recording, configuration parsing and the shadow JSON comparison.
//! Run: `cargo bench --bench routing`.

#![allow(clippy::unwrap_used)] // bench set-up may unwrap

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use switchyard::route::{bucket_of, decide, RequestHead, RouteTable};

const CONFIG: &str = r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
routes:
  - name: admin
    match: { hosts: ["admin.example.com"] }
    versions: [{ name: stable, endpoints: ["127.0.0.1:1"], weight: 1 }]
  - name: shop
    match: { hosts: ["shop.example.com", "*.shop.example.com"], path_prefix: "/" }
    versions:
      - { name: stable, endpoints: ["127.0.0.1:1", "127.0.0.1:2"], weight: 95 }
      - { name: canary, endpoints: ["127.0.0.1:3"], weight: 5 }
    rules:
      - match: { header: { name: "x-canary", value: "always" } }
        version: canary
      - match: { cookie: { name: "beta", value: "1" } }
        version: canary
    cohort: { key: { header: "x-user-id" }, salt: "shop-2026-11" }
"#;

fn tables() -> Vec<RouteTable> {
    let config = switchyard::config::parse(Path::new("bench.yaml"), CONFIG).unwrap();
    config
        .routes
        .iter()
        .map(|r| RouteTable::new(r, &r.versions.iter().map(|v| v.weight).collect::<Vec<_>>()))
        .collect()
}

fn browser_headers(extra: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("eu.shop.example.com"));
    h.insert(
        "user-agent",
        HeaderValue::from_static("Mozilla/5.0 (X11; Linux x86_64)"),
    );
    h.insert(
        "accept",
        HeaderValue::from_static("text/html,application/xhtml+xml"),
    );
    h.insert(
        "cookie",
        HeaderValue::from_static("session=abc123; theme=dark; lang=en"),
    );
    for (k, v) in extra {
        h.insert(*k, HeaderValue::from_static(v));
    }
    h
}

fn bench_decide(c: &mut Criterion) {
    let tables = tables();
    let mut rng = SmallRng::seed_from_u64(1);
    let cases = [
        ("decide/weight", browser_headers(&[])),
        (
            "decide/header_rule",
            browser_headers(&[("x-canary", "always")]),
        ),
        (
            "decide/cohort",
            browser_headers(&[("x-user-id", "user-12345")]),
        ),
    ];
    for (name, headers) in &cases {
        let head = RequestHead {
            host: Some("eu.shop.example.com"),
            path: "/products/42",
            query: Some("ref=home"),
            headers,
        };
        c.bench_function(name, |b| {
            b.iter(|| decide(black_box(&head), black_box(&tables), &mut rng).unwrap())
        });
    }
    c.bench_function("cohort_hash", |b| {
        b.iter(|| bucket_of(black_box("shop-2026-11"), black_box(b"user-12345")))
    });
}

/// What every routed request records: the same calls `record::Record` makes on start and finish.
fn bench_record(c: &mut Criterion) {
    let metrics = switchyard::metrics::Metrics::new().unwrap();
    let version = metrics.version("shop", "stable", 90);
    c.bench_function("metrics/record_one_request", |b| {
        b.iter(|| {
            version.in_flight.inc();
            version.count_status(black_box(200));
            version
                .stats
                .record(false, black_box(std::time::Duration::from_micros(12_300)));
            version.in_flight.dec();
        })
    });
}

/// Parsing and validating a configuration, and building a snapshot from it (reload cost).
fn bench_config(c: &mut Criterion) {
    c.bench_function("config/parse_and_validate", |b| {
        b.iter(|| switchyard::config::parse(Path::new("bench.yaml"), black_box(CONFIG)).unwrap())
    });
}

/// Comparing a live and a shadow JSON answer of about 2 KiB with a few differences.
fn bench_compare(c: &mut Criterion) {
    let item = |i: usize, price: usize| {
        format!(
            r#"{{"id": {i}, "name": "item {i}", "price": {price}, "tags": ["a", "b", "c"], "stock": {{"eu": 3, "us": 4}}}}"#
        )
    };
    let body = |shift: usize| {
        let items: Vec<String> = (0..20)
            .map(|i| item(i, 10 * i + usize::from(i % 7 == 0) * shift))
            .collect();
        format!(
            r#"{{"items": [{}], "served_at": 1795616110017}}"#,
            items.join(",")
        )
    };
    let answer = |text: String| switchyard::shadow::compare::Answer {
        status: 200,
        headers: HeaderMap::new(),
        body: bytes::Bytes::from(text),
        truncated: false,
    };
    let (live, shadow) = (answer(body(0)), answer(body(1)));
    let ignore_paths = vec!["/served_at".to_string()];
    let ignore = switchyard::shadow::compare::Ignore {
        headers: &[],
        json_paths: &ignore_paths,
    };
    c.bench_function("compare/json_2kib", |b| {
        b.iter(|| switchyard::shadow::compare::diff(black_box(&live), black_box(&shadow), &ignore))
    });
}

criterion_group!(
    benches,
    bench_decide,
    bench_record,
    bench_config,
    bench_compare
);
criterion_main!(benches);
