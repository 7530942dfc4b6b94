//! Carrying commands to the backends: staging pipelined commands per node,
//! queueing on a node's connection, and waiting for room or for a slot's owner.

use super::redirect::too_many_private;
use super::*;

impl Core {
    /// Records a single-target command and sends it.
    pub(super) async fn start(&mut self, sent: Sent, seq: u64) {
        if let Some(later) = self.start_now(sent, seq) {
            Box::pin(self.send_later(later)).await;
        }
    }

    /// [`Core::start`] without waiting; returns what must wait.
    pub(super) fn start_now(&mut self, sent: Sent, seq: u64) -> Option<Later> {
        let (target, payload, via, skip) =
            (sent.target(), sent.payload.clone(), sent.via, sent.skip);
        self.push(Pending::Single(sent));
        self.send_now(target, payload, false, via, skip, seq, 0)
    }

    /// The master to stage the command routed as `route` for (see
    /// [`Core::stage`]), if it is a plain command of an input batch: one
    /// slot with a known owner, read from the master, no transaction, no
    /// WAIT policy, and small enough that copying it costs nothing.
    pub(super) fn stage_target(&self, route: &Route, len: usize) -> Option<Arc<NodePool>> {
        let Route::Slot(slot) = route else {
            return None;
        };
        let plain = self.staging
            && !self.track
            && self.multi.is_none()
            && len <= STAGE_MAX
            && self.config.durability.wait_replicas == 0
            && !(self.scratch.readonly && self.config.read_from != ReadFrom::Master);
        if !plain {
            return None;
        }
        self.ctx.topology.load().master(*slot).cloned()
    }

    /// Holds a plain command for `pool`'s node until the input batch ends.
    pub(super) fn stage(&mut self, pool: Arc<NodePool>, payload: Bytes, seq: u64) {
        let Some(staged) = self.staged.iter_mut().find(|s| Arc::ptr_eq(&s.pool, &pool)) else {
            self.staged.push(Staged {
                pool,
                first: payload,
                first_seq: seq,
                payload: BytesMut::new(),
                seqs: Vec::new(),
            });
            return;
        };
        if staged.seqs.is_empty() {
            // Sized for a typical pipeline's share, so that staging does
            // not grow them command by command.
            staged
                .payload
                .reserve(staged.first.len() * STAGED_COMMANDS + payload.len());
            staged.payload.extend_from_slice(&staged.first);
            staged.seqs.reserve(STAGED_COMMANDS);
            staged.seqs.push(staged.first_seq);
        }
        staged.payload.extend_from_slice(&payload);
        staged.seqs.push(seq);
    }

    /// Sends the staged commands: one request per node, whose replies come
    /// back together (one command alone is sent as itself).
    pub(super) async fn flush_staged(&mut self) {
        let waiting = self.flush_now();
        if !waiting.is_empty() {
            // Rare (a full queue): boxed, so the common path stays small.
            Box::pin(self.send_all_later(waiting)).await;
        }
    }

    async fn send_all_later(&self, waiting: Vec<Later>) {
        for later in waiting {
            self.send_later(later).await;
        }
    }

    /// [`Core::flush_staged`] without waiting; returns what must wait.
    fn flush_now(&mut self) -> Vec<Later> {
        let mut waiting = Vec::new();
        if self.staged.is_empty() {
            return waiting;
        }
        let mut staged = std::mem::take(&mut self.staged);
        for s in staged.drain(..) {
            let (payload, replies, reply_to) = if s.seqs.is_empty() {
                (s.first, 1, self.reply_to(s.first_seq, 0))
            } else {
                let id = self.next_group;
                self.next_group = self.next_group.wrapping_add(1);
                let count = s.seqs.len() as u32;
                self.groups.push((id, s.seqs));
                (s.payload.freeze(), count, self.reply_to(id, PIPELINE_GROUP))
            };
            let req = BackendRequest {
                payload,
                asking: false,
                skip: 0,
                then_wait: None,
                caching: false,
                replies,
                reply_to,
            };
            if let Some(later) = self.send_to(&s.pool, Via::Shared, req) {
                waiting.push(later);
            }
        }
        // Keep the allocation for the next batch.
        self.staged = staged;
        waiting
    }

    /// Sends a command to the owner of a slot (waiting a bounded time for an
    /// unknown owner to be discovered), to a node by address, or to the
    /// client's pinned connection.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send(
        &self,
        target: Target,
        payload: Bytes,
        asking: bool,
        via: Via,
        skip: u32,
        seq: u64,
        part: u32,
    ) {
        if let Some(later) = self.send_now(target, payload, asking, via, skip, seq, part) {
            // Rare (a full queue, a slot without an owner): boxed, so the
            // common path does not carry this future's state around.
            Box::pin(self.send_later(later)).await;
        }
    }

    /// Sends without waiting when it can; returns what must wait.
    #[allow(clippy::too_many_arguments)]
    fn send_now(
        &self,
        target: Target,
        payload: Bytes,
        asking: bool,
        via: Via,
        skip: u32,
        seq: u64,
        part: u32,
    ) -> Option<Later> {
        let reply_to = self.reply_to(seq, part);
        let mut req = BackendRequest {
            payload,
            asking,
            skip,
            then_wait: None,
            caching: self.track && via == Via::Shared && !asking,
            replies: 1,
            reply_to,
        };
        if via == Via::Pinned {
            match &self.pinned {
                Some(p) => {
                    return p
                        .conn
                        .try_send(req)
                        .err()
                        .map(|req| Later::Conn(p.conn.clone(), req))
                }
                None => req.reply_to.send(
                    reply::error(
                        "ERR slotbridge: the WATCH connection was closed; retry the transaction",
                    ),
                    ReplyStatus::Final,
                ),
            }
            return None;
        }
        let pool = match target {
            Target::Slot(slot) => {
                let (owner, replicas) = {
                    let map = self.ctx.topology.load();
                    (map.master(slot).cloned(), map.replica_count(slot))
                };
                let durability = &self.config.durability;
                if via == Via::Shared && durability.wait_replicas > 0 {
                    req.then_wait = durability::wait_after(durability, replicas, &req.payload);
                }
                match owner {
                    Some(p) => p,
                    None => return Some(Later::Owner(slot, via, req)),
                }
            }
            Target::Addr(addr) => self.ctx.topology.pool(&addr),
            Target::Replica(slot) => {
                let map = self.ctx.topology.load();
                match map.replica(slot, seq as usize).or_else(|| map.master(slot)) {
                    Some(p) => p.clone(),
                    None => {
                        req.reply_to
                            .send(self.slot_unserved(slot), ReplyStatus::Final);
                        return None;
                    }
                }
            }
            Target::NthMaster(n) => match self.any_master(n) {
                Some(addr) => self.ctx.topology.pool(&addr),
                None => {
                    req.reply_to.send(self.no_cluster(), ReplyStatus::Final);
                    return None;
                }
            },
        };
        self.send_to(&pool, via, req)
    }

    /// Queues `req` on a connection to `pool`'s node: its shared one, or a
    /// private one for a blocking command (or for a command that must not
    /// queue behind the shared one, [`Via::Private`]). Returns it when the
    /// queue is full.
    pub(super) fn send_to(&self, pool: &NodePool, via: Via, req: BackendRequest) -> Option<Later> {
        let proto = self.client.proto;
        if !matches!(via, Via::Blocking | Via::Private) {
            // The shared connection is borrowed: a handle is cloned only
            // when the request must wait for room.
            let conn = pool.conn(proto);
            return conn
                .try_send(req)
                .err()
                .map(|req| Later::Conn(conn.clone(), req));
        }
        if via == Via::Blocking {
            return self.send_blocking(pool, req);
        }
        // A private connection of its own (Via::Private): one request.
        let permit = self.ctx.blocking.clone().try_acquire_owned().ok();
        let opts = self.ctx.topology.conn_options().clone();
        let conn = BackendConn::spawn_dedicated(pool.addr().clone(), opts, proto, permit, None);
        conn.try_send(req).err().map(|req| Later::Conn(conn, req))
    }

    /// Sends a blocking command on the client's private connection to
    /// `pool`'s node: the one its previous blocking command used, if that
    /// is still open (the command before it has been answered: a blocking
    /// command waits for the replies before it), else a new one, which is
    /// kept for the next (see [`SparePrivate`]).
    fn send_blocking(&self, pool: &NodePool, req: BackendRequest) -> Option<Later> {
        let proto = self.client.proto;
        let mut spare = self.spare_private.lock().unwrap_or_else(|p| p.into_inner());
        let reusable = spare.as_ref().is_some_and(|s| {
            s.addr == *pool.addr()
                && s.proto == proto
                && !s.conn.is_closed()
                && s.server_id.load(std::sync::atomic::Ordering::Acquire) >= 0
        });
        if !reusable {
            // The old one (another node) closes and frees its permit.
            if let Some(old) = spare.take() {
                self.client.info.forget_blocked(&old.server_id);
            }
            let Ok(permit) = self.ctx.blocking.clone().try_acquire_owned() else {
                req.reply_to.send(too_many_private(), ReplyStatus::Final);
                return None;
            };
            let (conn, server_id) =
                crate::client::nodecall::blocking_conn(&self.ctx, pool, proto, permit);
            *spare = Some(SparePrivate {
                addr: pool.addr().clone(),
                proto,
                conn,
                server_id,
                idle_since: std::time::Instant::now(),
            });
        }
        let s = spare.as_mut()?;
        s.idle_since = std::time::Instant::now();
        self.client
            .info
            .set_blocked(crate::client::registry::BlockedOn {
                addr: s.addr.clone(),
                server_id: s.server_id.clone(),
            });
        s.conn
            .try_send(req)
            .err()
            .map(|req| Later::Conn(s.conn.clone(), req))
    }

    /// The client's blocking command was answered: it no longer counts as
    /// blocked, though its connection stays open for the next one.
    pub(super) fn blocking_answered(&self) {
        let mut spare = self.spare_private.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = spare.as_mut() {
            self.client.info.forget_blocked(&s.server_id);
            s.idle_since = std::time::Instant::now();
        }
    }

    /// Finishes a send that had to wait.
    pub(super) async fn send_later(&self, later: Later) {
        match later {
            Later::Conn(conn, req) => conn.send(req).await,
            Later::Owner(slot, via, req) => match self.wait_for_owner(slot).await {
                Some(pool) => {
                    if let Some(Later::Conn(conn, req)) = self.send_to(&pool, via, req) {
                        conn.send(req).await;
                    }
                }
                None => req
                    .reply_to
                    .send(self.slot_unserved(slot), ReplyStatus::Final),
            },
        }
    }

    pub(super) async fn wait_for_owner(&self, slot: u16) -> Option<Arc<NodePool>> {
        let topology = &self.ctx.topology;
        let mut versions = topology.subscribe();
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(self.ctx.config().limits.slot_wait_ms);
        loop {
            if let Some(p) = topology.load().master(slot) {
                return Some(p.clone());
            }
            topology.request_refresh();
            if tokio::time::timeout_at(deadline, versions.changed())
                .await
                .is_err()
            {
                return topology.load().master(slot).cloned();
            }
        }
    }
}
