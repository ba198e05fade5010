#!/usr/bin/env bash
# Make the Docker base image without a registry: a minimal Debian bookworm with Python 3.11
# (python3, venv, pip), built by debootstrap from Debian's mirror and imported as
# $A3C_BASE_IMAGE (default a3c-base:bookworm). Only for machines that cannot pull
# python:3.11-slim; the Dockerfile takes it as `--build-arg BASE_IMAGE=...`. Idempotent: the
# image, or else the cached root filesystem tarball, is reused.
source "$(dirname "$0")/common.sh"

IMAGE=${A3C_BASE_IMAGE:-a3c-base:bookworm}
SUITE=${DEBIAN_SUITE:-bookworm}
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "base image $IMAGE present"
    exit 0
fi
tarball=$A3C_CACHE_DIR/rootfs-$SUITE.tar
if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null || apt_install debootstrap
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    log "debootstrap $SUITE (about a minute)"
    debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates,passwd \
        "$SUITE" "$rootfs" >"$A3C_STATE_DIR/debootstrap.log" 2>&1 \
        || { tail -20 "$A3C_STATE_DIR/debootstrap.log" >&2; die "debootstrap failed"; }
    chroot "$rootfs" apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
        "$rootfs"/usr/share/locale/* "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/log/*.log
    tar -C "$rootfs" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
fi
docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' "$tarball" "$IMAGE" >/dev/null
log "imported $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | numfmt --to=iec))"
