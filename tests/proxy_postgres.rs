//! The PostgreSQL proxy with a real server: `psql` and the Rust `postgres` driver connect
//! through `portcullis serve` with their platform's token as the password, run queries as the
//! role the policy's credential makes (the server sees only that role), and are refused with
//! SQLSTATE 28000 when the policy denies. One listener offers clients TLS, one issues a
//! credential per connection.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::path::Path;

use common::issuing::{ISSUER, token, write_jwks};
use common::postgres::{ADMIN_PASSWORD, Postgres, prepared};
use common::{Server, audit_query, event_rows, free_port, start_server_with, stop_server};

struct Setup {
    server: Server,
    /// Plain both ways, credentials reused for the default 60 s.
    plain: u16,
    /// TLS offered to clients.
    tls: u16,
    /// `credential_reuse_s = 0`: a credential per connection.
    no_reuse: u16,
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
             target billing_db {{ postgres {{ host = \"127.0.0.1\" port = {port} }} }}\n\
             credential billing_reader {{ postgres_role {{ grant = [\"invoices_reader\"] \
             ttl = 5m }} }}\n\
             permit reporting_reads_billing {{ workload reporting target billing_db \
             credential billing_reader when request.action == \"connect\" \
             && request.resource like \"billing/*\" }}\n",
            port = pg.port,
        ),
    )
    .unwrap();
    let (plain, tls, no_reuse) = (free_port(), free_port(), free_port());
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
             [[trust_providers]]\nname = \"ci-idp\"\nkind = \"oidc\"\nissuer = \"{ISSUER}\"\n\
             audiences = [\"portcullis\"]\njwks_file = {jwks:?}\n",
            policy = policy.to_str().unwrap(),
            port = pg.port,
            password = password.to_str().unwrap(),
            cert = fixtures.join("localhost.pem").to_str().unwrap(),
            key = fixtures.join("localhost.key.pem").to_str().unwrap(),
            jwks = jwks.to_str().unwrap(),
        ),
    )
    .unwrap();
    Setup {
        server: start_server_with(&config, &dir.join("data")),
        plain,
        tls,
        no_reuse,
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

    // Refused: a database the policy does not allow, and a token that does not verify. The
    // client gets SQLSTATE 28000 with the reason, not a dropped socket.
    for (database, password, says) in [
        ("postgres", caller.as_str(), "no permit"),
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
            "connect postgres/alice no_permit",
            "connect billing/alice token_malformed",
            "connect postgres/alice no_permit",
            "connect billing/alice permitted",
        ],
        "{rows:#?}"
    );
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
