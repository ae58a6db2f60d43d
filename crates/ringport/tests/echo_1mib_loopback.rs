//! 1 MiB echoed through loopback, every byte verified: accept, connect, recv
//! and send on one port with two worker threads, handling partial sends.

mod util;

use std::net::SocketAddr;
use std::thread;

use ringport::{Completion, CompletionPort, Handle, OpKind};
use util::{each_backend, port};

const TOTAL: usize = 1 << 20;
const CHUNK: usize = 16 * 1024;
const SERVER: u64 = 1;
const CLIENT: u64 = 2;

#[test]
fn one_mib_byte_verified() {
    each_backend(|backend, _| {
        let port = port(backend, 2);
        let (listener, addr) = util::listener();
        let l = port.associate(listener, 0).unwrap();
        port.accept(&l, 0).unwrap();
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let client = port.associate(sock, CLIENT).unwrap();
        port.connect(&client, addr, 0).unwrap();
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let port = port.clone();
                thread::spawn(move || worker(&port, addr))
            })
            .collect();
        let echoed: Vec<u8> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        assert_eq!(echoed.len(), TOTAL);
        assert!(echoed == util::pattern(TOTAL, 42), "echoed bytes differ");
    });
}

/// Runs until the client has read back everything; returns what the client
/// received if this worker saw the end (the other returns empty).
fn worker(port: &CompletionPort, addr: SocketAddr) -> Vec<u8> {
    let mut received = Vec::new();
    loop {
        let c = match port.get(Some(util::LONG)) {
            Ok(c) => c,
            Err(ringport::GetError::Closed) => return received,
            Err(e) => panic!("{e}"),
        };
        if c.kind() == OpKind::Post {
            return received;
        }
        if let Some(done) = step(port, c, addr) {
            received = done;
            port.close();
        }
    }
}

/// Handles one completion; the client side collects the echo in its user
/// value-tagged buffers and returns it when complete.
fn step(port: &CompletionPort, mut c: Completion, _addr: SocketAddr) -> Option<Vec<u8>> {
    let n = c
        .take_result()
        .unwrap_or_else(|e| panic!("{:?} failed: {e}", c.kind()));
    match (c.kind(), c.key()) {
        (OpKind::Accept, _) => {
            let (stream, peer) = c.take_accepted().unwrap();
            assert!(peer.ip().is_loopback());
            let h = port.associate(stream, SERVER).unwrap();
            port.recv(&h, Vec::with_capacity(CHUNK), 0).unwrap();
        }
        (OpKind::Connect, _) => {
            let h = c.handle().unwrap().clone();
            port.send(&h, util::pattern(TOTAL, 42), 0).unwrap();
            port.recv(&h, Vec::with_capacity(TOTAL), 0).unwrap();
        }
        (OpKind::Recv, SERVER) => {
            let h = c.handle().unwrap().clone();
            assert!(n > 0, "client never closes first");
            port.send(&h, c.take_buf().unwrap(), 0).unwrap();
        }
        (OpKind::Send, SERVER) => {
            let h = c.handle().unwrap().clone();
            let mut buf = c.take_buf().unwrap();
            if n < buf.len() {
                buf.drain(..n); // partial send: the rest goes again
                port.send(&h, buf, 0).unwrap();
            } else {
                buf.clear();
                port.recv(&h, buf, 0).unwrap();
            }
        }
        (OpKind::Send, CLIENT) => {
            let mut buf = c.take_buf().unwrap();
            if n < buf.len() {
                buf.drain(..n);
                port.send(c.handle().unwrap(), buf, 0).unwrap();
            }
        }
        (OpKind::Recv, CLIENT) => {
            assert!(n > 0, "server closed early");
            let buf = c.take_buf().unwrap();
            if buf.len() == TOTAL {
                return Some(buf);
            }
            port.recv(c.handle().unwrap(), buf, 0).unwrap();
        }
        other => panic!("unexpected completion {other:?}"),
    }
    let _: Option<Handle> = None;
    None
}
