//! R10: cancel never removes the completion; the operation still completes
//! exactly once, with success, an aborted error, or another error.

mod util;

use std::collections::HashSet;
use std::time::Duration;

use ringport::OpKind;
use util::{assert_nothing_more, each_backend, port};

#[test]
fn cancel_one_pending_recv() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let (_client, server) = util::tcp_pair();
        let sock = port.associate(server, 3).unwrap();
        let a = port.recv(&sock, Vec::with_capacity(64), 1).unwrap();
        let _b = port.recv(&sock, Vec::with_capacity(64), 2).unwrap();
        port.cancel(&sock, Some(a)).unwrap();
        let mut c = util::get(&port);
        assert_eq!(
            (c.kind(), c.key(), c.user(), c.id()),
            (OpKind::Recv, 3, 1, Some(a))
        );
        assert!(c.is_aborted(), "{:?}", c.result());
        let e = c.result().as_ref().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc_ecanceled()), "{e}");
        assert_eq!(c.take_buf().unwrap().capacity(), 64);
        // The other receive is untouched.
        assert_nothing_more(&port, Duration::from_millis(50));
        assert_eq!(port.stats().in_flight, 1);
    });
}

fn libc_ecanceled() -> i32 {
    if cfg!(windows) {
        995 // ERROR_OPERATION_ABORTED
    } else {
        125 // ECANCELED on Linux
    }
}

#[test]
fn cancel_all_on_a_handle() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let (_client, server) = util::tcp_pair();
        let (_client2, server2) = util::tcp_pair();
        let sock = port.associate(server, 1).unwrap();
        let other = port.associate(server2, 2).unwrap();
        for u in 0..5 {
            port.recv(&sock, Vec::with_capacity(8), u).unwrap();
        }
        port.recv(&other, Vec::with_capacity(8), 99).unwrap();
        port.cancel(&sock, None).unwrap();
        let mut users = HashSet::new();
        for _ in 0..5 {
            let c = util::get(&port);
            assert_eq!(c.key(), 1);
            assert!(c.is_aborted());
            assert!(users.insert(c.user()));
        }
        assert_nothing_more(&port, Duration::from_millis(50));
        // The other handle's receive still works.
        assert_eq!(port.stats().in_flight, 1);
    });
}

#[test]
fn cancel_a_finished_operation_is_not_found() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let (mut client, server) = util::tcp_pair();
        let sock = port.associate(server, 1).unwrap();
        let id = port.recv(&sock, Vec::with_capacity(8), 1).unwrap();
        util::write_all(&mut client, b"hi");
        let mut c = util::get(&port);
        assert_eq!(c.take_result().unwrap(), 2);
        let e = port.cancel(&sock, Some(id)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        // CancelIoEx(h, NULL) with nothing pending fails with ERROR_NOT_FOUND.
        let e = port.cancel(&sock, None).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        assert_nothing_more(&port, Duration::from_millis(20));
    });
}

/// Data is sent and the receive cancelled at once, many times: each receive
/// completes exactly once, either with the data or aborted, and no byte is
/// lost from the stream.
#[test]
fn cancel_racing_completion() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let (mut client, server) = util::tcp_pair();
        let sock = port.associate(server, 1).unwrap();
        let mut received = Vec::new();
        let mut sent = Vec::new();
        let (mut ok, mut aborted) = (0, 0);
        for round in 0..500u64 {
            let id = port.recv(&sock, Vec::with_capacity(64), round).unwrap();
            let msg = util::pattern(1 + (round % 7) as usize, round);
            util::write_all(&mut client, &msg);
            sent.extend_from_slice(&msg);
            let _ = port.cancel(&sock, Some(id)); // NotFound if it finished
            let mut c = util::get(&port);
            assert_eq!(c.user(), round, "one completion per operation, in turn");
            let buf = c.take_buf().unwrap();
            match c.take_result() {
                Ok(n) => {
                    ok += 1;
                    assert_eq!(n, buf.len());
                    received.extend_from_slice(&buf);
                }
                Err(e) => {
                    aborted += 1;
                    assert_eq!(e.raw_os_error(), Some(libc_ecanceled()), "{e}");
                    assert!(buf.is_empty());
                }
            }
        }
        // Drain what the aborted receives left in the socket.
        while received.len() < sent.len() {
            port.recv(&sock, Vec::with_capacity(4096), 0).unwrap();
            let mut c = util::get(&port);
            let n = c.take_result().unwrap();
            assert!(n > 0);
            received.extend_from_slice(&c.take_buf().unwrap());
        }
        assert_eq!(received, sent);
        eprintln!("cancel race: {ok} finished first, {aborted} aborted");
        assert_nothing_more(&port, Duration::from_millis(20));
    });
}

/// Cancelling from another thread while workers dequeue: still one
/// completion per operation.
#[test]
fn cancel_from_another_thread() {
    each_backend(|backend, _| {
        let port = port(backend, 2);
        let (_client, server) = util::tcp_pair();
        let sock = port.associate(server, 1).unwrap();
        const N: u64 = 300;
        let ids: Vec<_> = (0..N)
            .map(|u| port.recv(&sock, Vec::with_capacity(8), u).unwrap())
            .collect();
        let canceller = {
            let (port, sock) = (port.clone(), sock.clone());
            std::thread::spawn(move || {
                for id in ids {
                    port.cancel(&sock, Some(id)).unwrap();
                }
            })
        };
        let mut seen = HashSet::new();
        for _ in 0..N {
            let c = util::get(&port);
            assert!(c.is_aborted());
            assert!(seen.insert(c.user()), "duplicate completion {}", c.user());
        }
        canceller.join().unwrap();
        assert_nothing_more(&port, Duration::from_millis(20));
    });
}

/// A thread running on the port batches the operations it starts until its
/// next dequeue; one cancelled before then never reaches the kernel: it
/// completes as cancelled and takes none of the data that comes after.
#[test]
fn cancel_before_the_batch_is_submitted() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let (mut client, server) = util::tcp_pair();
        let sock = port.associate(server, 3).unwrap();
        util::post(&port, 0).unwrap();
        assert_eq!(util::get(&port).user(), 0); // now running on the port
        let a = port.recv(&sock, Vec::with_capacity(64), 1).unwrap();
        port.cancel(&sock, Some(a)).unwrap();
        util::write_all(&mut client, b"hello");
        let mut c = util::get(&port);
        assert_eq!((c.user(), c.id()), (1, Some(a)));
        assert!(c.is_aborted(), "{:?}", c.result());
        assert!(c.take_buf().unwrap().is_empty());
        // The bytes are still there for the next receive.
        port.recv(&sock, Vec::with_capacity(64), 2).unwrap();
        let mut c = util::get(&port);
        assert_eq!(c.user(), 2);
        assert_eq!(*c.result().as_ref().unwrap(), 5);
        assert_eq!(c.take_buf().unwrap(), b"hello");
        assert_nothing_more(&port, Duration::from_millis(20));
        assert_eq!(port.stats().in_flight, 0);
    });
}
