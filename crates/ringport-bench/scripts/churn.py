#!/usr/bin/env python3
# Connection churn: N sequential connections to an echo server on 127.0.0.1:PORT,
# each sends 64 B, reads them back (checked), and closes; 500 more first, as a
# warm-up. Prints the server's CPU (utime + stime of PID, from /proc) per
# connection over the N. Used for the churn check after run BY (BENCHMARKS.md):
#   ./target/release/ringport serve --addr 127.0.0.1:7311 --threads 1 --backend io_uring [--no-registered-files] &
#   crates/ringport-bench/scripts/churn.py $! 7311 10000
# Usage: churn.py PID PORT N
import socket, sys, os, time
pid, port, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
tck = os.sysconf('SC_CLK_TCK')
def cpu():
    f = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    return (int(f[11]) + int(f[12])) / tck
msg = b'x' * 64
def one():
    s = socket.create_connection(('127.0.0.1', port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(msg)
    got = b''
    while len(got) < 64:
        b = s.recv(64 - len(got))
        if not b: raise SystemExit('eof')
        got += b
    assert got == msg
    s.close()
for _ in range(500): one()
c0, t0 = cpu(), time.time()
for _ in range(n): one()
c1, t1 = cpu(), time.time()
print(f"{n} conns in {t1-t0:.2f}s, server CPU {1e6*(c1-c0)/n:.1f} us/conn")
