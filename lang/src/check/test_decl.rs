//! Checking `test` declarations (docs/gate.md, "Tests").
//!
//! In: the parsed `test` declarations, after the rest of the policy set is checked, so that
//! every name resolves. Out: [`TestCase`]s, which `policyc test` runs with the reference
//! evaluator; they never reach the bundle. A test's claims are typed against its kind's claim
//! schema, and a request that omits a claim every genuine token carries is an error rather
//! than a request filled with invented values.

use std::collections::HashMap;

use super::{Checker, Declared, Ty, did_you_mean, host_problem, literal_type_name};
use crate::ast::{self, ExprKind, Ident, Span};
use crate::diagnostic::{Code, Report};
use crate::policy_test::{Expected, IssuedCredential, TestCase, TestRequest, TestTarget, Verdict};
use crate::report::{Position, position};
use crate::schema::{ClaimId, ClaimValue, ProviderKind};

/// The fields a test request may give besides the caller and the target.
const REQUEST_FIELDS: [&str; 4] = ["action", "resource", "source_ip", "time"];

/// A request's parts as they are checked; `None` where an error was reported.
#[derive(Default)]
struct Parts {
    caller: Option<(ProviderKind, Vec<Option<ClaimValue>>)>,
    target: Option<TestTarget>,
    action: Option<String>,
    resource: Option<String>,
    source_ip: Option<std::net::IpAddr>,
    time: Option<i64>,
    ok: bool,
}

impl Checker<'_> {
    /// Checks every `test` declaration of the policy set, in declaration order.
    pub(super) fn check_tests(&mut self, trees: &[ast::File]) -> Vec<TestCase> {
        let tests = trees
            .iter()
            .flat_map(|tree| &tree.decls)
            .filter_map(|decl| match decl {
                ast::Decl::Test(test) => Some(test),
                _ => None,
            });
        tests.filter_map(|test| self.check_test(test)).collect()
    }

    fn check_test(&mut self, test: &ast::TestDecl) -> Option<TestCase> {
        let name = &test.name.name;
        let request = match &test.request {
            Some(request) => self.check_test_request(name, request),
            None => {
                let message = format!("test `{name}` has no request");
                let report = Report::new(
                    Code::InvalidTestRequest,
                    message,
                    test.name.span,
                    "no request",
                )
                .help("begin the test with `request { KIND { … } target NAME … }`");
                self.report(report);
                None
            }
        };
        let expected = match &test.expect {
            Some(expect) => self.check_expectation(expect),
            None => {
                let message = format!("test `{name}` expects nothing");
                let label = "no `expect` before the closing `}`";
                let report = Report::new(Code::InvalidExpectation, message, test.name.span, label)
                    .help("end the test with `expect allow` or `expect deny`");
                self.report(report);
                None
            }
        };
        let start = self.position_of(test.span);
        Some(TestCase {
            name: name.clone(),
            file: test.span.file,
            line: start.line,
            column: start.column,
            request: request?,
            expected: expected?,
        })
    }

    /// Where `span` starts: its 1-based line and column.
    fn position_of(&self, span: Span) -> Position {
        let text = self
            .files
            .get(span.file)
            .map_or("", |file| file.text.as_str());
        position(text, span.start)
    }

    fn check_test_request(
        &mut self,
        test: &str,
        request: &ast::TestRequest,
    ) -> Option<TestRequest> {
        if request.keyword.name != "request" {
            let message = format!("expected `request`, found `{}`", request.keyword.name);
            let report = Report::new(
                Code::InvalidTestRequest,
                message,
                request.keyword.span,
                "a test begins with its request",
            )
            .help("write `request { KIND { … } target NAME … }`");
            self.report(report);
            return None;
        }
        let mut parts = Parts {
            ok: true,
            ..Parts::default()
        };
        let mut seen: HashMap<String, Span> = HashMap::new();
        for item in &request.items {
            let (key, span) = match item {
                ast::TestRequestItem::Claims(block) => ("the caller".to_owned(), block.span),
                ast::TestRequestItem::Target { span, .. }
                | ast::TestRequestItem::Endpoint { span, .. } => ("`target`".to_owned(), *span),
                ast::TestRequestItem::Field(field) => {
                    (format!("`{}`", field.key.name), field.key.span)
                }
            };
            if let Some(first) = seen.insert(key.clone(), span) {
                self.repeated_request_item(&key, span, first);
                parts.ok = false;
                continue;
            }
            self.check_request_item(item, &mut parts);
        }
        let (Some((kind, claims)), Some(target)) = (parts.caller.take(), parts.target.take())
        else {
            self.incomplete_request(test, request, &parts, &seen);
            return None;
        };
        parts.ok.then_some(TestRequest {
            kind,
            claims,
            target,
            action: parts.action,
            resource: parts.resource,
            source_ip: parts.source_ip,
            time: parts.time,
        })
    }

    fn repeated_request_item(&mut self, key: &str, span: Span, first: Span) {
        let message = format!("{key} is given twice in one test request");
        let report = Report::new(Code::InvalidTestRequest, message, span, "given again")
            .label(first, "first given here")
            .help("a request has one caller, one target and one value of each field");
        self.report(report);
    }

    /// Reports a request without a caller or without a target, unless that part was given
    /// and failed with its own error.
    fn incomplete_request(
        &mut self,
        test: &str,
        request: &ast::TestRequest,
        parts: &Parts,
        seen: &HashMap<String, Span>,
    ) {
        let missing_caller = parts.caller.is_none() && !seen.contains_key("the caller");
        let missing_target = parts.target.is_none() && !seen.contains_key("`target`");
        let (what, help) = match (missing_caller, missing_target) {
            (true, true) => (
                "no caller and no target",
                "add the caller's kind and claims, `github { repository = \"acme/billing\" … }`, \
                 and `target NAME`",
            ),
            (true, false) => (
                "no caller",
                "add the caller's kind and claims: `github { repository = \"acme/billing\" … }`",
            ),
            (false, true) => ("no target", "add `target NAME`"),
            (false, false) => return,
        };
        let message = format!("the request of test `{test}` has {what}");
        let report = Report::new(
            Code::InvalidTestRequest,
            message,
            request.keyword.span,
            what,
        )
        .help(help);
        self.report(report);
    }

    fn check_request_item(&mut self, item: &ast::TestRequestItem, parts: &mut Parts) {
        match item {
            ast::TestRequestItem::Claims(block) => {
                parts.caller = self.check_test_claims(block);
                parts.ok &= parts.caller.is_some();
            }
            ast::TestRequestItem::Target { name, .. } => {
                parts.target = match self.lookup(name, "target") {
                    Some(Declared::Target(_)) => Some(TestTarget::Named(name.name.clone())),
                    _ => None,
                };
                parts.ok &= parts.target.is_some();
            }
            ast::TestRequestItem::Endpoint { word, endpoint, .. } => {
                parts.target = self.test_endpoint(word, endpoint);
                parts.ok &= parts.target.is_some();
            }
            ast::TestRequestItem::Field(field) => {
                parts.ok &= self.check_request_field(field, parts).is_some();
            }
        }
    }

    /// `endpoint PROTOCOL { host = "…" port = … }`, the port defaulting to the protocol's.
    fn test_endpoint(&mut self, word: &Ident, endpoint: &ast::Endpoint) -> Option<TestTarget> {
        if word.name != "endpoint" {
            let message = format!(
                "unknown request item `{} {}`",
                word.name, endpoint.protocol.name
            );
            let report = Report::new(Code::InvalidTestRequest, message, word.span, "not an item")
                .help(
                    "name the target with `target NAME`, or its endpoint with \
                     `endpoint https { host = \"…\" port = 443 }`",
                );
            self.report(report);
            return None;
        }
        let protocol = self.protocol(&endpoint.protocol)?;
        let default_port = protocol.default_port();
        let mut host = None;
        let mut port = default_port;
        let mut ok = true;
        for field in &endpoint.fields {
            match (field.key.name.as_str(), &field.value.kind) {
                ("host", ExprKind::Str(text)) if !text.is_empty() => {
                    if let Some((label, help)) = host_problem(text) {
                        let message = format!("`{text}` is not a host name or address");
                        let report =
                            Report::new(Code::InvalidTestRequest, message, field.value.span, label)
                                .help(help);
                        self.report(report);
                        ok = false;
                    }
                    host = Some(text.clone());
                }
                ("port", ExprKind::Int(number)) if u16::try_from(*number).is_ok_and(|p| p > 0) => {
                    port = u16::try_from(*number).unwrap_or(default_port);
                }
                (key @ ("host" | "port"), _) => {
                    let wanted = if key == "host" {
                        "a host name in quotes"
                    } else {
                        "a port from 1 to 65535"
                    };
                    let message = format!("`{key}` of an endpoint must be {wanted}");
                    let help = match &field.value.kind {
                        ExprKind::Str(text) if key == "port" && text.parse::<u16>().is_ok() => {
                            Some(format!("write the number without quotes: `port = {text}`"))
                        }
                        _ => None,
                    };
                    let report = Report::new(
                        Code::InvalidTestRequest,
                        message,
                        field.value.span,
                        "not valid here",
                    )
                    .help_opt(help);
                    self.report(report);
                    ok = false;
                }
                (key, _) => {
                    let message = format!("unknown endpoint field `{key}`");
                    let report = Report::new(
                        Code::InvalidTestRequest,
                        message,
                        field.key.span,
                        "not a field",
                    )
                    .help(did_you_mean(key, ["host", "port"]).unwrap_or_else(|| {
                        "an endpoint has a `host` and, unless the protocol's default, a `port`"
                            .to_owned()
                    }));
                    self.report(report);
                    ok = false;
                }
            }
        }
        let Some(host) = host else {
            if ok {
                let message = "an endpoint needs a `host`";
                let report =
                    Report::new(Code::InvalidTestRequest, message, endpoint.span, "no host")
                        .help("add `host = \"api.internal\"`");
                self.report(report);
            }
            return None;
        };
        ok.then(|| TestTarget::Endpoint {
            protocol: protocol.keyword().to_owned(),
            host,
            port,
        })
    }

    fn check_request_field(&mut self, field: &ast::Field, parts: &mut Parts) -> Option<()> {
        let key = field.key.name.as_str();
        if !REQUEST_FIELDS.contains(&key) {
            let message = format!("unknown request field `{key}`");
            let help = did_you_mean(key, REQUEST_FIELDS).unwrap_or_else(|| {
                "a test request gives a caller kind block, `target NAME`, and the fields \
                 `action`, `resource`, `source_ip` and `time`"
                    .to_owned()
            });
            let report = Report::new(
                Code::InvalidTestRequest,
                message,
                field.key.span,
                "not a field",
            )
            .help(help);
            self.report(report);
            return None;
        }
        if key == "time" {
            parts.time = Some(self.test_time(&field.value)?);
            return Some(());
        }
        let ExprKind::Str(text) = &field.value.kind else {
            let found = literal_type_name(&field.value.kind);
            let message = format!("`request.{key}` is a string, found {found}");
            let report = Report::new(
                Code::TypeMismatch,
                message,
                field.value.span,
                format!("this is {found}"),
            )
            .help(format!("write it in quotes: `{key} = \"…\"`"));
            self.report(report);
            return None;
        };
        match key {
            "action" => parts.action = Some(text.clone()),
            "resource" => parts.resource = Some(text.clone()),
            _ => parts.source_ip = Some(self.test_address(text, field.value.span)?),
        }
        Some(())
    }

    /// `time = 2026-12-04T10:00:00Z`, in Unix seconds.
    fn test_time(&mut self, value: &ast::Expr) -> Option<i64> {
        let ExprKind::Timestamp(text) = &value.kind else {
            let found = literal_type_name(&value.kind);
            let message = format!("`request.time` is a timestamp, found {found}");
            let report = Report::new(
                Code::TypeMismatch,
                message,
                value.span,
                format!("this is {found}"),
            )
            .help(match &value.kind {
                ExprKind::Str(text) if crate::time::parse_timestamp(text).is_ok() => {
                    format!("write the timestamp without quotes: `time = {text}`")
                }
                _ => "write a timestamp without quotes: `time = 2026-12-04T10:00:00Z`".to_owned(),
            });
            self.report(report);
            return None;
        };
        match self.check_timestamp(text, value.span)? {
            (crate::ir::Expr::Const(crate::ir::Value::Int(seconds)), _) => Some(seconds),
            _ => None,
        }
    }

    fn test_address(&mut self, text: &str, span: Span) -> Option<std::net::IpAddr> {
        if let Ok(addr) = text.parse() {
            return Some(addr);
        }
        let message = format!("`{text}` is not an IP address");
        let report = Report::new(Code::InvalidAddress, message, span, "not an IP address")
            .help("a request comes from one address, such as `\"10.1.2.3\"` or `\"2001:db8::1\"`");
        self.report(report);
        None
    }

    /// The caller of a test: its kind and a claim vector indexed by claim id, every required
    /// claim present.
    fn check_test_claims(
        &mut self,
        block: &ast::Endpoint,
    ) -> Option<(ProviderKind, Vec<Option<ClaimValue>>)> {
        let kind = self.provider_kind(&block.protocol)?;
        let names: Vec<String> = self
            .custom_claims
            .names(kind)
            .into_iter()
            .map(str::to_owned)
            .collect();
        let mut claims: Vec<Option<ClaimValue>> = vec![None; names.len()];
        let mut given: HashMap<ClaimId, Span> = HashMap::new();
        let mut ok = true;
        for field in &block.fields {
            let Some((id, value)) = self.test_claim(kind, field) else {
                ok = false;
                continue;
            };
            if let Some(first) = given.insert(id, field.key.span) {
                let key = format!("claim `{}`", field.key.name);
                self.repeated_request_item(&key, field.key.span, first);
                ok = false;
                continue;
            }
            if let Some(slot) = claims.get_mut(usize::from(id.0)) {
                *slot = Some(value);
            }
        }
        let missing: Vec<String> = names
            .iter()
            .filter_map(|name| {
                let (id, _, required) = self.custom_claims.resolve(kind, name)?;
                let absent = claims.get(usize::from(id.0)).is_some_and(Option::is_none);
                (required && absent).then(|| format!("`{name}`"))
            })
            .collect();
        if !missing.is_empty() && ok {
            let noun = if missing.len() == 1 {
                "claim"
            } else {
                "claims"
            };
            let message = format!("the caller lacks required {noun} {}", missing.join(", "));
            let label = format!("every `{kind}` token carries them");
            let report = Report::new(Code::MissingTestClaims, message, block.protocol.span, label)
                .help("give each a value, as a genuine token would");
            self.report(report);
            ok = false;
        }
        ok.then_some((kind, claims))
    }

    /// One `CLAIM = LITERAL` of a test's caller, typed against the claim schema.
    fn test_claim(
        &mut self,
        kind: ProviderKind,
        field: &ast::Field,
    ) -> Option<(ClaimId, ClaimValue)> {
        let resolved = self.resolve_claim(kind, &field.key)?;
        let crate::ir::Expr::Claim { claim, .. } = resolved.expr else {
            return None;
        };
        let value = match (resolved.ty, &field.value.kind) {
            (Ty::String, ExprKind::Str(text)) => ClaimValue::String(text.clone()),
            (Ty::Int, ExprKind::Int(number)) => ClaimValue::Int(*number),
            (Ty::Bool, ExprKind::Bool(flag)) => ClaimValue::Bool(*flag),
            (Ty::StringSet, ExprKind::Str(text)) => ClaimValue::StringSet(vec![text.clone()]),
            (Ty::StringSet, ExprKind::Set(items)) => ClaimValue::StringSet(self.strings(items)?),
            (ty, found) => {
                self.claim_type_mismatch(kind, field, ty, literal_type_name(found));
                return None;
            }
        };
        Some((claim, value))
    }

    fn strings(&mut self, items: &[ast::Expr]) -> Option<Vec<String>> {
        if self.names_in_set(items, Some(Ty::String)) {
            return None;
        }
        let mut strings = Vec::with_capacity(items.len());
        for item in items {
            let ExprKind::Str(text) = &item.kind else {
                let found = literal_type_name(&item.kind);
                let message = format!("a set of strings holds strings, found {found}");
                let report = Report::new(
                    Code::InvalidSet,
                    message,
                    item.span,
                    format!("this is {found}"),
                )
                .help("write every element in quotes");
                self.report(report);
                return None;
            };
            strings.push(text.clone());
        }
        Some(strings)
    }

    fn claim_type_mismatch(&mut self, kind: ProviderKind, field: &ast::Field, ty: Ty, found: &str) {
        let claim = &field.key.name;
        let message = format!(
            "claim `{claim}` of `{kind}` is {}, found {found}",
            ty.name()
        );
        let label = format!("this is {found}");
        let help = match ty {
            Ty::String => format!("`{kind}` tokens carry it as a string: `{claim} = \"…\"`"),
            Ty::StringSet => format!("write a set of strings: `{claim} = [\"…\"]`"),
            Ty::Int => format!("write a number without quotes: `{claim} = 42`"),
            _ => format!("write `{claim} = true` or `{claim} = false`"),
        };
        let report = Report::new(Code::TypeMismatch, message, field.value.span, label).help(help);
        self.report(report);
    }

    fn check_expectation(&mut self, expect: &ast::TestExpect) -> Option<Expected> {
        if expect.keyword.name != "expect" {
            let message = format!("expected `expect`, found `{}`", expect.keyword.name);
            let report = Report::new(
                Code::InvalidExpectation,
                message,
                expect.keyword.span,
                "a test ends with what it expects",
            )
            .help(
                "write `expect allow` or `expect deny`, optionally `by RULE` and `with CREDENTIAL`",
            );
            self.report(report);
            return None;
        }
        let verdict = match expect.decision.name.as_str() {
            "allow" => Some(Verdict::Allow),
            "deny" => Some(Verdict::Deny),
            "error" => Some(Verdict::Error),
            other => {
                let message = format!("unknown decision `{other}`");
                let help = did_you_mean(other, ["allow", "deny", "error"]).unwrap_or_else(|| {
                    "a decision is `allow`, `deny`, or `error` (denied because the deciding rule \
                     could not be evaluated)"
                        .to_owned()
                });
                let report = Report::new(
                    Code::InvalidExpectation,
                    message,
                    expect.decision.span,
                    "not a decision",
                )
                .help(help);
                self.report(report);
                None
            }
        };
        let mut expected = Expected {
            verdict: verdict.unwrap_or(Verdict::Deny),
            rule: None,
            credential: None,
        };
        let mut ok = verdict.is_some();
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for (word, name) in &expect.parts {
            ok &= self
                .check_expect_part(verdict, word, name, &mut seen, &mut expected)
                .is_some();
        }
        ok.then_some(expected)
    }

    fn check_expect_part<'w>(
        &mut self,
        verdict: Option<Verdict>,
        word: &'w Ident,
        name: &Ident,
        seen: &mut HashMap<&'w str, Span>,
        expected: &mut Expected,
    ) -> Option<()> {
        let wanted = match word.name.as_str() {
            "by" => "rule",
            "with" => "credential",
            other => {
                let message = format!("unknown word `{other}` in `expect`");
                let help = did_you_mean(other, ["by", "with"]).unwrap_or_else(|| {
                    "name the deciding rule with `by RULE` and the credential with \
                     `with CREDENTIAL`"
                        .to_owned()
                });
                let report = Report::new(
                    Code::InvalidExpectation,
                    message,
                    word.span,
                    "not `by` or `with`",
                )
                .help(help);
                self.report(report);
                return None;
            }
        };
        if let Some(first) = seen.insert(word.name.as_str(), word.span) {
            let message = format!("`{}` is given twice in one `expect`", word.name);
            let report = Report::new(Code::InvalidExpectation, message, word.span, "given again")
                .label(first, "first given here")
                .help("a decision has one deciding rule and at most one credential");
            self.report(report);
            return None;
        }
        if wanted == "credential" && verdict.is_some_and(|verdict| verdict != Verdict::Allow) {
            let message = "a deny issues no credential".to_owned();
            let report = Report::new(Code::InvalidExpectation, message, word.span, "on a deny")
                .help("remove `with …`, or expect `allow`");
            self.report(report);
            return None;
        }
        if wanted == "credential" && name.name == "none" {
            if let Some((Declared::Credential(_), declared)) = self.names.get("none") {
                let message = "`with none` is ambiguous: a credential is named `none`";
                let report = Report::new(Code::InvalidExpectation, message, name.span, "which?")
                    .label(*declared, "declared here")
                    .help("rename the credential; `with none` expects an allow without one");
                self.report(report);
                return None;
            }
            expected.credential = Some(IssuedCredential::Nothing);
            return Some(());
        }
        match self.lookup(name, wanted)? {
            Declared::Rule => expected.rule = Some(name.name.clone()),
            Declared::Credential(_) => {
                expected.credential = Some(IssuedCredential::Named(name.name.clone()));
            }
            _ => return None,
        }
        Some(())
    }
}
