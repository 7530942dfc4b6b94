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

use crate::protocol::reply::put_bulk;
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

/// Rewrites one master's `SCAN` reply into the client's reply: the
/// master's cursor becomes the proxy cursor; after the last master, `0`.
pub fn rewrite_scan_reply(frame: &Bytes, node: usize, nodes: usize) -> Option<Bytes> {
    let parts = children(frame)?;
    let (&(cs, ce), &(ks, ke)) = (parts.first()?, parts.get(1)?);
    let cursor_frame = &frame[cs..ce];
    let digits = cursor_frame
        .split(|&b| b == b'\n')
        .nth(1)?
        .strip_suffix(b"\r")?;
    let node_cursor: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let next = if node_cursor != 0 {
        encode_cursor(node, node_cursor)?
    } else if node + 1 < nodes {
        encode_cursor(node + 1, 0)?
    } else {
        0
    };
    let mut out = BytesMut::with_capacity(frame.len() + 24);
    out.put_slice(b"*2\r\n");
    put_bulk(&mut out, next.to_string().as_bytes());
    out.put_slice(&frame[ks..ke]);
    Some(out.freeze())
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
}
