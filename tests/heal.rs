//! Self-healing topology under fault injection on a real cluster: master
//! failover under write load, resharding under mixed load, node
//! replacement, a dead first seed, an incomplete slot map. In every
//! scenario a checker verifies that every write the proxy acknowledged is
//! readable afterwards with its own value (so no reply went to the wrong
//! request).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{free_port, key_for_slot, slot_of, Cluster, ClusterOptions, Proxy, TempDir};

/// Acknowledged writes: key → (value, when acknowledged).
type Acked = Arc<Mutex<HashMap<String, (String, Instant)>>>;
/// Errors seen by clients, with when.
type Errors = Arc<Mutex<Vec<(Instant, String)>>>;

/// Runs `threads` writers that SET unique keys through the proxy until
/// `stop`; returns the acknowledged writes and the errors seen.
fn start_writers(
    url: String,
    threads: usize,
    stop: Arc<AtomicBool>,
) -> (Acked, Errors, Vec<thread::JoinHandle<()>>) {
    let acked: Acked = Arc::default();
    let errors: Errors = Arc::default();
    let mut handles = Vec::new();
    for t in 0..threads {
        let (url, stop, acked, errors) = (url.clone(), stop.clone(), acked.clone(), errors.clone());
        handles.push(thread::spawn(move || {
            let client = redis::Client::open(url).unwrap();
            let mut conn = client.get_connection().unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w:{t}:{i}");
                let value = format!("v:{t}:{i}");
                match redis::cmd("SET")
                    .arg(&key)
                    .arg(&value)
                    .query::<()>(&mut conn)
                {
                    Ok(()) => {
                        acked.lock().unwrap().insert(key, (value, Instant::now()));
                    }
                    Err(e) => {
                        errors.lock().unwrap().push((Instant::now(), e.to_string()));
                        if e.is_connection_dropped() || e.is_io_error() {
                            conn = client.get_connection().unwrap();
                        }
                    }
                }
                i += 1;
            }
        }));
    }
    (acked, errors, handles)
}

/// Reads every acknowledged key back through the proxy (MGET in batches)
/// and returns the keys whose value is missing or wrong.
fn verify(proxy: &Proxy, acked: &HashMap<String, (String, Instant)>) -> Vec<String> {
    let mut c = proxy.conn();
    let keys: Vec<&String> = acked.keys().collect();
    let mut bad = Vec::new();
    for chunk in keys.chunks(500) {
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(chunk).query(&mut c).unwrap();
        for (k, v) in chunk.iter().zip(values) {
            if v.as_deref() != Some(acked[*k].0.as_str()) {
                bad.push((*k).clone());
            }
        }
    }
    bad
}

#[test]
fn master_failover_under_write_load() {
    let mut cluster = Cluster::start(3, 1);
    let proxy = Proxy::start(&cluster);
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, errors, handles) = start_writers(proxy.url(), 4, stop.clone());
    thread::sleep(Duration::from_millis(700));
    let victim = cluster.node_for_slot(0);
    let victim_slots: Vec<(u16, u16)> = {
        let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut cluster.conn(victim))
            .unwrap();
        slots
            .iter()
            .filter_map(|r| match r {
                redis::Value::Array(v) => match (&v[0], &v[1], &v[2]) {
                    (redis::Value::Int(a), redis::Value::Int(b), redis::Value::Array(m))
                        if m.get(1) == Some(&redis::Value::Int(victim as i64)) =>
                    {
                        Some((*a as u16, *b as u16))
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect()
    };
    let killed_at = Instant::now();
    cluster.kill_node(victim);
    cluster.wait_ok();
    let ok_at = Instant::now();
    // Recovery: a write to the failed master's slots succeeds soon after the
    // cluster reports ok.
    let probe_key = key_for_slot(0, "probe-");
    let mut c = proxy.conn();
    let recovered_at = loop {
        if redis::cmd("SET")
            .arg(&probe_key)
            .arg("x")
            .query::<()>(&mut c)
            .is_ok()
        {
            break Instant::now();
        }
        assert!(ok_at.elapsed() < Duration::from_secs(10), "no recovery");
        thread::sleep(Duration::from_millis(20));
    };
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let recovery = recovered_at.saturating_duration_since(ok_at);
    let errors = errors.lock().unwrap().clone();
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "failover: cluster ok {:?} after kill, proxy recovered {:?} after cluster ok, {} writes acknowledged, {} client errors",
        ok_at - killed_at,
        recovery,
        acked.len(),
        errors.len()
    );
    assert!(
        recovery <= Duration::from_secs(2),
        "recovery took {recovery:?}; proxy log:\n{}",
        proxy.log()
    );
    // Errors only during the failover window, and each a clear Redis error.
    for (at, e) in &errors {
        assert!(
            *at >= killed_at && *at <= recovered_at + Duration::from_millis(200),
            "error outside the window: {e}"
        );
        assert!(
            !e.contains("MOVED") || e.contains("slotbridge"),
            "leaked redirect: {e}"
        );
    }
    // Every acknowledged write is readable, except writes to the dead master
    // acknowledged just before it died (asynchronous replication).
    let in_victim = |k: &str| {
        let s = slot_of(k.as_bytes());
        victim_slots.iter().any(|&(a, b)| (a..=b).contains(&s))
    };
    let bad = verify(&proxy, &acked);
    let unexcused: Vec<&String> = bad
        .iter()
        .filter(|k| {
            let at = acked[*k].1;
            !(in_victim(k) && at + Duration::from_millis(200) >= killed_at && at <= killed_at)
        })
        .collect();
    assert!(
        unexcused.is_empty(),
        "lost acknowledged writes: {:?}",
        &unexcused[..unexcused.len().min(10)]
    );
}

#[test]
fn resharding_under_mixed_load_has_no_client_errors() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&cluster);
    let stop = Arc::new(AtomicBool::new(false));
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let acked: Acked = Arc::default();
    let mut handles = Vec::new();
    for t in 0..3 {
        let (url, stop, errors, acked) = (proxy.url(), stop.clone(), errors.clone(), acked.clone());
        handles.push(thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let keys: Vec<String> = (0..10).map(|j| format!("rs:{t}:{i}:{j}")).collect();
                let mut mset = redis::cmd("MSET");
                for k in &keys {
                    mset.arg(k).arg(format!("val-{k}"));
                }
                match mset.query::<()>(&mut c) {
                    Ok(()) => {
                        let now = Instant::now();
                        let mut a = acked.lock().unwrap();
                        for k in &keys {
                            a.insert(k.clone(), (format!("val-{k}"), now));
                        }
                    }
                    Err(e) => errors.lock().unwrap().push(format!("MSET: {e}")),
                }
                match redis::cmd("MGET")
                    .arg(&keys)
                    .query::<Vec<Option<String>>>(&mut c)
                {
                    Ok(values) => {
                        for (k, v) in keys.iter().zip(values) {
                            if v.as_deref() != Some(format!("val-{k}").as_str()) {
                                errors.lock().unwrap().push(format!("MGET {k}: {v:?}"));
                            }
                        }
                    }
                    Err(e) => errors.lock().unwrap().push(format!("MGET: {e}")),
                }
                if i.is_multiple_of(5) {
                    let doomed = format!("rs:{t}:{i}:del");
                    let r: Result<i64, _> =
                        redis::cmd("DEL").arg(&keys[0]).arg(&doomed).query(&mut c);
                    match r {
                        Ok(1) => {
                            acked.lock().unwrap().remove(&keys[0]);
                        }
                        other => errors.lock().unwrap().push(format!("DEL: {other:?}")),
                    }
                }
                i += 1;
            }
        }));
    }
    thread::sleep(Duration::from_millis(500));
    let masters = cluster.master_ports();
    let started = Instant::now();
    cluster.reshard(masters[0], masters[1], 5461);
    let took = started.elapsed();
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let errors = errors.lock().unwrap().clone();
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "reshard of 5461 slots took {took:?}; {} keys written; {} client errors",
        acked.len(),
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "client-visible errors: {:?}",
        &errors[..errors.len().min(10)]
    );
    let bad = verify(&proxy, &acked);
    assert!(
        bad.is_empty(),
        "lost writes: {:?}",
        &bad[..bad.len().min(10)]
    );
}

#[test]
fn replaced_master_is_followed_without_restart() {
    let mut cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let keys: Vec<String> = (0..3000).map(|i| format!("repl:{i}")).collect();
    for chunk in keys.chunks(300) {
        let mut mset = redis::cmd("MSET");
        for k in chunk {
            mset.arg(k).arg(format!("v-{k}"));
        }
        let _: () = mset.query(&mut c).unwrap();
    }
    // A function library and a script loaded through the proxy before the
    // node that will own their keys joined: Redis copies neither to it.
    let library = "#!lua name=repl\n\
        redis.register_function('repl_get', function(keys) return redis.call('GET', keys[1]) end)";
    let name: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(library)
        .query(&mut c)
        .unwrap();
    assert_eq!(name, "repl");
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return redis.call('GET', KEYS[1])")
        .query(&mut c)
        .unwrap();
    let old = cluster.master_ports()[0];
    let moved = keys
        .iter()
        .find(|k| cluster.node_for_key(k.as_bytes()) == old)
        .unwrap()
        .clone();
    let new = cluster.add_node();
    let n = cluster.nslots(old);
    cluster.reshard(old, new, n);
    cluster.remove_node(old);
    // The old address is gone for good; the proxy must not keep dialling it.
    let got: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut c).unwrap();
    for (k, v) in keys.iter().zip(&got) {
        assert_eq!(v.as_deref(), Some(format!("v-{k}").as_str()), "{k}");
    }
    // The proxy loads them on the new node when it lacks them.
    for _ in 0..2 {
        let v: String = redis::cmd("FCALL")
            .arg("repl_get")
            .arg(1)
            .arg(&moved)
            .query(&mut c)
            .unwrap();
        assert_eq!(v, format!("v-{moved}"));
        let v: String = redis::cmd("EVALSHA")
            .arg(&sha)
            .arg(1)
            .arg(&moved)
            .query(&mut c)
            .unwrap();
        assert_eq!(v, format!("v-{moved}"));
    }
    let libs: redis::Value = redis::cmd("FUNCTION")
        .arg("LIST")
        .query(&mut cluster.conn(new))
        .unwrap();
    assert!(format!("{libs:?}").contains("repl_get"), "{libs:?}");
    let _: () = redis::cmd("SET")
        .arg(key_for_slot(0, "after-"))
        .arg("1")
        .query(&mut c)
        .unwrap();
    thread::sleep(Duration::from_millis(5500));
    let log = proxy.log();
    let dialled_after = log
        .lines()
        .rev()
        .take_while(|l| !l.contains("topology changed"))
        .filter(|l| l.contains(&format!(":{old}")) && l.contains("connect failed"))
        .count();
    assert_eq!(
        dialled_after, 0,
        "the proxy keeps dialling the removed node:\n{log}"
    );
}

#[test]
fn dead_first_seed_is_skipped() {
    let cluster = Cluster::start(3, 0);
    let dead = free_port();
    let seeds = format!("127.0.0.1:{dead},{}", cluster.seeds());
    let proxy = Proxy::start_with_seeds(&seeds, &[]);
    let mut c = proxy.conn();
    let _: () = redis::cmd("MSET")
        .arg("ds:a")
        .arg(1)
        .arg("ds:b")
        .arg(2)
        .query(&mut c)
        .unwrap();
    let v: Vec<i64> = redis::cmd("MGET")
        .arg("ds:a")
        .arg("ds:b")
        .query(&mut c)
        .unwrap();
    assert_eq!(v, vec![1, 2]);
}

#[test]
fn incomplete_map_heals_on_first_request() {
    let mut opts = ClusterOptions::new(3, 0);
    opts.extra_config
        .push("cluster-require-full-coverage no".into());
    let cluster = Cluster::start_with(opts);
    let slot = 1234;
    let owner = cluster.node_for_slot(slot);
    let owner_id = cluster.node_id(owner);
    for port in cluster.master_ports() {
        let _: () = redis::cmd("CLUSTER")
            .arg("DELSLOTS")
            .arg(slot)
            .query(&mut cluster.conn(port))
            .unwrap();
    }
    // A proxy that learns the map with the hole and would not refresh on
    // its own for a minute.
    let dir = TempDir::new("heal-config");
    let config = dir.path().join("slotbridge.toml");
    std::fs::write(&config, "[topology]\nrefresh_interval_ms = 60000\n").unwrap();
    let proxy = Proxy::start_with(&cluster, &["--config", config.to_str().unwrap()]);
    assert!(
        proxy.wait_for_log("covered=16383", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    // The cluster heals; the proxy learns it from the first request for the slot.
    for port in cluster.master_ports() {
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&owner_id)
            .query(&mut cluster.conn(port))
            .unwrap_or(());
    }
    let _: () = redis::cmd("CLUSTER")
        .arg("ADDSLOTS")
        .arg(slot)
        .query(&mut cluster.conn(owner))
        .unwrap_or(());
    thread::sleep(Duration::from_millis(300));
    let key = key_for_slot(slot, "hole-");
    let mut c = proxy.conn();
    let started = Instant::now();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("healed")
        .query(&mut c)
        .unwrap();
    let v: String = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
    assert_eq!(v, "healed");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn read_from_replica_preferred_reads_from_replicas() {
    let cluster = Cluster::start(3, 1);
    let dir = TempDir::new("read-from");
    let path = dir.path().join("slotbridge.toml");
    std::fs::write(&path, "read_from = \"replica_preferred\"\n").unwrap();
    let proxy = Proxy::start_with(&cluster, &["--config", path.to_str().unwrap()]);
    let mut c = proxy.conn();
    let key = key_for_slot(100, "rf-");
    let _: () = redis::cmd("SET").arg(&key).arg("v").query(&mut c).unwrap();
    let master = cluster.node_for_slot(100);
    let replica = cluster.replica_ports(master)[0];
    // Let the replica catch up, then read through the proxy.
    let _: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(1000)
        .query(&mut cluster.conn(master))
        .unwrap();
    let calls = |port: u16| command_calls(&cluster, port, "get");
    let before = calls(replica);
    for _ in 0..20 {
        let v: String = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
        assert_eq!(v, "v");
    }
    assert!(
        calls(replica) >= before + 20,
        "reads did not reach the replica"
    );
    // Writes still go to the master.
    let _: () = redis::cmd("SET").arg(&key).arg("w").query(&mut c).unwrap();
    let direct: String = redis::cmd("GET")
        .arg(&key)
        .query(&mut cluster.conn(master))
        .unwrap();
    assert_eq!(direct, "w");

    // INFO shows the replicas WAIT counts (those of the master with the
    // fewest), without their addresses (nodes a client must not dial):
    // WAIT of that many is met, one more is not.
    let info: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap();
    assert!(info.contains("connected_slaves:1\r\n"), "{info}");
    assert!(!info.contains("slave0:"), "{info}");
    let n: i64 = redis::cmd("WAIT").arg(1).arg(1000).query(&mut c).unwrap();
    assert_eq!(n, 1);
    let n: i64 = redis::cmd("WAIT").arg(2).arg(100).query(&mut c).unwrap();
    assert_eq!(n, 1);
}

/// `calls=` of `cmdstat_<name>` in a node's INFO commandstats.
fn command_calls(cluster: &Cluster, port: u16, name: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut cluster.conn(port))
        .unwrap();
    let prefix = format!("cmdstat_{name}:");
    info.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.split("calls=").nth(1))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn durability_policy_waits_for_a_replica_before_acknowledging() {
    let cluster = Cluster::start(3, 1);
    let dir = TempDir::new("durability");
    let config = |name: &str, timeout: u64| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!("[durability]\nwait_replicas = 2\nwait_timeout_ms = {timeout}\n"),
        )
        .unwrap();
        path.to_str().unwrap().to_string()
    };
    let patient = Proxy::start_with(&cluster, &["--config", &config("patient.toml", 3000)]);
    let hasty = Proxy::start_with(&cluster, &["--config", &config("hasty.toml", 200)]);
    let key = key_for_slot(100, "dur-");
    let master = cluster.node_for_slot(100);
    let replica = cluster.replica_ports(master)[0];
    let mut c = patient.conn();

    // A write is followed by exactly one WAIT (asking for 1 replica: the
    // master has only one); a read by none.
    let waits = command_calls(&cluster, master, "wait");
    let _: () = redis::cmd("SET").arg(&key).arg("v1").query(&mut c).unwrap();
    assert_eq!(command_calls(&cluster, master, "wait"), waits + 1);
    let v: String = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
    assert_eq!(v, "v1");
    assert_eq!(command_calls(&cluster, master, "wait"), waits + 1);

    // While the replica is stalled, the write is acknowledged only once the
    // replica has it; the replica then serves it at once.
    let stall = |secs: &'static str| {
        let mut conn = cluster.conn(replica);
        thread::spawn(move || {
            let _: redis::RedisResult<()> =
                redis::cmd("DEBUG").arg("SLEEP").arg(secs).query(&mut conn);
        })
    };
    let sleeper = stall("1.5");
    thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let _: () = redis::cmd("SET").arg(&key).arg("v2").query(&mut c).unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(600),
        "acknowledged after {took:?}"
    );
    let mut r = cluster.conn(replica);
    let _: () = redis::cmd("READONLY").query(&mut r).unwrap();
    let on_replica: String = redis::cmd("GET").arg(&key).query(&mut r).unwrap();
    assert_eq!(on_replica, "v2");
    sleeper.join().unwrap();

    // WAIT's timeout bounds the delay: the write is still acknowledged (it
    // ran), after about wait_timeout_ms.
    let mut h = hasty.conn();
    let sleeper = stall("1.5");
    thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let _: () = redis::cmd("SET").arg(&key).arg("v3").query(&mut h).unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_millis(1000),
        "acknowledged after {took:?}"
    );
    sleeper.join().unwrap();
    let v: String = redis::cmd("GET").arg(&key).query(&mut h).unwrap();
    assert_eq!(v, "v3");
}

/// A pop waiting on queues in several slots keeps waiting when one of
/// their masters fails over, and gets the element pushed afterwards
/// (never a MOVED or a lost-connection error).
#[test]
fn pops_across_slots_wait_through_a_failover() {
    let mut cluster = Cluster::start(3, 1);
    let proxy = Proxy::start(&cluster);
    let (a, b) = (key_for_slot(0, "wq-a-"), key_for_slot(16000, "wq-b-"));
    let victim = cluster.node_for_slot(0);
    assert_ne!(victim, cluster.node_for_slot(16000));
    let url = proxy.url();
    let (wa, wb) = (a.clone(), b.clone());
    let waiter = thread::spawn(move || {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        redis::cmd("BLPOP")
            .arg(&wa)
            .arg(&wb)
            .arg(0)
            .query::<Vec<String>>(&mut c)
    });
    thread::sleep(Duration::from_millis(500));
    cluster.kill_node(victim);
    cluster.wait_ok();
    thread::sleep(Duration::from_millis(500));
    let mut c = proxy.conn();
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis::cmd("RPUSH")
        .arg(&a)
        .arg("after")
        .query::<i64>(&mut c)
        .is_err()
    {
        assert!(Instant::now() < deadline, "no recovery");
        thread::sleep(Duration::from_millis(50));
    }
    let got = waiter.join().unwrap();
    assert_eq!(got, Ok(vec![a.clone(), "after".to_string()]));
    let left: i64 = redis::cmd("LLEN").arg(&a).query(&mut c).unwrap();
    assert_eq!(left, 0);
}

/// A blocking move between slots keeps waiting when its source's slot
/// moves to another master (never a MOVED for the client), and moves the
/// element pushed afterwards.
#[test]
fn a_blocking_move_across_slots_waits_through_a_slot_move() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&cluster);
    let (src, dst) = (key_for_slot(300, "bm-src-"), key_for_slot(9000, "bm-dst-"));
    let url = proxy.url();
    let (ws, wd) = (src.clone(), dst.clone());
    let waiter = thread::spawn(move || {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        redis::cmd("BLMOVE")
            .arg(&ws)
            .arg(&wd)
            .arg("LEFT")
            .arg("RIGHT")
            .arg(0)
            .query::<String>(&mut c)
    });
    thread::sleep(Duration::from_millis(400));
    let from = cluster.node_for_slot(300);
    let to = cluster
        .master_ports()
        .into_iter()
        .find(|&p| p != from && p != cluster.node_for_slot(9000))
        .unwrap();
    cluster.migrate_slot(300, to);
    thread::sleep(Duration::from_millis(500));
    let mut c = proxy.conn();
    let _: i64 = redis::cmd("RPUSH")
        .arg(&src)
        .arg("job")
        .query(&mut c)
        .unwrap();
    assert_eq!(waiter.join().unwrap(), Ok("job".to_string()));
    let moved: Vec<String> = redis::cmd("LRANGE")
        .arg(&dst)
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .unwrap();
    assert_eq!(moved, vec!["job".to_string()]);
}
