//! From Gate source to decision: the front end compiles, the bundle loads, the VM decides.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod vm_common;

use std::path::Path;

use portcullis_lang::read_policy_path;
use portcullis_lang::schema::{ClaimValue, ProviderKind};
use portcullis_lang::vm::{Reason, Request, TargetQuery};
use vm_common::{claims, program, program_from_source};

fn github(extra: &[(&str, &str)]) -> Vec<Option<ClaimValue>> {
    let mut pairs = vec![
        ("iss", "https://token.actions.githubusercontent.com"),
        ("sub", "repo:acme/billing:ref:refs/tags/v2.0.0"),
        ("aud", "portcullis"),
        ("repository", "acme/billing"),
        ("repository_id", "11"),
        ("repository_owner", "acme"),
        ("repository_owner_id", "7"),
        ("ref", "refs/tags/v2.0.0"),
        ("sha", "9f0c"),
        ("event_name", "push"),
    ];
    for (name, value) in extra {
        pairs.retain(|(known, _)| known != name);
        pairs.push((name, value));
    }
    claims(ProviderKind::Github, &pairs)
}

fn deploy(claims: &[Option<ClaimValue>]) -> Request<'_> {
    github_request(claims, "api", "POST", "/v1/releases")
}

fn request<'a>(claims: &'a [Option<ClaimValue>], action: &'a str) -> Request<'a> {
    github_request(claims, "billing_api", action, "/v1/invoices")
}

fn github_request<'a>(
    claims: &'a [Option<ClaimValue>],
    target: &'a str,
    action: &'a str,
    resource: &'a str,
) -> Request<'a> {
    vm_common::request(
        ProviderKind::Github,
        claims,
        target,
        Some(action),
        Some(resource),
    )
}

const POLICY: &str = r#"
workload deployer {
  github {
    repository == "acme/billing" && ref like "refs/tags/v*"
      && has environment && environment == "production"
  }
}
workload pods {
  kubernetes { namespace == "orders" && aud in ["portcullis"] }
}
target api { https { host = "api.internal" path_prefix = "/v1/" } }
target db { postgres { host = "db.internal" database = "orders" } }

permit deployer_writes_api {
  workload deployer
  target api
  when request.action in ["POST", "PUT"] && target.port == 443
}
permit pods_use_db {
  workload pods
  target db
}
forbid no_pull_request_target {
  workload any github
  when client.github.event_name == "pull_request_target"
}
"#;

#[test]
fn source_to_decision() {
    let program = program_from_source(POLICY);
    let production = github(&[("environment", "production")]);
    let decision = program.decide(&deploy(&production));
    assert!(decision.allow, "{}", decision.reason_text());
    assert_eq!(decision.workload, Some("deployer"));

    let no_environment = github(&[]);
    let decision = program.decide(&deploy(&no_environment));
    assert_eq!(decision.reason, Reason::NoPermit);
    assert_eq!(
        decision.reason_text(),
        "no permit rule allows this caller on target `api`"
    );

    let forked = github(&[
        ("environment", "production"),
        ("event_name", "pull_request_target"),
    ]);
    let decision = program.decide(&deploy(&forked));
    assert_eq!(
        decision.reason,
        Reason::Forbidden {
            rule: "no_pull_request_target"
        }
    );

    let pod = claims(
        ProviderKind::Kubernetes,
        &[
            ("iss", "https://kubernetes.default.svc"),
            ("sub", "system:serviceaccount:orders:api"),
            ("aud", "https://kubernetes.default.svc,portcullis"),
            ("namespace", "orders"),
            ("service_account", "api"),
            ("service_account_uid", "u-1"),
        ],
    );
    let connect = Request {
        kind: ProviderKind::Kubernetes,
        claims: &pod,
        target: TargetQuery::Endpoint {
            protocol: "postgres",
            host: "db.internal",
            port: 5432,
        },
        action: Some("connect"),
        resource: Some("orders"),
        source_ip: None,
        time: Some(0),
    };
    let decision = program.decide(&connect);
    assert_eq!(
        decision.reason,
        Reason::Permitted {
            rule: "pods_use_db"
        }
    );
}

#[test]
fn example_policy_set_decides() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    let program = program(&read_policy_path(&dir).unwrap());
    let release = github(&[("environment", "production")]);
    let decision = program.decide(&request(&release, "POST"));
    assert!(decision.allow, "{}", decision.reason_text());
    assert_eq!(decision.workload, Some("billing_release"));

    let pull_request = github(&[("event_name", "pull_request")]);
    let decision = program.decide(&request(&pull_request, "DELETE"));
    assert_eq!(decision.reason, Reason::NoPermit);

    let target = github(&[
        ("environment", "production"),
        ("event_name", "pull_request_target"),
    ]);
    let decision = program.decide(&request(&target, "POST"));
    assert_eq!(
        decision.reason,
        Reason::Forbidden {
            rule: "no_pull_request_target"
        }
    );
}
