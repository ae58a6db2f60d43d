#!/usr/bin/env bash
# Cargo runner for x86_64-pc-windows-gnu (see .cargo/config.toml): runs a
# Windows executable under Wine, headless, in a prefix kept under target/.
#
# The prefix is made once (wineboot --init) and gets the bcryptprimitives.dll
# shim that Rust's std needs and Wine 8.0 lacks (built by ci/wine-setup.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

export WINEPREFIX="${WINEPREFIX:-$root/target/wine/prefix}"
export WINEDEBUG="${WINEDEBUG:--all}"
export WINEDLLOVERRIDES="${WINEDLLOVERRIDES:-mscoree,mshtml=}"

wine64=$(command -v wine64 || echo /usr/lib/wine/wine64)
wineserver=$(command -v wineserver || echo /usr/lib/wine/wineserver)
shim="$root/target/wine/bcryptprimitives.dll"

if [[ ! -f $shim ]]; then
    echo "wine-runner: $shim is missing; run ci/wine-setup.sh first" >&2
    exit 1
fi
if [[ ! -f $WINEPREFIX/system.reg ]]; then
    mkdir -p "$WINEPREFIX"
    "$wine64" wineboot --init >/dev/null 2>&1 || true
    "$wineserver" -w
fi
sys32="$WINEPREFIX/drive_c/windows/system32"
if [[ ! -f $sys32/bcryptprimitives.dll || $shim -nt $sys32/bcryptprimitives.dll ]]; then
    cp "$shim" "$sys32/bcryptprimitives.dll"
fi

status=0
"$wine64" "$@" || status=$?
"$wineserver" -w
exit $status
