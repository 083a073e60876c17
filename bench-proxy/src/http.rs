//! The HTTP side of the benchmark: the upstream, a bare relay to compare the proxy with, and
//! the load generator.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Result;
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// An HTTP/1.1 server on loopback answering every request with 200 and a short body.
pub async fn start_upstream() -> Result<SocketAddr> {
    serve(|_request: Request<Incoming>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
            b"{\"invoices\":[1,2]}",
        ))))
    })
    .await
}

/// A relay with nothing in it but the second hop: each request is sent on to `upstream` over
/// pooled keep-alive connections, as the proxy sends it, and the answer relayed. What it costs
/// is what any HTTP proxy costs on this machine, before deciding or recording anything.
pub async fn start_relay(upstream: SocketAddr) -> Result<SocketAddr> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(connector);
    serve(move |request: Request<Incoming>| {
        let client = client.clone();
        async move {
            let (mut parts, body) = request.into_parts();
            let path = parts
                .uri
                .path_and_query()
                .map_or("/", hyper::http::uri::PathAndQuery::as_str);
            let Ok(uri) = format!("http://{upstream}{path}").parse() else {
                return Ok::<_, Infallible>(status(StatusCode::BAD_REQUEST).map(Either::Right));
            };
            parts.uri = uri;
            Ok(
                match client.request(Request::from_parts(parts, body)).await {
                    Ok(response) => response.map(Either::Left),
                    Err(_) => status(StatusCode::BAD_GATEWAY).map(Either::Right),
                },
            )
        }
    })
    .await
}

/// A byte relay: each connection is copied both ways to `upstream` and nothing else, what a
/// proxy of any wire protocol costs before it reads a message.
pub async fn start_tcp_relay(upstream: SocketAddr) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    Ok(addr)
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}

/// Serves `service` on a loopback port of its own.
async fn serve<S, F, B>(service: S) -> Result<SocketAddr>
where
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let service = service.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(service))
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Latencies in microseconds, and failed requests.
#[derive(Default)]
pub struct Stats {
    latencies_us: Vec<u32>,
    pub errors: usize,
}

impl Stats {
    #[expect(clippy::cast_precision_loss, reason = "a count of requests as a rate")]
    pub fn per_second(&self, duration: Duration) -> f64 {
        self.latencies_us.len() as f64 / duration.as_secs_f64()
    }

    pub fn percentile(&self, p: usize) -> u32 {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let idx = (sorted.len() * p / 100).min(sorted.len().saturating_sub(1));
        sorted.get(idx).copied().unwrap_or(0)
    }
}

/// Keeps `connections` keep-alive connections to `addr` busy with GET requests for `duration`.
pub async fn load(
    addr: SocketAddr,
    evidence: Option<&str>,
    connections: usize,
    duration: Duration,
) -> Result<Stats> {
    let deadline = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let evidence = evidence.map(str::to_owned);
        tasks.spawn(async move { one_connection(addr, evidence, deadline).await });
    }
    let mut stats = Stats::default();
    while let Some(done) = tasks.join_next().await {
        let done = done??;
        stats.latencies_us.extend(done.latencies_us);
        stats.errors += done.errors;
    }
    Ok(stats)
}

async fn one_connection(
    addr: SocketAddr,
    evidence: Option<String>,
    deadline: Instant,
) -> Result<Stats> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut stats = Stats::default();
    while Instant::now() < deadline {
        let mut request = Request::get("/v1/invoices").header("host", "bench.internal");
        if let Some(evidence) = &evidence {
            request = request.header("x-portcullis-evidence", evidence);
        }
        let request = request.body(Empty::<Bytes>::new())?;
        let started = Instant::now();
        let response = sender.send_request(request).await?;
        let ok = response.status().is_success();
        response.into_body().collect().await?;
        let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        if ok {
            stats.latencies_us.push(micros);
        } else {
            stats.errors += 1;
        }
    }
    Ok(stats)
}
