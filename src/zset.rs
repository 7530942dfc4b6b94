//! Sorted-set algebra across slots, as Redis computes it: `ZUNIONSTORE`,
//! `ZINTERSTORE`, `ZDIFFSTORE` and `ZINTERCARD` over keys in several slots.
//!
//! Each source is read with `ZUNION 1 key WITHSCORES`, which a node answers
//! for a sorted set, a plain set (score 1) or a missing key alike, and
//! refuses with `WRONGTYPE` for anything else, as the commands themselves
//! do. The result is then computed here the way Redis 7.0's
//! `zunionInterDiffGenericCommand` computes it, so that every score is the
//! same double: sources ordered by size (smallest first, ties in the
//! caller's order) for union and intersection, weights applied and scores
//! aggregated in that order, a NaN sum becoming 0.

use std::collections::HashMap;

use crate::protocol::scan::{bulk_body, children};

/// Which algebra.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZOp {
    /// Members of any source.
    Union,
    /// Members of every source.
    Inter,
    /// Members of the first source in no other (their scores unchanged).
    Diff,
}

/// How the scores of one member in several sources combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// Added (the default).
    Sum,
    /// The smallest.
    Min,
    /// The largest.
    Max,
}

/// `WEIGHTS` and `AGGREGATE` of a store command.
#[derive(Debug, Clone, PartialEq)]
pub struct ZOptions {
    /// One weight per source (1 by default).
    pub weights: Vec<f64>,
    /// How scores combine.
    pub aggregate: Aggregate,
    /// `WITHSCORES` (the read commands only).
    pub withscores: bool,
}

/// The members and scores of one sorted set (or set, scored 1).
pub type Members<'a> = Vec<(&'a [u8], f64)>;

/// Redis's syntax error.
const SYNTAX: &str = "ERR syntax error";

/// Parses the options after the `n` source keys (`tail`) of a store
/// command or, with `read`, of `ZUNION`/`ZINTER`/`ZDIFF` (which also take
/// `WITHSCORES`), as Redis does; the error is Redis's text (without `-`).
pub fn parse_options(
    op: ZOp,
    tail: &[&[u8]],
    n: usize,
    read: bool,
) -> Result<ZOptions, &'static str> {
    let mut options = ZOptions {
        weights: vec![1.0; n],
        aggregate: Aggregate::Sum,
        withscores: false,
    };
    let mut j = 0;
    while j < tail.len() {
        let remaining = tail.len() - j;
        let word = tail[j];
        if op != ZOp::Diff && remaining > n && word.eq_ignore_ascii_case(b"weights") {
            for (i, weight) in options.weights.iter_mut().enumerate() {
                *weight = parse_weight(tail[j + 1 + i]).ok_or("ERR weight value is not a float")?;
            }
            j += 1 + n;
        } else if op != ZOp::Diff && remaining >= 2 && word.eq_ignore_ascii_case(b"aggregate") {
            let how = tail[j + 1];
            options.aggregate = if how.eq_ignore_ascii_case(b"sum") {
                Aggregate::Sum
            } else if how.eq_ignore_ascii_case(b"min") {
                Aggregate::Min
            } else if how.eq_ignore_ascii_case(b"max") {
                Aggregate::Max
            } else {
                return Err(SYNTAX);
            };
            j += 2;
        } else if read && word.eq_ignore_ascii_case(b"withscores") {
            options.withscores = true;
            j += 1;
        } else {
            return Err(SYNTAX);
        }
    }
    Ok(options)
}

/// The result in the order of a sorted set: by score, then by member's
/// bytes (as Redis's skiplist orders them).
pub fn sort(result: &mut [(&[u8], f64)]) {
    result.sort_by(|a, b| {
        a.1.partial_cmp(&b.1)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.0.cmp(b.0))
    });
}

/// The `LIMIT` of `SINTERCARD` or `ZINTERCARD` after their keys (`tail`),
/// read as Redis's loop reads it: `LIMIT n` any number of times (the last
/// wins), any other word a syntax error, any `n` that is not a
/// non-negative integer written as `string2ll` wants it the `LIMIT` error.
/// 0 is no limit.
pub fn intercard_limit(tail: &[&[u8]]) -> Result<u64, &'static str> {
    let mut limit = 0;
    let mut j = 0;
    while j < tail.len() {
        if j + 1 < tail.len() && tail[j].eq_ignore_ascii_case(b"limit") {
            limit = strict_u64(tail[j + 1]).ok_or("ERR LIMIT can't be negative")?;
            j += 2;
        } else {
            return Err(SYNTAX);
        }
    }
    Ok(limit)
}

/// A non-negative integer as Redis's `string2ll` accepts one: digits only,
/// no sign, no leading zero (but `0` itself), within a `long long`.
fn strict_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || (s.len() > 1 && s[0] == b'0') || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(s).ok()?.parse().ok()?;
    (n <= i64::MAX as u64).then_some(n)
}

/// A weight as Redis's `getDoubleFromObject` reads one: the whole string a
/// number, no leading space, not NaN, no overflow to infinity or underflow
/// to zero (an explicit `inf` is fine).
fn parse_weight(s: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(s).ok()?;
    if text.starts_with(|c: char| c.is_ascii_whitespace()) {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    let spelled_infinite = text
        .trim_start_matches(['+', '-'])
        .get(..3)
        .is_some_and(|w| w.eq_ignore_ascii_case("inf"));
    let mantissa = text.split(['e', 'E']).next().unwrap_or_default();
    let nonzero = mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b));
    if value.is_nan() || (value.is_infinite() && !spelled_infinite) || (value == 0.0 && nonzero) {
        return None;
    }
    Some(value)
}

/// The read of `ZRANGESTORE`'s range across slots, as a read-only script
/// run with the source as its key and `min max [options]` as its
/// arguments: `ZRANGE` (so its options and errors are Redis's own), then
/// each member's score, as `ZSCORE` writes it (exact), in a flat
/// member/score list like [`members`] reads. `ZRANGE ... BYLEX` refuses
/// `WITHSCORES`, which is why the scores are read one by one.
pub const RANGE_READ: &[u8] = b"#!lua flags=no-writes\n\
    local r = redis.pcall('ZRANGE', KEYS[1], unpack(ARGV)) \
    if r.err then return r end \
    local out = {} \
    for i, m in ipairs(r) do out[2 * i - 1] = m out[2 * i] = redis.call('ZSCORE', KEYS[1], m) end \
    return out";

/// The members and scores of a `ZUNION 1 key WITHSCORES` reply: RESP2's
/// flat member/score list or RESP3's pairs. `None`: not that shape.
pub fn members(reply: &[u8]) -> Option<Members<'_>> {
    let elems = children(reply)?;
    let mut out = Vec::with_capacity(elems.len() / 2 + 1);
    let mut pending: Option<&[u8]> = None;
    for &(s, e) in &elems {
        let elem = &reply[s..e];
        if elem.first() == Some(&b'*') {
            let pair = children(elem)?;
            let [(ms, me), (ss, se)] = pair.as_slice() else {
                return None;
            };
            out.push((bulk_body(&elem[*ms..*me])?, score(&elem[*ss..*se])?));
            continue;
        }
        match pending.take() {
            None => pending = Some(bulk_body(elem)?),
            Some(member) => out.push((member, score(elem)?)),
        }
    }
    pending.is_none().then_some(out)
}

/// A score element: a bulk string (RESP2) or a double (RESP3), in any of
/// the forms a node writes (`1.5`, `1e+300`, `inf`, `-inf`).
fn score(elem: &[u8]) -> Option<f64> {
    let text = match elem.first()? {
        b',' => elem.get(1..elem.len().checked_sub(2)?)?,
        _ => bulk_body(elem)?,
    };
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// One source: its members and scores, and its weight.
struct Source<'a> {
    members: &'a [(&'a [u8], f64)],
    weight: f64,
}

/// `zunionInterAggregate`.
fn aggregate(target: &mut f64, value: f64, how: Aggregate) {
    match how {
        Aggregate::Sum => {
            *target += value;
            if target.is_nan() {
                *target = 0.0;
            }
        }
        Aggregate::Min => {
            if value < *target {
                *target = value;
            }
        }
        Aggregate::Max => {
            if value > *target {
                *target = value;
            }
        }
    }
}

/// The result of `op` over `sources` (in key order), in no particular
/// order: members with their scores.
pub fn compute<'a>(
    op: ZOp,
    sources: &'a [Members<'a>],
    options: &ZOptions,
) -> Vec<(&'a [u8], f64)> {
    let mut src: Vec<Source<'a>> = sources
        .iter()
        .zip(options.weights.iter().chain(std::iter::repeat(&1.0)))
        .map(|(members, &weight)| Source { members, weight })
        .collect();
    let Some(first) = src.first() else {
        return Vec::new();
    };
    if op == ZOp::Diff {
        let others: Vec<HashMap<&[u8], f64>> = src[1..]
            .iter()
            .map(|s| s.members.iter().copied().collect())
            .collect();
        return first
            .members
            .iter()
            .copied()
            .filter(|(m, _)| !others.iter().any(|o| o.contains_key(m)))
            .collect();
    }
    // Smallest first, ties in key order (a stable sort, as glibc's qsort).
    src.sort_by_key(|s| s.members.len());
    let how = options.aggregate;
    let weighted = |s: &Source<'_>, score: f64| {
        let v = s.weight * score;
        if v.is_nan() {
            0.0
        } else {
            v
        }
    };
    match op {
        ZOp::Inter => {
            let maps: Vec<HashMap<&[u8], f64>> = src[1..]
                .iter()
                .map(|s| s.members.iter().copied().collect())
                .collect();
            let mut out = Vec::new();
            'members: for &(m, score) in src[0].members {
                let mut total = weighted(&src[0], score);
                for (s, map) in src[1..].iter().zip(&maps) {
                    let Some(&other) = map.get(m) else {
                        continue 'members;
                    };
                    aggregate(&mut total, other * s.weight, how);
                }
                out.push((m, total));
            }
            out
        }
        _ => {
            let mut at: HashMap<&[u8], usize> = HashMap::new();
            let mut out: Vec<(&[u8], f64)> = Vec::new();
            for s in &src {
                for &(m, score) in s.members {
                    let v = weighted(s, score);
                    match at.get(m) {
                        Some(&i) => aggregate(&mut out[i].1, v, how),
                        None => {
                            at.insert(m, out.len());
                            out.push((m, v));
                        }
                    }
                }
            }
            out
        }
    }
}

/// `ZINTERCARD`: the size of the intersection, stopping at `limit` (0:
/// none).
pub fn intercard(sources: &[Members<'_>], limit: u64) -> u64 {
    let options = ZOptions {
        weights: Vec::new(),
        aggregate: Aggregate::Sum,
        withscores: false,
    };
    let n = compute(ZOp::Inter, sources, &options).len() as u64;
    if limit == 0 {
        n
    } else {
        n.min(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(op: ZOp, tail: &[&str], n: usize) -> Result<ZOptions, &'static str> {
        let tail: Vec<&[u8]> = tail.iter().map(|s| s.as_bytes()).collect();
        parse_options(op, &tail, n, false)
    }

    #[test]
    fn options_as_redis_parses_them() {
        let o = opts(ZOp::Union, &["WEIGHTS", "2", "0.5", "aggregate", "MAX"], 2).unwrap();
        assert_eq!(o.weights, vec![2.0, 0.5]);
        assert_eq!(o.aggregate, Aggregate::Max);
        assert_eq!(opts(ZOp::Union, &[], 2).unwrap().weights, vec![1.0, 1.0]);
        assert_eq!(opts(ZOp::Union, &["WEIGHTS", "1"], 2), Err(SYNTAX));
        assert_eq!(
            opts(ZOp::Inter, &["WEIGHTS", "1", "x"], 2),
            Err("ERR weight value is not a float")
        );
        for bad in ["nan", "1e400", "1e-400", " 1", ""] {
            assert_eq!(parse_weight(bad.as_bytes()), None, "{bad}");
        }
        for (good, v) in [
            ("inf", f64::INFINITY),
            ("-inf", f64::NEG_INFINITY),
            ("0", 0.0),
        ] {
            assert_eq!(parse_weight(good.as_bytes()), Some(v));
        }
        assert_eq!(opts(ZOp::Union, &["AGGREGATE", "AVG"], 2), Err(SYNTAX));
        assert_eq!(opts(ZOp::Diff, &["WEIGHTS", "1", "1"], 2), Err(SYNTAX));
        assert_eq!(
            opts(ZOp::Union, &["WITHSCORES"], 2),
            Err(SYNTAX),
            "not in a store"
        );
        let read = parse_options(ZOp::Diff, &[b"withscores"], 2, true).unwrap();
        assert!(read.withscores);
        let mut r: Vec<(&[u8], f64)> = vec![(b"b", 1.0), (b"a", 1.0), (b"ab", -0.0), (b"c", 0.5)];
        sort(&mut r);
        let want: Vec<(&[u8], f64)> = vec![(b"ab", -0.0), (b"c", 0.5), (b"a", 1.0), (b"b", 1.0)];
        assert_eq!(r, want);
        let limit =
            |t: &[&str]| intercard_limit(&t.iter().map(|s| s.as_bytes()).collect::<Vec<_>>());
        assert_eq!(limit(&["LIMIT", "3"]), Ok(3));
        let negative = Err("ERR LIMIT can't be negative");
        for bad in [
            "-1",
            "x",
            "007",
            "-0",
            "+1",
            "99999999999999999999",
            "9223372036854775808",
        ] {
            assert_eq!(limit(&["LIMIT", bad]), negative, "{bad}");
        }
        assert_eq!(limit(&["LIMIT", "0"]), Ok(0));
        assert_eq!(limit(&["LIMIT", "1", "limit", "2"]), Ok(2));
        assert_eq!(limit(&["LIMIT", "-1", "foo"]), negative);
        assert_eq!(limit(&["LIMIT"]), Err(SYNTAX));
        assert_eq!(limit(&["LIMOT", "1"]), Err(SYNTAX));
    }

    #[test]
    fn members_of_both_protocols() {
        let resp2 = b"*4\r\n$1\r\na\r\n$3\r\n1.5\r\n$1\r\nb\r\n$3\r\ninf\r\n";
        let resp3 = b"*2\r\n*2\r\n$1\r\na\r\n,1.5\r\n*2\r\n$1\r\nb\r\n,inf\r\n";
        let want: Vec<(&[u8], f64)> = vec![(b"a", 1.5), (b"b", f64::INFINITY)];
        assert_eq!(members(resp2), Some(want.clone()));
        assert_eq!(members(resp3), Some(want));
        assert_eq!(members(b"*1\r\n$1\r\na\r\n"), None);
        assert_eq!(members(b":1\r\n"), None);
    }

    #[test]
    fn union_inter_diff() {
        let a: Vec<(&[u8], f64)> = vec![(b"x", 1.0), (b"y", 2.0), (b"z", 3.0)];
        let b: Vec<(&[u8], f64)> = vec![(b"y", 10.0), (b"w", 0.5)];
        let sources = vec![a, b];
        let sum = ZOptions {
            weights: vec![1.0, 2.0],
            aggregate: Aggregate::Sum,
            withscores: false,
        };
        let mut u = compute(ZOp::Union, &sources, &sum);
        u.sort_by(|p, q| p.0.cmp(q.0));
        let want: Vec<(&[u8], f64)> = vec![(b"w", 1.0), (b"x", 1.0), (b"y", 22.0), (b"z", 3.0)];
        assert_eq!(u, want);
        let max = ZOptions {
            aggregate: Aggregate::Max,
            ..sum.clone()
        };
        assert_eq!(compute(ZOp::Inter, &sources, &max), vec![(&b"y"[..], 20.0)]);
        let d = compute(ZOp::Diff, &sources, &sum);
        assert_eq!(d, vec![(&b"x"[..], 1.0), (&b"z"[..], 3.0)]);
        assert_eq!(intercard(&sources, 0), 1);
        // inf - inf is NaN, which a sum turns into 0.
        let inf: Vec<Vec<(&[u8], f64)>> =
            vec![vec![(b"m", f64::INFINITY)], vec![(b"m", f64::NEG_INFINITY)]];
        let plain = ZOptions {
            weights: vec![1.0, 1.0],
            aggregate: Aggregate::Sum,
            withscores: false,
        };
        assert_eq!(compute(ZOp::Union, &inf, &plain), vec![(&b"m"[..], 0.0)]);
    }
}
