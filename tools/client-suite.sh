#!/usr/bin/env bash
# Runs redis-py's own test suite against one single Redis and against
# slotbridge in front of a local 3-master cluster, and prints the failures
# that only the proxy has, grouped by cause. Not part of `make test`: it
# downloads redis-py's source from PyPI and takes about 5 minutes.
#
#   tools/client-suite.sh                 # RESP2
#   PROTOCOL=3 tools/client-suite.sh      # RESP3
#   REDIS_PY=5.2.1 NO_BUILD=1 tools/client-suite.sh
#   REDIS_PY=8.2.0 tools/client-suite.sh   # the newest suite
#   KEEP_LOGS=/tmp/suite tools/client-suite.sh   # keep both pytest logs
#
# Needs python3 with pip (installs redis, pytest, pytest-asyncio and
# pytest-timeout for the current user). Everything else runs on free
# loopback ports in a temporary directory, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=client-suite
# shellcheck source=../benches/lib.sh
source benches/lib.sh
REDIS_PY="${REDIS_PY:-5.2.1}"
PROTOCOL="${PROTOCOL:-2}"

require_tools redis-server redis-cli python3
bench_setup
[[ "${NO_BUILD:-}" == 1 ]] || build_proxy
start_cluster 3
start_single
start_proxy

log "fetching redis-py $REDIS_PY's source and test tools"
# redis-py 6 and later need a newer pytest-asyncio than 5.x works with.
ASYNCIO_PIN="pytest-asyncio==0.23.8"
[[ "${REDIS_PY%%.*}" -ge 6 ]] && ASYNCIO_PIN="pytest-asyncio>=0.24"
python3 -m pip install -q --user "redis==$REDIS_PY" pytest "$ASYNCIO_PIN" pytest-timeout packaging
python3 -m pip download -q --no-deps --no-binary :all: "redis==$REDIS_PY" -d "$WORK_DIR"
tar xzf "$WORK_DIR/redis-$REDIS_PY.tar.gz" -C "$WORK_DIR"
SRC="$WORK_DIR/redis-$REDIS_PY"

SUITES=(test_commands test_pipeline test_pubsub test_scripting test_lock test_function
    test_hash test_encoding test_connection test_connection_pool test_helpers test_retry
    test_asyncio/test_commands test_asyncio/test_pipeline test_asyncio/test_pubsub
    test_asyncio/test_scripting test_asyncio/test_lock test_asyncio/test_monitor
    test_asyncio/test_encoding test_asyncio/test_connection test_asyncio/test_connection_pool
    test_asyncio/test_hash test_asyncio/test_retry)
FILES=()
for s in "${SUITES[@]}"; do FILES+=("tests/$s.py"); done

run_suite() { # $1: label, $2: port
    log "running the suite against $1 (port $2, RESP$PROTOCOL)"
    (cd "$SRC" && python3 -m pytest -o asyncio_mode=auto -p no:cacheprovider -p no:warnings -q \
        --timeout 30 --protocol="$PROTOCOL" --redis-url="redis://127.0.0.1:$2" \
        -m "not onlycluster and not redismod and not ssl" -rfE --tb=line "${FILES[@]}" \
        >"$WORK_DIR/$1.txt" 2>&1) || true
    grep -E '(passed|failed).* in ' "$WORK_DIR/$1.txt" | tail -1 | sed "s/^/$1: /"
}

run_suite direct "$SINGLE_PORT"
run_suite slotbridge "$PROXY_PORT"

if [[ -n "${KEEP_LOGS:-}" ]]; then
    mkdir -p "$KEEP_LOGS" && cp "$WORK_DIR/direct.txt" "$WORK_DIR/slotbridge.txt" "$KEEP_LOGS/"
fi

failed() { grep -E '^(FAILED|ERROR) ' "$WORK_DIR/$1.txt" | sed 's/ - .*//' | sort -u; }
ONLY="$(comm -13 <(failed direct) <(failed slotbridge) | wc -l)"
echo "failing only through slotbridge: $ONLY tests; their errors by cause:"
grep -E '^/' "$WORK_DIR/slotbridge.txt" | awk '
    /CROSSSLOT|CrossSlot/ { c["keys of one command or transaction in several slots (CROSSSLOT)"]++; next }
    /unsupported command/ { c["unsupported admin commands (DEBUG, LATENCY DOCTOR, ...)"]++; next }
    /option of SORT denied/ { c["SORT BY/GET, refused by Redis Cluster itself"]++; next }
    /only database 0/ { c["SELECT of another database"]++; next }
    /Error 111/ { c["the test dials a fixed port (6379, 6380)"]++; next }
    { sub(/^.*redis-[0-9.]+\//, ""); c["other: " substr($0, 1, 100)]++ }
    END { for (k in c) printf "  %4d  %s\n", c[k], k }' | sort -rn
