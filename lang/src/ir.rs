//! The typed IR: a policy set after name resolution and type checking.
//!
//! In: the checker builds it from the AST once every name resolves and every expression has a
//! type. Out: the bytecode emitter compiles it into a bundle. Every expression here is well
//! typed by construction; no name is looked up again. Spans are gone: nothing after this stage
//! reports source diagnostics.

use crate::schema::{ClaimId, CustomClaims, ProviderKind};

/// A whole policy set, declarations in source order (files sorted by path, then by position).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySet {
    pub workloads: Vec<Workload>,
    pub targets: Vec<Target>,
    pub credentials: Vec<Credential>,
    pub conditions: Vec<Condition>,
    pub rules: Vec<Rule>,
    /// The custom `oidc` claims the set was checked against; [`Expr::Claim`] ids beyond the
    /// built-in `oidc` claims refer to them.
    pub custom_claims: CustomClaims,
}

/// Index into [`PolicySet::workloads`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadId(pub u32);

/// Index into [`PolicySet::targets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId(pub u32);

/// Index into [`PolicySet::credentials`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialId(pub u32);

/// Index into [`PolicySet::conditions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConditionId(pub u32);

/// `credential NAME { KIND { … } }`: how a permitted caller gets a credential for the target,
/// and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub name: String,
    pub kind: CredentialKind,
    /// The lifetime of an issued credential in seconds; `None` only for a `static` credential
    /// without `ttl`, which does not expire.
    pub ttl_s: Option<u64>,
}

/// The claims every token a `jwt` credential mints carries with values of its own, which
/// `copy_claims` may not name.
pub const MINTED_CLAIMS: [&str; 8] = [
    "iss",
    "sub",
    "aud",
    "iat",
    "nbf",
    "exp",
    "jti",
    "portcullis",
];

/// A credential provider and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialKind {
    /// A JWT minted by Portcullis for `audience`, carrying the caller's verified claims that
    /// `copy_claims` names, under the same names.
    Jwt {
        audience: String,
        copy_claims: Vec<String>,
    },
    /// A stored secret, read from an environment variable or a file where Portcullis runs.
    Static(StaticSource),
    /// An OAuth 2.0 client-credentials grant at `token_url`.
    OauthClientCredentials {
        token_url: String,
        client_id: String,
        scopes: Vec<String>,
    },
    /// A temporary PostgreSQL role that is a member of each role in `grant`.
    PostgresRole { grant: Vec<String> },
}

impl CredentialKind {
    pub const KEYWORDS: [&'static str; 4] =
        ["jwt", "static", "oauth_client_credentials", "postgres_role"];

    /// The keyword that names the kind in Gate, and the `credential_provider` of an event.
    pub fn keyword(&self) -> &'static str {
        match self {
            CredentialKind::Jwt { .. } => "jwt",
            CredentialKind::Static(_) => "static",
            CredentialKind::OauthClientCredentials { .. } => "oauth_client_credentials",
            CredentialKind::PostgresRole { .. } => "postgres_role",
        }
    }
}

/// Where a `static` credential's secret is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaticSource {
    /// `env = "VAR"`.
    Env(String),
    /// `file = "/path"`.
    File(String),
}

/// `condition NAME { EXPR }`: a named bool, read by name in `when` and in other conditions.
/// Conditions never refer to each other in a cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub name: String,
    pub body: Expr,
}

/// How serious a rule is, from `@severity("…")`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn keyword(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// The annotations written before a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations {
    /// `@description("…")`.
    pub description: Option<String>,
    /// `@severity("…")`.
    pub severity: Option<Severity>,
}

/// `workload NAME { ALTERNATIVE+ }`: a caller matches when any alternative matches.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub name: String,
    pub alternatives: Vec<Alternative>,
}

/// `KIND { EXPR }`: the caller was attested by a trust provider of `kind` and its claims
/// satisfy `condition`. An empty body is `Expr::Const(Value::Bool(true))`.
#[derive(Debug, Clone, PartialEq)]
pub struct Alternative {
    pub kind: ProviderKind,
    pub condition: Expr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Https,
    Postgres,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Http, Protocol::Https, Protocol::Postgres];

    /// The protocol of a keyword as a request names it, in any case: `HTTPS` is `https`.
    pub fn from_keyword(text: &str) -> Option<Protocol> {
        Protocol::ALL
            .into_iter()
            .find(|known| known.keyword().eq_ignore_ascii_case(text))
    }

    pub fn keyword(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Postgres => "postgres",
        }
    }

    /// The indefinite article before the keyword, by its first sound: "an `http` field".
    pub fn article(self) -> &'static str {
        match self {
            Protocol::Http | Protocol::Https => "an",
            Protocol::Postgres => "a",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Protocol::Http => 80,
            Protocol::Https => 443,
            Protocol::Postgres => 5432,
        }
    }
}

/// `target NAME { PROTOCOL { host = "…" port = N … } }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub protocol: Protocol,
    pub host: String,
    /// The protocol's default port when the source gives none.
    pub port: u16,
    /// `postgres` only.
    pub database: Option<String>,
    /// `http` and `https` only: the path every request must start with.
    pub path_prefix: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    Permit,
    Forbid,
}

/// Which callers a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkloadRef {
    Named(WorkloadId),
    /// `workload any KIND`: every caller attested by a trust provider of that kind.
    AnyOfKind(ProviderKind),
    /// `workload any`, or no `workload` clause in a `forbid`.
    Any,
}

/// Which targets a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetRef {
    Named(TargetId),
    /// `target any`, or no `target` clause in a `forbid`.
    Any,
}

/// A `permit` or `forbid` declaration.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub effect: Effect,
    pub workload: WorkloadRef,
    pub target: TargetRef,
    /// `when EXPR`; `None` when the rule has no condition.
    pub when: Option<Expr>,
    /// `credential NAME`, permits only: the credential issued when this rule decides.
    pub credential: Option<CredentialId>,
    pub annotations: Annotations,
}

/// A constant. Sets hold scalars of one type, deduplicated, in source order. A duration is an
/// `Int` of seconds and a timestamp an `Int` of Unix seconds: the checker keeps durations,
/// timestamps and integers apart, nothing after it needs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    String(String),
    Int(i64),
    Bool(bool),
    Set(Vec<Value>),
}

/// Facts of the request itself, readable in `when`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestField {
    /// `request.action`, a string, optional: the HTTP method, `connect`, …
    Action,
    /// `request.resource`, a string, optional: the HTTP path, the database, …
    Resource,
    /// `request.source_ip`, an IP address, optional: the address the request came from.
    SourceIp,
    /// `request.time`, a timestamp (Unix seconds), always present: when the decision began.
    Time,
}

impl RequestField {
    pub fn keyword(self) -> &'static str {
        match self {
            RequestField::Action => "action",
            RequestField::Resource => "resource",
            RequestField::SourceIp => "source_ip",
            RequestField::Time => "time",
        }
    }
}

/// An IP network: an address and a prefix length, without host bits. A single address is a
/// network of all its bits (`/32`, `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Network {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl Network {
    /// Parses `"10.0.0.0/8"`, `"2001:db8::/32"` or a single address; refuses host bits.
    pub fn parse(text: &str) -> Result<Network, NetworkError> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: std::net::IpAddr = addr_text.parse().map_err(|_| NetworkError::NotAnAddress)?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(digits) => match digits.parse::<u8>() {
                Ok(prefix) if prefix <= max && !digits.starts_with('+') => prefix,
                _ => return Err(NetworkError::BadPrefix { max }),
            },
        };
        let network = Network { addr, prefix };
        if network.masked(addr) != addr {
            let canonical = Network {
                addr: network.masked(addr),
                prefix,
            };
            return Err(NetworkError::HostBits { canonical });
        }
        Ok(network)
    }

    /// `addr` with the bits beyond this network's prefix cleared.
    fn masked(self, addr: std::net::IpAddr) -> std::net::IpAddr {
        match addr {
            std::net::IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                std::net::IpAddr::V4((u32::from(v4) & mask).into())
            }
            std::net::IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                std::net::IpAddr::V6((u128::from(v6) & mask).into())
            }
        }
    }

    /// Whether `addr` is in this network. An IPv4-mapped IPv6 address (`::ffff:192.0.2.7`) is
    /// taken as the IPv4 address it maps, as a dual-stack socket reports IPv4 peers.
    pub fn contains(self, addr: std::net::IpAddr) -> bool {
        let addr = match addr {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, std::net::IpAddr::V4),
            v4 => v4,
        };
        addr.is_ipv4() == self.addr.is_ipv4() && self.masked(addr) == self.addr
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let max = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == max {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// Why a string is not an IP network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("not an IP address")]
    NotAnAddress,
    #[error("the prefix length must be a number from 0 to {max}")]
    BadPrefix { max: u8 },
    #[error("the address has bits set beyond the prefix")]
    HostBits { canonical: Network },
}

/// Facts of the resolved target, readable in `when`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetField {
    /// `target.name`, a string.
    Name,
    /// `target.protocol`, a string (`"https"`).
    Protocol,
    /// `target.host`, a string.
    Host,
    /// `target.port`, an integer.
    Port,
}

/// A typed expression; every one evaluates to a bool, a string, an integer or a set.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Const(Value),
    /// A claim of the caller. Inside a workload alternative, `kind` is the alternative's kind;
    /// in `when`, it is the `KIND` of `client.KIND.claim`. Reading a claim the caller does not
    /// have (another kind, or an absent optional claim) is an evaluation error, which denies.
    Claim {
        kind: ProviderKind,
        claim: ClaimId,
    },
    /// `has CLAIM` / `has client.KIND.CLAIM`: true when the caller is of `kind` and carries it.
    HasClaim {
        kind: ProviderKind,
        claim: ClaimId,
    },
    Request(RequestField),
    /// A named condition's value.
    Condition(ConditionId),
    /// `has request.action` / `has request.resource`.
    HasRequest(RequestField),
    Target(TargetField),
    Not(Box<Expr>),
    /// Short-circuits left to right.
    And(Box<Expr>, Box<Expr>),
    /// Short-circuits left to right.
    Or(Box<Expr>, Box<Expr>),
    /// Both sides have the same scalar type.
    Eq(Box<Expr>, Box<Expr>),
    Ne(Box<Expr>, Box<Expr>),
    /// Scalar `in` a constant set of the same scalar type; or, when the left side is a
    /// set-typed claim, true when the two sets share an element.
    In(Box<Expr>, Vec<Value>),
    /// String matches a glob: `*` any run of characters, `?` one character, `\` escapes.
    Like(Box<Expr>, String),
    /// String matches a regular expression somewhere (unanchored, like `regex::Regex`); the
    /// pattern is valid by construction.
    Matches(Box<Expr>, String),
    /// An ordering of two integers (durations are integers of seconds here).
    Order(OrderOp, Box<Expr>, Box<Expr>),
    /// An integer within `low..=high`.
    InRange(Box<Expr>, i64, i64),
    /// An IP address within any of the networks, in source order, deduplicated.
    InNetworks(Box<Expr>, Vec<Network>),
    /// A timestamp within a weekly window of local time in the IANA zone named (a name the
    /// compiler's zone database has, checked).
    Within(Box<Expr>, crate::time::Window, String),
}

/// `<`, `<=`, `>`, `>=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderOp {
    Lt,
    Le,
    Gt,
    Ge,
}

impl OrderOp {
    /// Whether `left OP right` holds.
    pub fn holds(self, left: i64, right: i64) -> bool {
        match self {
            OrderOp::Lt => left < right,
            OrderOp::Le => left <= right,
            OrderOp::Gt => left > right,
            OrderOp::Ge => left >= right,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_and_contain() {
        let net = Network::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.255.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.0".parse().unwrap()));
        assert!(!net.contains("::a00:1".parse().unwrap()));
        let host = Network::parse("192.0.2.7").unwrap();
        assert_eq!(host.prefix, 32);
        assert_eq!(host.to_string(), "192.0.2.7");
        let everything = Network::parse("0.0.0.0/0").unwrap();
        assert!(everything.contains("203.0.113.9".parse().unwrap()));
        let v6 = Network::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert_eq!(v6.to_string(), "2001:db8::/32");
        assert!(
            Network::parse("::/0")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
    }

    #[test]
    fn malformed_networks_are_refused() {
        assert_eq!(Network::parse("10.0.0/8"), Err(NetworkError::NotAnAddress));
        assert_eq!(
            Network::parse("10.0.0.0/33"),
            Err(NetworkError::BadPrefix { max: 32 })
        );
        assert_eq!(
            Network::parse("10.0.0.0/+8"),
            Err(NetworkError::BadPrefix { max: 32 })
        );
        assert_eq!(
            Network::parse("::/129"),
            Err(NetworkError::BadPrefix { max: 128 })
        );
        let Err(NetworkError::HostBits { canonical }) = Network::parse("10.1.2.3/8") else {
            panic!("host bits accepted")
        };
        assert_eq!(canonical.to_string(), "10.0.0.0/8");
    }
}
