//! An operation completes even while the thread that started it sleeps
//! somewhere else (here: blocked on a channel). On io_uring the kernel runs
//! part of a receive's completion on the submitting thread; a ring set up so
//! that it never interrupts that thread would leave the completion stuck
//! until the thread happened to wake.

mod util;

use std::sync::mpsc;
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
