//! The Arrow schema of the `access_events` table and the conversion of events to a batch.
//!
//! Integers are signed (`Int64`, `Int32`) although the Rust fields are unsigned, so that every
//! Parquet reader (Trino, Athena, Spark, DuckDB) reads them without surprises. The hive
//! partition column `date` is not part of the file schema; the query layer adds it.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::AuditError;
use crate::event::{AccessEvent, NewEvent};

/// The time zone of the `time` column.
pub const TIME_ZONE: &str = "UTC";

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(build_schema);

/// The schema of the event files, column by column as `docs/audit-schema.md` lists them.
pub fn access_events_schema() -> SchemaRef {
    Arc::clone(&SCHEMA)
}

fn build_schema() -> SchemaRef {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let int64 = |name: &str| Field::new(name, DataType::Int64, true);
    let time = DataType::Timestamp(TimeUnit::Microsecond, Some(TIME_ZONE.into()));
    let fields = vec![
        text("event_id", false),
        Field::new("seq", DataType::Int64, false),
        Field::new("time", time, false),
        text("node", false),
        text("kind", false),
        text("decision", true),
        text("reason", true),
        text("reason_code", true),
        text("rule", true),
        text("bundle_hash", true),
        text("workload", true),
        text("trust_provider", true),
        text("issuer", true),
        text("subject", true),
        text("claims", true),
        text("target", true),
        text("protocol", true),
        text("host", true),
        Field::new("port", DataType::Int32, true),
        text("action", true),
        text("resource", true),
        text("credential_provider", true),
        int64("credential_ttl_s"),
        text("credential_ref", true),
        text("source_ip", true),
        text("conditions", true),
        int64("latency_ns"),
        text("rule_description", true),
        text("rule_severity", true),
        text("evidence_sha256", true),
    ];
    Arc::new(Schema::new(fields))
}

/// Converts events to one batch of [`access_events_schema`], in the order given.
pub fn events_to_batch(events: &[AccessEvent]) -> Result<RecordBatch, AuditError> {
    let details: Vec<&NewEvent> = events.iter().map(|event| &event.details).collect();
    let text = |get: fn(&NewEvent) -> Option<&str>| -> ArrayRef {
        Arc::new(details.iter().map(|d| get(d)).collect::<StringArray>())
    };
    let int64 = |column: &'static str, get: fn(&NewEvent) -> Option<u64>| {
        let values: Result<Int64Array, AuditError> = details
            .iter()
            .map(|d| get(d).map(|v| to_i64(column, v)).transpose())
            .collect();
        values.map(|values| Arc::new(values) as ArrayRef)
    };

    let event_ids: StringArray = events
        .iter()
        .map(|e| Some(e.event_id.hyphenated().to_string()))
        .collect();
    let seqs: Result<Int64Array, AuditError> = events
        .iter()
        .map(|e| to_i64("seq", e.seq).map(Some))
        .collect();
    let times = TimestampMicrosecondArray::from_iter_values(
        events.iter().map(|e| e.time.timestamp_micros()),
    )
    .with_timezone(TIME_ZONE);
    let nodes: StringArray = events.iter().map(|e| Some(e.node.as_str())).collect();
    let kinds: StringArray = details.iter().map(|d| Some(d.kind.as_str())).collect();
    let decisions: StringArray = details
        .iter()
        .map(|d| d.decision.map(|v| v.as_str()))
        .collect();
    let ports: Int32Array = details.iter().map(|d| d.port.map(i32::from)).collect();
    let source_ips: StringArray = details
        .iter()
        .map(|d| d.source_ip.map(|ip| ip.to_string()))
        .collect();
    let conditions: StringArray = details.iter().map(|d| conditions_json(d)).collect();

    let columns: Vec<ArrayRef> = vec![
        Arc::new(event_ids),
        Arc::new(seqs?),
        Arc::new(times),
        Arc::new(nodes),
        Arc::new(kinds),
        Arc::new(decisions),
        text(|d| d.reason.as_deref()),
        text(|d| d.reason_code.as_deref()),
        text(|d| d.rule.as_deref()),
        text(|d| d.bundle_hash.as_deref()),
        text(|d| d.workload.as_deref()),
        text(|d| d.trust_provider.as_deref()),
        text(|d| d.issuer.as_deref()),
        text(|d| d.subject.as_deref()),
        text(|d| d.claims.as_deref()),
        text(|d| d.target.as_deref()),
        text(|d| d.protocol.as_deref()),
        text(|d| d.host.as_deref()),
        Arc::new(ports),
        text(|d| d.action.as_deref()),
        text(|d| d.resource.as_deref()),
        text(|d| d.credential_provider.as_deref()),
        int64("credential_ttl_s", |d| d.credential_ttl_s)?,
        text(|d| d.credential_ref.as_deref()),
        Arc::new(source_ips),
        Arc::new(conditions),
        int64("latency_ns", |d| d.latency_ns)?,
        text(|d| d.rule_description.as_deref()),
        text(|d| d.rule_severity.as_deref()),
        text(|d| d.evidence_sha256.as_deref()),
    ];
    Ok(RecordBatch::try_new(access_events_schema(), columns)?)
}

fn to_i64(column: &'static str, value: u64) -> Result<i64, AuditError> {
    i64::try_from(value).map_err(|_| AuditError::OutOfRange { column, value })
}

/// The `conditions` column: a JSON array of `{"name": …, "result": …}`, or null when the event
/// evaluated no condition.
fn conditions_json(details: &NewEvent) -> Option<String> {
    if details.conditions.is_empty() {
        return None;
    }
    let outcomes = details
        .conditions
        .iter()
        .map(|c| serde_json::json!({ "name": c.name, "result": c.result }))
        .collect();
    Some(serde_json::Value::Array(outcomes).to_string())
}

/// Checks that the caller's unsigned values fit their columns. The store checks before an
/// event enters the log, so that sealing never fails on a value.
pub(crate) fn check_ranges(details: &NewEvent) -> Result<(), AuditError> {
    if let Some(ttl) = details.credential_ttl_s {
        to_i64("credential_ttl_s", ttl)?;
    }
    if let Some(latency) = details.latency_ns {
        to_i64("latency_ns", latency)?;
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
