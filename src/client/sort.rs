//! `SORT` and `SORT_RO` with `BY` patterns or `GET`, which a cluster node
//! refuses ("BY option of SORT denied in Cluster mode"), and `SORT ...
//! STORE` into another slot: computed by the proxy as Redis 7.0's
//! `sortCommandGeneric` computes them.
//!
//! The options are parsed with Redis's loop and errors. The source's
//! master gives its type and elements in the order Redis loads them
//! (`TYPE` and `SORT key BY nosort` in one `MULTI`). The keys the `BY`
//! and `GET` patterns name are read with `GET` or `HGET` (a missing key
//! or one of another type counts as missing, as in Redis), batched per
//! node. The weights are parsed as `strtod` reads them, the vector sorted
//! with Redis's comparison (numeric with ties broken by the elements,
//! `ALPHA` by the elements or the `BY` values, `DESC`), `LIMIT` applied,
//! and the reply built (`GET` of a missing key: nil) or the result stored
//! as a list (one script: `DEL`, then `RPUSH` in chunks; `DEL` alone when
//! empty).
//!
//! Not one atomic step: the keys are read a moment apart. Where Redis's
//! order depends on its sort algorithm (elements whose `ALPHA` weights
//! are equal, a sorted set's elements sorted by weight, which Redis loads
//! in hash-table order), the proxy keeps the elements' load order
//! (score order for a sorted set).

use std::cmp::Ordering as CmpOrdering;
use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::nodecall::{batch, call_master};
use crate::backend::{ReplyStatus, ReplyTo};
use crate::cluster::slot::slot;
use crate::protocol::reply::{self, Proto};
use crate::protocol::scan::{bulk_body, children};
use crate::server::Context;

/// A parsed `SORT` the proxy computes.
#[derive(Debug, Clone)]
pub struct Sort {
    key: Bytes,
    desc: bool,
    alpha: bool,
    limit: (i64, i64),
    store: Option<Bytes>,
    by: Option<Bytes>,
    dontsort: bool,
    gets: Vec<Bytes>,
}

/// Whether a `SORT`/`SORT_RO` needs the proxy: a `BY` pattern with `*` or
/// a `GET` (refused by cluster nodes), or a `STORE` destination in
/// another slot than the key. Scans the options as Redis does, without
/// checking them.
pub fn needs_proxy<A: crate::command::keys::Args + ?Sized>(readonly: bool, args: &A) -> bool {
    let mut j = 2;
    while j < args.len() {
        let left = args.len() - j - 1;
        let arg = args.get(j);
        if arg.eq_ignore_ascii_case(b"limit") && left >= 2 {
            j += 2;
        } else if arg.eq_ignore_ascii_case(b"by") && left >= 1 {
            if args.get(j + 1).contains(&b'*') {
                return true;
            }
            j += 1;
        } else if arg.eq_ignore_ascii_case(b"get") && left >= 1 {
            return true;
        } else if !readonly && arg.eq_ignore_ascii_case(b"store") && left >= 1 {
            if slot(args.get(j + 1)) != slot(args.get(1)) {
                return true;
            }
            j += 1;
        }
        j += 1;
    }
    false
}

impl Sort {
    /// Parses the options as Redis's loop does, with its errors.
    pub fn parse(readonly: bool, args: &[Bytes]) -> Result<Sort, Bytes> {
        let mut sort = Sort {
            key: args.get(1).cloned().unwrap_or_default(),
            desc: false,
            alpha: false,
            limit: (0, -1),
            store: None,
            by: None,
            dontsort: false,
            gets: Vec::new(),
        };
        let long = |b: &[u8]| {
            crate::command::keys::parse_i64(b)
                .ok_or_else(|| reply::error("ERR value is not an integer or out of range"))
        };
        let mut j = 2;
        while j < args.len() {
            let left = args.len() - j - 1;
            let arg = &args[j][..];
            if arg.eq_ignore_ascii_case(b"asc") {
                sort.desc = false;
            } else if arg.eq_ignore_ascii_case(b"desc") {
                sort.desc = true;
            } else if arg.eq_ignore_ascii_case(b"alpha") {
                sort.alpha = true;
            } else if arg.eq_ignore_ascii_case(b"limit") && left >= 2 {
                sort.limit = (long(&args[j + 1])?, long(&args[j + 2])?);
                j += 2;
            } else if !readonly && arg.eq_ignore_ascii_case(b"store") && left >= 1 {
                sort.store = Some(args[j + 1].clone());
                j += 1;
            } else if arg.eq_ignore_ascii_case(b"by") && left >= 1 {
                let by = args[j + 1].clone();
                if !by.contains(&b'*') {
                    sort.dontsort = true;
                }
                sort.by = Some(by);
                j += 1;
            } else if arg.eq_ignore_ascii_case(b"get") && left >= 1 {
                sort.gets.push(args[j + 1].clone());
                j += 1;
            } else {
                return Err(reply::error("ERR syntax error"));
            }
            j += 1;
        }
        Ok(sort)
    }
}

/// Where a pattern points for an element: a key, and a hash field.
type Lookup = (Vec<u8>, Option<Vec<u8>>);

/// What `lookupKeyByPattern` reads for `elem`: `None` for `#` (the element
/// itself) or a pattern without `*` (nothing), else the key and field.
fn lookup_of(pattern: &[u8], elem: &[u8]) -> Option<Option<Lookup>> {
    if pattern == b"#" {
        return None;
    }
    let Some(star) = pattern.iter().position(|&b| b == b'*') else {
        return Some(None);
    };
    let after = &pattern[star + 1..];
    let arrow = after
        .windows(2)
        .position(|w| w == b"->")
        .filter(|&a| a + 2 < after.len());
    let (postfix, field) = match arrow {
        Some(a) => (&after[..a], Some(after[a + 2..].to_vec())),
        None => (after, None),
    };
    let mut key = pattern[..star].to_vec();
    key.extend_from_slice(elem);
    key.extend_from_slice(postfix);
    Some(Some((key, field)))
}

/// A number as C's `strtod` reads a whole string, or `None` where Redis's
/// check fails (not all consumed, out of range, NaN). An empty string is
/// 0, as `strtod` consumes nothing and stops at its end.
fn strtod(s: &[u8]) -> Option<f64> {
    if s.is_empty() {
        return Some(0.0);
    }
    let start = s
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))?;
    let text = std::str::from_utf8(&s[start..]).ok()?;
    let v: f64 = text.parse().ok()?;
    let explicit_inf = text
        .trim_start_matches(['+', '-'])
        .to_ascii_lowercase()
        .starts_with("inf");
    let nonzero_digits = text
        .split(['e', 'E'])
        .next()
        .is_some_and(|m| m.bytes().any(|b| (b'1'..=b'9').contains(&b)));
    let out_of_range = (v.is_infinite() && !explicit_inf)
        || (v == 0.0 && nonzero_digits)
        || (v != 0.0 && v.abs() < f64::MIN_POSITIVE);
    (!v.is_nan() && !out_of_range).then_some(v)
}

/// Redis's `compareStringObjects`: bytes, then length.
fn binary_cmp(a: &[u8], b: &[u8]) -> CmpOrdering {
    a.cmp(b)
}

/// `strcoll` in the C locale: as C strings, up to the first NUL.
fn c_string_cmp(a: &[u8], b: &[u8]) -> CmpOrdering {
    let cut = |s: &[u8]| s.iter().position(|&b| b == 0).map_or(s.len(), |n| n);
    a[..cut(a)].cmp(&b[..cut(b)])
}

/// Runs `sort` for a client and delivers its one reply to `to`.
pub fn spawn(ctx: Arc<Context>, proto: Proto, sort: Sort, to: ReplyTo) {
    tokio::spawn(async move {
        let reply = run(&ctx, proto, sort).await.unwrap_or_else(|e| e);
        to.send(reply, ReplyStatus::Final);
    });
}

async fn run(ctx: &Context, proto: Proto, mut sort: Sort) -> Result<Bytes, Bytes> {
    let unexpected =
        || reply::error("ERR slotbridge: unexpected reply shape from a server while sorting");
    // The source: its type and elements in Redis's load order.
    let mut payload = reply::command([&b"MULTI"[..]]).to_vec();
    payload.extend_from_slice(&reply::command([&b"TYPE"[..], &sort.key]));
    payload.extend_from_slice(&reply::command([&b"SORT"[..], &sort.key, b"BY", b"nosort"]));
    payload.extend_from_slice(&reply::command([&b"EXEC"[..]]));
    let frame = call_master(ctx, proto, slot(&sort.key), Bytes::from(payload), 3).await?;
    let parts = children(&frame).ok_or_else(|| frame.clone())?;
    let [(ts, te), (es, ee)] = parts.as_slice() else {
        return Err(unexpected());
    };
    let kind = frame[*ts..*te].to_vec();
    let elems_frame = &frame[*es..*ee];
    if elems_frame.starts_with(b"-") {
        return Err(Bytes::copy_from_slice(elems_frame));
    }
    let elems: Vec<&[u8]> = children(elems_frame)
        .ok_or_else(unexpected)?
        .into_iter()
        .map(|(s, e)| bulk_body(&elems_frame[s..e]).ok_or_else(unexpected))
        .collect::<Result<_, _>>()?;
    let is = |t: &[u8]| kind.as_slice() == [&b"+"[..], t, b"\r\n"].concat();
    let (is_set, ordered) = (is(b"set"), is(b"list") || is(b"zset") || is(b"none"));
    if sort.dontsort && is_set && sort.store.is_some() {
        // Redis sorts a set it stores, so the result is deterministic.
        sort.dontsort = false;
        sort.alpha = true;
        sort.by = None;
    }
    // LIMIT, as Redis bounds it.
    let n = elems.len() as i64;
    let mut start = sort.limit.0.max(0);
    let mut end = if sort.limit.1 < 0 {
        n - 1
    } else {
        start.saturating_add(sort.limit.1) - 1
    };
    if start >= n {
        start = n - 1;
        end = n - 2;
    }
    end = end.min(n - 1);
    let mut vector: Vec<&[u8]> = if ordered && sort.dontsort {
        let picked: Vec<&[u8]> = if end >= start {
            let count = (end - start + 1) as usize;
            if sort.desc {
                elems
                    .iter()
                    .rev()
                    .skip(start as usize)
                    .take(count)
                    .copied()
                    .collect()
            } else {
                elems
                    .iter()
                    .skip(start as usize)
                    .take(count)
                    .copied()
                    .collect()
            }
        } else {
            Vec::new()
        };
        if end >= start {
            end -= start;
            start = 0;
        }
        picked
    } else {
        elems
    };
    // Every key the patterns name, read at once.
    let mut wanted: Vec<Lookup> = Vec::new();
    let by = sort.by.clone().filter(|_| !sort.dontsort);
    for &elem in &vector {
        for pattern in by.iter().chain(&sort.gets) {
            if let Some(Some(l)) = lookup_of(pattern, elem) {
                wanted.push(l);
            }
        }
    }
    let values = read_all(ctx, proto, wanted).await?;
    let value_of = |pattern: &[u8], elem: &[u8]| -> Option<Vec<u8>> {
        match lookup_of(pattern, elem) {
            None => Some(elem.to_vec()),
            Some(None) => None,
            Some(Some(l)) => values.get(&l).cloned().flatten(),
        }
    };
    if !sort.dontsort {
        vector = sorted(&sort, by.as_deref(), vector, value_of)?;
    }
    // The output: elements, or what the GET patterns name.
    let range: &[&[u8]] = if end >= start && start >= 0 {
        &vector[start as usize..=(end as usize).min(vector.len().saturating_sub(1))]
    } else {
        &[]
    };
    let mut out: Vec<Option<Vec<u8>>> = Vec::new();
    for &elem in range {
        if sort.gets.is_empty() {
            out.push(Some(elem.to_vec()));
        }
        for pattern in &sort.gets {
            out.push(value_of(pattern, elem));
        }
    }
    match &sort.store {
        None => {
            let mut frame = bytes::BytesMut::new();
            reply::put_array(&mut frame, out.len());
            for v in &out {
                match v {
                    Some(v) => reply::put_bulk(&mut frame, v),
                    None => reply::put_null(&mut frame, proto),
                }
            }
            Ok(frame.freeze())
        }
        Some(dest) => {
            let values: Vec<&[u8]> = out
                .iter()
                .map(|v| v.as_deref().unwrap_or_default())
                .collect();
            let write = crate::merge::replace_with(b"RPUSH", dest, values);
            let r = call_master(ctx, proto, slot(dest), write, 0).await?;
            if r.starts_with(b"-") {
                return Err(r);
            }
            Ok(reply::int(out.len() as i64))
        }
    }
}

/// An element with what it is sorted by.
struct Weighted<'a> {
    elem: &'a [u8],
    score: f64,
    /// The `BY` value of an `ALPHA` sort (`None`: its key is missing).
    text: Option<Vec<u8>>,
}

/// The elements sorted as Redis's `sortCompare` orders them (a stable
/// sort: Redis's ties left to its `qsort` keep the load order), weighed
/// by the `by` pattern (`value_of` reads it) or by themselves.
fn sorted<'a>(
    sort: &Sort,
    by: Option<&[u8]>,
    vector: Vec<&'a [u8]>,
    value_of: impl Fn(&[u8], &[u8]) -> Option<Vec<u8>>,
) -> Result<Vec<&'a [u8]>, Bytes> {
    let mut weighted: Vec<Weighted<'a>> = Vec::with_capacity(vector.len());
    let mut conversion_error = false;
    for elem in vector {
        let byval = match by {
            Some(p) => value_of(p, elem),
            None => Some(elem.to_vec()),
        };
        let mut w = Weighted {
            elem,
            score: 0.0,
            text: None,
        };
        if let Some(v) = byval {
            if !sort.alpha {
                match strtod(&v) {
                    Some(s) => w.score = s,
                    None => conversion_error = true,
                }
            } else if by.is_some() {
                w.text = Some(v);
            }
        }
        weighted.push(w);
    }
    if conversion_error {
        return Err(reply::error(
            "ERR One or more scores can't be converted into double",
        ));
    }
    // STORE compares bytes; a reply compares as strcoll does.
    let text_cmp = if sort.store.is_some() {
        binary_cmp
    } else {
        c_string_cmp
    };
    weighted.sort_by(|a, b| {
        let cmp = if !sort.alpha {
            a.score
                .partial_cmp(&b.score)
                .unwrap_or(CmpOrdering::Equal)
                .then_with(|| binary_cmp(a.elem, b.elem))
        } else if by.is_some() {
            match (&a.text, &b.text) {
                (None, None) => CmpOrdering::Equal,
                (None, Some(_)) => CmpOrdering::Less,
                (Some(_), None) => CmpOrdering::Greater,
                (Some(x), Some(y)) => text_cmp(x, y),
            }
        } else {
            text_cmp(a.elem, b.elem)
        };
        if sort.desc {
            cmp.reverse()
        } else {
            cmp
        }
    });
    Ok(weighted.into_iter().map(|w| w.elem).collect())
}

/// Reads every key (and hash field) in `wanted`, batched per node: the
/// value of a string key, or of a hash's field; `None` when missing or of
/// another type. The keys are client names (the patterns are filled with
/// the elements): read under their stored names when co-location rules
/// rename them.
async fn read_all(
    ctx: &Context,
    proto: Proto,
    wanted: Vec<Lookup>,
) -> Result<HashMap<Lookup, Option<Vec<u8>>>, Bytes> {
    let mut values: HashMap<Lookup, Option<Vec<u8>>> = HashMap::new();
    // Each lookup with its key's stored name.
    let mut by_node: HashMap<Arc<str>, Vec<(Lookup, Vec<u8>)>> = HashMap::new();
    for l in wanted {
        if values.contains_key(&l) {
            continue;
        }
        values.insert(l.clone(), None);
        let stored = ctx.rules.encode(&l.0).into_owned();
        let node = ctx
            .topology
            .load()
            .master(slot(&stored))
            .map(|p| p.addr().clone());
        by_node
            .entry(node.unwrap_or_else(|| Arc::from("")))
            .or_default()
            .push((l, stored));
    }
    for (node, lookups) in by_node {
        let command = |(l, key): &(Lookup, Vec<u8>)| match &l.1 {
            None => reply::command([&b"GET"[..], key]),
            Some(f) => reply::command([&b"HGET"[..], key, f]),
        };
        let frames = if node.is_empty() {
            Vec::new()
        } else {
            let pool = ctx.topology.pool(&node);
            let payload: Vec<u8> = lookups.iter().flat_map(|l| command(l).to_vec()).collect();
            batch(pool.conn(proto), Bytes::from(payload), lookups.len()).await
        };
        for (i, lookup) in lookups.iter().enumerate() {
            let mut frame = frames.get(i).cloned().unwrap_or_default();
            if frame.is_empty() || frame.starts_with(b"-MOVED") || frame.starts_with(b"-ASK") {
                // Its slot moved (or no node was known): on its own,
                // following the move.
                frame = call_master(ctx, proto, slot(&lookup.1), command(lookup), 0).await?;
            }
            let value = bulk_body(&frame).map(<[u8]>::to_vec);
            values.insert(lookup.0.clone(), value);
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<Bytes> {
        line.split(' ')
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    #[test]
    fn options_and_errors_as_redis_reads_them() {
        let s = Sort::parse(
            false,
            &args("SORT k BY w_* GET # GET o_*->n LIMIT 1 2 DESC ALPHA STORE d"),
        )
        .unwrap();
        assert!(s.desc && s.alpha && !s.dontsort);
        assert_eq!(s.limit, (1, 2));
        assert_eq!(s.gets.len(), 2);
        assert_eq!(s.store.as_deref(), Some(&b"d"[..]));
        assert!(
            Sort::parse(false, &args("SORT k BY nosort"))
                .unwrap()
                .dontsort
        );
        let err = |line: &str, ro: bool| Sort::parse(ro, &args(line)).unwrap_err();
        assert_eq!(
            err("SORT k STORE d", true),
            reply::error("ERR syntax error")
        );
        assert_eq!(
            err("SORT k LIMIT 0", false),
            reply::error("ERR syntax error")
        );
        assert_eq!(
            err("SORT k LIMIT x 1", false),
            reply::error("ERR value is not an integer or out of range")
        );
        assert!(needs_proxy(false, &args("SORT k BY w_*")[..]));
        assert!(needs_proxy(true, &args("SORT_RO k GET #")[..]));
        assert!(!needs_proxy(
            false,
            &args("SORT k BY nosort LIMIT 0 1 ALPHA")[..]
        ));
        assert!(!needs_proxy(false, &args("SORT {a}k STORE {a}d")[..]));
        assert!(needs_proxy(false, &args("SORT k STORE d")[..]));
    }

    #[test]
    fn patterns_name_keys_and_fields() {
        assert_eq!(lookup_of(b"#", b"e"), None);
        assert_eq!(lookup_of(b"const", b"e"), Some(None));
        assert_eq!(lookup_of(b"w_*", b"e"), Some(Some((b"w_e".to_vec(), None))));
        assert_eq!(
            lookup_of(b"o_*_x->name", b"e"),
            Some(Some((b"o_e_x".to_vec(), Some(b"name".to_vec()))))
        );
        // An arrow with nothing after it, or before the star, is no field.
        assert_eq!(
            lookup_of(b"o_*->", b"e"),
            Some(Some((b"o_e->".to_vec(), None)))
        );
        assert_eq!(
            lookup_of(b"a->b*", b"e"),
            Some(Some((b"a->be".to_vec(), None)))
        );
    }

    #[test]
    fn weights_as_strtod_reads_them() {
        assert_eq!(strtod(b"1.5"), Some(1.5));
        assert_eq!(strtod(b"  -2"), Some(-2.0));
        assert_eq!(strtod(b""), Some(0.0));
        assert_eq!(strtod(b"inf"), Some(f64::INFINITY));
        assert_eq!(strtod(b"1e400"), None);
        assert_eq!(strtod(b"1e-400"), None);
        assert_eq!(strtod(b"nan"), None);
        assert_eq!(strtod(b"12abc"), None);
        assert_eq!(strtod(b"3 "), None);
        assert_eq!(strtod(b"  "), None);
        assert_eq!(c_string_cmp(b"a\0z", b"a\0b"), CmpOrdering::Equal);
        assert_eq!(binary_cmp(b"a\0z", b"a\0b"), CmpOrdering::Greater);
    }
}
