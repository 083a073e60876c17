//! `POST /v1/credentials`: evidence and target in; attest, decide, issue; the credential out,
//! or a 403 with the reason. And `GET /.well-known/jwks.json`, the keys that verify the tokens
//! the server mints.
//!
//! Every request is recorded as its decision's access event (or its attestation failure);
//! an issued credential also as a `credential_issued` event whose `credential_ref` is the HMAC
//! of its identifier. Both events are durable before the credential leaves the server, and
//! neither holds the credential.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use portcullis_audit::{EventKind, NewEvent};
use portcullis_lang::ir::Credential;
use serde_json::{Value, json};

use super::{
    Caller, ConditionsSeen, DecideAnswer, DecideBody, Engine, LocalPeer,
    answer_attestation_failure, answer_decision, attest_caller, describe_caller, describe_target,
    describe_target_spec, error, no_peer_credentials, read_decide_body, record_and_answer,
    request_event, request_of, target_query,
};
use crate::credentials::{Issued, Recipient};
use crate::vm::TargetQuery;

/// How long a verifier may cache the published keys: well under the hour a new key is
/// published before it signs.
const JWKS_CACHE_CONTROL: &str = "public, max-age=900";

/// The keys that verify minted tokens, for targets and anyone else to fetch.
pub async fn jwks(State(engine): State<Arc<Engine>>) -> Response {
    match &engine.credentials {
        Some(issuer) => (
            StatusCode::OK,
            [(axum::http::header::CACHE_CONTROL, JWKS_CACHE_CONTROL)],
            axum::Json(issuer.ring.jwks()),
        )
            .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "this server issues no credentials, so it publishes no keys",
        ),
    }
}

/// The discovery document of the tokens the server mints, so that a verifier configured with
/// the issuer alone finds the keys.
pub async fn discovery(State(engine): State<Arc<Engine>>) -> Response {
    match &engine.credentials {
        Some(issuer) => {
            let base = issuer.issuer.trim_end_matches('/');
            let document = serde_json::json!({
                "issuer": issuer.issuer,
                "jwks_uri": format!("{base}/.well-known/jwks.json"),
                "id_token_signing_alg_values_supported": ["EdDSA"],
            });
            (
                StatusCode::OK,
                [(axum::http::header::CACHE_CONTROL, JWKS_CACHE_CONTROL)],
                axum::Json(document),
            )
                .into_response()
        }
        None => error(StatusCode::NOT_FOUND, "this server issues no credentials"),
    }
}

pub async fn credentials(
    State(engine): State<Arc<Engine>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    credentials_for(engine, Caller::Remote(peer), headers, body).await
}

/// `POST /v1/credentials` on the Unix socket: the caller is the connecting process.
pub async fn credentials_local(
    State(engine): State<Arc<Engine>>,
    ConnectInfo(local): ConnectInfo<LocalPeer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match local.0 {
        Ok(peer) => credentials_for(engine, Caller::Local(peer), headers, body).await,
        Err(why) => no_peer_credentials(&why),
    }
}

async fn credentials_for(
    engine: Arc<Engine>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let Some(issuer) = engine.credentials.clone() else {
        return error(StatusCode::NOT_FOUND, "this server issues no credentials");
    };
    let body = match read_decide_body(&engine, &headers, body, &caller).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    if body.explain {
        let message =
            "`explain` belongs to `POST /v1/decide`; a credential request is not explained";
        return error(StatusCode::BAD_REQUEST, message);
    }
    let target = match target_query(&body.target) {
        Ok(target) => target,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    match authorize(&engine, &issuer, &caller, &body, target, started).await {
        Authorized::Refused { event, answer } => refused(&engine, event, answer).await,
        Authorized::AllowedWithout {
            mut event,
            mut answer,
        } => {
            answer.reason = format!(
                "{}, but the rule names no credential to issue",
                answer.reason
            );
            answer.reason_code = "no_credential";
            event.reason_code = Some(answer.reason_code.to_owned());
            event.reason = Some(answer.reason.clone());
            refused(&engine, event, answer).await
        }
        Authorized::Unavailable {
            event,
            answer,
            problem,
        } => unavailable(&engine, event, answer, &problem).await,
        Authorized::Issued(granted) => {
            let Granted {
                event,
                issuance,
                answer,
                credential,
                issued,
            } = *granted;
            deliver(&engine, event, issuance, answer, &credential, issued).await
        }
    }
}

/// What attesting, deciding and issuing came to; nothing is recorded yet. Each event has
/// its latency.
pub(super) enum Authorized {
    /// A deny, a failed attestation, an unknown target.
    Refused {
        event: NewEvent,
        answer: DecideAnswer,
    },
    /// An allow whose permit names no credential.
    AllowedWithout {
        event: NewEvent,
        answer: DecideAnswer,
    },
    /// An allow whose credential could not be issued, and why (for the log and the event,
    /// not the caller).
    Unavailable {
        event: NewEvent,
        answer: DecideAnswer,
        problem: String,
    },
    /// An allow and its credential.
    Issued(Box<Granted>),
}

/// An allow, its credential, and the two events to record before the credential is used.
pub(super) struct Granted {
    pub(super) event: NewEvent,
    pub(super) issuance: NewEvent,
    pub(super) answer: DecideAnswer,
    pub(super) credential: Credential,
    pub(super) issued: Issued,
}

/// Attests the caller, decides its request, and issues the credential the deciding permit
/// names: what `POST /v1/credentials` and the proxy both do before they record and answer.
pub(super) async fn authorize(
    engine: &Arc<Engine>,
    issuer: &Arc<crate::credentials::CredentialIssuer>,
    caller: &Caller,
    body: &DecideBody,
    target: TargetQuery<'_>,
    started: Instant,
) -> Authorized {
    match decide(engine, caller, body, target, started).await {
        Decided::Refused { event, answer } => Authorized::Refused { event, answer },
        Decided::AllowedWithout { event, answer } => Authorized::AllowedWithout { event, answer },
        Decided::Allowed(allowed) => issue(engine, issuer, *allowed, started).await,
    }
}

/// What attesting and deciding came to, before any credential is issued.
pub(super) enum Decided {
    Refused {
        event: NewEvent,
        answer: DecideAnswer,
    },
    AllowedWithout {
        event: NewEvent,
        answer: DecideAnswer,
    },
    Allowed(Box<Allowed>),
}

/// An allow whose permit names a credential, not issued yet.
pub(super) struct Allowed {
    pub(super) event: NewEvent,
    pub(super) answer: DecideAnswer,
    pub(super) credential: Credential,
    recipient: OwnedRecipient,
    /// When the caller's evidence expires (its `exp`), Unix seconds.
    pub(super) evidence_expires_at: Option<i64>,
}

/// Attests the caller and decides its request.
pub(super) async fn decide(
    engine: &Arc<Engine>,
    caller: &Caller,
    body: &DecideBody,
    target: TargetQuery<'_>,
    started: Instant,
) -> Decided {
    let program = engine.program.current();
    let mut event = request_event(caller, body, &program);
    let decided_at = chrono::Utc::now().timestamp();
    let attested = match attest_caller(engine, caller, body).await {
        Ok(attested) => attested,
        Err(rejected) => {
            describe_target_spec(&mut event, &body.target);
            let answer = answer_attestation_failure(&mut event, *rejected);
            event.latency_ns = Some(elapsed_ns(started));
            return Decided::Refused { event, answer };
        }
    };
    let request = request_of(&attested, target, body, caller, decided_at);
    describe_caller(&mut event, &attested);
    let mut conditions = ConditionsSeen::default();
    let decision = program.decide_with(&request, &mut conditions);
    event.conditions = conditions.named(&program);
    describe_target(&mut event, &decision, &body.target);
    let answer = answer_decision(&mut event, &decision);
    let credential = match (decision.allow, decision.credential) {
        (true, Some(credential)) => credential.clone(),
        (true, None) => {
            event.latency_ns = Some(elapsed_ns(started));
            return Decided::AllowedWithout { event, answer };
        }
        (false, _) => {
            event.latency_ns = Some(elapsed_ns(started));
            return Decided::Refused { event, answer };
        }
    };
    let recipient = OwnedRecipient {
        workload: decision.workload.map(str::to_owned),
        subject: attested.subject.clone(),
        trust_provider: attested.provider.name().to_owned(),
        target: decision
            .target
            .map(|target| target.name.clone())
            .unwrap_or_default(),
        database: decision.target.and_then(|target| target.database.clone()),
        now: decided_at,
        claims: copied_claims(&credential, &attested, engine.attestor.custom_claims()),
    };
    let evidence_expires_at = attested
        .payload
        .get("exp")
        .and_then(serde_json::Value::as_i64);
    event.latency_ns = Some(elapsed_ns(started));
    Decided::Allowed(Box::new(Allowed {
        event,
        answer,
        credential,
        recipient,
        evidence_expires_at,
    }))
}

/// Issues the credential of an allow.
pub(super) async fn issue(
    engine: &Arc<Engine>,
    issuer: &Arc<crate::credentials::CredentialIssuer>,
    allowed: Allowed,
    started: Instant,
) -> Authorized {
    let Allowed {
        mut event,
        answer,
        credential,
        recipient,
        ..
    } = allowed;
    // A `static` credential reads a file: off the async threads.
    let issuing = Arc::clone(issuer);
    let minted = {
        let credential = credential.clone();
        tokio::task::spawn_blocking(move || issuing.issue(&credential, &recipient.borrowed())).await
    };
    event.latency_ns = Some(elapsed_ns(started));
    let issued = match minted {
        Ok(Ok(issued)) => issued,
        Ok(Err(problem)) => {
            let problem = problem.to_string();
            return Authorized::Unavailable {
                event,
                answer,
                problem,
            };
        }
        Err(join) => {
            let problem = join.to_string();
            return Authorized::Unavailable {
                event,
                answer,
                problem,
            };
        }
    };
    let issuance = issued_event(engine, &event, &credential, &issued);
    Authorized::Issued(Box::new(Granted {
        event,
        issuance,
        answer,
        credential,
        issued,
    }))
}

/// [`Recipient`] with owned text, to cross onto a blocking thread.
struct OwnedRecipient {
    workload: Option<String>,
    subject: String,
    trust_provider: String,
    target: String,
    database: Option<String>,
    now: i64,
    claims: serde_json::Map<String, serde_json::Value>,
}

impl OwnedRecipient {
    fn borrowed(&self) -> Recipient<'_> {
        Recipient {
            workload: self.workload.as_deref(),
            subject: &self.subject,
            trust_provider: &self.trust_provider,
            target: &self.target,
            database: self.database.as_deref(),
            now: self.now,
            claims: &self.claims,
        }
    }
}

/// The caller's claims that a `jwt` credential copies into the token it mints, by their Gate
/// names and with their Gate types: the values a policy reads, from wherever the caller's kind
/// keeps them (`namespace` from a Kubernetes token's `kubernetes.io` object, a custom claim
/// from its path), never a top-level key of the same name. A claim the caller's kind does not
/// have, or the caller does not carry, is left out.
fn copied_claims(
    credential: &portcullis_lang::ir::Credential,
    attested: &crate::attest::Attested<'_>,
    custom: &portcullis_lang::schema::CustomClaims,
) -> serde_json::Map<String, serde_json::Value> {
    use portcullis_lang::schema::ClaimValue;
    let portcullis_lang::ir::CredentialKind::Jwt { copy_claims, .. } = &credential.kind else {
        return serde_json::Map::new();
    };
    let kind = attested.provider.kind();
    copy_claims
        .iter()
        .filter_map(|name| {
            let (id, _, _) = custom.resolve(kind, name)?;
            let value = match attested.claims.get(usize::from(id.0))?.as_ref()? {
                ClaimValue::String(text) => serde_json::json!(text),
                ClaimValue::Int(number) => serde_json::json!(number),
                ClaimValue::Bool(flag) => serde_json::json!(flag),
                ClaimValue::StringSet(items) => serde_json::json!(items),
            };
            Some((name.clone(), value))
        })
        .collect()
}

fn elapsed_ns(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The `credential_issued` event: the decision's caller and target, the provider, the TTL,
/// and the HMAC of the credential's identifier.
fn issued_event(
    engine: &Engine,
    decision: &NewEvent,
    credential: &Credential,
    issued: &Issued,
) -> NewEvent {
    NewEvent {
        kind: EventKind::CredentialIssued,
        reason: Some(format!(
            "credential `{}` issued under rule `{}`",
            credential.name,
            decision.rule.as_deref().unwrap_or_default()
        )),
        reason_code: Some("credential_issued".to_owned()),
        credential_provider: Some(credential.kind.keyword().to_owned()),
        credential_ttl_s: credential.ttl_s,
        credential_ref: Some(engine.audit.credential_ref(&issued.identifier)),
        conditions: Vec::new(),
        latency_ns: None,
        ..decision.clone()
    }
}

/// A deny, or an allow with nothing to issue: recorded, then answered 403 with the reason.
async fn refused(engine: &Arc<Engine>, event: NewEvent, answer: DecideAnswer) -> Response {
    let mut response = record_and_answer(engine, event, answer).await;
    if response.status() == StatusCode::OK {
        *response.status_mut() = StatusCode::FORBIDDEN;
    }
    response
}

/// The decision was an allow, but the credential could not be issued: recorded as decided,
/// with the problem in the event's reason and the server's log, and answered 503. The caller
/// learns which credential failed, not the server's paths, endpoints or database errors.
async fn unavailable(
    engine: &Arc<Engine>,
    mut event: NewEvent,
    mut answer: DecideAnswer,
    problem: &str,
) -> Response {
    mark_unavailable(&mut event, problem);
    let name = answer
        .credential
        .as_ref()
        .map_or_else(String::new, |credential| format!(" `{}`", credential.name));
    answer.reason = format!(
        "the credential{name} could not be issued; the server's log and the access event say why"
    );
    answer.reason_code = "credential_unavailable";
    answer.credential = None;
    let mut response = record_and_answer(engine, event, answer).await;
    if response.status() == StatusCode::OK {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    response
}

/// Logs why an allowed request's credential could not be issued and puts the why in its
/// decision event, with `reason_code` `credential_unavailable`: what the API and both proxies
/// record for it. The caller is told less.
pub(super) fn mark_unavailable(event: &mut NewEvent, problem: &str) {
    tracing::error!(
        problem,
        target = event.target.as_deref().unwrap_or_default(),
        "credential_issue_failed"
    );
    event.reason = Some(format!(
        "{}; the credential was not issued: {problem}",
        event.reason.as_deref().unwrap_or_default()
    ));
    event.reason_code = Some("credential_unavailable".to_owned());
}

/// Records the decision and the issuance in one commit, then hands the credential over; if
/// they cannot be recorded, the credential is dropped and the answer is the fail-closed deny.
async fn deliver(
    engine: &Arc<Engine>,
    decision: NewEvent,
    issued_event: NewEvent,
    answer: DecideAnswer,
    credential: &Credential,
    issued: Issued,
) -> Response {
    let recorded = super::record_events(engine, vec![decision, issued_event]).await;
    let (decided, issuance) = match recorded.as_deref() {
        Ok([decided, issuance]) => (decided.clone(), issuance.clone()),
        Ok(_) => {
            tracing::error!(
                error = "the store recorded an unexpected count",
                "audit_record_failed"
            );
            return super::unrecorded(&answer);
        }
        Err(_) => return super::unrecorded(&answer),
    };
    tracing::info!(
        decision = answer.decision,
        reason_code = answer.reason_code,
        rule = answer.rule.as_deref().unwrap_or(""),
        event_id = %decided,
        credential = %credential.name,
        "credential_issued"
    );
    let expires_at = issued.expires_at.and_then(|at| {
        chrono::DateTime::from_timestamp(at, 0)
            .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    });
    let answer = DecideAnswer {
        event_id: decided,
        credential: None,
        ..answer
    };
    let mut body = match serde_json::to_value(&answer) {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(%error, "credential_answer_unserializable");
            return super::unrecorded(&answer);
        }
    };
    body["credential"] = json!({
        "name": credential.name,
        "kind": credential.kind.keyword(),
        "type": issued.token_type,
        "value": issued.value.as_str(),
        "ttl_s": credential.ttl_s,
        "expires_at": expires_at.map_or(Value::Null, Value::String),
        "event_id": issuance,
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}
