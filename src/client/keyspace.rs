//! Iterating the keyspace of all masters as if it were one: the `SCAN`
//! proxy cursor.
//!
//! The proxy cursor is `(node_cursor << 10) | node_index`: masters are
//! visited one after another in address order, and each node's own cursor
//! is carried in the high bits, so cursors stay plain decimal 64-bit
//! integers. The iteration ends with `0` exactly once, after the last
//! master's cursor returned to 0.
//!
//! Guarantee (documented in the README): a key that exists for the whole
//! iteration and stays on one master is returned at least once; a scan
//! always terminates, also when the topology changes meanwhile (the node
//! index only grows), though keys moved between masters during the scan may
//! be missed or repeated, as with a resize in Redis itself.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::reply::{put_array, put_bulk};
use crate::protocol::scan::children;

/// Bits of the proxy cursor that hold the master index.
const NODE_BITS: u32 = 10;
/// Most masters a scan can visit.
pub const MAX_NODES: usize = 1 << NODE_BITS;

/// Splits a proxy cursor into (master index, that master's cursor).
pub fn decode_cursor(cursor: u64) -> (usize, u64) {
    (
        (cursor & (MAX_NODES as u64 - 1)) as usize,
        cursor >> NODE_BITS,
    )
}

/// The proxy cursor for a master index and its cursor; `None` on overflow.
pub fn encode_cursor(node: usize, node_cursor: u64) -> Option<u64> {
    if node_cursor >> (64 - NODE_BITS) != 0 || node >= MAX_NODES {
        return None;
    }
    Some((node_cursor << NODE_BITS) | node as u64)
}

/// Keys of masters already visited by one client `SCAN` call (see
/// [`ScanPage`]): their frames back to back, and how many.
#[derive(Debug, Default, Clone)]
pub struct Carried {
    frames: BytesMut,
    count: usize,
}

impl Carried {
    /// How many keys are carried.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no key is carried.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The client's reply with the carried keys alone and a cursor that
    /// resumes at master `node` (`None` on overflow).
    pub fn reply_resuming_at(&self, node: usize) -> Option<Bytes> {
        Some(scan_reply(encode_cursor(node, 0)?, self, &[], 0))
    }
}

/// `*2 <cursor> <carried keys, then `count` more in `keys`>`.
fn scan_reply(cursor: u64, carried: &Carried, keys: &[u8], count: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(carried.frames.len() + keys.len() + 48);
    out.put_slice(b"*2\r\n");
    put_bulk(&mut out, cursor.to_string().as_bytes());
    put_array(&mut out, carried.count + count);
    out.put_slice(&carried.frames);
    out.put_slice(keys);
    out.freeze()
}

/// One master's `SCAN` reply, parsed.
#[derive(Debug)]
pub struct ScanPage<'a> {
    /// The master's own next cursor (0: that master is done).
    pub node_cursor: u64,
    /// The key frames, back to back.
    keys: &'a [u8],
    /// How many keys.
    pub count: usize,
}

impl<'a> ScanPage<'a> {
    /// Parses `*2 <cursor> <array of keys>`; `None` if it is not that.
    pub fn parse(frame: &'a [u8]) -> Option<Self> {
        let parts = children(frame)?;
        let (&(cs, ce), &(ks, ke)) = (parts.first()?, parts.get(1)?);
        let digits = frame[cs..ce]
            .split(|&b| b == b'\n')
            .nth(1)?
            .strip_suffix(b"\r")?;
        let node_cursor: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
        let keys = &frame[ks..ke];
        let elems = children(keys)?;
        let body = match (elems.first(), elems.last()) {
            (Some(&(first, _)), Some(&(_, last))) => &keys[first..last],
            _ => &[][..],
        };
        Some(ScanPage {
            node_cursor,
            keys: body,
            count: elems.len(),
        })
    }

    /// Adds this page's keys to those carried to the next master.
    pub fn carry_into(&self, carried: &mut Carried) {
        carried.frames.put_slice(self.keys);
        carried.count += self.count;
    }

    /// The client's reply: the carried keys then this page's, and the
    /// proxy cursor (after the last master, `0`); `None` on overflow.
    pub fn reply(&self, node: usize, nodes: usize, carried: &Carried) -> Option<Bytes> {
        let next = if self.node_cursor != 0 {
            encode_cursor(node, self.node_cursor)?
        } else if node + 1 < nodes {
            encode_cursor(node + 1, 0)?
        } else {
            0
        };
        Some(scan_reply(next, carried, self.keys, self.count))
    }
}

/// Rewrites one master's `SCAN` reply into the client's reply: the
/// master's cursor becomes the proxy cursor; after the last master, `0`.
pub fn rewrite_scan_reply(frame: &Bytes, node: usize, nodes: usize) -> Option<Bytes> {
    ScanPage::parse(frame)?.reply(node, nodes, &Carried::default())
}

/// The same `SCAN` command (as the proxy sent it) starting over at cursor
/// 0, for the next master.
pub fn restart_scan(payload: &[u8]) -> Option<Bytes> {
    let parts = children(payload)?;
    let (&(ns, ne), &(_, ce)) = (parts.first()?, parts.get(1)?);
    let mut out = BytesMut::with_capacity(payload.len());
    put_array(&mut out, parts.len());
    out.put_slice(&payload[ns..ne]);
    put_bulk(&mut out, b"0");
    out.put_slice(&payload[ce..]);
    Some(out.freeze())
}

/// The `COUNT` of a `SCAN` (default 10): how many keys one call aims at.
pub fn scan_count(args: impl Iterator<Item = impl AsRef<[u8]>>) -> usize {
    let mut args = args.skip(2);
    let mut count = 10;
    while let Some(a) = args.next() {
        if a.as_ref().eq_ignore_ascii_case(b"count") {
            if let Some(n) = args
                .next()
                .and_then(|n| std::str::from_utf8(n.as_ref()).ok()?.parse().ok())
            {
                count = n;
            }
        } else {
            args.next();
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip() {
        assert_eq!(decode_cursor(0), (0, 0));
        let c = encode_cursor(2, 12345).unwrap();
        assert_eq!(decode_cursor(c), (2, 12345));
        assert_eq!(
            encode_cursor(0, u64::MAX >> 10),
            Some((u64::MAX >> 10) << 10)
        );
        assert_eq!(encode_cursor(0, 1 << 54), None);
    }

    #[test]
    fn rewrites_replies() {
        let mid = Bytes::from_static(b"*2\r\n$2\r\n17\r\n*1\r\n$1\r\na\r\n");
        assert_eq!(
            &rewrite_scan_reply(&mid, 1, 3).unwrap()[..],
            format!("*2\r\n$5\r\n{}\r\n*1\r\n$1\r\na\r\n", (17 << 10) | 1).as_bytes()
        );
        let end = Bytes::from_static(b"*2\r\n$1\r\n0\r\n*0\r\n");
        assert_eq!(
            &rewrite_scan_reply(&end, 1, 3).unwrap()[..],
            b"*2\r\n$1\r\n2\r\n*0\r\n"
        );
        assert_eq!(
            &rewrite_scan_reply(&end, 2, 3).unwrap()[..],
            b"*2\r\n$1\r\n0\r\n*0\r\n"
        );
        assert!(rewrite_scan_reply(&Bytes::from_static(b"+OK\r\n"), 0, 1).is_none());
    }

    #[test]
    fn carries_keys_to_the_next_master() {
        let first = b"*2\r\n$1\r\n0\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n";
        let mut carried = Carried::default();
        let page = ScanPage::parse(first).unwrap();
        assert_eq!((page.node_cursor, page.count), (0, 2));
        page.carry_into(&mut carried);
        let empty = ScanPage::parse(b"*2\r\n$1\r\n0\r\n*0\r\n").unwrap();
        empty.carry_into(&mut carried);
        assert_eq!(carried.len(), 2);
        assert_eq!(
            &carried.reply_resuming_at(1).unwrap()[..],
            b"*2\r\n$1\r\n1\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n"
        );
        let last = ScanPage::parse(b"*2\r\n$2\r\n40\r\n*1\r\n$1\r\nc\r\n").unwrap();
        assert_eq!(
            &last.reply(2, 3, &carried).unwrap()[..],
            format!(
                "*2\r\n$5\r\n{}\r\n*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n",
                (40 << 10) | 2
            )
            .as_bytes()
        );
    }

    #[test]
    fn restarts_and_counts() {
        let sent = b"*6\r\n$4\r\nSCAN\r\n$3\r\n123\r\n$5\r\nMATCH\r\n$2\r\na*\r\n$5\r\nCOUNT\r\n$3\r\n100\r\n";
        assert_eq!(
            &restart_scan(sent).unwrap()[..],
            b"*6\r\n$4\r\nSCAN\r\n$1\r\n0\r\n$5\r\nMATCH\r\n$2\r\na*\r\n$5\r\nCOUNT\r\n$3\r\n100\r\n"
        );
        let args = |v: &[&str]| {
            scan_count(
                v.iter()
                    .map(|s| s.as_bytes().to_vec())
                    .collect::<Vec<_>>()
                    .into_iter(),
            )
        };
        assert_eq!(args(&["SCAN", "0"]), 10);
        assert_eq!(args(&["scan", "0", "match", "count", "count", "7"]), 7);
        assert_eq!(args(&["SCAN", "0", "COUNT", "x"]), 10);
    }
}
