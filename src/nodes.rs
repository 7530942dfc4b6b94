//! What the proxy knows of the software its nodes run, so that its own
//! replies carry the fields and words of that version: Redis 7.0, 7.2,
//! 7.4, 8.0, or Valkey, which reports `redis_version:7.2.4` for
//! compatibility and its own name and version beside it. Learned from the
//! first master at start-up and again whenever the topology changes and
//! its version differs (a rolling upgrade); a cluster of mixed versions
//! is described by its first master's.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::RwLock;

use bytes::Bytes;

/// Redis 7.0 (the built-in command table's), packed: assumed until the
/// nodes' version is known.
const ASSUMED: u32 = 7 << 16;

/// The nodes' `redis_version` as `major << 16 | minor`.
static REDIS_VERSION: AtomicU32 = AtomicU32::new(ASSUMED);

/// Set once the nodes' version is known.
static KNOWN: AtomicBool = AtomicBool::new(false);

/// The nodes' `valkey_version`, packed the same way; 0 for Redis.
static VALKEY_VERSION: AtomicU32 = AtomicU32::new(0);

/// What `HELLO` and `INFO` report of the nodes.
#[derive(Debug, Clone)]
struct Facts {
    /// `redis_version` (also Valkey's compatibility version).
    redis_version: String,
    /// `HELLO`'s `server` and `version`, as the nodes' own `HELLO` says.
    server: String,
    version: String,
    /// Their `MODULE LIST` (RESP2).
    modules: Bytes,
}

static FACTS: RwLock<Option<Facts>> = RwLock::new(None);

/// Records what a node's `INFO server` text, `HELLO` reply (RESP2, its
/// fields as a flat array) and `MODULE LIST` reply say. Returns `false`
/// when the text has no `redis_version` (nothing is recorded then).
pub fn record(info: &str, hello: &[u8], modules: &[u8]) -> bool {
    let field = |name: &str| {
        info.split("\r\n")
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
    };
    let Some(redis) = field("redis_version") else {
        return false;
    };
    REDIS_VERSION.store(pack(redis), Ordering::Relaxed);
    VALKEY_VERSION.store(field("valkey_version").map_or(0, pack), Ordering::Relaxed);
    KNOWN.store(true, Ordering::Relaxed);
    // HELLO names the server as the node presents itself (Valkey as
    // "redis" 7.2.4 with extended-redis-compatibility on).
    let (server, version) = hello_identity(hello).unwrap_or_else(|| {
        match (field("server_name"), field("valkey_version")) {
            (Some(name), Some(valkey)) => (name.to_string(), valkey.to_string()),
            _ => ("redis".to_string(), redis.to_string()),
        }
    });
    let modules = if modules.starts_with(b"*") {
        Bytes::copy_from_slice(modules)
    } else {
        Bytes::from_static(b"*0\r\n")
    };
    let facts = Facts {
        redis_version: redis.to_string(),
        server,
        version,
        modules,
    };
    *FACTS.write().unwrap_or_else(|e| e.into_inner()) = Some(facts);
    true
}

/// `server` and `version` of a RESP2 `HELLO` reply.
fn hello_identity(hello: &[u8]) -> Option<(String, String)> {
    let fields = crate::protocol::scan::children(hello)?;
    let text = |i: usize| -> Option<String> {
        let (s, e) = *fields.get(i)?;
        let body = crate::protocol::scan::bulk_body(&hello[s..e])?;
        Some(String::from_utf8_lossy(body).into_owned())
    };
    let mut found = (None, None);
    for i in (0..fields.len()).step_by(2) {
        match text(i).as_deref() {
            Some("server") => found.0 = text(i + 1),
            Some("version") => found.1 = text(i + 1),
            _ => {}
        }
    }
    Some((found.0?, found.1?))
}

/// Whether the nodes run Redis `major.minor` or later by their
/// `redis_version` (Valkey says 7.2); 7.0 is assumed until it is known.
pub fn at_least(major: u32, minor: u32) -> bool {
    REDIS_VERSION.load(Ordering::Relaxed) >= (major << 16 | minor)
}

/// Whether the nodes are known to run Redis 7.0 or older, whose
/// subcommands the built-in table all knows (before the version is known,
/// a subcommand the table lacks goes to the nodes, which answer it).
pub fn table_covers() -> bool {
    KNOWN.load(Ordering::Relaxed) && !at_least(7, 1)
}

/// Whether the nodes run Valkey `major.minor` or later.
pub fn valkey_at_least(major: u32, minor: u32) -> bool {
    VALKEY_VERSION.load(Ordering::Relaxed) >= (major << 16 | minor)
}

/// The error of a command that may not be queued in `MULTI` (`fullname`:
/// `save`, `client|reply`), without the `-`: Valkey 9 names it.
pub fn no_multi_error(fullname: &str) -> String {
    if valkey_at_least(9, 0) {
        format!("ERR Command '{fullname}' not allowed inside a transaction")
    } else {
        "ERR Command not allowed inside a transaction".to_string()
    }
}

/// The nodes' `redis_version`, or `None` until it is known.
pub fn redis_version() -> Option<String> {
    let facts = FACTS.read().unwrap_or_else(|e| e.into_inner());
    facts.as_ref().map(|f| f.redis_version.clone())
}

/// `HELLO`'s `server` and `version`; `None` until known.
pub fn identity() -> Option<(String, String)> {
    let facts = FACTS.read().unwrap_or_else(|e| e.into_inner());
    facts
        .as_ref()
        .map(|f| (f.server.clone(), f.version.clone()))
}

/// The nodes' `MODULE LIST` (RESP2), `*0` until known.
pub fn modules() -> Bytes {
    let facts = FACTS.read().unwrap_or_else(|e| e.into_inner());
    facts
        .as_ref()
        .map_or(Bytes::from_static(b"*0\r\n"), |f| f.modules.clone())
}

/// `NOSCRIPT`'s text, without the `-` (Valkey 8 dropped "Please use
/// EVAL.").
pub fn noscript_text() -> &'static str {
    if valkey_at_least(8, 0) {
        "NOSCRIPT No matching script."
    } else {
        "NOSCRIPT No matching script. Please use EVAL."
    }
}

/// `major << 16 | minor` of a version string (`"7.2.4"`).
pub(crate) fn pack(version: &str) -> u32 {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0).min(0xffff);
    let minor = parts.next().unwrap_or(0).min(0xffff);
    major << 16 | minor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_pack_in_order() {
        assert!(pack("7.2.4") > pack("7.0.15"));
        assert!(pack("8.0.2") > pack("7.4.0"));
        assert!(pack("10.0.0") > pack("8.1.1"));
        assert_eq!(pack("garbage"), 0);
    }

    #[test]
    fn hello_names_the_server() {
        let hello = b"*14\r\n$6\r\nserver\r\n$6\r\nvalkey\r\n$7\r\nversion\r\n$5\r\n8.1.1\r\n$5\r\nproto\r\n:2\r\n$2\r\nid\r\n:3\r\n$4\r\nmode\r\n$7\r\ncluster\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n";
        assert_eq!(
            hello_identity(hello),
            Some(("valkey".to_string(), "8.1.1".to_string()))
        );
        assert_eq!(hello_identity(b"-ERR unknown command\r\n"), None);
    }
}
