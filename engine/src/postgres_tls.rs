//! TLS for the server's own connections to PostgreSQL (the administrative connection of
//! `postgres_role` credentials), with rustls: the server's certificate is verified against the
//! configured CAs and must name the host connected to.
//!
//! In: the roots to trust. Out: a `postgres::tls::MakeTlsConnect` for `postgres::Config`.
//! Channel binding is not offered, so a server that asks for SCRAM-SHA-256 gets it without
//! `-PLUS`; the certificate check is what binds the session to the server.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http::TrustRoots;

/// Makes a verified TLS session for each connection `postgres::Config::connect` opens.
#[derive(Clone)]
pub struct MakeRustls {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for MakeRustls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MakeRustls")
    }
}

impl MakeRustls {
    /// Certificates must chain to `roots`: the Mozilla roots, or a configured CA bundle.
    pub fn new(roots: &TrustRoots) -> Result<MakeRustls, String> {
        Ok(MakeRustls {
            config: Arc::new(client_config(roots)?),
        })
    }
}

/// A rustls client configuration that trusts `roots`: the Mozilla roots, or a configured CA
/// bundle alone.
pub fn client_config(roots: &TrustRoots) -> Result<rustls::ClientConfig, String> {
    let mut store = rustls::RootCertStore::empty();
    match roots.certificates() {
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(certificates) => {
            for certificate in certificates {
                store
                    .add(CertificateDer::from(certificate.der().to_vec()))
                    .map_err(|error| format!("a CA certificate is not usable: {error}"))?;
            }
        }
    }
    let provider = crypto_provider();
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("no TLS version to offer: {error}"))?
        .with_root_certificates(store)
        .with_no_client_auth())
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, Self::Error> {
        Ok(RustlsConnect {
            config: Arc::clone(&self.config),
            name: ServerName::try_from(domain.to_owned())?,
        })
    }
}

/// One connection's TLS handshake, to the host it was made for.
pub struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move {
            let session = connector.connect(self.name, stream).await?;
            Ok(RustlsStream(session))
        })
    }
}

/// A verified TLS session over the connection's socket.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A rustls server configuration from a PEM certificate chain and its PEM private key: for
/// listeners that offer TLS to their clients.
pub fn server_config(
    chain: &std::path::Path,
    key: &std::path::Path,
) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject as _;
    let certificates = CertificateDer::pem_file_iter(chain)
        .and_then(|items| items.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("the certificate file `{}`: {error}", chain.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "the certificate file `{}` holds no certificate",
            chain.display()
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|error| format!("the key file `{}`: {error}", key.display()))?;
    let provider = crypto_provider();
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("no TLS version to offer: {error}"))?
        .with_no_client_auth()
        .with_single_cert(certificates, private)
        .map_err(|error| format!("the certificate and key do not go together: {error}"))
}

/// The cryptography of every TLS session here: ring's.
fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[expect(
        deprecated,
        reason = "ring is the one provider the workspace builds (ureq's too); it has no \
                  post-quantum key exchange"
    )]
    Arc::new(rustls::crypto::ring::default_provider())
}
