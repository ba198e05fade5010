# Shared helpers of the deploy scripts (sourced, not run).
# State a script must remember across steps (a daemon it started, logs) lives in
# A3C_STATE_DIR, ignored by git; slow downloads are cached in A3C_CACHE_DIR.
set -euo pipefail

# CI may run with a bare environment: find HOME (for ~/.docker and ~/.cache) if it is unset.
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME
A3C_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
A3C_STATE_DIR=${A3C_STATE_DIR:-$A3C_ROOT/build/compose}
A3C_CACHE_DIR=${A3C_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/a3c-deploy}
mkdir -p "$A3C_STATE_DIR" "$A3C_CACHE_DIR"

log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# apt-get install PACKAGES, running `apt-get update` at most once per script run.
apt_install() {
    [ "$(id -u)" -eq 0 ] || die "need root to apt-get install $*; install them yourself"
    if [ -z "${_A3C_APT_UPDATED:-}" ]; then
        apt-get update -qq >/dev/null
        _A3C_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
