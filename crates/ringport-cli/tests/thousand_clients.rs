//! 1,000 clients at once, each sending messages of random sizes; every byte
//! that comes back is checked, and the server's counters must add up.

#![cfg(unix)] // the tests drive a child process with Unix signals and rlimits

mod util;

use std::io::{Read, Write};
use std::thread;

use util::{connect, Rng, Server};

const CLIENTS: usize = 1000;
const THREADS: usize = 8;
const ROUNDS: usize = 3;
const MAX_SIZE: usize = 32 * 1024;

/// Two workers on one port.
#[test]
fn thousand_clients_random_sizes_byte_verified() {
    let Some(c) = thousand_clients(&["--threads", "2", "--ports", "shared"]) else {
        return;
    };
    c.assert_clean(2);
}

/// Three workers with a port each: the first one's accepts are dealt out in
/// turn, so every port takes a third of the clients.
#[test]
fn thousand_clients_on_a_port_per_worker() {
    let Some(c) = thousand_clients(&["--threads", "3", "--ports", "per-thread"]) else {
        return;
    };
    c.assert_clean(3);
    let by_port = c.admitted_by_port(3);
    assert_eq!(by_port.iter().sum::<u64>(), CLIENTS as u64, "{c:?}");
    for n in &by_port {
        assert!(
            n.abs_diff(CLIENTS as u64 / 3) <= 1,
            "not dealt in turn: {by_port:?}"
        );
    }
}

/// The final counters, or None when the backend cannot run here.
fn thousand_clients(args: &[&str]) -> Option<util::Counters> {
    let b = util::backend()?;
    util::raise_nofile(8192);
    let server = Server::start(&b, args);
    let addr = server.addr;
    let per = CLIENTS / THREADS;
    let sent: u64 = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                let mut rng = Rng(0x1234_5678 + t as u64);
                let mut conns: Vec<_> = (0..per).map(|_| connect(addr)).collect();
                let mut total = 0u64;
                for _ in 0..ROUNDS {
                    let msgs: Vec<Vec<u8>> = conns
                        .iter()
                        .map(|_| {
                            let n = 1 + (rng.next() as usize) % MAX_SIZE;
                            rng.bytes(n)
                        })
                        .collect();
                    for (c, m) in conns.iter_mut().zip(&msgs) {
                        c.write_all(m).expect("write");
                    }
                    for (c, m) in conns.iter_mut().zip(&msgs) {
                        let mut back = vec![0; m.len()];
                        c.read_exact(&mut back).expect("read the echo");
                        assert!(&back == m, "echoed bytes differ");
                        total += m.len() as u64;
                    }
                }
                // Orderly close: the server sees EOF on every connection.
                for c in &conns {
                    c.shutdown(std::net::Shutdown::Write).unwrap();
                }
                for c in &mut conns {
                    assert_eq!(c.read(&mut [0; 1]).expect("EOF"), 0);
                }
                total
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .sum();
    let c = server.stop();
    assert_eq!(c.get("accepted"), CLIENTS as u64);
    assert_eq!(c.get("closed_by_peer"), CLIENTS as u64);
    assert_eq!(c.get("bytes_echoed"), sent);
    assert_eq!(c.get("reset") + c.get("io_errors"), 0);
    Some(c)
}
