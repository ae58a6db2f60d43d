//! The single-thread port (`Builder::single_thread`): the first thread that
//! dequeues owns it, and only it dequeues; any thread starts, posts, cancels
//! and closes; the owner's exit closes the port. On io_uring its ring is the
//! owner's own (`SINGLE_ISSUER` + `DEFER_TASKRUN`), so every call from another
//! thread must reach the kernel through the owner.

mod util;

use std::io::{ErrorKind, Read};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use ringport::{Backend, Builder, CompletionPort, GetError, OpKind, Packet};
use util::{each_backend, LONG};

fn single(b: Builder) -> CompletionPort {
    b.single_thread(true)
        .concurrency(1)
        .recv_buffers(8, 4096)
        .build()
        .unwrap()
}

/// Makes the calling thread the owner (a dequeue that finds nothing).
fn claim(port: &CompletionPort) {
    match port.get(Some(Duration::ZERO)) {
        Err(GetError::TimedOut) => {}
        other => panic!("the first dequeue claims the port: {other:?}"),
    }
}

fn get(port: &CompletionPort) -> ringport::Completion {
    port.get(Some(LONG)).expect("a completion within LONG")
}

#[test]
fn the_ring_is_the_owners_own_on_io_uring() {
    each_backend(|backend, b| {
        let port = single(b);
        if backend == Backend::IoUring {
            assert!(
                port.backend_reason().contains("single thread"),
                "{}",
                port.backend_reason()
            );
        }
        let shared = CompletionPort::builder().backend(backend).build().unwrap();
        assert!(!shared.backend_reason().contains("single thread"));
    });
}

#[test]
fn echoes_on_its_owner_thread() {
    each_backend(|_, b| {
        let port = single(b);
        let (mut client, server) = util::tcp_pair();
        let sock = port.associate(server, 5).unwrap();
        for round in 0..200u64 {
            let data = util::pattern(100 + round as usize, round);
            port.recv_pooled(&sock, round).unwrap();
            util::write_all(&mut client, &data);
            let mut c = get(&port);
            assert_eq!((c.kind(), c.key(), c.user()), (OpKind::Recv, 5, round));
            let n = c.take_result().unwrap();
            let buf = c.take_buf().unwrap();
            assert_eq!(&buf[..], &data[..n]);
            port.send(&sock, buf, round).unwrap();
            let mut c = get(&port);
            assert_eq!(c.kind(), OpKind::Send);
            assert_eq!(c.take_result().unwrap(), n);
            port.recycle(c.take_buf().unwrap());
            assert_eq!(util::read_n(&mut client, n).unwrap(), &data[..n]);
        }
    });
}

#[test]
fn only_the_owner_dequeues() {
    each_backend(|_, b| {
        let port = single(b);
        claim(&port);
        let other = port.clone();
        let refused = thread::spawn(move || {
            let one = other.get(Some(Duration::ZERO));
            let many = other.get_many(&mut Vec::new(), 4, Some(Duration::ZERO));
            (one.err(), many.err())
        })
        .join()
        .unwrap();
        for e in [refused.0, refused.1] {
            match e {
                Some(GetError::Os(e)) => assert_eq!(e.kind(), ErrorKind::Other),
                other => panic!("another thread's dequeue is refused: {other:?}"),
            }
        }
        // The owner still dequeues, and gets what another thread posted.
        util::post(&port, 9).unwrap();
        assert_eq!(get(&port).user(), 9);
    });
}

/// Starts a receive that stays pending, so the owner waits in the kernel.
fn idle_recv(port: &CompletionPort) -> (std::net::TcpStream, ringport::Handle) {
    let (client, server) = util::tcp_pair();
    let sock = port.associate(server, 1).unwrap();
    port.recv_pooled(&sock, 1).unwrap();
    (client, sock)
}

/// Runs `f` on another thread once the owner has had time to fall asleep
/// in its dequeue (if `f` ran first, the dequeue would still have to see it).
fn meanwhile(f: impl FnOnce() + Send + 'static) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        thread::sleep(Duration::from_millis(30));
        f();
    })
}

#[test]
fn posts_from_another_thread_wake_the_owner() {
    each_backend(|_, b| {
        let port = single(b);
        let (_client, _sock) = idle_recv(&port);
        claim(&port);
        // Several times: each wake-up must leave the next one armed.
        for i in 0..20u64 {
            let p = port.clone();
            let t = meanwhile(move || util::post(&p, 100 + i).unwrap());
            let c = get(&port);
            assert_eq!((c.kind(), c.user()), (OpKind::Post, 100 + i));
            t.join().unwrap();
        }
    });
}

#[test]
fn operations_started_by_another_thread_complete() {
    each_backend(|_, b| {
        let port = single(b);
        let (_idle_client, _idle) = idle_recv(&port);
        claim(&port);
        let (mut client, server) = util::tcp_pair();
        let sock = port.associate(server, 2).unwrap();
        let (p, s) = (port.clone(), sock.clone());
        let t = meanwhile(move || {
            p.send(&s, b"from another thread".to_vec(), 7).unwrap();
        });
        let mut c = get(&port);
        assert_eq!((c.kind(), c.user()), (OpKind::Send, 7));
        assert_eq!(c.take_result().unwrap(), 19);
        t.join().unwrap();
        let mut got = [0u8; 19];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"from another thread");

        let (p, s) = (port.clone(), sock.clone());
        let t = meanwhile(move || {
            p.recv_pooled(&s, 8).unwrap();
        });
        t.join().unwrap();
        util::write_all(&mut client, b"back");
        let mut c = get(&port);
        assert_eq!((c.kind(), c.user()), (OpKind::Recv, 8));
        assert_eq!(c.take_result().unwrap(), 4);
        assert_eq!(c.take_buf().unwrap(), b"back");
    });
}

#[test]
fn a_cancel_from_another_thread_completes_the_operation() {
    each_backend(|_, b| {
        let port = single(b);
        let (_client, sock) = idle_recv(&port);
        claim(&port);
        let (p, s) = (port.clone(), sock.clone());
        let t = meanwhile(move || p.cancel(&s, None).unwrap());
        let c = get(&port);
        assert_eq!(c.kind(), OpKind::Recv);
        assert!(c.is_aborted(), "{:?}", c.result());
        t.join().unwrap();
        assert_eq!(port.stats().in_flight, 0);
    });
}

#[test]
fn a_close_from_another_thread_wakes_the_owner_and_drains() {
    each_backend(|_, b| {
        let port = single(b);
        let (_client, _sock) = idle_recv(&port);
        claim(&port);
        let (tx, rx) = mpsc::channel();
        let p = port.clone();
        let t = meanwhile(move || {
            p.close();
            tx.send(p.stats().in_flight).unwrap();
        });
        match port.get(Some(LONG)) {
            Err(GetError::Closed) => {}
            other => panic!("the owner sees the close: {other:?}"),
        }
        t.join().unwrap();
        assert_eq!(
            rx.recv().unwrap(),
            0,
            "close returned with nothing in flight"
        );
        assert!(util::post(&port, 1).is_err());
    });
}

#[test]
fn the_owner_exiting_closes_the_port() {
    each_backend(|_, b| {
        let port = single(b);
        let (p, (tx, rx)) = (port.clone(), mpsc::channel());
        thread::spawn(move || {
            claim(&p);
            // Left in flight when the thread goes.
            tx.send(idle_recv(&p)).unwrap();
        })
        .join()
        .unwrap();
        let (_client, _sock) = rx.recv().unwrap();
        assert!(port.is_closed());
        assert_eq!(port.stats().in_flight, 0);
        assert!(util::post(&port, 1).is_err());
    });
}

#[test]
fn a_port_nobody_dequeued_closes_from_any_thread() {
    each_backend(|_, b| {
        let port = single(b);
        let (_client, _sock) = idle_recv(&port);
        util::post(&port, 3).unwrap();
        let p = port.clone();
        thread::spawn(move || p.close()).join().unwrap();
        assert_eq!(port.stats().in_flight, 0);
        match port.get(Some(Duration::ZERO)) {
            Err(GetError::Closed) => {}
            other => panic!("closed: {other:?}"),
        }
    });
}

#[test]
fn a_dequeue_counts_one_packet_per_post() {
    // The owner rule changes nothing about the queue: FIFO, every packet once.
    each_backend(|_, b| {
        let port = single(b);
        claim(&port);
        let p = port.clone();
        thread::spawn(move || {
            for i in 0..1000u64 {
                p.post(Packet {
                    bytes: 0,
                    key: 0,
                    user: i,
                })
                .unwrap();
            }
        })
        .join()
        .unwrap();
        let mut out = Vec::new();
        while out.len() < 1000 {
            port.get_many(&mut out, 64, Some(LONG)).unwrap();
        }
        let users: Vec<u64> = out.iter().map(|c| c.user()).collect();
        assert_eq!(users, (0..1000).collect::<Vec<_>>());
    });
}

/// Reads from `peer` until the end of the stream, dequeuing on the owner
/// meanwhile (what another thread leaves the owner is done in its dequeues).
fn owner_until_eof(port: &CompletionPort, peer: &mut std::net::TcpStream) {
    peer.set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    util::wait_until("the peer to see the socket close", || {
        match port.get(Some(Duration::from_millis(10))) {
            Ok(_) | Err(GetError::TimedOut) => {}
            Err(e) => panic!("dequeue: {e}"),
        }
        match peer.read(&mut [0u8; 16]) {
            Ok(0) => true,
            Ok(n) => panic!("{n} bytes after the close"),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                false
            }
            Err(e) => panic!("read: {e}"),
        }
    });
}

#[test]
fn a_socket_closed_on_another_thread_reaches_its_peer() {
    // On io_uring the socket is in the ring's file table, whose slot only
    // the owner may clear; until it is cleared the kernel keeps it open.
    each_backend(|_, b| {
        let port = single(b);
        claim(&port);
        let (mut closed_peer, server) = util::tcp_pair();
        let closed = port.associate(server, 1).unwrap();
        // This one's multishot receive stays armed when it is dropped.
        let (mut dropped_peer, server) = util::tcp_pair();
        let dropped = port.associate(server, 2).unwrap();
        port.recv_pooled(&dropped, 2).unwrap();
        util::write_all(&mut dropped_peer, b"x");
        let mut c = get(&port);
        assert_eq!((c.kind(), c.user()), (OpKind::Recv, 2));
        port.recycle(c.take_buf().unwrap());
        drop(c);
        thread::spawn(move || {
            closed.close();
            drop(closed);
            drop(dropped);
        })
        .join()
        .unwrap();
        owner_until_eof(&port, &mut closed_peer);
        owner_until_eof(&port, &mut dropped_peer);
    });
}

#[test]
fn a_descriptor_number_used_again_names_the_new_socket() {
    // Each socket closed here frees the lowest descriptor number, which the
    // next one takes; on io_uring the number is its slot in the file table.
    // Without the table (`registered_files(false)`) the number is all there is.
    each_backend(|backend, _| {
        for (shared, files) in [(false, true), (true, true), (false, false), (true, false)] {
            let b = CompletionPort::builder()
                .backend(backend)
                .registered_files(files);
            let port = if shared {
                b.build().unwrap()
            } else {
                single(b)
            };
            if backend == Backend::IoUring {
                let why = port.backend_reason();
                assert_eq!(why.contains("registered file slots"), files, "{why}");
            }
            for round in 0..20u64 {
                let (mut client, server) = util::tcp_pair();
                let sock = port.associate(server, round).unwrap();
                let data = util::pattern(50 + round as usize, round);
                port.send(&sock, data.clone(), round).unwrap();
                let mut c = get(&port);
                assert_eq!((c.kind(), c.key(), c.user()), (OpKind::Send, round, round));
                assert_eq!(c.take_result().unwrap(), data.len());
                drop(c);
                assert_eq!(util::read_n(&mut client, data.len()).unwrap(), data);
                sock.close();
                drop(sock);
                owner_until_eof(&port, &mut client);
            }
        }
    });
}
