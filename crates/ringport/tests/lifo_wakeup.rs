//! R5: packets are FIFO; waiting threads are woken LIFO.

mod util;

use std::sync::mpsc;
use std::thread;

use ringport::{CompletionPort, Packet};
use util::{each_backend, port, wait_until};

/// Starts one waiting thread per name, each only once the previous one waits;
/// each reports its name and the caller value of the packet it got.
fn waiters_in_order(
    port: &CompletionPort,
    names: [&'static str; 3],
) -> (
    Vec<thread::JoinHandle<()>>,
    mpsc::Receiver<(&'static str, u64)>,
) {
    let (tx, rx) = mpsc::channel();
    let mut threads = Vec::new();
    for name in names {
        let (p, tx) = (port.clone(), tx.clone());
        let before = port.stats().waiting;
        threads.push(thread::spawn(move || {
            let c = util::get(&p);
            tx.send((name, c.user())).unwrap();
        }));
        wait_until("the new waiter", || port.stats().waiting == before + 1);
    }
    (threads, rx)
}

/// Three threads wait, in order A, B, C. Each packet goes to the most recent
/// waiter still waiting: C, then B, then A.
#[test]
fn most_recent_waiter_is_served_first() {
    if util::skip_under_wine(
        "most_recent_waiter_is_served_first",
        "Wine 8 does not wake waiting threads in LIFO order",
    ) {
        return;
    }
    each_backend(|backend, _| {
        let port = port(backend, 8);
        let (threads, rx) = waiters_in_order(&port, ["A", "B", "C"]);
        for (i, expect) in ["C", "B", "A"].into_iter().enumerate() {
            util::post(&port, i as u64).unwrap();
            let (who, user) = rx.recv_timeout(util::LONG).unwrap();
            assert_eq!((who, user), (expect, i as u64));
        }
        for t in threads {
            t.join().unwrap();
        }
    });
}

/// LIFO holds while one of the waiters sleeps in the kernel for I/O: the
/// completion of a real operation goes to the most recent waiter too.
#[test]
fn io_completion_goes_to_most_recent_waiter() {
    if util::skip_under_wine(
        "io_completion_goes_to_most_recent_waiter",
        "Wine 8 does not wake waiting threads in LIFO order",
    ) {
        return;
    }
    each_backend(|backend, _| {
        let port = port(backend, 8);
        let (mut client, server) = util::tcp_pair();
        let sock = port.associate(server, 9).unwrap();
        port.recv(&sock, Vec::with_capacity(16), 5).unwrap();
        let (threads, rx) = waiters_in_order(&port, ["A", "B", "C"]);
        util::write_all(&mut client, b"x");
        assert_eq!(rx.recv_timeout(util::LONG).unwrap(), ("C", 5));
        util::post(&port, 6).unwrap();
        assert_eq!(rx.recv_timeout(util::LONG).unwrap(), ("B", 6));
        util::post(&port, 7).unwrap();
        assert_eq!(rx.recv_timeout(util::LONG).unwrap(), ("A", 7));
        for t in threads {
            t.join().unwrap();
        }
    });
}

/// Packets come out in the order they went in.
#[test]
fn packets_are_fifo() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        for i in 0..1000 {
            port.post(Packet {
                bytes: i as usize,
                key: 3,
                user: i,
            })
            .unwrap();
        }
        for i in 0..1000 {
            let mut c = util::get(&port);
            assert_eq!((c.user(), c.key()), (i, 3));
            assert_eq!(c.take_result().unwrap(), i as usize);
        }
    });
}

/// A waiter that times out leaves the stack: the next packet goes to the
/// waiter that is still there.
#[test]
fn timed_out_waiter_leaves_the_stack() {
    each_backend(|backend, _| {
        let port = port(backend, 8);
        let first = {
            let port = port.clone();
            thread::spawn(move || util::get(&port).user())
        };
        wait_until("first waiter", || port.stats().waiting == 1);
        let second = {
            let port = port.clone();
            thread::spawn(move || {
                port.get(Some(std::time::Duration::from_millis(50)))
                    .is_err()
            })
        };
        assert!(second.join().unwrap(), "second waiter should time out");
        assert_eq!(port.stats().waiting, 1);
        util::post(&port, 11).unwrap();
        assert_eq!(first.join().unwrap(), 11);
    });
}
