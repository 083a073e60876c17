//! `portcullis.toml`: where the server listens, which policy set it runs, which trust providers
//! it believes, and where the audit store lives. Relative paths are relative to the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use portcullis_lang::schema::ProviderKind;
use serde::Deserialize;

/// Configuration files larger than this are refused.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// JWKS files larger than this are refused.
const MAX_JWKS_BYTES: u64 = 1024 * 1024;

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
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: default_listen(),
            max_body_bytes: default_max_body_bytes(),
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
    /// A directory of `*.gate` files, or one file.
    pub dir: PathBuf,
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
    /// `github`, `kubernetes` or `oidc`.
    pub kind: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks_file: PathBuf,
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
    /// Set on providers whose signing key is published with the examples; the server warns.
    #[serde(default)]
    pub example_only: bool,
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
        for provider in &self.trust_providers {
            if ProviderKind::from_keyword(&provider.kind).is_none() {
                bail!(
                    "trust provider `{}`: unknown kind `{}`; expected `github`, `kubernetes` \
                     or `oidc`",
                    provider.name,
                    provider.kind
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

    pub fn policy_path(&self) -> PathBuf {
        self.resolve(&self.policy.dir)
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
        Ok(portcullis_engine::attest::TrustProviderSpec {
            name: provider.name.clone(),
            kind,
            issuer: provider.issuer.clone(),
            audiences: provider.audiences.clone(),
            jwks_json,
            leeway_s: provider.leeway_s,
        })
    }
}

/// Reads a UTF-8 file, refusing one larger than `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> Result<String> {
    let size = std::fs::metadata(path)?.len();
    if size > limit {
        bail!("the file is {size} bytes; the limit is {limit}");
    }
    Ok(std::fs::read_to_string(path)?)
}
