//! Property checks shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*`)
//! and by `tests/fuzz_smoke.rs`, which both include this file with `#[path]`.
//!
//! Every check takes arbitrary bytes, drives one public API with them and
//! panics when an invariant breaks. None of them may panic inside slotbridge
//! itself: any panic is a bug, whichever side it comes from.
#![allow(dead_code)]

use bytes::Bytes;
use slotbridge::backend::{Reply, ReplyStatus};
use slotbridge::client::keyspace::{decode_cursor, encode_cursor, rewrite_scan_reply};
use slotbridge::client::retry::{classify, parse_redirect, redirect_addr, Outcome};
use slotbridge::cluster::slot::slot;
use slotbridge::command::keys::Args;
use slotbridge::command::route::{route, BitOp, CommandView, Route, Scratch, SetOp, SplitKind};
use slotbridge::config::Config;
use slotbridge::info::{self, ProxyFacts};
use slotbridge::merge;
use slotbridge::protocol::request::{Parsed, ProtocolError, RequestLimits, RequestParser};
use slotbridge::protocol::scan::{children, FrameScanner, ScanError};
use slotbridge::protocol::Proto;
use slotbridge::split::split;
use slotbridge::zset::{self, Aggregate, ZOp, ZOptions};

/// One check: arbitrary bytes in, a panic on a broken invariant.
pub type Check = fn(&[u8]);

/// The fuzz targets, by name (also the seed corpus folder names).
pub const TARGETS: &[(&str, Check)] = &[
    ("request_parser", request_parser),
    ("frame_scanner", frame_scanner),
    ("route_split", route_split),
    ("merge_replies", merge_replies),
    ("config_parse", config_parse),
    ("reply_handling", reply_handling),
    ("acl_rules", acl_rules),
];

/// Inputs longer than this are cut: the parsers treat lines over 64 KiB
/// specially (an error when seen in pieces), which would make "whole" and
/// "chunked" legitimately differ.
const MAX_INPUT: usize = 60 * 1024;

/// Command names `route_split` picks from when the first byte is below 0x20.
pub const COMMAND_NAMES: &[&str] = &[
    "MGET",
    "MSET",
    "DEL",
    "UNLINK",
    "EXISTS",
    "TOUCH",
    "SINTER",
    "SUNION",
    "SDIFF",
    "SINTERCARD",
    "SINTERSTORE",
    "SUNIONSTORE",
    "SDIFFSTORE",
    "ZRANGESTORE",
    "GEORADIUS",
    "GEOSEARCHSTORE",
    "LCS",
    "EVAL",
    "EVALSHA",
    "FCALL",
    "XREAD",
    "XREADGROUP",
    "ZUNIONSTORE",
    "ZINTERSTORE",
    "ZDIFF",
    "SORT",
    "SORT_RO",
    "MIGRATE",
    "OBJECT",
    "GET",
    "SET",
    "RENAME",
    "BLPOP",
    "BLMPOP",
    "LMPOP",
    "ZMPOP",
    "GEORADIUS",
    "MEMORY",
    "WATCH",
    "SSUBSCRIBE",
    "SUNSUBSCRIBE",
    "SPUBLISH",
    "MSETNX",
    "BITOP",
    "PFCOUNT",
    "XINFO",
    "CLIENT",
];

/// A tiny deterministic generator (xorshift64).
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from any seed (0 included).
    pub fn new(seed: u64) -> Self {
        XorShift((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// FNV-1a of `data`: seeds the chunk sizes so that a given input always
/// splits the same way (reproducible crashes).
pub fn hash(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Asserts that `out` is exactly one complete RESP frame.
fn assert_one_frame(out: &[u8], what: &str) {
    let got = FrameScanner::new().scan(out);
    assert_eq!(
        got,
        Ok(Some(out.len())),
        "{what}: output is not one RESP frame: {:?}",
        String::from_utf8_lossy(out)
    );
}

// ---------------------------------------------------------------------------
// request_parser

#[derive(Debug, PartialEq, Eq)]
enum ReqEvent {
    Command(usize, Vec<Vec<u8>>),
    Inline(usize, Vec<Vec<u8>>),
    Skip(usize),
    Error(ProtocolError),
    /// Input exhausted with this many bytes of an incomplete command left.
    End(usize),
}

/// Parses `data` as a client would send it, `next_chunk` bytes becoming
/// visible at a time, checking the per-command invariants.
fn parse_requests(
    data: &[u8],
    limits: RequestLimits,
    mut next_chunk: impl FnMut() -> usize,
) -> Vec<ReqEvent> {
    let mut p = RequestParser::new(limits);
    let mut events = Vec::new();
    let mut off = 0;
    let mut end = next_chunk().min(data.len());
    loop {
        let buf = &data[off..end];
        let parsed = p.parse(buf);
        match parsed {
            Ok(Parsed::Incomplete) => {
                if end == data.len() {
                    events.push(ReqEvent::End(data.len() - off));
                    return events;
                }
                end = (end + next_chunk().max(1)).min(data.len());
            }
            Ok(Parsed::Command(n)) => {
                assert!(n > 0 && n <= buf.len(), "Command({n}) of {}", buf.len());
                let args = p.args();
                assert!(!args.is_empty(), "Command without arguments");
                assert!(args.len() <= limits.max_args, "more args than max_args");
                let mut prev_end = 0;
                for &(s, e) in args {
                    assert!(
                        prev_end <= s && s <= e && e + 2 <= n,
                        "arg range {s}..{e} outside command of {n} bytes (prev end {prev_end})"
                    );
                    assert!(e - s <= limits.max_bulk_len, "bulk over max_bulk_len");
                    assert_eq!(&buf[e..e + 2], b"\r\n", "argument not CRLF-terminated");
                    prev_end = e + 2;
                }
                let words = args.iter().map(|&(s, e)| buf[s..e].to_vec()).collect();
                events.push(ReqEvent::Command(n, words));
                off += n;
            }
            Ok(Parsed::Inline(n)) => {
                assert!(n > 0 && n <= buf.len(), "Inline({n}) of {}", buf.len());
                assert_eq!(buf[n - 1], b'\n', "inline command not ending at a newline");
                let args = p.args().to_vec();
                let encoded = p.take_inline();
                assert!(!args.is_empty(), "Inline without arguments");
                let words: Vec<Vec<u8>> = args
                    .iter()
                    .map(|&(s, e)| {
                        assert!(s <= e && e <= encoded.len(), "inline arg out of range");
                        encoded[s..e].to_vec()
                    })
                    .collect();
                // The re-encoding must itself be exactly one valid command
                // with the same arguments.
                let mut again = RequestParser::new(RequestLimits::default());
                assert_eq!(
                    again.parse(&encoded),
                    Ok(Parsed::Command(encoded.len())),
                    "inline re-encoding does not parse back: {:?}",
                    String::from_utf8_lossy(&encoded)
                );
                let back: Vec<Vec<u8>> = again
                    .args()
                    .iter()
                    .map(|&(s, e)| encoded[s..e].to_vec())
                    .collect();
                assert_eq!(back, words, "inline re-encoding changed the arguments");
                events.push(ReqEvent::Inline(n, words));
                off += n;
            }
            Ok(Parsed::Skip(n)) => {
                assert!(n > 0 && n <= buf.len(), "Skip({n}) of {}", buf.len());
                events.push(ReqEvent::Skip(n));
                off += n;
            }
            Err(e) => {
                events.push(ReqEvent::Error(e));
                return events;
            }
        }
        end = end.max(off);
    }
}

/// `RequestParser`: never panics, argument ranges lie inside the command,
/// and parsing in one go, byte by byte and in random chunks agree.
pub fn request_parser(data: &[u8]) {
    let data = &data[..data.len().min(MAX_INPUT)];
    let small = RequestLimits {
        max_bulk_len: 8,
        max_args: 3,
    };
    for limits in [RequestLimits::default(), small] {
        let whole = parse_requests(data, limits, || usize::MAX);
        let mut rng = XorShift::new(hash(data));
        let chunked = parse_requests(data, limits, || 1 + rng.below(17));
        assert_eq!(whole, chunked, "whole vs random chunks differ");
        if data.len() <= 512 {
            let bytewise = parse_requests(data, limits, || 1);
            assert_eq!(whole, bytewise, "whole vs byte by byte differ");
        }
    }
}

// ---------------------------------------------------------------------------
// frame_scanner

#[derive(Debug, PartialEq, Eq)]
enum FrameEvent {
    Frame(usize),
    Error(ScanError),
    End(usize),
}

fn scan_frames(data: &[u8], mut next_chunk: impl FnMut() -> usize) -> Vec<FrameEvent> {
    let mut s = FrameScanner::new();
    let mut events = Vec::new();
    let mut off = 0;
    let mut end = next_chunk().min(data.len());
    loop {
        let buf = &data[off..end];
        match s.scan(buf) {
            Ok(None) => {
                if end == data.len() {
                    events.push(FrameEvent::End(data.len() - off));
                    return events;
                }
                end = (end + next_chunk().max(1)).min(data.len());
            }
            Ok(Some(n)) => {
                assert!(n > 0 && n <= buf.len(), "frame of {n} in {}", buf.len());
                check_children(&buf[..n]);
                events.push(FrameEvent::Frame(n));
                off += n;
                end = end.max(off);
            }
            Err(e) => {
                events.push(FrameEvent::Error(e));
                return events;
            }
        }
    }
}

/// `children` of a complete frame: contiguous, inside, covering the frame.
fn check_children(frame: &[u8]) {
    let Some(kids) = children(frame) else {
        return;
    };
    // The scanner ends a header line at the first CR (and the byte after).
    let header_end = frame
        .iter()
        .skip(1)
        .position(|&b| b == b'\r')
        .map_or(0, |i| i + 3);
    let mut pos = header_end;
    for &(s, e) in &kids {
        assert!(
            s == pos && s < e && e <= frame.len(),
            "child {s}..{e} at {pos}"
        );
        pos = e;
    }
    assert_eq!(pos, frame.len(), "children do not cover the frame");
}

/// `FrameScanner`/`children` and the parser of servers' `invalidate`
/// pushes: never panic; resumable scanning agrees with scanning in one go.
pub fn frame_scanner(data: &[u8]) {
    let data = &data[..data.len().min(MAX_INPUT)];
    let _ = children(data);
    let _ = slotbridge::tracking::parse_push(data);
    let whole = scan_frames(data, || usize::MAX);
    let mut rng = XorShift::new(hash(data));
    let chunked = scan_frames(data, || 1 + rng.below(13));
    assert_eq!(whole, chunked, "whole vs random chunks differ");
    if data.len() <= 512 {
        let bytewise = scan_frames(data, || 1);
        assert_eq!(whole, bytewise, "whole vs byte by byte differ");
    }
}

// ---------------------------------------------------------------------------
// route_split

/// The arguments `route_split` builds from `data`: a first byte below 0x20
/// picks a name from [`COMMAND_NAMES`] and the rest are space-separated
/// arguments; otherwise all of `data` is space-separated (name first).
pub fn command_args(data: &[u8]) -> Vec<Vec<u8>> {
    let mut args: Vec<Vec<u8>> = Vec::new();
    let rest = match data.first() {
        Some(&b) if b < 0x20 => {
            let name = COMMAND_NAMES[usize::from(b) % COMMAND_NAMES.len()];
            args.push(name.as_bytes().to_vec());
            &data[1..]
        }
        _ => data,
    };
    if !rest.is_empty() || args.is_empty() {
        args.extend(rest.split(|&b| b == b' ').take(1000).map(<[u8]>::to_vec));
    }
    args
}

/// Routes a command built from `data`; for a split, checks that every key
/// lands in exactly one single-slot sub-request, in order.
pub fn route_split(data: &[u8]) {
    let args = command_args(data);
    // Encode as a client would and parse it back, as the session does.
    let raw = slotbridge::protocol::reply::command(args.iter());
    let mut parser = RequestParser::new(RequestLimits::default());
    assert_eq!(parser.parse(&raw), Ok(Parsed::Command(raw.len())));
    let ranges = parser.args().to_vec();
    let view = CommandView {
        raw: &raw,
        args: &ranges,
    };
    assert_eq!(view.len(), args.len());
    for (i, a) in args.iter().enumerate() {
        assert_eq!(view.get(i), &a[..]);
    }
    let mut scratch = Scratch::default();
    let routed = route(&view, &mut scratch);
    let keys = scratch.keys.clone();
    for &k in &keys {
        assert!(k > 0 && k < view.len(), "key index {k} of {}", view.len());
    }
    let all_in = |s: u16| keys.iter().all(|&k| slot(view.get(k)) == s);
    match &routed {
        Route::Slot(s) | Route::Blocking(s) if !keys.is_empty() => {
            assert!(all_in(*s), "{routed:?}: a key is in another slot");
        }
        Route::Reply(r) => assert!(r.starts_with(b"-"), "a Reply that is not an error"),
        Route::Split(kind) => {
            assert!(keys.len() >= 2, "split of fewer than two keys");
            let name = view.get(0).to_vec();
            let max = hash(data) as usize % 4;
            for max_keys in [0, max] {
                check_split(*kind, &view, &keys, max_keys, &name);
            }
        }
        _ => {}
    }
}

fn check_split(
    kind: SplitKind,
    view: &CommandView<'_>,
    keys: &[usize],
    max_keys: usize,
    name: &[u8],
) {
    let subs = split(kind, view, keys, max_keys);
    if kind == SplitKind::GeoStore {
        // One read, of the source, on its slot.
        let spec = slotbridge::command::find(view).expect("routed, so known");
        let (src, _) = slotbridge::geo::store_keys(spec.name, view).expect("routed, so storing");
        assert_eq!(subs.len(), 1, "one geo read");
        assert_eq!(subs[0].slot, slot(view.get(src)));
        return;
    }
    if let Some((before, after)) = kind.read_per_key() {
        // One read per key (not of a destination only written).
        let read = &keys[usize::from(kind.skips_destination())..];
        assert_eq!(subs.len(), read.len(), "one read per key");
        for (i, (sub, &k)) in subs.iter().zip(read).enumerate() {
            let key = view.get(k);
            assert_eq!(sub.slot, slot(key));
            assert_eq!(sub.positions, vec![i as u32]);
            let mut args: Vec<&[u8]> = before.to_vec();
            args.push(key);
            args.extend_from_slice(after);
            if kind == SplitKind::ZRangeStore {
                // The range and its options, a WITHSCORES option made a
                // syntax error.
                for j in 3..view.len() {
                    let a = view.get(j);
                    args.push(if j >= 5 && a.eq_ignore_ascii_case(b"withscores") {
                        b"WITHSCORES-not-in-ZRANGESTORE"
                    } else {
                        a
                    });
                }
            }
            assert_eq!(sub.payload, slotbridge::protocol::reply::command(args));
        }
        return;
    }
    let step = if kind == SplitKind::Mset { 2 } else { 1 };
    for &k in keys {
        assert!(
            k + step - 1 < view.len(),
            "{kind:?}: key at argument {k} has no value (argc {}): the split \
             would send an empty value instead of Redis's arity error",
            view.len()
        );
    }
    // What each slot should receive, in the original order.
    let mut expected: Vec<(u16, Vec<Vec<u8>>)> = Vec::new();
    for &k in keys {
        let s = slot(view.get(k));
        let words = (0..step).map(|a| view.get(k + a).to_vec());
        match expected.iter_mut().find(|(es, _)| *es == s) {
            Some((_, w)) => w.extend(words),
            None => expected.push((s, words.collect())),
        }
    }
    let mut got: Vec<(u16, Vec<Vec<u8>>)> = Vec::new();
    let mut positions_seen = vec![false; keys.len()];
    for sub in &subs {
        let mut p = RequestParser::new(RequestLimits::default());
        assert_eq!(
            p.parse(&sub.payload),
            Ok(Parsed::Command(sub.payload.len())),
            "sub-request is not one command"
        );
        let words: Vec<Vec<u8>> = p
            .args()
            .iter()
            .map(|&(s, e)| sub.payload[s..e].to_vec())
            .collect();
        assert_eq!(words[0], name, "sub-request has another command name");
        let body = &words[1..];
        assert!(!body.is_empty(), "empty sub-request");
        assert_eq!(body.len() % step, 0);
        let nkeys = body.len() / step;
        if max_keys > 0 {
            assert!(nkeys <= max_keys, "{nkeys} keys over max_keys {max_keys}");
        }
        for key in body.iter().step_by(step) {
            assert_eq!(slot(key), sub.slot, "sub-request is not single-slot");
        }
        if kind == SplitKind::Mget {
            assert_eq!(sub.positions.len(), nkeys);
            for (key, &pos) in body.iter().zip(&sub.positions) {
                let pos = pos as usize;
                assert!(pos < keys.len(), "position {pos} out of range");
                assert!(!positions_seen[pos], "position {pos} twice");
                positions_seen[pos] = true;
                assert_eq!(&key[..], view.get(keys[pos]), "position points elsewhere");
            }
        } else {
            assert!(sub.positions.is_empty());
        }
        match got.iter_mut().find(|(gs, _)| *gs == sub.slot) {
            Some((_, w)) => w.extend(body.iter().cloned()),
            None => got.push((sub.slot, body.to_vec())),
        }
    }
    if kind == SplitKind::Mget {
        assert!(positions_seen.iter().all(|&b| b), "a key has no position");
    }
    assert_eq!(
        got, expected,
        "keys not each in exactly one sub-request, in order"
    );
}

// ---------------------------------------------------------------------------
// merge_replies

/// Splits `data` into reply frames (the unparsable rest, if any, becomes
/// one last arbitrary part).
pub fn frames_of(data: &[u8], max: usize) -> Vec<Bytes> {
    let mut parts = Vec::new();
    let mut rest = data;
    while !rest.is_empty() && parts.len() < max {
        match FrameScanner::new().scan(rest) {
            Ok(Some(n)) => {
                parts.push(Bytes::copy_from_slice(&rest[..n]));
                rest = &rest[n..];
            }
            _ => {
                parts.push(Bytes::copy_from_slice(rest));
                break;
            }
        }
    }
    parts
}

/// Every merge function over arbitrary parts: no panic; well-formed output.
pub fn merge_replies(data: &[u8]) {
    let Some((&ctl, body)) = data.split_first() else {
        return;
    };
    let parts = frames_of(body, 64);
    let refs: Vec<&Bytes> = parts.iter().collect();
    let any_map = parts.iter().any(|p| p.first() == Some(&b'%'));

    assert_one_frame(&merge::sum(&refs), "sum");
    assert_one_frame(&merge::min(&refs), "min");
    assert_one_frame(&merge::all_true(&refs, &[]), "all_true");
    let known: Vec<bool> = (0..refs.len()).map(|i| ctl >> (i % 8) & 1 == 1).collect();
    assert_one_frame(&merge::all_true(&refs, &known), "all_true known");
    assert_one_frame(&merge::newest(&refs, i64::from(ctl) - 2), "newest");
    assert_one_frame(&merge::union(&refs), "union");
    assert_one_frame(&merge::sum_pairs(&refs), "sum_pairs");
    {
        use slotbridge::introspection as intro;
        use slotbridge::protocol::reply::Proto;
        let proto = if ctl & 2 == 0 {
            Proto::Resp2
        } else {
            Proto::Resp3
        };
        assert_one_frame(&intro::latency_latest(&refs), "latency_latest");
        assert_one_frame(&intro::latency_history(&refs), "latency_history");
        assert_one_frame(&intro::latency_histogram(&refs, proto), "latency_histogram");
        assert_one_frame(&intro::memory_stats(&refs, proto), "memory_stats");
    }
    let ok = merge::all_ok(&refs);
    if parts.iter().all(|p| &p[..] == b"+OK\r\n") {
        assert_eq!(&ok[..], b"+OK\r\n");
    }
    let concat = merge::concat(&refs);
    // A map's children are keys and values, so the "array" header of a
    // concatenation or set operation over maps is meaningless; servers
    // never answer KEYS or SMEMBERS with a map.
    if !any_map {
        assert_one_frame(&concat, "concat");
    }
    for op in [
        SetOp::Inter,
        SetOp::Union,
        SetOp::Diff,
        SetOp::InterCard(u64::from(ctl % 4)),
    ] {
        let out = merge::set_op(op, &refs);
        if !any_map {
            assert_one_frame(&out, "set_op");
        }
    }
    let failed = merge::failed("mset", &refs, usize::from(ctl % 5));
    assert_one_frame(&failed, "failed");

    // HyperLogLogs (PFCOUNT, PFMERGE): the parts as they are, and as
    // values behind a valid header, so the sparse decoder sees them.
    let hlls: Vec<Bytes> = parts
        .iter()
        .map(|p| {
            let mut v = b"HYLL".to_vec();
            v.push(ctl & 1);
            v.extend_from_slice(&[0; 11]);
            v.extend_from_slice(p);
            slotbridge::protocol::reply::bulk(&v)
        })
        .collect();
    let hll_refs: Vec<&Bytes> = hlls.iter().collect();
    for op in [BitOp::And, BitOp::Or, BitOp::Xor, BitOp::Not] {
        match merge::bitop(op, &refs) {
            Ok(value) => assert!(value.len() <= data.len(), "bitop longer than its sources"),
            Err(e) => assert_one_frame(&e, "bitop"),
        }
    }
    // Sorted-set algebra over arbitrary ZUNION replies.
    assert_one_frame(
        &merge::zintercard(Ok(u64::from(ctl % 3)), &refs),
        "zintercard",
    );
    if let Ok(sources) = merge::zsources(&refs) {
        for op in [ZOp::Union, ZOp::Inter, ZOp::Diff] {
            let options = ZOptions {
                withscores: false,
                weights: vec![f64::from(ctl) - 100.0; sources.len()],
                aggregate: [Aggregate::Sum, Aggregate::Min, Aggregate::Max][usize::from(ctl % 3)],
            };
            for (_, score) in zset::compute(op, &sources, &options) {
                assert!(!score.is_nan(), "a NaN score would be stored");
            }
        }
    }
    for set in [&refs, &hll_refs] {
        assert_one_frame(&merge::pfcount(set), "pfcount");
        if let Ok(value) = merge::pfmerge_sources(set) {
            let mut back = slotbridge::hll::Registers::default();
            assert!(
                back.merge(&value).is_ok(),
                "PFMERGE wrote a value it cannot read"
            );
        }
    }

    // MGET: positions are a permutation of 0..total (sometimes corrupted).
    let counts: Vec<usize> = parts
        .iter()
        .map(|p| children(p).map_or(usize::from(ctl % 3), |c| c.len()))
        .collect();
    let total: usize = counts.iter().sum::<usize>().min(100_000);
    let mut rng = XorShift::new(hash(data));
    let mut order: Vec<u32> = (0..total as u32).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    if ctl & 0x40 != 0 && !order.is_empty() {
        let i = rng.below(order.len());
        order[i] = rng.below(total + 2) as u32;
    }
    let mut positions: Vec<&[u32]> = Vec::new();
    let mut at = 0;
    for &c in &counts {
        let end = (at + c).min(order.len());
        positions.push(&order[at..end]);
        at = end;
    }
    let mget_parts: Vec<(&Bytes, &[u32])> = parts.iter().zip(positions.iter().copied()).collect();
    let total = if ctl & 0x80 != 0 { total + 1 } else { total };
    let out = merge::mget(&mget_parts, total);
    assert_one_frame(&out, "mget");
    if !out.starts_with(b"-") {
        let kids = children(&out).expect("mget answer is an array");
        assert_eq!(kids.len(), total);
        for (part, pos) in &mget_parts {
            let Some(elems) = children(part) else {
                continue;
            };
            for (&(s, e), &p) in elems.iter().zip(pos.iter()) {
                let (ks, ke) = kids[p as usize];
                assert_eq!(&out[ks..ke], &part[s..e], "mget value misplaced");
            }
        }
    }

    // INFO: the parts as they are, and wrapped as bulk strings.
    let facts = ProxyFacts {
        pid: 42,
        port: 6380,
        uptime_secs: u64::from(ctl) * 100_000,
        connected_clients: 3,
        total_connections: 7,
        total_commands: 99,
        blocked_clients: 2,
        pubsub_clients: 4,
        pause: (ctl & 1 == 1).then_some((ctl & 2 == 2, u64::from(ctl))),
        tracking_clients: 1,
        tracking: slotbridge::tracking::TableSizes {
            keys: 2,
            items: 3,
            prefixes: 1,
        },
        masters: parts.len(),
        rules: Vec::new(),
    };
    let bulks: Vec<Bytes> = parts
        .iter()
        .map(|p| slotbridge::protocol::reply::bulk(p))
        .collect();
    let bulk_refs: Vec<&Bytes> = bulks.iter().collect();
    for proto in [Proto::Resp2, Proto::Resp3] {
        assert_one_frame(&info::merge(&refs, &facts, proto), "info");
        assert_one_frame(&info::merge(&bulk_refs, &facts, proto), "info");
    }
}

// ---------------------------------------------------------------------------
// config_parse

/// `Config::from_toml` + `validate`: never panic; errors are one line.
pub fn config_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Config::from_toml(&text) {
        Ok(config) => {
            let _ = config.connect_timeout();
            if config.validate().is_ok() {
                assert!(!config.seeds.is_empty());
                assert!(config.listen.parse::<std::net::SocketAddr>().is_ok());
            }
        }
        Err(e) => assert!(!e.contains('\n'), "multi-line config error: {e:?}"),
    }
}

// ---------------------------------------------------------------------------
// reply_handling

/// `classify`, `parse_redirect`, `redirect_addr` and `rewrite_scan_reply`
/// over arbitrary frames.
pub fn reply_handling(data: &[u8]) {
    let frame = Bytes::copy_from_slice(data);
    let redirect = parse_redirect(data);
    if let Some(r) = &redirect {
        assert!(r.slot < 16384, "slot {} out of range", r.slot);
        assert!(!r.addr.is_empty());
        let prefix: &[u8] = if r.ask { b"-ASK " } else { b"-MOVED " };
        assert!(data.starts_with(prefix));
        let with = redirect_addr(r, Some("10.0.0.1:7000"));
        let without = redirect_addr(r, None);
        if r.addr.starts_with(':') {
            assert!(with.starts_with("10.0.0.1:"), "{with}");
            assert!(without.starts_with("127.0.0.1:"), "{without}");
        } else {
            assert_eq!(with, r.addr);
        }
    }
    for status in [
        ReplyStatus::Answered,
        ReplyStatus::NotSent,
        ReplyStatus::Lost,
        ReplyStatus::RetryTimer,
        ReplyStatus::Final,
    ] {
        let answered = status == ReplyStatus::Answered;
        let reply = Reply {
            seq: 1,
            part: 0,
            data: frame.clone(),
            status,
            ends: Vec::new(),
        };
        match classify(&reply) {
            Outcome::Moved(r) | Outcome::Ask(r) => {
                assert!(answered);
                assert_eq!(Some(r), parse_redirect(data));
            }
            Outcome::NotExecuted | Outcome::NoScript => {
                assert!(answered && data.starts_with(b"-"));
            }
            Outcome::NotSent => assert_eq!(status, ReplyStatus::NotSent),
            Outcome::Lost => assert_eq!(status, ReplyStatus::Lost),
            Outcome::Timer => assert_eq!(status, ReplyStatus::RetryTimer),
            Outcome::Deliver => {
                if answered {
                    assert!(redirect.is_none(), "a redirect delivered as is");
                }
            }
        }
    }

    // SCAN replies, at assorted positions in the master list.
    let input_kids = children(data);
    for (node, nodes) in [(0, 1), (0, 3), (2, 3), (1022, 1024), (1023, 1024)] {
        let Some(out) = rewrite_scan_reply(&frame, node, nodes) else {
            continue;
        };
        assert_one_frame(&out, "rewrite_scan_reply");
        let kids = children(&out).expect("SCAN reply is an array");
        assert_eq!(kids.len(), 2);
        let input_kids = input_kids.as_ref().expect("rewrote a non-aggregate");
        let (ks, ke) = input_kids[1];
        // The same key frames (the array header is written anew).
        let keys_of = |frame: &[u8]| -> Vec<Vec<u8>> {
            children(frame)
                .expect("keys are an array")
                .iter()
                .map(|&(s, e)| frame[s..e].to_vec())
                .collect()
        };
        assert_eq!(
            keys_of(&out[kids[1].0..kids[1].1]),
            keys_of(&data[ks..ke]),
            "keys changed"
        );
        let cursor = &out[kids[0].0..kids[0].1];
        let digits = cursor
            .strip_prefix(b"$")
            .and_then(|c| c.split(|&b| b == b'\n').nth(1))
            .and_then(|d| d.strip_suffix(b"\r"))
            .expect("cursor is a bulk string");
        let next: u64 = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .expect("cursor is decimal");
        if next == 0 {
            assert!(node + 1 >= nodes, "scan ended before the last master");
        } else {
            let (n, c) = decode_cursor(next);
            assert!(
                (n == node && c != 0) || (n == node + 1 && c == 0 && n < nodes),
                "cursor {next} decodes to ({n}, {c}) at node {node}/{nodes}"
            );
        }
    }
    if data.len() >= 8 {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&data[..8]);
        let c = u64::from_le_bytes(raw);
        let (n, nc) = decode_cursor(c);
        assert_eq!(encode_cursor(n, nc), Some(c), "cursor does not round-trip");
    }
}

// ---------------------------------------------------------------------------
// acl_rules

/// ACL rules (the first line) compiled and checked against a command (the
/// rest, split on spaces). Parsing and checking must not panic; a user the
/// rules do not confine must be refused nothing; refusing must be
/// stable (the same answer twice).
pub fn acl_rules(data: &[u8]) {
    use slotbridge::acl::Acl;
    let data = &data[..data.len().min(MAX_INPUT)];
    let (rules, command) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let args: Vec<&[u8]> = command.split(|&b| b == b' ').collect();
    let everything = Acl::parse("on allcommands allkeys allchannels").expect("valid rules");
    assert_eq!(
        everything.check(args.as_slice()),
        Ok(()),
        "unconfined user refused"
    );
    if let Ok(acl) = Acl::parse(&String::from_utf8_lossy(rules)) {
        let first = acl.check(args.as_slice());
        assert_eq!(first, acl.check(args.as_slice()));
        if let Err(denied) = first {
            let reply = denied.reply(b"u", false);
            assert!(reply.starts_with(b"-") && reply.ends_with(b"\r\n"));
            assert!(!reply[..reply.len() - 2].contains(&b'\n'));
        }
    }
    acl_setuser_round_trip(rules);
}

/// `ACL SETUSER` with the rules (binary, split on spaces): when they
/// apply, the user's `ACL LIST` description, applied to a new user,
/// describes it again the same (in both Redis styles), and `ACL GETUSER`
/// can be written.
fn acl_setuser_round_trip(rules: &[u8]) {
    use slotbridge::acl::user::User;
    use slotbridge::acl::Style;
    use slotbridge::protocol::reply::Proto;
    let ops: Vec<&[u8]> = rules.split(|&b| b == b' ').collect();
    let mut user = User::new(b"u");
    if user.set(&ops).is_err() {
        return;
    }
    for style in [Style::Redis70, Style::Redis72] {
        let line = user.describe(style);
        let described = &line[b"user u ".len()..];
        let again_ops: Vec<&[u8]> = described.split(|&b| b == b' ').collect();
        let mut again = User::new(b"u");
        again.set(&again_ops).expect("a description applies");
        assert_eq!(
            String::from_utf8_lossy(&again.describe(style)),
            String::from_utf8_lossy(&line),
            "description does not round-trip"
        );
        for proto in [Proto::Resp2, Proto::Resp3] {
            assert!(!user.reply(proto, style).is_empty());
        }
    }
}
