//! Policy tests and the reference evaluator: the `corpus/test/` policy sets run with their
//! rendered runs in snapshots, `policyc test` run as a user runs it, and the reference
//! evaluator's decisions on requests that a `test` declaration cannot state.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::process::Output;

use common::{corpus_dir, corpus_file, corpus_names, examples_dir, path_arg, snapshot_settings};
use portcullis_lang::check::compile_with_tests;
use portcullis_lang::ir::PolicySet;
use portcullis_lang::policy_test::{self, TestCase};
use portcullis_lang::reference::{self, EvalError, Reason, Request, TargetQuery};
use portcullis_lang::schema::{ClaimValue, CustomClaims, ProviderKind};
use portcullis_lang::{SourceFile, read_policy_path, render};

fn compile(files: &[SourceFile]) -> (PolicySet, Vec<TestCase>) {
    compile_with_tests(files, &CustomClaims::default())
        .unwrap_or_else(|diags| panic!("{}", render(&diags, false)))
}

fn compile_text(text: &str) -> (PolicySet, Vec<TestCase>) {
    compile(&[SourceFile::new("t.gate", text)])
}

/// Runs `corpus/test/NAME.gate` and compares the rendered run with its snapshot.
fn check_corpus(name: &str) -> (usize, usize) {
    let (path, file) = corpus_file("test", name);
    let files = [file];
    let (set, tests) = compile(&files);
    let run = policy_test::run(&set, &tests);
    snapshot_settings(&path)
        .bind(|| insta::assert_snapshot!(name, policy_test::render(&run, &files)));
    (run.n_passed(), run.n_failed())
}

#[test]
fn test_corpus_runs_as_its_snapshots_say() {
    let names = corpus_names("test");
    assert!(
        names.len() >= 2,
        "the test corpus has {} files",
        names.len()
    );
    for name in names {
        let (passed, failed) = check_corpus(&name);
        assert!(passed > 0, "{name}: no test passes");
        assert_eq!(
            failed > 0,
            name.starts_with("failing"),
            "{name}: {failed} failed"
        );
    }
}

#[test]
fn the_example_tests_pass_and_exercise_every_rule() {
    let files = read_policy_path(&examples_dir()).unwrap();
    let (set, tests) = compile(&files);
    let run = policy_test::run(&set, &tests);
    assert!(run.outcomes.len() >= 10);
    let failed: Vec<String> = run
        .outcomes
        .iter()
        .filter(|outcome| !outcome.passed)
        .map(|outcome| outcome.got())
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(run.unexercised.is_empty(), "{:?}", run.unexercised);
}

#[test]
fn tests_never_reach_the_policy_set() {
    let text = "target api { https { host = \"a\" } }\n\
                test t { request { process { pid = 1 uid = 0 gid = 0 groups = [] exe = \"/x\" \
                exe_sha256 = \"00\" } target api } expect deny }\n";
    let (set, tests) = compile_text(text);
    assert_eq!(tests.len(), 1);
    let without = portcullis_lang::compile(&[SourceFile::new(
        "t.gate",
        "target api { https { host = \"a\" } }\n",
    )])
    .unwrap();
    assert_eq!(set, without);
}

#[test]
fn expectations_check_only_what_they_name() {
    let text = "target api { https { host = \"a\" } }\n\
        workload p { process { } }\n\
        credential c { jwt { audience = \"a\" ttl = 1m } }\n\
        permit p_api { workload p target api credential c }\n\
        test bare { request { process { pid = 1 uid = 0 gid = 0 groups = [] exe = \"/x\" \
        exe_sha256 = \"00\" } target api } expect allow }\n\
        test by_rule { request { process { pid = 1 uid = 0 gid = 0 groups = [] exe = \"/x\" \
        exe_sha256 = \"00\" } target api } expect allow by p_api }\n\
        test wrong_credential { request { process { pid = 1 uid = 0 gid = 0 groups = [] \
        exe = \"/x\" exe_sha256 = \"00\" } target api } expect allow with c }\n\
        test wrong_decision { request { process { pid = 1 uid = 0 gid = 0 groups = [] \
        exe = \"/x\" exe_sha256 = \"00\" } target api } expect deny }\n";
    let (set, tests) = compile_text(text);
    let run = policy_test::run(&set, &tests);
    let passed: Vec<bool> = run.outcomes.iter().map(|outcome| outcome.passed).collect();
    assert_eq!(passed, [true, true, true, false]);
    assert_eq!(
        run.outcomes[3].got(),
        "allow by p_api with c: permitted by rule `p_api`"
    );
}

#[test]
fn a_deny_by_a_rule_is_not_an_error_in_it() {
    let request = "request { process { pid = 1 uid = 0 gid = 0 groups = [] exe = \"/x\" \
        exe_sha256 = \"00\" } target api }";
    let text = format!(
        "target api {{ https {{ host = \"a\" }} }}\n\
         forbid freeze {{ when request.time < 2027-01-01T00:00:00Z }}\n\
         test no_time_any_deny {{ {request} expect deny }}\n\
         test no_time_is_an_error {{ {request} expect error by freeze }}\n\
         test no_time_is_not_a_forbid {{ {request} expect deny by freeze }}\n"
    );
    let (set, tests) = compile_text(&text);
    let run = policy_test::run(&set, &tests);
    let passed: Vec<bool> = run.outcomes.iter().map(|outcome| outcome.passed).collect();
    assert_eq!(passed, [true, true, false]);
    assert!(
        run.outcomes[2].got().starts_with("error by freeze: "),
        "{}",
        run.outcomes[2].got()
    );
}

/// A policy set for the evaluator tests that `test` declarations cannot express.
fn evaluator_set() -> PolicySet {
    let text = "target api { https { host = \"API.internal\" port = 8443 } }\n\
        target db { postgres { host = \"db.internal\" } }\n\
        workload ci { github { repository == \"acme/x\" } }\n\
        permit ci_api { workload ci target api when target.port in 8000..8999 }\n\
        permit ci_db { workload ci target any when request.action matches \"^conn\" }\n";
    compile_text(text).0
}

fn github(repository: &str) -> Vec<Option<ClaimValue>> {
    let mut claims = vec![None; ProviderKind::Github.claims().len()];
    let (id, _) = ProviderKind::Github.claim("repository").unwrap();
    claims[usize::from(id.0)] = Some(ClaimValue::String(repository.to_owned()));
    claims
}

fn request<'a>(claims: &'a [Option<ClaimValue>], target: TargetQuery<'a>) -> Request<'a> {
    Request {
        kind: ProviderKind::Github,
        claims,
        target,
        action: None,
        resource: None,
        source_ip: None,
        time: None,
    }
}

#[test]
fn endpoints_resolve_without_regard_to_case() {
    let set = evaluator_set();
    let claims = github("acme/x");
    let endpoint = TargetQuery::Endpoint {
        protocol: "HTTPS",
        host: "api.INTERNAL",
        port: 8443,
    };
    let decision = reference::decide(&set, &request(&claims, endpoint));
    assert!(decision.allow, "{}", decision.reason_text(&set));
    assert_eq!(decision.rule, Some(0));
    let wrong_port = TargetQuery::Endpoint {
        protocol: "https",
        host: "api.internal",
        port: 443,
    };
    let decision = reference::decide(&set, &request(&claims, wrong_port));
    assert_eq!(decision.reason, Reason::UnknownTarget);
    assert_eq!(decision.target, None);
}

#[test]
fn absent_request_fields_and_claims_are_errors_that_deny() {
    let set = evaluator_set();
    let claims = github("acme/x");
    let decision = reference::decide(&set, &request(&claims, TargetQuery::Named("db")));
    let error = EvalError::AbsentRequestField { field: "action" };
    assert_eq!(decision.reason, Reason::EvaluationError(error));
    assert_eq!(decision.rule, Some(1));
    assert!(!decision.allow);

    let no_claims: Vec<Option<ClaimValue>> = Vec::new();
    let mut connect = request(&no_claims, TargetQuery::Named("db"));
    connect.action = Some("connect");
    let decision = reference::decide(&set, &connect);
    let error = EvalError::AbsentClaim {
        claim: "repository".to_owned(),
    };
    assert_eq!(decision.reason, Reason::EvaluationError(error));

    let wrong_type = vec![Some(ClaimValue::Int(7)); ProviderKind::Github.claims().len()];
    let mut connect = request(&wrong_type, TargetQuery::Named("db"));
    connect.action = Some("connect");
    let decision = reference::decide(&set, &connect);
    assert_eq!(decision.reason.code(), "evaluation_error");
    assert!(decision.reason_text(&set).contains("is not a string"));
}

#[test]
fn a_matching_regex_and_range_allow() {
    let set = evaluator_set();
    let claims = github("acme/x");
    let mut connect = request(&claims, TargetQuery::Named("db"));
    connect.action = Some("connect");
    let decision = reference::decide(&set, &connect);
    assert!(decision.allow);
    assert_eq!(decision.reason_text(&set), "permitted by rule `ci_db`");
    let other = github("acme/y");
    let decision = reference::decide(&set, &request(&other, TargetQuery::Named("api")));
    assert_eq!(decision.reason, Reason::NoPermit);
}

/// `policyc test ARGS…`, run in the crate directory.
fn policyc_test(args: &[&str]) -> Output {
    let mut all = vec!["test"];
    all.extend_from_slice(args);
    common::policyc(&all)
}

#[test]
fn policyc_test_passes_on_the_examples() {
    let output = policyc_test(&["../examples/policies"]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("test release_tag_deploys_billing ... ok\n"),
        "{stdout}"
    );
    assert!(stdout.contains("12 passed; 0 failed\n"), "{stdout}");
    assert!(
        stdout.contains("every rule decides at least one test\n"),
        "{stdout}"
    );
}

#[test]
fn policyc_test_fails_on_a_failing_test_and_on_errors() {
    let failing = corpus_dir("test").join("failing.gate");
    let output = policyc_test(&[path_arg(&failing)]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("test root_ops_is_allowed ... FAILED\n"),
        "{stdout}"
    );
    assert!(stdout.contains("1 passed; 3 failed\n"), "{stdout}");
    assert!(
        stdout
            .contains("expected: allow with none\n     got: allow by ops_reach_api with ops_token"),
        "{stdout}"
    );
    assert!(
        stdout.contains("rules no test exercises: `unused`\n"),
        "{stdout}"
    );

    let broken = corpus_dir("err").join("test_missing_claims.gate");
    let output = policyc_test(&[path_arg(&broken)]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("gate::E0602"), "{stderr}");

    let output = policyc_test(&["no/such/dir"]);
    assert_eq!(output.status.code(), Some(2));
    let output = policyc_test(&["--no-such-flag"]);
    assert_eq!(output.status.code(), Some(2));
}

/// `policyc test --format FORMAT ARGS…`: the exit status, the document on stdout, and stderr.
fn policyc_test_document(format: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["--format", format];
    all.extend_from_slice(args);
    let output = policyc_test(&all);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    (output.status.code(), stdout, stderr)
}

/// The 1-based line of the first line of `corpus/test/NAME.gate` that starts with `prefix`.
fn corpus_line(name: &str, prefix: &str) -> usize {
    let path = corpus_dir("test").join(format!("{name}.gate"));
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .position(|line| line.starts_with(prefix))
        .unwrap()
        + 1
}

#[test]
fn policyc_test_json_has_each_test_its_expectation_and_its_decision() {
    let failing = "tests/corpus/test/failing.gate";
    let (status, stdout, stderr) = policyc_test_document("json", &[failing]);
    assert_eq!(status, Some(1), "{stderr}");
    // Nothing but the document on stdout.
    let document: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(document["version"], 1);
    assert_eq!(document["tool"]["name"], "policyc");
    let summary = &document["summary"];
    assert_eq!(summary["policy_sets"], 1);
    assert_eq!(summary["tests"], 4);
    assert_eq!(summary["passed"], 1);
    assert_eq!(summary["failed"], 3);
    assert_eq!(summary["unexercised_rules"], 1);
    assert_eq!(summary["errors"], 0);
    assert!(
        stderr.ends_with("error: 1 policy set, 1 passed, 3 failed\n"),
        "{stderr}"
    );

    let set = &document["policy_sets"][0];
    assert_eq!(set["path"], failing);
    assert_eq!(set["outcome"], "failed");
    assert_eq!(set["summary"]["tests"], 4);
    let tests = set["tests"].as_array().unwrap();
    let names: Vec<&str> = tests
        .iter()
        .map(|test| test["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "root_ops_is_allowed",
            "others_are_denied_by_the_forbid",
            "ops_is_allowed",
            "ops_needs_no_credential",
        ]
    );
    let outcomes: Vec<&str> = tests
        .iter()
        .map(|test| test["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["failed", "failed", "passed", "failed"]);
    // `with none` is `false`: an allow without a credential; null is what is not checked.
    assert_eq!(tests[3]["expected"]["credential"], false);
    assert_eq!(tests[3]["expected"]["rule"], serde_json::Value::Null);
    assert_eq!(tests[3]["actual"]["credential"], "ops_token");

    let root = &tests[0];
    assert_eq!(root["file"], failing);
    assert_eq!(
        root["line"],
        corpus_line("failing", "test root_ops_is_allowed")
    );
    assert_eq!(root["column"], 1);
    assert_eq!(
        root["expected"],
        serde_json::json!({
            "decision": "allow", "rule": "ops_reach_api", "credential": "ops_token",
        })
    );
    assert_eq!(
        root["actual"],
        serde_json::json!({
            "decision": "deny", "rule": "no_root", "credential": null,
            "reason": "forbidden by rule `no_root`", "reason_code": "forbidden",
        })
    );
    // What the expectation leaves out is null; the decision still names every part.
    assert_eq!(tests[2]["expected"]["rule"], serde_json::Value::Null);
    assert_eq!(tests[2]["actual"]["credential"], "ops_token");

    let unexercised = set["unexercised_rules"].as_array().unwrap();
    assert_eq!(unexercised.len(), 1);
    assert_eq!(unexercised[0]["name"], "unused");
    assert_eq!(unexercised[0]["file"], failing);
    assert_eq!(
        unexercised[0]["line"],
        corpus_line("failing", "permit unused")
    );
    assert_eq!(unexercised[0]["column"], 1);
}

#[test]
fn policyc_test_json_passes_on_the_examples() {
    let (status, stdout, stderr) = policyc_test_document("json", &["../examples/policies"]);
    assert_eq!(status, Some(0), "{stderr}");
    let document: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(document["summary"]["tests"], 12);
    assert_eq!(document["summary"]["passed"], 12);
    assert_eq!(document["summary"]["failed"], 0);
    let set = &document["policy_sets"][0];
    assert_eq!(set["outcome"], "passed");
    assert_eq!(set["unexercised_rules"], serde_json::json!([]));
    assert!(
        set["tests"]
            .as_array()
            .unwrap()
            .iter()
            .all(|test| test["outcome"] == "passed" && test["line"].as_u64().unwrap() > 0)
    );
}

#[test]
fn policyc_test_json_carries_compile_errors_and_unreadable_paths() {
    let broken = "tests/corpus/err/test_missing_claims.gate";
    let (status, stdout, stderr) = policyc_test_document("json", &[broken]);
    assert_eq!(status, Some(1));
    // The errors are on stderr for a person too.
    assert!(stderr.contains("gate::E0602"), "{stderr}");
    let document: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let set = &document["policy_sets"][0];
    assert_eq!(set["outcome"], "invalid");
    assert_eq!(set["tests"], serde_json::json!([]));
    assert_eq!(set["diagnostics"][0]["code"], "gate::E0602");
    assert_eq!(set["diagnostics"][0]["file"], broken);
    assert_eq!(document["summary"]["errors"], 1);

    let (status, stdout, _) = policyc_test_document("json", &["no/such/dir"]);
    assert_eq!(status, Some(2));
    let document: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(document["unreadable"][0]["path"], "no/such/dir");
    assert_eq!(document["summary"]["unreadable"], 1);

    let output = policyc_test(&["--format", "sarif", "../examples/policies"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
}

/// The attribute `name` of `node`, which must be there.
fn attribute<'a>(node: roxmltree::Node<'a, '_>, name: &str) -> &'a str {
    node.attribute(name)
        .unwrap_or_else(|| panic!("<{}> has no `{name}`", node.tag_name().name()))
}

fn children<'a, 'input>(
    node: roxmltree::Node<'a, 'input>,
    name: &str,
) -> Vec<roxmltree::Node<'a, 'input>> {
    node.children()
        .filter(|child| child.has_tag_name(name))
        .collect()
}

#[test]
fn policyc_test_junit_has_a_suite_per_policy_set_and_a_case_per_test() {
    let failing = "tests/corpus/test/failing.gate";
    let args = [failing, "../examples/policies"];
    let (status, stdout, stderr) = policyc_test_document("junit", &args);
    assert_eq!(status, Some(1), "{stderr}");
    let xml = roxmltree::Document::parse(&stdout).unwrap();
    let root = xml.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    assert_eq!(attribute(root, "tests"), "16");
    assert_eq!(attribute(root, "failures"), "3");
    assert_eq!(attribute(root, "errors"), "0");

    let suites = children(root, "testsuite");
    assert_eq!(suites.len(), 2);
    let suite = suites[0];
    assert_eq!(attribute(suite, "name"), failing);
    assert_eq!(attribute(suite, "tests"), "4");
    assert_eq!(attribute(suite, "failures"), "3");
    assert_eq!(attribute(suite, "errors"), "0");
    let cases = children(suite, "testcase");
    assert_eq!(cases.len(), 4);
    let case = cases[0];
    assert_eq!(attribute(case, "name"), "root_ops_is_allowed");
    assert_eq!(attribute(case, "classname"), "tests.corpus.test.failing");
    assert_eq!(attribute(case, "file"), failing);
    let line = corpus_line("failing", "test root_ops_is_allowed").to_string();
    assert_eq!(attribute(case, "line"), line);
    let failure = children(case, "failure");
    assert_eq!(failure.len(), 1);
    assert_eq!(
        attribute(failure[0], "message"),
        "expected allow by ops_reach_api with ops_token, got deny by no_root: \
         forbidden by rule `no_root`"
    );
    assert_eq!(
        failure[0].text(),
        Some(
            "expected: allow by ops_reach_api with ops_token\n     \
             got: deny by no_root: forbidden by rule `no_root`\n"
        )
    );
    assert!(children(cases[2], "failure").is_empty());
    let system_out = children(suite, "system-out");
    let unused = format!(
        "  unused ({failing}:{})\n",
        corpus_line("failing", "permit unused")
    );
    assert_eq!(
        system_out[0].text(),
        Some(format!("rules no test exercises:\n{unused}").as_str())
    );

    let examples = suites[1];
    assert_eq!(attribute(examples, "name"), "../examples/policies");
    assert_eq!(attribute(examples, "tests"), "12");
    assert_eq!(attribute(examples, "failures"), "0");
    let cases = children(examples, "testcase");
    assert_eq!(cases.len(), 12);
    assert!(
        cases
            .iter()
            .all(|case| case.children().all(|child| !child.is_element()))
    );
    assert_eq!(attribute(cases[0], "classname"), "examples.policies.tests");
}

#[test]
fn policyc_test_junit_escapes_what_a_failure_quotes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("escape.gate");
    let text = r#"target api { https { host = "api.internal" path_prefix = "/v1/a&b<c\"d>" } }
workload p { process { } }
permit p_api { workload p target api }
test outside_the_prefix {
  request {
    process { pid = 1 uid = 0 gid = 0 groups = [] exe = "/x" exe_sha256 = "00" }
    target api
    resource = "/v2/x"
  }
  expect allow
}
"#;
    std::fs::write(&path, text).unwrap();
    let (status, stdout, stderr) = policyc_test_document("junit", &[path_arg(&path)]);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(stdout.contains("a&amp;b&lt;c&quot;d&gt;"), "{stdout}");
    let xml = roxmltree::Document::parse(&stdout).unwrap();
    let failure = xml
        .descendants()
        .find(|node| node.has_tag_name("failure"))
        .unwrap();
    let got = "got deny: the request names no resource under the path prefix \
               `/v1/a&b<c\"d>` of target `api`";
    assert_eq!(
        attribute(failure, "message"),
        format!("expected allow, {got}")
    );
    assert!(failure.text().unwrap().contains("`/v1/a&b<c\"d>`"));
}

#[test]
fn policyc_test_junit_reports_a_policy_set_that_runs_no_test_as_an_error() {
    let broken = "tests/corpus/err/test_missing_claims.gate";
    let (status, stdout, stderr) = policyc_test_document("junit", &[broken, "no/such/dir"]);
    assert_eq!(status, Some(2), "{stderr}");
    let xml = roxmltree::Document::parse(&stdout).unwrap();
    let root = xml.root_element();
    assert_eq!(attribute(root, "tests"), "2");
    assert_eq!(attribute(root, "errors"), "2");
    let suites = children(root, "testsuite");
    let names: Vec<&str> = suites
        .iter()
        .map(|suite| attribute(*suite, "name"))
        .collect();
    assert_eq!(names, [broken, "no/such/dir"]);
    for suite in &suites {
        assert_eq!(attribute(*suite, "errors"), "1");
        let cases = children(*suite, "testcase");
        assert_eq!(attribute(cases[0], "name"), "(policy set)");
        assert_eq!(children(cases[0], "error").len(), 1);
    }
    let compile_error = children(children(suites[0], "testcase")[0], "error")[0];
    assert_eq!(
        attribute(compile_error, "message"),
        "policy set has 1 error"
    );
    assert!(compile_error.text().unwrap().contains("gate::E0602"));
    let read_error = children(children(suites[1], "testcase")[0], "error")[0];
    assert!(attribute(read_error, "message").starts_with("cannot read `no/such/dir`"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("untested.gate");
    std::fs::write(&path, "target api { https { host = \"a\" } }\n").unwrap();
    let (status, stdout, _) = policyc_test_document("junit", &[path_arg(&path)]);
    assert_eq!(status, Some(1));
    let xml = roxmltree::Document::parse(&stdout).unwrap();
    let error = xml
        .descendants()
        .find(|node| node.has_tag_name("error"))
        .unwrap();
    assert!(attribute(error, "message").ends_with("declares no `test`; nothing was tested"));
}
