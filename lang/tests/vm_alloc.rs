//! A warm decision allocates nothing: the VM keeps its memo tables and candidate lists in a
//! per-thread scratch space that grows to a program's size once.
//!
//! The whole test binary runs under a counting allocator, and so holds this one test only:
//! another test running beside it would allocate into the count.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod vm_common;

use std::alloc::System;

use portcullis_lang::schema::ProviderKind;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use vm_common::{claims, program_from_source, request};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// More workloads and conditions than fit any fixed-size table, so that the memo tables are
/// the grown kind; keyed and unkeyed workloads; named conditions; a forbid; sets and globs.
fn policy() -> String {
    let mut text = String::from(
        "target api { https { host = \"api.example\" path_prefix = \"/v1/\" } }\n\
         target db { postgres { host = \"db.example\" } }\n\
         condition reads { request.action in [\"GET\", \"HEAD\"] }\n\
         condition business_hours { request.time within mon..fri 08:00..18:00 in \"UTC\" }\n\
         workload admins { github { repository_owner == \"acme\" && ref like \"refs/tags/*\" } }\n\
         forbid no_forks { workload any github when client.github.repository_owner != \"acme\" }\n",
    );
    for n in 0..300 {
        text.push_str(&format!(
            "workload ci_{n} {{ github {{ repository == \"acme/repo-{n}\" && \
             ref == \"refs/heads/main\" }} }}\n\
             permit ci_{n}_reads {{ workload ci_{n} target api when reads }}\n\
             permit ci_{n}_db {{ workload ci_{n} target db when reads && business_hours }}\n"
        ));
    }
    text
}

#[test]
fn a_warm_decision_allocates_nothing() {
    let program = program_from_source(&policy());
    let kind = ProviderKind::Github;
    let allowed = claims(
        kind,
        &[
            ("repository", "acme/repo-7"),
            ("repository_owner", "acme"),
            ("ref", "refs/heads/main"),
        ],
    );
    let fork = claims(
        kind,
        &[
            ("repository", "fork/repo-7"),
            ("repository_owner", "fork"),
            ("ref", "refs/heads/main"),
        ],
    );
    let stranger = claims(
        kind,
        &[
            ("repository", "acme/unknown"),
            ("repository_owner", "acme"),
            ("ref", "refs/heads/main"),
        ],
    );
    // Missing the key claim: every workload keyed on it is a candidate and fails.
    let keyless = claims(kind, &[("repository_owner", "acme")]);
    let requests = [
        (
            request(kind, &allowed, "api", Some("GET"), Some("/v1/x")),
            "permitted",
        ),
        // The epoch is a Thursday at midnight: outside business hours.
        (
            request(kind, &allowed, "db", Some("GET"), None),
            "no_permit",
        ),
        (
            request(kind, &allowed, "api", Some("POST"), Some("/v1/x")),
            "no_permit",
        ),
        (
            request(kind, &fork, "api", Some("GET"), Some("/v1/x")),
            "forbidden",
        ),
        (
            request(kind, &stranger, "api", Some("GET"), Some("/v1/x")),
            "no_permit",
        ),
        (
            request(kind, &keyless, "api", Some("GET"), Some("/v1/x")),
            "evaluation_error",
        ),
        (
            request(kind, &allowed, "api", Some("GET"), Some("/v2/x")),
            "path_outside_prefix",
        ),
    ];
    let mut business_hours = requests[1].0;
    business_hours.time = Some(1_796_378_400); // a Friday, 10:00 UTC
    let mut seen = Vec::with_capacity(1000);
    // Warm up: the scratch space grows to this program's size.
    for (request, expected) in &requests {
        let decision = program.decide(request);
        assert_eq!(
            decision.reason.code(),
            *expected,
            "{}",
            decision.reason_text()
        );
    }
    let decided = program.decide(&business_hours);
    assert!(decided.allow, "{}", decided.reason_text());

    let region = Region::new(GLOBAL);
    for _ in 0..100 {
        for (request, _) in &requests {
            let decision = program.decide(request);
            seen.push(decision.allow);
        }
        let decision = program.decide(&business_hours);
        seen.push(decision.allow);
    }
    let change = region.change();
    assert_eq!(seen.len(), 800);
    assert_eq!(
        (change.allocations, change.reallocations),
        (0, 0),
        "warm decisions allocated: {change:?}"
    );
}
