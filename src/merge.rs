//! Merging sub-replies into exactly what one Redis server would answer.
//!
//! Every function here takes the raw reply frames of the parts (already
//! checked to be non-errors) and returns one frame. Element bytes are copied
//! as the servers sent them, so RESP2 and RESP3 replies keep their encoding.

use bytes::{BufMut, Bytes, BytesMut};

use crate::command::route::BitOp;
use crate::hll::Registers;
use crate::protocol::reply::{self, put_array, put_header, put_int};
use crate::protocol::request::parse_i64;
use crate::protocol::scan::{bulk_body, children, children_into};

/// Reply used when a server's answer does not have the expected shape.
fn unexpected(what: &str) -> Bytes {
    reply::error(&format!(
        "ERR slotbridge: unexpected reply shape from a server while merging {what}"
    ))
}

/// `MGET`: places each part's values at their original positions.
pub fn mget(parts: &[(&Bytes, &[u32])], total: usize) -> Bytes {
    let mut slots: Vec<Option<(&Bytes, usize, usize)>> = vec![None; total];
    let mut size = 16;
    let mut elems = Vec::with_capacity(total);
    for (frame, positions) in parts {
        if children_into(frame, &mut elems).is_none() {
            return unexpected("MGET");
        }
        if elems.len() != positions.len() {
            return unexpected("MGET");
        }
        for (&(s, e), &pos) in elems.iter().zip(positions.iter()) {
            match slots.get_mut(pos as usize) {
                Some(slot) => *slot = Some((*frame, s, e)),
                None => return unexpected("MGET"),
            }
            size += e - s;
        }
    }
    let mut out = BytesMut::with_capacity(size);
    put_array(&mut out, total);
    for slot in slots {
        match slot {
            Some((frame, s, e)) => out.put_slice(&frame[s..e]),
            None => return unexpected("MGET"),
        }
    }
    out.freeze()
}

/// Parses an integer reply frame (`:n\r\n`).
pub fn integer(frame: &[u8]) -> Option<i64> {
    let body = frame.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    parse_i64(body)
}

/// Sum of integer replies (`DEL`, `EXISTS`, `DBSIZE`, ...).
pub fn sum(parts: &[&Bytes]) -> Bytes {
    let mut total: i64 = 0;
    for p in parts {
        match integer(p) {
            Some(n) => total = total.saturating_add(n),
            None => return unexpected("integer replies"),
        }
    }
    reply::int(total)
}

/// `DEBUG DIGEST` of every master combined into the digest one server
/// holding all their keys would give. A server XORs one digest per key
/// into a start value mixed from the database number (unless it has no
/// key: then all zeros), so XORing the masters' non-zero digests gives
/// the union's, with the start value XORed in once more when their
/// number is even (it cancelled out).
pub fn digest(parts: &[&Bytes]) -> Bytes {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut acc = [0u8; 20];
    let mut non_empty = 0usize;
    for p in parts {
        let Some(hex) = p.strip_prefix(b"+").and_then(|r| r.strip_suffix(b"\r\n")) else {
            return unexpected("a DEBUG DIGEST status");
        };
        let Some(d) = hex_digest(hex) else {
            return unexpected("a DEBUG DIGEST status");
        };
        if d != [0u8; 20] {
            non_empty += 1;
            acc.iter_mut().zip(d).for_each(|(a, b)| *a ^= b);
        }
    }
    if non_empty > 0 && non_empty.is_multiple_of(2) {
        acc.iter_mut()
            .zip(digest_start())
            .for_each(|(a, b)| *a ^= b);
    }
    let mut out = Vec::with_capacity(43);
    out.push(b'+');
    for b in acc {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// 40 hex digits as 20 bytes.
fn hex_digest(hex: &[u8]) -> Option<[u8; 20]> {
    if hex.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (o, pair) in out.iter_mut().zip(hex.chunks(2)) {
        let s = std::str::from_utf8(pair).ok()?;
        *o = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// A non-empty database 0's start value in Redis's dataset digest:
/// `mixDigest` of 20 zero bytes with the number 0 (4 bytes), that is
/// SHA1(SHA1(00 00 00 00)).
fn digest_start() -> [u8; 20] {
    let inner = sha1_smol::Sha1::from([0u8; 4]).digest().bytes();
    sha1_smol::Sha1::from(inner).digest().bytes()
}

/// `SCRIPT KILL`/`FUNCTION KILL` asked of every master (a script runs on
/// one): the `+OK` of the master that killed its script; else the first
/// error other than `NOTBUSY` (`UNKILLABLE`: the script wrote, or the
/// node could not be asked); else `NOTBUSY`, as one idle server says.
pub fn kill(parts: &[&Bytes]) -> Bytes {
    let ok = parts.iter().find(|p| p.first() == Some(&b'+'));
    let other = || parts.iter().find(|p| !p.starts_with(b"-NOTBUSY"));
    match ok.or_else(other).or(parts.first()) {
        Some(reply) => (*reply).clone(),
        None => reply::error("NOTBUSY No scripts in execution right now."),
    }
}

/// `+OK` when every part said OK; otherwise the first other reply.
pub fn all_ok(parts: &[&Bytes]) -> Bytes {
    for p in parts {
        if &p[..] != reply::OK {
            return (*p).clone();
        }
    }
    Bytes::from_static(reply::OK)
}

/// `MSETEX`'s parts: `:1` when every part set its keys, else the first
/// other reply.
pub fn all_one(parts: &[&Bytes]) -> Bytes {
    match parts.iter().find(|p| &p[..] != b":1\r\n") {
        Some(p) => (*p).clone(),
        None => Bytes::from_static(b":1\r\n"),
    }
}

/// Arrays (or sets) concatenated into one array of the first part's type.
pub fn concat(parts: &[&Bytes]) -> Bytes {
    let kind = parts.first().map(|p| p[0]).unwrap_or(b'*');
    let mut n = 0;
    let mut bodies = Vec::with_capacity(parts.len());
    let mut size = 16;
    for p in parts {
        let Some(elems) = children(p) else {
            return unexpected("arrays");
        };
        n += elems.len();
        if let (Some(first), Some(last)) = (elems.first(), elems.last()) {
            bodies.push(&p[first.0..last.1]);
            size += last.1 - first.0;
        }
    }
    let mut out = BytesMut::with_capacity(size);
    put_header(&mut out, kind, n);
    for b in bodies {
        out.put_slice(b);
    }
    out.freeze()
}

/// `SLOWLOG GET [count]`: the entries of all parts, newest first (by unix
/// time, then id), at most `count` of them (negative: all).
pub fn newest(parts: &[&Bytes], count: i64) -> Bytes {
    let mut entries: Vec<(i64, i64, &[u8])> = Vec::new();
    for p in parts {
        let Some(elems) = children(p) else {
            return unexpected("SLOWLOG GET");
        };
        for &(s, e) in &elems {
            let entry = &p[s..e];
            let field = |i: usize, fields: &[(usize, usize)]| {
                fields.get(i).and_then(|&(a, b)| integer(&entry[a..b]))
            };
            let Some(fields) = children(entry) else {
                return unexpected("SLOWLOG GET");
            };
            let (Some(id), Some(time)) = (field(0, &fields), field(1, &fields)) else {
                return unexpected("SLOWLOG GET");
            };
            entries.push((time, id, entry));
        }
    }
    entries.sort_by_key(|e| std::cmp::Reverse((e.0, e.1)));
    if let Ok(n) = usize::try_from(count) {
        entries.truncate(n);
    }
    let size = entries.iter().map(|e| e.2.len()).sum::<usize>() + 16;
    let mut out = BytesMut::with_capacity(size);
    put_array(&mut out, entries.len());
    for (_, _, entry) in entries {
        out.put_slice(entry);
    }
    out.freeze()
}

/// Element-wise AND of arrays of 0/1 integers (`SCRIPT EXISTS`), OR-ed
/// with `known` where given (one flag per element; no parts: `known` alone).
pub fn all_true(parts: &[&Bytes], known: &[bool]) -> Bytes {
    let mut acc: Option<Vec<bool>> = None;
    for p in parts {
        let Some(elems) = children(p) else {
            return unexpected("SCRIPT EXISTS");
        };
        let vals: Option<Vec<bool>> = elems
            .iter()
            .map(|&(s, e)| integer(&p[s..e]).map(|n| n == 1))
            .collect();
        let Some(vals) = vals else {
            return unexpected("SCRIPT EXISTS");
        };
        acc = Some(match acc {
            None => vals,
            Some(prev) if prev.len() == vals.len() => {
                prev.iter().zip(vals).map(|(a, b)| *a && b).collect()
            }
            Some(_) => return unexpected("SCRIPT EXISTS"),
        });
    }
    let mut acc = acc.unwrap_or_else(|| known.to_vec());
    if known.len() == acc.len() {
        acc.iter_mut().zip(known).for_each(|(a, k)| *a |= *k);
    }
    let mut out = BytesMut::with_capacity(8 + acc.len() * 4);
    put_array(&mut out, acc.len());
    for v in acc {
        put_int(&mut out, v as i64);
    }
    out.freeze()
}

/// Arrays merged into one without duplicates, in first-seen order.
pub fn union(parts: &[&Bytes]) -> Bytes {
    let mut seen: Vec<&[u8]> = Vec::new();
    for p in parts {
        let Some(elems) = children(p) else {
            return unexpected("arrays");
        };
        for (s, e) in elems {
            let item = &p[s..e];
            if !seen.contains(&item) {
                seen.push(item);
            }
        }
    }
    let mut out = BytesMut::with_capacity(16 + seen.iter().map(|s| s.len()).sum::<usize>());
    put_array(&mut out, seen.len());
    for item in seen {
        out.put_slice(item);
    }
    out.freeze()
}

/// Flat `[name, count, name, count...]` arrays summed per name, in the
/// order of the first part (`PUBSUB NUMSUB`).
pub fn sum_pairs(parts: &[&Bytes]) -> Bytes {
    let mut pairs: Vec<(&[u8], i64)> = Vec::new();
    for p in parts {
        let Some(elems) = children(p) else {
            return unexpected("PUBSUB NUMSUB");
        };
        for pair in elems.chunks(2) {
            let [(ns, ne), (cs, ce)] = pair else {
                return unexpected("PUBSUB NUMSUB");
            };
            let Some(count) = integer(&p[*cs..*ce]) else {
                return unexpected("PUBSUB NUMSUB");
            };
            let name = &p[*ns..*ne];
            match pairs.iter_mut().find(|(n, _)| *n == name) {
                Some(entry) => entry.1 = entry.1.saturating_add(count),
                None => pairs.push((name, count)),
            }
        }
    }
    let kind = parts.first().map(|p| p[0]).unwrap_or(b'*');
    let mut out = BytesMut::new();
    if kind == b'%' {
        put_header(&mut out, b'%', pairs.len());
    } else {
        put_array(&mut out, pairs.len() * 2);
    }
    for (name, count) in pairs {
        out.put_slice(name);
        put_int(&mut out, count);
    }
    out.freeze()
}

/// A set operation over `SMEMBERS` replies (in key order).
pub fn set_op(op: crate::command::route::SetOp, parts: &[&Bytes]) -> Bytes {
    let result = match set_result(op, parts) {
        Ok(result) => result,
        Err(e) => return e,
    };
    if let crate::command::route::SetOp::InterCard(limit) = op {
        let n = result.len() as u64;
        return reply::int(if limit == 0 { n } else { n.min(limit) } as i64);
    }
    let kind = parts.first().map(|p| p[0]).unwrap_or(b'*');
    let mut out = BytesMut::with_capacity(16 + result.iter().map(|m| m.len()).sum::<usize>());
    put_header(&mut out, kind, result.len());
    for m in result {
        out.put_slice(m);
    }
    out.freeze()
}

/// The members (whole frames) a set operation over `SMEMBERS` replies (in
/// key order) gives, without duplicates, in the first set's order (the
/// union: first seen). The first key that failed (`WRONGTYPE`) gives the
/// reply instead, as Redis checks every key's type in order.
pub fn set_result<'a>(
    op: crate::command::route::SetOp,
    parts: &[&'a Bytes],
) -> Result<Vec<&'a [u8]>, Bytes> {
    use crate::command::route::SetOp;
    use std::collections::HashSet;
    let mut sets: Vec<Vec<&[u8]>> = Vec::with_capacity(parts.len());
    for p in parts {
        if is_error_line(p) {
            return Err((*p).clone());
        }
        let Some(elems) = children(p) else {
            return Err(unexpected("SMEMBERS"));
        };
        sets.push(elems.iter().map(|&(s, e)| &p[s..e]).collect());
    }
    let Some((first, rest)) = sets.split_first() else {
        return Err(unexpected("SMEMBERS"));
    };
    let others: Vec<HashSet<&[u8]>> = rest.iter().map(|s| s.iter().copied().collect()).collect();
    let mut seen: HashSet<&[u8]> = HashSet::new();
    Ok(match op {
        SetOp::Inter | SetOp::InterCard(_) => first
            .iter()
            .copied()
            .filter(|m| others.iter().all(|o| o.contains(m)) && seen.insert(m))
            .collect(),
        SetOp::Diff => first
            .iter()
            .copied()
            .filter(|m| !others.iter().any(|o| o.contains(m)) && seen.insert(m))
            .collect(),
        SetOp::Union => sets
            .iter()
            .flatten()
            .copied()
            .filter(|m| seen.insert(m))
            .collect(),
    })
}

/// `PFCOUNT` of keys in several slots, over their `GET` replies in key
/// order: missing keys count as empty, the first key that fails (wrong
/// type, not a HyperLogLog, corrupt) gives Redis's error for it.
pub fn pfcount(parts: &[&Bytes]) -> Bytes {
    let mut max = Registers::default();
    match each_hll(parts, |_, value| max.merge(value).map(|_| ())) {
        Ok(()) => reply::int(i64::try_from(max.count()).unwrap_or(i64::MAX)),
        Err(e) => e,
    }
}

/// `PFMERGE dest source...` of keys in several slots, over the `GET`
/// replies of `dest` and the sources in that order: checked as Redis
/// checks them, the error for the first key that fails, else one stored
/// value holding the sources' merged registers, dense when one of them
/// was (as Redis decides the destination's encoding). `dest` is only
/// checked: its master merges it into this value itself, atomically.
pub fn pfmerge_sources(parts: &[&Bytes]) -> Result<Vec<u8>, Bytes> {
    let (mut dest, mut sources, mut dense) = (Registers::default(), Registers::default(), false);
    each_hll(parts, |i, value| {
        if i == 0 {
            return dest.merge(value).map(|_| ());
        }
        dense |= sources.merge(value)?;
        Ok(())
    })?;
    Ok(sources.encode(dense))
}

/// `BITOP op dest source...` of keys in several slots, over the sources'
/// `GET` replies in key order: the first source that is not a string gives
/// its error; missing ones are empty. Computes the result as Redis's
/// `bitopCommand` does (shorter sources padded with zeros), empty when
/// every source is.
pub fn bitop(op: BitOp, parts: &[&Bytes]) -> Result<Vec<u8>, Bytes> {
    let mut sources: Vec<&[u8]> = Vec::with_capacity(parts.len());
    for p in parts {
        if is_error_line(p) {
            return Err((*p).clone());
        }
        match bulk_body(p) {
            Some(value) => sources.push(value),
            None if is_nil(p) => sources.push(&[]),
            None => return Err(unexpected("GET")),
        }
    }
    let len = sources.iter().map(|s| s.len()).max().unwrap_or(0);
    let byte = |s: &[u8], j: usize| s.get(j).copied().unwrap_or(0);
    let Some((first, rest)) = sources.split_first() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(len);
    for j in 0..len {
        let mut b = byte(first, j);
        match op {
            BitOp::Not => b = !b,
            BitOp::And => rest.iter().for_each(|s| b &= byte(s, j)),
            BitOp::Or => rest.iter().for_each(|s| b |= byte(s, j)),
            BitOp::Xor => rest.iter().for_each(|s| b ^= byte(s, j)),
        }
        out.push(b);
    }
    Ok(out)
}

/// The sources of a sorted-set command across slots, from their
/// `ZUNION 1 key WITHSCORES` replies in key order; the first that failed
/// (`WRONGTYPE`) gives the reply.
pub fn zsources<'a>(parts: &[&'a Bytes]) -> Result<Vec<crate::zset::Members<'a>>, Bytes> {
    parts
        .iter()
        .map(|p| {
            if is_error_line(p) {
                return Err((*p).clone());
            }
            crate::zset::members(p).ok_or_else(|| unexpected("ZUNION"))
        })
        .collect()
}

/// `ZINTERCARD` across slots: the keys' errors first, then the `LIMIT`'s,
/// as Redis checks them.
pub fn zintercard(limit: Result<u64, &'static str>, parts: &[&Bytes]) -> Bytes {
    let sources = match zsources(parts) {
        Ok(sources) => sources,
        Err(e) => return e,
    };
    match limit {
        Ok(limit) => {
            let n = crate::zset::intercard(&sources, limit);
            reply::int(i64::try_from(n).unwrap_or(i64::MAX))
        }
        Err(e) => reply::error(e),
    }
}

/// `LCS` of two keys in different slots, over their `GET` replies: a key
/// that is not a string gives Redis's error for the command, then the
/// options' error, then the reply (see [`crate::lcs`]).
pub fn lcs(
    options: Result<crate::lcs::LcsOptions, &'static str>,
    parts: &[&Bytes],
    proto: reply::Proto,
) -> Bytes {
    let [a, b] = parts else {
        return unexpected("LCS");
    };
    if a.starts_with(b"-WRONGTYPE") || b.starts_with(b"-WRONGTYPE") {
        return reply::error("ERR The specified keys must contain string values");
    }
    if let Some(e) = [a, b].into_iter().find(|p| is_error_line(p)) {
        return (*e).clone();
    }
    let value = |p: &Bytes| -> Option<Vec<u8>> {
        if is_nil(p) {
            Some(Vec::new())
        } else {
            bulk_body(p).map(<[u8]>::to_vec)
        }
    };
    let (Some(a), Some(b)) = (value(a), value(b)) else {
        return unexpected("LCS");
    };
    match options {
        Ok(o) => crate::lcs::reply(&o, &a, &b, proto),
        Err(e) => reply::error(e),
    }
}

/// Whether a part is a missing key's null (RESP2 or RESP3).
fn is_nil(p: &[u8]) -> bool {
    p == b"$-1\r\n" || p == b"_\r\n"
}

/// Whether a part is one error line (a node's error for its key, e.g.
/// `WRONGTYPE`), to pass on as it is.
fn is_error_line(p: &[u8]) -> bool {
    p.first() == Some(&b'-')
        && p.ends_with(b"\r\n")
        && p.iter().filter(|&&b| b == b'\r' || b == b'\n').count() == 2
}

/// Runs `f` over each stored HyperLogLog of `GET` replies in key order
/// (with its key's index), skipping missing keys; the first failure is
/// the reply.
fn each_hll(
    parts: &[&Bytes],
    mut f: impl FnMut(usize, &[u8]) -> Result<(), crate::hll::Invalid>,
) -> Result<(), Bytes> {
    for (i, p) in parts.iter().enumerate() {
        if is_error_line(p) {
            return Err((*p).clone());
        }
        match bulk_body(p) {
            Some(value) => f(i, value).map_err(|e| reply::error(e.message()))?,
            None if is_nil(p) => {}
            None => return Err(unexpected("GET")),
        }
    }
    Ok(())
}

/// The smallest of integer replies (`WAIT`).
pub fn min(parts: &[&Bytes]) -> Bytes {
    let mut least: Option<i64> = None;
    for p in parts {
        match integer(p) {
            Some(n) => least = Some(least.map_or(n, |l| l.min(n))),
            None => return unexpected("integer replies"),
        }
    }
    reply::int(least.unwrap_or(0))
}

/// Arrays of integers of one length, the smallest at each position
/// (`WAITAOF`: local fsyncs and replicas that acknowledged everywhere).
pub fn min_each(parts: &[&Bytes]) -> Bytes {
    let mut least: Option<Vec<i64>> = None;
    for p in parts {
        let Some(elems) = children(p) else {
            return unexpected("integer arrays");
        };
        let vals: Option<Vec<i64>> = elems.iter().map(|&(s, e)| integer(&p[s..e])).collect();
        least = match (least, vals) {
            (None, Some(v)) => Some(v),
            (Some(l), Some(v)) if l.len() == v.len() => {
                Some(l.iter().zip(v).map(|(a, b)| (*a).min(b)).collect())
            }
            _ => return unexpected("integer arrays"),
        };
    }
    let least = least.unwrap_or_default();
    let mut out = BytesMut::with_capacity(8 + least.len() * 8);
    put_array(&mut out, least.len());
    for n in least {
        put_int(&mut out, n);
    }
    out.freeze()
}

/// One error reply for a split or fanned-out command whose parts failed:
/// the first failure's text, plus how many parts failed and of what.
pub fn failed(name: &str, errors: &[&Bytes], total: usize) -> Bytes {
    let first = errors
        .first()
        .map(|e| e.as_ref())
        .unwrap_or(b"-ERR unknown failure\r\n");
    let text = first
        .get(1..first.len().saturating_sub(2))
        .unwrap_or_default();
    let text = String::from_utf8_lossy(text);
    // Every part refused the command alike (a bad argument): nothing was
    // applied anywhere, and one server would say exactly this.
    if total <= 1 || (errors.len() == total && errors.iter().all(|e| e[..] == first[..])) {
        return reply::error(&text);
    }
    reply::error(&format!(
        "{text} (slotbridge: {} of {total} sub-requests of '{name}' failed; the others may have been applied)",
        errors.len()
    ))
}

/// The write of a store command computed across slots: one script that
/// deletes `dest` and adds `args` to it with `add` (`SADD`, `ZADD`, `RPUSH`) in
/// chunks, within Lua's stack; just `DEL` when there is nothing to add.
/// The shebang makes the node check OOM before the script runs (a script
/// without one is checked at its first write, and DEL may run under OOM),
/// as for the store commands themselves.
pub fn replace_with<'a>(
    add: &'static [u8],
    dest: &'a Bytes,
    args: impl IntoIterator<Item = &'a [u8]>,
) -> Bytes {
    const SCRIPT: &[u8] = b"#!lua\nredis.call('DEL', KEYS[1]) \
        for i = 2, #ARGV, 4000 do \
        redis.call(ARGV[1], KEYS[1], unpack(ARGV, i, math.min(i + 3999, #ARGV))) end \
        return 0";
    let mut all: Vec<&[u8]> = vec![b"EVAL", SCRIPT, b"1", dest, add];
    all.extend(args);
    if all.len() == 5 {
        return reply::command([&b"DEL"[..], dest]);
    }
    reply::command(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_combine_as_one_server() {
        let status = |hex: &str| Bytes::from(format!("+{hex}\r\n"));
        let zero = "0".repeat(40);
        // A non-empty server's digest: the start value XOR one digest per
        // key (x, y stand for those).
        let start = digest_start();
        let x = [0x11u8; 20];
        let y = [0x22u8; 20];
        let hex = |d: [u8; 20]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let with_start = |d: [u8; 20]| {
            let mut o = d;
            o.iter_mut().zip(start).for_each(|(a, b)| *a ^= b);
            o
        };
        // Two masters with keys x and y: start^x, start^y -> start^x^y.
        let both = digest(&[
            &status(&hex(with_start(x))),
            &status(&hex(with_start(y))),
            &status(&zero),
        ]);
        let mut xy = [0u8; 20];
        xy.iter_mut()
            .enumerate()
            .for_each(|(i, o)| *o = x[i] ^ y[i]);
        assert_eq!(both, status(&hex(with_start(xy))));
        // One non-empty master: its digest as it is; none: zeros.
        assert_eq!(
            digest(&[&status(&zero), &status(&hex(with_start(x)))]),
            status(&hex(with_start(x)))
        );
        assert_eq!(digest(&[&status(&zero), &status(&zero)]), status(&zero));
        assert!(digest(&[&Bytes::from_static(b":1\r\n")]).starts_with(b"-"));
    }

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    #[test]
    fn mget_restores_order() {
        let p1 = b(b"*2\r\n$1\r\n1\r\n$-1\r\n");
        let p2 = b(b"*1\r\n$1\r\n2\r\n");
        let out = mget(&[(&p1, &[0, 2]), (&p2, &[1])], 3);
        assert_eq!(&out[..], b"*3\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n");
        let resp3 = b(b"*1\r\n_\r\n");
        assert_eq!(&mget(&[(&resp3, &[0])], 1)[..], b"*1\r\n_\r\n");
        assert!(mget(&[(&p2, &[0, 1])], 2).starts_with(b"-ERR slotbridge"));
    }

    #[test]
    fn waitaof_counts_what_every_master_reached() {
        let out = min_each(&[&b(b"*2\r\n:1\r\n:2\r\n"), &b(b"*2\r\n:0\r\n:3\r\n")]);
        assert_eq!(&out[..], b"*2\r\n:0\r\n:2\r\n");
        let short = b(b"*1\r\n:1\r\n");
        assert!(min_each(&[&b(b"*2\r\n:1\r\n:2\r\n"), &short]).starts_with(b"-ERR slotbridge"));
        assert!(min_each(&[&b(b"+OK\r\n")]).starts_with(b"-ERR slotbridge"));
    }

    #[test]
    fn sums_and_oks() {
        assert_eq!(&sum(&[&b(b":2\r\n"), &b(b":-1\r\n")])[..], b":1\r\n");
        assert!(sum(&[&b(b"+OK\r\n")]).starts_with(b"-ERR"));
        assert_eq!(&all_ok(&[&b(b"+OK\r\n"), &b(b"+OK\r\n")])[..], b"+OK\r\n");
    }

    #[test]
    fn kill_takes_the_master_that_ran_the_script() {
        let idle = b(b"-NOTBUSY No scripts in execution right now.\r\n");
        let unkillable = b(b"-UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.\r\n");
        let ok = b(b"+OK\r\n");
        assert_eq!(kill(&[&idle, &ok, &idle]), ok);
        assert_eq!(kill(&[&idle, &unkillable]), unkillable);
        assert_eq!(kill(&[&idle, &idle]), idle);
    }

    #[test]
    fn concat_and_all_true() {
        let a = b(b"*1\r\n$1\r\na\r\n");
        let e = b(b"*0\r\n");
        let c = b(b"*2\r\n$1\r\nb\r\n$1\r\nc\r\n");
        assert_eq!(
            &concat(&[&a, &e, &c])[..],
            b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"
        );
        let x = b(b"*2\r\n:1\r\n:1\r\n");
        let y = b(b"*2\r\n:1\r\n:0\r\n");
        assert_eq!(&all_true(&[&x, &y], &[])[..], b"*2\r\n:1\r\n:0\r\n");
        // A script the proxy knows exists wherever the nodes lack it.
        assert_eq!(
            &all_true(&[&x, &y], &[false, true])[..],
            b"*2\r\n:1\r\n:1\r\n"
        );
        assert_eq!(&all_true(&[], &[true])[..], b"*1\r\n:1\r\n");
    }

    #[test]
    fn union_and_pairs() {
        let a = b(b"*2\r\n$1\r\na\r\n$1\r\nb\r\n");
        let c = b(b"*2\r\n$1\r\nb\r\n$1\r\nc\r\n");
        assert_eq!(
            &union(&[&a, &c])[..],
            b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"
        );
        let x = b(b"*4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:0\r\n");
        let y = b(b"*4\r\n$1\r\na\r\n:2\r\n$1\r\nb\r\n:1\r\n");
        assert_eq!(
            &sum_pairs(&[&x, &y])[..],
            b"*4\r\n$1\r\na\r\n:3\r\n$1\r\nb\r\n:1\r\n"
        );
    }

    #[test]
    fn set_results_give_the_first_keys_error() {
        use crate::command::route::SetOp;
        let a = Bytes::from_static(b"*2\r\n$1\r\nx\r\n$1\r\ny\r\n");
        let wrong = Bytes::from_static(b"-WRONGTYPE Operation against a key\r\n");
        let other = Bytes::from_static(b"-ERR other\r\n");
        assert_eq!(
            set_result(SetOp::Union, &[&a, &wrong, &other]),
            Err(wrong.clone())
        );
        let got = set_result(SetOp::Diff, &[&a, &a]).unwrap();
        assert!(got.is_empty());
        let got = set_result(SetOp::Union, &[&a, &a]).unwrap();
        assert_eq!(got, vec![&b"$1\r\nx\r\n"[..], b"$1\r\ny\r\n"]);
        assert!(set_result(SetOp::Inter, &[&Bytes::from_static(b":1\r\n")]).is_err());
    }

    #[test]
    fn set_operations() {
        use crate::command::route::SetOp;
        let a = b(b"*3\r\n$1\r\nx\r\n$1\r\ny\r\n$1\r\nz\r\n");
        let c = b(b"*2\r\n$1\r\ny\r\n$1\r\nw\r\n");
        assert_eq!(&set_op(SetOp::Inter, &[&a, &c])[..], b"*1\r\n$1\r\ny\r\n");
        assert_eq!(
            &set_op(SetOp::Diff, &[&a, &c])[..],
            b"*2\r\n$1\r\nx\r\n$1\r\nz\r\n"
        );
        assert_eq!(
            &set_op(SetOp::Union, &[&a, &c])[..],
            b"*4\r\n$1\r\nx\r\n$1\r\ny\r\n$1\r\nz\r\n$1\r\nw\r\n"
        );
        assert_eq!(&set_op(SetOp::InterCard(0), &[&a, &a])[..], b":3\r\n");
        assert_eq!(&set_op(SetOp::InterCard(2), &[&a, &a])[..], b":2\r\n");
        let r3 = b(b"~1\r\n$1\r\ny\r\n");
        assert_eq!(&set_op(SetOp::Inter, &[&r3, &c])[..], b"~1\r\n$1\r\ny\r\n");
        assert_eq!(&min(&[&b(b":2\r\n"), &b(b":1\r\n")])[..], b":1\r\n");
    }

    #[test]
    fn failure_message() {
        let e = b(b"-OOM command not allowed\r\n");
        assert_eq!(
            &failed("mset", &[&e], 3)[..],
            &b"-OOM command not allowed (slotbridge: 1 of 3 sub-requests of 'mset' failed; the others may have been applied)\r\n"[..]
        );
        assert_eq!(
            &failed("get", &[&e], 1)[..],
            b"-OOM command not allowed\r\n"
        );
        // Refused alike everywhere: nothing applied, Redis's own error.
        let bad = b(b"-ERR syntax error\r\n");
        assert_eq!(&failed("config|set", &[&bad, &bad, &bad], 3)[..], &bad[..]);
        let other = b(b"-ERR other\r\n");
        assert!(
            failed("config|set", &[&bad, &other, &bad], 3).ends_with(b"may have been applied)\r\n")
        );
    }

    #[test]
    fn newest_entries_first() {
        let entry = |id: i64, time: i64| {
            format!(
                "*6\r\n:{id}\r\n:{time}\r\n:5\r\n*1\r\n$3\r\nget\r\n$9\r\n127.0.0.1\r\n$0\r\n\r\n"
            )
        };
        let a = b(format!("*2\r\n{}{}", entry(7, 100), entry(6, 90)).as_bytes());
        let c = b(format!("*1\r\n{}", entry(1, 95)).as_bytes());
        let want = format!("*2\r\n{}{}", entry(7, 100), entry(1, 95));
        assert_eq!(&newest(&[&a, &c], 2)[..], want.as_bytes());
        let all = format!("*3\r\n{}{}{}", entry(7, 100), entry(1, 95), entry(6, 90));
        assert_eq!(&newest(&[&a, &c], -1)[..], all.as_bytes());
        assert!(newest(&[&b(b":1\r\n")], 1).starts_with(b"-ERR slotbridge"));
    }

    #[test]
    fn bitop_as_redis_computes_it() {
        let a = b(b"$3\r\n\x01\x02\xff\r\n");
        let f = b(b"$1\r\n\xf0\r\n");
        let missing = b(b"$-1\r\n");
        let list = b(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
        assert_eq!(bitop(BitOp::And, &[&a, &f]), Ok(vec![0, 0, 0]));
        assert_eq!(bitop(BitOp::Or, &[&a, &f]), Ok(vec![0xf1, 2, 0xff]));
        assert_eq!(bitop(BitOp::Xor, &[&f, &a]), Ok(vec![0xf1, 2, 0xff]));
        assert_eq!(bitop(BitOp::Not, &[&a]), Ok(vec![0xfe, 0xfd, 0]));
        assert_eq!(bitop(BitOp::Or, &[&missing, &b(b"_\r\n")]), Ok(vec![]));
        assert_eq!(bitop(BitOp::And, &[&a, &list, &b(b"$")]), Err(list.clone()));
        assert!(bitop(BitOp::And, &[&b(b":1\r\n")]).is_err());
    }

    #[test]
    fn pfcount_errors_in_key_order() {
        const NOT_HLL: &[u8] = b"-WRONGTYPE Key is not a valid HyperLogLog string value.\r\n";
        let list = b(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
        let text = b(b"$5\r\nhello\r\n");
        let missing = b(b"$-1\r\n");
        assert_eq!(&pfcount(&[&missing, &b(b"_\r\n")])[..], b":0\r\n");
        assert_eq!(
            &pfcount(&[&missing, &text, &list])[..],
            b"-WRONGTYPE Key is not a valid HyperLogLog string value.\r\n"
        );
        assert_eq!(&pfcount(&[&list, &text])[..], &list[..]);
        assert!(pfcount(&[&b(b":1\r\n")]).starts_with(b"-ERR slotbridge"));
        assert!(pfcount(&[&b(b"$9\r\nshort\r\n")]).starts_with(b"-ERR slotbridge"));
        // PFMERGE checks the destination first, but merges only sources.
        assert_eq!(pfmerge_sources(&[&text, &list]), Err(b(NOT_HLL)));
        let empty = pfmerge_sources(&[&missing, &missing]).unwrap();
        assert_eq!(&empty[..6], b"HYLL\x01\0");
    }
}
