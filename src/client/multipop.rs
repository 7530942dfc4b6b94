//! Pops from keys in several slots: `BLPOP`, `BRPOP`, `BZPOPMIN`,
//! `BZPOPMAX`, `BLMPOP`, `BZMPOP` and the non-blocking `LMPOP`, `ZMPOP`,
//! answered as one server answers them.
//!
//! 1. **In key order, without blocking.** The keys are taken in runs of
//!    neighbours in one slot; each run gets the command itself, restricted
//!    to its keys, inside `MULTI`/`EXEC` on its master (where a blocking
//!    command does not block). The first run that pops gives the reply,
//!    the node's own; a run's error (`WRONGTYPE`, a bad timeout or count)
//!    is the reply, as Redis checks keys in order. `LMPOP`/`ZMPOP` end
//!    here (the last run's empty reply).
//! 2. **Blocking on every slot at once.** Each slot's keys wait on a
//!    private connection to its master, with what is left of the timeout.
//!    The first reply decides: a pop is the client's reply; an empty reply
//!    (the timeout, or `CLIENT UNBLOCK` of this client, which reaches the
//!    first slot's wait) or an error ends the whole wait. The other waits
//!    are ended with `CLIENT UNBLOCK` on their nodes, and what one of them
//!    popped meanwhile is pushed back where it was (`LPUSH`/`RPUSH` at its
//!    end, `ZADD` with its score), so it is not lost. The client reads its
//!    reply once that is done (or after a second at most), so its next
//!    command finds the other keys as one server leaves them. A client
//!    that leaves ends every wait the same way.
//!
//! Not atomic across slots: between the runs of step 1 another client may
//! push to a key already found empty, and an element popped by a wait
//! that lost the race is gone from its key until it is pushed back (a
//! proxy that dies in that moment loses it). Counted in
//! `slotbridge_multipop_pushbacks_total`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::nodecall::{call_master, is_lost, moving_or_failing, Wait};
use crate::backend::{reply_channel, Reply, ReplyReceiver, ReplyStatus, ReplyTo};
use crate::client::registry::{BlockedOn, ClientInfo};
use crate::cluster::slot::slot;
use crate::protocol::reply::{self, Proto};
use crate::protocol::scan::{bulk_body, children};
use crate::server::Context;

/// Where a pop command keeps its keys and timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `BLPOP key... timeout` (and `BRPOP`, `BZPOPMIN`, `BZPOPMAX`).
    KeysThenTimeout,
    /// `BLMPOP timeout numkeys key... LEFT|RIGHT [COUNT n]` (`BZMPOP`).
    TimeoutNumkeys,
    /// `LMPOP numkeys key... LEFT|RIGHT [COUNT n]` (`ZMPOP`).
    Numkeys,
}

/// One client command popping from keys in several slots.
#[derive(Debug, Clone)]
pub struct MultiPop {
    /// The command table's name (`blpop`, `bzmpop`, ...).
    name: &'static str,
    layout: Layout,
    /// The client's arguments.
    args: Vec<Bytes>,
    /// The argument indexes of the keys (contiguous, in order).
    keys: Vec<usize>,
}

impl MultiPop {
    /// The pop `args` asks for, with its keys at `keys` (as the command
    /// table finds them); `None` for another command.
    pub fn new(name: &'static str, args: Vec<Bytes>, keys: Vec<usize>) -> Option<MultiPop> {
        let layout = match name {
            "blpop" | "brpop" | "bzpopmin" | "bzpopmax" => Layout::KeysThenTimeout,
            "blmpop" | "bzmpop" => Layout::TimeoutNumkeys,
            "lmpop" | "zmpop" => Layout::Numkeys,
            _ => return None,
        };
        let contiguous = keys.windows(2).all(|w| w[1] == w[0] + 1);
        let in_range = keys.last().is_some_and(|&k| k < args.len());
        (contiguous && in_range).then_some(MultiPop {
            name,
            layout,
            args,
            keys,
        })
    }

    /// Whether an `LMPOP`-like command has no `LEFT|RIGHT` (`MIN|MAX`)
    /// after its keys, which Redis answers with a syntax error; a run's
    /// shorter command would get an arity error instead.
    fn lacks_direction(&self) -> bool {
        self.layout != Layout::KeysThenTimeout
            && self.keys.last().is_some_and(|&k| k + 1 >= self.args.len())
    }

    /// Whether it blocks (everything but `LMPOP`/`ZMPOP`).
    fn blocks(&self) -> bool {
        self.layout != Layout::Numkeys
    }

    /// The client's timeout argument.
    fn timeout_arg(&self) -> &[u8] {
        match self.layout {
            Layout::KeysThenTimeout => self.args.last().map_or(&[][..], |a| &a[..]),
            Layout::TimeoutNumkeys => self.args.get(1).map_or(&[][..], |a| &a[..]),
            Layout::Numkeys => &[],
        }
    }

    /// The command restricted to the keys `which` (indexes into its keys),
    /// with `timeout` instead of the client's when given.
    fn restricted(&self, which: &[usize], timeout: Option<&[u8]>) -> Bytes {
        let key = |i: &usize| &self.args[self.keys[*i]][..];
        let first = self.keys.first().copied().unwrap_or(1);
        let after = self.keys.last().map_or(self.args.len(), |&k| k + 1);
        let count = which.len().to_string();
        let mut out: Vec<&[u8]> = Vec::with_capacity(self.args.len());
        out.push(&self.args[0]);
        match self.layout {
            Layout::KeysThenTimeout => {
                out.extend(which.iter().map(key));
                out.push(timeout.unwrap_or(self.timeout_arg()));
            }
            Layout::TimeoutNumkeys | Layout::Numkeys => {
                // Everything before numkeys, numkeys, the keys, the rest.
                for i in 1..first.saturating_sub(1) {
                    out.push(match (self.layout, timeout) {
                        (Layout::TimeoutNumkeys, Some(t)) if i == 1 => t,
                        _ => &self.args[i],
                    });
                }
                out.push(count.as_bytes());
                out.extend(which.iter().map(key));
                out.extend(self.args[after..].iter().map(|a| &a[..]));
            }
        }
        reply::command(out)
    }

    /// The command that puts back what `reply` (a pop's reply to this
    /// command) took, and the slot it goes to.
    fn push_back(&self, reply: &[u8]) -> Option<(u16, Bytes)> {
        let parts = children(reply)?;
        let elem = |i: usize| parts.get(i).map(|&(s, e)| &reply[s..e]);
        let key = bulk_body(elem(0)?)?;
        let left = self
            .args
            .get(self.keys.last()? + 1)
            .is_some_and(|d| d.eq_ignore_ascii_case(b"left"));
        let mut out: Vec<&[u8]> = Vec::new();
        match self.name {
            "blpop" | "brpop" => {
                let push: &[u8] = if self.name == "blpop" {
                    b"LPUSH"
                } else {
                    b"RPUSH"
                };
                out.extend([push, key, bulk_body(elem(1)?)?]);
            }
            "bzpopmin" | "bzpopmax" => {
                // NX: a score another client set meanwhile stays.
                out.extend([
                    &b"ZADD"[..],
                    key,
                    b"NX",
                    score_text(elem(2)?)?,
                    bulk_body(elem(1)?)?,
                ]);
            }
            "blmpop" | "lmpop" => {
                // Popped from one end in order: pushed back in reverse.
                let list = elem(1)?;
                let items = children(list)?;
                out.extend([if left { &b"LPUSH"[..] } else { b"RPUSH" }, key]);
                for &(s, e) in items.iter().rev() {
                    out.push(bulk_body(&list[s..e])?);
                }
            }
            _ => {
                let list = elem(1)?;
                out.extend([&b"ZADD"[..], key, b"NX"]);
                for (s, e) in children(list)? {
                    let pair = &list[s..e];
                    let two = children(pair)?;
                    let [(ms, me), (ss, se)] = two.as_slice() else {
                        return None;
                    };
                    out.push(score_text(&pair[*ss..*se])?);
                    out.push(bulk_body(&pair[*ms..*me])?);
                }
            }
        }
        let fixed = if out.first() == Some(&&b"ZADD"[..]) {
            3
        } else {
            2
        };
        (out.len() > fixed).then(|| (slot(key), reply::command(out)))
    }
}

/// A score as a node wrote it: a bulk string (RESP2) or a double (RESP3).
fn score_text(frame: &[u8]) -> Option<&[u8]> {
    match frame.first()? {
        b',' => frame.get(1..frame.len().checked_sub(2)?),
        _ => bulk_body(frame),
    }
}

/// Whether a pop's reply is empty (nothing popped): RESP2's null array or
/// RESP3's null.
fn is_nil(frame: &[u8]) -> bool {
    frame == b"*-1\r\n" || frame == b"_\r\n"
}

/// A pop's empty reply.
fn nil(proto: Proto) -> Bytes {
    Bytes::from_static(if proto == Proto::Resp3 {
        b"_\r\n"
    } else {
        b"*-1\r\n"
    })
}

/// How step 2 ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waited {
    /// The client got its reply (or left).
    Answered,
    /// A wait met a moved slot or a failed node: run the pop again.
    Again,
}

/// Whether a wait's reply says its slot moved or its node is failing
/// over, rather than anything about the keys.
fn is_transient(r: &Reply) -> bool {
    matches!(r.status, ReplyStatus::Lost | ReplyStatus::NotSent) || moving_or_failing(&r.data)
}

/// Whether an error for the client says the cluster is failing over or
/// a slot moving (the proxy's own after its retry deadline included).
fn is_transient_error(e: &[u8]) -> bool {
    moving_or_failing(e)
        || is_lost(e)
        || (e.starts_with(b"-ERR slotbridge: node ")
            && memchr::memmem::find(e, b" unreachable").is_some())
}

/// The timeout in seconds Redis reads from `arg` (0: none), when it is one.
pub(crate) fn parse_timeout(arg: &[u8]) -> Option<f64> {
    let t: f64 = std::str::from_utf8(arg).ok()?.trim().parse().ok()?;
    (t.is_finite() && t >= 0.0).then_some(t)
}

/// Runs `pop` for a client and delivers its one reply to `reply_to`
/// (see the module documentation).
pub fn spawn(ctx: Arc<Context>, info: Arc<ClientInfo>, proto: Proto, pop: MultiPop, to: ReplyTo) {
    tokio::spawn(async move {
        let started = Instant::now();
        if pop.lacks_direction() {
            // What Redis says before it looks at a key.
            to.send(reply::error("ERR syntax error"), ReplyStatus::Final);
            return;
        }
        let mut again = false;
        loop {
            let reply = match probe_in_order(&ctx, proto, &pop).await {
                // After a failover under a wait, the pop goes on waiting
                // while the cluster recovers (as long as its timeout and
                // its client allow).
                Err(e) if again && is_transient_error(&e) => {
                    let total = parse_timeout(pop.timeout_arg()).unwrap_or(0.0);
                    if total > 0.0 && started.elapsed().as_secs_f64() >= total {
                        to.send(nil(proto), ReplyStatus::Final);
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = to.tx.closed() => return,
                    }
                    continue;
                }
                Ok(Some(found)) => found,
                Ok(None) if !pop.blocks() => nil(proto),
                Ok(None) => {
                    // A timeout the node accepted but `parse_timeout` does
                    // not read (hexadecimal) is passed on as it is.
                    let total = parse_timeout(pop.timeout_arg());
                    let w = wait_everywhere(&ctx, &info, proto, &pop, total, started, &to).await;
                    if w == Waited::Answered {
                        return;
                    }
                    // A slot moved or its node failed under a wait: again,
                    // with what is left of the timeout.
                    again = true;
                    ctx.topology.request_refresh();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => e,
            };
            to.send(reply, ReplyStatus::Final);
            return;
        }
    });
}

/// Step 1: the runs of keys in order, without blocking. `Some`: the reply
/// (a pop or an error); `None`: every key was empty.
async fn probe_in_order(
    ctx: &Context,
    proto: Proto,
    pop: &MultiPop,
) -> Result<Option<Bytes>, Bytes> {
    let slots: Vec<u16> = pop.keys.iter().map(|&k| slot(&pop.args[k])).collect();
    let mut i = 0;
    while i < slots.len() {
        let run_end = (i..slots.len())
            .find(|&j| slots[j] != slots[i])
            .unwrap_or(slots.len());
        let which: Vec<usize> = (i..run_end).collect();
        let mut payload = reply::command([&b"MULTI"[..]]).to_vec();
        payload.extend_from_slice(&pop.restricted(&which, None));
        payload.extend_from_slice(&reply::command([&b"EXEC"[..]]));
        let payload = Bytes::from(payload);
        let deadline =
            Instant::now() + Duration::from_millis(ctx.config().limits.retry_deadline_ms);
        let frame = loop {
            let frame = call_master(ctx, proto, slots[i], payload.clone(), 2).await?;
            // A queueing error: the node is loading or the cluster down
            // (the arguments were checked before).
            if !frame.starts_with(b"-EXECABORT") || Instant::now() >= deadline {
                break frame;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // EXEC's array of the one reply.
        let inner = children(&frame)
            .filter(|c| c.len() == 1)
            .map(|c| frame.slice(c[0].0..c[0].1))
            .ok_or_else(|| frame.clone())?;
        if !is_nil(&inner) {
            return Ok(Some(inner));
        }
        i = run_end;
    }
    Ok(None)
}

/// Step 2: waits on every slot at once and delivers the first reply
/// that decides (see the module documentation), then ends the others.
async fn wait_everywhere(
    ctx: &Arc<Context>,
    info: &ClientInfo,
    proto: Proto,
    pop: &MultiPop,
    total: Option<f64>,
    started: Instant,
    to: &ReplyTo,
) -> Waited {
    let timeout = match total {
        None => pop.timeout_arg().to_vec(),
        Some(0.0) => b"0".to_vec(),
        Some(t) => {
            let left = t - started.elapsed().as_secs_f64();
            if left <= 0.0 {
                to.clone().send(nil(proto), ReplyStatus::Final);
                return Waited::Answered;
            }
            // Redis reads the timeout in milliseconds at best.
            format!("{:.3}", left.max(0.001)).into_bytes()
        }
    };
    let groups = slot_groups(&pop.args, &pop.keys);
    let parts = groups
        .iter()
        .map(|(slot, which)| (*slot, pop.restricted(which, Some(&timeout))))
        .collect();
    let mut waits = match SlotWaits::start(ctx, info, proto, parts, to).await {
        Started::Waiting(w) => w,
        Started::Again => return Waited::Again,
        Started::Answered => return Waited::Answered,
    };
    let (mut winner, mut outcome, mut held) = (None, Waited::Answered, None);
    let first = waits.first(to).await;
    waits.done_waiting(info);
    match first {
        Some(Some(r)) if is_transient(&r) => {
            winner = Some(r.part as usize);
            outcome = Waited::Again;
        }
        Some(Some(r)) => {
            winner = Some(r.part as usize);
            // A pop, an empty reply (the timeout, CLIENT UNBLOCK) or an
            // error about the keys: as it came, once the other waits ended.
            held = Some(r.data);
        }
        Some(None) => to.clone().send(
            reply::error(
                "ERR slotbridge: the connections of a cross-slot pop closed without a reply",
            ),
            ReplyStatus::Final,
        ),
        None => {}
    }
    // End the other waits and put back what they popped before the
    // client reads its reply, so that its next command finds the other
    // keys as one server leaves them (unless that takes over
    // `HOLD_REPLY_MAX`: a slow node does not hold the reply long).
    let cleanup = async {
        waits.end_others(ctx, proto, winner).await;
        while let Some(r) = waits.next_ended().await {
            if is_nil(&r.data) || r.data.starts_with(b"-") {
                continue;
            }
            match pop.push_back(&r.data) {
                Some((slot, payload)) => {
                    metrics::counter!(crate::metrics::MULTIPOP_PUSHBACKS).increment(1);
                    if let Err(e) = call_master(ctx, proto, slot, payload, 0).await {
                        tracing::error!(command = pop.name, error = %String::from_utf8_lossy(&e), "could not push back an element a cross-slot pop took");
                    }
                }
                None => tracing::error!(
                    command = pop.name,
                    "unexpected reply to a cross-slot pop; not pushed back"
                ),
            }
        }
    };
    tokio::pin!(cleanup);
    if let Some(reply) = held {
        tokio::select! {
            _ = &mut cleanup => {
                to.clone().send(reply, ReplyStatus::Final);
                return outcome;
            }
            _ = tokio::time::sleep(HOLD_REPLY_MAX) => to.clone().send(reply, ReplyStatus::Final),
        }
    }
    cleanup.await;
    outcome
}

/// Each slot's keys (indexes into `keys`, the argument indexes of the
/// keys in `args`), slots in order of their first key.
pub(crate) fn slot_groups(args: &[Bytes], keys: &[usize]) -> Vec<(u16, Vec<usize>)> {
    let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
    for (i, &k) in keys.iter().enumerate() {
        let s = slot(&args[k]);
        match groups.iter_mut().find(|(g, _)| *g == s) {
            Some((_, keys)) => keys.push(i),
            None => groups.push((s, vec![i])),
        }
    }
    groups
}

/// How long a cross-slot pop's reply may wait for the other waits to end
/// and for what they popped to be put back.
const HOLD_REPLY_MAX: Duration = Duration::from_secs(1);

/// One blocking command over several slots, waiting on each slot's
/// master at once, each part on a private connection.
pub(crate) struct SlotWaits {
    waits: Vec<Wait>,
    rx: ReplyReceiver,
    /// The ended parts whose replies are still to come.
    expected: Vec<usize>,
    /// When to stop waiting for them.
    give_up: Instant,
}

/// How [`SlotWaits::start`] went.
pub(crate) enum Started {
    /// Every part waits.
    Waiting(SlotWaits),
    /// A slot has no master now: try again shortly.
    Again,
    /// The client got an error (too many private connections).
    Answered,
}

impl SlotWaits {
    /// Sends each `(slot, command)` of `parts` on a new private connection
    /// to the slot's master; `CLIENT UNBLOCK` of the client reaches the
    /// first part.
    pub(crate) async fn start(
        ctx: &Arc<Context>,
        info: &ClientInfo,
        proto: Proto,
        parts: Vec<(u16, Bytes)>,
        to: &ReplyTo,
    ) -> Started {
        // Every slot needs a master now; else the command runs again shortly.
        let topology = ctx.topology.load();
        let Some(pools) = parts
            .iter()
            .map(|(slot, _)| topology.master(*slot).cloned())
            .collect::<Option<Vec<_>>>()
        else {
            return Started::Again;
        };
        drop(topology);
        let mut permits = Vec::with_capacity(parts.len());
        for _ in &parts {
            match ctx.blocking.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => {
                    to.clone().send(
                        reply::error("ERR slotbridge: too many clients hold private backend connections (blocking commands or WATCH); try again later"),
                        ReplyStatus::Final,
                    );
                    return Started::Answered;
                }
            }
        }
        let (tx, rx) = reply_channel();
        let mut waits: Vec<Wait> = Vec::with_capacity(parts.len());
        for (part, (((_, payload), permit), pool)) in
            parts.into_iter().zip(permits).zip(pools).enumerate()
        {
            let reply_to = ReplyTo {
                tx: tx.clone(),
                seq: 0,
                part: part as u32,
            };
            let wait = Wait::start(ctx, &pool, proto, permit, payload, reply_to).await;
            if part == 0 {
                info.set_blocked(BlockedOn {
                    addr: wait.addr.clone(),
                    server_id: wait.server_id.clone(),
                });
            }
            waits.push(wait);
        }
        Started::Waiting(SlotWaits {
            waits,
            rx,
            expected: Vec::new(),
            give_up: Instant::now(),
        })
    }

    /// The client no longer waits (a part answered first): `CLIENT
    /// UNBLOCK` no longer finds this command while the others are ended.
    pub(crate) fn done_waiting(&self, info: &ClientInfo) {
        if let Some(w) = self.waits.first() {
            info.forget_blocked(&w.server_id);
        }
    }

    /// The first part's reply (its `part` is its index in the parts);
    /// `Some(None)` when every connection closed without one, `None` when
    /// the client left.
    pub(crate) async fn first(&mut self, to: &ReplyTo) -> Option<Option<Reply>> {
        tokio::select! {
            r = self.rx.recv() => Some(r),
            _ = to.tx.closed() => None,
        }
    }

    /// Ends every part but `winner` with `CLIENT UNBLOCK`; their replies
    /// come from [`SlotWaits::next_ended`].
    pub(crate) async fn end_others(
        &mut self,
        ctx: &Arc<Context>,
        proto: Proto,
        winner: Option<usize>,
    ) {
        self.expected = (0..self.waits.len())
            .filter(|&i| Some(i) != winner)
            .collect();
        for &i in &self.expected {
            self.waits[i].unblock(ctx, proto).await;
        }
        self.give_up = Instant::now() + Duration::from_secs(5);
    }

    /// The next reply of an ended part that its node answered; `None`
    /// once every one came (or 5 s after they were ended).
    pub(crate) async fn next_ended(&mut self) -> Option<Reply> {
        while !self.expected.is_empty() {
            let Ok(Some(r)) = tokio::time::timeout_at(self.give_up, self.rx.recv()).await else {
                tracing::warn!("a wait over several slots did not end after CLIENT UNBLOCK");
                self.expected.clear();
                return None;
            };
            self.expected.retain(|&i| i != r.part as usize);
            if r.status == ReplyStatus::Answered {
                return Some(r);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pop(line: &str, keys: &[usize]) -> MultiPop {
        let args: Vec<Bytes> = line
            .split(' ')
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        let spec = crate::command::find(&args[..]).expect("known");
        MultiPop::new(spec.name, args, keys.to_vec()).expect("a pop")
    }

    fn text(b: &Bytes) -> String {
        String::from_utf8_lossy(b).replace("\r\n", " ")
    }

    #[test]
    fn restricted_commands_keep_their_shape() {
        let p = pop("BLPOP a b c 5", &[1, 2, 3]);
        assert_eq!(
            text(&p.restricted(&[0, 2], None)),
            "*4 $5 BLPOP $1 a $1 c $1 5 "
        );
        assert_eq!(
            text(&p.restricted(&[1], Some(b"0.5"))),
            "*3 $5 BLPOP $1 b $3 0.5 "
        );
        let p = pop("BLMPOP 2 3 a b c RIGHT COUNT 2", &[3, 4, 5]);
        assert_eq!(
            text(&p.restricted(&[1], Some(b"1.000"))),
            "*7 $6 BLMPOP $5 1.000 $1 1 $1 b $5 RIGHT $5 COUNT $1 2 "
        );
        let p = pop("ZMPOP 2 a b MIN", &[2, 3]);
        assert_eq!(
            text(&p.restricted(&[0], None)),
            "*4 $5 ZMPOP $1 1 $1 a $3 MIN "
        );
        assert!(!p.blocks());
        assert!(MultiPop::new("get", vec![Bytes::from_static(b"GET")], vec![]).is_none());
    }

    #[test]
    fn pops_are_pushed_back_where_they_were() {
        let p = pop("BLPOP a b 0", &[1, 2]);
        let (s, cmd) = p.push_back(b"*2\r\n$1\r\nb\r\n$2\r\nx1\r\n").unwrap();
        assert_eq!(s, slot(b"b"));
        assert_eq!(text(&cmd), "*3 $5 LPUSH $1 b $2 x1 ");
        let p = pop("BZPOPMAX a b 0", &[1, 2]);
        let (_, cmd) = p
            .push_back(b"*3\r\n$1\r\na\r\n$1\r\nm\r\n,1.5\r\n")
            .unwrap();
        assert_eq!(text(&cmd), "*5 $4 ZADD $1 a $2 NX $3 1.5 $1 m ");
        let p = pop("BLMPOP 0 2 a b RIGHT COUNT 2", &[3, 4]);
        let (_, cmd) = p
            .push_back(b"*2\r\n$1\r\na\r\n*2\r\n$1\r\nd\r\n$1\r\nc\r\n")
            .unwrap();
        assert_eq!(text(&cmd), "*4 $5 RPUSH $1 a $1 c $1 d ");
        let p = pop("BZMPOP 0 2 a b MIN COUNT 2", &[3, 4]);
        let (_, cmd) = p
            .push_back(
                b"*2\r\n$1\r\na\r\n*2\r\n*2\r\n$1\r\nm\r\n$1\r\n1\r\n*2\r\n$1\r\nn\r\n$1\r\n2\r\n",
            )
            .unwrap();
        assert_eq!(text(&cmd), "*7 $4 ZADD $1 a $2 NX $1 1 $1 m $1 2 $1 n ");
        assert!(p.push_back(b"*-1\r\n").is_none());
    }

    #[test]
    fn timeouts_and_empty_replies() {
        assert_eq!(parse_timeout(b"1.5"), Some(1.5));
        assert_eq!(parse_timeout(b"0"), Some(0.0));
        assert_eq!(parse_timeout(b"-1"), None);
        assert!(is_nil(b"*-1\r\n") && is_nil(b"_\r\n") && !is_nil(b"*0\r\n"));
    }
}
