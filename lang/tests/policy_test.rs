//! Policy tests and the reference evaluator: the `corpus/test/` policy sets run with their
//! rendered runs in snapshots, `policyc test` run as a user runs it, and the reference
//! evaluator's decisions on requests that a `test` declaration cannot state.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use portcullis_lang::check::compile_with_tests;
use portcullis_lang::ir::PolicySet;
use portcullis_lang::policy_test::{self, TestCase};
use portcullis_lang::reference::{self, EvalError, Reason, Request, TargetQuery};
use portcullis_lang::schema::{ClaimValue, CustomClaims, ProviderKind};
use portcullis_lang::{SourceFile, read_policy_path, render};

fn lang_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn compile(files: &[SourceFile]) -> (PolicySet, Vec<TestCase>) {
    compile_with_tests(files, &CustomClaims::default())
        .unwrap_or_else(|diags| panic!("{}", render(&diags, false)))
}

fn compile_text(text: &str) -> (PolicySet, Vec<TestCase>) {
    compile(&[SourceFile::new("t.gate", text)])
}

/// Runs `corpus/test/NAME.gate` and compares the rendered run with its snapshot.
fn check_corpus(name: &str) -> (usize, usize) {
    let path = lang_dir().join(format!("tests/corpus/test/{name}.gate"));
    let text = std::fs::read_to_string(&path).unwrap();
    let files = [SourceFile::new(format!("corpus/test/{name}.gate"), text)];
    let (set, tests) = compile(&files);
    let run = policy_test::run(&set, &tests);
    let mut settings = insta::Settings::clone_current();
    settings.set_input_file(&path);
    settings.set_prepend_module_to_snapshot(true);
    settings.bind(|| insta::assert_snapshot!(name, policy_test::render(&run, &files)));
    (run.n_passed(), run.n_failed())
}

#[test]
fn test_corpus_runs_as_its_snapshots_say() {
    let mut names: Vec<String> = std::fs::read_dir(lang_dir().join("tests/corpus/test"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "gate"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
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
    let files = read_policy_path(&lang_dir().join("../examples/policies")).unwrap();
    let (set, tests) = compile(&files);
    let run = policy_test::run(&set, &tests);
    assert!(run.outcomes.len() >= 10);
    let failed: Vec<&str> = run
        .outcomes
        .iter()
        .filter(|outcome| !outcome.passed)
        .map(|outcome| outcome.got.as_str())
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
        run.outcomes[3].got,
        "allow by p_api with c: permitted by rule `p_api`"
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

fn policyc_test(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_policyc"))
        .arg("test")
        .args(args)
        .current_dir(lang_dir())
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn path_arg(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
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
    assert!(stdout.contains("11 passed; 0 failed\n"), "{stdout}");
    assert!(
        stdout.contains("every rule decides at least one test\n"),
        "{stdout}"
    );
}

#[test]
fn policyc_test_fails_on_a_failing_test_and_on_errors() {
    let failing = lang_dir().join("tests/corpus/test/failing.gate");
    let output = policyc_test(&[&path_arg(&failing)]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("test root_ops_is_allowed ... FAILED\n"),
        "{stdout}"
    );
    assert!(stdout.contains("1 passed; 2 failed\n"), "{stdout}");
    assert!(
        stdout.contains("rules no test exercises: `unused`\n"),
        "{stdout}"
    );

    let broken = lang_dir().join("tests/corpus/err/test_missing_claims.gate");
    let output = policyc_test(&[&path_arg(&broken)]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("gate::E0602"), "{stderr}");

    let output = policyc_test(&["no/such/dir"]);
    assert_eq!(output.status.code(), Some(2));
    let output = policyc_test(&["--no-such-flag"]);
    assert_eq!(output.status.code(), Some(2));
}
