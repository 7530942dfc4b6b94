//! Self-tests of the integration-test harness (`tests/common`), run against
//! real redis-server processes but without the proxy.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    encode_command, key_for_slot, keys_in_distinct_slots, slot_of, Cluster, ClusterOptions,
    RawClient,
};

fn get(conn: &mut redis::Connection, key: &str) -> redis::RedisResult<Option<String>> {
    redis::cmd("GET").arg(key).query(conn)
}

fn set(conn: &mut redis::Connection, key: &str, value: &str) {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query::<()>(conn)
        .unwrap_or_else(|e| panic!("SET {key}: {e}"));
}

#[test]
fn slot_helpers_match_redis() {
    assert_eq!(slot_of(b"foo"), 12182);
    // CRC16/XMODEM check value 0x31c3 (already below 16384).
    assert_eq!(slot_of(b"123456789"), 0x31c3);
    assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
    assert_eq!(slot_of(b"{user1000}.followers"), slot_of(b"user1000"));
    // Empty tag: the whole key is hashed.
    assert_ne!(slot_of(b"foo{}{bar}"), slot_of(b"bar"));
    assert_eq!(slot_of(b"foo{{bar}}zap"), slot_of(b"{bar"));
    assert_eq!(slot_of(b"foo{bar}{zap}"), slot_of(b"bar"));

    let keys = keys_in_distinct_slots(3, "k:");
    let slots: Vec<u16> = keys.iter().map(|k| slot_of(k.as_bytes())).collect();
    // One key in the middle of each third of the slot space.
    assert!(slots[0] < 5461 && (5461..10923).contains(&slots[1]) && slots[2] >= 10923);
    assert_eq!(keys, keys_in_distinct_slots(3, "k:"), "deterministic");
    let many = keys_in_distinct_slots(1000, "m:");
    let distinct: std::collections::HashSet<u16> =
        many.iter().map(|k| slot_of(k.as_bytes())).collect();
    assert_eq!(distinct.len(), 1000);
    assert_eq!(slot_of(key_for_slot(4242, "x").as_bytes()), 4242);
}

#[test]
fn cluster_starts_and_routes_keys() {
    let t = Instant::now();
    let cluster = Cluster::start(3, 1);
    eprintln!("3+3 cluster started in {:?}", t.elapsed());

    let masters = cluster.master_ports();
    assert_eq!(masters.len(), 3);
    assert_eq!(cluster.all_ports().len(), 6);
    assert_eq!(cluster.node_for_slot(0), masters[0]);
    assert_eq!(cluster.node_for_slot(16383), masters[2]);
    for m in &masters {
        assert_eq!(cluster.replica_ports(*m).len(), 1);
    }
    let seeds = cluster.seeds();
    assert_eq!(seeds.split(',').count(), 3);
    assert!(seeds.starts_with(&format!("127.0.0.1:{}", masters[0])));

    // Set keys directly on their owners; every master gets one.
    let keys = keys_in_distinct_slots(3, "harness:");
    let mut owners = Vec::new();
    for key in &keys {
        let owner = cluster.node_for_slot(slot_of(key.as_bytes()));
        owners.push(owner);
        set(&mut cluster.conn(owner), key, &format!("v-{key}"));
        assert_eq!(
            get(&mut cluster.conn(owner), key).unwrap(),
            Some(format!("v-{key}"))
        );
    }
    owners.sort_unstable();
    let mut sorted_masters = masters.clone();
    sorted_masters.sort_unstable();
    assert_eq!(owners, sorted_masters);

    // Another master redirects with MOVED to the owner.
    let key = &keys[0];
    let owner = cluster.node_for_slot(slot_of(key.as_bytes()));
    let other = *masters.iter().find(|p| **p != owner).unwrap();
    let err = get(&mut cluster.conn(other), key).unwrap_err();
    assert_eq!(err.code(), Some("MOVED"), "{err}");
    let addr = format!("127.0.0.1:{owner}");
    let key_slot = slot_of(key.as_bytes());
    assert_eq!(
        err.redirect_node(),
        Some((addr.as_str(), key_slot)),
        "{err}"
    );

    // Raw client against a node directly.
    let mut raw = RawClient::connect(owner);
    raw.roundtrip(b"PING\r\n", b"+PONG\r\n");
    raw.roundtrip(
        &encode_command(&[b"GET", key.as_bytes()]),
        format!("${}\r\nv-{key}\r\n", key.len() + 2).as_bytes(),
    );
    raw.send(b"*1\r\n$4\r\nQUIT\r\n");
    raw.expect(b"+OK\r\n");
    assert!(raw.is_closed());
}

#[test]
fn migrate_slot_moves_keys_and_ask_during_migration() {
    let cluster = Cluster::start(3, 1);
    let masters = cluster.master_ports();

    // Full migration of a slot holding several keys.
    let slot = 1000;
    let source = cluster.node_for_slot(slot);
    let target = *masters.iter().find(|p| **p != source).unwrap();
    let keys: Vec<String> = (0..250)
        .map(|i| format!("{{{}}}:{i}", key_for_slot(slot, "tag")))
        .collect();
    for k in &keys {
        assert_eq!(slot_of(k.as_bytes()), slot);
        set(&mut cluster.conn(source), k, "x");
    }
    let t = Instant::now();
    cluster.migrate_slot(slot, target);
    eprintln!("migrate_slot of 250 keys took {:?}", t.elapsed());
    assert_eq!(cluster.node_for_slot(slot), target);
    for port in cluster.all_ports() {
        // Every node (replicas included) agrees; checked by migrate_slot too.
        let c = &mut cluster.conn(port);
        let slots: redis::Value = redis::cmd("CLUSTER").arg("SLOTS").query(c).unwrap();
        assert!(format!("{slots:?}").contains(&target.to_string()));
    }
    let mut t_conn = cluster.conn(target);
    for k in &keys {
        assert_eq!(get(&mut t_conn, k).unwrap().as_deref(), Some("x"));
    }
    let err = get(&mut cluster.conn(source), &keys[0]).unwrap_err();
    assert_eq!(err.code(), Some("MOVED"), "{err}");
    let addr = format!("127.0.0.1:{target}");
    assert_eq!(err.redirect_node(), Some((addr.as_str(), slot)));

    // Step-by-step migration: the source answers ASK for moved keys.
    let slot = 12000;
    let source = cluster.node_for_slot(slot);
    let target = *masters.iter().find(|p| **p != source).unwrap();
    let moved = key_for_slot(slot, "moved");
    let stays = format!("{{{moved}}}:stays");
    set(&mut cluster.conn(source), &moved, "m");
    set(&mut cluster.conn(source), &stays, "s");
    cluster.begin_migration(slot, target);
    cluster.migrate_key(slot, moved.as_bytes(), target);
    assert_eq!(cluster.node_for_slot(slot), source, "still owned by source");

    let mut src = cluster.conn(source);
    let err = get(&mut src, &moved).unwrap_err();
    assert_eq!(err.code(), Some("ASK"), "{err}");
    let addr = format!("127.0.0.1:{target}");
    assert_eq!(err.redirect_node(), Some((addr.as_str(), slot)));
    assert_eq!(get(&mut src, &stays).unwrap().as_deref(), Some("s"));
    // The target serves the moved key only after ASKING ...
    let mut tgt = cluster.conn(target);
    let err = get(&mut tgt, &moved).unwrap_err();
    assert_eq!(err.code(), Some("MOVED"), "{err}");
    let mut raw = RawClient::connect(target);
    raw.send(&encode_command(&[b"ASKING"]));
    raw.send(&encode_command(&[b"GET", moved.as_bytes()]));
    raw.expect(b"+OK\r\n$1\r\nm\r\n");

    cluster.finish_migration(slot, target);
    assert_eq!(cluster.node_for_slot(slot), target);
    assert_eq!(get(&mut tgt, &moved).unwrap().as_deref(), Some("m"));
    assert_eq!(get(&mut tgt, &stays).unwrap().as_deref(), Some("s"));
}

#[test]
fn killed_master_fails_over() {
    let mut cluster = Cluster::start(3, 1);
    let slot = 7000;
    let victim = cluster.node_for_slot(slot);
    let replica = cluster.replica_ports(victim)[0];
    let key = key_for_slot(slot, "fo");
    set(&mut cluster.conn(victim), &key, "before");
    // Let the write reach the replica before killing the master.
    let _: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut cluster.conn(victim))
        .unwrap();

    let t = Instant::now();
    cluster.kill_node(victim);
    cluster.wait_ok();
    eprintln!("failover took {:?}", t.elapsed());
    assert!(
        t.elapsed() > Duration::from_millis(500),
        "detection takes time"
    );
    assert_eq!(cluster.node_for_slot(slot), replica);
    assert_eq!(cluster.all_ports().len(), 5);
    assert!(!cluster.master_ports().contains(&victim));
    assert!(!cluster.seeds().contains(&victim.to_string()));
    assert_eq!(
        get(&mut cluster.conn(replica), &key).unwrap().as_deref(),
        Some("before")
    );
}

#[test]
fn small_cluster_without_redis_cli() {
    let t = Instant::now();
    let cluster = Cluster::start_with(ClusterOptions::new(1, 1));
    eprintln!("1+1 cluster started in {:?}", t.elapsed());
    let master = cluster.master_ports();
    assert_eq!(master.len(), 1);
    assert_eq!(cluster.node_for_slot(0), master[0]);
    assert_eq!(cluster.node_for_slot(16383), master[0]);
    assert_eq!(cluster.replica_ports(master[0]).len(), 1);
}

/// A minimal cluster client over direct node connections: remembers slot
/// owners, follows MOVED and ASK (ASKING + command), retries TRYAGAIN.
struct Router<'a> {
    cluster: &'a Cluster,
    conns: HashMap<u16, redis::Connection>,
    owners: HashMap<u16, u16>,
    fallback: u16,
    redirects: usize,
}

impl<'a> Router<'a> {
    fn new(cluster: &'a Cluster) -> Router<'a> {
        Router {
            cluster,
            conns: HashMap::new(),
            owners: HashMap::new(),
            fallback: cluster.master_ports()[0],
            redirects: 0,
        }
    }

    fn query(&mut self, key: &str, cmd: &redis::Cmd) -> redis::Value {
        let slot = slot_of(key.as_bytes());
        let mut port = *self.owners.get(&slot).unwrap_or(&self.fallback);
        let mut asking = false;
        for _ in 0..20 {
            let cluster = self.cluster;
            let conn = self.conns.entry(port).or_insert_with(|| cluster.conn(port));
            let result = if asking {
                redis::pipe()
                    .cmd("ASKING")
                    .ignore()
                    .add_command(cmd.clone())
                    .query::<Vec<redis::Value>>(conn)
                    .map(|mut v| v.pop().unwrap_or(redis::Value::Nil))
            } else {
                cmd.query::<redis::Value>(conn)
            };
            asking = false;
            match result {
                Ok(v) => return v,
                Err(e) if matches!(e.code(), Some("MOVED") | Some("ASK")) => {
                    self.redirects += 1;
                    let (addr, _) = e.redirect_node().expect("redirect address");
                    port = addr.rsplit(':').next().unwrap().parse().unwrap();
                    if e.code() == Some("MOVED") {
                        self.owners.insert(slot, port);
                    } else {
                        asking = true;
                    }
                }
                Err(e) if e.code() == Some("TRYAGAIN") => thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("{key} on {port}: {e}"),
            }
        }
        panic!("{key}: too many redirections");
    }

    fn set(&mut self, key: &str, value: &str) {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        self.query(key, &cmd);
    }

    fn get(&mut self, key: &str) -> Option<String> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        match self.query(key, &cmd) {
            redis::Value::Nil => None,
            redis::Value::BulkString(b) => Some(String::from_utf8(b).unwrap()),
            other => panic!("GET {key}: unexpected reply {other:?}"),
        }
    }
}

fn cluster_nodes_text(cluster: &Cluster, port: u16) -> String {
    redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut cluster.conn(port))
        .unwrap()
}

#[test]
fn add_node_reshard_everything_and_remove_old_master() {
    let mut cluster = Cluster::start(3, 0);
    let keys: Vec<String> = (0..2000).map(|i| format!("grow:{i}")).collect();
    let mut conns = HashMap::new();
    for key in &keys {
        let owner = cluster.node_for_key(key.as_bytes());
        let c = conns.entry(owner).or_insert_with(|| cluster.conn(owner));
        set(c, key, &format!("v-{key}"));
    }
    drop(conns);
    let old = cluster.master_ports();
    let a = old[0];
    let a_id = cluster.node_id(a);
    let a_slots = cluster.nslots(a);
    assert_eq!(a_slots, 5461);

    let t = Instant::now();
    let new = cluster.add_node();
    eprintln!("add_node took {:?}", t.elapsed());
    assert_eq!(cluster.all_ports().len(), 4);
    assert!(cluster.all_ports().contains(&new));
    assert_eq!(cluster.nslots(new), 0);
    // A slotless master: last in master_ports, not a seed.
    assert_eq!(cluster.master_ports(), [old.clone(), vec![new]].concat());
    assert!(!cluster.seeds().contains(&new.to_string()));
    let new_id = cluster.node_id(new);
    for port in cluster.all_ports() {
        let text = cluster_nodes_text(&cluster, port);
        let line = text.lines().find(|l| l.starts_with(&new_id)).unwrap();
        assert!(line.contains(" connected"), "{port}: {line}");
        assert_eq!(text.lines().count(), 4, "{port}:\n{text}");
    }

    let t = Instant::now();
    cluster.reshard(a, new, a_slots);
    eprintln!(
        "reshard of {a_slots} slots (~660 keys) took {:?}",
        t.elapsed()
    );
    assert_eq!(cluster.nslots(a), 0);
    assert_eq!(cluster.nslots(new), a_slots);
    assert_eq!(cluster.node_for_slot(0), new);
    assert!(cluster.seeds().contains(&new.to_string()));
    assert!(!cluster.seeds().contains(&a.to_string()));
    // Redis turned the emptied master into a replica of the slots' receiver.
    assert!(!cluster.master_ports().contains(&a));
    assert_eq!(cluster.replica_ports(new), [a]);
    let mut moved = 0;
    let mut conns = HashMap::new();
    for key in &keys {
        let owner = cluster.node_for_key(key.as_bytes());
        assert_ne!(owner, a);
        moved += usize::from(owner == new);
        let c = conns.entry(owner).or_insert_with(|| cluster.conn(owner));
        assert_eq!(get(c, key).unwrap(), Some(format!("v-{key}")), "{key}");
    }
    drop(conns);
    assert!(moved > 500, "{moved} keys moved");

    cluster.remove_node(a);
    assert_eq!(cluster.all_ports().len(), 3);
    assert!(!cluster.all_ports().contains(&a));
    assert!(!cluster.master_ports().contains(&a));
    assert!(!cluster.seeds().contains(&a.to_string()));
    assert_eq!(cluster.seeds().split(',').count(), 3);
    for port in cluster.all_ports() {
        let text = cluster_nodes_text(&cluster, port);
        assert!(!text.contains(&a_id), "{port} still knows {a}:\n{text}");
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query(&mut cluster.conn(port))
            .unwrap();
        assert!(info.contains("cluster_state:ok"), "{port}:\n{info}");
        assert!(info.contains("cluster_known_nodes:3"), "{port}:\n{info}");
    }
    let mut router = Router::new(&cluster);
    for key in &keys {
        assert_eq!(router.get(key), Some(format!("v-{key}")), "{key}");
    }
}

#[test]
fn remove_slotless_master_with_a_replica() {
    let mut cluster = Cluster::start(3, 1);
    let new = cluster.add_node();
    assert_eq!(cluster.master_ports().last(), Some(&new));
    // Hand the replica of the first master to the new (slotless) master.
    let first = cluster.master_ports()[0];
    let replica = cluster.replica_ports(first)[0];
    redis::cmd("CLUSTER")
        .arg("REPLICATE")
        .arg(cluster.node_id(new))
        .query::<()>(&mut cluster.conn(replica))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.replica_ports(new) != [replica] {
        assert!(Instant::now() < deadline, "{replica} did not follow {new}");
        thread::sleep(Duration::from_millis(50));
    }
    let new_id = cluster.node_id(new);
    cluster.remove_node(new);
    // The replica went to the master with the fewest replicas.
    assert_eq!(cluster.replica_ports(first), [replica]);
    assert_eq!(cluster.master_ports().len(), 3);
    assert_eq!(cluster.all_ports().len(), 6);
    for port in cluster.all_ports() {
        assert!(!cluster_nodes_text(&cluster, port).contains(&new_id));
    }
}

#[test]
fn reshard_a_third_of_the_slots_under_writes() {
    let cluster = Cluster::start(3, 0);
    let masters = cluster.master_ports();
    let (a, b) = (masters[0], masters[1]);
    let mut router = Router::new(&cluster);
    let keys: Vec<String> = (0..10_000).map(|i| format!("bulk:{i}")).collect();
    for key in &keys {
        router.set(key, key);
    }
    let b_before = cluster.nslots(b);
    let stop = AtomicBool::new(false);
    let (elapsed, written, redirects) = thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut router = Router::new(&cluster);
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("live:{n}");
                router.set(&key, &n.to_string());
                n += 1;
            }
            (n, router.redirects)
        });
        let t = Instant::now();
        cluster.reshard(a, b, 5461);
        let elapsed = t.elapsed();
        stop.store(true, Ordering::Relaxed);
        let (n, redirects) = writer.join().unwrap();
        (elapsed, n, redirects)
    });
    eprintln!(
        "reshard of 5461 slots (10k keys + {written} concurrent SETs, \
         {redirects} redirections) took {elapsed:?}"
    );
    assert_eq!(cluster.nslots(a), 0);
    assert_eq!(cluster.nslots(b), b_before + 5461);
    assert!(written > 0);
    let mut router = Router::new(&cluster);
    for key in &keys {
        assert_eq!(router.get(key).as_deref(), Some(key.as_str()), "{key}");
    }
    for n in 0..written {
        let key = format!("live:{n}");
        assert_eq!(router.get(&key), Some(n.to_string()), "{key}");
    }
}
