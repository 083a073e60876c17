//! The audit log as the engine and the `portcullis` binary use it: open (with recovery),
//! record, seal, close.
//!
//! The data directory holds `LOCK` (held while a process has the store open), `wal/events.wal`
//! (the write-ahead log) and `events/` (the Parquet segments). Recording appends to the
//! write-ahead log and syncs before it returns; sealing moves the log's events into segments.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::AuditError;
use crate::event::{AccessEvent, NewEvent};
use crate::schema::check_ranges;
use crate::segment::{SealedIndex, write_segments};
use crate::wal::{Wal, sync_dir};

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "LOCK";
/// The directory of the Parquet segments in the data directory.
pub const EVENTS_DIR: &str = "events";
/// The directory of the write-ahead log in the data directory.
pub const WAL_DIR: &str = "wal";
const WAL_FILE: &str = "events.wal";

/// How an [`AuditLog`] behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditOptions {
    /// The name of this node, stored in every event.
    pub node: String,
    /// Seal automatically when the write-ahead log holds this many events.
    pub seal_after_events: usize,
}

impl AuditOptions {
    /// The default seal threshold for the node named `node`.
    pub fn new(node: impl Into<String>) -> AuditOptions {
        AuditOptions {
            node: node.into(),
            ..AuditOptions::default()
        }
    }
}

impl Default for AuditOptions {
    fn default() -> AuditOptions {
        AuditOptions {
            node: "local".to_owned(),
            seal_after_events: 10_000,
        }
    }
}

/// What the store assigned to a recorded event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    pub event_id: Uuid,
    pub seq: u64,
    pub time: DateTime<Utc>,
}

/// What opening the store found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Events found in the write-ahead log from an earlier run.
    pub events_in_wal: usize,
    /// Of those, the events sealed into segments now.
    pub events_sealed: usize,
    /// Of those, the events a segment already held (the earlier run died after sealing them
    /// but before emptying the log); they are not written again.
    pub events_already_sealed: usize,
    /// Bytes of a torn tail cut from the write-ahead log.
    pub torn_bytes_dropped: u64,
    /// The `seq` the next recorded event gets.
    pub next_seq: u64,
}

/// What a seal wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealReport {
    /// Events written to segments.
    pub events_sealed: usize,
    /// The segment files written, one per date.
    pub segments: Vec<PathBuf>,
}

/// The audit store of one data directory, open for writing. `Send + Sync`; share it by
/// reference or in an `Arc`.
#[derive(Debug)]
pub struct AuditLog {
    data_dir: PathBuf,
    events_dir: PathBuf,
    node: String,
    seal_after_events: usize,
    inner: Mutex<Inner>,
    /// Holds the advisory lock on `LOCK`; the kernel releases it when the process ends.
    _lock: File,
}

#[derive(Debug)]
struct Inner {
    wal: Wal,
    /// The events in the write-ahead log, in `seq` order.
    pending: Vec<AccessEvent>,
    sealed: SealedIndex,
    next_seq: u64,
    /// Times never go backwards within a run, so `seq` order is time order.
    last_time_micros: i64,
}

impl AuditLog {
    /// Creates `data_dir` if missing and locks it; recovers: seals events left in the
    /// write-ahead log by an earlier run into Parquet before anything new is written, and
    /// continues `seq` after the highest seen.
    pub fn open(
        data_dir: &Path,
        options: AuditOptions,
    ) -> Result<(AuditLog, Recovery), AuditError> {
        create_dir(data_dir)?;
        let lock = lock_data_dir(data_dir)?;
        let events_dir = data_dir.join(EVENTS_DIR);
        let wal_dir = data_dir.join(WAL_DIR);
        create_dir(&events_dir)?;
        create_dir(&wal_dir)?;

        let sealed = SealedIndex::scan(&events_dir)?;
        let (wal, contents) = Wal::open(&wal_dir.join(WAL_FILE))?;
        let highest_in_wal = contents.events.last().map_or(0, |event| event.seq);
        let next_seq = sealed.max_seq().max(highest_in_wal) + 1;
        let events_in_wal = contents.events.len();
        let events_already_sealed = contents
            .events
            .iter()
            .filter(|event| sealed.contains(event))
            .count();

        let inner = Inner {
            wal,
            pending: contents.events,
            sealed,
            next_seq,
            last_time_micros: i64::MIN,
        };
        let log = AuditLog {
            data_dir: data_dir.to_owned(),
            events_dir,
            node: options.node,
            seal_after_events: options.seal_after_events.max(1),
            inner: Mutex::new(inner),
            _lock: lock,
        };
        let report = log.seal()?;
        let recovery = Recovery {
            events_in_wal,
            events_sealed: report.events_sealed,
            events_already_sealed,
            torn_bytes_dropped: contents.torn_bytes,
            next_seq,
        };
        tracing::info!(
            data_dir = %data_dir.display(),
            events_in_wal,
            events_sealed = recovery.events_sealed,
            events_already_sealed,
            torn_bytes_dropped = recovery.torn_bytes_dropped,
            next_seq,
            "audit_log_opened"
        );
        Ok((log, recovery))
    }

    /// The data directory this log writes.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Records `event`; it is durable when this returns.
    ///
    /// A failed automatic seal does not fail the call: the event is already durable in the
    /// write-ahead log, and the next call tries the seal again.
    // FIXME(#5): seal in the background instead of inside the caller's `record`.
    pub fn record(&self, event: NewEvent) -> Result<Recorded, AuditError> {
        check_ranges(&event)?;
        let mut inner = self.lock_inner()?;
        let micros = Utc::now().timestamp_micros().max(inner.last_time_micros);
        let time = DateTime::from_timestamp_micros(micros).ok_or(AuditError::ClockOutOfRange)?;
        let event = AccessEvent {
            event_id: Uuid::now_v7(),
            seq: inner.next_seq,
            time,
            node: self.node.clone(),
            details: event,
        };
        inner.wal.append(&event)?;

        let recorded = Recorded {
            event_id: event.event_id,
            seq: event.seq,
            time,
        };
        inner.next_seq += 1;
        inner.last_time_micros = micros;
        inner.pending.push(event);
        if inner.pending.len() >= self.seal_after_events
            && let Err(error) = inner.seal(&self.events_dir)
        {
            tracing::warn!(%error, pending = inner.pending.len(), "audit_auto_seal_failed");
        }
        Ok(recorded)
    }

    /// Seals everything in the write-ahead log into Parquet now.
    pub fn seal(&self) -> Result<SealReport, AuditError> {
        self.lock_inner()?.seal(&self.events_dir)
    }

    /// Seals and closes; what the server calls on shutdown.
    pub fn close(self) -> Result<SealReport, AuditError> {
        let report = self.seal()?;
        tracing::info!(data_dir = %self.data_dir.display(), "audit_log_closed");
        Ok(report)
    }

    /// Whether the write-ahead log in `data_dir` holds events not yet sealed into Parquet
    /// (which queries do not see yet). Reads only the file's length, so it never disturbs a
    /// server that holds the directory.
    // FIXME(#5): queries that also read the events still in the log.
    pub fn has_unsealed_events(data_dir: &Path) -> bool {
        let wal = data_dir.join(WAL_DIR).join(WAL_FILE);
        fs::metadata(wal).is_ok_and(|metadata| metadata.len() > crate::wal::HEADER_LEN)
    }

    /// Whether the log still takes events: after a failed write it refuses them until the
    /// store is reopened, and a health check should say so.
    pub fn health(&self) -> Result<(), AuditError> {
        let inner = self.lock_inner()?;
        if inner.wal.is_stopped() {
            return Err(AuditError::Stopped);
        }
        Ok(())
    }

    fn lock_inner(&self) -> Result<MutexGuard<'_, Inner>, AuditError> {
        // A poisoned mutex means a panic mid-write: the log's state is unknown.
        self.inner.lock().map_err(|_| AuditError::Stopped)
    }
}

impl Inner {
    fn seal(&mut self, events_dir: &Path) -> Result<SealReport, AuditError> {
        if self.pending.is_empty() {
            return Ok(SealReport::default());
        }
        let to_seal = self
            .pending
            .iter()
            .filter(|event| !self.sealed.contains(event))
            .count();
        let segments = write_segments(events_dir, &self.pending, &mut self.sealed)?;
        self.wal.reset()?;
        self.pending.clear();
        tracing::info!(events = to_seal, segments = segments.len(), "audit_sealed");
        Ok(SealReport {
            events_sealed: to_seal,
            segments,
        })
    }
}

fn create_dir(dir: &Path) -> Result<(), AuditError> {
    if dir.is_dir() {
        return Ok(());
    }
    if dir.exists() {
        return Err(AuditError::NotADirectory {
            path: dir.to_owned(),
        });
    }
    fs::create_dir_all(dir).map_err(AuditError::io("create", dir))?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

/// Takes the exclusive advisory lock on `DATA/LOCK` and writes this process's id into it, for
/// the person who finds the directory in use.
fn lock_data_dir(data_dir: &Path) -> Result<File, AuditError> {
    let path = data_dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(AuditError::io("open", &path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(AuditError::Locked {
                dir: data_dir.to_owned(),
                lock: path,
            });
        }
        Err(TryLockError::Error(source)) => {
            return Err(AuditError::Io {
                action: "lock",
                path,
                source,
            });
        }
    }
    file.set_len(0)
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(AuditError::io("write", &path))?;
    Ok(file)
}
