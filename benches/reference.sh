#!/usr/bin/env bash
# Side-by-side with a reference proxy measured in the same run, so that the
# CPU targets of issue #10 (stated for another machine) can be checked on
# this one: twemproxy (Debian's `nutcracker`, installed with apt if missing
# and allowed) in front of 3 standalone Redis servers, slotbridge in front of
# a 3-master cluster, and one standalone Redis served directly, whose own
# CPU per request is the cost of the client-side reads and writes that any
# proxy pays too.
#
#   bash benches/reference.sh                # about 3 minutes
#   ROUNDS=5 NO_BUILD=1 bash benches/reference.sh
#
# Each workload runs ROUNDS (3) times per target, in alternating order, with
# -c 50 (but -c 1 for latency), 100-byte values and -r 100000; the medians
# are printed. CPU is utime + stime of the proxy process (of the Redis
# server for "redis"), per request. The last column converts #10's target
# into this machine's terms: target / twemproxy's figure in #10's table x
# twemproxy's CPU measured here.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=reference
# shellcheck source=benches/lib.sh
source benches/lib.sh
ROUNDS="${ROUNDS:-3}"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"

if ! command -v nutcracker >/dev/null 2>&1; then
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing twemproxy (Debian package nutcracker)"
        apt-get update >/dev/null || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y nutcracker >/dev/null ||
            die "apt-get install nutcracker failed"
    else
        die "twemproxy is missing: install the nutcracker package (apt-get install nutcracker)"
    fi
fi
require_tools redis-server redis-cli redis-benchmark nutcracker
bench_setup
TW_PIDS=()
reference_cleanup() {
    local status=$? pid
    for pid in "${TW_PIDS[@]+"${TW_PIDS[@]}"}"; do stop_pid "$pid"; done
    # bench_cleanup exits with the status it finds in $?: run it right
    # after a command failing with that status (in a || list, which set -e
    # allows).
    (exit "$status") || bench_cleanup
    bench_cleanup
}
trap reference_cleanup EXIT

build_proxy
start_cluster 3
start_single
start_proxy

# twemproxy: three standalone servers, keys spread by crc16 modulo 3.
TW_BASE="$(free_ports 5)"
reserve_ports "$TW_BASE" 5
TW_PORT=$((TW_BASE + 3))
TW_STATS_PORT=$((TW_BASE + 4))
mkdir -p "$WORK_DIR/tw"
{
    printf 'reference:\n  listen: 127.0.0.1:%s\n  hash: crc16\n  distribution: modula\n' "$TW_PORT"
    printf '  redis: true\n  auto_eject_hosts: false\n  server_connections: 1\n  servers:\n'
    for ((i = 0; i < 3; i++)); do printf '   - 127.0.0.1:%s:1\n' $((TW_BASE + i)); done
} >"$WORK_DIR/tw/nutcracker.yml"
for ((i = 0; i < 3; i++)); do
    redis-server --port $((TW_BASE + i)) --bind 127.0.0.1 --protected-mode no --save '' \
        --appendonly no --dir "$WORK_DIR/tw" --logfile "$WORK_DIR/tw/redis-$i.log" &
    TW_PIDS+=($!)
    wait_for_pong $((TW_BASE + i)) $!
done
nutcracker -c "$WORK_DIR/tw/nutcracker.yml" -s "$TW_STATS_PORT" -o "$WORK_DIR/tw/nutcracker.log" &
TW_PID=$!
TW_PIDS+=("$TW_PID")
wait_for_pong "$TW_PORT" "$TW_PID"
log "twemproxy $(nutcracker --version 2>&1 | head -1 | awk '{ print $NF }') on port $TW_PORT"

for port in "$PROXY_PORT" "$TW_PORT" "$SINGLE_PORT"; do
    redis-benchmark -p "$port" -c 50 -P 64 -q -r 100000 -n 300000 -t set -d 100 >/dev/null 2>&1 ||
        die "prefill through port $port failed"
done

# name|clients|pipeline|requests|redis-benchmark arguments|#10 target|twemproxy in #10
MGET10="MGET$(printf ' key:__rand_int__%.0s' {1..10})"
WORKLOADS=(
    "GET -P 1|50|1|200000|-t get|4|8.6"
    "GET -P 16|50|16|1500000|-t get|0.7|3.78"
    "SET -P 16|50|16|1500000|-t set|0.7|2.72"
    "MGET 10 keys -P 1|50|1|100000|$MGET10|8|18.2"
    "GET -c 1 (latency)|1|1|20000|-t get|-|-"
)

RESULTS="$WORK_DIR/results"
: >"$RESULTS"
# Runs workload fields $2.. against $1 (sb|tw|redis); appends
# "name target rps p50 cpu_us" to RESULTS.
run_one() {
    local target="$1" name="$2" c="$3" p="$4" n="$5" args="$6" port pid out line t0 t1
    case "$target" in
    sb) port=$PROXY_PORT pid=$PROXY_PID ;;
    tw) port=$TW_PORT pid=$TW_PID ;;
    redis) port=$SINGLE_PORT pid=$SINGLE_PID ;;
    esac
    t0="$(cpu_ticks "$pid")"
    # shellcheck disable=SC2086 # deliberate word splitting of the arguments
    out="$(redis-benchmark -p "$port" -c "$c" -P "$p" -n "$n" -r 100000 -d 100 --csv $args 2>&1)" ||
        die "redis-benchmark failed ($name, $target): ${out:0:500}"
    t1="$(cpu_ticks "$pid")"
    line="$(tr '\r' '\n' <<<"$out" | { grep '^"' || true; } | { grep -v '^"test"' || true; } | tail -n 1 |
        awk -F, '{ r = $(NF - 6); p50 = $(NF - 3); gsub(/"/, "", r); gsub(/"/, "", p50); print r, p50 }')"
    [[ "$line" =~ ^[0-9.]+\ [0-9.]+$ ]] || die "no result from redis-benchmark ($name, $target): ${out:0:500}"
    awk -v n="$name" -v t="$target" -v l="$line" -v d="$((t1 - t0))" -v hz="$CLK_TCK" -v req="$n" \
        'BEGIN { split(l, a, " "); printf "%s\t%s\t%s\t%s\t%.3f\n", n, t, a[1], a[2], d / hz * 1e6 / req }' >>"$RESULTS"
}

for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then order=(sb tw redis); else order=(redis tw sb); fi
    for w in "${WORKLOADS[@]}"; do
        IFS='|' read -r name c p n args _ _ <<<"$w"
        for target in "${order[@]}"; do run_one "$target" "$name" "$c" "$p" "$n" "$args"; done
        log "round $round/$ROUNDS: $name"
    done
done

med() { # workload, target, column (3 rps, 4 p50 ms, 5 cpu us)
    awk -F'\t' -v w="$1" -v t="$2" -v c="$3" '$1 == w && $2 == t { print $c }' "$RESULTS" | median
}
fmt='%-19s | %9s | %9s | %9s | %10s | %10s | %10s | %9s | %12s\n'
echo
echo "slotbridge vs twemproxy $(nutcracker --version 2>&1 | head -1 | awk '{ print $NF }') vs one Redis, same run: $ROUNDS round(s), medians; -c 50 unless stated, 100-byte values"
echo "sb = slotbridge (3-master cluster); tw = twemproxy (3 standalone servers); redis = one standalone server, direct"
echo "CPU = process utime+stime per request in us (for redis: the server's own); sb/tw = ratio of CPU"
echo "#10 here = #10's target scaled to this machine: target / twemproxy in #10's table x tw measured here"
# shellcheck disable=SC2059 # the format is a variable on purpose
printf "$fmt" workload "sb rps" "tw rps" "redis rps" "sb CPU" "tw CPU" "redis CPU" "sb/tw" "#10 here"
# shellcheck disable=SC2059
printf "$fmt" "-------------------" --------- --------- --------- ---------- ---------- ---------- --------- ------------
for w in "${WORKLOADS[@]}"; do
    IFS='|' read -r name _ _ _ _ target ref <<<"$w"
    sb="$(med "$name" sb 5)"
    tw="$(med "$name" tw 5)"
    awk -v fmt="$fmt" -v w="$name" -v sr="$(med "$name" sb 3)" -v tr="$(med "$name" tw 3)" \
        -v rr="$(med "$name" redis 3)" -v sb="$sb" -v tw="$tw" -v rc="$(med "$name" redis 5)" \
        -v target="$target" -v ref="$ref" 'BEGIN {
        here = (target == "-") ? "-" : sprintf("<= %.2f", target / ref * tw)
        printf fmt, w, sprintf("%.0f", sr), sprintf("%.0f", tr), sprintf("%.0f", rr),
            sprintf("%.2f", sb), sprintf("%.2f", tw), sprintf("%.2f", rc),
            sprintf("%.2f", (tw > 0) ? sb / tw : 0), here }'
done
echo
echo "added p50 latency at one client (GET -c 1), us over one Redis: sb $(awk -v a="$(med 'GET -c 1 (latency)' sb 4)" -v b="$(med 'GET -c 1 (latency)' redis 4)" 'BEGIN { printf "%+.0f", (a - b) * 1000 }'), tw $(awk -v a="$(med 'GET -c 1 (latency)' tw 4)" -v b="$(med 'GET -c 1 (latency)' redis 4)" 'BEGIN { printf "%+.0f", (a - b) * 1000 }')"
