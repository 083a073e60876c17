//! The admin API: `POST /v1/admin/reload`, behind a bearer token.
//!
//! Without a configured token the admin endpoints answer 404 and say how to enable them. A
//! missing or wrong token gets 401, and the server logs the caller's address, never what it
//! sent. The reload itself is the server's ([`Reload`]): the engine knows neither where the
//! policy set comes from nor how it is checked; it only answers with the outcome.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Engine, error};

/// The admin API's token and what it may do.
#[derive(Debug)]
pub struct Admin {
    pub token: AdminToken,
    pub reload: Arc<dyn Reload>,
}

/// The admin token, kept only as its SHA-256 digest: comparing fixed-length digests takes the
/// same time wherever a presented token differs, and the token itself never reaches `Debug`.
pub struct AdminToken {
    digest: [u8; 32],
}

impl AdminToken {
    pub fn new(token: &str) -> AdminToken {
        AdminToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// Whether `presented` is the token, in time that does not depend on where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented).into();
        let difference = self
            .digest
            .iter()
            .zip(presented)
            .fold(0_u8, |difference, (ours, theirs)| {
                difference | (ours ^ theirs)
            });
        std::hint::black_box(difference) == 0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(…)")
    }
}

/// Reloads the policy set into an engine. Implemented by the server, which knows where the
/// policy set comes from and how it must be checked.
pub trait Reload: Send + Sync + fmt::Debug {
    /// Loads the policy set again and, when it compiles to another bundle, records the change
    /// and puts the new bundle in effect in `engine`. One reload runs at a time; this blocks
    /// (it reads files, compiles and writes the audit log).
    fn reload(&self, engine: &Engine, trigger: ReloadTrigger) -> ReloadOutcome;
}

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadTrigger {
    /// The policy sources or the bundle file changed on disk.
    Watch,
    /// SIGHUP.
    Signal,
    /// `POST /v1/admin/reload`, from this address.
    Admin { source_ip: IpAddr },
}

impl ReloadTrigger {
    /// The name in logs and in the `action` column of `policy_change` events.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReloadTrigger::Watch => "watch",
            ReloadTrigger::Signal => "sighup",
            ReloadTrigger::Admin { .. } => "admin",
        }
    }

    /// The caller's address, for a reload asked for over the network.
    pub const fn source_ip(self) -> Option<IpAddr> {
        match self {
            ReloadTrigger::Admin { source_ip } => Some(source_ip),
            ReloadTrigger::Watch | ReloadTrigger::Signal => None,
        }
    }
}

/// How a reload ended. Hashes are lowercase hex, without the `sha256:` prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new bundle is in effect; the change is recorded as `event_id`.
    Replaced {
        old_hash: String,
        new_hash: String,
        event_id: String,
    },
    /// The policy set compiled to the bundle already in effect; nothing changed.
    Unchanged { hash: String },
    /// The bundle in effect, signed again later than the bundle last admitted: decisions are
    /// unchanged, but every bundle signed before it is refused from now on, which is recorded
    /// as `event_id`.
    Resigned { hash: String, event_id: String },
    /// The policy set did not load: the running bundle stays. `diagnostics` holds the
    /// compiler's report, rendered without colour, when the sources did not compile.
    /// `event_id` is the recorded failure, unless it could not be recorded.
    Failed {
        running_hash: String,
        error: String,
        diagnostics: Option<String>,
        event_id: Option<String>,
    },
    /// The new bundle loaded, but its `policy_change` event could not be recorded, so it was
    /// not put in effect: no change without a record.
    Unrecorded { running_hash: String, error: String },
}

/// `POST /v1/admin/reload`: reloads the policy set and answers with the outcome once the
/// reload is done.
pub(super) async fn reload(
    State(engine): State<Arc<Engine>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let admin = match require_admin(&engine, peer, &headers) {
        Ok(admin) => admin,
        Err(response) => return *response,
    };
    let reloader = Arc::clone(&admin.reload);
    let trigger = ReloadTrigger::Admin {
        source_ip: peer.ip(),
    };
    let engine = Arc::clone(&engine);
    match tokio::task::spawn_blocking(move || reloader.reload(&engine, trigger)).await {
        Ok(outcome) => answer(&outcome),
        Err(join) => {
            tracing::error!(error = %join, "policy_reload_aborted");
            let message = "the reload did not finish; the running bundle stays";
            error(StatusCode::INTERNAL_SERVER_ERROR, message)
        }
    }
}

/// The admin API of `engine`, if the caller presented its token: else the answer to give,
/// 404 while the admin API is off, 401 for a missing or wrong token (logged without it).
pub(super) fn require_admin<'e>(
    engine: &'e Engine,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<&'e Admin, Box<Response>> {
    let Some(admin) = &engine.admin else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            "the admin endpoints are disabled; set `server.admin_token_file` to enable them",
        )));
    };
    if let Err(problem) = authorize(&admin.token, headers) {
        tracing::warn!(peer = %peer.ip(), problem, "admin_unauthorized");
        return Err(Box::new(unauthorized()));
    }
    Ok(admin)
}

/// Checks `authorization: Bearer TOKEN`; the error says what was wrong, for the log.
pub(super) fn authorize(token: &AdminToken, headers: &HeaderMap) -> Result<(), &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err("no authorization header");
    };
    let value = value.as_bytes();
    let Some(space) = value.iter().position(|&byte| byte == b' ') else {
        return Err("not a bearer token");
    };
    let (scheme, presented) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err("not a bearer token");
    }
    if !token.matches(presented.trim_ascii()) {
        return Err("wrong token");
    }
    Ok(())
}

pub(super) fn unauthorized() -> Response {
    let message = "a valid admin token is required, as `authorization: Bearer TOKEN`";
    let mut response = error(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"portcullis-admin\""),
    );
    response
}

fn answer(outcome: &ReloadOutcome) -> Response {
    let bundle = |hash: &str| format!("sha256:{hash}");
    let (status, body) = match outcome {
        ReloadOutcome::Replaced {
            old_hash,
            new_hash,
            event_id,
        } => {
            let body = json!({
                "outcome": "replaced",
                "old_bundle": bundle(old_hash),
                "new_bundle": bundle(new_hash),
                "event_id": event_id,
            });
            (StatusCode::OK, body)
        }
        ReloadOutcome::Unchanged { hash } | ReloadOutcome::Resigned { hash, .. } => {
            let (outcome, event_id) = match outcome {
                ReloadOutcome::Resigned { event_id, .. } => ("resigned", Some(event_id)),
                _ => ("unchanged", None),
            };
            let body = json!({
                "outcome": outcome,
                "old_bundle": bundle(hash),
                "new_bundle": bundle(hash),
                "event_id": event_id,
            });
            (StatusCode::OK, body)
        }
        ReloadOutcome::Failed {
            running_hash,
            error,
            diagnostics,
            event_id,
        } => {
            let body = json!({
                "outcome": "failed",
                "old_bundle": bundle(running_hash),
                "new_bundle": null,
                "error": error,
                "diagnostics": diagnostics,
                "event_id": event_id,
            });
            (StatusCode::UNPROCESSABLE_ENTITY, body)
        }
        ReloadOutcome::Unrecorded {
            running_hash,
            error,
        } => {
            let body = json!({
                "outcome": "unrecorded",
                "old_bundle": bundle(running_hash),
                "new_bundle": null,
                "error": error,
                "event_id": null,
            });
            (StatusCode::SERVICE_UNAVAILABLE, body)
        }
    };
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(authorization).unwrap();
        headers.insert(header::AUTHORIZATION, value);
        headers
    }

    #[test]
    fn only_the_token_as_a_bearer_token_is_authorized() {
        let token = AdminToken::new("correct-horse-battery-staple");
        assert!(token.matches(b"correct-horse-battery-staple"));
        assert!(!token.matches(b"correct-horse-battery-stapl"));
        assert!(!token.matches(b""));

        let check = |value: &str| authorize(&token, &headers(value));
        assert_eq!(check("Bearer correct-horse-battery-staple"), Ok(()));
        assert_eq!(check("bearer  correct-horse-battery-staple "), Ok(()));
        assert_eq!(check("Bearer wrong"), Err("wrong token"));
        assert_eq!(
            check("Basic correct-horse-battery-staple"),
            Err("not a bearer token")
        );
        assert_eq!(
            check("correct-horse-battery-staple"),
            Err("not a bearer token")
        );
        assert_eq!(
            authorize(&token, &HeaderMap::new()),
            Err("no authorization header")
        );
        assert_eq!(format!("{token:?}"), "AdminToken(…)");
    }
}
