//! Per-user permissions (`acl` of `[[auth.users]]`): the proxy refuses
//! exactly what one Redis 7.0 with the same ACL user refuses, with the
//! same bytes, and runs the rest.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{
    encode_command, wait_until, write_config, Cluster, RawClient, Spawned, Standalone, TempDir,
};

/// The rules under test: reads and writes of `app:*`, reads only of
/// `shared:*`, channels `news.*`, no dangerous commands, no scripts.
const RULES: &str = "on ~app:* %R~shared:* %R~dup:* %W~dup:* &news.* -@all +@read +@write \
                     -@dangerous +ping +subscribe +publish +multi +exec +discard +config|get \
                     -keys +sort";

/// A standalone redis-server with an `app` user under [`RULES`].
fn reference(dir: &TempDir) -> Standalone {
    let server = Standalone::start(dir);
    let mut admin = RawClient::connect(server.port);
    let mut setuser: Vec<&str> = vec!["ACL", "SETUSER", "app", "reset", ">secret"];
    setuser.extend(RULES.split_whitespace());
    let args: Vec<&[u8]> = setuser.iter().map(|a| a.as_bytes()).collect();
    admin.roundtrip(&encode_command(&args), b"+OK\r\n");
    server
}

fn cmd(line: &str) -> Vec<u8> {
    let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
    encode_command(&args)
}

#[test]
fn acl_rules_refuse_what_redis_refuses() {
    let cluster = Cluster::start(3, 0);
    let dir = TempDir::new("acl");
    let reference = reference(&dir);
    let port = reference.port;
    let config = write_config(
        &dir,
        &format!(
            "[auth]\npassword = \"admin\"\n[[auth.users]]\nname = \"app\"\npassword = \"secret\"\nacl = \"{RULES}\"\n"
        ),
    );
    let proxy = Spawned::start(&["--config", &config, "--seeds", &cluster.seeds()], &[]);
    let mut direct = RawClient::connect(port);
    let mut through = RawClient::connect(proxy.port);
    for c in [&mut direct, &mut through] {
        c.roundtrip(&cmd("AUTH app secret"), b"+OK\r\n");
    }
    wait_until(
        "the proxy to know the cluster",
        Duration::from_secs(10),
        || {
            through.send(&cmd("GET app:0"));
            through.read_once(Duration::from_secs(5)) == b"$-1\r\n"
        },
    );
    let mut refused = 0;
    for line in [
        "SET app:1 v",
        "GET app:1",
        "GET other",
        "SET other v",
        "MGET app:1 other",
        "MGET app:1 app:2",
        "SET shared:1 v",
        "GET shared:1",
        "SET app:1 v GET",
        "COPY shared:{x}1 app:{x}2",
        "COPY app:{x}1 shared:{x}2",
        "HSET app:h f v",
        "HGETALL app:h",
        "EXISTS other",
        "INCR dup:n",
        "SORT app:{x}l STORE secret{x}",
        "SORT app:{x}l BY nosort",
        "SORT app:{x}l BY w_*",
        "SORT app:{x}l GET #",
        "ZUNIONSTORE secret 5 app:1",
        "LMPOP 5 k LEFT",
        "DEL app:1 app:2",
        "FLUSHALL",
        "KEYS *",
        "CONFIG GET maxmemory",
        "CONFIG SET maxmemory 0",
        "EVAL return 0",
        "PUBLISH news.a m",
        "PUBLISH other m",
        "SUBSCRIBE news.a other",
        "SET app:1",
        "NOSUCH x",
        "PING",
        "MULTI",
        "SET app:3 v",
        // Refused for being in MULTI before the ACL check, as by Redis.
        "SAVE",
        "SET other v",
        "EXEC",
    ] {
        direct.send(&cmd(line));
        let expected = direct.read_once(Duration::from_secs(5));
        assert!(!expected.is_empty(), "{line}: no reply from redis");
        refused += usize::from(expected.starts_with(b"-NOPERM"));
        through.send(&cmd(line));
        let got = through.read_available(Duration::from_millis(300));
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected),
            "{line}"
        );
    }
    assert!(refused >= 14, "only {refused} commands refused");
    // Nothing refused reached the cluster; what was allowed did.
    let mut admin = RawClient::connect(proxy.port);
    admin.roundtrip(&cmd("AUTH admin"), b"+OK\r\n");
    admin.roundtrip(&cmd("GET other"), b"$-1\r\n");
    admin.roundtrip(&cmd("HGET app:h f"), b"$1\r\nv\r\n");
}

/// Users of [`users_scripts_reloads_and_bad_rules`].
const USERS: &str = "[[auth.users]]\nname = \"gone\"\npassword = \"pw\"\nacl = \"off +@all ~*\"\n\
     [[auth.users]]\nname = \"ro\"\npassword = \"pw\"\nacl = \"on ~* +@read\"\n\
     [[auth.users]]\nname = \"tenant\"\npassword = \"pw\"\nacl = \"on ~app:* &* +@all\"\n";

#[test]
fn users_scripts_reloads_and_bad_rules() {
    let cluster = Cluster::start(1, 0);
    let dir = TempDir::new("acl-off");
    let config = write_config(&dir, USERS);
    let proxy = Spawned::start(&["--config", &config, "--seeds", &cluster.seeds()], &[]);
    let mut c = RawClient::connect(proxy.port);
    c.roundtrip(
        &cmd("AUTH gone pw"),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    c.roundtrip(&cmd("AUTH ro pw"), b"+OK\r\n");
    wait_until(
        "the proxy to know the cluster",
        Duration::from_secs(10),
        || {
            c.send(&cmd("GET k"));
            c.read_once(Duration::from_secs(5)) == b"$-1\r\n"
        },
    );
    c.roundtrip(
        &cmd("SET k v"),
        common::server_version().noperm("ro", "set").as_bytes(),
    );
    // RESET goes back to the default user, which must log in again.
    c.roundtrip(&cmd("RESET"), b"+RESET\r\n");
    c.roundtrip(&cmd("GET k"), b"-NOAUTH Authentication required.\r\n");
    // RESET needs no login (Redis flags it no-auth); an unknown command or
    // a wrong number of arguments is said before NOAUTH, as by Redis.
    c.roundtrip(&cmd("RESET"), b"+RESET\r\n");
    c.roundtrip(
        &cmd("GET"),
        b"-ERR wrong number of arguments for 'get' command\r\n",
    );
    c.roundtrip(
        &cmd("NOSUCH"),
        b"-ERR unknown command 'NOSUCH', with args beginning with: \r\n",
    );

    // HELLO reads all its options before trying the credentials.
    let mut h = RawClient::connect(proxy.port);
    h.roundtrip(
        &cmd("HELLO 2 AUTH tenant pw BOGUS"),
        b"-ERR Syntax error in HELLO option 'BOGUS'\r\n",
    );
    h.roundtrip(&cmd("GET app:1"), b"-NOAUTH Authentication required.\r\n");

    // A script's commands would run unchecked on the nodes: a confined
    // user may not run one (one Redis would check inside the script).
    let mut t = RawClient::connect(proxy.port);
    t.roundtrip(&cmd("AUTH tenant pw"), b"+OK\r\n");
    t.roundtrip(
        &cmd("EVAL return 1 0"),
        common::server_version().noperm("tenant", "eval").as_bytes(),
    );
    t.roundtrip(&cmd("SET app:1 v"), b"+OK\r\n");

    // A reload applies changed rules to connected users at their next
    // command, and disconnects users it removed.
    let mut ro = RawClient::connect(proxy.port);
    ro.roundtrip(&cmd("AUTH ro pw"), b"+OK\r\n");
    write_config(
        &dir,
        &USERS
            .replace("acl = \"on ~* +@read\"", "acl = \"on ~* +@read +@write\"")
            .replace("name = \"tenant\"", "name = \"renamed\""),
    );
    let reloads = proxy.log().matches("configuration reloaded").count();
    proxy.signal("HUP");
    wait_until("the reload", Duration::from_secs(10), || {
        proxy.log().matches("configuration reloaded").count() > reloads
    });
    ro.roundtrip(&cmd("SET k v"), b"+OK\r\n");
    t.send(&cmd("GET app:1"));
    assert!(t.is_closed(), "a removed user stays connected");

    let bad = write_config(
        &dir,
        "[[auth.users]]\nname = \"x\"\npassword = \"pw\"\nacl = \"+@all +nosuch\"\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_slotbridge"))
        .args(["--check-config", "--config", &bad, "--seeds", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "auth.users.acl: user 'x': ACL rule '+nosuch': Unknown command or category name in ACL"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends `args` and reads one whole reply.
fn ask(c: &mut RawClient, args: &[&[u8]]) -> Vec<u8> {
    c.send(&encode_command(args));
    c.read_reply()
}

/// Sends `line` (words split at spaces) to one server and through the
/// proxy, asserts the replies match (see [`normalized`]) and returns one
/// server's.
fn both(direct: &mut RawClient, through: &mut RawClient, line: &str) -> Vec<u8> {
    let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
    let expected = ask(direct, &args);
    let got = ask(through, &args);
    assert_eq!(normalized(&got), normalized(&expected), "{line}");
    expected
}

/// `reply` with what one Redis process cannot match another on masked:
/// single-command rules sorted (Redis writes them in its hash table's
/// order, which changes with every process), `ACL LOG`'s ages and client
/// lines replaced.
fn normalized(reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply).into_owned();
    let mut out = Vec::new();
    let mut mask_next = false;
    for line in text.split("\r\n") {
        if mask_next && !line.starts_with('$') {
            out.push("<masked>".to_string());
            mask_next = false;
            continue;
        }
        // Redis 7.2's timestamps too.
        if matches!(
            line,
            "age-seconds" | "client-info" | "timestamp-created" | "timestamp-last-updated"
        ) {
            mask_next = true;
        }
        if line.starts_with('$') && mask_next || line.starts_with(',') {
            out.push("<len>".to_string());
            if line.starts_with(',') {
                mask_next = false;
            }
            continue;
        }
        let mut tokens: Vec<String> = line.split(' ').map(str::to_string).collect();
        let single = |t: &str| {
            (t.starts_with('+') || t.starts_with('-')) && t.len() > 1 && !t[1..].starts_with('@')
        };
        let mut i = 0;
        while i < tokens.len() {
            if !single(&tokens[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < tokens.len() && single(&tokens[i]) && !tokens[i].ends_with(')') {
                i += 1;
            }
            let closes = i < tokens.len() && single(&tokens[i]);
            if closes {
                tokens[i].pop();
                i += 1;
            }
            tokens[start..i].sort();
            if closes {
                tokens[i - 1].push(')');
            }
        }
        out.push(tokens.join(" "));
    }
    out.join("\r\n")
}

/// One Redis and the proxy in front of a one-master cluster, side by side.
struct Sides {
    // Dropped in this order: the proxy, the servers, then their files.
    proxy: Spawned,
    reference: Standalone,
    _cluster: Cluster,
    _dir: TempDir,
}

impl Sides {
    fn start(name: &str) -> Sides {
        let cluster = Cluster::start(1, 0);
        let dir = TempDir::new(name);
        let reference = Standalone::start(&dir);
        let proxy = Spawned::start(&["--seeds", &cluster.seeds()], &[]);
        Sides {
            _cluster: cluster,
            _dir: dir,
            reference,
            proxy,
        }
    }

    /// A client of each, once the proxy knows the cluster.
    fn clients(&self) -> (RawClient, RawClient) {
        let direct = RawClient::connect(self.reference.port);
        let mut through = RawClient::connect(self.proxy.port);
        wait_until(
            "the proxy to know the cluster",
            Duration::from_secs(10),
            || ask(&mut through, &[b"GET", b"k"]) == b"$-1\r\n",
        );
        (direct, through)
    }
}

/// `ACL SETUSER`, `GETUSER`, `LIST`, `USERS`, `DELUSER`, `DRYRUN`, `LOG`
/// over the proxy's users answer as one Redis 7.0 does, errors included;
/// users created at run time log in and are held to their rules; deleting
/// a user disconnects its clients.
#[test]
fn acl_user_management_as_one_redis() {
    let side = Sides::start("acl-manage");
    let (reference, proxy) = (&side.reference, &side.proxy);
    let (mut direct, mut through) = side.clients();
    let hash = "#5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";
    let script: Vec<String> = vec![
        "ACL LOG RESET".into(),
        format!("ACL SETUSER u1 on >p1 {hash} ~cache:* %R~ro:* &ch* +@set +@hash -@geo +get +mget -hset (+set %W~app*)"),
        "ACL GETUSER u1".into(),
        "ACL SETUSER u2 reset".into(),
        "ACL GETUSER u2".into(),
        "ACL SETUSER u3 on +@all -@dangerous ~* nopass".into(),
        "ACL GETUSER u3".into(),
        "ACL SETUSER u3 -config|set +config|get -client skip-sanitize-payload".into(),
        "ACL GETUSER u3".into(),
        "ACL SETUSER u5 on nopass -@all +@read +@write -@string +get +client|id %W~w* %R~r* %RW~b* (~x* +@all) (+ping)".into(),
        "ACL GETUSER u5".into(),
        "ACL SETUSER u5 <nosuch".into(),
        "ACL SETUSER u5 >a >b <a".into(),
        "ACL SETUSER u5 resetpass >a !3f79bb7b435b05321651daefd374cdc681dc06faa65e374e38337b88ca046dea".into(),
        "ACL SETUSER u5 >c !2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6".into(),
        "ACL SETUSER u5 clearselectors allchannels allkeys".into(),
        "ACL GETUSER u5".into(),
        "ACL SETUSER u5 resetkeys %R~r* %W~w* resetchannels (~x* +@all)".into(),
        "ACL LIST".into(),
        "ACL USERS".into(),
        "ACL SETUSER u4 +nosuch".into(),
        "ACL SETUSER u4 +@nosuch".into(),
        "ACL SETUSER u4 ~a ~* ~b".into(),
        "ACL SETUSER u4 &* &x".into(),
        "ACL SETUSER u4 #abc".into(),
        "ACL SETUSER u4 +config|get|x".into(),
        "ACL SETUSER u4 +config|".into(),
        "ACL SETUSER u4 +config|nosuch".into(),
        "ACL SETUSER u4 on (+get ~a".into(),
        "ACL SETUSER u4 %RX~a".into(),
        "ACL SETUSER u4 ~a%b bogus".into(),
        "ACL SETUSER u4 (~a +nosuch)".into(),
        "ACL GETUSER u4".into(),
        "ACL DRYRUN u1 get k".into(),
        "ACL DRYRUN u1 get cache:1".into(),
        "ACL DRYRUN u1 set app:1 v".into(),
        "ACL DRYRUN u1 set cache:1 v".into(),
        "ACL DRYRUN u1 publish x m".into(),
        "ACL DRYRUN u1 hset cache:1 f v".into(),
        "ACL DRYRUN u3 publish x m".into(),
        "ACL DRYRUN u3 config set maxmemory 0".into(),
        "ACL DRYRUN u1 nosuch".into(),
        "ACL DRYRUN u1 get".into(),
        "ACL DRYRUN u1 config".into(),
        "ACL DRYRUN u1 config nosuch".into(),
        "ACL DRYRUN u1 sort cache:1 by x*".into(),
        "ACL SETUSER u8 on (\"+get\" ~x) ('~a' +set) (~\"a)".into(),
        "ACL GETUSER u8".into(),
        "ACL DRYRUN nouser get k".into(),
        "ACL DELUSER u2 u9".into(),
        "ACL DELUSER u9 default".into(),
        "ACL USERS".into(),
        "ACL SAVE".into(),
        "ACL LOAD".into(),
        "ACL LOG 1 2".into(),
        "ACL LOG x".into(),
        "AUTH nosuch pw".into(),
        "AUTH u1 wrong".into(),
        "AUTH u1 wrong".into(),
        "ACL LOG".into(),
        "ACL LOG 1".into(),
        "ACL LOG -1".into(),
        "AUTH pw".into(),
    ];
    for line in &script {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        let expected = ask(&mut direct, &args);
        let got = ask(&mut through, &args);
        assert_eq!(normalized(&got), normalized(&expected), "{line}");
    }
    assert_eq!(
        ask(&mut through, &[b"ACL", b"SETUSER", b"a b"]),
        b"-ERR Usernames can't contain spaces or null characters\r\n"
    );

    // The users at work, through the proxy and directly: the same replies,
    // and the same ACL LOG entries.
    let mut refused = 0;
    let mut direct_u5 = RawClient::connect(reference.port);
    let mut u5 = RawClient::connect(proxy.port);
    for c in [&mut direct_u5, &mut u5] {
        assert_eq!(ask(c, &[b"AUTH", b"u5", b"b"]), b"+OK\r\n");
    }
    for line in [
        "GET rk",
        "GET wk",
        "SET wk v",
        "SET xk v",
        "GET bk",
        "CLIENT ID",
        "PING",
        "DEL xk",
        "SET wk v",
        "PUBLISH ch m",
        "MULTI",
        "GET wk",
        "GET rk",
        "EXEC",
        "MGET rk wk xk",
        "CONFIG NOSUCH",
        "CLIENT NOSUCH",
    ] {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        let expected = ask(&mut direct_u5, &args);
        refused += usize::from(expected.starts_with(b"-NOPERM"));
        let got = ask(&mut u5, &args);
        if line != "CLIENT ID" {
            assert_eq!(normalized(&got), normalized(&expected), "{line}");
        }
    }
    assert!(refused >= 5, "only {refused} commands refused");
    for line in ["ACL LOG", "ACL LOG 2"] {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        let expected = ask(&mut direct, &args);
        let got = ask(&mut through, &args);
        assert_eq!(normalized(&got), normalized(&expected), "{line}");
    }
    // RESP3 shapes.
    for c in [&mut direct, &mut through] {
        ask(c, &[b"HELLO", b"3"]);
    }
    for line in ["ACL GETUSER u1", "ACL GETUSER u5", "ACL LOG 1"] {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        let expected = ask(&mut direct, &args);
        let got = ask(&mut through, &args);
        assert_eq!(normalized(&got), normalized(&expected), "{line}");
    }

    // A rule change reaches a connected user at its next command.
    ask(&mut through, &[b"ACL", b"SETUSER", b"u5", b"+set", b"~*"]);
    assert_eq!(ask(&mut u5, &[b"SET", b"xk", b"v"]), b"+OK\r\n");
    // Deleting the user disconnects its clients.
    assert_eq!(ask(&mut through, &[b"ACL", b"DELUSER", b"u5"]), b":1\r\n");
    assert!(u5.is_closed(), "a deleted user's client stays connected");
    // MONITOR as Redis 7.0 shows commands: administrative ones not at
    // all, passwords redacted.
    let mut monitors = [
        RawClient::connect(reference.port),
        RawClient::connect(proxy.port),
    ];
    for m in &mut monitors {
        assert_eq!(ask(m, &[b"MONITOR"]), b"+OK\r\n");
    }
    for c in [&mut direct, &mut through] {
        for line in [
            "ACL SETUSER u6 on >secret +@all ~*",
            "AUTH u6 secret",
            "HELLO 3 AUTH u6 secret SETNAME n",
            "CONFIG GET maxmemory",
            "ACL WHOAMI",
            "GET k",
            "NOSUCH x",
            "GET",
            "MULTI",
            "SET k v",
            "GET k",
            "EXEC",
            "MULTI",
            "GET k",
            "DISCARD",
        ] {
            let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
            ask(c, &args);
        }
    }
    let [m_direct, m_through] = &mut monitors;
    let strip = |m: &mut RawClient| -> Vec<String> {
        String::from_utf8_lossy(&m.read_available(Duration::from_millis(500)))
            .lines()
            .map(|l| l.split_once("] ").map_or(l, |(_, rest)| rest).to_string())
            .collect()
    };
    let shown = strip(m_through);
    assert_eq!(shown, strip(m_direct));
    assert!(!shown.iter().any(|l| l.contains("secret")), "{shown:?}");
}

/// What a change of a user's rules does to its connected clients, as in
/// Redis 7.0: the next command (even in the same pipeline) follows the
/// new rules, `EXEC` checks its queued commands again, a user turned `off`
/// keeps its connections, and a subscriber whose channel is no longer
/// allowed is disconnected.
#[test]
fn rule_changes_reach_connected_clients_as_in_redis() {
    let cluster = Cluster::start(1, 0);
    let dir = TempDir::new("acl-changes");
    let reference = Standalone::start(&dir);
    let proxy = Spawned::start(&["--seeds", &cluster.seeds()], &[]);
    let ports = [reference.port, proxy.port];
    let args =
        |line: &str| -> Vec<Vec<u8>> { line.split(' ').map(|a| a.as_bytes().to_vec()).collect() };
    let on_both = |clients: &mut [RawClient; 2], line: &str| -> Vec<u8> {
        let a = args(line);
        let a: Vec<&[u8]> = a.iter().map(Vec::as_slice).collect();
        let expected = ask(&mut clients[0], &a);
        let got = ask(&mut clients[1], &a);
        assert_eq!(normalized(&got), normalized(&expected), "{line}");
        got
    };
    let connect = || ports.map(RawClient::connect);
    let mut admin = connect();
    wait_until(
        "the proxy to know the cluster",
        Duration::from_secs(10),
        || ask(&mut admin[1], &[b"GET", b"k"]) == b"$-1\r\n",
    );
    on_both(&mut admin, "ACL SETUSER pp on nopass ~* &* +@all");
    on_both(&mut admin, "ACL SETUSER m1 on nopass ~* &* +@all");
    on_both(&mut admin, "ACL SETUSER s1 on nopass ~* &ch* +@all");
    on_both(&mut admin, "SET k1 v");

    // In one pipeline: the GET after the change is refused.
    let mut pp = connect();
    on_both(&mut pp, "AUTH pp x");
    let pipeline = [
        encode_command(&[b"ACL", b"SETUSER", b"pp", b"-get"]),
        encode_command(&[b"GET", b"k1"]),
    ]
    .concat();
    let mut replies = Vec::new();
    for c in &mut pp {
        c.send(&pipeline);
        replies.push(c.read_available(Duration::from_millis(500)));
    }
    assert_eq!(
        String::from_utf8_lossy(&replies[1]),
        String::from_utf8_lossy(&replies[0])
    );

    // EXEC checks the queued commands again.
    let mut m1 = connect();
    on_both(&mut m1, "AUTH m1 x");
    for line in ["MULTI", "SET k1 v2", "GET k1", "PUBLISH ch m"] {
        on_both(&mut m1, line);
    }
    on_both(&mut admin, "ACL LOG RESET");
    on_both(&mut admin, "ACL SETUSER m1 -set resetchannels");
    on_both(&mut m1, "EXEC");
    on_both(&mut admin, "ACL LOG");
    // INFO refused after the change gets the error, not the masters' INFO;
    // INFO still allowed comes in RESP3 as a verbatim string.
    on_both(&mut admin, "ACL SETUSER m1 +set +@connection");
    for line in ["HELLO 3", "MULTI", "INFO cluster", "SET k1 v3"] {
        if line == "HELLO 3" {
            for c in &mut m1 {
                ask(c, &[b"HELLO", b"3"]);
            }
            continue;
        }
        on_both(&mut m1, line);
    }
    on_both(&mut admin, "ACL SETUSER m1 -info");
    on_both(&mut m1, "EXEC");
    on_both(&mut admin, "ACL SETUSER m1 +info");
    for line in ["MULTI", "INFO cluster", "EXEC"] {
        on_both(&mut m1, line);
    }
    // A refused EXEC discards the transaction.
    on_both(&mut admin, "ACL SETUSER m1 -exec");
    for line in ["MULTI", "SET k1 v4", "EXEC", "GET k1", "PING"] {
        on_both(&mut m1, line);
    }
    on_both(&mut admin, "ACL SETUSER m1 +exec");
    // Turned off: its connections go on.
    on_both(&mut admin, "ACL SETUSER m1 off");
    on_both(&mut m1, "PING");

    // Subscribers: kept while their channel stays allowed.
    let mut kept = connect();
    let mut lost = connect();
    on_both(&mut kept, "AUTH s1 x");
    on_both(&mut lost, "AUTH s1 x");
    on_both(&mut kept, "SUBSCRIBE ch1");
    on_both(&mut lost, "PSUBSCRIBE ch*");
    on_both(&mut admin, "ACL SETUSER s1 resetchannels &ch1");
    for (i, c) in lost.iter_mut().enumerate() {
        assert!(
            c.is_closed(),
            "port {}: the pattern subscriber stays",
            ports[i]
        );
    }
    for c in &mut admin {
        c.send(&encode_command(&[b"PUBLISH", b"ch1", b"hello"]));
    }
    for (i, c) in kept.iter_mut().enumerate() {
        let got =
            String::from_utf8_lossy(&c.read_available(Duration::from_millis(500))).into_owned();
        assert!(got.contains("hello"), "port {}: {got}", ports[i]);
    }
}

/// A `FLUSHALL` queued in `MULTI` and refused when `EXEC` checks it
/// again (the user lost it meanwhile) runs on no master: not on the
/// transaction's, and not on the others either.
#[test]
fn a_flush_refused_at_exec_runs_nowhere() {
    let cluster = Cluster::start(3, 0);
    let proxy = Spawned::start(&["--seeds", &cluster.seeds()], &[]);
    let mut admin = RawClient::connect(proxy.port);
    let mut user = RawClient::connect(proxy.port);
    wait_until(
        "the proxy to know the cluster",
        Duration::from_secs(10),
        || ask(&mut admin, &[b"SET", b"k1", b"v"]) == b"+OK\r\n",
    );
    for k in [&b"k2"[..], b"k3", b"k4", b"k5"] {
        assert_eq!(ask(&mut admin, &[b"SET", k, b"v"]), b"+OK\r\n");
    }
    assert_eq!(
        ask(
            &mut admin,
            &[b"ACL", b"SETUSER", b"f", b"on", b"nopass", b"~*", b"+@all"]
        ),
        b"+OK\r\n"
    );
    assert_eq!(ask(&mut user, &[b"AUTH", b"f", b"x"]), b"+OK\r\n");
    assert_eq!(ask(&mut user, &[b"MULTI"]), b"+OK\r\n");
    assert_eq!(ask(&mut user, &[b"FLUSHALL"]), b"+QUEUED\r\n");
    assert_eq!(
        ask(&mut admin, &[b"ACL", b"SETUSER", b"f", b"-flushall"]),
        b"+OK\r\n"
    );
    let exec = ask(&mut user, &[b"EXEC"]);
    assert!(
        exec.starts_with(b"*1\r\n-NOPERM ACLs rules changed"),
        "{}",
        String::from_utf8_lossy(&exec)
    );
    assert_eq!(ask(&mut admin, &[b"DBSIZE"]), b":5\r\n");
}

/// Valkey 9.1's database rules (`alldbs`, `resetdbs`, `db=`) as one server
/// of the installed version takes, shows and enforces them for database
/// 0, the one the proxy serves; older servers refuse the rules, and so
/// does the proxy, with the same errors.
#[test]
fn database_rules_as_one_server() {
    let side = Sides::start("acl-dbs");
    let (reference, proxy) = (&side.reference, &side.proxy);
    let (mut direct, mut through) = side.clients();
    for line in [
        "ACL LOG RESET",
        "ACL SETUSER d1 on >pw ~* &* +@all db=3,1,1",
        "ACL SETUSER d2 on nopass ~* +@all resetdbs (~x* +get db=0) (+set alldbs)",
        "ACL SETUSER d3 db=a",
        "ACL SETUSER d3 db=",
        "ACL SETUSER d3 db=1,",
        "ACL SETUSER d3 db=1,,2",
        "ACL SETUSER d3 db=-1",
        "ACL SETUSER d3 db=2147483648",
        "ACL SETUSER d3 DB=+7 sanitize-payload",
        "ACL SETUSER d4 skip-sanitize-payload db=0",
        "ACL LIST",
        "ACL GETUSER d1",
        "ACL GETUSER d2",
        "ACL GETUSER d3",
        "ACL SETUSER d3 reset",
        "ACL GETUSER d3",
        "ACL DRYRUN d1 GET k",
        "ACL DRYRUN d1 PING",
        "ACL DRYRUN d1 SELECT 0",
        "ACL DRYRUN d1 SWAPDB 0 0",
        "ACL DRYRUN d1 MOVE k 0",
        "ACL DRYRUN d1 COPY a b DB 0 REPLACE",
        "ACL DRYRUN d1 COPY a b",
        "ACL DRYRUN d1 PUBLISH c m",
        "ACL DRYRUN d1 FLUSHALL",
        "ACL DRYRUN d1 DBSIZE",
        "ACL DRYRUN d1 CLIENT LIST",
        "ACL DRYRUN d2 GET x1",
        "ACL DRYRUN d2 GET y1",
        "ACL DRYRUN d2 SET y1 v",
        "ACL DRYRUN d2 DEL y1",
        "ACL DRYRUN d4 GET k",
    ] {
        both(&mut direct, &mut through, line);
    }
    // A user without database 0 at work.
    let mut user = [
        RawClient::connect(reference.port),
        RawClient::connect(proxy.port),
    ];
    let [user_direct, user_through] = &mut user;
    let mut refused = 0;
    for line in [
        "AUTH d1 pw",
        "GET k",
        "SELECT 0",
        "PING",
        "MULTI",
        "GET k",
        "EXEC",
        "PUBLISH c m",
    ] {
        let expected = both(user_direct, user_through, line);
        refused += usize::from(expected.starts_with(b"-NOPERM No permissions to access database"));
    }
    for line in ["ACL LOG 3", "ACL DELUSER d1 d2 d3 d4"] {
        both(&mut direct, &mut through, line);
    }
    let v = common::server_version();
    if v.valkey_at_least(9, 1, 2) {
        assert_eq!(refused, 3, "Valkey 9.1 refuses database 0 to d1");
    } else {
        assert_eq!(refused, 0, "{} has no database rules", v.text);
    }
}

/// Commands and subcommands newer than the built-in Redis 7.0 table, as
/// one server of the installed version rules on them: named in rules,
/// in their categories (`+@hash` allows Redis 8's `HSETEX`), with their
/// keys' read and write permissions, and in `ACL DRYRUN`. Before, a rule
/// naming them was refused, their categories were empty and their keys
/// needed both permissions. On 7.0 the same lines get 7.0's errors.
#[test]
fn newer_commands_in_rules_as_one_server() {
    let side = Sides::start("acl-newer");
    let (reference, proxy) = (&side.reference, &side.proxy);
    let (mut direct, mut through) = side.clients();
    let v = common::server_version();
    let hashes = !v.valkey && v.at_least(8, 0);
    let mut admin = vec![
        "ACL SETUSER nt on nopass +@all -client|no-touch",
        "ACL SETUSER conn on nopass -@all +@connection +get ~*",
        "ACL DRYRUN default CLIENT NO-TOUCH ON",
        "ACL DRYRUN default CLIENT SETINFO LIB-NAME x",
        "ACL DRYRUN nt CLIENT NO-TOUCH ON",
        "ACL DRYRUN conn CLIENT NO-TOUCH ON",
        "ACL DRYRUN conn CLIENT SETINFO LIB-NAME x",
        "ACL GETUSER nt",
    ];
    if hashes {
        admin.extend([
            "ACL SETUSER hashuser on >pw -@all +@hash ~*",
            "ACL SETUSER grantone on >pw -@all +hgetex ~*",
            "ACL SETUSER rwuser on >pw +@all %R~r* %W~w*",
            "ACL SETUSER readers on >pw -@all +@read ~*",
            "ACL GETUSER grantone",
            "ACL DRYRUN readers HTTL h FIELDS 1 f",
            "ACL DRYRUN readers HSETEX h FIELDS 1 f v",
            "ACL DRYRUN rwuser HTTL r1 FIELDS 1 f",
            "ACL DRYRUN rwuser HTTL w1 FIELDS 1 f",
            "ACL DRYRUN rwuser HSETEX w1 FIELDS 1 f v",
            "ACL DRYRUN rwuser HSETEX r1 FIELDS 1 f v",
        ]);
    }
    for line in &admin {
        both(&mut direct, &mut through, line);
    }
    // At work.
    let mut user = [
        RawClient::connect(reference.port),
        RawClient::connect(proxy.port),
    ];
    let [user_direct, user_through] = &mut user;
    let mut lines = vec![
        "AUTH nt x",
        "CLIENT NO-TOUCH ON",
        "CLIENT GETNAME",
        "AUTH conn x",
    ];
    lines.push("CLIENT SETINFO LIB-NAME x");
    if hashes {
        lines.extend([
            "AUTH hashuser pw",
            "HSETEX h FIELDS 1 f v",
            "HGETEX h EX 100 FIELDS 1 f",
            "HTTL h FIELDS 1 f",
            "GET h",
            "AUTH grantone pw",
            "HGETEX h PERSIST FIELDS 1 f",
            "HTTL h FIELDS 1 f",
            "AUTH rwuser pw",
            "HTTL r1 FIELDS 1 f",
            "HSETEX w1 FIELDS 1 f v",
            "HSETEX r1 FIELDS 1 f v",
            "DEL h w1",
        ]);
    }
    lines.extend(["AUTH conn x", "GET k", "SET k v"]);
    let mut allowed = 0;
    for line in lines {
        let expected = both(user_direct, user_through, line);
        allowed += usize::from(!expected.starts_with(b"-"));
    }
    // ACL LOG's client line names the refused command, which Redis makes
    // the client's last before its check.
    for c in [&mut direct, &mut through] {
        let log = String::from_utf8(ask(c, &[b"ACL", b"LOG", b"1"])).unwrap();
        assert!(log.contains(" cmd=set "), "{log}");
    }
    both(
        &mut direct,
        &mut through,
        "ACL DELUSER nt conn hashuser grantone rwuser readers",
    );
    if hashes {
        assert!(allowed >= 10, "{allowed} allowed");
    }
}
