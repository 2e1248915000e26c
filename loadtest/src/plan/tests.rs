//! Checking plans: bounds, ranges, headers.

use super::*;

fn refused(plan: &Plan) -> String {
    plan.validate().unwrap_err().to_string()
}

#[test]
fn the_default_plan_is_valid_and_bounded() {
    let p = Prepared::new(&Plan::new("http://127.0.0.1:8080/")).unwrap();
    assert_eq!(p.duration, Duration::from_secs(10));
    assert_eq!(p.connections, 8);
}

#[test]
fn durations_over_an_hour_and_unbounded_runs_are_refused() {
    let mut plan = Plan::new("http://127.0.0.1:8080/");
    plan.duration = Some(Duration::from_secs(3601));
    assert!(refused(&plan).starts_with("duration: 1h 1s is out of range"));
    plan.duration = None;
    assert_eq!(refused(&plan), "a duration or a request count is required");
    plan.requests = Some(100);
    let p = Prepared::new(&plan).unwrap();
    assert_eq!(
        p.duration, MAX_DURATION,
        "a count alone is still time-bounded"
    );
}

#[test]
fn open_loop_counts_that_cannot_be_sent_within_an_hour_are_refused() {
    let mut plan = Plan::new("http://127.0.0.1:8080/");
    plan.duration = None;
    plan.mode = Mode::OpenLoop { rate_per_sec: 1.0 };
    plan.requests = Some(3600);
    assert!(plan.validate().is_ok());
    plan.requests = Some(3601);
    assert!(refused(&plan).starts_with("requests: 3601 is out of range"));
}

#[test]
fn out_of_range_numbers_are_refused() {
    let base = Plan::new("http://127.0.0.1:8080/");
    type Change = fn(&mut Plan);
    let cases: [(Change, &str); 6] = [
        (|p| p.mode = Mode::OpenLoop { rate_per_sec: 0.0 }, "rate"),
        (
            |p| {
                p.mode = Mode::OpenLoop {
                    rate_per_sec: f64::NAN,
                }
            },
            "rate",
        ),
        (
            |p| p.mode = Mode::ClosedLoop { concurrency: 0 },
            "concurrency",
        ),
        (|p| p.connections = Some(0), "connections"),
        (|p| p.timeout = Duration::ZERO, "timeout"),
        (
            |p| {
                p.user_keys = Some(UserKeys {
                    header: "x-user-id".into(),
                    users: 0,
                })
            },
            "users",
        ),
    ];
    for (change, field) in cases {
        let mut plan = base.clone();
        change(&mut plan);
        assert!(refused(&plan).starts_with(field), "{field}");
    }
}

#[test]
fn headers_are_checked_and_host_is_kept_apart() {
    let mut plan = Plan::new("http://127.0.0.1:8080/");
    plan.headers = vec![
        ("Host".into(), "shop.example.com".into()),
        ("x-canary".into(), " always".into()),
    ];
    plan.user_keys = Some(UserKeys {
        header: "x-user-id".into(),
        users: 3,
    });
    let p = Prepared::new(&plan).unwrap();
    assert_eq!(p.host.unwrap(), "shop.example.com");
    assert_eq!(p.headers.len(), 1);
    assert_eq!(p.headers["x-canary"], "always");
    let (name, values) = p.users.unwrap();
    assert_eq!(name, "x-user-id");
    assert_eq!(values, ["user-0", "user-1", "user-2"]);

    plan.headers = vec![("bad name".into(), "v".into())];
    assert!(refused(&plan).starts_with("header"));
    plan.headers = vec![("host".into(), "a b".into())];
    assert!(refused(&plan).starts_with("header") || refused(&plan).starts_with("host"));
}
