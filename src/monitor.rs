//! `MONITOR`: every command the proxy's clients send, streamed to the
//! clients that asked, in Redis's own line format.
//!
//! Sessions publish a line per command only while a monitor is connected
//! (one relaxed load otherwise). Lines travel on a bounded broadcast
//! channel; a monitor that falls behind it is disconnected, as Redis
//! disconnects one that reaches its output-buffer limit.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::command::keys::Args;
use crate::command::route::CommandView;

/// Lines a monitor may fall behind by before it is disconnected.
pub const MONITOR_BACKLOG: usize = 16 * 1024;

/// The monitors of one proxy.
#[derive(Debug)]
pub struct Monitors {
    count: Arc<AtomicUsize>,
    lines: broadcast::Sender<Bytes>,
}

impl Default for Monitors {
    fn default() -> Self {
        Monitors {
            count: Arc::new(AtomicUsize::new(0)),
            lines: broadcast::channel(MONITOR_BACKLOG).0,
        }
    }
}

/// One monitor's subscription; the monitor count drops with it.
#[derive(Debug)]
pub struct Watching {
    /// The lines.
    pub lines: broadcast::Receiver<Bytes>,
    count: Arc<AtomicUsize>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Monitors {
    /// Whether any client is monitoring.
    pub fn active(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    /// Starts watching.
    pub fn watch(&self) -> Watching {
        self.count.fetch_add(1, Ordering::Relaxed);
        Watching {
            lines: self.lines.subscribe(),
            count: self.count.clone(),
        }
    }

    /// Publishes one command of the client at `peer`, as Redis 7.0 shows
    /// it: administrative commands (`CONFIG`, `ACL SETUSER`, ...) are not
    /// shown, and passwords are `(redacted)`.
    pub fn publish(&self, peer: &SocketAddr, cmd: &CommandView<'_>) {
        if let Some(line) = self.line(peer, cmd) {
            self.send(line);
        }
    }

    /// The line [`Monitors::publish`] would send now (`None`: not shown):
    /// Redis shows what it runs, so not unknown commands, wrong arities or
    /// administrative commands.
    pub fn line(&self, peer: &SocketAddr, cmd: &CommandView<'_>) -> Option<Bytes> {
        // Not an unknown subcommand either (CLIENT SETINFO to a 7.0 table).
        let shown = crate::command::runnable(cmd)
            .is_some_and(|spec| spec.flags & crate::command::spec::flags::ADMIN == 0);
        shown.then(|| Bytes::from(line(now_micros(), peer, cmd)))
    }

    /// Sends a line made by [`Monitors::line`].
    pub fn send(&self, line: Bytes) {
        let _ = self.lines.send(line);
    }

    /// Sends a line made by [`Monitors::line`] earlier with the time of
    /// now (Redis shows `EXEC` after the commands it ran, stamped after
    /// them).
    pub fn send_now(&self, line: &[u8]) {
        let rest = line
            .iter()
            .position(|&b| b == b' ')
            .map_or(&line[..0], |i| &line[i..]);
        let micros = now_micros();
        let mut out = format!("+{}.{:06}", micros / 1_000_000, micros % 1_000_000).into_bytes();
        out.extend_from_slice(rest);
        self.send(Bytes::from(out));
    }
}

/// Whether Redis 7.0 redacts argument `i` of `cmd` (a password or a
/// user name given with one): `AUTH`'s arguments, `HELLO ... AUTH user
/// pass`, `MIGRATE ... AUTH pass` and `AUTH2 user pass`.
fn redacted(cmd: &CommandView<'_>, i: usize) -> bool {
    let name = cmd.get(0);
    let is = |j: usize, token: &[u8]| cmd.get(j).eq_ignore_ascii_case(token);
    if name.eq_ignore_ascii_case(b"auth") {
        return i >= 1;
    }
    let hello = name.eq_ignore_ascii_case(b"hello");
    if !hello && !name.eq_ignore_ascii_case(b"migrate") {
        return false;
    }
    // The options as the command reads them.
    let mut j = if hello { 2 } else { 6 };
    while j < cmd.len() && j < i {
        let secret = if is(j, b"auth") {
            if hello {
                2
            } else {
                1
            }
        } else if !hello && is(j, b"auth2") {
            2
        } else if !hello && is(j, b"keys") {
            return false;
        } else {
            j += if hello && is(j, b"setname") { 2 } else { 1 };
            continue;
        };
        if i <= j + secret {
            return true;
        }
        j += secret + 1;
    }
    false
}

/// `+<seconds>.<micros> [0 <addr>] "arg" "arg"...\r\n`, as Redis writes it.
/// Microseconds since the epoch, as Redis stamps a monitor's lines.
fn now_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

fn line(micros: u128, peer: &SocketAddr, cmd: &CommandView<'_>) -> Vec<u8> {
    let mut out = format!(
        "+{}.{:06} [0 {peer}]",
        micros / 1_000_000,
        micros % 1_000_000
    )
    .into_bytes();
    for i in 0..cmd.len() {
        out.push(b' ');
        let arg = if redacted(cmd, i) {
            &b"(redacted)"[..]
        } else {
            cmd.get(i)
        };
        repr(&mut out, arg);
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A quoted, escaped argument (Redis's `sdscatrepr`).
fn repr(out: &mut Vec<u8>, arg: &[u8]) {
    out.push(b'"');
    for &b in arg {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            7 => out.extend_from_slice(b"\\a"),
            8 => out.extend_from_slice(b"\\b"),
            0x20..=0x7e => out.push(b),
            _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view_of(parts: &[&[u8]]) -> (Vec<u8>, Vec<(usize, usize)>) {
        let mut raw = Vec::new();
        let mut args = Vec::new();
        for p in parts {
            let s = raw.len();
            raw.extend_from_slice(p);
            args.push((s, raw.len()));
        }
        (raw, args)
    }

    #[test]
    fn lines_look_like_redis() {
        let (raw, args) = view_of(&[b"SET", b"k\"ey", b"a\r\n\x01\xff\\ b"]);
        let cmd = CommandView {
            raw: &raw,
            args: &args,
        };
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let got = line(1_339_518_083_107_412, &peer, &cmd);
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "+1339518083.107412 [0 127.0.0.1:5000] \"SET\" \"k\\\"ey\" \"a\\r\\n\\x01\\xff\\\\ b\"\r\n"
        );
        assert_eq!(line(5, &peer, &cmd)[..10], b"+0.000005 "[..]);
    }

    #[test]
    fn passwords_are_redacted_as_redis_7_0_does() {
        let shown = |parts: &[&[u8]]| {
            let (raw, args) = view_of(parts);
            let cmd = CommandView {
                raw: &raw,
                args: &args,
            };
            let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
            let line = String::from_utf8(line(0, &peer, &cmd)).unwrap();
            line.split_once("] ").unwrap().1.trim_end().to_string()
        };
        assert_eq!(
            shown(&[b"AUTH", b"u", b"p"]),
            "\"AUTH\" \"(redacted)\" \"(redacted)\""
        );
        assert_eq!(
            shown(&[b"HELLO", b"3", b"AUTH", b"auth", b"p", b"SETNAME", b"n"]),
            "\"HELLO\" \"3\" \"AUTH\" \"(redacted)\" \"(redacted)\" \"SETNAME\" \"n\""
        );
        assert_eq!(shown(&[b"HELLO", b"2"]), "\"HELLO\" \"2\"");
        assert_eq!(
            shown(&[b"MIGRATE", b"h", b"1", b"", b"0", b"5", b"AUTH2", b"u", b"p", b"KEYS", b"k"]),
            "\"MIGRATE\" \"h\" \"1\" \"\" \"0\" \"5\" \"AUTH2\" \"(redacted)\" \"(redacted)\" \"KEYS\" \"k\""
        );
        assert_eq!(
            shown(&[b"MIGRATE", b"h", b"1", b"k", b"0", b"5", b"COPY", b"AUTH", b"p"]),
            "\"MIGRATE\" \"h\" \"1\" \"k\" \"0\" \"5\" \"COPY\" \"AUTH\" \"(redacted)\""
        );
    }

    #[test]
    fn counts_monitors_and_hides_admin_commands() {
        let m = Monitors::default();
        assert!(!m.active());
        let mut w = m.watch();
        assert!(m.active());
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let (raw, args) = view_of(&[b"CONFIG", b"SET", b"requirepass", b"secret"]);
        m.publish(
            &peer,
            &CommandView {
                raw: &raw,
                args: &args,
            },
        );
        let (raw, args) = view_of(&[b"PING"]);
        m.publish(
            &peer,
            &CommandView {
                raw: &raw,
                args: &args,
            },
        );
        let got = w.lines.try_recv().unwrap();
        assert!(got.ends_with(b"[0 127.0.0.1:5000] \"PING\"\r\n"));
        assert!(w.lines.try_recv().is_err());
        drop(w);
        assert!(!m.active());
    }
}
