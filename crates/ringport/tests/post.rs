//! R9: post enqueues a caller-made packet, from any thread, and wakes a
//! thread sleeping in the kernel.

mod util;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use ringport::{OpKind, Packet};
use util::{each_backend, port, wait_until};

#[test]
fn posted_packet_comes_back_as_given() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        port.post(Packet {
            bytes: 1234,
            key: 55,
            user: 66,
        })
        .unwrap();
        let mut c = util::get(&port);
        assert_eq!((c.kind(), c.key(), c.user()), (OpKind::Post, 55, 66));
        assert_eq!(c.take_result().unwrap(), 1234);
        assert!(c.take_buf().is_none());
        assert!(c.id().is_none());
    });
}

/// Every byte count comes back whole, the largest ones too, and among others
/// in the order posted (Linux keeps counts above 32 bits apart, boxed).
#[test]
fn any_byte_count_comes_back_whole_and_in_order() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let counts = [
            0,
            1,
            u32::MAX as usize,
            u32::MAX as usize + 1,
            usize::MAX,
            7,
        ];
        for (i, &bytes) in counts.iter().enumerate() {
            port.post(Packet {
                bytes,
                key: u64::MAX - i as u64,
                user: i as u64,
            })
            .unwrap();
        }
        for (i, &bytes) in counts.iter().enumerate() {
            let mut c = util::get(&port);
            assert_eq!((c.key(), c.user()), (u64::MAX - i as u64, i as u64));
            assert_eq!(c.take_result().unwrap(), bytes);
        }
    });
}

/// The waiter is the poller, asleep in the kernel with a receive in flight;
/// a post from another thread must wake it. Repeated to catch lost wake-ups.
#[test]
fn post_wakes_a_thread_asleep_in_the_kernel() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let (_client, server) = util::tcp_pair();
        let sock = port.associate(server, 1).unwrap();
        port.recv(&sock, Vec::with_capacity(8), 1).unwrap();
        for round in 0..200u64 {
            let poster = {
                let port = port.clone();
                thread::spawn(move || {
                    if round % 2 == 0 {
                        wait_until("the poller", || port.stats().waiting == 1);
                    }
                    util::post(&port, round).unwrap();
                })
            };
            assert_eq!(util::get(&port).user(), round);
            poster.join().unwrap();
        }
    });
}

/// Many producers, many consumers: every packet is delivered exactly once.
#[test]
fn many_threads_post_and_get() {
    each_backend(|backend, _| {
        let port = port(backend, 0);
        const PER: u64 = 5_000;
        let go = Arc::new(Barrier::new(4));
        let producers: Vec<_> = (0..2)
            .map(|p| {
                let (port, go) = (port.clone(), go.clone());
                thread::spawn(move || {
                    go.wait();
                    for i in 0..PER {
                        port.post(Packet {
                            bytes: 0,
                            key: p,
                            user: i,
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let (port, go) = (port.clone(), go.clone());
                thread::spawn(move || {
                    go.wait();
                    let mut got = Vec::new();
                    while let Ok(c) = port.get(Some(Duration::from_millis(500))) {
                        got.push((c.key(), c.user()));
                    }
                    got
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        let mut all: Vec<(u64, u64)> = consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        all.sort_unstable();
        let want: Vec<(u64, u64)> = (0..2).flat_map(|p| (0..PER).map(move |i| (p, i))).collect();
        assert_eq!(all, want);
        // Every post counts once, whichever thread made it and after it exited.
        let stats = port.stats();
        assert_eq!(stats.completed, 2 * PER, "{stats:?}");
        assert_eq!(stats.queued, 0, "{stats:?}");
        // And a post from this thread adds to the same count.
        util::post(&port, 0).unwrap();
        assert_eq!(port.stats().completed, 2 * PER + 1);
    });
}

/// Packets from one producer keep their order even with a consumer racing.
#[test]
fn one_producer_order_is_kept() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let consumer = {
            let port = port.clone();
            thread::spawn(move || (0..10_000u64).all(|i| util::get(&port).user() == i))
        };
        for i in 0..10_000 {
            util::post(&port, i).unwrap();
        }
        assert!(consumer.join().unwrap());
    });
}

#[test]
fn post_after_close_fails() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        port.close();
        assert!(util::post(&port, 0).is_err());
    });
}
