#!/usr/bin/env bash
# Make sure redis-server and redis-cli are installed (Debian/Ubuntu packages
# redis-server and redis-tools). If they had to be installed, stop and disable
# the system redis service the package may have started, so that nothing
# listens on 127.0.0.1:6379 unexpectedly (tests start their own servers).
set -euo pipefail

log() {
    echo "ensure-redis: $*" >&2
}

if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    exit 0
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        log "error: redis-server/redis-cli are missing and I am not root (no sudo either)"
        log "install the redis-server and redis-tools packages, then retry"
        exit 1
    fi
fi
command -v apt-get >/dev/null 2>&1 || {
    log "error: redis-server/redis-cli are missing and apt-get is not available"
    exit 1
}

log "installing redis-server and redis-tools"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]+"${SUDO[@]}"}" apt-get update
"${SUDO[@]+"${SUDO[@]}"}" apt-get install -y redis-server redis-tools

# The package may have started a system-wide redis on port 6379: stop it and
# keep it from starting at boot. Failures are fine (no init system, etc.).
if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
    "${SUDO[@]+"${SUDO[@]}"}" systemctl stop redis-server >/dev/null 2>&1 || true
    "${SUDO[@]+"${SUDO[@]}"}" systemctl disable redis-server >/dev/null 2>&1 || true
elif command -v service >/dev/null 2>&1; then
    "${SUDO[@]+"${SUDO[@]}"}" service redis-server stop >/dev/null 2>&1 || true
    if command -v update-rc.d >/dev/null 2>&1; then
        "${SUDO[@]+"${SUDO[@]}"}" update-rc.d redis-server disable >/dev/null 2>&1 || true
    fi
fi

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    log "error: redis-server/redis-cli still missing after the install"
    exit 1
fi
log "redis $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') installed"
