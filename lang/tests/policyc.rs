//! Runs the built `policyc` binary the way a user or CI does.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails by panicking"
)]

mod common;

use std::process::{Command, Output};

use common::{corpus_dir, examples_dir, lang_dir, path_arg, policyc, policyc_in, stderr, stdout};
use serde_json::Value;

#[test]
fn check_accepts_the_example_policy_set() {
    let output = policyc(&["check", path_arg(&examples_dir())]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "ok: 4 files, 6 workloads, 3 targets, 8 rules\n"
    );
}

#[test]
fn check_reports_diagnostics_and_exits_1() {
    let file = corpus_dir("err").join("unknown_claim.gate");
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
    let output = policyc(&["build", path_arg(&examples_dir()), "-o", path_arg(&out)]);
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
    let mut lines = stdout.lines();
    let hash = lines
        .next()
        .unwrap()
        .trim_start_matches(&prefix)
        .trim_end_matches(')');
    // The second line states the instruction bound the engine runs the bundle under.
    let bound = portcullis_lang::vm::Program::load(&bytes)
        .unwrap()
        .instruction_bound();
    assert_eq!(
        lines.next(),
        Some(format!("a decision runs at most {bound} instructions").as_str())
    );
    assert_eq!(hash.len(), 64, "{stdout}");
    assert!(hash.chars().all(|ch| ch.is_ascii_hexdigit()), "{stdout}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "temporary files left behind");
}

#[test]
fn build_of_an_invalid_policy_set_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("policies.bundle");
    let file = corpus_dir("err").join("missing_clause.gate");
    let output = policyc(&["build", path_arg(&file), "-o", path_arg(&out)]);
    assert_eq!(output.status.code(), Some(1));
    assert!(!out.exists());
}

const LINT_FILE: &str = "tests/corpus/lint/broad_permit.gate";
const ERR_FILE: &str = "tests/corpus/err/unknown_claim.gate";
const EXAMPLES: &str = "../examples/policies";

#[test]
fn warnings_alone_exit_0_and_are_reported_on_stderr() {
    let output = policyc(&["check", LINT_FILE]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "ok: 1 file, 1 workload, 1 target, 3 rules (2 warnings)\n"
    );
    let stderr = stderr(&output);
    assert_eq!(
        stderr.matches("warning[gate::W0101]").count(),
        2,
        "{stderr}"
    );
    assert!(!stderr.contains("error"), "{stderr}");
}

#[test]
fn deny_warnings_turns_warnings_into_failure() {
    let output = policyc(&["check", "--deny-warnings", LINT_FILE]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = stderr(&output);
    assert!(
        stderr.ends_with("error: policy set has 2 warnings, denied by --deny-warnings\n"),
        "{stderr}"
    );
    // A clean policy set still passes.
    let output = policyc(&["check", "--deny-warnings", EXAMPLES]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr);
}

#[test]
fn allowed_warnings_are_not_reported_and_errors_cannot_be_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("static.gate");
    std::fs::write(
        &file,
        "credential k { static { env = \"K\" } }\ntarget t { https { host = \"h\" } }\n\
         workload w { github { repository == \"a/b\" } }\n\
         permit p { workload w target t credential k }\n",
    )
    .unwrap();
    let file = path_arg(&file);
    let output = policyc(&["check", "--deny-warnings", file]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("gate::W0401"));
    for code in ["W0401", "gate::W0401"] {
        let output = policyc(&["check", "--deny-warnings", "--allow", code, file]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert!(!stderr(&output).contains("W0401"), "{}", stderr(&output));
    }
    let output = policyc(&["check", "--allow", "E0101", file]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("not a warning code"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn each_path_is_its_own_policy_set() {
    let output = policyc(&["check", EXAMPLES, ERR_FILE, LINT_FILE]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stdout(&output),
        format!(
            "ok: {EXAMPLES}: 4 files, 6 workloads, 3 targets, 8 rules\n\
             ok: {LINT_FILE}: 1 file, 1 workload, 1 target, 3 rules (2 warnings)\n"
        )
    );
    let stderr = stderr(&output);
    assert!(
        stderr.contains(&format!("error: {ERR_FILE}: policy set has 2 errors\n")),
        "{stderr}"
    );
}

#[test]
fn an_unreadable_path_exits_2_even_beside_errors() {
    let output = policyc(&["check", ERR_FILE, "/nonexistent/policies"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr(&output);
    assert!(stderr.contains("gate::E0201"), "{stderr}");
    assert!(
        stderr.ends_with(
            "error: cannot read `/nonexistent/policies`: No such file or directory (os error 2)\n"
        ),
        "{stderr}"
    );
}

#[test]
fn without_a_path_the_working_directory_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.gate"),
        "target t { http { host = \"a\" } }\n",
    )
    .unwrap();
    let output = policyc_in(dir.path(), &["check"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "ok: 1 file, 0 workloads, 1 target, 0 rules (1 warning)\n"
    );
}

#[test]
fn json_puts_one_document_on_stdout() {
    let output = policyc(&["check", "--format", "json", ERR_FILE, LINT_FILE]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        "error: 2 policy sets, 2 errors, 2 warnings\n"
    );
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["tool"]["name"], "policyc");
    assert_eq!(doc["tool"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        doc["summary"],
        serde_json::json!({
            "policy_sets": 2, "files": 2, "errors": 2, "warnings": 2, "unreadable": 0
        })
    );
    assert_eq!(doc["policy_sets"][0]["path"], ERR_FILE);
    assert_eq!(doc["policy_sets"][0]["errors"], 2);
    assert_eq!(doc["policy_sets"][1]["warnings"], 2);
    let first = &doc["diagnostics"][0];
    assert_eq!(first["policy_set"], ERR_FILE);
    assert_eq!(first["code"], "gate::E0201");
    assert_eq!(first["severity"], "error");
    assert_eq!(first["message"], "unknown claim `repositry` for `github`");
    assert_eq!(first["file"], ERR_FILE);
    assert_eq!(
        (
            &first["line"],
            &first["column"],
            &first["end_line"],
            &first["end_column"]
        ),
        (
            &Value::from(2),
            &Value::from(12),
            &Value::from(2),
            &Value::from(21)
        )
    );
    assert_eq!(first["help"], "did you mean `repository`?");
    assert_eq!(first["labels"][0]["message"], "not a `github` claim");
    let warning = &doc["diagnostics"][2];
    assert_eq!(warning["code"], "gate::W0101");
    assert_eq!(warning["severity"], "warning");
    assert_eq!(warning["labels"].as_array().unwrap().len(), 1);
    let with_note = &doc["diagnostics"][3];
    assert_eq!(with_note["labels"].as_array().unwrap().len(), 2);
    assert!(doc["unreadable"].as_array().unwrap().is_empty());
}

#[test]
fn json_lists_unreadable_paths() {
    let output = policyc(&["check", "--format", "json", "/nonexistent/policies"]);
    assert_eq!(output.status.code(), Some(2));
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doc["unreadable"][0]["path"], "/nonexistent/policies");
    assert_eq!(doc["summary"]["unreadable"], 1);
    assert_eq!(
        stderr(&output),
        "error: 0 policy sets, 0 errors, 0 warnings, 1 unreadable\n"
    );
}

/// The SARIF log of `policyc check --format sarif ARGS`, run in the crate directory.
fn sarif(args: &[&str]) -> (Output, Value) {
    let mut all = vec!["check", "--format", "sarif"];
    all.extend_from_slice(args);
    let output = policyc(&all);
    let doc = serde_json::from_slice(&output.stdout).unwrap();
    (output, doc)
}

/// The parts of the log that GitHub code scanning reads; `tests/sarif_schema.rs` validates the
/// whole log against the OASIS SARIF 2.1.0 schema.
#[test]
fn sarif_has_the_structure_code_scanning_reads() {
    let (output, doc) = sarif(&[
        ERR_FILE,
        LINT_FILE,
        "tests/corpus/lint/shadowed_permit.gate",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        doc["$schema"],
        "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
    );
    assert_eq!(doc["version"], "2.1.0");
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run["columnKind"], "utf16CodeUnits");
    let driver = &run["tool"]["driver"];
    assert_eq!(driver["name"], "policyc");
    assert_eq!(driver["version"], env!("CARGO_PKG_VERSION"));
    let rules = driver["rules"].as_array().unwrap();
    let rule_ids: Vec<&str> = rules
        .iter()
        .map(|rule| rule["id"].as_str().unwrap())
        .collect();
    assert_eq!(rule_ids, ["gate::E0201", "gate::W0101", "gate::W0301"]);
    for rule in rules {
        for field in ["name", "shortDescription", "fullDescription", "help"] {
            assert!(!rule[field].is_null(), "{field} missing in {rule}");
        }
        assert!(!rule["help"]["text"].as_str().unwrap().is_empty());
        assert!(
            rule["help"]["markdown"]
                .as_str()
                .unwrap()
                .contains("docs/diagnostics.md#")
        );
    }
    assert_eq!(rules[0]["name"], "UnknownClaim");
    assert_eq!(
        rules[0]["shortDescription"]["text"],
        "A claim the trust provider kind does not have."
    );
    assert_eq!(rules[0]["defaultConfiguration"]["level"], "error");
    assert_eq!(rules[1]["name"], "BroadPermitWithoutACondition");
    assert_eq!(rules[1]["defaultConfiguration"]["level"], "warning");

    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 6);
    for result in results {
        let index = result["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[index]["id"], result["ruleId"]);
        assert_eq!(
            result["level"],
            rules[index]["defaultConfiguration"]["level"]
        );
        assert!(!result["message"]["text"].as_str().unwrap().is_empty());
        let locations = result["locations"].as_array().unwrap();
        assert_eq!(locations.len(), 1);
        let physical = &locations[0]["physicalLocation"];
        assert_eq!(physical["artifactLocation"]["uriBaseId"], "%SRCROOT%");
        let uri = physical["artifactLocation"]["uri"].as_str().unwrap();
        assert!(uri.starts_with("tests/corpus/"), "{uri}");
        let region = &physical["region"];
        for field in ["startLine", "startColumn", "endLine", "endColumn"] {
            assert!(region[field].as_u64().unwrap() >= 1, "{field} in {region}");
        }
    }
    let first = &results[0];
    assert_eq!(first["ruleId"], "gate::E0201");
    assert_eq!(
        first["message"]["text"],
        "unknown claim `repositry` for `github`\nhelp: did you mean `repository`?"
    );
    assert_eq!(
        first["locations"][0]["physicalLocation"]["region"],
        serde_json::json!({"startLine": 2, "startColumn": 12, "endLine": 2, "endColumn": 21})
    );
    // A second label becomes a related location with its message.
    let shadowed = results
        .iter()
        .find(|result| result["ruleId"] == "gate::W0301")
        .unwrap();
    let related = &shadowed["relatedLocations"][0];
    assert_eq!(related["id"], 0);
    assert_eq!(
        related["message"]["text"],
        "denies every request `deployer_calls_api` covers"
    );
    assert_eq!(related["physicalLocation"]["region"]["startLine"], 19);
    assert_eq!(run["invocations"][0]["executionSuccessful"], true);
}

#[test]
fn sarif_of_a_clean_set_has_no_results() {
    let (output, doc) = sarif(&[EXAMPLES]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(stderr(&output), "ok: 1 policy set, 0 errors, 0 warnings\n");
    assert!(doc["runs"][0]["results"].as_array().unwrap().is_empty());
    assert!(
        doc["runs"][0]["tool"]["driver"]["rules"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn sarif_columns_count_utf16_code_units() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("é.gate"),
        "// 😀\ntarget t { http { host = \"h\" path_prefix = \"/😀\" } } target u { http { host = \
         \"a\" } }\n",
    )
    .unwrap();
    let output = policyc_in(dir.path(), &["check", "--format", "sarif", "é.gate"]);
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
    let location = &doc["runs"][0]["results"][1]["locations"][0]["physicalLocation"];
    assert_eq!(location["artifactLocation"]["uri"], "%C3%A9.gate");
    // `u` follows `😀`, two UTF-16 code units but one character.
    assert_eq!(location["region"]["startColumn"], 61);
    let output = policyc_in(dir.path(), &["check", "--format", "json", "é.gate"]);
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doc["diagnostics"][1]["column"], 60);
}

#[test]
fn sarif_reports_an_unreadable_path_as_a_failed_execution() {
    let (output, doc) = sarif(&["/nonexistent/policies"]);
    assert_eq!(output.status.code(), Some(2));
    let invocation = &doc["runs"][0]["invocations"][0];
    assert_eq!(invocation["executionSuccessful"], false);
    let notification = &invocation["toolExecutionNotifications"][0];
    assert_eq!(notification["level"], "error");
    assert!(
        notification["message"]["text"]
            .as_str()
            .unwrap()
            .starts_with("cannot read `/nonexistent/policies`")
    );
}

#[test]
fn max_ttl_sets_the_credential_lint_maximum() {
    let file = "tests/corpus/lint/credentials.gate";
    let count = |args: &[&str]| {
        let mut all = vec!["check", "--format", "json"];
        all.extend_from_slice(args);
        all.push(file);
        let doc: Value = serde_json::from_slice(&policyc(&all).stdout).unwrap();
        doc["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|diag| diag["code"] == "gate::W0402")
            .count()
    };
    assert_eq!(count(&[]), 1);
    assert_eq!(count(&["--max-ttl", "2h"]), 0);
    assert_eq!(count(&["--max-ttl", "10m"]), 2);
    let output = policyc(&["check", "--max-ttl", "5x", file]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("`5x` is not a duration"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [&["check", "--format", "xml", "."][..], &["frobnicate"], &[]] {
        let output = policyc(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn help_shows_exit_status_and_examples_for_every_subcommand() {
    let output = policyc(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = stdout(&output);
    assert!(help.contains("Exit status:"), "{help}");
    assert!(help.contains("policyc check --format sarif"), "{help}");
    for subcommand in ["check", "build", "fmt"] {
        let output = policyc(&[subcommand, "--help"]);
        assert_eq!(output.status.code(), Some(0));
        let help = stdout(&output);
        assert!(help.contains("Examples:"), "{subcommand}: {help}");
        assert!(
            help.contains(&format!("policyc {subcommand} ")),
            "{subcommand}: {help}"
        );
        assert!(help.contains("Exit status"), "{subcommand}: {help}");
    }
}

#[test]
fn version_prints_the_crate_version() {
    let output = policyc(&["--version"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        stdout(&output),
        format!("policyc {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn no_colour_in_a_pipe_even_without_no_color() {
    let output = Command::new(env!("CARGO_BIN_EXE_policyc"))
        .args(["check", LINT_FILE])
        .current_dir(lang_dir())
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert!(!stderr(&output).contains('\u{1b}'));
}
