//! `postgres_role` credentials against a real PostgreSQL server that this test starts: the
//! issued role logs in with `psql`, can do what its grant allows and nothing more, and is gone
//! after its TTL — dropped by the running server, and by a restarted one for a role that
//! expired while it was down.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]
#![cfg(target_os = "linux")]

mod common;

use std::path::Path;
use std::time::Duration;

use common::issuing::{ISSUER, token, write_jwks};
use common::postgres::{ADMIN_PASSWORD, Postgres, ServerTls, prepared};
use common::{Server, eventually, post_json, start_server_with, stop_server};
use serde_json::{Value, json};

fn postgres() -> Postgres {
    prepared(Postgres::start())
}

fn start(dir: &Path, pg: &Postgres, ttl: &str) -> Server {
    start_with(dir, pg, ttl, "")
}

/// [`start`], with `admin` lines added to the administrative connection's settings.
fn start_with(dir: &Path, pg: &Postgres, ttl: &str, admin: &str) -> Server {
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
             ttl = {ttl} }} }}\n\
             permit reporting_reads {{ workload reporting target billing_db \
             credential billing_reader }}\n",
            port = pg.port,
        ),
    )
    .unwrap();
    let config = dir.join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[policy]\ndir = {policy:?}\n\n[credentials]\nrole_drop_interval_s = 1\n\n\
             [[credentials.postgres]]\ntarget = \"billing_db\"\nhost = \"127.0.0.1\"\n\
             port = {port}\nadmin_user = \"portcullis_admin\"\n\
             admin_password_file = {password:?}\n{admin}\n\
             [[trust_providers]]\nname = \"ci-idp\"\nkind = \"oidc\"\nissuer = \"{ISSUER}\"\n\
             audiences = [\"portcullis\"]\njwks_file = {jwks:?}\n",
            policy = policy.to_str().unwrap(),
            port = pg.port,
            password = password.to_str().unwrap(),
            jwks = jwks.to_str().unwrap(),
        ),
    )
    .unwrap();
    start_server_with(&config, &dir.join("data"))
}

/// `POST /v1/credentials` for `billing_db`, as the workload the policy allows.
fn ask(server: &Server) -> (u16, Value) {
    let body = json!({
        "evidence": { "token": token("ci-runner", 300) },
        "target": { "name": "billing_db" },
        "request": { "action": "connect", "resource": "billing" },
    });
    post_json(server, "/v1/credentials", &body)
}

fn issue(server: &Server) -> Value {
    let (status, answer) = ask(server);
    assert_eq!(status, 200, "{answer}");
    answer["credential"].clone()
}

fn issued_roles(pg: &Postgres) -> String {
    pg.sql(
        "postgres",
        "SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles \
         WHERE rolname LIKE 'portcullis\\_%' AND rolname <> 'portcullis_admin'",
    )
}

#[test]
fn an_issued_role_does_what_its_grant_allows_and_is_dropped_after_its_ttl() {
    let pg = postgres();
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path(), &pg, "4s");
    let credential = issue(&server);
    assert_eq!(credential["kind"], "postgres_role");
    assert_eq!(credential["type"], "postgres_uri");
    let uri = credential["value"].as_str().unwrap().to_owned();
    assert!(uri.starts_with("postgresql://portcullis_"), "{uri}");
    assert!(
        uri.ends_with(&format!("@127.0.0.1:{}/billing", pg.port)),
        "{uri}"
    );

    let read = pg.psql_uri(&uri, "SELECT sum(amount) FROM invoices");
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&read.stdout).trim(), "350");
    let write = pg.psql_uri(&uri, "INSERT INTO invoices VALUES (3, 1)");
    assert!(!write.status.success());
    let refused = String::from_utf8_lossy(&write.stderr);
    assert!(refused.contains("permission denied"), "{refused}");
    let role = uri
        .trim_start_matches("postgresql://")
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(issued_roles(&pg), role);

    // The running server drops the role once its time is up, and it no longer logs in.
    eventually("the role is dropped", || {
        issued_roles(&pg).is_empty().then_some(())
    });
    let after = pg.psql_uri(&uri, "SELECT 1");
    assert!(!after.status.success());
    stop_server(server);
}

#[test]
fn a_role_that_expired_while_the_server_was_down_is_dropped_at_start() {
    let pg = postgres();
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path(), &pg, "2s");
    let uri = issue(&server)["value"].as_str().unwrap().to_owned();
    stop_server(server);
    assert!(
        !issued_roles(&pg).is_empty(),
        "the role outlives the stopped server"
    );
    std::thread::sleep(Duration::from_millis(2500));
    let server = start(tmp.path(), &pg, "2s");
    assert!(
        issued_roles(&pg).is_empty(),
        "dropped before the server listens"
    );
    assert!(!pg.psql_uri(&uri, "SELECT 1").status.success());
    stop_server(server);
}

#[test]
fn a_server_that_cannot_make_the_role_answers_503_with_the_reason() {
    let pg = postgres();
    pg.sql("postgres", "ALTER ROLE portcullis_admin NOCREATEROLE");
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path(), &pg, "1m");
    let (status, answer) = ask(&server);
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["reason_code"], "credential_unavailable");
    let reason = answer["reason"].as_str().unwrap();
    assert!(
        reason.contains("`billing_reader` could not be issued"),
        "{reason}"
    );
    let logged = server.wait_for_log("credential_issue_failed");
    assert!(
        logged.contains("permission denied to create role"),
        "{logged}"
    );
    assert!(!logged.contains(ADMIN_PASSWORD), "{logged}");
    assert_eq!(answer["credential"], Value::Null);
    stop_server(server);
}

/// A server that takes its administrator over TLS only: the administrative connection verifies
/// its certificate against the configured CA and gets the role made; a CA that did not sign
/// it, or no TLS at all, gets no role, and the log says why.
#[test]
fn the_administrative_connection_is_verified_tls_when_configured() {
    let pg = prepared(Postgres::start_with(&ServerTls::On {
        reject_plain: &["portcullis_admin"],
    }));
    let tls = common::repo().join("tests/fixtures/tls");
    let ca = |file: &str| {
        format!(
            "tls = \"verify-full\"\nca_file = {:?}\n",
            tls.join(file).to_str().unwrap()
        )
    };

    let tmp = tempfile::tempdir().unwrap();
    let server = start_with(tmp.path(), &pg, "1m", &ca("ca.pem"));
    let credential = issue(&server);
    let uri = credential["value"].as_str().unwrap();
    assert!(uri.ends_with("/billing?sslmode=require"), "{uri}");
    // The role logs in over TLS with the URI as it is, and reads what its grant allows.
    let out = pg.psql_uri(
        uri,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid(); \
         SELECT sum(amount) FROM invoices",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "t\n350\n");
    stop_server(server);

    for (name, admin, says) in [
        ("other-ca", ca("other-ca.pem"), "certificate"),
        ("plain", "tls = \"disable\"\n".to_owned(), "no encryption"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let server = start_with(tmp.path(), &pg, "1m", &admin);
        let (status, answer) = ask(&server);
        assert_eq!(status, 503, "{name}: {answer}");
        let logged = server.wait_for_log("credential_issue_failed");
        assert!(logged.contains(says), "{name}: {logged}");
        assert!(!logged.contains(ADMIN_PASSWORD), "{logged}");
        stop_server(server);
    }
}
