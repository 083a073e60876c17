//! Proxy overhead, measured: HTTP requests per second and latency through the reverse-mode
//! proxy of a running `portcullis serve`, and `pgbench` transactions per second through its
//! PostgreSQL proxy, each against the same upstream asked directly, in the same run.
//!
//! HTTP: the upstream is a minimal HTTP/1.1 server in a process of its own answering 200 with
//! a short body; the load generator keeps N keep-alive connections busy, one request in flight
//! each.
//! Through the proxy each request is attested (a cached token after the first), decided,
//! recorded in the audit log, and forwarded with the credential (a minted JWT, reused per
//! caller for `credential_reuse_s`). A bare relay (the second hop and nothing else, in a process
//! of its own) runs alongside, so that what any proxy costs here is told apart from what
//! Portcullis adds.
//!
//! PostgreSQL: a cluster of the benchmark's own; `pgbench -S` logs in directly as a static
//! role, and through the proxy with the token as its password (the proxy logs in upstream as
//! a role it issued), with connections kept and with a new connection per transaction (`-C`).
//!
//! Run: `cargo build --release -p portcullis -p portcullis-bench-proxy --bins` and then
//! `target/release/portcullis-bench-proxy`. docs/proxy.md#benchmark has figures.

mod http;
mod pg;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::http::Stats;

#[derive(Debug, Parser)]
struct Args {
    /// The server binary to measure.
    #[arg(long, default_value = "target/release/portcullis")]
    portcullis: PathBuf,
    /// How long each load runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// The HTTP loads: keep-alive connections, one request in flight on each.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    connections: Vec<usize>,
    /// The proxy's `credential_reuse_s`; 0 issues a credential per request.
    #[arg(long, default_value_t = 60)]
    reuse_s: u64,
    /// The audit log's `flush_interval_ms`: 0 syncs every commit (the default), more trades
    /// that many milliseconds of events at a power cut for fewer syncs.
    #[arg(long, default_value_t = 0)]
    flush_interval_ms: u64,
    /// `pgbench` clients.
    #[arg(long, default_value_t = 8)]
    pg_clients: usize,
    /// Measure HTTP only.
    #[arg(long)]
    no_pgbench: bool,
    /// Internal: run as the benchmark's upstream (`upstream`) or bare relay (`relay`) process,
    /// print the address, and serve until killed.
    #[arg(long, hide = true)]
    role: Option<String>,
    /// Internal: the relay's upstream.
    #[arg(long, hide = true)]
    upstream: Option<SocketAddr>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(role) = &args.role {
        return serve_role(role, args.upstream);
    }
    if !args.portcullis.exists() {
        bail!(
            "`{}` does not exist; build it with \
             `cargo build --release -p portcullis -p portcullis-bench-proxy --bins`",
            args.portcullis.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(&args))
}

/// The upstream and the relay run in processes of their own, as the proxy does, so that every
/// hop crosses processes as it would in production and none is favoured by sharing the load
/// generator's threads.
fn serve_role(role: &str, upstream: Option<SocketAddr>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let addr = match (role, upstream) {
            ("upstream", _) => http::start_upstream().await?,
            ("relay", Some(upstream)) => http::start_relay(upstream).await?,
            ("tcp-relay", Some(upstream)) => http::start_tcp_relay(upstream).await?,
            _ => bail!("unknown role `{role}`"),
        };
        println!("{addr}");
        std::future::pending::<()>().await;
        Ok(())
    })
}

/// A child process of this benchmark in `role`, and the address it serves.
struct RoleProcess {
    child: Child,
    addr: SocketAddr,
}

impl RoleProcess {
    fn start(role: &str, upstream: Option<SocketAddr>) -> Result<RoleProcess> {
        use std::io::{BufRead as _, BufReader};
        let mut command = Command::new(std::env::current_exe()?);
        command.args(["--role", role]);
        if let Some(upstream) = upstream {
            command.arg("--upstream").arg(upstream.to_string());
        }
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting the {role} process"))?;
        let stdout = child.stdout.take().context("no standard output")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .parse()
            .with_context(|| format!("the {role} process printed `{}`", line.trim()))?;
        Ok(RoleProcess { child, addr })
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn run(args: &Args) -> Result<()> {
    let upstream_process = RoleProcess::start("upstream", None)?;
    let upstream = upstream_process.addr;
    let relay_process = RoleProcess::start("relay", Some(upstream))?;
    let relay = relay_process.addr;
    let dir = tempfile::tempdir()?;
    let cluster = if args.no_pgbench {
        None
    } else {
        Some(pg::Cluster::start(free_port()?)?)
    };
    let listeners = write_config(dir.path(), upstream, cluster.as_ref(), args)?;
    let mut server = start_server(
        &args.portcullis,
        &listeners.config,
        &dir.path().join("data"),
        1 + usize::from(cluster.is_some()),
    )?;
    let token = mint_token()?;
    let evidence = format!("Bearer {token}");
    let duration = Duration::from_secs(args.seconds);
    // Warm-up: the first request attests, mints and fills the caches.
    http::load(
        listeners.http,
        Some(&evidence),
        1,
        Duration::from_millis(500),
    )
    .await?;
    http::load(relay, None, 1, Duration::from_millis(500)).await?;
    println!(
        "proxy benchmark: {} s per load, credential_reuse_s {}, flush_interval_ms {}",
        args.seconds, args.reuse_s, args.flush_interval_ms
    );
    for &connections in &args.connections {
        let direct = http::load(upstream, None, connections, duration).await?;
        let bare = http::load(relay, None, connections, duration).await?;
        let proxied = http::load(listeners.http, Some(&evidence), connections, duration).await?;
        report_http(connections, duration, &direct, &bare, &proxied);
    }
    if let (Some(cluster), Some(port)) = (&cluster, listeners.postgres) {
        let upstream = SocketAddr::from(([127, 0, 0, 1], cluster.port));
        let tcp_relay = RoleProcess::start("tcp-relay", Some(upstream))?;
        for reconnect in [false, true] {
            let run = |how| pg::Run {
                how,
                clients: args.pg_clients,
                seconds: args.seconds,
                reconnect,
            };
            let direct = cluster.pgbench(&run(pg::Via::Direct(cluster.port)))?;
            let bare = cluster.pgbench(&run(pg::Via::Direct(tcp_relay.addr.port())))?;
            let proxied = cluster.pgbench(&run(pg::Via::Proxy(port, &token)))?;
            report_pgbench(args.pg_clients, reconnect, &direct, &bare, &proxied);
        }
    }
    stop(&mut server);
    Ok(())
}

fn report_http(
    connections: usize,
    duration: Duration,
    direct: &Stats,
    bare: &Stats,
    proxied: &Stats,
) {
    println!("\nHTTP, {connections} connection(s)");
    println!(
        "{:<12} {:>12} {:>9} {:>10} {:>10} {:>8}",
        "", "requests/s", "share", "median µs", "p99 µs", "errors"
    );
    let base = direct.per_second(duration).max(1.0);
    for (name, stats) in [("direct", direct), ("bare relay", bare), ("proxy", proxied)] {
        println!(
            "{name:<12} {:>12.0} {:>8.1}% {:>10} {:>10} {:>8}",
            stats.per_second(duration),
            stats.per_second(duration) / base * 100.0,
            stats.percentile(50),
            stats.percentile(99),
            stats.errors
        );
    }
    println!(
        "proxy/direct {:.1} % (goal ≥ 80 %); added median {} µs (goal ≤ 100 µs), added p99 {} µs; \
         proxy/bare relay {:.1} %",
        proxied.per_second(duration) / base * 100.0,
        proxied.percentile(50).saturating_sub(direct.percentile(50)),
        proxied.percentile(99).saturating_sub(direct.percentile(99)),
        proxied.per_second(duration) / bare.per_second(duration).max(1.0) * 100.0,
    );
}

fn report_pgbench(
    clients: usize,
    reconnect: bool,
    direct: &pg::Pgbench,
    bare: &pg::Pgbench,
    proxied: &pg::Pgbench,
) {
    let how = if reconnect {
        "a new connection per transaction (-C)"
    } else {
        "connections kept"
    };
    println!("\npgbench -S, {clients} clients, {how}");
    println!(
        "{:<12} {:>12} {:>16} {:>8}",
        "", "tps", "latency avg ms", "failed"
    );
    for (name, run) in [("direct", direct), ("bare relay", bare), ("proxy", proxied)] {
        println!(
            "{name:<12} {:>12.0} {:>16.3} {:>8}",
            run.tps, run.latency_ms, run.failed
        );
    }
    println!(
        "proxy/direct {:.1} %, proxy/bare relay {:.1} % of transactions per second",
        proxied.tps / direct.tps.max(1.0) * 100.0,
        proxied.tps / bare.tps.max(1.0) * 100.0
    );
}

fn free_port() -> Result<u16> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(probe.local_addr()?.port())
}

/// The key that signs the caller's token, and its JWKS.
fn key() -> Result<EncodingKey> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../engine/tests/keys/p256.key.pem"
    );
    Ok(EncodingKey::from_ec_pem(&std::fs::read(path)?)?)
}

const ISSUER: &str = "https://bench-idp.example.invalid";

fn mint_token() -> Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = json!({
        "iss": ISSUER, "aud": "portcullis", "sub": "bench-client", "iat": now, "exp": now + 3600,
    });
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("bench".to_owned());
    Ok(jsonwebtoken::encode(&header, &claims, &key()?)?)
}

/// Where the measured server's configuration is, and the addresses of its proxies.
struct Listeners {
    config: PathBuf,
    http: SocketAddr,
    postgres: Option<u16>,
}

/// The configuration and policy of the measured server: an HTTP proxy to `upstream`, and a
/// PostgreSQL proxy to `cluster` when there is one.
fn write_config(
    dir: &Path,
    upstream: SocketAddr,
    cluster: Option<&pg::Cluster>,
    args: &Args,
) -> Result<Listeners> {
    let mut jwk = Jwk::from_encoding_key(&key()?, Algorithm::ES256)?;
    jwk.common.key_id = Some("bench".to_owned());
    let jwks = dir.join("bench.jwks.json");
    std::fs::write(&jwks, serde_json::to_string(&JwkSet { keys: vec![jwk] })?)?;
    let policy = dir.join("policy");
    std::fs::create_dir(&policy)?;
    let mut gate = "workload bench { oidc { sub == \"bench-client\" } }\n\
         target bench_api { https { host = \"bench.internal\" } }\n\
         credential bench_token { jwt { audience = \"bench_api\" ttl = 15m } }\n\
         permit bench_reads { workload bench target bench_api credential bench_token \
         when request.action == \"GET\" }\n"
        .to_owned();
    let http: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let mut config = format!(
        "[policy]\ndir = {policy:?}\n\n[audit]\nflush_interval_ms = {flush}\n\n\
         [[trust_providers]]\nname = \"bench-idp\"\nkind = \"oidc\"\nissuer = \"{ISSUER}\"\n\
         audiences = [\"portcullis\"]\njwks_file = {jwks:?}\n\n\
         [[proxy.http]]\ntarget = \"bench_api\"\nlisten = \"{http}\"\n\
         upstream = \"http://{upstream}\"\ncredential_reuse_s = {reuse}\n",
        policy = policy.to_str().context("a path that is not UTF-8")?,
        jwks = jwks.to_str().context("a path that is not UTF-8")?,
        flush = args.flush_interval_ms,
        reuse = args.reuse_s,
    );
    let postgres = match cluster {
        None => None,
        Some(cluster) => {
            let listen = free_port()?;
            gate.push_str(&format!(
                "target bench_db {{ postgres {{ host = \"127.0.0.1\" port = {port} }} }}\n\
                 credential bench_role {{ postgres_role {{ grant = [\"{granted}\"] ttl = 15m }} }}\n\
                 permit bench_connects {{ workload bench target bench_db credential bench_role \
                 when request.action == \"connect\" }}\n",
                port = cluster.port,
                granted = pg::GRANTED,
            ));
            let password = pg::write_admin_password(dir)?;
            config.push_str(&format!(
                "\n[[credentials.postgres]]\ntarget = \"bench_db\"\nhost = \"127.0.0.1\"\n\
                 port = {port}\ndatabase = \"{database}\"\nadmin_user = \"{admin}\"\n\
                 admin_password_file = {password:?}\n\n\
                 [[proxy.postgres]]\ntarget = \"bench_db\"\nlisten = \"127.0.0.1:{listen}\"\n\
                 upstream_host = \"127.0.0.1\"\nupstream_port = {port}\n",
                port = cluster.port,
                database = pg::DATABASE,
                admin = pg::ADMIN_USER,
                password = password.to_str().context("a path that is not UTF-8")?,
            ));
            Some(listen)
        }
    };
    std::fs::write(policy.join("bench.gate"), gate)?;
    let path = dir.join("portcullis.toml");
    std::fs::write(&path, config)?;
    Ok(Listeners {
        config: path,
        http,
        postgres,
    })
}

/// Starts `portcullis serve` and waits until its `proxies` listen.
fn start_server(binary: &Path, config: &Path, data: &Path, proxies: usize) -> Result<Child> {
    use std::io::{BufRead as _, BufReader};
    let mut child = Command::new(binary)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{}`", binary.display()))?;
    let stderr = child.stderr.take().context("no standard error")?;
    let mut lines = BufReader::new(stderr).lines();
    let mut listening = 0;
    while listening < proxies {
        let Some(line) = lines.next() else {
            bail!("the server stopped before its proxies listened");
        };
        if line?.contains("proxy_listening") {
            listening += 1;
        }
    }
    // The rest of the log is read and dropped, so that the server never blocks on it.
    std::thread::spawn(move || lines.for_each(drop));
    Ok(child)
}

fn stop(server: &mut Child) {
    let _ = Command::new("kill")
        .args(["-INT", &server.id().to_string()])
        .status();
    let _ = server.wait();
}
