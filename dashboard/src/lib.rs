//! The Portcullis dashboard: what the security team and the auditor look at in a browser.
//!
//! Four sections, each a few server-rendered pages that need no JavaScript (charts are inline
//! SVG, forms are plain `GET` forms):
//!
//! - **Overview** (`/`): posture per framework from the latest compliance report, decisions
//!   and denials over time, the most denied workloads and the commonest deny reasons, and the
//!   integrity of the audit chain.
//! - **Controls** (`/controls`, `/controls/{framework}/{id}`): each control's status, its
//!   evidence SQL, the rows behind a failure, the remediation, and its history.
//! - **Access log** (`/events`, `/events/{seq}`): events filtered and paged by `seq` (keyset,
//!   never `OFFSET`), and each event in full.
//! - **Policy inventory** (`/inventory`): the bundle in effect with each workload's, target's,
//!   credential's and rule's use, and the grants no one used in a window.
//!
//! In: the data directory of an audit store, read with [`portcullis_audit::query`] and the
//! compliance history. Out: an axum [`Router`] that the server serves on its own listener.
//! Every response carries a strict Content-Security-Policy and its companions
//! ([`security_headers`]); every page can be put behind tokens ([`auth`]).

pub mod auth;
mod chart;
mod error;
mod format;
mod layout;
mod pages;
mod params;
mod sql;
mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use portcullis_audit::compliance;
use portcullis_audit::query::QueryLimits;

pub use auth::AccessToken;
pub use error::PageError;

/// Pages that may query the store at once; another waits for one of them to finish, up to
/// [`QUEUE_WAIT`]. Each query takes up to two cores, and decisions come first.
const CONCURRENT_PAGES: usize = 2;

/// How long a page waits for its turn before it answers 503.
const QUEUE_WAIT: Duration = Duration::from_secs(30);

/// The longest a page's query may run: a page that takes longer helps no one, whatever
/// `audit.query_timeout_s` allows the SQL endpoint.
const PAGE_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest result a page's query may hold in memory.
const PAGE_RESULT_BYTES: usize = 64 * 1024 * 1024;

/// What the dashboard reads and who may read it.
#[derive(Debug)]
pub struct Dashboard {
    data_dir: PathBuf,
    limits: QueryLimits,
    /// Empty: every page is open (the dashboard listens on loopback); else a page needs one.
    tokens: Vec<AccessToken>,
    pages: tokio::sync::Semaphore,
    /// How often the server evaluates compliance for the dashboard; `None`: it does not.
    evaluate_every: Option<std::time::Duration>,
}

impl Dashboard {
    /// A dashboard over the store in `data_dir`, its queries under `limits` (the server's
    /// `[audit]` limits; a page's own time and result limits apply when lower).
    pub fn new(data_dir: PathBuf, limits: QueryLimits) -> Dashboard {
        let limits = QueryLimits {
            timeout: limits.timeout.min(PAGE_QUERY_TIMEOUT),
            max_result_bytes: Some(PAGE_RESULT_BYTES),
            ..limits
        };
        Dashboard {
            data_dir,
            limits,
            tokens: Vec::new(),
            pages: tokio::sync::Semaphore::new(CONCURRENT_PAGES),
            evaluate_every: None,
        }
    }

    /// Every page then needs one of `tokens` ([`auth`]).
    pub fn with_tokens(mut self, tokens: Vec<AccessToken>) -> Dashboard {
        self.tokens = tokens;
        self
    }

    /// The server evaluates compliance at start and then every `every` (`None`: never), as
    /// the pages say while there is no report.
    pub fn with_evaluation(mut self, every: Option<std::time::Duration>) -> Dashboard {
        self.evaluate_every = every;
        self
    }

    /// What a page says while no compliance report exists.
    pub(crate) fn no_report(&self) -> String {
        let schedule = match self.evaluate_every {
            Some(every) => format!(
                "The server evaluates the controls, and verifies the audit chain, at start and \
                 then every {} (`[dashboard] evaluate_every_s`).",
                describe(every)
            ),
            None => "The server does not evaluate the controls on its own \
                     (`[dashboard] evaluate_every_s = 0`)."
                .to_owned(),
        };
        format!(
            "No compliance report yet. {schedule} `portcullis compliance report --keep` makes one \
             at once."
        )
    }

    /// Whether pages need a token.
    pub fn requires_token(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Waits for a page's turn at the store.
    async fn turn(&self) -> Result<tokio::sync::SemaphorePermit<'_>, PageError> {
        match tokio::time::timeout(QUEUE_WAIT, self.pages.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(PageError::Busy),
        }
    }
}

/// The dashboard's routes, with authentication and the security headers on every response.
pub fn router(dashboard: Dashboard) -> Router {
    let dashboard = Arc::new(dashboard);
    Router::new()
        .route("/", get(pages::overview::page))
        .route("/controls", get(pages::controls::list))
        .route("/controls/{framework}/{id}", get(pages::controls::control))
        .route("/events", get(pages::events::list))
        .route("/events/{seq}", get(pages::events::event))
        .route("/inventory", get(pages::inventory::page))
        .route(layout::stylesheet_path(), get(layout::stylesheet))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&dashboard),
            auth::require_token,
        ))
        .layer(middleware::from_fn(security_headers))
        .with_state(dashboard)
}

async fn not_found() -> PageError {
    PageError::NotFound("there is no such page".to_owned())
}

/// What every response carries. The pages load nothing but their own stylesheet and draw
/// their charts as inline SVG, so the policy allows nothing else: no script at all, no
/// frame, no form sent elsewhere. Attacker-controlled text (claims, subjects, reasons) is
/// escaped by the templates; the policy is the second line should an escape ever be missed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; \
     img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let fixed = [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    for (name, value) in fixed {
        headers.insert(name, value);
    }
    // Pages show access events, which are nobody's business but the reader's: no cache keeps
    // them. The stylesheet sets its own.
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// `1 hour`, `90 minutes`, `2 days`, `45 seconds`: a schedule as people say it.
fn describe(every: std::time::Duration) -> String {
    let seconds = every.as_secs();
    let (count, unit) = match seconds {
        s if s % 86_400 == 0 => (s / 86_400, "day"),
        s if s % 3_600 == 0 => (s / 3_600, "hour"),
        s if s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    if count == 1 {
        format!("1 {unit}")
    } else {
        format!("{count} {unit}s")
    }
}
