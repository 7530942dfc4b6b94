//! `LMOVE`, `RPOPLPUSH`, `BLMOVE`, `BRPOPLPUSH` and `SMOVE` between keys
//! in different slots, carried out by the proxy in steps so that the
//! element is never lost.
//!
//! 1. On the source's master the element moves, atomically, into a
//!    temporary key of the source's slot
//!    (`{tag}slotbridge:move:<pid>:<random>:<n>`): `LMOVE src temp ...`
//!    (`BLMOVE` on a private connection for the blocking forms, so the
//!    node itself waits, with the client's timeout), or `SMOVE src temp
//!    member`. The node's reply is the client's when nothing moved (an
//!    empty source, a missing member, `WRONGTYPE`, a timeout, a bad
//!    timeout), and `SMOVE` first checks the destination's type, as Redis
//!    does before it touches the source.
//! 2. The destination's master pushes or adds the element (`LPUSH`,
//!    `RPUSH`, `SADD`). If that fails (the destination changed type in
//!    between), the element goes back where it came from and the client
//!    gets the error.
//! 3. The temporary key is deleted; the client gets the element (`LMOVE`)
//!    or `1` (`SMOVE`).
//!
//! Between steps 1 and 2 the element is in neither key; if the proxy or
//! a node fails there, it stays in the temporary key (never lost). A
//! client that leaves while a blocking move waits ends the wait (`CLIENT
//! UNBLOCK`); an element that moved in that instant still reaches the
//! destination.

use std::sync::Arc;

use bytes::Bytes;

use super::nodecall::{call_master, Wait};
use crate::backend::{reply_channel, ReplyStatus, ReplyTo};
use crate::client::registry::{BlockedOn, ClientInfo};
use crate::cluster::slot::slot;
use crate::protocol::reply::{self, Proto};
use crate::server::Context;

/// What moves.
#[derive(Debug, Clone)]
enum What {
    /// A list element from one end to an end; with the timeout of the
    /// blocking forms.
    List {
        from: &'static [u8],
        to_left: bool,
        timeout: Option<Bytes>,
    },
    /// A set member.
    Member(Bytes),
}

/// One client command moving an element to a key in another slot.
#[derive(Debug, Clone)]
pub struct ElementMove {
    what: What,
    src: Bytes,
    dst: Bytes,
}

/// `LEFT` or `RIGHT`, as Redis reads a list side.
fn side(arg: &[u8]) -> Result<&'static [u8], Bytes> {
    if arg.eq_ignore_ascii_case(b"left") {
        Ok(b"LEFT")
    } else if arg.eq_ignore_ascii_case(b"right") {
        Ok(b"RIGHT")
    } else {
        Err(reply::error("ERR syntax error"))
    }
}

impl ElementMove {
    /// The move `args` asks for (`name` from the command table): `Ok(None)`
    /// for another command, `Err` for the error Redis gives its arguments.
    pub fn new(name: &str, args: &[Bytes]) -> Result<Option<ElementMove>, Bytes> {
        let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
        let what = match (name, args.len()) {
            ("rpoplpush", 3) => What::List {
                from: b"RIGHT",
                to_left: true,
                timeout: None,
            },
            ("brpoplpush", 4) => What::List {
                from: b"RIGHT",
                to_left: true,
                timeout: Some(arg(3)),
            },
            ("lmove", 5) | ("blmove", 6) => What::List {
                from: side(&arg(3))?,
                to_left: side(&arg(4))? == b"LEFT",
                timeout: (name == "blmove").then(|| arg(5)),
            },
            ("smove", 4) => What::Member(arg(3)),
            _ => return Ok(None),
        };
        Ok(Some(ElementMove {
            what,
            src: arg(1),
            dst: arg(2),
        }))
    }

    /// Whether the node waits for the source (the blocking forms).
    pub fn blocks(&self) -> bool {
        matches!(
            self.what,
            What::List {
                timeout: Some(_),
                ..
            }
        )
    }
}

/// Runs `mv` for a client and delivers its one reply to `to` (or none,
/// when the client left).
pub fn spawn(ctx: Arc<Context>, info: Arc<ClientInfo>, proto: Proto, mv: ElementMove, to: ReplyTo) {
    tokio::spawn(async move {
        let reply = match run(&ctx, &info, proto, &mv, &to).await {
            Ok(r) | Err(r) => r,
        };
        to.send(reply, ReplyStatus::Final);
    });
}

/// The steps (see the module documentation); `Err` is a reply too.
async fn run(
    ctx: &Context,
    info: &ClientInfo,
    proto: Proto,
    mv: &ElementMove,
    to: &ReplyTo,
) -> Result<Bytes, Bytes> {
    let (src_slot, dst_slot) = (slot(&mv.src), slot(&mv.dst));
    let temp = super::moves::temp_key_for(&mv.src);
    let wrongtype =
        || reply::error("WRONGTYPE Operation against a key holding the wrong kind of value");
    // Step 1.
    let moved = match &mv.what {
        What::Member(member) => {
            // Redis checks both types before the member.
            let dst_type = call_master(
                ctx,
                proto,
                dst_slot,
                reply::command([&b"TYPE"[..], &mv.dst]),
                0,
            )
            .await?;
            if !matches!(dst_type.as_ref(), b"+set\r\n" | b"+none\r\n") {
                let src_type = call_master(
                    ctx,
                    proto,
                    src_slot,
                    reply::command([&b"TYPE"[..], &mv.src]),
                    0,
                )
                .await?;
                return Ok(if src_type.as_ref() == b"+none\r\n" {
                    reply::int(0)
                } else {
                    wrongtype()
                });
            }
            let r = call_master(
                ctx,
                proto,
                src_slot,
                reply::command([&b"SMOVE"[..], &mv.src, &temp, member]),
                0,
            )
            .await?;
            if r.as_ref() != b":1\r\n" {
                return Ok(r);
            }
            r
        }
        What::List {
            from,
            timeout: None,
            ..
        } => {
            let r = call_master(
                ctx,
                proto,
                src_slot,
                reply::command([&b"LMOVE"[..], &mv.src, &temp, from, b"RIGHT"]),
                0,
            )
            .await?;
            if !r.starts_with(b"$") || r.starts_with(b"$-1") {
                return Ok(r);
            }
            r
        }
        What::List {
            from,
            timeout: Some(t),
            ..
        } => {
            let r = wait_for_source(
                ctx,
                info,
                proto,
                src_slot,
                reply::command([&b"BLMOVE"[..], &mv.src, &temp, from, b"RIGHT", t]),
                to,
            )
            .await?;
            if !r.starts_with(b"$") || r.starts_with(b"$-1") {
                return Ok(r);
            }
            r
        }
    };
    // Step 2.
    let (add, back) = match &mv.what {
        What::Member(member) => (
            reply::command([&b"SADD"[..], &mv.dst, member]),
            reply::command([&b"SMOVE"[..], &temp, &mv.src, member]),
        ),
        What::List { from, to_left, .. } => {
            let value = crate::protocol::scan::bulk_body(&moved).unwrap_or_default();
            let push: &[u8] = if *to_left { b"LPUSH" } else { b"RPUSH" };
            (
                reply::command([push, &mv.dst, value]),
                reply::command([&b"LMOVE"[..], &temp, &mv.src, b"RIGHT", from]),
            )
        }
    };
    let added = call_master(ctx, proto, dst_slot, add, 0).await;
    let failed = match &added {
        Ok(r) if r.starts_with(b"-") => Some(r.clone()),
        Ok(_) => None,
        Err(e) => Some(e.clone()),
    };
    if let Some(error) = failed {
        // Back where it came from.
        let put_back = call_master(ctx, proto, src_slot, back, 0).await;
        if put_back.map_or(true, |r| r.starts_with(b"-")) {
            let name = String::from_utf8_lossy(&temp).into_owned();
            tracing::error!(key = %name, "a cross-slot move could not put its element back; it is kept under the temporary key");
            return Err(reply::error(&format!(
                "ERR slotbridge: the move failed and its element could not go back; it is kept in key '{name}'"
            )));
        }
        return Err(error);
    }
    // Step 3.
    if let Err(e) = call_master(
        ctx,
        proto,
        src_slot,
        reply::command([&b"DEL"[..], &temp]),
        0,
    )
    .await
    {
        tracing::warn!(error = %String::from_utf8_lossy(&e), "a cross-slot move's temporary key was not cleaned up");
    }
    Ok(match mv.what {
        What::Member(_) => reply::int(1),
        What::List { .. } => moved,
    })
}

/// The blocking form's step 1 on a private connection: the node's reply,
/// or, when the client leaves first, what the wait gave once ended.
async fn wait_for_source(
    ctx: &Context,
    info: &ClientInfo,
    proto: Proto,
    slot: u16,
    payload: Bytes,
    to: &ReplyTo,
) -> Result<Bytes, Bytes> {
    let Some(pool) = ctx.topology.load().master(slot).cloned() else {
        return Err(reply::error(&format!(
            "CLUSTERDOWN Hash slot not served (slot {slot})"
        )));
    };
    let Ok(permit) = ctx.blocking.clone().try_acquire_owned() else {
        return Err(reply::error("ERR slotbridge: too many clients hold private backend connections (blocking commands or WATCH); try again later"));
    };
    let (tx, mut rx) = reply_channel();
    let wait = Wait::start(
        ctx,
        &pool,
        proto,
        permit,
        payload,
        ReplyTo {
            tx,
            seq: 0,
            part: 0,
        },
    )
    .await;
    info.set_blocked(BlockedOn {
        addr: wait.addr.clone(),
        server_id: wait.server_id.clone(),
    });
    let reply = tokio::select! {
        r = rx.recv() => r,
        _ = to.tx.closed() => {
            wait.unblock(ctx, proto).await;
            rx.recv().await
        }
    };
    match reply {
        Some(r) if r.status == ReplyStatus::Answered => Ok(r.data),
        Some(r) => Err(r.data),
        None => Err(reply::error(
            "ERR slotbridge: the connection closed before the reply",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Option<ElementMove>, Bytes> {
        let args: Vec<Bytes> = line
            .split(' ')
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
        ElementMove::new(&name, &args)
    }

    #[test]
    fn reads_the_sides_and_timeouts() {
        let m = parse("LMOVE a b left RIGHT").unwrap().unwrap();
        assert!(matches!(
            m.what,
            What::List {
                from: b"LEFT",
                to_left: false,
                timeout: None
            }
        ));
        assert!(!m.blocks());
        let m = parse("BRPOPLPUSH a b 5").unwrap().unwrap();
        assert!(m.blocks());
        assert!(matches!(
            m.what,
            What::List {
                from: b"RIGHT",
                to_left: true,
                ..
            }
        ));
        let m = parse("SMOVE a b m").unwrap().unwrap();
        assert!(matches!(m.what, What::Member(_)));
        assert_eq!(
            parse("BLMOVE a b up LEFT 0").unwrap_err(),
            reply::error("ERR syntax error")
        );
        assert!(parse("GET a").unwrap().is_none());
    }
}
