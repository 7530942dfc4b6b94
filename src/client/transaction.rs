//! `MULTI`/`EXEC` state: commands are queued in the proxy and sent at
//! `EXEC` as one `MULTI ... EXEC` block to the master of their slot.
//!
//! Writing the whole block at once on a pipelined connection keeps it
//! atomic on the server (a connection's commands are never interleaved with
//! another connection's). `WATCH` needs connection-private state on the
//! server, so a watching client gets a pinned private connection, and its
//! `EXEC` runs there.

use bytes::{BufMut, Bytes, BytesMut};

use crate::backend::BackendConn;

/// `*1\r\n$5\r\nMULTI\r\n`
const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
/// `*1\r\n$4\r\nEXEC\r\n`
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";

/// Redis's reply to `EXEC` after a queueing error.
pub const EXECABORT: &[u8] = b"-EXECABORT Transaction discarded because of previous errors.\r\n";

/// A transaction being queued.
#[derive(Debug, Default)]
pub struct TxState {
    /// The queued commands, as the client sent them.
    pub queued: Vec<Bytes>,
    /// The slot of the keys seen so far.
    pub slot: Option<u16>,
    /// A command was refused while queueing: `EXEC` aborts.
    pub failed: bool,
}

impl TxState {
    /// The `MULTI ... EXEC` block and how many replies precede `EXEC`'s.
    pub fn block(&self) -> (Bytes, u32) {
        let size = MULTI.len() + EXEC.len() + self.queued.iter().map(|c| c.len()).sum::<usize>();
        let mut out = BytesMut::with_capacity(size);
        out.put_slice(MULTI);
        for c in &self.queued {
            out.put_slice(c);
        }
        out.put_slice(EXEC);
        (out.freeze(), self.queued.len() as u32 + 1)
    }
}

/// A private backend connection holding this client's `WATCH`es.
#[derive(Debug)]
pub struct Pinned {
    /// The connection (closed when dropped, which also drops the watches).
    pub conn: BackendConn,
    /// The slot of the watched keys.
    pub slot: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_wraps_commands() {
        let tx = TxState {
            queued: vec![Bytes::from_static(b"*2\r\n$4\r\nINCR\r\n$1\r\na\r\n")],
            slot: Some(1),
            failed: false,
        };
        let (block, skip) = tx.block();
        assert_eq!(
            &block[..],
            b"*1\r\n$5\r\nMULTI\r\n*2\r\n$4\r\nINCR\r\n$1\r\na\r\n*1\r\n$4\r\nEXEC\r\n"
        );
        assert_eq!(skip, 2);
    }
}
