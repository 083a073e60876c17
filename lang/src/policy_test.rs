//! Policy tests: the `test` declarations of a policy set, and running them.
//!
//! In: [`TestCase`]s, which the checker builds from `test` declarations
//! ([`crate::check::compile_with_tests`]), and the policy set they belong to. Out: a
//! [`TestRun`] with each test's [`Outcome`] and the rules no test exercises. Tests run with the
//! [`reference`] evaluator, the executable definition of Gate's semantics; they never reach
//! the bundle. `policyc test` prints the run, for a person here or as a document with
//! [`crate::test_report`].

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::IpAddr;

use crate::ast;
use crate::diagnostic::Diagnostic;
use crate::ir::PolicySet;
use crate::reference::{self, Decision, TargetQuery};
use crate::report::position;
use crate::schema::{ClaimValue, CustomClaims, ProviderKind};
use crate::source::SourceFile;

/// One checked `test` declaration.
#[derive(Debug, Clone, PartialEq)]
pub struct TestCase {
    pub name: String,
    /// Index of the file in the compiled file list.
    pub file: usize,
    /// The 1-based line of the `test` keyword.
    pub line: usize,
    /// The 1-based column of the `test` keyword, in characters.
    pub column: usize,
    pub request: TestRequest,
    pub expected: Expected,
}

/// The request of a test, every claim typed against its kind's schema.
#[derive(Debug, Clone, PartialEq)]
pub struct TestRequest {
    pub kind: ProviderKind,
    /// Indexed by claim id; every required claim is present.
    pub claims: Vec<Option<ClaimValue>>,
    pub target: TestTarget,
    pub action: Option<String>,
    pub resource: Option<String>,
    pub source_ip: Option<IpAddr>,
    /// `request.time`, Unix seconds; a test that leaves it out has none, and a rule that
    /// reads it then fails to evaluate.
    pub time: Option<i64>,
}

/// The target a test request asks for: a declared target by name (`target NAME`), or an
/// endpoint (`endpoint https { host = "…" port = 443 }`), which may match no target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestTarget {
    Named(String),
    Endpoint {
        protocol: String,
        host: String,
        port: u16,
    },
}

impl TestRequest {
    /// The request as the reference evaluator takes it.
    pub fn as_request(&self) -> reference::Request<'_> {
        reference::Request {
            kind: self.kind,
            claims: &self.claims,
            target: match &self.target {
                TestTarget::Named(name) => TargetQuery::Named(name),
                TestTarget::Endpoint {
                    protocol,
                    host,
                    port,
                } => TargetQuery::Endpoint {
                    protocol,
                    host,
                    port: *port,
                },
            },
            action: self.action.as_deref(),
            resource: self.resource.as_deref(),
            source_ip: self.source_ip,
            time: self.time,
        }
    }
}

/// `expect allow|deny|error [by RULE] [with CREDENTIAL]`: what is left out is not checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub verdict: Verdict,
    /// The deciding rule.
    pub rule: Option<String>,
    /// The credential the deciding permit issues; only with `allow`.
    pub credential: Option<IssuedCredential>,
}

/// How a request is decided, as a test names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Denied by a `forbid`, for want of a `permit`, or for another reason that is not an error.
    /// `expect deny` without `by` also passes on an evaluation error.
    Deny,
    /// Denied because the deciding rule could not be evaluated.
    Error,
}

impl Verdict {
    /// The word of an expectation: `allow`, `deny` or `error`.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Error => "error",
        }
    }

    fn of(decision: &Decision) -> Verdict {
        match decision.reason {
            _ if decision.allow => Verdict::Allow,
            reference::Reason::EvaluationError(_) => Verdict::Error,
            _ => Verdict::Deny,
        }
    }
}

/// The credential an allow issues: a declared one, or none (`with none`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuedCredential {
    Named(String),
    Nothing,
}

impl fmt::Display for IssuedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IssuedCredential::Named(name) => f.write_str(name),
            IssuedCredential::Nothing => f.write_str("none"),
        }
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.verdict.word())?;
        if let Some(rule) = &self.rule {
            write!(f, " by {rule}")?;
        }
        if let Some(credential) = &self.credential {
            write!(f, " with {credential}")?;
        }
        Ok(())
    }
}

/// What one test did.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<'t> {
    pub test: &'t TestCase,
    pub decision: Decision,
    pub passed: bool,
    /// The decision in the words of an expectation, with every part named: the deciding rule
    /// and the credential issued, where there are.
    pub actual: Expected,
    /// Why the decision came out as it did: `forbidden by rule `x``.
    pub reason: String,
}

impl Outcome<'_> {
    /// The decision and why, as a failure shows it: `deny by x: forbidden by rule `x``.
    pub fn got(&self) -> String {
        format!("{}: {}", self.actual, self.reason)
    }
}

/// Every test of a policy set, run.
#[derive(Debug, Clone, PartialEq)]
pub struct TestRun<'t> {
    pub outcomes: Vec<Outcome<'t>>,
    /// The rules, in declaration order, that decided no test.
    pub unexercised: Vec<String>,
}

impl TestRun<'_> {
    pub fn n_passed(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|outcome| outcome.passed)
            .count()
    }

    pub fn n_failed(&self) -> usize {
        self.outcomes.len() - self.n_passed()
    }
}

/// Where a declaration is: 1-based line and column (in characters) of its keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Index of the file in the compiled file list.
    pub file: usize,
    pub line: usize,
    pub column: usize,
}

/// A policy set compiled for testing: the set, its tests, and where each rule is declared, so
/// that a report can point at a rule no test exercises.
#[derive(Debug, Clone, PartialEq)]
pub struct TestSuite {
    pub set: PolicySet,
    pub tests: Vec<TestCase>,
    /// The `permit` or `forbid` keyword of each rule, by rule name.
    pub rule_locations: HashMap<String, Location>,
}

/// What [`crate::check::compile_with_tests`] does, keeping where each rule is declared.
pub fn compile(
    files: &[SourceFile],
    custom_claims: &CustomClaims,
) -> Result<TestSuite, Vec<Diagnostic>> {
    let (set, tests, trees) = crate::check::compile_keeping_trees(files, custom_claims)?;
    let rule_locations = trees
        .iter()
        .flat_map(|tree| &tree.decls)
        .filter_map(|decl| match decl {
            ast::Decl::Rule(rule) => Some((rule.name.name.clone(), rule.keyword)),
            _ => None,
        })
        .map(|(name, keyword)| {
            let text = files
                .get(keyword.file)
                .map_or("", |file| file.text.as_str());
            let start = position(text, keyword.start);
            let location = Location {
                file: keyword.file,
                line: start.line,
                column: start.column,
            };
            (name, location)
        })
        .collect();
    Ok(TestSuite {
        set,
        tests,
        rule_locations,
    })
}

/// Runs every test against `set`. A rule is exercised when it is the deciding rule of at
/// least one test, whether that test passes or not.
pub fn run<'t>(set: &PolicySet, tests: &'t [TestCase]) -> TestRun<'t> {
    let outcomes: Vec<Outcome<'t>> = tests.iter().map(|test| run_one(set, test)).collect();
    let unexercised = set
        .rules
        .iter()
        .enumerate()
        .filter(|(idx, _)| {
            !outcomes
                .iter()
                .any(|outcome| outcome.decision.rule == Some(*idx))
        })
        .map(|(_, rule)| rule.name.clone())
        .collect();
    TestRun {
        outcomes,
        unexercised,
    }
}

fn run_one<'t>(set: &PolicySet, test: &'t TestCase) -> Outcome<'t> {
    let decision = reference::decide(set, &test.request.as_request());
    let rule = decision
        .rule
        .and_then(|idx| set.rules.get(idx))
        .map(|rule| rule.name.clone());
    let credential = match decision.credential {
        _ if !decision.allow => None,
        Some(id) => set
            .credentials
            .get(id.0 as usize)
            .map(|credential| IssuedCredential::Named(credential.name.clone())),
        None => Some(IssuedCredential::Nothing),
    };
    let expected = &test.expected;
    let verdict = Verdict::of(&decision);
    // `expect deny` alone passes on any deny; `expect deny by RULE` wants RULE to have decided,
    // not to have failed.
    let verdict_holds = expected.verdict == verdict
        || (expected.verdict == Verdict::Deny
            && verdict == Verdict::Error
            && expected.rule.is_none());
    let passed = verdict_holds
        && expected
            .rule
            .as_ref()
            .is_none_or(|want| rule.as_ref() == Some(want))
        && expected
            .credential
            .as_ref()
            .is_none_or(|want| credential.as_ref() == Some(want));
    let actual = Expected {
        verdict,
        rule,
        credential,
    };
    let reason = decision.reason_text(set);
    Outcome {
        test,
        decision,
        passed,
        actual,
        reason,
    }
}

/// The run as a test runner prints it: one line per test, the differences of the failures,
/// a summary line, and the rules no test exercises. `files` are the compiled files, for the
/// location of each failing test.
pub fn render(run: &TestRun<'_>, files: &[SourceFile]) -> String {
    let mut out = String::new();
    let n_tests = run.outcomes.len();
    let noun = if n_tests == 1 { "test" } else { "tests" };
    let _ = writeln!(out, "running {n_tests} {noun}");
    for outcome in &run.outcomes {
        let verdict = if outcome.passed { "ok" } else { "FAILED" };
        let _ = writeln!(out, "test {} ... {verdict}", outcome.test.name);
    }
    let failures: Vec<&Outcome<'_>> = run.outcomes.iter().filter(|o| !o.passed).collect();
    if !failures.is_empty() {
        out.push_str("\nfailures:\n");
        for outcome in failures {
            let test = outcome.test;
            let file = files.get(test.file).map_or("?", |file| file.name.as_str());
            let _ = writeln!(out, "\n---- {} ({file}:{}) ----", test.name, test.line);
            let _ = writeln!(out, "expected: {}", test.expected);
            let _ = writeln!(out, "     got: {}", outcome.got());
        }
    }
    let verdict = if run.n_failed() == 0 { "ok" } else { "FAILED" };
    let _ = writeln!(
        out,
        "\ntest result: {verdict}. {} passed; {} failed",
        run.n_passed(),
        run.n_failed()
    );
    if run.unexercised.is_empty() {
        out.push_str("every rule decides at least one test\n");
    } else {
        let names: Vec<String> = run
            .unexercised
            .iter()
            .map(|name| format!("`{name}`"))
            .collect();
        let _ = writeln!(out, "rules no test exercises: {}", names.join(", "));
    }
    out
}
