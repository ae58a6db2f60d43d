//! The pooled receive: a receive that parks no buffer while its socket is
//! idle, picks one from the port's pool when data arrives, and hands it over
//! in the completion (issue 7; `IORING_OP_RECV` with a provided-buffer ring
//! on io_uring).

mod util;

use std::collections::HashMap;
use std::io::Read;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use ringport::{Backend, Builder, CompletionPort, GetError, Handle, OpKind};
use util::{assert_nothing_more, each_backend};

fn pooled_port(b: ringport::Builder, count: usize, size: usize) -> CompletionPort {
    b.concurrency(1).recv_buffers(count, size).build().unwrap()
}

/// A port with 8 pool buffers of 1 KiB, and a connected pair whose server
/// side is associated with it (key 1).
fn connected(b: Builder) -> (CompletionPort, TcpStream, Handle) {
    let port = pooled_port(b, 8, 1024);
    let (client, server) = util::tcp_pair();
    let sock = port.associate(server, 1).unwrap();
    (port, client, sock)
}

/// Runs `f` once per backend, and on io_uring once more with multishot
/// receives off (`Builder::multishot_recv(false)`): pooled receives then go
/// to the kernel one at a time, the way kernels before 6.0 take them.
fn each_mode(mut f: impl FnMut(Backend, Builder)) {
    each_backend(|backend, b| {
        f(backend, b.clone());
        if backend == Backend::IoUring {
            eprintln!("-- backend io_uring, multishot receives off");
            f(backend, b.multishot_recv(false));
        }
    });
}

#[test]
fn data_arrives_in_a_pool_buffer() {
    each_mode(|_, b| {
        let port = pooled_port(b, 8, 4096);
        let (mut client, server) = util::tcp_pair();
        let sock = port.associate(server, 3).unwrap();
        let id = port.recv_pooled(&sock, 11).unwrap();
        util::write_all(&mut client, b"pooled hello");
        let mut c = util::get(&port);
        assert_eq!(
            (c.kind(), c.key(), c.user(), c.id()),
            (OpKind::Recv, 3, 11, Some(id))
        );
        assert_eq!(c.take_result().unwrap(), 12);
        let buf = c.take_buf().unwrap();
        assert_eq!(buf, b"pooled hello");
        assert!(buf.capacity() >= 4096);
        port.recycle(buf);
    });
}

#[test]
fn zero_bytes_when_the_peer_closes() {
    each_mode(|_, b| {
        let (port, client, sock) = connected(b);
        port.recv_pooled(&sock, 0).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut c = util::get(&port);
        assert_eq!(c.take_result().unwrap(), 0);
        assert!(c.take_buf().unwrap_or_default().is_empty());
    });
}

#[test]
fn cancel_completes_without_a_buffer() {
    each_mode(|_, b| {
        let (port, _client, sock) = connected(b);
        let id = port.recv_pooled(&sock, 0).unwrap();
        port.cancel(&sock, Some(id)).unwrap();
        let mut c = util::get(&port);
        assert!(c.is_aborted(), "{:?}", c.result());
        assert!(c.take_buf().unwrap_or_default().is_empty());
        assert_nothing_more(&port, Duration::from_millis(20));
    });
}

/// Far more connections receive at once than the pool has buffers: the
/// receives that find the pool empty wait for a buffer and still complete,
/// every byte in place, and buffers the caller never recycles are replaced.
#[test]
fn more_receivers_than_buffers() {
    each_mode(|_, b| {
        let port = pooled_port(b, 4, 256);
        const CONNS: usize = 64;
        const MSG: usize = 100;
        let mut peers = Vec::new();
        let mut got: HashMap<u64, Vec<u8>> = HashMap::new();
        for k in 0..CONNS {
            let (client, server) = util::tcp_pair();
            let h = port.associate(server, k as u64).unwrap();
            port.recv_pooled(&h, 0).unwrap();
            got.insert(k as u64, Vec::new());
            peers.push(client);
        }
        for round in 0..3u64 {
            for (k, p) in peers.iter_mut().enumerate() {
                util::write_all(p, &util::pattern(MSG, round * 1000 + k as u64));
            }
            let target = MSG * (round as usize + 1);
            let mut done = 0;
            while done < CONNS {
                let mut c = util::get(&port);
                let n = c.take_result().unwrap();
                assert!(n > 0);
                let buf = c.take_buf().unwrap();
                assert_eq!(n, buf.len());
                let mine = got.get_mut(&c.key()).unwrap();
                mine.extend_from_slice(&buf);
                if mine.len() >= target {
                    done += 1;
                }
                port.recv_pooled(c.handle().unwrap(), 0).unwrap();
                if c.key() % 2 == 0 {
                    port.recycle(buf); // half are recycled, half dropped
                }
            }
        }
        for (k, bytes) in got {
            let want: Vec<u8> = (0..3u64)
                .flat_map(|r| util::pattern(MSG, r * 1000 + k))
                .collect();
            assert_eq!(bytes, want, "connection {k}");
        }
    });
}

/// Idle connections with pooled receives pending hold no buffer: the port's
/// count of buffers handed out stays at the pool's own.
#[test]
fn idle_receives_hold_no_buffer() {
    each_mode(|backend, b| {
        let port = pooled_port(b, 16, 64 * 1024);
        let mut peers = Vec::new();
        let mut handles = Vec::new();
        for k in 0..200 {
            let (client, server) = util::tcp_pair();
            let h = port.associate(server, k).unwrap();
            port.recv_pooled(&h, 0).unwrap();
            peers.push(client);
            handles.push(h);
        }
        let s = port.stats();
        eprintln!("{backend}: {s:?}");
        assert_eq!(s.in_flight, 200);
        assert!(
            s.pool_buffers <= 16,
            "200 idle receives must not hold 200 buffers: {s:?}"
        );
    });
}

/// Whether the data is there before the receive starts or comes after, and
/// whether the last receive emptied the socket or left data in it, every
/// receive gets exactly the next bytes (on io_uring a receive after one that
/// emptied its socket waits for readability first, `IORING_RECVSEND_POLL_FIRST`;
/// one after a receive that left data tries at once).
#[test]
fn every_receive_gets_the_next_bytes_whenever_they_arrive() {
    each_mode(|_, b| {
        let (port, mut client, sock) = connected(b);
        let recv = |port: &CompletionPort| {
            port.recv_pooled(&sock, 0).unwrap();
            let mut c = util::get(port);
            let n = c.take_result().unwrap();
            let buf = c.take_buf().unwrap();
            assert_eq!(buf.len(), n);
            buf
        };
        // Data first, then the receive; the socket is emptied.
        util::write_all(&mut client, b"one");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(recv(&port), b"one");
        // Again data before the receive, after a receive that emptied it.
        util::write_all(&mut client, b"two");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(recv(&port), b"two");
        // The receive first, the data later.
        let late = util::pattern(3000, 7);
        let id = port.recv_pooled(&sock, 5).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        util::write_all(&mut client, &late);
        let mut c = util::get(&port);
        assert_eq!((c.user(), c.id()), (5, Some(id)));
        let mut got = c.take_buf().unwrap();
        assert!((1..=1024).contains(&got.len()), "{}", got.len());
        // Receives after one that left data behind.
        while got.len() < late.len() {
            got.extend_from_slice(&recv(&port));
        }
        assert_eq!(got, late);
        assert_nothing_more(&port, Duration::from_millis(20));
    });
}

/// Several pooled receives on one socket complete once each, each with the
/// next bytes. Which of them completes first is the kernel's choice (on
/// io_uring each waits for readability on its own), as DESIGN.md section 1
/// allows for I/O on one handle.
#[test]
fn several_receives_on_one_socket_each_complete_once() {
    each_mode(|_, b| {
        let (port, mut client, sock) = connected(b);
        let ids: Vec<_> = (0..3)
            .map(|u| port.recv_pooled(&sock, u).unwrap())
            .collect();
        let mut seen = Vec::new();
        for msg in [&b"first"[..], b"second", b"third"] {
            util::write_all(&mut client, msg);
            let mut c = util::get(&port);
            assert_eq!(c.id(), Some(ids[c.user() as usize]));
            assert_eq!(c.take_buf().unwrap(), msg);
            seen.push(c.user());
        }
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2], "each receive exactly once");
        assert_nothing_more(&port, Duration::from_millis(20));
        assert_eq!(port.stats().in_flight, 0);
    });
}

/// A socket the program stops reading keeps what comes next for the next
/// receive, in order, with nothing lost or repeated; closing it then gives
/// everything back.
#[test]
fn data_sent_while_nobody_receives_waits_for_the_next_receive() {
    each_mode(|_, b| {
        let port = pooled_port(b, 16, 1024);
        let (mut client, server) = util::tcp_pair();
        let sock = port.associate(server, 1).unwrap();
        port.recv_pooled(&sock, 0).unwrap();
        util::write_all(&mut client, b"hello");
        let mut c = util::get(&port);
        assert_eq!(c.take_buf().unwrap(), b"hello");
        drop(c);
        // Nobody receives: 64 KiB in small pieces (well within the socket's
        // buffers), while other completions keep the port busy.
        let data = util::pattern(64 * 1024, 3);
        for (i, piece) in data.chunks(700).enumerate() {
            util::write_all(&mut client, piece);
            util::post(&port, i as u64).unwrap();
            let _ = util::get(&port);
        }
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(port.stats().in_flight, 0, "no receive of the caller's");
        let mut got = Vec::new();
        while got.len() < data.len() {
            port.recv_pooled(&sock, 1).unwrap();
            let mut c = util::get(&port);
            assert_eq!((c.kind(), c.user()), (OpKind::Recv, 1));
            let n = c.take_result().unwrap();
            assert!(n > 0, "data, not the end of the stream");
            let buf = c.take_buf().unwrap();
            assert_eq!(buf.len(), n);
            got.extend_from_slice(&buf);
            port.recycle(buf);
        }
        assert_eq!(got, data);
        assert_nothing_more(&port, Duration::from_millis(20));
        util::write_all(&mut client, b"unread");
        std::thread::sleep(Duration::from_millis(20));
        sock.close();
        client.set_read_timeout(Some(util::LONG)).unwrap();
        let mut b = [0; 1];
        // Closed with data unread: a reset, or the end of the stream (not a
        // timeout: the socket must close with nothing of the caller's in
        // flight, though nothing dequeues).
        match client.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("the socket did not close: {other:?}"),
        }
        util::wait_until("nothing in flight", || port.stats().in_flight == 0);
    });
}

#[test]
fn cancelling_one_waiting_receive_leaves_the_next() {
    each_mode(|_, b| {
        let (port, mut client, sock) = connected(b);
        let first = port.recv_pooled(&sock, 1).unwrap();
        let second = port.recv_pooled(&sock, 2).unwrap();
        port.cancel(&sock, Some(first)).unwrap();
        let c = util::get(&port);
        assert_eq!((c.user(), c.id()), (1, Some(first)));
        assert!(c.is_aborted());
        util::write_all(&mut client, b"for the second");
        let mut c = util::get(&port);
        assert_eq!((c.user(), c.id()), (2, Some(second)));
        assert_eq!(c.take_buf().unwrap(), b"for the second");
        assert_nothing_more(&port, Duration::from_millis(20));
    });
}

/// The last handle dropped after a pooled receive completed closes the
/// socket, as with any handle that has nothing in flight (a port that keeps
/// a receive of its own armed must end it then).
#[test]
fn dropping_the_last_handle_after_a_receive_closes_the_socket() {
    each_mode(|_, b| {
        let (port, mut client, sock) = connected(b);
        port.recv_pooled(&sock, 0).unwrap();
        util::write_all(&mut client, b"ping");
        let mut c = util::get(&port);
        assert_eq!(c.take_result().unwrap(), 4);
        assert_eq!(port.stats().in_flight, 0);
        drop(c);
        drop(sock);
        client.set_read_timeout(Some(util::LONG)).unwrap();
        let mut b = [0; 1];
        assert_eq!(client.read(&mut b).unwrap(), 0, "last handle gone: closed");
    });
}

/// A peer that keeps sending to a socket whose program stopped receiving is
/// held back by TCP: the port takes at most a few buffers of it off the
/// socket (a multishot receive is stopped once 4 results wait), never all of
/// it. Then every byte still comes, in order, to the receives that follow.
#[test]
fn a_peer_sending_to_a_socket_nobody_receives_on_is_held_back() {
    each_mode(|_, b| {
        let port = pooled_port(b, 16, 16 * 1024);
        let (mut client, server) = util::tcp_pair();
        let sock = port.associate(server, 1).unwrap();
        port.recv_pooled(&sock, 0).unwrap();
        util::write_all(&mut client, b"x");
        let c = util::get(&port);
        assert_eq!(c.result().as_ref().ok(), Some(&1));
        drop(c);
        // Nobody receives now. Far more than the socket buffers hold, sent
        // without blocking while the port keeps reaping (posts).
        const LIMIT: usize = 256 << 20;
        let data = util::pattern(LIMIT, 9);
        client.set_nonblocking(true).unwrap();
        let (mut sent, mut stuck) = (0, 0);
        while sent < LIMIT && stuck < 50 {
            match std::io::Write::write(&mut client, &data[sent..(sent + 64 * 1024).min(LIMIT)]) {
                Ok(n) => {
                    sent += n;
                    stuck = 0;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    stuck += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => panic!("send: {e}"),
            }
            util::post(&port, 0).unwrap();
            let _ = util::get(&port);
        }
        assert!(
            sent < LIMIT,
            "the peer was never held back ({sent} bytes taken)"
        );
        client.set_nonblocking(false).unwrap();
        // Every byte, in order, to the receives that follow.
        let mut got = Vec::with_capacity(sent);
        while got.len() < sent {
            port.recv_pooled(&sock, 1).unwrap();
            let mut c = util::get(&port);
            let n = c.take_result().unwrap();
            assert!(n > 0, "data, not the end of the stream");
            let buf = c.take_buf().unwrap();
            got.extend_from_slice(&buf);
            port.recycle(buf);
        }
        assert!(got == data[..sent], "the bytes came back in order");
        assert_nothing_more(&port, Duration::from_millis(20));
    });
}

/// Dropping the last handle of a socket that has data kept for it (nobody
/// received it) closes the socket, with nothing dequeued after, and leaves
/// no descriptor behind.
#[test]
fn dropping_a_socket_with_data_kept_for_it_closes_it() {
    each_mode(|_, b| {
        let port = pooled_port(b, 8, 1024);
        let before = util::open_fds();
        let (mut client, server) = util::tcp_pair();
        let sock = port.associate(server, 1).unwrap();
        port.recv_pooled(&sock, 0).unwrap();
        util::write_all(&mut client, b"one");
        drop(util::get(&port));
        util::write_all(&mut client, b"two, nobody receives it");
        // Let the port reap it (a post goes through a dequeue).
        std::thread::sleep(Duration::from_millis(20));
        util::post(&port, 0).unwrap();
        drop(util::get(&port));
        drop(sock);
        client.set_read_timeout(Some(util::LONG)).unwrap();
        let mut b = [0; 1];
        match client.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("the socket did not close: {other:?}"),
        }
        drop(client);
        util::wait_until("no descriptor left", || util::open_fds() <= before);
        assert_eq!(port.stats().in_flight, 0);
    });
}

/// Closing the port with pooled receives waiting on many sockets (and data
/// kept for some) gives every operation back and closes every socket once
/// its handles are gone.
#[test]
fn closing_the_port_with_receives_waiting_closes_every_socket() {
    each_mode(|_, b| {
        let port = pooled_port(b, 8, 1024);
        let before = util::open_fds();
        let mut peers = Vec::new();
        let mut handles = Vec::new();
        for k in 0..20u64 {
            let (client, server) = util::tcp_pair();
            let h = port.associate(server, k).unwrap();
            port.recv_pooled(&h, 0).unwrap();
            peers.push(client);
            handles.push(h);
        }
        // Every fourth socket's receive completes, and more data comes for
        // it, which nobody receives; every eighth starts another receive.
        for k in (0..20).step_by(4) {
            util::write_all(&mut peers[k], b"first");
        }
        let mut done: Vec<u64> = (0..5)
            .map(|_| {
                let c = util::get(&port);
                assert_eq!(c.result().as_ref().ok(), Some(&5));
                c.key()
            })
            .collect();
        done.sort_unstable();
        assert_eq!(done, [0, 4, 8, 12, 16]);
        for k in (0..20).step_by(4) {
            util::write_all(&mut peers[k], b"kept");
        }
        std::thread::sleep(Duration::from_millis(20));
        util::post(&port, 0).unwrap();
        drop(util::get(&port));
        for k in (0..20).step_by(8) {
            port.recv_pooled(&handles[k], 1).unwrap();
        }
        port.close();
        assert!(matches!(
            port.get(Some(Duration::ZERO)),
            Err(GetError::Closed)
        ));
        assert_eq!(port.stats().in_flight, 0, "every operation given back");
        drop(handles);
        for mut client in peers {
            client.set_read_timeout(Some(util::LONG)).unwrap();
            let mut buf = [0; 16];
            match client.read(&mut buf) {
                Ok(0) => {}
                Ok(n) => panic!("{n} bytes sent to the peer; nothing should be"),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                Err(e) => panic!("the socket did not close: {e}"),
            }
        }
        util::wait_until("no descriptor left", || util::open_fds() <= before);
    });
}
