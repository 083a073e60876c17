//! Group commit: the events of many callers written to the active write-ahead log file with
//! one `write(2)` and made durable with one `fsync`; the file rolled over when it is full or
//! old.
//!
//! In: events from any number of threads ([`Committer::record`]). Out: every event's record
//! written to the active log file before `record` returns, and synced before it returns
//! ([`Durability::Strict`]) or within the flush interval ([`Durability::Interval`], by
//! [`Committer::tick`] on the store's timer thread); closed files handed to the sealer.
//!
//! How callers share the work: a caller takes a `seq` for each of its events and encodes them
//! into the intake, under the intake lock. If no one is writing, it becomes the leader: it
//! takes everything in the intake, writes it with one `write(2)` (in strict mode followed by
//! one `fsync`) with the intake unlocked, and wakes the others. Callers that arrived meanwhile
//! wait; their records go into the next write, which one of them leads. The longer a write
//! takes, the more records the next one carries, so under load a sync costs little per event.
//!
//! Callers on an async runtime ([`Committer::record_async`]) must not hold a worker thread
//! for a sync. With a flush interval there is none to wait for: one that finds no leader
//! leads itself, its write a copy into the page cache, and leaves a full file's roll (which
//! syncs) to the writer thread. Otherwise, or while another leads, it leaves a [`Ticket`] in
//! the intake and waits on it, and the store's writer thread ([`Committer::run_writer`])
//! leads for it. Whoever leads hands out the tickets its write made durable; tickets left over
//! wake the writer for the next write. An async leader can still wait on the `active` lock
//! while a roll syncs the file it closes: once per file, not per event.
//!
//! Lock order: `active`, then `intake`. Nothing takes `active` while it holds `intake`.

use std::future::Future;
use std::mem;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::codec::Stamp;
use crate::error::AuditError;
use crate::event::NewEvent;
use crate::store::{Recorded, SealerHandle};
use crate::wal::{Wal, encode_record_parts, log_file_name};

/// When a recorded event is on the disk itself, not only in the operating system's cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Synced before `record` returns.
    Strict,
    /// Written before `record` returns, synced at most this long after.
    Interval(Duration),
}

impl Durability {
    pub(crate) fn from_flush_interval(flush_interval: Duration) -> Durability {
        if flush_interval.is_zero() {
            Durability::Strict
        } else {
            Durability::Interval(flush_interval)
        }
    }
}

/// When the active log file is closed and handed to the sealer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RollLimits {
    pub events: usize,
    pub bytes: u64,
    /// Counted from the file's first event.
    pub age: Duration,
}

/// What follows a closed log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Then {
    /// The next file, named after the next `seq`; nothing is closed while the file is empty.
    Continue,
    /// None: the log takes no more events (the store is closing, or the log stopped).
    Retire,
}

/// Who rolls a file over that a write filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Roll {
    /// The writer of the batch, at once.
    Here,
    /// The writer thread, moments later.
    Later,
}

/// A log file that takes no more records, on its way to the sealer, which reads it back.
#[derive(Debug)]
pub(crate) struct ClosedLog {
    pub path: PathBuf,
    /// How many events it holds.
    pub events: usize,
}

#[derive(Debug)]
pub(crate) struct Committer {
    node: String,
    wal_dir: PathBuf,
    durability: Durability,
    limits: RollLimits,
    intake: Mutex<Intake>,
    /// Signalled when a write ends (the written and synced marks moved) or the log stops.
    landed: Condvar,
    /// Signalled for the writer thread: tickets wait for a write, or the store closes.
    work: Condvar,
    /// `None` once retired.
    active: Mutex<Option<ActiveLog>>,
    sealer: SealerHandle,
}

/// What the callers share: the next `seq`, the records not yet written, how far the log got.
#[derive(Debug)]
struct Intake {
    next_seq: u64,
    /// Times never go backwards within a run, so `seq` order is time order.
    last_time_micros: i64,
    /// Encoded records waiting for the next write, in `seq` order.
    records: Vec<u8>,
    /// A leader is writing; the others wait for it.
    writing: bool,
    /// The highest `seq` written to the log file: it survives the process being killed.
    written_seq: u64,
    /// The highest `seq` synced to the disk: it survives a power cut.
    synced_seq: u64,
    /// Why the log stopped taking events, once it did.
    failure: Option<String>,
    ids: EventIds,
    /// Async callers waiting for their last `seq` to be durable, in `seq` order.
    tickets: Vec<(u64, Arc<Ticket>)>,
    /// The writer thread is to end.
    closing: bool,
    /// An async caller filled the active file; the writer thread rolls it over.
    roll_wanted: bool,
    /// Blocking callers waiting on `landed`.
    sleepers: usize,
}

/// The log file being written.
#[derive(Debug)]
struct ActiveLog {
    wal: Wal,
    /// How many events the file holds.
    events: usize,
    /// The highest `seq` in the file; one less than its first while it is empty.
    last_seq: u64,
    /// When the file's first event was written; its age counts from then.
    first_write: Option<Instant>,
}

impl Committer {
    /// Creates the first log file, named after `next_seq`, the `seq` of the first event.
    pub(crate) fn start(
        wal_dir: &Path,
        node: String,
        next_seq: u64,
        durability: Durability,
        limits: RollLimits,
        sealer: SealerHandle,
    ) -> Result<Committer, AuditError> {
        let wal = Wal::create(&wal_dir.join(log_file_name(next_seq)))?;
        let last_seq = next_seq.saturating_sub(1);
        Ok(Committer {
            node,
            wal_dir: wal_dir.to_owned(),
            durability,
            limits,
            intake: Mutex::new(Intake {
                next_seq,
                last_time_micros: i64::MIN,
                records: Vec::new(),
                writing: false,
                written_seq: last_seq,
                synced_seq: last_seq,
                failure: None,
                ids: EventIds::new(wal_dir)?,
                tickets: Vec::new(),
                closing: false,
                roll_wanted: false,
                sleepers: 0,
            }),
            landed: Condvar::new(),
            work: Condvar::new(),
            active: Mutex::new(Some(ActiveLog {
                wal,
                events: 0,
                last_seq,
                first_write: None,
            })),
            sealer,
        })
    }

    /// Records `events` with consecutive `seq`s, and returns once they are durable as the
    /// [`Durability`] says. All or none: an event that cannot be encoded refuses the batch
    /// before anything is written, and a failed write fails the whole batch (and stops the log).
    pub(crate) fn record(&self, events: Vec<NewEvent>) -> Result<Vec<Recorded>, AuditError> {
        let mut intake = self.lock_intake()?;
        if let Some(cause) = &intake.failure {
            return Err(stopped(cause));
        }
        let recorded = intake.take_in(events, &self.node)?;
        let Some(last) = recorded.last() else {
            return Ok(recorded);
        };
        self.wait_until_durable(intake, last.seq)?;
        Ok(recorded)
    }

    /// [`Committer::record`] for a caller on an async runtime: the events are taken in at
    /// once, and the future resolves when the writer thread (or a blocking caller leading
    /// meanwhile) has made them durable. Nothing blocks but the short intake lock.
    pub(crate) fn record_async(
        &self,
        events: Vec<NewEvent>,
    ) -> Result<(Vec<Recorded>, Durable), AuditError> {
        let mut intake = self.lock_intake()?;
        if let Some(cause) = &intake.failure {
            return Err(stopped(cause));
        }
        if intake.closing {
            return Err(AuditError::Closed);
        }
        let recorded = intake.take_in(events, &self.node)?;
        let ticket = Arc::new(Ticket::default());
        let Some(last) = recorded.last() else {
            ticket.complete(Ok(()));
            return Ok((recorded, Durable(ticket)));
        };
        // Without a sync to wait for, the write is a copy into the page cache: this caller
        // makes it at once rather than wake a thread to make it and be woken in turn.
        if matches!(self.durability, Durability::Interval(_)) && !intake.writing {
            let intake = self.lead_and(intake, Roll::Later)?;
            if intake.written_seq >= last.seq {
                ticket.complete(Ok(()));
                return Ok((recorded, Durable(ticket)));
            }
            return Err(intake
                .failure
                .as_deref()
                .map_or(AuditError::Stopped, stopped));
        }
        intake.tickets.push((last.seq, Arc::clone(&ticket)));
        if !intake.writing {
            self.work.notify_one();
        }
        Ok((recorded, Durable(ticket)))
    }

    /// The writer thread's loop: leads a write whenever tickets wait for one, until the store
    /// closes. A failure has stopped the log and answered the tickets by then.
    pub(crate) fn run_writer(&self) {
        let Ok(mut intake) = self.lock_intake() else {
            return;
        };
        loop {
            if intake.closing {
                return;
            }
            if intake.roll_wanted {
                intake.roll_wanted = false;
                drop(intake);
                self.roll_if_full();
                intake = match self.lock_intake() {
                    Ok(intake) => intake,
                    Err(_) => return,
                };
                continue;
            }
            if !intake.writing && !intake.tickets.is_empty() && intake.failure.is_none() {
                intake = match self.lead(intake) {
                    Ok(intake) => intake,
                    Err(_) => return,
                };
                continue;
            }
            intake = match self.work.wait(intake) {
                Ok(intake) => intake,
                Err(_) => return,
            };
        }
    }

    /// Rolls the active file over if it is full; what an async caller that filled it left to
    /// the writer thread. A failure stops the log, which says why.
    fn roll_if_full(&self) {
        let Ok(mut active) = self.lock_active() else {
            return;
        };
        let full = active.as_ref().is_some_and(|log| {
            log.events >= self.limits.events || log.wal.len_bytes() >= self.limits.bytes
        });
        if full && let Ok(Some(closed)) = self.roll(&mut active, Then::Continue) {
            self.sealer.hand_over(closed);
        }
    }

    /// Ends the writer thread's loop; tickets still waiting are answered with an error.
    pub(crate) fn close_writer(&self) {
        let mut intake = self.intake.lock().unwrap_or_else(PoisonError::into_inner);
        intake.closing = true;
        for (_, ticket) in intake.tickets.drain(..) {
            ticket.complete(Err(None));
        }
        self.work.notify_all();
    }

    /// Ok while the log takes events; else why it stopped.
    pub(crate) fn health(&self) -> Result<(), AuditError> {
        match &self.lock_intake()?.failure {
            Some(cause) => Err(stopped(cause)),
            None => Ok(()),
        }
    }

    /// Closes the active file now, for [`crate::AuditLog::seal`] and `close`; `None` when
    /// there was nothing to close.
    pub(crate) fn roll_now(&self, then: Then) -> Result<Option<ClosedLog>, AuditError> {
        let mut active = self.lock_active()?;
        let then = if self.health().is_err() {
            Then::Retire
        } else {
            then
        };
        self.roll(&mut active, then)
    }

    /// The timer thread's work: sync what was written since the last sync (in interval mode),
    /// and roll the active file over once its first event is older than the age limit.
    /// Failures stop the log, which says why; there is no one to return them to.
    pub(crate) fn tick(&self) {
        if let Durability::Interval(_) = self.durability {
            let _ = self.flush();
        }
        if self.health().is_err() {
            return;
        }
        let Ok(mut active) = self.lock_active() else {
            return;
        };
        let too_old = active
            .as_ref()
            .and_then(|log| log.first_write)
            .is_some_and(|first| first.elapsed() >= self.limits.age);
        if too_old && let Ok(Some(closed)) = self.roll(&mut active, Then::Continue) {
            self.sealer.hand_over(closed);
        }
    }

    /// Syncs the active file when records were written since the last sync.
    pub(crate) fn flush(&self) -> Result<(), AuditError> {
        {
            let intake = self.lock_intake()?;
            if intake.synced_seq >= intake.written_seq {
                return Ok(());
            }
        }
        let (file, path, last_seq) = {
            let active = self.lock_active()?;
            let Some(log) = active.as_ref() else {
                return Ok(());
            };
            (
                log.wal.sync_handle(),
                log.wal.path().to_owned(),
                log.last_seq,
            )
        };
        // Unlocked: the next records are written while the disk syncs these.
        if let Err(source) = file.sync_data() {
            let error = AuditError::Io {
                action: "sync",
                path,
                source,
            };
            self.stop(&error);
            return Err(error);
        }
        self.note_synced(last_seq);
        Ok(())
    }

    fn wait_until_durable<'a>(
        &'a self,
        mut intake: MutexGuard<'a, Intake>,
        seq: u64,
    ) -> Result<(), AuditError> {
        loop {
            let durable = match self.durability {
                Durability::Strict => intake.synced_seq,
                Durability::Interval(_) => intake.written_seq,
            };
            if durable >= seq {
                return Ok(());
            }
            if let Some(cause) = &intake.failure {
                return Err(stopped(cause));
            }
            intake = if intake.writing {
                intake.sleepers += 1;
                let mut woken = self.landed.wait(intake).map_err(|_| AuditError::Stopped)?;
                woken.sleepers -= 1;
                woken
            } else {
                self.lead(intake)?
            };
        }
    }

    /// Writes everything in the intake as one batch, with the intake unlocked meanwhile, then
    /// wakes the waiting callers.
    fn lead<'a>(
        &'a self,
        intake: MutexGuard<'a, Intake>,
    ) -> Result<MutexGuard<'a, Intake>, AuditError> {
        self.lead_and(intake, Roll::Here)
    }

    /// [`Committer::lead`], with a full file rolled over by this caller, or left to the writer
    /// thread ([`Roll::Later`]: a roll syncs the whole file, which an async caller must not
    /// wait for on its thread).
    fn lead_and<'a>(
        &'a self,
        mut intake: MutexGuard<'a, Intake>,
        roll: Roll,
    ) -> Result<MutexGuard<'a, Intake>, AuditError> {
        intake.writing = true;
        let records = mem::take(&mut intake.records);
        let last_seq = intake.next_seq.saturating_sub(1);
        drop(intake);

        let written = {
            let _leader = LeaderGuard(self);
            self.write_batch(&records, last_seq, roll)
        };

        let mut intake = self.lock_intake()?;
        intake.writing = false;
        // A failed write stopped the log already; the batch's callers see that.
        if let Ok(synced) = written {
            intake.written_seq = last_seq;
            if synced {
                intake.synced_seq = intake.synced_seq.max(last_seq);
            }
        }
        if intake.records.is_empty() {
            let mut records = records;
            records.clear();
            intake.records = records;
        }
        self.hand_out_tickets(&mut intake);
        // A wake costs a system call; async callers alone leave no one to wake.
        if intake.sleepers > 0 {
            self.landed.notify_all();
        }
        Ok(intake)
    }

    /// Answers the tickets whose events are durable now; once the log stopped, those that never
    /// will be too, with the cause (but while a leader writes, its batch's tickets wait for it
    /// to land: a batch written before a roll failed is still recorded). Wakes the writer
    /// thread for the tickets left.
    fn hand_out_tickets(&self, intake: &mut Intake) {
        if intake.tickets.is_empty() {
            return;
        }
        let durable = match self.durability {
            Durability::Strict => intake.synced_seq,
            Durability::Interval(_) => intake.written_seq,
        };
        let done = intake.tickets.partition_point(|(seq, _)| *seq <= durable);
        for (_, ticket) in intake.tickets.drain(..done) {
            ticket.complete(Ok(()));
        }
        if let Some(cause) = &intake.failure {
            if !intake.writing {
                for (_, ticket) in intake.tickets.drain(..) {
                    ticket.complete(Err(Some(cause.clone())));
                }
            }
            return;
        }
        if !intake.tickets.is_empty() {
            self.work.notify_one();
        }
    }

    /// Writes one batch to the active file (and syncs it, in strict mode), and rolls the file
    /// over when it is full. Returns whether the batch is synced. Any failure stops the log.
    fn write_batch(&self, records: &[u8], last_seq: u64, roll: Roll) -> Result<bool, AuditError> {
        let mut active = self.lock_active()?;
        let written = self.write_to(&mut active, records, last_seq, roll);
        if let Err(error) = &written {
            self.stop(error);
        }
        written
    }

    fn write_to(
        &self,
        active: &mut Option<ActiveLog>,
        records: &[u8],
        last_seq: u64,
        roll: Roll,
    ) -> Result<bool, AuditError> {
        // A failure the flusher or a roll found stops the writes that follow it.
        self.health()?;
        let Some(log) = active.as_mut() else {
            return Err(AuditError::Stopped);
        };
        log.wal.write_records(records)?;
        let strict = self.durability == Durability::Strict;
        if strict {
            log.wal.sync()?;
        }
        // The batch holds every `seq` after the file's last one up to `last_seq`.
        log.events += usize::try_from(last_seq.saturating_sub(log.last_seq)).unwrap_or(usize::MAX);
        log.last_seq = last_seq;
        log.first_write.get_or_insert_with(Instant::now);
        let full = log.events >= self.limits.events || log.wal.len_bytes() >= self.limits.bytes;
        // The batch is written either way; a failed roll stops the log for the next ones.
        if full {
            match roll {
                Roll::Here => {
                    if let Ok(Some(closed)) = self.roll(active, Then::Continue) {
                        self.sealer.hand_over(closed);
                    }
                }
                Roll::Later => {
                    let mut intake = self.intake.lock().unwrap_or_else(PoisonError::into_inner);
                    intake.roll_wanted = true;
                    self.work.notify_one();
                }
            }
        }
        Ok(strict)
    }

    /// Closes the active file: syncs it whole, so that after a power cut only the newest file
    /// can end in a torn tail, and then creates the next file unless the log retires. Returns
    /// the closed file for the sealer. A failure stops the log; a failed sync also keeps the
    /// file where it is, because what reached the disk is unknown (the next open checks it).
    fn roll(
        &self,
        active: &mut Option<ActiveLog>,
        then: Then,
    ) -> Result<Option<ClosedLog>, AuditError> {
        let Some(log) = active.take() else {
            return Ok(None);
        };
        if then == Then::Continue && log.events == 0 {
            *active = Some(log);
            return Ok(None);
        }
        if let Err(error) = log.wal.sync() {
            self.stop(&error);
            *active = Some(log);
            return Err(error);
        }
        self.note_synced(log.last_seq);
        if then == Then::Continue {
            let path = self.wal_dir.join(log_file_name(log.last_seq + 1));
            match Wal::create(&path) {
                Ok(wal) => {
                    *active = Some(ActiveLog {
                        wal,
                        events: 0,
                        last_seq: log.last_seq,
                        first_write: None,
                    });
                }
                // The closed file is whole and synced: it is still sealed.
                Err(error) => self.stop(&error),
            }
        }
        tracing::debug!(
            path = %log.wal.path().display(),
            events = log.events,
            bytes = log.wal.len_bytes(),
            "wal_file_closed"
        );
        Ok(Some(ClosedLog {
            path: log.wal.path().to_owned(),
            events: log.events,
        }))
    }

    fn note_synced(&self, seq: u64) {
        let mut intake = self.intake.lock().unwrap_or_else(PoisonError::into_inner);
        intake.synced_seq = intake.synced_seq.max(seq);
    }

    /// Stops the log: from now on `record` fails, saying why, and so does the health check.
    fn stop(&self, error: &AuditError) {
        let mut intake = self.intake.lock().unwrap_or_else(PoisonError::into_inner);
        if intake.failure.is_none() {
            let cause = error.to_string();
            tracing::error!(error = %cause, "audit_log_stopped");
            intake.failure = Some(cause);
        }
        self.hand_out_tickets(&mut intake);
        self.landed.notify_all();
    }

    fn lock_intake(&self) -> Result<MutexGuard<'_, Intake>, AuditError> {
        // A poisoned lock means a panic mid-write: the log's state is unknown.
        self.intake.lock().map_err(|_| AuditError::Stopped)
    }

    fn lock_active(&self) -> Result<MutexGuard<'_, Option<ActiveLog>>, AuditError> {
        self.active.lock().map_err(|_| AuditError::Stopped)
    }
}

/// Where an async caller learns that its events are durable, or why they are not.
#[derive(Debug, Default)]
pub(crate) struct Ticket {
    state: Mutex<TicketState>,
}

#[derive(Debug, Default)]
struct TicketState {
    /// An error carries why the log stopped, or nothing when it closed.
    outcome: Option<Result<(), Option<String>>>,
    waker: Option<Waker>,
}

impl Ticket {
    fn complete(&self, outcome: Result<(), Option<String>>) {
        let waker = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.outcome.is_some() {
                return;
            }
            state.outcome = Some(outcome);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Resolves when a [`Committer::record_async`] call's events are durable.
#[derive(Debug)]
pub(crate) struct Durable(Arc<Ticket>);

impl Future for Durable {
    type Output = Result<(), AuditError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        match &state.outcome {
            Some(Ok(())) => Poll::Ready(Ok(())),
            Some(Err(Some(cause))) => Poll::Ready(Err(stopped(cause))),
            Some(Err(None)) => Poll::Ready(Err(AuditError::Closed)),
            None => {
                match &mut state.waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    slot => *slot = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

impl Intake {
    /// Gives each event its `seq`, time and id and encodes it for the next write. On an error
    /// nothing of the batch stays, and its `seq`s go to the next events.
    fn take_in(&mut self, events: Vec<NewEvent>, node: &str) -> Result<Vec<Recorded>, AuditError> {
        let mark = (self.records.len(), self.next_seq, self.last_time_micros);
        let mut recorded = Vec::with_capacity(events.len());
        for details in events {
            match self.encode_next(details, node) {
                Ok(one) => recorded.push(one),
                Err(error) => {
                    let (records, next_seq, last_time_micros) = mark;
                    self.records.truncate(records);
                    self.next_seq = next_seq;
                    self.last_time_micros = last_time_micros;
                    return Err(error);
                }
            }
        }
        Ok(recorded)
    }

    fn encode_next(&mut self, details: NewEvent, node: &str) -> Result<Recorded, AuditError> {
        let micros = Utc::now().timestamp_micros().max(self.last_time_micros);
        let time = DateTime::from_timestamp_micros(micros).ok_or(AuditError::ClockOutOfRange)?;
        let stamp = Stamp {
            event_id: self.ids.next(micros),
            seq: self.next_seq,
            time_micros: micros,
            node,
        };
        encode_record_parts(&stamp, &details, &mut self.records)?;
        self.next_seq += 1;
        self.last_time_micros = micros;
        Ok(Recorded {
            event_id: stamp.event_id,
            seq: stamp.seq,
            time,
        })
    }
}

/// The ids of a store's events: UUIDv7s (RFC 9562) as `Uuid::now_v7` makes them — the
/// millisecond of the event's time, then a 42-bit counter that starts at a random value each
/// millisecond and counts up within it, so that the ids of one node sort in `seq` order, then
/// 32 random bits — but with the random bits drawn from a generator seeded once from the
/// operating system. `now_v7` asks the operating system for every id, a system call per event.
/// Ids need to be unique, not secret: the counter and the seed keep them apart.
#[derive(Debug)]
struct EventIds {
    /// SplitMix64 state.
    state: u64,
    millis: u64,
    counter: u64,
}

/// The counter's bits; the top one starts clear, so that a millisecond has room for 2^41 ids.
const ID_COUNTER_BITS: u32 = 42;

impl EventIds {
    fn new(wal_dir: &Path) -> Result<EventIds, AuditError> {
        let mut seed = [0; 8];
        getrandom::fill(&mut seed).map_err(|error| AuditError::Io {
            action: "seed the event ids of",
            path: wal_dir.to_owned(),
            source: std::io::Error::other(error.to_string()),
        })?;
        Ok(EventIds {
            state: u64::from_le_bytes(seed),
            millis: 0,
            counter: 0,
        })
    }

    /// The id of an event recorded at `micros` (never earlier than the one before).
    fn next(&mut self, micros: i64) -> Uuid {
        let millis = u64::try_from(micros.div_euclid(1000)).unwrap_or(0);
        if millis > self.millis {
            self.millis = millis;
            self.counter = self.random() >> (64 - ID_COUNTER_BITS + 1);
        } else {
            self.counter += 1;
        }
        // The 80 bits after the timestamp: 4 of version, 12 of counter, 2 of variant, 30 of
        // counter, 32 random; the builder sets the version and variant bits.
        let counter = u128::from(self.counter);
        let random = u128::from(self.random() >> 32);
        let bits = ((counter >> 30) << 64) | ((counter & ((1 << 30) - 1)) << 32) | random;
        let bytes = bits.to_be_bytes();
        let mut tail = [0; 10];
        tail.copy_from_slice(&bytes[6..]);
        uuid::Builder::from_unix_timestamp_millis(millis, &tail).into_uuid()
    }

    /// SplitMix64 (Steele, Lea and Flood, 2014).
    fn random(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Stops the log if a leader's write panics, so that the callers waiting for it get an error
/// instead of waiting forever.
struct LeaderGuard<'a>(&'a Committer);

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut intake = self.0.intake.lock().unwrap_or_else(PoisonError::into_inner);
            intake.writing = false;
            intake
                .failure
                .get_or_insert_with(|| "a write to the log panicked".to_owned());
            self.0.hand_out_tickets(&mut intake);
            self.0.landed.notify_all();
        }
    }
}

fn stopped(cause: &str) -> AuditError {
    AuditError::StoppedAfterFailure {
        cause: cause.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests unwrap")]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_v7_and_sort_in_recording_order() {
        let mut ids = EventIds::new(Path::new("wal")).unwrap();
        let start = 1_764_892_800_000_000_i64;
        // Many ids within one millisecond, then the next milliseconds.
        let times = (0..5_000).map(|n| start + n / 3);
        let made: Vec<(i64, Uuid)> = times.map(|micros| (micros, ids.next(micros))).collect();
        for (micros, id) in &made {
            assert_eq!(id.get_version(), Some(uuid::Version::SortRand));
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
            let millis = i64::try_from(secs).unwrap() * 1000 + i64::from(nanos / 1_000_000);
            assert_eq!(millis, micros.div_euclid(1000));
        }
        assert!(made.windows(2).all(|pair| pair[0].1 < pair[1].1));
    }
}
