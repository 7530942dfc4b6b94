//! Self-tests of the integration-test harness (`tests/common`), run against
//! real redis-server processes but without the proxy.

mod common;

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
