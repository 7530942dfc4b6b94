//! `MULTI`/`EXEC` state: commands are queued in the proxy and sent at
//! `EXEC` as one `MULTI ... EXEC` block to the master of their slot.
//!
//! Writing the whole block at once on a pipelined connection keeps it
//! atomic on the server (a connection's commands are never interleaved with
//! another connection's). `WATCH` needs connection-private state on the
//! server, so a watching client gets a pinned private connection, and its
//! `EXEC` runs there.

use bytes::{BufMut, Bytes, BytesMut};

use crate::backend::BackendConn;
use crate::command::route::SplitKind;
use crate::split::SubRequest;

/// `*1\r\n$5\r\nMULTI\r\n`
const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
/// `*1\r\n$4\r\nEXEC\r\n`
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";

/// Redis's reply to `EXEC` after a queueing error.
pub const EXECABORT: &[u8] = b"-EXECABORT Transaction discarded because of previous errors.\r\n";

/// Where one queued command runs (per-slot transactions).
#[derive(Debug)]
pub enum Queued {
    /// In one slot (`None`: keyless).
    One(Option<u16>),
    /// Split per slot like outside a transaction, merged like it too.
    Split(SplitKind, Vec<SubRequest>, usize),
}

/// Where a queued command's reply is found in the per-slot `EXEC` replies.
#[derive(Debug)]
pub enum Loc {
    /// Group `g`, position `i`.
    One(usize, usize),
    /// One entry per part: group, position, key positions; then the kind
    /// and key count for merging.
    Split(
        Vec<(usize, usize, crate::split::Positions)>,
        SplitKind,
        usize,
    ),
}

/// How to assemble the client's `EXEC` reply from per-slot `EXEC`s.
#[derive(Debug)]
pub struct TxPlan {
    /// One entry per queued command, in the client's order.
    pub locs: Vec<Loc>,
}

/// A transaction being queued.
#[derive(Debug, Default)]
pub struct TxState {
    /// The queued commands, as the client sent them.
    pub queued: Vec<Bytes>,
    /// Where each queued command runs (same order as `queued`).
    pub plan: Vec<Queued>,
    /// The slot of the keys seen so far.
    pub slot: Option<u16>,
    /// A command was refused while queueing: `EXEC` aborts.
    pub failed: bool,
    /// A queued command may write or replicate (`CLIENT PAUSE WRITE`
    /// holds the `EXEC`).
    pub writes: bool,
    /// The client tracks this transaction's reads (`CLIENT TRACKING`; in
    /// `OPTIN` mode, `CLIENT CACHING YES` came right before `MULTI`).
    pub track: bool,
    /// It queued reads whose keys the tracker recorded.
    pub reads: bool,
    /// The queued commands as the client sent them (before co-location
    /// rewrites; same order as `queued`), for `EXEC` to check them again
    /// against the user's rules, as Redis does.
    pub originals: Vec<Bytes>,
    /// The places of queued `INFO`s, answered from all masters at `EXEC`.
    pub infos: Vec<usize>,
    /// The seconds of the transaction's `DEBUG SLEEP`s, together bounded
    /// as one outside a transaction.
    pub sleep_secs: f64,
    /// The places of queued `KEYS`, answered from all masters at `EXEC`,
    /// with the client's pattern where co-location rules apply it.
    pub keys: Vec<(usize, Option<Bytes>)>,
    /// The places of queued `FLUSHALL`s, `FLUSHDB`s and `CONFIG SET`s: the
    /// other masters run them at `EXEC`, the transaction's node in their
    /// place; with each, the command's name.
    pub fanouts: Vec<(usize, &'static str)>,
    /// The user's version (see `ClientState::user_version`) when `MULTI`
    /// began: `EXEC` checks the queued commands again only if it changed.
    pub user_version: Option<u64>,
    /// `MONITOR`'s line of the `EXEC`, written after those of the queued
    /// commands it runs, as Redis shows a transaction.
    pub exec_line: Option<Bytes>,
}

impl TxState {
    /// Whether the queued commands need more than one slot.
    pub fn spans_slots(&self) -> bool {
        let mut slot = None;
        for q in &self.plan {
            match q {
                Queued::Split(..) => return true,
                Queued::One(Some(s)) => match slot {
                    Some(t) if t != *s => return true,
                    _ => slot = Some(*s),
                },
                Queued::One(None) => {}
            }
        }
        false
    }

    /// Per-slot blocks (`MULTI ... EXEC` for each slot, in first-seen
    /// order, with how many replies precede each `EXEC`'s) and the plan to
    /// reassemble the client's reply.
    pub fn per_slot_blocks(&self) -> (Vec<(Option<u16>, Bytes, u32)>, TxPlan) {
        let mut groups: Vec<(Option<u16>, Vec<Bytes>)> = Vec::new();
        let group_of = |slot: Option<u16>, groups: &mut Vec<(Option<u16>, Vec<Bytes>)>| -> usize {
            // Keyless commands join the first group.
            let slot = slot.or_else(|| groups.first().and_then(|g| g.0));
            match groups.iter().position(|g| g.0 == slot) {
                Some(i) => i,
                None => {
                    groups.push((slot, Vec::new()));
                    groups.len() - 1
                }
            }
        };
        let mut locs = Vec::with_capacity(self.plan.len());
        for (cmd, q) in self.queued.iter().zip(&self.plan) {
            match q {
                Queued::One(slot) => {
                    let g = group_of(*slot, &mut groups);
                    groups[g].1.push(cmd.clone());
                    locs.push(Loc::One(g, groups[g].1.len() - 1));
                }
                Queued::Split(kind, subs, nkeys) => {
                    let mut parts = Vec::with_capacity(subs.len());
                    for sub in subs {
                        let g = group_of(Some(sub.slot), &mut groups);
                        groups[g].1.push(sub.payload.clone());
                        parts.push((g, groups[g].1.len() - 1, sub.positions.clone()));
                    }
                    locs.push(Loc::Split(parts, *kind, *nkeys));
                }
            }
        }
        let blocks = groups
            .into_iter()
            .map(|(slot, cmds)| {
                let block = TxState {
                    queued: cmds,
                    ..Default::default()
                };
                let (payload, skip) = block.block();
                (slot, payload, skip)
            })
            .collect();
        (blocks, TxPlan { locs })
    }

    /// The `MULTI ... EXEC` block and how many replies precede `EXEC`'s.
    pub fn block(&self) -> (Bytes, u32) {
        let size = MULTI.len() + EXEC.len() + self.queued.iter().map(|c| c.len()).sum::<usize>();
        let mut out = BytesMut::with_capacity(size);
        out.put_slice(MULTI);
        for c in &self.queued {
            out.put_slice(c);
        }
        out.put_slice(EXEC);
        (out.freeze(), self.queued.len() as u32 + 1)
    }
}

/// A private backend connection holding this client's `WATCH`es.
#[derive(Debug)]
pub struct Pinned {
    /// The connection (closed when dropped, which also drops the watches).
    pub conn: BackendConn,
    /// The slot of the watched keys.
    pub slot: u16,
    /// The watched keys, each once (`CLIENT LIST` counts them).
    pub keys: Vec<Bytes>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_wraps_commands() {
        let tx = TxState {
            queued: vec![Bytes::from_static(b"*2\r\n$4\r\nINCR\r\n$1\r\na\r\n")],
            slot: Some(1),
            ..Default::default()
        };
        let (block, skip) = tx.block();
        assert_eq!(
            &block[..],
            b"*1\r\n$5\r\nMULTI\r\n*2\r\n$4\r\nINCR\r\n$1\r\na\r\n*1\r\n$4\r\nEXEC\r\n"
        );
        assert_eq!(skip, 2);
    }
}
