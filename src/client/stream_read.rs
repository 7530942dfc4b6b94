//! Reads of streams in several slots: `XREAD` and `XREADGROUP` whose
//! stream keys hash to different slots, answered as one server answers
//! them.
//!
//! 1. **Without blocking.** Each slot's streams, with their IDs, are read
//!    on its master at once (`BLOCK` left out). The replies are put
//!    together in the order of the keys, leaving out the streams without
//!    entries, as one server does; nothing read is a null reply. The
//!    options are checked first, as Redis reads them. An error is the
//!    first key's, as one server checks them: `XREADGROUP` checks every
//!    stream's type and group, and every ID, in key order (one read-only
//!    script per slot) before it reads, since one server hands out no
//!    entry with an error; `XREAD` makes the same checks when slots
//!    answered errors.
//! 2. **Blocking**, when nothing was read and the command has `BLOCK`:
//!    each slot's streams wait on a private connection to its master
//!    with what is left of the timeout. The first reply ends the other
//!    waits (`CLIENT UNBLOCK`); what any of them read meanwhile is added
//!    to the reply in key order, because an entry `XREADGROUP` handed out
//!    is in the consumer's pending list and leaving it out would hide it.
//!    One server answers with the one stream that woke it; two streams
//!    written at the same moment may both be in the proxy's reply. What
//!    a slot read is never dropped for another slot's moved-slot or
//!    failover error: the reply is then what the others read.
//!
//! A stream's `$` is its last ID when its slot's master reads the
//! command, as on one server; `>` of `XREADGROUP` likewise.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::multipop::{SlotWaits, Started};
use super::nodecall::{call_master, moving_or_failing};
use crate::backend::{ReplyStatus, ReplyTo};
use crate::client::registry::ClientInfo;
use crate::cluster::slot::slot;
use crate::protocol::reply::{self, Proto};
use crate::protocol::request::parse_i64;
use crate::protocol::scan::{bulk_body, children};
use crate::server::Context;

/// One client `XREAD`/`XREADGROUP` over streams in several slots.
#[derive(Debug, Clone)]
pub struct StreamRead {
    /// The client's arguments.
    args: Vec<Bytes>,
    /// The argument indexes of the stream keys (contiguous, in order);
    /// each key's ID follows `keys.len()` arguments later.
    keys: Vec<usize>,
    /// The argument indexes of the values of `BLOCK` (Redis takes the
    /// last; each one is checked).
    blocks: Vec<usize>,
    /// The argument index of `XREADGROUP`'s group name.
    group: Option<usize>,
    /// Whether it is `XREADGROUP`.
    xreadgroup: bool,
}

/// What a slot's read gets of the client's `BLOCK`.
#[derive(Debug, Clone, Copy)]
enum Block<'a> {
    /// Left out: the read does not block.
    Without,
    /// One `BLOCK` with this many milliseconds.
    For(&'a [u8]),
}

/// Redis's error for a `STREAMS` list without an ID for each key, in the
/// nodes' version's words.
fn unbalanced(xreadgroup: bool) -> String {
    let name = if xreadgroup { "xreadgroup" } else { "xread" };
    let symbol = match (xreadgroup, crate::nodes::at_least(7, 4)) {
        (true, _) => "ID or '>'",
        (false, true) => "ID, '+', or '$'",
        (false, false) => "ID or '$'",
    };
    if crate::nodes::at_least(7, 2) {
        format!("ERR Unbalanced '{name}' list of streams: for each stream key an {symbol} must be specified.")
    } else {
        "ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified."
            .into()
    }
}

impl StreamRead {
    /// The read `args` asks for, with its keys at `keys` (as the command
    /// table finds them); `None` for another command.
    pub fn new(name: &str, args: Vec<Bytes>, keys: Vec<usize>) -> Option<StreamRead> {
        if !matches!(name, "xread" | "xreadgroup") {
            return None;
        }
        let first = *keys.first()?;
        let contiguous = keys.windows(2).all(|w| w[1] == w[0] + 1);
        // Each key has its ID: as many arguments after the keys (one more
        // is Redis's "Unbalanced" error, given by `option_error`).
        let after = args.len().checked_sub(first + keys.len())?;
        if !contiguous || first < 2 || (after != keys.len() && after != keys.len() + 1) {
            return None;
        }
        // The options before STREAMS, as Redis reads them.
        let (mut blocks, mut group) = (Vec::new(), None);
        let mut i = 1;
        while i < first - 1 {
            let a = &args[i][..];
            if a.eq_ignore_ascii_case(b"block") {
                blocks.push(i + 1);
                i += 2;
            } else if a.eq_ignore_ascii_case(b"count") {
                i += 2;
            } else if a.eq_ignore_ascii_case(b"group") {
                group = Some(i + 1);
                i += 3;
            } else {
                i += 1;
            }
        }
        let group = group.filter(|_| name == "xreadgroup");
        Some(StreamRead {
            args,
            keys,
            blocks,
            group,
            xreadgroup: name == "xreadgroup",
        })
    }

    /// Redis's error for the options, checked as it reads them before any
    /// key: `BLOCK`'s and `COUNT`'s values, unbalanced streams, options
    /// of the other command, a missing `STREAMS` or `GROUP`.
    fn option_error(&self) -> Option<Bytes> {
        let argc = self.args.len();
        let (mut streams, mut group) = (false, false);
        let mut i = 1;
        while i < argc {
            let more = argc - i - 1;
            let o = &self.args[i][..];
            if o.eq_ignore_ascii_case(b"block") && more > 0 {
                i += 1;
                match parse_i64(&self.args[i]) {
                    None => {
                        return Some(reply::error(
                            "ERR timeout is not an integer or out of range",
                        ))
                    }
                    Some(t) if t < 0 => return Some(reply::error("ERR timeout is negative")),
                    Some(_) => {}
                }
            } else if o.eq_ignore_ascii_case(b"count") && more > 0 {
                i += 1;
                if parse_i64(&self.args[i]).is_none() {
                    return Some(reply::error("ERR value is not an integer or out of range"));
                }
            } else if o.eq_ignore_ascii_case(b"streams") && more > 0 {
                if !(argc - i - 1).is_multiple_of(2) {
                    return Some(reply::error(&unbalanced(self.xreadgroup)));
                }
                streams = true;
                break;
            } else if o.eq_ignore_ascii_case(b"group") && more >= 2 {
                if !self.xreadgroup {
                    return Some(reply::error("ERR The GROUP option is only supported by XREADGROUP. You called XREAD instead."));
                }
                group = true;
                i += 2;
            } else if o.eq_ignore_ascii_case(b"noack") {
                if !self.xreadgroup {
                    return Some(reply::error("ERR The NOACK option is only supported by XREADGROUP. You called XREAD instead."));
                }
            } else {
                return Some(reply::error("ERR syntax error"));
            }
            i += 1;
        }
        if !streams {
            return Some(reply::error("ERR syntax error"));
        }
        (self.xreadgroup && !group).then(|| reply::error("ERR Missing GROUP option for XREADGROUP"))
    }

    /// The last `BLOCK`'s milliseconds (`option_error` refused bad ones).
    fn block_ms(&self) -> Option<u64> {
        let mut ms = None;
        for &b in &self.blocks {
            ms = Some(u64::try_from(parse_i64(&self.args[b])?).ok()?);
        }
        ms
    }

    /// The command restricted to the streams `which` (indexes into its
    /// keys), with `block` for its `BLOCK` options.
    fn restricted(&self, which: &[usize], block: Block<'_>) -> Bytes {
        let streams = self.keys[0] - 1;
        let n = self.keys.len();
        let mut out: Vec<&[u8]> = Vec::with_capacity(streams + 3 + 2 * which.len());
        out.push(&self.args[0]);
        if let Block::For(v) = block {
            out.extend([&b"BLOCK"[..], v]);
        }
        for (i, a) in self.args[..=streams].iter().enumerate().skip(1) {
            if !self.blocks.iter().any(|&b| i == b || i + 1 == b) {
                out.push(a);
            }
        }
        out.extend(which.iter().map(|&i| &self.args[self.keys[i]][..]));
        out.extend(which.iter().map(|&i| &self.args[self.keys[i] + n][..]));
        reply::command(out)
    }

    /// Each slot's streams (indexes into the keys), in order of first
    /// appearance. A key named again goes to another read of that slot,
    /// so that each read's reply names a stream once and its entries'
    /// place in the client's order is known.
    fn groups(&self) -> Vec<(u16, Vec<usize>)> {
        let mut seen: HashMap<&[u8], usize> = HashMap::new();
        let mut at: HashMap<(u16, usize), usize> = HashMap::new();
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        for (i, &k) in self.keys.iter().enumerate() {
            let key = &self.args[k][..];
            let round = seen.entry(key).or_insert(0);
            let s = slot(key);
            let g = *at.entry((s, *round)).or_insert_with(|| {
                groups.push((s, Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(i);
            *round += 1;
        }
        groups
    }
}

/// One stream's part of a reply: its key and entries, as the node wrote
/// them (a `*2` pair in RESP2; the key and the value of a map in RESP3).
struct Part<'a> {
    key: &'a [u8],
    frame: &'a [u8],
}

/// The streams of a node's reply to a read; `None` for an error or a
/// reply of another shape.
fn parts(frame: &[u8]) -> Option<Vec<Part<'_>>> {
    if frame == b"*-1\r\n" || frame == b"_\r\n" {
        return Some(Vec::new());
    }
    let kids = children(frame)?;
    if frame.first() == Some(&b'%') {
        kids.chunks(2)
            .map(|kv| {
                let (ks, ke) = kv.first().copied()?;
                let (_, ve) = kv.get(1).copied()?;
                Some(Part {
                    key: bulk_body(&frame[ks..ke])?,
                    frame: &frame[ks..ve],
                })
            })
            .collect()
    } else {
        kids.iter()
            .map(|&(s, e)| {
                let pair = &frame[s..e];
                let (ks, ke) = children(pair)?.first().copied()?;
                Some(Part {
                    key: bulk_body(&pair[ks..ke])?,
                    frame: pair,
                })
            })
            .collect()
    }
}

/// The replies of the slots' reads put together in the order of `keys`
/// (`replies` as `(keys of the slot, reply)`, slots in order of their
/// first key): `Err` with the first error, `Ok(None)` when nothing was
/// read.
fn merge(
    proto: Proto,
    keys: &[&[u8]],
    replies: &[(Vec<usize>, Bytes)],
) -> Result<Option<Bytes>, Bytes> {
    if let Some((_, e)) = replies.iter().find(|(_, r)| r.first() == Some(&b'-')) {
        return Err(e.clone());
    }
    let mut split = Vec::with_capacity(replies.len());
    for (_, r) in replies {
        let Some(p) = parts(r) else {
            return Err(reply::error(
                "ERR slotbridge: unexpected reply of a node to a stream read",
            ));
        };
        split.push(p.into_iter().peekable());
    }
    // Each slot's streams come in its keys' order: walk the client's.
    let mut owner = vec![None; keys.len()];
    for (g, (which, _)) in replies.iter().enumerate() {
        for &i in which {
            if let Some(o) = owner.get_mut(i) {
                *o = Some(g);
            }
        }
    }
    let mut out = BytesMut::new();
    let mut count = 0;
    for (i, key) in keys.iter().enumerate() {
        let Some(g) = owner[i] else {
            continue;
        };
        if let Some(p) = split[g].next_if(|p| p.key == *key) {
            out.extend_from_slice(p.frame);
            count += 1;
        }
    }
    if count == 0 {
        return Ok(None);
    }
    let kind = if proto == Proto::Resp3 { '%' } else { '*' };
    let mut frame = BytesMut::from(format!("{kind}{count}\r\n").as_bytes());
    frame.extend_from_slice(&out);
    Ok(Some(frame.freeze()))
}

/// A read's empty reply.
fn nil(proto: Proto) -> Bytes {
    Bytes::from_static(if proto == Proto::Resp3 {
        b"_\r\n"
    } else {
        b"*-1\r\n"
    })
}

/// Whether a reply says the slot moved, the node is failing over or the
/// connection was lost: the slot read nothing the client can be given.
fn is_transient(reply: &[u8]) -> bool {
    moving_or_failing(reply) || super::nodecall::is_lost(reply)
}

/// Whether a reply carries entries (not an error, not an empty read).
fn has_entries(reply: &[u8]) -> bool {
    !matches!(reply.first(), Some(b'-') | None) && reply != b"*-1\r\n" && reply != b"_\r\n"
}

/// What the slots read (`replies` as `(keys of the slot, reply)`), for
/// the client: when a slot's reply says it moved or failed over but
/// another slot read entries, those entries (nothing read there stays
/// unanswered); `None` when the read must run again.
fn reply_of(proto: Proto, names: &[&[u8]], replies: &[(Vec<usize>, Bytes)]) -> Option<Bytes> {
    if replies.iter().any(|(_, r)| is_transient(r)) {
        if !replies.iter().any(|(_, r)| has_entries(r)) {
            return None;
        }
        let kept: Vec<(Vec<usize>, Bytes)> = replies
            .iter()
            .filter(|(_, r)| !is_transient(r))
            .cloned()
            .collect();
        return Some(
            merge(proto, names, &kept).map_or_else(|e| e, |r| r.unwrap_or_else(|| nil(proto))),
        );
    }
    Some(match merge(proto, names, replies) {
        Ok(Some(found)) => found,
        Ok(None) => nil(proto),
        Err(e) => e,
    })
}

/// Runs `read` for a client and delivers its one reply to `to` (see the
/// module documentation).
pub fn spawn(
    ctx: Arc<Context>,
    info: Arc<ClientInfo>,
    proto: Proto,
    read: StreamRead,
    to: ReplyTo,
) {
    tokio::spawn(async move {
        let started = Instant::now();
        let names: Vec<&[u8]> = read.keys.iter().map(|&k| &read.args[k][..]).collect();
        let groups = read.groups();
        if let Some(e) = read.option_error() {
            to.send(e, ReplyStatus::Final);
            return;
        }
        loop {
            if read.group.is_some() {
                match check_streams(&ctx, proto, &read, &groups).await {
                    Checked::Fine => {}
                    Checked::Refused(e) => {
                        to.send(e, ReplyStatus::Final);
                        return;
                    }
                    Checked::Again if !started_long_ago(started) => {
                        ctx.topology.request_refresh();
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    Checked::Again => {}
                }
            }
            // Step 1: every slot at once, without blocking.
            let ms = read.block_ms();
            let probes = groups
                .iter()
                .map(|(s, which)| (*s, read.restricted(which, Block::Without)))
                .collect();
            let replies: Vec<(Vec<usize>, Bytes)> = groups
                .iter()
                .map(|(_, which)| which.clone())
                .zip(read_all(&ctx, proto, probes).await)
                .collect();
            let reply = match reply_of(proto, &names, &replies) {
                None if !started_long_ago(started) => {
                    ctx.topology.request_refresh();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                None => merge(proto, &names, &replies).map_or_else(|e| e, |_| nil(proto)),
                // Which key's error one server gives (XREADGROUP checked
                // before reading).
                Some(e) if e.first() == Some(&b'-') && read.group.is_none() && groups.len() > 1 => {
                    match check_streams(&ctx, proto, &read, &groups).await {
                        Checked::Refused(first) => first,
                        Checked::Fine | Checked::Again => e,
                    }
                }
                Some(r) if r.first() == Some(&b'-') || has_entries(&r) => r,
                Some(empty) => match ms {
                    None => empty,
                    Some(ms) => {
                        let left = if ms == 0 {
                            0
                        } else {
                            let spent = started.elapsed().as_millis() as u64;
                            if spent >= ms {
                                to.send(nil(proto), ReplyStatus::Final);
                                return;
                            }
                            ms - spent
                        };
                        match wait_everywhere(&ctx, &info, proto, &read, &groups, left, &to).await {
                            Some(()) => return,
                            None => {
                                ctx.topology.request_refresh();
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            }
                        }
                    }
                },
            };
            to.send(reply, ReplyStatus::Final);
            return;
        }
    });
}

/// Whether a read has retried long enough after a moved slot or a
/// failing node (the node's error is then the reply).
fn started_long_ago(started: Instant) -> bool {
    started.elapsed() > Duration::from_secs(10)
}

/// Sends each slot's read (`payloads`, with their slots) to its master at
/// once and returns the replies (or errors) in order.
async fn read_all(ctx: &Arc<Context>, proto: Proto, payloads: Vec<(u16, Bytes)>) -> Vec<Bytes> {
    let mut set = tokio::task::JoinSet::new();
    for (i, (slot, payload)) in payloads.into_iter().enumerate() {
        let ctx = ctx.clone();
        set.spawn(async move { (i, call_master(&ctx, proto, slot, payload, 0).await) });
    }
    let mut out = vec![Bytes::new(); set.len()];
    while let Some(done) = set.join_next().await {
        if let Ok((i, r)) = done {
            out[i] = r.unwrap_or_else(|e| e);
        }
    }
    out
}

/// How [`check_groups`] went.
enum Checked {
    /// Every stream is a stream with the group, every ID is valid.
    Fine,
    /// Redis's error for the first key that fails.
    Refused(Bytes),
    /// A slot moved or its node failed: check again.
    Again,
}

/// For each of a slot's keys in order: `{index, "WRONGTYPE"}` for a key
/// that is not a stream, `{index, "NOGROUP"}` for one without the group
/// `ARGV[1]` (when given), `{0, ""}` when all are fine.
const CHECK_STREAMS: &[u8] = b"for i, k in ipairs(KEYS) do \
local t = redis.call('TYPE', k)['ok'] \
if t ~= 'stream' and t ~= 'none' then return {i, 'WRONGTYPE'} end \
if ARGV[1] then local found = false \
if t == 'stream' then for _, g in ipairs(redis.call('XINFO', 'GROUPS', k)) do \
if g[2] == ARGV[1] then found = true end end end \
if not found then return {i, 'NOGROUP'} end end \
end return {0, ''}";

/// The checks Redis makes key by key before it reads: each stream's type
/// and `XREADGROUP`'s group (a read-only script per slot), and its ID.
/// `XREADGROUP` runs them first, so that an error hands out no entry;
/// `XREAD` when slots answered errors, to give the first key's.
async fn check_streams(
    ctx: &Arc<Context>,
    proto: Proto,
    read: &StreamRead,
    groups: &[(u16, Vec<usize>)],
) -> Checked {
    let group = read.group.map(|g| read.args[g].clone());
    let n = read.keys.len();
    let scripts = groups
        .iter()
        .map(|(s, which)| {
            let count = which.len().to_string();
            let mut args: Vec<&[u8]> = vec![b"EVAL_RO", CHECK_STREAMS, count.as_bytes()];
            args.extend(which.iter().map(|&i| &read.args[read.keys[i]][..]));
            args.extend(group.as_deref());
            (*s, reply::command(args))
        })
        .collect();
    // The first failing key of each slot, as an index into the keys.
    let mut first: Option<(usize, &'static str)> = None;
    for (r, (_, which)) in read_all(ctx, proto, scripts).await.iter().zip(groups) {
        if is_transient(r) {
            return Checked::Again;
        }
        let Some(kids) = children(r).filter(|k| k.len() == 2) else {
            return Checked::Refused(if r.first() == Some(&b'-') {
                r.clone()
            } else {
                reply::error("ERR slotbridge: unexpected reply of a node to a stream check")
            });
        };
        let at = parse_i64(r.get(kids[0].0 + 1..kids[0].1 - 2).unwrap_or_default()).unwrap_or(0);
        let kind = bulk_body(&r[kids[1].0..kids[1].1]).unwrap_or_default();
        let Some(&key) = usize::try_from(at - 1).ok().and_then(|i| which.get(i)) else {
            continue;
        };
        let kind = if kind == b"WRONGTYPE" {
            "WRONGTYPE"
        } else {
            "NOGROUP"
        };
        if first.is_none_or(|(k, _)| key < k) {
            first = Some((key, kind));
        }
    }
    // Key by key as Redis checks them: the type, the group, the ID.
    for i in 0..n {
        match first {
            Some((k, "WRONGTYPE")) if k == i => {
                return Checked::Refused(reply::error(
                    "WRONGTYPE Operation against a key holding the wrong kind of value",
                ))
            }
            Some((k, _)) if k == i => {
                let key = &read.args[read.keys[k]];
                let key = if ctx.rules.is_empty() {
                    &key[..]
                } else {
                    ctx.rules.decode(key)
                };
                let mut msg = b"NOGROUP No such key '".to_vec();
                msg.extend_from_slice(key);
                msg.extend_from_slice(b"' or consumer group '");
                msg.extend_from_slice(group.as_deref().unwrap_or_default());
                msg.extend_from_slice(b"' in XREADGROUP with GROUP option");
                return Checked::Refused(reply::error_bytes(&msg));
            }
            _ => {}
        }
        if let Some(e) = id_error(&read.args[read.keys[i] + n], group.is_some()) {
            return Checked::Refused(reply::error(e));
        }
    }
    Checked::Fine
}

/// Redis's error for an ID of `XREADGROUP` (`group`) or `XREAD`, if it
/// refuses it.
fn id_error(id: &[u8], group: bool) -> Option<&'static str> {
    match (id, group) {
        (b">", true) | (b"$", false) => return None,
        (b"$", true) => return Some("ERR The $ ID is meaningless in the context of XREADGROUP: you want to read the history of this consumer by specifying a proper ID, or use the > ID to get new messages. The $ ID would just return an empty result set."),
        (b">", false) => return Some("ERR The > ID can be specified only when calling XREADGROUP using the GROUP <group> <consumer> option."),
        _ => {}
    }
    // What `strtoull` takes whole: blanks, a sign, digits within 64 bits.
    let number = |s: &[u8]| {
        let s = s.trim_ascii_start();
        let s = s
            .strip_prefix(b"+")
            .or_else(|| s.strip_prefix(b"-"))
            .unwrap_or(s);
        !s.is_empty()
            && s.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(s).is_ok_and(|t| t.parse::<u64>().is_ok())
    };
    let valid = id.len() < 128
        && match id.iter().position(|&b| b == b'-') {
            Some(d) => number(&id[..d]) && number(&id[d + 1..]),
            None => number(id),
        };
    (!valid).then_some("ERR Invalid stream ID specified as stream command argument")
}

/// Step 2: waits on every slot with `left` ms of `BLOCK` (0: for ever)
/// and answers `to` with what the waits read; `None` when a slot moved
/// or its node failed and nothing was read (the read runs again).
async fn wait_everywhere(
    ctx: &Arc<Context>,
    info: &ClientInfo,
    proto: Proto,
    read: &StreamRead,
    groups: &[(u16, Vec<usize>)],
    left: u64,
    to: &ReplyTo,
) -> Option<()> {
    let left = left.to_string();
    let parts = groups
        .iter()
        .map(|(s, which)| (*s, read.restricted(which, Block::For(left.as_bytes()))))
        .collect();
    let mut waits = match SlotWaits::start(ctx, info, proto, parts, to).await {
        Started::Waiting(w) => w,
        Started::Again => return None,
        Started::Answered => return Some(()),
    };
    let first = waits.first(to).await;
    waits.done_waiting(info);
    let first = match first {
        None => return Some(()),
        Some(None) => {
            to.clone().send(
                reply::error("ERR slotbridge: the connections of a cross-slot stream read closed without a reply"),
                ReplyStatus::Final,
            );
            return Some(());
        }
        Some(Some(r)) => r,
    };
    let winner = first.part as usize;
    let mut got: Vec<Option<Bytes>> = vec![None; groups.len()];
    got[winner] = Some(if first.status == ReplyStatus::Answered {
        first.data
    } else {
        reply::error("ERR slotbridge: connection to node lost")
    });
    // What the other waits read until they ended (5 s at most): an entry
    // XREADGROUP handed out must reach the client.
    waits.end_others(ctx, proto, Some(winner)).await;
    while let Some(r) = waits.next_ended().await {
        if let Some(g) = got.get_mut(r.part as usize) {
            *g = Some(r.data);
        }
    }
    let names: Vec<&[u8]> = read.keys.iter().map(|&k| &read.args[k][..]).collect();
    let first_reply = got[winner].clone().unwrap_or_else(|| nil(proto));
    // Ended waits answer empty (or with an error once unblocked): what
    // they read is added to the first reply, their errors are not.
    let replies: Vec<(Vec<usize>, Bytes)> = groups
        .iter()
        .zip(got)
        .enumerate()
        .filter_map(|(i, ((_, which), r))| {
            let r = r.filter(|r| i == winner || has_entries(r))?;
            Some((which.clone(), r))
        })
        .collect();
    let reply = reply_of(proto, &names, &replies)?;
    let reply = if has_entries(&reply) {
        reply
    } else {
        first_reply
    };
    to.clone().send(reply, ReplyStatus::Final);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(line: &str) -> StreamRead {
        let args: Vec<Bytes> = line
            .split(' ')
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        let spec = crate::command::find(&args[..]).expect("known");
        let mut keys = Vec::new();
        crate::command::keys::key_indices(spec, &args, false, &mut keys).expect("keys");
        StreamRead::new(spec.name, args, keys).expect("a read")
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).replace("\r\n", " ")
    }

    #[test]
    fn restricted_reads_keep_their_options() {
        let r = read("XREAD COUNT 2 BLOCK 100 STREAMS a b c 0 1-1 $");
        assert_eq!(r.block_ms(), Some(100));
        assert_eq!(
            text(&r.restricted(&[0, 2], Block::Without)),
            "*8 $5 XREAD $5 COUNT $1 2 $7 STREAMS $1 a $1 c $1 0 $1 $ "
        );
        assert_eq!(
            text(&r.restricted(&[1], Block::For(b"40"))),
            "*8 $5 XREAD $5 BLOCK $2 40 $5 COUNT $1 2 $7 STREAMS $1 b $3 1-1 "
        );
        // Every BLOCK goes (Redis takes the last); a bad one is refused
        // first, with Redis's error.
        let r = read("XREAD BLOCK 3000 BLOCK 100 STREAMS a b $ $");
        assert_eq!(r.block_ms(), Some(100));
        assert_eq!(
            text(&r.restricted(&[0], Block::Without)),
            "*4 $5 XREAD $7 STREAMS $1 a $1 $ "
        );
        let r = read("XREAD BLOCK x BLOCK 100 STREAMS a b $ $");
        assert_eq!(r.block_ms(), None);
        assert_eq!(
            r.option_error(),
            Some(reply::error(
                "ERR timeout is not an integer or out of range"
            ))
        );
        let r = read("XREADGROUP GROUP g c NOACK STREAMS a b > >");
        assert_eq!(r.block_ms(), None);
        assert_eq!(
            text(&r.restricted(&[1], Block::Without)),
            "*8 $10 XREADGROUP $5 GROUP $1 g $1 c $5 NOACK $7 STREAMS $1 b $1 > "
        );
        assert_eq!(r.group, Some(2));
        assert!(StreamRead::new("xread", r.args.clone(), vec![6]).is_none());
        let r = read("XREAD BLOCK -1 STREAMS a b 0 0");
        assert_eq!(r.block_ms(), None);
        assert!(StreamRead::new("get", vec![], vec![1]).is_none());
    }

    #[test]
    fn group_ids_as_redis_checks_them() {
        for ok in [&b">"[..], b"0", b"1-2", b"01", b"+5", b" 7-1", b"1--1"] {
            assert_eq!(id_error(ok, true), None, "{ok:?}");
        }
        assert_eq!(id_error(b"$", false), None);
        assert!(id_error(b"$", true).is_some_and(|e| e.starts_with("ERR The $ ID")));
        assert!(id_error(b">", false).is_some_and(|e| e.starts_with("ERR The > ID")));
        for bad in [
            &b"-"[..],
            b"+",
            b"1-*",
            b"x",
            b"1-",
            b"-1",
            b"18446744073709551616",
            b"1 ",
        ] {
            assert!(id_error(bad, true).is_some_and(|e| e.starts_with("ERR Invalid stream ID")));
        }
        assert!(
            has_entries(b"*1\r\n*0\r\n") && !has_entries(b"*-1\r\n") && !has_entries(b"-ERR x\r\n")
        );
    }

    #[test]
    fn replies_merge_in_key_order() {
        let a = b"*2\r\n$1\r\na\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n";
        let c = b"*2\r\n$1\r\nc\r\n*0\r\n";
        let both = Bytes::from([&b"*2\r\n"[..], a, c].concat());
        let keys: [&[u8]; 3] = [b"a", b"b", b"c"];
        let merged = merge(
            Proto::Resp2,
            &keys,
            &[
                (vec![0, 2], both.clone()),
                (vec![1], Bytes::from_static(b"*-1\r\n")),
            ],
        );
        assert_eq!(merged, Ok(Some(both)));
        let merged = merge(
            Proto::Resp2,
            &keys,
            &[
                (vec![0], Bytes::from_static(b"*-1\r\n")),
                (vec![1, 2], Bytes::from([&b"*1\r\n"[..], c].concat())),
            ],
        );
        assert_eq!(merged, Ok(Some(Bytes::from([&b"*1\r\n"[..], c].concat()))));
        let none = merge(
            Proto::Resp3,
            &keys,
            &[(vec![0], Bytes::from_static(b"_\r\n"))],
        );
        assert_eq!(none, Ok(None));
        let map = Bytes::from_static(b"%1\r\n$1\r\nb\r\n*0\r\n");
        let merged = merge(
            Proto::Resp3,
            &keys,
            &[
                (vec![0], Bytes::from_static(b"_\r\n")),
                (vec![1], map.clone()),
            ],
        );
        assert_eq!(merged, Ok(Some(map)));
        let wrong = Bytes::from_static(
            b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        );
        assert_eq!(
            merge(
                Proto::Resp2,
                &keys,
                &[
                    (vec![0], Bytes::from_static(b"*-1\r\n")),
                    (vec![1], wrong.clone())
                ]
            ),
            Err(wrong)
        );
    }
}
