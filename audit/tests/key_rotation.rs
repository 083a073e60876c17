//! Rotating the key that signs the manifest's checkpoints: the old key vouches for the new one
//! in the chain, a verifier pinned to either key still verifies the store, a rotation nobody
//! with the old key made is refused, and a rotation a crash cut short is finished at the next
//! open.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests unwrap and panic on a wrong variant"
)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use chrono::Utc;
use common::{at, decision, events_at, independent_verifier, lines, write_lines};
use portcullis_audit::manifest::{
    CHAIN_FILE, CHECKPOINTS_FILE, Checkpoint, Entry, EntryBody, KeyRotation, MANIFEST_DIR,
    line_hash,
};
use portcullis_audit::segment::{SealedIndex, write_segments};
use portcullis_audit::signing::{self, KEYS_DIR, NEXT_KEY_FILE, SigningKey, VerifyingKey};
use portcullis_audit::store::rotate_signing_key;
use portcullis_audit::verify::{self, CheckpointFailure, EntryFailure, KeySource, VerifyError};
use portcullis_audit::{AccessEvent, AuditError, Decision};

/// Seals one batch into segments, as the store's seal step does.
fn seal(dir: &Path, events: &[AccessEvent]) {
    let mut index = SealedIndex::open(dir, None).unwrap();
    write_segments(&dir.join("events"), events, &mut index).unwrap();
}

fn chain_file(dir: &Path) -> PathBuf {
    dir.join(MANIFEST_DIR).join(CHAIN_FILE)
}

fn checkpoints_file(dir: &Path) -> PathBuf {
    dir.join(MANIFEST_DIR).join(CHECKPOINTS_FILE)
}

/// The store's public key, written to a file outside the store as an auditor keeps it.
fn pin(dir: &Path, name: &str) -> (PathBuf, VerifyingKey) {
    let key = signing::store_public_key(dir).unwrap();
    let path = dir.join(name);
    fs::write(&path, signing::public_key_to_pem(&key).unwrap()).unwrap();
    (path, key)
}

fn verify_with(dir: &Path, key: Option<&Path>) -> Result<verify::Report, VerifyError> {
    verify::verify(dir, key, &mut |_| {})
}

/// A store with a segment sealed under its first key, then a rotation, then a segment sealed
/// under the second key; the first key pinned in `first.pub`.
fn rotated_store(dir: &Path) -> (PathBuf, VerifyingKey, u64) {
    seal(dir, &events_at(1, 4, at("2026-03-01T10:00:00Z")));
    let (first_pin, first) = pin(dir, "first.pub");
    let rotated = rotate_signing_key(dir).unwrap();
    assert_eq!(rotated.old_key_id, signing::key_id(&first));
    seal(dir, &events_at(5, 3, at("2026-03-01T11:00:00Z")));
    (first_pin, first, rotated.entry)
}

#[test]
fn the_new_key_signs_what_follows_and_a_verifier_pinned_to_either_key_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (first_pin, first, rotation) = rotated_store(dir.path());
    let second = signing::store_public_key(dir.path()).unwrap();
    assert_ne!(second, first);
    // The old private key is gone; no new key waits.
    assert!(!dir.path().join(KEYS_DIR).join(NEXT_KEY_FILE).exists());
    let chain = lines(&chain_file(dir.path()));
    let entry = Entry::parse(&chain[rotation as usize]).unwrap();
    let EntryBody::Key(KeyRotation {
        previous,
        key_id,
        public_key,
    }) = entry.body
    else {
        panic!("entry {rotation} is not a rotation: {entry:?}");
    };
    assert_eq!(previous, first.to_bytes());
    assert_eq!(public_key, second.to_bytes());
    assert_eq!(key_id, signing::key_id(&second));

    // Both keys sign the rotation; the checkpoints before are the old key's, those after the
    // new key's.
    let checkpoints: Vec<Checkpoint> = lines(&checkpoints_file(dir.path()))
        .iter()
        .map(|line| Checkpoint::parse(line).unwrap())
        .collect();
    let ids = [signing::key_id(&first), signing::key_id(&second)];
    for checkpoint in &checkpoints {
        let expected = match checkpoint.entry.cmp(&rotation) {
            std::cmp::Ordering::Less => &ids[..1],
            std::cmp::Ordering::Equal => &ids[..],
            std::cmp::Ordering::Greater => &ids[1..],
        };
        assert!(expected.contains(&checkpoint.key_id), "{checkpoint:?}");
    }
    let at_rotation: Vec<&str> = checkpoints
        .iter()
        .filter(|c| c.entry == rotation)
        .map(|c| c.key_id.as_str())
        .collect();
    assert_eq!(at_rotation, [ids[0].as_str(), ids[1].as_str()]);
    assert!(checkpoints.iter().any(|c| c.entry > rotation));

    let pinned_first = verify_with(dir.path(), Some(&first_pin)).unwrap();
    assert_eq!(pinned_first.rotations, 1);
    assert_eq!(pinned_first.trusted_from, 0);
    assert_eq!(pinned_first.events, 7);
    let (second_pin, _) = pin(dir.path(), "second.pub");
    let pinned_second = verify_with(dir.path(), Some(&second_pin)).unwrap();
    assert_eq!(pinned_second.trusted_from, rotation);
    let own = verify_with(dir.path(), None).unwrap();
    assert!(matches!(own.key_source, KeySource::DataDir(_)));
    assert_eq!(own.key_id, signing::key_id(&second));

    // A key that never signed the store is still refused, naming the store's keys.
    let stranger = dir.path().join("stranger.pub");
    let other = SigningKey::from_bytes(&[9; 32]).verifying_key();
    fs::write(&stranger, signing::public_key_to_pem(&other).unwrap()).unwrap();
    match verify_with(dir.path(), Some(&stranger)).unwrap_err() {
        VerifyError::Entry {
            problem: EntryFailure::UnknownKey { keys, .. },
            ..
        } => {
            assert!(keys.contains(&signing::key_id(&first)), "{keys}");
            assert!(keys.contains(&signing::key_id(&second)), "{keys}");
        }
        other => panic!("{other}"),
    }

    // Rotating again chains a second rotation; the first key still verifies everything.
    rotate_signing_key(dir.path()).unwrap();
    seal(dir.path(), &events_at(8, 2, at("2026-03-01T12:00:00Z")));
    let report = verify_with(dir.path(), Some(&first_pin)).unwrap();
    assert_eq!(report.rotations, 2);
    assert_eq!(report.events, 9);
}

/// Appends `body` to the chain by hand, as someone editing the files would.
fn append_entry(dir: &Path, body: EntryBody) -> (u64, [u8; 32]) {
    let mut chain = lines(&chain_file(dir));
    let last = chain.last().unwrap().clone();
    let index = chain.len() as u64;
    let entry = Entry {
        index,
        prev: line_hash(&last),
        time: Utc::now(),
        body,
    };
    let line = entry.encode();
    let hash = line_hash(&line);
    chain.push(line);
    write_lines(&chain_file(dir), &chain);
    (index, hash)
}

/// Appends a checkpoint of `entry` signed by `key`, claiming the key id `key_id`.
fn append_checkpoint(dir: &Path, entry: u64, hash: [u8; 32], key: &SigningKey, key_id: &str) {
    let mut checkpoints = lines(&checkpoints_file(dir));
    let time = Utc::now();
    let message = Checkpoint::signed_message(entry, &hash, &time, key_id);
    let checkpoint = Checkpoint {
        entry,
        entry_hash: hash,
        time,
        key_id: key_id.to_owned(),
        signature: signing::sign(key, &message),
    };
    checkpoints.push(checkpoint.encode());
    write_lines(&checkpoints_file(dir), &checkpoints);
}

#[test]
fn a_rotation_to_a_key_of_someone_without_the_old_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    seal(dir.path(), &events_at(1, 4, at("2026-03-01T10:00:00Z")));
    let (first_pin, first) = pin(dir.path(), "first.pub");
    let intruder = SigningKey::from_bytes(&[5; 32]);
    let intruder_id = signing::key_id(&intruder.verifying_key());
    let (entry, hash) = append_entry(
        dir.path(),
        EntryBody::Key(KeyRotation {
            previous: first.to_bytes(),
            key_id: intruder_id.clone(),
            public_key: intruder.verifying_key().to_bytes(),
        }),
    );
    // The rotation's checkpoint claims the old key, but only the intruder's key made it.
    append_checkpoint(dir.path(), entry, hash, &intruder, &signing::key_id(&first));
    match verify_with(dir.path(), Some(&first_pin)).unwrap_err() {
        VerifyError::Checkpoint { problem, .. } => {
            assert_eq!(problem, CheckpointFailure::Signature);
        }
        other => panic!("{other}"),
    }
    // Signed by the intruder's key under its own id: the old key never vouched for it.
    let mut checkpoints = lines(&checkpoints_file(dir.path()));
    checkpoints.pop();
    write_lines(&checkpoints_file(dir.path()), &checkpoints);
    append_checkpoint(dir.path(), entry, hash, &intruder, &intruder_id);
    match verify_with(dir.path(), Some(&first_pin)).unwrap_err() {
        VerifyError::Entry {
            entry: named,
            problem: EntryFailure::RotationUnsigned { key_id },
            ..
        } => {
            assert_eq!(named, entry);
            assert_eq!(key_id, signing::key_id(&first));
        }
        other => panic!("{other}"),
    }
    // The store does not open on it either.
    let error = SealedIndex::open(dir.path(), None).unwrap_err().to_string();
    assert!(error.contains("signs the key rotation"), "{error}");
    let mut checkpoints = lines(&checkpoints_file(dir.path()));
    checkpoints.pop();
    write_lines(&checkpoints_file(dir.path()), &checkpoints);
    append_checkpoint(dir.path(), entry, hash, &intruder, &signing::key_id(&first));
    let error = SealedIndex::open(dir.path(), None).unwrap_err().to_string();
    assert!(error.contains("not signed by the store's key"), "{error}");
}

#[test]
fn a_rotation_whose_checkpoint_is_gone_or_whose_previous_key_is_wrong_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (first_pin, first, rotation) = rotated_store(dir.path());
    let original = lines(&checkpoints_file(dir.path()));
    let second_id = signing::key_id(&signing::store_public_key(dir.path()).unwrap());
    for signer in [signing::key_id(&first), second_id.clone()] {
        let without: Vec<String> = original
            .iter()
            .filter(|line| {
                let checkpoint = Checkpoint::parse(line).unwrap();
                checkpoint.entry != rotation || checkpoint.key_id != signer
            })
            .cloned()
            .collect();
        assert_eq!(without.len() + 1, original.len());
        write_lines(&checkpoints_file(dir.path()), &without);
        match verify_with(dir.path(), Some(&first_pin)).unwrap_err() {
            VerifyError::Entry { entry, problem, .. } => {
                assert_eq!(entry, rotation);
                assert_eq!(
                    problem,
                    EntryFailure::RotationUnsigned {
                        key_id: signer.clone()
                    }
                );
            }
            other => panic!("{other}"),
        }
        // With entries after the rotation, no crash left it so.
        let error = SealedIndex::open(dir.path(), None).unwrap_err().to_string();
        assert!(error.contains("signs the key rotation of entry"), "{error}");
        write_lines(&checkpoints_file(dir.path()), &original);
    }
    verify_with(dir.path(), Some(&first_pin)).unwrap();

    // A rotation whose `previous` is not the key in use does not follow.
    let (entry, _) = append_entry(
        dir.path(),
        EntryBody::Key(KeyRotation {
            previous: first.to_bytes(),
            key_id: signing::key_id(&SigningKey::from_bytes(&[3; 32]).verifying_key()),
            public_key: SigningKey::from_bytes(&[3; 32]).verifying_key().to_bytes(),
        }),
    );
    match verify_with(dir.path(), Some(&first_pin)).unwrap_err() {
        VerifyError::Entry {
            entry: named,
            problem: EntryFailure::Rotation(problem),
            ..
        } => {
            assert_eq!(named, entry);
            assert!(problem.to_string().contains("`previous` key"), "{problem}");
        }
        other => panic!("{other}"),
    }
    let error = SealedIndex::open(dir.path(), None).unwrap_err().to_string();
    assert!(error.contains("does not follow"), "{error}");
}

#[test]
fn a_rotation_cut_short_is_finished_or_undone_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    seal(dir.path(), &events_at(1, 4, at("2026-03-01T10:00:00Z")));
    let (first_pin, first) = pin(dir.path(), "first.pub");
    let key_file = signing::signing_key_path(dir.path());
    let next_file = dir.path().join(KEYS_DIR).join(NEXT_KEY_FILE);
    let old_key_text = fs::read(&key_file).unwrap();
    let chain_before = lines(&chain_file(dir.path()));
    let checkpoints_before = lines(&checkpoints_file(dir.path()));

    // Died after creating the new key, before writing the entry: the new key is dropped.
    fs::copy(&key_file, &next_file).unwrap();
    drop(SealedIndex::open(dir.path(), None).unwrap());
    assert!(!next_file.exists());
    assert_eq!(signing::store_public_key(dir.path()).unwrap(), first);

    // A rotation as it lies on disk at each step: the entry written, then signed by the old
    // key, then by the new key (still waiting), then the new key in place.
    let rotated = rotate_signing_key(dir.path()).unwrap();
    let new_key_text = fs::read(&key_file).unwrap();
    let chain_after = lines(&chain_file(dir.path()));
    let checkpoints_after = lines(&checkpoints_file(dir.path()));
    assert_eq!(chain_after.len(), chain_before.len() + 1);
    assert_eq!(checkpoints_after.len(), checkpoints_before.len() + 2);
    let waiting = |checkpoints: usize| {
        write_lines(&chain_file(dir.path()), &chain_after);
        write_lines(
            &checkpoints_file(dir.path()),
            &checkpoints_after[..checkpoints_before.len() + checkpoints],
        );
        fs::write(&key_file, &old_key_text).unwrap();
        fs::write(&next_file, &new_key_text).unwrap();
    };

    // Before both keys signed it, the rotation is undone: its entry and checkpoints cut, the
    // new key deleted, the old key kept.
    for signed in [0, 1] {
        waiting(signed);
        drop(SealedIndex::open(dir.path(), None).unwrap());
        assert!(!next_file.exists());
        assert_eq!(lines(&chain_file(dir.path())), chain_before);
        assert_eq!(lines(&checkpoints_file(dir.path())), checkpoints_before);
        assert_eq!(signing::store_public_key(dir.path()).unwrap(), first);
        assert_eq!(
            verify_with(dir.path(), Some(&first_pin)).unwrap().rotations,
            0
        );
    }

    // Once both signed it, the new key takes its place.
    waiting(2);
    seal(dir.path(), &events_at(5, 3, at("2026-03-01T11:00:00Z")));
    assert!(!next_file.exists());
    let now = signing::store_public_key(dir.path()).unwrap();
    assert_eq!(signing::key_id(&now), rotated.new_key_id);
    let report = verify_with(dir.path(), Some(&first_pin)).unwrap();
    assert_eq!(report.rotations, 1);
    assert_eq!(report.events, 7);
    assert_eq!(report.last_checkpoint.key_id, rotated.new_key_id);

    // The new key in place without its own signature of the rotation is no crash's leftover:
    // the open refuses, and signs nothing.
    let rotated = rotate_signing_key(dir.path()).unwrap();
    let mut checkpoints = lines(&checkpoints_file(dir.path()));
    let acceptance = Checkpoint::parse(&checkpoints.pop().unwrap()).unwrap();
    assert_eq!(
        (acceptance.entry, acceptance.key_id.as_str()),
        (rotated.entry, rotated.new_key_id.as_str())
    );
    write_lines(&checkpoints_file(dir.path()), &checkpoints);
    let error = SealedIndex::open(dir.path(), None).unwrap_err().to_string();
    assert!(error.contains("signs the key rotation"), "{error}");
    assert_eq!(lines(&checkpoints_file(dir.path())), checkpoints);
}

#[test]
fn a_store_in_use_is_not_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let log = common::open(dir.path());
    let error = rotate_signing_key(dir.path()).unwrap_err();
    assert!(matches!(error, AuditError::Locked { .. }), "{error:?}");
    drop(log);
    rotate_signing_key(dir.path()).unwrap();
    let (log, _) =
        portcullis_audit::AuditLog::open(dir.path(), portcullis_audit::AuditOptions::new("test"))
            .unwrap();
    log.record(decision("orders_api", Decision::Allow)).unwrap();
    log.close().unwrap();
    let report = verify_with(dir.path(), None).unwrap();
    assert_eq!(report.rotations, 1);
    assert_eq!(report.events, 1);
}

#[test]
fn a_verifier_written_from_the_docs_follows_the_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let (first_pin, _, rotation) = rotated_store(dir.path());
    rotate_signing_key(dir.path()).unwrap();
    seal(dir.path(), &events_at(8, 2, at("2026-03-01T12:00:00Z")));
    let report = verify_with(dir.path(), Some(&first_pin)).unwrap();
    let answer = independent_verifier(dir.path(), &first_pin);
    let ok = &answer["ok"];
    assert_eq!(ok["rotations"], 2, "{answer}");
    assert_eq!(ok["entries"], report.entries, "{answer}");
    assert_eq!(ok["events"], report.events, "{answer}");

    // Both refuse the store once the first rotation's checkpoint is gone.
    let without: Vec<String> = lines(&checkpoints_file(dir.path()))
        .into_iter()
        .filter(|line| Checkpoint::parse(line).unwrap().entry != rotation)
        .collect();
    write_lines(&checkpoints_file(dir.path()), &without);
    let answer = independent_verifier(dir.path(), &first_pin);
    let failure = answer["failure"].as_str().unwrap_or_default();
    assert!(failure.contains("rotation"), "{answer}");
    assert!(verify_with(dir.path(), Some(&first_pin)).is_err());
}

#[test]
fn a_history_of_another_key_naming_the_stores_key_as_its_successor_is_refused() {
    // The store's key, which has signed only the store's own history.
    let dir = tempfile::tempdir().unwrap();
    seal(dir.path(), &events_at(1, 4, at("2026-03-01T10:00:00Z")));
    let (store_pin, store_key) = pin(dir.path(), "store.pub");
    // Another history, written from nothing with a key of its own, which names the store's
    // key as its successor: no private key of the store is needed for it.
    let forger = SigningKey::from_bytes(&[11; 32]);
    let forger_id = signing::key_id(&forger.verifying_key());
    fs::write(checkpoints_file(dir.path()), "").unwrap();
    let genesis = Entry {
        index: 0,
        prev: [0; 32],
        time: Utc::now(),
        body: EntryBody::Genesis {
            format: 1,
            key_id: forger_id.clone(),
        },
    };
    let line = genesis.encode();
    write_lines(&chain_file(dir.path()), std::slice::from_ref(&line));
    append_checkpoint(dir.path(), 0, line_hash(&line), &forger, &forger_id);
    let (entry, hash) = append_entry(
        dir.path(),
        EntryBody::Key(KeyRotation {
            previous: forger.verifying_key().to_bytes(),
            key_id: signing::key_id(&store_key),
            public_key: store_key.to_bytes(),
        }),
    );
    append_checkpoint(dir.path(), entry, hash, &forger, &forger_id);
    // Its segments set aside, the forged chain holds together; but the store's key never took
    // it on.
    for segment in common::segment_files(dir.path()) {
        fs::remove_file(segment).unwrap();
    }
    match verify_with(dir.path(), Some(&store_pin)).unwrap_err() {
        VerifyError::Entry {
            entry: named,
            problem: EntryFailure::RotationUnsigned { key_id },
            ..
        } => {
            assert_eq!(named, entry);
            assert_eq!(key_id, signing::key_id(&store_key));
        }
        other => panic!("{other}"),
    }
}

#[test]
fn a_rotation_to_a_weak_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    seal(dir.path(), &events_at(1, 4, at("2026-03-01T10:00:00Z")));
    let (first_pin, first) = pin(dir.path(), "first.pub");
    // All zeros, a point of small order; and the identity point.
    let mut identity = [0; 32];
    identity[0] = 1;
    for weak in [[0; 32], identity] {
        let chain = lines(&chain_file(dir.path()));
        append_entry(
            dir.path(),
            EntryBody::Key(KeyRotation {
                previous: first.to_bytes(),
                key_id: "0000000000000000".to_owned(),
                public_key: weak,
            }),
        );
        match verify_with(dir.path(), Some(&first_pin)).unwrap_err() {
            VerifyError::Entry {
                problem: EntryFailure::Rotation(problem),
                ..
            } => {
                assert!(problem.to_string().contains("weak"), "{problem}");
            }
            other => panic!("{other}"),
        }
        let error = SealedIndex::open(dir.path(), None).unwrap_err().to_string();
        assert!(error.contains("weak"), "{error}");
        write_lines(&chain_file(dir.path()), &chain);
    }
    verify_with(dir.path(), Some(&first_pin)).unwrap();
}

#[test]
fn events_still_in_the_log_are_sealed_under_the_old_key_before_it_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) =
        portcullis_audit::AuditLog::open(dir.path(), portcullis_audit::AuditOptions::new("test"))
            .unwrap();
    for _ in 0..3 {
        log.record(decision("orders_api", Decision::Allow)).unwrap();
    }
    // As a process killed after answering leaves it: the events only in the write-ahead log,
    // and (here, where the process lives on) the lock taken over once the store is dropped.
    drop(log);
    let rotated = rotate_signing_key(dir.path()).unwrap();
    let report = verify_with(dir.path(), None).unwrap();
    assert_eq!(report.events, 3);
    // The segment's entry comes before the rotation, so the old key signed it.
    let chain = lines(&chain_file(dir.path()));
    let segment_entry = chain
        .iter()
        .position(|line| line.contains("\"kind\":\"segment\""))
        .unwrap() as u64;
    assert!(segment_entry < rotated.entry, "{chain:?}");
}
