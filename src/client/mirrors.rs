//! Keyspace notifications from every master for one subscriber.
//!
//! A node publishes its keyspace notifications (`__keyspace@0__:<key>`,
//! `__keyevent@0__:<event>`) to its own subscribers only: unlike `PUBLISH`,
//! they do not cross the cluster bus. A client's classic subscriptions live
//! on one master, the home (see `PUBSUB_HOME_SLOT`), so the proxy mirrors
//! the channels and patterns that can name a notification on every other
//! master, and forwards from those mirrors the notifications alone:
//! anything else they carry (a `PUBLISH` reaches every node) already came
//! from the home.
//!
//! A mirror's subscription is followed by a barrier; until every mirror has
//! answered its barrier, the session holds the home's frames (see
//! [`Mirrors::pending`]), so that once the client reads its confirmation,
//! every master sends it its notifications, as one server would.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;

use super::pubsub::{is_barrier, subscribe_command};
use crate::backend::pubsub::PubSubConn;
use crate::protocol::scan::{bulk_body, children};

/// The channel prefixes of keyspace notifications.
const PREFIXES: [&[u8]; 2] = [b"__keyspace@", b"__keyevent@"];

/// Whether `channel` is a keyspace notification's.
pub fn is_notification_channel(channel: &[u8]) -> bool {
    PREFIXES.iter().any(|p| channel.starts_with(p))
}

/// Whether a glob `pattern` may match a keyspace notification's channel
/// (conservative: its literal start agrees with a notification prefix).
pub fn may_match_notifications(pattern: &[u8]) -> bool {
    let literal = pattern
        .iter()
        .position(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
        .unwrap_or(pattern.len());
    if literal == pattern.len() {
        return is_notification_channel(pattern);
    }
    PREFIXES.iter().any(|p| {
        let n = literal.min(p.len());
        pattern[..n] == p[..n]
    })
}

/// One master's mirror: a subscription connection and what it was asked
/// to subscribe.
#[derive(Debug)]
struct Mirror {
    conn: PubSubConn,
    channels: BTreeSet<Bytes>,
    patterns: BTreeSet<Bytes>,
    /// Barriers sent and not answered yet.
    barriers: u32,
}

impl Mirror {
    /// Unsubscribes `gone` and subscribes `new` channels (or `patterns`);
    /// with `confirm`, a barrier follows a subscription. Returns whether
    /// one was sent.
    fn update(&mut self, patterns: bool, gone: &[Bytes], new: &[Bytes], confirm: bool) -> bool {
        let (have, sub, unsub): (_, &[u8], &[u8]) = if patterns {
            (&mut self.patterns, b"PSUBSCRIBE", b"PUNSUBSCRIBE")
        } else {
            (&mut self.channels, b"SUBSCRIBE", b"UNSUBSCRIBE")
        };
        let gone: Vec<&Bytes> = gone.iter().filter(|n| have.remove(*n)).collect();
        if !gone.is_empty() {
            self.conn.send(subscribe_command(unsub, gone.into_iter()));
        }
        let new: Vec<&Bytes> = new.iter().filter(|n| have.insert((*n).clone())).collect();
        if new.is_empty() {
            return false;
        }
        self.conn.send(subscribe_command(sub, new.into_iter()));
        if confirm {
            self.conn.send(super::pubsub::barrier());
            self.barriers += 1;
        }
        confirm
    }
}

/// What a frame read from a mirror is.
#[derive(Debug, PartialEq, Eq)]
pub enum MirrorFrame<'a> {
    /// A keyspace notification: a `message` on `channel`, or a `pmessage`
    /// of `pattern`.
    Notification {
        /// The pattern of a `pmessage`.
        pattern: Option<&'a [u8]>,
        /// The notification's channel.
        channel: &'a [u8],
    },
    /// Nothing for the client (a confirmation, a barrier's reply, a
    /// message the home delivers).
    Swallow,
    /// The node refused a subscription (an error): the mirror is dropped
    /// and built again later.
    Refused,
}

/// What one subscription command changed in the names mirrors carry.
#[derive(Debug)]
pub struct MirrorDelta {
    /// Patterns (else channels).
    pub patterns: bool,
    /// Names subscribed.
    pub added: Vec<Bytes>,
    /// Names unsubscribed.
    pub removed: Vec<Bytes>,
}

/// Where a frame read from a mirror goes.
#[derive(Debug, PartialEq, Eq)]
pub enum MirrorVerdict {
    /// To the client, as is.
    Forward,
    /// Nowhere.
    Swallow,
    /// Nowhere; the mirror is dropped and built again later (the node
    /// refused a subscription).
    Refused,
}

/// The mirrors of one client, by connection id.
#[derive(Debug, Default)]
pub struct Mirrors {
    by_id: HashMap<u32, Mirror>,
}

impl Mirrors {
    /// Whether a mirror's subscription is not confirmed yet (the home's
    /// frames wait for it).
    pub fn pending(&self) -> bool {
        self.by_id.values().any(|m| m.barriers > 0)
    }

    /// The node mirror `id` is connected to.
    pub fn addr(&self, id: u32) -> Option<Arc<str>> {
        self.by_id.get(&id).map(|m| m.conn.addr.clone())
    }

    /// Stops waiting for the barriers still out.
    pub fn give_up(&mut self) {
        self.by_id.values_mut().for_each(|m| m.barriers = 0);
    }

    /// Whether any mirror exists.
    pub fn any(&self) -> bool {
        !self.by_id.is_empty()
    }

    /// Applies one command's `delta` to every mirror (the cost of a
    /// subscription command is its own names', however many the client
    /// has). Returns whether a barrier was sent.
    pub fn apply(&mut self, delta: &MirrorDelta) -> bool {
        let mut barrier_sent = false;
        for m in self.by_id.values_mut() {
            barrier_sent |= m.update(delta.patterns, &delta.removed, &delta.added, true);
        }
        barrier_sent
    }

    /// Mirror `id`'s connection is lost (or refused): it is forgotten.
    pub fn drop_mirror(&mut self, id: u32) -> bool {
        self.by_id.remove(&id).is_some()
    }

    /// Makes the mirrors match: one on each of `targets` subscribing
    /// `channels` and `patterns` (the client's that may carry
    /// notifications), none elsewhere. `open` opens a connection to a
    /// node. With `confirm`, new subscriptions are followed by a barrier
    /// (see [`Mirrors::pending`]). Returns whether a barrier was sent.
    pub fn sync(
        &mut self,
        targets: &[Arc<str>],
        channels: &BTreeSet<Bytes>,
        patterns: &BTreeSet<Bytes>,
        confirm: bool,
        mut open: impl FnMut(&Arc<str>) -> (u32, PubSubConn),
    ) -> bool {
        if channels.is_empty() && patterns.is_empty() {
            // Closing a connection unsubscribes everything on it.
            self.by_id.clear();
            return false;
        }
        self.by_id.retain(|_, m| targets.contains(&m.conn.addr));
        let mut barrier_sent = false;
        for target in targets {
            if !self.by_id.values().any(|m| m.conn.addr == *target) {
                let (id, conn) = open(target);
                let mirror = Mirror {
                    conn,
                    channels: BTreeSet::new(),
                    patterns: BTreeSet::new(),
                    barriers: 0,
                };
                self.by_id.insert(id, mirror);
            }
        }
        for m in self.by_id.values_mut() {
            for (patterns, want) in [(false, channels), (true, patterns)] {
                let have = if patterns { &m.patterns } else { &m.channels };
                let gone: Vec<Bytes> = have.difference(want).cloned().collect();
                let new: Vec<Bytes> = want.difference(have).cloned().collect();
                barrier_sent |= m.update(patterns, &gone, &new, confirm);
            }
        }
        barrier_sent
    }

    /// What `frame`, read from mirror `id`, is.
    pub fn frame<'a>(&mut self, id: u32, frame: &'a [u8]) -> MirrorFrame<'a> {
        let Some(mirror) = self.by_id.get_mut(&id) else {
            return MirrorFrame::Swallow;
        };
        if is_barrier(frame) {
            mirror.barriers = mirror.barriers.saturating_sub(1);
            return MirrorFrame::Swallow;
        }
        if matches!(frame.first(), Some(b'-' | b'!')) {
            return MirrorFrame::Refused;
        }
        match notification(frame) {
            Some((pattern, channel)) => MirrorFrame::Notification { pattern, channel },
            None => MirrorFrame::Swallow,
        }
    }
}

/// The pattern (of a `pmessage`) and the channel of a message on a
/// keyspace notification channel.
fn notification(frame: &[u8]) -> Option<(Option<&[u8]>, &[u8])> {
    let parts = children(frame)?;
    let bulk = |i: usize| {
        let &(s, e) = parts.get(i)?;
        bulk_body(frame.get(s..e)?)
    };
    let (pattern, channel) = match (parts.len(), bulk(0)?) {
        (3, b"message") => (None, bulk(1)?),
        (4, b"pmessage") => (Some(bulk(1)?), bulk(2)?),
        _ => return None,
    };
    is_notification_channel(channel).then_some((pattern, channel))
}

/// What a confirmation of a classic (un)subscription says: whether it
/// subscribes, whether it is a pattern's, and the name.
pub fn confirmation(frame: &[u8]) -> Option<(bool, bool, &[u8])> {
    const KINDS: [(&[u8], bool, bool); 4] = [
        (b"$9\r\nsubscribe\r\n", true, false),
        (b"$10\r\npsubscribe\r\n", true, true),
        (b"$11\r\nunsubscribe\r\n", false, false),
        (b"$12\r\npunsubscribe\r\n", false, true),
    ];
    let rest = frame
        .strip_prefix(b"*3\r\n")
        .or_else(|| frame.strip_prefix(b">3\r\n"))?;
    let (subscribe, pattern, rest) = KINDS
        .iter()
        .find_map(|&(kind, s, p)| Some((s, p, rest.strip_prefix(kind)?)))?;
    let end = crate::protocol::scan::FrameScanner::new()
        .scan(rest)
        .ok()??;
    Some((subscribe, pattern, bulk_body(rest.get(..end)?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_channels_and_patterns_that_may_match_them() {
        assert!(is_notification_channel(b"__keyspace@0__:k"));
        assert!(is_notification_channel(b"__keyevent@0__:set"));
        assert!(!is_notification_channel(b"__keyspace"));
        assert!(!is_notification_channel(b"news"));
        for p in [
            &b"*"[..],
            b"?*",
            b"[_]_key*",
            b"__keyspace@0__:*",
            b"__keyevent@*__:expired",
            b"__key*",
            b"_*",
            b"*oo",
            b"__keyevent@0__:set",
        ] {
            assert!(may_match_notifications(p), "{}", String::from_utf8_lossy(p));
        }
        for p in [&b"news.*"[..], b"h?llo", b"__keyx*", b"__key", b"a", b""] {
            assert!(
                !may_match_notifications(p),
                "{}",
                String::from_utf8_lossy(p)
            );
        }
    }

    #[test]
    fn notifications_and_confirmations_are_recognised() {
        let event: &[u8] = b"__keyevent@0__:set";
        let msg = b"*3\r\n$7\r\nmessage\r\n$18\r\n__keyevent@0__:set\r\n$1\r\nk\r\n";
        assert_eq!(notification(msg), Some((None, event)));
        let push = b">3\r\n$7\r\nmessage\r\n$18\r\n__keyevent@0__:set\r\n$1\r\nk\r\n";
        assert_eq!(notification(push), Some((None, event)));
        let pmsg = b"*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$18\r\n__keyevent@0__:set\r\n$1\r\nk\r\n";
        assert_eq!(notification(pmsg), Some((Some(&b"*"[..]), event)));
        // Published messages come from the home.
        let news = b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$1\r\nk\r\n";
        assert_eq!(notification(news), None);
        let pnews = b"*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$4\r\nnews\r\n$1\r\nk\r\n";
        assert_eq!(notification(pnews), None);
        let sub = b"*3\r\n$9\r\nsubscribe\r\n$18\r\n__keyevent@0__:set\r\n:1\r\n";
        assert_eq!(notification(sub), None);
        assert_eq!(confirmation(sub), Some((true, false, event)));
        let punsub = b">3\r\n$12\r\npunsubscribe\r\n$1\r\n*\r\n:0\r\n";
        assert_eq!(confirmation(punsub), Some((false, true, &b"*"[..])));
        assert_eq!(confirmation(news), None);
        // An unsubscribe from nothing names no channel.
        assert_eq!(
            confirmation(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"),
            None
        );
    }
}
