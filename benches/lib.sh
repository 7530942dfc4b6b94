# shellcheck shell=bash
# Helpers shared by benches/load.sh and benches/memory.sh. Sourced, not run:
#
#   BENCH_NAME=load                  # log prefix and temporary directory name
#   source benches/lib.sh            # from the repository root
#   bench_setup                      # WORK_DIR, cleanup trap
#   raise_nofile 65536               # before starting anything (inherited)
#   build_proxy; start_cluster; start_single; start_proxy
#
# Everything started here runs on free ports of 127.0.0.1 in a temporary
# directory (WORK_DIR) and is stopped and removed on exit, also on errors and
# Ctrl-C. Environment: CARGO (cargo), NO_BUILD=1 (use the existing
# target/release/slotbridge as is), MAX_CLIENTS (the proxy's
# limits.max_clients, default 20000: above the 10000 connections of the
# scaling and memory runs; the built-in default is 10000).

# Clock ticks per second, the unit of cpu_ticks.
# shellcheck disable=SC2034 # used by the scripts that source this file
CLK_TCK="$(getconf CLK_TCK)"
CARGO="${CARGO:-cargo}"
MAX_CLIENTS="${MAX_CLIENTS:-20000}"
PROXY_BIN="${PROXY_BIN:-target/release/slotbridge}"

WORK_DIR=""
CLUSTER_DIR=""
CLUSTER_BASE=""
CLUSTER_PORTS=()
CLUSTER_PIDS=()
SEEDS=""
SINGLE_PORT=""
SINGLE_PID=""
PROXY_PORT=""
PROXY_PID=""
# Ports this run listens on (bus ports included), so that the next pick
# stays clear of them.
RESERVED_PORTS=()

log() {
    echo "${BENCH_NAME:-bench}: $*" >&2
}

die() {
    log "error: $*"
    exit 1
}

require_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "$tool not found (run scripts/ensure-redis.sh)"
    done
    [[ -f scripts/local-cluster.sh ]] || die "scripts/local-cluster.sh is missing"
}

# --- processes and cleanup ---------------------------------------------------

stop_pid() {
    local pid="$1"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}

bench_cleanup() {
    local status=$?
    stop_pid "$PROXY_PID"
    stop_pid "$SINGLE_PID"
    if [[ -n "$CLUSTER_DIR" && -d "$CLUSTER_DIR" ]]; then
        bash scripts/local-cluster.sh stop "$CLUSTER_DIR" 2>/dev/null || true
    fi
    if ((status != 0)) && [[ -f "$WORK_DIR/proxy.log" ]]; then
        log "last lines of the proxy log:"
        tail -n 20 "$WORK_DIR/proxy.log" >&2 || true
    fi
    if [[ -n "$WORK_DIR" ]]; then
        rm -rf -- "$WORK_DIR"
    fi
    exit "$status"
}

bench_setup() {
    WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/slotbridge-${BENCH_NAME:-bench}.XXXXXX")"
    CLUSTER_DIR="$WORK_DIR/cluster"
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# Raises the open-file limit of this shell (inherited by everything started
# afterwards: redis-benchmark, the proxy, python) to $1, or failing that to
# the hard limit. Sets NOFILE to the resulting soft limit.
raise_nofile() {
    local want="$1" hard
    if ! ulimit -n "$want" 2>/dev/null; then
        hard="$(ulimit -Hn)"
        if [[ "$hard" == unlimited ]]; then hard="$want"; fi
        if ((hard > $(ulimit -n))); then
            ulimit -n "$hard" 2>/dev/null || true
        fi
    fi
    NOFILE="$(ulimit -n)"
    if [[ "$NOFILE" == unlimited ]]; then NOFILE="$want"; fi
    if ((NOFILE < want)); then
        log "ulimit -n $want not allowed (hard limit $(ulimit -Hn)); open files limited to $NOFILE"
    fi
}

# --- ports -------------------------------------------------------------------

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

port_reserved() {
    local p
    for p in "${RESERVED_PORTS[@]+"${RESERVED_PORTS[@]}"}"; do
        if (($1 == p)); then return 0; fi
    done
    return 1
}

# A base port P such that P..P+$1-1 and their cluster bus ports (+10000) are
# free and not reserved by this run. Ports are taken below the ephemeral
# range (where outgoing connections could take them between the check and
# the bind) when there is room.
free_ports() {
    local count="$1" base p ok eph_low=32768 eph_high=60999 lo hi
    if [[ -r /proc/sys/net/ipv4/ip_local_port_range ]]; then
        read -r eph_low eph_high </proc/sys/net/ipv4/ip_local_port_range
    fi
    lo=10000
    hi=$((eph_low - 10000 - count))
    if ((hi - lo < 1000)); then
        lo=$((eph_high + 1))
        hi=$((65535 - 10000 - count))
    fi
    if ((hi - lo < 1000)); then
        lo=20000
        hi=40000
    fi
    for _ in $(seq 1 100); do
        base=$((lo + (RANDOM * 32768 + RANDOM) % (hi - lo)))
        ok=1
        for ((p = base; p < base + count; p++)); do
            if port_reserved "$p" || port_reserved "$((p + 10000))" ||
                port_in_use "$p" || port_in_use "$((p + 10000))"; then
                ok=0
                break
            fi
        done
        if ((ok)); then
            echo "$base"
            return 0
        fi
    done
    die "no free ports found"
}

reserve_ports() {
    local base="$1" count="$2" p
    for ((p = base; p < base + count; p++)); do
        RESERVED_PORTS+=("$p" "$((p + 10000))")
    done
}

wait_for_pong() {
    local port="$1" pid="$2" deadline=$((SECONDS + 30))
    until [[ "$(redis-cli -p "$port" ping 2>/dev/null)" == "PONG" ]]; do
        kill -0 "$pid" 2>/dev/null || die "process $pid (port $port) exited"
        ((SECONDS < deadline)) || die "nothing answers PING on port $port"
        sleep 0.1
    done
}

# --- build and start ---------------------------------------------------------

build_proxy() {
    if [[ "${NO_BUILD:-0}" == 1 ]]; then
        log "NO_BUILD=1: using the existing $PROXY_BIN"
    else
        log "building the proxy (release)"
        "$CARGO" build --release >&2
    fi
    [[ -x "$PROXY_BIN" ]] || die "$PROXY_BIN was not built"
}

# A cluster of $1 (default 3) masters without replicas. Sets CLUSTER_BASE,
# CLUSTER_PORTS, CLUSTER_PIDS (from the nodes' pid files) and SEEDS.
start_cluster() {
    local masters="${1:-3}" port pid
    CLUSTER_BASE="$(free_ports "$masters")"
    reserve_ports "$CLUSTER_BASE" "$masters"
    log "starting a $masters-master cluster on ports $CLUSTER_BASE-$((CLUSTER_BASE + masters - 1))"
    SEEDS="$(bash scripts/local-cluster.sh start "$CLUSTER_DIR" "$CLUSTER_BASE" "$masters" 0)"
    CLUSTER_PORTS=()
    CLUSTER_PIDS=()
    for ((port = CLUSTER_BASE; port < CLUSTER_BASE + masters; port++)); do
        pid="$(cat "$CLUSTER_DIR/$port/redis.pid" 2>/dev/null || true)"
        if ! [[ "$pid" =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null; then
            # Fall back to what the node reports about itself.
            pid="$(redis-cli -p "$port" info server | tr -d '\r' | awk -F: '$1 == "process_id" { print $2 }')"
        fi
        if ! [[ "$pid" =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null; then
            die "no pid for the node on port $port"
        fi
        CLUSTER_PORTS+=("$port")
        CLUSTER_PIDS+=("$pid")
    done
}

# One standalone redis-server. Sets SINGLE_PORT and SINGLE_PID.
start_single() {
    SINGLE_PORT="$(free_ports 1)"
    reserve_ports "$SINGLE_PORT" 1
    log "starting a standalone redis-server on port $SINGLE_PORT"
    mkdir -p "$WORK_DIR/single"
    redis-server --port "$SINGLE_PORT" --bind 127.0.0.1 --protected-mode no \
        --save '' --appendonly no --dir "$WORK_DIR/single" \
        --logfile "$WORK_DIR/single/redis.log" &
    SINGLE_PID=$!
    wait_for_pong "$SINGLE_PORT" "$SINGLE_PID"
}

# The proxy in front of the cluster (SEEDS), with limits.max_clients =
# MAX_CLIENTS from a config file in WORK_DIR. Sets PROXY_PORT and PROXY_PID.
start_proxy() {
    PROXY_PORT="$(free_ports 1)"
    reserve_ports "$PROXY_PORT" 1
    printf '[limits]\nmax_clients = %s\n' "$MAX_CLIENTS" >"$WORK_DIR/proxy.toml"
    log "starting slotbridge on 127.0.0.1:$PROXY_PORT (seeds $SEEDS, max_clients $MAX_CLIENTS, open files $(ulimit -n))"
    "$PROXY_BIN" --config "$WORK_DIR/proxy.toml" --listen "127.0.0.1:$PROXY_PORT" \
        --seeds "$SEEDS" 2>"$WORK_DIR/proxy.log" &
    PROXY_PID=$!
    wait_for_pong "$PROXY_PORT" "$PROXY_PID"
}

# --- measurements ------------------------------------------------------------

# Sum of utime + stime of the given processes, in clock ticks (fields 14 and
# 15 of /proc/PID/stat; the command name in field 2 is cut off first in case
# it contains spaces).
cpu_ticks() {
    local pid total=0 t
    for pid in "$@"; do
        t="$(sed 's/^.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }')" ||
            die "process $pid is gone"
        total=$((total + t))
    done
    echo "$total"
}

# Resident set size of process $1 in KiB (VmRSS), or of field $2 (VmHWM...).
rss_kib() {
    awk -v f="${2:-VmRSS}:" '$1 == f { print $2; found = 1 } END { exit !found }' "/proc/$1/status" ||
        die "no ${2:-VmRSS} for process $1"
}

# Median of the numbers on stdin ("nan" when there are none).
median() {
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
