//! `policyc --claims`: checking and building a policy set that reads the custom `oidc` claims
//! a deployment declares, from outside that deployment.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::process::Output;

use common::policyc_in;
use portcullis_lang::bundle::Bundle;

const POLICY: &str = r#"workload payments_jobs {
  oidc { team == "payments" }
}

target ledger {
  https {
    host = "ledger.internal"
  }
}

permit payments_deploy {
  workload payments_jobs
  target ledger
}
"#;

const CLAIMS: &str = r#"{ "custom_claims": [
  { "name": "team", "path": "org.team", "type": "string", "required": true }
] }"#;

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn setup() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("payments.gate"), POLICY).unwrap();
    std::fs::write(tmp.path().join("claims.json"), CLAIMS).unwrap();
    tmp
}

#[test]
fn check_knows_custom_claims_only_from_the_claims_file() {
    let tmp = setup();
    let without = policyc_in(tmp.path(), &["check", "payments.gate"]);
    assert_eq!(without.status.code(), Some(1), "{}", stderr(&without));
    assert!(
        stderr(&without).contains("unknown claim `team` for `oidc`"),
        "{}",
        stderr(&without)
    );
    let with = policyc_in(
        tmp.path(),
        &["check", "--claims", "claims.json", "payments.gate"],
    );
    assert_eq!(with.status.code(), Some(0), "{}", stderr(&with));
    assert_eq!(
        String::from_utf8_lossy(&with.stdout),
        "ok: 1 file, 1 workload, 1 target, 1 rule\n"
    );
}

#[test]
fn build_records_the_custom_claims_in_the_bundle() {
    let tmp = setup();
    let args = [
        "build",
        "payments.gate",
        "--claims",
        "claims.json",
        "-o",
        "payments.bundle",
    ];
    let built = policyc_in(tmp.path(), &args);
    assert_eq!(built.status.code(), Some(0), "{}", stderr(&built));
    let bytes = std::fs::read(tmp.path().join("payments.bundle")).unwrap();
    let bundle = Bundle::from_bytes(&bytes).unwrap();
    let (_, team) = bundle.custom_claims().claim("team").unwrap();
    assert!(team.required);
}

#[test]
fn an_unusable_claims_file_is_a_usage_error() {
    let tmp = setup();
    std::fs::write(
        tmp.path().join("bad.json"),
        r#"[{ "name": "team", "type": "text" }]"#,
    )
    .unwrap();
    for (file, expected) in [
        ("bad.json", "unknown claim type `text`"),
        ("missing.json", "cannot use the claims file `missing.json`"),
    ] {
        for command in ["check", "build"] {
            let mut args = vec![command, "payments.gate", "--claims", file];
            if command == "build" {
                args.extend(["-o", "out.bundle"]);
            }
            let output = policyc_in(tmp.path(), &args);
            assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
            assert!(stderr(&output).contains(expected), "{}", stderr(&output));
        }
    }
    assert!(!tmp.path().join("out.bundle").exists());
}
