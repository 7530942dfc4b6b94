//! Connections to Redis nodes: shared, pipelined, multiplexed across clients.

pub mod conn;
pub mod inbox;
pub mod pool;
pub mod pubsub;
pub mod queue;

use bytes::Bytes;

pub use conn::{BackendConn, ConnOptions};
pub use pool::NodePool;
pub use queue::{reply_channel, ReplyReceiver, ReplySender};

/// How a backend request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStatus {
    /// The server answered; `data` is its reply frame.
    Answered,
    /// The request was never written to a server (connect or handshake
    /// failed): it is safe to retry, even a write.
    NotSent,
    /// The request was written but the connection failed before the reply:
    /// the command may or may not have run.
    Lost,
    /// Not a reply: the session's own retry timer for this request fired.
    RetryTimer,
    /// A final error made by the proxy itself (it already waited or
    /// retried as long as it should): delivered as is.
    Final,
}

/// One reply frame delivered back to a client session.
#[derive(Debug)]
pub struct Reply {
    /// The client request this answers.
    pub seq: u64,
    /// Which sub-request of a split or fanned-out command.
    pub part: u32,
    /// The raw reply frame (several, back to back, for a request of
    /// several commands), or a proxy-made error frame.
    pub data: Bytes,
    /// Whether the server answered.
    pub status: ReplyStatus,
    /// For several frames delivered together: where each one ends in
    /// `data`, as the connection found them (empty: not known, scan).
    pub ends: Vec<usize>,
}

/// Where the reply to a backend request goes.
#[derive(Debug, Clone)]
pub struct ReplyTo {
    /// The client session's reply channel.
    pub tx: ReplySender,
    /// The client request.
    pub seq: u64,
    /// The sub-request.
    pub part: u32,
}

impl ReplyTo {
    /// Delivers a reply; a client that went away is ignored.
    pub fn send(self, data: Bytes, status: ReplyStatus) {
        self.send_frames(data, status, Vec::new());
    }

    /// Delivers the frames of several commands, which end at `ends`.
    pub fn send_frames(self, data: Bytes, status: ReplyStatus, ends: Vec<usize>) {
        self.tx.send(Reply {
            seq: self.seq,
            part: self.part,
            data,
            status,
            ends,
        });
    }
}

/// A command for one backend connection.
#[derive(Debug)]
pub struct BackendRequest {
    /// The encoded command, forwarded as is.
    pub payload: Bytes,
    /// Send `ASKING` first (after an `-ASK` redirection).
    pub asking: bool,
    /// How many replies before the delivered one belong to this request and
    /// are discarded (`MULTI`/queued commands before `EXEC`, `SCRIPT LOAD`
    /// before a retried `EVALSHA`). A redirection among them is delivered
    /// instead of a final error, so the caller can follow it.
    pub skip: u32,
    /// A `WAIT numreplicas timeout` command to send right after this one
    /// (the opt-in write durability policy): the reply is held back until
    /// WAIT answers, and WAIT's own reply is discarded.
    pub then_wait: Option<WaitAfter>,
    /// Track the keys this command reads for the client that sent it (see
    /// [`crate::tracking`]): `CLIENT CACHING YES` goes right before it, and
    /// the connection turns tracking on (`OPTIN`) first if it has not yet.
    /// For a single command on a shared RESP3 connection, without `asking`.
    pub caching: bool,
    /// How many commands `payload` holds whose replies are delivered
    /// together, as one [`Reply`] of that many frames (the per-slot
    /// sub-commands of a split that one node owns). 1 for everything else;
    /// `asking`, `skip` and `then_wait` apply to single commands only.
    pub replies: u32,
    /// Where the reply goes.
    pub reply_to: ReplyTo,
}

/// The `WAIT` sent after a write under the durability policy.
#[derive(Debug, Clone)]
pub struct WaitAfter {
    /// The encoded `WAIT` command.
    pub command: Bytes,
    /// Replicas asked for; a smaller count in WAIT's reply is counted in
    /// `slotbridge_write_wait_short_total`.
    pub replicas: u32,
}
