//! The Arrow schema of the `access_events` table and the conversion of events to a batch.
//!
//! Integers are signed (`Int64`, `Int32`) although the Rust fields are unsigned, so that every
//! Parquet reader (Trino, Athena, Spark, DuckDB) reads them without surprises. The hive
//! partition column `date` is not part of the file schema; the query layer adds it.

use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringBuilder, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use uuid::Uuid;

use crate::error::AuditError;
use crate::event::{AccessEvent, ConditionOutcome, NewEvent};

/// The time zone of the `time` column.
pub const TIME_ZONE: &str = "UTC";

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(build_schema);

/// The schema of the event files, column by column as `docs/audit-schema.md` lists them.
pub fn access_events_schema() -> SchemaRef {
    Arc::clone(&SCHEMA)
}

fn build_schema() -> SchemaRef {
    let fields: Vec<Field> = COLUMNS
        .iter()
        .map(|column| Field::new(column.name, column.values.data_type(), column.nullable))
        .collect();
    Arc::new(Schema::new(fields))
}

/// One column of `access_events`: its name, whether it may be null, and where its values come
/// from. The table is the schema: [`build_schema`] and [`event_column`] both read it, so the two
/// cannot disagree.
struct Column {
    name: &'static str,
    nullable: bool,
    values: Values,
}

/// How a column's values are taken from an event. Text is copied straight from the event into
/// the Arrow buffers, without a `String` per row: sealing builds every column of every event.
enum Values {
    /// Text the event holds.
    Text(fn(&AccessEvent) -> Option<&str>),
    /// Text made from the event, written into the buffer given; `false` for null.
    Written(fn(&AccessEvent, &mut String) -> bool),
    /// An unsigned integer stored as `Int64`; `None` for null.
    Int64(fn(&AccessEvent) -> Option<u64>),
    /// The port, as `Int32`.
    Port,
    /// The event's time.
    Time,
}

impl Values {
    fn data_type(&self) -> DataType {
        match self {
            Values::Text(_) | Values::Written(_) => DataType::Utf8,
            Values::Int64(_) => DataType::Int64,
            Values::Port => DataType::Int32,
            Values::Time => DataType::Timestamp(TimeUnit::Microsecond, Some(TIME_ZONE.into())),
        }
    }
}

const fn required(name: &'static str, values: Values) -> Column {
    Column {
        name,
        nullable: false,
        values,
    }
}

const fn optional(name: &'static str, values: Values) -> Column {
    Column {
        name,
        nullable: true,
        values,
    }
}

/// The columns, in file order.
static COLUMNS: [Column; 33] = [
    required("event_id", Values::Written(write_event_id)),
    required("seq", Values::Int64(|e| Some(e.seq))),
    required("time", Values::Time),
    required("node", Values::Text(|e| Some(&e.node))),
    required("kind", Values::Text(|e| Some(e.details.kind.as_str()))),
    optional(
        "decision",
        Values::Text(|e| e.details.decision.map(|d| d.as_str())),
    ),
    optional("reason", Values::Text(|e| e.details.reason.as_deref())),
    optional(
        "reason_code",
        Values::Text(|e| e.details.reason_code.as_deref()),
    ),
    optional("rule", Values::Text(|e| e.details.rule.as_deref())),
    optional(
        "bundle_hash",
        Values::Text(|e| e.details.bundle_hash.as_deref()),
    ),
    optional("workload", Values::Text(|e| e.details.workload.as_deref())),
    optional(
        "trust_provider",
        Values::Text(|e| e.details.trust_provider.as_deref()),
    ),
    optional("issuer", Values::Text(|e| e.details.issuer.as_deref())),
    optional("subject", Values::Text(|e| e.details.subject.as_deref())),
    optional("claims", Values::Text(|e| e.details.claims.as_deref())),
    optional("target", Values::Text(|e| e.details.target.as_deref())),
    optional("protocol", Values::Text(|e| e.details.protocol.as_deref())),
    optional("host", Values::Text(|e| e.details.host.as_deref())),
    optional("port", Values::Port),
    optional("action", Values::Text(|e| e.details.action.as_deref())),
    optional("resource", Values::Text(|e| e.details.resource.as_deref())),
    optional(
        "credential_provider",
        Values::Text(|e| e.details.credential_provider.as_deref()),
    ),
    optional(
        "credential_ttl_s",
        Values::Int64(|e| e.details.credential_ttl_s),
    ),
    optional(
        "credential_ref",
        Values::Text(|e| e.details.credential_ref.as_deref()),
    ),
    optional("source_ip", Values::Written(write_source_ip)),
    optional("conditions", Values::Written(write_conditions)),
    optional("latency_ns", Values::Int64(|e| e.details.latency_ns)),
    optional(
        "rule_description",
        Values::Text(|e| e.details.rule_description.as_deref()),
    ),
    optional(
        "rule_severity",
        Values::Text(|e| e.details.rule_severity.as_deref()),
    ),
    optional(
        "evidence_sha256",
        Values::Text(|e| e.details.evidence_sha256.as_deref()),
    ),
    optional("duration_ms", Values::Int64(|e| e.details.duration_ms)),
    optional(
        "bytes_from_client",
        Values::Int64(|e| e.details.bytes_from_client),
    ),
    optional(
        "bytes_to_client",
        Values::Int64(|e| e.details.bytes_to_client),
    ),
];

/// Converts events to one batch of [`access_events_schema`], in the order given.
pub fn events_to_batch(events: &[AccessEvent]) -> Result<RecordBatch, AuditError> {
    let columns = (0..COLUMNS.len())
        .map(|idx| event_column(events, idx))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(access_events_schema(), columns)?)
}

/// Column `idx` of [`access_events_schema`] for `events`, in the order given: what a seal
/// builds one column at a time, so that columns can be built and encoded on several threads.
pub fn event_column(events: &[AccessEvent], idx: usize) -> Result<ArrayRef, AuditError> {
    let Some(column) = COLUMNS.get(idx) else {
        return Err(AuditError::Arrow(arrow::error::ArrowError::SchemaError(
            format!("`access_events` has no column {idx}"),
        )));
    };
    let array: ArrayRef = match column.values {
        Values::Text(get) => Arc::new(text_column(events, get)),
        Values::Written(write) => Arc::new(written_column(events, write)),
        Values::Int64(get) => {
            let values = events
                .iter()
                .map(|event| get(event).map(|v| to_i64(column.name, v)).transpose())
                .collect::<Result<Int64Array, AuditError>>()?;
            Arc::new(values)
        }
        Values::Port => Arc::new(
            events
                .iter()
                .map(|event| event.details.port.map(i32::from))
                .collect::<Int32Array>(),
        ),
        Values::Time => Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                events.iter().map(|event| event.time.timestamp_micros()),
            )
            .with_timezone(TIME_ZONE),
        ),
    };
    Ok(array)
}

fn text_column(
    events: &[AccessEvent],
    get: fn(&AccessEvent) -> Option<&str>,
) -> arrow::array::StringArray {
    let bytes = events.iter().filter_map(get).map(str::len).sum();
    let mut builder = StringBuilder::with_capacity(events.len(), bytes);
    for event in events {
        builder.append_option(get(event));
    }
    builder.finish()
}

fn written_column(
    events: &[AccessEvent],
    write: fn(&AccessEvent, &mut String) -> bool,
) -> arrow::array::StringArray {
    let mut builder = StringBuilder::with_capacity(events.len(), events.len() * 16);
    let mut text = String::new();
    for event in events {
        text.clear();
        if write(event, &mut text) {
            builder.append_value(&text);
        } else {
            builder.append_null();
        }
    }
    builder.finish()
}

/// The `event_id` column: the id in its hyphenated lowercase form.
fn write_event_id(event: &AccessEvent, out: &mut String) -> bool {
    out.push_str(
        event
            .event_id
            .hyphenated()
            .encode_lower(&mut Uuid::encode_buffer()),
    );
    true
}

fn write_source_ip(event: &AccessEvent, out: &mut String) -> bool {
    match event.details.source_ip {
        // Writing to a `String` cannot fail.
        Some(ip) => write!(out, "{ip}").is_ok(),
        None => false,
    }
}

/// The `conditions` column: a JSON array of `{"name": …, "result": …}`, compact, or null when
/// the event evaluated no condition.
fn write_conditions(event: &AccessEvent, out: &mut String) -> bool {
    let conditions = &event.details.conditions;
    if conditions.is_empty() {
        return false;
    }
    out.push('[');
    for (idx, ConditionOutcome { name, result }) in conditions.iter().enumerate() {
        if idx > 0 {
            out.push(',');
        }
        out.push_str(r#"{"name":"#);
        write_json_string(name, out);
        out.push_str(if *result {
            r#","result":true}"#
        } else {
            r#","result":false}"#
        });
    }
    out.push(']');
    true
}

/// `text` as a JSON string, escaped as `serde_json` escapes it (which wrote this column before),
/// so the stored text is the same.
pub(crate) fn write_json_string(text: &str, out: &mut String) {
    out.push('"');
    let plain = |b: u8| b >= 0x20 && b != b'"' && b != b'\\';
    if text.bytes().all(plain) {
        out.push_str(text);
        out.push('"');
        return;
    }
    for c in text.chars() {
        match c {
            '"' => out.push_str(r#"\""#),
            '\\' => out.push_str(r"\\"),
            '\n' => out.push_str(r"\n"),
            '\r' => out.push_str(r"\r"),
            '\t' => out.push_str(r"\t"),
            '\u{08}' => out.push_str(r"\b"),
            '\u{0c}' => out.push_str(r"\f"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, r"\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn to_i64(column: &'static str, value: u64) -> Result<i64, AuditError> {
    i64::try_from(value).map_err(|_| AuditError::OutOfRange { column, value })
}

/// Checks that the caller's unsigned values fit their columns. The store checks before an
/// event enters the log, so that sealing never fails on a value.
pub(crate) fn check_ranges(details: &NewEvent) -> Result<(), AuditError> {
    if let Some(ttl) = details.credential_ttl_s {
        to_i64("credential_ttl_s", ttl)?;
    }
    for (column, value) in [
        ("latency_ns", details.latency_ns),
        ("duration_ms", details.duration_ms),
        ("bytes_from_client", details.bytes_from_client),
        ("bytes_to_client", details.bytes_to_client),
    ] {
        if let Some(value) = value {
            to_i64(column, value)?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests unwrap")]
mod tests {
    use super::*;
    use crate::event::{ConditionOutcome, Decision};
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int64Type;
    use chrono::DateTime;
    use uuid::Uuid;

    fn event(seq: u64, details: NewEvent) -> AccessEvent {
        AccessEvent {
            event_id: Uuid::now_v7(),
            seq,
            time: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            node: "n1".into(),
            details,
        }
    }

    #[test]
    fn batch_has_schema_and_values() {
        let details = NewEvent {
            decision: Some(Decision::Allow),
            workload: Some("orders_api".into()),
            rule_severity: Some("critical".into()),
            port: Some(5432),
            credential_ttl_s: Some(900),
            conditions: vec![ConditionOutcome {
                name: "hours".into(),
                result: true,
            }],
            ..NewEvent::default()
        };
        let batch = events_to_batch(&[event(7, details), event(8, NewEvent::default())]).unwrap();

        assert_eq!(batch.schema(), access_events_schema());
        assert_eq!(batch.num_rows(), 2);
        let seq = batch
            .column_by_name("seq")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(seq.values().to_vec(), vec![7, 8]);
        let decision = batch.column_by_name("decision").unwrap().as_string::<i32>();
        assert_eq!(decision.value(0), "allow");
        assert!(decision.is_null(1));
        let conditions = batch
            .column_by_name("conditions")
            .unwrap()
            .as_string::<i32>();
        assert_eq!(conditions.value(0), r#"[{"name":"hours","result":true}]"#);
        assert!(conditions.is_null(1));
        let kind = batch.column_by_name("kind").unwrap().as_string::<i32>();
        assert_eq!(kind.value(1), "decision");
        let severity = batch
            .column_by_name("rule_severity")
            .unwrap()
            .as_string::<i32>();
        assert_eq!(severity.value(0), "critical");
        assert!(severity.is_null(1));
        let description = batch.column_by_name("rule_description").unwrap();
        assert_eq!(description.null_count(), 2);
    }

    #[test]
    fn conditions_are_the_json_serde_json_writes() {
        let names = [
            "hours",
            "a \"quoted\" name",
            "back\\slash",
            "tab\tnew\nline\u{1}\u{7f}",
            "ünï ✓",
        ];
        let conditions: Vec<ConditionOutcome> = names
            .iter()
            .enumerate()
            .map(|(idx, name)| ConditionOutcome {
                name: (*name).to_owned(),
                result: idx % 2 == 0,
            })
            .collect();
        let expected = serde_json::Value::Array(
            conditions
                .iter()
                .map(|c| serde_json::json!({ "name": c.name, "result": c.result }))
                .collect(),
        )
        .to_string();
        let details = NewEvent {
            conditions,
            ..NewEvent::default()
        };
        let mut written = String::new();
        assert!(write_conditions(&event(1, details), &mut written));
        assert_eq!(written, expected);
    }

    #[test]
    fn values_past_i64_are_refused() {
        let details = NewEvent {
            latency_ns: Some(u64::MAX),
            ..NewEvent::default()
        };
        let err = events_to_batch(&[event(1, details)]).unwrap_err();
        assert!(
            matches!(
                err,
                AuditError::OutOfRange {
                    column: "latency_ns",
                    ..
                }
            ),
            "{err}"
        );
    }
}
