//! The port core without the kernel: FIFO packets, LIFO waiters, the
//! concurrency count, and who of the waiters sleeps in the kernel (the poller).
//!
//! Lock order: `Core::state`, then a `Waiter::slot`. Nothing here calls the
//! kernel; the caller wakes the poller when a function says so.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

use sync::{AtomicBool, AtomicUsize, Mutex, MutexGuard, Thread};

use crate::completion::Completion;

/// The primitives of the core: std's, or loom's when model checking
/// (`--cfg loom`), so every interleaving of its locks, atomics and wake-ups can
/// be explored.
#[cfg(not(loom))]
mod sync {
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicUsize};
    pub(crate) use std::sync::{Mutex, MutexGuard};
    pub(crate) use std::thread::{current, Thread};
}
#[cfg(loom)]
mod sync {
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicUsize};
    pub(crate) use loom::sync::{Mutex, MutexGuard};
    pub(crate) use loom::thread::{current, Thread};
}

/// Where a waiting thread stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Not in a dequeue.
    Idle,
    /// Parked in the port, on the stack.
    Waiting,
    /// On the stack, and the one thread that waits in the kernel.
    Polling,
    /// Handed packets; they are in `Slot::got`.
    Served,
    /// The port closed while it waited.
    Closed,
}

/// One thread's place in a dequeue. Reused by the thread across calls.
#[derive(Debug)]
pub(crate) struct Waiter {
    thread: Thread,
    slot: Mutex<Slot>,
}

#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) status: Status,
    max: usize,
    pub(crate) got: Vec<Completion>,
}

impl Waiter {
    /// The calling thread's waiter.
    pub(crate) fn current() -> Waiter {
        Waiter {
            thread: sync::current(),
            slot: Mutex::new(Slot {
                status: Status::Idle,
                max: 1,
                got: Vec::new(),
            }),
        }
    }

    pub(crate) fn slot(&self) -> MutexGuard<'_, Slot> {
        guard(&self.slot)
    }

    pub(crate) fn status(&self) -> Status {
        self.slot().status
    }
}

/// What a dequeue found on arrival.
pub(crate) enum Arrival {
    /// Packets were moved to the caller's vector; it now runs on the port.
    Took(usize),
    /// Nothing could be taken and the caller only polls.
    Empty,
    /// The caller is on the stack with this status (`Waiting` or `Polling`).
    Queued,
    Closed,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Completion>,
    /// Waiting threads, most recent last: served from the top (R5).
    stack: Vec<Arc<Waiter>>,
    poller: Option<Arc<Waiter>>,
    running: usize,
    closed: bool,
    completed: u64,
}

/// Counters read by `stats`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counts {
    pub(crate) queued: usize,
    pub(crate) running: usize,
    pub(crate) waiting: usize,
    pub(crate) completed: u64,
}

/// The queue and the waiters of one port.
#[derive(Debug)]
pub(crate) struct Core {
    state: Mutex<State>,
    concurrency: usize,
    /// Operations accepted and not yet reaped: while non-zero, one waiter must
    /// sleep in the kernel. Paired with `stacked` (both `SeqCst`): a starter
    /// raises this then reads `stacked`; a waiter raises `stacked` then reads this.
    inflight: AtomicUsize,
    stacked: AtomicUsize,
    has_poller: AtomicBool,
}

/// Locks a mutex of the port. A panic while holding one of these locks leaves
/// plain data behind; carry on.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// [`lock`] for the core's own mutexes (loom's under `--cfg loom`).
fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Core {
    pub(crate) fn new(concurrency: usize) -> Core {
        Core {
            state: Mutex::new(State::default()),
            concurrency,
            inflight: AtomicUsize::new(0),
            stacked: AtomicUsize::new(0),
            has_poller: AtomicBool::new(false),
        }
    }

    pub(crate) fn inflight(&self) -> usize {
        self.inflight.load(SeqCst)
    }

    pub(crate) fn has_poller(&self) -> bool {
        self.has_poller.load(SeqCst)
    }

    /// An operation was accepted. Returns true when the poller must be woken
    /// (never: a new poller is woken by unpark, and an existing one needs nothing).
    pub(crate) fn op_started(&self) {
        self.inflight.fetch_add(1, SeqCst);
        if self.stacked.load(SeqCst) > 0 && !self.has_poller.load(SeqCst) {
            let mut st = guard(&self.state);
            self.ensure_poller(&mut st, None);
        }
    }

    /// `n` operations were reaped from the kernel.
    pub(crate) fn ops_done(&self, n: usize) {
        self.inflight.fetch_sub(n, SeqCst);
    }

    /// A dequeue arrives: take packets if the count allows, else join the stack
    /// (unless `poll_only`).
    pub(crate) fn arrive(
        &self,
        me: &Arc<Waiter>,
        out: &mut Vec<Completion>,
        max: usize,
        poll_only: bool,
    ) -> Arrival {
        let mut st = guard(&self.state);
        if st.closed {
            return Arrival::Closed;
        }
        if st.running < self.concurrency && !st.queue.is_empty() {
            let n = max.min(st.queue.len());
            out.extend(st.queue.drain(..n));
            st.running += 1;
            return Arrival::Took(n);
        }
        if poll_only {
            return Arrival::Empty;
        }
        {
            let mut slot = me.slot();
            slot.status = Status::Waiting;
            slot.max = max;
            slot.got.clear();
        }
        st.stack.push(me.clone());
        self.stacked.store(st.stack.len(), SeqCst);
        self.ensure_poller(&mut st, Some(me));
        Arrival::Queued
    }

    /// Queues completions and hands them out. Returns true when the poller
    /// (which is not `me`) was served and must be woken from the kernel.
    pub(crate) fn push(
        &self,
        items: impl IntoIterator<Item = Completion>,
        me: Option<&Arc<Waiter>>,
    ) -> bool {
        let mut st = guard(&self.state);
        if st.closed {
            return false; // dropped by the caller's iterator owner
        }
        let before = st.queue.len();
        st.queue.extend(items);
        st.completed += (st.queue.len() - before) as u64;
        self.dispatch(&mut st, me)
    }

    /// The calling thread stops running on the port (it dequeues again, blocks,
    /// or exits). Returns true when the poller must be woken.
    pub(crate) fn release(&self, me: Option<&Arc<Waiter>>) -> bool {
        let mut st = guard(&self.state);
        st.running = st.running.saturating_sub(1);
        self.dispatch(&mut st, me)
    }

    /// The calling thread runs again after blocking, even above the limit.
    pub(crate) fn reacquire(&self) {
        guard(&self.state).running += 1;
    }

    /// Gives up waiting (timeout). Returns the status found: if `Served` or
    /// `Closed`, the caller takes that outcome instead, and the bool says
    /// whether the poller must be woken.
    pub(crate) fn leave(&self, me: &Arc<Waiter>) -> (Status, bool) {
        let mut st = guard(&self.state);
        let status = me.status();
        if matches!(status, Status::Served | Status::Closed | Status::Idle) {
            return (status, false);
        }
        st.stack.retain(|w| !Arc::ptr_eq(w, me));
        self.stacked.store(st.stack.len(), SeqCst);
        me.slot().status = Status::Idle;
        if st.poller.as_ref().is_some_and(|p| Arc::ptr_eq(p, me)) {
            st.poller = None;
            self.has_poller.store(false, SeqCst);
        }
        // Packets may wait for a slot that a waiter other than us could take.
        let wake = self.dispatch(&mut st, Some(me));
        (Status::Idle, wake)
    }

    /// Marks the port closed and wakes every waiter. Returns the discarded
    /// packets (to drop outside the lock) and whether the poller must be woken.
    pub(crate) fn close(&self) -> (VecDeque<Completion>, bool) {
        let mut st = guard(&self.state);
        st.closed = true;
        for w in st.stack.drain(..) {
            w.slot().status = Status::Closed;
            w.thread.unpark();
        }
        self.stacked.store(0, SeqCst);
        let wake = st.poller.take().is_some();
        self.has_poller.store(false, SeqCst);
        (std::mem::take(&mut st.queue), wake)
    }

    pub(crate) fn is_closed(&self) -> bool {
        guard(&self.state).closed
    }

    pub(crate) fn counts(&self) -> Counts {
        let st = guard(&self.state);
        Counts {
            queued: st.queue.len(),
            running: st.running,
            waiting: st.stack.len(),
            completed: st.completed,
        }
    }

    /// Hands queued packets to waiters, most recent first, while the
    /// concurrency count allows (R5, R6). `me` is the calling thread, which
    /// needs no wake-up.
    fn dispatch(&self, st: &mut State, me: Option<&Arc<Waiter>>) -> bool {
        let mut wake_poller = false;
        while st.running < self.concurrency && !st.queue.is_empty() {
            let Some(w) = st.stack.pop() else { break };
            {
                let mut slot = w.slot();
                let n = slot.max.min(st.queue.len());
                slot.got.extend(st.queue.drain(..n));
                slot.status = Status::Served;
            }
            st.running += 1;
            let is_me = me.is_some_and(|m| Arc::ptr_eq(m, &w));
            if st.poller.as_ref().is_some_and(|p| Arc::ptr_eq(p, &w)) {
                st.poller = None;
                self.has_poller.store(false, SeqCst);
                wake_poller |= !is_me;
            } else if !is_me {
                w.thread.unpark();
            }
        }
        self.stacked.store(st.stack.len(), SeqCst);
        self.ensure_poller(st, me);
        wake_poller
    }

    /// While operations are in flight and threads wait, one of them must wait
    /// in the kernel: promote the oldest (coldest) waiter.
    fn ensure_poller(&self, st: &mut State, me: Option<&Arc<Waiter>>) {
        if st.poller.is_some() || st.closed || self.inflight.load(SeqCst) == 0 {
            return;
        }
        let Some(w) = st.stack.first().cloned() else {
            return;
        };
        w.slot().status = Status::Polling;
        self.has_poller.store(true, SeqCst);
        if !me.is_some_and(|m| Arc::ptr_eq(m, &w)) {
            w.thread.unpark();
        }
        st.poller = Some(w);
    }
}

#[cfg(test)]
mod tests {
    //! The core alone, without a kernel: these also run under miri.

    use super::*;
    use crate::completion::Packet;

    fn packet(user: u64) -> Completion {
        Completion::posted(Packet {
            bytes: 0,
            key: 0,
            user,
        })
    }

    fn waiter() -> Arc<Waiter> {
        Arc::new(Waiter::current())
    }

    fn users(v: &[Completion]) -> Vec<u64> {
        v.iter().map(|c| c.user()).collect()
    }

    #[test]
    fn arrive_takes_fifo_up_to_max_and_runs() {
        let core = Core::new(1);
        core.push((0..5).map(packet), None);
        let me = waiter();
        let mut out = Vec::new();
        assert!(matches!(
            core.arrive(&me, &mut out, 3, false),
            Arrival::Took(3)
        ));
        assert_eq!(users(&out), [0, 1, 2]);
        assert_eq!(core.counts().running, 1);
        // The limit is reached: a second thread only polls, and finds nothing.
        let other = waiter();
        let mut out2 = Vec::new();
        assert!(matches!(
            core.arrive(&other, &mut out2, 3, true),
            Arrival::Empty
        ));
        assert_eq!(core.counts().queued, 2);
    }

    #[test]
    fn release_serves_the_most_recent_waiter() {
        let core = Core::new(1);
        let runner = waiter();
        core.push([packet(0)], None);
        let mut out = Vec::new();
        assert!(matches!(
            core.arrive(&runner, &mut out, 1, false),
            Arrival::Took(1)
        ));
        let (a, b) = (waiter(), waiter());
        assert!(matches!(
            core.arrive(&a, &mut out, 1, false),
            Arrival::Queued
        ));
        assert!(matches!(
            core.arrive(&b, &mut out, 1, false),
            Arrival::Queued
        ));
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
    fn oldest_waiter_polls_while_operations_are_in_flight() {
        let core = Core::new(4);
        let (a, b) = (waiter(), waiter());
        let mut out = Vec::new();
        assert!(matches!(
            core.arrive(&a, &mut out, 1, false),
            Arrival::Queued
        ));
        assert!(matches!(
            core.arrive(&b, &mut out, 1, false),
            Arrival::Queued
        ));
        assert!(!core.has_poller(), "nothing in flight: nobody polls");
        core.op_started();
        assert!(core.has_poller());
        assert_eq!(a.status(), Status::Polling);
        assert_eq!(b.status(), Status::Waiting);
        // A packet goes to b (LIFO), and the poller stays in the kernel.
        assert!(!core.push([packet(7)], None));
        assert_eq!(b.status(), Status::Served);
        // The last waiter is the poller: serving it means waking it.
        assert!(core.push([packet(8)], None));
        assert_eq!(a.status(), Status::Served);
        assert!(!core.has_poller());
    }

    #[test]
    fn leaving_hands_polling_to_another_waiter() {
        let core = Core::new(4);
        core.op_started();
        let (a, b) = (waiter(), waiter());
        let mut out = Vec::new();
        core.arrive(&a, &mut out, 1, false);
        core.arrive(&b, &mut out, 1, false);
        assert_eq!(a.status(), Status::Polling);
        assert_eq!(core.leave(&a).0, Status::Idle);
        assert_eq!(b.status(), Status::Polling);
        assert_eq!(core.counts().waiting, 1);
        // A waiter that was served before it could leave keeps its packets.
        core.push([packet(3)], None);
        assert_eq!(core.leave(&b).0, Status::Served);
    }

    #[test]
    fn close_releases_everyone_and_drops_packets() {
        let core = Core::new(1);
        let runner = waiter();
        core.push([packet(0), packet(1)], None);
        let mut out = Vec::new();
        core.arrive(&runner, &mut out, 1, false);
        let w = waiter();
        assert!(matches!(
            core.arrive(&w, &mut out, 1, false),
            Arrival::Queued
        ));
        let (dropped, _) = core.close();
        assert_eq!(dropped.len(), 1);
        assert_eq!(w.status(), Status::Closed);
        assert!(matches!(
            core.arrive(&w, &mut out, 1, false),
            Arrival::Closed
        ));
        assert!(!core.push([packet(9)], None));
        assert_eq!(core.counts().queued, 0);
    }

    #[test]
    fn reacquire_may_exceed_the_limit() {
        let core = Core::new(1);
        let (a, b) = (waiter(), waiter());
        core.push([packet(0), packet(1)], None);
        let mut out = Vec::new();
        core.arrive(&a, &mut out, 1, false);
        core.release(Some(&a)); // a blocks
        core.arrive(&b, &mut out, 1, false);
        core.reacquire(); // a is back while b runs
        assert_eq!(core.counts().running, 2);
        core.release(Some(&b));
        core.push([packet(2)], None);
        let w = waiter();
        // One still runs (a) and the limit is 1: the packet waits.
        assert!(matches!(core.arrive(&w, &mut out, 1, true), Arrival::Empty));
    }
}

/// Model checks of the core with loom: every interleaving of two or three
/// threads around its locks, atomics and park/unpark, checking that no packet
/// is lost or delivered twice and no wake-up is lost (loom reports a thread
/// parked forever as a deadlock). Run with
/// `RUSTFLAGS="--cfg loom" cargo test -p ringport --lib --release loom`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::completion::Packet;
    use loom::thread;

    fn packet(user: u64) -> Completion {
        Completion::posted(Packet {
            bytes: 0,
            key: 0,
            user,
        })
    }

    /// The parked half of `Port::wait`: `None` when the port closed.
    fn dequeue(core: &Core, max: usize) -> Option<Vec<u64>> {
        let me = Arc::new(Waiter::current());
        let mut out = Vec::new();
        match core.arrive(&me, &mut out, max, false) {
            Arrival::Took(_) => return Some(out.iter().map(|c| c.user()).collect()),
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
                        return Some(slot.got.drain(..).map(|c| c.user()).collect());
                    }
                    Status::Closed => return None,
                    _ => {}
                }
            }
            thread::park();
        }
    }

    #[test]
    fn loom_two_waiters_two_packets() {
        loom::model(|| {
            let core = Arc::new(Core::new(2));
            let waiters: Vec<_> = (0..2)
                .map(|_| {
                    let core = core.clone();
                    thread::spawn(move || dequeue(&core, 1).expect("port open"))
                })
                .collect();
            core.push([packet(1)], None);
            core.push([packet(2)], None);
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
            let runner = Arc::new(Waiter::current());
            core.push([packet(0), packet(1)], None);
            let mut out = Vec::new();
            assert!(matches!(
                core.arrive(&runner, &mut out, 1, false),
                Arrival::Took(1)
            ));
            let waiter = {
                let core = core.clone();
                thread::spawn(move || dequeue(&core, 1).expect("port open"))
            };
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
                core.arrive(&me, &mut out, 1, false),
                Arrival::Queued
            ));
            let pusher = {
                let core = core.clone();
                thread::spawn(move || {
                    core.push([packet(5)], None);
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
}
