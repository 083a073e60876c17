//! The access event: the record of one decision, credential issuance, attestation failure or
//! policy change.
//!
//! The caller fills a [`NewEvent`] with what it knows; the store assigns the event id, the
//! sequence number and the time, and keeps the result as an [`AccessEvent`].

use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What an access event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EventKind {
    /// An allow or deny decision.
    #[default]
    Decision,
    /// A credential handed to a workload.
    CredentialIssued,
    /// Evidence that failed verification.
    AttestationFailed,
    /// A new bundle or configuration taking effect.
    PolicyChange,
    /// A proxied connection that ended: how long it lasted and what crossed it.
    ConnectionClosed,
}

impl EventKind {
    /// Every kind, in code order.
    pub const ALL: [EventKind; 5] = [
        EventKind::Decision,
        EventKind::CredentialIssued,
        EventKind::AttestationFailed,
        EventKind::PolicyChange,
        EventKind::ConnectionClosed,
    ];

    /// The name stored in the `kind` column.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::Decision => "decision",
            EventKind::CredentialIssued => "credential_issued",
            EventKind::AttestationFailed => "attestation_failed",
            EventKind::PolicyChange => "policy_change",
            EventKind::ConnectionClosed => "connection_closed",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Allow,
    Deny,
}

impl Decision {
    /// The name stored in the `decision` column.
    pub const fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A named condition and what it evaluated to for this request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConditionOutcome {
    pub name: String,
    pub result: bool,
}

/// What the caller knows about an event; everything but the id, sequence number and time.
///
/// `Default` gives a `decision` event with every optional field empty, so callers set only
/// what they have. Secrets never go here: `credential_ref` is an HMAC of the credential's
/// identifier, never the credential.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewEvent {
    pub kind: EventKind,
    /// Allow or deny; empty for kinds that decide nothing.
    pub decision: Option<Decision>,
    /// Why, as a sentence for people.
    pub reason: Option<String>,
    /// Why, as a stable code for machines (`forbidden`, `token_expired`, …).
    pub reason_code: Option<String>,
    /// The deciding rule.
    pub rule: Option<String>,
    /// The SHA-256 content hash of the bundle that decided, in hex.
    pub bundle_hash: Option<String>,
    pub workload: Option<String>,
    pub trust_provider: Option<String>,
    pub issuer: Option<String>,
    pub subject: Option<String>,
    /// The verified claims as JSON text.
    pub claims: Option<String>,
    pub target: Option<String>,
    pub protocol: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub action: Option<String>,
    pub resource: Option<String>,
    pub credential_provider: Option<String>,
    pub credential_ttl_s: Option<u64>,
    /// HMAC of the issued credential's identifier.
    pub credential_ref: Option<String>,
    pub source_ip: Option<IpAddr>,
    /// The conditions evaluated for the decision, in evaluation order.
    pub conditions: Vec<ConditionOutcome>,
    /// Time from request to decision.
    pub latency_ns: Option<u64>,
    /// The deciding rule's `@description` annotation.
    pub rule_description: Option<String>,
    /// The deciding rule's `@severity` annotation: `low`, `medium`, `high` or `critical`.
    pub rule_severity: Option<String>,
    /// The SHA-256 of the evidence the caller presented (the token as sent), in hex: it
    /// tells one token's uses apart without keeping the token.
    pub evidence_sha256: Option<String>,
    /// For `connection_closed`: how long the connection lasted, in milliseconds.
    pub duration_ms: Option<u64>,
    /// For `connection_closed`: the bytes the client sent through the connection.
    pub bytes_from_client: Option<u64>,
    /// For `connection_closed`: the bytes the client received through it.
    pub bytes_to_client: Option<u64>,
}

/// An event as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEvent {
    /// A UUIDv7, so ids sort by creation time.
    pub event_id: Uuid,
    /// Per node, starting at 1, gap-free, continued across restarts.
    pub seq: u64,
    /// When the store recorded the event, UTC, with microsecond precision.
    pub time: DateTime<Utc>,
    /// The node that recorded the event.
    pub node: String,
    /// What the caller supplied.
    pub details: NewEvent,
}
