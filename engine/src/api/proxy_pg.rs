//! The PostgreSQL proxy: a listener for one target that speaks the wire protocol, so that a
//! stock `psql`, driver or pool connects through it unchanged, with its platform's token as
//! the password.
//!
//! In: a client connection — an optional SSLRequest (TLS when the listener has a
//! certificate), the startup message with `user` and `database`, and the password message,
//! whose text is the caller's evidence. The proxy attests the caller, decides the connection
//! (`request.action` is `connect`, `request.resource` is `DATABASE/USER`), issues the
//! credential the deciding permit names, records the decision, connects to the upstream server
//! with that credential (TLS verified unless the upstream is on loopback; SCRAM-SHA-256, md5
//! or a clear-text password, as the server asks), and relays the session. A credential issued
//! to a caller is used again for the same caller's next connections for a while
//! ([`super::reuse`]), so that a pool reconnecting does not make a role each time.
//! Out: a relayed session, or an `ErrorResponse` with SQLSTATE 28000 and the reason.
//!
//! The client is given a cancel key of the proxy's instead of the upstream's, and a
//! CancelRequest bearing it is passed on to the upstream with the upstream's key
//! ([`cancel`]).

mod cancel;
mod relay;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_audit::NewEvent;
use postgres_protocol::authentication::sasl::{self, ScramSha256};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use self::cancel::{CancelKeys, Registered, Replies};
use super::issuing::{Allowed, Authorized, Decided, Granted, decide, issue};
use super::reuse::{CredentialReuse, ReuseKey, reuse_until};
use super::{Caller, DecideBody, Engine, Evidence, RequestDetails, TargetSpec};
use crate::credentials::Zeroizing;

/// One PostgreSQL listener.
#[derive(Clone)]
pub struct PostgresProxySpec {
    /// The Gate target every connection on this listener is decided for.
    pub target: String,
    pub upstream_host: String,
    pub upstream_port: u16,
    /// TLS to the upstream, verified; `None` only for a loopback upstream.
    pub upstream_tls: Option<Arc<rustls::ClientConfig>>,
    /// TLS offered to clients; `None` answers their SSLRequest with `N`.
    pub client_tls: Option<Arc<rustls::ServerConfig>>,
    /// How long a credential issued to a caller is used again for its next connections (never
    /// past the credential's expiry or the caller's evidence's); 0 issues one per connection.
    pub credential_reuse_s: u64,
}

impl std::fmt::Debug for PostgresProxySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresProxySpec")
            .field("target", &self.target)
            .field("upstream_host", &self.upstream_host)
            .field("upstream_port", &self.upstream_port)
            .field("upstream_tls", &self.upstream_tls.is_some())
            .field("client_tls", &self.client_tls.is_some())
            .field("credential_reuse_s", &self.credential_reuse_s)
            .finish()
    }
}

/// The protocol version 3.0 startup code, and the special request codes.
const PROTOCOL_3: u32 = 196_608;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;

/// The largest startup or password message read from a client, and the largest message read
/// from the upstream during authentication.
const MAX_STARTUP_BYTES: usize = 10_000;
const MAX_PASSWORD_BYTES: usize = 64 * 1024;
const MAX_AUTH_MESSAGE_BYTES: usize = 64 * 1024;

/// How long a client may take to say who it is, and the upstream to accept the session.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// A byte stream either side may be: TCP, or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// What the sessions of one listener share.
struct Listener {
    spec: Arc<PostgresProxySpec>,
    /// The cancel keys its clients were given, while their sessions live.
    cancel_keys: Arc<CancelKeys>,
    /// The credentials issued to its callers, for their next connections.
    reuse: CredentialReuse<Kept>,
    /// The relays of its sessions, to cut them off.
    cut_offs: relay::CutOffs,
}

/// An issued credential as a listener keeps it for reuse: its value, and how the upstream
/// takes it (`postgres_uri`: a role and its password; anything else: a password).
#[derive(Clone)]
struct Kept {
    value: Zeroizing<String>,
    token_type: &'static str,
}

/// How long before the end of the drain the sessions are cut off and their upstreams asked to
/// cancel the queries they run (the proxy waits for the upstreams to take the requests).
const CANCEL_BEFORE_CUT_OFF: Duration = Duration::from_secs(2);

/// How long, of [`CANCEL_BEFORE_CUT_OFF`], the sessions are given to end at a message
/// boundary once told to; those that have not are dropped.
const CUT_OFF_WAIT: Duration = Duration::from_millis(500);

/// Serves `spec` on `listener` until `shutdown` completes. Sessions under way go on until
/// their clients close them or `drain` has passed since `shutdown`; then the query each runs
/// is cancelled in its upstream (a query left running would hold the server's resources, and
/// its locks, long after its client is gone), and the sessions are cut off: each client gets
/// FATAL 57P01 after the message under way ([`relay`]), a session that cannot get there is
/// dropped, and each ends in its `connection_closed` event.
pub async fn serve_postgres_proxy(
    engine: Arc<Engine>,
    spec: PostgresProxySpec,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let listening = Arc::new(Listener {
        spec: Arc::new(spec),
        cancel_keys: Arc::new(CancelKeys::default()),
        reuse: CredentialReuse::default(),
        cut_offs: relay::CutOffs::default(),
    });
    let mut sessions = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "proxy_accept_failed");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let listening = Arc::clone(&listening);
                sessions.spawn(session(Arc::clone(&engine), listening, stream, peer));
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(drain.saturating_sub(CANCEL_BEFORE_CUT_OFF), async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        let target = &listening.spec.target;
        // The sessions are told first, so that a client whose query runs hears of the
        // shutdown (57P01) rather than of a cancel it never asked for (57014); their keys are
        // taken before, since a session that ends gives its key up.
        let live = listening.cancel_keys.live();
        listening.cut_offs.cut_off_all();
        let within = CANCEL_BEFORE_CUT_OFF.saturating_sub(CUT_OFF_WAIT);
        let cancelled = cancel::cancel_all(live, target, within).await;
        tracing::warn!(
            target = %target,
            sessions = sessions.len(),
            cancelled,
            "postgres_proxy_sessions_cut_off"
        );
        let ended = tokio::time::timeout(CUT_OFF_WAIT, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        if ended.is_err() {
            sessions.abort_all();
            while sessions.join_next().await.is_some() {}
        }
    }
    Ok(())
}

/// Why a session ended before it was relayed; the client has been told, when it could be.
#[derive(Debug)]
struct Ended(String);

async fn session(
    engine: Arc<Engine>,
    listening: Arc<Listener>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let started = Instant::now();
    let spec = &listening.spec;
    let _open = engine.metrics.connection_opened("postgres");
    let client: Box<dyn Stream> = Box::new(stream);
    let startup = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        handshake(client, &listening, peer, &engine, started),
    )
    .await
    {
        Ok(Ok(Some(ready))) => ready,
        Ok(Ok(None)) => return,
        Ok(Err(Ended(why))) => {
            tracing::info!(target = %spec.target, %peer, why, "postgres_proxy_session_refused");
            return;
        }
        Err(_) => {
            tracing::info!(target = %spec.target, %peer, "postgres_proxy_handshake_timed_out");
            return;
        }
    };
    let Ready {
        client,
        upstream,
        decided,
        cancel_key,
        passed_on,
    } = startup;
    engine.metrics.postgres_session_ready(started.elapsed());
    let mut unfinished = CutOff {
        engine: Arc::clone(&engine),
        decided: Some(decided.clone()),
        started,
        peer,
        bytes: None,
    };
    let relayed = relay::relay(client, upstream, &listening.cut_offs).await;
    // The session is over: its cancel key matches nothing from now on.
    drop(cancel_key);
    let from_client = relayed.from_client;
    let to_client = relayed.to_client.saturating_add(passed_on);
    if relayed.cut_off {
        // Recorded as a session dropped unfinished is, now with the bytes relayed.
        unfinished.bytes = Some((from_client, to_client));
        return;
    }
    unfinished.decided = None;
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::info!(
        target = %spec.target,
        %peer,
        resource = decided.resource.as_deref().unwrap_or_default(),
        duration_ms,
        bytes_from_client = from_client,
        bytes_to_client = to_client,
        "postgres_proxy_session_closed"
    );
    let closed = closed_event(decided, duration_ms, from_client, to_client);
    if record(&engine, vec![closed]).await.is_err() {
        tracing::error!(target = %spec.target, %peer, "connection_closed_event_lost");
    }
}

/// A relayed session that the server cut off, or that was dropped before it ended (the server
/// stopping past its grace period), still gets its `connection_closed` event, recorded as the
/// session is dropped (the runtime is going away, so the record is a blocking one), with how
/// long it lasted and, for a session the relay ended itself, the bytes relayed each way.
struct CutOff {
    engine: Arc<Engine>,
    /// The session's decision event while the session runs.
    decided: Option<NewEvent>,
    started: Instant,
    peer: SocketAddr,
    /// The bytes from and to the client, when the relay ended the session itself.
    bytes: Option<(u64, u64)>,
}

impl Drop for CutOff {
    fn drop(&mut self) {
        let Some(decided) = self.decided.take() else {
            return;
        };
        let duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let resource = decided.resource.clone().unwrap_or_default();
        let target = decided.target.clone().unwrap_or_default();
        let peer = self.peer;
        let (from_client, to_client) = self.bytes.unzip();
        let closed = NewEvent {
            reason: Some("the session was cut off when the server stopped".to_owned()),
            reason_code: Some("cut_off".to_owned()),
            bytes_from_client: from_client,
            bytes_to_client: to_client,
            ..closed_event(decided, duration_ms, 0, 0)
        };
        match self.engine.audit.record_batch(vec![closed]) {
            Ok(_) => tracing::warn!(
                target,
                %peer,
                resource,
                duration_ms,
                bytes_from_client = from_client,
                bytes_to_client = to_client,
                "postgres_proxy_session_cut_off"
            ),
            Err(error) => {
                tracing::error!(target, %peer, resource, %error, "connection_closed_event_lost");
            }
        }
    }
}

/// The `connection_closed` event of a session: who it was and what it reached, from its
/// decision event, with how long it lasted and the bytes each way.
fn closed_event(decided: NewEvent, duration_ms: u64, from_client: u64, to_client: u64) -> NewEvent {
    NewEvent {
        kind: portcullis_audit::EventKind::ConnectionClosed,
        decision: None,
        reason: Some("the session ended".to_owned()),
        reason_code: Some("closed".to_owned()),
        claims: None,
        conditions: Vec::new(),
        latency_ns: None,
        credential_provider: None,
        credential_ttl_s: None,
        credential_ref: None,
        duration_ms: Some(duration_ms),
        bytes_from_client: Some(from_client),
        bytes_to_client: Some(to_client),
        ..decided
    }
}

/// A session whose client and upstream are both authenticated and ready for queries, its
/// decision's event, and the cancel key its client was given, if any.
struct Ready {
    client: Box<dyn Stream>,
    upstream: Box<dyn Stream>,
    decided: NewEvent,
    cancel_key: Option<Registered>,
    /// The bytes of the upstream's messages passed on to the client before the relay.
    passed_on: u64,
}

/// Everything before the relay: TLS, startup, the password, the decision, the upstream
/// connection. `None` when the client only asked to cancel, or left.
async fn handshake(
    mut client: Box<dyn Stream>,
    listening: &Listener,
    peer: SocketAddr,
    engine: &Arc<Engine>,
    started: Instant,
) -> Result<Option<Ready>, Ended> {
    let spec = &listening.spec;
    let params = loop {
        let (code, body) = read_startup(&mut client).await?;
        match code {
            SSL_REQUEST => match &spec.client_tls {
                Some(config) => {
                    write(&mut client, b"S").await?;
                    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(config));
                    let tls = acceptor
                        .accept(client)
                        .await
                        .map_err(|error| Ended(format!("client TLS handshake: {error}")))?;
                    client = Box::new(tls);
                }
                None => write(&mut client, b"N").await?,
            },
            GSSENC_REQUEST => write(&mut client, b"N").await?,
            CANCEL_REQUEST => {
                cancel::forward(&listening.cancel_keys, &body, &spec.target, peer).await;
                return Ok(None);
            }
            code if code >> 16 == PROTOCOL_3 >> 16 => match startup_params(&body) {
                Ok(params) => {
                    break negotiate(&mut client, code, params).await?;
                }
                Err(Ended(why)) => {
                    refuse(&mut client, "08P01", &why).await;
                    return Err(Ended(why));
                }
            },
            other => {
                let message = format!(
                    "unsupported frontend protocol {}.{}",
                    other >> 16,
                    other & 0xffff
                );
                refuse(&mut client, "0A000", &message).await;
                return Err(Ended(message));
            }
        }
    };
    let Some(user) = param(&params, "user").map(str::to_owned) else {
        let message = "the startup message names no user";
        refuse(&mut client, "28000", message).await;
        return Err(Ended(message.to_owned()));
    };
    let database = param(&params, "database").unwrap_or(&user).to_owned();
    // They go into events and log lines, where a line break or an escape sequence would forge
    // lines or act on a terminal.
    if let Some(name) = [("user", &user), ("database", &database)]
        .into_iter()
        .find_map(|(name, value)| value.chars().any(char::is_control).then_some(name))
    {
        let message = format!("the startup message's `{name}` holds a control character");
        refuse(&mut client, "08P01", &message).await;
        return Err(Ended(message));
    }
    // `request.resource` is `DATABASE/USER`, and a target's `database` is its part before the
    // first `/`: a database whose own name holds a `/` could pass for another one.
    if database.contains('/') {
        let message = "the proxy does not connect to a database whose name contains `/`";
        refuse(&mut client, "3D000", message).await;
        return Err(Ended(message.to_owned()));
    }
    // The caller's evidence is its password.
    write(&mut client, &authentication(3, &[])).await?;
    let token = read_password(&mut client).await?;
    let body = DecideBody {
        evidence: (!token.is_empty()).then(|| Evidence {
            token: token.to_string(),
            digest: std::sync::OnceLock::new(),
        }),
        target: TargetSpec {
            name: Some(spec.target.clone()),
            protocol: None,
            host: None,
            port: None,
        },
        request: RequestDetails {
            action: Some("connect".to_owned()),
            resource: Some(format!("{database}/{user}")),
        },
        explain: false,
    };
    let Permitted {
        kept,
        decided,
        reuse_key,
    } = authorize_connection(engine, listening, &mut client, &body, peer, started).await?;
    let (login, password) = login_of(&kept, &user)?;
    let upstream = match connect_upstream(spec, &login, &password, &database, &params).await {
        Ok(upstream) => upstream,
        Err(why) => {
            // A credential the upstream does not take is not offered to it again.
            if let Some(key) = &reuse_key {
                listening.reuse.forget(key);
            }
            engine.metrics.upstream_error(&spec.target);
            tracing::warn!(target = %spec.target, why, "postgres_upstream_failed");
            refuse(
                &mut client,
                "08001",
                "the upstream server could not be reached or refused the credential",
            )
            .await;
            return Err(Ended(why));
        }
    };
    let (upstream, cancel_key, passed_on) =
        until_ready(engine, listening, &mut client, upstream).await?;
    Ok(Some(Ready {
        client,
        upstream,
        decided,
        cancel_key,
        passed_on,
    }))
}

/// A connection the policy allowed, with the credential to connect upstream with.
struct Permitted {
    kept: Kept,
    /// Its decision event, recorded.
    decided: NewEvent,
    /// Where the credential is kept for reuse, if it is.
    reuse_key: Option<ReuseKey>,
}

/// Decides the connection and obtains its credential: the one issued to the same caller for
/// the same credential under the same bundle moments ago, or a new one. The decision (and a
/// new credential's issuance) is recorded before the credential is used; on a refusal the
/// client has been told why.
async fn authorize_connection(
    engine: &Arc<Engine>,
    listening: &Listener,
    client: &mut Box<dyn Stream>,
    body: &DecideBody,
    peer: SocketAddr,
    started: Instant,
) -> Result<Permitted, Ended> {
    let spec = &listening.spec;
    let Some(issuer) = engine.credentials.clone() else {
        refuse(client, "08004", "this server issues no credentials").await;
        return Err(Ended("no credential issuer".to_owned()));
    };
    let target = crate::vm::TargetQuery::Named(&spec.target);
    let caller = Caller::Remote(peer);
    let allowed = match decide(engine, &caller, body, target, started).await {
        Decided::Refused { event, answer } => {
            let message = match record(engine, vec![event]).await {
                Ok(()) => format!("access denied by Portcullis: {}", answer.reason),
                Err(()) => "access denied: the connection could not be recorded".to_owned(),
            };
            refuse(client, "28000", &message).await;
            return Err(Ended(answer.reason_code.to_owned()));
        }
        Decided::AllowedWithout { event, .. } => {
            return Err(no_credential(engine, client, event).await);
        }
        Decided::Allowed(allowed) => allowed,
    };
    let now = chrono::Utc::now().timestamp();
    let reuse_key = body
        .evidence
        .as_ref()
        .filter(|_| spec.credential_reuse_s > 0)
        .map(|evidence| ReuseKey {
            evidence: evidence.digest(),
            target: allowed.event.target.clone().unwrap_or_default(),
            credential: allowed.credential.name.clone(),
            bundle: allowed.event.bundle_hash.clone().unwrap_or_default(),
        });
    // A credential issued to this caller moments ago is used again: one decision event, and
    // no new issuance (for `postgres_role`, no new role).
    if let Some(kept) = reuse_key
        .as_ref()
        .and_then(|key| listening.reuse.get(key, now))
    {
        let decided = allowed.event.clone();
        recorded(engine, client, vec![allowed.event]).await?;
        return Ok(Permitted {
            kept,
            decided,
            reuse_key,
        });
    }
    let evidence_expires_at = allowed.evidence_expires_at;
    let granted = issued(engine, client, &issuer, *allowed, started).await?;
    let Granted {
        event,
        issuance,
        issued,
        ..
    } = granted;
    let decided = event.clone();
    recorded(engine, client, vec![event, issuance]).await?;
    let kept = Kept {
        value: issued.value,
        token_type: issued.token_type,
    };
    if let Some(key) = &reuse_key {
        let until = reuse_until(
            now,
            spec.credential_reuse_s,
            issued.expires_at,
            evidence_expires_at,
        );
        listening.reuse.keep(key.clone(), &kept, until, now);
    }
    Ok(Permitted {
        kept,
        decided,
        reuse_key,
    })
}

/// Issues an allow's credential; on failure, records the decision with the why and tells the
/// client.
async fn issued(
    engine: &Arc<Engine>,
    client: &mut Box<dyn Stream>,
    issuer: &Arc<crate::credentials::CredentialIssuer>,
    allowed: Allowed,
    started: Instant,
) -> Result<Granted, Ended> {
    match issue(engine, issuer, allowed, started).await {
        Authorized::Issued(granted) => Ok(*granted),
        Authorized::Unavailable {
            mut event, problem, ..
        } => {
            super::issuing::mark_unavailable(&mut event, &problem);
            let _ = record(engine, vec![event]).await;
            let message = "the credential could not be issued; the server's log says why";
            refuse(client, "08004", message).await;
            Err(Ended("credential_unavailable".to_owned()))
        }
        Authorized::AllowedWithout { event, .. } => Err(no_credential(engine, client, event).await),
        Authorized::Refused { event, answer } => {
            let _ = record(engine, vec![event]).await;
            let message = format!("access denied by Portcullis: {}", answer.reason);
            refuse(client, "28000", &message).await;
            Err(Ended(answer.reason_code.to_owned()))
        }
    }
}

/// An allow whose rule names no credential: the proxy has nothing to connect with.
async fn no_credential(
    engine: &Arc<Engine>,
    client: &mut Box<dyn Stream>,
    mut event: NewEvent,
) -> Ended {
    event.reason_code = Some("no_credential".to_owned());
    let _ = record(engine, vec![event]).await;
    let message = "access denied by Portcullis: the rule names no credential to connect with";
    refuse(client, "28000", message).await;
    Ended("no_credential".to_owned())
}

/// Records `events`; if they cannot be, the connection is refused, as nothing goes
/// unrecorded.
async fn recorded(
    engine: &Arc<Engine>,
    client: &mut Box<dyn Stream>,
    events: Vec<NewEvent>,
) -> Result<(), Ended> {
    if record(engine, events).await.is_ok() {
        return Ok(());
    }
    refuse(
        client,
        "28000",
        "access denied: the connection could not be recorded",
    )
    .await;
    Err(Ended("audit_unavailable".to_owned()))
}

/// The role and password to connect upstream with: a `postgres_role` credential's own, or
/// the client's `user` with the credential as its password.
fn login_of(kept: &Kept, user: &str) -> Result<(String, Zeroizing<String>), Ended> {
    match kept.token_type {
        "postgres_uri" => role_of(&kept.value)
            .map(|(role, password)| (role, Zeroizing::new(password)))
            .ok_or_else(|| Ended("the issued role's URI is not readable".to_owned())),
        _ => Ok((user.to_owned(), kept.value.clone())),
    }
}

/// Tells the client `AuthenticationOk` and passes on what the upstream says until it is ready
/// for queries, its BackendKeyData replaced by a key of the proxy's, which the listener keeps
/// for cancel requests while the session lives. The upstream stream, ready; that key; and the
/// bytes of the upstream's messages passed on.
async fn until_ready(
    engine: &Arc<Engine>,
    listening: &Listener,
    client: &mut Box<dyn Stream>,
    mut upstream: Box<dyn Stream>,
) -> Result<(Box<dyn Stream>, Option<Registered>, u64), Ended> {
    let spec = &listening.spec;
    let replies = match tokio::time::timeout(UPSTREAM_TIMEOUT, Replies::read(&mut upstream)).await {
        Ok(Ok(replies)) => replies,
        Ok(Err(why)) => return Err(upstream_failed(engine, spec, client, why).await),
        Err(_) => {
            let why = "the upstream did not become ready".to_owned();
            return Err(upstream_failed(engine, spec, client, why).await);
        }
    };
    let upstream_key = match replies.backend_key() {
        Ok(key) => key,
        Err(why) => return Err(upstream_failed(engine, spec, client, why).await),
    };
    let registered = upstream_key.map(|key| listening.cancel_keys.register(key, Arc::clone(spec)));
    let cancel_key = match registered {
        Some(Ok(registered)) => Some(registered),
        // The session goes on; only its client cannot cancel through the proxy.
        Some(Err(why)) => {
            let why = why.to_string();
            tracing::warn!(target = %spec.target, why, "postgres_proxy_no_cancel_key");
            None
        }
        None => None,
    };
    let passed_on = replies.for_client(cancel_key.as_ref().map(|key| &key.given));
    let mut to_client = authentication(0, &[]);
    to_client.extend_from_slice(&passed_on);
    write(client, &to_client).await?;
    // The upstream's own refusal (a database that does not exist, too many connections) has
    // reached the client as the upstream worded it.
    if let Some(refusal) = replies.refusal() {
        let why = format!("the upstream refused: {}", error_text(refusal));
        engine.metrics.upstream_error(&spec.target);
        tracing::warn!(target = %spec.target, why, "postgres_upstream_failed");
        return Err(Ended(why));
    }
    let passed_on = u64::try_from(passed_on.len()).unwrap_or(u64::MAX);
    Ok((upstream, cancel_key, passed_on))
}

/// The upstream failed after it took the credential: counted, logged, and the client told.
async fn upstream_failed(
    engine: &Arc<Engine>,
    spec: &PostgresProxySpec,
    client: &mut Box<dyn Stream>,
    why: String,
) -> Ended {
    engine.metrics.upstream_error(&spec.target);
    tracing::warn!(target = %spec.target, why, "postgres_upstream_failed");
    refuse(
        client,
        "08001",
        "the upstream server did not start the session",
    )
    .await;
    Ended(why)
}

async fn record(engine: &Arc<Engine>, events: Vec<NewEvent>) -> Result<(), ()> {
    super::record_events(engine, events)
        .await
        .map(drop)
        .map_err(drop)
}

/// The role and password of a `postgres_role` credential's URI.
fn role_of(uri: &str) -> Option<(String, String)> {
    let rest = uri.strip_prefix("postgresql://")?;
    let (userinfo, _) = rest.split_once('@')?;
    let (role, password) = userinfo.split_once(':')?;
    Some((role.to_owned(), password.to_owned()))
}

/// Reads a startup-phase packet: its code and the bytes after it.
async fn read_startup(client: &mut Box<dyn Stream>) -> Result<(u32, Vec<u8>), Ended> {
    let length = client
        .read_u32()
        .await
        .map_err(|error| Ended(format!("reading the startup packet: {error}")))?;
    let length = usize::try_from(length).unwrap_or(usize::MAX);
    if !(8..=MAX_STARTUP_BYTES).contains(&length) {
        return Err(Ended(format!("a startup packet of {length} bytes")));
    }
    let code = client
        .read_u32()
        .await
        .map_err(|error| Ended(format!("reading the startup packet: {error}")))?;
    let mut body = vec![0; length - 8];
    client
        .read_exact(&mut body)
        .await
        .map_err(|error| Ended(format!("reading the startup packet: {error}")))?;
    Ok((code, body))
}

/// The prefix of the startup parameters that are protocol options rather than settings.
const PROTOCOL_OPTION: &str = "_pq_.";

/// Settles the protocol with a client that asked for 3.`minor` with `params`: the proxy speaks
/// 3.0 and knows no protocol options, so a client that asked for a later minor version or for
/// options is told so with NegotiateProtocolVersion, as PostgreSQL does, and goes on in 3.0
/// without them; the options are not passed upstream. Gives the remaining parameters.
async fn negotiate(
    client: &mut Box<dyn Stream>,
    code: u32,
    params: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, Ended> {
    let (options, params): (Vec<_>, Vec<_>) = params
        .into_iter()
        .partition(|(name, _)| name.starts_with(PROTOCOL_OPTION));
    if code != PROTOCOL_3 || !options.is_empty() {
        let mut body = 0_u32.to_be_bytes().to_vec();
        body.extend_from_slice(
            &u32::try_from(options.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        for (name, _) in &options {
            body.extend_from_slice(name.as_bytes());
            body.push(0);
        }
        write(client, &message(b'v', &body)).await?;
    }
    Ok(params)
}

/// The `name\0value\0…\0` pairs of a startup message, each string ended by its NUL.
fn startup_params(body: &[u8]) -> Result<Vec<(String, String)>, Ended> {
    let malformed = || Ended("a malformed startup message".to_owned());
    let mut rest = body;
    let mut next = || -> Result<String, Ended> {
        let end = rest
            .iter()
            .position(|byte| *byte == 0)
            .ok_or_else(malformed)?;
        let (text, after) = rest.split_at(end);
        rest = after.get(1..).unwrap_or_default();
        String::from_utf8(text.to_vec())
            .map_err(|_| Ended("a startup parameter that is not UTF-8".to_owned()))
    };
    let mut params = Vec::new();
    loop {
        let name = next()?;
        if name.is_empty() {
            return Ok(params);
        }
        params.push((name, next()?));
    }
}

fn param<'p>(params: &'p [(String, String)], name: &str) -> Option<&'p str> {
    params
        .iter()
        .find(|(known, _)| known == name)
        .map(|(_, value)| value.as_str())
}

/// Reads the client's password message: the caller's token.
async fn read_password(
    client: &mut Box<dyn Stream>,
) -> Result<crate::credentials::Zeroizing<String>, Ended> {
    let (kind, body) = read_message(client, MAX_PASSWORD_BYTES)
        .await
        .map_err(|why| Ended(format!("reading the password: {why}")))?;
    if kind != b'p' {
        return Err(Ended(format!(
            "expected a password message, got `{}`",
            char::from(kind)
        )));
    }
    let text = body.strip_suffix(&[0]).unwrap_or(&body);
    let token = String::from_utf8(text.to_vec())
        .map_err(|_| Ended("a password that is not UTF-8".to_owned()))?;
    Ok(crate::credentials::Zeroizing::new(token))
}

/// Reads one typed message (`kind`, length, body), refusing one over `limit` bytes.
async fn read_message<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
    limit: usize,
) -> Result<(u8, Vec<u8>), String> {
    let kind = stream.read_u8().await.map_err(|error| error.to_string())?;
    let length = stream.read_u32().await.map_err(|error| error.to_string())?;
    let length = usize::try_from(length).unwrap_or(usize::MAX);
    if !(4..=limit).contains(&length) {
        return Err(format!("a message of {length} bytes"));
    }
    let mut body = vec![0; length - 4];
    stream
        .read_exact(&mut body)
        .await
        .map_err(|error| error.to_string())?;
    Ok((kind, body))
}

async fn write(stream: &mut Box<dyn Stream>, bytes: &[u8]) -> Result<(), Ended> {
    stream
        .write_all(bytes)
        .await
        .map_err(|error| Ended(format!("writing to the client: {error}")))?;
    stream
        .flush()
        .await
        .map_err(|error| Ended(format!("writing to the client: {error}")))
}

/// A typed message: `kind`, its length, `body`.
fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(kind);
    let length = u32::try_from(body.len() + 4).unwrap_or(u32::MAX);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// `AuthenticationXxx`: `code` and its data.
fn authentication(code: u32, data: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(data);
    message(b'R', &body)
}

/// A FATAL `ErrorResponse` with `sqlstate` and `text`, sent before the connection closes.
async fn refuse(client: &mut Box<dyn Stream>, sqlstate: &str, text: &str) {
    let _ = client.write_all(&error_response(sqlstate, text)).await;
    let _ = client.flush().await;
    let _ = client.shutdown().await;
}

/// An `ErrorResponse` of severity FATAL with `sqlstate` and `text`.
fn error_response(sqlstate: &str, text: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', sqlstate),
        (b'M', text),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    message(b'E', &body)
}

/// A connection to the upstream, over TLS (SSLRequest, then the handshake, the server's
/// certificate verified) when the listener has it so; nothing sent on it yet.
async fn open_upstream(spec: &PostgresProxySpec) -> Result<Box<dyn Stream>, String> {
    let address = (spec.upstream_host.as_str(), spec.upstream_port);
    let mut tcp = tokio::time::timeout(UPSTREAM_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| "connecting timed out".to_owned())?
        .map_err(|error| format!("connecting: {error}"))?;
    let _ = tcp.set_nodelay(true);
    let Some(config) = &spec.upstream_tls else {
        return Ok(Box::new(tcp));
    };
    let mut request = 8u32.to_be_bytes().to_vec();
    request.extend_from_slice(&SSL_REQUEST.to_be_bytes());
    tcp.write_all(&request)
        .await
        .map_err(|error| error.to_string())?;
    let answer = tcp.read_u8().await.map_err(|error| error.to_string())?;
    if answer != b'S' {
        return Err("the upstream does not offer TLS".to_owned());
    }
    let name = ServerName::try_from(spec.upstream_host.clone())
        .map_err(|error| format!("the upstream's host name: {error}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(config))
        .connect(name, tcp)
        .await
        .map_err(|error| format!("TLS to the upstream: {error}"))?;
    Ok(Box::new(tls))
}

/// Connects to the upstream as `login`, authenticating as the server asks; returns the
/// stream once the server has said AuthenticationOk, its later messages unread.
async fn connect_upstream(
    spec: &PostgresProxySpec,
    login: &str,
    password: &str,
    database: &str,
    params: &[(String, String)],
) -> Result<Box<dyn Stream>, String> {
    let mut upstream = open_upstream(spec).await?;
    let mut body = PROTOCOL_3.to_be_bytes().to_vec();
    let forwarded = params
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "user" | "database"))
        .map(|(name, value)| (name.as_str(), value.as_str()));
    for (name, value) in [("user", login), ("database", database)]
        .into_iter()
        .chain(forwarded)
    {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut startup = u32::try_from(body.len() + 4)
        .unwrap_or(u32::MAX)
        .to_be_bytes()
        .to_vec();
    startup.extend_from_slice(&body);
    upstream
        .write_all(&startup)
        .await
        .map_err(|error| error.to_string())?;
    let mut scram: Option<ScramSha256> = None;
    loop {
        let (kind, body) = tokio::time::timeout(
            UPSTREAM_TIMEOUT,
            read_message(&mut upstream, MAX_AUTH_MESSAGE_BYTES),
        )
        .await
        .map_err(|_| "the upstream did not answer".to_owned())??;
        match kind {
            b'R' => {
                let (code, data) = body
                    .split_at_checked(4)
                    .ok_or("a short authentication message")?;
                let code = u32::from_be_bytes(code.try_into().map_err(|_| "a bad code")?);
                let reply = match code {
                    0 => return Ok(upstream),
                    3 => Some(password_message(password.as_bytes())),
                    5 => {
                        let salt: [u8; 4] = data
                            .try_into()
                            .map_err(|_| "an md5 salt of the wrong size")?;
                        let hashed = postgres_protocol::authentication::md5_hash(
                            login.as_bytes(),
                            password.as_bytes(),
                            salt,
                        );
                        Some(password_message(hashed.as_bytes()))
                    }
                    10 => {
                        let offers_scram = data
                            .split(|byte| *byte == 0)
                            .any(|mechanism| mechanism == sasl::SCRAM_SHA_256.as_bytes());
                        if !offers_scram {
                            return Err(
                                "the upstream offers no SASL mechanism the proxy speaks".to_owned()
                            );
                        }
                        let state = ScramSha256::new(
                            password.as_bytes(),
                            sasl::ChannelBinding::unsupported(),
                        );
                        let mut body = sasl::SCRAM_SHA_256.as_bytes().to_vec();
                        body.push(0);
                        let first = state.message();
                        body.extend_from_slice(
                            &i32::try_from(first.len()).unwrap_or(i32::MAX).to_be_bytes(),
                        );
                        body.extend_from_slice(first);
                        scram = Some(state);
                        Some(message(b'p', &body))
                    }
                    11 => {
                        let state = scram.as_mut().ok_or("a SASL continuation out of turn")?;
                        state
                            .update(data)
                            .map_err(|error| format!("SCRAM: {error}"))?;
                        Some(message(b'p', state.message()))
                    }
                    12 => {
                        let state = scram.as_mut().ok_or("a SASL final message out of turn")?;
                        state
                            .finish(data)
                            .map_err(|error| format!("SCRAM: {error}"))?;
                        None
                    }
                    other => {
                        return Err(format!(
                            "the upstream asks for authentication method {other}"
                        ));
                    }
                };
                if let Some(reply) = reply {
                    upstream
                        .write_all(&reply)
                        .await
                        .map_err(|error| error.to_string())?;
                    upstream.flush().await.map_err(|error| error.to_string())?;
                }
            }
            b'E' => return Err(format!("the upstream refused: {}", error_text(&body))),
            b'N' => {}
            other => {
                return Err(format!(
                    "the upstream sent `{}` before authenticating",
                    char::from(other)
                ));
            }
        }
    }
}

fn password_message(password: &[u8]) -> Vec<u8> {
    let mut body = password.to_vec();
    body.push(0);
    message(b'p', &body)
}

/// The SQLSTATE and message of an `ErrorResponse` body.
fn error_text(body: &[u8]) -> String {
    let mut code = "";
    let mut text = "";
    for field in body.split(|byte| *byte == 0) {
        match field.split_first() {
            Some((b'C', value)) => code = std::str::from_utf8(value).unwrap_or_default(),
            Some((b'M', value)) => text = std::str::from_utf8(value).unwrap_or_default(),
            _ => {}
        }
    }
    format!("{text} ({code})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_parameters_are_read_in_pairs() {
        let params = startup_params(b"user\0alice\0database\0orders\0\0").unwrap();
        assert_eq!(param(&params, "user"), Some("alice"));
        assert_eq!(param(&params, "database"), Some("orders"));
        assert!(startup_params(b"user\0").is_err());
        assert!(startup_params(b"user\0alice\0").is_err(), "no terminator");
        assert!(startup_params(b"\0").unwrap().is_empty());
        assert!(startup_params(b"").is_err());
    }

    #[test]
    fn an_issued_role_is_read_from_its_uri() {
        assert_eq!(
            role_of("postgresql://portcullis_ab12:pw-x_Y@127.0.0.1:5432/billing?sslmode=require"),
            Some(("portcullis_ab12".to_owned(), "pw-x_Y".to_owned()))
        );
        assert_eq!(role_of("postgresql://db.internal/billing"), None);
    }

    #[test]
    fn an_error_response_carries_its_sqlstate_and_message() {
        let body = b"SFATAL\0C28000\0Mno\0\0";
        assert_eq!(error_text(body), "no (28000)");
        let mut framed = message(b'E', body);
        assert_eq!(framed.remove(0), b'E');
        assert_eq!(
            &framed[..4],
            &u32::try_from(body.len() + 4).unwrap().to_be_bytes()
        );
    }
}
