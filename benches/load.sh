#!/usr/bin/env bash
# End-to-end load comparison of slotbridge against Redis, with redis-benchmark.
#
#   benches/load.sh            full run: ROUNDS rounds (default 3), median
#   benches/load.sh --quick    smoke test: 1 round, few requests, every row
#
# Builds the proxy (release), starts in a temporary directory a 3-master
# Redis Cluster (no replicas), one standalone redis-server and the proxy, all
# on free ports of 127.0.0.1, and removes everything on exit (helpers in
# benches/lib.sh). The open-file limit is raised first (ulimit -n 65536, or
# the hard limit) for the 10000-client row; the proxy runs with
# limits.max_clients = MAX_CLIENTS (20000).
#
# Before measuring, the keys are written once (GET reads existing values):
# key:N with 100-byte values through the proxy, directly to the cluster and
# to the standalone server, and big:N with 16 KB values through the proxy
# and directly (N < KEYSPACE resp. BIG_KEYSPACE). The log shows for every
# run the share of keys read that existed (keyspace_hits/misses of the
# servers) and, except in --quick (which prefills less), warns below 90%.
#
# 1. Main table: proxy vs. direct, ROUNDS rounds. Workloads (-c CLIENTS, keys
#    key:__rand_int__ in random slots, 100-byte values unless stated):
#
#      SET, GET with -P 1 and -P 16     direct = redis-benchmark --cluster
#                                       --threads 1 to the 3 masters (one
#                                       client thread as for the proxy; with
#                                       a thread per node redis-benchmark
#                                       sees the end of a run only every
#                                       250 ms, which understates the rate)
#      MSET, MGET of 10 keys, -P 1/16   direct = the standalone redis-server
#                                       (the keys are in 10 different slots,
#                                       so the proxy splits and merges every
#                                       command)
#      SET, GET 16 KB, -P 1             keys big:__rand_int__ (direct:
#                                       big:{tag}:__rand_int__, --cluster)
#      GET -c 1 -P 1                    one client: the latency the proxy
#                                       adds (the +p50 column)
#
#    Within a round the proxy and the direct target alternate (the order
#    flips every round). Each run is sized from a calibration run so that
#    even the faster target runs for about TARGET_SECS seconds (with 1.5x
#    headroom, since short calibration runs underestimate the pipelined
#    rates). Every column is the median over the rounds:
#
#      direct rps, proxy rps   requests per second (redis-benchmark --csv)
#      ratio                   proxy rps / direct rps
#      p50/p99 d, p            latency percentiles in ms, direct / proxy
#                              (as measured by redis-benchmark: includes the
#                              client's own queueing)
#      +p50 us                 proxy p50 minus direct p50, in microseconds:
#                              the added latency (meaningful at -c 1)
#      proxy us/req            the proxy's CPU time (utime+stime from
#                              /proc/PID/stat, all threads) per request
#      backend us/req d, p     CPU time per request of the Redis servers
#                              behind the run: the 3 masters for the direct
#                              GET/SET runs and for every proxy run, the
#                              standalone server for the direct MSET/MGET
#                              runs. Proxy <= direct means the proxy's
#                              batching saves the servers work.
#
#    A request is one command (one MSET of 10 keys is one request). CPU
#    times have the kernel's clock-tick resolution (1/CLK_TCK s, usually
#    10 ms), so short --quick runs give coarse CPU figures.
#
# 2. Scaling table (proxy only, after the main table; SCALING=0 skips it):
#    proxy CPU per request as one dimension grows, the others at
#    -c CLIENTS -P 1 with 100-byte values:
#      clients    GET -c CLIENTS, 1000, 10000 (-c C needs ulimit -n >= C + 240;
#                 skipped with a note otherwise, and in --quick unless
#                 QUICK_FULL=1). At least 20 requests per client. The
#                 rate and latencies start after redis-benchmark has opened
#                 its connections; the proxy CPU includes accepting them.
#                 Opening 10000 connections takes about 10 s here.
#      pipeline   GET -P 1, 16, 128
#      MGET keys  10, 100, 1000 keys per MGET (us/key = us/req / keys)
#      value      SET then GET of 100 B, 16 KB and 1 MB values (1 MB: -n
#                 MB_REQUESTS, default 2000, keys key:0..HUGE_KEYSPACE-1,
#                 overwriting those 100-byte values; redis-benchmark's -d
#                 allows up to 1 GB)
#    Points shared with the main table (marked "*") show its medians; the
#    others are one run, sized by a probe run to about TARGET_SECS seconds.
#    Columns: rps, p50/p99 ms, proxy us/req, proxy us/key (MGET), backend
#    us/req (the 3 masters).
#
# Environment: ROUNDS (default 3), TARGET_SECS (2), CLIENTS (50: -c of all
# rows but GET -c 1 and the larger client counts), KEYSPACE (100000),
# BIG_KEYSPACE (5000), HUGE_KEYSPACE (100), MB_REQUESTS (2000), SCALING (1;
# 0 skips the scaling table), QUICK_FULL (0; 1 runs the 10000-client row in
# --quick), MAX_CLIENTS (20000), CARGO (cargo), NO_BUILD=1 (use the
# existing target/release/slotbridge as is). With the defaults a full run
# should take about 6-8 minutes on 2 cores (estimated from the rates of
# quick runs).
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
TARGET_SECS="${TARGET_SECS:-2}"
CLIENTS="${CLIENTS:-50}"
KEYSPACE="${KEYSPACE:-100000}"
BIG_KEYSPACE="${BIG_KEYSPACE:-5000}"
HUGE_KEYSPACE="${HUGE_KEYSPACE:-100}"
MB_REQUESTS="${MB_REQUESTS:-2000}"
SCALING="${SCALING:-1}"
QUICK_FULL="${QUICK_FULL:-0}"
if ((QUICK)); then
    ROUNDS=1
    MB_REQUESTS=100
fi
for v in ROUNDS CLIENTS KEYSPACE BIG_KEYSPACE HUGE_KEYSPACE MB_REQUESTS; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || {
        echo "load: $v must be a positive integer" >&2
        exit 2
    }
done
[[ "$TARGET_SECS" =~ ^[0-9]+(\.[0-9]+)?$ ]] || {
    echo "load: TARGET_SECS must be a number" >&2
    exit 2
}

BENCH_NAME=load
# shellcheck source=benches/lib.sh
source benches/lib.sh

require_tools redis-server redis-cli redis-benchmark
bench_setup
raise_nofile 65536

# --- start -------------------------------------------------------------------

build_proxy
start_cluster 3
start_single
start_proxy

# Sanity check through the proxy: a cross-slot MSET/MGET round trip.
probe_keys=()
for ((i = 0; i < 10; i++)); do probe_keys+=("load:probe:$i"); done
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

# --- workloads ---------------------------------------------------------------

# Values up to SMALL_MAX bytes use redis-benchmark's own SET/GET (-t, -d;
# keys key:N); up to BIG_MAX a command line with big:N keys (so that these
# values do not replace the 100-byte ones the other rows read); larger ones
# (only in the scaling table, which runs last) -t with -d again, since a
# command-line argument is limited to 128 KB.
SMALL_MAX=1024
BIG_MAX=65536
BIG_SIZE=16384
BIG_VALUE="$(head -c "$BIG_SIZE" /dev/zero | tr '\0' 'x')"
SMALL_VALUE="$(head -c 100 /dev/zero | tr '\0' 'x')"

# name -> "clients|pipeline|kind|value bytes|keys per command"
declare -A SPEC
# Main table: name|clients|pipeline|kind|bytes|keys|requests in --quick|probe requests
MAIN=(
    "SET -P 1|$CLIENTS|1|set|100|1|20000|30000"
    "SET -P 16|$CLIENTS|16|set|100|1|100000|300000"
    "GET -P 1|$CLIENTS|1|get|100|1|20000|30000"
    "GET -P 16|$CLIENTS|16|get|100|1|100000|300000"
    "MSET 10 keys -P 1|$CLIENTS|1|mset|100|10|5000|15000"
    "MSET 10 keys -P 16|$CLIENTS|16|mset|100|10|20000|60000"
    "MGET 10 keys -P 1|$CLIENTS|1|mget|100|10|5000|15000"
    "MGET 10 keys -P 16|$CLIENTS|16|mget|100|10|20000|60000"
    "SET 16KB -P 1|$CLIENTS|1|set|$BIG_SIZE|1|5000|20000"
    "GET 16KB -P 1|$CLIENTS|1|get|$BIG_SIZE|1|5000|20000"
    "GET -c 1 -P 1|1|1|get|100|1|2000|5000"
)
WORKLOADS=()
declare -A QUICK_N PROBE_N
for line in "${MAIN[@]}"; do
    IFS='|' read -r name c p kind bytes keys qn pn <<<"$line"
    WORKLOADS+=("$name")
    SPEC[$name]="$c|$p|$kind|$bytes|$keys"
    QUICK_N[$name]=$qn
    PROBE_N[$name]=$pn
done

# Sets CMD to the redis-benchmark command line for workload $1, target $2
# (proxy|direct), $3 requests.
build_cmd() {
    local name="$1" target="$2" n="$3" c p kind bytes keys i key
    IFS='|' read -r c p kind bytes keys <<<"${SPEC[$name]}"
    CMD=(redis-benchmark -c "$c" -P "$p" -n "$n" --csv)
    case "$target" in
    proxy) CMD+=(-h 127.0.0.1 -p "$PROXY_PORT") ;;
    direct)
        case "$kind" in
        mset | mget) CMD+=(-h 127.0.0.1 -p "$SINGLE_PORT") ;;
        # One client thread, like the proxy runs. --cluster alone starts a
        # thread per node, and its threads notice the end of a run only on a
        # 250 ms timer, which understates the direct rate of short runs.
        *) CMD+=(--cluster --threads 1 -h 127.0.0.1 -p "$CLUSTER_BASE") ;;
        esac
        ;;
    esac
    case "$kind" in
    set | get)
        if ((bytes > SMALL_MAX && bytes <= BIG_MAX)); then
            ((bytes == BIG_SIZE)) || die "$name: command-line values must be $BIG_SIZE bytes"
            # redis-benchmark --cluster replaces {tag} with a tag of the
            # client's node; through the proxy the slot comes from the key.
            key="big:__rand_int__"
            if [[ "$target" == direct ]]; then key="big:{tag}:__rand_int__"; fi
            CMD+=(-r "$BIG_KEYSPACE")
            if [[ "$kind" == set ]]; then CMD+=(SET "$key" "$BIG_VALUE"); else CMD+=(GET "$key"); fi
        elif ((bytes > BIG_MAX)); then
            CMD+=(-r "$HUGE_KEYSPACE" -d "$bytes" -t "$kind")
        else
            CMD+=(-r "$KEYSPACE" -d "$bytes" -t "$kind")
        fi
        ;;
    mset | mget)
        ((bytes == 100)) || die "$name: MSET values must be 100 bytes"
        CMD+=(-r "$KEYSPACE" "${kind^^}")
        for ((i = 0; i < keys; i++)); do
            if [[ "$kind" == mset ]]; then CMD+=("key:__rand_int__" "$SMALL_VALUE"); else CMD+=("key:__rand_int__"); fi
        done
        ;;
    *) die "unknown workload kind $kind" ;;
    esac
}

# "hits misses": keyspace_hits and keyspace_misses summed over the servers
# on the given ports.
keyspace_stats() {
    local port
    for port in "$@"; do
        # Informational only: a failure shows as "-" or a wrong share.
        redis-cli -p "$port" info stats 2>/dev/null | tr -d '\r' || true
    done | awk -F: '$1 == "keyspace_hits" { h += $2 } $1 == "keyspace_misses" { m += $2 }
        END { print h + 0, m + 0 }'
}

# Runs workload $1 against target $2 with $3 requests. Sets R_RPS, R_P50,
# R_P99 (ms), R_PROXY_US, R_BACKEND_US (CPU us/request), R_SECS and R_HITS
# (percentage of the keys read that existed, "-" for writes). Runs in the
# current shell so that die() ends the script.
run_bench() {
    local name="$1" target="$2" n="$3" kind out line start end p0 p1 b0 b1 h0 m0 h1 m1
    local -a backend ports
    build_cmd "$name" "$target" "$n"
    IFS='|' read -r _ _ kind _ _ <<<"${SPEC[$name]}"
    backend=("${CLUSTER_PIDS[@]}")
    ports=("${CLUSTER_PORTS[@]}")
    if [[ "$target" == direct && ("$kind" == mset || "$kind" == mget) ]]; then
        backend=("$SINGLE_PID")
        ports=("$SINGLE_PORT")
    fi
    kill -0 "$PROXY_PID" 2>/dev/null || die "the proxy exited"
    read -r h0 m0 < <(keyspace_stats "${ports[@]}")
    p0="$(cpu_ticks "$PROXY_PID")"
    b0="$(cpu_ticks "${backend[@]}")"
    start="$(date +%s%N)"
    out="$("${CMD[@]}" 2>&1)" || die "redis-benchmark failed ($name, $target): ${out:0:2000}"
    end="$(date +%s%N)"
    kill -0 "$PROXY_PID" 2>/dev/null || die "the proxy exited during $name"
    p1="$(cpu_ticks "$PROXY_PID")"
    b1="$(cpu_ticks "${backend[@]}")"
    read -r h1 m1 < <(keyspace_stats "${ports[@]}")
    R_HITS="$(awk -v h="$((h1 - h0))" -v m="$((m1 - m0))" \
        'BEGIN { if (h + m > 0) printf "%.1f", 100 * h / (h + m); else print "-" }')"
    out="$(printf '%s\n' "$out" | tr '\r' '\n')"
    # Anything but the CSV lines (errors, warnings) is suspect.
    if grep -v '^"' <<<"$out" | grep -qi 'error'; then
        die "redis-benchmark reported errors ($name, $target): $(grep -v '^"' <<<"$out" | grep -i -m 3 'error')"
    fi
    # "test","rps","avg","min","p50","p95","p99","max": counted from the end,
    # since the test name (the command line) may contain commas.
    line="$(grep '^"' <<<"$out" | grep -v '^"test"' | tail -n 1 |
        awk -F, 'NF >= 8 { r = $(NF - 6); p50 = $(NF - 3); p99 = $(NF - 1)
            gsub(/"/, "", r); gsub(/"/, "", p50); gsub(/"/, "", p99); print r, p50, p99 }')"
    read -r R_RPS R_P50 R_P99 <<<"$line"
    [[ "${R_RPS:-}" =~ ^[0-9.]+$ && "${R_P50:-}" =~ ^[0-9.]+$ && "${R_P99:-}" =~ ^[0-9.]+$ ]] ||
        die "no CSV result in redis-benchmark output ($name, $target): ${out:0:2000}"
    read -r R_PROXY_US R_BACKEND_US R_SECS < <(awk -v p="$((p1 - p0))" -v b="$((b1 - b0))" \
        -v hz="$CLK_TCK" -v n="$n" -v s="$start" -v e="$end" \
        'BEGIN { printf "%.3f %.3f %.2f\n", p / hz * 1e6 / n, b / hz * 1e6 / n, (e - s) / 1e9 }')
}

# Writes the keys the GET/MGET workloads read (see the header).
prefill() {
    local f=3 out
    if ((QUICK)); then f=1; fi
    local -a runs=(
        "proxy key:N|-h 127.0.0.1 -p $PROXY_PORT -r $KEYSPACE -n $((f * KEYSPACE)) -t set -d 100"
        "cluster key:{tag}:N|--cluster -h 127.0.0.1 -p $CLUSTER_BASE -r $KEYSPACE -n $((3 * f * KEYSPACE)) -t set -d 100"
        "standalone key:N|-h 127.0.0.1 -p $SINGLE_PORT -r $KEYSPACE -n $((f * KEYSPACE)) -t set -d 100"
    )
    local what args
    local -a cmd
    for r in "${runs[@]}"; do
        IFS='|' read -r what args <<<"$r"
        log "prefill: $what"
        # shellcheck disable=SC2206 # deliberate word splitting of the arguments
        cmd=(redis-benchmark -c 50 -P 64 -q $args)
        out="$("${cmd[@]}" 2>&1)" || die "prefill ($what) failed: $out"
    done
    # 16 KB values (each --cluster client writes only its own node's tag,
    # hence three times the requests for the same coverage).
    log "prefill: big:N through the proxy and big:{tag}:N in the cluster"
    out="$(redis-benchmark -c 50 -P 16 -q -h 127.0.0.1 -p "$PROXY_PORT" -r "$BIG_KEYSPACE" \
        -n $((f * BIG_KEYSPACE)) SET "big:__rand_int__" "$BIG_VALUE" 2>&1)" || die "prefill (big) failed: $out"
    out="$(redis-benchmark -c 50 -P 16 -q --cluster -h 127.0.0.1 -p "$CLUSTER_BASE" -r "$BIG_KEYSPACE" \
        -n $((3 * f * BIG_KEYSPACE)) SET "big:{tag}:__rand_int__" "$BIG_VALUE" 2>&1)" || die "prefill (big, cluster) failed: $out"
}

# Requests for about TARGET_SECS at rate $1 (times $2 headroom), in
# thousands, at least $3.
size_run() {
    awk -v r="$1" -v h="$2" -v t="$TARGET_SECS" -v min="$3" \
        'BEGIN { n = int(h * r * t / 1000 + 1) * 1000; if (n < min) n = min; print n }'
}

# Columns of RESULTS: name target requests rps p50 p99 proxy_us backend_us secs
RESULTS="$WORK_DIR/results"
: >"$RESULTS"
record() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" \
        "$R_RPS" "$R_P50" "$R_P99" "$R_PROXY_US" "$R_BACKEND_US" "$R_SECS" >>"$RESULTS"
}

# Median of column $3 (4 = rps ... 9 = secs) of workload $1, target $2.
med() {
    awk -F'\t' -v w="$1" -v t="$2" -v c="$3" '$1 == w && $2 == t { print $c }' "$RESULTS" | median
}

# --- main table --------------------------------------------------------------

prefill

declare -A REQUESTS
for w in "${WORKLOADS[@]}"; do
    if ((QUICK)); then
        REQUESTS[$w]=${QUICK_N[$w]}
        continue
    fi
    run_bench "$w" proxy "${PROBE_N[$w]}"
    rps_p=$R_RPS
    run_bench "$w" direct "${PROBE_N[$w]}"
    rps_d=$R_RPS
    max_rps="$(awk -v a="$rps_p" -v b="$rps_d" 'BEGIN { print (a > b) ? a : b }')"
    REQUESTS[$w]="$(size_run "$max_rps" 1.5 1000)"
    log "calibrated $w: proxy $rps_p rps, direct $rps_d rps -> -n ${REQUESTS[$w]}"
done

for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then order=(proxy direct); else order=(direct proxy); fi
    for w in "${WORKLOADS[@]}"; do
        n="${REQUESTS[$w]}"
        for target in "${order[@]}"; do
            run_bench "$w" "$target" "$n"
            log "round $round/$ROUNDS  $w  $target: $R_RPS rps, p50 $R_P50 ms, p99 $R_P99 ms in ${R_SECS}s (-n $n), CPU us/req proxy $R_PROXY_US backend $R_BACKEND_US, hits $R_HITS%"
            if ((!QUICK)) && awk -v s="$R_SECS" -v t="$TARGET_SECS" 'BEGIN { exit !(s < t) }'; then
                log "warning: run shorter than TARGET_SECS ($TARGET_SECS s)"
            fi
            if ((!QUICK)) && [[ "$R_HITS" != - ]] && awk -v h="$R_HITS" 'BEGIN { exit !(h < 90) }'; then
                log "warning: only $R_HITS% of the keys read by $w ($target) exist: GET/MGET read missing keys"
            fi
            record "$w" "$target" "$n"
        done
    done
done

# --- main report -------------------------------------------------------------

main_fmt='%-18s | %10s | %10s | %5s | %7s | %7s | %7s | %7s | %7s | %8s | %9s | %9s\n'
echo
echo "slotbridge load test: $ROUNDS round(s), median shown; -c $CLIENTS and 100-byte values unless stated, -r $KEYSPACE (16 KB: -r $BIG_KEYSPACE)"
echo "direct = redis-benchmark --cluster --threads 1 to the 3-master cluster (GET/SET), one standalone redis-server (MSET/MGET)"
echo "latency in ms (d = direct, p = proxy); +p50 = proxy p50 - direct p50 in us; CPU in us per request"
echo "backend = CPU of the Redis servers: the 3 masters (proxy runs, direct GET/SET), the standalone server (direct MSET/MGET)"
# shellcheck disable=SC2059 # the format is a variable on purpose
printf "$main_fmt" "workload" "direct rps" "proxy rps" "ratio" "p50 d" "p50 p" "+p50 us" "p99 d" "p99 p" \
    "proxy" "backend d" "backend p"
# shellcheck disable=SC2059
printf "$main_fmt" "------------------" "----------" "----------" "-----" "-------" "-------" "-------" "-------" "-------" \
    "--------" "---------" "---------"
for w in "${WORKLOADS[@]}"; do
    d="$(med "$w" direct 4)"
    p="$(med "$w" proxy 4)"
    d50="$(med "$w" direct 5)"
    p50="$(med "$w" proxy 5)"
    d99="$(med "$w" direct 6)"
    p99="$(med "$w" proxy 6)"
    cpu="$(med "$w" proxy 7)"
    bd="$(med "$w" direct 8)"
    bp="$(med "$w" proxy 8)"
    # shellcheck disable=SC2059
    awk -v fmt="$main_fmt" -v w="$w" -v d="$d" -v p="$p" -v d50="$d50" -v p50="$p50" \
        -v d99="$d99" -v p99="$p99" -v cpu="$cpu" -v bd="$bd" -v bp="$bp" 'BEGIN {
        printf fmt, w, sprintf("%.0f", d), sprintf("%.0f", p), sprintf("%.2f", (d > 0) ? p / d : 0),
            sprintf("%.3f", d50), sprintf("%.3f", p50), sprintf("%+.0f", (p50 - d50) * 1000),
            sprintf("%.3f", d99), sprintf("%.3f", p99),
            sprintf("%.2f", cpu), sprintf("%.2f", bd), sprintf("%.2f", bp) }'
done
lat="GET -c 1 -P 1"
awk -v d="$(med "$lat" direct 5)" -v p="$(med "$lat" proxy 5)" \
    -v d99="$(med "$lat" direct 6)" -v p99="$(med "$lat" proxy 6)" 'BEGIN {
    printf "added latency (GET -c 1 -P 1): p50 %+.0f us (%.0f -> %.0f us), p99 %+.0f us\n",
        (p - d) * 1000, d * 1000, p * 1000, (p99 - d99) * 1000 }'

# --- scaling table -----------------------------------------------------------

if [[ "$SCALING" != 0 ]]; then
    # group|point|clients|pipeline|kind|bytes|keys|main table row|quick n|probe n
    # (a negative probe n: that many requests, no probe)
    SCALE=(
        "clients|GET -c $CLIENTS|$CLIENTS|1|get|100|1|GET -P 1||"
        "clients|GET -c 1000|1000|1|get|100|1||5000|20000"
        "clients|GET -c 10000|10000|1|get|100|1||50000|200000"
        "pipeline|GET -P 1|$CLIENTS|1|get|100|1|GET -P 1||"
        "pipeline|GET -P 16|$CLIENTS|16|get|100|1|GET -P 16||"
        "pipeline|GET -P 128|$CLIENTS|128|get|100|1||100000|1000000"
        "MGET keys|MGET 10 keys|$CLIENTS|1|mget|100|10|MGET 10 keys -P 1||"
        "MGET keys|MGET 100 keys|$CLIENTS|1|mget|100|100||1000|5000"
        "MGET keys|MGET 1000 keys|$CLIENTS|1|mget|100|1000||100|500"
        "value|SET 100 B|$CLIENTS|1|set|100|1|SET -P 1||"
        "value|GET 100 B|$CLIENTS|1|get|100|1|GET -P 1||"
        "value|SET 16 KB|$CLIENTS|1|set|$BIG_SIZE|1|SET 16KB -P 1||"
        "value|GET 16 KB|$CLIENTS|1|get|$BIG_SIZE|1|GET 16KB -P 1||"
        "value|SET 1 MB|$CLIENTS|1|set|1048576|1||$MB_REQUESTS|-$MB_REQUESTS"
        "value|GET 1 MB|$CLIENTS|1|get|1048576|1||$MB_REQUESTS|-$MB_REQUESTS"
    )
    scale_fmt='%-9s | %-14s | %1s | %8s | %10s | %7s | %7s | %8s | %8s | %9s\n'
    # One formatted row: group point mark requests rps p50 p99 proxy_us keys backend_us
    scale_row() {
        awk -v fmt="$scale_fmt" -v g="$1" -v pt="$2" -v m="$3" -v n="$4" -v r="$5" -v p50="$6" \
            -v p99="$7" -v cpu="$8" -v k="$9" -v b="${10}" 'BEGIN {
            printf fmt, g, pt, m, n, sprintf("%.0f", r), sprintf("%.3f", p50), sprintf("%.3f", p99),
                sprintf("%.2f", cpu), (k > 1) ? sprintf("%.3f", cpu / k) : "-", sprintf("%.2f", b) }' >>"$SCALE_OUT"
    }
    SCALE_OUT="$WORK_DIR/scaling"
    : >"$SCALE_OUT"
    notes=()
    for line in "${SCALE[@]}"; do
        IFS='|' read -r group point c p kind bytes keys from qn pn <<<"$line"
        if [[ -n "$from" ]]; then
            scale_row "$group" "$point" "*" "${REQUESTS[$from]}" "$(med "$from" proxy 4)" \
                "$(med "$from" proxy 5)" "$(med "$from" proxy 6)" "$(med "$from" proxy 7)" \
                "$keys" "$(med "$from" proxy 8)"
            continue
        fi
        name="scale: $point"
        SPEC[$name]="$c|$p|$kind|$bytes|$keys"
        if ((c >= 10000 && QUICK && QUICK_FULL != 1)); then
            notes+=("$point skipped in --quick (QUICK_FULL=1 runs it)")
            continue
        fi
        if ((NOFILE < c + 240)); then
            notes+=("$point skipped: open files limited to $NOFILE (ulimit -n), $((c + 240)) needed")
            continue
        fi
        if ((QUICK)); then
            n=$qn
            run_bench "$name" proxy "$n"
        elif ((pn < 0)); then
            n=$((-pn))
            run_bench "$name" proxy "$n"
        else
            # The probe run counts when it ran long enough.
            n=$pn
            run_bench "$name" proxy "$n"
            if awk -v s="$R_SECS" -v t="$TARGET_SECS" 'BEGIN { exit !(s < 0.75 * t) }'; then
                n="$(size_run "$R_RPS" 1 $((20 * c)))"
                log "scaling: probe of $point at $R_RPS rps -> -n $n"
                run_bench "$name" proxy "$n"
            fi
        fi
        log "scaling: $point: $R_RPS rps, p50 $R_P50 ms, p99 $R_P99 ms in ${R_SECS}s (-n $n), CPU us/req proxy $R_PROXY_US backend $R_BACKEND_US, hits $R_HITS%"
        scale_row "$group" "$point" "" "$n" "$R_RPS" "$R_P50" "$R_P99" "$R_PROXY_US" "$keys" "$R_BACKEND_US"
    done

    echo
    echo "scaling (proxy only; others at -c $CLIENTS -P 1, 100-byte values; * = median of the main table, else one run)"
    echo "latency in ms; CPU in us per request (us/key: per key of the MGET); backend = the 3 masters"
    # shellcheck disable=SC2059
    printf "$scale_fmt" "dimension" "point" "" "requests" "proxy rps" "p50" "p99" "proxy" "us/key" "backend"
    # shellcheck disable=SC2059
    printf "$scale_fmt" "---------" "--------------" "-" "--------" "----------" "-------" "-------" "--------" "--------" "---------"
    cat "$SCALE_OUT"
    for note in "${notes[@]+"${notes[@]}"}"; do
        echo "note: $note"
    done
fi

echo
# Right after the last run (1 MB values) the proxy still holds that run's
# buffers; closed sessions hand memory back within a second.
rss_now="$(($(rss_kib "$PROXY_PID") / 1024))"
sleep 2
echo "proxy memory at the end: VmRSS $rss_now MiB right after the last run, $(($(rss_kib "$PROXY_PID") / 1024)) MiB 2 s later, peak VmHWM $(($(rss_kib "$PROXY_PID" VmHWM) / 1024)) MiB"
