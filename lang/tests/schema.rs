//! The built-in claim schemas hold together: unique names that Gate can spell, paths that
//! name a token field, the registered claims where a kind has an issuer; the SPIFFE ID rules;
//! custom `oidc` claims merged across trust providers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use portcullis_lang::bytecode::{kind_code, kind_from_code};
use portcullis_lang::lexer::{Token, lex};
use portcullis_lang::schema::{
    ClaimId, ClaimType, CustomClaim, CustomClaimError, CustomClaims, Derived, MAX_SPIFFE_ID_BYTES,
    ProviderKind, SpiffeId, SpiffeIdError, check_trust_domain, dotted_path,
};

fn is_gate_identifier(name: &str) -> bool {
    let lexed = lex(name);
    lexed.errors.is_empty()
        && matches!(lexed.tokens.as_slice(), [(_, Token::Ident(n), _)] if *n == name)
}

#[test]
fn every_kind_has_a_keyword_a_code_and_claims() {
    for kind in ProviderKind::ALL {
        assert_eq!(ProviderKind::from_keyword(kind.keyword()), Some(kind));
        assert!(is_gate_identifier(kind.keyword()), "{kind}");
        assert_eq!(kind_from_code(kind_code(kind)), Some(kind));
        assert!(!kind.claims().is_empty(), "{kind}");
    }
    let mut codes: Vec<u8> = ProviderKind::ALL.map(kind_code).to_vec();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(
        codes.len(),
        ProviderKind::ALL.len(),
        "kind codes are unique"
    );
    for word in ["gitlab", "terraform", "spiffe", "process"] {
        assert!(ProviderKind::from_keyword(word).is_some(), "{word}");
    }
}

#[test]
fn claim_names_are_unique_gate_identifiers() {
    for kind in ProviderKind::ALL {
        for (idx, def) in kind.claims().iter().enumerate() {
            assert!(is_gate_identifier(def.name), "{kind}: `{}`", def.name);
            let (id, _) = kind.claim(def.name).unwrap();
            assert_eq!(
                id,
                ClaimId(idx as u16),
                "{kind}: `{}` appears twice",
                def.name
            );
        }
    }
}

#[test]
fn every_path_names_a_field() {
    for kind in ProviderKind::ALL {
        for def in kind.claims() {
            assert!(!def.path.is_empty(), "{kind}: `{}`", def.name);
            assert!(
                def.path.iter().all(|step| !step.is_empty()),
                "{kind}: `{}`",
                def.name
            );
        }
    }
}

#[test]
fn token_kinds_carry_the_registered_claims() {
    for kind in ProviderKind::ALL.into_iter().filter(|k| k.issues_tokens()) {
        let (_, sub) = kind.claim("sub").unwrap();
        assert!(sub.required && sub.ty == ClaimType::String, "{kind}");
        let (_, aud) = kind.claim("aud").unwrap();
        assert!(aud.required && aud.ty == ClaimType::StringSet, "{kind}");
        let (_, iss) = kind.claim("iss").unwrap();
        // The SPIFFE specification does not require `iss` in a JWT-SVID.
        assert_eq!(iss.required, kind != ProviderKind::Spiffe, "{kind}");
    }
    assert!(!ProviderKind::Process.issues_tokens());
    assert!(ProviderKind::Process.claim("sub").is_none());
}

#[test]
fn the_real_types_of_each_platform() {
    let ty = |kind: ProviderKind, name: &str| kind.claim(name).unwrap().1.ty;
    // GitLab sends ids and flags as strings, `runner_id` as a number.
    assert_eq!(ty(ProviderKind::Gitlab, "project_id"), ClaimType::String);
    assert_eq!(ty(ProviderKind::Gitlab, "ref_protected"), ClaimType::String);
    assert_eq!(ty(ProviderKind::Gitlab, "runner_id"), ClaimType::Int);
    assert_eq!(
        ty(ProviderKind::Gitlab, "groups_direct"),
        ClaimType::StringSet
    );
    for def in ProviderKind::Terraform.claims() {
        if def.name != "aud" {
            assert_eq!(def.ty, ClaimType::String, "`{}`", def.name);
        }
    }
    for name in ["pid", "uid", "gid"] {
        assert_eq!(ty(ProviderKind::Process, name), ClaimType::Int, "{name}");
    }
    assert_eq!(ty(ProviderKind::Process, "groups"), ClaimType::StringSet);
    assert_eq!(ty(ProviderKind::Process, "exe_sha256"), ClaimType::String);
}

#[test]
fn only_what_every_token_carries_is_required() {
    let required = |kind: ProviderKind, name: &str| kind.claim(name).unwrap().1.required;
    for name in [
        "project_path",
        "ref",
        "ref_path",
        "ref_type",
        "sha",
        "runner_environment",
    ] {
        assert!(required(ProviderKind::Gitlab, name), "{name}");
    }
    for name in [
        "environment",
        "deployment_tier",
        "groups_direct",
        "ci_config_ref_uri",
    ] {
        assert!(!required(ProviderKind::Gitlab, name), "{name}");
    }
    assert!(required(ProviderKind::Terraform, "terraform_run_phase"));
    assert!(
        !required(ProviderKind::Process, "user"),
        "a uid may have no name"
    );
}

#[test]
fn spiffe_claims_are_derived_from_sub() {
    let derived: Vec<_> = ProviderKind::Spiffe
        .claims()
        .iter()
        .filter_map(|def| def.derived.map(|how| (def.name, how, def.path)))
        .collect();
    assert_eq!(
        derived,
        [
            ("spiffe_id", Derived::SpiffeId, &["sub"][..]),
            ("trust_domain", Derived::SpiffeTrustDomain, &["sub"][..]),
            ("path", Derived::SpiffePath, &["sub"][..]),
        ]
    );
    let others = ProviderKind::ALL
        .into_iter()
        .filter(|k| *k != ProviderKind::Spiffe);
    for kind in others {
        assert!(
            kind.claims().iter().all(|def| def.derived.is_none()),
            "{kind}"
        );
    }
}

#[test]
fn valid_spiffe_ids_split_into_trust_domain_and_path() {
    let id = SpiffeId::parse("spiffe://prod.acme-1_x.example/ns/Billing/sa/api.v2-x_y").unwrap();
    assert_eq!(id.trust_domain(), "prod.acme-1_x.example");
    assert_eq!(id.path(), "/ns/Billing/sa/api.v2-x_y");
    assert_eq!(
        id.to_string(),
        "spiffe://prod.acme-1_x.example/ns/Billing/sa/api.v2-x_y"
    );
    let bare = SpiffeId::parse("spiffe://acme.example").unwrap();
    assert_eq!((bare.trust_domain(), bare.path()), ("acme.example", ""));
    let segment = "a".repeat(MAX_SPIFFE_ID_BYTES - "spiffe://td/".len());
    assert!(
        SpiffeId::parse(&format!("spiffe://td/{segment}")).is_ok(),
        "2048 bytes"
    );
}

#[test]
fn invalid_spiffe_ids_name_the_broken_rule() {
    let long = format!("spiffe://td/{}", "a".repeat(MAX_SPIFFE_ID_BYTES));
    let cases = [
        (long.as_str(), SpiffeIdError::TooLong { len: long.len() }),
        ("SPIFFE://td/a", SpiffeIdError::Scheme),
        ("spiffe:/td/a", SpiffeIdError::Scheme),
        ("spiffe://", SpiffeIdError::EmptyTrustDomain),
        ("spiffe:///a", SpiffeIdError::EmptyTrustDomain),
        ("spiffe://td:443/a", SpiffeIdError::Port),
        ("spiffe://user@td/a", SpiffeIdError::Userinfo),
        ("spiffe://TD/a", SpiffeIdError::TrustDomainChar('T')),
        ("spiffe://t d/a", SpiffeIdError::TrustDomainChar(' ')),
        ("spiffe://td/a?x", SpiffeIdError::QueryOrFragment),
        ("spiffe://td/a#x", SpiffeIdError::QueryOrFragment),
        ("spiffe://td/a%2Fb", SpiffeIdError::PercentEncoded),
        ("spiffe://td/", SpiffeIdError::TrailingSlash),
        ("spiffe://td/a/", SpiffeIdError::TrailingSlash),
        ("spiffe://td//a", SpiffeIdError::EmptySegment),
        ("spiffe://td/./a", SpiffeIdError::DotSegment),
        ("spiffe://td/a/..", SpiffeIdError::DotSegment),
        ("spiffe://td/a/b:c", SpiffeIdError::PathChar(':')),
        ("spiffe://td/caf\u{e9}", SpiffeIdError::PathChar('\u{e9}')),
    ];
    for (text, expected) in cases {
        assert_eq!(SpiffeId::parse(text), Err(expected), "{text}");
    }
    assert!(check_trust_domain("prod.acme.example").is_ok());
    assert_eq!(check_trust_domain(""), Err(SpiffeIdError::EmptyTrustDomain));
}

#[test]
fn spiffe_id_messages_quote_the_offending_character() {
    let error = SpiffeId::parse("spiffe://td/a\nb").unwrap_err();
    assert_eq!(
        error.to_string(),
        "path segments may hold only letters, digits, `.`, `-` and `_`, not `\\n`"
    );
}

fn custom(name: &str, path: &str, ty: ClaimType, required: bool) -> CustomClaim {
    CustomClaim::new(name, dotted_path(path), ty, required).unwrap()
}

#[test]
fn custom_claim_declarations_are_validated() {
    let new = |name: &str, path: &[&str]| {
        let path = path.iter().map(|s| (*s).to_owned()).collect();
        CustomClaim::new(name, path, ClaimType::String, false)
    };
    assert!(new("team", &["org", "team"]).is_ok());
    assert_eq!(
        new("org-team", &["x"]),
        Err(CustomClaimError::BadName("org-team".to_owned()))
    );
    assert_eq!(
        new("when", &["x"]),
        Err(CustomClaimError::BadName("when".to_owned()))
    );
    assert_eq!(
        new("", &["x"]),
        Err(CustomClaimError::BadName(String::new()))
    );
    assert_eq!(
        new("email", &["x"]),
        Err(CustomClaimError::Builtin("email".to_owned()))
    );
    assert_eq!(
        new("team", &[]),
        Err(CustomClaimError::BadPath("team".to_owned()))
    );
    assert_eq!(
        new("team", &["org", ""]),
        Err(CustomClaimError::BadPath("team".to_owned()))
    );
    assert_eq!(dotted_path("org.team"), ["org", "team"]);

    for ty in [
        ClaimType::String,
        ClaimType::Int,
        ClaimType::Bool,
        ClaimType::StringSet,
    ] {
        assert_eq!(ClaimType::from_config_name(ty.config_name()), Ok(ty));
    }
    assert_eq!(
        ClaimType::from_config_name("text"),
        Err(CustomClaimError::UnknownType("text".to_owned()))
    );
}

#[test]
fn custom_claims_merge_across_oidc_providers() {
    let first = [
        custom("team", "org.team", ClaimType::String, true),
        custom("tier", "tier", ClaimType::Int, true),
    ];
    let second = [custom("team", "team_name", ClaimType::String, true)];
    let merged = CustomClaims::merge([&first[..], &second[..]]).unwrap();
    assert_eq!(merged.len(), 2);

    let builtin = ProviderKind::Oidc.claims().len() as u16;
    let (team_id, team) = merged.claim("team").unwrap();
    let (tier_id, tier) = merged.claim("tier").unwrap();
    assert_eq!((team_id, tier_id), (ClaimId(builtin), ClaimId(builtin + 1)));
    assert!(team.required, "required by both");
    assert!(
        !tier.required,
        "the second provider's tokens never carry it"
    );
    assert_eq!(merged.get(tier_id).map(|c| c.name.as_str()), Some("tier"));
    assert_eq!(merged.get(ClaimId(0)), None, "built-in ids are not custom");

    assert_eq!(
        merged.resolve(ProviderKind::Oidc, "team"),
        Some((team_id, ClaimType::String, true))
    );
    let (email_id, _) = ProviderKind::Oidc.claim("email").unwrap();
    assert_eq!(
        merged.resolve(ProviderKind::Oidc, "email"),
        Some((email_id, ClaimType::String, false))
    );
    assert_eq!(
        merged.resolve(ProviderKind::Github, "team"),
        None,
        "oidc only"
    );
    assert_eq!(
        merged.claim_type(ProviderKind::Oidc, tier_id),
        Some(ClaimType::Int)
    );
    assert_eq!(
        merged.claim_type(ProviderKind::Process, tier_id),
        None,
        "oidc only"
    );
    assert_eq!(
        merged.claim_type(ProviderKind::Oidc, ClaimId(builtin + 2)),
        None
    );
}

#[test]
fn custom_claims_that_disagree_are_refused() {
    let twice = [
        custom("team", "a", ClaimType::String, false),
        custom("team", "b", ClaimType::String, false),
    ];
    assert_eq!(
        CustomClaims::merge([&twice[..]]),
        Err(CustomClaimError::Duplicate("team".to_owned()))
    );
    let text = [custom("team", "team", ClaimType::String, false)];
    let number = [custom("team", "team", ClaimType::Int, false)];
    let error = CustomClaims::merge([&text[..], &number[..]]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "custom claim `team` has type string for one trust provider and integer for another"
    );
    assert!(CustomClaims::merge(std::iter::empty()).unwrap().is_empty());
}
