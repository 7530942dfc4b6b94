//! Settings made with `CONFIG SET` through the proxy, carried to masters
//! that join later.
//!
//! One server keeps its settings; a cluster behind the proxy changes its
//! masters (a replica promoted by a failover, a master added to scale out)
//! and the newcomer never got the `CONFIG SET` the client sent. The proxy
//! remembers every parameter it set on all masters and sets it on each
//! master that was not one then (`notify-keyspace-events` is the one users
//! notice first: a promoted replica would publish no notifications).

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::protocol::reply;
use crate::protocol::scan::{bulk_body, children};

/// The most parameters remembered (Redis 7 has about 200).
const MAX_SETTINGS: usize = 1024;

/// Parameters that name one node's own addresses, files or identity: not
/// carried to another node, whatever the masters accepted.
const PER_NODE: &[&[u8]] = &[
    b"port",
    b"tls-port",
    b"bind",
    b"bind-source-addr",
    b"unixsocket",
    b"dir",
    b"logfile",
    b"pidfile",
    b"dbfilename",
    b"appendfilename",
    b"appenddirname",
    b"cluster-config-file",
    b"cluster-announce-ip",
    b"cluster-announce-hostname",
    b"replica-announce-ip",
    b"replica-announce-port",
    b"slave-announce-ip",
    b"slave-announce-port",
    b"tls-cert-file",
    b"tls-key-file",
    b"tls-client-cert-file",
    b"tls-client-key-file",
    b"tls-ca-cert-file",
    b"tls-ca-cert-dir",
    b"tls-dh-params-file",
];

/// A parameter to set on a master that lacks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carry {
    /// The parameter, lower case.
    pub name: Bytes,
    /// Its value.
    pub value: Bytes,
    /// The `CONFIG SET` that sets it.
    pub command: Bytes,
}

#[derive(Debug)]
struct Setting {
    /// The parameter, lower case.
    name: Bytes,
    value: Bytes,
    /// The masters that have it.
    masters: Vec<Arc<str>>,
}

/// The settings made through the proxy.
#[derive(Debug, Default)]
pub struct NodeSettings {
    settings: Mutex<Vec<Setting>>,
}

impl NodeSettings {
    /// Remembers the parameters of a `CONFIG SET` request (`raw`, the whole
    /// RESP array) that every one of `masters` accepted.
    pub fn remember(&self, raw: &[u8], masters: Vec<Arc<str>>) {
        let mut settings = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        for (name, value) in pairs(raw) {
            settings.retain(|s| s.name != name);
            if PER_NODE.contains(&&name[..]) || name.starts_with(b"cluster-announce-") {
                continue;
            }
            if settings.len() >= MAX_SETTINGS {
                settings.remove(0);
            }
            settings.push(Setting {
                name,
                value,
                masters: masters.clone(),
            });
        }
    }

    /// Forgets the parameters of a `CONFIG SET` request that not every
    /// master accepted: what each has is unknown.
    pub fn forget(&self, raw: &[u8]) {
        let mut settings = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        for (name, _) in pairs(raw) {
            settings.retain(|s| s.name != name);
        }
    }

    /// One `CONFIG SET` for each remembered parameter the master at `addr`
    /// does not have (one each: Redis refuses a whole `CONFIG SET` for one
    /// parameter it refuses).
    pub fn missing_on(&self, addr: &str) -> Vec<Carry> {
        let settings = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        settings
            .iter()
            .filter(|s| !s.masters.iter().any(|m| &**m == addr))
            .map(|s| Carry {
                name: s.name.clone(),
                value: s.value.clone(),
                command: reply::command([&b"CONFIG"[..], b"SET", &s.name, &s.value]),
            })
            .collect()
    }

    /// Whether no parameter is remembered.
    pub fn is_empty(&self) -> bool {
        self.settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// The node at `addr` restarted: it lost every parameter set at run
    /// time, so each is carried to it again while it is a master.
    pub fn restarted(&self, addr: &str) {
        let mut settings = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        for s in settings.iter_mut() {
            s.masters.retain(|m| &**m != addr);
        }
    }

    /// The master at `addr` has `carry`'s value now (or refused it for
    /// good: it is not asked again). If a client set the parameter again
    /// meanwhile, its `CONFIG SET` may have reached the node first and been
    /// overwritten by this older value: the new one is carried again.
    pub fn sent(&self, addr: &Arc<str>, carry: &Carry) {
        let mut settings = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        for s in settings.iter_mut().filter(|s| s.name == carry.name) {
            if s.value != carry.value {
                s.masters.retain(|m| m != addr);
            } else if !s.masters.contains(addr) {
                s.masters.push(addr.clone());
            }
        }
    }
}

/// The parameter names (lower case) and values of a `CONFIG SET` request.
fn pairs(raw: &[u8]) -> Vec<(Bytes, Bytes)> {
    let Some(parts) = children(raw) else {
        return Vec::new();
    };
    let args: Vec<&[u8]> = parts
        .iter()
        .filter_map(|&(s, e)| bulk_body(raw.get(s..e)?))
        .collect();
    if args.len() < 4 || args.len() != parts.len() || !args.len().is_multiple_of(2) {
        return Vec::new();
    }
    args[2..]
        .chunks(2)
        .filter_map(|pair| match pair {
            [name, value] => Some((
                Bytes::from(name.to_ascii_lowercase()),
                Bytes::copy_from_slice(value),
            )),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(args: &[&str]) -> Bytes {
        reply::command(args.iter().map(|a| a.as_bytes()))
    }

    #[test]
    fn carries_each_parameter_to_masters_that_lack_it() {
        let s = NodeSettings::default();
        let a: Arc<str> = Arc::from("a:1");
        let b: Arc<str> = Arc::from("b:1");
        let two = [
            "config",
            "set",
            "Notify-Keyspace-Events",
            "KEA",
            "maxmemory",
            "1mb",
        ];
        s.remember(&set(&two), vec![a.clone()]);
        assert!(s.missing_on("a:1").is_empty());
        let carry = |name: &str, value: &str| Carry {
            name: Bytes::copy_from_slice(name.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            command: set(&["CONFIG", "SET", name, value]),
        };
        let keyspace = carry("notify-keyspace-events", "KEA");
        let memory = |v: &str| carry("maxmemory", v);
        assert_eq!(s.missing_on("b:1"), vec![keyspace.clone(), memory("1mb")]);
        // A later value replaces the parameter's, set where it was sent.
        s.remember(
            &set(&["CONFIG", "SET", "maxmemory", "2mb"]),
            vec![a, b.clone()],
        );
        assert_eq!(s.missing_on("b:1"), vec![keyspace.clone()]);
        s.sent(&b, &keyspace);
        assert!(s.missing_on("b:1").is_empty());
        // A value set again while an older one was carried: carried again.
        s.sent(&b, &memory("1mb"));
        assert_eq!(s.missing_on("b:1"), vec![memory("2mb")]);
        s.sent(&b, &memory("2mb"));
        assert!(s.missing_on("b:1").is_empty());
        assert_eq!(s.missing_on("c:1"), vec![keyspace, memory("2mb")]);
        // A node's own address or files are not carried.
        s.remember(
            &set(&["CONFIG", "SET", "dir", "/d", "Port", "7000"]),
            vec![],
        );
        assert_eq!(s.missing_on("c:1").len(), 2);
        // Not accepted everywhere: forgotten.
        s.forget(&set(&["CONFIG", "SET", "MAXMEMORY", "3mb"]));
        assert_eq!(s.missing_on("c:1").len(), 1);
        // Malformed requests are ignored.
        s.remember(&set(&["CONFIG", "SET", "x"]), vec![]);
        s.remember(b"*1\r\n:1\r\n", vec![]);
        assert!(s.missing_on("b:1").is_empty());
        // A restarted node lost them all.
        assert!(!s.is_empty());
        s.restarted("b:1");
        assert_eq!(s.missing_on("b:1").len(), 1);
    }
}
