//! The PostgreSQL proxy with a real server: `psql` and the Rust `postgres` driver connect
//! through `portcullis serve` with their platform's token as the password, run queries as the
//! role the policy's credential makes (the server sees only that role), and are refused with
//! SQLSTATE 28000 when the policy denies. One listener offers clients TLS.

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
    plain: u16,
    tls: u16,
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
    let (plain, tls) = (free_port(), free_port());
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
    }
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
    let conninfo = |database: &str, password: &str| {
        format!(
            "host=127.0.0.1 port={} user=alice dbname={database} password={password} \
             sslmode=disable connect_timeout=10",
            setup.plain
        )
    };
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
