//! The PostgreSQL proxy with a real server: `psql` and the Rust `postgres` driver connect
//! through `portcullis serve` with their platform's token as the password, run queries as the
//! role the policy's credential makes (the server sees only that role), and are refused with
//! SQLSTATE 28000 when the policy denies. One listener offers clients TLS, one reaches its
//! upstream over TLS, one issues a credential per connection. A running query is cancelled
//! through the proxy with the key the proxy gave; the upstream's own key never reaches the
//! client.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::issuing::{ISSUER, token, write_jwks};
use common::postgres::{ADMIN_PASSWORD, Postgres, ServerTls, prepared};
use common::{
    Server, audit_query, event_rows, eventually, free_port, start_server_with, stop_server,
};

struct Setup {
    server: Server,
    /// Plain both ways, credentials reused for the default 60 s.
    plain: u16,
    /// TLS offered to clients.
    tls: u16,
    /// `credential_reuse_s = 0`: a credential per connection.
    no_reuse: u16,
    /// TLS to the upstream, verified against the tests' CA; for a cluster with TLS on.
    tls_upstream: u16,
}

fn start(dir: &Path, pg: &Postgres) -> Setup {
    let jwks = write_jwks(dir);
    let password = dir.join("pg-admin.password");
    std::fs::write(&password, format!("{ADMIN_PASSWORD}\n")).unwrap();
    let policy = dir.join("policy");
    std::fs::create_dir_all(&policy).unwrap();
    std::fs::write(
        policy.join("billing.gate"),
        format!(
            "workload reporting {{ oidc {{ sub == \"ci-runner\" }} }}\n\
             target billing_db {{ postgres {{ host = \"127.0.0.1\" port = {port} \
             database = \"billing\" }} }}\n\
             credential billing_reader {{ postgres_role {{ grant = [\"invoices_reader\"] \
             ttl = 5m }} }}\n\
             permit reporting_reads_billing {{ workload reporting target billing_db \
             credential billing_reader when request.action == \"connect\" }}\n",
            port = pg.port,
        ),
    )
    .unwrap();
    let (plain, tls, no_reuse, tls_upstream) = (free_port(), free_port(), free_port(), free_port());
    let fixtures = common::repo().join("tests/fixtures/tls");
    let config = dir.join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[policy]\ndir = {policy:?}\n\n\
             [[credentials.postgres]]\ntarget = \"billing_db\"\nhost = \"127.0.0.1\"\n\
             port = {port}\ndatabase = \"billing\"\nadmin_user = \"portcullis_admin\"\n\
             admin_password_file = {password:?}\n\n\
             [[proxy.postgres]]\ntarget = \"billing_db\"\nlisten = \"127.0.0.1:{plain}\"\n\
             upstream_host = \"127.0.0.1\"\nupstream_port = {port}\n\n\
             [[proxy.postgres]]\ntarget = \"billing_db\"\nlisten = \"127.0.0.1:{tls}\"\n\
             upstream_host = \"127.0.0.1\"\nupstream_port = {port}\n\
             tls_cert_file = {cert:?}\ntls_key_file = {key:?}\n\n\
             [[proxy.postgres]]\ntarget = \"billing_db\"\nlisten = \"127.0.0.1:{no_reuse}\"\n\
             upstream_host = \"127.0.0.1\"\nupstream_port = {port}\ncredential_reuse_s = 0\n\n\
             [[proxy.postgres]]\ntarget = \"billing_db\"\nlisten = \"127.0.0.1:{tls_upstream}\"\n\
             upstream_host = \"127.0.0.1\"\nupstream_port = {port}\n\
             upstream_tls = \"verify-full\"\nca_file = {ca:?}\n\n\
             [[trust_providers]]\nname = \"ci-idp\"\nkind = \"oidc\"\nissuer = \"{ISSUER}\"\n\
             audiences = [\"portcullis\"]\njwks_file = {jwks:?}\n",
            policy = policy.to_str().unwrap(),
            port = pg.port,
            password = password.to_str().unwrap(),
            cert = fixtures.join("localhost.pem").to_str().unwrap(),
            key = fixtures.join("localhost.key.pem").to_str().unwrap(),
            ca = fixtures.join("ca.pem").to_str().unwrap(),
            jwks = jwks.to_str().unwrap(),
        ),
    )
    .unwrap();
    Setup {
        server: start_server_with(&config, &dir.join("data")),
        plain,
        tls,
        no_reuse,
        tls_upstream,
    }
}

/// The Rust driver's connection string for the listener on `port`.
fn conninfo(port: u16, database: &str, password: &str) -> String {
    format!(
        "host=127.0.0.1 port={port} user=alice dbname={database} password={password} \
         sslmode=disable connect_timeout=10"
    )
}

fn output(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn psql_and_a_driver_connect_with_a_token_and_are_refused_with_28000() {
    let pg = prepared(Postgres::start());
    let tmp = tempfile::tempdir().unwrap();
    let setup = start(tmp.path(), &pg);
    let caller = token("ci-runner", 300);

    // psql, its token as the password: the session runs as the role the credential made.
    let uri = format!(
        "postgresql://alice:{caller}@127.0.0.1:{}/billing?sslmode=disable",
        setup.plain
    );
    let out = pg.psql_uri(&uri, "SELECT current_user, sum(amount) FROM invoices");
    let (stdout, stderr) = output(&out);
    assert!(out.status.success(), "{stderr}");
    let (role, total) = stdout.trim().split_once('|').unwrap();
    assert!(
        role.starts_with("portcullis_") && role != "alice",
        "{stdout}"
    );
    assert_eq!(total, "350");
    // The role may read and nothing more.
    let out = pg.psql_uri(&uri, "INSERT INTO invoices VALUES (3, 1)");
    let (_, stderr) = output(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("permission denied"), "{stderr}");

    // The Rust driver, the same way.
    let conninfo = |database: &str, password: &str| conninfo(setup.plain, database, password);
    let mut client =
        postgres::Client::connect(&conninfo("billing", &caller), postgres::NoTls).unwrap();
    let total: i64 = client
        .query_one("SELECT sum(amount) FROM invoices", &[])
        .unwrap()
        .get(0);
    assert_eq!(total, 350);
    drop(client);

    // Refused: a database other than the target's, and a token that does not verify. The
    // client gets SQLSTATE 28000 with the reason, not a dropped socket.
    for (database, password, says) in [
        (
            "postgres",
            caller.as_str(),
            "a database other than `billing`",
        ),
        ("billing", "not-a-token", "token"),
    ] {
        let error = postgres::Client::connect(&conninfo(database, password), postgres::NoTls)
            .err()
            .unwrap();
        let db = error.as_db_error().unwrap_or_else(|| panic!("{error}"));
        assert_eq!(
            db.code(),
            &postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        );
        assert!(
            db.message().contains("access denied by Portcullis"),
            "{}",
            db.message()
        );
        assert!(
            db.message().to_lowercase().contains(says),
            "{}",
            db.message()
        );
    }
    let denied = format!(
        "postgresql://alice:{caller}@127.0.0.1:{}/postgres?sslmode=disable",
        setup.plain
    );
    let out = pg.psql_uri(&denied, "SELECT 1");
    let (_, stderr) = output(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("access denied by Portcullis"), "{stderr}");

    // TLS from psql to the proxy, the proxy's certificate verified against the tests' CA.
    let ca = common::repo().join("tests/fixtures/tls/ca.pem");
    let verified = format!(
        "host=127.0.0.1 port={} user=alice dbname=billing password={caller} \
         sslmode=verify-full sslrootcert={}",
        setup.tls,
        ca.display()
    );
    let out = pg.psql_uri(&verified, "SELECT count(*) FROM invoices");
    let (stdout, stderr) = output(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "2");

    // Each session set up is timed for `GET /metrics`; refused ones are not.
    let mut metrics = ureq::get(&setup.server.url("/metrics")).call().unwrap();
    let text = metrics.body_mut().read_to_string().unwrap();
    let sessions: u64 = text
        .lines()
        .find_map(|line| {
            line.strip_prefix("portcullis_proxy_seconds_count{protocol=\"postgres\"} ")
        })
        .unwrap_or_else(|| panic!("no postgres session time in:\n{text}"))
        .parse()
        .unwrap();
    assert!(sessions >= 2, "{sessions}: {text}");

    stop_server(setup.server);
    // Each session that got through is a `connection_closed` event when it ends, with its
    // duration and the bytes each way.
    let closed = audit_query(
        &tmp.path().join("data"),
        "SELECT resource, duration_ms, bytes_from_client, bytes_to_client, workload \
         FROM access_events WHERE kind = 'connection_closed' ORDER BY seq",
    );
    assert_eq!(closed.len(), 4, "{closed:#?}");
    for row in &closed {
        assert_eq!(row["resource"], "billing/alice", "{row}");
        assert_eq!(row["workload"], "reporting", "{row}");
        assert!(row["duration_ms"].as_i64().is_some(), "{row}");
        assert!(row["bytes_from_client"].as_i64().unwrap() > 0, "{row}");
        assert!(row["bytes_to_client"].as_i64().unwrap() > 0, "{row}");
    }
    let rows = event_rows(
        &tmp.path().join("data"),
        &["action", "resource", "reason_code"],
        "kind IN ('decision', 'attestation_failed')",
    );
    assert_eq!(
        rows,
        [
            "connect billing/alice permitted",
            "connect billing/alice permitted",
            "connect billing/alice permitted",
            "connect postgres/alice database_mismatch",
            "connect billing/alice token_malformed",
            "connect postgres/alice database_mismatch",
            "connect billing/alice permitted",
        ],
        "{rows:#?}"
    );
}

/// Sends `cancel` every 200 ms, from a thread of its own, until `query` returns: a cancel that
/// arrives before the query runs does nothing, so one is sent until one lands. The last one has
/// been handled when this returns; one that reaches an idle session does nothing.
fn cancelling<T>(cancel: impl Fn() + Send + 'static, query: impl FnOnce() -> T) -> T {
    let done = Arc::new(AtomicBool::new(false));
    let canceller = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(200));
                if done.load(Ordering::SeqCst) {
                    return;
                }
                cancel();
            }
        })
    };
    let result = query();
    done.store(true, Ordering::SeqCst);
    canceller.join().unwrap();
    result
}

#[test]
fn a_running_query_is_cancelled_through_the_proxy() {
    let pg = prepared(Postgres::start_with(&ServerTls::On { reject_plain: &[] }));
    let tmp = tempfile::tempdir().unwrap();
    let setup = start(tmp.path(), &pg);
    let caller = token("ci-runner", 300);

    // Through a listener whose upstream is plain, and one whose upstream is TLS: the cancel
    // request goes to the upstream the way the session did.
    for port in [setup.plain, setup.tls_upstream] {
        let mut client =
            postgres::Client::connect(&conninfo(port, "billing", &caller), postgres::NoTls)
                .unwrap();
        let token = client.cancel_token();
        let started = Instant::now();
        let error = cancelling(
            move || token.cancel_query(postgres::NoTls).unwrap(),
            || client.batch_execute("SELECT pg_sleep(30)").unwrap_err(),
        );
        assert_eq!(
            error.code(),
            Some(&postgres::error::SqlState::QUERY_CANCELED),
            "{error}"
        );
        assert!(started.elapsed() < Duration::from_secs(15), "{port}");
        // Only the query was cancelled; the session goes on.
        let one: i32 = client.query_one("SELECT 1", &[]).unwrap().get(0);
        assert_eq!(one, 1);
    }
    setup.server.wait_for_log("postgres_proxy_cancel_forwarded");
    stop_server(setup.server);
}

/// A session spoken by hand, to see the key the proxy hands the client and to present keys
/// of one's own.
struct RawSession {
    stream: TcpStream,
    pid: i32,
    secret: [u8; 4],
}

impl RawSession {
    fn connect(port: u16, token: &str) -> RawSession {
        let (session, negotiated) = RawSession::connect_as(port, token, 196_608, b"");
        assert_eq!(negotiated, None);
        session
    }

    /// Connects asking for protocol `version` (major << 16 | minor) with the startup
    /// parameters `extra` besides user and database; gives the NegotiateProtocolVersion body,
    /// if the proxy sent one.
    fn connect_as(
        port: u16,
        token: &str,
        version: u32,
        extra: &[u8],
    ) -> (RawSession, Option<Vec<u8>>) {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut body = version.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0alice\0database\0billing\0");
        body.extend_from_slice(extra);
        body.push(0);
        let mut startup = u32::try_from(body.len() + 4)
            .unwrap()
            .to_be_bytes()
            .to_vec();
        startup.extend(body);
        stream.write_all(&startup).unwrap();
        let (mut kind, mut body) = read_message(&mut stream);
        let mut negotiated = None;
        if kind == b'v' {
            negotiated = Some(body);
            (kind, body) = read_message(&mut stream);
        }
        assert_eq!((kind, body.as_slice()), (b'R', &3_u32.to_be_bytes()[..]));
        stream
            .write_all(&typed(b'p', format!("{token}\0").as_bytes()))
            .unwrap();
        let (kind, body) = read_message(&mut stream);
        assert_eq!((kind, body.as_slice()), (b'R', &0_u32.to_be_bytes()[..]));
        let mut session = RawSession {
            stream,
            pid: 0,
            secret: [0; 4],
        };
        let keys: Vec<Vec<u8>> = session
            .until_ready()
            .into_iter()
            .filter(|(kind, _)| *kind == b'K')
            .map(|(_, body)| body)
            .collect();
        let [key] = keys.as_slice() else {
            panic!("{} BackendKeyData messages", keys.len())
        };
        session.pid = i32::from_be_bytes(key[..4].try_into().unwrap());
        session.secret = key[4..].try_into().unwrap();
        (session, negotiated)
    }

    fn query(&mut self, sql: &str) {
        let text = format!("{sql}\0");
        self.stream
            .write_all(&typed(b'Q', text.as_bytes()))
            .unwrap();
    }

    /// The messages until the proxy closes the connection.
    fn until_closed(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut messages = Vec::new();
        loop {
            let mut head = [0_u8; 5];
            match self.stream.read_exact(&mut head) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return messages;
                }
                Err(error) => panic!("{error} after {messages:?}"),
            }
            let length = u32::from_be_bytes(head[1..].try_into().unwrap());
            let mut body = vec![0; usize::try_from(length).unwrap() - 4];
            self.stream.read_exact(&mut body).unwrap();
            messages.push((head[0], body));
        }
    }

    /// The messages up to and including ReadyForQuery.
    fn until_ready(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut messages = Vec::new();
        loop {
            let (kind, body) = read_message(&mut self.stream);
            messages.push((kind, body));
            if kind == b'Z' {
                return messages;
            }
        }
    }
}

fn typed(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut message = vec![kind];
    message.extend(u32::try_from(body.len() + 4).unwrap().to_be_bytes());
    message.extend_from_slice(body);
    message
}

fn read_message(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0_u8; 5];
    stream.read_exact(&mut head).unwrap();
    let length = u32::from_be_bytes(head[1..].try_into().unwrap());
    let mut body = vec![0; usize::try_from(length).unwrap() - 4];
    stream.read_exact(&mut body).unwrap();
    (head[0], body)
}

/// The first column of the first DataRow, as text.
fn first_value(messages: &[(u8, Vec<u8>)]) -> String {
    let (_, row) = messages.iter().find(|(kind, _)| *kind == b'D').unwrap();
    let length = i32::from_be_bytes(row[2..6].try_into().unwrap());
    String::from_utf8(row[6..6 + usize::try_from(length).unwrap()].to_vec()).unwrap()
}

/// The SQLSTATE of the ErrorResponse among `messages`, if there is one.
fn sqlstate(messages: &[(u8, Vec<u8>)]) -> Option<String> {
    let (_, error) = messages.iter().find(|(kind, _)| *kind == b'E')?;
    error
        .split(|byte| *byte == 0)
        .find_map(|field| field.strip_prefix(b"C"))
        .map(|code| String::from_utf8(code.to_vec()).unwrap())
}

/// A CancelRequest for `pid` and `secret` to the listener on `port`; returns when the proxy
/// closes the connection, as it does once it has handled the request.
fn cancel_request(port: u16, pid: i32, secret: [u8; 4]) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut packet = 16_u32.to_be_bytes().to_vec();
    packet.extend(80_877_102_u32.to_be_bytes());
    packet.extend(pid.to_be_bytes());
    packet.extend(secret);
    stream.write_all(&packet).unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}

/// A client that asks for a later minor version of protocol 3, or for protocol options, is
/// told with NegotiateProtocolVersion that the proxy speaks 3.0 without them, as PostgreSQL
/// tells it, and goes on in 3.0; the options do not reach the upstream.
#[test]
fn a_later_protocol_version_is_negotiated_down_to_3_0() {
    let pg = prepared(Postgres::start());
    let tmp = tempfile::tempdir().unwrap();
    let setup = start(tmp.path(), &pg);
    let caller = token("ci-runner", 300);
    let three_two = (3 << 16) | 2;
    for (version, extra, options) in [
        (three_two, &b""[..], &[][..]),
        (
            three_two,
            &b"_pq_.compression\0on\0"[..],
            &["_pq_.compression"][..],
        ),
        (
            196_608,
            &b"_pq_.x\0y\0application_name\0trial\0"[..],
            &["_pq_.x"][..],
        ),
    ] {
        let (mut session, negotiated) =
            RawSession::connect_as(setup.plain, &caller, version, extra);
        let negotiated = negotiated.expect("a NegotiateProtocolVersion message");
        let mut expected = 0_u32.to_be_bytes().to_vec();
        expected.extend(u32::try_from(options.len()).unwrap().to_be_bytes());
        for option in options {
            expected.extend_from_slice(option.as_bytes());
            expected.push(0);
        }
        assert_eq!(negotiated, expected, "{version:#x}");
        session.query("SELECT current_database()");
        assert_eq!(first_value(&session.until_ready()), "billing");
    }
    stop_server(setup.server);
}

#[test]
fn the_client_gets_a_key_of_the_proxys_and_only_that_key_cancels() {
    let pg = prepared(Postgres::start());
    let tmp = tempfile::tempdir().unwrap();
    let setup = start(tmp.path(), &pg);

    // A startup message without a user, and a malformed one, are answered in the protocol.
    for (body, code, text) in [
        (&b"database\0billing\0\0"[..], "28000", "names no user"),
        (
            &b"user\0alice\0database\0billing/alice\0\0"[..],
            "3D000",
            "name contains `/`",
        ),
        (
            &b"user\0alice\nforged\0database\0billing\0\0"[..],
            "08P01",
            "`user` holds a control character",
        ),
        (&b"user\0alice"[..], "08P01", "malformed startup message"),
    ] {
        let mut stream = TcpStream::connect(("127.0.0.1", setup.plain)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut startup = u32::try_from(body.len() + 8)
            .unwrap()
            .to_be_bytes()
            .to_vec();
        startup.extend(196_608_u32.to_be_bytes());
        startup.extend_from_slice(body);
        stream.write_all(&startup).unwrap();
        let error = read_message(&mut stream);
        assert_eq!(error.0, b'E');
        assert_eq!(
            sqlstate(std::slice::from_ref(&error)).as_deref(),
            Some(code)
        );
        assert!(
            String::from_utf8_lossy(&error.1).contains(text),
            "{error:?}"
        );
    }
    let caller = token("ci-runner", 300);
    let mut session = RawSession::connect(setup.plain, &caller);

    // The key the client holds is not the upstream backend's.
    session.query("SELECT pg_backend_pid()");
    let backend: i32 = first_value(&session.until_ready()).parse().unwrap();
    assert!(session.pid > 0);
    assert_ne!(session.pid, backend);

    // A wrong secret, and the backend's real pid, cancel nothing: the query runs its course.
    session.query("SELECT pg_sleep(2)");
    let mut wrong = session.secret;
    wrong[3] ^= 1;
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(200));
        cancel_request(setup.plain, session.pid, wrong);
        cancel_request(setup.plain, backend, session.secret);
    }
    let finished = session.until_ready();
    assert_eq!(sqlstate(&finished), None, "{finished:?}");
    // Dropped, and logged with the pid it named but not the secret.
    let unmatched = setup.server.wait_for_log("postgres_proxy_cancel_unmatched");
    assert!(
        unmatched.contains(&format!("pid={}", session.pid)),
        "{unmatched}"
    );
    assert!(!unmatched.contains("secret"), "{unmatched}");

    // The key the proxy gave cancels.
    let (pid, secret) = (session.pid, session.secret);
    let plain = setup.plain;
    session.query("SELECT pg_sleep(30)");
    let started = Instant::now();
    let cancelled = cancelling(
        move || cancel_request(plain, pid, secret),
        || session.until_ready(),
    );
    assert_eq!(
        sqlstate(&cancelled).as_deref(),
        Some("57014"),
        "{cancelled:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));

    // Once the session has ended its key matches nothing.
    drop(session);
    std::thread::sleep(Duration::from_millis(500));
    cancel_request(setup.plain, pid, secret);
    let log = stop_server(setup.server);
    let unmatched = log
        .iter()
        .filter(|line| line.contains("postgres_proxy_cancel_unmatched"))
        .count();
    // The seven wrong ones not read above, and the one after the session ended.
    assert_eq!(unmatched, 8, "{log:#?}");
}

/// The roles `postgres_role` credentials made on `pg`.
fn issued_roles(pg: &Postgres) -> usize {
    pg.sql(
        "postgres",
        "SELECT count(*) FROM pg_roles WHERE rolname ~ '^portcullis_[0-9a-f]{16}$'",
    )
    .parse()
    .unwrap()
}

/// `SELECT current_user` through the listener on `port`, as the caller of `token`.
fn connected_as(port: u16, token: &str) -> String {
    let mut client =
        postgres::Client::connect(&conninfo(port, "billing", token), postgres::NoTls).unwrap();
    client
        .query_one("SELECT current_user::text", &[])
        .unwrap()
        .get(0)
}

#[test]
fn connections_with_one_token_share_a_role_unless_reuse_is_off() {
    let pg = prepared(Postgres::start());
    let tmp = tempfile::tempdir().unwrap();
    let setup = start(tmp.path(), &pg);
    let caller = token("ci-runner", 300);

    // A pool reconnecting with the same token: one role.
    let first = connected_as(setup.plain, &caller);
    let second = connected_as(setup.plain, &caller);
    assert_eq!(first, second);
    assert!(first.starts_with("portcullis_"), "{first}");
    assert_eq!(issued_roles(&pg), 1);

    // Another token is another caller's evidence: a role of its own.
    let other = token("ci-runner", 301);
    assert_ne!(connected_as(setup.plain, &other), first);
    assert_eq!(issued_roles(&pg), 2);

    // `credential_reuse_s = 0`: a role per connection.
    let third = connected_as(setup.no_reuse, &caller);
    let fourth = connected_as(setup.no_reuse, &caller);
    assert_ne!(third, fourth);
    assert_ne!(third, first);
    assert_eq!(issued_roles(&pg), 4);

    stop_server(setup.server);
    // Every connection is decided and recorded; only the issuance is spared.
    let kinds = event_rows(
        &tmp.path().join("data"),
        &["kind", "reason_code"],
        "kind IN ('decision', 'credential_issued')",
    );
    assert_eq!(
        kinds,
        [
            "decision permitted",
            "credential_issued credential_issued",
            "decision permitted",
            "decision permitted",
            "credential_issued credential_issued",
            "decision permitted",
            "credential_issued credential_issued",
            "decision permitted",
            "credential_issued credential_issued",
        ],
        "{kinds:#?}"
    );
}

/// Sessions still running when the server stops past its grace period are cut off, their
/// queries cancelled in the upstream first. A client between messages is told so as
/// PostgreSQL tells it at shutdown (FATAL, SQLSTATE 57P01) and its upstream session is
/// terminated; a client that stops reading a large result is dropped. Both end in a
/// `connection_closed` event that says so.
#[test]
fn sessions_cut_off_at_shutdown_are_told_and_still_end_in_events() {
    let pg = prepared(Postgres::start());
    let tmp = tempfile::tempdir().unwrap();
    let setup = start(tmp.path(), &pg);
    let caller = token("ci-runner", 300);
    let mut sleeper = RawSession::connect(setup.plain, &caller);
    let mut hoarder = RawSession::connect(setup.plain, &caller);
    sleeper.query("SELECT pg_sleep(60)");
    // Far more rows than the sockets between hold; none of them is read.
    hoarder.query("SELECT repeat('x', 10000) FROM generate_series(1, 1000000) AS hoarded");
    let running = |sql: &str| {
        pg.sql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE query = '{sql}' \
                 AND pid <> pg_backend_pid()"
            ),
        )
    };
    let sleeping = || running("SELECT pg_sleep(60)");
    eventually("the query runs upstream", || {
        (sleeping() == "1").then_some(())
    });
    let started = std::time::Instant::now();
    let listening = std::thread::spawn(move || (sleeper.until_closed(), sleeper));
    let log = stop_server(setup.server);
    // Not left to run its minute out in the server after its client is gone.
    assert_eq!(sleeping(), "0", "{log:#?}");
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
    let (messages, _) = listening.join().unwrap();
    // Told of the shutdown, and of nothing else: not of the cancel the proxy sent after.
    let errors: Vec<_> = messages.iter().filter(|(kind, _)| *kind == b'E').collect();
    assert_eq!(errors.len(), 1, "{messages:?}");
    let (last, body) = messages.last().unwrap();
    assert_eq!(*last, b'E', "{messages:?}");
    let fields: Vec<&[u8]> = body.split(|byte| *byte == 0).collect();
    assert!(fields.contains(&&b"SFATAL"[..]), "{messages:?}");
    assert!(fields.contains(&&b"C57P01"[..]), "{messages:?}");
    // The hoarder's backend does not stay behind either.
    let hoarded = "SELECT repeat(''x'', 10000) FROM generate_series(1, 1000000) AS hoarded";
    eventually("the unread query's backend ends", || {
        (running(hoarded) == "0").then_some(())
    });
    drop(hoarder);
    assert!(
        log.iter()
            .filter(|line| line.contains("postgres_proxy_session_cut_off"))
            .count()
            == 2,
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|line| line.contains("postgres_proxy_sessions_cut_off")
                && line.contains("cancelled=2")),
        "{log:#?}"
    );
    let closed = audit_query(
        &tmp.path().join("data"),
        "SELECT resource, reason_code, duration_ms, bytes_from_client, bytes_to_client \
         FROM access_events WHERE kind = 'connection_closed' ORDER BY bytes_to_client NULLS FIRST",
    );
    assert_eq!(closed.len(), 2, "{closed:#?}");
    for row in &closed {
        assert_eq!(row["resource"], "billing/alice");
        assert_eq!(row["reason_code"], "cut_off");
        assert!(row["duration_ms"].as_i64().unwrap() >= 500);
    }
    // Dropped unfinished: the bytes are not known ...
    assert!(closed[0]["bytes_from_client"].is_null(), "{closed:#?}");
    // ... told and ended by the relay: the query went up, the farewell came down.
    let query_bytes = 5 + "SELECT pg_sleep(60)".len() as i64 + 1;
    assert_eq!(closed[1]["bytes_from_client"], query_bytes, "{closed:#?}");
    assert!(
        closed[1]["bytes_to_client"].as_i64().unwrap() > 0,
        "{closed:#?}"
    );
}
