//! Counting outcomes and showing the report.

use std::time::Duration;

use http::HeaderValue;

use super::*;

fn response(status: u16, ms: u64, served_by: Option<&'static str>) -> Outcome {
    Outcome::Response {
        status,
        latency: Duration::from_millis(ms),
        counted: served_by.map(HeaderValue::from_static),
    }
}

fn facts(sent: u64, count_header: Option<&str>) -> RunFacts {
    RunFacts {
        targets: vec!["http://127.0.0.1:8080/".into()],
        protocol: Protocol::Http1,
        mode: Mode::OpenLoop {
            rate_per_sec: 100.0,
        },
        connections: 4,
        connections_opened: 4,
        sent,
        elapsed: Duration::from_secs(2),
        count_header: count_header.map(str::to_string),
    }
}

/// 100 responses (1..=100 ms; 90 of them 200, 5 of them 302, 5 of them 500) and 3 failures.
fn sample() -> Report {
    let mut tally = Tally::new().unwrap();
    for ms in 1..=100u64 {
        let status = match ms {
            1..=90 => 200,
            91..=95 => 302,
            _ => 500,
        };
        let served_by = if ms % 4 == 0 {
            Some("canary")
        } else {
            Some("stable")
        };
        let error = tally.record(response(status, ms, if ms == 7 { None } else { served_by }));
        assert_eq!(error, status == 500);
    }
    assert!(tally.record(Outcome::TimedOut));
    assert!(tally.record(Outcome::Failed(Failure::Connect("connect: refused".into()))));
    assert!(tally.record(Outcome::Failed(Failure::Other("reset".into()))));
    tally.into_report(facts(103, Some("x-served-by")))
}

#[test]
fn every_outcome_lands_in_exactly_one_count() {
    let r = sample();
    assert_eq!(r.sent, 103);
    assert_eq!(r.completed, 100);
    assert_eq!(r.statuses, BTreeMap::from([(200, 90), (302, 5), (500, 5)]));
    assert_eq!(r.errors.status, BTreeMap::from([(500, 5)]));
    assert_eq!(
        (r.errors.connect, r.errors.timeout, r.errors.other),
        (1, 1, 1)
    );
    assert_eq!(r.errors.total(), 8);
    assert_eq!(r.errors.first.as_deref(), Some("connect: refused"));
    // sent = completed + failures that got no response
    let e = &r.errors;
    assert_eq!(r.sent, r.completed + e.connect + e.timeout + e.other);
    assert_eq!(r.requests_per_sec, 50.0);
}

#[test]
fn responses_are_counted_per_header_value_with_absent_ones_apart() {
    let counts = sample().header_counts.unwrap();
    assert_eq!(counts.header, "x-served-by");
    assert_eq!(
        counts.counts,
        BTreeMap::from([
            (ABSENT.to_string(), 1),
            ("canary".to_string(), 25),
            ("stable".to_string(), 74),
        ])
    );
}

#[test]
fn percentiles_come_from_the_histogram_in_milliseconds() {
    let l = sample().latency_ms;
    // 3 significant digits: within 0.1 % of the true value.
    let near = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
    assert!(near(l.p50, 50.0), "{l:?}");
    assert!(near(l.p90, 90.0), "{l:?}");
    assert!(near(l.p99, 99.0), "{l:?}");
    assert!(near(l.p999, 100.0), "{l:?}");
    assert!(near(l.max, 100.0), "{l:?}");
    assert!(near(l.mean, 50.5), "{l:?}");
}

#[test]
fn a_run_without_responses_reports_zeros_not_nonsense() {
    let mut tally = Tally::new().unwrap();
    tally.record(Outcome::TimedOut);
    let r = tally.into_report(facts(1, None));
    assert_eq!(r.latency_ms, Latency::default());
    assert_eq!(r.requests_per_sec, 0.0);
    assert!(r.header_counts.is_none());
    assert!(r.to_string().contains("timeout 1"));
}

#[test]
fn latencies_beyond_the_histogram_saturate_instead_of_failing() {
    let mut tally = Tally::new().unwrap();
    tally.record(response(200, 2 * 3_600_000, None));
    tally.record(response(200, 0, None));
    let r = tally.into_report(facts(2, None));
    assert_eq!(r.completed, 2);
    assert!(r.latency_ms.max >= 3_599_000.0);
}

#[test]
fn json_has_the_documented_shape() {
    let json = serde_json::to_value(sample()).unwrap();
    assert_eq!(json["sent"], 103);
    assert_eq!(json["completed"], 100);
    assert_eq!(json["protocol"], "http1");
    assert_eq!(json["mode"]["open_loop"]["rate_per_sec"], 100.0);
    assert_eq!(json["statuses"]["200"], 90);
    assert_eq!(json["errors"]["status"]["500"], 5);
    assert_eq!(json["errors"]["timeout"], 1);
    assert_eq!(json["header_counts"]["counts"]["canary"], 25);
    assert!(json["latency_ms"]["p999"].as_f64().unwrap() > 99.0);
}

#[test]
fn the_table_shows_counts_errors_latency_statuses_and_the_split() {
    let table = sample().to_string();
    for line in [
        "mode        open loop, 100 req/s scheduled",
        "requests    sent 103, completed 100, errors 8",
        "errors      connect 1, timeout 1, other 1, status 5",
        "first error connect: refused",
        "elapsed     2.000 s, 50.0 req/s",
        "latency ms  p50 50.",
        "status      200                      90   90.0%",
        "            500                       5    5.0%",
        "x-served-by (absent)                  1    1.0%",
        "            stable                   74   74.0%",
    ] {
        assert!(table.contains(line), "missing {line:?} in\n{table}");
    }
}
