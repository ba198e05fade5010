#!/usr/bin/env bash
# Fill wheelhouse/ with every wheel the image needs (the project's dependencies from
# pyproject.toml, plus setuptools to build the project), so that the image builds with no
# network: `--build-arg PIP_INSTALL_ARGS="--no-index --find-links /wheelhouse"`. torch comes
# from wherever this machine's pip finds its CPU wheel. Skipped when pyproject.toml is unchanged.
source "$(dirname "$0")/common.sh"

wheelhouse=$A3C_ROOT/wheelhouse
requirements=$A3C_STATE_DIR/requirements.txt
python3 - "$A3C_ROOT/pyproject.toml" >"$requirements" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)
print("\n".join([*project["build-system"]["requires"], "wheel", *project["project"]["dependencies"]]))
PY
stamp=$wheelhouse/.stamp
if [ -f "$stamp" ] && cmp -s "$stamp" "$requirements"; then
    log "wheelhouse up to date ($(du -sh "$wheelhouse" | cut -f1))"
    exit 0
fi
log "pip download into wheelhouse/"
python3 -m pip download -q --disable-pip-version-check --only-binary=:all: \
    --python-version 3.11 -d "$wheelhouse" -r "$requirements" \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
cp "$requirements" "$stamp"
log "wheelhouse ready ($(ls "$wheelhouse"/*.whl | wc -l) wheels, $(du -sh "$wheelhouse" | cut -f1))"
