//! The write-ahead log: round trip, torn tails, damage, limits.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests unwrap and panic on a wrong variant"
)]

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Utc};
use common::{decision, stored_event};
use portcullis_audit::wal::{HEADER_LEN, MAX_RECORD_BYTES, WAL_VERSION, Wal};
use portcullis_audit::{AccessEvent, AuditError, Decision, NewEvent, RecordProblem};

fn events(n: u64) -> Vec<AccessEvent> {
    let time = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
    (1..=n)
        .map(|seq| stored_event(seq, time, decision(&format!("w{seq}"), Decision::Deny)))
        .collect()
}

/// Writes `events` to a fresh log at `path` and returns each record's end offset.
fn write_log(path: &Path, events: &[AccessEvent]) -> Vec<u64> {
    let (mut wal, contents) = Wal::open(path).unwrap();
    assert!(contents.events.is_empty());
    events
        .iter()
        .map(|event| {
            wal.append(event).unwrap();
            fs::metadata(path).unwrap().len()
        })
        .collect()
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

#[test]
fn events_round_trip_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.wal");
    let mut written = events(3);
    written[1].details = NewEvent::default();
    write_log(&path, &written);

    let (_wal, contents) = Wal::open(&path).unwrap();
    assert_eq!(contents.events, written);
    assert_eq!(contents.torn_bytes, 0);
}

#[test]
fn new_log_has_only_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.wal");
    Wal::open(&path).unwrap();
    let bytes = fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, HEADER_LEN);
    assert_eq!(&bytes[..8], b"PCLSWAL\0");
}

#[test]
fn torn_last_record_is_reported_and_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.wal");
    let written = events(3);
    let ends = write_log(&path, &written);
    let cut = ends[2] - 5;
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut)
        .unwrap();

    let (mut wal, contents) = Wal::open(&path).unwrap();
    assert_eq!(contents.events, written[..2]);
    assert_eq!(contents.torn_bytes, cut - ends[1]);
    assert_eq!(fs::metadata(&path).unwrap().len(), ends[1]);

    wal.append(&written[2]).unwrap();
    drop(wal);
    let (_wal, contents) = Wal::open(&path).unwrap();
    assert_eq!(contents.events, written);
    assert_eq!(contents.torn_bytes, 0);
}

#[test]
fn every_cut_inside_the_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.wal");
    let written = events(2);
    let ends = write_log(&path, &written);
    let full = fs::read(&path).unwrap();
    for cut in ends[0] + 1..ends[1] {
        fs::write(&path, &full[..cut as usize]).unwrap();
        let (_wal, contents) = Wal::open(&path).unwrap();
        assert_eq!(contents.events, written[..1], "cut at {cut}");
        assert_eq!(contents.torn_bytes, cut - ends[0], "cut at {cut}");
    }
}

#[test]
fn length_reaching_past_the_end_over_good_records_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.wal");
    let ends = write_log(&path, &events(3));
    // The first record's length grows by one byte more than the rest of the file.
    let mut bytes = fs::read(&path).unwrap();
    let length = u32::try_from(ends[2] - HEADER_LEN).unwrap();
    bytes[HEADER_LEN as usize..HEADER_LEN as usize + 4].copy_from_slice(&length.to_le_bytes());
    fs::write(&path, bytes).unwrap();

    let err = Wal::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::DamagedRecord {
                offset: HEADER_LEN,
                problem: RecordProblem::PastEnd,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn bad_checksum_in_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.wal");
    let written = events(2);
    let ends = write_log(&path, &written);
    flip_byte(&path, ends[1] - 1);

    let (_wal, contents) = Wal::open(&path).unwrap();
    assert_eq!(contents.events, written[..1]);
    assert_eq!(contents.torn_bytes, ends[1] - ends[0]);
}

#[test]
fn zero_filled_tail_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.wal");
    let ends = write_log(&path, &events(1));
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&[0; 100])
        .unwrap();

    let (_wal, contents) = Wal::open(&path).unwrap();
    assert_eq!(contents.events.len(), 1);
    assert_eq!(contents.torn_bytes, 100);
    assert_eq!(fs::metadata(&path).unwrap().len(), ends[0]);
}

#[test]
fn damage_before_the_tail_is_an_error_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.wal");
    let ends = write_log(&path, &events(3));
    flip_byte(&path, ends[0] + 20);
    let before = fs::read(&path).unwrap();

    let err = Wal::open(&path).unwrap_err();
    let AuditError::DamagedRecord {
        offset,
        ref problem,
        ..
    } = err
    else {
        panic!("expected a damaged record, got {err}");
    };
    assert_eq!(offset, ends[0]);
    assert_eq!(*problem, RecordProblem::Checksum);
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains(&format!("offset {}", ends[0])),
        "{message}"
    );
    assert_eq!(
        fs::read(&path).unwrap(),
        before,
        "a damaged log must be left as it is"
    );
}

#[test]
fn damaged_length_before_the_tail_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.wal");
    let ends = write_log(&path, &events(3));
    // Length fields are little-endian; byte 3 is the high byte of the first record's length.
    flip_byte(&path, HEADER_LEN + 3);

    let err = Wal::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::DamagedRecord {
                offset: HEADER_LEN,
                ..
            }
        ),
        "{err}, log of {} bytes",
        ends[2]
    );
}

#[test]
fn sequence_gap_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.wal");
    let mut written = events(3);
    written[2].seq = 7;
    let ends = write_log(&path, &written);

    let err = Wal::open(&path).unwrap_err();
    let AuditError::DamagedRecord {
        offset, problem, ..
    } = err
    else {
        panic!("expected a damaged record, got {err}");
    };
    assert_eq!(offset, ends[1]);
    assert_eq!(
        problem,
        RecordProblem::SeqGap {
            expected: 3,
            found: 7
        }
    );
}

#[test]
fn foreign_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.wal");
    fs::write(&path, b"definitely not a log file").unwrap();
    let err = Wal::open(&path).unwrap_err();
    assert!(matches!(err, AuditError::WalMagic { .. }), "{err}");
    assert!(err.to_string().contains("not a Portcullis write-ahead log"));
}

#[test]
fn header_cut_short_at_creation_is_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.wal");
    fs::write(&path, b"PCLS").unwrap();
    let (_wal, contents) = Wal::open(&path).unwrap();
    assert_eq!(contents.torn_bytes, 4);
    assert_eq!(fs::metadata(&path).unwrap().len(), HEADER_LEN);
}

#[test]
fn oversized_event_is_refused_and_the_log_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.wal");
    let written = events(1);
    let (mut wal, _) = Wal::open(&path).unwrap();
    let mut huge = written[0].clone();
    huge.details.claims = Some("x".repeat(MAX_RECORD_BYTES));
    let err = wal.append(&huge).unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::EventTooLarge {
                limit: MAX_RECORD_BYTES,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(fs::metadata(&path).unwrap().len(), HEADER_LEN);

    wal.append(&written[0]).unwrap();
    drop(wal);
    let (_wal, contents) = Wal::open(&path).unwrap();
    assert_eq!(contents.events, written);
}

#[test]
fn reset_keeps_the_header_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.wal");
    let (mut wal, _) = Wal::open(&path).unwrap();
    for event in events(2) {
        wal.append(&event).unwrap();
    }
    wal.reset().unwrap();
    drop(wal);
    let (_wal, contents) = Wal::open(&path).unwrap();
    assert!(contents.events.is_empty());
    assert_eq!(fs::metadata(&path).unwrap().len(), HEADER_LEN);
}

/// Rewrites a version 2 log whose events have no rule annotations as the version 1 log of the
/// same events: version 1 records end before the two empty rule fields (one presence byte
/// each).
fn downgrade_to_version_1(path: &Path) {
    let bytes = fs::read(path).unwrap();
    let mut out = bytes[..HEADER_LEN as usize].to_vec();
    out[8..12].copy_from_slice(&1u32.to_le_bytes());
    let mut offset = HEADER_LEN as usize;
    while offset < bytes.len() {
        let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
        let payload = &bytes[offset + 8..offset + 8 + length];
        assert_eq!(&payload[length - 2..], [0, 0], "no rule annotations");
        let payload = &payload[..length - 2];
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        out.extend_from_slice(payload);
        offset += 8 + length;
    }
    fs::write(path, out).unwrap();
}

#[test]
fn a_version_1_log_is_read_and_restarted_at_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.wal");
    let written = events(3);
    write_log(&path, &written);
    downgrade_to_version_1(&path);

    let (mut wal, contents) = Wal::open(&path).unwrap();
    assert_eq!(contents.events, written, "every field version 1 had");
    assert_eq!(contents.torn_bytes, 0);
    // Its events must be sealed first: nothing of version 2 goes into a version 1 file.
    let appended = wal.append(&written[0]);
    assert!(
        matches!(appended, Err(AuditError::WalNotSealed { version: 1, .. })),
        "{appended:?}"
    );
    wal.reset().unwrap();
    let mut annotated = events(1);
    annotated[0].details.rule_description = Some("release tags deploy".into());
    annotated[0].details.rule_severity = Some("high".into());
    wal.append(&annotated[0]).unwrap();
    drop(wal);

    let bytes = fs::read(&path).unwrap();
    assert_eq!(&bytes[8..12], &WAL_VERSION.to_le_bytes());
    let (_wal, contents) = Wal::open(&path).unwrap();
    assert_eq!(contents.events, annotated);
}

#[test]
fn an_empty_version_1_log_starts_again_at_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.wal");
    write_log(&path, &[]);
    downgrade_to_version_1(&path);
    let (mut wal, contents) = Wal::open(&path).unwrap();
    assert!(contents.events.is_empty());
    wal.append(&events(1)[0]).unwrap();
    assert_eq!(&fs::read(&path).unwrap()[8..12], &WAL_VERSION.to_le_bytes());
}

#[test]
fn an_unknown_version_is_refused_with_the_versions_this_build_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.wal");
    write_log(&path, &events(1));
    let mut bytes = fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&9u32.to_le_bytes());
    fs::write(&path, bytes).unwrap();
    let error = Wal::open(&path).unwrap_err();
    assert!(
        error
            .to_string()
            .ends_with("has write-ahead log format version 9; this build reads versions 1 to 2"),
        "{error}"
    );
}
