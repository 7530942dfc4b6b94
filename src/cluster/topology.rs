//! The slot map: which node owns each of the 16384 slots.
//!
//! Readers take a snapshot with one atomic load ([`Topology::load`]) and
//! never allocate or lock; writers (refresh, MOVED) build a new map and swap
//! it in. Connection pools live in a registry keyed by address so that they
//! survive map changes, and are dropped (their connections closed) when a
//! node leaves the map.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};
use tokio::sync::{watch, Notify};

use super::slot::SLOTS;
use crate::backend::{ConnOptions, NodePool};

const NO_OWNER: u16 = u16::MAX;

/// One master and its replicas.
#[derive(Debug, Clone)]
pub struct Shard {
    /// The master's connections.
    pub master: Arc<NodePool>,
    /// Replica connections (opened only when reads go there, with `READONLY`).
    pub replicas: Vec<Arc<NodePool>>,
}

/// An immutable snapshot of the cluster's slot ownership.
#[derive(Debug)]
pub struct SlotMap {
    owner: Box<[u16]>,
    shards: Vec<Shard>,
    /// Increases with every installed map.
    pub version: u64,
}

impl SlotMap {
    fn empty() -> Self {
        SlotMap {
            owner: vec![NO_OWNER; SLOTS].into_boxed_slice(),
            shards: Vec::new(),
            version: 0,
        }
    }

    /// The position of the shard owning `slot` in [`SlotMap::shards`], if
    /// known: equal for slots of one master.
    #[inline]
    pub fn shard_of(&self, slot: u16) -> Option<u16> {
        self.owner
            .get(slot as usize)
            .copied()
            .filter(|&o| o != NO_OWNER)
    }

    /// The master owning `slot`, if known.
    #[inline]
    pub fn master(&self, slot: u16) -> Option<&Arc<NodePool>> {
        let idx = *self.owner.get(slot as usize)?;
        self.shards.get(idx as usize).map(|s| &s.master)
    }

    /// A replica of the shard owning `slot` (the `n`-th, round-robin), if any.
    #[inline]
    pub fn replica(&self, slot: u16, n: usize) -> Option<&Arc<NodePool>> {
        let idx = *self.owner.get(slot as usize)?;
        let replicas = &self.shards.get(idx as usize)?.replicas;
        replicas.get(n % replicas.len().max(1))
    }

    /// How many replicas the shard owning `slot` has (0 if unknown).
    #[inline]
    pub fn replica_count(&self, slot: u16) -> usize {
        self.owner
            .get(slot as usize)
            .and_then(|&idx| self.shards.get(idx as usize))
            .map_or(0, |s| s.replicas.len())
    }

    /// All shards (masters with their replicas).
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// How many slots have an owner.
    pub fn covered(&self) -> usize {
        self.owner.iter().filter(|&&o| o != NO_OWNER).count()
    }

    /// Slot ranges owned by shard `idx` (for display).
    pub fn ranges_of(&self, idx: usize) -> Vec<(u16, u16)> {
        let mut out: Vec<(u16, u16)> = Vec::new();
        for (slot, &o) in self.owner.iter().enumerate() {
            if o as usize == idx {
                match out.last_mut() {
                    Some(last) if last.1 as usize + 1 == slot => last.1 = slot as u16,
                    _ => out.push((slot as u16, slot as u16)),
                }
            }
        }
        out
    }
}

/// One slot range as reported by `CLUSTER SLOTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRange {
    /// First slot.
    pub start: u16,
    /// Last slot (inclusive).
    pub end: u16,
    /// Master `host:port`.
    pub master: String,
    /// Replica `host:port`s.
    pub replicas: Vec<String>,
}

/// The live topology shared by all sessions.
pub struct Topology {
    map: ArcSwap<SlotMap>,
    pools: Mutex<HashMap<Arc<str>, Arc<NodePool>>>,
    replica_pools: Mutex<HashMap<Arc<str>, Arc<NodePool>>>,
    opts: Arc<ConnOptions>,
    pool_size: usize,
    refresh: Arc<Notify>,
    version_tx: watch::Sender<u64>,
    /// Bumped only when the masters or the owner of slot 0 change.
    masters_tx: watch::Sender<u64>,
    next_version: AtomicU64,
    /// Counters other layers export.
    pub stats: TopologyStats,
    last_error: Mutex<Option<String>>,
}

/// Counters about topology changes and redirections.
#[derive(Debug, Default)]
pub struct TopologyStats {
    /// Completed topology refreshes.
    pub refreshes: AtomicU64,
    /// MOVED replies handled.
    pub moved: AtomicU64,
    /// ASK replies handled.
    pub ask: AtomicU64,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology")
            .field("version", &self.load().version)
            .finish()
    }
}

/// The masters (sorted) and the owner of the Pub/Sub home slot of a map.
fn masters_of(map: &SlotMap) -> (Vec<&str>, Option<&str>) {
    let mut masters: Vec<&str> = map.shards().iter().map(|s| &**s.master.addr()).collect();
    masters.sort_unstable();
    let home = crate::command::route::PUBSUB_HOME_SLOT;
    (masters, map.master(home).map(|p| &**p.addr()))
}

impl Topology {
    /// An empty topology; [`crate::cluster::refresh`] fills it. `refresh`
    /// is the signal that asks for a refresh (shared with the backend
    /// connections, which raise it when a node fails).
    pub fn new(opts: Arc<ConnOptions>, pool_size: usize, refresh: Arc<Notify>) -> Self {
        let (version_tx, _) = watch::channel(0);
        let (masters_tx, _) = watch::channel(0);
        Topology {
            map: ArcSwap::from_pointee(SlotMap::empty()),
            pools: Mutex::new(HashMap::new()),
            replica_pools: Mutex::new(HashMap::new()),
            opts,
            pool_size,
            refresh,
            version_tx,
            masters_tx,
            next_version: AtomicU64::new(1),
            stats: TopologyStats::default(),
            last_error: Mutex::new(None),
        }
    }

    /// The current slot map (one atomic load, no allocation).
    #[inline]
    pub fn load(&self) -> Guard<Arc<SlotMap>> {
        self.map.load()
    }

    /// Options shared by all backend connections.
    pub fn conn_options(&self) -> &Arc<ConnOptions> {
        &self.opts
    }

    /// The connection pool of `addr`, created on first use.
    pub fn pool(&self, addr: &str) -> Arc<NodePool> {
        self.pool_in(&self.pools, addr, false)
    }

    /// The read-only (`READONLY`) connection pool of replica `addr`.
    fn replica_pool(&self, addr: &str) -> Arc<NodePool> {
        self.pool_in(&self.replica_pools, addr, true)
    }

    fn pool_in(
        &self,
        registry: &Mutex<HashMap<Arc<str>, Arc<NodePool>>>,
        addr: &str,
        readonly: bool,
    ) -> Arc<NodePool> {
        let mut pools = registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pools.get(addr) {
            return p.clone();
        }
        let addr: Arc<str> = Arc::from(addr);
        let pool = Arc::new(NodePool::new(
            addr.clone(),
            self.opts.clone(),
            self.pool_size,
            readonly,
        ));
        pools.insert(addr, pool.clone());
        pool
    }

    /// Records why the last refresh failed (`None` after a success).
    pub fn set_last_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }

    /// Why the last refresh failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Asks the refresher for a new map soon (coalesced and rate-limited there).
    pub fn request_refresh(&self) {
        self.refresh.notify_one();
    }

    /// Resolves when a refresh was requested.
    pub async fn refresh_requested(&self) {
        self.refresh.notified().await
    }

    /// A receiver that sees the map version change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version_tx.subscribe()
    }

    /// A receiver that sees the masters (or the owner of slot 0) change:
    /// failovers, masters added or removed, not every slot that moves.
    pub fn subscribe_masters(&self) -> watch::Receiver<u64> {
        self.masters_tx.subscribe()
    }

    /// Installs a full map from `CLUSTER SLOTS` ranges; returns whether the
    /// ownership changed. Pools of nodes no longer in the map are dropped.
    pub fn install(&self, ranges: &[SlotRange]) -> bool {
        let mut owner = vec![NO_OWNER; SLOTS].into_boxed_slice();
        let mut shards: Vec<Shard> = Vec::new();
        let mut index: HashMap<&str, u16> = HashMap::new();
        for r in ranges {
            let idx = *index.entry(r.master.as_str()).or_insert_with(|| {
                shards.push(Shard {
                    master: self.pool(&r.master),
                    replicas: r.replicas.iter().map(|s| self.replica_pool(s)).collect(),
                });
                (shards.len() - 1) as u16
            });
            for slot in r.start..=r.end.min(SLOTS as u16 - 1) {
                owner[slot as usize] = idx;
            }
        }
        let old = self.load();
        let same = old.owner.iter().zip(owner.iter()).all(|(a, b)| {
            let an = old.shards.get(*a as usize).map(|s| s.master.addr());
            let bn = shards.get(*b as usize).map(|s| s.master.addr());
            an == bn
        });
        let replicas_same = old.shards.len() == shards.len()
            && old.shards.iter().zip(shards.iter()).all(|(a, b)| {
                a.master.addr() == b.master.addr()
                    && a.replicas
                        .iter()
                        .map(|r| r.addr())
                        .eq(b.replicas.iter().map(|r| r.addr()))
            });
        if same && replicas_same {
            return false;
        }
        self.log_change(&old, &owner, &shards);
        let keep: Vec<Arc<str>> = shards.iter().map(|s| s.master.addr().clone()).collect();
        let keep_replicas: Vec<Arc<str>> = shards
            .iter()
            .flat_map(|s| s.replicas.iter().map(|r| r.addr().clone()))
            .collect();
        self.swap_in(owner, shards);
        // Nodes that left the map: their connections close once unused.
        self.pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|addr, _| keep.contains(addr));
        self.replica_pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|addr, _| keep_replicas.contains(addr));
        true
    }

    /// Applies a `MOVED slot addr` at once (a full refresh follows).
    pub fn apply_moved(&self, slot: u16, addr: &str) {
        let old = self.load();
        if old.master(slot).is_some_and(|p| &**p.addr() == addr) {
            return;
        }
        tracing::debug!(slot, node = %addr, "MOVED: slot patched");
        let mut owner = old.owner.clone();
        let mut shards = old.shards.clone();
        let idx = match shards.iter().position(|s| &**s.master.addr() == addr) {
            Some(i) => i,
            None => {
                shards.push(Shard {
                    master: self.pool(addr),
                    replicas: Vec::new(),
                });
                shards.len() - 1
            }
        };
        if let Some(o) = owner.get_mut(slot as usize) {
            *o = idx as u16;
        }
        self.swap_in(owner, shards);
        self.request_refresh();
    }

    fn swap_in(&self, owner: Box<[u16]>, shards: Vec<Shard>) {
        let version = self.next_version.fetch_add(1, Ordering::Relaxed);
        let new = Arc::new(SlotMap {
            owner,
            shards,
            version,
        });
        let old = self.map.swap(new.clone());
        let masters_changed = masters_of(&old) != masters_of(&new);
        self.version_tx.send_replace(version);
        if masters_changed {
            self.masters_tx.send_replace(version);
        }
    }

    fn log_change(&self, old: &SlotMap, owner: &[u16], shards: &[Shard]) {
        let mut moved = 0usize;
        let mut summary: HashMap<(String, String), usize> = HashMap::new();
        for (slot, &o) in owner.iter().enumerate() {
            let before = old
                .master(slot as u16)
                .map(|p| p.addr().to_string())
                .unwrap_or_else(|| "-".into());
            let after = shards
                .get(o as usize)
                .map(|s| s.master.addr().to_string())
                .unwrap_or_else(|| "-".into());
            if before != after {
                moved += 1;
                *summary.entry((before, after)).or_default() += 1;
            }
        }
        let covered = owner.iter().filter(|&&o| o != NO_OWNER).count();
        let changes: Vec<String> = summary
            .iter()
            .map(|((a, b), n)| format!("{n} slots {a} -> {b}"))
            .collect();
        tracing::info!(
            masters = shards.len(),
            covered,
            moved,
            changes = %changes.join(", "),
            "topology changed"
        );
    }
}
