//! Chaos soak: mixed load from many clients through slotbridge while the
//! cluster behind it loses masters, reshards and replaces nodes; a checker
//! verifies every reply and, at the end, every acknowledged write.
//!
//! Run it with `make soak` (see the Makefile), or by hand:
//!
//! ```text
//! cargo build --release --bins --examples
//! SLOTBRIDGE_BIN=target/release/slotbridge target/release/examples/soak \
//!     --minutes 3 --clients 16 [--wait-replicas 1]
//! ```
//!
//! It starts a real 3-master, 3-replica cluster and a slotbridge process on
//! free loopback ports (the integration-test harness in `tests/common`), runs
//! `--clients` client threads, each owning its keys and counters, and every
//! `--interval` seconds one chaos action: SIGKILL a master (its replica takes
//! over; the old master is restarted and rejoins as a replica), reshard a
//! few hundred slots between two masters (with Valkey 9, half of them by
//! its atomic `CLUSTER MIGRATESLOTS`), or replace a master by a brand-new
//! node (the slots move over, the old node is forgotten and killed).
//!
//! The checker knows every write each client sent and whether it was
//! acknowledged, failed, or is unknown (an error reply or a lost
//! connection). Every value names its key and a sequence number, so a reply
//! meant for another request is recognised at once. It reports:
//!
//! * `misrouted`: a reply that cannot belong to its request (another key's
//!   value, a value never written, a wrong reply type). Must be 0.
//! * `lost`: acknowledged writes (SET, MSET, INCR) that later read as an
//!   older value or as missing. Redis replicates asynchronously, so a master
//!   killed right after acknowledging a write may lose it; a loss counts as
//!   inside the documented window when a master was killed within `--window`
//!   ms after the write was acknowledged. Losses outside the window fail the
//!   run. With `--wait-replicas 1` the proxy follows writes with `WAIT`, which
//!   narrows the window to writes whose WAIT timed out.
//! * client-visible errors by kind (failover gaps: the proxy fails fast or
//!   retries within its deadline) and throughput.
//!
//! Exit status: 0 when nothing was misrouted and no loss is outside the
//! window, 1 otherwise.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{Cluster, ClusterOptions, Proxy, TempDir};
use redis::Value;

/// Keys per client.
const KEYS: u64 = 256;
/// Counters per client.
const COUNTERS: u64 = 4;
/// Keys per MSET/MGET.
const MULTI: usize = 4;

struct Options {
    minutes: f64,
    clients: usize,
    interval: Duration,
    wait_replicas: u32,
    window: Duration,
    seed: u64,
}

fn parse_options() -> Options {
    let mut o = Options {
        minutes: 3.0,
        clients: 16,
        interval: Duration::from_secs(6),
        wait_replicas: 0,
        window: Duration::from_millis(1000),
        seed: std::process::id() as u64,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || -> String {
            it.next()
                .cloned()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        let num = |v: String| -> f64 {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("{flag}: '{v}' is not a number")))
        };
        match flag.as_str() {
            "--minutes" => o.minutes = num(value()),
            "--clients" => o.clients = num(value()) as usize,
            "--interval" => o.interval = Duration::from_secs_f64(num(value())),
            "--wait-replicas" => o.wait_replicas = num(value()) as u32,
            "--window" => o.window = Duration::from_millis(num(value()) as u64),
            "--seed" => o.seed = num(value()) as u64,
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if o.clients == 0 || o.minutes <= 0.0 {
        usage("--clients and --minutes must be positive");
    }
    o
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("soak: {problem}");
    }
    eprintln!(
        "usage: soak [--minutes 3] [--clients 16] [--interval 6] [--wait-replicas 0] \
         [--window 1000] [--seed N]\n(SLOTBRIDGE_BIN must point at the slotbridge binary)"
    );
    std::process::exit(2)
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What a client knows about one of its keys.
#[derive(Default, Clone)]
struct KeyModel {
    /// Sequence number of the last acknowledged write (None: never written
    /// or observed missing).
    acked: Option<u64>,
    acked_at: Option<Instant>,
    /// Writes after `acked` whose outcome is unknown.
    unknown: Vec<u64>,
}

/// What a client knows about one of its counters.
#[derive(Default, Clone)]
struct CounterModel {
    value: i64,
    acked_at: Option<Instant>,
    /// INCRs after `value` whose outcome is unknown.
    unknown: i64,
}

/// One acknowledged write that was later found missing or older.
struct Loss {
    acked_at: Instant,
    what: String,
}

#[derive(Default)]
struct Report {
    ops: BTreeMap<&'static str, u64>,
    acked_writes: u64,
    errors: BTreeMap<String, u64>,
    losses: Vec<Loss>,
    misrouted: Vec<String>,
}

struct Client {
    id: usize,
    url: String,
    conn: Option<redis::Connection>,
    rng: Rng,
    seq: u64,
    keys: Vec<KeyModel>,
    counters: Vec<CounterModel>,
    report: Report,
}

impl Client {
    fn key(&self, k: u64) -> String {
        format!("soak:{}:{k}", self.id)
    }

    fn value(&self, k: u64, seq: u64) -> String {
        format!("{}:{k}:{seq}", self.id)
    }

    fn counter(&self, c: u64) -> String {
        format!("soak:{}:ctr:{c}", self.id)
    }

    /// Runs one command, reconnecting on I/O errors; `Err` carries a
    /// normalised error kind.
    fn run(&mut self, cmd: &redis::Cmd) -> Result<Value, String> {
        if self.conn.is_none() {
            let client = redis::Client::open(self.url.as_str()).map_err(kind)?;
            let conn = client
                .get_connection_with_timeout(Duration::from_secs(5))
                .map_err(kind)?;
            conn.set_read_timeout(Some(Duration::from_secs(20)))
                .map_err(kind)?;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().ok_or("no connection")?;
        match cmd.query::<Value>(conn) {
            Ok(Value::ServerError(e)) => Err(server_error_kind(&e)),
            Ok(v) => Ok(v),
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    self.conn = None;
                }
                Err(kind(e))
            }
        }
    }

    fn error(&mut self, kind: String) {
        *self.report.errors.entry(kind).or_default() += 1;
    }

    fn misrouted(&mut self, what: String) {
        if self.report.misrouted.len() < 50 {
            eprintln!("soak: MISROUTED: {what}");
        }
        self.report.misrouted.push(what);
    }

    fn count(&mut self, op: &'static str) {
        *self.report.ops.entry(op).or_default() += 1;
    }

    fn write_keys(&mut self, ks: &[u64]) {
        let seqs: Vec<u64> = ks
            .iter()
            .map(|_| {
                self.seq += 1;
                self.seq
            })
            .collect();
        let mut cmd = redis::cmd(if ks.len() == 1 { "SET" } else { "MSET" });
        for (&k, &s) in ks.iter().zip(&seqs) {
            cmd.arg(self.key(k)).arg(self.value(k, s));
        }
        self.count(if ks.len() == 1 { "set" } else { "mset" });
        match self.run(&cmd) {
            Ok(Value::Okay) => {
                let now = Instant::now();
                for (&k, &s) in ks.iter().zip(&seqs) {
                    let m = &mut self.keys[k as usize];
                    m.acked = Some(s);
                    m.acked_at = Some(now);
                    m.unknown.clear();
                }
                self.report.acked_writes += ks.len() as u64;
            }
            Ok(other) => self.misrouted(format!("{cmd:?} answered {other:?}")),
            Err(e) => {
                self.error(e);
                for (&k, &s) in ks.iter().zip(&seqs) {
                    self.keys[k as usize].unknown.push(s);
                }
            }
        }
    }

    /// Checks a read of key `k` against the model and updates the model.
    fn check_read(&mut self, k: u64, got: &Value) {
        let key = self.key(k);
        let seen = match got {
            Value::Nil => None,
            Value::BulkString(b) => {
                let text = String::from_utf8_lossy(b).into_owned();
                let mut parts = text.split(':');
                let (w, kk, s) = (parts.next(), parts.next(), parts.next());
                let own = w == Some(&self.id.to_string()) && kk == Some(&k.to_string());
                match s.and_then(|s| s.parse::<u64>().ok()) {
                    Some(s) if own && parts.next().is_none() => Some(s),
                    _ => {
                        self.misrouted(format!("GET {key} returned {text:?}"));
                        return;
                    }
                }
            }
            other => {
                self.misrouted(format!("GET {key} returned {other:?}"));
                return;
            }
        };
        let m = self.keys[k as usize].clone();
        let fine = seen == m.acked || seen.is_some_and(|s| m.unknown.contains(&s));
        if !fine {
            let older = match (seen, m.acked) {
                (None, Some(_)) => true,
                (Some(s), Some(a)) => s < a,
                _ => false,
            };
            if older {
                self.report.losses.push(Loss {
                    acked_at: m.acked_at.unwrap_or_else(Instant::now),
                    what: format!("{key}: acknowledged seq {:?}, read {seen:?}", m.acked),
                });
            } else {
                self.misrouted(format!(
                    "GET {key} returned seq {seen:?}; acknowledged {:?}, unknown {:?}",
                    m.acked, m.unknown
                ));
                return;
            }
        }
        let m = &mut self.keys[k as usize];
        if m.acked != seen {
            m.acked = seen;
            m.acked_at = Some(Instant::now());
        }
        m.unknown.retain(|&u| seen.is_some_and(|s| u > s));
    }

    fn read_keys(&mut self, ks: &[u64]) {
        let mut cmd = redis::cmd(if ks.len() == 1 { "GET" } else { "MGET" });
        for &k in ks {
            cmd.arg(self.key(k));
        }
        self.count(if ks.len() == 1 { "get" } else { "mget" });
        match self.run(&cmd) {
            Ok(Value::Array(items)) if ks.len() > 1 && items.len() == ks.len() => {
                for (&k, v) in ks.iter().zip(&items) {
                    self.check_read(k, v);
                }
            }
            Ok(v) if ks.len() == 1 => self.check_read(ks[0], &v),
            Ok(other) => self.misrouted(format!("{cmd:?} answered {other:?}")),
            Err(e) => self.error(e),
        }
    }

    fn check_counter(&mut self, c: u64, got: i64, incremented: bool) {
        let m = self.counters[c as usize].clone();
        let low = m.value + i64::from(incremented);
        let high = low + m.unknown;
        if got < low {
            let lost = low - got;
            for _ in 0..lost {
                self.report.losses.push(Loss {
                    acked_at: m.acked_at.unwrap_or_else(Instant::now),
                    what: format!("{}: acknowledged {}, read {got}", self.counter(c), m.value),
                });
            }
        } else if got > high {
            self.misrouted(format!(
                "{} is {got}, expected {low}..={high}",
                self.counter(c)
            ));
            return;
        }
        let m = &mut self.counters[c as usize];
        m.value = got;
        m.acked_at = Some(Instant::now());
        m.unknown = 0;
    }

    fn incr(&mut self, c: u64) {
        let cmd = redis::cmd("INCR").arg(self.counter(c)).clone();
        self.count("incr");
        match self.run(&cmd) {
            Ok(Value::Int(n)) => {
                self.report.acked_writes += 1;
                self.check_counter(c, n, true);
            }
            Ok(other) => self.misrouted(format!("INCR {} answered {other:?}", self.counter(c))),
            Err(e) => {
                self.error(e);
                self.counters[c as usize].unknown += 1;
            }
        }
    }

    fn read_counter(&mut self, c: u64) {
        let cmd = redis::cmd("GET").arg(self.counter(c)).clone();
        match self.run(&cmd) {
            Ok(Value::Nil) => self.check_counter(c, 0, false),
            Ok(Value::BulkString(b)) => match String::from_utf8_lossy(&b).parse::<i64>() {
                Ok(n) => self.check_counter(c, n, false),
                Err(_) => self.misrouted(format!("GET {} returned {b:?}", self.counter(c))),
            },
            Ok(other) => self.misrouted(format!("GET {} answered {other:?}", self.counter(c))),
            Err(e) => self.error(e),
        }
    }

    fn distinct_keys(&mut self, n: usize) -> Vec<u64> {
        let mut ks = Vec::with_capacity(n);
        while ks.len() < n {
            let k = self.rng.below(KEYS);
            if !ks.contains(&k) {
                ks.push(k);
            }
        }
        ks
    }

    fn step(&mut self) {
        let r = self.rng.below(100);
        match r {
            0..=34 => {
                let k = self.rng.below(KEYS);
                self.write_keys(&[k]);
            }
            35..=59 => {
                let k = self.rng.below(KEYS);
                self.read_keys(&[k]);
            }
            60..=69 => {
                let ks = self.distinct_keys(MULTI);
                self.write_keys(&ks);
            }
            70..=84 => {
                let ks = self.distinct_keys(MULTI);
                self.read_keys(&ks);
            }
            _ => {
                let c = self.rng.below(COUNTERS);
                self.incr(c);
            }
        }
    }

    /// Reads back every key and counter (retrying errors for a while).
    fn verify_all(&mut self) {
        for k in 0..KEYS {
            for attempt in 0.. {
                let before = self.report.errors.values().sum::<u64>();
                self.read_keys(&[k]);
                if self.report.errors.values().sum::<u64>() == before || attempt == 20 {
                    break;
                }
                thread::sleep(Duration::from_millis(250));
            }
        }
        for c in 0..COUNTERS {
            self.read_counter(c);
        }
    }
}

fn kind(e: redis::RedisError) -> String {
    let text = match e.code() {
        Some(code) => format!("{code} {}", e.detail().unwrap_or("")),
        None => format!("{:?}", e.kind()),
    };
    normalise(&text)
}

fn server_error_kind(e: &redis::ServerError) -> String {
    normalise(&format!("{} {}", e.code(), e.details().unwrap_or("")))
}

/// Error text with digits masked and cut short, so that kinds group.
fn normalise(text: &str) -> String {
    let masked: String = text
        .chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect();
    let mut out: String = masked.chars().take(70).collect();
    while out.contains("##") {
        out = out.replace("##", "#");
    }
    out
}

enum Action {
    KillMaster { port: u16 },
    Reshard { from: u16, to: u16, slots: usize },
    Migrate { from: u16, to: u16, slots: usize },
    Replace { old: u16, new: u16 },
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::KillMaster { port } => {
                write!(f, "killed master {port}, failed over, restarted it")
            }
            Action::Reshard { from, to, slots } => {
                write!(f, "resharded {slots} slots {from} -> {to}")
            }
            Action::Migrate { from, to, slots } => {
                write!(f, "migrated {slots} slots {from} -> {to} atomically")
            }
            Action::Replace { old, new } => write!(f, "replaced master {old} by new node {new}"),
        }
    }
}

fn chaos_step(cluster: &mut Cluster, rng: &mut Rng) -> (Instant, Action) {
    let masters = cluster.master_ports();
    match rng.below(3) {
        0 => {
            let candidates: Vec<u16> = masters
                .iter()
                .copied()
                .filter(|&m| !cluster.replica_ports(m).is_empty() && cluster.nslots(m) > 0)
                .collect();
            if let Some(&port) = candidates.get(rng.below(candidates.len() as u64) as usize) {
                let at = Instant::now();
                cluster.kill_node(port);
                cluster.wait_ok();
                // Bring the old master back only once the failover has
                // settled: Redis 7.0 nodes that saw it return within a few
                // hundred ms of the election were seen stuck in
                // cluster_state:fail.
                thread::sleep(Duration::from_secs(4));
                cluster.restart_node(port);
                return (at, Action::KillMaster { port });
            }
            reshard(cluster, rng, &masters)
        }
        1 => reshard(cluster, rng, &masters),
        _ => {
            let owners: Vec<u16> = masters
                .iter()
                .copied()
                .filter(|&m| cluster.nslots(m) > 0)
                .collect();
            let old = owners[rng.below(owners.len() as u64) as usize];
            let at = Instant::now();
            let new = cluster.add_node();
            let n = cluster.nslots(old);
            cluster.reshard(old, new, n);
            cluster.remove_node(old);
            (at, Action::Replace { old, new })
        }
    }
}

fn reshard(cluster: &mut Cluster, rng: &mut Rng, masters: &[u16]) -> (Instant, Action) {
    let owners: Vec<u16> = masters
        .iter()
        .copied()
        .filter(|&m| cluster.nslots(m) > 0)
        .collect();
    let from = owners[rng.below(owners.len() as u64) as usize];
    let others: Vec<u16> = owners.iter().copied().filter(|&m| m != from).collect();
    let to = others[rng.below(others.len() as u64) as usize];
    let slots = (cluster.nslots(from) / 3).clamp(1, 500);
    let at = Instant::now();
    // Valkey 9 also moves slots atomically (CLUSTER MIGRATESLOTS): half
    // the reshards use it where the nodes have it.
    if common::server_version().valkey_at_least(9, 0, 0) && rng.below(2) == 0 {
        cluster.migrate_slots_atomically(from, to, slots);
        return (at, Action::Migrate { from, to, slots });
    }
    cluster.reshard(from, to, slots);
    (at, Action::Reshard { from, to, slots })
}

fn main() {
    let opts = parse_options();
    let mut cluster_opts = ClusterOptions::new(3, 1);
    cluster_opts.node_timeout_ms = 2000;
    cluster_opts.timeout = Duration::from_secs(60);
    let mut cluster = Cluster::start_with(cluster_opts);
    let dir = TempDir::new("soak");
    let config = dir.path().join("slotbridge.toml");
    std::fs::write(
        &config,
        format!(
            "[durability]\nwait_replicas = {}\nwait_timeout_ms = 1000\n",
            opts.wait_replicas
        ),
    )
    .expect("write the proxy config");
    let proxy = Proxy::start_with(&cluster, &["--config", config.to_str().unwrap_or("")]);
    eprintln!(
        "soak: cluster {} + proxy 127.0.0.1:{}; {} clients for {} min, chaos every {:?}, wait_replicas {}",
        cluster.seeds(),
        proxy.port,
        opts.clients,
        opts.minutes,
        opts.interval,
        opts.wait_replicas
    );

    let stop = Arc::new(AtomicBool::new(false));
    let reports = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for id in 0..opts.clients {
        let (stop, reports, url) = (stop.clone(), reports.clone(), proxy.url());
        let seed = opts.seed.wrapping_mul(31).wrapping_add(id as u64) | 1;
        workers.push(thread::spawn(move || {
            let mut c = Client {
                id,
                url,
                conn: None,
                rng: Rng(seed),
                seq: 0,
                keys: vec![KeyModel::default(); KEYS as usize],
                counters: vec![CounterModel::default(); COUNTERS as usize],
                report: Report::default(),
            };
            while !stop.load(Ordering::Relaxed) {
                c.step();
            }
            // Wait for the cluster to settle, then verify everything.
            while !STOPPED.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(50));
            }
            c.verify_all();
            reports
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(c.report);
        }));
    }

    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(opts.minutes * 60.0);
    let mut rng = Rng(opts.seed | 1);
    let mut events: Vec<(Instant, Action, Duration)> = Vec::new();
    thread::sleep(Duration::from_secs(2).min(opts.interval));
    let mut chaos_failure = None;
    while Instant::now() + opts.interval < deadline {
        thread::sleep(opts.interval);
        // The harness panics when the cluster does not converge in time;
        // stop the chaos then, but still verify and report.
        let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            chaos_step(&mut cluster, &mut rng)
        }));
        match step {
            Ok((at, action)) => {
                let took = at.elapsed();
                eprintln!(
                    "soak: t={:>5.1}s {action} ({:.1}s)",
                    at.duration_since(started).as_secs_f64(),
                    took.as_secs_f64()
                );
                events.push((at, action, took));
            }
            Err(e) => {
                let why = e
                    .downcast_ref::<String>()
                    .map(|s| s.lines().next().unwrap_or("").to_string())
                    .unwrap_or_else(|| "panic".into());
                eprintln!("soak: chaos stopped: the cluster did not converge: {why}");
                chaos_failure = Some(why);
                break;
            }
        }
    }
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    let load_secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cluster.wait_ok())).is_err() {
        eprintln!("soak: the cluster is not ok after the load; verifying anyway");
    }
    STOPPED.store(true, Ordering::SeqCst);
    for w in workers {
        let _ = w.join();
    }
    let reports = std::mem::take(&mut *reports.lock().unwrap_or_else(|e| e.into_inner()));
    let mut failed = summarise(&opts, &reports, &events, load_secs);
    if let Some(why) = chaos_failure {
        println!("chaos stopped early (a Redis/harness problem, not a proxy one): {why}");
        failed = true;
    }
    drop(proxy);
    drop(cluster);
    std::process::exit(i32::from(failed));
}

/// Set once the cluster is stable again after the load phase.
static STOPPED: AtomicBool = AtomicBool::new(false);

/// Prints the report; returns whether the run failed.
fn summarise(
    opts: &Options,
    reports: &[Report],
    events: &[(Instant, Action, Duration)],
    load_secs: f64,
) -> bool {
    let mut ops: BTreeMap<&str, u64> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut acked = 0;
    let mut misrouted = 0;
    let mut inside = 0;
    let mut outside = Vec::new();
    let mut worst_lag = Duration::ZERO;
    let kills: Vec<Instant> = events
        .iter()
        .filter(|(_, a, _)| matches!(a, Action::KillMaster { .. }))
        .map(|(at, _, _)| *at)
        .collect();
    for r in reports {
        for (k, v) in &r.ops {
            *ops.entry(k).or_default() += v;
        }
        for (k, v) in &r.errors {
            *errors.entry(k.clone()).or_default() += v;
        }
        acked += r.acked_writes;
        misrouted += r.misrouted.len();
        for loss in &r.losses {
            let lag = kills
                .iter()
                .filter(|&&k| k >= loss.acked_at)
                .map(|&k| k - loss.acked_at)
                .min();
            match lag {
                Some(lag) if lag <= opts.window => {
                    inside += 1;
                    worst_lag = worst_lag.max(lag);
                }
                _ => outside.push(loss.what.clone()),
            }
        }
    }
    let total: u64 = ops.values().sum();
    let error_total: u64 = errors.values().sum();
    println!();
    println!(
        "slotbridge chaos soak: {} clients, {:.1} min of load, wait_replicas {}",
        opts.clients,
        load_secs / 60.0,
        opts.wait_replicas
    );
    let count = |f: fn(&Action) -> bool| events.iter().filter(|(_, a, _)| f(a)).count();
    println!(
        "chaos: {} master kills (failover + restart), {} reshards, {} atomic slot migrations, {} node replacements",
        count(|a| matches!(a, Action::KillMaster { .. })),
        count(|a| matches!(a, Action::Reshard { .. })),
        count(|a| matches!(a, Action::Migrate { .. })),
        count(|a| matches!(a, Action::Replace { .. }))
    );
    println!(
        "commands: {total} ({:.0}/s): {}",
        total as f64 / load_secs,
        ops.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("acknowledged writes: {acked}");
    println!(
        "client-visible errors: {error_total} ({:.3}% of commands)",
        100.0 * error_total as f64 / total.max(1) as f64
    );
    for (k, v) in &errors {
        println!("  {v:>7}  {k}");
    }
    println!("misrouted replies: {misrouted}");
    println!(
        "acknowledged writes lost: {} inside the async-replication window (master killed \
         <= {} ms after the ack; worst {} ms), {} outside",
        inside,
        opts.window.as_millis(),
        worst_lag.as_millis(),
        outside.len()
    );
    for what in outside.iter().take(20) {
        println!("  lost outside the window: {what}");
    }
    let failed = misrouted > 0 || !outside.is_empty();
    println!("result: {}", if failed { "FAIL" } else { "PASS" });
    failed
}
