//! Credential providers: what a permitted caller receives for its target.
//!
//! In: the credential a decision names, and who asked for it. Out: the credential's value,
//! its type and expiry, and the identifier whose HMAC its `credential_issued` event carries;
//! never the value in a log or an event.
//!
//! - `jwt`: a JWT minted here and signed with an Ed25519 key of the server's own key ring
//!   ([`KeyRing`]), published at `/.well-known/jwks.json` so that a target verifies it.
//! - `static`: a stored secret read from an environment variable or a file where the server
//!   runs, at every issuance, so that a rotated secret is picked up.
//! - `oauth_client_credentials`: an access token from the credential's token endpoint, with the
//!   client secret the configuration holds for its client; kept until shortly before it
//!   expires and handed to every caller the policy allows meanwhile, with one fetch at a time
//!   per client and scope set.
//!
//! The key ring rotates without breaking a verifier: a new key is published `publish_ahead`
//! before it signs anything (verifiers that cache the JWKS see it first), and a key that
//! stopped signing stays published until every token it signed has expired.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
pub use ed25519_dalek::pkcs8::spki::der::zeroize::Zeroizing;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, KeypairBytes};
use ed25519_dalek::{Signer, SigningKey};
use portcullis_lang::ir::{Credential, CredentialKind, MINTED_CLAIMS, StaticSource};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The largest secret a `static` credential reads.
pub const MAX_STATIC_SECRET_BYTES: u64 = 64 * 1024;

/// The largest key file read from the key ring's directory.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// The key ring's directory under the data directory.
pub const KEY_RING_DIR: &str = "credential-keys";

/// When the key ring makes a new key, how long it is published before it signs, and the
/// longest a minted token lives (which is how long a retired key stays published).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    pub rotate_after_s: i64,
    pub publish_ahead_s: i64,
    pub max_ttl_s: i64,
}

impl Default for RotationPolicy {
    fn default() -> RotationPolicy {
        RotationPolicy {
            rotate_after_s: 30 * 86_400,
            publish_ahead_s: 3600,
            max_ttl_s: 86_400,
        }
    }
}

/// One key of the ring, as its file name gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMeta {
    /// Unix seconds.
    pub created: i64,
    pub kid: String,
}

/// What the ring should look like at a moment: positions in the keys, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The key that signs now.
    pub signing: usize,
    /// The keys to publish, the signing key among them.
    pub published: Vec<usize>,
    /// Keys no token still alive was signed with, to delete.
    pub retired: Vec<usize>,
    /// Whether the newest key is old enough that a new one should be made.
    pub rotate: bool,
}

/// Plans the ring for `now`. `keys` are oldest first and not empty. A key signs from
/// `publish_ahead` after it was made (the first key at once, since no verifier can have cached
/// an older set); a key is retired once its successor has signed for `max_ttl`.
pub fn plan(keys: &[KeyMeta], now: i64, policy: RotationPolicy) -> Plan {
    let starts_signing = |key: &KeyMeta| key.created.saturating_add(policy.publish_ahead_s);
    let signing = keys
        .iter()
        .rposition(|key| starts_signing(key) <= now)
        .unwrap_or(0);
    let mut published = Vec::new();
    let mut retired = Vec::new();
    for (idx, _) in keys.iter().enumerate() {
        // Every key older than one that has signed for `max_ttl` signed nothing still alive.
        let superseded = keys
            .iter()
            .enumerate()
            .skip(idx + 1)
            .take_while(|(later, _)| *later <= signing)
            .any(|(_, later)| starts_signing(later).saturating_add(policy.max_ttl_s) <= now);
        if idx < signing && superseded {
            retired.push(idx);
        } else {
            published.push(idx);
        }
    }
    let rotate = keys
        .last()
        .is_none_or(|newest| newest.created.saturating_add(policy.rotate_after_s) <= now);
    Plan {
        signing,
        published,
        retired,
        rotate,
    }
}

/// Why the key ring or an issuance failed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("the credential key ring at `{path}`: cannot {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    #[error("the credential key `{path}` is not an Ed25519 private key: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("no randomness for a new credential key: {0}")]
    Random(String),
    #[error("static credential `{name}`: {reason}")]
    Static { name: String, reason: String },
    #[error("credential `{name}`: a ttl of {ttl_s} s is over the server's maximum of {max_s} s")]
    TtlTooLong {
        name: String,
        ttl_s: u64,
        max_s: u64,
    },
    #[error(
        "credential `{name}`: no client secret is configured for client `{client_id}` at \
         `{token_url}` (`[[credentials.oauth_clients]]`)"
    )]
    NoClientSecret {
        name: String,
        client_id: String,
        token_url: String,
    },
    #[error("credential `{name}`: {reason}")]
    Postgres { name: String, reason: String },
    #[error("credential `{name}`: the token endpoint `{token_url}`: {reason}")]
    TokenEndpoint {
        name: String,
        token_url: String,
        reason: String,
    },
}

struct RingKey {
    meta: KeyMeta,
    key: SigningKey,
}

struct RingState {
    keys: Vec<RingKey>,
    plan: Plan,
}

/// The server's credential signing keys, in `DATA/credential-keys/`, one owner-only PKCS#8
/// file per key named `CREATED-KID.key`.
pub struct KeyRing {
    dir: PathBuf,
    policy: RotationPolicy,
    state: RwLock<RingState>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("dir", &self.dir)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Opens the ring in `data_dir`, making its directory and first key when there are none,
    /// and brings it up to date for `now`.
    pub fn open(
        data_dir: &Path,
        policy: RotationPolicy,
        now: i64,
    ) -> Result<KeyRing, CredentialError> {
        let dir = data_dir.join(KEY_RING_DIR);
        create_dir_owner_only(&dir)?;
        let ring = KeyRing {
            dir,
            policy,
            state: RwLock::new(RingState {
                keys: Vec::new(),
                plan: plan(&[], now, policy),
            }),
        };
        ring.maintain(now)?;
        Ok(ring)
    }

    /// Reads the keys again, makes a new one when the newest is `rotate_after` old, and
    /// deletes retired ones. Run at start and then periodically.
    pub fn maintain(&self, now: i64) -> Result<Plan, CredentialError> {
        let mut keys = read_keys(&self.dir)?;
        if plan_or_rotate(&keys, now, self.policy) {
            keys.push(create_key(&self.dir, now)?);
        }
        let metas: Vec<KeyMeta> = keys.iter().map(|key| key.meta.clone()).collect();
        let planned = plan(&metas, now, self.policy);
        for idx in &planned.retired {
            if let Some(key) = keys.get(*idx) {
                let path = self.dir.join(file_name(&key.meta));
                fs::remove_file(&path).map_err(io("delete", &path))?;
                tracing::info!(kid = %key.meta.kid, "credential_key_retired");
            }
        }
        let retired = planned.retired.clone();
        let mut kept = Vec::with_capacity(keys.len());
        for (idx, key) in keys.into_iter().enumerate() {
            if !retired.contains(&idx) {
                kept.push(key);
            }
        }
        let metas: Vec<KeyMeta> = kept.iter().map(|key| key.meta.clone()).collect();
        let planned = plan(&metas, now, self.policy);
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = RingState {
            keys: kept,
            plan: planned.clone(),
        };
        Ok(planned)
    }

    /// The published keys as a JWKS document.
    pub fn jwks(&self) -> Value {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let keys: Vec<Value> = state
            .plan
            .published
            .iter()
            .filter_map(|idx| state.keys.get(*idx))
            .map(|key| {
                json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(key.key.verifying_key().as_bytes()),
                    "kid": key.meta.kid,
                    "alg": "EdDSA",
                    "use": "sig",
                })
            })
            .collect();
        json!({ "keys": keys })
    }

    /// `claims` as a compact JWS signed by the signing key, with its `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let Some(key) = state.keys.get(state.plan.signing) else {
            // `open` leaves at least one key; without one nothing can be signed.
            return String::new();
        };
        let header = json!({ "alg": "EdDSA", "typ": "JWT", "kid": key.meta.kid });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = key.key.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }

    /// The `kid` of the signing key.
    pub fn signing_kid(&self) -> Option<String> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state
            .keys
            .get(state.plan.signing)
            .map(|key| key.meta.kid.clone())
    }
}

/// Whether a new key is due: none yet, or the newest is old enough.
fn plan_or_rotate(keys: &[RingKey], now: i64, policy: RotationPolicy) -> bool {
    let metas: Vec<KeyMeta> = keys.iter().map(|key| key.meta.clone()).collect();
    metas.is_empty() || plan(&metas, now, policy).rotate
}

fn file_name(meta: &KeyMeta) -> String {
    format!("{}-{}.key", meta.created, meta.kid)
}

/// The ring's keys, oldest first. A file that is not a key of the ring (by its name) is left
/// alone; one named like a key that does not hold one stops the start.
fn read_keys(dir: &Path) -> Result<Vec<RingKey>, CredentialError> {
    let mut keys = Vec::new();
    for entry in fs::read_dir(dir).map_err(io("list", dir))? {
        let entry = entry.map_err(io("list", dir))?;
        let name = entry.file_name();
        let Some(meta) = name.to_str().and_then(parse_file_name) else {
            continue;
        };
        let path = entry.path();
        let key = read_key(&path)?;
        if kid_of(&key) != meta.kid {
            return Err(CredentialError::BadKey {
                path,
                reason: "its file name names another key".to_owned(),
            });
        }
        keys.push(RingKey { meta, key });
    }
    keys.sort_by(|a, b| (a.meta.created, &a.meta.kid).cmp(&(b.meta.created, &b.meta.kid)));
    Ok(keys)
}

fn parse_file_name(name: &str) -> Option<KeyMeta> {
    let stem = name.strip_suffix(".key")?;
    let (created, kid) = stem.split_once('-')?;
    let valid_kid = kid.len() == 16 && kid.bytes().all(|b| b.is_ascii_hexdigit());
    Some(KeyMeta {
        created: created.parse().ok()?,
        kid: valid_kid.then(|| kid.to_owned())?,
    })
}

/// A key's id: the first 8 bytes of the SHA-256 of its public key, in hex.
fn kid_of(key: &SigningKey) -> String {
    let digest = Sha256::digest(key.verifying_key().as_bytes());
    hex::encode(digest.get(..8).unwrap_or_default())
}

fn read_key(path: &Path) -> Result<SigningKey, CredentialError> {
    let mut file = File::open(path).map_err(io("open", path))?;
    let size = file.metadata().map_err(io("read", path))?.len();
    if size > MAX_KEY_FILE_BYTES {
        return Err(CredentialError::BadKey {
            path: path.to_owned(),
            reason: format!("it is larger than {MAX_KEY_FILE_BYTES} bytes"),
        });
    }
    let mut text = Zeroizing::new(String::new());
    file.read_to_string(&mut text).map_err(io("read", path))?;
    SigningKey::from_pkcs8_pem(&text).map_err(|error| CredentialError::BadKey {
        path: path.to_owned(),
        reason: error.to_string(),
    })
}

/// A new key, written owner-only under a temporary name, synced and renamed into place.
fn create_key(dir: &Path, now: i64) -> Result<RingKey, CredentialError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice())
        .map_err(|error| CredentialError::Random(error.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    let meta = KeyMeta {
        created: now,
        kid: kid_of(&key),
    };
    let path = dir.join(file_name(&meta));
    let pem = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .map_err(|error| CredentialError::BadKey {
        path: path.clone(),
        reason: error.to_string(),
    })?;
    let temp = path.with_extension("tmp");
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temp).map_err(io("create", &temp))?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io("write", &temp))?;
    fs::rename(&temp, &path).map_err(io("rename", &temp))?;
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io("sync", dir))?;
    tracing::info!(kid = %meta.kid, "credential_key_created");
    Ok(RingKey { meta, key })
}

fn create_dir_owner_only(dir: &Path) -> Result<(), CredentialError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io("create", dir))
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CredentialError {
    let path = path.to_owned();
    move |source| CredentialError::Io {
        path,
        action,
        source,
    }
}

/// Who a credential is issued to, and when.
#[derive(Debug, Clone, Copy)]
pub struct Recipient<'a> {
    /// The workload the caller is, when the deciding rule names one.
    pub workload: Option<&'a str>,
    /// The caller's verified subject and trust provider.
    pub subject: &'a str,
    pub trust_provider: &'a str,
    pub target: &'a str,
    /// The target's declared `database`, which a `postgres_role` credential's URI names.
    pub database: Option<&'a str>,
    /// Unix seconds.
    pub now: i64,
    /// The caller's verified claims that the credential copies, by name.
    pub claims: &'a Map<String, Value>,
}

/// An issued credential. `value` is the secret; it goes to the caller and nowhere else.
pub struct Issued {
    pub value: Zeroizing<String>,
    /// How the target takes it: `bearer` for a token, `secret` for a stored secret.
    pub token_type: &'static str,
    /// Unix seconds; none for a `static` credential without `ttl`.
    pub expires_at: Option<i64>,
    /// What the event's `credential_ref` is the HMAC of: a JWT's `jti`, a static secret's
    /// name and SHA-256.
    pub identifier: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("token_type", &self.token_type)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// An OAuth client the server may act as: its secret, from the configuration.
pub struct OAuthClient {
    pub token_url: String,
    pub client_id: String,
    pub secret: Zeroizing<String>,
    /// What the endpoint's certificate must chain to.
    pub ca: crate::http::TrustRoots,
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// The largest token endpoint answer read.
const MAX_TOKEN_ANSWER_BYTES: u64 = 64 * 1024;

/// A token from an endpoint, kept for the callers after the first.
struct CachedToken {
    value: Zeroizing<String>,
    fetched_at: i64,
    expires_at: i64,
}

impl CachedToken {
    /// Still worth handing out: not within a tenth of its life (at most a minute) of its end.
    fn fresh(&self, now: i64) -> bool {
        let margin = ((self.expires_at - self.fetched_at) / 10).clamp(0, 60);
        now < self.expires_at - margin
    }
}

/// Tokens by token endpoint, client and scopes; each slot locked while it is fetched.
type TokenSlots = HashMap<(String, String, Vec<String>), Arc<Mutex<Option<CachedToken>>>>;

/// Issues credentials: holds the key ring, the `iss` of minted tokens, and the OAuth clients.
pub struct CredentialIssuer {
    pub ring: KeyRing,
    /// The `iss` of every minted JWT: the URL at which this server publishes its JWKS.
    pub issuer: String,
    oauth_clients: Vec<OAuthClient>,
    tokens: Mutex<TokenSlots>,
    /// The roles of `postgres_role` credentials.
    pub postgres: crate::postgres_roles::PostgresRoles,
}

impl std::fmt::Debug for CredentialIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialIssuer")
            .field("issuer", &self.issuer)
            .field("oauth_clients", &self.oauth_clients)
            .finish_non_exhaustive()
    }
}

impl CredentialIssuer {
    pub fn new(
        ring: KeyRing,
        issuer: String,
        oauth_clients: Vec<OAuthClient>,
        postgres: crate::postgres_roles::PostgresRoles,
    ) -> Self {
        CredentialIssuer {
            ring,
            issuer,
            oauth_clients,
            tokens: Mutex::new(HashMap::new()),
            postgres,
        }
    }

    /// Issues `credential` to `to`. Blocking: a `static` credential reads a file.
    pub fn issue(
        &self,
        credential: &Credential,
        to: &Recipient<'_>,
    ) -> Result<Issued, CredentialError> {
        match &credential.kind {
            CredentialKind::Jwt { audience, .. } => self.mint(credential, audience, to),
            CredentialKind::Static(source) => read_static(credential, source, to.now),
            CredentialKind::OauthClientCredentials {
                token_url,
                client_id,
                scopes,
            } => self.oauth_token(credential, token_url, client_id, scopes, to.now),
            CredentialKind::PostgresRole { grant } => {
                let ttl_s = self.capped_ttl(credential)?;
                self.postgres.issue(&credential.name, to, grant, ttl_s)
            }
        }
    }

    /// What in `bundle` this issuer cannot issue, one sentence each: a credential whose ttl is
    /// over the maximum, an OAuth client without a secret, a `postgres_role` on a target
    /// without an administrative connection, a connection for a target that is not a
    /// PostgreSQL target of the bundle. The server logs them at start, so that a mismatch shows
    /// before the first caller meets it.
    pub fn check(&self, bundle: &portcullis_lang::bundle::Bundle) -> Vec<String> {
        let mut problems = Vec::new();
        let max_s = self.ring.policy.max_ttl_s.unsigned_abs();
        for credential in bundle.credentials() {
            if credential.ttl_s.is_some_and(|ttl| ttl > max_s)
                && !matches!(credential.kind, CredentialKind::Static(_))
            {
                problems.push(format!(
                    "credential `{}`: its ttl is over `credentials.max_ttl_s` ({max_s} s); it \
                     will not be issued",
                    credential.name
                ));
            }
            if let CredentialKind::OauthClientCredentials {
                token_url,
                client_id,
                ..
            } = &credential.kind
                && !self
                    .oauth_clients
                    .iter()
                    .any(|client| &client.token_url == token_url && &client.client_id == client_id)
            {
                problems.push(format!(
                    "credential `{}`: no `[[credentials.oauth_clients]]` holds the secret of \
                     client `{client_id}` at `{token_url}`",
                    credential.name
                ));
            }
        }
        for rule in bundle.rules() {
            let (Some(credential), portcullis_lang::ir::TargetRef::Named(target)) = (
                rule.credential.and_then(|id| bundle.credential(id)),
                rule.target,
            ) else {
                continue;
            };
            let Some(target) = bundle.targets().get(target.0 as usize) else {
                continue;
            };
            if matches!(credential.kind, CredentialKind::PostgresRole { .. })
                && !self.postgres.serves(&target.name)
            {
                problems.push(format!(
                    "rule `{}`: credential `{}` makes roles on target `{}`, which has no \
                     `[[credentials.postgres]]` connection",
                    rule.name, credential.name, target.name
                ));
            }
        }
        for target in self.postgres.targets() {
            let known = bundle.targets().iter().find(|known| known.name == target);
            if !known.is_some_and(|known| known.protocol == portcullis_lang::ir::Protocol::Postgres)
            {
                problems.push(format!(
                    "`[[credentials.postgres]]`: target `{target}` is not a `postgres` target of \
                     the policy"
                ));
            }
        }
        problems
    }

    /// The credential's ttl, refused over the server's maximum. The language requires a ttl
    /// on every credential but a `static` one.
    fn capped_ttl(&self, credential: &Credential) -> Result<u64, CredentialError> {
        let ttl_s = credential.ttl_s.unwrap_or(0);
        let max_s = self.ring.policy.max_ttl_s.unsigned_abs();
        if ttl_s > max_s {
            return Err(CredentialError::TtlTooLong {
                name: credential.name.clone(),
                ttl_s,
                max_s,
            });
        }
        Ok(ttl_s)
    }

    fn mint(
        &self,
        credential: &Credential,
        audience: &str,
        to: &Recipient<'_>,
    ) -> Result<Issued, CredentialError> {
        let ttl_s = self.capped_ttl(credential)?;
        let expires_at = to
            .now
            .saturating_add(i64::try_from(ttl_s).unwrap_or(i64::MAX));
        let jti = uuid::Uuid::now_v7().to_string();
        let mut claims = json!({
            "iss": self.issuer,
            "sub": to.workload.unwrap_or(to.subject),
            "aud": audience,
            "iat": to.now,
            "nbf": to.now,
            "exp": expires_at,
            "jti": jti,
            "portcullis": {
                "credential": credential.name,
                "target": to.target,
                "trust_provider": to.trust_provider,
                "caller": to.subject,
            },
        });
        if let Value::Object(minted) = &mut claims {
            for (name, value) in to.claims {
                // The compiler refuses these names; a claim of the token's own is never
                // overwritten, whatever a bundle says.
                if !MINTED_CLAIMS.contains(&name.as_str()) {
                    minted.insert(name.clone(), value.clone());
                }
            }
        }
        Ok(Issued {
            value: Zeroizing::new(self.ring.sign(&claims)),
            token_type: "bearer",
            expires_at: Some(expires_at),
            identifier: jti,
        })
    }
}

impl CredentialIssuer {
    /// A token for the client, from the cache while it is fresh, else from the endpoint. One
    /// fetch at a time per client and scope set: callers arriving meanwhile wait for it.
    fn oauth_token(
        &self,
        credential: &Credential,
        token_url: &str,
        client_id: &str,
        scopes: &[String],
        now: i64,
    ) -> Result<Issued, CredentialError> {
        let client = self
            .oauth_clients
            .iter()
            .find(|client| client.token_url == token_url && client.client_id == client_id)
            .ok_or_else(|| CredentialError::NoClientSecret {
                name: credential.name.clone(),
                client_id: client_id.to_owned(),
                token_url: token_url.to_owned(),
            })?;
        let mut scopes = scopes.to_vec();
        scopes.sort();
        let key = (token_url.to_owned(), client_id.to_owned(), scopes);
        let slot = {
            let mut slots = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(slots.entry(key.clone()).or_default())
        };
        let mut cached = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if cached.as_ref().is_none_or(|token| !token.fresh(now)) {
            let ttl_cap = credential
                .ttl_s
                .map_or(i64::MAX, |ttl| i64::try_from(ttl).unwrap_or(i64::MAX));
            *cached = Some(fetch_token(credential, client, &key.2, now, ttl_cap)?);
        }
        let token = cached
            .as_ref()
            .ok_or_else(|| CredentialError::TokenEndpoint {
                name: credential.name.clone(),
                token_url: token_url.to_owned(),
                reason: "no token".to_owned(),
            })?;
        Ok(Issued {
            value: token.value.clone(),
            token_type: "bearer",
            expires_at: Some(token.expires_at),
            identifier: format!(
                "oauth:{}",
                hex::encode(Sha256::digest(token.value.as_bytes()))
            ),
        })
    }
}

/// A client-credentials grant (RFC 6749, section 4.4) with the client authenticated by HTTP
/// Basic (section 2.3.1). The endpoint's error code comes back in the reason, never its body
/// whole, and never the secret.
fn fetch_token(
    credential: &Credential,
    client: &OAuthClient,
    scopes: &[String],
    now: i64,
    ttl_cap: i64,
) -> Result<CachedToken, CredentialError> {
    use crate::http::{agent_trusting, check_url, percent_encode, read_limited};
    let failed = |reason: String| CredentialError::TokenEndpoint {
        name: credential.name.clone(),
        token_url: client.token_url.clone(),
        reason,
    };
    check_url(&client.token_url).map_err(|bad| failed(bad.why))?;
    let mut form = "grant_type=client_credentials".to_owned();
    if !scopes.is_empty() {
        form.push_str("&scope=");
        form.push_str(&percent_encode(&scopes.join(" ")));
    }
    let basic = Zeroizing::new(format!(
        "{}:{}",
        percent_encode(&client.client_id),
        percent_encode(&client.secret)
    ));
    let authorization = Zeroizing::new(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(basic.as_bytes())
    ));
    let mut response = agent_trusting(crate::http::TIMEOUT, &client.ca)
        .post(&client.token_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .header("authorization", authorization.as_str())
        .send(form.as_bytes())
        .map_err(|err| failed(err.to_string()))?;
    let status = response.status().as_u16();
    let text = read_limited(response.body_mut(), MAX_TOKEN_ANSWER_BYTES).map_err(failed)?;
    let answer: Value = serde_json::from_str(&text).map_err(|_| {
        failed(format!(
            "it answered {status} with something that is not JSON"
        ))
    })?;
    if status != 200 {
        let code = answer["error"].as_str().unwrap_or("no error code");
        let code: String = code.chars().take(64).collect();
        return Err(failed(format!("it answered {status}: `{code}`")));
    }
    let value = answer["access_token"]
        .as_str()
        .filter(|token| !token.is_empty())
        .ok_or_else(|| failed("its answer has no `access_token`".to_owned()))?;
    let token_type = answer["token_type"].as_str().unwrap_or_default();
    if !token_type.eq_ignore_ascii_case("bearer") {
        let shown: String = token_type.chars().take(32).collect();
        return Err(failed(format!(
            "it issued a `{shown}` token, not a bearer token"
        )));
    }
    // Without `expires_in`, the credential's own ttl bounds how long the token is reused.
    let lifetime = answer["expires_in"]
        .as_i64()
        .filter(|seconds| *seconds > 0)
        .unwrap_or(ttl_cap)
        .min(ttl_cap);
    if lifetime == i64::MAX {
        return Err(failed(
            "its answer has no `expires_in`, and the credential no `ttl`".to_owned(),
        ));
    }
    Ok(CachedToken {
        value: Zeroizing::new(value.to_owned()),
        fetched_at: now,
        expires_at: now.saturating_add(lifetime),
    })
}

fn read_static(
    credential: &Credential,
    source: &StaticSource,
    now: i64,
) -> Result<Issued, CredentialError> {
    let failed = |reason: String| CredentialError::Static {
        name: credential.name.clone(),
        reason,
    };
    let value = match source {
        StaticSource::Env(variable) => match std::env::var(variable) {
            Ok(value) if !value.is_empty() => Zeroizing::new(value),
            Ok(_) => {
                return Err(failed(format!(
                    "environment variable `{variable}` is empty"
                )));
            }
            Err(_) => {
                return Err(failed(format!(
                    "environment variable `{variable}` is not set"
                )));
            }
        },
        StaticSource::File(path) => {
            let path = Path::new(path);
            let mut file = File::open(path)
                .map_err(|error| failed(format!("cannot open `{}`: {error}", path.display())))?;
            let size = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
            if size > MAX_STATIC_SECRET_BYTES {
                return Err(failed(format!(
                    "`{}` is larger than {MAX_STATIC_SECRET_BYTES} bytes",
                    path.display()
                )));
            }
            let mut text = Zeroizing::new(String::new());
            file.read_to_string(&mut text)
                .map_err(|error| failed(format!("cannot read `{}`: {error}", path.display())))?;
            // A file written by `echo` ends in a newline that is not part of the secret.
            let trimmed = text.strip_suffix('\n').unwrap_or(&text);
            if trimmed.is_empty() {
                return Err(failed(format!("`{}` is empty", path.display())));
            }
            Zeroizing::new(trimmed.to_owned())
        }
    };
    let digest = hex::encode(Sha256::digest(value.as_bytes()));
    let expires_at = credential
        .ttl_s
        .map(|ttl| now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)));
    Ok(Issued {
        identifier: format!("static:{}:{digest}", credential.name),
        value,
        token_type: "secret",
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;
    const DAY: i64 = 86_400;

    fn keys(created: &[i64]) -> Vec<KeyMeta> {
        created
            .iter()
            .enumerate()
            .map(|(idx, created)| KeyMeta {
                created: *created,
                kid: format!("{idx:016x}"),
            })
            .collect()
    }

    #[test]
    fn the_first_key_signs_at_once() {
        let planned = plan(&keys(&[0]), 0, RotationPolicy::default());
        assert_eq!(planned.signing, 0);
        assert_eq!(planned.published, vec![0]);
        assert!(!planned.rotate);
    }

    #[test]
    fn a_new_key_is_published_before_it_signs_and_the_old_one_after() {
        let policy = RotationPolicy::default();
        let ring = keys(&[0, 30 * DAY]);
        // Just made: published, the old key still signs.
        let fresh = plan(&ring, 30 * DAY, policy);
        assert_eq!(fresh.signing, 0);
        assert_eq!(fresh.published, vec![0, 1]);
        // After `publish_ahead`, the new key signs; the old one stays published.
        let switched = plan(&ring, 30 * DAY + HOUR, policy);
        assert_eq!(switched.signing, 1);
        assert_eq!(switched.published, vec![0, 1]);
        assert!(switched.retired.is_empty());
        // A second before its last token expires, still published; then retired.
        let before = plan(&ring, 30 * DAY + HOUR + DAY - 1, policy);
        assert_eq!(before.published, vec![0, 1]);
        let after = plan(&ring, 30 * DAY + HOUR + DAY, policy);
        assert_eq!(after.published, vec![1]);
        assert_eq!(after.retired, vec![0]);
    }

    #[test]
    fn rotation_is_due_once_the_newest_key_is_old_enough() {
        let policy = RotationPolicy::default();
        assert!(!plan(&keys(&[0]), 30 * DAY - 1, policy).rotate);
        assert!(plan(&keys(&[0]), 30 * DAY, policy).rotate);
    }

    #[test]
    fn key_file_names_are_parsed_strictly() {
        assert_eq!(
            parse_file_name("1764900000-0123456789abcdef.key"),
            Some(KeyMeta {
                created: 1_764_900_000,
                kid: "0123456789abcdef".to_owned()
            })
        );
        for other in [
            "1764900000-0123456789abcdef.key.tmp",
            "x-0123456789abcdef.key",
            "1764900000-0123.key",
            "README",
        ] {
            assert_eq!(parse_file_name(other), None, "{other}");
        }
    }

    #[test]
    fn the_ring_signs_tokens_its_jwks_verifies_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let policy = RotationPolicy::default();
        let ring = KeyRing::open(dir.path(), policy, 1_000).unwrap();
        let kid = ring.signing_kid().unwrap();
        let token = ring.sign(&json!({ "sub": "x" }));
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(ring.jwks()).unwrap();
        let jwk = jwks.find(&kid).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<Value>(&token, &key, &validation).unwrap();
        assert_eq!(data.claims["sub"], "x");
        drop(ring);
        let reopened = KeyRing::open(dir.path(), policy, 2_000).unwrap();
        assert_eq!(reopened.signing_kid(), Some(kid));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let ring_dir = dir.path().join(KEY_RING_DIR);
            let mode = fs::metadata(&ring_dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
            for entry in fs::read_dir(&ring_dir).unwrap() {
                let mode = entry.unwrap().metadata().unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600);
            }
        }
    }

    #[test]
    fn the_ring_rotates_and_retires_on_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let policy = RotationPolicy::default();
        let ring = KeyRing::open(dir.path(), policy, 0).unwrap();
        let first = ring.signing_kid().unwrap();
        ring.maintain(30 * DAY).unwrap();
        assert_eq!(
            ring.signing_kid().unwrap(),
            first,
            "published before it signs"
        );
        assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 2);
        ring.maintain(30 * DAY + HOUR).unwrap();
        let second = ring.signing_kid().unwrap();
        assert_ne!(second, first);
        ring.maintain(30 * DAY + HOUR + DAY).unwrap();
        let published = ring.jwks()["keys"].as_array().unwrap().clone();
        assert_eq!(published.len(), 1);
        assert_eq!(published[0]["kid"], second.as_str());
        let files = fs::read_dir(dir.path().join(KEY_RING_DIR)).unwrap().count();
        assert_eq!(files, 1, "the retired key's file is deleted");
    }

    #[test]
    fn copied_claims_join_a_minted_token_but_never_replace_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(dir.path(), RotationPolicy::default(), 1_000).unwrap();
        let issuer = CredentialIssuer::new(
            ring,
            "https://portcullis.test".to_owned(),
            Vec::new(),
            crate::postgres_roles::PostgresRoles::new(dir.path(), Vec::new()),
        );
        // A bundle the compiler did not make could name the token's own claims.
        let credential = Credential {
            name: "api".to_owned(),
            kind: CredentialKind::Jwt {
                audience: "api".to_owned(),
                copy_claims: vec!["repository".to_owned(), "sub".to_owned(), "aud".to_owned()],
            },
            ttl_s: Some(600),
        };
        let caller: Map<String, Value> = serde_json::from_value(json!({
            "repository": "acme/billing", "sub": "forged", "aud": "elsewhere",
        }))
        .unwrap();
        let to = Recipient {
            workload: Some("ci"),
            subject: "repo:acme/billing:ref:refs/heads/main",
            trust_provider: "github",
            target: "api",
            database: None,
            now: 1_000,
            claims: &caller,
        };
        let issued = issuer.issue(&credential, &to).unwrap();
        let payload = issued.value.split('.').nth(1).unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(claims["repository"], "acme/billing");
        assert_eq!(claims["sub"], "ci");
        assert_eq!(claims["aud"], "api");
        assert_eq!(claims["iss"], "https://portcullis.test");
    }
}
