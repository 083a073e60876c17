//! The store: seq across restarts, recovery exactly once, segments, the directory lock.

#![allow(clippy::unwrap_used, reason = "tests unwrap")]

mod common;

use std::fs::{self, File};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use common::{decision, open, open_with, segment_files, stored_event, wal_file};
use parquet::basic::Compression;
use parquet::file::reader::{FileReader, SerializedFileReader};
use portcullis_audit::segment::{SealedIndex, write_segments};
use portcullis_audit::{AuditError, AuditLog, AuditOptions, Decision, NewEvent};

fn record_n(log: &AuditLog, n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| {
            log.record(decision(&format!("w{i}"), Decision::Allow))
                .unwrap()
                .seq
        })
        .collect()
}

fn parquet_rows(path: &std::path::Path) -> i64 {
    let reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
    reader.metadata().file_metadata().num_rows()
}

fn total_rows(dir: &std::path::Path) -> i64 {
    segment_files(dir)
        .iter()
        .map(|path| parquet_rows(path))
        .sum()
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
    drop(log);
    assert!(
        segment_files(dir.path()).is_empty(),
        "dropping without close seals nothing"
    );

    let (log, recovery) = AuditLog::open(dir.path(), AuditOptions::new("test")).unwrap();
    assert_eq!(recovery.events_in_wal, 5);
    assert_eq!(recovery.events_sealed, 5);
    assert_eq!(recovery.events_already_sealed, 0);
    assert_eq!(recovery.next_seq, 6);
    assert_eq!(total_rows(dir.path()), 5);
    drop(log);

    let (_log, recovery) = AuditLog::open(dir.path(), AuditOptions::new("test")).unwrap();
    assert_eq!(recovery.events_in_wal, 0);
    assert_eq!(total_rows(dir.path()), 5);
}

#[test]
fn crash_after_rename_before_wal_truncation_seals_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    record_n(&log, 3);
    let wal_before_seal = fs::read(wal_file(dir.path())).unwrap();
    log.seal().unwrap();
    record_n(&log, 2);
    let wal_after_seal = fs::read(wal_file(dir.path())).unwrap();
    drop(log);

    // The log as a process that died between the rename and the truncation leaves it: the
    // sealed events 1..=3 still there, followed by 4 and 5.
    let header_len = portcullis_audit::wal::HEADER_LEN as usize;
    let mut crashed = wal_before_seal;
    crashed.extend_from_slice(&wal_after_seal[header_len..]);
    fs::write(wal_file(dir.path()), crashed).unwrap();

    let (log, recovery) = AuditLog::open(dir.path(), AuditOptions::new("test")).unwrap();
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
    assert!(segment_files(dir.path()).is_empty());
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
    assert_eq!(segment_files(dir.path()), vec![expected.clone()]);

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
fn wal_is_sealed_automatically_at_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with(dir.path(), 3);
    record_n(&log, 7);
    let files = segment_files(dir.path());
    let names: Vec<_> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        vec![
            "seg-00000000000000000001-00000000000000000003.parquet",
            "seg-00000000000000000004-00000000000000000006.parquet",
        ]
    );
    let report = log.close().unwrap();
    assert_eq!(report.events_sealed, 1);
    assert_eq!(total_rows(dir.path()), 7);
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

#[test]
fn concurrent_records_get_distinct_gap_free_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open_with(dir.path(), 25));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || record_n(&log, 30))
        })
        .collect();
    let mut seqs: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=120).collect::<Vec<_>>());
    Arc::into_inner(log).unwrap().close().unwrap();
    assert_eq!(total_rows(dir.path()), 120);
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
