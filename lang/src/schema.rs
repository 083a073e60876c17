//! Built-in claim schemas: for each trust provider kind, the claims its evidence carries,
//! their types, where they sit in the token's JSON, and whether every token has them.
//!
//! The checker types claim references against these tables; the engine uses the same tables
//! to turn a verified token's JSON into [`ClaimValue`]s indexed by [`ClaimId`], so that the VM
//! reads claims by position and never by name.

use std::fmt;

/// The kind of a trust provider, as named in Gate (`github { … }`, `any kubernetes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProviderKind {
    Github,
    Kubernetes,
    Oidc,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 3] = [
        ProviderKind::Github,
        ProviderKind::Kubernetes,
        ProviderKind::Oidc,
    ];

    /// The keyword that names this kind in Gate and in configuration.
    pub fn keyword(self) -> &'static str {
        match self {
            ProviderKind::Github => "github",
            ProviderKind::Kubernetes => "kubernetes",
            ProviderKind::Oidc => "oidc",
        }
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
    }
}

const fn opt(name: &'static str, path: &'static [&'static str], ty: ClaimType) -> ClaimDef {
    ClaimDef {
        name,
        path,
        ty,
        required: false,
    }
}

use ClaimType::{Bool, String as Str, StringSet};

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

/// Any OpenID Connect issuer: the registered claims and the common profile claims.
// FIXME(#3): custom claims declared per trust provider in configuration.
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
        assert_eq!(ProviderKind::from_keyword("gitlab"), None);
    }
}
