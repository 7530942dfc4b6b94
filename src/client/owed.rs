//! The replies each subscription connection owes, in the order their
//! commands were sent: so that every frame it reads is known to answer the
//! client's command, the proxy's own re-subscription or a barrier, errors
//! included. An error answers one whole command (a node refuses
//! `SUBSCRIBE a b c` with one `-BUSY`, `-NOPERM` or `-MOVED`, where it
//! would have confirmed each channel), so counting frames alone cannot
//! tell whose an error is; the order of what was sent can.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

/// The subscription set a command changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Set {
    /// Classic channels (`SUBSCRIBE`).
    Channels,
    /// Patterns (`PSUBSCRIBE`).
    Patterns,
    /// Shard channels (`SSUBSCRIBE`).
    Shard,
}

/// What a client's subscription command changed in its state when it was
/// sent, to undo if the node refuses it.
#[derive(Debug, Default, PartialEq)]
pub struct Change {
    /// The set changed (`None`: the command changes none, e.g. `PING`).
    pub set: Option<Set>,
    /// A subscribe (else an unsubscribe).
    pub subscribe: bool,
    /// Every name the command carried.
    pub names: Vec<Bytes>,
    /// Names it added that the client did not have.
    pub added: Vec<Bytes>,
    /// Names it removed that the client had.
    pub removed: Vec<Bytes>,
    /// How many times the command was sent again after `-MOVED`.
    pub redirects: u8,
}

#[derive(Debug)]
enum Kind {
    Client(Change),
    /// The proxy's own re-subscription of `names` in a set.
    Proxy(Set, Vec<Bytes>),
    /// A barrier; `client`: after a client's command (its later commands
    /// wait for it).
    Barrier {
        client: bool,
    },
}

#[derive(Debug)]
struct Entry {
    kind: Kind,
    /// The first element of the frames that answer it (`subscribe`,
    /// `pong`, ...): a frame of another kind answers something else.
    reply: &'static [u8],
    /// Frames the command answers with, when known (one per name).
    expected: Option<u32>,
    got: u32,
}

/// Where a frame read from a subscription connection goes.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// To the client (a message, or a reply to its command).
    Forward,
    /// Nowhere: it answers the proxy's own command.
    Swallow,
    /// To the client, after undoing `Change`: its command was refused.
    Refused(Change),
    /// Nowhere, but the proxy's re-subscription of these names failed
    /// and must be tried again.
    OwnRefused(Set, Vec<Bytes>),
    /// Nowhere: the node dropped this shard channel unasked (Redis 7
    /// does when it loses the channel's slot); subscribe it again where
    /// its slot went.
    ShardDropped(Bytes),
}

/// The replies owed on every subscription connection of one client.
#[derive(Debug, Default)]
pub struct Owed {
    conns: HashMap<u32, VecDeque<Entry>>,
}

impl Owed {
    /// A client's command was sent on connection `id`; `reply`: the kind
    /// of its reply frames (lower case, e.g. `subscribe` or `pong`).
    pub fn client(&mut self, id: u32, reply: &'static [u8], change: Change, expected: Option<u32>) {
        self.push(id, Kind::Client(change), reply, expected);
    }

    /// The proxy's own subscription of `names` was sent on connection `id`.
    pub fn proxy(&mut self, id: u32, set: Set, names: Vec<Bytes>) {
        let expected = u32::try_from(names.len()).ok();
        let reply = reply_kind(Some(set), true);
        self.push(id, Kind::Proxy(set, names), reply, expected);
    }

    /// A barrier was sent on connection `id`.
    pub fn barrier(&mut self, id: u32, client: bool) {
        self.push(id, Kind::Barrier { client }, b"unsubscribe", Some(1));
    }

    fn push(&mut self, id: u32, kind: Kind, reply: &'static [u8], expected: Option<u32>) {
        self.conns.entry(id).or_default().push_back(Entry {
            kind,
            reply,
            expected,
            got: 0,
        });
    }

    /// Whether a barrier sent after a client's command is still out.
    pub fn confirming(&self) -> bool {
        self.conns.values().any(has_client_barrier)
    }

    /// Whether every client barrier still out is on connection `id`.
    pub fn confirming_only_on(&self, id: u32) -> bool {
        self.conns
            .iter()
            .all(|(k, q)| *k == id || !has_client_barrier(q))
    }

    /// Whether connection `id` still owes replies.
    pub fn owes(&self, id: u32) -> bool {
        self.conns.contains_key(&id)
    }

    /// Connection `id` was lost: it owes nothing any more. Returns how
    /// many of the client's commands that answer with one reply (a
    /// `PUBLISH` sent there, a subscribed `PING`) had not been answered:
    /// each still needs a reply, or the client's replies would shift.
    pub fn forget(&mut self, id: u32) -> usize {
        let Some(queue) = self.conns.remove(&id) else {
            return 0;
        };
        queue
            .iter()
            .filter(|e| matches!(&e.kind, Kind::Client(c) if c.set.is_none()) && e.got == 0)
            .count()
    }

    /// Where `frame`, read from connection `id`, goes; `barrier`: it is
    /// the reply a barrier gets when the node runs it.
    pub fn verdict(&mut self, id: u32, frame: &[u8], barrier: bool) -> Verdict {
        if is_message(frame) {
            return Verdict::Forward;
        }
        let (kind, name) = kind_and_name(frame);
        let Some(queue) = self.conns.get_mut(&id) else {
            return unasked(kind, name);
        };
        let verdict = if barrier {
            match queue
                .iter()
                .position(|e| matches!(e.kind, Kind::Barrier { .. }))
            {
                Some(at) => {
                    // Everything before it has answered.
                    queue.drain(..=at);
                    Verdict::Swallow
                }
                None => Verdict::Forward,
            }
        } else {
            answer(queue, is_error(frame), kind, name)
        };
        if queue.is_empty() {
            self.conns.remove(&id);
        }
        verdict
    }
}

fn has_client_barrier(queue: &VecDeque<Entry>) -> bool {
    queue
        .iter()
        .any(|e| matches!(e.kind, Kind::Barrier { client: true }))
}

/// Where a frame that answers nothing owed goes: a shard channel the
/// node dropped unasked is reported, anything else forwarded.
fn unasked(kind: Option<&'static [u8]>, name: Option<Bytes>) -> Verdict {
    match (kind, name) {
        (Some(b"sunsubscribe"), Some(name)) => Verdict::ShardDropped(name),
        _ => Verdict::Forward,
    }
}

/// The reply kind of frames answering a (un)subscribe command of `set`
/// (`None`: `PING`).
pub fn reply_kind(set: Option<Set>, subscribe: bool) -> &'static [u8] {
    match (set, subscribe) {
        (Some(Set::Channels), true) => b"subscribe",
        (Some(Set::Patterns), true) => b"psubscribe",
        (Some(Set::Shard), true) => b"ssubscribe",
        (Some(Set::Channels), false) => b"unsubscribe",
        (Some(Set::Patterns), false) => b"punsubscribe",
        (Some(Set::Shard), false) => b"sunsubscribe",
        (None, _) => b"pong",
    }
}

/// The first element of an array or push frame (its kind, as sent by the
/// node: lower case) and its second when it is a bulk string (a channel).
fn kind_and_name(frame: &[u8]) -> (Option<&'static [u8]>, Option<Bytes>) {
    use super::pubsub::SUBSCRIPTION_COMMANDS;
    let Some(parts) = crate::protocol::scan::children(frame) else {
        return (None, None);
    };
    let bulk = |i: usize| {
        let (s, e) = *parts.get(i)?;
        crate::protocol::scan::bulk_body(frame.get(s..e)?)
    };
    let kind = bulk(0).and_then(|k| {
        let pong: &'static [u8] = b"pong";
        SUBSCRIPTION_COMMANDS
            .iter()
            .copied()
            .chain([pong])
            .find(|&known| known == k)
    });
    (kind, bulk(1).map(Bytes::copy_from_slice))
}

/// The owner of a reply (not a barrier's success) at the head of `queue`;
/// `kind` and `name`: the frame's (see [`kind_and_name`]).
fn answer(
    queue: &mut VecDeque<Entry>,
    error: bool,
    kind: Option<&'static [u8]>,
    name: Option<Bytes>,
) -> Verdict {
    loop {
        let Some(head) = queue.front_mut() else {
            return unasked(kind, name);
        };
        if !error && !answers(head, kind, name.as_deref()) {
            // Not the reply owed first: a node's own notice.
            return unasked(kind, name);
        }
        if let Kind::Barrier { .. } = head.kind {
            if !error {
                // Nothing is owed before the barrier: not a reply the
                // proxy knows of.
                return Verdict::Forward;
            }
            queue.pop_front();
            return Verdict::Swallow;
        }
        if error && head.got > 0 {
            // A command of unknown reply count (an unsubscribe from all)
            // has answered: the error is the next one's.
            queue.pop_front();
            continue;
        }
        if error {
            return match queue.pop_front().map(|e| e.kind) {
                Some(Kind::Client(change)) => Verdict::Refused(change),
                Some(Kind::Proxy(set, names)) => Verdict::OwnRefused(set, names),
                _ => Verdict::Forward,
            };
        }
        head.got += 1;
        let client = matches!(head.kind, Kind::Client(_));
        if head.expected == Some(head.got) {
            queue.pop_front();
        }
        return if client {
            Verdict::Forward
        } else {
            Verdict::Swallow
        };
    }
}

/// Whether a frame of `kind` about channel `name` answers `entry`: the
/// kind must be the one its command gets, and a `sunsubscribe` (which a
/// node also sends unasked) must name one of the command's channels.
fn answers(entry: &Entry, kind: Option<&[u8]>, name: Option<&[u8]>) -> bool {
    if let Kind::Barrier { .. } = entry.kind {
        // Its success is recognised by its channel (see `verdict`).
        return false;
    }
    if kind != Some(entry.reply) {
        // A RESP3 `PING` while subscribed answers `+PONG`.
        return kind.is_none() && entry.reply == b"pong";
    }
    let names = match &entry.kind {
        Kind::Client(change) => &change.names,
        Kind::Proxy(_, names) => names,
        Kind::Barrier { .. } => return false,
    };
    entry.reply != b"sunsubscribe"
        || names.is_empty()
        || name.is_some_and(|n| names.iter().any(|c| c[..] == *n))
}

/// Whether `frame` is an error (RESP2 or RESP3).
fn is_error(frame: &[u8]) -> bool {
    matches!(frame.first(), Some(b'-' | b'!'))
}

/// Whether `frame` is a published message (`message`, `pmessage` or
/// `smessage`), which answers no command.
pub fn is_message(frame: &[u8]) -> bool {
    let Some(rest) = frame
        .strip_prefix(b"*")
        .or_else(|| frame.strip_prefix(b">"))
    else {
        return false;
    };
    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
        return false;
    };
    let kind = rest.get(nl + 1..).unwrap_or_default();
    kind.starts_with(b"$7\r\nmessage\r\n")
        || kind.starts_with(b"$8\r\npmessage\r\n")
        || kind.starts_with(b"$8\r\nsmessage\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB_A: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n";
    const SUB_B: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n";
    const MSG: &[u8] = b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n";
    const BUSY: &[u8] = b"-BUSY Redis is busy running a script.\r\n";

    fn change(names: &[&str]) -> Change {
        let names: Vec<Bytes> = names.iter().map(|n| Bytes::from(n.to_string())).collect();
        Change {
            set: Some(Set::Channels),
            subscribe: true,
            added: names.clone(),
            names,
            removed: Vec::new(),
            redirects: 0,
        }
    }

    #[test]
    fn confirmations_then_the_barrier() {
        let mut owed = Owed::default();
        owed.client(0, b"subscribe", change(&["a", "b"]), Some(2));
        owed.barrier(0, true);
        assert!(owed.confirming());
        assert_eq!(owed.verdict(0, SUB_A, false), Verdict::Forward);
        assert_eq!(owed.verdict(0, MSG, false), Verdict::Forward);
        assert_eq!(owed.verdict(0, SUB_B, false), Verdict::Forward);
        assert!(owed.confirming());
        assert_eq!(owed.verdict(0, b"*3\r\n...", true), Verdict::Swallow);
        assert!(!owed.confirming());
        // Nothing owed: forwarded as it is.
        assert_eq!(owed.verdict(0, SUB_A, false), Verdict::Forward);
    }

    #[test]
    fn a_refused_command_and_its_refused_barrier() {
        // A node running a long script refuses both.
        let mut owed = Owed::default();
        owed.client(0, b"subscribe", change(&["a", "b"]), Some(2));
        owed.barrier(0, true);
        assert_eq!(
            owed.verdict(0, BUSY, false),
            Verdict::Refused(change(&["a", "b"]))
        );
        assert!(owed.confirming());
        assert_eq!(owed.verdict(0, BUSY, false), Verdict::Swallow);
        assert!(!owed.confirming());
    }

    #[test]
    fn an_error_after_an_unsubscribe_from_all_is_the_next_commands() {
        let mut owed = Owed::default();
        owed.client(0, b"unsubscribe", Change::default(), None);
        owed.barrier(0, true);
        owed.client(0, b"subscribe", change(&["a"]), Some(1));
        owed.barrier(0, true);
        let unsub = b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nx\r\n:0\r\n";
        assert_eq!(owed.verdict(0, unsub, false), Verdict::Forward);
        assert_eq!(owed.verdict(0, BUSY, false), Verdict::Swallow);
        assert_eq!(
            owed.verdict(0, BUSY, false),
            Verdict::Refused(change(&["a"]))
        );
        assert_eq!(owed.verdict(0, BUSY, false), Verdict::Swallow);
        assert!(!owed.confirming());
    }

    #[test]
    fn the_proxys_own_resubscription_is_swallowed_exactly() {
        let mut owed = Owed::default();
        owed.proxy(3, Set::Shard, vec![Bytes::from_static(b"s")]);
        owed.barrier(3, false);
        assert!(!owed.confirming());
        owed.client(3, b"ssubscribe", change(&["t"]), Some(1));
        owed.barrier(3, true);
        let conf = b">3\r\n$10\r\nssubscribe\r\n$1\r\ns\r\n:1\r\n";
        assert_eq!(owed.verdict(3, conf, false), Verdict::Swallow);
        assert_eq!(owed.verdict(3, b"", true), Verdict::Swallow);
        // The client's own confirmation is not taken for the proxy's.
        assert_eq!(owed.verdict(3, conf, false), Verdict::Forward);
        assert!(owed.confirming_only_on(3) && !owed.confirming_only_on(0));
        assert_eq!(owed.forget(3), 0);
        assert!(!owed.confirming());
    }

    #[test]
    fn a_lost_connection_counts_the_replies_it_still_owed() {
        // A PUBLISH sent on the subscription connection, then a PING; the
        // PUBLISH was answered before the connection was lost.
        let mut owed = Owed::default();
        for _ in 0..2 {
            owed.client(0, b"pong", Change::default(), None);
            owed.barrier(0, true);
        }
        owed.client(0, b"subscribe", change(&["a"]), Some(1));
        assert_eq!(owed.verdict(0, b":1\r\n", false), Verdict::Forward);
        assert_eq!(owed.forget(0), 1);
        assert_eq!(owed.forget(0), 0);
    }

    #[test]
    fn a_refused_resubscription_is_reported() {
        let mut owed = Owed::default();
        owed.proxy(0, Set::Patterns, vec![Bytes::from_static(b"p*")]);
        owed.barrier(0, false);
        assert_eq!(
            owed.verdict(0, BUSY, false),
            Verdict::OwnRefused(Set::Patterns, vec![Bytes::from_static(b"p*")])
        );
        assert_eq!(owed.verdict(0, BUSY, false), Verdict::Swallow);
    }

    #[test]
    fn a_node_dropping_a_shard_channel_unasked_is_told_from_replies() {
        let dropped = b">3\r\n$12\r\nsunsubscribe\r\n$1\r\nc\r\n:0\r\n";
        let conf = b">3\r\n$10\r\nssubscribe\r\n$1\r\nt\r\n:1\r\n";
        let mut owed = Owed::default();
        assert_eq!(
            owed.verdict(5, dropped, false),
            Verdict::ShardDropped(Bytes::from_static(b"c"))
        );
        owed.client(5, b"ssubscribe", change(&["t"]), Some(1));
        owed.barrier(5, true);
        // Between a command and its reply: not taken for the reply.
        assert_eq!(
            owed.verdict(5, dropped, false),
            Verdict::ShardDropped(Bytes::from_static(b"c"))
        );
        assert_eq!(owed.verdict(5, conf, false), Verdict::Forward);
        assert_eq!(owed.verdict(5, b"", true), Verdict::Swallow);
        // The client's own SUNSUBSCRIBE of it is answered as usual.
        let mut gone = change(&["c"]);
        gone.subscribe = false;
        owed.client(5, b"sunsubscribe", gone, Some(1));
        owed.barrier(5, true);
        assert_eq!(owed.verdict(5, dropped, false), Verdict::Forward);
    }

    #[test]
    fn messages_are_told_from_replies() {
        assert!(is_message(MSG));
        assert!(is_message(
            b">3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n"
        ));
        assert!(is_message(
            b"*4\r\n$8\r\npmessage\r\n$2\r\na*\r\n$1\r\na\r\n$1\r\nx\r\n"
        ));
        assert!(is_message(
            b">3\r\n$8\r\nsmessage\r\n$1\r\ns\r\n$1\r\nx\r\n"
        ));
        assert!(!is_message(SUB_A));
        assert!(!is_message(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"));
        assert!(!is_message(BUSY));
        assert!(!is_message(b""));
    }
}
