//! The core alone, without a kernel: these also run under miri.

use super::*;
use crate::completion::Packet;

/// A posted packet numbered `user` (the loom models use it too).
pub(super) fn posted(user: u64) -> Packet {
    Packet {
        bytes: 0,
        key: 0,
        user,
    }
}

/// [`posted`] as the queue holds it.
pub(super) fn packet(user: u64) -> Entry {
    Entry::posted(posted(user))
}

fn waiter() -> Arc<Waiter> {
    Arc::new(Waiter::current())
}

fn users(v: &[Completion]) -> Vec<u64> {
    v.iter().map(|c| c.user()).collect()
}

/// `a` arrives and waits, then `b` waits above it.
fn two_waiting(core: &Core) -> (Arc<Waiter>, Arc<Waiter>) {
    let (a, b) = (waiter(), waiter());
    let mut out = Vec::new();
    for w in [&a, &b] {
        assert!(matches!(
            core.arrive(w, &mut out, 1, false, false),
            Arrival::Queued
        ));
    }
    (a, b)
}

/// With an operation in flight, `a` arrives and polls, then `b` waits above it.
fn poller_and_waiter(core: &Core) -> (Arc<Waiter>, Arc<Waiter>) {
    core.op_started();
    two_waiting(core)
}

#[test]
fn arrive_takes_fifo_up_to_max_and_runs() {
    let core = Core::new(1);
    core.push((0..5).map(packet), None);
    let me = waiter();
    let mut out = Vec::new();
    assert!(matches!(
        core.arrive(&me, &mut out, 3, false, false),
        Arrival::Took(3)
    ));
    assert_eq!(users(&out), [0, 1, 2]);
    assert_eq!(core.counts().running, 1);
    // The limit is reached: a second thread only polls, and finds nothing.
    let other = waiter();
    let mut out2 = Vec::new();
    assert!(matches!(
        core.arrive(&other, &mut out2, 3, true, false),
        Arrival::Empty
    ));
    assert_eq!(core.counts().queued, 2);
}

#[test]
fn release_serves_the_most_recent_waiter() {
    let core = Core::new(1);
    let runner = waiter();
    core.push_posted(posted(0));
    let mut out = Vec::new();
    assert!(matches!(
        core.arrive(&runner, &mut out, 1, false, false),
        Arrival::Took(1)
    ));
    let (a, b) = two_waiting(&core);
    core.push([packet(1), packet(2)], None);
    // Still one running: both packets stay queued.
    assert_eq!(core.counts().queued, 2);
    assert_eq!(b.status(), Status::Waiting);
    // The runner leaves: b, the most recent waiter, gets packet 1.
    core.release(Some(&runner));
    assert_eq!(b.status(), Status::Served);
    assert_eq!(users(&b.slot().got), [1]);
    assert_eq!(a.status(), Status::Waiting);
    assert_eq!(core.counts().running, 1);
}

#[test]
fn most_recent_waiter_polls_while_operations_are_in_flight() {
    let core = Core::new(4);
    let (a, b) = two_waiting(&core);
    assert!(!core.has_poller(), "nothing in flight: nobody polls");
    core.op_started();
    assert!(core.has_poller());
    assert_eq!(b.status(), Status::Polling);
    assert_eq!(a.status(), Status::Waiting);
    // A packet goes to b (LIFO), the poller: serving it means waking it
    // from the kernel. b keeps the role while it runs: a is not woken.
    assert!(core.push_posted(posted(7)));
    assert_eq!(b.status(), Status::Served);
    assert!(core.poller_away());
    assert_eq!(a.status(), Status::Waiting);
    // A post still goes to a at once (no kernel involved).
    assert!(!core.push_posted(posted(8)));
    assert_eq!(a.status(), Status::Served);
    // b comes back: it polls again, with no one to wake.
    let mut out = Vec::new();
    assert!(matches!(
        core.arrive(&b, &mut out, 1, false, true),
        Arrival::Queued
    ));
    assert!(!core.poller_away());
    assert_eq!(b.status(), Status::Polling);
}

#[test]
fn a_reap_that_serves_others_hands_them_the_role() {
    let core = Core::new(4);
    core.op_started();
    let (a, b) = (waiter(), waiter());
    let mut out = Vec::new();
    core.arrive(&a, &mut out, 1, false, false);
    assert_eq!(a.status(), Status::Polling);
    core.arrive(&b, &mut out, 1, false, false);
    // a reaps one completion: b, on top, gets it; a goes back to waiting
    // and b polls at its next dequeue.
    assert!(!core.push([packet(1)], Some(&a)));
    assert_eq!(b.status(), Status::Served);
    assert_eq!(a.status(), Status::Waiting);
    assert!(core.poller_away());
    // A waiter that slept past the limit stands in.
    core.take_over(&a);
    assert_eq!(a.status(), Status::Polling);
    assert!(!core.poller_away());
}

#[test]
fn a_thread_away_that_takes_again_keeps_the_role() {
    let core = Core::new(2);
    let (a, b) = poller_and_waiter(&core);
    // a reaps: b is served and away; then a is served (both run), and
    // packet 3 stays queued (the limit).
    assert!(!core.push([packet(1)], Some(&a)));
    assert!(!core.push_posted(posted(2)));
    assert!(!core.push_posted(posted(3)));
    // b dequeues again and takes packet 3 at once: it runs on, still due
    // to poll next, or nobody would.
    let mut got = Vec::new();
    assert!(matches!(
        core.arrive(&b, &mut got, 1, false, true),
        Arrival::Took(1)
    ));
    assert!(core.poller_away());
    // Polling only, with nothing queued: the role is handed on.
    assert!(matches!(
        core.arrive(&b, &mut got, 1, true, true),
        Arrival::Empty
    ));
    assert!(!core.poller_away());
}

#[test]
fn leaving_hands_polling_to_another_waiter() {
    let core = Core::new(4);
    let (a, b) = poller_and_waiter(&core);
    assert_eq!(a.status(), Status::Polling);
    assert_eq!(core.leave(&a).0, Status::Idle);
    assert_eq!(b.status(), Status::Polling);
    assert_eq!(core.counts().waiting, 1);
    // A waiter that was served before it could leave keeps its packets.
    core.push_posted(posted(3));
    assert_eq!(core.leave(&b).0, Status::Served);
}

#[test]
fn close_releases_everyone_and_drops_packets() {
    let core = Core::new(1);
    let runner = waiter();
    core.push([packet(0), packet(1)], None);
    let mut out = Vec::new();
    core.arrive(&runner, &mut out, 1, false, false);
    let w = waiter();
    assert!(matches!(
        core.arrive(&w, &mut out, 1, false, false),
        Arrival::Queued
    ));
    let (dropped, _) = core.close();
    assert_eq!(dropped.len(), 1);
    assert_eq!(w.status(), Status::Closed);
    assert!(matches!(
        core.arrive(&w, &mut out, 1, false, false),
        Arrival::Closed
    ));
    assert!(!core.push_posted(posted(9)));
    assert_eq!(core.counts().queued, 0);
}

#[test]
fn reacquire_may_exceed_the_limit() {
    let core = Core::new(1);
    let (a, b) = (waiter(), waiter());
    core.push([packet(0), packet(1)], None);
    let mut out = Vec::new();
    core.arrive(&a, &mut out, 1, false, false);
    core.release(Some(&a)); // a blocks
    core.arrive(&b, &mut out, 1, false, false);
    core.reacquire(); // a is back while b runs
    assert_eq!(core.counts().running, 2);
    core.release(Some(&b));
    core.push_posted(posted(2));
    let w = waiter();
    // One still runs (a) and the limit is 1: the packet waits.
    assert!(matches!(
        core.arrive(&w, &mut out, 1, true, false),
        Arrival::Empty
    ));
}
