//! Cancel requests through the PostgreSQL proxy.
//!
//! A PostgreSQL client cancels a running query by opening a new connection and sending a
//! CancelRequest with the process id and secret key the server gave it in BackendKeyData. The
//! client must not see the upstream's key: anyone holding it could cancel the upstream
//! session directly, bypassing the proxy, and it would tell the client which backend serves
//! it. So each session's BackendKeyData is replaced with a key the proxy makes up, and the
//! listener keeps the pairing in [`CancelKeys`] while the session lives.
//!
//! In: the upstream's messages from AuthenticationOk to its first ReadyForQuery; later, a
//! CancelRequest on a new client connection. Out: those messages as the client sees them, the
//! upstream's BackendKeyData swapped for the proxy's; and, for a CancelRequest whose key
//! matches a live session, a CancelRequest with the upstream's key sent to that session's
//! upstream. One that matches nothing is dropped without a word, as PostgreSQL does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{CANCEL_REQUEST, MAX_AUTH_MESSAGE_BYTES, PostgresProxySpec, UPSTREAM_TIMEOUT};

/// The most sessions of one listener that get a cancel key; a session beyond it gets none,
/// and its client cannot cancel through the proxy.
const MAX_CANCEL_KEYS: usize = 100_000;

/// The most bytes read from the upstream between AuthenticationOk and ReadyForQuery: a few
/// dozen ParameterStatus messages, the key, perhaps notices.
const MAX_READY_BYTES: usize = 256 * 1024;

/// The longest secret a BackendKeyData or CancelRequest carries: 4 bytes in protocol 3.0, up
/// to 256 from 3.2 on.
const MAX_SECRET_BYTES: usize = 256;

/// How many times a key already in use is drawn again before the session goes without one.
const KEY_DRAWS: usize = 8;

/// A backend's process id and secret key, as BackendKeyData gives them and CancelRequest
/// presents them. Its `Debug` leaves the secret out.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct BackendKey {
    pub(super) pid: i32,
    pub(super) secret: Vec<u8>,
}

impl std::fmt::Debug for BackendKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendKey")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl BackendKey {
    /// The key of a BackendKeyData body, or of a CancelRequest's bytes after its code: the
    /// process id, then the secret.
    pub(super) fn parse(body: &[u8]) -> Option<BackendKey> {
        let (pid, secret) = body.split_first_chunk::<4>()?;
        if !(4..=MAX_SECRET_BYTES).contains(&secret.len()) {
            return None;
        }
        Some(BackendKey {
            pid: i32::from_be_bytes(*pid),
            secret: secret.to_vec(),
        })
    }

    /// A new key from the operating system's randomness: a positive process id, as a real
    /// backend's is, and a 4-byte secret, as protocol 3.0 has it.
    fn random() -> Result<BackendKey, getrandom::Error> {
        let mut bytes = [0_u8; 8];
        getrandom::fill(&mut bytes)?;
        let [p0, p1, p2, p3, s0, s1, s2, s3] = bytes;
        let pid = i32::from_be_bytes([p0 & 0x7f, p1, p2, p3]).max(1);
        Ok(BackendKey {
            pid,
            secret: vec![s0, s1, s2, s3],
        })
    }

    /// The BackendKeyData message that hands this key to a client.
    fn message(&self) -> Vec<u8> {
        let mut body = self.pid.to_be_bytes().to_vec();
        body.extend_from_slice(&self.secret);
        super::message(b'K', &body)
    }

    /// The CancelRequest packet that presents this key to a server.
    fn cancel_request(&self) -> Vec<u8> {
        let length = u32::try_from(12 + self.secret.len()).unwrap_or(u32::MAX);
        let mut packet = length.to_be_bytes().to_vec();
        packet.extend_from_slice(&CANCEL_REQUEST.to_be_bytes());
        packet.extend_from_slice(&self.pid.to_be_bytes());
        packet.extend_from_slice(&self.secret);
        packet
    }

    /// Whether `presented` is this key's secret, in time that does not depend on where they
    /// differ. The length is no secret: the proxy's keys all have 4 bytes.
    fn secret_matches(&self, presented: &[u8]) -> bool {
        if self.secret.len() != presented.len() {
            return false;
        }
        let difference = self
            .secret
            .iter()
            .zip(presented)
            .fold(0_u8, |difference, (ours, theirs)| {
                difference | (ours ^ theirs)
            });
        std::hint::black_box(difference) == 0
    }
}

/// The cancel keys one listener has handed out, by the process id the client was given: what
/// the upstream's own key is, and where that upstream is.
///
/// A lookup by process id may take more or less time depending on whether the id is live,
/// which tells nothing PostgreSQL does not tell too (`pg_stat_activity` lists backends' ids);
/// the secret is compared in constant time.
#[derive(Default)]
pub(super) struct CancelKeys {
    sessions: Mutex<HashMap<i32, Session>>,
}

struct Session {
    /// The key the client was given.
    given: BackendKey,
    /// The key the upstream gave the proxy.
    upstream_key: BackendKey,
    /// Where the upstream is, and whether it is reached over TLS.
    upstream: Arc<PostgresProxySpec>,
}

/// A session's entry in [`CancelKeys`], removed when this is dropped: when the session ends.
pub(super) struct Registered {
    keys: Arc<CancelKeys>,
    /// The key the client is given in place of the upstream's.
    pub(super) given: BackendKey,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut sessions = self
            .keys
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        sessions.remove(&self.given.pid);
    }
}

/// Why a session has no cancel key of the proxy's.
#[derive(Debug)]
pub(super) enum NoKey {
    /// The listener has handed out [`MAX_CANCEL_KEYS`] keys that are still live.
    Full,
    /// Every key drawn was in use.
    Taken,
    /// The operating system gave no randomness.
    Random(getrandom::Error),
}

impl std::fmt::Display for NoKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoKey::Full => write!(f, "the listener has {MAX_CANCEL_KEYS} live cancel keys"),
            NoKey::Taken => write!(f, "{KEY_DRAWS} keys drawn were all in use"),
            NoKey::Random(error) => write!(f, "no randomness: {error}"),
        }
    }
}

impl CancelKeys {
    /// Makes up a key for a session whose upstream gave it `upstream_key`, unique among the
    /// listener's live sessions, and keeps the pair until the returned registration is
    /// dropped.
    pub(super) fn register(
        self: &Arc<Self>,
        upstream_key: BackendKey,
        upstream: Arc<PostgresProxySpec>,
    ) -> Result<Registered, NoKey> {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if sessions.len() >= MAX_CANCEL_KEYS {
            return Err(NoKey::Full);
        }
        for _ in 0..KEY_DRAWS {
            let given = BackendKey::random().map_err(NoKey::Random)?;
            if sessions.contains_key(&given.pid) {
                continue;
            }
            let session = Session {
                given: given.clone(),
                upstream_key: upstream_key.clone(),
                upstream: Arc::clone(&upstream),
            };
            sessions.insert(given.pid, session);
            return Ok(Registered {
                keys: Arc::clone(self),
                given,
            });
        }
        Err(NoKey::Taken)
    }

    /// The upstream key and upstream of the live session `presented` was given to.
    fn find(&self, presented: &BackendKey) -> Option<(BackendKey, Arc<PostgresProxySpec>)> {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let session = sessions.get(&presented.pid)?;
        session
            .given
            .secret_matches(&presented.secret)
            .then(|| (session.upstream_key.clone(), Arc::clone(&session.upstream)))
    }

    /// The upstream key and upstream of every live session.
    /// The upstream key and upstream of every live session.
    pub(super) fn live(&self) -> Vec<(BackendKey, Arc<PostgresProxySpec>)> {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions
            .values()
            .map(|session| (session.upstream_key.clone(), Arc::clone(&session.upstream)))
            .collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Handles a CancelRequest that arrived on the listener (`body` is what follows its code): if
/// its key is one a live session was given, sends the upstream's key to that session's
/// upstream; if not, drops it. The client is told nothing either way, as PostgreSQL tells it
/// nothing; it learns the request was handled when its connection closes.
pub(super) async fn forward(keys: &CancelKeys, body: &[u8], target: &str, peer: SocketAddr) {
    let Some(presented) = BackendKey::parse(body) else {
        tracing::info!(target, %peer, "postgres_proxy_cancel_malformed");
        return;
    };
    let Some((upstream_key, upstream)) = keys.find(&presented) else {
        tracing::info!(
            target,
            %peer,
            pid = presented.pid,
            "postgres_proxy_cancel_unmatched"
        );
        return;
    };
    let sent = tokio::time::timeout(UPSTREAM_TIMEOUT, send(&upstream, &upstream_key)).await;
    match sent {
        Ok(Ok(())) => tracing::info!(target, %peer, "postgres_proxy_cancel_forwarded"),
        Ok(Err(why)) => tracing::warn!(target, %peer, why, "postgres_proxy_cancel_failed"),
        Err(_) => tracing::warn!(
            target,
            %peer,
            why = "the upstream did not close the connection in time",
            "postgres_proxy_cancel_failed"
        ),
    }
}

/// Cancels whatever the upstreams of `live` sessions ([`CancelKeys::live`]) are running, all
/// at once, waiting at most `within` for the upstreams to take the requests: for sessions cut
/// off, whose queries would otherwise run on in the server after their clients are gone.
/// Gives how many upstreams took the request.
pub(super) async fn cancel_all(
    live: Vec<(BackendKey, Arc<PostgresProxySpec>)>,
    target: &str,
    within: Duration,
) -> usize {
    let mut sending = tokio::task::JoinSet::new();
    for (key, upstream) in live {
        sending.spawn(async move { send(&upstream, &key).await });
    }
    let mut cancelled = 0;
    let waited = tokio::time::timeout(within, async {
        while let Some(sent) = sending.join_next().await {
            match sent {
                Ok(Ok(())) => cancelled += 1,
                Ok(Err(why)) => tracing::warn!(target, why, "postgres_proxy_cancel_failed"),
                Err(error) => tracing::warn!(target, %error, "postgres_proxy_cancel_failed"),
            }
        }
    })
    .await;
    if waited.is_err() {
        tracing::warn!(
            target,
            why = "the upstream did not take the cancel request in time",
            "postgres_proxy_cancel_failed"
        );
    }
    cancelled
}

/// Sends `key` to `upstream` as a CancelRequest on a connection of its own (over TLS when the
/// listener reaches its upstream over TLS), then waits for the server to close it, which it
/// does once it has acted on the request.
async fn send(upstream: &PostgresProxySpec, key: &BackendKey) -> Result<(), String> {
    let mut stream = super::open_upstream(upstream).await?;
    stream
        .write_all(&key.cancel_request())
        .await
        .map_err(|error| format!("sending the cancel request: {error}"))?;
    stream
        .flush()
        .await
        .map_err(|error| format!("sending the cancel request: {error}"))?;
    // The server answers nothing; whatever it might send is read and dropped until it closes.
    let mut sink = [0_u8; 64];
    loop {
        match stream.read(&mut sink).await {
            Ok(0) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
    }
}

/// The upstream's messages after AuthenticationOk: up to and including its first
/// ReadyForQuery, or an ErrorResponse, after which the server closes the session.
pub(super) struct Replies {
    messages: Vec<(u8, Vec<u8>)>,
}

impl Replies {
    /// Reads them from `upstream`, at most [`MAX_READY_BYTES`] in all.
    pub(super) async fn read<S: AsyncRead + Unpin + ?Sized>(
        upstream: &mut S,
    ) -> Result<Replies, String> {
        let mut messages = Vec::new();
        let mut total = 0_usize;
        loop {
            let (kind, body) = super::read_message(upstream, MAX_AUTH_MESSAGE_BYTES).await?;
            total = total.saturating_add(body.len() + 5);
            if total > MAX_READY_BYTES {
                return Err(format!(
                    "the upstream sent over {MAX_READY_BYTES} bytes before it was ready"
                ));
            }
            let last = matches!(kind, b'Z' | b'E');
            messages.push((kind, body));
            if last {
                return Ok(Replies { messages });
            }
        }
    }

    /// The upstream's BackendKeyData, if it sent one.
    pub(super) fn backend_key(&self) -> Result<Option<BackendKey>, String> {
        let mut keys = self.messages.iter().filter(|(kind, _)| *kind == b'K');
        let Some((_, body)) = keys.next() else {
            return Ok(None);
        };
        if keys.next().is_some() {
            return Err("the upstream sent BackendKeyData twice".to_owned());
        }
        BackendKey::parse(body)
            .map(Some)
            .ok_or_else(|| format!("a BackendKeyData of {} bytes", body.len()))
    }

    /// The upstream's ErrorResponse, if it refused the session instead of becoming ready.
    pub(super) fn refusal(&self) -> Option<&[u8]> {
        self.messages
            .last()
            .filter(|(kind, _)| *kind == b'E')
            .map(|(_, body)| body.as_slice())
    }

    /// The messages as the client is to see them: the same, in the same order, but with
    /// BackendKeyData carrying `given` instead of the upstream's key, or left out when the
    /// session has no key of the proxy's (its client then cannot cancel).
    pub(super) fn for_client(&self, given: Option<&BackendKey>) -> Vec<u8> {
        let mut out = Vec::new();
        for (kind, body) in &self.messages {
            match (kind, given) {
                (b'K', Some(given)) => out.extend_from_slice(&given.message()),
                (b'K', None) => {}
                _ => out.extend_from_slice(&super::message(*kind, body)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::proxy_pg::message;

    fn spec() -> Arc<PostgresProxySpec> {
        Arc::new(PostgresProxySpec {
            target: "orders_db".to_owned(),
            upstream_host: "127.0.0.1".to_owned(),
            upstream_port: 5432,
            upstream_tls: None,
            client_tls: None,
            credential_reuse_s: 0,
        })
    }

    fn key(pid: i32, secret: [u8; 4]) -> BackendKey {
        BackendKey {
            pid,
            secret: secret.to_vec(),
        }
    }

    /// What an upstream says after AuthenticationOk: parameters, its key, a notice, ready.
    fn upstream_stream(upstream_key: &BackendKey) -> Vec<u8> {
        let mut stream = message(b'S', b"server_version\x0017.2\0");
        stream.extend(message(b'S', b"client_encoding\0UTF8\0"));
        stream.extend(upstream_key.message());
        stream.extend(message(b'N', b"SNOTICE\0Mhello\0\0"));
        stream.extend(message(b'Z', b"I"));
        stream
    }

    async fn read_replies(mut stream: &[u8]) -> Result<Replies, String> {
        Replies::read(&mut stream).await
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn the_client_sees_the_proxys_key_and_every_other_message_unchanged() {
        let upstream_key = key(4242, [1, 2, 3, 4]);
        let stream = upstream_stream(&upstream_key);
        let replies = block_on(read_replies(&stream)).unwrap();
        assert_eq!(replies.backend_key().unwrap(), Some(upstream_key.clone()));
        assert!(replies.refusal().is_none());

        let given = key(777, [9, 8, 7, 6]);
        let seen = replies.for_client(Some(&given));
        let expected: Vec<u8> = [
            message(b'S', b"server_version\x0017.2\0"),
            message(b'S', b"client_encoding\0UTF8\0"),
            message(b'K', &[0, 0, 3, 9, 9, 8, 7, 6]),
            message(b'N', b"SNOTICE\0Mhello\0\0"),
            message(b'Z', b"I"),
        ]
        .concat();
        assert_eq!(seen, expected);
        let real = upstream_key.message();
        assert!(!seen.windows(real.len()).any(|window| window == real));

        // Without a key of the proxy's, the client gets none at all.
        let without: Vec<u8> = [
            message(b'S', b"server_version\x0017.2\0"),
            message(b'S', b"client_encoding\0UTF8\0"),
            message(b'N', b"SNOTICE\0Mhello\0\0"),
            message(b'Z', b"I"),
        ]
        .concat();
        assert_eq!(replies.for_client(None), without);
    }

    #[test]
    fn reading_stops_at_ready_or_at_an_error_and_refuses_what_is_not_protocol() {
        let mut stream = upstream_stream(&key(1, [0; 4]));
        stream.extend(message(b'T', b"after ready, not read"));
        let replies = block_on(read_replies(&stream)).unwrap();
        assert_eq!(replies.messages.len(), 5);

        let refused = [message(b'S', b"a\0b\0"), message(b'E', b"SFATAL\0\0")].concat();
        let replies = block_on(read_replies(&refused)).unwrap();
        assert_eq!(replies.refusal(), Some(&b"SFATAL\0\0"[..]));

        // Cut short, too long, or a key of the wrong size.
        assert!(block_on(read_replies(&stream[..20])).is_err());
        let mut huge = Vec::new();
        for _ in 0..100 {
            huge.extend(message(b'N', &[b'x'; 4000]));
        }
        huge.extend(message(b'Z', b"I"));
        assert!(block_on(read_replies(&huge)).is_err());
        let short_key = [message(b'K', &[0, 0, 0, 1]), message(b'Z', b"I")].concat();
        let replies = block_on(read_replies(&short_key)).unwrap();
        assert!(replies.backend_key().is_err());
        let twice = [
            key(1, [0; 4]).message(),
            key(2, [0; 4]).message(),
            message(b'Z', b"I"),
        ]
        .concat();
        assert!(
            block_on(read_replies(&twice))
                .unwrap()
                .backend_key()
                .is_err()
        );
    }

    #[test]
    fn a_cancel_key_matches_its_session_only_and_goes_when_the_session_ends() {
        let keys = Arc::new(CancelKeys::default());
        let upstream_key = key(4242, [1, 2, 3, 4]);
        let first = keys.register(upstream_key.clone(), spec()).unwrap();
        let second = keys.register(key(4343, [5, 6, 7, 8]), spec()).unwrap();
        assert_ne!(first.given.pid, second.given.pid);
        assert!(first.given.pid > 0);
        assert_ne!(first.given, upstream_key);

        let (found, upstream) = keys.find(&first.given).unwrap();
        assert_eq!(found, upstream_key);
        assert_eq!(upstream.upstream_port, 5432);
        let mut wrong = first.given.clone();
        wrong.secret[0] ^= 1;
        assert!(keys.find(&wrong).is_none());
        let longer = BackendKey {
            pid: first.given.pid,
            secret: [first.given.secret.clone(), vec![0]].concat(),
        };
        assert!(keys.find(&longer).is_none());
        // The upstream's own key is not a key the proxy takes.
        assert!(keys.find(&upstream_key).is_none());

        let given = first.given.clone();
        drop(first);
        assert!(keys.find(&given).is_none());
        assert_eq!(keys.len(), 1);
        drop(second);
        assert_eq!(keys.len(), 0);
    }

    #[test]
    fn a_cancel_request_carries_its_key_after_its_code() {
        let packet = key(4242, [1, 2, 3, 4]).cancel_request();
        assert_eq!(packet.len(), 16);
        assert_eq!(packet[..4], 16_u32.to_be_bytes());
        assert_eq!(packet[4..8], CANCEL_REQUEST.to_be_bytes());
        assert_eq!(
            BackendKey::parse(&packet[8..]),
            Some(key(4242, [1, 2, 3, 4]))
        );
        assert_eq!(BackendKey::parse(&[0, 0, 0, 1, 2]), None);
        assert_eq!(BackendKey::parse(&[0; 4 + 257]), None);
        assert_eq!(format!("{:?}", key(1, [7; 4])), "BackendKey { pid: 1, .. }");
    }
}
