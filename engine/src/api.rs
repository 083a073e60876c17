//! The decision API: `POST /v1/decide` and `GET /healthz`, over axum; and, behind a token, the
//! admin API ([`admin`]).
//!
//! A decide call carries the caller's evidence, the target and the request details. The engine
//! attests the caller, runs the VM, records the access event durably, and only then answers.
//! Every answer the API gives about access is a decision: malformed evidence, an untrusted
//! issuer or a policy error all come back as `deny` with a reason code. If the event cannot be
//! recorded, the answer is `deny` with status 503: nothing is decided without a record.
//!
//! The running program can be replaced while the API serves ([`ProgramSlot`]); each decision
//! takes the program once, at its start, and decides and records on that one to the end.

pub mod admin;
pub mod audit_query;
pub mod issuing;
pub mod listen;
pub mod proxy;
pub mod proxy_pg;
mod reuse;

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
/// HTTP status codes, for the server's side of the API's extension points.
pub use axum::http::StatusCode;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use portcullis_audit::{AuditLog, ConditionOutcome, Decision as Verdict, EventKind, NewEvent};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::attest::{Attested, Attestor, Refreshed, Rejected, TrustProvider};
use crate::credentials::CredentialIssuer;
use crate::local::PeerProcess;
use crate::vm::{Decision, EvalError, Program, Request, TargetQuery, Trace};
use admin::Admin;
use portcullis_lang::ir::Protocol;

/// Decide bodies larger than this get 413, unless configured otherwise.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// A client that has not sent its whole body by then gets 408.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a decision needs, shared by every request.
#[derive(Debug)]
pub struct Engine {
    /// The program in effect; a reload replaces it.
    pub program: ProgramSlot,
    pub attestor: Attestor,
    pub audit: Arc<AuditLog>,
    /// Decide bodies larger than this get 413.
    pub max_body_bytes: usize,
    /// How long an HTTP client (of the API and of the HTTP proxies) may take to send a
    /// request's head, counted from when its connection is ready for one.
    pub header_read_timeout: std::time::Duration,
    /// The admin API; without it, its endpoints answer 404.
    pub admin: Option<Admin>,
    /// SQL over the audit store (`POST /v1/audit/query`); without it, 404.
    pub audit_query: Option<audit_query::AuditQueryApi>,
    /// Issues credentials (`POST /v1/credentials`) and publishes the keys of the tokens it
    /// mints (`GET /.well-known/jwks.json`); without it, both answer 404.
    pub credentials: Option<Arc<CredentialIssuer>>,
    /// What `GET /metrics` reports.
    pub metrics: crate::metrics::Metrics,
}

/// The program in effect, replaced whole by a reload. Whoever took it goes on with it: a
/// decision that started on the old program finishes, and is recorded, on the old program.
#[derive(Debug)]
pub struct ProgramSlot(RwLock<Arc<Program>>);

impl ProgramSlot {
    pub fn new(program: Program) -> ProgramSlot {
        ProgramSlot(RwLock::new(Arc::new(program)))
    }

    /// The program in effect now.
    pub fn current(&self) -> Arc<Program> {
        // The lock guards one `Arc`, replaced in one assignment: a panic elsewhere while the
        // lock was held cannot have left it half-written, so a poisoned lock is still sound.
        let program = self.0.read().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&program)
    }

    /// Puts `program` in effect and returns the one it replaced.
    pub fn replace(&self, program: Arc<Program>) -> Arc<Program> {
        let mut slot = self.0.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *slot, program)
    }
}

/// Builds the API's router; [`serve`] serves it with each request's peer address, which access
/// events carry.
pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/v1/decide", post(decide))
        .route("/v1/credentials", post(issuing::credentials))
        .route("/.well-known/jwks.json", get(issuing::jwks))
        .route("/.well-known/openid-configuration", get(issuing::discovery))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/admin/reload", post(admin::reload))
        .route("/v1/audit/query", post(audit_query::query))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(engine)
}

/// The API of the Unix socket: decisions and credentials for the connecting process, the
/// health check and the published keys. The admin and audit endpoints stay on TCP.
pub fn local_router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/v1/decide", post(decide_local))
        .route("/v1/credentials", post(issuing::credentials_local))
        .route("/.well-known/jwks.json", get(issuing::jwks))
        .route("/healthz", get(healthz))
        .fallback(not_found_local)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(engine)
}

/// `GET /metrics`: the counters in the Prometheus text format.
async fn metrics(State(engine): State<Arc<Engine>>) -> Response {
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        engine.metrics.render(),
    )
        .into_response()
}

async fn not_found_local() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint on the Unix socket; see `POST /v1/decide`, `POST /v1/credentials`, \
         `GET /.well-known/jwks.json` and `GET /healthz`",
    )
}

/// Serves [`local_router`] on a Unix socket until `shutdown` completes, then finishes the
/// requests in flight.
#[cfg(unix)]
pub async fn serve_local(
    listener: tokio::net::UnixListener,
    engine: Arc<Engine>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let timeout = engine.header_read_timeout;
    listen::serve(listener, local_router(engine), timeout, shutdown).await
}

/// Serves the API on `listener` until `shutdown` completes, then finishes the requests in
/// flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<Engine>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let timeout = engine.header_read_timeout;
    listen::serve(listener, router(engine), timeout, shutdown).await
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object with `evidence`, `target` and `request`"
)]
struct DecideBody {
    /// Required over TCP; absent on the Unix socket, whose connection is the evidence.
    evidence: Option<Evidence>,
    target: TargetSpec,
    #[serde(default)]
    request: RequestDetails,
    /// Answer with the decision's trace under `explanation`; needs the admin token, since it
    /// shows rules and conditions beyond the deciding one.
    #[serde(default)]
    explain: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object with `token`")]
struct Evidence {
    /// A compact JWS from an OIDC trust provider.
    token: String,
    /// The token's SHA-256, taken once for the event and the verified-token cache both.
    #[serde(skip)]
    digest: std::sync::OnceLock<[u8; 32]>,
}

impl Evidence {
    fn digest(&self) -> [u8; 32] {
        *self
            .digest
            .get_or_init(|| crate::attest::token_digest(&self.token))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object with `name`, or `protocol`, `host` and `port`"
)]
struct TargetSpec {
    name: Option<String>,
    protocol: Option<String>,
    host: Option<String>,
    port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object with `action` and `resource`"
)]
struct RequestDetails {
    action: Option<String>,
    resource: Option<String>,
}

#[derive(Debug, Serialize)]
struct DecideAnswer {
    decision: &'static str,
    rule: Option<String>,
    reason: String,
    reason_code: &'static str,
    workload: Option<String>,
    target: Option<String>,
    trust_provider: Option<String>,
    /// The credential to issue, for an allow whose permit names one.
    credential: Option<CredentialAnswer>,
    event_id: String,
    bundle: String,
    /// With `"explain": true`: what `policyc explain --format json` prints.
    #[serde(skip_serializing_if = "Option::is_none")]
    explanation: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
struct CredentialAnswer {
    name: String,
    kind: &'static str,
    ttl_s: Option<u64>,
}

/// 200 while decisions can be made and recorded; 503 with the reason when the audit log has
/// stopped taking events, because then every decision is a deny. A trust provider without
/// keys (its issuer could not be reached, or its keys were refused) denies only its own
/// callers: still 200, with `status` `degraded` and the providers named.
async fn healthz(State(engine): State<Arc<Engine>>) -> Response {
    let bundle = format!("sha256:{}", engine.program.current().hash_hex());
    let without_keys: Vec<&str> = engine
        .attestor
        .providers()
        .iter()
        .filter(|provider| !provider.has_keys())
        .map(TrustProvider::name)
        .collect();
    let mut body = json!({ "status": "ok", "bundle": bundle });
    if !without_keys.is_empty() {
        body["status"] = json!("degraded");
        body["trust_providers_without_keys"] = json!(without_keys);
    }
    match engine.audit.health() {
        Ok(()) => (StatusCode::OK, axum::Json(body)).into_response(),
        Err(err) => {
            body["status"] = json!("unavailable");
            body["audit"] = json!(err.to_string());
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
        }
    }
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint; see `POST /v1/decide`, `POST /v1/credentials`, \
         `GET /.well-known/jwks.json`, `GET /healthz`, `GET /metrics`, behind the admin token \
         `POST /v1/admin/reload`, and behind the admin or audit token `POST /v1/audit/query`",
    )
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    )
}

/// How much of a body over the limit is still read (and dropped) before the 413 goes out, so
/// that a client still sending gets the answer rather than a reset connection.
const MAX_DRAINED_BYTES: usize = 1024 * 1024;

/// Reads the whole body within [`BODY_READ_TIMEOUT`] and `limit` bytes. A body over the limit
/// is read on, and dropped, up to [`MAX_DRAINED_BYTES`] more before it is refused.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, Response> {
    use http_body_util::BodyExt as _;
    let read = async move {
        let mut body = body;
        let mut kept = Vec::new();
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(drop)?.into_data() else {
                continue;
            };
            seen = seen.saturating_add(data.len());
            if seen <= limit {
                kept.extend_from_slice(&data);
            } else if seen > limit.saturating_add(MAX_DRAINED_BYTES) {
                break;
            }
        }
        if seen > limit {
            Err(())
        } else {
            Ok(Bytes::from(kept))
        }
    };
    match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(())) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is larger than {limit} bytes, or was cut short"),
        )),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "the request body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        )),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let media_type = value.split(';').next().unwrap_or_default().trim();
    media_type.eq_ignore_ascii_case("application/json")
}

/// A request-parsing message without long quoted input: a token sent in the wrong place must
/// not come back in an error body.
fn parse_error_message(err: &serde_json::Error) -> String {
    let text = shorten_quoted(&shorten_quoted(&err.to_string(), '"'), '`');
    format!("invalid request: {text}")
}

/// `text` with every segment between a pair of `quote`s longer than 32 characters cut to `…`.
fn shorten_quoted(text: &str, quote: char) -> String {
    let mut out = String::with_capacity(text.len());
    for (idx, part) in text.split(quote).enumerate() {
        if idx > 0 {
            out.push(quote);
        }
        let quoted = idx % 2 == 1;
        if quoted && part.chars().count() > 32 {
            out.push('…');
        } else {
            out.push_str(part);
        }
    }
    out
}

/// The longest target name, protocol, host, action and resource a decide request may carry;
/// each is recorded in the access event.
const MAX_NAME_BYTES: usize = 256;
const MAX_RESOURCE_BYTES: usize = 4096;

fn check_lengths(body: &DecideBody) -> Result<(), String> {
    let fields = [
        ("target.name", body.target.name.as_deref(), MAX_NAME_BYTES),
        (
            "target.protocol",
            body.target.protocol.as_deref(),
            MAX_NAME_BYTES,
        ),
        ("target.host", body.target.host.as_deref(), MAX_NAME_BYTES),
        (
            "request.action",
            body.request.action.as_deref(),
            MAX_NAME_BYTES,
        ),
        (
            "request.resource",
            body.request.resource.as_deref(),
            MAX_RESOURCE_BYTES,
        ),
    ];
    for (field, value, limit) in fields {
        let Some(value) = value else { continue };
        if value.len() > limit {
            return Err(format!(
                "invalid request: `{field}` is longer than {limit} bytes"
            ));
        }
        // Names and paths hold none; in an event or a log line, a line break or an escape
        // sequence would forge lines or act on the terminal that shows them.
        if let Some((at, control)) = value.chars().enumerate().find(|(_, c)| c.is_control()) {
            let hint = if field == "request.resource" {
                "; percent-encode it in a path"
            } else {
                ""
            };
            return Err(format!(
                "invalid request: `{field}` holds a control character (U+{:04X}) at character \
                 {}{hint}",
                u32::from(control),
                at + 1
            ));
        }
    }
    Ok(())
}

/// Attests `token`. A token that names a key its provider does not hold yet (the issuer
/// rotated) has the provider's keys fetched first, on a blocking thread, and is tried again;
/// keys due to be fetched again are fetched in the background while the token is verified with
/// the keys in use.
async fn attest<'e>(
    engine: &'e Arc<Engine>,
    token: &str,
    digest: &[u8; 32],
) -> Result<Attested<'e>, Box<Rejected>> {
    let attestor = &engine.attestor;
    match attestor.attest_digested(token, digest) {
        Ok(attested) => {
            if let Some(idx) = attestor.stale_provider(&attested) {
                let fetcher = Arc::clone(engine);
                drop(tokio::task::spawn_blocking(move || {
                    fetcher.attestor.refresh(idx)
                }));
            }
            Ok(attested)
        }
        Err(rejected) => {
            let Some(idx) = attestor.refresh_for(&rejected) else {
                return Err(rejected);
            };
            let fetcher = Arc::clone(engine);
            match tokio::task::spawn_blocking(move || fetcher.attestor.refresh(idx)).await {
                // Another caller's fetch may just have brought the key: try again either way.
                Ok(Refreshed::Keys(_) | Refreshed::TooSoon) => {
                    attestor.attest_digested(token, digest)
                }
                Ok(Refreshed::Failed(_) | Refreshed::NotRemote) | Err(_) => Err(rejected),
            }
        }
    }
}

async fn decide(
    State(engine): State<Arc<Engine>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    decide_for(engine, Caller::Remote(peer), headers, body).await
}

/// `POST /v1/decide` on the Unix socket: the caller is the connecting process.
async fn decide_local(
    State(engine): State<Arc<Engine>>,
    ConnectInfo(local): ConnectInfo<LocalPeer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match local.0 {
        Ok(peer) => decide_for(engine, Caller::Local(peer), headers, body).await,
        Err(why) => no_peer_credentials(&why),
    }
}

async fn decide_for(
    engine: Arc<Engine>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let body = match read_decide_body(&engine, &headers, body, &caller).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let target = match target_query(&body.target) {
        Ok(target) => target,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    if body.explain {
        let Some(admin) = &engine.admin else {
            let message = "`explain` needs the admin token, and this server has none \
                           (`admin_token_file` under `[server]`)";
            return error(StatusCode::FORBIDDEN, message);
        };
        if let Err(why) = admin::authorize(&admin.token, &headers) {
            tracing::warn!(caller = %caller, why, "explain_unauthorized");
            return admin::unauthorized();
        }
    }
    // The one program this decision runs and records, whatever a reload does meanwhile.
    let program = engine.program.current();
    let mut event = request_event(&caller, &body, &program);
    // `request.time`: the clock is read once, before attestation, so that one decision sees
    // one time.
    let decided_at = chrono::Utc::now().timestamp();
    let answer = match attest_caller(&engine, &caller, &body).await {
        Ok(attested) => {
            let request = request_of(&attested, target, &body, &caller, decided_at);
            describe_caller(&mut event, &attested);
            if body.explain {
                let explained = program.explain(&request);
                event.conditions = explained
                    .conditions
                    .iter()
                    .filter_map(|(id, result)| condition_outcome(&program, *id, *result))
                    .collect();
                describe_target(&mut event, &explained.decision, &body.target);
                let answer = answer_decision(&mut event, &explained.decision);
                DecideAnswer {
                    explanation: Some(explained.to_json()),
                    ..answer
                }
            } else {
                let mut conditions = ConditionsSeen::default();
                let decision = program.decide_with(&request, &mut conditions);
                event.conditions = conditions.named(&program);
                describe_target(&mut event, &decision, &body.target);
                answer_decision(&mut event, &decision)
            }
        }
        Err(rejected) => {
            describe_target_spec(&mut event, &body.target);
            let answer = answer_attestation_failure(&mut event, *rejected);
            if body.explain {
                DecideAnswer {
                    explanation: Some(attestation_explanation(&event, &program)),
                    ..answer
                }
            } else {
                answer
            }
        }
    };
    event.latency_ns = Some(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
    record_and_answer(&engine, event, answer).await
}

/// The body of a decide (or credentials) request: JSON, within the size and time limits, of
/// the documented shape, each field within its length.
async fn read_decide_body(
    engine: &Engine,
    headers: &HeaderMap,
    body: Body,
    caller: &Caller,
) -> Result<DecideBody, Response> {
    // Only JSON: a browser cannot send it cross-origin without a preflight.
    if !is_json(headers) {
        let message = "the request body must be JSON, sent as `content-type: application/json`";
        return Err(error(StatusCode::UNSUPPORTED_MEDIA_TYPE, message));
    }
    let body = read_body(body, engine.max_body_bytes).await?;
    let body: DecideBody = serde_json::from_slice(&body)
        .map_err(|err| error(StatusCode::BAD_REQUEST, &parse_error_message(&err)))?;
    check_lengths(&body).map_err(|message| error(StatusCode::BAD_REQUEST, &message))?;
    match (caller, &body.evidence) {
        (Caller::Remote(_), None) => Err(error(
            StatusCode::BAD_REQUEST,
            "invalid request: `evidence` is required: `{\"token\": \"…\"}`",
        )),
        (Caller::Local(_), Some(_)) => Err(error(
            StatusCode::BAD_REQUEST,
            "invalid request: a caller of the Unix socket is attested by its connection; \
             send no `evidence`",
        )),
        _ => Ok(body),
    }
}

/// Who is asking: a client over TCP, whose evidence is the token it sends, or a local process
/// on the Unix socket, whose evidence is the connection itself.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    Remote(SocketAddr),
    Local(PeerProcess),
}

impl Caller {
    fn source_ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Caller::Remote(addr) => Some(addr.ip()),
            Caller::Local(_) => None,
        }
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Remote(addr) => write!(f, "{}", addr.ip()),
            Caller::Local(peer) => write!(f, "local uid {}", peer.uid),
        }
    }
}

/// The peer credentials of a Unix-socket connection, read when it was accepted.
#[derive(Debug, Clone)]
pub struct LocalPeer(pub Result<PeerProcess, String>);

fn no_peer_credentials(why: &str) -> Response {
    tracing::warn!(why, "local_peer_credentials_unavailable");
    error(
        StatusCode::FORBIDDEN,
        &format!("the connection's peer credentials are unavailable: {why}"),
    )
}

/// Attests the caller: its token, or, on the Unix socket, the connecting process (read on a
/// blocking thread).
async fn attest_caller<'e>(
    engine: &'e Arc<Engine>,
    caller: &Caller,
    body: &DecideBody,
) -> Result<Attested<'e>, Box<Rejected>> {
    match (caller, &body.evidence) {
        (Caller::Local(peer), _) => {
            let reader = Arc::clone(engine);
            let reading = peer.clone();
            let evidence =
                tokio::task::spawn_blocking(move || reader.attestor.process_evidence(&reading))
                    .await;
            match evidence {
                Ok(Ok(payload)) => engine.attestor.attested_process(peer, payload),
                Ok(Err(rejected)) => Err(rejected),
                Err(join) => Err(Box::new(Rejected {
                    error: crate::attest::AttestError::ProcessEvidence(join.to_string()),
                    unverified: crate::attest::Unverified::default(),
                })),
            }
        }
        (Caller::Remote(_), Some(evidence)) => {
            attest(engine, &evidence.token, &evidence.digest()).await
        }
        (Caller::Remote(_), None) => Err(Box::new(Rejected {
            error: crate::attest::AttestError::Malformed("no evidence".to_owned()),
            unverified: crate::attest::Unverified::default(),
        })),
    }
}

/// What the VM decides for an attested caller's request.
fn request_of<'r>(
    attested: &'r Attested<'_>,
    target: TargetQuery<'r>,
    body: &'r DecideBody,
    caller: &Caller,
    decided_at: i64,
) -> Request<'r> {
    Request {
        kind: attested.provider.kind(),
        claims: &attested.claims,
        target,
        action: body.request.action.as_deref(),
        resource: body.request.resource.as_deref(),
        source_ip: caller.source_ip(),
        time: Some(decided_at),
    }
}

/// The access event of a request, before anything is decided: who connected, what it asked,
/// the bundle, and the hash of its evidence.
fn request_event(caller: &Caller, body: &DecideBody, program: &Program) -> NewEvent {
    NewEvent {
        source_ip: caller.source_ip(),
        action: body.request.action.clone(),
        resource: body.request.resource.clone(),
        bundle_hash: Some(program.hash_hex().to_owned()),
        // The token is never kept; its hash tells its uses apart.
        evidence_sha256: body
            .evidence
            .as_ref()
            .map(|evidence| hex::encode(evidence.digest())),
        ..NewEvent::default()
    }
}

/// The named conditions a decision evaluated, in order, for the event's `conditions`.
#[derive(Default)]
struct ConditionsSeen(Vec<(u32, Result<bool, EvalError>)>);

impl Trace for ConditionsSeen {
    fn condition(&mut self, condition: u32, result: Result<bool, EvalError>) {
        self.0.push((condition, result));
    }
}

impl ConditionsSeen {
    fn named(&self, program: &Program) -> Vec<ConditionOutcome> {
        self.0
            .iter()
            .filter_map(|(id, result)| condition_outcome(program, *id, *result))
            .collect()
    }
}

/// A condition's name and value; none for one that failed to evaluate, which the decision's
/// reason names.
fn condition_outcome(
    program: &Program,
    id: u32,
    result: Result<bool, EvalError>,
) -> Option<ConditionOutcome> {
    let condition = program.bundle().conditions().get(id as usize)?;
    Some(ConditionOutcome {
        name: condition.name.clone(),
        result: result.ok()?,
    })
}

fn target_query(spec: &TargetSpec) -> Result<TargetQuery<'_>, String> {
    if let Some(protocol) = spec.protocol.as_deref()
        && Protocol::from_keyword(protocol).is_none()
    {
        let known: Vec<String> = Protocol::ALL
            .iter()
            .map(|known| format!("`{}`", known.keyword()))
            .collect();
        return Err(format!(
            "invalid request: `target.protocol` is `{protocol}`, which no target can have: one \
             of {}",
            known.join(", ")
        ));
    }
    let fixed = |message: &str| Err(message.to_owned());
    match (&spec.name, &spec.protocol, &spec.host, spec.port) {
        (Some(name), None, None, None) => Ok(TargetQuery::Named(name)),
        (None, Some(_), Some(host), _) if host.trim().is_empty() => {
            fixed("invalid request: `target.host` is empty")
        }
        (None, Some(protocol), Some(host), _) => match endpoint_port(spec) {
            Some(port) => Ok(TargetQuery::Endpoint {
                protocol,
                host,
                port,
            }),
            None => fixed("invalid request: `target.port` is needed"),
        },
        _ => fixed(
            "invalid request: `target` needs either `name` alone, or `protocol` and `host` \
             (with `port` where the protocol has no default)",
        ),
    }
}

/// The port of an endpoint: the one given, else the protocol's own (80, 443, 5432), as in a
/// Gate test and a `policyc explain` request file.
fn endpoint_port(spec: &TargetSpec) -> Option<u16> {
    spec.port
        .or_else(|| Protocol::from_keyword(spec.protocol.as_deref()?).map(Protocol::default_port))
}

fn describe_caller(event: &mut NewEvent, attested: &Attested<'_>) {
    event.trust_provider = Some(attested.provider.name().to_owned());
    event.issuer = Some(attested.provider.issuer().to_owned());
    event.subject = Some(attested.subject.clone());
    event.claims = serde_json::to_string(&attested.payload).ok();
}

fn describe_target(event: &mut NewEvent, decision: &Decision<'_>, spec: &TargetSpec) {
    let Some(target) = decision.target else {
        return describe_target_spec(event, spec);
    };
    event.target = Some(target.name.clone());
    event.protocol = Some(target.protocol.keyword().to_owned());
    event.host = Some(target.host.clone());
    event.port = Some(target.port);
}

/// The target as the caller named it, when it resolved to no declared target.
fn describe_target_spec(event: &mut NewEvent, spec: &TargetSpec) {
    event.target = spec.name.clone();
    event.protocol = spec.protocol.clone();
    event.host = spec.host.clone();
    event.port = endpoint_port(spec);
}

fn answer_decision(event: &mut NewEvent, decision: &Decision<'_>) -> DecideAnswer {
    let verdict = if decision.allow {
        Verdict::Allow
    } else {
        Verdict::Deny
    };
    event.kind = EventKind::Decision;
    event.decision = Some(verdict);
    event.reason = Some(decision.reason_text());
    event.reason_code = Some(decision.reason.code().to_owned());
    event.rule = decision.rule.map(str::to_owned);
    event.workload = decision.workload.map(str::to_owned);
    if let Some(annotations) = decision.annotations {
        event.rule_description = annotations.description.clone();
        event.rule_severity = annotations
            .severity
            .map(|severity| severity.keyword().to_owned());
    }
    let mut answer = answer(event, decision.reason.code());
    if let Some(credential) = decision.credential {
        event.credential_provider = Some(credential.kind.keyword().to_owned());
        event.credential_ttl_s = credential.ttl_s;
        answer.credential = Some(CredentialAnswer {
            name: credential.name.clone(),
            kind: credential.kind.keyword(),
            ttl_s: credential.ttl_s,
        });
    }
    answer
}

fn answer_attestation_failure(event: &mut NewEvent, rejected: Rejected) -> DecideAnswer {
    let Rejected {
        error: err,
        unverified,
    } = rejected;
    event.kind = EventKind::AttestationFailed;
    event.decision = Some(Verdict::Deny);
    event.reason = Some(format!("attestation failed: {err}"));
    event.reason_code = Some(err.code().to_owned());
    // What a rejected token says about itself is not an identity: it stays out of the
    // `issuer` and `subject` columns, which hold verified facts only.
    event.trust_provider = unverified.provider;
    event.claims = Some(unverified_claims(&unverified.issuer, &unverified.subject));
    let mut answer = answer(event, err.code());
    // Why the keys could not be fetched names the server's own configuration (URLs, CA
    // files): for its log and its events, not for a caller.
    if let crate::attest::AttestError::KeysUnavailable { provider, .. } = &err {
        answer.reason = format!(
            "attestation failed: trust provider `{provider}` has no usable keys; the server's \
             log and the access event say why"
        );
    }
    answer
}

/// The explanation of a decision that never reached the policy: the evidence did not attest
/// a workload, so no rule was considered. Same members as a policy decision's explanation
/// (`policyc explain --format json`), with `attestation` saying what failed.
fn attestation_explanation(event: &NewEvent, program: &Program) -> serde_json::Value {
    json!({
        "decision": "deny",
        "reason": event.reason_code,
        "reason_text": event.reason,
        "rule": null,
        "workload": null,
        "target": event.target,
        "credential": null,
        "attestation": {
            "outcome": "rejected",
            "trust_provider": event.trust_provider,
            "reason": event.reason_code,
        },
        "candidates": {
            "rules": 0,
            "of_rules": program.bundle().rules().len(),
            "workloads": 0,
            "of_workloads": program.bundle().workloads().len(),
        },
        "instruction_bound": program.instruction_bound(),
        "rules": [],
        "workloads": [],
        "conditions": [],
    })
}

/// The `claims` column of an attestation failure: the token's own, unverified statements,
/// shortened, and marked as unverified.
fn unverified_claims(issuer: &Option<String>, subject: &Option<String>) -> String {
    let short = |text: &Option<String>| {
        text.as_deref()
            .map(|text| text.chars().take(256).collect::<String>())
    };
    json!({ "unverified": true, "iss": short(issuer), "sub": short(subject) }).to_string()
}

/// The answer says what the event that records it says.
fn answer(event: &NewEvent, reason_code: &'static str) -> DecideAnswer {
    DecideAnswer {
        decision: event.decision.unwrap_or(Verdict::Deny).as_str(),
        rule: event.rule.clone(),
        reason: event.reason.clone().unwrap_or_default(),
        reason_code,
        workload: event.workload.clone(),
        target: event.target.clone(),
        trust_provider: event.trust_provider.clone(),
        credential: None,
        event_id: String::new(),
        explanation: None,
        bundle: format!(
            "sha256:{}",
            event.bundle_hash.as_deref().unwrap_or_default()
        ),
    }
}

async fn record_and_answer(
    engine: &Arc<Engine>,
    event: NewEvent,
    answer: DecideAnswer,
) -> Response {
    match record_events(engine, vec![event]).await {
        Ok(ids) => {
            let answer = DecideAnswer {
                event_id: ids.into_iter().next().unwrap_or_default(),
                ..answer
            };
            tracing::info!(
                decision = answer.decision,
                reason_code = answer.reason_code,
                rule = answer.rule.as_deref().unwrap_or(""),
                event_id = %answer.event_id,
                "decided"
            );
            (StatusCode::OK, axum::Json(answer)).into_response()
        }
        Err(_) => unrecorded(&answer),
    }
}

/// Counts `events` for `/metrics` and records them in one commit: their event ids, or why
/// they could not be recorded (logged here), which the caller answers as a deny. The task
/// waits for the store's writer without holding a thread.
async fn record_events(engine: &Arc<Engine>, events: Vec<NewEvent>) -> Result<Vec<String>, String> {
    engine.metrics.observe(&events);
    match engine.audit.record_batch_async(events).await {
        Ok(recorded) => Ok(recorded.iter().map(|e| e.event_id.to_string()).collect()),
        Err(error) => {
            let error = error.to_string();
            tracing::error!(error, "audit_record_failed");
            Err(error)
        }
    }
}

/// Fail closed: a decision that cannot be recorded is a deny. The answer has every field an
/// ordinary answer has, so a client reads it the same way: who asked for what is kept, the
/// rule and any credential are not, and there is no event to name. Why is in the server's log.
fn unrecorded(decided: &DecideAnswer) -> Response {
    let body = DecideAnswer {
        decision: "deny",
        rule: None,
        reason: "the decision could not be recorded, so access is denied".to_owned(),
        reason_code: "audit_unavailable",
        workload: decided.workload.clone(),
        target: decided.target.clone(),
        trust_provider: decided.trust_provider.clone(),
        credential: None,
        event_id: String::new(),
        bundle: decided.bundle.clone(),
        explanation: None,
    };
    let mut body = serde_json::to_value(body)
        .unwrap_or_else(|_| json!({ "decision": "deny", "reason_code": "audit_unavailable" }));
    body["event_id"] = serde_json::Value::Null;
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use portcullis_lang::SourceFile;
    use portcullis_lang::bundle::Bundle;
    use portcullis_lang::schema::ProviderKind;

    use super::*;

    fn program(rule: &str) -> Program {
        let source = format!(
            "workload anyone {{ oidc {{ }} }}\n\
             target api {{ https {{ host = \"api.example\" }} }}\n{rule}\n"
        );
        let set = portcullis_lang::compile(&[SourceFile::new("slot.gate", source)]).unwrap();
        Program::from_bundle(Bundle::from_policy_set(&set).unwrap()).unwrap()
    }

    /// A decision that took the program before a reload replaced it decides, and reports the
    /// bundle hash, of the program it took; the next decision runs the new one.
    #[test]
    fn a_decision_in_flight_finishes_on_the_program_it_started_with() {
        let slot = ProgramSlot::new(program("permit everyone { workload anyone target api }"));
        let replacement = Arc::new(program("forbid no_one { workload anyone target api }"));
        let request = Request {
            kind: ProviderKind::Oidc,
            claims: &[],
            target: TargetQuery::Named("api"),
            action: None,
            resource: None,
            source_ip: None,
            time: Some(0),
        };
        let (taken, swapped) = (Barrier::new(2), Barrier::new(2));
        let (old_hash, in_flight) = std::thread::scope(|scope| {
            let decision = scope.spawn(|| {
                let program = slot.current();
                taken.wait();
                swapped.wait(); // the reload happens while this decision holds its program
                let decision = program.decide(&request);
                (program.hash_hex().to_owned(), decision.allow)
            });
            let reload = scope.spawn(|| {
                taken.wait();
                let old = slot.replace(Arc::clone(&replacement));
                swapped.wait();
                old
            });
            let old = reload.join().unwrap();
            (old.hash_hex().to_owned(), decision.join().unwrap())
        });

        assert_eq!(in_flight, (old_hash.clone(), true));
        let now = slot.current();
        assert_ne!(now.hash_hex(), old_hash);
        assert_eq!(now.hash_hex(), replacement.hash_hex());
        assert!(!now.decide(&request).allow);
    }
}
