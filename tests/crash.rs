//! Crash safety end to end: the real `portcullis serve` on a loopback port, several clients
//! asking for decisions at once, the server killed with SIGKILL in mid-stream at several
//! points (after a few answers, after many, while a seal is writing a segment), restarted on
//! the same data directory each time, and at last stopped cleanly. Then `portcullis audit
//! query` must find every decision whose answer a client received exactly once, and `seq`
//! must run from 1 without a gap. Also: a write-ahead log that cannot be written turns every
//! decision into a 503 deny, and `/healthz` and the server's log say why.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::*;

const CLIENTS: usize = 4;

/// What a client heard back from one request.
enum Outcome {
    /// A decision, recorded: its `event_id`.
    Answered(String),
    /// An answer without a decision record.
    Refused(u16, Value),
    /// No answer: the server is gone.
    NoAnswer,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

fn decide_body(token: &str) -> String {
    json!({
        "evidence": { "token": token },
        "target": { "name": "billing_api" },
        "request": { "action": "PUT", "resource": "/v1/deploy" },
    })
    .to_string()
}

fn try_decide(agent: &ureq::Agent, url: &str, body: &str) -> Outcome {
    let Ok(mut response) = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body)
    else {
        return Outcome::NoAnswer;
    };
    let status = response.status().as_u16();
    // A kill while the body is on its way is no answer either.
    let Ok(text) = response.body_mut().read_to_string() else {
        return Outcome::NoAnswer;
    };
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    match answer["event_id"].as_str() {
        Some(event_id) if status == 200 => Outcome::Answered(event_id.to_owned()),
        _ => Outcome::Refused(status, answer),
    }
}

/// Client threads asking for decisions until told to stop or the server is gone; every
/// answered `event_id` goes into `answered`.
struct Clients {
    answered: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Clients {
    fn start(server: &Server, token: &str) -> Clients {
        let answered = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..CLIENTS)
            .map(|_| {
                let (answered, stop) = (Arc::clone(&answered), Arc::clone(&stop));
                let url = server.url("/v1/decide");
                let body = decide_body(token);
                std::thread::spawn(move || {
                    let agent = agent();
                    while !stop.load(Ordering::Relaxed) {
                        match try_decide(&agent, &url, &body) {
                            Outcome::Answered(event_id) => answered.lock().unwrap().push(event_id),
                            Outcome::Refused(status, answer) => {
                                panic!("a decision was refused: {status} {answer}")
                            }
                            Outcome::NoAnswer => return,
                        }
                    }
                })
            })
            .collect();
        Clients {
            answered,
            stop,
            threads,
        }
    }

    fn n_answered(&self) -> usize {
        self.answered.lock().unwrap().len()
    }

    /// Waits for the clients (which end once the server is gone, or when told to) and returns
    /// what they were answered.
    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().expect("a client failed");
        }
        Arc::into_inner(self.answered)
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

/// The example configuration with `audit` settings added to its `[audit]` table, and the
/// policy files not watched.
fn config(dir: &Path, audit: &str) -> PathBuf {
    let policy = format!(
        "dir = \"{}\"\nwatch_interval_ms = 0",
        repo().join("examples/policies").display()
    );
    let path = example_config(dir, "portcullis.toml", &policy, "");
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("[audit]\n"));
    fs::write(
        &path,
        text.replace("[audit]\n", &format!("[audit]\n{audit}\n")),
    )
    .unwrap();
    path
}

fn kill(mut server: Server) {
    server.child.kill().unwrap(); // SIGKILL: no shutdown, no seal, no sync
    server.child.wait().unwrap();
}

/// Waits until `ready` holds, checking every fifth of a millisecond (a seal in a debug build
/// writes its segment for a few milliseconds); fails after 60 s.
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Whether a segment is being written: a seal is under way.
fn seal_in_progress(data_dir: &Path) -> bool {
    let Ok(partitions) = fs::read_dir(data_dir.join("events")) else {
        return false;
    };
    partitions.flatten().any(|partition| {
        fs::read_dir(partition.path()).is_ok_and(|files| {
            files
                .flatten()
                .any(|file| file.file_name().to_string_lossy().ends_with(".parquet.tmp"))
        })
    })
}

/// One round: start the server with `audit` settings, let the clients run until `kill_when`
/// holds, kill the server; returns what was answered.
fn round(
    tmp: &Path,
    data_dir: &Path,
    token: &str,
    audit: &str,
    kill_when: &dyn Fn(&Clients) -> bool,
) -> Vec<String> {
    let server = start_server_with(&config(tmp, audit), data_dir);
    let clients = Clients::start(&server, token);
    wait_until("the kill point", || kill_when(&clients));
    kill(server);
    let answered = clients.finish();
    eprintln!("killed the server after {} answers", answered.len());
    answered
}

#[test]
fn killed_servers_lose_no_answered_decision_and_record_none_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let token = mint(
        GITHUB_KEY,
        &example_claims("billing-release.json"),
        tmp.path(),
    );
    // Small log files, so that seals happen all the time; the first rounds only write (a
    // killed process keeps what it wrote), the third syncs every answer.
    let written_only = "flush_interval_ms = 50\nseal_after_events = 100";
    let synced = "flush_interval_ms = 0\nseal_after_events = 100";

    let mut answered = Vec::new();
    answered.extend(round(tmp.path(), &data_dir, &token, written_only, &|c| {
        c.n_answered() >= 50
    }));
    answered.extend(round(tmp.path(), &data_dir, &token, written_only, &|c| {
        c.n_answered() >= 500
    }));
    let data = data_dir.clone();
    answered.extend(round(tmp.path(), &data_dir, &token, synced, &move |c| {
        c.n_answered() >= 150 && seal_in_progress(&data)
    }));

    // The last start recovers, answers a few more, and stops cleanly.
    let server = start_server_with(&config(tmp.path(), synced), &data_dir);
    let agent = agent();
    for _ in 0..5 {
        match try_decide(&agent, &server.url("/v1/decide"), &decide_body(&token)) {
            Outcome::Answered(event_id) => answered.push(event_id),
            Outcome::Refused(status, answer) => panic!("refused: {status} {answer}"),
            Outcome::NoAnswer => panic!("no answer"),
        }
    }
    stop_server(server);

    check_store(&data_dir, &answered);
}

/// Every answered decision is in the store once; `seq` runs from 1 without a gap or a repeat.
fn check_store(data_dir: &Path, answered: &[String]) {
    let rows = audit_query(
        data_dir,
        "SELECT event_id, seq, node, kind FROM access_events ORDER BY seq",
    );
    let seqs: Vec<u64> = rows
        .iter()
        .map(|row| row["seq"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=rows.len() as u64).collect();
    assert!(seqs == expected, "seq has gaps or repeats: {seqs:?}");
    let nodes: BTreeSet<&str> = rows
        .iter()
        .map(|row| row["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes.len(), 1, "{nodes:?}");

    let mut stored = HashSet::new();
    for row in &rows {
        let event_id = row["event_id"].as_str().unwrap();
        assert!(stored.insert(event_id), "event {event_id} is stored twice");
    }
    let missing: Vec<&String> = answered
        .iter()
        .filter(|id| !stored.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered decisions are not in the store: {missing:?}",
        missing.len(),
        answered.len()
    );
    let starts = rows
        .iter()
        .filter(|row| row["kind"] == "policy_change")
        .count();
    assert_eq!(starts, 4, "one policy change per start");
    assert!(answered.len() >= 705, "{} answered", answered.len());
}

#[test]
fn a_log_that_cannot_be_written_denies_every_decision_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let token = mint(
        GITHUB_KEY,
        &example_claims("billing-release.json"),
        tmp.path(),
    );
    let config = config(tmp.path(), "seal_after_events = 5");
    let server = start_server_with(&config, &data_dir);
    // Event 1 is the policy taking effect; the log file rolls after event 5. A directory where
    // the next log file goes makes that fail, for root too.
    let in_the_way = data_dir.join("wal").join("00000000000000000006.wal");
    fs::create_dir(&in_the_way).unwrap();

    let agent = agent();
    let url = server.url("/v1/decide");
    for _ in 0..4 {
        let outcome = try_decide(&agent, &url, &decide_body(&token));
        assert!(matches!(outcome, Outcome::Answered(_)));
    }
    let Outcome::Refused(status, answer) = try_decide(&agent, &url, &decide_body(&token)) else {
        panic!("a decision was answered without its record");
    };
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["decision"], "deny", "{answer}");
    assert_eq!(answer["reason_code"], "audit_unavailable", "{answer}");
    // The same fields as any answer: who asked for what, no rule, no credential, no event.
    assert!(answer["workload"].is_string(), "{answer}");
    assert!(answer["target"].is_string(), "{answer}");
    assert!(answer["trust_provider"].is_string(), "{answer}");
    assert!(
        answer["bundle"].as_str().unwrap().starts_with("sha256:"),
        "{answer}"
    );
    for absent in ["rule", "credential", "event_id"] {
        assert!(answer[absent].is_null(), "{absent}: {answer}");
    }

    let mut response = agent.get(&server.url("/healthz")).call().unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let health: Value =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(health["status"], "unavailable", "{health}");
    let why = health["audit"].as_str().unwrap();
    assert!(why.contains(&in_the_way.display().to_string()), "{why}");
    let logged = server.wait_for_log("audit_log_stopped");
    assert!(logged.contains("cannot create"), "{logged}");

    // A clean stop still seals what was written.
    stop_server(server);
    let rows = audit_query(&data_dir, "SELECT seq FROM access_events ORDER BY seq");
    assert_eq!(rows.len(), 5, "{rows:?}");
}
