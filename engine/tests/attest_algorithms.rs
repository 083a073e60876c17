//! Every signature algorithm on the allow-list verifies with a key of its family, and nothing
//! else does: keys generated for these tests (`tests/keys/`, never used anywhere else) sign
//! tokens, and a JWKS made from their public halves verifies them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis_engine::attest::{
    AttestError, Attestor, DEFAULT_JWKS_MAX_AGE, DEFAULT_JWKS_REFRESH_MIN, ProviderConfigError,
    TrustProvider, TrustProviderSpec,
};
use portcullis_engine::jwks::JwksSource;
use portcullis_lang::schema::ProviderKind;
use serde_json::{Value, json};

const ISSUER: &str = "https://idp.example.invalid";

fn pem(name: &str) -> String {
    let path = format!("{}/tests/keys/{name}.key.pem", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path).unwrap()
}

fn encoding_key(name: &str, algorithm: Algorithm) -> EncodingKey {
    let pem = pem(name);
    match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem.as_bytes()),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
    }
    .unwrap()
}

/// The public JWK of key `name`, with `kid` = `name`; `alg` only when `bind` is given.
fn jwk(name: &str, algorithm: Algorithm, bind: Option<KeyAlgorithm>) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(&encoding_key(name, algorithm), algorithm).unwrap();
    jwk.common.key_id = Some(name.to_owned());
    jwk.common.key_algorithm = bind;
    jwk
}

fn provider(keys: Vec<Jwk>) -> Result<TrustProvider, ProviderConfigError> {
    provider_with_leeway(keys, 60)
}

fn provider_with_leeway(
    keys: Vec<Jwk>,
    leeway_s: u64,
) -> Result<TrustProvider, ProviderConfigError> {
    let jwks = serde_json::to_string(&JwkSet { keys }).unwrap();
    TrustProvider::new(TrustProviderSpec {
        name: "idp".to_owned(),
        kind: ProviderKind::Oidc,
        issuer: ISSUER.to_owned(),
        audiences: vec!["portcullis".to_owned()],
        jwks: JwksSource::Document(jwks),
        jwks_refresh_min: DEFAULT_JWKS_REFRESH_MIN,
        jwks_max_age: DEFAULT_JWKS_MAX_AGE,
        leeway_s,
        custom_claims: Vec::new(),
        trust_domain: None,
        ca: portcullis_engine::http::TrustRoots::default(),
        example_only: false,
    })
}

fn attestor(keys: Vec<Jwk>) -> Attestor {
    Attestor::new(vec![provider(keys).unwrap()]).unwrap()
}

fn claims() -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json!({ "iss": ISSUER, "aud": "portcullis", "sub": "svc", "iat": now, "exp": now + 300 })
}

fn token(name: &str, algorithm: Algorithm) -> String {
    let mut header = Header::new(algorithm);
    header.kid = Some(name.to_owned());
    jsonwebtoken::encode(&header, &claims(), &encoding_key(name, algorithm)).unwrap()
}

fn rejection(attestor: &Attestor, token: &str) -> AttestError {
    match attestor.attest(token) {
        Ok(attested) => panic!("accepted: {:?}", attested.payload),
        Err(rejected) => rejected.error,
    }
}

/// Each key, and the algorithms it signs with here.
const CASES: [(&str, Algorithm); 7] = [
    ("rsa", Algorithm::RS256),
    ("rsa", Algorithm::RS384),
    ("rsa", Algorithm::RS512),
    ("rsa", Algorithm::PS256),
    ("p256", Algorithm::ES256),
    ("p384", Algorithm::ES384),
    ("ed25519", Algorithm::EdDSA),
];

fn all_keys() -> Vec<Jwk> {
    vec![
        jwk("rsa", Algorithm::RS256, None),
        jwk("p256", Algorithm::ES256, None),
        jwk("p384", Algorithm::ES384, None),
        jwk("ed25519", Algorithm::EdDSA, None),
    ]
}

#[test]
fn every_allowed_algorithm_verifies() {
    let attestor = attestor(all_keys());
    for (name, algorithm) in CASES {
        let attested = attestor
            .attest(&token(name, algorithm))
            .unwrap_or_else(|rejected| panic!("{algorithm:?}: {}", rejected.error));
        assert_eq!(attested.subject, "svc", "{algorithm:?}");
    }
}

#[test]
fn a_key_verifies_only_its_own_family() {
    // The token's header names a key of another family than the one it was signed with:
    // no key of the named `kid` accepts the algorithm, so it is an unknown key, and no
    // signature check runs with a mismatched key.
    let attestor = attestor(all_keys());
    for (signer, algorithm, named) in [
        ("p256", Algorithm::ES256, "rsa"),
        ("rsa", Algorithm::RS256, "p256"),
        ("p384", Algorithm::ES384, "p256"),
        ("ed25519", Algorithm::EdDSA, "p384"),
    ] {
        let mut header = Header::new(algorithm);
        header.kid = Some(named.to_owned());
        let token =
            jsonwebtoken::encode(&header, &claims(), &encoding_key(signer, algorithm)).unwrap();
        let error = rejection(&attestor, &token);
        assert_eq!(error.code(), "unknown_key", "{algorithm:?} under `{named}`");
    }
}

#[test]
fn a_key_bound_to_one_algorithm_refuses_the_others() {
    let attestor = attestor(vec![jwk(
        "rsa",
        Algorithm::RS256,
        Some(KeyAlgorithm::PS256),
    )]);
    assert!(attestor.attest(&token("rsa", Algorithm::PS256)).is_ok());
    for algorithm in [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512] {
        let error = rejection(&attestor, &token("rsa", algorithm));
        assert_eq!(error.code(), "unknown_key", "{algorithm:?}");
    }
}

#[test]
fn a_jwk_whose_alg_does_not_fit_its_key_is_refused() {
    let error = provider(vec![jwk(
        "p256",
        Algorithm::ES256,
        Some(KeyAlgorithm::RS256),
    )])
    .unwrap_err()
    .to_string();
    assert!(error.contains("does not fit a key of this type"), "{error}");
    let error = provider(vec![jwk(
        "rsa",
        Algorithm::RS256,
        Some(KeyAlgorithm::HS256),
    )])
    .unwrap_err()
    .to_string();
    assert!(error.contains("is not allowed"), "{error}");
}

/// The classic confusion: the verifier's RSA public key, which anyone may read, used as the
/// HMAC secret of an HS256 token.
#[test]
fn an_rsa_public_key_as_an_hmac_secret_is_refused() {
    let attestor = attestor(all_keys());
    let public = jwk("rsa", Algorithm::RS256, None);
    let public_json = serde_json::to_vec(&public).unwrap();
    for algorithm in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let mut header = Header::new(algorithm);
        header.kid = Some("rsa".to_owned());
        let secret = EncodingKey::from_secret(&public_json).unwrap();
        let token = jsonwebtoken::encode(&header, &claims(), &secret).unwrap();
        assert_eq!(
            rejection(&attestor, &token).code(),
            "algorithm_not_allowed",
            "{algorithm:?}"
        );
    }
}

#[test]
fn alg_none_is_refused_before_any_key() {
    let attestor = attestor(all_keys());
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"rsa"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}.c2ln"),
    ] {
        assert_eq!(rejection(&attestor, &token).code(), "algorithm_not_allowed");
    }
}

#[test]
fn several_keys_of_one_family_are_told_apart_by_kid() {
    let attestor = attestor(vec![
        jwk("p256", Algorithm::ES256, None),
        jwk("p256-second", Algorithm::ES256, None),
    ]);
    assert!(attestor.attest(&token("p256", Algorithm::ES256)).is_ok());
    assert!(
        attestor
            .attest(&token("p256-second", Algorithm::ES256))
            .is_ok()
    );
    // Signed by one, naming the other: the named key does not verify it.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("p256-second".to_owned());
    let forged =
        jsonwebtoken::encode(&header, &claims(), &encoding_key("p256", Algorithm::ES256)).unwrap();
    assert_eq!(rejection(&attestor, &forged).code(), "bad_signature");
}

#[test]
fn a_remembered_token_is_refused_once_it_expires() {
    let attestor = Attestor::new(vec![provider_with_leeway(all_keys(), 0).unwrap()]).unwrap();
    let mut claims = claims();
    let now = claims["iat"].as_u64().unwrap();
    claims["exp"] = json!(now + 1);
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("p256".to_owned());
    let token =
        jsonwebtoken::encode(&header, &claims, &encoding_key("p256", Algorithm::ES256)).unwrap();
    assert!(attestor.attest(&token).is_ok());
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(rejection(&attestor, &token).code(), "token_expired");
}

#[test]
fn a_verified_token_verifies_again_and_a_tampered_one_does_not() {
    let attestor = attestor(all_keys());
    let token = token("p256", Algorithm::ES256);
    let first = attestor.attest(&token).unwrap();
    let again = attestor.attest(&token).unwrap();
    assert_eq!(first.subject, again.subject);
    assert_eq!(first.claims, again.claims);
    assert_eq!(first.payload, again.payload);
    // A token one byte off is not the remembered one: it is verified, and fails.
    let mut tampered = token.into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert!(attestor.attest(&tampered).is_err());
}
