//! The binary encoding of one access event inside a write-ahead log record.
//!
//! Little-endian integers; text as a `u32` length and UTF-8 bytes; an optional field as a
//! presence byte (0 or 1) and the value. The field order is fixed by [`encode`]; changing it
//! means a new write-ahead log format version, and [`decode_version`] keeps reading the older
//! ones. Version 2 added `rule_description` and `rule_severity` after `latency_ns`; version 3
//! added `evidence_sha256` after them; version 4 added `duration_ms`, `bytes_from_client` and
//! `bytes_to_client` after that (and the `connection_closed` kind).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::DateTime;
use uuid::Uuid;

use crate::error::DecodeError;
use crate::event::{AccessEvent, ConditionOutcome, Decision, EventKind, NewEvent};

/// Appends the encoding of `event` to `out`.
pub(crate) fn encode(event: &AccessEvent, out: &mut Vec<u8>) {
    let stamp = Stamp {
        event_id: event.event_id,
        seq: event.seq,
        time_micros: event.time.timestamp_micros(),
        node: &event.node,
    };
    encode_parts(&stamp, &event.details, out);
}

/// What the store adds to a caller's event: an [`AccessEvent`] but for the details, which the
/// intake encodes straight from the caller's [`NewEvent`].
pub(crate) struct Stamp<'a> {
    pub event_id: Uuid,
    pub seq: u64,
    pub time_micros: i64,
    pub node: &'a str,
}

/// Appends the encoding of the event `stamp` and `d` make to `out`.
pub(crate) fn encode_parts(stamp: &Stamp<'_>, d: &NewEvent, out: &mut Vec<u8>) {
    out.extend_from_slice(stamp.event_id.as_bytes());
    put_u64(out, stamp.seq);
    put_u64(out, stamp.time_micros.cast_unsigned());
    put_str(out, stamp.node);
    out.push(kind_code(d.kind));
    out.push(match d.decision {
        None => 0,
        Some(Decision::Allow) => 1,
        Some(Decision::Deny) => 2,
    });
    for text in [
        &d.reason,
        &d.reason_code,
        &d.rule,
        &d.bundle_hash,
        &d.workload,
        &d.trust_provider,
        &d.issuer,
        &d.subject,
        &d.claims,
        &d.target,
        &d.protocol,
        &d.host,
    ] {
        put_opt_str(out, text.as_deref());
    }
    put_opt(out, d.port, |out, port| {
        out.extend_from_slice(&port.to_le_bytes())
    });
    for text in [&d.action, &d.resource, &d.credential_provider] {
        put_opt_str(out, text.as_deref());
    }
    put_opt(out, d.credential_ttl_s, put_u64);
    put_opt_str(out, d.credential_ref.as_deref());
    put_ip(out, d.source_ip);
    put_len(out, d.conditions.len());
    for condition in &d.conditions {
        put_str(out, &condition.name);
        out.push(u8::from(condition.result));
    }
    put_opt(out, d.latency_ns, put_u64);
    put_opt_str(out, d.rule_description.as_deref());
    put_opt_str(out, d.rule_severity.as_deref());
    put_opt_str(out, d.evidence_sha256.as_deref());
    put_opt(out, d.duration_ms, put_u64);
    put_opt(out, d.bytes_from_client, put_u64);
    put_opt(out, d.bytes_to_client, put_u64);
}

/// Decodes one event of the current format; the whole of `bytes` must be the event.
#[cfg(test)]
pub(crate) fn decode(bytes: &[u8]) -> Result<AccessEvent, DecodeError> {
    decode_version(bytes, crate::wal::WAL_VERSION)
}

/// Decodes one event written by write-ahead log format `version` (1 or 2); the fields an older
/// version lacks are empty.
pub(crate) fn decode_version(bytes: &[u8], version: u32) -> Result<AccessEvent, DecodeError> {
    let mut r = Reader { bytes };
    let event_id = Uuid::from_bytes(r.array()?);
    let seq = r.u64()?;
    let micros = r.u64()?.cast_signed();
    let time = DateTime::from_timestamp_micros(micros).ok_or(DecodeError::TimeOutOfRange)?;
    let node = r.string()?;
    let kind = decode_kind(r.u8()?)?;
    let decision = decode_decision(r.u8()?)?;
    let details = NewEvent {
        kind,
        decision,
        reason: r.opt_string()?,
        reason_code: r.opt_string()?,
        rule: r.opt_string()?,
        bundle_hash: r.opt_string()?,
        workload: r.opt_string()?,
        trust_provider: r.opt_string()?,
        issuer: r.opt_string()?,
        subject: r.opt_string()?,
        claims: r.opt_string()?,
        target: r.opt_string()?,
        protocol: r.opt_string()?,
        host: r.opt_string()?,
        port: r.opt(|r| Ok(u16::from_le_bytes(r.array()?)))?,
        action: r.opt_string()?,
        resource: r.opt_string()?,
        credential_provider: r.opt_string()?,
        credential_ttl_s: r.opt(Reader::u64)?,
        credential_ref: r.opt_string()?,
        source_ip: r.ip()?,
        conditions: r.conditions()?,
        latency_ns: r.opt(Reader::u64)?,
        rule_description: None,
        rule_severity: None,
        evidence_sha256: None,
        duration_ms: None,
        bytes_from_client: None,
        bytes_to_client: None,
    };
    let details = if version >= 2 {
        NewEvent {
            rule_description: r.opt_string()?,
            rule_severity: r.opt_string()?,
            ..details
        }
    } else {
        details
    };
    let details = if version >= 3 {
        NewEvent {
            evidence_sha256: r.opt_string()?,
            ..details
        }
    } else {
        details
    };
    let details = if version >= 4 {
        NewEvent {
            duration_ms: r.opt(Reader::u64)?,
            bytes_from_client: r.opt(Reader::u64)?,
            bytes_to_client: r.opt(Reader::u64)?,
            ..details
        }
    } else {
        details
    };
    if !r.bytes.is_empty() {
        return Err(DecodeError::Trailing(r.bytes.len()));
    }
    Ok(AccessEvent {
        event_id,
        seq,
        time,
        node,
        details,
    })
}

fn kind_code(kind: EventKind) -> u8 {
    match kind {
        EventKind::Decision => 1,
        EventKind::CredentialIssued => 2,
        EventKind::AttestationFailed => 3,
        EventKind::PolicyChange => 4,
        EventKind::ConnectionClosed => 5,
    }
}

pub(crate) fn decode_decision(code: u8) -> Result<Option<Decision>, DecodeError> {
    match code {
        0 => Ok(None),
        1 => Ok(Some(Decision::Allow)),
        2 => Ok(Some(Decision::Deny)),
        code => Err(DecodeError::UnknownCode {
            field: "decision",
            code,
        }),
    }
}

pub(crate) fn decode_kind(code: u8) -> Result<EventKind, DecodeError> {
    EventKind::ALL
        .into_iter()
        .find(|kind| kind_code(*kind) == code)
        .ok_or(DecodeError::UnknownCode {
            field: "kind",
            code,
        })
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// Lengths are bounded by the record limit long before `u32::MAX`; saturating keeps a
/// pathological input from wrapping, and the record limit rejects it.
fn put_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_len(out, text.len());
    out.extend_from_slice(text.as_bytes());
}

fn put_opt<T>(out: &mut Vec<u8>, value: Option<T>, put: impl FnOnce(&mut Vec<u8>, T)) {
    match value {
        None => out.push(0),
        Some(value) => {
            out.push(1);
            put(out, value);
        }
    }
}

fn put_opt_str(out: &mut Vec<u8>, text: Option<&str>) {
    put_opt(out, text, put_str);
}

fn put_ip(out: &mut Vec<u8>, ip: Option<IpAddr>) {
    match ip {
        None => out.push(0),
        Some(IpAddr::V4(v4)) => {
            out.push(4);
            out.extend_from_slice(&v4.octets());
        }
        Some(IpAddr::V6(v6)) => {
            out.push(6);
            out.extend_from_slice(&v6.octets());
        }
    }
}

/// Reads the fields of one encoded event in order.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    /// The bytes not read yet.
    pub(crate) fn rest_len(&self) -> usize {
        self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (head, rest) = self
            .bytes
            .split_at_checked(n)
            .ok_or(DecodeError::Truncated)?;
        self.bytes = rest;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self
            .bytes
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated)?;
        self.bytes = rest;
        Ok(*head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(u8::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn len(&mut self) -> Result<usize, DecodeError> {
        let len = u32::from_le_bytes(self.array()?);
        usize::try_from(len).map_err(|_| DecodeError::Truncated)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        self.str().map(str::to_owned)
    }

    /// A text field, borrowed from the record.
    pub(crate) fn str(&mut self) -> Result<&'a str, DecodeError> {
        let len = self.len()?;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)
    }

    pub(crate) fn opt_str(&mut self) -> Result<Option<&'a str>, DecodeError> {
        self.opt(Self::str)
    }

    pub(crate) fn opt<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            code => Err(DecodeError::UnknownCode {
                field: "presence",
                code,
            }),
        }
    }

    fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        self.opt(Self::string)
    }

    pub(crate) fn ip(&mut self) -> Result<Option<IpAddr>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            4 => Ok(Some(IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)))),
            6 => Ok(Some(IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)))),
            code => Err(DecodeError::UnknownCode {
                field: "address family",
                code,
            }),
        }
    }

    fn conditions(&mut self) -> Result<Vec<ConditionOutcome>, DecodeError> {
        let mut conditions = Vec::new();
        self.each_condition(|name, result| {
            conditions.push(ConditionOutcome {
                name: name.to_owned(),
                result,
            });
        })?;
        Ok(conditions)
    }

    /// Reads the conditions, handing `each` one of them in turn.
    pub(crate) fn each_condition(
        &mut self,
        mut each: impl FnMut(&'a str, bool),
    ) -> Result<(), DecodeError> {
        let count = self.len()?;
        // Each condition takes at least five bytes, so a count past that is a lie; checking it
        // keeps a damaged count from reserving memory.
        if count > self.bytes.len() / 5 {
            return Err(DecodeError::Truncated);
        }
        for _ in 0..count {
            let name = self.str()?;
            let result = match self.u8()? {
                0 => false,
                1 => true,
                code => {
                    return Err(DecodeError::UnknownCode {
                        field: "condition result",
                        code,
                    });
                }
            };
            each(name, result);
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests unwrap")]
pub(crate) mod tests {
    use super::*;
    use chrono::Utc;

    /// An event with every field set; `latency_ns` and `bytes_to_client` at `u64::MAX`.
    pub(crate) fn full_event() -> AccessEvent {
        AccessEvent {
            event_id: Uuid::now_v7(),
            seq: 42,
            time: DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap(),
            node: "node-a".into(),
            details: NewEvent {
                kind: EventKind::CredentialIssued,
                decision: Some(Decision::Deny),
                reason: Some("forbidden by `no_forks`".into()),
                reason_code: Some("forbidden".into()),
                rule: Some("no_forks".into()),
                bundle_hash: Some("ab".repeat(32)),
                workload: Some("orders_api".into()),
                trust_provider: Some("github".into()),
                issuer: Some("https://token.actions.githubusercontent.com".into()),
                subject: Some("repo:acme/billing:ref:refs/tags/v1".into()),
                claims: Some(r#"{"repository":"acme/billing","ünï":"✓"}"#.into()),
                target: Some("orders_db".into()),
                protocol: Some("postgres".into()),
                host: Some("orders.db.internal".into()),
                port: Some(5432),
                action: Some("connect".into()),
                resource: Some("orders".into()),
                credential_provider: Some("postgres_role".into()),
                credential_ttl_s: Some(900),
                credential_ref: Some("hmac".into()),
                source_ip: Some("2001:db8::1".parse().unwrap()),
                conditions: vec![
                    ConditionOutcome {
                        name: "business_hours".into(),
                        result: true,
                    },
                    ConditionOutcome {
                        name: "office".into(),
                        result: false,
                    },
                ],
                latency_ns: Some(u64::MAX),
                rule_description: Some("release tags deploy".into()),
                rule_severity: Some("high".into()),
                evidence_sha256: Some("9f".repeat(32)),
                duration_ms: Some(1_500),
                bytes_from_client: Some(2_048),
                bytes_to_client: Some(u64::MAX),
            },
        }
    }

    fn round_trip(event: &AccessEvent) -> AccessEvent {
        let mut bytes = Vec::new();
        encode(event, &mut bytes);
        decode(&bytes).unwrap()
    }

    #[test]
    fn full_event_round_trips() {
        let event = full_event();
        assert_eq!(round_trip(&event), event);
    }

    #[test]
    fn empty_event_round_trips() {
        let mut event = full_event();
        event.details = NewEvent::default();
        event.details.source_ip = Some("10.0.0.1".parse().unwrap());
        assert_eq!(round_trip(&event), event);
    }

    #[test]
    fn every_prefix_is_rejected() {
        let mut bytes = Vec::new();
        encode(&full_event(), &mut bytes);
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes[..len]).is_err(),
                "prefix of {len} bytes decoded"
            );
        }
    }

    /// The connection fields, absent, take one presence byte each at the end of a record.
    fn without_connection_fields(mut event: AccessEvent) -> AccessEvent {
        event.details.duration_ms = None;
        event.details.bytes_from_client = None;
        event.details.bytes_to_client = None;
        event
    }

    #[test]
    fn version_3_records_still_decode() {
        // Version 3 ended with `evidence_sha256`: the same bytes without the three connection
        // fields (each a presence byte and a `u64`).
        let event = full_event();
        let mut bytes = Vec::new();
        encode(&event, &mut bytes);
        let v4_tail = 3 * (1 + 8);
        let v3 = &bytes[..bytes.len() - v4_tail];
        assert_eq!(
            decode_version(v3, 3).unwrap(),
            without_connection_fields(event)
        );
        assert_eq!(decode(v3), Err(DecodeError::Truncated));
    }

    #[test]
    fn version_2_records_still_decode() {
        // Version 2 ended with the rule fields: the same bytes without `evidence_sha256` and
        // the connection fields (absent here).
        let event = without_connection_fields(full_event());
        let mut bytes = Vec::new();
        encode(&event, &mut bytes);
        let v3_tail = 1 + 4 + 64 + 3;
        let v2 = &bytes[..bytes.len() - v3_tail];
        let decoded = decode_version(v2, 2).unwrap();
        let mut expected = event;
        expected.details.evidence_sha256 = None;
        assert_eq!(decoded, expected);
        assert_eq!(decode(v2), Err(DecodeError::Truncated));
    }

    #[test]
    fn version_1_records_still_decode() {
        // Version 1 ended with `latency_ns`: the same bytes without the rule fields, the
        // evidence hash and the connection fields (the last four absent here).
        let mut event = without_connection_fields(full_event());
        event.details.evidence_sha256 = None;
        let mut bytes = Vec::new();
        encode(&event, &mut bytes);
        let v2_tail = 2 * (1 + 4) + "release tags deploy".len() + "high".len() + 1 + 3;
        let v1 = &bytes[..bytes.len() - v2_tail];
        let decoded = decode_version(v1, 1).unwrap();
        let mut expected = event;
        expected.details.rule_description = None;
        expected.details.rule_severity = None;
        assert_eq!(decoded, expected);
        assert_eq!(decode(v1), Err(DecodeError::Truncated));
        assert_eq!(
            decode_version(&bytes, 1),
            Err(DecodeError::Trailing(v2_tail))
        );
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = Vec::new();
        encode(&full_event(), &mut bytes);
        bytes.push(0);
        assert_eq!(decode(&bytes), Err(DecodeError::Trailing(1)));
    }

    #[test]
    fn unknown_kind_is_rejected() {
        let mut bytes = Vec::new();
        let event = full_event();
        encode(&event, &mut bytes);
        let kind_at = 16 + 8 + 8 + 4 + event.node.len();
        bytes[kind_at] = 9;
        assert_eq!(
            decode(&bytes),
            Err(DecodeError::UnknownCode {
                field: "kind",
                code: 9
            })
        );
    }
}
