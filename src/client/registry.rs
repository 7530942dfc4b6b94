//! The proxy's own client connections, for `CLIENT LIST` and `INFO`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::Instant;

use bytes::Bytes;

use super::filter::Filter;

/// What `CLIENT LIST` shows of one connection; shared between the session
/// (which updates it) and the registry.
#[derive(Debug)]
pub struct ClientInfo {
    /// Client id.
    pub id: u64,
    /// Peer address.
    pub peer: SocketAddr,
    /// Local (listening) address.
    pub local: Option<SocketAddr>,
    /// When the connection was accepted.
    pub created: Instant,
    /// RESP version (2 or 3).
    pub resp: AtomicU8,
    /// How many channels, patterns and shard channels the client is
    /// subscribed to (`CLIENT LIST` `sub`, `psub`, `ssub`).
    subscriptions: [AtomicU32; 3],
    /// Set by `CLIENT KILL`: the connection is to be closed.
    killed: AtomicBool,
    /// Whether `CLIENT TRACKING` is on (`CLIENT LIST` flag `t`).
    tracking: AtomicBool,
    /// Where its invalidations go (`CLIENT LIST` `redir`; 0: itself).
    redirect: AtomicU64,
    /// Whether other clients redirect their invalidations to it.
    receives: AtomicBool,
    /// `CLIENT TRACKING` in `BCAST` mode (`CLIENT LIST` flag `B`).
    bcast: AtomicBool,
    /// Its redirect target left (`CLIENT LIST` flag `R`).
    broken: AtomicBool,
    /// The connection is closing (a redirect target no more).
    closed: AtomicBool,
    /// Whether `CLIENT PAUSE` holds its command (blocked, for `INFO`).
    paused: AtomicBool,
    /// `CLIENT NO-EVICT ON` (`CLIENT LIST` flag `e`).
    no_evict: AtomicBool,
    /// `CLIENT CAPA redirect` (Valkey's `CLIENT LIST` `capa=r`).
    capa_redirect: AtomicBool,
    /// Bytes read from and written to the client, and commands it ran
    /// (Valkey's `tot-net-in`, `tot-net-out`, `tot-cmds`); only its
    /// session writes them.
    totals: [AtomicU64; 3],
    /// Ran `MULTI` or `WATCH` once (Valkey 8 then shows `multi=0` outside
    /// a transaction).
    used_tx: AtomicBool,
    /// Running `MONITOR` (`CLIENT LIST` flag `O`).
    monitoring: AtomicBool,
    /// `CLIENT NO-TOUCH ON` (`CLIENT LIST` flag `T`, Redis 7.2).
    no_touch: AtomicBool,
    /// Keys the client watches (`CLIENT LIST` `watch`, Redis 7.4).
    watching: AtomicU32,
    /// Commands queued in its open `MULTI` (`CLIENT LIST` `multi` and flag
    /// `x`), -1 outside one.
    multi: std::sync::atomic::AtomicI32,
    /// Set when the tracker has invalidations for the client to write.
    noticed: AtomicBool,
    /// The last command, by its place in the command table (`u16::MAX`:
    /// none yet, or not in the table).
    last_cmd: AtomicU16,
    /// `CLIENT SETNAME`, `CLIENT SETINFO LIB-NAME`, `LIB-VER`, the user:
    /// boxed once one is set, so a client that sets none (most idle
    /// connections of a pool) costs a pointer.
    names: Mutex<Option<Box<Names>>>,
    /// The client's task (registered when it rests and when its session
    /// becomes active), woken when the proxy starts draining (see
    /// [`Registry::wake_all`]).
    shutdown_waker: Mutex<Option<Waker>>,
    /// Where its blocking commands wait (for `CLIENT UNBLOCK`), oldest
    /// first, each with its number (see [`ClientInfo::set_blocked`]).
    blocked: Mutex<Blocked>,
}

/// The blocking commands a client waits in, numbered as they start.
#[derive(Debug, Default)]
struct Blocked {
    next: u64,
    waits: Vec<(u64, BlockedOn)>,
}

/// A blocking command a client waits in, as `CLIENT UNBLOCK` finds it:
/// where, and its number, which tells whether that command (not a later
/// one on the same connection) still waits.
#[derive(Debug, Clone)]
pub struct Waiting {
    /// Where it waits.
    pub on: BlockedOn,
    /// Its number among the client's blocking commands.
    pub number: u64,
}

/// Where a blocking command waits: the node, and the id its private
/// connection has there (0 until the node said, -1 once it is closed).
#[derive(Debug, Clone)]
pub struct BlockedOn {
    /// The node's address.
    pub addr: Arc<str>,
    /// `CLIENT ID` of the private connection on that node.
    pub server_id: Arc<std::sync::atomic::AtomicI64>,
}

/// Names a client gave itself.
#[derive(Debug, Default, Clone)]
pub struct Names {
    /// Connection name.
    pub name: Option<Bytes>,
    /// Library name.
    pub lib_name: Option<Bytes>,
    /// Library version.
    pub lib_ver: Option<Bytes>,
    /// The user the client authenticated as (`default` when absent).
    pub user: Option<Bytes>,
}

impl ClientInfo {
    /// A new connection's info.
    pub fn new(id: u64, peer: SocketAddr, local: Option<SocketAddr>) -> Self {
        ClientInfo {
            id,
            peer,
            local,
            created: Instant::now(),
            resp: AtomicU8::new(2),
            subscriptions: Default::default(),
            killed: AtomicBool::new(false),
            tracking: AtomicBool::new(false),
            redirect: AtomicU64::new(0),
            receives: AtomicBool::new(false),
            bcast: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            noticed: AtomicBool::new(false),
            last_cmd: AtomicU16::new(u16::MAX),
            names: Mutex::new(None),
            shutdown_waker: Mutex::new(None),
            blocked: Mutex::new(Blocked::default()),
            paused: AtomicBool::new(false),
            no_evict: AtomicBool::new(false),
            no_touch: AtomicBool::new(false),
            monitoring: AtomicBool::new(false),
            used_tx: AtomicBool::new(false),
            capa_redirect: AtomicBool::new(false),
            totals: Default::default(),
            watching: AtomicU32::new(0),
            multi: std::sync::atomic::AtomicI32::new(-1),
        }
    }

    /// Wakes `waker` when the proxy starts draining (replacing the waker
    /// set before).
    pub fn set_shutdown_waker(&self, waker: &Waker) {
        let mut slot = self
            .shutdown_waker
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match slot.as_ref() {
            Some(old) if old.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    /// Records how many channels, patterns and shard channels the client
    /// is subscribed to.
    pub fn set_subscriptions(&self, counts: [usize; 3]) {
        for (n, count) in self.subscriptions.iter().zip(counts) {
            n.store(u32::try_from(count).unwrap_or(u32::MAX), Ordering::Relaxed);
        }
    }

    /// Whether the client has subscriptions.
    pub fn is_subscribed(&self) -> bool {
        self.subscriptions
            .iter()
            .any(|n| n.load(Ordering::Relaxed) > 0)
    }

    /// Records the client's latest command (its place in the command
    /// table), shown as `cmd=` in `CLIENT LIST`, and counts it (`tot-cmds`).
    pub fn set_last_cmd(&self, index: Option<u16>) {
        self.last_cmd
            .store(index.unwrap_or(u16::MAX), Ordering::Relaxed);
        self.add_total(2, 1);
    }

    /// Counts bytes read from the client.
    pub fn count_in(&self, bytes: usize) {
        self.add_total(0, bytes);
    }

    /// Counts bytes written to the client.
    pub fn count_out(&self, bytes: usize) {
        self.add_total(1, bytes);
    }

    /// Adds to a total that only the client's session changes: a load and
    /// a store, no locked instruction.
    fn add_total(&self, which: usize, n: usize) {
        let total = &self.totals[which];
        let now = total.load(Ordering::Relaxed);
        total.store(now.wrapping_add(n as u64), Ordering::Relaxed);
    }

    /// Records `CLIENT CAPA redirect`.
    pub fn set_capa_redirect(&self) {
        self.capa_redirect.store(true, Ordering::Relaxed);
    }

    /// Records whether `CLIENT TRACKING` is on, and the id of the client
    /// its invalidations are redirected to (0: none).
    pub fn set_tracking(&self, on: bool, redirect: u64) {
        self.tracking.store(on, Ordering::Relaxed);
        self.redirect.store(redirect, Ordering::Relaxed);
    }

    /// Records whether tracking clients redirect their invalidations to
    /// this one.
    pub fn set_receives(&self, on: bool) {
        self.receives.store(on, Ordering::Relaxed);
    }

    /// Whether tracking clients redirect their invalidations to this one.
    pub fn receives(&self) -> bool {
        self.receives.load(Ordering::Relaxed)
    }

    /// Records `CLIENT NO-EVICT`.
    pub fn set_no_evict(&self, on: bool) {
        self.no_evict.store(on, Ordering::Relaxed);
    }

    /// Records whether the client runs `MONITOR`.
    pub fn set_monitoring(&self, on: bool) {
        self.monitoring.store(on, Ordering::Relaxed);
    }

    /// Records `CLIENT NO-TOUCH`.
    pub fn set_no_touch(&self, on: bool) {
        self.no_touch.store(on, Ordering::Relaxed);
    }

    /// Records how many keys the client watches.
    pub fn set_watching(&self, keys: usize) {
        let n = u32::try_from(keys).unwrap_or(u32::MAX);
        if n > 0 && !self.used_tx.load(Ordering::Relaxed) {
            self.used_tx.store(true, Ordering::Relaxed);
        }
        self.watching.store(n, Ordering::Relaxed);
    }

    /// Records the commands queued in the client's `MULTI` (`None`: no
    /// transaction is open).
    pub fn set_multi(&self, queued: Option<usize>) {
        let n = queued.map_or(-1, |n| i32::try_from(n).unwrap_or(i32::MAX));
        if n >= 0 && !self.used_tx.load(Ordering::Relaxed) {
            self.used_tx.store(true, Ordering::Relaxed);
        }
        self.multi.store(n, Ordering::Relaxed);
    }

    /// Records whether the client tracks in `BCAST` mode.
    pub fn set_bcast(&self, on: bool) {
        self.bcast.store(on, Ordering::Relaxed);
    }

    /// Records whether the client's redirect target left.
    pub fn set_broken(&self, on: bool) {
        self.broken.store(on, Ordering::Relaxed);
    }

    /// Marks the connection as closing.
    pub fn set_closed(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Whether the connection is closing.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether `CLIENT TRACKING` is on.
    pub fn is_tracking(&self) -> bool {
        self.tracking.load(Ordering::Relaxed)
    }

    /// Tells the client's task that the tracker holds invalidations for
    /// it (see [`crate::tracking`]).
    pub fn notify(&self) {
        self.noticed.store(true, Ordering::Release);
        // The waker stays registered (unlike a kill's or a drain's, which
        // happen once): an active session is woken by every notice.
        let slot = self
            .shutdown_waker
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(waker) = slot.as_ref() {
            waker.wake_by_ref();
        }
    }

    /// Whether invalidations wait (see [`ClientInfo::notify`]).
    pub fn has_notice(&self) -> bool {
        self.noticed.load(Ordering::Acquire)
    }

    /// Whether invalidations wait, clearing the mark.
    pub fn take_notice(&self) -> bool {
        self.noticed.swap(false, Ordering::AcqRel)
    }

    /// Records where a blocking command of the client waits (those whose
    /// connection closed are forgotten).
    pub fn set_blocked(&self, on: BlockedOn) {
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        blocked
            .waits
            .retain(|(_, b)| b.server_id.load(Ordering::Acquire) >= 0);
        let number = blocked.next;
        blocked.next += 1;
        blocked.waits.push((number, on));
    }

    /// Forgets the blocking command that waited on the connection with
    /// `server_id`: it was answered, and the connection stays open for the
    /// client's next one.
    pub fn forget_blocked(&self, server_id: &Arc<std::sync::atomic::AtomicI64>) {
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        blocked
            .waits
            .retain(|(_, b)| !Arc::ptr_eq(&b.server_id, server_id));
    }

    /// The client's oldest blocking command sent and not answered, if
    /// any (one server runs a client's commands one at a time: that one
    /// blocks it). Its connection may still be opening (id 0).
    pub fn waiting(&self) -> Option<Waiting> {
        let blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        blocked
            .waits
            .iter()
            .find(|(_, on)| on.server_id.load(Ordering::Acquire) >= 0)
            .map(|(number, on)| Waiting {
                on: on.clone(),
                number: *number,
            })
    }

    /// Whether the blocking command numbered `number` still waits (not
    /// answered, its connection open).
    pub fn still_waiting(&self, number: u64) -> bool {
        let blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        blocked
            .waits
            .iter()
            .any(|(n, on)| *n == number && on.server_id.load(Ordering::Acquire) >= 0)
    }

    /// Whether the client is blocked now, as one server counts it: held
    /// by `CLIENT PAUSE`, or in a blocking command sent to a node and not
    /// answered.
    pub fn is_blocked(&self) -> bool {
        self.paused.load(Ordering::Relaxed) || self.waiting().is_some()
    }

    /// Records whether `CLIENT PAUSE` holds the client's command.
    pub fn set_paused(&self, on: bool) {
        self.paused.store(on, Ordering::Relaxed);
    }

    /// Whether `CLIENT KILL` chose this client.
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }

    /// Marks the client killed and wakes its task (registered with
    /// [`ClientInfo::set_shutdown_waker`]), which then closes it.
    fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
        self.wake();
    }

    /// Wakes the registered task once (the waker is taken; a resting task
    /// registers again).
    fn wake(&self) {
        let waker = self
            .shutdown_waker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// A copy of the names.
    pub fn names(&self) -> Names {
        self.names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_deref()
            .cloned()
            .unwrap_or_default()
    }

    /// Changes the names under the lock.
    pub fn update(&self, f: impl FnOnce(&mut Names)) {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        f(names.get_or_insert_with(Default::default));
    }

    /// The `flags=` of its `CLIENT LIST` line.
    pub fn flags(&self) -> String {
        flags([
            (self.monitoring.load(Ordering::Relaxed), 'O'),
            (self.is_subscribed(), 'P'),
            (self.multi.load(Ordering::Relaxed) >= 0, 'x'),
            (self.is_blocked(), 'b'),
            (self.is_tracking(), 't'),
            (self.broken.load(Ordering::Relaxed), 'R'),
            (self.bcast.load(Ordering::Relaxed), 'B'),
            (self.no_evict.load(Ordering::Relaxed), 'e'),
            (
                self.no_touch.load(Ordering::Relaxed) && crate::nodes::at_least(7, 2),
                'T',
            ),
        ])
    }

    /// Whether it sent Valkey's `CLIENT CAPA redirect`.
    pub fn capa_redirect(&self) -> bool {
        self.capa_redirect.load(Ordering::Relaxed)
    }

    /// One `CLIENT LIST` line (with trailing newline), in Redis's format;
    /// `qbuf`: the bytes of its query buffer (the command it runs, for
    /// the caller; nothing waits in a resting client's).
    pub fn line(&self, qbuf: usize) -> String {
        let names = self.names();
        let text = |b: &Option<Bytes>| {
            b.as_ref()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_default()
        };
        let age = self.created.elapsed().as_secs();
        let multi = self.multi.load(Ordering::Relaxed);
        let valkey8 = crate::nodes::valkey_at_least(8, 0);
        // Valkey 8 reads commands into a buffer shared by all clients: the
        // caller's own is empty while its command runs.
        let shown_qbuf = if valkey8 { 0 } else { qbuf };
        format!(
            "id={} addr={} laddr={} fd=0 name={} age={age} idle=0 flags={}{} db=0 sub={} psub={} ssub={} multi={}{} qbuf={shown_qbuf} qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user={} redir={} resp={}{}\n",
            self.id,
            self.peer,
            self.local.map(|a| a.to_string()).unwrap_or_default(),
            text(&names.name),
            self.flags(),
            // A field of Valkey 8.
            match (valkey8, self.capa_redirect.load(Ordering::Relaxed)) {
                (false, _) => "",
                (true, false) => " capa=",
                (true, true) => " capa=r",
            },
            self.subscriptions[0].load(Ordering::Relaxed),
            self.subscriptions[1].load(Ordering::Relaxed),
            self.subscriptions[2].load(Ordering::Relaxed),
            // Valkey 8 keeps a client's transaction state once made (by
            // MULTI or WATCH): 0 commands queued, not -1.
            if multi < 0 && valkey8 && self.used_tx.load(Ordering::Relaxed) {
                0
            } else {
                multi
            },
            // A field of Redis 7.4.
            if crate::nodes::at_least(7, 4) || valkey8 {
                format!(" watch={}", self.watching.load(Ordering::Relaxed))
            } else {
                String::new()
            },
            crate::command::table_gen::COMMANDS
                .get(usize::from(self.last_cmd.load(Ordering::Relaxed)))
                .map_or("NULL", |spec| spec.name),
            names
                .user
                .as_ref()
                .map_or_else(|| "default".into(), |u| String::from_utf8_lossy(u).into_owned()),
            // 0: tracking without redirection; -1: tracking off.
            if self.is_tracking() {
                i64::try_from(self.redirect.load(Ordering::Relaxed)).unwrap_or(0)
            } else {
                -1
            },
            self.resp.load(Ordering::Relaxed),
            // Fields of Redis 7.2 and 8.0 and of Valkey 8, which older
            // nodes' clients do not show (the proxy's clients are all on
            // one thread).
            match (crate::nodes::at_least(7, 2), crate::nodes::at_least(8, 0)) {
                (false, _) => String::new(),
                (true, io_thread) => format!(
                    " lib-name={} lib-ver={}{}{}",
                    text(&names.lib_name),
                    text(&names.lib_ver),
                    if io_thread { " io-thread=0" } else { "" },
                    if valkey8 {
                        let [i, o, c] = &self.totals;
                        // The caller's line (the only one with a `qbuf`):
                        // its command is still running, and one server
                        // counts a command once it ran.
                        let running = u64::from(qbuf > 0);
                        format!(
                            " tot-net-in={} tot-net-out={} tot-cmds={}",
                            i.load(Ordering::Relaxed),
                            o.load(Ordering::Relaxed),
                            c.load(Ordering::Relaxed).saturating_sub(running)
                        )
                    } else {
                        String::new()
                    }
                ),
            },
        )
    }
}

/// `CLIENT LIST` flags, given in Redis's order (`O` monitor, `P` subscribed, `x` in
/// `MULTI`, `b` blocked, `t` tracking, `R` broken redirection, `B`
/// broadcasting, `e` no-evict, `T` no-touch); `N` for none.
fn flags<const N: usize>(set: [(bool, char); N]) -> String {
    let flags: String = set.iter().filter(|(on, _)| *on).map(|(_, f)| *f).collect();
    if flags.is_empty() {
        "N".into()
    } else {
        flags
    }
}

/// All connected clients by id.
#[derive(Debug, Default)]
pub struct Registry {
    clients: Mutex<BTreeMap<u64, Arc<ClientInfo>>>,
}

impl Registry {
    /// Adds a connection.
    pub fn add(&self, info: Arc<ClientInfo>) {
        self.lock().insert(info.id, info);
    }

    /// A connection by id.
    pub fn get(&self, id: u64) -> Option<Arc<ClientInfo>> {
        self.lock().get(&id).cloned()
    }

    /// Removes a connection.
    pub fn remove(&self, id: u64) -> Option<Arc<ClientInfo>> {
        self.lock().remove(&id)
    }

    /// Wakes every resting client (the proxy started draining).
    pub fn wake_all(&self) {
        let clients: Vec<Arc<ClientInfo>> = self.lock().values().cloned().collect();
        for client in clients {
            client.wake();
        }
    }

    /// Tells the subscribed clients of `user` (all users: `None`) that
    /// their rules changed: each checks its subscriptions (see
    /// [`ClientInfo::notify`]).
    pub fn notify_subscribers(&self, user: Option<&[u8]>) {
        let chosen: Vec<Arc<ClientInfo>> = self
            .lock()
            .values()
            .filter(|c| c.is_subscribed())
            .filter(|c| user.is_none_or(|u| c.names().user.as_deref().unwrap_or(b"default") == u))
            .cloned()
            .collect();
        for c in chosen {
            c.notify();
        }
    }

    /// How many clients wait in a blocking command (`INFO`:
    /// `blocked_clients`).
    pub fn blocked(&self) -> usize {
        self.lock().values().filter(|c| c.is_blocked()).count()
    }

    /// How many clients have subscriptions (`INFO`: `pubsub_clients`).
    pub fn subscribed(&self) -> usize {
        self.lock().values().filter(|c| c.is_subscribed()).count()
    }

    /// `CLIENT LIST` text of the clients passing `filter` (all without),
    /// by id; `me`: the caller's id, `qbuf`: its command's size.
    pub fn list(&self, filter: Option<&Filter>, me: u64, qbuf: usize) -> String {
        self.lock()
            .values()
            .filter(|c| filter.is_none_or(|f| f.matches(c, me)))
            .map(|c| c.line(if c.id == me { qbuf } else { 0 }))
            .collect()
    }

    /// Closes the clients passing `filter`: how many, and whether the
    /// caller (`me`) is among them.
    pub fn kill(&self, filter: &Filter, me: u64) -> (usize, bool) {
        let chosen: Vec<Arc<ClientInfo>> = self
            .lock()
            .values()
            .filter(|c| filter.matches(c, me))
            .cloned()
            .collect();
        let mut killed_me = false;
        for c in &chosen {
            if c.id == me {
                // Closed after its reply (see `local::execute`).
                killed_me = true;
            } else {
                c.kill();
            }
        }
        (chosen.len(), killed_me)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ClientInfo>>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_clients() {
        let reg = Registry::default();
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let a = Arc::new(ClientInfo::new(1, peer, None));
        a.update(|n| n.name = Some(Bytes::from_static(b"worker")));
        reg.add(a);
        reg.add(Arc::new(ClientInfo::new(2, peer, None)));
        let list = reg.list(None, 2, 26);
        assert!(list.starts_with("id=1 addr=127.0.0.1:5000 laddr= fd=0 name=worker age=0"));
        assert_eq!(list.lines().count(), 2);
        assert!(list.lines().next().unwrap().contains(" qbuf=0 "));
        assert!(list.lines().nth(1).unwrap().contains(" qbuf=26 "));
        reg.remove(1);
        reg.remove(2);
        assert_eq!(reg.list(None, 2, 26), "");
    }

    #[test]
    fn blocking_commands_are_numbered_and_forgotten() {
        use std::sync::atomic::AtomicI64;
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let c = ClientInfo::new(1, peer, None);
        assert!(c.waiting().is_none() && !c.is_blocked());
        let on = |id: &Arc<AtomicI64>| BlockedOn {
            addr: Arc::from("n:1"),
            server_id: id.clone(),
        };
        // Connecting (id 0) already counts: the command has left.
        let conn = Arc::new(AtomicI64::new(0));
        c.set_blocked(on(&conn));
        let first = c.waiting().unwrap();
        assert!(c.is_blocked() && c.still_waiting(first.number));
        // Answered, then the next command on the same connection: a new
        // number, so an UNBLOCK of the first no longer finds it.
        c.forget_blocked(&conn);
        assert!(!c.still_waiting(first.number) && !c.is_blocked());
        conn.store(7, Ordering::Release);
        c.set_blocked(on(&conn));
        let second = c.waiting().unwrap();
        assert_ne!(first.number, second.number);
        assert!(!c.still_waiting(first.number) && c.still_waiting(second.number));
        // A connection that closed waits for nothing.
        conn.store(-1, Ordering::Release);
        assert!(c.waiting().is_none() && !c.still_waiting(second.number));
    }

    #[test]
    fn wake_all_wakes_each_registered_task_once() {
        use std::sync::atomic::AtomicUsize;
        use std::task::Wake;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let reg = Registry::default();
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let a = Arc::new(ClientInfo::new(1, peer, None));
        a.set_shutdown_waker(&waker);
        a.set_shutdown_waker(&waker);
        reg.add(a);
        // Registered without a waker (an active session): nothing to wake.
        reg.add(Arc::new(ClientInfo::new(2, peer, None)));
        reg.wake_all();
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        // Taken by the first wake: a resting task registers again.
        reg.wake_all();
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
    }
}
