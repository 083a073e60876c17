//! The audit store benchmark of issue #5: how fast events go from a decision to sealed
//! Parquet, how fast `verify` checks a store, and how Portcullis' SQL compares with DuckDB
//! reading the very same files.
//!
//! Pipeline: [`model`] generates an organisation (workloads, targets, credentials, rules) and
//! [`gate`] compiles its policy, in two versions, with the real compiler; [`events`] draws
//! access events for it. [`ingest`] records events through `AuditLog` and times them to
//! sealed Parquet; [`integrity`] times `verify`; [`history`] writes a month of events with the
//! store's segment writer for [`query`], which asks six questions of Portcullis and of DuckDB
//! (through the project's python venv) and compares the answers; [`pages`] times the
//! dashboard's pages over that month. [`report`] prints markdown;
//! [`system`] measures the machine, the disk and the files.

pub mod events;
pub mod gate;
pub mod history;
pub mod ingest;
pub mod integrity;
pub mod model;
pub mod pages;
pub mod query;
pub mod report;
pub mod rng;
pub mod system;
