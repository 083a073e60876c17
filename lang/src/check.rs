//! Name resolution and type checking: the AST of every file in, an [`ir::PolicySet`] or the
//! full list of diagnostics out.
//!
//! [`compile`] runs the whole front end. The checker declares every name first (so order of
//! declarations and files does not matter), then checks each declaration against the claim
//! schemas of [`crate::schema`]. It reports every independent error it finds and avoids
//! follow-up errors: a name whose declaration failed to parse resolves silently, and an
//! expression that already failed is not reported again by the expression around it.

use std::collections::HashMap;

use crate::ast::{self, CompareOp, ExprKind, Ident, Span};
use crate::diagnostic::{Code, Diagnostic, Report, Sources};
use crate::ir::{self, Protocol, RequestField, TargetField, Value};
use crate::parser;
use crate::schema::{ClaimDef, ClaimId, ClaimType, ProviderKind};
use crate::source::SourceFile;

/// Compiles a policy set. Never panics; on failure returns every diagnostic, in file order.
pub fn compile(files: &[SourceFile]) -> Result<ir::PolicySet, Vec<Diagnostic>> {
    let mut reports = Vec::new();
    let mut trees = Vec::new();
    for (file_idx, file) in files.iter().enumerate() {
        let (tree, mut file_reports) = parser::parse_file(file_idx, &file.text);
        reports.append(&mut file_reports);
        trees.push(tree);
    }
    let lexical: Vec<Span> = reports
        .iter()
        .filter(|report| report.code().is_lexical())
        .map(Report::span)
        .collect();
    let mut checker = Checker::new(files);
    let set = checker.check(&trees);
    // A literal the lexer rejected was replaced by a placeholder; whatever the checker says
    // about the placeholder is a consequence, not news.
    let independent = checker.reports.into_iter().filter(|report| {
        !lexical
            .iter()
            .any(|lexical| lexical.overlaps(report.span()))
    });
    reports.extend(independent);
    if reports.is_empty() {
        return Ok(set);
    }
    reports.sort_by_key(|report| {
        let span = report.span();
        (span.file, span.start)
    });
    let sources = Sources::new(files);
    Err(reports
        .into_iter()
        .map(|report| sources.finish(report))
        .collect())
}

/// An unknown claim's help lists the kind's claims when there are at most this many.
const MAX_LISTED_CLAIMS: usize = 10;

/// What a declared name stands for.
#[derive(Debug, Clone, Copy)]
enum Declared {
    Workload(ir::WorkloadId),
    Target(ir::TargetId),
    Rule,
    /// A declaration that failed to parse: references to it are not reported.
    Broken,
}

impl Declared {
    fn describe(self) -> &'static str {
        match self {
            Declared::Workload(_) => "a workload",
            Declared::Target(_) => "a target",
            Declared::Rule => "a rule",
            Declared::Broken => "a declaration",
        }
    }
}

/// Where expression names resolve: the bare claims of one kind, or a rule's `when`.
#[derive(Debug, Clone, Copy)]
enum Scope {
    Alternative(ProviderKind),
    When,
}

/// The type of a checked expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Bool,
    String,
    Int,
    StringSet,
}

impl Ty {
    fn of_claim(ty: ClaimType) -> Ty {
        match ty {
            ClaimType::String => Ty::String,
            ClaimType::Int => Ty::Int,
            ClaimType::Bool => Ty::Bool,
            ClaimType::StringSet => Ty::StringSet,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Ty::Bool => "a bool",
            Ty::String => "a string",
            Ty::Int => "an integer",
            Ty::StringSet => "a set of strings",
        }
    }

    fn of_value(value: &Value) -> Ty {
        match value {
            Value::String(_) => Ty::String,
            Value::Int(_) => Ty::Int,
            Value::Bool(_) => Ty::Bool,
            Value::Set(_) => Ty::StringSet,
        }
    }
}

/// A resolved path: the expression that reads it and what a `has` on it becomes.
struct Resolved {
    expr: ir::Expr,
    ty: Ty,
    /// `Some` for a claim that a token may lack: it must be guarded by `has`.
    optional_claim: Option<(ProviderKind, ClaimId)>,
}

struct Checker<'a> {
    files: &'a [SourceFile],
    names: HashMap<String, (Declared, Span)>,
    reports: Vec<Report>,
}

impl<'a> Checker<'a> {
    fn new(files: &'a [SourceFile]) -> Checker<'a> {
        Checker {
            files,
            names: HashMap::new(),
            reports: Vec::new(),
        }
    }

    fn report(&mut self, report: Report) {
        self.reports.push(report);
    }

    /// The source text under `span`, for help messages that quote the policy.
    fn text(&self, span: Span) -> &'a str {
        self.files
            .get(span.file)
            .and_then(|file| file.text.get(span.start..span.end))
            .unwrap_or("")
    }

    fn check(&mut self, trees: &[ast::File]) -> ir::PolicySet {
        let decls: Vec<&ast::Decl> = trees.iter().flat_map(|tree| &tree.decls).collect();
        let mut set = ir::PolicySet {
            workloads: Vec::new(),
            targets: Vec::new(),
            rules: Vec::new(),
        };
        self.declare_all(&decls);
        for decl in decls {
            match decl {
                ast::Decl::Workload(workload) => set.workloads.push(self.check_workload(workload)),
                ast::Decl::Target(target) => {
                    if let Some(target) = self.check_target(target) {
                        set.targets.push(target);
                    }
                }
                ast::Decl::Rule(rule) => {
                    if let Some(rule) = self.check_rule(rule) {
                        set.rules.push(rule);
                    }
                }
                ast::Decl::Broken(_) => {}
            }
        }
        set
    }

    // Declarations.

    fn declare_all(&mut self, decls: &[&ast::Decl]) {
        let (mut n_workloads, mut n_targets) = (0u32, 0u32);
        for decl in decls {
            let (name, declared) = match decl {
                ast::Decl::Workload(workload) => {
                    n_workloads += 1;
                    (
                        &workload.name,
                        Declared::Workload(ir::WorkloadId(n_workloads - 1)),
                    )
                }
                ast::Decl::Target(target) => {
                    n_targets += 1;
                    (&target.name, Declared::Target(ir::TargetId(n_targets - 1)))
                }
                ast::Decl::Rule(rule) => (&rule.name, Declared::Rule),
                ast::Decl::Broken(Some(name)) => (name, Declared::Broken),
                ast::Decl::Broken(None) => continue,
            };
            self.declare(name, declared);
        }
    }

    fn declare(&mut self, name: &Ident, declared: Declared) {
        let Some(&(first, first_span)) = self.names.get(&name.name) else {
            self.names.insert(name.name.clone(), (declared, name.span));
            return;
        };
        if matches!(first, Declared::Broken) || matches!(declared, Declared::Broken) {
            return;
        }
        let message = format!("`{}` is declared twice", name.name);
        let report = Report::new(
            Code::DuplicateName,
            message,
            name.span,
            "declared again here",
        )
        .label(first_span, "first declared here")
        .help("every declaration needs a name of its own; rename one of them");
        self.report(report);
    }

    // Workloads.

    fn check_workload(&mut self, workload: &ast::WorkloadDecl) -> ir::Workload {
        let mut alternatives = Vec::new();
        if workload.alternatives.is_empty() {
            let message = format!("workload `{}` has no alternative", workload.name.name);
            let report = Report::new(
                Code::MissingClause,
                message,
                workload.name.span,
                "no trust provider can attest it",
            )
            .help("add one, for example `github { repository == \"acme/app\" }`");
            self.report(report);
        }
        for alternative in &workload.alternatives {
            let Some(kind) = self.provider_kind(&alternative.kind) else {
                continue;
            };
            let condition = match &alternative.condition {
                None => ir::Expr::Const(Value::Bool(true)),
                Some(condition) => {
                    let scope = Scope::Alternative(kind);
                    match self.check_condition(condition, scope) {
                        Some(expr) => expr,
                        None => continue,
                    }
                }
            };
            alternatives.push(ir::Alternative { kind, condition });
        }
        ir::Workload {
            name: workload.name.name.clone(),
            alternatives,
        }
    }

    fn provider_kind(&mut self, kind: &Ident) -> Option<ProviderKind> {
        if let Some(kind) = ProviderKind::from_keyword(&kind.name) {
            return Some(kind);
        }
        let supported = "the supported kinds are `github`, `kubernetes` and `oidc`";
        let planned = [
            "gitlab",
            "terraform",
            "terraform_cloud",
            "spiffe",
            "process",
            "local",
        ];
        let report = if planned.contains(&kind.name.as_str()) {
            let message = format!("trust provider kind `{}` is not supported yet", kind.name);
            Report::new(
                Code::UnknownProviderKind,
                message,
                kind.span,
                "not supported yet",
            )
            .help(supported)
        } else {
            let message = format!("unknown trust provider kind `{}`", kind.name);
            let keywords = ProviderKind::ALL.map(ProviderKind::keyword);
            let help = did_you_mean(&kind.name, keywords).unwrap_or_else(|| supported.to_owned());
            Report::new(
                Code::UnknownProviderKind,
                message,
                kind.span,
                "unknown kind",
            )
            .help(help)
        };
        self.report(report);
        None
    }

    // Targets.

    fn check_target(&mut self, target: &ast::TargetDecl) -> Option<ir::Target> {
        let name = &target.name;
        let (first, rest) = match target.endpoints.split_first() {
            Some(split) => split,
            None => {
                let message = format!("target `{}` has no protocol block", name.name);
                let report = Report::new(
                    Code::InvalidEndpoint,
                    message,
                    name.span,
                    "no protocol block",
                )
                .help("add one, for example `https { host = \"api.internal\" }`");
                self.report(report);
                return None;
            }
        };
        if let Some(second) = rest.first() {
            let message = format!("target `{}` has several protocol blocks", name.name);
            let report = Report::new(Code::InvalidEndpoint, message, second.span, "second block")
                .label(first.span, "first block")
                .help("a target is one endpoint; declare another target for the other one");
            self.report(report);
        }
        self.check_endpoint(&name.name, first)
    }

    fn check_endpoint(&mut self, target: &str, endpoint: &ast::Endpoint) -> Option<ir::Target> {
        let protocol = self.protocol(&endpoint.protocol)?;
        let mut seen: HashMap<&str, Span> = HashMap::new();
        let mut out = ir::Target {
            name: target.to_owned(),
            protocol,
            host: String::new(),
            port: protocol.default_port(),
            database: None,
            path_prefix: None,
        };
        let mut has_host = false;
        let mut ok = true;
        for field in &endpoint.fields {
            let key = field.key.name.as_str();
            if let Some(first) = seen.insert(key, field.key.span) {
                let message = format!("field `{key}` is given twice");
                let report = Report::new(
                    Code::InvalidTargetField,
                    message,
                    field.key.span,
                    "given again",
                )
                .label(first, "first given here");
                self.report(report);
                ok = false;
                continue;
            }
            has_host |= key == "host";
            ok &= self.target_field(protocol, field, &mut out);
        }
        if !has_host && ok {
            let message = format!("target `{target}` has no `host`");
            let span = endpoint.protocol.span;
            let report = Report::new(
                Code::MissingHost,
                message,
                span,
                "this endpoint needs a host",
            )
            .help(format!(
                "add `host = \"…\"` inside `{} {{ … }}`",
                protocol.keyword()
            ));
            self.report(report);
            ok = false;
        }
        ok.then_some(out)
    }

    fn protocol(&mut self, protocol: &Ident) -> Option<Protocol> {
        let known = [Protocol::Http, Protocol::Https, Protocol::Postgres];
        if let Some(found) = known.into_iter().find(|p| p.keyword() == protocol.name) {
            return Some(found);
        }
        let message = format!("unknown protocol `{}`", protocol.name);
        let keywords = known.map(Protocol::keyword);
        let help = did_you_mean(&protocol.name, keywords)
            .unwrap_or_else(|| "the protocols are `http`, `https` and `postgres`".to_owned());
        let report = Report::new(
            Code::InvalidEndpoint,
            message,
            protocol.span,
            "unknown protocol",
        )
        .help(help);
        self.report(report);
        None
    }

    /// Checks one `key = value` and stores it in `out`; false when it was reported.
    fn target_field(
        &mut self,
        protocol: Protocol,
        field: &ast::Field,
        out: &mut ir::Target,
    ) -> bool {
        let key = field.key.name.as_str();
        let is_http = matches!(protocol, Protocol::Http | Protocol::Https);
        let allowed: &[&str] = if is_http {
            &["host", "port", "path_prefix"]
        } else {
            &["host", "port", "database"]
        };
        if !allowed.contains(&key) {
            self.unknown_target_field(protocol, &field.key, allowed);
            return false;
        }
        let span = field.value.span;
        match (key, &field.value.kind) {
            ("port", ExprKind::Int(port)) => match u16::try_from(*port) {
                Ok(port) if port > 0 => out.port = port,
                _ => {
                    let message = format!("port `{port}` is out of range");
                    let report = Report::new(Code::PortOutOfRange, message, span, "not a port")
                        .help("ports range from 1 to 65535");
                    self.report(report);
                    return false;
                }
            },
            ("host", ExprKind::Str(host)) if host.is_empty() => {
                let report = Report::new(
                    Code::InvalidFieldValue,
                    "`host` is empty",
                    span,
                    "empty host",
                )
                .help("write the host name or address, `host = \"db.internal\"`");
                self.report(report);
                return false;
            }
            ("host", ExprKind::Str(host)) => out.host = host.clone(),
            ("database", ExprKind::Str(database)) => out.database = Some(database.clone()),
            ("path_prefix", ExprKind::Str(prefix)) if !prefix.starts_with('/') => {
                let message = "`path_prefix` must start with `/`";
                let report = Report::new(Code::InvalidFieldValue, message, span, "no leading `/`")
                    .help(format!("write `path_prefix = \"/{prefix}\"`"));
                self.report(report);
                return false;
            }
            ("path_prefix", ExprKind::Str(prefix)) => out.path_prefix = Some(prefix.clone()),
            (_, value) => {
                let expected = if key == "port" { Ty::Int } else { Ty::String };
                let found = literal_type_name(value);
                let message = format!("`{key}` must be {}, found {found}", expected.name());
                let label = format!("this is {found}");
                self.report(Report::new(Code::TypeMismatch, message, span, label));
                return false;
            }
        }
        true
    }

    fn unknown_target_field(&mut self, protocol: Protocol, key: &Ident, allowed: &[&str]) {
        let every = ["host", "port", "path_prefix", "database"];
        let keyword = protocol.keyword();
        let (message, label, help) = if every.contains(&key.name.as_str()) {
            let other = if key.name == "database" {
                "`postgres`"
            } else {
                "`http` and `https`"
            };
            (
                format!("`{}` is not a field of `{keyword}` targets", key.name),
                format!("not a `{keyword}` field"),
                format!("`{}` applies to {other} targets only", key.name),
            )
        } else {
            let listed = allowed
                .iter()
                .map(|field| format!("`{field}`"))
                .collect::<Vec<_>>();
            let help = did_you_mean(&key.name, allowed.iter().copied()).unwrap_or_else(|| {
                format!(
                    "the fields of `{keyword}` targets are {}",
                    listed.join(", ")
                )
            });
            (
                format!("unknown field `{}`", key.name),
                "unknown field".to_owned(),
                help,
            )
        };
        let report = Report::new(Code::InvalidTargetField, message, key.span, label).help(help);
        self.report(report);
    }

    // Rules.

    fn check_rule(&mut self, rule: &ast::RuleDecl) -> Option<ir::Rule> {
        let mut seen: HashMap<&'static str, Span> = HashMap::new();
        let mut workload = None;
        let mut target = None;
        let mut when = None;
        let mut ok = true;
        for clause in &rule.clauses {
            let keyword = clause.kind.keyword();
            if let Some(first) = seen.insert(keyword, clause.span) {
                self.duplicate_clause(keyword, clause.span, first);
                ok = false;
                continue;
            }
            match &clause.kind {
                ast::ClauseKind::Workload(selector) => workload = self.workload_ref(selector),
                ast::ClauseKind::Target(selector) => target = self.target_ref(selector),
                ast::ClauseKind::When(condition) => {
                    when = self.check_condition(condition, Scope::When)
                }
            }
            ok &= match &clause.kind {
                ast::ClauseKind::Workload(_) => workload.is_some(),
                ast::ClauseKind::Target(_) => target.is_some(),
                ast::ClauseKind::When(_) => when.is_some(),
            };
        }
        if rule.effect == ast::Effect::Permit {
            for (keyword, example) in [("workload", "workload NAME"), ("target", "target NAME")] {
                if !seen.contains_key(keyword) {
                    self.missing_clause(rule, keyword, example);
                    ok = false;
                }
            }
        }
        let effect = match rule.effect {
            ast::Effect::Permit => ir::Effect::Permit,
            ast::Effect::Forbid => ir::Effect::Forbid,
        };
        ok.then(|| ir::Rule {
            name: rule.name.name.clone(),
            effect,
            workload: workload.unwrap_or(ir::WorkloadRef::Any),
            target: target.unwrap_or(ir::TargetRef::Any),
            when,
        })
    }

    fn duplicate_clause(&mut self, keyword: &str, span: Span, first: Span) {
        let help = if keyword == "when" {
            "combine the conditions with `&&` in one `when`"
        } else {
            "a rule names one workload and one target; write another rule for another one"
        };
        let message = format!("`{keyword}` clause given twice");
        let report = Report::new(Code::DuplicateClause, message, span, "given again")
            .label(first, "first given here")
            .help(help);
        self.report(report);
    }

    fn missing_clause(&mut self, rule: &ast::RuleDecl, keyword: &str, example: &str) {
        let message = format!("permit `{}` has no `{keyword}` clause", rule.name.name);
        let label = format!("needs `{example}`");
        let help =
            format!("add `{example}`, or `{keyword} any` if it really applies to every {keyword}");
        let report = Report::new(Code::MissingClause, message, rule.name.span, label).help(help);
        self.report(report);
    }

    fn workload_ref(&mut self, selector: &ast::WorkloadSelector) -> Option<ir::WorkloadRef> {
        match selector {
            ast::WorkloadSelector::Any => Some(ir::WorkloadRef::Any),
            ast::WorkloadSelector::AnyOfKind(kind) => {
                self.provider_kind(kind).map(ir::WorkloadRef::AnyOfKind)
            }
            ast::WorkloadSelector::Named(name) => match self.lookup(name, "workload")? {
                Declared::Workload(id) => Some(ir::WorkloadRef::Named(id)),
                _ => None,
            },
        }
    }

    fn target_ref(&mut self, selector: &ast::TargetSelector) -> Option<ir::TargetRef> {
        match selector {
            ast::TargetSelector::Any => Some(ir::TargetRef::Any),
            ast::TargetSelector::Named(name) => match self.lookup(name, "target")? {
                Declared::Target(id) => Some(ir::TargetRef::Named(id)),
                _ => None,
            },
        }
    }

    /// Resolves a reference to a declaration that must be a `wanted` (`workload`, `target`);
    /// reports an unknown name or a declaration of another kind. A broken declaration resolves
    /// without a report, and its caller fails quietly.
    fn lookup(&mut self, name: &Ident, wanted: &str) -> Option<Declared> {
        let Some(&(declared, declared_at)) = self.names.get(&name.name) else {
            let candidates: Vec<&str> = self
                .names
                .iter()
                .filter(|(_, (declared, _))| {
                    matches!(
                        (declared, wanted),
                        (Declared::Workload(_), "workload") | (Declared::Target(_), "target")
                    )
                })
                .map(|(candidate, _)| candidate.as_str())
                .collect();
            let message = format!("unknown {wanted} `{}`", name.name);
            let report = Report::new(Code::UnknownName, message, name.span, "not declared")
                .help_opt(did_you_mean(&name.name, candidates));
            self.report(report);
            return None;
        };
        let matches_kind = match declared {
            Declared::Workload(_) => wanted == "workload",
            Declared::Target(_) => wanted == "target",
            Declared::Rule => false,
            Declared::Broken => return None,
        };
        if !matches_kind {
            let what = declared.describe();
            let message = format!("`{}` is {what}, not a {wanted}", name.name);
            let label = format!("expected a {wanted}");
            let report = Report::new(Code::WrongDeclarationKind, message, name.span, label)
                .label(declared_at, format!("declared as {what} here"));
            self.report(report);
            return None;
        }
        Some(declared)
    }

    // Expressions.

    /// Checks a `when` or an alternative body, which must be a bool.
    fn check_condition(&mut self, expr: &ast::Expr, scope: Scope) -> Option<ir::Expr> {
        let (lowered, ty) = self.check_expr(expr, scope, &[])?;
        if ty != Ty::Bool {
            self.expected_bool(expr.span, ty, "a condition");
            return None;
        }
        Some(lowered)
    }

    fn expected_bool(&mut self, span: Span, ty: Ty, what: &str) {
        let message = format!("{what} must be a bool, found {}", ty.name());
        let label = format!("this is {}", ty.name());
        let report = Report::new(Code::TypeMismatch, message, span, label)
            .help("compare it with `==`, `in` or `like` to make a bool");
        self.report(report);
    }

    /// Checks an expression. `guards` are the claims tested by `has` earlier in the same `&&`
    /// chain. `None` means an error inside was already reported.
    fn check_expr(
        &mut self,
        expr: &ast::Expr,
        scope: Scope,
        guards: &[(ProviderKind, ClaimId)],
    ) -> Option<(ir::Expr, Ty)> {
        match &expr.kind {
            ExprKind::Str(value) => {
                Some((ir::Expr::Const(Value::String(value.clone())), Ty::String))
            }
            ExprKind::Int(value) => Some((ir::Expr::Const(Value::Int(*value)), Ty::Int)),
            ExprKind::Bool(value) => Some((ir::Expr::Const(Value::Bool(*value)), Ty::Bool)),
            ExprKind::Set(_) => {
                let message = "a set can only follow `in`";
                let report =
                    Report::new(Code::InvalidSet, message, expr.span, "set used as a value")
                        .help("test membership with `VALUE in [ … ]`");
                self.report(report);
                None
            }
            ExprKind::Path(path) => self.check_read(path, expr.span, scope, guards, expr.span),
            ExprKind::Has(path) => {
                let path_span = match (path.first(), path.last()) {
                    (Some(first), Some(last)) => first.span.to(last.span),
                    _ => expr.span,
                };
                self.check_has(path, path_span, scope)
            }
            ExprKind::Not(operand) => {
                let (operand, ty) = self.check_expr(operand, scope, guards)?;
                self.require_bool(ty, expr.span, "the operand of `!`")?;
                Some((ir::Expr::Not(Box::new(operand)), Ty::Bool))
            }
            ExprKind::And(lhs, rhs) => self.check_and(lhs, rhs, scope, guards),
            ExprKind::Or(lhs, rhs) => {
                let lhs_checked = self.check_bool_operand(lhs, scope, guards, "`||`");
                let rhs_checked = self.check_bool_operand(rhs, scope, guards, "`||`");
                let expr = ir::Expr::Or(Box::new(lhs_checked?), Box::new(rhs_checked?));
                Some((expr, Ty::Bool))
            }
            ExprKind::Compare(lhs, op, rhs) => {
                self.check_compare(lhs, *op, rhs, expr.span, scope, guards)
            }
        }
    }

    fn check_and(
        &mut self,
        lhs: &ast::Expr,
        rhs: &ast::Expr,
        scope: Scope,
        guards: &[(ProviderKind, ClaimId)],
    ) -> Option<(ir::Expr, Ty)> {
        let lhs_checked = self.check_bool_operand(lhs, scope, guards, "`&&`");
        let mut rhs_guards = guards.to_vec();
        if let Some(lhs_checked) = &lhs_checked {
            collect_guards(lhs_checked, &mut rhs_guards);
        }
        let rhs_checked = self.check_bool_operand(rhs, scope, &rhs_guards, "`&&`");
        Some((
            ir::Expr::And(Box::new(lhs_checked?), Box::new(rhs_checked?)),
            Ty::Bool,
        ))
    }

    fn check_bool_operand(
        &mut self,
        operand: &ast::Expr,
        scope: Scope,
        guards: &[(ProviderKind, ClaimId)],
        operator: &str,
    ) -> Option<ir::Expr> {
        let (checked, ty) = self.check_expr(operand, scope, guards)?;
        self.require_bool(ty, operand.span, &format!("each side of {operator}"))?;
        Some(checked)
    }

    fn require_bool(&mut self, ty: Ty, span: Span, what: &str) -> Option<()> {
        if ty == Ty::Bool {
            return Some(());
        }
        self.expected_bool(span, ty, what);
        None
    }

    fn check_compare(
        &mut self,
        lhs: &ast::Expr,
        op: CompareOp,
        rhs: &ast::Expr,
        span: Span,
        scope: Scope,
        guards: &[(ProviderKind, ClaimId)],
    ) -> Option<(ir::Expr, Ty)> {
        if let CompareOp::Assign { op: op_span } = op {
            let report = Report::new(
                Code::AssignInsteadOfEq,
                "`=` in an expression",
                op_span,
                "this assigns, it does not compare",
            )
            .help("use `==` to compare");
            self.report(report);
        }
        let lhs_checked = self.check_operand(lhs, scope, guards, span);
        match op {
            CompareOp::In => {
                let (lhs_expr, lhs_ty) = lhs_checked?;
                let values = self.check_in(lhs_ty, lhs.span, rhs)?;
                Some((ir::Expr::In(Box::new(lhs_expr), values), Ty::Bool))
            }
            CompareOp::Like => {
                let pattern = self.check_like_pattern(rhs);
                let (lhs_expr, lhs_ty) = lhs_checked?;
                if lhs_ty != Ty::String {
                    let message = format!("`like` matches strings, not {}", lhs_ty.name());
                    let label = format!("this is {}", lhs_ty.name());
                    self.report(Report::new(Code::TypeMismatch, message, lhs.span, label));
                    return None;
                }
                Some((ir::Expr::Like(Box::new(lhs_expr), pattern?), Ty::Bool))
            }
            CompareOp::Eq | CompareOp::Ne | CompareOp::Assign { .. } => {
                let rhs_checked = self.check_operand(rhs, scope, guards, span);
                let (lhs_expr, lhs_ty) = lhs_checked?;
                let (rhs_expr, rhs_ty) = rhs_checked?;
                self.check_equality_types(lhs, lhs_ty, rhs, rhs_ty, op)?;
                let (lhs_expr, rhs_expr) = (Box::new(lhs_expr), Box::new(rhs_expr));
                let expr = match op {
                    CompareOp::Ne => ir::Expr::Ne(lhs_expr, rhs_expr),
                    _ => ir::Expr::Eq(lhs_expr, rhs_expr),
                };
                Some((expr, Ty::Bool))
            }
        }
    }

    /// An operand of a comparison; `atom` is the whole comparison, quoted by the help of an
    /// unguarded optional claim.
    fn check_operand(
        &mut self,
        operand: &ast::Expr,
        scope: Scope,
        guards: &[(ProviderKind, ClaimId)],
        atom: Span,
    ) -> Option<(ir::Expr, Ty)> {
        match &operand.kind {
            ExprKind::Path(path) => self.check_read(path, operand.span, scope, guards, atom),
            _ => self.check_expr(operand, scope, guards),
        }
    }

    fn check_equality_types(
        &mut self,
        lhs: &ast::Expr,
        lhs_ty: Ty,
        rhs: &ast::Expr,
        rhs_ty: Ty,
        op: CompareOp,
    ) -> Option<()> {
        let symbol = match op {
            CompareOp::Ne => "!=",
            _ => "==",
        };
        if lhs_ty == Ty::StringSet || rhs_ty == Ty::StringSet {
            let (set_side, set_span) = if lhs_ty == Ty::StringSet {
                (lhs, lhs.span)
            } else {
                (rhs, rhs.span)
            };
            let message = format!("`{symbol}` cannot compare a set of strings");
            let help = format!(
                "test membership instead: `{} in [\"…\"]`",
                self.text(set_side.span)
            );
            let report =
                Report::new(Code::TypeMismatch, message, set_span, "a set of strings").help(help);
            self.report(report);
            return None;
        }
        if lhs_ty == rhs_ty {
            return Some(());
        }
        let message = format!("cannot compare {} with {}", lhs_ty.name(), rhs_ty.name());
        let help = match (&rhs.kind, lhs_ty) {
            (ExprKind::Int(value), Ty::String) => Some(format!(
                "claims of this kind are strings: write `\"{value}\"`"
            )),
            _ => None,
        };
        let report = Report::new(
            Code::TypeMismatch,
            message,
            rhs.span,
            format!("this is {}", rhs_ty.name()),
        )
        .label(lhs.span, format!("this is {}", lhs_ty.name()))
        .help_opt(help);
        self.report(report);
        None
    }

    fn check_in(&mut self, lhs_ty: Ty, lhs_at: Span, rhs: &ast::Expr) -> Option<Vec<Value>> {
        let ExprKind::Set(items) = &rhs.kind else {
            let report =
                Report::new(Code::InvalidSet, "`in` needs a set", rhs.span, "not a set").help(
                    format!("write a set of literals: `[{}]`", self.text(rhs.span)),
                );
            self.report(report);
            return None;
        };
        let values = self.set_values(items)?;
        let element_ty = match values.first() {
            Some(first) => Ty::of_value(first),
            None => return Some(values),
        };
        let wanted = if lhs_ty == Ty::StringSet {
            Ty::String
        } else {
            lhs_ty
        };
        if wanted != element_ty {
            let message = format!(
                "`in` tests {} against a set of {}",
                lhs_ty.name(),
                plural(element_ty)
            );
            let report = Report::new(
                Code::TypeMismatch,
                message,
                rhs.span,
                format!("a set of {}", plural(element_ty)),
            )
            .label(lhs_at, format!("this is {}", lhs_ty.name()));
            self.report(report);
            return None;
        }
        Some(values)
    }

    /// The literals of a set, deduplicated in source order; all must have one type.
    fn set_values(&mut self, items: &[ast::Expr]) -> Option<Vec<Value>> {
        let mut values: Vec<Value> = Vec::new();
        let mut first: Option<(Ty, Span)> = None;
        for item in items {
            let value = match &item.kind {
                ExprKind::Str(text) => Value::String(text.clone()),
                ExprKind::Int(number) => Value::Int(*number),
                ExprKind::Bool(flag) => Value::Bool(*flag),
                _ => return None,
            };
            let ty = Ty::of_value(&value);
            match first {
                None => first = Some((ty, item.span)),
                Some((first_ty, first_span)) if first_ty != ty => {
                    let message = format!("set mixes {} and {}", plural(first_ty), plural(ty));
                    let report = Report::new(
                        Code::InvalidSet,
                        message,
                        item.span,
                        format!("this is {}", ty.name()),
                    )
                    .label(first_span, format!("this is {}", first_ty.name()))
                    .help("every element of a set has the same type");
                    self.report(report);
                    return None;
                }
                Some(_) => {}
            }
            if !values.contains(&value) {
                values.push(value);
            }
        }
        Some(values)
    }

    fn check_like_pattern(&mut self, rhs: &ast::Expr) -> Option<String> {
        if let ExprKind::Str(pattern) = &rhs.kind {
            return Some(pattern.clone());
        }
        let found = literal_type_name(&rhs.kind);
        let message = format!("`like` needs a string pattern, found {found}");
        let report = Report::new(
            Code::TypeMismatch,
            message,
            rhs.span,
            "not a string literal",
        )
        .help("write the glob as a string, for example `\"refs/tags/v*\"`");
        self.report(report);
        None
    }

    /// A path read as a value; `atom` is the comparison it sits in.
    fn check_read(
        &mut self,
        path: &[Ident],
        span: Span,
        scope: Scope,
        guards: &[(ProviderKind, ClaimId)],
        atom: Span,
    ) -> Option<(ir::Expr, Ty)> {
        let resolved = self.resolve(path, span, scope)?;
        if let Some(claim) = resolved.optional_claim
            && !guards.contains(&claim)
        {
            let shown = self.text(span);
            let message = format!("optional claim `{shown}` is read without a `has` guard");
            let help = format!("guard it: `has {shown} && {}`", self.text(atom));
            let label = "not every token carries this claim";
            let report = Report::new(Code::UnguardedOptionalClaim, message, span, label).help(help);
            self.report(report);
            return None;
        }
        Some((resolved.expr, resolved.ty))
    }

    fn check_has(&mut self, path: &[Ident], span: Span, scope: Scope) -> Option<(ir::Expr, Ty)> {
        let resolved = self.resolve(path, span, scope)?;
        let expr = match resolved.expr {
            ir::Expr::Claim { kind, claim } => ir::Expr::HasClaim { kind, claim },
            ir::Expr::Request(field) => ir::Expr::HasRequest(field),
            _ => {
                let shown = self.text(span);
                let message = format!("`has` does not apply to `{shown}`");
                let report = Report::new(Code::InvalidHas, message, span, "always present")
                    .help("`has` tests claims and `request.action` or `request.resource`");
                self.report(report);
                return None;
            }
        };
        Some((expr, Ty::Bool))
    }

    // Paths.

    fn resolve(&mut self, path: &[Ident], span: Span, scope: Scope) -> Option<Resolved> {
        let (head, rest) = path.split_first()?;
        match (head.name.as_str(), scope) {
            ("request" | "target", Scope::Alternative(kind)) if !rest.is_empty() => {
                let message = format!("`{}` cannot be read in a workload", self.text(span));
                let report = Report::new(Code::MisplacedName, message, span, "not a claim")
                    .help(format!(
                        "a `{kind}` alternative reads the caller's claims only; test this in a rule's `when`"
                    ));
                self.report(report);
                None
            }
            ("request", _) if !rest.is_empty() => self.resolve_request(rest, span),
            ("target", _) if !rest.is_empty() => self.resolve_target(rest, span),
            ("client", _) if !rest.is_empty() => self.resolve_client(rest, span),
            (_, Scope::Alternative(kind)) if rest.is_empty() => self.resolve_claim(kind, head),
            _ => {
                self.unknown_name(head, span, rest.is_empty());
                None
            }
        }
    }

    fn unknown_name(&mut self, head: &Ident, span: Span, bare: bool) {
        let shown = self.text(span);
        let owner = ProviderKind::ALL
            .into_iter()
            .find(|kind| kind.claim(&head.name).is_some());
        let (message, help) = match owner {
            Some(kind) if bare => (
                format!("claim `{shown}` needs its trust provider kind here"),
                format!("in `when`, write `client.{kind}.{shown}`"),
            ),
            _ => (
                format!("unknown name `{shown}`"),
                "expressions read `request.*`, `target.*`, `client.KIND.claim` and, inside a \
                 workload, bare claims"
                    .to_owned(),
            ),
        };
        let report =
            Report::new(Code::MisplacedName, message, span, "cannot be read here").help(help);
        self.report(report);
    }

    fn resolve_claim(&mut self, kind: ProviderKind, name: &Ident) -> Option<Resolved> {
        let Some((claim, def)) = kind.claim(&name.name) else {
            let message = format!("unknown claim `{}` for `{kind}`", name.name);
            let names = kind.claims().iter().map(|def: &ClaimDef| def.name);
            let help = did_you_mean(&name.name, names.clone()).unwrap_or_else(|| {
                if kind.claims().len() > MAX_LISTED_CLAIMS {
                    return format!("docs/gate.md lists the claims of `{kind}`");
                }
                let listed: Vec<String> = names.map(|name| format!("`{name}`")).collect();
                format!("the claims of `{kind}` are {}", listed.join(", "))
            });
            let label = format!("not a `{kind}` claim");
            let report = Report::new(Code::UnknownClaim, message, name.span, label).help(help);
            self.report(report);
            return None;
        };
        Some(Resolved {
            expr: ir::Expr::Claim { kind, claim },
            ty: Ty::of_claim(def.ty),
            optional_claim: (!def.required).then_some((kind, claim)),
        })
    }

    fn resolve_client(&mut self, rest: &[Ident], span: Span) -> Option<Resolved> {
        let kind_name = rest.first()?;
        let kind = self.provider_kind(kind_name)?;
        match rest.get(1..) {
            Some([claim]) => self.resolve_claim(kind, claim),
            _ => {
                let shown = self.text(span);
                let message = format!("`{shown}` is not a claim");
                let report = Report::new(Code::UnknownField, message, span, "not a claim")
                    .help(format!("name one claim: `client.{kind}.CLAIM`"));
                self.report(report);
                None
            }
        }
    }

    fn resolve_request(&mut self, rest: &[Ident], span: Span) -> Option<Resolved> {
        let fields = [
            ("action", RequestField::Action),
            ("resource", RequestField::Resource),
        ];
        let field = self.field_of("request", &fields, rest, span)?;
        Some(Resolved {
            expr: ir::Expr::Request(field),
            ty: Ty::String,
            optional_claim: None,
        })
    }

    fn resolve_target(&mut self, rest: &[Ident], span: Span) -> Option<Resolved> {
        let fields = [
            ("name", TargetField::Name),
            ("protocol", TargetField::Protocol),
            ("host", TargetField::Host),
            ("port", TargetField::Port),
        ];
        let field = self.field_of("target", &fields, rest, span)?;
        let ty = if field == TargetField::Port {
            Ty::Int
        } else {
            Ty::String
        };
        Some(Resolved {
            expr: ir::Expr::Target(field),
            ty,
            optional_claim: None,
        })
    }

    /// The field `rest` names among `fields` of `owner` (`request`, `target`).
    fn field_of<F: Copy>(
        &mut self,
        owner: &str,
        fields: &[(&str, F)],
        rest: &[Ident],
        span: Span,
    ) -> Option<F> {
        let names = fields.iter().map(|(name, _)| *name);
        let listed = names
            .clone()
            .map(|name| format!("`{name}`"))
            .collect::<Vec<_>>()
            .join(", ");
        if let [field] = rest {
            if let Some((_, found)) = fields.iter().find(|(name, _)| *name == field.name) {
                return Some(*found);
            }
            let message = format!("`{owner}` has no field `{}`", field.name);
            let help = did_you_mean(&field.name, names)
                .unwrap_or_else(|| format!("the fields of `{owner}` are {listed}"));
            let report =
                Report::new(Code::UnknownField, message, field.span, "unknown field").help(help);
            self.report(report);
            return None;
        }
        let message = format!("`{}` is not a field of `{owner}`", self.text(span));
        let help = format!("the fields of `{owner}` are {listed}");
        self.report(Report::new(Code::UnknownField, message, span, "unknown field").help(help));
        None
    }
}

/// The claims that `expr` proves present when it is true: the `has` tests of its `&&` chain.
fn collect_guards(expr: &ir::Expr, guards: &mut Vec<(ProviderKind, ClaimId)>) {
    match expr {
        ir::Expr::HasClaim { kind, claim } => guards.push((*kind, *claim)),
        ir::Expr::And(lhs, rhs) => {
            collect_guards(lhs, guards);
            collect_guards(rhs, guards);
        }
        _ => {}
    }
}

fn plural(ty: Ty) -> &'static str {
    match ty {
        Ty::Bool => "bools",
        Ty::String => "strings",
        Ty::Int => "integers",
        Ty::StringSet => "sets",
    }
}

fn literal_type_name(kind: &ExprKind) -> &'static str {
    match kind {
        ExprKind::Str(_) => "a string",
        ExprKind::Int(_) => "an integer",
        ExprKind::Bool(_) => "a bool",
        ExprKind::Set(_) => "a set",
        _ => "an expression",
    }
}

/// `did you mean `NAME`?` for the candidate closest to `name` by edit distance, when it is
/// close enough to be a likely typo.
/// A candidate that the name extends or abbreviates (`hostname`, `host`) is close too.
fn did_you_mean<'c>(name: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<String> {
    let max_distance = (name.chars().count() / 3).max(1);
    let mut best: Option<(usize, &str)> = None;
    let mut by_prefix: Option<&str> = None;
    for candidate in candidates {
        let distance = edit_distance(name, candidate);
        if distance <= max_distance
            && best.is_none_or(|(best_distance, _)| distance < best_distance)
        {
            best = Some((distance, candidate));
        }
        let shorter = name.len().min(candidate.len());
        if shorter >= 3 && (name.starts_with(candidate) || candidate.starts_with(name)) {
            by_prefix.get_or_insert(candidate);
        }
    }
    let candidate = best.map(|(_, candidate)| candidate).or(by_prefix)?;
    Some(format!("did you mean `{candidate}`?"))
}

/// Levenshtein distance over characters, one row at a time.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = i;
        let mut left = i + 1;
        for (cell, cb) in row.iter_mut().skip(1).zip(&b) {
            let above = *cell;
            let value = (diagonal + usize::from(ca != *cb))
                .min(above + 1)
                .min(left + 1);
            diagonal = above;
            *cell = value;
            left = value;
        }
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
    }
    row.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_one(text: &str) -> Result<ir::PolicySet, Vec<Diagnostic>> {
        compile(&[SourceFile::new("test.gate", text)])
    }

    fn codes(text: &str) -> Vec<&'static str> {
        let diags = compile_one(text).unwrap_err();
        diags.iter().map(|diag| diag.code().as_str()).collect()
    }

    fn claim(kind: ProviderKind, name: &str) -> ir::Expr {
        let (claim, _) = kind.claim(name).unwrap();
        ir::Expr::Claim { kind, claim }
    }

    #[test]
    fn like_becomes_a_glob_on_the_claim() {
        let set = compile_one(r#"workload w { github { ref like "refs/tags/v*" } }"#).unwrap();
        let alternative = &set.workloads[0].alternatives[0];
        assert_eq!(alternative.kind, ProviderKind::Github);
        assert_eq!(
            alternative.condition,
            ir::Expr::Like(
                Box::new(claim(ProviderKind::Github, "ref")),
                "refs/tags/v*".to_owned()
            )
        );
    }

    #[test]
    fn empty_alternative_accepts_every_caller() {
        let set = compile_one("workload w { oidc { } }").unwrap();
        assert_eq!(
            set.workloads[0].alternatives[0].condition,
            ir::Expr::Const(Value::Bool(true))
        );
    }

    #[test]
    fn sets_are_deduplicated_in_source_order() {
        let set = compile_one(r#"workload w { oidc { aud in ["b", "a", "b"] } }"#).unwrap();
        let values = vec![Value::String("b".to_owned()), Value::String("a".to_owned())];
        assert_eq!(
            set.workloads[0].alternatives[0].condition,
            ir::Expr::In(Box::new(claim(ProviderKind::Oidc, "aud")), values)
        );
    }

    #[test]
    fn guard_and_when_lower_to_has_and_reads() {
        let text = r#"
            workload w { kubernetes { namespace == "n" } }
            target t { postgres { host = "db" database = "d" } }
            permit p {
              target t
              workload w
              when has client.kubernetes.pod && client.kubernetes.pod != "x" && target.port == 5432
            }
        "#;
        let set = compile_one(text).unwrap();
        let rule = &set.rules[0];
        assert_eq!(rule.workload, ir::WorkloadRef::Named(ir::WorkloadId(0)));
        assert_eq!(rule.target, ir::TargetRef::Named(ir::TargetId(0)));
        let pod = ProviderKind::Kubernetes.claim("pod").unwrap().0;
        let expected = ir::Expr::And(
            Box::new(ir::Expr::And(
                Box::new(ir::Expr::HasClaim {
                    kind: ProviderKind::Kubernetes,
                    claim: pod,
                }),
                Box::new(ir::Expr::Ne(
                    Box::new(claim(ProviderKind::Kubernetes, "pod")),
                    Box::new(ir::Expr::Const(Value::String("x".to_owned()))),
                )),
            )),
            Box::new(ir::Expr::Eq(
                Box::new(ir::Expr::Target(TargetField::Port)),
                Box::new(ir::Expr::Const(Value::Int(5432))),
            )),
        );
        assert_eq!(rule.when, Some(expected));
        let target = &set.targets[0];
        assert_eq!((target.port, target.database.as_deref()), (5432, Some("d")));
    }

    #[test]
    fn forbid_without_clauses_covers_everything() {
        let set = compile_one("forbid f { }").unwrap();
        let rule = &set.rules[0];
        assert_eq!(
            (rule.workload, rule.target, &rule.when),
            (ir::WorkloadRef::Any, ir::TargetRef::Any, &None)
        );
        assert_eq!(rule.effect, ir::Effect::Forbid);
    }

    #[test]
    fn declarations_may_be_used_before_they_appear() {
        let text = "permit p { workload w target t } workload w { oidc { } } \
                    target t { http { host = \"h\" } }";
        assert!(compile_one(text).is_ok());
    }

    #[test]
    fn lexical_placeholders_raise_no_follow_up_errors() {
        let text = "target t { https { host = \"unterminated\n port = 99999999999999999999 } }";
        assert_eq!(codes(text), vec!["gate::E0003", "gate::E0005"]);
    }

    #[test]
    fn the_rhs_of_or_gets_no_guard_from_the_lhs() {
        let text = "workload w { oidc { has email || email == \"a\" } }";
        assert_eq!(codes(text), vec!["gate::E0303"]);
        let text = "workload w { oidc { (has email && sub == \"s\") && email == \"a\" } }";
        assert!(compile_one(text).is_ok());
    }

    #[test]
    fn too_complex_declarations_are_cut_without_follow_up_errors() {
        let condition = vec!["sub == \"s\""; parser::MAX_OPERATORS + 2].join(" && ");
        let text = format!(
            "workload w {{ oidc {{ {condition} }} }}\npermit p {{ workload w target any }}"
        );
        assert_eq!(codes(&text), vec!["gate::E0008"]);
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let text = format!(
            "forbid f {{ when {}true{} }}",
            "!(".repeat(100_000),
            ")".repeat(100_000)
        );
        assert_eq!(codes(&text), vec!["gate::E0008"]);
    }

    #[test]
    fn did_you_mean_only_when_close() {
        assert_eq!(
            did_you_mean("repositry", ["ref", "repository"]),
            Some("did you mean `repository`?".to_owned())
        );
        assert_eq!(did_you_mean("zzz", ["ref", "repository"]), None);
        assert_eq!(
            did_you_mean("hostname", ["port", "host"]),
            Some("did you mean `host`?".to_owned())
        );
        assert_eq!(
            did_you_mean("re", ["ref", "repository"]),
            Some("did you mean `ref`?".to_owned())
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", ""), 3);
    }
}
