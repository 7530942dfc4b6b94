//! Co-location rules on a real cluster: keys of a group share one slot, so
//! cross-slot scripts (including keys built inside Lua), transactions and
//! multi-key blocking commands of unmodified apps work; key names in
//! replies stay client-visible; keys outside the rules are untouched.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::{encode_command, slot_of, Cluster, Proxy, RawClient, TempDir};

const RULES: &str = r#"
[[colocate]]
name = "bullmq"
prefix = "bull:"
group_segment = 1

[[colocate]]
name = "batch"
glob = "batch:*"
group = "batch"
"#;

struct Env {
    cluster: Cluster,
    proxy: Proxy,
    _dir: TempDir,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let cluster = Cluster::start(3, 0);
        let dir = TempDir::new("colocate");
        let path = dir.path().join("slotbridge.toml");
        std::fs::write(&path, RULES).unwrap();
        let proxy = Proxy::start_with(&cluster, &["--config", path.to_str().unwrap()]);
        Env {
            cluster,
            proxy,
            _dir: dir,
        }
    })
}

fn cmd(args: &[&str]) -> Vec<u8> {
    let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    encode_command(&bytes)
}

/// The stored value of a key, read directly from the node owning it.
fn direct_get(key: &str) -> Option<String> {
    let c = &env().cluster;
    redis::cmd("GET")
        .arg(key)
        .query(&mut c.conn(c.node_for_key(key.as_bytes())))
        .unwrap()
}

const SCRIPT: &str = "local p = ARGV[1]
redis.call('SET', p .. 'a', '1')
redis.call('SET', p .. 'b', '2')
redis.call('INCR', KEYS[1])
return redis.call('MGET', p .. 'a', p .. 'b', KEYS[1])";

#[test]
fn lua_keys_built_from_argv_follow_the_rule() {
    let mut c = env().proxy.conn();
    // The keys are in three different natural slots.
    assert_ne!(slot_of(b"bull:q1:a"), slot_of(b"bull:q1:b"));
    let got: Vec<String> = redis::cmd("EVAL")
        .arg(SCRIPT)
        .arg(1)
        .arg("bull:q1:counter")
        .arg("bull:q1:")
        .query(&mut c)
        .unwrap();
    assert_eq!(got, vec!["1", "2", "1"]);
    // Stored under the group's tag, read back under the client's name.
    assert_eq!(direct_get("{q1}bull:q1:a").as_deref(), Some("1"));
    assert_eq!(direct_get("bull:q1:a"), None);
    let v: String = redis::cmd("GET").arg("bull:q1:b").query(&mut c).unwrap();
    assert_eq!(v, "2");
    // EVALSHA with the client's own SHA1, as ioredis/BullMQ do.
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(SCRIPT)
        .query(&mut c)
        .unwrap();
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .query(&mut c)
        .unwrap();
    assert_eq!(exists, vec![1]);
    let got: Vec<String> = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg("bull:q2:counter")
        .arg("bull:q2:")
        .query(&mut c)
        .unwrap();
    assert_eq!(got, vec!["1", "2", "1"]);
    let mut r = RawClient::connect(env().proxy.port);
    r.roundtrip(
        &cmd(&["EVALSHA", &"a".repeat(40), "0"]),
        common::server_version().noscript(),
    );
}

/// A command whose name the script builds at run time (Bull's
/// `rcall(ARGV[10], KEYS[1], id)`, with no `'LPUSH'` literal in the body)
/// encodes its keys like any other, `KEYS[]` and built ones alike.
#[test]
fn commands_named_at_run_time_follow_the_rule() {
    let mut r = RawClient::connect(env().proxy.port);
    r.roundtrip(&cmd(&["DEL", "bull:dyn:wait", "bull:dyn:meta"]), b":0\r\n");
    let push = "return redis.call(ARGV[1], KEYS[1], 'x')";
    r.roundtrip(
        &cmd(&["EVAL", push, "1", "bull:dyn:wait", "LPUSH"]),
        b":1\r\n",
    );
    r.roundtrip(
        &cmd(&["EVAL", push, "1", "bull:dyn:wait", "rpush"]),
        b":2\r\n",
    );
    r.roundtrip(&cmd(&["LLEN", "bull:dyn:wait"]), b":2\r\n");
    let c = &env().cluster;
    let stored: i64 = redis::cmd("LLEN")
        .arg("{dyn}bull:dyn:wait")
        .query(&mut c.conn(c.node_for_key(b"{dyn}bull:dyn:wait")))
        .unwrap();
    assert_eq!(stored, 2);
    // A name built from pieces, a container's subcommand given at run
    // time, and a command without keys.
    let built = "redis.call('H' .. 'SET', ARGV[1] .. 'meta', 'f', 'v') \
                 local n = redis.call(ARGV[2], ARGV[3], ARGV[1] .. 'wait') \
                 return {redis.call(string.upper('hget'), ARGV[1] .. 'meta', 'f'), n, redis.call(ARGV[4])}";
    r.roundtrip(
        &cmd(&[
            "EVAL",
            built,
            "0",
            "bull:dyn:",
            "OBJECT",
            "ENCODING",
            "PING",
        ]),
        // A short list's encoding: listpack from Redis 7.2 on.
        if common::server_version().at_least(7, 2) {
            b"*3\r\n$1\r\nv\r\n$8\r\nlistpack\r\n+PONG\r\n".as_slice()
        } else {
            b"*3\r\n$1\r\nv\r\n$9\r\nquicklist\r\n+PONG\r\n"
        },
    );
    r.roundtrip(&cmd(&["HGET", "bull:dyn:meta", "f"]), b"$1\r\nv\r\n");
}

#[test]
fn a_200_key_eval_with_a_constant_group() {
    let mut c = env().proxy.conn();
    let keys: Vec<String> = (0..200).map(|i| format!("batch:{i}")).collect();
    let body = "for i, k in ipairs(KEYS) do redis.call('SET', k, i) end return #KEYS";
    let n: i64 = redis::cmd("EVAL")
        .arg(body)
        .arg(200)
        .arg(&keys)
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 200);
    let got: Vec<i64> = redis::cmd("MGET").arg(&keys).query(&mut c).unwrap();
    assert_eq!(got, (1..=200).collect::<Vec<i64>>());
    assert_eq!(direct_get("{batch}batch:7").as_deref(), Some("8"));
}

#[test]
fn transactions_and_watch_inside_a_group() {
    let mut r = RawClient::connect(env().proxy.port);
    let (a, b) = ("bull:tx:a", "bull:tx:b");
    assert_ne!(slot_of(a.as_bytes()), slot_of(b.as_bytes()));
    r.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["MSET", a, "1", b, "2"]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["EXPIRE", a, "100"]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["EXPIRE", b, "100"]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["EXEC"]), b"*3\r\n+OK\r\n:1\r\n:1\r\n");
    let mut other = RawClient::connect(env().proxy.port);
    r.roundtrip(&cmd(&["WATCH", a, b]), b"+OK\r\n");
    other.roundtrip(&cmd(&["SET", b, "changed"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["SET", a, "x"]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["EXEC"]), b"*-1\r\n");
}

/// SORT's BY and GET patterns are filled with the list's elements, which
/// are client names: the keys they name are read under their stored
/// names (found by walrus's suite: the sort came back unsorted, the GETs
/// nil).
#[test]
fn sort_patterns_read_keys_under_their_rules() {
    let mut r = RawClient::connect(env().proxy.port);
    for (id, weight, name) in [("1", "b", "one"), ("2", "a", "two"), ("3", "c", "three")] {
        let hash = format!("batch:h:{id}");
        r.send(&cmd(&["HSET", &hash, "w", weight, "name", name]));
        assert!(r.read_reply().starts_with(b":"));
        r.roundtrip(&cmd(&["SET", &format!("batch:w:{id}"), weight]), b"+OK\r\n");
    }
    r.roundtrip(&cmd(&["DEL", "batch:ids"]), b":0\r\n");
    r.roundtrip(&cmd(&["RPUSH", "batch:ids", "1", "2", "3"]), b":3\r\n");
    let names = |v: &[&str]| {
        let mut out = format!("*{}\r\n", v.len());
        for n in v {
            out.push_str(&format!("${}\r\n{n}\r\n", n.len()));
        }
        out
    };
    r.roundtrip(
        &cmd(&["SORT", "batch:ids", "BY", "batch:h:*->w", "ALPHA"]),
        names(&["2", "1", "3"]).as_bytes(),
    );
    r.roundtrip(
        &cmd(&[
            "SORT",
            "batch:ids",
            "BY",
            "batch:w:*",
            "ALPHA",
            "GET",
            "batch:h:*->name",
            "GET",
            "#",
        ]),
        names(&["two", "2", "one", "1", "three", "3"]).as_bytes(),
    );
    r.roundtrip(
        &cmd(&["SORT_RO", "batch:ids", "BY", "nosort", "GET", "batch:w:*"]),
        names(&["b", "a", "c"]).as_bytes(),
    );
    r.send(&cmd(&[
        "DEL",
        "batch:ids",
        "batch:h:1",
        "batch:h:2",
        "batch:h:3",
        "batch:w:1",
        "batch:w:2",
        "batch:w:3",
    ]));
    assert_eq!(r.read_reply(), b":7\r\n");
}

#[test]
fn replies_show_client_names() {
    let mut r = RawClient::connect(env().proxy.port);
    r.roundtrip(
        &cmd(&["DEL", "bull:names:list", "bull:names:other"]),
        b":0\r\n",
    );
    r.roundtrip(&cmd(&["RPUSH", "bull:names:list", "job"]), b":1\r\n");
    // Multi-key BRPOP over one group.
    r.roundtrip(
        &cmd(&["BRPOP", "bull:names:other", "bull:names:list", "1"]),
        b"*2\r\n$15\r\nbull:names:list\r\n$3\r\njob\r\n",
    );
    r.roundtrip(
        &cmd(&["XADD", "bull:names:events", "1-1", "f", "v"]),
        b"$3\r\n1-1\r\n",
    );
    r.roundtrip(
        &cmd(&["XREAD", "STREAMS", "bull:names:events", "0"]),
        b"*1\r\n*2\r\n$17\r\nbull:names:events\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n",
    );
    let mut c = env().proxy.conn();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("bull:names:*")
        .query(&mut c)
        .unwrap();
    keys.sort();
    assert_eq!(keys, vec!["bull:names:events".to_string()]);
    let mut cursor = 0u64;
    let mut seen = Vec::new();
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("bull:names:*")
            .query(&mut c)
            .unwrap();
        seen.extend(page);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(seen, vec!["bull:names:events".to_string()]);
    // KEYS inside MULTI (Bull's Queue.empty()): client names too.
    r.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["KEYS", "bull:names:*"]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["LLEN", "bull:names:list"]), b"+QUEUED\r\n");
    r.roundtrip(
        &cmd(&["EXEC"]),
        b"*2\r\n*1\r\n$17\r\nbull:names:events\r\n:0\r\n",
    );
    // DEBUG reads the key under its stored name too.
    r.send(&cmd(&["DEBUG", "OBJECT", "bull:names:events"]));
    let object = r.read_reply();
    assert!(
        object.starts_with(b"+Value at:"),
        "{}",
        String::from_utf8_lossy(&object)
    );
    assert!(String::from_utf8_lossy(&object).contains("encoding:stream"));
}

/// A script finds keys by pattern (`KEYS`, `SCAN MATCH`) and pops them
/// (`LMPOP`) under the names the client gave them, as dramatiq's
/// maintenance finds a dead worker's acknowledgement sets.
#[test]
fn scripts_see_client_names_in_keys_scan_and_pops() {
    let mut r = RawClient::connect(env().proxy.port);
    // A key outside the rules in the group's slot: listed unchanged.
    let plain = common::key_for_slot(slot_of(b"batch"), "plainks");
    r.roundtrip(&cmd(&["SET", &plain, "p"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["SADD", "batch:ks:acks.w1", "m1"]), b":1\r\n");
    r.roundtrip(&cmd(&["RPUSH", "batch:ks:list", "a", "b"]), b":2\r\n");
    let body = "local function sorted(t) table.sort(t) return t end
        local p = KEYS[1] .. ':'
        local found = redis.call('keys', p .. '*')
        local scanned = redis.pcall('scan', 0, 'MATCH', p .. 'a*', 'COUNT', 10000)[2]
        local acks = redis.call('smembers', redis.call('keys', p .. 'acks.w1*')[1])
        return {sorted(found), scanned, acks,
          redis.call('lmpop', 2, p .. 'none', p .. 'list', 'LEFT'),
          redis.call('keys', ARGV[1]), redis.call('keys', '{*'),
          redis.pcall('keys', 'a', 'b')}";
    let expected = format!(
        "*7\r\n\
         *2\r\n$16\r\nbatch:ks:acks.w1\r\n$13\r\nbatch:ks:list\r\n\
         *1\r\n$16\r\nbatch:ks:acks.w1\r\n\
         *1\r\n$2\r\nm1\r\n\
         *2\r\n$13\r\nbatch:ks:list\r\n*1\r\n$1\r\na\r\n\
         *1\r\n${}\r\n{plain}\r\n\
         *0\r\n\
         -ERR Wrong number of args calling {} from script\r\n",
        plain.len(),
        common::server_version().script_callee()
    );
    r.roundtrip(
        &cmd(&["EVAL", body, "1", "batch:ks", &plain]),
        expected.as_bytes(),
    );
    // Stored under the group's tag.
    let c = &env().cluster;
    let stored: Vec<String> = redis::cmd("KEYS")
        .arg("*batch:ks:*")
        .query(&mut c.conn(c.node_for_key(b"batch")))
        .unwrap();
    assert!(
        stored.iter().all(|k| k.starts_with("{batch}")),
        "{stored:?}"
    );
}

#[test]
fn script_errors_and_the_script_cache_as_one_redis() {
    // Under rules, scripts run wrapped; the client still sees one Redis's
    // errors (its line numbers and SHA1s) and script cache.
    let dir = TempDir::new("colocate-scripts");
    let reference = common::Standalone::start(&dir);
    let mut direct = RawClient::connect(reference.port);
    let mut through = RawClient::connect(env().proxy.port);
    let bad = "return 1 +";
    let bad_sha = sha1_smol::Sha1::from(bad).digest().to_string();
    let incr = "return redis.call('INCR', KEYS[1])";
    let incr_sha = sha1_smol::Sha1::from(incr).digest().to_string();
    let lines: Vec<Vec<&str>> = vec![
        vec!["SCRIPT", "LOAD", bad],
        vec!["SCRIPT", "EXISTS", &bad_sha],
        vec!["EVAL", bad, "0"],
        vec!["SCRIPT", "EXISTS", &bad_sha],
        vec!["EVALSHA", &bad_sha, "0"],
        vec!["EVAL", "\n\nerror('boom')", "0"],
        vec!["EVAL", "#!lua\nlocal x = 1\nerror('boom')", "0"],
        vec!["SET", "bull:q:s", "str"],
        vec!["SCRIPT", "LOAD", incr],
        vec!["EVALSHA", &incr_sha, "1", "bull:q:s"],
        vec!["SCRIPT", "EXISTS", &incr_sha, &bad_sha],
        vec!["DEL", "bull:q:s"],
        vec![
            "EVAL",
            "local n = 0 for _ in pairs(redis) do n = n + 1 end return n",
            "0",
        ],
    ];
    for line in lines {
        direct.send(&cmd(&line));
        let expected = direct.read_reply();
        through.roundtrip(&cmd(&line), &expected);
    }
}

#[test]
fn keys_outside_rules_are_untouched() {
    let mut c = env().proxy.conn();
    let _: () = redis::cmd("SET")
        .arg("plain:key")
        .arg("v")
        .query(&mut c)
        .unwrap();
    assert_eq!(direct_get("plain:key").as_deref(), Some("v"));
    // Cross-slot use of keys outside any rule is still refused.
    let mut r = RawClient::connect(env().proxy.port);
    r.send(&cmd(&["MSETNX", "plain:a", "1", "plain:b", "2"]));
    let reply = r.read_available(Duration::from_millis(500));
    assert!(
        reply.starts_with(b"-CROSSSLOT "),
        "{}",
        common::escape(&reply)
    );
    // Rules run EVAL as EVALSHA of a wrapped body: the error and CLIENT
    // LIST still name EVAL.
    r.send(&cmd(&["CLIENT", "ID"]));
    let id = String::from_utf8_lossy(&r.read_available(Duration::from_millis(500)))
        .trim_start_matches(':')
        .trim_end()
        .to_string();
    for name in ["EVAL", "EVAL_RO"] {
        r.send(&cmd(&[name, "return 1", "2", "plain:a", "plain:b"]));
        let reply = r.read_available(Duration::from_millis(500));
        let want = format!("(command '{}', slots", name.to_lowercase());
        assert!(
            String::from_utf8_lossy(&reply).contains(&want),
            "{}",
            common::escape(&reply)
        );
    }
    let mut other = RawClient::connect(env().proxy.port);
    other.send(&cmd(&["CLIENT", "LIST", "ID", &id]));
    let list =
        String::from_utf8_lossy(&other.read_available(Duration::from_millis(500))).into_owned();
    assert!(list.contains(" cmd=eval_ro "), "{list}");
}

#[test]
fn rules_check_and_validation_from_the_cli() {
    let dir = TempDir::new("colocate-cli");
    let path = dir.path().join("slotbridge.toml");
    std::fs::write(&path, format!("seeds = [\"127.0.0.1:7000\"]\n{RULES}")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_slotbridge"))
        .args([
            "--config",
            path.to_str().unwrap(),
            "rules",
            "check",
            "bull:q:1",
            "other",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text,
        format!(
            "bull:q:1\trule=bullmq\tstored={{q}}bull:q:1\tslot={}\nother\trule=-\tstored=other\tslot={}\n",
            slot_of(b"{q}bull:q:1"),
            slot_of(b"other")
        )
    );
    std::fs::write(
        &path,
        "seeds = [\"127.0.0.1:7000\"]\n[[colocate]]\nname = \"x\"\nprefix = \"a\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_slotbridge"))
        .args(["--config", path.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("colocate[x].group"));
}

#[test]
fn per_slot_transactions_when_enabled() {
    let cluster = &env().cluster;
    let dir = TempDir::new("per-slot-tx");
    let path = dir.path().join("slotbridge.toml");
    std::fs::write(&path, "transactions = \"per_slot\"\n").unwrap();
    let proxy = Proxy::start_with(cluster, &["--config", path.to_str().unwrap()]);
    let mut r = RawClient::connect(proxy.port);
    let keys = common::keys_in_distinct_slots(4, "pst-");
    let (a, b, c, d) = (&keys[0], &keys[1], &keys[2], &keys[3]);
    r.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["MSET", a, "1", b, "2", c, "3"]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["EXPIRE", a, "100"]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["EXPIRE", b, "100"]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["EXPIRE", d, "100"]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["INCR", c]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["MGET", c, a, d]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["PING"]), b"+QUEUED\r\n");
    r.roundtrip(&cmd(&["DEL", a, d, b]), b"+QUEUED\r\n");
    r.roundtrip(
        &cmd(&["EXEC"]),
        b"*8\r\n+OK\r\n:1\r\n:1\r\n:0\r\n:4\r\n*3\r\n$1\r\n4\r\n$1\r\n1\r\n$-1\r\n+PONG\r\n:2\r\n",
    );
    r.roundtrip(&cmd(&["MGET", a, b, c]), b"*3\r\n$-1\r\n$-1\r\n$1\r\n4\r\n");
    // An empty or one-slot transaction is unchanged.
    r.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    r.roundtrip(&cmd(&["EXEC"]), b"*0\r\n");
    r.roundtrip(&cmd(&["WATCH", a]), b"+OK\r\n");
    r.roundtrip(&cmd(&["MULTI"]), b"+OK\r\n");
    // With WATCH, transactions stay in the watched slot.
    let want = format!(
        "-CROSSSLOT Keys in request don't hash to the same slot (command 'set', slots {} and {}); with WATCH, all keys of a transaction must be in the watched keys' slot: use a {{hash tag}}\r\n",
        slot_of(a.as_bytes()),
        slot_of(b.as_bytes())
    );
    r.roundtrip(&cmd(&["SET", b, "x"]), want.as_bytes());
    r.roundtrip(&cmd(&["DISCARD"]), b"+OK\r\n");
}

#[test]
fn migrate_keys_under_live_traffic_interrupted_and_resumed() {
    let cluster = Cluster::start(3, 0);
    let plain = Proxy::start(&cluster);
    let mut c = plain.conn();
    let keys: Vec<String> = (0..10_000).map(|i| format!("bull:mq:{i}")).collect();
    for chunk in keys.chunks(500) {
        let mut mset = redis::cmd("MSET");
        for k in chunk {
            mset.arg(k).arg(format!("v-{k}"));
        }
        let _: () = mset.query(&mut c).unwrap();
    }
    for k in keys.iter().step_by(100) {
        let _: () = redis::cmd("EXPIRE").arg(k).arg(1000).query(&mut c).unwrap();
    }
    let dir = TempDir::new("migrate");
    let path = dir.path().join("slotbridge.toml");
    std::fs::write(
        &path,
        format!(
            "seeds = {:?}\n{RULES}",
            cluster.seeds().split(',').collect::<Vec<_>>()
        ),
    )
    .unwrap();
    let config = path.to_str().unwrap().to_string();
    let ruled = Proxy::start_with(&cluster, &["--config", &config]);
    // Live traffic through the proxy with the rule while keys move.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (url, stop) = (ruled.url(), stop.clone());
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _: () = redis::cmd("SET")
                    .arg(format!("bull:mq:live:{n}"))
                    .arg(n)
                    .query(&mut c)
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    let migrate = |extra: &[&str]| -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_slotbridge"))
            .args([
                "--config",
                &config,
                "migrate-keys",
                "--rule",
                "bullmq",
                "--rate",
                "0",
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // Interrupted after 3,000 keys, then resumed.
    assert!(migrate(&["--limit", "3000"]).contains("done: 3000 moved"));
    assert!(migrate(&[]).contains("done: 7000 moved"));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let live = writer.join().unwrap();
    // Idempotent: nothing left to move; live keys were already in place.
    let last = migrate(&[]);
    assert!(last.contains("done: 0 moved, 0 superseded"), "{last}");
    // Every key is readable under its client name, with its TTL.
    let mut r = ruled.conn();
    for chunk in keys.chunks(1000) {
        let got: Vec<String> = redis::cmd("MGET").arg(chunk).query(&mut r).unwrap();
        for (k, v) in chunk.iter().zip(got) {
            assert_eq!(v, format!("v-{k}"));
        }
    }
    let ttl: i64 = redis::cmd("TTL").arg("bull:mq:100").query(&mut r).unwrap();
    assert!(ttl > 900, "TTL {ttl}");
    let ttl: i64 = redis::cmd("TTL").arg("bull:mq:101").query(&mut r).unwrap();
    assert_eq!(ttl, -1);
    let v: i64 = redis::cmd("GET")
        .arg(format!("bull:mq:live:{}", live - 1))
        .query(&mut r)
        .unwrap();
    assert_eq!(v, live - 1);
    // The old names are gone from the servers.
    let old: Option<String> = redis::cmd("GET")
        .arg("bull:mq:7")
        .query(&mut cluster.conn(cluster.node_for_key(b"bull:mq:7")))
        .unwrap();
    assert_eq!(old, None);
}
