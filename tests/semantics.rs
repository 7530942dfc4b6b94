//! Single-node semantics of stateful and keyless commands through the proxy:
//! SCAN, RANDOMKEY, transactions, scripts, blocking commands.

mod common;

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{
    encode_command, key_for_slot, slot_of, wait_until, Cluster, Proxy, RawClient, Standalone,
    TempDir,
};

fn env() -> &'static (Cluster, Proxy) {
    static ENV: OnceLock<(Cluster, Proxy)> = OnceLock::new();
    ENV.get_or_init(|| {
        let cluster = Cluster::start(3, 0);
        let proxy = Proxy::start(&cluster);
        (cluster, proxy)
    })
}

fn cmd(args: &[&str]) -> Vec<u8> {
    let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    encode_command(&bytes)
}

fn raw() -> RawClient {
    RawClient::connect(env().1.port)
}

#[test]
fn scan_visits_every_key_exactly_once() {
    // Its own cluster: the count must be exact.
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let mut pipe = redis::pipe();
    for i in 0..10_000 {
        if i % 10 == 0 {
            pipe.cmd("SADD")
                .arg(format!("scan:set:{i}"))
                .arg("m")
                .ignore();
        } else {
            pipe.cmd("SET").arg(format!("scan:str:{i}")).arg(i).ignore();
        }
    }
    let _: () = pipe.query(&mut c).unwrap();
    let scan_all = |c: &mut redis::Connection, extra: &[&str]| -> Vec<String> {
        let mut cursor = 0u64;
        let mut seen = Vec::new();
        let mut zeros = 0;
        for _ in 0..100_000 {
            let mut q = redis::cmd("SCAN");
            q.arg(cursor);
            for e in extra {
                q.arg(*e);
            }
            let (next, keys): (u64, Vec<String>) = q.query(c).unwrap();
            seen.extend(keys);
            cursor = next;
            if cursor == 0 {
                zeros += 1;
                break;
            }
        }
        assert_eq!(zeros, 1, "the iteration must end with cursor 0");
        seen
    };
    let all = scan_all(&mut c, &["COUNT", "500"]);
    assert_eq!(all.len(), 10_000, "every key exactly once");
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), 10_000);
    let sets = scan_all(&mut c, &["TYPE", "set"]);
    assert_eq!(sets.len(), 1000);
    assert!(sets.iter().all(|k| k.starts_with("scan:set:")));
    let matched = scan_all(&mut c, &["MATCH", "scan:str:99*"]);
    let mut want: Vec<String> = (0..10_000)
        .filter(|i| i % 10 != 0)
        .map(|i| format!("scan:str:{i}"))
        .filter(|k| k.starts_with("scan:str:99"))
        .collect();
    let mut got = matched;
    got.sort();
    want.sort();
    assert_eq!(got, want);
    // Cursors are plain decimal integers; a bad one is refused like Redis does.
    let mut r = RawClient::connect(proxy.port);
    r.roundtrip(&cmd(&["SCAN", "abc"]), b"-ERR invalid cursor\r\n");
    r.roundtrip(&cmd(&["SCAN", "1023"]), b"*2\r\n$1\r\n0\r\n*0\r\n");
    // RANDOMKEY finds a key even when most masters are empty.
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    r.roundtrip(&cmd(&["RANDOMKEY"]), b"$-1\r\n");
    let _: () = redis::cmd("SET")
        .arg("only-key")
        .arg("1")
        .query(&mut c)
        .unwrap();
    for _ in 0..6 {
        r.roundtrip(&cmd(&["RANDOMKEY"]), b"$8\r\nonly-key\r\n");
    }
    // A small keyspace comes back from one call, as from one server: a
    // master that is done before COUNT keys were found hands over to the
    // next one within the call.
    let mut want = vec!["only-key".to_string()];
    for slot in [100, 9000, 16000] {
        let k = key_for_slot(slot, "small-");
        let _: () = redis::cmd("SET").arg(&k).arg(1).query(&mut c).unwrap();
        want.push(k);
    }
    want.sort();
    let (next, mut keys): (u64, Vec<String>) = redis::cmd("SCAN").arg(0).query(&mut c).unwrap();
    keys.sort();
    assert_eq!((next, keys), (0, want.clone()));
    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("MATCH")
        .arg("small-*")
        .arg("TYPE")
        .arg("string")
        .query(&mut c)
        .unwrap();
    assert_eq!((next, keys.len()), (0, 3));
    // With COUNT 1 each call stops once it has a key.
    let all = scan_all(&mut c, &["COUNT", "1"]);
    assert!(all.len() == 4, "{all:?}");
}

#[test]
fn transactions_in_one_slot() {
    let mut r = raw();
    r.roundtrip(&cmd(&["DEL", "{tx1}a", "{tx1}b"]), b":0\r\n");
    r.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["SET", "{tx1}a", "1"]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["INCR", "{tx1}a"]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["LPUSH", "{tx1}b", "x"]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["PING"]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["EXEC"]), b"*4\r\n+OK\r\n:2\r\n:1\r\n+PONG\r\n");
    // Runtime errors stay inside the EXEC array, as in Redis.
    r.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["INCR", "{tx1}b"]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["GET", "{tx1}a"]), b"+QUEUED\r\n");
    r.roundtrip(
        &cmd(&["EXEC"]),
        b"*2\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n$1\r\n2\r\n",
    );
    r.roundtrip(&cmd(&["EXEC"]), b"-ERR EXEC without MULTI\r\n");
    r.roundtrip(&cmd(&["DISCARD"]), b"-ERR DISCARD without MULTI\r\n");
    r.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    r.roundtrip(
        &cmd(&["MULTI"]),
        &common::server_version().inside_multi("multi", b"-ERR MULTI calls can not be nested\r\n"),
    );
    r.roundtrip(&cmd(&["SET", "{tx1}a", "99"]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["DISCARD"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["GET", "{tx1}a"]), b"$1\r\n2\r\n");
    // An empty transaction.
    r.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["EXEC"]), b"*0\r\n");
}

#[test]
fn cross_slot_transaction_aborts_like_redis() {
    let mut r = raw();
    let (a, b) = (key_for_slot(100, "txa-"), key_for_slot(9000, "txb-"));
    r.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["SET", &a, "1"]), b"+QUEUED\r\n");
    let want = "-CROSSSLOT Keys in request don't hash to the same slot (command 'set', slots 100 and 9000); all keys of a transaction must be in one slot: use a {hash tag} or a [[colocate]] rule, or transactions = \"per_slot\" in slotbridge's configuration (atomic per slot only)\r\n";
    r.roundtrip(&cmd(&["SET", &b, "1"]), want.as_bytes());
    r.roundtrip(
        &cmd(&["GET", "x", "y"]),
        b"-ERR wrong number of arguments for 'get' command\r\n",
    );
    r.roundtrip(
        &cmd(&["EXEC"]),
        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
    );
    r.roundtrip(&cmd(&["EXISTS", &a]), b":0\r\n");
    // A command over two slots that transactions = "per_slot" would
    // split (Django's set_many: MSET in MULTI) names that setting.
    r.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    let want = "-CROSSSLOT Keys in request don't hash to the same slot (command 'mset', slots 100 and 9000); all keys of a transaction must be in one slot: use a {hash tag} or a [[colocate]] rule, or transactions = \"per_slot\" in slotbridge's configuration (atomic per slot only)\r\n";
    r.roundtrip(&cmd(&["MSET", &a, "1", &b, "2"]), want.as_bytes());
    r.roundtrip(
        &cmd(&["EXEC"]),
        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
    );
    // An unknown subcommand is refused when queued, as by Redis.
    r.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    r.roundtrip(
        &cmd(&["XINFO", "FOO", &a]),
        b"-ERR unknown subcommand 'FOO'. Try XINFO HELP.\r\n",
    );
    r.roundtrip(
        &cmd(&["EXEC"]),
        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
    );
    // Pipelined commands around a transaction keep their order.
    let mut batch = Vec::new();
    for part in [
        cmd(&["SET", &a, "before"]),
        cmd(&["MULTI"]),
        cmd(&["GET", &a]),
        cmd(&["SET", &a, "inside"]),
        cmd(&["EXEC"]),
        cmd(&["GET", &a]),
        cmd(&["GET", &b]),
    ] {
        batch.extend(part);
    }
    r.send(&batch);
    r.expect(
        b"+OK\r\n+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n$6\r\nbefore\r\n+OK\r\n$6\r\ninside\r\n$-1\r\n",
    );
}

#[test]
fn pipelined_commands_keep_their_order_around_blocking_commands_and_watch() {
    // Blocking commands, WATCH and EXEC after WATCH run on connections of
    // their own: what the client sent before and after them must still
    // run before and after them, as on one server.
    let mut r = raw();
    let batch = |parts: &[&[&str]]| parts.iter().flat_map(|p| cmd(p)).collect::<Vec<u8>>();
    r.send(&batch(&[
        &["DEL", "po:q", "po:k"],
        &["RPUSH", "po:q", "x"],
        &["BLPOP", "po:q", "1"],
        &["DEL", "po:q"],
        &["LLEN", "po:q"],
        // Times out: the client's own later push does not feed it.
        &["BLPOP", "po:k", "0.2"],
        &["RPUSH", "po:k", "z"],
        &["LRANGE", "po:k", "0", "-1"],
    ]));
    r.expect(
        b":0\r\n:1\r\n*2\r\n$4\r\npo:q\r\n$1\r\nx\r\n:0\r\n:0\r\n*-1\r\n:1\r\n*1\r\n$1\r\nz\r\n",
    );
    // A write of its own after WATCH aborts the transaction; one before
    // does not; a read after EXEC sees what EXEC wrote.
    r.send(&batch(&[
        &["SET", "{po}w", "1"],
        &["WATCH", "{po}w"],
        &["MULTI"],
        &["INCR", "{po}w"],
        &["EXEC"],
        &["GET", "{po}w"],
        &["WATCH", "{po}w"],
        &["SET", "{po}w", "5"],
        &["MULTI"],
        &["INCR", "{po}w"],
        &["EXEC"],
        &["GET", "{po}w"],
    ]));
    r.expect(b"+OK\r\n+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n:2\r\n$1\r\n2\r\n+OK\r\n+OK\r\n+OK\r\n+QUEUED\r\n*-1\r\n$1\r\n5\r\n");
    // CONFIG SET runs in its place on every master; its error is the
    // nodes' own, inside EXEC's reply, as from one server.
    r.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["SET", "{po}c", "1"]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["CONFIG", "SET", "maxmemory", "bla"]), b"+QUEUED\r\n");
    r.roundtrip(
        &cmd(&["CONFIG", "SET", "lazyfree-lazy-user-del", "no"]),
        b"+QUEUED\r\n",
    );
    r.roundtrip(
        &cmd(&["EXEC"]),
        b"*3\r\n+OK\r\n-ERR CONFIG SET failed (possibly related to argument 'maxmemory') - argument must be a memory value\r\n+OK\r\n",
    );
    // A FLUSHALL after WATCH could not be undone on the other masters if
    // EXEC aborted: refused when queued.
    r.roundtrip(&cmd(&["WATCH", "{po}w"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    r.roundtrip(
        &cmd(&["FLUSHALL"]),
        b"-ERR slotbridge: 'flushall' cannot be used inside MULTI after WATCH on a cluster (the other masters would run it even if EXEC aborts): send it outside the transaction\r\n",
    );
    r.roundtrip(
        &cmd(&["EXEC"]),
        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
    );
    // A client that closes its side after sending: every command it sent
    // runs and is answered, as by one server, then the proxy closes.
    let mut half = std::net::TcpStream::connect(("127.0.0.1", env().1.port)).unwrap();
    let sent = batch(&[
        &["DEL", "{po}h"],
        &["WATCH", "{po}h"],
        &["SET", "{po}h", "1"],
        &["GET", "{po}h"],
    ]);
    std::io::Write::write_all(&mut half, &sent).unwrap();
    half.shutdown(std::net::Shutdown::Write).unwrap();
    half.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut half, &mut got).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        ":0\r\n+OK\r\n+OK\r\n$1\r\n1\r\n"
    );
}

#[test]
fn client_commands_answer_as_redis_7_0() {
    // What a differential run against one Redis 7.0 found different.
    let mut r = raw();
    r.roundtrip(
        &cmd(&["CLIENT", "NO-EVICT", "maybe"]),
        b"-ERR syntax error\r\n",
    );
    r.roundtrip(&cmd(&["CLIENT", "NO-EVICT", "on"]), b"+OK\r\n");
    // Redis 7.2's subcommands and 7.4's filter, unknown to 7.0 (newer
    // servers' answers: version_dependent_replies_follow_the_nodes).
    if !common::server_version().at_least(7, 2) {
        r.roundtrip(
            &cmd(&["CLIENT", "SETINFO", "lib-name", "x"]),
            b"-ERR unknown subcommand 'SETINFO'. Try CLIENT HELP.\r\n",
        );
        r.roundtrip(
            &cmd(&["CLIENT", "NO-TOUCH", "on"]),
            b"-ERR unknown subcommand 'NO-TOUCH'. Try CLIENT HELP.\r\n",
        );
    }
    let v = common::server_version();
    if !v.at_least(7, 4) && !v.valkey {
        r.roundtrip(
            &cmd(&["CLIENT", "KILL", "MAXAGE", "10"]),
            b"-ERR syntax error\r\n",
        );
    }
    // Valkey 8.1's filters take ids from 1 only.
    let no_ids: &[u8] = if v.valkey_at_least(8, 1, 0) {
        b"-ERR client-id should be greater than 0\r\n"
    } else {
        b"$0\r\n\r\n"
    };
    r.roundtrip(&cmd(&["CLIENT", "LIST", "ID", "0", "-1"]), no_ids);
    let ask = |r: &mut RawClient, args: &[&str]| {
        r.send(&cmd(args));
        r.read_available(Duration::from_millis(300))
    };
    assert_eq!(ask(&mut r, &["HELLO", "2", "SETNAME", ""])[0], b'*');
    r.roundtrip(&cmd(&["CLIENT", "GETNAME"]), b"$-1\r\n");
    r.roundtrip(
        &cmd(&["WAIT", "x", "0"]),
        b"-ERR value is not an integer or out of range\r\n",
    );
    r.roundtrip(&cmd(&["WAIT", "0", "-1"]), b"-ERR timeout is negative\r\n");
    r.send(&cmd(&["WAIT", "0", "0"]));
    assert_eq!(r.read_once(Duration::from_secs(2))[0], b':');
    let mut other = raw();
    other.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    other.roundtrip(&cmd(&["SET", "cc:a", "1"]), b"+QUEUED\r\n");
    let me = String::from_utf8(ask(&mut r, &["CLIENT", "INFO"])).unwrap();
    assert!(
        me.contains(" flags=e ") && me.contains(" multi=-1 "),
        "{me}"
    );
    // CLIENT SETINFO's fields, shown from Redis 7.2 on.
    let lib = " lib-name= lib-ver=";
    assert_eq!(
        me.contains(lib),
        common::server_version().at_least(7, 2),
        "{me}"
    );
    let list = String::from_utf8(ask(&mut r, &["CLIENT", "LIST"])).unwrap();
    assert!(
        list.contains(" flags=x ") && list.contains(" multi=1 "),
        "{list}"
    );
    other.roundtrip(&cmd(&["DISCARD"]), b"+OK\r\n");
    // RESP3: verbatim text, as Redis sends it.
    let _ = ask(&mut r, &["HELLO", "3"]);
    r.roundtrip(&cmd(&["CLIENT", "LIST", "ID", "999999"]), b"=4\r\ntxt:\r\n");
    let info = ask(&mut r, &["CLIENT", "INFO"]);
    assert!(info.starts_with(b"=") && info[..12].windows(4).any(|w| w == b"txt:"));
}

#[test]
fn watch_conflict_aborts_exec() {
    let mut r = raw();
    let mut other = raw();
    r.roundtrip(&cmd(&["SET", "{w}k", "1"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["WATCH", "{w}k", "{w}j"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["GET", "{w}k"]), b"$1\r\n1\r\n");
    other.roundtrip(&cmd(&["SET", "{w}k", "2"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["SET", "{w}k", "3"]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["EXEC"]), b"*-1\r\n");
    r.roundtrip(&cmd(&["GET", "{w}k"]), b"$1\r\n2\r\n");
    // Without a conflict the watched transaction commits.
    r.roundtrip(&cmd(&["WATCH", "{w}k"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["SET", "{w}k", "4"]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["EXEC"]), b"*1\r\n+OK\r\n");
    // UNWATCH forgets the watch.
    r.roundtrip(&cmd(&["WATCH", "{w}k"]), b"+OK\r\n");
    other.roundtrip(&cmd(&["SET", "{w}k", "5"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["UNWATCH"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["GET", "{w}k"]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["EXEC"]), b"*1\r\n$1\r\n5\r\n");
    // WATCH across slots is a clear error.
    let want = format!(
        "-CROSSSLOT Keys in request don't hash to the same slot (command 'watch', slots {} and {}); use a {{hash tag}} so that all keys of one command map to the same slot, or a [[colocate]] rule in slotbridge's configuration (unmodified apps)\r\n",
        common::slot_of(b"wa"),
        common::slot_of(b"wb")
    );
    r.roundtrip(&cmd(&["WATCH", "wa", "wb"]), want.as_bytes());
    r.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    r.roundtrip(
        &cmd(&["WATCH", "{w}k"]),
        &common::server_version()
            .inside_multi("watch", b"-ERR WATCH inside MULTI is not allowed\r\n"),
    );
    r.roundtrip(&cmd(&["DISCARD"]), b"+OK\r\n");
}

#[test]
fn scripts_survive_a_flushed_script_cache() {
    let (cluster, _) = env();
    let mut c = env().1.conn();
    let body = "return redis.call('INCRBY', KEYS[1], ARGV[1])";
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(body)
        .query(&mut c)
        .unwrap();
    assert_eq!(sha.len(), 40);
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .arg("0".repeat(40))
        .query(&mut c)
        .unwrap();
    assert_eq!(exists, vec![1, 0]);
    // Every master has it.
    for port in cluster.master_ports() {
        let e: Vec<i64> = redis::cmd("SCRIPT")
            .arg("EXISTS")
            .arg(&sha)
            .query(&mut cluster.conn(port))
            .unwrap();
        assert_eq!(e, vec![1], "master {port}");
    }
    let key = "script-counter";
    let _: () = redis::cmd("DEL").arg(key).query(&mut c).unwrap();
    let n: i64 = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg(key)
        .arg(5)
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 5);
    // The node loses its script cache (as after a failover): the proxy
    // reloads the script and the client never sees NOSCRIPT.
    let owner = cluster.node_for_key(key.as_bytes());
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut cluster.conn(owner))
        .unwrap();
    let n: i64 = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg(key)
        .arg(5)
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 10);
    // A script first seen through EVAL is remembered too.
    let body2 = "return redis.call('GET', KEYS[1])";
    let v: String = redis::cmd("EVAL")
        .arg(body2)
        .arg(1)
        .arg(key)
        .query(&mut c)
        .unwrap();
    assert_eq!(v, "10");
    let sha2: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(body2)
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut cluster.conn(owner))
        .unwrap();
    let v: String = redis::cmd("EVALSHA")
        .arg(&sha2)
        .arg(1)
        .arg(key)
        .query(&mut c)
        .unwrap();
    assert_eq!(v, "10");
    // An unknown script still gets Redis's own error.
    let mut r = raw();
    r.roundtrip(
        &cmd(&["EVALSHA", &"f".repeat(40), "1", key]),
        common::server_version().noscript(),
    );
    // A script the proxy can load where it is missing exists, although
    // the owner of the key lost it.
    r.roundtrip(&cmd(&["SCRIPT", "EXISTS", &sha2]), b"*1\r\n:1\r\n");
    // SCRIPT FLUSH through the proxy forgets scripts, as on one server.
    r.roundtrip(&cmd(&["SCRIPT", "FLUSH"]), b"+OK\r\n");
    r.roundtrip(
        &cmd(&["SCRIPT", "EXISTS", &sha2, &sha]),
        b"*2\r\n:0\r\n:0\r\n",
    );
    r.roundtrip(
        &cmd(&["EVALSHA", &sha2, "1", key]),
        common::server_version().noscript(),
    );
}

#[test]
fn credentials_of_the_nodes_are_not_changed_through_the_proxy() {
    let mut r = raw();
    r.roundtrip(
        &cmd(&["CONFIG", "SET", "requirepass", "locked-out"]),
        b"-ERR slotbridge: CONFIG SET of requirepass, masterauth or masteruser is not passed to the cluster (it would lock the proxy's own connections out); change the nodes' password on the nodes and in slotbridge's [backend] settings, the clients' password in its [auth] settings\r\n",
    );
    // Nor a node's own address: one value on every master would break
    // the cluster.
    r.roundtrip(
        &cmd(&["CONFIG", "SET", "bind", "127.0.0.2"]),
        b"-ERR slotbridge: CONFIG SET of bind is not passed to the cluster (it is each node's own address: one value on every master would break the cluster and the proxy's connections); set it on each node\r\n",
    );
    // Other parameters still reach every master.
    r.roundtrip(
        &cmd(&["CONFIG", "SET", "slowlog-max-len", "128"]),
        b"+OK\r\n",
    );
    r.roundtrip(&cmd(&["SET", "still-served", "1"]), b"+OK\r\n");
}

#[test]
fn fifty_blocked_clients_do_not_slow_others() {
    let proxy = &env().1;
    let mut blocked = Vec::new();
    for i in 0..50 {
        let mut r = RawClient::connect(proxy.port);
        r.send(&cmd(&["BLPOP", &format!("bq:{i}"), "10"]));
        blocked.push(r);
    }
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..5 {
        let url = proxy.url();
        handles.push(std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            for i in 0..400 {
                let k = format!("bq-other:{t}:{i}");
                let _: () = redis::cmd("SET").arg(&k).arg(i).query(&mut c).unwrap();
                let v: i64 = redis::cmd("GET").arg(&k).query(&mut c).unwrap();
                assert_eq!(v, i);
            }
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    let mut c = proxy.conn();
    for i in 0..50 {
        let _: () = redis::cmd("RPUSH")
            .arg(format!("bq:{i}"))
            .arg("v")
            .query(&mut c)
            .unwrap();
    }
    for (i, r) in blocked.iter_mut().enumerate() {
        let key = format!("bq:{i}");
        r.expect(format!("*2\r\n${}\r\n{key}\r\n$1\r\nv\r\n", key.len()).as_bytes());
    }
    // A client that disconnects while blocked releases its connection: the
    // key's next push is not swallowed by a dead waiter.
    let mut gone = RawClient::connect(proxy.port);
    gone.send(&cmd(&["BLPOP", "bq:gone", "0"]));
    std::thread::sleep(Duration::from_millis(200));
    drop(gone);
    std::thread::sleep(Duration::from_millis(200));
    let _: () = redis::cmd("RPUSH")
        .arg("bq:gone")
        .arg("kept")
        .query(&mut c)
        .unwrap();
    let v: Vec<String> = redis::cmd("LRANGE")
        .arg("bq:gone")
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .unwrap();
    assert_eq!(v, vec!["kept".to_string()]);
}

#[test]
fn cross_slot_set_reads_are_computed_in_the_proxy() {
    let mut c = env().1.conn();
    let (a, b, d) = (
        key_for_slot(10, "sets-a-"),
        key_for_slot(8000, "sets-b-"),
        key_for_slot(15000, "sets-d-"),
    );
    let _: () = redis::cmd("DEL")
        .arg(&a)
        .arg(&b)
        .arg(&d)
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SADD")
        .arg(&a)
        .arg("x")
        .arg("y")
        .arg("z")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SADD")
        .arg(&b)
        .arg("y")
        .arg("z")
        .arg("w")
        .query(&mut c)
        .unwrap();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let inter: Vec<String> = redis::cmd("SINTER").arg(&a).arg(&b).query(&mut c).unwrap();
    assert_eq!(sorted(inter), vec!["y", "z"]);
    let union: Vec<String> = redis::cmd("SUNION")
        .arg(&a)
        .arg(&b)
        .arg(&d)
        .query(&mut c)
        .unwrap();
    assert_eq!(sorted(union), vec!["w", "x", "y", "z"]);
    let diff: Vec<String> = redis::cmd("SDIFF").arg(&a).arg(&b).query(&mut c).unwrap();
    assert_eq!(diff, vec!["x"]);
    let n: i64 = redis::cmd("SINTERCARD")
        .arg(2)
        .arg(&a)
        .arg(&b)
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 2);
    let n: i64 = redis::cmd("SINTERCARD")
        .arg(2)
        .arg(&a)
        .arg(&b)
        .arg("LIMIT")
        .arg(1)
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1);
    let empty: Vec<String> = redis::cmd("SINTER").arg(&a).arg(&d).query(&mut c).unwrap();
    assert!(empty.is_empty());
    let _: () = redis::cmd("SET").arg(&d).arg("str").query(&mut c).unwrap();
    let mut r = raw();
    r.roundtrip(
        &cmd(&["SUNION", &a, &d]),
        b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
    );
}

#[test]
fn set_stores_across_slots_answer_as_one_redis() {
    let names = ["s:a", "s:b", "s:i", "s:j", "s:big", "s:str", "s:d"];
    let (reference, mut direct, mut through) = beside_reference("sstore", &names);
    let mut direct_conn = connection_to(&reference);
    let mut through_conn = env().1.conn();
    let mut big = vec!["SADD".to_string(), "s:big".to_string()];
    big.extend((0..5000).map(|i| format!("m{i}")));
    let big: Vec<&str> = big.iter().map(String::as_str).collect();
    for c in [&mut direct, &mut through] {
        c.roundtrip(&cmd(&["SADD", "s:a", "x", "y", "z", "7"]), b":4\r\n");
        c.roundtrip(&cmd(&["SADD", "s:b", "y", "w", "7"]), b":3\r\n");
        c.roundtrip(&cmd(&["SADD", "s:i", "1", "2", "-3"]), b":3\r\n");
        c.roundtrip(&cmd(&["SADD", "s:j", "2", "40000000000"]), b":2\r\n");
        c.roundtrip(&cmd(&big), b":5000\r\n");
        c.roundtrip(&cmd(&["SET", "s:str", "v"]), b"+OK\r\n");
    }
    let mut seen = Vec::new();
    for line in [
        "SET s:d old EX 100",
        "SUNIONSTORE s:d s:a s:b",
        "SINTERSTORE s:d s:a s:b",
        "SDIFFSTORE s:d s:a s:b",
        "SUNIONSTORE s:d s:i s:j",
        "SINTERSTORE s:d s:i s:j",
        "SDIFFSTORE s:d s:d s:a",
        "SUNIONSTORE s:d s:big s:a",
        "SDIFFSTORE s:d s:big s:a",
        "SINTERSTORE s:d s:a s:none",
        "SUNIONSTORE s:d s:a s:str",
        "SINTERSTORE s:d s:none s:str",
        "SDIFFSTORE s:d s:none s:a",
    ] {
        let line: Vec<&str> = line.split(' ').collect();
        direct.send(&cmd(&line));
        let expected = direct.read_reply();
        through.roundtrip(&cmd(&line), &expected);
        seen.push(String::from_utf8_lossy(&expected).into_owned());
        // The destination as stored: members, type, encoding, TTL.
        let members = |c: &mut redis::Connection| {
            let mut m: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
                .arg("s:d")
                .query(c)
                .unwrap_or_default();
            m.sort();
            m
        };
        assert_eq!(
            members(&mut through_conn),
            members(&mut direct_conn),
            "{line:?}"
        );
        same_answers(
            &mut direct_conn,
            &mut through_conn,
            &[
                &["TYPE", "s:d"][..],
                &["OBJECT", "ENCODING", "s:d"],
                &["TTL", "s:d"],
            ],
            &format!("{line:?}"),
        );
    }
    assert_eq!(seen[1], ":5\r\n");
    assert_eq!(seen[7], ":5004\r\n");
    assert_eq!(seen[9], ":0\r\n", "an empty result deletes");
    assert!(
        seen[11].starts_with("-WRONGTYPE"),
        "every key's type is checked"
    );
    two_step_write_order(
        [&mut direct, &mut through],
        &[&["SUNIONSTORE", "s:d", "s:a", "s:b"], &["SCARD", "s:d"]],
        b":5\r\n:5\r\n",
    );
}

/// A standalone reference server beside the proxy (and the directory it
/// lives in), with `names`, which must be in distinct slots, deleted on
/// both; and a client of each.
fn beside_reference(tag: &str, names: &[&str]) -> ((TempDir, Standalone), RawClient, RawClient) {
    let slots: HashSet<u16> = names.iter().map(|k| slot_of(k.as_bytes())).collect();
    assert_eq!(slots.len(), names.len(), "keys share a slot");
    let dir = TempDir::new(tag);
    let reference = Standalone::start(&dir);
    let mut direct = RawClient::connect(reference.port);
    let mut through = raw();
    for c in [&mut direct, &mut through] {
        let mut del = vec!["DEL"];
        del.extend(names);
        c.send(&cmd(&del));
        assert!(c.read_once(Duration::from_secs(5)).starts_with(b":"));
    }
    ((dir, reference), direct, through)
}

/// Sends `line` (space-separated) to the reference server and through the
/// proxy and asserts the same bytes come back; a `HELLO` only switches
/// both connections' protocol.
fn replay(direct: &mut RawClient, through: &mut RawClient, line: &str) {
    let line: Vec<&str> = line.split(' ').collect();
    direct.send(&cmd(&line));
    let expected = direct.read_reply();
    through.send(&cmd(&line));
    if line[0] == "HELLO" {
        let _ = through.read_available(Duration::from_millis(300));
        return;
    }
    through.expect(&expected);
}

/// A `redis` connection to the reference server of [`beside_reference`].
fn connection_to(reference: &(TempDir, Standalone)) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{}/", reference.1.port))
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Asserts that `queries` get the same answers from the reference server
/// and through the proxy (errors compared by their text).
fn same_answers(
    direct: &mut redis::Connection,
    through: &mut redis::Connection,
    queries: &[&[&str]],
    context: &str,
) {
    for query in queries {
        let mut q = redis::cmd(query[0]);
        for a in &query[1..] {
            q.arg(*a);
        }
        let answer =
            |c: &mut redis::Connection| q.query::<redis::Value>(c).map_err(|e| e.to_string());
        let want = answer(direct);
        assert_eq!(answer(through), want, "{context} then {query:?}");
    }
}

/// A command the proxy writes in two steps (its first line), pipelined
/// with others that use its result: they must run after its write, with
/// the same `replies` as from one server. Inside `MULTI` the proxy
/// refuses it.
fn two_step_write_order(clients: [&mut RawClient; 2], lines: &[&[&str]], replies: &[u8]) {
    let pipeline: Vec<u8> = lines.iter().flat_map(|l| cmd(l)).collect();
    let [direct, through] = clients;
    direct.roundtrip(&pipeline, replies);
    through.roundtrip(&pipeline, replies);
    through.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    through.send(&cmd(lines[0]));
    assert!(through
        .read_once(Duration::from_secs(5))
        .starts_with(b"-CROSSSLOT"));
    through.roundtrip(&cmd(&["DISCARD"]), b"+OK\r\n");
}

#[test]
fn bitop_across_slots_answers_as_one_redis() {
    let names = ["bit:a", "bit:b", "bit:n", "bit:l", "bit:e", "bit:r"];
    let (_reference, mut direct, mut through) = beside_reference("bitop", &names);
    for c in [&mut direct, &mut through] {
        c.roundtrip(
            &encode_command(&[b"SET", b"bit:a", b"\x01\x02\xff"]),
            b"+OK\r\n",
        );
        c.roundtrip(&encode_command(&[b"SET", b"bit:b", b"\xf0"]), b"+OK\r\n");
        c.roundtrip(&cmd(&["SET", "bit:n", "12345"]), b"+OK\r\n");
        c.roundtrip(&cmd(&["RPUSH", "bit:l", "x"]), b":1\r\n");
        c.roundtrip(&cmd(&["SET", "bit:e", ""]), b"+OK\r\n");
    }
    let mut seen = Vec::new();
    for line in [
        "SET bit:r old EX 100",
        "BITOP AND bit:r bit:a bit:b",
        "GET bit:r",
        "TTL bit:r",
        "BITOP or bit:r bit:a bit:b bit:n",
        "GET bit:r",
        "BITOP XOR bit:r bit:b bit:a",
        "GET bit:r",
        "BITOP NOT bit:r bit:a",
        "GET bit:r",
        "BITOP NOT bit:r bit:a bit:b",
        "BITOP FOO bit:r bit:a",
        "BITOP AND bit:r bit:none bit:other",
        "EXISTS bit:r",
        "BITOP AND bit:r bit:a bit:l",
        "BITOP AND bit:l bit:a bit:b",
        "TYPE bit:l",
        "BITOP OR bit:r bit:e bit:none",
        "BITOP AND bit:r bit:n bit:a bit:r",
        "GET bit:r",
    ] {
        let line: Vec<&str> = line.split(' ').collect();
        direct.send(&cmd(&line));
        let expected = direct.read_reply();
        through.roundtrip(&cmd(&line), &expected);
        seen.push(String::from_utf8_lossy(&expected).into_owned());
    }
    // The cases cover results, lengths, deletion and each error.
    assert_eq!(seen[1], ":3\r\n");
    assert_eq!(seen[3], ":-1\r\n", "BITOP drops the TTL");
    assert_eq!(seen[13], ":0\r\n", "an empty result deletes");
    for error in [
        "-ERR BITOP NOT must be called with a single source key.",
        "-ERR syntax error",
        "-WRONGTYPE Operation against a key holding the wrong kind of value",
    ] {
        assert!(
            seen.iter().any(|r| r.starts_with(error)),
            "{error}: {seen:?}"
        );
    }
    two_step_write_order(
        [&mut direct, &mut through],
        &[
            &["BITOP", "OR", "bit:r", "bit:a", "bit:b"],
            &["EXPIRE", "bit:r", "100"],
            &["STRLEN", "bit:r"],
        ],
        b":3\r\n:1\r\n:3\r\n",
    );
}

#[test]
fn sorted_set_algebra_across_slots_answers_as_one_redis() {
    let names = ["z:a", "z:b", "z:s", "z:l", "z:d", "z:big"];
    let (reference, mut direct, mut through) = beside_reference("zstore", &names);
    let mut direct_conn = connection_to(&reference);
    let mut through_conn = env().1.conn();
    for c in [&mut direct, &mut through] {
        c.roundtrip(
            &cmd(&["ZADD", "z:a", "1.1", "x", "2.2", "y", "3.3", "z"]),
            b":3\r\n",
        );
        c.roundtrip(
            &cmd(&["ZADD", "z:b", "0.1", "y", "1e300", "w", "-0.7", "x"]),
            b":3\r\n",
        );
        c.roundtrip(&cmd(&["SADD", "z:s", "x", "q"]), b":2\r\n");
        c.roundtrip(&cmd(&["RPUSH", "z:l", "1"]), b":1\r\n");
        let mut big = vec!["ZADD".to_string(), "z:big".to_string()];
        for i in 0..3000 {
            big.push(format!("{}", f64::from(i) / 7.0));
            big.push(format!("m{i}"));
        }
        let big: Vec<&str> = big.iter().map(String::as_str).collect();
        c.roundtrip(&cmd(&big), b":3000\r\n");
    }
    let mut seen = Vec::new();
    for line in [
        "ZUNIONSTORE z:d 2 z:a z:b",
        "ZUNIONSTORE z:d 3 z:a z:b z:s WEIGHTS 0.3 7 inf",
        "ZINTERSTORE z:d 2 z:a z:b AGGREGATE max",
        "ZINTERSTORE z:d 2 z:a z:s",
        "ZDIFFSTORE z:d 2 z:a z:b",
        "ZUNIONSTORE z:d 2 z:big z:a WEIGHTS 0.1 3 AGGREGATE min",
        "ZUNIONSTORE z:d 2 z:d z:b",
        "ZUNIONSTORE z:d 2 z:a z:l",
        "ZUNIONSTORE z:d 2 z:l z:a WEIGHTS x y",
        "ZUNIONSTORE z:d 2 z:a z:b WEIGHTS x y",
        "ZUNIONSTORE z:d 2 z:a z:b AGGREGATE avg",
        "ZDIFFSTORE z:d 2 z:a z:b WEIGHTS 1 1",
        "ZINTERSTORE z:d 2 z:none z:a",
        "ZINTERCARD 2 z:a z:b",
        "ZINTERCARD 3 z:a z:b z:s LIMIT 1",
        "ZINTERCARD 2 z:a z:b LIMIT -1",
        "ZINTERCARD 2 z:l z:b LIMIT -1",
        "ZINTERCARD 2 z:a z:b LIMIT x",
        "ZINTERCARD 2 z:a z:b LIMIT 007",
        "ZINTERCARD 2 z:a z:b LIMIT 5 limit 0",
        "ZINTERCARD 2 z:a z:b LIMIT -1 foo",
        "SINTERCARD 2 z:s z:a LIMIT -1",
        "SINTERCARD 2 z:s z:a LIMIT 1 LIMIT",
    ] {
        let line: Vec<&str> = line.split(' ').collect();
        direct.send(&cmd(&line));
        let expected = direct.read_reply();
        through.roundtrip(&cmd(&line), &expected);
        seen.push(String::from_utf8_lossy(&expected).into_owned());
        // The destination as stored: members, scores as the server prints
        // them, and its serialization (so its encoding too).
        same_answers(
            &mut direct_conn,
            &mut through_conn,
            &[
                &["ZRANGE", "z:d", "0", "-1", "WITHSCORES"][..],
                &["DUMP", "z:d"],
            ],
            &format!("{line:?}"),
        );
    }
    assert_eq!(seen[0], ":4\r\n");
    assert_eq!(seen[12], ":0\r\n", "an empty result deletes");
    for error in [
        "-WRONGTYPE Operation against a key holding the wrong kind of value",
        "-ERR weight value is not a float",
        "-ERR syntax error",
        "-ERR LIMIT can't be negative",
    ] {
        assert!(
            seen.iter().any(|r| r.starts_with(error)),
            "{error}: {seen:?}"
        );
    }
    // The reads: members in sorted-set order; with WITHSCORES the scores
    // are written by a node, as it writes doubles (RESP2 strings, RESP3
    // pairs of doubles).
    for proto in ["2", "3"] {
        for c in [&mut direct, &mut through] {
            c.send(&cmd(&["HELLO", proto]));
            assert!(!c.read_available(Duration::from_millis(100)).is_empty());
        }
        for line in [
            "ZUNION 2 z:a z:b",
            "ZUNION 2 z:a z:b WITHSCORES",
            "ZUNION 3 z:a z:b z:s WEIGHTS 0.3 7 inf WITHSCORES",
            "ZINTER 2 z:a z:b AGGREGATE max WITHSCORES",
            "ZINTER 2 z:a z:s",
            "ZDIFF 2 z:a z:b WITHSCORES",
            "ZDIFF 2 z:a z:b",
            "ZUNION 2 z:a z:l WITHSCORES",
            "ZUNION 2 z:a z:b WITHSCORES WEIGHTS x y",
            "ZDIFF 2 z:a z:b WEIGHTS 1 1",
            "ZINTER 2 z:none z:a WITHSCORES",
        ] {
            let line: Vec<&str> = line.split(' ').collect();
            direct.send(&cmd(&line));
            let expected = direct.read_available(Duration::from_millis(100));
            assert!(!expected.is_empty(), "{line:?}: no reply from redis");
            through.roundtrip(&cmd(&line), &expected);
        }
    }
    two_step_write_order(
        [&mut direct, &mut through],
        &[
            &["ZUNIONSTORE", "z:d", "2", "z:a", "z:b"],
            &["ZCARD", "z:d"],
            &["DEL", "z:d"],
        ],
        b":4\r\n:4\r\n:1\r\n",
    );
}

#[test]
fn pfcount_and_pfmerge_across_slots_answer_as_one_redis() {
    let names = [
        "hll:a", "hll:b", "hll:c", "hll:d", "hll:e", "hll:s", "hll:l", "hll:m", "hll:n", "hll:p",
        "hll:t", "hll:q",
    ];
    let (_reference, mut direct, mut through) = beside_reference("hll", &names);
    // Sparse runs covering 17 registers of 16,384: corrupt.
    let corrupt: &[u8] = b"HYLL\x01\0\0\0\0\0\0\0\0\0\0\0\x40\x10";
    // A two-byte run cut short: Redis reads its string's terminating zero.
    let cut: &[u8] = b"HYLL\x01\0\0\0\0\0\0\0\0\0\0\0\x40\xfe\x7f";
    let pfadd = |key: &str, prefix: &str, range: std::ops::Range<usize>| {
        let mut args: Vec<Vec<u8>> = vec![b"PFADD".to_vec(), key.as_bytes().to_vec()];
        args.extend(range.map(|i| format!("{prefix}{i}").into_bytes()));
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        encode_command(&refs)
    };
    for c in [&mut direct, &mut through] {
        // Sparse, dense (past hll-sparse-max-bytes), dense, sparse.
        c.roundtrip(&pfadd("hll:a", "x", 0..100), b":1\r\n");
        c.roundtrip(&pfadd("hll:b", "x", 50..5000), b":1\r\n");
        c.roundtrip(&pfadd("hll:c", "y", 0..20_000), b":1\r\n");
        c.roundtrip(&pfadd("hll:d", "z", 0..1), b":1\r\n");
        c.roundtrip(&encode_command(&[b"SET", b"hll:e", corrupt]), b"+OK\r\n");
        c.roundtrip(&encode_command(&[b"SET", b"hll:t", cut]), b"+OK\r\n");
        c.roundtrip(&cmd(&["SET", "hll:s", "hello"]), b"+OK\r\n");
        c.roundtrip(&cmd(&["RPUSH", "hll:l", "1"]), b":1\r\n");
    }
    let mut seen = Vec::new();
    for keys in [
        &["hll:a", "hll:b"][..],
        &["hll:a", "hll:d"],
        &["hll:a", "hll:b", "hll:c", "hll:d"],
        &["hll:c", "hll:a"],
        &["hll:b", "hll:b"],
        &["hll:a", "hll:none"],
        &["hll:none", "hll:d"],
        &["hll:a", "hll:s", "hll:l"],
        &["hll:a", "hll:l", "hll:s"],
        &["hll:a", "hll:e"],
        &["hll:e", "hll:l"],
        &["hll:t", "hll:a"],
    ] {
        let mut line = vec!["PFCOUNT"];
        line.extend(keys);
        direct.send(&cmd(&line));
        let expected = direct.read_once(Duration::from_secs(5));
        through.roundtrip(&cmd(&line), &expected);
        seen.push(String::from_utf8_lossy(&expected).into_owned());
    }
    // The cases cover counts and each of Redis's errors.
    assert!(seen[0].starts_with(":49"), "{seen:?}");
    for error in [
        "-WRONGTYPE Key is not a valid HyperLogLog string value.",
        "-WRONGTYPE Operation against a key holding the wrong kind of value",
        "-INVALIDOBJ Corrupted HLL object detected",
    ] {
        assert!(
            seen.iter().any(|r| r.starts_with(error)),
            "{error}: {seen:?}"
        );
    }
    // PFMERGE: the same replies, and destinations stored byte for byte as
    // one Redis stores them (sparse or dense, register by register).
    for line in [
        "PFMERGE hll:m hll:a hll:d",
        "GET hll:m",
        "PFMERGE hll:m hll:b",
        "GET hll:m",
        "PFMERGE hll:n hll:none hll:other",
        "GET hll:n",
        "PFMERGE hll:n hll:n hll:d hll:a",
        "GET hll:n",
        "PFCOUNT hll:n hll:m",
        "PFMERGE hll:l hll:a",
        "PFMERGE hll:s hll:a",
        "PFMERGE hll:m hll:a hll:e",
        "PFMERGE hll:m hll:none hll:l",
        "GET hll:m",
        "MULTI",
        "PFMERGE hll:m hll:a",
        "DISCARD",
    ] {
        let line: Vec<&str> = line.split(' ').collect();
        direct.send(&cmd(&line));
        let expected = direct.read_reply();
        if line[0] == "PFMERGE" && expected.starts_with(b"+QUEUED") {
            // A cluster cannot merge across slots inside a transaction.
            through.send(&cmd(&line));
            let got = through.read_once(Duration::from_secs(5));
            assert!(
                got.starts_with(b"-CROSSSLOT"),
                "{}",
                String::from_utf8_lossy(&got)
            );
            continue;
        }
        through.roundtrip(&cmd(&line), &expected);
    }
    // Pipelined commands after a merge run after it (its write leaves
    // only once its reads are in).
    let mut line = cmd(&["PFMERGE", "hll:p", "hll:a", "hll:d"]);
    line.extend(cmd(&["EXPIRE", "hll:p", "100"]));
    line.extend(cmd(&["PFCOUNT", "hll:p"]));
    line.extend(cmd(&["PFMERGE", "hll:p", "hll:c"]));
    line.extend(cmd(&["DEL", "hll:p"]));
    for c in [&mut direct, &mut through] {
        c.roundtrip(&line, b"+OK\r\n:1\r\n:100\r\n+OK\r\n:1\r\n");
    }
    // A client that closes right after sending a merge still gets it
    // done, as one server runs a command it received.
    for _ in 0..5 {
        let mut quitter = raw();
        quitter.send(&cmd(&["PFMERGE", "hll:q", "hll:a", "hll:d"]));
        drop(quitter);
        wait_until("the merge of a client gone", Duration::from_secs(5), || {
            through.send(&cmd(&["EXISTS", "hll:q"]));
            through.read_once(Duration::from_secs(5)) == b":1\r\n"
        });
        through.roundtrip(&cmd(&["DEL", "hll:q"]), b":1\r\n");
    }
    // The temporary key of each merge is gone.
    through.roundtrip(&cmd(&["KEYS", "*slotbridge*"]), b"*0\r\n");
    // RESP3 replies the same integer.
    for c in [&mut direct, &mut through] {
        c.send(&cmd(&["HELLO", "3"]));
        assert!(c.read_once(Duration::from_secs(5)).starts_with(b"%"));
    }
    let line = cmd(&["PFCOUNT", "hll:c", "hll:b", "hll:d"]);
    direct.send(&line);
    let expected = direct.read_once(Duration::from_secs(5));
    through.roundtrip(&line, &expected);
}

#[test]
fn client_list_shows_proxy_clients_and_wait_works() {
    let proxy = &env().1;
    let mut a = RawClient::connect(proxy.port);
    a.roundtrip(&cmd(&["CLIENT", "SETNAME", "worker-a"]), b"+OK\r\n");
    let mut c = proxy.conn();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
    assert!(
        list.lines().any(|l| l.contains(" name=worker-a ")),
        "{list}"
    );
    assert!(list.lines().count() >= 2);
    let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut c).unwrap();
    // The last field on 7.0 (7.2 adds lib-name and lib-ver after it).
    assert!(
        info.starts_with("id=") && info.contains(" resp=2"),
        "{info}"
    );
    // As on one server, the caller's query buffer holds its command (26
    // bytes), the other clients' are empty (Valkey 8 reads commands into
    // a shared buffer: all are empty).
    let valkey = common::server_version().valkey_at_least(8, 0, 0);
    let own = if valkey { " qbuf=0 " } else { " qbuf=26 " };
    assert!(info.contains(own), "{info}");
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
    let mine = list.lines().filter(|l| l.contains(" qbuf=26 ")).count();
    let others = list.lines().filter(|l| l.contains(" qbuf=0 ")).count();
    let expected = if valkey {
        (0, list.lines().count())
    } else {
        (1, list.lines().count() - 1)
    };
    assert_eq!((mine, others), expected, "{list}");
    // No replicas in this cluster: WAIT 0 returns at once with 0.
    let n: i64 = redis::cmd("WAIT").arg(0).arg(100).query(&mut c).unwrap();
    assert_eq!(n, 0);
}

/// The `id=` of a client, from `CLIENT ID`.
fn client_id(c: &mut RawClient) -> u64 {
    c.send(&cmd(&["CLIENT", "ID"]));
    let line = String::from_utf8(c.read_once(Duration::from_secs(5))).unwrap();
    line.trim_start_matches(':').trim_end().parse().unwrap()
}

#[test]
fn client_kill_and_list_filters_act_on_proxy_clients() {
    let proxy = &env().1;
    let mut admin = RawClient::connect(proxy.port);
    let mut idle = RawClient::connect(proxy.port);
    let idle_id = client_id(&mut idle);
    let mut blocked = RawClient::connect(proxy.port);
    let blocked_id = client_id(&mut blocked);
    let mut sub = RawClient::connect(proxy.port);
    let sub_id = client_id(&mut sub);
    sub.send(&cmd(&["SUBSCRIBE", "kill-ch"]));
    sub.expect(b"*3\r\n$9\r\nsubscribe\r\n$7\r\nkill-ch\r\n:1\r\n");
    sub.send(&cmd(&["PSUBSCRIBE", "kill-p*", "kill-q*"]));
    sub.expect(b"*3\r\n$10\r\npsubscribe\r\n$7\r\nkill-p*\r\n:2\r\n*3\r\n$10\r\npsubscribe\r\n$7\r\nkill-q*\r\n:3\r\n");
    sub.send(&cmd(&["SSUBSCRIBE", "kill-s"]));
    sub.expect(b"*3\r\n$10\r\nssubscribe\r\n$6\r\nkill-s\r\n:1\r\n");
    // LIST by type and by id.
    admin.send(&cmd(&["CLIENT", "LIST", "TYPE", "pubsub"]));
    let list = String::from_utf8(admin.read_once(Duration::from_secs(5))).unwrap();
    assert!(list.contains(&format!("id={sub_id} ")), "{list}");
    assert!(list.contains(" flags=P "), "{list}");
    assert!(list.contains(" sub=1 psub=2 ssub=1 "), "{list}");
    assert!(list.contains(" cmd=ssubscribe "), "{list}");
    assert!(!list.contains(&format!("id={idle_id} ")), "{list}");
    admin.send(&cmd(&[
        "CLIENT",
        "LIST",
        "ID",
        &idle_id.to_string(),
        "999999",
    ]));
    let list = String::from_utf8(admin.read_once(Duration::from_secs(5))).unwrap();
    assert_eq!(list.matches("id=").count(), 1, "{list}");
    admin.roundtrip(
        &cmd(&["CLIENT", "LIST", "TYPE", "bogus"]),
        b"-ERR Unknown client type 'bogus'\r\n",
    );
    admin.roundtrip(&cmd(&["CLIENT", "LIST", "TYPE", "replica"]), b"$0\r\n\r\n");
    // KILL closes a resting client, a blocked one and a subscriber.
    admin.roundtrip(
        &cmd(&["CLIENT", "KILL", "ID", &idle_id.to_string()]),
        b":1\r\n",
    );
    assert!(idle.is_closed_within(Duration::from_secs(5)));
    blocked.send(&cmd(&["BLPOP", "kill-never", "0"]));
    std::thread::sleep(Duration::from_millis(200));
    admin.roundtrip(
        &cmd(&[
            "CLIENT",
            "KILL",
            "ID",
            &blocked_id.to_string(),
            "SKIPME",
            "yes",
        ]),
        b":1\r\n",
    );
    assert!(blocked.is_closed_within(Duration::from_secs(5)));
    admin.roundtrip(
        &cmd(&[
            "CLIENT",
            "KILL",
            "TYPE",
            "pubsub",
            "ID",
            &sub_id.to_string(),
        ]),
        b":1\r\n",
    );
    assert!(sub.is_closed_within(Duration::from_secs(5)));
    admin.roundtrip(
        &cmd(&["CLIENT", "KILL", "127.0.0.1:1"]),
        b"-ERR No such client\r\n",
    );
    admin.roundtrip(
        &cmd(&["CLIENT", "KILL", "USER", "nobody"]),
        b"-ERR No such user 'nobody'\r\n",
    );
    // The old form may name the caller: it gets its reply, then is closed.
    admin.send(&cmd(&["CLIENT", "INFO"]));
    let info = String::from_utf8(admin.read_once(Duration::from_secs(5))).unwrap();
    let addr = info
        .split(" addr=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    admin.roundtrip(&cmd(&["CLIENT", "KILL", &addr]), b"+OK\r\n");
    assert!(admin.is_closed_within(Duration::from_secs(5)));
}

/// Commands of newer servers answer as one server of the installed
/// version: Valkey 9.1's `MSETEX` over several slots is split per slot
/// with the same options (values, TTLs, errors), and refused with
/// `CROSSSLOT` when `NX` or `XX` makes it all-or-nothing; Redis 7.2's
/// `ZRANK ... WITHSCORE` passes the arity the nodes give. Older servers
/// refuse both, and the proxy answers as they do.
#[test]
fn newer_commands_as_one_server() {
    let proxy = &env().1;
    let dir = TempDir::new("msetex");
    let reference = Standalone::start(&dir);
    let mut direct = RawClient::connect(reference.port);
    let mut through = RawClient::connect(proxy.port);
    let lines = [
        "MSETEX 3 msx:a 1 msx:b 2 msx:c 3 EX 100",
        "MGET msx:a msx:b msx:c",
        "TTL msx:b",
        "MSETEX 2 msx:a x msx:b y",
        "TTL msx:a",
        "MGET msx:a msx:b",
        "MSETEX 2 msx:a 1 msx:b 2 KEEPTTL",
        "MSETEX 2 {msx}a 1 {msx}b 2 NX",
        "MSETEX 2 {msx}a 1 {msx}b 2 NX",
        "MSETEX 2 msx:a 1 msx:b 2 EX abc",
        "MSETEX 2 msx:a 1 msx:b 2 EX -5",
        "MSETEX 2 msx:a 1 msx:b 2 EX 10 PX 100",
        "MSETEX 2 msx:a 1 msx:b 2 BOGUS",
        "MSETEX 0 msx:a 1",
        "MSETEX x msx:a 1",
        "MSETEX 3 msx:a 1 msx:b 2",
        "MSETEX 1 msx:a",
        "MSETEX 2 msx:a 1 msx:a 2 PX 50000",
        "GET msx:a",
        "MSETEX 2 msx:a 1 msx:b 2 PXAT 1",
        "MGET msx:a msx:b",
        "ZADD msx:z 1 a 2 b",
        "ZRANK msx:z b WITHSCORE",
        "ZREVRANK msx:z b withscore",
        "ZRANK msx:z b",
        "DEL msx:a msx:b msx:c {msx}a {msx}b msx:z",
    ];
    for line in lines {
        let args: Vec<&str> = line.split(' ').collect();
        direct.send(&cmd(&args));
        let expected = direct.read_reply();
        through.send(&cmd(&args));
        assert_eq!(
            common::escape(&through.read_reply()),
            common::escape(&expected),
            "{line}"
        );
    }
    if common::server_version().valkey_at_least(9, 1, 0) {
        through.send(&cmd(&["MSETEX", "2", "msx:a", "1", "msx:b", "2", "nx"]));
        let refused = through.read_reply();
        assert!(
            refused.starts_with(
                b"-CROSSSLOT Keys in request don't hash to the same slot (command 'msetex'"
            ),
            "{}",
            String::from_utf8_lossy(&refused)
        );
    }
}

/// Redis 8's `INFO keysizes`: the size histograms of all the masters'
/// keys, bin by bin, as one server holding them all shows them (before,
/// the first master's alone). Its own cluster, so that only these keys
/// count; nothing to compare before Redis 8.
#[test]
fn info_keysizes_counts_every_masters_keys() {
    let version = common::server_version();
    if version.valkey || !version.at_least(8, 0) {
        return;
    }
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&cluster);
    let dir = TempDir::new("keysizes");
    let reference = Standalone::start(&dir);
    let mut direct = RawClient::connect(reference.port);
    let mut through = RawClient::connect(proxy.port);
    for c in [&mut direct, &mut through] {
        for i in 0..40 {
            let value = "x".repeat(i * 29);
            let items: Vec<String> = (0..=i).map(|n| n.to_string()).collect();
            let mut lists = vec!["RPUSH".to_string(), format!("ks:l{i}")];
            lists.extend(items.iter().cloned());
            let lists: Vec<&str> = lists.iter().map(String::as_str).collect();
            let mut sets = vec!["SADD".to_string(), format!("ks:s{i}")];
            sets.extend(items.iter().cloned());
            let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
            c.roundtrip(&cmd(&["SET", &format!("ks:{i}"), &value]), b"+OK\r\n");
            c.send(&cmd(&lists));
            c.read_reply();
            if i % 4 == 0 {
                c.send(&cmd(&sets));
                c.read_reply();
            }
        }
    }
    direct.send(&cmd(&["INFO", "keysizes"]));
    let expected = direct.read_reply();
    through.send(&cmd(&["INFO", "keysizes"]));
    assert_eq!(
        common::escape(&through.read_reply()),
        common::escape(&expected)
    );
}

/// `CLIENT LIST` and `CLIENT KILL` filters compared with one server of the
/// installed version (Redis's few; Valkey 8.1's shared parser; Valkey 9's
/// `FLAGS`, `NAME`, `LIB-NAME`, `NOT-*` ...) over the same set of named
/// clients: the same clients listed or killed, the same errors.
#[test]
fn client_filters_as_one_server_of_the_version() {
    let proxy = Proxy::start(&env().0);
    let dir = TempDir::new("filters");
    let reference = Standalone::start(&dir);
    // The names of the clients a reply lists, or the reply itself.
    let names = |reply: Vec<u8>| -> String {
        let text = String::from_utf8_lossy(&reply).into_owned();
        if !text.starts_with('$') && !text.starts_with('=') {
            return text;
        }
        let mut names: Vec<&str> = text
            .split(" name=")
            .skip(1)
            .filter_map(|rest| rest.split(' ').next())
            .filter(|n| !n.is_empty())
            .collect();
        names.sort_unstable();
        format!("listed {names:?}")
    };
    let lines = [
        "CLIENT LIST TYPE pubsub",
        "CLIENT LIST TYPE normal SKIPME yes",
        "CLIENT LIST ID",
        "CLIENT LIST ID 0",
        "CLIENT LIST TYPE primary",
        "CLIENT LIST NOT-TYPE pubsub",
        "CLIENT LIST FLAGS N",
        "CLIENT LIST FLAGS P",
        "CLIENT LIST FLAGS t",
        "CLIENT LIST NOT-FLAGS N",
        "CLIENT LIST FLAGS Z",
        "CLIENT LIST NAME n1",
        "CLIENT LIST NOT-NAME n1",
        "CLIENT LIST LIB-NAME mylib",
        "CLIENT LIST NOT-LIB-NAME mylib",
        "CLIENT LIST LIB-VER 1.2",
        "CLIENT LIST DB 0",
        "CLIENT LIST NOT-DB 0",
        "CLIENT LIST DB x",
        "CLIENT LIST IP 127.0.0.1",
        "CLIENT LIST NOT-IP 127.0.0.1",
        "CLIENT LIST CAPA r",
        "CLIENT LIST CAPA q",
        "CLIENT LIST USER default",
        "CLIENT LIST USER nobody",
        "CLIENT LIST NOT-USER default",
        "CLIENT LIST MAXAGE 0",
        "CLIENT LIST MAXAGE 1000",
        "CLIENT LIST IDLE 1000",
        "CLIENT LIST SKIPME no NAME me",
        "CLIENT LIST TYPE",
        "CLIENT LIST bogus",
        "CLIENT KILL NAME nosuch",
        "CLIENT KILL MAXAGE 0",
        "CLIENT KILL TYPE normal NOT-NAME n1 NOT-FLAGS t",
        "CLIENT KILL FLAGS P",
        "CLIENT LIST",
    ];
    let mut replies = Vec::new();
    for port in [reference.port, proxy.port] {
        let mut me = RawClient::connect(port);
        me.roundtrip(&cmd(&["CLIENT", "SETNAME", "me"]), b"+OK\r\n");
        let mut others = Vec::new();
        for (name, setup) in [
            ("n1", &[][..]),
            ("sub1", &[&["SUBSCRIBE", "filters-ch"][..]][..]),
            (
                "lib1",
                &[
                    &["CLIENT", "SETINFO", "LIB-NAME", "mylib"][..],
                    &["CLIENT", "SETINFO", "LIB-VER", "1.2"][..],
                ][..],
            ),
            ("trk", &[&["CLIENT", "TRACKING", "on"][..]][..]),
        ] {
            let mut other = RawClient::connect(port);
            other.roundtrip(&cmd(&["CLIENT", "SETNAME", name]), b"+OK\r\n");
            for line in setup {
                other.send(&cmd(line));
                other.read_reply();
            }
            others.push(other);
        }
        let mut got = Vec::new();
        for line in lines {
            let args: Vec<&str> = line.split(' ').collect();
            me.send(&cmd(&args));
            got.push(names(me.read_reply()));
        }
        replies.push(got);
    }
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(replies[1][i], replies[0][i], "{line}");
    }
    let v = common::server_version();
    let killed_subscriber = &replies[0][lines.len() - 2];
    if v.valkey_at_least(9, 0, 0) {
        assert_eq!(killed_subscriber, ":1\r\n", "FLAGS P kills sub1");
    } else {
        assert_eq!(killed_subscriber, "-ERR syntax error\r\n");
    }
}

#[test]
fn server_introspection_looks_like_one_master() {
    // Its own cluster: the slow log and the counters are not shared with
    // other tests.
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&cluster);
    let mut r = RawClient::connect(proxy.port);
    let lastsave = |port: u16| -> i64 {
        redis::cmd("LASTSAVE")
            .query(&mut cluster.conn(port))
            .unwrap()
    };
    let saved: Vec<(u16, i64)> = cluster
        .master_ports()
        .into_iter()
        .map(|p| (p, lastsave(p)))
        .collect();
    r.roundtrip(&cmd(&["ROLE"]), b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n");
    r.roundtrip(&cmd(&["ACL", "WHOAMI"]), b"$7\r\ndefault\r\n");
    // The nodes' modules (none on 7.0; Redis 8 has vectorset built in).
    let mut node = RawClient::connect(cluster.master_ports()[0]);
    node.send(&cmd(&["MODULE", "LIST"]));
    r.roundtrip(&cmd(&["MODULE", "LIST"]), &node.read_reply());
    r.roundtrip(&cmd(&["AUTH", "a", "b", "c"]), b"-ERR syntax error\r\n");
    // The proxy's own reply has no place in a node's transaction.
    r.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    r.roundtrip(
        &cmd(&["ROLE"]),
        b"-ERR slotbridge: 'role' cannot be used inside MULTI on a cluster\r\n",
    );
    r.roundtrip(&cmd(&["DISCARD"]), b"+OK\r\n");
    // SLOWLOG of all masters: lengths summed, entries newest first.
    r.roundtrip(&cmd(&["SLOWLOG", "RESET"]), b"+OK\r\n");
    r.roundtrip(
        &cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]),
        b"+OK\r\n",
    );
    for (i, slot) in [100, 9000, 16000].into_iter().enumerate() {
        if i > 0 {
            // Entries carry unix seconds: one second apart, they sort.
            std::thread::sleep(Duration::from_millis(1100));
        }
        let k = key_for_slot(slot, "slow-");
        r.roundtrip(&cmd(&["SET", &k, "1"]), b"+OK\r\n");
    }
    r.roundtrip(
        &cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "10000"]),
        b"+OK\r\n",
    );
    let mut c = proxy.conn();
    let len: i64 = redis::cmd("SLOWLOG").arg("LEN").query(&mut c).unwrap();
    assert!(len >= 6, "{len}");
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(4)
        .query(&mut c)
        .unwrap();
    assert_eq!(entries.len(), 4);
    let time = |v: &redis::Value| -> i64 {
        let redis::Value::Array(fields) = v else {
            panic!("{v:?}")
        };
        redis::from_redis_value(fields[1].clone()).unwrap()
    };
    assert!(entries.windows(2).all(|w| time(&w[0]) >= time(&w[1])));
    // Among the newest: the last SET (after it only the CONFIG SETs).
    let args = |v: &redis::Value| -> Vec<String> {
        let redis::Value::Array(fields) = v else {
            panic!("{v:?}")
        };
        redis::from_redis_value(fields[3].clone()).unwrap()
    };
    let newest: Vec<Vec<String>> = entries.iter().map(args).collect();
    assert!(
        newest
            .iter()
            .any(|a| a[0].eq_ignore_ascii_case("set") && a[1] == key_for_slot(16000, "slow-")),
        "{newest:?}"
    );
    r.roundtrip(
        &cmd(&["SLOWLOG", "GET", "-5"]),
        b"-ERR count should be greater than or equal to -1\r\n",
    );
    // A parameter every master refuses: the one error, as one server says it.
    r.roundtrip(
        &cmd(&["CONFIG", "SET", "no-such-param", "1"]),
        b"-ERR Unknown option or number of arguments for CONFIG SET - 'no-such-param'\r\n",
    );
    // DEBUG ERROR, which client test suites use to fake a server's error,
    // answers as Redis does; the client goes on.
    r.roundtrip(
        &cmd(&["DEBUG", "ERROR", "LOADING fake message"]),
        b"-LOADING fake message\r\n",
    );
    r.roundtrip(&cmd(&["DEBUG", "SLEEP", "0"]), b"+OK\r\n");
    // The whole dataset is saved: every master (the SLOWLOG part above
    // took over a second, so LASTSAVE moves).
    r.roundtrip(&cmd(&["BGSAVE"]), b"+Background saving started\r\n");
    for (port, before) in saved {
        wait_until("a BGSAVE on every master", Duration::from_secs(10), || {
            lastsave(port) > before
        });
    }
    r.roundtrip(&cmd(&["MEMORY", "PURGE"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["LATENCY", "RESET"]), b":0\r\n");
    latency_and_memory_of_all_masters(&cluster, &proxy);
    // INFO inside a transaction describes all masters too; the proxy is a
    // master, so REPLICAOF NO ONE is done.
    r.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["INFO", "server"]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["SET", "tx-info", "1"]), b"+QUEUED\r\n");
    r.send(&cmd(&["EXEC"]));
    let exec = String::from_utf8_lossy(&r.read_available(Duration::from_millis(500))).into_owned();
    assert!(exec.starts_with("*2\r\n$"), "{exec}");
    assert!(
        exec.contains(common::server_version().standalone_mode_line())
            && exec.contains("slotbridge_masters:3"),
        "{exec}"
    );
    assert!(exec.ends_with("+OK\r\n"), "{exec}");
    r.roundtrip(&cmd(&["REPLICAOF", "NO", "ONE"]), b"+OK\r\n");
    r.send(&cmd(&["REPLICAOF", "127.0.0.1", "1"]));
    assert!(r
        .read_once(Duration::from_secs(5))
        .starts_with(b"-ERR slotbridge: REPLICAOF"));
    r.send(&cmd(&["FUNCTION", "STATS"]));
    let stats = String::from_utf8_lossy(&r.read_available(Duration::from_millis(300))).into_owned();
    assert!(
        stats.starts_with("*4\r\n$14\r\nrunning_script\r\n$-1\r\n$7\r\nengines"),
        "{stats}"
    );
    r.send(&cmd(&["MEMORY", "MALLOC-STATS"]));
    assert!(r
        .read_available(Duration::from_millis(300))
        .starts_with(b"$"));
    // CONFIG RESETSTAT resets the proxy's own counters too.
    r.roundtrip(&cmd(&["CONFIG", "RESETSTAT"]), b"+OK\r\n");
    let info: String = redis::cmd("INFO").arg("stats").query(&mut c).unwrap();
    let processed: i64 = info
        .lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(processed < 5, "{info}");
}

#[test]
fn functions_are_loaded_on_every_master() {
    let (cluster, proxy) = env();
    let mut c = proxy.conn();
    let lib = "#!lua name=sbtest\nredis.register_function('sbget', function(keys, args) return redis.call('GET', keys[1]) end)";
    let name: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(lib)
        .query(&mut c)
        .unwrap();
    assert_eq!(name, "sbtest");
    for port in cluster.master_ports() {
        let list: redis::Value = redis::cmd("FUNCTION")
            .arg("LIST")
            .arg("LIBRARYNAME")
            .arg("sbtest")
            .query(&mut cluster.conn(port))
            .unwrap();
        assert!(
            matches!(list, redis::Value::Array(ref v) if v.len() == 1),
            "master {port}: {list:?}"
        );
    }
    let _: () = redis::cmd("SET")
        .arg("fn-key")
        .arg("fv")
        .query(&mut c)
        .unwrap();
    let v: String = redis::cmd("FCALL")
        .arg("sbget")
        .arg(1)
        .arg("fn-key")
        .query(&mut c)
        .unwrap();
    assert_eq!(v, "fv");
    let _: () = redis::cmd("FUNCTION")
        .arg("DELETE")
        .arg("sbtest")
        .query(&mut c)
        .unwrap();
    assert!(redis::cmd("FCALL")
        .arg("sbget")
        .arg(1)
        .arg("fn-key")
        .query::<String>(&mut c)
        .is_err());
}

#[test]
fn auth_on_and_off() {
    // Off: like a Redis without a password.
    let mut open = raw();
    open.roundtrip(
        &cmd(&["AUTH", "x"]),
        b"-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n",
    );
    // The default user has no password: any password is accepted for it,
    // and other users do not exist.
    open.roundtrip(&cmd(&["AUTH", "default", "x"]), b"+OK\r\n");
    open.roundtrip(
        &cmd(&["AUTH", "someone", "x"]),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    open.send(&cmd(&["CLIENT", "HELP"]));
    assert!(open.read_reply().starts_with(b"*"));
    // On: the proxy's own password and users.
    let cluster = &env().0;
    let dir = common::TempDir::new("auth-config");
    let path = dir.path().join("slotbridge.toml");
    std::fs::write(
        &path,
        "[auth]\npassword = \"s3cret\"\n[[auth.users]]\nname = \"app\"\npassword = \"apppw\"\n",
    )
    .unwrap();
    let port = common::free_port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_slotbridge"))
        .args([
            "--config",
            path.to_str().unwrap(),
            "--seeds",
            &cluster.seeds(),
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "proxy did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut r = RawClient::connect(port);
    r.roundtrip(&cmd(&["GET", "k"]), b"-NOAUTH Authentication required.\r\n");
    r.roundtrip(
        &cmd(&["HELLO", "3"]),
        format!(
            "-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO {}AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n",
            // Redis 7.2 added the protocol to the hint.
            if common::server_version().at_least(7, 2) { "<proto> " } else { "" }
        )
        .as_bytes(),
    );
    r.roundtrip(
        &cmd(&["AUTH", "wrong"]),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    r.roundtrip(
        &cmd(&["AUTH", "app", "s3cret"]),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    r.roundtrip(&cmd(&["AUTH", "s3cret"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["SET", "auth-k", "v"]), b"+OK\r\n");
    let mut u = RawClient::connect(port);
    u.roundtrip(&cmd(&["AUTH", "app", "apppw"]), b"+OK\r\n");
    u.roundtrip(&cmd(&["GET", "auth-k"]), b"$1\r\nv\r\n");
    let mut h = RawClient::connect(port);
    h.send(&cmd(&["HELLO", "3", "AUTH", "app", "apppw"]));
    let hello = h.read_available(Duration::from_millis(500));
    assert!(
        hello.starts_with(b"%7\r\n$6\r\nserver\r\n"),
        "{}",
        common::escape(&hello)
    );
    h.roundtrip(&cmd(&["GET", "auth-k"]), b"$1\r\nv\r\n");
    // CLIENT LIST names the user each connection authenticated as.
    u.send(&cmd(&["CLIENT", "LIST"]));
    let list = String::from_utf8_lossy(&u.read_available(Duration::from_millis(500))).into_owned();
    assert_eq!(list.matches(" user=app ").count(), 2, "{list}");
    assert!(list.contains(" user=default "), "{list}");
}

#[test]
fn client_reply_off_and_skip_like_redis() {
    let mut r = raw();
    r.send(b"CLIENT REPLY OFF\r\nSET reply-k 1\r\n");
    // Past the session's rest: the mode is the client's, not the session's.
    std::thread::sleep(Duration::from_millis(400));
    r.send(
        b"GET reply-k\r\nCLIENT REPLY SKIP\r\nGET reply-k\r\nCLIENT REPLY ON\r\nGET reply-k\r\n",
    );
    r.expect(b"+OK\r\n$1\r\n1\r\n");
    r.send(
        b"CLIENT REPLY SKIP\r\nMGET reply-k {reply}a {reply}b\r\nMGET reply-k nokey-a nokey-b\r\n",
    );
    r.expect(b"*3\r\n$1\r\n1\r\n$-1\r\n$-1\r\n");
    r.roundtrip(&cmd(&["CLIENT", "REPLY", "bad"]), b"-ERR syntax error\r\n");
    // RESET turns replies on again.
    r.send(b"CLIENT REPLY OFF\r\nRESET\r\n");
    r.expect(b"+RESET\r\n");
    r.roundtrip(&cmd(&["PING"]), b"+PONG\r\n");
}

/// Sends `CLIENT UNBLOCK id [mode]` until it answers `:1` (the blocking
/// command has reached its node), for at most 5 s.
fn unblock(admin: &mut RawClient, id: &str, mode: &[&str]) {
    let mut args = vec!["CLIENT", "UNBLOCK", id];
    args.extend_from_slice(mode);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        admin.send(&cmd(&args));
        match admin.read_exact_bytes(4).as_slice() {
            b":1\r\n" => return,
            b":0\r\n" if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            other => panic!("CLIENT UNBLOCK answered {}", common::escape(other)),
        }
    }
}

/// Found by ioredis's suite: a client whose `CLIENT LIST` entry shows
/// its blocking command is blocked for `CLIENT UNBLOCK` at once, though
/// the command may still be on its way to the node (a new private
/// connection, or a shared connection carrying the `UNBLOCK` faster):
/// one `UNBLOCK` ends it, every time.
#[test]
fn client_unblock_reaches_a_command_still_on_its_way() {
    let mut admin = raw();
    for round in 0..30 {
        let mut blocked = raw();
        let id = client_id(&mut blocked).to_string();
        blocked.send(&cmd(&["BLPOP", "unblock:race", "0"]));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            admin.send(&cmd(&["CLIENT", "LIST", "ID", &id]));
            let line = String::from_utf8(admin.read_reply()).unwrap();
            if line.contains(" cmd=blpop ") {
                assert!(line.contains(" flags=b "), "round {round}: {line}");
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: {line}");
        }
        admin.roundtrip(&cmd(&["CLIENT", "UNBLOCK", &id]), b":1\r\n");
        blocked.expect(b"*-1\r\n");
    }
    // A client that half-closes right after its UNBLOCK still gets every
    // reply (the UNBLOCK is not a blocking command of its own).
    let mut blocked = raw();
    let id = client_id(&mut blocked).to_string();
    blocked.send(&cmd(&["BLPOP", "unblock:race", "0"]));
    wait_until("flags=b", Duration::from_secs(5), || {
        admin.send(&cmd(&["CLIENT", "LIST", "ID", &id]));
        String::from_utf8(admin.read_reply())
            .unwrap()
            .contains(" flags=b ")
    });
    let mut half = std::net::TcpStream::connect(("127.0.0.1", env().1.port)).unwrap();
    let sent = [
        cmd(&["SET", "unblock:half", "1"]),
        cmd(&["CLIENT", "UNBLOCK", &id]),
        cmd(&["GET", "unblock:half"]),
    ]
    .concat();
    std::io::Write::write_all(&mut half, &sent).unwrap();
    half.shutdown(std::net::Shutdown::Write).unwrap();
    half.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut half, &mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), "+OK\r\n:1\r\n$1\r\n1\r\n");
    blocked.expect(b"*-1\r\n");
}

#[test]
fn client_unblock_ends_a_blocking_command_as_one_server_does() {
    let mut blocked = raw();
    let mut admin = raw();
    blocked.send(&cmd(&["CLIENT", "ID"]));
    let id = String::from_utf8(blocked.read_once(Duration::from_secs(5))).unwrap();
    let id = id.trim_start_matches(':').trim_end().to_string();
    // TIMEOUT (the default): the command returns as if it had timed out.
    blocked.send(&cmd(&["BLPOP", "unblock:list", "0"]));
    unblock(&mut admin, &id, &[]);
    blocked.expect(b"*-1\r\n");
    blocked.send(&cmd(&["XREAD", "BLOCK", "0", "STREAMS", "unblock:s", "$"]));
    unblock(&mut admin, &id, &["TIMEOUT"]);
    blocked.expect(b"*-1\r\n");
    // ERROR: the node's error.
    blocked.send(&cmd(&["BZPOPMIN", "unblock:zset", "0"]));
    unblock(&mut admin, &id, &["error"]);
    blocked.expect(b"-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n");
    // Its own CLIENT UNBLOCK, pipelined after the blocking command, runs
    // after it as on one server: the client was blocked on nothing then.
    let mut pipeline = cmd(&["BLPOP", "unblock:list", "0"]);
    pipeline.extend_from_slice(&cmd(&["CLIENT", "UNBLOCK", &id]));
    blocked.send(&pipeline);
    unblock(&mut admin, &id, &[]);
    blocked.expect(b"*-1\r\n:0\r\n");
    // While it waits, the client has the flag `b` in CLIENT LIST and
    // counts in INFO's `blocked_clients`, as on one server (tools and
    // Redis's own tests wait on them); once answered, neither. (Other
    // tests' clients may block meanwhile: the count is only checked > 0.)
    blocked.send(&cmd(&["BLPOP", "unblock:list", "0"]));
    let flags = |admin: &mut RawClient| {
        admin.send(&cmd(&["CLIENT", "LIST", "ID", &id]));
        let line = String::from_utf8(admin.read_reply()).unwrap();
        let flags = line.split(' ').find(|f| f.starts_with("flags="));
        flags.unwrap().to_string()
    };
    wait_until("flags=b", Duration::from_secs(5), || {
        flags(&mut admin) == "flags=b"
    });
    admin.send(&cmd(&["INFO", "clients"]));
    let info = String::from_utf8(admin.read_reply()).unwrap();
    let count = info
        .lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"));
    assert_ne!(count, Some("0"), "{info}");
    assert!(count.is_some(), "{info}");
    unblock(&mut admin, &id, &[]);
    blocked.expect(b"*-1\r\n");
    wait_until("flags=N", Duration::from_secs(5), || {
        flags(&mut admin) == "flags=N"
    });
    // Pipelined: the second answered first, the client stays blocked on
    // the first, as one server runs them one after the other.
    admin.roundtrip(&cmd(&["RPUSH", "unblock:full", "x"]), b":1\r\n");
    blocked.send(
        &[
            cmd(&["BLPOP", "unblock:list", "0"]),
            cmd(&["BLPOP", "unblock:full", "0"]),
        ]
        .concat(),
    );
    wait_until("flags=b", Duration::from_secs(5), || {
        flags(&mut admin) == "flags=b"
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(flags(&mut admin), "flags=b");
    unblock(&mut admin, &id, &[]);
    blocked.expect(b"*-1\r\n*2\r\n$12\r\nunblock:full\r\n$1\r\nx\r\n");
    wait_until("flags=N", Duration::from_secs(5), || {
        flags(&mut admin) == "flags=N"
    });
    // Nothing blocked, no such client, wrong arguments: as Redis answers.
    blocked.roundtrip(&cmd(&["PING"]), b"+PONG\r\n");
    admin.roundtrip(&cmd(&["CLIENT", "UNBLOCK", &id]), b":0\r\n");
    admin.roundtrip(&cmd(&["CLIENT", "UNBLOCK", "987654321"]), b":0\r\n");
    admin.roundtrip(
        &cmd(&["CLIENT", "UNBLOCK", &id, "later"]),
        b"-ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR\r\n",
    );
    admin.roundtrip(
        &cmd(&["CLIENT", "UNBLOCK", "x"]),
        b"-ERR value is not an integer or out of range\r\n",
    );
    admin.roundtrip(
        &cmd(&["CLIENT", "UNBLOCK"]),
        b"-ERR wrong number of arguments for 'client|unblock' command\r\n",
    );
}

/// `INFO clients` counts the proxy's own subscribers, and the blocking
/// and watched keys of every master (Redis 7.2 and later; 7.0's INFO has
/// none of these fields). Its own proxy, so that only this test's
/// subscribers count; other tests may block on the shared cluster too, so
/// the keys are counted at least.
#[test]
fn info_clients_counts_every_masters_blocking_keys() {
    let proxy = Proxy::start(&env().0);
    let connect = || RawClient::connect(proxy.port);
    let mut admin = connect();
    // One key on each master ({b}: slot 3300, {c}: 7365, {a}: 15495).
    let keys = ["{b}info:blk", "{c}info:blk", "{a}info:blk"];
    let mut blockers: Vec<RawClient> = keys
        .iter()
        .map(|k| {
            let mut c = connect();
            c.send(&cmd(&["BLPOP", k, "0"]));
            c
        })
        .collect();
    let _subscribers: Vec<RawClient> = ["info:ch1", "info:ch2"]
        .iter()
        .map(|ch| {
            let mut c = connect();
            c.send(&cmd(&["SUBSCRIBE", ch]));
            assert!(!c.read_reply().is_empty());
            c
        })
        .collect();
    let mut watcher = connect();
    watcher.roundtrip(&cmd(&["WATCH", "{a}info:w1", "{a}info:w2"]), b"+OK\r\n");
    let info = |admin: &mut RawClient| {
        admin.send(&cmd(&["INFO", "clients"]));
        String::from_utf8(admin.read_reply()).unwrap()
    };
    let field = |info: &str, name: &str| -> Option<i64> {
        let prefix = format!("{name}:");
        info.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map(|v| v.parse().unwrap())
    };
    wait_until("3 blocked clients", Duration::from_secs(5), || {
        field(&info(&mut admin), "blocked_clients") == Some(3)
    });
    let text = info(&mut admin);
    if common::server_version().redis >= (7, 2) {
        let blocking = field(&text, "total_blocking_keys");
        assert!(blocking.is_some_and(|n| n >= 3), "{text}");
        for (name, least) in [("watching_clients", 1), ("total_watched_keys", 2)] {
            if let Some(n) = field(&text, name) {
                assert!(n >= least, "{name}: {text}");
            }
        }
        if let Some(n) = field(&text, "pubsub_clients") {
            assert_eq!(n, 2, "{text}");
        }
    } else {
        assert_eq!(field(&text, "total_blocking_keys"), None, "{text}");
    }
    // Released, each with its key and value.
    for (k, blocker) in keys.iter().zip(blockers.iter_mut()) {
        admin.roundtrip(&cmd(&["RPUSH", k, "v"]), b":1\r\n");
        let expected = format!("*2\r\n${}\r\n{k}\r\n$1\r\nv\r\n", k.len());
        blocker.expect(expected.as_bytes());
    }
    watcher.roundtrip(&cmd(&["UNWATCH"]), b"+OK\r\n");
}

/// `CLIENT PAUSE` holds this proxy's clients as Redis 7.0 holds its own:
/// in `WRITE` mode writes, replicating commands and scripts without
/// `no-writes` (reads and read-only transactions pass); in `ALL` mode
/// everything, `CLIENT UNPAUSE` included; a held command keeps the
/// client's later commands behind it, in order. Its own proxy, so that no
/// other test is held.
#[test]
fn client_pause_holds_this_proxys_clients_as_redis_does() {
    let proxy = Proxy::start(&env().0);
    let connect = || RawClient::connect(proxy.port);
    let (mut admin, mut c) = (connect(), connect());
    let quiet = |c: &mut RawClient| {
        let got = c.read_available(Duration::from_millis(300));
        assert!(got.is_empty(), "held command answered: {got:?}");
    };
    c.roundtrip(&cmd(&["SET", "pause:k", "old"]), b"+OK\r\n");

    admin.roundtrip(&cmd(&["CLIENT", "PAUSE", "100000", "WRITE"]), b"+OK\r\n");
    // INFO's pause fields (Valkey 8 and later) tell the proxy's pause.
    let paused = |admin: &mut RawClient| {
        admin.send(&cmd(&["INFO", "clients"]));
        let info = String::from_utf8(admin.read_reply()).unwrap();
        let field = |f: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(f))
                .map(str::to_string)
        };
        (field("paused_reason:"), field("paused_actions:"))
    };
    if common::server_version().valkey && common::server_version().own.0 >= 8 {
        let (reason, actions) = paused(&mut admin);
        assert_eq!(reason.as_deref(), Some("client_pause"));
        assert_eq!(actions.as_deref(), Some("write"));
    }
    c.roundtrip(&cmd(&["GET", "pause:k"]), b"$3\r\nold\r\n");
    c.roundtrip(
        &cmd(&["EVAL", "#!lua flags=no-writes\nreturn 7", "0"]),
        b":7\r\n",
    );
    // Answered at once, as by Redis 7.0.15: SCRIPT LOAD, and what Redis
    // refuses before its pause check.
    c.roundtrip(
        &cmd(&["SCRIPT", "LOAD", "return 1"]),
        b"$40\r\ne0e1f9fabfc9d4800c877a703b823ac0578ff8db\r\n",
    );
    c.roundtrip(
        &cmd(&["SET", "pause:k"]),
        b"-ERR wrong number of arguments for 'set' command\r\n",
    );
    c.roundtrip(
        &[cmd(&["MULTI"]), cmd(&["GET", "pause:k"]), cmd(&["EXEC"])].concat(),
        b"+OK\r\n+QUEUED\r\n*1\r\n$3\r\nold\r\n",
    );
    for held in [
        &["SET", "pause:k", "new"][..],
        &["EVAL", "return 1", "0"],
        &["PUBLISH", "pause:ch", "m"],
        &["PFCOUNT", "pause:h"],
    ] {
        let mut other = connect();
        other.send(&cmd(held));
        quiet(&mut other);
        // A held client is a blocked one, as Redis counts it.
        let blocked = |admin: &mut RawClient| {
            admin.send(&cmd(&["INFO", "clients"]));
            let info = String::from_utf8(admin.read_reply()).unwrap();
            let count = info
                .lines()
                .find_map(|l| l.strip_prefix("blocked_clients:"));
            count.map(str::to_string)
        };
        assert_eq!(blocked(&mut admin).as_deref(), Some("1"));
        admin.roundtrip(&cmd(&["CLIENT", "UNPAUSE"]), b"+OK\r\n");
        assert!(!other.read_once(Duration::from_secs(5)).is_empty());
        assert_eq!(blocked(&mut admin).as_deref(), Some("0"));
        admin.roundtrip(&cmd(&["CLIENT", "PAUSE", "100000", "WRITE"]), b"+OK\r\n");
    }
    // Held with the reads pipelined behind it, which keep their order.
    c.send(&[cmd(&["SET", "pause:k", "v2"]), cmd(&["GET", "pause:k"])].concat());
    quiet(&mut c);
    // A queued write holds at queueing, as in Redis.
    let mut tx = connect();
    tx.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    tx.send(&cmd(&["INCR", "pause:n"]));
    quiet(&mut tx);
    admin.roundtrip(&cmd(&["CLIENT", "UNPAUSE"]), b"+OK\r\n");
    c.expect(b"+OK\r\n$2\r\nv2\r\n");
    if common::server_version().valkey && common::server_version().own.0 >= 8 {
        let (reason, actions) = paused(&mut admin);
        assert_eq!(reason.as_deref(), Some("none"));
        assert_eq!(actions.as_deref(), Some("none"));
    }
    tx.expect(b"+QUEUED\r\n");
    tx.roundtrip(&cmd(&["EXEC"]), b"*1\r\n:1\r\n");

    // ALL: everything waits for the timeout, CLIENT UNPAUSE too; a second
    // pause keeps the later end and the stricter mode.
    admin.roundtrip(&cmd(&["CLIENT", "PAUSE", "600", "WRITE"]), b"+OK\r\n");
    let started = Instant::now();
    admin.roundtrip(&cmd(&["CLIENT", "PAUSE", "10", "ALL"]), b"+OK\r\n");
    let mut third = connect();
    third.send(&cmd(&["CLIENT", "UNPAUSE"]));
    c.send(&cmd(&["PING"]));
    c.expect(b"+PONG\r\n");
    third.expect(b"+OK\r\n");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(450), "waited {waited:?}");
    // A pause of 0 ms holds nothing; nor one so long that Redis 7.0's
    // clock overflows.
    admin.roundtrip(&cmd(&["CLIENT", "PAUSE", "0"]), b"+OK\r\n");
    c.roundtrip(&cmd(&["SET", "pause:k", "v3"]), b"+OK\r\n");
    admin.roundtrip(
        &cmd(&["CLIENT", "PAUSE", "9223372036854775807", "ALL"]),
        b"+OK\r\n",
    );
    c.roundtrip(&cmd(&["SET", "pause:k", "v4"]), b"+OK\r\n");

    // Errors as one Redis 7.0 gives them.
    let dir = TempDir::new("pause");
    let reference = Standalone::start(&dir);
    let mut direct = RawClient::connect(reference.port);
    for bad in [
        &["CLIENT", "PAUSE"][..],
        &["CLIENT", "PAUSE", "x"],
        &["CLIENT", "PAUSE", "+5"],
        &["CLIENT", "PAUSE", "-1"],
        &["CLIENT", "PAUSE", "x", "READ"],
        &["client", "pause", "10", "ALL", "extra"],
        &["CLIENT", "UNPAUSE", "now"],
    ] {
        if bad.len() == 5 && common::server_version().valkey {
            // Valkey 8 accepts arguments after the mode.
            continue;
        }
        direct.send(&cmd(bad));
        let want = direct.read_reply();
        assert!(want.starts_with(b"-"), "{bad:?}: {want:?}");
        c.roundtrip(&cmd(bad), &want);
    }
}

#[test]
fn zrangestore_across_slots_answers_as_one_redis() {
    let names = ["r:src", "r:d", "r:str"];
    let (reference, mut direct, mut through) = beside_reference("zrangestore", &names);
    let mut direct_conn = connection_to(&reference);
    let mut through_conn = env().1.conn();
    for c in [&mut direct, &mut through] {
        c.roundtrip(
            &cmd(&[
                "ZADD", "r:src", "1", "a", "2", "b", "2", "c", "3.3", "d", "1e300", "e",
            ]),
            b":5\r\n",
        );
        c.roundtrip(&cmd(&["SET", "r:str", "v"]), b"+OK\r\n");
    }
    for line in [
        "SET r:d old EX 100",
        "ZRANGESTORE r:d r:src 0 -1",
        "ZRANGESTORE r:d r:src 1 2 REV",
        "ZRANGESTORE r:d r:src (1 5 BYSCORE LIMIT 1 2",
        "ZRANGESTORE r:d r:src [a [c BYLEX",
        "ZRANGESTORE r:d r:src +inf -inf BYSCORE REV LIMIT 0 3",
        "ZRANGESTORE r:d r:src 0 -1 WITHSCORES",
        "ZRANGESTORE r:d r:src 0 -1 LIMIT 5",
        "ZRANGESTORE r:d r:src 0 -1 BYSCORE LIMIT 5",
        "ZRANGESTORE r:d r:src 0 -1 BYSCORE LIMIT x 1",
        "ZRANGESTORE r:d r:src 0 -1 LIMIT 0 1",
        "ZRANGESTORE r:d r:src a b BYSCORE",
        "ZRANGESTORE r:d r:src 5 1",
        "ZRANGESTORE r:d r:none 0 -1",
        "ZRANGESTORE r:d r:str 0 -1",
    ] {
        let line: Vec<&str> = line.split(' ').collect();
        direct.send(&cmd(&line));
        let expected = direct.read_reply();
        through.roundtrip(&cmd(&line), &expected);
        same_answers(
            &mut direct_conn,
            &mut through_conn,
            &[
                &["ZRANGE", "r:d", "0", "-1", "WITHSCORES"][..],
                &["DUMP", "r:d"],
                &["TTL", "r:d"],
            ],
            &format!("{line:?}"),
        );
    }
    two_step_write_order(
        [&mut direct, &mut through],
        &[
            &["ZRANGESTORE", "r:d", "r:src", "0", "1"],
            &["ZCARD", "r:d"],
        ],
        b":2\r\n:2\r\n",
    );
}

#[test]
fn geo_stores_across_slots_answer_as_one_redis() {
    let names = ["g:src", "g:d", "g:str"];
    let (reference, mut direct, mut through) = beside_reference("geostore", &names);
    let mut direct_conn = connection_to(&reference);
    let mut through_conn = env().1.conn();
    for c in [&mut direct, &mut through] {
        c.roundtrip(
            &cmd(&[
                "GEOADD",
                "g:src",
                "13.361389",
                "38.115556",
                "Palermo",
                "15.087269",
                "37.502669",
                "Catania",
                "2.35",
                "48.85",
                "Paris",
            ]),
            b":3\r\n",
        );
        c.roundtrip(&cmd(&["SET", "g:str", "v"]), b"+OK\r\n");
    }
    for line in [
        "SET g:d old EX 100",
        "GEORADIUS g:src 15 37 200 km STORE g:d",
        "GEORADIUS g:src 15 37 200 km STORE {g:src}x STORE g:d",
        "GEORADIUS g:src 15 37 200 km STOREDIST g:d",
        "GEORADIUS g:src 15 37 200 km COUNT 1 STORE g:d",
        "GEORADIUS g:src 15 37 2000 km DESC STOREDIST g:d",
        "georadiusbymember g:src Palermo 300 km store g:d",
        "GEORADIUSBYMEMBER g:src Palermo 3000 mi ASC COUNT 2 STOREDIST g:d",
        "GEOSEARCHSTORE g:d g:src FROMLONLAT 15 37 BYBOX 400 400 km ASC COUNT 2 STOREDIST",
        "GEOSEARCHSTORE g:d g:src FROMMEMBER Palermo BYRADIUS 1 m",
        "GEORADIUS g:src 0 0 1 km STORE g:d",
        "SET g:d old",
        "GEORADIUS g:none 15 37 200 km STORE g:d",
        "GEOSEARCHSTORE g:d g:none FROMLONLAT 15 37 BYRADIUS 1 km",
        "GEORADIUS g:str 15 37 200 km STORE g:d",
        "GEORADIUS g:src 15 37 200 km WITHDIST STORE g:d",
        "GEORADIUS g:src 15 37 200 parsecs STORE g:d",
        "GEOSEARCHSTORE g:d g:src FROMMEMBER Nowhere BYRADIUS 1 km",
        "GEOSEARCHSTORE g:d g:src FROMLONLAT 15 37 BYRADIUS 1 km WITHDIST",
    ] {
        let line: Vec<&str> = line.split(' ').collect();
        direct.send(&cmd(&line));
        let expected = direct.read_reply();
        through.roundtrip(&cmd(&line), &expected);
        same_answers(
            &mut direct_conn,
            &mut through_conn,
            &[
                &["TYPE", "g:d"][..],
                &["ZRANGE", "g:d", "0", "-1", "WITHSCORES"],
                &["DUMP", "g:d"],
                &["TTL", "g:d"],
            ],
            &format!("{line:?}"),
        );
    }
    two_step_write_order(
        [&mut direct, &mut through],
        &[
            &[
                "GEORADIUS",
                "g:src",
                "15",
                "37",
                "200",
                "km",
                "STORE",
                "g:d",
            ],
            &["ZCARD", "g:d"],
        ],
        b":2\r\n:2\r\n",
    );
}

/// Pops over keys in several slots: what is there is popped in key order
/// as one Redis pops it (replies and errors byte for byte, RESP2 and
/// RESP3); an empty wait blocks on every slot at once and ends with the
/// first push, its timeout, CLIENT UNBLOCK, or the client leaving, and no
/// element is ever lost or duplicated.
#[test]
fn pops_across_slots_answer_as_one_redis() {
    let names = ["p:a", "p:b", "p:c", "p:z", "p:y"];
    let (_reference, mut direct, mut through) = beside_reference("multipop", &names);
    for line in [
        "RPUSH p:b x y w",
        "BLPOP p:a p:b p:c 1",
        "BRPOP p:a p:b p:c 1",
        "SET p:c s",
        "BLPOP p:a p:c p:b 1",
        "BLPOP p:a p:b p:c 1",
        "BLPOP p:a p:b -1",
        "BLPOP p:a p:b x",
        "LMPOP 2 p:a p:b LEFT COUNT 0",
        "LMPOP 2 p:a p:b",
        "BLMPOP 0 2 p:a p:b",
        "BLPOP p:a p:b 0x0.4",
        "LMPOP 3 p:a p:c p:b LEFT",
        "DEL p:c",
        "LMPOP 3 p:a p:c p:b LEFT",
        "RPUSH p:c 1 2 3",
        "BLMPOP 1 3 p:a p:b p:c RIGHT COUNT 2",
        "LMPOP 2 p:a p:b RIGHT",
        "ZADD p:y 1 m 2.5 n 3 o",
        "BZPOPMIN p:z p:y 1",
        "BZPOPMAX p:z p:y 1",
        "ZMPOP 2 p:z p:y MAX COUNT 5",
        "ZMPOP 2 p:z p:y MIN",
        "ZADD p:z 7 q",
        "BZMPOP 1 2 p:y p:z MIN COUNT 2",
        "HELLO 3",
        "LMPOP 2 p:a p:b LEFT",
        "ZADD p:y 1.5 m",
        "BZPOPMIN p:z p:y 1",
        "HELLO 2",
    ] {
        replay(&mut direct, &mut through, line);
    }
    // Pipelined commands wait for the pop; inside MULTI it is CROSSSLOT.
    for c in [&mut direct, &mut through] {
        c.send(&cmd(&["RPUSH", "p:b", "1", "2"]));
        let _ = c.read_reply();
    }
    two_step_write_order(
        [&mut direct, &mut through],
        &[&["LMPOP", "2", "p:a", "p:b", "LEFT"], &["LLEN", "p:b"]],
        b"*2\r\n$3\r\np:b\r\n*1\r\n$1\r\n1\r\n:1\r\n",
    );

    // Blocking on every slot: the first push anywhere ends it; the other
    // waits end too, so a later push stays in its list.
    let mut pusher = raw();
    pusher.send(&cmd(&["DEL", "p:a", "p:b", "p:c", "p:y", "p:z"]));
    let _ = pusher.read_reply();
    through.send(&cmd(&["BLPOP", "p:a", "p:b", "p:c", "5"]));
    assert!(through
        .read_available(Duration::from_millis(300))
        .is_empty());
    pusher.roundtrip(&cmd(&["RPUSH", "p:c", "z"]), b":1\r\n");
    through.expect(b"*2\r\n$3\r\np:c\r\n$1\r\nz\r\n");
    std::thread::sleep(Duration::from_millis(200));
    pusher.roundtrip(&cmd(&["RPUSH", "p:a", "q"]), b":1\r\n");
    std::thread::sleep(Duration::from_millis(200));
    pusher.roundtrip(&cmd(&["LPOP", "p:a"]), b"$1\r\nq\r\n");

    // The timeout, the rest of it after the first step.
    let started = Instant::now();
    through.roundtrip(&cmd(&["BZPOPMIN", "p:z", "p:y", "0.3"]), b"*-1\r\n");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    // CLIENT UNBLOCK of the waiting client.
    let id = client_id(&mut through);
    through.send(&cmd(&["BRPOP", "p:a", "p:b", "0"]));
    assert!(through
        .read_available(Duration::from_millis(300))
        .is_empty());
    pusher.roundtrip(&cmd(&["CLIENT", "UNBLOCK", &id.to_string()]), b":1\r\n");
    through.expect(b"*-1\r\n");
    through.send(&cmd(&["BRPOP", "p:a", "p:b", "0"]));
    assert!(through
        .read_available(Duration::from_millis(300))
        .is_empty());
    pusher.roundtrip(
        &cmd(&["CLIENT", "UNBLOCK", &id.to_string(), "ERROR"]),
        b":1\r\n",
    );
    through.expect(b"-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n");

    // Pushes to two slots at once: one is popped, the other stays (pushed
    // back if its wait took it too, before the client reads its reply:
    // its next command finds it), over many rounds.
    for round in 0..20 {
        let lists = [
            cmd(&["LRANGE", "p:a", "0", "-1"]),
            cmd(&["LRANGE", "p:b", "0", "-1"]),
        ];
        through.send(&[cmd(&["BLPOP", "p:a", "p:b", "5"]), lists.concat()].concat());
        assert!(through
            .read_available(Duration::from_millis(100))
            .is_empty());
        let (x, y) = (format!("a{round}"), format!("b{round}"));
        pusher.send(&[cmd(&["RPUSH", "p:a", &x]), cmd(&["RPUSH", "p:b", &y])].concat());
        pusher.expect(b":1\r\n:1\r\n");
        let popped_a = [cmd(&["p:a", &x]), b"*0\r\n".to_vec(), cmd(&[&y])].concat();
        let popped_b = [cmd(&["p:b", &y]), cmd(&[&x]), b"*0\r\n".to_vec()].concat();
        let got = through.read_exact_bytes(popped_a.len());
        assert!(
            got == popped_a || got == popped_b,
            "round {round}: {}",
            common::escape(&got)
        );
        pusher.send(&cmd(&["DEL", "p:a", "p:b"]));
        let _ = pusher.read_reply();
    }

    // A client that leaves while it waits takes nothing with it.
    let mut leaver = raw();
    leaver.send(&cmd(&["BLPOP", "p:a", "p:b", "0"]));
    assert!(leaver.read_available(Duration::from_millis(200)).is_empty());
    drop(leaver);
    std::thread::sleep(Duration::from_millis(300));
    pusher.roundtrip(&cmd(&["RPUSH", "p:b", "kept"]), b":1\r\n");
    std::thread::sleep(Duration::from_millis(300));
    pusher.roundtrip(&cmd(&["LPOP", "p:b"]), b"$4\r\nkept\r\n");
}

#[test]
fn scripts_that_do_not_compile_stay_out_of_the_script_cache() {
    let (_reference, mut direct, mut through) = beside_reference("badscript", &["bs:k", "bs:j"]);
    let bad = "return 1 + (";
    let bad_sha = sha1_smol::Sha1::from(bad).digest().to_string();
    let good = "return 'bs'";
    let good_sha = sha1_smol::Sha1::from(good).digest().to_string();
    let lines: [&[&str]; 9] = [
        // Keys in two slots: one server looks the script up first.
        &["EVALSHA", &bad_sha, "2", "bs:k", "bs:j"],
        &["SCRIPT", "LOAD", bad],
        &["SCRIPT", "EXISTS", &bad_sha],
        &["EVAL", bad, "0"],
        &["SCRIPT", "EXISTS", &bad_sha],
        &["EVALSHA", &bad_sha, "0"],
        &["SCRIPT", "LOAD", good],
        &["SCRIPT", "EXISTS", &good_sha, &bad_sha],
        &["EVALSHA", &good_sha, "0"],
    ];
    for line in lines {
        direct.send(&cmd(line));
        let expected = direct.read_reply();
        through.roundtrip(&cmd(line), &expected);
    }
    // A script the masters have but the proxy never saw (loaded on the
    // nodes, or before a restart): over several slots, CROSSSLOT, not
    // NOSCRIPT.
    // (Tries again should another test flush the scripts meanwhile.)
    let only_nodes = "return 'loaded on the nodes'";
    let sha = sha1_smol::Sha1::from(only_nodes).digest().to_string();
    let mut reply = Vec::new();
    for _ in 0..5 {
        for port in env().0.master_ports() {
            let _: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(only_nodes)
                .query(&mut env().0.conn(port))
                .unwrap();
        }
        through.send(&cmd(&["EVALSHA", &sha, "2", "bs:k", "bs:j"]));
        reply = through.read_reply();
        if reply.starts_with(b"-CROSSSLOT ") {
            break;
        }
    }
    assert!(
        reply.starts_with(b"-CROSSSLOT "),
        "{}",
        common::escape(&reply)
    );
}

#[test]
fn stream_reads_across_slots_answer_as_one_redis() {
    let names = ["xs:a", "xs:b", "xs:c", "xs:k"];
    let (_reference, mut direct, mut through) = beside_reference("xreads", &names);
    let lines = [
        "XADD xs:a 1-1 f v",
        "XADD xs:b 1-1 g w",
        "XADD xs:b 2-1 h x",
        "XREAD COUNT 1 STREAMS xs:a xs:b 0-0 0",
        "XREAD STREAMS xs:a xs:c xs:b 0 0 0",
        "XREAD STREAMS xs:c xs:b 0 1-1",
        "XREAD STREAMS xs:a xs:b 1-1 2-1",
        "XREAD STREAMS xs:a xs:b xs:a 0 0 0",
        "SET xs:k x",
        "XREAD STREAMS xs:a xs:k 0 0",
        "XREAD STREAMS xs:a xs:k {xs:a}x 0 0 bad",
        "XREAD STREAMS xs:a xs:b 0 >",
        "XREAD STREAMS xs:a xs:b +0 01-0",
        "XREAD STREAMS xs:a xs:k xs:a 0 0 1-x",
        "XREAD STREAMS xs:a xs:b xs:a $ 0 0",
        "XREAD STREAMS xs:b xs:a xs:b 0 0 1-1",
        "XREAD COUNT x STREAMS xs:a xs:b 0 0 0",
        "XREAD NOACK STREAMS xs:a xs:b 0 0",
        "XREAD GROUP g c STREAMS xs:a xs:b 0 0",
        "XREADGROUP GROUP nog c COUNT x STREAMS xs:a xs:b > >",
        "XREADGROUP GROUP nog c BLOCK -1 STREAMS xs:a xs:b > >",
        "XREADGROUP GROUP nog c FOO STREAMS xs:a xs:b > >",
        // No GROUP: the key spec finds no stream, a node finds them.
        "XREADGROUP COUNT 1 STREAMS xs:a xs:b > >",
        "XREADGROUP STREAMS xs:a xs:b xs:c > > >",
        "XREAD STREAMS xs:a xs:b 0 bad",
        "XREAD COUNT x STREAMS xs:a xs:b 0 0",
        "XREAD BLOCK -1 STREAMS xs:a xs:b 0 0",
        "XREAD BLOCK 100 STREAMS xs:a xs:b 0 0",
        "XREAD BLOCK 100 STREAMS xs:a xs:b $ $",
        "XGROUP CREATE xs:a g 0",
        "XGROUP CREATE xs:b g 0",
        "XREADGROUP GROUP g c COUNT 1 STREAMS xs:a xs:b > >",
        "XREADGROUP GROUP g c STREAMS xs:a xs:b > >",
        "XREADGROUP GROUP g c BLOCK 50 STREAMS xs:a xs:b > >",
        "XREADGROUP GROUP g c STREAMS xs:a xs:b 0 >",
        "XREADGROUP GROUP g c STREAMS xs:a xs:c > >",
        "XPENDING xs:b g",
        // XREADGROUP checks every stream before it hands out an entry.
        "XADD xs:a 3-1 z z",
        "XREADGROUP GROUP g c STREAMS xs:a xs:c > >",
        "XREADGROUP GROUP g c STREAMS xs:a xs:k > >",
        "XREADGROUP GROUP g c STREAMS xs:a xs:b > $",
        "XREADGROUP GROUP g c STREAMS xs:a xs:b > 1-x",
        "XPENDING xs:a g",
        "XREADGROUP GROUP g c STREAMS xs:a xs:b > >",
        "XREAD STREAMS xs:a xs:b 0 0 0",
        "XREADGROUP GROUP g c STREAMS xs:a xs:b 0 0 0",
        "XREAD BLOCK 3000 BLOCK 50 STREAMS xs:a xs:b $ $",
        "MULTI",
        "SET xs:k y",
        "MOVE xs:k 0",
        "SWAPDB 0 0",
        "EXEC",
        "GET xs:k",
        "HELLO 3",
        "XREAD STREAMS xs:a xs:c xs:b 0 0 0",
        "XREAD STREAMS xs:a xs:b 1-1 2-1",
        "XREADGROUP GROUP g c STREAMS xs:a xs:b 0 0",
        "HELLO 2",
    ];
    for line in lines {
        let started = Instant::now();
        replay(&mut direct, &mut through, line);
        // Only the last BLOCK counts (the first would hold the nodes'
        // shared connections).
        assert!(started.elapsed() < Duration::from_secs(2), "{line:?}");
    }

    // Blocking: the stream written first wakes the read; the timeout;
    // CLIENT UNBLOCK; the group read hands out the new entry once.
    let mut writer = raw();
    through.send(&cmd(&[
        "XREAD", "BLOCK", "5000", "STREAMS", "xs:a", "xs:b", "$", "$",
    ]));
    assert!(through
        .read_available(Duration::from_millis(200))
        .is_empty());
    writer.roundtrip(&cmd(&["XADD", "xs:b", "9-1", "n", "1"]), b"$3\r\n9-1\r\n");
    through
        .expect(b"*1\r\n*2\r\n$4\r\nxs:b\r\n*1\r\n*2\r\n$3\r\n9-1\r\n*2\r\n$1\r\nn\r\n$1\r\n1\r\n");
    let started = Instant::now();
    through.roundtrip(
        &cmd(&["XREAD", "BLOCK", "300", "STREAMS", "xs:a", "xs:b", "$", "$"]),
        b"*-1\r\n",
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    let id = client_id(&mut through);
    through.send(&cmd(&[
        "XREAD", "BLOCK", "0", "STREAMS", "xs:a", "xs:b", "$", "$",
    ]));
    assert!(through
        .read_available(Duration::from_millis(300))
        .is_empty());
    writer.roundtrip(&cmd(&["CLIENT", "UNBLOCK", &id.to_string()]), b":1\r\n");
    through.expect(b"*-1\r\n");
    let group_read = cmd(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "STREAMS",
        "xs:a",
        "xs:b",
        ">",
        ">",
    ]);
    through.roundtrip(
        &group_read,
        b"*1\r\n*2\r\n$4\r\nxs:b\r\n*1\r\n*2\r\n$3\r\n9-1\r\n*2\r\n$1\r\nn\r\n$1\r\n1\r\n",
    );
    let group_wait = cmd(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "BLOCK",
        "5000",
        "STREAMS",
        "xs:a",
        "xs:b",
        ">",
        ">",
    ]);
    through.send(&group_wait);
    assert!(through
        .read_available(Duration::from_millis(200))
        .is_empty());
    writer.roundtrip(&cmd(&["XADD", "xs:a", "9-1", "m", "2"]), b"$3\r\n9-1\r\n");
    through
        .expect(b"*1\r\n*2\r\n$4\r\nxs:a\r\n*1\r\n*2\r\n$3\r\n9-1\r\n*2\r\n$1\r\nm\r\n$1\r\n2\r\n");
    // Entries written to both at once: none is lost to the group.
    through.send(&group_wait);
    assert!(through
        .read_available(Duration::from_millis(200))
        .is_empty());
    writer.send(
        &[
            cmd(&["XADD", "xs:a", "10-1", "p", "3"]),
            cmd(&["XADD", "xs:b", "10-1", "q", "4"]),
        ]
        .concat(),
    );
    writer.expect(b"$4\r\n10-1\r\n$4\r\n10-1\r\n");
    let got = through.read_reply();
    let mut rest = Vec::new();
    if !(got.windows(4).any(|w| w == b"xs:a") && got.windows(4).any(|w| w == b"xs:b")) {
        through.send(&group_read);
        rest = through.read_reply();
    }
    let all = [got, rest].concat();
    for field in [b"$1\r\np\r\n", b"$1\r\nq\r\n"] {
        assert!(
            all.windows(7).any(|w| w == field),
            "{}",
            common::escape(&all)
        );
    }
}

#[test]
fn renames_and_copies_across_slots_answer_as_one_redis() {
    let names = ["m:a", "m:b", "m:c"];
    let (reference, mut direct, mut through) = beside_reference("moves", &names);
    let mut direct_conn = connection_to(&reference);
    let mut through_conn = env().1.conn();
    for line in [
        "SET m:a v1 EX 1000",
        "RENAME m:a m:b",
        "RENAME m:none m:b",
        "RPUSH m:a x y z",
        "RENAME m:a m:b",
        "SET m:a again",
        "RENAMENX m:a m:b",
        "RENAMENX m:c m:b",
        "RENAMENX m:b m:c",
        "COPY m:c m:a",
        "DEL m:a",
        "COPY m:c m:a",
        "COPY m:c m:a",
        "COPY m:c m:a REPLACE",
        "COPY m:none m:a REPLACE",
        "COPY m:c m:a DB x",
        "COPY m:c m:a FOO",
        "COPY m:c m:a DB 0",
        "HSET m:b f v g w",
        "PEXPIRE m:b 50000",
        "RENAME m:b m:c",
        "ZADD m:a 1 one 2 two",
        "COPY m:a m:b",
    ] {
        let line: Vec<&str> = line.split(' ').collect();
        direct.send(&cmd(&line));
        let expected = direct.read_reply();
        through.roundtrip(&cmd(&line), &expected);
        for key in names {
            for query in [&["TYPE", key][..], &["DUMP", key]] {
                let mut q = redis::cmd(query[0]);
                q.arg(query[1]);
                let want: redis::Value = q.query(&mut direct_conn).unwrap();
                let got: redis::Value = q.query(&mut through_conn).unwrap();
                assert_eq!(got, want, "{line:?} then {query:?}");
            }
            // The expiry moves with the key (set a moment apart on each).
            let ttl =
                |c: &mut redis::Connection| -> i64 { redis::cmd("TTL").arg(key).query(c).unwrap() };
            let (want, got) = (ttl(&mut direct_conn), ttl(&mut through_conn));
            assert!(
                (want - got).abs() <= 1,
                "{line:?}: TTL {key} {got} vs {want}"
            );
        }
    }
    // A key written all the time while it is renamed: every write lands
    // exactly once, in the source before a rename or in the new source
    // after it.
    let mut writer = raw();
    writer.send(&cmd(&["DEL", "m:n", "m:d1", "m:d2", "m:d3"]));
    let _ = writer.read_reply();
    let incrs = std::thread::spawn(move || {
        for _ in 0..3000 {
            writer.send(&cmd(&["INCR", "m:n"]));
            let _ = writer.read_reply();
        }
    });
    for dest in ["m:d1", "m:d2", "m:d3"] {
        std::thread::sleep(Duration::from_millis(40));
        through.roundtrip(&cmd(&["RENAME", "m:n", dest]), b"+OK\r\n");
    }
    incrs.join().unwrap();
    let total: i64 = ["m:n", "m:d1", "m:d2", "m:d3"]
        .iter()
        .map(|k| {
            redis::cmd("GET")
                .arg(*k)
                .query::<Option<i64>>(&mut through_conn)
                .unwrap()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(total, 3000);
    let temps: Vec<String> = redis::cmd("KEYS")
        .arg("*slotbridge:move:*")
        .query(&mut through_conn)
        .unwrap();
    assert!(temps.is_empty(), "{temps:?}");
    // One database: the cluster's error, naming the fix.
    through.roundtrip(
        &cmd(&["COPY", "m:c", "m:a", "DB", "1"]),
        b"-ERR slotbridge: only database 0 exists on a Redis Cluster; COPY to another database is not possible (use key prefixes instead of databases)\r\n",
    );
    two_step_write_order(
        [&mut direct, &mut through],
        &[&["RENAME", "m:c", "m:a"], &["HGET", "m:a", "g"]],
        b"+OK\r\n$1\r\nw\r\n",
    );
}

#[test]
fn list_and_set_moves_across_slots_answer_as_one_redis() {
    let names = ["e:a", "e:b", "e:c", "e:s", "e:t"];
    let (reference, mut direct, mut through) = beside_reference("emoves", &names);
    let mut direct_conn = connection_to(&reference);
    let mut through_conn = env().1.conn();
    for line in [
        "RPUSH e:a 1 2 3 4",
        "LMOVE e:a e:b LEFT RIGHT",
        "RPOPLPUSH e:a e:b",
        "LMOVE e:a e:b right left",
        "LMOVE e:a e:b LEFT LEFT",
        "LMOVE e:a e:b LEFT LEFT",
        "LMOVE e:a e:b UP LEFT",
        "SET e:c str",
        "RPOPLPUSH e:b e:c",
        "RPOPLPUSH e:c e:b",
        "BLMOVE e:b e:a RIGHT LEFT 1",
        "BRPOPLPUSH e:b e:a 1",
        "BLMOVE e:none e:a LEFT LEFT 0.2",
        "BRPOPLPUSH e:b e:a -1",
        "BLMOVE e:b e:a LEFT SIDEWAYS 1",
        "SADD e:s m n 5",
        "SMOVE e:s e:t m",
        "SMOVE e:s e:t zz",
        "SMOVE e:none e:t m",
        "SMOVE e:s e:c n",
        "SMOVE e:c e:t n",
        "SMOVE e:none e:c n",
        "SMOVE e:s e:t n",
        "SMOVE e:s e:t 5",
    ] {
        let line: Vec<&str> = line.split(' ').collect();
        direct.send(&cmd(&line));
        let expected = direct.read_reply();
        through.roundtrip(&cmd(&line), &expected);
        for key in names {
            // A set's DUMP follows its hash table's order, which differs
            // between servers: its members and encoding instead.
            let kind: String = redis::cmd("TYPE").arg(key).query(&mut direct_conn).unwrap();
            let queries: &[&[&str]] = if kind == "set" {
                &[
                    &["TYPE", key],
                    &["OBJECT", "ENCODING", key],
                    &["SCARD", key],
                ]
            } else {
                &[&["TYPE", key], &["DUMP", key]]
            };
            for query in queries {
                let mut q = redis::cmd(query[0]);
                for a in &query[1..] {
                    q.arg(*a);
                }
                let want: redis::Value = q.query(&mut direct_conn).unwrap();
                let got: redis::Value = q.query(&mut through_conn).unwrap();
                assert_eq!(got, want, "{line:?} then {query:?}");
            }
            if kind == "set" {
                let members = |c: &mut redis::Connection| {
                    let mut m: Vec<Vec<u8>> = redis::cmd("SMEMBERS").arg(key).query(c).unwrap();
                    m.sort();
                    m
                };
                assert_eq!(
                    members(&mut through_conn),
                    members(&mut direct_conn),
                    "{line:?}"
                );
            }
        }
    }
    // A wrong-typed destination is checked before the source is touched:
    // the source keeps its TTL.
    for c in [&mut direct, &mut through] {
        c.send(&cmd(&["RPUSH", "e:t1", "x"]));
        let _ = c.read_reply();
        c.roundtrip(&cmd(&["EXPIRE", "e:t1", "1000"]), b":1\r\n");
        c.roundtrip(
            &cmd(&["LMOVE", "e:t1", "e:c", "LEFT", "RIGHT"]),
            b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        );
        c.roundtrip(
            &cmd(&["BLMOVE", "e:none", "e:c", "LEFT", "LEFT", "0.1"]),
            b"*-1\r\n",
        );
        c.send(&cmd(&["TTL", "e:t1"]));
        let ttl = c.read_reply();
        assert!(ttl == b":1000\r\n" || ttl == b":999\r\n", "{ttl:?}");
        c.send(&cmd(&["DEL", "e:t1"]));
        let _ = c.read_reply();
    }
    two_step_write_order(
        [&mut direct, &mut through],
        &[&["LMOVE", "e:a", "e:b", "LEFT", "LEFT"], &["LLEN", "e:b"]],
        b"$1\r\n4\r\n:3\r\n",
    );

    // The blocking forms wait on the source's node; a push there ends it.
    let mut pusher = raw();
    through.send(&cmd(&["BLMOVE", "e:q", "e:a", "LEFT", "RIGHT", "5"]));
    assert!(through
        .read_available(Duration::from_millis(300))
        .is_empty());
    pusher.roundtrip(&cmd(&["RPUSH", "e:q", "job"]), b":1\r\n");
    through.expect(b"$3\r\njob\r\n");
    through.roundtrip(&cmd(&["LRANGE", "e:a", "-1", "-1"]), b"*1\r\n$3\r\njob\r\n");
    // A client that leaves while it waits: the element is in one list.
    let mut leaver = raw();
    leaver.send(&cmd(&["BRPOPLPUSH", "e:q", "e:b", "0"]));
    assert!(leaver.read_available(Duration::from_millis(200)).is_empty());
    drop(leaver);
    std::thread::sleep(Duration::from_millis(300));
    pusher.roundtrip(&cmd(&["RPUSH", "e:q", "late"]), b":1\r\n");
    std::thread::sleep(Duration::from_millis(300));
    pusher.roundtrip(&cmd(&["LPOP", "e:q"]), b"$4\r\nlate\r\n");
    let temps: Vec<String> = redis::cmd("KEYS")
        .arg("*slotbridge:move:*")
        .query(&mut through_conn)
        .unwrap();
    assert!(temps.is_empty(), "{temps:?}");
}

/// SORT with BY patterns and GET, which cluster nodes refuse, computed by
/// the proxy byte for byte as one Redis answers it.
#[test]
fn sort_by_and_get_answer_as_one_redis() {
    let dir = TempDir::new("sort");
    let reference = Standalone::start(&dir);
    let mut direct = RawClient::connect(reference.port);
    let mut through = raw();
    let keys = [
        "st:l", "st:s", "st:z", "st:d", "st:str", "st:w_1", "st:w_2", "st:w_3", "st:w_10",
        "st:w_a", "st:w_b", "st:w_c", "st:w_x", "st:w_y", "st:w_z", "st:o_1", "st:o_2", "st:o_3",
    ];
    for c in [&mut direct, &mut through] {
        for k in keys {
            c.send(&cmd(&["DEL", k]));
            let _ = c.read_reply();
        }
    }
    for line in [
        "RPUSH st:l 3 1 2 10",
        "MSET st:w_3 30 st:w_1 10 st:w_2 20 st:w_10 5",
        "HSET st:o_1 name one",
        "HSET st:o_2 name two",
        "HSET st:o_3 name three",
        "SORT st:l BY st:w_*",
        "SORT st:l BY st:w_* DESC",
        "SORT st:l BY st:w_* GET # GET st:o_*->name",
        "SORT st:l BY st:w_* GET st:o_*->name LIMIT 1 2",
        "SORT st:l BY st:w_* LIMIT -5 100 GET st:o_*->nope",
        "SORT st:l BY nosort GET st:o_*->name",
        "SORT st:l BY nosort DESC LIMIT 0 2",
        "SORT st:l BY nosort DESC LIMIT 1 2 GET #",
        "SORT st:l GET st:w_*",
        "SORT st:l GET st:w_* GET const",
        "SORT st:l BY st:o_*->name ALPHA",
        "SORT st:l BY st:o_*->name ALPHA DESC GET st:o_*->name",
        "SORT st:l BY st:w_* STORE st:d",
        "LRANGE st:d 0 -1",
        "SORT st:l BY st:w_* GET st:o_*->name STORE st:d",
        "LRANGE st:d 0 -1",
        "SORT_RO st:l BY st:w_* GET #",
        "SORT_RO st:l BY st:w_* STORE st:d",
        "SORT st:l BY st:w_* LIMIT x 1",
        "SORT st:l BY st:w_* BOGUS",
        "SORT st:l BY st:w_* LIMIT 3 10",
        "SORT st:l BY st:w_* LIMIT 9 10",
        "SET st:w_2 bad",
        "SORT st:l BY st:w_*",
        "SORT st:l BY st:w_* ALPHA",
        "SADD st:s c a b",
        "MSET st:w_a 3 st:w_b 1 st:w_c 2",
        "SORT st:s BY st:w_*",
        "SORT st:s BY st:w_* GET # GET st:w_*",
        "SORT st:s BY nosort STORE st:d",
        "LRANGE st:d 0 -1",
        "ZADD st:z 1 x 2 y 3 z",
        "MSET st:w_x 9 st:w_y 8 st:w_z 7",
        "SORT st:z BY nosort DESC LIMIT 0 2",
        "SORT st:z BY st:w_*",
        "SORT st:z BY st:w_* LIMIT 1 1 GET #",
        "SORT st:none BY st:w_*",
        "SORT st:none BY st:w_* STORE st:d",
        "EXISTS st:d",
        "SET st:str v",
        "SORT st:str BY st:w_*",
        "SORT st:str BY st:w_* LIMIT x y",
        "HELLO 3",
        "SORT st:l BY st:w_10 GET st:o_*->name",
        "SORT st:l BY st:w_* GET st:o_*->name",
    ] {
        let line: Vec<&str> = line.split(' ').collect();
        direct.send(&cmd(&line));
        let expected = direct.read_reply();
        if line[0] == "HELLO" {
            through.send(&cmd(&line));
            let _ = through.read_available(Duration::from_millis(300));
            continue;
        }
        through.send(&cmd(&line));
        let got = through.read_reply();
        assert_eq!(common::escape(&got), common::escape(&expected), "{line:?}");
    }
}

#[test]
fn lcs_across_slots_answers_as_one_redis() {
    let names = ["lc:a", "lc:b", "lc:h"];
    let (_reference, mut direct, mut through) = beside_reference("lcs", &names);
    for line in [
        "MSET lc:a ohmytext",
        "SET lc:b mynewtext",
        "LCS lc:a lc:b",
        "LCS lc:a lc:b LEN",
        "LCS lc:a lc:b IDX",
        "LCS lc:a lc:b IDX MINMATCHLEN 4 WITHMATCHLEN",
        "LCS lc:a lc:b idx withmatchlen minmatchlen -2",
        "LCS lc:a lc:b LEN IDX",
        "LCS lc:a lc:b MINMATCHLEN x",
        "LCS lc:a lc:b MINMATCHLEN",
        "LCS lc:a lc:b FOO",
        "LCS lc:a lc:none",
        "LCS lc:none lc:b IDX",
        "HSET lc:h f v",
        "LCS lc:a lc:h",
        "LCS lc:h lc:b FOO",
        "SET lc:a ABCBDAB",
        "SET lc:b BDCABA",
        "LCS lc:a lc:b IDX WITHMATCHLEN",
        "HELLO 3",
        "LCS lc:a lc:b IDX WITHMATCHLEN",
    ] {
        replay(&mut direct, &mut through, line);
    }
}

/// `LATENCY LATEST`, `HISTORY` and `HISTOGRAM` and `MEMORY STATS` through
/// the proxy describe the masters together, as one server: the newest
/// sample and largest maximum, every sample in time order, calls summed,
/// counts summed (RESP2 and RESP3).
fn latency_and_memory_of_all_masters(cluster: &Cluster, proxy: &Proxy) {
    let masters = cluster.master_ports();
    let int = |v: &redis::Value| -> i64 { redis::from_redis_value(v.clone()).unwrap() };
    let fields = |v: &redis::Value| -> Vec<redis::Value> {
        let redis::Value::Array(f) = v else {
            panic!("{v:?}")
        };
        f.clone()
    };
    let (mut newest, mut largest, mut seconds) = (0, 0, HashSet::new());
    for &port in &masters {
        let mut m = cluster.conn(port);
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("latency-monitor-threshold")
            .arg(1)
            .query(&mut m)
            .unwrap();
        let _: i64 = redis::cmd("EVAL")
            .arg("local i=0 while i<3000000 do i=i+1 end return 1")
            .arg(0)
            .query(&mut m)
            .unwrap();
        let latest: Vec<redis::Value> = redis::cmd("LATENCY").arg("LATEST").query(&mut m).unwrap();
        let entry = fields(&latest[0]);
        newest = newest.max(int(&entry[1]));
        largest = largest.max(int(&entry[3]));
        let history: Vec<redis::Value> = redis::cmd("LATENCY")
            .arg("HISTORY")
            .arg("command")
            .query(&mut m)
            .unwrap();
        seconds.extend(history.iter().map(|s| int(&fields(s)[0])));
    }
    let mut c = proxy.conn();
    let latest: Vec<redis::Value> = redis::cmd("LATENCY").arg("LATEST").query(&mut c).unwrap();
    assert_eq!(latest.len(), 1, "{latest:?}");
    let entry = fields(&latest[0]);
    let name: String = redis::from_redis_value(entry[0].clone()).unwrap();
    assert_eq!(
        (name.as_str(), int(&entry[1]), int(&entry[3])),
        ("command", newest, largest)
    );
    let history: Vec<redis::Value> = redis::cmd("LATENCY")
        .arg("HISTORY")
        .arg("command")
        .query(&mut c)
        .unwrap();
    let times: Vec<i64> = history.iter().map(|s| int(&fields(s)[0])).collect();
    let mut expected: Vec<i64> = seconds.into_iter().collect();
    expected.sort_unstable();
    assert_eq!(times, expected);
    // One EVAL on each master: three calls, all in the last bucket.
    let histogram: Vec<redis::Value> = redis::cmd("LATENCY")
        .arg("HISTOGRAM")
        .arg("eval")
        .query(&mut c)
        .unwrap();
    let detail = fields(&histogram[1]);
    assert_eq!(int(&detail[1]), 3, "{histogram:?}");
    let buckets = fields(&detail[3]);
    assert_eq!(int(&buckets[buckets.len() - 1]), 3, "{histogram:?}");
    for &port in &masters {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("latency-monitor-threshold")
            .arg(0)
            .query(&mut cluster.conn(port))
            .unwrap();
    }
    // MEMORY STATS: keys and startup memory summed over the masters.
    let stat = |v: &[redis::Value], name: &str| -> i64 {
        let at = v
            .iter()
            .position(|f| matches!(f, redis::Value::BulkString(b) if b == name.as_bytes()))
            .unwrap_or_else(|| panic!("{name} missing"));
        int(&v[at + 1])
    };
    let (mut keys, mut startup) = (0, 0);
    for &port in &masters {
        let s: Vec<redis::Value> = redis::cmd("MEMORY")
            .arg("STATS")
            .query(&mut cluster.conn(port))
            .unwrap();
        keys += stat(&s, "keys.count");
        startup += stat(&s, "startup.allocated");
    }
    let s: Vec<redis::Value> = redis::cmd("MEMORY").arg("STATS").query(&mut c).unwrap();
    assert_eq!(
        (stat(&s, "keys.count"), stat(&s, "startup.allocated")),
        (keys, startup)
    );
    let mut r3 = RawClient::connect(proxy.port);
    r3.send(&cmd(&["HELLO", "3"]));
    r3.read_available(Duration::from_millis(300));
    r3.send(&cmd(&["MEMORY", "STATS"]));
    let text = String::from_utf8_lossy(&r3.read_available(Duration::from_millis(500))).into_owned();
    assert!(
        text.starts_with('%') && text.contains("$18\r\ndataset.percentage\r\n,"),
        "{text}"
    );
    // The doctors: each master's report under its address.
    for doctor in ["MEMORY", "LATENCY"] {
        let report: String = redis::cmd(doctor).arg("DOCTOR").query(&mut c).unwrap();
        for &port in &masters {
            let title = format!("Master 127.0.0.1:{port}:\n");
            assert_eq!(report.matches(&title).count(), 1, "{report}");
        }
        r3.send(&cmd(&[doctor, "DOCTOR"]));
        let text = r3.read_available(Duration::from_millis(500));
        assert!(text.starts_with(b"="), "{}", String::from_utf8_lossy(&text));
    }
}

/// Found by Redis 7.0's own test suite (`runtest --host`) run through the
/// proxy: each line gets the bytes one Redis sends. PING checks its own
/// arity; a subcommand's full name (`CONFIG|GET`) is no command; SELECT
/// of an index no server has gets Redis's error (1 to 15: the proxy's);
/// SAVE and SHUTDOWN inside MULTI get Redis's refusal and abort the EXEC.
#[test]
fn edge_replies_found_by_redis_own_suite_match_one_redis() {
    let ((_dir, _reference), mut direct, mut through) = beside_reference("edges", &["edges:k"]);
    let lines: &[&[&str]] = &[
        &["PING", "x", "y", "z"],
        &["PING", "x", "y"],
        &["PING", "x"],
        &["CONFIG|GET", "maxmemory"],
        &["GET|SET"],
        &["SELECT", "16"],
        &["SELECT", "-1"],
        &["SELECT", "015"],
        &["SELECT", "2147483648"],
        &["SELECT", "0"],
        &["MULTI"],
        &["SAVE"],
        &["SHUTDOWN", "NOSAVE"],
        &["SAVE", "x"],
        &["SET", "edges:k", "1"],
        &["EXEC"],
        &["EXISTS", "edges:k"],
        // SELECT 0 and bad indexes inside MULTI: answered in EXEC's array
        // (found by node-redis's suite).
        &["MULTI"],
        &["SELECT", "0"],
        &["SET", "edges:k", "2"],
        &["SELECT", "x"],
        &["SELECT", "99"],
        &["GET", "edges:k"],
        &["EXEC"],
        &["SCRIPT", "DEBUG", "no"],
        &["SCRIPT", "DEBUG", "maybe"],
        &["MULTI"],
        &["SCRIPT", "DEBUG", "no"],
        &["GET", "edges:k"],
        &["EXEC"],
        // A wrong number of arguments aborts the transaction.
        &["MULTI"],
        &["MOVE", "edges:k"],
        &["EXEC"],
        // KEYS inside MULTI: every master's, in its place.
        &["MULTI"],
        &["KEYS", "edges:*"],
        &["KEYS", "edges:none*"],
        &["EXEC"],
        // Errors one server gives when it runs a queued command.
        &["MULTI"],
        &["CLUSTER", "INFO"],
        &["READONLY"],
        &["GET", "edges:k"],
        &["EXEC"],
        // Help texts: a server's own.
        &["OBJECT", "HELP"],
        &["XINFO", "HELP"],
        &["XGROUP", "HELP"],
        &["PUBSUB", "HELP"],
        &["CLIENT", "HELP"],
        &["MODULE", "HELP"],
    ];
    for line in lines {
        let request = cmd(line);
        direct.send(&request);
        let want = direct.read_reply();
        through.send(&request);
        assert_eq!(
            common::escape(&through.read_reply()),
            common::escape(&want),
            "{line:?}"
        );
    }
}

/// SCRIPT KILL and FUNCTION KILL reach the master that runs the script,
/// although that master reads nothing more from the shared connection the
/// script came on (before, the kill queued behind the script until the
/// request timeout dropped the connection); with no script running, the
/// idle masters' NOTBUSY.
#[test]
fn script_kill_reaches_the_busy_master() {
    let mut admin = raw();
    admin.roundtrip(
        &cmd(&["SCRIPT", "KILL"]),
        b"-NOTBUSY No scripts in execution right now.\r\n",
    );
    // Killable after 100 ms instead of 5 s, so that the busy master holds
    // other tests' commands only briefly.
    admin.roundtrip(
        &cmd(&["CONFIG", "SET", "lua-time-limit", "100"]),
        b"+OK\r\n",
    );
    let mut busy = raw();
    busy.send(&cmd(&["EVAL", "while true do end", "0"]));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        admin.send(&cmd(&["SCRIPT", "KILL"]));
        let reply = admin.read_reply();
        if reply == b"+OK\r\n" {
            break;
        }
        assert!(
            reply.starts_with(b"-BUSY") || reply.starts_with(b"-NOTBUSY"),
            "{}",
            common::escape(&reply)
        );
        assert!(
            Instant::now() < deadline,
            "SCRIPT KILL never reached the script"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed = busy.read_reply();
    assert!(
        killed.starts_with(b"-ERR Script killed by user with SCRIPT KILL"),
        "{}",
        common::escape(&killed)
    );
    busy.roundtrip(&cmd(&["PING"]), b"+PONG\r\n");
    admin.roundtrip(
        &cmd(&["CONFIG", "SET", "lua-time-limit", "5000"]),
        b"+OK\r\n",
    );
    admin.roundtrip(
        &cmd(&["FUNCTION", "KILL"]),
        b"-NOTBUSY No scripts in execution right now.\r\n",
    );
}

#[test]
fn debug_answers_for_all_masters_as_one_server() {
    // Its own cluster: DEBUG DIGEST covers every key.
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&cluster);
    let dir = TempDir::new("debug-ref");
    let reference = Standalone::start_with(&dir, &["--enable-debug-command", "yes"]);
    let mut direct = RawClient::connect(reference.port);
    let mut through = RawClient::connect(proxy.port);
    let masters = cluster.master_ports();
    // Keys on the first master only, then on two (an even number of
    // non-empty masters), then on all three.
    let (a, b, c) = (
        key_for_slot(100, "dbg-a"),
        key_for_slot(8000, "dbg-b"),
        key_for_slot(16000, "dbg-c"),
    );
    let owners: HashSet<u16> = [&a, &b, &c]
        .iter()
        .map(|k| cluster.node_for_key(k.as_bytes()))
        .collect();
    assert_eq!(owners.len(), 3, "one key per master");
    let writes: Vec<Vec<String>> = vec![
        vec![],
        vec!["SET".into(), a.clone(), "1".into()],
        vec!["RPUSH".into(), b.clone(), "x".into(), "y".into()],
        vec!["HSET".into(), c.clone(), "f".into(), "v".into()],
    ];
    for write in &writes {
        if !write.is_empty() {
            let args: Vec<&str> = write.iter().map(String::as_str).collect();
            direct.send(&cmd(&args));
            let expected = direct.read_reply();
            through.send(&cmd(&args));
            through.expect(&expected);
        }
        replay(&mut direct, &mut through, "DEBUG DIGEST");
    }
    // Per key, at its master.
    replay(
        &mut direct,
        &mut through,
        &format!("DEBUG DIGEST-VALUE {a}"),
    );
    replay(
        &mut direct,
        &mut through,
        &format!("DEBUG DIGEST-VALUE {b} {{{b}}}x"),
    );
    replay(&mut direct, &mut through, &format!("DEBUG SDSLEN {a}"));
    replay(&mut direct, &mut through, "DEBUG OBJECT nosuchkey");
    let encoding = |reply: &[u8]| {
        let text = String::from_utf8_lossy(reply).to_string();
        let start = text.find("encoding:").expect("an encoding");
        text[start..].split(' ').next().unwrap().to_string()
    };
    direct.send(&cmd(&["DEBUG", "OBJECT", &b]));
    through.send(&cmd(&["DEBUG", "OBJECT", &b]));
    assert_eq!(
        encoding(&through.read_reply()),
        encoding(&direct.read_reply())
    );
    // Every master sleeps (a read on each waits for it), and answers +OK.
    let started = Instant::now();
    through.send(&cmd(&["DEBUG", "SLEEP", "0.4"]));
    std::thread::sleep(Duration::from_millis(100));
    for &port in &masters {
        let mut node = RawClient::connect(port);
        node.roundtrip(&cmd(&["PING"]), b"+PONG\r\n");
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "master {port} did not sleep"
        );
    }
    through.expect(b"+OK\r\n");
    through.roundtrip(&cmd(&["DEBUG", "SET-ACTIVE-EXPIRE", "0"]), b"+OK\r\n");
    through.roundtrip(&cmd(&["DEBUG", "SET-ACTIVE-EXPIRE", "1"]), b"+OK\r\n");
    // Inside MULTI, one sleep (the transaction's master's), and all of a
    // transaction's sleeps bounded together.
    let started = Instant::now();
    for line in [&["MULTI"][..], &["DEBUG", "SLEEP", "0.3"], &["GET", &a]] {
        through.send(&cmd(line));
    }
    through.expect(b"+OK\r\n+QUEUED\r\n+QUEUED\r\n");
    through.roundtrip(&cmd(&["EXEC"]), b"*2\r\n+OK\r\n$1\r\n1\r\n");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(550),
        "{took:?}"
    );
    for line in [
        &["MULTI"][..],
        &["DEBUG", "SLEEP", "3"],
        &["DEBUG", "SLEEP", "0x3"],
    ] {
        through.send(&cmd(line));
    }
    through.expect(b"+OK\r\n+QUEUED\r\n");
    assert!(through
        .read_reply()
        .starts_with(b"-ERR slotbridge: DEBUG SLEEP of more than 5 seconds"));
    through.roundtrip(
        &cmd(&["EXEC"]),
        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
    );
    // Unknown subcommands: a node's error.
    through.send(&cmd(&["DEBUG", "NO-SUCH-THING"]));
    assert!(through.read_reply().starts_with(b"-ERR unknown subcommand"));
    // No cluster bus on one server.
    through.send(&cmd(&["INFO", "clients"]));
    assert!(String::from_utf8_lossy(&through.read_reply()).contains("cluster_connections:0\r\n"));
    // Inside MULTI too, as FLUSHALL: the other masters first.
    for line in [
        &["MULTI"][..],
        &["DEBUG", "SLEEP", "0"],
        &["SET", &a, "2"],
        &["DEBUG", "OBJECT", &a],
    ] {
        through.send(&cmd(line));
    }
    through.expect(b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n");
    through.send(&cmd(&["EXEC"]));
    let exec = through.read_reply();
    assert!(
        exec.starts_with(b"*3\r\n+OK\r\n+OK\r\n+Value at:"),
        "{}",
        String::from_utf8_lossy(&exec)
    );
    through.send(&cmd(&["DEBUG", "HELP"]));
    assert!(through.read_reply().starts_with(b"*"));
    // Refused: a long sleep, and what would crash or reload a node.
    through.send(&cmd(&["DEBUG", "SLEEP", "6"]));
    assert!(through
        .read_reply()
        .starts_with(b"-ERR slotbridge: DEBUG SLEEP of more than 5 seconds"));
    through.roundtrip(
        &cmd(&["DEBUG", "SEGFAULT"]),
        b"-ERR slotbridge: DEBUG SEGFAULT is not passed to the cluster (it would crash, restart, reload or change a node behind the proxy's back); run it on a node itself\r\n",
    );
    for &port in &masters {
        RawClient::connect(port).roundtrip(&cmd(&["PING"]), b"+PONG\r\n");
    }
    // Keys in two slots: one server's digests, the cluster's refusal.
    through.send(&cmd(&["DEBUG", "DIGEST-VALUE", &a, &b]));
    assert!(through.read_reply().starts_with(b"-CROSSSLOT"));
}

/// The fields of one `CLIENT INFO` line (`name=value`), values of the
/// fields that differ between two connections left out.
fn client_fields(line: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(line);
    let body = text.split_once("\r\n").map_or(&*text, |(_, b)| b);
    body.split_whitespace()
        .map(|field| match field.split_once('=') {
            Some((name @ ("flags" | "capa" | "watch" | "multi"), value)) => {
                format!("{name}={value}")
            }
            Some((name, _)) => name.to_string(),
            None => field.to_string(),
        })
        .collect()
}

/// Replies whose words and fields changed between Redis 7.0, 7.2, 7.4 and
/// 8.0 (and Valkey): the proxy answers as the nodes' version does, compared
/// with one server of the installed `redis-server`.
#[test]
fn version_dependent_replies_follow_the_nodes() {
    let names = ["vd:a", "vd:b", "vd:c"];
    let (reference, mut direct, mut through) = beside_reference("versions", &names);
    for line in [
        "XADD vd:a 1-1 f v",
        "XREAD STREAMS vd:a vd:b vd:c 0 0",
        "XREADGROUP GROUP g c STREAMS vd:a vd:b vd:c > >",
        "ACL GETUSER default",
        "XINFO NOSUCHSUB vd:a",
        "MULTI",
        "XINFO NOSUCHSUB vd:a",
        "GET vd:a",
        "EXEC",
        // Redis 7.2's WAITAOF (unknown to 7.0): its argument errors.
        "WAITAOF 2 0 0",
        "WAITAOF 0 -1 0",
        "WAITAOF 0 1 -1",
        "WAITAOF x 1 1",
        // NO-TOUCH arrived in 7.2 (flag T); 7.0 refuses it.
        "WAITAOF 0 x 0",
        "CLIENT NO-TOUCH on",
        "CLIENT NO-EVICT on",
        "CLIENT NOSUCHSUB",
        // 7.2's subcommands' arity and values (a newline would forge a
        // CLIENT LIST line).
        "CLIENT SETINFO lib-name",
        "CLIENT NO-TOUCH",
        "CLIENT SETINFO lib-ver 1\nid=999",
        "CLIENT SETINFO lib-name a\tb",
        // Newer CLUSTER subcommands describe a node the proxy hides.
        "CLUSTER MYSHARDID",
        // Valkey 8.1's COMMANDLOG (unknown to Redis): the nodes' errors.
        "COMMANDLOG GET 1 nosuchtype",
        "COMMANDLOG GET -2 slow",
        // Nested MULTI and WATCH inside MULTI: Valkey 8 aborts EXEC.
        "MULTI",
        "MULTI",
        "WATCH vd:a",
        "SET vd:c 1",
        "EXEC",
        "GET vd:c",
    ] {
        replay(&mut direct, &mut through, line);
    }
    let watch = |c: &mut RawClient| {
        c.send(&cmd(&["WATCH", "vd:a", "vd:a"]));
        assert_eq!(c.read_reply(), b"+OK\r\n");
        c.send(&cmd(&["CLIENT", "INFO"]));
        let info = client_fields(&c.read_reply());
        c.send(&cmd(&["UNWATCH"]));
        assert_eq!(c.read_reply(), b"+OK\r\n");
        info
    };
    assert_eq!(watch(&mut through), watch(&mut direct));
    // A MONITOR client is flagged O; RESET clears NO-EVICT and NO-TOUCH
    // (from 7.2 on) and ends MONITOR.
    let flags_of_monitor = |port: u16| {
        let mut monitor = RawClient::connect(port);
        monitor.send(&cmd(&["CLIENT", "SETNAME", "vd-monitor"]));
        assert_eq!(monitor.read_reply(), b"+OK\r\n");
        monitor.send(&cmd(&["MONITOR"]));
        assert_eq!(monitor.read_reply(), b"+OK\r\n");
        let mut other = RawClient::connect(port);
        other.send(&cmd(&["CLIENT", "LIST"]));
        let list = String::from_utf8_lossy(&other.read_reply()).into_owned();
        let line = list
            .lines()
            .find(|l| l.contains("name=vd-monitor "))
            .unwrap_or_default()
            .to_string();
        client_fields(line.as_bytes())
    };
    assert_eq!(
        flags_of_monitor(env().1.port),
        flags_of_monitor(reference.1.port)
    );
    for c in [&mut direct, &mut through] {
        c.send(&cmd(&["RESET"]));
        assert_eq!(c.read_reply(), b"+RESET\r\n");
    }
    direct.send(&cmd(&["CLIENT", "INFO"]));
    through.send(&cmd(&["CLIENT", "INFO"]));
    assert_eq!(
        client_fields(&through.read_reply()),
        client_fields(&direct.read_reply())
    );
    // HELLO names the server and its version as the nodes do (the same
    // binary here), and lists their modules.
    let hello = |c: &mut RawClient| {
        c.send(&cmd(&["HELLO", "3"]));
        let reply = String::from_utf8_lossy(&c.read_reply()).into_owned();
        let id = reply.find("$2\r\nid\r\n:").map(|at| at + 9).unwrap_or(0);
        let end = reply[id..].find("\r\n").map_or(id, |n| id + n);
        format!("{}{}", &reply[..id], &reply[end..])
    };
    assert_eq!(hello(&mut through), hello(&mut direct));
}

/// `db0:keys=...,expires=...,avg_ttl=...` of an `INFO keyspace` reply.
fn keyspace_line(info: &str) -> (i64, i64, i64) {
    let line = info
        .lines()
        .find_map(|l| l.strip_prefix("db0:"))
        .unwrap_or("keys=0,expires=0,avg_ttl=0");
    let field = |name: &str| {
        line.split(',')
            .find_map(|kv| {
                kv.strip_prefix(name)?
                    .strip_prefix('=')?
                    .parse::<i64>()
                    .ok()
            })
            .unwrap_or(0)
    };
    (field("keys"), field("expires"), field("avg_ttl"))
}

/// `INFO keyspace` adds the masters' keys and averages their `avg_ttl`
/// over their expiring keys, as one server holding all of them estimates
/// it (it was the largest master's figure: 2.4 times one Redis's when one
/// key of ten lived 100 times longer).
#[test]
fn info_keyspace_weighs_the_masters_average_ttls() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    for i in 0..9 {
        let _: () = redis::cmd("SET")
            .arg(format!("ttl:{i}"))
            .arg("v")
            .arg("EX")
            .arg(100)
            .query(&mut c)
            .unwrap();
    }
    let _: () = redis::cmd("SET")
        .arg("ttl:long")
        .arg("v")
        .arg("EX")
        .arg(10_000)
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("ttl:none")
        .arg("v")
        .query(&mut c)
        .unwrap();
    let masters = cluster.master_ports();
    let weighted = || -> f64 {
        let lines: Vec<(i64, i64, i64)> = masters
            .iter()
            .map(|&p| {
                let info: String = redis::cmd("INFO")
                    .arg("keyspace")
                    .query(&mut cluster.conn(p))
                    .unwrap();
                keyspace_line(&info)
            })
            .collect();
        let estimated: Vec<_> = lines.iter().filter(|l| l.2 > 0).collect();
        let weight: i64 = estimated.iter().map(|l| l.1).sum();
        estimated.iter().map(|l| (l.2 * l.1) as f64).sum::<f64>() / weight.max(1) as f64
    };
    // The masters estimate their average TTL in their expire cycle.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = masters.iter().all(|&p| {
            let info: String = redis::cmd("INFO")
                .arg("keyspace")
                .query(&mut cluster.conn(p))
                .unwrap();
            let (_, expires, ttl) = keyspace_line(&info);
            expires == 0 || ttl > 0
        });
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the masters never estimated avg_ttl"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = weighted();
    let info: String = redis::cmd("INFO").arg("keyspace").query(&mut c).unwrap();
    let after = weighted();
    let (keys, expires, ttl) = keyspace_line(&info);
    assert_eq!((keys, expires), (11, 10), "{info}");
    let (low, high) = (before.min(after) * 0.99, before.max(after) * 1.01);
    assert!(
        (low..=high).contains(&(ttl as f64)),
        "avg_ttl {ttl}, masters' weighted {before}..{after}"
    );
}
