#!/usr/bin/env bash
# `make run`: build slotbridge (release), start a local 3-master/3-replica
# Redis Cluster on BASE_PORT.. (default 7000) in a temporary directory, and run
# the proxy in the foreground on LISTEN (default 127.0.0.1:6380). The cluster
# is stopped and its directory removed when the proxy exits or on Ctrl-C.
# Extra arguments are passed to slotbridge.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_PORT="${BASE_PORT:-7000}"
LISTEN="${LISTEN:-127.0.0.1:6380}"
MASTERS="${MASTERS:-3}"
REPLICAS="${REPLICAS:-1}"

bash scripts/ensure-redis.sh
cargo build --release

cluster_dir="$(mktemp -d "${TMPDIR:-/tmp}/slotbridge-cluster.XXXXXX")"
cleanup() {
    bash scripts/local-cluster.sh stop "$cluster_dir" || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

seeds="$(bash scripts/local-cluster.sh start "$cluster_dir" "$BASE_PORT" "$MASTERS" "$REPLICAS")"
echo "run-local: cluster seeds: $seeds" >&2
echo "run-local: slotbridge listening on $LISTEN (Ctrl-C to stop; try: redis-cli -p ${LISTEN##*:})" >&2
target/release/slotbridge --listen "$LISTEN" --seeds "$seeds" "$@"
