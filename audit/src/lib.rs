//! The Portcullis audit store: every access event, durable before the decision is answered,
//! sealed into Parquet segments, and queryable with SQL.
//!
//! Write path: [`AuditLog::record`] writes the event to the write-ahead log ([`wal`]), with
//! the events of concurrent callers in one write and one sync (group commit); full log files
//! are sealed into Parquet segments ([`segment`]) under `DATA/events/date=YYYY-MM-DD/` by a
//! background thread. The durability promise is in [`store`]. Read path (feature `query`):
//! [`query::query`] runs DataFusion over the segments as the table `access_events`.
//! Integrity: each sealed segment is chained in a manifest ([`manifest`]) whose checkpoints are
//! signed ([`signing`]); [`verify`] checks it all, and [`retention`] removes old segments
//! without breaking the chain.

pub mod bundles;
mod codec;
pub mod columns;
mod commit;
#[cfg(feature = "query")]
pub mod compliance;
pub mod credential_ref;
pub mod error;
pub mod event;
pub mod manifest;
#[cfg(feature = "query")]
pub mod policy_state;
#[cfg(feature = "query")]
pub mod query;
pub mod retention;
pub mod schema;
pub mod segment;
pub mod signing;
pub mod store;
pub mod verify;
pub mod wal;

pub use error::{AuditError, DecodeError, RecordProblem};
pub use event::{AccessEvent, ConditionOutcome, Decision, EventKind, NewEvent};
#[cfg(feature = "query")]
pub use query::{OutputFormat, QueryError, format_batches, format_batches_for_terminal, query};
pub use schema::{access_events_schema, events_to_batch};
pub use store::{AuditLog, AuditOptions, Recorded, Recovery, SealReport};
