//! The Portcullis audit store: every access event, durable before the decision is answered,
//! sealed into Parquet segments, and queryable with SQL.
//!
//! Write path: [`AuditLog::record`] appends the event to the write-ahead log ([`wal`]) and
//! syncs it; [`AuditLog::seal`] moves the logged events into Parquet segments ([`segment`])
//! under `DATA/events/date=YYYY-MM-DD/`. Read path (feature `query`): [`query::query`] runs
//! DataFusion over the segments as the table `access_events`.

mod codec;
pub mod error;
pub mod event;
#[cfg(feature = "query")]
pub mod query;
pub mod schema;
pub mod segment;
pub mod store;
pub mod wal;

pub use error::{AuditError, DecodeError, RecordProblem};
pub use event::{AccessEvent, ConditionOutcome, Decision, EventKind, NewEvent};
#[cfg(feature = "query")]
pub use query::{OutputFormat, QueryError, format_batches, query};
pub use schema::{access_events_schema, events_to_batch};
pub use store::{AuditLog, AuditOptions, Recorded, Recovery, SealReport};
