//! `portcullis serve`: compile the policy set, build the trust providers, open the audit
//! store, and answer decisions until Ctrl-C or SIGTERM; then stop taking requests, finish the
//! ones in flight, and seal the audit log into Parquet.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use portcullis_audit::{AuditLog, AuditOptions};
use portcullis_engine::api::{self, Engine};
use portcullis_engine::attest::{Attestor, TrustProvider};
use portcullis_engine::vm::Program;
use portcullis_lang::bundle::{Bundle, BundleError, VerifyingKey, signing};
use portcullis_lang::schema::CustomClaims;

use crate::config::{Config, PolicySource};

pub fn run(config_path: &Path, listen: Option<SocketAddr>, data_dir: Option<&Path>) -> Result<()> {
    init_logging();
    let config = Config::load(config_path)?;
    // The trust providers first: their custom claims are part of the policy language.
    let attestor = build_attestor(&config)?;
    let program = match config.policy_source() {
        PolicySource::Sources(path) => compile_policy_set(&path, attestor.custom_claims())?,
        PolicySource::Bundle { path, public_key } => {
            let public_key = public_key.map(|path| read_public_key(&path)).transpose()?;
            load_bundle(&path, public_key.as_ref(), attestor.custom_claims())?
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Bind first: a server that cannot listen leaves no data directory behind.
    let listen = listen.unwrap_or(config.server.listen);
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(listen))
        .with_context(|| format!("cannot listen on {listen}"))?;
    if !listen.ip().is_loopback() {
        tracing::warn!(%listen, "listening beyond loopback, as configured");
    }
    let data_dir = config.data_dir(data_dir);
    let node = config.audit.node.clone().unwrap_or_else(host_name);
    let options = AuditOptions {
        node,
        ..AuditOptions::default()
    };
    // The store logs what its recovery found.
    let (audit, _recovery) = AuditLog::open(&data_dir, options)
        .with_context(|| format!("cannot open the audit store in `{}`", data_dir.display()))?;
    let engine = Arc::new(Engine {
        program: Arc::new(program),
        attestor,
        audit: Arc::new(audit),
        max_body_bytes: config.server.max_body_bytes,
    });
    runtime.block_on(serve(Arc::clone(&engine), listener))?;
    // Dropping the runtime ends any connection still open after the grace period.
    drop(runtime);
    close_audit(engine)
}

/// How long requests in flight may take to finish after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Bundles larger than this are refused before they are read.
const MAX_BUNDLE_BYTES: u64 = 256 * 1024 * 1024;

fn compile_policy_set(path: &Path, custom_claims: &CustomClaims) -> Result<Program> {
    let files = portcullis_lang::source::read_policy_path(path)
        .with_context(|| format!("cannot read the policy set `{}`", path.display()))?;
    let set = match portcullis_lang::compile_with_claims(&files, custom_claims) {
        Ok(set) => set,
        Err(diagnostics) => {
            let color = std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none();
            eprint!(
                "{}",
                portcullis_lang::diagnostic::render(&diagnostics, color)
            );
            bail!(
                "the policy set `{}` has {} errors",
                path.display(),
                diagnostics.len()
            );
        }
    };
    if set.rules.is_empty() {
        tracing::warn!(policy = %path.display(), "the policy set has no rules; every decision will deny");
    }
    let bundle = Bundle::from_policy_set(&set).context("cannot build the bundle")?;
    let program = Program::from_bundle(bundle).context("cannot load the bundle")?;
    tracing::info!(
        policy = %path.display(),
        files = files.len(),
        rules = set.rules.len(),
        bundle = %format!("sha256:{}", program.hash_hex()),
        "policy_set_compiled"
    );
    Ok(program)
}

/// Public key files larger than this are refused unread; a PEM ed25519 key takes 113 bytes.
const MAX_PUBLIC_KEY_BYTES: u64 = 64 * 1024;

/// The configured `[policy] public_key` and the file it came from.
struct PublicKey {
    path: std::path::PathBuf,
    key: VerifyingKey,
}

fn read_public_key(path: &Path) -> Result<PublicKey> {
    let text = crate::config::read_bounded(path, MAX_PUBLIC_KEY_BYTES)
        .with_context(|| format!("cannot read the public key `{}`", path.display()))?;
    let key = signing::verifying_key_from_pem(&text)
        .with_context(|| format!("cannot use the public key `{}`", path.display()))?;
    Ok(PublicKey {
        path: path.to_owned(),
        key,
    })
}

/// Loads a prebuilt bundle, which must have been compiled with the custom claims that the
/// configuration declares: the claim ids in its code are theirs. With a public key, it must
/// also carry that key's signature over its bytes, checked before its sections are read.
fn load_bundle(
    path: &Path,
    public_key: Option<&PublicKey>,
    custom_claims: &CustomClaims,
) -> Result<Program> {
    let cannot_read = || format!("cannot read the bundle `{}`", path.display());
    let size = std::fs::metadata(path).with_context(cannot_read)?.len();
    if size > MAX_BUNDLE_BYTES {
        bail!(
            "the bundle `{}` is {size} bytes; the limit is {MAX_BUNDLE_BYTES}",
            path.display()
        );
    }
    let bytes = std::fs::read(path).with_context(cannot_read)?;
    let bundle = read_bundle(path, &bytes, public_key)?;
    let program = Program::from_bundle(bundle)
        .with_context(|| format!("cannot load the bundle `{}`", path.display()))?;
    if let Some(mismatch) = program.custom_claims().mismatch(custom_claims) {
        bail!(
            "the bundle `{}` does not fit this configuration: {mismatch}; build it again with \
             `policyc build --claims` and the configuration's custom claims",
            path.display()
        );
    }
    tracing::info!(
        bundle_file = %path.display(),
        bundle = %format!("sha256:{}", program.hash_hex()),
        "bundle_loaded"
    );
    Ok(program)
}

/// Reads a bundle file's bytes; with a public key, only if that key signed them.
fn read_bundle(path: &Path, bytes: &[u8], public_key: Option<&PublicKey>) -> Result<Bundle> {
    let cannot_load = || format!("cannot load the bundle `{}`", path.display());
    let Some(public_key) = public_key else {
        let bundle = Bundle::from_bytes(bytes).with_context(cannot_load)?;
        if let Some(signature) = bundle.signature() {
            tracing::warn!(
                bundle_file = %path.display(),
                key = %signature.key_id(),
                "the bundle is signed, but no `public_key` is configured to check the signature"
            );
        }
        return Ok(bundle);
    };
    let bundle = match Bundle::from_bytes_verified(bytes, &public_key.key) {
        Ok(bundle) => bundle,
        Err(BundleError::Signature(error)) => bail!(
            "refusing the bundle `{}`: {error}; the public key `{}` (key {}) admits only \
             bundles signed with its private key (`policyc build --sign`)",
            path.display(),
            public_key.path.display(),
            signing::key_id(&public_key.key)
        ),
        Err(error) => return Err(error).with_context(cannot_load),
    };
    tracing::info!(
        bundle_file = %path.display(),
        key = %signing::key_id(&public_key.key),
        "bundle_signature_verified"
    );
    Ok(bundle)
}

fn build_attestor(config: &Config) -> Result<Attestor> {
    let mut providers = Vec::new();
    for (spec, raw) in config
        .trust_provider_specs()?
        .into_iter()
        .zip(&config.trust_providers)
    {
        if raw.example_only {
            tracing::warn!(
                provider = %spec.name,
                "trust provider uses a published example key; anyone can mint its tokens"
            );
        }
        providers.push(TrustProvider::new(spec)?);
    }
    if providers.is_empty() {
        tracing::warn!("no trust providers are configured; every decision will deny");
    }
    Ok(Attestor::new(providers)?)
}

async fn serve(engine: Arc<Engine>, listener: tokio::net::TcpListener) -> Result<()> {
    let local = listener.local_addr()?;
    // Registered before the server says it listens: a stop signal sent as soon as it does
    // must stop it gracefully, not kill it with the log unsealed.
    let signals = StopSignals::register()?;
    tracing::info!(
        listen = %local,
        bundle = %format!("sha256:{}", engine.program.hash_hex()),
        "listening"
    );
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let stopping = async move {
        signals.recv().await;
        tracing::info!("stopping");
        let _ = stop_tx.send(true);
    };
    let server = api::serve(listener, engine, stopping);
    tokio::select! {
        served = server => served?,
        () = grace_expired(&mut stop_rx) => {
            tracing::warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "requests_cut_off_at_shutdown");
        }
    }
    tracing::info!("stopped_taking_requests");
    Ok(())
}

/// Completes `SHUTDOWN_GRACE` after the stop signal; never, if there is none.
async fn grace_expired(stop: &mut tokio::sync::watch::Receiver<bool>) {
    if stop.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(SHUTDOWN_GRACE).await;
}

/// SIGINT and SIGTERM (Ctrl-C elsewhere), handled from the moment they are registered.
struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn register() -> Result<StopSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(StopSignals {
                interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
                terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignals {})
    }

    /// Completes at the first stop signal.
    async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {},
            _ = self.terminate.recv() => {},
        }
        #[cfg(not(unix))]
        {
            let _ = &mut self;
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Seals what the write-ahead log holds into Parquet. Events are durable in the log either
/// way; sealing on the way out makes them queryable at once.
fn close_audit(engine: Arc<Engine>) -> Result<()> {
    let engine = Arc::into_inner(engine).context("requests still hold the engine")?;
    let audit = Arc::into_inner(engine.audit).context("requests still hold the audit log")?;
    let report = audit.close().context("cannot seal the audit log")?;
    tracing::info!(events = report.events_sealed, "audit_log_sealed");
    Ok(())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "portcullis".to_owned())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}
