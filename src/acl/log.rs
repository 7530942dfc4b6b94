//! `ACL LOG`: the proxy's record of refused commands, keys, channels and
//! logins, kept and shown as Redis 7.0 keeps and shows its own (entries
//! alike within a minute are counted in one; the newest first; at most
//! 128).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};

use super::Style;
use crate::protocol::reply::{put_array, put_bulk, put_double, put_int, put_map, Proto};

/// Entries kept (Redis's default `acllog-max-len`).
pub const MAX_ENTRIES: usize = 128;
/// Entries alike within this many milliseconds are counted in one.
const GROUPING_MS: u64 = 60_000;

/// Why an entry was logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A command the user may not run.
    Command,
    /// A key it may not access.
    Key,
    /// A channel it may not access.
    Channel,
    /// A failed `AUTH` or `HELLO ... AUTH`.
    Auth,
    /// A database it may not access (Valkey 9.1).
    Database,
}

impl Reason {
    fn name(self) -> &'static str {
        match self {
            Reason::Command => "command",
            Reason::Key => "key",
            Reason::Channel => "channel",
            Reason::Auth => "auth",
            Reason::Database => "database",
        }
    }
}

/// One entry.
#[derive(Debug, Clone)]
struct Entry {
    count: u64,
    reason: Reason,
    in_multi: bool,
    object: Vec<u8>,
    username: Vec<u8>,
    /// Milliseconds since the epoch of the last occurrence.
    at_ms: u64,
    /// Milliseconds since the epoch of the first.
    created_ms: u64,
    /// Its number since the start (Redis 7.2's `entry-id`).
    id: u64,
    /// The client's `CLIENT LIST` line at the last occurrence.
    client_info: String,
}

/// The log.
#[derive(Debug, Default)]
pub struct AclLog {
    entries: Mutex<VecDeque<Entry>>,
    next_id: std::sync::atomic::AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl AclLog {
    /// Records a refusal: `object` is the command's full name, the key,
    /// the channel, or (for a login) the command name as sent.
    pub fn add(
        &self,
        reason: Reason,
        in_multi: bool,
        object: &[u8],
        username: &[u8],
        client_info: String,
    ) {
        let at_ms = now_ms();
        let mut entries = self.lock();
        // As Redis: only the ten newest are looked at for a match.
        let found = entries.iter().take(10).position(|e| {
            e.reason == reason
                && e.in_multi == in_multi
                && e.at_ms.abs_diff(at_ms) <= GROUPING_MS
                && e.object == object
                && e.username == username
        });
        if let Some(at) = found {
            if let Some(mut entry) = entries.remove(at) {
                entry.count += 1;
                entry.at_ms = at_ms;
                entry.client_info = client_info;
                entries.push_front(entry);
            }
            return;
        }
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        entries.push_front(Entry {
            count: 1,
            reason,
            in_multi,
            object: object.to_vec(),
            username: username.to_vec(),
            at_ms,
            created_ms: at_ms,
            id,
            client_info,
        });
        entries.truncate(MAX_ENTRIES);
    }

    /// `ACL LOG RESET`.
    pub fn reset(&self) {
        self.lock().clear();
    }

    /// `ACL LOG [count]`: the newest `count` entries.
    pub fn reply(&self, count: usize, proto: Proto, style: Style) -> Bytes {
        let entries = self.lock();
        let now = now_ms();
        let shown = count.min(entries.len());
        let mut out = BytesMut::with_capacity(64 + shown * 512);
        put_array(&mut out, shown);
        for e in entries.iter().take(shown) {
            let fields = if style.newer_than_7_0() { 10 } else { 7 };
            put_map(&mut out, proto, fields);
            put_bulk(&mut out, b"count");
            put_int(&mut out, i64::try_from(e.count).unwrap_or(i64::MAX));
            put_bulk(&mut out, b"reason");
            put_bulk(&mut out, e.reason.name().as_bytes());
            put_bulk(&mut out, b"context");
            put_bulk(
                &mut out,
                if e.in_multi {
                    &b"multi"[..]
                } else {
                    b"toplevel"
                },
            );
            put_bulk(&mut out, b"object");
            put_bulk(&mut out, &e.object);
            put_bulk(&mut out, b"username");
            put_bulk(&mut out, &e.username);
            put_bulk(&mut out, b"age-seconds");
            let age = now.saturating_sub(e.at_ms) as f64 / 1000.0;
            put_double(&mut out, age, proto);
            put_bulk(&mut out, b"client-info");
            put_bulk(&mut out, e.client_info.as_bytes());
            if style.newer_than_7_0() {
                put_bulk(&mut out, b"entry-id");
                put_int(&mut out, i64::try_from(e.id).unwrap_or(i64::MAX));
                put_bulk(&mut out, b"timestamp-created");
                put_int(&mut out, i64::try_from(e.created_ms).unwrap_or(i64::MAX));
                put_bulk(&mut out, b"timestamp-last-updated");
                put_int(&mut out, i64::try_from(e.at_ms).unwrap_or(i64::MAX));
            }
        }
        out.freeze()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_alike_entries_newest_first() {
        let log = AclLog::default();
        log.add(Reason::Key, false, b"k", b"u", "a".into());
        log.add(Reason::Command, false, b"set", b"u", "b".into());
        log.add(Reason::Key, false, b"k", b"u", "c".into());
        log.add(Reason::Key, true, b"k", b"u", "d".into());
        let entries = log.lock();
        let seen: Vec<(u64, &[u8], bool)> = entries
            .iter()
            .map(|e| (e.count, e.object.as_slice(), e.in_multi))
            .collect();
        assert_eq!(
            seen,
            vec![
                (1, &b"k"[..], true),
                (2, &b"k"[..], false),
                (1, &b"set"[..], false)
            ]
        );
        drop(entries);
        for i in 0..200 {
            log.add(
                Reason::Auth,
                false,
                b"AUTH",
                format!("u{i}").as_bytes(),
                String::new(),
            );
        }
        assert_eq!(log.lock().len(), MAX_ENTRIES);
        log.reset();
        assert_eq!(&log.reply(10, Proto::Resp2, Style::Redis70)[..], b"*0\r\n");
    }
}
