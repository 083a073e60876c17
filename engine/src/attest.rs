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
//!
//! Keys come from a JWKS file, a JWKS URL or the issuer's discovery document ([`crate::jwks`]).
//! Remote keys are fetched again when a token names a key the provider does not hold, at most
//! once per `jwks_refresh_min` so that a flood of made-up `kid`s cannot make the issuer a
//! target, and when they are older than `jwks_max_age`; the old keys stay in use until new
//! ones arrive, so a rotation that publishes the new key beside the old never breaks callers.
//! [`Attestor::attest`] never does I/O: it answers `unknown_key` or `keys_unavailable`, and
//! [`Attestor::wants_refresh`] tells the caller to run [`Attestor::refresh`] on a thread that
//! may block, then attest again.
//!
//! A verified token is remembered by its SHA-256 until it expires, so that a caller presenting
//! the same token again costs a hash, not a signature check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use portcullis_lang::schema::{
    CUSTOM_CLAIMS_KIND, ClaimDef, ClaimType, ClaimValue, CustomClaim, CustomClaimError,
    CustomClaims, Derived, ProviderKind, SpiffeId, SpiffeIdError, check_trust_domain,
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::jwks::{ALLOWED_ALGORITHMS, FetchError, JwksSource, VerificationKey, parse_jwks};

/// The largest clock-skew allowance a trust provider may have.
pub const MAX_LEEWAY_S: u64 = 3600;

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The `trust_provider` of a caller of the Unix socket.
pub const LOCAL_PROCESS_PROVIDER: &str = "local-process";

/// The default shortest time between two fetches of a provider's remote keys.
pub const DEFAULT_JWKS_REFRESH_MIN: Duration = Duration::from_secs(30);

/// How long fetched keys are used before they are fetched again.
pub const DEFAULT_JWKS_MAX_AGE: Duration = Duration::from_secs(3600);

/// Verified tokens remembered at most; past it, expired ones are dropped, then all.
const MAX_CACHED_TOKENS: usize = 16 * 1024;

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
    /// Where the verification keys come from.
    pub jwks: JwksSource,
    /// Remote keys are fetched at most once per this span, however many unknown `kid`s
    /// arrive.
    pub jwks_refresh_min: Duration,
    /// Remote keys older than this are fetched again before the next token is verified.
    pub jwks_max_age: Duration,
    /// Clock-skew allowance for `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
    /// Claims this provider's tokens carry beyond the built-in schema; `oidc` only.
    pub custom_claims: Vec<CustomClaim>,
    /// The trust domain whose SPIFFE IDs the provider vouches for; `spiffe` only, and required.
    pub trust_domain: Option<String>,
    /// What an `https` issuer's certificate must chain to when its keys are fetched.
    pub ca: crate::http::TrustRoots,
    /// The provider only runs the examples: its keys may be the published example keys,
    /// which are refused otherwise.
    pub example_only: bool,
}

/// A trust provider ready to verify tokens.
#[derive(Debug)]
pub struct TrustProvider {
    spec: TrustProviderSpec,
    /// Swapped whole by a refresh; a verification holds the set it started with.
    keys: RwLock<Arc<KeySet>>,
    /// Held while fetching, so that concurrent callers wait for one fetch instead of each
    /// making their own.
    fetching: Mutex<Fetching>,
}

#[derive(Debug, Default)]
struct KeySet {
    keys: Vec<VerificationKey>,
    /// When the keys were fetched; `None` for keys from a file.
    fetched_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Fetching {
    last_attempt: Option<Instant>,
    last_error: Option<FetchError>,
}

/// What a refresh of a provider's keys did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    /// New keys are in use: how many.
    Keys(usize),
    /// The last attempt was too recent; nothing was fetched.
    TooSoon,
    /// The keys are not remote.
    NotRemote,
    /// The fetch failed; the keys in use stay.
    Failed(FetchError),
}

/// The SHA-256 of a token: what verified tokens are remembered by, and what an access event
/// records in place of the token.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
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
    #[error(
        "trust provider `{provider}`: key `{kid}` is the example key published in `{file}`, so \
         anyone can mint tokens it accepts; configure the issuer's own keys (`example_only = \
         true` lets a provider that only runs the examples use it)"
    )]
    PublishedExampleKey {
        provider: String,
        kid: String,
        file: &'static str,
    },
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
    #[error("trust provider `{provider}`: {error}")]
    KeySource { provider: String, error: FetchError },
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
        let keys = match &spec.jwks {
            JwksSource::Document(text) => {
                let keys = parse_jwks(&spec.name, text, spec.example_only)?;
                if keys.is_empty() {
                    return Err(ProviderConfigError::NoKeys {
                        provider: spec.name,
                    });
                }
                keys
            }
            JwksSource::Url(url) => {
                crate::jwks::check_fetch_url(url).map_err(|error| {
                    ProviderConfigError::KeySource {
                        provider: spec.name.clone(),
                        error,
                    }
                })?;
                Vec::new()
            }
            JwksSource::Discovery => {
                let url = crate::jwks::discovery_url(&spec.issuer);
                crate::jwks::check_fetch_url(&url).map_err(|error| {
                    ProviderConfigError::KeySource {
                        provider: spec.name.clone(),
                        error,
                    }
                })?;
                Vec::new()
            }
        };
        Ok(TrustProvider {
            spec,
            keys: RwLock::new(Arc::new(KeySet {
                keys,
                fetched_at: None,
            })),
            fetching: Mutex::new(Fetching::default()),
        })
    }

    /// The provider of local processes, which the configuration cannot declare.
    fn local_process() -> TrustProvider {
        TrustProvider {
            spec: TrustProviderSpec {
                name: LOCAL_PROCESS_PROVIDER.to_owned(),
                kind: ProviderKind::Process,
                issuer: String::new(),
                audiences: Vec::new(),
                jwks: JwksSource::Document(String::new()),
                jwks_refresh_min: DEFAULT_JWKS_REFRESH_MIN,
                jwks_max_age: DEFAULT_JWKS_MAX_AGE,
                leeway_s: 0,
                custom_claims: Vec::new(),
                trust_domain: None,
                ca: crate::http::TrustRoots::default(),
                example_only: false,
            },
            keys: RwLock::new(Arc::new(KeySet::default())),
            fetching: Mutex::new(Fetching::default()),
        }
    }

    /// Fetches the provider's keys now, unless the last attempt was less than
    /// `jwks_refresh_min` ago. Blocking I/O; a failure keeps the keys in use.
    pub fn refresh(&self) -> Refreshed {
        if !self.spec.jwks.is_remote() {
            return Refreshed::NotRemote;
        }
        let mut fetching = self.fetching.lock().unwrap_or_else(PoisonError::into_inner);
        if fetching
            .last_attempt
            .is_some_and(|last| last.elapsed() < self.spec.jwks_refresh_min)
        {
            return Refreshed::TooSoon;
        }
        fetching.last_attempt = Some(Instant::now());
        let fetched = crate::jwks::fetch_jwks(&self.spec.jwks, &self.spec.issuer, &self.spec.ca)
            .unwrap_or_else(|| Ok((String::new(), String::new())))
            .and_then(|(url, text)| {
                let keys = parse_jwks(&self.spec.name, &text, self.spec.example_only).map_err(
                    |error| match error {
                        ProviderConfigError::JwksSyntax { detail, .. } => FetchError::Document {
                            url: url.clone(),
                            what: "a JSON Web Key Set",
                            detail,
                        },
                        refused => FetchError::Refused {
                            url: url.clone(),
                            detail: refused.to_string(),
                        },
                    },
                )?;
                if keys.is_empty() {
                    return Err(FetchError::Document {
                        url,
                        what: "a JSON Web Key Set with a key",
                        detail: "it holds no key".to_owned(),
                    });
                }
                Ok(keys)
            });
        match fetched {
            Ok(keys) => {
                let count = keys.len();
                let set = Arc::new(KeySet {
                    keys,
                    fetched_at: Some(Instant::now()),
                });
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = set;
                fetching.last_error = None;
                let provider = &self.spec.name;
                tracing::info!(provider, keys = count, "trust_provider_keys_fetched");
                Refreshed::Keys(count)
            }
            Err(error) => {
                let provider = &self.spec.name;
                tracing::warn!(provider, %error, "trust_provider_keys_fetch_failed");
                fetching.last_error = Some(error.clone());
                Refreshed::Failed(error)
            }
        }
    }

    /// Why the provider has no keys, when its last fetch failed.
    pub fn last_fetch_error(&self) -> Option<FetchError> {
        self.fetching
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last_error
            .clone()
    }

    /// Whether the provider's remote keys are older than `jwks_max_age`, or were never
    /// fetched.
    fn keys_stale(&self) -> bool {
        if !self.spec.jwks.is_remote() {
            return false;
        }
        // A fetch under way, or one that just ran, is as fresh as it gets for now.
        let Ok(fetching) = self.fetching.try_lock() else {
            return false;
        };
        if fetching
            .last_attempt
            .is_some_and(|last| last.elapsed() < self.spec.jwks_refresh_min)
        {
            return false;
        }
        drop(fetching);
        let set = self.key_set();
        set.fetched_at
            .is_none_or(|at| at.elapsed() >= self.spec.jwks_max_age)
    }

    fn key_set(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Whether the provider holds keys to verify tokens with; the local-process provider needs
    /// none and counts as holding them.
    pub fn has_keys(&self) -> bool {
        self.spec.kind == ProviderKind::Process || !self.key_set().keys.is_empty()
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
        // Local processes are attested on the Unix socket (`crate::local`), never by a
        // configured trust provider.
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
    #[error("no `spiffe` trust provider is configured for trust domain `{0}`")]
    UntrustedTrustDomain(String),
    #[error("trust provider `{provider}` has no key `{kid}` for algorithm `{algorithm}`")]
    UnknownKey {
        provider: String,
        kid: String,
        algorithm: String,
    },
    #[error("trust provider `{provider}` has no usable keys: {why}")]
    KeysUnavailable { provider: String, why: String },
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
    #[error("the connecting process cannot be attested: {0}")]
    ProcessEvidence(String),
}

impl AttestError {
    pub fn code(&self) -> &'static str {
        match self {
            AttestError::TooLarge => "token_too_large",
            AttestError::Malformed(_) => "token_malformed",
            AttestError::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            AttestError::UntrustedIssuer(_) => "untrusted_issuer",
            AttestError::UntrustedTrustDomain(_) => "untrusted_trust_domain",
            AttestError::UnknownKey { .. } => "unknown_key",
            AttestError::KeysUnavailable { .. } => "keys_unavailable",
            AttestError::BadSignature => "bad_signature",
            AttestError::Expired => "token_expired",
            AttestError::NotYetValid => "token_not_yet_valid",
            AttestError::WrongAudience => "wrong_audience",
            AttestError::MissingClaim(_) => "missing_claim",
            AttestError::ClaimType { .. } => "claim_type",
            AttestError::InvalidSpiffeId(_) => "invalid_spiffe_id",
            AttestError::ForeignTrustDomain { .. } => "foreign_trust_domain",
            AttestError::ProcessEvidence(_) => "process_evidence_unavailable",
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
#[derive(Debug)]
pub struct Attestor {
    providers: Vec<TrustProvider>,
    /// What the callers of the Unix socket are attested by: no keys, no issuer; its evidence
    /// is the peer's credentials ([`crate::local`]).
    local: TrustProvider,
    processes: crate::local::ProcessReader,
    /// The custom claims of every `oidc` provider, merged: one id per name.
    custom_claims: CustomClaims,
    /// Verified tokens by their SHA-256, until they expire.
    verified: Mutex<HashMap<[u8; 32], Verified>>,
}

/// A verified token, remembered.
#[derive(Debug, Clone)]
struct Verified {
    provider: usize,
    subject: String,
    claims: Vec<Option<ClaimValue>>,
    payload: Map<String, Value>,
    /// Unix seconds after which the token is no longer accepted: `exp` plus the leeway.
    until: u64,
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
            local: TrustProvider::local_process(),
            processes: crate::local::ProcessReader::default(),
            custom_claims,
            verified: Mutex::new(HashMap::new()),
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
        self.attest_digested(token, &token_digest(token))
    }

    /// [`Attestor::attest`], for a caller that already has the token's [`token_digest`]
    /// (the decision API, which records it in the event).
    pub fn attest_digested(
        &self,
        token: &str,
        digest: &[u8; 32],
    ) -> Result<Attested<'_>, Box<Rejected>> {
        if token.len() > MAX_TOKEN_BYTES {
            let error = AttestError::TooLarge;
            let unverified = Unverified::default();
            return Err(Box::new(Rejected { error, unverified }));
        }
        let digest = *digest;
        let now = unix_now();
        if let Some(attested) = self.remembered(&digest, now) {
            return Ok(attested);
        }
        let mut unverified = Unverified::default();
        let attested = self
            .attest_inner(token, &mut unverified)
            .map_err(|error| Box::new(Rejected { error, unverified }))?;
        self.remember(digest, &attested, now);
        Ok(attested)
    }

    /// Attests the process at the other end of a Unix-socket connection from its peer
    /// credentials and `/proc`. Blocking I/O (the executable is hashed the first time).
    pub fn attest_process(
        &self,
        peer: &crate::local::PeerProcess,
    ) -> Result<Attested<'_>, Box<Rejected>> {
        let payload = self.process_evidence(peer)?;
        self.attested_process(peer, payload)
    }

    /// The evidence half of [`Attestor::attest_process`]: what `/proc` says of the peer.
    /// Blocking I/O; owned, so that it can be read on a blocking thread.
    pub fn process_evidence(
        &self,
        peer: &crate::local::PeerProcess,
    ) -> Result<Map<String, Value>, Box<Rejected>> {
        self.processes
            .evidence(peer)
            .map_err(|why| local_rejection(AttestError::ProcessEvidence(why)))
    }

    /// The claims half of [`Attestor::attest_process`], from the evidence.
    pub fn attested_process(
        &self,
        peer: &crate::local::PeerProcess,
        payload: Map<String, Value>,
    ) -> Result<Attested<'_>, Box<Rejected>> {
        let claims = typed_claims(ProviderKind::Process, &payload).map_err(local_rejection)?;
        let subject = format!(
            "uid:{}/pid:{}",
            peer.uid,
            peer.pid
                .map_or_else(|| "?".to_owned(), |pid| pid.to_string())
        );
        Ok(Attested {
            provider: &self.local,
            subject,
            claims,
            payload,
        })
    }

    /// Verifies `token` as [`Attestor::attest`] does, without looking in or adding to the
    /// verified tokens: what a token seen for the first time costs, which the attestation
    /// benchmark measures.
    pub fn attest_uncached(&self, token: &str) -> Result<Attested<'_>, Box<Rejected>> {
        let mut unverified = Unverified::default();
        if token.len() > MAX_TOKEN_BYTES {
            let error = AttestError::TooLarge;
            return Err(Box::new(Rejected { error, unverified }));
        }
        self.attest_inner(token, &mut unverified)
            .map_err(|error| Box::new(Rejected { error, unverified }))
    }

    fn remembered(&self, digest: &[u8; 32], now: u64) -> Option<Attested<'_>> {
        let verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        let found = verified.get(digest).filter(|found| now <= found.until)?;
        Some(Attested {
            provider: self.providers.get(found.provider)?,
            subject: found.subject.clone(),
            claims: found.claims.clone(),
            payload: found.payload.clone(),
        })
    }

    fn remember(&self, digest: [u8; 32], attested: &Attested<'_>, now: u64) {
        let Some(provider) = self
            .providers
            .iter()
            .position(|known| std::ptr::eq(known, attested.provider))
        else {
            return;
        };
        // `exp` is required and checked, so it is there; a token without it is not kept.
        let Some(exp) = attested.payload.get("exp").and_then(Value::as_u64) else {
            return;
        };
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= MAX_CACHED_TOKENS {
            verified.retain(|_, found| now <= found.until);
            if verified.len() >= MAX_CACHED_TOKENS {
                verified.clear();
            }
        }
        verified.insert(
            digest,
            Verified {
                provider,
                subject: attested.subject.clone(),
                claims: attested.claims.clone(),
                payload: attested.payload.clone(),
                until: exp.saturating_add(attested.provider.spec.leeway_s),
            },
        );
    }

    /// The provider whose keys should be fetched before `rejected`'s token is tried again:
    /// one with remote keys that lacked the token's key, or had none.
    pub fn refresh_for(&self, rejected: &Rejected) -> Option<usize> {
        if !matches!(
            rejected.error,
            AttestError::UnknownKey { .. } | AttestError::KeysUnavailable { .. }
        ) {
            return None;
        }
        let name = rejected.unverified.provider.as_deref()?;
        self.providers
            .iter()
            .position(|provider| provider.name() == name && provider.spec.jwks.is_remote())
    }

    /// The provider of `attested` when its remote keys are due to be fetched again; the
    /// token verified meanwhile with the keys in use.
    pub fn stale_provider(&self, attested: &Attested<'_>) -> Option<usize> {
        let idx = self
            .providers
            .iter()
            .position(|provider| std::ptr::eq(provider, attested.provider))?;
        attested.provider.keys_stale().then_some(idx)
    }

    /// Fetches the keys of provider `idx` ([`TrustProvider::refresh`]). Blocking I/O. New keys
    /// forget every remembered token, so that a key the issuer withdrew stops vouching at once.
    pub fn refresh(&self, idx: usize) -> Refreshed {
        let Some(provider) = self.providers.get(idx) else {
            return Refreshed::NotRemote;
        };
        let refreshed = provider.refresh();
        if matches!(refreshed, Refreshed::Keys(_)) {
            self.verified
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
        refreshed
    }

    /// Fetches the keys of every provider whose keys are remote, as the server does at start:
    /// all at once, so that one issuer that does not answer costs its timeout once, not once
    /// per provider after it. Blocking I/O; a provider whose fetch fails stays without keys
    /// and answers `keys_unavailable` until a later fetch succeeds.
    pub fn fetch_remote_keys(&self) -> Vec<(String, Refreshed)> {
        let remote: Vec<(usize, &TrustProvider)> = self
            .providers
            .iter()
            .enumerate()
            .filter(|(_, provider)| provider.spec.jwks.is_remote())
            .collect();
        std::thread::scope(|scope| {
            let fetches: Vec<_> = remote
                .iter()
                .map(|(idx, _)| scope.spawn(move || self.refresh(*idx)))
                .collect();
            remote
                .iter()
                .zip(fetches)
                .map(|((_, provider), fetch)| {
                    let refreshed = fetch.join().unwrap_or_else(|_| {
                        Refreshed::Failed(FetchError::Http {
                            url: provider.spec.issuer.clone(),
                            detail: "the fetch stopped unexpectedly".to_owned(),
                        })
                    });
                    (provider.name().to_owned(), refreshed)
                })
                .collect()
        })
    }

    fn attest_inner(
        &self,
        token: &str,
        unverified: &mut Unverified,
    ) -> Result<Attested<'_>, AttestError> {
        let (header, payload) = peek(token)?;
        check_time_claims(&payload)?;
        let algorithm = allowed_algorithm(&header)?;
        let issuer = payload.get("iss").and_then(Value::as_str);
        unverified.issuer = issuer.map(str::to_owned);
        unverified.subject = payload
            .get("sub")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let provider = match issuer {
            Some(issuer) => self
                .providers
                .iter()
                .find(|p| p.issuer() == issuer)
                .ok_or_else(|| AttestError::UntrustedIssuer(issuer.to_owned()))?,
            // A JWT-SVID need not carry `iss`: the trust domain of its SPIFFE ID names the
            // provider that holds the domain's trust bundle.
            None => self.provider_of_trust_domain(&payload)?,
        };
        unverified.provider = Some(provider.name().to_owned());
        let kid = header.get("kid").and_then(Value::as_str);
        let set = provider.key_set();
        let key = find_key(provider, &set, kid, algorithm)?;
        let payload = verify(token, provider, key, algorithm, issuer.is_some())?;
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

/// A local process that could not be attested.
fn local_rejection(error: AttestError) -> Box<Rejected> {
    Box::new(Rejected {
        error,
        unverified: Unverified {
            provider: Some(LOCAL_PROCESS_PROVIDER.to_owned()),
            issuer: None,
            subject: None,
        },
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

impl Attestor {
    /// The `spiffe` provider of the trust domain of an unverified payload's `sub`, for a token
    /// without `iss`. A token that is no JWT-SVID lacks `iss`.
    fn provider_of_trust_domain(
        &self,
        payload: &JsonObject,
    ) -> Result<&TrustProvider, AttestError> {
        let missing_iss = || AttestError::MissingClaim("iss".to_owned());
        let subject = payload.get("sub").and_then(Value::as_str);
        let Some(id) = subject.and_then(|sub| SpiffeId::parse(sub).ok()) else {
            return Err(missing_iss());
        };
        self.providers
            .iter()
            .find(|provider| {
                provider.kind() == ProviderKind::Spiffe
                    && provider.spec.trust_domain.as_deref() == Some(id.trust_domain())
            })
            .ok_or_else(|| AttestError::UntrustedTrustDomain(id.trust_domain().to_owned()))
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

fn find_key<'k>(
    provider: &TrustProvider,
    set: &'k KeySet,
    kid: Option<&str>,
    algorithm: Algorithm,
) -> Result<&'k VerificationKey, AttestError> {
    if set.keys.is_empty() {
        let why = match provider.last_fetch_error() {
            Some(error) => error.to_string(),
            None => "its keys have not been fetched yet".to_owned(),
        };
        return Err(AttestError::KeysUnavailable {
            provider: provider.name().to_owned(),
            why,
        });
    }
    let same_alg = set.keys.iter().filter(|key| key.accepts(algorithm));
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
    algorithm: Algorithm,
    with_issuer: bool,
) -> Result<Map<String, Value>, AttestError> {
    let mut validation = Validation::new(algorithm);
    validation.leeway = provider.spec.leeway_s;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_audience(&provider.spec.audiences);
    if with_issuer {
        validation.set_issuer(&[provider.issuer()]);
        validation.required_spec_claims = ["exp", "iss", "aud", "sub"].map(str::to_owned).into();
    } else {
        // A JWT-SVID routed by its trust domain: its SPIFFE ID is checked against the
        // provider's trust domain after the signature.
        validation.required_spec_claims = ["exp", "aud", "sub"].map(str::to_owned).into();
    }
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
