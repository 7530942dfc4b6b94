#!/usr/bin/env python3
"""Generate src/command/table_gen.rs from a live redis-server's COMMAND reply.

Usage: tools/gen_command_table.py [--redis-server PATH] [--output PATH]

Starts a throwaway redis-server (no persistence, temp dir, free port), runs
COMMAND over a raw RESP2 socket, and writes a Rust table of `CommandSpec`
entries (one per command and one per subcommand, sorted by name) using the
types of src/command/spec.rs. Python 3 standard library only.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT = os.path.join(ROOT, "src", "command", "table_gen.rs")

# Redis command flag -> constant in spec.rs `flags`.
COMMAND_FLAGS = {
    "write": "WRITE",
    "readonly": "READONLY",
    "denyoom": "DENYOOM",
    "admin": "ADMIN",
    "pubsub": "PUBSUB",
    "noscript": "NOSCRIPT",
    "blocking": "BLOCKING",
    "loading": "LOADING",
    "stale": "STALE",
    "skip_monitor": "SKIP_MONITOR",
    "skip_slowlog": "SKIP_SLOWLOG",
    "fast": "FAST",
    "no_auth": "NO_AUTH",
    "may_replicate": "MAY_REPLICATE",
    "no_multi": "NO_MULTI",
    "no_mandatory_keys": "NO_MANDATORY_KEYS",
    "allow_busy": "ALLOW_BUSY",
    "movablekeys": "MOVABLE_KEYS",
    "asking": "ASKING",
    "no_async_loading": "NO_ASYNC_LOADING",
}
# Order in which flag constants are emitted (bit order of spec.rs).
FLAG_ORDER = [
    "WRITE", "READONLY", "DENYOOM", "ADMIN", "PUBSUB", "NOSCRIPT", "BLOCKING",
    "LOADING", "STALE", "SKIP_MONITOR", "SKIP_SLOWLOG", "FAST", "NO_AUTH",
    "MAY_REPLICATE", "NO_MULTI", "NO_MANDATORY_KEYS", "ALLOW_BUSY",
    "MOVABLE_KEYS", "HAS_SUBCOMMANDS", "ASKING", "NO_ASYNC_LOADING",
]

# Redis key-spec flag -> constant in spec.rs `key_flags` (others ignored).
KEY_FLAGS = {
    "RO": "RO",
    "RW": "RW",
    "OW": "OW",
    "RM": "RM",
    "not_key": "NOT_KEY",
    "incomplete": "INCOMPLETE",
    "variable_flags": "VARIABLE_FLAGS",
}
KEY_FLAGS.update({"access": "ACCESS", "insert": "INSERT", "delete": "DELETE", "update": "UPDATE"})
KEY_FLAG_ORDER = [
    "RO", "RW", "OW", "RM", "NOT_KEY", "INCOMPLETE", "VARIABLE_FLAGS",
    "ACCESS", "INSERT", "DELETE", "UPDATE",
]
IGNORED_KEY_FLAGS = set()

# ACL categories (`ACL CAT`), in the bit order of spec.rs `acl`.
ACL_CATEGORIES = [
    "keyspace", "read", "write", "set", "sortedset", "list", "hash", "string",
    "bitmap", "hyperloglog", "geo", "stream", "pubsub", "admin", "fast", "slow",
    "blocking", "dangerous", "connection", "transaction", "scripting",
]

I16 = (-(1 << 15), (1 << 15) - 1)
U16 = (0, (1 << 16) - 1)


# --------------------------------------------------------------------------
# Minimal RESP2 client
# --------------------------------------------------------------------------


class RespError(Exception):
    pass


class Resp:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""

    def close(self):
        self.sock.close()

    def _fill(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        self.buf += chunk

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            self._fill()

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RespError("unexpected RESP type byte %r" % kind)

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a.encode() if isinstance(a, str) else a
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self.read()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch_commands(server_bin):
    """Returns (redis_version, COMMAND reply)."""
    tmp = tempfile.mkdtemp(prefix="slotbridge-gen-")
    port = free_port()
    proc = subprocess.Popen(
        [
            server_bin, "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", tmp,
            "--daemonize", "no", "--logfile", os.path.join(tmp, "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp,
    )
    try:
        conn = None
        deadline = time.time() + 15
        while conn is None:
            if proc.poll() is not None:
                raise RuntimeError("redis-server exited with %s" % proc.returncode)
            try:
                conn = Resp(port)
                conn.call("PING")
            except (OSError, RespError):
                if conn is not None:
                    conn.close()
                conn = None
                if time.time() > deadline:
                    raise RuntimeError("redis-server did not come up on port %d" % port)
                time.sleep(0.05)
        try:
            info = conn.call("INFO", "server")
            version = "unknown"
            for line in info.splitlines():
                if line.startswith("redis_version:"):
                    version = line.split(":", 1)[1].strip()
            return version, conn.call("COMMAND")
        finally:
            conn.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------


def pairs(v):
    """RESP2 flattens maps into [k1, v1, k2, v2, ...]."""
    if isinstance(v, dict):
        return v
    if v is None:
        return {}
    if len(v) % 2:
        raise ValueError("odd map length: %r" % (v,))
    return {v[i]: v[i + 1] for i in range(0, len(v), 2)}


def check_range(value, bounds, what, name):
    if not isinstance(value, int) or not (bounds[0] <= value <= bounds[1]):
        raise ValueError("%s: %s=%r out of range %r" % (name, what, value, bounds))
    return value


def rust_str(s):
    out = []
    for ch in s:
        if ch in "\\\"":
            out.append("\\" + ch)
        elif 0x20 <= ord(ch) < 0x7F:
            out.append(ch)
        else:
            out.append("\\u{%x}" % ord(ch))
    return '"' + "".join(out) + '"'


def convert_key_spec(name, raw, warnings):
    ks = pairs(raw)
    bits = []
    for f in ks.get("flags", []):
        if f in KEY_FLAGS:
            bits.append(KEY_FLAGS[f])
        elif f not in IGNORED_KEY_FLAGS:
            warnings.add("key-spec flag %r (e.g. %s) ignored" % (f, name))
    bits = sorted(set(bits), key=KEY_FLAG_ORDER.index)
    flags = " | ".join("key_flags::" + b for b in bits) if bits else "0"

    bs = pairs(ks.get("begin_search"))
    bs_type, bs_spec = bs.get("type"), pairs(bs.get("spec"))
    if bs_type == "index":
        pos = check_range(bs_spec.get("index"), U16, "index", name)
        begin = "BeginSearch::Index(%d)" % pos
    elif bs_type == "keyword":
        kw = bs_spec.get("keyword")
        if not isinstance(kw, str):
            raise ValueError("%s: bad keyword %r" % (name, kw))
        sf = check_range(bs_spec.get("startfrom"), I16, "startfrom", name)
        begin = "BeginSearch::Keyword { keyword: %s, start_from: %d }" % (rust_str(kw), sf)
    else:
        if bs_type != "unknown":
            warnings.add("begin_search type %r (%s) treated as unknown" % (bs_type, name))
        begin = "BeginSearch::Unknown"

    fk = pairs(ks.get("find_keys"))
    fk_type, fk_spec = fk.get("type"), pairs(fk.get("spec"))
    if fk_type == "range":
        find = "FindKeys::Range { last_key: %d, key_step: %d, limit: %d }" % (
            check_range(fk_spec.get("lastkey"), I16, "lastkey", name),
            check_range(fk_spec.get("keystep"), U16, "keystep", name),
            check_range(fk_spec.get("limit"), U16, "limit", name),
        )
    elif fk_type == "keynum":
        find = "FindKeys::KeyNum { key_num_idx: %d, first_key: %d, key_step: %d }" % (
            check_range(fk_spec.get("keynumidx"), U16, "keynumidx", name),
            check_range(fk_spec.get("firstkey"), U16, "firstkey", name),
            check_range(fk_spec.get("keystep"), U16, "keystep", name),
        )
    else:
        if fk_type != "unknown":
            warnings.add("find_keys type %r (%s) treated as unknown" % (fk_type, name))
        find = "FindKeys::Unknown"

    return "KeySpec { begin: %s, find: %s, flags: %s }" % (begin, find, flags)


def flatten(reply, out, warnings):
    for entry in reply:
        name = entry[0].lower()
        arity = check_range(entry[1], I16, "arity", name)
        bits = set()
        for f in entry[2]:
            if f in COMMAND_FLAGS:
                bits.add(COMMAND_FLAGS[f])
            else:
                warnings.add("command flag %r (e.g. %s) ignored" % (f, name))
        subcommands = entry[9] if len(entry) > 9 and entry[9] else []
        if subcommands:
            bits.add("HAS_SUBCOMMANDS")
        key_specs = entry[8] if len(entry) > 8 and entry[8] else []
        categories = []
        for c in entry[6] if len(entry) > 6 and entry[6] else []:
            c = c.lstrip("@")
            if c in ACL_CATEGORIES:
                categories.append(c.upper())
            else:
                warnings.add("ACL category %r (e.g. %s) ignored" % (c, name))
        out.append(
            {
                "name": name,
                "arity": arity,
                "acl": sorted(set(categories), key=lambda c: ACL_CATEGORIES.index(c.lower())),
                "flags": sorted(bits, key=FLAG_ORDER.index),
                "key_specs": [convert_key_spec(name, ks, warnings) for ks in key_specs],
            }
        )
        flatten(subcommands, out, warnings)


def render(version, entries):
    max_len = max(len(e["name"].encode()) for e in entries)
    lines = [
        "// @generated by tools/gen_command_table.py from redis-server %s." % version,
        "// DO NOT EDIT BY HAND: re-run `python3 tools/gen_command_table.py` instead.",
        "",
        "//! The Redis command table (one entry per command and per subcommand),",
        "//! generated from the `COMMAND` reply of redis-server %s." % version,
        "",
        "use super::spec::{acl, flags, key_flags, BeginSearch, CommandSpec, FindKeys, KeySpec};",
        "",
        "/// The redis-server version this table was generated from.",
        "pub const REDIS_VERSION: &str = %s;" % rust_str(version),
        "",
        "/// Length in bytes of the longest command name in [`COMMANDS`].",
        "pub const MAX_NAME_LEN: usize = %d;" % max_len,
        "",
        "/// All commands and subcommands (`container|sub`), sorted by name (byte order).",
        "pub static COMMANDS: &[CommandSpec] = &[",
    ]
    for e in entries:
        flags = " | ".join("flags::" + f for f in e["flags"]) if e["flags"] else "0"
        specs = ", ".join(e["key_specs"])
        acl = " | ".join("acl::" + c for c in e["acl"]) if e["acl"] else "0"
        lines.append(
            "    CommandSpec { name: %s, arity: %d, flags: %s, acl: %s, key_specs: &[%s] },"
            % (rust_str(e["name"]), e["arity"], flags, acl, specs)
        )
    lines.append("];")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    ap.add_argument("--output", default=DEFAULT_OUTPUT)
    args = ap.parse_args()

    version, reply = fetch_commands(args.redis_server)
    warnings = set()
    entries = []
    flatten(reply, entries, warnings)
    entries.sort(key=lambda e: e["name"].encode())
    names = [e["name"] for e in entries]
    dups = {n for n in names if names.count(n) > 1}
    if dups:
        raise SystemExit("duplicate command names: %s" % sorted(dups))
    for w in sorted(warnings):
        print("warning: " + w, file=sys.stderr)

    with open(args.output, "w") as f:
        f.write(render(version, entries))

    rustfmt = shutil.which("rustfmt")
    if rustfmt:
        subprocess.run([rustfmt, "--edition", "2021", args.output], check=True)
    else:
        print("warning: rustfmt not found; output left unformatted", file=sys.stderr)
    print(
        "wrote %s: %d entries from redis-server %s" % (args.output, len(entries), version),
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
