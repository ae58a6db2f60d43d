//! A closed handle's descriptor number, reused by a new socket, never
//! receives the old handle's completions (and the old handle's operations
//! never touch the new socket).
//!
//! Linux only: it relies on the lowest free descriptor number being reused.
#![cfg(target_os = "linux")]

mod util;

use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

use util::{assert_nothing_more, each_backend, port};

#[test]
fn reused_number_gets_only_its_own_completions() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let mut reused = 0;
        let (listener, addr) = util::listener();
        for round in 0..50u64 {
            let _old_peer = TcpStream::connect(addr).unwrap();
            let (old, _) = listener.accept().unwrap();
            let old_fd = old.as_raw_fd();
            let old_h = port.associate(old, 1000 + round).unwrap();
            for u in 0..4 {
                port.recv(&old_h, Vec::with_capacity(16), u).unwrap();
            }
            // The next peer connects first, so its number is not the old one.
            let mut new_peer = TcpStream::connect(addr).unwrap();
            old_h.close();
            // Every old operation completes aborted, with the old key.
            for _ in 0..4 {
                let c = util::get(&port);
                assert_eq!(c.key(), 1000 + round);
                assert!(c.is_aborted(), "{:?}", c.result());
            }
            drop(old_h);
            // The number is free again now; the lowest free number goes to
            // the next accepted socket.
            let (new, _) = listener.accept().unwrap();
            if new.as_raw_fd() == old_fd {
                reused += 1;
            }
            let new_h = port.associate(new, 2000 + round).unwrap();
            port.recv(&new_h, Vec::with_capacity(16), 7).unwrap();
            util::write_all(&mut new_peer, b"new");
            let mut c = util::get(&port);
            assert_eq!((c.key(), c.user()), (2000 + round, 7));
            assert_eq!(c.take_buf().unwrap(), b"new");
            assert_nothing_more(&port, Duration::ZERO);
        }
        eprintln!("descriptor number reused in {reused} of 50 rounds");
        assert!(reused > 0, "the test never exercised reuse");
    });
}
