//! Invalidation inboxes: one RESP3 connection per master that the shared
//! RESP2 connections redirect their tracking to.
//!
//! A RESP2 client tracks with `CLIENT TRACKING ON REDIRECT <id>` (see
//! [`crate::tracking`]); its reads go to the nodes on the shared RESP2
//! connections, which cannot receive pushes. So a RESP2 connection turns
//! tracking on with `REDIRECT` to its node's inbox, a connection that only
//! listens: its `invalidate` pushes go to the tracker like those of the
//! RESP3 connections. When an inbox loses its connection, the node forgets
//! where to send them, so every RESP2 client that redirects flushes, and the inbox
//! connects again (with a new id, which the RESP2 connections redirect to
//! at their next tracked read).
//!
//! For clients in `BCAST` mode, each master also gets a broadcast
//! listener: a RESP3 connection with `CLIENT TRACKING ON BCAST`, told of
//! every key that changes there; the tracker passes those under a client's
//! prefixes to it. It is opened with the first `BCAST` client and closed
//! after the last. Until it listens, changes go unseen, so the `BCAST`
//! clients that sent commands meanwhile flush once it does; when one is
//! lost, every `BCAST` client flushes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::conn::{connect, ConnOptions};
use crate::protocol::scan::FrameScanner;
use crate::protocol::Proto;

/// How long a listening connection stays silent before a `PING`.
const KEEPALIVE: Duration = Duration::from_secs(15);
const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// Pause before an inbox connects again.
const RECONNECT_DELAY: Duration = Duration::from_millis(250);

const CLIENT_ID: &[u8] = b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n";
const TRACKING_BCAST: &[u8] =
    b"*4\r\n$6\r\nCLIENT\r\n$8\r\nTRACKING\r\n$2\r\nON\r\n$5\r\nBCAST\r\n";

/// The inboxes and broadcast listeners, by node address.
#[derive(Debug, Default)]
pub struct Inboxes {
    nodes: Mutex<HashMap<Arc<str>, Inbox>>,
    broadcast: Mutex<HashMap<Arc<str>, Inbox>>,
}

/// What a listening connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Redirected invalidations of the RESP2 connections.
    Redirect,
    /// Every change on the node (`BCAST`).
    Broadcast,
}

#[derive(Debug)]
struct Inbox {
    /// The connection's id on the node (0 while it is not connected).
    id: Arc<AtomicU64>,
    /// Dropped with the inbox: its task ends.
    _stop: oneshot::Sender<()>,
}

impl Inboxes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Inbox>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The id of the inbox of the node at `addr`, started if there is none
    /// (0 until it is connected).
    pub fn ensure(&self, addr: &Arc<str>, opts: &Arc<ConnOptions>) -> u64 {
        start(&mut self.lock(), addr, opts, Kind::Redirect)
    }

    /// Starts the broadcast listener of the node at `addr` if there is
    /// none.
    pub fn ensure_broadcast(&self, addr: &Arc<str>, opts: &Arc<ConnOptions>) {
        let mut nodes = self.broadcast.lock().unwrap_or_else(|p| p.into_inner());
        start(&mut nodes, addr, opts, Kind::Broadcast);
    }

    /// The id of the inbox of the node at `addr` (0: none, or not
    /// connected).
    pub fn id(&self, addr: &str) -> u64 {
        self.lock()
            .get(addr)
            .map_or(0, |inbox| inbox.id.load(Ordering::Acquire))
    }

    /// Whether every master in `masters` has a listening broadcast
    /// listener.
    pub fn broadcast_ready<'a>(&self, mut masters: impl Iterator<Item = &'a Arc<str>>) -> bool {
        let nodes = self.broadcast.lock().unwrap_or_else(|p| p.into_inner());
        masters.all(|m| {
            nodes
                .get(m)
                .is_some_and(|i| i.id.load(Ordering::Acquire) != 0)
        })
    }

    /// Closes the inboxes of nodes not in `masters`, and every broadcast
    /// listener unless `broadcasting`.
    pub fn retain(&self, masters: &[Arc<str>], broadcasting: bool) {
        let mut nodes = self.lock();
        if !nodes.is_empty() {
            nodes.retain(|addr, _| masters.contains(addr));
        }
        drop(nodes);
        let mut nodes = self.broadcast.lock().unwrap_or_else(|p| p.into_inner());
        if !nodes.is_empty() {
            nodes.retain(|addr, _| broadcasting && masters.contains(addr));
        }
    }
}

/// The id of `nodes`' listener of `addr`, started if missing (0 until it
/// is connected).
fn start(
    nodes: &mut HashMap<Arc<str>, Inbox>,
    addr: &Arc<str>,
    opts: &Arc<ConnOptions>,
    kind: Kind,
) -> u64 {
    if let Some(inbox) = nodes.get(addr) {
        return inbox.id.load(Ordering::Acquire);
    }
    let id = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = oneshot::channel();
    tokio::spawn(listen(
        addr.clone(),
        opts.clone(),
        id.clone(),
        kind,
        stop_rx,
    ));
    nodes.insert(addr.clone(), Inbox { id, _stop: stop_tx });
    0
}

/// Keeps the inbox of `addr` connected until `stop` fires.
async fn listen(
    addr: Arc<str>,
    opts: Arc<ConnOptions>,
    id: Arc<AtomicU64>,
    kind: Kind,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let session = async {
            let stream = tokio::time::timeout(
                opts.connect_timeout,
                connect(&addr, &opts, Proto::Resp3, false),
            )
            .await
            .unwrap_or_else(|_| Err("connect timed out".to_string()))?;
            serve(stream, &id, &opts, kind).await
        };
        let why = tokio::select! {
            _ = &mut stop => return,
            r = session => r.err().unwrap_or_default(),
        };
        if id.swap(0, Ordering::AcqRel) != 0 {
            // The node forgets the redirections to this connection: what
            // the RESP2 connections tracked is not invalidated any more.
            tracing::warn!(node = %addr, error = %why, ?kind, "invalidation inbox lost");
            match kind {
                Kind::Redirect => opts.tracker.flush_redirected(),
                Kind::Broadcast => opts.tracker.flush_broadcast(true),
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(RECONNECT_DELAY) => {}
        }
    }
}

/// Asks the connection's id (or turns broadcast tracking on), then hands
/// every push to the tracker until the connection fails.
async fn serve(
    stream: super::conn::BackendStream,
    id: &AtomicU64,
    opts: &ConnOptions,
    kind: Kind,
) -> Result<(), String> {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let first = match kind {
        Kind::Redirect => CLIENT_ID,
        Kind::Broadcast => TRACKING_BCAST,
    };
    wr.write_all(first).await.map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(4096);
    let mut scanner = FrameScanner::new();
    loop {
        while let Some(n) = scanner.scan(&buf).map_err(|e| e.to_string())? {
            let frame = buf.split_to(n);
            match frame.first() {
                Some(b'>') => match crate::tracking::parse_push(&frame) {
                    Some(crate::tracking::Invalidation::Keys(keys)) => match kind {
                        Kind::Redirect => opts.tracker.invalidate(&keys),
                        Kind::Broadcast => opts.tracker.broadcast(&keys),
                    },
                    Some(crate::tracking::Invalidation::All) => opts.tracker.invalidate_all(),
                    None => {}
                },
                Some(b'+') => {
                    if kind == Kind::Broadcast && id.load(Ordering::Acquire) == 0 {
                        // Listening: what changed before went unseen by
                        // the clients that may have read it.
                        id.store(1, Ordering::Release);
                        opts.tracker.flush_broadcast(false);
                    }
                }
                Some(b':') => {
                    let n = std::str::from_utf8(&frame[1..])
                        .ok()
                        .and_then(|s| s.trim_end().parse::<u64>().ok())
                        .ok_or("a malformed CLIENT ID reply")?;
                    id.store(n, Ordering::Release);
                }
                _ => {
                    return Err(format!(
                        "unexpected reply {:?}",
                        String::from_utf8_lossy(&frame)
                    ))
                }
            }
        }
        tokio::select! {
            n = rd.read_buf(&mut buf) => {
                if n.map_err(|e| e.to_string())? == 0 {
                    return Err("closed by the node".into());
                }
            }
            // A node with a client `timeout` closes connections that send
            // nothing for that long.
            _ = tokio::time::sleep(KEEPALIVE) => {
                wr.write_all(PING).await.map_err(|e| e.to_string())?;
            }
        }
    }
}
