//! R13, R14: accept and connect are overlapped operations; accept completes
//! with the connected socket and the peer address; a zero-byte receive means
//! the peer closed its side.

mod util;

use std::io::Read;
use std::net::{Shutdown, TcpStream};

use ringport::OpKind;
use util::{each_backend, port};

#[test]
fn accept_gives_socket_and_peer_address() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let (listener, addr) = util::listener();
        let l = port.associate(listener, 1).unwrap();
        for u in 0..3 {
            port.accept(&l, u).unwrap();
        }
        let clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut peers = Vec::new();
        for _ in 0..3 {
            let mut c = util::get(&port);
            assert_eq!((c.kind(), c.key()), (OpKind::Accept, 1));
            c.take_result().unwrap();
            let (stream, peer) = c.take_accepted().unwrap();
            assert_eq!(stream.peer_addr().unwrap(), peer);
            assert_eq!(stream.local_addr().unwrap(), addr);
            peers.push(peer);
        }
        let mut want: Vec<_> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
        want.sort();
        peers.sort();
        assert_eq!(peers, want);
    });
}

#[test]
fn accepted_socket_works_on_the_port() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let (listener, addr) = util::listener();
        let l = port.associate(listener, 1).unwrap();
        port.accept(&l, 0).unwrap();
        let mut client = TcpStream::connect(addr).unwrap();
        let mut c = util::get(&port);
        let (stream, _) = c.take_accepted().unwrap();
        let s = port.associate(stream, 2).unwrap();
        port.send(&s, b"welcome".to_vec(), 0).unwrap();
        assert_eq!(util::get(&port).result().as_ref().unwrap(), &7);
        assert_eq!(util::read_n(&mut client, 7).unwrap(), b"welcome");
    });
}

#[test]
fn ipv6_loopback_accept_and_connect() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let Ok(listener) = std::net::TcpListener::bind("[::1]:0") else {
            eprintln!("SKIP: no IPv6 loopback here");
            return;
        };
        let addr = listener.local_addr().unwrap();
        let l = port.associate(listener, 1).unwrap();
        port.accept(&l, 0).unwrap();
        let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        let h = port.associate(s, 2).unwrap();
        port.connect(&h, addr, 0).unwrap();
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let mut c = util::get(&port);
            c.take_result().unwrap();
            if c.kind() == OpKind::Accept {
                let (_, peer) = c.take_accepted().unwrap();
                assert!(peer.is_ipv6());
            }
            kinds.push(c.kind());
        }
        kinds.sort_by_key(|k| *k as u8);
        assert_eq!(kinds, [OpKind::Accept, OpKind::Connect]);
    });
}

#[test]
fn connect_then_exchange() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let (listener, addr) = util::listener();
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let h = port.associate(s, 5).unwrap();
        port.connect(&h, addr, 1).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let mut c = util::get(&port);
        assert_eq!((c.kind(), c.key(), c.user()), (OpKind::Connect, 5, 1));
        assert_eq!(c.take_result().unwrap(), 0);
        port.send(&h, b"ping".to_vec(), 2).unwrap();
        // This thread runs on the port (it dequeued), so its send is batched
        // until it dequeues again or, as here, announces that it blocks.
        let mut buf = [0; 4];
        {
            let _blocked = port.blocking();
            server.read_exact(&mut buf).unwrap();
        }
        assert_eq!(&buf, b"ping");
        assert_eq!(util::get(&port).user(), 2);
    });
}

#[test]
fn zero_byte_recv_means_peer_closed() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let (client, server) = util::tcp_pair();
        let h = port.associate(server, 1).unwrap();
        port.recv(&h, Vec::with_capacity(64), 0).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut c = util::get(&port);
        assert_eq!(c.take_result().unwrap(), 0);
        assert!(c.take_buf().unwrap().is_empty());
        // Half-closed: this side can still send to the peer.
        port.send(&h, b"still here".to_vec(), 1).unwrap();
        assert_eq!(util::get(&port).result().as_ref().unwrap(), &10);
        let mut client = client;
        assert_eq!(util::read_n(&mut client, 10).unwrap(), b"still here");
    });
}

#[test]
fn send_to_a_reset_peer_fails_without_sigpipe() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let (client, server) = util::tcp_pair();
        let h = port.associate(server, 1).unwrap();
        socket2::SockRef::from(&client)
            .set_linger(Some(std::time::Duration::ZERO))
            .unwrap();
        drop(client); // RST
        let mut failed = false;
        for _ in 0..50 {
            port.send(&h, vec![0; 65536], 0).unwrap();
            if util::get(&port).result().is_err() {
                failed = true;
                break;
            }
        }
        assert!(
            failed,
            "sending to a reset peer must fail (and not kill us)"
        );
    });
}

/// Operations started by a thread that then exits still complete.
#[test]
fn operations_outlive_the_thread_that_started_them() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let (mut client, server) = util::tcp_pair();
        let h = port.associate(server, 1).unwrap();
        {
            let (port, h) = (port.clone(), h.clone());
            std::thread::spawn(move || {
                port.recv(&h, Vec::with_capacity(8), 77).unwrap();
            })
            .join()
            .unwrap();
        }
        util::write_all(&mut client, b"later");
        let mut c = util::get(&port);
        assert_eq!(c.user(), 77);
        assert_eq!(c.take_buf().unwrap(), b"later");
    });
}

/// An accept started by a thread that exits still completes with the socket.
#[test]
fn accept_outlives_the_thread_that_started_it() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let (listener, addr) = util::listener();
        let l = port.associate(listener, 1).unwrap();
        {
            let (port, l) = (port.clone(), l.clone());
            std::thread::spawn(move || port.accept(&l, 5).unwrap())
                .join()
                .unwrap();
        }
        let _client = TcpStream::connect(addr).unwrap();
        let mut c = util::get(&port);
        assert_eq!(c.user(), 5);
        c.take_result().unwrap();
        assert!(c.take_accepted().is_some());
    });
}

/// A connect still in progress when the thread that started it exits still
/// completes, connected. The listener's accept queue is full, so the SYN is
/// dropped and the connect stays in progress until a retransmission.
#[test]
fn connect_outlives_the_thread_that_started_it() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        l.bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
        l.listen(0).unwrap();
        let addr = l.local_addr().unwrap().as_socket().unwrap();
        // Fill the accept queue (a backlog of 0 holds one connection).
        let fillers: Vec<TcpStream> = (0..2).filter_map(|_| connect_briefly(addr)).collect();
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let h = port.associate(s, 3).unwrap();
        {
            let (port, h) = (port.clone(), h.clone());
            std::thread::spawn(move || port.connect(&h, addr, 9).unwrap())
                .join()
                .unwrap();
        }
        // Make room: the retransmitted SYN then gets through.
        let mut accepted = Vec::new();
        l.set_nonblocking(true).unwrap();
        let mut c = loop {
            while let Ok((s, _)) = l.accept() {
                accepted.push(s);
            }
            if let Ok(c) = port.get(Some(std::time::Duration::from_millis(50))) {
                break c;
            }
        };
        assert_eq!(c.user(), 9);
        assert_eq!(c.take_result().unwrap(), 0);
        h.with_socket(|s| s.peer_addr().map(|_| ())).unwrap();
        drop(fillers);
    });
}

fn connect_briefly(addr: std::net::SocketAddr) -> Option<TcpStream> {
    TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)).ok()
}
