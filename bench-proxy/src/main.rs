//! Proxy overhead, measured: HTTP requests per second and latency through the reverse-mode
//! proxy of a running `portcullis serve`, against the same upstream asked directly, in the
//! same run with the same load generator.
//!
//! The upstream is a minimal HTTP/1.1 server in this process answering 200 with a short body;
//! the load generator keeps `--connections` keep-alive connections busy for `--seconds`, one
//! request in flight each. Through the proxy each request is attested (a cached token after
//! the first), decided, recorded durably in the audit log, and forwarded with the credential
//! (a minted JWT, reused per caller for `credential_reuse_s`).
//!
//! Run: `cargo build --release --bin portcullis -p portcullis-bench-proxy` and then
//! `target/release/portcullis-bench-proxy`. docs/proxy.md#benchmark has figures.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

#[derive(Debug, Parser)]
struct Args {
    /// The server binary to measure.
    #[arg(long, default_value = "target/release/portcullis")]
    portcullis: PathBuf,
    /// How long each load runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Keep-alive connections, one request in flight on each.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// The proxy's `credential_reuse_s`; 0 issues a credential per request.
    #[arg(long, default_value_t = 60)]
    reuse_s: u64,
    /// The audit log's `flush_interval_ms`: 0 syncs every commit (the default), more trades
    /// that many milliseconds of events at a power cut for fewer syncs.
    #[arg(long, default_value_t = 0)]
    flush_interval_ms: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !args.portcullis.exists() {
        bail!(
            "`{}` does not exist; build it with `cargo build --release --bin portcullis`",
            args.portcullis.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(&args))
}

async fn run(args: &Args) -> Result<()> {
    let upstream = start_upstream().await?;
    let dir = tempfile::tempdir()?;
    let (config, proxy) = write_config(dir.path(), upstream, args)?;
    let mut server = start_server(&args.portcullis, &config, &dir.path().join("data"))?;
    let token = mint_token()?;
    let evidence = format!("Bearer {token}");
    let duration = Duration::from_secs(args.seconds);
    // Warm-up: the first request attests, mints and fills the caches.
    load(proxy, Some(&evidence), 1, Duration::from_millis(500)).await?;
    let direct = load(upstream, None, args.connections, duration).await?;
    let proxied = load(proxy, Some(&evidence), args.connections, duration).await?;
    stop(&mut server);
    println!(
        "proxy benchmark: {} connections, {} s each, credential_reuse_s {}, flush_interval_ms {}",
        args.connections, args.seconds, args.reuse_s, args.flush_interval_ms
    );
    println!(
        "{:<10} {:>12} {:>12} {:>12} {:>8}",
        "", "requests/s", "median µs", "p99 µs", "errors"
    );
    for (name, stats) in [("direct", &direct), ("proxy", &proxied)] {
        println!(
            "{name:<10} {:>12.0} {:>12} {:>12} {:>8}",
            stats.per_second(duration),
            stats.percentile(50),
            stats.percentile(99),
            stats.errors
        );
    }
    let ratio = proxied.per_second(duration) / direct.per_second(duration).max(1.0);
    println!(
        "proxy/direct throughput {:.1} % (goal ≥ 80 %); added median {} µs (goal ≤ 100 µs), \
         added p99 {} µs",
        ratio * 100.0,
        proxied.percentile(50).saturating_sub(direct.percentile(50)),
        proxied.percentile(99).saturating_sub(direct.percentile(99)),
    );
    Ok(())
}

/// An HTTP/1.1 server on loopback answering every request with 200 and a short body.
async fn start_upstream() -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"{\"invoices\":[1,2]}",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
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

/// The configuration and policy of the measured server; the proxy's address.
fn write_config(dir: &Path, upstream: SocketAddr, args: &Args) -> Result<(PathBuf, SocketAddr)> {
    let mut jwk = Jwk::from_encoding_key(&key()?, Algorithm::ES256)?;
    jwk.common.key_id = Some("bench".to_owned());
    let jwks = dir.join("bench.jwks.json");
    std::fs::write(&jwks, serde_json::to_string(&JwkSet { keys: vec![jwk] })?)?;
    let policy = dir.join("policy");
    std::fs::create_dir(&policy)?;
    std::fs::write(
        policy.join("bench.gate"),
        "workload bench { oidc { sub == \"bench-client\" } }\n\
         target bench_api { https { host = \"bench.internal\" } }\n\
         credential bench_token { jwt { audience = \"bench_api\" ttl = 15m } }\n\
         permit bench_reads { workload bench target bench_api credential bench_token \
         when request.action == \"GET\" }\n",
    )?;
    let proxy: SocketAddr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?
    };
    let config = dir.join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[policy]\ndir = {policy:?}\n\n[audit]\nflush_interval_ms = {flush}\n\n\
             [[trust_providers]]\nname = \"bench-idp\"\nkind = \"oidc\"\nissuer = \"{ISSUER}\"\n\
             audiences = [\"portcullis\"]\njwks_file = {jwks:?}\n\n\
             [[proxy.http]]\ntarget = \"bench_api\"\nlisten = \"{proxy}\"\n\
             upstream = \"http://{upstream}\"\ncredential_reuse_s = {reuse}\n",
            policy = policy.to_str().context("a path that is not UTF-8")?,
            jwks = jwks.to_str().context("a path that is not UTF-8")?,
            flush = args.flush_interval_ms,
            reuse = args.reuse_s,
        ),
    )?;
    Ok((config, proxy))
}

/// Starts `portcullis serve` and waits until its proxy listens.
fn start_server(binary: &Path, config: &Path, data: &Path) -> Result<Child> {
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
    loop {
        let Some(line) = lines.next() else {
            bail!("the server stopped before its proxy listened");
        };
        if line?.contains("proxy_listening") {
            break;
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

/// Latencies in microseconds, and failed requests.
#[derive(Default)]
struct Stats {
    latencies_us: Vec<u32>,
    errors: usize,
}

impl Stats {
    #[expect(clippy::cast_precision_loss, reason = "a count of requests as a rate")]
    fn per_second(&self, duration: Duration) -> f64 {
        self.latencies_us.len() as f64 / duration.as_secs_f64()
    }

    fn percentile(&self, p: usize) -> u32 {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let idx = (sorted.len() * p / 100).min(sorted.len().saturating_sub(1));
        sorted.get(idx).copied().unwrap_or(0)
    }
}

/// Keeps `connections` keep-alive connections to `addr` busy with GET requests for `duration`.
async fn load(
    addr: SocketAddr,
    evidence: Option<&str>,
    connections: usize,
    duration: Duration,
) -> Result<Stats> {
    let deadline = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let evidence = evidence.map(str::to_owned);
        tasks.spawn(async move { one_connection(addr, evidence, deadline).await });
    }
    let mut stats = Stats::default();
    while let Some(done) = tasks.join_next().await {
        let done = done??;
        stats.latencies_us.extend(done.latencies_us);
        stats.errors += done.errors;
    }
    Ok(stats)
}

async fn one_connection(
    addr: SocketAddr,
    evidence: Option<String>,
    deadline: Instant,
) -> Result<Stats> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut stats = Stats::default();
    while Instant::now() < deadline {
        let mut request = Request::get("/v1/invoices").header("host", "bench.internal");
        if let Some(evidence) = &evidence {
            request = request.header("x-portcullis-evidence", evidence);
        }
        let request = request.body(Empty::<Bytes>::new())?;
        let started = Instant::now();
        let response = sender.send_request(request).await?;
        let ok = response.status().is_success();
        response.into_body().collect().await?;
        let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        if ok {
            stats.latencies_us.push(micros);
        } else {
            stats.errors += 1;
        }
    }
    Ok(stats)
}
