//! The write-ahead log files: round trip, batched writes, torn tails (newest file only),
//! damage with file and offset, streaming past the tail window, limits, older versions.

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
use portcullis_audit::wal::{
    HEADER_LEN, LEGACY_WAL_FILE, MAX_RECORD_BYTES, TornTail, Wal, WalReader, encode_record,
    list_logs, log_file_name,
};
use portcullis_audit::{AccessEvent, AuditError, Decision, NewEvent, RecordProblem};

fn events(n: u64) -> Vec<AccessEvent> {
    let time = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
    (1..=n)
        .map(|seq| stored_event(seq, time, decision(&format!("w{seq}"), Decision::Deny)))
        .collect()
}

/// Writes `events` to a new log at `path`, one record per write, and returns each record's
/// end offset.
fn write_log(path: &Path, events: &[AccessEvent]) -> Vec<u64> {
    let mut wal = Wal::create(path).unwrap();
    events
        .iter()
        .map(|event| {
            wal.append(event).unwrap();
            fs::metadata(path).unwrap().len()
        })
        .collect()
}

/// What reading the log at `path` finds: its events and the bytes of a torn tail.
fn read_log(path: &Path, torn_tail: TornTail) -> Result<(Vec<AccessEvent>, u64), AuditError> {
    let mut reader = WalReader::open(path, torn_tail)?;
    let events = reader.by_ref().collect::<Result<Vec<_>, _>>()?;
    Ok((events, reader.torn_bytes()))
}

fn read_newest(path: &Path) -> (Vec<AccessEvent>, u64) {
    read_log(path, TornTail::Allowed).unwrap()
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

fn cut_to(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn log_path(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join(log_file_name(1))
}

#[test]
fn events_round_trip_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let mut written = events(3);
    written[1].details = NewEvent::default();
    write_log(&path, &written);

    for torn_tail in [TornTail::Allowed, TornTail::Refused] {
        let (read, torn_bytes) = read_log(&path, torn_tail).unwrap();
        assert_eq!(read, written);
        assert_eq!(torn_bytes, 0);
    }
}

#[test]
fn a_new_log_has_only_its_header_and_is_never_created_over_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    Wal::create(&path).unwrap();
    let bytes = fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, HEADER_LEN);
    assert_eq!(&bytes[..8], b"PCLSWAL\0");

    let err = Wal::create(&path).unwrap_err();
    assert!(matches!(err, AuditError::Io { .. }), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn many_records_in_one_write_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let written = events(50);
    let mut batch = Vec::new();
    for event in &written {
        encode_record(event, &mut batch).unwrap();
    }
    // A write cut short by a kill leaves whole records and then part of one: a torn tail.
    let mut wal = Wal::create(&path).unwrap();
    wal.write_records(&batch[..batch.len() / 2 + 3]).unwrap();
    drop(wal);
    let (read, torn_bytes) = read_newest(&path);
    assert!(!read.is_empty() && read.len() < 50);
    assert_eq!(read, written[..read.len()]);
    assert!(torn_bytes > 0);

    fs::remove_file(&path).unwrap();
    let mut wal = Wal::create(&path).unwrap();
    wal.write_records(&batch).unwrap();
    assert_eq!(wal.len_bytes(), HEADER_LEN + batch.len() as u64);
    assert_eq!(read_newest(&path), (written, 0));
}

#[test]
fn torn_last_record_is_reported_and_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let written = events(3);
    let ends = write_log(&path, &written);
    let cut = ends[2] - 5;
    cut_to(&path, cut);

    let mut reader = WalReader::open(&path, TornTail::Allowed).unwrap();
    let read = reader.by_ref().collect::<Result<Vec<_>, _>>().unwrap();
    assert_eq!(read, written[..2]);
    assert_eq!(reader.torn_bytes(), cut - ends[1]);
    assert_eq!(reader.offset(), ends[1]);
    reader.cut_torn_tail().unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), ends[1]);
    assert_eq!(read_newest(&path), (written[..2].to_vec(), 0));
}

#[test]
fn every_cut_inside_the_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let written = events(2);
    let ends = write_log(&path, &written);
    let full = fs::read(&path).unwrap();
    for cut in ends[0] + 1..ends[1] {
        fs::write(&path, &full[..cut as usize]).unwrap();
        let (read, torn_bytes) = read_newest(&path);
        assert_eq!(read, written[..1], "cut at {cut}");
        assert_eq!(torn_bytes, cut - ends[0], "cut at {cut}");
    }
}

#[test]
fn a_torn_tail_in_an_older_file_is_damage_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let ends = write_log(&path, &events(3));
    cut_to(&path, ends[2] - 5);

    let err = read_log(&path, TornTail::Refused).unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::DamagedRecord {
                problem: RecordProblem::PastEnd,
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains(&format!("offset {}", ends[1])),
        "{message}"
    );
}

#[test]
fn length_reaching_past_the_end_over_good_records_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let ends = write_log(&path, &events(3));
    // The first record's length grows by one byte more than the rest of the file.
    let mut bytes = fs::read(&path).unwrap();
    let length = u32::try_from(ends[2] - HEADER_LEN).unwrap();
    bytes[HEADER_LEN as usize..HEADER_LEN as usize + 4].copy_from_slice(&length.to_le_bytes());
    fs::write(&path, bytes).unwrap();

    let err = read_log(&path, TornTail::Allowed).unwrap_err();
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
    let path = log_path(&dir);
    let written = events(2);
    let ends = write_log(&path, &written);
    flip_byte(&path, ends[1] - 1);

    let (read, torn_bytes) = read_newest(&path);
    assert_eq!(read, written[..1]);
    assert_eq!(torn_bytes, ends[1] - ends[0]);
}

#[test]
fn zero_filled_tail_is_a_torn_tail_however_long() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    write_log(&path, &events(1));
    let len = fs::metadata(&path).unwrap().len();
    // What a power cut can leave after a large unsynced write: zeros past one record's size.
    for zeros in [100, 3 * MAX_RECORD_BYTES] {
        cut_to(&path, len);
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&vec![0; zeros])
            .unwrap();
        let (read, torn_bytes) = read_newest(&path);
        assert_eq!(read.len(), 1);
        assert_eq!(torn_bytes, zeros as u64);
    }
}

#[test]
fn damage_before_the_tail_is_an_error_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let ends = write_log(&path, &events(3));
    flip_byte(&path, ends[0] + 20);
    let before = fs::read(&path).unwrap();

    let err = read_log(&path, TornTail::Allowed).unwrap_err();
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
    let path = log_path(&dir);
    let ends = write_log(&path, &events(3));
    // Length fields are little-endian; byte 3 is the high byte of the first record's length.
    flip_byte(&path, HEADER_LEN + 3);

    let err = read_log(&path, TornTail::Allowed).unwrap_err();
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
    let path = log_path(&dir);
    let mut written = events(3);
    written[2].seq = 7;
    let ends = write_log(&path, &written);

    let err = read_log(&path, TornTail::Allowed).unwrap_err();
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

/// Events with claims big enough that a few hundred of them span several times the window the
/// reader holds in memory, so that most records are streamed.
fn big_events(n: u64) -> Vec<AccessEvent> {
    let mut events = events(n);
    for event in &mut events {
        event.details.claims = Some(format!("{{\"pad\": \"{}\"}}", "x".repeat(20_000)));
    }
    events
}

#[test]
fn a_log_larger_than_the_tail_window_is_streamed_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    // Records of about 20 KB against the reader's 256 KiB buffer: most are checked where they
    // lie in it, and about one in thirteen straddles its end and is copied out first.
    let written = big_events(300);
    let ends = write_log(&path, &written);
    assert!(ends[299] > 5 * MAX_RECORD_BYTES as u64);
    assert_eq!(read_newest(&path), (written.clone(), 0));

    // A torn tail after streamed records.
    cut_to(&path, ends[299] - 7);
    let (read, torn_bytes) = read_newest(&path);
    assert_eq!(read, written[..299]);
    assert_eq!(torn_bytes, ends[299] - 7 - ends[298]);

    // Damage far from the end: never a torn tail, whatever follows.
    flip_byte(&path, ends[9] + 100);
    let err = read_log(&path, TornTail::Allowed).unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::DamagedRecord {
                problem: RecordProblem::Checksum,
                offset,
                ..
            } if offset == ends[9]
        ),
        "{err}"
    );
}

#[test]
fn zeros_in_the_middle_of_a_large_log_are_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let ends = write_log(&path, &big_events(120));
    let mut bytes = fs::read(&path).unwrap();
    bytes[ends[4] as usize..ends[6] as usize].fill(0);
    fs::write(&path, bytes).unwrap();

    let err = read_log(&path, TornTail::Allowed).unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::DamagedRecord {
                problem: RecordProblem::Empty,
                offset,
                ..
            } if offset == ends[4]
        ),
        "{err}"
    );
}

#[test]
fn foreign_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    fs::write(&path, b"definitely not a log file").unwrap();
    let err = WalReader::open(&path, TornTail::Allowed).unwrap_err();
    assert!(matches!(err, AuditError::WalMagic { .. }), "{err}");
    assert!(err.to_string().contains("not a Portcullis write-ahead log"));
}

#[test]
fn a_header_cut_short_is_torn_in_the_newest_file_and_damage_in_an_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    fs::write(&path, b"PCLS").unwrap();
    assert_eq!(read_newest(&path), (Vec::new(), 4));

    let err = read_log(&path, TornTail::Refused).unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::DamagedRecord {
                offset: 0,
                problem: RecordProblem::HeaderCut,
                ..
            }
        ),
        "{err}"
    );
    fs::write(&path, b"").unwrap();
    assert_eq!(read_newest(&path), (Vec::new(), 0));
}

#[test]
fn oversized_event_is_refused_and_the_log_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let written = events(1);
    let mut wal = Wal::create(&path).unwrap();
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
    let mut out = b"kept".to_vec();
    encode_record(&huge, &mut out).unwrap_err();
    assert_eq!(out, b"kept", "a refused record leaves nothing behind");
    assert_eq!(fs::metadata(&path).unwrap().len(), HEADER_LEN);

    wal.append(&written[0]).unwrap();
    drop(wal);
    assert_eq!(read_newest(&path), (written, 0));
}

#[test]
fn log_files_list_oldest_first_with_the_legacy_file_before_all() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        log_file_name(10),
        log_file_name(9),
        LEGACY_WAL_FILE.to_owned(),
        "notes.txt".to_owned(),
        format!("{}.tmp", log_file_name(11)),
    ] {
        fs::write(dir.path().join(name), b"").unwrap();
    }
    let names: Vec<String> = list_logs(dir.path())
        .unwrap()
        .iter()
        .map(|path| path.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "events.wal",
            "00000000000000000009.wal",
            "00000000000000000010.wal"
        ]
    );
}

/// Rewrites a log of the current version whose events have no rule annotations, no evidence
/// hash and no connection fields as the version 1 log of the same events: version 1 records
/// end before those six empty fields (one presence byte each).
fn downgrade_to_version_1(path: &Path) {
    let bytes = fs::read(path).unwrap();
    let mut out = bytes[..HEADER_LEN as usize].to_vec();
    out[8..12].copy_from_slice(&1u32.to_le_bytes());
    let mut offset = HEADER_LEN as usize;
    while offset < bytes.len() {
        let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
        let payload = &bytes[offset + 8..offset + 8 + length];
        assert_eq!(
            &payload[length - 6..],
            [0; 6],
            "no rule annotations, evidence or connection fields"
        );
        let payload = &payload[..length - 6];
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        out.extend_from_slice(payload);
        offset += 8 + length;
    }
    fs::write(path, out).unwrap();
}

#[test]
fn a_version_1_log_is_read_with_every_field_it_had() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LEGACY_WAL_FILE);
    let written = events(3);
    write_log(&path, &written);
    downgrade_to_version_1(&path);

    let reader = WalReader::open(&path, TornTail::Allowed).unwrap();
    assert_eq!(reader.version(), 1);
    assert_eq!(read_newest(&path), (written, 0));
}

#[test]
fn an_unknown_version_is_refused_with_the_versions_this_build_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    write_log(&path, &events(1));
    let mut bytes = fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&9u32.to_le_bytes());
    fs::write(&path, bytes).unwrap();
    let error = WalReader::open(&path, TornTail::Allowed).unwrap_err();
    assert!(
        error
            .to_string()
            .ends_with("has write-ahead log format version 9; this build reads versions 1 to 4"),
        "{error}"
    );
}
