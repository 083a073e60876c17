//! Local processes on `portcullis serve`'s Unix socket: this test process connects, is
//! attested from its peer credentials and `/proc` (its uid, its executable and the
//! executable's SHA-256), and is allowed or refused by policies written about exactly that.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]
#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use common::{audit_query, start_server_with, stop_server};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// `POST path` with `body` over the Unix socket at `socket`; the status and the JSON answer.
fn post_local(socket: &Path, path: &str, body: &Value) -> (u16, Value) {
    let mut stream = UnixStream::connect(socket).unwrap();
    let body = body.to_string();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// The effective uid of this process, from `/proc/self/status`.
fn my_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("Uid:"))
        .unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn a_local_process_is_attested_by_its_connection_and_decided_on_its_executable() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let exe_sha256 = hex_digest(&std::fs::read(&exe).unwrap());
    let policy = tmp.path().join("policy");
    std::fs::create_dir(&policy).unwrap();
    std::fs::write(
        policy.join("local.gate"),
        format!(
            "workload this_test {{ process {{ uid == {uid} \
             && exe_sha256 == \"{exe_sha256}\" }} }}\n\
             workload some_tool {{ process {{ exe == \"/usr/local/bin/some-tool\" }} }}\n\
             target cache {{ https {{ host = \"cache.internal\" }} }}\n\
             target vault {{ https {{ host = \"vault.internal\" }} }}\n\
             credential cache_token {{ jwt {{ audience = \"cache\" ttl = 5m }} }}\n\
             permit this_test_cache {{ workload this_test target cache credential cache_token }}\n\
             permit tool_vault {{ workload some_tool target vault }}\n",
            uid = my_uid(),
        ),
    )
    .unwrap();
    let socket = tmp.path().join("portcullis.sock");
    let config = tmp.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlocal_socket = {socket:?}\n\n[policy]\ndir = {policy:?}\n",
            socket = socket.to_str().unwrap(),
            policy = policy.to_str().unwrap(),
        ),
    )
    .unwrap();
    let server = start_server_with(&config, &tmp.path().join("data"));
    assert!(
        server
            .startup
            .iter()
            .any(|line| line.contains("local_socket=") && line.contains("portcullis.sock")),
        "{:?}",
        server.startup
    );

    let ask = |target: &str| json!({ "target": { "name": target } });
    let (status, answer) = post_local(&socket, "/v1/decide", &ask("cache"));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["decision"], "allow", "{answer}");
    assert_eq!(answer["workload"], "this_test");
    assert_eq!(answer["trust_provider"], "local-process");
    // Another executable's grant is not this process's.
    let (_, answer) = post_local(&socket, "/v1/decide", &ask("vault"));
    assert_eq!(answer["decision"], "deny", "{answer}");
    assert_eq!(answer["reason_code"], "no_permit", "{answer}");
    // A credential, to the process alone.
    let (status, answer) = post_local(&socket, "/v1/credentials", &ask("cache"));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["credential"]["kind"], "jwt");
    // A token on the socket is refused: the connection is the evidence.
    let with_token = json!({ "evidence": { "token": "x" }, "target": { "name": "cache" } });
    let (status, answer) = post_local(&socket, "/v1/decide", &with_token);
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("send no `evidence`"),
        "{answer}"
    );
    // Over TCP the same body without evidence is refused too.
    let (status, answer) = common::post_json(&server, "/v1/decide", &ask("cache"));
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("`evidence` is required"),
        "{answer}"
    );

    // A second server with the same socket refuses to start rather than take it over.
    let out = common::portcullis()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(tmp.path().join("data-second"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another server listens on it"), "{stderr}");
    let (status, _) = post_local(&socket, "/v1/decide", &ask("cache"));
    assert_eq!(status, 200, "the first server still answers on its socket");

    stop_server(server);
    assert!(!socket.exists(), "the socket is removed at stop");
    let rows = audit_query(
        &tmp.path().join("data"),
        "SELECT workload, trust_provider, subject, claims, source_ip FROM access_events \
         WHERE kind = 'decision' ORDER BY seq",
    );
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(rows[0]["trust_provider"], "local-process");
    assert_eq!(rows[0]["source_ip"], Value::Null);
    let subject = rows[0]["subject"].as_str().unwrap();
    assert!(
        subject.starts_with(&format!("uid:{}/pid:", my_uid())),
        "{subject}"
    );
    let claims: Value = serde_json::from_str(rows[0]["claims"].as_str().unwrap()).unwrap();
    assert_eq!(claims["exe"], exe.to_str().unwrap());
    assert_eq!(claims["exe_sha256"], exe_sha256.as_str());
}

#[test]
fn a_path_that_is_not_a_socket_is_never_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("important.txt");
    std::fs::write(&file, "keep me").unwrap();
    let config = tmp.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlocal_socket = {file:?}\n\n[policy]\ndir = {policy:?}\n",
            file = file.to_str().unwrap(),
            policy = common::repo().join("examples/policies").to_str().unwrap(),
        ),
    )
    .unwrap();
    let out = common::portcullis()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exists and is not a socket"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

fn hex_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
