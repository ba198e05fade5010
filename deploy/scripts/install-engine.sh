#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info`: install Debian's docker.io when dockerd is
# missing, and start dockerd (overlay2) in the background when no daemon runs. A daemon this
# script starts is recorded in $A3C_STATE_DIR/dockerd.pid so that stop-engine.sh stops it (and
# only it). Idempotent: instant when an engine already answers.
source "$(dirname "$0")/common.sh"

if docker info >/dev/null 2>&1; then
    log "engine already running ($(docker version -f '{{.Server.Version}}' 2>/dev/null))"
    exit 0
fi
if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
    log "installing docker.io from Debian"
    apt_install docker.io
fi
[ "$(id -u)" -eq 0 ] || die "no engine answers and only root can start dockerd here"

log "starting dockerd (overlay2)"
dockerd --storage-driver=overlay2 >"$A3C_STATE_DIR/dockerd.log" 2>&1 &
echo $! >"$A3C_STATE_DIR/dockerd.pid"
for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
        log "dockerd up (pid $(cat "$A3C_STATE_DIR/dockerd.pid"))"
        exit 0
    fi
    kill -0 "$(cat "$A3C_STATE_DIR/dockerd.pid")" 2>/dev/null || break
    sleep 0.5
done
tail -20 "$A3C_STATE_DIR/dockerd.log" >&2
die "dockerd did not come up (log: $A3C_STATE_DIR/dockerd.log)"
