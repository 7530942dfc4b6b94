//! The confirmations of one `SSUBSCRIBE` or `SUNSUBSCRIBE` whose shard
//! channels live on several masters, released in the order of its
//! arguments, as one server sends them. The proxy sends one command per
//! slot, each on its owner's connection, so the masters' confirmations can
//! come in any order; a client such as go-redis reads the first as the
//! first channel's.
//!
//! One server writes a command's confirmations back to back, so while
//! some are due the messages for the client wait too, and go after them in
//! the order they came: as if published a moment later. A confirmation
//! that is not due answers an earlier command whose wait was given up: it
//! goes at once, ahead of the later command's. A
//! session sends the next subscription command only once every
//! confirmation of the previous one came (or the wait was given up), so
//! only one command's channels are ever due; what still waits once its
//! confirmations came or were given up goes at once
//! ([`ConfirmOrder::flush`]).

use std::collections::VecDeque;

use bytes::Bytes;

use crate::protocol::scan::{bulk_body, children};

/// The most bytes held (a busy channel's messages while a confirmation
/// waits for a slow node): past it, everything goes in arrival order.
const MAX_HELD_BYTES: usize = 1 << 20;

/// A confirmation: its kind (`ssubscribe` or `sunsubscribe`) and channel.
type Confirmation = (&'static [u8], Bytes);

/// One early frame.
#[derive(Debug)]
struct Held {
    frame: Bytes,
    /// What it confirms, when that is due.
    confirms: Option<Confirmation>,
}

/// The confirmations due, in argument order, and the frames that came
/// before their turn.
#[derive(Debug, Default)]
pub struct ConfirmOrder {
    due: VecDeque<Confirmation>,
    held: VecDeque<Held>,
    held_bytes: usize,
}

impl ConfirmOrder {
    /// A command's confirmations of `channels` (in argument order, a
    /// channel named twice twice) are due; `subscribe`: an `SSUBSCRIBE`
    /// (else an `SUNSUBSCRIBE`).
    pub fn expect(&mut self, subscribe: bool, channels: impl IntoIterator<Item = Bytes>) {
        let kind = kind_of(subscribe);
        self.due.extend(channels.into_iter().map(|c| (kind, c)));
    }

    /// Whether nothing is due or held: frames pass straight through.
    pub fn idle(&self) -> bool {
        self.due.is_empty() && self.held.is_empty()
    }

    /// A frame for the client (from a subscription connection, or one the
    /// proxy writes itself): appended to `out` with every held frame whose
    /// turn it now is, in the order they go to the client.
    pub fn offer(&mut self, frame: Bytes, out: &mut Vec<Bytes>) {
        if self.idle() {
            out.push(frame);
            return;
        }
        let confirms = match confirmation(&frame) {
            Some((kind, channel)) if self.due.iter().any(|(k, c)| *k == kind && c == channel) => {
                Some((kind, Bytes::copy_from_slice(channel)))
            }
            Some(_) => {
                // An earlier command's, late.
                out.push(frame);
                return;
            }
            None => None,
        };
        self.held_bytes += frame.len();
        self.held.push_back(Held { frame, confirms });
        self.release(out);
        if self.held_bytes > MAX_HELD_BYTES {
            self.flush(out);
        }
    }

    /// Stops waiting (the confirmations came or will not come: a node
    /// refused its part, its connection was lost, or the wait was given
    /// up): every held frame goes to `out` in the order it came.
    pub fn flush(&mut self, out: &mut Vec<Bytes>) {
        self.due.clear();
        self.held_bytes = 0;
        out.extend(self.held.drain(..).map(|h| h.frame));
    }

    /// Moves to `out` the held frames whose turn has come: the
    /// confirmations due, in turn, then, once none is due, the rest.
    fn release(&mut self, out: &mut Vec<Bytes>) {
        while let Some(front) = self.due.front() {
            let Some(at) = self
                .held
                .iter()
                .position(|h| h.confirms.as_ref() == Some(front))
            else {
                return;
            };
            if let Some(held) = self.held.remove(at) {
                self.due.pop_front();
                self.held_bytes -= held.frame.len();
                out.push(held.frame);
            }
        }
        self.flush(out);
    }
}

fn kind_of(subscribe: bool) -> &'static [u8] {
    if subscribe {
        b"ssubscribe"
    } else {
        b"sunsubscribe"
    }
}

/// The kind and channel of an `ssubscribe` or `sunsubscribe` confirmation
/// (RESP2 or RESP3).
fn confirmation(frame: &[u8]) -> Option<(&'static [u8], &[u8])> {
    let parts = children(frame)?;
    let [(ks, ke), (cs, ce), _] = parts[..] else {
        return None;
    };
    let kind = match bulk_body(frame.get(ks..ke)?)? {
        b"ssubscribe" => kind_of(true),
        b"sunsubscribe" => kind_of(false),
        _ => return None,
    };
    Some((kind, bulk_body(frame.get(cs..ce)?)?))
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
        order.offer(msg("a"), &mut out);
        order.offer(conf("ssubscribe", "b", 1), &mut out);
        assert_eq!(out, vec![msg("a"), conf("ssubscribe", "b", 1)]);
        assert!(order.idle());
    }

    #[test]
    fn confirmations_follow_the_arguments() {
        let mut order = ConfirmOrder::default();
        order.expect(true, names(&["a", "b", "c"]));
        let mut out = Vec::new();
        order.offer(conf("ssubscribe", "c", 1), &mut out);
        order.offer(conf("ssubscribe", "b", 1), &mut out);
        assert!(out.is_empty());
        order.offer(conf("ssubscribe", "a", 1), &mut out);
        let want: Vec<Bytes> = ["a", "b", "c"]
            .iter()
            .map(|c| conf("ssubscribe", c, 1))
            .collect();
        assert_eq!(out, want);
        assert!(order.idle());
    }

    #[test]
    fn messages_wait_until_every_confirmation_went() {
        // One server writes a command's confirmations back to back.
        let mut order = ConfirmOrder::default();
        order.expect(true, names(&["a", "b"]));
        let mut out = Vec::new();
        order.offer(msg("old"), &mut out);
        order.offer(conf("ssubscribe", "a", 1), &mut out);
        order.offer(msg("a"), &mut out);
        assert_eq!(out, vec![conf("ssubscribe", "a", 1)]);
        order.offer(conf("ssubscribe", "b", 2), &mut out);
        assert_eq!(
            out,
            vec![
                conf("ssubscribe", "a", 1),
                conf("ssubscribe", "b", 2),
                msg("old"),
                msg("a")
            ]
        );
        assert!(order.idle());
    }

    #[test]
    fn a_channel_named_twice_is_confirmed_twice_in_turn() {
        let mut order = ConfirmOrder::default();
        order.expect(true, names(&["a", "b", "a"]));
        let mut out = Vec::new();
        // One command per slot: a's node confirms both of its a's first.
        order.offer(conf("ssubscribe", "a", 1), &mut out);
        order.offer(conf("ssubscribe", "a", 1), &mut out);
        assert_eq!(out.len(), 1);
        order.offer(conf("ssubscribe", "b", 2), &mut out);
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
    fn a_late_confirmation_of_another_command_goes_at_once() {
        // An SSUBSCRIBE's confirmation given up on arrives during the
        // SUNSUBSCRIBE of the same channels: it answers the earlier
        // command, and takes no turn of this one's.
        let mut order = ConfirmOrder::default();
        order.expect(false, names(&["x", "y"]));
        let mut out = Vec::new();
        order.offer(conf("sunsubscribe", "y", 0), &mut out);
        order.offer(conf("ssubscribe", "x", 2), &mut out);
        assert_eq!(out, vec![conf("ssubscribe", "x", 2)]);
        order.offer(conf("sunsubscribe", "x", 0), &mut out);
        assert_eq!(
            out,
            vec![
                conf("ssubscribe", "x", 2),
                conf("sunsubscribe", "x", 0),
                conf("sunsubscribe", "y", 0)
            ]
        );
        assert!(order.idle());
    }

    #[test]
    fn a_flood_while_a_confirmation_waits_is_not_held_for_ever() {
        let mut order = ConfirmOrder::default();
        order.expect(true, names(&["a", "b"]));
        let mut out = Vec::new();
        order.offer(conf("ssubscribe", "b", 1), &mut out);
        let big = Bytes::from(vec![b'x'; MAX_HELD_BYTES / 4]);
        for _ in 0..3 {
            order.offer(big.clone(), &mut out);
        }
        assert!(out.is_empty());
        order.offer(big.clone(), &mut out);
        assert_eq!(out.len(), 5);
        assert_eq!(out[0], conf("ssubscribe", "b", 1));
        assert!(order.idle());
    }

    #[test]
    fn a_flush_releases_everything_in_arrival_order() {
        let mut order = ConfirmOrder::default();
        order.expect(true, names(&["a", "b"]));
        let mut out = Vec::new();
        order.offer(conf("ssubscribe", "b", 1), &mut out);
        order.offer(msg("b"), &mut out);
        order.flush(&mut out);
        assert_eq!(out, vec![conf("ssubscribe", "b", 1), msg("b")]);
        assert!(order.idle());
        // RESP2 confirmations are recognised too.
        assert_eq!(
            confirmation(b"*3\r\n$12\r\nsunsubscribe\r\n$1\r\nz\r\n:0\r\n"),
            Some((&b"sunsubscribe"[..], &b"z"[..]))
        );
        assert_eq!(confirmation(&msg("a")), None);
    }
}
