//! A real PostgreSQL server for a test: a new cluster in a temporary directory, on a free
//! loopback port, stopped when the test ends. `scripts/test` installs PostgreSQL; a machine
//! without it fails the test with the reason rather than skipping it.
//!
//! PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user
//! (Debian's package makes it) and its commands run through `runuser`.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The superuser of the cluster, trusted on its Unix socket only.
pub const SUPERUSER: &str = "cluster_admin";

pub struct Postgres {
    pub port: u16,
    /// Holds the cluster (`data/`), its socket and its log.
    pub dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
}

/// What the cluster's TLS is: none, or on with the tests' certificate for `127.0.0.1`, and
/// `reject_plain` roles refused on any connection from the network that is not TLS.
pub enum ServerTls<'a> {
    Off,
    On { reject_plain: &'a [&'a str] },
}

impl Postgres {
    pub fn start() -> Postgres {
        Postgres::start_with(&ServerTls::Off)
    }

    pub fn start_with(tls: &ServerTls<'_>) -> Postgres {
        let bin = bin_dir();
        let as_postgres = running_as_root();
        let dir = tempfile::tempdir().unwrap();
        if as_postgres {
            let owner = postgres_ids();
            std::os::unix::fs::chown(dir.path(), Some(owner.0), Some(owner.1)).unwrap();
        }
        let port = super::free_port();
        let server = Postgres {
            port,
            dir,
            bin,
            as_postgres,
        };
        let data = server.dir.path().join("data");
        server.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
            ],
        );
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            server.dir.path().display()
        );
        if let ServerTls::On { reject_plain } = tls {
            options.push_str(&server.enable_tls(&data, reject_plain));
        }
        let log = server.dir.path().join("server.log");
        server.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        server
    }

    /// Puts the tests' certificate and key beside the cluster (the key readable by its owner
    /// only, as PostgreSQL demands), puts a `hostnossl … reject` line for each of
    /// `reject_plain` first in `pg_hba.conf`, and returns the server options that turn TLS on.
    fn enable_tls(&self, data: &std::path::Path, reject_plain: &[&str]) -> String {
        use std::os::unix::fs::PermissionsExt as _;
        let fixtures = super::repo().join("tests/fixtures/tls");
        let cert = self.dir.path().join("server.crt");
        let key = self.dir.path().join("server.key");
        std::fs::copy(fixtures.join("localhost.pem"), &cert).unwrap();
        std::fs::copy(fixtures.join("localhost.key.pem"), &key).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        if self.as_postgres {
            let owner = postgres_ids();
            for file in [&cert, &key] {
                std::os::unix::fs::chown(file, Some(owner.0), Some(owner.1)).unwrap();
            }
        }
        let hba = data.join("pg_hba.conf");
        let mut rules: String = reject_plain
            .iter()
            .map(|role| format!("hostnossl all {role} 127.0.0.1/32 reject\n"))
            .collect();
        rules.push_str(&std::fs::read_to_string(&hba).unwrap());
        std::fs::write(&hba, rules).unwrap();
        format!(
            " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            cert.display(),
            key.display()
        )
    }

    /// Runs `sql` as the superuser on `database`; its output (unaligned, tuples only).
    pub fn sql(&self, database: &str, sql: &str) -> String {
        let out = self
            .command("psql")
            .args(self.connect_args(database))
            .args(["-v", "ON_ERROR_STOP=1", "-Atq", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// `psql` with `uri` running `sql`, as a client would: its whole output.
    pub fn psql_uri(&self, uri: &str, sql: &str) -> Output {
        Command::new(self.bin.join("psql"))
            .args([uri, "-v", "ON_ERROR_STOP=1", "-Atq", "-c", sql])
            .env_remove("PGPASSWORD")
            .output()
            .unwrap()
    }

    fn connect_args(&self, database: &str) -> Vec<String> {
        vec![
            "-h".to_owned(),
            self.dir.path().display().to_string(),
            "-p".to_owned(),
            self.port.to_string(),
            "-U".to_owned(),
            SUPERUSER.to_owned(),
            "-d".to_owned(),
            database.to_owned(),
        ]
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self.command(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self
            .command("pg_ctl")
            .args([
                "-D",
                data.to_str().unwrap_or_default(),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
    }
}

/// Where PostgreSQL's server programs are: `PORTCULLIS_TEST_PG_BIN`, else Debian's newest
/// `/usr/lib/postgresql/N/bin`.
fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PORTCULLIS_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path().join("bin"))
                .filter(|bin| bin.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL's server programs are not installed (no /usr/lib/postgresql/N/bin/initdb); \
             `scripts/test` installs Debian's `postgresql`, or set PORTCULLIS_TEST_PG_BIN"
        )
    })
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|uid| uid == "0")
        })
        .unwrap_or(false)
}

/// The uid and gid of the `postgres` user, from `/etc/passwd`.
fn postgres_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres"))
                .then(|| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
                .flatten()
        })
        .unwrap_or_else(|| {
            panic!("running as root, and there is no `postgres` user to run PostgreSQL")
        })
}

/// The administrator's password of [`prepared`] clusters.
pub const ADMIN_PASSWORD: &str = "admin-password-for-the-test";

/// A cluster with a database of invoices, a role that may read them and one that may add them,
/// and an administrator that may make roles in those two.
pub fn prepared(pg: Postgres) -> Postgres {
    pg.sql(
        "postgres",
        &format!(
            "CREATE ROLE portcullis_admin LOGIN CREATEROLE PASSWORD '{ADMIN_PASSWORD}'; \
             CREATE ROLE invoices_reader NOLOGIN; CREATE ROLE invoices_writer NOLOGIN; \
             GRANT invoices_reader, invoices_writer TO portcullis_admin WITH ADMIN OPTION;"
        ),
    );
    pg.sql("postgres", "CREATE DATABASE billing");
    pg.sql(
        "billing",
        "CREATE TABLE invoices (id int, amount int); \
         INSERT INTO invoices VALUES (1, 100), (2, 250); \
         GRANT SELECT ON invoices TO invoices_reader; GRANT INSERT ON invoices TO invoices_writer;",
    );
    pg
}
