//! Retention: removing the segments `retention_days` no longer keeps, recorded in the manifest
//! before any file is deleted.
//!
//! A segment is removed once its partition's date is more than `retention_days` days before
//! today's UTC date. The removal is first appended to the manifest as a retention entry (which
//! entries, how many segments and events, the hash of the last removed entry) and signed; then
//! the files and the emptied partitions are deleted. A crash in between leaves the entry with
//! some files still present; the next open deletes them. The manifest keeps the entries of
//! removed segments, so the chain still verifies from its genesis entry.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{Days, NaiveDate};

use crate::manifest::{Chained, EntryBody, Hash, Manifest, ManifestError, RetentionRecord};

/// The segments a store keeps, and how long it keeps them.
#[derive(Debug)]
pub(crate) struct Retention {
    days: Option<u32>,
    /// The segment entries not removed, in index order.
    live: Vec<LiveSegment>,
    /// The cutoff of the last run: retention runs once per cutoff date.
    last_before: Option<NaiveDate>,
}

#[derive(Debug, Clone)]
struct LiveSegment {
    index: u64,
    date: NaiveDate,
    path: String,
    events: u64,
    hash: Hash,
}

/// What one retention run removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub segments: u64,
    pub events: u64,
    pub before: NaiveDate,
}

impl Retention {
    /// The retention state of a manifest's `entries`, keeping segments `days` days (forever
    /// with `None`).
    pub(crate) fn new(days: Option<u32>, entries: &[Chained]) -> Retention {
        let removed = removed_indices(entries);
        let mut retention = Retention {
            days,
            live: Vec::new(),
            last_before: None,
        };
        for chained in entries {
            if !removed.contains(&chained.entry.index) {
                retention.push(chained);
            }
        }
        retention
    }

    /// Takes a new entry into account; only segment entries matter.
    pub(crate) fn push(&mut self, chained: &Chained) {
        if let EntryBody::Segment(segment) = &chained.entry.body {
            self.live.push(LiveSegment {
                index: chained.entry.index,
                date: segment.min_time.date_naive(),
                path: segment.path.clone(),
                events: segment.events,
                hash: chained.hash,
            });
        }
    }

    /// Removes the segments of dates before `today` minus the retention, unless that was done
    /// for this cutoff already: appends and signs the retention entry, then deletes the files.
    pub(crate) fn apply_if_due(
        &mut self,
        data_dir: &Path,
        manifest: &mut Manifest,
        today: NaiveDate,
    ) -> Result<Option<Removal>, ManifestError> {
        let Some(days) = self.days else {
            return Ok(None);
        };
        let Some(before) = today.checked_sub_days(Days::new(u64::from(days))) else {
            return Ok(None);
        };
        if self.last_before == Some(before) {
            return Ok(None);
        }
        let (removed, kept): (Vec<LiveSegment>, Vec<LiveSegment>) = self
            .live
            .iter()
            .cloned()
            .partition(|segment| segment.date < before);
        let Some(last_removed) = removed.iter().max_by_key(|segment| segment.index) else {
            self.last_before = Some(before);
            return Ok(None);
        };
        let removal = Removal {
            segments: removed.len() as u64,
            events: removed.iter().map(|segment| segment.events).sum(),
            before,
        };
        let record = RetentionRecord {
            retention_days: u64::from(days),
            before,
            removed: index_ranges(removed.iter().map(|segment| segment.index)),
            segments: removal.segments,
            events: removal.events,
            last_removed_hash: last_removed.hash,
        };
        manifest.append(EntryBody::Retention(record))?;
        manifest.checkpoint()?;
        self.live = kept;
        self.last_before = Some(before);
        let paths: Vec<&str> = removed
            .iter()
            .map(|segment| segment.path.as_str())
            .collect();
        delete_segments(data_dir, &paths)?;
        tracing::info!(
            segments = removal.segments,
            events = removal.events,
            before = %before,
            retention_days = days,
            "audit_retention_removed"
        );
        Ok(Some(removal))
    }
}

/// Deletes what the last retention entry removed but a crash left in place.
pub(crate) fn finish_interrupted(data_dir: &Path, entries: &[Chained]) {
    let Some(last) = entries
        .iter()
        .rev()
        .find_map(|chained| match &chained.entry.body {
            EntryBody::Retention(record) => Some(record),
            _ => None,
        })
    else {
        return;
    };
    let paths: Vec<&str> = entries
        .iter()
        .filter(|chained| in_ranges(&last.removed, chained.entry.index))
        .filter_map(|chained| match &chained.entry.body {
            EntryBody::Segment(segment) => Some(segment.path.as_str()),
            _ => None,
        })
        .filter(|path| data_dir.join(path).exists())
        .collect();
    if paths.is_empty() {
        return;
    }
    match delete_segments(data_dir, &paths) {
        Ok(()) => tracing::info!(files = paths.len(), "audit_retention_finished"),
        Err(error) => {
            let error = crate::AuditError::from(error);
            tracing::warn!(%error, "audit_retention_failed");
        }
    }
}

/// The indices of every segment entry a retention entry removed.
pub fn removed_indices(entries: &[Chained]) -> BTreeSet<u64> {
    let mut removed = BTreeSet::new();
    for chained in entries {
        if let EntryBody::Retention(record) = &chained.entry.body {
            for (first, last) in &record.removed {
                removed.extend(*first..=*last);
            }
        }
    }
    removed
}

/// Whether `index` is in one of `ranges`.
pub fn in_ranges(ranges: &[(u64, u64)], index: u64) -> bool {
    ranges
        .iter()
        .any(|(first, last)| (*first..=*last).contains(&index))
}

/// Ascending indices as ascending, disjoint, inclusive ranges.
fn index_ranges(indices: impl Iterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for index in indices {
        match ranges.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(index) => *last = index,
            _ => ranges.push((index, index)),
        }
    }
    ranges
}

/// Deletes segment files (given relative to the data directory; a missing one is fine), then
/// the partitions they leave empty.
fn delete_segments(data_dir: &Path, paths: &[&str]) -> Result<(), ManifestError> {
    let mut dirs = BTreeSet::new();
    for path in paths {
        let path = data_dir.join(path);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(ManifestError::io("remove", &path)(error)),
        }
        if let Some(dir) = path.parent() {
            dirs.insert(dir.to_owned());
        }
    }
    let mut parents: BTreeSet<PathBuf> = BTreeSet::new();
    for dir in dirs {
        let empty = fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_none());
        if empty {
            fs::remove_dir(&dir).map_err(ManifestError::io("remove", &dir))?;
            if let Some(parent) = dir.parent() {
                parents.insert(parent.to_owned());
            }
        } else {
            parents.insert(dir);
        }
    }
    for parent in parents {
        fs::File::open(&parent)
            .and_then(|handle| handle.sync_all())
            .map_err(ManifestError::io("sync the directory", &parent))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_become_ranges() {
        let ranges = index_ranges([1, 2, 3, 5, 7, 8].into_iter());
        assert_eq!(ranges, vec![(1, 3), (5, 5), (7, 8)]);
        assert!(in_ranges(&ranges, 2));
        assert!(!in_ranges(&ranges, 4));
        assert!(index_ranges(std::iter::empty()).is_empty());
    }
}
