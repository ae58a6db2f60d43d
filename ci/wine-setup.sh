#!/usr/bin/env bash
# Installs what the Windows suite needs under Wine: mingw-w64 (linker), Wine,
# the x86_64-pc-windows-gnu Rust target, and the bcryptprimitives.dll shim
# (ci/processprng.c). Idempotent: a second run only checks and returns.
#
# Fails loudly (non-zero, with the reason) when something cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-pc-windows-gnu
SHIM_DIR=target/wine
SHIM=$SHIM_DIR/bcryptprimitives.dll

have() { command -v "$1" >/dev/null 2>&1; }

# Debian installs wine64 and wineserver under /usr/lib/wine, outside PATH.
wine_ok() { have wine && { have wine64 || [[ -x /usr/lib/wine/wine64 ]]; }; }

if ! have x86_64-w64-mingw32-gcc || ! wine_ok; then
    if ! have apt-get; then
        echo "wine-setup: mingw-w64 or Wine is missing and apt-get is not available;" >&2
        echo "wine-setup: install gcc-mingw-w64-x86-64-win32, wine64 and wine by hand" >&2
        exit 1
    fi
    SUDO=()
    [[ $(id -u) -ne 0 ]] && SUDO=(sudo)
    echo "wine-setup: installing mingw-w64 and Wine with apt-get (about 1 GB)"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
        gcc-mingw-w64-x86-64-win32 wine64 wine >/dev/null
fi
if ! have x86_64-w64-mingw32-gcc || ! wine_ok; then
    echo "wine-setup: mingw-w64 or wine64 still missing after apt-get install" >&2
    exit 1
fi

if ! rustup target list --installed | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi

mkdir -p "$SHIM_DIR"
if [[ ! -f $SHIM || ci/processprng.c -nt $SHIM ]]; then
    x86_64-w64-mingw32-gcc -shared -O2 -s -o "$SHIM" ci/processprng.c -ladvapi32
fi
echo "wine-setup: ready ($(wine --version 2>/dev/null), target $TARGET, shim $SHIM)"
