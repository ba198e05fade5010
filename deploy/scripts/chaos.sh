#!/usr/bin/env bash
# `make chaos`: the compose stack under a seeded schedule of faults (bench/chaos.py), after
# deploy/scripts/prepare-compose.sh has installed and started what it needs. Writes
# bench/chaos.json. A dockerd this run started is stopped at the end.
source "$(dirname "$0")/common.sh"
cd "$A3C_ROOT"

PYTHON=${PYTHON:-$A3C_ROOT/.venv/bin/python}
export TEST_COMPOSE_IMAGE=${TEST_COMPOSE_IMAGE:-a3c-breakout:ci}
trap '"$A3C_ROOT/deploy/scripts/stop-engine.sh"' EXIT
PYTHON=$PYTHON deploy/scripts/prepare-compose.sh

log "chaos $*"
"$PYTHON" -m bench.chaos "$@"
