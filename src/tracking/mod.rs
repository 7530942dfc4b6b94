//! Client-side caching (`CLIENT TRACKING`) through the proxy.
//!
//! A tracking client caches what it reads and expects an `invalidate` push
//! when a key it read changes. The proxy's backend connections are shared,
//! so the servers cannot tell the clients apart. Instead:
//!
//! - A tracked read leaves for its master on a shared RESP3 connection
//!   with `CLIENT CACHING YES` right before it (the connection turned
//!   tracking on in `OPTIN` mode when it first carried one), so the server
//!   remembers its keys for that connection. Other clients' reads on the
//!   same connection are not tracked.
//! - The proxy remembers, per key, which of its clients read it: the
//!   [`Tracker`], filled when the read is sent.
//! - When a server pushes `invalidate` on a connection, every client that
//!   read one of the keys gets the push: at once, or, while one of its
//!   reads for the cache is still owed its reply, **right after that
//!   reply** (the session's `tell`), so a value read before the change can
//!   never reach the client after the push that says it is stale.
//! - A `MULTI` the client tracks is sent with `CLIENT CACHING YES` before
//!   it, which Redis applies to the whole transaction.
//! - Whenever a read the client tracks cannot be (a blocking read, a
//!   `WATCH` or per-slot transaction, a redirected or retried read), or the
//!   servers may have forgotten keys without saying so (a tracking
//!   connection closed), the client gets a null `invalidate` after the
//!   reply: flush everything. More invalidations than needed cost a cache
//!   miss; fewer would serve stale data.
//!
//! Supported: RESP3 clients in the default, `OPTIN` and `OPTOUT` modes
//! (`NOLOOP` is accepted, and a client's own writes invalidate its keys as
//! without it). `BCAST` and `REDIRECT` are refused with an error.

pub mod options;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};

use crate::client::registry::ClientInfo;
use crate::protocol::reply::{put_bulk, put_header};
use crate::protocol::scan::children;

pub use options::{Mode, Tracking};

/// Keys waiting for one client beyond this are replaced by one flush.
const MAX_PENDING_KEYS: usize = 10_000;

/// A key's list of readers is cleared of clients gone from this length on.
const PRUNE_AT: usize = 16;

/// What a tracking client is to be told.
#[derive(Debug, PartialEq, Eq)]
pub enum Notice {
    /// Every key it may have cached changed (a null `invalidate`).
    All,
    /// These keys (as stored on the servers) changed.
    Keys(Vec<Bytes>),
}

/// Which proxy clients read which keys, and what each is still to be told.
#[derive(Debug)]
pub struct Tracker {
    table: Mutex<Table>,
    /// Clients with tracking on (read without the lock).
    clients: AtomicUsize,
    max_keys: AtomicUsize,
}

#[derive(Debug, Default)]
struct Table {
    /// Stored key → ids of the clients that read it since its last
    /// invalidation (ids of clients gone since are skipped when it fires).
    keys: HashMap<Bytes, Vec<u64>>,
    clients: HashMap<u64, Client>,
}

#[derive(Debug)]
struct Client {
    info: Arc<ClientInfo>,
    /// Keys to tell the client about.
    pending: Vec<Bytes>,
    /// Tell it to flush everything instead.
    all: bool,
}

impl Tracker {
    /// An empty tracker remembering at most `max_keys` keys (0: no limit);
    /// past it, the oldest-looking key is invalidated to make room.
    pub fn new(max_keys: usize) -> Self {
        Tracker {
            table: Mutex::new(Table::default()),
            clients: AtomicUsize::new(0),
            max_keys: AtomicUsize::new(max_keys),
        }
    }

    /// Changes the key limit (configuration reload).
    pub fn set_max_keys(&self, max_keys: usize) {
        self.max_keys.store(max_keys, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether any client has tracking on.
    pub fn active(&self) -> bool {
        self.clients.load(Ordering::Relaxed) > 0
    }

    /// Keys remembered (`INFO`: `tracking_total_keys`, which shows the
    /// proxy's table rather than the nodes').
    pub fn keys(&self) -> usize {
        if !self.active() {
            return 0;
        }
        self.lock().keys.len()
    }

    /// Clients with tracking on (`INFO`: `tracking_clients`).
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Turns tracking on for a client.
    pub fn enable(&self, info: &Arc<ClientInfo>) {
        let mut table = self.lock();
        table.clients.entry(info.id).or_insert_with(|| Client {
            info: info.clone(),
            pending: Vec::new(),
            all: false,
        });
        self.clients.store(table.clients.len(), Ordering::Relaxed);
        info.set_tracking(true);
    }

    /// Turns tracking off for a client (also when it disconnects). Its
    /// entries under keys are dropped lazily, when those keys fire.
    pub fn disable(&self, id: u64) {
        if !self.active() {
            return;
        }
        let mut table = self.lock();
        if let Some(client) = table.clients.remove(&id) {
            client.info.set_tracking(false);
        }
        self.clients.store(table.clients.len(), Ordering::Relaxed);
    }

    /// Records that client `id` read `keys` (as stored on the servers).
    pub fn remember<'a>(&self, id: u64, keys: impl Iterator<Item = &'a [u8]>) {
        let mut wake = Vec::new();
        {
            let mut table = self.lock();
            let max = self.max_keys.load(Ordering::Relaxed);
            let Table {
                keys: table_keys,
                clients,
            } = &mut *table;
            for key in keys {
                if let Some(ids) = table_keys.get_mut(key) {
                    if !ids.contains(&id) {
                        if ids.len() >= PRUNE_AT && ids.len().is_power_of_two() {
                            // Readers that left stay until the key fires;
                            // a hot key read by many short-lived clients
                            // drops them as its list grows.
                            ids.retain(|i| clients.contains_key(i));
                        }
                        ids.push(id);
                    }
                    continue;
                }
                while max > 0 && table_keys.len() >= max {
                    let Some(old) = table_keys.keys().next().cloned() else {
                        break;
                    };
                    if let Some(ids) = table_keys.remove(&old) {
                        tell(clients, &old, &ids, &mut wake);
                    }
                }
                table_keys.insert(Bytes::copy_from_slice(key), vec![id]);
            }
        }
        notify(wake);
    }

    /// A server said `keys` changed.
    pub fn invalidate(&self, keys: &[&[u8]]) {
        let mut wake = Vec::new();
        {
            let mut table = self.lock();
            for key in keys {
                if let Some((key, ids)) = table.keys.remove_entry(*key) {
                    tell(&mut table.clients, &key, &ids, &mut wake);
                }
            }
        }
        notify(wake);
    }

    /// Every client is to flush its cache: a server flushed its data, or
    /// may have forgotten keys (its tracking connection closed).
    pub fn invalidate_all(&self) {
        if !self.active() {
            return;
        }
        let mut wake = Vec::new();
        {
            let mut table = self.lock();
            table.keys.clear();
            for client in table.clients.values_mut() {
                client.all = true;
                client.pending = Vec::new();
                wake.push(client.info.clone());
            }
        }
        notify(wake);
    }

    /// What client `id` is to be told now, if anything.
    pub fn take(&self, id: u64) -> Option<Notice> {
        let mut table = self.lock();
        let client = table.clients.get_mut(&id)?;
        if std::mem::take(&mut client.all) {
            client.pending = Vec::new();
            return Some(Notice::All);
        }
        if client.pending.is_empty() {
            return None;
        }
        Some(Notice::Keys(std::mem::take(&mut client.pending)))
    }
}

/// Queues `key` for the clients `ids` that are still tracking.
fn tell(
    clients: &mut HashMap<u64, Client>,
    key: &Bytes,
    ids: &[u64],
    wake: &mut Vec<Arc<ClientInfo>>,
) {
    {
        for id in ids {
            let Some(client) = clients.get_mut(id) else {
                continue;
            };
            if !client.all {
                if client.pending.len() >= MAX_PENDING_KEYS {
                    client.all = true;
                    client.pending = Vec::new();
                } else {
                    client.pending.push(key.clone());
                }
            }
            wake.push(client.info.clone());
        }
    }
}

/// Tells each client's task that it has something to write.
fn notify(clients: Vec<Arc<ClientInfo>>) {
    for info in clients {
        info.notify();
    }
}

/// The RESP3 push for `notice`, with each key shown as `decode` names it.
pub fn push_frame<'a>(notice: &'a Notice, decode: impl Fn(&'a [u8]) -> &'a [u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(32);
    put_header(&mut out, b'>', 2);
    put_bulk(&mut out, b"invalidate");
    match notice {
        Notice::All => out.extend_from_slice(b"_\r\n"),
        Notice::Keys(keys) => {
            // A key stored under a co-location tag is named as the proxy
            // names it everywhere (KEYS, SCAN): as the client wrote it.
            put_header(&mut out, b'*', keys.len());
            for key in keys {
                put_bulk(&mut out, decode(key));
            }
        }
    }
    out.freeze()
}

/// An `invalidate` push from a server.
#[derive(Debug, PartialEq, Eq)]
pub enum Invalidation<'a> {
    /// Everything (`FLUSHALL`, `FLUSHDB`).
    All,
    /// These keys.
    Keys(Vec<&'a [u8]>),
}

/// Reads a push frame from a server; `None` for other pushes.
pub fn parse_push(frame: &[u8]) -> Option<Invalidation<'_>> {
    let kids = children(frame)?;
    let (&(ks, ke), &(vs, ve)) = match kids.as_slice() {
        [kind, value] if frame.first() == Some(&b'>') => (kind, value),
        _ => return None,
    };
    if crate::protocol::scan::bulk_body(frame.get(ks..ke)?)? != b"invalidate" {
        return None;
    }
    let value = frame.get(vs..ve)?;
    let keys = children(value).and_then(|kids| {
        kids.into_iter()
            .map(|(s, e)| value.get(s..e).and_then(crate::protocol::scan::bulk_body))
            .collect::<Option<Vec<_>>>()
    });
    // Null (a flush), or a list the proxy cannot read: flush, as missing
    // one would leave stale values cached.
    Some(keys.map_or(Invalidation::All, Invalidation::Keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u64) -> Arc<ClientInfo> {
        Arc::new(ClientInfo::new(id, "127.0.0.1:1".parse().unwrap(), None))
    }

    #[test]
    fn reads_are_invalidated_once_per_reader() {
        let t = Tracker::new(0);
        let (a, b) = (info(1), info(2));
        t.enable(&a);
        t.enable(&b);
        t.remember(1, [&b"k"[..], b"j"].into_iter());
        t.remember(2, [&b"k"[..]].into_iter());
        t.remember(1, [&b"k"[..]].into_iter());
        t.invalidate(&[b"k", b"unknown"]);
        assert!(a.take_notice() && b.take_notice());
        assert_eq!(t.take(1), Some(Notice::Keys(vec![Bytes::from("k")])));
        assert_eq!(t.take(2), Some(Notice::Keys(vec![Bytes::from("k")])));
        assert_eq!(t.take(1), None);
        // Fired once: a second change is not told until it is read again.
        t.invalidate(&[b"k"]);
        assert_eq!(t.take(1), None);
        t.invalidate(&[b"j"]);
        assert_eq!(t.take(1), Some(Notice::Keys(vec![Bytes::from("j")])));
        assert_eq!(t.take(2), None);
    }

    #[test]
    fn disabled_clients_are_skipped_and_flushes_reach_everyone() {
        let t = Tracker::new(0);
        let (a, b) = (info(1), info(2));
        t.enable(&a);
        t.enable(&b);
        t.remember(1, [&b"k"[..]].into_iter());
        t.disable(1);
        assert!(!a.is_tracking());
        t.invalidate(&[b"k"]);
        assert!(!a.take_notice());
        assert_eq!(t.take(1), None);
        assert_eq!(t.clients(), 1);
        t.remember(2, [&b"x"[..]].into_iter());
        t.invalidate_all();
        assert_eq!(t.take(2), Some(Notice::All));
        assert_eq!(t.keys(), 0);
    }

    #[test]
    fn the_key_limit_invalidates_to_make_room() {
        let t = Tracker::new(2);
        let a = info(1);
        t.enable(&a);
        t.remember(1, [&b"a"[..], b"b", b"c"].into_iter());
        assert_eq!(t.keys(), 2);
        match t.take(1) {
            Some(Notice::Keys(keys)) => assert_eq!(keys.len(), 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn push_frames_match_redis() {
        let keys = Notice::Keys(vec![Bytes::from("k1"), Bytes::from("{g}k2")]);
        fn strip(k: &[u8]) -> &[u8] {
            k.strip_prefix(b"{g}").unwrap_or(k)
        }
        assert_eq!(
            &push_frame(&keys, strip)[..],
            &b">2\r\n$10\r\ninvalidate\r\n*2\r\n$2\r\nk1\r\n$2\r\nk2\r\n"[..]
        );
        assert_eq!(
            &push_frame(&Notice::All, |k| k)[..],
            b">2\r\n$10\r\ninvalidate\r\n_\r\n"
        );
    }

    #[test]
    fn server_pushes_are_parsed() {
        assert_eq!(
            parse_push(b">2\r\n$10\r\ninvalidate\r\n*2\r\n$2\r\nk1\r\n$0\r\n\r\n"),
            Some(Invalidation::Keys(vec![&b"k1"[..], b""]))
        );
        assert_eq!(
            parse_push(b">2\r\n$10\r\ninvalidate\r\n_\r\n"),
            Some(Invalidation::All)
        );
        assert_eq!(
            parse_push(b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n"),
            None
        );
        assert_eq!(
            parse_push(b">2\r\n$10\r\ninvalidate\r\n:1\r\n"),
            Some(Invalidation::All)
        );
    }
}
