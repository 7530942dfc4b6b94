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
use super::mirrors::{MirrorDelta, MirrorVerdict};
use super::owed::{Change, Set, Verdict};
use super::pubsub::{self as subs, PubSubState, GLOBAL, MONITOR, TOPOLOGY};
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

mod dispatch;
mod fanout;
mod redirect;
mod replies;
mod send;
mod state;
mod subscribe;
mod tx;

use replies::next_reply;
use subscribe::next_pubsub_event;

use state::{
    Later, MergeKind, Multi, Next, Part, Pending, Post, Resend, Sent, Slot, Staged, Target, Via,
    PIPELINE_GROUP, STAGED_COMMANDS, STAGE_MAX,
};

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
    Unpaused,
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

/// The private connection of a client's last blocking command, kept for
/// its next one to the same node, so that a worker popping in a loop does
/// not connect for every pop (see `Core::send_to`). It goes when the
/// session rests, and with it its permit.
#[derive(Debug)]
pub(super) struct SparePrivate {
    addr: Arc<str>,
    proto: Proto,
    conn: crate::backend::BackendConn,
    /// The connection's id on the node (see [`crate::client::registry::BlockedOn`]).
    server_id: Arc<std::sync::atomic::AtomicI64>,
    /// When its last blocking command was sent or answered.
    idle_since: std::time::Instant,
}

/// How long a client's private connection for blocking commands is kept
/// while the client sends other commands and no blocking one.
const SPARE_PRIVATE_IDLE: Duration = Duration::from_secs(1);

/// An invalidation held until a reply is written (see `Core::tell`).
#[derive(Debug)]
enum Told {
    /// A push for the client itself.
    Frame(Bytes),
    /// One for the client it redirects to (`REDIRECT`).
    Forward(crate::tracking::Notice),
}

impl Told {
    /// Whether it tells the client to drop its whole cache.
    fn flushes(&self) -> bool {
        match self {
            Told::Frame(frame) => frame[..] == *crate::tracking::FLUSH_PUSH,
            Told::Forward(notice) => *notice == crate::tracking::Notice::All,
        }
    }
}

pub(super) struct Session {
    parser: RequestParser,
    core: Core,
}

struct Core {
    ctx: Arc<Context>,
    /// The configuration as of [`Core::settings_version`], refreshed once per
    /// turn of the session loop (reading the shared one per command cost
    /// several atomic operations each time).
    config: Arc<crate::config::Config>,
    settings_version: u64,
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
    /// See [`SparePrivate`] (a lock only because sending borrows the core
    /// shared; it is never contended).
    spare_private: std::sync::Mutex<Option<SparePrivate>>,
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
    /// The command being handled is sent to the nodes for a tracking
    /// client: the invalidations that follow wait for its reply.
    ordered: bool,
    /// The command being handled reads what the client tracks, on a path
    /// that cannot carry `caching` (a blocking read): the client flushes
    /// its cache once the reply is in.
    untracked_read: bool,
    /// The last invalidation given (or passed to the redirect target) was
    /// a flush and no reply was written since: the client's cache is
    /// empty, so a flush now would repeat it (one `FLUSHALL` makes each
    /// master send one; one server sends one).
    flushed: bool,
    /// Whether the transaction `MULTI` starts is tracked.
    track_tx: bool,
    /// The command being queued in `MULTI`, as the client sent it (see
    /// [`crate::client::transaction::TxState::originals`]).
    queued_original: Option<Bytes>,
    /// The sequence number of a write the proxy computes across slots
    /// (`PFMERGE`, `BITOP`, the set, sorted-set and geo stores), of a pop
    /// over several slots, of a blocking command or of a `WATCH`, not
    /// answered yet: the commands after it wait, since its write leaves
    /// only once its reads are in, or it runs on a connection of its own
    /// (see [`Core::merge_in_flight`]).
    merging: Option<u64>,
    /// One past the reply number of the newest command that read for the
    /// client's cache (0: none yet): invalidations go after its reply.
    last_tracked: u64,
    /// One more than the number of the newest `EXEC` or script of a RESP3
    /// subscriber (0: none): messages that come while it is owed wait for
    /// its reply (see [`Core::forward_frame`]).
    last_publishing: u64,
    /// Invalidation pushes to write right after the reply numbered so.
    notices_after: VecDeque<(u64, Told)>,
    /// The next command waits for the end of a `CLIENT PAUSE` (see
    /// [`crate::client::pause`]).
    paused: bool,
    /// Set while its subscription commands are not all confirmed: counted
    /// in [`Context::subscribing`] until dropped.
    subscribing: Option<crate::client::subscribing::Counted>,
    /// The command held for earlier replies changes subscriptions.
    held_subscription: bool,
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
                settings_version: ctx.settings_version(),
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
                spare_private: std::sync::Mutex::new(None),
                out_batch: None,
                out_mixed: false,
                staging: false,
                staged: Vec::new(),
                groups: Vec::new(),
                next_group: 0,
                track: false,
                untracked_read: false,
                flushed: false,
                ordered: false,
                track_tx: false,
                queued_original: None,
                merging: None,
                last_tracked: 0,
                last_publishing: 0,
                notices_after: VecDeque::new(),
                paused: false,
                subscribing: None,
                held_subscription: false,
            },
        }
    }

    /// Who the client is.
    pub(super) fn info(&self) -> &ClientInfo {
        &self.core.client.info
    }

    /// Whether the client has `CLIENT TRACKING` on.
    pub(super) fn takes_notices(&self) -> bool {
        self.core.takes_notices()
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
        self.core.spare_private = std::sync::Mutex::new(None);
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
        let mut was_writable = false;
        // One timer for the write timeout, the idle timeout and parking,
        // moved only when it fires or must fire sooner: registering a fresh
        // timer for every command would cost more than the command.
        let timer = tokio::time::sleep_until(*last_active + PARK_AFTER);
        tokio::pin!(timer);
        let mut park_after = PARK_AFTER;
        let mut fired_early = false;
        // The client closed its side: the commands already read still run
        // and are answered, as on one server, then the session closes.
        let mut eof = false;
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
            } else if self.core.paused {
                // Held by CLIENT PAUSE: parsed again once it ends.
                true
            } else {
                let waiting = self.process_input(rbuf, max_pipeline).await;
                self.core.batch_open = !rbuf.is_empty();
                waiting
            };
            if eof && !waiting {
                self.core.closing = true;
            } else if eof && self.core.merge_in_flight() && self.core.merge_blocks() {
                // A command read after it blocks: one server drops a
                // blocked client that closed.
                return Ok(Exit::Closed);
            }
            self.core.collect_ready(&mut wbuf);
            if wbuf.len() > output_limit {
                tracing::warn!(client = %self.core.client.info.peer, bytes = wbuf.len(), "client output buffer limit reached; disconnecting the client");
                metrics::counter!(m::SLOW_CLIENT_DISCONNECTS).increment(1);
                return Ok(Exit::Closed);
            }
            if self.core.closing
                && self.core.pending.is_empty()
                && wbuf.is_empty()
                && !(eof && self.core.confirming())
            {
                let _ = wr.shutdown().await;
                return Ok(Exit::Closed);
            }
            if waiting
                && self.core.pending.is_empty()
                && !self.core.confirming()
                && !self.core.paused
            {
                // A subscription command waited for earlier replies, which
                // are now queued for writing: run it now.
                continue;
            }
            if self.core.subscribing.is_some()
                && !(waiting && self.core.held_subscription)
                && !self.core.confirming()
            {
                // Every subscription command reached its node.
                self.core.subscribing = None;
            }
            let hold = wbuf.len() < HOLD_OUTPUT && self.core.holds_output();
            let writable = !wbuf.is_empty() && !hold;
            if writable && !was_writable {
                // The write timeout counts from when the replies could go
                // (a subscriber quiet for longer is not slow when its next
                // message comes), then from each write.
                last_write = tokio::time::Instant::now();
            }
            was_writable = writable;
            // A command that waits (for earlier replies or confirmations)
            // stops reading once a megabyte is buffered behind it.
            let can_read = !self.core.closing
                && !eof
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
            // A paused client is not idle (Redis does not time out a
            // client it holds).
            let idle_check = quiet && !idle.is_zero() && !self.core.paused;
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
            let tracking = self.core.takes_notices();
            let turn = if self.core.pubsub.is_none() {
                tokio::select! {
                    biased;
                    turn = interrupted(&self.core.ctx, &self.core.client.info, self.core.closing, tracking) => turn,
                    _ = self.core.ctx.pause.ended(), if self.core.paused => Turn::Unpaused,
                    n = wr.write_buf(&mut wbuf), if writable => Turn::Wrote(n),
                    Some(first) = next_reply(&mut self.core.replies) => Turn::Replies(first),
                    n = rd.read_buf(rbuf), if can_read => Turn::Read(n),
                    _ = &mut timer, if deadline.is_some() => Turn::Timer,
                }
            } else {
                tokio::select! {
                    turn = interrupted(&self.core.ctx, &self.core.client.info, self.core.closing, tracking) => turn,
                    _ = self.core.ctx.pause.ended(), if self.core.paused => Turn::Unpaused,
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
                    self.core.tell_received();
                    // Or its user changed (a subscriber is told so: it may
                    // have lost a channel's permission).
                    self.core.refresh_config();
                    self.core.user_still_valid();
                }
                Turn::Wrote(n) => {
                    let n = n?;
                    if n == 0 {
                        return Ok(Exit::Closed);
                    }
                    last_write = tokio::time::Instant::now();
                    *last_active = last_write;
                    m::count_bytes_out(n);
                    self.core.client.info.count_out(n);
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
                    if n == 0 && !(self.core.merge_in_flight() && self.core.merge_blocks()) {
                        // The client closed its side (`nc`, a script): as
                        // one server, run the commands it sent and write
                        // their replies, then close.
                        eof = true;
                        continue;
                    }
                    if n == 0 {
                        // Blocked: one server drops the client.
                        return Ok(Exit::Closed);
                    }
                    *last_active = tokio::time::Instant::now();
                    m::count_bytes_in(n);
                    self.core.client.info.count_in(n);
                }
                Turn::PubSub(id, event) => self.core.on_pubsub_events(id, event).await,
                // The held command is tried again at the top of the loop.
                Turn::Unpaused => {
                    self.core.paused = false;
                    self.core.client.info.set_paused(false);
                }
                Turn::Timer => {
                    let now = tokio::time::Instant::now();
                    if let Some(ps) = self.core.pubsub.as_mut() {
                        if ps.confirming() && ps.confirm_by.is_some_and(|by| by <= now) {
                            // A node that does not answer does not hold
                            // the client's other commands.
                            ps.give_up_confirming();
                        }
                    }
                    if self.core.pubsub.as_ref().is_some_and(|p| !p.confirming()) {
                        self.core.flush_shard_order();
                    }
                    self.core.release_held();
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
        self.core.held_subscription = false;
        if std::mem::take(&mut self.core.paused) {
            self.core.client.info.set_paused(false);
        }
        let waiting = loop {
            if self.core.closing || self.core.pending.len() >= max_pipeline {
                break false;
            }
            match self.parser.parse(rbuf) {
                Ok(Parsed::Command(n)) => {
                    let view = CommandView {
                        raw: &rbuf[..],
                        args: self.parser.args(),
                    };
                    if self.core.must_wait_for_earlier_replies(&view) {
                        self.core.held_subscription = subs::is_subscription_command(view.get(0));
                        break true;
                    }
                    if self.core.ctx.pause.maybe() && self.core.held_by_pause(&view) {
                        break true;
                    }
                    let raw = rbuf.split_to(n).freeze();
                    self.core.handle(raw, self.parser.args()).await;
                    self.core.after_command();
                }
                Ok(Parsed::Inline(n)) => {
                    let raw = self.parser.take_inline();
                    let view = CommandView {
                        raw: &raw,
                        args: self.parser.args(),
                    };
                    if self.core.must_wait_for_earlier_replies(&view) {
                        self.core.held_subscription = subs::is_subscription_command(view.get(0));
                        break true;
                    }
                    if self.core.ctx.pause.maybe() && self.core.held_by_pause(&view) {
                        break true;
                    }
                    rbuf.advance(n);
                    self.core.handle(raw, self.parser.args()).await;
                    self.core.after_command();
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
