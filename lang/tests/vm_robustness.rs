//! Property tests of the VM on generated policy sets: whatever the request — claims of the
//! wrong type or missing, unknown targets, endpoints in odd case, absent request facts — a
//! decision comes back, consistent with itself, and a `forbid` that covers everything denies
//! everything.
//!
//! The policy sets come from the same generator as the front end's robustness tests
//! (`lang/tests/robustness/policy_gen.rs`). 256 cases per property by default; for a long run:
//! `PROPTEST_CASES=100000 cargo test -p portcullis-lang --release --test vm_robustness`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

#[path = "robustness/policy_gen.rs"]
mod policy_gen;
mod vm_common;

use std::net::IpAddr;

use policy_gen::{OwnedQuery, PolicyGen, PolicyShape, Rng, random_claims, shapes_below};
use portcullis_lang::SourceFile;
use portcullis_lang::ir::Target;
use portcullis_lang::schema::{ClaimValue, ProviderKind};
use portcullis_lang::vm::{Decision, Program, Reason, Request};
use proptest::prelude::*;
use vm_common::program;

/// Requests decided per generated policy set.
const REQUESTS_PER_SET: usize = 24;

/// A request's owned parts; [`Owned::request`] borrows them.
struct Owned {
    kind: ProviderKind,
    claims: Vec<Option<ClaimValue>>,
    target: OwnedQuery,
    action: Option<&'static str>,
    resource: Option<&'static str>,
    source_ip: Option<IpAddr>,
}

impl Owned {
    fn request(&self) -> Request<'_> {
        Request {
            kind: self.kind,
            claims: &self.claims,
            target: self.target.query(),
            action: self.action,
            resource: self.resource,
            source_ip: self.source_ip,
            time: Some(0),
        }
    }
}

/// The files of a policy set generated from `seed`, its program, and [`REQUESTS_PER_SET`]
/// random requests against its targets.
fn generated(seed: u64, shape: PolicyShape) -> (Vec<SourceFile>, Program, Vec<Owned>) {
    let mut rng = Rng::new(seed);
    let files = PolicyGen::new(&mut rng, shape).files();
    let program = program(&files);
    let requests = (0..REQUESTS_PER_SET)
        .map(|_| random_request(&mut rng, program.bundle().targets()))
        .collect();
    (files, program, requests)
}

/// A random request against `targets`: mostly well-formed, sometimes not.
fn random_request(rng: &mut Rng, targets: &[Target]) -> Owned {
    let kind = *rng.pick(&ProviderKind::ALL);
    Owned {
        kind,
        // An integer is the wrong type for most claims: the VM must still not panic.
        claims: random_claims(rng, kind, ClaimValue::Int(7)),
        target: random_target(rng, targets),
        action: rng
            .chance(85)
            .then(|| rng.pick_str(&["GET", "POST", "PUT", "DELETE", ""])),
        resource: rng
            .chance(85)
            .then(|| rng.pick_str(&["/v1/deploy", "/v1/", "/v2/x", "", "/"])),
        source_ip: rng.chance(80).then(|| {
            let ip = rng.pick_str(&["192.0.2.7", "10.1.2.3", "2001:db8::1", "::1", "203.0.113.9"]);
            ip.parse().unwrap()
        }),
    }
}

fn random_target(rng: &mut Rng, targets: &[Target]) -> OwnedQuery {
    let declared = rng.pick(targets);
    match rng.below(20) {
        0..=12 => OwnedQuery::Named(declared.name.clone()),
        13 | 14 => OwnedQuery::Named("no_such_target".to_owned()),
        15..=17 => OwnedQuery::Endpoint(
            declared.protocol.keyword().to_ascii_uppercase(),
            declared.host.to_ascii_uppercase(),
            declared.port,
        ),
        _ => OwnedQuery::Endpoint(
            rng.pick_str(&["http", "https", "postgres", "redis", ""])
                .to_owned(),
            "svc0.internal.example".to_owned(),
            u16::try_from(rng.below(65_536)).unwrap(),
        ),
    }
}

/// What holds of every decision, whatever the policy set.
fn check_consistent(decision: &Decision<'_>) {
    let text = decision.reason_text();
    assert!(!text.is_empty());
    match decision.reason {
        Reason::Permitted { rule } => {
            assert!(decision.allow, "{text}");
            assert_eq!(decision.rule, Some(rule));
        }
        Reason::Forbidden { rule } | Reason::EvaluationError { rule, .. } => {
            assert!(!decision.allow, "{text}");
            assert_eq!(decision.rule, Some(rule));
        }
        Reason::NoPermit | Reason::PathOutsidePrefix | Reason::DatabaseMismatch => {
            assert!(!decision.allow, "{text}")
        }
        Reason::UnknownTarget => {
            assert!(!decision.allow, "{text}");
            assert_eq!(decision.target, None);
        }
    }
    if decision.credential.is_some() {
        assert!(decision.allow, "a deny issues a credential: {text}");
    }
    if decision.annotations.is_some() {
        assert!(
            decision.rule.is_some(),
            "annotations without a rule: {text}"
        );
    }
    if !matches!(decision.reason, Reason::UnknownTarget) {
        assert!(decision.target.is_some(), "{text}");
    }
}

fn small_shape() -> impl Strategy<Value = PolicyShape> {
    shapes_below(PolicyShape {
        workloads: 6,
        targets: 6,
        rules: 16,
        files: 3,
        max_depth: 4,
        credentials: 4,
        conditions: 10,
    })
}

proptest! {
    /// Random requests against generated policy sets: no panic, a consistent decision, and
    /// the same decision when asked twice.
    #[test]
    fn decisions_are_consistent(seed in any::<u64>(), shape in small_shape()) {
        let (_, program, requests) = generated(seed, shape);
        for owned in &requests {
            let decision = program.decide(&owned.request());
            check_consistent(&decision);
            prop_assert_eq!(&program.decide(&owned.request()), &decision);
        }
    }

    /// Adding `forbid` with no clauses (every caller, every target) turns every allow into a
    /// deny, and every decision on a known target into a forbid or an evaluation error.
    #[test]
    fn forbid_everything_denies_everything(seed in any::<u64>(), shape in small_shape()) {
        let (mut files, open, requests) = generated(seed, shape);
        files.push(SourceFile::new("zz_forbid.gate", "forbid everything { }\n"));
        let closed = program(&files);
        for owned in &requests {
            let before = open.decide(&owned.request());
            let after = closed.decide(&owned.request());
            check_consistent(&after);
            prop_assert!(!after.allow, "allowed: {}", after.reason_text());
            match before.reason {
                Reason::UnknownTarget | Reason::PathOutsidePrefix | Reason::DatabaseMismatch => {
                    prop_assert_eq!(after.reason, before.reason);
                }
                _ => prop_assert!(
                    matches!(
                        after.reason,
                        Reason::Forbidden { .. } | Reason::EvaluationError { .. }
                    ),
                    "{}",
                    after.reason_text()
                ),
            }
        }
    }
}

/// The generators reach every kind of outcome, so the properties above are not vacuous.
#[test]
fn generated_requests_reach_every_outcome() {
    let mut seen = std::collections::BTreeSet::new();
    let mut n_credentials = 0;
    for seed in 0..200 {
        let (_, program, requests) = generated(seed, PolicyShape::every_outcome());
        for owned in &requests {
            let decision = program.decide(&owned.request());
            seen.insert(decision.reason.code());
            n_credentials += usize::from(decision.credential.is_some());
        }
    }
    let expected = [
        "database_mismatch",
        "evaluation_error",
        "forbidden",
        "no_permit",
        "path_outside_prefix",
        "permitted",
        "unknown_target",
    ];
    assert_eq!(seen, expected.into_iter().collect());
    assert!(n_credentials > 0, "no decision issued a credential");
}
