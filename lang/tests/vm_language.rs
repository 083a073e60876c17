//! The language features beyond the first subset, from Gate source to decision: credentials
//! issued by the deciding permit, named conditions, rule annotations, orderings, ranges and
//! regular expressions.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod vm_common;

use portcullis_lang::ir::{CredentialKind, Severity};
use portcullis_lang::schema::{ClaimValue, ProviderKind};
use portcullis_lang::vm::{Decision, EvalError, Program, Reason, Request};
use vm_common::{claims, program_from_source};

/// A GitHub caller of `acme/billing` on `ref`, optionally in an environment.
fn github(git_ref: &str, environment: Option<&str>) -> Vec<Option<ClaimValue>> {
    let mut pairs = vec![
        ("iss", "https://token.actions.githubusercontent.com"),
        ("sub", "repo:acme/billing:ref:refs/heads/main"),
        ("aud", "portcullis"),
        ("repository", "acme/billing"),
        ("repository_id", "1"),
        ("repository_owner", "acme"),
        ("repository_owner_id", "2"),
        ("sha", "0123"),
        ("event_name", "push"),
        ("ref", git_ref),
    ];
    pairs.extend(environment.map(|environment| ("environment", environment)));
    claims(ProviderKind::Github, &pairs)
}

/// A request of a GitHub caller for the target named `target`.
fn request<'a>(
    claims: &'a [Option<ClaimValue>],
    target: &'a str,
    action: Option<&'a str>,
    resource: Option<&'a str>,
) -> Request<'a> {
    vm_common::request(ProviderKind::Github, claims, target, action, resource)
}

/// The decision of `program` on the GitHub caller on `main` asking for `target`.
fn decide_for_main<'p>(
    program: &'p Program,
    target: &str,
    action: Option<&str>,
    resource: Option<&str>,
) -> Decision<'p> {
    let claims = github("refs/heads/main", None);
    program.decide(&request(&claims, target, action, resource))
}

/// The outcome in one line: allow or deny, rule, credential, reason.
fn summary(decision: &Decision<'_>) -> String {
    let credential = decision.credential.map_or("-".to_owned(), |credential| {
        let ttl = credential
            .ttl_s
            .map_or("none".to_owned(), |ttl| ttl.to_string());
        format!("{}:{}:{ttl}", credential.name, credential.kind.keyword())
    });
    format!(
        "{} rule={} credential={credential} {}",
        if decision.allow { "allow" } else { "deny" },
        decision.rule.unwrap_or("-"),
        decision.reason_text(),
    )
}

const CREDENTIALS: &str = r#"
workload billing_ci { github { repository == "acme/billing" } }
workload billing_main { github { repository == "acme/billing" && ref == "refs/heads/main" } }
target orders_db { postgres { host = "orders.db.internal" database = "orders" } }
target api { https { host = "api.internal" } }

credential orders_ro { postgres_role { grant = ["orders_ro"] ttl = 15m } }
credential orders_rw { postgres_role { grant = ["orders_ro", "orders_rw"] ttl = 1h30m } }
credential api_token { jwt { audience = "api" ttl = 5m } }
credential legacy { static { env = "LEGACY_API_TOKEN" } }

// Overlapping permits with different credentials: the first in declaration order decides.
permit main_writes_orders { workload billing_main target orders_db credential orders_rw }
permit ci_reads_orders { workload billing_ci target orders_db credential orders_ro }
permit ci_calls_api {
  workload billing_ci
  target api
  credential api_token
  when request.action == "GET"
}
permit ci_calls_api_legacy { workload billing_ci target api credential legacy }
forbid no_deletes { target api when request.action == "DELETE" }
"#;

#[test]
fn the_first_applying_permit_issues_its_credential() {
    let program = program_from_source(CREDENTIALS);
    let main = github("refs/heads/main", None);
    let branch = github("refs/heads/feature", None);
    let decide = |claims, target, action, resource| {
        summary(&program.decide(&request(claims, target, action, resource)))
    };
    assert_eq!(
        decide(&main, "orders_db", None, Some("orders/ci")),
        "allow rule=main_writes_orders credential=orders_rw:postgres_role:5400 \
         permitted by rule `main_writes_orders`"
    );
    assert_eq!(
        decide(&branch, "orders_db", None, Some("orders")),
        "allow rule=ci_reads_orders credential=orders_ro:postgres_role:900 \
         permitted by rule `ci_reads_orders`"
    );
    assert_eq!(
        decide(&branch, "api", Some("GET"), None),
        "allow rule=ci_calls_api credential=api_token:jwt:300 permitted by rule `ci_calls_api`"
    );
    assert_eq!(
        decide(&branch, "api", Some("POST"), None),
        "allow rule=ci_calls_api_legacy credential=legacy:static:none \
         permitted by rule `ci_calls_api_legacy`"
    );
    assert_eq!(
        decide(&branch, "api", Some("DELETE"), None),
        "deny rule=no_deletes credential=- forbidden by rule `no_deletes`"
    );
}

#[test]
fn a_credential_carries_its_settings() {
    let program = program_from_source(CREDENTIALS);
    let decision = decide_for_main(&program, "orders_db", None, Some("orders"));
    let credential = decision.credential.unwrap();
    assert_eq!(
        credential.kind,
        CredentialKind::PostgresRole {
            grant: vec!["orders_ro".to_owned(), "orders_rw".to_owned()]
        }
    );
    assert_eq!(program.bundle().credentials().len(), 4);
}

const CONDITIONS: &str = r#"
workload billing_ci { github { repository == "acme/billing" } }
target api { https { host = "api.internal" } }

condition reads { request.action in ["GET", "HEAD"] }
condition production { has client.github.environment && client.github.environment == "production" }
condition safe { reads || production }

permit ci_reads_api { workload billing_ci target api when safe && !writes_blocked }
condition writes_blocked { request.action == "DELETE" }
"#;

#[test]
fn conditions_are_read_by_name() {
    let program = program_from_source(CONDITIONS);
    let plain = github("refs/heads/main", None);
    let production = github("refs/heads/main", Some("production"));
    let decide = |claims, action| summary(&program.decide(&request(claims, "api", action, None)));
    assert_eq!(
        decide(&plain, Some("GET")),
        "allow rule=ci_reads_api credential=- permitted by rule `ci_reads_api`"
    );
    assert_eq!(
        decide(&plain, Some("POST")),
        "deny rule=- credential=- no permit rule allows workload `billing_ci` on target `api`"
    );
    assert_eq!(
        decide(&production, Some("POST")),
        "allow rule=ci_reads_api credential=- permitted by rule `ci_reads_api`"
    );
    assert_eq!(
        decide(&production, Some("DELETE")),
        "deny rule=- credential=- no permit rule allows workload `billing_ci` on target `api`"
    );
}

#[test]
fn an_error_inside_a_condition_denies() {
    let program = program_from_source(CONDITIONS);
    let decision = decide_for_main(&program, "api", None, None);
    assert!(!decision.allow);
    assert_eq!(
        decision.reason,
        Reason::EvaluationError {
            rule: "ci_reads_api",
            error: EvalError::AbsentRequestField { field: "action" }
        }
    );
}

#[test]
fn a_condition_read_twice_runs_once() {
    // The budget of a decision is the number of instructions in the bundle. The permit reads
    // `twice` five times and `twice` reads `reads` twice: run every time, that would be more
    // than three times the bundle's instructions, so only memoized conditions fit.
    let program = program_from_source(
        r#"
        workload billing_ci { github { repository == "acme/billing" } }
        target api { https { host = "api.internal" } }
        condition reads { request.action in ["GET", "HEAD"] }
        condition twice { reads && reads }
        permit ci_reads_api {
          workload billing_ci
          target api
          when twice && twice && twice && twice && twice
        }
        "#,
    );
    let decision = decide_for_main(&program, "api", Some("GET"), None);
    assert!(decision.allow, "{}", summary(&decision));
}

#[test]
fn annotations_reach_the_decision() {
    let program = program_from_source(
        r#"
        workload billing_ci { github { repository == "acme/billing" } }
        target api { https { host = "api.internal" } }
        @description("CI may read the API")
        @severity("low")
        permit ci_reads_api { workload billing_ci target api when request.action == "GET" }
        @severity("critical")
        forbid no_deletes { when request.action == "DELETE" }
        "#,
    );
    let decision = decide_for_main(&program, "api", Some("GET"), None);
    let annotations = decision.annotations.unwrap();
    assert_eq!(
        annotations.description.as_deref(),
        Some("CI may read the API")
    );
    assert_eq!(annotations.severity, Some(Severity::Low));
    let decision = decide_for_main(&program, "api", Some("DELETE"), None);
    let annotations = decision.annotations.unwrap();
    assert_eq!(
        (annotations.description.as_deref(), annotations.severity),
        (None, Some(Severity::Critical))
    );
    let decision = decide_for_main(&program, "api", Some("PUT"), None);
    assert_eq!(decision.annotations, None);
}

#[test]
fn orderings_ranges_and_regexes() {
    let program = program_from_source(
        r#"
        workload billing_ci { github { repository == "acme/billing" } }
        target api { https { host = "api.internal" port = 8443 } }
        target admin { https { host = "admin.internal" port = 443 } }
        condition high_port { target.port > 1024 && target.port in 8000..8999 }
        condition short { 15m < 1h && 90s >= 1m30s && 1d <= 24h }
        permit ci_calls_api {
          workload billing_ci
          target any
          when high_port && short && has request.resource
            && request.resource matches "^/v[0-9]+/(invoices|orders)(/|$)"
        }
        "#,
    );
    for (target, resource, allow) in [
        ("api", "/v1/invoices", true),
        ("api", "/v12/orders/7", true),
        ("api", "/v1/invoicesx", false),
        ("api", "/admin", false),
        ("admin", "/v1/invoices", false),
    ] {
        let decision = decide_for_main(&program, target, None, Some(resource));
        assert_eq!(
            decision.allow,
            allow,
            "{target} {resource}: {}",
            summary(&decision)
        );
    }
}

#[test]
fn source_addresses_and_networks() {
    let program = program_from_source(
        r#"
        workload billing_ci { github { repository == "acme/billing" } }
        target api { https { host = "api.internal" } }
        condition office { request.source_ip in ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"] }
        forbid blocked_host { when has request.source_ip && request.source_ip == "10.9.9.9" }
        permit ci_from_office { workload billing_ci target api when office }
        "#,
    );
    let claims = github("refs/heads/main", None);
    for (source_ip, expected) in [
        ("10.1.2.3", "allow rule=ci_from_office"),
        ("192.0.2.7", "allow rule=ci_from_office"),
        ("::ffff:192.0.2.7", "allow rule=ci_from_office"),
        ("2001:db8:1::5", "allow rule=ci_from_office"),
        ("192.0.2.8", "deny rule=-"),
        ("11.0.0.1", "deny rule=-"),
        ("2001:db9::1", "deny rule=-"),
        ("10.9.9.9", "deny rule=blocked_host"),
    ] {
        let mut request = request(&claims, "api", None, None);
        request.source_ip = Some(source_ip.parse().unwrap());
        let decision = summary(&program.decide(&request));
        assert!(decision.starts_with(expected), "{source_ip}: {decision}");
    }
    let decision = decide_for_main(&program, "api", None, None);
    assert_eq!(
        decision.reason,
        Reason::EvaluationError {
            rule: "ci_from_office",
            error: EvalError::AbsentRequestField { field: "source_ip" }
        }
    );
}
