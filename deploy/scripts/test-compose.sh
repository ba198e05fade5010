#!/usr/bin/env bash
# `make test-compose`: on a machine with no container registry, install and start what the
# compose stack needs (deploy/scripts/prepare-compose.sh), then run tests/deploy/test_compose*.py
# and test_chaos.py, which bring up `docker compose up --scale worker=8` and prove it works,
# also under faults. A dockerd this run started is stopped at the end; one that was already
# running is left alone.
source "$(dirname "$0")/common.sh"
cd "$A3C_ROOT"

PYTHON=${PYTHON:-$A3C_ROOT/.venv/bin/python}
export TEST_COMPOSE_IMAGE=${TEST_COMPOSE_IMAGE:-a3c-breakout:ci}
trap '"$A3C_ROOT/deploy/scripts/stop-engine.sh"' EXIT
PYTHON=$PYTHON deploy/scripts/prepare-compose.sh

log "tests"
RUN_COMPOSE_TESTS=1 "$PYTHON" -m pytest -p no:cacheprovider -s -v \
    tests/deploy/test_compose_static.py tests/deploy/test_compose.py tests/deploy/test_chaos.py "$@"
