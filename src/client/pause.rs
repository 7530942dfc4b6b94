//! `CLIENT PAUSE` and `CLIENT UNPAUSE`, served by the proxy for its own
//! clients.
//!
//! Pausing the nodes instead would hold the proxy's shared connections at
//! the first paused command, and with it every other client's commands
//! queued behind it. So the proxy holds its clients' commands itself, as
//! Redis 7.0 holds a paused server's: in `ALL` mode every command, in
//! `WRITE` mode those that may write or replicate (the command table's
//! `write` and `may_replicate` flags; an `EXEC` whose transaction holds
//! one; a script unless its shebang says `no-writes`). A held command
//! waits, with the client's later commands behind it, until the pause
//! ends by its timeout or by `CLIENT UNPAUSE` (which in `ALL` mode is held
//! too, as in Redis). A second pause keeps the later end and the stricter
//! mode. The nodes themselves are not paused: keys still expire there,
//! and clients of other proxies or of the nodes directly are not held.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::command::keys::Args;
use crate::command::spec::{flags, CommandSpec};
use crate::scripts::ScriptCache;

/// What a pause holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PauseMode {
    /// Commands that may write or replicate.
    Write,
    /// Every command.
    All,
}

/// The proxy-wide pause state, shared by every session.
#[derive(Debug)]
pub struct ClientPause {
    /// Set while a pause may be in force: the one load the request path
    /// pays when nothing is paused.
    maybe: AtomicBool,
    /// The pause in force (its end and mode); every change is announced
    /// to the sessions waiting in [`ClientPause::ended`].
    state: watch::Sender<Option<(Instant, PauseMode)>>,
}

impl Default for ClientPause {
    fn default() -> Self {
        ClientPause {
            maybe: AtomicBool::new(false),
            state: watch::Sender::new(None),
        }
    }
}

impl ClientPause {
    /// `CLIENT PAUSE`: pauses until `until`, keeping a later end or a
    /// stricter mode already in force (as Redis's `pauseClients`).
    pub fn pause(&self, until: Instant, mode: PauseMode) {
        self.state.send_modify(|state| {
            let now = Instant::now();
            *state = match *state {
                Some((end, old)) if end > now => Some((end.max(until), old.max(mode))),
                _ => Some((until, mode)),
            };
            self.maybe.store(true, Ordering::SeqCst);
        });
    }

    /// `CLIENT UNPAUSE`: ends the pause at once.
    pub fn unpause(&self) {
        self.state.send_modify(|state| {
            *state = None;
            self.maybe.store(false, Ordering::SeqCst);
        });
    }

    /// Whether a pause may be in force (one relaxed load): the request
    /// path asks [`ClientPause::holds`] only then.
    #[inline]
    pub fn maybe(&self) -> bool {
        self.maybe.load(Ordering::Relaxed)
    }

    /// The pause in force, if any: its mode and the time left (`INFO
    /// clients`' `paused_actions` and `paused_timeout_milliseconds`).
    pub fn in_force(&self) -> Option<(PauseMode, std::time::Duration)> {
        if !self.maybe() {
            return None;
        }
        let state = *self.state.borrow();
        let now = Instant::now();
        match state {
            Some((end, mode)) if end > now => Some((mode, end - now)),
            _ => None,
        }
    }

    /// Whether a command must wait now: `writes` tells whether it may
    /// write or replicate. One relaxed load when nothing is paused.
    pub fn holds(&self, writes: bool) -> bool {
        if !self.maybe.load(Ordering::Relaxed) {
            return false;
        }
        let state = *self.state.borrow();
        match state {
            Some((end, mode)) if end > Instant::now() => mode == PauseMode::All || writes,
            _ => {
                // Over (or never held anyone): back to the one load.
                self.clear_expired();
                false
            }
        }
    }

    /// Ready once the pause in force has ended (by its timeout or by
    /// `CLIENT UNPAUSE`). Reads the state after subscribing, so an unpause
    /// that came after [`ClientPause::holds`] is never missed.
    pub async fn ended(&self) {
        let mut rx = self.state.subscribe();
        loop {
            // Copied out: the borrow holds the lock `clear_expired` takes.
            let state = *rx.borrow_and_update();
            let end = match state {
                Some((end, _)) if end > Instant::now() => end,
                _ => {
                    self.clear_expired();
                    return;
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(end) => {}
                changed = rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Drops a pause whose time is up, so the request path goes back to
    /// its one load.
    fn clear_expired(&self) {
        if !self.maybe.load(Ordering::Relaxed) {
            return;
        }
        self.state.send_if_modified(|state| match *state {
            Some((end, _)) if end <= Instant::now() => {
                *state = None;
                self.maybe.store(false, Ordering::SeqCst);
                true
            }
            None => {
                self.maybe.store(false, Ordering::SeqCst);
                false
            }
            _ => false,
        });
    }
}

/// Whether `WRITE` mode holds the command: it may write or replicate, as
/// Redis 7.0's `write` and `may_replicate` flags say (`COMMAND` hides the
/// second: `EVAL`, `EVALSHA`, `FCALL`, `PFCOUNT`, `PUBLISH`, `SPUBLISH`;
/// Redis 7.0.15 answers `SCRIPT LOAD` and `SCRIPT FLUSH` at once). A
/// script whose shebang declares `no-writes` is not held (for `EVALSHA`,
/// when `scripts` is given and knows its body; without it, held).
/// `EXEC` depends on its transaction, which the session knows.
pub fn may_write<A: Args + ?Sized>(
    spec: &CommandSpec,
    args: &A,
    scripts: Option<&ScriptCache>,
) -> bool {
    match spec.name {
        "eval" => !declares_no_writes(args.get(1)),
        "evalsha" => scripts
            .and_then(|s| s.get(args.get(1)))
            .is_none_or(|body| !declares_no_writes(&body)),
        "fcall" | "pfcount" | "publish" | "spublish" => true,
        _ => spec.flags & flags::WRITE != 0,
    }
}

/// Whether a script body starts with a shebang whose `flags=` include
/// `no-writes` (`#!lua flags=no-writes,allow-stale`).
fn declares_no_writes(body: &[u8]) -> bool {
    let Some(rest) = body.strip_prefix(b"#!") else {
        return false;
    };
    let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    line.split(|&b| b == b' ')
        .filter_map(|word| word.strip_prefix(b"flags="))
        .any(|list| list.split(|&b| b == b',').any(|f| f == b"no-writes"))
}

/// Parses `CLIENT PAUSE timeout [WRITE|ALL]`'s arguments (after `PAUSE`)
/// into the pause's length in milliseconds and its mode, with Redis 7.0's
/// errors in its order: the mode first, then the timeout.
pub fn parse(args: &[&[u8]]) -> Result<(u64, PauseMode), &'static str> {
    let mode = match args.get(1) {
        None => PauseMode::All,
        Some(m) if m.eq_ignore_ascii_case(b"write") => PauseMode::Write,
        Some(m) if m.eq_ignore_ascii_case(b"all") => PauseMode::All,
        Some(_) => return Err("ERR CLIENT PAUSE mode must be WRITE or ALL"),
    };
    let timeout = args.first().copied().unwrap_or_default();
    let ms = crate::command::keys::parse_i64(timeout)
        .ok_or("ERR timeout is not an integer or out of range")?;
    if ms < 0 {
        return Err("ERR timeout is negative");
    }
    Ok((ms as u64, mode))
}

/// When a pause of `ms` milliseconds from now ends. Redis 7.0 adds the
/// timeout to its clock in milliseconds unchecked: past `i64::MAX` the
/// end wraps into the past and the pause holds nothing (it only makes a
/// pause in force stricter); so does the proxy's.
pub fn end_after(ms: u64) -> Instant {
    let now = Instant::now();
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if ms > (i64::MAX as u64).saturating_sub(unix_ms) {
        return now;
    }
    now.checked_add(std::time::Duration::from_millis(ms))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parse_follows_redis_order_and_errors() {
        assert_eq!(parse(&[b"10"]), Ok((10, PauseMode::All)));
        assert_eq!(parse(&[b"0", b"WRITE"]), Ok((0, PauseMode::Write)));
        assert_eq!(parse(&[b"5", b"aLl"]), Ok((5, PauseMode::All)));
        // The mode is checked before the timeout.
        assert_eq!(
            parse(&[b"x", b"read"]),
            Err("ERR CLIENT PAUSE mode must be WRITE or ALL")
        );
        for bad in [
            &b"x"[..],
            b"+1",
            b" 1",
            b"1.5",
            b"",
            b"99999999999999999999",
        ] {
            assert_eq!(
                parse(&[bad]),
                Err("ERR timeout is not an integer or out of range")
            );
        }
        assert_eq!(parse(&[b"-1"]), Err("ERR timeout is negative"));
        assert_eq!(
            parse(&[b"9223372036854775807"]),
            Ok((i64::MAX as u64, PauseMode::All))
        );
        // As Redis 7.0, whose clock overflows: nothing is held.
        assert!(end_after(i64::MAX as u64) <= Instant::now());
        assert!(end_after(60_000) > Instant::now());
    }

    #[test]
    fn write_mode_holds_writes_and_replicating_commands() {
        let scripts = ScriptCache::default();
        let held = |args: &[&[u8]]| {
            let spec = crate::command::find(args).expect("known command");
            may_write(spec, args, Some(&scripts))
        };
        assert!(held(&[b"SET", b"k", b"v"]));
        assert!(!held(&[b"GET", b"k"]));
        assert!(held(&[b"PFCOUNT", b"h"]));
        assert!(held(&[b"publish", b"c", b"m"]));
        assert!(!held(&[b"SCRIPT", b"LOAD", b"return 1"]));
        assert!(!held(&[b"SCRIPT", b"FLUSH"]));
        assert!(!held(&[b"SCRIPT", b"EXISTS", b"abc"]));
        assert!(held(&[b"EVAL", b"return 1", b"0"]));
        assert!(held(&[b"EVAL", b"#!lua\nreturn 1", b"0"]));
        assert!(!held(&[
            b"EVAL",
            b"#!lua flags=allow-stale,no-writes\nreturn 1",
            b"0"
        ]));
        assert!(!held(&[b"EVAL_RO", b"return 1", b"0"]));
        assert!(held(&[b"FCALL", b"f", b"0"]));
        assert!(!held(&[b"FCALL_RO", b"f", b"0"]));
        assert!(held(&[b"EVALSHA", b"0123", b"0"]));
        let body = bytes::Bytes::from_static(b"#!lua flags=no-writes\nreturn 1");
        scripts.remember(&body);
        let sha = crate::scripts::sha1_hex(&body);
        assert!(!held(&[b"EVALSHA", &sha[..], b"0"]));
        assert!(!held(&[b"CLIENT", b"UNPAUSE"]));
    }

    #[tokio::test]
    async fn pauses_extend_and_end() {
        let p = ClientPause::default();
        assert!(!p.holds(true));
        let now = Instant::now();
        p.pause(now + Duration::from_secs(60), PauseMode::Write);
        assert!(p.holds(true));
        assert!(!p.holds(false));
        // A shorter ALL keeps the end and takes the stricter mode.
        p.pause(now + Duration::from_millis(1), PauseMode::All);
        assert!(p.holds(false));
        let waiter = tokio::spawn({
            let p = std::sync::Arc::new(p);
            let q = p.clone();
            async move {
                tokio::task::yield_now().await;
                q.unpause();
                p.ended().await;
                p.holds(true)
            }
        });
        assert!(!waiter.await.unwrap());
    }

    #[tokio::test]
    async fn an_expired_pause_is_cleared() {
        let p = ClientPause::default();
        p.pause(Instant::now() + Duration::from_millis(20), PauseMode::All);
        assert!(p.holds(false));
        p.ended().await;
        assert!(!p.holds(false));
        assert!(!p.maybe.load(Ordering::Relaxed));
    }
}
