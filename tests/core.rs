//! Core proxy behaviour against a real 3-master + 3-replica cluster: routing,
//! cross-slot split and merge, keyless commands, RESP2/RESP3, inline
//! commands, binary values, deep pipelines and bad input.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{
    encode_command, key_for_slot, keys_in_distinct_slots, slot_of, Cluster, Proxy, RawClient,
    TempDir,
};
use redis::Value;

/// One cluster and one proxy shared by the tests of this file; every test
/// uses its own key prefix.
fn env() -> &'static (Cluster, Proxy) {
    static ENV: OnceLock<(Cluster, Proxy)> = OnceLock::new();
    ENV.get_or_init(|| {
        let cluster = Cluster::start(3, 1);
        let proxy = Proxy::start(&cluster);
        (cluster, proxy)
    })
}

fn proxy_conn() -> redis::Connection {
    env().1.conn()
}

fn raw() -> RawClient {
    RawClient::connect(env().1.port)
}

fn cmd(args: &[&str]) -> Vec<u8> {
    let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    encode_command(&bytes)
}

#[test]
fn mset_mget_del_across_slots_like_one_server() {
    let (cluster, _) = env();
    let mut c = proxy_conn();
    let keys = keys_in_distinct_slots(4, "core-basic-");
    // The four keys live on at least three different masters.
    let owners: std::collections::HashSet<u16> = keys
        .iter()
        .map(|k| cluster.node_for_key(k.as_bytes()))
        .collect();
    assert_eq!(owners.len(), 3);
    let mut r = raw();
    let mset = cmd(&[
        "MSET", &keys[0], "1", &keys[1], "2", &keys[2], "3", &keys[3], "4",
    ]);
    r.roundtrip(&mset, b"+OK\r\n");
    let missing = format!("{}-missing", keys[0]);
    r.roundtrip(
        &cmd(&["MGET", &keys[0], &keys[1], &keys[2], &keys[3], &missing]),
        b"*5\r\n$1\r\n1\r\n$1\r\n2\r\n$1\r\n3\r\n$1\r\n4\r\n$-1\r\n",
    );
    r.roundtrip(
        &cmd(&["DEL", &keys[0], &keys[1], &keys[2], &keys[3]]),
        b":4\r\n",
    );
    r.roundtrip(&cmd(&["MGET", &keys[0], &keys[3]]), b"*2\r\n$-1\r\n$-1\r\n");
    // Values really live on the owning masters.
    let _: () = redis::cmd("SET")
        .arg(&keys[2])
        .arg("direct")
        .query(&mut c)
        .unwrap();
    let owner = cluster.node_for_key(keys[2].as_bytes());
    let direct: String = redis::cmd("GET")
        .arg(&keys[2])
        .query(&mut cluster.conn(owner))
        .unwrap();
    assert_eq!(direct, "direct");
}

#[test]
fn duplicates_are_counted_like_redis() {
    let keys = keys_in_distinct_slots(3, "core-dup-");
    let (a, b, c) = (&keys[0], &keys[1], &keys[2]);
    let mut r = raw();
    r.roundtrip(&cmd(&["MSET", a, "1", b, "2", a, "3"]), b"+OK\r\n");
    r.roundtrip(
        &cmd(&["MGET", a, b, a, c, b]),
        b"*5\r\n$1\r\n3\r\n$1\r\n2\r\n$1\r\n3\r\n$-1\r\n$1\r\n2\r\n",
    );
    r.roundtrip(&cmd(&["EXISTS", a, a, b, c]), b":3\r\n");
    r.roundtrip(&cmd(&["TOUCH", a, b, c]), b":2\r\n");
    r.roundtrip(&cmd(&["DEL", a, a, b, c]), b":2\r\n");
    r.roundtrip(&cmd(&["MSET", a, "1", b, "2"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["UNLINK", b, a, b]), b":2\r\n");
    r.roundtrip(&cmd(&["EXISTS", a, b]), b":0\r\n");
}

#[test]
fn large_cross_slot_mget_of_many_keys() {
    let mut c = proxy_conn();
    let keys: Vec<String> = (0..2000).map(|i| format!("core-many-{i}")).collect();
    let mut mset = redis::cmd("MSET");
    for (i, k) in keys.iter().enumerate() {
        mset.arg(k).arg(i);
    }
    let _: () = mset.query(&mut c).unwrap();
    let got: Vec<Option<usize>> = redis::cmd("MGET")
        .arg(&keys)
        .arg("core-many-none")
        .query(&mut c)
        .unwrap();
    let mut want: Vec<Option<usize>> = (0..2000).map(Some).collect();
    want.push(None);
    assert_eq!(got, want);
    let n: usize = redis::cmd("DEL").arg(&keys).query(&mut c).unwrap();
    assert_eq!(n, 2000);
}

#[test]
fn same_slot_multi_key_commands_are_routed() {
    let mut c = proxy_conn();
    let _: () = redis::cmd("SET")
        .arg("{core-u}a")
        .arg("v")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("RENAME")
        .arg("{core-u}a")
        .arg("{core-u}b")
        .query(&mut c)
        .unwrap();
    let v: String = redis::cmd("GET").arg("{core-u}b").query(&mut c).unwrap();
    assert_eq!(v, "v");
    let _: () = redis::cmd("SADD")
        .arg("{core-u}s1")
        .arg("x")
        .arg("y")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SADD")
        .arg("{core-u}s2")
        .arg("y")
        .arg("z")
        .query(&mut c)
        .unwrap();
    let n: i64 = redis::cmd("SUNIONSTORE")
        .arg("{core-u}dst")
        .arg("{core-u}s1")
        .arg("{core-u}s2")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 3);
    let got: Vec<String> = redis::cmd("EVAL")
        .arg("return {redis.call('GET', KEYS[1]), KEYS[2]}")
        .arg(2)
        .arg("{core-u}b")
        .arg("{core-u}other")
        .query(&mut c)
        .unwrap();
    assert_eq!(got, vec!["v".to_string(), "{core-u}other".to_string()]);
    let one: i64 = redis::cmd("EVAL")
        .arg("return 1")
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(one, 1);
}

#[test]
fn cross_slot_commands_that_cannot_be_split_get_crossslot() {
    let mut r = raw();
    let (a, b) = ("core-x-a", "core-x-b");
    let (sa, sb) = (slot_of(a.as_bytes()), slot_of(b.as_bytes()));
    assert_ne!(sa, sb);
    let want = format!(
        "-CROSSSLOT Keys in request don't hash to the same slot (command 'msetnx', slots {sa} and {sb}); use a {{hash tag}} so that all keys of one command map to the same slot, or a [[colocate]] rule in slotbridge's configuration (unmodified apps)\r\n"
    );
    r.roundtrip(&cmd(&["MSETNX", a, "1", b, "2"]), want.as_bytes());
    let want = format!(
        "-CROSSSLOT Keys in request don't hash to the same slot (command 'eval', slots {sa} and {sb}); use a {{hash tag}} so that all keys of one command map to the same slot, or a [[colocate]] rule in slotbridge's configuration (unmodified apps)\r\n"
    );
    r.roundtrip(&cmd(&["EVAL", "return 1", "2", a, b]), want.as_bytes());
}

#[test]
fn keyless_basics() {
    let (cluster, _) = env();
    let mut r = raw();
    r.roundtrip(b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n");
    r.roundtrip(&cmd(&["PING", "hi there"]), b"$8\r\nhi there\r\n");
    r.roundtrip(&cmd(&["ECHO", "a\r\nb"]), b"$4\r\na\r\nb\r\n");
    r.roundtrip(&cmd(&["SELECT", "0"]), b"+OK\r\n");
    r.roundtrip(
        &cmd(&["SELECT", "1"]),
        b"-ERR slotbridge: only database 0 exists on a Redis Cluster; SELECT another database is not possible (use key prefixes instead of databases)\r\n",
    );
    // The other commands that name a database: Redis's errors for an
    // index no server has, the cluster's for another one.
    let other_db = |what: &str| {
        format!("-ERR slotbridge: only database 0 exists on a Redis Cluster; {what} another database is not possible (use key prefixes instead of databases)\r\n")
    };
    let range = "-ERR DB index is out of range\r\n".to_string();
    let lines: [(&str, String); 16] = [
        ("SET {db}a v", "+OK\r\n".into()),
        ("MOVE {db}a 1", other_db("MOVE to")),
        (
            "MOVE {db}a 0",
            "-ERR source and destination objects are the same\r\n".into(),
        ),
        ("MOVE {db}a 16", range.clone()),
        (
            "MOVE {db}a x",
            "-ERR value is not an integer or out of range\r\n".into(),
        ),
        ("COPY {db}a {db}b DB 3", other_db("COPY to")),
        ("COPY {db}a {db}b DB 99", range.clone()),
        ("COPY {db}a {db}b DB", "-ERR syntax error\r\n".into()),
        ("COPY {db}a {db}b REPLACE DB 0", ":1\r\n".into()),
        ("COPY {db}a core-db-far DB 0", ":1\r\n".into()),
        ("DEL {db}a {db}b core-db-far", ":3\r\n".into()),
        ("SWAPDB 0 0", "+OK\r\n".into()),
        ("SWAPDB 0 1", other_db("SWAPDB with")),
        ("SWAPDB a 1", "-ERR invalid first DB index\r\n".into()),
        ("SWAPDB 0 b", "-ERR invalid second DB index\r\n".into()),
        ("SWAPDB 0 16", range),
    ];
    for (line, expected) in lines {
        let line: Vec<&str> = line.split(' ').collect();
        r.roundtrip(&cmd(&line), expected.as_bytes());
    }
    r.roundtrip(
        &cmd(&["SHUTDOWN"]),
        b"-ERR unsupported command 'shutdown' by slotbridge\r\n",
    );
    r.roundtrip(
        &cmd(&["NOSUCHCMD", "x"]),
        b"-ERR unknown command 'NOSUCHCMD', with args beginning with: 'x' \r\n",
    );
    r.roundtrip(
        &cmd(&["GET"]),
        b"-ERR wrong number of arguments for 'get' command\r\n",
    );
    r.roundtrip(
        &cmd(&["CLUSTER", "INFO"]),
        b"-ERR This instance has cluster support disabled\r\n",
    );

    let mut c = proxy_conn();
    let time: Vec<String> = redis::cmd("TIME").query(&mut c).unwrap();
    assert_eq!(time.len(), 2);
    let count: i64 = redis::cmd("COMMAND").arg("COUNT").query(&mut c).unwrap();
    assert!(count > 200, "COMMAND COUNT {count}");
    // DBSIZE is the sum over the masters (other tests may write meanwhile,
    // so compare with a stable set of keys of our own).
    let total: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    let direct: i64 = cluster
        .master_ports()
        .iter()
        .map(|&p| {
            redis::cmd("DBSIZE")
                .query::<i64>(&mut cluster.conn(p))
                .unwrap()
        })
        .sum();
    assert!(
        (total - direct).abs() < 5000,
        "proxy {total} vs direct {direct}"
    );
    let info: String = redis::cmd("INFO").query(&mut c).unwrap();
    for needle in [
        &format!("redis_version:{}.", common::server_version().redis.0),
        common::server_version().standalone_mode_line(),
        "loading:0",
        "cluster_enabled:0",
        "role:master",
        "# Keyspace",
    ] {
        assert!(info.contains(needle), "INFO lacks {needle}:\n{info}");
    }
    let server: String = redis::cmd("INFO").arg("server").query(&mut c).unwrap();
    assert!(server.starts_with("# Server\r\n") && !server.contains("# Keyspace"));
}

#[test]
fn dbsize_is_exact_sum_of_masters() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let keys: Vec<String> = (0..300).map(|i| format!("core-db-{i}")).collect();
    let mut mset = redis::cmd("MSET");
    for k in &keys {
        mset.arg(k).arg("1");
    }
    let _: () = mset.query(&mut c).unwrap();
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 300);
    let info: String = redis::cmd("INFO").arg("keyspace").query(&mut c).unwrap();
    // Redis 7.4 and Valkey 9 count keys with expiring hash fields too.
    let v = common::server_version();
    let subexpiry = if v.at_least(7, 4) && !v.valkey {
        ",subexpiry=0"
    } else if v.valkey_at_least(9, 0, 0) {
        ",keys_with_volatile_items=0"
    } else {
        ""
    };
    assert_eq!(
        info,
        format!("# Keyspace\r\ndb0:keys=300,expires=0,avg_ttl=0{subexpiry}\r\n")
    );
    let mut r = RawClient::connect(proxy.port);
    r.roundtrip(&cmd(&["FLUSHALL"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["DBSIZE"]), b":0\r\n");
    for port in cluster.master_ports() {
        let n: i64 = redis::cmd("DBSIZE").query(&mut cluster.conn(port)).unwrap();
        assert_eq!(n, 0);
    }
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
    r.roundtrip(&cmd(&["FLUSHDB", "SYNC"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["KEYS", "*"]), b"*0\r\n");
}

#[test]
fn keys_merges_all_masters() {
    let mut c = proxy_conn();
    let keys = keys_in_distinct_slots(6, "core-keys-");
    for k in &keys {
        let _: () = redis::cmd("SET").arg(k).arg("1").query(&mut c).unwrap();
    }
    let mut got: Vec<String> = redis::cmd("KEYS").arg("core-keys-*").query(&mut c).unwrap();
    got.sort();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn hello_and_resp3() {
    let mut r = raw();
    r.send(&cmd(&["CLIENT", "ID"]));
    let id_reply = r.read_available(Duration::from_millis(300));
    let id = String::from_utf8(id_reply[1..id_reply.len() - 2].to_vec()).unwrap();
    // The nodes' name, version and modules (none on Redis 7.0), as one
    // server of their version says them, with the proxy's id and mode.
    let v = common::server_version();
    let name = if v.valkey { "valkey" } else { "redis" };
    let mut node = RawClient::connect(env().0.master_ports()[0]);
    let mut modules = |proto: &str| {
        node.send(&cmd(&["HELLO", proto]));
        node.read_reply();
        node.send(&cmd(&["MODULE", "LIST"]));
        String::from_utf8(node.read_reply()).unwrap()
    };
    let (modules2, modules3) = (modules("2"), modules("3"));
    let fields = |proto: u8| {
        format!(
            "$6\r\nserver\r\n${}\r\n{name}\r\n$7\r\nversion\r\n${}\r\n{}\r\n$5\r\nproto\r\n:{proto}\r\n$2\r\nid\r\n:{id}\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n",
            name.len(),
            v.text.len(),
            v.text
        )
    };
    let hello2 = format!("*14\r\n{}{modules2}", fields(2));
    r.roundtrip(&cmd(&["HELLO", "2"]), hello2.as_bytes());
    let hello3 = format!("%7\r\n{}{modules3}", fields(3));
    r.roundtrip(&cmd(&["HELLO", "3"]), hello3.as_bytes());
    r.roundtrip(
        &cmd(&["HELLO", "4"]),
        b"-NOPROTO unsupported protocol version\r\n",
    );
    // RESP3 replies come from RESP3 backend connections, byte for byte.
    r.roundtrip(&cmd(&["DEL", "core-r3-h"]), b":0\r\n");
    r.roundtrip(&cmd(&["HSET", "core-r3-h", "f", "v"]), b":1\r\n");
    r.roundtrip(
        &cmd(&["HGETALL", "core-r3-h"]),
        b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n",
    );
    r.roundtrip(&cmd(&["GET", "core-r3-missing"]), b"_\r\n");
    let keys = keys_in_distinct_slots(2, "core-r3-");
    r.roundtrip(&cmd(&["SET", &keys[0], "1"]), b"+OK\r\n");
    r.roundtrip(
        &cmd(&["MGET", &keys[0], &keys[1]]),
        b"*2\r\n$1\r\n1\r\n_\r\n",
    );
    r.roundtrip(&cmd(&["CLIENT", "GETNAME"]), b"_\r\n");
    r.roundtrip(&cmd(&["HELLO", "2", "SETNAME", "app1"]), hello2.as_bytes());
    r.roundtrip(&cmd(&["CLIENT", "GETNAME"]), b"$4\r\napp1\r\n");
    r.roundtrip(
        &cmd(&["HGETALL", "core-r3-h"]),
        b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n",
    );
    r.roundtrip(&cmd(&["GET", "core-r3-missing"]), b"$-1\r\n");
}

#[test]
fn inline_commands_work() {
    let mut r = raw();
    r.roundtrip(b"PING\r\n", b"+PONG\r\n");
    r.roundtrip(b"set core-inline \"hello world\"\r\n", b"+OK\r\n");
    r.roundtrip(b"get core-inline\n", b"$11\r\nhello world\r\n");
    r.roundtrip(b"\r\nECHO 'x y'\r\n", b"$3\r\nx y\r\n");
}

#[test]
fn binary_and_large_values() {
    let mut c = proxy_conn();
    let binary: Vec<u8> = (0..=255u8)
        .chain(b"\r\n$-1\r\n*3\r\n".iter().copied())
        .collect();
    let _: () = redis::cmd("SET")
        .arg(b"core-bin-\x00\xff\r\n")
        .arg(&binary)
        .query(&mut c)
        .unwrap();
    let got: Vec<u8> = redis::cmd("GET")
        .arg(b"core-bin-\x00\xff\r\n")
        .query(&mut c)
        .unwrap();
    assert_eq!(got, binary);
    let big: Vec<u8> = (0..12 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let keys = keys_in_distinct_slots(2, "core-big-");
    let _: () = redis::cmd("SET")
        .arg(&keys[0])
        .arg(&big)
        .query(&mut c)
        .unwrap();
    let got: Vec<u8> = redis::cmd("GET").arg(&keys[0]).query(&mut c).unwrap();
    assert!(got == big, "12 MB value came back different");
    let _: () = redis::cmd("SET")
        .arg(&keys[1])
        .arg(&binary)
        .query(&mut c)
        .unwrap();
    let got: Vec<Vec<u8>> = redis::cmd("MGET")
        .arg(&keys[0])
        .arg(&keys[1])
        .query(&mut c)
        .unwrap();
    assert!(got[0] == big && got[1] == binary);
}

#[test]
fn deep_mixed_pipeline_replies_in_order() {
    let mut c = proxy_conn();
    let keys = keys_in_distinct_slots(16, "core-pipe-");
    let mut pipe = redis::pipe();
    let mut expected: Vec<Value> = Vec::new();
    for i in 0..10_000usize {
        let k = &keys[(i / 5) % keys.len()];
        match i % 5 {
            0 => {
                pipe.cmd("SET").arg(k).arg(i);
                expected.push(Value::Okay);
            }
            1 => {
                pipe.cmd("GET").arg(k);
                expected.push(Value::BulkString((i - 1).to_string().into_bytes()));
            }
            2 => {
                pipe.cmd("MGET")
                    .arg(k)
                    .arg(&keys[(i + 3) % keys.len()])
                    .arg("core-pipe-none");
                expected.push(Value::Nil); // placeholder, checked below
            }
            3 => {
                pipe.cmd("INCR").arg(format!("core-pipe-ctr-{}", i % 7));
                expected.push(Value::Nil); // checked below
            }
            _ => {
                pipe.cmd("EXISTS").arg(k).arg("core-pipe-none").arg(k);
                expected.push(Value::Int(2));
            }
        }
    }
    let got: Vec<Value> = pipe.query(&mut c).unwrap();
    assert_eq!(got.len(), 10_000);
    let mut counters = [0i64; 7];
    for (i, (g, e)) in got.iter().zip(expected.iter()).enumerate() {
        match i % 5 {
            2 => match g {
                Value::Array(items) => {
                    assert_eq!(items.len(), 3, "reply {i}");
                    assert_eq!(
                        items[0],
                        Value::BulkString((i - 2).to_string().into_bytes()),
                        "reply {i}"
                    );
                    assert_eq!(items[2], Value::Nil, "reply {i}");
                }
                other => panic!("reply {i}: {other:?}"),
            },
            3 => {
                counters[i % 7] += 1;
                assert_eq!(*g, Value::Int(counters[i % 7]), "reply {i}");
            }
            _ => assert_eq!(g, e, "reply {i}"),
        }
    }
}

#[test]
fn protocol_errors_close_only_the_bad_connection() {
    let mut good = raw();
    good.roundtrip(b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n");
    let mut bad = raw();
    bad.send(b"*1\r\n$x\r\n");
    bad.expect(b"-ERR Protocol error: invalid bulk length\r\n");
    assert!(bad.is_closed());
    let mut bad = raw();
    bad.send(b"*2\r\n$3\r\nGET\r\n$99999999999\r\n");
    bad.expect(b"-ERR Protocol error: invalid bulk length\r\n");
    assert!(bad.is_closed());
    let mut bad = raw();
    bad.send(b"*3\r\n:1\r\n");
    bad.expect(b"-ERR Protocol error: expected '$', got ':'\r\n");
    assert!(bad.is_closed());
    let mut bad = raw();
    bad.send(b"*99999999999\r\n");
    bad.expect(b"-ERR Protocol error: invalid multibulk length\r\n");
    assert!(bad.is_closed());
    // A declared-but-unsent 500 MB value allocates nothing and blocks nobody.
    let mut slow = raw();
    slow.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$500000000\r\nabc");
    good.roundtrip(&cmd(&["ECHO", "still here"]), b"$10\r\nstill here\r\n");
    drop(slow);
    // Replies queued before the error are still delivered in order.
    let mut bad = raw();
    bad.send(b"*1\r\n$4\r\nPING\r\n*1\r\n$x\r\n");
    bad.expect(b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n");
    assert!(bad.is_closed());
    good.roundtrip(b"PING\r\n", b"+PONG\r\n");
}

#[test]
fn quit_replies_ok_and_closes() {
    let mut r = raw();
    r.send(b"*1\r\n$4\r\nQUIT\r\n*1\r\n$4\r\nPING\r\n");
    r.expect(b"+OK\r\n");
    assert!(r.is_closed());
}

/// Two keys of this test's prefix that live on different masters.
fn keys_on_two_masters(prefix: &str) -> (String, String) {
    let cluster = &env().0;
    let first = format!("{prefix}:0");
    let home = cluster.node_for_key(first.as_bytes());
    let other = (1..)
        .map(|i| format!("{prefix}:{i}"))
        .find(|k| cluster.node_for_key(k.as_bytes()) != home)
        .unwrap();
    (first, other)
}

#[test]
fn a_pipelined_batch_is_answered_in_one_write() {
    // Like Redis, which writes the replies to one read's commands at once:
    // a fast reply from one master waits for the slow one from another
    // rather than being written on its own.
    let (fast, slow) = keys_on_two_masters("core-batch");
    let mut c = raw();
    for _ in 0..3 {
        let mut batch = cmd(&["SET", &fast, "v"]);
        batch.extend(cmd(&["EVAL", common::BUSY_SCRIPT, "1", &slow, "50000"]));
        c.send(&batch);
        let first = c.read_once(Duration::from_secs(5));
        assert_eq!(first, b"+OK\r\n:1\r\n", "{}", common::escape(&first));
    }
}

#[test]
fn a_blocking_command_does_not_hold_back_earlier_replies() {
    let (key, list) = keys_on_two_masters("core-batch-block");
    let mut c = raw();
    let mut batch = cmd(&["SET", &key, "v"]);
    batch.extend(cmd(&["BLPOP", &list, "1"]));
    let start = Instant::now();
    c.send(&batch);
    assert_eq!(c.read_once(Duration::from_secs(5)), b"+OK\r\n");
    assert!(start.elapsed() < Duration::from_millis(500));
    c.expect(b"*-1\r\n");
    assert!(start.elapsed() >= Duration::from_millis(950));
}

#[test]
fn private_connections_of_a_client_that_left_are_all_released() {
    // Two pipelined blocking commands: the first waits on a private
    // connection, the second behind it (as on one server); when the
    // client leaves, the connection must close. With room for two, a
    // leaked one shows in the next rounds as a refusal.
    let cluster = Cluster::start(3, 0);
    let (_dir, proxy) = proxy_with_config(&cluster, "[limits]\nmax_private_connections = 2\n");
    for round in 0..3 {
        let mut gone = RawClient::connect(proxy.port);
        let mut batch = cmd(&["BLPOP", &format!("left-a-{round}"), "0"]);
        batch.extend(cmd(&["BLPOP", &format!("left-b-{round}"), "0"]));
        gone.send(&batch);
        std::thread::sleep(Duration::from_millis(300));
        drop(gone);
        let mut next = RawClient::connect(proxy.port);
        let mut check = cmd(&["BLPOP", "left-none-a", "0.1"]);
        check.extend(cmd(&["BLPOP", "left-none-b", "0.1"]));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            next.send(&check);
            let got = next.read_available(Duration::from_millis(600));
            if got == b"*-1\r\n*-1\r\n" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: {:?}",
                String::from_utf8_lossy(&got)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // A worker popping in a loop reuses its private connection: the node
    // sees one new connection, not one per pop.
    let queue = "reuse-q";
    let node = cluster.node_for_key(queue.as_bytes());
    let connections = |cluster: &Cluster| -> i64 {
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query(&mut cluster.conn(node))
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    let mut worker = RawClient::connect(proxy.port);
    worker.roundtrip(&cmd(&["RPUSH", queue, "a", "b", "c"]), b":3\r\n");
    let before = connections(&cluster);
    for job in ["a", "b", "c"] {
        let want = format!("*2\r\n$7\r\n{queue}\r\n$1\r\n{job}\r\n");
        worker.roundtrip(&cmd(&["BLPOP", queue, "1"]), want.as_bytes());
    }
    worker.roundtrip(&cmd(&["BLPOP", queue, "0.1"]), b"*-1\r\n");
    // Not blocked once answered, though its connection stays open.
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query(&mut proxy.conn())
        .unwrap();
    assert!(info.contains("\r\nblocked_clients:0\r\n"), "{info}");
    // The INFO connection above is one more.
    assert!(connections(&cluster) - before <= 2);
}

#[test]
fn blocking_commands_do_not_stall_others() {
    let key = "core-block-q";
    let mut blocked = raw();
    blocked.send(&cmd(&["BLPOP", key, "5"]));
    std::thread::sleep(Duration::from_millis(200));
    // Other clients run at full speed while one is blocked.
    let mut c = proxy_conn();
    let start = Instant::now();
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg("core-block-other")
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(2));
    let n: i64 = redis::cmd("RPUSH")
        .arg(key)
        .arg("job")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1);
    blocked.expect(b"*2\r\n$12\r\ncore-block-q\r\n$3\r\njob\r\n");
    // Timeout semantics are Redis's own.
    let start = Instant::now();
    blocked.roundtrip(&cmd(&["BLPOP", key, "0.5"]), b"*-1\r\n");
    assert!(start.elapsed() >= Duration::from_millis(450));
    // The connection is still usable afterwards.
    blocked.roundtrip(b"PING\r\n", b"+PONG\r\n");
}

#[test]
fn moved_after_slot_migration_is_followed() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&cluster);
    let key = key_for_slot(4242, "core-moved-");
    let mut c = proxy.conn();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("before")
        .query(&mut c)
        .unwrap();
    let from = cluster.node_for_slot(4242);
    let to = *cluster.master_ports().iter().find(|&&p| p != from).unwrap();
    cluster.migrate_slot(4242, to);
    // The proxy still has the old owner: it must follow MOVED, not leak it.
    let v: String = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
    assert_eq!(v, "before");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("after")
        .query(&mut c)
        .unwrap();
    let direct: String = redis::cmd("GET")
        .arg(&key)
        .query(&mut cluster.conn(to))
        .unwrap();
    assert_eq!(direct, "after");
    let other = keys_in_distinct_slots(3, "core-moved-x-");
    let mut mget = redis::cmd("MGET");
    mget.arg(&key).arg(&other);
    let got: Vec<Option<String>> = mget.query(&mut c).unwrap();
    assert_eq!(got, vec![Some("after".to_string()), None, None, None]);
}

#[test]
fn a_moved_command_inside_a_pipelined_group_is_followed_alone() {
    // Pipelined commands for one master leave as one request; when the
    // proxy's map is stale for one of them, that one is redirected and the
    // others' replies stay where they belong.
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&cluster);
    let moved_slot = 9000;
    let from = cluster.node_for_slot(moved_slot);
    let stays: Vec<String> = (1..)
        .map(|d| moved_slot + d)
        .filter(|&s| cluster.node_for_slot(s) == from)
        .take(2)
        .map(|s| key_for_slot(s, "core-group-"))
        .collect();
    let moved = key_for_slot(moved_slot, "core-group-");
    let mut c = RawClient::connect(proxy.port);
    let mut setup = Vec::new();
    for (k, v) in [(&moved, "m"), (&stays[0], "a"), (&stays[1], "b")] {
        setup.extend(cmd(&["SET", k, v]));
    }
    c.roundtrip(&setup, b"+OK\r\n+OK\r\n+OK\r\n");
    let to = *cluster.master_ports().iter().find(|&&p| p != from).unwrap();
    cluster.migrate_slot(moved_slot, to);
    let mut batch = Vec::new();
    batch.extend(cmd(&["GET", &stays[0]]));
    batch.extend(cmd(&["GET", &moved]));
    batch.extend(cmd(&["SET", &moved, "m2"]));
    batch.extend(cmd(&["GET", &stays[1]]));
    batch.extend(cmd(&["GET", &moved]));
    batch.extend(cmd(&["MGET", &stays[1], &moved, &stays[0]]));
    c.roundtrip(
        &batch,
        b"$1\r\na\r\n$1\r\nm\r\n+OK\r\n$1\r\nb\r\n$2\r\nm2\r\n*3\r\n$1\r\nb\r\n$2\r\nm2\r\n$1\r\na\r\n",
    );
    let direct: String = redis::cmd("GET")
        .arg(&moved)
        .query(&mut cluster.conn(to))
        .unwrap();
    assert_eq!(direct, "m2");
}

/// A proxy of its own for `cluster`, started with the configuration `toml`
/// (the directory holding it lives as long as the returned guard).
fn proxy_with_config(cluster: &Cluster, toml: &str) -> (TempDir, Proxy) {
    let dir = TempDir::new("core-config");
    let path = dir.path().join("slotbridge.toml");
    std::fs::write(&path, toml).unwrap();
    let proxy = Proxy::start_with(cluster, &["--config", path.to_str().unwrap()]);
    (dir, proxy)
}

#[test]
fn a_read_sent_to_a_master_as_replica_stand_in_follows_the_write_before_it() {
    // read_from = replica_preferred on a cluster without replicas: reads
    // go to the masters, and a pipelined read must not overtake the write
    // the same client sent before it.
    let cluster = Cluster::start(3, 0);
    let (_dir, proxy) = proxy_with_config(&cluster, "read_from = \"replica_preferred\"\n");
    let mut c = RawClient::connect(proxy.port);
    for i in 0..20 {
        let key = format!("core-read-order-{i}");
        let mut batch = cmd(&["SET", &key, "v1"]);
        batch.extend(cmd(&["GET", &key]));
        batch.extend(cmd(&["SET", &key, "v2"]));
        batch.extend(cmd(&["GET", &key]));
        c.roundtrip(&batch, b"+OK\r\n$2\r\nv1\r\n+OK\r\n$2\r\nv2\r\n");
    }
}

#[test]
fn a_request_timeout_inside_a_pipeline_answers_every_command_once_in_order() {
    // A thousand pipelined INCRs and a slow script for one master, staged
    // as one or more requests. Redis answers the INCRs it reads before the
    // script; the script holds the server past the proxy's request
    // timeout, so the connection is dropped. Every command gets exactly
    // one reply, in order: the answered INCRs theirs (a client retrying on
    // the error would run them twice), the others the connection error.
    // (Replies of one request that arrived before a failure are kept:
    // backend::conn::tests::a_failure_keeps_the_replies_that_arrived.)
    let cluster = Cluster::start(3, 0);
    let (_dir, proxy) = proxy_with_config(&cluster, "[backend]\nrequest_timeout_ms = 300\n");
    let mut c = RawClient::connect(proxy.port);
    let mut batch = Vec::new();
    for i in 0..1000 {
        batch.extend(cmd(&["INCR", &format!("{{core-gf}}:{i:05}")]));
    }
    batch.extend(cmd(&[
        "EVAL",
        common::BUSY_SCRIPT,
        "1",
        "{core-gf}:busy",
        "900000",
    ]));
    batch.extend(cmd(&["INCR", "{core-gf}:last"]));
    c.send(&batch);
    let got = c.read_available(Duration::from_secs(4));
    let text = String::from_utf8_lossy(&got);
    let replies: Vec<&str> = text.split_terminator("\r\n").collect();
    assert_eq!(replies.len(), 1002, "{}", common::escape(&got));
    let answered = replies.iter().take_while(|r| **r == ":1").count();
    assert!((1..1000).contains(&answered), "answered {answered}");
    for r in &replies[answered..] {
        assert!(
            r.starts_with("-ERR slotbridge: connection to node ")
                && r.contains("lost before the reply: no reply within"),
            "{r}"
        );
    }
}

#[test]
fn ask_during_migration_is_followed() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&cluster);
    let slot = 777;
    let moved_key = key_for_slot(slot, "core-ask-a-");
    let staying_key = key_for_slot(slot, "core-ask-b-");
    let new_key = key_for_slot(slot, "core-ask-c-");
    let mut c = proxy.conn();
    let _: () = redis::cmd("SET")
        .arg(&moved_key)
        .arg("a")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&staying_key)
        .arg("b")
        .query(&mut c)
        .unwrap();
    let from = cluster.node_for_slot(slot);
    let to = *cluster.master_ports().iter().find(|&&p| p != from).unwrap();
    cluster.begin_migration(slot, to);
    cluster.migrate_key(slot, moved_key.as_bytes(), to);
    // The source now answers -ASK for the moved key.
    let direct = redis::cmd("GET")
        .arg(&moved_key)
        .query::<String>(&mut cluster.conn(from));
    assert!(direct.is_err());
    let v: String = redis::cmd("GET").arg(&moved_key).query(&mut c).unwrap();
    assert_eq!(v, "a");
    let v: String = redis::cmd("GET").arg(&staying_key).query(&mut c).unwrap();
    assert_eq!(v, "b");
    // A new key in a migrating slot is created on the target (via ASK).
    let _: () = redis::cmd("SET")
        .arg(&new_key)
        .arg("c")
        .query(&mut c)
        .unwrap();
    cluster.finish_migration(slot, to);
    let v: String = redis::cmd("GET")
        .arg(&new_key)
        .query(&mut cluster.conn(to))
        .unwrap();
    assert_eq!(v, "c");
    let got: Vec<String> = redis::cmd("MGET")
        .arg(&moved_key)
        .arg(&new_key)
        .query(&mut c)
        .unwrap();
    assert_eq!(got, vec!["a".to_string(), "c".to_string()]);
}

/// A script that uses a key it does not declare (run on any master) gets
/// the node's error, which one server never gives, with what to do.
#[test]
fn a_script_using_undeclared_keys_is_told_what_to_do() {
    let mut c = raw();
    let mut errors = 0;
    // Keyless scripts rotate over the masters (other tests' too).
    for _ in 0..30 {
        if errors >= 2 {
            break;
        }
        c.send(&cmd(&[
            "EVAL",
            "return redis.call('GET', 'core-undeclared')",
            "0",
        ]));
        let got = String::from_utf8_lossy(&c.read_reply()).into_owned();
        if got.starts_with('-') {
            errors += 1;
            assert!(
                (got.starts_with("-ERR Script attempted to access a non local key")
                    || (common::server_version().valkey_at_least(9, 0, 0)
                        && got.starts_with("-ERR Attempted to access a non local key")))
                    && got.ends_with("; declare every key it uses, or put the keys it builds itself in one slot with a [[colocate]] rule)\r\n"),
                "{got}"
            );
        } else {
            assert_eq!(got, "$-1\r\n");
        }
    }
    // Three masters, one of them the key's: the others refuse.
    assert_eq!(errors, 2);
}
