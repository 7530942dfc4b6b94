//! The connections the proxy keeps to one node.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use super::conn::{BackendConn, ConnOptions};
use crate::protocol::Proto;

/// Shared, pipelined connections to one node: a few for RESP2 clients and,
/// created on first use, a few for RESP3 clients (replies are forwarded
/// without re-encoding, so each client protocol has its own connections).
#[derive(Debug)]
pub struct NodePool {
    addr: Arc<str>,
    opts: Arc<ConnOptions>,
    size: usize,
    readonly: bool,
    resp2: OnceLock<Box<[BackendConn]>>,
    resp3: OnceLock<Box<[BackendConn]>>,
    next: AtomicUsize,
}

impl NodePool {
    /// A pool of `size` connections per protocol to `addr`; nothing connects
    /// until the first request.
    pub fn new(addr: Arc<str>, opts: Arc<ConnOptions>, size: usize, readonly: bool) -> Self {
        NodePool {
            addr,
            opts,
            size: size.max(1),
            readonly,
            resp2: OnceLock::new(),
            resp3: OnceLock::new(),
            next: AtomicUsize::new(0),
        }
    }

    /// The node's `host:port`.
    pub fn addr(&self) -> &Arc<str> {
        &self.addr
    }

    /// A connection for clients speaking `proto` (round-robin).
    pub fn conn(&self, proto: Proto) -> &BackendConn {
        let set = match proto {
            Proto::Resp2 => &self.resp2,
            Proto::Resp3 => &self.resp3,
        };
        let conns = set.get_or_init(|| {
            (0..self.size)
                .map(|_| {
                    BackendConn::spawn(self.addr.clone(), self.opts.clone(), proto, self.readonly)
                })
                .collect()
        });
        if conns.len() == 1 {
            return &conns[0];
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % conns.len();
        &conns[i]
    }
}
