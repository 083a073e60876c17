//! Attestation of each token-issuing kind beyond GitHub and Kubernetes — GitLab CI, HCP
//! Terraform, SPIFFE JWT-SVIDs, generic OIDC with custom claims — from a token signed with the
//! example keys, through the claim schema, to a decision of a compiled Gate policy.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis_engine::attest::{
    AttestError, Attested, Attestor, DEFAULT_JWKS_MAX_AGE, DEFAULT_JWKS_REFRESH_MIN,
    ProviderConfigError, TrustProvider, TrustProviderSpec,
};
use portcullis_engine::jwks::JwksSource;
use portcullis_engine::vm::{Program, Reason, Request, TargetQuery};
use portcullis_lang::bundle::Bundle;
use portcullis_lang::schema::{
    ClaimType, ClaimValue, CustomClaim, CustomClaimError, ProviderKind, SpiffeIdError,
};
use portcullis_lang::{SourceFile, compile, compile_with_claims};
use serde_json::{Value, json};

const GITLAB_ISSUER: &str = "https://gitlab.example.invalid";
const TERRAFORM_ISSUER: &str = "https://terraform.example.invalid";
const SPIFFE_ISSUER: &str = "https://spire.example.invalid";
const OIDC_ISSUER: &str = "https://idp.example.invalid";
const OTHER_OIDC_ISSUER: &str = "https://idp2.example.invalid";
const TRUST_DOMAIN: &str = "prod.acme.example";

fn example(path: &str) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/dev/");
    std::fs::read_to_string(format!("{root}{path}")).unwrap()
}

/// The P-256 example key's JWKS, which signs every token here.
fn ec_jwks() -> String {
    example("example-github-issuer.jwks.json")
}

/// The same key as a SPIRE trust bundle publishes it for JWT-SVIDs.
fn jwt_svid_jwks() -> String {
    let jwks = ec_jwks();
    assert!(jwks.contains(r#""use": "sig""#));
    jwks.replace(r#""use": "sig""#, r#""use": "jwt-svid""#)
}

fn spec(name: &str, kind: ProviderKind, issuer: &str, jwks: String) -> TrustProviderSpec {
    TrustProviderSpec {
        name: name.to_owned(),
        kind,
        issuer: issuer.to_owned(),
        audiences: vec!["portcullis".to_owned()],
        jwks: JwksSource::Document(jwks),
        jwks_refresh_min: DEFAULT_JWKS_REFRESH_MIN,
        jwks_max_age: DEFAULT_JWKS_MAX_AGE,
        leeway_s: 60,
        custom_claims: Vec::new(),
        trust_domain: None,
        ca: portcullis_engine::http::TrustRoots::default(),
        example_only: true,
    }
}

fn custom(name: &str, path: &[&str], ty: ClaimType, required: bool) -> CustomClaim {
    let path = path.iter().map(|step| (*step).to_owned()).collect();
    CustomClaim::new(name, path, ty, required).unwrap()
}

fn attestor() -> Attestor {
    let mut spiffe = spec(
        "spire",
        ProviderKind::Spiffe,
        SPIFFE_ISSUER,
        jwt_svid_jwks(),
    );
    spiffe.trust_domain = Some(TRUST_DOMAIN.to_owned());
    let mut idp = spec("idp", ProviderKind::Oidc, OIDC_ISSUER, ec_jwks());
    idp.custom_claims = vec![
        custom("team", &["org", "team"], ClaimType::String, true),
        custom("tier", &["tier"], ClaimType::Int, false),
        custom(
            "roles",
            &["https://acme.example/roles"],
            ClaimType::StringSet,
            false,
        ),
    ];
    let mut idp2 = spec("idp2", ProviderKind::Oidc, OTHER_OIDC_ISSUER, ec_jwks());
    idp2.custom_claims = vec![custom("team", &["team_name"], ClaimType::String, true)];
    let specs = [
        spec("gitlab", ProviderKind::Gitlab, GITLAB_ISSUER, ec_jwks()),
        spec("tfc", ProviderKind::Terraform, TERRAFORM_ISSUER, ec_jwks()),
        spiffe,
        idp,
        idp2,
    ];
    let providers = specs.into_iter().map(|s| TrustProvider::new(s).unwrap());
    Attestor::new(providers.collect()).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(claims: &Value) -> String {
    let pem = example("example-github-issuer.key.pem");
    let key = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    let jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
    header.kid = Some(jwk.thumbprint(ThumbprintHash::SHA256).unwrap());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// `base` with each key of `patch` replaced, or removed where the patch holds `null`.
fn patched(base: Value, patch: Value) -> Value {
    let mut claims = base;
    for (key, value) in patch.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(key);
        } else {
            claims[key] = value.clone();
        }
    }
    claims
}

/// A GitLab.com ID token of a push pipeline on a protected branch, shaped like a real one.
fn gitlab_claims() -> Value {
    json!({
        "iss": GITLAB_ISSUER, "aud": "portcullis", "iat": now(), "nbf": now(), "exp": now() + 300,
        "jti": "0f0e9d68-47a7-4f0e-9c1b-1c1e1c1e1c1e",
        "sub": "project_path:acme/billing:ref_type:branch:ref:main",
        "namespace_id": "72", "namespace_path": "acme",
        "project_id": "4210", "project_path": "acme/billing", "project_visibility": "private",
        "user_id": "18", "user_login": "ada", "user_email": "ada@acme.example",
        "user_access_level": "maintainer",
        "pipeline_id": "1519139981", "pipeline_source": "push", "job_id": "8222997048",
        "ref": "main", "ref_type": "branch", "ref_path": "refs/heads/main",
        "ref_protected": "true",
        "environment": "production", "environment_protected": "true",
        "deployment_tier": "production", "environment_action": "start",
        "runner_id": 12270835, "runner_environment": "gitlab-hosted",
        "sha": "8fe1b322a576d59fe6257052a4107df7dc1b8c78",
        "ci_config_ref_uri": "gitlab.example.invalid/acme/billing//.gitlab-ci.yml@refs/heads/main",
        "ci_config_sha": "8fe1b322a576d59fe6257052a4107df7dc1b8c78",
        "groups_direct": ["acme", "acme/release"],
    })
}

/// An HCP Terraform apply-phase workload identity token.
fn terraform_claims() -> Value {
    json!({
        "iss": TERRAFORM_ISSUER, "aud": "portcullis", "iat": now(), "nbf": now(),
        "exp": now() + 300, "jti": "1a2b3c",
        "sub": "organization:acme:project:infra:workspace:billing-prod:run_phase:apply",
        "terraform_organization_id": "org-GRNbCjYNpBB6NEH9",
        "terraform_organization_name": "acme",
        "terraform_project_id": "prj-vegSA59s1XPwMr2t",
        "terraform_project_name": "infra",
        "terraform_workspace_id": "ws-mbsd5E3Ktt5Rg2Xm",
        "terraform_workspace_name": "billing-prod",
        "terraform_full_workspace": "organization:acme:project:infra:workspace:billing-prod",
        "terraform_run_id": "run-X3n1AUXNGWbfECsJ",
        "terraform_run_phase": "apply",
    })
}

fn svid_claims(sub: &str) -> Value {
    json!({
        "iss": SPIFFE_ISSUER, "aud": ["portcullis"], "exp": now() + 300, "iat": now(),
        "sub": sub,
    })
}

fn oidc_claims() -> Value {
    json!({
        "iss": OIDC_ISSUER, "aud": "portcullis", "exp": now() + 300,
        "sub": "svc-reporting", "email": "reporting@acme.example",
        "org": { "team": "payments" }, "tier": 2,
        "https://acme.example/roles": ["reader", "auditor"],
    })
}

fn claim(attested: &Attested<'_>, name: &str) -> Option<ClaimValue> {
    let (id, _) = attested.provider.kind().claim(name).unwrap();
    attested.claims[usize::from(id.0)].clone()
}

fn string(value: &str) -> Option<ClaimValue> {
    Some(ClaimValue::String(value.to_owned()))
}

fn set(values: &[&str]) -> Option<ClaimValue> {
    Some(ClaimValue::StringSet(
        values.iter().map(|v| (*v).to_owned()).collect(),
    ))
}

fn reject(claims: &Value) -> AttestError {
    match attestor().attest(&sign(claims)) {
        Ok(attested) => panic!("accepted: {:?}", attested.payload),
        Err(rejected) => rejected.error,
    }
}

#[test]
fn a_gitlab_token_becomes_typed_claims() {
    let attestor = attestor();
    let attested = attestor.attest(&sign(&gitlab_claims())).unwrap();
    assert_eq!(attested.provider.name(), "gitlab");
    assert_eq!(
        attested.claims.len(),
        ProviderKind::Gitlab.claims().len(),
        "one value per schema claim"
    );
    assert_eq!(claim(&attested, "project_path"), string("acme/billing"));
    assert_eq!(claim(&attested, "ref"), string("main"));
    assert_eq!(claim(&attested, "ref_path"), string("refs/heads/main"));
    assert_eq!(claim(&attested, "ref_protected"), string("true"));
    assert_eq!(
        claim(&attested, "runner_id"),
        Some(ClaimValue::Int(12_270_835))
    );
    assert_eq!(
        claim(&attested, "groups_direct"),
        set(&["acme", "acme/release"])
    );
}

#[test]
fn a_gitlab_token_without_environment_or_groups_is_accepted() {
    let bare = patched(
        gitlab_claims(),
        json!({
            "environment": null, "environment_protected": null, "deployment_tier": null,
            "environment_action": null, "groups_direct": null, "user_access_level": null,
            "ci_config_ref_uri": null, "ci_config_sha": null, "jti": null,
        }),
    );
    let attestor = attestor();
    let attested = attestor.attest(&sign(&bare)).unwrap();
    assert_eq!(claim(&attested, "environment"), None);
    assert_eq!(claim(&attested, "groups_direct"), None);
}

#[test]
fn gitlab_claims_keep_their_real_types() {
    let missing = patched(gitlab_claims(), json!({ "project_path": null }));
    assert_eq!(
        reject(&missing),
        AttestError::MissingClaim("project_path".to_owned())
    );
    // `runner_id` is the one number; the ids stay strings.
    let runner_as_string = patched(gitlab_claims(), json!({ "runner_id": "12270835" }));
    assert_eq!(reject(&runner_as_string).code(), "claim_type");
    let project_as_number = patched(gitlab_claims(), json!({ "project_id": 4210 }));
    assert_eq!(reject(&project_as_number).code(), "claim_type");
}

/// `full` cut down to the fields of the required claims of `kind`, and `exp`.
fn minimal(kind: ProviderKind, full: &Value) -> Value {
    let mut keep: Vec<&str> = kind
        .claims()
        .iter()
        .filter(|def| def.required)
        .map(|def| def.path[0])
        .collect();
    // `iss` routes each token to its provider here; a JWT-SVID without it, routed by its
    // trust domain, has a test of its own.
    keep.extend(["exp", "iss"]);
    let fields = full.as_object().unwrap().iter();
    let kept = fields.filter(|(key, _)| keep.contains(&key.as_str()));
    Value::Object(kept.map(|(k, v)| (k.clone(), v.clone())).collect())
}

#[test]
fn a_token_with_only_the_required_claims_attests_and_each_one_is_needed() {
    let attestor = attestor();
    let samples = [
        (ProviderKind::Gitlab, gitlab_claims()),
        (ProviderKind::Terraform, terraform_claims()),
        (
            ProviderKind::Spiffe,
            svid_claims("spiffe://prod.acme.example/api"),
        ),
    ];
    for (kind, full) in samples {
        let minimal = minimal(kind, &full);
        let attested = attestor.attest(&sign(&minimal));
        assert!(attested.is_ok(), "{kind}: {:?}", attested.err());
        let required = kind.claims().iter().filter(|def| def.required);
        for def in required.filter(|def| def.derived.is_none()) {
            let without = patched(minimal.clone(), json!({ def.path[0]: null }));
            assert_eq!(
                reject(&without),
                AttestError::MissingClaim(def.path.join(".")),
                "{kind}: `{}`",
                def.name
            );
        }
    }
}

#[test]
fn a_jwt_svid_without_iss_is_routed_by_its_trust_domain() {
    let attestor = attestor();
    let no_iss = patched(
        svid_claims("spiffe://prod.acme.example/ns/billing/sa/api"),
        json!({ "iss": null }),
    );
    let attested = attestor.attest(&sign(&no_iss)).unwrap();
    assert_eq!(attested.provider.name(), "spire");
    assert_eq!(
        claim(&attested, "trust_domain"),
        string("prod.acme.example")
    );
    assert_eq!(claim(&attested, "iss"), None);

    // A trust domain no provider holds, and a token that is no JWT-SVID, without `iss`.
    let elsewhere = patched(
        svid_claims("spiffe://staging.acme.example/api"),
        json!({ "iss": null }),
    );
    let error = reject(&elsewhere);
    assert_eq!(error.code(), "untrusted_trust_domain", "{error}");
    let not_svid = patched(oidc_claims(), json!({ "iss": null }));
    assert_eq!(
        reject(&not_svid),
        AttestError::MissingClaim("iss".to_owned())
    );
    // Routed by trust domain, the audience is still required and checked.
    let wrong_audience = patched(no_iss.clone(), json!({ "aud": ["someone-else"] }));
    assert_eq!(reject(&wrong_audience).code(), "wrong_audience");
    let no_audience = patched(no_iss, json!({ "aud": null }));
    assert_eq!(
        reject(&no_audience),
        AttestError::MissingClaim("aud".to_owned())
    );
}

#[test]
fn a_spiffe_bundles_x509_authorities_are_not_token_keys() {
    // The JWT-SVID key, and an X.509 authority of the same bundle marked `x509-svid`, which
    // must not verify tokens even though it is an EC key too.
    let bundle: Value = serde_json::from_str(&jwt_svid_jwks()).unwrap();
    let mut x509 = bundle["keys"][0].clone();
    x509["use"] = json!("x509-svid");
    x509["kid"] = json!("x509-authority");
    let only_x509 = json!({ "keys": [x509.clone()], "spiffe_sequence": 7 }).to_string();
    let mut spec = spec("spire", ProviderKind::Spiffe, SPIFFE_ISSUER, only_x509);
    spec.trust_domain = Some(TRUST_DOMAIN.to_owned());
    let error = TrustProvider::new(spec.clone()).unwrap_err().to_string();
    assert!(error.contains("no usable signing key"), "{error}");
    let mut keys = bundle["keys"].as_array().unwrap().clone();
    keys.push(x509);
    spec.jwks = JwksSource::Document(json!({ "keys": keys, "spiffe_sequence": 7 }).to_string());
    let attestor = Attestor::new(vec![TrustProvider::new(spec).unwrap()]).unwrap();
    let token = sign(&svid_claims("spiffe://prod.acme.example/api"));
    assert!(attestor.attest(&token).is_ok());
}

#[test]
fn a_terraform_token_becomes_typed_claims() {
    let attestor = attestor();
    let attested = attestor.attest(&sign(&terraform_claims())).unwrap();
    assert_eq!(attested.provider.name(), "tfc");
    assert_eq!(claim(&attested, "terraform_run_phase"), string("apply"));
    assert_eq!(
        claim(&attested, "terraform_full_workspace"),
        string("organization:acme:project:infra:workspace:billing-prod")
    );
    let no_phase = patched(terraform_claims(), json!({ "terraform_run_phase": null }));
    assert_eq!(
        reject(&no_phase),
        AttestError::MissingClaim("terraform_run_phase".to_owned())
    );
}

#[test]
fn a_jwt_svid_yields_its_spiffe_id_trust_domain_and_path() {
    let attestor = attestor();
    let token = sign(&svid_claims("spiffe://prod.acme.example/ns/billing/sa/api"));
    let attested = attestor.attest(&token).unwrap();
    assert_eq!(attested.provider.name(), "spire");
    assert_eq!(
        claim(&attested, "spiffe_id"),
        string("spiffe://prod.acme.example/ns/billing/sa/api")
    );
    assert_eq!(claim(&attested, "trust_domain"), string(TRUST_DOMAIN));
    assert_eq!(claim(&attested, "path"), string("/ns/billing/sa/api"));

    let token = sign(&svid_claims("spiffe://prod.acme.example"));
    let attested = attestor.attest(&token).unwrap();
    assert_eq!(
        claim(&attested, "path"),
        string(""),
        "the trust domain's own ID"
    );
}

#[test]
fn an_invalid_spiffe_id_fails_attestation_with_its_own_code() {
    let cases = [
        ("https://prod.acme.example/api", SpiffeIdError::Scheme),
        (
            "spiffe://prod.acme.example/api/",
            SpiffeIdError::TrailingSlash,
        ),
        (
            "spiffe://Prod.acme.example/api",
            SpiffeIdError::TrustDomainChar('P'),
        ),
        ("spiffe://prod.acme.example:8443/api", SpiffeIdError::Port),
        (
            "spiffe://prod.acme.example/a//b",
            SpiffeIdError::EmptySegment,
        ),
        (
            "spiffe://prod.acme.example/a/../b",
            SpiffeIdError::DotSegment,
        ),
        (
            "spiffe://prod.acme.example/a%20b",
            SpiffeIdError::PercentEncoded,
        ),
        (
            "spiffe://prod.acme.example/a?b=c",
            SpiffeIdError::QueryOrFragment,
        ),
        ("spiffe:///api", SpiffeIdError::EmptyTrustDomain),
    ];
    for (sub, expected) in cases {
        let error = reject(&svid_claims(sub));
        assert_eq!(error, AttestError::InvalidSpiffeId(expected), "{sub}");
        assert_eq!(error.code(), "invalid_spiffe_id");
    }
}

#[test]
fn a_jwt_svid_of_another_trust_domain_is_refused() {
    let error = reject(&svid_claims("spiffe://staging.acme.example/api"));
    assert_eq!(
        error,
        AttestError::ForeignTrustDomain {
            actual: "staging.acme.example".to_owned(),
            expected: TRUST_DOMAIN.to_owned(),
        }
    );
    assert_eq!(error.code(), "foreign_trust_domain");
}

#[test]
fn custom_oidc_claims_are_read_at_each_providers_path() {
    let attestor = attestor();
    let custom = attestor.custom_claims();
    let value = |attested: &Attested<'_>, name: &str| {
        let (id, _) = custom.claim(name).unwrap();
        attested.claims[usize::from(id.0)].clone()
    };
    let attested = attestor.attest(&sign(&oidc_claims())).unwrap();
    assert_eq!(
        attested.claims.len(),
        ProviderKind::Oidc.claims().len() + custom.len()
    );
    assert_eq!(value(&attested, "team"), string("payments"));
    assert_eq!(value(&attested, "tier"), Some(ClaimValue::Int(2)));
    assert_eq!(value(&attested, "roles"), set(&["auditor", "reader"]));
    assert_eq!(claim(&attested, "email"), string("reporting@acme.example"));

    // The second provider declares `team` elsewhere and nothing else.
    let other = json!({
        "iss": OTHER_OIDC_ISSUER, "aud": "portcullis", "exp": now() + 300, "sub": "svc-2",
        "team_name": "search", "tier": 9,
    });
    let attested = attestor.attest(&sign(&other)).unwrap();
    assert_eq!(value(&attested, "team"), string("search"));
    assert_eq!(
        value(&attested, "tier"),
        None,
        "not declared by this provider"
    );

    let (_, team) = custom.claim("team").unwrap();
    let (_, tier) = custom.claim("tier").unwrap();
    assert!(team.required, "both providers require `team`");
    assert!(!tier.required);
}

#[test]
fn custom_oidc_claims_are_enforced() {
    let no_team = patched(oidc_claims(), json!({ "org": null }));
    assert_eq!(
        reject(&no_team),
        AttestError::MissingClaim("org.team".to_owned())
    );
    let tier_as_text = patched(oidc_claims(), json!({ "tier": "2" }));
    assert_eq!(
        reject(&tier_as_text),
        AttestError::ClaimType {
            claim: "tier".to_owned(),
            expected: ClaimType::Int
        }
    );
}

#[test]
fn kind_settings_are_checked_when_a_provider_is_configured() {
    let process = spec("local", ProviderKind::Process, "https://p", ec_jwks());
    let err = TrustProvider::new(process).unwrap_err();
    assert!(
        matches!(err, ProviderConfigError::NotAnIssuer { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("local-process listener"), "{err}");

    let mut github = spec("gh", ProviderKind::Github, "https://g", ec_jwks());
    github.custom_claims = vec![custom("team", &["team"], ClaimType::String, false)];
    let err = TrustProvider::new(github).unwrap_err();
    assert!(
        matches!(err, ProviderConfigError::CustomClaimsNotAllowed { .. }),
        "{err}"
    );

    let spiffe = spec("spire", ProviderKind::Spiffe, "https://s", jwt_svid_jwks());
    let err = TrustProvider::new(spiffe).unwrap_err();
    assert!(
        matches!(err, ProviderConfigError::MissingTrustDomain { .. }),
        "{err}"
    );
    let mut spiffe = spec("spire", ProviderKind::Spiffe, "https://s", jwt_svid_jwks());
    spiffe.trust_domain = Some("Acme.example".to_owned());
    let err = TrustProvider::new(spiffe).unwrap_err();
    assert!(
        matches!(err, ProviderConfigError::BadTrustDomain { .. }),
        "{err}"
    );

    let mut gitlab = spec("gl", ProviderKind::Gitlab, "https://gl", ec_jwks());
    gitlab.trust_domain = Some(TRUST_DOMAIN.to_owned());
    let err = TrustProvider::new(gitlab).unwrap_err();
    assert!(
        matches!(err, ProviderConfigError::UnexpectedTrustDomain { .. }),
        "{err}"
    );
}

#[test]
fn custom_claims_of_one_name_must_agree_on_type() {
    let mut first = spec("a", ProviderKind::Oidc, "https://a", ec_jwks());
    first.custom_claims = vec![custom("team", &["team"], ClaimType::String, true)];
    let mut second = spec("b", ProviderKind::Oidc, "https://b", ec_jwks());
    second.custom_claims = vec![custom("team", &["team"], ClaimType::Int, true)];
    let providers = vec![
        TrustProvider::new(first).unwrap(),
        TrustProvider::new(second).unwrap(),
    ];
    let err = Attestor::new(providers).unwrap_err();
    assert!(
        matches!(
            err,
            ProviderConfigError::CustomClaims(CustomClaimError::Conflict { .. })
        ),
        "{err}"
    );
}

const POLICY: &str = r#"
workload billing_pipeline {
  gitlab {
    project_path == "acme/billing" && ref_path == "refs/heads/main" && ref_protected == "true"
      && runner_environment == "gitlab-hosted" && has environment && environment == "production"
  }
}
workload infra_apply {
  terraform {
    terraform_organization_name == "acme" && terraform_workspace_name == "billing-prod"
      && terraform_run_phase == "apply"
  }
}
workload billing_api {
  spiffe { trust_domain == "prod.acme.example" && path like "/ns/billing/*" }
}
target billing { https { host = "billing.internal" } }

permit pipeline_deploys { workload billing_pipeline target billing }
permit infra_applies { workload infra_apply target billing }
permit api_calls { workload billing_api target billing }
forbid no_self_hosted_runners {
  workload any gitlab
  when client.gitlab.runner_environment == "self-hosted"
}
"#;

fn program() -> Program {
    let files = [SourceFile::new("kinds.gate", POLICY)];
    let set = compile(&files).unwrap_or_else(|diagnostics| panic!("{diagnostics:?}"));
    let bytes = Bundle::from_policy_set(&set).unwrap().to_bytes();
    Program::load(&bytes).unwrap()
}

/// Attests `claims` and asks `program` whether the caller may POST to `billing`.
fn decide<'p>(program: &'p Program, attestor: &Attestor, claims: &Value) -> Reason<'p> {
    let attested = attestor.attest(&sign(claims)).unwrap();
    let request = Request {
        kind: attested.provider.kind(),
        claims: &attested.claims,
        target: TargetQuery::Named("billing"),
        action: Some("POST"),
        resource: Some("/v1/deploy"),
        source_ip: None,
        time: Some(0),
    };
    program.decide(&request).reason
}

#[test]
fn attested_claims_of_each_kind_decide_through_a_compiled_policy() {
    let program = program();
    let attestor = attestor();
    let permitted = |rule| Reason::Permitted { rule };

    let gitlab = gitlab_claims();
    assert_eq!(
        decide(&program, &attestor, &gitlab),
        permitted("pipeline_deploys")
    );
    let feature_branch = patched(
        gitlab_claims(),
        json!({ "ref": "feature", "ref_path": "refs/heads/feature" }),
    );
    assert_eq!(
        decide(&program, &attestor, &feature_branch),
        Reason::NoPermit
    );
    let self_hosted = patched(
        gitlab_claims(),
        json!({ "runner_environment": "self-hosted" }),
    );
    assert_eq!(
        decide(&program, &attestor, &self_hosted),
        Reason::Forbidden {
            rule: "no_self_hosted_runners"
        }
    );

    assert_eq!(
        decide(&program, &attestor, &terraform_claims()),
        permitted("infra_applies")
    );
    let plan = patched(terraform_claims(), json!({ "terraform_run_phase": "plan" }));
    assert_eq!(decide(&program, &attestor, &plan), Reason::NoPermit);

    let api = svid_claims("spiffe://prod.acme.example/ns/billing/sa/api");
    assert_eq!(decide(&program, &attestor, &api), permitted("api_calls"));
    let other = svid_claims("spiffe://prod.acme.example/ns/search/sa/api");
    assert_eq!(decide(&program, &attestor, &other), Reason::NoPermit);
}

const CUSTOM_POLICY: &str = r#"
workload payments_jobs {
  oidc { team == "payments" && has tier && tier >= 2 }
}
target ledger { https { host = "ledger.internal" } }

permit payments_posts {
  workload payments_jobs
  target ledger
  when has client.oidc.roles && client.oidc.roles in ["auditor"]
}
"#;

#[test]
fn attested_custom_claims_decide_through_a_policy_compiled_with_them() {
    let attestor = attestor();
    let files = [SourceFile::new("custom.gate", CUSTOM_POLICY)];
    assert!(
        compile(&files).is_err(),
        "unknown without the custom claims"
    );
    let set = compile_with_claims(&files, attestor.custom_claims())
        .unwrap_or_else(|diagnostics| panic!("{diagnostics:?}"));
    let bytes = Bundle::from_policy_set(&set).unwrap().to_bytes();
    let program = Program::load(&bytes).unwrap();
    assert_eq!(program.custom_claims(), attestor.custom_claims());
    let decide = |claims: &Value| {
        let attested = attestor.attest(&sign(claims)).unwrap();
        let request = Request {
            kind: attested.provider.kind(),
            claims: &attested.claims,
            target: TargetQuery::Named("ledger"),
            action: Some("POST"),
            resource: None,
            source_ip: None,
            time: Some(0),
        };
        let decision = program.decide(&request);
        (decision.reason, decision.reason_text())
    };

    let (reason, _) = decide(&oidc_claims());
    assert_eq!(
        reason,
        Reason::Permitted {
            rule: "payments_posts"
        }
    );
    let (reason, _) = decide(&patched(oidc_claims(), json!({ "tier": 1 })));
    assert_eq!(reason, Reason::NoPermit);
    let (reason, _) = decide(&patched(
        oidc_claims(),
        json!({ "org": { "team": "search" } }),
    ));
    assert_eq!(reason, Reason::NoPermit);

    let no_roles = patched(oidc_claims(), json!({ "https://acme.example/roles": null }));
    assert_eq!(decide(&no_roles).0, Reason::NoPermit);

    // Attestation never lets a required claim be absent; were it absent, the decision would
    // deny with an evaluation error that names the custom claim.
    let attested = attestor.attest(&sign(&oidc_claims())).unwrap();
    let mut claims = attested.claims.clone();
    let (team, _) = attestor.custom_claims().claim("team").unwrap();
    claims[usize::from(team.0)] = None;
    let ask = |claims: &[Option<ClaimValue>]| {
        let request = Request {
            kind: ProviderKind::Oidc,
            claims,
            target: TargetQuery::Named("ledger"),
            action: Some("POST"),
            resource: None,
            source_ip: None,
            time: Some(0),
        };
        let decision = program.decide(&request);
        let is_error = matches!(
            decision.reason,
            Reason::EvaluationError {
                rule: "payments_posts",
                ..
            }
        );
        assert!(is_error, "{:?}", decision.reason);
        decision.reason_text()
    };
    assert_eq!(
        ask(&claims),
        "evaluation error in rule `payments_posts`: claim `team` is absent"
    );
    claims[usize::from(team.0)] = Some(ClaimValue::Int(7));
    assert_eq!(
        ask(&claims),
        "evaluation error in rule `payments_posts`: claim `team` is not a string"
    );
}
