#!/usr/bin/env bash
# Cost of co-location rules: GET/SET and a 5-key EVAL through the proxy
# without rules and with a rule, on the same 3-master cluster, in one run.
# Without rules the keys carry the hash tag themselves ({q}bull:q:N), so
# both proxies store the same layout; with the rule the client sends
# bull:q:N and the proxy adds the tag (and wraps the script).
#
#   bash benches/colocate.sh            (NO_BUILD=1 to skip cargo build)
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-200000}
if [[ "${NO_BUILD:-0}" != 1 ]]; then cargo build --release >&2; fi
BIN=target/release/slotbridge
DIR=$(mktemp -d /tmp/slotbridge-colocate-bench.XXXXXX)
BASE=${BASE_PORT:-24100}
cleanup() {
    [[ -n "${P1:-}" ]] && kill "$P1" 2>/dev/null || true
    [[ -n "${P2:-}" ]] && kill "$P2" 2>/dev/null || true
    bash scripts/local-cluster.sh stop "$DIR/cluster" >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap cleanup EXIT
SEEDS=$(bash scripts/local-cluster.sh start "$DIR/cluster" "$BASE" 3 0 | tail -1)
printf '[[colocate]]\nname = "bullmq"\nprefix = "bull:"\ngroup_segment = 1\n' > "$DIR/rules.toml"
PORT1=$((BASE + 50)); PORT2=$((BASE + 51))
"$BIN" --listen "127.0.0.1:$PORT1" --seeds "$SEEDS" 2>/dev/null & P1=$!
"$BIN" --config "$DIR/rules.toml" --listen "127.0.0.1:$PORT2" --seeds "$SEEDS" 2>/dev/null & P2=$!
for p in $PORT1 $PORT2; do
    for _ in $(seq 100); do redis-cli -p "$p" dbsize >/dev/null 2>&1 && break; sleep 0.1; done
done
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)
SCRIPT="for i, k in ipairs(KEYS) do redis.call('INCR', k) end return #KEYS"
run() { # label pid port args...
    local label=$1 pid=$2 port=$3; shift 3
    local c0 c1 out rps
    c0=$(cpu "$pid")
    out=$(redis-benchmark -p "$port" -c 50 -n "$N" -q "$@" 2>/dev/null | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1)
    c1=$(cpu "$pid")
    rps=${out%% *}
    awk -v l="$label" -v r="$rps" -v a="$c0" -v b="$c1" -v t="$TICK" -v n="$N" \
        'BEGIN { printf "%-28s %12s rps  %8.2f us CPU/req\n", l, r, (b - a) * 1000000 / t / n }'
}
echo "workload                        throughput   proxy CPU"
run "SET, no rules"            "$P1" "$PORT1" -r 100000 set '{q}bull:q:__rand_int__' x
run "SET, rule"                "$P2" "$PORT2" -r 100000 set 'bull:q:__rand_int__' x
run "GET, no rules"            "$P1" "$PORT1" -r 100000 get '{q}bull:q:__rand_int__'
run "GET, rule"                "$P2" "$PORT2" -r 100000 get 'bull:q:__rand_int__'
run "EVAL 5 keys, no rules"    "$P1" "$PORT1" eval "$SCRIPT" 5 '{q}bull:q:1' '{q}bull:q:2' '{q}bull:q:3' '{q}bull:q:4' '{q}bull:q:5'
run "EVAL 5 keys, rule"        "$P2" "$PORT2" eval "$SCRIPT" 5 bull:q:1 bull:q:2 bull:q:3 bull:q:4 bull:q:5
