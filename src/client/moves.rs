//! `RENAME`, `RENAMENX` and `COPY` of a key to another slot, carried out
//! by the proxy in steps, as one server's reply would say.
//!
//! 1. The source's master reads it in one script: its serialized value
//!    (`DUMP`: type, encoding and contents) and its absolute expiry
//!    (`PEXPIRETIME`). For a rename the same script then renames the
//!    source to a temporary key of its slot
//!    (`{tag}slotbridge:move:<n>:<pid>:<random>`), so from that moment
//!    the source is gone, as after `RENAME` (a client writing it creates
//!    a new one), yet the value stays stored on its node. For `COPY` the
//!    script first lets the node check the options (`COPY src src
//!    options...`, refused with "source and destination objects are the
//!    same" only once they are valid), so their errors are the node's.
//!    A missing source is `ERR no such key` (`RENAME`/`RENAMENX`) or `0`.
//!    `RENAMENX` first checks that the destination does not exist.
//! 2. The destination's master restores it (`RESTORE ... ABSTTL`, with
//!    `REPLACE` for `RENAME` and `COPY ... REPLACE`). An existing
//!    destination without `REPLACE` answers `0`, and a rename's value goes
//!    back to its source.
//! 3. A rename deletes its temporary key.
//!
//! Not atomic across slots (documented): between steps 1 and 2 the value
//! is in neither key; keyspace notifications show the temporary key's
//! `rename_from`/`rename_to`/`del` and the destination's `restore`. If the
//! proxy dies or a node fails between those steps, the value is kept in
//! the temporary key (never lost), and a failed step names it. A client
//! that leaves does not stop a move that has begun, as one server
//! finishes a command it received.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::nodecall::{call_master, is_lost};
use crate::backend::{ReplyStatus, ReplyTo};
use crate::cluster::slot::slot;
use crate::protocol::reply::{self, Proto};
use crate::protocol::scan::{bulk_body, children};
use crate::server::Context;

/// Step 1's script for `COPY`: `KEYS[1]` the source; `ARGV` `COPY`'s
/// options for the node to check, or [`COPY_MARK`] for none.
const READ: &[u8] = b"#!lua\n\
    local opts = ARGV \
    if ARGV[1] == '--slotbridge-copy--' then opts = {} end \
    local r = redis.pcall('COPY', KEYS[1], KEYS[1], unpack(opts)) \
    if type(r) == 'table' and r.err and not string.find(r.err, 'source and destination objects are the same', 1, true) then return r end \
    local d = redis.call('DUMP', KEYS[1]) \
    if not d then return false end \
    return {d, redis.call('PEXPIRETIME', KEYS[1])}";

/// `COPY` without options: the read script's marker for "none".
const COPY_MARK: &[u8] = b"--slotbridge-copy--";

/// Step 1's script for the renames: `KEYS[1]` the source, `KEYS[2]` the
/// temporary key it is renamed to.
const TAKE: &[u8] = b"#!lua flags=allow-oom\n\
    local d = redis.call('DUMP', KEYS[1]) \
    if not d then return false end \
    local t = redis.call('PEXPIRETIME', KEYS[1]) \
    redis.call('RENAME', KEYS[1], KEYS[2]) \
    return {d, t}";

/// Which move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rename,
    RenameNx,
    Copy { replace: bool },
}

/// A `RENAME`, `RENAMENX` or `COPY` whose keys are in different slots.
#[derive(Debug, Clone)]
pub struct Move {
    kind: Kind,
    src: Bytes,
    dst: Bytes,
    /// `COPY`'s options, for the node to check.
    options: Vec<Bytes>,
}

impl Move {
    /// The move `args` asks for (`name` from the command table); `None`
    /// for another command.
    pub fn new(name: &str, args: &[Bytes]) -> Option<Move> {
        let (src, dst) = (args.get(1)?.clone(), args.get(2)?.clone());
        let options: Vec<Bytes> = args.get(3..).unwrap_or_default().to_vec();
        let kind = match name {
            "rename" if options.is_empty() => Kind::Rename,
            "renamenx" if options.is_empty() => Kind::RenameNx,
            "copy" => Kind::Copy {
                replace: options.iter().any(|o| o.eq_ignore_ascii_case(b"replace")),
            },
            _ => return None,
        };
        Some(Move {
            kind,
            src,
            dst,
            options,
        })
    }

    /// Step 1's request (`temp`: a rename's temporary key).
    fn read(&self, temp: &[u8]) -> Bytes {
        let mut args: Vec<&[u8]> = match self.kind {
            Kind::Copy { .. } => vec![b"EVAL", READ, b"1", &self.src],
            _ => vec![b"EVAL", TAKE, b"2", &self.src, temp],
        };
        if let Kind::Copy { .. } = self.kind {
            if self.options.is_empty() {
                args.push(COPY_MARK);
            } else {
                args.extend(self.options.iter().map(|o| &o[..]));
            }
        }
        reply::command(args)
    }

    /// Step 2's request for the value `dump` expiring at `expire_at`
    /// (Unix ms, or -1 for none).
    fn restore(&self, dump: &[u8], expire_at: &[u8]) -> Bytes {
        let ttl: &[u8] = if expire_at.starts_with(b"-") {
            b"0"
        } else {
            expire_at
        };
        let mut args: Vec<&[u8]> = vec![b"RESTORE", &self.dst, ttl, dump, b"ABSTTL"];
        let replace = match self.kind {
            Kind::Rename => true,
            Kind::RenameNx => false,
            Kind::Copy { replace } => replace,
        };
        if replace {
            args.push(b"REPLACE");
        }
        reply::command(args)
    }

    /// The reply to the client when the source is missing.
    fn missing(&self) -> Bytes {
        match self.kind {
            Kind::Copy { .. } => reply::int(0),
            _ => reply::error("ERR no such key"),
        }
    }

    /// The reply to the client once done.
    fn done(&self) -> Bytes {
        match self.kind {
            Kind::Rename => Bytes::from_static(reply::OK),
            _ => reply::int(1),
        }
    }
}

/// Runs `mv` for a client and delivers its one reply to `to`.
pub fn spawn(ctx: Arc<Context>, proto: Proto, mv: Move, to: ReplyTo) {
    tokio::spawn(async move {
        let reply = run(&ctx, proto, &mv).await.unwrap_or_else(|e| e);
        to.send(reply, ReplyStatus::Final);
    });
}

/// The steps (see the module documentation); `Err` is a reply too.
/// Whether the move takes the source away (the renames).
fn renaming_kind(kind: Kind) -> bool {
    !matches!(kind, Kind::Copy { .. })
}

/// A temporary key of `src`'s slot, new for each move.
pub fn temp_key_for(src: &[u8]) -> Vec<u8> {
    static MOVES: AtomicU64 = AtomicU64::new(0);
    let n = MOVES.fetch_add(1, Ordering::Relaxed);
    crate::cluster::slot::temp_key(src, &format!("move:{n}"))
}

async fn run(ctx: &Context, proto: Proto, mv: &Move) -> Result<Bytes, Bytes> {
    let (src_slot, dst_slot) = (slot(&mv.src), slot(&mv.dst));
    let unexpected =
        || reply::error("ERR slotbridge: unexpected reply shape from a server while moving a key");
    if mv.kind == Kind::RenameNx {
        let exists = call_master(
            ctx,
            proto,
            dst_slot,
            reply::command([&b"EXISTS"[..], &mv.dst]),
            0,
        )
        .await?;
        if exists.as_ref() != b":0\r\n" {
            // Redis checks the source first: a missing one is an error.
            let src = call_master(
                ctx,
                proto,
                src_slot,
                reply::command([&b"EXISTS"[..], &mv.src]),
                0,
            )
            .await?;
            return Ok(if src.as_ref() == b":0\r\n" {
                mv.missing()
            } else {
                reply::int(0)
            });
        }
    }
    let temp = temp_key_for(&mv.src);
    let kept = |why: &str| {
        let name = String::from_utf8_lossy(&temp).into_owned();
        tracing::error!(key = %name, why, "a cross-slot rename could not finish; its value is kept under the temporary key");
        reply::error(&format!(
            "ERR slotbridge: the rename could not finish ({why}); its value is kept in key '{name}'"
        ))
    };
    let read = match call_master(ctx, proto, src_slot, mv.read(&temp), 0).await {
        // The script may have run: the temporary key tells.
        Err(e) if renaming_kind(mv.kind) && is_lost(&e) => {
            let exists = call_master(
                ctx,
                proto,
                src_slot,
                reply::command([&b"EXISTS"[..], &temp]),
                0,
            )
            .await;
            return Err(if exists.as_deref() == Ok(b":1\r\n") {
                kept("the source's node did not answer")
            } else {
                e
            });
        }
        r => r?,
    };
    if read.starts_with(b"-") {
        return Err(read);
    }
    if read.as_ref() == b"$-1\r\n" || read.as_ref() == b"_\r\n" {
        return Ok(mv.missing());
    }
    let parts = children(&read).ok_or_else(unexpected)?;
    let [(ds, de), (es, ee)] = parts.as_slice() else {
        return Err(unexpected());
    };
    let dump = bulk_body(&read[*ds..*de]).ok_or_else(unexpected)?;
    let expire_at = read[*es..*ee]
        .strip_prefix(b":")
        .and_then(|e| e.strip_suffix(b"\r\n"))
        .ok_or_else(unexpected)?;
    let renaming = renaming_kind(mv.kind);
    let restored = call_master(ctx, proto, dst_slot, mv.restore(dump, expire_at), 0).await;
    let outcome = match restored {
        Ok(r) if r.starts_with(b"-BUSYKEY") => Ok(reply::int(0)),
        Ok(r) if r.starts_with(b"-") => Err(r),
        Ok(_) => Ok(mv.done()),
        // Lost: it ran if the destination now holds the value.
        Err(e) if is_lost(&e) => {
            let now = call_master(
                ctx,
                proto,
                dst_slot,
                reply::command([&b"DUMP"[..], &mv.dst]),
                0,
            )
            .await;
            match now {
                Ok(d) if bulk_body(&d) == Some(dump) => Ok(mv.done()),
                Ok(_) => Err(e),
                Err(_) if renaming => return Err(kept("the destination's node did not answer")),
                Err(_) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    if !renaming {
        return outcome;
    }
    // The temporary key: deleted once restored, else back to the source.
    let (cleanup, what): (Bytes, &str) = match outcome {
        Ok(ref r) if r.as_ref() != b":0\r\n" => (reply::command([&b"DEL"[..], &temp]), "delete"),
        _ => (
            reply::command([&b"RENAMENX"[..], &temp, &mv.src]),
            "put back",
        ),
    };
    let cleaned = call_master(ctx, proto, src_slot, cleanup, 0).await;
    if what == "put back" && cleaned.as_ref().map(|r| r.as_ref()) != Ok(b":1\r\n") {
        return Err(kept("it failed and the source was written meanwhile"));
    }
    if let Err(e) = cleaned {
        tracing::warn!(error = %String::from_utf8_lossy(&e), "a cross-slot rename's temporary key was not cleaned up");
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mv(line: &str) -> Option<Move> {
        let args: Vec<Bytes> = line
            .split(' ')
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        Move::new(
            &args[0]
                .to_ascii_lowercase()
                .iter()
                .map(|&b| b as char)
                .collect::<String>(),
            &args,
        )
    }

    fn text(b: &Bytes) -> String {
        String::from_utf8_lossy(b).replace("\r\n", " ")
    }

    #[test]
    fn steps_carry_the_value_and_its_expiry() {
        let m = mv("RENAME a b").unwrap();
        assert_eq!(
            text(&m.restore(b"DUMPED", b"1700000000000")),
            "*6 $7 RESTORE $1 b $13 1700000000000 $6 DUMPED $6 ABSTTL $7 REPLACE "
        );
        let m = mv("RENAMENX a b").unwrap();
        assert_eq!(
            text(&m.restore(b"D", b"-1")),
            "*5 $7 RESTORE $1 b $1 0 $1 D $6 ABSTTL "
        );
        assert!(text(&m.read(b"{a}t")).contains("$1 a $4 {a}t "));
        let m = mv("COPY a b replace").unwrap();
        assert!(text(&m.restore(b"D", b"-1")).ends_with("$7 REPLACE "));
        assert!(text(&m.read(b"")).ends_with("$1 a $7 replace "));
        let m = mv("COPY a b").unwrap();
        assert!(text(&m.read(b"")).ends_with("$19 --slotbridge-copy-- "));
        assert_eq!(&m.missing()[..], b":0\r\n");
        assert_eq!(
            &mv("RENAME a b").unwrap().missing()[..],
            b"-ERR no such key\r\n"
        );
        assert!(mv("RENAME a b c").is_none());
        assert!(mv("GET a").is_none());
    }
}
