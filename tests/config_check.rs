//! `switchyard check`: every example in config/ passes, and each kind of bad file is refused with
//! a message that names the file, the field path and the line.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

use std::path::Path;
use std::process::Command;

fn check(file: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--config"])
        .arg(file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_example_in_config_passes_check() {
    let mut checked = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let (ok, text) = check(&path);
            assert!(ok, "{}: {text}", path.display());
            assert!(text.contains(": ok"), "{text}");
            checked += 1;
        }
    }
    assert!(checked >= 3, "found only {checked} example files");
}

const GOOD: &str = r#"listeners:
  - name: public
    addr: "127.0.0.1:8080"
routes:
  - name: shop
    versions:
      - name: stable
        endpoints: ["127.0.0.1:9001"]
        weight: 90
      - name: canary
        endpoints: ["127.0.0.1:9101"]
        weight: 10
    rules:
      - match: { header: { name: "x-canary", value: "always" } }
        version: canary
    cohort:
      key: { header: "x-user-id" }
    timeouts: { connect: "1s" }
"#;

#[test]
fn bad_files_are_refused_with_file_field_and_line() {
    // (what is wrong, text to replace in GOOD, replacement, expected "line:col: path: message" part)
    let cases: &[(&str, &str, &str, &str)] = &[
        ("unknown field", "        weight: 90", "        weight: 90\n        wieght: 3", "10:9: routes[0].versions[0]: unknown field `wieght`"),
        ("no route", "routes:\n  - name: shop", "routes: []\nunused:\n  - name: shop", "unknown field `unused`"),
        ("duplicate route", "    timeouts: { connect: \"1s\" }", "    timeouts: { connect: \"1s\" }\n  - name: shop\n    versions: [{ name: a, endpoints: [\"127.0.0.1:1\"], weight: 1 }]", "19:5: routes[1].name: duplicate route name \"shop\""),
        ("duplicate version", "      - name: canary", "      - name: stable", "10:9: routes[0].versions[1].name: duplicate version name \"stable\""),
        ("all weights zero", "weight: 90\n      - name: canary\n        endpoints: [\"127.0.0.1:9101\"]\n        weight: 10", "weight: 0\n      - name: canary\n        endpoints: [\"127.0.0.1:9101\"]\n        weight: 0", "routes[0].versions: all weights are 0"),
        ("negative weight", "weight: 10", "weight: -5", "12:17: routes[0].versions[1].weight: weight -5 is negative"),
        ("non-integer weight", "weight: 10", "weight: 2.5", "12:17: routes[0].versions[1].weight: weight 2.5 is not a whole number"),
        ("rule names unknown version", "        version: canary", "        version: canry", "15:9: routes[0].rules[0].version: unknown version \"canry\" (this route has: stable, canary)"),
        ("endpoint without port", "\"127.0.0.1:9101\"", "\"127.0.0.1\"", "11:21: routes[0].versions[1].endpoints[0]: \"127.0.0.1\" is not host:port (has no port)"),
        ("endpoint with scheme", "\"127.0.0.1:9101\"", "\"http://127.0.0.1:9101\"", "routes[0].versions[1].endpoints[0]: \"http://127.0.0.1:9101\" is not host:port"),
        ("malformed duration", "connect: \"1s\"", "connect: \"1 sec ond\"", "18:17: routes[0].timeouts.connect: \"1 sec ond\" is not a duration"),
        ("cohort without key", "key: { header: \"x-user-id\" }", "key: {}", "17:7: routes[0].cohort.key: set exactly one of header or cookie"),
        ("bad listener address", "addr: \"127.0.0.1:8080\"", "addr: \"localhost\"", "3:5: listeners[0].addr: \"localhost\" is not ip:port"),
        ("bad version name", "      - name: canary", "      - name: \"can ary\"", "routes[0].versions[1].name: \"can ary\" is not a valid name"),
        ("rule with two conditions", "{ header: { name: \"x-canary\", value: \"always\" } }", "{ header: { name: \"a\", value: \"b\" }, cookie: { name: \"c\", value: \"d\" } }", "routes[0].rules[0].match: set exactly one of header, cookie or query"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, GOOD).unwrap();
    let (ok, text) = check(&file);
    assert!(ok, "the base file is valid: {text}");

    for (what, from, to, expected) in cases {
        assert!(
            GOOD.contains(from),
            "case {what}: {from:?} is not in the base file"
        );
        std::fs::write(&file, GOOD.replacen(from, to, 1)).unwrap();
        let (ok, text) = check(&file);
        assert!(!ok, "case {what}: accepted");
        assert!(
            text.contains(&format!("{}:", file.display())),
            "case {what}: the file is not named: {text}"
        );
        assert!(
            text.contains(expected),
            "case {what}: expected {expected:?} in:\n{text}"
        );
    }
}

#[test]
fn a_file_without_routes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("empty.yaml");
    std::fs::write(&file, "listeners: [{ name: a, addr: \"127.0.0.1:1\" }]\n").unwrap();
    let (ok, text) = check(&file);
    assert!(!ok);
    assert!(
        text.contains("routes: at least one route is required"),
        "{text}"
    );
}

#[test]
fn a_missing_file_is_named() {
    let (ok, text) = check(Path::new("/nonexistent/switchyard.yaml"));
    assert!(!ok);
    assert!(
        text.contains("/nonexistent/switchyard.yaml: cannot read"),
        "{text}"
    );
}

fn write(dir: &Path, text: &str) -> std::path::PathBuf {
    let file = dir.join("switchyard.yaml");
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn check_refuses_an_exposed_admin_endpoint_without_a_token_as_run_does() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("admin:\n  addr: \"0.0.0.0:9901\"\n{GOOD}");
    let file = write(dir.path(), &text);
    let (ok, out) = check(&file);
    assert!(!ok, "{out}");
    assert!(out.contains(":2:") && out.contains("admin.addr"), "{out}");
    assert!(out.contains("no token is configured"), "{out}");

    let run = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("no token is configured"));
}

#[test]
fn check_refuses_a_state_file_in_a_directory_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("state_file: \"missing/state.json\"\n{GOOD}");
    let (ok, out) = check(&write(dir.path(), &text));
    assert!(!ok, "{out}");
    assert!(out.contains(":1:") && out.contains("state_file"), "{out}");
    assert!(out.contains("does not exist"), "{out}");
}

#[test]
fn check_refuses_an_unreadable_token_file_and_warns_about_an_unset_token_variable() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("admin:\n  addr: \"0.0.0.0:9901\"\n  token_file: \"no-such-token\"\n{GOOD}");
    let (ok, out) = check(&write(dir.path(), &text));
    assert!(!ok, "{out}");
    assert!(
        out.contains("admin.token_file") && out.contains("no-such-token"),
        "{out}"
    );

    // CI has no secrets: an unset variable is a warning for check, an error for run.
    let var = "SWITCHYARD_TEST_TOKEN_NEVER_SET";
    let text = format!("admin:\n  addr: \"0.0.0.0:9901\"\n  token_env: \"{var}\"\n{GOOD}");
    let (ok, out) = check(&write(dir.path(), &text));
    assert!(ok, "{out}");
    assert!(out.contains("warning") && out.contains(var), "{out}");
}
