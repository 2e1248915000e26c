//! The Grafana dashboard and the Prometheus rules in config/ only name metrics the proxy exports,
//! so a renamed metric cannot silently blank a panel or an alert.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

use std::collections::HashSet;

use common::*;

fn names_in(text: &str) -> HashSet<String> {
    let mut names = HashSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("switchyard_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(base.to_string());
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn dashboard_and_rules_name_only_exported_metrics() {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    let yaml = two_versions(&stable, &canary, (1, 1), "")
        .replace("listeners:", "admin: { addr: \"127.0.0.1:0\" }\nlisteners:");
    let proxy = start_proxy(&yaml).await;
    let exposition = get(
        &client(),
        &format!("http://{}/metrics", proxy.admin_addr().unwrap()),
        &[],
    )
    .await
    .body;
    let exported: HashSet<String> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(
        exported.contains("switchyard_requests_total"),
        "{exposition}"
    );

    let root = env!("CARGO_MANIFEST_DIR");
    let dashboard =
        std::fs::read_to_string(format!("{root}/config/grafana/switchyard-dashboard.json"))
            .unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let rules =
        std::fs::read_to_string(format!("{root}/config/prometheus/switchyard-rules.yaml")).unwrap();
    for (file, text) in [("dashboard", &dashboard), ("rules", &rules)] {
        let used = names_in(text);
        assert!(!used.is_empty(), "{file} names no metric");
        for name in used {
            assert!(
                exported.contains(&name),
                "{file} uses {name}, which the proxy does not export"
            );
        }
    }
}
