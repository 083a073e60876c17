//! The PostgreSQL side of the benchmark: a cluster of its own, and `pgbench` against it
//! directly and through the proxy.
//!
//! The cluster is new, in a temporary directory, on a free loopback port; password logins over
//! TCP use SCRAM-SHA-256 both ways. As root its programs run as the `postgres` user, since
//! PostgreSQL refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The cluster's superuser, trusted on its Unix socket only.
const SUPERUSER: &str = "cluster_admin";
/// The role the proxy's `postgres_role` provider makes roles with.
pub const ADMIN_USER: &str = "portcullis_admin";
pub const ADMIN_PASSWORD: &str = "bench-admin-password";
/// The static role `pgbench` logs in as directly, with the privileges issued roles get.
const DIRECT_USER: &str = "bench_direct";
const DIRECT_PASSWORD: &str = "bench-direct-password";
pub const DATABASE: &str = "bench";
/// The group role issued roles are granted.
pub const GRANTED: &str = "bench_rw";

pub struct Cluster {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
}

impl Cluster {
    /// A new cluster with the `pgbench` tables at scale 1, a role that may use them, and an
    /// administrator that may make roles in it.
    pub fn start(port: u16) -> Result<Cluster> {
        let bin = bin_dir()?;
        let as_postgres = running_as_root()?;
        let dir = tempfile::tempdir()?;
        if as_postgres {
            let (uid, gid) = postgres_ids()?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let cluster = Cluster {
            port,
            dir,
            bin,
            as_postgres,
        };
        let data = cluster.data();
        let data = data.to_str().context("a path that is not UTF-8")?;
        cluster.run(
            "initdb",
            &[
                "-D",
                data,
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
            ],
        )?;
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=100",
            cluster.dir.path().display()
        );
        let log = cluster.dir.path().join("server.log");
        let log = log.to_str().context("a path that is not UTF-8")?;
        cluster.run(
            "pg_ctl",
            &["-D", data, "-o", &options, "-l", log, "-w", "start"],
        )?;
        cluster.sql(
            "postgres",
            &format!(
                "CREATE ROLE {ADMIN_USER} LOGIN CREATEROLE PASSWORD '{ADMIN_PASSWORD}'; \
                 CREATE ROLE {GRANTED} NOLOGIN; \
                 GRANT {GRANTED} TO {ADMIN_USER} WITH ADMIN OPTION; \
                 CREATE ROLE {DIRECT_USER} LOGIN PASSWORD '{DIRECT_PASSWORD}' IN ROLE {GRANTED};"
            ),
        )?;
        cluster.sql("postgres", &format!("CREATE DATABASE {DATABASE}"))?;
        let socket = cluster.dir.path().display().to_string();
        let port = port.to_string();
        cluster.run(
            "pgbench",
            &[
                "-i", "-q", "-s", "1", "-h", &socket, "-p", &port, "-U", SUPERUSER, DATABASE,
            ],
        )?;
        cluster.sql(
            DATABASE,
            &format!("GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {GRANTED};"),
        )?;
        Ok(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn sql(&self, database: &str, sql: &str) -> Result<()> {
        let socket = self.dir.path().display().to_string();
        let port = self.port.to_string();
        self.run(
            "psql",
            &[
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                &socket,
                "-p",
                &port,
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-c",
                sql,
            ],
        )
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

    fn run(&self, program: &str, args: &[&str]) -> Result<()> {
        let out = self
            .command(program)
            .args(args)
            .output()
            .with_context(|| format!("running {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Runs `pgbench` (select-only, `clients` connections, for `seconds`) on loopback, logging
    /// in as the static role, or through the proxy with the token as the password;
    /// `reconnect` opens a new connection for every transaction.
    pub fn pgbench(&self, run: &Run<'_>) -> Result<Pgbench> {
        let (port, user, password) = match run.how {
            Via::Proxy(port, token) => (port, "bench_client", token),
            Via::Direct(port) => (port, DIRECT_USER, DIRECT_PASSWORD),
        };
        let mut command = Command::new(self.bin.join("pgbench"));
        command
            .args([
                "-n",
                "-S",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                user,
            ])
            .args(["-c", &run.clients.to_string(), "-j", "2"])
            .args(["-T", &run.seconds.to_string()])
            .env("PGPASSWORD", password)
            .env("PGSSLMODE", "disable");
        if run.reconnect {
            command.arg("-C");
        }
        command.arg(DATABASE);
        let out = command.output().context("running pgbench")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "pgbench failed: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Pgbench::read(&stdout)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// Where `pgbench` connects.
pub enum Via<'a> {
    /// This port, as the static role: the server itself, or a relay in front of it.
    Direct(u16),
    /// The proxy on this port, with this token.
    Proxy(u16, &'a str),
}

/// One `pgbench` run.
pub struct Run<'a> {
    pub how: Via<'a>,
    pub clients: usize,
    pub seconds: u64,
    pub reconnect: bool,
}

/// What `pgbench` reports.
pub struct Pgbench {
    pub tps: f64,
    pub latency_ms: f64,
    pub failed: u64,
}

impl Pgbench {
    fn read(stdout: &str) -> Result<Pgbench> {
        let field = |prefix: &str| -> Result<f64> {
            let line = stdout
                .lines()
                .find(|line| line.starts_with(prefix))
                .with_context(|| format!("pgbench printed no `{prefix}` line:\n{stdout}"))?;
            let value = line
                .trim_start_matches(prefix)
                .split_whitespace()
                .next()
                .unwrap_or_default();
            value
                .parse()
                .with_context(|| format!("pgbench's `{line}` is not a number"))
        };
        let failed = stdout
            .lines()
            .find_map(|line| line.strip_prefix("number of failed transactions: "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|count| count.parse().ok())
            .unwrap_or(0);
        Ok(Pgbench {
            tps: field("tps = ")?,
            latency_ms: field("latency average = ")?,
            failed,
        })
    }
}

/// Debian's newest `/usr/lib/postgresql/N/bin`, or `PORTCULLIS_TEST_PG_BIN`.
fn bin_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("PORTCULLIS_TEST_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path().join("bin"))
                .filter(|bin| bin.join("initdb").exists() && bin.join("pgbench").exists())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().context(
        "PostgreSQL's programs are not installed (no /usr/lib/postgresql/N/bin with initdb and \
         pgbench); `scripts/test` installs Debian's `postgresql`, or pass --no-pgbench",
    )
}

fn running_as_root() -> Result<bool> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    Ok(status
        .lines()
        .find(|line| line.starts_with("Uid:"))
        .and_then(|line| line.split_whitespace().nth(2))
        == Some("0"))
}

/// The uid and gid of the `postgres` user, from `/etc/passwd`.
fn postgres_ids() -> Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres"))
                .then(|| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
                .flatten()
        })
        .context("running as root, and there is no `postgres` user to run PostgreSQL")
}

/// The administrator's password file the server's configuration names.
pub fn write_admin_password(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("pg-admin.password");
    std::fs::write(&path, format!("{ADMIN_PASSWORD}\n"))?;
    Ok(path)
}
