//! The decision API: `POST /v1/decide` and `GET /healthz`, over axum.
//!
//! A decide call carries the caller's evidence, the target and the request details. The engine
//! attests the caller, runs the VM, records the access event durably, and only then answers.
//! Every answer the API gives about access is a decision: malformed evidence, an untrusted
//! issuer or a policy error all come back as `deny` with a reason code. If the event cannot be
//! recorded, the answer is `deny` with status 503: nothing is decided without a record.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use portcullis_audit::{AuditLog, Decision as Verdict, EventKind, NewEvent};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::attest::{Attested, Attestor, Rejected};
use crate::vm::{Decision, Program, Request, TargetQuery};

/// Decide bodies larger than this get 413.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// Everything a decision needs, shared by every request.
#[derive(Debug)]
pub struct Engine {
    pub program: Arc<Program>,
    pub attestor: Attestor,
    pub audit: Arc<AuditLog>,
}

/// Builds the API's router. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`
/// so that access events carry the caller's address.
pub fn router(engine: Arc<Engine>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/decide", post(decide))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(engine)
}

/// Serves the API on `listener` until `shutdown` completes, then finishes the requests in
/// flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<Engine>,
    max_body_bytes: usize,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(engine, max_body_bytes).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    evidence: Evidence,
    target: TargetSpec,
    #[serde(default)]
    request: RequestDetails,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Evidence {
    /// A compact JWS from an OIDC trust provider.
    token: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetSpec {
    name: Option<String>,
    protocol: Option<String>,
    host: Option<String>,
    port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
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
    event_id: String,
    bundle: String,
}

async fn healthz(State(engine): State<Arc<Engine>>) -> Response {
    let body = json!({ "status": "ok", "bundle": format!("sha256:{}", engine.program.hash_hex()) });
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn decide(
    State(engine): State<Arc<Engine>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return error(rejection.status(), &rejection.body_text()),
    };
    let body: DecideBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("invalid decide request: {err}"),
            );
        }
    };
    let target = match target_query(&body.target) {
        Ok(target) => target,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let mut event = NewEvent {
        source_ip: Some(peer.ip()),
        action: body.request.action.clone(),
        resource: body.request.resource.clone(),
        bundle_hash: Some(engine.program.hash_hex().to_owned()),
        ..NewEvent::default()
    };
    let answer = match engine.attestor.attest(&body.evidence.token) {
        Ok(attested) => {
            let request = Request {
                kind: attested.provider.kind(),
                claims: &attested.claims,
                target,
                action: body.request.action.as_deref(),
                resource: body.request.resource.as_deref(),
            };
            let decision = engine.program.decide(&request);
            describe_caller(&mut event, &attested);
            describe_target(&mut event, &decision, &body.target);
            answer_decision(&mut event, &decision)
        }
        Err(rejected) => {
            describe_target_spec(&mut event, &body.target);
            answer_attestation_failure(&mut event, *rejected)
        }
    };
    event.latency_ns = Some(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
    record_and_answer(&engine, event, answer).await
}

fn target_query(spec: &TargetSpec) -> Result<TargetQuery<'_>, &'static str> {
    match (&spec.name, &spec.protocol, &spec.host, spec.port) {
        (Some(name), None, None, None) => Ok(TargetQuery::Named(name)),
        (None, Some(protocol), Some(host), Some(port)) => Ok(TargetQuery::Endpoint {
            protocol,
            host,
            port,
        }),
        _ => Err("invalid decide request: `target` needs either `name`, \
                  or `protocol`, `host` and `port`"),
    }
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
    event.port = spec.port;
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
    answer(event, decision.reason.code())
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
    event.trust_provider = unverified.provider;
    event.issuer = unverified.issuer;
    event.subject = unverified.subject;
    answer(event, err.code())
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
        event_id: String::new(),
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
    let audit = Arc::clone(&engine.audit);
    let recorded = tokio::task::spawn_blocking(move || audit.record(event)).await;
    match recorded {
        Ok(Ok(recorded)) => {
            let answer = DecideAnswer {
                event_id: recorded.event_id.to_string(),
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
        Ok(Err(err)) => unrecorded(&err.to_string()),
        Err(join) => unrecorded(&join.to_string()),
    }
}

/// Fail closed: a decision that cannot be recorded is a deny.
fn unrecorded(detail: &str) -> Response {
    tracing::error!(error = detail, "audit_record_failed");
    let body = json!({
        "decision": "deny",
        "reason": "the decision could not be recorded, so access is denied",
        "reason_code": "audit_unavailable",
    });
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}
