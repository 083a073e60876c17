//! `policyc build -o` writes a bundle to a regular file or through a symlink to one, and
//! refuses to replace anything else: a directory, a pipe, or a source of the policy set.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policies")
}

fn build(policies: &Path, output: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_policyc"))
        .env("NO_COLOR", "1")
        .arg("build")
        .arg(policies)
        .arg("-o")
        .arg(output)
        .output()
        .unwrap()
}

fn refused(out: &Output, why: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(why), "{stderr}");
}

#[test]
fn build_writes_regular_files_and_through_symlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("policy.bundle");
    let out = build(&examples(), &plain);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&plain).unwrap();
    assert!(bytes.starts_with(b"GATEBNDL"));

    let real = tmp.path().join("real.bundle");
    std::fs::write(&real, b"old").unwrap();
    let link = tmp.path().join("link.bundle");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = build(&examples(), &link);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(&real).unwrap(), bytes);
}

#[test]
fn build_refuses_to_replace_what_is_not_a_bundle_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a-directory");
    std::fs::create_dir(&dir).unwrap();
    refused(&build(&examples(), &dir), "not a regular file");

    let fifo = tmp.path().join("a-pipe");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    refused(&build(&examples(), &fifo), "not a regular file");
    assert!(!std::fs::metadata(&fifo).unwrap().is_file());

    let policies = tmp.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let source = policies.join("rules.gate");
    let text = std::fs::read_to_string(examples().join("rules.gate")).unwrap();
    for name in ["workloads.gate", "targets.gate", "rules.gate", "tests.gate"] {
        std::fs::copy(examples().join(name), policies.join(name)).unwrap();
    }
    refused(&build(&policies, &source), "source file of the policy set");
    assert_eq!(std::fs::read_to_string(&source).unwrap(), text);
}

#[test]
fn build_mentions_warnings_without_failing() {
    let tmp = tempfile::tempdir().unwrap();
    let policies = tmp.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("broad.gate"),
        "workload anyone { oidc { } }\ntarget api { https { host = \"api.example\" } }\n\
         permit everyone { workload anyone target api }\n",
    )
    .unwrap();
    let out = build(&policies, &tmp.path().join("out.bundle"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 warning;") && stderr.contains("policyc check"),
        "{stderr}"
    );
}

#[test]
fn test_without_any_test_declaration_fails() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("only.gate"),
        "target api { https { host = \"api.example\" } }\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_policyc"))
        .env("NO_COLOR", "1")
        .arg("test")
        .arg(tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("declares no `test`"), "{stderr}");
}
