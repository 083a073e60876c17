//! Why a page cannot be shown, and the page that says so with the right status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use portcullis_audit::QueryError;

use crate::layout;

/// A page that cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// The query string or the path asks for something invalid; the message says what.
    #[error("{0}")]
    BadRequest(String),

    #[error("{0}")]
    NotFound(String),

    #[error("this dashboard needs a token: give the admin or audit token as the password")]
    Unauthorized,

    #[error("the dashboard is busy with other pages; try again in a moment")]
    Busy,

    /// An open (loopback) dashboard asked for under another host name: DNS rebinding.
    #[error("this dashboard answers only to a loopback address such as 127.0.0.1 or localhost")]
    ForeignHost,

    #[error("the audit store cannot answer: {0}")]
    Query(#[from] QueryError),

    #[error("the compliance history cannot be read: {0}")]
    History(String),
}

impl PageError {
    fn status(&self) -> StatusCode {
        match self {
            PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PageError::NotFound(_) => StatusCode::NOT_FOUND,
            PageError::Unauthorized => StatusCode::UNAUTHORIZED,
            PageError::ForeignHost => StatusCode::MISDIRECTED_REQUEST,
            PageError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            PageError::Query(QueryError::TimedOut { .. } | QueryError::MemoryLimit { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            PageError::Query(_) | PageError::History(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, status = status.as_u16(), "dashboard_page_failed");
        }
        let title = status.canonical_reason().unwrap_or("Error");
        let body = html! {
            h1 { (title) }
            p.problem { (self.to_string()) }
        };
        let mut response = (status, layout::page(title, None, body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"portcullis\", charset=\"UTF-8\""),
            );
        }
        response
    }
}
