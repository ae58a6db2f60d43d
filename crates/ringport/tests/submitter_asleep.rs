//! An operation completes even while the thread that started it sleeps
//! somewhere else (here: blocked on a channel). On io_uring the kernel runs
//! part of a receive's completion on the submitting thread; a ring set up so
//! that it never interrupts that thread would leave the completion stuck
//! until the thread happened to wake.

mod util;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use util::{each_backend, port};

#[test]
fn completion_does_not_wait_for_a_sleeping_submitter() {
    each_backend(|backend, _| {
        let port = port(backend, 2);
        for round in 0..20u64 {
            let (mut client, server) = util::tcp_pair();
            let sock = port.associate(server, round).unwrap();
            let (started_tx, started_rx) = mpsc::channel();
            let (release_tx, release_rx) = mpsc::channel::<()>();
            let sleeper = {
                let (port, sock) = (port.clone(), sock.clone());
                thread::spawn(move || {
                    port.recv(&sock, Vec::with_capacity(16), round).unwrap();
                    started_tx.send(()).unwrap();
                    // Asleep in the kernel, outside the port, until released.
                    let _ = release_rx.recv();
                })
            };
            started_rx.recv().unwrap();
            thread::sleep(Duration::from_millis(5));
            util::write_all(&mut client, b"wake");
            let got = port.get(Some(Duration::from_secs(5)));
            release_tx.send(()).unwrap();
            sleeper.join().unwrap();
            let mut c = got.unwrap_or_else(|e| panic!("round {round}: no completion: {e}"));
            assert_eq!(c.user(), round);
            assert_eq!(c.take_buf().unwrap(), b"wake");
        }
    });
}

/// A running thread that blocks on something else without saying so (no
/// `blocking()`) does not hold back a completion that another thread waits
/// for, even when the running thread was the one due to poll next.
#[test]
fn completion_reaches_a_waiter_while_the_running_thread_blocks_elsewhere() {
    each_backend(|backend, _| {
        let port = port(backend, 2);
        let (mut c1, s1) = util::tcp_pair();
        let (mut c2, s2) = util::tcp_pair();
        let h1 = port.associate(s1, 1).unwrap();
        let h2 = port.associate(s2, 2).unwrap();
        port.recv(&h1, Vec::with_capacity(16), 1).unwrap();
        port.recv(&h2, Vec::with_capacity(16), 2).unwrap();
        let released = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (port, tx, released) = (port.clone(), tx.clone(), released.clone());
                thread::spawn(move || {
                    let got = port.get(Some(util::LONG)).map(|c| c.user());
                    let first = matches!(got, Ok(1));
                    tx.send(got).unwrap();
                    // The thread that got the first completion runs on the
                    // port, and sleeps outside it until released.
                    while first && !released.load(Ordering::SeqCst) {
                        thread::park();
                    }
                })
            })
            .collect();
        util::wait_until("two waiters", || port.stats().waiting == 2);
        util::write_all(&mut c1, b"1");
        assert_eq!(rx.recv_timeout(util::LONG).unwrap().unwrap(), 1);
        util::write_all(&mut c2, b"2");
        let second = rx
            .recv_timeout(util::LONG)
            .expect("the other waiter got nothing");
        released.store(true, Ordering::SeqCst);
        for w in &workers {
            w.thread().unpark();
        }
        assert_eq!(second.unwrap(), 2);
        for w in workers {
            w.join().unwrap();
        }
    });
}
