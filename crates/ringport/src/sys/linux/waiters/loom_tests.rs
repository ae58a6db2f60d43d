//! Model checks of the core with loom: every interleaving of two or three
//! threads around its locks, atomics and park/unpark, checking that no packet
//! is lost or delivered twice and no wake-up is lost (loom reports a thread
//! parked forever as a deadlock). Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p ringport --lib --release loom`.

use super::tests::{packet, posted};
use super::*;
use loom::thread;

/// The parked half of `Port::wait`: `None` when the port closed.
fn dequeue(core: &Core, max: usize) -> Option<Vec<u64>> {
    dequeue_as(core, &Arc::new(Waiter::current()), max, false)
}

/// A dequeue by `me`; `holding`: `me` runs on the port, and first tries
/// the lock-free way, as `Port::get_fast` does.
fn dequeue_as(core: &Core, me: &Arc<Waiter>, max: usize, holding: bool) -> Option<Vec<u64>> {
    let users = |v: &[Completion]| v.iter().map(|c| c.user()).collect();
    let mut out = Vec::new();
    if holding && core.take_again(&mut out, max).is_some() {
        return Some(users(&out));
    }
    match core.arrive(me, &mut out, max, false, holding) {
        Arrival::Took(_) => return Some(users(&out)),
        Arrival::Closed => return None,
        Arrival::Empty => unreachable!("not polling"),
        Arrival::Queued => {}
    }
    loop {
        {
            let mut slot = me.slot();
            match slot.status {
                Status::Served => {
                    slot.status = Status::Idle;
                    return Some(users(&slot.got.drain(..).collect::<Vec<_>>()));
                }
                Status::Closed => return None,
                _ => {}
            }
        }
        thread::park();
    }
}

/// A thread that took the one queued packet: it runs on the port.
fn runner(core: &Core) -> Arc<Waiter> {
    let me = Arc::new(Waiter::current());
    let mut out = Vec::new();
    assert!(matches!(
        core.arrive(&me, &mut out, 1, false, false),
        Arrival::Took(1)
    ));
    me
}

/// A thread that dequeues one packet and returns what it got.
fn spawn_dequeue(core: &Arc<Core>) -> thread::JoinHandle<Vec<u64>> {
    let core = core.clone();
    thread::spawn(move || dequeue(&core, 1).expect("port open"))
}

/// A running thread dequeues again (lock-free first) while another
/// thread waits and a third pushes without the lock: each packet reaches
/// exactly one of them, and neither sleeps forever beside a packet.
#[test]
fn loom_take_again_races_push_and_waiter() {
    loom::model(|| {
        let core = Arc::new(Core::new(2));
        core.push_posted(posted(0));
        let runner = runner(&core);
        let waiter = spawn_dequeue(&core);
        let pusher = {
            let core = core.clone();
            thread::spawn(move || {
                core.push_posted(posted(1));
                core.push_posted(posted(2));
            })
        };
        let mut got = dequeue_as(&core, &runner, 1, true).expect("port open");
        pusher.join().unwrap();
        got.extend(waiter.join().unwrap());
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
    });
}

#[test]
fn loom_two_waiters_two_packets() {
    loom::model(|| {
        let core = Arc::new(Core::new(2));
        let waiters: Vec<_> = (0..2).map(|_| spawn_dequeue(&core)).collect();
        core.push_posted(posted(1));
        core.push_posted(posted(2));
        let mut got: Vec<u64> = waiters
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
    });
}

/// Concurrency 1: the runner's release must hand the queued packet to a
/// waiter that arrives at the same time.
#[test]
fn loom_release_races_arrival() {
    loom::model(|| {
        let core = Arc::new(Core::new(1));
        core.push([packet(0), packet(1)], None);
        let runner = runner(&core);
        let waiter = spawn_dequeue(&core);
        core.release(Some(&runner));
        assert_eq!(waiter.join().unwrap(), [1]);
    });
}

/// Closing while a thread arrives: it either took a packet or sees the
/// port closed; it never sleeps forever.
#[test]
fn loom_close_races_arrival() {
    loom::model(|| {
        let core = Arc::new(Core::new(1));
        let waiter = {
            let core = core.clone();
            thread::spawn(move || dequeue(&core, 1))
        };
        core.close();
        assert_eq!(waiter.join().unwrap(), None);
    });
}

/// A waiter that gives up (timeout) while a packet is pushed: the packet
/// is either handed to it or stays queued, never lost.
#[test]
fn loom_leave_races_push() {
    loom::model(|| {
        let core = Arc::new(Core::new(1));
        let me = Arc::new(Waiter::current());
        let mut out = Vec::new();
        assert!(matches!(
            core.arrive(&me, &mut out, 1, false, false),
            Arrival::Queued
        ));
        let pusher = {
            let core = core.clone();
            thread::spawn(move || {
                core.push_posted(posted(5));
            })
        };
        let (status, _) = core.leave(&me);
        pusher.join().unwrap();
        let served = status == Status::Served;
        let queued = core.counts().queued;
        assert_eq!(usize::from(served) + queued, 1, "exactly one place");
        if served {
            assert_eq!(me.slot().got.len(), 1);
        }
    });
}
