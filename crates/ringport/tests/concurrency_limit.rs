//! R1, R6: the concurrency value, and at most that many threads running.

mod util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use ringport::{CompletionPort, GetError, Packet};
use util::{each_backend, port, wait_until};

#[test]
fn zero_means_number_of_cpus() {
    let cpus = thread::available_parallelism().unwrap().get();
    each_backend(|_, b| {
        let p = b.concurrency(0).build().unwrap();
        assert_eq!(p.concurrency(), cpus);
        let p = CompletionPort::new(3).unwrap();
        assert_eq!(p.concurrency(), 3);
    });
}

/// Six threads share a port of concurrency 2; each holds its packet for a
/// while. Never more than two hold one at once, and two do.
#[test]
fn never_more_running_than_the_limit() {
    if util::skip_under_wine(
        "never_more_running_than_the_limit",
        "Wine 8 does not enforce the concurrency limit of a completion port",
    ) {
        return;
    }
    each_backend(|backend, _| {
        let port = port(backend, 2);
        let active = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        const PACKETS: usize = 30;
        let workers: Vec<_> = (0..6)
            .map(|_| {
                let (port, active, peak, done) =
                    (port.clone(), active.clone(), peak.clone(), done.clone());
                thread::spawn(move || loop {
                    match port.get(Some(util::LONG)) {
                        Ok(c) if c.user() == u64::MAX => return,
                        Ok(_) => {
                            let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            let s = port.stats();
                            assert!(s.running <= 2, "running {} > 2", s.running);
                            thread::sleep(Duration::from_millis(5));
                            active.fetch_sub(1, Ordering::SeqCst);
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => panic!("worker: {e}"),
                    }
                })
            })
            .collect();
        wait_until("six waiters", || port.stats().waiting == 6);
        for i in 0..PACKETS {
            port.post(Packet {
                bytes: 0,
                key: 1,
                user: i as u64,
            })
            .unwrap();
        }
        wait_until("all packets", || done.load(Ordering::SeqCst) == PACKETS);
        for _ in 0..6 {
            util::post(&port, u64::MAX).unwrap();
        }
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2, "peak running threads");
    });
}

/// While the limit is reached, packets stay queued even though threads wait.
#[test]
fn packets_stay_queued_while_limit_reached() {
    if util::skip_under_wine(
        "packets_stay_queued_while_limit_reached",
        "Wine 8 does not enforce the concurrency limit of a completion port",
    ) {
        return;
    }
    each_backend(|backend, _| {
        let port = port(backend, 1);
        port.post(Packet {
            bytes: 1,
            key: 1,
            user: 1,
        })
        .unwrap();
        port.post(Packet {
            bytes: 2,
            key: 1,
            user: 2,
        })
        .unwrap();
        // This thread takes the first packet and is now running.
        assert_eq!(port.get(Some(Duration::ZERO)).unwrap().user(), 1);
        let other = {
            let port = port.clone();
            thread::spawn(move || port.get(Some(Duration::from_millis(300))).map(|c| c.user()))
        };
        let got = other.join().unwrap();
        assert!(matches!(got, Err(GetError::TimedOut)), "got {got:?}");
        assert_eq!(port.stats().queued, 1);
        // Dequeuing again ends this thread's run and takes the next packet.
        assert_eq!(port.get(Some(Duration::ZERO)).unwrap().user(), 2);
    });
}

/// A running thread that dequeues again takes a queued packet itself, before
/// any waiter: the NT kernel's `KeRemoveQueue` gives back the caller's slot
/// (`CurrentCount--`) and, while below the limit, hands the caller the head of
/// the queue. A waiter gets what the running threads leave.
#[test]
fn dequeue_again_takes_the_queued_packet_first() {
    if util::skip_under_wine(
        "dequeue_again_takes_the_queued_packet_first",
        "Wine 8 does not enforce the concurrency limit of a completion port",
    ) {
        return;
    }
    each_backend(|backend, _| {
        let port = port(backend, 1);
        util::post(&port, 1).unwrap();
        assert_eq!(port.get(Some(Duration::ZERO)).unwrap().user(), 1);
        let other = {
            let port = port.clone();
            thread::spawn(move || util::get(&port).user())
        };
        wait_until("a waiter", || port.stats().waiting == 1);
        util::post(&port, 2).unwrap();
        // The packet stays queued: this thread still runs.
        thread::sleep(Duration::from_millis(100));
        assert_eq!(port.stats().queued, 1);
        // This thread's next dequeue gives back its slot and takes it again at
        // once, with the packet; the waiter goes on waiting.
        assert_eq!(port.get(Some(Duration::from_millis(1))).unwrap().user(), 2);
        assert_eq!(port.stats().waiting, 1);
        assert_eq!(port.stats().running, 1);
        // Once this thread stops running, the waiter gets the next packet.
        let _blocked = port.blocking();
        util::post(&port, 3).unwrap();
        assert_eq!(other.join().unwrap(), 3);
    });
}

/// `blocking()` frees the slot until the guard drops (R6).
#[test]
fn blocking_guard_frees_the_slot() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        util::post(&port, 1).unwrap();
        util::post(&port, 2).unwrap();
        assert_eq!(port.get(Some(Duration::ZERO)).unwrap().user(), 1);
        assert_eq!(port.stats().running, 1);
        let got = {
            let _blocked = port.blocking();
            assert_eq!(port.stats().running, 0);
            let port = port.clone();
            thread::spawn(move || port.get(Some(util::LONG)).map(|c| c.user()))
                .join()
                .unwrap()
        };
        assert_eq!(got.unwrap(), 2);
        // The other thread exited, which ends its run; ours is back.
        assert_eq!(port.stats().running, 1);
    });
}

/// A running thread that exits gives its slot back.
#[test]
fn thread_exit_releases_the_slot() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        for i in 0..3 {
            util::post(&port, i).unwrap();
        }
        for i in 0..3 {
            let port = port.clone();
            let user = thread::spawn(move || util::get(&port).user())
                .join()
                .unwrap();
            assert_eq!(user, i);
        }
        assert_eq!(port.stats().running, 0);
    });
}

/// Many threads, concurrency 3: every packet is taken exactly once.
#[test]
fn every_packet_once_under_contention() {
    each_backend(|backend, _| {
        let port = port(backend, 3);
        const N: u64 = 20_000;
        let start = Arc::new(Barrier::new(5));
        let consumers: Vec<_> = (0..4)
            .map(|_| {
                let (port, start) = (port.clone(), start.clone());
                thread::spawn(move || {
                    start.wait();
                    let mut seen = Vec::new();
                    loop {
                        let c = util::get(&port);
                        if c.user() == u64::MAX {
                            return seen;
                        }
                        seen.push(c.user());
                    }
                })
            })
            .collect();
        start.wait();
        for i in 0..N {
            util::post(&port, i).unwrap();
        }
        for _ in 0..4 {
            util::post(&port, u64::MAX).unwrap();
        }
        let mut all: Vec<u64> = consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..N).collect::<Vec<_>>());
    });
}
