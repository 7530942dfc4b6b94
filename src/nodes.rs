//! What the proxy knows of the software its nodes run (learned from one
//! master's `INFO server` at start-up), so that its own replies carry the
//! fields and words of that version: Redis 7.0, 7.2, 7.4, 8.0, or Valkey,
//! which reports `redis_version:7.2.4` for compatibility and its own
//! name and version beside it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The nodes' `redis_version` as `major << 16 | minor`; `u32::MAX` until
/// it is known (the proxy then shows the newest servers' fields).
static REDIS_VERSION: AtomicU32 = AtomicU32::new(u32::MAX);

/// The nodes' `valkey_version`, packed the same way; 0 for Redis.
static VALKEY_VERSION: AtomicU32 = AtomicU32::new(0);

/// `HELLO`'s `server` and `version`: `redis` and `redis_version`, or
/// Valkey's `server_name` and `valkey_version`.
static IDENTITY: OnceLock<(String, String)> = OnceLock::new();

/// Records what a node's `INFO server` text says (once; later calls only
/// update the version numbers).
pub fn record(info: &str) {
    let field = |name: &str| {
        info.split("\r\n")
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
    };
    let Some(redis) = field("redis_version") else {
        return;
    };
    REDIS_VERSION.store(pack(redis), Ordering::Relaxed);
    crate::acl::set_nodes_version(redis);
    let identity = match (field("server_name"), field("valkey_version")) {
        (Some(name), Some(valkey)) => {
            VALKEY_VERSION.store(pack(valkey), Ordering::Relaxed);
            (name.to_string(), valkey.to_string())
        }
        _ => ("redis".to_string(), redis.to_string()),
    };
    let _ = IDENTITY.set(identity);
}

/// Whether the nodes run Redis `major.minor` or later by their
/// `redis_version` (Valkey says 7.2), also while it is not known yet.
pub fn at_least(major: u32, minor: u32) -> bool {
    REDIS_VERSION.load(Ordering::Relaxed) >= (major << 16 | minor)
}

/// Whether the nodes run Valkey `major.minor` or later.
pub fn valkey_at_least(major: u32, minor: u32) -> bool {
    VALKEY_VERSION.load(Ordering::Relaxed) >= (major << 16 | minor)
}

/// `HELLO`'s `server` and `version`; `None` until known.
pub fn identity() -> Option<&'static (String, String)> {
    IDENTITY.get()
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
fn pack(version: &str) -> u32 {
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
}
