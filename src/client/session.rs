//! One client connection: read commands, route them, send them to the
//! backends, and write the replies back in request order.
//!
//! Every command gets a sequence number and a slot in the `pending` queue.
//! Backend replies come back on one channel per client, tagged with that
//! number (and a part index for split or fanned-out commands); the session
//! fills the slot, handles redirections, merges parts, and writes every
//! reply at the head of the queue that is complete, in one write per batch.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::local::{self, ClientState, LocalOutcome};
use crate::backend::{BackendConn, BackendRequest, NodePool, Reply, ReplyStatus, ReplyTo};
use crate::command::route::{route, CommandView, Fanout, Route, Scratch, SplitKind};
use crate::protocol::reply;
use crate::protocol::request::{Parsed, RequestParser};
use crate::protocol::scan::{reply_kind, ReplyKind};
use crate::protocol::Proto;
use crate::server::Context;
use crate::{info, merge, split};

const READ_CHUNK: usize = 16 * 1024;
/// Output buffers above this are released after a write instead of reused.
const KEEP_WRITE_BUFFER: usize = 1024 * 1024;
/// Back-off before retrying after `TRYAGAIN` or a failed connect.
const RETRY_DELAY: Duration = Duration::from_millis(25);

/// Serves one client until it disconnects or sends `QUIT`.
pub async fn run(stream: TcpStream, peer: SocketAddr, ctx: Arc<Context>) {
    ctx.stats.connected_clients.fetch_add(1, Ordering::Relaxed);
    ctx.stats.total_connections.fetch_add(1, Ordering::Relaxed);
    let mut session = Session::new(ctx.clone(), peer);
    if let Err(e) = session.serve(stream).await {
        tracing::debug!(client = %peer, error = %e, "client connection ended");
    }
    ctx.stats.connected_clients.fetch_sub(1, Ordering::Relaxed);
}

/// A command sent to one node, kept for redirections and retries.
#[derive(Debug)]
struct Sent {
    payload: Bytes,
    /// The slot it was routed by; `None` for keyless commands.
    slot: Option<u16>,
    blocking: bool,
    attempts: u8,
}

#[derive(Debug)]
enum MergeKind {
    Split(SplitKind),
    Fanout(Fanout),
}

#[derive(Debug)]
struct Part {
    sent: Sent,
    positions: Vec<u32>,
    reply: Option<Bytes>,
}

#[derive(Debug)]
struct Multi {
    kind: MergeKind,
    name: &'static str,
    parts: Vec<Part>,
    remaining: usize,
    total_keys: usize,
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

enum Target {
    Slot(u16),
    Addr(String),
}

struct Session {
    ctx: Arc<Context>,
    parser: RequestParser,
    core: Core,
}

struct Core {
    ctx: Arc<Context>,
    client: ClientState,
    scratch: Scratch,
    pending: VecDeque<Pending>,
    base_seq: u64,
    tx: mpsc::UnboundedSender<Reply>,
    rx: mpsc::UnboundedReceiver<Reply>,
    closing: bool,
}

impl Session {
    fn new(ctx: Arc<Context>, peer: SocketAddr) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = ctx.next_client_id();
        let authed = ctx.config.auth.password.is_none();
        Session {
            parser: RequestParser::new(ctx.limits),
            core: Core {
                client: ClientState::new(id, peer, authed),
                ctx: ctx.clone(),
                scratch: Scratch::default(),
                pending: VecDeque::new(),
                base_seq: 0,
                tx,
                rx,
                closing: false,
            },
            ctx,
        }
    }

    async fn serve(&mut self, mut stream: TcpStream) -> std::io::Result<()> {
        let (mut rd, mut wr) = stream.split();
        let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
        let mut wbuf = BytesMut::new();
        let max_pipeline = self.ctx.config.limits.max_pipeline;
        loop {
            self.process_input(&mut rbuf, max_pipeline).await;
            self.core.collect_ready(&mut wbuf);
            if !wbuf.is_empty() {
                wr.write_all(&wbuf).await?;
                if wbuf.capacity() > KEEP_WRITE_BUFFER {
                    wbuf = BytesMut::new();
                } else {
                    wbuf.clear();
                }
            }
            if self.core.closing && self.core.pending.is_empty() {
                let _ = wr.shutdown().await;
                return Ok(());
            }
            let can_read = !self.core.closing && self.core.pending.len() < max_pipeline;
            if can_read && rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
                rbuf.reserve(READ_CHUNK.max(rbuf.len()));
            }
            tokio::select! {
                n = rd.read_buf(&mut rbuf), if can_read => {
                    if n? == 0 {
                        return Ok(());
                    }
                }
                Some(first) = self.core.rx.recv() => {
                    self.core.on_reply(first).await;
                    while let Ok(r) = self.core.rx.try_recv() {
                        self.core.on_reply(r).await;
                    }
                }
            }
        }
    }

    /// Parses and dispatches every complete command in `rbuf`.
    async fn process_input(&mut self, rbuf: &mut BytesMut, max_pipeline: usize) {
        while !self.core.closing && self.core.pending.len() < max_pipeline {
            match self.parser.parse(rbuf) {
                Ok(Parsed::Command(n)) => {
                    let raw = rbuf.split_to(n).freeze();
                    self.core.handle(raw, self.parser.args()).await;
                }
                Ok(Parsed::Inline(n)) => {
                    rbuf.advance(n);
                    let raw = self.parser.take_inline();
                    self.core.handle(raw, self.parser.args()).await;
                }
                Ok(Parsed::Skip(n)) => rbuf.advance(n),
                Ok(Parsed::Incomplete) => return,
                Err(e) => {
                    let msg = reply::error(&format!("ERR Protocol error: {e}"));
                    self.core.pending.push_back(Pending::Close(msg));
                    self.core.closing = true;
                    rbuf.clear();
                    return;
                }
            }
        }
    }
}

impl Core {
    fn next_seq(&self) -> u64 {
        self.base_seq + self.pending.len() as u64
    }

    fn reply_to(&self, seq: u64, part: u32) -> ReplyTo {
        ReplyTo {
            tx: self.tx.clone(),
            seq,
            part,
        }
    }

    /// Routes one command and starts it.
    async fn handle(&mut self, raw: Bytes, args: &[(usize, usize)]) {
        self.ctx
            .stats
            .total_commands
            .fetch_add(1, Ordering::Relaxed);
        let seq = self.next_seq();
        let view = CommandView { raw: &raw, args };
        if !self.client.authed && !local::allowed_before_auth(&view) {
            self.pending.push_back(Pending::Ready(Bytes::from_static(
                b"-NOAUTH Authentication required.\r\n",
            )));
            return;
        }
        let proto = self.client.proto;
        match route(&view, &mut self.scratch) {
            Route::Slot(slot) => {
                let sent = Sent {
                    payload: raw.clone(),
                    slot: Some(slot),
                    blocking: false,
                    attempts: 0,
                };
                self.pending.push_back(Pending::Single(sent));
                self.send(Target::Slot(slot), raw, false, false, seq, 0)
                    .await;
            }
            Route::Blocking(slot) => {
                let sent = Sent {
                    payload: raw.clone(),
                    slot: Some(slot),
                    blocking: true,
                    attempts: 0,
                };
                self.pending.push_back(Pending::Single(sent));
                self.send(Target::Slot(slot), raw, false, true, seq, 0)
                    .await;
            }
            Route::AnyMaster => {
                let map = self.ctx.topology.load();
                let shards = map.shards();
                match shards.get(seq as usize % shards.len().max(1)) {
                    Some(shard) => {
                        let pool = shard.master.clone();
                        drop(map);
                        self.pending.push_back(Pending::Single(Sent {
                            payload: raw.clone(),
                            slot: None,
                            blocking: false,
                            attempts: 0,
                        }));
                        send_to_pool(&pool, proto, raw, false, self.reply_to(seq, 0)).await;
                    }
                    None => self.pending.push_back(Pending::Ready(no_cluster())),
                }
            }
            Route::Split(kind) => {
                let max_keys = self.ctx.config.limits.max_keys_per_subcommand;
                let subs = split::split(kind, &view, &self.scratch.keys, max_keys);
                let name = match kind {
                    SplitKind::Mget => "mget",
                    SplitKind::Mset => "mset",
                    SplitKind::Sum => crate::command::find(&view).map(|s| s.name).unwrap_or("del"),
                };
                let parts: Vec<Part> = subs
                    .into_iter()
                    .map(|s| Part {
                        sent: Sent {
                            payload: s.payload,
                            slot: Some(s.slot),
                            blocking: false,
                            attempts: 0,
                        },
                        positions: s.positions,
                        reply: None,
                    })
                    .collect();
                let sends: Vec<(u16, Bytes)> = parts
                    .iter()
                    .map(|p| (p.sent.slot.unwrap_or(0), p.sent.payload.clone()))
                    .collect();
                self.pending.push_back(Pending::Multi(Box::new(Multi {
                    kind: MergeKind::Split(kind),
                    name,
                    remaining: parts.len(),
                    parts,
                    total_keys: self.scratch.keys.len(),
                })));
                for (i, (slot, payload)) in sends.into_iter().enumerate() {
                    self.send(Target::Slot(slot), payload, false, false, seq, i as u32)
                        .await;
                }
            }
            Route::Fanout(kind) => {
                let pools: Vec<Arc<NodePool>> = self
                    .ctx
                    .topology
                    .load()
                    .shards()
                    .iter()
                    .map(|s| s.master.clone())
                    .collect();
                if pools.is_empty() {
                    self.pending.push_back(Pending::Ready(no_cluster()));
                    return;
                }
                let name = crate::command::find(&view)
                    .map(|s| s.name)
                    .unwrap_or("fanout");
                let parts = pools
                    .iter()
                    .map(|_| Part {
                        sent: Sent {
                            payload: raw.clone(),
                            slot: None,
                            blocking: false,
                            attempts: 0,
                        },
                        positions: Vec::new(),
                        reply: None,
                    })
                    .collect();
                self.pending.push_back(Pending::Multi(Box::new(Multi {
                    kind: MergeKind::Fanout(kind),
                    name,
                    parts,
                    remaining: pools.len(),
                    total_keys: 0,
                })));
                for (i, pool) in pools.iter().enumerate() {
                    send_to_pool(
                        pool,
                        proto,
                        raw.clone(),
                        false,
                        self.reply_to(seq, i as u32),
                    )
                    .await;
                }
            }
            Route::Local(cmd) => {
                let outcome = local::execute(cmd, &view, &mut self.client, &self.ctx);
                self.pending.push_back(match outcome {
                    LocalOutcome::Reply(b) => Pending::Ready(b),
                    LocalOutcome::Close(b) => {
                        self.closing = true;
                        Pending::Close(b)
                    }
                });
            }
            Route::Reply(b) => self.pending.push_back(Pending::Ready(b)),
        }
    }

    /// Sends a command to the owner of a slot (waiting a bounded time for an
    /// unknown owner to be discovered) or to a node by address.
    async fn send(
        &self,
        target: Target,
        payload: Bytes,
        asking: bool,
        blocking: bool,
        seq: u64,
        part: u32,
    ) {
        let proto = self.client.proto;
        let reply_to = self.reply_to(seq, part);
        let pool = match target {
            Target::Slot(slot) => {
                let owner = self.ctx.topology.load().master(slot).cloned();
                match owner {
                    Some(p) => p,
                    None => match self.wait_for_owner(slot).await {
                        Some(p) => p,
                        None => {
                            let msg = format!(
                                "CLUSTERDOWN Hash slot {slot} not served (slotbridge: no node owns it; the cluster may be failing over or misconfigured)"
                            );
                            reply_to.send(reply::error(&msg), ReplyStatus::Answered);
                            return;
                        }
                    },
                }
            }
            Target::Addr(addr) => self.ctx.topology.pool(&addr),
        };
        if blocking {
            let Ok(permit) = self.ctx.blocking.clone().try_acquire_owned() else {
                let msg = "ERR slotbridge: too many clients are blocked at once; try again later";
                reply_to.send(reply::error(msg), ReplyStatus::Answered);
                return;
            };
            let opts = self.ctx.topology.conn_options().clone();
            let conn = BackendConn::spawn_dedicated(pool.addr().clone(), opts, proto, permit);
            conn.send(BackendRequest {
                payload,
                asking,
                reply_to,
            })
            .await;
            return;
        }
        send_to_pool(&pool, proto, payload, asking, reply_to).await;
    }

    async fn wait_for_owner(&self, slot: u16) -> Option<Arc<NodePool>> {
        let topology = &self.ctx.topology;
        let mut versions = topology.subscribe();
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(self.ctx.config.limits.slot_wait_ms);
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

    /// Handles one reply frame from a backend.
    async fn on_reply(&mut self, r: Reply) {
        let Some(idx) = r.seq.checked_sub(self.base_seq) else {
            return;
        };
        let max_attempts = self.ctx.config.limits.max_redirects;
        let Some(entry) = self.pending.get_mut(idx as usize) else {
            return;
        };
        let (next, payload, blocking) = match entry {
            Pending::Single(sent) => {
                let next = decide(sent, &r, max_attempts, &self.ctx);
                match next {
                    Next::Done(data) => {
                        *entry = Pending::Ready(data);
                        return;
                    }
                    next => (next, sent.payload.clone(), sent.blocking),
                }
            }
            Pending::Multi(multi) => {
                let Some(part) = multi.parts.get_mut(r.part as usize) else {
                    return;
                };
                match decide(&mut part.sent, &r, max_attempts, &self.ctx) {
                    Next::Done(data) => {
                        if part.reply.is_none() {
                            part.reply = Some(data);
                            multi.remaining -= 1;
                        }
                        if multi.remaining == 0 {
                            let merged = merge_multi(&self.ctx, self.client.proto, multi);
                            *entry = Pending::Ready(merged);
                        }
                        return;
                    }
                    next => (next, part.sent.payload.clone(), false),
                }
            }
            Pending::Ready(_) | Pending::Close(_) => return,
        };
        if let Next::Resend { to, asking, delay } = next {
            if delay {
                tokio::time::sleep(RETRY_DELAY).await;
            }
            self.send(to, payload, asking, blocking, r.seq, r.part)
                .await;
        }
    }
}

/// Combines the replies of all parts into one reply.
fn merge_multi(ctx: &Context, proto: Proto, multi: &Multi) -> Bytes {
    {
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
        if !errors.is_empty() {
            return merge::failed(multi.name, &errors, multi.parts.len());
        }
        match multi.kind {
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
            MergeKind::Split(SplitKind::Sum) | MergeKind::Fanout(Fanout::Sum) => {
                merge::sum(&replies)
            }
            MergeKind::Fanout(Fanout::Concat) => merge::concat(&replies),
            MergeKind::Fanout(Fanout::First) => replies
                .first()
                .map(|r| (*r).clone())
                .unwrap_or_else(no_cluster),
            MergeKind::Fanout(Fanout::AllTrue) => merge::all_true(&replies),
            MergeKind::Fanout(Fanout::Info) => {
                let facts = local::proxy_facts(ctx);
                info::merge(&replies, &facts, proto)
            }
        }
    }
}

impl Core {
    /// Moves every complete reply at the head of the queue into `out`.
    fn collect_ready(&mut self, out: &mut BytesMut) {
        while let Some(front) = self.pending.front() {
            match front {
                Pending::Ready(b) => out.extend_from_slice(b),
                Pending::Close(b) => {
                    out.extend_from_slice(b);
                    self.closing = true;
                    self.pending.clear();
                    return;
                }
                Pending::Single(_) | Pending::Multi(_) => return,
            }
            self.pending.pop_front();
            self.base_seq += 1;
        }
    }
}

async fn send_to_pool(
    pool: &NodePool,
    proto: Proto,
    payload: Bytes,
    asking: bool,
    reply_to: ReplyTo,
) {
    pool.conn(proto)
        .send(BackendRequest {
            payload,
            asking,
            reply_to,
        })
        .await;
}

fn no_cluster() -> Bytes {
    reply::error("CLUSTERDOWN slotbridge: no cluster node is known yet (check the seeds and that the cluster is reachable)")
}

/// The one place that classifies a backend outcome: deliver it, follow a
/// redirection, or retry. Writes are retried only when they were never
/// sent or the server said they were not executed (MOVED/ASK/TRYAGAIN).
fn decide(sent: &mut Sent, r: &Reply, max_attempts: u8, ctx: &Context) -> Next {
    let done = || Next::Done(r.data.clone());
    if sent.attempts >= max_attempts {
        return done();
    }
    match r.status {
        ReplyStatus::Answered => {}
        ReplyStatus::NotSent => {
            return match sent.slot {
                Some(slot) => {
                    sent.attempts += 1;
                    ctx.topology.request_refresh();
                    Next::Resend {
                        to: Target::Slot(slot),
                        asking: false,
                        delay: true,
                    }
                }
                None => done(),
            };
        }
        ReplyStatus::Lost => return done(),
    }
    if reply_kind(r.data[0]) != ReplyKind::Error {
        return done();
    }
    let Some(redirect) = parse_redirect(&r.data) else {
        if r.data.starts_with(b"-TRYAGAIN") {
            if let Some(slot) = sent.slot {
                sent.attempts += 1;
                return Next::Resend {
                    to: Target::Slot(slot),
                    asking: false,
                    delay: true,
                };
            }
        }
        return done();
    };
    sent.attempts += 1;
    let addr = if redirect.addr.starts_with(':') {
        // Unknown endpoint: same host as the node we asked.
        let host = sent
            .slot
            .and_then(|s| ctx.topology.load().master(s).map(|p| p.addr().to_string()))
            .and_then(|a| a.rsplit_once(':').map(|(h, _)| h.to_string()))
            .unwrap_or_else(|| "127.0.0.1".into());
        format!("{host}{}", redirect.addr)
    } else {
        redirect.addr.to_string()
    };
    if redirect.ask {
        ctx.topology.stats.ask.fetch_add(1, Ordering::Relaxed);
        Next::Resend {
            to: Target::Addr(addr),
            asking: true,
            delay: false,
        }
    } else {
        ctx.topology.stats.moved.fetch_add(1, Ordering::Relaxed);
        ctx.topology.apply_moved(redirect.slot, &addr);
        Next::Resend {
            to: Target::Slot(redirect.slot),
            asking: false,
            delay: false,
        }
    }
}

/// A parsed `-MOVED slot addr` or `-ASK slot addr`.
#[derive(Debug, PartialEq, Eq)]
pub struct Redirect<'a> {
    /// ASK (one-shot) rather than MOVED (permanent).
    pub ask: bool,
    /// The slot.
    pub slot: u16,
    /// `host:port` (or `:port` when the server does not know its endpoint).
    pub addr: &'a str,
}

/// Parses a redirection error frame.
pub fn parse_redirect(frame: &[u8]) -> Option<Redirect<'_>> {
    let body = frame.strip_prefix(b"-")?.strip_suffix(b"\r\n")?;
    let text = std::str::from_utf8(body).ok()?;
    let mut words = text.split(' ');
    let ask = match words.next()? {
        "MOVED" => false,
        "ASK" => true,
        _ => return None,
    };
    let slot: u16 = words.next()?.parse().ok()?;
    let addr = words.next()?;
    (slot < 16384 && !addr.is_empty()).then_some(Redirect { ask, slot, addr })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_redirects() {
        assert_eq!(
            parse_redirect(b"-MOVED 3999 127.0.0.1:6381\r\n"),
            Some(Redirect {
                ask: false,
                slot: 3999,
                addr: "127.0.0.1:6381"
            })
        );
        assert_eq!(
            parse_redirect(b"-ASK 1 h:1\r\n"),
            Some(Redirect {
                ask: true,
                slot: 1,
                addr: "h:1"
            })
        );
        assert_eq!(parse_redirect(b"-ERR x\r\n"), None);
        assert_eq!(parse_redirect(b"-MOVED 99999 h:1\r\n"), None);
        assert_eq!(parse_redirect(b"-MOVED x h:1\r\n"), None);
    }
}
