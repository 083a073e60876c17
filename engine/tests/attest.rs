//! Attestation against real keys: the example issuer keys in `examples/dev/` sign tokens, the
//! matching JWKS files verify them. Each check of the JWT verification practice has a case.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis_engine::attest::{
    AttestError, Attestor, DEFAULT_JWKS_MAX_AGE, DEFAULT_JWKS_REFRESH_MIN, ProviderConfigError,
    TrustProvider, TrustProviderSpec,
};
use portcullis_engine::jwks::JwksSource;
use portcullis_lang::schema::{ClaimValue, ProviderKind};
use serde_json::{Value, json};

const GITHUB_ISSUER: &str = "https://github.example.invalid";
const KUBE_ISSUER: &str = "https://kube.example.invalid";

fn example(path: &str) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/dev/");
    std::fs::read_to_string(format!("{root}{path}")).unwrap()
}

fn spec(name: &str, kind: ProviderKind, issuer: &str, jwks: &str) -> TrustProviderSpec {
    TrustProviderSpec {
        name: name.to_owned(),
        kind,
        issuer: issuer.to_owned(),
        audiences: vec!["portcullis".to_owned()],
        jwks: JwksSource::Document(jwks.to_owned()),
        jwks_refresh_min: DEFAULT_JWKS_REFRESH_MIN,
        jwks_max_age: DEFAULT_JWKS_MAX_AGE,
        leeway_s: 60,
        custom_claims: Vec::new(),
        trust_domain: None,
        ca: portcullis_engine::http::TrustRoots::default(),
        example_only: true,
    }
}

fn attestor() -> Attestor {
    let github = spec(
        "gh",
        ProviderKind::Github,
        GITHUB_ISSUER,
        &example("example-github-issuer.jwks.json"),
    );
    let kube = spec(
        "k8s",
        ProviderKind::Kubernetes,
        KUBE_ISSUER,
        &example("example-kubernetes-issuer.jwks.json"),
    );
    let providers = vec![
        TrustProvider::new(github).unwrap(),
        TrustProvider::new(kube).unwrap(),
    ];
    Attestor::new(providers).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn github_claims() -> Value {
    json!({
        "iss": GITHUB_ISSUER, "aud": "portcullis", "sub": "repo:acme/app:ref:refs/heads/main",
        "iat": now(), "exp": now() + 300,
        "repository": "acme/app", "repository_id": "1", "repository_owner": "acme",
        "repository_owner_id": "2", "ref": "refs/heads/main", "sha": "abc",
        "event_name": "push",
    })
}

fn sign_with(pem: &str, algorithm: Algorithm, claims: &Value, with_kid: bool) -> String {
    let key = match algorithm {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    };
    let mut header = Header::new(algorithm);
    if with_kid {
        let jwk = Jwk::from_encoding_key(&key, algorithm).unwrap();
        header.kid = Some(jwk.thumbprint(ThumbprintHash::SHA256).unwrap());
    }
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn github_token(claims: &Value) -> String {
    sign_with(
        &example("example-github-issuer.key.pem"),
        Algorithm::ES256,
        claims,
        true,
    )
}

fn reject(token: &str) -> AttestError {
    match attestor().attest(token) {
        Ok(attested) => panic!("accepted: {:?}", attested.payload),
        Err(rejected) => rejected.error,
    }
}

fn patched(patch: Value) -> Value {
    let mut claims = github_claims();
    for (key, value) in patch.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(key);
        } else {
            claims[key] = value.clone();
        }
    }
    claims
}

#[test]
fn es256_github_token_becomes_typed_claims() {
    let attestor = attestor();
    let token = github_token(&github_claims());
    let attested = attestor.attest(&token).unwrap();
    assert_eq!(attested.provider.name(), "gh");
    assert_eq!(attested.subject, "repo:acme/app:ref:refs/heads/main");
    let (repo, _) = ProviderKind::Github.claim("repository").unwrap();
    let (aud, _) = ProviderKind::Github.claim("aud").unwrap();
    let (env, _) = ProviderKind::Github.claim("environment").unwrap();
    let value = |id: portcullis_lang::schema::ClaimId| attested.claims[id.0 as usize].clone();
    assert_eq!(value(repo), Some(ClaimValue::String("acme/app".to_owned())));
    assert_eq!(
        value(aud),
        Some(ClaimValue::StringSet(vec!["portcullis".to_owned()]))
    );
    assert_eq!(value(env), None, "an absent optional claim stays absent");
}

#[test]
fn rs256_kubernetes_token_reads_nested_claims() {
    let claims = json!({
        "iss": KUBE_ISSUER, "aud": ["other", "portcullis"], "sub": "system:serviceaccount:orders:api",
        "exp": now() + 300,
        "kubernetes.io": {
            "namespace": "orders",
            "serviceaccount": { "name": "api", "uid": "u-1" },
            "pod": { "name": "api-0", "uid": "p-1" }
        }
    });
    let pem = example("example-kubernetes-issuer.key.pem");
    let attestor = attestor();
    let token = sign_with(&pem, Algorithm::RS256, &claims, true);
    let attested = attestor.attest(&token).unwrap();
    let (sa, _) = ProviderKind::Kubernetes.claim("service_account").unwrap();
    let (pod, _) = ProviderKind::Kubernetes.claim("pod").unwrap();
    let (node, _) = ProviderKind::Kubernetes.claim("node").unwrap();
    assert_eq!(
        attested.claims[sa.0 as usize],
        Some(ClaimValue::String("api".to_owned()))
    );
    assert_eq!(
        attested.claims[pod.0 as usize],
        Some(ClaimValue::String("api-0".to_owned()))
    );
    assert_eq!(attested.claims[node.0 as usize], None);
}

#[test]
fn a_token_without_kid_uses_the_only_key_of_its_algorithm() {
    let pem = example("example-github-issuer.key.pem");
    let token = sign_with(&pem, Algorithm::ES256, &github_claims(), false);
    assert!(attestor().attest(&token).is_ok());
}

#[test]
fn unsigned_and_hmac_tokens_are_refused_before_any_key_is_used() {
    let payload = URL_SAFE_NO_PAD.encode(github_claims().to_string());
    let none = format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
    assert_eq!(
        reject(&none),
        AttestError::AlgorithmNotAllowed("none".to_owned())
    );

    // The classic confusion: HMAC keyed with the issuer's public key material.
    let jwks: Value =
        serde_json::from_str(&example("example-kubernetes-issuer.jwks.json")).unwrap();
    let public_n = jwks["keys"][0]["n"].as_str().unwrap();
    let claims = json!({ "iss": KUBE_ISSUER, "aud": "portcullis", "sub": "x", "exp": now() + 60 });
    let key = EncodingKey::from_secret(public_n.as_bytes()).unwrap();
    let hmac = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
    assert_eq!(
        reject(&hmac),
        AttestError::AlgorithmNotAllowed("HS256".to_owned())
    );
}

#[test]
fn signature_issuer_and_key_are_checked() {
    let token = github_token(&github_claims());
    let (head, rest) = token.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let forged_payload =
        URL_SAFE_NO_PAD.encode(patched(json!({"repository": "evil/app"})).to_string());
    let forged = format!("{head}.{forged_payload}.{signature}");
    assert_eq!(reject(&forged), AttestError::BadSignature);

    let other_issuer = github_token(&patched(json!({ "iss": "https://elsewhere.invalid" })));
    assert_eq!(
        reject(&other_issuer),
        AttestError::UntrustedIssuer("https://elsewhere.invalid".to_owned())
    );

    // Signed by the Kubernetes key but claiming the GitHub issuer: no such key there.
    let pem = example("example-kubernetes-issuer.key.pem");
    let cross = sign_with(&pem, Algorithm::RS256, &github_claims(), true);
    assert!(matches!(reject(&cross), AttestError::UnknownKey { .. }));
}

#[test]
fn expiry_not_before_and_audience_are_checked_with_leeway() {
    let t = now();
    let expired = github_token(&patched(json!({ "exp": t - 120 })));
    assert_eq!(reject(&expired), AttestError::Expired);
    let within_leeway = github_token(&patched(json!({ "exp": t - 10 })));
    assert!(attestor().attest(&within_leeway).is_ok());

    let early = github_token(&patched(json!({ "nbf": t + 600 })));
    assert_eq!(reject(&early), AttestError::NotYetValid);
    let nbf_within_leeway = github_token(&patched(json!({ "nbf": t + 10 })));
    assert!(attestor().attest(&nbf_within_leeway).is_ok());

    let future_iat = github_token(&patched(json!({ "iat": t + 3600 })));
    assert!(
        attestor().attest(&future_iat).is_ok(),
        "`iat` alone never rejects"
    );

    let wrong_aud = github_token(&patched(json!({ "aud": ["a", "b"] })));
    assert_eq!(reject(&wrong_aud), AttestError::WrongAudience);
    let no_aud = github_token(&patched(json!({ "aud": null })));
    assert_eq!(reject(&no_aud), AttestError::MissingClaim("aud".to_owned()));
    for bad_exp in [json!(-1), json!(1e30), json!("tomorrow")] {
        let token = github_token(&patched(json!({ "exp": bad_exp })));
        assert_eq!(reject(&token).code(), "token_malformed", "exp = {bad_exp}");
    }
    let no_exp = github_token(&patched(json!({ "exp": null })));
    assert_eq!(reject(&no_exp), AttestError::MissingClaim("exp".to_owned()));
}

#[test]
fn the_claim_schema_is_enforced() {
    let missing = github_token(&patched(json!({ "repository": null })));
    assert_eq!(
        reject(&missing),
        AttestError::MissingClaim("repository".to_owned())
    );
    let wrong_type = github_token(&patched(json!({ "repository": 7 })));
    assert_eq!(reject(&wrong_type).code(), "claim_type");
    let bad_set = github_token(&patched(json!({ "aud": ["portcullis", 3] })));
    assert!(attestor().attest(&bad_set).is_err());
}

#[test]
fn malformed_and_oversized_tokens_are_refused() {
    assert_eq!(reject("garbage").code(), "token_malformed");
    assert_eq!(reject("a.b.c").code(), "token_malformed");
    assert_eq!(reject(&"x".repeat(20_000)), AttestError::TooLarge);
}

#[test]
fn unusable_configuration_is_an_error() {
    let oct = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"s"}]}"#;
    let err = TrustProvider::new(spec("bad", ProviderKind::Oidc, "https://i", oct)).unwrap_err();
    assert!(matches!(err, ProviderConfigError::BadKey { .. }), "{err}");

    let empty = r#"{"keys":[]}"#;
    let err = TrustProvider::new(spec("none", ProviderKind::Oidc, "https://i", empty)).unwrap_err();
    assert!(matches!(err, ProviderConfigError::NoKeys { .. }), "{err}");

    let jwks = example("example-github-issuer.jwks.json");
    let first = TrustProvider::new(spec("a", ProviderKind::Github, "https://same", &jwks)).unwrap();
    let second = TrustProvider::new(spec("b", ProviderKind::Oidc, "https://same", &jwks)).unwrap();
    let err = Attestor::new(vec![first, second]).unwrap_err();
    assert!(
        err.to_string().contains("both claim issuer `https://same`"),
        "{err}"
    );
}
