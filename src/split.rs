//! Splitting a cross-slot multi-key command into one sub-command per slot.
//!
//! A cluster node refuses a multi-key command whose keys are in different
//! slots even when it owns all of them, so keys are grouped per slot (not
//! per node); the backend connection then batches the sub-commands of one
//! node into one write. Keys keep their relative order inside each group, so
//! duplicates behave exactly as on one server (`DEL a a` deletes once,
//! `EXISTS a a` counts twice, the last `MSET` value wins).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::cluster::slot::slot;
use crate::command::keys::Args;
use crate::command::route::{CommandView, SplitKind};
use crate::protocol::reply::{put_array, put_bulk};

/// One per-slot sub-command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubRequest {
    /// The slot all its keys hash to.
    pub slot: u16,
    /// The encoded sub-command.
    pub payload: Bytes,
    /// For `MGET` and set operations: where each returned value goes in
    /// the merged reply (ordinal of the key in the original command).
    pub positions: Positions,
    /// The node rank the caller gave its slot ([`NO_NODE`]: none); the
    /// sub-commands of one node are adjacent.
    pub node: u32,
    /// Where its payload starts in the buffer [`split_by_node`] returns:
    /// adjacent sub-commands are adjacent there too, so those of one node
    /// can be sent as one slice.
    pub offset: usize,
}

/// A sub-command's key ordinals: a range of one list that all the
/// sub-commands of a split share (one allocation for all of them).
#[derive(Debug, Clone, Default)]
pub struct Positions {
    all: Option<Arc<[u32]>>,
    start: u32,
    end: u32,
}

impl Positions {
    /// The ordinals.
    pub fn as_slice(&self) -> &[u32] {
        self.all
            .as_deref()
            .and_then(|all| all.get(self.start as usize..self.end as usize))
            .unwrap_or_default()
    }
}

impl std::ops::Deref for Positions {
    type Target = [u32];

    fn deref(&self) -> &[u32] {
        self.as_slice()
    }
}

impl<'a> IntoIterator for &'a Positions {
    type Item = &'a u32;
    type IntoIter = std::slice::Iter<'a, u32>;

    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl PartialEq for Positions {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Positions {}

impl PartialEq<Vec<u32>> for Positions {
    fn eq(&self, other: &Vec<u32>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

/// The node rank of a slot whose owner is unknown (never grouped).
pub const NO_NODE: u32 = u32::MAX;

/// Splits `cmd` (whose key argument indices are `keys`) into per-slot
/// sub-commands of at most `max_keys` keys each (0: no limit).
pub fn split(
    kind: SplitKind,
    cmd: &CommandView<'_>,
    keys: &[usize],
    max_keys: usize,
) -> Vec<SubRequest> {
    let slots: Vec<u16> = keys.iter().map(|&k| slot(cmd.get(k))).collect();
    split_by_node(kind, cmd, keys, &slots, max_keys, |_| 0).0
}

/// The arguments of `ZRANGESTORE dst src min max [options]`'s range read
/// (see [`crate::zset::RANGE_READ`]): `min max [options]`, parsed there by
/// `ZRANGE` exactly as Redis parses them for `ZRANGESTORE`, except a
/// `WITHSCORES`, which `ZRANGESTORE` refuses as a syntax error where it
/// meets it: it becomes a word no option has.
fn range_read<'a>(cmd: &'a CommandView<'_>, args: &mut Vec<&'a [u8]>) {
    args.extend((3..cmd.len()).map(|i| {
        let arg = cmd.get(i);
        if i >= 5 && arg.eq_ignore_ascii_case(b"withscores") {
            &b"WITHSCORES-not-in-ZRANGESTORE"[..]
        } else {
            arg
        }
    }));
}

/// A slot's keys while splitting.
#[derive(Clone, Copy)]
struct Group {
    slot: u16,
    /// How many keys.
    count: u32,
    /// The rank of the node owning the slot.
    node: u32,
    /// Where its key ordinals start in the shared list (a cursor while
    /// that list is filled, then where they end).
    at: u32,
}

/// [`split`] with the keys' slots already known (`slots[i]` is the slot of
/// argument `keys[i]`), ordering the sub-commands by the rank `node_of`
/// gives each slot's owner. Returns them and the buffer all their payloads
/// are slices of (empty for the commands the proxy computes, whose
/// sub-commands are one read of one key each: see
/// [`SplitKind::read_per_key`]).
pub fn split_by_node(
    kind: SplitKind,
    cmd: &CommandView<'_>,
    keys: &[usize],
    slots: &[u16],
    max_keys: usize,
    mut node_of: impl FnMut(u16) -> u32,
) -> (Vec<SubRequest>, Bytes) {
    if kind == SplitKind::GeoStore {
        // One read, of the source, by its master (see `crate::geo`).
        let Some((src, dest)) = keys
            .first()
            .and_then(|_| crate::command::find(cmd))
            .and_then(|spec| crate::geo::store_keys(spec.name, cmd))
        else {
            return (Vec::new(), Bytes::new());
        };
        let sub = SubRequest {
            slot: slot(cmd.get(src)),
            payload: crate::geo::read_request(cmd, src, dest),
            positions: Positions {
                all: Some(Arc::from([0u32])),
                start: 0,
                end: 1,
            },
            node: NO_NODE,
            offset: 0,
        };
        return (vec![sub], Bytes::new());
    }
    if let Some((before, after)) = kind.read_per_key() {
        // One read per key (not of a destination only written); the result
        // is computed in the proxy.
        let skip = usize::from(kind.skips_destination()).min(keys.len());
        let (keys, slots) = (&keys[skip..], slots.get(skip..).unwrap_or_default());
        let all: Arc<[u32]> = (0..keys.len() as u32).collect();
        let subs = keys
            .iter()
            .zip(slots)
            .zip(0u32..)
            .map(|((&k, &slot), ordinal)| SubRequest {
                slot,
                payload: {
                    let mut args: Vec<&[u8]> = before.to_vec();
                    args.push(cmd.get(k));
                    args.extend_from_slice(after);
                    if kind == SplitKind::ZRangeStore {
                        range_read(cmd, &mut args);
                    }
                    crate::protocol::reply::command(args)
                },
                positions: Positions {
                    all: Some(all.clone()),
                    start: ordinal,
                    end: ordinal + 1,
                },
                node: NO_NODE,
                offset: 0,
            })
            .collect();
        return (subs, Bytes::new());
    }
    let step = match kind {
        SplitKind::Mset | SplitKind::Msetex => 2,
        SplitKind::Mget
        | SplitKind::Sum
        | SplitKind::Sets(_)
        | SplitKind::SStore(_)
        | SplitKind::ZRangeStore
        | SplitKind::GeoStore
        | SplitKind::Lcs(_)
        | SplitKind::PfCount
        | SplitKind::PfMerge
        | SplitKind::Bitop(_)
        | SplitKind::ZStore(_)
        | SplitKind::ZRead(_)
        | SplitKind::ZInterCard(_) => 1,
    };
    // Groups of keys by slot, in order of first appearance.
    let mut groups: Vec<Group> = Vec::with_capacity(slots.len().min(64));
    let mut group_of: Vec<u32> = Vec::with_capacity(keys.len());
    let mut index: HashMap<u16, u32> = HashMap::new();
    for &s in slots {
        let found = if groups.len() <= 16 {
            groups.iter().position(|g| g.slot == s).map(|g| g as u32)
        } else {
            if index.is_empty() {
                index.extend(groups.iter().zip(0u32..).map(|(g, i)| (g.slot, i)));
            }
            index.get(&s).copied()
        };
        let g = match found {
            Some(g) => g,
            None => {
                groups.push(Group {
                    slot: s,
                    count: 0,
                    node: 0,
                    at: 0,
                });
                let g = (groups.len() - 1) as u32;
                if !index.is_empty() {
                    index.insert(s, g);
                }
                g
            }
        };
        if let Some(group) = groups.get_mut(g as usize) {
            group.count += 1;
        }
        group_of.push(g);
    }
    // Groups ordered by node (stable: first appearance within a node), and
    // each group's key ordinals laid out back to back in that order.
    for group in groups.iter_mut() {
        group.node = node_of(group.slot);
    }
    let mut order: Vec<u32> = (0..groups.len() as u32).collect();
    order.sort_by_key(|&g| groups[g as usize].node);
    let mut at = 0;
    for &g in &order {
        let group = &mut groups[g as usize];
        group.at = at;
        at += group.count;
    }
    let mut ordinals = vec![0u32; keys.len()];
    for (&g, ordinal) in group_of.iter().zip(0u32..) {
        let group = &mut groups[g as usize];
        ordinals[group.at as usize] = ordinal;
        group.at += 1;
    }
    let name = cmd.get(0);
    // MSETEX: each part names its number of keys, and ends with the
    // command's options (those after its key/value pairs).
    let options: Vec<&[u8]> = match kind {
        SplitKind::Msetex => (2 + 2 * keys.len()..cmd.len())
            .map(|i| cmd.get(i))
            .collect(),
        _ => Vec::new(),
    };
    let numkeys = kind == SplitKind::Msetex;
    // At least 1, and at most what a u32 holds (any larger limit is no
    // limit: a command has fewer keys).
    let chunk = match max_keys {
        0 => keys.len(),
        max => max,
    };
    let chunk = u32::try_from(chunk).unwrap_or(u32::MAX).max(1);
    // Every sub-request is written into one buffer and sliced off it: one
    // allocation for all of them rather than one each.
    let mut size = 0;
    let options_len: usize = options.iter().map(|o| o.len() + 16).sum();
    for group in &groups {
        size += group.count.div_ceil(chunk) as usize * (48 + name.len() + options_len);
    }
    for &k in keys {
        for a in 0..step {
            size += cmd.get(k + a).len() + 16;
        }
    }
    let mut buf = BytesMut::with_capacity(size);
    let mut subs = Vec::with_capacity(groups.len());
    for &g in &order {
        let Group {
            slot,
            count,
            node,
            at: end,
        } = groups[g as usize];
        let mut first = end - count;
        while first < end {
            let last = end.min(first.saturating_add(chunk));
            let offset = buf.len();
            let n = (last - first) as usize;
            put_array(
                &mut buf,
                1 + usize::from(numkeys) + n * step + options.len(),
            );
            put_bulk(&mut buf, name);
            if numkeys {
                put_bulk(&mut buf, n.to_string().as_bytes());
            }
            for &o in &ordinals[first as usize..last as usize] {
                for a in 0..step {
                    put_bulk(&mut buf, cmd.get(keys[o as usize] + a));
                }
            }
            for option in &options {
                put_bulk(&mut buf, option);
            }
            subs.push(SubRequest {
                slot,
                payload: Bytes::new(),
                positions: Positions {
                    all: None,
                    start: first,
                    end: last,
                },
                node,
                offset,
            });
            first = last;
        }
    }
    let buf = buf.freeze();
    // Payloads are back to back: each ends where the next starts.
    let all: Option<Arc<[u32]>> = (kind == SplitKind::Mget).then(|| Arc::from(ordinals));
    let mut end = buf.len();
    for sub in subs.iter_mut().rev() {
        sub.payload = buf.slice(sub.offset..end);
        end = sub.offset;
        sub.positions.all = all.clone();
    }
    (subs, buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(parts: &[&str]) -> (Vec<u8>, Vec<(usize, usize)>) {
        let mut raw = Vec::new();
        let mut args = Vec::new();
        for p in parts {
            let s = raw.len();
            raw.extend_from_slice(p.as_bytes());
            args.push((s, raw.len()));
        }
        (raw, args)
    }

    #[test]
    fn mget_groups_by_slot_and_keeps_positions() {
        let (raw, args) = view(&["MGET", "a", "{a}x", "b", "a"]);
        let cmd = CommandView {
            raw: &raw,
            args: &args,
        };
        let parts = split(SplitKind::Mget, &cmd, &[1, 2, 3, 4], 0);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].slot, slot(b"a"));
        assert_eq!(
            &parts[0].payload[..],
            b"*4\r\n$4\r\nMGET\r\n$1\r\na\r\n$4\r\n{a}x\r\n$1\r\na\r\n"
        );
        assert_eq!(parts[0].positions, vec![0, 1, 3]);
        assert_eq!(parts[1].slot, slot(b"b"));
        assert_eq!(&parts[1].payload[..], b"*2\r\n$4\r\nMGET\r\n$1\r\nb\r\n");
        assert_eq!(parts[1].positions, vec![2]);
    }

    #[test]
    fn mset_keeps_pairs() {
        let (raw, args) = view(&["MSET", "a", "1", "b", "2", "a", "3"]);
        let cmd = CommandView {
            raw: &raw,
            args: &args,
        };
        let parts = split(SplitKind::Mset, &cmd, &[1, 3, 5], 0);
        assert_eq!(
            &parts[0].payload[..],
            b"*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\na\r\n$1\r\n3\r\n"
        );
        assert_eq!(
            &parts[1].payload[..],
            b"*3\r\n$4\r\nMSET\r\n$1\r\nb\r\n$1\r\n2\r\n"
        );
        assert!(parts[0].positions.is_empty());
    }

    #[test]
    fn msetex_parts_name_their_keys_and_keep_the_options() {
        let (raw, args) = view(&["MSETEX", "3", "a", "1", "b", "2", "a", "3", "EX", "100"]);
        let cmd = CommandView {
            raw: &raw,
            args: &args,
        };
        let parts = split(SplitKind::Msetex, &cmd, &[2, 4, 6], 0);
        let payloads: Vec<&[u8]> = parts.iter().map(|p| &p.payload[..]).collect();
        assert_eq!(
            payloads,
            vec![
                &b"*8\r\n$6\r\nMSETEX\r\n$1\r\n2\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\na\r\n$1\r\n3\r\n$2\r\nEX\r\n$3\r\n100\r\n"[..],
                &b"*6\r\n$6\r\nMSETEX\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n$2\r\nEX\r\n$3\r\n100\r\n"[..],
            ]
        );
    }

    #[test]
    fn sub_commands_of_one_node_are_adjacent_in_one_buffer() {
        let (raw, args) = view(&["DEL", "a", "b", "c", "{a}2", "d"]);
        let cmd = CommandView {
            raw: &raw,
            args: &args,
        };
        let keys = [1, 2, 3, 4, 5];
        let slots: Vec<u16> = keys.iter().map(|&k| slot(cmd.get(k))).collect();
        // "a" and "c" on node 0, "b" and "d" on node 1.
        let node = |s: u16| u32::from(s != slot(b"a") && s != slot(b"c"));
        let (subs, all) = split_by_node(SplitKind::Sum, &cmd, &keys, &slots, 0, node);
        let order: Vec<&[u8]> = subs.iter().map(|s| &s.payload[..]).collect();
        assert_eq!(
            order,
            vec![
                &b"*3\r\n$3\r\nDEL\r\n$1\r\na\r\n$4\r\n{a}2\r\n"[..],
                b"*2\r\n$3\r\nDEL\r\n$1\r\nc\r\n",
                b"*2\r\n$3\r\nDEL\r\n$1\r\nb\r\n",
                b"*2\r\n$3\r\nDEL\r\n$1\r\nd\r\n",
            ]
        );
        assert_eq!(
            subs.iter().map(|s| s.node).collect::<Vec<_>>(),
            vec![0, 0, 1, 1]
        );
        for sub in &subs {
            assert_eq!(
                &all[sub.offset..sub.offset + sub.payload.len()],
                &sub.payload[..]
            );
        }
        assert_eq!(subs[2].offset, subs[1].offset + subs[1].payload.len());
    }

    #[test]
    fn chunks_large_groups() {
        let (raw, args) = view(&["DEL", "{t}1", "{t}2", "{t}3", "{t}4", "{t}5"]);
        let cmd = CommandView {
            raw: &raw,
            args: &args,
        };
        let parts = split(SplitKind::Sum, &cmd, &[1, 2, 3, 4, 5], 2);
        assert_eq!(parts.len(), 3);
        assert_eq!(&parts[2].payload[..], b"*2\r\n$3\r\nDEL\r\n$4\r\n{t}5\r\n");
    }

    #[test]
    fn a_limit_beyond_u32_is_no_limit() {
        let (raw, args) = view(&["DEL", "{t}1", "{t}2", "x"]);
        let cmd = CommandView {
            raw: &raw,
            args: &args,
        };
        let unlimited = split(SplitKind::Sum, &cmd, &[1, 2, 3], 0);
        for max in [1usize << 32, u32::MAX as usize, usize::MAX] {
            assert_eq!(split(SplitKind::Sum, &cmd, &[1, 2, 3], max), unlimited);
        }
    }

    #[test]
    fn many_slots_use_the_index() {
        let names: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
        let mut parts = vec!["MGET"];
        parts.extend(names.iter().map(|s| s.as_str()));
        parts.push("k0");
        let (raw, args) = view(&parts);
        let cmd = CommandView {
            raw: &raw,
            args: &args,
        };
        let keys: Vec<usize> = (1..parts.len()).collect();
        let subs = split(SplitKind::Mget, &cmd, &keys, 0);
        let total: usize = subs.iter().map(|s| s.positions.len()).sum();
        assert_eq!(total, 201);
        let k0 = subs.iter().find(|s| s.slot == slot(b"k0")).unwrap();
        assert!(k0.positions.contains(&0) && k0.positions.contains(&200));
        let mut seen: Vec<u16> = subs.iter().map(|s| s.slot).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), subs.len());
    }
}
