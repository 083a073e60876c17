//! `portcullis compliance report` on the store a real server wrote: the controls judged, the
//! three formats, the OSCAL document read back by the published OSCAL model, and bad input.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{decide, example_claims, mint, portcullis, repo, start_server, stop_server};
use serde_json::{Value, json};

/// A store with an allow, a denial and an attestation failure, from the example server.
fn served_store(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("data");
    let server = start_server(&data);
    let target = json!({"name": "billing_api"});
    let release = mint(
        common::GITHUB_KEY,
        &example_claims("billing-release.json"),
        dir,
    );
    let docs = mint(common::GITHUB_KEY, &example_claims("docs-main.json"), dir);
    assert_eq!(
        decide(&server, &release, target.clone(), "POST")["decision"],
        "allow"
    );
    assert_eq!(
        decide(&server, &docs, target.clone(), "POST")["decision"],
        "deny"
    );
    assert_eq!(
        decide(&server, "not-a-token", target, "POST")["decision"],
        "deny"
    );
    stop_server(server);
    data
}

fn report(data: &Path, args: &[&str]) -> Output {
    portcullis()
        .args(["compliance", "report", "--data-dir"])
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

fn result<'a>(report: &'a Value, framework: &str, id: &str) -> &'a Value {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["framework"] == framework && r["id"] == id)
        .unwrap_or_else(|| panic!("no {framework} {id}"))
}

#[test]
fn the_report_judges_a_real_servers_store_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let data = served_store(dir.path());

    let out = report(&data, &["--format", "json"]);
    // The example policy set has grants nobody used and a plain-HTTP target: findings.
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["results"].as_array().unwrap().len(), 19);
    assert_eq!(json["integrity"]["ok"], true);
    for (framework, id) in [
        ("soc2", "CC6.1"),
        ("soc2", "CC6.6"),
        ("soc2", "CC8.1"),
        ("nist-800-53", "AC-3"),
        ("nist-800-53", "AU-9"),
        ("nist-800-53", "AU-12"),
        ("nist-800-53", "IA-2"),
        ("nist-800-53", "IA-9"),
    ] {
        let result = result(&json, framework, id);
        assert_eq!(result["status"], "pass", "{id}: {}", result["reason"]);
    }
    let cc63 = result(&json, "soc2", "CC6.3");
    assert_eq!(cc63["status"], "fail");
    let failing = cc63["failing"].to_string();
    assert!(failing.contains("docs_publishing"), "{failing}");
    assert!(
        !failing.contains("billing_release_deploys"),
        "the used grant passes: {failing}"
    );
    let sc8 = result(&json, "nist-800-53", "SC-8");
    assert_eq!(sc8["status"], "fail");
    assert!(sc8["failing"].to_string().contains("docs_bucket"));

    let out = report(&data, &["--framework", "soc2"]);
    assert_eq!(out.status.code(), Some(3));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("SOC 2: 5 pass, 2 fail, 0 not applicable, 0 error"),
        "{table}"
    );
    assert!(!table.contains("NIST"), "{table}");
    assert!(table.contains("  CC6.3    fail"), "{table}");
    assert!(
        table.contains("remediation: Remove the permit rules"),
        "{table}"
    );
    assert!(table.contains("docs_publishing | docs_publisher | docs_bucket | false | 0"));

    // Only `--keep` leaves the report where the dashboard reads it.
    assert!(!data.join("compliance").exists());
    let out = report(&data, &["--keep", "--format", "json"]);
    assert_eq!(out.status.code(), Some(3));
    let kept: Value =
        serde_json::from_slice(&std::fs::read(data.join("compliance/latest.json")).unwrap())
            .unwrap();
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(kept, printed);
    let history = std::fs::read_to_string(data.join("compliance/history.jsonl")).unwrap();
    assert_eq!(history.lines().count(), 1);
}

#[test]
fn the_oscal_export_round_trips_through_the_published_oscal_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = served_store(dir.path());
    for framework in [None, Some("nist-800-53")] {
        let mut args = vec!["--format", "oscal"];
        if let Some(framework) = framework {
            args.extend(["--framework", framework]);
        }
        let out = report(&data, &args);
        assert_eq!(out.status.code(), Some(3));
        let document: Value = serde_json::from_slice(&out.stdout).unwrap();
        let results = document["assessment-results"]["results"]
            .as_array()
            .unwrap();
        assert_eq!(results.len(), if framework.is_some() { 1 } else { 2 });
        let counted = read_back(dir.path(), &out.stdout);
        let findings = if framework.is_some() { 12 } else { 19 };
        assert_eq!(
            counted,
            json!({"results": results.len(), "findings": findings})
        );
    }
    // A store with no decision: findings that are not applicable carry no OSCAL status, and
    // the document still reads back.
    let empty = dir.path().join("empty");
    stop_server(start_server(&empty));
    let out = report(&empty, &["--format", "oscal"]);
    let document: Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = document["assessment-results"]["results"][0]["findings"]
        .as_array()
        .unwrap();
    let cc61 = findings
        .iter()
        .find(|f| f["target"]["target-id"] == "cc6.1_obj")
        .unwrap();
    assert!(cc61["target"].get("status").is_none(), "{cc61}");
    assert_eq!(cc61["props"][0]["value"], "not-applicable");
    assert_eq!(
        read_back(dir.path(), &out.stdout),
        json!({"results": 2, "findings": 19})
    );
}

/// Reads an OSCAL export back with the published OSCAL model, requiring it unchanged; gives
/// what the reader counted (results and findings).
fn read_back(dir: &Path, document: &[u8]) -> Value {
    let file = dir.join("assessment-results.json");
    std::fs::write(&file, document).unwrap();
    let read_back = Command::new(common::python())
        .arg(repo().join("tests/fixtures/oscal_roundtrip.py"))
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        read_back.status.success(),
        "{}{}",
        String::from_utf8_lossy(&read_back.stdout),
        String::from_utf8_lossy(&read_back.stderr)
    );
    serde_json::from_slice(&read_back.stdout).unwrap()
}

#[test]
fn bad_arguments_and_a_missing_store_are_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = report(dir.path(), &["--framework", "iso-27001"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown framework `iso-27001`; the frameworks are soc2 and nist-800-53"),
        "{stderr}"
    );
    let out = report(dir.path(), &["--window", "30 days"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`30 days` is not a window; write a number and a unit"),
        "{stderr}"
    );
    let out = report(&dir.path().join("nowhere"), &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no audit store at"), "{stderr}");
}
