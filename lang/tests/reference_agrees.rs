//! The VM agrees with the reference evaluator: on generated policy sets and random requests,
//! both reach the same decision, with the same deciding rule, credential and reason code.
//!
//! The reference evaluator (`portcullis_lang::reference`) walks the typed IR and is the
//! executable definition of Gate's semantics; the VM runs the compiled bundle. The policy sets
//! come from the front end's generator (`lang/tests/robustness/policy_gen.rs`). 2,000 policy
//! sets of 32 requests by default; for millions of decisions (50,000 sets, 1.6 million requests):
//! `PROPTEST_CASES=50000 cargo test -p portcullis-lang --release --test reference_agrees`.

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
use portcullis_lang::ir::{PolicySet, WorkloadRef};
use portcullis_lang::reference;
use portcullis_lang::schema::{ClaimValue, ProviderKind};
use portcullis_lang::vm::Program;
use proptest::prelude::*;
use vm_common::compiled;

/// Requests decided per generated policy set.
const REQUESTS_PER_SET: usize = 32;

/// The instants requests are made at, Unix seconds: a Friday at 10:00 UTC, the Saturday
/// after it at 23:30 UTC, the hour Europe/Berlin skips in March 2026 and the one New York
/// repeats in November 2026, and the epoch.
const TIMES: [i64; 5] = [
    1_796_378_400,
    1_796_513_400,
    1_774_747_800,
    1_793_514_600,
    0,
];

/// A request's owned parts, from which both evaluators borrow the request they share.
struct Owned {
    kind: ProviderKind,
    claims: Vec<Option<ClaimValue>>,
    target: OwnedQuery,
    action: Option<&'static str>,
    resource: Option<&'static str>,
    source_ip: Option<IpAddr>,
    time: i64,
}

impl Owned {
    fn request(&self) -> reference::Request<'_> {
        reference::Request {
            kind: self.kind,
            claims: &self.claims,
            target: self.target.query(),
            action: self.action,
            resource: self.resource,
            source_ip: self.source_ip,
            time: Some(self.time),
        }
    }
}

/// A random request: mostly what attestation would produce, sometimes claims of the wrong
/// type, a short claim list, or a target that does not exist.
fn random_request(rng: &mut Rng, set: &PolicySet) -> Owned {
    let kind = *rng.pick(&ProviderKind::ALL);
    let claims = random_claims(rng, kind, ClaimValue::Bool(true));
    let target = rng.pick(&set.targets);
    let target = match rng.below(10) {
        0..=6 => OwnedQuery::Named(target.name.clone()),
        7 => OwnedQuery::Named("no_such_target".to_owned()),
        8 => OwnedQuery::Endpoint(
            target.protocol.keyword().to_ascii_uppercase(),
            target.host.to_ascii_uppercase(),
            target.port,
        ),
        _ => OwnedQuery::Endpoint("https".to_owned(), target.host.clone(), 1),
    };
    Owned {
        kind,
        claims,
        target,
        action: rng
            .chance(85)
            .then(|| rng.pick_str(&["GET", "POST", "DELETE", "connect", ""])),
        resource: rng.chance(85).then(|| {
            rng.pick_str(&[
                "/v1/deploy",
                "/v1/",
                "/v2/x",
                "/v1/../x",
                "",
                "main",
                "main/app",
                "mainx/app",
                "other/main",
                "/main",
            ])
        }),
        source_ip: rng.chance(80).then(|| {
            let ip = rng.pick_str(&["192.0.2.7", "10.1.2.3", "2001:db8::1", "::ffff:10.0.0.1"]);
            ip.parse().unwrap()
        }),
        time: *rng.pick(&TIMES),
    }
}

/// Decides `owned` both ways and requires the same outcome; gives the reason code.
fn agree(set: &PolicySet, program: &Program, owned: &Owned) -> &'static str {
    let request = owned.request();
    let by_vm = program.decide(&request);
    let by_reference = reference::decide(set, &request);
    let explained = format!(
        "vm: {}; reference: {}",
        by_vm.reason_text(),
        by_reference.reason_text(set)
    );
    assert_eq!(by_vm.allow, by_reference.allow, "{explained}");
    let reference_rule = by_reference.rule.map(|idx| set.rules[idx].name.as_str());
    assert_eq!(by_vm.rule, reference_rule, "{explained}");
    let reference_credential = by_reference
        .credential
        .map(|id| set.credentials[id.0 as usize].name.as_str());
    let vm_credential = by_vm.credential.map(|credential| credential.name.as_str());
    assert_eq!(vm_credential, reference_credential, "{explained}");
    assert_eq!(
        by_vm.reason.code(),
        by_reference.reason.code(),
        "{explained}"
    );
    // The workload a decision reports: the deciding rule's when the caller is it (a rule whose
    // workload failed to evaluate decides, but does not make the caller that workload), else
    // the first the caller is, which the VM only looks for among the candidates its index
    // found.
    let rule_workload = by_reference
        .rule
        .and_then(|idx| match set.rules[idx].workload {
            WorkloadRef::Named(id) => Some(id),
            _ => None,
        })
        .filter(|id| reference::workload_matches(set, &request, *id) == Ok(true));
    let expected = rule_workload.or_else(|| reference::first_matching_workload(set, &request));
    let expected = expected.map(|id| set.workloads[id.0 as usize].name.as_str());
    assert_eq!(by_vm.workload, expected, "{explained}");
    // `explain` traces the same run: the same decision, and the last rule it considered is
    // the deciding one.
    let traced = program.explain(&request);
    assert_eq!(traced.decision, by_vm, "{explained}");
    if let Some(rule) = by_vm.rule {
        let last = traced.rules.last().expect("a deciding rule was considered");
        assert_eq!(program.bundle().rules()[last.rule as usize].name, rule);
    }
    by_vm.reason.code()
}

/// Decides [`REQUESTS_PER_SET`] random requests both ways on the policy set generated from
/// `seed`; gives their reason codes.
fn agree_on_generated(seed: u64, shape: PolicyShape) -> Vec<&'static str> {
    let mut rng = Rng::new(seed);
    let files = PolicyGen::new(&mut rng, shape).files();
    let (set, program) = compiled(&files);
    (0..REQUESTS_PER_SET)
        .map(|_| agree(&set, &program, &random_request(&mut rng, &set)))
        .collect()
}

/// `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

fn shape() -> impl Strategy<Value = PolicyShape> {
    shapes_below(PolicyShape {
        workloads: 6,
        targets: 5,
        rules: 16,
        files: 3,
        max_depth: 4,
        credentials: 4,
        conditions: 8,
    })
}

proptest! {
    // Thousands of policy sets, each with many requests, in every test run; the module
    // documentation gives the switch for millions.
    #![proptest_config(ProptestConfig::with_cases(cases(2000)))]

    #[test]
    fn vm_and_reference_decide_alike(seed in any::<u64>(), shape in shape()) {
        agree_on_generated(seed, shape);
    }
}

/// The comparison above reaches every kind of outcome, so agreement is not vacuous.
#[test]
fn agreement_covers_every_outcome() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..150 {
        seen.extend(agree_on_generated(seed, PolicyShape::every_outcome()));
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
}
