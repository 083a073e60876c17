//! `portcullis serve`: compile the policy set, build the trust providers, open the audit
//! store, and answer decisions until Ctrl-C or SIGTERM; then stop taking requests, finish the
//! ones in flight, and seal the audit log into Parquet. Meanwhile the policy is reloaded when
//! its files change, on SIGHUP, and on `POST /v1/admin/reload` ([`crate::reload`]).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use portcullis_audit::AuditLog;
use portcullis_engine::api::admin::{Admin, AdminToken};
use portcullis_engine::api::audit_query::AuditQueryApi;
use portcullis_engine::api::proxy::HttpProxySpec;
use portcullis_engine::api::{self, Engine, ProgramSlot};
use portcullis_engine::attest::{Attestor, TrustProvider};
use portcullis_engine::credentials::{CredentialIssuer, KeyRing};
use portcullis_engine::postgres_roles::PostgresRoles;

use crate::audit_api::SqlOverStore;
use crate::config::{AdminTokenFile, Config, DashboardListen};
use crate::policy::PolicyLoader;
use crate::reload::{HangUps, Reloader};

pub fn run(config_path: &Path, listen: Option<SocketAddr>, data_dir: Option<&Path>) -> Result<()> {
    init_logging();
    let config = Config::load(config_path)?;
    // The trust providers first: their custom claims are part of the policy language.
    let in_config = || format!("configuration `{}`", config_path.display());
    let attestor = build_attestor(&config).with_context(in_config)?;
    let admin_token = warn_if_shared(config.admin_token().with_context(in_config)?);
    let oauth_clients = config.oauth_clients().with_context(in_config)?;
    let postgres_servers = config.postgres_servers().with_context(in_config)?;
    let audit_token = warn_if_shared(config.audit_token().with_context(in_config)?);
    config.check_listeners().with_context(in_config)?;
    let http_proxies = config.http_proxies().with_context(in_config)?;
    let postgres_proxies = config.postgres_proxies().with_context(in_config)?;
    for mismatch in config.postgres_upstream_mismatches() {
        tracing::warn!(mismatch, "postgres_proxy_upstream_mismatch");
    }
    let loader =
        PolicyLoader::new(config.policy_source())?.with_rollback_guard(&config.data_dir(data_dir));
    let fingerprint = loader.fingerprint();
    let program = loader
        .load(attestor.custom_claims())
        .map_err(|error| error.into_startup_error())?;
    check_proxy_targets(&program, &http_proxies, &postgres_proxies);
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
        if admin_token.is_some() || audit_token.is_some() {
            tracing::warn!(
                %listen,
                "bearer tokens travel in clear text beyond loopback; put TLS in front"
            );
        }
    }
    let dashboard_listener = match config.dashboard_listen() {
        Some(listen) => runtime.block_on(bind_dashboard(listen))?,
        None => None,
    };
    let mut proxy_listeners = Vec::new();
    let mut proxy_unix = Vec::new();
    // Removed when the server stops, or when it fails to start after making them.
    let mut own_sockets = OwnSockets(Vec::new());
    for (spec, raw) in http_proxies.into_iter().zip(&config.proxy.http) {
        if let Some(path) = &raw.listen_socket {
            let path = config.resolve(path);
            let listener = runtime
                .block_on(bind_local(&path))
                .with_context(|| format!("the proxy socket of target `{}`", spec.target))?;
            own_sockets.0.push(socket_inode(&path));
            proxy_unix.push((spec, listener, path));
            continue;
        }
        let Some(listen) = raw.listen else { continue };
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(listen))
            .with_context(|| {
                format!(
                    "cannot listen on {listen} for the proxy of target `{}`",
                    spec.target
                )
            })?;
        if !listen.ip().is_loopback() {
            tracing::warn!(
                %listen,
                target = %spec.target,
                "the proxy listens beyond loopback, as configured; callers' tokens travel in \
                 clear text: put TLS in front"
            );
        }
        proxy_listeners.push((ProxySpec::Http(spec), listener));
    }
    for (spec, raw) in postgres_proxies.into_iter().zip(&config.proxy.postgres) {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(raw.listen))
            .with_context(|| {
                format!(
                    "cannot listen on {} for the PostgreSQL proxy of target `{}`",
                    raw.listen, spec.target
                )
            })?;
        if !raw.listen.ip().is_loopback() && spec.client_tls.is_none() {
            tracing::warn!(
                listen = %raw.listen,
                target = %spec.target,
                "the PostgreSQL proxy listens beyond loopback without TLS: callers' tokens \
                 travel in clear text; give it `tls_cert_file` and `tls_key_file`"
            );
        }
        proxy_listeners.push((ProxySpec::Postgres(spec), listener));
    }
    let local_listener = match config.local_socket() {
        Some(path) => Some((runtime.block_on(bind_local(&path))?, path)),
        None => None,
    };
    if let Some((_, path)) = &local_listener {
        own_sockets.0.push(socket_inode(path));
    }
    let data_dir = config.data_dir(data_dir);
    private_data_dir(&data_dir)?;
    let node = config.audit.node.clone().unwrap_or_else(host_name);
    let options = config.audit.options(node);
    // The store logs what its recovery found.
    let (audit, _recovery) = AuditLog::open(&data_dir, options)
        .with_context(|| format!("cannot open the audit store in `{}`", data_dir.display()))?;
    let reloader = Arc::new(Reloader::new(loader, fingerprint));
    let query = SqlOverStore::new(data_dir.clone(), config.audit.query_limits());
    let readers: Vec<AdminToken> = [admin_token.as_ref(), audit_token.as_ref()]
        .into_iter()
        .flatten()
        .map(|file| AdminToken::new(&file.token))
        .collect();
    let audit_query = (!readers.is_empty()).then(|| AuditQueryApi {
        readers,
        query: Arc::new(query),
    });
    let dashboard = match dashboard_listener {
        Some(listener) => {
            let tokens = [admin_token.as_ref(), audit_token.as_ref()];
            let dashboard = build_dashboard(&data_dir, &config, &listener, tokens)?;
            Some((listener, dashboard))
        }
        None => None,
    };
    let admin = admin_token.map(|file| Admin {
        token: AdminToken::new(&file.token),
        reload: Arc::clone(&reloader) as _,
    });
    let now = unix_now();
    let ring = KeyRing::open(&data_dir, config.credentials.rotation(), now).with_context(|| {
        format!(
            "cannot open the credential key ring in `{}`",
            data_dir.display()
        )
    })?;
    let local = listener.local_addr()?;
    let issuer = config
        .credentials
        .issuer
        .clone()
        .unwrap_or_else(|| format!("http://{local}"));
    if portcullis_engine::http::check_url(&issuer).is_err() {
        tracing::warn!(
            %issuer,
            "minted tokens name an issuer over plain http beyond loopback: targets would fetch \
             the keys that verify them where anyone on the path can replace them; set \
             `credentials.issuer` to the https URL targets reach this server at"
        );
    }
    let roles = PostgresRoles::new(&data_dir, postgres_servers);
    // Roles that expired while the server was down are dropped before it serves.
    if let Err(error) = roles.drop_expired(unix_now()) {
        tracing::error!(%error, "postgres_role_ledger_unreadable");
    }
    let credentials = Arc::new(CredentialIssuer::new(ring, issuer, oauth_clients, roles));
    crate::reload::warn_not_issuable(&credentials, program.bundle());
    let role_drop_interval = Duration::from_secs(config.credentials.role_drop_interval_s);
    let engine = Arc::new(Engine {
        program: ProgramSlot::new(program),
        attestor,
        audit: Arc::new(audit),
        max_body_bytes: config.server.max_body_bytes,
        header_read_timeout: std::time::Duration::from_secs(config.server.header_read_timeout_s),
        admin,
        audit_query,
        credentials: Some(Arc::clone(&credentials)),
        metrics: portcullis_engine::metrics::Metrics::default(),
    });
    reloader.record_startup(&engine)?;
    let reloads = Reloads {
        reloader,
        watch_interval: config.watch_interval(),
        role_drop_interval,
    };
    let dashboard = dashboard.map(|(listener, dashboard)| DashboardServing {
        listener,
        dashboard,
        data_dir: data_dir.clone(),
        evaluate_every: config.evaluate_every(),
        query_memory_bytes: config.audit.query_limits().memory_bytes,
    });
    let served = runtime.block_on(serve(
        Arc::clone(&engine),
        listener,
        local_listener.as_ref().map(|(_, path)| path.clone()),
        local_listener.map(|(listener, _)| listener),
        proxy_listeners,
        proxy_unix,
        reloads,
        dashboard,
    ));
    drop(own_sockets);
    served?;
    // Dropping the runtime ends any connection still open after the grace period, and waits
    // for a reload in progress.
    drop(runtime);
    close_audit(engine)
}

/// How long requests in flight may take to finish after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A bearer token's file, when the configuration names one; warns when others can read it.
/// A listener whose target the policy lacks, or declares for another protocol, refuses every
/// request or connection; said at start (a warning, since a reload may bring the target).
fn check_proxy_targets(
    program: &portcullis_lang::vm::Program,
    http: &[HttpProxySpec],
    postgres: &[api::proxy_pg::PostgresProxySpec],
) {
    use portcullis_lang::ir::Protocol;
    let listeners = http
        .iter()
        .filter(|spec| !spec.forward)
        .map(|spec| {
            (
                spec.target.as_str(),
                "http",
                [Protocol::Http, Protocol::Https],
            )
        })
        .chain(
            postgres
                .iter()
                .map(|spec| (spec.target.as_str(), "postgres", [Protocol::Postgres; 2])),
        );
    for (target, listener, protocols) in listeners {
        match program.target(target) {
            None => tracing::warn!(
                target,
                listener,
                why = "the policy declares no such target: every request on this listener is \
                       refused as `unknown_target`",
                "proxy_target_not_in_policy"
            ),
            Some(declared) if !protocols.contains(&declared.protocol) => tracing::warn!(
                target,
                listener,
                protocol = declared.protocol.keyword(),
                why = "the target is declared for another protocol than the listener speaks",
                "proxy_target_protocol_mismatch"
            ),
            Some(_) => {}
        }
    }
}

fn warn_if_shared(file: Option<AdminTokenFile>) -> Option<AdminTokenFile> {
    if let Some(file) = &file
        && file.readable_by_others
    {
        tracing::warn!(
            file = %file.path.display(),
            "a token file is readable by other users; `chmod 600` it"
        );
    }
    file
}

/// A proxy listener of either protocol.
enum ProxySpec {
    Http(HttpProxySpec),
    Postgres(portcullis_engine::api::proxy_pg::PostgresProxySpec),
}

/// The dashboard's listener and what it serves.
struct DashboardServing {
    listener: tokio::net::TcpListener,
    dashboard: portcullis_dashboard::Dashboard,
    data_dir: std::path::PathBuf,
    /// How often compliance is evaluated for it; `None`: never.
    evaluate_every: Option<Duration>,
    /// The memory limit of each evidence query.
    query_memory_bytes: usize,
}

/// Binds the dashboard's listener. The default address taken by another server (a second
/// server on one machine) only leaves this one without a dashboard, said in the log; an
/// address the configuration names must be had.
async fn bind_dashboard(listen: DashboardListen) -> Result<Option<tokio::net::TcpListener>> {
    match tokio::net::TcpListener::bind(listen.addr).await {
        Ok(listener) => Ok(Some(listener)),
        Err(error) if !listen.configured && error.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::warn!(
                listen = %listen.addr,
                %error,
                why = "the dashboard's default address is in use; set `[dashboard] listen` to \
                       serve it elsewhere",
                "dashboard_not_started"
            );
            Ok(None)
        }
        Err(error) => Err(error)
            .with_context(|| format!("cannot listen on {} for the dashboard", listen.addr)),
    }
}

/// The dashboard over `data_dir`. Beyond loopback every page needs the admin or the audit
/// token (the configuration refuses to start without the admin token there).
fn build_dashboard(
    data_dir: &Path,
    config: &Config,
    listener: &tokio::net::TcpListener,
    tokens: [Option<&AdminTokenFile>; 2],
) -> Result<portcullis_dashboard::Dashboard> {
    let dashboard =
        portcullis_dashboard::Dashboard::new(data_dir.to_path_buf(), config.audit.query_limits())
            .with_evaluation(config.evaluate_every());
    let loopback = listener
        .local_addr()
        .is_ok_and(|address| address.ip().is_loopback());
    if loopback && !config.dashboard_requires_token() {
        return Ok(dashboard);
    }
    if !loopback {
        tracing::warn!(
            "the dashboard listens beyond loopback, as configured; its token travels in clear \
             text: put TLS in front"
        );
    }
    let tokens: Vec<_> = tokens
        .into_iter()
        .flatten()
        .map(|file| portcullis_dashboard::AccessToken::new(&file.token))
        .collect();
    // The configuration's check makes this unreachable; should it ever be reached, the
    // dashboard stays shut rather than open to the network.
    anyhow::ensure!(
        !tokens.is_empty(),
        "the dashboard requires a token, which needs `[server] admin_token_file`"
    );
    Ok(dashboard.with_tokens(tokens))
}

/// What reloads the policy while the server runs, besides the admin API.
struct Reloads {
    reloader: Arc<Reloader>,
    /// `None` when watching is off.
    watch_interval: Option<Duration>,
    /// How often expired `postgres_role` roles are dropped.
    role_drop_interval: Duration,
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
    let attestor = Attestor::new(providers)?;
    // Remote keys are fetched before the first request; a provider whose issuer cannot be
    // reached now denies its callers (`keys_unavailable`) until a later fetch succeeds.
    attestor.fetch_remote_keys();
    Ok(attestor)
}

/// The Unix sockets this server made, each with its inode: removed when dropped, if still
/// the ones it made.
struct OwnSockets(Vec<(std::path::PathBuf, Option<u64>)>);

impl Drop for OwnSockets {
    fn drop(&mut self) {
        for (path, inode) in self.0.drain(..) {
            remove_own_socket(&path, inode);
        }
    }
}

/// Binds the Unix socket of local processes at `path`, replacing a stale socket a stopped
/// server left there (never another kind of file), and opens it to every local user: each
/// caller is attested by its peer credentials, and the policy decides what it gets.
async fn bind_local(path: &std::path::Path) -> Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            // A socket that still answers belongs to a running server: never take it over.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                anyhow::bail!(
                    "the Unix socket `{}` is in use: another server listens on it",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("cannot replace the stale socket `{}`", path.display()))?;
        }
        Ok(_) => anyhow::bail!(
            "the Unix socket `{}` would replace a file that exists and is not a socket",
            path.display()
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("cannot look at `{}`", path.display()));
        }
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("cannot listen on the Unix socket `{}`", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .with_context(|| format!("cannot open `{}` to local users", path.display()))?;
    Ok(listener)
}

/// Removes the socket at `path` at stop if it is still the one this server made (`inode`):
/// a socket another server made there since is left alone.
/// A socket's path and inode, to remove it at exit only if it is still the one bound.
fn socket_inode(path: &std::path::Path) -> (std::path::PathBuf, Option<u64>) {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::symlink_metadata(path)
        .ok()
        .map(|metadata| metadata.ino());
    (path.to_path_buf(), inode)
}

fn remove_own_socket(path: &std::path::Path, inode: Option<u64>) {
    use std::os::unix::fs::MetadataExt;
    let ours = std::fs::symlink_metadata(path).is_ok_and(|metadata| Some(metadata.ino()) == inode);
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one argument per kind of listener; a struct of them would only rename the list"
)]
async fn serve(
    engine: Arc<Engine>,
    listener: tokio::net::TcpListener,
    local_path: Option<std::path::PathBuf>,
    local_listener: Option<tokio::net::UnixListener>,
    proxy_listeners: Vec<(ProxySpec, tokio::net::TcpListener)>,
    proxy_unix: Vec<(HttpProxySpec, tokio::net::UnixListener, std::path::PathBuf)>,
    reloads: Reloads,
    dashboard: Option<DashboardServing>,
) -> Result<()> {
    let local = listener.local_addr()?;
    // Registered before the server says it listens: a stop signal sent as soon as it does
    // must stop it gracefully, not kill it with the log unsealed; a SIGHUP must reload, not
    // end the process.
    let signals = StopSignals::register()?;
    let hang_ups = HangUps::register()?;
    let mut reloading = tokio::task::JoinSet::new();
    let reloader = &reloads.reloader;
    reloading.spawn(hang_ups.reload_on_each(Arc::clone(&engine), Arc::clone(reloader)));
    if let Some(interval) = reloads.watch_interval {
        let watch = crate::reload::watch(Arc::clone(&engine), Arc::clone(reloader), interval);
        reloading.spawn(watch);
    }
    if let Some(credentials) = &engine.credentials {
        reloading.spawn(maintain_key_ring(Arc::clone(credentials)));
        reloading.spawn(drop_expired_roles(
            Arc::clone(credentials),
            reloads.role_drop_interval,
        ));
    }
    let watch_interval_ms = reloads
        .watch_interval
        .map_or(0, |interval| interval.as_millis());
    let local_socket = local_path
        .as_ref()
        .map(|path| path.display().to_string())
        .unwrap_or_default();
    tracing::info!(
        listen = %local,
        bundle = %format!("sha256:{}", engine.program.current().hash_hex()),
        watch_interval_ms,
        admin_api = engine.admin.is_some(),
        local_socket,
        "listening"
    );
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let stopping = async move {
        signals.recv().await;
        tracing::info!("stopping");
        let _ = stop_tx.send(true);
    };
    let local_stop = {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        }
    };
    let local_server = {
        let engine = Arc::clone(&engine);
        async move {
            match local_listener {
                Some(listener) => api::serve_local(listener, engine, local_stop).await,
                None => Ok(()),
            }
        }
    };
    let mut proxies = tokio::task::JoinSet::new();
    for (spec, listener, path) in proxy_unix {
        let mut stop = stop_rx.clone();
        let stopped = async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        };
        tracing::info!(
            listen_socket = %path.display(),
            target = %spec.target,
            upstream = %format!(
                "{}://{}{}",
                spec.upstream_scheme, spec.upstream_authority, spec.upstream_base_path
            ),
            "proxy_listening"
        );
        proxies.spawn(api::proxy::serve_http_proxy_local(
            Arc::clone(&engine),
            spec,
            listener,
            stopped,
        ));
    }
    for (spec, listener) in proxy_listeners {
        let mut stop = stop_rx.clone();
        let stopped = async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        };
        let address = listener.local_addr()?;
        let engine = Arc::clone(&engine);
        match spec {
            ProxySpec::Http(spec) if spec.forward => {
                tracing::info!(listen = %address, mode = "forward", "proxy_listening");
                proxies.spawn(api::proxy::serve_http_proxy(
                    engine, spec, listener, stopped,
                ));
            }
            ProxySpec::Http(spec) => {
                tracing::info!(
                        listen = %address,
                        target = %spec.target,
                        upstream = %format!(
                    "{}://{}{}",
                    spec.upstream_scheme, spec.upstream_authority, spec.upstream_base_path
                ),
                        "proxy_listening"
                    );
                proxies.spawn(api::proxy::serve_http_proxy(
                    engine, spec, listener, stopped,
                ));
            }
            ProxySpec::Postgres(spec) => {
                tracing::info!(
                    listen = %address,
                    target = %spec.target,
                    upstream = %format!("{}:{}", spec.upstream_host, spec.upstream_port),
                    "postgres_proxy_listening"
                );
                // The proxy cuts its sessions off itself, within the grace period, so that it
                // can first cancel what they run upstream.
                proxies.spawn(api::proxy_pg::serve_postgres_proxy(
                    engine,
                    spec,
                    listener,
                    stopped,
                    SHUTDOWN_GRACE.saturating_sub(Duration::from_secs(1)),
                ));
            }
        }
    }
    if let Some(serving) = dashboard {
        let mut stop = stop_rx.clone();
        let stopped = async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        };
        let address = serving.listener.local_addr()?;
        tracing::info!(
            listen = %address,
            token_required = serving.dashboard.requires_token(),
            "dashboard_listening"
        );
        if let Some(every) = serving.evaluate_every {
            reloading.spawn(crate::dashboard::evaluate_compliance(
                serving.data_dir.clone(),
                every,
                serving.query_memory_bytes,
            ));
        }
        proxies.spawn(api::listen::serve(
            serving.listener,
            portcullis_dashboard::router(serving.dashboard),
            engine.header_read_timeout,
            stopped,
        ));
    }
    let proxies_done = async move {
        let mut result = Ok(());
        while let Some(done) = proxies.join_next().await {
            let done = done
                .map_err(std::io::Error::other)
                .and_then(|served| served);
            result = result.and(done);
        }
        result
    };
    let server = api::serve(listener, engine, stopping);
    let both = async {
        let (tcp, local, proxied) = tokio::join!(server, local_server, proxies_done);
        tcp.and(local).and(proxied)
    };
    tokio::select! {
        served = both => served?,
        () = grace_expired(&mut stop_rx) => {
            tracing::warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "requests_cut_off_at_shutdown");
        }
    }
    // No reload starts after this; one in progress finishes on the blocking pool.
    reloading.shutdown().await;
    tracing::info!("stopped_taking_requests");
    Ok(())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
}

/// How often the credential key ring is checked for a key to make or retire.
const KEY_RING_CHECK: Duration = Duration::from_secs(600);

/// Rotates and retires credential signing keys on their schedule while the server runs.
async fn maintain_key_ring(credentials: Arc<CredentialIssuer>) {
    every(
        KEY_RING_CHECK,
        "credential_key_ring_maintenance_failed",
        move |now| {
            credentials
                .ring
                .maintain(now)
                .map(drop)
                .map_err(|error| error.to_string())
        },
    )
    .await;
}

/// Drops the `postgres_role` roles whose time is up, every `interval`.
async fn drop_expired_roles(credentials: Arc<CredentialIssuer>, interval: Duration) {
    every(interval, "postgres_role_drop_failed", move |now| {
        credentials.postgres.drop_expired(now).map(drop)
    })
    .await;
}

/// Runs `work` on a blocking thread every `interval` (the first time one interval from now),
/// with the time, and logs its failures as `failed`.
async fn every(
    interval: Duration,
    failed: &'static str,
    work: impl Fn(i64) -> Result<(), String> + Send + Sync + 'static,
) {
    let work = Arc::new(work);
    let mut ticks = tokio::time::interval(interval);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let work = Arc::clone(&work);
        let now = unix_now();
        let outcome = tokio::task::spawn_blocking(move || work(now)).await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "{failed}"),
            Err(error) => tracing::error!(%error, "{failed}"),
        }
    }
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

/// The data directory holds every access event with its claims, the audit signing key and
/// the credential-reference key: it is created readable by its owner alone, whatever the
/// umask, and one that others can read is reported at every start.
fn private_data_dir(data_dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};

    match std::fs::metadata(data_dir) {
        Ok(metadata) => {
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    data_dir = %data_dir.display(),
                    mode = format!("{mode:o}"),
                    "the data directory is open to other users; `chmod 700` it"
                );
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .with_context(|| format!("cannot create the data directory `{}`", data_dir.display())),
        Err(error) => Err(error)
            .with_context(|| format!("cannot read the data directory `{}`", data_dir.display())),
    }
}
