//! `portcullis audit verify` and `portcullis audit key` from the command line: a clean store is
//! confirmed with a summary, the exported key pins the checkpoints, a tampered store fails
//! naming what does not match, and verification runs beside a server that holds the store.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::path::Path;
use std::process::Output;

use common::{portcullis, start_server, stop_server};
use portcullis_audit::signing::{self, SigningKey};
use portcullis_audit::{AuditLog, AuditOptions, Decision, NewEvent};

fn run(args: &[&str], data_dir: &Path) -> Output {
    portcullis()
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A store with three events in one segment.
fn store_with_events(data_dir: &Path) {
    let (log, _) = AuditLog::open(data_dir, AuditOptions::new("cli-test")).unwrap();
    for workload in ["build", "deploy", "docs"] {
        let event = NewEvent {
            decision: Some(Decision::Allow),
            workload: Some(workload.to_owned()),
            ..NewEvent::default()
        };
        log.record(event).unwrap();
    }
    log.close().unwrap();
}

fn the_segment(data_dir: &Path) -> String {
    let mut found = Vec::new();
    for partition in std::fs::read_dir(data_dir.join("events")).unwrap() {
        let partition = partition.unwrap();
        for file in std::fs::read_dir(partition.path()).unwrap() {
            let name = file.unwrap().file_name().into_string().unwrap();
            let dir = partition.file_name().into_string().unwrap();
            found.push(format!("events/{dir}/{name}"));
        }
    }
    assert_eq!(found.len(), 1, "{found:?}");
    found.pop().unwrap()
}

#[test]
fn verify_confirms_a_clean_store_and_the_exported_key_pins_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    store_with_events(&data_dir);

    let out = run(&["audit", "verify"], &data_dir);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("verified `"), "{stdout}");
    assert!(
        stdout.contains("segments: 1, events: 3, seq 1..=3"),
        "{stdout}"
    );
    assert!(stdout.contains("last checkpoint: entry 1 "), "{stdout}");
    assert!(stdout.contains("key: the store's own"), "{stdout}");
    assert!(
        out.stderr.is_empty(),
        "no progress off a terminal: {}",
        text(&out.stderr)
    );

    let out = run(&["audit", "key"], &data_dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pem = text(&out.stdout);
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
    assert!(!pem.contains("PRIVATE"), "{pem}");
    let key = signing::public_key_from_pem(&pem).unwrap();
    assert!(text(&out.stderr).contains(&signing::key_id(&key)));

    let pinned = tmp.path().join("audit.pub");
    std::fs::write(&pinned, &pem).unwrap();
    let out = run(
        &["audit", "verify", "--public-key", pinned.to_str().unwrap()],
        &data_dir,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("key: pinned, `"), "{stdout}");
    assert!(stdout.contains(&signing::key_id(&key)), "{stdout}");
}

#[test]
fn verify_names_a_tampered_segment_and_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    store_with_events(&data_dir);
    let segment = the_segment(&data_dir);
    let path = data_dir.join(&segment);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();

    let out = run(&["audit", "verify"], &data_dir);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: verification failed: segment `{segment}` (manifest entry 1) fails: its \
             SHA-256 is "
        )),
        "{stderr}"
    );
}

#[test]
fn verify_against_another_pinned_key_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    store_with_events(&data_dir);
    let other = SigningKey::from_bytes(&[9; 32]).verifying_key();
    let foreign = tmp.path().join("foreign.pub");
    std::fs::write(&foreign, signing::public_key_to_pem(&other).unwrap()).unwrap();

    let out = run(
        &["audit", "verify", "--public-key", foreign.to_str().unwrap()],
        &data_dir,
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("manifest entry 0"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "not with the trusted key {}",
            signing::key_id(&other)
        )),
        "{stderr}"
    );
}

#[test]
fn key_and_verify_explain_a_directory_without_a_store() {
    let tmp = tempfile::tempdir().unwrap();
    // An empty directory is no store: both commands say so, as for a missing one.
    for command in ["key", "verify"] {
        let out = run(&["audit", command], tmp.path());
        assert!(!out.status.success());
        let stderr = text(&out.stderr);
        assert!(stderr.contains("no audit store at"), "{command}: {stderr}");
        assert!(stderr.contains("holds none of"), "{command}: {stderr}");
    }

    // A directory with segments but no manifest (never opened by a server since manifests
    // exist) is a store without its key and manifest.
    std::fs::create_dir(tmp.path().join("events")).unwrap();
    let out = run(&["audit", "key"], tmp.path());
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("there is no signing key"), "{stderr}");

    let out = run(&["audit", "verify"], tmp.path());
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("has no integrity manifest"), "{stderr}");
    // Worded as a missing directory is, so that both read as "there is no store here".
    assert!(stderr.contains("no audit store at"), "{stderr}");

    let out = run(&["audit", "verify"], &tmp.path().join("nothing"));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no audit store at"));
}

#[test]
fn verify_runs_beside_a_server_that_holds_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let server = start_server(&data_dir);

    let out = run(&["audit", "verify"], &data_dir);
    assert!(out.status.success(), "{}", text(&out.stderr));

    stop_server(server);
    let out = run(&["audit", "verify"], &data_dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("segments: 1, events: 1, seq 1..=1"),
        "{stdout}"
    );
}

/// Events not yet sealed are checked record by record, as the server checks them when it opens
/// the store: a damaged record fails the verification with its file and offset.
#[test]
fn verify_checks_the_write_ahead_log_and_names_a_damaged_record() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let options = AuditOptions {
        seal_interval: std::time::Duration::from_secs(3600),
        ..AuditOptions::new("cli-test")
    };
    // Held open, as a running server holds it: nothing is sealed.
    let (log, _) = AuditLog::open(&data_dir, options).unwrap();
    for n in 0..10 {
        let event = NewEvent {
            decision: Some(Decision::Allow),
            workload: Some(format!("workload-{n}")),
            ..NewEvent::default()
        };
        log.record(event).unwrap();
    }
    let out = run(&["audit", "verify"], &data_dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("write-ahead log: 10 events not yet sealed, each record's checksum"),
        "{stdout}"
    );

    let wal = std::fs::read_dir(data_dir.join("wal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .unwrap();
    // Damage to the last record cannot be told from a record a crash cut short: it passes,
    // said as what the server will drop.
    let whole = std::fs::read(&wal).unwrap();
    let mut bytes = whole.clone();
    let last = bytes.len() - 10;
    bytes[last] ^= 0x40;
    std::fs::write(&wal, &bytes).unwrap();
    let out = run(&["audit", "verify"], &data_dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("write-ahead log: 9 events not yet sealed")
            && stdout.contains("bytes that do not pass their checks"),
        "{stdout}"
    );

    let mut bytes = whole;
    let at = bytes.len() / 3;
    bytes[at] ^= 0x40;
    std::fs::write(&wal, bytes).unwrap();
    let out = run(&["audit", "verify"], &data_dir);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("the write-ahead log is damaged")
            && stderr.contains("damaged record in")
            && stderr.contains(&wal.file_name().unwrap().to_string_lossy().into_owned()),
        "{stderr}"
    );
    std::mem::forget(log);
}

/// The `anchor:` line of one verification, given back with `--extends`, shows later that the
/// store still extends it; a store that lost its newest segment with its entry and checkpoint
/// does not.
#[test]
fn verify_extends_a_recorded_anchor_and_notices_a_cut_end() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    store_with_events(&data_dir);
    let out = run(&["audit", "verify"], &data_dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let anchor = stdout
        .lines()
        .find_map(|line| line.strip_prefix("anchor: "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no anchor line in {stdout}"))
        .to_owned();
    assert!(anchor.starts_with("1:"), "{anchor}");

    let out = run(&["audit", "verify", "--extends", &anchor], &data_dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("extends the recorded entry 1"),
        "{}",
        text(&out.stdout)
    );

    // The store as it was before its only segment: the genesis entry and no segment.
    std::fs::remove_file(data_dir.join(the_segment(&data_dir))).unwrap();
    let manifest = data_dir.join("manifest");
    let chain = std::fs::read_to_string(manifest.join("chain.log")).unwrap();
    let genesis = chain.lines().next().unwrap();
    std::fs::write(manifest.join("chain.log"), format!("{genesis}\n")).unwrap();
    let checkpoints = std::fs::read_to_string(manifest.join("checkpoints.log")).unwrap();
    let first = checkpoints.lines().next().unwrap();
    std::fs::write(manifest.join("checkpoints.log"), format!("{first}\n")).unwrap();
    let out = run(&["audit", "verify"], &data_dir);
    assert!(
        out.status.success(),
        "alone, the cut store verifies: {}",
        text(&out.stderr)
    );
    let out = run(&["audit", "verify", "--extends", &anchor], &data_dir);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("does not extend the recorded entry 1") && stderr.contains("cut"),
        "{stderr}"
    );

    let out = run(&["audit", "verify", "--extends", "1:beef"], &data_dir);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("ENTRY:HASH"),
        "{}",
        text(&out.stderr)
    );
}

/// `portcullis audit rotate-key`: refused while a server holds the store; afterwards a verifier
/// pinned to the old key follows the rotation, and one pinned to the new key says from where it
/// vouches.
#[test]
fn rotate_key_replaces_the_signing_key_and_both_keys_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let server = start_server(&data_dir);
    let out = run(&["audit", "rotate-key"], &data_dir);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("cannot rotate the signing key"), "{stderr}");
    assert!(stderr.contains("LOCK"), "{stderr}");
    stop_server(server);

    let old_pem = text(&run(&["audit", "key"], &data_dir).stdout);
    let old = signing::public_key_from_pem(&old_pem).unwrap();
    let old_pin = tmp.path().join("old.pub");
    std::fs::write(&old_pin, &old_pem).unwrap();

    let out = run(&["audit", "rotate-key"], &data_dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&signing::key_id(&old)), "{stdout}");
    let new_pem = text(&run(&["audit", "key"], &data_dir).stdout);
    assert_ne!(new_pem, old_pem);
    let new = signing::public_key_from_pem(&new_pem).unwrap();
    assert!(stdout.contains(&signing::key_id(&new)), "{stdout}");

    // The server signs with the new key from now on.
    let server = start_server(&data_dir);
    stop_server(server);
    let out = run(
        &["audit", "verify", "--public-key", old_pin.to_str().unwrap()],
        &data_dir,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("key rotations: 1, each signed by the key before it"),
        "{stdout}"
    );
    assert!(stdout.contains("events: 2"), "{stdout}");
    let new_pin = tmp.path().join("new.pub");
    std::fs::write(&new_pin, &new_pem).unwrap();
    let out = run(
        &["audit", "verify", "--public-key", new_pin.to_str().unwrap()],
        &data_dir,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("the trusted key was named by the rotation"),
        "{stdout}"
    );
}
