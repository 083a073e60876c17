//! The HTTP client side, shared by everything the server and the CLI fetch: JWKS and discovery
//! documents, OAuth tokens, and `portcullis credential`'s exchanges. One rule for where a
//! request may go, one timeout, no redirects, and a size limit on every answer.

use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use portcullis_lang::net::is_loopback_authority;

/// How long one exchange (connect, send, read) may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a URL is not one requests may go to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{url}` is not a URL requests may go to: {why}")]
pub struct BadUrl {
    pub url: String,
    pub why: String,
}

/// Checks that `url` is `https`, or plain `http` to a loopback address (a service on the
/// same host): secrets and evidence travel to it.
pub fn check_url(url: &str) -> Result<(), BadUrl> {
    let bad = |why: &str| BadUrl {
        url: without_user_information(url).chars().take(256).collect(),
        why: why.to_owned(),
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("it has no scheme"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(bad(
            "it carries user information; credentials never travel in a URL",
        ));
    }
    if authority.is_empty() {
        return Err(bad("it has no host"));
    }
    match scheme {
        "https" => Ok(()),
        "http" if is_loopback_authority(authority) => Ok(()),
        "http" => Err(bad(
            "plain `http` is accepted only from a loopback address; use `https`",
        )),
        _ => Err(bad("only `https` (or `http` on loopback) is accepted")),
    }
}

/// `url` with any user information before its host replaced by `…`, so that a password
/// written into a URL is not repeated in an error.
fn without_user_information(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest.get(..end).and_then(|authority| authority.rfind('@')) {
        Some(at) => format!("{scheme}://…@{}", rest.get(at + 1..).unwrap_or_default()),
        None => url.to_owned(),
    }
}

/// An agent with [`TIMEOUT`], no redirects, and statuses handed back rather than turned into
/// errors; `https` verified against the Mozilla roots.
pub fn agent(timeout: Duration) -> ureq::Agent {
    agent_trusting(timeout, &TrustRoots::default())
}

/// [`agent`], with `https` verified against `roots`.
pub fn agent_trusting(timeout: Duration, roots: &TrustRoots) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0);
    if let Some(certificates) = &roots.0 {
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(Arc::clone(certificates)))
            .build();
        config = config.tls_config(tls);
    }
    config.build().into()
}

/// The largest CA bundle read.
const MAX_CA_BUNDLE_BYTES: u64 = 1024 * 1024;

/// The certificate authorities an `https` peer's certificate must chain to: the Mozilla roots
/// (the default), or the certificates of a PEM bundle in their place, for an issuer or a token
/// endpoint under a private CA (a cluster's, a company's).
#[derive(Clone, Default)]
pub struct TrustRoots(Option<Arc<Vec<ureq::tls::Certificate<'static>>>>);

impl std::fmt::Debug for TrustRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("TrustRoots(mozilla)"),
            Some(certificates) => write!(f, "TrustRoots({} certificates)", certificates.len()),
        }
    }
}

impl TrustRoots {
    /// The certificates of the PEM file at `path`; anything else in it (a key) is refused.
    pub fn from_pem_file(path: &Path) -> Result<TrustRoots, String> {
        let mut text = Vec::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_CA_BUNDLE_BYTES + 1).read_to_end(&mut text))
            .map_err(|error| format!("cannot read the CA bundle `{}`: {error}", path.display()))?;
        if text.len() as u64 > MAX_CA_BUNDLE_BYTES {
            return Err(format!(
                "the CA bundle `{}` is larger than {MAX_CA_BUNDLE_BYTES} bytes",
                path.display()
            ));
        }
        TrustRoots::from_pem(&text)
            .map_err(|why| format!("the CA bundle `{}`: {why}", path.display()))
    }

    /// The configured certificates; `None` for the Mozilla roots.
    pub fn certificates(&self) -> Option<&[ureq::tls::Certificate<'static>]> {
        self.0.as_deref().map(Vec::as_slice)
    }

    /// The certificates of a PEM text.
    pub fn from_pem(pem: &[u8]) -> Result<TrustRoots, String> {
        let mut certificates = Vec::new();
        for item in ureq::tls::parse_pem(pem) {
            match item.map_err(|error| format!("it is not valid PEM: {error}"))? {
                ureq::tls::PemItem::Certificate(certificate) => certificates.push(certificate),
                _ => return Err("it holds something other than certificates (a key?)".to_owned()),
            }
        }
        if certificates.is_empty() {
            return Err("it holds no certificate".to_owned());
        }
        Ok(TrustRoots(Some(Arc::new(certificates))))
    }
}

/// Reads a whole answer as text, refusing one over `limit` bytes.
pub fn read_limited(body: &mut ureq::Body, limit: u64) -> Result<String, String> {
    let mut text = String::new();
    body.as_reader()
        .take(limit + 1)
        .read_to_string(&mut text)
        .map_err(|err| format!("reading the answer: {err}"))?;
    if text.len() as u64 > limit {
        return Err(format!("the answer is larger than {limit} bytes"));
    }
    Ok(text)
}

/// Percent-encodes all but the unreserved characters (RFC 3986), for a query or a form.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_go_over_https_or_to_loopback_only() {
        for ok in [
            "https://token.actions.githubusercontent.com/.well-known/jwks",
            "http://127.0.0.1:8080/jwks",
            "http://[::1]:9/jwks",
            "http://localhost/jwks",
        ] {
            assert_eq!(check_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://example.com/jwks",
            "http://127.0.0.1.example.com/jwks",
            "ftp://127.0.0.1/jwks",
            "https://user@host/jwks",
            "jwks.json",
            "https:///jwks",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        let error = check_url("http://user:pw@127.0.0.1:9/jwks").unwrap_err();
        assert!(!error.to_string().contains("pw"), "{error}");
        assert!(error.to_string().contains("user information"), "{error}");
    }

    #[test]
    fn values_are_percent_encoded() {
        assert_eq!(percent_encode("portcullis"), "portcullis");
        assert_eq!(
            percent_encode("https://p.acme/x y&z"),
            "https%3A%2F%2Fp.acme%2Fx%20y%26z"
        );
    }
}
