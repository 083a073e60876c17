//! `POST /v1/audit/query`: one read-only SQL query over the audit store, behind the admin
//! token.
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

use super::admin::require_admin;
use super::{Engine, error, is_json, read_body};

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
    let admin = match require_admin(&engine, peer, &headers) {
        Ok(admin) => admin,
        Err(response) => return *response,
    };
    let Some(runner) = admin.query.as_ref().map(Arc::clone) else {
        return error(
            StatusCode::NOT_FOUND,
            "this server does not answer SQL over its audit store",
        );
    };
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
