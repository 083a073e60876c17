//! The HTTP proxy in reverse mode: a listener for one target that forwards every request to
//! the target's upstream, after attesting the caller, deciding the request (its method and
//! path are `request.action` and `request.resource`) and obtaining the credential the
//! deciding permit names, which it injects in place of anything the client sent itself.
//!
//! In: a request carrying the caller's evidence in the listener's evidence header. Out: the
//! upstream's answer, or a 403 with the reason (the upstream is never asked), a 502 when the
//! upstream cannot be reached, a 503 when the credential cannot be issued or the request
//! cannot be recorded. Every request is recorded as its decision's access event (and a
//! `credential_issued` event when a credential was issued for it) before it is forwarded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::credentials::Zeroizing;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portcullis_audit::NewEvent;
use serde_json::json;

use super::issuing::{Allowed, Authorized, Decided, Granted, decide, issue};
use super::reuse::{CredentialReuse, ReuseKey, reuse_until};
use super::{Caller, DecideAnswer, DecideBody, Engine, Evidence, RequestDetails, TargetSpec};
use crate::http::TrustRoots;

pub use axum::http::HeaderName as ProxyHeaderName;

/// How the credential reaches the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Injection {
    /// `Authorization: Bearer CREDENTIAL`.
    Bearer,
    /// `NAME: CREDENTIAL`, an API-key header.
    Header(HeaderName),
    /// `?NAME=CREDENTIAL` added to the query.
    Query(String),
    /// `Authorization: Basic` of `USER:CREDENTIAL`.
    Basic { user: String },
}

/// One reverse-mode listener: which target it serves, where that target is, how callers
/// present their evidence and how the credential is injected.
#[derive(Debug, Clone)]
pub struct HttpProxySpec {
    /// Explicit forward-proxy mode (`HTTP_PROXY`): each request names its `http://` target in
    /// its absolute-form URI, and the caller's evidence is in `Proxy-Authorization`; `target`
    /// and the upstream fields are then unused.
    pub forward: bool,
    /// The Gate target every request on this listener is decided for.
    pub target: String,
    /// `https` or `http`; `http` only to a loopback upstream, which the configuration checks.
    pub upstream_scheme: String,
    /// `host:port` of the upstream.
    pub upstream_authority: String,
    /// A path prefix put before every request's path; empty for none.
    pub upstream_base_path: String,
    /// The header that carries the caller's token (`Bearer TOKEN`, or the token alone).
    pub evidence_header: HeaderName,
    pub inject: Injection,
    /// What the upstream's certificate must chain to.
    pub ca: TrustRoots,
    /// How long a credential issued to a caller is used again for its next requests (never
    /// past the credential's expiry or the caller's evidence's); 0 issues one per request.
    pub credential_reuse_s: u64,
    /// How long the upstream has to connect and answer with its response head; 504 after.
    pub upstream_timeout: std::time::Duration,
    /// Forward mode: send credentials to `http://` targets off loopback, in the clear. Off,
    /// such requests are refused before anything is decided or issued.
    pub allow_plaintext: bool,
}

/// The evidence header unless a listener names its own.
const DEFAULT_EVIDENCE_HEADER: &str = "x-portcullis-evidence";

type UpstreamClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

struct Proxy {
    engine: Arc<Engine>,
    spec: HttpProxySpec,
    client: UpstreamClient,
    reuse: CredentialReuse,
}

/// Serves `spec` on a Unix-socket `listener` until `shutdown` completes: each caller is the
/// process at the other end, attested by its connection as on the server's local socket.
pub async fn serve_http_proxy_local(
    engine: Arc<Engine>,
    spec: HttpProxySpec,
    listener: tokio::net::UnixListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let timeout = engine.header_read_timeout;
    let proxy = Proxy::new(engine, spec)?;
    let app = Router::new().fallback(handle_local).with_state(proxy);
    super::listen::serve(listener, app, timeout, shutdown).await
}

/// Serves `spec` on `listener` until `shutdown` completes; requests in flight finish.
pub async fn serve_http_proxy(
    engine: Arc<Engine>,
    spec: HttpProxySpec,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let timeout = engine.header_read_timeout;
    let proxy = Proxy::new(engine, spec)?;
    let app = Router::new().fallback(handle).with_state(proxy);
    super::listen::serve(listener, app, timeout, shutdown).await
}

impl Proxy {
    fn new(engine: Arc<Engine>, spec: HttpProxySpec) -> std::io::Result<Arc<Proxy>> {
        let client = upstream_client(&spec.ca).map_err(std::io::Error::other)?;
        Ok(Arc::new(Proxy {
            engine,
            spec,
            client,
            reuse: CredentialReuse::default(),
        }))
    }
}

fn upstream_client(roots: &TrustRoots) -> Result<UpstreamClient, String> {
    let tls = crate::postgres_tls::client_config(roots)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

async fn handle(
    State(proxy): State<Arc<Proxy>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request<Body>,
) -> Response {
    handle_for(proxy, Caller::Remote(peer), request).await
}

/// A request on a Unix-socket listener: the caller is the connecting process.
async fn handle_local(
    State(proxy): State<Arc<Proxy>>,
    ConnectInfo(local): ConnectInfo<super::LocalPeer>,
    request: Request<Body>,
) -> Response {
    match local.0 {
        Ok(peer) => handle_for(proxy, Caller::Local(peer), request).await,
        Err(why) => super::no_peer_credentials(&why),
    }
}

async fn handle_for(proxy: Arc<Proxy>, caller: Caller, request: Request<Body>) -> Response {
    let started = Instant::now();
    let response = decide_and_forward(&proxy, caller, request, started).await;
    proxy.engine.metrics.http_proxied(started.elapsed());
    response
}

async fn decide_and_forward(
    proxy: &Arc<Proxy>,
    caller: Caller,
    request: Request<Body>,
    started: Instant,
) -> Response {
    let engine = &proxy.engine;
    let _open = engine.metrics.connection_opened("http");
    let Some(issuer) = engine.credentials.clone() else {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "this server issues no credentials",
        );
    };
    let mut route = match route_of(&proxy.spec, &request) {
        Ok(route) => route,
        Err((status, message)) => {
            tracing::info!(
                caller = %caller,
                method = %request.method(),
                status = status.as_u16(),
                why = message,
                "proxy_request_refused"
            );
            return answer(status, message);
        }
    };
    // Two tokens are no evidence: which one counts would depend on who reads the header
    // (a front proxy may append one to the client's).
    let evidence_header = &proxy.spec.evidence_header;
    if matches!(caller, Caller::Remote(_))
        && request
            .headers()
            .get_all(evidence_header)
            .iter()
            .nth(1)
            .is_some()
    {
        let message = format!("the evidence header `{evidence_header}` was sent more than once");
        tracing::info!(
            caller = %caller,
            method = %request.method(),
            status = 400,
            why = message,
            "proxy_request_refused"
        );
        return answer(StatusCode::BAD_REQUEST, &message);
    }
    // A local process is attested by its connection; a header it sends is not evidence.
    let token = match caller {
        Caller::Remote(_) => evidence_token(request.headers(), &proxy.spec.evidence_header),
        Caller::Local(_) => None,
    };
    let body = DecideBody {
        evidence: token.map(|token| Evidence {
            token,
            digest: std::sync::OnceLock::new(),
        }),
        target: route.target.clone(),
        request: RequestDetails {
            action: Some(request.method().as_str().to_owned()),
            resource: Some(request.uri().path().to_owned()),
        },
        explain: false,
    };
    let target = match super::target_query(&body.target) {
        Ok(target) => target,
        Err(message) => return answer(StatusCode::BAD_REQUEST, &message),
    };
    // A forward proxy asks a client without evidence for it, as HTTP has it.
    let refused = if proxy.spec.forward && body.evidence.is_none() {
        StatusCode::PROXY_AUTHENTICATION_REQUIRED
    } else {
        StatusCode::FORBIDDEN
    };
    let allowed = match decide(engine, &caller, &body, target, started).await {
        Decided::Refused { event, answer } => {
            return match record(engine, vec![event]).await {
                Ok(ids) if refused == StatusCode::PROXY_AUTHENTICATION_REQUIRED => {
                    let mut response = refusal(refused, &answer, ids.first());
                    response.headers_mut().insert(
                        header::PROXY_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"portcullis\""),
                    );
                    response
                }
                Ok(ids) => refusal(refused, &answer, ids.first()),
                Err(response) => response,
            };
        }
        Decided::AllowedWithout { event, .. } => {
            // In forward mode the request named an endpoint; the decision named its target.
            route.target.name = route.target.name.or_else(|| event.target.clone());
            if let Err(response) = record(engine, vec![event]).await {
                return response;
            }
            return forward(proxy, &route, request, None).await;
        }
        Decided::Allowed(allowed) => allowed,
    };
    route.target.name = route.target.name.or_else(|| allowed.event.target.clone());
    let now = chrono::Utc::now().timestamp();
    let evidence = match (&caller, &body.evidence) {
        (Caller::Local(_), _) => Some(local_evidence(&allowed.event)),
        (Caller::Remote(_), Some(evidence)) => Some(evidence.digest()),
        (Caller::Remote(_), None) => None,
    };
    let key = evidence.map(|evidence| ReuseKey {
        evidence,
        target: allowed.event.target.clone().unwrap_or_default(),
        credential: allowed.credential.name.clone(),
        bundle: allowed.event.bundle_hash.clone().unwrap_or_default(),
    });
    // A credential issued to this caller moments ago is used again: one decision event, and
    // no new issuance.
    if let Some(value) = key.as_ref().and_then(|key| proxy.reuse.get(key, now)) {
        if let Err(response) = record(engine, vec![allowed.event]).await {
            return response;
        }
        return forward(proxy, &route, request, Some(value)).await;
    }
    let evidence_expires_at = allowed.evidence_expires_at;
    let credential = match issue_for(proxy, &issuer, *allowed, started).await {
        Ok((value, expires_at)) => {
            if let Some(key) = key
                && proxy.spec.credential_reuse_s > 0
            {
                let reuse_s = proxy.spec.credential_reuse_s;
                let until = reuse_until(now, reuse_s, expires_at, evidence_expires_at);
                proxy.reuse.keep(key, &value, until, now);
            }
            value
        }
        Err(response) => return response,
    };
    forward(proxy, &route, request, Some(credential)).await
}

/// Where a request goes: the target it is decided for and the upstream it is sent to.
struct Route {
    target: TargetSpec,
    upstream_scheme: String,
    upstream_authority: String,
    upstream_base_path: String,
}

/// The listener's target and upstream in reverse mode; in forward mode, the `http://` target
/// the request's absolute-form URI names, or the answer that refuses the request.
fn route_of(
    spec: &HttpProxySpec,
    request: &Request<Body>,
) -> Result<Route, (StatusCode, &'static str)> {
    // Only a path: `*` and a bare authority name none, and a reverse listener would put them
    // after its base path as they are.
    if !spec.forward && !request.uri().path().starts_with('/') {
        return Err((
            StatusCode::BAD_REQUEST,
            "the request names no path: send one that starts with `/`",
        ));
    }
    // An upstream that resolves `..` would serve a path outside its listener's base path,
    // and one that decodes `%2e` or `%2f` first would do the same.
    if has_dot_segment(request.uri().path()) {
        return Err((
            StatusCode::BAD_REQUEST,
            "the path holds a `.` or `..` segment (perhaps percent-encoded); send it with dot \
             segments removed, as RFC 3986 has clients do",
        ));
    }
    if !spec.forward {
        return Ok(Route {
            target: TargetSpec {
                name: Some(spec.target.clone()),
                protocol: None,
                host: None,
                port: None,
            },
            upstream_scheme: spec.upstream_scheme.clone(),
            upstream_authority: spec.upstream_authority.clone(),
            upstream_base_path: spec.upstream_base_path.clone(),
        });
    }
    if request.method() == axum::http::Method::CONNECT {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not proxied: a credential cannot be put into a TLS tunnel; reach \
             `https` targets through a reverse-mode listener",
        ));
    }
    let uri = request.uri();
    let (Some("http"), Some(host)) = (uri.scheme_str(), uri.host()) else {
        return Err((
            StatusCode::BAD_REQUEST,
            "this is a forward proxy: send `http://` requests in absolute form, as clients \
             do through `HTTP_PROXY`",
        ));
    };
    let port = uri.port_u16().unwrap_or(80);
    if !spec.allow_plaintext && !portcullis_lang::net::is_loopback_authority(host) {
        return Err((
            StatusCode::FORBIDDEN,
            "the target is plain `http` off loopback, and this listener does not send \
             credentials in the clear (`allow_plaintext` in its configuration)",
        ));
    }
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok(Route {
        target: TargetSpec {
            name: None,
            protocol: Some("http".to_owned()),
            host: Some(host),
            port: Some(port),
        },
        upstream_scheme: "http".to_owned(),
        upstream_authority: authority,
        upstream_base_path: String::new(),
    })
}

/// Issues an allow's credential and records the decision and the issuance; the credential and
/// its expiry, or the answer that refuses the request.
async fn issue_for(
    proxy: &Proxy,
    issuer: &Arc<crate::credentials::CredentialIssuer>,
    allowed: Allowed,
    started: Instant,
) -> Result<(Zeroizing<String>, Option<i64>), Response> {
    let engine = &proxy.engine;
    match issue(engine, issuer, allowed, started).await {
        Authorized::Issued(granted) => {
            let Granted {
                event,
                issuance,
                issued,
                ..
            } = *granted;
            record(engine, vec![event, issuance]).await?;
            Ok((issued.value, issued.expires_at))
        }
        Authorized::Unavailable {
            mut event,
            answer,
            problem,
        } => {
            super::issuing::mark_unavailable(&mut event, &problem);
            let answer = DecideAnswer {
                reason: "the credential could not be issued; the server's log and the access \
                         event say why"
                    .to_owned(),
                reason_code: "credential_unavailable",
                ..answer
            };
            let ids = record(engine, vec![event]).await?;
            Err(refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                &answer,
                ids.first(),
            ))
        }
        Authorized::Refused { event, answer } | Authorized::AllowedWithout { event, answer } => {
            let ids = record(engine, vec![event]).await?;
            Err(refusal(StatusCode::FORBIDDEN, &answer, ids.first()))
        }
    }
}

/// What a local process is to credential reuse: everything its credential can be made from,
/// its subject (`uid:U/pid:P`) and its attested claims. A process that reuses a pid gets
/// another credential unless it is the same executable as the same user with the same claims,
/// which the credential could not tell apart anyway.
fn local_evidence(event: &NewEvent) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    hash.update(b"local\0");
    hash.update(event.subject.as_deref().unwrap_or_default().as_bytes());
    hash.update(b"\0");
    hash.update(event.claims.as_deref().unwrap_or_default().as_bytes());
    hash.finalize().into()
}

/// The caller's token from the evidence header: `Bearer TOKEN`, or the token alone.
fn evidence_token(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let value = headers.get(name)?.to_str().ok()?.trim();
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim().to_owned(),
        // `http://user:TOKEN@proxy` in `HTTP_PROXY` arrives as Basic: the password is the token.
        Some((scheme, pair)) if scheme.eq_ignore_ascii_case("basic") => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(pair.trim())
                .ok()?;
            let pair = String::from_utf8(decoded).ok()?;
            pair.split_once(':')?.1.to_owned()
        }
        _ if value.eq_ignore_ascii_case("bearer") => String::new(),
        _ => value.to_owned(),
    };
    (!token.is_empty()).then_some(token)
}

/// Records `events` in one commit; on failure, the fail-closed answer.
async fn record(engine: &Arc<Engine>, events: Vec<NewEvent>) -> Result<Vec<String>, Response> {
    super::record_events(engine, events)
        .await
        .map_err(|_| unrecorded())
}

fn unrecorded() -> Response {
    let body = json!({
        "decision": "deny",
        "reason": "the request could not be recorded, so it is denied",
        "reason_code": "audit_unavailable",
    });
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

/// A refusal in the proxy's own words, never the upstream's.
fn refusal(status: StatusCode, answer: &DecideAnswer, event_id: Option<&String>) -> Response {
    tracing::info!(
        decision = answer.decision,
        reason_code = answer.reason_code,
        rule = answer.rule.as_deref().unwrap_or(""),
        event_id = event_id.map_or("", String::as_str),
        "proxy_refused"
    );
    let body = json!({
        "decision": "deny",
        "reason": answer.reason,
        "reason_code": answer.reason_code,
        "rule": answer.rule,
        "event_id": event_id,
    });
    (status, axum::Json(body)).into_response()
}

fn answer(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// Headers that belong to one connection, not to the request (RFC 9110, section 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Sends the request upstream with the credential in place of the client's own, and relays
/// the answer.
async fn forward(
    proxy: &Proxy,
    route: &Route,
    request: Request<Body>,
    credential: Option<Zeroizing<String>>,
) -> Response {
    let spec = &proxy.spec;
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // Whatever the client presented is not forwarded: its evidence, and any credential of
    // its own where the injected one goes.
    parts.headers.remove(&spec.evidence_header);
    // A token sent in the usual evidence header too (in forward mode the evidence is in
    // `Proxy-Authorization`, and a client may send both).
    parts.headers.remove(DEFAULT_EVIDENCE_HEADER);
    parts.headers.remove(header::AUTHORIZATION);
    parts.headers.remove(header::PROXY_AUTHORIZATION);
    if let Injection::Header(name) = &spec.inject {
        parts.headers.remove(name);
    }
    let query = upstream_query(
        parts.uri.query(),
        &spec.inject,
        credential.as_deref().map(String::as_str),
    );
    let path_and_query = match query {
        Some(query) => format!("{}{}?{query}", route.upstream_base_path, parts.uri.path()),
        None => format!("{}{}", route.upstream_base_path, parts.uri.path()),
    };
    let uri = format!(
        "{}://{}{path_and_query}",
        route.upstream_scheme, route.upstream_authority
    );
    parts.uri = match uri.parse::<Uri>() {
        Ok(uri) => uri,
        Err(_) => return answer(StatusCode::BAD_REQUEST, "the request's path is not usable"),
    };
    if let Ok(host) = HeaderValue::from_str(&route.upstream_authority) {
        parts.headers.insert(header::HOST, host);
    }
    if let Some(credential) = credential.as_deref().map(String::as_str) {
        match injected_header(&spec.inject, credential) {
            Ok(Some((name, value))) => {
                parts.headers.insert(name, value);
            }
            Ok(None) => {}
            Err(why) => {
                tracing::error!(why, target = %spec.target, "credential_not_injectable");
                return answer(
                    StatusCode::BAD_GATEWAY,
                    "the credential cannot be put in an HTTP header",
                );
            }
        }
    }
    let upstream = Request::from_parts(parts, body);
    let target = route.target.name.as_deref().unwrap_or(&spec.target);
    let sent = tokio::time::timeout(spec.upstream_timeout, proxy.client.request(upstream)).await;
    match sent {
        Ok(Ok(response)) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            if let Some(credential) = credential.as_deref().map(String::as_str) {
                scrub(&mut parts.headers, &spec.inject, credential);
            }
            Response::from_parts(parts, Body::new(body))
        }
        Ok(Err(error)) => {
            proxy.engine.metrics.upstream_error(target);
            tracing::warn!(
                target,
                upstream = %route.upstream_authority,
                error = %error,
                "upstream_unreachable"
            );
            answer(
                StatusCode::BAD_GATEWAY,
                &format!("the upstream of target `{target}` could not be reached"),
            )
        }
        Err(_) => {
            proxy.engine.metrics.upstream_error(target);
            tracing::warn!(
                target,
                upstream = %route.upstream_authority,
                timeout_s = spec.upstream_timeout.as_secs(),
                "upstream_timed_out"
            );
            answer(
                StatusCode::GATEWAY_TIMEOUT,
                &format!(
                    "the upstream of target `{target}` did not answer in time ({} s)",
                    spec.upstream_timeout.as_secs()
                ),
            )
        }
    }
}

/// The query to send upstream: the client's, without its own value of the injected
/// parameter, and with the credential's when it goes in the query.
fn upstream_query(
    query: Option<&str>,
    inject: &Injection,
    credential: Option<&str>,
) -> Option<String> {
    let Injection::Query(name) = inject else {
        return query.map(str::to_owned);
    };
    let mut pairs: Vec<String> = query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| !same_name(pair.split('=').next().unwrap_or_default(), name))
        .map(str::to_owned)
        .collect();
    if let Some(credential) = credential {
        pairs.push(format!(
            "{name}={}",
            crate::http::percent_encode(credential)
        ));
    }
    (!pairs.is_empty()).then(|| pairs.join("&"))
}

/// Whether `path`, each of its `/`-separated segments percent-decoded once and split again at
/// `/` and `\\`, holds a `.` or `..` segment — also one that servers read as such: with path
/// parameters after a `;` (`..;x`, as Java servers take it) or with trailing spaces or NULs.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let decoded = percent_decoded(segment, false);
        decoded
            .split(|byte| *byte == b'/' || *byte == b'\\')
            .any(|piece| {
                let name = piece.split(|byte| *byte == b';').next().unwrap_or(piece);
                let end = name
                    .iter()
                    .rposition(|byte| !matches!(byte, b' ' | b'\t' | 0))
                    .map_or(0, |last| last + 1);
                matches!(&name[..end], b"." | b"..")
            })
    })
}

/// Whether a query parameter's name, as the client wrote it, is `name`: `api%5Fkey` and
/// `api_key` are one parameter to the upstream, so the client's must go either way.
fn same_name(written: &str, name: &str) -> bool {
    if !written.contains('%') && !written.contains('+') {
        return written == name;
    }
    percent_decoded(written, true) == name.as_bytes()
}

/// `text` with each `%XX` escape decoded once, and with `plus_is_space` (a query string) each
/// `+` as a space; anything else as it is.
fn percent_decoded(text: &str, plus_is_space: bool) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut idx = 0;
    while let Some(&byte) = bytes.get(idx) {
        let hex = bytes
            .get(idx + 1..idx + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (byte, hex) {
            (b'%', Some(value)) => {
                decoded.push(value);
                idx += 3;
            }
            (b'+', _) if plus_is_space => {
                decoded.push(b' ');
                idx += 1;
            }
            _ => {
                decoded.push(byte);
                idx += 1;
            }
        }
    }
    decoded
}

/// The header that carries the credential, if it goes in one.
fn injected_header(
    inject: &Injection,
    credential: &str,
) -> Result<Option<(HeaderName, HeaderValue)>, &'static str> {
    let (name, text) = match inject {
        Injection::Bearer => (
            header::AUTHORIZATION,
            Zeroizing::new(format!("Bearer {credential}")),
        ),
        Injection::Header(name) => (name.clone(), Zeroizing::new(credential.to_owned())),
        Injection::Basic { user } => {
            let pair = Zeroizing::new(format!("{user}:{credential}"));
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair.as_bytes());
            (
                header::AUTHORIZATION,
                Zeroizing::new(format!("Basic {encoded}")),
            )
        }
        Injection::Query(_) => return Ok(None),
    };
    let mut value = HeaderValue::from_str(&text)
        .map_err(|_| "the credential holds characters a header cannot")?;
    value.set_sensitive(true);
    Ok(Some((name, value)))
}

/// Removes every response header that repeats the credential, as it is or in the form it was
/// sent in (base64 for `basic`, percent-encoded for `query`), so that an upstream that echoes
/// what it received in its headers cannot hand it to the client. A body is relayed as it is.
fn scrub(headers: &mut HeaderMap, inject: &Injection, credential: &str) {
    let sent = match inject {
        Injection::Basic { user } => Some(Zeroizing::new(
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{credential}")),
        )),
        Injection::Query(_) => Some(Zeroizing::new(crate::http::percent_encode(credential))),
        Injection::Bearer | Injection::Header(_) => None,
    };
    let forms: Vec<&str> = std::iter::once(credential)
        .chain(sent.as_deref().map(String::as_str))
        .filter(|form| !form.is_empty())
        .collect();
    let leaking: Vec<HeaderName> = headers
        .iter()
        .filter(|(_, value)| {
            value
                .to_str()
                .is_ok_and(|text| forms.iter().any(|form| text.contains(form)))
        })
        .map(|(name, _)| name.clone())
        .collect();
    for name in leaking {
        tracing::warn!(header = %name, "upstream_echoed_the_credential");
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_is_a_bearer_token_or_the_token_alone() {
        let name = HeaderName::from_static("x-portcullis-evidence");
        let mut headers = HeaderMap::new();
        assert_eq!(evidence_token(&headers, &name), None);
        headers.insert(&name, HeaderValue::from_static("Bearer abc.def.ghi"));
        assert_eq!(
            evidence_token(&headers, &name).as_deref(),
            Some("abc.def.ghi")
        );
        headers.insert(&name, HeaderValue::from_static("abc.def.ghi"));
        assert_eq!(
            evidence_token(&headers, &name).as_deref(),
            Some("abc.def.ghi")
        );
        headers.insert(&name, HeaderValue::from_static("bearer  "));
        assert_eq!(evidence_token(&headers, &name), None);
        // `svc:abc.def.ghi`, as a client sends a proxy URL's user information.
        headers.insert(
            &name,
            HeaderValue::from_static("Basic c3ZjOmFiYy5kZWYuZ2hp"),
        );
        assert_eq!(
            evidence_token(&headers, &name).as_deref(),
            Some("abc.def.ghi")
        );
    }

    #[test]
    fn dot_segments_are_found_however_they_are_written() {
        for path in [
            "/a/../../b",
            "/a/./b",
            "/..",
            "/a/%2e%2e/b",
            "/a/%2E./b",
            "/a/..%2fb",
            "/a/%2e%2e%5cb",
            "/a/x%2f..%2fy",
            "/a/..;/b",
            "/..;/admin",
            "/a/%2e%2e;jsessionid=1/b",
            "/a/.;/b",
            "/a/..%00/b",
            "/a/..%20/b",
        ] {
            assert!(has_dot_segment(path), "{path}");
        }
        for path in [
            "/",
            "/a/b",
            "/a/...b/c",
            "/a/.well-known/x",
            "/a/b..c",
            "/v1/%252e%252e/admin",
            "/a/%2e%2e%2e",
            "/a/;x/b",
            "/a/b;..",
        ] {
            assert!(!has_dot_segment(path), "{path}");
        }
    }

    #[test]
    fn a_query_parameter_is_one_name_however_it_is_encoded() {
        assert!(same_name("api_key", "api_key"));
        assert!(same_name("api%5Fkey", "api_key"));
        assert!(same_name("api%5fkey", "api_key"));
        assert!(same_name("a+b", "a b"));
        assert!(!same_name("api_keys", "api_key"));
        assert!(!same_name("api%5", "api_key"));
        let query = upstream_query(
            Some("api%5Fkey=mine&day=3"),
            &Injection::Query("api_key".to_owned()),
            Some("s3cret"),
        );
        assert_eq!(query.as_deref(), Some("day=3&api_key=s3cret"));
    }

    #[test]
    fn a_query_credential_replaces_the_clients_own() {
        let inject = Injection::Query("api_key".to_owned());
        assert_eq!(
            upstream_query(Some("a=1&api_key=mine&b=2"), &inject, Some("s3/c+t")).as_deref(),
            Some("a=1&b=2&api_key=s3%2Fc%2Bt")
        );
        assert_eq!(upstream_query(None, &inject, None), None);
        assert_eq!(
            upstream_query(Some("a=1"), &Injection::Bearer, Some("x")).as_deref(),
            Some("a=1")
        );
    }

    #[test]
    fn credentials_go_in_the_header_their_injection_names() {
        let (name, value) = injected_header(&Injection::Bearer, "tok").unwrap().unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("authorization", "Bearer tok")
        );
        assert!(value.is_sensitive());
        let basic = Injection::Basic {
            user: "svc".to_owned(),
        };
        let (_, value) = injected_header(&basic, "pw").unwrap().unwrap();
        assert_eq!(value.to_str().unwrap(), "Basic c3ZjOnB3");
        let api_key = Injection::Header(HeaderName::from_static("x-api-key"));
        let (name, _) = injected_header(&api_key, "k").unwrap().unwrap();
        assert_eq!(name.as_str(), "x-api-key");
        assert!(injected_header(&Injection::Bearer, "line\nbreak").is_err());
    }

    #[test]
    fn an_echoed_credential_is_scrubbed_in_the_form_it_was_sent() {
        let basic = Injection::Basic {
            user: "svc".to_owned(),
        };
        let (_, sent) = injected_header(&basic, "s3cret").unwrap().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-echo",
            HeaderValue::from_str(sent.to_str().unwrap()).unwrap(),
        );
        headers.insert("x-raw", HeaderValue::from_static("got s3cret"));
        headers.insert("x-fine", HeaderValue::from_static("nothing here"));
        scrub(&mut headers, &basic, "s3cret");
        assert!(headers.get("x-echo").is_none());
        assert!(headers.get("x-raw").is_none());
        assert!(headers.get("x-fine").is_some());

        let query = Injection::Query("key".to_owned());
        let mut headers = HeaderMap::new();
        headers.insert("location", HeaderValue::from_static("/next?key=a%2Bb"));
        scrub(&mut headers, &query, "a+b");
        assert!(headers.get("location").is_none());
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, vec!["x-kept"]);
    }
}
