//! TLS against real servers: both sides encrypted, certificates rotated
//! without a restart (file watch and SIGHUP), and client certificates
//! required with `tls.client_ca_file`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use common::{free_port, wait_until, write_config, Cluster, Spawned, TempDir};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes `<name>.key` and `<name>.crt`, signed by the CA in `dir`, with
/// the extensions in `ext`.
fn sign(dir: &Path, name: &str, ext: &str) {
    let (key, csr, crt, cnf) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("{name}.cnf"),
    );
    let subject = format!("/CN={name}");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &subject,
        ],
    );
    std::fs::write(dir.join(&cnf), ext).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &cnf,
        ],
    );
}

/// Makes in `dir` (created if missing) a CA (`ca.crt`), a certificate for
/// 127.0.0.1 and localhost signed by it (`server.crt`, `server.key`) and a
/// client certificate (`client.crt`, `client.key`).
fn make_certs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=slotbridge-test-ca",
        ],
    );
    sign(dir, "server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    sign(
        dir,
        "client",
        "extendedKeyUsage=clientAuth\nsubjectAltName=DNS:client\n",
    );
}

/// `redis-cli --tls` to 127.0.0.1:`port`, trusting the CA in `ca` and
/// presenting the client certificate in `client` if given: its stdout.
fn tls_cli(port: u16, ca: &Path, client: Option<&Path>, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.arg("--tls")
        .arg("--cacert")
        .arg(ca.join("ca.crt"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if let Some(dir) = client {
        cmd.arg("--cert")
            .arg(dir.join("client.crt"))
            .arg("--key")
            .arg(dir.join("client.key"));
    }
    let out = cmd.args(args).stdin(Stdio::null()).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a TLS client trusting the CA in `ca` gets `PONG`.
fn pong(port: u16, ca: &Path) -> bool {
    tls_cli(port, ca, None, &["PING"]) == "PONG\n"
}

/// Replaces `to` by a copy of `from` at once (a rename), so that no
/// reader sees half a file.
fn replace(from: &Path, to: &Path) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// Lays `files` out in `dir` as a Kubernetes secret volume does: each a
/// symlink through `..data`, which points at a timestamped directory and
/// is swapped in one rename. Called again, it publishes a new version.
fn publish_secret(dir: &Path, version: &str, files: &[(&str, &Path)]) {
    use std::os::unix::fs::symlink;
    let data = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&data).unwrap();
    for (name, from) in files {
        std::fs::copy(from, data.join(name)).unwrap();
        let link = dir.join(name);
        if !link.exists() {
            symlink(Path::new("..data").join(name), &link).unwrap();
        }
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

/// `connected_clients` in the proxy's `INFO clients`, asked over TLS.
fn connected_clients(port: u16, ca: &Path) -> usize {
    tls_cli(port, ca, None, &["INFO", "clients"])
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn tls_config(cert_dir: &Path, extra: &str) -> String {
    format!(
        "[tls]\ncert_file = \"{0}/server.crt\"\nkey_file = \"{0}/server.key\"\n{extra}",
        cert_dir.display()
    )
}

#[test]
fn tls_on_both_sides() {
    let dir = TempDir::new("tls-both");
    let d = dir.path();
    make_certs(d);
    // A one-node TLS-only cluster owning every slot.
    let port = free_port();
    let mut redis = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            "server.crt",
            "--tls-key-file",
            "server.key",
            "--tls-ca-cert-file",
            "ca.crt",
            "--tls-auth-clients",
            "no",
            "--tls-cluster",
            "yes",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            d.to_str().unwrap(),
            "--logfile",
            "redis.log",
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(d)
        .spawn()
        .unwrap();
    struct KillOnDrop<'a>(&'a mut Child);
    impl Drop for KillOnDrop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = KillOnDrop(&mut redis);
    let cli = |args: &[&str]| tls_cli(port, d, None, args);
    wait_until("TLS redis to start", Duration::from_secs(10), || {
        cli(&["PING"]).contains("PONG")
    });
    cli(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]);
    wait_until("the cluster to be ok", Duration::from_secs(10), || {
        cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
    });
    std::fs::copy(d.join("ca.crt"), d.join("backend-ca.crt")).unwrap();
    let config = write_config(
        &dir,
        &tls_config(
            d,
            &format!(
                "backend = true\nbackend_ca_file = \"{}/backend-ca.crt\"\nwatch_interval_ms = 200\n",
                d.display()
            ),
        ),
    );
    let seeds = format!("127.0.0.1:{port}");
    let proxy = Spawned::start(&["--config", &config, "--seeds", &seeds], &[]);
    let through = |args: &[&str]| tls_cli(proxy.port, d, None, args);
    wait_until(
        "the proxy to serve over TLS",
        Duration::from_secs(10),
        || through(&["SET", "tls-key", "tls-value"]).trim() == "OK",
    );
    assert_eq!(through(&["GET", "tls-key"]).trim(), "tls-value");
    assert_eq!(through(&["MGET", "tls-key", "other"]).trim(), "tls-value");
    assert_eq!(cli(&["GET", "tls-key"]).trim(), "tls-value");
    // Commands apart by more than a session stays active: each one wakes
    // a resting TLS connection.
    let spaced = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "(echo 'SET tls-rest 1'; sleep 0.6; echo 'INCR tls-rest'; sleep 0.6; echo 'GET tls-rest') | redis-cli --tls --cacert ca.crt -h 127.0.0.1 -p {}",
            proxy.port
        ))
        .current_dir(d)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&spaced.stdout), "OK\n2\n2\n");
    // Plain text to the TLS port is refused, not served.
    let mut plain = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    plain.write_all(b"PING\r\n").unwrap();
    let mut buf = [0u8; 64];
    let n = plain.read(&mut buf).unwrap_or(0);
    assert!(!buf[..n].starts_with(b"+PONG"));
    assert!(proxy.log().contains("slotbridge started"));

    // The node moves to a certificate of another CA and drops the proxy's
    // connections: the proxy cannot reconnect until its CA bundle has the
    // new CA, which it reads without a restart.
    let next = d.join("next");
    make_certs(&next);
    let bundle = d.join("bundle.crt");
    let both = [d.join("ca.crt"), next.join("ca.crt")]
        .map(|f| std::fs::read_to_string(f).unwrap())
        .concat();
    std::fs::write(&bundle, both).unwrap();
    let node = |args: &[&str]| tls_cli(port, &next, None, args);
    let _ = cli(&[
        "CONFIG",
        "SET",
        "tls-cert-file",
        next.join("server.crt").to_str().unwrap(),
        "tls-key-file",
        next.join("server.key").to_str().unwrap(),
        "tls-ca-cert-file",
        bundle.to_str().unwrap(),
    ]);
    assert_eq!(node(&["PING"]), "PONG\n");
    node(&["CLIENT", "KILL", "TYPE", "normal"]);
    let refused = through(&["GET", "tls-key"]);
    assert!(refused.contains("TLS handshake failed"), "{refused}");
    replace(&bundle, &d.join("backend-ca.crt"));
    wait_until(
        "the proxy to trust the node's new CA",
        Duration::from_secs(20),
        || through(&["GET", "tls-key"]) == "tls-value\n",
    );
    assert!(proxy.log().contains("side=\"backend\""), "{}", proxy.log());
}

#[test]
fn rotated_certificates_are_used_without_a_restart() {
    let cluster = Cluster::start(1, 0);
    let dir = TempDir::new("tls-rotate");
    let [first, second, third, live, later] =
        ["first", "second", "third", "live", "later"].map(|name| dir.path().join(name));
    for d in [&first, &second, &third] {
        make_certs(d);
    }
    let pair = |d: &Path| [d.join("server.crt"), d.join("server.key")];
    let secret = |version: &str, [crt, key]: &[std::path::PathBuf; 2]| {
        publish_secret(&live, version, &[("server.crt", crt), ("server.key", key)])
    };
    secret("v1", &pair(&first));
    let config = write_config(&dir, &tls_config(&live, "watch_interval_ms = 200\n"));
    let proxy = Spawned::start(&["--config", &config, "--seeds", &cluster.seeds()], &[]);
    let port = proxy.port;
    wait_until(
        "TLS with the first certificate",
        Duration::from_secs(10),
        || pong(port, &first),
    );
    // A client connected before the rotation keeps its connection.
    let others = connected_clients(port, &first) - 1;
    let before = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "(echo PING; sleep 2; echo PING) | redis-cli --tls --cacert {}/ca.crt -h 127.0.0.1 -p {port}",
            first.display()
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(
        "the first client to connect",
        Duration::from_secs(10),
        || connected_clients(port, &first) > others + 1,
    );

    // A rotated secret is noticed and served to new connections.
    secret("v2", &pair(&second));
    wait_until("the rotated certificate", Duration::from_secs(10), || {
        pong(port, &second)
    });
    assert!(!pong(port, &first));
    let log = proxy.log();
    assert!(
        log.contains("TLS certificates read again") && log.contains("file change"),
        "{log}"
    );
    let out = before.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "PONG\nPONG\n");

    // An unusable key is reported once and the current certificate kept.
    let errors = |log: &str| log.matches("cannot read the TLS certificates").count();
    let seen = errors(&proxy.log());
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "not a key\n").unwrap();
    secret("v3", &[second.join("server.crt"), bad]);
    wait_until(
        "the bad key to be reported",
        Duration::from_secs(10),
        || errors(&proxy.log()) > seen,
    );
    thread::sleep(Duration::from_millis(600));
    assert_eq!(errors(&proxy.log()), seen + 1, "{}", proxy.log());
    assert!(pong(port, &second));
    assert_eq!(
        tls_cli(port, &second, None, &["SET", "rotated", "yes"]),
        "OK\n"
    );

    // SIGHUP to files that are not there yet: the current certificate
    // stays, and the files are read once they appear.
    write_config(&dir, &tls_config(&later, "watch_interval_ms = 200\n"));
    proxy.signal("HUP");
    wait_until(
        "the missing files to be reported",
        Duration::from_secs(10),
        || errors(&proxy.log()) > seen + 1,
    );
    assert!(pong(port, &second));
    std::fs::create_dir(&later).unwrap();
    for f in ["server.crt", "server.key"] {
        replace(&third.join(f), &later.join(f));
    }
    wait_until("the new files", Duration::from_secs(10), || {
        pong(port, &third)
    });

    // With the file watch off, SIGHUP alone applies a change at once.
    write_config(&dir, &tls_config(&first, "watch_interval_ms = 0\n"));
    let reloads = proxy.log().matches("configuration reloaded").count();
    proxy.signal("HUP");
    wait_until("the reload", Duration::from_secs(10), || {
        proxy.log().matches("configuration reloaded").count() > reloads
    });
    wait_until(
        "the first certificate again",
        Duration::from_secs(10),
        || pong(port, &first),
    );
    assert!(!pong(port, &third));
    assert_eq!(tls_cli(port, &first, None, &["GET", "rotated"]), "yes\n");
}

#[test]
fn client_certificates_are_required_with_client_ca_file() {
    let cluster = Cluster::start(1, 0);
    let dir = TempDir::new("tls-clients");
    let (ours, other) = (dir.path().join("ours"), dir.path().join("other"));
    make_certs(&ours);
    make_certs(&other);
    let config = write_config(
        &dir,
        &tls_config(
            &ours,
            &format!("client_ca_file = \"{}/ca.crt\"\n", ours.display()),
        ),
    );
    let proxy = Spawned::start(&["--config", &config, "--seeds", &cluster.seeds()], &[]);
    let port = proxy.port;
    let with_cert = |client: Option<&Path>, args: &[&str]| tls_cli(port, &ours, client, args);
    wait_until(
        "TLS with a client certificate",
        Duration::from_secs(10),
        || with_cert(Some(&ours), &["PING"]) == "PONG\n",
    );
    assert_eq!(with_cert(Some(&ours), &["SET", "mtls", "1"]), "OK\n");
    assert_eq!(with_cert(Some(&ours), &["GET", "mtls"]), "1\n");
    // No certificate, or one another CA signed: no command is served.
    assert_eq!(with_cert(None, &["GET", "mtls"]), "");
    assert_eq!(with_cert(Some(&other), &["GET", "mtls"]), "");
    // The refused handshakes did not disturb the proxy.
    assert_eq!(with_cert(Some(&ours), &["GET", "mtls"]), "1\n");
}
