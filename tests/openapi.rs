//! The OpenAPI document in docs/ and the admin API agree, both ways: every documented operation is
//! served (never "no such path") and answers with a status the document lists for it; every
//! operation the admin listener serves is documented; an unknown route and an unknown path are
//! told apart.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

use common::*;

#[tokio::test]
async fn every_documented_path_answers_with_a_documented_status() {
    let doc: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml"))
            .unwrap(),
    )
    .unwrap();
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("switchyard.yaml");
    std::fs::write(
        &file,
        two_versions(&stable, &canary, (90, 10), "")
            .replace("listeners:", "admin: { addr: \"127.0.0.1:0\" }\nlisteners:"),
    )
    .unwrap();
    let proxy = switchyard::app::start_from_file(&file).await.unwrap();
    let admin = format!("http://{}", proxy.admin_addr().unwrap());

    let paths = doc["paths"].as_mapping().unwrap();
    let mut answered = 0;
    for (path, operations) in paths {
        let path = path.as_str().unwrap();
        for (method, operation) in operations.as_mapping().unwrap() {
            let method = method.as_str().unwrap();
            if method == "parameters" {
                continue;
            }
            let body = if method == "put" {
                r#"{"stable": 80, "canary": 20}"#
            } else {
                ""
            };
            let url = format!("{admin}{}", path.replace("{route}", "shop"));
            let reply = send(&method.to_uppercase(), &url, &[], body).await;
            assert!(
                !reply.body.contains("no_such_path"),
                "{method} {path} is documented but not served: {}",
                reply.body
            );
            let listed = operation["responses"]
                .as_mapping()
                .unwrap()
                .keys()
                .any(|k| k.as_str() == Some(reply.status.as_str()));
            assert!(
                listed,
                "{method} {path} answered {} (not documented): {}",
                reply.status, reply.body
            );
            answered += 1;
        }
    }
    assert!(
        answered >= 12,
        "only {answered} operations found in the document"
    );
    proxy.shutdown().await;
}

#[test]
fn every_served_operation_is_documented() {
    let doc: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml"))
            .unwrap(),
    )
    .unwrap();
    let undocumented: Vec<String> = switchyard::admin::routes::OPERATIONS
        .iter()
        .filter(|(method, path, _)| {
            !doc["paths"][*path][method.to_lowercase().as_str()].is_mapping()
        })
        .map(|(method, path, _)| format!("{method} {path}"))
        .collect();
    assert!(
        undocumented.is_empty(),
        "served but not in docs/openapi.yaml: {undocumented:?}"
    );
}

#[tokio::test]
async fn an_unknown_route_and_an_unknown_path_are_told_apart() {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    let proxy = start_proxy(
        &two_versions(&stable, &canary, (90, 10), "")
            .replace("listeners:", "admin: { addr: \"127.0.0.1:0\" }\nlisteners:"),
    )
    .await;
    let admin = format!("http://{}", proxy.admin_addr().unwrap());
    let unknown_route = get(&client(), &format!("{admin}/api/v1/routes/nope"), &[]).await;
    assert_eq!(unknown_route.status, 404);
    assert!(
        unknown_route.body.contains("\"no_such_route\""),
        "{}",
        unknown_route.body
    );
    let unknown_path = get(&client(), &format!("{admin}/api/v1/routes/shop/nope"), &[]).await;
    assert_eq!(unknown_path.status, 404);
    assert!(
        unknown_path.body.contains("\"no_such_path\""),
        "{}",
        unknown_path.body
    );
    let wrong_method = get(
        &client(),
        &format!("{admin}/api/v1/routes/shop/weights"),
        &[],
    )
    .await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.headers["allow"], "PUT");
    proxy.shutdown().await;
}
