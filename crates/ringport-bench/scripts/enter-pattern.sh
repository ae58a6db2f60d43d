#!/usr/bin/env bash
# Records every io_uring_enter of a `ringport serve` under load for one second
# and counts them by kind (something to submit or not, GETEVENTS or not, how
# many completions waited for). Needs perf (Debian's linux-perf) and root or
# kernel.perf_event_paranoid <= -1 for the syscall tracepoint.
#
#   crates/ringport-bench/scripts/enter-pattern.sh [CONNECTIONS] [SIZE] [serve args...]
#   crates/ringport-bench/scripts/enter-pattern.sh 10 16384 --threads 1
set -euo pipefail
cd "$(dirname "$0")/../../.."
conns=${1:-10}
size=${2:-16384}
shift $(($# < 2 ? $# : 2))
bin=target/release/ringport
[[ -x $bin ]] || { echo "build first: cargo build --release --workspace" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$bin" serve --addr 127.0.0.1:0 "$@" >"$out/serve" 2>&1 &
server=$!
for _ in $(seq 50); do grep -q "listening on" "$out/serve" && break; sleep 0.1; done
addr=$(sed -n 's/^listening on \([^ ]*\).*/\1/p' "$out/serve" | head -1)
[[ -n $addr ]] || { kill "$server"; echo "the server did not start" >&2; exit 1; }
"$bin" bench --addr "$addr" --connections "$conns" --size "$size" --duration 4 --warmup 1 >"$out/bench" 2>&1 &
client=$!
sleep 2
perf record -q -e syscalls:sys_enter_io_uring_enter -p "$server" -o "$out/perf.data" -- sleep 1 >/dev/null 2>&1
wait "$client" || true
kill -TERM "$server"
wait "$server" || true
grep "msgs/s" "$out/bench" || true
perf script -i "$out/perf.data" 2>/dev/null | python3 -c '
import collections, re, sys
kinds = collections.Counter()
for line in sys.stdin:
    m = re.search(r"to_submit: (0x[0-9a-f]+), min_complete: (0x[0-9a-f]+), flags: (0x[0-9a-f]+)", line)
    if not m:
        continue
    sub, wait, flags = (int(x, 16) for x in m.groups())
    kind = "submit" if sub else "nothing to submit"
    kind += ", GETEVENTS" if flags & 1 else ", no GETEVENTS"
    if wait:
        kind += ", wait for %d" % wait
    kinds[kind] += 1
print("io_uring_enter in 1 s: %d" % sum(kinds.values()))
for kind, n in kinds.most_common():
    print("%8d  %s" % (n, kind))
'
