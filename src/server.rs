//! The listener: shared proxy state, start-up and the accept loop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

use crate::backend::conn::{oneshot, ConnOptions};
use crate::cluster::refresh::{self, RefreshOptions};
use crate::cluster::Topology;
use crate::config::Config;

/// Counters about clients.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Clients connected now.
    pub connected_clients: AtomicU64,
    /// Clients accepted since start.
    pub total_connections: AtomicU64,
    /// Commands received since start.
    pub total_commands: AtomicU64,
    /// Commands read whose reply is not written yet.
    pub inflight: Arc<std::sync::atomic::AtomicI64>,
}

/// State shared by every client session.
#[derive(Debug)]
pub struct Context {
    /// The configuration in force (replaced on SIGHUP reload).
    config: arc_swap::ArcSwap<Config>,
    /// Bumped after every change of the configuration or of the users, so
    /// sessions can keep a snapshot and check it with one load.
    settings_version: AtomicU64,
    /// Raised when the process starts draining (SIGTERM/SIGINT); see
    /// [`Context::start_draining`].
    draining: AtomicBool,
    /// The slot map and connection pools.
    pub topology: Arc<Topology>,
    /// Client counters.
    pub stats: ProxyStats,
    /// Process start.
    pub started: Instant,
    /// Client-facing port.
    pub port: u16,
    /// Bounds the private connections of blocking commands.
    pub blocking: Arc<Semaphore>,
    /// Last health check of each master (readiness).
    pub health: crate::admin::Health,
    /// Key co-location rules (fixed at start-up).
    pub rules: crate::colocate::Rules,
    /// Connected clients (`CLIENT LIST`).
    pub clients: crate::client::registry::Registry,
    /// Script bodies seen, for transparent `NOSCRIPT` recovery.
    pub scripts: crate::scripts::ScriptCache,
    /// Clients running `MONITOR`.
    pub monitors: crate::monitor::Monitors,
    /// Keys read by `CLIENT TRACKING` clients.
    pub tracker: Arc<crate::tracking::Tracker>,
    /// Certificates in force for new connections on both sides.
    pub tls: Arc<crate::tls::TlsState>,
    /// `CLIENT PAUSE` in force for this proxy's clients.
    pub pause: crate::client::pause::ClientPause,
    /// The client users (`[auth]`, `ACL SETUSER`) and the `ACL LOG`.
    pub users: crate::acl::users::Users,
    /// `CONFIG SET` parameters, carried to masters that join later.
    pub node_settings: crate::node_settings::NodeSettings,
    /// Subscription commands not yet confirmed, which `PUBLISH` waits for.
    pub subscribing: Arc<crate::client::subscribing::Subscribing>,
    next_client_id: AtomicU64,
}

impl Context {
    /// Whether the process is draining: sessions read no new commands and
    /// close once their replies are written.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Starts draining and wakes every client's task (each registered its
    /// waker with [`ClientInfo::set_shutdown_waker`] before checking
    /// [`Context::is_draining`]).
    ///
    /// [`ClientInfo::set_shutdown_waker`]: crate::client::registry::ClientInfo::set_shutdown_waker
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.clients.wake_all();
    }

    /// The configuration in force.
    pub fn config(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }

    /// Replaces the configuration (fields that need a restart are kept).
    pub fn set_config(&self, config: Config) {
        self.config.store(Arc::new(config));
        self.settings_version.fetch_add(1, Ordering::Release);
    }

    /// Tells sessions that users changed (`ACL SETUSER`, `ACL DELUSER`):
    /// each looks its user up again at its next command.
    pub fn users_changed(&self) {
        self.settings_version.fetch_add(1, Ordering::Release);
    }

    /// The version of the settings: it changes whenever the configuration
    /// or the users do (see [`Context::config_snapshot`]).
    pub fn settings_version(&self) -> u64 {
        self.settings_version.load(Ordering::Acquire)
    }

    /// The configuration in force, to keep: pair it with the
    /// [`Context::settings_version`] read before it.
    pub fn config_snapshot(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// A new client id (1, 2, ...).
    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The Redis version to report (the nodes' `redis_version`; 7.0.0, the
    /// built-in table's, until known).
    pub fn redis_version(&self) -> String {
        crate::nodes::redis_version().unwrap_or_else(|| "7.0.0".to_string())
    }
}

/// Reads the configuration again (file plus command-line overrides).
pub type ReloadFn = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;
/// Changes the log filter.
pub type SetLogFilterFn = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the binary lets the server do to the process around it.
pub struct Hooks {
    /// Reads the configuration again (file plus command-line overrides).
    pub reload: ReloadFn,
    /// Changes the log filter.
    pub set_log_filter: SetLogFilterFn,
    /// Asks the allocator to give freed memory back to the OS; called on a
    /// runtime thread at most once a second, after client sessions parked
    /// or closed.
    pub release_memory: Arc<dyn Fn() + Send + Sync>,
}

/// Client sessions that parked or closed (freeing their active state).
pub static SESSIONS_RELEASED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Calls `release` (at most once a second) after at least 32 sessions
/// parked or closed since the last call.
async fn release_memory(release: Arc<dyn Fn() + Send + Sync>) {
    let mut seen = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A few parked sessions free little; a burst frees megabytes.
        let now = SESSIONS_RELEASED.load(Ordering::Relaxed);
        if now.wrapping_sub(seen) >= 32 {
            seen = now;
            release();
        }
    }
}

/// Binds the listener, starts topology discovery and serves clients until
/// SIGTERM or SIGINT; then stops accepting, lets connected clients finish
/// what they sent (up to the drain timeout) and returns. SIGHUP reloads
/// the configuration.
pub async fn serve(config: Config, hooks: Hooks) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let admin = match &config.admin {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on admin address {addr}: {e}"))?,
        ),
        None => None,
    };
    let signal_error = |e: std::io::Error| format!("cannot install signal handlers: {e}");
    let mut sigterm = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(signal_error)?;
    let tls = Arc::new(crate::tls::TlsState::new(&config.tls)?);
    let metrics = crate::metrics::install();
    let ctx = build_context(config, port, tls);
    tokio::spawn(crate::admin::health_checker(ctx.clone()));
    tokio::spawn(watch_tls_files(Arc::downgrade(&ctx)));
    tokio::spawn(release_memory(hooks.release_memory.clone()));
    if let Some(admin) = admin {
        tokio::spawn(crate::admin::serve(admin, ctx.clone(), metrics));
    }
    // Clients get the answers of the nodes' version from their first
    // command on: accepting waits (at most 3 s, as for nodes that do not
    // answer) until it is learned.
    let learn_by = tokio::time::Instant::now() + Duration::from_secs(3);
    while crate::nodes::redis_version().is_none() && tokio::time::Instant::now() < learn_by {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tracing::info!(listen = %ctx.config().listen, seeds = ?ctx.config().seeds, "slotbridge started");
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => accept(stream, peer, &ctx),
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => reload(&ctx, &hooks),
        }
    }
    drop(listener);
    drain(&ctx).await;
    Ok(())
}

fn accept(stream: tokio::net::TcpStream, peer: std::net::SocketAddr, ctx: &Arc<Context>) {
    let max = ctx.config().limits.max_clients;
    if ctx.stats.connected_clients.load(Ordering::Relaxed) as usize >= max {
        metrics::counter!(crate::metrics::CLIENT_CONNECTIONS_REJECTED).increment(1);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut stream = stream;
            let _ = stream
                .write_all(b"-ERR max number of clients reached\r\n")
                .await;
        });
        return;
    }
    let _ = stream.set_nodelay(true);
    use crate::client::connection::{ClientStream, Connection};
    let ctx = ctx.clone();
    match ctx.tls.acceptor() {
        None => {
            tokio::spawn(Connection::new(ClientStream::Tcp(stream), peer, ctx));
        }
        Some(acceptor) => {
            tokio::spawn(async move {
                // Boxed: the handshake's state and its result are large and
                // must not stay part of the connection's task.
                let handshake = Box::pin(tls_handshake(acceptor, stream, peer));
                if let Some(tls) = handshake.await {
                    Connection::new(tls, peer, ctx).await
                }
            });
        }
    }
}

/// Runs a client's TLS handshake (10 s at most).
async fn tls_handshake(
    acceptor: Arc<tokio_rustls::TlsAcceptor>,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
) -> Option<crate::client::connection::ClientStream> {
    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(crate::client::connection::ClientStream::Tls(Box::new(tls))),
        Ok(Err(e)) => {
            metrics::counter!(crate::metrics::CLIENT_TLS_FAILURES).increment(1);
            tracing::debug!(client = %peer, error = %e, "client TLS handshake failed");
            None
        }
        Err(_) => {
            metrics::counter!(crate::metrics::CLIENT_TLS_FAILURES).increment(1);
            tracing::debug!(client = %peer, "client TLS handshake timed out");
            None
        }
    }
}

/// Stops sessions from reading new commands and waits until every client
/// got its replies and left, or the drain timeout passed.
async fn drain(ctx: &Context) {
    let timeout = Duration::from_millis(ctx.config().lifecycle.drain_timeout_ms);
    let clients = ctx.stats.connected_clients.load(Ordering::Relaxed);
    tracing::info!(
        clients,
        ?timeout,
        "shutting down: draining client connections"
    );
    ctx.start_draining();
    let deadline = Instant::now() + timeout;
    while ctx.stats.connected_clients.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = ctx.stats.connected_clients.load(Ordering::Relaxed);
    if left > 0 {
        tracing::warn!(
            left,
            "drain timeout: closing the remaining client connections"
        );
    } else {
        tracing::info!("drained; exiting");
    }
}

/// SIGHUP: reloads the fields that can change safely and logs what changed.
fn reload(ctx: &Context, hooks: &Hooks) {
    let mut new = match (hooks.reload)() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "config reload failed; keeping the current configuration");
            return;
        }
    };
    let old = ctx.config();
    let mut changed = Vec::new();
    let mut restart = Vec::new();
    macro_rules! diff {
        ($($field:ident).+, $list:ident) => {
            if old.$($field).+ != new.$($field).+ {
                $list.push(stringify!($($field).+));
            }
        };
    }
    diff!(log_level, changed);
    diff!(seeds, changed);
    diff!(read_from, changed);
    diff!(limits.max_private_connections, restart);
    diff!(limits, changed);
    diff!(topology, changed);
    diff!(auth, changed);
    diff!(lifecycle, changed);
    diff!(durability, changed);
    diff!(listen, restart);
    diff!(admin, restart);
    diff!(backend, restart);
    // Turning TLS on or off changes what the port speaks: a restart. Other
    // TLS settings apply to new connections; the files are read again
    // even when unchanged, since SIGHUP is how a rotation the file watch
    // has not seen yet is applied at once.
    let tls_sides = |t: &crate::config::TlsConfig| (t.cert_file.is_some(), t.backend);
    if tls_sides(&old.tls) != tls_sides(&new.tls) {
        restart.push("tls (turning client or backend TLS on or off)");
        new.tls = old.tls.clone();
    } else {
        diff!(tls, changed);
    }
    apply_tls(ctx, new.tls.clone());
    diff!(colocate, restart);
    if !restart.is_empty() {
        tracing::warn!(fields = ?restart, "these settings take effect only after a restart; keeping the current values");
        new.listen = old.listen.clone();
        new.admin = old.admin.clone();
        new.backend = old.backend.clone();
        new.colocate = old.colocate.clone();
        new.limits.max_private_connections = old.limits.max_private_connections;
    }
    if old.log_level != new.log_level {
        if let Err(e) = (hooks.set_log_filter)(&new.log_level) {
            tracing::error!(error = %e, "invalid log_level; keeping the current one");
            new.log_level = old.log_level.clone();
        }
    }
    drop(old);
    ctx.tracker.set_max_keys(new.limits.tracking_table_max_keys);
    if let Err(e) = ctx.users.sync(&new.auth) {
        // Validated with the rest of the file: cannot happen.
        tracing::error!(error = %e, "users not changed");
    }
    ctx.set_config(new);
    ctx.clients.notify_subscribers(None);
    tracing::info!(changed = ?changed, "configuration reloaded");
}

/// Logs and counts what a TLS reload did (`trigger`: what asked for it).
fn report_tls(done: &[crate::tls::Reloaded], trigger: &str) {
    use crate::tls::Reloaded;
    for r in done {
        match r {
            Reloaded::Done(side) => {
                metrics::counter!(crate::metrics::TLS_RELOADS, "outcome" => "ok").increment(1);
                tracing::info!(
                    side = side.name(),
                    trigger,
                    "TLS certificates read again; new connections use them"
                );
            }
            Reloaded::Failed(side, e) => {
                metrics::counter!(crate::metrics::TLS_RELOADS, "outcome" => "error").increment(1);
                tracing::error!(side = side.name(), trigger, error = %e, "cannot read the TLS certificates; keeping the current ones and trying again at every check");
            }
        }
    }
}

/// Puts `tls` in force (SIGHUP): the files are read off the runtime.
fn apply_tls(ctx: &Context, tls: crate::config::TlsConfig) {
    let state = ctx.tls.clone();
    tokio::spawn(async move {
        let job = tokio::task::spawn_blocking(move || state.apply(&tls));
        if let Ok(done) = job.await {
            report_tls(&done, "SIGHUP");
        }
    });
}

/// Every `tls.watch_interval_ms`, reads again the TLS files that changed
/// (a rotated certificate) or failed to read last time, until the proxy
/// stops. A reload that changes the interval wakes it.
async fn watch_tls_files(ctx: std::sync::Weak<Context>) {
    loop {
        let Some(strong) = ctx.upgrade() else { return };
        let interval = strong.config().tls.watch_interval_ms;
        let state = strong.tls.clone();
        drop(strong);
        if interval == 0 {
            state.changed_settings.notified().await;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(interval)) => {}
            _ = state.changed_settings.notified() => continue,
        }
        // `stat` and reading may block (a network volume): not on a
        // runtime thread.
        let check = state.clone();
        if let Ok(done) = tokio::task::spawn_blocking(move || check.check()).await {
            report_tls(&done, "file change");
        }
    }
}

fn build_context(config: Config, port: u16, tls: Arc<crate::tls::TlsState>) -> Arc<Context> {
    let refresh_signal = Arc::new(Notify::new());
    let signal = refresh_signal.clone();
    let password = config.backend.password.clone().or_else(|| {
        std::env::var("SLOTBRIDGE_BACKEND_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty())
    });
    let stats = ProxyStats::default();
    let conn_opts = Arc::new(ConnOptions {
        connect_timeout: config.connect_timeout(),
        username: config.backend.username.clone(),
        password,
        queue_depth: config.backend.queue_depth,
        on_failure: Box::new(move |_addr| signal.notify_one()),
        tls: tls.clone(),
        request_timeout: match config.backend.request_timeout_ms {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        },
        commands_in_flight: stats.inflight.clone(),
        tracker: Arc::new(crate::tracking::Tracker::new(
            config.limits.tracking_table_max_keys,
        )),
        inboxes: Default::default(),
    });
    let topology = Arc::new(Topology::new(
        conn_opts.clone(),
        config.backend.connections_per_node,
        refresh_signal,
    ));
    let config_private = config.limits.max_private_connections;
    // Validated with the config; an error here cannot happen.
    let rules = crate::colocate::Rules::new(&config.colocate).unwrap_or_default();
    if !rules.is_empty() {
        let names: Vec<&str> = rules.rules().iter().map(|r| r.name.as_str()).collect();
        tracing::info!(rules = ?names, "co-location rules active");
    }
    // Validated with the config; an error here cannot happen (and would
    // leave no user: nobody could log in).
    let users = crate::acl::users::Users::new(&config.auth).unwrap_or_else(|e| {
        tracing::error!(error = %e, "no client users");
        Default::default()
    });
    let ctx = Arc::new(Context {
        users,
        config: arc_swap::ArcSwap::from_pointee(config),
        settings_version: AtomicU64::new(0),
        draining: AtomicBool::new(false),
        topology,
        stats,
        started: Instant::now(),
        port,
        blocking: Arc::new(Semaphore::new(config_private)),
        scripts: Default::default(),
        monitors: Default::default(),
        tracker: conn_opts.tracker.clone(),
        tls,
        clients: Default::default(),
        rules,
        health: Default::default(),
        pause: Default::default(),
        node_settings: Default::default(),
        subscribing: Default::default(),
        next_client_id: AtomicU64::new(0),
    });
    let weak = Arc::downgrade(&ctx);
    let refresh_opts = move || {
        let ctx = weak.upgrade()?;
        let config = ctx.config();
        Some(RefreshOptions {
            seeds: config.seeds.clone(),
            period: Duration::from_millis(config.topology.refresh_interval_ms),
            min_interval: Duration::from_millis(config.topology.min_refresh_interval_ms),
        })
    };
    tokio::spawn(refresh::run(
        ctx.topology.clone(),
        conn_opts.clone(),
        refresh_opts,
    ));
    tokio::spawn(learn_from_backend(ctx.clone(), conn_opts));
    ctx
}

/// Once the map is known, learns what the nodes run (see [`crate::nodes`])
/// and the commands and subcommands they know that the built-in table
/// lacks; tries again each second until a master answers, and checks
/// again at each topology change (a rolling upgrade changes them).
async fn learn_from_backend(ctx: Arc<Context>, opts: Arc<ConnOptions>) {
    let mut versions = ctx.topology.subscribe();
    let mut known: Option<String> = None;
    loop {
        let addr = ctx
            .topology
            .load()
            .shards()
            .first()
            .map(|s| s.master.addr().clone());
        if let Some(addr) = addr {
            if let Some(seen) = learn_from(&addr, &opts, known.as_deref()).await {
                known = Some(seen);
            }
        }
        let retry = tokio::time::sleep(Duration::from_secs(1));
        tokio::select! {
            changed = versions.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = retry, if known.is_none() => {}
        }
    }
}

/// Reads one master's `INFO server`; when its versions differ from
/// `known` (or none are known), also its `HELLO`, `MODULE LIST` and
/// `COMMAND`, and records them. Returns the versions read (`None` when the
/// node did not tell).
async fn learn_from(addr: &str, opts: &ConnOptions, known: Option<&str>) -> Option<String> {
    let info = oneshot(addr, opts, b"*2\r\n$4\r\nINFO\r\n$6\r\nSERVER\r\n")
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&info).into_owned();
    let line = |name: &str| {
        text.split("\r\n")
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::to_string)
    };
    let redis = line("redis_version")?;
    let versions = format!("{redis} {}", line("valkey_version").unwrap_or_default());
    if known == Some(versions.as_str()) {
        return Some(versions);
    }
    let command = oneshot(addr, opts, b"*1\r\n$7\r\nCOMMAND\r\n").await.ok()?;
    if !command.starts_with(b"*") {
        return None;
    }
    let hello = oneshot(addr, opts, b"*1\r\n$5\r\nHELLO\r\n")
        .await
        .unwrap_or_default();
    let modules = oneshot(addr, opts, b"*2\r\n$6\r\nMODULE\r\n$4\r\nLIST\r\n")
        .await
        .unwrap_or_default();
    if !crate::nodes::record(&text, &hello, &modules) {
        return None;
    }
    let learned = crate::command::learn(crate::command::parse_command_reply(&command));
    crate::command::learn_subcommands(crate::command::parse_subcommands(&command));
    tracing::info!(version = %redis, learned, "learned what the nodes run and the commands they know");
    Some(versions)
}
