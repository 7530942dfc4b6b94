//! Unmodified Python apps (`tests/python/`) against slotbridge, each
//! configured for ONE Redis server at the proxy's port: the job queues
//! python-rq, Celery (kombu's Redis broker and Celery's Redis result
//! backend) and dramatiq, and a chat room on Django Channels' Redis
//! channel layers.
//!
//! rq, Celery, dramatiq and the default Channels layer run transactions or scripts
//! over keys in many slots, so they need a co-location rule; the rules
//! used are the ones the README gives (read from README.md), so the
//! documented configuration is what is tested. Without its rule, rq's
//! first `enqueue` fails with `CROSSSLOT`. With them: 50 rq jobs and a
//! failing one (in the failed registry), 30 Celery tasks with their
//! results, `celery inspect ping` (remote control over pidbox queues and
//! Pub/Sub), 20 dramatiq tasks with results, a delayed and a
//! dead-lettered one, and a dead worker's messages on two queues given
//! back by maintenance, and group and direct chat messages on both Channels layers
//! (`RedisChannelLayer`, whose scripts build their keys from `ARGV`, and
//! `RedisPubSubChannelLayer`, which needs no rule). See
//! `tests/python/run.py` for the checks.
//!
//! Needs `python3` with `venv`; the pinned packages
//! (`tests/python/requirements.txt`) are installed into
//! `tests/python/.venv` when it is missing. Without `python3 -m venv` the
//! tests are skipped (they pass with a note on stderr).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use common::{run_logged, tail, Cluster, Proxy, TempDir};

/// Outer bound for one `run.py` scenario.
const RUN_TIMEOUT: Duration = Duration::from_secs(240);

/// Outer bound for creating the virtual environment and installing.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

fn app_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

fn venv_python() -> PathBuf {
    app_dir().join(".venv/bin/python")
}

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start(3, 0))
}

/// Runs `program args` in the app directory (see [`common::run_logged`]).
fn run(
    program: &Path,
    args: &[&str],
    logs: &TempDir,
    tag: &str,
    timeout: Duration,
) -> (bool, String, String) {
    let envs = [("APP_LOGS", logs.path())];
    let r = run_logged(program, args, &app_dir(), &envs, logs.path(), tag, timeout);
    (r.ok, r.stdout, r.stderr)
}

/// Creates the virtual environment with the pinned packages unless it is
/// there; false when this machine's Python cannot make one. One lock: the
/// tests of this file run in parallel threads.
fn ensure_venv(logs: &TempDir) -> bool {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _installing = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let marker = app_dir().join(".venv/installed");
    let wanted = fs::read_to_string(app_dir().join("requirements.txt")).unwrap();
    if fs::read_to_string(&marker).is_ok_and(|m| m == wanted) {
        return true;
    }
    let (ok, _, stderr) = run(
        Path::new("python3"),
        &["-m", "venv", "--clear", ".venv"],
        logs,
        "venv",
        INSTALL_TIMEOUT,
    );
    if !ok {
        eprintln!(
            "SKIPPED python tests: `python3 -m venv` failed: {}",
            tail(&stderr, 5)
        );
        return false;
    }
    let (ok, stdout, stderr) = run(
        &venv_python(),
        &[
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
            "requirements.txt",
        ],
        logs,
        "pip",
        INSTALL_TIMEOUT,
    );
    assert!(
        ok,
        "pip install -r tests/python/requirements.txt failed:\n{stdout}\n{stderr}"
    );
    fs::write(&marker, wanted).unwrap();
    true
}

/// The `[[colocate]]` rule named `name` as the README shows it.
fn readme_rule(name: &str) -> String {
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let head = format!("[[colocate]]\nname = \"{name}\"\n");
    let start = readme
        .find(&head)
        .unwrap_or_else(|| panic!("README.md has no [[colocate]] rule named {name}"));
    let end = readme[start..]
        .find("\n\n")
        .map_or(readme.len(), |e| start + e);
    readme[start..end].to_string() + "\n"
}

/// A proxy in front of the shared cluster with `rules` as its configuration.
fn proxy_with(rules: &str, logs: &TempDir, tag: &str) -> Proxy {
    let path = logs.path().join(format!("{tag}.toml"));
    fs::write(&path, rules).unwrap();
    Proxy::start_with(cluster(), &["--config", path.to_str().unwrap()])
}

/// Runs `run.py PORT MODE` and returns its report line, asserting it
/// passed.
fn scenario(proxy: &Proxy, mode: &str, logs: &TempDir) -> String {
    let port = proxy.port.to_string();
    let (ok, stdout, stderr) = run(
        &venv_python(),
        &["run.py", &port, mode],
        logs,
        mode,
        RUN_TIMEOUT,
    );
    let report = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_default()
        .to_string();
    let worker_log = fs::read_to_string(logs.path().join("celery-worker.log")).unwrap_or_default();
    assert!(
        ok && report.contains("\"ok\": true"),
        "run.py {port} {mode} failed\n--- stdout ---\n{stdout}\n--- stderr (tail) ---\n{}\n--- celery worker (tail) ---\n{}\n--- proxy log (tail) ---\n{}",
        tail(&stderr, 40),
        tail(&worker_log, 40),
        tail(&proxy.log(), 40),
    );
    println!("python {mode}: {report}");
    report
}

#[test]
fn python_rq_needs_its_rule_and_runs_with_the_readme_one() {
    let logs = TempDir::new("python-rq");
    if !ensure_venv(&logs) {
        return;
    }
    let plain = Proxy::start(cluster());
    let report = scenario(&plain, "expect-crossslot", &logs);
    assert!(report.contains("don't hash to the same slot"), "{report}");
    let proxy = proxy_with(&readme_rule("rq"), &logs, "rq");
    let report = scenario(&proxy, "rq", &logs);
    assert!(report.contains("\"completed\": 50"), "{report}");
}

#[test]
fn celery_runs_with_the_readme_rule() {
    let logs = TempDir::new("python-celery");
    if !ensure_venv(&logs) {
        return;
    }
    let proxy = proxy_with(&readme_rule("celery"), &logs, "celery");
    let report = scenario(&proxy, "celery", &logs);
    assert!(report.contains("\"completed\": 30"), "{report}");
}

#[test]
fn dramatiq_runs_and_recovers_a_dead_workers_messages_with_the_readme_rule() {
    let logs = TempDir::new("python-dramatiq");
    if !ensure_venv(&logs) {
        return;
    }
    let proxy = proxy_with(&readme_rule("dramatiq"), &logs, "dramatiq");
    let report = scenario(&proxy, "dramatiq", &logs);
    assert!(report.contains(r#""recovered": [2, 2]"#), "{report}");
}

#[test]
fn django_channels_chat_rooms_work_on_both_redis_layers() {
    let logs = TempDir::new("python-channels");
    if !ensure_venv(&logs) {
        return;
    }
    let proxy = proxy_with(&readme_rule("channels"), &logs, "channels");
    for mode in ["channels", "channels-pubsub"] {
        let report = scenario(&proxy, mode, &logs);
        assert!(
            report.contains(r#""texts": ["hi room", "hi room", "hi c", "only a"]"#),
            "{report}"
        );
    }
}
