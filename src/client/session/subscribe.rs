//! Pub/Sub and `MONITOR` for a session: subscription commands, shard
//! channels, the events of its subscription connections and re-subscribing.

use super::*;

/// Most messages held for an owed `EXEC` or script reply (see
/// [`Core::forward_frame`]); past it they are written at once.
const MAX_HELD_MESSAGES: usize = 4096;

impl Core {
    /// The node holding classic subscriptions (see [`PUBSUB_HOME_SLOT`]).
    async fn pubsub_home(&self) -> Option<Arc<str>> {
        let owner = self.ctx.topology.load().master(PUBSUB_HOME_SLOT).cloned();
        let owner = match owner {
            Some(p) => Some(p),
            None => self.wait_for_owner(PUBSUB_HOME_SLOT).await,
        };
        owner.map(|p| p.addr().clone())
    }

    /// `PING` while subscribed (RESP2): answered in the subscription stream.
    pub(super) fn subscribed_ping(&mut self, raw: Bytes, view: &CommandView<'_>) {
        let msg = (view.len() > 1).then(|| view.get(1));
        // Through the home's connection, after its messages; answered here
        // when that connection speaks the other protocol (the client
        // switched with HELLO while subscribed).
        let proto = self.client.proto;
        match self
            .pubsub
            .as_mut()
            .filter(|p| p.conns.get(&GLOBAL).is_some_and(|c| c.proto == proto))
        {
            Some(ps) => ps.send_ping(GLOBAL, raw),
            None => self.oob.extend_from_slice(&subs::subscribed_pong(msg)),
        }
    }

    /// `MONITOR`: `+OK`, then every client's commands as they arrive.
    fn monitor(&mut self) {
        self.oob.extend_from_slice(reply::OK);
        let ps = self.pubsub.get_or_insert_with(Default::default);
        if ps.monitoring {
            return;
        }
        ps.monitoring = true;
        self.client.info.set_monitoring(true);
        let mut watching = self.ctx.monitors.watch();
        let events = ps.events_sender();
        tokio::spawn(async move {
            loop {
                let event = match watching.lines.recv().await {
                    Ok(line) => PubSubEvent::Frame(line),
                    Err(broadcast::error::RecvError::Lagged(_)) => PubSubEvent::Overflow,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let overflow = matches!(event, PubSubEvent::Overflow);
                // Ends when the session is gone (its receiver dropped).
                if events.send((MONITOR, event)).await.is_err() || overflow {
                    return;
                }
            }
        });
    }

    pub(super) async fn subscription(&mut self, cmd: SubCmd, raw: Bytes, view: &CommandView<'_>) {
        if cmd == SubCmd::Monitor {
            self.monitor();
            return;
        }
        let args: Vec<Bytes> = view.args[1..]
            .iter()
            .map(|&(s, e)| raw.slice(s..e))
            .collect();
        match cmd {
            SubCmd::SSubscribe => return Box::pin(self.shard_subscribe(view.get(0), args)).await,
            SubCmd::SUnsubscribe => return self.shard_unsubscribe(view.get(0), args),
            _ => {}
        }
        let opts = self.ctx.topology.conn_options().clone();
        let proto = self.client.proto;
        let global_node = self.pubsub_home().await;
        let Some(addr) = global_node else {
            self.oob.extend_from_slice(&self.no_cluster());
            return;
        };
        let ps = self.pubsub.get_or_insert_with(Default::default);
        ps.global(&addr, &opts, proto);
        let change = ps.record(view.get(0), &args);
        let delta = PubSubState::mirror_delta(&change);
        ps.send_confirmed(GLOBAL, raw, change);
        self.client.info.set_subscriptions(ps.counts());
        // Before the mirrors look at the map: a change after it is seen.
        self.follow_topology_changes();
        if let Some(delta) = delta {
            self.sync_mirrors(Some(&delta));
            // Frames held for mirrors now gone may go.
            self.release_held();
        }
    }

    /// Keeps a mirror of the client's keyspace-notification subscriptions
    /// on every master but the home (see [`crate::client::mirrors`]);
    /// `delta`: a client's command's change, whose confirmation waits for
    /// the mirrors'.
    fn sync_mirrors(&mut self, delta: Option<&MirrorDelta>) {
        let Some(ps) = self.pubsub.as_mut() else {
            return;
        };
        let map = self.ctx.topology.load();
        let home = match ps.conns.get(&GLOBAL) {
            Some(c) => Some(c.addr.clone()),
            None => map.master(PUBSUB_HOME_SLOT).map(|p| p.addr().clone()),
        };
        let targets: Vec<Arc<str>> = map
            .shards()
            .iter()
            .map(|s| s.master.addr().clone())
            .filter(|a| Some(a) != home.as_ref())
            .collect();
        let opts = self.ctx.topology.conn_options().clone();
        ps.sync_mirrors(&targets, &opts, self.client.proto, delta);
    }

    /// From now on, every change of the masters asks the session to follow
    /// it ([`TOPOLOGY`] events): the home may have moved, masters may have
    /// come or gone. Slots moving between masters (resharding) do not
    /// wake the many subscribed sessions a chat server may have.
    fn follow_topology_changes(&mut self) {
        let Some(ps) = self.pubsub.as_mut().filter(|p| !p.watching) else {
            return;
        };
        ps.watching = true;
        let mut versions = self.ctx.topology.subscribe_masters();
        let events = ps.events_sender();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = versions.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    // The session is gone.
                    _ = events.closed() => return,
                }
                if events
                    .send((TOPOLOGY, PubSubEvent::Resubscribe))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }

    /// The masters changed (or a mirror was lost): the classic
    /// subscriptions move to the current home if it changed (a master
    /// demoted by a failover is still alive and would keep them), and the
    /// mirrors follow the masters.
    fn follow_topology(&mut self) {
        let home = self
            .ctx
            .topology
            .load()
            .master(PUBSUB_HOME_SLOT)
            .map(|p| p.addr().clone());
        let Some(ps) = self.pubsub.as_mut() else {
            return;
        };
        ps.resubscribe_due(TOPOLOGY);
        let current = ps.conns.get(&GLOBAL).map(|c| c.addr.clone());
        if let (Some(home), Some(current)) = (home, current) {
            if home != current {
                if ps.owes(GLOBAL) {
                    // Not while replies are due there (their frames would
                    // be taken for the new connection's).
                    ps.resubscribe_in(TOPOLOGY, Duration::from_millis(200));
                    return;
                }
                tracing::info!(client = %self.client.info.peer, from = %current, to = %home, "moving subscriptions to the new home master");
                ps.lost(GLOBAL);
                self.resubscribe(GLOBAL);
                return;
            }
        }
        self.sync_mirrors(None);
    }

    /// `SSUBSCRIBE`: one command per slot, on its owner's connection, as a
    /// cluster node accepts them (channels of unserved slots get an error).
    async fn shard_subscribe(&mut self, name: &[u8], args: Vec<Bytes>) {
        let groups = group_by(args.clone(), |ch| slot_of(ch));
        // One wait for a missing owner per command, not one per slot.
        let mut waited = false;
        let mut sent = Vec::new();
        for (s, chans) in groups {
            let mut owner = self.ctx.topology.load().master(s).cloned();
            if owner.is_none() && !waited {
                waited = true;
                owner = self.wait_for_owner(s).await;
            }
            let Some(pool) = owner else {
                self.oob.extend_from_slice(&self.slot_unserved(s));
                continue;
            };
            self.send_shard_subscribe(name, pool.addr(), &chans, 0);
            sent.push(s);
        }
        if let (Some(ps), true) = (self.pubsub.as_mut(), sent.len() > 1) {
            // Several masters answer: their confirmations go in turn.
            let channels = args.into_iter().filter(|ch| sent.contains(&slot_of(ch)));
            ps.order.expect(true, channels);
        }
        let counts = self.pubsub.as_ref().map_or([0; 3], |p| p.counts());
        self.client.info.set_subscriptions(counts);
    }

    /// Sends `SSUBSCRIBE` of `chans` (of one slot) to the node at `addr`
    /// (`redirects`: the times it was sent again after `-MOVED`).
    fn send_shard_subscribe(
        &mut self,
        name: &[u8],
        addr: &Arc<str>,
        chans: &[Bytes],
        redirects: u8,
    ) {
        let opts = self.ctx.topology.conn_options().clone();
        let proto = self.client.proto;
        let ps = self.pubsub.get_or_insert_with(Default::default);
        let id = ps.shard_id(addr, &opts, proto);
        let mut change = ps.record(name, chans);
        change.redirects = redirects;
        ps.send_confirmed(id, subs::subscribe_command(name, chans.iter()), change);
        ps.carry(id, chans.iter());
    }

    /// `SUNSUBSCRIBE [channel...]`: each channel on the connection that
    /// carries it, one command per slot. A channel no connection carries
    /// (never subscribed, or its connection was lost) is confirmed by the
    /// proxy: a node holding none would answer with a nil channel.
    fn shard_unsubscribe(&mut self, name: &[u8], args: Vec<Bytes>) {
        let proto = self.client.proto;
        let ps = self.pubsub.get_or_insert_with(Default::default);
        let named: Vec<Bytes> = if args.is_empty() {
            ps.shard_channels.keys().cloned().collect()
        } else {
            args.clone()
        };
        if named.is_empty() {
            self.oob
                .extend_from_slice(&subs::sunsubscribe_frame(None, 0, proto));
            return;
        }
        let mut carried = Vec::new();
        let mut local = Vec::new();
        for ch in &named {
            match ps.carrier(ch) {
                Some(id) => carried.push((id, ch.clone())),
                None => {
                    // Counted when it goes (see `emit_shard`).
                    local.push(subs::sunsubscribe_frame(Some(ch), 0, proto));
                    ps.record(name, std::slice::from_ref(ch));
                }
            }
        }
        let groups = group_by(carried, |(id, ch)| (*id, slot_of(ch)));
        if groups.len() + usize::from(!local.is_empty()) > 1 {
            // Several masters (or they and the proxy) answer: in turn.
            ps.order.expect(false, named.iter().cloned());
        }
        for ((id, _), chans) in groups {
            let chans: Vec<Bytes> = chans.into_iter().map(|(_, ch)| ch).collect();
            let change = ps.record(name, &chans);
            ps.send_confirmed(id, subs::subscribe_command(name, chans.iter()), change);
        }
        for ch in &named {
            ps.uncarry(ch);
        }
        self.client.info.set_subscriptions(ps.counts());
        for frame in local {
            self.emit_shard(frame);
        }
    }

    /// Writes a frame for the client from a subscription connection (or
    /// the proxy's own confirmation): shard confirmations in the order
    /// their command named the channels, other frames after them (see
    /// [`crate::client::confirm_order`]), each shard confirmation counted
    /// as one server counts it.
    fn emit_shard(&mut self, frame: Bytes) {
        let Some(ps) = self.pubsub.as_mut() else {
            return;
        };
        if ps.order.idle() {
            let frame = subs::in_proto(ps.renumber(frame), self.client.proto);
            self.forward_frame(frame);
            return;
        }
        let mut ready = Vec::new();
        ps.order.offer(frame, &mut ready);
        self.write_shard_frames(ready);
    }

    /// Writes a frame of a subscription connection. A message that comes
    /// while a RESP3 client's `EXEC` or script is owed waits for its reply
    /// (one server, from 7.2 on, writes the messages a transaction or a
    /// script publishes to its own client after the reply; another
    /// client's message then reads as published just after it). At most
    /// [`MAX_HELD_MESSAGES`] wait; more go at once.
    fn forward_frame(&mut self, frame: Bytes) {
        if self.last_publishing > self.base_seq
            && self.notices_after.len() < MAX_HELD_MESSAGES
            && subs::is_message(&frame)
        {
            let seq = self.last_publishing - 1;
            let at = self.notices_after.partition_point(|(s, _)| *s <= seq);
            self.notices_after.insert(at, (seq, Told::Frame(frame)));
        } else {
            self.oob.extend_from_slice(&frame);
        }
    }

    /// The subscription connection on which a RESP3 client's `PUBLISH` or
    /// `SPUBLISH` goes when the client listens to the channel itself: one
    /// server writes the client's own message and the reply in a fixed
    /// order (the message first on 7.0, the reply first from 7.2 on),
    /// which only one connection keeps (sent on a shared one, the two
    /// race). `PUBLISH` goes on the classic subscriptions' connection
    /// (on the home master, where it goes anyway) when a channel or
    /// pattern of the client's matches; `SPUBLISH` on the connection that
    /// carries the shard channel. Not inside `MULTI`, nor with `CLIENT
    /// REPLY OFF` or `SKIP` (whose replies the session leaves out).
    pub(super) fn own_listener(&self, view: &CommandView<'_>) -> Option<u32> {
        if self.client.proto != Proto::Resp3
            || self.multi.is_some()
            || self.client.replies != ReplyMode::On
            || view.len() != 3
        {
            return None;
        }
        let ps = self.pubsub.as_ref()?;
        let (name, channel) = (view.get(0), view.get(1));
        if name.eq_ignore_ascii_case(b"publish") {
            let listens = ps.channels.contains(channel)
                || ps
                    .patterns
                    .iter()
                    .any(|p| crate::colocate::glob_match(p, channel));
            (listens && ps.conns.contains_key(&GLOBAL)).then_some(GLOBAL)
        } else if name.eq_ignore_ascii_case(b"spublish") {
            ps.carrier(channel)
        } else {
            None
        }
    }

    /// Sends a `PUBLISH` or `SPUBLISH` on the client's own subscription
    /// connection `id` (see [`Core::own_listener`]): its reply comes there,
    /// in the node's order with the message, and the client's later
    /// commands wait for it.
    pub(super) fn publish_to_own_listener(&mut self, id: u32, raw: Bytes) {
        if let Some(ps) = self.pubsub.as_mut() {
            ps.send_confirmed(id, raw, Change::default());
        }
    }

    /// Stops holding frames for the shard confirmations' turn (they all
    /// came, or one will not come): what was held goes in the order it
    /// came.
    pub(super) fn flush_shard_order(&mut self) {
        let Some(ps) = self.pubsub.as_mut().filter(|p| !p.order.idle()) else {
            return;
        };
        let mut ready = Vec::new();
        ps.order.flush(&mut ready);
        self.write_shard_frames(ready);
    }

    fn write_shard_frames(&mut self, frames: Vec<Bytes>) {
        let proto = self.client.proto;
        let Some(ps) = self.pubsub.as_mut() else {
            return;
        };
        for frame in frames {
            let frame = subs::in_proto(ps.renumber(frame), proto);
            self.oob.extend_from_slice(&frame);
        }
    }

    /// Handles an event of a mirror (see [`crate::client::mirrors`]).
    fn on_mirror_event(&mut self, id: u32, event: PubSubEvent) {
        let Some(ps) = self.pubsub.as_mut() else {
            return;
        };
        match event {
            PubSubEvent::Frame(frame) => match ps.mirror_frame(id, &frame) {
                MirrorVerdict::Forward => self
                    .oob
                    .extend_from_slice(&subs::in_proto(frame, self.client.proto)),
                MirrorVerdict::Swallow => {}
                MirrorVerdict::Refused => {
                    let node = ps.mirrors.addr(id);
                    tracing::warn!(client = %self.client.info.peer, node = ?node, error = %String::from_utf8_lossy(frame.trim_ascii_end()), "keyspace-notification subscription refused; trying again in 1 s");
                    ps.mirrors.drop_mirror(id);
                    ps.resubscribe_in(TOPOLOGY, REFUSED_RESUBSCRIBE_DELAY);
                }
            },
            PubSubEvent::Lost(_) => {
                // A failover is followed at once (the map changes): this
                // is for a node that fails alone, not too often.
                ps.mirrors.drop_mirror(id);
                ps.resubscribe_in(TOPOLOGY, REFUSED_RESUBSCRIBE_DELAY);
            }
            PubSubEvent::Overflow => self.too_slow(),
            PubSubEvent::Resubscribe => {}
        }
    }

    /// The client does not keep up with its messages: it is disconnected.
    fn too_slow(&mut self) {
        if let Some(ps) = self.pubsub.as_mut() {
            ps.give_up_confirming();
        }
        tracing::warn!(client = %self.client.info.peer, "subscriber too slow for its messages; disconnecting it");
        metrics::counter!(m::SLOW_CLIENT_DISCONNECTS).increment(1);
        self.ctx
            .stats
            .inflight
            .fetch_sub(self.pending.len() as i64, Ordering::Relaxed);
        self.pending.clear();
        self.closing = true;
    }

    async fn on_pubsub_event(&mut self, id: u32, event: PubSubEvent) {
        let Some(ps) = self.pubsub.as_mut() else {
            return;
        };
        if subs::is_mirror(id) {
            return self.on_mirror_event(id, event);
        }
        if id == TOPOLOGY {
            return self.follow_topology();
        }
        match event {
            PubSubEvent::Frame(frame) => match ps.verdict(id, &frame) {
                Verdict::Forward if id == GLOBAL => {
                    ps.home_frame_forwarded(&frame);
                    if ps.order.idle() {
                        let frame = subs::in_proto(frame, self.client.proto);
                        self.forward_frame(frame);
                    } else {
                        self.emit_shard(frame);
                    }
                }
                Verdict::Forward if id == MONITOR => self.oob.extend_from_slice(&frame),
                Verdict::Forward => self.emit_shard(frame),
                Verdict::Swallow => {}
                Verdict::OwnRefused(set, names) => {
                    tracing::warn!(client = %self.client.info.peer, error = %String::from_utf8_lossy(frame.trim_ascii_end()), "re-subscription refused; trying again in 1 s");
                    if set == Set::Shard {
                        for ch in &names {
                            ps.uncarry(ch);
                        }
                        ps.keep_orphans(names);
                        self.ctx.topology.request_refresh();
                    }
                    ps.resubscribe_in(id, REFUSED_RESUBSCRIBE_DELAY);
                }
                Verdict::ShardDropped(channel) => {
                    // The channel's slot left that node: the client keeps
                    // its subscription where the slot went.
                    if ps.carrier(&channel) == Some(id) {
                        tracing::debug!(client = %self.client.info.peer, channel = %String::from_utf8_lossy(&channel), "shard channel dropped by its node; subscribing where its slot went");
                        ps.uncarry(&channel);
                        ps.keep_orphans([channel]);
                        self.ctx.topology.request_refresh();
                        retry_resubscribe(ps, id);
                    }
                }
                Verdict::Refused(change) => {
                    self.refused_subscription(id, frame, change);
                    if id == GLOBAL {
                        // What was undone need not be mirrored.
                        self.sync_mirrors(None);
                    }
                }
            },
            PubSubEvent::Overflow => self.too_slow(),
            PubSubEvent::Lost(_) => {
                let addr = ps.conns.get(&id).map(|c| c.addr.clone());
                let unanswered = ps.lost(id);
                retry_resubscribe(ps, id);
                for _ in 0..unanswered {
                    // A PUBLISH or PING sent there: one reply each.
                    let node = addr.as_deref().unwrap_or("?");
                    self.oob.extend_from_slice(&reply::error(&format!(
                        "ERR slotbridge: connection to node {node} lost before the reply: the subscription connection closed"
                    )));
                }
                if id != GLOBAL {
                    self.flush_shard_order();
                }
            }
            PubSubEvent::Resubscribe => {
                ps.resubscribe_due(id);
                self.resubscribe(id);
            }
        }
    }

    /// Handles a Pub/Sub event and every other one already queued. The
    /// frames of the home and the mirrors wait, in the order they came,
    /// while mirrors confirm their subscriptions.
    pub(super) async fn on_pubsub_events(&mut self, id: u32, event: PubSubEvent) {
        let mut next = Some((id, event));
        while let Some((id, event)) = next {
            let mark = self.oob.len();
            let holding = self.pubsub.as_ref().is_some_and(|p| p.holding());
            self.on_pubsub_event(id, event).await;
            if self.pubsub.as_ref().is_some_and(|p| !p.confirming()) {
                // Every confirmation came (each connection's barrier came
                // after them) or the wait was given up.
                self.flush_shard_order();
            }
            if let Some(ps) = self.pubsub.as_mut() {
                let held = holding || ps.holding();
                if (id == GLOBAL || subs::is_mirror(id)) && held && self.oob.len() > mark {
                    ps.hold(self.oob.split_off(mark));
                }
            }
            self.release_held();
            next = self.pubsub.as_mut().and_then(|p| p.events.try_recv().ok());
        }
    }

    /// Writes the home's held frames once the mirrors have confirmed.
    pub(super) fn release_held(&mut self) {
        if let Some(held) = self.pubsub.as_mut().and_then(|p| p.release_held()) {
            self.oob.unsplit(held);
        }
    }

    /// A node refused a client's subscription command sent on connection
    /// `id` (what it changed is undone): the error goes to the client, but
    /// for shard channels whose slot moved (`-MOVED` never reaches a
    /// client), which are subscribed on their new owner, or unsubscribed
    /// by the proxy (the node had dropped them with the slot).
    fn refused_subscription(&mut self, id: u32, frame: Bytes, change: Change) {
        let proto = self.client.proto;
        let Some(ps) = self.pubsub.as_mut() else {
            return;
        };
        let redirect = crate::client::retry::parse_redirect(&frame);
        let shard = change.set == Some(Set::Shard);
        if redirect.is_some() || frame.starts_with(b"-TRYAGAIN") {
            self.ctx.topology.request_refresh();
        }
        match redirect {
            Some(r) if shard && change.subscribe && !r.ask && change.redirects < 2 => {
                let current = ps.conns.get(&id).map(|c| c.addr.clone());
                let addr: Arc<str> = redirect_addr(&r, current.as_deref()).into();
                tracing::debug!(client = %self.client.info.peer, node = %addr, "shard channels moved; subscribing on their new owner");
                self.send_shard_subscribe(
                    b"SSUBSCRIBE",
                    &addr,
                    &change.names,
                    change.redirects + 1,
                );
            }
            Some(_) if shard && !change.subscribe => {
                for ch in &change.names {
                    ps.uncarry(ch);
                    ps.record(b"sunsubscribe", std::slice::from_ref(ch));
                }
                for ch in &change.names {
                    self.emit_shard(subs::sunsubscribe_frame(Some(ch), 0, proto));
                }
            }
            Some(_) => {
                self.flush_shard_order();
                self.oob.extend_from_slice(
                    b"-TRYAGAIN the slot of this channel is moving between nodes; subscribe again\r\n",
                );
            }
            None => {
                if shard {
                    self.flush_shard_order();
                }
                self.oob.extend_from_slice(&frame);
            }
        }
        let counts = self.pubsub.as_ref().map_or([0; 3], |p| p.counts());
        self.client.info.set_subscriptions(counts);
    }

    /// Subscribes again after connection `id` was lost.
    fn resubscribe(&mut self, id: u32) {
        let opts = self.ctx.topology.conn_options().clone();
        let proto = self.client.proto;
        let map = self.ctx.topology.load();
        let Some(ps) = self.pubsub.as_mut() else {
            return;
        };
        if id == GLOBAL {
            if ps.channels.is_empty() && ps.patterns.is_empty() {
                return;
            }
            let Some(home) = map
                .master(PUBSUB_HOME_SLOT)
                .or_else(|| map.shards().first().map(|s| &s.master))
            else {
                retry_resubscribe(ps, id);
                return;
            };
            let mut cmds = Vec::new();
            for (set, name, names) in [
                (Set::Channels, &b"SUBSCRIBE"[..], &ps.channels),
                (Set::Patterns, &b"PSUBSCRIBE"[..], &ps.patterns),
            ] {
                if !names.is_empty() {
                    let cmd = subs::subscribe_command(name, names.iter());
                    cmds.push((set, cmd, names.iter().cloned().collect::<Vec<_>>()));
                }
            }
            let count = ps.channels.len() + ps.patterns.len();
            ps.global(home.addr(), &opts, proto);
            for (set, cmd, names) in cmds {
                ps.send_own(GLOBAL, set, cmd, names);
            }
            tracing::info!(client = %self.client.info.peer, node = %home.addr(), count, "re-subscribed after a lost connection");
            // The mirrors leave the new home and cover the old one.
            self.sync_mirrors(None);
            return;
        }
        // The lost connections' shard channels: one SSUBSCRIBE per slot on
        // its current owner; those without an owner yet wait for the next
        // try.
        let orphans: Vec<(u16, Bytes)> = ps
            .take_orphans()
            .into_iter()
            .filter_map(|ch| Some((*ps.shard_channels.get(&ch)?, ch)))
            .collect();
        let by_slot: Vec<(u16, Vec<Bytes>)> = group_by(orphans, |(slot, _)| *slot)
            .into_iter()
            .map(|(slot, chans)| (slot, chans.into_iter().map(|(_, ch)| ch).collect()))
            .collect();
        let mut waiting = Vec::new();
        for (slot, channels) in by_slot {
            let Some(pool) = map.master(slot) else {
                waiting.extend(channels);
                continue;
            };
            let cid = ps.shard_id(pool.addr(), &opts, proto);
            let cmd = subs::subscribe_command(b"SSUBSCRIBE", channels.iter());
            ps.carry(cid, channels.iter());
            ps.send_own(cid, Set::Shard, cmd, channels.clone());
            tracing::info!(client = %self.client.info.peer, node = %pool.addr(), count = channels.len(), "re-subscribed shard channels after a lost connection");
        }
        if !waiting.is_empty() {
            ps.keep_orphans(waiting);
            retry_resubscribe(ps, id);
        }
    }
}

/// `items` grouped by `key`, groups and items in first-seen order.
fn group_by<T, K: PartialEq>(items: Vec<T>, key: impl Fn(&T) -> K) -> Vec<(K, Vec<T>)> {
    let mut groups: Vec<(K, Vec<T>)> = Vec::new();
    for item in items {
        let k = key(&item);
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, members)) => members.push(item),
            None => groups.push((k, vec![item])),
        }
    }
    groups
}

/// Tries subscribing again after a lost connection in 200 ms.
fn retry_resubscribe(ps: &mut PubSubState, id: u32) {
    ps.resubscribe_in(id, Duration::from_millis(200));
}

/// How long the proxy waits before subscribing again when a node refused
/// its re-subscription (`-BUSY`, `-NOPERM`, a moved slot).
const REFUSED_RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);

pub(super) async fn next_pubsub_event(
    pubsub: &mut Option<Box<PubSubState>>,
) -> Option<(u32, PubSubEvent)> {
    match pubsub {
        Some(p) => p.events.recv().await,
        None => std::future::pending().await,
    }
}
