//! Routes each command the client sends: local answers, single-slot sends,
//! splits, fan-outs, transactions and subscriptions start here.

use super::redirect::{is_script_load, masters};
use super::*;
use crate::acl::{self, log::Reason};
use crate::client::element_moves::{self, ElementMove};
use crate::client::moves::{self, Move};
use crate::client::multipop::{self, MultiPop};
use crate::client::sort::{self, Sort};
use crate::client::stream_read::{self, StreamRead};
use crate::client::unblock::Unblock;
use crate::command::{is_eval, is_evalsha, is_fcall};

impl Core {
    pub(super) fn next_seq(&self) -> u64 {
        self.base_seq + self.pending.len() as u64
    }

    /// Queues the reply slot of a command a task of the proxy carries out
    /// (`client::multipop`, `moves`, `element_moves`, `sort`), which
    /// answers it once with a final reply (never retried) at the returned
    /// address. The client's later commands wait for it, as behind a
    /// blocked client on one server.
    pub(super) fn answered_by_task(
        &mut self,
        raw: Bytes,
        slot: u16,
        seq: u64,
        blocks: bool,
    ) -> ReplyTo {
        let mut sent = Sent::to_slot(raw, slot);
        // A task that may block the client (a pop or a read that waits)
        // ends when the client leaves; the others still answer a client
        // that half-closed.
        sent.via = if blocks { Via::Blocking } else { Via::Private };
        sent.post = Post::Write(None);
        self.push(Pending::Single(sent));
        self.merging = Some(seq);
        self.reply_to(seq, 0)
    }

    /// Queues the reply slot of a command whose reply `answer` computes in
    /// a task of its own (never blocking the client: see
    /// [`Core::answered_by_task`]).
    fn answer_later<F>(&mut self, raw: Bytes, slot: u16, seq: u64, answer: F)
    where
        F: std::future::Future<Output = Bytes> + Send + 'static,
    {
        let to = self.answered_by_task(raw, slot, seq, false);
        tokio::spawn(async move {
            let reply = answer.await;
            to.send(reply, ReplyStatus::Final);
        });
    }

    pub(super) fn reply_to(&self, seq: u64, part: u32) -> ReplyTo {
        ReplyTo {
            tx: self.replies.get_or_init(reply_channel).0.clone(),
            seq,
            part,
        }
    }

    /// Queues the current command's reply slot.
    pub(super) fn push(&mut self, state: Pending) {
        let (name, index, class, started) = self.current;
        self.ctx.stats.inflight.fetch_add(1, Ordering::Relaxed);
        let silent = self.client.take_silence();
        self.pending.push_back(Slot {
            state,
            filter: self.filter.take(),
            name,
            index,
            class,
            started,
            batch: self.batch,
            silent,
        });
    }

    pub(super) fn ready(&mut self, reply: Bytes) {
        self.push(Pending::Ready(reply));
    }

    /// After users or the configuration changed (`version`), looks the
    /// client's user up again and takes its current rules; false when the
    /// client must be disconnected, as Redis disconnects it: its user is
    /// gone (`ACL DELUSER`, or a reload that removed it), or it is
    /// subscribed to a channel its new rules refuse. A user turned `off`
    /// keeps its connections, as in Redis.
    pub(super) fn recheck_user(&mut self, version: u64) -> bool {
        let name = self.client.info.names().user;
        let name = name.as_deref().unwrap_or(b"default");
        self.client.user_version = Some(version);
        let Some(user) = self.ctx.users.get(name) else {
            return !self.client.authed;
        };
        self.client.acl = user.session_acl();
        match (&self.client.acl, &self.pubsub) {
            (Some(acl), Some(subs)) => {
                subs.channels
                    .iter()
                    .chain(subs.shard_channels.keys())
                    .all(|c| acl.channel_permitted(c, false))
                    && subs.patterns.iter().all(|p| acl.channel_permitted(p, true))
            }
            _ => true,
        }
    }

    /// Whether the session wants to hear of notices (see
    /// [`ClientInfo::notify`]): invalidations while it tracks, a change of
    /// its user's rules while it is subscribed.
    ///
    /// [`ClientInfo::notify`]: crate::client::registry::ClientInfo::notify
    pub(super) fn takes_notices(&self) -> bool {
        self.client.tracking.on || self.pubsub.is_some() || self.client.info.receives()
    }

    /// Looks the user up again if users or the configuration changed
    /// since (see [`Core::recheck_user`]); false when the client is to be
    /// closed, which this then starts.
    /// The version compared is the session's snapshot, taken at each read
    /// (and right after this session changes users).
    #[inline]
    pub(super) fn user_still_valid(&mut self) -> bool {
        let version = self.settings_version;
        self.client.user_version.is_none_or(|v| v == version) || self.user_changed(version)
    }

    /// The rare part of [`Core::user_still_valid`]: the settings changed.
    #[cold]
    #[inline(never)]
    fn user_changed(&mut self, version: u64) -> bool {
        if self.recheck_user(version) {
            return true;
        }
        self.closing = true;
        self.push(Pending::Close(Bytes::new()));
        false
    }

    /// For a script or function call: how to recover from `NOSCRIPT` or a
    /// missing library (`EVALSHA`, `FCALL`), or the body to remember
    /// (`EVAL`). Known by the command table's name, so `GET` costs one
    /// length comparison per name.
    fn prepare_script(&self, sent: &mut Sent, args: &[(usize, usize)]) {
        let name = self.scratch.name;
        let Some(&(start, end)) = args.get(1) else {
            return;
        };
        if is_evalsha(name) {
            sent.post = Post::EvalSha(sent.payload.slice(start..end));
        } else if is_fcall(name) {
            sent.post = Post::Fcall;
        } else if is_eval(name) {
            let body = sent.payload.slice(start..end);
            self.ctx.scripts.remember(&body);
            sent.post = Post::Eval(body);
        }
    }

    /// Answers a command the user's ACL rules refuse with Redis's
    /// `NOPERM`; inside `MULTI` it also makes `EXEC` abort, as in Redis.
    fn refuse(&mut self, denied: &acl::Denied, view: &CommandView<'_>) {
        let name = view.get(0);
        let ends_tx = name.eq_ignore_ascii_case(b"exec") || name.eq_ignore_ascii_case(b"discard");
        if let Some(tx) = self.multi.as_mut().filter(|_| !ends_tx) {
            tx.failed = true;
        }
        // Counted under its name; a refused command still ends a CACHING choice.
        let spec = crate::command::find(view);
        self.current.0 = spec.map_or("unknown", |s| s.name);
        // The client's last command, as Redis sets it before its ACL
        // check (`ACL LOG`'s `client-info` shows `cmd=` of this one).
        self.client
            .info
            .set_last_cmd(spec.and_then(crate::command::route::table_index));
        self.client.tracking.caching = false;
        let in_multi = self.multi.is_some() && !ends_tx;
        self.log_denial(denied, view, in_multi);
        let user = self.client.info.names().user;
        let user = user.as_deref().unwrap_or(b"default");
        let mut reply = denied.reply(user, newer_than_7_0(&self.ctx.redis_version()));
        if name.eq_ignore_ascii_case(b"exec") && self.multi.take().is_some() {
            // As Redis: a refused EXEC discards the transaction.
            self.pinned = None;
            let why =
                String::from_utf8_lossy(&reply[1..reply.len().saturating_sub(2)]).into_owned();
            reply = reply::error(&format!(
                "EXECABORT Transaction discarded because of: {why}"
            ));
        }
        self.ready(reply);
    }

    /// Counts, traces and records in `ACL LOG` a command the user's rules
    /// refuse (`in_multi`: the log's `multi` context).
    pub(super) fn log_denial(&self, denied: &acl::Denied, view: &CommandView<'_>, in_multi: bool) {
        metrics::counter!(m::ACL_DENIED).increment(1);
        let user = self.client.info.names().user;
        let user = user.as_deref().unwrap_or(b"default");
        tracing::debug!(client = %self.client.info.peer, user = %String::from_utf8_lossy(user), command = crate::command::find(view).map_or("unknown", |s| s.name), "refused by the user's ACL rules");
        let object = match denied {
            acl::Denied::Command(name) => name.as_bytes().to_vec(),
            acl::Denied::Subcommand(container, sub) => [container.as_bytes(), b"|", sub].concat(),
            acl::Denied::Key(pos) | acl::Denied::Channel(pos) => view.get(*pos).to_vec(),
            acl::Denied::Database(0) => crate::command::find(view)
                .map_or(&b"?"[..], |s| s.name.as_bytes())
                .to_vec(),
            acl::Denied::Database(pos) => view.get(*pos).to_vec(),
            // A command error in Redis, not an ACL refusal.
            acl::Denied::SortOption(_) => return,
        };
        let reason = match denied {
            acl::Denied::Key(_) => Reason::Key,
            acl::Denied::Channel(_) => Reason::Channel,
            acl::Denied::Database(_) => Reason::Database,
            _ => Reason::Command,
        };
        let info = self.client.info.line(view.raw.len());
        let info = info.trim_end_matches('\n').to_string();
        self.ctx
            .users
            .log
            .add(reason, in_multi, &object, user, info);
    }

    /// Routes one command and starts it.
    pub(super) async fn handle(&mut self, raw: Bytes, args: &[(usize, usize)]) {
        self.ctx
            .stats
            .total_commands
            .fetch_add(1, Ordering::Relaxed);
        let mut raw = raw;
        let mut bytes = raw.clone();
        let mut view = CommandView { raw: &bytes, args };
        self.current = ("", None, CLASS_LOCAL, self.batch_started);
        if !self.client.authed {
            if let Some(refused) = crate::command::route::before_auth(&view) {
                self.ready(refused);
                return;
            }
        }
        if !self.user_still_valid() {
            return;
        }
        if let Some(tx) = self.multi.as_mut() {
            // SAVE, SHUTDOWN, SYNC, PSYNC (and Valkey 9's CLIENT REPLY):
            // Redis's refusal, after the arity check and before the ACL
            // check and the proxy's own refusal (SHUTDOWN is not passed on).
            if let Some(spec) = crate::command::find(&view).filter(|s| {
                (s.flags & crate::command::spec::flags::NO_MULTI != 0
                    || (s.name == "client|reply" && crate::nodes::valkey_at_least(9, 0)))
                    && crate::command::keys::arity_ok(s, view.len())
            }) {
                tx.failed = true;
                self.ready(reply::error(&crate::nodes::no_multi_error(spec.name)));
                return;
            }
            // Taken when queued; only MULTI's commands set it.
            self.queued_original = Some(raw.clone());
        }
        if let Some(acl) = &self.client.acl {
            // On the names the client sees, before co-location rewrites them.
            if let Err(denied) = acl.check(&view) {
                self.refuse(&denied, &view);
                return;
            }
        }
        let ctx = self.ctx.clone();
        if ctx.monitors.active() {
            match self.multi.as_mut() {
                // Queued commands are shown when EXEC runs them, then EXEC.
                Some(tx) if view.get(0).eq_ignore_ascii_case(b"exec") => {
                    tx.exec_line = ctx.monitors.line(&self.client.info.peer, &view);
                }
                Some(_) if !view.get(0).eq_ignore_ascii_case(b"discard") => {}
                _ => ctx.monitors.publish(&self.client.info.peer, &view),
            }
        }
        let rewritten_args;
        let mut script_slot = None;
        // Rules run EVAL as EVALSHA of the wrapped body: errors, metrics
        // and CLIENT LIST still name what the client sent.
        let mut sent_eval = None;
        if !ctx.rules.is_empty() {
            sent_eval = ["eval", "eval_ro"]
                .into_iter()
                .find(|n| view.get(0).eq_ignore_ascii_case(n.as_bytes()));
            let mut keys_buf = std::mem::take(&mut self.scratch.keys);
            let outcome = rewrite::rewrite(&ctx.rules, &ctx.scripts, &view, &mut keys_buf);
            self.scratch.keys = keys_buf;
            match outcome {
                Rewritten::Unchanged => {}
                Rewritten::Reply(r) => {
                    // Answered by the proxy: it still ends a CACHING choice.
                    self.client.tracking.caching = false;
                    self.ready(r);
                    return;
                }
                Rewritten::Command {
                    raw: new,
                    args: new_args,
                    filter,
                    slot,
                } => {
                    script_slot = slot;
                    raw = new;
                    bytes = raw.clone();
                    rewritten_args = new_args;
                    self.filter = filter;
                    view = CommandView {
                        raw: &bytes,
                        args: &rewritten_args,
                    };
                }
            }
        }
        let args = view.args;
        if self.client.proto == Proto::Resp2 && self.pubsub.as_ref().is_some_and(|p| p.active()) {
            let name = view.get(0);
            // As Redis: an unknown command or a wrong number of arguments
            // gets its own error (routing answers it), the rest this one,
            // with the full name (`client|id`).
            let known = crate::command::runnable(&view);
            if let (false, Some(spec)) = (subs::allowed_while_subscribed(name), known) {
                self.ready(subs::not_allowed(spec.name.as_bytes()));
                return;
            }
            if name.eq_ignore_ascii_case(b"ping") {
                self.subscribed_ping(raw, &view);
                return;
            }
        }
        let mut route = route(&view, &mut self.scratch);
        if let (Route::AnyMaster, Some(slot)) = (&route, script_slot) {
            // A script without keys whose arguments name a co-located
            // group runs where that group lives.
            route = Route::Slot(slot);
        }
        let (shown_name, shown_index) = match sent_eval {
            Some(name) => (
                name,
                crate::command::keys::lookup(name.as_bytes())
                    .and_then(crate::command::route::table_index),
            ),
            None => (self.scratch.name, self.scratch.index),
        };
        if let Some(name) = sent_eval {
            if matches!(&route, Route::Reply(e) if e.starts_with(b"-CROSSSLOT")) {
                let first = self.scratch.slots.first().copied().unwrap_or(0);
                let other = self.scratch.slots.iter().copied().find(|&s| s != first);
                route = Route::Reply(cross_slot(name, first, other.unwrap_or(first)));
            }
        }
        // One server looks the script up before anything else runs: an
        // EVALSHA over several slots of a script neither the proxy nor the
        // first key's master knows is NOSCRIPT, which sends the client to
        // EVAL (asked of the master on this error path only).
        let script_lookup =
            (self.multi.is_none() && ctx.rules.is_empty() && self.noscript_first(&route, &view))
                .then(|| Bytes::copy_from_slice(view.get(1)));
        // A blocking command shows in CLIENT LIST once it counts as
        // blocked (when it leaves for its node), as on one server.
        if !matches!(route, Route::Blocking(_)) || self.multi.is_some() {
            self.client.info.set_last_cmd(shown_index);
        }
        self.track = false;
        self.untracked_read = false;
        self.ordered = false;
        // From 7.2 on, one server writes the messages a transaction or a
        // script publishes to its own RESP3 client after its reply.
        let publishing = self.pubsub.is_some()
            && self.client.proto == Proto::Resp3
            && matches!(
                self.scratch.name,
                "exec" | "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro"
            )
            && crate::nodes::at_least(7, 2);
        if self.client.tracking.on && !matches!(route, Route::Local(Local::Client)) {
            self.track_read(&route, &view);
        }
        // A PUBLISH, and a PUBSUB count or list, comes after the classic
        // subscriptions other clients sent before it (see
        // `crate::client::subscribing`).
        if ctx.subscribing.active()
            && self.multi.is_none()
            && matches!(
                self.scratch.name,
                "publish" | "pubsub|channels" | "pubsub|numsub" | "pubsub|numpat"
            )
            && matches!(route, Route::Slot(_))
        {
            ctx.subscribing
                .wait_for_others(self.subscribing.is_some())
                .await;
        }
        if let Some(id) = self.own_listener(&view) {
            return self.publish_to_own_listener(id, raw);
        }
        let stage_to = self.stage_target(&route, raw.len());
        if stage_to.is_none() && !self.staged.is_empty() {
            // Anything that is not staged goes after the staged commands.
            self.flush_staged().await;
        }
        self.current = (
            shown_name,
            shown_index,
            class_of(&route, self.multi.is_some()),
            self.batch_started,
        );
        if self.multi.is_some() {
            Box::pin(self.queue_in_multi(route, raw, &view)).await;
            if std::mem::take(&mut self.ordered) {
                self.last_tracked = self.next_seq();
            }
            if publishing {
                self.last_publishing = self.next_seq();
            }
            return;
        }
        let seq = self.next_seq();
        // Single-node commands are sent without building a future; the
        // rest is boxed, so that this future stays small: it is created
        // for every command.
        let later = match route {
            Route::Slot(slot) => {
                let mut sent = Sent::to_slot(raw, slot);
                sent.readonly = self.scratch.readonly;
                sent.tracked = self.track;
                sent.replica = sent.readonly
                    && !self.track
                    && !self.client.tracking.bcast
                    && self.config.read_from != ReadFrom::Master;
                self.prepare_script(&mut sent, args);
                match stage_to {
                    Some(pool) => {
                        let payload = sent.payload.clone();
                        self.push(Pending::Single(sent));
                        self.stage(pool, payload, seq);
                        None
                    }
                    None => self.start_now(sent, seq),
                }
            }
            Route::Blocking(slot) => {
                let mut sent = Sent::to_slot(raw, slot);
                sent.via = Via::Blocking;
                // As one server holds a blocked client's next commands, the
                // client's later commands wait for its reply: sent now on
                // the shared connections, they would run before it.
                self.merging = Some(seq);
                let later = self.start_now(sent, seq);
                self.client.info.set_last_cmd(shown_index);
                later
            }
            Route::CrossSlotMove => {
                let args: Vec<Bytes> = view.args.iter().map(|&(s, e)| bytes.slice(s..e)).collect();
                let first = self.scratch.slots.first().copied().unwrap_or(0);
                let name = self.scratch.name;
                enum Job {
                    Key(Move),
                    Element(ElementMove),
                }
                let job = match Move::new(name, &args) {
                    Some(mv) => Ok(Some(Job::Key(mv))),
                    None => ElementMove::new(name, &args).map(|e| e.map(Job::Element)),
                };
                match job {
                    Err(e) => self.ready(e),
                    Ok(None) => {
                        let other = self.scratch.slots.iter().copied().find(|&s| s != first);
                        self.ready(cross_slot(name, first, other.unwrap_or(first)));
                    }
                    Ok(Some(job)) => {
                        let blocks = matches!(job, Job::Element(_)) && name.starts_with('b');
                        let to = self.answered_by_task(raw, first, seq, blocks);
                        let (ctx, proto) = (self.ctx.clone(), self.client.proto);
                        match job {
                            Job::Key(mv) => moves::spawn(ctx, proto, mv, to),
                            Job::Element(em) => {
                                let info = self.client.info.clone();
                                element_moves::spawn(ctx, info, proto, em, to);
                            }
                        }
                    }
                }
                None
            }
            Route::ProxySort => {
                let args: Vec<Bytes> = view.args.iter().map(|&(s, e)| bytes.slice(s..e)).collect();
                match Sort::parse(self.scratch.name == "sort_ro", &args) {
                    Err(e) => self.ready(e),
                    Ok(sort) => {
                        let first = self.scratch.slots.first().copied().unwrap_or(0);
                        let to = self.answered_by_task(raw, first, seq, false);
                        sort::spawn(self.ctx.clone(), self.client.proto, sort, to);
                    }
                }
                None
            }
            Route::CrossSlotPop | Route::CrossSlotStreams => {
                let args: Vec<Bytes> = view.args.iter().map(|&(s, e)| bytes.slice(s..e)).collect();
                let (name, keys) = (self.scratch.name, self.scratch.keys.clone());
                let first = self.scratch.slots.first().copied().unwrap_or(0);
                let (ctx, info, proto) = (
                    self.ctx.clone(),
                    self.client.info.clone(),
                    self.client.proto,
                );
                if let Some(pop) = MultiPop::new(name, args.clone(), keys.clone()) {
                    multipop::spawn(
                        ctx,
                        info,
                        proto,
                        pop,
                        self.answered_by_task(raw, first, seq, true),
                    );
                } else if let Some(read) = StreamRead::new(name, args, keys) {
                    stream_read::spawn(
                        ctx,
                        info,
                        proto,
                        read,
                        self.answered_by_task(raw, first, seq, true),
                    );
                } else {
                    let other = self.scratch.slots.iter().copied().find(|&s| s != first);
                    self.ready(cross_slot(name, first, other.unwrap_or(first)));
                }
                None
            }
            Route::AnyMaster => {
                let Some(node) = self.any_master(seq as usize) else {
                    self.ready(self.no_cluster());
                    return;
                };
                let mut sent = Sent::to_node(raw, node);
                sent.readonly = self.scratch.readonly;
                self.prepare_script(&mut sent, args);
                self.start_now(sent, seq)
            }
            Route::Scan => {
                Box::pin(self.scan(raw, &view, seq)).await;
                None
            }
            Route::RandomKey => {
                let nodes = self.ctx.topology.load().shards().len();
                let Some(node) = self.any_master(seq as usize) else {
                    self.ready(self.no_cluster());
                    return;
                };
                let mut sent = Sent::to_node(raw, node);
                sent.post = Post::RandomKey {
                    tried: 1,
                    nodes,
                    start: seq as usize,
                };
                self.start_now(sent, seq)
            }
            Route::Split(kind) => {
                Box::pin(self.split(kind, &view, seq)).await;
                None
            }
            Route::Fanout(kind) => {
                if is_script_load(&view) {
                    self.ctx.scripts.remember(&raw.slice(args[2].0..args[2].1));
                }
                let name = crate::command::find(&view)
                    .map(|s| s.name)
                    .unwrap_or("fanout");
                let merge = match name {
                    "script|flush" => {
                        self.ctx.scripts.clear();
                        MergeKind::Fanout(kind)
                    }
                    "function|load" if view.len() >= 3 => {
                        let replace = (2..view.len() - 1)
                            .any(|i| view.get(i).eq_ignore_ascii_case(b"replace"));
                        let code = raw.slice(args[view.len() - 1].0..args[view.len() - 1].1);
                        self.ctx
                            .scripts
                            .remember_library(&code, replace, masters(&self.ctx));
                        MergeKind::Fanout(kind)
                    }
                    "function|delete" if view.len() == 3 => {
                        self.ctx.scripts.forget_libraries(Some(view.get(2)));
                        MergeKind::Fanout(kind)
                    }
                    "function|flush" => {
                        self.ctx.scripts.forget_libraries(None);
                        MergeKind::Fanout(kind)
                    }
                    "function|restore"
                        if (3..view.len()).any(|i| view.get(i).eq_ignore_ascii_case(b"flush")) =>
                    {
                        // The nodes' libraries are now the dump's, which
                        // the proxy cannot read.
                        self.ctx.scripts.forget_libraries(None);
                        MergeKind::Fanout(kind)
                    }
                    "config|resetstat" => {
                        // The proxy's own counters in INFO, as on one server.
                        self.ctx.stats.total_commands.store(0, Ordering::Relaxed);
                        self.ctx.stats.total_connections.store(0, Ordering::Relaxed);
                        MergeKind::Fanout(kind)
                    }
                    "script|exists" => {
                        // A script the proxy knows runs on every node (it is
                        // sent where it is missing), so it exists; one that
                        // did not compile was forgotten (see `Post::Eval`).
                        let known: Vec<bool> = (2..view.len())
                            .map(|i| self.ctx.scripts.knows(view.get(i)))
                            .collect();
                        if known.iter().all(|&k| k) {
                            self.ready(merge::all_true(&[], &known));
                            return;
                        }
                        MergeKind::ScriptExists(known)
                    }
                    _ => MergeKind::Fanout(kind),
                };
                Box::pin(self.fanout(merge, name, raw, seq)).await;
                None
            }
            Route::Tx(cmd) => {
                Box::pin(self.tx_command(cmd, &view, raw, seq)).await;
                None
            }
            Route::Sub(cmd) => {
                if self.subscribing.is_none()
                    && matches!(cmd, SubCmd::Subscribe | SubCmd::PSubscribe)
                {
                    // Until confirmed, PUBLISHes wait for it.
                    self.subscribing = Some(crate::client::subscribing::Counted::new(
                        &self.ctx.subscribing,
                    ));
                }
                // A subscriber does not rest: its kept private connection
                // (see `SparePrivate`) goes now.
                *self
                    .spare_private
                    .get_mut()
                    .unwrap_or_else(|p| p.into_inner()) = None;
                Box::pin(self.subscription(cmd, raw, &view)).await;
                None
            }
            Route::Local(Local::Client)
                if view.len() > 1 && view.get(1).eq_ignore_ascii_case(b"unblock") =>
            {
                match client_unblock(&self.ctx, &view, self.client.info.id) {
                    Ok(unblock) => {
                        // Only that node knows the id: a task of its own
                        // sends it there (see `crate::client::unblock`).
                        let (ctx, proto) = (self.ctx.clone(), self.client.proto);
                        self.answer_later(
                            raw,
                            0,
                            seq,
                            async move { unblock.run(&ctx, proto).await },
                        );
                    }
                    Err(reply) => self.ready(reply),
                }
                None
            }
            Route::Local(cmd) => {
                self.local(cmd, &view);
                if cmd == Local::Client && self.client.tracking.bcast {
                    Box::pin(self.broadcast_listening()).await;
                }
                None
            }
            Route::Reply(cross_slot) => {
                match script_lookup {
                    Some(sha) => {
                        let slot = self.scratch.slots.first().copied().unwrap_or(0);
                        let (ctx, proto) = (self.ctx.clone(), self.client.proto);
                        self.answer_later(raw, slot, seq, async move {
                            let exists = reply::command([&b"SCRIPT"[..], b"EXISTS", &sha]);
                            let known =
                                crate::client::nodecall::call_master(&ctx, proto, slot, exists, 0)
                                    .await;
                            match known {
                                Ok(r) if &r[..] == b"*1\r\n:0\r\n" => {
                                    reply::error(crate::nodes::noscript_text())
                                }
                                _ => cross_slot,
                            }
                        });
                    }
                    None => self.ready(cross_slot),
                }
                None
            }
        };
        if let Some(later) = later {
            Box::pin(self.send_later(later)).await;
        }
        if std::mem::take(&mut self.track) | std::mem::take(&mut self.ordered) {
            self.last_tracked = self.next_seq();
        }
        if publishing {
            self.last_publishing = self.next_seq();
        }
        if std::mem::take(&mut self.untracked_read) {
            let seq = self.next_seq() - 1;
            self.tell_after(&crate::tracking::Notice::All, Some(seq));
        }
    }

    /// Whether `view` is an `EVALSHA` refused for keys in several slots
    /// whose script nobody here loaded: one server answers `NOSCRIPT`.
    fn noscript_first(&self, route: &Route, view: &CommandView<'_>) -> bool {
        matches!(route, Route::Reply(e) if e.starts_with(b"-CROSSSLOT"))
            && matches!(self.scratch.name, "evalsha" | "evalsha_ro")
            && !self.ctx.scripts.knows(view.get(1))
    }

    /// Decides whether the command being handled is a read tracked for
    /// the client (consuming a `CLIENT CACHING` choice), and if so records
    /// its keys with the tracker before it is sent. Tracked are reads of a
    /// RESP3 client routed by their keys, outside transactions (Redis
    /// would push nothing to a RESP2 client that does not redirect).
    fn track_read(&mut self, route: &Route, view: &CommandView<'_>) {
        // Invalidations come after the replies of the commands sent before
        // them (of its own writes and an EXEC's too, as from one server),
        // not after a blocked command's.
        self.ordered = !matches!(
            route,
            Route::Local(_) | Route::Reply(_) | Route::Blocking(_)
        );
        if self.client.tracking.bcast {
            // Nothing is tracked by read.
            let opts = self.ctx.topology.conn_options();
            let map = self.ctx.topology.load();
            let masters = map.shards().iter().map(|s| s.master.addr());
            if !matches!(route, Route::Local(_) | Route::Reply(_))
                && !opts.inboxes.broadcast_ready(masters)
            {
                self.ctx.tracker.mark_unsure(self.client.info.id);
            }
            return;
        }
        if self.client.tracking.noloop && !self.scratch.readonly {
            let keys = self.scratch.keys.iter().map(|&k| view.get(k));
            self.ctx.tracker.forget(self.client.info.id, keys);
        }
        if let Some(tx) = self.multi.as_mut() {
            // Queued: tracked when the transaction is (decided at MULTI,
            // as Redis applies CLIENT CACHING to the whole transaction).
            // Recorded now, before EXEC sends it: at worst the client hears
            // of a change made before EXEC ran, a cache miss.
            if tx.track && self.scratch.readonly && !self.scratch.keys.is_empty() {
                tx.reads = true;
                let keys = self.scratch.keys.iter().map(|&k| view.get(k));
                self.ctx.tracker.remember(self.client.info.id, keys);
            }
            return;
        }
        let multi = matches!(route, Route::Tx(TxCmd::Multi));
        let wanted = self.client.tracking.tracks(self.scratch.readonly || multi)
            && (self.client.proto == Proto::Resp3 || self.client.tracking.redirect != 0);
        match route {
            _ if !wanted => {}
            // A RESP2 client's reads are tracked on connections that
            // redirect to their node's inbox: none connected yet (the first
            // reads after tracking began), the client flushes instead.
            Route::Tx(TxCmd::Multi) | Route::Slot(_) | Route::Split(_)
                if self.client.proto == Proto::Resp2 && !self.inboxes_ready(route) =>
            {
                self.untracked_read = true
            }
            Route::Tx(TxCmd::Multi) => self.track_tx = true,
            Route::Slot(_) | Route::Split(_) => {
                self.track = true;
                let keys = self.scratch.keys.iter().map(|&k| view.get(k));
                self.ctx.tracker.remember(self.client.info.id, keys);
            }
            // Reads the proxy makes in a task carry no CLIENT CACHING: the
            // client flushes its cache once the reply is in.
            Route::Blocking(_) | Route::ProxySort => self.untracked_read = true,
            _ => {}
        }
    }

    /// Waits (a connect timeout at most) until every master's broadcast
    /// listener listens, so that a `BCAST` client's `+OK` is not followed
    /// by changes it is not told of (see [`crate::backend::inbox`]).
    async fn broadcast_listening(&self) {
        let opts = self.ctx.topology.conn_options();
        let deadline = tokio::time::Instant::now() + opts.connect_timeout;
        loop {
            let map = self.ctx.topology.load();
            let masters = map.shards().iter().map(|s| s.master.addr());
            if opts.inboxes.broadcast_ready(masters) || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// Whether the invalidation inboxes (see [`crate::backend::inbox`]) of
    /// the masters `route` reads from are connected: its slot's, or every
    /// master's; starts those missing.
    fn inboxes_ready(&self, route: &Route) -> bool {
        let opts = self.ctx.topology.conn_options();
        let map = self.ctx.topology.load();
        if let Route::Slot(slot) = route {
            let master = map.master(*slot);
            return master.is_some_and(|m| opts.inboxes.ensure(m.addr(), opts) != 0);
        }
        let mut ready = true;
        for shard in map.shards() {
            ready &= opts.inboxes.ensure(shard.master.addr(), opts) != 0;
        }
        ready
    }

    /// Queues an invalidation push for the client: right after the reply
    /// of its newest read for its cache, if that is still owed (so that no
    /// value read before a change reaches it after the push saying it
    /// changed), else at once, ahead of slower replies (a blocked command).
    pub(super) fn tell(&mut self, notice: &crate::tracking::Notice) {
        self.tell_after(notice, None);
    }

    /// [`Core::tell`], and not before the reply numbered `after` either
    /// (a blocking read the client could not have tracked: only this
    /// flush waits for it, not later invalidations).
    fn tell_after(&mut self, notice: &crate::tracking::Notice, after: Option<u64>) {
        use crate::tracking::Notice;
        if !self.client.tracking.on {
            return;
        }
        let resp3 = self.client.proto == Proto::Resp3;
        let rules = &self.ctx.rules;
        let tracked = (self.last_tracked > self.base_seq).then(|| self.last_tracked - 1);
        let after = tracked.max(after);
        let told = if self.client.tracking.redirect != 0 {
            // Passed on to the client it redirects to, once the replies of
            // the reads before it are written (a value read before a
            // change must not reach the client after word of the change).
            match notice {
                Notice::RedirectBroken(_) if resp3 => {
                    Told::Frame(crate::tracking::push_frame(notice, |k| k))
                }
                Notice::RedirectBroken(_) => return,
                _ => Told::Forward(notice.clone()),
            }
        } else if resp3 {
            Told::Frame(crate::tracking::push_frame(notice, |k| rules.decode(k)))
        } else {
            return;
        };
        match (after, told) {
            (Some(seq), told) => {
                let at = self.notices_after.partition_point(|(s, _)| *s <= seq);
                self.notices_after.insert(at, (seq, told));
            }
            (None, told) if self.repeats(&told) => {}
            (None, Told::Frame(frame)) => self.oob.extend_from_slice(&frame),
            (None, Told::Forward(notice)) => self.ctx.tracker.deliver(self.client.info.id, notice),
        }
    }

    /// Whether `told`, about to be given, would only repeat a flush the
    /// client got with no reply written since (see `Core::flushed`).
    pub(super) fn repeats(&mut self, told: &Told) -> bool {
        let flushes = told.flushes();
        let repeats = flushes && self.flushed;
        self.flushed |= flushes;
        repeats
    }

    /// Writes the invalidations of clients that redirect to this one.
    pub(super) fn tell_received(&mut self) {
        if !self.client.info.receives() {
            return;
        }
        let rules = &self.ctx.rules;
        let resp3 = self.client.proto == Proto::Resp3;
        let subscribed = self.pubsub.as_ref().is_some_and(|p| p.active());
        for received in self.ctx.tracker.take_received(self.client.info.id) {
            if let Some(frame) =
                crate::tracking::received_frame(&received, resp3, subscribed, |k| rules.decode(k))
            {
                self.oob.extend_from_slice(&frame);
            }
        }
    }

    pub(super) fn local(&mut self, cmd: Local, view: &CommandView<'_>) {
        let tracking_cmd =
            cmd == Local::Client && view.len() > 2 && view.get(1).eq_ignore_ascii_case(b"tracking");
        if self.client.tracking.on && (cmd == Local::Reset || tracking_cmd) {
            // Invalidations already due come before tracking changes.
            if let Some(notice) = self.ctx.tracker.take(self.client.info.id) {
                self.tell(&notice);
            }
        }
        if cmd == Local::Client && view.len() == 3 && view.get(1).eq_ignore_ascii_case(b"reply") {
            // Its own reply follows the mode it sets: only ON answers.
            let mode = match view.get(2).to_ascii_lowercase().as_slice() {
                b"on" => ReplyMode::On,
                b"off" => ReplyMode::Off,
                b"skip" => ReplyMode::Skip,
                _ => {
                    self.ready(reply::error("ERR syntax error"));
                    return;
                }
            };
            self.client.replies = if mode == ReplyMode::On {
                ReplyMode::On
            } else {
                ReplyMode::Off
            };
            self.ready(Bytes::from_static(reply::OK));
            self.client.replies = mode;
            return;
        }
        if cmd == Local::Reset {
            self.multi = None;
            self.pinned = None;
            self.pubsub = None;
            self.client.info.set_subscriptions([0; 3]);
            self.client.info.set_monitoring(false);
        }
        let outcome = local::execute(cmd, view, &mut self.client, &self.ctx);
        if cmd == Local::Acl {
            // The commands after it in this batch see the change.
            self.refresh_config();
        }
        match outcome {
            LocalOutcome::Reply(b) => self.ready(b),
            LocalOutcome::Close(b) => {
                self.closing = true;
                self.push(Pending::Close(b));
            }
        }
    }

    /// Whether confirmations of earlier subscription commands may still
    /// be coming.
    pub(super) fn confirming(&self) -> bool {
        self.pubsub.as_ref().is_some_and(|p| p.confirming())
    }

    /// The address of a master, chosen round-robin by `n`.
    pub(super) fn any_master(&self, n: usize) -> Option<Arc<str>> {
        let map = self.ctx.topology.load();
        let shards = map.shards();
        shards
            .get(n % shards.len().max(1))
            .map(|s| s.master.addr().clone())
    }
}

/// The latency class of a route (an index into [`m::CLASSES`]).
fn class_of(route: &Route, in_multi: bool) -> usize {
    if in_multi {
        return 5;
    }
    match route {
        Route::Slot(_) | Route::AnyMaster => 0,
        Route::Blocking(_) | Route::CrossSlotPop | Route::CrossSlotStreams => 1,
        Route::CrossSlotMove | Route::ProxySort => 2,
        Route::Split(_) => 2,
        Route::Fanout(_) => 3,
        Route::Local(_) => CLASS_LOCAL,
        Route::Tx(_) => 5,
        Route::Sub(_) => 6,
        Route::Scan | Route::RandomKey => 7,
        Route::Reply(_) => 8,
    }
}

const CLASS_LOCAL: usize = 4;

/// `CLIENT UNBLOCK id [TIMEOUT|ERROR]`: the unblock of that client's
/// waiting command (see [`Unblock`]), or the reply when it waits for
/// nothing (`:0`) or an argument is wrong.
fn client_unblock(ctx: &Context, view: &CommandView<'_>, me: u64) -> Result<Unblock, Bytes> {
    if view.len() != 3 && view.len() != 4 {
        return Err(reply::error(
            "ERR wrong number of arguments for 'client|unblock' command",
        ));
    }
    let mode: &'static [u8] = match view.len() {
        4 if view.get(3).eq_ignore_ascii_case(b"timeout") => b"TIMEOUT",
        4 if view.get(3).eq_ignore_ascii_case(b"error") => b"ERROR",
        4 => {
            return Err(reply::error(
                "ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR",
            ))
        }
        _ => b"TIMEOUT",
    };
    let Some(id) = crate::protocol::request::parse_i64(view.get(2)) else {
        return Err(reply::error("ERR value is not an integer or out of range"));
    };
    u64::try_from(id)
        .ok()
        // A client's own blocking command is over before one server would
        // read its next command.
        .filter(|&id| id != me)
        .and_then(|id| ctx.clients.get(id))
        .and_then(|client| Unblock::of(client, mode))
        .ok_or_else(|| reply::int(0))
}

/// Whether a server of `version` writes Redis 7.2's error texts.
pub(super) fn newer_than_7_0(version: &str) -> bool {
    acl::Style::of(version).newer_than_7_0()
}
