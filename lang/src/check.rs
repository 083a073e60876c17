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
use crate::bytecode::MAX_CONDITION_DEPTH;
use crate::diagnostic::{Code, Diagnostic, Report, Sources};
use crate::ir::{self, Protocol, RequestField, TargetField, Value};
use crate::parser;
use crate::policy_test::TestCase;
use crate::schema::{CUSTOM_CLAIMS_KIND, ClaimId, ClaimType, CustomClaims, ProviderKind};
use crate::source::SourceFile;

/// Compiles a policy set without custom claims. Never panics; on failure returns every
/// diagnostic, in file order.
pub fn compile(files: &[SourceFile]) -> Result<ir::PolicySet, Vec<Diagnostic>> {
    compile_with_claims(files, &CustomClaims::default())
}

/// Compiles a policy set whose `oidc` claims include `custom_claims`, the claims that the
/// configuration's `oidc` trust providers declare. Never panics; on failure returns every
/// diagnostic, in file order.
pub fn compile_with_claims(
    files: &[SourceFile],
    custom_claims: &CustomClaims,
) -> Result<ir::PolicySet, Vec<Diagnostic>> {
    compile_with_tests(files, custom_claims).map(|(set, _)| set)
}

mod test_decl;
mod window;

/// What [`compile_with_claims`] does, and the checked `test` declarations too, in declaration
/// order; tests never reach the bundle.
pub fn compile_with_tests(
    files: &[SourceFile],
    custom_claims: &CustomClaims,
) -> Result<(ir::PolicySet, Vec<TestCase>), Vec<Diagnostic>> {
    compile_keeping_trees(files, custom_claims).map(|(set, tests, _)| (set, tests))
}

/// A compiled policy set, its checked tests, and the syntax trees it was compiled from.
pub(crate) type Compiled = (ir::PolicySet, Vec<TestCase>, Vec<ast::File>);

/// What [`compile_with_tests`] does, keeping the syntax trees for the lints.
pub(crate) fn compile_keeping_trees(
    files: &[SourceFile],
    custom_claims: &CustomClaims,
) -> Result<Compiled, Vec<Diagnostic>> {
    let mut reports = Vec::new();
    let mut trees = Vec::new();
    for (file_idx, file) in files.iter().enumerate() {
        let (tree, mut file_reports) = parser::parse_file(file_idx, &file.text);
        reports.append(&mut file_reports);
        trees.push(tree);
    }
    if let Some(report) = limit_declarations(&trees) {
        // Checking a set this large would only spend time on a set that cannot be used.
        reports.push(report);
        let sources = Sources::new(files);
        return Err(cap_per_file(sort_by_position(reports))
            .into_iter()
            .map(|report| sources.finish(report))
            .collect());
    }
    let lexical: Vec<Span> = reports
        .iter()
        .filter(|report| report.code().is_lexical())
        .map(Report::span)
        .collect();
    let mut checker = Checker::new(files, custom_claims);
    let set = checker.check(&trees);
    let tests = checker.check_tests(&trees);
    // A literal the lexer rejected was replaced by a placeholder; whatever the checker says
    // about the placeholder is a consequence, not news.
    let independent = checker.reports.into_iter().filter(|report| {
        let span = report.span();
        // Touching counts too: `$acme` is one mistake, not also an unknown `acme`.
        !lexical.iter().any(|lexical| {
            lexical.overlaps(span) || (lexical.file == span.file && lexical.end == span.start)
        })
    });
    reports.extend(independent);
    if reports.is_empty() {
        return Ok((set, tests, trees));
    }
    let reports = cap_per_file(sort_by_position(reports));
    let sources = Sources::new(files);
    Err(reports
        .into_iter()
        .map(|report| sources.finish(report))
        .collect())
}

/// The most declarations in one policy set, across its files: ten times the largest set the
/// benchmark generates, and a bound on the checker's work and the bundle's size.
pub const MAX_DECLARATIONS: usize = 1_000_000;

/// The report for a policy set of more than [`MAX_DECLARATIONS`] named declarations, at the
/// first one past the bound. A declaration too broken to have a name is an error already.
fn limit_declarations(trees: &[ast::File]) -> Option<Report> {
    let first_past = trees
        .iter()
        .flat_map(|tree| &tree.decls)
        .filter_map(decl_name)
        .nth(MAX_DECLARATIONS)?;
    let message = format!("policy set has more than {MAX_DECLARATIONS} declarations");
    let report = Report::new(
        Code::TooManyDeclarations,
        message,
        first_past.span,
        "one declaration past the limit",
    )
    .help("a rule with `in [ … ]` or `any` covers what many near-identical rules do");
    Some(report)
}

/// The name of a declaration, which locates it; a broken declaration may have none.
fn decl_name(decl: &ast::Decl) -> Option<&Ident> {
    match decl {
        ast::Decl::Workload(workload) => Some(&workload.name),
        ast::Decl::Target(target) => Some(&target.name),
        ast::Decl::Rule(rule) => Some(&rule.name),
        ast::Decl::Credential(credential) => Some(&credential.name),
        ast::Decl::Condition(condition) => Some(&condition.name),
        ast::Decl::Test(test) => Some(&test.name),
        ast::Decl::Broken(name) => name.as_ref(),
    }
}

fn sort_by_position(mut reports: Vec<Report>) -> Vec<Report> {
    reports.sort_by_key(|report| {
        let span = report.span();
        (span.file, span.start)
    });
    reports
}

/// Errors shown per file; the rest are counted in one last report. Rendering a report reads
/// its file, so an unbounded number of them would make a garbage file quadratic to report.
const MAX_REPORTS_PER_FILE: usize = 50;

/// Keeps the first [`MAX_REPORTS_PER_FILE`] reports of each file (`reports` sorted by file)
/// and says how many more there were where the first one left out begins.
fn cap_per_file(reports: Vec<Report>) -> Vec<Report> {
    let mut kept = Vec::with_capacity(reports.len().min(MAX_REPORTS_PER_FILE * 4));
    let mut reports = reports.into_iter().peekable();
    while let Some(first) = reports.next() {
        let file = first.span().file;
        let mut in_file = vec![first];
        while let Some(next) = reports.next_if(|report| report.span().file == file) {
            in_file.push(next);
        }
        let hidden = in_file.len().saturating_sub(MAX_REPORTS_PER_FILE);
        let first_hidden = in_file.get(MAX_REPORTS_PER_FILE).map(Report::span);
        in_file.truncate(MAX_REPORTS_PER_FILE);
        kept.append(&mut in_file);
        if let Some(span) = first_hidden {
            let message = format!("{hidden} more errors in this file are not shown");
            let report = Report::new(Code::TooManyErrors, message, span, "the next one is here")
                .help("fix the errors above and check again")
                .standing_for(hidden);
            kept.push(report);
        }
    }
    kept
}

/// An unknown claim's help lists the kind's claims when there are at most this many.
const MAX_LISTED_CLAIMS: usize = 10;

/// What a declared name stands for.
#[derive(Debug, Clone, Copy)]
enum Declared {
    Workload(ir::WorkloadId),
    Target(ir::TargetId),
    Credential(ir::CredentialId),
    Condition(ir::ConditionId),
    Rule,
    Test,
    /// A declaration that failed to parse: references to it are not reported.
    Broken,
}

impl Declared {
    fn describe(self) -> &'static str {
        match self {
            Declared::Workload(_) => "a workload",
            Declared::Target(_) => "a target",
            Declared::Credential(_) => "a credential",
            Declared::Condition(_) => "a condition",
            Declared::Rule => "a rule",
            Declared::Test => "a test",
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
    /// Seconds, an integer at run time; kept apart from integers by the checker.
    Duration,
    StringSet,
    /// An IP address, `request.source_ip`.
    Ip,
    /// Unix seconds, an integer at run time; `request.time` and timestamp literals.
    Timestamp,
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
            Ty::Duration => "a duration",
            Ty::StringSet => "a set of strings",
            Ty::Ip => "an IP address",
            Ty::Timestamp => "a timestamp",
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
    custom_claims: &'a CustomClaims,
    names: HashMap<String, (Declared, Span)>,
    /// The name of each condition, by [`ir::ConditionId`].
    condition_names: Vec<Ident>,
    /// The claims each checked condition proves present when it is true.
    condition_guards: HashMap<u32, Vec<(ProviderKind, ClaimId)>>,
    /// Set while checking a bare name compared with a string: if the name is unknown, it is
    /// most likely text without its quotes.
    text_fits: bool,
    /// Unguarded optional claims read inside the comparison being checked; reported only if
    /// the comparison is otherwise well typed, so that the help never quotes a type error.
    unguarded: Vec<Report>,
    reports: Vec<Report>,
}

impl<'a> Checker<'a> {
    fn new(files: &'a [SourceFile], custom_claims: &'a CustomClaims) -> Checker<'a> {
        Checker {
            files,
            custom_claims,
            names: HashMap::new(),
            condition_names: Vec::new(),
            condition_guards: HashMap::new(),
            text_fits: false,
            unguarded: Vec::new(),
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
            credentials: Vec::new(),
            conditions: Vec::new(),
            rules: Vec::new(),
            custom_claims: self.custom_claims.clone(),
        };
        self.declare_all(&decls);
        for decl in &decls {
            if let ast::Decl::Condition(condition) = decl {
                let checked = self.check_condition_decl(condition);
                let mut guards = Vec::new();
                collect_guards(&checked.body, &self.condition_guards, &mut guards);
                let id = set.conditions.len() as u32;
                self.condition_guards.insert(id, guards);
                set.conditions.push(checked);
            }
        }
        self.check_condition_graph(&set.conditions);
        for decl in decls {
            match decl {
                ast::Decl::Workload(workload) => set.workloads.push(self.check_workload(workload)),
                ast::Decl::Target(decl) => {
                    if let Some(target) = self.check_target(decl) {
                        self.check_endpoint_is_free(&set.targets, &target, decl.name.span);
                        set.targets.push(target);
                    }
                }
                ast::Decl::Rule(rule) => {
                    if let Some(rule) = self.check_rule(rule) {
                        set.rules.push(rule);
                    }
                }
                ast::Decl::Credential(credential) => {
                    if let Some(credential) = self.check_credential(credential) {
                        set.credentials.push(credential);
                    }
                }
                ast::Decl::Condition(_) | ast::Decl::Test(_) | ast::Decl::Broken(_) => {}
            }
        }
        set
    }

    // Declarations.

    fn declare_all(&mut self, decls: &[&ast::Decl]) {
        let (mut n_workloads, mut n_targets, mut n_credentials) = (0u32, 0u32, 0u32);
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
                ast::Decl::Credential(credential) => {
                    n_credentials += 1;
                    let id = ir::CredentialId(n_credentials - 1);
                    (&credential.name, Declared::Credential(id))
                }
                ast::Decl::Condition(condition) => {
                    let id = ir::ConditionId(self.condition_names.len() as u32);
                    self.condition_names.push(condition.name.clone());
                    (&condition.name, Declared::Condition(id))
                }
                ast::Decl::Rule(rule) => (&rule.name, Declared::Rule),
                ast::Decl::Test(test) => (&test.name, Declared::Test),
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
        let keywords = ProviderKind::ALL.map(ProviderKind::keyword);
        let listed: Vec<String> = keywords.iter().map(|word| format!("`{word}`")).collect();
        let supported = format!("the trust provider kinds are {}", listed.join(", "));
        // Names people reach for, from the platforms' own vocabulary.
        let alias = match kind.name.as_str() {
            "github_actions" => Some(ProviderKind::Github),
            "gitlab_ci" => Some(ProviderKind::Gitlab),
            "k8s" => Some(ProviderKind::Kubernetes),
            "terraform_cloud" | "hcp_terraform" | "tfc" => Some(ProviderKind::Terraform),
            "local" | "unix" => Some(ProviderKind::Process),
            _ => None,
        };
        let help = match alias {
            Some(alias) => format!("this kind is called `{alias}`"),
            None => did_you_mean(&kind.name, keywords).unwrap_or(supported),
        };
        let message = format!("unknown trust provider kind `{}`", kind.name);
        let report = Report::new(
            Code::UnknownProviderKind,
            message,
            kind.span,
            "unknown kind",
        )
        .help(help);
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

    /// Reports `target` when an earlier target has its endpoint (protocol, host and port): a
    /// request that names the endpoint, as the proxy's do, could only ever reach the first.
    fn check_endpoint_is_free(&mut self, earlier: &[ir::Target], target: &ir::Target, at: Span) {
        let Some(first) = earlier.iter().find(|other| {
            other.protocol == target.protocol
                && other.port == target.port
                && other.host.eq_ignore_ascii_case(&target.host)
        }) else {
            return;
        };
        let endpoint = format!(
            "{}://{}:{}",
            target.protocol.keyword(),
            target.host.to_ascii_lowercase(),
            target.port
        );
        let message = format!(
            "targets `{}` and `{}` are the same endpoint, {endpoint}",
            first.name, target.name
        );
        let mut report = Report::new(Code::InvalidEndpoint, message, at, "declared again here")
            .help(
                "a request by endpoint reaches one target: declare it once, and tell requests \
                 apart in `when`, as with `request.resource like \"/v2/*\"`",
            );
        if let Some((_, first_at)) = self.names.get(&first.name) {
            report = report.label(*first_at, "first declared here");
        }
        self.report(report);
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
        let known = Protocol::ALL;
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
            ("host", ExprKind::Str(host)) => {
                if let Some((label, help)) = host_problem(host) {
                    let message = format!("`{host}` is not a host name or address");
                    let report =
                        Report::new(Code::InvalidFieldValue, message, span, label).help(help);
                    self.report(report);
                    return false;
                }
                out.host = host.clone();
            }
            ("database", ExprKind::Str(database))
                if database.is_empty() || database.contains('/') =>
            {
                // A request names `DATABASE/USER`: an empty name or one with a `/` could never
                // be told apart from another database's.
                let (message, label) = if database.is_empty() {
                    ("`database` must not be empty", "empty")
                } else {
                    ("`database` must not contain `/`", "contains `/`")
                };
                let report = Report::new(Code::InvalidFieldValue, message, span, label).help(
                    "name the database as PostgreSQL knows it; `request.resource` is \
                     `DATABASE/USER`",
                );
                self.report(report);
                return false;
            }
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
                let help = match value {
                    ExprKind::Str(text) if key == "port" && text.trim().parse::<u16>().is_ok() => {
                        Some(format!(
                            "write the number without quotes: `port = {}`",
                            text.trim()
                        ))
                    }
                    ExprKind::Int(number) if key != "port" => {
                        Some(format!("write it in quotes: `{key} = \"{number}\"`"))
                    }
                    _ => None,
                };
                self.report(Report::new(Code::TypeMismatch, message, span, label).help_opt(help));
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
                format!("not {} `{keyword}` field", protocol.article()),
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
        let mut credential = None;
        let annotations = self.check_annotations(&rule.annotations);
        let mut ok = annotations.is_some();
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
                ast::ClauseKind::Credential(name) => {
                    credential = self.credential_ref(rule, name, clause.span)
                }
            }
            ok &= match &clause.kind {
                ast::ClauseKind::Workload(_) => workload.is_some(),
                ast::ClauseKind::Target(_) => target.is_some(),
                ast::ClauseKind::When(_) => when.is_some(),
                ast::ClauseKind::Credential(_) => credential.is_some(),
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
            credential,
            annotations: annotations.unwrap_or_default(),
        })
    }

    /// The credential of a `credential NAME` clause; a `forbid` has none.
    fn credential_ref(
        &mut self,
        rule: &ast::RuleDecl,
        name: &Ident,
        clause: Span,
    ) -> Option<ir::CredentialId> {
        let found = match self.lookup(name, "credential")? {
            Declared::Credential(id) => id,
            _ => return None,
        };
        if rule.effect == ast::Effect::Forbid {
            let message = format!("forbid `{}` has a `credential` clause", rule.name.name);
            let report = Report::new(
                Code::CredentialOnForbid,
                message,
                clause,
                "a forbid issues nothing",
            )
            .label(rule.keyword, "this rule denies")
            .help("remove the clause, or give the credential in the permit this forbid overrides");
            self.report(report);
            return None;
        }
        Some(found)
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
                        (Declared::Workload(_), "workload")
                            | (Declared::Target(_), "target")
                            | (Declared::Credential(_), "credential")
                            | (Declared::Rule, "rule")
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
            Declared::Credential(_) => wanted == "credential",
            Declared::Rule => wanted == "rule",
            Declared::Condition(_) | Declared::Test => false,
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
            ExprKind::Duration(seconds) => {
                let seconds = i64::try_from(*seconds).unwrap_or(i64::MAX);
                Some((ir::Expr::Const(Value::Int(seconds)), Ty::Duration))
            }
            ExprKind::Range(..) => {
                let message = "a range can only follow `in`";
                let report = Report::new(
                    Code::InvalidRange,
                    message,
                    expr.span,
                    "range used as a value",
                )
                .help("test it with `VALUE in LOW..HIGH`");
                self.report(report);
                None
            }
            ExprKind::Set(_) => {
                let message = "a set can only follow `in`";
                let report =
                    Report::new(Code::InvalidSet, message, expr.span, "set used as a value")
                        .help("test membership with `VALUE in [ … ]`");
                self.report(report);
                None
            }
            ExprKind::Path(path) => self.check_read(path, expr.span, scope, guards),
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
            ExprKind::Timestamp(text) => self.check_timestamp(text, expr.span),
            ExprKind::Within(subject, window) => self.check_within(subject, window, scope, guards),
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
            collect_guards(lhs_checked, &self.condition_guards, &mut rhs_guards);
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
        let reported = self.reports.len();
        let outer = std::mem::take(&mut self.unguarded);
        let checked = self.check_comparison(lhs, op, rhs, span, scope, guards);
        let unguarded = std::mem::replace(&mut self.unguarded, outer);
        if self.reports.len() > reported || unguarded.is_empty() {
            // A type error in the comparison comes first; once it is fixed, the missing guard
            // is reported with help that quotes the corrected comparison.
            return checked;
        }
        self.reports.extend(unguarded);
        None
    }

    fn check_comparison(
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
        let equality = matches!(op, CompareOp::Eq | CompareOp::Ne | CompareOp::Assign { .. });
        if equality && bare_name(lhs).is_some() && matches!(rhs.kind, ExprKind::Path(_)) {
            // `acme == repository`: the right side's type, looked up without reporting, says
            // whether the name on the left is text without its quotes.
            let (reported, unguarded) = (self.reports.len(), self.unguarded.len());
            let rhs_ty = self
                .check_operand(rhs, scope, guards, span)
                .map(|(_, ty)| ty);
            self.reports.truncate(reported);
            self.unguarded.truncate(unguarded);
            self.text_fits = rhs_ty == Some(Ty::String);
        }
        let lhs_checked = self.check_operand(lhs, scope, guards, span);
        self.text_fits = false;
        match op {
            CompareOp::In => {
                let (lhs_expr, lhs_ty) = lhs_checked?;
                if let ExprKind::Range(low, high) = rhs.kind {
                    return self.check_in_range(lhs_expr, lhs_ty, lhs.span, (low, high), rhs.span);
                }
                if lhs_ty == Ty::Ip {
                    let networks = self.check_networks(rhs)?;
                    return Some((ir::Expr::InNetworks(Box::new(lhs_expr), networks), Ty::Bool));
                }
                let values = self.check_in(lhs_ty, lhs.span, rhs)?;
                Some((ir::Expr::In(Box::new(lhs_expr), values), Ty::Bool))
            }
            CompareOp::Matches => {
                let pattern = self.check_regex(rhs);
                let (lhs_expr, lhs_ty) = lhs_checked?;
                if lhs_ty != Ty::String {
                    let message = format!("`matches` applies to strings, not {}", lhs_ty.name());
                    let label = format!("this is {}", lhs_ty.name());
                    self.report(Report::new(Code::TypeMismatch, message, lhs.span, label));
                    return None;
                }
                Some((ir::Expr::Matches(Box::new(lhs_expr), pattern?), Ty::Bool))
            }
            CompareOp::Lt | CompareOp::Le | CompareOp::Gt | CompareOp::Ge => {
                let rhs_checked = self.check_operand(rhs, scope, guards, span);
                let (lhs_expr, lhs_ty) = lhs_checked?;
                let (rhs_expr, rhs_ty) = rhs_checked?;
                let ordered = matches!(lhs_ty, Ty::Int | Ty::Duration | Ty::Timestamp);
                if !ordered || lhs_ty != rhs_ty {
                    self.unordered(op, (lhs, lhs_ty), (rhs, rhs_ty));
                    return None;
                }
                let order = match op {
                    CompareOp::Lt => ir::OrderOp::Lt,
                    CompareOp::Le => ir::OrderOp::Le,
                    CompareOp::Gt => ir::OrderOp::Gt,
                    _ => ir::OrderOp::Ge,
                };
                let expr = ir::Expr::Order(order, Box::new(lhs_expr), Box::new(rhs_expr));
                Some((expr, Ty::Bool))
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
                if let Some((lhs_expr, Ty::Ip)) = &lhs_checked
                    && let ExprKind::Str(_) = rhs.kind
                {
                    // An address compared with a string literal: the string is one address.
                    let network = self.check_network(rhs)?;
                    let host_prefix = if network.addr.is_ipv4() { 32 } else { 128 };
                    if network.prefix < host_prefix {
                        let text = self.text(rhs.span);
                        let symbol = if op == CompareOp::Ne { "!=" } else { "==" };
                        let message = format!("`{symbol}` compares one address, not a range");
                        let membership = format!("{} in [{text}]", self.text(lhs.span));
                        let help = if op == CompareOp::Ne {
                            format!("test membership: `!({membership})`")
                        } else {
                            format!("test membership: `{membership}`")
                        };
                        let report =
                            Report::new(Code::TypeMismatch, message, rhs.span, "a CIDR range")
                                .help(help);
                        self.report(report);
                        return None;
                    }
                    let lhs_expr = Box::new(lhs_expr.clone());
                    let expr = ir::Expr::InNetworks(lhs_expr, vec![network]);
                    let expr = match op {
                        CompareOp::Ne => ir::Expr::Not(Box::new(expr)),
                        _ => expr,
                    };
                    return Some((expr, Ty::Bool));
                }
                self.text_fits =
                    matches!(lhs_checked, Some((_, Ty::String))) && bare_name(rhs).is_some();
                let rhs_checked = self.check_operand(rhs, scope, guards, span);
                self.text_fits = false;
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
            ExprKind::Path(path) => {
                let resolved = self.resolve(path, operand.span, scope)?;
                if let Some(claim) = resolved.optional_claim
                    && !guards.contains(&claim)
                {
                    let report = self.unguarded_report(operand.span, atom);
                    self.unguarded.push(report);
                }
                Some((resolved.expr, resolved.ty))
            }
            _ => self.check_expr(operand, scope, guards),
        }
    }

    fn unordered(&mut self, op: CompareOp, lhs: (&ast::Expr, Ty), rhs: (&ast::Expr, Ty)) {
        let ((lhs, lhs_ty), (rhs, rhs_ty)) = (lhs, rhs);
        let symbol = op.symbol();
        let orderable = |ty: Ty| matches!(ty, Ty::Int | Ty::Duration | Ty::Timestamp);
        let (message, span, ty) = if !orderable(lhs_ty) {
            let message = format!(
                "`{symbol}` orders integers, durations and timestamps, not {}",
                plural(lhs_ty)
            );
            (message, lhs.span, lhs_ty)
        } else if !orderable(rhs_ty) {
            let message = format!(
                "`{symbol}` orders integers, durations and timestamps, not {}",
                plural(rhs_ty)
            );
            (message, rhs.span, rhs_ty)
        } else {
            let message = format!("cannot compare {} with {}", lhs_ty.name(), rhs_ty.name());
            (message, rhs.span, rhs_ty)
        };
        let report = Report::new(
            Code::TypeMismatch,
            message,
            span,
            format!("this is {}", ty.name()),
        );
        let report = if span == rhs.span && lhs_ty != rhs_ty {
            report.label(lhs.span, format!("this is {}", lhs_ty.name()))
        } else {
            report
        };
        self.report(report);
    }

    /// The networks of `ADDRESS in [ "10.0.0.0/8", "192.0.2.7", … ]`, each string checked.
    fn check_networks(&mut self, rhs: &ast::Expr) -> Option<Vec<ir::Network>> {
        let ExprKind::Set(items) = &rhs.kind else {
            let report = Report::new(Code::InvalidSet, "`in` needs a set", rhs.span, "not a set")
                .help("write the networks as a set of strings: `[\"10.0.0.0/8\", \"192.0.2.7\"]`");
            self.report(report);
            return None;
        };
        if self.names_in_set(items, Some(Ty::Ip)) {
            return None;
        }
        let mut networks = Vec::new();
        let mut ok = true;
        for item in items {
            match self.check_network(item) {
                Some(network) if !networks.contains(&network) => networks.push(network),
                Some(_) => {}
                None => ok = false,
            }
        }
        ok.then_some(networks)
    }

    /// A string literal that holds an IP address or a CIDR range.
    fn check_network(&mut self, item: &ast::Expr) -> Option<ir::Network> {
        let ExprKind::Str(text) = &item.kind else {
            let found = literal_type_name(&item.kind);
            let message = format!("an IP address is compared with strings, not {found}");
            let report = Report::new(Code::TypeMismatch, message, item.span, "not a string")
                .help("write the address or range as a string: `\"10.0.0.0/8\"`");
            self.report(report);
            return None;
        };
        let error = match ir::Network::parse(text) {
            Ok(network) => return Some(network),
            Err(error) => error,
        };
        let message = format!("`{text}` is not an IP address or CIDR range");
        let (label, help) = match error {
            ir::NetworkError::NotAnAddress => (
                "not an address".to_owned(),
                "write an IPv4 or IPv6 address, optionally with a prefix length: \
                 `\"192.0.2.7\"`, `\"10.0.0.0/8\"`, `\"2001:db8::/32\"`"
                    .to_owned(),
            ),
            ir::NetworkError::BadPrefix { max } => (
                "bad prefix length".to_owned(),
                format!("the prefix length is a number from 0 to {max}"),
            ),
            ir::NetworkError::HostBits { canonical } => (
                "bits set beyond the prefix".to_owned(),
                format!("the network is written `\"{canonical}\"`"),
            ),
        };
        let report = Report::new(Code::InvalidAddress, message, item.span, label).help(help);
        self.report(report);
        None
    }

    fn check_in_range(
        &mut self,
        lhs_expr: ir::Expr,
        lhs_ty: Ty,
        lhs_at: Span,
        (low, high): (i64, i64),
        range_at: Span,
    ) -> Option<(ir::Expr, Ty)> {
        if lhs_ty != Ty::Int {
            let message = format!("a range holds integers, not {}", plural(lhs_ty));
            let report = Report::new(
                Code::TypeMismatch,
                message,
                lhs_at,
                format!("this is {}", lhs_ty.name()),
            )
            .label(range_at, "a range of integers");
            self.report(report);
            return None;
        }
        if low > high {
            let message = format!("range `{low}..{high}` is empty");
            let report = Report::new(
                Code::InvalidRange,
                message,
                range_at,
                "starts after its end",
            )
            .help(format!("write the smaller bound first: `{high}..{low}`"));
            self.report(report);
            return None;
        }
        Some((ir::Expr::InRange(Box::new(lhs_expr), low, high), Ty::Bool))
    }

    /// The pattern of `matches`, which must be a string literal holding a valid regular
    /// expression; an error points into the string where the regex parser stopped.
    fn check_regex(&mut self, rhs: &ast::Expr) -> Option<String> {
        let ExprKind::Str(pattern) = &rhs.kind else {
            let found = literal_type_name(&rhs.kind);
            let message = format!("`matches` needs a string pattern, found {found}");
            let report = Report::new(
                Code::TypeMismatch,
                message,
                rhs.span,
                "not a string literal",
            )
            .help("write the regular expression as a string, for example `\"^v[0-9]+$\"`");
            self.report(report);
            return None;
        };
        let error = match crate::bundle::compile_regex(pattern) {
            Ok(_) => return Some(pattern.clone()),
            Err(error) => error,
        };
        let (span, label) = self.regex_error_span(rhs, pattern, &error);
        let message = "invalid regular expression";
        let help = match &error {
            regex::Error::CompiledTooBig(_) => {
                "the pattern compiles too large; simplify it or split it".to_owned()
            }
            _ => "Gate uses the syntax of the Rust `regex` crate, without look-around or \
                  backreferences"
                .to_owned(),
        };
        self.report(Report::new(Code::InvalidRegex, message, span, label).help(help));
        None
    }

    /// Where in the source a regex error sits: the span the regex parser names, mapped back
    /// through the string literal when it holds no escapes, else the whole literal.
    fn regex_error_span(
        &self,
        rhs: &ast::Expr,
        pattern: &str,
        error: &regex::Error,
    ) -> (Span, String) {
        let detail = error.to_string();
        let kind_line = detail
            .lines()
            .rev()
            .find(|line| line.starts_with("error: "))
            .map(|line| line.trim_start_matches("error: ").to_owned())
            .unwrap_or_else(|| "invalid here".to_owned());
        let literal = self.text(rhs.span);
        let verbatim = literal.len() == pattern.len() + 2 && !pattern.contains('\n');
        match caret_range(&detail, pattern) {
            Some((start, end)) if verbatim => {
                let start = rhs.span.start + 1 + start;
                let end = (rhs.span.start + 1 + end).max(start + 1);
                let span = Span::new(rhs.span.file, start, end.min(rhs.span.end - 1));
                (span, kind_line)
            }
            _ => (rhs.span, kind_line),
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
        if lhs_ty == Ty::Ip || rhs_ty == Ty::Ip {
            let (ip_side, other) = if lhs_ty == Ty::Ip {
                (lhs, rhs)
            } else {
                (rhs, lhs)
            };
            let message = format!("`{symbol}` compares an IP address only with a string literal");
            let help = format!(
                "write `{} {symbol} \"192.0.2.7\"`, or test `in [\"10.0.0.0/8\"]`",
                self.text(ip_side.span)
            );
            let label = format!(
                "this is {}",
                if other.span == lhs.span {
                    lhs_ty
                } else {
                    rhs_ty
                }
                .name()
            );
            let report = Report::new(Code::TypeMismatch, message, other.span, label).help(help);
            self.report(report);
            return None;
        }
        if lhs_ty == rhs_ty {
            return Some(());
        }
        let message = format!("cannot compare {} with {}", lhs_ty.name(), rhs_ty.name());
        let help = match (&rhs.kind, lhs_ty) {
            (ExprKind::Int(value), Ty::String) if is_request_or_target_field(lhs) => Some(format!(
                "`{}` is a string: write `\"{value}\"`",
                self.text(lhs.span)
            )),
            (ExprKind::Int(value), Ty::String) => Some(format!(
                "claims of this kind are strings: write `\"{value}\"`"
            )),
            (ExprKind::Bool(value), Ty::String) => Some(format!(
                "`{}` holds the text `\"{value}\"`: write it with quotes",
                self.text(lhs.span)
            )),
            (ExprKind::Str(text), Ty::Int) if text.trim().parse::<i64>().is_ok() => Some(format!(
                "`{}` is an integer: write `{}` without quotes",
                self.text(lhs.span),
                text.trim()
            )),
            (ExprKind::Str(text), Ty::Bool) if matches!(text.as_str(), "true" | "false") => {
                Some(format!(
                    "`{}` is a boolean: write `{text}` without quotes",
                    self.text(lhs.span)
                ))
            }
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
            let element = match bare_name(rhs) {
                Some(name) if matches!(lhs_ty, Ty::String | Ty::StringSet) => format!("\"{name}\""),
                _ => self.text(rhs.span).to_owned(),
            };
            let report = Report::new(Code::InvalidSet, "`in` needs a set", rhs.span, "not a set")
                .help(format!("write a set of literals: `[{element}]`"));
            self.report(report);
            return None;
        };
        let wanted = if lhs_ty == Ty::StringSet {
            Ty::String
        } else {
            lhs_ty
        };
        if self.names_in_set(items, Some(wanted)) {
            return None;
        }
        let (values, element_ty) = self.set_values(items)?;
        let Some(element_ty) = element_ty else {
            return Some(values);
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

    /// Reports every name written as an element of a set, where only literals are values, with
    /// help for the type the set should hold; whether there was any.
    pub(crate) fn names_in_set(&mut self, items: &[ast::Expr], wanted: Option<Ty>) -> bool {
        let mut found = false;
        for item in items {
            let Some(name) = bare_name(item) else {
                continue;
            };
            found = true;
            let help = match wanted {
                Some(Ty::String | Ty::StringSet) => {
                    format!("to write the text, quote it: `\"{name}\"`")
                }
                Some(Ty::Int) => "a set of integers holds numbers, such as `[80, 443]`".to_owned(),
                Some(Ty::Ip) => format!("write the address or range as a string: `\"{name}\"`"),
                _ => "a set holds literals: strings in quotes, integers, durations, `true` or \
                      `false`"
                    .to_owned(),
            };
            let message = format!("`{name}` in a set is a name, not a value");
            let report =
                Report::new(Code::InvalidSet, message, item.span, "not a literal").help(help);
            self.report(report);
        }
        found
    }

    /// The literals of a set, deduplicated in source order, and their one type (none for an
    /// empty set).
    fn set_values(&mut self, items: &[ast::Expr]) -> Option<(Vec<Value>, Option<Ty>)> {
        let mut values: Vec<Value> = Vec::new();
        let mut first: Option<(Ty, Span)> = None;
        for item in items {
            let (value, ty) = match &item.kind {
                ExprKind::Str(text) => (Value::String(text.clone()), Ty::String),
                ExprKind::Int(number) => (Value::Int(*number), Ty::Int),
                ExprKind::Bool(flag) => (Value::Bool(*flag), Ty::Bool),
                ExprKind::Duration(seconds) => {
                    let seconds = i64::try_from(*seconds).unwrap_or(i64::MAX);
                    (Value::Int(seconds), Ty::Duration)
                }
                // The grammar allows only literals in a set; anything else is a bug, and is
                // reported rather than dropped.
                _ => {
                    let message = "a set holds literals only";
                    let report = Report::new(Code::InvalidSet, message, item.span, "not a literal");
                    self.report(report);
                    return None;
                }
            };
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
        Some((values, first.map(|(ty, _)| ty)))
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

    /// A path read as a value of its own, outside any comparison.
    fn check_read(
        &mut self,
        path: &[Ident],
        span: Span,
        scope: Scope,
        guards: &[(ProviderKind, ClaimId)],
    ) -> Option<(ir::Expr, Ty)> {
        let resolved = self.resolve(path, span, scope)?;
        if let Some(claim) = resolved.optional_claim
            && !guards.contains(&claim)
        {
            let report = self.unguarded_report(span, span);
            self.report(report);
            return None;
        }
        Some((resolved.expr, resolved.ty))
    }

    /// The optional claim at `span` read without a guard, in the expression `atom`.
    fn unguarded_report(&self, span: Span, atom: Span) -> Report {
        let shown = self.text(span);
        let message = format!("optional claim `{shown}` is read without a `has` guard");
        let help = format!("guard it: `has {shown} && {}`", self.text(atom));
        let label = "not every caller carries this claim";
        Report::new(Code::UnguardedOptionalClaim, message, span, label).help(help)
    }

    fn check_has(&mut self, path: &[Ident], span: Span, scope: Scope) -> Option<(ir::Expr, Ty)> {
        let resolved = self.resolve(path, span, scope)?;
        let expr = match resolved.expr {
            ir::Expr::Claim { kind, claim } => ir::Expr::HasClaim { kind, claim },
            ir::Expr::Request(field) if field != RequestField::Time => ir::Expr::HasRequest(field),
            _ => {
                let shown = self.text(span);
                let message = format!("`has` does not apply to `{shown}`");
                let report = Report::new(Code::InvalidHas, message, span, "always present")
                    .help("`has` tests claims and the fields of `request`");
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
                let report =
                    Report::new(Code::MisplacedName, message, span, "not a claim").help(format!(
                        "{} `{kind}` alternative reads the caller's claims only; test this in a \
                         rule's `when`",
                        kind.article()
                    ));
                self.report(report);
                None
            }
            ("request", _) if !rest.is_empty() => self.resolve_request(rest, span),
            ("target", _) if !rest.is_empty() => self.resolve_target(rest, span),
            ("client", _) if !rest.is_empty() => self.resolve_client(rest, span),
            (_, Scope::Alternative(kind)) if rest.is_empty() => self.resolve_claim(kind, head),
            (_, Scope::When) if rest.is_empty() => self.resolve_condition(head, span),
            _ => {
                self.unknown_name(head, span, rest.is_empty());
                None
            }
        }
    }

    /// A bare name in `when` or a condition: a condition, read as a bool.
    fn resolve_condition(&mut self, name: &Ident, span: Span) -> Option<Resolved> {
        let id = match self.names.get(&name.name) {
            Some((Declared::Condition(id), _)) => *id,
            Some((Declared::Broken, _)) => return None,
            Some(&(declared, declared_at)) => {
                let what = declared.describe();
                let message = format!("`{}` is {what}, not a condition", name.name);
                let report =
                    Report::new(Code::WrongDeclarationKind, message, span, "not a condition")
                        .label(declared_at, format!("declared as {what} here"));
                self.report(report);
                return None;
            }
            None => {
                self.unknown_name(name, span, true);
                return None;
            }
        };
        Some(Resolved {
            expr: ir::Expr::Condition(id),
            ty: Ty::Bool,
            optional_claim: None,
        })
    }

    fn unknown_name(&mut self, head: &Ident, span: Span, bare: bool) {
        let shown = self.text(span);
        let owner = ProviderKind::ALL
            .into_iter()
            .find(|kind| self.custom_claims.resolve(*kind, &head.name).is_some());
        let (message, help) = match owner {
            Some(kind) if bare => (
                format!("claim `{shown}` needs its trust provider kind here"),
                format!("in `when`, write `client.{kind}.{shown}`"),
            ),
            _ => {
                let conditions = self.condition_names.iter().map(|name| name.name.as_str());
                let help = did_you_mean(&head.name, conditions)
                    .or_else(|| self.text_fits.then(|| quote_it(&head.name)))
                    .filter(|_| bare)
                    .or_else(|| {
                        // `requst.action`: a misspelt `request`, `target` or `client`.
                        let rest = shown.strip_prefix(head.name.as_str())?;
                        let roots = ["request", "target", "client"];
                        let root = roots.into_iter().find(|root| {
                            did_you_mean(&head.name, [*root]).is_some() && *root != head.name
                        })?;
                        Some(format!("did you mean `{root}{rest}`?"))
                    });
                (
                    format!("unknown name `{shown}`"),
                    help.unwrap_or_else(|| {
                        "expressions read `request.*`, `target.*`, `client.KIND.claim`, \
                         conditions by name and, inside a workload, bare claims"
                            .to_owned()
                    }),
                )
            }
        };
        let report =
            Report::new(Code::MisplacedName, message, span, "cannot be read here").help(help);
        self.report(report);
    }

    fn resolve_claim(&mut self, kind: ProviderKind, name: &Ident) -> Option<Resolved> {
        let Some((claim, ty, required)) = self.custom_claims.resolve(kind, &name.name) else {
            let message = format!("unknown claim `{}` for `{kind}`", name.name);
            let names = self.custom_claims.names(kind);
            let nearest = did_you_mean(&name.name, names.iter().copied());
            let help = nearest.or_else(|| self.text_fits.then(|| quote_it(&name.name)));
            let help = help.unwrap_or_else(|| {
                let listed = if names.len() > MAX_LISTED_CLAIMS {
                    format!("docs/gate.md lists the claims of `{kind}`")
                } else {
                    let listed: Vec<String> =
                        names.iter().map(|name| format!("`{name}`")).collect();
                    format!("the claims of `{kind}` are {}", listed.join(", "))
                };
                if kind == CUSTOM_CLAIMS_KIND {
                    return format!(
                        "{listed}; declare any other claim in the `custom_claims` of an `oidc` \
                         trust provider (`policyc check --claims FILE`)"
                    );
                }
                listed
            });
            let label = format!("not {} `{kind}` claim", kind.article());
            let report = Report::new(Code::UnknownClaim, message, name.span, label).help(help);
            self.report(report);
            return None;
        };
        Some(Resolved {
            expr: ir::Expr::Claim { kind, claim },
            ty: Ty::of_claim(ty),
            optional_claim: (!required).then_some((kind, claim)),
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
            ("source_ip", RequestField::SourceIp),
            ("time", RequestField::Time),
        ];
        let field = self.field_of("request", &fields, rest, span)?;
        let ty = match field {
            RequestField::SourceIp => Ty::Ip,
            RequestField::Time => Ty::Timestamp,
            _ => Ty::String,
        };
        Some(Resolved {
            expr: ir::Expr::Request(field),
            ty,
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

/// The type of a credential field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldTy {
    String,
    StringSet,
    Duration,
}

impl FieldTy {
    fn name(self) -> &'static str {
        match self {
            FieldTy::String => "a string",
            FieldTy::StringSet => "a set of strings",
            FieldTy::Duration => "a duration",
        }
    }
}

/// The fields of each credential kind: name, type, required.
fn credential_fields(kind: &str) -> &'static [(&'static str, FieldTy, bool)] {
    match kind {
        "jwt" => &[
            ("audience", FieldTy::String, true),
            ("copy_claims", FieldTy::StringSet, false),
            ("ttl", FieldTy::Duration, true),
        ],
        "static" => &[
            ("env", FieldTy::String, false),
            ("file", FieldTy::String, false),
            ("ttl", FieldTy::Duration, false),
        ],
        "oauth_client_credentials" => &[
            ("token_url", FieldTy::String, true),
            ("client_id", FieldTy::String, true),
            ("scopes", FieldTy::StringSet, false),
            ("ttl", FieldTy::Duration, true),
        ],
        "postgres_role" => &[
            ("grant", FieldTy::StringSet, true),
            ("ttl", FieldTy::Duration, true),
        ],
        _ => &[],
    }
}

/// A credential field's checked value.
#[derive(Debug, Clone)]
enum FieldValue {
    String(String),
    StringSet(Vec<String>),
    Duration(u64),
}

/// The fields of one credential block, checked one by one.
#[derive(Debug, Default)]
struct CredentialFields {
    values: HashMap<&'static str, (FieldValue, Span)>,
}

impl CredentialFields {
    fn string(&self, key: &str) -> Option<String> {
        match self.values.get(key) {
            Some((FieldValue::String(text), _)) => Some(text.clone()),
            _ => None,
        }
    }

    fn strings(&self, key: &str) -> Option<Vec<String>> {
        match self.values.get(key) {
            Some((FieldValue::StringSet(items), _)) => Some(items.clone()),
            _ => None,
        }
    }

    fn duration(&self, key: &str) -> Option<u64> {
        match self.values.get(key) {
            Some((FieldValue::Duration(seconds), _)) => Some(*seconds),
            _ => None,
        }
    }
}

impl Checker<'_> {
    // Conditions.

    fn check_condition_decl(&mut self, condition: &ast::ConditionDecl) -> ir::Condition {
        let body = self
            .check_condition(&condition.body, Scope::When)
            .unwrap_or(ir::Expr::Const(Value::Bool(false)));
        ir::Condition {
            name: condition.name.name.clone(),
            body,
        }
    }

    /// Reports every cycle among the conditions, once each, and every chain of references
    /// deeper than [`MAX_CONDITION_DEPTH`].
    fn check_condition_graph(&mut self, conditions: &[ir::Condition]) {
        let edges: Vec<Vec<usize>> = conditions
            .iter()
            .map(|condition| {
                let mut refs = Vec::new();
                condition_refs(&condition.body, &mut refs);
                refs
            })
            .collect();
        let mut in_reported_cycle = vec![false; conditions.len()];
        for start in 0..conditions.len() {
            if in_reported_cycle.get(start).copied().unwrap_or(true) {
                continue;
            }
            if let Some(cycle) = find_cycle(&edges, start) {
                for node in &cycle {
                    if let Some(slot) = in_reported_cycle.get_mut(*node) {
                        *slot = true;
                    }
                }
                self.report_cycle(&cycle);
            }
        }
        if in_reported_cycle.contains(&true) {
            return;
        }
        let mut depths = vec![0usize; conditions.len()];
        for node in 0..conditions.len() {
            condition_depth(&edges, node, &mut depths);
        }
        let deepest = depths.iter().enumerate().max_by_key(|(_, depth)| **depth);
        if let Some((node, depth)) = deepest
            && *depth > MAX_CONDITION_DEPTH
            && let Some(name) = self.condition_names.get(node).cloned()
        {
            let message = format!(
                "condition `{}` refers to conditions {depth} levels deep",
                name.name
            );
            let report =
                Report::new(Code::ConditionTooDeep, message, name.span, "too deep").help(format!(
                    "conditions may nest at most {MAX_CONDITION_DEPTH} levels; combine some \
                     of them into one"
                ));
            self.report(report);
        }
    }

    fn report_cycle(&mut self, cycle: &[usize]) {
        let names: Vec<Ident> = cycle
            .iter()
            .filter_map(|node| self.condition_names.get(*node).cloned())
            .collect();
        let Some(first) = names.first() else {
            return;
        };
        let path: Vec<String> = names
            .iter()
            .chain([first])
            .map(|name| format!("`{}`", name.name))
            .collect();
        let message = format!(
            "conditions refer to each other in a cycle: {}",
            path.join(" → ")
        );
        let mut report = Report::new(
            Code::ConditionCycle,
            message,
            first.span,
            "this condition depends on itself",
        );
        for other in names.iter().skip(1) {
            report = report.label(other.span, "part of the cycle");
        }
        let help = "a condition cannot depend on itself; write the shared part as its own \
                    condition and refer to it from both";
        self.report(report.help(help));
    }

    // Credentials.

    fn check_credential(&mut self, credential: &ast::CredentialDecl) -> Option<ir::Credential> {
        let name = &credential.name;
        let (first, rest) = match credential.blocks.split_first() {
            Some(split) => split,
            None => {
                let message = format!("credential `{}` has no kind block", name.name);
                let report =
                    Report::new(Code::InvalidCredential, message, name.span, "no kind block")
                        .help("add one, for example `jwt { audience = \"billing\" ttl = 15m }`");
                self.report(report);
                return None;
            }
        };
        if let Some(second) = rest.first() {
            let message = format!("credential `{}` has several kind blocks", name.name);
            let report = Report::new(
                Code::InvalidCredential,
                message,
                second.span,
                "second block",
            )
            .label(first.span, "first block")
            .help("a credential has one kind; declare another credential for the other");
            self.report(report);
        }
        let kind = first.protocol.name.as_str();
        if !ir::CredentialKind::KEYWORDS.contains(&kind) {
            let message = format!("unknown credential kind `{kind}`");
            let listed: Vec<String> = ir::CredentialKind::KEYWORDS
                .iter()
                .map(|keyword| format!("`{keyword}`"))
                .collect();
            let help = did_you_mean(kind, ir::CredentialKind::KEYWORDS)
                .unwrap_or_else(|| format!("the credential kinds are {}", listed.join(", ")));
            let span = first.protocol.span;
            let report =
                Report::new(Code::InvalidCredential, message, span, "unknown kind").help(help);
            self.report(report);
            return None;
        }
        let fields = self.credential_fields(kind, first)?;
        self.credential_kind(&name.name, first, &fields)
    }

    /// Checks each `key = value` of a credential block against its kind's fields.
    fn credential_fields(&mut self, kind: &str, block: &ast::Endpoint) -> Option<CredentialFields> {
        let allowed = credential_fields(kind);
        let mut fields = CredentialFields::default();
        let mut ok = true;
        for field in &block.fields {
            let key = field.key.name.as_str();
            let Some(&(known, ty, _)) = allowed.iter().find(|(name, _, _)| *name == key) else {
                let names = allowed.iter().map(|(name, _, _)| *name);
                let listed: Vec<String> = names.clone().map(|name| format!("`{name}`")).collect();
                let help = did_you_mean(key, names).unwrap_or_else(|| {
                    format!(
                        "the fields of `{kind}` credentials are {}",
                        listed.join(", ")
                    )
                });
                let message = format!("`{key}` is not a field of `{kind}` credentials");
                let report = Report::new(
                    Code::InvalidCredentialField,
                    message,
                    field.key.span,
                    "unknown",
                )
                .help(help);
                self.report(report);
                ok = false;
                continue;
            };
            if let Some((_, first)) = fields.values.get(known) {
                let message = format!("field `{key}` is given twice");
                let report = Report::new(
                    Code::InvalidCredentialField,
                    message,
                    field.key.span,
                    "again",
                )
                .label(*first, "first given here");
                self.report(report);
                ok = false;
                continue;
            }
            match self.credential_value(known, ty, &field.value) {
                Some(value) => {
                    fields.values.insert(known, (value, field.key.span));
                }
                None => ok = false,
            }
        }
        ok.then_some(fields)
    }

    fn credential_value(
        &mut self,
        key: &str,
        ty: FieldTy,
        value: &ast::Expr,
    ) -> Option<FieldValue> {
        let span = value.span;
        let checked = match (ty, &value.kind) {
            (FieldTy::String, ExprKind::Str(text)) => Some(FieldValue::String(text.clone())),
            (FieldTy::Duration, ExprKind::Duration(seconds)) => {
                Some(FieldValue::Duration(*seconds))
            }
            (FieldTy::StringSet, ExprKind::Set(items)) => {
                if self.names_in_set(items, Some(Ty::String)) {
                    return None;
                }
                let strings: Option<Vec<String>> = items
                    .iter()
                    .map(|item| match &item.kind {
                        ExprKind::Str(text) => Some(text.clone()),
                        _ => None,
                    })
                    .collect();
                strings.map(|mut strings| {
                    let mut seen = std::collections::HashSet::new();
                    strings.retain(|item| seen.insert(item.clone()));
                    FieldValue::StringSet(strings)
                })
            }
            _ => None,
        };
        if checked.is_some() {
            return self.credential_value_ok(key, checked?, span);
        }
        let found = literal_type_name(&value.kind);
        let message = format!("`{key}` must be {}, found {found}", ty.name());
        let help = match (ty, &value.kind) {
            (FieldTy::Duration, ExprKind::Int(seconds)) => {
                Some(format!("give the unit: `{key} = {seconds}s`"))
            }
            (FieldTy::Duration, ExprKind::Str(text)) if is_duration_literal(text) => Some(format!(
                "a duration is written without quotes: `{key} = {text}`"
            )),

            (FieldTy::StringSet, ExprKind::Str(text)) => {
                Some(format!("write a set: `{key} = [\"{text}\"]`"))
            }
            (FieldTy::StringSet, _) => Some("every element is a string".to_owned()),
            _ => None,
        };
        let report = Report::new(
            Code::TypeMismatch,
            message,
            span,
            format!("this is {found}"),
        )
        .help_opt(help);
        self.report(report);
        None
    }

    /// Whether some trust provider kind has a claim `name` that policies can read: built in,
    /// or declared as a custom claim.
    fn is_claim_of_some_kind(&self, name: &str) -> bool {
        ProviderKind::ALL
            .iter()
            .any(|kind| self.custom_claims.resolve(*kind, name).is_some())
    }

    /// Refuses values of the right type that cannot work.
    fn credential_value_ok(
        &mut self,
        key: &str,
        value: FieldValue,
        span: Span,
    ) -> Option<FieldValue> {
        let problem = match (key, &value) {
            ("audience" | "client_id", FieldValue::String(text)) if text.is_empty() => {
                Some((format!("`{key}` is empty"), "write a value".to_owned()))
            }
            ("token_url", FieldValue::String(url))
                if !url.starts_with("https://") && !is_loopback_http(url) =>
            {
                Some((
                    "`token_url` must be an `https://` URL, or `http://` to a loopback address"
                        .to_owned(),
                    "client secrets travel to this URL; write `https://…`".to_owned(),
                ))
            }
            ("env", FieldValue::String(var)) if !is_env_name(var) => Some((
                format!("`{var}` is not an environment variable name"),
                "write letters, digits and `_`, not starting with a digit: `BILLING_TOKEN`"
                    .to_owned(),
            )),
            ("file", FieldValue::String(path)) if !path.starts_with('/') => Some((
                "`file` must be an absolute path".to_owned(),
                format!("write `file = \"/{path}\"`"),
            )),
            ("grant", FieldValue::StringSet(roles)) if roles.is_empty() => Some((
                "`grant` is empty".to_owned(),
                "name the roles to grant: `grant = [\"orders_rw\"]`".to_owned(),
            )),
            ("copy_claims", FieldValue::StringSet(names))
                if names
                    .iter()
                    .any(|name| ir::MINTED_CLAIMS.contains(&name.as_str())) =>
            {
                let name = names
                    .iter()
                    .find(|name| ir::MINTED_CLAIMS.contains(&name.as_str()))
                    .map_or("", String::as_str);
                Some((
                    format!("`copy_claims` names `{name}`, which Portcullis sets itself"),
                    format!(
                        "a minted token's {} are its own; remove `{name}`",
                        ir::MINTED_CLAIMS.join(", ")
                    ),
                ))
            }
            ("copy_claims", FieldValue::StringSet(names))
                if names
                    .iter()
                    .any(|name| !name.is_empty() && !self.is_claim_of_some_kind(name)) =>
            {
                let name = names
                    .iter()
                    .find(|name| !name.is_empty() && !self.is_claim_of_some_kind(name))
                    .map_or("", String::as_str);
                let known: Vec<&str> = ProviderKind::ALL
                    .iter()
                    .flat_map(|kind| self.custom_claims.names(*kind))
                    .collect();
                let help = did_you_mean(name, known).unwrap_or_else(|| {
                    "name claims as policies read them (`repository`, `namespace`, …); declare \
                     others in the `custom_claims` of an `oidc` trust provider"
                        .to_owned()
                });
                Some((
                    format!(
                        "`copy_claims` names `{name}`, which is no claim of any trust provider"
                    ),
                    help,
                ))
            }
            ("grant" | "scopes" | "copy_claims", FieldValue::StringSet(items))
                if items.iter().any(String::is_empty) =>
            {
                Some((
                    format!("`{key}` holds an empty string"),
                    "remove it".to_owned(),
                ))
            }
            _ => None,
        };
        let Some((message, help)) = problem else {
            return Some(value);
        };
        let report = Report::new(
            Code::InvalidCredentialField,
            message,
            span,
            "not acceptable",
        )
        .help(help);
        self.report(report);
        None
    }

    /// Builds the credential once its fields are checked; reports missing required fields.
    fn credential_kind(
        &mut self,
        name: &str,
        block: &ast::Endpoint,
        fields: &CredentialFields,
    ) -> Option<ir::Credential> {
        let kind = block.protocol.name.as_str();
        let mut ok = true;
        for (field, ty, required) in credential_fields(kind) {
            if *required && !fields.values.contains_key(field) {
                let example = match ty {
                    FieldTy::String => format!("{field} = \"…\""),
                    FieldTy::StringSet => format!("{field} = [\"…\"]"),
                    FieldTy::Duration => format!("{field} = 15m"),
                };
                let message = format!("credential `{name}` has no `{field}`");
                let report = Report::new(
                    Code::MissingCredentialField,
                    message,
                    block.protocol.span,
                    format!("`{kind}` needs `{field}`"),
                )
                .help(format!("add `{example}` inside `{kind} {{ … }}`"));
                self.report(report);
                ok = false;
            }
        }
        let kind = match kind {
            "jwt" => ir::CredentialKind::Jwt {
                audience: fields.string("audience").unwrap_or_default(),
                copy_claims: fields.strings("copy_claims").unwrap_or_default(),
            },
            "static" => ir::CredentialKind::Static(self.static_source(name, block, fields)?),
            "oauth_client_credentials" => ir::CredentialKind::OauthClientCredentials {
                token_url: fields.string("token_url").unwrap_or_default(),
                client_id: fields.string("client_id").unwrap_or_default(),
                scopes: fields.strings("scopes").unwrap_or_default(),
            },
            _ => ir::CredentialKind::PostgresRole {
                grant: fields.strings("grant").unwrap_or_default(),
            },
        };
        ok.then(|| ir::Credential {
            name: name.to_owned(),
            kind,
            ttl_s: fields.duration("ttl"),
        })
    }

    fn static_source(
        &mut self,
        name: &str,
        block: &ast::Endpoint,
        fields: &CredentialFields,
    ) -> Option<ir::StaticSource> {
        let env = fields.values.get("env");
        let file = fields.values.get("file");
        match (env, file) {
            (Some((FieldValue::String(var), _)), None) => Some(ir::StaticSource::Env(var.clone())),
            (None, Some((FieldValue::String(path), _))) => {
                Some(ir::StaticSource::File(path.clone()))
            }
            (Some((_, env_span)), Some((_, file_span))) => {
                let message = format!("credential `{name}` has both `env` and `file`");
                let report = Report::new(
                    Code::InvalidCredentialField,
                    message,
                    *file_span,
                    "second source",
                )
                .label(*env_span, "first source")
                .help("a static secret comes from one place; keep `env` or `file`");
                self.report(report);
                None
            }
            _ => {
                let message = format!("credential `{name}` has neither `env` nor `file`");
                let report = Report::new(
                    Code::MissingCredentialField,
                    message,
                    block.protocol.span,
                    "no source for the secret",
                )
                .help("add `env = \"VARIABLE\"` or `file = \"/path/to/secret\"`");
                self.report(report);
                None
            }
        }
    }

    // Annotations.

    fn check_annotations(&mut self, annotations: &[ast::Annotation]) -> Option<ir::Annotations> {
        let mut out = ir::Annotations::default();
        let mut seen: HashMap<&str, Span> = HashMap::new();
        let mut ok = true;
        for annotation in annotations {
            let name = annotation.name.name.as_str();
            if let Some(first) = seen.insert(name, annotation.name.span) {
                let message = format!("annotation `@{name}` is given twice");
                let report = Report::new(
                    Code::InvalidAnnotation,
                    message,
                    annotation.span,
                    "given again",
                )
                .label(first, "first given here");
                self.report(report);
                ok = false;
                continue;
            }
            match name {
                "description" => out.description = Some(annotation.value.clone()),
                "severity" => match ir::Severity::ALL
                    .into_iter()
                    .find(|severity| severity.keyword() == annotation.value)
                {
                    Some(severity) => out.severity = Some(severity),
                    None => {
                        let message = format!("unknown severity `{}`", annotation.value);
                        let keywords = ir::Severity::ALL.map(ir::Severity::keyword);
                        let help = did_you_mean(&annotation.value, keywords).unwrap_or_else(|| {
                            "the severities are `low`, `medium`, `high` and `critical`".to_owned()
                        });
                        let span = annotation.value_span;
                        let report = Report::new(Code::InvalidAnnotation, message, span, "unknown")
                            .help(help);
                        self.report(report);
                        ok = false;
                    }
                },
                _ => {
                    let message = format!("unknown annotation `@{name}`");
                    let help =
                        did_you_mean(name, ["description", "severity"]).unwrap_or_else(|| {
                            "the annotations are `@description(\"…\")` and `@severity(\"…\")`"
                                .to_owned()
                        });
                    let span = annotation.name.span;
                    let report =
                        Report::new(Code::InvalidAnnotation, message, span, "unknown annotation")
                            .help(help);
                    self.report(report);
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }
}

/// The byte range of `pattern` that a regex syntax error underlines with `^` in its message,
/// which quotes the pattern indented by four spaces.
fn caret_range(detail: &str, pattern: &str) -> Option<(usize, usize)> {
    let carets = detail
        .lines()
        .find(|line| line.contains('^') && line.chars().all(|ch| ch == ' ' || ch == '^'))?;
    let first = carets.find('^')?.checked_sub(4)?;
    let count = carets.matches('^').count();
    let byte_at = |char_idx: usize| {
        pattern
            .char_indices()
            .nth(char_idx)
            .map_or(pattern.len(), |(byte, _)| byte)
    };
    Some((byte_at(first), byte_at(first + count)))
}

/// `http://` to `localhost`, `127.0.0.0/8` or `[::1]`: a token endpoint on the same host.
fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    !authority.contains('@') && crate::net::is_loopback_authority(authority)
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// The conditions `expr` reads, by position.
fn condition_refs(expr: &ir::Expr, out: &mut Vec<usize>) {
    match expr {
        ir::Expr::Condition(id) => out.push(id.0 as usize),
        ir::Expr::Not(inner) => condition_refs(inner, out),
        ir::Expr::And(lhs, rhs)
        | ir::Expr::Or(lhs, rhs)
        | ir::Expr::Eq(lhs, rhs)
        | ir::Expr::Ne(lhs, rhs) => {
            condition_refs(lhs, out);
            condition_refs(rhs, out);
        }
        ir::Expr::Order(_, lhs, rhs) => {
            condition_refs(lhs, out);
            condition_refs(rhs, out);
        }
        ir::Expr::In(inner, _)
        | ir::Expr::InNetworks(inner, _)
        | ir::Expr::Like(inner, _)
        | ir::Expr::Matches(inner, _)
        | ir::Expr::InRange(inner, ..)
        | ir::Expr::Within(inner, ..) => condition_refs(inner, out),
        _ => {}
    }
}

/// A cycle through `start`, in order from `start`, if there is one. Iterative depth-first
/// search, so that a long chain of conditions cannot exhaust the stack.
fn find_cycle(edges: &[Vec<usize>], start: usize) -> Option<Vec<usize>> {
    let mut path: Vec<(usize, usize)> = vec![(start, 0)];
    let mut visited = vec![false; edges.len()];
    while let Some(&mut (node, ref mut next_edge)) = path.last_mut() {
        let Some(&to) = edges.get(node).and_then(|out| out.get(*next_edge)) else {
            path.pop();
            continue;
        };
        *next_edge += 1;
        if to == start {
            return Some(path.iter().map(|(node, _)| *node).collect());
        }
        if let Some(seen) = visited.get_mut(to)
            && !*seen
        {
            *seen = true;
            path.push((to, 0));
        }
    }
    None
}

/// The number of conditions on the longest chain of references from `node`, itself included;
/// memoized in `depths` (0 = not computed). The graph is acyclic. Iterative.
fn condition_depth(edges: &[Vec<usize>], node: usize, depths: &mut [usize]) {
    let mut stack = vec![node];
    while let Some(&top) = stack.last() {
        if depths.get(top).is_some_and(|depth| *depth > 0) {
            stack.pop();
            continue;
        }
        let out = edges.get(top).map(Vec::as_slice).unwrap_or_default();
        let pending: Vec<usize> = out
            .iter()
            .copied()
            .filter(|to| depths.get(*to).is_some_and(|depth| *depth == 0))
            .collect();
        if pending.is_empty() {
            let deepest = out
                .iter()
                .filter_map(|to| depths.get(*to))
                .max()
                .copied()
                .unwrap_or(0);
            if let Some(slot) = depths.get_mut(top) {
                *slot = deepest + 1;
            }
            stack.pop();
        } else {
            stack.extend(pending);
        }
    }
}

/// The claims that `expr` proves present when it is true: the `has` tests of its `&&` chain.
/// A condition read in the chain contributes the guards of its own body, as far as they are
/// known (conditions are checked in declaration order).
fn collect_guards(
    expr: &ir::Expr,
    condition_guards: &HashMap<u32, Vec<(ProviderKind, ClaimId)>>,
    guards: &mut Vec<(ProviderKind, ClaimId)>,
) {
    match expr {
        ir::Expr::HasClaim { kind, claim } => guards.push((*kind, *claim)),
        ir::Expr::Condition(id) => {
            guards.extend(condition_guards.get(&id.0).into_iter().flatten().copied());
        }
        ir::Expr::And(lhs, rhs) => {
            collect_guards(lhs, condition_guards, guards);
            collect_guards(rhs, condition_guards, guards);
        }
        _ => {}
    }
}

fn plural(ty: Ty) -> &'static str {
    match ty {
        Ty::Bool => "bools",
        Ty::String => "strings",
        Ty::Int => "integers",
        Ty::Duration => "durations",
        Ty::StringSet => "sets",
        Ty::Ip => "IP addresses",
        Ty::Timestamp => "timestamps",
    }
}

/// Why `host` is not a host name or an IP address, as a label and a help: a URL, a port or a
/// path written into it, or characters no host name has. `None` for a good host.
pub(crate) fn host_problem(host: &str) -> Option<(&'static str, String)> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    // `[2001:db8::1]` or `[2001:db8::1]:443`, as a URL writes an IPv6 address.
    if let Some(rest) = host.strip_prefix('[')
        && let Some((address, after)) = rest.split_once(']')
        && address.parse::<std::net::Ipv6Addr>().is_ok()
    {
        let help = match after.strip_prefix(':') {
            Some(port) => format!("write `host = \"{address}\"` and `port = {port}`"),
            None => format!("write the address without brackets: `host = \"{address}\"`"),
        };
        return Some(("an IPv6 address in brackets", help));
    }
    if let Some(bare) = host.strip_suffix('.')
        && !bare.is_empty()
        && host_problem(bare).is_none()
    {
        return Some((
            "a trailing dot",
            format!("write the name without it: `host = \"{bare}\"`"),
        ));
    }
    if let Some((scheme, rest)) = host.split_once("://") {
        let bare = rest.split(['/', ':']).next().unwrap_or_default();
        return Some((
            "a URL, not a host",
            format!(
                "write the host alone, `host = \"{bare}\"`; the protocol block \
                 (`{scheme} {{ … }}`) says the scheme"
            ),
        ));
    }
    if let Some((bare, rest)) = host.split_once('/') {
        return Some((
            "a path after the host",
            format!("write `host = \"{bare}\"` and the path as `path_prefix = \"/{rest}\"`"),
        ));
    }
    if let Some((bare, port)) = host.rsplit_once(':') {
        return Some((
            "a port after the host",
            format!("write `host = \"{bare}\"` and `port = {port}`"),
        ));
    }
    let allowed = |ch: char| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '-' | '_');
    if !host.chars().all(allowed) {
        return Some((
            "not a host name",
            "a host name holds letters, digits, `.`, `-` and `_`; an IPv6 address is written \
             without brackets"
                .to_owned(),
        ));
    }
    None
}

fn literal_type_name(kind: &ExprKind) -> &'static str {
    match kind {
        ExprKind::Str(_) => "a string",
        ExprKind::Int(_) => "an integer",
        ExprKind::Bool(_) => "a bool",
        ExprKind::Duration(_) => "a duration",
        ExprKind::Range(..) => "a range",
        ExprKind::Timestamp(_) => "a timestamp",
        ExprKind::Set(_) => "a set",
        _ => "an expression",
    }
}

/// Whether `expr` reads a field of the request or the target (`request.action`,
/// `target.host`), not a claim.
fn is_request_or_target_field(expr: &ast::Expr) -> bool {
    let ExprKind::Path(path) = &expr.kind else {
        return false;
    };
    path.len() > 1
        && path
            .first()
            .is_some_and(|head| matches!(head.name.as_str(), "request" | "target"))
}

/// The name of a one-word path (`acme`), which may be text written without its quotes.
fn bare_name(expr: &ast::Expr) -> Option<&str> {
    match &expr.kind {
        ExprKind::Path(path) => match path.as_slice() {
            [name] => Some(name.name.as_str()),
            _ => None,
        },
        _ => None,
    }
}

/// The help for an unknown name where text fits: the name as a string literal.
fn quote_it(name: &str) -> String {
    format!("to compare with the text, quote it: `\"{name}\"`")
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

/// Whether `text` is exactly one valid duration literal, such as `15m`.
fn is_duration_literal(text: &str) -> bool {
    let lexed = crate::lexer::lex(text);
    lexed.errors.is_empty()
        && matches!(
            lexed.tokens.as_slice(),
            [(_, crate::lexer::Token::Duration(_), _)]
        )
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
    fn a_token_url_is_https_or_http_to_loopback() {
        let credential = |url: &str| {
            format!(
                "credential c {{ oauth_client_credentials {{ token_url = \"{url}\" \
                 client_id = \"p\" ttl = 1h }} }}"
            )
        };
        for ok in [
            "https://idp.example/token",
            "http://127.0.0.1:8080/token",
            "http://[::1]/token",
            "http://localhost:9/token",
        ] {
            assert!(compile_one(&credential(ok)).is_ok(), "{ok}");
        }
        for refused in [
            "http://idp.internal/token",
            "http://127.0.0.1.example/token",
            "http://user@127.0.0.1/token",
            "ftp://127.0.0.1/token",
        ] {
            assert_eq!(codes(&credential(refused)), ["gate::E0407"], "{refused}");
        }
    }

    #[test]
    fn unknown_name_compared_with_text_is_offered_quoted_unless_a_claim_is_close() {
        let help = |text: &str| {
            let diags = compile_one(text).unwrap_err();
            diags
                .first()
                .and_then(|diag| diag.help_text().map(str::to_owned))
        };
        let quoted = "to compare with the text, quote it: `\"acme\"`";
        assert_eq!(
            help("workload w { github { repository == acme } }").as_deref(),
            Some(quoted)
        );
        assert_eq!(
            help("workload w { github { repository != acme } }").as_deref(),
            Some(quoted)
        );
        assert_eq!(
            help("workload w { github { ref == repositry } }").as_deref(),
            Some("did you mean `repository`?")
        );
        let not_text = help("workload w { process { uid == acme } }").unwrap();
        assert!(!not_text.contains("quote"), "{not_text}");
        assert_eq!(
            help("forbid f { workload any target any when client.github.ref == acme }").as_deref(),
            Some(quoted)
        );
    }

    #[test]
    fn declarations_are_bounded_across_files() {
        let decl = |idx: usize| {
            let name = Ident {
                name: format!("d{idx}"),
                span: Span::new(idx % 2, idx, idx + 1),
            };
            ast::Decl::Broken(Some(name))
        };
        let mut trees = vec![ast::File::default(), ast::File::default()];
        for idx in 0..MAX_DECLARATIONS {
            trees[idx % 2].decls.push(decl(idx));
        }
        trees[0].decls.push(ast::Decl::Broken(None));
        assert!(limit_declarations(&trees).is_none());
        trees[1].decls.push(decl(MAX_DECLARATIONS));
        let report = limit_declarations(&trees).unwrap();
        assert_eq!(report.code(), Code::TooManyDeclarations);
        assert_eq!(
            report.span(),
            Span::new(0, MAX_DECLARATIONS, MAX_DECLARATIONS + 1)
        );
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
    fn a_type_error_is_reported_before_a_missing_guard() {
        let text = r#"workload w { github { ref_protected == true } }"#;
        let diags = compile_one(text).unwrap_err();
        let found: Vec<_> = diags.iter().map(|d| d.code().as_str()).collect();
        assert_eq!(found, vec!["gate::E0301"]);
        assert_eq!(
            diags[0].help_text(),
            Some("`ref_protected` holds the text `\"true\"`: write it with quotes")
        );
        let text = r#"workload w { github { ref_protected == "true" } }"#;
        let diags = compile_one(text).unwrap_err();
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].code().as_str(), "gate::E0303");
        assert_eq!(
            diags[0].help_text(),
            Some("guard it: `has ref_protected && ref_protected == \"true\"`")
        );
    }

    #[test]
    fn host_problems_are_named_and_their_help_is_a_valid_host() {
        let cases = [
            ("https://api.internal/v1", "api.internal"),
            ("api.internal:8443", "api.internal"),
            ("api.internal/v1", "api.internal"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("API.Example.com.", "API.Example.com"),
        ];
        for (host, fixed) in cases {
            let (_, help) = host_problem(host).unwrap();
            assert!(
                help.contains(&format!("`host = \"{fixed}\"`")),
                "{host}: {help}"
            );
            assert_eq!(host_problem(fixed), None, "{fixed}");
        }
        assert!(host_problem("api internal").is_some());
        assert_eq!(host_problem("2001:db8::1"), None);
    }

    #[test]
    fn an_address_equals_one_address_and_a_range_wants_in() {
        let diags =
            compile_one(r#"condition c { request.source_ip == "10.0.0.0/8" }"#).unwrap_err();
        assert_eq!(
            diags[0].help_text(),
            Some(r#"test membership: `request.source_ip in ["10.0.0.0/8"]`"#)
        );
        let diags =
            compile_one(r#"condition c { request.source_ip != "10.0.0.0/8" }"#).unwrap_err();
        assert_eq!(
            diags[0].help_text(),
            Some(r#"test membership: `!(request.source_ip in ["10.0.0.0/8"])`"#)
        );
        assert!(compile_one(r#"condition c { request.source_ip == "10.1.2.3/32" }"#).is_ok());
        assert!(compile_one(r#"condition c { request.source_ip != "2001:db8::1" }"#).is_ok());
    }

    #[test]
    fn a_misspelt_root_and_a_one_digit_hour_get_the_written_fix() {
        let diags = compile_one(r#"condition c { requst.action == "GET" }"#).unwrap_err();
        assert_eq!(diags[0].help_text(), Some("did you mean `request.action`?"));
        let text = r#"condition c { request.time within 9:00..17:00 in "UTC" }"#;
        let diags = compile_one(text).unwrap_err();
        assert_eq!(
            diags[0].help_text(),
            Some("write two digits for the hour: `09:00`")
        );
    }

    #[test]
    fn a_quoted_port_in_a_target_is_offered_the_number() {
        let diags = compile_one(r#"target t { https { host = "h" port = "443" } }"#).unwrap_err();
        assert_eq!(
            diags[0].help_text(),
            Some("write the number without quotes: `port = 443`")
        );
    }

    #[test]
    fn the_notice_of_errors_not_shown_counts_for_them() {
        let text: String = (0..466)
            .map(|idx| format!("workload w{idx} {{ github {{ repositry == \"a/b\" }} }}\n"))
            .collect();
        let diags = compile_one(&text).unwrap_err();
        assert_eq!(diags.len(), MAX_REPORTS_PER_FILE + 1);
        assert_eq!(
            crate::diagnostic::count(&diags, crate::diagnostic::Severity::Error),
            466
        );
    }

    #[test]
    fn a_time_zone_abbreviation_is_offered_its_zone() {
        let text = r#"condition c { request.time within 09:00..17:00 in "PST" }"#;
        let diags = compile_one(text).unwrap_err();
        assert_eq!(diags.len(), 1);
        assert_eq!(
            diags[0].help_text(),
            Some(
                "`PST` is an abbreviation, not a zone; for that local time write \
                 `\"America/Los_Angeles\"`"
            )
        );
    }

    #[test]
    fn a_quoted_number_compared_with_an_integer_gets_help() {
        let text = r#"
            workload w { oidc { } }
            target t { https { host = "h" } }
            permit p { workload w target t when target.port == "443" }
        "#;
        let diags = compile_one(text).unwrap_err();
        assert_eq!(diags.len(), 1);
        assert_eq!(
            diags[0].help_text(),
            Some("`target.port` is an integer: write `443` without quotes")
        );
    }

    #[test]
    fn credentials_and_annotations_lower_to_the_rule() {
        let text = r#"
            workload w { oidc { } }
            target t { postgres { host = "db" } }
            credential c { postgres_role { grant = ["a", "b", "a"] ttl = 1h30m } }
            @description("d")
            @severity("medium")
            permit p { workload w target t credential c }
        "#;
        let set = compile_one(text).unwrap();
        let credential = &set.credentials[0];
        assert_eq!(credential.ttl_s, Some(5400));
        let grant = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(credential.kind, ir::CredentialKind::PostgresRole { grant });
        let rule = &set.rules[0];
        assert_eq!(rule.credential, Some(ir::CredentialId(0)));
        assert_eq!(rule.annotations.description.as_deref(), Some("d"));
        assert_eq!(rule.annotations.severity, Some(ir::Severity::Medium));
    }

    #[test]
    fn conditions_are_read_by_id_in_any_order() {
        let text = r#"
            forbid f { when b }
            condition b { a && target.port > 1024 }
            condition a { request.action == "GET" }
        "#;
        let set = compile_one(text).unwrap();
        assert_eq!(
            set.rules[0].when,
            Some(ir::Expr::Condition(ir::ConditionId(0)))
        );
        let ir::Expr::And(lhs, _) = &set.conditions[0].body else {
            panic!("not an and")
        };
        assert_eq!(**lhs, ir::Expr::Condition(ir::ConditionId(1)));
        assert_eq!(codes("condition a { a }"), vec!["gate::E0105"]);
        assert_eq!(
            codes("workload w { github { a } } condition a { true }"),
            vec!["gate::E0201"]
        );
        assert_eq!(
            codes("target t { http { host = \"h\" } } forbid f { when t }"),
            vec!["gate::E0103"]
        );
    }

    #[test]
    fn addresses_compare_with_strings_by_context() {
        let text = r#"forbid f { when has request.source_ip && request.source_ip != "192.0.2.7" }"#;
        let set = compile_one(text).unwrap();
        let Some(ir::Expr::And(_, rhs)) = &set.rules[0].when else {
            panic!("not an and")
        };
        let network = ir::Network::parse("192.0.2.7").unwrap();
        let source_ip = Box::new(ir::Expr::Request(RequestField::SourceIp));
        let expected = ir::Expr::Not(Box::new(ir::Expr::InNetworks(source_ip, vec![network])));
        assert_eq!(**rhs, expected);
    }

    #[test]
    fn a_condition_of_has_tests_guards_the_claims() {
        let text = r#"
            condition in_environment { has client.github.environment }
            condition production {
              in_environment && client.github.environment == "production"
            }
            forbid f { when in_environment && client.github.environment == "staging" }
            forbid g { when production }
        "#;
        assert!(compile_one(text).is_ok());
        let text = "condition maybe { has client.github.environment || true } \
                    forbid f { when maybe && client.github.environment == \"x\" }";
        assert_eq!(codes(text), vec!["gate::E0303"]);
    }

    #[test]
    fn durations_in_sets_keep_their_type() {
        assert_eq!(
            codes("forbid f { when target.port in [15m] }"),
            vec!["gate::E0301"]
        );
        assert_eq!(
            codes("forbid f { when target.port in [1, 15m] }"),
            vec!["gate::E0302"]
        );
    }

    #[test]
    fn orderings_take_integers_or_durations() {
        assert!(compile_one("forbid f { when target.port >= 1024 && 1m < 1h }").is_ok());
        assert_eq!(codes("forbid f { when 1m < 60 }"), vec!["gate::E0301"]);
        assert_eq!(
            codes("forbid f { when target.port in 2..1 }"),
            vec!["gate::E0307"]
        );
        assert_eq!(
            codes(r#"forbid f { when target.name matches "(" }"#),
            vec!["gate::E0305"]
        );
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
