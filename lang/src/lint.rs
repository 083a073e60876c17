//! Lints: warnings about a policy set that compiles but probably does not say what its author
//! meant.
//!
//! In: the source files of a policy set. [`analyze`] runs the compiler ([`crate::check`]) and,
//! only when it reports no error, runs every lint over the syntax trees the compiler read, where
//! spans are still available. Out: a [`CheckOutcome`] with the policy set (when it
//! compiled) and every diagnostic, errors and warnings, in file order. Lints look at names and
//! literals as written, so they need no type information: the checker has already accepted every
//! name, claim and type they meet.
//!
//! Each lint has a stable warning code (`gate::W0101` …), listed in `docs/diagnostics.md`.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use crate::ast::{
    self, ClauseKind, CompareOp, Effect, ExprKind, Ident, Span, TargetSelector, WorkloadSelector,
};
use crate::check;
use crate::diagnostic::{self, Code, Diagnostic, Report, Severity, Sources};
use crate::ir;
use crate::lexer::format_duration;
use crate::schema::{CustomClaims, ProviderKind, SpiffeId, check_spiffe_path, check_trust_domain};
use crate::source::SourceFile;
use crate::time;

/// The longest credential lifetime that passes without a warning, unless configured: one hour.
pub const DEFAULT_MAX_CREDENTIAL_TTL_S: u64 = 60 * 60;

/// Settings of the lints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LintOptions {
    /// A credential whose `ttl` is longer than this, in seconds, is reported.
    pub max_credential_ttl_s: u64,
}

impl Default for LintOptions {
    fn default() -> LintOptions {
        LintOptions {
            max_credential_ttl_s: DEFAULT_MAX_CREDENTIAL_TTL_S,
        }
    }
}

/// What checking a policy set found: the compiled set unless there are errors, and every
/// diagnostic, errors and warnings together, in file order.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    pub set: Option<ir::PolicySet>,
    pub diagnostics: Vec<Diagnostic>,
}

impl CheckOutcome {
    pub fn count(&self, severity: Severity) -> usize {
        diagnostic::count(&self.diagnostics, severity)
    }
}

/// Compiles a policy set without custom claims and, when it has no error, lints it. Never
/// panics.
pub fn analyze(files: &[SourceFile], options: &LintOptions) -> CheckOutcome {
    analyze_with_claims(files, options, &CustomClaims::default())
}

/// Compiles a policy set whose `oidc` claims include `custom_claims` and, when it has no
/// error, lints it. Never panics.
pub fn analyze_with_claims(
    files: &[SourceFile],
    options: &LintOptions,
    custom_claims: &CustomClaims,
) -> CheckOutcome {
    let (set, trees) = match check::compile_keeping_trees(files, custom_claims) {
        Ok((set, _, trees)) => (set, trees),
        Err(diagnostics) => {
            return CheckOutcome {
                set: None,
                diagnostics,
            };
        }
    };
    let mut reports = lint(&trees, options);
    reports.sort_by_key(|report| {
        let span = report.span();
        (span.file, span.start)
    });
    let sources = Sources::new(files);
    CheckOutcome {
        set: Some(set),
        diagnostics: reports
            .into_iter()
            .map(|report| sources.finish(report))
            .collect(),
    }
}

/// Runs every lint over the syntax trees of a policy set that compiled without errors.
pub(crate) fn lint(trees: &[ast::File], options: &LintOptions) -> Vec<Report> {
    let decls = Decls::new(trees);
    let mut reports = Vec::new();
    broad_permits(&decls, &mut reports);
    unused_declarations(&decls, &mut reports);
    impossible_claim_values(&decls, &mut reports);
    legacy_time_zones(&decls, &mut reports);
    shadowed_permits(&decls, &mut reports);
    unsatisfiable(&decls, &mut reports);
    other_kind_claims(&decls, &mut reports);
    credentials(&decls, options, &mut reports);
    overlapping_permits(&decls, &mut reports);
    shared_tokens(&decls, &mut reports);
    reports
}

/// The declarations of a policy set by kind, in source order.
struct Decls<'a> {
    workloads: Vec<&'a ast::WorkloadDecl>,
    workloads_by_name: HashMap<&'a str, &'a ast::WorkloadDecl>,
    targets: Vec<&'a ast::TargetDecl>,
    credentials: Vec<&'a ast::CredentialDecl>,
    conditions: Vec<&'a ast::ConditionDecl>,
    rules: Vec<Rule<'a>>,
}

impl<'a> Decls<'a> {
    /// Each condition's body by its name.
    fn condition_bodies(&self) -> HashMap<&'a str, &'a ast::Expr> {
        self.conditions
            .iter()
            .map(|condition| (condition.name.name.as_str(), &condition.body))
            .collect()
    }

    fn new(trees: &'a [ast::File]) -> Decls<'a> {
        let mut decls = Decls {
            workloads: Vec::new(),
            workloads_by_name: HashMap::new(),
            targets: Vec::new(),
            credentials: Vec::new(),
            conditions: Vec::new(),
            rules: Vec::new(),
        };
        for decl in trees.iter().flat_map(|tree| &tree.decls) {
            match decl {
                ast::Decl::Workload(workload) => decls.workloads.push(workload),
                ast::Decl::Target(target) => decls.targets.push(target),
                ast::Decl::Credential(credential) => decls.credentials.push(credential),
                ast::Decl::Condition(condition) => decls.conditions.push(condition),
                ast::Decl::Rule(rule) => decls.rules.push(Rule::new(rule)),
                _ => {}
            }
        }
        decls.workloads_by_name = decls
            .workloads
            .iter()
            .map(|workload| (workload.name.name.as_str(), *workload))
            .collect();
        decls
    }

    fn workload(&self, name: &str) -> Option<&'a ast::WorkloadDecl> {
        self.workloads_by_name.get(name).copied()
    }

    fn permits(&self) -> impl Iterator<Item = &Rule<'a>> {
        self.rules
            .iter()
            .filter(|rule| rule.decl.effect == Effect::Permit)
    }
}

/// A rule with its clauses picked out.
struct Rule<'a> {
    decl: &'a ast::RuleDecl,
    workload: Option<(&'a WorkloadSelector, Span)>,
    target: Option<&'a TargetSelector>,
    when: Option<&'a ast::Expr>,
    credential: Option<&'a Ident>,
}

impl<'a> Rule<'a> {
    fn new(decl: &'a ast::RuleDecl) -> Rule<'a> {
        let mut rule = Rule {
            decl,
            workload: None,
            target: None,
            when: None,
            credential: None,
        };
        for clause in &decl.clauses {
            match &clause.kind {
                ClauseKind::Workload(selector) => rule.workload = Some((selector, clause.span)),
                ClauseKind::Target(selector) => rule.target = Some(selector),
                ClauseKind::When(expr) => rule.when = Some(expr),
                ClauseKind::Credential(name) => rule.credential = Some(name),
            }
        }
        rule
    }

    fn name(&self) -> &'a str {
        &self.decl.name.name
    }

    /// The workload clause; a rule without one covers every caller.
    fn workload_selector(&self) -> &'a WorkloadSelector {
        self.workload
            .map_or(&WorkloadSelector::Any, |(selector, _)| selector)
    }

    /// The target clause; a rule without one covers every target.
    fn target_selector(&self) -> &'a TargetSelector {
        self.target.unwrap_or(&TargetSelector::Any)
    }
}

// W0101: a permit on a broad workload without `when`.

fn broad_permits(decls: &Decls<'_>, reports: &mut Vec<Report>) {
    let conditions = Folder::new(decls.condition_bodies());
    for rule in decls.permits() {
        // A `when` that always holds is no condition.
        if rule
            .when
            .is_some_and(|when| conditions.fold(when, 0) != Some(true))
        {
            continue;
        }
        let Some((selector, clause_span)) = rule.workload else {
            continue;
        };
        let (callers, alternative) = match selector {
            WorkloadSelector::Any => ("every caller".to_owned(), None),
            WorkloadSelector::AnyOfKind(kind) => (format!("every `{}` caller", kind.name), None),
            WorkloadSelector::Named(name) => {
                let open = decls.workload(&name.name).and_then(|workload| {
                    workload
                        .alternatives
                        .iter()
                        .find(|alternative| alternative.condition.is_none())
                });
                let Some(open) = open else {
                    continue;
                };
                (format!("every `{}` caller", open.kind.name), Some(open))
            }
        };
        let message = format!(
            "permit `{}` lets {callers} in without a condition",
            rule.name()
        );
        let mut report = Report::new(
            Code::BroadPermit,
            message,
            clause_span,
            format!("{callers} is this workload"),
        );
        if let Some(alternative) = alternative {
            report = report.label(
                alternative.span,
                "this alternative accepts any token of its kind",
            );
        }
        reports.push(report.help(
            "narrow the workload to the callers meant, or add a `when` condition to the permit",
        ));
    }
}

// W0102: a declaration nothing uses.

fn unused_declarations(decls: &Decls<'_>, reports: &mut Vec<Report>) {
    let mut used: HashSet<&str> = HashSet::new();
    for rule in &decls.rules {
        if let Some((WorkloadSelector::Named(name), _)) = rule.workload {
            used.insert(&name.name);
        }
        if let Some(TargetSelector::Named(name)) = rule.target {
            used.insert(&name.name);
        }
        if let Some(name) = rule.credential {
            used.insert(&name.name);
        }
        if let Some(when) = rule.when {
            bare_names(when, &mut used);
        }
    }
    for condition in &decls.conditions {
        bare_names(&condition.body, &mut used);
    }
    let declared = decls
        .workloads
        .iter()
        .map(|decl| ("workload", &decl.name))
        .chain(decls.targets.iter().map(|decl| ("target", &decl.name)))
        .chain(
            decls
                .credentials
                .iter()
                .map(|decl| ("credential", &decl.name)),
        )
        .chain(
            decls
                .conditions
                .iter()
                .map(|decl| ("condition", &decl.name)),
        );
    for (kind, name) in declared {
        if used.contains(name.name.as_str()) {
            continue;
        }
        let (label, help) = if kind == "condition" {
            (
                "no rule or condition reads it",
                "read it in a `when`, or remove it",
            )
        } else {
            (
                "no rule refers to it",
                "refer to it from a rule, or remove it",
            )
        };
        let message = format!("{kind} `{}` is never used", name.name);
        reports.push(Report::new(Code::UnusedDeclaration, message, name.span, label).help(help));
    }
}

/// Collects every one-word name read in `expr`: the conditions it refers to.
fn bare_names<'a>(expr: &'a ast::Expr, out: &mut HashSet<&'a str>) {
    match &expr.kind {
        ExprKind::Path(path) => {
            if let [name] = path.as_slice() {
                out.insert(&name.name);
            }
        }
        ExprKind::Not(inner) => bare_names(inner, out),
        ExprKind::And(left, right) | ExprKind::Or(left, right) => {
            bare_names(left, out);
            bare_names(right, out);
        }
        ExprKind::Compare(left, _, right) => {
            bare_names(left, out);
            bare_names(right, out);
        }
        _ => {}
    }
}

// W0201: a literal that no real claim can hold.

fn impossible_claim_values(decls: &Decls<'_>, reports: &mut Vec<Report>) {
    for workload in &decls.workloads {
        for alternative in &workload.alternatives {
            if let Some(condition) = &alternative.condition {
                let scope = ClaimScope::Bare(&alternative.kind.name);
                claim_values_in(condition, scope, reports);
            }
        }
    }
    for rule in &decls.rules {
        if let Some(when) = rule.when {
            claim_values_in(when, ClaimScope::Client, reports);
        }
    }
    for condition in &decls.conditions {
        claim_values_in(&condition.body, ClaimScope::Client, reports);
    }
}

/// How claims are named where an expression stands.
#[derive(Debug, Clone, Copy)]
enum ClaimScope<'a> {
    /// Inside a workload alternative of this kind: bare claim names.
    Bare(&'a str),
    /// In `when` and conditions: `client.KIND.claim`.
    Client,
}

impl<'a> ClaimScope<'a> {
    /// The kind and claim that `expr` reads, if it reads one.
    fn claim(self, expr: &'a ast::Expr) -> Option<(&'a str, &'a str)> {
        let ExprKind::Path(path) = &expr.kind else {
            return None;
        };
        match (self, path.as_slice()) {
            (ClaimScope::Bare(kind), [claim]) => Some((kind, &claim.name)),
            (ClaimScope::Client, [client, kind, claim]) if client.name == "client" => {
                Some((&kind.name, &claim.name))
            }
            _ => None,
        }
    }
}

fn claim_values_in(expr: &ast::Expr, scope: ClaimScope<'_>, reports: &mut Vec<Report>) {
    match &expr.kind {
        ExprKind::Not(inner) => claim_values_in(inner, scope, reports),
        ExprKind::And(left, right) | ExprKind::Or(left, right) => {
            claim_values_in(left, scope, reports);
            claim_values_in(right, scope, reports);
        }
        ExprKind::Compare(left, op, right) => {
            let (claim, literal) = match (scope.claim(left), scope.claim(right)) {
                (Some(claim), _) => (claim, right.as_ref()),
                (None, Some(claim)) if matches!(op, CompareOp::Eq | CompareOp::Ne) => {
                    (claim, left.as_ref())
                }
                _ => return,
            };
            compare_claim(claim, *op, literal, reports);
        }
        _ => {}
    }
}

// W0202: a time zone named by a legacy alias.

fn legacy_time_zones(decls: &Decls<'_>, reports: &mut Vec<Report>) {
    let mut windows = Vec::new();
    for rule in &decls.rules {
        if let Some(when) = rule.when {
            windows_in(when, &mut windows);
        }
    }
    for condition in &decls.conditions {
        windows_in(&condition.body, &mut windows);
    }
    for window in windows {
        let name = window.zone.as_str();
        let Some(preferred) = time::preferred_zone_name(name) else {
            continue;
        };
        let message = format!("time zone `{name}` is a legacy alias");
        let (label, help) = if let Some(local) = time::local_time_for_standard_time(name) {
            (
                "the same offset all year, never daylight saving time".to_owned(),
                format!(
                    "for local time with daylight saving time, write `\"{local}\"`; \
                     for the fixed offset, `\"{preferred}\"`"
                ),
            )
        } else {
            (
                format!("an old name of `{preferred}`"),
                format!("write `\"{preferred}\"`"),
            )
        };
        let report = Report::new(Code::LegacyTimeZone, message, window.zone_span, label).help(help);
        reports.push(report);
    }
}

/// Every `within` window in `expr`.
fn windows_in<'a>(expr: &'a ast::Expr, out: &mut Vec<&'a ast::Window>) {
    match &expr.kind {
        ExprKind::Within(_, window) => out.push(window),
        ExprKind::Not(inner) => windows_in(inner, out),
        ExprKind::And(left, right) | ExprKind::Or(left, right) => {
            windows_in(left, out);
            windows_in(right, out);
        }
        _ => {}
    }
}

/// How a literal is compared with a claim: as a value, as a glob, or as a regular expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pattern {
    Value,
    Glob,
    Regex,
}

/// Checks the literals compared with a claim of known shape. A glob or a regular expression is
/// checked by what it fixes: its literal start (a regex only when anchored with `^`) and, for
/// DNS-name claims, every literal character of a glob. Ordering comparisons are left alone:
/// no claim with a known shape is an integer.
fn compare_claim(
    (kind, claim): (&str, &str),
    op: CompareOp,
    literal: &ast::Expr,
    reports: &mut Vec<Report>,
) {
    let Some(rule) = claim_rule(kind, claim) else {
        return;
    };
    let mut candidates: Vec<(&str, Span, Pattern)> = Vec::new();
    match (&literal.kind, op) {
        (ExprKind::Str(value), CompareOp::Eq | CompareOp::Ne | CompareOp::In) => {
            candidates.push((value, literal.span, Pattern::Value));
        }
        (ExprKind::Str(pattern), CompareOp::Like) => {
            candidates.push((pattern, literal.span, Pattern::Glob));
        }
        (ExprKind::Str(pattern), CompareOp::Matches) => {
            candidates.push((pattern, literal.span, Pattern::Regex));
        }
        (ExprKind::Set(items), CompareOp::In) => {
            for item in items {
                if let ExprKind::Str(value) = &item.kind {
                    candidates.push((value, item.span, Pattern::Value));
                }
            }
        }
        _ => {}
    }
    for (value, span, pattern) in candidates {
        let problem = match pattern {
            Pattern::Value => rule.check(value),
            Pattern::Glob => rule.check_glob(value),
            Pattern::Regex => rule.check_regex(value),
        };
        let Some(problem) = problem else {
            continue;
        };
        let what = match pattern {
            Pattern::Value => "is never the",
            Pattern::Glob | Pattern::Regex => "matches no",
        };
        let article = ProviderKind::from_keyword(kind).map_or("a", ProviderKind::article);
        let message = format!(
            "`{}` {what} `{claim}` of {article} `{kind}` token",
            quoted(value)
        );
        let help = match pattern {
            Pattern::Regex => None,
            Pattern::Value | Pattern::Glob => rule.help(value),
        };
        let report = Report::new(Code::ImpossibleClaimValue, message, span, problem).help_opt(help);
        reports.push(report);
    }
}

/// What the real values of a claim look like.
#[derive(Debug, Clone, Copy)]
enum ClaimRule {
    /// Starts with this prefix, and the help suggests the prefix plus this completion.
    Prefix {
        prefix: &'static str,
        label: &'static str,
        suggest: Option<&'static str>,
    },
    /// One of these values.
    OneOf(&'static [&'static str]),
    /// `owner/name`: two non-empty parts without spaces.
    OwnerSlashName,
    /// A single name without `/`.
    NoSlash,
    /// A Kubernetes DNS-1123 label: at most 63 of `a-z`, `0-9`, `-`, alphanumeric at both ends.
    DnsLabel,
    /// A Kubernetes DNS-1123 subdomain: dot-separated labels, at most 253 characters.
    DnsSubdomain,
    /// A SPIFFE ID: `spiffe://trust-domain/path`.
    SpiffeId,
    /// The path of a SPIFFE ID: empty, or starting with `/`.
    SpiffePath,
    /// A GitLab `ref`: the bare branch or tag name, never `refs/…`.
    BareRef,
    /// The trust domain of a SPIFFE ID.
    TrustDomain,
}

fn claim_rule(kind: &str, claim: &str) -> Option<ClaimRule> {
    let rule = match (kind, claim) {
        ("github", "ref") => ClaimRule::Prefix {
            prefix: "refs/",
            label: "a GitHub `ref` starts with `refs/`",
            suggest: Some("refs/heads/"),
        },
        ("github", "sub") => ClaimRule::Prefix {
            prefix: "repo:",
            label: "a GitHub `sub` starts with `repo:`",
            suggest: None,
        },
        ("github", "repository") => ClaimRule::OwnerSlashName,
        ("github", "repository_owner") => ClaimRule::NoSlash,
        ("github" | "gitlab", "ref_type") => ClaimRule::OneOf(&["branch", "tag"]),
        ("github" | "gitlab", "ref_protected") => ClaimRule::OneOf(&["true", "false"]),
        ("github", "repository_visibility") => ClaimRule::OneOf(&["public", "private", "internal"]),
        ("github", "runner_environment") => ClaimRule::OneOf(&["github-hosted", "self-hosted"]),
        ("gitlab", "sub") => ClaimRule::Prefix {
            prefix: "project_path:",
            label: "a GitLab `sub` starts with `project_path:`",
            suggest: None,
        },
        ("terraform", "sub") => ClaimRule::Prefix {
            prefix: "organization:",
            label: "a Terraform Cloud `sub` starts with `organization:`",
            suggest: None,
        },
        ("terraform", "run_phase") => ClaimRule::OneOf(&["plan", "apply"]),
        ("kubernetes", "sub") => ClaimRule::Prefix {
            prefix: "system:serviceaccount:",
            label: "a service-account `sub` starts with `system:serviceaccount:`",
            suggest: None,
        },
        ("kubernetes", "namespace") => ClaimRule::DnsLabel,
        ("kubernetes", "service_account") => ClaimRule::DnsSubdomain,
        ("spiffe", "sub" | "spiffe_id") => ClaimRule::SpiffeId,
        ("spiffe", "trust_domain") => ClaimRule::TrustDomain,
        ("spiffe", "path") => ClaimRule::SpiffePath,
        ("gitlab", "ref") => ClaimRule::BareRef,
        _ => return None,
    };
    Some(rule)
}

impl ClaimRule {
    /// Why `value` cannot be the claim, as a label; `None` when it can.
    fn check(self, value: &str) -> Option<String> {
        match self {
            ClaimRule::Prefix { prefix, label, .. } => {
                (!value.starts_with(prefix)).then(|| label.to_owned())
            }
            ClaimRule::OneOf(values) => (!values.contains(&value)).then(|| {
                let listed: Vec<String> = values.iter().map(|v| format!("`\"{v}\"`")).collect();
                format!("the claim is one of {}", listed.join(", "))
            }),
            ClaimRule::OwnerSlashName => {
                let parts: Vec<&str> = value.split('/').collect();
                let well_formed = parts.len() == 2
                    && parts.iter().all(|part| !part.is_empty())
                    && !value.chars().any(char::is_whitespace);
                (!well_formed).then(|| "a repository is written `owner/name`".to_owned())
            }
            ClaimRule::NoSlash => value
                .contains('/')
                .then(|| "an owner is a single name, without `/`".to_owned()),
            ClaimRule::DnsLabel => (!is_dns_label(value))
                .then(|| "a namespace is a DNS label: lowercase `a-z`, `0-9` and `-`".to_owned()),
            ClaimRule::DnsSubdomain => (!is_dns_subdomain(value)).then(|| {
                "a service account name is lowercase `a-z`, `0-9`, `-` and `.`".to_owned()
            }),
            ClaimRule::SpiffeId => SpiffeId::parse(value).err().map(|error| error.to_string()),
            ClaimRule::TrustDomain => check_trust_domain(value)
                .err()
                .map(|error| error.to_string()),
            ClaimRule::SpiffePath if !value.is_empty() && !value.starts_with('/') => {
                Some("a SPIFFE ID's path starts with `/`".to_owned())
            }
            ClaimRule::SpiffePath => check_spiffe_path(value)
                .err()
                .map(|error| error.to_string()),
            ClaimRule::BareRef => value
                .starts_with("refs/")
                .then(|| "a GitLab `ref` is the bare branch or tag name".to_owned()),
        }
    }

    /// Why no value of the claim can match the regular expression `pattern`; `None` when some
    /// can, or when the pattern fixes too little to tell.
    fn check_regex(self, pattern: &str) -> Option<String> {
        let (literal_prefix, exact) = regex_prefix(pattern)?;
        if exact {
            return self.check(&literal_prefix);
        }
        self.check_prefix(&literal_prefix)
    }

    /// Why no value of the claim can start with `literal_prefix`.
    fn check_prefix(self, literal_prefix: &str) -> Option<String> {
        match self {
            ClaimRule::Prefix { prefix, label, .. } => {
                let compatible =
                    literal_prefix.starts_with(prefix) || prefix.starts_with(literal_prefix);
                (!compatible).then(|| label.to_owned())
            }
            ClaimRule::SpiffePath => (!literal_prefix.is_empty()
                && !literal_prefix.starts_with('/'))
            .then(|| "a SPIFFE ID's path starts with `/`".to_owned()),
            ClaimRule::BareRef => literal_prefix
                .starts_with("refs/")
                .then(|| "a GitLab `ref` is the bare branch or tag name".to_owned()),
            _ => None,
        }
    }

    /// Why no value of the claim can match the glob `pattern`; `None` when some can.
    fn check_glob(self, pattern: &str) -> Option<String> {
        let (literal_prefix, has_wildcard) = glob_prefix(pattern);
        if !has_wildcard {
            return self.check(&literal_prefix);
        }
        match self {
            ClaimRule::DnsLabel | ClaimRule::DnsSubdomain => {
                let allowed = |ch: char| {
                    ch.is_ascii_lowercase()
                        || ch.is_ascii_digit()
                        || ch == '-'
                        || (ch == '.' && matches!(self, ClaimRule::DnsSubdomain))
                };
                let literal_chars = glob_literal_chars(pattern);
                (!literal_chars.chars().all(allowed))
                    .then(|| "the claim holds only `a-z`, `0-9`, `-` and `.`".to_owned())
            }
            _ => self.check_prefix(&literal_prefix),
        }
    }

    fn help(self, value: &str) -> Option<String> {
        match self {
            ClaimRule::Prefix {
                suggest: Some(suggest),
                ..
            } => {
                let looks_like_tag = value.strip_prefix('v').is_some_and(|rest| {
                    rest.starts_with(|ch: char| ch.is_ascii_digit() || ch == '*')
                });
                let suggest = if looks_like_tag {
                    "refs/tags/"
                } else {
                    suggest
                };
                Some(format!(
                    "did you mean `{}`? branches are `refs/heads/…`, tags `refs/tags/…`",
                    quoted(&format!("{suggest}{value}"))
                ))
            }
            ClaimRule::Prefix { prefix, .. } => {
                Some(format!("write the whole value, starting with `{prefix}`"))
            }
            ClaimRule::OneOf(values) => {
                let lower = value.to_ascii_lowercase();
                let boolean = match lower.as_str() {
                    "yes" | "y" | "on" | "1" => "true",
                    "no" | "n" | "off" | "0" => "false",
                    _ => lower.as_str(),
                };
                values
                    .iter()
                    .find(|candidate| **candidate == boolean)
                    .map(|candidate| format!("did you mean `\"{candidate}\"`?"))
            }
            ClaimRule::DnsLabel | ClaimRule::DnsSubdomain => {
                let fixed = value.to_ascii_lowercase().replace('_', "-");
                self.check(&fixed)
                    .is_none()
                    .then(|| format!("did you mean `{}`?", quoted(&fixed)))
            }
            ClaimRule::OwnerSlashName => Some("for example `\"acme/billing\"`".to_owned()),
            ClaimRule::SpiffeId => {
                let trimmed = value.trim_end_matches('/');
                if trimmed != value && SpiffeId::parse(trimmed).is_ok() {
                    return Some(format!("did you mean `{}`?", quoted(trimmed)));
                }
                Some("for example `\"spiffe://example.org/ns/billing/sa/api\"`".to_owned())
            }
            ClaimRule::TrustDomain => {
                let bare = value.split_once("://")?.1;
                let bare = bare.split('/').next().unwrap_or_default();
                Some(format!("did you mean `{}`?", quoted(bare)))
            }
            ClaimRule::SpiffePath if !value.starts_with('/') => {
                Some(format!("did you mean `{}`?", quoted(&format!("/{value}"))))
            }
            ClaimRule::BareRef => {
                let bare = value
                    .strip_prefix("refs/heads/")
                    .or_else(|| value.strip_prefix("refs/tags/"))?;
                if bare.contains(['*', '?']) {
                    // Only the full form says branch or tag: compare the claim that holds it.
                    return Some(format!(
                        "GitLab names the branch or tag alone in `ref`; compare `ref_path`, which \
                         holds the `refs/…` form: `ref_path like {}`",
                        quoted(value)
                    ));
                }
                Some(format!(
                    "did you mean `{}`? GitLab names the branch or tag alone, and `ref_type` says \
                     which; `ref_path` holds the `refs/…` form",
                    quoted(bare)
                ))
            }
            _ => None,
        }
    }
}

/// `value` as a Gate string literal, quotes and escapes included.
fn quoted(value: &str) -> String {
    let mut out = String::from('"');
    for ch in value.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            _ => out.push(ch),
        }
    }
    out.push('"');
    out
}

/// The literal text of a glob before its first wildcard, and whether it has one.
fn glob_prefix(pattern: &str) -> (String, bool) {
    let mut prefix = String::new();
    let mut chars = pattern.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '*' | '?' => return (prefix, true),
            '\\' => prefix.extend(chars.next()),
            _ => prefix.push(ch),
        }
    }
    (prefix, false)
}

/// The literal text a regular expression anchored with `^` fixes at the start of every match,
/// and whether it fixes the whole match (`^text$`). `None` for an unanchored pattern, or one
/// with an alternation, whose other branches may start anywhere.
fn regex_prefix(pattern: &str) -> Option<(String, bool)> {
    if pattern.contains('|') {
        return None;
    }
    let rest = pattern.strip_prefix('^')?;
    let mut prefix = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(ch) = chars.next() {
        let literal = match ch {
            '$' if chars.peek().is_none() => return Some((prefix, true)),
            '\\' => match chars.next() {
                Some(escaped) if escaped.is_ascii_punctuation() => escaped,
                _ => break,
            },
            '.' | '[' | ']' | '(' | ')' | '*' | '+' | '?' | '{' | '}' | '$' | '^' => break,
            _ => ch,
        };
        // A quantifier after a character makes it optional.
        if matches!(chars.peek(), Some('?' | '*' | '{')) {
            break;
        }
        prefix.push(literal);
    }
    Some((prefix, false))
}

/// Every literal character of a glob, wildcards left out and escapes resolved.
fn glob_literal_chars(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '*' | '?' => {}
            '\\' => out.extend(chars.next()),
            _ => out.push(ch),
        }
    }
    out
}

fn is_dns_label(value: &str) -> bool {
    let alphanumeric = |ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit();
    !value.is_empty()
        && value.len() <= 63
        && value.chars().all(|ch| alphanumeric(ch) || ch == '-')
        && value.starts_with(alphanumeric)
        && value.ends_with(alphanumeric)
}

fn is_dns_subdomain(value: &str) -> bool {
    value.len() <= 253 && value.split('.').all(is_dns_label)
}

// W0301: a permit that a forbid shadows for every request.

fn shadowed_permits(decls: &Decls<'_>, reports: &mut Vec<Report>) {
    let forbids: Vec<&Rule<'_>> = decls
        .rules
        .iter()
        .filter(|rule| rule.decl.effect == Effect::Forbid && rule.when.is_none())
        .collect();
    for permit in decls.permits() {
        let shadow = forbids.iter().find(|forbid| {
            target_covers(forbid.target_selector(), permit.target_selector())
                && workload_covers(
                    decls,
                    forbid.workload_selector(),
                    permit.workload_selector(),
                )
        });
        let Some(forbid) = shadow else {
            continue;
        };
        let message = format!(
            "permit `{}` is shadowed by forbid `{}`",
            permit.name(),
            forbid.name()
        );
        let report = Report::new(
            Code::ShadowedPermit,
            message,
            permit.decl.name.span,
            "this permit never allows a request",
        )
        .label(
            forbid.decl.name.span,
            format!("denies every request `{}` covers", permit.name()),
        )
        .help("give the forbid a `when` condition, or remove the permit");
        reports.push(report);
    }
}

fn target_covers(outer: &TargetSelector, inner: &TargetSelector) -> bool {
    match (outer, inner) {
        (TargetSelector::Any, _) => true,
        (TargetSelector::Named(outer), TargetSelector::Named(inner)) => outer.name == inner.name,
        (TargetSelector::Named(_), TargetSelector::Any) => false,
    }
}

fn workload_covers(decls: &Decls<'_>, outer: &WorkloadSelector, inner: &WorkloadSelector) -> bool {
    match (outer, inner) {
        (WorkloadSelector::Any, _) => true,
        (WorkloadSelector::Named(outer), WorkloadSelector::Named(inner)) => {
            outer.name == inner.name
        }
        (WorkloadSelector::AnyOfKind(outer), WorkloadSelector::AnyOfKind(inner)) => {
            outer.name == inner.name
        }
        (WorkloadSelector::AnyOfKind(kind), WorkloadSelector::Named(name)) => {
            decls.workload(&name.name).is_some_and(|workload| {
                workload
                    .alternatives
                    .iter()
                    .all(|alternative| alternative.kind.name == kind.name)
            })
        }
        _ => false,
    }
}

// W0302: a rule, alternative or condition that can never hold.

fn unsatisfiable(decls: &Decls<'_>, reports: &mut Vec<Report>) {
    let folder = Folder::new(decls.condition_bodies());
    for condition in &decls.conditions {
        if let Some(why) = folder.verdict(&condition.name.name).never {
            let what = format!("condition `{}`", condition.name.name);
            reports.push(why.report(&what, "hold"));
        }
    }
    for rule in &decls.rules {
        if let Some(when) = rule.when
            && let Some(why) = never(when, &folder, 0)
        {
            let what = format!("{} `{}`", effect_word(rule.decl.effect), rule.name());
            reports.push(why.report(&what, "match"));
        }
    }
    let claims_only = Folder::new(HashMap::new());
    for workload in &decls.workloads {
        for alternative in &workload.alternatives {
            if let Some(condition) = &alternative.condition
                && let Some(why) = never(condition, &claims_only, 0)
            {
                let what = format!(
                    "the `{}` alternative of workload `{}`",
                    alternative.kind.name, workload.name.name
                );
                reports.push(why.report(&what, "match"));
            }
        }
    }
}

// W0303: a rule that reads one kind's claims where callers of other kinds reach it.

fn other_kind_claims(decls: &Decls<'_>, reports: &mut Vec<Report>) {
    let conditions = decls.condition_bodies();
    for rule in &decls.rules {
        let Some(when) = rule.when else {
            continue;
        };
        let admitted: Option<Vec<&str>> =
            match rule.workload_selector() {
                WorkloadSelector::Named(name) => decls
                    .workloads_by_name
                    .get(name.name.as_str())
                    .map(|workload| {
                        workload
                            .alternatives
                            .iter()
                            .map(|alternative| alternative.kind.name.as_str())
                            .collect()
                    }),
                WorkloadSelector::AnyOfKind(kind) => Some(vec![kind.name.as_str()]),
                WorkloadSelector::Any => None,
            };
        if let Some(kinds) = &admitted
            && let Some((kind, span)) = kind_guards(when).find(|(kind, _)| !kinds.contains(kind))
        {
            // `has client.github.x` under a workload of other kinds: false for every caller.
            let listed: Vec<String> = kinds.iter().map(|k| format!("`{k}`")).collect();
            let message = format!(
                "{} `{}` can never match",
                effect_word(rule.decl.effect),
                rule.name()
            );
            let label = format!("true only for a `{kind}` caller");
            let help = format!(
                "its workload admits only {} callers; give it a workload of `{kind}` callers, or \
                 remove the guard",
                and_list(&listed)
            );
            reports.push(Report::new(Code::UnsatisfiableRule, message, span, label).help(help));
            continue;
        }
        let mut reads = Vec::new();
        kind_reads(when, &conditions, &[], &mut reads, 0);
        let exposed = reads.into_iter().find(|(kind, _, _)| {
            admitted
                .as_ref()
                .is_none_or(|kinds| kinds.iter().any(|admitted| admitted != kind))
        });
        let Some((kind, claim, span)) = exposed else {
            continue;
        };
        let what = format!("{} `{}`", effect_word(rule.decl.effect), rule.name());
        let guard = format!("guard the read with `has client.{kind}.{claim} && …`");
        let (message, help) = match &admitted {
            None => (
                format!("{what} reads a `{kind}` claim, but callers of every kind reach it"),
                if rule.workload.is_some() {
                    format!("write `workload any {kind}` in place of `workload any`, or {guard}")
                } else {
                    format!("add `workload any {kind}`, or {guard}")
                },
            ),
            Some(kinds) if kinds.contains(&kind) => {
                let others: Vec<String> = kinds
                    .iter()
                    .filter(|other| **other != kind)
                    .map(|other| format!("`{other}`"))
                    .collect();
                (
                    format!(
                        "{what} reads a `{kind}` claim, but {} callers reach it too",
                        and_list(&others)
                    ),
                    format!("{guard}, or give the rule a workload of `{kind}` callers only"),
                )
            }
            Some(kinds) => {
                let listed: Vec<String> = kinds.iter().map(|k| format!("`{k}`")).collect();
                (
                    format!(
                        "{what} reads a `{kind}` claim, but only {} callers reach it",
                        and_list(&listed)
                    ),
                    "read a claim of the callers' own kind, or change the rule's workload"
                        .to_owned(),
                )
            }
        };
        let label = match &admitted {
            Some(kinds) if !kinds.contains(&kind) => {
                "an evaluation error, and so a deny, for every caller the rule admits"
            }
            _ => "an evaluation error, and so a deny, for callers of other kinds",
        };
        reports.push(Report::new(Code::OtherKindClaim, message, span, label).help(help));
    }
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [only] => only.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// Every `client.KIND.claim` read in `expr` (following named conditions) whose kind no `has
/// client.KIND.…` earlier in its `&&` chain proves: the kind, the claim and where it is read.
fn kind_reads<'a>(
    expr: &'a ast::Expr,
    conditions: &HashMap<&str, &'a ast::Expr>,
    proven: &[&'a str],
    reads: &mut Vec<(&'a str, &'a str, Span)>,
    depth: u32,
) {
    if depth > MAX_FOLD_DEPTH {
        return;
    }
    let mut operand = |operand: &'a ast::Expr| {
        if let Some((kind, claim)) = client_claim(operand)
            && !proven.contains(&kind)
        {
            reads.push((kind, claim, operand.span));
        }
    };
    match &expr.kind {
        ExprKind::And(_, _) => {
            let mut conjuncts = Vec::new();
            flatten_and(expr, &mut conjuncts);
            let mut proven = proven.to_vec();
            for conjunct in conjuncts {
                kind_reads(conjunct, conditions, &proven, reads, depth + 1);
                if let ExprKind::Has(path) = &conjunct.kind
                    && let [client, kind, _] = path.as_slice()
                    && client.name == "client"
                {
                    proven.push(&kind.name);
                }
            }
        }
        ExprKind::Or(left, right) => {
            kind_reads(left, conditions, proven, reads, depth + 1);
            kind_reads(right, conditions, proven, reads, depth + 1);
        }
        ExprKind::Not(inner) => kind_reads(inner, conditions, proven, reads, depth + 1),
        ExprKind::Compare(left, _, right) => {
            operand(left);
            operand(right);
        }
        ExprKind::Within(time, _) => operand(time),
        ExprKind::Path(path) => match path.as_slice() {
            [name] => {
                if let Some(body) = conditions.get(name.name.as_str()) {
                    kind_reads(body, conditions, proven, reads, depth + 1);
                }
            }
            _ => operand(expr),
        },
        _ => {}
    }
}

/// The kinds that `has client.KIND.claim` conjuncts of the top-level `&&` chain of `expr`
/// require of the caller, and where.
fn kind_guards(expr: &ast::Expr) -> impl Iterator<Item = (&str, Span)> {
    let mut conjuncts = Vec::new();
    flatten_and(expr, &mut conjuncts);
    conjuncts
        .into_iter()
        .filter_map(|conjunct| match &conjunct.kind {
            ExprKind::Has(path) => match path.as_slice() {
                [client, kind, _] if client.name == "client" => {
                    Some((kind.name.as_str(), conjunct.span))
                }
                _ => None,
            },
            _ => None,
        })
}

/// The kind and claim of a `client.KIND.claim` path.
fn client_claim(expr: &ast::Expr) -> Option<(&str, &str)> {
    let ExprKind::Path(path) = &expr.kind else {
        return None;
    };
    match path.as_slice() {
        [client, kind, claim] if client.name == "client" => Some((&kind.name, &claim.name)),
        _ => None,
    }
}

fn effect_word(effect: Effect) -> &'static str {
    match effect {
        Effect::Permit => "permit",
        Effect::Forbid => "forbid",
    }
}

/// Why an expression never holds.
#[derive(Debug, Clone)]
enum Why {
    /// Two comparisons of one `&&` chain that no value satisfies together: the first, the
    /// second, and the path they constrain.
    Contradiction(Span, Span, String),
    /// The expression folds to `false`.
    AlwaysFalse(Span),
    /// The expression is a condition that never holds.
    NeverCondition(Span, String),
}

impl Why {
    fn report(self, what: &str, verb: &str) -> Report {
        let message = format!("{what} can never {verb}");
        match self {
            Why::Contradiction(first, second, path) => Report::new(
                Code::UnsatisfiableRule,
                message,
                second,
                format!("`{path}` cannot also be this"),
            )
            .label(first, "given here")
            .help("no value satisfies both; did you mean `||`, `in [ … ]` or a wider bound?"),
            Why::AlwaysFalse(span) => Report::new(
                Code::UnsatisfiableRule,
                message,
                span,
                "this is always false",
            )
            .help("fix the condition, or remove it"),
            Why::NeverCondition(span, name) => Report::new(
                Code::UnsatisfiableRule,
                message,
                span,
                format!("condition `{name}` never holds"),
            )
            .help(format!("fix condition `{name}`, or stop naming it here")),
        }
    }
}

/// Why `expr` never holds, if the lint can tell: it folds to `false`, names a condition that
/// never holds, or holds a contradiction in an `&&` chain, at any depth below `&&` and `||`.
fn never(expr: &ast::Expr, folder: &Folder<'_>, depth: u32) -> Option<Why> {
    if depth > MAX_FOLD_DEPTH {
        return None;
    }
    if let ExprKind::Path(path) = &expr.kind
        && let [name] = path.as_slice()
        && folder.conditions.contains_key(name.name.as_str())
        && folder.verdict(&name.name).never.is_some()
    {
        return Some(Why::NeverCondition(expr.span, name.name.clone()));
    }
    if folder.fold(expr, 0) == Some(false) {
        return Some(Why::AlwaysFalse(expr.span));
    }
    // A port is from 1 to 65535, whatever the target.
    if let Some((path, fact)) = fact_of(expr)
        && path == "target.port"
        && conflicts(&fact, &Fact::Within(1, i64::from(u16::MAX)))
    {
        return Some(Why::AlwaysFalse(expr.span));
    }
    match &expr.kind {
        ExprKind::And(_, _) => {
            if let Some((first, second, path)) = contradiction(expr) {
                return Some(Why::Contradiction(first, second, path));
            }
            let mut conjuncts = Vec::new();
            flatten_and(expr, &mut conjuncts);
            conjuncts
                .into_iter()
                .find_map(|conjunct| never(conjunct, folder, depth + 1))
        }
        ExprKind::Or(left, right) => {
            never(left, folder, depth + 1)?;
            never(right, folder, depth + 1)?;
            Some(Why::AlwaysFalse(expr.span))
        }
        _ => None,
    }
}

/// Expressions are folded at most this deep; deeper parts are taken as unknown. A named
/// condition's body starts again at depth 0: the checker has refused cycles and chains deeper
/// than [`crate::bytecode::MAX_CONDITION_DEPTH`], so that recursion ends.
const MAX_FOLD_DEPTH: u32 = 64;

/// Folds expressions to constants, reading the named conditions a `when` refers to.
struct Folder<'a> {
    /// Empty inside a workload alternative, where a bare name is a claim.
    conditions: HashMap<&'a str, &'a ast::Expr>,
    /// What is known of each named condition, worked out once, when it is first read.
    verdicts: RefCell<HashMap<&'a str, Verdict>>,
}

/// What the lint knows of a named condition.
#[derive(Debug, Clone, Default)]
struct Verdict {
    /// Its value, when it is constant.
    value: Option<bool>,
    /// Why it never holds, when it never does.
    never: Option<Why>,
}

impl<'a> Folder<'a> {
    fn new(conditions: HashMap<&'a str, &'a ast::Expr>) -> Folder<'a> {
        Folder {
            conditions,
            verdicts: RefCell::new(HashMap::new()),
        }
    }

    /// The verdict on the condition `name`; unknown for a name that is not a condition.
    fn verdict(&self, name: &str) -> Verdict {
        let Some((&name, &body)) = self.conditions.get_key_value(name) else {
            return Verdict::default();
        };
        if let Some(known) = self.verdicts.borrow().get(name) {
            return known.clone();
        }
        let verdict = Verdict {
            value: self.fold(body, 0),
            never: never(body, self, 0),
        };
        self.verdicts.borrow_mut().insert(name, verdict.clone());
        verdict
    }

    /// The value of `expr` when it is constant after folding literals, connectives and named
    /// conditions.
    fn fold(&self, expr: &ast::Expr, depth: u32) -> Option<bool> {
        if depth > MAX_FOLD_DEPTH {
            return None;
        }
        let fold = |expr: &ast::Expr| self.fold(expr, depth + 1);
        match &expr.kind {
            ExprKind::Bool(value) => Some(*value),
            ExprKind::Path(path) => match path.as_slice() {
                [name] => {
                    let verdict = self.verdict(&name.name);
                    verdict.value.or(verdict.never.map(|_| false))
                }
                _ => None,
            },
            ExprKind::Not(inner) => fold(inner).map(|value| !value),
            ExprKind::And(left, right) => match (fold(left), fold(right)) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            ExprKind::Or(left, right) => match (fold(left), fold(right)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            ExprKind::Compare(left, op, right) => fold_comparison(left, *op, right),
            _ => None,
        }
    }
}

/// The value of a comparison of two literals.
fn fold_comparison(left: &ast::Expr, op: CompareOp, right: &ast::Expr) -> Option<bool> {
    let left = scalar(left)?;
    match (op, &right.kind) {
        (CompareOp::Eq, _) => Some(left == scalar(right)?),
        (CompareOp::Ne, _) => Some(left != scalar(right)?),
        (CompareOp::In, ExprKind::Set(items)) if !items.iter().any(is_cidr) => {
            let items: Option<Vec<Scalar>> = items.iter().map(scalar).collect();
            Some(items?.contains(&left))
        }
        (CompareOp::In, ExprKind::Range(low, high)) => match left {
            Scalar::Int(value) => Some((*low..=*high).contains(&value)),
            _ => None,
        },
        (CompareOp::Lt | CompareOp::Le | CompareOp::Gt | CompareOp::Ge, _) => {
            match (left, scalar(right)?) {
                (Scalar::Int(a), Scalar::Int(b)) => Some(match op {
                    CompareOp::Lt => a < b,
                    CompareOp::Le => a <= b,
                    CompareOp::Gt => a > b,
                    _ => a >= b,
                }),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A literal scalar, comparable for folding.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scalar {
    Str(String),
    Int(i64),
    Bool(bool),
}

fn scalar(expr: &ast::Expr) -> Option<Scalar> {
    match &expr.kind {
        ExprKind::Str(value) => Some(Scalar::Str(value.clone())),
        ExprKind::Int(value) => Some(Scalar::Int(*value)),
        ExprKind::Bool(value) => Some(Scalar::Bool(*value)),
        _ => None,
    }
}

/// What a conjunct says about a path: it equals one value, is one of a set, differs from a
/// value, or is an integer within bounds (both inclusive).
#[derive(Debug)]
enum Fact {
    Is(Scalar),
    OneOf(Vec<Scalar>),
    IsNot(Scalar),
    Within(i64, i64),
}

/// Two comparisons in the top-level `&&` chain of `expr` that no value satisfies together:
/// the span of the first, of the second, and the path they constrain. Equality, sets, integer
/// ranges and `<`/`>` bounds take part; CIDR ranges, patterns and anything under `!` do not.
fn contradiction(expr: &ast::Expr) -> Option<(Span, Span, String)> {
    let mut conjuncts = Vec::new();
    flatten_and(expr, &mut conjuncts);
    let mut facts: HashMap<String, Vec<(Fact, Span)>> = HashMap::new();
    for conjunct in conjuncts {
        let Some((path, fact)) = fact_of(conjunct) else {
            continue;
        };
        let known = facts.entry(path.clone()).or_default();
        if let Some((_, first)) = known.iter().find(|(earlier, _)| conflicts(earlier, &fact)) {
            return Some((*first, conjunct.span, path));
        }
        known.push((fact, conjunct.span));
    }
    None
}

fn flatten_and<'a>(expr: &'a ast::Expr, out: &mut Vec<&'a ast::Expr>) {
    if let ExprKind::And(left, right) = &expr.kind {
        flatten_and(left, out);
        flatten_and(right, out);
    } else {
        out.push(expr);
    }
}

fn fact_of(expr: &ast::Expr) -> Option<(String, Fact)> {
    let ExprKind::Compare(left, op, right) = &expr.kind else {
        return None;
    };
    // With the path on the left: `5 < port` says what `port > 5` says.
    let (path, op, other) = match (&left.kind, &right.kind) {
        (ExprKind::Path(path), _) => (path, *op, right),
        (_, ExprKind::Path(path)) => {
            let flipped = match op {
                CompareOp::Eq | CompareOp::Ne => *op,
                CompareOp::Lt => CompareOp::Gt,
                CompareOp::Le => CompareOp::Ge,
                CompareOp::Gt => CompareOp::Lt,
                CompareOp::Ge => CompareOp::Le,
                _ => return None,
            };
            (path, flipped, left)
        }
        _ => return None,
    };
    let path: Vec<&str> = path.iter().map(|ident| ident.name.as_str()).collect();
    let fact = match (op, &other.kind) {
        (CompareOp::Eq, _) => Fact::Is(scalar(other)?),
        (CompareOp::Ne, _) => Fact::IsNot(scalar(other)?),
        // A set of CIDR ranges tests addresses, not equality.
        (CompareOp::In, ExprKind::Set(items)) if !items.iter().any(is_cidr) => {
            Fact::OneOf(items.iter().map(scalar).collect::<Option<Vec<_>>>()?)
        }
        (CompareOp::In, ExprKind::Range(low, high)) => Fact::Within(*low, *high),
        (CompareOp::Lt, ExprKind::Int(bound)) => Fact::Within(i64::MIN, bound.checked_sub(1)?),
        (CompareOp::Le, ExprKind::Int(bound)) => Fact::Within(i64::MIN, *bound),
        (CompareOp::Gt, ExprKind::Int(bound)) => Fact::Within(bound.checked_add(1)?, i64::MAX),
        (CompareOp::Ge, ExprKind::Int(bound)) => Fact::Within(*bound, i64::MAX),
        _ => return None,
    };
    Some((path.join("."), fact))
}

fn is_cidr(expr: &ast::Expr) -> bool {
    let ExprKind::Str(text) = &expr.kind else {
        return false;
    };
    text.split_once('/')
        .is_some_and(|(address, _)| address.parse::<std::net::IpAddr>().is_ok())
}

fn conflicts(a: &Fact, b: &Fact) -> bool {
    let within = |value: &Scalar, low: i64, high: i64| match value {
        Scalar::Int(value) => (low..=high).contains(value),
        _ => true,
    };
    match (a, b) {
        (Fact::Is(x), Fact::Is(y)) => x != y,
        (Fact::Is(x), Fact::IsNot(y)) | (Fact::IsNot(y), Fact::Is(x)) => x == y,
        (Fact::Is(x), Fact::OneOf(set)) | (Fact::OneOf(set), Fact::Is(x)) => !set.contains(x),
        (Fact::OneOf(a), Fact::OneOf(b)) => !a.iter().any(|x| b.contains(x)),
        (Fact::Within(a_low, a_high), Fact::Within(b_low, b_high)) => {
            a_low.max(b_low) > a_high.min(b_high)
        }
        (Fact::Is(x), Fact::Within(low, high)) | (Fact::Within(low, high), Fact::Is(x)) => {
            !within(x, *low, *high)
        }
        (Fact::OneOf(set), Fact::Within(low, high))
        | (Fact::Within(low, high), Fact::OneOf(set)) => {
            !set.iter().any(|x| within(x, *low, *high))
        }
        _ => false,
    }
}

// W0401, W0402: static secrets and long-lived credentials.

fn credentials(decls: &Decls<'_>, options: &LintOptions, reports: &mut Vec<Report>) {
    for credential in &decls.credentials {
        let Some(block) = credential.blocks.first() else {
            continue;
        };
        if block.protocol.name == "static" {
            let message = format!("credential `{}` is a static secret", credential.name.name);
            let report = Report::new(
                Code::StaticSecret,
                message,
                block.protocol.span,
                "a stored secret, the same for every caller",
            )
            .help("prefer a credential minted per request: `jwt`, `oauth_client_credentials` or `postgres_role`");
            reports.push(report);
        }
        let ttl = block
            .fields
            .iter()
            .find_map(|field| match field.value.kind {
                ExprKind::Duration(seconds) if field.key.name == "ttl" => {
                    Some((seconds, field.value.span))
                }
                _ => None,
            });
        let Some((ttl_s, span)) = ttl else {
            continue;
        };
        if ttl_s <= options.max_credential_ttl_s {
            continue;
        }
        let max = format_duration(options.max_credential_ttl_s);
        let message = format!(
            "credential `{}` lives for {}, longer than {max}",
            credential.name.name,
            format_duration(ttl_s)
        );
        let report = Report::new(
            Code::LongCredentialTtl,
            message,
            span,
            format!("the maximum is {max}"),
        )
        .help(format!(
            "lower `ttl` to {max} or less, or raise the maximum with `policyc check --max-ttl`"
        ));
        reports.push(report);
    }
}

// W0403: two permits that overlap with different credentials.

fn overlapping_permits(decls: &Decls<'_>, reports: &mut Vec<Report>) {
    // Only the first permit that covers the same requests decides them.
    let mut first: HashMap<(String, String), &Rule<'_>> = HashMap::new();
    for later in decls.permits().filter(|rule| rule.when.is_none()) {
        let key = (
            workload_key(later.workload_selector()),
            target_key(later.target_selector()),
        );
        let Some(earlier) = first.get(&key).copied() else {
            first.insert(key, later);
            continue;
        };
        if credential_name(earlier) == credential_name(later) {
            continue;
        }
        let message = format!(
            "permit `{}` overlaps `{}` with another credential",
            later.name(),
            earlier.name()
        );
        let issued = match credential_name(later) {
            Some(name) => format!("credential `{name}` is never issued"),
            None => "this permit never decides".to_owned(),
        };
        let report = Report::new(
            Code::OverlappingCredentials,
            message,
            later.decl.name.span,
            issued,
        )
        .label(
            earlier.decl.name.span,
            "decides first, in declaration order",
        )
        .help("give one of them a `when` that tells them apart, or merge them");
        reports.push(report);
    }
}

// W0404: a `jwt` credential issued for more than one target.

fn shared_tokens(decls: &Decls<'_>, reports: &mut Vec<Report>) {
    for credential in &decls.credentials {
        let Some(block) = credential.blocks.first() else {
            continue;
        };
        if block.protocol.name != "jwt" {
            continue;
        }
        let name = credential.name.name.as_str();
        // The first permit that issues it for each target clause, in declaration order.
        let mut issuing: Vec<(String, &Rule<'_>)> = Vec::new();
        for rule in decls
            .permits()
            .filter(|rule| credential_name(rule) == Some(name))
        {
            let key = target_key(rule.target_selector());
            if !issuing.iter().any(|(known, _)| *known == key) {
                issuing.push((key, rule));
            }
        }
        let any = issuing.iter().any(|(key, _)| key == "any");
        if issuing.len() < 2 && !any {
            continue;
        }
        let audience = block
            .fields
            .iter()
            .find_map(|field| match &field.value.kind {
                ExprKind::Str(text) if field.key.name == "audience" => Some(text.as_str()),
                _ => None,
            });
        let message = if any {
            format!("credential `{name}` is issued for any target")
        } else {
            format!("credential `{name}` is issued for more than one target")
        };
        let minted = match audience {
            Some(audience) => format!("every token it mints has the audience `{audience}`"),
            None => "every token it mints has the same audience".to_owned(),
        };
        let mut report = Report::new(
            Code::SharedTokenCredential,
            message,
            credential.name.span,
            minted,
        );
        for (key, rule) in &issuing {
            let label = if key == "any" {
                "issues it for any target".to_owned()
            } else {
                format!("issues it for target `{key}`")
            };
            report = report.label(rule.decl.name.span, label);
        }
        let report = report.help(
            "a token minted for one target is then taken by the others; declare a `jwt` \
             credential per target, each with that target's own `audience`",
        );
        reports.push(report);
    }
}

fn credential_name<'a>(rule: &Rule<'a>) -> Option<&'a str> {
    rule.credential.map(|name| name.name.as_str())
}

/// A key equal for two workload clauses exactly when they select the same callers as written.
fn workload_key(selector: &WorkloadSelector) -> String {
    match selector {
        WorkloadSelector::Any => "any".to_owned(),
        WorkloadSelector::AnyOfKind(kind) => format!("any {}", kind.name),
        WorkloadSelector::Named(name) => name.name.clone(),
    }
}

/// A key equal for two target clauses exactly when they select the same targets as written.
fn target_key(selector: &TargetSelector) -> String {
    match selector {
        TargetSelector::Any => "any".to_owned(),
        TargetSelector::Named(name) => name.name.clone(),
    }
}
