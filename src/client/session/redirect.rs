//! What to do with a command's reply: pass it on, or send the command again
//! (redirections, retries, reloading scripts and functions), and the
//! errors the proxy makes itself.

use super::*;

impl Core {
    /// No master is known at all: says why discovery fails.
    pub(super) fn no_cluster(&self) -> Bytes {
        match self.ctx.topology.last_error() {
            Some(e) => reply::error(&format!(
                "CLUSTERDOWN slotbridge: no cluster node is known yet; last discovery error: {e}"
            )),
            None => no_cluster(),
        }
    }

    /// No node owns `slot` (after waiting for a refresh).
    pub(super) fn slot_unserved(&self, slot: u16) -> Bytes {
        if self.ctx.topology.load().shards().is_empty() {
            return self.no_cluster();
        }
        reply::error(&format!(
            "CLUSTERDOWN Hash slot {slot} not served (slotbridge: no node owns it; the cluster may be failing over or misconfigured)"
        ))
    }
}

pub(super) fn no_cluster() -> Bytes {
    reply::error("CLUSTERDOWN slotbridge: no cluster node is known yet (check the seeds and that the cluster is reachable)")
}

pub(super) fn too_many_private() -> Bytes {
    reply::error("ERR slotbridge: too many clients hold private backend connections (blocking commands or WATCH); try again later")
}

pub(super) fn is_script_load(view: &CommandView<'_>) -> bool {
    view.len() == 3
        && view.get(0).eq_ignore_ascii_case(b"script")
        && view.get(1).eq_ignore_ascii_case(b"load")
}

/// Decides what a reply means for the command that produced it (see
/// [`crate::client::retry`] for the retry rule), including the post-processing of
/// SCAN, RANDOMKEY and EVALSHA.
pub(super) fn decide(sent: &mut Sent, r: &Reply, ctx: &Context) -> Next {
    let outcome = classify(r);
    if outcome == Outcome::Deliver {
        return post_process(sent, r, ctx);
    }
    let config = ctx.config();
    let limits = &config.limits;
    if sent.via == Via::Pinned && !matches!(outcome, Outcome::Deliver | Outcome::NoScript) {
        return Next::Done(reply::error(
            "ERR slotbridge: the slot of the watched keys moved or its node failed during the transaction; retry the transaction",
        ));
    }
    let redirect = matches!(
        outcome,
        Outcome::Moved(_) | Outcome::Ask(_) | Outcome::NoScript
    );
    if redirect && sent.attempts >= limits.max_redirects {
        let last = String::from_utf8_lossy(
            r.data
                .get(1..r.data.len().saturating_sub(2))
                .unwrap_or_default(),
        )
        .into_owned();
        return Next::Done(reply::error(&format!(
            "ERR slotbridge: gave up after {} redirections (last reply: {last})",
            sent.attempts
        )));
    }
    match outcome {
        Outcome::Deliver => post_process(sent, r, ctx),
        Outcome::Timer => Next::Resend {
            to: sent.target(),
            asking: false,
            delay: false,
        },
        Outcome::NotSent | Outcome::NotExecuted | Outcome::Lost => {
            let retry = match outcome {
                // A write that may have run is never repeated; a blocking
                // command's wait is over once its connection is gone.
                Outcome::Lost => sent.readonly && sent.via == Via::Shared,
                _ => true,
            };
            if !retry {
                return Next::Done(r.data.clone());
            }
            if sent.slot.is_none() && !sent.sticky && outcome == Outcome::NotSent {
                // Any master will do: not the one that just failed.
                sent.node = None;
                sent.post_retry_master = sent.post_retry_master.wrapping_add(1);
            }
            if sent.replica && ctx.config().read_from == ReadFrom::ReplicaPreferred {
                // The replica failed: the master answers instead.
                sent.replica = false;
            }
            if outcome != Outcome::NotExecuted || r.data.starts_with(b"-CLUSTERDOWN") {
                ctx.topology.request_refresh();
            }
            let now = std::time::Instant::now();
            let until = *sent
                .retry_until
                .get_or_insert(now + Duration::from_millis(limits.retry_deadline_ms));
            if now >= until {
                tracing::debug!(slot = ?sent.slot, "retry deadline passed; returning the last error");
                return Next::Done(r.data.clone());
            }
            tracing::trace!(slot = ?sent.slot, ?outcome, "retrying a command that did not run");
            let reason = match outcome {
                Outcome::NotSent => "not_sent",
                Outcome::Lost => "lost",
                _ => "not_executed",
            };
            metrics::counter!(m::RETRIES, "reason" => reason).increment(1);
            Next::Resend {
                to: sent.target(),
                asking: false,
                delay: true,
            }
        }
        Outcome::NoScript => {
            if let Post::EvalSha(sha) = &sent.post {
                // The node lacks a script the proxy knows (a failover, a
                // node that joined later): sent with its body, which the
                // node caches, or whose compile error is the reply.
                let Some(eval) = ctx
                    .scripts
                    .get(sha)
                    .and_then(|body| eval_instead(&sent.payload, &body))
                else {
                    return Next::Done(r.data.clone());
                };
                sent.attempts += 1;
                sent.replica = false;
                sent.payload = eval.0;
                sent.post = Post::Eval(eval.1);
                return Next::Resend {
                    to: sent.target(),
                    asking: false,
                    delay: false,
                };
            }
            let loads: Vec<Bytes> = match &sent.post {
                // The node lacks the libraries loaded before it became a
                // master (it joined later): all of those, since which one
                // holds the function is known only to the nodes. Without
                // REPLACE: a node refuses (cheaply) those it has, whatever
                // version. A node that was a master then lost them on
                // purpose (FUNCTION DELETE or FLUSH on the node): the
                // error stands.
                Post::Fcall if sent.replica => {
                    // A replica may lag behind its master's FUNCTION LOAD:
                    // the master runs it (and may reload it, once more).
                    sent.replica = false;
                    sent.attempts += 1;
                    return Next::Resend {
                        to: sent.target(),
                        asking: false,
                        delay: false,
                    };
                }
                // Keyless, after a retry on another master: which one
                // answered is not known, so nothing is loaded.
                Post::Fcall if sent.slot.is_none() && sent.node.is_none() => Vec::new(),
                Post::Fcall => current_addr(sent, sent.slot.unwrap_or(0), ctx)
                    .map(|addr| ctx.scripts.libraries_missing_on(&addr))
                    .unwrap_or_default()
                    .iter()
                    .map(|code| reply::command([&b"FUNCTION"[..], b"LOAD", code]))
                    .collect(),
                _ => Vec::new(),
            };
            if loads.is_empty() {
                return Next::Done(r.data.clone());
            }
            sent.attempts += 1;
            // Loaded on a replica they would be refused (read-only): the
            // master loads them and runs the command.
            sent.replica = false;
            let prefix = loads.iter().map(|l| l.len()).sum::<usize>();
            let mut payload = BytesMut::with_capacity(prefix + sent.payload.len());
            for load in &loads {
                payload.extend_from_slice(load);
            }
            payload.extend_from_slice(&sent.payload);
            sent.payload = payload.freeze();
            sent.skip += loads.len() as u32;
            sent.loads = Some((prefix, loads.len() as u32));
            sent.post = Post::None;
            Next::Resend {
                to: sent.target(),
                asking: false,
                delay: false,
            }
        }
        Outcome::Ask(redirect) => {
            sent.attempts += 1;
            sent.drop_loads();
            ctx.topology.stats.ask.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(m::REDIRECTIONS, "kind" => "ask").increment(1);
            let current = current_addr(sent, redirect.slot, ctx);
            Next::Resend {
                to: Target::Addr(redirect_addr(&redirect, current.as_deref())),
                asking: true,
                delay: false,
            }
        }
        Outcome::Moved(redirect) => {
            sent.attempts += 1;
            sent.drop_loads();
            // A replica that no longer serves the slot redirects to its master.
            sent.replica = false;
            ctx.topology.stats.moved.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(m::REDIRECTIONS, "kind" => "moved").increment(1);
            let current = current_addr(sent, redirect.slot, ctx);
            let addr = redirect_addr(&redirect, current.as_deref());
            ctx.topology.apply_moved(redirect.slot, &addr);
            if sent.slot.is_none() {
                sent.node = Some(Arc::from(addr.as_str()));
            }
            Next::Resend {
                to: match sent.slot {
                    Some(_) => Target::Slot(redirect.slot),
                    None => Target::Addr(addr),
                },
                asking: false,
                delay: false,
            }
        }
    }
}

/// `EVALSHA sha args...` (or `EVALSHA_RO`) as `EVAL body args...` (or
/// `EVAL_RO`), and the body; `None` for a payload of another shape.
fn eval_instead(payload: &Bytes, body: &Bytes) -> Option<(Bytes, Bytes)> {
    let args = crate::protocol::scan::children(payload)?;
    let arg = |i: usize| -> Option<&[u8]> {
        let &(s, e) = args.get(i)?;
        crate::protocol::scan::bulk_body(&payload[s..e])
    };
    let name: &[u8] = if arg(0)?.eq_ignore_ascii_case(b"evalsha_ro") {
        b"EVAL_RO"
    } else {
        b"EVAL"
    };
    let mut out = vec![name, &body[..]];
    for i in 2..args.len() {
        out.push(arg(i)?);
    }
    Some((reply::command(out), body.clone()))
}

fn current_addr(sent: &Sent, slot: u16, ctx: &Context) -> Option<String> {
    match &sent.node {
        Some(n) => Some(n.to_string()),
        None => ctx
            .topology
            .load()
            .master(slot)
            .map(|p| p.addr().to_string()),
    }
}

/// The masters' addresses: the home (see `PUBSUB_HOME_SLOT`) first,
/// then the others in map order.
pub(super) fn masters(ctx: &Context) -> Vec<Arc<str>> {
    let map = ctx.topology.load();
    let mut nodes: Vec<Arc<str>> = map
        .shards()
        .iter()
        .map(|s| s.master.addr().clone())
        .collect();
    // The home first: `INFO` takes its classic Pub/Sub counts.
    if let Some(home) = map.master(PUBSUB_HOME_SLOT) {
        if let Some(at) = nodes.iter().position(|n| n == home.addr()) {
            nodes[..=at].rotate_right(1);
        }
    }
    nodes
}

/// The masters in address order: the order `SCAN` visits them in.
pub(super) fn scan_masters(ctx: &Context) -> Vec<Arc<str>> {
    let mut nodes = masters(ctx);
    nodes.sort();
    nodes
}

/// Applies the per-command work on a reply that goes to the client.
/// A script's or function's error for a key outside the node or keys of
/// several slots (which one server never gives), with what to do about
/// it; any other reply as it is. Matched without case: Valkey 9 writes
/// "Attempted to access a non local key".
fn explain_script_slot_error(data: &Bytes) -> Bytes {
    const MARKS: [&[u8]; 3] = [
        b"attempted to access a non local key",
        b"attempted to access keys that do not hash to the same slot",
        b"attempted to access keys that don't hash to the same slot",
    ];
    let is_slot_error = data.first() == Some(&b'-')
        && data.len() < 4096
        && MARKS
            .iter()
            .any(|m| data.windows(m.len()).any(|w| w.eq_ignore_ascii_case(m)));
    if !is_slot_error {
        return data.clone();
    }
    let text = String::from_utf8_lossy(&data[1..data.len().saturating_sub(2)]);
    reply::error(&format!(
        "{text} (slotbridge: on a cluster a script may only use the keys it declares in KEYS, all in one slot; declare every key it uses, or put the keys it builds itself in one slot with a [[colocate]] rule)"
    ))
}

fn post_process(sent: &mut Sent, r: &Reply, ctx: &Context) -> Next {
    match sent.post {
        Post::Write(Some(len)) if r.data.first() != Some(&b'-') => Next::Done(reply::int(len)),
        Post::Eval(ref body) => {
            if r.data
                .starts_with(b"-ERR Error compiling script (new function): ")
            {
                ctx.scripts.forget(&crate::scripts::sha1_hex(body));
            }
            Next::Done(explain_script_slot_error(&r.data))
        }
        Post::EvalSha(_) | Post::Fcall => Next::Done(explain_script_slot_error(&r.data)),
        Post::None | Post::Write(_) => Next::Done(r.data.clone()),
        Post::Scan {
            node,
            nodes,
            want,
            ref mut carried,
        } => {
            if reply_kind(r.data[0]) == ReplyKind::Error {
                // After keys of earlier masters: return those, with a
                // cursor at this master, whose error the next call gets.
                let resumed = carried
                    .as_deref()
                    .filter(|c| !c.is_empty())
                    .and_then(|c| c.reply_resuming_at(node));
                return Next::Done(resumed.unwrap_or_else(|| r.data.clone()));
            }
            let unexpected = || reply::error("ERR slotbridge: unexpected SCAN reply from a server");
            let Some(page) = keyspace::ScanPage::parse(&r.data) else {
                return Next::Done(unexpected());
            };
            let found = carried.as_ref().map_or(0, |c| c.len()) + page.count;
            let next_node = (page.node_cursor == 0 && found < want && node + 1 < nodes)
                .then(|| scan_masters(ctx).get(node + 1).cloned())
                .flatten();
            let restarted =
                next_node.and_then(|addr| Some((addr, keyspace::restart_scan(&sent.payload)?)));
            if let Some((addr, payload)) = restarted {
                page.carry_into(carried.get_or_insert_with(Default::default));
                sent.payload = payload;
                sent.node = Some(addr.clone());
                // A new command to a new master: its own retries.
                sent.attempts = 0;
                sent.retry_until = None;
                if let Post::Scan { node, .. } = &mut sent.post {
                    *node += 1;
                }
                return Next::Resend {
                    to: Target::Addr(addr.to_string()),
                    asking: false,
                    delay: false,
                };
            }
            let empty = keyspace::Carried::default();
            let carried = carried.as_deref().unwrap_or(&empty);
            Next::Done(page.reply(node, nodes, carried).unwrap_or_else(unexpected))
        }
        Post::RandomKey {
            tried,
            nodes,
            start,
        } => {
            let nil = &r.data[..] == b"$-1\r\n" || &r.data[..] == b"_\r\n";
            if !nil || tried >= nodes {
                return Next::Done(r.data.clone());
            }
            sent.post = Post::RandomKey {
                tried: tried + 1,
                nodes,
                start,
            };
            sent.node = None;
            Next::Resend {
                to: Target::NthMaster(start + tried),
                asking: false,
                delay: false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_slot_errors_say_what_to_do() {
        let local = Bytes::from_static(b"-ERR Script attempted to access a non local key in a cluster node script: 3d48, on @user_script:1.\r\n");
        let out = explain_script_slot_error(&local);
        assert!(out.starts_with(b"-ERR Script attempted to access a non local key in a cluster node script: 3d48, on @user_script:1. (slotbridge: "));
        assert!(out.ends_with(b"[[colocate]] rule)\r\n"));
        let other = Bytes::from_static(b"-ERR Command 'mget' in script attempted to access keys that don't hash to the same slot script: 9a, on @user_script:1.\r\n");
        assert!(explain_script_slot_error(&other).ends_with(b"rule)\r\n"));
        let valkey9 = Bytes::from_static(b"-ERR Attempted to access a non local key in a cluster node script: on @user_script:1.\r\n");
        assert!(explain_script_slot_error(&valkey9).ends_with(b"rule)\r\n"));
        let fine = Bytes::from_static(b"-ERR user error\r\n");
        assert_eq!(explain_script_slot_error(&fine), fine);
        let value = Bytes::from_static(b"$4\r\nnon \r\n");
        assert_eq!(explain_script_slot_error(&value), value);
    }
}
