//! The proxy's own client connections, for `CLIENT LIST` and `INFO`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;

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
    /// `CLIENT SETNAME`, `CLIENT SETINFO LIB-NAME`, `LIB-VER`, the user:
    /// boxed once one is set, so a client that sets none (most idle
    /// connections of a pool) costs a pointer.
    names: Mutex<Option<Box<Names>>>,
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
            names: Mutex::new(None),
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

    /// One `CLIENT LIST` line (with trailing newline), in Redis's format.
    pub fn line(&self) -> String {
        let names = self.names();
        let text = |b: &Option<Bytes>| {
            b.as_ref()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_default()
        };
        let age = self.created.elapsed().as_secs();
        format!(
            "id={} addr={} laddr={} fd=0 name={} age={age} idle=0 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=client|list user={} redir=-1 resp={} lib-name={} lib-ver={}\n",
            self.id,
            self.peer,
            self.local.map(|a| a.to_string()).unwrap_or_default(),
            text(&names.name),
            names
                .user
                .as_ref()
                .map_or_else(|| "default".into(), |u| String::from_utf8_lossy(u).into_owned()),
            self.resp.load(Ordering::Relaxed),
            text(&names.lib_name),
            text(&names.lib_ver),
        )
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

    /// Removes a connection.
    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// `CLIENT LIST` text, by id.
    pub fn list(&self) -> String {
        self.lock().values().map(|c| c.line()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ClientInfo>>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Removes a client from the registry when its session ends, however it ends.
#[derive(Debug)]
pub struct Registration<'a> {
    registry: &'a Registry,
    id: u64,
}

impl<'a> Registration<'a> {
    /// Registers `info` until the guard is dropped.
    pub fn new(registry: &'a Registry, info: Arc<ClientInfo>) -> Self {
        let id = info.id;
        registry.add(info);
        Registration { registry, id }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.registry.remove(self.id);
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
        {
            let _g = Registration::new(&reg, a);
            let _h = Registration::new(&reg, Arc::new(ClientInfo::new(2, peer, None)));
            let list = reg.list();
            assert!(list.starts_with("id=1 addr=127.0.0.1:5000 laddr= fd=0 name=worker age=0"));
            assert_eq!(list.lines().count(), 2);
        }
        assert_eq!(reg.list(), "");
    }
}
