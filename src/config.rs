//! `portcullis.toml`: where the server listens, which policy set it runs, which trust providers
//! it believes, and where the audit store lives. Relative paths are relative to the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use portcullis_lang::schema::{ClaimType, CustomClaim, ProviderKind, dotted_path};
use serde::Deserialize;

/// Configuration files larger than this are refused.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// JWKS files larger than this are refused.
const MAX_JWKS_BYTES: u64 = 1024 * 1024;

/// Bounds of `server.max_body_bytes`: a decide request with a token needs about a kilobyte,
/// and nothing legitimate needs megabytes.
const MIN_BODY_BYTES: usize = 1024;
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Clock-skew allowance beyond this is a misconfiguration, not a tolerance.
const MAX_LEEWAY_S: u64 = 3600;

/// Bounds of a nonzero `policy.watch_interval_ms`: faster polling only burns the disk's
/// metadata cache; slower is no longer watching.
const MIN_WATCH_INTERVAL_MS: u64 = 100;
const MAX_WATCH_INTERVAL_MS: u64 = 3_600_000;

/// Admin token files larger than this are refused unread.
const MAX_ADMIN_TOKEN_BYTES: u64 = 4096;

/// A shorter admin token could be guessed; `openssl rand -hex 32` gives 64 characters.
const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// Where the audit store lives when neither the command line nor the configuration says.
pub const DEFAULT_DATA_DIR: &str = "portcullis-data";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    pub policy: PolicyConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub trust_providers: Vec<TrustProviderConfig>,
    /// The directory of the file, against which relative paths resolve.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Loopback unless configured otherwise.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// A file holding the bearer token of the admin API (`POST /v1/admin/reload`), read at
    /// start; without it the admin API is disabled.
    pub admin_token_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: default_listen(),
            max_body_bytes: default_max_body_bytes(),
            admin_token_file: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8181))
}

fn default_max_body_bytes() -> usize {
    portcullis_engine::api::DEFAULT_MAX_BODY_BYTES
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// A directory of `*.gate` files, or one file, compiled at start.
    pub dir: Option<PathBuf>,
    /// Or a bundle that `policyc build` wrote.
    pub bundle: Option<PathBuf>,
    /// With `bundle`: an ed25519 public key (SPKI PEM); the bundle must carry its signature.
    pub public_key: Option<PathBuf>,
    /// How often the server looks for changed policy files (or a changed bundle file) and
    /// reloads; 0 turns watching off.
    #[serde(default = "default_watch_interval_ms")]
    pub watch_interval_ms: u64,
}

fn default_watch_interval_ms() -> u64 {
    1000
}

/// Where the policy set comes from.
#[derive(Debug, Clone)]
pub enum PolicySource {
    Sources(PathBuf),
    /// A bundle file, and the public key that must have signed it, if one is configured.
    Bundle {
        path: PathBuf,
        public_key: Option<PathBuf>,
    },
}

/// The admin token, as read from `server.admin_token_file`.
pub struct AdminTokenFile {
    pub path: PathBuf,
    pub token: String,
    /// Whether users other than the owner may read the file.
    pub readable_by_others: bool,
}

/// Everything but the token.
impl std::fmt::Debug for AdminTokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminTokenFile")
            .field("path", &self.path)
            .field("readable_by_others", &self.readable_by_others)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    pub data_dir: Option<PathBuf>,
    /// This engine's name in access events; the host name when unset.
    pub node: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustProviderConfig {
    pub name: String,
    /// `github`, `gitlab`, `kubernetes`, `terraform`, `spiffe` or `oidc`.
    pub kind: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks_file: PathBuf,
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
    /// Set on providers whose signing key is published with the examples; the server warns.
    #[serde(default)]
    pub example_only: bool,
    /// Claims beyond the built-in `oidc` schema: `{ name, path, type, required }`.
    #[serde(default)]
    pub custom_claims: Vec<CustomClaimConfig>,
    /// For `spiffe`: the trust domain whose SPIFFE IDs this provider vouches for.
    pub trust_domain: Option<String>,
}

/// `custom_claims = [{ name = "team", path = "org.team", type = "string" }]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomClaimConfig {
    pub name: String,
    /// Dotted (`"org.team"`), or a list of keys when a key holds a dot.
    pub path: ClaimPathConfig,
    /// `string`, `integer`, `bool` or `string_set`.
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default)]
    pub required: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ClaimPathConfig {
    Dotted(String),
    Keys(Vec<String>),
}

impl CustomClaimConfig {
    fn to_claim(&self) -> Result<CustomClaim> {
        let path = match &self.path {
            ClaimPathConfig::Dotted(text) => dotted_path(text),
            ClaimPathConfig::Keys(keys) => keys.clone(),
        };
        let ty = ClaimType::from_config_name(&self.ty)?;
        Ok(CustomClaim::new(&self.name, path, ty, self.required)?)
    }
}

fn default_leeway_s() -> u64 {
    60
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text = read_bounded(path, MAX_CONFIG_BYTES)
            .with_context(|| format!("cannot read configuration `{}`", path.display()))?;
        let mut config: Config = toml::from_str(&text)
            .with_context(|| format!("invalid configuration `{}`", path.display()))?;
        config.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        config
            .validate()
            .with_context(|| format!("invalid configuration `{}`", path.display()))?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let body_limit = self.server.max_body_bytes;
        if !(MIN_BODY_BYTES..=MAX_BODY_BYTES).contains(&body_limit) {
            bail!(
                "`server.max_body_bytes = {body_limit}` is outside \
                 {MIN_BODY_BYTES}..={MAX_BODY_BYTES}"
            );
        }
        if self.policy.dir.is_some() == self.policy.bundle.is_some() {
            bail!("`[policy]` needs exactly one of `dir` (Gate sources) or `bundle` (built)");
        }
        let watch_ms = self.policy.watch_interval_ms;
        if watch_ms != 0 && !(MIN_WATCH_INTERVAL_MS..=MAX_WATCH_INTERVAL_MS).contains(&watch_ms) {
            bail!(
                "`policy.watch_interval_ms = {watch_ms}` is outside \
                 {MIN_WATCH_INTERVAL_MS}..={MAX_WATCH_INTERVAL_MS}; 0 turns watching off"
            );
        }
        if self.policy.public_key.is_some() && self.policy.dir.is_some() {
            bail!(
                "`[policy] public_key` checks the signature of a `bundle`, but `dir` compiles \
                 sources, which carry none; serve a bundle that `policyc build --sign` wrote, \
                 or remove `public_key`"
            );
        }
        for (idx, provider) in self.trust_providers.iter().enumerate() {
            if provider.leeway_s > MAX_LEEWAY_S {
                bail!(
                    "trust provider `{}`: `leeway_s = {}` is over the limit of {MAX_LEEWAY_S} \
                     seconds",
                    provider.name,
                    provider.leeway_s
                );
            }
            let later = self.trust_providers.iter().skip(idx + 1);
            if later.into_iter().any(|other| other.name == provider.name) {
                bail!(
                    "two trust providers are named `{}`; names must be unique",
                    provider.name
                );
            }
            let Some(kind) = ProviderKind::from_keyword(&provider.kind) else {
                bail!(
                    "trust provider `{}`: unknown kind `{}`; expected `github`, `gitlab`, \
                     `kubernetes`, `terraform`, `spiffe` or `oidc`",
                    provider.name,
                    provider.kind
                );
            };
            if !kind.issues_tokens() {
                // FIXME(#6): the local-process listener and its configuration.
                bail!(
                    "trust provider `{}`: kind `{kind}` is not a token issuer; local processes \
                     are attested by the local-process listener, not by a trust provider",
                    provider.name
                );
            }
            if provider.audiences.is_empty() {
                bail!(
                    "trust provider `{}`: `audiences` must name at least one",
                    provider.name
                );
            }
        }
        Ok(())
    }

    /// `path` resolved against the configuration file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    pub fn policy_source(&self) -> PolicySource {
        match (&self.policy.bundle, &self.policy.dir) {
            (Some(bundle), _) => PolicySource::Bundle {
                path: self.resolve(bundle),
                public_key: self
                    .policy
                    .public_key
                    .as_deref()
                    .map(|key| self.resolve(key)),
            },
            (None, Some(dir)) => PolicySource::Sources(self.resolve(dir)),
            (None, None) => PolicySource::Sources(self.base_dir.clone()),
        }
    }

    /// How often to look for changes to the policy files; `None` when watching is off.
    pub fn watch_interval(&self) -> Option<Duration> {
        let millis = self.policy.watch_interval_ms;
        (millis > 0).then(|| Duration::from_millis(millis))
    }

    /// The admin token from `server.admin_token_file`, when one is configured: the file's
    /// text without surrounding whitespace. Errors never quote the token.
    pub fn admin_token(&self) -> Result<Option<AdminTokenFile>> {
        let Some(file) = &self.server.admin_token_file else {
            return Ok(None);
        };
        let path = self.resolve(file);
        let text = read_bounded(&path, MAX_ADMIN_TOKEN_BYTES)
            .with_context(|| format!("cannot read the admin token file `{}`", path.display()))?;
        let token = text.trim();
        let length = token.chars().count();
        if length < MIN_ADMIN_TOKEN_CHARS {
            bail!(
                "the admin token in `{}` is {length} characters long; at least \
                 {MIN_ADMIN_TOKEN_CHARS} are required (`openssl rand -hex 32` makes one)",
                path.display()
            );
        }
        if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
            bail!(
                "the admin token in `{}` holds a space or a character beyond printable ASCII, \
                 which an `authorization` header cannot carry",
                path.display()
            );
        }
        Ok(Some(AdminTokenFile {
            readable_by_others: readable_by_others(&path),
            token: token.to_owned(),
            path,
        }))
    }

    /// The audit data directory: the command line's, else the configuration's, else the
    /// default beside the current directory.
    pub fn data_dir(&self, from_cli: Option<&Path>) -> PathBuf {
        if let Some(dir) = from_cli {
            return dir.to_path_buf();
        }
        match &self.audit.data_dir {
            Some(dir) => self.resolve(dir),
            None => PathBuf::from(DEFAULT_DATA_DIR),
        }
    }

    pub fn trust_provider_specs(
        &self,
    ) -> Result<Vec<portcullis_engine::attest::TrustProviderSpec>> {
        self.trust_providers
            .iter()
            .map(|provider| self.spec(provider))
            .collect()
    }

    fn spec(
        &self,
        provider: &TrustProviderConfig,
    ) -> Result<portcullis_engine::attest::TrustProviderSpec> {
        let path = self.resolve(&provider.jwks_file);
        let jwks_json = read_bounded(&path, MAX_JWKS_BYTES).with_context(|| {
            format!(
                "trust provider `{}`: cannot read JWKS `{}`",
                provider.name,
                path.display()
            )
        })?;
        let kind = ProviderKind::from_keyword(&provider.kind)
            .with_context(|| format!("trust provider `{}`: unknown kind", provider.name))?;
        let custom_claims = provider
            .custom_claims
            .iter()
            .map(CustomClaimConfig::to_claim)
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("trust provider `{}`", provider.name))?;
        Ok(portcullis_engine::attest::TrustProviderSpec {
            name: provider.name.clone(),
            kind,
            issuer: provider.issuer.clone(),
            audiences: provider.audiences.clone(),
            jwks_json,
            leeway_s: provider.leeway_s,
            custom_claims,
            trust_domain: provider.trust_domain.clone(),
        })
    }
}

#[cfg(unix)]
fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|metadata| metadata.permissions().mode() & 0o044 != 0)
}

#[cfg(not(unix))]
fn readable_by_others(_path: &Path) -> bool {
    false
}

/// Reads a UTF-8 file, refusing one larger than `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> Result<String> {
    let size = std::fs::metadata(path)?.len();
    if size > limit {
        bail!("the file is {size} bytes; the limit is {limit}");
    }
    Ok(std::fs::read_to_string(path)?)
}

#[cfg(test)]
mod tests {
    use portcullis_engine::attest::TrustProviderSpec;

    use super::*;

    /// The trust provider specs of a configuration made of `providers`, with the example
    /// issuer's JWKS.
    fn specs(providers: &str) -> Result<Vec<TrustProviderSpec>> {
        let text = format!("[policy]\ndir = \"examples/policies\"\n{providers}");
        let mut config: Config = toml::from_str(&text)?;
        config.base_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        config.validate()?;
        config.trust_provider_specs()
    }

    fn provider(kind: &str, extra: &str) -> String {
        format!(
            "[[trust_providers]]\nname = \"p\"\nkind = \"{kind}\"\nissuer = \"https://i\"\n\
             audiences = [\"portcullis\"]\n\
             jwks_file = \"examples/dev/example-github-issuer.jwks.json\"\n{extra}\n"
        )
    }

    /// The configuration `text`, read as if from a file in `dir`.
    fn config_in(dir: &Path, text: &str) -> Result<Config> {
        let mut config: Config = toml::from_str(text)?;
        config.base_dir = dir.to_owned();
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn watching_is_on_by_default_off_at_zero_and_bounded() {
        let dir = Path::new(".");
        let config = config_in(dir, "[policy]\ndir = \"p\"\n").unwrap();
        assert_eq!(config.watch_interval(), Some(Duration::from_secs(1)));
        let off = config_in(dir, "[policy]\ndir = \"p\"\nwatch_interval_ms = 0\n").unwrap();
        assert_eq!(off.watch_interval(), None);
        for millis in [1, 99, 3_600_001] {
            let text = format!("[policy]\ndir = \"p\"\nwatch_interval_ms = {millis}\n");
            let err = config_in(dir, &text).unwrap_err();
            assert!(
                format!("{err:#}").contains("0 turns watching off"),
                "{err:#}"
            );
        }
    }

    #[test]
    fn the_admin_token_is_read_trimmed_and_checked_without_being_shown() {
        let tmp = tempfile::tempdir().unwrap();
        let text = "[server]\nadmin_token_file = \"admin.token\"\n[policy]\ndir = \"p\"\n";
        let config = config_in(tmp.path(), text).unwrap();
        let err = config.admin_token().unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot read the admin token file"),
            "{err:#}"
        );

        let token_path = tmp.path().join("admin.token");
        std::fs::write(&token_path, "  0123456789abcdef0123\n").unwrap();
        let file = config.admin_token().unwrap().unwrap();
        assert_eq!(file.token, "0123456789abcdef0123");
        assert_eq!(file.path, token_path);

        for (token, problem) in [
            ("0123456789", "is 10 characters long; at least 16"),
            (
                "0123456789 abcdef0123",
                "a space or a character beyond printable ASCII",
            ),
            (
                "0123456789abcdéf0123",
                "a space or a character beyond printable ASCII",
            ),
        ] {
            std::fs::write(&token_path, token).unwrap();
            let err = format!("{:#}", config.admin_token().unwrap_err());
            assert!(err.contains(problem), "{err}");
            assert!(!err.contains(token), "the token is never shown: {err}");
        }

        let none = config_in(tmp.path(), "[policy]\ndir = \"p\"\n").unwrap();
        assert!(none.admin_token().unwrap().is_none());
    }

    #[test]
    fn token_kinds_are_accepted() {
        for kind in ["gitlab", "terraform", "oidc"] {
            let specs = specs(&provider(kind, "")).unwrap();
            assert_eq!(specs[0].kind.keyword(), kind);
        }
        let spiffe = specs(&provider("spiffe", "trust_domain = \"prod.acme.example\"")).unwrap();
        assert_eq!(spiffe[0].trust_domain.as_deref(), Some("prod.acme.example"));
    }

    #[test]
    fn process_is_not_a_trust_provider() {
        let err = specs(&provider("process", "")).unwrap_err();
        assert!(
            format!("{err:#}").contains("local-process listener"),
            "{err:#}"
        );
    }

    #[test]
    fn custom_claims_are_read_for_oidc() {
        let claims = "custom_claims = [\n\
            { name = \"team\", path = \"org.team\", type = \"string\", required = true },\n\
            { name = \"roles\", path = [\"https://acme.example/roles\"], type = \"string_set\" },\n\
            ]";
        let parsed = specs(&provider("oidc", claims)).unwrap();
        let custom = &parsed[0].custom_claims;
        assert_eq!(custom.len(), 2);
        assert_eq!(custom[0].name, "team");
        assert_eq!(custom[0].path, ["org", "team"]);
        assert!(custom[0].required);
        assert_eq!(custom[1].path, ["https://acme.example/roles"]);
        assert_eq!(custom[1].ty, ClaimType::StringSet);
        assert!(!custom[1].required);

        let bad_type = "custom_claims = [{ name = \"team\", path = \"team\", type = \"text\" }]";
        let err = specs(&provider("oidc", bad_type)).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown claim type `text`"),
            "{err:#}"
        );
        let builtin = "custom_claims = [{ name = \"email\", path = \"mail\", type = \"string\" }]";
        let err = specs(&provider("oidc", builtin)).unwrap_err();
        assert!(format!("{err:#}").contains("built-in claim"), "{err:#}");
    }
}
