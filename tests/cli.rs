//! The command line as a user meets it: each subcommand's help lists its own flags only, and
//! `ctl`'s flags work before or after the verb.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

use std::process::Command;

fn switchyard(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env_remove("SWITCHYARD_ADMIN")
        .env_remove("SWITCHYARD_CONFIG")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn each_subcommand_help_lists_only_its_own_flags() {
    let (_, ctl) = switchyard(&["ctl", "status", "--help"]);
    for own in ["--admin", "--token", "--json"] {
        assert!(ctl.contains(own), "ctl status --help lacks {own}: {ctl}");
    }
    for foreign in ["--config", "--log-format", "--worker-threads"] {
        assert!(
            !ctl.contains(foreign),
            "ctl status --help shows {foreign}: {ctl}"
        );
    }
    let (_, check) = switchyard(&["check", "--help"]);
    assert!(check.contains("--config"), "{check}");
    assert!(
        !check.contains("--admin") && !check.contains("--worker-threads"),
        "{check}"
    );
    let (_, demo) = switchyard(&["demo", "--help"]);
    assert!(
        demo.contains("--listen") && !demo.contains("--config"),
        "{demo}"
    );
}

#[test]
fn ctl_flags_work_before_and_after_the_verb() {
    // Nothing listens on the dead port: both orders reach the point of calling it (exit 3, the
    // address named), neither is a usage error (exit 2).
    let url = format!("http://{}", common::dead_port());
    let (before, out_before) = switchyard(&["ctl", "--admin", &url, "--json", "status"]);
    let (after, out_after) = switchyard(&["ctl", "status", "--admin", &url, "--json"]);
    assert_eq!(before, Some(3), "{out_before}");
    assert_eq!(after, Some(3), "{out_after}");
    assert!(out_after.contains(&url), "{out_after}");
}

#[test]
fn a_cpu_slice_outside_the_kernels_range_is_refused_naming_the_flag_and_the_range() {
    for value in ["5us", "1s", "fast"] {
        let (code, out) = switchyard(&["run", "--cpu-slice", value, "--config", "none.yaml"]);
        assert_eq!(code, Some(2), "--cpu-slice {value}: {out}");
        assert!(out.contains("--cpu-slice"), "names the flag: {out}");
        assert!(out.contains(value), "names the value: {out}");
    }
    let (_, out) = switchyard(&["run", "--cpu-slice", "5us", "--config", "none.yaml"]);
    assert!(out.contains("100µs to 100ms"), "names the range: {out}");
}

#[test]
fn run_announces_each_listener_with_the_scheme_a_client_must_use() {
    let certs = concat!(env!("CARGO_MANIFEST_DIR"), "/certs-dev");
    let dir = tempfile::tempdir().unwrap();
    let file = common::config_file(
        dir.path(),
        &format!(
            r#"
listeners:
  - {{ name: secure, addr: "127.0.0.1:0", tls: {{ certificates: [{{ cert: "{certs}/localhost.crt", key: "{certs}/localhost.key" }}] }} }}
  - {{ name: plain, addr: "127.0.0.1:0" }}
routes:
  - name: shop
    versions: [{{ name: stable, endpoints: ["127.0.0.1:9"], weight: 1 }}]
"#
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", "--config"])
        .arg(&file)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    // Bounded: the two listener lines come first, or the output ends (the child exits).
    let announced: Vec<String> = lines.by_ref().take(2).map_while(Result::ok).collect();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(announced.len(), 2, "{announced:?}");
    assert!(
        announced[0].starts_with("switchyard: listener secure on https://127.0.0.1:"),
        "{announced:?}"
    );
    assert!(
        announced[1].starts_with("switchyard: listener plain on http://127.0.0.1:"),
        "{announced:?}"
    );
}
