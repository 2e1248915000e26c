//! Table tests of the routing decision: (request head, table) -> decision, with a seeded RNG.

use std::path::Path;

use http::{HeaderMap, HeaderValue};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::*;

const CONFIG: &str = r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
routes:
  - name: shop
    match: { hosts: ["shop.example.com", "*.shop.example.com"], path_prefix: "/" }
    versions:
      - { name: stable, endpoints: ["127.0.0.1:1"], weight: 90 }
      - { name: canary, endpoints: ["127.0.0.1:2"], weight: 10 }
    rules:
      - match: { header: { name: "x-canary", value: "always" } }
        version: canary
      - match: { cookie: { name: "beta", value: "1" } }
        version: canary
      - match: { query: { name: "ring", value: "0" } }
        version: stable
    cohort: { key: { header: "x-user-id" }, salt: "shop-2026-11" }
  - name: api
    match: { path_prefix: "/api" }
    versions:
      - { name: blue, endpoints: ["127.0.0.1:3"], weight: 0 }
      - { name: green, endpoints: ["127.0.0.1:4"], weight: 1 }
"#;

fn tables(weights: &[&[u32]]) -> Vec<RouteTable> {
    let config = crate::config::parse(Path::new("test.yaml"), CONFIG).unwrap();
    config
        .routes
        .iter()
        .zip(weights)
        .map(|(r, w)| RouteTable::new(r, w))
        .collect()
}

fn default_tables() -> Vec<RouteTable> {
    tables(&[&[90, 10], &[0, 1]])
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

fn decide_for(
    host: Option<&str>,
    path: &str,
    query: Option<&str>,
    hdrs: &HeaderMap,
) -> Result<Decision, NoDecision> {
    let head = RequestHead {
        host,
        path,
        query,
        headers: hdrs,
    };
    decide(&head, &default_tables(), &mut SmallRng::seed_from_u64(7))
}

#[test]
fn table_of_decisions() {
    struct Case {
        name: &'static str,
        host: Option<&'static str>,
        path: &'static str,
        query: Option<&'static str>,
        headers: &'static [(&'static str, &'static str)],
        want: Result<(usize, usize, Reason), NoDecision>,
    }
    let cases = [
        Case {
            name: "header rule pins canary",
            host: Some("shop.example.com"),
            path: "/cart",
            query: None,
            headers: &[("x-canary", "always")],
            want: Ok((0, 1, Reason::Rule(0))),
        },
        Case {
            name: "header value must be exact",
            host: Some("shop.example.com"),
            path: "/",
            query: Some("ring=0"),
            headers: &[("x-canary", "Always")],
            want: Ok((0, 0, Reason::Rule(2))),
        },
        Case {
            name: "cookie rule among other cookies",
            host: Some("eu.shop.example.com:8443"),
            path: "/",
            query: None,
            headers: &[("cookie", "a=b; beta=1 ; c=d")],
            want: Ok((0, 1, Reason::Rule(1))),
        },
        Case {
            name: "cookie in a second Cookie header",
            host: Some("shop.example.com"),
            path: "/",
            query: None,
            headers: &[("cookie", "a=b"), ("cookie", "beta=1")],
            want: Ok((0, 1, Reason::Rule(1))),
        },
        Case {
            name: "query rule pins stable",
            host: Some("SHOP.EXAMPLE.COM"),
            path: "/",
            query: Some("x=1&ring=0"),
            headers: &[],
            want: Ok((0, 0, Reason::Rule(2))),
        },
        Case {
            name: "first rule wins",
            host: Some("shop.example.com"),
            path: "/",
            query: Some("ring=0"),
            headers: &[("x-canary", "always")],
            want: Ok((0, 1, Reason::Rule(0))),
        },
        Case {
            name: "cohort key decides when no rule matches",
            host: Some("shop.example.com"),
            path: "/",
            query: None,
            headers: &[("x-user-id", "alice")],
            want: Ok((
                0,
                usize::from(bucket_of("shop-2026-11", b"alice") >= 9_000),
                Reason::Cohort,
            )),
        },
        Case {
            name: "other host falls to the path route",
            host: Some("example.org"),
            path: "/api/v1",
            query: None,
            headers: &[("x-canary", "always")],
            want: Ok((1, 1, Reason::Weight)),
        },
        Case {
            name: "no host header cannot match a host route",
            host: None,
            path: "/",
            query: None,
            headers: &[],
            want: Err(NoDecision::NoRoute),
        },
        Case {
            name: "no route for other host and path",
            host: Some("example.org"),
            path: "/home",
            query: None,
            headers: &[],
            want: Err(NoDecision::NoRoute),
        },
    ];
    for c in cases {
        let h = headers(c.headers);
        let got = decide_for(c.host, c.path, c.query, &h).map(|d| (d.route, d.version, d.reason));
        assert_eq!(got, c.want, "case: {}", c.name);
    }
}

#[test]
fn route_with_all_weights_zero_has_no_version_but_rules_still_pin() {
    let t = tables(&[&[0, 0], &[0, 1]]);
    let h = headers(&[]);
    let head = RequestHead {
        host: Some("shop.example.com"),
        path: "/",
        query: None,
        headers: &h,
    };
    let mut rng = SmallRng::seed_from_u64(1);
    assert_eq!(decide(&head, &t, &mut rng), Err(NoDecision::NoVersion(0)));
    let h = headers(&[("x-canary", "always")]);
    let head = RequestHead {
        headers: &h,
        ..head
    };
    assert_eq!(decide(&head, &t, &mut rng).map(|d| d.version), Ok(1));
}

#[test]
fn weighted_split_is_within_one_and_a_half_points_over_10000_requests() {
    for weights in [[95u32, 5], [50, 50], [1, 99], [0, 100], [100, 0]] {
        let t = tables(&[&weights, &[0, 1]]);
        let h = headers(&[]);
        let head = RequestHead {
            host: Some("shop.example.com"),
            path: "/",
            query: None,
            headers: &h,
        };
        let mut rng = SmallRng::seed_from_u64(42);
        let mut counts = [0u32; 2];
        for _ in 0..10_000 {
            counts[decide(&head, &t, &mut rng).unwrap().version] += 1;
        }
        for v in 0..2 {
            let share = f64::from(counts[v]) / 100.0;
            let want = f64::from(weights[v]);
            assert!(
                (share - want).abs() <= 1.5,
                "weights {weights:?}: version {v} got {share}%"
            );
            if weights[v] == 0 {
                assert_eq!(counts[v], 0, "a weight-0 version gets nothing");
            }
        }
    }
}

#[test]
fn cohort_is_monotonic_as_the_canary_weight_rises() {
    let keys: Vec<String> = (0..5_000).map(|i| format!("user-{i}")).collect();
    let mut previous: Option<Vec<usize>> = None;
    for canary in 0..=100u32 {
        let split = Split::new(&[100 - canary, canary]);
        let now: Vec<usize> = keys
            .iter()
            .map(|k| split.by_bucket(bucket_of("shop", k.as_bytes())).unwrap())
            .collect();
        if let Some(prev) = &previous {
            for (i, (before, after)) in prev.iter().zip(&now).enumerate() {
                assert!(
                    !(*before == 1 && *after == 0),
                    "{} moved back from canary to stable at {canary}%",
                    keys[i]
                );
            }
        }
        let on_canary = now.iter().filter(|v| **v == 1).count() as f64 / keys.len() as f64;
        assert!(
            (on_canary * 100.0 - f64::from(canary)).abs() <= 2.5,
            "at {canary}% the canary cohort is {on_canary}"
        );
        previous = Some(now);
    }
}

#[test]
fn bucket_ranges_follow_declared_order() {
    let s = Split::new(&[95, 5]);
    assert_eq!(s.by_bucket(0), Some(0));
    assert_eq!(s.by_bucket(9_499), Some(0));
    assert_eq!(s.by_bucket(9_500), Some(1));
    assert_eq!(s.by_bucket(9_999), Some(1));
    assert_eq!(s.bucket_share(1), 500);
    assert_eq!(Split::new(&[0, 0]).by_bucket(3), None);
}
