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
        b"-NOPERM this user has no permissions to run the 'set' command\r\n",
    );
    // RESET goes back to the default user, which must log in again.
    c.roundtrip(&cmd("RESET"), b"+RESET\r\n");
    c.roundtrip(&cmd("GET k"), b"-NOAUTH Authentication required.\r\n");

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
        b"-NOPERM this user has no permissions to run the 'eval' command\r\n",
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
        String::from_utf8_lossy(&out.stderr)
            .contains("auth.users.acl: user 'x': ACL rule '+nosuch': unknown command 'nosuch'"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
