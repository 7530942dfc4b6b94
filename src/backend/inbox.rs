//! Invalidation inboxes: one RESP3 connection per master that the shared
//! RESP2 connections redirect their tracking to.
//!
//! A RESP2 client tracks with `CLIENT TRACKING ON REDIRECT <id>` (see
//! [`crate::tracking`]); its reads go to the nodes on the shared RESP2
//! connections, which cannot receive pushes. So a RESP2 connection turns
//! tracking on with `REDIRECT` to its node's inbox, a connection that only
//! listens: its `invalidate` pushes go to the tracker like those of the
//! RESP3 connections. When an inbox loses its connection, the node forgets
//! where to send them, so every tracking client flushes, and the inbox
//! connects again (with a new id, which the RESP2 connections redirect to
//! at their next tracked read).

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

/// Pause before an inbox connects again.
const RECONNECT_DELAY: Duration = Duration::from_millis(250);

const CLIENT_ID: &[u8] = b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n";

/// The inboxes, by node address.
#[derive(Debug, Default)]
pub struct Inboxes {
    nodes: Mutex<HashMap<Arc<str>, Inbox>>,
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
        let mut nodes = self.lock();
        if let Some(inbox) = nodes.get(addr) {
            return inbox.id.load(Ordering::Acquire);
        }
        let id = Arc::new(AtomicU64::new(0));
        let (stop_tx, stop_rx) = oneshot::channel();
        tokio::spawn(listen(addr.clone(), opts.clone(), id.clone(), stop_rx));
        nodes.insert(addr.clone(), Inbox { id, _stop: stop_tx });
        0
    }

    /// The id of the inbox of the node at `addr` (0: none, or not
    /// connected).
    pub fn id(&self, addr: &str) -> u64 {
        self.lock()
            .get(addr)
            .map_or(0, |inbox| inbox.id.load(Ordering::Acquire))
    }

    /// Closes the inboxes of nodes not in `masters`.
    pub fn retain(&self, masters: &[Arc<str>]) {
        let mut nodes = self.lock();
        if !nodes.is_empty() {
            nodes.retain(|addr, _| masters.contains(addr));
        }
    }
}

/// Keeps the inbox of `addr` connected until `stop` fires.
async fn listen(
    addr: Arc<str>,
    opts: Arc<ConnOptions>,
    id: Arc<AtomicU64>,
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
            serve(stream, &id, &opts).await
        };
        let why = tokio::select! {
            _ = &mut stop => return,
            r = session => r.err().unwrap_or_default(),
        };
        if id.swap(0, Ordering::AcqRel) != 0 {
            // The node forgets the redirections to this connection: what
            // the RESP2 connections tracked is not invalidated any more.
            tracing::warn!(node = %addr, error = %why, "invalidation inbox lost");
            opts.tracker.invalidate_all();
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(RECONNECT_DELAY) => {}
        }
    }
}

/// Asks the connection's id, then hands every push to the tracker until
/// the connection fails.
async fn serve(
    stream: super::conn::BackendStream,
    id: &AtomicU64,
    opts: &ConnOptions,
) -> Result<(), String> {
    let (mut rd, mut wr) = tokio::io::split(stream);
    wr.write_all(CLIENT_ID).await.map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(4096);
    let mut scanner = FrameScanner::new();
    loop {
        while let Some(n) = scanner.scan(&buf).map_err(|e| e.to_string())? {
            let frame = buf.split_to(n);
            match frame.first() {
                Some(b'>') => match crate::tracking::parse_push(&frame) {
                    Some(crate::tracking::Invalidation::Keys(keys)) => {
                        opts.tracker.invalidate(&keys)
                    }
                    Some(crate::tracking::Invalidation::All) => opts.tracker.invalidate_all(),
                    None => {}
                },
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
        if rd.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("closed by the node".into());
        }
    }
}
