//! The listener: shared proxy state, start-up and the accept loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

use crate::backend::conn::{oneshot, ConnOptions};
use crate::cluster::refresh::{self, RefreshOptions};
use crate::cluster::Topology;
use crate::config::Config;
use crate::protocol::request::RequestLimits;

/// Counters about clients.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Clients connected now.
    pub connected_clients: AtomicU64,
    /// Clients accepted since start.
    pub total_connections: AtomicU64,
    /// Commands received since start.
    pub total_commands: AtomicU64,
}

/// State shared by every client session.
#[derive(Debug)]
pub struct Context {
    /// The configuration in force.
    pub config: Config,
    /// The slot map and connection pools.
    pub topology: Arc<Topology>,
    /// Client counters.
    pub stats: ProxyStats,
    /// Process start.
    pub started: Instant,
    /// Client-facing port.
    pub port: u16,
    /// Request parsing limits.
    pub limits: RequestLimits,
    /// Bounds the private connections of blocking commands.
    pub blocking: Arc<Semaphore>,
    /// Connected clients (`CLIENT LIST`).
    pub clients: crate::client::registry::Registry,
    /// Script bodies seen, for transparent `NOSCRIPT` recovery.
    pub scripts: crate::scripts::ScriptCache,
    /// The backends' `redis_version`, learned at start-up.
    pub backend_version: OnceLock<String>,
    next_client_id: AtomicU64,
}

impl Context {
    /// A new client id (1, 2, ...).
    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The Redis version to report (the backends'), or a placeholder until known.
    pub fn redis_version(&self) -> &str {
        self.backend_version
            .get()
            .map(|s| s.as_str())
            .unwrap_or("7.0.0")
    }
}

/// Binds the listener, starts topology discovery and serves clients until
/// the process ends.
pub async fn serve(config: Config) -> Result<(), String> {
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let ctx = build_context(config, port);
    tracing::info!(listen = %ctx.config.listen, seeds = ?ctx.config.seeds, "slotbridge started");
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        tokio::spawn(async move {
            crate::client::session::run(stream, peer, ctx).await;
        });
    }
}

fn build_context(config: Config, port: u16) -> Arc<Context> {
    let refresh_signal = Arc::new(Notify::new());
    let signal = refresh_signal.clone();
    let password = config
        .backend
        .password
        .clone()
        .or_else(|| std::env::var("SLOTBRIDGE_BACKEND_PASSWORD").ok());
    let conn_opts = Arc::new(ConnOptions {
        connect_timeout: config.connect_timeout(),
        username: config.backend.username.clone(),
        password,
        queue_depth: config.backend.queue_depth,
        on_failure: Box::new(move |_addr| signal.notify_one()),
    });
    let topology = Arc::new(Topology::new(
        conn_opts.clone(),
        config.backend.connections_per_node,
        refresh_signal,
    ));
    let refresh_opts = RefreshOptions {
        seeds: config.seeds.clone(),
        period: Duration::from_millis(config.topology.refresh_interval_ms),
        min_interval: Duration::from_millis(config.topology.min_refresh_interval_ms),
    };
    tokio::spawn(refresh::run(
        topology.clone(),
        conn_opts.clone(),
        refresh_opts,
    ));
    let config_private = config.limits.max_private_connections;
    let limits = RequestLimits {
        max_bulk_len: config.limits.max_bulk_len,
        max_args: config.limits.max_args,
    };
    let ctx = Arc::new(Context {
        config,
        topology,
        stats: ProxyStats::default(),
        started: Instant::now(),
        port,
        limits,
        blocking: Arc::new(Semaphore::new(config_private)),
        scripts: Default::default(),
        clients: Default::default(),
        backend_version: OnceLock::new(),
        next_client_id: AtomicU64::new(0),
    });
    tokio::spawn(learn_from_backend(ctx.clone(), conn_opts));
    ctx
}

/// Once the map is known, learns the backends' version (for INFO/HELLO) and
/// the commands they know that the built-in table lacks (modules).
async fn learn_from_backend(ctx: Arc<Context>, opts: Arc<ConnOptions>) {
    let mut versions = ctx.topology.subscribe();
    loop {
        let addr = ctx
            .topology
            .load()
            .shards()
            .first()
            .map(|s| s.master.addr().clone());
        if let Some(addr) = addr {
            let info = oneshot(&addr, &opts, b"*2\r\n$4\r\nINFO\r\n$6\r\nSERVER\r\n").await;
            let command = oneshot(&addr, &opts, b"*1\r\n$7\r\nCOMMAND\r\n").await;
            if let (Ok(info), Ok(command)) = (info, command) {
                let text = String::from_utf8_lossy(&info);
                if let Some(v) = text
                    .split("\r\n")
                    .find_map(|l| l.strip_prefix("redis_version:"))
                {
                    let _ = ctx.backend_version.set(v.to_string());
                }
                let learned = crate::command::learn(crate::command::parse_command_reply(&command));
                tracing::info!(version = %ctx.redis_version(), learned, "learned backend version and commands");
                return;
            }
        }
        if versions.changed().await.is_err() {
            return;
        }
    }
}
