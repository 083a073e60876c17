//! `POST /v1/audit/query`: one read-only SQL query over the audit store, behind the admin
//! token or the audit token (which grants this endpoint and nothing else).
//!
//! The engine does not run SQL (it does not build DataFusion): the server hands it an
//! [`AuditQuery`] that does. Here are the HTTP concerns: the token, the body and its size, the
//! answer's status. The body is `{"sql": "…", "format": "json" | "csv"}`; a JSON answer is
//! `{"rows": [{column: value, …}, …], "row_count": n, "truncated": bool}`.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::admin::{AdminToken, authorize};
use super::{Engine, error, is_json, read_body};

/// The endpoint, where the server offers it.
#[derive(Debug)]
pub struct AuditQueryApi {
    /// The tokens that may query: the admin token and the audit token, as configured.
    pub readers: Vec<AdminToken>,
    pub query: Arc<dyn AuditQuery>,
}

/// The longest SQL text accepted.
pub const MAX_SQL_BYTES: usize = 64 * 1024;

/// How the result should be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueryFormat {
    #[default]
    Json,
    Csv,
}

/// A query's result, written out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryAnswer {
    pub content_type: &'static str,
    pub body: String,
}

/// Why a query gave no result; `status` is the HTTP status to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRefusal {
    pub status: StatusCode,
    pub message: String,
}

/// Runs SQL over the audit store for the API; implemented by the server.
pub trait AuditQuery: Send + Sync + fmt::Debug {
    fn run(
        &self,
        sql: String,
        format: QueryFormat,
    ) -> Pin<Box<dyn Future<Output = Result<QueryAnswer, QueryRefusal>> + Send + 'static>>;
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object with `sql` and an optional `format`"
)]
struct QueryBody {
    sql: String,
    #[serde(default)]
    format: QueryFormat,
}

pub(super) async fn query(
    State(engine): State<Arc<Engine>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(api) = &engine.audit_query else {
        return error(
            StatusCode::NOT_FOUND,
            "SQL over the audit store is disabled; set `server.audit_token_file` (or \
             `server.admin_token_file`) to enable it",
        );
    };
    // Every token is compared, so the time taken does not say which one came close.
    let verdicts: Vec<Result<(), &'static str>> = api
        .readers
        .iter()
        .map(|token| authorize(token, &headers))
        .collect();
    if !verdicts.iter().any(Result::is_ok) {
        let problem = verdicts
            .into_iter()
            .find_map(Result::err)
            .unwrap_or("no token configured");
        tracing::warn!(peer = %peer.ip(), problem, "audit_query_unauthorized");
        let message = "a valid audit or admin token is required, as `authorization: Bearer TOKEN`";
        let mut response = error(StatusCode::UNAUTHORIZED, message);
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"portcullis-audit\""),
        );
        return response;
    }
    let runner = Arc::clone(&api.query);
    if !is_json(&headers) {
        let message = "the request body must be JSON, sent as `content-type: application/json`";
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, message);
    }
    let body = match read_body(body, MAX_SQL_BYTES + 1024).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let body: QueryBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(err) => {
            let message = format!("invalid query request: {err}");
            return error(StatusCode::BAD_REQUEST, &message);
        }
    };
    if body.sql.len() > MAX_SQL_BYTES {
        let message = format!("the SQL text is longer than {MAX_SQL_BYTES} bytes");
        return error(StatusCode::PAYLOAD_TOO_LARGE, &message);
    }
    tracing::info!(peer = %peer.ip(), sql_bytes = body.sql.len(), "audit_query");
    match runner.run(body.sql, body.format).await {
        Ok(answer) => {
            let mut response = (StatusCode::OK, answer.body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(answer.content_type),
            );
            response
        }
        Err(refusal) => error(refusal.status, &refusal.message),
    }
}
