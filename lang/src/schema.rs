//! Built-in claim schemas: for each trust provider kind, the claims its evidence carries,
//! their types, where they sit in the token's JSON, and whether every token has them.
//!
//! The checker types claim references against these tables; the engine uses the same tables
//! to turn a verified token's JSON into [`ClaimValue`]s indexed by [`ClaimId`], so that the VM
//! reads claims by position and never by name.
//!
//! Besides the built-in tables: [`SpiffeId`], the SPIFFE ID rules that attestation applies to a
//! JWT-SVID's `sub` (and that lints may apply to literals), and [`CustomClaims`], the claims a
//! generic `oidc` trust provider declares in configuration.

use std::fmt;

use crate::lexer::{Token, lex};

/// The kind of a trust provider, as named in Gate (`github { … }`, `any kubernetes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProviderKind {
    Github,
    Kubernetes,
    Oidc,
    Gitlab,
    Terraform,
    Spiffe,
    Process,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 7] = [
        ProviderKind::Github,
        ProviderKind::Kubernetes,
        ProviderKind::Oidc,
        ProviderKind::Gitlab,
        ProviderKind::Terraform,
        ProviderKind::Spiffe,
        ProviderKind::Process,
    ];

    /// The keyword that names this kind in Gate and in configuration.
    pub fn keyword(self) -> &'static str {
        match self {
            ProviderKind::Github => "github",
            ProviderKind::Kubernetes => "kubernetes",
            ProviderKind::Oidc => "oidc",
            ProviderKind::Gitlab => "gitlab",
            ProviderKind::Terraform => "terraform",
            ProviderKind::Spiffe => "spiffe",
            ProviderKind::Process => "process",
        }
    }

    /// The indefinite article before the keyword, by its first sound: "an `oidc` claim".
    pub fn article(self) -> &'static str {
        match self {
            ProviderKind::Oidc => "an",
            ProviderKind::Github
            | ProviderKind::Kubernetes
            | ProviderKind::Gitlab
            | ProviderKind::Terraform
            | ProviderKind::Spiffe
            | ProviderKind::Process => "a",
        }
    }

    /// Whether this kind's evidence is a signed token (a JWT) from an issuer. The only other
    /// kind of evidence is a local process's peer credentials, which no issuer signs.
    pub fn issues_tokens(self) -> bool {
        !matches!(self, ProviderKind::Process)
    }

    pub fn from_keyword(word: &str) -> Option<ProviderKind> {
        ProviderKind::ALL
            .into_iter()
            .find(|kind| kind.keyword() == word)
    }

    /// The claims a token of this kind can carry, in [`ClaimId`] order.
    pub fn claims(self) -> &'static [ClaimDef] {
        match self {
            ProviderKind::Github => GITHUB,
            ProviderKind::Kubernetes => KUBERNETES,
            ProviderKind::Oidc => OIDC,
            ProviderKind::Gitlab => GITLAB,
            ProviderKind::Terraform => TERRAFORM,
            ProviderKind::Spiffe => SPIFFE,
            ProviderKind::Process => PROCESS,
        }
    }

    /// The claim called `name`, if this kind has one.
    pub fn claim(self, name: &str) -> Option<(ClaimId, &'static ClaimDef)> {
        self.claims()
            .iter()
            .enumerate()
            .find(|(_, def)| def.name == name)
            .map(|(idx, def)| (ClaimId(idx as u16), def))
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.keyword())
    }
}

/// Position of a claim in its kind's schema table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClaimId(pub u16);

/// The Gate type of a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimType {
    String,
    Int,
    Bool,
    /// A set of strings; a token may also carry a single string, which is a set of one.
    StringSet,
}

impl fmt::Display for ClaimType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClaimType::String => "string",
            ClaimType::Int => "integer",
            ClaimType::Bool => "bool",
            ClaimType::StringSet => "set of strings",
        })
    }
}

/// One claim of a schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimDef {
    /// The name policies use.
    pub name: &'static str,
    /// Where the value sits in the token's JSON payload, one object key per step.
    pub path: &'static [&'static str],
    pub ty: ClaimType,
    /// Every genuine token of this kind carries it. Attestation refuses a token that lacks a
    /// required claim; policies must guard an optional claim with `has` before reading it.
    pub required: bool,
    /// Computed by attestation from the token field at `path` instead of copied from it.
    pub derived: Option<Derived>,
}

/// How attestation computes a derived claim from the token field its [`ClaimDef::path`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Derived {
    /// The whole field, once it is a valid SPIFFE ID.
    SpiffeId,
    /// The trust domain of the SPIFFE ID in the field.
    SpiffeTrustDomain,
    /// The path of the SPIFFE ID in the field, with its leading `/` (empty for none).
    SpiffePath,
}

/// A claim's value after attestation, already converted to its schema type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimValue {
    String(String),
    Int(i64),
    Bool(bool),
    StringSet(Vec<String>),
}

const fn req(name: &'static str, path: &'static [&'static str], ty: ClaimType) -> ClaimDef {
    ClaimDef {
        name,
        path,
        ty,
        required: true,
        derived: None,
    }
}

const fn opt(name: &'static str, path: &'static [&'static str], ty: ClaimType) -> ClaimDef {
    ClaimDef {
        name,
        path,
        ty,
        required: false,
        derived: None,
    }
}

const fn derived(name: &'static str, from: &'static [&'static str], how: Derived) -> ClaimDef {
    ClaimDef {
        name,
        path: from,
        ty: ClaimType::String,
        required: true,
        derived: Some(how),
    }
}

use ClaimType::{Bool, Int, String as Str, StringSet};

/// GitHub Actions OIDC ID token. Every custom claim is a string in the token, numbers and
/// booleans included (`run_number` is `"42"`, `ref_protected` is `"true"`).
const GITHUB: &[ClaimDef] = &[
    req("iss", &["iss"], Str),
    req("sub", &["sub"], Str),
    req("aud", &["aud"], StringSet),
    opt("jti", &["jti"], Str),
    req("repository", &["repository"], Str),
    req("repository_id", &["repository_id"], Str),
    req("repository_owner", &["repository_owner"], Str),
    req("repository_owner_id", &["repository_owner_id"], Str),
    opt("repository_visibility", &["repository_visibility"], Str),
    req("ref", &["ref"], Str),
    opt("ref_type", &["ref_type"], Str),
    opt("ref_protected", &["ref_protected"], Str),
    req("sha", &["sha"], Str),
    req("event_name", &["event_name"], Str),
    opt("environment", &["environment"], Str),
    opt("base_ref", &["base_ref"], Str),
    opt("head_ref", &["head_ref"], Str),
    opt("actor", &["actor"], Str),
    opt("actor_id", &["actor_id"], Str),
    opt("workflow", &["workflow"], Str),
    opt("workflow_ref", &["workflow_ref"], Str),
    opt("workflow_sha", &["workflow_sha"], Str),
    opt("job_workflow_ref", &["job_workflow_ref"], Str),
    opt("job_workflow_sha", &["job_workflow_sha"], Str),
    opt("run_id", &["run_id"], Str),
    opt("run_number", &["run_number"], Str),
    opt("run_attempt", &["run_attempt"], Str),
    opt("runner_environment", &["runner_environment"], Str),
    opt("check_run_id", &["check_run_id"], Str),
];

/// Kubernetes projected service-account token; the pod and service-account facts sit under
/// the nested `kubernetes.io` claim.
const KUBERNETES: &[ClaimDef] = &[
    req("iss", &["iss"], Str),
    req("sub", &["sub"], Str),
    req("aud", &["aud"], StringSet),
    req("namespace", &["kubernetes.io", "namespace"], Str),
    req(
        "service_account",
        &["kubernetes.io", "serviceaccount", "name"],
        Str,
    ),
    req(
        "service_account_uid",
        &["kubernetes.io", "serviceaccount", "uid"],
        Str,
    ),
    opt("pod", &["kubernetes.io", "pod", "name"], Str),
    opt("pod_uid", &["kubernetes.io", "pod", "uid"], Str),
    opt("node", &["kubernetes.io", "node", "name"], Str),
    opt("node_uid", &["kubernetes.io", "node", "uid"], Str),
];

/// Any OpenID Connect issuer: the registered claims and the common profile claims. Trust
/// providers add their own claims after these; see [`CustomClaims`].
const OIDC: &[ClaimDef] = &[
    req("iss", &["iss"], Str),
    req("sub", &["sub"], Str),
    req("aud", &["aud"], StringSet),
    opt("azp", &["azp"], Str),
    opt("email", &["email"], Str),
    opt("email_verified", &["email_verified"], Bool),
    opt("name", &["name"], Str),
    opt("preferred_username", &["preferred_username"], Str),
    opt("groups", &["groups"], StringSet),
];

/// GitLab CI ID token (`id_tokens:`). Ids, numbers and flags are strings in the token
/// (`project_id` is `"42"`, `ref_protected` is `"true"`), except `runner_id`, a JSON number.
/// `ref` is the bare branch or tag name; `ref_path` is the full `refs/heads/…` form.
const GITLAB: &[ClaimDef] = &[
    req("iss", &["iss"], Str),
    req("sub", &["sub"], Str),
    req("aud", &["aud"], StringSet),
    opt("jti", &["jti"], Str),
    req("namespace_id", &["namespace_id"], Str),
    req("namespace_path", &["namespace_path"], Str),
    req("project_id", &["project_id"], Str),
    req("project_path", &["project_path"], Str),
    req("project_visibility", &["project_visibility"], Str),
    req("user_id", &["user_id"], Str),
    req("user_login", &["user_login"], Str),
    req("user_email", &["user_email"], Str),
    opt("user_access_level", &["user_access_level"], Str),
    req("pipeline_id", &["pipeline_id"], Str),
    req("pipeline_source", &["pipeline_source"], Str),
    req("job_id", &["job_id"], Str),
    req("ref", &["ref"], Str),
    req("ref_type", &["ref_type"], Str),
    req("ref_path", &["ref_path"], Str),
    req("ref_protected", &["ref_protected"], Str),
    opt("environment", &["environment"], Str),
    opt("environment_protected", &["environment_protected"], Str),
    opt("environment_action", &["environment_action"], Str),
    opt("deployment_tier", &["deployment_tier"], Str),
    req("runner_id", &["runner_id"], Int),
    req("runner_environment", &["runner_environment"], Str),
    req("sha", &["sha"], Str),
    opt("ci_config_ref_uri", &["ci_config_ref_uri"], Str),
    opt("ci_config_sha", &["ci_config_sha"], Str),
    opt("groups_direct", &["groups_direct"], StringSet),
];

/// HCP Terraform (Terraform Cloud) or Terraform Enterprise workload identity token. Every
/// claim is a string and every token of a run phase carries all of them.
const TERRAFORM: &[ClaimDef] = &[
    req("iss", &["iss"], Str),
    req("sub", &["sub"], Str),
    req("aud", &["aud"], StringSet),
    opt("jti", &["jti"], Str),
    req(
        "terraform_organization_id",
        &["terraform_organization_id"],
        Str,
    ),
    req(
        "terraform_organization_name",
        &["terraform_organization_name"],
        Str,
    ),
    req("terraform_project_id", &["terraform_project_id"], Str),
    req("terraform_project_name", &["terraform_project_name"], Str),
    req("terraform_workspace_id", &["terraform_workspace_id"], Str),
    req(
        "terraform_workspace_name",
        &["terraform_workspace_name"],
        Str,
    ),
    req(
        "terraform_full_workspace",
        &["terraform_full_workspace"],
        Str,
    ),
    req("terraform_run_id", &["terraform_run_id"], Str),
    req("terraform_run_phase", &["terraform_run_phase"], Str),
];

/// SPIFFE JWT-SVID. `sub` is the SPIFFE ID; attestation validates it and derives the rest.
/// The SPIFFE specification does not require `iss`.
const SPIFFE: &[ClaimDef] = &[
    opt("iss", &["iss"], Str),
    req("sub", &["sub"], Str),
    req("aud", &["aud"], StringSet),
    derived("spiffe_id", &["sub"], Derived::SpiffeId),
    derived("trust_domain", &["sub"], Derived::SpiffeTrustDomain),
    derived("path", &["sub"], Derived::SpiffePath),
];

/// A local process, from the peer credentials of its Unix-socket connection and `/proc`; the
/// path names the field of that evidence, not of a token (`engine/src/local.rs` reads it).
const PROCESS: &[ClaimDef] = &[
    req("pid", &["pid"], Int),
    req("uid", &["uid"], Int),
    req("gid", &["gid"], Int),
    opt("user", &["user"], Str),
    opt("group", &["group"], Str),
    req("groups", &["groups"], StringSet),
    req("exe", &["exe"], Str),
    req("exe_sha256", &["exe_sha256"], Str),
];

/// SPIFFE IDs longer than this are refused; the specification requires accepting up to it.
pub const MAX_SPIFFE_ID_BYTES: usize = 2048;

/// A valid SPIFFE ID, `spiffe://TRUST-DOMAIN/PATH`, borrowed from the text it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpiffeId<'a> {
    text: &'a str,
    trust_domain: &'a str,
    path: &'a str,
}

/// Why a text is not a SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("the SPIFFE ID is {len} bytes; at most {MAX_SPIFFE_ID_BYTES} are allowed")]
    TooLong { len: usize },
    #[error("a SPIFFE ID starts with `spiffe://`")]
    Scheme,
    #[error("the trust domain is empty")]
    EmptyTrustDomain,
    #[error("the trust domain has a port")]
    Port,
    #[error("a trust domain is the name alone, without `spiffe://`")]
    TrustDomainScheme,
    #[error("the trust domain has user information")]
    Userinfo,
    #[error(
        "the trust domain may hold only lowercase letters, digits, `.`, `-` and `_`, not `{}`",
        .0.escape_debug()
    )]
    TrustDomainChar(char),
    #[error("a SPIFFE ID has no query or fragment")]
    QueryOrFragment,
    #[error("a SPIFFE ID has no percent-encoding")]
    PercentEncoded,
    #[error("the path has an empty segment")]
    EmptySegment,
    #[error("the path has a `.` or `..` segment")]
    DotSegment,
    #[error("the path ends with `/`")]
    TrailingSlash,
    #[error(
        "path segments may hold only letters, digits, `.`, `-` and `_`, not `{}`",
        .0.escape_debug()
    )]
    PathChar(char),
}

impl<'a> SpiffeId<'a> {
    pub fn parse(text: &'a str) -> Result<SpiffeId<'a>, SpiffeIdError> {
        if text.len() > MAX_SPIFFE_ID_BYTES {
            return Err(SpiffeIdError::TooLong { len: text.len() });
        }
        let Some(rest) = text.strip_prefix("spiffe://") else {
            return Err(SpiffeIdError::Scheme);
        };
        if rest.contains(['?', '#']) {
            return Err(SpiffeIdError::QueryOrFragment);
        }
        if rest.contains('%') {
            return Err(SpiffeIdError::PercentEncoded);
        }
        let (trust_domain, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        check_trust_domain(trust_domain)?;
        check_spiffe_path(path)?;
        Ok(SpiffeId {
            text,
            trust_domain,
            path,
        })
    }

    /// The whole ID.
    pub fn as_str(&self) -> &'a str {
        self.text
    }

    pub fn trust_domain(&self) -> &'a str {
        self.trust_domain
    }

    /// The path with its leading `/`, or empty for the ID of the trust domain itself.
    pub fn path(&self) -> &'a str {
        self.path
    }
}

impl fmt::Display for SpiffeId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text)
    }
}

/// Checks a SPIFFE trust domain name, such as `prod.acme.example`.
pub fn check_trust_domain(name: &str) -> Result<(), SpiffeIdError> {
    if name.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain);
    }
    if name.contains("://") {
        return Err(SpiffeIdError::TrustDomainScheme);
    }
    if name.contains('@') {
        return Err(SpiffeIdError::Userinfo);
    }
    if name.contains(':') {
        return Err(SpiffeIdError::Port);
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
    match name.chars().find(|c| !allowed(*c)) {
        Some(c) => Err(SpiffeIdError::TrustDomainChar(c)),
        None => Ok(()),
    }
}

/// Checks the path of a SPIFFE ID, such as `/ns/billing/sa/api`: empty, or `/`-separated
/// segments of letters, digits, `.`, `_` and `-`, none of them `.` or `..`.
pub fn check_spiffe_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err(SpiffeIdError::TrailingSlash);
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    for segment in path.split('/').skip(1) {
        if segment.is_empty() {
            return Err(SpiffeIdError::EmptySegment);
        }
        if segment == "." || segment == ".." {
            return Err(SpiffeIdError::DotSegment);
        }
        if let Some(c) = segment.chars().find(|c| !allowed(*c)) {
            return Err(SpiffeIdError::PathChar(c));
        }
    }
    Ok(())
}

/// The only kind whose trust providers may declare custom claims.
pub const CUSTOM_CLAIMS_KIND: ProviderKind = ProviderKind::Oidc;

/// At most this many custom claims in a configuration.
pub const MAX_CUSTOM_CLAIMS: usize = 256;

/// A claim that one generic `oidc` trust provider declares in configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomClaim {
    /// The name policies use; a Gate identifier.
    pub name: String,
    /// Where the value sits in this provider's tokens, one object key per step.
    pub path: Vec<String>,
    pub ty: ClaimType,
    /// This provider's tokens always carry it.
    pub required: bool,
}

/// A custom claim declaration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomClaimError {
    #[error("custom claim `{0}`: the name must be a Gate identifier, not a keyword")]
    BadName(String),
    #[error("custom claim `{0}`: `oidc` already has a built-in claim of that name")]
    Builtin(String),
    #[error("custom claim `{0}`: the path is empty or has an empty step")]
    BadPath(String),
    #[error("unknown claim type `{0}`; expected `string`, `integer`, `bool` or `string_set`")]
    UnknownType(String),
    #[error("custom claim `{0}` is declared twice for one trust provider")]
    Duplicate(String),
    #[error(
        "custom claim `{name}` has type {first} for one trust provider and {second} for another"
    )]
    Conflict {
        name: String,
        first: ClaimType,
        second: ClaimType,
    },
    #[error("more than {MAX_CUSTOM_CLAIMS} custom claims")]
    TooMany,
}

impl ClaimType {
    /// The name of this type in configuration (`type = "string"`).
    pub fn config_name(self) -> &'static str {
        match self {
            ClaimType::String => "string",
            ClaimType::Int => "integer",
            ClaimType::Bool => "bool",
            ClaimType::StringSet => "string_set",
        }
    }

    pub fn from_config_name(name: &str) -> Result<ClaimType, CustomClaimError> {
        [Str, Int, Bool, StringSet]
            .into_iter()
            .find(|ty| ty.config_name() == name)
            .ok_or_else(|| CustomClaimError::UnknownType(name.to_owned()))
    }
}

impl CustomClaim {
    /// Validates a declaration: `name` must be a Gate identifier that no built-in `oidc` claim
    /// already uses, and every step of `path` non-empty.
    pub fn new(
        name: &str,
        path: Vec<String>,
        ty: ClaimType,
        required: bool,
    ) -> Result<CustomClaim, CustomClaimError> {
        if !is_identifier(name) {
            return Err(CustomClaimError::BadName(name.to_owned()));
        }
        if CUSTOM_CLAIMS_KIND.claim(name).is_some() {
            return Err(CustomClaimError::Builtin(name.to_owned()));
        }
        if path.is_empty() || path.iter().any(String::is_empty) {
            return Err(CustomClaimError::BadPath(name.to_owned()));
        }
        Ok(CustomClaim {
            name: name.to_owned(),
            path,
            ty,
            required,
        })
    }
}

/// Splits a dotted path, `org.team`, into its steps. A key that itself holds a dot needs the
/// list form of the path in configuration.
pub fn dotted_path(text: &str) -> Vec<String> {
    text.split('.').map(str::to_owned).collect()
}

/// Whether `name` lexes as exactly one Gate identifier (so no keyword).
fn is_identifier(name: &str) -> bool {
    let lexed = lex(name);
    match lexed.tokens.as_slice() {
        [(start, Token::Ident(ident), end)] => {
            lexed.errors.is_empty() && *start == 0 && *end == name.len() && *ident == name
        }
        _ => false,
    }
}

/// A custom claim as policies see it, whichever `oidc` trust provider vouches for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredClaim {
    pub name: String,
    pub ty: ClaimType,
    /// Every `oidc` trust provider declares it required.
    pub required: bool,
}

/// The custom claims of kind `oidc`: the union of what every `oidc` trust provider declares.
/// Their ids follow the built-in claims, so one id means the same claim for every provider;
/// a provider that does not declare a claim never carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomClaims {
    claims: Vec<DeclaredClaim>,
}

impl CustomClaims {
    /// No custom claims.
    pub const fn new() -> CustomClaims {
        CustomClaims { claims: Vec::new() }
    }

    /// Merges the declarations of each `oidc` trust provider (one slice per provider, empty
    /// for a provider that declares none). One name must have one type everywhere.
    pub fn merge<'a>(
        providers: impl IntoIterator<Item = &'a [CustomClaim]>,
    ) -> Result<CustomClaims, CustomClaimError> {
        let providers: Vec<&[CustomClaim]> = providers.into_iter().collect();
        let mut merged = CustomClaims::default();
        for declared in &providers {
            for (idx, claim) in declared.iter().enumerate() {
                if declared.iter().take(idx).any(|c| c.name == claim.name) {
                    return Err(CustomClaimError::Duplicate(claim.name.clone()));
                }
                merged.add(claim)?;
            }
        }
        for entry in &mut merged.claims {
            entry.required = providers.iter().all(|declared| {
                declared
                    .iter()
                    .any(|claim| claim.name == entry.name && claim.required)
            });
        }
        Ok(merged)
    }

    fn add(&mut self, claim: &CustomClaim) -> Result<(), CustomClaimError> {
        if let Some(known) = self.claims.iter().find(|known| known.name == claim.name) {
            if known.ty == claim.ty {
                return Ok(());
            }
            return Err(CustomClaimError::Conflict {
                name: claim.name.clone(),
                first: known.ty,
                second: claim.ty,
            });
        }
        if self.claims.len() >= MAX_CUSTOM_CLAIMS {
            return Err(CustomClaimError::TooMany);
        }
        self.claims.push(DeclaredClaim {
            name: claim.name.clone(),
            ty: claim.ty,
            required: claim.required,
        });
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.claims.len()
    }

    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
    }

    /// The declared claims in id order, each with its id.
    pub fn iter(&self) -> impl Iterator<Item = (ClaimId, &DeclaredClaim)> {
        self.claims
            .iter()
            .enumerate()
            .map(|(idx, claim)| (custom_id(idx), claim))
    }

    /// The custom claim called `name`.
    pub fn claim(&self, name: &str) -> Option<(ClaimId, &DeclaredClaim)> {
        self.iter().find(|(_, claim)| claim.name == name)
    }

    /// The custom claim with id `id`.
    pub fn get(&self, id: ClaimId) -> Option<&DeclaredClaim> {
        let first = CUSTOM_CLAIMS_KIND.claims().len();
        usize::from(id.0)
            .checked_sub(first)
            .and_then(|idx| self.claims.get(idx))
    }

    /// Rebuilds the custom claims a bundle records, in id order: each name a Gate identifier
    /// that no built-in `oidc` claim uses, no name twice, at most [`MAX_CUSTOM_CLAIMS`].
    pub fn from_declared(
        declared: impl IntoIterator<Item = DeclaredClaim>,
    ) -> Result<CustomClaims, CustomClaimError> {
        let mut claims = CustomClaims::default();
        for claim in declared {
            if !is_identifier(&claim.name) {
                return Err(CustomClaimError::BadName(claim.name));
            }
            if CUSTOM_CLAIMS_KIND.claim(&claim.name).is_some() {
                return Err(CustomClaimError::Builtin(claim.name));
            }
            if claims.claim(&claim.name).is_some() {
                return Err(CustomClaimError::Duplicate(claim.name));
            }
            if claims.claims.len() >= MAX_CUSTOM_CLAIMS {
                return Err(CustomClaimError::TooMany);
            }
            claims.claims.push(claim);
        }
        Ok(claims)
    }

    /// The names of the claims of `kind` that policies can read: built-in, then custom.
    pub fn names(&self, kind: ProviderKind) -> Vec<&str> {
        let builtin = kind.claims().iter().map(|def| def.name);
        let custom = self.claims.iter().map(|claim| claim.name.as_str());
        if kind == CUSTOM_CLAIMS_KIND {
            builtin.chain(custom).collect()
        } else {
            builtin.collect()
        }
    }

    /// Looks `name` up among the claims of `kind`: the built-in ones, then, for `oidc`, the
    /// custom ones. Gives the id, the type and whether the claim is required.
    pub fn resolve(&self, kind: ProviderKind, name: &str) -> Option<(ClaimId, ClaimType, bool)> {
        if let Some((id, def)) = kind.claim(name) {
            return Some((id, def.ty, def.required));
        }
        if kind != CUSTOM_CLAIMS_KIND {
            return None;
        }
        self.claim(name)
            .map(|(id, claim)| (id, claim.ty, claim.required))
    }

    /// The type of claim `id` of `kind`, built-in or custom.
    pub fn claim_type(&self, kind: ProviderKind, id: ClaimId) -> Option<ClaimType> {
        if let Some(def) = kind.claims().get(usize::from(id.0)) {
            return Some(def.ty);
        }
        if kind != CUSTOM_CLAIMS_KIND {
            return None;
        }
        self.get(id).map(|claim| claim.ty)
    }

    /// The name of claim `id` of `kind`, built-in or custom.
    pub fn claim_name(&self, kind: ProviderKind, id: ClaimId) -> Option<&str> {
        if let Some(def) = kind.claims().get(usize::from(id.0)) {
            return Some(def.name);
        }
        if kind != CUSTOM_CLAIMS_KIND {
            return None;
        }
        self.get(id).map(|claim| claim.name.as_str())
    }
}

/// How the custom claims a bundle was compiled with differ from those of a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomClaimsMismatch {
    #[error("the configuration does not declare custom claim `{0}`, which the bundle reads")]
    Missing(String),
    #[error("custom claim `{0}` is not in the bundle, which was compiled without it")]
    Extra(String),
    #[error("custom claim `{name}` is {bundle} in the bundle but {config} in the configuration")]
    Type {
        name: String,
        bundle: ClaimType,
        config: ClaimType,
    },
    #[error(
        "custom claim `{name}` is {} in the bundle but {} in the configuration",
        required_word(*.bundle), required_word(*.config)
    )]
    Required {
        name: String,
        bundle: bool,
        config: bool,
    },
    #[error(
        "custom claim `{0}` is declared in another order in the bundle than in the configuration"
    )]
    Order(String),
}

fn required_word(required: bool) -> &'static str {
    if required { "required" } else { "optional" }
}

impl CustomClaims {
    /// The first way in which `self`, the claims a bundle was compiled with, differs from
    /// `config`, the claims a configuration declares; none when they are the same.
    pub fn mismatch(&self, config: &CustomClaims) -> Option<CustomClaimsMismatch> {
        for (id, claim) in self.iter() {
            let Some((config_id, declared)) = config.claim(&claim.name) else {
                return Some(CustomClaimsMismatch::Missing(claim.name.clone()));
            };
            if declared.ty != claim.ty {
                return Some(CustomClaimsMismatch::Type {
                    name: claim.name.clone(),
                    bundle: claim.ty,
                    config: declared.ty,
                });
            }
            if declared.required != claim.required {
                return Some(CustomClaimsMismatch::Required {
                    name: claim.name.clone(),
                    bundle: claim.required,
                    config: declared.required,
                });
            }
            if config_id != id {
                return Some(CustomClaimsMismatch::Order(claim.name.clone()));
            }
        }
        config
            .iter()
            .find(|(_, declared)| self.claim(&declared.name).is_none())
            .map(|(_, declared)| CustomClaimsMismatch::Extra(declared.name.clone()))
    }
}

fn custom_id(idx: usize) -> ClaimId {
    // At most MAX_CUSTOM_CLAIMS custom claims follow the built-in ones, far below u16::MAX.
    let id = CUSTOM_CLAIMS_KIND.claims().len().saturating_add(idx);
    ClaimId(u16::try_from(id).unwrap_or(u16::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_names_are_unique_per_kind() {
        for kind in ProviderKind::ALL {
            let claims = kind.claims();
            for (idx, def) in claims.iter().enumerate() {
                let first = kind.claim(def.name).map(|(id, _)| id.0 as usize);
                assert_eq!(first, Some(idx), "{kind}: `{}` appears twice", def.name);
            }
        }
    }

    #[test]
    fn keywords_round_trip() {
        for kind in ProviderKind::ALL {
            assert_eq!(ProviderKind::from_keyword(kind.keyword()), Some(kind));
        }
        assert_eq!(ProviderKind::from_keyword("GitHub"), None);
        assert_eq!(ProviderKind::from_keyword("aws"), None);
    }
}
