//! `portcullis.toml`: where the server listens, which policy set it runs, which trust providers
//! it believes, and where the audit store lives. Relative paths are relative to the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use portcullis_audit::AuditOptions;
use portcullis_audit::query::QueryLimits;
use portcullis_engine::jwks::JwksSource;
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

/// Bounds of `server.header_read_timeout_s`.
const MIN_HEADER_READ_TIMEOUT_S: u64 = 1;
const MAX_HEADER_READ_TIMEOUT_S: u64 = 3600;

/// Clock-skew allowance beyond this is a misconfiguration, not a tolerance.
const MAX_LEEWAY_S: u64 = 3600;

/// Bounds of `jwks_refresh_min_s` and `jwks_max_age_s`: an hour between fetches on unknown keys
/// at most, and keys kept between a minute and a day.
const MAX_JWKS_REFRESH_MIN_S: u64 = 3600;
const MIN_JWKS_MAX_AGE_S: u64 = 60;
const MAX_JWKS_MAX_AGE_S: u64 = 86_400;

/// Bounds of a nonzero `policy.watch_interval_ms`: faster polling only burns the disk's
/// metadata cache; slower is no longer watching.
const MIN_WATCH_INTERVAL_MS: u64 = 100;
const MAX_WATCH_INTERVAL_MS: u64 = 3_600_000;

/// Bounds of the `[audit]` settings. A flush interval over a second would let a power cut take
/// more than a moment of answered decisions. A write-ahead log file's events stay in memory
/// until it is sealed, which caps its size; its age is capped so that queries see an event
/// within the hour.
const MAX_FLUSH_INTERVAL_MS: u64 = 1000;
const SEAL_AFTER_EVENTS: std::ops::RangeInclusive<usize> = 1..=1_000_000;
const SEAL_AFTER_BYTES: std::ops::RangeInclusive<u64> = (1 << 20)..=(1 << 30);
const SEAL_INTERVAL_S: std::ops::RangeInclusive<u64> = 1..=3600;
/// Retention keeps at least today's and yesterday's partitions, and at most a century.
const RETENTION_DAYS: std::ops::RangeInclusive<u32> = 1..=36_500;

/// Bounds of `audit.query_timeout_s`: a query that needs more than an hour belongs in a batch
/// job over the Parquet files, not in the server.
const QUERY_TIMEOUT_S: std::ops::RangeInclusive<u64> = 1..=3600;

/// Bounds of `audit.query_memory_mb`.
const QUERY_MEMORY_MB: std::ops::RangeInclusive<u64> = 16..=65_536;

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
    #[serde(default)]
    pub credentials: CredentialsConfig,
    #[serde(default)]
    pub proxy: ProxyConfig,
    #[serde(default)]
    pub dashboard: DashboardConfig,
    /// The directory of the file, against which relative paths resolve.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[dashboard]`: the web dashboard (docs/dashboard.md), served on a listener of its own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    #[serde(default = "default_dashboard_enabled")]
    pub enabled: bool,
    /// Loopback unless configured otherwise; beyond loopback every page needs a token.
    pub listen: Option<SocketAddr>,
    /// Whether every page needs the admin or audit token: always beyond loopback (where
    /// `false` is refused), and on loopback when set (a host shared with other users).
    pub require_token: Option<bool>,
    /// How often the server evaluates the compliance controls for the dashboard (and once at
    /// start); 0 turns the evaluation off.
    #[serde(default = "default_evaluate_every_s")]
    pub evaluate_every_s: u64,
}

impl Default for DashboardConfig {
    fn default() -> DashboardConfig {
        DashboardConfig {
            enabled: default_dashboard_enabled(),
            listen: None,
            require_token: None,
            evaluate_every_s: default_evaluate_every_s(),
        }
    }
}

fn default_dashboard_enabled() -> bool {
    true
}

fn default_evaluate_every_s() -> u64 {
    3600
}

/// Where the dashboard listens unless configured otherwise: beside the API's default port.
pub const DEFAULT_DASHBOARD_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8182);

/// Bounds of a nonzero `dashboard.evaluate_every_s`: an evaluation runs every control's query,
/// so more often than a minute only loads the store; less often than a week leaves the
/// dashboard's posture stale.
const EVALUATE_EVERY_S: std::ops::RangeInclusive<u64> = 60..=604_800;

/// Where the dashboard listens, when it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DashboardListen {
    pub addr: SocketAddr,
    /// Whether the configuration names the address (else it is the default, and another
    /// server on it only turns this dashboard off).
    pub configured: bool,
}

/// `[proxy]`: the proxy's listeners.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// `[[proxy.http]]`: one reverse-mode listener per target.
    #[serde(default)]
    pub http: Vec<HttpProxyConfig>,
    /// `[[proxy.postgres]]`: one wire-protocol listener per target.
    #[serde(default)]
    pub postgres: Vec<PostgresProxyConfig>,
}

/// A PostgreSQL listener: every connection on `listen` is decided for `target` and, when
/// allowed, relayed to `upstream` as the credential the policy names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresProxyConfig {
    pub target: String,
    pub listen: SocketAddr,
    /// The server's host.
    pub upstream_host: String,
    #[serde(default = "default_postgres_port")]
    pub upstream_port: u16,
    /// TLS to the upstream as for `[[credentials.postgres]]`: `verify-full` (the default off
    /// loopback) or `disable` (loopback only).
    pub upstream_tls: Option<PostgresTlsMode>,
    /// The CAs the upstream's certificate must chain to, with `verify-full`.
    pub ca_file: Option<PathBuf>,
    /// A certificate chain and its key (PEM) to offer clients TLS with; without them a
    /// client's SSLRequest is answered `N`.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// How long a credential issued to a caller is used again for its next connections, at
    /// most until 30 s before it expires and never past the caller's evidence; 0 issues one
    /// per connection.
    #[serde(default = "default_credential_reuse_s")]
    pub credential_reuse_s: u64,
}

/// A reverse-mode HTTP listener: every request on `listen` is decided for `target` and, when
/// allowed, forwarded to `upstream` with the credential injected.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProxyConfig {
    /// `reverse` (the default): one target behind the listener; `forward`: an explicit
    /// forward proxy (`HTTP_PROXY`) for the `http://` targets of the policy.
    #[serde(default)]
    pub mode: ProxyMode,
    /// Reverse mode: the target every request is decided for.
    pub target: Option<String>,
    /// Exactly one of `listen`, an address, and `listen_socket`, a Unix socket whose callers
    /// are attested by their connection (reverse mode only).
    pub listen: Option<SocketAddr>,
    pub listen_socket: Option<PathBuf>,
    /// Reverse mode: `https://host[:port][/base]`, or `http://` to a loopback address.
    pub upstream: Option<String>,
    /// Reverse mode: the header whose `Bearer TOKEN` (or token alone) is the caller's
    /// evidence (default `x-portcullis-evidence`); in forward mode it is `Proxy-Authorization`.
    pub evidence_header: Option<String>,
    /// `bearer` (the default), `header`, `query` or `basic`.
    #[serde(default)]
    pub inject: InjectMode,
    /// The header (`inject = "header"`) or query parameter (`inject = "query"`).
    pub inject_name: Option<String>,
    /// The user of `inject = "basic"`; the credential is the password.
    pub basic_user: Option<String>,
    /// A PEM bundle of the CAs the upstream's certificate must chain to, in place of the
    /// Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// How long a credential issued to a caller is used again for its next requests, at most
    /// until 30 s before it expires and never past the caller's evidence; 0 issues one per
    /// request.
    #[serde(default = "default_credential_reuse_s")]
    pub credential_reuse_s: u64,
    /// Seconds the upstream has to connect and send its response head; 504 after.
    #[serde(default = "default_upstream_timeout_s")]
    pub upstream_timeout_s: u64,
    /// Forward mode: send credentials to `http://` targets that are not on loopback, in the
    /// clear. Off, such requests are refused.
    #[serde(default)]
    pub allow_plaintext: bool,
}

fn default_credential_reuse_s() -> u64 {
    60
}

fn default_upstream_timeout_s() -> u64 {
    30
}

/// The longest `upstream_timeout_s`.
const MAX_UPSTREAM_TIMEOUT_S: u64 = 3600;

/// The longest `credential_reuse_s`.
const MAX_CREDENTIAL_REUSE_S: u64 = 3600;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InjectMode {
    #[default]
    Bearer,
    Header,
    Query,
    Basic,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyMode {
    #[default]
    Reverse,
    Forward,
}

const DEFAULT_EVIDENCE_HEADER: &str = "x-portcullis-evidence";

/// The most `[[proxy.http]]` listeners one server runs.
const MAX_HTTP_PROXIES: usize = 256;

impl HttpProxyConfig {
    /// Checks the listener and turns it into what the engine serves.
    fn spec(
        &self,
        roots: portcullis_engine::http::TrustRoots,
    ) -> Result<portcullis_engine::api::proxy::HttpProxySpec> {
        use portcullis_engine::api::proxy::{
            HttpProxySpec, Injection, ProxyHeaderName as HeaderName,
        };
        let forward = self.mode == ProxyMode::Forward;
        match (&self.listen, &self.listen_socket) {
            (Some(_), None) => {}
            (None, Some(_)) if forward => bail!(
                "a forward-mode listener takes `listen`, an address; its callers are attested by \
                 their tokens"
            ),
            (None, Some(path)) if !path.is_absolute() && path.as_os_str().is_empty() => {
                bail!("`listen_socket` is empty")
            }
            (None, Some(_)) => {}
            _ => bail!("give exactly one of `listen` and `listen_socket`"),
        }
        let (target, upstream) = match (forward, &self.target, &self.upstream) {
            (false, Some(target), Some(upstream)) => (target.clone(), upstream.as_str()),
            (false, _, _) => bail!("a reverse-mode listener needs `target` and `upstream`"),
            (true, None, None) => (String::new(), ""),
            (true, _, _) => bail!(
                "a forward-mode listener takes no `target` or `upstream`: each request names \
                 its own"
            ),
        };
        let (scheme, authority, base_path) = if forward {
            if self.ca_file.is_some() {
                bail!(
                    "a forward-mode listener reaches `http://` targets only; it takes no \
                     `ca_file`"
                );
            }
            (String::new(), String::new(), String::new())
        } else {
            upstream_parts(upstream, self.ca_file.is_some())?
        };
        let evidence_header = match (forward, &self.evidence_header) {
            (true, None) => HeaderName::from_static("proxy-authorization"),
            (true, Some(_)) => bail!(
                "a forward-mode listener reads the caller's evidence from \
                 `Proxy-Authorization`; leave `evidence_header` out"
            ),
            (false, configured) => {
                let name = configured.as_deref().unwrap_or(DEFAULT_EVIDENCE_HEADER);
                let header = HeaderName::from_bytes(name.as_bytes()).with_context(|| {
                    format!("`evidence_header = {name:?}` is not a header name")
                })?;
                if matches!(
                    header.as_str(),
                    "authorization" | "host" | "cookie" | "content-length"
                ) {
                    bail!(
                        "`evidence_header = {name:?}` is a header the request needs for itself; \
                         name one of its own, such as `{DEFAULT_EVIDENCE_HEADER}`"
                    );
                }
                header
            }
        };
        let named = |what: &str| {
            self.inject_name
                .clone()
                .filter(|name| !name.is_empty())
                .with_context(|| format!("`inject = \"{what}\"` needs `inject_name`"))
        };
        let inject = match self.inject {
            InjectMode::Bearer => Injection::Bearer,
            InjectMode::Header => {
                let name = named("header")?;
                let header = HeaderName::from_bytes(name.as_bytes())
                    .with_context(|| format!("`inject_name = {name:?}` is not a header name"))?;
                if header == evidence_header {
                    bail!("`inject_name` is the evidence header; they must differ");
                }
                Injection::Header(header)
            }
            InjectMode::Query => Injection::Query(named("query")?),
            InjectMode::Basic => Injection::Basic {
                user: self
                    .basic_user
                    .clone()
                    .filter(|user| !user.is_empty() && !user.contains(':'))
                    .context("`inject = \"basic\"` needs `basic_user`, without `:`")?,
            },
        };
        if self.credential_reuse_s > MAX_CREDENTIAL_REUSE_S {
            bail!(
                "`credential_reuse_s = {}` is over {MAX_CREDENTIAL_REUSE_S}",
                self.credential_reuse_s
            );
        }
        if !(1..=MAX_UPSTREAM_TIMEOUT_S).contains(&self.upstream_timeout_s) {
            bail!(
                "`upstream_timeout_s = {}` is outside 1..={MAX_UPSTREAM_TIMEOUT_S}",
                self.upstream_timeout_s
            );
        }
        if self.allow_plaintext && !forward {
            bail!(
                "`allow_plaintext` is for `mode = \"forward\"`; a reverse-mode upstream is \
                 `https`, or `http` on loopback"
            );
        }
        if self.inject != InjectMode::Basic && self.basic_user.is_some() {
            bail!("`basic_user` goes with `inject = \"basic\"`");
        }
        if matches!(self.inject, InjectMode::Bearer | InjectMode::Basic)
            && self.inject_name.is_some()
        {
            bail!("`inject_name` goes with `inject = \"header\"` or `\"query\"`");
        }
        Ok(HttpProxySpec {
            forward,
            target,
            upstream_scheme: scheme,
            upstream_authority: authority,
            upstream_base_path: base_path,
            evidence_header,
            inject,
            ca: roots,
            credential_reuse_s: self.credential_reuse_s,
            upstream_timeout: std::time::Duration::from_secs(self.upstream_timeout_s),
            allow_plaintext: self.allow_plaintext,
        })
    }
}

/// The scheme, `host:port` and base path of a reverse-mode upstream URL, checked.
fn upstream_parts(upstream: &str, has_ca_file: bool) -> Result<(String, String, String)> {
    portcullis_engine::http::check_url(upstream)?;
    let (scheme, rest) = upstream
        .split_once("://")
        .context("the upstream has no scheme")?;
    if rest.contains(['?', '#']) {
        bail!("the upstream `{upstream}` has a query or fragment; give its base URL");
    }
    let (authority, base_path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok() && !authority.ends_with(']'));
    let authority = if has_port {
        authority.to_owned()
    } else {
        let port = if scheme == "https" { 443 } else { 80 };
        format!("{authority}:{port}")
    };
    if scheme == "http" && has_ca_file {
        bail!("`ca_file` is for an `https` upstream; `{upstream}` is plain `http`");
    }
    Ok((
        scheme.to_owned(),
        authority,
        base_path.trim_end_matches('/').to_owned(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Loopback unless configured otherwise.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Seconds an HTTP client (of the API, and of the HTTP proxies) has to send a request's
    /// head, counted from when its connection is ready for one — accepted, or idle after an
    /// answer — after which the connection is closed.
    #[serde(default = "default_header_read_timeout_s")]
    pub header_read_timeout_s: u64,
    /// A file holding the bearer token of the admin API (`POST /v1/admin/reload`, explained
    /// decisions, and SQL over the audit store), read at start; without it the admin API is
    /// disabled.
    pub admin_token_file: Option<PathBuf>,
    /// A file holding a bearer token that reads the audit store (`POST /v1/audit/query`) and
    /// nothing else: for auditors and dashboards, who need no power over the policy.
    pub audit_token_file: Option<PathBuf>,
    /// A Unix socket on which local processes ask for decisions and credentials, attested by
    /// the connection's peer credentials instead of a token (docs/attestation.md).
    pub local_socket: Option<PathBuf>,
}

/// `[credentials]`: how the server mints and signs credentials (docs/credentials.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    /// The `iss` of minted tokens: the URL under which targets reach this server's
    /// `/.well-known/jwks.json`. Default: `http://` and the listen address.
    pub issuer: Option<String>,
    /// The longest a minted token may live; a credential with a longer `ttl` is not issued,
    /// and a signing key stays published this long after it stops signing.
    #[serde(default = "default_max_ttl_s")]
    pub max_ttl_s: u64,
    /// A new signing key is made when the newest is this many days old.
    #[serde(default = "default_rotate_after_days")]
    pub rotate_after_days: u64,
    /// A new key is published this long before it signs, so that verifiers that cache the
    /// JWKS have it first.
    #[serde(default = "default_publish_ahead_s")]
    pub publish_ahead_s: u64,
    /// The OAuth clients `oauth_client_credentials` credentials act as, with their secrets.
    #[serde(default)]
    pub oauth_clients: Vec<OAuthClientConfig>,
    /// The PostgreSQL servers `postgres_role` credentials make roles on, by target.
    #[serde(default)]
    pub postgres: Vec<PostgresAdminConfig>,
    /// How often expired `postgres_role` roles are looked for and dropped.
    #[serde(default = "default_role_drop_interval_s")]
    pub role_drop_interval_s: u64,
}

/// `[[credentials.postgres]]`: how to reach the server of a target as a role that may create
/// roles and grant the policy's roles (`CREATEROLE`, with `ADMIN OPTION` on those roles).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresAdminConfig {
    /// The Gate target whose `postgres_role` credentials this server makes.
    pub target: String,
    pub host: String,
    #[serde(default = "default_postgres_port")]
    pub port: u16,
    /// The database named in the URIs handed out (and connected to as the administrator).
    #[serde(default = "default_postgres_database")]
    pub database: String,
    pub admin_user: String,
    pub admin_password_file: PathBuf,
    /// `verify-full`: TLS, the server's certificate chaining to `ca_file` (or the Mozilla
    /// roots) and naming `host`; `disable`: none, for a loopback host or a Unix socket only.
    /// Default: `disable` there, `verify-full` anywhere else.
    pub tls: Option<PostgresTlsMode>,
    /// A PEM bundle of the CAs the server's certificate must chain to, with `verify-full`.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PostgresTlsMode {
    Disable,
    VerifyFull,
}

impl PostgresAdminConfig {
    /// `tls`, or its default for the host.
    pub fn tls_mode(&self) -> PostgresTlsMode {
        let local =
            self.host.starts_with('/') || portcullis_lang::net::is_loopback_authority(&self.host);
        match self.tls {
            Some(mode) => mode,
            None if local => PostgresTlsMode::Disable,
            None => PostgresTlsMode::VerifyFull,
        }
    }
}

fn default_postgres_port() -> u16 {
    5432
}

fn default_postgres_database() -> String {
    "postgres".to_owned()
}

fn default_role_drop_interval_s() -> u64 {
    30
}

const ROLE_DROP_INTERVAL_S: std::ops::RangeInclusive<u64> = 1..=3600;

/// `[[credentials.oauth_clients]]`: a client of a token endpoint, and the file holding its
/// secret (owner-only; read at start).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthClientConfig {
    pub token_url: String,
    pub client_id: String,
    pub client_secret_file: PathBuf,
    /// A PEM bundle of the CAs the endpoint's certificate must chain to, in place of the
    /// Mozilla roots.
    pub ca_file: Option<PathBuf>,
}

/// The longest client secret read.
const MAX_CLIENT_SECRET_BYTES: u64 = 4096;

impl Default for CredentialsConfig {
    fn default() -> CredentialsConfig {
        CredentialsConfig {
            issuer: None,
            max_ttl_s: default_max_ttl_s(),
            rotate_after_days: default_rotate_after_days(),
            publish_ahead_s: default_publish_ahead_s(),
            oauth_clients: Vec::new(),
            postgres: Vec::new(),
            role_drop_interval_s: default_role_drop_interval_s(),
        }
    }
}

fn default_max_ttl_s() -> u64 {
    86_400
}

fn default_rotate_after_days() -> u64 {
    30
}

fn default_publish_ahead_s() -> u64 {
    3600
}

/// Bounds of `[credentials]`: tokens live a minute to a week, keys rotate after a day to a
/// year, and are published up to a week ahead.
const MAX_TTL_S: std::ops::RangeInclusive<u64> = 60..=604_800;
const ROTATE_AFTER_DAYS: std::ops::RangeInclusive<u64> = 1..=365;
const MAX_PUBLISH_AHEAD_S: u64 = 604_800;

impl CredentialsConfig {
    fn validate(&self) -> Result<()> {
        if !MAX_TTL_S.contains(&self.max_ttl_s) {
            bail!(
                "`credentials.max_ttl_s = {}` is outside {}..={}",
                self.max_ttl_s,
                MAX_TTL_S.start(),
                MAX_TTL_S.end()
            );
        }
        if !ROTATE_AFTER_DAYS.contains(&self.rotate_after_days) {
            bail!(
                "`credentials.rotate_after_days = {}` is outside {}..={}",
                self.rotate_after_days,
                ROTATE_AFTER_DAYS.start(),
                ROTATE_AFTER_DAYS.end()
            );
        }
        if self.publish_ahead_s > MAX_PUBLISH_AHEAD_S {
            bail!(
                "`credentials.publish_ahead_s = {}` is over {MAX_PUBLISH_AHEAD_S}",
                self.publish_ahead_s
            );
        }
        if let Some(issuer) = &self.issuer {
            let host = issuer
                .strip_prefix("https://")
                .or_else(|| issuer.strip_prefix("http://"))
                .and_then(|rest| rest.split(['/', '?', '#']).next())
                .unwrap_or_default();
            if host.is_empty() || host.contains('@') {
                bail!(
                    "`credentials.issuer = {issuer:?}` is not an `https://` or `http://` URL \
                     with a host"
                );
            }
        }
        if !ROLE_DROP_INTERVAL_S.contains(&self.role_drop_interval_s) {
            bail!(
                "`credentials.role_drop_interval_s = {}` is outside {}..={}",
                self.role_drop_interval_s,
                ROLE_DROP_INTERVAL_S.start(),
                ROLE_DROP_INTERVAL_S.end()
            );
        }
        for (idx, server) in self.postgres.iter().enumerate() {
            let socket = server.host.starts_with('/');
            let loopback = portcullis_lang::net::is_loopback_authority(&server.host);
            match (server.tls, socket || loopback) {
                (Some(PostgresTlsMode::Disable), false) => bail!(
                    "`[[credentials.postgres]]` of target `{}`: `tls = \"disable\"` is for a \
                     loopback host or a Unix socket; the administrator's password would cross \
                     the network to `{}` in the clear",
                    server.target,
                    server.host
                ),
                (Some(PostgresTlsMode::VerifyFull), _) if socket => bail!(
                    "`[[credentials.postgres]]` of target `{}`: `{}` is a Unix socket, which \
                     takes no TLS; leave `tls` out",
                    server.target,
                    server.host
                ),
                _ => {}
            }
            if server.ca_file.is_some() && server.tls_mode() == PostgresTlsMode::Disable {
                bail!(
                    "`[[credentials.postgres]]` of target `{}`: `ca_file` goes with \
                     `tls = \"verify-full\"`",
                    server.target
                );
            }
            if server.port == 0 {
                bail!(
                    "`[[credentials.postgres]]` of target `{}`: `port = 0` is not a port",
                    server.target
                );
            }
            if self
                .postgres
                .iter()
                .skip(idx + 1)
                .any(|other| other.target == server.target)
            {
                bail!(
                    "`[[credentials.postgres]]`: target `{}` is given twice",
                    server.target
                );
            }
        }
        for (idx, client) in self.oauth_clients.iter().enumerate() {
            portcullis_engine::http::check_url(&client.token_url)
                .with_context(|| format!("`[[credentials.oauth_clients]]` {}", idx + 1))?;
            let twice = self.oauth_clients.iter().skip(idx + 1).any(|other| {
                other.token_url == client.token_url && other.client_id == client.client_id
            });
            if twice {
                bail!(
                    "`[[credentials.oauth_clients]]`: client `{}` at `{}` is given twice",
                    client.client_id,
                    client.token_url
                );
            }
        }
        Ok(())
    }

    /// The key ring's schedule.
    pub fn rotation(&self) -> portcullis_engine::credentials::RotationPolicy {
        let seconds = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        portcullis_engine::credentials::RotationPolicy {
            rotate_after_s: seconds(self.rotate_after_days.saturating_mul(86_400)),
            publish_ahead_s: seconds(self.publish_ahead_s),
            max_ttl_s: seconds(self.max_ttl_s),
        }
    }
}

impl Config {
    /// `server.local_socket`, resolved against the configuration's directory.
    pub fn local_socket(&self) -> Option<PathBuf> {
        self.server
            .local_socket
            .as_ref()
            .map(|path| self.resolve(path))
    }

    /// The administrative connections of `postgres_role` credentials, with their passwords.
    pub fn postgres_servers(
        &self,
    ) -> Result<Vec<portcullis_engine::postgres_roles::PostgresServer>> {
        self.credentials
            .postgres
            .iter()
            .map(|server| {
                let tls = match server.tls_mode() {
                    PostgresTlsMode::Disable => None,
                    PostgresTlsMode::VerifyFull => {
                        let roots =
                            self.trust_roots(server.ca_file.as_deref())
                                .with_context(|| {
                                    format!(
                                        "`[[credentials.postgres]]` of target `{}`",
                                        server.target
                                    )
                                })?;
                        Some(
                            portcullis_engine::postgres_tls::MakeRustls::new(&roots)
                                .map_err(anyhow::Error::msg)?,
                        )
                    }
                };
                let password =
                    self.read_secret(&server.admin_password_file)
                        .with_context(|| {
                            format!(
                                "`[[credentials.postgres]]` of target `{}`: its password",
                                server.target
                            )
                        })?;
                Ok(portcullis_engine::postgres_roles::PostgresServer {
                    target: server.target.clone(),
                    host: server.host.clone(),
                    port: server.port,
                    database: server.database.clone(),
                    admin_user: server.admin_user.clone(),
                    admin_password: password,
                    tls,
                })
            })
            .collect()
    }

    /// The OAuth clients with their secrets, read from their files.
    pub fn oauth_clients(&self) -> Result<Vec<portcullis_engine::credentials::OAuthClient>> {
        self.credentials
            .oauth_clients
            .iter()
            .map(|client| {
                let secret = self
                    .read_secret(&client.client_secret_file)
                    .with_context(|| format!("OAuth client `{}`: its secret", client.client_id))?;
                let ca = self
                    .trust_roots(client.ca_file.as_deref())
                    .with_context(|| format!("OAuth client `{}`", client.client_id))?;
                Ok(portcullis_engine::credentials::OAuthClient {
                    token_url: client.token_url.clone(),
                    client_id: client.client_id.clone(),
                    secret,
                    ca,
                })
            })
            .collect()
    }

    /// A secret from a file (its trailing newline dropped), which must not be empty; warns
    /// when other users can read the file.
    fn read_secret(
        &self,
        file: &Path,
    ) -> Result<portcullis_engine::credentials::Zeroizing<String>> {
        let path = self.resolve(file);
        let text = read_bounded(&path, MAX_CLIENT_SECRET_BYTES)
            .with_context(|| format!("cannot read `{}`", path.display()))?;
        if readable_by_others(&path) {
            tracing::warn!(
                file = %path.display(),
                "a secret file is readable by other users; `chmod 600` it"
            );
        }
        let secret = text.trim_end_matches(['\n', '\r']);
        if secret.is_empty() {
            bail!("`{}` is empty", path.display());
        }
        Ok(secret.to_owned().into())
    }
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: default_listen(),
            max_body_bytes: default_max_body_bytes(),
            header_read_timeout_s: default_header_read_timeout_s(),
            admin_token_file: None,
            audit_token_file: None,
            local_socket: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8181))
}

fn default_max_body_bytes() -> usize {
    portcullis_engine::api::DEFAULT_MAX_BODY_BYTES
}

fn default_header_read_timeout_s() -> u64 {
    portcullis_engine::api::listen::DEFAULT_HEADER_READ_TIMEOUT.as_secs()
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    pub data_dir: Option<PathBuf>,
    /// This engine's name in access events; the host name when unset.
    pub node: Option<String>,
    /// How long a recorded event may stay written but not synced to the disk: 0 syncs before
    /// each decision is answered; more syncs in the background at this interval, so that a
    /// power cut loses at most this much (a killed process loses nothing either way).
    #[serde(default)]
    pub flush_interval_ms: u64,
    /// The write-ahead log file is closed and sealed into Parquet when it holds this many
    /// events, …
    #[serde(default = "default_seal_after_events")]
    pub seal_after_events: usize,
    /// … or this many bytes, …
    #[serde(default = "default_seal_after_bytes")]
    pub seal_after_bytes: u64,
    /// … or when its first event is this many seconds old.
    #[serde(default = "default_seal_interval_s")]
    pub seal_interval_s: u64,
    /// Remove the segments of dates more than this many days before today (UTC), recording
    /// the removal in the integrity manifest first; unset keeps every segment.
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// How long one SQL query may run, in seconds (`portcullis audit query` and
    /// `POST /v1/audit/query`).
    #[serde(default = "default_query_timeout_s")]
    pub query_timeout_s: u64,
    /// How much memory one SQL query's sorts, joins and aggregations may hold, in MiB.
    #[serde(default = "default_query_memory_mb")]
    pub query_memory_mb: u64,
}

impl Default for AuditConfig {
    fn default() -> AuditConfig {
        AuditConfig {
            data_dir: None,
            node: None,
            flush_interval_ms: 0,
            seal_after_events: default_seal_after_events(),
            seal_after_bytes: default_seal_after_bytes(),
            seal_interval_s: default_seal_interval_s(),
            retention_days: None,
            query_timeout_s: default_query_timeout_s(),
            query_memory_mb: default_query_memory_mb(),
        }
    }
}

fn default_query_timeout_s() -> u64 {
    QueryLimits::default().timeout.as_secs()
}

fn default_query_memory_mb() -> u64 {
    (QueryLimits::default().memory_bytes / (1024 * 1024)) as u64
}

fn default_seal_after_events() -> usize {
    AuditOptions::default().seal_after_events
}

fn default_seal_after_bytes() -> u64 {
    AuditOptions::default().seal_after_bytes
}

fn default_seal_interval_s() -> u64 {
    AuditOptions::default().seal_interval.as_secs()
}

impl AuditConfig {
    fn validate(&self) -> Result<()> {
        let flush_ms = self.flush_interval_ms;
        if flush_ms > MAX_FLUSH_INTERVAL_MS {
            bail!(
                "`audit.flush_interval_ms = {flush_ms}` is over {MAX_FLUSH_INTERVAL_MS}: a power \
                 cut would lose more than a second of decisions; 0 syncs before each answer"
            );
        }
        let events = self.seal_after_events;
        if !SEAL_AFTER_EVENTS.contains(&events) {
            bail!(
                "`audit.seal_after_events = {events}` is outside {}..={}",
                SEAL_AFTER_EVENTS.start(),
                SEAL_AFTER_EVENTS.end()
            );
        }
        let bytes = self.seal_after_bytes;
        if !SEAL_AFTER_BYTES.contains(&bytes) {
            bail!(
                "`audit.seal_after_bytes = {bytes}` is outside {}..={} (1 MiB to 1 GiB)",
                SEAL_AFTER_BYTES.start(),
                SEAL_AFTER_BYTES.end()
            );
        }
        let seconds = self.seal_interval_s;
        if !SEAL_INTERVAL_S.contains(&seconds) {
            bail!(
                "`audit.seal_interval_s = {seconds}` is outside {}..={}",
                SEAL_INTERVAL_S.start(),
                SEAL_INTERVAL_S.end()
            );
        }
        let timeout = self.query_timeout_s;
        if !QUERY_TIMEOUT_S.contains(&timeout) {
            bail!(
                "`audit.query_timeout_s = {timeout}` is outside {}..={}",
                QUERY_TIMEOUT_S.start(),
                QUERY_TIMEOUT_S.end()
            );
        }
        let memory = self.query_memory_mb;
        if !QUERY_MEMORY_MB.contains(&memory) {
            bail!(
                "`audit.query_memory_mb = {memory}` is outside {}..={}",
                QUERY_MEMORY_MB.start(),
                QUERY_MEMORY_MB.end()
            );
        }
        if let Some(days) = self.retention_days
            && !RETENTION_DAYS.contains(&days)
        {
            bail!(
                "`audit.retention_days = {days}` is outside {}..={}; leave it out to keep every \
                 segment",
                RETENTION_DAYS.start(),
                RETENTION_DAYS.end()
            );
        }
        Ok(())
    }

    /// The audit store's options, for the node named `node`.
    pub fn options(&self, node: String) -> AuditOptions {
        AuditOptions {
            node,
            flush_interval: Duration::from_millis(self.flush_interval_ms),
            seal_after_events: self.seal_after_events,
            seal_after_bytes: self.seal_after_bytes,
            seal_interval: Duration::from_secs(self.seal_interval_s),
            retention_days: self.retention_days,
        }
    }

    /// The limits every SQL query over the store runs under.
    pub fn query_limits(&self) -> QueryLimits {
        QueryLimits {
            timeout: Duration::from_secs(self.query_timeout_s),
            memory_bytes: usize::try_from(self.query_memory_mb.saturating_mul(1024 * 1024))
                .unwrap_or(usize::MAX),
            ..QueryLimits::default()
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustProviderConfig {
    pub name: String,
    /// `github`, `gitlab`, `kubernetes`, `terraform`, `spiffe` or `oidc`.
    pub kind: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    /// Exactly one of `jwks_file`, `jwks_url` and `jwks_discovery = true`: where the keys come
    /// from.
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    #[serde(default)]
    pub jwks_discovery: bool,
    /// Remote keys are fetched at most once per this many seconds on unknown `kid`s.
    #[serde(default = "default_jwks_refresh_min_s")]
    pub jwks_refresh_min_s: u64,
    /// Remote keys are fetched again once they are this many seconds old.
    #[serde(default = "default_jwks_max_age_s")]
    pub jwks_max_age_s: u64,
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
    /// A PEM bundle of the CAs an `https` issuer's certificate must chain to when its keys are
    /// fetched, in place of the Mozilla roots: a cluster's CA, a company's.
    pub ca_file: Option<PathBuf>,
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

fn default_jwks_refresh_min_s() -> u64 {
    portcullis_engine::attest::DEFAULT_JWKS_REFRESH_MIN.as_secs()
}

fn default_jwks_max_age_s() -> u64 {
    portcullis_engine::attest::DEFAULT_JWKS_MAX_AGE.as_secs()
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
        let header_s = self.server.header_read_timeout_s;
        if !(MIN_HEADER_READ_TIMEOUT_S..=MAX_HEADER_READ_TIMEOUT_S).contains(&header_s) {
            bail!(
                "`server.header_read_timeout_s = {header_s}` is outside \
                 {MIN_HEADER_READ_TIMEOUT_S}..={MAX_HEADER_READ_TIMEOUT_S}"
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
        self.audit.validate()?;
        self.credentials.validate()?;
        self.validate_dashboard()?;
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
                bail!(
                    "trust provider `{}`: kind `{kind}` is not a token issuer; local processes \
                     are attested on the Unix socket (`server.local_socket`), not by a trust \
                     provider",
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

    fn validate_dashboard(&self) -> Result<()> {
        let every = self.dashboard.evaluate_every_s;
        if every != 0 && !EVALUATE_EVERY_S.contains(&every) {
            bail!(
                "`dashboard.evaluate_every_s = {every}` is outside {}..={}; 0 turns the \
                 evaluation off",
                EVALUATE_EVERY_S.start(),
                EVALUATE_EVERY_S.end()
            );
        }
        let Some(listen) = self.dashboard_listen() else {
            return Ok(());
        };
        let beyond_loopback = !listen.addr.ip().is_loopback();
        if beyond_loopback && self.dashboard.require_token == Some(false) {
            bail!(
                "`dashboard.require_token = false` cannot hold for {}, beyond loopback: there \
                 every page needs the admin or audit token",
                listen.addr
            );
        }
        if self.dashboard_requires_token() && self.server.admin_token_file.is_none() {
            let way_out = if beyond_loopback {
                "or keep the dashboard on loopback, or set `[dashboard] enabled = false`"
            } else {
                "or remove `[dashboard] require_token`"
            };
            bail!(
                "the dashboard on {} requires a token{}, which needs `[server] \
                 admin_token_file`: every page then asks for the admin or audit token; {way_out}",
                listen.addr,
                if beyond_loopback {
                    " beyond loopback"
                } else {
                    " (`require_token = true`)"
                }
            );
        }
        Ok(())
    }

    /// Where the dashboard listens; `None` when it is off.
    pub fn dashboard_listen(&self) -> Option<DashboardListen> {
        if !self.dashboard.enabled {
            return None;
        }
        Some(match self.dashboard.listen {
            Some(addr) => DashboardListen {
                addr,
                configured: true,
            },
            None => DashboardListen {
                addr: DEFAULT_DASHBOARD_LISTEN,
                configured: false,
            },
        })
    }

    /// Whether every page of the dashboard needs a token: beyond loopback, or when the
    /// configuration says so.
    pub fn dashboard_requires_token(&self) -> bool {
        let beyond_loopback = self
            .dashboard_listen()
            .is_some_and(|listen| !listen.addr.ip().is_loopback());
        beyond_loopback || self.dashboard.require_token == Some(true)
    }

    /// How often the server evaluates the compliance controls; `None` when it does not.
    pub fn evaluate_every(&self) -> Option<Duration> {
        let every = self.dashboard.evaluate_every_s;
        (self.dashboard.enabled && every > 0).then(|| Duration::from_secs(every))
    }

    /// `path` resolved against the configuration file's directory.
    /// Refuses two listeners on one address or Unix socket, naming both, rather than leave it
    /// to the second bind (which would blame "another server").
    pub fn check_listeners(&self) -> Result<()> {
        let http = self
            .proxy
            .http
            .iter()
            .enumerate()
            .flat_map(|(idx, listener)| {
                let name = format!("`[[proxy.http]]` {}", idx + 1);
                let tcp = listener.listen.map(|addr| (addr.to_string(), name.clone()));
                let unix = listener
                    .listen_socket
                    .as_ref()
                    .map(|path| (self.resolve(path).display().to_string(), name));
                tcp.into_iter().chain(unix)
            });
        let postgres = self
            .proxy
            .postgres
            .iter()
            .enumerate()
            .map(|(idx, listener)| {
                (
                    listener.listen.to_string(),
                    format!("`[[proxy.postgres]]` {}", idx + 1),
                )
            });
        let local = self.local_socket().map(|path| {
            (
                path.display().to_string(),
                "`server.local_socket`".to_owned(),
            )
        });
        // Port 0 is a fresh port for each listener, never a clash.
        let dashboard = self
            .dashboard_listen()
            .filter(|listen| listen.configured && listen.addr.port() != 0)
            .map(|listen| (listen.addr.to_string(), "`[dashboard] listen`".to_owned()));
        let mut seen: std::collections::HashMap<String, String> = std::collections::HashMap::new();
        for (place, name) in http.chain(postgres).chain(local).chain(dashboard) {
            if let Some(first) = seen.get(&place) {
                bail!(
                    "{first} and {name} both listen on `{place}`; give each listener a place \
                     of its own"
                );
            }
            seen.insert(place, name);
        }
        Ok(())
    }

    /// The proxy's HTTP listeners, checked.
    pub fn http_proxies(&self) -> Result<Vec<portcullis_engine::api::proxy::HttpProxySpec>> {
        if self.proxy.http.len() > MAX_HTTP_PROXIES {
            bail!("more than {MAX_HTTP_PROXIES} `[[proxy.http]]` listeners");
        }
        self.proxy
            .http
            .iter()
            .enumerate()
            .map(|(idx, listener)| {
                self.trust_roots(listener.ca_file.as_deref())
                    .and_then(|roots| listener.spec(roots))
                    .with_context(|| {
                        format!(
                            "`[[proxy.http]]` {} (target `{}`)",
                            idx + 1,
                            listener.target.as_deref().unwrap_or("any, forward mode")
                        )
                    })
            })
            .collect()
    }

    /// One sentence for each `[[proxy.postgres]]` whose upstream is not where
    /// `[[credentials.postgres]]` makes its target's roles: a role made on one server does not
    /// log in to another. Hosts are compared by name (loopback names alike), so two names of
    /// one cluster, or a proxy in front of it, are named too; a Unix socket is not compared.
    pub fn postgres_upstream_mismatches(&self) -> Vec<String> {
        let loopback = portcullis_lang::net::is_loopback_authority;
        let same_host =
            |a: &str, b: &str| a.eq_ignore_ascii_case(b) || (loopback(a) && loopback(b));
        let mut mismatches = Vec::new();
        for (idx, listener) in self.proxy.postgres.iter().enumerate() {
            let Some(server) = self
                .credentials
                .postgres
                .iter()
                .find(|server| server.target == listener.target)
            else {
                continue;
            };
            if server.host.starts_with('/') {
                continue;
            }
            if !same_host(&listener.upstream_host, &server.host)
                || listener.upstream_port != server.port
            {
                mismatches.push(format!(
                    "`[[proxy.postgres]]` {} (target `{}`) connects to `{}:{}`, but \
                     `[[credentials.postgres]]` makes the target's roles on `{}:{}`: unless both \
                     reach one PostgreSQL cluster, the roles it issues will not log in",
                    idx + 1,
                    listener.target,
                    listener.upstream_host,
                    listener.upstream_port,
                    server.host,
                    server.port
                ));
            }
        }
        mismatches
    }

    /// The proxy's PostgreSQL listeners, checked, their TLS read.
    pub fn postgres_proxies(
        &self,
    ) -> Result<Vec<portcullis_engine::api::proxy_pg::PostgresProxySpec>> {
        self.proxy
            .postgres
            .iter()
            .enumerate()
            .map(|(idx, listener)| {
                self.postgres_proxy(listener).with_context(|| {
                    format!(
                        "`[[proxy.postgres]]` {} (target `{}`)",
                        idx + 1,
                        listener.target
                    )
                })
            })
            .collect()
    }

    fn postgres_proxy(
        &self,
        listener: &PostgresProxyConfig,
    ) -> Result<portcullis_engine::api::proxy_pg::PostgresProxySpec> {
        use portcullis_engine::postgres_tls::{client_config, server_config};
        use std::sync::Arc;
        let loopback = portcullis_lang::net::is_loopback_authority(&listener.upstream_host);
        let mode = match listener.upstream_tls {
            Some(mode) => mode,
            None if loopback => PostgresTlsMode::Disable,
            None => PostgresTlsMode::VerifyFull,
        };
        if listener.upstream_port == 0 {
            bail!("`upstream_port = 0` is not a port");
        }
        if listener.credential_reuse_s > MAX_CREDENTIAL_REUSE_S {
            bail!(
                "`credential_reuse_s = {}` is over {MAX_CREDENTIAL_REUSE_S}",
                listener.credential_reuse_s
            );
        }
        let upstream_tls = match mode {
            PostgresTlsMode::Disable if !loopback => bail!(
                "`upstream_tls = \"disable\"` is for a loopback upstream; the issued credential \
                 would cross the network to `{}` in the clear",
                listener.upstream_host
            ),
            PostgresTlsMode::Disable => {
                if listener.ca_file.is_some() {
                    bail!("`ca_file` goes with `upstream_tls = \"verify-full\"`");
                }
                None
            }
            PostgresTlsMode::VerifyFull => {
                let roots = self.trust_roots(listener.ca_file.as_deref())?;
                Some(Arc::new(client_config(&roots).map_err(anyhow::Error::msg)?))
            }
        };
        let client_tls = match (&listener.tls_cert_file, &listener.tls_key_file) {
            (Some(cert), Some(key)) => Some(Arc::new(
                server_config(&self.resolve(cert), &self.resolve(key))
                    .map_err(anyhow::Error::msg)?,
            )),
            (None, None) => None,
            _ => bail!("give both `tls_cert_file` and `tls_key_file`, or neither"),
        };
        Ok(portcullis_engine::api::proxy_pg::PostgresProxySpec {
            target: listener.target.clone(),
            upstream_host: listener.upstream_host.clone(),
            upstream_port: listener.upstream_port,
            upstream_tls,
            client_tls,
            credential_reuse_s: listener.credential_reuse_s,
        })
    }

    /// The CAs of a `ca_file` (relative to the configuration file), or the Mozilla roots.
    fn trust_roots(&self, ca_file: Option<&Path>) -> Result<portcullis_engine::http::TrustRoots> {
        match ca_file {
            None => Ok(portcullis_engine::http::TrustRoots::default()),
            Some(file) => portcullis_engine::http::TrustRoots::from_pem_file(&self.resolve(file))
                .map_err(anyhow::Error::msg),
        }
    }

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
        match &self.server.admin_token_file {
            Some(file) => self.token_file("admin", file).map(Some),
            None => Ok(None),
        }
    }

    /// The audit reader's token from `server.audit_token_file`, when one is configured; it
    /// must differ from the admin token, or it would grant the admin API.
    pub fn audit_token(&self) -> Result<Option<AdminTokenFile>> {
        let Some(file) = &self.server.audit_token_file else {
            return Ok(None);
        };
        let audit = self.token_file("audit", file)?;
        if let Some(admin) = self.admin_token()?
            && admin.token == audit.token
        {
            bail!(
                "the audit token in `{}` is the admin token of `{}`; give auditors a token of \
                 their own, which reads the audit store and nothing else",
                audit.path.display(),
                admin.path.display()
            );
        }
        Ok(Some(audit))
    }

    fn token_file(&self, which: &str, file: &Path) -> Result<AdminTokenFile> {
        let path = self.resolve(file);
        let text = read_bounded(&path, MAX_ADMIN_TOKEN_BYTES)
            .with_context(|| format!("cannot read the {which} token file `{}`", path.display()))?;
        let token = text.trim();
        let length = token.chars().count();
        if length < MIN_ADMIN_TOKEN_CHARS {
            bail!(
                "the {which} token in `{}` is {length} characters long; at least \
                 {MIN_ADMIN_TOKEN_CHARS} are required (`openssl rand -hex 32` makes one)",
                path.display()
            );
        }
        if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
            bail!(
                "the {which} token in `{}` holds a space or a character beyond printable ASCII, \
                 which an `authorization` header cannot carry",
                path.display()
            );
        }
        Ok(AdminTokenFile {
            readable_by_others: readable_by_others(&path),
            token: token.to_owned(),
            path,
        })
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
        let jwks = match (
            &provider.jwks_file,
            &provider.jwks_url,
            provider.jwks_discovery,
        ) {
            (Some(file), None, false) => {
                let path = self.resolve(file);
                let text = read_bounded(&path, MAX_JWKS_BYTES).with_context(|| {
                    format!(
                        "trust provider `{}`: cannot read JWKS `{}`",
                        provider.name,
                        path.display()
                    )
                })?;
                JwksSource::Document(text)
            }
            (None, Some(url), false) => JwksSource::Url(url.clone()),
            (None, None, true) => JwksSource::Discovery,
            _ => bail!(
                "trust provider `{}`: give exactly one of `jwks_file`, `jwks_url` and \
                 `jwks_discovery = true`",
                provider.name
            ),
        };
        if !(1..=MAX_JWKS_REFRESH_MIN_S).contains(&provider.jwks_refresh_min_s) {
            bail!(
                "trust provider `{}`: `jwks_refresh_min_s` is {} s; it must be 1 to \
                 {MAX_JWKS_REFRESH_MIN_S} s, so that unknown `kid`s cannot make it fetch at will",
                provider.name,
                provider.jwks_refresh_min_s
            );
        }
        if !(MIN_JWKS_MAX_AGE_S..=MAX_JWKS_MAX_AGE_S).contains(&provider.jwks_max_age_s) {
            bail!(
                "trust provider `{}`: `jwks_max_age_s` is {} s; it must be {MIN_JWKS_MAX_AGE_S} \
                 to {MAX_JWKS_MAX_AGE_S} s",
                provider.name,
                provider.jwks_max_age_s
            );
        }
        if provider.ca_file.is_some() && provider.jwks_file.is_some() {
            bail!(
                "trust provider `{}`: `ca_file` is for keys fetched over `https`; this one's \
                 are read from `jwks_file`",
                provider.name
            );
        }
        let fetched_from = match &jwks {
            JwksSource::Url(url) => Some(url.as_str()),
            JwksSource::Discovery => Some(provider.issuer.as_str()),
            JwksSource::Document(_) => None,
        };
        if let Some(url) = fetched_from.filter(|url| url.starts_with("http://"))
            && provider.ca_file.is_some()
        {
            bail!(
                "trust provider `{}`: `ca_file` is for keys fetched over `https`; `{url}` is \
                 plain `http`",
                provider.name
            );
        }
        let ca = self
            .trust_roots(provider.ca_file.as_deref())
            .with_context(|| format!("trust provider `{}`", provider.name))?;
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
            jwks,
            jwks_refresh_min: Duration::from_secs(provider.jwks_refresh_min_s),
            jwks_max_age: Duration::from_secs(provider.jwks_max_age_s),
            leeway_s: provider.leeway_s,
            custom_claims,
            trust_domain: provider.trust_domain.clone(),
            ca,
            example_only: provider.example_only,
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

/// Reads a UTF-8 file, refusing one larger than `limit` bytes and anything but a regular
/// file (a pipe or a device would have no size to check). The limit holds for what is read,
/// not only for the size the file had when it was opened.
pub fn read_bounded(path: &Path, limit: u64) -> Result<String> {
    use std::io::Read as _;

    let file = std::fs::File::open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        bail!("it is not a regular file");
    }
    if metadata.len() > limit {
        bail!("the file is {} bytes; the limit is {limit}", metadata.len());
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        bail!("the file grew past the limit of {limit} bytes while it was read");
    }
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("it is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use portcullis_engine::attest::TrustProviderSpec;

    use super::*;

    #[test]
    fn bounded_reads_refuse_devices_and_files_over_the_limit() {
        let error = read_bounded(Path::new("/dev/zero"), 1024).unwrap_err();
        assert!(error.to_string().contains("not a regular file"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.toml");
        std::fs::write(&path, "x".repeat(2048)).unwrap();
        let error = read_bounded(&path, 1024).unwrap_err();
        assert!(error.to_string().contains("the limit is 1024"), "{error}");
        assert_eq!(read_bounded(&path, 4096).unwrap().len(), 2048);
    }

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

    #[test]
    fn proxy_listeners_are_checked_before_they_listen() {
        let check = |extra: &str| {
            let text = format!(
                "[policy]\ndir = \"examples/policies\"\n[[proxy.http]]\ntarget = \"billing\"\n\
                 listen = \"127.0.0.1:9101\"\n{extra}"
            );
            let mut config: Config = toml::from_str(&text)?;
            config.base_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            config.validate()?;
            config.http_proxies()
        };
        let spec = check("upstream = \"https://billing.internal/api/\"").unwrap();
        assert_eq!(spec[0].upstream_authority, "billing.internal:443");
        assert_eq!(spec[0].upstream_base_path, "/api");
        assert_eq!(spec[0].evidence_header.as_str(), "x-portcullis-evidence");
        let spec = check(
            "upstream = \"http://127.0.0.1:8080\"\ninject = \"query\"\ninject_name = \"key\"",
        )
        .unwrap();
        assert_eq!(spec[0].upstream_authority, "127.0.0.1:8080");
        for (extra, says) in [
            (
                "upstream = \"http://billing.internal\"",
                "only from a loopback address",
            ),
            (
                "upstream = \"https://b/api?x=1\"",
                "has a query or fragment",
            ),
            (
                "upstream = \"https://b\"\ninject = \"header\"",
                "needs `inject_name`",
            ),
            (
                "upstream = \"https://b\"\ninject = \"basic\"",
                "needs `basic_user`",
            ),
            (
                "upstream = \"https://b\"\ninject_name = \"x-key\"",
                "`inject_name` goes with",
            ),
            (
                "upstream = \"https://b\"\nevidence_header = \"authorization\"",
                "needs for itself",
            ),
            (
                "upstream = \"http://127.0.0.1:1\"\nca_file = \"tests/fixtures/tls/ca.pem\"",
                "is plain `http`",
            ),
            (
                "upstream = \"https://b\"\ninject = \"cookie\"",
                "unknown variant `cookie`",
            ),
            (
                "upstream = \"https://b\"\ncredential_reuse_s = 7200",
                "is over 3600",
            ),
            ("", "needs `target` and `upstream`"),
            ("mode = \"forward\"", "takes no `target` or `upstream`"),
            (
                "upstream = \"https://b\"\nca_file = \"no-such-ca.pem\"",
                "no-such-ca.pem",
            ),
            (
                "upstream = \"https://b\"\nupstream_timeout_s = 0",
                "is outside 1..=3600",
            ),
            (
                "upstream = \"https://b\"\nallow_plaintext = true",
                "is for `mode = \"forward\"`",
            ),
            (
                "upstream = \"https://b\"\nlisten_socket = \"/run/p.sock\"",
                "exactly one of `listen` and `listen_socket`",
            ),
        ] {
            let error = format!("{:#}", check(extra).unwrap_err());
            assert!(error.contains(says), "{extra}: {error}");
            if !says.starts_with("unknown variant") {
                assert!(
                    error.contains("`[[proxy.http]]` 1 (target `billing`)"),
                    "{error}"
                );
            }
        }
    }

    #[test]
    fn a_forward_proxy_names_no_target_and_reads_proxy_authorization() {
        let check = |extra: &str| {
            let text = format!(
                "[policy]\ndir = \"examples/policies\"\n[[proxy.http]]\nmode = \"forward\"\n\
                 listen = \"127.0.0.1:3128\"\n{extra}"
            );
            let mut config: Config = toml::from_str(&text)?;
            config.base_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            config.validate()?;
            config.http_proxies()
        };
        let spec = check("").unwrap();
        assert!(spec[0].forward);
        assert_eq!(spec[0].evidence_header.as_str(), "proxy-authorization");
        for (extra, says) in [
            (
                "evidence_header = \"x-token\"",
                "leave `evidence_header` out",
            ),
            (
                "ca_file = \"tests/fixtures/tls/ca.pem\"",
                "takes no `ca_file`",
            ),
            (
                "upstream = \"http://127.0.0.1:1\"",
                "takes no `target` or `upstream`",
            ),
        ] {
            let error = format!("{:#}", check(extra).unwrap_err());
            assert!(error.contains(says), "{extra}: {error}");
        }
    }

    #[test]
    fn a_postgres_listener_reuses_credentials_for_a_minute_unless_told_otherwise() {
        let check = |extra: &str| {
            let text = format!(
                "[policy]\ndir = \"examples/policies\"\n[[proxy.postgres]]\n\
                 target = \"orders_db\"\nlisten = \"127.0.0.1:6432\"\n\
                 upstream_host = \"127.0.0.1\"\n{extra}"
            );
            let mut config: Config = toml::from_str(&text)?;
            config.base_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            config.validate()?;
            config.postgres_proxies()
        };
        assert_eq!(check("").unwrap()[0].credential_reuse_s, 60);
        assert_eq!(
            check("credential_reuse_s = 0").unwrap()[0].credential_reuse_s,
            0
        );
        let error = format!("{:#}", check("credential_reuse_s = 7200").unwrap_err());
        assert!(error.contains("is over 3600"), "{error}");
        assert!(
            error.contains("`[[proxy.postgres]]` 1 (target `orders_db`)"),
            "{error}"
        );
    }

    #[test]
    fn a_proxy_upstream_other_than_the_role_server_is_named() {
        let mismatches = |upstream: &str, server: &str| {
            let text = format!(
                "[policy]\ndir = \"examples/policies\"\n[[credentials.postgres]]\n\
                 target = \"orders_db\"\n{server}\nadmin_user = \"a\"\n\
                 admin_password_file = \"p\"\n\n[[proxy.postgres]]\ntarget = \"orders_db\"\n\
                 listen = \"127.0.0.1:6432\"\n{upstream}\n"
            );
            let config: Config = toml::from_str(&text).unwrap();
            config.postgres_upstream_mismatches()
        };
        let same = [
            ("upstream_host = \"127.0.0.1\"", "host = \"localhost\""),
            ("upstream_host = \"DB.internal\"", "host = \"db.internal\""),
            (
                "upstream_host = \"::1\"\nupstream_port = 5432",
                "host = \"127.0.0.1\"",
            ),
            (
                "upstream_host = \"127.0.0.1\"",
                "host = \"/run/postgresql\"",
            ),
        ];
        for (upstream, server) in same {
            assert_eq!(
                mismatches(upstream, server),
                Vec::<String>::new(),
                "{upstream}"
            );
        }
        let other = mismatches(
            "upstream_host = \"db-replica.internal\"",
            "host = \"db.internal\"",
        );
        assert_eq!(other.len(), 1);
        assert!(
            other[0].contains("connects to `db-replica.internal:5432`")
                && other[0].contains("roles on `db.internal:5432`"),
            "{other:?}"
        );
        let port = mismatches(
            "upstream_host = \"127.0.0.1\"\nupstream_port = 6543",
            "host = \"127.0.0.1\"",
        );
        assert_eq!(port.len(), 1, "{port:?}");
    }

    #[test]
    fn the_postgres_administrator_crosses_a_network_only_over_tls() {
        let check = |host: &str, extra: &str| -> Result<PostgresTlsMode> {
            let text = format!(
                "[policy]\ndir = \"examples/policies\"\n[[credentials.postgres]]\n\
                 target = \"orders_db\"\nhost = \"{host}\"\nadmin_user = \"a\"\n\
                 admin_password_file = \"p\"\n{extra}"
            );
            let mut config: Config = toml::from_str(&text)?;
            config.base_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            config.validate()?;
            Ok(config.credentials.postgres[0].tls_mode())
        };
        assert_eq!(check("127.0.0.1", "").unwrap(), PostgresTlsMode::Disable);
        assert_eq!(
            check("/run/postgresql", "").unwrap(),
            PostgresTlsMode::Disable
        );
        assert_eq!(
            check("db.internal", "").unwrap(),
            PostgresTlsMode::VerifyFull
        );
        let verified = "tls = \"verify-full\"\nca_file = \"tests/fixtures/tls/ca.pem\"";
        assert_eq!(
            check("localhost", verified).unwrap(),
            PostgresTlsMode::VerifyFull
        );
        for (host, extra, says) in [
            ("db.internal", "tls = \"disable\"", "in the clear"),
            ("/run/postgresql", "tls = \"verify-full\"", "takes no TLS"),
            ("127.0.0.1", "ca_file = \"ca.pem\"", "`ca_file` goes with"),
            (
                "db.internal",
                "tls = \"require\"",
                "unknown variant `require`",
            ),
        ] {
            let error = format!("{:#}", check(host, extra).unwrap_err());
            assert!(error.contains(says), "{host} {extra}: {error}");
        }
    }

    #[test]
    fn a_ca_bundle_holds_certificates_and_goes_with_fetched_keys() {
        let url = "[[trust_providers]]\nname = \"p\"\nkind = \"kubernetes\"\n\
                   issuer = \"https://i\"\naudiences = [\"portcullis\"]\njwks_discovery = true\n";
        let good = specs(&format!("{url}ca_file = \"tests/fixtures/tls/ca.pem\"\n")).unwrap();
        assert_eq!(format!("{:?}", good[0].ca), "TrustRoots(1 certificates)");
        assert_eq!(
            format!("{:?}", specs(url).unwrap()[0].ca),
            "TrustRoots(mozilla)"
        );
        for (file, says) in [
            (
                "tests/fixtures/tls/localhost.key.pem",
                "something other than certificates",
            ),
            ("tests/fixtures/tls/README.md", "holds no certificate"),
            (
                "tests/fixtures/tls/missing.pem",
                "cannot read the CA bundle",
            ),
        ] {
            let error = format!(
                "{:#}",
                specs(&format!("{url}ca_file = \"{file}\"\n")).unwrap_err()
            );
            assert!(
                error.contains("trust provider `p`") && error.contains(says),
                "{error}"
            );
            assert!(error.contains(file), "{error}");
        }
        let error = format!(
            "{:#}",
            specs(&provider(
                "github",
                "ca_file = \"tests/fixtures/tls/ca.pem\""
            ))
            .unwrap_err()
        );
        assert!(error.contains("`ca_file` is for keys fetched"), "{error}");
        let plain = "[[trust_providers]]\nname = \"p\"\nkind = \"oidc\"\n\
                     issuer = \"http://127.0.0.1:9\"\naudiences = [\"portcullis\"]\n\
                     jwks_discovery = true\nca_file = \"tests/fixtures/tls/ca.pem\"\n";
        let error = format!("{:#}", specs(plain).unwrap_err());
        assert!(error.contains("is plain `http`"), "{error}");
    }

    #[test]
    fn keys_come_from_exactly_one_source() {
        let file = specs(&provider("github", "")).unwrap();
        assert!(matches!(file[0].jwks, JwksSource::Document(_)));
        let url = "[[trust_providers]]\nname = \"p\"\nkind = \"github\"\n\
                   issuer = \"https://i\"\naudiences = [\"portcullis\"]\n";
        let remote = specs(&format!("{url}jwks_url = \"https://i/keys\"\n")).unwrap();
        assert_eq!(remote[0].jwks, JwksSource::Url("https://i/keys".to_owned()));
        assert_eq!(remote[0].jwks_refresh_min, Duration::from_secs(30));
        assert_eq!(remote[0].jwks_max_age, Duration::from_secs(3600));
        let found = specs(&format!(
            "{url}jwks_discovery = true\njwks_refresh_min_s = 5\njwks_max_age_s = 600\n"
        ))
        .unwrap();
        assert_eq!(found[0].jwks, JwksSource::Discovery);
        assert_eq!(found[0].jwks_refresh_min, Duration::from_secs(5));
        assert_eq!(found[0].jwks_max_age, Duration::from_secs(600));
        for wrong in [
            url.to_owned(),
            format!("{url}jwks_url = \"https://i/keys\"\njwks_discovery = true\n"),
            provider("github", "jwks_discovery = true"),
        ] {
            let error = format!("{:#}", specs(&wrong).unwrap_err());
            assert!(error.contains("exactly one of `jwks_file`"), "{error}");
        }
        for (setting, says) in [
            ("jwks_refresh_min_s = 7200", "1 to 3600 s"),
            ("jwks_refresh_min_s = 0", "1 to 3600 s"),
            ("jwks_max_age_s = 10", "60 to 86400 s"),
            ("jwks_max_age_s = 100000", "60 to 86400 s"),
        ] {
            let error = format!(
                "{:#}",
                specs(&format!("{url}jwks_discovery = true\n{setting}\n")).unwrap_err()
            );
            assert!(error.contains(says), "{setting}: {error}");
        }
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
    fn audit_settings_default_to_strict_sync_and_are_bounded() {
        let dir = Path::new(".");
        let config = config_in(dir, "[policy]\ndir = \"p\"\n").unwrap();
        let options = config.audit.options("n".into());
        assert_eq!(options, AuditOptions::new("n"));
        assert_eq!(options.flush_interval, Duration::ZERO);

        let text = "[policy]\ndir = \"p\"\n[audit]\nflush_interval_ms = 20\n\
                    seal_after_events = 500\nseal_after_bytes = 2097152\nseal_interval_s = 5\n";
        let options = config_in(dir, text).unwrap().audit.options("n".into());
        assert_eq!(options.flush_interval, Duration::from_millis(20));
        assert_eq!(options.seal_after_events, 500);
        assert_eq!(options.seal_after_bytes, 2 << 20);
        assert_eq!(options.seal_interval, Duration::from_secs(5));

        assert_eq!(config.audit.query_limits(), QueryLimits::default());
        let text = "[policy]\ndir = \"p\"\n[audit]\nquery_timeout_s = 5\nquery_memory_mb = 64\n";
        let limits = config_in(dir, text).unwrap().audit.query_limits();
        assert_eq!(limits.timeout, Duration::from_secs(5));
        assert_eq!(limits.memory_bytes, 64 << 20);

        for (setting, complaint) in [
            ("flush_interval_ms = 1001", "is over 1000"),
            ("seal_after_events = 0", "is outside 1..=1000000"),
            ("seal_after_bytes = 1000", "is outside 1048576..=1073741824"),
            ("query_timeout_s = 0", "is outside 1..=3600"),
            ("query_memory_mb = 8", "is outside 16..=65536"),
            ("seal_interval_s = 0", "is outside 1..=3600"),
        ] {
            let text = format!("[policy]\ndir = \"p\"\n[audit]\n{setting}\n");
            let err = format!("{:#}", config_in(dir, &text).unwrap_err());
            assert!(err.contains(complaint), "{setting}: {err}");
        }
    }

    #[test]
    fn retention_is_off_unless_set_and_is_bounded() {
        let dir = Path::new(".");
        let config = config_in(dir, "[policy]\ndir = \"p\"\n").unwrap();
        assert_eq!(config.audit.retention_days, None);
        let text = "[policy]\ndir = \"p\"\n[audit]\nretention_days = 30\n";
        assert_eq!(config_in(dir, text).unwrap().audit.retention_days, Some(30));
        let text = "[policy]\ndir = \"p\"\n[audit]\nretention_days = 0\n";
        let err = format!("{:#}", config_in(dir, text).unwrap_err());
        assert!(
            err.contains("`audit.retention_days = 0` is outside 1..=36500"),
            "{err}"
        );
    }

    #[test]
    fn the_dashboard_is_on_loopback_by_default_and_needs_the_admin_token_beyond() {
        let dir = Path::new(".");
        let with = |dashboard: &str, server: &str| {
            let text =
                format!("[server]\n{server}\n[policy]\ndir = \"p\"\n[dashboard]\n{dashboard}\n");
            config_in(dir, &text).map_err(|error| format!("{error:#}"))
        };
        let config = config_in(dir, "[policy]\ndir = \"p\"\n").unwrap();
        let listen = config.dashboard_listen().unwrap();
        assert_eq!(listen.addr, DEFAULT_DASHBOARD_LISTEN);
        assert!(!listen.configured);
        assert!(!config.dashboard_requires_token());
        assert_eq!(config.evaluate_every(), Some(Duration::from_secs(3600)));

        let off = with("enabled = false", "").unwrap();
        assert_eq!(off.dashboard_listen(), None);
        assert_eq!(off.evaluate_every(), None);
        assert_eq!(
            with("evaluate_every_s = 0", "").unwrap().evaluate_every(),
            None
        );
        let err = with("evaluate_every_s = 5", "").unwrap_err();
        assert!(
            err.contains("`dashboard.evaluate_every_s = 5` is outside 60..=604800"),
            "{err}"
        );

        let err = with("listen = \"0.0.0.0:8182\"", "").unwrap_err();
        assert!(
            err.contains("beyond loopback, which needs `[server] admin_token_file`"),
            "{err}"
        );
        let guarded = with("listen = \"0.0.0.0:8182\"", "admin_token_file = \"a\"").unwrap();
        assert!(guarded.dashboard_requires_token());
        let err = with(
            "listen = \"0.0.0.0:8182\"\nrequire_token = false",
            "admin_token_file = \"a\"",
        )
        .unwrap_err();
        assert!(
            err.contains("`dashboard.require_token = false` cannot hold"),
            "{err}"
        );
        let err = with("require_token = true", "").unwrap_err();
        assert!(
            err.contains("requires a token (`require_token = true`), which needs")
                && err.ends_with("or remove `[dashboard] require_token`"),
            "{err}"
        );
        let err = with("listen = \"127.0.0.1:8182\"\nbogus = 1", "").unwrap_err();
        assert!(err.contains("unknown field `bogus`"), "{err}");
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
            format!("{err:#}").contains("attested on the Unix socket (`server.local_socket`)"),
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

    #[test]
    fn two_listeners_on_one_address_or_socket_are_refused_naming_both() {
        let check = |proxies: &str| -> Result<()> {
            let text = format!("[policy]\ndir = \"p\"\n\n{proxies}");
            let mut config: Config = toml::from_str(&text)?;
            config.base_dir = PathBuf::from("/etc/portcullis");
            config.check_listeners()
        };
        let http = |listen: &str| {
            format!("[[proxy.http]]\ntarget = \"a\"\n{listen}\nupstream = \"https://a\"\n\n")
        };
        let postgres = "[[proxy.postgres]]\ntarget = \"db\"\nlisten = \"127.0.0.1:6432\"\n\
                        upstream_host = \"db.internal\"\n\n";
        check(&(http("listen = \"127.0.0.1:9101\"") + postgres)).unwrap();
        let error = check(
            &(http("listen_socket = \"a.sock\"")
                + &http("listen_socket = \"/etc/portcullis/a.sock\"")),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            error,
            "`[[proxy.http]]` 1 and `[[proxy.http]]` 2 both listen on `/etc/portcullis/a.sock`; \
             give each listener a place of its own"
        );
        let error = check(&(http("listen = \"127.0.0.1:6432\"") + postgres))
            .unwrap_err()
            .to_string();
        assert!(error.contains("`[[proxy.postgres]]` 1"), "{error}");
        assert!(error.contains("127.0.0.1:6432"), "{error}");
    }
}
