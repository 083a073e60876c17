//! Errors of the write path: opening the store, the write-ahead log, sealing Parquet segments.
//!
//! Every variant that concerns a file names it, and says what is wrong there.

use std::io;
use std::path::PathBuf;

/// An error of the audit store's write path.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("`{path}` is not a directory")]
    NotADirectory { path: PathBuf },

    #[error("data directory `{dir}` is in use by another process (lock file `{lock}`)")]
    Locked { dir: PathBuf, lock: PathBuf },

    #[error("`{path}` is not a Portcullis write-ahead log: bad magic bytes")]
    WalMagic { path: PathBuf },

    #[error(
        "`{path}` has write-ahead log format version {found}; this build reads versions \
         {oldest} to {newest}"
    )]
    WalVersion {
        path: PathBuf,
        found: u32,
        oldest: u32,
        newest: u32,
    },

    #[error(
        "`{path}` still holds events of write-ahead log format version {version}; they must \
         be sealed before new events are appended"
    )]
    WalNotSealed { path: PathBuf, version: u32 },

    #[error(
        "damaged record in `{path}` at offset {offset}: {problem}; the store is not opened until \
         the file is restored from a copy or moved aside (its events are then missing from the \
         store: keep the file for the investigation)"
    )]
    DamagedRecord {
        path: PathBuf,
        offset: u64,
        problem: RecordProblem,
    },

    #[error("event of {size} bytes is over the write-ahead log's record limit of {limit} bytes")]
    EventTooLarge { size: usize, limit: usize },

    #[error("cannot write the Parquet segment `{path}`: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },

    #[error("cannot build the event batch: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error("column `{column}` cannot hold the value {value}")]
    OutOfRange { column: &'static str, value: u64 },

    #[error("cannot put event {seq} into columns: {problem}")]
    EventColumn { seq: u64, problem: DecodeError },

    #[error("the system clock is outside the range of event times")]
    ClockOutOfRange,

    #[error("the audit log stopped after a write failure; restart the server to recover it")]
    Stopped,

    #[error("the audit log is closed; the server is stopping")]
    Closed,

    /// The write-ahead log could not be written or synced; `cause` says where and why.
    #[error("the audit log stopped after a failed write: {cause}; fix it and restart the server")]
    StoppedAfterFailure { cause: String },

    #[error("`{hash}` is not a bundle content hash (64 lowercase hex digits)")]
    BadBundleHash { hash: String },

    #[error("the state file `{path}` cannot be used: {reason}")]
    BadStateFile { path: PathBuf, reason: &'static str },

    #[error("the key file `{path}` cannot be used: {reason}")]
    BadKey { path: PathBuf, reason: &'static str },
}

/// What is wrong with a write-ahead log record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordProblem {
    #[error("checksum mismatch")]
    Checksum,

    #[error("length {length} is over the record limit")]
    TooLong { length: u64 },

    #[error("zero length")]
    Empty,

    #[error("record ends past the end of the file")]
    PastEnd,

    #[error("the file ends inside its header")]
    HeaderCut,

    #[error("cannot decode the event: {0}")]
    Decode(#[from] DecodeError),

    #[error("sequence number {found} where {expected} was expected")]
    SeqGap { expected: u64, found: u64 },
}

/// Why a checksummed record does not decode to an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record ends inside a field")]
    Truncated,

    #[error("{0} trailing bytes after the event")]
    Trailing(usize),

    #[error("unknown {field} code {code}")]
    UnknownCode { field: &'static str, code: u8 },

    #[error("text field is not UTF-8")]
    NotUtf8,

    #[error("time is out of range")]
    TimeOutOfRange,

    #[error("column `{column}` cannot hold the value {value}")]
    OutOfRange { column: &'static str, value: u64 },

    /// The record's fields and the table's columns disagree: a fault of this build.
    #[error("the columns do not match the record at {0}: a fault of this build, to be reported")]
    Layout(&'static str),
}

impl AuditError {
    /// An I/O error on `path` while doing `action` (a verb phrase: "open", "sync", …).
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| AuditError::Io {
            action,
            path,
            source,
        }
    }
}
