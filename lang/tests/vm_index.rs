//! The VM's index: a decision considers the rules that could match the caller, not the whole
//! policy set, and the instruction bound it runs under follows from that.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod vm_common;

use portcullis_lang::schema::ProviderKind;
use portcullis_lang::vm::{EvalError, Program, Scratch, Trace};
use vm_common::{claims, program_from_source, request};

/// What a decision evaluated.
#[derive(Default)]
struct Counted {
    rules: usize,
    workloads: usize,
}

impl Trace for Counted {
    fn workload(&mut self, _: u32, _: Result<bool, EvalError>) {
        self.workloads += 1;
    }

    fn rule(&mut self, _: u32, _: Result<bool, EvalError>, _: Option<Result<bool, EvalError>>) {
        self.rules += 1;
    }
}

/// `n` GitHub workloads keyed on their repository, `n` Kubernetes workloads keyed on their
/// namespace, each with two rules on a target of its own and one on a shared target; one
/// forbid for every GitHub caller, and one permit for any caller on the shared target.
fn policy(n: usize) -> String {
    let mut text = String::from(
        "target shared { https { host = \"shared.example\" } }\n\
         forbid no_pull_request_target {\n\
           workload any github\n\
           when client.github.event_name == \"pull_request_target\"\n\
         }\n\
         permit anyone_reads_shared {\n\
           workload any target shared when request.action == \"GET\"\n\
         }\n",
    );
    for i in 0..n {
        text.push_str(&format!(
            "target api_{i} {{ https {{ host = \"api-{i}.example\" }} }}\n\
             workload ci_{i} {{\n\
               github {{ repository == \"acme/repo-{i}\" && ref == \"refs/heads/main\" }}\n\
             }}\n\
             workload svc_{i} {{\n\
               kubernetes {{ namespace in [\"team-{i}\", \"team-{i}-staging\"] }}\n\
             }}\n\
             permit ci_{i}_writes {{ workload ci_{i} target api_{i} when request.action == \"POST\" }}\n\
             permit svc_{i}_reads {{ workload svc_{i} target api_{i} }}\n\
             permit ci_{i}_shared {{ workload ci_{i} target shared }}\n"
        ));
    }
    text
}

fn github(repository: &str) -> Vec<Option<portcullis_lang::schema::ClaimValue>> {
    claims(
        ProviderKind::Github,
        &[
            ("repository", repository),
            ("ref", "refs/heads/main"),
            ("event_name", "push"),
        ],
    )
}

/// Decides and counts what the decision evaluated.
fn counted(program: &Program, request: &portcullis_lang::vm::Request<'_>) -> (bool, Counted) {
    let mut counted = Counted::default();
    let decision = program.decide_traced(request, &mut Scratch::new(), &mut counted);
    (decision.allow, counted)
}

#[test]
fn decision_work_does_not_grow_with_the_policy_set() {
    let small = program_from_source(&policy(10));
    let large = program_from_source(&policy(2_000));
    let caller = github("acme/repo-7");
    let stranger = github("acme/unknown");
    let cases = [
        (
            request(ProviderKind::Github, &caller, "api_7", Some("POST"), None),
            true,
        ),
        (
            request(ProviderKind::Github, &caller, "shared", Some("PUT"), None),
            true,
        ),
        (
            request(ProviderKind::Github, &caller, "api_8", Some("POST"), None),
            false,
        ),
        (
            request(ProviderKind::Github, &stranger, "shared", Some("PUT"), None),
            false,
        ),
    ];
    for (request, allow) in &cases {
        let (small_allow, small_work) = counted(&small, request);
        let (large_allow, large_work) = counted(&large, request);
        assert_eq!((small_allow, large_allow), (*allow, *allow), "{request:?}");
        assert_eq!(small_work.rules, large_work.rules, "{request:?}");
        assert_eq!(small_work.workloads, large_work.workloads, "{request:?}");
        assert!(
            large_work.rules <= 3,
            "{request:?}: {} rules",
            large_work.rules
        );
    }
    // A Kubernetes caller is looked up by either of its namespaces.
    let pod = claims(
        ProviderKind::Kubernetes,
        &[
            ("namespace", "team-1500-staging"),
            ("service_account", "api"),
        ],
    );
    let on_api = request(
        ProviderKind::Kubernetes,
        &pod,
        "api_1500",
        Some("GET"),
        None,
    );
    let (allow, work) = counted(&large, &on_api);
    assert!(allow);
    assert_eq!((work.rules, work.workloads), (1, 1));
}

#[test]
fn a_caller_without_the_key_claim_meets_every_keyed_workload() {
    // Such a caller is an evaluation error for each workload keyed on the claim, and the
    // first rule that names one must report it rather than skip it.
    let program = program_from_source(&policy(50));
    let keyless = claims(
        ProviderKind::Github,
        &[("ref", "refs/heads/main"), ("event_name", "push")],
    );
    // Not a GET, so `anyone_reads_shared` does not allow it first.
    let shared = request(ProviderKind::Github, &keyless, "shared", Some("PUT"), None);
    let decision = program.decide(&shared);
    assert!(!decision.allow);
    assert_eq!(decision.reason.code(), "evaluation_error");
    assert!(
        decision.reason_text().contains("repository"),
        "{}",
        decision.reason_text()
    );
}

#[test]
fn the_instruction_bound_follows_the_index() {
    let small = program_from_source(&policy(10));
    let large = program_from_source(&policy(2_000));
    let total = large.bundle().instruction_count();
    // The worst request meets one workload of each kind and the rules on one target, so the
    // bound does not grow with the number of workloads.
    assert_eq!(small.instruction_bound(), large.instruction_bound());
    assert!(
        large.instruction_bound() * 100 < total,
        "{} of {total}",
        large.instruction_bound()
    );
}

#[test]
fn a_keyless_caller_costs_one_instruction_per_claim() {
    // Without the key claim, the first rule naming a keyed workload fails at that workload's
    // first instruction, and no other keyed workload runs: the bound stays small however many
    // workloads share the key.
    let text: String = (0..200)
        .map(|i| {
            format!(
                "workload ci_{i} {{ github {{ repository == \"r{i}\" }} }}\n\
                 permit p_{i} {{ workload ci_{i} target t }}\n"
            )
        })
        .collect();
    let text = format!("target t {{ https {{ host = \"t.example\" }} }}\n{text}");
    let program = program_from_source(&text);
    assert!(
        program.instruction_bound() < 10,
        "{}",
        program.instruction_bound()
    );
    let keyless = claims(ProviderKind::Github, &[("ref", "refs/heads/main")]);
    let on_t = request(ProviderKind::Github, &keyless, "t", None, None);
    let mut counted = Counted::default();
    let decision = program.decide_traced(&on_t, &mut Scratch::new(), &mut counted);
    assert_eq!(decision.rule, Some("p_0"));
    assert_eq!(decision.reason.code(), "evaluation_error");
    assert_eq!((counted.rules, counted.workloads), (1, 1));
}

#[test]
fn a_shared_first_test_does_not_make_every_workload_a_candidate() {
    // Every workload tests the organization first; the index keys on the workspace, which
    // tells them apart, and guards on the organization.
    let policy = |n: usize| -> String {
        let mut text = String::from("target tfc { https { host = \"tfc.example\" } }\n");
        for i in 0..n {
            text.push_str(&format!(
                "workload ws_{i} {{ terraform {{ terraform_organization_name == \"acme\" && \
                 terraform_workspace_id == \"ws-{i}\" }} }}\n\
                 permit ws_{i}_applies {{ workload ws_{i} target tfc }}\n"
            ));
        }
        text
    };
    let small = program_from_source(&policy(10));
    let large = program_from_source(&policy(2_000));
    let run = claims(
        ProviderKind::Terraform,
        &[
            ("terraform_organization_name", "acme"),
            ("terraform_workspace_id", "ws-7"),
        ],
    );
    let on_tfc = request(ProviderKind::Terraform, &run, "tfc", None, None);
    for program in [&small, &large] {
        let (allow, work) = counted(program, &on_tfc);
        assert!(allow);
        assert_eq!((work.rules, work.workloads), (1, 1));
    }
    // The bound is a worst case: a caller without a workspace id runs every workload's
    // organization test, so it grows with the workloads even though a decision does not.
    assert!(
        small.instruction_bound() < 100,
        "{}",
        small.instruction_bound()
    );
    assert!(
        large.instruction_bound() > 2_000,
        "{}",
        large.instruction_bound()
    );

    // Another organization's run with the same workspace id: the guard is false, no error.
    let foreign = claims(
        ProviderKind::Terraform,
        &[
            ("terraform_organization_name", "other"),
            ("terraform_workspace_id", "ws-7"),
        ],
    );
    let decision = large.decide(&request(
        ProviderKind::Terraform,
        &foreign,
        "tfc",
        None,
        None,
    ));
    assert_eq!(decision.reason.code(), "no_permit");
    // Without the workspace id, the organization test still runs first in each workload:
    // another organization's run is refused without an error, this one's fails.
    let keyless = claims(
        ProviderKind::Terraform,
        &[("terraform_organization_name", "other")],
    );
    let decision = large.decide(&request(
        ProviderKind::Terraform,
        &keyless,
        "tfc",
        None,
        None,
    ));
    assert_eq!(
        decision.reason.code(),
        "no_permit",
        "{}",
        decision.reason_text()
    );
    let keyless = claims(
        ProviderKind::Terraform,
        &[("terraform_organization_name", "acme")],
    );
    let decision = large.decide(&request(
        ProviderKind::Terraform,
        &keyless,
        "tfc",
        None,
        None,
    ));
    assert_eq!(
        decision.reason.code(),
        "evaluation_error",
        "{}",
        decision.reason_text()
    );
}
