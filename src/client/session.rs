//! One client connection: read commands, route them, send them to the
//! backends, and write the replies back in request order.
//!
//! Every command gets a sequence number and a slot in the `pending` queue.
//! Backend replies come back on one channel per client, tagged with that
//! number (and a part index for split or fanned-out commands); the session
//! fills the slot, handles redirections, merges parts, and writes every
//! reply at the head of the queue that is complete, in one write per batch.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::connection::Resting;
use super::durability;
use super::keyspace;
use super::local::{self, ClientState, LocalOutcome, ReplyMode};
use super::owed::{Change, Set, Verdict};
use super::pubsub::{self as subs, PubSubState, GLOBAL, MONITOR};
use super::registry::ClientInfo;
use super::retry::{classify, redirect_addr, Outcome};
use super::transaction::{Loc, Pinned, Queued, TxPlan, TxState, EXECABORT};
use crate::backend::pubsub::PubSubEvent;
use crate::backend::{
    reply_channel, BackendConn, BackendRequest, NodePool, Reply, ReplyReceiver, ReplySender,
    ReplyStatus, ReplyTo,
};
use crate::cluster::slot::slot as slot_of;
use crate::cluster::topology::SlotMap;
use crate::colocate::rewrite::{self, Rewritten};
use crate::command::keys::Args;
use crate::command::route::{
    cross_slot, route, CommandView, Fanout, Local, Route, Scratch, SplitKind, SubCmd, TxCmd,
    PUBSUB_HOME_SLOT,
};
use crate::config::{ReadFrom, TxMode};
use crate::metrics as m;
use crate::protocol::reply::{self, Proto};
use crate::protocol::request::{Parsed, RequestLimits, RequestParser};
use crate::protocol::scan::{children, reply_kind, FrameScanner, ReplyKind};
use crate::server::Context;
use crate::{info, merge, split};
use tokio::sync::broadcast;

const READ_CHUNK: usize = 16 * 1024;
/// Once this many reply bytes wait for a client, no new commands are read
/// from it (back-pressure for slow readers).
const OUTPUT_BACKPRESSURE: usize = 1024 * 1024;
/// Output buffers above this are released after a write instead of reused.
const KEEP_WRITE_BUFFER: usize = 1024 * 1024;
/// Replies of an unfinished batch are held back (see
/// [`Core::holds_output`]) only while they are fewer bytes than this.
const HOLD_OUTPUT: usize = 64 * 1024;
/// Splits of more keys than this run on the blocking pool.
const BIG_SPLIT: usize = 4096;
/// Back-off between retries of a command that was not executed (failed
/// connect, `TRYAGAIN`, `CLUSTERDOWN` during a failover).
const RETRY_DELAY: Duration = Duration::from_millis(50);

/// Ready once the proxy drains (unless the session is `closing` already)
/// or `CLIENT KILL` chose this client ([`Turn::Drain`]), or, for a
/// `tracking` client, when the tracker has invalidations for it
/// ([`Turn::Notice`]; a late one for a client that stopped tracking is
/// cleared when it rests). The task's waker was registered when the
/// session became active (see `connection::serve`; a notice wakes it
/// without taking it), so nothing is registered here: two atomic loads
/// per loop turn.
fn interrupted<'a>(
    ctx: &'a Context,
    info: &'a ClientInfo,
    closing: bool,
    tracking: bool,
) -> impl std::future::Future<Output = Turn> + 'a {
    std::future::poll_fn(move |_| {
        if tracking && info.has_notice() && info.take_notice() {
            return std::task::Poll::Ready(Turn::Notice);
        }
        if (!closing && ctx.is_draining()) || info.is_killed() {
            std::task::Poll::Ready(Turn::Drain)
        } else {
            std::task::Poll::Pending
        }
    })
}

/// What woke the session loop (see [`Session::serve_active`]).
enum Turn {
    Drain,
    Notice,
    Wrote(std::io::Result<usize>),
    Replies(Reply),
    Read(std::io::Result<usize>),
    PubSub(u32, PubSubEvent),
    Timer,
}

/// Both ends of a session's reply channel.
type ReplyChannel = (ReplySender, ReplyReceiver);

/// How [`Session::serve_active`] ended.
pub(super) enum Exit {
    /// The connection is done.
    Closed,
    /// The client went quiet: wait for its next bytes with a small state.
    Park,
}

/// How long a client must be quiet (nothing in flight or unwritten) before
/// its session drops its active state.
const PARK_AFTER: Duration = Duration::from_millis(250);

/// The longest a client that keeps coming back must be quiet before its
/// session parks. From the second time in a row the parking timer finds
/// the client was active after all, the quiet time asked for doubles up
/// to this, so a client with a request every few hundred milliseconds
/// does not cost a wake-up of its session for nearly every request. (The
/// first early firing is the usual one: the timer is set when the session
/// wakes, before its command and reply count as activity.)
const PARK_AFTER_BUSY: Duration = Duration::from_secs(2);

/// Which connection a command travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// The node's shared pipelined connection.
    Shared,
    /// A private connection for one blocking command.
    Blocking,
    /// The client's pinned `WATCH` connection.
    Pinned,
}

/// Work to do on a reply before it reaches the client.
#[derive(Debug, Clone)]
enum Post {
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
    /// On `NOSCRIPT`, load this script's body and retry.
    EvalSha(Bytes),
    /// On `Function not found`, load the libraries the proxy knows and
    /// retry.
    Fcall,
}

/// A command sent to one node, kept for redirections and retries.
#[derive(Debug)]
struct Sent {
    payload: Bytes,
    /// The slot it was routed by; `None` for keyless commands.
    slot: Option<u16>,
    /// The node it went to, for keyless commands (retries go there again).
    node: Option<Arc<str>>,
    via: Via,
    skip: u32,
    attempts: u8,
    post: Post,
    /// Whether the command only reads (may be retried after a lost reply).
    readonly: bool,
    /// Set at the first retry: give up after this.
    retry_until: Option<std::time::Instant>,
    /// Send to a replica of the slot's shard (`read_from`).
    replica: bool,
    /// Keyless but bound to its node (a fan-out part, a SCAN step): a
    /// retry goes to the same node rather than to any master.
    sticky: bool,
    /// For a keyless retry: which master (round-robin) to try next.
    post_retry_master: usize,
    /// A read tracked for the client (`CLIENT TRACKING`): sent again, it
    /// goes untracked, so the client is then told to flush its cache.
    tracked: bool,
    /// The bytes and replies of the `SCRIPT LOAD`/`FUNCTION LOAD`s put
    /// before the command for the node that lacked them (see `decide`);
    /// taken off again when the command is redirected elsewhere.
    loads: Option<(usize, u32)>,
}

impl Sent {
    /// Takes off the loads put before the command (it goes to another
    /// node, which may have what it needs, and `ASKING` must come right
    /// before the command itself).
    fn drop_loads(&mut self) {
        if let Some((bytes, replies)) = self.loads.take() {
            self.payload = self.payload.slice(bytes.min(self.payload.len())..);
            self.skip = self.skip.saturating_sub(replies);
        }
    }

    fn to_slot(payload: Bytes, slot: u16) -> Self {
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

    fn to_node(payload: Bytes, node: Arc<str>) -> Self {
        Sent {
            slot: None,
            node: Some(node),
            ..Sent::to_slot(payload, 0)
        }
    }

    /// Whether its reply comes as soon as the server runs it: not a
    /// blocking command, nor one waiting to be retried.
    fn answers_soon(&self) -> bool {
        !matches!(self.via, Via::Blocking) && self.retry_until.is_none()
    }

    fn target(&self) -> Target {
        match (self.slot, &self.node) {
            (Some(slot), _) if self.replica => Target::Replica(slot),
            (Some(slot), _) => Target::Slot(slot),
            (None, Some(node)) => Target::Addr(node.to_string()),
            (None, None) => Target::NthMaster(self.post_retry_master),
        }
    }
}

#[derive(Debug)]
enum MergeKind {
    Split(SplitKind),
    Fanout(Fanout),
    /// `SCRIPT EXISTS`: true where every master has the script or the
    /// proxy knows its body (one flag per SHA1).
    ScriptExists(Vec<bool>),
    /// Per-slot `EXEC` replies reassembled in the client's order.
    Tx(Box<TxPlan>),
}

#[derive(Debug)]
struct Part {
    sent: Sent,
    positions: split::Positions,
    reply: Option<Bytes>,
    /// Parts, from this one on, whose sub-commands were sent as one
    /// request and are answered by one reply of that many frames (1: its
    /// reply is its own).
    group: u32,
}

#[derive(Debug)]
struct Multi {
    kind: MergeKind,
    name: &'static str,
    parts: Vec<Part>,
    remaining: usize,
    total_keys: usize,
}

/// One command's place in the reply order, with what metrics need.
#[derive(Debug)]
struct Slot {
    state: Pending,
    /// A client pattern that key names in the reply must match (co-location).
    filter: Option<Bytes>,
    name: &'static str,
    /// Position in the command table (metrics).
    index: Option<u16>,
    /// Index into [`m::CLASSES`].
    class: usize,
    started: std::time::Instant,
    /// The input batch it came in (see [`Core::batch`]).
    batch: u32,
    /// Not written to the client (`CLIENT REPLY OFF` or `SKIP`).
    silent: bool,
}

#[derive(Debug)]
enum Pending {
    Ready(Bytes),
    /// Reply, then close the connection (`QUIT`, protocol errors).
    Close(Bytes),
    Single(Sent),
    Multi(Box<Multi>),
}

/// What to do after a reply arrived for a sent command.
enum Next {
    Done(Bytes),
    Resend {
        to: Target,
        asking: bool,
        delay: bool,
    },
}

/// A backend request that could not be queued at once (see [`Core::send`]).
enum Later {
    /// The connection's queue is full: wait for room.
    Conn(BackendConn, BackendRequest),
    /// The slot has no known owner: wait for the map to name one.
    Owner(u16, Via, BackendRequest),
}

/// A command to send again after its reply (see [`Core::on_reply`]).
struct Resend {
    to: Target,
    payload: Bytes,
    asking: bool,
    via: Via,
    skip: u32,
    seq: u64,
    part: u32,
}

#[derive(Debug, Clone)]
enum Target {
    Slot(u16),
    Addr(String),
    /// Master number n (modulo their count), in map order.
    NthMaster(usize),
    /// A replica of the slot's shard, or its master when it has none.
    Replica(u16),
}

/// Pipelined commands for one node's shared connection, waiting for the
/// end of the input batch.
struct Staged {
    pool: Arc<NodePool>,
    /// The first command, as read (not copied while it is alone).
    first: Bytes,
    first_seq: u64,
    /// All of them, once there are several.
    payload: BytesMut,
    seqs: Vec<u64>,
}

/// The `part` of a reply to several pipelined commands (its `seq` is then
/// the group's id in [`Core::groups`]).
const PIPELINE_GROUP: u32 = u32::MAX;

/// Room made for this many commands when a node's staging starts.
const STAGED_COMMANDS: usize = 8;

/// Larger commands are not staged (a copy of a large value would cost
/// more than the request it saves); they leave alone, after the staged ones.
const STAGE_MAX: usize = 4096;

pub(super) struct Session {
    parser: RequestParser,
    core: Core,
}

struct Core {
    ctx: Arc<Context>,
    /// The configuration as of [`Core::config_version`], refreshed once per
    /// turn of the session loop (reading the shared one per command cost
    /// several atomic operations each time).
    config: Arc<crate::config::Config>,
    config_version: u64,
    client: ClientState,
    scratch: Scratch,
    pending: VecDeque<Slot>,
    /// Name, table index, class and start time of the command being handled.
    current: (&'static str, Option<u16>, usize, std::time::Instant),
    /// When the current batch of commands was read (one clock read per batch).
    batch_started: std::time::Instant,
    /// Numbers the input batches: the commands of one read, together with
    /// the rest of a command or pipeline that read cut short.
    batch: u32,
    /// The last read ended inside a batch: the next one continues it.
    batch_open: bool,
    /// Key-name filter for the command being handled (co-location).
    filter: Option<Bytes>,

    base_seq: u64,
    /// Where backends deliver replies; created on first use and dropped
    /// when the session parks (an idle client holds no channel).
    replies: std::sync::OnceLock<ReplyChannel>,
    closing: bool,
    multi: Option<TxState>,
    pinned: Option<Pinned>,
    pubsub: Option<Box<PubSubState>>,
    /// Out-of-band frames (published messages) waiting to be written.
    oob: BytesMut,
    /// Set while an input batch is being read: plain single-slot commands
    /// are then staged per node and sent as one request per node when the
    /// batch ends (see [`Core::flush_staged`]).
    staging: bool,
    staged: Vec<Staged>,
    /// Requests of several pipelined commands awaiting their reply: the
    /// group's id and its commands' reply numbers, in order.
    groups: Vec<(u64, Vec<u64>)>,
    next_group: u64,
    /// The batch (see [`Core::batch`]) of the replies collected for
    /// writing and not yet written, while they all belong to one.
    out_batch: Option<u32>,
    /// The unwritten output holds more than one batch, or other frames.
    out_mixed: bool,
    /// The command being handled is a read tracked for the client (see
    /// [`crate::tracking`]): its backend requests carry `caching`.
    track: bool,
    /// The command being handled reads what the client tracks, on a path
    /// that cannot carry `caching` (a blocking read): the client flushes
    /// its cache once the reply is in.
    untracked_read: bool,
    /// Whether the transaction `MULTI` starts is tracked.
    track_tx: bool,
    /// One past the reply number of the newest command that read for the
    /// client's cache (0: none yet): invalidations go after its reply.
    last_tracked: u64,
    /// Invalidation pushes to write right after the reply numbered so.
    notices_after: VecDeque<(u64, Bytes)>,
}

impl Session {
    /// A session for a client known as `client`, whose next command gets
    /// reply number `base_seq`.
    pub(super) fn with_client(ctx: Arc<Context>, client: ClientState, base_seq: u64) -> Self {
        Session {
            parser: {
                let config = ctx.config();
                RequestParser::new(RequestLimits {
                    max_bulk_len: config.limits.max_bulk_len,
                    max_args: config.limits.max_args,
                })
            },
            core: Core {
                config_version: ctx.config_version(),
                config: ctx.config_snapshot(),
                client,
                ctx,
                scratch: Scratch::default(),
                pending: VecDeque::new(),
                current: ("", None, 0, std::time::Instant::now()),
                batch_started: std::time::Instant::now(),
                batch: 0,
                batch_open: false,
                filter: None,
                base_seq,
                replies: std::sync::OnceLock::new(),
                closing: false,
                multi: None,
                pinned: None,
                pubsub: None,
                oob: BytesMut::new(),
                out_batch: None,
                out_mixed: false,
                staging: false,
                staged: Vec::new(),
                groups: Vec::new(),
                next_group: 0,
                track: false,
                untracked_read: false,
                track_tx: false,
                last_tracked: 0,
                notices_after: VecDeque::new(),
            },
        }
    }

    /// Who the client is.
    pub(super) fn info(&self) -> &ClientInfo {
        &self.core.client.info
    }

    /// Whether the client has `CLIENT TRACKING` on.
    pub(super) fn tracking(&self) -> bool {
        self.core.client.tracking.on
    }

    /// Commands read and not yet answered.
    pub(super) fn in_flight(&self) -> usize {
        self.core.pending.len()
    }

    /// Reads no more commands: the connection closes once the replies of
    /// those already read are written (draining).
    pub(super) fn close_after_replies(&mut self) {
        self.core.closing = true;
    }

    /// Puts a quiet session to rest (see [`Resting`]).
    pub(super) fn rest(mut self: Box<Self>) -> Resting {
        let core = &self.core;
        let plain = core.multi.is_none()
            && core.pinned.is_none()
            && core.pubsub.is_none()
            && core.pending.is_empty()
            && !core.closing;
        if plain {
            let session = *self;
            return Resting::Compact(session.core.client, session.core.base_seq);
        }
        self.release_memory();
        Resting::Whole(self)
    }

    /// Drops what a quiet client does not need until its next command:
    /// the reply channel and the buffers kept between commands.
    fn release_memory(&mut self) {
        self.core.replies.take();
        self.core.groups = Vec::new();
        self.core.pending = VecDeque::new();
        self.core.scratch.keys = Vec::new();
        self.core.oob = BytesMut::new();
        self.parser.release_memory();
    }

    /// Serves an active client: reads and dispatches commands, collects
    /// replies in order and writes them as the client accepts them.
    /// Writing never blocks the rest: while a slow client does not read,
    /// replies keep being collected (and no new commands are read once a
    /// megabyte waits), and the client is disconnected when its unwritten
    /// replies pass the output buffer limit or it reads nothing for the
    /// write timeout. Returns [`Exit::Park`] once the client has been quiet
    /// for [`PARK_AFTER`] with nothing in flight (see
    /// `client::connection`, which then waits with a small state).
    pub(super) async fn serve_active<R, W>(
        &mut self,
        rd: &mut R,
        wr: &mut W,
        rbuf: &mut BytesMut,
        last_active: &mut tokio::time::Instant,
    ) -> std::io::Result<Exit>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut wbuf = BytesMut::new();
        let mut last_write = tokio::time::Instant::now();
        let mut held = false;
        // One timer for the write timeout, the idle timeout and parking,
        // moved only when it fires or must fire sooner: registering a fresh
        // timer for every command would cost more than the command.
        let timer = tokio::time::sleep_until(*last_active + PARK_AFTER);
        tokio::pin!(timer);
        let mut park_after = PARK_AFTER;
        let mut fired_early = false;
        loop {
            self.core.refresh_config();
            let limits = &self.core.config.limits;
            let (max_pipeline, output_limit, idle, write_timeout) = (
                limits.max_pipeline,
                limits.client_output_buffer_limit,
                Duration::from_millis(limits.client_idle_timeout_ms),
                Duration::from_millis(limits.client_write_timeout_ms),
            );
            let waiting = if rbuf.is_empty() {
                false
            } else {
                let waiting = self.process_input(rbuf, max_pipeline).await;
                self.core.batch_open = !rbuf.is_empty();
                waiting
            };
            self.core.collect_ready(&mut wbuf);
            if wbuf.len() > output_limit {
                tracing::warn!(client = %self.core.client.info.peer, bytes = wbuf.len(), "client output buffer limit reached; disconnecting the client");
                metrics::counter!(m::SLOW_CLIENT_DISCONNECTS).increment(1);
                return Ok(Exit::Closed);
            }
            if self.core.closing && self.core.pending.is_empty() && wbuf.is_empty() {
                let _ = wr.shutdown().await;
                return Ok(Exit::Closed);
            }
            if waiting && self.core.pending.is_empty() && !self.core.confirming() {
                // A subscription command waited for earlier replies, which
                // are now queued for writing: run it now.
                continue;
            }
            let hold = wbuf.len() < HOLD_OUTPUT && self.core.holds_output();
            if held && !hold {
                // The write timeout counts from when the replies could go.
                last_write = tokio::time::Instant::now();
            }
            held = hold;
            let writable = !wbuf.is_empty() && !hold;
            // A command that waits (for earlier replies or confirmations)
            // stops reading once a megabyte is buffered behind it.
            let can_read = !self.core.closing
                && self.core.pending.len() < max_pipeline
                && wbuf.len() < OUTPUT_BACKPRESSURE
                && !(waiting && rbuf.len() >= OUTPUT_BACKPRESSURE);
            if can_read && !rbuf.is_empty() && rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
                // A command arrives in pieces or a pipeline streams in.
                rbuf.reserve(READ_CHUNK.max(rbuf.len()));
            } else if rbuf.is_empty() && rbuf.capacity() > 4 * READ_CHUNK {
                // Give a large buffer back once the burst is over.
                *rbuf = BytesMut::new();
            }
            let quiet = self.core.pending.is_empty()
                && wbuf.is_empty()
                && !self
                    .core
                    .pubsub
                    .as_ref()
                    .is_some_and(|p| p.active() || p.monitoring);
            let idle_check = quiet && !idle.is_zero();
            let parkable = quiet
                && rbuf.is_empty()
                && self.core.oob.is_empty()
                && !waiting
                && !self.core.confirming();
            let last_activity = *last_active;
            // The earliest of the timeouts that apply (parking, after
            // 250 ms, usually comes first).
            let mut deadline = None;
            // The write timeout counts from the last write (or from when
            // held replies could go), which may be later than the last
            // activity: counted from that, a passed deadline would fire
            // again at once.
            for (applies, at) in [
                (parkable, last_activity + park_after),
                (writable, last_write + write_timeout),
                (idle_check, last_activity + idle),
            ] {
                if applies && deadline.is_none_or(|d| at < d) {
                    deadline = Some(at);
                }
            }
            let confirm_by = self.core.pubsub.as_ref().and_then(|p| p.confirm_by);
            if let Some(by) = confirm_by.filter(|_| self.core.confirming()) {
                if deadline.is_none_or(|d| by < d) {
                    deadline = Some(by);
                }
            }
            if let Some(d) = deadline {
                if timer.deadline() > d {
                    timer.as_mut().reset(d);
                }
            }
            // Without subscriptions, in a fixed order, which costs less
            // than tokio's random one: draining first (one atomic load),
            // replies before new commands, the timer last. None starves
            // another: reading stops at the pipeline and output limits,
            // replies stop when nothing is in flight. A subscribed client's
            // messages keep coming whatever it does, so its session keeps
            // the random order, in which reading, messages and the timer
            // all get their turn.
            let tracking = self.core.client.tracking.on;
            let turn = if self.core.pubsub.is_none() {
                tokio::select! {
                    biased;
                    turn = interrupted(&self.core.ctx, &self.core.client.info, self.core.closing, tracking) => turn,
                    n = wr.write_buf(&mut wbuf), if writable => Turn::Wrote(n),
                    Some(first) = next_reply(&mut self.core.replies) => Turn::Replies(first),
                    n = rd.read_buf(rbuf), if can_read => Turn::Read(n),
                    _ = &mut timer, if deadline.is_some() => Turn::Timer,
                }
            } else {
                tokio::select! {
                    turn = interrupted(&self.core.ctx, &self.core.client.info, self.core.closing, tracking) => turn,
                    n = wr.write_buf(&mut wbuf), if writable => Turn::Wrote(n),
                    Some(first) = next_reply(&mut self.core.replies) => Turn::Replies(first),
                    n = rd.read_buf(rbuf), if can_read => Turn::Read(n),
                    Some((id, event)) = next_pubsub_event(&mut self.core.pubsub) => Turn::PubSub(id, event),
                    _ = &mut timer, if deadline.is_some() => Turn::Timer,
                }
            };
            match turn {
                Turn::Drain if self.core.client.info.is_killed() => {
                    tracing::debug!(client = %self.core.client.info.peer, "closed by CLIENT KILL");
                    return Ok(Exit::Closed);
                }
                Turn::Drain => {
                    // Draining: finish what was read, then close.
                    self.core.closing = true;
                }
                Turn::Notice => {
                    if let Some(notice) = self.core.ctx.tracker.take(self.core.client.info.id) {
                        self.core.tell(&notice);
                    }
                }
                Turn::Wrote(n) => {
                    let n = n?;
                    if n == 0 {
                        return Ok(Exit::Closed);
                    }
                    last_write = tokio::time::Instant::now();
                    *last_active = last_write;
                    m::count_bytes_out(n);
                    if wbuf.is_empty() {
                        self.core.output_written();
                        // TLS buffers records until flushed; TCP flush is free.
                        wr.flush().await?;
                        if wbuf.capacity() > KEEP_WRITE_BUFFER {
                            wbuf = BytesMut::new();
                        }
                    }
                }
                Turn::Replies(first) => self.core.on_replies(first).await,
                Turn::Read(n) => {
                    let n = n?;
                    if n == 0 {
                        return Ok(Exit::Closed);
                    }
                    *last_active = tokio::time::Instant::now();
                    m::count_bytes_in(n);
                }
                Turn::PubSub(id, event) => self.core.on_pubsub_events(id, event).await,
                Turn::Timer => {
                    let now = tokio::time::Instant::now();
                    if let Some(ps) = self.core.pubsub.as_mut() {
                        if ps.confirming() && ps.confirm_by.is_some_and(|by| by <= now) {
                            // A node that does not answer does not hold
                            // the client's other commands.
                            ps.give_up_confirming();
                        }
                    }
                    if writable && last_write.elapsed() >= write_timeout {
                        tracing::warn!(client = %self.core.client.info.peer, "client reads none of its replies; disconnecting it");
                        metrics::counter!(m::SLOW_CLIENT_DISCONNECTS).increment(1);
                        return Ok(Exit::Closed);
                    }
                    if idle_check && last_activity.elapsed() >= idle {
                        tracing::debug!(client = %self.core.client.info.peer, "idle client timeout");
                        return Ok(Exit::Closed);
                    }
                    if parkable && last_activity.elapsed() >= park_after {
                        return Ok(Exit::Park);
                    }
                    let mut deadline = deadline;
                    if parkable {
                        if fired_early {
                            park_after = (park_after * 2).min(PARK_AFTER_BUSY);
                            let d = last_activity + park_after;
                            deadline = deadline.map(|old| old.max(d));
                        }
                        fired_early = true;
                    }
                    // Fired early (activity since it was set): re-arm it.
                    if let Some(d) = deadline {
                        let now = tokio::time::Instant::now();
                        timer
                            .as_mut()
                            .reset(if d > now { d } else { now + park_after });
                    }
                }
            }
        }
    }

    /// Parses and dispatches every complete command in `rbuf`. Returns true
    /// when a command waits for earlier replies to be written first.
    async fn process_input(&mut self, rbuf: &mut BytesMut, max_pipeline: usize) -> bool {
        if !rbuf.is_empty() {
            self.core.batch_started = std::time::Instant::now();
            if !self.core.batch_open {
                self.core.batch = self.core.batch.wrapping_add(1);
            }
        }
        self.core.staging = true;
        let waiting = loop {
            if self.core.closing || self.core.pending.len() >= max_pipeline {
                break false;
            }
            match self.parser.parse(rbuf) {
                Ok(Parsed::Command(n)) => {
                    let name = self
                        .parser
                        .args()
                        .first()
                        .map(|&(s, e)| &rbuf[s..e])
                        .unwrap_or_default();
                    if self.core.must_wait_for_earlier_replies(name) {
                        break true;
                    }
                    let raw = rbuf.split_to(n).freeze();
                    self.core.handle(raw, self.parser.args()).await;
                }
                Ok(Parsed::Inline(n)) => {
                    let raw = self.parser.take_inline();
                    let name = self
                        .parser
                        .args()
                        .first()
                        .map(|&(s, e)| &raw[s..e])
                        .unwrap_or_default();
                    if self.core.must_wait_for_earlier_replies(name) {
                        break true;
                    }
                    rbuf.advance(n);
                    self.core.handle(raw, self.parser.args()).await;
                }
                Ok(Parsed::Skip(n)) => rbuf.advance(n),
                Ok(Parsed::Incomplete) => break false,
                Err(e) => {
                    let msg = reply::error(&format!("ERR Protocol error: {e}"));
                    self.core.push(Pending::Close(msg));
                    self.core.closing = true;
                    rbuf.clear();
                    break false;
                }
            }
        };
        self.core.staging = false;
        self.core.flush_staged().await;
        waiting
    }
}

impl Core {
    fn next_seq(&self) -> u64 {
        self.base_seq + self.pending.len() as u64
    }

    fn reply_to(&self, seq: u64, part: u32) -> ReplyTo {
        ReplyTo {
            tx: self.replies.get_or_init(reply_channel).0.clone(),
            seq,
            part,
        }
    }

    /// Queues the current command's reply slot.
    fn push(&mut self, state: Pending) {
        let (name, index, class, started) = self.current;
        self.ctx.stats.inflight.fetch_add(1, Ordering::Relaxed);
        let silent = self.client.take_silence();
        self.pending.push_back(Slot {
            state,
            filter: self.filter.take(),
            name,
            index,
            class,
            started,
            batch: self.batch,
            silent,
        });
    }

    fn ready(&mut self, reply: Bytes) {
        self.push(Pending::Ready(reply));
    }

    /// Routes one command and starts it.
    async fn handle(&mut self, raw: Bytes, args: &[(usize, usize)]) {
        self.ctx
            .stats
            .total_commands
            .fetch_add(1, Ordering::Relaxed);
        let mut raw = raw;
        let mut bytes = raw.clone();
        let mut view = CommandView { raw: &bytes, args };
        self.current = ("", None, CLASS_LOCAL, self.batch_started);
        if !self.client.authed && !local::allowed_before_auth(&view) {
            self.ready(Bytes::from_static(b"-NOAUTH Authentication required.\r\n"));
            return;
        }
        let ctx = self.ctx.clone();
        if ctx.monitors.active() {
            ctx.monitors.publish(&self.client.info.peer, &view);
        }
        let rewritten_args;
        let mut script_slot = None;
        if !ctx.rules.is_empty() {
            let mut keys_buf = std::mem::take(&mut self.scratch.keys);
            let outcome = rewrite::rewrite(&ctx.rules, &ctx.scripts, &view, &mut keys_buf);
            self.scratch.keys = keys_buf;
            match outcome {
                Rewritten::Unchanged => {}
                Rewritten::Reply(r) => {
                    // Answered by the proxy: it still ends a CACHING choice.
                    self.client.tracking.caching = false;
                    self.ready(r);
                    return;
                }
                Rewritten::Command {
                    raw: new,
                    args: new_args,
                    filter,
                    slot,
                } => {
                    script_slot = slot;
                    raw = new;
                    bytes = raw.clone();
                    rewritten_args = new_args;
                    self.filter = filter;
                    view = CommandView {
                        raw: &bytes,
                        args: &rewritten_args,
                    };
                }
            }
        }
        let args = view.args;
        if self.client.proto == Proto::Resp2 && self.pubsub.as_ref().is_some_and(|p| p.active()) {
            let name = view.get(0);
            if !subs::allowed_while_subscribed(name) {
                self.ready(subs::not_allowed(name));
                return;
            }
            if name.eq_ignore_ascii_case(b"ping") {
                self.subscribed_ping(raw, &view);
                return;
            }
        }
        let mut route = route(&view, &mut self.scratch);
        if let (Route::AnyMaster, Some(slot)) = (&route, script_slot) {
            // A script without keys whose arguments name a co-located
            // group runs where that group lives.
            route = Route::Slot(slot);
        }
        self.client.info.set_last_cmd(self.scratch.index);
        self.track = false;
        self.untracked_read = false;
        if self.client.tracking.on && !matches!(route, Route::Local(Local::Client)) {
            self.track_read(&route, &view);
        }
        let stage_to = self.stage_target(&route, raw.len());
        if stage_to.is_none() && !self.staged.is_empty() {
            // Anything that is not staged goes after the staged commands.
            self.flush_staged().await;
        }
        self.current = (
            self.scratch.name,
            self.scratch.index,
            class_of(&route, self.multi.is_some()),
            self.batch_started,
        );
        if self.multi.is_some() {
            Box::pin(self.queue_in_multi(route, raw, &view)).await;
            return;
        }
        let seq = self.next_seq();
        // Single-node commands are sent without building a future; the
        // rest is boxed, so that this future stays small: it is created
        // for every command.
        let later = match route {
            Route::Slot(slot) => {
                let mut sent = Sent::to_slot(raw, slot);
                sent.readonly = self.scratch.readonly;
                sent.tracked = self.track;
                sent.replica =
                    sent.readonly && !self.track && self.config.read_from != ReadFrom::Master;
                if is_evalsha(&view) {
                    sent.post = Post::EvalSha(sent.payload.slice(args[1].0..args[1].1));
                } else if is_fcall(&view) {
                    sent.post = Post::Fcall;
                } else if is_eval(&view) {
                    self.ctx
                        .scripts
                        .remember(&sent.payload.slice(args[1].0..args[1].1));
                }
                match stage_to {
                    Some(pool) => {
                        let payload = sent.payload.clone();
                        self.push(Pending::Single(sent));
                        self.stage(pool, payload, seq);
                        None
                    }
                    None => self.start_now(sent, seq),
                }
            }
            Route::Blocking(slot) => {
                let mut sent = Sent::to_slot(raw, slot);
                sent.via = Via::Blocking;
                self.start_now(sent, seq)
            }
            Route::AnyMaster => {
                let Some(node) = self.any_master(seq as usize) else {
                    self.ready(self.no_cluster());
                    return;
                };
                let mut sent = Sent::to_node(raw, node);
                sent.readonly = self.scratch.readonly;
                if is_evalsha(&view) {
                    sent.post = Post::EvalSha(sent.payload.slice(args[1].0..args[1].1));
                } else if is_fcall(&view) {
                    sent.post = Post::Fcall;
                } else if is_eval(&view) {
                    self.ctx
                        .scripts
                        .remember(&sent.payload.slice(args[1].0..args[1].1));
                }
                self.start_now(sent, seq)
            }
            Route::Scan => {
                Box::pin(self.scan(raw, &view, seq)).await;
                None
            }
            Route::RandomKey => {
                let nodes = self.ctx.topology.load().shards().len();
                let Some(node) = self.any_master(seq as usize) else {
                    self.ready(self.no_cluster());
                    return;
                };
                let mut sent = Sent::to_node(raw, node);
                sent.post = Post::RandomKey {
                    tried: 1,
                    nodes,
                    start: seq as usize,
                };
                self.start_now(sent, seq)
            }
            Route::Split(kind) => {
                Box::pin(self.split(kind, &view, seq)).await;
                None
            }
            Route::Fanout(kind) => {
                if is_script_load(&view) {
                    self.ctx.scripts.remember(&raw.slice(args[2].0..args[2].1));
                }
                let name = crate::command::find(&view)
                    .map(|s| s.name)
                    .unwrap_or("fanout");
                let merge = match name {
                    "script|flush" => {
                        self.ctx.scripts.clear();
                        MergeKind::Fanout(kind)
                    }
                    "function|load" if view.len() >= 3 => {
                        let replace = (2..view.len() - 1)
                            .any(|i| view.get(i).eq_ignore_ascii_case(b"replace"));
                        let code = raw.slice(args[view.len() - 1].0..args[view.len() - 1].1);
                        self.ctx
                            .scripts
                            .remember_library(&code, replace, masters(&self.ctx));
                        MergeKind::Fanout(kind)
                    }
                    "function|delete" if view.len() == 3 => {
                        self.ctx.scripts.forget_libraries(Some(view.get(2)));
                        MergeKind::Fanout(kind)
                    }
                    "function|flush" => {
                        self.ctx.scripts.forget_libraries(None);
                        MergeKind::Fanout(kind)
                    }
                    "function|restore"
                        if (3..view.len()).any(|i| view.get(i).eq_ignore_ascii_case(b"flush")) =>
                    {
                        // The nodes' libraries are now the dump's, which
                        // the proxy cannot read.
                        self.ctx.scripts.forget_libraries(None);
                        MergeKind::Fanout(kind)
                    }
                    "config|resetstat" => {
                        // The proxy's own counters in INFO, as on one server.
                        self.ctx.stats.total_commands.store(0, Ordering::Relaxed);
                        self.ctx.stats.total_connections.store(0, Ordering::Relaxed);
                        MergeKind::Fanout(kind)
                    }
                    "script|exists" => {
                        // A script the proxy knows runs on every node (it is
                        // loaded where it is missing), so it exists.
                        let known: Vec<bool> = (2..view.len())
                            .map(|i| self.ctx.scripts.knows(view.get(i)))
                            .collect();
                        if known.iter().all(|&k| k) {
                            self.ready(merge::all_true(&[], &known));
                            return;
                        }
                        MergeKind::ScriptExists(known)
                    }
                    _ => MergeKind::Fanout(kind),
                };
                Box::pin(self.fanout(merge, name, raw, seq)).await;
                None
            }
            Route::Tx(cmd) => {
                Box::pin(self.tx_command(cmd, raw, seq)).await;
                None
            }
            Route::Sub(cmd) => {
                Box::pin(self.subscription(cmd, raw, &view)).await;
                None
            }
            Route::Local(Local::Client)
                if view.len() > 1 && view.get(1).eq_ignore_ascii_case(b"unblock") =>
            {
                match client_unblock(&self.ctx, &view, self.client.info.id) {
                    Ok((addr, cmd)) => {
                        // Only that node knows the id: never another.
                        let mut sent = Sent::to_node(cmd, addr);
                        sent.sticky = true;
                        self.start_now(sent, seq)
                    }
                    Err(reply) => {
                        self.ready(reply);
                        None
                    }
                }
            }
            Route::Local(cmd) => {
                self.local(cmd, &view);
                None
            }
            Route::Reply(b) => {
                self.ready(b);
                None
            }
        };
        if let Some(later) = later {
            Box::pin(self.send_later(later)).await;
        }
        if std::mem::take(&mut self.track) {
            self.last_tracked = self.next_seq();
        }
        if std::mem::take(&mut self.untracked_read) {
            let seq = self.next_seq() - 1;
            self.tell_after(&crate::tracking::Notice::All, Some(seq));
        }
    }

    /// Decides whether the command being handled is a read tracked for
    /// the client (consuming a `CLIENT CACHING` choice), and if so records
    /// its keys with the tracker before it is sent. Tracked are reads of a
    /// RESP3 client routed by their keys, outside transactions (Redis
    /// would push nothing to a RESP2 client that does not redirect).
    fn track_read(&mut self, route: &Route, view: &CommandView<'_>) {
        if let Some(tx) = self.multi.as_mut() {
            // Queued: tracked when the transaction is (decided at MULTI,
            // as Redis applies CLIENT CACHING to the whole transaction).
            // Recorded now, before EXEC sends it: at worst the client hears
            // of a change made before EXEC ran, a cache miss.
            if tx.track && self.scratch.readonly && !self.scratch.keys.is_empty() {
                tx.reads = true;
                let keys = self.scratch.keys.iter().map(|&k| view.get(k));
                self.ctx.tracker.remember(self.client.info.id, keys);
            }
            return;
        }
        let multi = matches!(route, Route::Tx(TxCmd::Multi));
        let wanted = self.client.tracking.tracks(self.scratch.readonly || multi)
            && self.client.proto == Proto::Resp3;
        match route {
            _ if !wanted => {}
            Route::Tx(TxCmd::Multi) => self.track_tx = true,
            Route::Slot(_) | Route::Split(_) => {
                self.track = true;
                let keys = self.scratch.keys.iter().map(|&k| view.get(k));
                self.ctx.tracker.remember(self.client.info.id, keys);
            }
            Route::Blocking(_) => self.untracked_read = true,
            _ => {}
        }
    }

    /// Queues an invalidation push for the client: right after the reply
    /// of its newest read for its cache, if that is still owed (so that no
    /// value read before a change reaches it after the push saying it
    /// changed), else at once, ahead of slower replies (a blocked command).
    fn tell(&mut self, notice: &crate::tracking::Notice) {
        self.tell_after(notice, None);
    }

    /// [`Core::tell`], and not before the reply numbered `after` either
    /// (a blocking read the client could not have tracked: only this
    /// flush waits for it, not later invalidations).
    fn tell_after(&mut self, notice: &crate::tracking::Notice, after: Option<u64>) {
        if self.client.proto != Proto::Resp3 || !self.client.tracking.on {
            return;
        }
        let rules = &self.ctx.rules;
        let frame = crate::tracking::push_frame(notice, |k| rules.decode(k));
        let tracked = (self.last_tracked > self.base_seq).then(|| self.last_tracked - 1);
        match tracked.max(after) {
            Some(seq) => {
                let at = self.notices_after.partition_point(|(s, _)| *s <= seq);
                self.notices_after.insert(at, (seq, frame));
            }
            None => self.oob.extend_from_slice(&frame),
        }
    }

    fn local(&mut self, cmd: Local, view: &CommandView<'_>) {
        let tracking_cmd =
            cmd == Local::Client && view.len() > 2 && view.get(1).eq_ignore_ascii_case(b"tracking");
        if self.client.tracking.on && (cmd == Local::Reset || tracking_cmd) {
            // Invalidations already due come before tracking changes.
            if let Some(notice) = self.ctx.tracker.take(self.client.info.id) {
                self.tell(&notice);
            }
        }
        if cmd == Local::Client && view.len() == 3 && view.get(1).eq_ignore_ascii_case(b"reply") {
            // Its own reply follows the mode it sets: only ON answers.
            let mode = match view.get(2).to_ascii_lowercase().as_slice() {
                b"on" => ReplyMode::On,
                b"off" => ReplyMode::Off,
                b"skip" => ReplyMode::Skip,
                _ => {
                    self.ready(reply::error("ERR syntax error"));
                    return;
                }
            };
            self.client.replies = if mode == ReplyMode::On {
                ReplyMode::On
            } else {
                ReplyMode::Off
            };
            self.ready(Bytes::from_static(reply::OK));
            self.client.replies = mode;
            return;
        }
        if cmd == Local::Reset {
            self.multi = None;
            self.pinned = None;
            self.pubsub = None;
            self.client.info.set_subscribed(false);
        }
        let outcome = local::execute(cmd, view, &mut self.client, &self.ctx);
        match outcome {
            LocalOutcome::Reply(b) => self.ready(b),
            LocalOutcome::Close(b) => {
                self.closing = true;
                self.push(Pending::Close(b));
            }
        }
    }

    /// Whether confirmations of earlier subscription commands may still
    /// be coming.
    fn confirming(&self) -> bool {
        self.pubsub.as_ref().is_some_and(|p| p.confirming())
    }

    /// The address of a master, chosen round-robin by `n`.
    fn any_master(&self, n: usize) -> Option<Arc<str>> {
        let map = self.ctx.topology.load();
        let shards = map.shards();
        shards
            .get(n % shards.len().max(1))
            .map(|s| s.master.addr().clone())
    }

    /// Records a single-target command and sends it.
    async fn start(&mut self, sent: Sent, seq: u64) {
        if let Some(later) = self.start_now(sent, seq) {
            Box::pin(self.send_later(later)).await;
        }
    }

    /// [`Core::start`] without waiting; returns what must wait.
    fn start_now(&mut self, sent: Sent, seq: u64) -> Option<Later> {
        let (target, payload, via, skip) =
            (sent.target(), sent.payload.clone(), sent.via, sent.skip);
        self.push(Pending::Single(sent));
        self.send_now(target, payload, false, via, skip, seq, 0)
    }

    /// The master to stage the command routed as `route` for (see
    /// [`Core::stage`]), if it is a plain command of an input batch: one
    /// slot with a known owner, read from the master, no transaction, no
    /// WAIT policy, and small enough that copying it costs nothing.
    fn stage_target(&self, route: &Route, len: usize) -> Option<Arc<NodePool>> {
        let Route::Slot(slot) = route else {
            return None;
        };
        let plain = self.staging
            && !self.track
            && self.multi.is_none()
            && len <= STAGE_MAX
            && self.config.durability.wait_replicas == 0
            && !(self.scratch.readonly && self.config.read_from != ReadFrom::Master);
        if !plain {
            return None;
        }
        self.ctx.topology.load().master(*slot).cloned()
    }

    /// Holds a plain command for `pool`'s node until the input batch ends.
    fn stage(&mut self, pool: Arc<NodePool>, payload: Bytes, seq: u64) {
        let Some(staged) = self.staged.iter_mut().find(|s| Arc::ptr_eq(&s.pool, &pool)) else {
            self.staged.push(Staged {
                pool,
                first: payload,
                first_seq: seq,
                payload: BytesMut::new(),
                seqs: Vec::new(),
            });
            return;
        };
        if staged.seqs.is_empty() {
            // Sized for a typical pipeline's share, so that staging does
            // not grow them command by command.
            staged
                .payload
                .reserve(staged.first.len() * STAGED_COMMANDS + payload.len());
            staged.payload.extend_from_slice(&staged.first);
            staged.seqs.reserve(STAGED_COMMANDS);
            staged.seqs.push(staged.first_seq);
        }
        staged.payload.extend_from_slice(&payload);
        staged.seqs.push(seq);
    }

    /// Sends the staged commands: one request per node, whose replies come
    /// back together (one command alone is sent as itself).
    async fn flush_staged(&mut self) {
        let waiting = self.flush_now();
        if !waiting.is_empty() {
            // Rare (a full queue): boxed, so the common path stays small.
            Box::pin(self.send_all_later(waiting)).await;
        }
    }

    async fn send_all_later(&self, waiting: Vec<Later>) {
        for later in waiting {
            self.send_later(later).await;
        }
    }

    /// [`Core::flush_staged`] without waiting; returns what must wait.
    fn flush_now(&mut self) -> Vec<Later> {
        let mut waiting = Vec::new();
        if self.staged.is_empty() {
            return waiting;
        }
        let mut staged = std::mem::take(&mut self.staged);
        for s in staged.drain(..) {
            let (payload, replies, reply_to) = if s.seqs.is_empty() {
                (s.first, 1, self.reply_to(s.first_seq, 0))
            } else {
                let id = self.next_group;
                self.next_group = self.next_group.wrapping_add(1);
                let count = s.seqs.len() as u32;
                self.groups.push((id, s.seqs));
                (s.payload.freeze(), count, self.reply_to(id, PIPELINE_GROUP))
            };
            let req = BackendRequest {
                payload,
                asking: false,
                skip: 0,
                then_wait: None,
                caching: false,
                replies,
                reply_to,
            };
            if let Some(later) = self.send_to(&s.pool, Via::Shared, req) {
                waiting.push(later);
            }
        }
        // Keep the allocation for the next batch.
        self.staged = staged;
        waiting
    }

    async fn split(&mut self, kind: SplitKind, view: &CommandView<'_>, seq: u64) {
        let max_keys = self.config.limits.max_keys_per_subcommand;
        let map: Arc<SlotMap> = Arc::clone(&self.ctx.topology.load());
        // Under the WAIT policy every sub-command is followed by its own
        // WAIT, and a tracked one is preceded by CLIENT CACHING YES: each
        // leaves alone.
        let by_node = self.config.durability.wait_replicas == 0 && !self.track;
        let (subs, all) = if self.scratch.keys.len() > BIG_SPLIT {
            // Hashing and regrouping a huge command is CPU work measured in
            // tens of milliseconds: do it off the runtime threads so other
            // clients keep being served.
            let raw = Bytes::copy_from_slice(view.raw);
            let args = view.args.to_vec();
            let keys = self.scratch.keys.clone();
            let slots = self.scratch.slots.clone();
            let work = tokio::task::spawn_blocking(move || {
                let view = CommandView {
                    raw: &raw,
                    args: &args,
                };
                split::split_by_node(kind, &view, &keys, &slots, max_keys, |s| {
                    node_rank(&map, by_node, s)
                })
            });
            match work.await {
                Ok(split) => split,
                Err(_) => {
                    self.ready(reply::error(
                        "ERR slotbridge: internal error while splitting the command",
                    ));
                    return;
                }
            }
        } else {
            let (keys, slots) = (&self.scratch.keys, &self.scratch.slots);
            split::split_by_node(kind, view, keys, slots, max_keys, |s| {
                node_rank(&map, by_node, s)
            })
        };
        // Runs of sub-commands for one node leave as one request, whose
        // replies come back together: (slot, payload, commands, first part).
        let mut sends: Vec<(u16, Bytes, u32, u32)> = Vec::with_capacity(subs.len());
        let mut parts: Vec<Part> = Vec::with_capacity(subs.len());
        let (mut run_start, mut run_offset, mut prev_node) = (0, 0, split::NO_NODE);
        for (i, sub) in subs.into_iter().enumerate() {
            let joins = sub.node != split::NO_NODE && sub.node == prev_node;
            match sends.last_mut() {
                Some((_, payload, count, _)) if joins => {
                    *payload = all.slice(run_offset..sub.offset + sub.payload.len());
                    *count += 1;
                    parts[run_start].group += 1;
                }
                _ => {
                    (run_start, run_offset) = (i, sub.offset);
                    sends.push((sub.slot, sub.payload.clone(), 1, i as u32));
                }
            }
            prev_node = sub.node;
            parts.push(Part {
                sent: Sent {
                    tracked: self.track,
                    ..Sent::to_slot(sub.payload, sub.slot)
                },
                positions: sub.positions,
                reply: None,
                group: 1,
            });
        }
        self.push(Pending::Multi(Box::new(Multi {
            kind: MergeKind::Split(kind),
            // Set by the route that chose to split.
            name: self.scratch.name,
            remaining: parts.len(),
            parts,
            total_keys: self.scratch.keys.len(),
        })));
        for (i, (slot, payload, count, part)) in sends.into_iter().enumerate() {
            if i % 64 == 63 {
                // A huge split must not monopolise a single-threaded runtime.
                tokio::task::yield_now().await;
            }
            if count > 1 {
                self.send_group(slot, payload, count, seq, part).await;
            } else {
                let target = Target::Slot(slot);
                self.send(target, payload, false, Via::Shared, 0, seq, part)
                    .await;
            }
        }
    }

    /// Sends `count` per-slot sub-commands for one node as one request;
    /// their replies come back together, to part `part` (see
    /// [`Core::on_replies`]).
    async fn send_group(&self, slot: u16, payload: Bytes, count: u32, seq: u64, part: u32) {
        let req = BackendRequest {
            payload,
            asking: false,
            skip: 0,
            then_wait: None,
            caching: false,
            replies: count,
            reply_to: self.reply_to(seq, part),
        };
        let owner = self.ctx.topology.load().master(slot).cloned();
        let later = match owner {
            Some(pool) => self.send_to(&pool, Via::Shared, req),
            None => Some(Later::Owner(slot, Via::Shared, req)),
        };
        if let Some(later) = later {
            Box::pin(self.send_later(later)).await;
        }
    }

    async fn fanout(&mut self, kind: MergeKind, name: &'static str, raw: Bytes, seq: u64) {
        let nodes = masters(&self.ctx);
        if nodes.is_empty() {
            self.ready(self.no_cluster());
            return;
        }
        let parts = nodes
            .iter()
            .map(|n| Part {
                sent: Sent {
                    sticky: true,
                    ..Sent::to_node(raw.clone(), n.clone())
                },
                positions: split::Positions::default(),
                reply: None,
                group: 1,
            })
            .collect();
        self.push(Pending::Multi(Box::new(Multi {
            kind,
            name,
            parts,
            remaining: nodes.len(),
            total_keys: 0,
        })));
        for (i, node) in nodes.iter().enumerate() {
            let target = Target::Addr(node.to_string());
            self.send(target, raw.clone(), false, Via::Shared, 0, seq, i as u32)
                .await;
        }
    }

    /// `SCAN cursor [options]`: one master at a time, in address order.
    async fn scan(&mut self, raw: Bytes, view: &CommandView<'_>, seq: u64) {
        let Some(cursor) = std::str::from_utf8(view.get(1))
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            self.ready(reply::error("ERR invalid cursor"));
            return;
        };
        let nodes = scan_masters(&self.ctx);
        let (node, node_cursor) = keyspace::decode_cursor(cursor);
        let Some(addr) = nodes.get(node) else {
            self.ready(Bytes::from_static(b"*2\r\n$1\r\n0\r\n*0\r\n"));
            return;
        };
        let cursor_text = node_cursor.to_string();
        let args = std::iter::once(view.get(0))
            .chain(std::iter::once(cursor_text.as_bytes()))
            .chain((2..view.len()).map(|i| view.get(i)));
        let payload = reply::command(args.collect::<Vec<_>>());
        drop(raw);
        let mut sent = Sent::to_node(payload, addr.clone());
        sent.sticky = true;
        sent.post = Post::Scan {
            node,
            nodes: nodes.len(),
            want: keyspace::scan_count((0..view.len()).map(|i| view.get(i))),
            carried: None,
        };
        self.start(sent, seq).await;
    }

    /// `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH` outside a transaction.
    async fn tx_command(&mut self, cmd: TxCmd, raw: Bytes, seq: u64) {
        match cmd {
            TxCmd::Multi => {
                self.multi = Some(TxState {
                    track: std::mem::take(&mut self.track_tx),
                    ..TxState::default()
                });
                self.ready(Bytes::from_static(reply::OK));
            }
            TxCmd::Exec => self.ready(reply::error("ERR EXEC without MULTI")),
            TxCmd::Discard => self.ready(reply::error("ERR DISCARD without MULTI")),
            TxCmd::Unwatch => {
                self.pinned = None;
                self.ready(Bytes::from_static(reply::OK));
            }
            TxCmd::Watch(slot) => {
                if let Some(p) = &self.pinned {
                    if p.slot != slot {
                        let msg = format!(
                            "CROSSSLOT Keys in request don't hash to the same slot (command 'watch', slots {} and {slot}); all watched keys must be in one slot: use a {{hash tag}}",
                            p.slot
                        );
                        self.ready(reply::error(&msg));
                        return;
                    }
                } else {
                    match self.open_pinned(slot).await {
                        Ok(p) => self.pinned = Some(p),
                        Err(e) => {
                            self.ready(e);
                            return;
                        }
                    }
                }
                let mut sent = Sent::to_slot(raw, slot);
                sent.via = Via::Pinned;
                self.start(sent, seq).await;
            }
        }
    }

    async fn open_pinned(&self, slot: u16) -> Result<Pinned, Bytes> {
        let pool = match self.ctx.topology.load().master(slot).cloned() {
            Some(p) => p,
            None => self
                .wait_for_owner(slot)
                .await
                .ok_or_else(|| self.slot_unserved(slot))?,
        };
        let permit = self
            .ctx
            .blocking
            .clone()
            .try_acquire_owned()
            .map_err(|_| too_many_private())?;
        let opts = self.ctx.topology.conn_options().clone();
        let conn = BackendConn::spawn_dedicated(
            pool.addr().clone(),
            opts,
            self.client.proto,
            permit,
            None,
        );
        Ok(Pinned { conn, slot })
    }

    /// A command while `MULTI` is open: queued, or refused (which makes
    /// `EXEC` abort, as in Redis).
    async fn queue_in_multi(&mut self, route: Route, raw: Bytes, view: &CommandView<'_>) {
        let seq = self.next_seq();
        let name = crate::command::find(view).map(|s| s.name).unwrap_or("?");
        let per_slot = self.ctx.config().transactions == TxMode::PerSlot && self.pinned.is_none();
        let Some(tx) = self.multi.as_mut() else {
            return;
        };
        let slot = match route {
            Route::Tx(TxCmd::Exec) => {
                self.exec(seq).await;
                return;
            }
            Route::Tx(TxCmd::Discard) => {
                self.multi = None;
                self.pinned = None;
                self.ready(Bytes::from_static(reply::OK));
                return;
            }
            Route::Tx(TxCmd::Multi) => {
                self.ready(reply::error("ERR MULTI calls can not be nested"));
                return;
            }
            Route::Tx(TxCmd::Watch(_)) => {
                self.ready(reply::error("ERR WATCH inside MULTI is not allowed"));
                return;
            }
            Route::Local(cmd @ (Local::Quit | Local::Reset)) => {
                self.local(cmd, view);
                return;
            }
            // A cluster delivers a PUBLISH run on any node to every node:
            // it does not tie the transaction to the home slot it is
            // routed by outside one (Celery's result backend sends SET and
            // PUBLISH in one MULTI).
            Route::Slot(_) if name == "publish" => None,
            Route::Slot(s) | Route::Blocking(s) => Some(s),
            Route::AnyMaster
            | Route::Tx(TxCmd::Unwatch)
            | Route::Local(Local::Ping | Local::Echo) => None,
            Route::Reply(err) if err.first() == Some(&b'-') => {
                tx.failed = true;
                self.ready(err);
                return;
            }
            Route::Split(kind) if per_slot => {
                let max_keys = self.ctx.config().limits.max_keys_per_subcommand;
                let subs = split::split(kind, view, &self.scratch.keys, max_keys);
                tx.plan
                    .push(Queued::Split(kind, subs, self.scratch.keys.len()));
                tx.queued.push(raw);
                self.ready(Bytes::from_static(b"+QUEUED\r\n"));
                return;
            }
            Route::Split(_) => {
                tx.failed = true;
                let keys = &self.scratch.keys;
                let a = keys
                    .first()
                    .map(|&k| crate::cluster::slot::slot(view.get(k)))
                    .unwrap_or(0);
                let b = keys
                    .iter()
                    .map(|&k| crate::cluster::slot::slot(view.get(k)))
                    .find(|&s| s != a)
                    .unwrap_or(a);
                self.ready(cross_slot(name, a, b));
                return;
            }
            // A reply the proxy makes (ROLE) has no place in a node's EXEC.
            Route::Reply(_)
            | Route::Local(_)
            | Route::Fanout(_)
            | Route::Scan
            | Route::RandomKey
            | Route::Sub(_) => {
                tx.failed = true;
                let msg =
                    format!("ERR slotbridge: '{name}' cannot be used inside MULTI on a cluster");
                self.ready(reply::error(&msg));
                return;
            }
        };
        let watched = self.pinned.as_ref().map(|p| p.slot);
        if let (Some(s), false) = (slot, per_slot) {
            match tx.slot.or(watched) {
                Some(t) if t != s => {
                    tx.failed = true;
                    let fix = if watched.is_some() {
                        "with WATCH, all keys of a transaction must be in the watched keys' slot: use a {hash tag}"
                    } else {
                        "all keys of a transaction must be in one slot: use a {hash tag} or a [[colocate]] rule, or transactions = \"per_slot\" in slotbridge's configuration (atomic per slot only)"
                    };
                    let msg = format!(
                        "CROSSSLOT Keys in request don't hash to the same slot (command '{name}', slots {t} and {s}); {fix}"
                    );
                    self.ready(reply::error(&msg));
                    return;
                }
                _ => tx.slot = Some(s),
            }
        }
        if is_eval(view) {
            self.ctx
                .scripts
                .remember(&raw.slice(view.args[1].0..view.args[1].1));
        }
        // Inside MULTI a NOSCRIPT cannot be recovered: send a known
        // script's body instead of its SHA1.
        let raw = match (is_evalsha(view), self.ctx.scripts.get(view.get(1))) {
            (true, Some(body)) => {
                let name: &[u8] = if view.get(0).len() > 7 {
                    b"EVAL_RO"
                } else {
                    b"EVAL"
                };
                let args: Vec<&[u8]> = std::iter::once(name)
                    .chain(std::iter::once(&body[..]))
                    .chain((2..view.len()).map(|i| view.get(i)))
                    .collect();
                reply::command(args)
            }
            _ => raw,
        };
        tx.plan.push(Queued::One(slot));
        tx.queued.push(raw);
        self.ready(Bytes::from_static(b"+QUEUED\r\n"));
    }

    async fn exec(&mut self, seq: u64) {
        let Some(tx) = self.multi.take() else {
            return;
        };
        let pinned = self.pinned.take();
        if tx.failed {
            self.ready(Bytes::from_static(EXECABORT));
            return;
        }
        let tracked = tx.track && tx.reads;
        if pinned.is_none() && tx.spans_slots() {
            self.exec_per_slot(&tx, seq).await;
            if tracked {
                // Per-slot blocks carry no CLIENT CACHING: flush after.
                self.last_tracked = seq + 1;
                self.tell(&crate::tracking::Notice::All);
            }
            return;
        }
        let (payload, skip) = tx.block();
        let slot = tx.slot.or(pinned.as_ref().map(|p| p.slot));
        // Without keys, on the Pub/Sub home node: a PUBLISH there counts
        // the proxy's subscribers, as one server would.
        let mut sent = Sent::to_slot(payload, slot.unwrap_or(PUBSUB_HOME_SLOT));
        sent.skip = skip;
        if tracked {
            self.last_tracked = seq + 1;
        }
        match pinned {
            Some(p) => {
                sent.via = Via::Pinned;
                let req = BackendRequest {
                    payload: sent.payload.clone(),
                    asking: false,
                    skip,
                    then_wait: None,
                    caching: false,
                    replies: 1,
                    reply_to: self.reply_to(seq, 0),
                };
                self.push(Pending::Single(sent));
                // Dropping the handle afterwards closes the connection once
                // EXEC has answered, which also clears the watches.
                p.conn.send(req).await;
                if tracked {
                    // Not on a shared connection: no CLIENT CACHING; flush.
                    self.tell(&crate::tracking::Notice::All);
                }
            }
            None => {
                if tracked {
                    // CLIENT CACHING YES before MULTI covers the whole
                    // transaction, as the client's own CACHING did.
                    sent.tracked = true;
                    self.track = true;
                }
                self.start(sent, seq).await;
                self.track = false;
            }
        }
    }

    /// `EXEC` of a per-slot transaction: one `MULTI/EXEC` per slot, sent
    /// at once, replies reassembled in the client's order.
    async fn exec_per_slot(&mut self, tx: &TxState, seq: u64) {
        let (blocks, plan) = tx.per_slot_blocks();
        let mut sends = Vec::with_capacity(blocks.len());
        let parts: Vec<Part> = blocks
            .into_iter()
            .map(|(slot, payload, skip)| {
                // A keyless-only block goes to any master.
                let sent = Sent {
                    slot,
                    skip,
                    ..Sent::to_slot(payload, 0)
                };
                sends.push((sent.target(), sent.payload.clone(), skip));
                Part {
                    sent,
                    positions: split::Positions::default(),
                    reply: None,
                    group: 1,
                }
            })
            .collect();
        self.push(Pending::Multi(Box::new(Multi {
            kind: MergeKind::Tx(Box::new(plan)),
            name: "exec",
            remaining: parts.len(),
            parts,
            total_keys: 0,
        })));
        for (i, (target, payload, skip)) in sends.into_iter().enumerate() {
            self.send(target, payload, false, Via::Shared, skip, seq, i as u32)
                .await;
        }
    }

    /// Sends a command to the owner of a slot (waiting a bounded time for an
    /// unknown owner to be discovered), to a node by address, or to the
    /// client's pinned connection.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        target: Target,
        payload: Bytes,
        asking: bool,
        via: Via,
        skip: u32,
        seq: u64,
        part: u32,
    ) {
        if let Some(later) = self.send_now(target, payload, asking, via, skip, seq, part) {
            // Rare (a full queue, a slot without an owner): boxed, so the
            // common path does not carry this future's state around.
            Box::pin(self.send_later(later)).await;
        }
    }

    /// Sends without waiting when it can; returns what must wait.
    #[allow(clippy::too_many_arguments)]
    fn send_now(
        &self,
        target: Target,
        payload: Bytes,
        asking: bool,
        via: Via,
        skip: u32,
        seq: u64,
        part: u32,
    ) -> Option<Later> {
        let reply_to = self.reply_to(seq, part);
        let mut req = BackendRequest {
            payload,
            asking,
            skip,
            then_wait: None,
            caching: self.track && via == Via::Shared && !asking,
            replies: 1,
            reply_to,
        };
        if via == Via::Pinned {
            match &self.pinned {
                Some(p) => {
                    return p
                        .conn
                        .try_send(req)
                        .err()
                        .map(|req| Later::Conn(p.conn.clone(), req))
                }
                None => req.reply_to.send(
                    reply::error(
                        "ERR slotbridge: the WATCH connection was closed; retry the transaction",
                    ),
                    ReplyStatus::Final,
                ),
            }
            return None;
        }
        let pool = match target {
            Target::Slot(slot) => {
                let (owner, replicas) = {
                    let map = self.ctx.topology.load();
                    (map.master(slot).cloned(), map.replica_count(slot))
                };
                let durability = &self.config.durability;
                if via == Via::Shared && durability.wait_replicas > 0 {
                    req.then_wait = durability::wait_after(durability, replicas, &req.payload);
                }
                match owner {
                    Some(p) => p,
                    None => return Some(Later::Owner(slot, via, req)),
                }
            }
            Target::Addr(addr) => self.ctx.topology.pool(&addr),
            Target::Replica(slot) => {
                let map = self.ctx.topology.load();
                match map.replica(slot, seq as usize).or_else(|| map.master(slot)) {
                    Some(p) => p.clone(),
                    None => {
                        req.reply_to
                            .send(self.slot_unserved(slot), ReplyStatus::Final);
                        return None;
                    }
                }
            }
            Target::NthMaster(n) => match self.any_master(n) {
                Some(addr) => self.ctx.topology.pool(&addr),
                None => {
                    req.reply_to.send(self.no_cluster(), ReplyStatus::Final);
                    return None;
                }
            },
        };
        self.send_to(&pool, via, req)
    }

    /// Queues `req` on a connection to `pool`'s node: its shared one, or a
    /// private one for a blocking command. Returns it when the queue is full.
    fn send_to(&self, pool: &NodePool, via: Via, req: BackendRequest) -> Option<Later> {
        let proto = self.client.proto;
        if via != Via::Blocking {
            // The shared connection is borrowed: a handle is cloned only
            // when the request must wait for room.
            let conn = pool.conn(proto);
            return conn
                .try_send(req)
                .err()
                .map(|req| Later::Conn(conn.clone(), req));
        }
        let Ok(permit) = self.ctx.blocking.clone().try_acquire_owned() else {
            req.reply_to.send(too_many_private(), ReplyStatus::Final);
            return None;
        };
        let opts = self.ctx.topology.conn_options().clone();
        // Its id on the node lets CLIENT UNBLOCK of this client reach it.
        let server_id = Arc::new(std::sync::atomic::AtomicI64::new(0));
        self.client.info.set_blocked(super::registry::BlockedOn {
            addr: pool.addr().clone(),
            server_id: server_id.clone(),
        });
        let conn =
            BackendConn::spawn_dedicated(pool.addr().clone(), opts, proto, permit, Some(server_id));
        conn.try_send(req).err().map(|req| Later::Conn(conn, req))
    }

    /// Finishes a send that had to wait.
    async fn send_later(&self, later: Later) {
        match later {
            Later::Conn(conn, req) => conn.send(req).await,
            Later::Owner(slot, via, req) => match self.wait_for_owner(slot).await {
                Some(pool) => {
                    if let Some(Later::Conn(conn, req)) = self.send_to(&pool, via, req) {
                        conn.send(req).await;
                    }
                }
                None => req
                    .reply_to
                    .send(self.slot_unserved(slot), ReplyStatus::Final),
            },
        }
    }

    async fn wait_for_owner(&self, slot: u16) -> Option<Arc<NodePool>> {
        let topology = &self.ctx.topology;
        let mut versions = topology.subscribe();
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(self.ctx.config().limits.slot_wait_ms);
        loop {
            if let Some(p) = topology.load().master(slot) {
                return Some(p.clone());
            }
            topology.request_refresh();
            if tokio::time::timeout_at(deadline, versions.changed())
                .await
                .is_err()
            {
                return topology.load().master(slot).cloned();
            }
        }
    }

    /// Handles `first` and every other reply already queued.
    async fn on_replies(&mut self, first: Reply) {
        let mut next = Some(first);
        let mut handled = 0u32;
        while let Some(r) = next
            .take()
            .or_else(|| self.replies.get_mut().and_then(|(_, rx)| rx.try_recv()))
        {
            handled += 1;
            if handled.is_multiple_of(256) {
                // Thousands of replies (a huge split) must not keep the
                // other clients of a single-threaded runtime waiting.
                tokio::task::yield_now().await;
            }
            if r.part == PIPELINE_GROUP {
                let Some(at) = self.groups.iter().position(|(id, _)| *id == r.seq) else {
                    continue;
                };
                let (_, seqs) = self.groups.swap_remove(at);
                for ((data, status), seq) in group_frames(&r, seqs.len()).into_iter().zip(seqs) {
                    let each = Reply {
                        seq,
                        part: 0,
                        data,
                        status,
                        ends: Vec::new(),
                    };
                    if let Some(resend) = self.on_reply(each) {
                        Box::pin(self.resend(resend)).await;
                    }
                }
                continue;
            }
            let group = self.take_group(&r);
            if group > 1 {
                for each in split_group_reply(r, group) {
                    if let Some(resend) = self.on_reply(each) {
                        Box::pin(self.resend(resend)).await;
                    }
                }
                continue;
            }
            // Synchronous unless the command must be sent again: the
            // sending future is large, and building it for every reply
            // cost more than handling the reply.
            if let Some(resend) = self.on_reply(r) {
                Box::pin(self.resend(resend)).await;
            }
        }
    }

    async fn resend(&self, r: Resend) {
        self.send(r.to, r.payload, r.asking, r.via, r.skip, r.seq, r.part)
            .await;
    }

    /// How many parts `r` answers: more than 1 for the first reply to
    /// sub-commands sent together (see [`Core::send_group`]); from then on
    /// each of them is answered alone (retries and redirections).
    fn take_group(&mut self, r: &Reply) -> u32 {
        let Some(idx) = r.seq.checked_sub(self.base_seq) else {
            return 1;
        };
        match self.pending.get_mut(idx as usize).map(|s| &mut s.state) {
            Some(Pending::Multi(multi)) => match multi.parts.get_mut(r.part as usize) {
                Some(part) => std::mem::replace(&mut part.group, 1),
                None => 1,
            },
            _ => 1,
        }
    }

    /// Handles a Pub/Sub event and every other one already queued.
    async fn on_pubsub_events(&mut self, id: u32, event: PubSubEvent) {
        self.on_pubsub_event(id, event).await;
        while let Some((id, event)) = self.pubsub.as_mut().and_then(|p| p.events.try_recv().ok()) {
            self.on_pubsub_event(id, event).await;
        }
    }

    /// Handles one reply frame from a backend; returns what to send again
    /// when the command must be retried or redirected now.
    fn on_reply(&mut self, r: Reply) -> Option<Resend> {
        let idx = r.seq.checked_sub(self.base_seq)?;
        let entry = self.pending.get_mut(idx as usize).map(|s| &mut s.state)?;
        let (next, payload, via, skip, tracked) = match entry {
            Pending::Single(sent) => match decide(sent, &r, &self.ctx) {
                Next::Done(data) => {
                    *entry = Pending::Ready(data);
                    return None;
                }
                next => (
                    next,
                    sent.payload.clone(),
                    sent.via,
                    sent.skip,
                    std::mem::take(&mut sent.tracked),
                ),
            },
            Pending::Multi(multi) => {
                let part = multi.parts.get_mut(r.part as usize)?;
                match decide(&mut part.sent, &r, &self.ctx) {
                    Next::Done(data) => {
                        if part.reply.is_none() {
                            part.reply = Some(data);
                            multi.remaining -= 1;
                        }
                        if multi.remaining == 0 {
                            let merged = merge_multi(&self.ctx, self.client.proto, multi);
                            *entry = Pending::Ready(merged);
                        }
                        return None;
                    }
                    next => (
                        next,
                        part.sent.payload.clone(),
                        part.sent.via,
                        part.sent.skip,
                        std::mem::take(&mut part.sent.tracked),
                    ),
                }
            }
            Pending::Ready(_) | Pending::Close(_) => return None,
        };
        let Next::Resend { to, asking, delay } = next else {
            return None;
        };
        if tracked {
            // Sent again untracked (see `track`): the client flushes its
            // cache once the reply is in (once per command).
            self.tell(&crate::tracking::Notice::All);
        }
        if delay {
            // Retry later without holding up this client's other replies.
            let timer = self.reply_to(r.seq, r.part);
            tokio::spawn(async move {
                tokio::time::sleep(RETRY_DELAY).await;
                timer.send(Bytes::new(), ReplyStatus::RetryTimer);
            });
            return None;
        }
        Some(Resend {
            to,
            payload,
            asking,
            via,
            skip,
            seq: r.seq,
            part: r.part,
        })
    }

    /// Moves every complete reply at the head of the queue into `out`.
    fn collect_ready(&mut self, out: &mut BytesMut) {
        let now = match self.pending.front() {
            Some(Slot {
                state: Pending::Ready(_) | Pending::Close(_),
                ..
            }) => std::time::Instant::now(),
            _ => self.batch_started,
        };
        if !self.oob.is_empty() {
            out.extend_from_slice(&self.oob);
            self.oob.clear();
            self.out_mixed = true;
        }
        while let Some(front) = self.pending.front() {
            match &front.state {
                Pending::Ready(b) => {
                    let decoded = if self.ctx.rules.is_empty() {
                        None
                    } else {
                        rewrite::decode_reply(
                            &self.ctx.rules,
                            front.name,
                            b,
                            front.filter.as_deref(),
                        )
                    };
                    if !front.silent {
                        out.extend_from_slice(decoded.as_ref().unwrap_or(b));
                    }
                    record(front, b, now);
                }
                Pending::Close(b) => {
                    if !front.silent {
                        out.extend_from_slice(b);
                    }
                    record(front, b, now);
                    self.closing = true;
                    // Nothing follows the last reply: no more messages.
                    self.pubsub = None;
                    self.ctx
                        .stats
                        .inflight
                        .fetch_sub(self.pending.len() as i64, Ordering::Relaxed);
                    self.pending.clear();
                    return;
                }
                Pending::Single(_) | Pending::Multi(_) => return,
            }
            match self.out_batch {
                None => self.out_batch = Some(front.batch),
                Some(batch) => self.out_mixed |= batch != front.batch,
            }
            self.pending.pop_front();
            self.ctx.stats.inflight.fetch_sub(1, Ordering::Relaxed);
            while self
                .notices_after
                .front()
                .is_some_and(|(seq, _)| *seq <= self.base_seq)
            {
                if let Some((_, push)) = self.notices_after.pop_front() {
                    out.extend_from_slice(&push);
                    self.out_mixed = true;
                }
            }
            self.base_seq += 1;
        }
    }
}

impl Core {
    /// Takes a new snapshot of the configuration if it changed.
    fn refresh_config(&mut self) {
        let version = self.ctx.config_version();
        if version != self.config_version {
            self.config = self.ctx.config_snapshot();
            self.config_version = version;
        }
    }

    /// Whether to hold the collected replies back a little: they are part
    /// of one batch (the commands of one read) whose other replies are
    /// still coming over pipelined connections. Writing a batch's replies
    /// once, as Redis does, saves a client write per backend that answers.
    /// Never for a blocking command or one that waits to be retried.
    fn holds_output(&self) -> bool {
        let (Some(batch), Some(front), false) =
            (self.out_batch, self.pending.front(), self.out_mixed)
        else {
            return false;
        };
        front.batch == batch
            && match &front.state {
                Pending::Single(sent) => sent.answers_soon(),
                Pending::Multi(multi) => multi
                    .parts
                    .iter()
                    .all(|part| part.reply.is_some() || part.sent.answers_soon()),
                Pending::Ready(_) | Pending::Close(_) => false,
            }
    }

    /// The collected replies were all written.
    fn output_written(&mut self) {
        self.out_batch = None;
        self.out_mixed = false;
    }

    /// Subscription commands wait until every earlier reply is written, so
    /// their confirmations (which bypass the reply queue) stay in order, and
    /// the commands after them (`QUIT`, `RESET` too) wait for those
    /// confirmations.
    fn must_wait_for_earlier_replies(&self, name: &[u8]) -> bool {
        if let Some(ps) = self.pubsub.as_ref().filter(|p| p.confirming()) {
            // And other commands wait for the confirmations of earlier
            // subscription commands, so that their replies follow them;
            // a classic one does not when those are all due on the classic
            // connection, where it goes next.
            let same_conn =
                subs::is_classic_subscription_command(name) && ps.confirming_only_on(GLOBAL);
            if !same_conn {
                return true;
            }
        }
        if self.pending.is_empty() {
            return false;
        }
        subs::is_subscription_command(name)
            || (name.eq_ignore_ascii_case(b"ping")
                && self.pubsub.as_ref().is_some_and(|p| p.active()))
    }

    /// The node holding classic subscriptions (see [`PUBSUB_HOME_SLOT`]).
    async fn pubsub_home(&self) -> Option<Arc<str>> {
        let owner = self.ctx.topology.load().master(PUBSUB_HOME_SLOT).cloned();
        let owner = match owner {
            Some(p) => Some(p),
            None => self.wait_for_owner(PUBSUB_HOME_SLOT).await,
        };
        owner.map(|p| p.addr().clone())
    }

    /// `PING` while subscribed (RESP2): answered in the subscription stream.
    fn subscribed_ping(&mut self, raw: Bytes, view: &CommandView<'_>) {
        let msg = (view.len() > 1).then(|| view.get(1));
        match self
            .pubsub
            .as_mut()
            .filter(|p| p.conns.contains_key(&GLOBAL))
        {
            Some(ps) => ps.send_ping(GLOBAL, raw),
            None => self.oob.extend_from_slice(&subs::subscribed_pong(msg)),
        }
    }

    /// `MONITOR`: `+OK`, then every client's commands as they arrive.
    fn monitor(&mut self) {
        self.oob.extend_from_slice(reply::OK);
        let ps = self.pubsub.get_or_insert_with(Default::default);
        if ps.monitoring {
            return;
        }
        ps.monitoring = true;
        let mut watching = self.ctx.monitors.watch();
        let events = ps.events_sender();
        tokio::spawn(async move {
            loop {
                let event = match watching.lines.recv().await {
                    Ok(line) => PubSubEvent::Frame(line),
                    Err(broadcast::error::RecvError::Lagged(_)) => PubSubEvent::Overflow,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let overflow = matches!(event, PubSubEvent::Overflow);
                // Ends when the session is gone (its receiver dropped).
                if events.send((MONITOR, event)).await.is_err() || overflow {
                    return;
                }
            }
        });
    }

    async fn subscription(&mut self, cmd: SubCmd, raw: Bytes, view: &CommandView<'_>) {
        if cmd == SubCmd::Monitor {
            self.monitor();
            return;
        }
        let args: Vec<Bytes> = view.args[1..]
            .iter()
            .map(|&(s, e)| raw.slice(s..e))
            .collect();
        match cmd {
            SubCmd::SSubscribe => return Box::pin(self.shard_subscribe(view.get(0), args)).await,
            SubCmd::SUnsubscribe => return self.shard_unsubscribe(view.get(0), args),
            _ => {}
        }
        let opts = self.ctx.topology.conn_options().clone();
        let proto = self.client.proto;
        let global_node = self.pubsub_home().await;
        let Some(addr) = global_node else {
            self.oob.extend_from_slice(&self.no_cluster());
            return;
        };
        let ps = self.pubsub.get_or_insert_with(Default::default);
        ps.global(&addr, &opts, proto);
        let change = ps.record(view.get(0), &args);
        ps.send_confirmed(GLOBAL, raw, change);
        self.client.info.set_subscribed(ps.active());
    }

    /// `SSUBSCRIBE`: one command per slot, on its owner's connection, as a
    /// cluster node accepts them (channels of unserved slots get an error).
    async fn shard_subscribe(&mut self, name: &[u8], args: Vec<Bytes>) {
        let groups = group_by(args, |ch| slot_of(ch));
        // One wait for a missing owner per command, not one per slot.
        let mut waited = false;
        for (s, chans) in groups {
            let mut owner = self.ctx.topology.load().master(s).cloned();
            if owner.is_none() && !waited {
                waited = true;
                owner = self.wait_for_owner(s).await;
            }
            let Some(pool) = owner else {
                self.oob.extend_from_slice(&self.slot_unserved(s));
                continue;
            };
            self.send_shard_subscribe(name, pool.addr(), &chans, 0);
        }
        let active = self.pubsub.as_ref().is_some_and(|p| p.active());
        self.client.info.set_subscribed(active);
    }

    /// Sends `SSUBSCRIBE` of `chans` (of one slot) to the node at `addr`
    /// (`redirects`: the times it was sent again after `-MOVED`).
    fn send_shard_subscribe(
        &mut self,
        name: &[u8],
        addr: &Arc<str>,
        chans: &[Bytes],
        redirects: u8,
    ) {
        let opts = self.ctx.topology.conn_options().clone();
        let proto = self.client.proto;
        let ps = self.pubsub.get_or_insert_with(Default::default);
        let id = ps.shard_id(addr, &opts, proto);
        let mut change = ps.record(name, chans);
        change.redirects = redirects;
        ps.send_confirmed(id, subscribe_command(name, chans.iter()), change);
        ps.carry(id, chans.iter());
    }

    /// `SUNSUBSCRIBE [channel...]`: each channel on the connection that
    /// carries it, one command per slot. A channel no connection carries
    /// (never subscribed, or its connection was lost) is confirmed by the
    /// proxy: a node holding none would answer with a nil channel.
    fn shard_unsubscribe(&mut self, name: &[u8], args: Vec<Bytes>) {
        let proto = self.client.proto;
        let ps = self.pubsub.get_or_insert_with(Default::default);
        let named: Vec<Bytes> = if args.is_empty() {
            ps.shard_channels.keys().cloned().collect()
        } else {
            args.clone()
        };
        if named.is_empty() {
            self.oob
                .extend_from_slice(&subs::sunsubscribe_frame(None, 0, proto));
            return;
        }
        let mut carried = Vec::new();
        let mut local = BytesMut::new();
        for ch in &named {
            match ps.carrier(ch) {
                Some(id) => carried.push((id, ch.clone())),
                None => {
                    local.extend_from_slice(&ps.local_sunsubscribe(ch, proto));
                    ps.record(name, std::slice::from_ref(ch));
                }
            }
        }
        let groups = group_by(carried, |(id, ch)| (*id, slot_of(ch)));
        for ((id, _), chans) in groups {
            let chans: Vec<Bytes> = chans.into_iter().map(|(_, ch)| ch).collect();
            let change = ps.record(name, &chans);
            ps.send_confirmed(id, subscribe_command(name, chans.iter()), change);
        }
        for ch in &named {
            ps.uncarry(ch);
        }
        self.client.info.set_subscribed(ps.active());
        self.oob.extend_from_slice(&local);
    }

    async fn on_pubsub_event(&mut self, id: u32, event: PubSubEvent) {
        let Some(ps) = self.pubsub.as_mut() else {
            return;
        };
        match event {
            PubSubEvent::Frame(frame) => match ps.verdict(id, &frame) {
                Verdict::Forward if id == GLOBAL || id == MONITOR => {
                    self.oob.extend_from_slice(&frame);
                }
                Verdict::Forward => self.oob.extend_from_slice(&ps.renumber(frame)),
                Verdict::Swallow => {}
                Verdict::OwnRefused(set, names) => {
                    tracing::warn!(client = %self.client.info.peer, error = %String::from_utf8_lossy(frame.trim_ascii_end()), "re-subscription refused; trying again in 1 s");
                    if set == Set::Shard {
                        for ch in &names {
                            ps.uncarry(ch);
                        }
                        ps.keep_orphans(names);
                        self.ctx.topology.request_refresh();
                    }
                    ps.resubscribe_in(id, REFUSED_RESUBSCRIBE_DELAY);
                }
                Verdict::ShardDropped(channel) => {
                    // The channel's slot left that node: the client keeps
                    // its subscription where the slot went.
                    if ps.carrier(&channel) == Some(id) {
                        tracing::debug!(client = %self.client.info.peer, channel = %String::from_utf8_lossy(&channel), "shard channel dropped by its node; subscribing where its slot went");
                        ps.uncarry(&channel);
                        ps.keep_orphans([channel]);
                        self.ctx.topology.request_refresh();
                        retry_resubscribe(ps, id);
                    }
                }
                Verdict::Refused(change) => self.refused_subscription(id, frame, change),
            },
            PubSubEvent::Overflow => {
                ps.give_up_confirming();
                tracing::warn!(client = %self.client.info.peer, "subscriber too slow for its messages; disconnecting it");
                metrics::counter!(m::SLOW_CLIENT_DISCONNECTS).increment(1);
                self.ctx
                    .stats
                    .inflight
                    .fetch_sub(self.pending.len() as i64, Ordering::Relaxed);
                self.pending.clear();
                self.closing = true;
            }
            PubSubEvent::Lost(_) => {
                ps.lost(id);
                retry_resubscribe(ps, id);
            }
            PubSubEvent::Resubscribe => {
                ps.resubscribe_due(id);
                self.resubscribe(id);
            }
        }
    }

    /// A node refused a client's subscription command sent on connection
    /// `id` (what it changed is undone): the error goes to the client, but
    /// for shard channels whose slot moved (`-MOVED` never reaches a
    /// client), which are subscribed on their new owner, or unsubscribed
    /// by the proxy (the node had dropped them with the slot).
    fn refused_subscription(&mut self, id: u32, frame: Bytes, change: Change) {
        let proto = self.client.proto;
        let Some(ps) = self.pubsub.as_mut() else {
            return;
        };
        let redirect = super::retry::parse_redirect(&frame);
        let shard = change.set == Some(Set::Shard);
        if redirect.is_some() || frame.starts_with(b"-TRYAGAIN") {
            self.ctx.topology.request_refresh();
        }
        match redirect {
            Some(r) if shard && change.subscribe && !r.ask && change.redirects < 2 => {
                let current = ps.conns.get(&id).map(|c| c.addr.clone());
                let addr: Arc<str> = redirect_addr(&r, current.as_deref()).into();
                tracing::debug!(client = %self.client.info.peer, node = %addr, "shard channels moved; subscribing on their new owner");
                self.send_shard_subscribe(
                    b"SSUBSCRIBE",
                    &addr,
                    &change.names,
                    change.redirects + 1,
                );
            }
            Some(_) if shard && !change.subscribe => {
                for ch in &change.names {
                    ps.uncarry(ch);
                    ps.record(b"sunsubscribe", std::slice::from_ref(ch));
                    let frame = ps.local_sunsubscribe(ch, proto);
                    self.oob.extend_from_slice(&frame);
                }
            }
            Some(_) => self.oob.extend_from_slice(
                b"-TRYAGAIN the slot of this channel is moving between nodes; subscribe again\r\n",
            ),
            None => self.oob.extend_from_slice(&frame),
        }
        let active = self.pubsub.as_ref().is_some_and(|p| p.active());
        self.client.info.set_subscribed(active);
    }

    /// Subscribes again after connection `id` was lost.
    fn resubscribe(&mut self, id: u32) {
        let opts = self.ctx.topology.conn_options().clone();
        let proto = self.client.proto;
        let map = self.ctx.topology.load();
        let Some(ps) = self.pubsub.as_mut() else {
            return;
        };
        if id == GLOBAL {
            if ps.channels.is_empty() && ps.patterns.is_empty() {
                return;
            }
            let Some(home) = map
                .master(PUBSUB_HOME_SLOT)
                .or_else(|| map.shards().first().map(|s| &s.master))
            else {
                retry_resubscribe(ps, id);
                return;
            };
            let mut cmds = Vec::new();
            for (set, name, names) in [
                (Set::Channels, &b"SUBSCRIBE"[..], &ps.channels),
                (Set::Patterns, &b"PSUBSCRIBE"[..], &ps.patterns),
            ] {
                if !names.is_empty() {
                    let cmd = subscribe_command(name, names.iter());
                    cmds.push((set, cmd, names.iter().cloned().collect::<Vec<_>>()));
                }
            }
            let count = ps.channels.len() + ps.patterns.len();
            ps.global(home.addr(), &opts, proto);
            for (set, cmd, names) in cmds {
                ps.send_own(GLOBAL, set, cmd, names);
            }
            tracing::info!(client = %self.client.info.peer, node = %home.addr(), count, "re-subscribed after a lost connection");
            return;
        }
        // The lost connections' shard channels: one SSUBSCRIBE per slot on
        // its current owner; those without an owner yet wait for the next
        // try.
        let orphans: Vec<(u16, Bytes)> = ps
            .take_orphans()
            .into_iter()
            .filter_map(|ch| Some((*ps.shard_channels.get(&ch)?, ch)))
            .collect();
        let by_slot: Vec<(u16, Vec<Bytes>)> = group_by(orphans, |(slot, _)| *slot)
            .into_iter()
            .map(|(slot, chans)| (slot, chans.into_iter().map(|(_, ch)| ch).collect()))
            .collect();
        let mut waiting = Vec::new();
        for (slot, channels) in by_slot {
            let Some(pool) = map.master(slot) else {
                waiting.extend(channels);
                continue;
            };
            let cid = ps.shard_id(pool.addr(), &opts, proto);
            let cmd = subscribe_command(b"SSUBSCRIBE", channels.iter());
            ps.carry(cid, channels.iter());
            ps.send_own(cid, Set::Shard, cmd, channels.clone());
            tracing::info!(client = %self.client.info.peer, node = %pool.addr(), count = channels.len(), "re-subscribed shard channels after a lost connection");
        }
        if !waiting.is_empty() {
            ps.keep_orphans(waiting);
            retry_resubscribe(ps, id);
        }
    }
}

/// `items` grouped by `key`, groups and items in first-seen order.
fn group_by<T, K: PartialEq>(items: Vec<T>, key: impl Fn(&T) -> K) -> Vec<(K, Vec<T>)> {
    let mut groups: Vec<(K, Vec<T>)> = Vec::new();
    for item in items {
        let k = key(&item);
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, members)) => members.push(item),
            None => groups.push((k, vec![item])),
        }
    }
    groups
}

/// Tries subscribing again after a lost connection in 200 ms.
fn retry_resubscribe(ps: &mut PubSubState, id: u32) {
    ps.resubscribe_in(id, Duration::from_millis(200));
}

/// How long the proxy waits before subscribing again when a node refused
/// its re-subscription (`-BUSY`, `-NOPERM`, a moved slot).
const REFUSED_RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);

fn subscribe_command<'a>(name: &'a [u8], names: impl Iterator<Item = &'a Bytes>) -> Bytes {
    let args: Vec<&[u8]> = std::iter::once(name).chain(names.map(|c| &c[..])).collect();
    reply::command(args)
}

/// The next reply on the session's channel (pending while it has none).
async fn next_reply(replies: &mut std::sync::OnceLock<ReplyChannel>) -> Option<Reply> {
    match replies.get_mut() {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_pubsub_event(pubsub: &mut Option<Box<PubSubState>>) -> Option<(u32, PubSubEvent)> {
    match pubsub {
        Some(p) => p.events.recv().await,
        None => std::future::pending().await,
    }
}

/// Counts a completed command.
fn record(slot: &Slot, reply: &[u8], now: std::time::Instant) {
    if slot.name.is_empty() {
        return;
    }
    let error = reply.first() == Some(&b'-');
    let elapsed = now.saturating_duration_since(slot.started);
    m::record_command(slot.index, slot.name, slot.class, error, elapsed);
}

const CLASS_LOCAL: usize = 4;

/// The latency class of a route (an index into [`m::CLASSES`]).
fn class_of(route: &Route, in_multi: bool) -> usize {
    if in_multi {
        return 5;
    }
    match route {
        Route::Slot(_) | Route::AnyMaster => 0,
        Route::Blocking(_) => 1,
        Route::Split(_) => 2,
        Route::Fanout(_) => 3,
        Route::Local(_) => CLASS_LOCAL,
        Route::Tx(_) => 5,
        Route::Sub(_) => 6,
        Route::Scan | Route::RandomKey => 7,
        Route::Reply(_) => 8,
    }
}

/// The client's `EXEC` reply from the per-slot `EXEC` replies.
fn merge_per_slot_exec(plan: &TxPlan, replies: &[&Bytes]) -> Bytes {
    let mut groups: Vec<Vec<Bytes>> = Vec::with_capacity(replies.len());
    for r in replies {
        match children(r) {
            Some(items) => groups.push(items.iter().map(|&(s, e)| r.slice(s..e)).collect()),
            // A slot's transaction was aborted (null): so is the whole.
            None => return (*r).clone(),
        }
    }
    let get = |g: usize, i: usize| {
        groups
            .get(g)
            .and_then(|items| <[Bytes]>::get(items, i))
            .cloned()
    };
    let mut out = BytesMut::new();
    reply::put_array(&mut out, plan.locs.len());
    for loc in &plan.locs {
        let item = match loc {
            Loc::One(g, i) => get(*g, *i),
            Loc::Split(parts, kind, nkeys) => {
                let items: Option<Vec<Bytes>> = parts.iter().map(|(g, i, _)| get(*g, *i)).collect();
                items.map(|items| {
                    if let Some(e) = items.iter().find(|b| reply_kind(b[0]) == ReplyKind::Error) {
                        return e.clone();
                    }
                    let refs: Vec<&Bytes> = items.iter().collect();
                    match kind {
                        SplitKind::Mget => {
                            let with_pos: Vec<(&Bytes, &[u32])> = items
                                .iter()
                                .zip(parts)
                                .map(|(b, p)| (b, p.2.as_slice()))
                                .collect();
                            merge::mget(&with_pos, *nkeys)
                        }
                        SplitKind::Mset => merge::all_ok(&refs),
                        SplitKind::Sum => merge::sum(&refs),
                        SplitKind::Sets(op) => merge::set_op(*op, &refs),
                    }
                })
            }
        };
        match item {
            Some(b) => out.extend_from_slice(&b),
            None => {
                return reply::error("ERR slotbridge: unexpected EXEC reply shape from a server")
            }
        }
    }
    out.freeze()
}

/// The rank of the node owning `slot`, for grouping sub-commands per node
/// ([`split::NO_NODE`]: not grouped).
fn node_rank(map: &SlotMap, by_node: bool, slot: u16) -> u32 {
    match map.shard_of(slot) {
        Some(shard) if by_node => u32::from(shard),
        _ => split::NO_NODE,
    }
}

/// The replies to `count` commands sent as one request, in order: the
/// frames of `r` when the server answered. A failure's data is the frames
/// the server sent before the connection failed, then the error, which
/// goes to each command left unanswered.
fn group_frames(r: &Reply, count: usize) -> Vec<(Bytes, ReplyStatus)> {
    let mut out = Vec::with_capacity(count);
    let mut scanner = FrameScanner::new();
    let mut at = 0;
    if r.status != ReplyStatus::Answered {
        let mut frames: Vec<Bytes> = Vec::new();
        while let Ok(Some(n)) = scanner.scan(r.data.get(at..).unwrap_or_default()) {
            frames.push(r.data.slice(at..at + n));
            at += n;
        }
        let error = frames.pop().unwrap_or_else(|| r.data.clone());
        let mut answered = frames.into_iter();
        for _ in 0..count {
            out.push(match answered.next() {
                Some(frame) => (frame, ReplyStatus::Answered),
                None => (error.clone(), r.status),
            });
        }
        return out;
    }
    if r.ends.len() == count && r.ends.last() == Some(&r.data.len()) {
        // Where the connection found them: no second scan.
        for &end in &r.ends {
            match r.data.get(at..end) {
                Some(_) => out.push((r.data.slice(at..end), r.status)),
                None => out.push((
                    reply::error("ERR slotbridge: incomplete reply from a server"),
                    ReplyStatus::Final,
                )),
            }
            at = end.max(at);
        }
        return out;
    }
    for _ in 0..count {
        match scanner.scan(r.data.get(at..).unwrap_or_default()) {
            Ok(Some(n)) => {
                out.push((r.data.slice(at..at + n), r.status));
                at += n;
            }
            // The connection delivers whole frames, all of them: this
            // cannot happen, but must not hang the client if it did.
            _ => out.push((
                reply::error("ERR slotbridge: incomplete reply from a server"),
                ReplyStatus::Final,
            )),
        }
    }
    out
}

/// One reply per part from the reply to `group` sub-commands of one
/// command sent together (see [`group_frames`]).
fn split_group_reply(r: Reply, group: u32) -> Vec<Reply> {
    group_frames(&r, group as usize)
        .into_iter()
        .zip(r.part..)
        .map(|((data, status), part)| Reply {
            seq: r.seq,
            part,
            data,
            status,
            ends: Vec::new(),
        })
        .collect()
}

/// Combines the replies of all parts into one reply.
fn merge_multi(ctx: &Context, proto: Proto, multi: &Multi) -> Bytes {
    let replies: Vec<&Bytes> = multi
        .parts
        .iter()
        .filter_map(|p| p.reply.as_ref())
        .collect();
    let errors: Vec<&Bytes> = replies
        .iter()
        .copied()
        .filter(|r| reply_kind(r[0]) == ReplyKind::Error)
        .collect();
    if let (Some(first), MergeKind::Split(SplitKind::Sets(_))) = (errors.first(), &multi.kind) {
        // Read-only: the first error (e.g. WRONGTYPE) is exactly Redis's.
        return (*first).clone();
    }
    if !errors.is_empty() {
        return merge::failed(multi.name, &errors, multi.parts.len());
    }
    match &multi.kind {
        MergeKind::Tx(plan) => merge_per_slot_exec(plan, &replies),
        MergeKind::Split(SplitKind::Mget) => {
            let parts: Vec<(&Bytes, &[u32])> = multi
                .parts
                .iter()
                .filter_map(|p| p.reply.as_ref().map(|r| (r, p.positions.as_slice())))
                .collect();
            merge::mget(&parts, multi.total_keys)
        }
        MergeKind::Split(SplitKind::Mset) | MergeKind::Fanout(Fanout::AllOk) => {
            merge::all_ok(&replies)
        }
        MergeKind::Split(SplitKind::Sum) | MergeKind::Fanout(Fanout::Sum) => merge::sum(&replies),
        MergeKind::Fanout(Fanout::Concat) => merge::concat(&replies),
        MergeKind::Fanout(Fanout::First) => replies
            .first()
            .map(|r| (*r).clone())
            .unwrap_or_else(no_cluster),
        MergeKind::Fanout(Fanout::AllTrue) => merge::all_true(&replies, &[]),
        MergeKind::ScriptExists(known) => merge::all_true(&replies, known),
        MergeKind::Fanout(Fanout::Newest(count)) => merge::newest(&replies, *count),
        MergeKind::Fanout(Fanout::Info) => info::merge(&replies, &local::proxy_facts(ctx), proto),
        MergeKind::Fanout(Fanout::Union) => merge::union(&replies),
        MergeKind::Fanout(Fanout::SumPairs) => merge::sum_pairs(&replies),
        MergeKind::Fanout(Fanout::Min) => merge::min(&replies),
        MergeKind::Split(SplitKind::Sets(op)) => merge::set_op(*op, &replies),
    }
}

fn no_cluster() -> Bytes {
    reply::error("CLUSTERDOWN slotbridge: no cluster node is known yet (check the seeds and that the cluster is reachable)")
}

impl Core {
    /// No master is known at all: says why discovery fails.
    fn no_cluster(&self) -> Bytes {
        match self.ctx.topology.last_error() {
            Some(e) => reply::error(&format!(
                "CLUSTERDOWN slotbridge: no cluster node is known yet; last discovery error: {e}"
            )),
            None => no_cluster(),
        }
    }

    /// No node owns `slot` (after waiting for a refresh).
    fn slot_unserved(&self, slot: u16) -> Bytes {
        if self.ctx.topology.load().shards().is_empty() {
            return self.no_cluster();
        }
        reply::error(&format!(
            "CLUSTERDOWN Hash slot {slot} not served (slotbridge: no node owns it; the cluster may be failing over or misconfigured)"
        ))
    }
}

fn too_many_private() -> Bytes {
    reply::error("ERR slotbridge: too many clients hold private backend connections (blocking commands or WATCH); try again later")
}

fn is_evalsha(view: &CommandView<'_>) -> bool {
    let n = view.get(0);
    n.eq_ignore_ascii_case(b"evalsha") || n.eq_ignore_ascii_case(b"evalsha_ro")
}

fn is_eval(view: &CommandView<'_>) -> bool {
    let n = view.get(0);
    n.eq_ignore_ascii_case(b"eval") || n.eq_ignore_ascii_case(b"eval_ro")
}

/// `CLIENT UNBLOCK id [TIMEOUT|ERROR]`: the command for the node where
/// that client's blocking command waits (its private connection's id
/// there), or the reply when there is none (`:0`) or an argument is wrong.
fn client_unblock(
    ctx: &Context,
    view: &CommandView<'_>,
    me: u64,
) -> Result<(Arc<str>, Bytes), Bytes> {
    if view.len() != 3 && view.len() != 4 {
        return Err(reply::error(
            "ERR wrong number of arguments for 'client|unblock' command",
        ));
    }
    let mode: &[u8] = match view.len() {
        4 if view.get(3).eq_ignore_ascii_case(b"timeout") => b"TIMEOUT",
        4 if view.get(3).eq_ignore_ascii_case(b"error") => b"ERROR",
        4 => {
            return Err(reply::error(
                "ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR",
            ))
        }
        _ => b"TIMEOUT",
    };
    let Some(id) = std::str::from_utf8(view.get(2))
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
    else {
        return Err(reply::error("ERR value is not an integer or out of range"));
    };
    let blocked = u64::try_from(id)
        .ok()
        // A client's own blocking command is over before one server would
        // read its next command.
        .filter(|&id| id != me)
        .and_then(|id| ctx.clients.get(id))
        .and_then(|client| client.blocked_on());
    let Some((addr, server_id)) = blocked else {
        return Err(reply::int(0));
    };
    let server_id = server_id.to_string();
    let cmd = reply::command([&b"CLIENT"[..], b"UNBLOCK", server_id.as_bytes(), mode]);
    Ok((addr, cmd))
}

fn is_fcall(view: &CommandView<'_>) -> bool {
    let n = view.get(0);
    n.eq_ignore_ascii_case(b"fcall") || n.eq_ignore_ascii_case(b"fcall_ro")
}

fn is_script_load(view: &CommandView<'_>) -> bool {
    view.len() == 3
        && view.get(0).eq_ignore_ascii_case(b"script")
        && view.get(1).eq_ignore_ascii_case(b"load")
}

/// Decides what a reply means for the command that produced it (see
/// [`super::retry`] for the retry rule), including the post-processing of
/// SCAN, RANDOMKEY and EVALSHA.
fn decide(sent: &mut Sent, r: &Reply, ctx: &Context) -> Next {
    let outcome = classify(r);
    if outcome == Outcome::Deliver {
        return post_process(sent, r, ctx);
    }
    let config = ctx.config();
    let limits = &config.limits;
    if sent.via == Via::Pinned && !matches!(outcome, Outcome::Deliver | Outcome::NoScript) {
        return Next::Done(reply::error(
            "ERR slotbridge: the slot of the watched keys moved or its node failed during the transaction; retry the transaction",
        ));
    }
    let redirect = matches!(
        outcome,
        Outcome::Moved(_) | Outcome::Ask(_) | Outcome::NoScript
    );
    if redirect && sent.attempts >= limits.max_redirects {
        let last = String::from_utf8_lossy(
            r.data
                .get(1..r.data.len().saturating_sub(2))
                .unwrap_or_default(),
        )
        .into_owned();
        return Next::Done(reply::error(&format!(
            "ERR slotbridge: gave up after {} redirections (last reply: {last})",
            sent.attempts
        )));
    }
    match outcome {
        Outcome::Deliver => post_process(sent, r, ctx),
        Outcome::Timer => Next::Resend {
            to: sent.target(),
            asking: false,
            delay: false,
        },
        Outcome::NotSent | Outcome::NotExecuted | Outcome::Lost => {
            let retry = match outcome {
                // A write that may have run is never repeated; a blocking
                // command's wait is over once its connection is gone.
                Outcome::Lost => sent.readonly && sent.via == Via::Shared,
                _ => true,
            };
            if !retry {
                return Next::Done(r.data.clone());
            }
            if sent.slot.is_none() && !sent.sticky && outcome == Outcome::NotSent {
                // Any master will do: not the one that just failed.
                sent.node = None;
                sent.post_retry_master = sent.post_retry_master.wrapping_add(1);
            }
            if sent.replica && ctx.config().read_from == ReadFrom::ReplicaPreferred {
                // The replica failed: the master answers instead.
                sent.replica = false;
            }
            if outcome != Outcome::NotExecuted || r.data.starts_with(b"-CLUSTERDOWN") {
                ctx.topology.request_refresh();
            }
            let now = std::time::Instant::now();
            let until = *sent
                .retry_until
                .get_or_insert(now + Duration::from_millis(limits.retry_deadline_ms));
            if now >= until {
                tracing::debug!(slot = ?sent.slot, "retry deadline passed; returning the last error");
                return Next::Done(r.data.clone());
            }
            tracing::trace!(slot = ?sent.slot, ?outcome, "retrying a command that did not run");
            let reason = match outcome {
                Outcome::NotSent => "not_sent",
                Outcome::Lost => "lost",
                _ => "not_executed",
            };
            metrics::counter!(m::RETRIES, "reason" => reason).increment(1);
            Next::Resend {
                to: sent.target(),
                asking: false,
                delay: true,
            }
        }
        Outcome::NoScript => {
            let loads: Vec<Bytes> = match &sent.post {
                Post::EvalSha(sha) => ctx
                    .scripts
                    .get(sha)
                    .map(|body| reply::command([&b"SCRIPT"[..], b"LOAD", &body]))
                    .into_iter()
                    .collect(),
                // The node lacks the libraries loaded before it became a
                // master (it joined later): all of those, since which one
                // holds the function is known only to the nodes. Without
                // REPLACE: a node refuses (cheaply) those it has, whatever
                // version. A node that was a master then lost them on
                // purpose (FUNCTION DELETE or FLUSH on the node): the
                // error stands.
                Post::Fcall if sent.replica => {
                    // A replica may lag behind its master's FUNCTION LOAD:
                    // the master runs it (and may reload it, once more).
                    sent.replica = false;
                    sent.attempts += 1;
                    return Next::Resend {
                        to: sent.target(),
                        asking: false,
                        delay: false,
                    };
                }
                // Keyless, after a retry on another master: which one
                // answered is not known, so nothing is loaded.
                Post::Fcall if sent.slot.is_none() && sent.node.is_none() => Vec::new(),
                Post::Fcall => current_addr(sent, sent.slot.unwrap_or(0), ctx)
                    .map(|addr| ctx.scripts.libraries_missing_on(&addr))
                    .unwrap_or_default()
                    .iter()
                    .map(|code| reply::command([&b"FUNCTION"[..], b"LOAD", code]))
                    .collect(),
                _ => Vec::new(),
            };
            if loads.is_empty() {
                return Next::Done(r.data.clone());
            }
            sent.attempts += 1;
            // Loaded on a replica they would be refused (read-only): the
            // master loads them and runs the command.
            sent.replica = false;
            let prefix = loads.iter().map(|l| l.len()).sum::<usize>();
            let mut payload = BytesMut::with_capacity(prefix + sent.payload.len());
            for load in &loads {
                payload.extend_from_slice(load);
            }
            payload.extend_from_slice(&sent.payload);
            sent.payload = payload.freeze();
            sent.skip += loads.len() as u32;
            sent.loads = Some((prefix, loads.len() as u32));
            sent.post = Post::None;
            Next::Resend {
                to: sent.target(),
                asking: false,
                delay: false,
            }
        }
        Outcome::Ask(redirect) => {
            sent.attempts += 1;
            sent.drop_loads();
            ctx.topology.stats.ask.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(m::REDIRECTIONS, "kind" => "ask").increment(1);
            let current = current_addr(sent, redirect.slot, ctx);
            Next::Resend {
                to: Target::Addr(redirect_addr(&redirect, current.as_deref())),
                asking: true,
                delay: false,
            }
        }
        Outcome::Moved(redirect) => {
            sent.attempts += 1;
            sent.drop_loads();
            // A replica that no longer serves the slot redirects to its master.
            sent.replica = false;
            ctx.topology.stats.moved.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(m::REDIRECTIONS, "kind" => "moved").increment(1);
            let current = current_addr(sent, redirect.slot, ctx);
            let addr = redirect_addr(&redirect, current.as_deref());
            ctx.topology.apply_moved(redirect.slot, &addr);
            if sent.slot.is_none() {
                sent.node = Some(Arc::from(addr.as_str()));
            }
            Next::Resend {
                to: match sent.slot {
                    Some(_) => Target::Slot(redirect.slot),
                    None => Target::Addr(addr),
                },
                asking: false,
                delay: false,
            }
        }
    }
}

fn current_addr(sent: &Sent, slot: u16, ctx: &Context) -> Option<String> {
    match &sent.node {
        Some(n) => Some(n.to_string()),
        None => ctx
            .topology
            .load()
            .master(slot)
            .map(|p| p.addr().to_string()),
    }
}

/// The masters' addresses, in map order.
fn masters(ctx: &Context) -> Vec<Arc<str>> {
    ctx.topology
        .load()
        .shards()
        .iter()
        .map(|s| s.master.addr().clone())
        .collect()
}

/// The masters in address order: the order `SCAN` visits them in.
fn scan_masters(ctx: &Context) -> Vec<Arc<str>> {
    let mut nodes = masters(ctx);
    nodes.sort();
    nodes
}

/// Applies the per-command work on a reply that goes to the client.
fn post_process(sent: &mut Sent, r: &Reply, ctx: &Context) -> Next {
    match sent.post {
        Post::None | Post::EvalSha(_) | Post::Fcall => Next::Done(r.data.clone()),
        Post::Scan {
            node,
            nodes,
            want,
            ref mut carried,
        } => {
            if reply_kind(r.data[0]) == ReplyKind::Error {
                // After keys of earlier masters: return those, with a
                // cursor at this master, whose error the next call gets.
                let resumed = carried
                    .as_deref()
                    .filter(|c| !c.is_empty())
                    .and_then(|c| c.reply_resuming_at(node));
                return Next::Done(resumed.unwrap_or_else(|| r.data.clone()));
            }
            let unexpected = || reply::error("ERR slotbridge: unexpected SCAN reply from a server");
            let Some(page) = keyspace::ScanPage::parse(&r.data) else {
                return Next::Done(unexpected());
            };
            let found = carried.as_ref().map_or(0, |c| c.len()) + page.count;
            let next_node = (page.node_cursor == 0 && found < want && node + 1 < nodes)
                .then(|| scan_masters(ctx).get(node + 1).cloned())
                .flatten();
            let restarted =
                next_node.and_then(|addr| Some((addr, keyspace::restart_scan(&sent.payload)?)));
            if let Some((addr, payload)) = restarted {
                page.carry_into(carried.get_or_insert_with(Default::default));
                sent.payload = payload;
                sent.node = Some(addr.clone());
                // A new command to a new master: its own retries.
                sent.attempts = 0;
                sent.retry_until = None;
                if let Post::Scan { node, .. } = &mut sent.post {
                    *node += 1;
                }
                return Next::Resend {
                    to: Target::Addr(addr.to_string()),
                    asking: false,
                    delay: false,
                };
            }
            let empty = keyspace::Carried::default();
            let carried = carried.as_deref().unwrap_or(&empty);
            Next::Done(page.reply(node, nodes, carried).unwrap_or_else(unexpected))
        }
        Post::RandomKey {
            tried,
            nodes,
            start,
        } => {
            let nil = &r.data[..] == b"$-1\r\n" || &r.data[..] == b"_\r\n";
            if !nil || tried >= nodes {
                return Next::Done(r.data.clone());
            }
            sent.post = Post::RandomKey {
                tried: tried + 1,
                nodes,
                start,
            };
            sent.node = None;
            Next::Resend {
                to: Target::NthMaster(start + tried),
                asking: false,
                delay: false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(data: &'static [u8], status: ReplyStatus) -> Reply {
        Reply {
            seq: 1,
            part: 0,
            data: Bytes::from_static(data),
            status,
            ends: Vec::new(),
        }
    }

    #[test]
    fn group_replies_go_to_their_commands_in_order() {
        let answered = reply(b"+OK\r\n$1\r\na\r\n:5\r\n", ReplyStatus::Answered);
        let got: Vec<(Vec<u8>, ReplyStatus)> = group_frames(&answered, 3)
            .into_iter()
            .map(|(d, s)| (d.to_vec(), s))
            .collect();
        let ok = ReplyStatus::Answered;
        assert_eq!(
            got,
            vec![
                (b"+OK\r\n".to_vec(), ok),
                (b"$1\r\na\r\n".to_vec(), ok),
                (b":5\r\n".to_vec(), ok)
            ]
        );
        // The connection failed after two replies: those stay answered.
        let lost = reply(b"+OK\r\n:1\r\n-ERR gone\r\n", ReplyStatus::Lost);
        let got: Vec<(Vec<u8>, ReplyStatus)> = group_frames(&lost, 4)
            .into_iter()
            .map(|(d, s)| (d.to_vec(), s))
            .collect();
        let gone = (b"-ERR gone\r\n".to_vec(), ReplyStatus::Lost);
        assert_eq!(
            got,
            vec![
                (b"+OK\r\n".to_vec(), ok),
                (b":1\r\n".to_vec(), ok),
                gone.clone(),
                gone.clone()
            ]
        );
        // Never sent: the same error for all.
        let unsent = reply(b"-ERR down\r\n", ReplyStatus::NotSent);
        assert!(group_frames(&unsent, 2)
            .iter()
            .all(|(d, s)| &d[..] == b"-ERR down\r\n" && *s == ReplyStatus::NotSent));
        // A short answer cannot hang the commands left without one.
        let short = reply(b"+OK\r\n", ReplyStatus::Answered);
        let got = group_frames(&short, 2);
        assert_eq!(got[1].1, ReplyStatus::Final);
    }
}
