//! `switchyard demo` runs end to end on a fresh machine and says what a newcomer should see.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

#[test]
fn demo_once_shows_split_rule_cohort_and_a_ctl_weight_change() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "demo",
            "--once",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("1000 requests, split by weight"), "{text}");
    assert!(
        text.contains("release page      http://127.0.0.1:") && text.contains("/ui/"),
        "{text}"
    );
    assert!(
        text.contains("canary canary canary canary canary"),
        "{text}"
    );
    assert!(
        text.contains("stable stable stable stable stable   (bucket 265 of 10000"),
        "{text}"
    );
    assert!(text.contains("weights shop stable=50 canary=50"), "{text}");
    assert!(text.contains("canary   50      api     10"), "{text}");
    assert!(
        text.contains("alice (bucket 265) stays where she was: stable stable stable"),
        "{text}"
    );
}
