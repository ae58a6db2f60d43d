//! R8: get_many dequeues up to N packets in one call, and counts as one
//! dequeue for concurrency.

mod util;

use std::thread;
use std::time::Duration;

use ringport::GetError;
use util::{each_backend, port};

#[test]
fn takes_up_to_max_in_fifo_order() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        for i in 0..10 {
            util::post(&port, i).unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(port.get_many(&mut out, 4, Some(Duration::ZERO)).unwrap(), 4);
        let users: Vec<u64> = out.iter().map(|c| c.user()).collect();
        assert_eq!(users, [0, 1, 2, 3]);
        out.clear();
        assert_eq!(port.get_many(&mut out, 64, None).unwrap(), 6);
        let users: Vec<u64> = out.iter().map(|c| c.user()).collect();
        assert_eq!(users, [4, 5, 6, 7, 8, 9]);
        out.clear();
        let r = port.get_many(&mut out, 64, Some(Duration::from_millis(10)));
        assert!(matches!(r, Err(GetError::TimedOut)), "got {r:?}");
        assert!(out.is_empty());
    });
}

#[test]
fn counts_as_one_dequeue() {
    if util::skip_under_wine(
        "counts_as_one_dequeue",
        "Wine 8 does not enforce the concurrency limit of a completion port",
    ) {
        return;
    }
    each_backend(|backend, _| {
        let port = port(backend, 1);
        for i in 0..10 {
            util::post(&port, i).unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(port.get_many(&mut out, 4, Some(Duration::ZERO)).unwrap(), 4);
        assert_eq!(port.stats().running, 1);
        // This thread runs; another one cannot take the six left.
        let other = {
            let port = port.clone();
            thread::spawn(move || port.get(Some(Duration::from_millis(200))).map(|c| c.user()))
        };
        let r = other.join().unwrap();
        assert!(matches!(r, Err(GetError::TimedOut)), "got {r:?}");
        assert_eq!(port.stats().queued, 6);
    });
}

/// A waiter in get_many gets what is there when it wakes, at most `max`.
#[test]
fn waiter_wakes_with_a_batch() {
    each_backend(|backend, _| {
        let port = port(backend, 2);
        let taker = {
            let port = port.clone();
            thread::spawn(move || {
                let mut out = Vec::new();
                let mut total = 0;
                while total < 100 {
                    let n = port.get_many(&mut out, 16, Some(util::LONG)).unwrap();
                    assert!((1..=16).contains(&n));
                    total += n;
                }
                out.iter().map(|c| c.user()).collect::<Vec<_>>()
            })
        };
        for i in 0..100 {
            util::post(&port, i).unwrap();
        }
        assert_eq!(taker.join().unwrap(), (0..100).collect::<Vec<_>>());
    });
}

/// I/O completions and posted packets come through get_many alike.
#[test]
fn mixes_io_and_posted_packets() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let (mut client, server) = util::tcp_pair();
        let sock = port.associate(server, 1).unwrap();
        port.recv(&sock, Vec::with_capacity(8), 100).unwrap();
        util::write_all(&mut client, b"abc");
        util::post(&port, 200).unwrap();
        let mut out = Vec::new();
        while out.len() < 2 {
            port.get_many(&mut out, 8, Some(util::LONG)).unwrap();
        }
        let mut users: Vec<u64> = out.iter().map(|c| c.user()).collect();
        users.sort_unstable();
        assert_eq!(users, [100, 200]);
    });
}

/// A running thread that dequeues again takes what is queued before what its
/// own dequeue finds finished, and every completion counts in the stats
/// however it was handed over.
#[test]
fn queued_packets_come_before_what_the_dequeue_reaps() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let (_client, server) = util::tcp_pair();
        let sock = port.associate(server, 1).unwrap();
        // Run on the port, so the sends below wait for this thread's next
        // dequeue to reach the kernel (io_uring batches them).
        util::post(&port, 0).unwrap();
        assert_eq!(util::get(&port).user(), 0);
        for i in 1..=3 {
            port.send(&sock, vec![i as u8; 8], i).unwrap();
        }
        util::post(&port, 100).unwrap();
        let mut out = Vec::new();
        while out.len() < 4 {
            port.get_many(&mut out, 64, Some(util::LONG)).unwrap();
        }
        let users: Vec<u64> = out.iter().map(|c| c.user()).collect();
        if backend == ringport::Backend::IoUring {
            // The sends finished inside that dequeue, after the post was queued.
            assert_eq!(users, [100, 1, 2, 3]);
        }
        let mut sorted = users.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [1, 2, 3, 100], "got {users:?}");
        // Then with nothing queued ahead: the reaped sends come alone, in order.
        for i in 4..=6 {
            port.send(&sock, vec![i as u8; 8], i).unwrap();
        }
        out.clear();
        while out.len() < 3 {
            port.get_many(&mut out, 64, Some(util::LONG)).unwrap();
        }
        let users: Vec<u64> = out.iter().map(|c| c.user()).collect();
        assert_eq!(users, [4, 5, 6]);
        // More finished than the dequeue takes: the first go to it, the rest
        // wait in the queue for the next one, in order.
        for i in 7..=9 {
            port.send(&sock, vec![i as u8; 8], i).unwrap();
        }
        let mut users = Vec::new();
        while users.len() < 3 {
            out.clear();
            let n = port.get_many(&mut out, 2, Some(util::LONG)).unwrap();
            assert!(n <= 2);
            users.extend(out.iter().map(|c| c.user()));
        }
        assert_eq!(users, [7, 8, 9]);
        util::assert_nothing_more(&port, Duration::from_millis(20));
        let stats = port.stats();
        assert_eq!(stats.completed, 11, "{stats:?}");
        assert_eq!(stats.started, 9, "{stats:?}");
        assert_eq!((stats.queued, stats.in_flight), (0, 0), "{stats:?}");
    });
}
