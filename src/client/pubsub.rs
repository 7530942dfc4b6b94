//! A client's subscriptions: which channels, patterns and shard channels it
//! has, and the private connections that carry them.
//!
//! Classic channels and patterns live on one connection to one master (a
//! cluster broadcasts `PUBLISH` to every node); shard channels live on a
//! connection to the master owning their slot. Every frame those
//! connections read is forwarded to the client as is, but for the replies
//! to the proxy's own commands (see [`super::owed`]). When a connection is
//! lost (failover), the session subscribes again on the current owner and
//! the confirmations of that re-subscription are swallowed, so the client
//! only notices that messages keep coming.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;

use super::confirm_order::ConfirmOrder;
use super::mirrors::{
    confirmation, is_notification_channel, may_match_notifications, MirrorDelta, MirrorFrame,
    MirrorVerdict, Mirrors,
};
use super::owed::{reply_kind, Change, Owed, Set, Verdict};
use crate::backend::pubsub::{PubSubConn, PubSubEvent, MAX_BACKLOG_FRAMES};
use crate::backend::ConnOptions;
use crate::protocol::reply;
use crate::protocol::scan::children;
use crate::protocol::Proto;

/// Connection id of the classic (non-shard) subscription connection.
pub const GLOBAL: u32 = 0;
/// Event source id of `MONITOR` lines.
pub const MONITOR: u32 = u32::MAX;
/// Event id that asks the session to follow the topology: move the
/// classic subscriptions to the current home and keep a mirror on every
/// other master (see [`super::mirrors`]).
pub const TOPOLOGY: u32 = u32::MAX - 1;

/// The first connection id of mirrors (see [`is_mirror`]).
const FIRST_MIRROR: u32 = 1 << 31;

/// Whether connection `id` is (or was) a mirror's: its frames never go to
/// the client unfiltered, even after the mirror was dropped.
pub fn is_mirror(id: u32) -> bool {
    (FIRST_MIRROR..TOPOLOGY).contains(&id)
}

/// The most of the home's frames held while mirrors confirm their
/// subscriptions; past it they go (the wait is given up).
const MAX_HELD: usize = 1 << 20;

/// The command sent on a subscription connection after a subscription
/// command: `UNSUBSCRIBE` of a channel nobody
/// subscribes (its name has a random part chosen at start-up), allowed in
/// subscribed mode and while a node loads, without effect. Its reply comes
/// after the confirmations of everything sent before it.
pub fn barrier() -> Bytes {
    barrier_parts().0.clone()
}

/// The barrier command and its channel name.
fn barrier_parts() -> &'static (Bytes, Vec<u8>) {
    static BARRIER: std::sync::OnceLock<(Bytes, Vec<u8>)> = std::sync::OnceLock::new();
    BARRIER.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let channel = format!("__slotbridge_barrier_{random:016x}").into_bytes();
        let mut cmd = BytesMut::new();
        reply::put_array(&mut cmd, 2);
        reply::put_bulk(&mut cmd, b"UNSUBSCRIBE");
        reply::put_bulk(&mut cmd, &channel);
        (cmd.freeze(), channel)
    })
}

/// Whether `frame` is the reply to the [`barrier`]: `unsubscribe`, its
/// channel and a count, as an array (RESP2) or a push (RESP3).
pub fn is_barrier(frame: &[u8]) -> bool {
    let channel = &barrier_parts().1;
    let Some(rest) = frame
        .strip_prefix(b"*3\r\n$11\r\nunsubscribe\r\n")
        .or_else(|| frame.strip_prefix(b">3\r\n$11\r\nunsubscribe\r\n"))
    else {
        return false;
    };
    let head = format!("${}\r\n", channel.len());
    rest.strip_prefix(head.as_bytes())
        .and_then(|r| r.strip_prefix(&channel[..]))
        .and_then(|r| r.strip_prefix(b"\r\n:"))
        .is_some()
}

/// Whether `frame` is a published message (`message`, `pmessage` or
/// `smessage`), as a push (RESP3) or an array (RESP2).
pub fn is_message(frame: &[u8]) -> bool {
    let Some(rest) = frame.get(1..) else {
        return false;
    };
    matches!(frame.first(), Some(b'>' | b'*'))
        && (rest.starts_with(b"3\r\n$7\r\nmessage\r\n")
            || rest.starts_with(b"4\r\n$8\r\npmessage\r\n")
            || rest.starts_with(b"3\r\n$8\r\nsmessage\r\n"))
}

/// How long commands wait at most for the confirmations of an earlier
/// subscription command (a node that does not answer does not hold them).
pub const CONFIRM_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Channel and pattern names.
#[derive(Debug, Default)]
struct Names {
    channels: BTreeSet<Bytes>,
    patterns: BTreeSet<Bytes>,
}

impl Names {
    /// Adds or removes `name` of `set` (classic sets only) when it may
    /// carry keyspace notifications.
    fn track(&mut self, set: Set, name: &Bytes, present: bool) {
        let names = match set {
            Set::Channels if mirrored(set, name) => &mut self.channels,
            Set::Patterns if mirrored(set, name) => &mut self.patterns,
            _ => return,
        };
        if present {
            names.insert(name.clone());
        } else {
            names.remove(name);
        }
    }
}

/// Whether `name` of `set` may carry keyspace notifications (the mirrors
/// subscribe it).
fn mirrored(set: Set, name: &[u8]) -> bool {
    match set {
        Set::Channels => is_notification_channel(name),
        Set::Patterns => may_match_notifications(name),
        Set::Shard => false,
    }
}

/// One client's subscription state.
#[derive(Debug)]
pub struct PubSubState {
    /// Subscribed channels.
    pub channels: BTreeSet<Bytes>,
    /// Subscribed patterns.
    pub patterns: BTreeSet<Bytes>,
    /// Subscribed shard channels, with their slot.
    pub shard_channels: HashMap<Bytes, u16>,
    /// Connections by id (`GLOBAL` or a shard connection id).
    pub conns: HashMap<u32, PubSubConn>,
    /// Shard channels whose subscription the client has seen confirmed:
    /// its count in `ssubscribe`/`sunsubscribe` confirmations, which each
    /// node gives for its own channels only.
    confirmed_shard: HashSet<Bytes>,
    /// The shard confirmations of the command in flight, released in its
    /// arguments' order.
    pub order: ConfirmOrder,
    /// Whether `MONITOR` lines are forwarded to this client.
    pub monitoring: bool,
    /// The mirrors of its keyspace-notification subscriptions on the
    /// masters other than the home.
    pub mirrors: Mirrors,
    /// The client's channels and patterns that may carry keyspace
    /// notifications (what the mirrors subscribe).
    notify: Names,
    /// Those whose confirmation the client was given: the mirrors'
    /// notifications of them go to the client.
    ready: Names,
    /// The home's frames held until the mirrors confirm.
    held: BytesMut,
    /// Whether the session follows topology changes (see [`TOPOLOGY`]).
    pub watching: bool,
    /// The replies owed on each connection. A [`barrier`] follows every
    /// subscription command; until the barriers after the client's have
    /// answered, its other commands wait, so that their replies follow
    /// the confirmations.
    owed: Owed,
    /// When commands stop waiting for those barriers anyway.
    pub confirm_by: Option<tokio::time::Instant>,
    /// They waited [`CONFIRM_WAIT`]: commands go on, and the replies of
    /// the barriers still out are swallowed when they come.
    gave_up: bool,
    /// Shard channels by the connection that was asked to subscribe them.
    carried: HashMap<u32, HashSet<Bytes>>,
    /// Shard channels of lost connections, until subscribed again.
    orphans: HashSet<Bytes>,
    /// Connections whose re-subscription is already scheduled (one at a
    /// time, however many failures asked for it).
    resubscribing: HashSet<u32>,
    next_id: u32,
    next_mirror_id: u32,
    events_tx: mpsc::Sender<(u32, PubSubEvent)>,
    /// Events from the connections (frames to forward, losses).
    pub events: mpsc::Receiver<(u32, PubSubEvent)>,
}

impl Default for PubSubState {
    fn default() -> Self {
        let (events_tx, events) = mpsc::channel(MAX_BACKLOG_FRAMES);
        PubSubState {
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
            shard_channels: HashMap::new(),
            conns: HashMap::new(),
            confirmed_shard: Default::default(),
            order: ConfirmOrder::default(),
            monitoring: false,
            mirrors: Mirrors::default(),
            held: BytesMut::new(),
            notify: Names::default(),
            ready: Names::default(),
            watching: false,
            owed: Owed::default(),
            confirm_by: None,
            gave_up: false,
            carried: HashMap::new(),
            orphans: HashSet::new(),
            resubscribing: HashSet::new(),
            next_id: GLOBAL + 1,
            next_mirror_id: FIRST_MIRROR,
            events_tx,
            events,
        }
    }
}

impl PubSubState {
    /// Whether the client is in subscribed mode (RESP2 restricts commands then).
    pub fn active(&self) -> bool {
        !self.channels.is_empty() || !self.patterns.is_empty() || !self.shard_channels.is_empty()
    }

    /// How many channels, patterns and shard channels are subscribed.
    pub fn counts(&self) -> [usize; 3] {
        [
            self.channels.len(),
            self.patterns.len(),
            self.shard_channels.len(),
        ]
    }

    /// The classic subscription connection, opened on `addr` if needed.
    pub fn global(
        &mut self,
        addr: &Arc<str>,
        opts: &Arc<ConnOptions>,
        proto: Proto,
    ) -> &PubSubConn {
        let events = self.events_tx.clone();
        self.conns
            .entry(GLOBAL)
            .or_insert_with(|| PubSubConn::spawn(addr.clone(), opts.clone(), proto, GLOBAL, events))
    }

    /// The id of the shard subscription connection to `addr`, opened if
    /// needed.
    pub fn shard_id(&mut self, addr: &Arc<str>, opts: &Arc<ConnOptions>, proto: Proto) -> u32 {
        let found = self
            .conns
            .iter()
            .find(|(id, c)| **id != GLOBAL && c.addr == *addr)
            .map(|(id, _)| *id);
        if let Some(id) = found {
            return id;
        }
        let (id, conn) = open(&mut self.next_id, &self.events_tx, addr, opts, proto);
        self.conns.insert(id, conn);
        id
    }

    /// Makes the mirrors match the client's subscriptions that may carry
    /// keyspace notifications, one on each of `targets` (see
    /// [`Mirrors::sync`]). With a client command's `delta`, only its names
    /// are sent to the mirrors there are, and the home's frames wait
    /// until the mirrors confirm new subscriptions.
    pub fn sync_mirrors(
        &mut self,
        targets: &[Arc<str>],
        opts: &Arc<ConnOptions>,
        proto: Proto,
        delta: Option<&MirrorDelta>,
    ) {
        let (channels, patterns) = (&self.notify.channels, &self.notify.patterns);
        let none = channels.is_empty() && patterns.is_empty();
        let confirming = match delta {
            Some(d) if self.mirrors.any() && !none => {
                let ready = if d.patterns {
                    &mut self.ready.patterns
                } else {
                    &mut self.ready.channels
                };
                d.removed.iter().for_each(|n| {
                    ready.remove(n);
                });
                self.mirrors.apply(d)
            }
            _ => {
                self.ready.channels.retain(|c| channels.contains(c));
                self.ready.patterns.retain(|p| patterns.contains(p));
                let (next_id, events) = (&mut self.next_mirror_id, &self.events_tx);
                let confirm = delta.is_some();
                self.mirrors
                    .sync(targets, channels, patterns, confirm, |addr| {
                        open(next_id, events, addr, opts, proto)
                    })
            }
        };
        if confirming {
            self.confirm_by = Some(tokio::time::Instant::now() + CONFIRM_WAIT);
            self.gave_up = false;
        }
    }

    /// Whether a frame from mirror `id` goes to the client: a notification
    /// of a channel or pattern the client has, whose confirmation it was
    /// given (a mirror may hear events before the home confirms).
    pub fn mirror_frame(&mut self, id: u32, frame: &[u8]) -> MirrorVerdict {
        match self.mirrors.frame(id, frame) {
            MirrorFrame::Notification { pattern, channel } => {
                let wanted = match pattern {
                    None => self.ready.channels.contains(channel),
                    Some(p) => self.ready.patterns.contains(p),
                };
                if wanted {
                    MirrorVerdict::Forward
                } else {
                    MirrorVerdict::Swallow
                }
            }
            MirrorFrame::Swallow => MirrorVerdict::Swallow,
            MirrorFrame::Refused => MirrorVerdict::Refused,
        }
    }

    /// Notes a frame of the home that goes to the client: after the
    /// confirmation of a notification channel or pattern, the mirrors'
    /// notifications of it go too; after its unsubscription, no more.
    pub fn home_frame_forwarded(&mut self, frame: &[u8]) {
        let Some((subscribe, pattern, name)) = confirmation(frame) else {
            return;
        };
        let (mirrored, ready) = if pattern {
            (&self.notify.patterns, &mut self.ready.patterns)
        } else {
            (&self.notify.channels, &mut self.ready.channels)
        };
        if !subscribe {
            ready.remove(name);
        } else if let Some(name) = mirrored.get(name) {
            ready.insert(name.clone());
        }
    }

    /// Whether frames of the home and the mirrors are held: the mirrors
    /// have not confirmed yet, or frames held before still wait.
    pub fn holding(&self) -> bool {
        self.mirrors.pending() || !self.held.is_empty()
    }

    /// Holds frames of the home and the mirrors until the mirrors confirm.
    pub fn hold(&mut self, frames: BytesMut) {
        self.held.unsplit(frames);
        if self.held.len() > MAX_HELD {
            self.mirrors.give_up();
        }
    }

    /// The held frames, once the mirrors have confirmed (or the wait was
    /// given up).
    pub fn release_held(&mut self) -> Option<BytesMut> {
        (!self.held.is_empty() && !self.mirrors.pending()).then(|| self.held.split())
    }

    /// Sends a client's command that answers with one frame (`PING`) on
    /// connection `id`.
    pub fn send_ping(&mut self, id: u32, cmd: Bytes) {
        if let Some(c) = self.conns.get(&id) {
            c.send(cmd);
            self.owed.client(id, b"pong", Change::default(), Some(1));
        }
    }

    /// Sends a client's subscription command on connection `id`, then a
    /// [`barrier`] (see [`PubSubState::confirming`]). `change` is what the
    /// command changed in the client's state ([`PubSubState::record`]),
    /// undone if the node refuses it.
    pub fn send_confirmed(&mut self, id: u32, cmd: Bytes, change: Change) {
        if let Some(c) = self.conns.get(&id) {
            c.send(cmd);
            c.send(barrier());
            // One confirmation per name; an unsubscribe from all gives
            // one per subscription the node has.
            let expected = (!change.names.is_empty())
                .then(|| u32::try_from(change.names.len()).ok())
                .flatten();
            let reply = reply_kind(change.set, change.subscribe);
            self.owed.client(id, reply, change, expected);
            self.owed.barrier(id, true);
            self.confirm_by = Some(tokio::time::Instant::now() + CONFIRM_WAIT);
            self.gave_up = false;
        }
    }

    /// Sends the proxy's own subscription of `names` (in `set`) on
    /// connection `id`, then a barrier: every reply up to the barrier's
    /// is swallowed.
    pub fn send_own(&mut self, id: u32, set: Set, cmd: Bytes, names: Vec<Bytes>) {
        if let Some(c) = self.conns.get(&id) {
            c.send(cmd);
            c.send(barrier());
            self.owed.proxy(id, set, names);
            self.owed.barrier(id, false);
        }
    }

    /// Whether connection `id` still owes replies (to the client's commands
    /// or the proxy's).
    pub fn owes(&self, id: u32) -> bool {
        self.owed.owes(id)
    }

    /// Whether confirmations of the client's subscription commands may
    /// still be coming (its other commands wait for them).
    pub fn confirming(&self) -> bool {
        !self.gave_up && (self.owed.confirming() || self.mirrors.pending())
    }

    /// Whether the confirmations still coming are all on connection `id`
    /// (commands sent there next are answered after them anyway).
    pub fn confirming_only_on(&self, id: u32) -> bool {
        self.owed.confirming_only_on(id)
    }

    /// Where a frame read from connection `id` goes (see [`Verdict`]).
    /// A refused command's change is undone here.
    pub fn verdict(&mut self, id: u32, frame: &[u8]) -> Verdict {
        let verdict = self.owed.verdict(id, frame, is_barrier(frame));
        if let Verdict::Refused(change) = &verdict {
            self.undo(id, change);
        }
        verdict
    }

    /// Undoes what a refused command on connection `id` changed.
    fn undo(&mut self, id: u32, change: &Change) {
        match change.set {
            Some(set @ (Set::Channels | Set::Patterns)) => {
                let names = if set == Set::Channels {
                    &mut self.channels
                } else {
                    &mut self.patterns
                };
                for n in &change.added {
                    names.remove(n);
                    self.notify.track(set, n, false);
                }
                for n in &change.removed {
                    names.insert(n.clone());
                    self.notify.track(set, n, true);
                }
            }
            Some(Set::Shard) => {
                for n in &change.added {
                    self.shard_channels.remove(n);
                    self.uncarry(n);
                }
                for n in &change.removed {
                    self.shard_channels
                        .insert(n.clone(), crate::cluster::slot::slot(n));
                }
                self.carry(id, change.removed.iter());
            }
            None => {}
        }
    }

    /// Commands stop waiting for confirmations ([`CONFIRM_WAIT`] passed);
    /// replies of barriers still out are swallowed when they come.
    pub fn give_up_confirming(&mut self) {
        self.gave_up = true;
        self.mirrors.give_up();
    }

    /// Connection `id` was asked to subscribe `channels` (shard channels).
    pub fn carry<'a>(&mut self, id: u32, channels: impl Iterator<Item = &'a Bytes>) {
        for ch in channels {
            self.uncarry(ch);
            self.carried.entry(id).or_default().insert(ch.clone());
        }
    }

    /// Forgets which connection carries `channel`.
    pub fn uncarry(&mut self, channel: &[u8]) {
        self.orphans.remove(channel);
        for set in self.carried.values_mut() {
            set.remove(channel);
        }
    }

    /// The connection carrying a shard channel (`None`: none, or its
    /// connection was lost and it waits to be subscribed again).
    pub fn carrier(&self, channel: &[u8]) -> Option<u32> {
        self.carried
            .iter()
            .find(|(_, set)| set.contains(channel))
            .map(|(id, _)| *id)
    }

    /// Whether a shard channel waits to be subscribed again.
    #[cfg(test)]
    pub fn is_orphan(&self, channel: &[u8]) -> bool {
        self.orphans.contains(channel)
    }

    /// Shard connection `id` is lost: its channels wait to be subscribed
    /// again. Returns how many replies it still owed the client's one-reply
    /// commands (see [`super::owed::Owed::forget`]).
    pub fn lost(&mut self, id: u32) -> usize {
        self.conns.remove(&id);
        let unanswered = self.owed.forget(id);
        if let Some(set) = self.carried.remove(&id) {
            self.orphans.extend(set);
        }
        unanswered
    }

    /// The shard channels waiting to be subscribed again that the client
    /// still has (taken).
    pub fn take_orphans(&mut self) -> Vec<Bytes> {
        let orphans = std::mem::take(&mut self.orphans);
        orphans
            .into_iter()
            .filter(|ch| self.shard_channels.contains_key(ch))
            .collect()
    }

    /// Puts channels back to wait (no owner yet).
    pub fn keep_orphans(&mut self, channels: impl IntoIterator<Item = Bytes>) {
        self.orphans.extend(channels);
    }

    /// A sender for scheduling events to ourselves (re-subscribe timers).
    pub fn events_sender(&self) -> mpsc::Sender<(u32, PubSubEvent)> {
        self.events_tx.clone()
    }

    /// Schedules a re-subscription of connection `id`'s subscriptions in
    /// `delay`, unless one is scheduled already.
    pub fn resubscribe_in(&mut self, id: u32, delay: std::time::Duration) {
        if !self.resubscribing.insert(id) {
            return;
        }
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send((id, PubSubEvent::Resubscribe)).await;
        });
    }

    /// The scheduled re-subscription of connection `id` is due.
    pub fn resubscribe_due(&mut self, id: u32) {
        self.resubscribing.remove(&id);
    }

    /// Records the effect of a (un)subscribe command's arguments and
    /// returns it (to undo if the node refuses the command).
    pub fn record(&mut self, name: &[u8], args: &[Bytes]) -> Change {
        let lower = name.to_ascii_lowercase();
        let (set, subscribe) = match lower.as_slice() {
            b"subscribe" => (Set::Channels, true),
            b"psubscribe" => (Set::Patterns, true),
            b"ssubscribe" => (Set::Shard, true),
            b"unsubscribe" => (Set::Channels, false),
            b"punsubscribe" => (Set::Patterns, false),
            b"sunsubscribe" => (Set::Shard, false),
            _ => return Change::default(),
        };
        let mut change = Change {
            set: Some(set),
            subscribe,
            names: args.to_vec(),
            ..Change::default()
        };
        let all: Vec<Bytes> = match set {
            _ if subscribe || !args.is_empty() => args.to_vec(),
            Set::Channels => self.channels.iter().cloned().collect(),
            Set::Patterns => self.patterns.iter().cloned().collect(),
            Set::Shard => self.shard_channels.keys().cloned().collect(),
        };
        for name in all {
            let had = match set {
                Set::Channels if subscribe => !self.channels.insert(name.clone()),
                Set::Patterns if subscribe => !self.patterns.insert(name.clone()),
                Set::Shard if subscribe => self
                    .shard_channels
                    .insert(name.clone(), crate::cluster::slot::slot(&name))
                    .is_some(),
                Set::Channels => self.channels.remove(&name),
                Set::Patterns => self.patterns.remove(&name),
                Set::Shard => self.shard_channels.remove(&name).is_some(),
            };
            match (subscribe, had) {
                (true, false) => {
                    self.notify.track(set, &name, true);
                    change.added.push(name);
                }
                (false, true) => {
                    self.notify.track(set, &name, false);
                    change.removed.push(name);
                }
                _ => {}
            }
        }
        change
    }

    /// What `change` does to the names the mirrors carry, if anything.
    pub fn mirror_delta(change: &Change) -> Option<MirrorDelta> {
        let set = change.set?;
        let pick = |names: &[Bytes]| -> Vec<Bytes> {
            names.iter().filter(|n| mirrored(set, n)).cloned().collect()
        };
        let delta = MirrorDelta {
            patterns: set == Set::Patterns,
            added: pick(&change.added),
            removed: pick(&change.removed),
        };
        (!delta.added.is_empty() || !delta.removed.is_empty()).then_some(delta)
    }

    /// A frame from a shard connection with the count of an
    /// `ssubscribe`/`sunsubscribe` confirmation made the client's total,
    /// as one server would count; any other frame as it is.
    pub fn renumber(&mut self, frame: Bytes) -> Bytes {
        let Some(parts) = children(&frame) else {
            return frame;
        };
        let [(ks, ke), (cs, ce), _] = parts[..] else {
            return frame;
        };
        let kind = &frame[ks..ke];
        let channel = crate::protocol::scan::bulk_body(&frame[cs..ce]);
        match (kind, channel) {
            (b"$10\r\nssubscribe\r\n", Some(c)) => {
                // A copy: a slice would keep the connection's read buffer.
                self.confirmed_shard.insert(Bytes::copy_from_slice(c));
            }
            (b"$12\r\nsunsubscribe\r\n", Some(c)) => {
                self.confirmed_shard.remove(c);
            }
            (b"$12\r\nsunsubscribe\r\n", None) => {}
            _ => return frame,
        }
        let mut out = BytesMut::with_capacity(frame.len() + 8);
        out.put_slice(&frame[..ce]);
        reply::put_int(&mut out, self.confirmed_shard.len() as i64);
        out.freeze()
    }
}

/// A (un)subscribe command `name` of `names`.
pub fn subscribe_command<'a>(name: &'a [u8], names: impl Iterator<Item = &'a Bytes>) -> Bytes {
    let args: Vec<&[u8]> = std::iter::once(name).chain(names.map(|c| &c[..])).collect();
    reply::command(args)
}

/// Opens a subscription connection to `addr` with the next free id.
fn open(
    next_id: &mut u32,
    events: &mpsc::Sender<(u32, PubSubEvent)>,
    addr: &Arc<str>,
    opts: &Arc<ConnOptions>,
    proto: Proto,
) -> (u32, PubSubConn) {
    let id = *next_id;
    *next_id += 1;
    let conn = PubSubConn::spawn(addr.clone(), opts.clone(), proto, id, events.clone());
    (id, conn)
}

/// A frame of a subscription connection as a client speaking `proto`
/// reads it: a client that switched protocol with `HELLO` while
/// subscribed keeps the connections opened in the other one, whose
/// messages and confirmations are the same but for their type (a push in
/// RESP3, an array in RESP2).
pub fn in_proto(frame: Bytes, proto: Proto) -> Bytes {
    let swap = match (proto, frame.first()) {
        (Proto::Resp2, Some(b'>')) => b'*',
        (Proto::Resp3, Some(b'*')) if is_pubsub_frame(&frame) => b'>',
        _ => return frame,
    };
    let mut out = BytesMut::from(&frame[..]);
    out[0] = swap;
    out.freeze()
}

/// The (un)subscribe commands, as their confirmations name them.
pub const SUBSCRIPTION_COMMANDS: [&[u8]; 6] = [
    b"subscribe",
    b"psubscribe",
    b"ssubscribe",
    b"unsubscribe",
    b"punsubscribe",
    b"sunsubscribe",
];

/// Whether an array frame is a message or a (un)subscribe confirmation.
fn is_pubsub_frame(frame: &[u8]) -> bool {
    const MESSAGES: [&[u8]; 3] = [b"message", b"pmessage", b"smessage"];
    let first = crate::protocol::scan::children(frame)
        .and_then(|parts| parts.first().copied())
        .and_then(|(s, e)| crate::protocol::scan::bulk_body(frame.get(s..e)?));
    first.is_some_and(|k| {
        MESSAGES
            .iter()
            .chain(&SUBSCRIPTION_COMMANDS)
            .any(|kind| k.eq_ignore_ascii_case(kind))
    })
}

/// An `sunsubscribe` confirmation (a nil channel: the client had none).
pub fn sunsubscribe_frame(channel: Option<&[u8]>, count: usize, proto: Proto) -> Bytes {
    let mut out = BytesMut::new();
    let kind = if proto == Proto::Resp3 { b'>' } else { b'*' };
    reply::put_header(&mut out, kind, 3);
    reply::put_bulk(&mut out, b"sunsubscribe");
    match channel {
        Some(c) => reply::put_bulk(&mut out, c),
        None => reply::put_null(&mut out, proto),
    }
    reply::put_int(&mut out, count as i64);
    out.freeze()
}

/// The commands a RESP2 client may send while subscribed.
pub fn allowed_while_subscribed(name: &[u8]) -> bool {
    const OTHERS: [&[u8]; 3] = [b"ping", b"quit", b"reset"];
    SUBSCRIPTION_COMMANDS
        .iter()
        .chain(&OTHERS)
        .any(|a| name.eq_ignore_ascii_case(a))
}

/// Whether `name` is a classic (pattern) (un)subscribe, sent on the
/// client's one classic subscription connection.
pub fn is_classic_subscription_command(name: &[u8]) -> bool {
    [
        &b"subscribe"[..],
        b"unsubscribe",
        b"psubscribe",
        b"punsubscribe",
    ]
    .iter()
    .any(|n| name.eq_ignore_ascii_case(n))
}

/// Whether a command changes subscriptions (it waits until earlier replies
/// are written, so confirmations keep their place in the reply stream).
pub fn is_subscription_command(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"monitor")
        || allowed_while_subscribed(name)
            && !name.eq_ignore_ascii_case(b"ping")
            && !name.eq_ignore_ascii_case(b"quit")
            && !name.eq_ignore_ascii_case(b"reset")
}

/// Redis's error for a command a RESP2 subscriber may not send.
pub fn not_allowed(name: &[u8]) -> Bytes {
    reply::error(&format!(
        "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
        String::from_utf8_lossy(name).to_lowercase()
    ))
}

/// The reply to `PING [msg]` in RESP2 subscribed mode.
pub fn subscribed_pong(msg: Option<&[u8]>) -> Bytes {
    let mut out = bytes::BytesMut::new();
    reply::put_array(&mut out, 2);
    reply::put_bulk(&mut out, b"pong");
    reply::put_bulk(&mut out, msg.unwrap_or_default());
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_follow_a_protocol_switch() {
        let push = Bytes::from_static(b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n");
        let array = Bytes::from_static(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n");
        assert_eq!(in_proto(push.clone(), Proto::Resp2), array);
        assert_eq!(in_proto(array.clone(), Proto::Resp3), push);
        assert_eq!(in_proto(push.clone(), Proto::Resp3), push);
        assert_eq!(in_proto(array.clone(), Proto::Resp2), array);
        // Not a Pub/Sub frame (a MONITOR line, another array): unchanged.
        let other = Bytes::from_static(b"*1\r\n$4\r\npong\r\n");
        assert_eq!(in_proto(other.clone(), Proto::Resp3), other);
        let line = Bytes::from_static(b"+1.000000 [0 127.0.0.1:1] \"GET\"\r\n");
        assert_eq!(in_proto(line.clone(), Proto::Resp2), line);
    }

    #[test]
    fn barrier_replies_are_recognised_and_nothing_else() {
        let cmd = barrier();
        let text = String::from_utf8(cmd.to_vec()).unwrap();
        let channel = text.split("\r\n").nth(4).unwrap().to_string();
        assert!(channel.starts_with("__slotbridge_barrier_"));
        let reply = |head: &str, n: i64| {
            format!(
                "{head}3\r\n$11\r\nunsubscribe\r\n${}\r\n{channel}\r\n:{n}\r\n",
                channel.len()
            )
        };
        assert!(is_barrier(reply("*", 0).as_bytes()));
        assert!(is_barrier(reply(">", 3).as_bytes()));
        let message = format!(
            "*3\r\n$7\r\nmessage\r\n${}\r\n{channel}\r\n$1\r\nx\r\n",
            channel.len()
        );
        assert!(!is_barrier(message.as_bytes()));
        assert!(!is_barrier(
            b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n"
        ));
        assert!(!is_barrier(b"$18\r\nslotbridge-barrier\r\n"));
    }

    #[test]
    fn records_subscriptions() {
        let mut s = PubSubState::default();
        let a = Bytes::from_static(b"a");
        let b = Bytes::from_static(b"b");
        s.record(b"SUBSCRIBE", &[a.clone(), b.clone()]);
        s.record(b"psubscribe", &[Bytes::from_static(b"p*")]);
        assert!(s.active());
        s.record(b"unsubscribe", &[a]);
        assert_eq!(s.channels.len(), 1);
        s.record(b"UNSUBSCRIBE", &[]);
        s.record(b"punsubscribe", &[]);
        assert!(!s.active());
        s.record(b"ssubscribe", std::slice::from_ref(&b));
        assert_eq!(s.shard_channels.get(&b), Some(&3300));
    }

    #[test]
    fn lost_connections_leave_their_channels_to_subscribe_again() {
        let mut s = PubSubState::default();
        let [a, b, c] = [b"a", b"b", b"c"].map(|x| Bytes::from_static(x));
        s.record(b"ssubscribe", &[a.clone(), b.clone(), c.clone()]);
        s.carry(1, [&a, &b].into_iter());
        s.carry(2, std::iter::once(&c));
        assert_eq!((s.carrier(&a), s.carrier(&c)), (Some(1), Some(2)));
        // Connection 1 is lost; a new connection (3) to the same node
        // carries only what it was asked to: a and b still wait.
        s.lost(1);
        assert_eq!(s.carrier(&a), None);
        assert!(s.is_orphan(&a) && s.is_orphan(&b));
        s.carry(3, std::iter::once(&Bytes::from_static(b"d")));
        // b was unsubscribed meanwhile: only a is subscribed again.
        s.record(b"sunsubscribe", std::slice::from_ref(&b));
        s.uncarry(&b);
        assert_eq!(s.take_orphans(), vec![a.clone()]);
        assert!(!s.is_orphan(&a));
        // Moving a channel to another connection drops the old carrier.
        s.carry(3, std::iter::once(&c));
        assert_eq!(s.carrier(&c), Some(3));
        // The proxy's own confirmation for a channel nobody carries.
        let own = sunsubscribe_frame(Some(b"zz"), 7, Proto::Resp2);
        assert_eq!(
            &s.renumber(own)[..],
            b"*3\r\n$12\r\nsunsubscribe\r\n$2\r\nzz\r\n:0\r\n"
        );
    }

    #[test]
    fn shard_confirmations_count_all_nodes() {
        let mut s = PubSubState::default();
        let sub = |c: &str, n: i64| {
            Bytes::from(format!(
                "*3\r\n$10\r\nssubscribe\r\n${}\r\n{c}\r\n:{n}\r\n",
                c.len()
            ))
        };
        // Each node counts its own channels; the client sees them all.
        assert_eq!(s.renumber(sub("a", 1)), sub("a", 1));
        assert_eq!(s.renumber(sub("b", 1)), sub("b", 2));
        assert_eq!(s.renumber(sub("a", 1)), sub("a", 2));
        let unsub = Bytes::from_static(b">3\r\n$12\r\nsunsubscribe\r\n$1\r\na\r\n:0\r\n");
        assert_eq!(
            &s.renumber(unsub)[..],
            b">3\r\n$12\r\nsunsubscribe\r\n$1\r\na\r\n:1\r\n"
        );
        let msg = Bytes::from_static(b"*3\r\n$8\r\nsmessage\r\n$1\r\nb\r\n$1\r\nx\r\n");
        assert_eq!(s.renumber(msg.clone()), msg);
    }

    #[test]
    fn subscribed_mode_rules() {
        assert!(allowed_while_subscribed(b"PING"));
        assert!(!allowed_while_subscribed(b"get"));
        assert!(is_subscription_command(b"SSUBSCRIBE"));
        assert!(!is_subscription_command(b"ping"));
        assert_eq!(
            &not_allowed(b"GET")[..],
            &b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"[..]
        );
        assert_eq!(
            &subscribed_pong(None)[..],
            b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"
        );
    }
}
