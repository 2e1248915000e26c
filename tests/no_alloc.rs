//! The routing decision allocates nothing: counted with a global allocator wrapper, over the
//! weight, rule, cohort and no-route paths.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion
#![allow(unsafe_code)] // a counting global allocator is unsafe by definition; it only forwards to System

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use http::{HeaderMap, HeaderValue};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use switchyard::route::{decide, RequestHead, RouteTable};

struct Counting;

thread_local! {
    /// Allocations made by this thread: the test harness's own threads (its output, its timers)
    /// allocate while the test runs, and must not be counted against the decision.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // `try_with`: a thread being torn down has no counter left, and is not the test's.
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn decide_does_not_allocate() {
    let config = switchyard::config::parse(
        Path::new("t.yaml"),
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
routes:
  - name: shop
    match: { hosts: ["*.example.com"] }
    versions:
      - { name: stable, endpoints: ["127.0.0.1:1"], weight: 95 }
      - { name: canary, endpoints: ["127.0.0.1:3"], weight: 5 }
    rules:
      - match: { cookie: { name: "beta", value: "1" } }
        version: canary
      - match: { query: { name: "ring", value: "0" } }
        version: canary
    cohort: { key: { cookie: "uid" } }
"#,
    )
    .unwrap();
    let tables: Vec<RouteTable> = config
        .routes
        .iter()
        .map(|r| RouteTable::new(r, &[95, 5]))
        .collect();
    let mut plain = HeaderMap::new();
    plain.insert("cookie", HeaderValue::from_static("a=b; c=d"));
    let mut beta = HeaderMap::new();
    beta.insert("cookie", HeaderValue::from_static("a=b; beta=1"));
    let mut user = HeaderMap::new();
    user.insert("cookie", HeaderValue::from_static("uid=u-77; a=b"));
    let heads = [
        RequestHead {
            host: Some("a.example.com"),
            path: "/",
            query: None,
            headers: &plain,
        },
        RequestHead {
            host: Some("a.example.com"),
            path: "/",
            query: None,
            headers: &beta,
        },
        RequestHead {
            host: Some("a.example.com"),
            path: "/",
            query: Some("x=1&ring=0"),
            headers: &plain,
        },
        RequestHead {
            host: Some("a.example.com"),
            path: "/",
            query: None,
            headers: &user,
        },
        RequestHead {
            host: Some("other.org"),
            path: "/",
            query: None,
            headers: &plain,
        },
    ];
    let mut rng = SmallRng::seed_from_u64(3);
    let mut outcomes = Vec::with_capacity(heads.len() * 1_000);

    // The counter sees this thread's allocations (else the test below could not fail).
    let probe = allocations();
    drop(std::hint::black_box(Box::new(1u64)));
    assert!(
        allocations() > probe,
        "the counter counts this thread's allocations"
    );

    let before = allocations();
    for _ in 0..1_000 {
        for head in &heads {
            outcomes.push(decide(head, &tables, &mut rng));
        }
    }
    let allocated = allocations() - before;

    assert_eq!(
        allocated, 0,
        "decide allocated {allocated} times in 5000 calls"
    );
    assert!(outcomes.iter().any(|o| o.is_err()), "the no-route path ran");
    assert!(outcomes.iter().filter(|o| o.is_ok()).count() == 4_000);
}
