//! R7: a timeout is its own error kind; a failed I/O is a dequeued packet
//! whose result is an error.

mod util;

use std::fs::OpenOptions;
use std::thread;
use std::time::{Duration, Instant};

use ringport::{GetError, OpKind};
use util::{each_backend, port};

#[test]
fn zero_timeout_polls() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let start = Instant::now();
        let r = port.get(Some(Duration::ZERO));
        assert!(matches!(r, Err(GetError::TimedOut)), "got {r:?}");
        assert!(start.elapsed() < util::LONG);
        util::post(&port, 1).unwrap();
        assert_eq!(port.get(Some(Duration::ZERO)).unwrap().user(), 1);
    });
}

#[test]
fn timeout_waits_at_least_that_long() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let start = Instant::now();
        let r = port.get(Some(Duration::from_millis(60)));
        assert!(matches!(r, Err(GetError::TimedOut)), "got {r:?}");
        assert!(start.elapsed() >= Duration::from_millis(60));
        let e: std::io::Error = r.unwrap_err().into();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    });
}

/// The timeout also holds while this thread is the poller sleeping in the
/// kernel with an operation in flight.
#[test]
fn timeout_with_io_in_flight() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let (_client, server) = util::tcp_pair();
        let sock = port.associate(server, 1).unwrap();
        port.recv(&sock, Vec::with_capacity(8), 1).unwrap();
        let start = Instant::now();
        let r = port.get(Some(Duration::from_millis(60)));
        assert!(matches!(r, Err(GetError::TimedOut)), "got {r:?}");
        assert!(start.elapsed() >= Duration::from_millis(60));
        assert_eq!(port.stats().in_flight, 1);
    });
}

#[test]
fn none_waits_until_a_packet_comes() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let poster = {
            let port = port.clone();
            thread::spawn(move || {
                util::wait_until("a waiter", || port.stats().waiting == 1);
                thread::sleep(Duration::from_millis(20));
                util::post(&port, 77).unwrap();
            })
        };
        assert_eq!(port.get(None).unwrap().user(), 77);
        poster.join().unwrap();
    });
}

/// A refused connection is a completion with an error result, not a failed
/// dequeue.
#[test]
fn failed_io_is_a_completion_with_an_error() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let (listener, addr) = util::listener();
        drop(listener); // nothing listens there now
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let h = port.associate(sock, 4).unwrap();
        port.connect(&h, addr, 8).unwrap();
        let c = util::get(&port);
        assert_eq!((c.kind(), c.key(), c.user()), (OpKind::Connect, 4, 8));
        let e = c.result().as_ref().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        assert!(!c.is_aborted());
    });
}

/// Reading a file opened for writing only fails in the completion, and the
/// buffer still comes back.
#[test]
fn failed_read_gives_the_buffer_back() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let dir = tempfile::tempdir().unwrap();
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("w"))
            .unwrap();
        let h = port.associate(f, 2).unwrap();
        let buf = Vec::with_capacity(100);
        let ptr = buf.as_ptr();
        port.read_at(&h, buf, 0, 3).unwrap();
        let mut c = util::get(&port);
        assert_eq!((c.kind(), c.user()), (OpKind::Read, 3));
        assert!(c.result().is_err());
        let buf = c.take_buf().unwrap();
        assert_eq!((buf.as_ptr(), buf.capacity(), buf.len()), (ptr, 100, 0));
    });
}
