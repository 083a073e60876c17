//! Parquet segments: the sealed, columnar form of the events.
//!
//! Events from the write-ahead log go to `events/date=YYYY-MM-DD/`, one file per UTC date per
//! seal, named `seg-FIRST-LAST.parquet` with the zero-padded first and last `seq` it holds, so
//! that names sort by `seq`. A file is written under a `.tmp` name (which no query reads),
//! synced, renamed and its directory synced; only then may the write-ahead log forget its
//! events.
//!
//! The names are also the record of what is sealed: an event is sealed exactly when a file in
//! its date's directory has a range holding its `seq`. A seal takes every event in the log, so
//! every event of that date whose `seq` falls in the range is in that file.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::error::AuditError;
use crate::event::AccessEvent;
use crate::schema::{access_events_schema, events_to_batch};
use crate::wal::sync_dir;

/// The columns with bloom filters: the identities an auditor looks up one at a time.
pub const BLOOM_FILTER_COLUMNS: [&str; 3] = ["workload", "subject", "target"];

const PREFIX: &str = "seg-";
const SUFFIX: &str = ".parquet";
const TEMP_SUFFIX: &str = ".tmp";
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
    events_dir.join(format!("{DATE_PREFIX}{}", date.format("%Y-%m-%d")))
}

/// Which `seq` ranges are sealed, per date, as read from the segment file names.
#[derive(Debug, Default)]
pub struct SealedIndex {
    ranges: BTreeMap<NaiveDate, Vec<(u64, u64)>>,
    max_seq: u64,
}

impl SealedIndex {
    /// Lists the segments under `events_dir` and removes leftover temporary files, which only a
    /// seal that died before its rename leaves behind.
    // FIXME(#5): read the manifest instead of listing every partition.
    pub fn scan(events_dir: &Path) -> Result<SealedIndex, AuditError> {
        let mut index = SealedIndex::default();
        for entry in read_dir(events_dir)? {
            let name = entry.file_name();
            let date = name.to_str().and_then(|n| n.strip_prefix(DATE_PREFIX));
            let Some(date) = date.and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            else {
                continue;
            };
            index.scan_date(&entry.path(), date)?;
        }
        Ok(index)
    }

    fn scan_date(&mut self, dir: &Path, date: NaiveDate) -> Result<(), AuditError> {
        for entry in read_dir(dir)? {
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with(PREFIX) && name.ends_with(TEMP_SUFFIX) {
                fs::remove_file(&path).map_err(AuditError::io("remove", &path))?;
                tracing::info!(path = %path.display(), "segment_temp_file_removed");
            } else if let Some((first, last)) = parse_segment_file_name(&name) {
                self.insert(date, first, last);
            }
        }
        Ok(())
    }

    fn insert(&mut self, date: NaiveDate, first: u64, last: u64) {
        self.ranges.entry(date).or_default().push((first, last));
        self.max_seq = self.max_seq.max(last);
    }

    /// Whether `event` is already in a segment.
    pub fn contains(&self, event: &AccessEvent) -> bool {
        let Some(ranges) = self.ranges.get(&event.time.date_naive()) else {
            return false;
        };
        ranges
            .iter()
            .any(|(first, last)| (*first..=*last).contains(&event.seq))
    }

    /// The highest `seq` in any segment, 0 when there is none.
    pub fn max_seq(&self) -> u64 {
        self.max_seq
    }
}

/// Seals the events that are not yet sealed, one segment per date; `events` is in `seq`
/// order. Returns the new segment files.
pub fn write_segments(
    events_dir: &Path,
    events: &[AccessEvent],
    index: &mut SealedIndex,
) -> Result<Vec<PathBuf>, AuditError> {
    let mut by_date: BTreeMap<NaiveDate, Vec<AccessEvent>> = BTreeMap::new();
    for event in events.iter().filter(|event| !index.contains(event)) {
        by_date
            .entry(event.time.date_naive())
            .or_default()
            .push(event.clone());
    }
    let mut written = Vec::with_capacity(by_date.len());
    for (date, events) in by_date {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            continue;
        };
        let (first, last) = (first.seq, last.seq);
        written.push(write_segment(events_dir, date, first, last, &events)?);
        index.insert(date, first, last);
    }
    Ok(written)
}

fn write_segment(
    events_dir: &Path,
    date: NaiveDate,
    first: u64,
    last: u64,
    events: &[AccessEvent],
) -> Result<PathBuf, AuditError> {
    let dir = date_dir(events_dir, date);
    if !dir.is_dir() {
        fs::create_dir_all(&dir).map_err(AuditError::io("create", &dir))?;
        sync_dir(events_dir)?;
    }
    let name = segment_file_name(first, last);
    let path = dir.join(&name);
    let temp_path = dir.join(format!("{name}{TEMP_SUFFIX}"));

    let batch = events_to_batch(events)?;
    let file = File::create(&temp_path).map_err(AuditError::io("create", &temp_path))?;
    let parquet_error = |source| AuditError::Parquet {
        path: temp_path.clone(),
        source,
    };
    let mut writer = ArrowWriter::try_new(&file, access_events_schema(), Some(writer_properties()))
        .map_err(parquet_error)?;
    writer.write(&batch).map_err(parquet_error)?;
    writer.close().map_err(parquet_error)?;
    file.sync_all()
        .map_err(AuditError::io("sync", &temp_path))?;

    fs::rename(&temp_path, &path).map_err(AuditError::io("rename", &temp_path))?;
    sync_dir(&dir)?;
    tracing::debug!(path = %path.display(), events = events.len(), "segment_sealed");
    Ok(path)
}

fn writer_properties() -> WriterProperties {
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
