//! Scenario files: the shipped ones, defaults, errors, and flags laid over a file.

use super::*;

const SHIPPED: [(&str, &str); 4] = [
    (
        "plain-split.yaml",
        include_str!("../../scenarios/plain-split.yaml"),
    ),
    (
        "rules-and-cohort.yaml",
        include_str!("../../scenarios/rules-and-cohort.yaml"),
    ),
    (
        "mirror-100.yaml",
        include_str!("../../scenarios/mirror-100.yaml"),
    ),
    ("rollout.yaml", include_str!("../../scenarios/rollout.yaml")),
];

fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    Scenario::from_yaml(Path::new("test.yaml"), text)
}

#[test]
fn every_shipped_scenario_becomes_a_valid_plan_naming_its_proxy_config() {
    for (name, text) in SHIPPED {
        let scenario = Scenario::from_yaml(Path::new(name), text).unwrap();
        assert!(scenario.description.is_some(), "{name}");
        let config = scenario.proxy_config.clone().unwrap();
        assert!(config.starts_with(name.trim_end_matches(".yaml")), "{name}");
        let plan = scenario.into_plan().unwrap();
        plan.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(plan.count_header.as_deref(), Some("x-switchyard-version"));
    }
}

#[test]
fn rules_and_cohort_sends_one_request_in_four_to_the_rule() {
    let plan = parse(SHIPPED[1].1).unwrap().into_plan().unwrap();
    assert_eq!(plan.targets.len(), 4);
    assert_eq!(
        plan.targets
            .iter()
            .filter(|u| u.contains("canary=always"))
            .count(),
        1
    );
    assert_eq!(plan.user_keys.unwrap().users, 1000);
    assert_eq!(plan.mode, Mode::ClosedLoop { concurrency: 16 });
    assert_eq!(plan.requests, Some(20_000));
    assert_eq!(plan.duration, None);
}

#[test]
fn an_empty_scenario_gets_the_defaults() {
    let mut scenario = parse("{}").unwrap();
    scenario.urls = vec!["http://127.0.0.1:1/".into()];
    let plan = scenario.into_plan().unwrap();
    assert_eq!(plan.mode, Mode::ClosedLoop { concurrency: 8 });
    assert_eq!(plan.duration, Some(DEFAULT_DURATION));
    assert_eq!(plan.timeout, DEFAULT_TIMEOUT);
    assert_eq!(plan.method, Method::GET);
    assert_eq!(plan.protocol, Protocol::Http1);
}

#[test]
fn unknown_keys_and_bad_durations_are_refused_with_their_line() {
    let err = parse("urls: []\nrates: 5\n").unwrap_err();
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(cause.contains("unknown field `rates`"), "{cause}");
    assert!(cause.contains("line 2"), "{cause}");

    let err = parse("duration: soon\n").unwrap_err();
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(cause.contains("\"soon\" is not a duration"), "{cause}");
}

#[test]
fn a_rate_and_a_concurrency_together_are_refused() {
    let err = parse("rate: 5\nconcurrency: 2\n")
        .unwrap()
        .into_plan()
        .unwrap_err();
    assert!(matches!(err, ScenarioError::BothModes));
}

#[test]
fn flags_win_over_the_file_and_headers_merge_by_name() {
    let file = parse(
        "urls: [\"http://127.0.0.1:8080/\"]\nrate: 100\nduration: 30s\n\
         headers: [\"x-a: 1\", \"X-B: 2\"]\nprotocol: http2\n",
    )
    .unwrap();
    let flags = Scenario {
        concurrency: Some(4),
        requests: Some(50),
        headers: vec!["x-b: 3".into(), "x-c: 4".into()],
        ..Scenario::default()
    };
    let plan = file.overlay(flags).into_plan().unwrap();
    assert_eq!(plan.targets, ["http://127.0.0.1:8080/"]);
    assert_eq!(plan.mode, Mode::ClosedLoop { concurrency: 4 });
    assert_eq!(plan.duration, Some(Duration::from_secs(30)));
    assert_eq!(plan.requests, Some(50));
    assert_eq!(plan.protocol, Protocol::Http2);
    let headers: Vec<(&str, &str)> = plan
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    assert_eq!(headers, [("x-a", "1"), ("x-b", "3"), ("x-c", "4")]);
}

#[test]
fn header_lines_split_at_the_first_colon() {
    assert_eq!(
        parse_header_line("host: 127.0.0.1:8080").unwrap(),
        ("host".into(), "127.0.0.1:8080".into())
    );
    assert_eq!(
        parse_header_line("x-empty:").unwrap(),
        ("x-empty".into(), String::new())
    );
    assert!(parse_header_line("no colon").is_err());
    assert!(parse_header_line(": value").is_err());
}
