//! Custom `oidc` claims in policies: the checker resolves them only when they are declared,
//! types them, asks for `has` on an optional one, and the bundle records them so that the
//! loader can verify code that reads them.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use portcullis_lang::bundle::{Bundle, BundleError, SectionKind};
use portcullis_lang::claims_file::parse_claims_file;
use portcullis_lang::diagnostic::Code;
use portcullis_lang::ir::{Expr, PolicySet};
use portcullis_lang::schema::{ClaimType, CustomClaims, CustomClaimsMismatch, ProviderKind};
use portcullis_lang::{SourceFile, compile, compile_with_claims, render};

const POLICY: &str = r#"
workload payments_jobs {
  oidc { team == "payments" && tier >= 2 }
}
target ledger {
  https {
    host = "ledger.internal"
    port = 443
  }
}
permit payments_jobs_to_ledger {
  workload payments_jobs
  target ledger
  when has client.oidc.labels && client.oidc.labels in ["deploy"]
}
"#;

fn claims() -> CustomClaims {
    parse_claims_file(
        r#"[
          {"name": "team", "path": "org.team", "type": "string", "required": true},
          {"name": "tier", "type": "integer", "required": true},
          {"name": "labels", "type": "string_set"}
        ]"#,
    )
    .unwrap()
}

fn files(text: &str) -> Vec<SourceFile> {
    vec![SourceFile::new("custom.gate", text.to_owned())]
}

fn compiled() -> PolicySet {
    match compile_with_claims(&files(POLICY), &claims()) {
        Ok(set) => set,
        Err(diags) => panic!("unexpected diagnostics:\n{}", render(&diags, false)),
    }
}

/// The codes and messages of the errors `text` gives with the custom claims above.
fn errors(text: &str) -> Vec<(Code, String)> {
    let diags = compile_with_claims(&files(text), &claims()).unwrap_err();
    diags
        .iter()
        .map(|diag| (diag.code(), diag.message().to_owned()))
        .collect()
}

#[test]
fn a_declared_custom_claim_compiles_to_its_id() {
    let set = compiled();
    assert_eq!(set.custom_claims, claims());
    let (team, _, _) = claims().resolve(ProviderKind::Oidc, "team").unwrap();
    let condition = format!("{:?}", set.workloads[0].alternatives[0].condition);
    let claim = format!(
        "{:?}",
        Expr::Claim {
            kind: ProviderKind::Oidc,
            claim: team
        }
    );
    assert!(condition.contains(&claim), "{condition}");
}

#[test]
fn without_the_claims_it_is_an_unknown_claim() {
    let diags = compile(&files(POLICY)).unwrap_err();
    let unknown: Vec<&str> = diags
        .iter()
        .filter(|diag| diag.code() == Code::UnknownClaim)
        .map(|diag| diag.message())
        .collect();
    assert_eq!(
        unknown,
        [
            "unknown claim `team` for `oidc`",
            "unknown claim `tier` for `oidc`",
            "unknown claim `labels` for `oidc`",
            "unknown claim `labels` for `oidc`",
        ]
    );
}

#[test]
fn a_near_miss_names_the_custom_claim() {
    let diags = compile_with_claims(&files("workload w { oidc { teams == \"x\" } }"), &claims())
        .unwrap_err();
    let rendered = render(&diags, false);
    assert!(rendered.contains("did you mean `team`?"), "{rendered}");
}

#[test]
fn custom_claims_have_their_declared_types() {
    assert_eq!(
        errors("workload w { oidc { tier == \"2\" } }"),
        [(
            Code::TypeMismatch,
            "cannot compare an integer with a string".to_owned()
        )]
    );
    assert_eq!(
        errors("workload w { oidc { team == 2 } }"),
        [(
            Code::TypeMismatch,
            "cannot compare a string with an integer".to_owned()
        )]
    );
}

#[test]
fn an_optional_custom_claim_needs_has() {
    let found = errors("workload w { oidc { labels in [\"deploy\"] } }");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, Code::UnguardedOptionalClaim);
    let guarded = "workload w { oidc { has labels && labels in [\"deploy\"] } }";
    assert!(compile_with_claims(&files(guarded), &claims()).is_ok());
}

#[test]
fn custom_claims_belong_to_oidc_only() {
    let found = errors("workload w { github { team == \"payments\" } }");
    assert_eq!(
        found,
        [(
            Code::UnknownClaim,
            "unknown claim `team` for `github`".to_owned()
        )]
    );
}

#[test]
fn the_bundle_records_its_custom_claims() {
    let set = compiled();
    let bundle = Bundle::from_policy_set(&set).unwrap();
    assert_eq!(bundle.custom_claims(), &claims());
    let bytes = bundle.to_bytes();
    let loaded = Bundle::from_bytes(&bytes).unwrap();
    assert_eq!(loaded, bundle);
    assert_eq!(loaded.custom_claims(), &claims());
    let labels = loaded.custom_claims().claim("labels").unwrap().1;
    assert_eq!((labels.ty, labels.required), (ClaimType::StringSet, false));
    // The section is the last one, after the eight required ones and `rule details`-less
    // optional ones that this policy set does not need.
    let count = u16::from_le_bytes([bytes[10], bytes[11]]);
    let last = 16 + 10 * usize::from(count - 1);
    assert_eq!(
        u16::from_le_bytes([bytes[last], bytes[last + 1]]),
        SectionKind::CustomClaims as u16
    );
    let again = Bundle::from_policy_set(&compiled()).unwrap();
    assert_eq!(
        again.to_bytes(),
        bytes,
        "the same input gives the same bytes"
    );
}

#[test]
fn a_bundle_without_its_custom_claims_does_not_load() {
    // Code that reads a custom claim is refused by the verifier when the section that types
    // the claim is gone.
    let mut set = compiled();
    set.custom_claims = CustomClaims::default();
    let error = Bundle::from_policy_set(&set).unwrap_err();
    assert!(
        matches!(error, BundleError::InvalidCode { .. }),
        "{error:?}"
    );
}

#[test]
fn mismatches_name_the_claim() {
    let bundle = claims();
    assert_eq!(bundle.mismatch(&claims()), None);
    let fewer = parse_claims_file(
        r#"[{"name": "team", "type": "string", "required": true},
            {"name": "tier", "type": "integer", "required": true}]"#,
    )
    .unwrap();
    assert_eq!(
        bundle.mismatch(&fewer),
        Some(CustomClaimsMismatch::Missing("labels".to_owned()))
    );
    assert_eq!(
        fewer.mismatch(&bundle),
        Some(CustomClaimsMismatch::Extra("labels".to_owned()))
    );
    let retyped = parse_claims_file(
        r#"[{"name": "team", "type": "string", "required": true},
            {"name": "tier", "type": "string", "required": true},
            {"name": "labels", "type": "string_set"}]"#,
    )
    .unwrap();
    assert_eq!(
        bundle.mismatch(&retyped).unwrap().to_string(),
        "custom claim `tier` is integer in the bundle but string in the configuration"
    );
    let optional = parse_claims_file(
        r#"[{"name": "team", "type": "string"},
            {"name": "tier", "type": "integer", "required": true},
            {"name": "labels", "type": "string_set"}]"#,
    )
    .unwrap();
    assert_eq!(
        bundle.mismatch(&optional).unwrap().to_string(),
        "custom claim `team` is required in the bundle but optional in the configuration"
    );
    assert_eq!(
        CustomClaims::default().mismatch(&CustomClaims::default()),
        None
    );
}
