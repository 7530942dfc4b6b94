//! Requests the proxy makes on its own behalf to the nodes (the steps of
//! a command it carries out itself, in a task: see `multipop`, `moves`),
//! outside a client session's redirect and retry machinery.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use tokio::sync::OwnedSemaphorePermit;

use crate::backend::{
    reply_channel, BackendConn, BackendRequest, NodePool, Reply, ReplyStatus, ReplyTo,
};
use crate::protocol::reply::{self, Proto};
use crate::protocol::scan::FrameScanner;
use crate::server::Context;

/// Sends `payload` to the master of `slot` on its shared connection and
/// returns the reply, following a moved slot or a failover until the
/// retry deadline. `Err`: the error for the client.
pub async fn call_master(
    ctx: &Context,
    proto: Proto,
    slot: u16,
    payload: Bytes,
    skip: u32,
) -> Result<Bytes, Bytes> {
    let deadline = Instant::now() + Duration::from_millis(ctx.config().limits.retry_deadline_ms);
    loop {
        let Some(pool) = ctx.topology.load().master(slot).cloned() else {
            ctx.topology.request_refresh();
            if Instant::now() >= deadline {
                return Err(reply::error(&format!(
                    "CLUSTERDOWN Hash slot not served (slot {slot})"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut r = request(pool.conn(proto), payload.clone(), skip, false).await;
        if r.status == ReplyStatus::Answered {
            // During a migration: once, to the importing node, after ASKING.
            let target = super::retry::parse_redirect(&r.data)
                .filter(|red| red.ask && !red.addr.starts_with(':'))
                .map(|red| red.addr.to_string());
            if let Some(addr) = target {
                let node = ctx.topology.pool(&addr);
                r = request(node.conn(proto), payload.clone(), skip, true).await;
            }
        }
        let retry = match r.status {
            ReplyStatus::NotSent => true,
            ReplyStatus::Answered => moving_or_failing(&r.data),
            _ => false,
        };
        if retry && Instant::now() >= deadline {
            // Never a redirection for the client.
            return Err(reply::error(&format!(
                "TRYAGAIN slotbridge: slot {slot} was moving or failing over until the retry deadline"
            )));
        }
        if !retry {
            return match r.status {
                ReplyStatus::Answered | ReplyStatus::Final => Ok(r.data),
                _ => Err(r.data),
            };
        }
        if r.data.starts_with(b"-MOVED") || r.data.starts_with(b"-ASK") {
            ctx.topology.request_refresh();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One request on `conn` (after `ASKING` when `asking`), and its reply.
pub async fn request(conn: &BackendConn, payload: Bytes, skip: u32, asking: bool) -> Reply {
    exchange(conn, payload, skip, asking, 1).await
}

/// `count` commands sent as one request on `conn`, and their reply
/// frames in order (fewer when the connection failed part way).
pub async fn batch(conn: &BackendConn, payload: Bytes, count: usize) -> Vec<Bytes> {
    let r = exchange(conn, payload, 0, false, count as u32).await;
    if r.ends.len() == count {
        let mut at = 0;
        return r
            .ends
            .iter()
            .map(|&end| {
                let frame = r.data.slice(at.min(end)..end);
                at = end;
                frame
            })
            .collect();
    }
    let mut out = Vec::with_capacity(count);
    let mut at = 0;
    while out.len() < count {
        match FrameScanner::new().scan(r.data.get(at..).unwrap_or_default()) {
            Ok(Some(n)) => {
                out.push(r.data.slice(at..at + n));
                at += n;
            }
            _ => break,
        }
    }
    out
}

/// Sends a request of `replies` commands and waits for its reply.
async fn exchange(
    conn: &BackendConn,
    payload: Bytes,
    skip: u32,
    asking: bool,
    replies: u32,
) -> Reply {
    let (tx, mut rx) = reply_channel();
    conn.send(BackendRequest {
        payload,
        asking,
        skip,
        then_wait: None,
        caching: false,
        replies,
        reply_to: ReplyTo {
            tx,
            seq: 0,
            part: 0,
        },
    })
    .await;
    rx.recv().await.unwrap_or(Reply {
        seq: 0,
        part: 0,
        data: reply::error("ERR slotbridge: connection closed before the reply"),
        status: ReplyStatus::Lost,
        ends: Vec::new(),
    })
}

/// A command waiting on a private connection to a node (a blocking
/// command the proxy sends on a client's behalf).
pub struct Wait {
    /// The node.
    pub addr: Arc<str>,
    /// The connection's `CLIENT ID` on the node (0 until known, -1 once the
    /// connection ended).
    pub server_id: Arc<AtomicI64>,
    _conn: BackendConn,
}

/// A new private connection for blocking commands to `pool`'s node,
/// holding `permit` of `max_private_connections`, and its `CLIENT ID` there
/// as it learns it (see [`BackendConn::spawn_dedicated`]), which lets
/// `CLIENT UNBLOCK` reach its command.
pub fn blocking_conn(
    ctx: &Context,
    pool: &NodePool,
    proto: Proto,
    permit: OwnedSemaphorePermit,
) -> (BackendConn, Arc<AtomicI64>) {
    let server_id = Arc::new(AtomicI64::new(0));
    let opts = ctx.topology.conn_options().clone();
    let conn = BackendConn::spawn_dedicated(
        pool.addr().clone(),
        opts,
        proto,
        Some(permit),
        Some(server_id.clone()),
    );
    (conn, server_id)
}

impl Wait {
    /// Sends `payload` on a new private connection to `pool`'s node
    /// (holding `permit` of `max_private_connections`); its reply goes to
    /// `reply_to`.
    pub async fn start(
        ctx: &Context,
        pool: &NodePool,
        proto: Proto,
        permit: OwnedSemaphorePermit,
        payload: Bytes,
        reply_to: ReplyTo,
    ) -> Wait {
        let (conn, server_id) = blocking_conn(ctx, pool, proto, permit);
        conn.send(BackendRequest {
            payload,
            asking: false,
            skip: 0,
            then_wait: None,
            caching: false,
            replies: 1,
            reply_to,
        })
        .await;
        Wait {
            addr: pool.addr().clone(),
            server_id,
            _conn: conn,
        }
    }

    /// Ends the wait with `CLIENT UNBLOCK` on its node (once its
    /// connection knows its id there; a wait whose connection ended needs
    /// nothing). Its reply still comes, to where it was going.
    pub async fn unblock(&self, ctx: &Context, proto: Proto) {
        let give_up = Instant::now() + Duration::from_secs(2);
        let id = loop {
            let id = self.server_id.load(Ordering::Acquire);
            if id != 0 || Instant::now() >= give_up {
                break id;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        if id <= 0 {
            return;
        }
        let pool = ctx.topology.pool(&self.addr);
        let id = id.to_string();
        let _ = request(
            pool.conn(proto),
            reply::command([&b"CLIENT"[..], b"UNBLOCK", id.as_bytes()]),
            0,
            false,
        )
        .await;
    }
}

/// Whether an error from [`call_master`] says the command was written but
/// its reply was lost (so it may have run).
pub fn is_lost(e: &[u8]) -> bool {
    e.starts_with(b"-ERR slotbridge: connection to node")
        || e.starts_with(b"-ERR slotbridge: connection closed before the reply")
}

/// Whether a node's reply says the slot moved (`MOVED`, `ASK`) or the
/// cluster is failing over (`TRYAGAIN`, `CLUSTERDOWN`, `LOADING`,
/// `MASTERDOWN`), rather than anything about the command's keys.
pub fn moving_or_failing(data: &[u8]) -> bool {
    const LATER: [&[u8]; 6] = [
        b"-MOVED",
        b"-ASK",
        b"-TRYAGAIN",
        b"-CLUSTERDOWN",
        b"-LOADING",
        b"-MASTERDOWN",
    ];
    LATER.iter().any(|p| data.starts_with(p))
}
