//! The audit log as the engine and the `portcullis` binary use it: open (with recovery),
//! record, seal, close.
//!
//! The data directory holds `LOCK` (held while a process has the store open), `wal/` (the
//! write-ahead log, one file per run of `seq`s, see [`crate::wal`]) and `events/` (the Parquet
//! segments).
//!
//! Durability. `record` returns once the event's record is written to the active log file:
//! from then on it survives the process being killed (`kill -9`), because the operating
//! system holds it. With `flush_interval` zero (the default) the file is also synced before
//! `record` returns, so the event survives a power cut too; callers that wait together share
//! one sync (group commit, `commit.rs`). With a nonzero `flush_interval` a timer thread syncs
//! at that interval, and a power cut loses at most the events of the last interval (and of
//! the sync under way).
//!
//! Sealing. The active log file is closed when it holds `seal_after_events` events or
//! `seal_after_bytes` bytes, or when its first event is `seal_interval` old. A background
//! thread seals each closed file into Parquet and then deletes it, so `record` never waits for
//! Parquet; `seal_into_segments` is the one place where segments are written. The sealer reads
//! each closed file back (from the page cache, as it was just written) straight into columns
//! (`columns.rs`).
//! [`AuditLog::seal`] and [`AuditLog::close`] seal everything at once.
//!
//! Recovery. Opening checks every log file an earlier run left (streaming their records), and
//! only then seals them, one file at a time and oldest first, and deletes them, before anything
//! new is written.
//! Events that a segment already holds are not written twice. `seq` continues after the
//! highest seen.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::columns::{Columns, EventColumns, TextSizes};
use crate::commit::{ClosedLog, Committer, Durability, RollLimits, Then};
use crate::credential_ref::CredentialRefKey;
use crate::error::{AuditError, RecordProblem};
use crate::event::NewEvent;
use crate::schema::check_ranges;
use crate::segment::{SealedIndex, unsealed_runs, write_columns};
use crate::wal::{HEADER_LEN, TornTail, WalReader, list_logs, sync_dir};

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "LOCK";
/// The directory of the Parquet segments in the data directory.
pub const EVENTS_DIR: &str = "events";
/// The directory of the write-ahead log in the data directory.
pub const WAL_DIR: &str = "wal";

/// How often the timer thread looks at the active log's age when it has no syncs to make.
const AGE_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// The wait before a failed seal is tried again, doubling up to the maximum.
const FIRST_SEAL_RETRY: Duration = Duration::from_secs(1);
const MAX_SEAL_RETRY: Duration = Duration::from_secs(60);

/// How an [`AuditLog`] behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditOptions {
    /// The name of this node, stored in every event.
    pub node: String,
    /// How long a recorded event may stay written but not synced to the disk. Zero: synced
    /// before `record` returns. More: synced by a background thread at this interval, so a
    /// power cut loses at most this much; a killed process loses nothing either way.
    pub flush_interval: Duration,
    /// Close the active log file for sealing when it holds this many events, …
    pub seal_after_events: usize,
    /// … or this many bytes, …
    pub seal_after_bytes: u64,
    /// … or when its first event is this old.
    pub seal_interval: Duration,
    /// Remove the segments of dates more than this many days before today (UTC), recording
    /// the removal in the integrity manifest first; none keeps every segment.
    pub retention_days: Option<u32>,
}

impl AuditOptions {
    /// The default durability and seal thresholds for the node named `node`.
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
            flush_interval: Duration::ZERO,
            seal_after_events: 100_000,
            seal_after_bytes: 64 << 20,
            seal_interval: Duration::from_secs(60),
            retention_days: None,
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
    /// Write-ahead log files left by an earlier run.
    pub wal_files: usize,
    /// Events found in them.
    pub events_in_wal: usize,
    /// Of those, the events sealed into segments now.
    pub events_sealed: usize,
    /// Of those, the events a segment already held (the earlier run died after sealing them
    /// but before deleting their log file); they are not written again.
    pub events_already_sealed: usize,
    /// Bytes of a torn tail cut from the newest log file.
    pub torn_bytes_dropped: u64,
    /// The `seq` the next recorded event gets.
    pub next_seq: u64,
    /// The first and last `seq` the write-ahead log held; none when it held no event.
    pub wal_seqs: Option<(u64, u64)>,
}

/// What a seal wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealReport {
    /// Events written to segments.
    pub events_sealed: usize,
    /// The segment files written, one per date and log file (or part of one).
    pub segments: Vec<PathBuf>,
}

impl SealReport {
    fn add(&mut self, other: SealReport) {
        self.events_sealed += other.events_sealed;
        self.segments.extend(other.segments);
    }
}

/// The audit store of one data directory, open for writing. `Send + Sync`; share it by
/// reference or in an `Arc`. Dropping it stops its threads without sealing; the next open
/// seals what it left.
#[derive(Debug)]
pub struct AuditLog {
    data_dir: PathBuf,
    committer: Arc<Committer>,
    sealer: SealerHandle,
    /// Dropping it ends the timer thread.
    timer_stop: Option<mpsc::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    /// The key of `credential_ref`, so events never hold a credential's identifier.
    credential_refs: CredentialRefKey,
    /// Holds the advisory lock on `LOCK`; the kernel releases it when the process ends.
    _lock: File,
}

impl AuditLog {
    /// Creates `data_dir` if missing and locks it; recovers: seals the events left in the
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
        let credential_refs = CredentialRefKey::load_or_create(data_dir)?;

        let mut sealed = SealedIndex::open(data_dir, options.retention_days)?;
        let recovery = recover(&wal_dir, &events_dir, &mut sealed)?;
        sealed.refuse_unchained()?;

        let thread_error = |source| AuditError::Io {
            action: "start a thread for",
            path: data_dir.to_owned(),
            source,
        };
        let sealer = Sealer::new(events_dir, sealed);
        let (sealer, sealer_thread) = sealer.spawn().map_err(thread_error)?;
        let durability = Durability::from_flush_interval(options.flush_interval);
        let limits = RollLimits {
            events: options.seal_after_events.max(1),
            bytes: options.seal_after_bytes.max(1),
            age: options.seal_interval,
        };
        let committer = Committer::start(
            &wal_dir,
            options.node,
            recovery.next_seq,
            durability,
            limits,
            sealer.clone(),
        )?;
        let committer = Arc::new(committer);
        let (timer_stop, timer_thread) =
            spawn_timer(Arc::clone(&committer), durability, limits).map_err(thread_error)?;
        let writer = Arc::clone(&committer);
        let writer_thread = thread::Builder::new()
            .name("audit-writer".to_owned())
            .spawn(move || writer.run_writer())
            .map_err(thread_error)?;

        tracing::info!(
            data_dir = %data_dir.display(),
            wal_files = recovery.wal_files,
            events_in_wal = recovery.events_in_wal,
            events_sealed = recovery.events_sealed,
            events_already_sealed = recovery.events_already_sealed,
            torn_bytes_dropped = recovery.torn_bytes_dropped,
            next_seq = recovery.next_seq,
            flush_interval_ms = options.flush_interval.as_millis(),
            "audit_log_opened"
        );
        let log = AuditLog {
            data_dir: data_dir.to_owned(),
            committer,
            sealer,
            timer_stop: Some(timer_stop),
            threads: vec![sealer_thread, timer_thread, writer_thread],
            credential_refs,
            _lock: lock,
        };
        Ok((log, recovery))
    }

    /// The data directory this log writes.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// What an event's `credential_ref` holds for the credential with `identifier`: an HMAC
    /// under this store's key ([`crate::credential_ref`]), never the identifier.
    pub fn credential_ref(&self, identifier: &str) -> String {
        self.credential_refs.reference(identifier)
    }

    /// Records `event`; when this returns, it survives the process being killed, and a power
    /// cut as [`AuditOptions::flush_interval`] says. Never waits for a Parquet seal.
    pub fn record(&self, event: NewEvent) -> Result<Recorded, AuditError> {
        check_ranges(&event)?;
        let recorded = self.committer.record(vec![event])?;
        recorded.into_iter().next().ok_or(AuditError::Stopped)
    }

    /// Records `events` with consecutive `seq`s, all or none, with one wait for the disk; what
    /// a caller that has many events at once (a batch API, a benchmark) uses.
    pub fn record_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Recorded>, AuditError> {
        for event in &events {
            check_ranges(event)?;
        }
        self.committer.record(events)
    }

    /// [`AuditLog::record_batch`] for a caller on an async runtime: it waits without holding
    /// a thread, while the store's writer thread writes (and syncs) for it and for every other
    /// caller waiting with it. The events have their `seq`s when this is called; the future
    /// resolves once they are durable as [`AuditOptions::flush_interval`] says, or with why not.
    pub fn record_batch_async(
        &self,
        events: Vec<NewEvent>,
    ) -> impl std::future::Future<Output = Result<Vec<Recorded>, AuditError>> + Send + 'static {
        let taken = events
            .iter()
            .try_for_each(check_ranges)
            .and_then(|()| self.committer.record_async(events));
        async move {
            let (recorded, durable) = taken?;
            durable.await?;
            Ok(recorded)
        }
    }

    /// Seals every event recorded so far into Parquet now, and reports what this call wrote
    /// (the background sealer may have sealed earlier events already).
    pub fn seal(&self) -> Result<SealReport, AuditError> {
        let closing = self.committer.roll_now(Then::Continue)?;
        self.sealer.seal_all(closing)
    }

    /// Seals everything and closes; what the server calls on shutdown. The write-ahead log
    /// directory is left empty.
    pub fn close(self) -> Result<SealReport, AuditError> {
        let closing = self.committer.roll_now(Then::Retire)?;
        let report = self.sealer.seal_all(closing)?;
        tracing::info!(data_dir = %self.data_dir.display(), "audit_log_closed");
        Ok(report)
    }

    /// Whether the write-ahead log in `data_dir` holds events not yet sealed into Parquet
    /// (which `verify` does not cover yet). Reads only file names and lengths, so it never
    /// disturbs a server that holds the directory.
    pub fn has_unsealed_events(data_dir: &Path) -> bool {
        let Ok(logs) = list_logs(&data_dir.join(WAL_DIR)) else {
            return false;
        };
        logs.iter()
            .any(|path| fs::metadata(path).is_ok_and(|metadata| metadata.len() > HEADER_LEN))
    }

    /// Whether the log still takes events: after a failed write or sync it refuses them until
    /// the store is reopened, and this says why, for the health check.
    pub fn health(&self) -> Result<(), AuditError> {
        self.committer.health()
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        drop(self.timer_stop.take());
        self.committer.close_writer();
        self.sealer.stop();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!(data_dir = %self.data_dir.display(), "audit_thread_panicked");
            }
        }
        // Nothing records any more (`record` borrows the log): a last sync, so that a clean
        // drop loses nothing to a power cut.
        if let Err(error) = self.committer.flush() {
            tracing::warn!(%error, "audit_final_sync_failed");
        }
    }
}

/// Checks every log file an earlier run left, then seals and deletes them, oldest first.
/// Nothing is written before all are checked, so damage stops the open with the store as it
/// was.
fn recover(
    wal_dir: &Path,
    events_dir: &Path,
    sealed: &mut SealedIndex,
) -> Result<Recovery, AuditError> {
    let logs = list_logs(wal_dir)?;
    let mut recovery = check_logs(&logs, sealed)?;
    sealed.vouch(recovery.wal_seqs)?;
    for (idx, path) in logs.iter().enumerate() {
        let mut reader = WalReader::open(path, torn_tail_rule(idx, logs.len()))?;
        let columns = EventColumns::with_capacity(0);
        let (report, _) = seal_log_file(events_dir, sealed, &mut reader, columns)?;
        recovery.events_sealed += report.events_sealed;
        let torn_bytes = reader.torn_bytes();
        if torn_bytes > 0 {
            reader.cut_torn_tail()?;
            tracing::warn!(path = %path.display(), torn_bytes, "wal_torn_tail_truncated");
        }
        remove_log(path)?;
    }
    Ok(recovery)
}

/// The first pass of recovery: reads every log file, checks its records, that `seq` runs on
/// from one file to the next, and counts.
fn check_logs(logs: &[PathBuf], sealed: &SealedIndex) -> Result<Recovery, AuditError> {
    let mut recovery = Recovery {
        wal_files: logs.len(),
        ..Recovery::default()
    };
    let mut last_seq: Option<u64> = None;
    for (idx, path) in logs.iter().enumerate() {
        let mut reader = WalReader::open(path, torn_tail_rule(idx, logs.len()))?;
        let mut first_in_file = true;
        loop {
            let offset = reader.offset();
            let Some(event) = reader.next_event()? else {
                break;
            };
            if first_in_file
                && let Some(previous) = last_seq
                && event.seq != previous + 1
            {
                return Err(AuditError::DamagedRecord {
                    path: path.clone(),
                    offset,
                    problem: RecordProblem::SeqGap {
                        expected: previous + 1,
                        found: event.seq,
                    },
                });
            }
            first_in_file = false;
            last_seq = Some(event.seq);
            let first = recovery.wal_seqs.map_or(event.seq, |(first, _)| first);
            recovery.wal_seqs = Some((first, event.seq));
            recovery.events_in_wal += 1;
            if sealed.contains(&event) {
                recovery.events_already_sealed += 1;
            }
        }
        recovery.torn_bytes_dropped += reader.torn_bytes();
    }
    recovery.next_seq = sealed.max_seq().max(last_seq.unwrap_or(0)) + 1;
    Ok(recovery)
}

/// Only the newest file may end in a torn tail: every older one was synced whole before the
/// next was created.
fn torn_tail_rule(idx: usize, n_logs: usize) -> TornTail {
    if idx + 1 == n_logs {
        TornTail::Allowed
    } else {
        TornTail::Refused
    }
}

/// The seal step: writes the events not yet sealed into Parquet segments, one per date. Every
/// segment the store writes is written here, so what must happen for each new segment goes
/// here too.
fn seal_into_segments(
    events_dir: &Path,
    index: &mut SealedIndex,
    events: &Columns,
) -> Result<SealReport, AuditError> {
    if events.is_empty() {
        return Ok(SealReport::default());
    }
    let to_seal = unsealed_runs(events, index)
        .iter()
        .map(|run| run.range.len())
        .sum();
    let segments = write_columns(events_dir, events, index)?;
    tracing::info!(events = to_seal, segments = segments.len(), "audit_sealed");
    Ok(SealReport {
        events_sealed: to_seal,
        segments,
    })
}

/// Seals the events of one log file, read record by record, with one call of the seal step:
/// a segment then never straddles two log files, nor part of one, so a seal that died after
/// writing a segment finds the same events for it next time. One file's events are in memory
/// at a time, at most what the roll limits let a file hold.
///
/// `columns` come empty, with room reserved for the file's events when their number and size
/// are known, and are handed back to tell the sizes of what the file held.
fn seal_log_file(
    events_dir: &Path,
    index: &mut SealedIndex,
    reader: &mut WalReader,
    mut columns: EventColumns,
) -> Result<(SealReport, TextSizes), AuditError> {
    while reader.next_into(&mut columns)?.is_some() {}
    let sizes = columns.text_sizes();
    let report = seal_into_segments(events_dir, index, &columns.finish()?)?;
    Ok((report, sizes))
}

/// Seals one closed log file, read back from the file (which the committer has just written,
/// so it comes from the page cache), then deletes the file.
///
/// The committer keeps no copy of a file's records for the sealer: copying them cost the
/// recording thread more, in copies and in fresh memory the kernel faults in and zeroes, than
/// reading the file back costs the sealer.
fn seal_closed_log(
    events_dir: &Path,
    index: &mut SealedIndex,
    job: &ClosedLog,
    sizes: &mut TextSizes,
) -> Result<SealReport, AuditError> {
    // Sized as the last file was: builders grown by doubling copy the file's text over and
    // over, each time into fresh memory.
    let columns = EventColumns::with_sizes(job.events, sizes);
    let mut reader = WalReader::open(&job.path, TornTail::Refused)?;
    let (report, read) = seal_log_file(events_dir, index, &mut reader, columns)?;
    *sizes = read;
    remove_log(&job.path)?;
    Ok(report)
}

/// Deletes a sealed log file. Not synced: should the deletion be lost, the next open finds the
/// events in segments already and writes nothing twice.
fn remove_log(path: &Path) -> Result<(), AuditError> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(AuditError::Io {
            action: "remove",
            path: path.to_owned(),
            source: error,
        }),
        _ => Ok(()),
    }
}

#[derive(Debug)]
enum SealerMessage {
    Closed(ClosedLog),
    /// Seal everything waiting, and `closing` after it, now, and answer with what was written.
    SealAll {
        closing: Option<ClosedLog>,
        answer: mpsc::Sender<Result<SealReport, AuditError>>,
    },
    Stop,
}

/// How the committer and the store talk to the sealer thread.
#[derive(Debug, Clone)]
pub(crate) struct SealerHandle {
    messages: mpsc::Sender<SealerMessage>,
}

impl SealerHandle {
    /// Queues a closed log file for the background seal.
    pub(crate) fn hand_over(&self, closed: ClosedLog) {
        let path = closed.path.clone();
        if self.messages.send(SealerMessage::Closed(closed)).is_err() {
            // Only after a panic of the sealer; the file stays, and the next open seals it.
            tracing::error!(path = %path.display(), "audit_sealer_gone");
        }
    }

    fn seal_all(&self, closing: Option<ClosedLog>) -> Result<SealReport, AuditError> {
        let (answer, answered) = mpsc::channel();
        self.messages
            .send(SealerMessage::SealAll { closing, answer })
            .map_err(|_| AuditError::Stopped)?;
        answered.recv().map_err(|_| AuditError::Stopped)?
    }

    fn stop(&self) {
        // An error means the thread is gone already.
        let _ = self.messages.send(SealerMessage::Stop);
    }
}

/// The sealer thread's state: what is sealed, and the closed files waiting.
#[derive(Debug)]
struct Sealer {
    events_dir: PathBuf,
    index: SealedIndex,
    backlog: VecDeque<ClosedLog>,
    /// The text of the last file sealed, to size the next one's columns.
    sizes: TextSizes,
    /// After a failed seal: when to try again.
    retry_at: Option<Instant>,
    retry_after: Duration,
}

impl Sealer {
    fn new(events_dir: PathBuf, index: SealedIndex) -> Sealer {
        Sealer {
            events_dir,
            index,
            backlog: VecDeque::new(),
            sizes: TextSizes::default(),
            retry_at: None,
            retry_after: FIRST_SEAL_RETRY,
        }
    }

    fn spawn(self) -> io::Result<(SealerHandle, JoinHandle<()>)> {
        let (messages, inbox) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("audit-seal".to_owned())
            .spawn(move || self.run(&inbox))?;
        let handle = SealerHandle { messages };
        Ok((handle, thread))
    }

    fn run(mut self, inbox: &mpsc::Receiver<SealerMessage>) {
        loop {
            match self.next_message(inbox) {
                None | Some(SealerMessage::Stop) => return,
                Some(SealerMessage::Closed(job)) => {
                    self.backlog.push_back(job);
                    if self.retry_at.is_none() {
                        self.seal_in_background();
                    }
                }
                Some(SealerMessage::SealAll { closing, answer }) => {
                    self.backlog.extend(closing);
                    let sealed = self.seal_backlog();
                    self.note_outcome(sealed.as_ref().err());
                    // The caller may have given up waiting; nothing to do then.
                    let _ = answer.send(sealed);
                }
            }
        }
    }

    /// Waits for the next message, and after a failed seal retries it when it is time;
    /// `None` once every handle is gone.
    fn next_message(&mut self, inbox: &mpsc::Receiver<SealerMessage>) -> Option<SealerMessage> {
        loop {
            let Some(retry_at) = self.retry_at else {
                return inbox.recv().ok();
            };
            match inbox.recv_timeout(retry_at.saturating_duration_since(Instant::now())) {
                Ok(message) => return Some(message),
                Err(mpsc::RecvTimeoutError::Timeout) => self.seal_in_background(),
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn seal_in_background(&mut self) {
        let sealed = self.seal_backlog();
        self.note_outcome(sealed.as_ref().err());
    }

    /// Seals the waiting files in order; on an error the failing one stays first in line.
    fn seal_backlog(&mut self) -> Result<SealReport, AuditError> {
        let mut report = SealReport::default();
        while let Some(job) = self.backlog.front() {
            let sealed = seal_closed_log(&self.events_dir, &mut self.index, job, &mut self.sizes)?;
            report.add(sealed);
            self.backlog.pop_front();
        }
        Ok(report)
    }

    fn note_outcome(&mut self, error: Option<&AuditError>) {
        let Some(error) = error else {
            self.retry_at = None;
            self.retry_after = FIRST_SEAL_RETRY;
            return;
        };
        // The events are safe in the write-ahead log meanwhile; only queries miss them.
        tracing::warn!(
            %error,
            files_waiting = self.backlog.len(),
            retry_in_s = self.retry_after.as_secs(),
            "audit_seal_failed"
        );
        self.retry_at = Some(Instant::now() + self.retry_after);
        self.retry_after = (self.retry_after * 2).min(MAX_SEAL_RETRY);
    }
}

/// Starts the thread that syncs the log in interval mode and rolls it over by age; it ends
/// when the returned sender is dropped.
fn spawn_timer(
    committer: Arc<Committer>,
    durability: Durability,
    limits: RollLimits,
) -> io::Result<(mpsc::Sender<()>, JoinHandle<()>)> {
    let tick = match durability {
        Durability::Strict => AGE_CHECK_INTERVAL,
        Durability::Interval(interval) => interval.min(AGE_CHECK_INTERVAL),
    };
    let tick = tick.min(limits.age).max(Duration::from_millis(1));
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = thread::Builder::new()
        .name("audit-timer".to_owned())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                committer.tick();
            }
        })?;
    Ok((stop, thread))
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

/// What [`rotate_signing_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRotated {
    pub old_key_id: String,
    pub new_key_id: String,
    /// The rotation's entry in the chain.
    pub entry: u64,
    /// What opening the store found and sealed first, as a server's open would.
    pub recovery: Recovery,
}

/// Replaces the signing key of the store in `data_dir` with a new one (`docs/audit-schema.md`,
/// "Key rotation"). The store is first opened as a server opens it, so the events the
/// write-ahead log still holds are sealed and signed by the old key; then the old key signs a
/// rotation entry naming the new key, the new key signs it too and takes the old key file's
/// place, and signs every later checkpoint. The store must not be open elsewhere: this takes its
/// lock, as a server does.
pub fn rotate_signing_key(data_dir: &Path) -> Result<KeyRotated, AuditError> {
    let _lock = lock_data_dir(data_dir)?;
    let events_dir = data_dir.join(EVENTS_DIR);
    let wal_dir = data_dir.join(WAL_DIR);
    create_dir(&events_dir)?;
    create_dir(&wal_dir)?;
    let mut sealed = SealedIndex::open(data_dir, None)?;
    let recovery = recover(&wal_dir, &events_dir, &mut sealed)?;
    sealed.refuse_unchained()?;
    let (old_key_id, new_key_id, entry) = sealed.rotate_key()?;
    Ok(KeyRotated {
        old_key_id,
        new_key_id,
        entry,
        recovery,
    })
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
