//! Commands answered by several nodes: cross-slot splits, fan-outs to every
//! master and `SCAN` over the masters one after another.

use super::redirect::{masters, scan_masters};
use super::*;

impl Core {
    pub(super) async fn split(&mut self, kind: SplitKind, view: &CommandView<'_>, seq: u64) {
        let max_keys = self.config.limits.max_keys_per_subcommand;
        let map: Arc<SlotMap> = Arc::clone(&self.ctx.topology.load());
        // Under the WAIT policy every sub-command is followed by its own
        // WAIT, and a tracked one is preceded by CLIENT CACHING YES: each
        // leaves alone.
        let by_node = self.config.durability.wait_replicas == 0 && !self.track;
        let (subs, all) = if self.scratch.keys.len() > BIG_SPLIT {
            // Hashing and regrouping a huge command is CPU work measured in
            // tens of milliseconds: do it off the runtime threads so other
            // clients keep being served.
            let raw = Bytes::copy_from_slice(view.raw);
            let args = view.args.to_vec();
            let keys = self.scratch.keys.clone();
            let slots = self.scratch.slots.clone();
            let work = tokio::task::spawn_blocking(move || {
                let view = CommandView {
                    raw: &raw,
                    args: &args,
                };
                split::split_by_node(kind, &view, &keys, &slots, max_keys, |s| {
                    node_rank(&map, by_node, s)
                })
            });
            match work.await {
                Ok(split) => split,
                Err(_) => {
                    self.ready(reply::error(
                        "ERR slotbridge: internal error while splitting the command",
                    ));
                    return;
                }
            }
        } else {
            let (keys, slots) = (&self.scratch.keys, &self.scratch.slots);
            split::split_by_node(kind, view, keys, slots, max_keys, |s| {
                node_rank(&map, by_node, s)
            })
        };
        // Runs of sub-commands for one node leave as one request, whose
        // replies come back together: (slot, payload, commands, first part).
        let mut sends: Vec<(u16, Bytes, u32, u32)> = Vec::with_capacity(subs.len());
        let mut parts: Vec<Part> = Vec::with_capacity(subs.len());
        let (mut run_start, mut run_offset, mut prev_node) = (0, 0, split::NO_NODE);
        for (i, sub) in subs.into_iter().enumerate() {
            let joins = sub.node != split::NO_NODE && sub.node == prev_node;
            match sends.last_mut() {
                Some((_, payload, count, _)) if joins => {
                    *payload = all.slice(run_offset..sub.offset + sub.payload.len());
                    *count += 1;
                    parts[run_start].group += 1;
                }
                _ => {
                    (run_start, run_offset) = (i, sub.offset);
                    sends.push((sub.slot, sub.payload.clone(), 1, i as u32));
                }
            }
            prev_node = sub.node;
            parts.push(Part {
                sent: Sent {
                    tracked: self.track,
                    // Reads of single keys: safe to retry after a lost reply.
                    readonly: kind.read_per_key().is_some(),
                    ..Sent::to_slot(sub.payload, sub.slot)
                },
                positions: sub.positions,
                reply: None,
                group: 1,
            });
        }
        let mut dest = (
            self.scratch.keys.first().copied(),
            self.scratch.slots.first().copied(),
        );
        if kind == SplitKind::GeoStore {
            // Its destination follows the source (GEORADIUS ... STORE).
            let at = crate::command::find(view)
                .and_then(|spec| crate::geo::store_keys(spec.name, view))
                .map(|(_, d)| d);
            dest = (at, at.map(|d| crate::cluster::slot::slot(view.get(d))));
        }
        let merge = match dest {
            (Some(k), Some(slot)) if kind.takes_two_steps() => {
                if kind.writes_after_reads() {
                    self.merging = Some(seq);
                }
                let keys = &self.scratch.keys;
                let after = keys.last().map_or(view.len(), |&k| k + 1);
                let tail = || -> Vec<&[u8]> { (after..view.len()).map(|i| view.get(i)).collect() };
                MergeKind::Write {
                    kind,
                    dest: Bytes::copy_from_slice(view.get(k)),
                    slot,
                    options: match kind {
                        SplitKind::ZStore(op) => Some(crate::zset::parse_options(
                            op,
                            &tail(),
                            keys.len() - 1,
                            false,
                        )),
                        SplitKind::ZRead(op) => {
                            Some(crate::zset::parse_options(op, &tail(), keys.len(), true))
                        }
                        _ => None,
                    },
                }
            }
            _ => MergeKind::Split(kind),
        };
        self.push(Pending::Multi(Box::new(Multi {
            kind: merge,
            // Set by the route that chose to split.
            name: self.scratch.name,
            remaining: parts.len(),
            parts,
            total_keys: self.scratch.keys.len(),
        })));
        for (i, (slot, payload, count, part)) in sends.into_iter().enumerate() {
            if i % 64 == 63 {
                // A huge split must not monopolise a single-threaded runtime.
                tokio::task::yield_now().await;
            }
            if count > 1 {
                self.send_group(slot, payload, count, seq, part).await;
            } else {
                let target = Target::Slot(slot);
                self.send(target, payload, false, Via::Shared, 0, seq, part)
                    .await;
            }
        }
    }

    /// Sends `count` per-slot sub-commands for one node as one request;
    /// their replies come back together, to part `part` (see
    /// [`Core::on_replies`]).
    pub(super) async fn send_group(
        &self,
        slot: u16,
        payload: Bytes,
        count: u32,
        seq: u64,
        part: u32,
    ) {
        let req = BackendRequest {
            payload,
            asking: false,
            skip: 0,
            then_wait: None,
            caching: false,
            replies: count,
            reply_to: self.reply_to(seq, part),
        };
        let owner = self.ctx.topology.load().master(slot).cloned();
        let later = match owner {
            Some(pool) => self.send_to(&pool, Via::Shared, req),
            None => Some(Later::Owner(slot, Via::Shared, req)),
        };
        if let Some(later) = later {
            Box::pin(self.send_later(later)).await;
        }
    }

    pub(super) async fn fanout(
        &mut self,
        kind: MergeKind,
        name: &'static str,
        raw: Bytes,
        seq: u64,
    ) {
        let nodes = masters(&self.ctx);
        if nodes.is_empty() {
            self.ready(self.no_cluster());
            return;
        }
        // A node running a script answers SCRIPT KILL only on another
        // connection than the one the script came on (the shared one).
        let via = match kind {
            MergeKind::Fanout(Fanout::Kill) => Via::Private,
            _ => Via::Shared,
        };
        // A script body the nodes may refuse (see `Post::Eval`).
        let post = || match name {
            "script|load" => script_body(&raw).map_or(Post::None, Post::Eval),
            _ => Post::None,
        };
        let parts = nodes
            .iter()
            .map(|n| Part {
                sent: Sent {
                    sticky: true,
                    via,
                    post: post(),
                    ..Sent::to_node(raw.clone(), n.clone())
                },
                positions: split::Positions::default(),
                reply: None,
                group: 1,
            })
            .collect();
        self.push(Pending::Multi(Box::new(Multi {
            kind,
            name,
            parts,
            remaining: nodes.len(),
            total_keys: 0,
        })));
        for (i, node) in nodes.iter().enumerate() {
            let target = Target::Addr(node.to_string());
            self.send(target, raw.clone(), false, via, 0, seq, i as u32)
                .await;
        }
    }

    /// `SCAN cursor [options]`: one master at a time, in address order.
    pub(super) async fn scan(&mut self, raw: Bytes, view: &CommandView<'_>, seq: u64) {
        let Some(cursor) = std::str::from_utf8(view.get(1))
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            self.ready(reply::error("ERR invalid cursor"));
            return;
        };
        let nodes = scan_masters(&self.ctx);
        let (node, node_cursor) = keyspace::decode_cursor(cursor);
        let Some(addr) = nodes.get(node) else {
            self.ready(Bytes::from_static(b"*2\r\n$1\r\n0\r\n*0\r\n"));
            return;
        };
        let cursor_text = node_cursor.to_string();
        let args = std::iter::once(view.get(0))
            .chain(std::iter::once(cursor_text.as_bytes()))
            .chain((2..view.len()).map(|i| view.get(i)));
        let payload = reply::command(args.collect::<Vec<_>>());
        drop(raw);
        let mut sent = Sent::to_node(payload, addr.clone());
        sent.sticky = true;
        sent.post = Post::Scan {
            node,
            nodes: nodes.len(),
            want: keyspace::scan_count((0..view.len()).map(|i| view.get(i))),
            carried: None,
        };
        self.start(sent, seq).await;
    }
}

/// The rank of the node owning `slot`, for grouping sub-commands per node
/// ([`split::NO_NODE`]: not grouped).
fn node_rank(map: &SlotMap, by_node: bool, slot: u16) -> u32 {
    match map.shard_of(slot) {
        Some(shard) if by_node => u32::from(shard),
        _ => split::NO_NODE,
    }
}

/// The body of `SCRIPT LOAD body`.
fn script_body(raw: &Bytes) -> Option<Bytes> {
    let args = crate::protocol::scan::children(raw)?;
    let &(s, e) = args.get(2)?;
    let body = crate::protocol::scan::bulk_body(&raw[s..e])?;
    Some(raw.slice_ref(body))
}
