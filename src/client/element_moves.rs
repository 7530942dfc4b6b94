//! `LMOVE`, `RPOPLPUSH`, `BLMOVE`, `BRPOPLPUSH` and `SMOVE` between keys
//! in different slots, carried out by the proxy in steps so that the
//! element is never lost.
//!
//! 1. On the source's master the element moves, atomically, into a
//!    temporary key of the source's slot
//!    (`{tag}slotbridge:move:<n>:<pid>:<random>`): `LMOVE src temp ...`
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

use super::nodecall::{call_master, is_lost, moving_or_failing, Wait};
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
        if let What::List {
            timeout: Some(t), ..
        } = &what
        {
            // Redis checks the timeout before it looks at a key.
            check_timeout(t)?;
        }
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

/// Redis 7.0's errors for a blocking command's timeout in seconds
/// (`getTimeoutFromObjectOrReply`). A form Rust does not read but C's
/// `strtold` may (hexadecimal) is left to the node.
fn check_timeout(arg: &[u8]) -> Result<(), Bytes> {
    let not_float = || reply::error("ERR timeout is not a float or out of range");
    let text = std::str::from_utf8(arg).map_err(|_| not_float())?;
    if text.is_empty() || text.trim() != text {
        return Err(not_float());
    }
    let hex = text.trim_start_matches(['+', '-']).get(..2);
    match text.parse::<f64>() {
        Ok(t) if t.is_nan() => Err(not_float()),
        // Redis 7.0 truncates to milliseconds; past the range of a long
        // long the conversion gives its most negative value.
        Ok(t) if (t * 1000.0).trunc() < 0.0 || t * 1000.0 >= i64::MAX as f64 => {
            Err(reply::error("ERR timeout is negative"))
        }
        Ok(_) => Ok(()),
        Err(_) if hex.is_some_and(|h| h.eq_ignore_ascii_case("0x")) => Ok(()),
        Err(_) => Err(not_float()),
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
    let call = |slot: u16, args: &[&[u8]]| call_master(ctx, proto, slot, reply::command(args), 0);
    // Redis checks the destination's type before it touches the source
    // (a source that then empties would lose its TTL to a put-back).
    let wanted: &[u8] = match mv.what {
        What::Member(_) => b"+set\r\n",
        What::List { .. } => b"+list\r\n",
    };
    let dst_type = call(dst_slot, &[b"TYPE", &mv.dst]).await?;
    if dst_type.as_ref() != wanted && dst_type.as_ref() != b"+none\r\n" {
        let src_type = call(src_slot, &[b"TYPE", &mv.src]).await?;
        let nothing = match mv.what {
            What::Member(_) => reply::int(0),
            What::List { .. } => null(proto),
        };
        if src_type.as_ref() == b"+none\r\n" && !mv.blocks() {
            return Ok(nothing);
        }
        if src_type.as_ref() != b"+none\r\n" {
            return Err(reply::error(
                "WRONGTYPE Operation against a key holding the wrong kind of value",
            ));
        }
        // A blocking move on a missing source waits, as Redis does.
    }
    // Step 1: into the temporary key. A lost reply may hide a move that
    // happened: the temporary key tells.
    let step1 = match &mv.what {
        What::Member(member) => call(src_slot, &[b"SMOVE", &mv.src, &temp, member]).await,
        What::List {
            from,
            timeout: None,
            ..
        } => call(src_slot, &[b"LMOVE", &mv.src, &temp, from, b"RIGHT"]).await,
        What::List {
            from,
            timeout: Some(t),
            ..
        } => {
            let args: [&[u8]; 6] = [b"BLMOVE", &mv.src, &temp, from, b"RIGHT", t];
            wait_for_source(ctx, info, proto, src_slot, &args, t, &temp, to).await
        }
    };
    let moved = match step1 {
        Err(e) if is_lost(&e) => match in_temp(ctx, proto, src_slot, &temp, mv).await {
            Some(frame) => frame,
            None => return Err(e),
        },
        Err(e) => return Err(e),
        Ok(r) => {
            let moved = match mv.what {
                What::Member(_) => r.as_ref() == b":1\r\n",
                What::List { .. } => r.starts_with(b"$") && !r.starts_with(b"$-1"),
            };
            if !moved {
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
    let kept = || {
        let name = String::from_utf8_lossy(&temp).into_owned();
        tracing::error!(key = %name, "a cross-slot move could not finish; its element is kept under the temporary key");
        reply::error(&format!(
            "ERR slotbridge: the move could not finish (a node did not answer); its element is kept in key '{name}'"
        ))
    };
    match call_master(ctx, proto, dst_slot, add, 0).await {
        // It may or may not have been added: the element stays where an
        // operator finds it, rather than in two places.
        Err(e) if is_lost(&e) => return Err(kept()),
        Ok(r) if !r.starts_with(b"-") => {}
        failed => {
            let error = failed.unwrap_or_else(|e| e);
            // Back where it came from.
            let put_back = call_master(ctx, proto, src_slot, back, 0).await;
            if put_back.map_or(true, |r| r.starts_with(b"-")) {
                return Err(kept());
            }
            return Err(error);
        }
    }
    // Step 3.
    if let Err(e) = call(src_slot, &[b"DEL", &temp]).await {
        tracing::warn!(error = %String::from_utf8_lossy(&e), "a cross-slot move's temporary key was not cleaned up");
    }
    Ok(match mv.what {
        What::Member(_) => reply::int(1),
        What::List { .. } => moved,
    })
}

/// A null reply in the client's protocol.
fn null(proto: Proto) -> Bytes {
    Bytes::from_static(if proto == Proto::Resp3 {
        b"_\r\n"
    } else {
        b"$-1\r\n"
    })
}

/// After a lost step 1: what the temporary key holds (the step's reply
/// as if it had come), or `None` when nothing moved.
async fn in_temp(
    ctx: &Context,
    proto: Proto,
    slot: u16,
    temp: &[u8],
    mv: &ElementMove,
) -> Option<Bytes> {
    let args: Vec<&[u8]> = match &mv.what {
        What::Member(member) => vec![b"SISMEMBER", temp, member],
        What::List { .. } => vec![b"LINDEX", temp, b"0"],
    };
    let r = call_master(ctx, proto, slot, reply::command(args), 0)
        .await
        .ok()?;
    match mv.what {
        What::Member(_) => (r.as_ref() == b":1\r\n").then(|| reply::int(1)),
        What::List { .. } => (r.starts_with(b"$") && !r.starts_with(b"$-1")).then_some(r),
    }
}

/// The blocking form's step 1 on a private connection: the node's reply.
/// A wait that meets a moved slot or a failing node waits again, with
/// what is left of the timeout; when the client leaves, the wait is ended
/// (what it moved meanwhile still goes on to the destination).
#[allow(clippy::too_many_arguments)]
async fn wait_for_source(
    ctx: &Context,
    info: &ClientInfo,
    proto: Proto,
    slot: u16,
    args: &[&[u8]; 6],
    timeout: &[u8],
    temp: &[u8],
    to: &ReplyTo,
) -> Result<Bytes, Bytes> {
    let started = tokio::time::Instant::now();
    let total = super::multipop::parse_timeout(timeout);
    loop {
        let left: Vec<u8> = match total {
            None => timeout.to_vec(),
            Some(0.0) => b"0".to_vec(),
            Some(t) => {
                let left = t - started.elapsed().as_secs_f64();
                if left <= 0.0 {
                    return Ok(Bytes::from_static(if proto == Proto::Resp3 {
                        b"_\r\n"
                    } else {
                        b"*-1\r\n"
                    }));
                }
                format!("{:.3}", left.max(0.001)).into_bytes()
            }
        };
        let payload = reply::command([args[0], args[1], args[2], args[3], args[4], &left[..]]);
        let Some(pool) = ctx.topology.load().master(slot).cloned() else {
            ctx.topology.request_refresh();
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => continue,
                _ = to.tx.closed() => return Err(reply::error("ERR slotbridge: client gone")),
            }
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
        info.forget_blocked(&wait.server_id);
        let Some(r) = reply else {
            return Err(reply::error(
                "ERR slotbridge: the connection closed before the reply",
            ));
        };
        let lost = matches!(r.status, ReplyStatus::Lost | ReplyStatus::NotSent);
        if lost {
            // It may have moved the element before its connection failed.
            let check = reply::command([&b"LINDEX"[..], temp, b"0"]);
            if let Ok(v) = call_master(ctx, proto, slot, check, 0).await {
                if v.starts_with(b"$") && !v.starts_with(b"$-1") {
                    return Ok(v);
                }
            }
        }
        if lost || moving_or_failing(&r.data) {
            ctx.topology.request_refresh();
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => continue,
                _ = to.tx.closed() => return Err(reply::error("ERR slotbridge: client gone")),
            }
        }
        return Ok(r.data);
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
    fn checks_timeouts_as_redis_before_any_key() {
        let err = |args: &[&str]| {
            let args: Vec<Bytes> = args.iter().map(|a| Bytes::from(a.to_string())).collect();
            ElementMove::new(&String::from_utf8_lossy(&args[0]).to_lowercase(), &args).err()
        };
        let msg = |e: &str| Some(reply::error(e));
        assert_eq!(
            err(&["BLMOVE", "a", "b", "LEFT", "LEFT", "x"]),
            msg("ERR timeout is not a float or out of range")
        );
        assert_eq!(
            err(&["BRPOPLPUSH", "a", "b", "-1"]),
            msg("ERR timeout is negative")
        );
        assert_eq!(
            err(&["BRPOPLPUSH", "a", "b", "inf"]),
            msg("ERR timeout is negative")
        );
        assert_eq!(err(&["BRPOPLPUSH", "a", "b", "-0.0001"]), None);
        assert_eq!(err(&["BRPOPLPUSH", "a", "b", "1.5"]), None);
        // The sides first, as Redis.
        assert_eq!(
            err(&["BLMOVE", "a", "b", "UP", "LEFT", "x"]),
            msg("ERR syntax error")
        );
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
