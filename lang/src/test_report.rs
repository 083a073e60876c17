//! Machine-readable reports of `policyc test`: a JSON document of its own, and JUnit XML for the
//! test views of CI systems (GitLab's test report, Jenkins' JUnit plugin, the GitHub actions
//! that turn a JUnit file into check annotations).
//!
//! In: each policy set's test run, or the diagnostics that kept it from compiling, and the paths
//! that could not be read. Out: the text of one document. Pure, like [`crate::report`], whose
//! positions (1-based lines; 1-based columns that count characters) and diagnostic objects the
//! JSON document shares. Both layouts are described in docs/gate.md, "Tests".
//!
//! JUnit has one `<testsuite>` per policy set, not per file: the policy set is what a PATH
//! names and what compiles or fails as a whole, and a test in one file exercises rules of the
//! others, so CI lists the suites by the PATHs the job gave. Each `<testcase>` still carries
//! its `file` and `line` (for annotations) and a `classname` made from its file, which Jenkins
//! splits at the last dot into package and class. A policy set that cannot be read, does not
//! compile or declares no test becomes a suite with one `(policy set)` case holding an
//! `<error>`, so that CI shows why the job failed instead of an empty, green report. The rules
//! no test exercises go to the suite's `<system-out>`, which CI shows beside the cases; the
//! JSON document has them by name and location.

use std::path::{Component, Path};

use serde_json::{Value, json};

use crate::diagnostic::{self, Diagnostic, Severity, render};
use crate::policy_test::{Expected, IssuedCredential, Location, Outcome, TestRun, TestSuite};
use crate::report::{Unreadable, json_diagnostic, pretty};
use crate::source::SourceFile;

/// The version of the JSON document's layout; it changes only when a field changes meaning or
/// goes away.
pub const JSON_FORMAT_VERSION: u32 = 1;

/// The name of the JUnit case that stands for a whole policy set when none of its tests ran.
pub const POLICY_SET_CASE: &str = "(policy set)";

/// One policy set that was read.
#[derive(Debug, Clone, Copy)]
pub struct TestedSet<'a> {
    /// The path given on the command line.
    pub path: &'a str,
    /// The compiled files, which test and rule locations index.
    pub files: &'a [SourceFile],
    pub result: SetResult<'a>,
}

/// What became of a policy set that was read.
#[derive(Debug, Clone, Copy)]
pub enum SetResult<'a> {
    /// The set compiled and its tests ran.
    Ran {
        suite: &'a TestSuite,
        run: &'a TestRun<'a>,
    },
    /// The set has errors, so no test ran.
    Invalid(&'a [Diagnostic]),
}

impl SetResult<'_> {
    fn run(&self) -> Option<&TestRun<'_>> {
        match self {
            SetResult::Ran { run, .. } => Some(run),
            SetResult::Invalid(_) => None,
        }
    }

    /// `passed`, `failed`, `no_tests` or `invalid`.
    fn outcome(&self) -> &'static str {
        match self {
            SetResult::Invalid(_) => "invalid",
            SetResult::Ran { run, .. } if run.outcomes.is_empty() => "no_tests",
            SetResult::Ran { run, .. } if run.n_failed() > 0 => "failed",
            SetResult::Ran { .. } => "passed",
        }
    }
}

/// Everything one run of `policyc test` did.
#[derive(Debug, Clone)]
pub struct TestReport<'a> {
    /// The version of `policyc`.
    pub tool_version: &'a str,
    pub sets: Vec<TestedSet<'a>>,
    pub unreadable: Vec<Unreadable<'a>>,
}

impl TestReport<'_> {
    fn runs(&self) -> impl Iterator<Item = &TestRun<'_>> {
        self.sets.iter().filter_map(|set| set.result.run())
    }

    /// How many tests ran, over every policy set.
    pub fn n_tests(&self) -> usize {
        self.runs().map(|run| run.outcomes.len()).sum()
    }

    pub fn n_passed(&self) -> usize {
        self.runs().map(TestRun::n_passed).sum()
    }

    pub fn n_failed(&self) -> usize {
        self.runs().map(TestRun::n_failed).sum()
    }

    /// How many errors kept policy sets from compiling.
    pub fn n_errors(&self) -> usize {
        let diagnostics = self.sets.iter().flat_map(|set| match set.result {
            SetResult::Invalid(diagnostics) => diagnostics,
            SetResult::Ran { .. } => &[],
        });
        diagnostic::count(diagnostics, Severity::Error)
    }
}

/// Why a policy set that compiled without a `test` fails: a CI job that runs no test must not
/// look like one whose tests passed.
pub fn no_tests_message(path: &str) -> String {
    format!(
        "`{}` declares no `test`; nothing was tested",
        crate::diagnostic::printable(path)
    )
}

/// The JSON document: every test with its location, outcome, expectation and decision; the
/// rules no test exercises; the errors of the policy sets that do not compile; the counts.
pub fn to_json(report: &TestReport<'_>) -> String {
    let sets: Vec<Value> = report.sets.iter().map(json_set).collect();
    let unreadable: Vec<Value> = report
        .unreadable
        .iter()
        .map(|entry| json!({ "path": entry.path, "message": entry.message }))
        .collect();
    let n_unexercised: usize = report.runs().map(|run| run.unexercised.len()).sum();
    let document = json!({
        "version": JSON_FORMAT_VERSION,
        "tool": { "name": "policyc", "version": report.tool_version },
        "policy_sets": sets,
        "unreadable": unreadable,
        "summary": {
            "policy_sets": report.sets.len(),
            "tests": report.n_tests(),
            "passed": report.n_passed(),
            "failed": report.n_failed(),
            "unexercised_rules": n_unexercised,
            "errors": report.n_errors(),
            "unreadable": report.unreadable.len(),
        },
    });
    pretty(&document)
}

fn json_set(set: &TestedSet<'_>) -> Value {
    let (tests, unexercised, diagnostics): (Vec<Value>, Vec<Value>, Vec<Value>) = match set.result {
        SetResult::Ran { suite, run } => (
            run.outcomes
                .iter()
                .map(|outcome| json_test(outcome, set.files))
                .collect(),
            run.unexercised
                .iter()
                .map(|name| json_rule(name, suite.rule_locations.get(name), set.files))
                .collect(),
            Vec::new(),
        ),
        SetResult::Invalid(diagnostics) => (
            Vec::new(),
            Vec::new(),
            diagnostics
                .iter()
                .map(|diag| json_diagnostic(set.path, diag))
                .collect(),
        ),
    };
    let run = set.result.run();
    json!({
        "path": set.path,
        "files": set.files.len(),
        "outcome": set.result.outcome(),
        "tests": tests,
        "unexercised_rules": unexercised,
        "diagnostics": diagnostics,
        "summary": {
            "tests": tests.len(),
            "passed": run.map_or(0, TestRun::n_passed),
            "failed": run.map_or(0, TestRun::n_failed),
            "unexercised_rules": unexercised.len(),
        },
    })
}

fn json_test(outcome: &Outcome<'_>, files: &[SourceFile]) -> Value {
    let test = outcome.test;
    let mut actual = json_expectation(&outcome.actual);
    if let Value::Object(fields) = &mut actual {
        fields.insert("reason".to_owned(), json!(outcome.reason));
        fields.insert(
            "reason_code".to_owned(),
            json!(outcome.decision.reason.code()),
        );
    }
    json!({
        "name": test.name,
        "file": file_name(files, test.file),
        "line": test.line,
        "column": test.column,
        "outcome": if outcome.passed { "passed" } else { "failed" },
        "expected": json_expectation(&test.expected),
        "actual": actual,
    })
}

/// `{decision, rule, credential}`; what an expectation leaves out is null, and an allow that
/// issues no credential (`with none`) has `false` for its credential.
fn json_expectation(expected: &Expected) -> Value {
    let credential = match &expected.credential {
        None => Value::Null,
        Some(IssuedCredential::Named(name)) => Value::from(name.as_str()),
        Some(IssuedCredential::Nothing) => Value::Bool(false),
    };
    json!({
        "decision": expected.verdict.word(),
        "rule": expected.rule,
        "credential": credential,
    })
}

fn json_rule(name: &str, location: Option<&Location>, files: &[SourceFile]) -> Value {
    json!({
        "name": name,
        "file": location.map(|location| file_name(files, location.file)),
        "line": location.map(|location| location.line),
        "column": location.map(|location| location.column),
    })
}

fn file_name(files: &[SourceFile], idx: usize) -> &str {
    files.get(idx).map_or("?", |file| file.name.as_str())
}

/// The JUnit XML document: `<testsuites>` with one `<testsuite>` per policy set (see the module
/// documentation for why), a `<testcase>` per test, a `<failure>` whose text is the difference
/// `policyc test` prints for a person.
pub fn to_junit(report: &TestReport<'_>) -> String {
    let mut totals = Counts::default();
    for set in &report.sets {
        totals.add(junit_counts(set));
    }
    for _ in &report.unreadable {
        totals.add(Counts::ERROR);
    }
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let mut attributes = vec![("name", "policyc test".to_owned())];
    attributes.extend(totals.attributes());
    start_tag(&mut out, 0, "testsuites", &attributes);
    for set in &report.sets {
        junit_set(&mut out, set);
    }
    for entry in &report.unreadable {
        junit_error_suite(&mut out, entry.path, &entry.message, None);
    }
    end_tag(&mut out, 0, "testsuites");
    out
}

/// The counts a `<testsuite>` or `<testsuites>` element gives.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    tests: usize,
    failures: usize,
    errors: usize,
}

impl Counts {
    /// A suite of the one case that stands for a policy set none of whose tests ran.
    const ERROR: Counts = Counts {
        tests: 1,
        failures: 0,
        errors: 1,
    };

    fn add(&mut self, other: Counts) {
        self.tests += other.tests;
        self.failures += other.failures;
        self.errors += other.errors;
    }

    fn attributes(self) -> [(&'static str, String); 3] {
        [
            ("tests", self.tests.to_string()),
            ("failures", self.failures.to_string()),
            ("errors", self.errors.to_string()),
        ]
    }
}

fn junit_counts(set: &TestedSet<'_>) -> Counts {
    match set.result.run() {
        Some(run) if !run.outcomes.is_empty() => Counts {
            tests: run.outcomes.len(),
            failures: run.n_failed(),
            errors: 0,
        },
        _ => Counts::ERROR,
    }
}

fn junit_set(out: &mut String, set: &TestedSet<'_>) {
    let (suite, run) = match set.result {
        SetResult::Invalid(diagnostics) => {
            let n = diagnostic::count(diagnostics, Severity::Error);
            let message = format!(
                "policy set has {n} {}",
                if n == 1 { "error" } else { "errors" }
            );
            let rendered = render(diagnostics, false);
            return junit_error_suite(out, set.path, &message, Some(&rendered));
        }
        SetResult::Ran { run, .. } if run.outcomes.is_empty() => {
            return junit_error_suite(out, set.path, &no_tests_message(set.path), None);
        }
        SetResult::Ran { suite, run } => (suite, run),
    };
    let mut attributes = vec![("name", set.path.to_owned())];
    attributes.extend(junit_counts(set).attributes());
    start_tag(out, 1, "testsuite", &attributes);
    for outcome in &run.outcomes {
        junit_case(out, outcome, set.files);
    }
    let mut unexercised = String::new();
    if run.unexercised.is_empty() {
        unexercised.push_str("every rule decides at least one test\n");
    } else {
        unexercised.push_str("rules no test exercises:\n");
        for name in &run.unexercised {
            let location = suite.rule_locations.get(name).map_or(String::new(), |at| {
                format!(" ({}:{})", file_name(set.files, at.file), at.line)
            });
            unexercised.push_str(&format!("  {name}{location}\n"));
        }
    }
    text_element(out, 2, "system-out", &[], &unexercised);
    end_tag(out, 1, "testsuite");
}

fn junit_case(out: &mut String, outcome: &Outcome<'_>, files: &[SourceFile]) {
    let test = outcome.test;
    let file = file_name(files, test.file);
    let attributes = [
        ("name", test.name.clone()),
        ("classname", class_name(file)),
        ("file", file.to_owned()),
        ("line", test.line.to_string()),
    ];
    if outcome.passed {
        empty_tag(out, 2, "testcase", &attributes);
        return;
    }
    start_tag(out, 2, "testcase", &attributes);
    let (expected, got) = (&test.expected, outcome.got());
    let message = format!("expected {expected}, got {got}");
    let difference = format!("expected: {expected}\n     got: {got}\n");
    text_element(out, 3, "failure", &[("message", message)], &difference);
    end_tag(out, 2, "testcase");
}

/// A suite of one case, [`POLICY_SET_CASE`], with an `<error>`: for a policy set whose tests
/// could not run.
fn junit_error_suite(out: &mut String, path: &str, message: &str, text: Option<&str>) {
    let mut attributes = vec![("name", path.to_owned())];
    attributes.extend(Counts::ERROR.attributes());
    start_tag(out, 1, "testsuite", &attributes);
    let case = [
        ("name", POLICY_SET_CASE.to_owned()),
        ("classname", class_name(path)),
    ];
    start_tag(out, 2, "testcase", &case);
    let error = [("message", message.to_owned())];
    match text {
        Some(text) => text_element(out, 3, "error", &error, text),
        None => empty_tag(out, 3, "error", &error),
    }
    end_tag(out, 2, "testcase");
    end_tag(out, 1, "testsuite");
}

/// A JUnit class name for a file or directory: its path without `.gate`, the components joined
/// with dots, `policies/tests.gate` → `policies.tests`, so that Jenkins shows the directory as
/// the package and the file as the class. `.` and `..` components are left out.
fn class_name(path: &str) -> String {
    let stem = path.strip_suffix(".gate").unwrap_or(path);
    let names: Vec<String> = Path::new(stem)
        .components()
        .filter_map(|component| match component {
            Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        stem.to_owned()
    } else {
        names.join(".")
    }
}

fn start_tag(out: &mut String, depth: usize, name: &str, attributes: &[(&str, String)]) {
    open_tag(out, depth, name, attributes);
    out.push_str(">\n");
}

fn empty_tag(out: &mut String, depth: usize, name: &str, attributes: &[(&str, String)]) {
    open_tag(out, depth, name, attributes);
    out.push_str("/>\n");
}

fn end_tag(out: &mut String, depth: usize, name: &str) {
    out.push_str(&"  ".repeat(depth));
    out.push_str(&format!("</{name}>\n"));
}

/// `<name attributes>text</name>`, the text escaped but otherwise as it is.
fn text_element(
    out: &mut String,
    depth: usize,
    name: &str,
    attributes: &[(&str, String)],
    text: &str,
) {
    open_tag(out, depth, name, attributes);
    out.push('>');
    out.push_str(&escape_xml(text, XmlContext::Text));
    out.push_str(&format!("</{name}>\n"));
}

/// `<name a="v" …`, without the closing `>`.
fn open_tag(out: &mut String, depth: usize, name: &str, attributes: &[(&str, String)]) {
    out.push_str(&"  ".repeat(depth));
    out.push('<');
    out.push_str(name);
    for (key, value) in attributes {
        let value = escape_xml(value, XmlContext::Attribute);
        out.push_str(&format!(" {key}=\"{value}\""));
    }
}

/// Where escaped text goes. A parser normalises a line break or tab written as it is in an
/// attribute value to a space, so there they are written as character references.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum XmlContext {
    Text,
    Attribute,
}

/// `text` as XML 1.0 character data: the five markup characters as entities, `\r` as a
/// reference (a parser would turn it into `\n`), and the characters XML 1.0 cannot carry at
/// all, not even as references (the other C0 controls, U+FFFE, U+FFFF), replaced by U+FFFD.
fn escape_xml(text: &str, context: XmlContext) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            '\n' if context == XmlContext::Attribute => out.push_str("&#10;"),
            '\t' if context == XmlContext::Attribute => out.push_str("&#9;"),
            '\n' | '\t' => out.push(ch),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => out.push('\u{fffd}'),
            _ => out.push(ch),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_characters_become_entities() {
        let text = r#"expected allow, got deny: `sub` == "a<b" && 'c' > d"#;
        assert_eq!(
            escape_xml(text, XmlContext::Text),
            "expected allow, got deny: `sub` == &quot;a&lt;b&quot; &amp;&amp; &apos;c&apos; \
             &gt; d"
        );
        assert_eq!(escape_xml("&amp;", XmlContext::Attribute), "&amp;amp;");
        assert_eq!(
            escape_xml("plain ünïcode 😀", XmlContext::Text),
            "plain ünïcode 😀"
        );
    }

    #[test]
    fn line_breaks_survive_in_attributes_and_text() {
        assert_eq!(
            escape_xml("a\nb\tc\r\n", XmlContext::Attribute),
            "a&#10;b&#9;c&#13;&#10;"
        );
        assert_eq!(
            escape_xml("a\nb\tc\r\n", XmlContext::Text),
            "a\nb\tc&#13;\n"
        );
    }

    #[test]
    fn characters_xml_cannot_carry_are_replaced() {
        assert_eq!(
            escape_xml("a\u{0}b\u{1b}[31mc\u{ffff}", XmlContext::Text),
            "a\u{fffd}b\u{fffd}[31mc\u{fffd}"
        );
    }

    #[test]
    fn class_names_are_dotted_paths_without_the_extension() {
        assert_eq!(class_name("policies/tests.gate"), "policies.tests");
        assert_eq!(class_name("../examples/policies"), "examples.policies");
        assert_eq!(class_name("./a.b/c.gate"), "a.b.c");
        assert_eq!(class_name("."), ".");
    }
}
