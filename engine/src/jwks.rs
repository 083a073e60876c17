//! A trust provider's verification keys: parsed from a JWKS document, bound to the algorithms
//! each key may verify, and fetched from the issuer when configured so.
//!
//! In: a JWKS document's text, or where to fetch it (a JWKS URL, or the issuer's OpenID
//! discovery document, which names the JWKS URL). Out: [`VerificationKey`]s, or an error
//! that names the provider and what was wrong.
//!
//! Fetching is blocking I/O with a timeout and a size limit; callers on an async runtime run it
//! on a blocking thread. Keys are fetched over `https`, checked against the web's public roots,
//! or over plain `http` from a loopback address only (an issuer on the same host).

use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, OctetKeyPairType, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use crate::attest::ProviderConfigError;
use crate::http::TrustRoots;

/// The signature algorithms a token may use: asymmetric only. `none` and every HMAC
/// algorithm are refused before any key is looked at, so a public key can never be used as
/// an HMAC secret.
pub const ALLOWED_ALGORITHMS: [Algorithm; 7] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The largest JWKS or discovery document fetched.
pub const MAX_DOCUMENT_BYTES: u64 = 1024 * 1024;

/// How long one fetch (connect, send, read) may take.
const FETCH_TIMEOUT: Duration = crate::http::TIMEOUT;

/// Where a trust provider's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWKS document's text, read from a file once.
    Document(String),
    /// A JWKS URL, fetched at start and again when needed.
    Url(String),
    /// The issuer's OpenID discovery document (`ISSUER/.well-known/openid-configuration`),
    /// whose `jwks_uri` is fetched.
    Discovery,
}

impl JwksSource {
    /// Whether the keys can be fetched again.
    pub fn is_remote(&self) -> bool {
        !matches!(self, JwksSource::Document(_))
    }
}

/// The key families: which algorithms a key of each may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl Family {
    fn accepts(self, algorithm: Algorithm) -> bool {
        match self {
            Family::Rsa => matches!(
                algorithm,
                Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256
            ),
            Family::P256 => algorithm == Algorithm::ES256,
            Family::P384 => algorithm == Algorithm::ES384,
            Family::Ed25519 => algorithm == Algorithm::EdDSA,
        }
    }
}

/// One key of a JWKS, with the algorithms it may verify: the one its `alg` names, or, without
/// `alg`, every allowed algorithm of its key type and curve.
pub struct VerificationKey {
    pub kid: Option<String>,
    family: Family,
    /// The JWK's `alg`, when it names one.
    only: Option<Algorithm>,
    pub key: DecodingKey,
}

impl VerificationKey {
    /// Whether this key may verify a token signed with `algorithm`.
    pub fn accepts(&self, algorithm: Algorithm) -> bool {
        self.family.accepts(algorithm) && self.only.is_none_or(|only| only == algorithm)
    }
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .field("only", &self.only)
            .finish_non_exhaustive()
    }
}

/// The public keys of the example issuers, whose private keys are published with the source
/// in `examples/dev/`: anyone can mint tokens these keys verify.
const PUBLISHED_EXAMPLE_JWKS: [(&str, &str); 2] = [
    (
        "examples/dev/example-github-issuer.jwks.json",
        include_str!("../../examples/dev/example-github-issuer.jwks.json"),
    ),
    (
        "examples/dev/example-kubernetes-issuer.jwks.json",
        include_str!("../../examples/dev/example-kubernetes-issuer.jwks.json"),
    ),
];

/// The published example keys by their public material ([`key_material`]), each with the
/// file it is published in.
static PUBLISHED_EXAMPLE_KEYS: LazyLock<Vec<(Vec<u8>, &'static str)>> = LazyLock::new(|| {
    PUBLISHED_EXAMPLE_JWKS
        .iter()
        .flat_map(|(file, text)| {
            let set: JwkSet = serde_json::from_str(text).unwrap_or(JwkSet { keys: Vec::new() });
            set.keys
                .iter()
                .filter_map(key_material)
                .map(|material| (material, *file))
                .collect::<Vec<_>>()
        })
        .collect()
});

/// A key's public material, decoded, whatever its `kid`, `alg` or base64 padding: the key
/// type, then the curve's point or the RSA modulus and exponent without leading zeros.
fn key_material(jwk: &Jwk) -> Option<Vec<u8>> {
    let decode = |text: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .ok()
    };
    let unpadded = |bytes: Vec<u8>| {
        let start = bytes
            .iter()
            .position(|byte| *byte != 0)
            .unwrap_or(bytes.len());
        bytes[start..].to_vec()
    };
    let mut material = Vec::new();
    match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) => {
            material.extend_from_slice(format!("EC {:?} ", ec.curve).as_bytes());
            material.extend(decode(&ec.x)?);
            material.extend(decode(&ec.y)?);
        }
        AlgorithmParameters::RSA(rsa) => {
            material.extend_from_slice(b"RSA ");
            material.extend(unpadded(decode(&rsa.n)?));
            material.push(b' ');
            material.extend(unpadded(decode(&rsa.e)?));
        }
        AlgorithmParameters::OctetKeyPair(okp) => {
            material.extend_from_slice(format!("OKP {:?} ", okp.curve).as_bytes());
            material.extend(decode(&okp.x)?);
        }
        _ => return None,
    }
    Some(material)
}

/// The file of `examples/dev/` that publishes `jwk`, if it is one of the example keys.
fn published_example_key(jwk: &Jwk) -> Option<&'static str> {
    let material = key_material(jwk)?;
    PUBLISHED_EXAMPLE_KEYS
        .iter()
        .find(|(published, _)| *published == material)
        .map(|(_, file)| *file)
}

/// Parses a JWKS document. Every key must be usable: a symmetric key, an unknown curve or an
/// algorithm outside [`ALLOWED_ALGORITHMS`] is an error, not a key skipped in silence. So is
/// one of the published example keys, unless `example_only` says the provider is there to run
/// the examples.
pub fn parse_jwks(
    provider: &str,
    text: &str,
    example_only: bool,
) -> Result<Vec<VerificationKey>, ProviderConfigError> {
    let set: JwkSet =
        serde_json::from_str(text).map_err(|err| ProviderConfigError::JwksSyntax {
            provider: provider.to_owned(),
            detail: err.to_string(),
        })?;
    let mut keys = Vec::with_capacity(set.keys.len());
    for jwk in &set.keys {
        // A SPIFFE trust bundle also holds the domain's X.509 authorities, and a JWKS may hold
        // encryption keys: neither verifies a token, and neither is an error.
        let verifies = match &jwk.common.public_key_use {
            None | Some(PublicKeyUse::Signature) => true,
            Some(PublicKeyUse::Other(other)) => other == "jwt-svid",
            Some(PublicKeyUse::Encryption) => false,
        };
        if !verifies {
            continue;
        }
        let kid = jwk.common.key_id.clone();
        let bad_key = |detail: String| ProviderConfigError::BadKey {
            provider: provider.to_owned(),
            kid: kid.clone().unwrap_or_else(|| "(no kid)".to_owned()),
            detail,
        };
        if !example_only && let Some(file) = published_example_key(jwk) {
            return Err(ProviderConfigError::PublishedExampleKey {
                provider: provider.to_owned(),
                kid: kid.clone().unwrap_or_else(|| "(no kid)".to_owned()),
                file,
            });
        }
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Family::Rsa,
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => Family::P256,
                EllipticCurve::P384 => Family::P384,
                ref other => return Err(bad_key(format!("curve `{other:?}` is not supported"))),
            },
            AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
                EllipticCurve::Ed25519 if okp.key_type == OctetKeyPairType::OctetKeyPair => {
                    Family::Ed25519
                }
                ref other => return Err(bad_key(format!("curve `{other:?}` is not supported"))),
            },
            AlgorithmParameters::OctetKey(_) => {
                return Err(bad_key("symmetric keys are never accepted".to_owned()));
            }
            _ => return Err(bad_key("the key type is not supported".to_owned())),
        };
        let only = match jwk.common.key_algorithm {
            None => None,
            Some(named) => {
                let algorithm = allowed_key_algorithm(named)
                    .ok_or_else(|| bad_key(format!("algorithm `{named:?}` is not allowed")))?;
                if !family.accepts(algorithm) {
                    return Err(bad_key(format!(
                        "algorithm `{named:?}` does not fit a key of this type"
                    )));
                }
                Some(algorithm)
            }
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|err| bad_key(err.to_string()))?;
        keys.push(VerificationKey {
            kid,
            family,
            only,
            key,
        });
    }
    Ok(keys)
}

fn allowed_key_algorithm(named: KeyAlgorithm) -> Option<Algorithm> {
    let algorithm = match named {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    };
    Some(algorithm)
}

/// Why a provider's keys could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("`{url}` is not a URL keys may be fetched from: {why}")]
    BadUrl { url: String, why: String },
    #[error("fetching `{url}` failed: {detail}")]
    Http { url: String, detail: String },
    #[error("`{url}` answered something that is not {what}: {detail}")]
    Document {
        url: String,
        what: &'static str,
        detail: String,
    },
    #[error("`{url}` answered with keys that are refused: {detail}")]
    Refused { url: String, detail: String },
    #[error(
        "the discovery document at `{url}` names issuer `{named}`, not the configured `{expected}`"
    )]
    IssuerMismatch {
        url: String,
        named: String,
        expected: String,
    },
}

/// Checks that keys may be fetched from `url` ([`crate::http::check_url`]).
pub fn check_fetch_url(url: &str) -> Result<(), FetchError> {
    crate::http::check_url(url).map_err(|bad| FetchError::BadUrl {
        url: bad.url,
        why: bad.why,
    })
}

/// Where the discovery document of `issuer` is, per OpenID Connect Discovery 1.0.
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// Fetches the JWKS document of a provider whose keys are remote; `None` for a document.
/// `https` is verified against `roots`.
pub fn fetch_jwks(
    source: &JwksSource,
    issuer: &str,
    roots: &TrustRoots,
) -> Option<Result<(String, String), FetchError>> {
    let url = match source {
        JwksSource::Document(_) => return None,
        JwksSource::Url(url) => url.clone(),
        JwksSource::Discovery => match jwks_uri_of(issuer, roots) {
            Ok(url) => url,
            Err(error) => return Some(Err(error)),
        },
    };
    Some(get(&url, roots).map(|text| (url, text)))
}

/// Reads the issuer's discovery document and returns its `jwks_uri`, after checking that the
/// document is the issuer's own.
fn jwks_uri_of(issuer: &str, roots: &TrustRoots) -> Result<String, FetchError> {
    let url = discovery_url(issuer);
    let text = get(&url, roots)?;
    let document = |detail: String| FetchError::Document {
        url: url.clone(),
        what: "an OpenID discovery document",
        detail,
    };
    let value: Value = serde_json::from_str(&text).map_err(|err| document(err.to_string()))?;
    let named = value.get("issuer").and_then(Value::as_str);
    if named != Some(issuer) {
        return Err(FetchError::IssuerMismatch {
            url,
            named: named.unwrap_or("(none)").chars().take(256).collect(),
            expected: issuer.to_owned(),
        });
    }
    let jwks_uri = value
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or_else(|| document("it has no `jwks_uri`".to_owned()))?;
    check_fetch_url(jwks_uri)?;
    Ok(jwks_uri.to_owned())
}

/// One bounded `GET` of a JSON document.
fn get(url: &str, roots: &TrustRoots) -> Result<String, FetchError> {
    check_fetch_url(url)?;
    let http = |detail: String| FetchError::Http {
        url: url.to_owned(),
        detail,
    };
    let mut response = crate::http::agent_trusting(FETCH_TIMEOUT, roots)
        .get(url)
        .header("accept", "application/json")
        .call()
        .map_err(|err| {
            let mut detail = err.to_string();
            if detail.contains("UnknownIssuer") {
                detail.push_str(
                    " (a certificate from a private CA needs that CA in the provider's `ca_file`)",
                );
            }
            http(detail)
        })?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(http(format!("it answered {status}")));
    }
    crate::http::read_limited(response.body_mut(), MAX_DOCUMENT_BYTES).map_err(http)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_example_keys_are_refused_unless_the_provider_runs_the_examples() {
        for (file, text) in PUBLISHED_EXAMPLE_JWKS {
            let error = parse_jwks("prod", text, false).unwrap_err().to_string();
            assert!(
                error.contains("trust provider `prod`") && error.contains(file),
                "{error}"
            );
            assert_eq!(parse_jwks("examples", text, true).unwrap().len(), 1);
            // The same key under another `kid`, without `alg` or `use`, with base64 padding.
            let mut set: Value = serde_json::from_str(text).unwrap();
            let key = &mut set["keys"][0];
            key["kid"] = "renamed".into();
            key.as_object_mut().unwrap().remove("alg");
            key.as_object_mut().unwrap().remove("use");
            for param in ["x", "n"] {
                if let Some(value) = key.get(param).and_then(Value::as_str) {
                    let padded = format!("{value}{}", "=".repeat((4 - value.len() % 4) % 4));
                    key[param] = padded.into();
                }
            }
            let error = parse_jwks("prod", &set.to_string(), false)
                .unwrap_err()
                .to_string();
            assert!(error.contains("key `renamed`"), "{error}");
        }
    }

    #[test]
    fn another_key_of_the_same_curve_is_not_taken_for_an_example_key() {
        let text = PUBLISHED_EXAMPLE_JWKS[0].1;
        let mut set: Value = serde_json::from_str(text).unwrap();
        // A different point: P-256's generator.
        set["keys"][0]["x"] = "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY".into();
        set["keys"][0]["y"] = "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU".into();
        assert_eq!(
            parse_jwks("prod", &set.to_string(), false).unwrap().len(),
            1
        );
    }

    #[test]
    fn discovery_document_is_under_the_issuer() {
        assert_eq!(
            discovery_url("https://gitlab.example/"),
            "https://gitlab.example/.well-known/openid-configuration"
        );
    }
}
