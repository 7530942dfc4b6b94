//! Backend replies coming back: matched to their commands, redirected or
//! retried, merged, and collected in request order for writing.

use super::redirect::{decide, no_cluster};
use super::tx::merge_per_slot_exec;
use super::*;
use crate::introspection;
use crate::merge::replace_with;
use crate::protocol::scan::bulk_body;
use crate::zset::{ZOp, ZOptions};

impl Core {
    /// Handles `first` and every other reply already queued.
    pub(super) async fn on_replies(&mut self, first: Reply) {
        let mut next = Some(first);
        let mut handled = 0u32;
        while let Some(r) = next
            .take()
            .or_else(|| self.replies.get_mut().and_then(|(_, rx)| rx.try_recv()))
        {
            handled += 1;
            if handled.is_multiple_of(256) {
                // Thousands of replies (a huge split) must not keep the
                // other clients of a single-threaded runtime waiting.
                tokio::task::yield_now().await;
            }
            if r.part == PIPELINE_GROUP {
                let Some(at) = self.groups.iter().position(|(id, _)| *id == r.seq) else {
                    continue;
                };
                let (_, seqs) = self.groups.swap_remove(at);
                for ((data, status), seq) in group_frames(&r, seqs.len()).into_iter().zip(seqs) {
                    let each = Reply {
                        seq,
                        part: 0,
                        data,
                        status,
                        ends: Vec::new(),
                    };
                    if let Some(resend) = self.on_reply(each) {
                        Box::pin(self.resend(resend)).await;
                    }
                }
                continue;
            }
            let group = self.take_group(&r);
            if group > 1 {
                for each in split_group_reply(r, group) {
                    if let Some(resend) = self.on_reply(each) {
                        Box::pin(self.resend(resend)).await;
                    }
                }
                continue;
            }
            // Synchronous unless the command must be sent again: the
            // sending future is large, and building it for every reply
            // cost more than handling the reply.
            if let Some(resend) = self.on_reply(r) {
                Box::pin(self.resend(resend)).await;
            }
        }
    }

    async fn resend(&self, r: Resend) {
        self.send(r.to, r.payload, r.asking, r.via, r.skip, r.seq, r.part)
            .await;
    }

    /// How many parts `r` answers: more than 1 for the first reply to
    /// sub-commands sent together (see [`Core::send_group`]); from then on
    /// each of them is answered alone (retries and redirections).
    fn take_group(&mut self, r: &Reply) -> u32 {
        let Some(idx) = r.seq.checked_sub(self.base_seq) else {
            return 1;
        };
        match self.pending.get_mut(idx as usize).map(|s| &mut s.state) {
            Some(Pending::Multi(multi)) => match multi.parts.get_mut(r.part as usize) {
                Some(part) => std::mem::replace(&mut part.group, 1),
                None => 1,
            },
            _ => 1,
        }
    }

    /// Handles one reply frame from a backend; returns what to send again
    /// when the command must be retried or redirected now.
    pub(super) fn on_reply(&mut self, r: Reply) -> Option<Resend> {
        let idx = r.seq.checked_sub(self.base_seq)?;
        let entry = self.pending.get_mut(idx as usize).map(|s| &mut s.state)?;
        let (next, payload, via, skip, tracked) = match entry {
            Pending::Single(sent) => match decide(sent, &r, &self.ctx) {
                Next::Done(data) => {
                    let blocking = sent.via == Via::Blocking;
                    *entry = Pending::Ready(data);
                    if blocking {
                        self.blocking_answered();
                    }
                    return None;
                }
                next => (
                    next,
                    sent.payload.clone(),
                    sent.via,
                    sent.skip,
                    std::mem::take(&mut sent.tracked),
                ),
            },
            Pending::Multi(multi) => {
                let part = multi.parts.get_mut(r.part as usize)?;
                match decide(&mut part.sent, &r, &self.ctx) {
                    Next::Done(data) => {
                        if part.reply.is_none() {
                            part.reply = Some(data);
                            multi.remaining -= 1;
                        }
                        if multi.remaining == 0 {
                            if let MergeKind::Write {
                                kind,
                                dest,
                                slot,
                                options,
                            } = &mut multi.kind
                            {
                                let (kind, dest, slot) = (*kind, dest.clone(), *slot);
                                let options = options.take();
                                let proto = self.client.proto;
                                return second_step(
                                    entry,
                                    kind,
                                    (&dest, slot),
                                    options.as_ref(),
                                    proto,
                                    r.seq,
                                );
                            }
                            let merged = merge_multi(&self.ctx, self.client.proto, multi);
                            if let Some(first) =
                                multi.parts.first().filter(|_| multi.name == "config|set")
                            {
                                // Carried to masters that join later.
                                let settings = &self.ctx.node_settings;
                                if &merged[..] == reply::OK {
                                    let masters =
                                        multi.parts.iter().filter_map(|p| p.sent.node.clone());
                                    settings.remember(&first.sent.payload, masters.collect());
                                } else {
                                    settings.forget(&first.sent.payload);
                                }
                            }
                            *entry = Pending::Ready(merged);
                        }
                        return None;
                    }
                    next => (
                        next,
                        part.sent.payload.clone(),
                        part.sent.via,
                        part.sent.skip,
                        std::mem::take(&mut part.sent.tracked),
                    ),
                }
            }
            Pending::Ready(_) | Pending::Close(_) => return None,
        };
        let Next::Resend { to, asking, delay } = next else {
            return None;
        };
        if tracked {
            // Sent again untracked (see `track`): the client flushes its
            // cache once the reply is in (once per command).
            self.tell(&crate::tracking::Notice::All);
        }
        if delay {
            // Retry later without holding up this client's other replies.
            let timer = self.reply_to(r.seq, r.part);
            tokio::spawn(async move {
                tokio::time::sleep(RETRY_DELAY).await;
                timer.send(Bytes::new(), ReplyStatus::RetryTimer);
            });
            return None;
        }
        Some(Resend {
            to,
            payload,
            asking,
            via,
            skip,
            seq: r.seq,
            part: r.part,
        })
    }

    /// Moves every complete reply at the head of the queue into `out`.
    pub(super) fn collect_ready(&mut self, out: &mut BytesMut) {
        let now = match self.pending.front() {
            Some(Slot {
                state: Pending::Ready(_) | Pending::Close(_),
                ..
            }) => std::time::Instant::now(),
            _ => self.batch_started,
        };
        if !self.oob.is_empty() {
            out.extend_from_slice(&self.oob);
            self.oob.clear();
            self.out_mixed = true;
        }
        while let Some(front) = self.pending.front() {
            match &front.state {
                Pending::Ready(b) => {
                    let decoded = if self.ctx.rules.is_empty() {
                        None
                    } else {
                        rewrite::decode_reply(
                            &self.ctx.rules,
                            front.name,
                            b,
                            front.filter.as_deref(),
                        )
                    };
                    if !front.silent {
                        out.extend_from_slice(decoded.as_ref().unwrap_or(b));
                    }
                    record(front, b, now);
                    self.flushed = false;
                }
                Pending::Close(b) => {
                    if !front.silent {
                        out.extend_from_slice(b);
                    }
                    record(front, b, now);
                    self.closing = true;
                    // Nothing follows the last reply: no more messages.
                    self.pubsub = None;
                    self.ctx
                        .stats
                        .inflight
                        .fetch_sub(self.pending.len() as i64, Ordering::Relaxed);
                    self.pending.clear();
                    return;
                }
                Pending::Single(_) | Pending::Multi(_) => return,
            }
            match self.out_batch {
                None => self.out_batch = Some(front.batch),
                Some(batch) => self.out_mixed |= batch != front.batch,
            }
            self.pending.pop_front();
            self.ctx.stats.inflight.fetch_sub(1, Ordering::Relaxed);
            while self
                .notices_after
                .front()
                .is_some_and(|(seq, _)| *seq <= self.base_seq)
            {
                match self.notices_after.pop_front() {
                    Some((_, told)) if self.repeats(&told) => {}
                    Some((_, Told::Frame(push))) => {
                        out.extend_from_slice(&push);
                        self.out_mixed = true;
                    }
                    Some((_, Told::Forward(notice))) => {
                        self.ctx.tracker.deliver(self.client.info.id, notice)
                    }
                    None => {}
                }
            }
            self.base_seq += 1;
        }
    }

    /// Takes a new snapshot of the configuration if it changed.
    pub(super) fn refresh_config(&mut self) {
        let version = self.ctx.settings_version();
        if version != self.settings_version {
            self.config = self.ctx.config_snapshot();
            self.settings_version = version;
        }
    }

    /// Whether to hold the collected replies back a little: they are part
    /// of one batch (the commands of one read) whose other replies are
    /// still coming over pipelined connections. Writing a batch's replies
    /// once, as Redis does, saves a client write per backend that answers.
    /// Never for a blocking command or one that waits to be retried.
    pub(super) fn holds_output(&self) -> bool {
        let (Some(batch), Some(front), false) =
            (self.out_batch, self.pending.front(), self.out_mixed)
        else {
            return false;
        };
        front.batch == batch
            && match &front.state {
                Pending::Single(sent) => sent.answers_soon(),
                Pending::Multi(multi) => multi
                    .parts
                    .iter()
                    .all(|part| part.reply.is_some() || part.sent.answers_soon()),
                Pending::Ready(_) | Pending::Close(_) => false,
            }
    }

    /// Whether a command the others wait for (a cross-slot store or pop,
    /// a blocking command, a `WATCH`) is still to be answered (its entry
    /// is in the queue and not ready); forgets it once it is.
    pub(super) fn merge_in_flight(&mut self) -> bool {
        let Some(seq) = self.merging else {
            return false;
        };
        let entry = seq
            .checked_sub(self.base_seq)
            .and_then(|i| self.pending.get(i as usize));
        let waiting = match entry.map(|s| &s.state) {
            Some(Pending::Multi(m)) => matches!(m.kind, MergeKind::Write { .. }),
            Some(Pending::Single(sent)) => {
                matches!(sent.post, Post::Write(_))
                    || matches!(sent.via, Via::Blocking | Via::Pinned)
            }
            _ => false,
        };
        if !waiting {
            self.merging = None;
        }
        waiting
    }

    /// Whether the command the others wait for (see
    /// [`Core::merge_in_flight`]) is a pop waiting over several slots: a
    /// client that leaves ends it, as one server drops a blocked client.
    pub(super) fn merge_blocks(&self) -> bool {
        let entry = self
            .merging
            .and_then(|seq| seq.checked_sub(self.base_seq))
            .and_then(|i| self.pending.get(i as usize));
        matches!(entry.map(|s| &s.state), Some(Pending::Single(sent)) if sent.via == Via::Blocking)
    }

    /// Whether the command runs on a connection of its own: a blocking
    /// command, `WATCH`, or `EXEC` after `WATCH`. Sent while the client's
    /// earlier commands are still out on the shared connections, it could
    /// run before them (a `WATCH` before the client's own earlier write,
    /// which would then abort its transaction; a pop before an earlier
    /// push or `DEL`).
    fn runs_apart(&self, name: &[u8], view: &CommandView<'_>) -> bool {
        // Cheap first: every such command starts with one of these.
        if !matches!(
            name.first().map(u8::to_ascii_lowercase),
            Some(b'b' | b'x' | b'w' | b'e')
        ) {
            return false;
        }
        if name.eq_ignore_ascii_case(b"exec") {
            // On the WATCH connection, or after flushing the other
            // masters (see `Core::fan_out_others`).
            return self
                .multi
                .as_ref()
                .is_some_and(|tx| self.pinned.is_some() || !tx.fanouts.is_empty());
        }
        if self.multi.is_some() {
            // Queued: nothing blocks inside a transaction.
            return false;
        }
        name.eq_ignore_ascii_case(b"watch")
            || crate::command::find(view)
                .is_some_and(|spec| crate::command::route::is_blocking(spec, view))
    }

    /// The collected replies were all written.
    pub(super) fn output_written(&mut self) {
        self.out_batch = None;
        self.out_mixed = false;
    }

    /// Whether `CLIENT PAUSE` holds the command now: then it and the
    /// commands after it wait until the pause ends ([`Turn::Unpaused`]).
    /// One atomic load when nothing is paused. Commands Redis refuses
    /// before its pause check (unknown, wrong arity, unauthenticated,
    /// refused by the user's ACL rules) are not held.
    pub(super) fn held_by_pause(&mut self, view: &CommandView<'_>) -> bool {
        let pause = &self.ctx.pause;
        if !pause.holds(true) || !self.client.authed {
            return false;
        }
        let Some(spec) = crate::command::find(view) else {
            return false;
        };
        if !crate::command::keys::arity_ok(spec, view.len()) {
            return false;
        }
        if self
            .client
            .acl
            .as_ref()
            .is_some_and(|acl| acl.check(view).is_err())
        {
            return false;
        }
        let writes = if spec.name == "exec" {
            self.multi.as_ref().is_some_and(|tx| tx.writes)
        } else {
            crate::client::pause::may_write(spec, view, Some(&self.ctx.scripts))
        };
        self.paused = pause.holds(writes);
        if self.paused {
            self.client.info.set_paused(true);
        }
        self.paused
    }

    /// Subscription commands wait until every earlier reply is written, so
    /// their confirmations (which bypass the reply queue) stay in order, and
    /// the commands after them (`QUIT`, `RESET` too) wait for those
    /// confirmations. So do the commands that run on a connection of their
    /// own (see [`Core::runs_apart`]).
    pub(super) fn must_wait_for_earlier_replies(&mut self, view: &CommandView<'_>) -> bool {
        if self.merge_in_flight() {
            return true;
        }
        let name = view.args.first().map_or(&b""[..], |_| view.get(0));
        if !self.pending.is_empty() && self.runs_apart(name, view) {
            return true;
        }
        if let Some(ps) = self.pubsub.as_ref().filter(|p| p.confirming()) {
            // And other commands wait for the confirmations of earlier
            // subscription commands, so that their replies follow them;
            // a classic one does not when those are all due on the classic
            // connection, where it goes next.
            let same_conn =
                subs::is_classic_subscription_command(name) && ps.confirming_only_on(GLOBAL);
            if !same_conn {
                return true;
            }
        }
        if self.pending.is_empty() {
            return false;
        }
        // A publish to the client's own subscription waits like one.
        subs::is_subscription_command(name)
            || self.own_listener(view).is_some()
            || (name.eq_ignore_ascii_case(b"ping")
                && self.pubsub.as_ref().is_some_and(|p| p.active()))
    }
}

/// The next reply on the session's channel (pending while it has none).
pub(super) async fn next_reply(replies: &mut std::sync::OnceLock<ReplyChannel>) -> Option<Reply> {
    match replies.get_mut() {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Counts a completed command.
fn record(slot: &Slot, reply: &[u8], now: std::time::Instant) {
    if slot.name.is_empty() {
        return;
    }
    let error = reply.first() == Some(&b'-');
    let elapsed = now.saturating_duration_since(slot.started);
    m::record_command(slot.index, slot.name, slot.class, error, elapsed);
}

/// The replies to `count` commands sent as one request, in order: the
/// frames of `r` when the server answered. A failure's data is the frames
/// the server sent before the connection failed, then the error, which
/// goes to each command left unanswered.
fn group_frames(r: &Reply, count: usize) -> Vec<(Bytes, ReplyStatus)> {
    let mut out = Vec::with_capacity(count);
    let mut scanner = FrameScanner::new();
    let mut at = 0;
    if r.status != ReplyStatus::Answered {
        let mut frames: Vec<Bytes> = Vec::new();
        while let Ok(Some(n)) = scanner.scan(r.data.get(at..).unwrap_or_default()) {
            frames.push(r.data.slice(at..at + n));
            at += n;
        }
        let error = frames.pop().unwrap_or_else(|| r.data.clone());
        let mut answered = frames.into_iter();
        for _ in 0..count {
            out.push(match answered.next() {
                Some(frame) => (frame, ReplyStatus::Answered),
                None => (error.clone(), r.status),
            });
        }
        return out;
    }
    if r.ends.len() == count && r.ends.last() == Some(&r.data.len()) {
        // Where the connection found them: no second scan.
        for &end in &r.ends {
            match r.data.get(at..end) {
                Some(_) => out.push((r.data.slice(at..end), r.status)),
                None => out.push((
                    reply::error("ERR slotbridge: incomplete reply from a server"),
                    ReplyStatus::Final,
                )),
            }
            at = end.max(at);
        }
        return out;
    }
    for _ in 0..count {
        match scanner.scan(r.data.get(at..).unwrap_or_default()) {
            Ok(Some(n)) => {
                out.push((r.data.slice(at..at + n), r.status));
                at += n;
            }
            // The connection delivers whole frames, all of them: this
            // cannot happen, but must not hang the client if it did.
            _ => out.push((
                reply::error("ERR slotbridge: incomplete reply from a server"),
                ReplyStatus::Final,
            )),
        }
    }
    out
}

/// One reply per part from the reply to `group` sub-commands of one
/// command sent together (see [`group_frames`]).
fn split_group_reply(r: Reply, group: u32) -> Vec<Reply> {
    group_frames(&r, group as usize)
        .into_iter()
        .zip(r.part..)
        .map(|((data, status), part)| Reply {
            seq: r.seq,
            part,
            data,
            status,
            ends: Vec::new(),
        })
        .collect()
}

/// The second step of a command the proxy computes across slots (see
/// [`SplitKind::takes_two_steps`]), once its keys were read: replaces the
/// entry with the request to send now, or with the finished reply (an
/// error the reads or the options gave, or a reply that needs no node).
fn second_step(
    entry: &mut Pending,
    kind: SplitKind,
    target: (&Bytes, u16),
    options: Option<&Result<ZOptions, &'static str>>,
    proto: Proto,
    seq: u64,
) -> Option<Resend> {
    let (dest, slot) = target;
    let Pending::Multi(multi) = entry else {
        return None;
    };
    let replies: Vec<&Bytes> = multi
        .parts
        .iter()
        .filter_map(|p| p.reply.as_ref())
        .collect();
    let options = || match options {
        Some(Ok(options)) => Ok(options),
        Some(Err(e)) => Err(reply::error(e)),
        None => Err(reply::error("ERR slotbridge: sorted-set options missing")),
    };
    // Err: the reply is complete without another request.
    let next = match kind {
        SplitKind::ZRead(op) => {
            zread_request(op, &replies, options, proto).map(|p| (p, Post::None))
        }
        SplitKind::ZStore(op) => {
            zstore_write(op, &replies, options, dest).map(|(p, n)| (p, Post::Write(Some(n))))
        }
        SplitKind::GeoStore => match replies.first() {
            Some(read) => crate::geo::parse_read(read)
                .map(|(n, members)| (store_scored(dest, &members).0, Post::Write(Some(n)))),
            None => Err(reply::error("ERR slotbridge: geo store read missing")),
        },
        SplitKind::ZRangeStore => {
            range_store_write(&replies, dest).map(|(p, n)| (p, Post::Write(Some(n))))
        }
        SplitKind::SStore(op) => merge::set_result(op, &replies).and_then(|members| {
            let len = i64::try_from(members.len()).unwrap_or(i64::MAX);
            let bodies: Option<Vec<&[u8]>> = members.into_iter().map(bulk_body).collect();
            let bodies = bodies.ok_or_else(|| {
                reply::error(
                    "ERR slotbridge: unexpected reply shape from a server while merging SMEMBERS",
                )
            })?;
            Ok((replace_with(b"SADD", dest, bodies), Post::Write(Some(len))))
        }),
        SplitKind::Bitop(op) => merge::bitop(op, &replies).map(|value| {
            // SET drops a TTL and overwrites any type, as BITOP does.
            let len = i64::try_from(value.len()).unwrap_or(i64::MAX);
            let payload = if value.is_empty() {
                reply::command([&b"DEL"[..], dest])
            } else {
                reply::command([&b"SET"[..], dest, &value])
            };
            (payload, Post::Write(Some(len)))
        }),
        _ => merge::pfmerge_sources(&replies)
            .map(|value| (pfmerge_write(dest, &value), Post::Write(None))),
    };
    let (payload, post) = match next {
        Ok(next) => next,
        Err(done) => {
            *entry = Pending::Ready(done);
            return None;
        }
    };
    *entry = Pending::Single(Sent {
        // A read (the scores of ZUNION & co) may be retried.
        readonly: matches!(post, Post::None),
        post,
        ..Sent::to_slot(payload.clone(), slot)
    });
    Some(Resend {
        to: Target::Slot(slot),
        payload,
        asking: false,
        via: Via::Shared,
        skip: 0,
        seq,
        part: 0,
    })
}

/// `PFMERGE`'s write: one script stores the merged sources under a
/// temporary key of the destination's slot, merges it into the
/// destination with `PFMERGE` (which so decides the encoding and applies
/// the registers exactly as for the whole command) and deletes it. The
/// shebang makes the node check OOM before the script runs, as for
/// `PFMERGE` itself.
fn pfmerge_write(dest: &Bytes, value: &[u8]) -> Bytes {
    const SCRIPT: &[u8] = b"#!lua\nlocal r = redis.pcall('SET', KEYS[2], ARGV[1]) \
        if type(r) == 'table' and r.err then return r end \
        r = redis.pcall('PFMERGE', KEYS[1], KEYS[2]) \
        redis.call('DEL', KEYS[2]) return r";
    let temp = crate::cluster::slot::temp_key(dest, "pfmerge");
    reply::command([&b"EVAL"[..], SCRIPT, b"2", dest, &temp, value])
}

/// The write of `ZUNIONSTORE`, `ZINTERSTORE` or `ZDIFFSTORE` across slots:
/// the sources' errors first, then the options', as Redis checks them;
/// then one script that replaces the destination by the result (`ZADD` in
/// chunks, within Lua's stack), or `DEL` when it is empty; and the
/// result's size, which the client gets.
fn zstore_write<'a>(
    op: ZOp,
    replies: &[&Bytes],
    options: impl FnOnce() -> Result<&'a ZOptions, Bytes>,
    dest: &Bytes,
) -> Result<(Bytes, i64), Bytes> {
    let sources = merge::zsources(replies)?;
    let result = crate::zset::compute(op, &sources, options()?);
    Ok(store_scored(dest, &result))
}

/// The write that replaces `dest` by the sorted set `members` (see
/// [`replace_with`]), and the size the client gets.
fn store_scored(dest: &Bytes, members: &[(&[u8], f64)]) -> (Bytes, i64) {
    let len = i64::try_from(members.len()).unwrap_or(i64::MAX);
    // Scores in the shortest form that reads back as the same double.
    let scores: Vec<String> = members.iter().map(|(_, s)| format!("{s:e}")).collect();
    let args = members
        .iter()
        .zip(&scores)
        .flat_map(|((member, _), score)| [score.as_bytes(), *member]);
    (replace_with(b"ZADD", dest, args), len)
}

/// The write of `ZRANGESTORE` across slots, from its range read (one
/// `ZRANGE ... WITHSCORES`, whose error is the reply): the range replaces
/// the destination, or deletes it when empty; the client gets its size.
fn range_store_write(replies: &[&Bytes], dest: &Bytes) -> Result<(Bytes, i64), Bytes> {
    let range = merge::zsources(replies)?;
    Ok(store_scored(
        dest,
        range.first().map_or(&[][..], Vec::as_slice),
    ))
}

/// `ZUNION`, `ZINTER`, `ZDIFF` across slots: the sources' errors, then the
/// options', then the result in sorted-set order. Members alone are the
/// whole reply (as `Err`); with `WITHSCORES` the request for one read-only
/// script on a node that returns them with each score as a double reply,
/// so that the node writes the scores as it writes every double (its own
/// version's format), flat in RESP2, as pairs in RESP3.
fn zread_request<'a>(
    op: ZOp,
    replies: &[&Bytes],
    options: impl FnOnce() -> Result<&'a ZOptions, Bytes>,
    proto: Proto,
) -> Result<Bytes, Bytes> {
    const SCRIPT: &[u8] = b"#!lua flags=no-writes\nlocal out = {} \
        for i = 2, #ARGV, 2 do \
        local s = {double = tonumber(ARGV[i + 1])} \
        if ARGV[1] == '3' then out[#out + 1] = {ARGV[i], s} \
        else out[#out + 1] = ARGV[i] out[#out + 1] = s end end \
        return out";
    let sources = merge::zsources(replies)?;
    let options = options()?;
    let mut result = crate::zset::compute(op, &sources, options);
    crate::zset::sort(&mut result);
    if !options.withscores {
        let mut out = BytesMut::new();
        reply::put_array(&mut out, result.len());
        for (member, _) in &result {
            reply::put_bulk(&mut out, member);
        }
        return Err(out.freeze());
    }
    let scores: Vec<String> = result.iter().map(|(_, s)| format!("{s:e}")).collect();
    let mut args: Vec<&[u8]> = Vec::with_capacity(4 + 2 * result.len());
    let shape: &[u8] = if proto == Proto::Resp3 { b"3" } else { b"2" };
    args.extend([&b"EVAL"[..], SCRIPT, b"0", shape]);
    for ((member, _), score) in result.iter().zip(&scores) {
        args.push(member);
        args.push(score.as_bytes());
    }
    Ok(reply::command(args))
}

/// Combines the replies of all parts into one reply.
fn merge_multi(ctx: &Context, proto: Proto, multi: &Multi) -> Bytes {
    // Sized up front: a filtered collect grows its vector step by step.
    let mut replies: Vec<&Bytes> = Vec::with_capacity(multi.parts.len());
    replies.extend(multi.parts.iter().filter_map(|p| p.reply.as_ref()));
    let errors: Vec<&Bytes> = replies
        .iter()
        .copied()
        .filter(|r| reply_kind(r[0]) == ReplyKind::Error)
        .collect();
    match multi.kind {
        // Errors too are Redis's, decided key by key.
        MergeKind::Split(SplitKind::PfCount) => return merge::pfcount(&replies),
        MergeKind::Split(SplitKind::ZInterCard(limit)) => {
            return merge::zintercard(limit, &replies)
        }
        MergeKind::Split(SplitKind::Lcs(options)) => return merge::lcs(options, &replies, proto),
        MergeKind::Fanout(Fanout::Kill) => return merge::kill(&replies),
        _ => {}
    }
    if let (Some(first), MergeKind::Split(SplitKind::Sets(_))) = (errors.first(), &multi.kind) {
        // Read-only: the first error (e.g. WRONGTYPE) is exactly Redis's.
        return (*first).clone();
    }
    if !errors.is_empty() {
        return merge::failed(multi.name, &errors, multi.parts.len());
    }
    match &multi.kind {
        MergeKind::Tx(plan) => merge_per_slot_exec(plan, &replies),
        MergeKind::Split(SplitKind::Mget) => {
            let mut parts: Vec<(&Bytes, &[u32])> = Vec::with_capacity(multi.parts.len());
            parts.extend(
                multi
                    .parts
                    .iter()
                    .filter_map(|p| p.reply.as_ref().map(|r| (r, p.positions.as_slice()))),
            );
            merge::mget(&parts, multi.total_keys)
        }
        MergeKind::Split(SplitKind::Mset) | MergeKind::Fanout(Fanout::AllOk) => {
            merge::all_ok(&replies)
        }
        MergeKind::Split(SplitKind::Msetex) => merge::all_one(&replies),
        MergeKind::Split(SplitKind::Sum) | MergeKind::Fanout(Fanout::Sum) => merge::sum(&replies),
        MergeKind::Fanout(Fanout::Concat) => merge::concat(&replies),
        MergeKind::Fanout(Fanout::First) => replies
            .first()
            .map(|r| (*r).clone())
            .unwrap_or_else(no_cluster),
        MergeKind::Fanout(Fanout::AllTrue) => merge::all_true(&replies, &[]),
        MergeKind::ScriptExists(known) => merge::all_true(&replies, known),
        MergeKind::Fanout(Fanout::Newest(count)) => merge::newest(&replies, *count),
        MergeKind::Fanout(Fanout::Info) => info::merge(&replies, &local::proxy_facts(ctx), proto),
        MergeKind::Fanout(Fanout::Union) => merge::union(&replies),
        MergeKind::Fanout(Fanout::SumPairs) => merge::sum_pairs(&replies),
        MergeKind::Fanout(Fanout::Min) => merge::min(&replies),
        MergeKind::Fanout(Fanout::MinEach) => merge::min_each(&replies),
        MergeKind::Fanout(Fanout::LatencyLatest) => introspection::latency_latest(&replies),
        MergeKind::Fanout(Fanout::LatencyHistory) => introspection::latency_history(&replies),
        MergeKind::Fanout(Fanout::LatencyHistogram) => {
            introspection::latency_histogram(&replies, proto)
        }
        MergeKind::Fanout(Fanout::MemoryStats) => introspection::memory_stats(&replies, proto),
        MergeKind::Fanout(Fanout::FunctionStats) => introspection::function_stats(&replies),
        MergeKind::Fanout(Fanout::Kill) => merge::kill(&replies),
        MergeKind::Fanout(Fanout::Digest) => merge::digest(&replies),
        MergeKind::Fanout(Fanout::Doctor) => {
            let reports: Vec<(&str, &Bytes)> = multi
                .parts
                .iter()
                .filter_map(|p| Some((p.sent.node.as_deref().unwrap_or("?"), p.reply.as_ref()?)))
                .collect();
            introspection::doctor(&reports, proto)
        }
        MergeKind::Split(SplitKind::Sets(op)) => merge::set_op(*op, &replies),
        MergeKind::Split(SplitKind::PfCount) => merge::pfcount(&replies),
        MergeKind::Split(SplitKind::ZInterCard(limit)) => merge::zintercard(*limit, &replies),
        MergeKind::Split(SplitKind::Lcs(options)) => merge::lcs(*options, &replies, proto),
        // Handled by `second_step` before a merge.
        MergeKind::Split(
            SplitKind::PfMerge
            | SplitKind::Bitop(_)
            | SplitKind::ZStore(_)
            | SplitKind::SStore(_)
            | SplitKind::ZRangeStore
            | SplitKind::GeoStore
            | SplitKind::ZRead(_),
        )
        | MergeKind::Write { .. } => {
            reply::error("ERR slotbridge: a two-step command merged out of order")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(data: &'static [u8], status: ReplyStatus) -> Reply {
        Reply {
            seq: 1,
            part: 0,
            data: Bytes::from_static(data),
            status,
            ends: Vec::new(),
        }
    }

    #[test]
    fn group_replies_go_to_their_commands_in_order() {
        let answered = reply(b"+OK\r\n$1\r\na\r\n:5\r\n", ReplyStatus::Answered);
        let got: Vec<(Vec<u8>, ReplyStatus)> = group_frames(&answered, 3)
            .into_iter()
            .map(|(d, s)| (d.to_vec(), s))
            .collect();
        let ok = ReplyStatus::Answered;
        assert_eq!(
            got,
            vec![
                (b"+OK\r\n".to_vec(), ok),
                (b"$1\r\na\r\n".to_vec(), ok),
                (b":5\r\n".to_vec(), ok)
            ]
        );
        // The connection failed after two replies: those stay answered.
        let lost = reply(b"+OK\r\n:1\r\n-ERR gone\r\n", ReplyStatus::Lost);
        let got: Vec<(Vec<u8>, ReplyStatus)> = group_frames(&lost, 4)
            .into_iter()
            .map(|(d, s)| (d.to_vec(), s))
            .collect();
        let gone = (b"-ERR gone\r\n".to_vec(), ReplyStatus::Lost);
        assert_eq!(
            got,
            vec![
                (b"+OK\r\n".to_vec(), ok),
                (b":1\r\n".to_vec(), ok),
                gone.clone(),
                gone.clone()
            ]
        );
        // Never sent: the same error for all.
        let unsent = reply(b"-ERR down\r\n", ReplyStatus::NotSent);
        assert!(group_frames(&unsent, 2)
            .iter()
            .all(|(d, s)| &d[..] == b"-ERR down\r\n" && *s == ReplyStatus::NotSent));
        // A short answer cannot hang the commands left without one.
        let short = reply(b"+OK\r\n", ReplyStatus::Answered);
        let got = group_frames(&short, 2);
        assert_eq!(got[1].1, ReplyStatus::Final);
    }
}
