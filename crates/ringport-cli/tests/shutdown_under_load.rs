//! SIGTERM while clients are busy: every connection is closed, every
//! operation completes (none lost), every worker exits, exit status 0.

#![cfg(unix)] // the tests drive a child process with Unix signals and rlimits

mod util;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use util::{connect, Rng, Server};

/// Two workers on one port.
#[test]
fn shutdown_under_load_loses_no_packet() {
    shutdown_under_load(2, &["--ports", "shared"]);
}

/// A port per worker: the shutdown closes every port's connections, and
/// every port served some.
#[test]
fn shutdown_under_load_with_a_port_per_worker_loses_no_packet() {
    let Some(c) = shutdown_under_load(2, &["--ports", "per-thread"]) else {
        return;
    };
    for n in c.admitted_by_port(2) {
        assert!(n > 0, "{c:?}");
    }
}

/// One worker: a single-thread port, whose ring only that worker enters; the
/// shutdown's closes and cancels come from the main thread.
#[test]
fn shutdown_under_load_with_one_worker_loses_no_packet() {
    shutdown_under_load(1, &[]);
}

/// The final counters, or None when the backend cannot run here.
fn shutdown_under_load(threads: u64, more: &[&str]) -> Option<util::Counters> {
    let b = util::backend()?;
    const CLIENTS: usize = 32;
    let t = threads.to_string();
    let mut args = vec!["--threads", &t, "--stats-interval", "0.2"];
    args.extend_from_slice(more);
    let server = Server::start(&b, &args);
    let echoed = Arc::new(AtomicU64::new(0));
    // Set by each client after its first echo, so every connection is
    // accepted and busy when the signal comes.
    let served: Vec<Arc<AtomicU64>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (addr, echoed) = (server.addr, echoed.clone());
            let first = served[i].clone();
            thread::spawn(move || {
                let mut s = connect(addr);
                let mut rng = Rng(100 + i as u64);
                // Echo until the server goes away; every byte that does come
                // back must be right.
                loop {
                    let n = 1 + (rng.next() as usize) % 8192;
                    let data = rng.bytes(n);
                    if s.write_all(&data).is_err() {
                        return;
                    }
                    let mut back = vec![0; data.len()];
                    let mut got = 0;
                    while got < back.len() {
                        match s.read(&mut back[got..]) {
                            Ok(0) | Err(_) => {
                                assert!(back[..got] == data[..got], "echoed bytes differ");
                                return;
                            }
                            Ok(n) => got += n,
                        }
                    }
                    assert!(back == data, "echoed bytes differ");
                    echoed.fetch_add(1, Ordering::Relaxed);
                    first.store(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + util::LONG;
    while served.iter().any(|f| f.load(Ordering::Relaxed) == 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "a client was never served"
        );
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(Duration::from_millis(500));
    assert!(
        echoed.load(Ordering::Relaxed) > 0,
        "no echo before shutdown"
    );
    let c = server.stop();
    for h in clients {
        h.join().expect("client");
    }
    assert_eq!(c.get("accepted"), CLIENTS as u64, "{c:?}");
    assert!(c.get("closed_at_shutdown") > 0, "{c:?}");
    assert!(c.get("ops_cancelled") > 0, "{c:?}");
    c.assert_clean(threads);
    Some(c)
}
