#!/usr/bin/env bash
# End-to-end load comparison of slotbridge against Redis, with redis-benchmark.
#
#   benches/load.sh            full run: ROUNDS rounds (default 3), median
#   benches/load.sh --quick    smoke test: 1 round, few requests
#
# Builds the proxy (release), starts in a temporary directory a 3-master
# Redis Cluster (no replicas), one standalone redis-server and the proxy, all
# on free ports of 127.0.0.1, and removes everything on exit. Workloads
# (100-byte values, 50 clients):
#
#   GET/SET with -P 1 and -P 16   proxy vs. direct to the cluster
#                                 (redis-benchmark --cluster)
#   MSET/MGET of 10 random keys   proxy vs. one standalone redis-server
#                                 (the keys are in 10 different slots, so
#                                 the proxy splits and merges every command)
#
# Within a round the proxy and the direct target alternate (the order flips
# every round). Each run is sized from a calibration run so that even the
# faster target runs for about TARGET_SECS seconds (with 1.5x headroom, since
# short calibration runs underestimate the pipelined rates). The proxy's CPU per request comes from utime+stime of its
# process (/proc/PID/stat) before and after each proxy run.
#
# Environment: ROUNDS (default 3), TARGET_SECS (default 2.5), CLIENTS (50),
# KEYSPACE (100000), CARGO (cargo), NO_BUILD=1 (use the existing
# target/release/slotbridge as is).
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
for arg in "$@"; do
    case "$arg" in
    --quick) QUICK=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "usage: $0 [--quick]" >&2
        exit 2
        ;;
    esac
done

ROUNDS="${ROUNDS:-3}"
TARGET_SECS="${TARGET_SECS:-2.5}"
CLIENTS="${CLIENTS:-50}"
KEYSPACE="${KEYSPACE:-100000}"
CARGO="${CARGO:-cargo}"
VALUE_SIZE=100
MULTI_KEYS=10
if ((QUICK)); then
    ROUNDS=1
fi
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || {
    echo "load: ROUNDS must be a positive integer" >&2
    exit 2
}

log() {
    echo "load: $*" >&2
}

die() {
    log "error: $*"
    exit 1
}

for tool in redis-server redis-cli redis-benchmark; do
    command -v "$tool" >/dev/null || die "$tool not found (run scripts/ensure-redis.sh)"
done
[[ -x scripts/local-cluster.sh || -f scripts/local-cluster.sh ]] || die "scripts/local-cluster.sh is missing"

CLK_TCK="$(getconf CLK_TCK)"

# --- processes and cleanup ---------------------------------------------------

WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/slotbridge-load.XXXXXX")"
CLUSTER_DIR="$WORK_DIR/cluster"
PROXY_PID=""
SINGLE_PID=""

cleanup() {
    local status=$?
    if [[ -n "$PROXY_PID" ]] && kill -0 "$PROXY_PID" 2>/dev/null; then
        kill "$PROXY_PID" 2>/dev/null || true
        wait "$PROXY_PID" 2>/dev/null || true
    fi
    if [[ -n "$SINGLE_PID" ]] && kill -0 "$SINGLE_PID" 2>/dev/null; then
        kill "$SINGLE_PID" 2>/dev/null || true
        wait "$SINGLE_PID" 2>/dev/null || true
    fi
    if [[ -d "$CLUSTER_DIR" ]]; then
        bash scripts/local-cluster.sh stop "$CLUSTER_DIR" 2>/dev/null || true
    fi
    if ((status != 0)) && [[ -f "$WORK_DIR/proxy.log" ]]; then
        log "last lines of the proxy log:"
        tail -n 20 "$WORK_DIR/proxy.log" >&2 || true
    fi
    rm -rf -- "$WORK_DIR"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A base port P such that P..P+$1-1 and their cluster bus ports (+10000) are
# free. Ports are taken below the ephemeral range (where outgoing connections
# could take them between the check and the bind) when there is room.
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
            if port_in_use "$p" || port_in_use "$((p + 10000))"; then
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

wait_for_pong() {
    local port="$1" pid="$2" deadline=$((SECONDS + 30))
    until [[ "$(redis-cli -p "$port" ping 2>/dev/null)" == "PONG" ]]; do
        kill -0 "$pid" 2>/dev/null || die "process $pid (port $port) exited"
        ((SECONDS < deadline)) || die "nothing answers PING on port $port"
        sleep 0.1
    done
}

# --- build and start ---------------------------------------------------------

if [[ "${NO_BUILD:-0}" == 1 ]]; then
    log "NO_BUILD=1: using the existing target/release/slotbridge"
else
    log "building the proxy (release)"
    "$CARGO" build --release >&2
fi
PROXY_BIN="target/release/slotbridge"
[[ -x "$PROXY_BIN" ]] || die "$PROXY_BIN was not built"

CLUSTER_BASE="$(free_ports 3)"
log "starting a 3-master cluster on ports $CLUSTER_BASE-$((CLUSTER_BASE + 2))"
SEEDS="$(bash scripts/local-cluster.sh start "$CLUSTER_DIR" "$CLUSTER_BASE" 3 0)"

# Ports for the standalone server and the proxy: pick them apart from the cluster's.
SINGLE_PORT="$(free_ports 1)"
while ((SINGLE_PORT >= CLUSTER_BASE - 1 && SINGLE_PORT <= CLUSTER_BASE + 3)); do
    SINGLE_PORT="$(free_ports 1)"
done
log "starting a standalone redis-server on port $SINGLE_PORT"
mkdir -p "$WORK_DIR/single"
redis-server --port "$SINGLE_PORT" --bind 127.0.0.1 --protected-mode no \
    --save '' --appendonly no --dir "$WORK_DIR/single" \
    --logfile "$WORK_DIR/single/redis.log" &
SINGLE_PID=$!
wait_for_pong "$SINGLE_PORT" "$SINGLE_PID"

PROXY_PORT="$(free_ports 1)"
while ((PROXY_PORT == SINGLE_PORT || (PROXY_PORT >= CLUSTER_BASE - 1 && PROXY_PORT <= CLUSTER_BASE + 3))); do
    PROXY_PORT="$(free_ports 1)"
done
log "starting slotbridge on 127.0.0.1:$PROXY_PORT (seeds $SEEDS)"
"$PROXY_BIN" --listen "127.0.0.1:$PROXY_PORT" --seeds "$SEEDS" 2>"$WORK_DIR/proxy.log" &
PROXY_PID=$!
wait_for_pong "$PROXY_PORT" "$PROXY_PID"

# Sanity check through the proxy: a cross-slot MSET/MGET round trip.
probe_keys=()
for ((i = 0; i < MULTI_KEYS; i++)); do probe_keys+=("load:probe:$i"); done
mset_args=()
for k in "${probe_keys[@]}"; do mset_args+=("$k" "v-$k"); done
deadline=$((SECONDS + 30))
until [[ "$(redis-cli -p "$PROXY_PORT" mset "${mset_args[@]}" 2>/dev/null)" == "OK" ]]; do
    kill -0 "$PROXY_PID" 2>/dev/null || die "the proxy exited"
    ((SECONDS < deadline)) || die "MSET through the proxy does not succeed"
    sleep 0.2
done
got="$(redis-cli -p "$PROXY_PORT" mget "${probe_keys[@]}" | paste -sd' ' -)"
want="$(printf 'v-%s\n' "${probe_keys[@]}" | paste -sd' ' -)"
[[ "$got" == "$want" ]] || die "MGET through the proxy returned '$got', expected '$want'"
log "proxy answers correctly"

# --- measurement -------------------------------------------------------------

VALUE="$(head -c "$VALUE_SIZE" /dev/zero | tr '\0' 'x')"
MSET_CMD=(MSET)
MGET_CMD=(MGET)
for ((i = 0; i < MULTI_KEYS; i++)); do
    MSET_CMD+=("key:__rand_int__" "$VALUE")
    MGET_CMD+=("key:__rand_int__")
done

# Workload definitions: name | redis-benchmark arguments after the target.
WORKLOADS=("SET -P 1" "SET -P 16" "GET -P 1" "GET -P 16" "MSET 10 keys" "MGET 10 keys")

# Arguments selecting the workload.
workload_args() {
    case "$1" in
    "SET -P 1") echo "-t set -P 1" ;;
    "SET -P 16") echo "-t set -P 16" ;;
    "GET -P 1") echo "-t get -P 1" ;;
    "GET -P 16") echo "-t get -P 16" ;;
    "MSET 10 keys") echo "MSET" ;;
    "MGET 10 keys") echo "MGET" ;;
    esac
}

# Runs one benchmark; prints "rps cpu_ticks seconds" (cpu_ticks: proxy only).
# Usage: run_bench WORKLOAD TARGET(proxy|direct) REQUESTS
run_bench() {
    local workload="$1" target="$2" n="$3"
    local -a cmd=(redis-benchmark -c "$CLIENTS" -n "$n" -r "$KEYSPACE" -d "$VALUE_SIZE" -q)
    local spec
    spec="$(workload_args "$workload")"
    case "$target" in
    proxy) cmd+=(-h 127.0.0.1 -p "$PROXY_PORT") ;;
    direct)
        if [[ "$spec" == MSET || "$spec" == MGET ]]; then
            cmd+=(-h 127.0.0.1 -p "$SINGLE_PORT")
        else
            cmd+=(--cluster -h 127.0.0.1 -p "$CLUSTER_BASE")
        fi
        ;;
    esac
    case "$spec" in
    MSET) cmd+=("${MSET_CMD[@]}") ;;
    MGET) cmd+=("${MGET_CMD[@]}") ;;
    *)
        # shellcheck disable=SC2206 # deliberate word splitting of "-t get -P 1"
        cmd+=($spec)
        ;;
    esac

    local before=0 after=0 start end out
    if [[ "$target" == proxy ]]; then
        kill -0 "$PROXY_PID" 2>/dev/null || die "the proxy exited"
        before="$(proxy_cpu_ticks)"
    fi
    start="$(date +%s%N)"
    out="$("${cmd[@]}" 2>&1)" || die "redis-benchmark failed ($workload, $target): $out"
    end="$(date +%s%N)"
    if [[ "$target" == proxy ]]; then
        kill -0 "$PROXY_PID" 2>/dev/null || die "the proxy exited during $workload"
        after="$(proxy_cpu_ticks)"
    fi
    out="$(printf '%s\n' "$out" | tr '\r' '\n')"
    if grep -qi 'error' <<<"$out"; then
        die "redis-benchmark reported errors ($workload, $target): $(grep -i -m 3 'error' <<<"$out")"
    fi
    local rps
    rps="$(grep 'requests per second' <<<"$out" | tail -n 1 |
        grep -oE '[0-9]+(\.[0-9]+)? requests per second' | awk '{print $1}')"
    [[ -n "$rps" ]] || die "no 'requests per second' in redis-benchmark output ($workload, $target): $out"
    awk -v r="$rps" -v c="$((after - before))" -v s="$start" -v e="$end" \
        'BEGIN { printf "%s %d %.2f\n", r, c, (e - s) / 1e9 }'
}

# utime + stime of the proxy, in clock ticks (fields 14 and 15 of stat; the
# command name in field 2 is cut off first in case it contains spaces).
proxy_cpu_ticks() {
    sed 's/^.*) //' "/proc/$PROXY_PID/stat" | awk '{ print $12 + $13 }'
}

median() {
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Request counts: fixed for --quick, otherwise sized from a calibration run
# so that the faster of the two targets runs for at least TARGET_SECS.
declare -A REQUESTS
for w in "${WORKLOADS[@]}"; do
    case "$w" in
    *"-P 16") quick=100000 probe=400000 ;;
    M*) quick=5000 probe=30000 ;;
    *) quick=20000 probe=60000 ;;
    esac
    if ((QUICK)); then
        REQUESTS[$w]=$quick
        continue
    fi
    read -r rps_p _ _ < <(run_bench "$w" proxy "$probe")
    read -r rps_d _ _ < <(run_bench "$w" direct "$probe")
    REQUESTS[$w]="$(awk -v a="$rps_p" -v b="$rps_d" -v t="$TARGET_SECS" \
        'BEGIN { m = (a > b) ? a : b; n = int(1.5 * m * t / 10000 + 1) * 10000; print n }')"
    log "calibrated $w: proxy $rps_p rps, direct $rps_d rps -> -n ${REQUESTS[$w]}"
done

RESULTS="$WORK_DIR/results"
: >"$RESULTS"
for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then order=(proxy direct); else order=(direct proxy); fi
    for w in "${WORKLOADS[@]}"; do
        n="${REQUESTS[$w]}"
        for target in "${order[@]}"; do
            read -r rps ticks secs < <(run_bench "$w" "$target" "$n")
            cpu_us="$(awk -v t="$ticks" -v hz="$CLK_TCK" -v n="$n" \
                'BEGIN { printf "%.2f", t / hz * 1e6 / n }')"
            if [[ "$target" == direct ]]; then cpu_us="-"; fi
            log "round $round/$ROUNDS  $w  $target: $rps rps in ${secs}s (-n $n)$([[ $cpu_us != - ]] && echo ", proxy CPU $cpu_us us/req")"
            if ((!QUICK)) && awk -v s="$secs" 'BEGIN { exit !(s < 2) }'; then
                log "warning: run shorter than 2 s; raise TARGET_SECS"
            fi
            printf '%s\t%s\t%s\t%s\n' "$w" "$target" "$rps" "$cpu_us" >>"$RESULTS"
        done
    done
done

# --- report ------------------------------------------------------------------

echo
echo "slotbridge load test: $ROUNDS round(s), median shown; -c $CLIENTS, ${VALUE_SIZE}-byte values, -r $KEYSPACE"
echo "direct = redis-benchmark --cluster to the 3-master cluster (GET/SET), one standalone redis-server (MSET/MGET)"
printf '%-14s | %12s | %12s | %6s | %17s\n' "workload" "direct rps" "proxy rps" "ratio" "proxy CPU us/req"
printf '%-14s-+-%12s-+-%12s-+-%6s-+-%17s\n' "--------------" "------------" "------------" "------" "-----------------"
for w in "${WORKLOADS[@]}"; do
    d="$(awk -F'\t' -v w="$w" '$1 == w && $2 == "direct" { print $3 }' "$RESULTS" | median)"
    p="$(awk -F'\t' -v w="$w" '$1 == w && $2 == "proxy" { print $3 }' "$RESULTS" | median)"
    c="$(awk -F'\t' -v w="$w" '$1 == w && $2 == "proxy" { print $4 }' "$RESULTS" | median)"
    ratio="$(awk -v p="$p" -v d="$d" 'BEGIN { printf "%.2f", (d > 0) ? p / d : 0 }')"
    printf '%-14s | %12.0f | %12.0f | %6s | %17.2f\n' "$w" "$d" "$p" "$ratio" "$c"
done
