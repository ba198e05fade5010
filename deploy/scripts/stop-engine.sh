#!/usr/bin/env bash
# Stop the dockerd that install-engine.sh started, if it did; a daemon that was already running
# before is left alone.
source "$(dirname "$0")/common.sh"

pidfile=$A3C_STATE_DIR/dockerd.pid
[ -f "$pidfile" ] || exit 0
pid=$(cat "$pidfile")
rm -f "$pidfile"
if kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
    log "stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || exit 0
        sleep 0.5
    done
    log "dockerd (pid $pid) still running after 30 s"
    exit 1
fi
