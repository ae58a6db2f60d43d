//! Clients that misbehave: resets mid-message, senders that never read, slow
//! drips, half-closes, too many connections. The server's counters say what
//! it did about each.

#![cfg(unix)] // the tests drive a child process with Unix signals and rlimits

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use util::{connect, echo, Rng, Server};

#[test]
fn reset_mid_message_is_counted_and_survived() {
    let Some(b) = util::backend() else { return };
    const N: usize = 20;
    let server = Server::start(&b, &["--threads", "2", "--stats-interval", "0.1"]);
    for i in 0..N {
        let mut s = connect(server.addr);
        // Half of a "message": the server echoes it, so a receive is in
        // flight when the reset arrives.
        echo(&mut s, &Rng(i as u64 + 1).bytes(1000));
        s.write_all(b"half a mess").unwrap();
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s); // RST
    }
    // The server still serves after the resets.
    let mut ok = connect(server.addr);
    echo(&mut ok, b"still here");
    drop(ok);
    server.wait_for_no_active_connections();
    let c = server.stop();
    assert_eq!(c.get("accepted"), N as u64 + 1);
    assert_eq!(c.get("reset"), N as u64, "{c:?}");
    c.assert_clean(2);
}

#[test]
fn clients_that_never_read_are_paused_and_memory_stays_bounded() {
    let Some(b) = util::backend() else { return };
    const N: usize = 8;
    const LIMIT: u64 = 64 * 1024;
    let mut server = Server::start(&b, &["--threads", "2", "--max-buffered", "64K"]);
    let rss_before = util::rss(server.pid());
    let clients: Vec<_> = (0..N)
        .map(|i| {
            let addr = server.addr;
            thread::spawn(move || {
                let s = connect(addr);
                s.set_nonblocking(true).unwrap();
                let mut rng = Rng(77 + i as u64);
                let chunk = rng.bytes(64 * 1024);
                let mut sent: Vec<u8> = Vec::new();
                let mut blocked_since = None;
                // Write and never read, until the server stops taking data
                // (it paused this connection and every buffer is full).
                while sent.len() < 256 << 20 {
                    match (&s).write(&chunk) {
                        Ok(n) => {
                            sent.extend_from_slice(&chunk[..n]);
                            blocked_since = None;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            let t = *blocked_since.get_or_insert_with(Instant::now);
                            if t.elapsed() > Duration::from_millis(300) {
                                break;
                            }
                            thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => panic!("write: {e}"),
                    }
                }
                (s, sent)
            })
        })
        .collect();
    let clients: Vec<_> = clients.into_iter().map(|h| h.join().unwrap()).collect();
    let rss_paused = util::rss(server.pid());
    assert!(server.alive());
    // Now read everything back: the paused connections resume and every
    // byte comes back in order.
    for (s, sent) in clients {
        s.set_nonblocking(false).unwrap();
        let mut s = s;
        s.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::with_capacity(sent.len());
        s.read_to_end(&mut back).expect("read the echo");
        assert_eq!(back.len(), sent.len());
        assert!(back == sent, "echoed bytes differ");
    }
    let c = server.stop();
    assert!(
        c.get("paused") >= N as u64,
        "no connection was paused: {c:?}"
    );
    assert!(c.get("resumed") >= N as u64, "{c:?}");
    // One receive buffer (16 KiB) can land on top of the limit, no more.
    assert!(
        c.get("peak_conn_buffered") <= LIMIT + 16 * 1024,
        "a connection held {} bytes",
        c.get("peak_conn_buffered")
    );
    assert!(
        rss_paused < rss_before + 32 * (1 << 20),
        "server memory grew from {rss_before} to {rss_paused} bytes"
    );
    c.assert_clean(2);
}

#[test]
fn slow_drip_senders_are_closed_by_the_idle_timeout() {
    let Some(b) = util::backend() else { return };
    let server = Server::start(
        &b,
        &[
            "--threads",
            "2",
            "--idle-timeout",
            "1",
            "--stats-interval",
            "0.1",
        ],
    );
    let addr = server.addr;
    // Drips: one byte, then silence longer than the timeout.
    let drips: Vec<_> = (0..5)
        .map(|_| {
            thread::spawn(move || {
                let mut s = connect(addr);
                echo(&mut s, b"x");
                let t = Instant::now();
                let mut buf = [0; 16];
                // The server closes us: EOF (or a reset) within a few seconds.
                let r = s.read(&mut buf);
                assert!(matches!(r, Ok(0) | Err(_)), "got {r:?}");
                t.elapsed()
            })
        })
        .collect();
    // A lively client over the same time is left alone.
    let mut lively = connect(addr);
    for i in 0..15u8 {
        echo(&mut lively, &[i; 3]);
        thread::sleep(Duration::from_millis(200));
    }
    for d in drips {
        let waited = d.join().unwrap();
        assert!(
            waited >= Duration::from_millis(900),
            "closed after {waited:?}"
        );
        assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
    }
    drop(lively);
    server.wait_for_no_active_connections();
    let c = server.stop();
    assert_eq!(c.get("idle_timed_out"), 5, "{c:?}");
    assert_eq!(c.get("closed_by_peer"), 1, "{c:?}");
    c.assert_clean(2);
}

#[test]
fn half_close_gets_every_byte_then_eof() {
    let Some(b) = util::backend() else { return };
    let server = Server::start(&b, &["--threads", "2"]);
    let mut rng = Rng(9);
    for size in [0usize, 1, 4096, 300_000] {
        let data = rng.bytes(size);
        let mut s = connect(server.addr);
        s.write_all(&data).unwrap();
        s.write_all(&[]).unwrap(); // a zero-length write changes nothing
        s.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).expect("echo then EOF");
        assert!(back == data, "size {size}: echoed bytes differ");
    }
    thread::sleep(Duration::from_millis(100));
    let c = server.stop();
    assert_eq!(c.get("closed_by_peer"), 4, "{c:?}");
    c.assert_clean(2);
}

#[test]
fn connections_over_the_limit_are_rejected() {
    over_the_limit(&["--threads", "1"], 1);
}

/// The limit is the server's, not each port's.
#[test]
fn connections_over_the_limit_are_rejected_across_ports() {
    over_the_limit(&["--threads", "2", "--ports", "per-thread"], 2);
}

fn over_the_limit(args: &[&str], threads: u64) {
    let Some(b) = util::backend() else { return };
    let mut args = args.to_vec();
    args.extend_from_slice(&["--max-connections", "3"]);
    let server = Server::start(&b, &args);
    let mut kept: Vec<_> = (0..3).map(|_| connect(server.addr)).collect();
    for s in &mut kept {
        echo(s, b"in");
    }
    let mut extra = connect(server.addr);
    let _ = extra.write_all(b"out");
    let mut buf = [0; 8];
    let r = extra.read(&mut buf);
    assert!(
        matches!(r, Ok(0) | Err(_)),
        "the fourth client was served: {r:?}"
    );
    for s in &mut kept {
        echo(s, b"still in");
    }
    drop(kept);
    thread::sleep(Duration::from_millis(100));
    let c = server.stop();
    assert_eq!(c.get("rejected"), 1, "{c:?}");
    c.assert_clean(threads);
}

#[test]
fn connection_storm_of_short_lived_clients() {
    let Some(b) = util::backend() else { return };
    const THREADS: usize = 8;
    const EACH: usize = 250;
    let server = Server::start(&b, &["--threads", "2", "--stats-interval", "0.1"]);
    let addr = server.addr;
    let storms: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                for i in 0..EACH {
                    let mut s = connect(addr);
                    echo(&mut s, &[(t * EACH + i) as u8; 7]);
                }
            })
        })
        .collect();
    for s in storms {
        s.join().expect("storm thread");
    }
    // The last closes reach the server a moment after the clients return.
    server.wait_for_no_active_connections();
    let c = server.stop();
    assert_eq!(c.get("accepted"), (THREADS * EACH) as u64, "{c:?}");
    assert_eq!(c.get("closed_by_peer"), (THREADS * EACH) as u64, "{c:?}");
    assert_eq!(c.get("accept_errors"), 0, "{c:?}");
    c.assert_clean(2);
}
