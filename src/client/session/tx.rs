//! `MULTI`/`EXEC`/`WATCH` for a session: queueing, the pinned `WATCH`
//! connection, and per-slot transactions.

use super::dispatch::newer_than_7_0;
use super::redirect::too_many_private;
use super::*;
use crate::acl;
use crate::client::pause::may_write;
use crate::command::keys::arity_ok;
use crate::command::{is_eval, is_evalsha};

impl Core {
    /// `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH` outside a transaction.
    pub(super) async fn tx_command(
        &mut self,
        cmd: TxCmd,
        view: &CommandView<'_>,
        raw: Bytes,
        seq: u64,
    ) {
        match cmd {
            TxCmd::Multi => {
                self.multi = Some(TxState {
                    track: std::mem::take(&mut self.track_tx),
                    user_version: self.client.user_version,
                    ..TxState::default()
                });
                self.ready(Bytes::from_static(reply::OK));
            }
            TxCmd::Exec => self.ready(reply::error("ERR EXEC without MULTI")),
            TxCmd::Discard => self.ready(reply::error("ERR DISCARD without MULTI")),
            TxCmd::Unwatch => {
                self.pinned = None;
                self.ready(Bytes::from_static(reply::OK));
            }
            TxCmd::Watch(slot) => {
                if let Some(p) = &self.pinned {
                    if p.slot != slot {
                        let msg = format!(
                            "CROSSSLOT Keys in request don't hash to the same slot (command 'watch', slots {} and {slot}); all watched keys must be in one slot: use a {{hash tag}}",
                            p.slot
                        );
                        self.ready(reply::error(&msg));
                        return;
                    }
                } else {
                    match self.open_pinned(slot).await {
                        Ok(p) => self.pinned = Some(p),
                        Err(e) => {
                            self.ready(e);
                            return;
                        }
                    }
                }
                if let Some(p) = &mut self.pinned {
                    for i in 1..view.len() {
                        if !p.keys.iter().any(|k| k[..] == *view.get(i)) {
                            p.keys.push(Bytes::copy_from_slice(view.get(i)));
                        }
                    }
                }
                let mut sent = Sent::to_slot(raw, slot);
                sent.via = Via::Pinned;
                // The client's later commands wait for its reply: sent on
                // the shared connections, a write of its own could reach
                // the node before the WATCH does on the new connection.
                self.merging = Some(seq);
                self.start(sent, seq).await;
            }
        }
    }

    /// After each command: shows the commands queued in an open `MULTI`
    /// (`CLIENT LIST`), and lets a private connection kept for blocking
    /// commands go once none came for a second (see [`SparePrivate`]).
    pub(super) fn after_command(&mut self) {
        let info = &self.client.info;
        info.set_multi(self.multi.as_ref().map(|tx| tx.queued.len()));
        info.set_watching(self.pinned.as_ref().map_or(0, |p| p.keys.len()));
        let spare = self
            .spare_private
            .get_mut()
            .unwrap_or_else(|p| p.into_inner());
        if spare
            .as_ref()
            .is_some_and(|s| s.idle_since.elapsed() > SPARE_PRIVATE_IDLE)
        {
            *spare = None;
        }
    }

    async fn open_pinned(&self, slot: u16) -> Result<Pinned, Bytes> {
        let pool = match self.ctx.topology.load().master(slot).cloned() {
            Some(p) => p,
            None => self
                .wait_for_owner(slot)
                .await
                .ok_or_else(|| self.slot_unserved(slot))?,
        };
        let permit = self
            .ctx
            .blocking
            .clone()
            .try_acquire_owned()
            .map_err(|_| too_many_private())?;
        let opts = self.ctx.topology.conn_options().clone();
        let conn = BackendConn::spawn_dedicated(
            pool.addr().clone(),
            opts,
            self.client.proto,
            Some(permit),
            None,
        );
        Ok(Pinned {
            conn,
            slot,
            keys: Vec::new(),
        })
    }

    /// A command while `MULTI` is open: queued, or refused (which makes
    /// `EXEC` abort, as in Redis).
    pub(super) async fn queue_in_multi(
        &mut self,
        route: Route,
        raw: Bytes,
        view: &CommandView<'_>,
    ) {
        let seq = self.next_seq();
        let spec = crate::command::find(view);
        // As the client sent it (rules run EVAL as EVALSHA).
        let name = spec.map(|_| self.current.0).unwrap_or("?");
        // Without the script cache (a lock): a queued EVALSHA counts as a
        // write for CLIENT PAUSE WRITE.
        let writes = spec.is_some_and(|s| may_write(s, view, None));
        let per_slot = self.ctx.config().transactions == TxMode::PerSlot && self.pinned.is_none();
        let watching = self.pinned.is_some();
        // The database commands the proxy answers (MOVE, COPY ... DB,
        // SWAPDB) give their reply at EXEC, in its array, as in Redis: a
        // script returns it there. So do the errors one server gives when
        // it runs a queued command (CLUSTER and READONLY without cluster
        // support, DEBUG ERROR and the DEBUG the proxy refuses).
        let at_exec = matches!(
            name,
            "move"
                | "copy"
                | "swapdb"
                | "script|debug"
                | "debug"
                | "readonly"
                | "readwrite"
                | "asking"
                | "cluster"
        ) || name.starts_with("cluster|");
        let (route, raw) = match route {
            Route::Reply(answer)
                if at_exec
                    && !answer.starts_with(b"-CROSSSLOT")
                    && spec.is_some_and(|s| arity_ok(s, view.len())) =>
            {
                let route = match self.scratch.keys.first() {
                    Some(&k) => Route::Slot(crate::cluster::slot::slot(view.get(k))),
                    None => Route::AnyMaster,
                };
                // Inside MULTI, EXEC's reply is pending: Redis refuses.
                let answer = if name == "script|debug" {
                    reply::error("ERR SCRIPT DEBUG must be called outside a pipeline")
                } else {
                    answer
                };
                (route, reply_at_exec(&answer))
            }
            // SELECT 0, or a bad index: answered at EXEC too. Another
            // database aborts the transaction (its commands would run in
            // database 0).
            Route::Local(Local::Select) => {
                let answer = crate::client::local::select(view.get(1));
                match crate::protocol::request::parse_i64(view.get(1)) {
                    Some(1..=15) => (Route::Reply(answer), raw),
                    _ => (Route::AnyMaster, reply_at_exec(&answer)),
                }
            }
            other => (other, raw),
        };
        let Some(tx) = self.multi.as_mut() else {
            return;
        };
        let slot = match route {
            Route::Tx(TxCmd::Exec) => {
                self.exec(seq).await;
                return;
            }
            Route::Tx(TxCmd::Discard) => {
                self.multi = None;
                self.pinned = None;
                self.ready(Bytes::from_static(reply::OK));
                return;
            }
            // Valkey 8 refuses both before running them, which makes EXEC
            // abort; Redis answers its own error and keeps the transaction.
            Route::Tx(TxCmd::Multi | TxCmd::Watch(_)) if crate::nodes::valkey_at_least(8, 0) => {
                self.ready(reply::error(&crate::nodes::no_multi_error(name)));
                if let Some(tx) = self.multi.as_mut() {
                    tx.failed = true;
                }
                return;
            }
            Route::Tx(TxCmd::Multi) => {
                self.ready(reply::error("ERR MULTI calls can not be nested"));
                return;
            }
            Route::Tx(TxCmd::Watch(_)) => {
                self.ready(reply::error("ERR WATCH inside MULTI is not allowed"));
                return;
            }
            Route::Local(cmd @ (Local::Quit | Local::Reset)) => {
                self.local(cmd, view);
                return;
            }
            // A cluster delivers a PUBLISH run on any node to every node:
            // it does not tie the transaction to the home slot it is
            // routed by outside one (Celery's result backend sends SET and
            // PUBLISH in one MULTI).
            Route::Slot(_) if matches!(name, "publish" | "function|list" | "function|dump") => None,
            Route::Slot(s) | Route::Blocking(s) => Some(s),
            Route::AnyMaster
            | Route::Tx(TxCmd::Unwatch)
            | Route::Local(Local::Ping | Local::Echo) => None,
            Route::Reply(err) if err.first() == Some(&b'-') => {
                tx.failed = true;
                self.ready(err);
                return;
            }
            // The commands the proxy computes in two steps (PFMERGE, BITOP,
            // the stores): not inside a MULTI.
            // LCS's reply shape depends on the protocol, which the
            // per-slot EXEC merge does not know: not inside a MULTI.
            Route::Split(kind)
                if per_slot && !kind.takes_two_steps() && !matches!(kind, SplitKind::Lcs(_)) =>
            {
                let max_keys = self.ctx.config().limits.max_keys_per_subcommand;
                let subs = split::split(kind, view, &self.scratch.keys, max_keys);
                tx.plan
                    .push(Queued::Split(kind, subs, self.scratch.keys.len()));
                tx.queued.push(raw);
                tx.originals
                    .push(self.queued_original.take().unwrap_or_default());
                tx.writes |= writes;
                self.ready(Bytes::from_static(b"+QUEUED\r\n"));
                return;
            }
            Route::Split(_)
            | Route::CrossSlotPop
            | Route::CrossSlotStreams
            | Route::CrossSlotMove => {
                tx.failed = true;
                // A command `per_slot` would split (MSET, DEL, ...) gets
                // the transaction's wording, which names that setting.
                let splits_per_slot = matches!(route, Route::Split(kind)
                    if !kind.takes_two_steps() && !matches!(kind, SplitKind::Lcs(_)))
                    && !watching;
                let keys = &self.scratch.keys;
                let a = keys
                    .first()
                    .map(|&k| crate::cluster::slot::slot(view.get(k)))
                    .unwrap_or(0);
                let b = keys
                    .iter()
                    .map(|&k| crate::cluster::slot::slot(view.get(k)))
                    .find(|&s| s != a)
                    .unwrap_or(a);
                self.ready(if splits_per_slot {
                    tx_cross_slot(name, a, b, false)
                } else {
                    cross_slot(name, a, b)
                });
                return;
            }
            // One server's sleep: the transaction's master's, in its
            // place, all of one transaction's at most the limit outside it.
            Route::Fanout(Fanout::AllOk)
                if name == "debug" && view.get(1).eq_ignore_ascii_case(b"sleep") =>
            {
                tx.sleep_secs += crate::command::route::debug_sleep_secs(view.get(2));
                if crate::command::route::sleeps_too_long(tx.sleep_secs) {
                    tx.failed = true;
                    self.ready(crate::command::route::debug_sleep_refused());
                    return;
                }
                None
            }
            // For every master: the transaction's node runs it in its
            // place, the others right before (see `fan_out_others`), as
            // outside a transaction.
            Route::Fanout(Fanout::AllOk) if runs_everywhere(name) && !watching => {
                tx.fanouts.push((tx.queued.len(), name));
                None
            }
            // With WATCH, EXEC may abort after the other masters ran it,
            // which cannot be undone.
            Route::Fanout(Fanout::AllOk) if runs_everywhere(name) => {
                tx.failed = true;
                let msg = format!("ERR slotbridge: '{name}' cannot be used inside MULTI after WATCH on a cluster (the other masters would run it even if EXEC aborts): send it outside the transaction");
                self.ready(reply::error(&msg));
                return;
            }
            // INFO describes all masters: answered at EXEC, in its place
            // (see `answer_infos`).
            Route::Fanout(Fanout::Info) => {
                tx.infos.push(tx.queued.len());
                None
            }
            // KEYS likewise (see `answer_keys`).
            Route::Fanout(Fanout::Concat) => {
                tx.keys.push((tx.queued.len(), self.filter.take()));
                None
            }
            // A reply the proxy makes (ROLE) has no place in a node's EXEC.
            Route::Reply(_)
            | Route::ProxySort
            | Route::Local(_)
            | Route::Fanout(_)
            | Route::Scan
            | Route::RandomKey
            | Route::Sub(_) => {
                tx.failed = true;
                let msg =
                    format!("ERR slotbridge: '{name}' cannot be used inside MULTI on a cluster");
                self.ready(reply::error(&msg));
                return;
            }
        };
        let watched = self.pinned.as_ref().map(|p| p.slot);
        if let (Some(s), false) = (slot, per_slot) {
            match tx.slot.or(watched) {
                Some(t) if t != s => {
                    tx.failed = true;
                    self.ready(tx_cross_slot(name, t, s, watched.is_some()));
                    return;
                }
                _ => tx.slot = Some(s),
            }
        }
        if is_eval(self.scratch.name) {
            self.ctx
                .scripts
                .remember(&raw.slice(view.args[1].0..view.args[1].1));
        }
        // Inside MULTI a NOSCRIPT cannot be recovered: send a known
        // script's body instead of its SHA1.
        let raw = match (
            is_evalsha(self.scratch.name),
            self.ctx.scripts.get(view.get(1)),
        ) {
            (true, Some(body)) => {
                let name: &[u8] = if view.get(0).len() > 7 {
                    b"EVAL_RO"
                } else {
                    b"EVAL"
                };
                let args: Vec<&[u8]> = std::iter::once(name)
                    .chain(std::iter::once(&body[..]))
                    .chain((2..view.len()).map(|i| view.get(i)))
                    .collect();
                reply::command(args)
            }
            _ => raw,
        };
        tx.plan.push(Queued::One(slot));
        tx.queued.push(raw);
        tx.originals
            .push(self.queued_original.take().unwrap_or_default());
        tx.writes |= writes;
        self.ready(Bytes::from_static(b"+QUEUED\r\n"));
    }

    async fn exec(&mut self, seq: u64) {
        let Some(mut tx) = self.multi.take() else {
            return;
        };
        let pinned = self.pinned.take();
        if tx.failed {
            if let Some(line) = tx.exec_line.take() {
                self.ctx.monitors.send(line);
            }
            self.ready(Bytes::from_static(EXECABORT));
            return;
        }
        self.monitor_queued(&mut tx);
        self.check_queued_again(&mut tx);
        self.answer_infos(&mut tx).await;
        self.answer_keys(&mut tx).await;
        if !tx.fanouts.is_empty() {
            if pinned.is_none() && tx.spans_slots() {
                self.ready(reply::error(
                    "ERR slotbridge: FLUSHALL, FLUSHDB, CONFIG SET or a DEBUG setting cannot run in its place in a transaction over several slots (transactions = \"per_slot\"): send it outside MULTI",
                ));
                return;
            }
            let home = tx.slot.or(pinned.as_ref().map(|p| p.slot));
            self.fan_out_others(&mut tx, home.unwrap_or(PUBSUB_HOME_SLOT))
                .await;
        }
        let tracked = tx.track && tx.reads;
        if pinned.is_none() && tx.spans_slots() {
            self.exec_per_slot(&tx, seq).await;
            if tracked {
                // Per-slot blocks carry no CLIENT CACHING: flush after.
                self.last_tracked = seq + 1;
                self.tell(&crate::tracking::Notice::All);
            }
            return;
        }
        let (payload, skip) = tx.block();
        let slot = tx.slot.or(pinned.as_ref().map(|p| p.slot));
        // Without keys, on the Pub/Sub home node: a PUBLISH there counts
        // the proxy's subscribers, as one server would.
        let mut sent = Sent::to_slot(payload, slot.unwrap_or(PUBSUB_HOME_SLOT));
        sent.skip = skip;
        if tracked {
            self.last_tracked = seq + 1;
        }
        match pinned {
            Some(p) => {
                sent.via = Via::Pinned;
                let req = BackendRequest {
                    payload: sent.payload.clone(),
                    asking: false,
                    skip,
                    then_wait: None,
                    caching: false,
                    replies: 1,
                    reply_to: self.reply_to(seq, 0),
                };
                self.push(Pending::Single(sent));
                // The client's later commands wait for EXEC's reply: on
                // the shared connections they could run before it.
                self.merging = Some(seq);
                // Dropping the handle afterwards closes the connection once
                // EXEC has answered, which also clears the watches.
                p.conn.send(req).await;
                if tracked {
                    // Not on a shared connection: no CLIENT CACHING; flush.
                    self.tell(&crate::tracking::Notice::All);
                }
            }
            None => {
                if tracked {
                    // CLIENT CACHING YES before MULTI covers the whole
                    // transaction, as the client's own CACHING did.
                    sent.tracked = true;
                    self.track = true;
                }
                self.start(sent, seq).await;
                self.track = false;
            }
        }
    }

    /// Shows a monitor the commands `EXEC` runs, then the `EXEC` (see
    /// `TxState::exec_line`).
    fn monitor_queued(&self, tx: &mut TxState) {
        let Some(exec_line) = tx.exec_line.take() else {
            return;
        };
        let mut parser = queued_parser();
        for original in &tx.originals {
            if let Ok(crate::protocol::request::Parsed::Command(_)) = parser.parse(original) {
                let view = CommandView {
                    raw: original,
                    args: parser.args(),
                };
                if let Some(line) = self.ctx.monitors.line(&self.client.info.peer, &view) {
                    self.ctx.monitors.send(line);
                }
            }
        }
        self.ctx.monitors.send_now(&exec_line);
    }

    /// Checks each queued command again against the user's rules, as
    /// Redis does at `EXEC` (they may have changed since it was queued): a
    /// command now refused is replaced by a script that answers Redis's
    /// error in its place, and logged in `ACL LOG` (context `multi`).
    fn check_queued_again(&mut self, tx: &mut TxState) {
        let Some(acl) = self.client.acl.clone() else {
            return;
        };
        if tx.user_version == self.client.user_version {
            // The rules did not change since MULTI.
            return;
        }
        let new_texts = newer_than_7_0(&self.ctx.redis_version());
        let user = self.client.info.names().user;
        let user = user.as_deref().unwrap_or(b"default").to_vec();
        let mut parser = queued_parser();
        for i in 0..tx.originals.len() {
            let original = tx.originals[i].clone();
            if !matches!(
                parser.parse(&original),
                Ok(crate::protocol::request::Parsed::Command(_))
            ) {
                continue;
            }
            let view = CommandView {
                raw: &original,
                args: parser.args(),
            };
            let Err(denied) = acl.check(&view) else {
                continue;
            };
            self.log_denial(&denied, &view, true);
            // Redis's reasons, the same in 7.0 and later versions.
            let text = match &denied {
                acl::Denied::SortOption(_) => {
                    let refused = denied.reply(&user, new_texts);
                    String::from_utf8_lossy(&refused[1..refused.len() - 2])
                        .trim_start_matches("NOPERM ")
                        .to_string()
                }
                acl::Denied::Key(_) => changed_rules("no permission to touch the specified keys"),
                acl::Denied::Channel(_) => {
                    changed_rules("no permission to access one of the channels used as arguments")
                }
                acl::Denied::Database(_) => changed_rules("no permission"),
                _ => changed_rules("no permission to execute the command or subcommand"),
            };
            tx.queued[i] = error_at_exec(text.as_bytes());
            // A refused INFO is not answered with the masters' INFO, nor
            // a refused FLUSHALL or CONFIG SET run on the other masters.
            tx.infos.retain(|&at| at != i);
            tx.keys.retain(|&(at, _)| at != i);
            tx.fanouts.retain(|&(at, _)| at != i);
            if let Some(plan) = tx.plan.get_mut(i) {
                if matches!(plan, Queued::Split(..)) {
                    *plan = Queued::One(None);
                }
            }
        }
    }

    /// A pool for each master, the home first.
    fn master_pools(&self) -> Vec<Arc<NodePool>> {
        super::redirect::masters(&self.ctx)
            .iter()
            .map(|addr| self.ctx.topology.pool(addr))
            .collect()
    }

    /// Replaces each queued `INFO` by a script returning the masters'
    /// INFO merged as outside a transaction, fetched now (right before
    /// the transaction runs, which one server's INFO inside it would
    /// describe).
    async fn answer_infos(&mut self, tx: &mut TxState) {
        if tx.infos.is_empty() {
            return;
        }
        // The home first, as outside a transaction (its Pub/Sub counts).
        let masters = self.master_pools();
        let facts = crate::client::local::proxy_facts(&self.ctx);
        for &i in &tx.infos {
            let Some(queued) = tx.queued.as_slice().get(i).cloned() else {
                continue;
            };
            let replies: Vec<Bytes> = ask_all(&masters, &queued, Proto::Resp2, 5)
                .await
                .into_iter()
                .flatten()
                .filter(|r| r.first() == Some(&b'$'))
                .collect();
            let refs: Vec<&Bytes> = replies.iter().collect();
            let merged = crate::info::merge(&refs, &facts, Proto::Resp2);
            let text = crate::protocol::scan::bulk_body(&merged).unwrap_or_default();
            // A verbatim string in RESP3 (`=...txt:`), a bulk string in
            // RESP2, as INFO itself.
            tx.queued[i] = reply::command([
                &b"EVAL"[..],
                b"return {verbatim_string={format='txt', string=ARGV[1]}}",
                b"0",
                text,
            ]);
        }
    }

    /// Replaces each queued `KEYS` by a script returning the keys of all
    /// masters, fetched now: right before the transaction runs, not
    /// atomically with it (Bull's `Queue.empty()` lists keys in the
    /// `MULTI` that deletes its lists).
    async fn answer_keys(&mut self, tx: &mut TxState) {
        if tx.keys.is_empty() {
            return;
        }
        let masters = self.master_pools();
        for (i, filter) in std::mem::take(&mut tx.keys) {
            let Some(queued) = tx.queued.as_slice().get(i).cloned() else {
                continue;
            };
            let replies = ask_all(&masters, &queued, Proto::Resp2, 10).await;
            if let Some(err) = first_failure(&replies, |r| r.first() == Some(&b'*')) {
                tx.queued[i] = error_at_exec(&err);
                continue;
            }
            let refs: Vec<&Bytes> = replies.iter().flatten().collect();
            let mut all = crate::merge::concat(&refs);
            if !self.ctx.rules.is_empty() {
                if let Some(decoded) =
                    rewrite::decode_reply(&self.ctx.rules, "keys", &all, filter.as_deref())
                {
                    all = decoded;
                }
            }
            let mut args: Vec<&[u8]> = vec![b"EVAL", b"return ARGV", b"0"];
            let names = crate::protocol::scan::children(&all).unwrap_or_default();
            args.extend(
                names
                    .iter()
                    .filter_map(|&(s, e)| crate::protocol::scan::bulk_body(&all[s..e])),
            );
            tx.queued[i] = reply::command(args);
        }
    }

    /// Runs each queued `FLUSHALL`, `FLUSHDB` or `CONFIG SET` on the
    /// masters other than the one of `slot`, where the transaction runs
    /// it in its place. Where one of them fails, the transaction's node
    /// does not run it either and the client gets that master's error in
    /// its place. A `CONFIG SET` they all took is remembered, as outside
    /// a transaction, for masters that join later.
    async fn fan_out_others(&mut self, tx: &mut TxState, slot: u16) {
        let home = self
            .ctx
            .topology
            .load()
            .master(slot)
            .map(|m| m.addr().clone());
        let addrs: Vec<Arc<str>> = super::redirect::masters(&self.ctx)
            .into_iter()
            .filter(|addr| Some(addr) != home.as_ref())
            .collect();
        let others: Vec<_> = addrs.iter().map(|a| self.ctx.topology.pool(a)).collect();
        for &(i, name) in &tx.fanouts {
            let Some(queued) = tx.queued.as_slice().get(i).cloned() else {
                continue;
            };
            // A synchronous flush of a large keyspace takes a while.
            let replies = ask_all(&others, &queued, self.client.proto, 60).await;
            let failure = first_failure(&replies, |r| r.starts_with(b"+OK"));
            if failure.is_none() && name == "config|set" {
                let mut masters = addrs.clone();
                masters.extend(home.clone());
                self.ctx.node_settings.remember(&queued, masters);
            }
            if let Some(err) = failure {
                tx.queued[i] = error_at_exec(&err);
            }
        }
    }

    /// `EXEC` of a per-slot transaction: one `MULTI/EXEC` per slot, sent
    /// at once, replies reassembled in the client's order.
    async fn exec_per_slot(&mut self, tx: &TxState, seq: u64) {
        let (blocks, plan) = tx.per_slot_blocks();
        let mut sends = Vec::with_capacity(blocks.len());
        let parts: Vec<Part> = blocks
            .into_iter()
            .map(|(slot, payload, skip)| {
                // A keyless-only block goes to any master.
                let sent = Sent {
                    slot,
                    skip,
                    ..Sent::to_slot(payload, 0)
                };
                sends.push((sent.target(), sent.payload.clone(), skip));
                Part {
                    sent,
                    positions: split::Positions::default(),
                    reply: None,
                    group: 1,
                }
            })
            .collect();
        self.push(Pending::Multi(Box::new(Multi {
            kind: MergeKind::Tx(Box::new(plan)),
            name: "exec",
            remaining: parts.len(),
            parts,
            total_keys: 0,
        })));
        for (i, (target, payload, skip)) in sends.into_iter().enumerate() {
            self.send(target, payload, false, Via::Shared, skip, seq, i as u32)
                .await;
        }
    }
}

/// Whether a command fanned out to every master runs inside `MULTI` (see
/// `Core::fan_out_others`).
fn runs_everywhere(name: &str) -> bool {
    // DEBUG here: its settings (SET-ACTIVE-EXPIRE, ...); SLEEP runs on
    // the transaction's master alone (see `queue_in_multi`).
    matches!(name, "flushall" | "flushdb" | "config|set" | "debug")
}

/// The text of the first of `replies` that is not `ok`: a node's error,
/// or a node that did not answer.
fn first_failure(replies: &[Option<Bytes>], ok: impl Fn(&Bytes) -> bool) -> Option<Bytes> {
    replies.iter().find_map(|r| match r {
        Some(r) if ok(r) => None,
        Some(r) if r.first() == Some(&b'-') => Some(r.slice(1..r.len().saturating_sub(2))),
        _ => Some(Bytes::from_static(
            b"ERR slotbridge: a master did not answer in time",
        )),
    })
}

/// Sends `payload` to every pool's node at once (so a slow or failing one
/// delays the caller by one request, not one per node), each bounded by
/// `secs` even without a request timeout: the replies in `pools`' order,
/// `None` where a node did not answer.
async fn ask_all(
    pools: &[Arc<NodePool>],
    payload: &Bytes,
    proto: Proto,
    secs: u64,
) -> Vec<Option<Bytes>> {
    let asks: Vec<_> = pools
        .iter()
        .map(|pool| {
            let (pool, payload) = (pool.clone(), payload.clone());
            tokio::spawn(async move {
                let ask = crate::client::nodecall::request(pool.conn(proto), payload, 0, false);
                tokio::time::timeout(std::time::Duration::from_secs(secs), ask).await
            })
        })
        .collect();
    let mut replies = Vec::with_capacity(asks.len());
    for ask in asks {
        replies.push(match ask.await {
            Ok(Ok(r)) => Some(r.data),
            _ => None,
        });
    }
    replies
}

/// The client's `EXEC` reply from the per-slot `EXEC` replies.
pub(super) fn merge_per_slot_exec(plan: &TxPlan, replies: &[&Bytes]) -> Bytes {
    let mut groups: Vec<Vec<Bytes>> = Vec::with_capacity(replies.len());
    for r in replies {
        match children(r) {
            Some(items) => groups.push(items.iter().map(|&(s, e)| r.slice(s..e)).collect()),
            // A slot's transaction was aborted (null): so is the whole.
            None => return (*r).clone(),
        }
    }
    let get = |g: usize, i: usize| {
        groups
            .get(g)
            .and_then(|items| <[Bytes]>::get(items, i))
            .cloned()
    };
    let mut out = BytesMut::new();
    reply::put_array(&mut out, plan.locs.len());
    for loc in &plan.locs {
        let item = match loc {
            Loc::One(g, i) => get(*g, *i),
            Loc::Split(parts, kind, nkeys) => {
                let items: Option<Vec<Bytes>> = parts.iter().map(|(g, i, _)| get(*g, *i)).collect();
                items.map(|items| {
                    let refs: Vec<&Bytes> = items.iter().collect();
                    if *kind == SplitKind::PfCount {
                        // Errors too are Redis's, decided key by key.
                        return merge::pfcount(&refs);
                    }
                    if let Some(e) = items.iter().find(|b| reply_kind(b[0]) == ReplyKind::Error) {
                        return e.clone();
                    }
                    match kind {
                        SplitKind::Mget => {
                            let with_pos: Vec<(&Bytes, &[u32])> = items
                                .iter()
                                .zip(parts)
                                .map(|(b, p)| (b, p.2.as_slice()))
                                .collect();
                            merge::mget(&with_pos, *nkeys)
                        }
                        SplitKind::Mset => merge::all_ok(&refs),
                        SplitKind::Msetex => merge::all_one(&refs),
                        SplitKind::Sum => merge::sum(&refs),
                        SplitKind::Sets(op) => merge::set_op(*op, &refs),
                        SplitKind::PfCount => merge::pfcount(&refs),
                        SplitKind::ZInterCard(limit) => merge::zintercard(*limit, &refs),
                        SplitKind::Lcs(_) => {
                            reply::error("ERR slotbridge: LCS across slots inside MULTI")
                        }
                        SplitKind::PfMerge
                        | SplitKind::Bitop(_)
                        | SplitKind::ZStore(_)
                        | SplitKind::SStore(_)
                        | SplitKind::ZRangeStore
                        | SplitKind::GeoStore
                        | SplitKind::ZRead(_) => {
                            reply::error("ERR slotbridge: a two-step command inside MULTI")
                        }
                    }
                })
            }
        };
        match item {
            Some(b) => out.extend_from_slice(&b),
            None => {
                return reply::error("ERR slotbridge: unexpected EXEC reply shape from a server")
            }
        }
    }
    out.freeze()
}

/// Redis's `EXEC` error for a queued command the user's changed rules
/// now refuse.
fn changed_rules(reason: &str) -> String {
    format!("NOPERM ACLs rules changed between the moment the transaction was accumulated and the EXEC call. This command is no longer allowed for the following reason: {reason}")
}

/// A parser for commands queued in `MULTI`, read again at `EXEC`: they
/// were accepted once already, so no limit refuses them now (a refusal
/// would skip their check).
fn queued_parser() -> crate::protocol::request::RequestParser {
    crate::protocol::request::RequestParser::new(crate::protocol::request::RequestLimits {
        max_bulk_len: usize::MAX,
        max_args: usize::MAX,
    })
}

/// `-CROSSSLOT` for a command of a transaction in another slot than the
/// transaction's (`a`: the first slot), with the fix.
fn tx_cross_slot(name: &str, a: u16, b: u16, watched: bool) -> Bytes {
    let fix = if watched {
        "with WATCH, all keys of a transaction must be in the watched keys' slot: use a {hash tag}"
    } else {
        "all keys of a transaction must be in one slot: use a {hash tag} or a [[colocate]] rule, or transactions = \"per_slot\" in slotbridge's configuration (atomic per slot only)"
    };
    reply::error(&format!(
        "CROSSSLOT Keys in request don't hash to the same slot (command '{name}', slots {a} and {b}); {fix}"
    ))
}

/// A script that returns the error `text` (without its `-`), queued in a
/// command's place so that `EXEC`'s array has the error there.
fn error_at_exec(text: &[u8]) -> Bytes {
    reply::command([
        &b"EVAL"[..],
        b"return redis.error_reply(ARGV[1])",
        b"0",
        text,
    ])
}

/// [`error_at_exec`] for a reply the proxy made (an error, or a status
/// such as `+OK`).
fn reply_at_exec(answer: &[u8]) -> Bytes {
    let text = answer
        .get(1..answer.len().saturating_sub(2))
        .unwrap_or_default();
    if answer.first() == Some(&b'-') {
        error_at_exec(text)
    } else {
        reply::command([
            &b"EVAL"[..],
            b"return redis.status_reply(ARGV[1])",
            b"0",
            text,
        ])
    }
}
