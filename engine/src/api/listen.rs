//! Serving a router on a listener, the one way every HTTP listener of the server is served:
//! the API on TCP and on its Unix socket, and the HTTP proxies on either.
//!
//! Each connection is HTTP/1.1 by hyper, with the peer (its address, or its process) in the
//! request's extensions as axum's `ConnectInfo`, and a deadline on every request head: a
//! client gets `header_read_timeout` to send one, counted from when the connection is ready
//! for it — accepted, or idle after an answer — so that a slow or silent client cannot hold a
//! connection (and its task) for ever. At shutdown the listener closes, every connection is
//! asked to end after the request it is on, and the call returns when all have.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

/// What `header_read_timeout` is unless configured: a client that says nothing for this long
/// is disconnected.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A listener: the connections it accepts, and what a handler learns of each one's peer.
pub trait Accept: Send {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    type Peer: Clone + Send + Sync + 'static;

    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, Self::Peer)>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    type Peer = SocketAddr;

    async fn accept(&mut self) -> io::Result<(Self::Io, SocketAddr)> {
        let (stream, peer) = tokio::net::TcpListener::accept(self).await?;
        // A request and its answer are one write each; Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        Ok((stream, peer))
    }
}

/// The peer of a Unix-socket connection is its process, pinned as it is accepted.
#[cfg(unix)]
impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    type Peer = super::LocalPeer;

    async fn accept(&mut self) -> io::Result<(Self::Io, super::LocalPeer)> {
        let (stream, _) = tokio::net::UnixListener::accept(self).await?;
        let peer = stream
            .peer_cred()
            .map(|cred| {
                crate::local::PeerProcess::of_connection(
                    &stream,
                    cred.pid(),
                    cred.uid(),
                    cred.gid(),
                )
            })
            .map_err(|error| error.to_string());
        Ok((stream, super::LocalPeer(peer)))
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets the connections finish
/// the requests they are on.
pub async fn serve<L: Accept>(
    mut listener: L,
    router: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (closing, closed) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((io, peer)) => {
                    let connection =
                        connection(io, peer, router.clone(), header_read_timeout, closed.clone());
                    connections.spawn(connection);
                }
                // Out of file descriptors, or a connection reset before it was taken: the
                // listener is fine, and a pause keeps a persistent cause from spinning.
                Err(error) => {
                    tracing::warn!(%error, "accept_failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    closing.send_replace(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

async fn connection<I, P>(
    io: I,
    peer: P,
    router: Router,
    header_read_timeout: Duration,
    mut closing: tokio::sync::watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    P: Clone + Send + Sync + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer.clone()));
        let mut router = router.clone();
        async move {
            <Router as tower_service::Service<_>>::call(&mut router, request.map(Body::new)).await
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = closing.wait_for(|closing| *closing) => connection.as_mut().graceful_shutdown(),
    }
    let _ = connection.await;
}
