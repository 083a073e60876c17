//! A plain HTTP/1.1 server on loopback, or HTTPS with the test CA's certificate, for tests that
//! need the other side of a request: an OIDC issuer, GitHub Actions' ID-token endpoint, an
//! OAuth token endpoint. Each request is read whole (request line, headers, a `content-length`
//! body), handed to the test's handler, and answered with the JSON it returns; then the
//! connection closes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use serde_json::Value;

/// One request as the stub read it.
pub struct StubRequest {
    /// `GET /path?query HTTP/1.1`, trimmed.
    pub line: String,
    /// Header names in lower case, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl StubRequest {
    pub fn path(&self) -> &str {
        self.line.split_whitespace().nth(1).unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Starts the stub; returns its base URL (`http://127.0.0.1:PORT`). `handler` answers each
/// request with a status and a JSON body.
pub fn serve(handler: impl Fn(&StubRequest) -> (u16, Value) + Send + 'static) -> String {
    serve_on(None, handler)
}

/// [`serve`] over TLS: `https://127.0.0.1:PORT`, with the certificate for `127.0.0.1` that
/// `tests/fixtures/tls/ca.pem` signed.
pub fn serve_tls(handler: impl Fn(&StubRequest) -> (u16, Value) + Send + 'static) -> String {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = super::repo().join("tests/fixtures/tls");
    let chain = CertificateDer::pem_file_iter(dir.join("localhost.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("localhost.key.pem")).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    serve_on(Some(Arc::new(config)), handler)
}

fn serve_on(
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: impl Fn(&StubRequest) -> (u16, Value) + Send + 'static,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            match &tls {
                None => answer(stream, &handler),
                Some(config) => {
                    let Ok(session) = rustls::ServerConnection::new(Arc::clone(config)) else {
                        continue;
                    };
                    let mut stream = rustls::StreamOwned::new(session, stream);
                    answer(&mut stream, &handler);
                    stream.conn.send_close_notify();
                    let _ = stream.flush();
                }
            }
        }
    });
    url
}

/// Reads one request and writes the handler's answer; a client that gives up (a TLS handshake
/// it refused, say) is let go.
fn answer(mut stream: impl Read + Write, handler: &impl Fn(&StubRequest) -> (u16, Value)) {
    let Some(request) = read_request(&mut stream) else {
        return;
    };
    let (status, body) = handler(&request);
    let body = body.to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        if status == 200 { "OK" } else { "Not OK" },
        body.len()
    );
    let _ = stream.flush();
}

fn read_request(stream: &mut impl Read) -> Option<StubRequest> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = Vec::new();
    let mut header = String::new();
    while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
        if let Some((name, value)) = header.trim().split_once(':') {
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
        header.clear();
    }
    let length = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0usize);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(StubRequest {
        line: line.trim().to_owned(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
