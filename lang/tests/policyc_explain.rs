//! `policyc explain`: one request decided the way the engine decides it, with the trace.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::path::Path;

use common::{examples_dir, policyc, stderr, stdout};

/// A GitHub Actions job of `acme/billing` on a release tag, in the production environment.
fn release_job(action: &str, repository: &str) -> String {
    format!(
        r#"{{
  "kind": "github",
  "claims": {{
    "repository": "{repository}", "repository_owner": "acme", "repository_id": "1",
    "repository_owner_id": "2", "ref": "refs/tags/v1.4.0", "ref_type": "tag",
    "environment": "production", "event_name": "push", "sub": "repo:{repository}",
    "workflow": "deploy", "actor": "dev", "run_id": "9", "sha": "abc",
    "job_workflow_ref": "{repository}/.github/workflows/deploy.yml@refs/tags/v1.4.0",
    "iss": "https://token.actions.githubusercontent.com", "aud": "portcullis"
  }},
  "target": "billing_api",
  "action": "{action}",
  "resource": "/v1/invoices",
  "time": "2026-12-04T10:00:00Z"
}}"#
    )
}

fn explain(request: &str, extra: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("request.json");
    std::fs::write(&file, request).unwrap();
    let mut args = vec![
        "explain".to_owned(),
        path(&examples_dir()),
        "--request".to_owned(),
        path(&file),
    ];
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    policyc(&args)
}

fn path(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

#[test]
fn an_allow_names_the_rules_considered_and_the_deciding_one() {
    let output = explain(&release_job("POST", "acme/billing"), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.starts_with("decision: allow (permitted)\n"), "{text}");
    assert!(text.contains("credential: billing_deploy_token"), "{text}");
    assert!(
        text.contains("target:   billing_api (https://billing.internal.acme.example:443/v1/)\n"),
        "{text}"
    );
    // Forbids first, each with its workload and `when`, then the permit that decides.
    let forbid = text.find("forbid no_pull_request_target: workload any github matches");
    let permit = text.find(
        "permit billing_release_deploys: workload billing_release matches; when is true -> \
         applies (decides)",
    );
    assert!(forbid.unwrap() < permit.unwrap(), "{text}");
    assert!(
        text.contains("conditions evaluated:\n  writes: true"),
        "{text}"
    );
    // The index left out the rules of other workloads and targets.
    assert!(text.contains("index:    4 of 8 rules"), "{text}");
}

#[test]
fn a_deny_exits_3_and_says_why() {
    let output = explain(&release_job("DELETE", "acme/billing"), &[]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.starts_with("decision: deny (no_permit)\n"), "{text}");
    assert!(text.contains("when is false -> does not apply"), "{text}");
}

#[test]
fn another_database_is_refused_before_any_rule() {
    let request = r#"{
  "kind": "kubernetes",
  "claims": {
    "iss": "https://kubernetes.default.svc", "aud": "portcullis",
    "sub": "system:serviceaccount:orders:api", "namespace": "orders",
    "service_account": "api", "service_account_uid": "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
  },
  "target": "orders_db",
  "action": "connect",
  "resource": "billing/api"
}"#;
    let output = explain(request, &[]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.starts_with("decision: deny (database_mismatch)\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "target:   orders_db (postgres://orders.db.internal.acme.example:5432/orders)\n"
        ),
        "{text}"
    );
    let allowed = explain(&request.replace("billing/api", "orders/api"), &[]);
    assert_eq!(allowed.status.code(), Some(0), "{}", stdout(&allowed));
}

#[test]
fn json_carries_the_same_trace() {
    let output = explain(&release_job("POST", "acme/billing"), &["--format", "json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(json["decision"], "allow");
    assert_eq!(json["rule"], "billing_release_deploys");
    let rules = json["rules"].as_array().unwrap();
    let last = rules.last().unwrap();
    assert_eq!(last["rule"], "billing_release_deploys");
    assert_eq!(last["outcome"], "applies");
    assert_eq!(rules[0]["effect"], "forbid");
    assert_eq!(json["candidates"]["of_rules"], 8);
    assert!(json["instruction_bound"].as_u64().unwrap() > 0);
}

#[test]
fn a_bad_request_file_is_named_with_its_member() {
    let output = explain(
        r#"{"kind": "github", "target": "billing_api", "claim": {}}"#,
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("request.json"), "{text}");
    assert!(text.contains("unknown member `claim`"), "{text}");
    let output = explain("{", &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("not valid JSON"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_request_path_that_is_not_a_file_is_refused_unread() {
    let output = policyc(&["explain", &path(&examples_dir()), "--request", "/dev/zero"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("not a regular file"),
        "{}",
        stderr(&output)
    );
}
