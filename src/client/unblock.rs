//! `CLIENT UNBLOCK` of a client whose blocking command waits on a node.
//!
//! The command goes to the node on the client's private connection, the
//! `UNBLOCK` on a shared one: it can reach the node first, which then
//! answers 0 and the command blocks afterwards for good. For the client,
//! though, its command was already waiting, as on one server, where
//! `CLIENT LIST` shows it blocked and `CLIENT UNBLOCK` ends it. So an
//! `UNBLOCK` answered 0 is sent again (after 1 ms, then up to 16 ms
//! apart) while that same command still waits, for at most [`PATIENCE`] (plus the connect
//! timeout while its private connection is still opening).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::backend::ReplyStatus;
use crate::client::nodecall;
use crate::client::registry::{ClientInfo, Waiting};
use crate::protocol::reply::{self, Proto};
use crate::server::Context;

/// How long an `UNBLOCK` keeps trying to reach a command on its way to
/// its node (a node that has not seen it after this long is not
/// answering anyway).
pub const PATIENCE: Duration = Duration::from_secs(1);

/// A `CLIENT UNBLOCK` of one waiting command.
#[derive(Debug)]
pub struct Unblock {
    target: Arc<ClientInfo>,
    waiting: Waiting,
    /// `TIMEOUT` or `ERROR`.
    mode: &'static [u8],
}

impl Unblock {
    /// The `UNBLOCK` of `target`'s oldest waiting command, if it has one.
    pub fn of(target: Arc<ClientInfo>, mode: &'static [u8]) -> Option<Unblock> {
        let waiting = target.waiting()?;
        Some(Unblock {
            target,
            waiting,
            mode,
        })
    }

    /// Sends it until the node ends the command (`:1`), the command is
    /// answered otherwise (`:0`, as from one server that unblocked it
    /// first), or [`PATIENCE`] runs out (`:0`).
    pub async fn run(self, ctx: &Context, proto: Proto) -> Bytes {
        let connect = ctx.topology.conn_options().connect_timeout;
        let give_up = Instant::now() + PATIENCE + connect;
        let mut pause = Duration::from_millis(1);
        loop {
            if !self.target.still_waiting(self.waiting.number) {
                return reply::int(0);
            }
            let id = self.waiting.on.server_id.load(Ordering::Acquire);
            if id > 0 {
                let id = id.to_string();
                let cmd = reply::command([&b"CLIENT"[..], b"UNBLOCK", id.as_bytes(), self.mode]);
                let pool = ctx.topology.pool(&self.waiting.on.addr);
                let sent = nodecall::request(pool.conn(proto), cmd, 0, false);
                let Ok(r) = tokio::time::timeout_at(give_up, sent).await else {
                    return reply::int(0);
                };
                let not_yet = r.status == ReplyStatus::Answered && &r.data[..] == b":0\r\n";
                if !not_yet {
                    return r.data;
                }
            }
            if Instant::now() >= give_up {
                return reply::int(0);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(16));
        }
    }
}
