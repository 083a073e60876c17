//! Who may open a page. On loopback the dashboard is open, as the rest of the server's
//! loopback API is; bound elsewhere, every request needs the admin token or the audit
//! reader's token (both only read here).
//!
//! A browser sends the token as the password of HTTP Basic authentication (any user name),
//! which it asks for itself after a `401` with `WWW-Authenticate: Basic`, so no JavaScript
//! is needed; a program sends `Authorization: Bearer TOKEN`. Tokens are kept as SHA-256
//! digests and compared in time that does not depend on where they differ.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::{Dashboard, PageError};

/// A token that opens the dashboard, kept only as its digest.
pub struct AccessToken {
    digest: [u8; 32],
}

impl AccessToken {
    pub fn new(token: &str) -> AccessToken {
        AccessToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// Whether `presented` is this token; the time taken does not depend on where they differ.
    fn matches(&self, presented: &[u8]) -> bool {
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

/// Never the digest: it would let a reader of the logs test guesses offline.
impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(…)")
    }
}

/// The longest `Authorization` header read: a token is at most 4 KiB, and Base64 adds a third.
const MAX_AUTHORIZATION_BYTES: usize = 8 * 1024;

/// Lets a request through when no token is configured or it carries one of them.
pub(crate) async fn require_token(
    State(dashboard): State<Arc<Dashboard>>,
    request: Request,
    next: Next,
) -> Response {
    if dashboard.tokens.is_empty() {
        if !loopback_host(request.headers(), request.uri()) {
            tracing::info!(path = %request.uri().path(), "dashboard_refused_foreign_host");
            return PageError::ForeignHost.into_response();
        }
        return next.run(request).await;
    }
    let admitted = presented_token(request.headers()).is_some_and(|presented| {
        // Every token is compared, whichever matches, so the time says nothing of which.
        dashboard
            .tokens
            .iter()
            .fold(false, |any, token| token.matches(&presented) | any)
    });
    if admitted {
        return next.run(request).await;
    }
    if presented_token(request.headers()).is_some() {
        tracing::info!(path = %request.uri().path(), "dashboard_refused_wrong_token");
    } else {
        tracing::info!(path = %request.uri().path(), "dashboard_refused_without_token");
    }
    PageError::Unauthorized.into_response()
}

/// Whether the request names a loopback host (`localhost`, `127.0.0.1`, `[::1]`, with any
/// port), or none. An open dashboard answers only those: a web page elsewhere that points its
/// own name at 127.0.0.1 (DNS rebinding) would otherwise read the access log through the
/// browser of anyone who runs a server on their machine.
fn loopback_host(headers: &HeaderMap, uri: &Uri) -> bool {
    // A request line with an absolute URI names its host there, and that one counts too.
    if let Some(authority) = uri.authority()
        && !loopback_name(authority.as_str())
    {
        return false;
    }
    let Some(host) = headers.get(header::HOST) else {
        return true;
    };
    host.to_str().is_ok_and(loopback_name)
}

/// Whether `host` (`name` or `name:port`, an IPv6 address in brackets) is a loopback name.
/// Nothing but a port may follow the name: `localhost:1@elsewhere` is no loopback name.
fn loopback_name(host: &str) -> bool {
    let (name, port) = if let Some(bracketed) = host.strip_prefix('[') {
        let Some((name, rest)) = bracketed.split_once(']') else {
            return false;
        };
        if rest.is_empty() {
            (name, None)
        } else {
            let Some(port) = rest.strip_prefix(':') else {
                return false;
            };
            (name, Some(port))
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    if port.is_some_and(|port| port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The token a request presents: the password of Basic authentication, or a bearer token.
fn presented_token(headers: &HeaderMap) -> Option<Vec<u8>> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    if value.len() > MAX_AUTHORIZATION_BYTES {
        return None;
    }
    let space = value.iter().position(|&byte| byte == b' ')?;
    let (scheme, rest) = value.split_at(space);
    let rest = rest.trim_ascii();
    if scheme.eq_ignore_ascii_case(b"bearer") {
        return Some(rest.to_vec());
    }
    if scheme.eq_ignore_ascii_case(b"basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let colon = decoded.iter().position(|&byte| byte == b':')?;
        return decoded.get(colon + 1..).map(<[u8]>::to_vec);
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use axum::http::HeaderValue;

    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn basic_gives_its_password_and_bearer_its_token() {
        let basic = base64::engine::general_purpose::STANDARD.encode("anyone:s3cret:with:colons");
        assert_eq!(
            presented_token(&with(&format!("Basic {basic}"))).unwrap(),
            b"s3cret:with:colons"
        );
        assert_eq!(presented_token(&with("bearer  tok")).unwrap(), b"tok");
        assert!(presented_token(&with("Digest x")).is_none());
        assert!(presented_token(&with("Basic not-base64!")).is_none());
        assert!(presented_token(&HeaderMap::new()).is_none());
    }

    #[test]
    fn only_loopback_names_reach_an_open_dashboard() {
        let host = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_str(value).unwrap());
            loopback_host(&headers, &Uri::from_static("/"))
        };
        for ok in [
            "127.0.0.1:8182",
            "localhost",
            "LOCALHOST:1",
            "[::1]:8182",
            "127.9.9.9",
        ] {
            assert!(host(ok), "{ok}");
        }
        for refused in [
            "attacker.example:8182",
            "10.0.0.1",
            "[2001:db8::1]:80",
            "localhost.evil",
            "localhost:8182@attacker.example",
            "127.0.0.1:",
            "[::1]x",
            "[::1",
        ] {
            assert!(!host(refused), "{refused}");
        }
        let root = Uri::from_static("/");
        assert!(loopback_host(&HeaderMap::new(), &root));
        // A request line's absolute URI names the host too.
        let absolute = Uri::from_static("http://attacker.example/");
        assert!(!loopback_host(&HeaderMap::new(), &absolute));
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1"));
        assert!(!loopback_host(&headers, &absolute));
        assert!(loopback_host(
            &headers,
            &Uri::from_static("http://127.0.0.1:8182/")
        ));
    }

    #[test]
    fn tokens_match_only_themselves() {
        let token = AccessToken::new("0123456789abcdef");
        assert!(token.matches(b"0123456789abcdef"));
        assert!(!token.matches(b"0123456789abcdeF"));
        assert!(!token.matches(b""));
        assert_eq!(format!("{token:?}"), "AccessToken(…)");
    }
}
