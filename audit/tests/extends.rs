//! `verify --extends ENTRY:HASH`: the chain alone cannot show that its newest entries were
//! not cut off together with their segments and checkpoints; an entry recorded outside the
//! store can.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests unwrap and panic on a wrong variant"
)]

mod common;

use std::fs;
use std::path::Path;

use common::{lines, write_lines};

use portcullis_audit::manifest::{CHAIN_FILE, CHECKPOINTS_FILE, Checkpoint, MANIFEST_DIR};
use portcullis_audit::verify::{self, Anchor, VerifyError};
use portcullis_audit::{AuditLog, AuditOptions, EventKind, NewEvent};

/// A store of three segments, sealed three events at a time.
fn store(dir: &Path) {
    let options = AuditOptions {
        seal_after_events: 3,
        ..AuditOptions::new("node-1")
    };
    let (log, _) = AuditLog::open(dir, options).unwrap();
    for _ in 0..9 {
        log.record(NewEvent {
            kind: EventKind::Decision,
            ..NewEvent::default()
        })
        .unwrap();
    }
    log.close().unwrap();
}

fn anchor_of(dir: &Path) -> Anchor {
    let report = verify::verify(dir, None, &mut |_| {}).unwrap();
    Anchor {
        entry: report.last_checkpoint.entry,
        hash: report.last_checkpoint.entry_hash,
    }
}

/// Removes the newest segment with its entry and the checkpoints that sign it, leaving a
/// shorter store that is consistent in itself.
fn cut_the_newest_segment(dir: &Path) {
    let manifest = dir.join(MANIFEST_DIR);
    let chain = lines(&manifest.join(CHAIN_FILE));
    let last = chain.last().unwrap().clone();
    let path = last
        .split("\"path\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    fs::remove_file(dir.join(path)).unwrap();
    let kept = chain.len() - 1;
    write_lines(&manifest.join(CHAIN_FILE), &chain[..kept]);
    let checkpoints: Vec<String> = lines(&manifest.join(CHECKPOINTS_FILE))
        .into_iter()
        .filter(|line| Checkpoint::parse(line).unwrap().entry < kept as u64)
        .collect();
    write_lines(&manifest.join(CHECKPOINTS_FILE), &checkpoints);
}

#[test]
fn a_store_cut_at_its_end_verifies_alone_but_not_against_a_recorded_entry() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path());
    let anchor = anchor_of(dir.path());
    // The same store, and a store that grew since, both extend the recorded entry.
    let report = verify::verify_extending(dir.path(), None, Some(anchor), &mut |_| {}).unwrap();
    assert_eq!(report.extends, Some(anchor));

    cut_the_newest_segment(dir.path());
    let report = verify::verify(dir.path(), None, &mut |_| {}).unwrap();
    assert!(report.last_checkpoint.entry < anchor.entry);
    match verify::verify_extending(dir.path(), None, Some(anchor), &mut |_| {}) {
        Err(VerifyError::CutBefore { anchor: cut, last }) => {
            assert_eq!(cut, anchor);
            assert_eq!(last, anchor.entry - 1);
        }
        other => panic!("{other:?}"),
    }
    // An older entry, from before the cut, still holds.
    let older = anchor_of(dir.path());
    verify::verify_extending(dir.path(), None, Some(older), &mut |_| {}).unwrap();
}

#[test]
fn a_recorded_entry_that_now_hashes_otherwise_is_a_rewritten_history() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path());
    let mut anchor = anchor_of(dir.path());
    anchor.hash[0] ^= 0x01;
    match verify::verify_extending(dir.path(), None, Some(anchor), &mut |_| {}) {
        Err(error @ VerifyError::Rewritten { .. }) => {
            assert!(error.to_string().contains("rewritten"), "{error}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn anchors_read_and_print_as_entry_colon_hash() {
    let text = format!("12:{}", "ab".repeat(32));
    let anchor: Anchor = text.parse().unwrap();
    assert_eq!(anchor.entry, 12);
    assert_eq!(anchor.to_string(), text);
    for bad in ["12", "x:ab", "12:abc", &format!("12:{}", "zz".repeat(32))] {
        let error = bad.parse::<Anchor>().unwrap_err();
        assert!(error.contains("ENTRY:HASH"), "{error}");
    }
}
