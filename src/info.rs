//! `INFO` rebuilt from all masters so that the proxy looks like one server.
//!
//! Clients decide behaviour from INFO (ioredis waits for `loading:0`, apps
//! read `redis_version`, test suites read `redis_mode` and
//! `cluster_enabled`), so the answer keeps the real servers' version and
//! fields, sums what adds up across masters (keys, memory, counters), and
//! presents a standalone master with the proxy's own clients.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::reply::{put_bulk, Proto};
use crate::protocol::request::{parse_i64, put_decimal};

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
    /// Clients with `CLIENT TRACKING` on.
    pub tracking_clients: usize,
    /// Keys the proxy tracks for them.
    pub tracking_keys: usize,
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
    for line in String::from_utf8_lossy(text).split("\r\n") {
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

fn keyspace(all: &[Vec<Section>]) -> Vec<(String, String)> {
    let mut dbs: Vec<(String, i64, i64, i64)> = Vec::new();
    for part in all {
        let Some((_, fields)) = part.iter().find(|(n, _)| n == "Keyspace") else {
            continue;
        };
        for (db, v) in fields {
            let mut keys = 0;
            let mut expires = 0;
            let mut ttl = 0;
            for kv in v.split(',') {
                let (k, n) = kv.split_once('=').unwrap_or((kv, "0"));
                let n = parse_i64(n.as_bytes()).unwrap_or(0);
                match k {
                    "keys" => keys = n,
                    "expires" => expires = n,
                    "avg_ttl" => ttl = n,
                    _ => {}
                }
            }
            match dbs.iter_mut().find(|d| &d.0 == db) {
                Some(d) => {
                    d.1 = d.1.saturating_add(keys);
                    d.2 = d.2.saturating_add(expires);
                    d.3 = d.3.max(ttl);
                }
                None => dbs.push((db.clone(), keys, expires, ttl)),
            }
        }
    }
    dbs.into_iter()
        .map(|(db, k, e, t)| (db, format!("keys={k},expires={e},avg_ttl={t}")))
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
                        "redis_mode" => "standalone".to_string(),
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
                        "blocked_clients" | "clients_in_timeout_table" => "0".into(),
                        _ => v.clone(),
                    };
                    out.push((k.clone(), v));
                }
            }
            "Replication" => {
                for (k, v) in fields {
                    let v = match k.as_str() {
                        "role" => "master".into(),
                        "connected_slaves" => "0".into(),
                        _ => v.clone(),
                    };
                    if k.starts_with("slave") && k != "slave_read_repl_offset" {
                        continue;
                    }
                    out.push((k.clone(), v));
                }
            }
            "Cluster" => out.push(("cluster_enabled".into(), "0".into())),
            "Keyspace" => out = keyspace(&all),
            "Persistence" => {
                for (k, v) in fields {
                    let v = match k.as_str() {
                        "loading" | "async_loading" => {
                            let any = (0..all.len()).any(|i| field(&all, i, name, k) == Some("1"));
                            if any { "1" } else { "0" }.to_string()
                        }
                        _ => v.clone(),
                    };
                    out.push((k.clone(), v));
                }
            }
            "Memory" | "Stats" => {
                for (k, v) in fields {
                    let v = if let Some(base) = k.strip_suffix("_human") {
                        match sum_field(&all, name, base) {
                            Some(n) => human(n),
                            None => v.clone(),
                        }
                    } else if k == "total_connections_received" {
                        facts.total_connections.to_string()
                    } else if k == "total_commands_processed" {
                        facts.total_commands.to_string()
                    } else if k == "tracking_total_keys" {
                        // The clients' table is the proxy's, not the nodes'.
                        facts.tracking_keys.to_string()
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
    if !facts.rules.is_empty() && !text.is_empty() {
        let _ = write!(
            text,
            "\r\n# Colocation\r\ncolocate_rules:{}\r\n",
            facts.rules.join(",")
        );
    }
    let mut buf = BytesMut::with_capacity(text.len() + 32);
    match proto {
        Proto::Resp2 => put_bulk(&mut buf, text.as_bytes()),
        Proto::Resp3 => {
            buf.put_u8(b'=');
            put_decimal(&mut buf, text.len() as u64 + 4);
            buf.put_slice(b"\r\ntxt:");
            buf.put_slice(text.as_bytes());
            buf.put_slice(b"\r\n");
        }
    }
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(text.contains("# Cluster\r\ncluster_enabled:0\r\n"));
        assert!(text.contains("# Keyspace\r\ndb0:keys=5,expires=1,avg_ttl=5\r\n"));
        let r3 = merge(&[&a], &facts, Proto::Resp3);
        assert!(r3.starts_with(b"="));
        assert!(r3[..20].windows(4).any(|w| w == b"txt:"));
    }
}
