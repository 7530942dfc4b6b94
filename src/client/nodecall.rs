//! Requests the proxy makes on its own behalf to the nodes (the steps of
//! a command it carries out itself, in a task: see `multipop`, `moves`),
//! outside a client session's redirect and retry machinery.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::backend::{reply_channel, BackendConn, BackendRequest, Reply, ReplyStatus, ReplyTo};
use crate::protocol::reply::{self, Proto};
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
        let r = request(pool.conn(proto), payload.clone(), skip).await;
        let retry = match r.status {
            ReplyStatus::NotSent => true,
            ReplyStatus::Answered => {
                const LATER: [&[u8]; 5] = [
                    b"-MOVED",
                    b"-ASK",
                    b"-TRYAGAIN",
                    b"-CLUSTERDOWN",
                    b"-LOADING",
                ];
                LATER.iter().any(|p| r.data.starts_with(p))
            }
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

/// One request on `conn`, and its reply.
pub async fn request(conn: &BackendConn, payload: Bytes, skip: u32) -> Reply {
    let (tx, mut rx) = reply_channel();
    conn.send(BackendRequest {
        payload,
        asking: false,
        skip,
        then_wait: None,
        caching: false,
        replies: 1,
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
