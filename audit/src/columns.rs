//! Events in columns, as a seal encodes them, built straight from write-ahead log records.
//!
//! The sealer reads a closed log file's records here in one pass, appending each field to its
//! column's Arrow buffers: no `String` is made or freed per field, and each text column is
//! reserved from what the previous file held per event, so that no buffer grows by copying.

use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Int32Builder, Int64Builder, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};
use arrow::datatypes::DataType;
use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use crate::codec::{self, Reader};
use crate::error::{AuditError, DecodeError};
use crate::event::{AccessEvent, Decision};
use crate::schema::{TIME_ZONE, access_events_schema, write_json_string};

/// Columns under construction, one builder per column of [`access_events_schema`].
#[derive(Debug)]
pub struct EventColumns {
    builders: Vec<Builder>,
    seqs: Vec<u64>,
    times: Vec<i64>,
    /// Text made from a record: the source address, the conditions' JSON.
    scratch: String,
    /// A record failed part-way: some columns have its fields and others not.
    damaged: bool,
}

#[derive(Debug)]
enum Builder {
    Text(StringBuilder),
    Int64(Int64Builder),
    Int32(Int32Builder),
    /// The `time` column, made from [`EventColumns::times`] at the end.
    Time,
}

/// Appends the fields of one record, in record order, to the builders (schema order; the two
/// orders are the same).
struct Cursor<'a> {
    builders: std::slice::IterMut<'a, Builder>,
}

impl Cursor<'_> {
    fn next(&mut self, want: &'static str) -> Result<&mut Builder, DecodeError> {
        self.builders.next().ok_or(DecodeError::Layout(want))
    }

    fn text(&mut self, value: Option<&str>) -> Result<(), DecodeError> {
        match self.next("text")? {
            Builder::Text(builder) => {
                builder.append_option(value);
                Ok(())
            }
            _ => Err(DecodeError::Layout("text")),
        }
    }

    fn int64(&mut self, column: &'static str, value: Option<u64>) -> Result<(), DecodeError> {
        let value = value
            .map(|value| {
                i64::try_from(value).map_err(|_| DecodeError::OutOfRange { column, value })
            })
            .transpose()?;
        match self.next("integer")? {
            Builder::Int64(builder) => {
                builder.append_option(value);
                Ok(())
            }
            _ => Err(DecodeError::Layout("integer")),
        }
    }

    fn int32(&mut self, value: Option<i32>) -> Result<(), DecodeError> {
        match self.next("port")? {
            Builder::Int32(builder) => {
                builder.append_option(value);
                Ok(())
            }
            _ => Err(DecodeError::Layout("port")),
        }
    }

    fn time(&mut self) -> Result<(), DecodeError> {
        match self.next("time")? {
            Builder::Time => Ok(()),
            _ => Err(DecodeError::Layout("time")),
        }
    }

    fn finish(mut self) -> Result<(), DecodeError> {
        match self.builders.next() {
            None => Ok(()),
            Some(_) => Err(DecodeError::Layout("the end of the record")),
        }
    }
}

/// How many bytes of text each column held per event in columns built before: what the next
/// columns reserve, so that their buffers are not grown (and copied) value by value.
#[derive(Debug, Clone, Default)]
pub struct TextSizes {
    /// The events measured; none before any columns were built.
    events: usize,
    /// Per column, its text bytes over those events.
    bytes: Vec<usize>,
}

impl TextSizes {
    /// Room for `events` events of column `idx`, with a margin.
    fn bytes_for(&self, idx: usize, events: usize) -> usize {
        match self.bytes.get(idx) {
            Some(&bytes) if self.events > 0 => {
                let per_event = bytes.div_ceil(self.events);
                events.saturating_mul(per_event + per_event / 8)
            }
            _ => events.saturating_mul(16),
        }
    }
}

impl EventColumns {
    /// Empty columns with room for `events` events.
    pub fn with_capacity(events: usize) -> EventColumns {
        EventColumns::with_sizes(events, &TextSizes::default())
    }

    /// Empty columns with room for `events` events whose text is sized as `sizes` says.
    pub fn with_sizes(events: usize, sizes: &TextSizes) -> EventColumns {
        let schema = access_events_schema();
        let builders = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(idx, field)| match field.data_type() {
                DataType::Int64 => Builder::Int64(Int64Builder::with_capacity(events)),
                DataType::Int32 => Builder::Int32(Int32Builder::with_capacity(events)),
                DataType::Timestamp(..) => Builder::Time,
                _ => Builder::Text(StringBuilder::with_capacity(
                    events,
                    sizes.bytes_for(idx, events),
                )),
            })
            .collect();
        EventColumns {
            builders,
            seqs: Vec::with_capacity(events),
            times: Vec::with_capacity(events),
            scratch: String::new(),
            damaged: false,
        }
    }

    /// The columns of `events`, for callers that hold events rather than records.
    pub fn from_events(events: &[AccessEvent]) -> Result<Columns, AuditError> {
        let mut columns = EventColumns::with_capacity(events.len());
        let mut record = Vec::new();
        for event in events {
            record.clear();
            codec::encode(event, &mut record);
            columns
                .push_record(&record, crate::wal::WAL_VERSION)
                .map_err(|problem| AuditError::EventColumn {
                    seq: event.seq,
                    problem,
                })?;
        }
        columns.finish()
    }

    /// The events appended so far.
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// The text bytes of each column so far, for [`EventColumns::with_sizes`].
    pub fn text_sizes(&self) -> TextSizes {
        let bytes = self
            .builders
            .iter()
            .map(|builder| match builder {
                Builder::Text(builder) => builder.values_slice().len(),
                _ => 0,
            })
            .collect();
        TextSizes {
            events: self.len(),
            bytes,
        }
    }

    /// Appends the event one record's payload holds (write-ahead log format `version`) and
    /// returns its `seq`. After an error the columns are unusable: [`EventColumns::finish`]
    /// refuses them.
    pub fn push_record(&mut self, payload: &[u8], version: u32) -> Result<u64, DecodeError> {
        if self.damaged {
            return Err(DecodeError::Layout("columns damaged by an earlier record"));
        }
        self.damaged = true;
        let seq = self.push_fields(payload, version)?;
        self.damaged = false;
        Ok(seq)
    }

    fn push_fields(&mut self, payload: &[u8], version: u32) -> Result<u64, DecodeError> {
        let mut r = Reader::new(payload);
        let event_id = Uuid::from_bytes(r.array()?);
        let seq = r.u64()?;
        let micros = r.u64()?.cast_signed();
        DateTime::from_timestamp_micros(micros).ok_or(DecodeError::TimeOutOfRange)?;
        let scratch = &mut self.scratch;
        let mut c = Cursor {
            builders: self.builders.iter_mut(),
        };
        c.text(Some(
            event_id
                .hyphenated()
                .encode_lower(&mut Uuid::encode_buffer()),
        ))?;
        c.int64("seq", Some(seq))?;
        c.time()?;
        c.text(Some(r.str()?))?;
        c.text(Some(codec::decode_kind(r.u8()?)?.as_str()))?;
        c.text(codec::decode_decision(r.u8()?)?.map(Decision::as_str))?;
        // reason, reason_code, rule, bundle_hash, workload, trust_provider, issuer, subject,
        // claims, target, protocol, host
        for _ in 0..12 {
            c.text(r.opt_str()?)?;
        }
        let port = r.opt(|r| Ok(u16::from_le_bytes(r.array()?)))?;
        c.int32(port.map(i32::from))?;
        // action, resource, credential_provider
        for _ in 0..3 {
            c.text(r.opt_str()?)?;
        }
        c.int64("credential_ttl_s", r.opt(Reader::u64)?)?;
        c.text(r.opt_str()?)?;
        scratch.clear();
        match r.ip()? {
            Some(ip) => {
                // Writing to a `String` cannot fail.
                let _ = write!(scratch, "{ip}");
                c.text(Some(scratch))?;
            }
            None => c.text(None)?,
        }
        scratch.clear();
        r.each_condition(|name, result| {
            scratch.push(if scratch.is_empty() { '[' } else { ',' });
            scratch.push_str(r#"{"name":"#);
            write_json_string(name, scratch);
            scratch.push_str(if result {
                r#","result":true}"#
            } else {
                r#","result":false}"#
            });
        })?;
        if scratch.is_empty() {
            c.text(None)?;
        } else {
            scratch.push(']');
            c.text(Some(scratch))?;
        }
        c.int64("latency_ns", r.opt(Reader::u64)?)?;
        // rule_description and rule_severity (version 2), evidence_sha256 (version 3)
        for since in [2, 2, 3] {
            c.text(if version >= since { r.opt_str()? } else { None })?;
        }
        // duration_ms, bytes_from_client, bytes_to_client (version 4)
        for column in ["duration_ms", "bytes_from_client", "bytes_to_client"] {
            c.int64(
                column,
                if version >= 4 {
                    r.opt(Reader::u64)?
                } else {
                    None
                },
            )?;
        }
        c.finish()?;
        if r.rest_len() > 0 {
            return Err(DecodeError::Trailing(r.rest_len()));
        }
        self.seqs.push(seq);
        self.times.push(micros);
        Ok(seq)
    }

    /// The finished columns.
    pub fn finish(self) -> Result<Columns, AuditError> {
        if self.damaged {
            return Err(AuditError::EventColumn {
                seq: self.seqs.last().map_or(0, |seq| seq + 1),
                problem: DecodeError::Layout("columns damaged by a record"),
            });
        }
        let arrays = self
            .builders
            .into_iter()
            .map(|builder| -> ArrayRef {
                match builder {
                    Builder::Text(mut builder) => Arc::new(builder.finish()),
                    Builder::Int64(mut builder) => Arc::new(builder.finish()),
                    Builder::Int32(mut builder) => Arc::new(builder.finish()),
                    Builder::Time => Arc::new(
                        TimestampMicrosecondArray::from(self.times.clone())
                            .with_timezone(TIME_ZONE),
                    ),
                }
            })
            .collect();
        Ok(Columns {
            seqs: self.seqs,
            times: self.times,
            arrays,
        })
    }
}

/// Events as columns of [`access_events_schema`], in `seq` order, ready to seal.
#[derive(Debug)]
pub struct Columns {
    seqs: Vec<u64>,
    times: Vec<i64>,
    arrays: Vec<ArrayRef>,
}

impl Columns {
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Each event's `seq`.
    pub fn seqs(&self) -> &[u64] {
        &self.seqs
    }

    /// The date of event `row`.
    pub fn date(&self, row: usize) -> NaiveDate {
        self.time(row).date_naive()
    }

    /// The time of event `row`.
    pub fn time(&self, row: usize) -> DateTime<Utc> {
        let micros = self.times.get(row).copied().unwrap_or_default();
        DateTime::from_timestamp_micros(micros).unwrap_or_default()
    }

    /// The earliest and latest time of `rows`; the epoch for none.
    pub fn time_range(&self, rows: Range<usize>) -> (DateTime<Utc>, DateTime<Utc>) {
        let times = self.times.get(rows).unwrap_or_default();
        let min = times.iter().min().copied().unwrap_or_default();
        let max = times.iter().max().copied().unwrap_or_default();
        let at = |micros| DateTime::from_timestamp_micros(micros).unwrap_or_default();
        (at(min), at(max))
    }

    /// Every column, cut to `rows` (no copy).
    pub fn slice(&self, rows: Range<usize>) -> Vec<ArrayRef> {
        let len = rows.end.saturating_sub(rows.start);
        self.arrays
            .iter()
            .map(|array| array.slice(rows.start, len))
            .collect()
    }

    /// The `event_id` column.
    pub fn event_ids(&self) -> Option<&StringArray> {
        let idx = access_events_schema().index_of("event_id").ok()?;
        self.arrays.get(idx)?.as_any().downcast_ref::<StringArray>()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests unwrap")]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use arrow::array::RecordBatch;

    use super::*;
    use crate::event::{ConditionOutcome, EventKind, NewEvent};
    use crate::schema::events_to_batch;

    /// A full event (the codec's, with its integers brought within the columns' range and a
    /// condition name JSON must escape), an empty one, and a failed attestation, a day apart.
    fn events() -> Vec<AccessEvent> {
        let start = 1_764_000_000_000_000_i64;
        let mut full = codec::tests::full_event().details;
        full.latency_ns = Some(1234);
        full.bytes_to_client = Some(i64::MAX.cast_unsigned());
        full.conditions.push(ConditionOutcome {
            name: "a \"quoted\"\tname\u{1}".into(),
            result: false,
        });
        let denied = NewEvent {
            kind: EventKind::AttestationFailed,
            decision: Some(Decision::Deny),
            source_ip: Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))),
            ..NewEvent::default()
        };
        [full, NewEvent::default(), denied]
            .into_iter()
            .enumerate()
            .map(|(idx, details)| AccessEvent {
                event_id: Uuid::now_v7(),
                seq: idx as u64 + 7,
                time: DateTime::from_timestamp_micros(start + idx as i64 * 86_400_000_000).unwrap(),
                node: "node-1".into(),
                details,
            })
            .collect()
    }

    #[test]
    fn columns_from_records_are_the_batch_of_the_events() {
        let events = events();
        let columns = EventColumns::from_events(&events).unwrap();
        let from_records =
            RecordBatch::try_new(access_events_schema(), columns.slice(0..columns.len())).unwrap();
        assert_eq!(from_records, events_to_batch(&events).unwrap());
        assert_eq!(columns.seqs(), &[7, 8, 9]);
        assert_eq!(columns.date(1), events[1].time.date_naive());
        assert_eq!(columns.time_range(1..3), (events[1].time, events[2].time));
        let ids = columns.event_ids().unwrap();
        assert_eq!(ids.value(2), events[2].event_id.hyphenated().to_string());
    }

    #[test]
    fn older_records_leave_the_newer_fields_null() {
        let events = events();
        let mut record = Vec::new();
        codec::encode(&events[0], &mut record);
        let decoded = codec::decode_version(&record, crate::wal::WAL_VERSION).unwrap();
        assert_eq!(decoded, events[0]);
        // A version-1 record is the current one without the fields later versions added:
        // rule_description, rule_severity (2), evidence_sha256 (3), and three integers (4).
        let mut old = events[0].clone();
        let d = &mut old.details;
        (d.rule_description, d.rule_severity, d.evidence_sha256) = (None, None, None);
        (d.duration_ms, d.bytes_from_client, d.bytes_to_client) = (None, None, None);
        record.clear();
        codec::encode(&old, &mut record);
        let cut = 6;
        record.truncate(record.len() - cut);
        let mut columns = EventColumns::with_capacity(1);
        assert_eq!(columns.push_record(&record, 1).unwrap(), 7);
        let columns = columns.finish().unwrap();
        let batch = RecordBatch::try_new(access_events_schema(), columns.slice(0..1)).unwrap();
        assert_eq!(batch, events_to_batch(&[old]).unwrap());
    }

    #[test]
    fn a_damaged_record_leaves_columns_that_are_refused() {
        let events = events();
        let mut record = Vec::new();
        codec::encode(&events[0], &mut record);
        let mut columns = EventColumns::with_capacity(2);
        let cut = &record[..record.len() - 40];
        assert_eq!(
            columns.push_record(cut, crate::wal::WAL_VERSION),
            Err(DecodeError::Truncated)
        );
        assert!(
            columns
                .push_record(&record, crate::wal::WAL_VERSION)
                .is_err()
        );
        let error = columns.finish().unwrap_err();
        assert!(error.to_string().contains("damaged"), "{error}");
    }

    #[test]
    fn integers_past_i64_are_refused() {
        let mut events = events();
        events[0].details.latency_ns = Some(u64::MAX);
        let error = EventColumns::from_events(&events).unwrap_err();
        assert!(error.to_string().contains("latency_ns"), "{error}");
    }
}
