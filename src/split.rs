//! Splitting a cross-slot multi-key command into one sub-command per slot.
//!
//! A cluster node refuses a multi-key command whose keys are in different
//! slots even when it owns all of them, so keys are grouped per slot (not
//! per node); the backend connection then batches the sub-commands of one
//! node into one write. Keys keep their relative order inside each group, so
//! duplicates behave exactly as on one server (`DEL a a` deletes once,
//! `EXISTS a a` counts twice, the last `MSET` value wins).

use std::collections::HashMap;

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
    /// For `MGET`: where each returned value goes in the merged reply
    /// (ordinal of the key in the original command).
    pub positions: Vec<u32>,
}

/// Splits `cmd` (whose key argument indices are `keys`) into per-slot
/// sub-commands of at most `max_keys` keys each (0: no limit).
pub fn split(
    kind: SplitKind,
    cmd: &CommandView<'_>,
    keys: &[usize],
    max_keys: usize,
) -> Vec<SubRequest> {
    if let SplitKind::Sets(_) = kind {
        // One SMEMBERS per key; the set operation runs in the proxy.
        return keys
            .iter()
            .enumerate()
            .map(|(ordinal, &k)| SubRequest {
                slot: slot(cmd.get(k)),
                payload: crate::protocol::reply::command([&b"SMEMBERS"[..], cmd.get(k)]),
                positions: vec![ordinal as u32],
            })
            .collect();
    }
    let step = match kind {
        SplitKind::Mset => 2,
        SplitKind::Mget | SplitKind::Sum | SplitKind::Sets(_) => 1,
    };
    // Group key ordinals by slot, in order of first appearance.
    let mut groups: Vec<(u16, Vec<u32>)> = Vec::new();
    let mut index: HashMap<u16, usize> = HashMap::new();
    for (ordinal, &k) in keys.iter().enumerate() {
        let s = slot(cmd.get(k));
        let g = if groups.len() < 16 {
            groups.iter().position(|(gs, _)| *gs == s)
        } else {
            if index.is_empty() {
                index.extend(groups.iter().enumerate().map(|(i, (gs, _))| (*gs, i)));
            }
            index.get(&s).copied()
        };
        let g = match g {
            Some(g) => g,
            None => {
                groups.push((s, Vec::new()));
                if !index.is_empty() || groups.len() > 16 {
                    index.insert(s, groups.len() - 1);
                }
                groups.len() - 1
            }
        };
        groups[g].1.push(ordinal as u32);
    }
    let name = cmd.get(0);
    let mut out = Vec::with_capacity(groups.len());
    // Every sub-request is written into one buffer and split off it: one
    // allocation for all of them rather than one each.
    let mut size = 0;
    for (_, ordinals) in &groups {
        let parts = match max_keys {
            0 => 1,
            max => ordinals.len().div_ceil(max),
        };
        size += parts * (32 + name.len());
        for &o in ordinals {
            for a in 0..step {
                size += cmd.get(keys[o as usize] + a).len() + 16;
            }
        }
    }
    let mut buf = BytesMut::with_capacity(size);
    for (s, ordinals) in groups {
        let chunk = if max_keys == 0 {
            ordinals.len()
        } else {
            max_keys
        };
        for part in ordinals.chunks(chunk.max(1)) {
            put_array(&mut buf, 1 + part.len() * step);
            put_bulk(&mut buf, name);
            for &o in part {
                for a in 0..step {
                    put_bulk(&mut buf, cmd.get(keys[o as usize] + a));
                }
            }
            out.push(SubRequest {
                slot: s,
                payload: buf.split().freeze(),
                positions: if kind == SplitKind::Mget {
                    part.to_vec()
                } else {
                    Vec::new()
                },
            });
        }
    }
    out
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
