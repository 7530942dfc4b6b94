//! A private connection for one client's subscriptions.
//!
//! Unlike shared connections, a subscribed connection receives frames that
//! answer no request (published messages), so this task does no reply
//! matching: it writes the client's (un)subscribe commands and forwards
//! every frame it reads, in order, to the client session. When the
//! connection fails it reports [`PubSubEvent::Lost`] so the session can
//! subscribe again elsewhere (after a failover). If the client reads too
//! slowly and its backlog reaches the limit, the connection is dropped and
//! [`PubSubEvent::Overflow`] is reported (Redis disconnects slow subscribers
//! the same way).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::conn::{connect, ConnOptions};
use crate::protocol::scan::FrameScanner;
use crate::protocol::Proto;

/// Frames a subscriber may have waiting before it is disconnected.
pub const MAX_BACKLOG_FRAMES: usize = 16 * 1024;

/// What a subscription connection reports to its session.
#[derive(Debug)]
pub enum PubSubEvent {
    /// A frame to forward to the client as is.
    Frame(Bytes),
    /// The connection failed; subscriptions on it are gone.
    Lost(String),
    /// The client did not keep up with the messages.
    Overflow,
    /// Time to subscribe again after a loss (sent by the session to itself).
    Resubscribe,
}

/// Handle to a subscription connection; dropping it closes the connection.
#[derive(Debug)]
pub struct PubSubConn {
    tx: mpsc::UnboundedSender<Bytes>,
    /// The node it is connected to.
    pub addr: Arc<str>,
    /// The protocol it speaks (the client's when it was opened).
    pub proto: Proto,
}

impl PubSubConn {
    /// Connects to `addr` in the background; events arrive on `events`
    /// tagged with `id`.
    pub fn spawn(
        addr: Arc<str>,
        opts: Arc<ConnOptions>,
        proto: Proto,
        id: u32,
        events: mpsc::Sender<(u32, PubSubEvent)>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(addr.clone(), opts, proto, id, rx, events));
        PubSubConn { tx, addr, proto }
    }

    /// Queues a command (its replies come back as frames).
    pub fn send(&self, cmd: Bytes) {
        let _ = self.tx.send(cmd);
    }
}

async fn run(
    addr: Arc<str>,
    opts: Arc<ConnOptions>,
    proto: Proto,
    id: u32,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    events: mpsc::Sender<(u32, PubSubEvent)>,
) {
    let connected = tokio::time::timeout(opts.connect_timeout, connect(&addr, &opts, proto, false))
        .await
        .unwrap_or_else(|_| Err("connect timed out".into()));
    let stream = match connected {
        Ok(s) => s,
        Err(e) => {
            (opts.on_failure)(&addr);
            let _ = events.send((id, PubSubEvent::Lost(e))).await;
            return;
        }
    };
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut rbuf = BytesMut::with_capacity(16 * 1024);
    let mut scanner = FrameScanner::new();
    let why = loop {
        if rbuf.capacity() - rbuf.len() < 4096 {
            rbuf.reserve(16 * 1024);
        }
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(cmd) => {
                    if let Err(e) = wr.write_all(&cmd).await {
                        break e.to_string();
                    }
                }
                None => return,
            },
            n = rd.read_buf(&mut rbuf) => {
                match n {
                    Ok(0) => break "closed by server".to_string(),
                    Err(e) => break e.to_string(),
                    Ok(_) => {}
                }
                loop {
                    match scanner.scan(&rbuf) {
                        Ok(Some(n)) => {
                            let frame = rbuf.split_to(n).freeze();
                            match events.try_send((id, PubSubEvent::Frame(frame))) {
                                Ok(()) => {}
                                Err(mpsc::error::TrySendError::Full(_)) => {
                                    let _ = events.send((id, PubSubEvent::Overflow)).await;
                                    return;
                                }
                                Err(mpsc::error::TrySendError::Closed(_)) => return,
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            let _ = events.send((id, PubSubEvent::Lost(e.to_string()))).await;
                            return;
                        }
                    }
                }
            }
        }
    };
    (opts.on_failure)(&addr);
    tracing::info!(node = %addr, error = %why, "subscription connection lost");
    let _ = events.send((id, PubSubEvent::Lost(why))).await;
}
