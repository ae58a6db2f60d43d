#!/usr/bin/env bash
# User CPU per echoed message of two `ringport` binaries, alternated: each
# serves `ringport bench --connections 50 --size 64` with one worker while
# `perf record -e cpu-clock:u -F 10000` samples the server's user time for 3
# seconds; user µs per message = samples x 100 µs / messages in those 3 s. The
# kernel's tick accounting (what `compare` reads from /proc) charges a whole
# tick to user or system, which at about 6% user leaves a few dozen ticks a
# second; sampling at 10 kHz counts about 1,500 user samples a run. Needs
# perf (Debian's linux-perf) and root or kernel.perf_event_paranoid <= -1.
#
#   crates/ringport-bench/scripts/user-time.sh OLD_BIN NEW_BIN [PAIRS (7)]
#   cp target/release/ringport /tmp/before   # build the change, then:
#   crates/ringport-bench/scripts/user-time.sh /tmp/before target/release/ringport
set -euo pipefail
cd "$(dirname "$0")/../../.."
[[ $# -ge 2 ]] || { sed -n '2,13p' "$0" >&2; exit 2; }
old=$1
new=$2
pairs=${3:-7}
client=target/release/ringport
for b in "$old" "$new" "$client"; do
    [[ -x $b ]] || { echo "not an executable: $b (cargo build --release --workspace)" >&2; exit 1; }
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# One run: prints "user_us_per_msg msgs_per_sec".
run() {
    "$1" serve --threads 1 --addr 127.0.0.1:0 >"$out/serve" 2>&1 &
    local server=$!
    for _ in $(seq 50); do grep -q "listening on" "$out/serve" && break; sleep 0.1; done
    local addr
    addr=$(sed -n 's/^listening on \([^ ]*\).*/\1/p' "$out/serve" | head -1)
    [[ -n $addr ]] || { kill "$server"; echo "the server did not start" >&2; exit 1; }
    "$client" bench --addr "$addr" --connections 50 --size 64 --duration 4 --warmup 0.5 --json >"$out/bench.json" 2>/dev/null &
    local bench=$!
    sleep 1
    perf record -q -e cpu-clock:u -F 10000 -p "$server" -o "$out/perf.data" -- sleep 3 >/dev/null 2>&1
    wait "$bench"
    kill -TERM "$server"
    wait "$server" || true
    local samples
    samples=$(perf script -i "$out/perf.data" 2>/dev/null | wc -l)
    python3 -c 'import json, sys
rate = json.load(open(sys.argv[1]))["msgs_per_sec"]
print(f"{int(sys.argv[2]) * 100 / (rate * 3):.4f} {rate:.0f}")' "$out/bench.json" "$samples"
}

printf '%-5s %-22s %-22s\n' pair "old: user µs/msg msgs/s" "new: user µs/msg msgs/s"
: >"$out/old"
: >"$out/new"
for i in $(seq "$pairs"); do
    a=$(run "$old")
    b=$(run "$new")
    echo "${a%% *}" >>"$out/old"
    echo "${b%% *}" >>"$out/new"
    printf '%-5s %-22s %-22s\n' "$i" "$a" "$b"
done
python3 -c 'import statistics, sys
old = [float(x) for x in open(sys.argv[1])]
new = [float(x) for x in open(sys.argv[2])]
print(f"medians: old {statistics.median(old):.3f}, new {statistics.median(new):.3f} µs of user CPU per message")' "$out/old" "$out/new"
