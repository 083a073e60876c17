//! The request file of `policyc explain`: one request as JSON, with the caller's claims by
//! their Gate names, as a policy's `test` would give them.
//!
//! ```json
//! {
//!   "kind": "github",
//!   "claims": { "repository": "acme/billing", "ref": "refs/tags/v1.4.0" },
//!   "target": "billing_api",
//!   "action": "POST",
//!   "resource": "/v1/invoices",
//!   "source_ip": "10.0.4.7",
//!   "time": "2026-12-04T10:00:00Z"
//! }
//! ```
//!
//! `target` is a target's name, or an endpoint `{ "protocol": "https", "host": "…", "port":
//! 443 }`, whose `port` may be left out for the protocol's own, as in a Gate test. `time` is an RFC 3339 timestamp with an offset, or Unix seconds. Claim values are
//! strings, integers, booleans, or arrays of strings, as the claim's type says. Every other
//! member is refused, so a misspelt one is not silently ignored, and so is a member given twice.

use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::ir::Protocol;
use crate::reference::{Request, TargetQuery};
use crate::schema::{ClaimType, ClaimValue, CustomClaims, ProviderKind};
use crate::time::parse_timestamp;

/// Request files larger than this are refused unread.
pub const MAX_REQUEST_FILE_BYTES: u64 = 1024 * 1024;

/// A request read from a file, owning its parts; [`RequestFile::request`] lends the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFile {
    pub kind: ProviderKind,
    pub claims: Vec<Option<ClaimValue>>,
    pub target: FileTarget,
    pub action: Option<String>,
    pub resource: Option<String>,
    pub source_ip: Option<IpAddr>,
    pub time: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileTarget {
    Named(String),
    Endpoint {
        protocol: String,
        host: String,
        port: u16,
    },
}

/// Why a request file cannot be used; each names the member at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestFileError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("the request must be a JSON object")]
    NotAnObject,
    #[error("unknown member `{0}`; known: kind, claims, target, action, resource, source_ip, time")]
    UnknownMember(String),
    #[error("`{0}` is required")]
    Missing(&'static str),
    #[error("`{member}` must be {expected}")]
    Type {
        member: String,
        expected: &'static str,
    },
    #[error("`kind` is `{0}`, which is not a trust provider kind; known: {1}")]
    UnknownKind(String, String),
    #[error("`claims.{claim}` is not a claim of `{kind}`; its claims: {known}")]
    UnknownClaim {
        claim: String,
        kind: ProviderKind,
        known: String,
    },
    #[error("`claims.{claim}` must be {expected}")]
    ClaimType {
        claim: String,
        expected: &'static str,
    },
    #[error("`time`: {0}")]
    Time(String),
    #[error("`source_ip` is not an IP address: {0}")]
    SourceIp(String),
}

impl RequestFile {
    /// Parses a request file's text; `custom_claims` are the `oidc` claims beyond the
    /// built-in ones, as `--claims` declares them.
    pub fn parse(
        text: &str,
        custom_claims: &CustomClaims,
    ) -> Result<RequestFile, RequestFileError> {
        // A member given twice would otherwise quietly take its last value.
        serde_json::from_str::<NoDuplicateMembers>(text)
            .map_err(|error| RequestFileError::Json(error.to_string()))?;
        let value: Value = serde_json::from_str(text)
            .map_err(|error| RequestFileError::Json(error.to_string()))?;
        let Value::Object(object) = value else {
            return Err(RequestFileError::NotAnObject);
        };
        let known = [
            "kind",
            "claims",
            "target",
            "action",
            "resource",
            "source_ip",
            "time",
        ];
        if let Some(unknown) = object.keys().find(|key| !known.contains(&key.as_str())) {
            return Err(RequestFileError::UnknownMember(unknown.clone()));
        }
        let kind_name = string(&object, "kind")?.ok_or(RequestFileError::Missing("kind"))?;
        let kind = ProviderKind::ALL
            .into_iter()
            .find(|kind| kind.keyword() == kind_name)
            .ok_or_else(|| {
                let names: Vec<&str> = ProviderKind::ALL.iter().map(|k| k.keyword()).collect();
                RequestFileError::UnknownKind(kind_name.to_owned(), names.join(", "))
            })?;
        let claims = claims(kind, object.get("claims"), custom_claims)?;
        let target = match object.get("target") {
            None => return Err(RequestFileError::Missing("target")),
            Some(Value::String(name)) => FileTarget::Named(name.clone()),
            Some(Value::Object(endpoint)) => endpoint_target(endpoint)?,
            Some(_) => {
                return Err(RequestFileError::Type {
                    member: "target".to_owned(),
                    expected: "a target's name or an object with protocol, host and port",
                });
            }
        };
        let source_ip = string(&object, "source_ip")?
            .map(|text| {
                text.parse::<IpAddr>()
                    .map_err(|_| RequestFileError::SourceIp(text.to_owned()))
            })
            .transpose()?;
        let time = match object.get("time") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(
                parse_timestamp(text).map_err(|error| RequestFileError::Time(error.to_string()))?,
            ),
            Some(Value::Number(number)) => Some(number.as_i64().ok_or_else(|| {
                RequestFileError::Time("Unix seconds must be a whole number".to_owned())
            })?),
            Some(_) => {
                return Err(RequestFileError::Type {
                    member: "time".to_owned(),
                    expected: "an RFC 3339 timestamp or Unix seconds",
                });
            }
        };
        Ok(RequestFile {
            kind,
            claims,
            target,
            action: string(&object, "action")?.map(str::to_owned),
            resource: string(&object, "resource")?.map(str::to_owned),
            source_ip,
            time,
        })
    }

    /// The request the VM and the reference evaluator take.
    pub fn request(&self) -> Request<'_> {
        let target = match &self.target {
            FileTarget::Named(name) => TargetQuery::Named(name),
            FileTarget::Endpoint {
                protocol,
                host,
                port,
            } => TargetQuery::Endpoint {
                protocol,
                host,
                port: *port,
            },
        };
        Request {
            kind: self.kind,
            claims: &self.claims,
            target,
            action: self.action.as_deref(),
            resource: self.resource.as_deref(),
            source_ip: self.source_ip,
            time: self.time,
        }
    }
}

/// Any JSON text whose objects each name a member once; deserializing it checks just that.
struct NoDuplicateMembers;

impl<'de> serde::Deserialize<'de> for NoDuplicateMembers {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NoDuplicateMembers)
    }
}

impl<'de> serde::de::Visitor<'de> for NoDuplicateMembers {
    type Value = NoDuplicateMembers;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("JSON")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(member) = map.next_key::<String>()? {
            if !seen.insert(member.clone()) {
                return Err(serde::de::Error::custom(format_args!(
                    "member `{member}` is given twice"
                )));
            }
            map.next_value::<NoDuplicateMembers>()?;
        }
        Ok(NoDuplicateMembers)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<NoDuplicateMembers>()?.is_some() {}
        Ok(NoDuplicateMembers)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(NoDuplicateMembers)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(NoDuplicateMembers)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(NoDuplicateMembers)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(NoDuplicateMembers)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(NoDuplicateMembers)
    }

    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(NoDuplicateMembers)
    }
}

fn string<'v>(
    object: &'v Map<String, Value>,
    member: &str,
) -> Result<Option<&'v str>, RequestFileError> {
    match object.get(member) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(RequestFileError::Type {
            member: member.to_owned(),
            expected: "a string",
        }),
    }
}

fn endpoint_target(endpoint: &Map<String, Value>) -> Result<FileTarget, RequestFileError> {
    let field = |name: &str| format!("target.{name}");
    if let Some(unknown) = endpoint
        .keys()
        .find(|key| !["protocol", "host", "port"].contains(&key.as_str()))
    {
        return Err(RequestFileError::UnknownMember(field(unknown)));
    }
    let text = |name: &'static str| match endpoint.get(name) {
        Some(Value::String(text)) => Ok(text.clone()),
        _ => Err(RequestFileError::Type {
            member: field(name),
            expected: "a string",
        }),
    };
    let protocol = text("protocol")?;
    let port = match endpoint.get("port") {
        // As in a Gate test's endpoint: the protocol's own port.
        None => Protocol::from_keyword(&protocol)
            .map(Protocol::default_port)
            .ok_or_else(|| RequestFileError::Type {
                member: field("port"),
                expected: "given: only `http`, `https` and `postgres` have a default port",
            })?,
        Some(port) => port
            .as_u64()
            .and_then(|port| u16::try_from(port).ok())
            .ok_or_else(|| RequestFileError::Type {
                member: field("port"),
                expected: "a port number from 0 to 65535",
            })?,
    };
    Ok(FileTarget::Endpoint {
        protocol,
        host: text("host")?,
        port,
    })
}

/// The claims of `kind` by id, from an object of claims by name.
fn claims(
    kind: ProviderKind,
    given: Option<&Value>,
    custom_claims: &CustomClaims,
) -> Result<Vec<Option<ClaimValue>>, RequestFileError> {
    let names = custom_claims.names(kind);
    let mut claims = vec![None; names.len()];
    let object = match given {
        None | Some(Value::Null) => return Ok(claims),
        Some(Value::Object(object)) => object,
        Some(_) => {
            return Err(RequestFileError::Type {
                member: "claims".to_owned(),
                expected: "an object of claims by name",
            });
        }
    };
    for (name, value) in object {
        let id = match kind.claim(name) {
            Some((id, _)) => Some(id),
            None if kind == ProviderKind::Oidc => custom_claims.claim(name).map(|(id, _)| id),
            None => None,
        };
        let (Some(id), Some(ty)) = (id, id.and_then(|id| custom_claims.claim_type(kind, id)))
        else {
            return Err(RequestFileError::UnknownClaim {
                claim: name.clone(),
                kind,
                known: names.join(", "),
            });
        };
        let wrong = |expected| RequestFileError::ClaimType {
            claim: name.clone(),
            expected,
        };
        let typed = match (ty, value) {
            (_, Value::Null) => None,
            (ClaimType::String, Value::String(text)) => Some(ClaimValue::String(text.clone())),
            (ClaimType::String, _) => return Err(wrong("a string")),
            (ClaimType::Int, Value::Number(number)) => Some(ClaimValue::Int(
                number.as_i64().ok_or_else(|| wrong("an integer"))?,
            )),
            (ClaimType::Int, _) => return Err(wrong("an integer")),
            (ClaimType::Bool, Value::Bool(flag)) => Some(ClaimValue::Bool(*flag)),
            (ClaimType::Bool, _) => return Err(wrong("true or false")),
            (ClaimType::StringSet, Value::Array(items)) => {
                let strings: Option<Vec<String>> = items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect();
                let mut strings =
                    strings.ok_or_else(|| wrong("a string or an array of strings"))?;
                strings.sort();
                strings.dedup();
                Some(ClaimValue::StringSet(strings))
            }
            // As in a token: a lone string is a set of one.
            (ClaimType::StringSet, Value::String(text)) => {
                Some(ClaimValue::StringSet(vec![text.clone()]))
            }
            (ClaimType::StringSet, _) => return Err(wrong("a string or an array of strings")),
        };
        if let Some(slot) = claims.get_mut(usize::from(id.0)) {
            *slot = typed;
        }
    }
    Ok(claims)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RequestFile, RequestFileError> {
        RequestFile::parse(text, &CustomClaims::default())
    }

    #[test]
    fn an_endpoint_without_a_port_has_its_protocol_s() {
        for (protocol, port) in [("https", 443), ("HTTP", 80), ("postgres", 5432)] {
            let file = parse(&format!(
                r#"{{"kind": "github", "target": {{"protocol": "{protocol}", "host": "h"}}}}"#
            ))
            .unwrap();
            match file.request().target {
                TargetQuery::Endpoint { port: found, .. } => assert_eq!(found, port, "{protocol}"),
                other => panic!("{other:?}"),
            }
        }
        let error = parse(r#"{"kind": "github", "target": {"protocol": "ftp", "host": "h"}}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("`target.port` must be given"), "{error}");
    }

    #[test]
    fn a_full_request_reads() {
        let file = parse(
            r#"{"kind": "github", "claims": {"repository": "acme/api", "run_number": "7"},
                "target": {"protocol": "https", "host": "api.example", "port": 443},
                "action": "GET", "source_ip": "10.0.0.1", "time": "2026-12-04T10:00:00Z"}"#,
        )
        .unwrap();
        let request = file.request();
        assert_eq!(request.kind, ProviderKind::Github);
        let (id, _) = ProviderKind::Github.claim("repository").unwrap();
        assert_eq!(
            request.claims[usize::from(id.0)],
            Some(ClaimValue::String("acme/api".to_owned()))
        );
        assert_eq!(request.time, Some(1_796_378_400));
        assert!(matches!(
            request.target,
            TargetQuery::Endpoint { port: 443, .. }
        ));
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            ("[]", "must be a JSON object"),
            (r#"{"kind": "github"}"#, "`target` is required"),
            (r#"{"kind": "gh", "target": "t"}"#, "`kind` is `gh`"),
            (
                r#"{"kind": "github", "target": "t", "claim": {}}"#,
                "unknown member `claim`",
            ),
            (
                r#"{"kind": "github", "target": "t", "claims": {"repo": "x"}}"#,
                "`claims.repo` is not a claim of `github`",
            ),
            (
                r#"{"kind": "github", "target": "t", "claims": {"repository": 3}}"#,
                "`claims.repository` must be a string",
            ),
            (
                r#"{"kind": "github", "target": "t", "time": "2026-12-04 10:00"}"#,
                "`time`:",
            ),
            (
                r#"{"kind": "github", "target": {"protocol": "https", "host": "h", "port": 70000}}"#,
                "`target.port` must be a port number",
            ),
            (
                r#"{"kind": "github", "target": {"host": "h", "port": 443}}"#,
                "`target.protocol` must be a string",
            ),
            (
                r#"{"kind": "github", "target": "a", "target": "b"}"#,
                "member `target` is given twice at line 1",
            ),
            (
                "{\"kind\": \"github\", \"target\": \"t\",\n \"claims\": {\"ref\": \"a\", \"ref\": \"b\"}}",
                "member `ref` is given twice at line 2",
            ),
        ];
        for (text, expected) in cases {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
