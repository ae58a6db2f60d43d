#!/usr/bin/env bash
# Runs everything: installs what is missing, then the whole test suite once per
# backend this machine can run, clippy (-D warnings) and rustfmt.
#
#   ./test.sh            everything
#   ./test.sh --quick    one backend (the default), no clippy/fmt
#
# Environment: RINGPORT_BACKENDS="io_uring epoll" overrides the backend list.
set -euo pipefail
cd "$(dirname "$0")"

QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }

# --- install what is missing ------------------------------------------------
step "toolchain"
if ! have cargo; then
    if ! have rustup; then
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    fi
    # shellcheck disable=SC1091
    source "$HOME/.cargo/env"
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
cargo --version

# --- which backends run here --------------------------------------------------
# The suite itself skips (with the reason) a backend that cannot run; this
# list only decides how many times it runs.
if [[ -n "${RINGPORT_BACKENDS:-}" ]]; then
    read -r -a BACKENDS <<<"$RINGPORT_BACKENDS"
else
    BACKENDS=(io_uring epoll)
fi
[[ $QUICK == 1 ]] && BACKENDS=("${BACKENDS[0]}")
if [[ -r /proc/sys/kernel/io_uring_disabled ]]; then
    echo "kernel.io_uring_disabled = $(cat /proc/sys/kernel/io_uring_disabled)"
fi

step "build"
cargo build --workspace --all-targets

declare -A RESULT
for b in "${BACKENDS[@]}"; do
    step "tests on backend $b"
    log=$(mktemp)
    if RINGPORT_BACKEND=$b cargo test --workspace 2>&1 | tee "$log"; then
        passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s+=$1} END {print s+0}')
        skipped=$(grep -c "^SKIP backend $b" "$log" || true)
        RESULT[$b]="$passed passed"
        [[ $skipped -gt 0 ]] && RESULT[$b]+=" (backend unavailable here: $(grep -m1 "^SKIP backend $b" "$log"))"
    else
        rm -f "$log"
        echo "tests failed on backend $b" >&2
        exit 1
    fi
    rm -f "$log"
done

if [[ $QUICK == 0 ]]; then
    step "clippy"
    cargo clippy --workspace --all-targets -- -D warnings
    step "rustfmt"
    cargo fmt --all --check
fi

step "summary"
for b in "${BACKENDS[@]}"; do
    printf '  %-10s %s\n' "$b" "${RESULT[$b]}"
done
echo "all green"
