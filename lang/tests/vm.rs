//! Decisions of the VM on hand-built policy sets: one test per rule of the semantics in
//! `docs/gate.md`, each checking the outcome, the deciding rule, the workload and the reason.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod vm_common;

use portcullis_lang::bundle::Bundle;
use portcullis_lang::ir::{
    Alternative, Annotations, Effect, Expr, PolicySet, Protocol, RequestField, Rule, Target,
    TargetId, TargetRef, Value, Workload, WorkloadId, WorkloadRef,
};
use portcullis_lang::schema::{ClaimValue, ProviderKind};
use portcullis_lang::vm::{Decision, EvalError, Program, Reason, Request, TargetQuery};
use vm_common::{claims, request};

use ProviderKind::{Github, Kubernetes, Oidc};

fn claim(kind: ProviderKind, name: &str) -> Expr {
    let (claim, _) = kind.claim(name).unwrap();
    Expr::Claim { kind, claim }
}

fn has(kind: ProviderKind, name: &str) -> Expr {
    let (claim, _) = kind.claim(name).unwrap();
    Expr::HasClaim { kind, claim }
}

fn text(value: &str) -> Expr {
    Expr::Const(Value::String(value.to_owned()))
}

fn eq(left: Expr, right: Expr) -> Expr {
    Expr::Eq(Box::new(left), Box::new(right))
}

fn and(left: Expr, right: Expr) -> Expr {
    Expr::And(Box::new(left), Box::new(right))
}

fn not(inner: Expr) -> Expr {
    Expr::Not(Box::new(inner))
}

fn one_of(left: Expr, values: &[&str]) -> Expr {
    let values = values
        .iter()
        .map(|value| Value::String((*value).to_owned()))
        .collect();
    Expr::In(Box::new(left), values)
}

fn like(left: Expr, pattern: &str) -> Expr {
    Expr::Like(Box::new(left), pattern.to_owned())
}

fn workload(name: &str, kind: ProviderKind, condition: Expr) -> Workload {
    Workload {
        name: name.to_owned(),
        alternatives: vec![Alternative { kind, condition }],
    }
}

fn target(name: &str, protocol: Protocol, host: &str, port: u16) -> Target {
    Target {
        name: name.to_owned(),
        protocol,
        host: host.to_owned(),
        port,
        database: None,
        path_prefix: None,
    }
}

fn rule(name: &str, effect: Effect, workload: WorkloadRef, target: TargetRef) -> Rule {
    Rule {
        name: name.to_owned(),
        effect,
        workload,
        target,
        when: None,
        credential: None,
        annotations: Annotations::default(),
    }
}

fn permit(name: &str, workload: u32, target: u32) -> Rule {
    let (workload, target) = (WorkloadRef::Named(WorkloadId(workload)), TargetId(target));
    rule(name, Effect::Permit, workload, TargetRef::Named(target))
}

fn when(mut rule: Rule, condition: Expr) -> Rule {
    rule.when = Some(condition);
    rule
}

const BILLING_API: u32 = 0;
const ORDERS_DB: u32 = 1;
const DOCS: u32 = 2;

/// A policy set like the examples: GitHub, Kubernetes and OIDC callers, three targets.
fn policy_set() -> PolicySet {
    let workloads = vec![
        workload(
            "billing_release",
            Github,
            and(
                and(
                    eq(claim(Github, "repository"), text("acme/billing")),
                    like(claim(Github, "ref"), "refs/tags/v*"),
                ),
                and(
                    has(Github, "environment"),
                    eq(claim(Github, "environment"), text("production")),
                ),
            ),
        ),
        workload(
            "billing_ci",
            Github,
            and(
                eq(claim(Github, "repository"), text("acme/billing")),
                one_of(claim(Github, "event_name"), &["push", "pull_request"]),
            ),
        ),
        workload(
            "orders_api",
            Kubernetes,
            and(
                eq(claim(Kubernetes, "namespace"), text("orders")),
                eq(claim(Kubernetes, "service_account"), text("api")),
            ),
        ),
        workload(
            "docs_reader",
            Oidc,
            one_of(claim(Oidc, "aud"), &["portcullis", "docs"]),
        ),
        // Reads an optional claim without `has`, which the checker would refuse: the VM must
        // still deny with an evaluation error when the claim is absent.
        workload(
            "staging_jobs",
            Github,
            eq(claim(Github, "environment"), text("staging")),
        ),
    ];
    let mut billing_api = target("billing_api", Protocol::Https, "billing.internal", 443);
    billing_api.path_prefix = Some("/v1/".to_owned());
    let mut orders_db = target("orders_db", Protocol::Postgres, "orders.db.internal", 5432);
    orders_db.database = Some("orders".to_owned());
    let targets = vec![
        billing_api,
        orders_db,
        target("docs", Protocol::Http, "docs.internal", 8080),
    ];
    let action = || Expr::Request(RequestField::Action);
    let rules = vec![
        when(
            permit("billing_release_deploys", 0, BILLING_API),
            one_of(action(), &["POST", "PUT"]),
        ),
        when(
            permit("billing_ci_reads_api", 1, BILLING_API),
            one_of(action(), &["GET", "HEAD"]),
        ),
        permit("orders_api_uses_orders_db", 2, ORDERS_DB),
        permit("docs_readers_read_docs", 3, DOCS),
        permit("staging_jobs_read_docs", 4, DOCS),
        when(
            rule(
                "no_pull_request_target",
                Effect::Forbid,
                WorkloadRef::AnyOfKind(Github),
                TargetRef::Any,
            ),
            eq(claim(Github, "event_name"), text("pull_request_target")),
        ),
        when(
            rule(
                "only_acme",
                Effect::Forbid,
                WorkloadRef::AnyOfKind(Github),
                TargetRef::Any,
            ),
            not(eq(claim(Github, "repository_owner"), text("acme"))),
        ),
    ];
    PolicySet {
        workloads,
        targets,
        credentials: Vec::new(),
        conditions: Vec::new(),
        rules,
        custom_claims: Default::default(),
    }
}

fn load(set: &PolicySet) -> Program {
    Program::from_bundle(Bundle::from_policy_set(set).unwrap()).unwrap()
}

/// A GitHub Actions caller of acme/billing, with `extra` claims added or replaced.
fn github(extra: &[(&str, &str)]) -> Vec<Option<ClaimValue>> {
    let mut pairs = vec![
        ("iss", "https://token.actions.githubusercontent.com"),
        ("sub", "repo:acme/billing:ref:refs/tags/v1.2.0"),
        ("aud", "portcullis"),
        ("repository", "acme/billing"),
        ("repository_id", "1"),
        ("repository_owner", "acme"),
        ("repository_owner_id", "2"),
        ("ref", "refs/tags/v1.2.0"),
        ("sha", "0123abcd"),
        ("event_name", "push"),
    ];
    for (name, value) in extra {
        pairs.retain(|(known, _)| known != name);
        pairs.push((name, value));
    }
    claims(Github, &pairs)
}

fn orders_api() -> Vec<Option<ClaimValue>> {
    claims(
        Kubernetes,
        &[
            ("iss", "https://kubernetes.default.svc"),
            ("sub", "system:serviceaccount:orders:api"),
            ("aud", "portcullis"),
            ("namespace", "orders"),
            ("service_account", "api"),
            ("service_account_uid", "uid-1"),
        ],
    )
}

/// The outcome in one line: allow or deny, rule, workload, reason code and text.
fn summary(decision: &Decision<'_>) -> String {
    format!(
        "{} rule={} workload={} target={} {}: {}",
        if decision.allow { "allow" } else { "deny" },
        decision.rule.unwrap_or("-"),
        decision.workload.unwrap_or("-"),
        decision.target.map_or("-", |target| target.name.as_str()),
        decision.reason.code(),
        decision.reason_text(),
    )
}

/// A GitHub caller's `POST /v1/invoices` on `billing_api`.
fn post_invoices(claims: &[Option<ClaimValue>]) -> Request<'_> {
    request(
        Github,
        claims,
        "billing_api",
        Some("POST"),
        Some("/v1/invoices"),
    )
}

fn check(program: &Program, request: &Request<'_>, expected: &str) {
    assert_eq!(summary(&program.decide(request)), expected);
}

#[test]
fn permit_allows() {
    let program = load(&policy_set());
    let claims = github(&[("environment", "production")]);
    let request = post_invoices(&claims);
    let decision = program.decide(&request);
    assert!(decision.allow);
    assert_eq!(
        decision.reason,
        Reason::Permitted {
            rule: "billing_release_deploys"
        }
    );
    assert_eq!(decision.target, program.target("billing_api"));
    check(
        &program,
        &request,
        "allow rule=billing_release_deploys workload=billing_release target=billing_api \
         permitted: permitted by rule `billing_release_deploys`",
    );
}

#[test]
fn no_permit_denies() {
    let program = load(&policy_set());
    let claims = github(&[]);
    check(
        &program,
        &post_invoices(&claims),
        "deny rule=- workload=billing_ci target=billing_api no_permit: \
         no permit rule allows workload `billing_ci` on target `billing_api`",
    );
    let stranger = github(&[("repository", "acme/other"), ("event_name", "schedule")]);
    check(
        &program,
        &request(Github, &stranger, "orders_db", None, Some("orders/api")),
        "deny rule=- workload=- target=orders_db no_permit: \
         no permit rule allows this caller on target `orders_db`",
    );
}

#[test]
fn forbid_wins_over_permit() {
    let program = load(&policy_set());
    let claims = github(&[
        ("environment", "production"),
        ("event_name", "pull_request_target"),
    ]);
    check(
        &program,
        &post_invoices(&claims),
        "deny rule=no_pull_request_target workload=billing_release target=billing_api \
         forbidden: forbidden by rule `no_pull_request_target`",
    );
    let fork = github(&[
        ("repository_owner", "mallory"),
        ("environment", "production"),
    ]);
    check(
        &program,
        &post_invoices(&fork),
        "deny rule=only_acme workload=billing_release target=billing_api \
         forbidden: forbidden by rule `only_acme`",
    );
}

#[test]
fn evaluation_error_denies() {
    let program = load(&policy_set());
    let claims = github(&[]);
    let request = request(Github, &claims, "docs", Some("GET"), Some("/index.html"));
    let decision = program.decide(&request);
    assert_eq!(
        decision.reason,
        Reason::EvaluationError {
            rule: "staging_jobs_read_docs",
            error: EvalError::AbsentClaim {
                kind: Github,
                claim: "environment"
            },
        }
    );
    // The error came from telling whether the caller is `staging_jobs`, so the decision does
    // not say it is: it reports the first workload the caller is.
    check(
        &program,
        &request,
        "deny rule=staging_jobs_read_docs workload=billing_ci target=docs evaluation_error: \
         evaluation error in rule `staging_jobs_read_docs`: claim `environment` is absent",
    );
}

#[test]
fn has_guards_an_absent_optional_claim() {
    let program = load(&policy_set());
    let without = github(&[]);
    let with_staging = github(&[("environment", "staging")]);
    let with_production = github(&[("environment", "production")]);
    let deploy = |claims| request(Github, claims, "billing_api", Some("PUT"), Some("/v1/x"));
    assert_eq!(program.decide(&deploy(&without)).reason, Reason::NoPermit);
    assert_eq!(
        program.decide(&deploy(&with_staging)).reason,
        Reason::NoPermit
    );
    let allowed = program.decide(&deploy(&with_production));
    assert_eq!(
        allowed.reason,
        Reason::Permitted {
            rule: "billing_release_deploys"
        }
    );
}

#[test]
fn in_meets_the_audience_set() {
    let program = load(&policy_set());
    let base = [("iss", "https://idp.example"), ("sub", "svc-docs")];
    let reader = claims(Oidc, &[base[0], base[1], ("aud", "other,docs")]);
    let stranger = claims(Oidc, &[base[0], base[1], ("aud", "other,portcullis-admin")]);
    let decision = program.decide(&request(Oidc, &reader, "docs", Some("GET"), None));
    assert_eq!(
        decision.reason,
        Reason::Permitted {
            rule: "docs_readers_read_docs"
        }
    );
    assert_eq!(decision.workload, Some("docs_reader"));
    let decision = program.decide(&request(Oidc, &stranger, "docs", Some("GET"), None));
    assert_eq!(decision.reason, Reason::NoPermit);
    assert_eq!(decision.workload, None);
}

#[test]
fn like_matches_globs() {
    let program = load(&policy_set());
    for (git_ref, allow) in [
        ("refs/tags/v1.2.0", true),
        ("refs/tags/v", true),
        ("refs/heads/main", false),
        ("refs/tags/release-1", false),
    ] {
        let claims = github(&[("ref", git_ref), ("environment", "production")]);
        let request = request(Github, &claims, "billing_api", Some("POST"), Some("/v1/x"));
        assert_eq!(program.decide(&request).allow, allow, "{git_ref}");
    }
}

#[test]
fn claim_of_another_kind_is_an_error() {
    let mut set = policy_set();
    set.rules.insert(
        0,
        when(
            rule(
                "no_mallory",
                Effect::Forbid,
                WorkloadRef::Any,
                TargetRef::Named(TargetId(ORDERS_DB)),
            ),
            eq(claim(Github, "repository_owner"), text("mallory")),
        ),
    );
    let program = load(&set);
    let claims = orders_api();
    let decision = program.decide(&request(
        Kubernetes,
        &claims,
        "orders_db",
        None,
        Some("orders/api"),
    ));
    assert!(!decision.allow);
    assert_eq!(
        decision.reason,
        Reason::EvaluationError {
            rule: "no_mallory",
            error: EvalError::WrongKind {
                expected: Github,
                actual: Kubernetes
            },
        }
    );
    assert_eq!(decision.workload, Some("orders_api"));
    // The same caller on a target that rule does not cover is allowed.
    let program = load(&policy_set());
    assert!(
        program
            .decide(&request(
                Kubernetes,
                &claims,
                "orders_db",
                None,
                Some("orders/api")
            ))
            .allow
    );
}

#[test]
fn has_of_another_kind_is_false() {
    let mut set = policy_set();
    set.rules.insert(
        0,
        when(
            rule(
                "no_prod_from_ci",
                Effect::Forbid,
                WorkloadRef::Any,
                TargetRef::Any,
            ),
            has(Github, "environment"),
        ),
    );
    let program = load(&set);
    let claims = orders_api();
    assert!(
        program
            .decide(&request(
                Kubernetes,
                &claims,
                "orders_db",
                None,
                Some("orders/api")
            ))
            .allow
    );
}

#[test]
fn target_by_endpoint() {
    let program = load(&policy_set());
    let claims = orders_api();
    let at = |protocol, host, port| Request {
        kind: Kubernetes,
        claims: &claims,
        target: TargetQuery::Endpoint {
            protocol,
            host,
            port,
        },
        action: Some("connect"),
        resource: Some("orders"),
        source_ip: None,
        time: Some(0),
    };
    let decision = program.decide(&at("postgres", "orders.db.internal", 5432));
    assert!(decision.allow);
    assert_eq!(
        decision.target.map(|target| target.name.as_str()),
        Some("orders_db")
    );
    assert!(
        program
            .decide(&at("POSTGRES", "Orders.DB.internal", 5432))
            .allow
    );
    check(
        &program,
        &at("postgres", "orders.db.internal", 5433),
        "deny rule=- workload=orders_api target=- unknown_target: \
         no target is declared for postgres://orders.db.internal:5433",
    );
    let decision = program.decide(&at("https", "orders.db.internal", 5432));
    assert_eq!(decision.reason, Reason::UnknownTarget);
}

#[test]
fn unknown_target_denies() {
    let program = load(&policy_set());
    let claims = orders_api();
    check(
        &program,
        &request(Kubernetes, &claims, "orders_database", None, None),
        "deny rule=- workload=orders_api target=- unknown_target: \
         unknown target `orders_database`",
    );
    check(
        &program,
        &request(Kubernetes, &claims, "x\n`y", None, None),
        "deny rule=- workload=orders_api target=- unknown_target: unknown target `x\\n\\`y`",
    );
    assert!(program.target("orders_database").is_none());
}

#[test]
fn resource_outside_path_prefix_denies() {
    let program = load(&policy_set());
    let claims = github(&[("environment", "production")]);
    let deploy = |resource| request(Github, &claims, "billing_api", Some("POST"), resource);
    assert!(program.decide(&deploy(Some("/v1/invoices/7"))).allow);
    for resource in [
        Some("/v2/invoices"),
        Some("/v1/../admin"),
        Some("/admin"),
        None,
    ] {
        let decision = program.decide(&deploy(resource));
        assert_eq!(decision.reason, Reason::PathOutsidePrefix, "{resource:?}");
        assert_eq!(decision.workload, Some("billing_release"));
    }
    assert_eq!(
        program.decide(&deploy(Some("/admin"))).reason_text(),
        "the resource is outside the path prefix `/v1/` of target `billing_api`"
    );
    assert_eq!(
        program.decide(&deploy(None)).reason_text(),
        "the request names no resource, and target `billing_api` only allows paths under `/v1/`"
    );
}

#[test]
fn resource_naming_another_database_denies() {
    let program = load(&policy_set());
    let claims = orders_api();
    let connect = |resource| request(Kubernetes, &claims, "orders_db", Some("connect"), resource);
    for resource in ["orders/api", "orders", "orders/"] {
        assert!(program.decide(&connect(Some(resource))).allow, "{resource}");
    }
    for resource in [
        Some("billing/api"),
        Some("orders_archive/api"),
        Some("Orders/api"),
        Some("/orders/api"),
        Some(""),
        None,
    ] {
        let decision = program.decide(&connect(resource));
        assert_eq!(decision.reason, Reason::DatabaseMismatch, "{resource:?}");
        assert_eq!(decision.workload, Some("orders_api"));
        assert!(decision.credential.is_none());
    }
    assert_eq!(
        program.decide(&connect(Some("billing/api"))).reason_text(),
        "the resource names a database other than `orders` of target `orders_db`"
    );
    assert_eq!(
        program.decide(&connect(None)).reason_text(),
        "the request names no resource, and target `orders_db` only allows database `orders`"
    );
}

#[test]
fn a_workload_is_evaluated_once_per_decision() {
    // The budget is the number of instructions in the bundle, so evaluating the workload
    // once per rule would run past it.
    let mut set = policy_set();
    set.workloads.truncate(1);
    set.targets.truncate(1);
    let action = |value| eq(Expr::Request(RequestField::Action), text(value));
    set.rules = ["DELETE", "PATCH", "OPTIONS"]
        .iter()
        .enumerate()
        .map(|(idx, verb)| when(permit(&format!("rule_{idx}"), 0, BILLING_API), action(verb)))
        .collect();
    let program = load(&set);
    let claims = github(&[("environment", "production")]);
    let decision = program.decide(&request(
        Github,
        &claims,
        "billing_api",
        Some("GET"),
        Some("/v1/"),
    ));
    assert_eq!(decision.reason, Reason::NoPermit);
    assert_eq!(decision.workload, Some("billing_release"));
}

#[test]
fn reason_codes() {
    let program = load(&policy_set());
    let claims = orders_api();
    let decision = program.decide(&request(Kubernetes, &claims, "nowhere", None, None));
    assert_eq!(decision.reason.code(), "unknown_target");
    let codes = [
        (Reason::Permitted { rule: "r" }, "permitted"),
        (Reason::Forbidden { rule: "r" }, "forbidden"),
        (Reason::NoPermit, "no_permit"),
        (Reason::PathOutsidePrefix, "path_outside_prefix"),
        (Reason::DatabaseMismatch, "database_mismatch"),
        (
            Reason::EvaluationError {
                rule: "r",
                error: EvalError::BudgetExceeded,
            },
            "evaluation_error",
        ),
    ];
    for (reason, code) in codes {
        assert_eq!(reason.code(), code);
    }
}

#[test]
fn round_trip_keeps_hash_and_decisions() {
    let bundle = Bundle::from_policy_set(&policy_set()).unwrap();
    let built = Program::from_bundle(bundle.clone()).unwrap();
    let loaded = Program::load(&bundle.to_bytes()).unwrap();
    assert_eq!(built.hash_hex(), loaded.hash_hex());
    assert_eq!(built.hash_hex(), bundle.hash_hex());
    let github_claims = github(&[("environment", "production")]);
    let fork = github(&[("repository_owner", "mallory")]);
    let kube = orders_api();
    let requests = [
        request(
            Github,
            &github_claims,
            "billing_api",
            Some("POST"),
            Some("/v1/x"),
        ),
        request(
            Github,
            &github_claims,
            "billing_api",
            Some("GET"),
            Some("/v1/x"),
        ),
        request(Github, &fork, "docs", None, None),
        request(Kubernetes, &kube, "orders_db", None, Some("orders/api")),
        request(Kubernetes, &kube, "docs", None, None),
        request(Kubernetes, &kube, "missing", None, None),
    ];
    for request in &requests {
        assert_eq!(built.decide(request), loaded.decide(request));
    }
}

#[test]
fn corrupted_bundles_never_load() {
    let bytes = Bundle::from_policy_set(&policy_set()).unwrap().to_bytes();
    for len in 0..bytes.len() {
        assert!(Program::load(&bytes[..len]).is_err(), "truncated to {len}");
    }
    for at in 0..bytes.len() {
        let mut corrupt = bytes.clone();
        corrupt[at] ^= 0x20;
        assert!(Program::load(&corrupt).is_err(), "byte {at} flipped");
    }
}

#[test]
fn many_workloads() {
    // More workloads than the VM caches without allocating.
    let mut set = policy_set();
    let extra = (0..100).map(|idx| {
        let repository = format!("acme/service-{idx}");
        workload(
            &format!("service_{idx}"),
            Github,
            eq(claim(Github, "repository"), text(&repository)),
        )
    });
    set.workloads.extend(extra);
    let last = u32::try_from(set.workloads.len() - 1).unwrap();
    set.rules
        .push(permit("last_service_reads_docs", last, DOCS));
    let program = load(&set);
    let claims = github(&[("repository", "acme/service-99"), ("environment", "dev")]);
    let decision = program.decide(&request(Github, &claims, "docs", None, None));
    assert_eq!(
        decision.reason,
        Reason::Permitted {
            rule: "last_service_reads_docs"
        }
    );
    assert_eq!(decision.workload, Some("service_99"));
}
