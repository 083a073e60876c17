//! Attestation: verifies a caller's evidence and turns it into typed claims.
//!
//! In: a compact JWS (an OIDC ID token) and the configured trust providers. Out: the trust
//! provider that vouches for the caller and its claims, converted to the Gate claim schema of
//! that provider's kind, or an [`AttestError`] with a stable reason code. Every failure is a
//! deny for the caller, never a server error.
//!
//! Checks, in order: size, shape, algorithm allow-list (`none` and every HMAC algorithm are
//! refused before any key is touched), the issuer pinned to a trust provider, the key by `kid`
//! from that provider's JWKS, the signature, then `exp` (required), `nbf`, `aud` (required and
//! matched) with the provider's leeway, and finally the claim schema. `iat` alone never rejects.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use portcullis_lang::schema::{
    CUSTOM_CLAIMS_KIND, ClaimDef, ClaimType, ClaimValue, CustomClaim, CustomClaimError,
    CustomClaims, Derived, ProviderKind, SpiffeId, SpiffeIdError, check_trust_domain,
};
use serde_json::{Map, Value};

/// The largest clock-skew allowance a trust provider may have.
pub const MAX_LEEWAY_S: u64 = 3600;

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The signature algorithms a token may use. Asymmetric only.
// FIXME(#6): RS384/RS512, PS256, ES384 and EdDSA.
const ALLOWED_ALGORITHMS: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];

/// What a trust provider is configured with.
#[derive(Debug, Clone)]
pub struct TrustProviderSpec {
    /// The provider's name in configuration and in access events.
    pub name: String,
    pub kind: ProviderKind,
    /// The exact `iss` its tokens carry.
    pub issuer: String,
    /// At least one; a token must name one of them in `aud`.
    pub audiences: Vec<String>,
    /// The JWKS document's text.
    pub jwks_json: String,
    /// Clock-skew allowance for `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
    /// Claims this provider's tokens carry beyond the built-in schema; `oidc` only.
    pub custom_claims: Vec<CustomClaim>,
    /// The trust domain whose SPIFFE IDs the provider vouches for; `spiffe` only, and required.
    pub trust_domain: Option<String>,
}

/// A trust provider ready to verify tokens.
#[derive(Debug)]
pub struct TrustProvider {
    spec: TrustProviderSpec,
    keys: Vec<VerificationKey>,
}

struct VerificationKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// A trust provider's configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProviderConfigError {
    #[error("trust provider `{provider}`: the JWKS is not valid JSON Web Key Set JSON: {detail}")]
    JwksSyntax { provider: String, detail: String },
    #[error("trust provider `{provider}`: key `{kid}` cannot be used: {detail}")]
    BadKey {
        provider: String,
        kid: String,
        detail: String,
    },
    #[error("trust provider `{provider}`: the JWKS holds no usable signing key")]
    NoKeys { provider: String },
    #[error("trust provider `{provider}`: a leeway of {leeway_s} s is over {MAX_LEEWAY_S} s")]
    Leeway { provider: String, leeway_s: u64 },
    #[error("trust provider `{provider}`: at least one audience is required")]
    NoAudience { provider: String },
    #[error(
        "trust provider `{provider}`: kind `{kind}` has no token issuer; local processes are \
         attested by the local-process listener"
    )]
    NotAnIssuer {
        provider: String,
        kind: ProviderKind,
    },
    #[error("trust provider `{provider}`: only `oidc` trust providers declare custom claims")]
    CustomClaimsNotAllowed { provider: String },
    #[error(transparent)]
    CustomClaims(#[from] CustomClaimError),
    #[error("trust provider `{provider}`: a `spiffe` trust provider names its `trust_domain`")]
    MissingTrustDomain { provider: String },
    #[error("trust provider `{provider}`: only a `spiffe` trust provider has a `trust_domain`")]
    UnexpectedTrustDomain { provider: String },
    #[error("trust provider `{provider}`: trust domain `{trust_domain}`: {error}")]
    BadTrustDomain {
        provider: String,
        trust_domain: String,
        error: SpiffeIdError,
    },
    #[error("trust providers `{first}` and `{second}` both claim issuer `{issuer}`")]
    DuplicateIssuer {
        first: String,
        second: String,
        issuer: String,
    },
}

impl TrustProvider {
    pub fn new(spec: TrustProviderSpec) -> Result<TrustProvider, ProviderConfigError> {
        if spec.audiences.is_empty() {
            return Err(ProviderConfigError::NoAudience {
                provider: spec.name,
            });
        }
        if spec.leeway_s > MAX_LEEWAY_S {
            let (provider, leeway_s) = (spec.name, spec.leeway_s);
            return Err(ProviderConfigError::Leeway { provider, leeway_s });
        }
        check_kind_settings(&spec)?;
        let keys = parse_jwks(&spec)?;
        if keys.is_empty() {
            return Err(ProviderConfigError::NoKeys {
                provider: spec.name,
            });
        }
        Ok(TrustProvider { spec, keys })
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn kind(&self) -> ProviderKind {
        self.spec.kind
    }

    pub fn issuer(&self) -> &str {
        &self.spec.issuer
    }
}

/// Refuses settings that the provider's kind cannot use, and a `process` kind, which has no
/// issuer whose tokens could be verified.
fn check_kind_settings(spec: &TrustProviderSpec) -> Result<(), ProviderConfigError> {
    let provider = || spec.name.clone();
    if !spec.kind.issues_tokens() {
        // FIXME(#6): local processes are attested by the local-process listener.
        return Err(ProviderConfigError::NotAnIssuer {
            provider: provider(),
            kind: spec.kind,
        });
    }
    if spec.kind != CUSTOM_CLAIMS_KIND && !spec.custom_claims.is_empty() {
        return Err(ProviderConfigError::CustomClaimsNotAllowed {
            provider: provider(),
        });
    }
    match (&spec.trust_domain, spec.kind) {
        (None, ProviderKind::Spiffe) => Err(ProviderConfigError::MissingTrustDomain {
            provider: provider(),
        }),
        (Some(trust_domain), ProviderKind::Spiffe) => {
            check_trust_domain(trust_domain).map_err(|error| ProviderConfigError::BadTrustDomain {
                provider: provider(),
                trust_domain: trust_domain.clone(),
                error,
            })
        }
        (Some(_), _) => Err(ProviderConfigError::UnexpectedTrustDomain {
            provider: provider(),
        }),
        (None, _) => Ok(()),
    }
}

fn parse_jwks(spec: &TrustProviderSpec) -> Result<Vec<VerificationKey>, ProviderConfigError> {
    let set: JwkSet =
        serde_json::from_str(&spec.jwks_json).map_err(|err| ProviderConfigError::JwksSyntax {
            provider: spec.name.clone(),
            detail: err.to_string(),
        })?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone();
        let bad_key = |detail: String| ProviderConfigError::BadKey {
            provider: spec.name.clone(),
            kid: kid.clone().unwrap_or_else(|| "(no kid)".to_owned()),
            detail,
        };
        let algorithm = match jwk.common.key_algorithm {
            Some(KeyAlgorithm::RS256) => Algorithm::RS256,
            Some(KeyAlgorithm::ES256) => Algorithm::ES256,
            Some(other) => return Err(bad_key(format!("algorithm `{other:?}` is not allowed"))),
            None => match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                _ => return Err(bad_key("only RSA and P-256 keys are supported".to_owned())),
            },
        };
        if matches!(
            jwk.algorithm,
            jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
        ) {
            return Err(bad_key("symmetric keys are never accepted".to_owned()));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|err| bad_key(err.to_string()))?;
        keys.push(VerificationKey {
            kid,
            algorithm,
            key,
        });
    }
    Ok(keys)
}

/// Why a token was not accepted. Each has a stable code for events and API answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    #[error("the token is larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("the token is not a well-formed JWT: {0}")]
    Malformed(String),
    #[error("signature algorithm `{0}` is not accepted")]
    AlgorithmNotAllowed(String),
    #[error("no trust provider is configured for issuer `{0}`")]
    UntrustedIssuer(String),
    #[error("trust provider `{provider}` has no key `{kid}` for algorithm `{algorithm}`")]
    UnknownKey {
        provider: String,
        kid: String,
        algorithm: String,
    },
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's audience is not one this trust provider accepts")]
    WrongAudience,
    #[error("the token lacks the required claim `{0}`")]
    MissingClaim(String),
    #[error("claim `{claim}` should be {expected}")]
    ClaimType { claim: String, expected: ClaimType },
    #[error("the subject is not a valid SPIFFE ID: {0}")]
    InvalidSpiffeId(SpiffeIdError),
    #[error("the subject is in trust domain `{actual}`, not `{expected}`")]
    ForeignTrustDomain { actual: String, expected: String },
}

impl AttestError {
    pub fn code(&self) -> &'static str {
        match self {
            AttestError::TooLarge => "token_too_large",
            AttestError::Malformed(_) => "token_malformed",
            AttestError::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            AttestError::UntrustedIssuer(_) => "untrusted_issuer",
            AttestError::UnknownKey { .. } => "unknown_key",
            AttestError::BadSignature => "bad_signature",
            AttestError::Expired => "token_expired",
            AttestError::NotYetValid => "token_not_yet_valid",
            AttestError::WrongAudience => "wrong_audience",
            AttestError::MissingClaim(_) => "missing_claim",
            AttestError::ClaimType { .. } => "claim_type",
            AttestError::InvalidSpiffeId(_) => "invalid_spiffe_id",
            AttestError::ForeignTrustDomain { .. } => "foreign_trust_domain",
        }
    }
}

/// A caller whose evidence verified.
#[derive(Debug, Clone)]
pub struct Attested<'a> {
    pub provider: &'a TrustProvider,
    pub subject: String,
    /// Indexed by the claim ids of `provider.kind()`; for `oidc`, the custom claims follow.
    pub claims: Vec<Option<ClaimValue>>,
    /// The verified payload, for the access event.
    pub payload: Map<String, Value>,
}

/// What an attestation failure can still tell about the caller, for its access event.
#[derive(Debug, Clone, Default)]
pub struct Unverified {
    pub provider: Option<String>,
    pub issuer: Option<String>,
    pub subject: Option<String>,
}

/// A token that did not verify: why, and what it claimed about itself.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub error: AttestError,
    pub unverified: Unverified,
}

type JsonObject = Map<String, Value>;

/// Every configured trust provider, keyed by issuer.
#[derive(Debug, Default)]
pub struct Attestor {
    providers: Vec<TrustProvider>,
    /// The custom claims of every `oidc` provider, merged: one id per name.
    custom_claims: CustomClaims,
}

impl Attestor {
    pub fn new(providers: Vec<TrustProvider>) -> Result<Attestor, ProviderConfigError> {
        for (idx, first) in providers.iter().enumerate() {
            let later = providers.iter().skip(idx + 1);
            if let Some(second) = later.into_iter().find(|p| p.issuer() == first.issuer()) {
                return Err(ProviderConfigError::DuplicateIssuer {
                    first: first.name().to_owned(),
                    second: second.name().to_owned(),
                    issuer: first.issuer().to_owned(),
                });
            }
        }
        let custom_claims = CustomClaims::merge(
            providers
                .iter()
                .filter(|provider| provider.kind() == CUSTOM_CLAIMS_KIND)
                .map(|provider| provider.spec.custom_claims.as_slice()),
        )?;
        Ok(Attestor {
            providers,
            custom_claims,
        })
    }

    pub fn providers(&self) -> &[TrustProvider] {
        &self.providers
    }

    /// The custom claims of kind `oidc`, as the checker must know them to type policies.
    pub fn custom_claims(&self) -> &CustomClaims {
        &self.custom_claims
    }

    /// Verifies `token`. On failure, also returns what could be read without trusting it
    /// (issuer and subject as the token states them, the provider the issuer names).
    pub fn attest(&self, token: &str) -> Result<Attested<'_>, Box<Rejected>> {
        let mut unverified = Unverified::default();
        self.attest_inner(token, &mut unverified)
            .map_err(|error| Box::new(Rejected { error, unverified }))
    }

    fn attest_inner(
        &self,
        token: &str,
        unverified: &mut Unverified,
    ) -> Result<Attested<'_>, AttestError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AttestError::TooLarge);
        }
        let (header, payload) = peek(token)?;
        check_time_claims(&payload)?;
        let algorithm = allowed_algorithm(&header)?;
        let issuer = payload.get("iss").and_then(Value::as_str);
        unverified.issuer = issuer.map(str::to_owned);
        unverified.subject = payload
            .get("sub")
            .and_then(Value::as_str)
            .map(str::to_owned);
        // FIXME(#6): a JWT-SVID need not carry `iss`; pick its provider by the trust domain.
        let Some(issuer) = issuer else {
            return Err(AttestError::MissingClaim("iss".to_owned()));
        };
        let Some(provider) = self.providers.iter().find(|p| p.issuer() == issuer) else {
            return Err(AttestError::UntrustedIssuer(issuer.to_owned()));
        };
        unverified.provider = Some(provider.name().to_owned());
        let kid = header.get("kid").and_then(Value::as_str);
        let key = find_key(provider, kid, algorithm)?;
        let payload = verify(token, provider, key)?;
        let claims = provider_claims(provider, &self.custom_claims, &payload)?;
        let subject = payload
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Ok(Attested {
            provider,
            subject,
            claims,
            payload,
        })
    }
}

/// Decodes header and payload without trusting them, to pick the provider and key.
fn peek(token: &str) -> Result<(JsonObject, JsonObject), AttestError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AttestError::Malformed(
            "expected three dot-separated parts".to_owned(),
        ));
    };
    Ok((
        json_object(header, "header")?,
        json_object(payload, "payload")?,
    ))
}

/// `exp`, `nbf` and `iat` are NumericDates when present: whole seconds since 1970 here.
/// Anything else (a string, a negative or fractional number) is a malformed token, not a
/// missing claim.
fn check_time_claims(payload: &JsonObject) -> Result<(), AttestError> {
    for claim in ["exp", "nbf", "iat"] {
        if payload
            .get(claim)
            .is_some_and(|value| value.as_u64().is_none())
        {
            let message = format!("claim `{claim}` is not a whole number of seconds since 1970");
            return Err(AttestError::Malformed(message));
        }
    }
    Ok(())
}

fn json_object(part: &str, what: &str) -> Result<Map<String, Value>, AttestError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AttestError::Malformed(format!("the {what} is not base64url")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(AttestError::Malformed(format!(
            "the {what} is not a JSON object"
        ))),
    }
}

fn allowed_algorithm(header: &Map<String, Value>) -> Result<Algorithm, AttestError> {
    let Some(name) = header.get("alg").and_then(Value::as_str) else {
        return Err(AttestError::Malformed("the header has no `alg`".to_owned()));
    };
    // Parsed, not formatted per request: this runs on every decision.
    name.parse::<Algorithm>()
        .ok()
        .filter(|alg| ALLOWED_ALGORITHMS.contains(alg))
        .ok_or_else(|| AttestError::AlgorithmNotAllowed(name.chars().take(32).collect()))
}

fn find_key<'p>(
    provider: &'p TrustProvider,
    kid: Option<&str>,
    algorithm: Algorithm,
) -> Result<&'p VerificationKey, AttestError> {
    let same_alg = provider
        .keys
        .iter()
        .filter(|key| key.algorithm == algorithm);
    let found = match kid {
        Some(kid) => same_alg
            .into_iter()
            .find(|key| key.kid.as_deref() == Some(kid)),
        // Without a `kid`, only an unambiguous key will do.
        None => {
            let candidates: Vec<_> = same_alg.collect();
            if candidates.len() == 1 {
                candidates.first().copied()
            } else {
                None
            }
        }
    };
    found.ok_or_else(|| AttestError::UnknownKey {
        provider: provider.name().to_owned(),
        kid: kid.unwrap_or("(none)").chars().take(128).collect(),
        algorithm: format!("{algorithm:?}"),
    })
}

fn verify(
    token: &str,
    provider: &TrustProvider,
    key: &VerificationKey,
) -> Result<Map<String, Value>, AttestError> {
    let mut validation = Validation::new(key.algorithm);
    validation.leeway = provider.spec.leeway_s;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_issuer(&[provider.issuer()]);
    validation.set_audience(&provider.spec.audiences);
    validation.required_spec_claims = ["exp", "iss", "aud", "sub"].map(str::to_owned).into();
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
        .map_err(|err| verification_error(err.into_kind()))?;
    Ok(data.claims)
}

fn verification_error(kind: ErrorKind) -> AttestError {
    match kind {
        ErrorKind::InvalidSignature => AttestError::BadSignature,
        ErrorKind::ExpiredSignature => AttestError::Expired,
        ErrorKind::ImmatureSignature => AttestError::NotYetValid,
        ErrorKind::InvalidAudience => AttestError::WrongAudience,
        ErrorKind::InvalidIssuer => AttestError::UntrustedIssuer("(changed)".to_owned()),
        ErrorKind::MissingRequiredClaim(claim) => AttestError::MissingClaim(claim),
        ErrorKind::InvalidClaimFormat(claim) => {
            AttestError::Malformed(format!("claim `{claim}` has the wrong type"))
        }
        ErrorKind::InvalidAlgorithm => AttestError::BadSignature,
        other => AttestError::Malformed(format!("{other:?}").to_lowercase()),
    }
}

/// Converts a verified payload into claim values in schema order.
pub fn typed_claims(
    kind: ProviderKind,
    payload: &Map<String, Value>,
) -> Result<Vec<Option<ClaimValue>>, AttestError> {
    kind.claims()
        .iter()
        .map(|def| match def.derived {
            Some(how) => derived_claim(how, def, payload).map(Some),
            None => claim_at(def.path, def.ty, def.required, payload),
        })
        .collect()
}

/// The built-in claims of the provider's kind, then its custom claims at their merged ids,
/// once the SPIFFE ID is in the provider's trust domain.
fn provider_claims(
    provider: &TrustProvider,
    custom_claims: &CustomClaims,
    payload: &Map<String, Value>,
) -> Result<Vec<Option<ClaimValue>>, AttestError> {
    let mut claims = typed_claims(provider.kind(), payload)?;
    if let Some(expected) = &provider.spec.trust_domain {
        let subject = payload
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let id = SpiffeId::parse(subject).map_err(AttestError::InvalidSpiffeId)?;
        if id.trust_domain() != expected {
            return Err(AttestError::ForeignTrustDomain {
                actual: id.trust_domain().to_owned(),
                expected: expected.clone(),
            });
        }
    }
    if provider.kind() == CUSTOM_CLAIMS_KIND {
        let declared = &provider.spec.custom_claims;
        for (_, shared) in custom_claims.iter() {
            let value = match declared.iter().find(|own| own.name == shared.name) {
                Some(own) => claim_at(&own.path, own.ty, own.required, payload)?,
                None => None,
            };
            claims.push(value);
        }
    }
    Ok(claims)
}

/// A claim that attestation computes from the SPIFFE ID in the field at `def.path`.
fn derived_claim(
    how: Derived,
    def: &ClaimDef,
    payload: &Map<String, Value>,
) -> Result<ClaimValue, AttestError> {
    let text = match claim_at(def.path, ClaimType::String, true, payload)? {
        Some(ClaimValue::String(text)) => text,
        _ => return Err(AttestError::MissingClaim(dotted(def.path))),
    };
    let id = SpiffeId::parse(&text).map_err(AttestError::InvalidSpiffeId)?;
    let value = match how {
        Derived::SpiffeId => id.as_str(),
        Derived::SpiffeTrustDomain => id.trust_domain(),
        Derived::SpiffePath => id.path(),
    };
    Ok(ClaimValue::String(value.to_owned()))
}

fn dotted<S: AsRef<str>>(path: &[S]) -> String {
    let steps: Vec<&str> = path.iter().map(AsRef::as_ref).collect();
    steps.join(".")
}

/// The value at `path` in the payload, converted to `ty`; `None` when an optional claim is
/// absent.
fn claim_at<S: AsRef<str>>(
    path: &[S],
    ty: ClaimType,
    required: bool,
    payload: &Map<String, Value>,
) -> Result<Option<ClaimValue>, AttestError> {
    let mut value = None;
    let mut object = Some(payload);
    for step in path {
        value = object.and_then(|map| map.get(step.as_ref()));
        object = value.and_then(Value::as_object);
    }
    let value = match value {
        None | Some(Value::Null) if required => {
            return Err(AttestError::MissingClaim(dotted(path)));
        }
        None | Some(Value::Null) => return Ok(None),
        Some(value) => value,
    };
    let wrong_type = || AttestError::ClaimType {
        claim: dotted(path),
        expected: ty,
    };
    let typed = match (ty, value) {
        (ClaimType::String, Value::String(s)) => ClaimValue::String(s.clone()),
        (ClaimType::Int, Value::Number(n)) => ClaimValue::Int(n.as_i64().ok_or_else(wrong_type)?),
        (ClaimType::Bool, Value::Bool(b)) => ClaimValue::Bool(*b),
        (ClaimType::StringSet, Value::String(s)) => ClaimValue::StringSet(vec![s.clone()]),
        (ClaimType::StringSet, Value::Array(items)) => {
            let strings: Option<Vec<String>> = items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect();
            let mut strings = strings.ok_or_else(wrong_type)?;
            strings.sort();
            strings.dedup();
            ClaimValue::StringSet(strings)
        }
        _ => return Err(wrong_type()),
    };
    Ok(Some(typed))
}
