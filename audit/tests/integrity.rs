//! The integrity manifest: sealed segments are chained and signed, `verify` confirms a clean
//! store and names the first thing that was tampered with, retention keeps the chain
//! verifiable, and a crash between writing a segment and chaining it is repaired.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests unwrap and panic on a wrong variant"
)]

mod common;

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Days, Utc};
use common::{at, decision, events_at, independent_verifier, lines, open, write_lines};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::serialized_reader::ReadOptionsBuilder;
use portcullis_audit::manifest::{CHAIN_FILE, CHECKPOINTS_FILE, Checkpoint, MANIFEST_DIR};
use portcullis_audit::segment::{SealedIndex, write_segments};
use portcullis_audit::signing::{self, SigningKey};
use portcullis_audit::verify::{
    self, CheckpointFailure, EntryFailure, KeySource, Report, SegmentFailure, VerifyError,
};
use portcullis_audit::{AccessEvent, Decision};

/// Seals each batch with its own call of the seal step, as a store would; returns the
/// segments' paths relative to `dir`.
fn seal_batches(dir: &Path, batches: &[Vec<AccessEvent>]) -> Vec<String> {
    let events_dir = dir.join("events");
    let mut index = SealedIndex::open(dir, None).unwrap();
    let mut written = Vec::new();
    for batch in batches {
        for path in write_segments(&events_dir, batch, &mut index).unwrap() {
            let relative = path.strip_prefix(dir).unwrap();
            written.push(relative.to_str().unwrap().to_owned());
        }
    }
    written
}

/// Three segments: seq 1..=4 and 5..=6 on 2026-03-01, 7..=9 on 2026-03-02.
fn three_segments(dir: &Path) -> Vec<String> {
    let segments = seal_batches(
        dir,
        &[
            events_at(1, 4, at("2026-03-01T10:00:00Z")),
            events_at(5, 2, at("2026-03-01T11:00:00Z")),
            events_at(7, 3, at("2026-03-02T09:00:00Z")),
        ],
    );
    assert_eq!(segments.len(), 3, "{segments:?}");
    segments
}

fn verify_ok(dir: &Path) -> Report {
    verify::verify(dir, None, &mut |_| {}).unwrap_or_else(|error| panic!("{error}"))
}

fn verify_err(dir: &Path) -> VerifyError {
    verify_err_with(dir, None)
}

fn verify_err_with(dir: &Path, key: Option<&Path>) -> VerifyError {
    let error = verify::verify(dir, key, &mut |_| {}).unwrap_err();
    eprintln!("{error}");
    error
}

fn chain_file(dir: &Path) -> PathBuf {
    dir.join(MANIFEST_DIR).join(CHAIN_FILE)
}

fn checkpoints_file(dir: &Path) -> PathBuf {
    dir.join(MANIFEST_DIR).join(CHECKPOINTS_FILE)
}

/// The segment a failure names, and why.
fn failing_segment(error: VerifyError) -> (String, u64, SegmentFailure) {
    match error {
        VerifyError::Segment {
            path,
            entry,
            problem,
        } => (path, entry, *problem),
        other => panic!("not a segment failure: {other}"),
    }
}

/// The checkpoint a failure names, and why.
fn failing_checkpoint(error: VerifyError) -> (u64, CheckpointFailure) {
    match error {
        VerifyError::Checkpoint { line, problem, .. } => (line, problem),
        other => panic!("not a checkpoint failure: {other}"),
    }
}

/// A key that is not the store's.
fn other_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// Every checkpoint line re-signed by `key`, claiming the key id `key_id`.
fn resign_checkpoints(dir: &Path, key: &SigningKey, key_id: &str) {
    let forged: Vec<String> = lines(&checkpoints_file(dir))
        .iter()
        .map(|line| {
            let mut checkpoint = Checkpoint::parse(line).unwrap();
            checkpoint.key_id = key_id.to_owned();
            checkpoint.signature = signing::sign(key, &checkpoint.message());
            checkpoint.encode()
        })
        .collect();
    write_lines(&checkpoints_file(dir), &forged);
}

#[test]
fn a_clean_store_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for batch in [3, 2, 4] {
        for i in 0..batch {
            log.record(decision(&format!("w{i}"), Decision::Allow))
                .unwrap();
        }
        log.seal().unwrap();
    }
    log.close().unwrap();

    let report = verify_ok(dir.path());
    assert_eq!(report.events, 9);
    assert_eq!(report.seq_range, Some((1, 9)));
    assert!(report.segments >= 3, "{report:?}");
    assert_eq!(report.last_checkpoint.entry, report.entries - 1);
    assert_eq!(
        report.key_source,
        KeySource::DataDir(signing::public_key_path(dir.path()))
    );
    let (first, last) = report.time_range.unwrap();
    assert!(first <= last);
}

#[test]
fn the_manifest_records_each_segment_and_signs_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let segments = three_segments(dir.path());
    let chain = lines(&chain_file(dir.path()));
    assert_eq!(chain.len(), 4, "genesis and three segments");
    assert!(chain[0].contains(r#""kind":"genesis","format":1,"key_id":""#));
    assert!(chain[1].contains(&format!(r#""path":"{}""#, segments[0])));
    assert!(chain[1].contains(r#""events":4,"first_seq":1,"last_seq":4"#));
    assert!(chain[1].contains(r#""min_time":"2026-03-01T10:00:00.000000Z""#));

    let report = verify_ok(dir.path());
    assert_eq!(report.entries, 4);
    assert_eq!(report.segments, 3);
    assert_eq!(report.events, 9);
    assert_eq!(report.seq_range, Some((1, 9)));
    assert_eq!(
        report.time_range,
        Some((
            at("2026-03-01T10:00:00Z"),
            at("2026-03-02T09:00:00.000002Z")
        ))
    );
    assert_eq!(report.last_checkpoint.entry, 3);
}

#[test]
fn one_flipped_byte_in_a_segment_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let segments = three_segments(dir.path());
    let path = dir.path().join(&segments[1]);
    let mut bytes = fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&path, bytes).unwrap();

    let (named, entry, problem) = failing_segment(verify_err(dir.path()));
    assert_eq!(named, segments[1]);
    assert_eq!(entry, 2);
    assert!(
        matches!(problem, SegmentFailure::Hash { same_as: None, .. }),
        "{problem}"
    );
}

#[test]
fn a_deleted_segment_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let segments = three_segments(dir.path());
    fs::remove_file(dir.path().join(&segments[1])).unwrap();

    let (named, entry, problem) = failing_segment(verify_err(dir.path()));
    assert_eq!((named, entry), (segments[1].clone(), 2));
    assert!(matches!(problem, SegmentFailure::Missing), "{problem}");
}

#[test]
fn a_swapped_pair_of_segments_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let segments = three_segments(dir.path());
    let (a, b) = (dir.path().join(&segments[0]), dir.path().join(&segments[1]));
    let aside = dir.path().join("aside");
    fs::rename(&a, &aside).unwrap();
    fs::rename(&b, &a).unwrap();
    fs::rename(&aside, &b).unwrap();

    let error = verify_err(dir.path());
    let message = error.to_string();
    let (named, entry, problem) = failing_segment(error);
    assert_eq!((named, entry), (segments[0].clone(), 1));
    let SegmentFailure::Hash { same_as, .. } = problem else {
        panic!("{problem}");
    };
    assert_eq!(same_as, Some((2, segments[1].clone())));
    assert!(message.contains("swapped"), "{message}");
}

#[test]
fn a_manifest_cut_at_a_line_end_is_named() {
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    let chain = lines(&chain_file(dir.path()));
    write_lines(&chain_file(dir.path()), &chain[..3]);

    let (line, problem) = failing_checkpoint(verify_err(dir.path()));
    assert_eq!(
        problem,
        CheckpointFailure::PastEnd { entry: 3, last: 2 },
        "{problem}"
    );
    assert_eq!(line, lines(&checkpoints_file(dir.path())).len() as u64);
}

#[test]
fn a_manifest_cut_inside_a_line_is_named() {
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    let chain = fs::read(chain_file(dir.path())).unwrap();
    fs::write(chain_file(dir.path()), &chain[..chain.len() - 20]).unwrap();

    match verify_err(dir.path()) {
        VerifyError::Entry {
            entry: 3,
            line: 4,
            problem: EntryFailure::CutShort,
            ..
        } => {}
        other => panic!("{other}"),
    }
}

#[test]
fn a_manifest_and_checkpoints_cut_together_leave_a_segment_named() {
    let dir = tempfile::tempdir().unwrap();
    let segments = three_segments(dir.path());
    let chain = lines(&chain_file(dir.path()));
    write_lines(&chain_file(dir.path()), &chain[..3]);
    let checkpoints: Vec<String> = lines(&checkpoints_file(dir.path()))
        .into_iter()
        .filter(|line| Checkpoint::parse(line).unwrap().entry < 3)
        .collect();
    write_lines(&checkpoints_file(dir.path()), &checkpoints);

    match verify_err(dir.path()) {
        VerifyError::Unchained { path, after_head } => {
            assert_eq!(path, segments[2]);
            assert!(after_head);
        }
        other => panic!("{other}"),
    }
}

#[test]
fn an_edited_entry_is_named() {
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    let mut chain = lines(&chain_file(dir.path()));
    chain[2] = chain[2].replace(r#""bytes":"#, r#""bytes":1"#);
    write_lines(&chain_file(dir.path()), &chain);

    match verify_err(dir.path()) {
        VerifyError::Entry {
            entry: 3,
            problem: EntryFailure::Prev { .. },
            ..
        } => {}
        other => panic!("{other}"),
    }
}

#[test]
fn a_checkpoint_signed_with_another_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    let trusted = verify_ok(dir.path()).key_id;
    let forger = other_key();

    // The forger's own key id: named as another key.
    resign_checkpoints(
        dir.path(),
        &forger,
        &signing::key_id(&forger.verifying_key()),
    );
    let (line, problem) = failing_checkpoint(verify_err(dir.path()));
    assert_eq!(line, 1);
    assert!(
        matches!(&problem, CheckpointFailure::OtherKey { trusted: t, .. } if *t == trusted),
        "{problem}"
    );

    // The trusted key's id over the forger's signature.
    resign_checkpoints(dir.path(), &forger, &trusted);
    let (_, problem) = failing_checkpoint(verify_err(dir.path()));
    assert_eq!(problem, CheckpointFailure::Signature);
}

#[test]
fn a_store_re_signed_with_another_key_fails_against_the_pinned_key() {
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    let pinned = dir.path().join("pinned.pem");
    let store_key = signing::store_public_key(dir.path()).unwrap();
    fs::write(&pinned, signing::public_key_to_pem(&store_key).unwrap()).unwrap();

    // The forger replaces the public key beside the store and re-signs every checkpoint.
    let forger = other_key();
    let forger_pem = signing::public_key_to_pem(&forger.verifying_key()).unwrap();
    fs::write(signing::public_key_path(dir.path()), forger_pem).unwrap();
    resign_checkpoints(
        dir.path(),
        &forger,
        &signing::key_id(&forger.verifying_key()),
    );

    // The genesis entry still names the original key.
    match verify_err(dir.path()) {
        VerifyError::Entry {
            entry: 0,
            problem: EntryFailure::GenesisKey { .. },
            ..
        } => {}
        other => panic!("{other}"),
    }
    match verify_err_with(dir.path(), Some(&pinned)) {
        VerifyError::Checkpoint {
            line: 1,
            problem: CheckpointFailure::OtherKey { .. },
            ..
        } => {}
        other => panic!("{other}"),
    }
}

#[test]
fn an_edited_checkpoint_is_named() {
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    let original = lines(&checkpoints_file(dir.path()));
    let last = original.len() - 1;

    // Moved to an earlier entry, with that entry's hash.
    let chain = lines(&chain_file(dir.path()));
    let mut edited = original.clone();
    let mut checkpoint = Checkpoint::parse(&edited[last]).unwrap();
    checkpoint.entry = 1;
    checkpoint.entry_hash = portcullis_audit::manifest::line_hash(&chain[1]);
    edited[last] = checkpoint.encode();
    write_lines(&checkpoints_file(dir.path()), &edited);
    let (line, problem) = failing_checkpoint(verify_err(dir.path()));
    assert_eq!(
        (line, problem),
        (last as u64 + 1, CheckpointFailure::Signature)
    );

    // A later time.
    let mut edited = original.clone();
    edited[last] = edited[last].replace("\"time\":\"20", "\"time\":\"21");
    write_lines(&checkpoints_file(dir.path()), &edited);
    let (_, problem) = failing_checkpoint(verify_err(dir.path()));
    assert_eq!(problem, CheckpointFailure::Signature);

    // Removed: the newest entry is signed by nothing.
    write_lines(&checkpoints_file(dir.path()), &original[..last]);
    assert!(
        matches!(
            verify_err(dir.path()),
            VerifyError::Unsigned { last: 3, .. }
        ),
        "unsigned head"
    );
}

#[test]
fn the_exported_public_key_verifies_the_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    let key = signing::store_public_key(dir.path()).unwrap();
    let pem = signing::public_key_to_pem(&key).unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let pinned = dir.path().join("audit.pub");
    fs::write(&pinned, pem).unwrap();

    let report = verify::verify(dir.path(), Some(&pinned), &mut |_| {}).unwrap();
    assert_eq!(report.key_source, KeySource::Pinned(pinned.clone()));
    assert_eq!(report.key_id, signing::key_id(&key));
    assert_eq!(report.last_checkpoint.key_id, signing::key_id(&key));

    // Another key, pinned, is refused from the first entry on.
    let foreign = dir.path().join("foreign.pub");
    let other = other_key().verifying_key();
    fs::write(&foreign, signing::public_key_to_pem(&other).unwrap()).unwrap();
    assert!(matches!(
        verify_err_with(dir.path(), Some(&foreign)),
        VerifyError::Entry {
            problem: EntryFailure::GenesisKey { .. },
            ..
        }
    ));
}

#[test]
fn progress_is_reported_up_to_the_total() {
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    let mut seen = Vec::new();
    verify::verify(dir.path(), None, &mut |progress| seen.push(*progress)).unwrap();
    let last = seen.last().unwrap();
    assert_eq!(last.segments_done, 3);
    assert_eq!(last.segments_total, 3);
    assert_eq!(last.bytes_done, last.bytes_total);
    assert!(last.bytes_total > 0);
}

#[test]
fn retention_removes_old_segments_records_it_and_verify_passes() {
    let dir = tempfile::tempdir().unwrap();
    let today = Utc::now();
    let old = today.checked_sub_days(Days::new(40)).unwrap();
    let older = today.checked_sub_days(Days::new(41)).unwrap();
    let segments = seal_batches(
        dir.path(),
        &[
            events_at(1, 2, older),
            events_at(3, 3, old),
            events_at(6, 2, today),
        ],
    );
    assert_eq!(segments.len(), 3);

    let mut index = SealedIndex::open(dir.path(), Some(30)).unwrap();
    for path in &segments[..2] {
        let path = dir.path().join(path);
        assert!(!path.exists(), "{}", path.display());
        assert!(
            !path.parent().unwrap().exists(),
            "the emptied partition goes too"
        );
    }
    assert!(dir.path().join(&segments[2]).exists());
    let chain = lines(&chain_file(dir.path()));
    let retention = chain.last().unwrap();
    assert!(
        retention.contains(r#""kind":"retention","retention_days":30,"#),
        "{retention}"
    );
    assert!(
        retention.contains(r#""removed":[[1,2]],"segments":2,"events":5,"#),
        "{retention}"
    );

    let report = verify_ok(dir.path());
    assert_eq!(report.segments, 1);
    assert_eq!(report.events, 2);
    assert_eq!(report.seq_range, Some((6, 7)));
    let removed = report.removed.unwrap();
    assert_eq!((removed.segments, removed.events), (2, 5));
    assert_eq!(removed.seq_range, (1, 5));
    assert_eq!(removed.last_retention_days, 30);

    // Applied once per day: opening again adds no entry; the chain goes on after it.
    drop(index);
    index = SealedIndex::open(dir.path(), Some(30)).unwrap();
    assert_eq!(lines(&chain_file(dir.path())).len(), chain.len());
    let events_dir = dir.path().join("events");
    write_segments(&events_dir, &events_at(8, 2, today), &mut index).unwrap();
    let report = verify_ok(dir.path());
    assert_eq!((report.segments, report.events), (2, 4));
}

#[test]
fn a_removal_cut_short_by_a_crash_is_finished_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let old = Utc::now().checked_sub_days(Days::new(10)).unwrap();
    let segments = seal_batches(
        dir.path(),
        &[events_at(1, 2, old), events_at(3, 1, Utc::now())],
    );
    let old_file = dir.path().join(&segments[0]);
    let kept = fs::read(&old_file).unwrap();

    drop(SealedIndex::open(dir.path(), Some(5)).unwrap());
    assert!(!old_file.exists());
    // As if the process died after recording the removal, before deleting the file.
    fs::create_dir_all(old_file.parent().unwrap()).unwrap();
    fs::write(&old_file, kept).unwrap();

    let report = verify_ok(dir.path());
    assert_eq!(report.leftover_files, vec![segments[0].clone()]);
    assert_eq!(report.segments, 1);

    drop(SealedIndex::open(dir.path(), Some(5)).unwrap());
    assert!(!old_file.exists());
    assert!(verify_ok(dir.path()).leftover_files.is_empty());

    // Other bytes where a removed segment was are not a leftover but a forgery.
    fs::create_dir_all(old_file.parent().unwrap()).unwrap();
    fs::write(&old_file, b"PAR1 not the removed segment").unwrap();
    let (named, entry, problem) = failing_segment(verify_err(dir.path()));
    assert_eq!((named, entry), (segments[0].clone(), 1));
    assert!(matches!(problem, SegmentFailure::Hash { .. }), "{problem}");
}

/// Removes the newest entry and the checkpoints of it: what a seal that died after renaming
/// its segment and before chaining it leaves.
fn forget_newest_entry(dir: &Path) {
    let chain = lines(&chain_file(dir));
    let newest = chain.len() as u64 - 1;
    write_lines(&chain_file(dir), &chain[..chain.len() - 1]);
    let checkpoints: Vec<String> = lines(&checkpoints_file(dir))
        .into_iter()
        .filter(|line| Checkpoint::parse(line).unwrap().entry < newest)
        .collect();
    write_lines(&checkpoints_file(dir), &checkpoints);
}

#[test]
fn a_segment_written_but_not_chained_is_chained_when_the_log_still_holds_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let events_dir = dir.path().join("events");
    let first = events_at(1, 2, at("2026-03-01T10:00:00Z"));
    let second = events_at(3, 3, at("2026-03-01T11:00:00Z"));
    let segments = seal_batches(dir.path(), &[first, second.clone()]);
    forget_newest_entry(dir.path());
    // The torn half of the entry's line, as a crash during the append leaves it.
    let mut chain = fs::read(chain_file(dir.path())).unwrap();
    chain.extend_from_slice(br#"{"index":2,"prev":"#);
    fs::write(chain_file(dir.path()), chain).unwrap();

    let mut index = SealedIndex::open(dir.path(), None).unwrap();
    assert_eq!(index.max_seq(), 5, "the unchained segment's seq are taken");
    assert!(index.contains(&second[0]));
    assert!(matches!(
        verify_err(dir.path()),
        VerifyError::Unchained {
            after_head: true,
            ..
        }
    ));

    // The write-ahead log still holds its events: the next seal chains the file as it is.
    let written = write_segments(&events_dir, &second, &mut index).unwrap();
    assert!(written.is_empty());
    let report = verify_ok(dir.path());
    assert_eq!(report.recovered_segments, 1);
    assert_eq!((report.segments, report.events), (2, 5));
    assert!(dir.path().join(&segments[1]).exists());
}

#[test]
fn an_unchained_segment_that_does_not_match_the_log_is_set_aside_and_sealed_again() {
    let dir = tempfile::tempdir().unwrap();
    let events_dir = dir.path().join("events");
    let time = at("2026-03-01T11:00:00Z");
    let segments = seal_batches(dir.path(), &[events_at(1, 2, time)]);
    forget_newest_entry(dir.path());

    // The log's events have other ids than the file's.
    let logged = events_at(1, 2, time);
    let mut index = SealedIndex::open(dir.path(), None).unwrap();
    let written = write_segments(&events_dir, &logged, &mut index).unwrap();
    assert_eq!(written.len(), 1);
    let rejected = dir.path().join(format!("{}.rejected", segments[0]));
    assert!(rejected.exists());
    let report = verify_ok(dir.path());
    assert_eq!((report.segments, report.recovered_segments), (1, 0));
}

#[test]
fn segments_of_a_store_without_a_manifest_are_chained_at_the_first_open() {
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    fs::remove_dir_all(dir.path().join(MANIFEST_DIR)).unwrap();
    fs::remove_dir_all(dir.path().join(signing::KEYS_DIR)).unwrap();

    drop(SealedIndex::open(dir.path(), None).unwrap());
    let report = verify_ok(dir.path());
    assert_eq!(report.upgraded_segments, 3);
    assert_eq!((report.segments, report.events), (3, 9));
}

#[test]
fn a_lost_signing_key_stops_the_open_instead_of_starting_another() {
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    fs::remove_file(signing::signing_key_path(dir.path())).unwrap();

    let error = SealedIndex::open(dir.path(), None).unwrap_err().to_string();
    assert!(error.contains("audit-signing.key"), "{error}");
    assert!(error.contains("restore it"), "{error}");
    assert!(!signing::signing_key_path(dir.path()).exists());
}

#[test]
fn segments_carry_page_indexes_and_bloom_filters() {
    let dir = tempfile::tempdir().unwrap();
    let segments = three_segments(dir.path());
    let options = ReadOptionsBuilder::new().with_page_index().build();
    let file = File::open(dir.path().join(&segments[0])).unwrap();
    let reader = SerializedFileReader::new_with_options(file, options).unwrap();
    let metadata = reader.metadata();
    let columns = metadata.row_group(0).columns();
    let column_index = metadata.column_index().unwrap();
    let offset_index = metadata.offset_index().unwrap();
    assert_eq!(column_index[0].len(), columns.len(), "page statistics");
    assert_eq!(offset_index[0].len(), columns.len());
    for column in columns {
        let name = column.column_path().string();
        assert!(column.column_index_offset().is_some(), "{name}");
        let bloom = column.bloom_filter_offset().is_some();
        let identity = ["workload", "subject", "target"].contains(&name.as_str());
        assert_eq!(bloom, identity, "{name}");
    }
}

#[test]
fn a_verifier_written_from_the_docs_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let today = Utc::now();
    let segments = seal_batches(
        dir.path(),
        &[
            events_at(1, 2, today.checked_sub_days(Days::new(41)).unwrap()),
            events_at(3, 3, today.checked_sub_days(Days::new(40)).unwrap()),
            events_at(6, 2, today),
        ],
    );
    drop(SealedIndex::open(dir.path(), Some(30)).unwrap());
    let pinned = dir.path().join("audit.pub");
    let key = signing::store_public_key(dir.path()).unwrap();
    fs::write(&pinned, signing::public_key_to_pem(&key).unwrap()).unwrap();

    let report = verify_ok(dir.path());
    let answer = independent_verifier(dir.path(), &pinned);
    let ok = &answer["ok"];
    assert_eq!(ok["entries"], report.entries, "{answer}");
    assert_eq!(ok["segments"], report.segments, "{answer}");
    assert_eq!(ok["events"], report.events, "{answer}");
    assert_eq!(ok["removed_segments"], 2, "{answer}");
    assert_eq!(
        ok["last_checkpoint"], report.last_checkpoint.entry,
        "{answer}"
    );

    // Both name the same tampering.
    let path = dir.path().join(&segments[2]);
    let original = fs::read(&path).unwrap();
    let mut bytes = original.clone();
    bytes[100] ^= 0x01;
    fs::write(&path, bytes).unwrap();
    let answer = independent_verifier(dir.path(), &pinned);
    let failure = answer["failure"].as_str().unwrap();
    assert!(failure.contains(&segments[2]), "{failure}");
    let (named, _, _) = failing_segment(verify_err(dir.path()));
    assert_eq!(named, segments[2]);
    fs::write(&path, original).unwrap();

    let mut checkpoints = lines(&checkpoints_file(dir.path()));
    let last = checkpoints.len() - 1;
    checkpoints[last] = checkpoints[last].replace("\"time\":\"20", "\"time\":\"21");
    write_lines(&checkpoints_file(dir.path()), &checkpoints);
    let answer = independent_verifier(dir.path(), &pinned);
    let failure = answer["failure"].as_str().unwrap();
    assert!(
        failure.contains(&format!("checkpoint line {}: bad signature", last + 1)),
        "{failure}"
    );
}

/// `line` with the first hex digit of `field`'s value changed, still in canonical form.
fn with_field_changed(line: &str, field: &str) -> String {
    let marker = format!("\"{field}\":\"");
    let at = line.find(&marker).unwrap() + marker.len();
    let digit = &line[at..=at];
    let other = if digit == "0" { "1" } else { "0" };
    format!("{}{other}{}", &line[..at], &line[at + 1..])
}

/// The error of opening a store of three segments whose chain lines `edit` changed; the chain
/// must be left as edited, with nothing appended.
fn open_after_editing_the_chain(edit: impl FnOnce(&mut Vec<String>)) -> String {
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    let mut chain = lines(&chain_file(dir.path()));
    assert!(chain.len() >= 4, "{chain:?}");
    edit(&mut chain);
    write_lines(&chain_file(dir.path()), &chain);
    let error = SealedIndex::open(dir.path(), None).unwrap_err().to_string();
    assert_eq!(lines(&chain_file(dir.path())), chain);
    error
}

#[test]
fn a_store_whose_manifest_was_changed_is_not_opened() {
    // A changed line before the head: the next line's `prev` no longer matches its hash.
    let error = open_after_editing_the_chain(|chain| {
        chain[1] = with_field_changed(&chain[1], "sha256");
    });
    assert!(error.contains("line 3 does not follow line 2"), "{error}");
    assert!(error.contains("audit verify"), "{error}");

    // The head changed: no line follows it, but the newest checkpoint signed its old hash.
    let error = open_after_editing_the_chain(|chain| {
        let head = chain.len() - 1;
        chain[head] = with_field_changed(&chain[head], "sha256");
    });
    assert!(error.contains("signs another hash of its entry"), "{error}");

    // The head cut off: the newest checkpoint signs an entry that is gone.
    let error = open_after_editing_the_chain(|chain| {
        chain.pop();
    });
    assert!(
        error.contains("signs an entry the chain does not hold"),
        "{error}"
    );

    // The chain's last newline removed: its last entry reads as torn, but the newest
    // checkpoint signs it, so no crash left it so. Refused, and the file is left as it was:
    // the start cuts nothing until the store is known to open.
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    let chain_bytes = fs::read(chain_file(dir.path())).unwrap();
    fs::write(
        chain_file(dir.path()),
        &chain_bytes[..chain_bytes.len() - 1],
    )
    .unwrap();
    let error = SealedIndex::open(dir.path(), None).unwrap_err().to_string();
    assert!(
        error.contains("signs an entry the chain does not hold"),
        "{error}"
    );
    assert_eq!(
        fs::read(chain_file(dir.path())).unwrap(),
        &chain_bytes[..chain_bytes.len() - 1]
    );

    // An older checkpoint altered: every checkpoint is checked, not the newest alone.
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    let mut checkpoints = lines(&checkpoints_file(dir.path()));
    assert!(checkpoints.len() >= 2, "{checkpoints:?}");
    checkpoints[0] = with_field_changed(&checkpoints[0], "signature");
    write_lines(&checkpoints_file(dir.path()), &checkpoints);
    let error = SealedIndex::open(dir.path(), None).unwrap_err().to_string();
    assert!(
        error.contains("checkpoint on line 1 is not signed by the store's key"),
        "{error}"
    );

    // A checkpoint signed with another key.
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    let other = other_key();
    let other_id = signing::key_id(&other.verifying_key());
    resign_checkpoints(dir.path(), &other, &other_id);
    let error = SealedIndex::open(dir.path(), None).unwrap_err().to_string();
    assert!(
        error.contains("is not signed by the store's key"),
        "{error}"
    );

    // Untouched, the same store opens and verifies.
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    drop(SealedIndex::open(dir.path(), None).unwrap());
    verify_ok(dir.path());
}

#[test]
fn a_store_whose_newest_entry_and_checkpoint_were_cut_together_is_not_opened() {
    // Sealed three events at a time, so that the log holds nothing once it is closed.
    let dir = tempfile::tempdir().unwrap();
    let log = common::open_with(dir.path(), 3);
    for i in 0..9 {
        log.record(decision(&format!("w{i}"), Decision::Allow))
            .unwrap();
    }
    log.close().unwrap();
    let mut chain = lines(&chain_file(dir.path()));
    let mut checkpoints = lines(&checkpoints_file(dir.path()));
    chain.pop();
    checkpoints.pop();
    write_lines(&chain_file(dir.path()), &chain);
    write_lines(&checkpoints_file(dir.path()), &checkpoints);

    // The shorter manifest is consistent in itself, but a sealed segment it does not hold,
    // whose events no log file holds, is no crash's leftover.
    let error =
        portcullis_audit::AuditLog::open(dir.path(), portcullis_audit::AuditOptions::new("test"))
            .map(|_| ())
            .unwrap_err()
            .to_string();
    assert!(error.contains("is not in the manifest"), "{error}");
    assert!(error.contains("cannot chain the segment"), "{error}");
    assert_eq!(
        error.matches(".parquet").count(),
        1,
        "the path once: {error}"
    );
    assert!(error.contains("audit verify"), "{error}");
    assert_eq!(lines(&chain_file(dir.path())), chain);
}

/// A retention entry appended after the last entry, at `time`, removing the segment entry at
/// `removed`; unsigned, as a crash before its checkpoint leaves it, or as someone without the
/// key writes it.
fn append_unsigned_removal(
    dir: &Path,
    retention_days: u64,
    before: chrono::NaiveDate,
    time: DateTime<Utc>,
    removed: usize,
) {
    use portcullis_audit::manifest::{Entry, EntryBody, RetentionRecord, line_hash};

    let mut chain = lines(&chain_file(dir));
    let EntryBody::Segment(segment) = Entry::parse(&chain[removed]).unwrap().body else {
        panic!("entry {removed} is not a segment");
    };
    let entry = Entry {
        index: chain.len() as u64,
        prev: line_hash(chain.last().unwrap()),
        time,
        body: EntryBody::Retention(RetentionRecord {
            retention_days,
            before,
            removed: vec![(removed as u64, removed as u64)],
            segments: 1,
            events: segment.events,
            last_removed_hash: line_hash(&chain[removed]),
        }),
    };
    chain.push(entry.encode());
    write_lines(&chain_file(dir), &chain);
}

#[test]
fn a_removal_the_stores_retention_would_not_make_is_refused_not_carried_out() {
    let now = Utc::now();
    let today = now.date_naive();
    let days = |n: u64| Days::new(n);
    // Entry 1 is 40 days old, entry 2 today's.
    let store = || {
        let dir = tempfile::tempdir().unwrap();
        let segments = seal_batches(
            dir.path(),
            &[
                events_at(1, 2, now.checked_sub_days(days(40)).unwrap()),
                events_at(3, 2, now),
            ],
        );
        (dir, segments)
    };
    let cases = [
        // A cutoff after today.
        (
            30,
            today.checked_add_days(days(1)).unwrap(),
            now,
            2,
            "cutoff",
        ),
        // Dated in the future, so that a cutoff after today seems to hold.
        (
            30,
            today.checked_add_days(days(31)).unwrap(),
            now.checked_add_days(days(61)).unwrap(),
            2,
            "future",
        ),
        // A segment of today's removed under a cutoff of 30 days ago.
        (
            30,
            today.checked_sub_days(days(30)).unwrap(),
            now,
            2,
            "dated before",
        ),
    ];
    for (retention_days, before, time, removed, problem) in cases {
        let (dir, segments) = store();
        append_unsigned_removal(dir.path(), retention_days, before, time, removed);
        assert!(
            verify::verify(dir.path(), None, &mut |_| {}).is_err(),
            "{problem}"
        );
        // The open would sign it and delete the segment, as after a crash between the two; it
        // refuses instead, whatever retention is configured, and deletes nothing.
        for configured in [None, Some(1), Some(30)] {
            let error = SealedIndex::open(dir.path(), configured)
                .unwrap_err()
                .to_string();
            assert!(error.contains("is not signed"), "{error}");
            assert!(error.contains("nothing was deleted"), "{error}");
            if configured == Some(30) {
                assert!(error.contains(problem), "{error}");
            }
            assert!(dir.path().join(&segments[0]).exists());
            assert!(dir.path().join(&segments[1]).exists());
        }
    }

    // Followed by another entry, which a crash before its signature cannot leave.
    let (dir, segments) = store();
    append_unsigned_removal(
        dir.path(),
        30,
        today.checked_sub_days(days(30)).unwrap(),
        now,
        1,
    );
    let chain = lines(&chain_file(dir.path()));
    let mut forged = chain.clone();
    forged.push(chain[2].clone());
    write_lines(&chain_file(dir.path()), &forged);
    assert!(SealedIndex::open(dir.path(), Some(30)).is_err());
    write_lines(&chain_file(dir.path()), &chain);
    // As a crash leaves it, the removal is carried out and signed.
    drop(SealedIndex::open(dir.path(), Some(30)).unwrap());
    assert!(!dir.path().join(&segments[0]).exists());
    assert!(dir.path().join(&segments[1]).exists());
    let report = verify_ok(dir.path());
    assert_eq!(report.removed.unwrap().segments, 1);
}

#[test]
fn checkpoints_out_of_order_stop_the_open() {
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    let mut checkpoints = lines(&checkpoints_file(dir.path()));
    let n = checkpoints.len();
    assert!(n >= 2);
    checkpoints.swap(n - 2, n - 1);
    write_lines(&checkpoints_file(dir.path()), &checkpoints);
    let error = SealedIndex::open(dir.path(), None).unwrap_err().to_string();
    assert!(error.contains("earlier entry"), "{error}");
    assert!(matches!(
        verify_err(dir.path()),
        VerifyError::Checkpoint {
            problem: CheckpointFailure::Backwards { .. },
            ..
        }
    ));
}

#[test]
fn unsigned_segment_entries_are_signed_at_open_only_when_the_log_still_holds_their_events() {
    // A crash between chaining a segment and signing it: the segment's entry unsigned, and
    // the write-ahead log file, deleted only after the signature, still there.
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for i in 0..3 {
        log.record(decision(&format!("w{i}"), Decision::Allow))
            .unwrap();
    }
    let wal = dir.path().join("wal");
    let kept = dir.path().join("wal-copy");
    fs::create_dir(&kept).unwrap();
    for file in fs::read_dir(&wal).unwrap() {
        let file = file.unwrap();
        fs::copy(file.path(), kept.join(file.file_name())).unwrap();
    }
    log.close().unwrap();
    let mut checkpoints = lines(&checkpoints_file(dir.path()));
    checkpoints.pop();
    write_lines(&checkpoints_file(dir.path()), &checkpoints);
    let crashed = (
        lines(&chain_file(dir.path())),
        lines(&checkpoints_file(dir.path())),
    );

    // Without the log, nothing shows a seal of this store wrote the entry: refused.
    let error =
        portcullis_audit::AuditLog::open(dir.path(), portcullis_audit::AuditOptions::new("test"))
            .err()
            .unwrap()
            .to_string();
    assert!(
        error.contains("write-ahead log does not hold its events"),
        "{error}"
    );
    assert_eq!(lines(&checkpoints_file(dir.path())), crashed.1);

    // With it, the entry is signed, and its events are not sealed twice.
    for file in fs::read_dir(&kept).unwrap() {
        let file = file.unwrap();
        fs::copy(file.path(), wal.join(file.file_name())).unwrap();
    }
    let (log, recovery) =
        portcullis_audit::AuditLog::open(dir.path(), portcullis_audit::AuditOptions::new("test"))
            .unwrap();
    assert_eq!(recovery.events_already_sealed, 3);
    log.close().unwrap();
    assert_eq!(lines(&chain_file(dir.path())), crashed.0);
    let report = verify_ok(dir.path());
    assert_eq!(report.events, 3);
}
