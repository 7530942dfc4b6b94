//! Client-side caching (`CLIENT TRACKING`) through the proxy, on a real
//! cluster: a RESP3 client that read a key gets Redis's `invalidate` push
//! when another client changes it, after the reply it read, in the default,
//! `OPTIN` and `OPTOUT` modes; a flush, a lost tracking connection or a
//! redirected read tell it to flush everything; with `REDIRECT`, another
//! client (RESP2 in Pub/Sub mode, or RESP3) gets them; the tracking
//! commands answer as Redis does.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::{encode_command, key_for_slot, Cluster, Proxy, RawClient, TempDir};

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start(3, 0))
}

/// A proxy of the test's own: tracking state (per backend connection and
/// in `INFO`) must not mix between tests running at the same time.
fn proxy() -> Proxy {
    Proxy::start(cluster())
}

fn cmd(args: &[&str]) -> Vec<u8> {
    let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    encode_command(&bytes)
}

/// The push Redis sends when `keys` changed.
fn invalidate(keys: &[&str]) -> Vec<u8> {
    let mut out = format!(">2\r\n$10\r\ninvalidate\r\n*{}\r\n", keys.len()).into_bytes();
    for k in keys {
        out.extend_from_slice(format!("${}\r\n{k}\r\n", k.len()).as_bytes());
    }
    out
}

/// The push Redis sends after `FLUSHALL`: flush everything.
const FLUSH: &[u8] = b">2\r\n$10\r\ninvalidate\r\n_\r\n";

/// A RESP3 client with tracking turned on with `options`.
fn tracking_client(proxy: &Proxy, options: &[&str]) -> RawClient {
    let mut c = RawClient::connect(proxy.port);
    c.send(&cmd(&["HELLO", "3"]));
    let hello = c.read_available(Duration::from_millis(500));
    assert!(hello.starts_with(b"%7\r\n"), "{hello:?}");
    let mut args = vec!["CLIENT", "TRACKING", "on"];
    args.extend_from_slice(options);
    c.roundtrip(&cmd(&args), b"+OK\r\n");
    c
}

/// Sets `key` through another client of the proxy.
fn write(proxy: &Proxy, key: &str, value: &str) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query(&mut proxy.conn())
        .unwrap();
}

/// Asserts nothing was pushed: after a pause for stray pushes, a `PING`
/// gets exactly its own reply.
fn expect_nothing_pushed(c: &mut RawClient) {
    std::thread::sleep(Duration::from_millis(150));
    c.roundtrip(&cmd(&["PING"]), b"+PONG\r\n");
}

/// Keys owned by three different masters (slots 100, 6000 and 12000).
fn keys(tag: &str) -> [String; 3] {
    [100, 6000, 12000].map(|slot| key_for_slot(slot, &format!("trk:{tag}:")))
}

#[test]
fn a_reader_is_told_once_per_read_after_its_reply() {
    let proxy = proxy();
    let [a, b, c] = keys("default");
    let mut r = tracking_client(&proxy, &[]);
    r.roundtrip(&cmd(&["GET", &a]), b"_\r\n");
    write(&proxy, &a, "1");
    r.expect(&invalidate(&[&a]));
    // Told once: the next change is not pushed until the key is read again.
    write(&proxy, &a, "2");
    expect_nothing_pushed(&mut r);
    r.roundtrip(&cmd(&["GET", &a]), b"$1\r\n2\r\n");
    write(&proxy, &a, "3");
    r.expect(&invalidate(&[&a]));
    // A cross-slot MGET tracks every key on its own master.
    r.roundtrip(&cmd(&["MGET", &a, &b, &c]), b"*3\r\n$1\r\n3\r\n_\r\n_\r\n");
    write(&proxy, &b, "x");
    r.expect(&invalidate(&[&b]));
    write(&proxy, &c, "y");
    r.expect(&invalidate(&[&c]));
    write(&proxy, &a, "z");
    r.expect(&invalidate(&[&a]));
    // Writes alone are not tracked.
    r.roundtrip(&cmd(&["SET", &b, "w"]), b"+OK\r\n");
    write(&proxy, &b, "v");
    expect_nothing_pushed(&mut r);
    // Off: nothing more.
    r.roundtrip(&cmd(&["GET", &c]), b"$1\r\ny\r\n");
    r.roundtrip(&cmd(&["CLIENT", "TRACKING", "off"]), b"+OK\r\n");
    write(&proxy, &c, "after");
    expect_nothing_pushed(&mut r);
}

#[test]
fn optin_and_optout_track_what_the_client_chose() {
    let proxy = proxy();
    let [a, ..] = keys("modes");
    write(&proxy, &a, "v");
    let mut r = tracking_client(&proxy, &["OPTIN"]);
    r.roundtrip(&cmd(&["GET", &a]), b"$1\r\nv\r\n");
    write(&proxy, &a, "v");
    expect_nothing_pushed(&mut r);
    r.roundtrip(&cmd(&["CLIENT", "CACHING", "yes"]), b"+OK\r\n");
    // CLIENT commands in between keep the choice, as in Redis.
    r.roundtrip(&cmd(&["CLIENT", "GETREDIR"]), b":0\r\n");
    r.roundtrip(&cmd(&["GET", &a]), b"$1\r\nv\r\n");
    write(&proxy, &a, "w");
    r.expect(&invalidate(&[&a]));
    r.roundtrip(&cmd(&["CLIENT", "TRACKING", "off"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["CLIENT", "TRACKING", "on", "OPTOUT"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["CLIENT", "CACHING", "no"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["GET", &a]), b"$1\r\nw\r\n");
    write(&proxy, &a, "x");
    expect_nothing_pushed(&mut r);
    r.roundtrip(&cmd(&["GET", &a]), b"$1\r\nx\r\n");
    write(&proxy, &a, "y");
    r.expect(&invalidate(&[&a]));
}

#[test]
fn tracking_commands_answer_as_redis() {
    let proxy = proxy();
    let mut r = RawClient::connect(proxy.port);
    r.roundtrip(
        &cmd(&["CLIENT", "TRACKINGINFO"]),
        b"*6\r\n$5\r\nflags\r\n*1\r\n$3\r\noff\r\n$8\r\nredirect\r\n:-1\r\n$8\r\nprefixes\r\n*0\r\n",
    );
    r.roundtrip(&cmd(&["CLIENT", "GETREDIR"]), b":-1\r\n");
    r.roundtrip(
        &cmd(&["CLIENT", "CACHING", "yes"]),
        b"-ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled\r\n",
    );
    r.roundtrip(
        &cmd(&["CLIENT", "TRACKING", "on", "PREFIX", "a"]),
        b"-ERR PREFIX option requires BCAST mode to be enabled\r\n",
    );
    r.roundtrip(
        &cmd(&["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "a", "PREFIX", "ab"]),
        b"-ERR Prefix 'a' overlaps with another provided prefix 'ab'. Prefixes for a single client must not overlap.\r\n",
    );
    r.roundtrip(
        &cmd(&["CLIENT", "TRACKING", "on", "REDIRECT", "999999"]),
        b"-ERR The client ID you want redirect to does not exist\r\n",
    );
    r.roundtrip(
        &cmd(&["CLIENT", "TRACKING", "maybe"]),
        b"-ERR syntax error\r\n",
    );
    let mut t = tracking_client(&proxy, &["OPTIN", "NOLOOP"]);
    t.roundtrip(&cmd(&["CLIENT", "CACHING", "yes"]), b"+OK\r\n");
    t.roundtrip(
        &cmd(&["CLIENT", "TRACKINGINFO"]),
        b"%3\r\n$5\r\nflags\r\n~4\r\n$2\r\non\r\n$5\r\noptin\r\n$11\r\ncaching-yes\r\n$6\r\nnoloop\r\n$8\r\nredirect\r\n:0\r\n$8\r\nprefixes\r\n*0\r\n",
    );
    t.roundtrip(
        &cmd(&["CLIENT", "TRACKING", "on", "OPTOUT"]),
        b"-ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.\r\n",
    );
    t.roundtrip(
        &cmd(&["CLIENT", "CACHING", "no"]),
        b"-ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.\r\n",
    );
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut proxy.conn())
        .unwrap();
    let tracking: Vec<&str> = list
        .lines()
        .filter(|l| l.contains(" flags=t ") && l.contains(" redir=0 "))
        .collect();
    assert_eq!(tracking.len(), 1, "{list}");
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query(&mut proxy.conn())
        .unwrap();
    assert!(info.contains("\r\ntracking_clients:1\r\n"), "{info}");
    t.roundtrip(&cmd(&["CLIENT", "CACHING", "yes"]), b"+OK\r\n");
    t.roundtrip(&cmd(&["GET", "trk:info:k"]), b"_\r\n");
    let stats: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut proxy.conn())
        .unwrap();
    assert!(stats.contains("\r\ntracking_total_keys:1\r\n"), "{stats}");
    // The proxy's table, not the sum of the masters'.
    assert!(stats.contains("\r\ntracking_total_items:1\r\n"), "{stats}");
    assert!(
        stats.contains("\r\ntracking_total_prefixes:0\r\n"),
        "{stats}"
    );
    t.roundtrip(&cmd(&["RESET"]), b"+RESET\r\n");
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query(&mut proxy.conn())
        .unwrap();
    assert!(info.contains("\r\ntracking_clients:0\r\n"), "{info}");
}

#[test]
fn a_flush_or_a_lost_tracking_connection_flushes_client_caches() {
    // Its own cluster: FLUSHALL and CLIENT KILL reach every tracking
    // connection of a node, other tests' proxies' too.
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&cluster);
    let [a, ..] = keys("flush");
    let mut r = tracking_client(&proxy, &[]);
    r.roundtrip(&cmd(&["GET", &a]), b"_\r\n");
    // One master's connection tracks: its FLUSHALL says flush everything.
    let _: () = redis::cmd("FLUSHALL").query(&mut proxy.conn()).unwrap();
    r.expect(FLUSH);
    expect_nothing_pushed(&mut r);
    // The node drops the proxy's connections: whatever that connection
    // tracked can no longer be invalidated, so the client flushes.
    r.roundtrip(&cmd(&["GET", &a]), b"_\r\n");
    let node = cluster.node_for_key(a.as_bytes());
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query(&mut cluster.conn(node))
        .unwrap();
    r.expect(FLUSH);
    // A new connection tracks again.
    r.roundtrip(&cmd(&["GET", &a]), b"_\r\n");
    write(&proxy, &a, "1");
    r.expect(&invalidate(&[&a]));
}

#[test]
fn a_flush_of_every_master_is_one_push_even_inside_multi() {
    // Its own cluster: FLUSHALL reaches every tracking connection.
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&cluster);
    let [a, b, c] = keys("flushtx");
    let mut r = tracking_client(&proxy, &[]);
    for k in [&a, &b, &c] {
        r.roundtrip(&cmd(&["GET", k]), b"_\r\n");
    }
    // Another client's FLUSHALL: each master says flush; one push.
    let _: () = redis::cmd("FLUSHALL").query(&mut proxy.conn()).unwrap();
    r.expect(FLUSH);
    expect_nothing_pushed(&mut r);
    // Its own, inside a transaction: every master is flushed, the push
    // follows EXEC's reply, once.
    for k in [&a, &b, &c] {
        write(&proxy, k, "v");
        r.roundtrip(&cmd(&["GET", k]), b"$1\r\nv\r\n");
    }
    // Runs in its place: what the block wrote before is gone, not what
    // it wrote after.
    r.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["SET", "{tx}before", "1"]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["FLUSHALL"]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["SET", "{tx}after", "2"]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["EXEC"]), b"*3\r\n+OK\r\n+OK\r\n+OK\r\n");
    r.expect(FLUSH);
    expect_nothing_pushed(&mut r);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut proxy.conn())
        .unwrap();
    assert_eq!(keys, ["{tx}after"]);
}

#[test]
fn a_read_that_moved_is_never_left_cached_untracked() {
    // Its own cluster: a slot moves.
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&cluster);
    let a = key_for_slot(200, "trk:moved:");
    write(&proxy, &a, "v");
    let mut r = tracking_client(&proxy, &[]);
    r.roundtrip(&cmd(&["GET", &a]), b"$1\r\nv\r\n");
    let from = cluster.node_for_slot(200);
    let to = cluster
        .master_ports()
        .into_iter()
        .find(|&p| p != from)
        .unwrap();
    cluster.migrate_slot(200, to);
    // The key left its old master, which says so.
    r.expect(&invalidate(&[&a]));
    // Read again (redirected if the proxy's map is still the old one),
    // then changed: whichever way the read went, the client is told.
    r.send(&cmd(&["GET", &a]));
    r.expect(b"$1\r\nv\r\n");
    write(&proxy, &a, "w");
    std::thread::sleep(Duration::from_millis(150));
    r.send(&cmd(&["PING"]));
    let told = r.read_available(Duration::from_millis(500));
    let tail = b"+PONG\r\n";
    assert!(told.ends_with(tail), "{:?}", String::from_utf8_lossy(&told));
    let pushes = &told[..told.len() - tail.len()];
    let flushed = pushes == FLUSH || pushes == [FLUSH, &invalidate(&[&a])[..]].concat();
    assert!(
        flushed || pushes == invalidate(&[&a]),
        "{:?}",
        String::from_utf8_lossy(&told)
    );
}

#[test]
fn pushed_keys_are_the_names_the_client_uses() {
    let dir = TempDir::new("tracking");
    let path = dir.path().join("slotbridge.toml");
    std::fs::write(
        &path,
        "[[colocate]]\nname = \"q\"\nprefix = \"q:\"\ngroup_segment = 1\n",
    )
    .unwrap();
    let proxy = Proxy::start_with(cluster(), &["--config", path.to_str().unwrap()]);
    let mut r = tracking_client(&proxy, &[]);
    r.roundtrip(&cmd(&["MGET", "q:jobs:1", "q:jobs:2"]), b"*2\r\n_\r\n_\r\n");
    let _: () = redis::cmd("MSET")
        .arg("q:jobs:1")
        .arg("a")
        .arg("q:jobs:2")
        .arg("b")
        .query(&mut proxy.conn())
        .unwrap();
    // Stored as {jobs}q:jobs:N in one slot; shown as the client's names.
    // One push per key, as Redis sends them.
    let want = [invalidate(&["q:jobs:1"]), invalidate(&["q:jobs:2"])].concat();
    let got = r.read_available(Duration::from_millis(500));
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want)
    );
}

#[test]
fn reads_inside_a_transaction_are_tracked_as_by_redis() {
    // rueidis and valkey-go cache with CLIENT CACHING YES, MULTI, PTTL k,
    // GET k, EXEC: the CACHING covers the whole transaction.
    let proxy = proxy();
    let [a, ..] = keys("tx");
    write(&proxy, &a, "v");
    let mut r = tracking_client(&proxy, &["OPTIN"]);
    r.roundtrip(&cmd(&["CLIENT", "CACHING", "yes"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["PTTL", &a]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["GET", &a]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["EXEC"]), b"*2\r\n:-1\r\n$1\r\nv\r\n");
    write(&proxy, &a, "w");
    r.expect(&invalidate(&[&a]));
    // Without CACHING YES before MULTI, OPTIN tracks nothing in it.
    r.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["GET", &a]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["EXEC"]), b"*1\r\n$1\r\nw\r\n");
    write(&proxy, &a, "x");
    expect_nothing_pushed(&mut r);
    // The default mode tracks every read of a transaction.
    r.roundtrip(&cmd(&["CLIENT", "TRACKING", "off"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["CLIENT", "TRACKING", "on"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["APPEND", &a, "!"]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["GET", &a]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["EXEC"]), b"*2\r\n:2\r\n$2\r\nx!\r\n");
    write(&proxy, &a, "y");
    r.expect(&invalidate(&[&a]));
}

#[test]
fn an_invalidation_does_not_wait_for_a_blocked_command() {
    let proxy = proxy();
    let [a, b, ..] = keys("blocked");
    let mut r = tracking_client(&proxy, &[]);
    r.roundtrip(&cmd(&["GET", &a]), b"_\r\n");
    // Pipelined behind the read: a BLPOP that waits.
    r.send(&cmd(&["BLPOP", &b, "10"]));
    std::thread::sleep(Duration::from_millis(100));
    write(&proxy, &a, "1");
    r.expect(&invalidate(&[&a]));
    let _: i64 = redis::cmd("RPUSH")
        .arg(&b)
        .arg("x")
        .query(&mut proxy.conn())
        .unwrap();
    r.expect(format!("*2\r\n${}\r\n{b}\r\n$1\r\nx\r\n", b.len()).as_bytes());
    // A blocking read (XREAD BLOCK) cannot be tracked: the client flushes
    // after its reply, and other invalidations do not wait for it.
    let s = keys("blocked")[2].clone();
    r.roundtrip(&cmd(&["GET", &a]), b"$1\r\n1\r\n");
    r.send(&cmd(&["XREAD", "BLOCK", "10000", "STREAMS", &s, "$"]));
    std::thread::sleep(Duration::from_millis(100));
    write(&proxy, &a, "2");
    r.expect(&invalidate(&[&a]));
    let _: String = redis::cmd("XADD")
        .arg(&s)
        .arg("1-1")
        .arg("f")
        .arg("v")
        .query(&mut proxy.conn())
        .unwrap();
    let entry = format!(
        "%1\r\n${}\r\n{s}\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n",
        s.len()
    );
    r.expect(&[entry.as_bytes(), FLUSH].concat());
}

/// A SORT with BY or GET is computed by the proxy, whose reads carry no
/// CLIENT CACHING: the client flushes after its reply, so it never keeps
/// the sorted key cached untracked.
#[test]
fn a_sort_the_proxy_computes_flushes_the_client_cache() {
    let proxy = proxy();
    let [l, ..] = keys("sort");
    let _: i64 = redis::cmd("RPUSH")
        .arg(&l)
        .arg("b")
        .arg("a")
        .query(&mut proxy.conn())
        .unwrap();
    let mut r = tracking_client(&proxy, &[]);
    r.send(&cmd(&["SORT_RO", &l, "BY", "nosort", "GET", "#"]));
    r.expect(&[&b"*2\r\n$1\r\nb\r\n$1\r\na\r\n"[..], FLUSH].concat());
}

/// The id the proxy gave a client.
fn client_id(c: &mut RawClient) -> u64 {
    c.send(&cmd(&["CLIENT", "ID"]));
    let reply = String::from_utf8(c.read_reply()).unwrap();
    reply.trim_start_matches(':').trim_end().parse().unwrap()
}

/// What a RESP2 client subscribed to `__redis__:invalidate` gets for
/// `value` (an array of keys, or a null).
fn message(value: &[u8]) -> Vec<u8> {
    let mut out = b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n".to_vec();
    out.extend_from_slice(value);
    out
}

/// A RESP2 client subscribed to `__redis__:invalidate`, and its id.
fn invalidation_inbox(proxy: &Proxy) -> (RawClient, u64) {
    let mut inbox = RawClient::connect(proxy.port);
    let id = client_id(&mut inbox);
    inbox.roundtrip(
        &cmd(&["SUBSCRIBE", "__redis__:invalidate"]),
        b"*3\r\n$9\r\nsubscribe\r\n$20\r\n__redis__:invalidate\r\n:1\r\n",
    );
    (inbox, id)
}

/// Reads `keys` (missing) with the RESP2 client `r` that redirects to
/// `inbox` until the reads are tracked: until the nodes' inboxes for RESP2
/// connections are connected, the client is told to flush after each.
fn read_until_tracked(r: &mut RawClient, inbox: &mut RawClient, keys: &[&str]) {
    let flush = message(b"$-1\r\n");
    for tries in 0.. {
        assert!(tries < 50, "reads never tracked");
        for k in keys {
            r.roundtrip(&cmd(&["GET", k]), b"$-1\r\n");
        }
        let early = inbox.read_available(Duration::from_millis(200));
        if early.is_empty() {
            return;
        }
        assert!(
            early.chunks(flush.len()).all(|m| m == &flush[..]),
            "{}",
            common::escape(&early)
        );
    }
}

#[test]
fn redirected_invalidations_reach_the_other_client_as_from_redis() {
    let proxy = proxy();
    let [a, b, c] = keys("redir");
    // RESP2 client-side caching: a second connection subscribed to
    // __redis__:invalidate gets the invalidations of the first.
    let (mut inbox, inbox_id) = invalidation_inbox(&proxy);
    let mut r = RawClient::connect(proxy.port);
    let redirect = inbox_id.to_string();
    r.roundtrip(
        &cmd(&["CLIENT", "TRACKING", "on", "REDIRECT", &redirect]),
        b"+OK\r\n",
    );
    r.roundtrip(
        &cmd(&["CLIENT", "GETREDIR"]),
        format!(":{inbox_id}\r\n").as_bytes(),
    );
    r.roundtrip(
        &cmd(&["CLIENT", "TRACKINGINFO"]),
        format!("*6\r\n$5\r\nflags\r\n*1\r\n$2\r\non\r\n$8\r\nredirect\r\n:{inbox_id}\r\n$8\r\nprefixes\r\n*0\r\n").as_bytes(),
    );
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut proxy.conn())
        .unwrap();
    assert!(list.contains(&format!(" redir={inbox_id} ")), "{list}");
    read_until_tracked(&mut r, &mut inbox, &[&a, &b, &c]);
    write(&proxy, &b, "1");
    inbox.expect(&message(
        format!("*1\r\n${}\r\n{b}\r\n", b.len()).as_bytes(),
    ));
    expect_nothing_pushed(&mut r);
    // Told once per read, as for a client that does not redirect.
    write(&proxy, &b, "2");
    write(&proxy, &a, "1");
    inbox.expect(&message(
        format!("*1\r\n${}\r\n{a}\r\n", a.len()).as_bytes(),
    ));
    // A RESP3 client redirects to a RESP3 one: pushes there.
    let mut inbox3 = tracking_client(&proxy, &[]);
    let inbox3_id = client_id(&mut inbox3).to_string();
    let mut r3 = tracking_client(&proxy, &["REDIRECT", &inbox3_id]);
    r3.roundtrip(&cmd(&["GET", &c]), b"_\r\n");
    write(&proxy, &c, "1");
    inbox3.expect(&invalidate(&[&c]));
    expect_nothing_pushed(&mut r3);
    // The target leaves: the RESP3 client is told, and its info says so.
    drop(inbox3);
    std::thread::sleep(Duration::from_millis(200));
    r3.roundtrip(&cmd(&["GET", &c]), b"$1\r\n1\r\n");
    write(&proxy, &c, "2");
    r3.expect(format!(">2\r\n$21\r\ntracking-redir-broken\r\n:{inbox3_id}\r\n").as_bytes());
    r3.roundtrip(
        &cmd(&["CLIENT", "TRACKINGINFO"]),
        format!("%3\r\n$5\r\nflags\r\n~2\r\n$2\r\non\r\n$15\r\nbroken_redirect\r\n$8\r\nredirect\r\n:{inbox3_id}\r\n$8\r\nprefixes\r\n*0\r\n").as_bytes(),
    );
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut proxy.conn())
        .unwrap();
    assert!(list.contains(" flags=tR "), "{list}");
    // A RESP2 client whose target left is told nothing, as by Redis.
    drop(inbox);
    std::thread::sleep(Duration::from_millis(200));
    r.roundtrip(&cmd(&["GET", &a]), b"$1\r\n1\r\n");
    write(&proxy, &a, "3");
    expect_nothing_pushed(&mut r);
}

#[test]
fn a_lost_inbox_flushes_redirecting_clients_and_is_replaced() {
    // Its own cluster: other tests' proxies have inboxes too, and FLUSHALL
    // reaches their tracking connections.
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&cluster);
    let [a, ..] = keys("inbox");
    let (mut inbox, inbox_id) = invalidation_inbox(&proxy);
    let inbox_id = inbox_id.to_string();
    let mut r = RawClient::connect(proxy.port);
    r.roundtrip(
        &cmd(&["CLIENT", "TRACKING", "on", "REDIRECT", &inbox_id]),
        b"+OK\r\n",
    );
    let flush = message(b"$-1\r\n");
    read_until_tracked(&mut r, &mut inbox, &[&a]);
    // A flush: RESP2's null, the tracking client's protocol.
    let _: () = redis::cmd("FLUSHALL").query(&mut proxy.conn()).unwrap();
    let flushed = inbox.read_available(Duration::from_millis(500));
    assert!(
        !flushed.is_empty() && flushed.chunks(flush.len()).all(|m| m == &flush[..]),
        "{}",
        common::escape(&flushed)
    );
    read_until_tracked(&mut r, &mut inbox, &[&a]);
    // The node drops the inbox (the one connection whose last command was
    // CLIENT ID): the client is told to flush, and its reads are tracked
    // again, the RESP2 connection redirecting to the new inbox.
    let node = cluster.node_for_key(a.as_bytes());
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut cluster.conn(node))
        .unwrap();
    let inboxes: Vec<&str> = list
        .lines()
        .filter(|l| l.contains(" cmd=client|id "))
        .filter_map(|l| l.strip_prefix("id=")?.split(' ').next())
        .collect();
    assert_eq!(inboxes.len(), 1, "{list}");
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(inboxes[0])
        .query(&mut cluster.conn(node))
        .unwrap();
    inbox.expect(&flush);
    std::thread::sleep(Duration::from_millis(300));
    let _ = inbox.read_available(Duration::from_millis(100));
    read_until_tracked(&mut r, &mut inbox, &[&a]);
    write(&proxy, &a, "1");
    inbox.expect(&message(
        format!("*1\r\n${}\r\n{a}\r\n", a.len()).as_bytes(),
    ));
    expect_nothing_pushed(&mut r);
}

#[test]
fn bcast_clients_hear_every_change_under_their_prefixes() {
    let proxy = proxy();
    // Keys under two prefixes on different masters, and one under neither.
    let users = key_for_slot(100, "bc:user:");
    let carts = key_for_slot(12000, "bc:cart:");
    let other = key_for_slot(6000, "bc:other:");
    let mut r = tracking_client(
        &proxy,
        &["BCAST", "PREFIX", "bc:user:", "PREFIX", "bc:cart:"],
    );
    // The nodes' broadcast listeners start with the first BCAST client; it
    // sent nothing before they listened, so it is told nothing.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(r.read_available(Duration::from_millis(200)), b"");
    r.roundtrip(
        &cmd(&["CLIENT", "TRACKINGINFO"]),
        b"%3\r\n$5\r\nflags\r\n~2\r\n$2\r\non\r\n$5\r\nbcast\r\n$8\r\nredirect\r\n:0\r\n$8\r\nprefixes\r\n*2\r\n$8\r\nbc:cart:\r\n$8\r\nbc:user:\r\n",
    );
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut proxy.conn())
        .unwrap();
    assert!(list.contains(" flags=tB "), "{list}");
    r.roundtrip(
        &cmd(&["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "bc:u"]),
        b"-ERR Prefix 'bc:u' overlaps with an existing prefix 'bc:user:'. Prefixes for a single client must not overlap.\r\n",
    );
    // Two prefixes in the proxy's table; each master has one listener.
    let stats: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut proxy.conn())
        .unwrap();
    assert!(
        stats.contains("\r\ntracking_total_prefixes:2\r\n"),
        "{stats}"
    );
    // Changes, whoever makes them and whether or not it read the key.
    write(&proxy, &users, "1");
    r.expect(&invalidate(&[&users]));
    write(&proxy, &other, "1");
    write(&proxy, &carts, "1");
    r.expect(&invalidate(&[&carts]));
    write(&proxy, &users, "2");
    r.expect(&invalidate(&[&users]));
    // Its own writes too (no NOLOOP), after their reply.
    r.send(&cmd(&["SET", &carts, "2"]));
    r.expect(b"+OK\r\n");
    r.expect(&invalidate(&[&carts]));
    expect_nothing_pushed(&mut r);
    // Another BCAST client, for a wider prefix (not every key: other
    // tests write on this cluster); none once tracking is off.
    let mut all = tracking_client(&proxy, &["BCAST", "PREFIX", "bc:"]);
    write(&proxy, &other, "2");
    all.expect(&invalidate(&[&other]));
    r.roundtrip(&cmd(&["CLIENT", "TRACKING", "off"]), b"+OK\r\n");
    write(&proxy, &users, "3");
    all.expect(&invalidate(&[&users]));
    expect_nothing_pushed(&mut r);
}

#[test]
fn redirected_and_broadcast_invalidations_wait_for_the_replies_before_them() {
    let proxy = proxy();
    let k = key_for_slot(100, "trk:order:");
    write(&proxy, &k, "v1");
    // A read pipelined behind a blocked command runs after it, as on one
    // server: it reads what was written while the client was blocked,
    // and word of that change (made before the read) never reaches the
    // redirect target; a later change does.
    let (mut inbox, inbox_id) = invalidation_inbox(&proxy);
    let inbox_id = inbox_id.to_string();
    let mut t = tracking_client(&proxy, &["REDIRECT", &inbox_id]);
    std::thread::sleep(Duration::from_millis(300));
    let mut pipeline = cmd(&["BLPOP", "trk:order:nolist", "0.6"]);
    pipeline.extend(cmd(&["GET", &k]));
    t.send(&pipeline);
    std::thread::sleep(Duration::from_millis(150));
    write(&proxy, &k, "v2");
    t.expect(b"_\r\n$2\r\nv2\r\n");
    assert_eq!(inbox.read_available(Duration::from_millis(150)), b"");
    write(&proxy, &k, "v3");
    inbox.expect(&message(
        format!("*1\r\n${}\r\n{k}\r\n", k.len()).as_bytes(),
    ));
    // A BCAST client's EXEC: the push of its own write follows the reply,
    // and the reads pipelined after a blocked command wait for it.
    let mut b = tracking_client(&proxy, &["BCAST", "PREFIX", "trk:order:"]);
    std::thread::sleep(Duration::from_millis(500));
    let _ = b.read_available(Duration::from_millis(100));
    let mut pipeline = cmd(&["BLPOP", "trk:order:nolist", "0.3"]);
    for c in [&["MULTI"][..], &["GET", &k], &["SET", &k, "v4"], &["EXEC"]] {
        pipeline.extend(cmd(c));
    }
    b.send(&pipeline);
    let mut expected = b"_\r\n+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n$2\r\nv3\r\n+OK\r\n".to_vec();
    expected.extend(invalidate(&[&k]));
    b.expect(&expected);
}

#[test]
fn noloop_clients_are_not_told_of_their_own_writes() {
    let proxy = proxy();
    let [a, b, _] = keys("noloop");
    let mut r = tracking_client(&proxy, &["NOLOOP"]);
    r.roundtrip(&cmd(&["GET", &a]), b"_\r\n");
    r.roundtrip(&cmd(&["GET", &b]), b"_\r\n");
    // Its own write: no push, and (as Redis) the key is no longer tracked.
    r.roundtrip(&cmd(&["SET", &a, "1"]), b"+OK\r\n");
    write(&proxy, &a, "2");
    expect_nothing_pushed(&mut r);
    // Another client's write of a key it read: told.
    write(&proxy, &b, "1");
    r.expect(&invalidate(&[&b]));
    r.roundtrip(&cmd(&["GET", &a]), b"$1\r\n2\r\n");
    write(&proxy, &a, "3");
    r.expect(&invalidate(&[&a]));
}
