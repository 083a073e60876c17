//! End to end: the real `portcullis` binary serves the example policy set on a free loopback
//! port with a temporary data directory; real signed tokens are sent to `POST /v1/decide`; the
//! server is stopped with SIGINT (as Ctrl-C); then `portcullis audit query` and two independent
//! Parquet readers (DuckDB and pyarrow) must each see every decision exactly once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_lang::bundle::{Bundle, SigningKey, signing};
use serde_json::{Value, json};

use common::*;

/// One request of the tour and what its answer must say.
struct Case {
    name: &'static str,
    token: String,
    target: Value,
    action: &'static str,
    resource: &'static str,
    decision: &'static str,
    reason_code: &'static str,
    rule: Option<&'static str>,
    workload: Option<&'static str>,
}

fn unsigned_token(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

fn cases(dir: &Path) -> Vec<Case> {
    let billing_api = json!({ "name": "billing_api" });
    let orders_db = json!({ "protocol": "postgres", "host": "orders.db.internal.acme.example" });
    let mut orders_db_5432 = orders_db.clone();
    orders_db_5432["port"] = json!(5432);
    let release = example_claims("billing-release.json");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let with = |patch: Value| {
        let mut claims = release.clone();
        for (key, value) in patch.as_object().unwrap() {
            claims[key] = value.clone();
        }
        claims
    };
    let case = |name, token, target: &Value, decision, reason_code, rule, workload| Case {
        name,
        token,
        target: target.clone(),
        action: "POST",
        resource: "/v1/deploy",
        decision,
        reason_code,
        rule,
        workload,
    };
    vec![
        case(
            "allowed",
            mint(GITHUB_KEY, &release, dir),
            &billing_api,
            "allow",
            "permitted",
            Some("billing_release_deploys"),
            Some("billing_release"),
        ),
        case(
            "not permitted",
            mint(GITHUB_KEY, &example_claims("docs-main.json"), dir),
            &billing_api,
            "deny",
            "no_permit",
            None,
            Some("docs_publisher"),
        ),
        case(
            "forbidden",
            mint(
                GITHUB_KEY,
                &example_claims("billing-pull-request-target.json"),
                dir,
            ),
            &billing_api,
            "deny",
            "forbidden",
            Some("no_pull_request_target"),
            Some("billing_release"),
        ),
        Case {
            resource: "orders/api",
            ..case(
                "kubernetes by endpoint, RS256",
                mint(KUBERNETES_KEY, &example_claims("orders-api-pod.json"), dir),
                &orders_db_5432,
                "allow",
                "permitted",
                Some("orders_api_uses_orders_db"),
                Some("orders_api"),
            )
        },
        Case {
            resource: "billing/api",
            ..case(
                "kubernetes by endpoint, another database",
                mint(KUBERNETES_KEY, &example_claims("orders-api-pod.json"), dir),
                &orders_db,
                "deny",
                "database_mismatch",
                None,
                Some("orders_api"),
            )
        },
        Case {
            resource: "orders/api",
            ..case(
                "kubernetes by endpoint, the protocol's own port",
                mint(KUBERNETES_KEY, &example_claims("orders-api-pod.json"), dir),
                &orders_db,
                "allow",
                "permitted",
                Some("orders_api_uses_orders_db"),
                Some("orders_api"),
            )
        },
        case(
            "signed by an unknown key",
            mint("tests/fixtures/untrusted-p256.key.pem", &release, dir),
            &billing_api,
            "deny",
            "unknown_key",
            None,
            None,
        ),
        case(
            "expired",
            mint(
                GITHUB_KEY,
                &with(json!({ "iat": now - 7200, "exp": now - 3600 })),
                dir,
            ),
            &billing_api,
            "deny",
            "token_expired",
            None,
            None,
        ),
        case(
            "wrong audience",
            mint(GITHUB_KEY, &with(json!({ "aud": "someone-else" })), dir),
            &billing_api,
            "deny",
            "wrong_audience",
            None,
            None,
        ),
        case(
            "wrong issuer",
            mint(
                GITHUB_KEY,
                &with(json!({ "iss": "https://issuer.attacker.invalid" })),
                dir,
            ),
            &billing_api,
            "deny",
            "untrusted_issuer",
            None,
            None,
        ),
        case(
            "unsigned",
            unsigned_token(&with(json!({ "exp": now + 300 }))),
            &billing_api,
            "deny",
            "algorithm_not_allowed",
            None,
            None,
        ),
        case(
            "tampered payload",
            tamper(
                &mint(GITHUB_KEY, &example_claims("docs-main.json"), dir),
                &release,
            ),
            &billing_api,
            "deny",
            "bad_signature",
            None,
            None,
        ),
    ]
}

/// Replaces a genuine token's payload with other claims, keeping header and signature.
fn tamper(token: &str, claims: &Value) -> String {
    let mut parts = token.split('.');
    let header = parts.next().unwrap();
    let signature = parts.nth(1).unwrap();
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.{signature}")
}

fn check_answer(case: &Case, answer: &Value, bundle: &str) {
    let name = case.name;
    assert_eq!(answer["decision"], case.decision, "{name}: {answer}");
    assert_eq!(answer["reason_code"], case.reason_code, "{name}: {answer}");
    assert_eq!(answer["rule"].as_str(), case.rule, "{name}: {answer}");
    assert_eq!(
        answer["workload"].as_str(),
        case.workload,
        "{name}: {answer}"
    );
    assert_eq!(answer["bundle"], bundle, "{name}: {answer}");
    let reason = answer["reason"].as_str().unwrap();
    assert!(!reason.is_empty(), "{name}: no reason");
    if let Some(rule) = case.rule {
        assert!(
            reason.contains(rule),
            "{name}: reason `{reason}` does not name the rule"
        );
    }
    assert_eq!(
        answer["event_id"].as_str().unwrap().len(),
        36,
        "{name}: {answer}"
    );
}

fn audit_rows(data_dir: &Path) -> Vec<Value> {
    let sql = "SELECT event_id, decision, workload, target, rule, reason_code, kind, seq, \
               subject, claims, rule_description, rule_severity, bundle_hash, action, \
               conditions, evidence_sha256 FROM access_events ORDER BY time, seq";
    audit_query(data_dir, sql)
}

fn independent_readers(data_dir: &Path) -> Vec<(String, Vec<Value>)> {
    let out = Command::new(python())
        .arg(repo().join("tests/fixtures/read_parquet.py"))
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap();
            let rows = value["rows"].as_array().unwrap().clone();
            (value["reader"].as_str().unwrap().to_owned(), rows)
        })
        .collect()
}

#[test]
fn decisions_are_answered_recorded_and_queryable() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let cases = cases(tmp.path());
    let server = start_server(&data_dir);
    let bundle = healthz_bundle(&server);

    let mut answers = Vec::new();
    for case in &cases {
        let answer = decide_on(
            &server,
            &case.token,
            case.target.clone(),
            case.action,
            case.resource,
        );
        check_answer(case, &answer, &bundle);
        answers.push(answer);
    }
    stop_server(server);

    let all_rows = audit_rows(&data_dir);
    // The bundle the server started with comes first, as a policy change.
    let (startup, rows) = all_rows.split_first().unwrap();
    assert_eq!(startup["kind"], "policy_change", "{startup}");
    assert_eq!(startup["reason_code"], "policy_loaded", "{startup}");
    assert_eq!(startup["action"], "startup", "{startup}");
    assert_eq!(
        format!("sha256:{}", startup["bundle_hash"].as_str().unwrap()),
        bundle
    );
    assert_eq!(rows.len(), cases.len(), "{rows:#?}");
    for ((case, answer), row) in cases.iter().zip(&answers).zip(rows) {
        assert_eq!(row["event_id"], answer["event_id"], "{}", case.name);
        assert_eq!(row["decision"], case.decision, "{}", case.name);
        assert_eq!(row["reason_code"], case.reason_code, "{}", case.name);
        assert_eq!(row["rule"].as_str(), case.rule, "{}", case.name);
        assert_eq!(row["workload"].as_str(), case.workload, "{}", case.name);
        let kind = if case.workload.is_some() {
            "decision"
        } else {
            "attestation_failed"
        };
        assert_eq!(row["kind"], kind, "{}", case.name);
        assert_eq!(
            format!("sha256:{}", row["bundle_hash"].as_str().unwrap()),
            bundle,
            "{}",
            case.name
        );
        // A rejected token's own claims never pass for a verified identity.
        let claims = row["claims"].as_str().unwrap();
        if kind == "attestation_failed" {
            assert!(row["subject"].is_null(), "{}: {row}", case.name);
            assert!(
                claims.contains(r#""unverified":true"#),
                "{}: {claims}",
                case.name
            );
        } else {
            assert!(
                row["subject"].as_str().is_some_and(|s| !s.is_empty()),
                "{}",
                case.name
            );
            assert!(!claims.contains("unverified"), "{}: {claims}", case.name);
        }
    }
    // The tour's allow carries the annotations of its rule, `billing_release_deploys`.
    let release = cases
        .iter()
        .position(|case| case.rule == Some("billing_release_deploys"))
        .unwrap();
    assert_eq!(rows[release]["rule_severity"], "high", "{rows:#?}");
    assert_eq!(
        rows[release]["rule_description"],
        "release tags of acme/billing deploy through the billing API"
    );
    // Its `when writes` is recorded with its value; the token only as its hash.
    let conditions: Value =
        serde_json::from_str(rows[release]["conditions"].as_str().unwrap()).unwrap();
    assert_eq!(conditions, json!([{ "name": "writes", "result": true }]));
    let token = &cases[release].token;
    let digest = rows[release]["evidence_sha256"].as_str().unwrap();
    assert_eq!(digest.len(), 64);
    assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()), "{digest}");
    for row in &all_rows {
        assert!(
            !row.to_string().contains(token.as_str()),
            "a token was stored: {row}"
        );
    }
    let expected_targets = ["billing_api", "billing_api", "billing_api", "orders_db"];
    for (row, target) in rows.iter().zip(expected_targets) {
        assert_eq!(row["target"], target);
    }

    for (reader, theirs) in independent_readers(&data_dir) {
        assert_eq!(
            theirs.len(),
            all_rows.len(),
            "{reader} sees another number of rows"
        );
        for (ours, theirs) in all_rows.iter().zip(&theirs) {
            for column in [
                "event_id",
                "decision",
                "workload",
                "target",
                "rule",
                "reason_code",
            ] {
                assert_eq!(
                    ours[column].as_str(),
                    theirs[column].as_str(),
                    "{reader}: column `{column}` differs in {ours}"
                );
            }
            assert_eq!(ours["seq"].as_u64(), theirs["seq"].as_u64(), "{reader}");
        }
    }
}

#[test]
fn bad_requests_get_clear_errors_and_no_decision() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let server = start_server(&data_dir);

    let (status, answer) = post(&server, b"{ not json");
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("invalid request"),
        "{answer}"
    );

    let (status, answer) = post(&server, br#"{"evidence": {"token": "x"}, "target": {}}"#);
    assert_eq!(status, 400);
    assert!(
        answer["error"].as_str().unwrap().contains("`target` needs"),
        "{answer}"
    );

    // An endpoint without a port takes its protocol's; a protocol no target can have is
    // named as the mistake, with or without a port.
    for target in [
        r#"{"protocol": "ftp", "host": "h"}"#,
        r#"{"protocol": "postgresql", "host": "h", "port": 5432}"#,
    ] {
        let body = format!(r#"{{"evidence": {{"token": "x"}}, "target": {target}}}"#);
        let (status, answer) = post(&server, body.as_bytes());
        assert_eq!(status, 400);
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.contains("which no target can have: one of `http`, `https`, `postgres`"),
            "{answer}"
        );
    }
    let (status, answer) = post(
        &server,
        br#"{"evidence": {"token": "x"}, "target": {"protocol": "https", "host": " "}}"#,
    );
    assert_eq!(status, 400);
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("`target.host` is empty"), "{answer}");

    let (status, answer) = post(&server, br#"{"evidence": {"token": "x"}, "targte": {}}"#);
    assert_eq!(status, 400);
    assert!(
        answer["error"].as_str().unwrap().contains("targte"),
        "{answer}"
    );

    let huge = format!(
        r#"{{"evidence": {{"token": "{}"}}}}"#,
        "a".repeat(200 * 1024)
    );
    let (status, _) = post(&server, huge.as_bytes());
    assert_eq!(status, 413);

    // A token sent in the wrong place is not echoed back.
    let token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJzZWNyZXQtc3ViamVjdCJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
    let body = json!({ "evidence": token, "target": { "name": "billing_api" } });
    let (status, answer) = post(&server, body.to_string().as_bytes());
    assert_eq!(status, 400);
    let message = answer["error"].as_str().unwrap();
    assert!(
        !message.contains(token) && message.contains("`token`"),
        "{message}"
    );

    // A token used as a field name is not echoed either, and overlong fields are refused.
    let body = format!(r#"{{"evidence": {{"{token}": 1}}, "target": {{"name": "x"}}}}"#);
    let (status, answer) = post(&server, body.as_bytes());
    assert_eq!(status, 400);
    assert!(
        !answer["error"].as_str().unwrap().contains(token),
        "{answer}"
    );
    let long_name = "t".repeat(300);
    let body = json!({ "evidence": { "token": "x" }, "target": { "name": long_name } });
    let (status, answer) = post(&server, body.to_string().as_bytes());
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("`target.name` is longer than 256")
    );
    // Control characters would forge lines in a log or act on a terminal showing the event.
    for (field, body) in [
        (
            "request.resource",
            json!({ "evidence": { "token": "x" }, "target": { "name": "billing_api" },
                    "request": { "action": "GET", "resource": "/v1/x\u{0}\n" } }),
        ),
        (
            "target.name",
            json!({ "evidence": { "token": "x" }, "target": { "name": "evil\u{1b}[2J" } }),
        ),
    ] {
        let (status, answer) = post(&server, body.to_string().as_bytes());
        assert_eq!(status, 400, "{answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(
            message.contains(&format!("`{field}` holds a control character")),
            "{message}"
        );
    }

    // Only JSON is decided: a cross-origin form post cannot create events.
    let url = format!("http://{}/v1/decide", server.addr);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let plain = agent
        .post(&url)
        .header("content-type", "text/plain")
        .send("{}")
        .unwrap();
    assert_eq!(plain.status().as_u16(), 415);
    let mut missing = agent
        .get(&format!("http://{}/v2/decide", server.addr))
        .call()
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    assert!(
        missing
            .body_mut()
            .read_to_string()
            .unwrap()
            .contains("no such endpoint")
    );
    let wrong_method = agent.get(&url).call().unwrap();
    assert_eq!(wrong_method.status().as_u16(), 405);

    // A token that is only garbage is a deny with a reason, not an error.
    let body = json!({ "evidence": { "token": "garbage" }, "target": { "name": "billing_api" } });
    let (status, answer) = post(&server, body.to_string().as_bytes());
    assert_eq!(status, 200);
    assert_eq!(answer["decision"], "deny");
    assert_eq!(answer["reason_code"], "token_malformed");

    stop_server(server);
    let rows = audit_rows(&data_dir);
    let decided = rows.iter().filter(|row| row["kind"] != "policy_change");
    assert_eq!(
        decided.count(),
        1,
        "only the garbage token was decided: {rows:#?}"
    );
}

#[test]
fn a_killed_server_loses_no_answered_decision() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let token = mint(
        GITHUB_KEY,
        &example_claims("billing-release.json"),
        tmp.path(),
    );
    let target = json!({ "name": "billing_api" });

    let mut server = start_server(&data_dir);
    let first = decide(&server, &token, target.clone(), "PUT");
    assert_eq!(first["decision"], "allow");
    server.child.kill().unwrap(); // SIGKILL: no shutdown, no sealing
    server.child.wait().unwrap();
    drop(server);

    // Before the next start, queries already see the answered decision, from the log.
    let rows = audit_query(
        &data_dir,
        "SELECT event_id FROM access_events WHERE kind = 'decision'",
    );
    assert_eq!(rows, [json!({ "event_id": first["event_id"] })]);

    // The next start seals what the log holds before it answers anything new.
    let server = start_server(&data_dir);
    let second = decide(&server, &token, target, "GET");
    assert_eq!(second["rule"], "billing_ci_reads_api", "{second}");
    stop_server(server);

    // Each start records its bundle as a policy change before it decides.
    let rows = audit_rows(&data_dir);
    let ids: Vec<&Value> = rows.iter().map(|row| &row["event_id"]).collect();
    let kinds: Vec<&Value> = rows.iter().map(|row| &row["kind"]).collect();
    assert_eq!(
        kinds,
        ["policy_change", "decision", "policy_change", "decision"],
        "{rows:#?}"
    );
    assert_eq!(
        [ids[1], ids[3]],
        [&first["event_id"], &second["event_id"]],
        "{rows:#?}"
    );
    let seqs: Vec<u64> = rows
        .iter()
        .map(|row| row["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        [1, 2, 3, 4],
        "seq continues across the crash without a gap"
    );
}

/// The example policy set, compiled.
fn example_bundle() -> Bundle {
    let files =
        portcullis_lang::source::read_policy_path(&repo().join("examples/policies")).unwrap();
    let set = portcullis_lang::compile(&files).unwrap();
    Bundle::from_policy_set(&set).unwrap()
}

/// The example configuration in `dir`, serving `bundle` in place of the policy sources, and
/// checking its signature with `public_key` when given.
fn bundle_config(dir: &Path, name: &str, bundle: &Path, public_key: Option<&Path>) -> PathBuf {
    let mut policy = format!("bundle = {:?}", bundle.to_str().unwrap());
    if let Some(key) = public_key {
        policy.push_str(&format!("\npublic_key = {:?}", key.to_str().unwrap()));
    }
    example_config(dir, name, &policy, "")
}

#[test]
fn serve_runs_a_bundle_built_ahead_of_time() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = example_bundle();
    let bundle_path = tmp.path().join("policy.bundle");
    std::fs::write(&bundle_path, bundle.to_bytes()).unwrap();
    let config_path = bundle_config(tmp.path(), "portcullis.toml", &bundle_path, None);

    let server = start_server_with(&config_path, &tmp.path().join("data"));
    assert_eq!(
        healthz_bundle(&server),
        format!("sha256:{}", bundle.hash_hex())
    );
    let token = mint(
        GITHUB_KEY,
        &example_claims("billing-release.json"),
        tmp.path(),
    );
    let answer = decide(&server, &token, json!({ "name": "billing_api" }), "POST");
    assert_eq!(answer["rule"], "billing_release_deploys", "{answer}");
    stop_server(server);
}

/// The data directory holds every event's claims and the store's keys: a new one is made
/// readable by its owner alone whatever the umask, and one open to others is reported.
#[test]
fn the_data_directory_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt as _;

    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("new").join("data");
    let server = start_server(&data_dir);
    let mode = std::fs::metadata(&data_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{mode:o}");
    stop_server(server);

    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = start_server(&data_dir);
    let warned = server
        .startup
        .iter()
        .find(|line| line.contains("the data directory is open to other users"))
        .unwrap_or_else(|| panic!("no warning in {:?}", server.startup));
    assert!(warned.contains("755"), "{warned}");
    stop_server(server);
}

/// A policy set that reads custom `oidc` claims, served from a bundle built with them: the
/// server decides on the attested custom claims, and refuses to start under a configuration
/// whose custom claims differ from the bundle's.
#[test]
fn custom_claims_reach_policies_and_bundles_must_match_them() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = r#"
workload payments_jobs {
  oidc { team == "payments" && has tier && tier >= 2 }
}
target ledger { https { host = "ledger.internal" } }
permit payments_deploy { workload payments_jobs target ledger }
"#;
    let files = [portcullis_lang::SourceFile::new("custom.gate", policy)];
    let claims_json = r#"[
        { "name": "team", "path": "org.team", "type": "string", "required": true },
        { "name": "tier", "type": "integer" }
    ]"#;
    let custom = portcullis_lang::claims_file::parse_claims_file(claims_json).unwrap();
    assert!(portcullis_lang::compile(&files).is_err(), "unknown without");
    let set = portcullis_lang::compile_with_claims(&files, &custom).unwrap();
    let bundle = Bundle::from_policy_set(&set).unwrap();
    let bundle_path = tmp.path().join("custom.bundle");
    std::fs::write(&bundle_path, bundle.to_bytes()).unwrap();

    let write_config = |name: &str, tier_type: &str| {
        let config = format!(
            "[policy]\nbundle = {bundle:?}\n\n[[trust_providers]]\nname = \"corp-idp\"\n\
             kind = \"oidc\"\nissuer = \"https://idp.example-issuer.invalid\"\n\
             audiences = [\"portcullis\"]\njwks_file = {jwks:?}\nexample_only = true\n\
             custom_claims = [\n  {{ name = \"team\", path = \"org.team\", type = \"string\", \
             required = true }},\n  {{ name = \"tier\", path = \"tier\", \
             type = \"{tier_type}\" }},\n]\n",
            bundle = bundle_path.to_str().unwrap(),
            jwks = repo()
                .join("examples/dev/example-github-issuer.jwks.json")
                .to_str()
                .unwrap(),
        );
        let path = tmp.path().join(name);
        std::fs::write(&path, config).unwrap();
        path
    };

    let mismatched = write_config("mismatched.toml", "string");
    let err = refused_start(&mismatched, &tmp.path().join("refused"));
    assert!(
        err.contains(
            "custom claim `tier` is integer in the bundle but string in the configuration"
        ),
        "{err}"
    );

    let config = write_config("portcullis.toml", "integer");
    let server = start_server_with(&config, &tmp.path().join("data"));
    let claims = |team: &str, tier: i64| {
        json!({
            "iss": "https://idp.example-issuer.invalid", "aud": "portcullis",
            "sub": "svc-payments", "org": { "team": team }, "tier": tier,
        })
    };
    let target = json!({ "name": "ledger" });
    let token = mint(GITHUB_KEY, &claims("payments", 3), tmp.path());
    let answer = decide(&server, &token, target.clone(), "POST");
    assert_eq!(answer["decision"], "allow", "{answer}");
    assert_eq!(answer["rule"], "payments_deploy", "{answer}");
    let token = mint(GITHUB_KEY, &claims("payments", 1), tmp.path());
    let answer = decide(&server, &token, target.clone(), "POST");
    assert_eq!(answer["decision"], "deny", "{answer}");
    assert_eq!(answer["reason_code"], "no_permit", "{answer}");
    let token = mint(GITHUB_KEY, &claims("search", 3), tmp.path());
    let answer = decide(&server, &token, target, "POST");
    assert_eq!(answer["decision"], "deny", "{answer}");
    stop_server(server);
}

/// A trust provider whose keys are the example keys published in `examples/dev/` stops the
/// server before it listens, unless it is marked `example_only`: anyone can mint the tokens
/// those keys accept.
#[test]
fn serve_refuses_the_published_example_keys_unless_marked_example_only() {
    let tmp = tempfile::tempdir().unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(repo().join("examples"))
        .arg(tmp.path())
        .status()
        .unwrap();
    assert!(copied.success());
    let config = tmp.path().join("examples/portcullis.toml");
    let shipped = std::fs::read_to_string(&config).unwrap();
    let unmarked = shipped.replace("example_only = true\n", "");
    assert!(!unmarked.contains("example_only"), "{unmarked}");
    std::fs::write(&config, unmarked).unwrap();
    let err = refused_start(&config, &tmp.path().join("data"));
    assert!(
        err.contains("trust provider `github-actions-example`: key ")
            && err.contains("is the example key published in")
            && err.contains("examples/dev/example-github-issuer.jwks.json"),
        "{err}"
    );
}

/// With `[policy] public_key`, the server starts only on a bundle that key signed: an unsigned
/// one, one signed by another key, one whose signature was altered and another policy set
/// carrying the real bundle's signature each stop it before it listens or writes anything,
/// with the file and the reason.
#[test]
fn serve_refuses_a_bundle_its_public_key_did_not_sign() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[7; 32]);
    let public_key = tmp.path().join("bundle-signing.key.pub");
    let public_pem = signing::verifying_key_to_pem(&key.verifying_key()).unwrap();
    std::fs::write(&public_key, public_pem).unwrap();
    let unsigned = example_bundle();
    let signed = unsigned.sign(&key);
    let other_key = unsigned.sign(&SigningKey::from_bytes(&[8; 32]));
    let mut altered = signed.to_bytes();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    // Someone else's policy set, carrying the real bundle's signature.
    let permissive = "workload anyone { oidc { } }\n\
                      target api { https { host = \"api.example\" } }\n\
                      permit everyone { workload anyone target api }\n";
    let files = [portcullis_lang::SourceFile::new("forged.gate", permissive)];
    let mut forged = Bundle::from_policy_set(&portcullis_lang::compile(&files).unwrap())
        .unwrap()
        .to_bytes();
    forged.extend(&signed.to_bytes()[unsigned.to_bytes().len()..]);

    let mismatch = "the bundle's signature does not match its bytes";
    let refusals = [
        ("unsigned", unsigned.to_bytes(), "the bundle is not signed"),
        (
            "other-key",
            other_key.to_bytes(),
            "the bundle is signed by key ",
        ),
        ("altered", altered, mismatch),
        ("forged", forged, mismatch),
    ];
    let data_dir = tmp.path().join("refused-data");
    for (name, bytes, reason) in refusals {
        let bundle_path = tmp.path().join(format!("{name}.bundle"));
        std::fs::write(&bundle_path, bytes).unwrap();
        let config_name = format!("{name}.toml");
        let config = bundle_config(tmp.path(), &config_name, &bundle_path, Some(&public_key));
        let err = refused_start(&config, &data_dir);
        let refusal = format!("refusing the bundle `{}`: {reason}", bundle_path.display());
        assert!(err.contains(&refusal), "{name}: {err}");
        assert!(err.contains("bundle-signing.key.pub"), "{name}: {err}");
        assert!(!err.contains("listening"), "{name}: {err}");
        assert!(
            !data_dir.exists(),
            "{name}: nothing is written before the bundle loads"
        );
    }

    let bundle_path = tmp.path().join("signed.bundle");
    std::fs::write(&bundle_path, signed.to_bytes()).unwrap();
    let config = bundle_config(tmp.path(), "signed.toml", &bundle_path, Some(&public_key));
    let server = start_server_with(&config, &tmp.path().join("data"));
    assert_eq!(
        healthz_bundle(&server),
        format!("sha256:{}", unsigned.hash_hex()),
        "signing leaves the bundle hash as it was"
    );
    stop_server(server);
}
