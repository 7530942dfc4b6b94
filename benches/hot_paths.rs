//! Criterion benchmarks of the in-process hot paths of the proxy: request
//! parsing, slot hashing, routing, cross-slot split/merge and reply framing.
//!
//! Run with `cargo bench --bench hot_paths`. Each group is kept short
//! (2 s measurement, 30 samples) so the whole file runs in about a minute.

use std::hint::black_box;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use slotbridge::cluster::slot::slot;
use slotbridge::command::route::{route, CommandView, Route, Scratch, SplitKind};
use slotbridge::merge;
use slotbridge::protocol::request::{Parsed, RequestLimits, RequestParser};
use slotbridge::protocol::scan::FrameScanner;
use slotbridge::split::split;

/// Keys of the multi-key commands; chosen to land in 10 different slots.
const KEYS: [&str; 10] = [
    "key:000", "key:001", "key:002", "key:003", "key:004", "key:005", "key:006", "key:007",
    "key:008", "key:009",
];

/// Appends one RESP array of bulk strings.
fn encode(out: &mut Vec<u8>, parts: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
    for p in parts {
        out.extend_from_slice(format!("${}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
}

/// A command as the session sees it: raw RESP bytes plus argument ranges.
struct Owned {
    raw: Vec<u8>,
    args: Vec<(usize, usize)>,
}

impl Owned {
    fn new(parts: &[&[u8]]) -> Self {
        let mut raw = Vec::new();
        encode(&mut raw, parts);
        let mut parser = RequestParser::new(RequestLimits::default());
        match parser.parse(&raw) {
            Ok(Parsed::Command(n)) => assert_eq!(n, raw.len()),
            other => panic!("bench input did not parse: {other:?}"),
        }
        let args = parser.args().to_vec();
        Owned { raw, args }
    }

    fn view(&self) -> CommandView<'_> {
        CommandView {
            raw: &self.raw,
            args: &self.args,
        }
    }
}

fn mget_command() -> Owned {
    let mut parts: Vec<&[u8]> = vec![b"MGET"];
    parts.extend(KEYS.iter().map(|k| k.as_bytes()));
    Owned::new(&parts)
}

/// Parses every command in `buf`, returning the number of arguments seen.
fn parse_batch(parser: &mut RequestParser, mut buf: &[u8]) -> usize {
    let mut args = 0;
    loop {
        match parser.parse(buf) {
            Ok(Parsed::Command(n)) => {
                args += parser.args().len();
                buf = &buf[n..];
            }
            Ok(Parsed::Skip(n)) | Ok(Parsed::Inline(n)) => buf = &buf[n..],
            Ok(Parsed::Incomplete) => return args,
            Err(e) => panic!("parse error: {e}"),
        }
    }
}

fn bench_parse(c: &mut Criterion) {
    let mut gets = Vec::new();
    for i in 0..16 {
        let key = format!("key:{i:03}");
        encode(&mut gets, &[b"GET", key.as_bytes()]);
    }
    let value = vec![b'x'; 100];
    let mut mset = Vec::new();
    let mut parts: Vec<&[u8]> = vec![b"MSET"];
    for k in KEYS {
        parts.push(k.as_bytes());
        parts.push(&value);
    }
    encode(&mut mset, &parts);

    let mut parser = RequestParser::new(RequestLimits::default());
    assert_eq!(parse_batch(&mut parser, &gets), 32);
    assert_eq!(parse_batch(&mut parser, &mset), 21);

    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(16));
    g.bench_function("pipeline_16_get", |b| {
        b.iter(|| parse_batch(&mut parser, black_box(&gets)))
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("mset_10_pairs_100B", |b| {
        b.iter(|| parse_batch(&mut parser, black_box(&mset)))
    });
    g.finish();
}

fn bench_slot(c: &mut Criterion) {
    let long = vec![b'k'; 1024];
    let mut g = c.benchmark_group("slot");
    g.bench_function("short_key", |b| b.iter(|| slot(black_box(b"key:123"))));
    g.bench_function("hash_tag", |b| {
        b.iter(|| slot(black_box(b"{user1000}.following")))
    });
    g.throughput(Throughput::Bytes(long.len() as u64));
    g.bench_function("key_1KB", |b| b.iter(|| slot(black_box(&long))));
    g.finish();
}

fn bench_route(c: &mut Criterion) {
    let get = Owned::new(&[b"GET", b"key:123"]);
    let mget = mget_command();
    let mut scratch = Scratch::default();
    assert!(matches!(route(&get.view(), &mut scratch), Route::Slot(_)));
    assert_eq!(
        route(&mget.view(), &mut scratch),
        Route::Split(SplitKind::Mget)
    );

    let mut g = c.benchmark_group("route");
    g.bench_function("get", |b| {
        let view = get.view();
        b.iter(|| route(black_box(&view), &mut scratch))
    });
    g.bench_function("mget_10_keys", |b| {
        let view = mget.view();
        b.iter(|| route(black_box(&view), &mut scratch))
    });
    g.finish();
}

fn bench_split_merge(c: &mut Criterion) {
    let mget = mget_command();
    let view = mget.view();
    let keys: Vec<usize> = (1..=KEYS.len()).collect();
    let subs = split(SplitKind::Mget, &view, &keys, 0);
    assert_eq!(subs.len(), KEYS.len(), "bench keys must be in 10 slots");

    // One reply per sub-request: an array with a 100-byte value per key.
    let value = vec![b'v'; 100];
    let replies: Vec<Bytes> = subs
        .iter()
        .map(|s| {
            let mut r = BytesMut::new();
            r.put_slice(format!("*{}\r\n", s.positions.len()).as_bytes());
            for _ in &s.positions {
                r.put_slice(format!("${}\r\n", value.len()).as_bytes());
                r.put_slice(&value);
                r.put_slice(b"\r\n");
            }
            r.freeze()
        })
        .collect();
    let parts: Vec<(&Bytes, &[u32])> = replies
        .iter()
        .zip(subs.iter())
        .map(|(r, s)| (r, s.positions.as_slice()))
        .collect();
    let merged = merge::mget(&parts, KEYS.len());
    assert!(merged.starts_with(b"*10\r\n$100\r\n"), "merge failed");

    let mut g = c.benchmark_group("split_merge");
    g.bench_function("split_mget_10_keys", |b| {
        b.iter(|| split(SplitKind::Mget, black_box(&view), black_box(&keys), 0))
    });
    g.bench_function("merge_mget_10_parts", |b| {
        b.iter(|| merge::mget(black_box(&parts), KEYS.len()))
    });
    g.finish();
}

fn bench_scan(c: &mut Criterion) {
    let mut bulk = b"$100\r\n".to_vec();
    bulk.extend(std::iter::repeat_n(b'v', 100));
    bulk.extend_from_slice(b"\r\n");
    let mut array = b"*10\r\n".to_vec();
    for i in 0..10 {
        array.extend_from_slice(format!("$7\r\nval:{i:03}\r\n").as_bytes());
    }
    let mut scanner = FrameScanner::new();
    assert_eq!(scanner.scan(&bulk), Ok(Some(bulk.len())));
    assert_eq!(scanner.scan(&array), Ok(Some(array.len())));

    let mut g = c.benchmark_group("scan");
    g.bench_function("bulk_100B", |b| b.iter(|| scanner.scan(black_box(&bulk))));
    g.bench_function("array_10", |b| b.iter(|| scanner.scan(black_box(&array))));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(30);
    targets = bench_parse, bench_slot, bench_route, bench_split_merge, bench_scan
}
criterion_main!(benches);
