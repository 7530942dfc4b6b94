//! Reads of streams in several slots: `XREAD` and `XREADGROUP` whose
//! stream keys hash to different slots, answered as one server answers
//! them.
//!
//! 1. **Without blocking.** Each slot's streams, with their IDs, are read
//!    on its master at once (`BLOCK` left out). The replies are put
//!    together in the order of the keys, leaving out the streams without
//!    entries, as one server does; nothing read is a null reply. An error
//!    is the reply (the one of the slot whose first key comes first: the
//!    same text for the same mistake on every slot).
//! 2. **Blocking**, when nothing was read and the command has `BLOCK`:
//!    each slot's streams wait on a private connection to its master
//!    with what is left of the timeout. The first reply ends the other
//!    waits (`CLIENT UNBLOCK`); what any of them read meanwhile is added
//!    to the reply in key order, because an entry `XREADGROUP` handed out
//!    is in the consumer's pending list and leaving it out would hide it.
//!    One server answers with the one stream that woke it; two streams
//!    written at the same moment may both be in the proxy's reply.
//!
//! A stream's `$` is its last ID when its slot's master reads the
//! command, as on one server; `>` of `XREADGROUP` likewise.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::multipop::{SlotWaits, Started, HOLD_REPLY_MAX};
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
    /// The argument index of `BLOCK`'s value, if given.
    block: Option<usize>,
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
        if !contiguous || first < 2 || keys.last()? + keys.len() >= args.len() {
            return None;
        }
        // The options before STREAMS, as Redis reads them.
        let mut block = None;
        let mut i = 1;
        while i < first - 1 {
            let a = &args[i][..];
            if a.eq_ignore_ascii_case(b"block") {
                block = Some(i + 1);
                i += 2;
            } else if a.eq_ignore_ascii_case(b"count") {
                i += 2;
            } else if a.eq_ignore_ascii_case(b"group") {
                i += 3;
            } else {
                i += 1;
            }
        }
        Some(StreamRead { args, keys, block })
    }

    /// `BLOCK`'s milliseconds when given and valid (a bad one is left to
    /// the nodes, which give Redis's error for it).
    fn block_ms(&self) -> Option<u64> {
        let v = parse_i64(&self.args[self.block?])?;
        u64::try_from(v).ok()
    }

    /// The command restricted to the streams `which` (indexes into its
    /// keys) with `block` as `BLOCK`'s value, or without `BLOCK`.
    fn restricted(&self, which: &[usize], block: Option<&[u8]>) -> Bytes {
        let streams = self.keys[0] - 1;
        let n = self.keys.len();
        let mut out: Vec<&[u8]> = Vec::with_capacity(streams + 1 + 2 * which.len());
        for (i, a) in self.args[..=streams].iter().enumerate() {
            match (self.block, block) {
                (Some(b), None) if i + 1 == b || i == b => {}
                (Some(b), Some(v)) if i == b => out.push(v),
                _ => out.push(a),
            }
        }
        out.extend(which.iter().map(|&i| &self.args[self.keys[i]][..]));
        out.extend(which.iter().map(|&i| &self.args[self.keys[i] + n][..]));
        reply::command(out)
    }

    /// Each slot's streams (indexes into the keys), in order of first
    /// appearance.
    fn groups(&self) -> Vec<(u16, Vec<usize>)> {
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        for (i, &k) in self.keys.iter().enumerate() {
            let s = slot(&self.args[k]);
            match groups.iter_mut().find(|(g, _)| *g == s) {
                Some((_, keys)) => keys.push(i),
                None => groups.push((s, vec![i])),
            }
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
    let mut out = BytesMut::new();
    let mut count = 0;
    for (i, key) in keys.iter().enumerate() {
        let Some(g) = replies.iter().position(|(which, _)| which.contains(&i)) else {
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
        loop {
            // Step 1: every slot at once, without blocking (a bad BLOCK
            // goes along for the nodes to refuse).
            let keep_block = read.block.filter(|_| read.block_ms().is_none());
            let block = keep_block.map(|b| &read.args[b][..]);
            let probes = groups
                .iter()
                .map(|(s, which)| (*s, read.restricted(which, block)))
                .collect();
            let replies: Vec<(Vec<usize>, Bytes)> = groups
                .iter()
                .map(|(_, which)| which.clone())
                .zip(read_all(&ctx, proto, probes).await)
                .collect();
            let reply = match merge(proto, &names, &replies) {
                Err(e) if moving_or_failing(&e) && !started_long_ago(started) => {
                    ctx.topology.request_refresh();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => e,
                Ok(Some(found)) => found,
                Ok(None) => match read.block_ms() {
                    None => nil(proto),
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

/// Step 2: waits on every slot with `left` ms of `BLOCK` (0: for ever)
/// and answers `to` with what the waits read; `None` when a slot moved
/// or its node failed (the read runs again).
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
        .map(|(s, which)| (*s, read.restricted(which, Some(left.as_bytes()))))
        .collect();
    let mut waits = match SlotWaits::start(ctx, info, proto, parts, to).await {
        Started::Waiting(w) => w,
        Started::Again => return None,
        Started::Answered => return Some(()),
    };
    let first = match waits.first(to).await {
        None => {
            waits.end_others(ctx, proto, None).await;
            return Some(());
        }
        Some(None) => {
            to.clone().send(
                reply::error("ERR slotbridge: the connections of a cross-slot stream read closed without a reply"),
                ReplyStatus::Final,
            );
            return Some(());
        }
        Some(Some(r)) => r,
    };
    let transient =
        !matches!(first.status, ReplyStatus::Answered) || moving_or_failing(&first.data);
    let winner = first.part as usize;
    let mut got: Vec<Option<Bytes>> = vec![None; groups.len()];
    got[winner] = Some(first.data);
    // Collect what the others read until they ended (bounded).
    let collect = async {
        waits.end_others(ctx, proto, Some(winner)).await;
        while let Some(r) = waits.next_ended().await {
            if let Some(g) = got.get_mut(r.part as usize) {
                *g = Some(r.data);
            }
        }
    };
    let _ = tokio::time::timeout(HOLD_REPLY_MAX, collect).await;
    if transient {
        return None;
    }
    let names: Vec<&[u8]> = read.keys.iter().map(|&k| &read.args[k][..]).collect();
    // The first reply decides an error or an empty read; what the others
    // read is added (errors and empty replies of ended waits are not).
    let first_reply = got[winner].clone().unwrap_or_else(|| nil(proto));
    if first_reply.first() == Some(&b'-') {
        to.clone().send(first_reply, ReplyStatus::Final);
        return Some(());
    }
    let replies: Vec<(Vec<usize>, Bytes)> = groups
        .iter()
        .zip(got)
        .filter_map(|((_, which), r)| {
            let r = r.filter(|r| r.first() != Some(&b'-'))?;
            Some((which.clone(), r))
        })
        .collect();
    let reply = match merge(proto, &names, &replies) {
        Ok(Some(found)) => found,
        Ok(None) => nil(proto),
        Err(e) => e,
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
            text(&r.restricted(&[0, 2], None)),
            "*8 $5 XREAD $5 COUNT $1 2 $7 STREAMS $1 a $1 c $1 0 $1 $ "
        );
        assert_eq!(
            text(&r.restricted(&[1], Some(b"40"))),
            "*8 $5 XREAD $5 COUNT $1 2 $5 BLOCK $2 40 $7 STREAMS $1 b $3 1-1 "
        );
        let r = read("XREADGROUP GROUP g c NOACK STREAMS a b > >");
        assert_eq!(r.block_ms(), None);
        assert_eq!(
            text(&r.restricted(&[1], None)),
            "*8 $10 XREADGROUP $5 GROUP $1 g $1 c $5 NOACK $7 STREAMS $1 b $1 > "
        );
        let r = read("XREAD BLOCK -1 STREAMS a b 0 0");
        assert_eq!(r.block_ms(), None);
        assert!(StreamRead::new("get", vec![], vec![1]).is_none());
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
