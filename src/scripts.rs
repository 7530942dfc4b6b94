//! Script bodies the proxy has seen, so an `EVALSHA` that meets `NOSCRIPT`
//! on a node (after a failover, or on a node that joined later; Redis 7
//! does not replicate its script cache) can be retried after loading it.
//! Function libraries loaded through the proxy likewise, so an `FCALL` on a
//! master that joined after the `FUNCTION LOAD` (a node that replaced
//! another, or one added to scale out) loads them there and runs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use bytes::Bytes;

/// Most remembered scripts; the cache is cleared when it is full (apps use
/// a handful of scripts, so this bounds memory against abuse only).
pub const MAX_SCRIPTS: usize = 10_000;

/// SHA1 (lower-case hex) → body.
#[derive(Debug, Default)]
pub struct ScriptCache {
    by_sha: Mutex<HashMap<[u8; 40], Bytes>>,
    /// Client script SHA1 → SHA1 of its wrapped body (co-location rules).
    wrapped: Mutex<HashMap<[u8; 40], [u8; 40]>>,
    /// Function library name → code, as last loaded through the proxy,
    /// and the masters it was loaded on.
    libraries: Mutex<BTreeMap<Bytes, Library>>,
}

/// A function library loaded through the proxy.
#[derive(Debug)]
struct Library {
    code: Bytes,
    /// The masters (addresses) when it was loaded: a node among them that
    /// lacks it lost it on purpose (`FUNCTION DELETE`/`FLUSH` there).
    masters: Vec<std::sync::Arc<str>>,
}

/// Most remembered function libraries (bounds memory against abuse; apps
/// load a few).
pub const MAX_LIBRARIES: usize = 1_000;

/// The library name in the first line of a function library's code
/// (`#!lua name=mylib`).
pub fn library_name(code: &[u8]) -> Option<&[u8]> {
    let first = code.split(|&b| b == b'\n').next()?;
    let first = first.strip_prefix(b"#!")?;
    first
        .split(|b| b.is_ascii_whitespace())
        .find_map(|word| word.strip_prefix(b"name="))
        .filter(|name| !name.is_empty())
}

/// Lower-case hex SHA1 of a script body, as Redis names scripts.
pub fn sha1_hex(body: &[u8]) -> [u8; 40] {
    let digest = sha1_smol::Sha1::from(body).digest().bytes();
    let mut out = [0u8; 40];
    for (i, b) in digest.iter().enumerate() {
        out[i * 2] = HEX[(b >> 4) as usize];
        out[i * 2 + 1] = HEX[(b & 15) as usize];
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl ScriptCache {
    /// Remembers a body (no-op when already known).
    pub fn remember(&self, body: &Bytes) {
        let sha = sha1_hex(body);
        let mut map = self.by_sha.lock().unwrap_or_else(|p| p.into_inner());
        if map.contains_key(&sha) {
            return;
        }
        if map.len() >= MAX_SCRIPTS {
            map.clear();
        }
        map.insert(sha, body.clone());
    }

    /// The SHA1 of the wrapped form of the script with client SHA1 `sha`,
    /// wrapping it (and remembering the wrapped body) on first use.
    pub fn wrapped_sha(
        &self,
        sha: [u8; 40],
        body: &[u8],
        wrap: impl FnOnce(&[u8]) -> Vec<u8>,
    ) -> [u8; 40] {
        if let Some(w) = self
            .wrapped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&sha)
        {
            return *w;
        }
        let wrapped = Bytes::from(wrap(body));
        let wsha = sha1_hex(&wrapped);
        self.remember(&wrapped);
        let mut map = self.wrapped.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_SCRIPTS {
            map.clear();
        }
        map.insert(sha, wsha);
        wsha
    }

    /// Forgets the script with this SHA1 (a node refused its body: it does
    /// not compile), and its wrapped form or the client body it wraps.
    pub fn forget(&self, sha: &[u8; 40]) {
        let mut gone = vec![*sha];
        self.wrapped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|client, wrapped| {
                let hit = client == sha || wrapped == sha;
                if hit {
                    gone.extend([*client, *wrapped]);
                }
                !hit
            });
        let mut map = self.by_sha.lock().unwrap_or_else(|p| p.into_inner());
        for s in &gone {
            map.remove(s);
        }
    }

    /// Whether the body of the script with this SHA1 (any case) is known,
    /// so that an `EVALSHA` of it succeeds on any node.
    pub fn knows(&self, sha: &[u8]) -> bool {
        let Ok(key) = <[u8; 40]>::try_from(sha.to_ascii_lowercase()) else {
            return false;
        };
        self.by_sha
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&key)
    }

    /// Forgets every script, as `SCRIPT FLUSH` makes a server do.
    pub fn clear(&self) {
        self.by_sha
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.wrapped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Remembers a function library's code from `FUNCTION LOAD`, sent to
    /// `masters`. Without `REPLACE`, a library of that name already known
    /// is kept: the nodes refuse to load another over it.
    pub fn remember_library(&self, code: &Bytes, replace: bool, masters: Vec<std::sync::Arc<str>>) {
        let Some(name) = library_name(code) else {
            return;
        };
        let mut map = self.libraries.lock().unwrap_or_else(|p| p.into_inner());
        if !replace && map.contains_key(name) {
            return;
        }
        if map.len() >= MAX_LIBRARIES && !map.contains_key(name) {
            map.clear();
        }
        let library = Library {
            code: code.clone(),
            masters,
        };
        map.insert(Bytes::copy_from_slice(name), library);
    }

    /// Forgets a library (`FUNCTION DELETE`), or all (`FUNCTION FLUSH`).
    pub fn forget_libraries(&self, name: Option<&[u8]>) {
        let mut map = self.libraries.lock().unwrap_or_else(|p| p.into_inner());
        match name {
            Some(name) => {
                map.remove(name);
            }
            None => map.clear(),
        }
    }

    /// The code of every remembered library that was loaded before the
    /// master at `addr` was one (it joined later, so never got it).
    pub fn libraries_missing_on(&self, addr: &str) -> Vec<Bytes> {
        self.libraries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|lib| !lib.masters.iter().any(|m| &**m == addr))
            .map(|lib| lib.code.clone())
            .collect()
    }

    /// The body of a script by its SHA1 (any case).
    pub fn get(&self, sha: &[u8]) -> Option<Bytes> {
        let key: [u8; 40] = sha.to_ascii_lowercase().try_into().ok()?;
        self.by_sha
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_are_remembered_by_name() {
        let cache = ScriptCache::default();
        let v1 = Bytes::from_static(
            b"#!lua name=lib\nredis.register_function('f', function() return 1 end)",
        );
        let v2 = Bytes::from_static(
            b"#!lua  name=lib\nredis.register_function('f', function() return 2 end)",
        );
        let other = Bytes::from_static(
            b"#!lua name=other\nredis.register_function('g', function() return 3 end)",
        );
        let m = |addrs: &[&str]| -> Vec<std::sync::Arc<str>> {
            addrs.iter().map(|a| std::sync::Arc::from(*a)).collect()
        };
        cache.remember_library(&v1, false, m(&["a:1", "b:1"]));
        // Refused by the nodes without REPLACE: not remembered.
        cache.remember_library(&v2, false, m(&["a:1", "b:1"]));
        assert_eq!(cache.libraries_missing_on("c:1"), vec![v1.clone()]);
        cache.remember_library(&v2, true, m(&["a:1", "b:1"]));
        cache.remember_library(&other, false, m(&["a:1", "b:1", "c:1"]));
        cache.remember_library(&Bytes::from_static(b"return 1"), true, m(&[]));
        assert_eq!(cache.libraries_missing_on("c:1"), vec![v2]);
        assert_eq!(cache.libraries_missing_on("d:1").len(), 2);
        // A master it was loaded on lost it on purpose.
        assert!(cache.libraries_missing_on("a:1").is_empty());
        cache.forget_libraries(Some(b"lib"));
        assert_eq!(cache.libraries_missing_on("d:1"), vec![other]);
        cache.forget_libraries(None);
        assert!(cache.libraries_missing_on("d:1").is_empty());
        assert_eq!(library_name(b"#!lua name=x"), Some(&b"x"[..]));
        assert_eq!(library_name(b"#!lua name=\n"), None);
        assert_eq!(library_name(b"lua name=x"), None);
    }

    #[test]
    fn sha_matches_redis() {
        // redis-cli SCRIPT LOAD "return 1"
        assert_eq!(
            &sha1_hex(b"return 1"),
            b"e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
        let cache = ScriptCache::default();
        cache.remember(&Bytes::from_static(b"return 1"));
        assert_eq!(
            cache
                .get(b"E0E1F9FABFC9D4800C877A703B823AC0578FF8DB")
                .as_deref(),
            Some(&b"return 1"[..])
        );
        assert_eq!(cache.get(b"nope"), None);
    }
}
