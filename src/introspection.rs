//! The introspection commands whose per-master replies the proxy merges
//! into one server's: `LATENCY LATEST`, `LATENCY HISTORY`, `LATENCY
//! HISTOGRAM` and `MEMORY STATS`. The cluster is described as one server
//! whose memory and events are its masters' together: counts and sizes
//! are summed, ratios computed again from the sums (as Redis computes
//! them, in single precision), the latest event of each kind kept.

use bytes::{Bytes, BytesMut};

use crate::merge::integer;
use crate::protocol::reply::{self, put_array, put_bulk, put_double, put_int, Proto};
use crate::protocol::scan::{bulk_body, children};

/// Samples a Redis latency series keeps (`LATENCY_TS_LEN`).
const HISTORY_LEN: usize = 160;

fn unexpected(what: &str) -> Bytes {
    reply::error(&format!(
        "ERR slotbridge: unexpected reply shape from a server while merging {what}"
    ))
}

/// The direct children of an aggregate frame, as slices.
fn items(frame: &[u8]) -> Option<Vec<&[u8]>> {
    let kids = children(frame)?;
    kids.into_iter().map(|(s, e)| frame.get(s..e)).collect()
}

/// The text of a bulk or verbatim string frame (without the verbatim
/// format prefix).
fn text_body(frame: &[u8]) -> Option<&[u8]> {
    if let Some(body) = bulk_body(frame) {
        return Some(body);
    }
    let rest = frame.strip_prefix(b"=")?;
    let cr = memchr::memchr(b'\r', rest)?;
    let len: usize = std::str::from_utf8(&rest[..cr]).ok()?.parse().ok()?;
    let body = rest.get(cr + 2..cr + 2 + len)?;
    body.get(4..)
}

/// `MEMORY DOCTOR`, `LATENCY DOCTOR`: a doctor's report is about one
/// server, so each master's is given under its address (one master's
/// alone as it is).
pub fn doctor(reports: &[(&str, &Bytes)], proto: Proto) -> Bytes {
    if let [(_, only)] = reports {
        return (*only).clone();
    }
    let mut text = Vec::new();
    for (addr, frame) in reports {
        let Some(body) = text_body(frame) else {
            return unexpected("a doctor's report");
        };
        if !text.is_empty() {
            text.push(b'\n');
        }
        text.extend_from_slice(format!("Master {addr}:\n").as_bytes());
        text.extend_from_slice(body);
        if !body.ends_with(b"\n") {
            text.push(b'\n');
        }
    }
    reply::text(proto, &text)
}

/// `LATENCY LATEST`: per event, the newest sample of any master and the
/// largest maximum (with Valkey 8, the sums and counts added up), in the
/// order first seen.
pub fn latency_latest(parts: &[&Bytes]) -> Bytes {
    // Valkey 8's sum and count of an event's samples.
    type Totals = Option<(i64, i64)>;
    // (event frame, time, latest, max, totals)
    let mut events: Vec<(&[u8], i64, i64, i64, Totals)> = Vec::new();
    for p in parts {
        let Some(entries) = items(p) else {
            return unexpected("LATENCY LATEST");
        };
        for entry in entries {
            let fields = items(entry).unwrap_or_default();
            let numbers: Option<Vec<i64>> = fields.iter().skip(1).map(|f| integer(f)).collect();
            let (Some(name), Some(numbers)) = (fields.first(), numbers) else {
                return unexpected("LATENCY LATEST");
            };
            let (time, latest, max, totals) = match numbers[..] {
                [time, latest, max] => (time, latest, max, None),
                [time, latest, max, sum, count] => (time, latest, max, Some((sum, count))),
                _ => return unexpected("LATENCY LATEST"),
            };
            match events.iter_mut().find(|e| e.0 == *name) {
                Some(e) => {
                    if time > e.1 {
                        (e.1, e.2) = (time, latest);
                    }
                    e.3 = e.3.max(max);
                    if let (Some(t), Some((sum, count))) = (e.4.as_mut(), totals) {
                        *t = (t.0.saturating_add(sum), t.1.saturating_add(count));
                    }
                }
                None => events.push((name, time, latest, max, totals)),
            }
        }
    }
    let mut out = BytesMut::with_capacity(32 + events.len() * 80);
    put_array(&mut out, events.len());
    for (name, time, latest, max, totals) in events {
        put_array(&mut out, if totals.is_some() { 6 } else { 4 });
        out.extend_from_slice(name);
        put_int(&mut out, time);
        put_int(&mut out, latest);
        put_int(&mut out, max);
        if let Some((sum, count)) = totals {
            put_int(&mut out, sum);
            put_int(&mut out, count);
        }
    }
    out.freeze()
}

/// `LATENCY HISTORY event`: every master's samples in time order (the
/// largest where two share a second), the newest 160.
pub fn latency_history(parts: &[&Bytes]) -> Bytes {
    let mut samples: Vec<(i64, i64)> = Vec::new();
    for p in parts {
        let Some(entries) = items(p) else {
            return unexpected("LATENCY HISTORY");
        };
        for entry in entries {
            let fields = items(entry).unwrap_or_default();
            let [time, latency] = fields.as_slice() else {
                return unexpected("LATENCY HISTORY");
            };
            let (Some(time), Some(latency)) = (integer(time), integer(latency)) else {
                return unexpected("LATENCY HISTORY");
            };
            samples.push((time, latency));
        }
    }
    samples.sort_unstable();
    samples.dedup_by(|later, earlier| {
        let same = later.0 == earlier.0;
        if same {
            earlier.1 = earlier.1.max(later.1);
        }
        same
    });
    let skip = samples.len().saturating_sub(HISTORY_LEN);
    let mut out = BytesMut::with_capacity(16 + samples.len() * 32);
    put_array(&mut out, samples.len() - skip);
    for (time, latency) in &samples[skip..] {
        put_array(&mut out, 2);
        put_int(&mut out, *time);
        put_int(&mut out, *latency);
    }
    out.freeze()
}

/// A flat list of name/value frames (a RESP2 array of pairs or a RESP3
/// map).
fn pairs(frame: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let all = items(frame)?;
    if all.len() % 2 != 0 {
        return None;
    }
    Some(all.chunks(2).map(|c| (c[0], c[1])).collect())
}

/// `LATENCY HISTOGRAM [command ...]`: per command, calls summed and the
/// cumulative bucket counts added up over the masters (a master without a
/// bucket counts what it has below it).
pub fn latency_histogram(parts: &[&Bytes], proto: Proto) -> Bytes {
    // command name frame -> (calls, [(bucket, cumulative count)] per master)
    type Buckets = Vec<(i64, i64)>;
    let mut commands: Vec<(&[u8], i64, Vec<Buckets>)> = Vec::new();
    for p in parts {
        let Some(entries) = pairs(p) else {
            return unexpected("LATENCY HISTOGRAM");
        };
        for (name, detail) in entries {
            let mut calls = None;
            let mut buckets = Vec::new();
            for (field, value) in pairs(detail).unwrap_or_default() {
                match bulk_body(field) {
                    Some(b"calls") => calls = integer(value),
                    Some(b"histogram_usec") => {
                        for (bucket, count) in pairs(value).unwrap_or_default() {
                            match (integer(bucket), integer(count)) {
                                (Some(b), Some(c)) => buckets.push((b, c)),
                                _ => return unexpected("LATENCY HISTOGRAM"),
                            }
                        }
                    }
                    _ => {}
                }
            }
            let Some(calls) = calls else {
                return unexpected("LATENCY HISTOGRAM");
            };
            match commands.iter_mut().find(|c| c.0 == name) {
                Some(c) => {
                    c.1 = c.1.saturating_add(calls);
                    c.2.push(buckets);
                }
                None => commands.push((name, calls, vec![buckets])),
            }
        }
    }
    let mut out = BytesMut::with_capacity(64 + commands.len() * 256);
    reply::put_map(&mut out, proto, commands.len());
    for (name, calls, per_master) in commands {
        let mut keys: Vec<i64> = per_master.iter().flatten().map(|b| b.0).collect();
        keys.sort_unstable();
        keys.dedup();
        out.extend_from_slice(name);
        reply::put_map(&mut out, proto, 2);
        put_bulk(&mut out, b"calls");
        put_int(&mut out, calls);
        put_bulk(&mut out, b"histogram_usec");
        reply::put_map(&mut out, proto, keys.len());
        for key in keys {
            let total = per_master
                .iter()
                .map(|buckets| {
                    buckets
                        .iter()
                        .take_while(|b| b.0 <= key)
                        .last()
                        .map_or(0, |b| b.1)
                })
                .fold(0i64, i64::saturating_add);
            put_int(&mut out, key);
            put_int(&mut out, total);
        }
    }
    out.freeze()
}

/// `FUNCTION STATS`: the libraries as one master counts them (they are
/// loaded on every master), and the script running on any master.
pub fn function_stats(parts: &[&Bytes]) -> Bytes {
    let running = |p: &[u8]| {
        pairs(p)?
            .into_iter()
            .find(|(name, _)| bulk_body(name) == Some(b"running_script"))
            .map(|(_, value)| !matches!(value, b"$-1\r\n" | b"*-1\r\n" | b"_\r\n"))
    };
    let Some(first) = parts.first() else {
        return unexpected("FUNCTION STATS");
    };
    if running(first).is_none() {
        return unexpected("FUNCTION STATS");
    }
    let busy = parts.iter().find(|p| running(p) == Some(true));
    Bytes::clone(busy.unwrap_or(first))
}

/// One `MEMORY STATS` value.
#[derive(Debug, Clone)]
enum Stat {
    Int(i64),
    /// A double (its frame: a RESP2 bulk string or a RESP3 double).
    Double(f64),
    /// A nested map (`db.0`), summed field by field.
    Map(Vec<(Vec<u8>, Stat)>),
    /// Anything else: the first master's frame.
    Other(Vec<u8>),
}

/// Maps nested deeper than this are kept as they are (a server's reply
/// nests one level: `db.0`).
const MAX_DEPTH: usize = 4;

fn stat(frame: &[u8], depth: usize) -> Stat {
    if let Some(n) = integer(frame) {
        return Stat::Int(n);
    }
    let text = match frame.first() {
        Some(b',') => frame.get(1..frame.len().saturating_sub(2)),
        Some(b'$') => bulk_body(frame),
        _ => None,
    };
    if let Some(d) = text
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(|t| t.parse::<f64>().ok())
    {
        return Stat::Double(d);
    }
    if let Some(fields) = pairs(frame).filter(|_| depth < MAX_DEPTH) {
        return Stat::Map(
            fields
                .into_iter()
                .map(|(name, value)| (name.to_vec(), stat(value, depth + 1)))
                .collect(),
        );
    }
    Stat::Other(frame.to_vec())
}

/// Adds `more` into `into` (integers summed, maps merged).
fn add(into: &mut Vec<(Vec<u8>, Stat)>, more: Vec<(Vec<u8>, Stat)>) {
    for (name, value) in more {
        match into.iter_mut().find(|(n, _)| *n == name) {
            None => into.push((name, value)),
            Some((_, old)) => match (old, value) {
                (Stat::Int(a), Stat::Int(b)) => *a = a.saturating_add(b),
                (Stat::Map(a), Stat::Map(b)) => add(a, b),
                _ => {}
            },
        }
    }
}

/// `MEMORY STATS`: the masters' figures summed, ratios computed again.
pub fn memory_stats(parts: &[&Bytes], proto: Proto) -> Bytes {
    let mut total: Vec<(Vec<u8>, Stat)> = Vec::new();
    for p in parts {
        let Stat::Map(fields) = stat(p, 0) else {
            return unexpected("MEMORY STATS");
        };
        add(&mut total, fields);
    }
    recompute_ratios(&mut total);
    let mut out = BytesMut::with_capacity(2048);
    put_stats(&mut out, &total, proto);
    out.freeze()
}

/// Redis's derived figures (`getMemoryOverheadData`), from the sums, in
/// single precision as Redis computes them.
fn recompute_ratios(stats: &mut [(Vec<u8>, Stat)]) {
    let get = |stats: &[(Vec<u8>, Stat)], name: &[u8]| {
        stats.iter().find_map(|(n, v)| match v {
            Stat::Int(i) if bulk_body(n) == Some(name) => Some(*i as f32),
            _ => None,
        })
    };
    let allocated = get(stats, b"total.allocated");
    let startup = get(stats, b"startup.allocated");
    let peak = get(stats, b"peak.allocated");
    let dataset = get(stats, b"dataset.bytes");
    let keys = get(stats, b"keys.count");
    let alloc_allocated = get(stats, b"allocator.allocated");
    let active = get(stats, b"allocator.active");
    let resident = get(stats, b"allocator.resident");
    let rss_overhead = get(stats, b"rss-overhead.bytes");
    let frag_bytes = get(stats, b"fragmentation.bytes");
    let net = allocated.zip(startup).map(|(a, s)| a - s);
    let rss = resident.zip(rss_overhead).map(|(r, o)| r + o);
    let ratio = |a: Option<f32>, b: Option<f32>| a.zip(b).map(|(a, b)| a / b);
    let derived: [(&[u8], Option<f32>); 6] = [
        (
            b"dataset.percentage",
            ratio(dataset.map(|d| d * 100.0), net),
        ),
        (
            b"peak.percentage",
            ratio(allocated.map(|a| a * 100.0), peak),
        ),
        (
            b"allocator-fragmentation.ratio",
            ratio(active, alloc_allocated),
        ),
        (b"allocator-rss.ratio", ratio(resident, active)),
        (b"rss-overhead.ratio", ratio(rss, resident)),
        (
            b"fragmentation",
            ratio(rss, rss.zip(frag_bytes).map(|(r, f)| r - f)),
        ),
    ];
    for (name, value) in stats.iter_mut() {
        if let (Stat::Double(d), Some((_, Some(v)))) = (
            &mut *value,
            derived.iter().find(|(n, _)| Some(*n) == bulk_body(name)),
        ) {
            *d = f64::from(*v);
        }
        if bulk_body(name) == Some(b"keys.bytes-per-key") {
            if let (Stat::Int(i), Some(net), Some(keys)) = (&mut *value, net, keys) {
                *i = if keys > 0.0 { (net / keys) as i64 } else { 0 };
            }
        }
    }
}

fn put_stats(out: &mut BytesMut, stats: &[(Vec<u8>, Stat)], proto: Proto) {
    reply::put_map(out, proto, stats.len());
    for (name, value) in stats {
        out.extend_from_slice(name);
        match value {
            Stat::Int(i) => put_int(out, *i),
            Stat::Double(d) => put_double(out, *d, proto),
            Stat::Map(fields) => put_stats(out, fields, proto),
            Stat::Other(frame) => out.extend_from_slice(frame),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::from(s.replace('|', "\r\n"))
    }

    #[test]
    fn latency_latest_keeps_the_newest_and_the_largest() {
        let a = b("*1|*4|$7|command|:100|:39|:50|");
        let c = b("*2|*4|$7|command|:120|:10|:20|*4|$4|fork|:90|:5|:5|");
        assert_eq!(
            latency_latest(&[&a, &c]),
            b("*2|*4|$7|command|:120|:10|:50|*4|$4|fork|:90|:5|:5|")
        );
        assert_eq!(latency_latest(&[&b("*0|")]), b("*0|"));
        assert!(latency_latest(&[&b(":1|")]).starts_with(b"-ERR"));
        // Valkey 8 adds each event's sum and count: added up.
        let a = b("*1|*6|$7|command|:100|:39|:50|:60|:2|");
        let c = b("*1|*6|$7|command|:120|:10|:20|:30|:3|");
        assert_eq!(
            latency_latest(&[&a, &c]),
            b("*1|*6|$7|command|:120|:10|:50|:90|:5|")
        );
    }

    #[test]
    fn latency_history_in_time_order() {
        let a = b("*2|*2|:10|:5|*2|:30|:7|");
        let c = b("*2|*2|:20|:9|*2|:30|:8|");
        assert_eq!(
            latency_history(&[&a, &c]),
            b("*3|*2|:10|:5|*2|:20|:9|*2|:30|:8|")
        );
    }

    #[test]
    fn latency_histograms_add_up() {
        // RESP2: command -> [calls, n, histogram_usec, [bucket, cumulative]].
        let a = b("*2|$3|set|*4|$5|calls|:3|$14|histogram_usec|*4|:1|:1|:4|:3|");
        let c = b("*2|$3|set|*4|$5|calls|:2|$14|histogram_usec|*4|:2|:1|:8|:2|");
        assert_eq!(
            latency_histogram(&[&a, &c], Proto::Resp2),
            b("*2|$3|set|*4|$5|calls|:5|$14|histogram_usec|*8|:1|:1|:2|:2|:4|:4|:8|:5|")
        );
    }

    #[test]
    fn function_stats_show_a_running_script_of_any_master() {
        let idle = b("*4|$14|running_script|$-1|$7|engines|*2|$3|LUA|*4|$15|libraries_count|:1|$15|functions_count|:1|");
        let busy = b("*4|$14|running_script|*6|$4|name|$1|f|$7|command|*1|$1|f|$11|duration_ms|:5|$7|engines|*2|$3|LUA|*4|$15|libraries_count|:1|$15|functions_count|:1|");
        assert_eq!(function_stats(&[&idle, &idle]), idle);
        assert_eq!(function_stats(&[&idle, &busy]), busy);
        assert!(function_stats(&[&b(":1|")]).starts_with(b"-ERR"));
    }

    #[test]
    fn memory_stats_of_one_master_are_its_own() {
        // Seen from redis-server 7.0.15 (RESP2), abridged.
        let one = b("*24|$14|peak.allocated|:963888|$15|total.allocated|:963808|$17|startup.allocated|:876032|\
$4|db.0|*4|$23|overhead.hashtable.main|:72|$26|overhead.hashtable.expires|:0|\
$10|keys.count|:1|$18|keys.bytes-per-key|:87776|$13|dataset.bytes|:87504|\
$18|dataset.percentage|$18|99.690116882324219|$15|peak.percentage|$14|99.99169921875|\
$19|allocator.allocated|:1735904|$16|allocator.active|:1880064|$18|allocator.resident|:4550656|");
        let merged = memory_stats(&[&one], Proto::Resp2);
        assert_eq!(
            String::from_utf8_lossy(&merged),
            String::from_utf8_lossy(&one)
        );
        // Two masters: figures and ratios from the sums, not the first
        // master's.
        let m1 = b("*14|$15|total.allocated|:3000|$17|startup.allocated|:1000|$10|keys.count|:4|$18|keys.bytes-per-key|:500|\
$19|allocator.allocated|:100|$16|allocator.active|:300|$29|allocator-fragmentation.ratio|$1|3|");
        let m2 = b("*14|$15|total.allocated|:1000|$17|startup.allocated|:1000|$10|keys.count|:0|$18|keys.bytes-per-key|:0|\
$19|allocator.allocated|:100|$16|allocator.active|:100|$29|allocator-fragmentation.ratio|$1|1|");
        let text = String::from_utf8_lossy(&memory_stats(&[&m1, &m2], Proto::Resp2)).into_owned();
        assert!(text.contains("keys.bytes-per-key\r\n:500\r\n"), "{text}");
        assert!(
            text.contains("allocator-fragmentation.ratio\r\n$1\r\n2\r\n"),
            "{text}"
        );
        let two = memory_stats(&[&one, &one], Proto::Resp2);
        let text = String::from_utf8_lossy(&two);
        assert!(text.contains("keys.count\r\n:2\r\n"), "{text}");
        assert!(
            text.contains("overhead.hashtable.main\r\n:144\r\n"),
            "{text}"
        );
        assert!(
            text.contains("dataset.percentage\r\n$18\r\n99.690116882324219\r\n"),
            "{text}"
        );
    }

    #[test]
    fn doctors_report_each_master() {
        let a = Bytes::from_static(b"$3\r\nok.\r\n");
        let b = Bytes::from_static(b"=8\r\ntxt:fine\r\n");
        assert_eq!(doctor(&[("n1:1", &a)], Proto::Resp2), a);
        assert_eq!(
            &doctor(&[("n1:1", &a), ("n2:2", &b)], Proto::Resp2)[..],
            &b"$36\r\nMaster n1:1:\nok.\n\nMaster n2:2:\nfine\n\r\n"[..]
        );
        assert!(doctor(
            &[("n1:1", &a), ("n2:2", &Bytes::from_static(b":1\r\n"))],
            Proto::Resp2
        )
        .starts_with(b"-ERR"));
    }
}
