//! The `sluicegate` binary itself: exit codes and what it prints.

use std::process::Command;

use sluicegate_test_artifacts as a;

fn sluicegate(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run sluicegate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_passes_a_good_stage_with_exit_code_zero() {
    let (ok, stdout, _) = sluicegate(&["check", a::TICK_SOURCE, "--config", "records=300"]);
    assert!(ok, "{stdout}");
    assert!(stdout.contains("300 records"), "{stdout}");
    assert!(stdout.contains("result: ok"), "{stdout}");
}

#[test]
fn check_names_the_broken_rule_with_a_nonzero_exit_code() {
    let (ok, stdout, stderr) = sluicegate(&["check", a::CREDITS_EXCEEDED]);
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("result: FAIL (rule C2 credits-exceeded)"),
        "{stdout}"
    );
    assert!(stderr.contains("stage `credits_exceeded`"), "{stderr}");
}

#[test]
fn check_refuses_a_file_that_is_not_a_component() {
    let this_file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cli.rs");
    let (ok, stdout, _) = sluicegate(&["check", this_file]);
    assert!(!ok);
    assert!(
        stdout.contains("load     FAIL") && stdout.contains("not a WebAssembly file"),
        "{stdout}"
    );
}
