//! Property tests of the VM on generated policy sets: whatever the request — claims of the
//! wrong type or missing, unknown targets, endpoints in odd case, absent request facts — a
//! decision comes back, consistent with itself, and a `forbid` that covers everything denies
//! everything.
//!
//! The policy sets come from the same generator as the front end's robustness tests
//! (`lang/tests/robustness/policy_gen.rs`). 256 cases per property by default; for a long run:
//! `PROPTEST_CASES=100000 cargo test -p portcullis-engine --release --test robustness`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

#[path = "../../lang/tests/robustness/policy_gen.rs"]
mod policy_gen;

use std::net::IpAddr;

use policy_gen::{PolicyGen, PolicyShape, Rng, STRING_VALUES};
use portcullis_engine::vm::{Decision, Program, Reason, Request, TargetQuery};
use portcullis_lang::bundle::Bundle;
use portcullis_lang::ir::Target;
use portcullis_lang::schema::{ClaimType, ClaimValue, ProviderKind};
use portcullis_lang::{SourceFile, compile, render};
use proptest::prelude::*;

/// Requests decided per generated policy set.
const REQUESTS_PER_SET: usize = 24;

fn program(files: &[SourceFile]) -> Program {
    let set = compile(files).unwrap_or_else(|diags| panic!("{}", render(&diags, false)));
    let bytes = Bundle::from_policy_set(&set).unwrap().to_bytes();
    Program::load(&bytes).unwrap()
}

/// A request's owned parts; [`Owned::request`] borrows them.
struct Owned {
    kind: ProviderKind,
    claims: Vec<Option<ClaimValue>>,
    target: OwnedTarget,
    action: Option<String>,
    resource: Option<String>,
    source_ip: Option<IpAddr>,
}

enum OwnedTarget {
    Named(String),
    Endpoint(String, String, u16),
}

impl Owned {
    fn request(&self) -> Request<'_> {
        let target = match &self.target {
            OwnedTarget::Named(name) => TargetQuery::Named(name),
            OwnedTarget::Endpoint(protocol, host, port) => TargetQuery::Endpoint {
                protocol,
                host,
                port: *port,
            },
        };
        Request {
            kind: self.kind,
            claims: &self.claims,
            target,
            action: self.action.as_deref(),
            resource: self.resource.as_deref(),
            source_ip: self.source_ip,
            time: 0,
        }
    }
}

/// A random request against `targets`: mostly well-formed, sometimes not.
fn random_request(rng: &mut Rng, targets: &[Target]) -> Owned {
    let kind = *rng.pick(&ProviderKind::ALL);
    let mut claims: Vec<Option<ClaimValue>> = kind
        .claims()
        .iter()
        .map(|def| (def.required || rng.chance(50)).then(|| claim_value(rng, def.ty)))
        .collect();
    if rng.chance(5) {
        // A claim of the wrong type: attestation prevents it, the VM must still not panic.
        let idx = rng.below(claims.len());
        claims[idx] = Some(ClaimValue::Int(7));
    }
    if rng.chance(3) {
        // Fewer claims than the schema has: a caller's bug, still no panic.
        claims.truncate(rng.below(claims.len()));
    }
    Owned {
        kind,
        claims,
        target: random_target(rng, targets),
        action: rng
            .chance(85)
            .then(|| (*rng.pick(&["GET", "POST", "PUT", "DELETE", ""])).to_owned()),
        resource: rng
            .chance(85)
            .then(|| (*rng.pick(&["/v1/deploy", "/v1/", "/v2/x", "", "/"])).to_owned()),
        source_ip: rng.chance(80).then(|| {
            let ip = rng.pick_str(&["192.0.2.7", "10.1.2.3", "2001:db8::1", "::1", "203.0.113.9"]);
            ip.parse().unwrap()
        }),
    }
}

fn claim_value(rng: &mut Rng, ty: ClaimType) -> ClaimValue {
    match ty {
        ClaimType::String => ClaimValue::String((*rng.pick(STRING_VALUES)).to_owned()),
        ClaimType::Int => ClaimValue::Int(i64::try_from(rng.below(1000)).unwrap()),
        ClaimType::Bool => ClaimValue::Bool(rng.chance(50)),
        ClaimType::StringSet => ClaimValue::StringSet(
            (0..rng.below(4))
                .map(|_| (*rng.pick(STRING_VALUES)).to_owned())
                .collect(),
        ),
    }
}

fn random_target(rng: &mut Rng, targets: &[Target]) -> OwnedTarget {
    let declared = rng.pick(targets);
    match rng.below(20) {
        0..=12 => OwnedTarget::Named(declared.name.clone()),
        13 | 14 => OwnedTarget::Named("no_such_target".to_owned()),
        15..=17 => OwnedTarget::Endpoint(
            declared.protocol.keyword().to_ascii_uppercase(),
            declared.host.to_ascii_uppercase(),
            declared.port,
        ),
        _ => OwnedTarget::Endpoint(
            (*rng.pick(&["http", "https", "postgres", "redis", ""])).to_owned(),
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
        Reason::NoPermit | Reason::PathOutsidePrefix => assert!(!decision.allow, "{text}"),
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
    (
        1usize..6,
        1usize..6,
        0usize..16,
        1usize..3,
        0usize..4,
        0usize..4,
        0usize..10,
    )
        .prop_map(
            |(workloads, targets, rules, files, max_depth, credentials, conditions)| PolicyShape {
                workloads,
                targets,
                rules,
                files,
                max_depth,
                credentials,
                conditions,
            },
        )
}

proptest! {
    /// Random requests against generated policy sets: no panic, a consistent decision, and
    /// the same decision when asked twice.
    #[test]
    fn decisions_are_consistent(seed in any::<u64>(), shape in small_shape()) {
        let mut rng = Rng::new(seed);
        let files = PolicyGen::new(&mut rng, shape).files();
        let program = program(&files);
        let targets = program.bundle().targets().to_vec();
        for _ in 0..REQUESTS_PER_SET {
            let owned = random_request(&mut rng, &targets);
            let decision = program.decide(&owned.request());
            check_consistent(&decision);
            prop_assert_eq!(&program.decide(&owned.request()), &decision);
        }
    }

    /// Adding `forbid` with no clauses (every caller, every target) turns every allow into a
    /// deny, and every decision on a known target into a forbid or an evaluation error.
    #[test]
    fn forbid_everything_denies_everything(seed in any::<u64>(), shape in small_shape()) {
        let mut rng = Rng::new(seed);
        let mut files = PolicyGen::new(&mut rng, shape).files();
        let open = program(&files);
        files.push(SourceFile::new("zz_forbid.gate", "forbid everything { }\n"));
        let closed = program(&files);
        let targets = open.bundle().targets().to_vec();
        for _ in 0..REQUESTS_PER_SET {
            let owned = random_request(&mut rng, &targets);
            let before = open.decide(&owned.request());
            let after = closed.decide(&owned.request());
            check_consistent(&after);
            prop_assert!(!after.allow, "allowed: {}", after.reason_text());
            match before.reason {
                Reason::UnknownTarget | Reason::PathOutsidePrefix => {
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
        let mut rng = Rng::new(seed);
        let shape = PolicyShape {
            workloads: 3,
            targets: 3,
            rules: 10,
            files: 2,
            max_depth: 1,
            credentials: 2,
            conditions: 3,
        };
        let files = PolicyGen::new(&mut rng, shape).files();
        let program = program(&files);
        let targets = program.bundle().targets().to_vec();
        for _ in 0..REQUESTS_PER_SET {
            let owned = random_request(&mut rng, &targets);
            let decision = program.decide(&owned.request());
            seen.insert(decision.reason.code());
            n_credentials += usize::from(decision.credential.is_some());
        }
    }
    let expected = [
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
