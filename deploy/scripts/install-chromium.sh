#!/usr/bin/env bash
# Make sure a headless Chromium is on PATH for the browser test of the evaluator's page
# (tests/integration/test_evaluator_page.py): install Debian's chromium, and a font for the
# screenshot's text, when no chromium is found. Idempotent: instant when one is there. The
# test finds the binary itself (A3C_CHROMIUM, else chromium or chromium-browser on PATH) and
# skips, saying why, where none could be installed.
source "$(dirname "$0")/common.sh"

find_chromium() {
    command -v "${A3C_CHROMIUM:-chromium}" || command -v chromium-browser || true
}

found=$(find_chromium)
if [ -z "$found" ]; then
    log "installing chromium from Debian"
    apt_install chromium fonts-dejavu-core
    found=$(find_chromium)
fi
[ -n "$found" ] || die "chromium is not on PATH after installing it"
log "$("$found" --version 2>/dev/null || echo "$found")"
