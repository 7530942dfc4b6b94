//! Shared integration-test harness for slotbridge.
//!
//! Integration tests include it with `mod common;`. It runs real processes on
//! loopback:
//!
//! * [`Cluster`]: a Redis Cluster made of `redis-server` processes, created
//!   with `redis-cli --cluster create` (or by hand for fewer than 3 masters),
//!   plus helpers to inspect the topology, migrate slots (fully, or step by
//!   step for ASK tests) and kill nodes.
//! * [`Proxy`]: a real `slotbridge` process pointed at a [`Cluster`].
//! * [`RawClient`]: a plain TCP client for exact-byte (golden) tests.
//! * Key helpers: [`slot_of`], [`keys_in_distinct_slots`], [`key_for_slot`].
//!
//! Processes are never left behind: every child is killed when its owner
//! ([`Cluster`] or [`Proxy`]) is dropped, which also happens while a failing
//! test unwinds. On Linux every child is additionally spawned with
//! `PR_SET_PDEATHSIG = SIGKILL` from a thread that lives as long as the test
//! process, so even a test binary that is killed outright (or a `Cluster`
//! kept in a `static`) does not leak `redis-server`s.
//!
//! Temporary directories live under [`std::env::temp_dir`], are named
//! `slotbridge-test-<pid>-...`, and are removed on drop (set
//! `SLOTBRIDGE_KEEP_TEST_DIRS=1` to keep them for debugging). Directories left
//! by test processes that no longer exist are removed the first time the
//! harness makes a new one.
//!
//! The harness does not depend on slotbridge's own code: in particular
//! [`slot_of`] is implemented here.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::env;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard, Once, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// Redis Cluster listens for its bus on the client port plus this offset.
const BUS_PORT_OFFSET: u16 = 10_000;

/// Highest client port handed out: its bus port must still be a valid port.
const MAX_CLIENT_PORT: u16 = 55_534;

/// Lowest client port considered when allocating below the ephemeral range.
const MIN_CLIENT_PORT: u16 = 10_000;

/// Read/write timeout of the `redis::Connection`s the harness hands out, so
/// that a test blocked on a reply fails instead of hanging CI.
const CONN_IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Poll interval used by every wait loop.
const POLL: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

/// Locks a mutex, ignoring poisoning (a panicking test must not break others).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Renders bytes the way a Rust byte-string literal would show them, so that
/// `\r\n` and binary data are visible in assertion messages.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for &b in bytes {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('"');
    out
}

/// Encodes one command as a RESP array of bulk strings, e.g.
/// `encode_command(&[b"GET", b"k"])` is `*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`.
pub fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The last `lines` lines of a file (or a note saying it could not be read).
fn file_tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => tail_lines(&String::from_utf8_lossy(&bytes), lines),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// The last `lines` lines of `text`.
fn tail_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether a log reports that a listening socket could not be bound.
fn mentions_port_in_use(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("address already in use") || lower.contains("addrinuse")
}

// ---------------------------------------------------------------------------
// Port allocation
// ---------------------------------------------------------------------------

struct PortState {
    /// Ports handed out, and their bus ports.
    handed_out: HashSet<u16>,
    cursor: u32,
}

impl PortState {
    /// Hands out `port` if neither it nor its bus port was handed out (as a
    /// port or a bus port) and both are bindable now.
    fn try_take(&mut self, port: u16) -> bool {
        if port > MAX_CLIENT_PORT
            || self.handed_out.contains(&port)
            || self.handed_out.contains(&(port + BUS_PORT_OFFSET))
            || !port_pair_free(port)
        {
            return false;
        }
        self.handed_out.insert(port);
        self.handed_out.insert(port + BUS_PORT_OFFSET);
        true
    }
}

fn port_state() -> &'static Mutex<PortState> {
    static STATE: OnceLock<Mutex<PortState>> = OnceLock::new();
    STATE.get_or_init(|| {
        let seed = RandomState::new().build_hasher().finish() ^ u64::from(std::process::id());
        Mutex::new(PortState {
            handed_out: HashSet::new(),
            cursor: (seed % 1_000_003) as u32,
        })
    })
}

/// The kernel's ephemeral (outgoing connection) port range.
fn ephemeral_range() -> (u16, u16) {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

fn can_bind(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Whether both `port` and its cluster bus port `port + 10000` are bindable.
fn port_pair_free(port: u16) -> bool {
    port <= MAX_CLIENT_PORT && can_bind(port) && can_bind(port + BUS_PORT_OFFSET)
}

/// Returns a TCP port on 127.0.0.1 that is free right now, together with its
/// Redis Cluster bus port (`port + 10000`, so the port is always < 55535).
///
/// A port is never handed out twice by one process, nor one that is the bus
/// port of a port handed out before (or whose bus port is). Ports are taken, when the
/// kernel's configuration allows it, from below the ephemeral range (so that
/// neither the port nor its bus port can be grabbed by an outgoing
/// connection's local port), starting at a random offset so that concurrent
/// test processes rarely collide; otherwise they come from binding
/// `127.0.0.1:0`. Either way both ports are checked by binding them. A port
/// can still be taken by someone else between this call and its use: the
/// [`Cluster`] and [`Proxy`] starters detect "Address already in use" and retry
/// with new ports.
pub fn free_port() -> u16 {
    let mut state = lock(port_state());
    let (eph_lo, _) = ephemeral_range();
    // Window where both the port and its bus port lie below the ephemeral range.
    let window_end = eph_lo
        .saturating_sub(BUS_PORT_OFFSET)
        .min(MAX_CLIENT_PORT + 1);
    if window_end > MIN_CLIENT_PORT + 1000 {
        let width = u32::from(window_end - MIN_CLIENT_PORT);
        for _ in 0..width.min(4000) {
            state.cursor = state.cursor.wrapping_add(1);
            let port = MIN_CLIENT_PORT + (state.cursor % width) as u16;
            if state.try_take(port) {
                return port;
            }
        }
    }
    for _ in 0..10_000 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        if state.try_take(port) {
            return port;
        }
    }
    panic!("free_port: could not find a free port pair (port, port+10000) on 127.0.0.1");
}

// ---------------------------------------------------------------------------
// Temporary directories
// ---------------------------------------------------------------------------

const TEMP_PREFIX: &str = "slotbridge-test-";

/// A directory under the system temp dir, removed (with its contents) on drop
/// unless `SLOTBRIDGE_KEEP_TEST_DIRS` is set.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh, uniquely named directory; `tag` is appended to the name.
    pub fn new(tag: &str) -> TempDir {
        static CLEANUP: Once = Once::new();
        CLEANUP.call_once(remove_stale_temp_dirs);
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = env::temp_dir().join(format!(
            "{TEMP_PREFIX}{}-{n}-{nanos:09}-{tag}",
            std::process::id()
        ));
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create temp dir {}: {e}", path.display()));
        TempDir { path }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if env::var_os("SLOTBRIDGE_KEEP_TEST_DIRS").is_some() {
            eprintln!("keeping test dir {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Removes `slotbridge-test-<pid>-*` directories whose process is gone.
fn remove_stale_temp_dirs() {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

// ---------------------------------------------------------------------------
// Process spawning
// ---------------------------------------------------------------------------

#[cfg(target_os = "linux")]
mod sys {
    use std::ffi::{c_int, c_ulong};

    extern "C" {
        pub fn prctl(option: c_int, ...) -> c_int;
        pub fn getppid() -> c_int;
        pub fn kill(pid: c_int, sig: c_int) -> c_int;
    }

    pub const PR_SET_PDEATHSIG: c_int = 1;
    pub const SIGKILL: c_ulong = 9;
    pub const SIGTERM: c_int = 15;
    pub const ESRCH: i32 = 3;
}

type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` from a harness thread that lives as long as the test process.
///
/// On Linux the child gets `PR_SET_PDEATHSIG = SIGKILL`; that signal fires
/// when the *thread* that forked it exits, hence the dedicated thread.
fn spawn_process(cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnJob>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        thread::Builder::new()
            .name("harness-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(spawn_tied_to_process(&mut cmd));
                }
            })
            .expect("start the harness spawner thread");
        tx
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .send((cmd, reply_tx))
        .expect("harness spawner thread is gone");
    reply_rx.recv().expect("harness spawner thread is gone")
}

#[cfg(target_os = "linux")]
fn spawn_tied_to_process(cmd: &mut Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as i32;
    // SAFETY: the closure runs between fork and exec and only makes two
    // async-signal-safe system calls; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if sys::prctl(sys::PR_SET_PDEATHSIG, sys::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            if sys::getppid() != parent {
                // The test process died before we got here.
                return Err(io::Error::from_raw_os_error(sys::ESRCH));
            }
            Ok(())
        });
    }
    cmd.spawn()
}

#[cfg(not(target_os = "linux"))]
fn spawn_tied_to_process(cmd: &mut Command) -> io::Result<Child> {
    cmd.spawn()
}

/// Sends SIGTERM (SIGKILL where SIGTERM is unavailable) to a child.
fn terminate_child(child: &mut Child) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain kill(2) on the pid of a child we have not reaped yet.
        unsafe {
            sys::kill(child.id() as i32, sys::SIGTERM);
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = child.kill();
    }
}

/// Waits up to `timeout` for a child to exit.
fn wait_child_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

// ---------------------------------------------------------------------------
// redis::Connection helpers
// ---------------------------------------------------------------------------

fn try_connect(port: u16, timeout: Duration) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let conn = client.get_connection_with_timeout(timeout)?;
    conn.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
    conn.set_write_timeout(Some(timeout.max(Duration::from_millis(1))))?;
    Ok(conn)
}

/// Connects to 127.0.0.1:`port` (5 s connect timeout, 30 s I/O timeouts).
fn connect(port: u16) -> redis::Connection {
    let conn = try_connect(port, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    conn.set_read_timeout(Some(CONN_IO_TIMEOUT))
        .expect("set read timeout");
    conn.set_write_timeout(Some(CONN_IO_TIMEOUT))
        .expect("set write timeout");
    conn
}

fn value_int(v: &redis::Value) -> Option<i64> {
    match v {
        redis::Value::Int(i) => Some(*i),
        redis::Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        redis::Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// One entry of CLUSTER SLOTS, reduced to ports: (start, end, master, replicas).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SlotRange {
    start: u16,
    end: u16,
    master: u16,
    replicas: Vec<u16>,
}

/// CLUSTER SLOTS of one node, sorted, with replicas sorted.
fn cluster_slots(conn: &mut redis::Connection) -> Result<Vec<SlotRange>, String> {
    let reply: redis::Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query(conn)
        .map_err(|e| format!("CLUSTER SLOTS: {e}"))?;
    let redis::Value::Array(entries) = reply else {
        return Err(format!("CLUSTER SLOTS: unexpected reply {reply:?}"));
    };
    let mut ranges = Vec::new();
    for entry in &entries {
        let redis::Value::Array(items) = entry else {
            return Err(format!("CLUSTER SLOTS: unexpected entry {entry:?}"));
        };
        let bad = || format!("CLUSTER SLOTS: unexpected entry {entry:?}");
        let start = items.first().and_then(value_int).ok_or_else(bad)?;
        let end = items.get(1).and_then(value_int).ok_or_else(bad)?;
        let mut ports = Vec::new();
        for node in items.iter().skip(2) {
            let redis::Value::Array(fields) = node else {
                return Err(bad());
            };
            ports.push(fields.get(1).and_then(value_int).ok_or_else(bad)? as u16);
        }
        let Some((&master, replicas)) = ports.split_first() else {
            return Err(bad());
        };
        let mut replicas = replicas.to_vec();
        replicas.sort_unstable();
        ranges.push(SlotRange {
            start: start as u16,
            end: end as u16,
            master,
            replicas,
        });
    }
    ranges.sort();
    Ok(ranges)
}

/// Checks that sorted ranges cover slots 0..=16383 exactly once.
fn check_coverage(ranges: &[SlotRange]) -> Result<(), String> {
    let mut next = 0u32;
    for r in ranges {
        if u32::from(r.start) != next {
            return Err(format!("slots {next}..{} are not covered", r.start));
        }
        next = u32::from(r.end) + 1;
    }
    if next != u32::from(SLOTS) {
        return Err(format!("slots {next}..16383 are not covered"));
    }
    Ok(())
}

/// One line of CLUSTER NODES.
#[derive(Clone, Debug)]
struct NodeLine {
    id: String,
    port: u16,
    flags: String,
    master_id: String,
    /// `connected` or `disconnected` (the cluster bus link to that node).
    link_state: String,
    min_slot: Option<u16>,
    /// Slots listed as `[slot->-id]` (migrating) or `[slot-<-id]` (importing);
    /// only ever on the `myself` line.
    open_slots: Vec<String>,
}

fn parse_cluster_nodes(text: &str) -> Vec<NodeLine> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            continue;
        }
        // ip:port@cport[,hostname]
        let Some(port) = fields[1]
            .split('@')
            .next()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse::<u16>().ok())
        else {
            continue;
        };
        let min_slot = fields[8..]
            .iter()
            .filter(|s| !s.starts_with('['))
            .filter_map(|s| s.split('-').next()?.parse::<u16>().ok())
            .min();
        let open_slots = fields[8..]
            .iter()
            .filter(|s| s.starts_with('['))
            .map(|s| s.to_string())
            .collect();
        out.push(NodeLine {
            id: fields[0].to_string(),
            port,
            flags: fields[2].to_string(),
            master_id: fields[3].to_string(),
            link_state: fields[7].to_string(),
            min_slot,
            open_slots,
        });
    }
    out
}

// ---------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------

/// How to start a [`Cluster`]; see [`Cluster::start_with`].
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of masters (slots are split evenly between them).
    pub masters: usize,
    /// Replicas attached to each master.
    pub replicas_per_master: usize,
    /// `cluster-node-timeout` in milliseconds (failure detection time).
    pub node_timeout_ms: u64,
    /// Extra `redis.conf` lines appended to every node's configuration.
    pub extra_config: Vec<String>,
    /// How long start-up, [`Cluster::wait_ok`] and migrations may take.
    pub timeout: Duration,
}

impl ClusterOptions {
    /// Defaults for `masters` masters with `replicas_per_master` replicas each:
    /// node timeout 2000 ms, no extra config, 30 s timeout.
    pub fn new(masters: usize, replicas_per_master: usize) -> ClusterOptions {
        ClusterOptions {
            masters,
            replicas_per_master,
            node_timeout_ms: 2000,
            extra_config: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

struct Node {
    port: u16,
    dir: PathBuf,
    id: String,
    /// `None` once the node was killed (or removed).
    child: Option<Child>,
    /// Set by [`Cluster::remove_node`]: forgotten by the cluster and killed.
    removed: bool,
}

impl Node {
    fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    fn output_path(&self) -> PathBuf {
        self.dir.join("stdout.log")
    }
}

/// A real Redis Cluster of `redis-server` processes on 127.0.0.1.
///
/// Every node runs with `cluster-enabled yes`, no persistence, the configured
/// `cluster-node-timeout`, `cluster-replica-validity-factor 0` (replicas can
/// always fail over), `repl-diskless-sync-delay 0`, `repl-ping-replica-period 1`
/// and `enable-debug-command yes` (so tests may use `DEBUG SLEEP`). Dropping the
/// value kills every node and removes its temporary directory.
pub struct Cluster {
    opts: ClusterOptions,
    nodes: Vec<Node>,
    // Dropped after `nodes`' processes are killed in `Drop::drop`.
    dir: TempDir,
}

enum StartError {
    /// A node could not bind its port: retry with other ports.
    PortInUse(String),
}

impl Cluster {
    /// Starts `masters` masters with `replicas_per_master` replicas each (node
    /// timeout 2000 ms; 3 or more masters are created with `redis-cli
    /// --cluster create`, fewer by hand) and waits until the cluster is fully formed: every
    /// node reports `cluster_state:ok`, all nodes return the same CLUSTER
    /// SLOTS covering all 16384 slots with the expected replicas, and every
    /// replica's link to its master is up. Panics (with the nodes' log tails)
    /// if that takes longer than 30 s.
    pub fn start(masters: usize, replicas_per_master: usize) -> Cluster {
        Cluster::start_with(ClusterOptions::new(masters, replicas_per_master))
    }

    /// [`Cluster::start`] with explicit [`ClusterOptions`].
    pub fn start_with(opts: ClusterOptions) -> Cluster {
        assert!(opts.masters >= 1, "a cluster needs at least one master");
        let mut last = String::new();
        for _attempt in 0..5 {
            match Cluster::try_start(&opts) {
                Ok(cluster) => return cluster,
                Err(StartError::PortInUse(msg)) => last = msg,
            }
        }
        panic!("could not start a cluster: ports kept being taken; last failure:\n{last}");
    }

    fn try_start(opts: &ClusterOptions) -> Result<Cluster, StartError> {
        let total = opts.masters * (1 + opts.replicas_per_master);
        let mut cluster = Cluster {
            opts: opts.clone(),
            nodes: Vec::with_capacity(total),
            dir: TempDir::new("cluster"),
        };
        for _ in 0..total {
            let port = free_port();
            let dir = cluster.dir.path().join(port.to_string());
            fs::create_dir_all(&dir).expect("create node dir");
            let mut node = Node {
                port,
                dir,
                id: String::new(),
                child: None,
                removed: false,
            };
            node.child = Some(cluster.spawn_node(&node));
            cluster.nodes.push(node);
        }
        // Wait for every node to answer PING.
        let deadline = Instant::now() + opts.timeout;
        for i in 0..cluster.nodes.len() {
            cluster.wait_node_up(i, deadline)?;
        }
        if opts.masters >= 3 {
            cluster.create_with_redis_cli();
        } else {
            cluster.create_by_hand();
        }
        cluster.wait_until("every replica's link to its master to be up", || {
            cluster.check_replica_links()
        });
        // CLUSTER SLOTS omits replicas whose replication offset is still 0,
        // which lasts until the master sends something down the link: FLUSHALL
        // on the (empty) masters is always propagated, so it does that at once.
        for node in &cluster.nodes {
            let mut c = connect(node.port);
            let role: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut c)
                .unwrap_or_else(|e| panic!("INFO replication on {}: {e}", node.port));
            if role.contains("role:master") {
                redis::cmd("FLUSHALL")
                    .query::<()>(&mut c)
                    .unwrap_or_else(|e| panic!("FLUSHALL on {}: {e}", node.port));
            }
        }
        cluster.wait_until("the new cluster to be fully formed", || {
            cluster.check_state(true, None)
        });
        Ok(cluster)
    }

    fn spawn_node(&self, node: &Node) -> Child {
        let mut conf = format!(
            "port {port}\n\
             bind 127.0.0.1\n\
             protected-mode no\n\
             daemonize no\n\
             dir \"{dir}\"\n\
             logfile \"{dir}/redis.log\"\n\
             loglevel notice\n\
             cluster-enabled yes\n\
             cluster-config-file nodes.conf\n\
             cluster-node-timeout {timeout}\n\
             cluster-replica-validity-factor 0\n\
             appendonly no\n\
             save \"\"\n\
             repl-diskless-sync-delay 0\n\
             repl-ping-replica-period 1\n\
             enable-debug-command yes\n",
            port = node.port,
            dir = node.dir.display(),
            timeout = self.opts.node_timeout_ms,
        );
        for line in &self.opts.extra_config {
            conf.push_str(line);
            conf.push('\n');
        }
        let conf_path = node.dir.join("redis.conf");
        fs::write(&conf_path, conf).expect("write redis.conf");
        let out = File::create(node.output_path()).expect("create node stdout log");
        let mut cmd = Command::new("redis-server");
        cmd.arg(&conf_path)
            .current_dir(&node.dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone log handle"))
            .stderr(out);
        spawn_process(cmd).unwrap_or_else(|e| {
            panic!("cannot run redis-server (is it installed? see scripts/ensure-redis.sh): {e}")
        })
    }

    /// Waits until the freshly spawned node `nodes[i]` answers (checking that
    /// the answering process is ours) and records its node id. Returns
    /// `Err(PortInUse)` (leaving the node with no child) if it exited because
    /// its port was taken; panics on any other failure or after `deadline`.
    fn wait_node_up(&mut self, i: usize, deadline: Instant) -> Result<(), StartError> {
        let timeout = self.opts.timeout;
        loop {
            let node = &mut self.nodes[i];
            let child = node.child.as_mut().expect("node child");
            if let Ok(Some(status)) = child.try_wait() {
                let log = format!(
                    "{}\n{}",
                    file_tail(&node.log_path(), 30),
                    file_tail(&node.output_path(), 30)
                );
                node.child = None;
                if mentions_port_in_use(&log) {
                    return Err(StartError::PortInUse(log));
                }
                panic!(
                    "redis-server on port {} exited with {status} during start-up:\n{log}",
                    node.port
                );
            }
            let port = node.port;
            let pid_line = format!("process_id:{}\r\n", child.id());
            if let Ok(mut c) = try_connect(port, Duration::from_secs(1)) {
                // Make sure it is our process answering, not a stranger
                // that holds the port (ours then exits: see above).
                let info: String = redis::cmd("INFO")
                    .arg("server")
                    .query(&mut c)
                    .unwrap_or_default();
                if info.contains(&pid_line) {
                    node.id = redis::cmd("CLUSTER")
                        .arg("MYID")
                        .query(&mut c)
                        .unwrap_or_else(|e| panic!("CLUSTER MYID on {port}: {e}"));
                    break;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "redis-server on port {port} did not answer PING within {:?}\n{}",
                    timeout,
                    self.log_tails()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn create_with_redis_cli(&self) {
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for node in &self.nodes {
            cmd.arg(format!("127.0.0.1:{}", node.port));
        }
        cmd.arg("--cluster-replicas")
            .arg(self.opts.replicas_per_master.to_string())
            .arg("--cluster-yes")
            .stdin(Stdio::null());
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() || !text.contains("All 16384 slots covered") {
            panic!(
                "redis-cli --cluster create failed ({}):\n{text}\n{}",
                out.status,
                self.log_tails()
            );
        }
    }

    /// Cluster creation for fewer than 3 masters, which redis-cli refuses.
    fn create_by_hand(&self) {
        let masters = self.opts.masters;
        let first = self.nodes[0].port;
        for (i, node) in self.nodes.iter().enumerate() {
            let mut c = connect(node.port);
            let _: () = redis::cmd("CLUSTER")
                .arg("SET-CONFIG-EPOCH")
                .arg(i + 1)
                .query(&mut c)
                .unwrap_or_else(|e| panic!("SET-CONFIG-EPOCH on {}: {e}", node.port));
            if i < masters {
                let start = i * usize::from(SLOTS) / masters;
                let end = (i + 1) * usize::from(SLOTS) / masters - 1;
                let _: () = redis::cmd("CLUSTER")
                    .arg("ADDSLOTSRANGE")
                    .arg(start)
                    .arg(end)
                    .query(&mut c)
                    .unwrap_or_else(|e| panic!("ADDSLOTSRANGE on {}: {e}", node.port));
            }
            if i > 0 {
                let _: () = redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg("127.0.0.1")
                    .arg(first)
                    .query(&mut c)
                    .unwrap_or_else(|e| panic!("CLUSTER MEET on {}: {e}", node.port));
            }
        }
        let total = self.nodes.len();
        self.wait_until("all nodes to know each other", || {
            for node in &self.nodes {
                let mut c = try_connect(node.port, Duration::from_secs(1))
                    .map_err(|e| format!("node {}: {e}", node.port))?;
                let text: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query(&mut c)
                    .map_err(|e| format!("node {}: CLUSTER NODES: {e}", node.port))?;
                let lines = parse_cluster_nodes(&text);
                let known = lines
                    .iter()
                    .filter(|l| !l.flags.contains("handshake") && !l.flags.contains("noaddr"))
                    .count();
                if known != total {
                    return Err(format!("node {} knows {known}/{total} nodes", node.port));
                }
            }
            Ok(())
        });
        for (i, node) in self.nodes.iter().enumerate().skip(masters) {
            let master = &self.nodes[(i - masters) % masters];
            let _: () = redis::cmd("CLUSTER")
                .arg("REPLICATE")
                .arg(&master.id)
                .query(&mut connect(node.port))
                .unwrap_or_else(|e| panic!("CLUSTER REPLICATE on {}: {e}", node.port));
        }
    }

    fn live_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.child.is_some())
    }

    fn killed_ports(&self) -> HashSet<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_none())
            .map(|n| n.port)
            .collect()
    }

    fn node(&self, port: u16) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("port {port} is not a node of this cluster"))
    }

    /// The cluster node id of the node on `port`.
    pub fn node_id(&self, port: u16) -> String {
        self.node(port).id.clone()
    }

    /// The last 20 lines of every node's log, for panic messages.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let state = if node.child.is_some() {
                "running"
            } else if node.removed {
                "removed"
            } else {
                "killed"
            };
            let _ = writeln!(
                out,
                "--- node {} ({state}), {} ---\n{}",
                node.port,
                node.log_path().display(),
                file_tail(&node.log_path(), 20)
            );
            let extra = file_tail(&node.output_path(), 10);
            if !extra.trim().is_empty() {
                let _ = writeln!(out, "--- node {} stdout/stderr ---\n{extra}", node.port);
            }
        }
        out
    }

    /// Polls `check` every 50 ms until it returns `Ok`, panicking with the
    /// last error and the nodes' log tails after the configured timeout.
    fn wait_until(&self, what: &str, mut check: impl FnMut() -> Result<(), String>) {
        let deadline = Instant::now() + self.opts.timeout;
        loop {
            match check() {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => panic!(
                    "timed out after {:?} waiting for {what}: {e}\n{}",
                    self.opts.timeout,
                    self.log_tails()
                ),
                Err(_) => thread::sleep(POLL),
            }
        }
    }

    /// Checks that every live node that is a replica has its master link up.
    fn check_replica_links(&self) -> Result<(), String> {
        for node in self.live_nodes() {
            let port = node.port;
            let mut c = try_connect(port, Duration::from_secs(1))
                .map_err(|e| format!("node {port}: connect: {e}"))?;
            let repl: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut c)
                .map_err(|e| format!("node {port}: INFO replication: {e}"))?;
            if repl.contains("role:slave") && !repl.contains("master_link_status:up") {
                return Err(format!("replica {port}: link to master not up yet"));
            }
        }
        Ok(())
    }

    /// Checks, on every live node: `cluster_state:ok`, full slot coverage, the
    /// same CLUSTER SLOTS as the other nodes, and no slot served by a killed
    /// node. With `full_topology`, also the configured number of masters, each
    /// listed with the configured number of replicas. With `owner = Some((slot,
    /// port))`, also that every node sees `port` as the owner of `slot`.
    fn check_state(&self, full_topology: bool, owner: Option<(u16, u16)>) -> Result<(), String> {
        let killed = self.killed_ports();
        let mut reference: Option<(u16, Vec<SlotRange>)> = None;
        for node in self.live_nodes() {
            let port = node.port;
            let mut c = try_connect(port, Duration::from_secs(1))
                .map_err(|e| format!("node {port}: connect: {e}"))?;
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut c)
                .map_err(|e| format!("node {port}: CLUSTER INFO: {e}"))?;
            if !info.contains("cluster_state:ok") {
                return Err(format!("node {port}: cluster_state is not ok"));
            }
            let ranges = cluster_slots(&mut c).map_err(|e| format!("node {port}: {e}"))?;
            check_coverage(&ranges).map_err(|e| format!("node {port}: {e}"))?;
            if let Some(r) = ranges.iter().find(|r| killed.contains(&r.master)) {
                return Err(format!(
                    "node {port}: slots {}-{} still served by killed node {}",
                    r.start, r.end, r.master
                ));
            }
            if let Some((slot, want)) = owner {
                let got = ranges
                    .iter()
                    .find(|r| r.start <= slot && slot <= r.end)
                    .map(|r| r.master);
                if got != Some(want) {
                    return Err(format!(
                        "node {port}: slot {slot} owned by {got:?}, want {want}"
                    ));
                }
            }
            match &reference {
                None => reference = Some((port, ranges)),
                Some((ref_port, ref_ranges)) if *ref_ranges != ranges => {
                    return Err(format!(
                        "nodes disagree: {ref_port} sees {ref_ranges:?}, {port} sees {ranges:?}"
                    ));
                }
                Some(_) => {}
            }
        }
        if full_topology {
            let (_, ranges) = reference.ok_or("no live node")?;
            let masters: HashSet<u16> = ranges.iter().map(|r| r.master).collect();
            if masters.len() != self.opts.masters {
                return Err(format!(
                    "{} masters serve slots, want {}",
                    masters.len(),
                    self.opts.masters
                ));
            }
            if let Some(r) = ranges
                .iter()
                .find(|r| r.replicas.len() != self.opts.replicas_per_master)
            {
                return Err(format!(
                    "slots {}-{} have replicas {:?}, want {} replicas",
                    r.start, r.end, r.replicas, self.opts.replicas_per_master
                ));
            }
        }
        Ok(())
    }

    /// CLUSTER NODES of the first live node that answers.
    fn cluster_nodes(&self) -> Vec<NodeLine> {
        let mut last_err = String::from("no live node");
        for node in self.live_nodes() {
            match try_connect(node.port, Duration::from_secs(2))
                .and_then(|mut c| redis::cmd("CLUSTER").arg("NODES").query::<String>(&mut c))
            {
                Ok(text) => return parse_cluster_nodes(&text),
                Err(e) => last_err = format!("node {}: {e}", node.port),
            }
        }
        panic!("CLUSTER NODES failed on every live node: {last_err}");
    }

    /// CLUSTER SLOTS of the first live node that answers.
    fn slot_map(&self) -> Vec<SlotRange> {
        let mut last_err = String::from("no live node");
        for node in self.live_nodes() {
            match try_connect(node.port, Duration::from_secs(2))
                .map_err(|e| e.to_string())
                .and_then(|mut c| cluster_slots(&mut c))
            {
                Ok(ranges) => return ranges,
                Err(e) => last_err = format!("node {}: {e}", node.port),
            }
        }
        panic!("CLUSTER SLOTS failed on every live node: {last_err}");
    }

    /// `"127.0.0.1:p1,127.0.0.1:p2,..."` for the current masters that own at
    /// least one slot, in the order of [`Cluster::master_ports`]: the seed
    /// list for `--seeds`. Masters without slots (a node just added by
    /// [`Cluster::add_node`], or one emptied by [`Cluster::reshard`]) are left
    /// out until they own slots.
    pub fn seeds(&self) -> String {
        self.masters()
            .iter()
            .filter(|l| l.min_slot.is_some())
            .map(|l| format!("127.0.0.1:{}", l.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Ports of the current masters (as seen by a live node, killed and
    /// removed nodes excluded), ordered by the lowest slot each one serves.
    /// Masters without slots are included, last, by port: a node just added
    /// by [`Cluster::add_node`] is a master without slots (unlike in
    /// [`Cluster::seeds`]). Right after [`Cluster::start`],
    /// `master_ports()[0]` serves slot 0 and `master_ports()[masters - 1]`
    /// serves slot 16383.
    pub fn master_ports(&self) -> Vec<u16> {
        self.masters().into_iter().map(|l| l.port).collect()
    }

    /// CLUSTER NODES lines of the live masters, sorted as in
    /// [`Cluster::master_ports`].
    fn masters(&self) -> Vec<NodeLine> {
        let killed = self.killed_ports();
        let mut masters: Vec<NodeLine> = self
            .cluster_nodes()
            .into_iter()
            .filter(|l| {
                l.flags.contains("master")
                    && !l.flags.contains("fail")
                    && !l.flags.contains("noaddr")
                    && !l.flags.contains("handshake")
                    && !killed.contains(&l.port)
            })
            .collect();
        masters.sort_by_key(|l| (l.min_slot.is_none(), l.min_slot, l.port));
        masters
    }

    /// Ports of the replicas of the master on `master_port` (as seen by a live
    /// node, killed nodes excluded), sorted.
    pub fn replica_ports(&self, master_port: u16) -> Vec<u16> {
        let master_id = self.node_id(master_port);
        let killed = self.killed_ports();
        let mut ports: Vec<u16> = self
            .cluster_nodes()
            .into_iter()
            .filter(|l| l.master_id == master_id && !killed.contains(&l.port))
            .map(|l| l.port)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// Ports of every node still running (masters and replicas, killed nodes
    /// excluded), in creation order.
    pub fn all_ports(&self) -> Vec<u16> {
        self.live_nodes().map(|n| n.port).collect()
    }

    /// Port of the master that owns `slot`, according to CLUSTER SLOTS of a
    /// live node. During a migration started by [`Cluster::begin_migration`]
    /// this is still the source.
    pub fn node_for_slot(&self, slot: u16) -> u16 {
        assert!(slot < SLOTS, "slot {slot} out of range");
        self.slot_map()
            .iter()
            .find(|r| r.start <= slot && slot <= r.end)
            .map(|r| r.master)
            .unwrap_or_else(|| panic!("slot {slot} is not served by any node"))
    }

    /// Port of the master that owns `key` (see [`Cluster::node_for_slot`]).
    pub fn node_for_key(&self, key: &[u8]) -> u16 {
        self.node_for_slot(slot_of(key))
    }

    /// A direct connection to the node on `port` (5 s connect timeout, 30 s
    /// read/write timeouts). Cluster redirections are not followed.
    pub fn conn(&self, port: u16) -> redis::Connection {
        connect(port)
    }

    /// The contents of the log of the node on `port`.
    pub fn node_log(&self, port: u16) -> String {
        fs::read_to_string(self.node(port).log_path()).unwrap_or_default()
    }

    fn setslot(&self, port: u16, slot: u16, args: &[&str]) {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SETSLOT").arg(slot);
        for a in args {
            cmd.arg(*a);
        }
        cmd.query::<()>(&mut connect(port))
            .unwrap_or_else(|e| panic!("CLUSTER SETSLOT {slot} {} on {port}: {e}", args.join(" ")));
    }

    /// Moves every key of `slot` from `from` to `to` with MIGRATE, in batches
    /// of 100 (the slot must be MIGRATING on `from` and IMPORTING on `to`).
    fn move_all_keys(&self, slot: u16, from: u16, to: u16) {
        let mut src = connect(from);
        loop {
            let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut src)
                .unwrap_or_else(|e| panic!("GETKEYSINSLOT {slot} on {from}: {e}"));
            if keys.is_empty() {
                return;
            }
            let mut cmd = redis::cmd("MIGRATE");
            cmd.arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(10_000)
                .arg("REPLACE")
                .arg("KEYS");
            for k in &keys {
                cmd.arg(k.as_slice());
            }
            let reply: redis::Value = cmd
                .query(&mut src)
                .unwrap_or_else(|e| panic!("MIGRATE slot {slot} from {from} to {to}: {e}"));
            assert!(
                matches!(reply, redis::Value::Okay | redis::Value::SimpleString(_)),
                "MIGRATE slot {slot} from {from} to {to}: unexpected reply {reply:?}"
            );
        }
    }

    /// Migrates `slot` to the master on `to_port`: SETSLOT IMPORTING on the
    /// target and MIGRATING on the source, MIGRATE of all its keys in batches,
    /// then SETSLOT NODE on the target, the source and every other master;
    /// returns once every live node sees `to_port` as the owner. Does nothing
    /// if `to_port` already owns the slot.
    pub fn migrate_slot(&self, slot: u16, to_port: u16) {
        if self.node_for_slot(slot) == to_port {
            return;
        }
        self.begin_migration(slot, to_port);
        self.finish_migration(slot, to_port);
    }

    /// Starts migrating `slot` to `to_port` without moving anything: CLUSTER
    /// SETSLOT IMPORTING on the target, then MIGRATING on the source. From now
    /// on the source answers `-ASK` for keys of the slot it no longer has.
    pub fn begin_migration(&self, slot: u16, to_port: u16) {
        let from = self.node_for_slot(slot);
        assert_ne!(from, to_port, "slot {slot} is already owned by {to_port}");
        let from_id = self.node_id(from);
        let to_id = self.node_id(to_port);
        self.setslot(to_port, slot, &["IMPORTING", &from_id]);
        self.setslot(from, slot, &["MIGRATING", &to_id]);
    }

    /// During a migration begun with [`Cluster::begin_migration`], MIGRATEs
    /// `key` (which must hash to `slot`) from the source to `to_port`. A key
    /// that does not exist is not an error.
    pub fn migrate_key(&self, slot: u16, key: &[u8], to_port: u16) {
        assert_eq!(
            slot_of(key),
            slot,
            "key {} is not in slot {slot}",
            escape(key)
        );
        let from = self.node_for_slot(slot);
        let reply: redis::Value = redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(to_port)
            .arg(key)
            .arg(0)
            .arg(10_000)
            .arg("REPLACE")
            .query(&mut connect(from))
            .unwrap_or_else(|e| panic!("MIGRATE {} from {from} to {to_port}: {e}", escape(key)));
        assert!(
            matches!(reply, redis::Value::Okay | redis::Value::SimpleString(_)),
            "MIGRATE {}: unexpected reply {reply:?}",
            escape(key)
        );
    }

    /// Completes a migration of `slot` to `to_port`: MIGRATEs any keys still
    /// on the source (re-asserting IMPORTING/MIGRATING first if needed), then
    /// SETSLOT NODE on the target, the source and all other masters, and waits
    /// until every live node agrees that `to_port` owns the slot.
    pub fn finish_migration(&self, slot: u16, to_port: u16) {
        let from = self.node_for_slot(slot);
        let to_id = self.node_id(to_port);
        if from != to_port {
            let left: i64 = redis::cmd("CLUSTER")
                .arg("COUNTKEYSINSLOT")
                .arg(slot)
                .query(&mut connect(from))
                .unwrap_or_else(|e| panic!("COUNTKEYSINSLOT {slot} on {from}: {e}"));
            if left > 0 {
                // Idempotent: makes MIGRATE's RESTORE-ASKING acceptable to the target.
                self.begin_migration(slot, to_port);
                self.move_all_keys(slot, from, to_port);
            }
        }
        self.setslot(to_port, slot, &["NODE", &to_id]);
        if from != to_port {
            self.setslot(from, slot, &["NODE", &to_id]);
        }
        for port in self.master_ports() {
            if port != to_port && port != from {
                self.setslot(port, slot, &["NODE", &to_id]);
            }
        }
        self.wait_until(
            &format!("all nodes to agree that {to_port} owns slot {slot}"),
            || self.check_state(false, Some((slot, to_port))),
        );
    }

    /// SIGKILLs the node on `port` (no-op if it is already dead). It then no
    /// longer appears in [`Cluster::all_ports`], [`Cluster::master_ports`] or
    /// [`Cluster::seeds`].
    pub fn kill_node(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("port {port} is not a node of this cluster"));
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the killed node on `port` again with its old configuration
    /// and `nodes.conf` (a failed-over master rejoins as a replica of its
    /// successor), waits until it answers, then waits as in
    /// [`Cluster::wait_ok`]. Panics if the node is running or was removed.
    pub fn restart_node(&mut self, port: u16) {
        let i = self
            .nodes
            .iter()
            .position(|n| n.port == port)
            .unwrap_or_else(|| panic!("port {port} is not a node of this cluster"));
        assert!(
            self.nodes[i].child.is_none() && !self.nodes[i].removed,
            "restart_node: {port} is running or was removed"
        );
        let child = self.spawn_node(&self.nodes[i]);
        self.nodes[i].child = Some(child);
        let deadline = Instant::now() + self.opts.timeout;
        if let Err(StartError::PortInUse(log)) = self.wait_node_up(i, deadline) {
            panic!("restart_node: port {port} was taken meanwhile:\n{log}");
        }
        self.wait_ok();
    }

    /// Number of slots the master on `port` owns, according to CLUSTER SLOTS
    /// of the first live node that answers (0 for a replica, a master without
    /// slots, or a port the cluster does not know).
    pub fn nslots(&self, port: u16) -> usize {
        self.slot_map()
            .iter()
            .filter(|r| r.master == port)
            .map(|r| usize::from(r.end - r.start) + 1)
            .sum()
    }

    /// Starts a brand-new, empty `redis-server` with the same configuration
    /// as the other nodes on a fresh free port (another one is tried if the
    /// port turns out to be taken), introduces it with `CLUSTER MEET` sent to
    /// an existing live node, and returns its port once every live node lists
    /// it as connected, it lists every live node as connected, and all live
    /// nodes (the new one included) report `cluster_state:ok` with the same
    /// CLUSTER SLOTS. A new master only reports `cluster_state:ok` about 2 s
    /// after it started, so this takes at least that long. Panics with the
    /// nodes' log tails after the configured timeout (30 s by default).
    ///
    /// The new node is a master without slots or replicas. It is in
    /// [`Cluster::all_ports`] and at the end of [`Cluster::master_ports`]
    /// (masters without slots come last), but not in [`Cluster::seeds`]
    /// until it owns slots (give it some with [`Cluster::reshard`] or
    /// [`Cluster::migrate_slot`]). Like every node, it is killed on drop.
    pub fn add_node(&mut self) -> u16 {
        let introducers = self.all_ports();
        assert!(!introducers.is_empty(), "add_node: no live node left");
        let mut last = String::new();
        let mut added = None;
        for _attempt in 0..5 {
            let port = free_port();
            let dir = self.dir.path().join(port.to_string());
            fs::create_dir_all(&dir).expect("create node dir");
            let mut node = Node {
                port,
                dir,
                id: String::new(),
                child: None,
                removed: false,
            };
            node.child = Some(self.spawn_node(&node));
            self.nodes.push(node);
            let deadline = Instant::now() + self.opts.timeout;
            match self.wait_node_up(self.nodes.len() - 1, deadline) {
                Ok(()) => {
                    added = Some(port);
                    break;
                }
                // Exited because its port was taken: forget it, try another.
                Err(StartError::PortInUse(log)) => {
                    self.nodes.pop();
                    last = log;
                }
            }
        }
        let port = added
            .unwrap_or_else(|| panic!("add_node: ports kept being taken; last failure:\n{last}"));
        let mut met = Err(String::from("no live node"));
        for &introducer in &introducers {
            met = try_connect(introducer, Duration::from_secs(2))
                .and_then(|mut c| {
                    redis::cmd("CLUSTER")
                        .arg("MEET")
                        .arg("127.0.0.1")
                        .arg(port)
                        .query::<()>(&mut c)
                })
                .map_err(|e| format!("CLUSTER MEET 127.0.0.1 {port} on {introducer}: {e}"));
            if met.is_ok() {
                break;
            }
        }
        if let Err(e) = met {
            panic!("add_node: {e}\n{}", self.log_tails());
        }
        self.wait_until(
            &format!("new node {port} and every live node to see each other"),
            || self.check_joined(port),
        );
        self.wait_until(
            &format!("cluster_state:ok and the same slots on all nodes after adding {port}"),
            || self.check_state(false, None),
        );
        port
    }

    /// CLUSTER NODES of the node on `port`.
    fn cluster_nodes_of(port: u16) -> Result<Vec<NodeLine>, String> {
        let mut c = try_connect(port, Duration::from_secs(1))
            .map_err(|e| format!("node {port}: connect: {e}"))?;
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query(&mut c)
            .map_err(|e| format!("node {port}: CLUSTER NODES: {e}"))?;
        Ok(parse_cluster_nodes(&text))
    }

    /// Checks that every live node lists the node on `port` as connected and
    /// that it lists every live node as connected.
    fn check_joined(&self, port: u16) -> Result<(), String> {
        let up = |l: &NodeLine| {
            l.link_state == "connected"
                && !l.flags.contains("handshake")
                && !l.flags.contains("noaddr")
                && !l.flags.contains("fail")
        };
        let new_id = self.node_id(port);
        for node in self.live_nodes() {
            let lines = Cluster::cluster_nodes_of(node.port)?;
            let wanted: Vec<&Node> = if node.port == port {
                self.live_nodes().filter(|n| n.port != port).collect()
            } else {
                vec![self.node(port)]
            };
            for want in wanted {
                match lines.iter().find(|l| l.id == want.id) {
                    Some(l) if up(l) => {}
                    Some(l) => {
                        return Err(format!(
                            "node {} lists {} as {} ({})",
                            node.port, want.port, l.flags, l.link_state
                        ))
                    }
                    None => {
                        return Err(format!(
                            "node {} does not list {} ({})",
                            node.port,
                            want.port,
                            if want.port == port { &new_id } else { &want.id }
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks that no live node has a slot in MIGRATING or IMPORTING state.
    fn check_no_open_slots(&self) -> Result<(), String> {
        for node in self.live_nodes() {
            let lines = Cluster::cluster_nodes_of(node.port)?;
            if let Some(me) = lines.iter().find(|l| l.flags.contains("myself")) {
                if !me.open_slots.is_empty() {
                    return Err(format!(
                        "node {} has open slots {}",
                        node.port,
                        me.open_slots.join(" ")
                    ));
                }
            }
        }
        Ok(())
    }

    /// Moves `slots` slots from the master on `from_port` to the master on
    /// `to_port` with `redis-cli --cluster reshard 127.0.0.1:<from>
    /// --cluster-from <from id> --cluster-to <to id> --cluster-slots <slots>
    /// --cluster-yes --cluster-pipeline 100` (redis-cli picks the slots: the
    /// source's lowest-numbered ones), then waits until every live node
    /// reports `cluster_state:ok`, all return the same CLUSTER SLOTS (covering
    /// all slots) in which `from_port` owns `slots` fewer and `to_port`
    /// `slots` more, and no node has a MIGRATING/IMPORTING slot left.
    ///
    /// Clients may keep reading and writing meanwhile; they must follow `ASK`
    /// and `MOVED` as usual. Keys are moved without `--cluster-replace`, so a
    /// key that exists on both sides (which a correct client never causes)
    /// makes redis-cli fail with `BUSYKEY`.
    ///
    /// Beforehand it waits for the nodes to agree on the slot map (redis-cli
    /// refuses to reshard otherwise) and panics at once if a slot is open
    /// (e.g. left by [`Cluster::begin_migration`]) or `from_port` owns fewer
    /// than `slots` slots. Panics with redis-cli's output if it fails or runs
    /// longer than the configured timeout plus 20 ms per slot, and with the
    /// nodes' log tails if the nodes do not agree in time afterwards.
    ///
    /// When a master's last slot is moved away, Redis (7.0+, with the default
    /// `cluster-allow-replica-migration yes`) turns it into a replica of the
    /// node that received that slot, and its replicas follow: it then leaves
    /// [`Cluster::master_ports`] without being removed from the cluster (see
    /// [`Cluster::remove_node`]).
    pub fn reshard(&self, from_port: u16, to_port: u16, slots: usize) {
        assert_ne!(
            from_port, to_port,
            "reshard: source and target are the same"
        );
        let from_id = self.node_id(from_port);
        let to_id = self.node_id(to_port);
        if slots == 0 {
            return;
        }
        self.wait_until(
            "the nodes to agree on the slot map before resharding",
            || self.check_state(false, None),
        );
        if let Err(e) = self.check_no_open_slots() {
            panic!("reshard: cannot reshard while a slot is being migrated: {e}");
        }
        let from_before = self.nslots(from_port);
        let to_before = self.nslots(to_port);
        assert!(
            from_before >= slots,
            "reshard: {from_port} owns {from_before} slots, cannot move {slots}"
        );
        let args = vec![
            "--cluster".to_string(),
            "reshard".to_string(),
            format!("127.0.0.1:{from_port}"),
            "--cluster-from".to_string(),
            from_id,
            "--cluster-to".to_string(),
            to_id,
            "--cluster-slots".to_string(),
            slots.to_string(),
            "--cluster-yes".to_string(),
            "--cluster-pipeline".to_string(),
            "100".to_string(),
        ];
        let timeout = self.opts.timeout + Duration::from_millis(20) * slots as u32;
        let (status, output) = self.run_redis_cli(&args, timeout);
        if !status.success() || output.contains("[ERR]") {
            panic!(
                "redis-cli {} failed ({status}):\n{}\n{}",
                args.join(" "),
                tail_lines(&output, 60),
                self.log_tails()
            );
        }
        self.wait_for_counts(from_port, from_before - slots, to_port, to_before + slots);
    }

    /// Moves `slots` slots (the lowest `from_port` owns) to `to_port` with
    /// Valkey 9's atomic slot migration (`CLUSTER MIGRATESLOTS`): the
    /// source keeps serving them until the target takes them over, with no
    /// `ASK` window. Returns when all nodes agree on the new owners.
    pub fn migrate_slots_atomically(&self, from_port: u16, to_port: u16, slots: usize) {
        assert_ne!(
            from_port, to_port,
            "migrate: source and target are the same"
        );
        let to_id = self.node_id(to_port);
        self.wait_until(
            "the nodes to agree on the slot map before migrating",
            || self.check_state(false, None),
        );
        let (from_before, to_before) = (self.nslots(from_port), self.nslots(to_port));
        let slots = slots.min(from_before);
        if slots == 0 {
            return;
        }
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("MIGRATESLOTS");
        let mut left = slots;
        for range in self.slot_map().iter().filter(|r| r.master == from_port) {
            if left == 0 {
                break;
            }
            let take = left.min(usize::from(range.end - range.start) + 1);
            let end = range.start + (take - 1) as u16;
            cmd.arg("SLOTSRANGE")
                .arg(range.start)
                .arg(end)
                .arg("NODE")
                .arg(&to_id);
            left -= take;
        }
        let answer: redis::RedisResult<String> = cmd.query(&mut self.conn(from_port));
        if let Err(e) = answer {
            panic!(
                "CLUSTER MIGRATESLOTS on {from_port}: {e}\n{}",
                self.log_tails()
            );
        }
        self.wait_for_counts(from_port, from_before - slots, to_port, to_before + slots);
    }

    /// Waits until every node agrees that `from_port` owns `from_after`
    /// slots and `to_port` owns `to_after`, with no slot open.
    fn wait_for_counts(&self, from_port: u16, from_after: usize, to_port: u16, to_after: usize) {
        self.wait_until(
            &format!("all nodes to agree that {from_port} owns {from_after} slots and {to_port} owns {to_after}"),
            || {
                self.check_state(false, None)?;
                self.check_no_open_slots()?;
                let port = self.all_ports().first().copied().ok_or("no live node")?;
                let ranges = try_connect(port, Duration::from_secs(1))
                    .map_err(|e| e.to_string())
                    .and_then(|mut c| cluster_slots(&mut c))
                    .map_err(|e| format!("node {port}: {e}"))?;
                let count = |p: u16| -> usize {
                    ranges
                        .iter()
                        .filter(|r| r.master == p)
                        .map(|r| usize::from(r.end - r.start) + 1)
                        .sum()
                };
                let (f, t) = (count(from_port), count(to_port));
                if (f, t) != (from_after, to_after) {
                    return Err(format!(
                        "node {port}: {from_port} owns {f} slots, {to_port} owns {t}"
                    ));
                }
                Ok(())
            },
        );
    }

    /// Runs `redis-cli args...` (tied to the test process, output to a file in
    /// the cluster's directory) and returns its exit status and output;
    /// kills it and panics with its output if it runs longer than `timeout`.
    fn run_redis_cli(&self, args: &[String], timeout: Duration) -> (ExitStatus, String) {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let out_path = self.dir.path().join(format!("redis-cli-{n}.log"));
        let out = File::create(&out_path).expect("create redis-cli log");
        let mut cmd = Command::new("redis-cli");
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone log handle"))
            .stderr(out);
        let mut child = spawn_process(cmd).unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
        let status = wait_child_timeout(&mut child, timeout);
        let output = fs::read(&out_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        match status {
            Some(status) => (status, output),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "redis-cli {} still running after {timeout:?}; output so far:\n{}\n{}",
                    args.join(" "),
                    tail_lines(&output, 60),
                    self.log_tails()
                );
            }
        }
    }

    /// Removes the node on `port` from the cluster and stops it. It must own
    /// no slots (move them away first with [`Cluster::reshard`]); it may be a
    /// master, a replica (which is what Redis turns a master into when its
    /// last slot is moved away), or a node already killed with
    /// [`Cluster::kill_node`] (whose replica took over).
    ///
    /// Steps: live replicas of the node are first re-pointed with `CLUSTER
    /// REPLICATE` to the slot-owning master with the fewest replicas (a
    /// replica cannot forget its master); then `CLUSTER FORGET <id>` is sent
    /// to every other live node in one quick pass, over connections opened
    /// beforehand, because a node that forgot an id ignores gossip about it
    /// for only 60 s, so every node must forget it within that window; it is
    /// resent, polling every 50 ms, to any node that still lists the id in
    /// CLUSTER NODES, until none does. Finally the process is SIGKILLed and
    /// the cluster waited for as in [`Cluster::wait_ok`]. Afterwards the node
    /// is no longer in [`Cluster::all_ports`], [`Cluster::master_ports`] or
    /// [`Cluster::seeds`] (its log stays in [`Cluster::log_tails`]). Panics
    /// with the nodes' log tails after the configured timeout.
    pub fn remove_node(&mut self, port: u16) {
        let node = self.node(port);
        assert!(!node.removed, "remove_node: {port} was already removed");
        let id = node.id.clone();
        let owned = self.nslots(port);
        assert!(
            owned == 0,
            "remove_node: {port} still owns {owned} slots; reshard them away first"
        );
        self.repoint_replicas_of(port);
        let others: Vec<u16> = self
            .all_ports()
            .into_iter()
            .filter(|&p| p != port)
            .collect();
        let forget = |c: &mut redis::Connection| -> Result<(), String> {
            match redis::cmd("CLUSTER").arg("FORGET").arg(&id).query::<()>(c) {
                Ok(()) => Ok(()),
                Err(e) if e.to_string().contains("Unknown node") => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        };
        // Connect first so that the FORGETs go out back to back.
        let mut conns: Vec<(u16, redis::Connection)> =
            others.iter().map(|&p| (p, connect(p))).collect();
        for (_, c) in &mut conns {
            // Failures are retried (and reported) below.
            let _ = forget(c);
        }
        drop(conns);
        self.wait_until(&format!("every live node to forget {port} ({id})"), || {
            let mut pending = Vec::new();
            for &other in &others {
                let lines = Cluster::cluster_nodes_of(other)?;
                if lines.iter().any(|l| l.id == id) {
                    let result = try_connect(other, Duration::from_secs(1))
                        .map_err(|e| e.to_string())
                        .and_then(|mut c| forget(&mut c));
                    pending.push(match result {
                        Ok(()) => format!("{other}"),
                        Err(e) => format!("{other} (CLUSTER FORGET: {e})"),
                    });
                }
            }
            if pending.is_empty() {
                Ok(())
            } else {
                Err(format!("still listed by {}", pending.join(", ")))
            }
        });
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("node exists");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.removed = true;
        self.wait_until(
            &format!("cluster_state:ok on all live nodes after removing {port}"),
            || self.check_state(false, None),
        );
    }

    /// Re-points every live replica of the node on `port` (according to the
    /// replica's own CLUSTER NODES) to the slot-owning master (other than
    /// `port`) with the fewest replicas, and waits for their links to be up.
    fn repoint_replicas_of(&self, port: u16) {
        let id = self.node_id(port);
        let mut replicas = Vec::new();
        for node in self.live_nodes().filter(|n| n.port != port) {
            let lines = Cluster::cluster_nodes_of(node.port)
                .unwrap_or_else(|e| panic!("remove_node: {e}\n{}", self.log_tails()));
            if lines
                .iter()
                .any(|l| l.flags.contains("myself") && l.master_id == id)
            {
                replicas.push(node.port);
            }
        }
        if replicas.is_empty() {
            return;
        }
        let lines = self.cluster_nodes();
        let killed = self.killed_ports();
        let target = self
            .masters()
            .into_iter()
            .filter(|m| m.min_slot.is_some() && m.port != port)
            .min_by_key(|m| {
                let n = lines
                    .iter()
                    .filter(|l| l.master_id == m.id && !killed.contains(&l.port))
                    .count();
                (n, m.port)
            })
            .unwrap_or_else(|| panic!("remove_node: no master left for the replicas of {port}"));
        for &replica in &replicas {
            redis::cmd("CLUSTER")
                .arg("REPLICATE")
                .arg(&target.id)
                .query::<()>(&mut connect(replica))
                .unwrap_or_else(|e| panic!("CLUSTER REPLICATE on {replica}: {e}"));
        }
        self.wait_until(
            &format!(
                "the replicas of {port} to replicate {} instead",
                target.port
            ),
            || {
                for &replica in &replicas {
                    let lines = Cluster::cluster_nodes_of(replica)?;
                    if lines
                        .iter()
                        .any(|l| l.flags.contains("myself") && l.master_id != target.id)
                    {
                        return Err(format!("{replica} does not replicate {} yet", target.port));
                    }
                }
                self.check_replica_links()
            },
        );
    }

    /// Waits until every live node reports `cluster_state:ok`, all live nodes
    /// return the same CLUSTER SLOTS covering all slots, and no slot is still
    /// served by a killed node (so after [`Cluster::kill_node`] of a master
    /// this waits for the failover of one of its replicas). Panics with the
    /// nodes' log tails after the configured timeout (30 s by default).
    pub fn wait_ok(&self) {
        self.wait_until("cluster_state:ok on all live nodes", || {
            self.check_state(false, None)
        });
    }

    /// The temporary directory holding the nodes' configs, data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                let _ = child.kill();
            }
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.wait();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Proxy
// ---------------------------------------------------------------------------

/// Path of the slotbridge binary: cargo's `CARGO_BIN_EXE_slotbridge` when the
/// test is built as part of the slotbridge package, else `$SLOTBRIDGE_BIN`.
fn proxy_binary() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_slotbridge") {
        return PathBuf::from(path);
    }
    if let Some(path) = env::var_os("SLOTBRIDGE_BIN") {
        return PathBuf::from(path);
    }
    panic!(
        "the slotbridge binary is unknown: CARGO_BIN_EXE_slotbridge was not set at compile \
         time (this test is not part of the slotbridge package) and SLOTBRIDGE_BIN is not set"
    );
}

/// A running `slotbridge` process listening on 127.0.0.1:[`Proxy::port`].
///
/// Dropping it sends SIGTERM, then SIGKILL after 2 s. When dropped during a
/// panic (a failing test), the tail of the proxy's log is printed to stderr,
/// which the test runner shows with the failure.
pub struct Proxy {
    /// The port the proxy listens on (127.0.0.1).
    pub port: u16,
    child: Option<Child>,
    log_path: PathBuf,
    // Dropped after the process is stopped in `Drop::drop`.
    dir: TempDir,
}

impl Proxy {
    /// Starts slotbridge for `cluster` with default options; see
    /// [`Proxy::start_with`].
    pub fn start(cluster: &Cluster) -> Proxy {
        Proxy::start_with(cluster, &[])
    }

    /// Runs the slotbridge binary with `--listen 127.0.0.1:<free port> --seeds
    /// <cluster.seeds()>` followed by `extra_args`, logging stdout and stderr
    /// to a file (`RUST_LOG=info` unless the test process sets `RUST_LOG`), and
    /// waits until it answers `DBSIZE` with an integer (polling every 50 ms, up
    /// to 20 s; panics with the log tail otherwise). If the proxy exits with
    /// "Address already in use" it is restarted on another port.
    pub fn start_with(cluster: &Cluster, extra_args: &[&str]) -> Proxy {
        Proxy::start_with_seeds(&cluster.seeds(), extra_args)
    }

    /// Like [`Proxy::start_with`] but with an explicit `--seeds` value (for
    /// example to include a dead seed); still waits for DBSIZE to succeed.
    pub fn start_with_seeds(seeds: &str, extra_args: &[&str]) -> Proxy {
        let binary = proxy_binary();
        let mut proxy = Proxy {
            port: 0,
            child: None,
            log_path: PathBuf::new(),
            dir: TempDir::new("proxy"),
        };
        let mut last = String::new();
        for attempt in 0..5 {
            proxy.port = free_port();
            proxy.log_path = proxy.dir.path().join(format!("slotbridge-{attempt}.log"));
            let log = File::create(&proxy.log_path).expect("create proxy log");
            let mut cmd = Command::new(&binary);
            cmd.arg("--listen")
                .arg(format!("127.0.0.1:{}", proxy.port))
                .arg("--seeds")
                .arg(seeds)
                .args(extra_args)
                .current_dir(proxy.dir.path())
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log);
            if env::var_os("RUST_LOG").is_none() {
                cmd.env("RUST_LOG", "info");
            }
            proxy.child = Some(
                spawn_process(cmd)
                    .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display())),
            );
            match proxy.wait_ready(Duration::from_secs(20)) {
                Ok(()) => return proxy,
                // It exited because its port was taken: try another port.
                Err(log) => {
                    proxy.child = None;
                    last = log;
                }
            }
        }
        panic!("slotbridge kept failing to bind a port; last log:\n{last}");
    }

    /// Waits for the proxy to answer DBSIZE with an integer. Returns `Err(log)`
    /// if it exited because its port was in use; panics on any other failure.
    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            let child = self.child.as_mut().expect("proxy child");
            if let Ok(Some(status)) = child.try_wait() {
                let log = self.log();
                if mentions_port_in_use(&log) {
                    return Err(log);
                }
                panic!(
                    "slotbridge exited with {status} before becoming ready; log:\n{}",
                    file_tail(&self.log_path, 60)
                );
            }
            match dbsize_probe(self.port) {
                Ok(reply) if reply.starts_with(b":") => return Ok(()),
                Ok(reply) => last = format!("DBSIZE replied {}", escape(&reply)),
                Err(e) => last = format!("DBSIZE failed: {e}"),
            }
            if Instant::now() >= deadline {
                panic!(
                    "slotbridge on port {} not ready after {timeout:?} ({last}); log tail:\n{}",
                    self.port,
                    file_tail(&self.log_path, 60)
                );
            }
            thread::sleep(POLL);
        }
    }

    /// A client connection to the proxy (5 s connect timeout, 30 s read/write
    /// timeouts). Note that the `redis` crate pipelines `CLIENT SETINFO` on
    /// connect and ignores its replies.
    pub fn conn(&self) -> redis::Connection {
        connect(self.port)
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The proxy's log (stdout and stderr) so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Path of the proxy's log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Polls the log every 50 ms until it contains `needle`; false on timeout.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(POLL);
        }
    }

    /// The proxy's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running (false once it exited or was stopped).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit,
    /// returning its exit status (`None` if it did not exit in time, in which
    /// case it is still running and will be killed on drop).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        terminate_child(child);
        wait_child_timeout(child, timeout)
    }
}

/// Sends one DBSIZE to 127.0.0.1:`port` and returns the first reply line.
fn dbsize_probe(port: u16) -> io::Result<Vec<u8>> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"*1\r\n$6\r\nDBSIZE\r\n")?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 256];
    while !reply.ends_with(b"\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("connection closed after {}", escape(&reply)),
            ));
        }
        reply.extend_from_slice(&buf[..n]);
    }
    Ok(reply)
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                terminate_child(&mut child);
                if wait_child_timeout(&mut child, Duration::from_secs(2)).is_none() {
                    let _ = child.kill();
                }
            }
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "--- slotbridge log tail (port {}, {}) ---\n{}",
                self.port,
                self.log_path.display(),
                file_tail(&self.log_path, 80)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// RawClient
// ---------------------------------------------------------------------------

/// Default timeout of [`RawClient`] reads.
const RAW_TIMEOUT: Duration = Duration::from_secs(5);

/// A raw TCP client: sends exact bytes and reads exact bytes, for golden-byte
/// tests. Bytes read ahead (by [`RawClient::is_closed`]) are kept for later
/// reads.
pub struct RawClient {
    stream: TcpStream,
    pending: Vec<u8>,
    eof: bool,
}

impl RawClient {
    /// Connects to 127.0.0.1:`port` (5 s timeout; panics on failure).
    pub fn connect(port: u16) -> RawClient {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let stream = TcpStream::connect_timeout(&addr, RAW_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        stream
            .set_write_timeout(Some(RAW_TIMEOUT))
            .expect("set write timeout");
        RawClient {
            stream,
            pending: Vec::new(),
            eof: false,
        }
    }

    /// Writes all of `bytes` (panics on error).
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("send {}: {e}", escape(bytes)));
    }

    /// Reads one chunk into `pending`, waiting at most until `deadline`.
    /// Returns false on timeout or EOF (setting `eof`).
    fn fill(&mut self, deadline: Instant) -> bool {
        if self.eof {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let wait = (deadline - now).max(Duration::from_millis(1));
        self.stream
            .set_read_timeout(Some(wait))
            .expect("set read timeout");
        let mut buf = [0u8; 16 * 1024];
        match self.stream.read(&mut buf) {
            Ok(0) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                true
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                false
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(_) => {
                // Reset or similar: the peer is gone.
                self.eof = true;
                false
            }
        }
    }

    /// Reads up to `n` bytes within `timeout`; `Err` carries what was read.
    fn read_n(&mut self, n: usize, timeout: Duration) -> Result<Vec<u8>, Vec<u8>> {
        let deadline = Instant::now() + timeout;
        while self.pending.len() < n {
            if !self.fill(deadline) && (self.eof || Instant::now() >= deadline) {
                return Err(std::mem::take(&mut self.pending));
            }
        }
        Ok(self.pending.drain(..n).collect())
    }

    /// Reads exactly `n` bytes, waiting up to 5 s; panics (showing the bytes
    /// received so far) on timeout or when the connection closes first.
    pub fn read_exact_bytes(&mut self, n: usize) -> Vec<u8> {
        match self.read_n(n, RAW_TIMEOUT) {
            Ok(bytes) => bytes,
            Err(partial) => panic!(
                "wanted {n} bytes, got {} before {}: {}",
                partial.len(),
                if self.eof { "EOF" } else { "a 5 s timeout" },
                escape(&partial)
            ),
        }
    }

    /// Reads `expected.len()` bytes (5 s timeout) and asserts they equal
    /// `expected`, showing both escaped on mismatch.
    pub fn expect(&mut self, expected: &[u8]) {
        match self.read_n(expected.len(), RAW_TIMEOUT) {
            Ok(got) if got == expected => {}
            Ok(got) => {
                // Grab whatever follows to make the message more useful.
                let more = self.read_available(Duration::from_millis(50));
                panic!(
                    "reply mismatch\n  expected: {}\n  got:      {}\n  (then:    {})",
                    escape(expected),
                    escape(&got),
                    escape(&more)
                );
            }
            Err(partial) => panic!(
                "reply too short ({})\n  expected: {}\n  got:      {}",
                if self.eof {
                    "connection closed"
                } else {
                    "timed out after 5 s"
                },
                escape(expected),
                escape(&partial)
            ),
        }
    }

    /// Sends `req`, then [`RawClient::expect`]s `expected`.
    pub fn roundtrip(&mut self, req: &[u8], expected: &[u8]) {
        self.send(req);
        self.expect(expected);
    }

    /// What one `read` returns (waiting up to `wait` for it), plus bytes
    /// already read ahead: shows how the server split its writes.
    pub fn read_once(&mut self, wait: Duration) -> Vec<u8> {
        if self.pending.is_empty() {
            self.fill(Instant::now() + wait);
        }
        std::mem::take(&mut self.pending)
    }

    /// Reads exactly one whole reply (RESP2 or RESP3, any shape), waiting
    /// up to 5 s; panics (showing what arrived) otherwise.
    pub fn read_reply(&mut self) -> Vec<u8> {
        self.read_reply_within(Duration::from_secs(5))
    }

    /// [`RawClient::read_reply`], waiting up to `wait`.
    pub fn read_reply_within(&mut self, wait: Duration) -> Vec<u8> {
        let mut got = Vec::new();
        let deadline = Instant::now() + wait;
        while reply_len(&got).is_none() && Instant::now() < deadline {
            got.extend(self.read_once(Duration::from_millis(500)));
        }
        assert_eq!(reply_len(&got), Some(got.len()), "{}", escape(&got));
        got
    }

    /// Returns everything that arrives within `wait` (plus bytes already read
    /// ahead); returns early if the connection closes.
    pub fn read_available(&mut self, wait: Duration) -> Vec<u8> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline && !self.eof {
            self.fill(deadline);
        }
        std::mem::take(&mut self.pending)
    }

    /// True when the server has closed the connection (EOF or reset), waiting
    /// up to 2 s for that to happen. Data arriving meanwhile is kept for later
    /// reads. Use [`RawClient::is_closed_within`] to choose the wait.
    pub fn is_closed(&mut self) -> bool {
        self.is_closed_within(Duration::from_secs(2))
    }

    /// Like [`RawClient::is_closed`], waiting at most `wait`.
    pub fn is_closed_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while !self.eof && Instant::now() < deadline {
            self.fill(deadline);
        }
        self.eof
    }

    /// The underlying stream (e.g. to shut down one direction).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

// ---------------------------------------------------------------------------
// Keys and slots
// ---------------------------------------------------------------------------

/// CRC16/XMODEM (polynomial 0x1021, initial value 0), as used by Redis Cluster.
fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash slot of `key`: CRC16 of the key, or of the part between the first
/// `{` and the next `}` when that part is non-empty, modulo 16384.
pub fn slot_of(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            match rest.iter().position(|&b| b == b'}') {
                Some(len) if len > 0 => Some(&rest[..len]),
                _ => None,
            }
        })
        .unwrap_or(key);
    crc16_xmodem(hashed) % SLOTS
}

/// Panics if every key starting with `prefix` hashes to the same slot.
fn assert_prefix_spreads(prefix: &str) {
    let slots: HashSet<u16> = (0..8)
        .map(|j| slot_of(format!("{prefix}{j}").as_bytes()))
        .collect();
    assert!(
        slots.len() > 1,
        "prefix {prefix:?} pins every key to one slot (hash tag?)"
    );
}

/// `n` keys (`<prefix><i>-<j>`) whose slots are all different and spread
/// evenly over the slot space: key `i` hashes to (or, for small `n`, within 64
/// slots of) the middle of the `i`-th of `n` equal slices. So with the even
/// split made by [`Cluster::start`], `n >= masters` keys land on every master.
/// Deterministic for a given `prefix`, which must not contain a hash tag.
pub fn keys_in_distinct_slots(n: usize, prefix: &str) -> Vec<String> {
    assert!(n <= usize::from(SLOTS), "only 16384 slots exist");
    assert_prefix_spreads(prefix);
    let slots = SLOTS as usize;
    let tolerance = (slots / (2 * n.max(1))).saturating_sub(1).min(64) as i64;
    let mut used = HashSet::new();
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let center = ((2 * i + 1) * slots / (2 * n)) as i64;
        let mut found = None;
        for j in 0..50_000_000u64 {
            let key = format!("{prefix}{i}-{j}");
            let slot = slot_of(key.as_bytes());
            if (i64::from(slot) - center).abs() <= tolerance && used.insert(slot) {
                found = Some(key);
                break;
            }
        }
        keys.push(found.unwrap_or_else(|| panic!("no key found near slot {center}")));
    }
    keys
}

/// A key (`<prefix><j>`) that hashes to `slot`. Deterministic for a given
/// `prefix`, which must not contain a hash tag.
pub fn key_for_slot(slot: u16, prefix: &str) -> String {
    assert!(slot < SLOTS, "slot {slot} out of range");
    assert_prefix_spreads(prefix);
    (0..50_000_000u64)
        .map(|j| format!("{prefix}{j}"))
        .find(|k| slot_of(k.as_bytes()) == slot)
        .unwrap_or_else(|| panic!("no key with prefix {prefix:?} hashes to slot {slot}"))
}

/// What [`run_logged`] saw of a program it ran.
pub struct AppRun {
    /// Whether it exited with status 0 before the timeout.
    pub ok: bool,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error (with a note when it was killed).
    pub stderr: String,
}

/// Runs an app's `program args` in `dir` (with `envs` set), standard output
/// and error to `<tag>.stdout`/`.stderr` in `logs`, killing it after
/// `timeout`. A program that cannot start is a failed run.
pub fn run_logged(
    program: &Path,
    args: &[&str],
    dir: &Path,
    envs: &[(&str, &Path)],
    logs: &Path,
    tag: &str,
    timeout: Duration,
) -> AppRun {
    let out_path = logs.join(format!("{tag}.stdout"));
    let err_path = logs.join(format!("{tag}.stderr"));
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("create the stdout log"))
        .stderr(File::create(&err_path).expect("create the stderr log"));
    for (name, value) in envs {
        command.env(name, value);
    }
    let Ok(mut child) = command.spawn() else {
        return AppRun {
            ok: false,
            stdout: String::new(),
            stderr: format!("cannot run {}", program.display()),
        };
    };
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let mut stderr = fs::read_to_string(&err_path).unwrap_or_default();
    if status.is_none() {
        stderr.push_str(&format!("\n<killed after {timeout:?}>"));
    }
    AppRun {
        ok: status.is_some_and(|s| s.success()),
        stdout,
        stderr,
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------
// Proxies started by hand, config files, waiting
// ---------------------------------------------------------------------------

/// Writes `text` as `slotbridge.toml` in `dir`; returns its path.
pub fn write_config(dir: &TempDir, text: &str) -> String {
    let path = dir.path().join("slotbridge.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// A Lua script that keeps its node busy for `ARGV[1]` microseconds and
/// returns 1. It measures with `os.clock()` where the server has it (7.2
/// on, where `TIME` stands still inside a script) and with `TIME` before.
pub const BUSY_SCRIPT: &str = "local ok, clock = pcall(function() return os.clock end) \
    local function now() \
      if ok and clock then return clock() * 1000000 end \
      local t = redis.call('TIME') return t[1] * 1000000 + t[2] \
    end \
    local start = now() \
    repeat until now() - start > tonumber(ARGV[1]) \
    return 1";

/// Polls `f` every 50 ms until it is true; panics after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// The version of the `redis-server` the tests start (the first on
/// `PATH`): a few of the replies asserted differ between Redis 7.0, newer
/// Redis and Valkey. CI runs Debian's Redis 7.0.
pub struct ServerVersion {
    /// As `redis-server --version` prints it, such as `7.0.15`.
    pub text: String,
    /// Major and minor version of the Redis it answers as (Valkey: 7.2).
    pub redis: (u32, u32),
    /// A Valkey server.
    pub valkey: bool,
    /// Its own major, minor and patch version (Valkey's for Valkey).
    pub own: (u32, u32, u32),
}

impl ServerVersion {
    /// Whether the server is Valkey `major.minor.patch` or later.
    pub fn valkey_at_least(&self, major: u32, minor: u32, patch: u32) -> bool {
        self.valkey && self.own >= (major, minor, patch)
    }

    /// Whether the server answers as Redis `major.minor` or later.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        self.redis >= (major, minor)
    }

    /// `INFO`'s line naming a standalone server (Valkey 8 names the field
    /// `server_mode`).
    pub fn standalone_mode_line(&self) -> &'static str {
        if self.valkey {
            "server_mode:standalone"
        } else {
            "redis_mode:standalone"
        }
    }

    /// The `NOSCRIPT` error (Valkey's has no advice).
    pub fn noscript(&self) -> &'static [u8] {
        if self.valkey {
            b"-NOSCRIPT No matching script.\r\n"
        } else {
            b"-NOSCRIPT No matching script. Please use EVAL.\r\n"
        }
    }

    /// What a script's call errors say they called (Valkey leaves out
    /// "Redis").
    pub fn script_callee(&self) -> &'static str {
        if self.valkey {
            "command"
        } else {
            "Redis command"
        }
    }

    /// The error for `command` (`multi`, `watch`) inside a transaction:
    /// Redis's own `redis_text`, or Valkey's one text (whose `EXEC` then
    /// aborts), which names the command from Valkey 9 on.
    pub fn inside_multi(&self, command: &str, redis_text: &[u8]) -> Vec<u8> {
        if self.valkey_at_least(9, 0, 0) {
            format!("-ERR Command '{command}' not allowed inside a transaction\r\n").into_bytes()
        } else if self.valkey {
            b"-ERR Command not allowed inside a transaction\r\n".to_vec()
        } else {
            redis_text.to_vec()
        }
    }

    /// Redis's `NOPERM` text for `user` running `command` (its wording
    /// changed in 7.2).
    pub fn noperm(&self, user: &str, command: &str) -> String {
        let who = if self.at_least(7, 2) {
            format!("User {user}")
        } else {
            "this user".to_string()
        };
        format!("-NOPERM {who} has no permissions to run the '{command}' command\r\n")
    }
}

/// The [`ServerVersion`] of the `redis-server` on `PATH`.
pub fn server_version() -> &'static ServerVersion {
    static VERSION: OnceLock<ServerVersion> = OnceLock::new();
    VERSION.get_or_init(|| {
        let out = Command::new("redis-server")
            .arg("--version")
            .output()
            .expect("cannot run redis-server --version");
        let line = String::from_utf8_lossy(&out.stdout).into_owned();
        let text = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("v="))
            .unwrap_or_else(|| panic!("no version in {line:?}"))
            .to_string();
        let valkey = line.starts_with("Valkey");
        let mut parts = text.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let mut part = || parts.next().unwrap_or(0);
        let own = (part(), part(), part());
        let redis = if valkey { (7, 2) } else { (own.0, own.1) };
        ServerVersion {
            text,
            redis,
            valkey,
            own,
        }
    })
}

/// A standalone `redis-server` (no cluster) on a free port: the reference
/// replies through the proxy are compared with.
pub struct Standalone {
    child: Child,
    /// Its port (127.0.0.1).
    pub port: u16,
}

impl Standalone {
    /// Starts it with its files in `dir`, without persistence, and waits
    /// until it accepts connections.
    pub fn start(dir: &TempDir) -> Standalone {
        Standalone::start_with(dir, &[])
    }

    /// [`Standalone::start`] with more `redis-server` arguments.
    pub fn start_with(dir: &TempDir, extra_args: &[&str]) -> Standalone {
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", dir.path().to_str().unwrap()])
            .args(extra_args)
            .stdout(Stdio::null());
        let child = spawn_process(cmd).expect("redis-server");
        let server = Standalone { child, port };
        wait_until("the reference redis", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        server
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A proxy process started without waiting for it to be usable.
pub struct Spawned {
    child: Child,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    log: PathBuf,
    _dir: TempDir,
}

impl Spawned {
    /// Runs the binary with `--listen 127.0.0.1:<free port>` and `args`
    /// (and `env`), logging to a file, and waits until the port accepts
    /// connections (10 s at most).
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Spawned {
        let dir = TempDir::new("ops-proxy");
        let port = free_port();
        let log = dir.path().join("proxy.log");
        let file = std::fs::File::create(&log).unwrap();
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(proxy_binary());
        cmd.arg("--listen").arg(&listen).args(args);
        cmd.env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null());
        let child = spawn_process(cmd).unwrap();
        let s = Spawned {
            child,
            port,
            log,
            _dir: dir,
        };
        wait_until("the proxy to listen", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        s
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls the log until it contains `needle`; false after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(POLL);
        }
        true
    }

    /// Sends the process `signal` (`"HUP"`, `"TERM"`, ...).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The length of the first complete RESP2/RESP3 reply in `buf`, if any.
pub fn reply_len(buf: &[u8]) -> Option<usize> {
    fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let end = buf.get(at..)?.windows(2).position(|w| w == b"\r\n")? + at;
        Some((&buf[at..end], end + 2))
    }
    fn one(buf: &[u8], at: usize) -> Option<usize> {
        let (head, next) = line(buf, at)?;
        let n = || std::str::from_utf8(&head[1..]).ok()?.parse::<i64>().ok();
        match head.first()? {
            b'$' | b'=' | b'!' => match n()? {
                -1 => Some(next),
                len => (buf.len() >= next + len as usize + 2).then_some(next + len as usize + 2),
            },
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let count = n()?;
                let items = if matches!(head[0], b'%' | b'|') {
                    count * 2
                } else {
                    count.max(0)
                };
                (0..items).try_fold(next, |at, _| one(buf, at))
            }
            _ => Some(next),
        }
    }
    one(buf, 0)
}
