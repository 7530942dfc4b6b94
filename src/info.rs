//! `INFO` rebuilt from all masters so that the proxy looks like one server.
//!
//! Clients decide behaviour from INFO (ioredis waits for `loading:0`, apps
//! read `redis_version`, test suites read `redis_mode` and
//! `cluster_enabled`), so the answer keeps the real servers' version and
//! fields, sums what adds up across masters (keys, memory, counters), and
//! presents a standalone master with the proxy's own clients.

use std::fmt::Write as _;

use bytes::Bytes;

use crate::protocol::reply::Proto;
use crate::protocol::request::parse_i64;

/// Facts about the proxy itself that INFO reports.
#[derive(Debug, Clone, Default)]
pub struct ProxyFacts {
    /// Process id.
    pub pid: u32,
    /// Client-facing TCP port.
    pub port: u16,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Currently connected clients.
    pub connected_clients: u64,
    /// Connections accepted since start.
    pub total_connections: u64,
    /// Commands processed since start.
    pub total_commands: u64,
    /// Clients waiting in a blocking command.
    pub blocked_clients: usize,
    /// Clients with subscriptions.
    pub pubsub_clients: usize,
    /// The proxy's `CLIENT PAUSE` in force: whether it holds every command
    /// (not only writes), and the milliseconds left.
    pub pause: Option<(bool, u64)>,
    /// Clients with `CLIENT TRACKING` on.
    pub tracking_clients: usize,
    /// The proxy's tracking table (`tracking_total_*`).
    pub tracking: crate::tracking::TableSizes,
    /// Number of masters behind the proxy.
    pub masters: usize,
    /// Active co-location rule names.
    pub rules: Vec<String>,
}

type Section = (String, Vec<(String, String)>);

fn parse(frame: &[u8]) -> Vec<Section> {
    // Bulk (`$`) or verbatim (`=`, with a `txt:` prefix) string.
    let text = frame
        .iter()
        .position(|&b| b == b'\n')
        .and_then(|i| frame.get(i + 1..frame.len().saturating_sub(2)))
        .unwrap_or_default();
    let text = if frame.first() == Some(&b'=') {
        text.get(4..).unwrap_or_default()
    } else {
        text
    };
    let mut sections: Vec<Section> = Vec::new();
    // Bytes as Latin-1 characters, one for one, so that names that are
    // not UTF-8 (an error code in `errorstat_...`) come out unchanged.
    let text: String = text.iter().map(|&b| char::from(b)).collect();
    for line in text.split("\r\n") {
        if let Some(name) = line.strip_prefix("# ") {
            sections.push((name.to_string(), Vec::new()));
        } else if let Some((k, v)) = line.split_once(':') {
            if let Some(last) = sections.last_mut() {
                last.1.push((k.to_string(), v.to_string()));
            }
        }
    }
    sections
}

fn field<'a>(
    sections: &'a [Vec<Section>],
    part: usize,
    section: &str,
    key: &str,
) -> Option<&'a str> {
    sections
        .get(part)?
        .iter()
        .find(|(n, _)| n == section)?
        .1
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn human(bytes: i64) -> String {
    let b = bytes as f64;
    if b < 1024.0 {
        format!("{bytes}B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.2}K", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}M", b / 1024.0 / 1024.0)
    } else {
        format!("{:.2}G", b / 1024.0 / 1024.0 / 1024.0)
    }
}

/// Sums an integer field across parts; `None` when any part lacks it or it
/// is not an integer.
fn sum_field(all: &[Vec<Section>], section: &str, key: &str) -> Option<i64> {
    let mut total: i64 = 0;
    for i in 0..all.len() {
        total = total.saturating_add(parse_i64(field(all, i, section, key)?.as_bytes())?);
    }
    Some(total)
}

fn max_field(all: &[Vec<Section>], section: &str, key: &str) -> Option<i64> {
    (0..all.len())
        .map(|i| parse_i64(field(all, i, section, key)?.as_bytes()))
        .try_fold(i64::MIN, |max, n| n.map(|n| max.max(n)))
}

fn min_field(all: &[Vec<Section>], section: &str, key: &str) -> Option<i64> {
    (0..all.len())
        .map(|i| parse_i64(field(all, i, section, key)?.as_bytes()))
        .try_fold(i64::MAX, |min, n| n.map(|n| min.min(n)))
}

/// The `Keyspace` lines of one server holding all the masters' keys:
/// counts (`keys`, `expires`, Redis 7.4's `subexpiry`, ...) summed,
/// `avg_ttl` averaged over the masters' expiring keys (a master that has
/// not estimated it yet, `0`, left out), fields in the nodes' order.
fn keyspace(all: &[Vec<Section>]) -> Vec<(String, String)> {
    struct Db {
        name: String,
        /// Each field and its sum (`avg_ttl`: of ttl × expires).
        fields: Vec<(String, i128)>,
        /// The expiring keys of the masters with an estimated `avg_ttl`.
        weight: i128,
    }
    let mut dbs: Vec<Db> = Vec::new();
    for part in all {
        let Some((_, fields)) = part.iter().find(|(n, _)| n == "Keyspace") else {
            continue;
        };
        for (db, v) in fields {
            let index = match dbs.iter().position(|d| &d.name == db) {
                Some(i) => i,
                None => {
                    dbs.push(Db {
                        name: db.clone(),
                        fields: Vec::new(),
                        weight: 0,
                    });
                    dbs.len() - 1
                }
            };
            let d = &mut dbs[index];
            let pairs: Vec<(&str, i128)> = v
                .split(',')
                .map(|kv| {
                    let (k, n) = kv.split_once('=').unwrap_or((kv, "0"));
                    (k, i128::from(parse_i64(n.as_bytes()).unwrap_or(0)))
                })
                .collect();
            let expires = pairs
                .iter()
                .find(|(k, _)| *k == "expires")
                .map_or(0, |p| p.1);
            for (k, n) in pairs {
                let add = match k {
                    "avg_ttl" if n > 0 => {
                        d.weight += expires;
                        n * expires
                    }
                    "avg_ttl" => 0,
                    _ => n,
                };
                match d.fields.iter_mut().find(|(name, _)| name == k) {
                    Some(f) => f.1 += add,
                    None => d.fields.push((k.to_string(), add)),
                }
            }
        }
    }
    dbs.into_iter()
        .map(|d| {
            let line: Vec<String> = d
                .fields
                .iter()
                .map(|(k, n)| match k.as_str() {
                    "avg_ttl" if d.weight > 0 => format!("{k}={}", n / d.weight),
                    "avg_ttl" => format!("{k}=0"),
                    _ => format!("{k}={n}"),
                })
                .collect();
            (d.name, line.join(","))
        })
        .collect()
}

/// Merges the masters' INFO replies into one, in the client's protocol.
pub fn merge(parts: &[&Bytes], facts: &ProxyFacts, proto: Proto) -> Bytes {
    let all: Vec<Vec<Section>> = parts.iter().map(|p| parse(p)).collect();
    let Some(first) = all.first() else {
        return Bytes::from_static(b"$0\r\n\r\n");
    };
    let mut text = String::with_capacity(4096);
    for (name, fields) in first {
        let mut out: Vec<(String, String)> = Vec::with_capacity(fields.len());
        match name.as_str() {
            "Server" => {
                for (k, v) in fields {
                    let v = match k.as_str() {
                        // Valkey 8 calls it `server_mode`.
                        "redis_mode" | "server_mode" => "standalone".to_string(),
                        "process_id" => facts.pid.to_string(),
                        "tcp_port" => facts.port.to_string(),
                        "uptime_in_seconds" => facts.uptime_secs.to_string(),
                        "uptime_in_days" => (facts.uptime_secs / 86400).to_string(),
                        "executable" | "config_file" => String::new(),
                        _ => v.clone(),
                    };
                    out.push((k.clone(), v));
                }
                out.push((
                    "slotbridge_version".into(),
                    env!("CARGO_PKG_VERSION").into(),
                ));
                out.push(("slotbridge_masters".into(), facts.masters.to_string()));
            }
            "Clients" => {
                for (k, v) in fields {
                    let v = match k.as_str() {
                        "connected_clients" => facts.connected_clients.to_string(),
                        "tracking_clients" => facts.tracking_clients.to_string(),
                        "blocked_clients" => facts.blocked_clients.to_string(),
                        "pubsub_clients" => facts.pubsub_clients.to_string(),
                        "clients_in_timeout_table" => "0".into(),
                        // Keys partition over the masters, and a client's
                        // watched or blocking keys sit on one master each.
                        "watching_clients"
                        | "total_watched_keys"
                        | "total_blocking_keys"
                        | "total_blocking_keys_on_nokey" => match sum_field(&all, name, k) {
                            Some(n) => n.to_string(),
                            None => v.clone(),
                        },
                        // Valkey 8: the proxy's own pause, not the nodes'.
                        "paused_reason" => match facts.pause {
                            Some(_) => "client_pause".into(),
                            None => "none".into(),
                        },
                        "paused_actions" => match facts.pause {
                            Some((true, _)) => "all".into(),
                            Some((false, _)) => "write".into(),
                            None => "none".into(),
                        },
                        "paused_timeout_milliseconds" => {
                            facts.pause.map_or(0, |(_, ms)| ms).to_string()
                        }
                        // One server outside a cluster has no cluster bus.
                        "cluster_connections" => "0".into(),
                        _ => v.clone(),
                    };
                    out.push((k.clone(), v));
                }
            }
            "Replication" => {
                // What `WAIT` can count on: the replicas of the master with
                // the fewest. Their `slaveN` lines are left out: they give
                // cluster nodes' addresses, which clients that find
                // replicas in INFO (Nchan) would dial, bypassing the proxy.
                let fewest = min_field(&all, name, "connected_slaves").unwrap_or(0);
                let is_replica_line = |k: &str| {
                    k.strip_prefix("slave")
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                };
                for (k, v) in fields {
                    if is_replica_line(k) {
                        continue;
                    }
                    let v = match k.as_str() {
                        "role" => "master".into(),
                        "connected_slaves" => fewest.max(0).to_string(),
                        _ => v.clone(),
                    };
                    out.push((k.clone(), v));
                }
            }
            "Cluster" => out.push(("cluster_enabled".into(), "0".into())),
            "Keyspace" => out = keyspace(&all),
            "Keysizes" => out = keysizes(&all),
            "Persistence" => {
                for (k, v) in fields {
                    let any = |value: &str| {
                        (0..all.len()).any(|i| field(&all, i, name, k) == Some(value))
                    };
                    let v = match k.as_str() {
                        // One server is loading or saving while any master is.
                        "loading"
                        | "async_loading"
                        | "rdb_bgsave_in_progress"
                        | "aof_rewrite_in_progress"
                        | "aof_rewrite_scheduled"
                        | "module_fork_in_progress" => if any("1") { "1" } else { "0" }.to_string(),
                        "rdb_last_bgsave_status"
                        | "aof_last_bgrewrite_status"
                        | "aof_last_write_status" => {
                            if any("err") { "err" } else { v.as_str() }.to_string()
                        }
                        "rdb_changes_since_last_save" | "rdb_saves" => {
                            match sum_field(&all, name, k) {
                                Some(n) => n.to_string(),
                                None => v.clone(),
                            }
                        }
                        _ => v.clone(),
                    };
                    out.push((k.clone(), v));
                }
            }
            "Errorstats" | "Commandstats" => out = summed_stats(&all, name),
            "Memory" | "Stats" => {
                for (k, v) in fields {
                    let v = if let Some(base) = k.strip_suffix("_human") {
                        match sum_field(&all, name, base) {
                            Some(n) => human(n),
                            None => v.clone(),
                        }
                    } else if k == "cluster_connections" || k == "mem_cluster_links" {
                        // One server outside a cluster has no cluster bus.
                        "0".into()
                    } else if k == "total_connections_received" {
                        facts.total_connections.to_string()
                    } else if k == "total_commands_processed" {
                        facts.total_commands.to_string()
                    } else if k.starts_with("number_of_") {
                        // Scripts and libraries: the proxy loads each on
                        // every master, so one server has the most any has.
                        match max_field(&all, name, k) {
                            Some(n) => n.to_string(),
                            None => v.clone(),
                        }
                    } else if k == "pubsub_channels" || k == "pubsub_patterns" {
                        // Classic subscribers are on the home (the first
                        // master asked); the others hold the proxy's
                        // mirrors of keyspace-notification subscriptions.
                        v.clone()
                    } else if let Some(what) = k.strip_prefix("tracking_total_") {
                        // The clients' table is the proxy's, not the nodes'.
                        let t = &facts.tracking;
                        match what {
                            "keys" => t.keys.to_string(),
                            "items" => t.items.to_string(),
                            "prefixes" => t.prefixes.to_string(),
                            _ => v.clone(),
                        }
                    } else {
                        match sum_field(&all, name, k) {
                            Some(n) => n.to_string(),
                            None => v.clone(),
                        }
                    };
                    out.push((k.clone(), v));
                }
            }
            _ => out = fields.clone(),
        }
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        let _ = write!(text, "# {name}\r\n");
        for (k, v) in out {
            let _ = write!(text, "{k}:{v}\r\n");
        }
    }
    // Back from Latin-1 (see `parse`), byte for byte.
    let mut bytes: Vec<u8> = text
        .chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect();
    if !facts.rules.is_empty() && !bytes.is_empty() {
        // The proxy's own text: rule names in UTF-8.
        let line = format!(
            "\r\n# Colocation\r\ncolocate_rules:{}\r\n",
            facts.rules.join(",")
        );
        bytes.extend_from_slice(line.as_bytes());
    }
    crate::protocol::reply::text(proto, &bytes)
}

/// Redis 8's size bins (`INFO keysizes`), smallest first.
const KEYSIZE_BINS: [&str; 63] = [
    "0", "1", "2", "4", "8", "16", "32", "64", "128", "256", "512", "1K", "2K", "4K", "8K", "16K",
    "32K", "64K", "128K", "256K", "512K", "1M", "2M", "4M", "8M", "16M", "32M", "64M", "128M",
    "256M", "512M", "1G", "2G", "4G", "8G", "16G", "32G", "64G", "128G", "256G", "512G", "1T",
    "2T", "4T", "8T", "16T", "32T", "64T", "128T", "256T", "512T", "1P", "2P", "4P", "8P", "16P",
    "32P", "64P", "128P", "256P", "512P", "1E", "2E",
];

/// Redis 8's `Keysizes` histograms (`db0_distrib_strings_sizes:1=3,8=1`)
/// of one server holding all the masters' keys: each bin's count summed,
/// lines in Redis's order of the types (others after, as first seen),
/// bins smallest first (unknown ones after, as first seen).
fn keysizes(all: &[Vec<Section>]) -> Vec<(String, String)> {
    const TYPES: [&str; 5] = ["strings", "lists", "sets", "zsets", "hashes"];
    let mut lines = added_pairs(all, "Keysizes");
    let rank = |name: &str| {
        TYPES
            .iter()
            .position(|t| name.contains(&format!("_{t}_")))
            .unwrap_or(TYPES.len())
    };
    // Stable: lines of one rank (unknown types) keep their order.
    lines.sort_by_cached_key(|(name, _)| rank(name));
    let bin_rank = |label: &str| {
        KEYSIZE_BINS
            .iter()
            .position(|b| *b == label)
            .unwrap_or(KEYSIZE_BINS.len())
    };
    lines
        .into_iter()
        .map(|(name, mut bins)| {
            bins.sort_by_key(|(label, _)| bin_rank(label));
            let text: Vec<String> = bins
                .iter()
                .map(|(l, n)| format!("{l}={}", *n as u64))
                .collect();
            (name, text.join(","))
        })
        .collect()
}

/// Every master's `name:k1=n1,k2=n2` fields of `section`, added up per
/// name and key (each in the order first seen; a part without `=` counts
/// 0).
fn added_pairs(all: &[Vec<Section>], section: &str) -> Vec<(String, Vec<(String, f64)>)> {
    let mut sums: Vec<(String, Vec<(String, f64)>)> = Vec::new();
    for part in all {
        let Some((_, fields)) = part.iter().find(|(n, _)| n == section) else {
            continue;
        };
        for (name, value) in fields {
            let at = match sums.iter().position(|(n, _)| n == name) {
                Some(at) => at,
                None => {
                    sums.push((name.clone(), Vec::new()));
                    sums.len() - 1
                }
            };
            let entry = &mut sums[at].1;
            for kv in value.split(',') {
                let (k, n) = kv.split_once('=').unwrap_or((kv, "0"));
                let n: f64 = n.parse().unwrap_or(0.0);
                match entry.iter_mut().find(|(key, _)| key == k) {
                    Some((_, total)) => *total += n,
                    None => entry.push((k.to_string(), n)),
                }
            }
        }
    }
    sums
}

/// `errorstat_<code>:count=<n>` and `cmdstat_<name>:calls=..,usec=..,
/// usec_per_call=..,rejected_calls=..,failed_calls=..` of every master,
/// added up per name (in the order first seen); `usec_per_call` computed
/// again from the sums.
fn summed_stats(all: &[Vec<Section>], section: &str) -> Vec<(String, String)> {
    let stats = added_pairs(all, section);
    stats
        .into_iter()
        .map(|(name, fields)| {
            let get = |k: &str| fields.iter().find(|(key, _)| key == k).map(|f| f.1);
            let value = fields
                .iter()
                .map(|(k, n)| match k.as_str() {
                    "usec_per_call" => {
                        let calls = get("calls").unwrap_or(0.0);
                        let per = if calls > 0.0 {
                            get("usec").unwrap_or(0.0) / calls
                        } else {
                            0.0
                        };
                        format!("{k}={per:.2}")
                    }
                    _ => format!("{k}={}", *n as i64),
                })
                .collect::<Vec<_>>()
                .join(",");
            (name, value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::reply::put_bulk;
    use bytes::BytesMut;

    #[test]
    fn keyspace_sums_counts_and_weighs_the_average_ttl() {
        let master = |line: &str| -> Vec<Section> {
            vec![("Keyspace".into(), vec![("db0".into(), line.into())])]
        };
        let all = [
            master("keys=4,expires=4,avg_ttl=2454084,subexpiry=1"),
            master("keys=4,expires=4,avg_ttl=85647,subexpiry=0"),
            master("keys=2,expires=2,avg_ttl=85798,subexpiry=2"),
            // Expiring keys whose TTL the master has not estimated yet.
            master("keys=1,expires=1,avg_ttl=0,subexpiry=0"),
        ];
        assert_eq!(
            keyspace(&all),
            vec![(
                "db0".to_string(),
                "keys=11,expires=11,avg_ttl=1033052,subexpiry=3".to_string()
            )]
        );
        let none = [master("keys=3,expires=0,avg_ttl=0")];
        assert_eq!(keyspace(&none)[0].1, "keys=3,expires=0,avg_ttl=0");
    }

    fn bulk(s: &str) -> Bytes {
        let mut b = BytesMut::new();
        put_bulk(&mut b, s.as_bytes());
        b.freeze()
    }

    #[test]
    fn merges_two_masters() {
        let a = bulk("# Server\r\nredis_version:7.0.15\r\nredis_mode:cluster\r\ntcp_port:7000\r\n\r\n# Persistence\r\nloading:0\r\n\r\n# Memory\r\nused_memory:1024\r\nused_memory_human:1.00K\r\n\r\n# Cluster\r\ncluster_enabled:1\r\n\r\n# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=5\r\n");
        let b = bulk("# Server\r\nredis_version:7.0.15\r\nredis_mode:cluster\r\ntcp_port:7001\r\n\r\n# Persistence\r\nloading:0\r\n\r\n# Memory\r\nused_memory:1024\r\nused_memory_human:1.00K\r\n\r\n# Cluster\r\ncluster_enabled:1\r\n\r\n# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\n");
        let facts = ProxyFacts {
            pid: 42,
            port: 6380,
            masters: 2,
            ..Default::default()
        };
        let out = merge(&[&a, &b], &facts, Proto::Resp2);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.contains("redis_version:7.0.15\r\nredis_mode:standalone\r\ntcp_port:6380\r\n"));
        assert!(text.contains("# Persistence\r\nloading:0\r\n"));
        assert!(text.contains("used_memory:2048\r\nused_memory_human:2.00K\r\n"));
        // Scripts are loaded on every master: counted once.
        let s1 = bulk("# Memory\r\nused_memory_scripts:352\r\nnumber_of_cached_scripts:100\r\nnumber_of_libraries:1\r\n");
        let s2 = bulk("# Memory\r\nused_memory_scripts:352\r\nnumber_of_cached_scripts:99\r\nnumber_of_libraries:1\r\n");
        let scripts = merge(&[&s1, &s2], &facts, Proto::Resp2);
        let scripts = String::from_utf8(scripts.to_vec()).unwrap();
        assert!(
            scripts.contains("used_memory_scripts:704\r\nnumber_of_cached_scripts:100\r\nnumber_of_libraries:1\r\n"),
            "{scripts}"
        );
        assert!(text.contains("# Cluster\r\ncluster_enabled:0\r\n"));
        assert!(text.contains("# Keyspace\r\ndb0:keys=5,expires=1,avg_ttl=5\r\n"));
        // Error and command counts add up; names that are not UTF-8 stay.
        let e1 = bulk("# Errorstats\r\nerrorstat_ERR:count=2\r\n\r\n# Commandstats\r\ncmdstat_get:calls=2,usec=10,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n");
        let mut e2 = BytesMut::new();
        put_bulk(&mut e2, b"# Errorstats\r\nerrorstat_ERR:count=1\r\nerrorstat_\xff\xfeBAD:count=1\r\n\r\n# Commandstats\r\ncmdstat_get:calls=3,usec=20,usec_per_call=6.67,rejected_calls=1,failed_calls=0\r\n");
        let e2 = e2.freeze();
        let out = merge(&[&e1, &e2], &facts, Proto::Resp2);
        let body = &out[out.iter().position(|&b| b == b'\n').unwrap() + 1..];
        assert_eq!(
            body,
            &b"# Errorstats\r\nerrorstat_ERR:count=3\r\nerrorstat_\xff\xfeBAD:count=1\r\n\r\n# Commandstats\r\ncmdstat_get:calls=5,usec=30,usec_per_call=6.00,rejected_calls=1,failed_calls=0\r\n\r\n"[..]
        );
        let r3 = merge(&[&a], &facts, Proto::Resp3);
        assert!(r3.starts_with(b"="));
        assert!(r3[..20].windows(4).any(|w| w == b"txt:"));
    }

    #[test]
    fn keysizes_add_up_every_masters_bins() {
        let a = bulk(
            "# Keysizes\r\ndb0_distrib_lists_items:1=2,16=1\r\ndb0_distrib_hashes_items:2=1\r\n",
        );
        let b = bulk("# Keysizes\r\ndb0_distrib_strings_sizes:8=1,1K=2\r\ndb0_distrib_lists_items:0=1,1=1,32=4\r\n");
        let empty = bulk("# Keysizes\r\n");
        let out = merge(&[&empty, &a, &b], &ProxyFacts::default(), Proto::Resp2);
        let body = &out[out.iter().position(|&b| b == b'\n').unwrap() + 1..];
        assert_eq!(
            std::str::from_utf8(body).unwrap(),
            "# Keysizes\r\ndb0_distrib_strings_sizes:8=1,1K=2\r\ndb0_distrib_lists_items:0=1,1=3,16=1,32=4\r\ndb0_distrib_hashes_items:2=1\r\n\r\n"
        );
        let out = merge(&[&empty, &empty], &ProxyFacts::default(), Proto::Resp2);
        assert!(out.ends_with(b"# Keysizes\r\n\r\n"));
    }

    #[test]
    fn clients_count_the_proxys_clients_and_every_masters_keys() {
        let c1 = bulk("# Clients\r\nconnected_clients:4\r\nblocked_clients:1\r\npubsub_clients:1\r\nwatching_clients:1\r\ntotal_watched_keys:2\r\ntotal_blocking_keys:1\r\ntotal_blocking_keys_on_nokey:0\r\npaused_reason:none\r\npaused_actions:none\r\npaused_timeout_milliseconds:0\r\n");
        let c2 = bulk("# Clients\r\nconnected_clients:3\r\nblocked_clients:2\r\npubsub_clients:1\r\nwatching_clients:2\r\ntotal_watched_keys:3\r\ntotal_blocking_keys:2\r\ntotal_blocking_keys_on_nokey:1\r\npaused_reason:none\r\npaused_actions:none\r\npaused_timeout_milliseconds:0\r\n");
        let mut facts = ProxyFacts {
            connected_clients: 9,
            blocked_clients: 3,
            pubsub_clients: 5,
            ..Default::default()
        };
        let text = |facts: &ProxyFacts| {
            let out = merge(&[&c1, &c2], facts, Proto::Resp2);
            let body = &out[out.iter().position(|&b| b == b'\n').unwrap() + 1..];
            String::from_utf8(body.to_vec()).unwrap()
        };
        assert_eq!(
            text(&facts),
            "# Clients\r\nconnected_clients:9\r\nblocked_clients:3\r\npubsub_clients:5\r\nwatching_clients:3\r\ntotal_watched_keys:5\r\ntotal_blocking_keys:3\r\ntotal_blocking_keys_on_nokey:1\r\npaused_reason:none\r\npaused_actions:none\r\npaused_timeout_milliseconds:0\r\n\r\n"
        );
        facts.pause = Some((false, 1500));
        assert!(text(&facts).ends_with(
            "paused_reason:client_pause\r\npaused_actions:write\r\npaused_timeout_milliseconds:1500\r\n\r\n"
        ));
        facts.pause = Some((true, 7));
        assert!(text(&facts).contains("paused_actions:all\r\npaused_timeout_milliseconds:7\r\n"));
    }
}
