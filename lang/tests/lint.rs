//! Lint tests: every `corpus/lint/*.gate` file compiles and yields exactly the warnings rendered
//! in its snapshot; focused cases check what each lint does and does not report.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use common::{corpus_file, corpus_names, examples_dir, snapshot_settings};
use portcullis_lang::diagnostic::Severity;
use portcullis_lang::source::{SourceFile, read_policy_path};
use portcullis_lang::{CheckOutcome, LintOptions, analyze, compile, render};

fn analyze_text(text: &str) -> CheckOutcome {
    analyze(
        &[SourceFile::new("test.gate", text)],
        &LintOptions::default(),
    )
}

/// The codes of the diagnostics of `text`, in order.
fn codes(text: &str) -> Vec<&'static str> {
    analyze_text(text)
        .diagnostics
        .iter()
        .map(|diag| diag.code().as_str())
        .collect()
}

/// Lints `corpus/lint/NAME.gate` and compares its rendered warnings with the snapshot
/// `snapshots/lint__NAME.snap`.
fn check_lint(name: &str) {
    let (path, file) = corpus_file("lint", name);
    let files = [file];
    let outcome = analyze(&files, &LintOptions::default());
    assert!(outcome.set.is_some(), "{name} does not compile");
    assert!(!outcome.diagnostics.is_empty(), "{name} has no warning");
    for diag in &outcome.diagnostics {
        assert_eq!(
            diag.severity(),
            Severity::Warning,
            "{name}: {}",
            diag.message()
        );
    }
    // A warning never makes `compile` fail.
    assert!(compile(&files).is_ok());
    snapshot_settings(&path)
        .bind(|| insta::assert_snapshot!(name, render(&outcome.diagnostics, false)));
}

#[test]
fn lint_corpus() {
    let names = corpus_names("lint");
    assert!(
        names.len() >= 7,
        "the lint corpus has only {} files",
        names.len()
    );
    for name in names {
        check_lint(&name);
    }
}

#[test]
fn the_example_policy_set_has_no_warnings() {
    let files = read_policy_path(&examples_dir()).unwrap();
    let outcome = analyze(&files, &LintOptions::default());
    assert!(outcome.set.is_some());
    assert!(
        outcome.diagnostics.is_empty(),
        "{}",
        render(&outcome.diagnostics, false)
    );
}

#[test]
fn errors_come_without_lints() {
    let outcome = analyze_text(
        "workload unused { github { repositry == \"x\" } }\n\
         permit p { workload any target any }\n",
    );
    assert!(outcome.set.is_none());
    assert_eq!(outcome.count(Severity::Error), 1);
    assert_eq!(outcome.count(Severity::Warning), 0);
}

#[test]
fn warnings_render_with_their_severity() {
    let outcome = analyze_text("target t { http { host = \"a\" } }\n");
    let rendered = render(&outcome.diagnostics, false);
    assert!(rendered.starts_with("warning[gate::W0102]"), "{rendered}");
    assert!(
        rendered.contains("⚠ target `t` is never used"),
        "{rendered}"
    );
}

const TARGET: &str = "target api { https { host = \"api.internal\" } }\n";

#[test]
fn broad_permit_needs_a_broad_workload_and_no_when() {
    let broad = format!("{TARGET}permit p {{ workload any target api }}\n");
    assert_eq!(codes(&broad), ["gate::W0101"]);
    let narrow = format!(
        "{TARGET}workload w {{ github {{ repository == \"acme/app\" }} }}\n\
         permit p {{ workload w target api }}\n"
    );
    assert_eq!(codes(&narrow), Vec::<&str>::new());
    let with_when = format!(
        "{TARGET}permit p {{ workload any kubernetes target api when request.action == \"GET\" }}\n"
    );
    assert_eq!(codes(&with_when), Vec::<&str>::new());
    // A `when` that always holds is no condition.
    for when in [
        "open",
        "open && true",
        "open && (1 == 1 || request.action == \"GET\")",
    ] {
        let always = format!(
            "{TARGET}condition open {{ true }}\n\
             permit p {{ workload any github target api when {when} }}\n"
        );
        assert_eq!(codes(&always), ["gate::W0101"], "{when}");
    }
}

#[test]
fn claim_values_that_real_tokens_carry_pass() {
    let text = format!(
        "{TARGET}workload w {{\n\
           github {{ ref in [\"refs/heads/main\", \"refs/tags/v1\"] && ref like \"refs/*\" \
             && sub like \"repo:acme/*\" && repository == \"acme/app\" && ref like \"*\" }}\n\
           kubernetes {{ namespace == \"billing-prod\" && service_account == \"api.v2\" \
             && namespace like \"billing-*\" }}\n\
         }}\n\
         permit p {{ workload w target api }}\n"
    );
    assert_eq!(codes(&text), Vec::<&str>::new());
}

#[test]
fn claim_values_on_either_side_and_in_sets_are_checked() {
    let text = format!(
        "{TARGET}workload w {{ github {{ \"main\" == ref || ref in [\"refs/heads/a\", \"b\"] }} }}\n\
         permit p {{ workload w target api when client.github.ref != \"dev\" }}\n"
    );
    assert_eq!(codes(&text), ["gate::W0201", "gate::W0201", "gate::W0201"]);
}

#[test]
fn a_forbid_with_a_narrower_target_shadows_nothing() {
    let text = "target a { https { host = \"a\" } }\n\
                target b { https { host = \"b\" } }\n\
                workload w { github { repository == \"acme/app\" } }\n\
                permit p { workload w target a }\n\
                forbid f { workload w target b }\n";
    assert_eq!(codes(text), Vec::<&str>::new());
    let shadowing = text.replace("target b }", "target any }");
    // `b` is now unused, too.
    assert_eq!(codes(&shadowing), ["gate::W0102", "gate::W0301"]);
}

#[test]
fn any_of_kind_shadows_a_workload_only_when_every_alternative_is_of_that_kind() {
    let text = format!(
        "{TARGET}workload w {{ github {{ repository == \"acme/app\" }} \
           kubernetes {{ namespace == \"app\" }} }}\n\
         permit p {{ workload w target api }}\n\
         forbid f {{ workload any github }}\n"
    );
    assert_eq!(codes(&text), Vec::<&str>::new());
}

#[test]
fn contradictions_are_found_in_and_chains_only() {
    let rule = |when: &str| {
        format!(
            "{TARGET}workload w {{ github {{ repository == \"acme/app\" }} }}\n\
             permit p {{ workload w target api when {when} }}\n"
        )
    };
    let never = [
        "request.action == \"GET\" && request.action == \"POST\"",
        "request.action == \"GET\" && request.action != \"GET\"",
        "request.action in [\"GET\"] && request.action in [\"POST\"]",
        "target.port == 1 && target.port == 2",
        "!true",
        "false || 1 == 2",
        "target.port > 1024 && target.port < 1000",
        "target.port in 1..100 && target.port == 443",
        "target.port in 1..100 && target.port in [443, 8443]",
        "target.port >= 443 && 442 >= target.port",
        "(target.port == 1 && target.port == 2) || (false && request.action == \"GET\")",
        "request.action == \"GET\" && (target.port == 1 && target.port == 2)",
        "2 < 1 || 3 > 4",
        "target.port > 70000",
        "target.port in [0, 70000]",
    ];
    for when in never {
        assert_eq!(codes(&rule(when)), ["gate::W0302"], "{when}");
    }
    let possible = [
        "target.port > 1000 && target.port < 2000 && target.port in 1500..1600",
        "target.port >= 443 && 443 >= target.port",
        "!(target.port == 1 && target.port == 2)",
        "request.action == \"GET\" || request.action == \"POST\"",
        "request.action in [\"GET\", \"POST\"] && request.action == \"POST\"",
        "request.action == \"GET\" && request.resource == \"GET\"",
        // Address ranges are not equality: `10.1.2.3` is in `10.0.0.0/8`.
        "request.resource == \"10.1.2.3\" && request.resource in [\"10.0.0.0/8\"]",
        "true",
    ];
    for when in possible {
        assert_eq!(codes(&rule(when)), Vec::<&str>::new(), "{when}");
    }
}

#[test]
fn a_rule_naming_a_condition_that_never_holds_never_matches() {
    let text = format!(
        "{TARGET}workload w {{ github {{ repository == \"acme/app\" }} }}\n\
         condition inner {{ target.port == 1 && target.port == 2 }}\n\
         condition outer {{ inner || false }}\n\
         permit p {{ workload w target api when request.action == \"GET\" && outer }}\n\
         forbid f {{ workload w target api when !outer }}\n"
    );
    let outcome = analyze_text(&text);
    let messages: Vec<&str> = outcome.diagnostics.iter().map(|d| d.message()).collect();
    assert_eq!(
        messages,
        [
            "condition `inner` can never hold",
            "condition `outer` can never hold",
            "permit `p` can never match",
        ]
    );
}

#[test]
fn legacy_time_zone_aliases_are_named_with_the_preferred_zone() {
    let rule = |zone: &str| {
        format!(
            "{TARGET}workload w {{ github {{ repository == \"acme/app\" }} }}\n\
             permit p {{ workload w target api when request.time within 09:00..17:00 in \"{zone}\" }}\n"
        )
    };
    for zone in ["Europe/Berlin", "UTC", "America/Los_Angeles"] {
        assert_eq!(codes(&rule(zone)), Vec::<&str>::new(), "{zone}");
    }
    let outcome = analyze_text(&rule("Asia/Calcutta"));
    let [diag] = outcome.diagnostics.as_slice() else {
        panic!("{:?}", outcome.diagnostics)
    };
    assert_eq!(diag.code().as_str(), "gate::W0202");
    assert_eq!(diag.help_text(), Some("write `\"Asia/Kolkata\"`"));
}

#[test]
fn anchored_regexes_and_globs_are_checked_by_their_fixed_start() {
    let rule = |condition: &str| {
        format!(
            "{TARGET}workload w {{ {condition} }}\n\
             permit p {{ workload w target api }}\n"
        )
    };
    let fine = [
        "github { ref matches \"^refs/heads/release-[0-9]+$\" }",
        "github { ref matches \"main\" }",
        "github { ref matches \"^(refs/heads/main|v1)$\" }",
        "github { ref matches \"^r?efs/\" }",
        "gitlab { ref == \"main\" && ref_path == \"refs/heads/main\" }",
        "spiffe { path == \"/ns/billing\" && path like \"/ns/*\" }",
    ];
    for condition in fine {
        assert_eq!(codes(&rule(condition)), Vec::<&str>::new(), "{condition}");
    }
    let impossible = [
        "github { ref matches \"^heads/main\" }",
        "gitlab { ref like \"refs/heads/*\" }",
        "spiffe { path matches \"^ns/\" }",
        "spiffe { path == \"/ns//billing\" }",
    ];
    for condition in impossible {
        assert_eq!(codes(&rule(condition)), ["gate::W0201"], "{condition}");
    }
}

#[test]
fn a_guard_for_a_kind_the_workload_does_not_admit_never_holds() {
    let text = format!(
        "{TARGET}workload kube {{ kubernetes {{ namespace == \"app\" }} }}\n\
         permit p {{ workload kube target api when has client.github.environment \
         && client.github.environment == \"prod\" }}\n"
    );
    let outcome = analyze_text(&text);
    let messages: Vec<&str> = outcome.diagnostics.iter().map(|d| d.message()).collect();
    assert_eq!(messages, ["permit `p` can never match"]);
}

#[test]
fn a_gitlab_ref_glob_is_offered_ref_path_not_a_wider_glob() {
    let text = format!(
        "{TARGET}workload w {{ gitlab {{ ref like \"refs/tags/*\" }} }}\n\
         permit p {{ workload w target api }}\n"
    );
    let outcome = analyze_text(&text);
    let [diag] = outcome.diagnostics.as_slice() else {
        panic!("{:?}", outcome.diagnostics)
    };
    let help = diag.help_text().unwrap();
    assert!(help.ends_with("`ref_path like \"refs/tags/*\"`"), "{help}");
    let fixed = text.replace("ref like", "ref_path like");
    assert_eq!(codes(&fixed), Vec::<&str>::new());
}

#[test]
fn the_credential_ttl_maximum_is_configurable() {
    let text = format!(
        "{TARGET}workload w {{ github {{ repository == \"acme/app\" }} }}\n\
         credential c {{ jwt {{ audience = \"api\" ttl = 2h }} }}\n\
         permit p {{ workload w target api credential c }}\n"
    );
    assert_eq!(codes(&text), ["gate::W0402"]);
    let files = [SourceFile::new("test.gate", text)];
    let relaxed = LintOptions {
        max_credential_ttl_s: 2 * 60 * 60,
    };
    assert!(analyze(&files, &relaxed).diagnostics.is_empty());
}

#[test]
fn durations_print_as_gate_literals() {
    use portcullis_lang::lexer::format_duration;
    assert_eq!(format_duration(3600), "1h");
    assert_eq!(format_duration(5400), "1h30m");
    assert_eq!(format_duration(90_061), "1d1h1m1s");
    assert_eq!(format_duration(0), "0s");
}
