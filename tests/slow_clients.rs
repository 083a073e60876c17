//! Slow and silent HTTP clients: `server.header_read_timeout_s` bounds how long a connection
//! of the API, of its Unix socket and of an HTTP proxy listener may go without a whole request
//! head — sending nothing, sending a head a byte at a time, or idling after an answer — and
//! a prompt client on a kept-alive connection is unaffected. (Also: a proxy listener whose
//! target the policy lacks is warned about at start.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use common::{free_port, start_server_with, stop_server};

/// How long the server waits for a head in this test, and how long the test waits for the
/// server to give up (generous, for a loaded machine).
const TIMEOUT_S: u64 = 1;
const PATIENCE: Duration = Duration::from_secs(20);

/// Reads until the server closes the connection; what it sent, and how long that took.
fn until_closed(stream: &mut impl Read) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(error) if error.kind() == ErrorKind::ConnectionReset => break,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the server kept a silent connection open past {PATIENCE:?}")
            }
            Err(error) => panic!("{error}"),
        }
    }
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

fn connect(addr: &str) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

#[test]
fn connections_without_a_whole_request_head_are_closed_after_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("policy");
    std::fs::create_dir(&policy).unwrap();
    std::fs::write(
        policy.join("p.gate"),
        "workload ci { oidc { sub == \"ci\" } }\n\
         target api { https { host = \"api.internal\" } }\n\
         permit ci_api { workload ci target api }\n",
    )
    .unwrap();
    let proxy_port = free_port();
    let socket = tmp.path().join("api.sock");
    let config = tmp.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nheader_read_timeout_s = {TIMEOUT_S}\nlocal_socket = {socket:?}\n\n\
             [policy]\ndir = {policy:?}\n\n\
             [[proxy.http]]\ntarget = \"api\"\nlisten = \"127.0.0.1:{proxy_port}\"\n\
             upstream = \"http://127.0.0.1:{closed}\"\n\n\
             [[proxy.http]]\ntarget = \"missing\"\nlisten = \"127.0.0.1:{other_port}\"\n\
             upstream = \"http://127.0.0.1:{closed}\"\n",
            other_port = free_port(),
            socket = socket.to_str().unwrap(),
            policy = policy.to_str().unwrap(),
            closed = free_port(),
        ),
    )
    .unwrap();
    let server = start_server_with(&config, &tmp.path().join("data"));
    let proxy = format!("127.0.0.1:{proxy_port}");
    // A listener for a target the policy lacks is said at start (not the declared one).
    let warned: Vec<&String> = server
        .startup
        .iter()
        .filter(|line| line.contains("proxy_target_not_in_policy"))
        .collect();
    assert_eq!(warned.len(), 1, "{:?}", server.startup);
    assert!(warned[0].contains("missing"), "{warned:?}");

    for addr in [server.addr.as_str(), proxy.as_str()] {
        // Silent from the start.
        let (received, waited) = until_closed(&mut connect(addr));
        assert!(received.is_empty(), "{addr}: {received}");
        assert!(
            waited >= Duration::from_millis(900),
            "{addr}: closed after {waited:?}"
        );

        // A head that never ends, a byte at a time: the deadline is for the whole head.
        let mut slow = connect(addr);
        slow.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let started = Instant::now();
        let mut closed = false;
        for byte in b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaa".iter()
        {
            if slow.write_all(&[*byte]).is_err() {
                closed = true;
                break;
            }
            let mut buf = [0u8; 64];
            match slow.read(&mut buf) {
                Ok(_) => {
                    closed = true;
                    break;
                }
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        assert!(
            closed,
            "{addr}: a trickled head held the connection {:?}",
            started.elapsed()
        );
        assert!(started.elapsed() < PATIENCE, "{addr}");

        // A prompt request is answered, and the kept-alive connection is closed once idle.
        let mut kept = connect(addr);
        kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        let (received, waited) = until_closed(&mut kept);
        assert!(received.starts_with("HTTP/1.1 "), "{addr}: {received}");
        assert!(
            waited >= Duration::from_millis(900),
            "{addr}: closed after {waited:?}"
        );
    }

    // The Unix socket too.
    let mut local = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    local.set_read_timeout(Some(PATIENCE)).unwrap();
    let (received, _) = until_closed(&mut local);
    assert!(received.is_empty(), "{received}");

    // Still serving.
    let mut again = connect(&server.addr);
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let (received, _) = until_closed(&mut again);
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    stop_server(server);
}
