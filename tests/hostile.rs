//! Hostile input: each case has an exact expected outcome, and after each
//! one a well-behaved client on the same proxy is still served.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use common::{encode_command, Cluster, Proxy, RawClient};

fn env() -> &'static (Cluster, Proxy) {
    static ENV: OnceLock<(Cluster, Proxy)> = OnceLock::new();
    ENV.get_or_init(|| {
        let cluster = Cluster::start(3, 0);
        let proxy = Proxy::start(&cluster);
        (cluster, proxy)
    })
}

fn port() -> u16 {
    env().1.port
}

/// Held by the test that times other clients against a slow one and by
/// the one that keeps the proxy's thread busy parsing a million
/// arguments, so the first does not measure the second.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A well-behaved client still gets exact answers.
fn others_unaffected() {
    let mut good = RawClient::connect(port());
    good.roundtrip(b"*3\r\n$3\r\nSET\r\n$4\r\nh:ok\r\n$1\r\n1\r\n", b"+OK\r\n");
    good.roundtrip(
        b"*3\r\n$4\r\nMGET\r\n$4\r\nh:ok\r\n$5\r\nh:nil\r\n",
        b"*2\r\n$1\r\n1\r\n$-1\r\n",
    );
}

fn protocol_error(input: &[u8], expected: &[u8]) {
    let mut bad = RawClient::connect(port());
    bad.send(input);
    bad.expect(expected);
    assert!(
        bad.is_closed(),
        "connection left open after {}",
        common::escape(input)
    );
    others_unaffected();
}

#[test]
fn truncated_frames_then_disconnect() {
    for input in [
        &b"*2\r\n$3\r\nGET\r\n$5\r\nab"[..],
        b"*2\r\n$3\r\nGE",
        b"*3\r\n",
        b"*",
        b"$",
    ] {
        let mut c = RawClient::connect(port());
        c.send(input);
        assert_eq!(
            c.read_available(Duration::from_millis(100)),
            b"",
            "no reply to a partial frame"
        );
        drop(c);
    }
    others_unaffected();
}

#[test]
fn negative_and_absurd_lengths() {
    protocol_error(
        b"*1\r\n$-5\r\n",
        b"-ERR Protocol error: invalid bulk length\r\n",
    );
    protocol_error(
        b"*1\r\n$99999999999999\r\n",
        b"-ERR Protocol error: invalid bulk length\r\n",
    );
    protocol_error(
        b"*99999999999999\r\n",
        b"-ERR Protocol error: invalid multibulk length\r\n",
    );
    protocol_error(
        b"*abc\r\n",
        b"-ERR Protocol error: invalid multibulk length\r\n",
    );
    protocol_error(
        b"*1\r\n$3\r\nabcXY",
        b"-ERR Protocol error: invalid bulk terminator\r\n",
    );
    // Lengths are read as Redis's `string2ll` reads them: no leading
    // zeros, no "-0" (before, "*03" waited for a third argument for ever).
    for (input, expected) in [
        (&b"*03\r\n$4\r\nPING\r\n"[..], &b"multibulk"[..]),
        (b"*-0\r\n*1\r\n$4\r\nPING\r\n", b"multibulk"),
        (b"*1\r\n$04\r\nPING\r\n", b"bulk"),
        (b"*1\r\n$-0\r\n", b"bulk"),
    ] {
        let expected = [b"-ERR Protocol error: invalid ", expected, b" length\r\n"].concat();
        protocol_error(input, &expected);
    }
    // Negative array lengths are skipped silently, as Redis does.
    let mut c = RawClient::connect(port());
    c.roundtrip(b"*-5\r\n*1\r\n$4\r\nPING\r\n", b"+PONG\r\n");
    c.roundtrip(b"*0\r\n*1\r\n$4\r\nPING\r\n", b"+PONG\r\n");
}

#[test]
fn nested_arrays_as_arguments() {
    protocol_error(
        b"*2\r\n$4\r\nECHO\r\n*1\r\n$1\r\na\r\n",
        b"-ERR Protocol error: expected '$', got '*'\r\n",
    );
    protocol_error(
        b"*1\r\n*1\r\n$4\r\nPING\r\n",
        b"-ERR Protocol error: expected '$', got '*'\r\n",
    );
}

#[test]
fn a_command_with_a_million_arguments() {
    let _serial = serial();
    let mut cmd = Vec::with_capacity(20 * 1_000_000);
    cmd.extend_from_slice(b"*1000000\r\n$6\r\nEXISTS\r\n");
    for i in 0..999_999 {
        let key = format!("h:million:{i}");
        cmd.extend_from_slice(format!("${}\r\n{key}\r\n", key.len()).as_bytes());
    }
    let mut c = TcpStream::connect(("127.0.0.1", port())).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let started = Instant::now();
    let writer = {
        let mut w = c.try_clone().unwrap();
        thread::spawn(move || w.write_all(&cmd).unwrap())
    };
    let mut reply = [0u8; 4];
    c.read_exact(&mut reply).unwrap();
    writer.join().unwrap();
    assert_eq!(&reply, b":0\r\n");
    eprintln!(
        "EXISTS with 999,999 keys across all slots took {:?}",
        started.elapsed()
    );
    others_unaffected();
}

#[test]
fn empty_commands_are_ignored() {
    let mut c = RawClient::connect(port());
    c.roundtrip(b"\r\n\r\n*0\r\n \r\n*1\r\n$4\r\nPING\r\n", b"+PONG\r\n");
    c.roundtrip(b"\n\nPING\n", b"+PONG\r\n");
}

#[test]
fn binary_garbage() {
    // No newline within 64 KiB: Redis's inline limit.
    let mut garbage: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    garbage.retain(|&b| b != b'\n' && b != b'*' && b != b'\r');
    garbage[0] = b'x';
    protocol_error(&garbage, b"-ERR Protocol error: too big inline request\r\n");
    // Garbage with newlines is a sequence of unknown inline commands.
    let mut c = RawClient::connect(port());
    c.send(b"\x01\x02zz\r\n");
    c.expect(b"-ERR unknown command '\x01\x02zz', with args beginning with: \r\n");
    c.roundtrip(b"PING\r\n", b"+PONG\r\n");
    protocol_error(
        b"x \"unbalanced\r\n",
        b"-ERR Protocol error: unbalanced quotes in request\r\n",
    );
}

#[test]
fn a_client_sending_one_byte_at_a_time() {
    let _serial = serial();
    let mut slow = RawClient::connect(port());
    let req = b"*2\r\n$4\r\nECHO\r\n$4\r\nslow\r\n";
    let started = Instant::now();
    for &b in req {
        slow.send(&[b]);
        // Meanwhile everyone else is served at full speed.
        let t = Instant::now();
        others_unaffected();
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        thread::sleep(Duration::from_millis(20));
    }
    slow.expect(b"$4\r\nslow\r\n");
    assert!(started.elapsed() >= Duration::from_millis(20 * req.len() as u64));
}

#[test]
fn two_thousand_connections_at_once() {
    let mut conns: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(("127.0.0.1", port())).expect("connect"))
        .collect();
    for c in conns.iter_mut() {
        c.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    }
    for c in conns.iter_mut() {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 7];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"+PONG\r\n");
    }
    drop(conns);
    others_unaffected();
}

#[test]
fn a_deep_pipeline_from_one_client_does_not_starve_others() {
    let mut flood = TcpStream::connect(("127.0.0.1", port())).unwrap();
    let mut batch = Vec::new();
    for i in 0..50_000 {
        batch.extend(encode_command(&[
            b"SET",
            format!("h:flood:{}", i % 100).as_bytes(),
            b"x",
        ]));
    }
    let writer = {
        let mut w = flood.try_clone().unwrap();
        thread::spawn(move || w.write_all(&batch).unwrap())
    };
    let t = Instant::now();
    others_unaffected();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    flood
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut got = vec![0u8; 5 * 50_000];
    flood.read_exact(&mut got).unwrap();
    assert!(got.chunks(5).all(|c| c == b"+OK\r\n"));
    writer.join().unwrap();
}
