//! Every built-in control judged against stores built to pass it and stores built to fail it,
//! and what a control says when there is nothing to judge or its query cannot run.

#![cfg(feature = "query")]
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::fs;
use std::path::Path;

use portcullis_audit::bundles::{archive_bundle, set_current_bundle};
use portcullis_audit::compliance::{
    Catalog, EvaluateOptions, Framework, Report, Status, evaluate, history, oscal,
};
use portcullis_audit::segment::{SealedIndex, write_segments};
use portcullis_audit::{Decision, EventKind, NewEvent};
use portcullis_lang::bundle::Bundle;
use portcullis_lang::{SourceFile, compile};

const POLICY: &str = "\
workload ci { github { repository == \"acme/api\" } }
target api { https { host = \"api.example\" } }
credential api_token { jwt { audience = \"api\" ttl = 10m } }
permit ci_calls_api { workload ci target api credential api_token }
forbid no_forks { workload any github when client.github.repository_owner != \"acme\" }
";

/// A store the way a server leaves it, built from `policy` and `events`; the policy change
/// that put the bundle in effect comes first unless `events` has one of its own.
struct Store {
    dir: tempfile::TempDir,
}

fn compile_bundle(policy: &str) -> (String, Vec<u8>) {
    let set = compile(&[SourceFile::new("policy.gate", policy)]).unwrap();
    let bundle = Bundle::from_policy_set(&set).unwrap();
    (bundle.hash_hex(), bundle.to_bytes())
}

/// The events of a day that passes every control, for the bundle `hash`.
fn good_events(hash: &str) -> Vec<NewEvent> {
    let caller = |decision: Decision| NewEvent {
        decision: Some(decision),
        bundle_hash: Some(hash.to_owned()),
        workload: Some("ci".into()),
        trust_provider: Some("github".into()),
        issuer: Some("https://token.actions.githubusercontent.com".into()),
        subject: Some("repo:acme/api:ref:refs/heads/main".into()),
        claims: Some(r#"{"repository":"acme/api"}"#.into()),
        target: Some("api".into()),
        protocol: Some("https".into()),
        host: Some("api.example".into()),
        port: Some(443),
        ..NewEvent::default()
    };
    vec![
        policy_change(hash),
        NewEvent {
            reason: Some("permitted by `ci_calls_api`".into()),
            reason_code: Some("permitted".into()),
            rule: Some("ci_calls_api".into()),
            ..caller(Decision::Allow)
        },
        NewEvent {
            kind: EventKind::CredentialIssued,
            decision: Some(Decision::Allow),
            rule: Some("ci_calls_api".into()),
            credential_provider: Some("api_token".into()),
            credential_ttl_s: Some(600),
            credential_ref: Some(format!("hmac-sha256:{}", "ab".repeat(32))),
            ..caller(Decision::Allow)
        },
        NewEvent {
            reason: Some("forbidden by `no_forks`".into()),
            reason_code: Some("forbidden".into()),
            rule: Some("no_forks".into()),
            ..caller(Decision::Deny)
        },
        NewEvent {
            kind: EventKind::AttestationFailed,
            decision: Some(Decision::Deny),
            reason: Some("the token expired".into()),
            reason_code: Some("token_expired".into()),
            trust_provider: Some("github".into()),
            claims: Some(r#"{"unverified":true}"#.into()),
            ..NewEvent::default()
        },
    ]
}

fn policy_change(hash: &str) -> NewEvent {
    NewEvent {
        kind: EventKind::PolicyChange,
        reason: Some(format!("bundle sha256:{hash} took effect at startup")),
        reason_code: Some("policy_loaded".into()),
        bundle_hash: Some(hash.to_owned()),
        action: Some("startup".into()),
        resource: Some("policies/".into()),
        ..NewEvent::default()
    }
}

impl Store {
    /// `change` may alter the good events before they are recorded.
    fn build(policy: &str, change: impl FnOnce(&mut Vec<NewEvent>, &str)) -> Store {
        let dir = tempfile::tempdir().unwrap();
        let (hash, bytes) = compile_bundle(policy);
        archive_bundle(dir.path(), &hash, &bytes).unwrap();
        set_current_bundle(dir.path(), &hash).unwrap();
        let mut events = good_events(&hash);
        change(&mut events, &hash);
        // One segment per event, so that a store can lose one from its middle.
        let log = common::open_with(dir.path(), 1);
        for event in events {
            log.record(event).unwrap();
            log.seal().unwrap();
        }
        log.close().unwrap();
        Store { dir }
    }

    fn good() -> Store {
        Store::build(POLICY, |_, _| {})
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn report(&self) -> Report {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime
            .block_on(evaluate(
                self.path(),
                Catalog::builtin(),
                &EvaluateOptions::default(),
            ))
            .unwrap()
    }
}

fn status(report: &Report, framework: Framework, id: &str) -> Status {
    result(report, framework, id).status
}

fn result<'a>(
    report: &'a Report,
    framework: Framework,
    id: &str,
) -> &'a portcullis_audit::compliance::ControlResult {
    report
        .results
        .iter()
        .find(|r| r.framework == framework && r.id == id)
        .unwrap_or_else(|| panic!("no result for {id}"))
}

/// The controls that did not pass, as `framework:id status`, for messages.
fn not_passing(report: &Report) -> Vec<String> {
    report
        .results
        .iter()
        .filter(|r| r.status != Status::Pass)
        .map(|r| format!("{}:{} {} ({})", r.framework, r.id, r.status, r.reason))
        .collect()
}

/// Asserts that each of `controls` fails with a failing row holding every text of `names`.
fn assert_fails(report: &Report, controls: &[(Framework, &str)], names: &[&str]) {
    for (framework, id) in controls {
        let result = result(report, *framework, id);
        assert_eq!(
            result.status,
            Status::Fail,
            "{id} should fail: {}",
            result.reason
        );
        assert!(result.failing_rows > 0 && !result.failing.is_empty());
        let rows = result.failing.iter().map(|row| row.join(" | "));
        let rows: Vec<String> = rows.collect();
        for name in names {
            assert!(
                rows.iter().any(|row| row.contains(name)),
                "{id}: no failing row names `{name}`: {rows:?}"
            );
        }
    }
}

const SOC2: Framework = Framework::Soc2;
const NIST: Framework = Framework::Nist80053;

#[test]
fn a_store_built_to_pass_passes_every_control() {
    let report = Store::good().report();
    assert_eq!(report.results.len(), Catalog::builtin().controls().len());
    assert!(
        not_passing(&report).is_empty(),
        "{:#?}",
        not_passing(&report)
    );
    assert!(report.integrity.ok, "{}", report.integrity.summary);
    let tally = report.tally(SOC2);
    assert_eq!((tally.pass, tally.total()), (7, 7));
    assert_eq!(report.tally(NIST).pass, 12);
    // Evidence is counted: the allow, by one rule of one bundle.
    let cc61 = result(&report, SOC2, "CC6.1");
    assert_eq!(cc61.evidence_rows, 1);
    assert_eq!(cc61.columns, ["bundle_hash", "rule", "effect", "allows"]);
}

#[test]
fn an_allow_by_a_forbid_rule_fails_logical_access_and_enforcement() {
    let store = Store::build(POLICY, |events, _| {
        events[1].rule = Some("no_forks".into());
    });
    let report = store.report();
    assert_fails(
        &report,
        &[(SOC2, "CC6.1"), (NIST, "AC-3")],
        &["no_forks", "forbid"],
    );
    // The unused permit is now unused: least privilege fails too, for that reason.
    assert_fails(&report, &[(SOC2, "CC6.3")], &["ci_calls_api"]);
}

#[test]
fn an_allow_to_an_undeclared_workload_fails_registration() {
    let store = Store::build(POLICY, |events, _| {
        events[1].workload = Some("ghost".into());
    });
    let report = store.report();
    assert_fails(&report, &[(SOC2, "CC6.2")], &["ghost"]);
    assert_eq!(status(&report, SOC2, "CC6.1"), Status::Pass);
}

#[test]
fn an_unused_grant_and_an_unconditioned_grant_to_any_workload_fail_least_privilege() {
    let policy = format!(
        "{POLICY}target db {{ postgres {{ host = \"db.example\" database = \"orders\" }} }}
permit ci_reads_db {{ workload ci target db credential api_token }}
"
    );
    let report = Store::build(&policy, |_, _| {}).report();
    assert_fails(
        &report,
        &[(SOC2, "CC6.3"), (NIST, "AC-6")],
        &["ci_reads_db"],
    );
    let broad = format!("{POLICY}permit anyone {{ workload any github target api }}\n");
    let report = Store::build(&broad, |events, _| {
        let mut second = events[1].clone();
        second.rule = Some("anyone".into());
        events.push(second);
    })
    .report();
    assert_fails(&report, &[(SOC2, "CC6.3")], &["anyone", "any github"]);
    let row = &result(&report, SOC2, "CC6.3").failing;
    assert_eq!(row.len(), 1, "the used, narrow grant passes: {row:?}");
}

#[test]
fn an_allowed_attestation_failure_or_unattested_allow_fails_boundary_protection() {
    let report = Store::build(POLICY, |events, _| {
        events[4].decision = Some(Decision::Allow);
    })
    .report();
    assert_fails(
        &report,
        &[(SOC2, "CC6.6")],
        &["attestation_failed", "allow"],
    );
    let report = Store::build(POLICY, |events, _| {
        events[1].subject = None;
    })
    .report();
    assert_fails(&report, &[(SOC2, "CC6.6")], &["allow"]);
    assert_fails(&report, &[(NIST, "IA-2")], &["github | ci"]);
}

#[test]
fn a_plaintext_target_fails_transmission_protection() {
    let policy = format!("{POLICY}target legacy {{ http {{ host = \"legacy.example\" }} }}\n");
    let report = Store::build(&policy, |_, _| {}).report();
    assert_fails(
        &report,
        &[(SOC2, "CC6.7"), (NIST, "SC-8")],
        &["legacy", "http"],
    );
    // The same target on the loopback interface is a sidecar's, and passes.
    let local = format!("{POLICY}target legacy {{ http {{ host = \"127.0.0.1\" }} }}\n");
    let report = Store::build(&local, |_, _| {}).report();
    assert_eq!(status(&report, SOC2, "CC6.7"), Status::Pass);
}

#[test]
fn a_denial_without_a_reason_code_fails_monitoring_and_record_content() {
    let report = Store::build(POLICY, |events, _| {
        events[3].reason_code = None;
    })
    .report();
    assert_fails(&report, &[(SOC2, "CC7.2")], &["decision"]);
    assert_fails(&report, &[(NIST, "AU-3")], &["decision"]);
}

#[test]
fn decisions_by_a_bundle_no_change_put_in_effect_fail_change_management_and_logging() {
    let report = Store::build(POLICY, |events, _| {
        events.remove(0);
    })
    .report();
    assert_fails(
        &report,
        &[(SOC2, "CC8.1"), (NIST, "CM-3")],
        &["bundle that decided"],
    );
    assert_fails(&report, &[(NIST, "AU-2")], &["policy_change"]);
    // A change whose bundle the archive lost fails too.
    let report = Store::build(POLICY, |events, _| {
        events.push(policy_change(&"0".repeat(64)));
    })
    .report();
    assert_fails(&report, &[(SOC2, "CC8.1")], &[&"0".repeat(64)]);
}

/// A bundle that has decided for longer than the store keeps events: the policy change that
/// put it in effect went with retention, and the archive, which only a change fills, answers
/// for it. Without a retention removal the same store fails.
#[test]
fn a_change_removed_by_retention_is_answered_by_the_archive() {
    let build = |retention_days: Option<u32>| {
        let dir = tempfile::tempdir().unwrap();
        let (hash, bytes) = compile_bundle(POLICY);
        archive_bundle(dir.path(), &hash, &bytes).unwrap();
        set_current_bundle(dir.path(), &hash).unwrap();
        // The change, sixty days ago, sealed into a segment of its own date.
        let long_ago = chrono::Utc::now() - chrono::Days::new(60);
        let change = common::stored_event(1, long_ago, policy_change(&hash));
        let mut index = SealedIndex::open(dir.path(), None).unwrap();
        write_segments(&dir.path().join("events"), &[change], &mut index).unwrap();
        drop(index);
        // Decisions by it today; the store goes on after the sealed `seq`.
        let log = common::open_with(dir.path(), 1);
        for event in good_events(&hash).into_iter().skip(1) {
            log.record(event).unwrap();
            log.seal().unwrap();
        }
        log.close().unwrap();
        // Retention applies at the next open.
        drop(SealedIndex::open(dir.path(), retention_days).unwrap());
        Store { dir }
    };
    let kept = build(None).report();
    assert_eq!(status(&kept, SOC2, "CC8.1"), Status::Pass);
    let removed = build(Some(30)).report();
    for (framework, id) in [(SOC2, "CC8.1"), (NIST, "CM-3"), (NIST, "AU-2")] {
        assert_eq!(
            status(&removed, framework, id),
            Status::Pass,
            "{:#?}",
            result(&removed, framework, id)
        );
    }
    assert!(removed.integrity.removed_before.is_some());
    // Not so for a bundle the archive does not hold.
    let lost = build(Some(30));
    fs::remove_dir_all(lost.path().join("bundles")).unwrap();
    let report = lost.report();
    assert_fails(&report, &[(SOC2, "CC8.1")], &["bundle that decided"]);
    assert_fails(&report, &[(NIST, "AU-2")], &["policy_change"]);
}

#[test]
fn a_declared_workload_no_decision_named_fails_account_management() {
    let policy =
        format!("{POLICY}workload deployer {{ github {{ repository == \"acme/deploy\" }} }}\n");
    let report = Store::build(&policy, |_, _| {}).report();
    assert_fails(&report, &[(NIST, "AC-2")], &["deployer"]);
}

#[test]
fn an_issued_credential_without_its_reference_fails_record_content() {
    let report = Store::build(POLICY, |events, _| {
        events[2].credential_ref = None;
    })
    .report();
    assert_fails(&report, &[(NIST, "AU-3")], &["credential_issued"]);
}

#[test]
fn a_changed_segment_fails_audit_protection_and_generation() {
    let store = Store::good();
    let segments = common::segment_files(store.path());
    let mut bytes = fs::read(&segments[1]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&segments[1], bytes).unwrap();
    let report = store.report();
    assert!(!report.integrity.ok);
    // The failing row names the segment and what is wrong with it.
    assert_fails(
        &report,
        &[(NIST, "AU-9")],
        &["seg-00000000000000000002-", "SHA-256"],
    );
    assert_eq!(status(&report, NIST, "AU-12"), Status::Fail);
}

#[test]
fn a_segment_removed_from_the_middle_fails_audit_generation() {
    let store = Store::good();
    let segments = common::segment_files(store.path());
    fs::remove_file(&segments[2]).unwrap();
    let report = store.report();
    let au12 = result(&report, NIST, "AU-12");
    assert_eq!(au12.status, Status::Fail, "{}", au12.reason);
    // seq 1 to 5 with four events: the gap shows in the row itself.
    assert_eq!(au12.failing[0][..4], ["test", "1", "5", "4"]);
    assert_eq!(status(&report, NIST, "AU-9"), Status::Fail);
}

#[test]
fn a_static_secret_or_a_long_lived_credential_fails_authenticator_management() {
    let policy = format!("{POLICY}credential legacy {{ static {{ env = \"LEGACY_TOKEN\" }} }}\n");
    let report = Store::build(&policy, |_, _| {}).report();
    assert_fails(&report, &[(NIST, "IA-5")], &["legacy", "static"]);
    let report = Store::build(POLICY, |events, _| {
        events[2].credential_ttl_s = Some(7200);
    })
    .report();
    assert_fails(&report, &[(NIST, "IA-5")], &["issued", "7200"]);
}

#[test]
fn an_allow_without_a_verified_issuer_fails_service_authentication() {
    let report = Store::build(POLICY, |events, _| {
        events[1].issuer = None;
    })
    .report();
    assert_fails(&report, &[(NIST, "IA-9")], &["github"]);
    assert_eq!(status(&report, NIST, "IA-2"), Status::Pass);
}

#[test]
fn an_empty_store_is_not_applicable_rather_than_passing() {
    let dir = tempfile::tempdir().unwrap();
    common::open(dir.path()).close().unwrap();
    let report = Store { dir }.report();
    for result in &report.results {
        let expected = if result.id == "AU-9" {
            // The store is there and intact: an empty chain verifies.
            Status::Pass
        } else {
            Status::NotApplicable
        };
        assert_eq!(result.status, expected, "{}: {}", result.id, result.reason);
    }
    assert!(
        result(&report, SOC2, "CC6.1")
            .reason
            .starts_with("not applicable: no access")
    );
}

#[test]
fn an_evidence_query_that_cannot_run_is_an_error_not_a_pass() {
    let catalog = Catalog::parse(&[(
        "mine.toml",
        r#"
framework = "soc2"
[[control]]
id = "X.1"
title = "A control whose query names no column"
requirement = "r"
passes_when = "p"
not_applicable_when = "n"
severity = "low"
remediation = "m"
evidence = "SELECT no_such_column AS ok FROM access_events"

[[control]]
id = "X.2"
title = "A control whose query says nothing of passing"
requirement = "r"
passes_when = "p"
not_applicable_when = "n"
severity = "low"
remediation = "m"
evidence = "SELECT kind FROM access_events"
"#,
    )])
    .unwrap();
    let store = Store::good();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let report = runtime
        .block_on(evaluate(
            store.path(),
            &catalog,
            &EvaluateOptions::default(),
        ))
        .unwrap();
    assert_eq!(report.results[0].status, Status::Error);
    assert!(
        report.results[0].reason.contains("no_such_column"),
        "{}",
        report.results[0].reason
    );
    assert_eq!(report.results[1].status, Status::Error);
    assert!(report.results[1].reason.contains("no `ok` column"));
}

#[test]
fn the_window_bounds_what_is_judged() {
    let store = Store::good();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // A window that ended before the store's events: nothing allowed in it.
    let options = EvaluateOptions {
        as_of: chrono::Utc::now() - chrono::Duration::days(1),
        ..EvaluateOptions::default()
    };
    let report = runtime
        .block_on(evaluate(store.path(), Catalog::builtin(), &options))
        .unwrap();
    assert_eq!(status(&report, SOC2, "CC6.1"), Status::NotApplicable);
    // The grant was not used in that window.
    assert_eq!(status(&report, SOC2, "CC6.3"), Status::Fail);
    let zero = EvaluateOptions {
        window: chrono::Duration::zero(),
        ..EvaluateOptions::default()
    };
    let error = runtime
        .block_on(evaluate(store.path(), Catalog::builtin(), &zero))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "the evaluation window must be longer than zero"
    );
}

#[test]
fn reports_are_kept_newest_first_and_a_torn_append_is_dropped() {
    let store = Store::good();
    let first = store.report();
    let second = store.report();
    history::append(store.path(), &first).unwrap();
    history::append(store.path(), &second).unwrap();
    assert_eq!(history::latest(store.path()).unwrap().unwrap(), second);
    let listed = history::list(store.path(), 10).unwrap();
    assert_eq!(
        listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [second.id.as_str(), first.id.as_str()]
    );
    assert_eq!(listed[0].tally(SOC2), second.tally(SOC2));
    assert_eq!(listed[0].status_of(NIST, "AU-9"), Some(Status::Pass));
    // A crash in the middle of an append leaves half a line: reading leaves it out, and the
    // next append starts on a line of its own.
    let path = store.path().join("compliance/history.jsonl");
    let mut text = fs::read_to_string(&path).unwrap();
    text.push_str("{\"id\":\"torn");
    fs::write(&path, &text).unwrap();
    assert_eq!(history::list(store.path(), 10).unwrap().len(), 2);
    history::append(store.path(), &first).unwrap();
    assert_eq!(history::list(store.path(), 10).unwrap().len(), 3);
    assert_eq!(history::list(store.path(), 1).unwrap().len(), 1);
    // A damaged line before the end is an error that names it.
    let text = fs::read_to_string(&path).unwrap().replacen("{", "[", 1);
    fs::write(&path, text).unwrap();
    let error = history::list(store.path(), 10).unwrap_err().to_string();
    assert!(
        error.contains("history.jsonl` line 1 is not a compliance report"),
        "{error}"
    );
}

#[test]
fn the_oscal_document_has_a_finding_per_control_with_its_state() {
    let store = Store::build(POLICY, |events, _| {
        events[1].issuer = None;
    });
    let report = store.report();
    let document = oscal::assessment_results(&report, &[]);
    let results = document["assessment-results"]["results"]
        .as_array()
        .unwrap();
    assert_eq!(results.len(), 2);
    let nist = &results[1];
    let findings = nist["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 12);
    let ia9 = findings
        .iter()
        .find(|f| f["target"]["target-id"] == "ia-9_obj")
        .unwrap();
    assert_eq!(ia9["target"]["status"]["state"], "not-satisfied");
    let ac2 = findings
        .iter()
        .find(|f| f["target"]["target-id"] == "ac-2_obj")
        .unwrap();
    assert_eq!(ac2["target"]["status"]["state"], "satisfied");
    let included = nist["reviewed-controls"]["control-selections"][0]["include-controls"]
        .as_array()
        .unwrap();
    assert!(included.iter().any(|c| c["control-id"] == "au-12"));
}
