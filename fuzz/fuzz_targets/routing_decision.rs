//! Arbitrary hosts, paths, queries, headers and cookies through the routing decision: a decision
//! or "no route", never a panic.
#![no_main]

use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use switchyard::route::{decide, RequestHead, RouteTable};

const CONFIG: &str = r#"
listeners: [{ name: p, addr: "127.0.0.1:0" }]
routes:
  - name: shop
    match: { hosts: ["shop.example.com", "*.shop.example.com"], path_prefix: "/" }
    versions:
      - { name: stable, endpoints: ["127.0.0.1:1"], weight: 95 }
      - { name: canary, endpoints: ["127.0.0.1:2"], weight: 5 }
    rules:
      - { match: { header: { name: "x-canary", value: "always" } }, version: canary }
      - { match: { cookie: { name: "beta", value: "1" } }, version: canary }
      - { match: { query: { name: "ring", value: "0" } }, version: stable }
    cohort: { key: { cookie: "uid" } }
  - name: rest
    versions: [{ name: stable, endpoints: ["127.0.0.1:3"], weight: 1 }]
"#;

fn tables() -> &'static Vec<RouteTable> {
    static TABLES: OnceLock<Vec<RouteTable>> = OnceLock::new();
    TABLES.get_or_init(|| {
        let config = switchyard::config::parse(std::path::Path::new("fuzz.yaml"), CONFIG)
            .expect("the fuzz configuration is valid");
        config
            .routes
            .iter()
            .map(|r| RouteTable::new(r, &r.versions.iter().map(|v| v.weight).collect::<Vec<_>>()))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    // Fields separated by 0xff: host, path, query, then header name/value pairs.
    let mut parts = data.split(|b| *b == 0xff);
    let host = parts.next().and_then(|h| std::str::from_utf8(h).ok());
    let path = parts.next().and_then(|p| std::str::from_utf8(p).ok()).unwrap_or("/");
    let query = parts.next().and_then(|q| std::str::from_utf8(q).ok());
    let mut headers = HeaderMap::new();
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    let head = RequestHead { host, path, query, headers: &headers };
    let _ = decide(&head, tables(), &mut SmallRng::seed_from_u64(1));
});
