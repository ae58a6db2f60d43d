//! R11, R12: closing a handle completes its operations as aborted and
//! defers close(2); closing the port wakes every waiter with "port closed".

mod util;

use std::io::Read;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use ringport::{GetError, OpKind};
use util::{assert_nothing_more, each_backend, port, wait_until};

#[test]
fn closing_a_handle_aborts_its_operations() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let (mut client, server) = util::tcp_pair();
        let sock = port.associate(server, 5).unwrap();
        for u in 0..3 {
            port.recv(&sock, Vec::with_capacity(32), u).unwrap();
        }
        sock.close();
        assert!(sock.is_closed());
        let mut users = Vec::new();
        for _ in 0..3 {
            let mut c = util::get(&port);
            assert_eq!((c.kind(), c.key()), (OpKind::Recv, 5));
            assert!(c.is_aborted(), "{:?}", c.result());
            assert_eq!(c.take_buf().unwrap().capacity(), 32);
            users.push(c.user());
        }
        users.sort_unstable();
        assert_eq!(users, [0, 1, 2]);
        // Once the kernel let go, the socket is really closed: the peer sees EOF.
        client.set_read_timeout(Some(util::LONG)).unwrap();
        let mut b = [0; 1];
        assert_eq!(client.read(&mut b).unwrap(), 0);
        // New operations on the closed handle are refused, buffer returned.
        let e = port.recv(&sock, vec![1, 2, 3], 9).unwrap_err();
        assert_eq!(e.into_buf().unwrap(), [1, 2, 3]);
        assert_nothing_more(&port, Duration::from_millis(20));
    });
}

#[test]
fn closing_a_listener_aborts_accept() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let (listener, _) = util::listener();
        let l = port.associate(listener, 1).unwrap();
        port.accept(&l, 10).unwrap();
        l.close();
        let c = util::get(&port);
        assert_eq!((c.kind(), c.user()), (OpKind::Accept, 10));
        assert!(c.is_aborted());
    });
}

/// Dropping the caller's `Handle` does not cancel: the operation in flight
/// holds a clone and hands it back; the descriptor closes when the last clone
/// goes.
#[test]
fn in_flight_operation_keeps_the_handle() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let (mut client, server) = util::tcp_pair();
        let sock = port.associate(server, 5).unwrap();
        port.recv(&sock, Vec::with_capacity(32), 1).unwrap();
        drop(sock);
        assert_nothing_more(&port, Duration::from_millis(30));
        util::write_all(&mut client, b"late");
        let mut c = util::get(&port);
        assert_eq!(c.take_result().unwrap(), 4);
        let h = c.handle().unwrap().clone();
        assert!(!h.is_closed());
        drop(c);
        drop(h);
        client.set_read_timeout(Some(util::LONG)).unwrap();
        let mut b = [0; 1];
        assert_eq!(client.read(&mut b).unwrap(), 0, "last clone gone: closed");
    });
}

#[test]
fn closing_the_port_wakes_every_waiter() {
    each_backend(|backend, _| {
        let port = port(backend, 4);
        let (_client, server) = util::tcp_pair();
        let sock = port.associate(server, 1).unwrap();
        port.recv(&sock, Vec::with_capacity(32), 1).unwrap();
        let (tx, rx) = mpsc::channel();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let (port, tx) = (port.clone(), tx.clone());
                thread::spawn(move || tx.send(port.get(None).map(|c| c.user())).unwrap())
            })
            .collect();
        wait_until("four waiters", || port.stats().waiting == 4);
        port.close();
        for _ in 0..4 {
            let r = rx.recv_timeout(util::LONG).unwrap();
            assert!(matches!(r, Err(GetError::Closed)), "got {r:?}");
        }
        for w in waiters {
            w.join().unwrap();
        }
        assert!(port.is_closed());
        assert!(matches!(
            port.get(Some(Duration::ZERO)),
            Err(GetError::Closed)
        ));
        let e = port.recv(&sock, vec![7], 2).unwrap_err();
        assert_eq!(e.into_buf().unwrap(), [7]);
        assert!(util::post(&port, 0).is_err());
        assert_eq!(port.stats().in_flight, 0, "close drains the kernel");
    });
}

/// A thread that sleeps in the kernel as poller is woken by close too.
#[test]
fn close_wakes_the_poller() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let (_client, server) = util::tcp_pair();
        let sock = port.associate(server, 1).unwrap();
        port.recv(&sock, Vec::with_capacity(32), 1).unwrap();
        let waiter = {
            let port = port.clone();
            thread::spawn(move || port.get(None).map(|c| c.user()))
        };
        wait_until("the poller", || port.stats().waiting == 1);
        thread::sleep(Duration::from_millis(20));
        port.close();
        let r = waiter.join().unwrap();
        assert!(matches!(r, Err(GetError::Closed)), "got {r:?}");
    });
}

/// Closing a port from inside a worker, while others wait: every worker
/// leaves with "port closed", nobody hangs.
#[test]
fn close_from_a_worker() {
    each_backend(|backend, _| {
        let port = port(backend, 2);
        let (mut client, server) = util::tcp_pair();
        let sock = port.associate(server, 1).unwrap();
        port.recv(&sock, Vec::with_capacity(32), 1).unwrap();
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let port = port.clone();
                thread::spawn(move || loop {
                    match port.get(None) {
                        Ok(c) => {
                            assert_eq!(c.user(), 1);
                            port.close();
                        }
                        Err(e) => return e,
                    }
                })
            })
            .collect();
        wait_until("four waiters", || port.stats().waiting == 4);
        util::write_all(&mut client, b"bye");
        for w in workers {
            assert!(matches!(w.join().unwrap(), GetError::Closed));
        }
    });
}
