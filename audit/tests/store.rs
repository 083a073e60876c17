//! The store: seq across restarts, group commit, rolling and background sealing, recovery
//! across log files exactly once, failing closed, segments, the directory lock.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests unwrap and panic on a wrong variant"
)]

mod common;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use chrono::{DateTime, Utc};
use common::{decision, open, open_with, segment_files, stored_event, wal_file, wal_files};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::reader::{FileReader, SerializedFileReader};
use portcullis_audit::segment::{SealedIndex, write_segments};
use portcullis_audit::wal::{LEGACY_WAL_FILE, TornTail, Wal, WalReader, log_file_name};
use portcullis_audit::{
    AccessEvent, AuditError, AuditLog, AuditOptions, Decision, NewEvent, RecordProblem,
};

fn record_n(log: &AuditLog, n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| {
            log.record(decision(&format!("w{i}"), Decision::Allow))
                .unwrap()
                .seq
        })
        .collect()
}

/// The segment files under `DATA/events`, without the one the background sealer may be
/// writing at the moment.
fn sealed_segments(dir: &Path) -> Vec<PathBuf> {
    let mut files = segment_files(dir);
    files.retain(|path| path.extension().is_some_and(|ext| ext == "parquet"));
    files
}

fn parquet_rows(path: &Path) -> i64 {
    let reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
    reader.metadata().file_metadata().num_rows()
}

fn total_rows(dir: &Path) -> i64 {
    sealed_segments(dir)
        .iter()
        .map(|path| parquet_rows(path))
        .sum()
}

fn file_names(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|path| path.file_name().unwrap().to_str().unwrap().to_owned())
        .collect()
}

fn options(seal_after_events: usize) -> AuditOptions {
    AuditOptions {
        seal_after_events,
        ..AuditOptions::new("test")
    }
}

/// Asks `check` every 10 ms until it holds; fails after 20 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Writes log files into `DATA/wal` as a run that died would leave them: one file per slice of
/// `seq`s, each named after its first. Returns the files and each one's record end offsets.
fn write_wal_files(data_dir: &Path, runs: &[std::ops::RangeInclusive<u64>]) -> Vec<PathBuf> {
    let wal_dir = data_dir.join("wal");
    fs::create_dir_all(&wal_dir).unwrap();
    let time = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
    runs.iter()
        .map(|run| {
            let path = wal_dir.join(log_file_name(*run.start()));
            let mut wal = Wal::create(&path).unwrap();
            for seq in run.clone() {
                let event = stored_event(seq, time, decision(&format!("w{seq}"), Decision::Deny));
                wal.append(&event).unwrap();
            }
            path
        })
        .collect()
}

/// Every event in the log files of `data_dir`, oldest first.
fn logged_events(data_dir: &Path) -> Vec<AccessEvent> {
    let files = wal_files(data_dir);
    let mut events = Vec::new();
    for (idx, path) in files.iter().enumerate() {
        let torn_tail = if idx + 1 == files.len() {
            TornTail::Allowed
        } else {
            TornTail::Refused
        };
        for event in WalReader::open(path, torn_tail).unwrap() {
            events.push(event.unwrap());
        }
    }
    events
}

#[test]
fn seq_starts_at_one_and_continues_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    assert_eq!(record_n(&log, 3), vec![1, 2, 3]);
    log.close().unwrap();

    let (log, recovery) = AuditLog::open(dir.path(), AuditOptions::new("test")).unwrap();
    assert_eq!(recovery.next_seq, 4);
    assert_eq!(recovery.events_in_wal, 0);
    assert_eq!(record_n(&log, 2), vec![4, 5]);
    drop(log);

    let log = open(dir.path());
    assert_eq!(record_n(&log, 1), vec![6]);
}

#[test]
fn recorded_answer_matches_the_stored_event() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let first = log.record(NewEvent::default()).unwrap();
    let second = log.record(NewEvent::default()).unwrap();
    assert_eq!(first.event_id.get_version_num(), 7);
    assert!(second.time >= first.time);
    assert!(second.event_id > first.event_id);
    assert_eq!(
        first.time.timestamp_subsec_nanos() % 1_000,
        0,
        "time has microsecond precision"
    );
}

#[test]
fn events_left_in_the_wal_are_sealed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    record_n(&log, 5);
    assert!(AuditLog::has_unsealed_events(dir.path()));
    drop(log);
    assert!(
        sealed_segments(dir.path()).is_empty(),
        "dropping without close seals nothing"
    );

    let (log, recovery) = AuditLog::open(dir.path(), AuditOptions::new("test")).unwrap();
    assert_eq!(recovery.wal_files, 1);
    assert_eq!(recovery.events_in_wal, 5);
    assert_eq!(recovery.events_sealed, 5);
    assert_eq!(recovery.events_already_sealed, 0);
    assert_eq!(recovery.next_seq, 6);
    assert_eq!(total_rows(dir.path()), 5);
    assert_eq!(
        file_names(&wal_files(dir.path())),
        [log_file_name(6)],
        "the sealed file is gone; the next starts at the next seq"
    );
    assert!(!AuditLog::has_unsealed_events(dir.path()));
    drop(log);

    let (_log, recovery) = AuditLog::open(dir.path(), AuditOptions::new("test")).unwrap();
    assert_eq!(recovery.events_in_wal, 0);
    assert_eq!(total_rows(dir.path()), 5);
}

#[test]
fn crash_after_the_seal_before_the_log_file_is_deleted_seals_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    record_n(&log, 3);
    let first_file = wal_file(dir.path());
    let before_seal = fs::read(&first_file).unwrap();
    log.seal().unwrap();
    assert!(!first_file.exists(), "a sealed log file is deleted");
    record_n(&log, 2);
    drop(log);

    // The log as a process that died between writing the segment and deleting the file
    // leaves it: the sealed events 1..=3 still there, then 4 and 5 in the next file.
    fs::write(&first_file, before_seal).unwrap();

    let (log, recovery) = AuditLog::open(dir.path(), AuditOptions::new("test")).unwrap();
    assert_eq!(recovery.wal_files, 2);
    assert_eq!(recovery.events_in_wal, 5);
    assert_eq!(recovery.events_already_sealed, 3);
    assert_eq!(recovery.events_sealed, 2);
    assert_eq!(recovery.next_seq, 6);
    assert_eq!(total_rows(dir.path()), 5);
    assert_eq!(log.record(NewEvent::default()).unwrap().seq, 6);
}

#[test]
fn torn_tail_is_reported_in_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    record_n(&log, 2);
    drop(log);
    let wal = wal_file(dir.path());
    let len = fs::metadata(&wal).unwrap().len();
    File::options()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(len - 3)
        .unwrap();

    let (_log, recovery) = AuditLog::open(dir.path(), AuditOptions::new("test")).unwrap();
    assert_eq!(recovery.events_in_wal, 1);
    assert!(recovery.torn_bytes_dropped > 0);
    assert_eq!(recovery.next_seq, 2);
    assert_eq!(total_rows(dir.path()), 1);
}

#[test]
fn damaged_wal_stops_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    record_n(&log, 3);
    drop(log);
    let wal = wal_file(dir.path());
    let mut bytes = fs::read(&wal).unwrap();
    bytes[30] ^= 1;
    fs::write(&wal, bytes).unwrap();

    let err = AuditLog::open(dir.path(), AuditOptions::new("test")).unwrap_err();
    assert!(
        matches!(err, AuditError::DamagedRecord { offset: 12, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains(&wal.display().to_string()),
        "{err}"
    );
    assert!(sealed_segments(dir.path()).is_empty());
}

#[test]
fn recovery_seals_every_log_file_and_reports_a_torn_tail_on_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_wal_files(dir.path(), &[1..=3, 4..=6, 7..=8]);
    let newest = &files[2];
    let len = fs::metadata(newest).unwrap().len();
    File::options()
        .write(true)
        .open(newest)
        .unwrap()
        .set_len(len - 5)
        .unwrap();

    let (log, recovery) = AuditLog::open(dir.path(), AuditOptions::new("test")).unwrap();
    assert_eq!(recovery.wal_files, 3);
    assert_eq!(recovery.events_in_wal, 7);
    assert_eq!(recovery.events_sealed, 7);
    assert!(recovery.torn_bytes_dropped > 0 && recovery.torn_bytes_dropped < len);
    assert_eq!(recovery.next_seq, 8);
    assert_eq!(
        file_names(&sealed_segments(dir.path())),
        [
            "seg-00000000000000000001-00000000000000000003.parquet",
            "seg-00000000000000000004-00000000000000000006.parquet",
            "seg-00000000000000000007-00000000000000000007.parquet",
        ],
        "one segment per log file"
    );
    assert_eq!(file_names(&wal_files(dir.path())), [log_file_name(8)]);
    assert_eq!(log.record(NewEvent::default()).unwrap().seq, 8);
}

#[test]
fn a_torn_tail_in_an_older_file_stops_the_open_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_wal_files(dir.path(), &[1..=3, 4..=6]);
    let older = &files[0];
    let len = fs::metadata(older).unwrap().len();
    File::options()
        .write(true)
        .open(older)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let record_len = (len - portcullis_audit::wal::HEADER_LEN) / 3;
    let third_record = portcullis_audit::wal::HEADER_LEN + 2 * record_len;

    let err = AuditLog::open(dir.path(), AuditOptions::new("test")).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, AuditError::DamagedRecord { ref path, offset, .. }
            if path == older && offset == third_record),
        "{message}"
    );
    assert!(message.contains(&older.display().to_string()), "{message}");
    assert!(
        message.contains(&format!("offset {third_record}")),
        "{message}"
    );
    assert!(sealed_segments(dir.path()).is_empty(), "nothing sealed");
    assert_eq!(wal_files(dir.path()), files, "nothing deleted");
}

#[test]
fn a_seq_gap_between_log_files_stops_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_wal_files(dir.path(), &[1..=3, 5..=6]);

    let err = AuditLog::open(dir.path(), AuditOptions::new("test")).unwrap_err();
    let AuditError::DamagedRecord {
        path,
        offset,
        problem,
    } = err
    else {
        panic!("expected a damaged record, got {err}");
    };
    assert_eq!(path, files[1]);
    assert_eq!(offset, portcullis_audit::wal::HEADER_LEN);
    assert_eq!(
        problem,
        RecordProblem::SeqGap {
            expected: 4,
            found: 5
        }
    );
}

#[test]
fn the_log_file_of_an_earlier_build_is_sealed_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let numbered = write_wal_files(dir.path(), &[1..=3]);
    let legacy = dir.path().join("wal").join(LEGACY_WAL_FILE);
    fs::rename(&numbered[0], &legacy).unwrap();

    let (log, recovery) = AuditLog::open(dir.path(), AuditOptions::new("test")).unwrap();
    assert_eq!(recovery.events_sealed, 3);
    assert!(!legacy.exists());
    assert_eq!(log.record(NewEvent::default()).unwrap().seq, 4);
}

#[test]
fn segments_land_in_the_date_partition_with_zstd_and_bloom_filters() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let recorded = log.record(decision("orders_api", Decision::Allow)).unwrap();
    record_n(&log, 2);
    let report = log.close().unwrap();

    assert_eq!(report.events_sealed, 3);
    let date = recorded.time.format("%Y-%m-%d").to_string();
    let expected = dir
        .path()
        .join("events")
        .join(format!("date={date}"))
        .join("seg-00000000000000000001-00000000000000000003.parquet");
    assert_eq!(report.segments, vec![expected.clone()]);
    assert_eq!(sealed_segments(dir.path()), vec![expected.clone()]);
    assert!(wal_files(dir.path()).is_empty(), "close leaves no log file");

    let reader = SerializedFileReader::new(File::open(&expected).unwrap()).unwrap();
    let row_group = reader.metadata().row_group(0);
    assert_eq!(row_group.num_rows(), 3);
    for column in row_group.columns() {
        assert!(
            matches!(column.compression(), Compression::ZSTD(_)),
            "{}",
            column.column_path()
        );
        assert!(
            column.statistics().is_some(),
            "{} has statistics",
            column.column_path()
        );
        let name = column.column_path().string();
        let bloom = column.bloom_filter_offset().is_some();
        assert_eq!(
            bloom,
            ["workload", "subject", "target"].contains(&name.as_str()),
            "{name}"
        );
    }
    let sorting = row_group.sorting_columns().unwrap();
    assert_eq!(sorting.len(), 1);
    assert_eq!(sorting[0].column_idx, 1, "sorted by seq");
}

#[test]
fn events_of_two_dates_go_to_two_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let events_dir = dir.path().join("events");
    fs::create_dir(&events_dir).unwrap();
    let before_midnight = DateTime::parse_from_rfc3339("2026-03-01T23:59:59.999999Z").unwrap();
    let after_midnight = DateTime::parse_from_rfc3339("2026-03-02T00:00:00Z").unwrap();
    let events = vec![
        stored_event(10, before_midnight.with_timezone(&Utc), NewEvent::default()),
        stored_event(11, before_midnight.with_timezone(&Utc), NewEvent::default()),
        stored_event(12, after_midnight.with_timezone(&Utc), NewEvent::default()),
    ];

    let mut index = SealedIndex::scan(&events_dir).unwrap();
    let written = write_segments(&events_dir, &events, &mut index).unwrap();
    let names: Vec<String> = written
        .iter()
        .map(|p| p.strip_prefix(&events_dir).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        vec![
            "date=2026-03-01/seg-00000000000000000010-00000000000000000011.parquet",
            "date=2026-03-02/seg-00000000000000000012-00000000000000000012.parquet",
        ]
    );

    // Sealing the same events again writes nothing, with the index kept or rebuilt.
    assert!(
        write_segments(&events_dir, &events, &mut index)
            .unwrap()
            .is_empty()
    );
    let mut rescanned = SealedIndex::scan(&events_dir).unwrap();
    assert_eq!(rescanned.max_seq(), 12);
    assert!(
        write_segments(&events_dir, &events, &mut rescanned)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn leftover_temp_file_is_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let partition = dir.path().join("events").join("date=2026-01-01");
    fs::create_dir_all(&partition).unwrap();
    let temp = partition.join("seg-00000000000000000001-00000000000000000009.parquet.tmp");
    fs::write(&temp, b"half a segment").unwrap();

    let (_log, recovery) = AuditLog::open(dir.path(), AuditOptions::new("test")).unwrap();
    assert!(!temp.exists());
    assert_eq!(recovery.next_seq, 1, "a temp file seals nothing");
}

#[test]
fn a_full_log_file_is_rolled_and_sealed_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with(dir.path(), 3);
    record_n(&log, 7);
    eventually("two log files are sealed and deleted", || {
        sealed_segments(dir.path()).len() == 2 && wal_files(dir.path()).len() == 1
    });
    assert_eq!(
        file_names(&sealed_segments(dir.path())),
        [
            "seg-00000000000000000001-00000000000000000003.parquet",
            "seg-00000000000000000004-00000000000000000006.parquet",
        ]
    );
    assert_eq!(
        file_names(&wal_files(dir.path())),
        [log_file_name(7)],
        "sealed files are deleted"
    );
    let report = log.close().unwrap();
    assert_eq!(report.events_sealed, 1);
    assert_eq!(total_rows(dir.path()), 7);
    assert!(wal_files(dir.path()).is_empty());
}

/// Every event of the segments under `dir`, as `(seq, workload)`, in `seq` order.
fn sealed_workloads(dir: &Path) -> Vec<(i64, String)> {
    let mut rows = Vec::new();
    for path in sealed_segments(dir) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let seqs = batch
                .column_by_name("seq")
                .unwrap()
                .as_primitive::<Int64Type>();
            let workloads = batch.column_by_name("workload").unwrap().as_string::<i32>();
            for row in 0..batch.num_rows() {
                rows.push((seqs.value(row), workloads.value(row).to_owned()));
            }
        }
    }
    rows.sort();
    rows
}

#[test]
fn events_sealed_from_memory_file_after_file_keep_their_own_contents() {
    // Each sealed file's record buffer goes to the next file, and each seal sizes its columns
    // from the one before: a file of long names between files of short ones must come out
    // whole, with nothing of an earlier file in it.
    let dir = tempfile::tempdir().unwrap();
    let log = open_with(dir.path(), 3);
    let mut expected = Vec::new();
    for seq in 1..=30_i64 {
        let name = if (10..20).contains(&seq) {
            format!("w{seq}-{}", "x".repeat(300))
        } else {
            format!("w{seq}")
        };
        let recorded = log.record(decision(&name, Decision::Allow)).unwrap();
        assert_eq!(recorded.seq, seq.cast_unsigned());
        expected.push((seq, name));
        if seq % 7 == 0 {
            // Let the sealer catch up, so that later files reuse the buffers of sealed ones.
            eventually("the closed files are sealed", || {
                total_rows(dir.path()) >= seq / 3 * 3
            });
        }
    }
    log.close().unwrap();
    assert_eq!(sealed_workloads(dir.path()), expected);
}

#[test]
fn a_log_file_is_rolled_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let options = AuditOptions {
        seal_after_bytes: 1000,
        ..AuditOptions::new("test")
    };
    let (log, _) = AuditLog::open(dir.path(), options).unwrap();
    record_n(&log, 30);
    eventually("several log files are sealed", || {
        sealed_segments(dir.path()).len() >= 3
    });
    log.close().unwrap();
    assert_eq!(total_rows(dir.path()), 30);
}

#[test]
fn a_log_file_is_rolled_by_age_counted_from_its_first_event() {
    let dir = tempfile::tempdir().unwrap();
    let options = AuditOptions {
        seal_interval: Duration::from_millis(100),
        ..AuditOptions::new("test")
    };
    let (log, _) = AuditLog::open(dir.path(), options).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(wal_files(dir.path()).len(), 1, "an empty file never rolls");
    record_n(&log, 2);
    eventually("the file is sealed by age and deleted", || {
        sealed_segments(dir.path()).len() == 1 && !AuditLog::has_unsealed_events(dir.path())
    });
    assert_eq!(total_rows(dir.path()), 2);
    record_n(&log, 1);
    log.close().unwrap();
    assert_eq!(total_rows(dir.path()), 3);
}

#[test]
fn a_failed_seal_is_retried_and_recording_goes_on_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with(dir.path(), 2);
    // A file where today's partition directory should be: every seal of today fails.
    let today = Utc::now().date_naive().format("%Y-%m-%d");
    let blocker = dir.path().join("events").join(format!("date={today}"));
    fs::write(&blocker, b"in the way").unwrap();

    record_n(&log, 5);
    let err = log.seal().unwrap_err();
    assert!(err.to_string().contains("date="), "{err}");
    log.health().unwrap();
    assert_eq!(
        record_n(&log, 1),
        [6],
        "recording does not wait for Parquet"
    );

    fs::remove_file(&blocker).unwrap();
    eventually("the background retry seals the waiting files", || {
        total_rows(dir.path()) >= 4
    });
    log.close().unwrap();
    assert_eq!(total_rows(dir.path()), 6);
}

#[test]
fn second_open_of_a_directory_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let err = AuditLog::open(dir.path(), AuditOptions::new("other")).unwrap_err();
    assert!(matches!(err, AuditError::Locked { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("in use"), "{message}");

    log.close().unwrap();
    AuditLog::open(dir.path(), AuditOptions::new("other")).unwrap();
}

/// `n_threads` threads record `per_thread` events each, one at a time or in batches of
/// `batch`; returns each thread's `seq`s.
fn record_from_threads(
    log: &Arc<AuditLog>,
    n_threads: usize,
    per_thread: usize,
    batch: usize,
) -> Vec<Vec<u64>> {
    let threads: Vec<_> = (0..n_threads)
        .map(|thread| {
            let log = Arc::clone(log);
            std::thread::spawn(move || {
                let mut seqs = Vec::new();
                while seqs.len() < per_thread {
                    let events = (0..batch)
                        .map(|i| decision(&format!("t{thread}-{i}"), Decision::Allow))
                        .collect();
                    seqs.extend(log.record_batch(events).unwrap().iter().map(|r| r.seq));
                }
                seqs
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// What group commit must keep: each thread's events in its order, every `seq` once, the log
/// holding them in `seq` order.
fn check_group_commit(dir: &Path, per_thread: Vec<Vec<u64>>, total: u64) {
    for seqs in &per_thread {
        assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");
    }
    let mut all: Vec<u64> = per_thread.into_iter().flatten().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=total).collect::<Vec<_>>());
    let logged: Vec<u64> = logged_events(dir).iter().map(|event| event.seq).collect();
    assert_eq!(
        logged,
        (1..=total).collect::<Vec<_>>(),
        "written in seq order"
    );
}

#[test]
fn concurrent_records_share_writes_and_syncs_and_stay_gap_free() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(dir.path()));
    let per_thread = record_from_threads(&log, 8, 150, 1);
    check_group_commit(dir.path(), per_thread, 1200);
    drop(Arc::into_inner(log).unwrap());

    // Dropped without sealing, as a killed process would leave it: all there at the next open.
    let (log, recovery) = AuditLog::open(dir.path(), AuditOptions::new("test")).unwrap();
    assert_eq!(recovery.events_in_wal, 1200);
    assert_eq!(recovery.torn_bytes_dropped, 0);
    log.close().unwrap();
    assert_eq!(total_rows(dir.path()), 1200);
}

#[test]
fn batches_from_threads_with_a_flush_interval_and_rolling_stay_gap_free() {
    let dir = tempfile::tempdir().unwrap();
    let options = AuditOptions {
        flush_interval: Duration::from_millis(5),
        seal_after_events: 500,
        ..AuditOptions::new("test")
    };
    let (log, _) = AuditLog::open(dir.path(), options).unwrap();
    let log = Arc::new(log);
    let per_thread = record_from_threads(&log, 4, 1000, 25);
    for seqs in &per_thread {
        for batch in seqs.chunks(25) {
            assert!(
                batch.windows(2).all(|pair| pair[1] == pair[0] + 1),
                "{batch:?}"
            );
        }
    }
    let report = Arc::into_inner(log).unwrap().close().unwrap();
    assert!(
        report.events_sealed < 4000,
        "most were sealed in the background"
    );
    assert_eq!(total_rows(dir.path()), 4000);
    let mut all: Vec<u64> = per_thread.into_iter().flatten().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=4000).collect::<Vec<_>>());
}

#[test]
fn a_batch_is_recorded_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let huge = NewEvent {
        claims: Some("x".repeat(portcullis_audit::wal::MAX_RECORD_BYTES)),
        ..NewEvent::default()
    };
    let err = log
        .record_batch(vec![NewEvent::default(), huge, NewEvent::default()])
        .unwrap_err();
    assert!(matches!(err, AuditError::EventTooLarge { .. }), "{err}");
    let seqs: Vec<u64> = log
        .record_batch(vec![NewEvent::default(); 3])
        .unwrap()
        .iter()
        .map(|recorded| recorded.seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3], "the refused batch used up no seq");
    assert!(log.record_batch(Vec::new()).unwrap().is_empty());
    log.close().unwrap();
    assert_eq!(total_rows(dir.path()), 3);
}

#[test]
fn when_the_next_log_file_cannot_be_created_the_log_stops_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with(dir.path(), 3);
    // A directory where the next log file goes: creating it fails, even for root.
    let in_the_way = dir.path().join("wal").join(log_file_name(4));
    fs::create_dir(&in_the_way).unwrap();

    assert_eq!(
        record_n(&log, 3),
        [1, 2, 3],
        "the full file's events are written"
    );
    let health = log.health().unwrap_err();
    let record = log.record(NewEvent::default()).unwrap_err();
    for err in [&health, &record] {
        assert!(
            matches!(err, AuditError::StoppedAfterFailure { .. }),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&in_the_way.display().to_string()),
            "{message}"
        );
        assert!(message.contains("cannot create"), "{message}");
    }
    log.close().unwrap();
    assert_eq!(total_rows(dir.path()), 3, "what was written is sealed");

    fs::remove_dir(&in_the_way).unwrap();
    let (log, recovery) = AuditLog::open(dir.path(), options(3)).unwrap();
    assert_eq!(recovery.next_seq, 4);
    log.health().unwrap();
    assert_eq!(log.record(NewEvent::default()).unwrap().seq, 4);
}

const FILE_SIZE_LIMITED: &str = "PORTCULLIS_AUDIT_TEST_FILE_SIZE_LIMITED";

/// A real failed write, as a full disk gives, for root too: this test runs itself again in a
/// shell whose file size limit (`ulimit -f`) lets the log file grow to a few kilobytes, with
/// SIGXFSZ ignored, so that a write past the limit fails with `EFBIG`.
#[test]
fn a_failed_write_stops_the_log_and_health_says_why() {
    if let Ok(data_dir) = std::env::var(FILE_SIZE_LIMITED) {
        return write_until_the_limit(Path::new(&data_dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 16 && exec \"$0\" \"$@\"")
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_failed_write_stops_the_log_and_health_says_why",
            "--nocapture",
        ])
        .env(FILE_SIZE_LIMITED, dir.path())
        .output()
        .unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{output}");
    let recorded: u64 = output
        .lines()
        .find_map(|line| line.strip_prefix("recorded before the failure: "))
        .unwrap_or_else(|| panic!("{output}"))
        .parse()
        .unwrap();

    // Without the limit the store opens again: the failed write was cut back, nothing torn.
    let (log, recovery) = AuditLog::open(dir.path(), AuditOptions::new("test")).unwrap();
    assert_eq!(recovery.events_in_wal as u64, recorded);
    assert_eq!(recovery.torn_bytes_dropped, 0);
    assert_eq!(log.record(NewEvent::default()).unwrap().seq, recorded + 1);
}

fn write_until_the_limit(data_dir: &Path) {
    let log = open(data_dir);
    let mut recorded = 0;
    let failure = loop {
        match log.record(decision("w", Decision::Allow)) {
            Ok(_) => recorded += 1,
            Err(error) => break error,
        }
        assert!(
            recorded < 10_000,
            "the file size limit never stopped a write"
        );
    };
    assert!(recorded > 0);
    let message = failure.to_string();
    assert!(
        matches!(failure, AuditError::StoppedAfterFailure { .. }),
        "{message}"
    );
    assert!(message.contains("cannot append to"), "{message}");
    assert!(message.contains("os error 27"), "File too large: {message}");
    assert_eq!(log.health().unwrap_err().to_string(), message);
    assert_eq!(
        log.record(NewEvent::default()).unwrap_err().to_string(),
        message
    );
    println!("recorded before the failure: {recorded}");
}

#[test]
fn values_past_the_column_range_are_refused_before_logging() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let event = NewEvent {
        credential_ttl_s: Some(u64::MAX),
        ..NewEvent::default()
    };
    let err = log.record(event).unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::OutOfRange {
                column: "credential_ttl_s",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        log.record(NewEvent::default()).unwrap().seq,
        1,
        "no seq was used up"
    );
}

#[test]
fn audit_log_is_shareable_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<AuditLog>();
}

/// `tasks` tasks on a two-thread runtime record `per_task` events each through the async path,
/// in batches of `batch`, while `threads` threads record through the blocking one; returns
/// every caller's `seq`s.
fn record_async_and_blocking(
    log: &Arc<AuditLog>,
    tasks: usize,
    threads: usize,
    per_task: usize,
    batch: usize,
) -> Vec<Vec<u64>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let blocking = {
        let log = Arc::clone(log);
        std::thread::spawn(move || record_from_threads(&log, threads, per_task, batch))
    };
    let mut per_caller = runtime.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for task in 0..tasks {
            let log = Arc::clone(log);
            set.spawn(async move {
                let mut seqs = Vec::new();
                while seqs.len() < per_task {
                    let events = (0..batch)
                        .map(|i| decision(&format!("a{task}-{i}"), Decision::Deny))
                        .collect();
                    let recorded = log.record_batch_async(events).await.unwrap();
                    seqs.extend(recorded.iter().map(|r| r.seq));
                }
                seqs
            });
        }
        let mut all = Vec::new();
        while let Some(seqs) = set.join_next().await {
            all.push(seqs.unwrap());
        }
        all
    });
    per_caller.extend(blocking.join().unwrap());
    per_caller
}

#[test]
fn async_callers_wait_for_the_writer_thread_and_stay_gap_free_beside_blocking_ones() {
    for flush_interval in [Duration::ZERO, Duration::from_millis(5)] {
        let dir = tempfile::tempdir().unwrap();
        let options = AuditOptions {
            flush_interval,
            seal_after_events: 700,
            ..AuditOptions::new("test")
        };
        let log = Arc::new(AuditLog::open(dir.path(), options).unwrap().0);
        let per_caller = record_async_and_blocking(&log, 16, 2, 100, 2);
        // Written when the future resolved: all there without a seal, as after `kill -9`.
        drop(Arc::into_inner(log).unwrap());
        let (log, recovery) = AuditLog::open(dir.path(), AuditOptions::new("test")).unwrap();
        assert_eq!(recovery.torn_bytes_dropped, 0);
        log.close().unwrap();
        assert_eq!(total_rows(dir.path()), 1800, "{flush_interval:?}");
        for seqs in &per_caller {
            assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");
        }
        let mut all: Vec<u64> = per_caller.into_iter().flatten().collect();
        all.sort_unstable();
        assert_eq!(all, (1..=1800).collect::<Vec<_>>(), "{flush_interval:?}");
    }
}

#[test]
fn an_async_caller_learns_that_the_log_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with(dir.path(), 3);
    let in_the_way = dir.path().join("wal").join(log_file_name(4));
    fs::create_dir(&in_the_way).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let seqs: Vec<u64> = runtime
        .block_on(log.record_batch_async(vec![NewEvent::default(); 3]))
        .unwrap()
        .iter()
        .map(|recorded| recorded.seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3], "the full file's events are written");
    let err = runtime
        .block_on(log.record_batch_async(vec![NewEvent::default()]))
        .unwrap_err();
    assert!(
        matches!(err, AuditError::StoppedAfterFailure { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("cannot create"), "{err}");
}

#[test]
fn an_async_batch_is_recorded_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let huge = NewEvent {
        claims: Some("x".repeat(portcullis_audit::wal::MAX_RECORD_BYTES)),
        ..NewEvent::default()
    };
    let err = runtime
        .block_on(log.record_batch_async(vec![NewEvent::default(), huge]))
        .unwrap_err();
    assert!(matches!(err, AuditError::EventTooLarge { .. }), "{err}");
    let recorded = runtime
        .block_on(log.record_batch_async(vec![NewEvent::default(); 2]))
        .unwrap();
    let seqs: Vec<u64> = recorded.iter().map(|recorded| recorded.seq).collect();
    assert_eq!(seqs, [1, 2], "the refused batch used up no seq");
    assert!(
        runtime
            .block_on(log.record_batch_async(Vec::new()))
            .unwrap()
            .is_empty()
    );
    log.close().unwrap();
    assert_eq!(total_rows(dir.path()), 2);
}

/// With a flush interval an async caller writes the log itself and leaves a full file's roll to
/// the writer thread: a roll that fails stops the log moments later, and every event answered
/// before that is in the store.
#[test]
fn a_roll_left_to_the_writer_thread_that_fails_stops_the_log_and_loses_nothing_answered() {
    // The writer thread needs a moment of CPU for the roll; on a loaded machine that can take
    // a while, so the caller pauses between events and gives it up to a few seconds.
    const MAX_EVENTS: u64 = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let options = AuditOptions {
        flush_interval: Duration::from_millis(5),
        seal_after_events: 3,
        ..AuditOptions::new("test")
    };
    let (log, _) = AuditLog::open(dir.path(), options.clone()).unwrap();
    // The roll comes moments after the file fills, so the next file's name (after the next
    // `seq`) is not known: directories in the way of every name it may have.
    let in_the_way: Vec<PathBuf> = (4..=MAX_EVENTS + 1)
        .map(|seq| dir.path().join("wal").join(log_file_name(seq)))
        .collect();
    for path in &in_the_way {
        fs::create_dir(path).unwrap();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut answered = 0u64;
    let failure = loop {
        match runtime.block_on(log.record_batch_async(vec![NewEvent::default()])) {
            Ok(recorded) => {
                answered += 1;
                assert_eq!(recorded[0].seq, answered);
                assert!(
                    answered < MAX_EVENTS,
                    "the failed roll never stopped the log"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(error) => break error,
        }
    };
    assert!(answered >= 3, "{answered}");
    assert!(failure.to_string().contains("cannot create"), "{failure}");
    drop(log);
    for path in &in_the_way {
        fs::remove_dir(path).unwrap();
    }
    let (log, recovery) = AuditLog::open(dir.path(), options).unwrap();
    assert_eq!(
        recovery.next_seq,
        answered + 1,
        "every answered event is kept"
    );
    log.close().unwrap();
    assert_eq!(total_rows(dir.path()), i64::try_from(answered).unwrap());
}
