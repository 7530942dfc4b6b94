#!/usr/bin/env bash
# Start or stop a local Redis Cluster of daemonized redis-server processes.
#
#   scripts/local-cluster.sh start DIR BASEPORT MASTERS REPLICAS
#       Starts MASTERS*(1+REPLICAS) nodes on 127.0.0.1:BASEPORT.. (cluster bus
#       on port+10000), data/logs/pidfiles under DIR (created; must be empty),
#       creates the cluster with `redis-cli --cluster create`, waits for
#       cluster_state:ok on every node, and prints the masters' seed list
#       ("127.0.0.1:p1,127.0.0.1:p2,...") on stdout. Progress goes to stderr.
#       MASTERS must be at least 3 (redis-cli's minimum).
#   scripts/local-cluster.sh stop DIR
#       Stops the nodes started in DIR (by pidfile) and removes DIR.
set -euo pipefail

readonly MARKER=".slotbridge-local-cluster"
readonly TIMEOUT_SECS=30

usage() {
    echo "usage: $0 start DIR BASEPORT MASTERS REPLICAS" >&2
    echo "       $0 stop DIR" >&2
    exit 2
}

log() {
    echo "local-cluster: $*" >&2
}

die() {
    log "error: $*"
    exit 1
}

is_uint() {
    [[ "$1" =~ ^[0-9]+$ ]]
}

# True if something accepts TCP connections on 127.0.0.1:$1.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# True if pid $1 is a running (not zombie) redis-server.
is_redis_pid() {
    local info
    info="$(ps -o stat=,comm= -p "$1" 2>/dev/null || true)"
    [[ "$info" =~ ^[[:space:]]*[^Z[:space:]][^[:space:]]*[[:space:]]+redis-server ]]
}

# Set while `start` runs so that a failed start stops what it started.
STARTING_DIR=""

on_exit() {
    local status=$?
    if [[ -n "$STARTING_DIR" ]]; then
        log "start failed; stopping the nodes started so far"
        cmd_stop "$STARTING_DIR" || true
    fi
    exit "$status"
}
trap on_exit EXIT

cmd_start() {
    [[ $# -eq 4 ]] || usage
    local dir="$1" base="$2" masters="$3" replicas="$4"
    if ! { is_uint "$base" && is_uint "$masters" && is_uint "$replicas"; }; then
        usage
    fi
    ((masters >= 3)) || die "MASTERS must be >= 3 (redis-cli --cluster create requires it)"
    local total=$((masters * (1 + replicas)))
    local last=$((base + total - 1))
    ((base >= 1024 && last + 10000 <= 65535)) || die "ports $base..$last (+10000 for the bus) out of range"
    command -v redis-server >/dev/null || die "redis-server not found (run scripts/ensure-redis.sh)"
    command -v redis-cli >/dev/null || die "redis-cli not found (run scripts/ensure-redis.sh)"

    mkdir -p "$dir"
    if [[ -n "$(ls -A "$dir")" ]]; then
        die "$dir is not empty"
    fi
    dir="$(cd "$dir" && pwd)"
    touch "$dir/$MARKER"
    STARTING_DIR="$dir"

    local port
    for ((port = base; port <= last; port++)); do
        if port_in_use "$port" || port_in_use "$((port + 10000))"; then
            die "port $port or its bus port $((port + 10000)) is already in use (choose another BASEPORT)"
        fi
    done

    local addrs=()
    for ((port = base; port <= last; port++)); do
        local node="$dir/$port"
        mkdir -p "$node"
        cat >"$node/redis.conf" <<EOF
port $port
bind 127.0.0.1
protected-mode no
daemonize yes
pidfile "$node/redis.pid"
dir "$node"
logfile "$node/redis.log"
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout 5000
appendonly no
save ""
EOF
        redis-server "$node/redis.conf" >/dev/null
        addrs+=("127.0.0.1:$port")
    done
    log "started $total redis-server processes on ports $base-$last in $dir"

    local deadline=$((SECONDS + TIMEOUT_SECS))
    for ((port = base; port <= last; port++)); do
        until [[ "$(redis-cli -p "$port" ping 2>/dev/null)" == "PONG" ]]; do
            if ((SECONDS >= deadline)); then
                tail -n 20 "$dir/$port/redis.log" >&2 || true
                die "node $port did not start"
            fi
            sleep 0.1
        done
    done

    log "creating the cluster ($masters masters, $replicas replicas each)"
    if ! redis-cli --cluster create "${addrs[@]}" --cluster-replicas "$replicas" --cluster-yes \
        >"$dir/create.log" 2>&1; then
        cat "$dir/create.log" >&2
        die "redis-cli --cluster create failed"
    fi

    for ((port = base; port <= last; port++)); do
        until redis-cli -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; do
            if ((SECONDS >= deadline)); then
                tail -n 20 "$dir/$port/redis.log" >&2 || true
                die "node $port: cluster_state not ok after ${TIMEOUT_SECS}s"
            fi
            sleep 0.1
        done
    done
    STARTING_DIR=""
    log "cluster is up"

    # Seed list: the masters that serve slots, from the first node's view (a
    # node that is still turning into a replica may briefly show as a master
    # without slots).
    redis-cli -p "$base" cluster nodes |
        awk '$3 ~ /master/ && NF >= 9 { split($2, a, "@"); print a[1] }' |
        sort -t: -k2,2n |
        paste -sd, -
}

cmd_stop() {
    [[ $# -eq 1 ]] || usage
    local dir="$1"
    [[ -d "$dir" ]] || {
        log "$dir does not exist; nothing to stop"
        return 0
    }
    [[ -f "$dir/$MARKER" ]] || die "$dir was not created by $0 start; refusing to touch it"

    local pidfile pid pids=()
    for pidfile in "$dir"/*/redis.pid; do
        [[ -f "$pidfile" ]] || continue
        pid="$(cat "$pidfile")"
        if is_uint "$pid" && is_redis_pid "$pid"; then
            kill "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    local deadline=$((SECONDS + 5))
    for pid in "${pids[@]+"${pids[@]}"}"; do
        while is_redis_pid "$pid" && ((SECONDS < deadline)); do
            sleep 0.1
        done
        if is_redis_pid "$pid"; then
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
    rm -rf -- "$dir"
    log "stopped ${#pids[@]} nodes and removed $dir"
}

main() {
    [[ $# -ge 1 ]] || usage
    local sub="$1"
    shift
    case "$sub" in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    *) usage ;;
    esac
}

main "$@"
