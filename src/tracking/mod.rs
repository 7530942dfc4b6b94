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
//! - With `REDIRECT <id>` (how RESP2 clients track), the invalidations go
//!   to that other proxy client at once: a RESP3 push, or a message on
//!   `__redis__:invalidate` to a RESP2 client in Pub/Sub mode, as Redis
//!   sends them. When that client is gone, a RESP3 tracking client is
//!   pushed `tracking-redir-broken`.
//!
//! - In `BCAST` mode a client is told of every change to keys under its
//!   prefixes: the nodes' broadcast listeners (see
//!   [`crate::backend::inbox`]) report every change, and the tracker
//!   passes each client those under its prefixes.
//!
//! Supported: the default, `OPTIN`, `OPTOUT` and `BCAST` modes, for RESP3
//! clients and for any client with `REDIRECT`, with `NOLOOP` (a client's
//! own writes forget the keys for it, as Redis does; in `BCAST` mode it
//! still hears of them: the proxy cannot tell who changed a key).

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Every key it may have cached changed (a null `invalidate`).
    All,
    /// These keys (as stored on the servers) changed.
    Keys(Vec<Bytes>),
    /// The client its invalidations are redirected to is gone.
    RedirectBroken(u64),
    /// Keys changed that may be under the `prefixes` of a `BCAST` client:
    /// one batch per server push, each told as one push per prefix.
    Broadcast {
        /// The client's prefixes, sorted.
        prefixes: Vec<Bytes>,
        /// The keys (as stored) of each server push.
        batches: Vec<Vec<Bytes>>,
    },
}

/// The size of the tracking table, as `INFO` shows it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableSizes {
    /// Keys read by tracking clients (`tracking_total_keys`).
    pub keys: usize,
    /// Key and reader pairs (`tracking_total_items`).
    pub items: usize,
    /// Distinct `BCAST` prefixes (`tracking_total_prefixes`).
    pub prefixes: usize,
}

/// Invalidations of other clients (`REDIRECT`) for the client told.
#[derive(Debug, PartialEq, Eq)]
pub struct Received {
    /// What changed ([`Notice::All`] or [`Notice::Keys`]).
    pub notice: Notice,
    /// A flush carries RESP2's null (`$-1`): the redirecting client that
    /// flushed speaks RESP2.
    pub resp2_null: bool,
}

/// Which proxy clients read which keys, and what each is still to be told.
#[derive(Debug)]
pub struct Tracker {
    table: Mutex<Table>,
    /// Clients with tracking on (read without the lock).
    clients: AtomicUsize,
    /// Of those, clients in `BCAST` mode.
    broadcasting: AtomicUsize,
    max_keys: AtomicUsize,
}

#[derive(Debug, Default)]
struct Table {
    /// Stored key → ids of the clients that read it since its last
    /// invalidation (ids of clients gone since are skipped when it fires).
    keys: HashMap<Bytes, Vec<u64>>,
    clients: HashMap<u64, Client>,
    /// Clients that tracking clients redirect to, by id.
    receivers: HashMap<u64, Receiver>,
}

#[derive(Debug)]
struct Client {
    info: Arc<ClientInfo>,
    /// What it is to be told (unused while it redirects).
    inbox: Inbox,
    /// The client its invalidations go to (`REDIRECT`), 0 for itself.
    redirect: u64,
    /// Its redirect target left (`CLIENT TRACKINGINFO` `broken_redirect`).
    broken: bool,
    /// Its `BCAST` prefixes, sorted (`None`: not broadcasting).
    prefixes: Option<Vec<Bytes>>,
    /// ... and it is still to be told so.
    broken_news: bool,
    /// A `BCAST` client that sent a command while a node's broadcast
    /// listener was not listening: it may have cached what then changed
    /// unseen.
    unsure: bool,
}

impl Client {
    /// It speaks RESP3 now (the null of its flushes; a RESP2 client that
    /// does not redirect is told nothing).
    fn resp3(&self) -> bool {
        self.info.resp.load(Ordering::Relaxed) == 3
    }
}

/// A client other clients redirect their invalidations to.
#[derive(Debug)]
struct Receiver {
    info: Arc<ClientInfo>,
    inbox: Inbox,
    /// A flush is due with RESP2's null.
    resp2_null: bool,
    /// Tracking clients redirecting to it.
    trackers: usize,
}

/// Keys to tell a client about, or a flush.
#[derive(Debug, Default)]
struct Inbox {
    pending: Vec<Bytes>,
    /// `BCAST` batches, and how many keys they hold.
    batches: Vec<Vec<Bytes>>,
    batched: usize,
    all: bool,
}

impl Inbox {
    fn key(&mut self, key: &Bytes) {
        if self.all {
        } else if self.pending.len() >= MAX_PENDING_KEYS {
            self.flush();
        } else {
            self.pending.push(key.clone());
        }
    }

    fn batch(&mut self, keys: Vec<Bytes>) {
        if self.all {
        } else if self.batched + keys.len() > MAX_PENDING_KEYS {
            self.flush();
        } else {
            self.batched += keys.len();
            self.batches.push(keys);
        }
    }

    fn flush(&mut self) {
        self.all = true;
        self.pending = Vec::new();
        self.batches = Vec::new();
        self.batched = 0;
    }

    fn take(&mut self, prefixes: Option<&Vec<Bytes>>) -> Option<Notice> {
        if std::mem::take(&mut self.all) {
            return Some(Notice::All);
        }
        if let (Some(prefixes), false) = (prefixes, self.batches.is_empty()) {
            self.batched = 0;
            return Some(Notice::Broadcast {
                prefixes: prefixes.clone(),
                batches: std::mem::take(&mut self.batches),
            });
        }
        if self.pending.is_empty() {
            return None;
        }
        Some(Notice::Keys(std::mem::take(&mut self.pending)))
    }
}

/// Whether a stored `key` may be named under `prefix` by its client (its
/// name past a co-location tag is checked too; the session checks the
/// exact name).
fn may_match(key: &[u8], prefix: &[u8]) -> bool {
    key.starts_with(prefix)
        || (key.first() == Some(&b'{')
            && memchr::memchr(b'}', key).is_some_and(|i| key[i + 1..].starts_with(prefix)))
}

impl Table {
    /// Queues a flush for client `id` (or its redirect target).
    fn flush(&mut self, id: u64, wake: &mut Vec<Arc<ClientInfo>>) {
        // A redirecting client's session passes it on (see
        // [`Tracker::deliver`]), after the replies it owes.
        if let Some(client) = self.clients.get_mut(&id) {
            client.inbox.flush();
            wake.push(client.info.clone());
        }
    }

    /// A tracking client no longer redirects to `target`.
    fn unredirect(&mut self, target: u64) {
        if let Some(r) = self.receivers.get_mut(&target) {
            r.trackers = r.trackers.saturating_sub(1);
            if r.trackers == 0 {
                r.info.set_receives(false);
                self.receivers.remove(&target);
            }
        }
    }
}

impl Tracker {
    /// An empty tracker remembering at most `max_keys` keys (0: no limit);
    /// past it, the oldest-looking key is invalidated to make room.
    pub fn new(max_keys: usize) -> Self {
        Tracker {
            table: Mutex::new(Table::default()),
            clients: AtomicUsize::new(0),
            broadcasting: AtomicUsize::new(0),
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
        self.sizes().keys
    }

    /// The figures `INFO` shows of the table (the proxy's, not the nodes').
    pub fn sizes(&self) -> TableSizes {
        if !self.active() {
            return TableSizes::default();
        }
        let table = self.lock();
        let mut prefixes: Vec<&Bytes> = table
            .clients
            .values()
            .filter_map(|c| c.prefixes.as_ref())
            .flatten()
            .collect();
        prefixes.sort();
        prefixes.dedup();
        TableSizes {
            keys: table.keys.len(),
            items: table.keys.values().map(Vec::len).sum(),
            prefixes: prefixes.len(),
        }
    }

    /// Clients with tracking on (`INFO`: `tracking_clients`).
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Turns tracking on (or changes it) for a client, its invalidations
    /// redirected to `redirect` if given.
    pub fn enable(&self, info: &Arc<ClientInfo>, redirect: Option<&Arc<ClientInfo>>) {
        let mut table = self.lock();
        let target = redirect.map_or(0, |r| r.id);
        let client = table.clients.entry(info.id).or_insert_with(|| Client {
            info: info.clone(),
            inbox: Inbox::default(),
            redirect: 0,
            broken: false,
            broken_news: false,
            unsure: false,
            prefixes: None,
        });
        let old = std::mem::replace(&mut client.redirect, target);
        client.broken = false;
        client.broken_news = false;
        info.set_broken(false);
        if old != target {
            table.unredirect(old);
            // A target that is closing gets no entry: its redirection is
            // found broken (see `gone`, which runs after it is marked).
            if let Some(r) = redirect.filter(|r| !r.is_closed()) {
                r.set_receives(true);
                table
                    .receivers
                    .entry(target)
                    .or_insert_with(|| Receiver {
                        info: r.clone(),
                        inbox: Inbox::default(),
                        resp2_null: false,
                        trackers: 0,
                    })
                    .trackers += 1;
            }
        }
        self.clients.store(table.clients.len(), Ordering::Relaxed);
        info.set_tracking(true, target);
    }

    /// Turns tracking off for a client. Its entries under keys are dropped
    /// lazily, when those keys fire.
    pub fn disable(&self, id: u64) {
        if !self.active() {
            return;
        }
        let mut table = self.lock();
        if let Some(client) = table.clients.remove(&id) {
            client.info.set_tracking(false, 0);
            client.info.set_bcast(false);
            client.info.set_broken(false);
            table.unredirect(client.redirect);
            if client.prefixes.is_some() {
                self.broadcasting.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.clients.store(table.clients.len(), Ordering::Relaxed);
    }

    /// Adds `prefixes` to those of client `id`, which tracks in `BCAST`
    /// mode.
    pub fn add_prefixes(&self, id: u64, prefixes: Vec<Bytes>) {
        let mut table = self.lock();
        let Some(client) = table.clients.get_mut(&id) else {
            return;
        };
        client.info.set_bcast(true);
        let all = client.prefixes.get_or_insert_with(|| {
            self.broadcasting.fetch_add(1, Ordering::Relaxed);
            Vec::new()
        });
        all.extend(prefixes);
        all.sort();
        all.dedup();
    }

    /// The `BCAST` prefixes of client `id`, sorted.
    pub fn prefixes(&self, id: u64) -> Vec<Bytes> {
        if !self.active() {
            return Vec::new();
        }
        self.lock()
            .clients
            .get(&id)
            .and_then(|c| c.prefixes.clone())
            .unwrap_or_default()
    }

    /// Whether a client tracks in `BCAST` mode.
    pub fn broadcasting(&self) -> bool {
        self.broadcasting.load(Ordering::Relaxed) > 0
    }

    /// A server (in `BCAST` mode for every key) said `keys` changed: each
    /// `BCAST` client is told of those under its prefixes.
    pub fn broadcast(&self, keys: &[&[u8]]) {
        if !self.broadcasting() {
            return;
        }
        let keys: Vec<Bytes> = keys.iter().map(|k| Bytes::copy_from_slice(k)).collect();
        let mut wake = Vec::new();
        {
            let mut table = self.lock();
            let Table { clients, .. } = &mut *table;
            for client in clients.values_mut() {
                let Some(prefixes) = &client.prefixes else {
                    continue;
                };
                if client.redirect == 0 && !client.resp3() {
                    // Nothing reaches a RESP2 client that does not redirect.
                    continue;
                }
                let matching: Vec<Bytes> = keys
                    .iter()
                    .filter(|k| prefixes.iter().any(|p| may_match(k, p)))
                    .cloned()
                    .collect();
                if matching.is_empty() {
                    continue;
                }
                client.inbox.batch(matching);
                wake.push(client.info.clone());
            }
        }
        notify(wake);
    }

    /// `BCAST` clients are to flush their cache: changes may have gone
    /// unseen (a node's broadcast listener was lost: all of them; it
    /// listens now: those that sent commands before, see
    /// [`Tracker::mark_unsure`]).
    pub fn flush_broadcast(&self, all: bool) {
        if !self.broadcasting() {
            return;
        }
        let mut wake = Vec::new();
        {
            let mut table = self.lock();
            let ids: Vec<u64> = table
                .clients
                .iter_mut()
                .filter(|(_, c)| c.prefixes.is_some() && (all || c.unsure))
                .map(|(id, c)| {
                    c.unsure = false;
                    *id
                })
                .collect();
            for id in ids {
                table.flush(id, &mut wake);
            }
        }
        notify(wake);
    }

    /// `BCAST` client `id` sends a command while a broadcast listener is
    /// not listening yet: it flushes once all listen.
    pub fn mark_unsure(&self, id: u64) {
        if let Some(c) = self.lock().clients.get_mut(&id) {
            c.unsure = true;
        }
    }

    /// A `NOLOOP` client writes `keys`: its own change does not invalidate
    /// them for it (and, as in Redis, it no longer tracks them).
    pub fn forget<'a>(&self, id: u64, keys: impl Iterator<Item = &'a [u8]>) {
        if !self.active() {
            return;
        }
        let mut table = self.lock();
        for key in keys {
            if let Some(ids) = table.keys.get_mut(key) {
                ids.retain(|&i| i != id);
            }
        }
    }

    /// Every RESP2 client that redirects is to flush its cache: a node's
    /// invalidation inbox, where its reads' invalidations went, was lost.
    pub fn flush_redirected(&self) {
        if self.active() {
            self.flush_where(|c| c.redirect != 0 && !c.resp3());
        }
    }

    fn flush_where(&self, which: impl Fn(&Client) -> bool) {
        let mut wake = Vec::new();
        {
            let mut table = self.lock();
            let ids: Vec<u64> = table
                .clients
                .iter()
                .filter(|(_, c)| which(c))
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                table.flush(id, &mut wake);
            }
        }
        notify(wake);
    }

    /// Client `id` disconnected: its tracking ends, and clients that
    /// redirect to it find their redirection broken.
    pub fn gone(&self, id: u64) {
        if !self.active() {
            return;
        }
        self.disable(id);
        if let Some(r) = self.lock().receivers.remove(&id) {
            r.info.set_receives(false);
        }
    }

    /// Whether client `id`'s redirect target left (`broken_redirect`).
    pub fn redirect_broken(&self, id: u64) -> bool {
        self.active() && self.lock().clients.get(&id).is_some_and(|c| c.broken)
    }

    /// Passes `notice` of redirecting client `id` on to the client it
    /// redirects to (its session calls this once the replies of the reads
    /// before it are written), or tells it the target is gone.
    pub fn deliver(&self, id: u64, notice: Notice) {
        let mut wake = Vec::new();
        {
            let mut table = self.lock();
            let Table {
                clients, receivers, ..
            } = &mut *table;
            let Some(client) = clients.get_mut(&id).filter(|c| c.redirect != 0) else {
                return;
            };
            match receivers.get_mut(&client.redirect) {
                None => {
                    client.broken = true;
                    client.broken_news = true;
                    client.info.set_broken(true);
                    wake.push(client.info.clone());
                }
                Some(r) => {
                    match notice {
                        Notice::All => {
                            r.inbox.flush();
                            r.resp2_null = !client.resp3();
                        }
                        Notice::Keys(keys) => keys.iter().for_each(|k| r.inbox.key(k)),
                        // One message per change batch and prefix, as Redis.
                        Notice::Broadcast { prefixes, batches } => {
                            for batch in &batches {
                                for p in &prefixes {
                                    let keys: Vec<Bytes> =
                                        batch.iter().filter(|k| may_match(k, p)).cloned().collect();
                                    if !keys.is_empty() {
                                        r.inbox.batch(keys);
                                    }
                                }
                            }
                        }
                        Notice::RedirectBroken(_) => {}
                    }
                    wake.push(r.info.clone());
                }
            }
        }
        notify(wake);
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
                ..
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
            let Table {
                keys: table_keys,
                clients,
                ..
            } = &mut *table;
            for key in keys {
                if let Some((key, ids)) = table_keys.remove_entry(*key) {
                    tell(clients, &key, &ids, &mut wake);
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
            let ids: Vec<u64> = table.clients.keys().copied().collect();
            for id in ids {
                table.flush(id, &mut wake);
            }
        }
        notify(wake);
    }

    /// What client `id` is to be told now of its own reads, if anything.
    pub fn take(&self, id: u64) -> Option<Notice> {
        let mut table = self.lock();
        let client = table.clients.get_mut(&id)?;
        if std::mem::take(&mut client.broken_news) {
            return Some(Notice::RedirectBroken(client.redirect));
        }
        client.inbox.take(client.prefixes.as_ref())
    }

    /// What client `id` is to be told of the reads of clients that
    /// redirect to it, if anything.
    pub fn take_received(&self, id: u64) -> Vec<Received> {
        let mut table = self.lock();
        let Some(r) = table.receivers.get_mut(&id) else {
            return Vec::new();
        };
        // Broadcast batches (one message each), then keys.
        let batches = Vec::new();
        let mut out = Vec::new();
        while let Some(notice) = r.inbox.take(Some(&batches)) {
            out.push(Received {
                resp2_null: notice == Notice::All && std::mem::take(&mut r.resp2_null),
                notice,
            });
        }
        out
    }
}

/// Queues `key` for the clients `ids` that are still tracking (or for
/// the clients they redirect to).
fn tell(
    clients: &mut HashMap<u64, Client>,
    key: &Bytes,
    ids: &[u64],
    wake: &mut Vec<Arc<ClientInfo>>,
) {
    for id in ids {
        // BCAST clients are told by prefix only (as Redis, which skips
        // them here), whatever they read before.
        let Some(client) = clients.get_mut(id).filter(|c| c.prefixes.is_none()) else {
            continue;
        };
        client.inbox.key(key);
        wake.push(client.info.clone());
    }
}

/// Tells each client's task that it has something to write.
fn notify(clients: Vec<Arc<ClientInfo>>) {
    for info in clients {
        info.notify();
    }
}

/// The RESP3 push telling a client to drop its whole cache.
pub const FLUSH_PUSH: &[u8] = b">2\r\n$10\r\ninvalidate\r\n_\r\n";

/// The RESP3 push for `notice`, with each key shown as `decode` names it.
pub fn push_frame<'a>(notice: &'a Notice, decode: impl Fn(&'a [u8]) -> &'a [u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(32);
    let head = |out: &mut BytesMut| {
        put_header(out, b'>', 2);
        put_bulk(out, b"invalidate");
    };
    match notice {
        Notice::RedirectBroken(id) => {
            put_header(&mut out, b'>', 2);
            put_bulk(&mut out, b"tracking-redir-broken");
            crate::protocol::reply::put_int(&mut out, i64::try_from(*id).unwrap_or(i64::MAX));
        }
        Notice::Broadcast { prefixes, batches } => {
            // As Redis: per change batch, one push per prefix with its keys.
            for batch in batches {
                for prefix in prefixes {
                    let keys: Vec<&[u8]> = batch
                        .iter()
                        .map(|k| decode(k))
                        .filter(|k| k.starts_with(prefix))
                        .collect();
                    if keys.is_empty() {
                        continue;
                    }
                    head(&mut out);
                    put_header(&mut out, b'*', keys.len());
                    for key in keys {
                        put_bulk(&mut out, key);
                    }
                }
            }
        }
        Notice::Keys(_) | Notice::All => put_messages(&mut out, notice, head, b"_\r\n", decode),
    }
    out.freeze()
}

/// What a client that others redirect to is sent for `received`: a RESP3
/// push, or to a RESP2 client in Pub/Sub mode a message on
/// `__redis__:invalidate`; nothing to another RESP2 client (as Redis).
pub fn received_frame<'a>(
    received: &'a Received,
    resp3: bool,
    subscribed: bool,
    decode: impl Fn(&'a [u8]) -> &'a [u8],
) -> Option<Bytes> {
    let null: &[u8] = if received.resp2_null {
        b"$-1\r\n"
    } else {
        b"_\r\n"
    };
    if !resp3 && !subscribed {
        return None;
    }
    let head = |out: &mut BytesMut| {
        if resp3 {
            put_header(out, b'>', 2);
            put_bulk(out, b"invalidate");
        } else {
            put_header(out, b'*', 3);
            put_bulk(out, b"message");
            put_bulk(out, b"__redis__:invalidate");
        }
    };
    let mut out = BytesMut::with_capacity(48);
    if let Notice::Broadcast { batches, .. } = &received.notice {
        // Each batch is one message (the keys of one prefix).
        for batch in batches {
            head(&mut out);
            put_header(&mut out, b'*', batch.len());
            for key in batch {
                put_bulk(&mut out, decode(key));
            }
        }
        return Some(out.freeze());
    }
    put_messages(&mut out, &received.notice, head, null, decode);
    Some(out.freeze())
}

/// The messages of `notice`, each begun by `head`: as from Redis, one per
/// key (a one-key array), or one `null` for a flush.
fn put_messages<'a>(
    out: &mut BytesMut,
    notice: &'a Notice,
    head: impl Fn(&mut BytesMut),
    null: &[u8],
    decode: impl Fn(&'a [u8]) -> &'a [u8],
) {
    match notice {
        Notice::Keys(keys) => {
            // A key stored under a co-location tag is named as the proxy
            // names it everywhere (KEYS, SCAN): as the client wrote it.
            for key in keys {
                head(out);
                put_header(out, b'*', 1);
                put_bulk(out, decode(key));
            }
        }
        Notice::All | Notice::RedirectBroken(_) | Notice::Broadcast { .. } => {
            head(out);
            out.extend_from_slice(null)
        }
    }
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
        t.enable(&a, None);
        t.enable(&b, None);
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
        t.enable(&a, None);
        t.enable(&b, None);
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
    fn redirected_invalidations_go_to_the_target_until_it_leaves() {
        let t = Tracker::new(0);
        let (a, target) = (info(1), info(2));
        t.enable(&a, Some(&target));
        assert!(target.receives());
        t.remember(1, [&b"k"[..]].into_iter());
        t.invalidate(&[b"k"]);
        // Its session passes it on once its owed replies are written.
        assert!(a.take_notice() && !target.take_notice());
        let notice = t.take(1).unwrap();
        assert_eq!(notice, Notice::Keys(vec![Bytes::from("k")]));
        t.deliver(1, notice);
        assert!(target.take_notice());
        let keys = Received {
            notice: Notice::Keys(vec![Bytes::from("k")]),
            resp2_null: false,
        };
        assert_eq!(t.take_received(2), vec![keys]);
        // A RESP2 tracking client's flush carries RESP2's null.
        t.deliver(1, Notice::All);
        let got = t.take_received(2).remove(0);
        assert_eq!((got.notice, got.resp2_null), (Notice::All, true));
        let frame = |r: &Received, resp3, sub| received_frame(r, resp3, sub, |k| k);
        let all = Received {
            notice: Notice::All,
            resp2_null: true,
        };
        assert_eq!(
            frame(&all, false, true).as_deref(),
            Some(&b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n$-1\r\n"[..])
        );
        assert_eq!(frame(&all, false, false), None);
        assert_eq!(
            frame(&all, true, false).as_deref(),
            Some(&b">2\r\n$10\r\ninvalidate\r\n$-1\r\n"[..])
        );
        // The target leaves: the tracking client is told, once.
        t.gone(2);
        assert!(!target.receives());
        t.remember(1, [&b"k"[..]].into_iter());
        t.invalidate(&[b"k"]);
        let notice = t.take(1).unwrap();
        t.deliver(1, notice);
        assert!(t.redirect_broken(1));
        assert_eq!(t.take(1), Some(Notice::RedirectBroken(2)));
        assert_eq!(t.take(1), None);
        assert_eq!(
            &push_frame(&Notice::RedirectBroken(2), |k| k)[..],
            b">2\r\n$21\r\ntracking-redir-broken\r\n:2\r\n"
        );
        // Enabling again clears it; disabling drops the receiver.
        let other = info(3);
        t.enable(&a, Some(&other));
        assert!(!t.redirect_broken(1) && other.receives());
        t.disable(1);
        assert!(!other.receives());
    }

    #[test]
    fn the_key_limit_invalidates_to_make_room() {
        let t = Tracker::new(2);
        let a = info(1);
        t.enable(&a, None);
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
            &b">2\r\n$10\r\ninvalidate\r\n*1\r\n$2\r\nk1\r\n>2\r\n$10\r\ninvalidate\r\n*1\r\n$2\r\nk2\r\n"[..]
        );
        assert_eq!(&push_frame(&Notice::All, |k| k)[..], FLUSH_PUSH);
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
