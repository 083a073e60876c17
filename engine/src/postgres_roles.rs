//! `postgres_role` credentials: a PostgreSQL login role made for one caller, a member of the
//! roles the policy grants, valid for the credential's TTL, and dropped once it expires —
//! even across a restart of the server.
//!
//! In: the credential's grants and TTL, and the administrative connection configured for its
//! target. Out: a connection URI with the role and its password.
//!
//! Every role is written to a ledger in the data directory (one JSON line, synced) *before* it
//! is created, so that a crash between the two leaves a role the dropper still knows about.
//! The dropper ends the role's sessions and drops it; the role's password also carries
//! `VALID UNTIL` its expiry, so that it stops working on time even while the dropper cannot
//! reach the server.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::spki::der::zeroize::Zeroizing;
use serde::{Deserialize, Serialize};

use crate::credentials::{CredentialError, Issued};

/// The ledger's file under the data directory.
pub const LEDGER_FILE: &str = "credential-roles.jsonl";

/// How long connecting to a server as its administrator may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An administrative connection to one PostgreSQL server, for the credentials of one target.
pub struct PostgresServer {
    /// The Gate target whose `postgres_role` credentials this server makes.
    pub target: String,
    pub host: String,
    pub port: u16,
    /// The database named in the connection URIs handed out.
    pub database: String,
    pub admin_user: String,
    pub admin_password: Zeroizing<String>,
    /// TLS to the server, its certificate verified; `None` only for a loopback host or a Unix
    /// socket, which the configuration checks.
    pub tls: Option<crate::postgres_tls::MakeRustls>,
}

impl std::fmt::Debug for PostgresServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresServer")
            .field("target", &self.target)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("admin_user", &self.admin_user)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// One role the server made, until it is dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub role: String,
    pub target: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// The roles the server made and has not dropped yet.
#[derive(Debug)]
pub struct PostgresRoles {
    servers: Vec<PostgresServer>,
    ledger: PathBuf,
    /// Held while the ledger is written or rewritten.
    writing: Mutex<()>,
}

impl PostgresRoles {
    pub fn new(data_dir: &Path, servers: Vec<PostgresServer>) -> PostgresRoles {
        PostgresRoles {
            servers,
            ledger: data_dir.join(LEDGER_FILE),
            writing: Mutex::new(()),
        }
    }

    /// Whether an administrative connection is configured for `target`.
    pub fn serves(&self, target: &str) -> bool {
        self.servers.iter().any(|server| server.target == target)
    }

    /// The targets with an administrative connection.
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.servers.iter().map(|server| server.target.as_str())
    }

    /// Makes a role for `to.target` that is a member of `grant` until `to.now + ttl_s`, and
    /// returns the URI to connect with it: to the target's declared database, else to the
    /// connection's `database`. Blocking I/O.
    pub fn issue(
        &self,
        credential: &str,
        to: &crate::credentials::Recipient<'_>,
        grant: &[String],
        ttl_s: u64,
    ) -> Result<Issued, CredentialError> {
        let (target, now) = (to.target, to.now);
        let failed = |reason: String| CredentialError::Postgres {
            name: credential.to_owned(),
            reason,
        };
        let server = self
            .servers
            .iter()
            .find(|server| server.target == target)
            .ok_or_else(|| {
                failed(format!(
                    "no administrative connection is configured for target `{target}` \
                     (`[[credentials.postgres]]`)"
                ))
            })?;
        let role = format!(
            "portcullis_{}",
            hex::encode(random::<8>().map_err(&failed)?)
        );
        let password = Zeroizing::new(URL_SAFE_NO_PAD.encode(random::<24>().map_err(&failed)?));
        let expires_at = now.saturating_add(i64::try_from(ttl_s).unwrap_or(i64::MAX));
        let until = chrono::DateTime::from_timestamp(expires_at, 0)
            .ok_or_else(|| failed("the expiry is out of range".to_owned()))?
            .to_rfc3339();
        self.append(&LedgerEntry {
            role: role.clone(),
            target: target.to_owned(),
            expires_at,
        })
        .map_err(|error| failed(format!("cannot record the role in the ledger: {error}")))?;
        let grants = grant
            .iter()
            .map(|name| quote_ident(name))
            .collect::<Vec<_>>()
            .join(", ");
        let statement = Zeroizing::new(format!(
            "CREATE ROLE {} LOGIN PASSWORD {} VALID UNTIL {} IN ROLE {grants}",
            quote_ident(&role),
            quote_literal(&password),
            quote_literal(&until),
        ));
        let mut client = connect(server).map_err(&failed)?;
        client
            .batch_execute(&statement)
            .map_err(|error| failed(format!("creating the role: {}", db_message(&error))))?;
        tracing::info!(role, target, expires_at, "postgres_role_created");
        Ok(Issued {
            value: connection_uri(
                server,
                to.database.unwrap_or(&server.database),
                &role,
                &password,
            ),
            token_type: "postgres_uri",
            expires_at: Some(expires_at),
            identifier: role,
        })
    }

    /// Ends the sessions of every role whose expiry has passed and drops it; a role whose
    /// server cannot be reached stays in the ledger for the next round. Returns how many were
    /// dropped. Blocking I/O.
    pub fn drop_expired(&self, now: i64) -> Result<usize, String> {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let entries = read_ledger(&self.ledger)?;
        let mut kept = Vec::new();
        let mut dropped = 0;
        for entry in entries {
            if entry.expires_at > now {
                kept.push(entry);
                continue;
            }
            match self.drop_role(&entry) {
                Ok(()) => {
                    dropped += 1;
                    let (role, target) = (&entry.role, &entry.target);
                    tracing::info!(role, target, "postgres_role_dropped");
                }
                Err(error) => {
                    let (role, target) = (&entry.role, &entry.target);
                    tracing::warn!(role, target, %error, "postgres_role_drop_failed");
                    kept.push(entry);
                }
            }
        }
        if dropped > 0 {
            write_ledger(&self.ledger, &kept)?;
        }
        Ok(dropped)
    }

    fn drop_role(&self, entry: &LedgerEntry) -> Result<(), String> {
        let server = self
            .servers
            .iter()
            .find(|server| server.target == entry.target)
            .ok_or_else(|| {
                format!(
                    "no administrative connection is configured for target `{}` any more",
                    entry.target
                )
            })?;
        let mut client = connect(server)?;
        client
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                &[&entry.role],
            )
            .map_err(|error| format!("ending the role's sessions: {}", db_message(&error)))?;
        client
            .batch_execute(&format!("DROP ROLE IF EXISTS {}", quote_ident(&entry.role)))
            .map_err(|error| format!("dropping the role: {}", db_message(&error)))
    }

    fn append(&self, entry: &LedgerEntry) -> std::io::Result<()> {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&self.ledger)?;
        let mut line = serde_json::to_string(entry).map_err(std::io::Error::other)?;
        line.push('\n');
        file.write_all(line.as_bytes())?;
        file.sync_data()
    }
}

/// `postgresql://ROLE:PASSWORD@HOST:PORT/DATABASE`, which `psql` and the drivers take as it
/// is. The password is URL-safe already.
fn connection_uri(
    server: &PostgresServer,
    database: &str,
    role: &str,
    password: &str,
) -> Zeroizing<String> {
    // A Unix socket's directory is percent-encoded, as libpq reads a path in a URI's host.
    let host = if server.host.starts_with('/') {
        crate::http::percent_encode(&server.host)
    } else if server.host.contains(':') {
        format!("[{}]", server.host)
    } else {
        server.host.clone()
    };
    // Over TLS for the administrator, so over TLS for the role too; a client that holds the
    // server's CA may ask for `verify-full` instead.
    let options = if server.tls.is_some() {
        "?sslmode=require"
    } else {
        ""
    };
    Zeroizing::new(format!(
        "postgresql://{role}:{password}@{host}:{}/{}{options}",
        server.port,
        crate::http::percent_encode(database)
    ))
}

fn connect(server: &PostgresServer) -> Result<postgres::Client, String> {
    let mut config = postgres::Config::new();
    config
        .host(&server.host)
        .port(server.port)
        .user(&server.admin_user)
        .password(server.admin_password.as_bytes())
        .dbname(&server.database)
        .connect_timeout(CONNECT_TIMEOUT)
        .application_name("portcullis");
    let connected = match &server.tls {
        Some(tls) => {
            config.ssl_mode(postgres::config::SslMode::Require);
            config.connect(tls.clone())
        }
        None => config.connect(postgres::NoTls),
    };
    connected.map_err(|error| {
        format!(
            "cannot connect to {}:{} as `{}`{}: {}",
            server.host,
            server.port,
            server.admin_user,
            if server.tls.is_some() {
                " over TLS"
            } else {
                ""
            },
            db_message(&error)
        )
    })
}

/// The server's own message when there is one: the client's display of a database error is
/// only `db error`.
fn db_message(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            // The client's own display stops at "error performing TLS handshake"; the why (an
            // unknown issuer, a name mismatch) is in its sources.
            let mut message = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                message.push_str(": ");
                message.push_str(&cause.to_string());
                source = cause.source();
            }
            message
        }
    }
}

fn random<const N: usize>() -> Result<[u8; N], String> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|error| format!("no randomness: {error}"))?;
    Ok(bytes)
}

/// An SQL identifier, double-quoted with its quotes doubled.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An SQL string literal, single-quoted with its quotes doubled.
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn read_ledger(path: &Path) -> Result<Vec<LedgerEntry>, String> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(format!("cannot read `{}`: {error}", path.display())),
    };
    let mut entries = Vec::new();
    for (idx, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|error| format!("cannot read `{}`: {error}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        // A torn last line (a crash mid-append) names a role that was never created.
        match serde_json::from_str::<LedgerEntry>(&line) {
            Ok(entry) => entries.push(entry),
            Err(error) => tracing::warn!(
                ledger = %path.display(),
                line = idx + 1,
                %error,
                "postgres_role_ledger_line_unreadable"
            ),
        }
    }
    Ok(entries)
}

fn write_ledger(path: &Path, entries: &[LedgerEntry]) -> Result<(), String> {
    let temp = path.with_extension("jsonl.tmp");
    let mut text = String::new();
    for entry in entries {
        text.push_str(&serde_json::to_string(entry).map_err(|error| error.to_string())?);
        text.push('\n');
    }
    let write = || -> std::io::Result<()> {
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|error| format!("cannot rewrite `{}`: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_uris_name_sockets_and_ipv6_hosts_as_libpq_reads_them() {
        let server = |host: &str| PostgresServer {
            target: "orders_db".to_owned(),
            host: host.to_owned(),
            port: 5433,
            database: "orders".to_owned(),
            admin_user: "admin".to_owned(),
            admin_password: Zeroizing::new(String::new()),
            tls: None,
        };
        let uri = |host: &str| connection_uri(&server(host), "orders", "r", "p").to_string();
        assert_eq!(
            uri("db.internal"),
            "postgresql://r:p@db.internal:5433/orders"
        );
        assert_eq!(uri("::1"), "postgresql://r:p@[::1]:5433/orders");
        assert_eq!(
            uri("/run/postgresql"),
            "postgresql://r:p@%2Frun%2Fpostgresql:5433/orders"
        );
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident("orders_rw"), "\"orders_rw\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn the_ledger_survives_a_torn_line_and_rewrites_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LEDGER_FILE);
        let entry = LedgerEntry {
            role: "portcullis_00".to_owned(),
            target: "db".to_owned(),
            expires_at: 10,
        };
        let roles = PostgresRoles::new(dir.path(), Vec::new());
        roles.append(&entry).unwrap();
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"role\":\"portcullis_")
            .unwrap();
        assert_eq!(read_ledger(&path).unwrap(), vec![entry.clone()]);
        write_ledger(&path, &[]).unwrap();
        assert_eq!(read_ledger(&path).unwrap(), Vec::new());
        // An expired role whose target has no connection any more stays in the ledger.
        roles.append(&entry).unwrap();
        assert_eq!(roles.drop_expired(100).unwrap(), 0);
        assert_eq!(read_ledger(&path).unwrap(), vec![entry]);
    }
}
