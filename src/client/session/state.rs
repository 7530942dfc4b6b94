//! The session's bookkeeping types: what was sent where, and each
//! command's place in the reply order.

use super::*;

/// Which connection a command travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Via {
    /// The node's shared pipelined connection.
    Shared,
    /// A private connection for one blocking command.
    Blocking,
    /// The client's pinned `WATCH` connection.
    Pinned,
    /// A private connection for one command that must not queue behind
    /// the shared one (`SCRIPT KILL`: a node running a script reads
    /// nothing more from the connection that sent the script).
    Private,
}

/// Work to do on a reply before it reaches the client.
#[derive(Debug, Clone)]
pub(super) enum Post {
    None,
    /// Rewrite the master's SCAN cursor into the proxy cursor; when that
    /// master is done before `want` keys were found, go on to the next
    /// one, carrying the keys found so far (so a small keyspace is
    /// returned by one call, as by one server).
    Scan {
        node: usize,
        nodes: usize,
        want: usize,
        carried: Option<Box<keyspace::Carried>>,
    },
    /// On a nil reply, ask the next master (`tried` so far of `nodes`,
    /// starting at master number `start`).
    RandomKey {
        tried: usize,
        nodes: usize,
        start: usize,
    },
    /// On `NOSCRIPT`, send this script's body and retry.
    EvalSha(Bytes),
    /// A script's body sent to a node (`EVAL`, `SCRIPT LOAD`): on a
    /// compile error, the proxy forgets it, as the node did not take it.
    Eval(Bytes),
    /// On `Function not found`, load the libraries the proxy knows and
    /// retry.
    Fcall,
    /// The write of a cross-slot `PFMERGE` or `BITOP` computed in the
    /// proxy (the commands after it wait for its reply); with a length,
    /// a reply that is not an error becomes that integer (`BITOP`).
    Write(Option<i64>),
}

/// A command sent to one node, kept for redirections and retries.
#[derive(Debug)]
pub(super) struct Sent {
    pub(super) payload: Bytes,
    /// The slot it was routed by; `None` for keyless commands.
    pub(super) slot: Option<u16>,
    /// The node it went to, for keyless commands (retries go there again).
    pub(super) node: Option<Arc<str>>,
    pub(super) via: Via,
    pub(super) skip: u32,
    pub(super) attempts: u8,
    pub(super) post: Post,
    /// Whether the command only reads (may be retried after a lost reply).
    pub(super) readonly: bool,
    /// Set at the first retry: give up after this.
    pub(super) retry_until: Option<std::time::Instant>,
    /// Send to a replica of the slot's shard (`read_from`).
    pub(super) replica: bool,
    /// Keyless but bound to its node (a fan-out part, a SCAN step): a
    /// retry goes to the same node rather than to any master.
    pub(super) sticky: bool,
    /// For a keyless retry: which master (round-robin) to try next.
    pub(super) post_retry_master: usize,
    /// A read tracked for the client (`CLIENT TRACKING`): sent again, it
    /// goes untracked, so the client is then told to flush its cache.
    pub(super) tracked: bool,
    /// The bytes and replies of the `SCRIPT LOAD`/`FUNCTION LOAD`s put
    /// before the command for the node that lacked them (see `decide`);
    /// taken off again when the command is redirected elsewhere.
    pub(super) loads: Option<(usize, u32)>,
}

impl Sent {
    /// Takes off the loads put before the command (it goes to another
    /// node, which may have what it needs, and `ASKING` must come right
    /// before the command itself).
    pub(super) fn drop_loads(&mut self) {
        if let Some((bytes, replies)) = self.loads.take() {
            self.payload = self.payload.slice(bytes.min(self.payload.len())..);
            self.skip = self.skip.saturating_sub(replies);
        }
    }

    pub(super) fn to_slot(payload: Bytes, slot: u16) -> Self {
        Sent {
            payload,
            slot: Some(slot),
            node: None,
            via: Via::Shared,
            skip: 0,
            attempts: 0,
            post: Post::None,
            readonly: false,
            retry_until: None,
            replica: false,
            sticky: false,
            post_retry_master: 0,
            tracked: false,
            loads: None,
        }
    }

    pub(super) fn to_node(payload: Bytes, node: Arc<str>) -> Self {
        Sent {
            slot: None,
            node: Some(node),
            ..Sent::to_slot(payload, 0)
        }
    }

    /// Whether its reply comes as soon as the server runs it: not a
    /// blocking command, nor one waiting to be retried.
    pub(super) fn answers_soon(&self) -> bool {
        !matches!(self.via, Via::Blocking) && self.retry_until.is_none()
    }

    pub(super) fn target(&self) -> Target {
        match (self.slot, &self.node) {
            (Some(slot), _) if self.replica => Target::Replica(slot),
            (Some(slot), _) => Target::Slot(slot),
            (None, Some(node)) => Target::Addr(node.to_string()),
            (None, None) => Target::NthMaster(self.post_retry_master),
        }
    }
}

#[derive(Debug)]
pub(super) enum MergeKind {
    Split(SplitKind),
    /// `PFMERGE` or `BITOP` across slots, first step: the keys read, then
    /// the result computed and written to the destination's master.
    Write {
        kind: SplitKind,
        dest: Bytes,
        slot: u16,
        /// `WEIGHTS`/`AGGREGATE` of a sorted-set store, or Redis's error
        /// for them (given after the sources' errors).
        options: Option<Result<crate::zset::ZOptions, &'static str>>,
    },
    Fanout(Fanout),
    /// `SCRIPT EXISTS`: true where every master has the script or the
    /// proxy knows its body (one flag per SHA1).
    ScriptExists(Vec<bool>),
    /// Per-slot `EXEC` replies reassembled in the client's order.
    Tx(Box<TxPlan>),
}

#[derive(Debug)]
pub(super) struct Part {
    pub(super) sent: Sent,
    pub(super) positions: split::Positions,
    pub(super) reply: Option<Bytes>,
    /// Parts, from this one on, whose sub-commands were sent as one
    /// request and are answered by one reply of that many frames (1: its
    /// reply is its own).
    pub(super) group: u32,
}

#[derive(Debug)]
pub(super) struct Multi {
    pub(super) kind: MergeKind,
    pub(super) name: &'static str,
    pub(super) parts: Vec<Part>,
    pub(super) remaining: usize,
    pub(super) total_keys: usize,
}

/// One command's place in the reply order, with what metrics need.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) state: Pending,
    /// A client pattern that key names in the reply must match (co-location).
    pub(super) filter: Option<Bytes>,
    pub(super) name: &'static str,
    /// Position in the command table (metrics).
    pub(super) index: Option<u16>,
    /// Index into [`m::CLASSES`].
    pub(super) class: usize,
    pub(super) started: std::time::Instant,
    /// The input batch it came in (see [`Core::batch`]).
    pub(super) batch: u32,
    /// Not written to the client (`CLIENT REPLY OFF` or `SKIP`).
    pub(super) silent: bool,
}

#[derive(Debug)]
pub(super) enum Pending {
    Ready(Bytes),
    /// Reply, then close the connection (`QUIT`, protocol errors).
    Close(Bytes),
    Single(Sent),
    Multi(Box<Multi>),
}

/// What to do after a reply arrived for a sent command.
pub(super) enum Next {
    Done(Bytes),
    Resend {
        to: Target,
        asking: bool,
        delay: bool,
    },
}

/// A backend request that could not be queued at once (see [`Core::send`]).
pub(super) enum Later {
    /// The connection's queue is full: wait for room.
    Conn(BackendConn, BackendRequest),
    /// The slot has no known owner: wait for the map to name one.
    Owner(u16, Via, BackendRequest),
}

/// A command to send again after its reply (see [`Core::on_reply`]).
pub(super) struct Resend {
    pub(super) to: Target,
    pub(super) payload: Bytes,
    pub(super) asking: bool,
    pub(super) via: Via,
    pub(super) skip: u32,
    pub(super) seq: u64,
    pub(super) part: u32,
}

#[derive(Debug, Clone)]
pub(super) enum Target {
    Slot(u16),
    Addr(String),
    /// Master number n (modulo their count), in map order.
    NthMaster(usize),
    /// A replica of the slot's shard, or its master when it has none.
    Replica(u16),
}

/// Pipelined commands for one node's shared connection, waiting for the
/// end of the input batch.
pub(super) struct Staged {
    pub(super) pool: Arc<NodePool>,
    /// The first command, as read (not copied while it is alone).
    pub(super) first: Bytes,
    pub(super) first_seq: u64,
    /// All of them, once there are several.
    pub(super) payload: BytesMut,
    pub(super) seqs: Vec<u64>,
}

/// The `part` of a reply to several pipelined commands (its `seq` is then
/// the group's id in [`Core::groups`]).
pub(super) const PIPELINE_GROUP: u32 = u32::MAX;

/// Room made for this many commands when a node's staging starts.
pub(super) const STAGED_COMMANDS: usize = 8;

/// Larger commands are not staged (a copy of a large value would cost
/// more than the request it saves); they leave alone, after the staged ones.
pub(super) const STAGE_MAX: usize = 4096;
