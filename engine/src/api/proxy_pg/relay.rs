//! The relay of a ready session: bytes both ways, passed on unchanged, while the proxy follows
//! where each direction's messages begin and end, so that a session the server has to cut off
//! ends the way PostgreSQL itself ends one at shutdown.
//!
//! In: the client and upstream streams of a session that is ready for queries (both at a
//! message boundary, since the handshake read whole messages), and the listener's
//! [`CutOffs`], through which it cuts its sessions off. Out: the bytes relayed each way, and
//! whether the session was cut off. When cut off, the client gets what the upstream sent up to
//! the end of the message under way, then an `ErrorResponse` of severity FATAL with SQLSTATE
//! 57P01 (`admin_shutdown`, which drivers and pools read as "connect again"), and the upstream
//! gets a `Terminate` when the client was between messages, so that its backend ends cleanly.
//! A direction that never reaches a message boundary (a client that stops reading a large
//! result) is left for the listener to drop.

use std::collections::HashMap;
use std::io;
use std::sync::{Mutex, PoisonError};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use super::Stream;

/// A listener's hold on the relays of its sessions: each relay is registered while it runs,
/// with a signal of its own for each direction, so that a relay waiting to read costs no
/// shared lock (a signal all sessions shared would be polled under one lock on every read).
#[derive(Debug, Default)]
pub(super) struct CutOffs {
    state: Mutex<CutOffState>,
}

#[derive(Debug, Default)]
struct CutOffState {
    next_id: u64,
    relays: HashMap<u64, [oneshot::Sender<()>; 2]>,
    /// Set once the listener cuts its sessions off: a relay registered later is cut off at once.
    cutting: bool,
}

impl CutOffs {
    /// Tells every relay, and every relay registered from now on, to end.
    pub(super) fn cut_off_all(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.cutting = true;
        for (_, senders) in state.relays.drain() {
            for sender in senders {
                let _ = sender.send(());
            }
        }
    }

    fn register(&self) -> (Registered<'_>, [oneshot::Receiver<()>; 2]) {
        let (up_tx, up_rx) = oneshot::channel();
        let (down_tx, down_rx) = oneshot::channel();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let id = state.next_id;
        state.next_id += 1;
        if state.cutting {
            let _ = up_tx.send(());
            let _ = down_tx.send(());
        } else {
            state.relays.insert(id, [up_tx, down_tx]);
        }
        (Registered { cut_offs: self, id }, [up_rx, down_rx])
    }
}

/// A relay's registration, removed when the relay ends.
struct Registered<'a> {
    cut_offs: &'a CutOffs,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut state = self
            .cut_offs
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.relays.remove(&self.id);
    }
}

/// Bytes read from one side before they are written to the other.
const CHUNK_BYTES: usize = 16 * 1024;

/// What a relayed session came to.
#[derive(Debug)]
pub(super) struct Relayed {
    /// Bytes passed from the client to the upstream.
    pub from_client: u64,
    /// Bytes written to the client: the upstream's, and the proxy's farewell when cut off.
    pub to_client: u64,
    pub cut_off: bool,
}

/// Relays `client` and `upstream` until both sides have closed, either side fails, or
/// `cut_offs` cuts the session off and it has been ended as the module says.
pub(super) async fn relay(
    client: Box<dyn Stream>,
    upstream: Box<dyn Stream>,
    cut_offs: &CutOffs,
) -> Relayed {
    let (_registered, [up_signal, down_signal]) = cut_offs.register();
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let mut from_client = 0_u64;
    let mut to_client = 0_u64;
    let (mut up_done, mut down_done) = (false, false);
    let mut cut = false;
    {
        let up = pump(
            client_read,
            upstream_write,
            Farewell::Terminate,
            up_signal,
            &mut from_client,
        );
        let down = pump(
            upstream_read,
            client_write,
            Farewell::AdminShutdown,
            down_signal,
            &mut to_client,
        );
        tokio::pin!(up, down);
        while !(up_done && down_done) {
            let ended = tokio::select! {
                ended = &mut up, if !up_done => {
                    up_done = true;
                    ended
                }
                ended = &mut down, if !down_done => {
                    down_done = true;
                    ended
                }
            };
            match ended {
                // One side closed: the other goes on until it closes too.
                Ok(Ended::Closed) => {}
                // The other direction is cutting off too, and soon done: the upstream side
                // does not wait, the client side waits for the end of one message (a side
                // that never gets there is the listener's to drop).
                Ok(Ended::CutOff) => cut = true,
                // A side that fails ends the session, as a dropped connection does.
                Err(_) => break,
            }
        }
    }
    Relayed {
        from_client,
        to_client,
        cut_off: cut,
    }
}

/// How one direction of a relay ended.
enum Ended {
    /// Its reading side closed, and the close was passed on.
    Closed,
    /// It was cut off at a message boundary, with its farewell written.
    CutOff,
}

/// What the proxy writes in one direction when it cuts a session off.
#[derive(Clone, Copy)]
enum Farewell {
    /// To the upstream: `Terminate`, but only between the client's messages.
    Terminate,
    /// To the client: FATAL 57P01, after the upstream's message under way.
    AdminShutdown,
}

impl Farewell {
    fn message(self) -> Vec<u8> {
        match self {
            Farewell::Terminate => super::message(b'X', &[]),
            Farewell::AdminShutdown => super::error_response(
                "57P01",
                "terminating connection because the Portcullis proxy is shutting down",
            ),
        }
    }

    /// Whether a cut-off waits for the message under way to end before writing the farewell
    /// (the client must not see half a message followed by the error); the upstream is
    /// simply closed when the client is in the middle of one.
    fn waits_for_boundary(self) -> bool {
        matches!(self, Farewell::AdminShutdown)
    }
}

/// Copies `from` to `to`, adding what it passes on to `count`, until `from` closes or the
/// session is cut off.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    farewell: Farewell,
    mut cut_off: oneshot::Receiver<()>,
    count: &mut u64,
) -> io::Result<Ended>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0_u8; CHUNK_BYTES];
    let mut framing = Framing::default();
    // Until the signal has fired or its sender is gone, which it is polled for no longer.
    let mut watching = true;
    let mut cutting = false;
    loop {
        if cutting && (framing.at_boundary() || !farewell.waits_for_boundary()) {
            if framing.at_boundary() {
                let message = farewell.message();
                to.write_all(&message).await?;
                if matches!(farewell, Farewell::AdminShutdown) {
                    *count = count.saturating_add(message.len() as u64);
                }
            }
            to.flush().await?;
            let _ = to.shutdown().await;
            return Ok(Ended::CutOff);
        }
        let read = tokio::select! {
            biased;
            signalled = &mut cut_off, if watching => {
                watching = false;
                cutting = signalled.is_ok();
                continue;
            }
            // Reading is cancel-safe: a read dropped for the signal has taken no bytes.
            read = from.read(&mut buffer) => read?,
        };
        if read == 0 {
            to.flush().await?;
            let _ = to.shutdown().await;
            return Ok(Ended::Closed);
        }
        let chunk = &buffer[..read];
        // Once cutting, only the rest of the message under way is passed on.
        let passed = framing.follow(chunk, cutting);
        to.write_all(&chunk[..passed]).await?;
        to.flush().await?;
        *count = count.saturating_add(passed as u64);
    }
}

/// Where a stream of protocol messages (a type byte, a length of four bytes that counts
/// itself, the body) stands: inside a header, inside a body, or between messages.
#[derive(Debug, Default)]
struct Framing {
    /// Bytes of the current header seen (0 to 4; the fifth completes it).
    header_seen: usize,
    length: [u8; 4],
    /// Body bytes still to come.
    remaining: u64,
    /// A length under four was seen: no boundary can be told from then on.
    lost: bool,
}

impl Framing {
    fn at_boundary(&self) -> bool {
        !self.lost && self.header_seen == 0 && self.remaining == 0
    }

    /// Follows `bytes`; with `to_boundary`, only up to the first boundary at or after their
    /// start. How many bytes were followed.
    fn follow(&mut self, bytes: &[u8], to_boundary: bool) -> usize {
        let mut at = 0;
        while at < bytes.len() {
            if self.lost {
                return bytes.len();
            }
            if to_boundary && self.at_boundary() {
                break;
            }
            if self.remaining > 0 {
                let left = bytes.len() - at;
                let take = usize::try_from(self.remaining).map_or(left, |rest| rest.min(left));
                at += take;
                self.remaining -= take as u64;
                continue;
            }
            if self.header_seen > 0 {
                self.length[self.header_seen - 1] = bytes[at];
            }
            self.header_seen += 1;
            at += 1;
            if self.header_seen == 5 {
                self.header_seen = 0;
                match u32::from_be_bytes(self.length).checked_sub(4) {
                    Some(body) => self.remaining = u64::from(body),
                    None => self.lost = true,
                }
            }
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        super::super::message(kind, body)
    }

    #[test]
    fn framing_finds_boundaries_across_any_split() {
        let stream = [
            message(b'T', b"row description"),
            message(b'D', &[7; 300]),
            message(b'C', b"SELECT 1\0"),
            message(b'Z', b"I"),
        ]
        .concat();
        // Every way of cutting the stream in two: the boundary after the last message, and
        // none inside.
        for split in 0..=stream.len() {
            let mut framing = Framing::default();
            assert_eq!(framing.follow(&stream[..split], false), split);
            assert_eq!(
                framing.follow(&stream[split..], false),
                stream.len() - split
            );
            assert!(framing.at_boundary(), "split at {split}");
        }
        let mut framing = Framing::default();
        assert_eq!(framing.follow(&stream[..10], false), 10);
        assert!(!framing.at_boundary());
    }

    #[test]
    fn following_to_a_boundary_stops_at_the_end_of_the_message_under_way() {
        let first = message(b'D', &[1; 40]);
        let second = message(b'D', &[2; 40]);
        let stream = [first.clone(), second].concat();
        let mut framing = Framing::default();
        // Three bytes into the first message's header, then cutting: the rest of the first
        // message is passed on, none of the second.
        assert_eq!(framing.follow(&stream[..3], false), 3);
        assert_eq!(framing.follow(&stream[3..], true), first.len() - 3);
        assert!(framing.at_boundary());
        // At a boundary already: nothing more.
        assert_eq!(framing.follow(&stream[first.len()..], true), 0);
    }

    #[test]
    fn a_length_under_four_loses_the_boundaries() {
        let mut framing = Framing::default();
        let bad = [b'D', 0, 0, 0, 3, 9, 9];
        assert_eq!(framing.follow(&bad, false), bad.len());
        assert!(!framing.at_boundary());
        assert_eq!(framing.follow(&message(b'Z', b"I"), true), 6);
        assert!(!framing.at_boundary());
    }

    /// A relay between two in-memory pipes, running: its cut-offs, its task, and the far ends
    /// of the client's pipe and the upstream's.
    fn start_relay() -> (
        std::sync::Arc<CutOffs>,
        tokio::task::JoinHandle<Relayed>,
        tokio::io::DuplexStream,
        tokio::io::DuplexStream,
    ) {
        let (client, client_far) = tokio::io::duplex(1 << 16);
        let (upstream, upstream_far) = tokio::io::duplex(1 << 16);
        let cut_offs = std::sync::Arc::new(CutOffs::default());
        let held = std::sync::Arc::clone(&cut_offs);
        let task =
            tokio::spawn(async move { relay(Box::new(client), Box::new(upstream), &held).await });
        (cut_offs, task, client_far, upstream_far)
    }

    #[tokio::test]
    async fn a_cut_off_session_ends_at_a_boundary_with_admin_shutdown() {
        let (cut_offs, relaying, mut client_far, mut upstream_far) = start_relay();
        // A query goes up; half a row comes down.
        let query = message(b'Q', b"SELECT 1\0");
        client_far.write_all(&query).await.unwrap();
        let mut seen = vec![0; query.len()];
        upstream_far.read_exact(&mut seen).await.unwrap();
        assert_eq!(seen, query);
        let row = message(b'D', &[5; 100]);
        upstream_far.write_all(&row[..50]).await.unwrap();
        let mut half = vec![0; 50];
        client_far.read_exact(&mut half).await.unwrap();
        // Cut off mid-row: the row is finished, the next message is not passed on.
        cut_offs.cut_off_all();
        tokio::task::yield_now().await;
        upstream_far
            .write_all(&[&row[50..], &message(b'D', &[6; 10])].concat())
            .await
            .unwrap();
        let mut rest = Vec::new();
        client_far.read_to_end(&mut rest).await.unwrap();
        let (finished, farewell) = rest.split_at(row.len() - 50);
        assert_eq!(finished, &row[50..]);
        assert_eq!(farewell[0], b'E');
        let text = String::from_utf8_lossy(&farewell[5..]).into_owned();
        assert!(
            text.contains("SFATAL\0") && text.contains("C57P01\0"),
            "{text:?}"
        );
        // The client was between messages: the upstream gets a Terminate, then the close.
        let mut up = Vec::new();
        upstream_far.read_to_end(&mut up).await.unwrap();
        assert_eq!(up, message(b'X', &[]));
        let relayed = relaying.await.unwrap();
        assert!(relayed.cut_off);
        assert_eq!(relayed.from_client, query.len() as u64);
        assert_eq!(relayed.to_client, (row.len() + farewell.len()) as u64);
    }

    #[tokio::test]
    async fn a_session_without_a_cut_off_relays_both_ways_until_both_close() {
        let (_cut_offs, relaying, mut client_far, mut upstream_far) = start_relay();
        let terminate = message(b'X', &[]);
        client_far.write_all(&terminate).await.unwrap();
        client_far.shutdown().await.unwrap();
        let mut up = Vec::new();
        upstream_far.read_to_end(&mut up).await.unwrap();
        assert_eq!(up, terminate);
        // The upstream still has its last word after the client closed.
        let notice = message(b'N', b"SNOTICE\0Mbye\0\0");
        upstream_far.write_all(&notice).await.unwrap();
        drop(upstream_far);
        let mut down = Vec::new();
        client_far.read_to_end(&mut down).await.unwrap();
        assert_eq!(down, notice);
        let relayed = relaying.await.unwrap();
        assert!(!relayed.cut_off);
        assert_eq!(relayed.from_client, terminate.len() as u64);
        assert_eq!(relayed.to_client, notice.len() as u64);
    }
}
