//! Runs the built `policyc` binary the way a user or CI does.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn policyc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_policyc"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn lang_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn path_arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn check_accepts_the_example_policy_set() {
    let examples = lang_dir().join("../examples/policies");
    let output = policyc(&["check", path_arg(&examples)]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "ok: 3 files, 6 workloads, 3 targets, 8 rules\n"
    );
}

#[test]
fn check_reports_diagnostics_and_exits_1() {
    let file = lang_dir().join("tests/corpus/err/unknown_claim.gate");
    let output = policyc(&["check", path_arg(&file)]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("gate::E0201"), "{stderr}");
    assert!(
        stderr.contains("help: did you mean `repository`?"),
        "{stderr}"
    );
    assert!(stderr.contains("unknown_claim.gate:2:12"), "{stderr}");
    assert!(
        stderr.ends_with("error: policy set has 2 errors\n"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "colour with NO_COLOR set: {stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn check_of_a_missing_path_exits_2_with_one_line() {
    let output = policyc(&["check", "/nonexistent/policies"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: cannot read `/nonexistent/policies`"),
        "{stderr}"
    );
}

#[test]
fn build_writes_a_bundle_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("policies.bundle");
    let examples = lang_dir().join("../examples/policies");
    let output = policyc(&["build", path_arg(&examples), "-o", path_arg(&out)]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bytes = std::fs::read(&out).unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let prefix = format!(
        "wrote {} ({} bytes, bundle sha256:",
        out.display(),
        bytes.len()
    );
    assert!(stdout.starts_with(&prefix), "{stdout}");
    let hash = stdout
        .trim_end()
        .trim_start_matches(&prefix)
        .trim_end_matches(')');
    assert_eq!(hash.len(), 64, "{stdout}");
    assert!(hash.chars().all(|ch| ch.is_ascii_hexdigit()), "{stdout}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "temporary files left behind");
}

#[test]
fn build_of_an_invalid_policy_set_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("policies.bundle");
    let file = lang_dir().join("tests/corpus/err/missing_clause.gate");
    let output = policyc(&["build", path_arg(&file), "-o", path_arg(&out)]);
    assert_eq!(output.status.code(), Some(1));
    assert!(!out.exists());
}
