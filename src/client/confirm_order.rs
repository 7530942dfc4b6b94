//! The confirmations of one `SSUBSCRIBE` or `SUNSUBSCRIBE` whose shard
//! channels live on several masters, released in the order of its
//! arguments, as one server sends them. The proxy sends one command per
//! slot, each on its owner's connection, so the masters' confirmations can
//! come in any order; a client such as go-redis reads the first as the
//! first channel's.
//!
//! Frames that arrive early wait. A message read on a connection after a
//! confirmation that waits, waits behind it (a client must not see a
//! channel's message before the channel's confirmation); frames of other
//! connections go on. A session sends the next subscription command only
//! once every confirmation of the previous one came (or the wait was given
//! up), so only one command's channels are ever due.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::protocol::scan::{bulk_body, children};

/// The pseudo connection id of confirmations the proxy writes itself (for
/// channels no connection carries). It is `MONITOR`'s event id, whose
/// frames never come here.
pub const OWN: u32 = super::pubsub::MONITOR;

/// The most bytes held (a busy channel's messages behind a confirmation
/// that waits for a slow node): past it, everything goes in arrival order.
const MAX_HELD_BYTES: usize = 1 << 20;

/// One early frame.
#[derive(Debug)]
struct Held {
    conn: u32,
    frame: Bytes,
    /// The channel it confirms, when it is one of the channels due.
    confirms: Option<Bytes>,
}

/// The channels whose confirmations are due, in argument order, and the
/// frames that came before their turn.
#[derive(Debug, Default)]
pub struct ConfirmOrder {
    due: VecDeque<Bytes>,
    held: VecDeque<Held>,
    held_bytes: usize,
}

impl ConfirmOrder {
    /// A command's confirmations of `channels` (in argument order, a
    /// channel named twice twice) are due.
    pub fn expect(&mut self, channels: impl IntoIterator<Item = Bytes>) {
        self.due.extend(channels);
    }

    /// Whether nothing is due or held: frames pass straight through.
    pub fn idle(&self) -> bool {
        self.due.is_empty() && self.held.is_empty()
    }

    /// A frame for the client read from shard connection `conn` (or
    /// written by the proxy, [`OWN`]): appended to `out` with every held
    /// frame whose turn it now is, in the order they go to the client.
    pub fn offer(&mut self, conn: u32, frame: Bytes, out: &mut Vec<Bytes>) {
        if self.idle() {
            out.push(frame);
            return;
        }
        let confirms = confirmed_channel(&frame)
            .filter(|c| self.due.iter().any(|d| d == c))
            .map(Bytes::copy_from_slice);
        self.held_bytes += frame.len();
        self.held.push_back(Held {
            conn,
            frame,
            confirms,
        });
        self.release(out);
        if self.held_bytes > MAX_HELD_BYTES {
            self.flush(out);
        }
    }

    /// Stops waiting (a confirmation will not come: the node refused the
    /// command, its connection was lost, or the wait was given up): every
    /// held frame goes to `out` in the order it came.
    pub fn flush(&mut self, out: &mut Vec<Bytes>) {
        self.due.clear();
        self.held_bytes = 0;
        out.extend(self.held.drain(..).map(|h| h.frame));
    }

    /// Moves to `out` the held frames whose turn has come.
    fn release(&mut self, out: &mut Vec<Bytes>) {
        while let Some(at) = self.next_ready() {
            let Some(held) = self.held.remove(at) else {
                return;
            };
            if held.confirms.is_some() {
                self.due.pop_front();
            }
            self.held_bytes -= held.frame.len();
            out.push(held.frame);
        }
    }

    /// The first held frame that may go: the confirmation of the first
    /// channel due, or another frame with nothing held before it from its
    /// connection.
    fn next_ready(&self) -> Option<usize> {
        self.held
            .iter()
            .enumerate()
            .position(|(i, h)| match &h.confirms {
                Some(c) => self.due.front() == Some(c),
                None => !self.held.iter().take(i).any(|e| e.conn == h.conn),
            })
    }
}

/// The channel an `ssubscribe` or `sunsubscribe` confirmation names (RESP2
/// or RESP3).
fn confirmed_channel(frame: &[u8]) -> Option<&[u8]> {
    let parts = children(frame)?;
    let [(ks, ke), (cs, ce), _] = parts[..] else {
        return None;
    };
    let kind = bulk_body(frame.get(ks..ke)?)?;
    if kind != b"ssubscribe" && kind != b"sunsubscribe" {
        return None;
    }
    bulk_body(frame.get(cs..ce)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(kind: &str, channel: &str, count: usize) -> Bytes {
        Bytes::from(format!(
            ">3\r\n${}\r\n{kind}\r\n${}\r\n{channel}\r\n:{count}\r\n",
            kind.len(),
            channel.len()
        ))
    }

    fn msg(channel: &str) -> Bytes {
        Bytes::from(format!(
            "*3\r\n$8\r\nsmessage\r\n${}\r\n{channel}\r\n$2\r\nhi\r\n",
            channel.len()
        ))
    }

    fn names(list: &[&str]) -> Vec<Bytes> {
        list.iter().map(|n| Bytes::from(n.to_string())).collect()
    }

    #[test]
    fn frames_pass_straight_through_when_nothing_is_due() {
        let mut order = ConfirmOrder::default();
        let mut out = Vec::new();
        order.offer(1, msg("a"), &mut out);
        order.offer(2, conf("ssubscribe", "b", 1), &mut out);
        assert_eq!(out, vec![msg("a"), conf("ssubscribe", "b", 1)]);
        assert!(order.idle());
    }

    #[test]
    fn confirmations_follow_the_arguments() {
        let mut order = ConfirmOrder::default();
        order.expect(names(&["a", "b", "c"]));
        let mut out = Vec::new();
        order.offer(3, conf("ssubscribe", "c", 1), &mut out);
        order.offer(2, conf("ssubscribe", "b", 1), &mut out);
        assert!(out.is_empty());
        order.offer(1, conf("ssubscribe", "a", 1), &mut out);
        let want: Vec<Bytes> = ["a", "b", "c"]
            .iter()
            .map(|c| conf("ssubscribe", c, 1))
            .collect();
        assert_eq!(out, want);
        assert!(order.idle());
    }

    #[test]
    fn a_message_waits_behind_its_connections_held_confirmation() {
        let mut order = ConfirmOrder::default();
        order.expect(names(&["a", "b"]));
        let mut out = Vec::new();
        // b's node answers first, then publishes on b; a message of an
        // older subscription on a's connection goes at once.
        order.offer(2, conf("ssubscribe", "b", 1), &mut out);
        order.offer(2, msg("b"), &mut out);
        order.offer(1, msg("old"), &mut out);
        assert_eq!(out, vec![msg("old")]);
        order.offer(1, conf("ssubscribe", "a", 1), &mut out);
        assert_eq!(
            out,
            vec![
                msg("old"),
                conf("ssubscribe", "a", 1),
                conf("ssubscribe", "b", 1),
                msg("b")
            ]
        );
        assert!(order.idle());
    }

    #[test]
    fn a_channel_named_twice_is_confirmed_twice_in_turn() {
        let mut order = ConfirmOrder::default();
        order.expect(names(&["a", "b", "a"]));
        let mut out = Vec::new();
        // One command per slot: a's node confirms both of its a's first.
        order.offer(1, conf("ssubscribe", "a", 1), &mut out);
        order.offer(1, conf("ssubscribe", "a", 1), &mut out);
        assert_eq!(out.len(), 1);
        order.offer(2, conf("ssubscribe", "b", 2), &mut out);
        assert_eq!(
            out,
            vec![
                conf("ssubscribe", "a", 1),
                conf("ssubscribe", "b", 2),
                conf("ssubscribe", "a", 1)
            ]
        );
        assert!(order.idle());
    }

    #[test]
    fn the_proxys_own_confirmations_take_their_turn() {
        let mut order = ConfirmOrder::default();
        order.expect(names(&["x", "y"]));
        let mut out = Vec::new();
        order.offer(OWN, conf("sunsubscribe", "y", 0), &mut out);
        assert!(out.is_empty());
        order.offer(4, conf("sunsubscribe", "x", 0), &mut out);
        assert_eq!(
            out,
            vec![conf("sunsubscribe", "x", 0), conf("sunsubscribe", "y", 0)]
        );
    }

    #[test]
    fn a_flood_behind_a_late_confirmation_is_not_held_for_ever() {
        let mut order = ConfirmOrder::default();
        order.expect(names(&["a", "b"]));
        let mut out = Vec::new();
        order.offer(2, conf("ssubscribe", "b", 1), &mut out);
        let big = Bytes::from(vec![b'x'; MAX_HELD_BYTES / 4]);
        for _ in 0..3 {
            order.offer(2, big.clone(), &mut out);
        }
        assert!(out.is_empty());
        order.offer(2, big.clone(), &mut out);
        assert_eq!(out.len(), 5);
        assert_eq!(out[0], conf("ssubscribe", "b", 1));
        assert!(order.idle());
    }

    #[test]
    fn a_flush_releases_everything_in_arrival_order() {
        let mut order = ConfirmOrder::default();
        order.expect(names(&["a", "b"]));
        let mut out = Vec::new();
        order.offer(2, conf("ssubscribe", "b", 1), &mut out);
        order.offer(2, msg("b"), &mut out);
        order.flush(&mut out);
        assert_eq!(out, vec![conf("ssubscribe", "b", 1), msg("b")]);
        assert!(order.idle());
        // RESP2 confirmations are recognised too.
        assert_eq!(
            confirmed_channel(b"*3\r\n$12\r\nsunsubscribe\r\n$1\r\nz\r\n:0\r\n"),
            Some(&b"z"[..])
        );
        assert_eq!(confirmed_channel(&msg("a")), None);
    }
}
