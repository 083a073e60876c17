//! Parquet segments: the sealed, columnar form of the events.
//!
//! Events from the write-ahead log go to `events/date=YYYY-MM-DD/`, one file per UTC date per
//! seal, named `seg-FIRST-LAST.parquet` with the zero-padded first and last `seq` it holds, so
//! that names sort by `seq`. A file is written under a `.tmp` name (which no query reads) while
//! its SHA-256 is computed, synced, renamed and its directory synced; then its entry is appended
//! to the integrity manifest ([`crate::manifest`]) and synced. Only then is the segment sealed
//! and may the write-ahead log forget its events.
//!
//! The manifest is also the record of what is sealed: an event is sealed exactly when a segment
//! entry of its date has a range holding its `seq`. A seal takes every event in the log, so
//! every event of that date whose `seq` falls in the range is in that file. A segment file the
//! manifest does not hold is what a seal leaves when it dies between the rename and the
//! manifest entry: the next seal chains it if it holds exactly the events the write-ahead log
//! still has for its range, and sets it aside (`….parquet.rejected`) otherwise.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::thread;

use arrow::array::{Array, ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
use chrono::{DateTime, NaiveDate, Utc};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_writer::{ArrowColumnChunk, ArrowColumnWriter, compute_leaves};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use sha2::{Digest, Sha256};

use crate::columns::{Columns, EventColumns};
use crate::error::AuditError;
use crate::event::AccessEvent;
use crate::manifest::{EntryBody, Hash, Manifest, ManifestError, SegmentRecord, Via};
use crate::retention::Retention;
use crate::schema::access_events_schema;
use crate::store::EVENTS_DIR;
use crate::wal::sync_dir;

/// The columns with bloom filters: the identities an auditor looks up one at a time. The other
/// identity columns, `trust_provider` and `issuer`, hold a handful of distinct values per
/// store; their dictionary pages and statistics already prune as well as a filter would.
pub const BLOOM_FILTER_COLUMNS: [&str; 3] = ["workload", "subject", "target"];

const PREFIX: &str = "seg-";
const SUFFIX: &str = ".parquet";
const TEMP_SUFFIX: &str = ".tmp";
const REJECTED_SUFFIX: &str = ".rejected";
const DATE_PREFIX: &str = "date=";

/// The file name of a segment holding `seq` values `first..=last`.
pub fn segment_file_name(first: u64, last: u64) -> String {
    format!("{PREFIX}{first:020}-{last:020}{SUFFIX}")
}

/// The `seq` range of a segment file name, or `None` for any other name.
pub fn parse_segment_file_name(name: &str) -> Option<(u64, u64)> {
    let range = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (first, last) = range.split_once('-')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(first) || !all_digits(last) {
        return None;
    }
    Some((first.parse().ok()?, last.parse().ok()?))
}

/// The directory of one date's segments.
pub fn date_dir(events_dir: &Path, date: NaiveDate) -> PathBuf {
    events_dir.join(date_dir_name(date))
}

fn date_dir_name(date: NaiveDate) -> String {
    format!("{DATE_PREFIX}{}", date.format("%Y-%m-%d"))
}

/// A segment's path relative to the data directory, as the manifest records it.
pub fn relative_segment_path(date: NaiveDate, first: u64, last: u64) -> String {
    format!(
        "{EVENTS_DIR}/{}/{}",
        date_dir_name(date),
        segment_file_name(first, last)
    )
}

/// A segment file as a seal wrote it: what its manifest entry records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSegment {
    /// Where the file is.
    pub path: PathBuf,
    /// The path relative to the data directory, with `/`.
    pub relative_path: String,
    pub sha256: Hash,
    pub bytes: u64,
    pub events: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub min_time: DateTime<Utc>,
    pub max_time: DateTime<Utc>,
}

impl SealedSegment {
    /// The manifest's record of this segment.
    pub fn record(&self, via: Via) -> SegmentRecord {
        SegmentRecord {
            path: self.relative_path.clone(),
            sha256: self.sha256,
            bytes: self.bytes,
            events: self.events,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            min_time: self.min_time,
            max_time: self.max_time,
            via,
        }
    }
}

/// Which `seq` ranges are sealed, per date, as the manifest records them; the manifest itself,
/// open for appending; and the retention state.
#[derive(Debug)]
pub struct SealedIndex {
    data_dir: PathBuf,
    ranges: BTreeMap<NaiveDate, Vec<(u64, u64)>>,
    max_seq: u64,
    manifest: Manifest,
    /// Segment entries no checkpoint signed when the store was opened, as (entry, first `seq`,
    /// last `seq`): signed only once [`SealedIndex::vouch`] finds their events in the
    /// write-ahead log, as a crash between chaining and signing leaves them.
    unvouched: Vec<(u64, u64, u64)>,
    /// Segment files on disk that the manifest does not hold.
    unchained: Vec<FoundSegment>,
    retention: Retention,
}

/// Why an unsigned retention entry is not one this store's retention wrote before a crash; none
/// when it is.
fn unsigned_removal_problem(
    record: &crate::manifest::RetentionRecord,
    chained: &crate::manifest::Chained,
    entries: &[crate::manifest::Chained],
    retention_days: Option<u32>,
) -> Option<&'static str> {
    let now = chrono::Utc::now();
    if entries.last().map(|last| last.entry.index) != Some(chained.entry.index) {
        return Some("entries follow it, which a crash before its signature cannot leave");
    }
    if retention_days.map(u64::from) != Some(record.retention_days) {
        return Some("the store's `retention_days` is not the entry's");
    }
    if chained.entry.time > now + chrono::Duration::minutes(5) {
        return Some("its time is in the future");
    }
    if !crate::manifest::retention_cutoff_holds(record, &chained.entry.time)
        || !crate::manifest::retention_cutoff_holds(record, &now)
    {
        return Some("its cutoff is later than its `retention_days` allow");
    }
    let removes_only_old_segments = record.removed.iter().all(|&(first, last)| {
        (first..=last).all(|index| {
            let segment = entries
                .get(usize::try_from(index).unwrap_or(usize::MAX))
                .map(|removed| &removed.entry.body);
            matches!(segment, Some(EntryBody::Segment(segment))
                if segment.min_time.date_naive() < record.before)
        })
    });
    if !removes_only_old_segments {
        return Some("it removes what is not a segment dated before its cutoff");
    }
    None
}

/// A segment file found by listing the partitions.
#[derive(Debug, Clone)]
struct FoundSegment {
    date: NaiveDate,
    first: u64,
    last: u64,
    path: PathBuf,
    relative_path: String,
}

impl SealedIndex {
    /// Opens the manifest of the store in `data_dir` (starting it, and the signing key, when
    /// there is none), removes leftover temporary files (which only a seal that died before its
    /// rename leaves behind), finishes a retention removal a crash interrupted, and applies
    /// `retention_days`.
    ///
    /// Segment files the manifest does not hold are chained now when the store had no manifest
    /// yet (a store written before manifests existed); otherwise they are reported, and chained
    /// by the next seal if the write-ahead log still holds their events.
    pub fn open(data_dir: &Path, retention_days: Option<u32>) -> Result<SealedIndex, AuditError> {
        let opened = Manifest::open(data_dir)?;
        let mut index = SealedIndex {
            data_dir: data_dir.to_owned(),
            ranges: BTreeMap::new(),
            max_seq: 0,
            manifest: opened.manifest,
            unvouched: Vec::new(),
            unchained: Vec::new(),
            retention: Retention::new(retention_days, &opened.entries),
        };
        let mut chained_paths = HashSet::new();
        for chained in &opened.entries {
            if let EntryBody::Segment(segment) = &chained.entry.body {
                let date = segment.min_time.date_naive();
                index.insert(date, segment.first_seq, segment.last_seq);
                chained_paths.insert(segment.path.clone());
            }
        }
        // A crash between writing a retention entry and signing it leaves it unsigned, and the
        // open signs it and deletes its files; so it must be what this store's retention wrote.
        let signed_through = index.manifest.signed_through();
        for chained in &opened.entries {
            if let EntryBody::Retention(record) = &chained.entry.body
                && signed_through.is_none_or(|signed| chained.entry.index > signed)
                && let Some(problem) =
                    unsigned_removal_problem(record, chained, &opened.entries, retention_days)
            {
                return Err(ManifestError::UnsignedRemoval {
                    path: data_dir.join(crate::manifest::MANIFEST_DIR),
                    entry: chained.entry.index,
                    problem,
                }
                .into());
            }
        }
        crate::retention::finish_interrupted(data_dir, &opened.entries);

        let found = list_segments(&data_dir.join(EVENTS_DIR))?;
        let unchained = found
            .into_iter()
            .filter(|segment| !chained_paths.contains(&segment.relative_path));
        if opened.created {
            index.chain_existing(unchained.collect())?;
        } else {
            for segment in unchained {
                tracing::warn!(path = %segment.path.display(), "segment_not_in_manifest");
                index.insert(segment.date, segment.first, segment.last);
                index.unchained.push(segment);
            }
        }
        // A crash between chaining and signing leaves segment entries unsigned, and their events
        // still in the write-ahead log, whose file is deleted only after the signature. They
        // are signed once the log shows that ([`SealedIndex::vouch`]); until then nothing is
        // signed, since a checkpoint would vouch for them through the chain.
        index.unvouched = opened
            .entries
            .iter()
            .filter(|chained| signed_through.is_none_or(|signed| chained.entry.index > signed))
            .filter_map(|chained| match &chained.entry.body {
                EntryBody::Segment(segment) => {
                    Some((chained.entry.index, segment.first_seq, segment.last_seq))
                }
                _ => None,
            })
            .collect();
        if index.unvouched.is_empty() {
            if let Some(entry) = index.manifest.unsigned_head().filter(|_| !opened.created) {
                tracing::warn!(entry, "manifest_head_signed_at_open");
            }
            index.manifest.checkpoint()?;
            index.apply_retention();
        }
        Ok(index)
    }

    /// Signs the segment entries found unsigned at open, once the write-ahead log, whose events
    /// run from `seq` `first` to `last` (`None` for an empty log), holds every one of theirs:
    /// the crash between chaining and signing that leaves them unsigned deletes no log file.
    /// Any other unsigned segment entry was not written by a seal of this store, and is
    /// refused.
    pub(crate) fn vouch(&mut self, wal_seqs: Option<(u64, u64)>) -> Result<(), AuditError> {
        let held = |first: u64, last: u64| {
            wal_seqs.is_some_and(|(low, high)| low <= first && last <= high)
        };
        if let Some(&(entry, first, last)) = self
            .unvouched
            .iter()
            .find(|(_, first, last)| !held(*first, *last))
        {
            return Err(ManifestError::UnvouchedSegment {
                path: self.data_dir.join(crate::manifest::MANIFEST_DIR),
                entry,
                first,
                last,
            }
            .into());
        }
        if let Some(&(entry, ..)) = self.unvouched.last() {
            tracing::warn!(entry, "manifest_head_signed_at_open");
            self.unvouched.clear();
            self.manifest.checkpoint()?;
            self.apply_retention();
        }
        Ok(())
    }

    /// Rotates the manifest's signing key: see [`Manifest::rotate_key`]. Returns the old and the
    /// new key's ids, and the rotation's entry.
    pub(crate) fn rotate_key(&mut self) -> Result<(String, String, u64), AuditError> {
        Ok(self.manifest.rotate_key(&self.data_dir)?)
    }

    /// The index of the store whose segments are in `events_dir` (`DATA/events`), without
    /// retention.
    pub fn scan(events_dir: &Path) -> Result<SealedIndex, AuditError> {
        SealedIndex::open(events_dir.parent().unwrap_or(Path::new("")), None)
    }

    fn insert(&mut self, date: NaiveDate, first: u64, last: u64) {
        self.ranges.entry(date).or_default().push((first, last));
        self.max_seq = self.max_seq.max(last);
    }

    fn remove(&mut self, date: NaiveDate, first: u64, last: u64) {
        if let Some(ranges) = self.ranges.get_mut(&date) {
            ranges.retain(|range| *range != (first, last));
        }
    }

    /// Whether `event` is already in a segment.
    pub fn contains(&self, event: &AccessEvent) -> bool {
        self.holds(event.time.date_naive(), event.seq)
    }

    /// Whether the event `seq` of `date` is already in a segment.
    pub fn holds(&self, date: NaiveDate, seq: u64) -> bool {
        let Some(ranges) = self.ranges.get(&date) else {
            return false;
        };
        ranges
            .iter()
            .any(|(first, last)| (*first..=*last).contains(&seq))
    }

    /// The highest `seq` in any segment, 0 when there is none.
    pub fn max_seq(&self) -> u64 {
        self.max_seq
    }

    /// Chains the segments of a store that had no manifest, in `seq` order. A file that is not
    /// a complete segment stays out of the chain, and `verify` names it.
    fn chain_existing(&mut self, mut found: Vec<FoundSegment>) -> Result<(), AuditError> {
        found.sort_by_key(|segment| segment.first);
        for segment in found {
            self.insert(segment.date, segment.first, segment.last);
            match inspect_segment(&segment, None) {
                Ok(sealed) => {
                    let body = EntryBody::Segment(sealed.record(Via::Upgrade));
                    let chained = self.manifest.append(body)?;
                    self.retention.push(&chained);
                    tracing::info!(path = %segment.path.display(), "segment_chained_at_upgrade");
                }
                Err(problem) => {
                    tracing::warn!(
                        path = %segment.path.display(),
                        %problem,
                        "segment_not_chained"
                    );
                    self.unchained.push(segment);
                }
            }
        }
        Ok(())
    }

    /// Refuses a store that still has a segment the manifest does not hold once the write-ahead
    /// log has been replayed: a seal cut short by a crash leaves its events in the log, which
    /// [`SealedIndex::chain_recovered`] then chains; a segment whose events no log file holds
    /// was chained once, and its entry has since been cut from the manifest.
    pub(crate) fn refuse_unchained(&self) -> Result<(), ManifestError> {
        let Some(segment) = self.unchained.first() else {
            return Ok(());
        };
        Err(ManifestError::Segment {
            path: segment.path.clone(),
            problem: "it is not in the manifest, and no write-ahead log file holds its events, \
                      as a seal cut short by a crash would leave them: entries were cut from the \
                      manifest's end; `portcullis audit verify` names what differs, and the \
                      store stays closed until the manifest is restored"
                .to_owned(),
        })
    }

    /// Chains the unchained segments whose events are in `events` (the write-ahead log): a
    /// seal died after renaming them and before chaining them. One that does not hold exactly
    /// those events is renamed aside, and the events are sealed again.
    fn chain_recovered(&mut self, events: &Columns) -> Result<(), AuditError> {
        for segment in std::mem::take(&mut self.unchained) {
            let seqs = events.seqs();
            let rows = seqs.partition_point(|seq| *seq < segment.first)
                ..seqs.partition_point(|seq| *seq <= segment.last);
            if rows.is_empty() {
                self.unchained.push(segment);
                continue;
            }
            let logged = Logged {
                events: rows.len() as u64,
                ids_digest: ids_digest(events, rows),
            };
            match inspect_segment(&segment, Some(&logged)) {
                Ok(sealed) => {
                    let chained = self
                        .manifest
                        .append(EntryBody::Segment(sealed.record(Via::Recovery)))?;
                    self.retention.push(&chained);
                    tracing::info!(path = %segment.path.display(), "segment_chained_after_crash");
                }
                Err(problem) => self.set_aside(&segment, &problem)?,
            }
        }
        Ok(())
    }

    fn set_aside(
        &mut self,
        segment: &FoundSegment,
        problem: &ManifestError,
    ) -> Result<(), AuditError> {
        let mut aside = segment.path.clone().into_os_string();
        aside.push(REJECTED_SUFFIX);
        fs::rename(&segment.path, &aside).map_err(AuditError::io("rename", &segment.path))?;
        self.remove(segment.date, segment.first, segment.last);
        tracing::warn!(
            path = %segment.path.display(),
            %problem,
            "segment_set_aside"
        );
        Ok(())
    }

    /// Appends a segment the seal wrote to the manifest.
    fn chain(&mut self, segment: &SealedSegment) -> Result<(), AuditError> {
        let chained = self
            .manifest
            .append(EntryBody::Segment(segment.record(Via::Seal)))?;
        self.insert(
            segment.min_time.date_naive(),
            segment.first_seq,
            segment.last_seq,
        );
        self.retention.push(&chained);
        Ok(())
    }

    /// Removes what `retention_days` no longer keeps. A failure is logged, not returned: the
    /// seal it follows succeeded, and the next seal or open tries again.
    fn apply_retention(&mut self) {
        let today = Utc::now().date_naive();
        if let Err(error) = self
            .retention
            .apply_if_due(&self.data_dir, &mut self.manifest, today)
        {
            let error = AuditError::from(error);
            tracing::warn!(%error, "audit_retention_failed");
        }
    }
}

/// Seals the events that are not yet sealed, one segment per date, each chained in the
/// manifest as soon as it is written, and signs a checkpoint of the chain; `events` is in
/// `seq` order. Returns the new segment files. [`write_columns`] for events in columns.
pub fn write_segments(
    events_dir: &Path,
    events: &[AccessEvent],
    index: &mut SealedIndex,
) -> Result<Vec<PathBuf>, AuditError> {
    write_columns(events_dir, &EventColumns::from_events(events)?, index)
}

/// [`write_segments`] for events in columns, as a seal reads them from the write-ahead log.
pub fn write_columns(
    events_dir: &Path,
    events: &Columns,
    index: &mut SealedIndex,
) -> Result<Vec<PathBuf>, AuditError> {
    if let Some(&(entry, first, last)) = index.unvouched.first() {
        return Err(ManifestError::UnvouchedSegment {
            path: index.data_dir.join(crate::manifest::MANIFEST_DIR),
            entry,
            first,
            last,
        }
        .into());
    }
    index.chain_recovered(events)?;
    let mut written = Vec::new();
    for run in unsealed_runs(events, index) {
        let date = run.date;
        let Some(segment) = write_segment(events_dir, date, events, run.range)? else {
            continue;
        };
        index.chain(&segment)?;
        written.push(segment.path);
    }
    index.manifest.checkpoint()?;
    index.apply_retention();
    Ok(written)
}

/// A run of consecutive events of one date that no segment holds yet.
pub(crate) struct Run {
    date: NaiveDate,
    pub(crate) range: std::ops::Range<usize>,
}

/// The runs of `events` (in `seq` order) to seal: each maximal stretch of events of one date
/// that the index does not hold. Time never goes backwards within a log file, so a seal of
/// one file finds one run per date, and nothing is copied to group them.
pub(crate) fn unsealed_runs(events: &Columns, index: &SealedIndex) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    let mut open = false;
    for (idx, seq) in events.seqs().iter().enumerate() {
        let date = events.date(idx);
        if index.holds(date, *seq) {
            open = false;
            continue;
        }
        match runs.last_mut() {
            Some(run) if open && run.date == date => run.range.end = idx + 1,
            _ => {
                runs.push(Run {
                    date,
                    range: idx..idx + 1,
                });
                open = true;
            }
        }
    }
    runs
}

/// Writes one date's events, the consecutive `rows` of `events`, as a segment; `None` when
/// there are none.
fn write_segment(
    events_dir: &Path,
    date: NaiveDate,
    events: &Columns,
    rows: std::ops::Range<usize>,
) -> Result<Option<SealedSegment>, AuditError> {
    let seqs = events.seqs().get(rows.clone()).unwrap_or_default();
    let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else {
        return Ok(None);
    };
    let dir = date_dir(events_dir, date);
    if !dir.is_dir() {
        fs::create_dir_all(&dir).map_err(AuditError::io("create", &dir))?;
        sync_dir(events_dir)?;
    }
    let name = segment_file_name(first, last);
    let path = dir.join(&name);
    let temp_path = dir.join(format!("{name}{TEMP_SUFFIX}"));

    let file = File::create(&temp_path).map_err(AuditError::io("create", &temp_path))?;
    let parquet_error = |source| AuditError::Parquet {
        path: temp_path.clone(),
        source,
    };
    // `ArrowWriter` sets up the file as it always does (the Arrow schema in the footer, the
    // properties); the one row group is then encoded column by column, on several threads.
    let writer = ArrowWriter::try_new(
        HashingWriter::new(file),
        access_events_schema(),
        Some(writer_properties()),
    )
    .map_err(parquet_error)?;
    let (mut writer, columns) = writer.into_serialized_writer().map_err(parquet_error)?;
    let column_writers = columns.create_column_writers(0).map_err(parquet_error)?;
    let chunks =
        encode_columns(&events.slice(rows.clone()), column_writers).map_err(parquet_error)?;
    let mut row_group = writer.next_row_group().map_err(parquet_error)?;
    for chunk in chunks {
        chunk
            .append_to_row_group(&mut row_group)
            .map_err(parquet_error)?;
    }
    row_group.close().map_err(parquet_error)?;
    let (file, sha256, bytes) = writer.into_inner().map_err(parquet_error)?.finish();
    file.sync_all()
        .map_err(AuditError::io("sync", &temp_path))?;

    fs::rename(&temp_path, &path).map_err(AuditError::io("rename", &temp_path))?;
    sync_dir(&dir)?;
    tracing::debug!(path = %path.display(), events = seqs.len(), "segment_sealed");
    let (min_time, max_time) = events.time_range(rows);
    Ok(Some(SealedSegment {
        path,
        relative_path: relative_segment_path(date, first, last),
        sha256,
        bytes,
        events: seqs.len() as u64,
        first_seq: first,
        last_seq: last,
        min_time,
        max_time,
    }))
}

/// The most threads one seal encodes columns on, the sealer's own included.
const MAX_ENCODE_THREADS: usize = 4;

/// Encodes every column of `columns` with its writer, on as many threads as there are cores
/// (up to [`MAX_ENCODE_THREADS`]), and returns the chunks in column order.
///
/// Encoding — dictionaries, statistics, bloom filters, zstd — is most of a seal's work, and
/// columns are independent: the sealer takes one, each helper another, until none is left.
/// `claims` goes first because it alone is about three quarters of the bytes, so the other
/// threads share the rest meanwhile.
fn encode_columns(
    columns: &[ArrayRef],
    writers: Vec<ArrowColumnWriter>,
) -> Result<Vec<ArrowColumnChunk>, ParquetError> {
    let n_columns = writers.len();
    let schema = access_events_schema();
    let mut jobs: Vec<(usize, ArrowColumnWriter)> = writers.into_iter().enumerate().collect();
    // Popped from the back: the first column to take goes last.
    jobs.sort_by_key(|(idx, _)| schema.field(*idx).name() == "claims");
    let jobs = Mutex::new(jobs);
    let done: Mutex<Vec<Option<ArrowColumnChunk>>> =
        Mutex::new((0..n_columns).map(|_| None).collect());
    let failed: Mutex<Option<ParquetError>> = Mutex::new(None);

    let work = || {
        loop {
            let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let Some((idx, writer)) = job else {
                return;
            };
            let Some(array) = columns.get(idx) else {
                return;
            };
            match encode_column(idx, array, writer) {
                Ok(chunk) => {
                    let mut done = done.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some(slot) = done.get_mut(idx) {
                        *slot = Some(chunk);
                    }
                }
                Err(error) => {
                    failed
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get_or_insert(error);
                    jobs.lock().unwrap_or_else(PoisonError::into_inner).clear();
                    return;
                }
            }
        }
    };
    let threads = thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, MAX_ENCODE_THREADS);
    thread::scope(|scope| {
        for _ in 1..threads {
            // A helper that cannot start leaves its share to the others.
            let _ = thread::Builder::new()
                .name("audit-encode".to_owned())
                .spawn_scoped(scope, work);
        }
        work();
    });

    if let Some(error) = failed.into_inner().unwrap_or_else(PoisonError::into_inner) {
        return Err(error);
    }
    let done = done.into_inner().unwrap_or_else(PoisonError::into_inner);
    // Every column is done unless an encoder failed (answered above): a panic in a helper
    // reaches this thread through the scope, as one in the sealer's own share would.
    done.into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or(ParquetError::General(
            "a column of the segment was not encoded".to_owned(),
        ))
}

/// Encodes `array`, column `idx`.
fn encode_column(
    idx: usize,
    array: &ArrayRef,
    mut writer: ArrowColumnWriter,
) -> Result<ArrowColumnChunk, ParquetError> {
    let schema = access_events_schema();
    let leaves = compute_leaves(schema.field(idx), array)?;
    for leaf in &leaves {
        writer.write(leaf)?;
    }
    writer.close()
}

/// Passes bytes through to a file, computing their SHA-256 and counting them.
struct HashingWriter {
    file: File,
    hasher: Sha256,
    bytes: u64,
}

impl HashingWriter {
    fn new(file: File) -> HashingWriter {
        HashingWriter {
            file,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    fn finish(self) -> (File, Hash, u64) {
        (self.file, self.hasher.finalize().into(), self.bytes)
    }
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.file.write(buf)?;
        let chunk = buf.get(..written).unwrap_or(buf);
        self.hasher.update(chunk);
        self.bytes += chunk.len() as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The SHA-256 and length of a file, read in chunks; `on_chunk` hears each chunk's length.
pub fn file_sha256(path: &Path, on_chunk: &mut dyn FnMut(u64)) -> io::Result<(Hash, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    let mut total = 0;
    loop {
        let read = file.read(&mut buffer)?;
        let Some(chunk) = buffer.get(..read).filter(|chunk| !chunk.is_empty()) else {
            break;
        };
        hasher.update(chunk);
        total += read as u64;
        on_chunk(read as u64);
    }
    Ok((hasher.finalize().into(), total))
}

/// What a segment file holds, read back from its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentContents {
    pub rows: u64,
    /// The `seq` of the first and of the last row.
    pub first_seq: u64,
    pub last_seq: u64,
    /// Whether every row's `seq` is one more than the row's before.
    pub consecutive: bool,
    pub min_time: DateTime<Utc>,
    pub max_time: DateTime<Utc>,
    /// SHA-256 over the rows' `event_id`s, each followed by a newline, when asked for.
    pub ids_digest: Option<Hash>,
}

/// Why a segment file cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum SegmentReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("it is not a readable Parquet file: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("its rows do not decode: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("column `{column}` is missing or is not {expected}")]
    Column {
        column: &'static str,
        expected: &'static str,
    },
    #[error("column `{column}` holds a null or out-of-range value")]
    Value { column: &'static str },
    #[error("it holds no events")]
    Empty,
}

/// Reads the `seq` and `time` columns (and `event_id`, with `with_ids`) of a segment file.
pub fn read_segment(path: &Path, with_ids: bool) -> Result<SegmentContents, SegmentReadError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)?;
    let mut columns = vec!["seq", "time"];
    if with_ids {
        columns.push("event_id");
    }
    let mask = ProjectionMask::columns(builder.parquet_schema(), columns);
    let reader = builder.with_projection(mask).build()?;
    let mut reading = Reading::new(with_ids);
    for batch in reader {
        let batch = batch?;
        let seqs = column::<Int64Array>(&batch, "seq", "64-bit integers")?;
        let times = column::<TimestampMicrosecondArray>(&batch, "time", "microsecond times")?;
        let ids = match with_ids {
            true => Some(column::<StringArray>(&batch, "event_id", "text")?),
            false => None,
        };
        for row in 0..batch.num_rows() {
            reading.row(seqs, times, ids, row)?;
        }
    }
    reading.finish()
}

fn column<'a, T: Array + 'static>(
    batch: &'a arrow::array::RecordBatch,
    column: &'static str,
    expected: &'static str,
) -> Result<&'a T, SegmentReadError> {
    batch
        .column_by_name(column)
        .and_then(|array| array.as_any().downcast_ref::<T>())
        .ok_or(SegmentReadError::Column { column, expected })
}

/// The running state of [`read_segment`].
struct Reading {
    rows: u64,
    seqs: Option<(u64, u64)>,
    consecutive: bool,
    times: Option<(DateTime<Utc>, DateTime<Utc>)>,
    ids: Option<Sha256>,
}

impl Reading {
    fn new(with_ids: bool) -> Reading {
        Reading {
            rows: 0,
            seqs: None,
            consecutive: true,
            times: None,
            ids: with_ids.then(Sha256::new),
        }
    }

    fn row(
        &mut self,
        seqs: &Int64Array,
        times: &TimestampMicrosecondArray,
        ids: Option<&StringArray>,
        row: usize,
    ) -> Result<(), SegmentReadError> {
        let value = |column| SegmentReadError::Value { column };
        let seq = (!seqs.is_null(row))
            .then(|| seqs.value(row))
            .and_then(|seq| u64::try_from(seq).ok())
            .ok_or(value("seq"))?;
        let time = (!times.is_null(row))
            .then(|| times.value(row))
            .and_then(DateTime::from_timestamp_micros)
            .ok_or(value("time"))?;
        if let (Some(hasher), Some(ids)) = (self.ids.as_mut(), ids) {
            if ids.is_null(row) {
                return Err(value("event_id"));
            }
            hasher.update(ids.value(row).as_bytes());
            hasher.update(b"\n");
        }
        self.rows += 1;
        self.seqs = Some(match self.seqs {
            None => (seq, seq),
            Some((first, last)) => {
                self.consecutive &= last.checked_add(1) == Some(seq);
                (first, seq)
            }
        });
        self.times = Some(match self.times {
            None => (time, time),
            Some((min, max)) => (min.min(time), max.max(time)),
        });
        Ok(())
    }

    fn finish(self) -> Result<SegmentContents, SegmentReadError> {
        let (Some((first_seq, last_seq)), Some((min_time, max_time))) = (self.seqs, self.times)
        else {
            return Err(SegmentReadError::Empty);
        };
        Ok(SegmentContents {
            rows: self.rows,
            first_seq,
            last_seq,
            consecutive: self.consecutive,
            min_time,
            max_time,
            ids_digest: self.ids.map(|hasher| hasher.finalize().into()),
        })
    }
}

/// The digest [`read_segment`] computes over `event_id`s, for `rows` of events in memory.
fn ids_digest(events: &Columns, rows: std::ops::Range<usize>) -> Hash {
    let mut hasher = Sha256::new();
    if let Some(ids) = events.event_ids() {
        for row in rows {
            hasher.update(ids.value(row).as_bytes());
            hasher.update(b"\n");
        }
    }
    hasher.finalize().into()
}

/// The events of the write-ahead log that a segment found after a crash must hold.
struct Logged {
    events: u64,
    ids_digest: Hash,
}

/// Reads a segment file that is not in the manifest and describes it for its entry, after
/// checking that it is complete: its rows are exactly the `seq` range of its name, of its
/// partition's date, and, when `logged` is given, exactly those events of the write-ahead log.
fn inspect_segment(
    segment: &FoundSegment,
    logged: Option<&Logged>,
) -> Result<SealedSegment, ManifestError> {
    let problem = |problem: String| ManifestError::Segment {
        path: segment.path.clone(),
        problem,
    };
    let contents = read_segment(&segment.path, logged.is_some())
        .map_err(|error| problem(error.to_string()))?;
    let expected_rows = segment.last.checked_sub(segment.first).map(|span| span + 1);
    let complete = contents.first_seq == segment.first
        && contents.last_seq == segment.last
        && contents.consecutive
        && Some(contents.rows) == expected_rows;
    if !complete {
        return Err(problem(format!(
            "its rows are not exactly `seq` {}..={} of its name",
            segment.first, segment.last
        )));
    }
    let dates = [contents.min_time, contents.max_time].map(|time| time.date_naive());
    if dates != [segment.date; 2] {
        return Err(problem(
            "its events are not all of its partition's date".to_owned(),
        ));
    }
    if let Some(logged) = logged {
        let same = logged.events == contents.rows && contents.ids_digest == Some(logged.ids_digest);
        if !same {
            return Err(problem(
                "it does not hold the write-ahead log's events of its range".to_owned(),
            ));
        }
    }
    let (sha256, bytes) = file_sha256(&segment.path, &mut |_| {})
        .map_err(ManifestError::io("read", &segment.path))?;
    Ok(SealedSegment {
        path: segment.path.clone(),
        relative_path: segment.relative_path.clone(),
        sha256,
        bytes,
        events: contents.rows,
        first_seq: contents.first_seq,
        last_seq: contents.last_seq,
        min_time: contents.min_time,
        max_time: contents.max_time,
    })
}

/// Lists the segment files under `events_dir` (none when it does not exist), removing leftover
/// temporary files.
fn list_segments(events_dir: &Path) -> Result<Vec<FoundSegment>, AuditError> {
    let mut found = Vec::new();
    if !events_dir.is_dir() {
        return Ok(found);
    }
    for entry in read_dir(events_dir)? {
        let name = entry.file_name();
        let date = name.to_str().and_then(|n| n.strip_prefix(DATE_PREFIX));
        let Some(date) = date.and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()) else {
            continue;
        };
        let dir_name = name.to_string_lossy();
        list_date(&entry.path(), &dir_name, date, &mut found)?;
    }
    Ok(found)
}

fn list_date(
    dir: &Path,
    dir_name: &str,
    date: NaiveDate,
    found: &mut Vec<FoundSegment>,
) -> Result<(), AuditError> {
    for entry in read_dir(dir)? {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with(PREFIX) && name.ends_with(TEMP_SUFFIX) {
            fs::remove_file(&path).map_err(AuditError::io("remove", &path))?;
            tracing::info!(path = %path.display(), "segment_temp_file_removed");
        } else if let Some((first, last)) = parse_segment_file_name(&name) {
            found.push(FoundSegment {
                date,
                first,
                last,
                relative_path: format!("{EVENTS_DIR}/{dir_name}/{name}"),
                path,
            });
        }
    }
    Ok(())
}

/// The columns whose values are (nearly) all distinct: no dictionary, which would only be built
/// and thrown away (the writer falls back to plain values once a dictionary passes 1 MiB), at a
/// hash of every value. Measured on the ingest benchmark's segments of about 49,000 events:
/// `claims` 48,987 distinct values, `evidence_sha256` 46,542, `source_ip` 45,494,
/// `credential_ref` 33,444 (55 bytes each, past the limit too), `event_id` all.
const PLAIN_COLUMNS: [&str; 5] = [
    "event_id",
    "claims",
    "evidence_sha256",
    "source_ip",
    "credential_ref",
];

/// The integer columns stored as deltas (`DELTA_BINARY_PACKED`), without a dictionary: `seq`
/// counts up by one and `time` by a few microseconds, so their deltas pack into a few bits,
/// where a dictionary of distinct values took about 3 bytes per row each; `latency_ns` is
/// mostly distinct, and its deltas take fewer bits than its dictionary's indices did.
const DELTA_COLUMNS: [&str; 3] = ["seq", "time", "latency_ns"];

/// The properties of every segment, built once.
static WRITER_PROPERTIES: LazyLock<WriterProperties> = LazyLock::new(build_writer_properties);

fn writer_properties() -> WriterProperties {
    WRITER_PROPERTIES.clone()
}

fn build_writer_properties() -> WriterProperties {
    let seq_column = access_events_schema().index_of("seq").ok();
    let sorting = seq_column
        .and_then(|idx| i32::try_from(idx).ok())
        .map(|column_idx| {
            vec![SortingColumn {
                column_idx,
                descending: false,
                nulls_first: false,
            }]
        });
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(sorting);
    for column in BLOOM_FILTER_COLUMNS {
        builder = builder.set_column_bloom_filter_enabled(ColumnPath::from(column), true);
    }
    for column in PLAIN_COLUMNS {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    for column in DELTA_COLUMNS {
        builder = builder
            .set_column_dictionary_enabled(ColumnPath::from(column), false)
            .set_column_encoding(ColumnPath::from(column), Encoding::DELTA_BINARY_PACKED);
    }
    builder.build()
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>, AuditError> {
    let entries = fs::read_dir(dir).map_err(AuditError::io("list", dir))?;
    entries
        .collect::<Result<_, _>>()
        .map_err(AuditError::io("list", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_seq() {
        let early = segment_file_name(9, 10);
        let late = segment_file_name(11, 200);
        assert_eq!(parse_segment_file_name(&early), Some((9, 10)));
        assert_eq!(parse_segment_file_name(&late), Some((11, 200)));
        assert!(early < late);
        assert_eq!(
            early,
            "seg-00000000000000000009-00000000000000000010.parquet"
        );
    }

    #[test]
    fn other_names_are_not_segments() {
        for name in [
            "seg-1-2.parquet.tmp",
            "seg--2.parquet",
            "seg-1-+2.parquet",
            "part-0.parquet",
            "seg-1-2",
        ] {
            assert_eq!(parse_segment_file_name(name), None, "{name}");
        }
    }
}
