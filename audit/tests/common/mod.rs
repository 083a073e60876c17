//! Helpers shared by the audit store's integration tests.

#![allow(dead_code, reason = "each test crate uses a different part")]
#![allow(clippy::unwrap_used, reason = "tests unwrap")]

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use portcullis_audit::{AccessEvent, AuditLog, AuditOptions, Decision, NewEvent};
use uuid::Uuid;

/// A decision event for `workload`, with a few other fields filled.
pub fn decision(workload: &str, decision: Decision) -> NewEvent {
    NewEvent {
        decision: Some(decision),
        reason: Some(format!("rule matched `{workload}`")),
        reason_code: Some(
            if decision == Decision::Allow {
                "permitted"
            } else {
                "forbidden"
            }
            .into(),
        ),
        rule: Some(format!("rule_{workload}")),
        workload: Some(workload.to_owned()),
        subject: Some(format!("repo:acme/{workload}:ref:refs/heads/main")),
        target: Some("orders_db".into()),
        protocol: Some("postgres".into()),
        port: Some(5432),
        ..NewEvent::default()
    }
}

/// Opens the store with node `test` and the default seal threshold.
pub fn open(dir: &Path) -> AuditLog {
    open_with(dir, 10_000)
}

pub fn open_with(dir: &Path, seal_after_events: usize) -> AuditLog {
    let options = AuditOptions {
        seal_after_events,
        ..AuditOptions::new("test")
    };
    AuditLog::open(dir, options).unwrap().0
}

/// Every segment file under `DATA/events`, sorted.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for partition in fs::read_dir(dir.join("events")).unwrap() {
        for file in fs::read_dir(partition.unwrap().path()).unwrap() {
            files.push(file.unwrap().path());
        }
    }
    files.sort();
    files
}

/// The write-ahead log files of a data directory, oldest first.
pub fn wal_files(dir: &Path) -> Vec<PathBuf> {
    portcullis_audit::wal::list_logs(&dir.join("wal")).unwrap()
}

/// The newest write-ahead log file of a data directory: the one being written.
pub fn wal_file(dir: &Path) -> PathBuf {
    wal_files(dir).pop().unwrap()
}

/// An event as the store would keep it, at `time`.
pub fn stored_event(seq: u64, time: DateTime<Utc>, details: NewEvent) -> AccessEvent {
    AccessEvent {
        event_id: Uuid::now_v7(),
        seq,
        time,
        node: "test".into(),
        details,
    }
}

/// A time given in RFC 3339.
pub fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// Events `first..first + count` at `time`, microseconds apart.
pub fn events_at(first: u64, count: u64, time: DateTime<Utc>) -> Vec<AccessEvent> {
    (0..count)
        .map(|i| {
            let time = time + chrono::Duration::microseconds(i as i64);
            stored_event(first + i, time, decision("orders_api", Decision::Allow))
        })
        .collect()
}

/// The lines of a text file, without their newlines.
pub fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Writes `lines` as a text file, each ended by a newline.
pub fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(path, text).unwrap();
}

pub fn python() -> String {
    std::env::var("PORTCULLIS_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "PORTCULLIS_TEST_PYTHON is not set: run the tests with `scripts/test`, which \
             installs pyarrow for the independent verifier"
        )
    })
}

/// Runs the verifier written in Python from `docs/audit-schema.md` alone; its JSON answer.
pub fn independent_verifier(dir: &Path, public_key: &Path) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/verify_manifest.py");
    let out = std::process::Command::new(python())
        .arg(script)
        .arg(dir)
        .arg(public_key)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let answer: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|_| panic!("{stdout}{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.success(), answer.get("ok").is_some(), "{answer}");
    answer
}
