#!/usr/bin/env bash
# Memory of idle client connections: the proxy's resident set size (VmRSS
# from /proc/PID/status) as N clients connect, each sends one command, and
# all of them leave.
#
#   benches/memory.sh               N=10000 connections
#   N=1000 benches/memory.sh        fewer (quick check)
#
# Builds the proxy (release), starts in a temporary directory a 3-master
# Redis Cluster (no replicas) and the proxy on free ports of 127.0.0.1, and
# removes everything on exit (helpers in benches/lib.sh). The open-file
# limit is raised first (ulimit -n 65536, or the hard limit; the proxy and
# the client inherit it) and must allow N plus a margin; the proxy runs with
# limits.max_clients = MAX_CLIENTS (default max(20000, 2N); the built-in
# default, 10000, would refuse the last connections).
#
# A Python 3 client (embedded below) sets the key "somekey" through the
# proxy and then measures, once the proxy reports the expected
# connected_clients (INFO clients) and SETTLE_SECS (1) have passed:
#
#   start              the proxy before the N connections (after start-up
#                      and the SET)
#   N idle             N connections open, nothing sent
#   after one GET each every connection sent GET somekey and read the reply;
#                      the connections stay open
#   after close        all closed, plus CLOSE_WAIT_SECS (2)
#
# Columns: RSS in MiB; growth over start in MiB; KiB per connection (growth
# / N); the target for N=10000 (scaled by N/10000 for the growth targets)
# and whether it is met: growth <= 8 MiB with N idle connections, growth
# <= 40 MiB after one command each, and RSS <= 2x start after close.
#
# Environment: N (10000), SETTLE_SECS (1), CLOSE_WAIT_SECS (2), MAX_CLIENTS,
# CARGO (cargo), NO_BUILD=1 (use the existing target/release/slotbridge).
set -euo pipefail
cd "$(dirname "$0")/.."

for arg in "$@"; do
    case "$arg" in
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "usage: [N=10000] $0" >&2
        exit 2
        ;;
    esac
done

N="${N:-10000}"
SETTLE_SECS="${SETTLE_SECS:-1}"
CLOSE_WAIT_SECS="${CLOSE_WAIT_SECS:-2}"
[[ "$N" =~ ^[1-9][0-9]*$ ]] || {
    echo "memory: N must be a positive integer" >&2
    exit 2
}
for v in SETTLE_SECS CLOSE_WAIT_SECS; do
    [[ "${!v}" =~ ^[0-9]+(\.[0-9]+)?$ ]] || {
        echo "memory: $v must be a number of seconds" >&2
        exit 2
    }
done
if [[ -z "${MAX_CLIENTS:-}" ]]; then
    MAX_CLIENTS=$((2 * N > 20000 ? 2 * N : 20000))
fi

BENCH_NAME=memory
# shellcheck source=benches/lib.sh
source benches/lib.sh

require_tools redis-server redis-cli python3
bench_setup
# The client's sockets plus stdio, and the proxy's clients plus its backend
# connections, listener and runtime.
NEED_FILES=$((N + 256))
raise_nofile $((NEED_FILES > 65536 ? NEED_FILES : 65536))
((NOFILE >= NEED_FILES)) ||
    die "N=$N needs ulimit -n >= $NEED_FILES, but only $NOFILE is allowed (hard limit $(ulimit -Hn)); lower N"

build_proxy
start_cluster 3
start_proxy

deadline=$((SECONDS + 30))
until [[ "$(redis-cli -p "$PROXY_PORT" set somekey somevalue 2>/dev/null)" == "OK" ]]; do
    kill -0 "$PROXY_PID" 2>/dev/null || die "the proxy exited"
    ((SECONDS < deadline)) || die "SET through the proxy does not succeed"
    sleep 0.2
done
log "proxy answers; opening $N connections"

# Prints "phase rss_kib" lines: start, idle, get, closed.
RESULTS="$WORK_DIR/memory"
python3 - "$PROXY_PORT" "$PROXY_PID" "$N" "$SETTLE_SECS" "$CLOSE_WAIT_SECS" >"$RESULTS" <<'PY' ||
import resource
import socket
import sys
import time

port, pid, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
settle, close_wait = float(sys.argv[4]), float(sys.argv[5])
HOST = "127.0.0.1"
REQUEST = b"*2\r\n$3\r\nGET\r\n$7\r\nsomekey\r\n"
REPLY = b"$9\r\nsomevalue\r\n"


def fail(msg):
    print("memory: error: " + msg, file=sys.stderr)
    sys.exit(1)


soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = n + 64
if soft < want:
    if hard != resource.RLIM_INFINITY and hard < want:
        fail(f"{n} connections need {want} open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def rss_kib():
    """VmRSS, RssAnon and RssFile (mapped files: mostly the binary's code,
    shared with the page cache) in KiB."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile"):
                fields[key] = int(line.split()[1])
    if "VmRSS" not in fields:
        fail("no VmRSS for the proxy")
    return f'{fields["VmRSS"]} {fields.get("RssAnon", -1)} {fields.get("RssFile", -1)}'


def command(*args):
    """One command on a fresh connection; returns the raw reply (a status,
    error, integer or bulk string)."""
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(b"".join([f"*{len(args)}\r\n".encode()] +
                           [f"${len(a)}\r\n{a}\r\n".encode() for a in args]))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk
            head, sep, rest = data.partition(b"\r\n")
            if not sep:
                continue
            if head[:1] != b"$" or int(head[1:]) < 0 or len(rest) >= int(head[1:]) + 2:
                return data


def connected_clients():
    """connected_clients from INFO clients (this connection included)."""
    for line in command("INFO", "clients").decode(errors="replace").split("\r\n"):
        if line.startswith("connected_clients:"):
            return int(line.split(":")[1])
    return -1


def wait_clients(expected, timeout=30.0):
    """Waits until the proxy counts `expected` clients besides the probe."""
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        seen = connected_clients() - 1
        if seen == expected:
            return
        time.sleep(0.1)
    print(f"memory: warning: the proxy reports {seen} clients, expected {expected}",
          file=sys.stderr)


def phase(name):
    time.sleep(settle)
    print(name, rss_kib(), flush=True)


wait_clients(0)
phase("start")

t0 = time.monotonic()
socks = []
for i in range(n):
    try:
        socks.append(socket.create_connection((HOST, port), timeout=30))
    except OSError as e:
        fail(f"connection {i + 1} of {n} failed: {e}")
wait_clients(n)
print(f"memory: {n} connections open in {time.monotonic() - t0:.1f} s", file=sys.stderr)
phase("idle")

t0 = time.monotonic()
for s in socks:
    s.sendall(REQUEST)
for i, s in enumerate(socks):
    data = b""
    while len(data) < len(REPLY):
        chunk = s.recv(len(REPLY) - len(data))
        if not chunk:
            break
        data += chunk
    if data != REPLY:
        fail(f"connection {i + 1}: GET somekey returned {data!r}, expected {REPLY!r}")
print(f"memory: {n} GETs answered in {time.monotonic() - t0:.1f} s", file=sys.stderr)
phase("get")

for s in socks:
    s.close()
socks = []
wait_clients(0)
time.sleep(close_wait)
phase("closed")
PY
    die "the client failed"

kib() { # phase, column (2 VmRSS, 3 RssAnon, 4 RssFile)
    awk -v p="$1" -v c="${2:-2}" '$1 == p { print $c; found = 1 } END { exit !found }' "$RESULTS" ||
        die "no '$1' measurement"
}
start="$(kib start)"
idle="$(kib idle)"
get="$(kib get)"
closed="$(kib closed)"
kill -0 "$PROXY_PID" 2>/dev/null || die "the proxy exited"

fmt='%-22s | %8s | %10s | %8s | %-22s | %s\n'
echo
echo "slotbridge idle-client memory: N=$N connections, proxy VmRSS (targets for N=10000; growth targets scaled by N/10000)"
# shellcheck disable=SC2059 # the format is a variable on purpose
printf "$fmt" "phase" "RSS MiB" "growth MiB" "KiB/conn" "target" "met"
# shellcheck disable=SC2059
printf "$fmt" "----------------------" "--------" "----------" "--------" "----------------------" "---"
awk -v fmt="$fmt" -v n="$N" -v s="$start" -v i="$idle" -v g="$get" -v c="$closed" 'BEGIN {
    scale = n / 10000
    printf fmt, "start", sprintf("%.1f", s / 1024), "-", "-", "-", "-"
    row("idle", n " idle connections", i, 8 * scale)
    row("get", "after one GET each", g, 40 * scale)
    printf fmt, "after close", sprintf("%.1f", c / 1024), sprintf("%+.1f", (c - s) / 1024), "-",
        sprintf("RSS <= %.1f MiB (2x)", 2 * s / 1024), (c <= 2 * s) ? "yes" : "NO"
}
function row(key, label, v, target_mib) {
    printf fmt, label, sprintf("%.1f", v / 1024), sprintf("%+.1f", (v - s) / 1024),
        sprintf("%.2f", (v - s) / n), sprintf("growth <= %.1f MiB", target_mib),
        ((v - s) / 1024 <= target_mib) ? "yes" : "NO"
}'
echo "of which anonymous memory / mapped files (RssAnon / RssFile, MiB):" \
    "start $(kib start 3 | awk '{ printf "%.1f", $1 / 1024 }') / $(kib start 4 | awk '{ printf "%.1f", $1 / 1024 }')," \
    "idle $(kib idle 3 | awk '{ printf "%.1f", $1 / 1024 }') / $(kib idle 4 | awk '{ printf "%.1f", $1 / 1024 }')," \
    "after one GET each $(kib get 3 | awk '{ printf "%.1f", $1 / 1024 }') / $(kib get 4 | awk '{ printf "%.1f", $1 / 1024 }')," \
    "after close $(kib closed 3 | awk '{ printf "%.1f", $1 / 1024 }') / $(kib closed 4 | awk '{ printf "%.1f", $1 / 1024 }')"
echo "proxy peak RSS (VmHWM): $(($(rss_kib "$PROXY_PID" VmHWM) / 1024)) MiB"
