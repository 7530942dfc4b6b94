//! Unmodified Node apps and clients (`tests/node/`) against slotbridge:
//! a BullMQ app, a Socket.IO chat server, and node-redis's client-side
//! caching.
//!
//! BullMQ is configured for ONE Redis server at the proxy's port, with the
//! default key prefix `bull`. Its Lua scripts touch several keys of a queue
//! (`bull:<queue>:wait`, `bull:<queue>:<id>`, ...) that hash to different
//! slots, so without a co-location rule the first `queue.add` fails with
//! `CROSSSLOT`; with the `bullmq` rule every key of a queue is stored under
//! `{<queue>}` and the whole scenario runs: 1,000 jobs added with `addBulk`,
//! delayed, prioritised, retried with exponential back-off, failing for
//! good; a Worker with concurrency 10 and a QueueEvents listener; every job
//! completes exactly once with the right result, and `getJobCounts` is exact
//! (see `tests/node/run.mjs` for the assertions).
//!
//! A chat server run as two Socket.IO servers sharing rooms through the
//! proxy with `@socket.io/redis-adapter`, classic and sharded Pub/Sub:
//! room messages and broadcasts reach users on both servers,
//! `fetchSockets()`/`serverCount()` work across them, and the servers
//! close cleanly (see `tests/node/sio.mjs`).
//!
//! node-redis 5 with `clientSideCache` (RESP3, `CLIENT TRACKING`) gets
//! the same cache hits, misses and values through the proxy as from one
//! Redis: invalidated when another client writes, emptied by `FLUSHALL`
//! (see `tests/node/csc.mjs`).
//!
//! Needs `node` (20+) and `npm`: `npm ci` runs in `tests/node` when its
//! `node_modules` is missing. Without `node` the tests are skipped (they
//! pass with a note on stderr).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use common::{run_logged, tail, Cluster, Proxy, TempDir};

const RULES: &str = r#"
[[colocate]]
name = "bullmq"
prefix = "bull:"
group_segment = 1
"#;

/// Outer bound for one `node run.mjs` (the script bounds itself at 120 s).
const NODE_TIMEOUT: Duration = Duration::from_secs(180);

/// Outer bound for `npm ci`.
const NPM_TIMEOUT: Duration = Duration::from_secs(300);

fn app_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

fn node_installed() -> bool {
    Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs `program args` in `dir` (see [`common::run_logged`]).
fn run(
    program: &str,
    args: &[&str],
    dir: &Path,
    logs: &TempDir,
    tag: &str,
    timeout: Duration,
) -> (bool, String, String) {
    let r = run_logged(
        Path::new(program),
        args,
        dir,
        &[],
        logs.path(),
        tag,
        timeout,
    );
    (r.ok, r.stdout, r.stderr)
}

/// Installs the pinned packages (from package-lock.json) unless they are
/// there.
///
/// The tests of this file run in parallel threads; one lock makes the
/// first install it and the others wait for it (two `npm ci` in one
/// directory at once remove each other's files).
fn ensure_node_modules(logs: &TempDir) {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _installing = INSTALL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = app_dir();
    let installed = ["bullmq", "redis", "socket.io", "@socket.io/redis-adapter"]
        .iter()
        .all(|p| dir.join(format!("node_modules/{p}/package.json")).exists());
    if installed {
        return;
    }
    let args: &[&str] = if dir.join("package-lock.json").exists() {
        &["ci", "--ignore-scripts", "--no-audit", "--no-fund"]
    } else {
        &["install", "--ignore-scripts", "--no-audit", "--no-fund"]
    };
    let (ok, stdout, stderr) = run("npm", args, &dir, logs, "npm", NPM_TIMEOUT);
    assert!(
        ok,
        "npm {} in {} failed:\n{stdout}\n{stderr}",
        args[0],
        dir.display()
    );
}

/// Runs `node run.mjs PORT MODE` and returns its JSON report, asserting
/// that it printed `"ok":true` and exited 0.
fn run_app(port: u16, mode: &str, logs: &TempDir, proxy: &Proxy) -> serde_json::Value {
    let port = port.to_string();
    let (ok, stdout, stderr) = run(
        "node",
        &["run.mjs", &port, mode],
        &app_dir(),
        logs,
        mode,
        NODE_TIMEOUT,
    );
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    let report: Option<serde_json::Value> = line.and_then(|l| serde_json::from_str(l).ok());
    let passed = ok && report.as_ref().is_some_and(|r| r["ok"] == true);
    assert!(
        passed,
        "node run.mjs {port} {mode} failed\n--- stdout ---\n{stdout}\n--- stderr (tail) ---\n{}\n--- proxy log (tail) ---\n{}",
        tail(&stderr, 40),
        tail(&proxy.log(), 40),
    );
    let report = report.unwrap();
    println!("bullmq {mode}: {report}");
    report
}

#[test]
fn bullmq_needs_the_rule_and_runs_1000_jobs_with_it() {
    if !node_installed() {
        eprintln!("SKIPPED bullmq test: `node` is not installed (needs Node 20+ and npm)");
        return;
    }
    let logs = TempDir::new("bullmq");
    ensure_node_modules(&logs);

    let cluster = Cluster::start(3, 0);
    let plain = Proxy::start(&cluster);
    let config = logs.path().join("slotbridge.toml");
    fs::write(&config, RULES).unwrap();
    let with_rule = Proxy::start_with(&cluster, &["--config", config.to_str().unwrap()]);

    // Without the rule: the first script of `queue.add` is refused.
    let report = run_app(plain.port, "expect-crossslot", &logs, &plain);
    assert!(
        report["error"]
            .as_str()
            .is_some_and(|e| e.contains("CROSSSLOT")),
        "{report}"
    );

    // With the rule: the full scenario.
    let report = run_app(with_rule.port, "full", &logs, &with_rule);
    assert_eq!(report["completed"], 900, "{report}");
    assert_eq!(report["failed"], 100, "{report}");
    assert_eq!(report["counts"]["completed"], 900, "{report}");
    assert_eq!(report["counts"]["failed"], 100, "{report}");
}

/// A BullMQ flow (a parent job and its children, one queue) under the rule.
///
/// Regression test: scripts must see `KEYS[i]` as the client named them
/// (`bull:q:child-0`), because BullMQ stores child names it builds from its
/// `ARGV` prefix in the parent's `:dependencies` set and later removes them
/// with `SREM <parent>:dependencies KEYS[12]`; with stored names there, the
/// parent stayed in `waiting-children` for ever. Flows also run `EVALSHA`
/// inside `MULTI`, where a `NOSCRIPT` cannot be recovered.
#[test]
fn bullmq_flow_parent_completes_after_its_children() {
    if !node_installed() {
        eprintln!("SKIPPED bullmq flow test: `node` is not installed (needs Node 20+ and npm)");
        return;
    }
    let logs = TempDir::new("bullmq-flow");
    ensure_node_modules(&logs);
    let cluster = Cluster::start(3, 0);
    let config = logs.path().join("slotbridge.toml");
    fs::write(&config, RULES).unwrap();
    let with_rule = Proxy::start_with(&cluster, &["--config", config.to_str().unwrap()]);
    let report = run_app(with_rule.port, "flow", &logs, &with_rule);
    assert_eq!(report["counts"]["completed"], 6, "{report}");
}

#[test]
fn node_redis_client_side_caching_works_as_with_one_redis() {
    if !node_installed() {
        eprintln!("SKIPPED node-redis test: `node` is not installed (needs Node 20+ and npm)");
        return;
    }
    let logs = TempDir::new("node-csc");
    ensure_node_modules(&logs);
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&cluster);
    let port = proxy.port.to_string();
    let (ok, stdout, stderr) = run(
        "node",
        &["csc.mjs", &port],
        &app_dir(),
        &logs,
        "csc",
        NODE_TIMEOUT,
    );
    assert!(
        ok,
        "node csc.mjs failed\n{stdout}\n{}\n{}",
        tail(&stderr, 40),
        tail(&proxy.log(), 40)
    );
    // What one Redis 7.0 gives for the same script: the second round from
    // the cache, the third read again after the writes, the fourth after
    // FLUSHALL.
    assert_eq!(
        stdout.trim(),
        r#"{"first":["v1","v1","v1"],"second":["v1","v1","v1"],"third":["v2","v2","v2"],"fourth":[null,null,null],"hits":[3,3,3],"misses":[3,6,9]}"#
    );
}

#[test]
fn socket_io_chat_servers_share_rooms_through_the_proxy() {
    if !node_installed() {
        eprintln!("SKIPPED Socket.IO test: `node` is not installed (needs Node 20+ and npm)");
        return;
    }
    let logs = TempDir::new("node-sio");
    ensure_node_modules(&logs);
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&cluster);
    let port = proxy.port.to_string();
    for mode in ["classic", "sharded"] {
        let (ok, stdout, stderr) = run(
            "node",
            &["sio.mjs", &port, mode],
            &app_dir(),
            &logs,
            mode,
            NODE_TIMEOUT,
        );
        assert!(
            ok && stdout.contains(r#""ok":true"#),
            "node sio.mjs {mode} failed\n{stdout}\n{}\n{}",
            tail(&stderr, 40),
            tail(&proxy.log(), 40)
        );
        println!("socket.io {mode}: {}", stdout.trim());
    }
}
