//! The port core without the kernel: FIFO packets, LIFO waiters, the
//! concurrency count, and who of the waiters sleeps in the kernel (the poller).
//!
//! The packets wait in a lock-free queue, so that `post` and the dequeue of a
//! thread that already runs on the port take no lock: the hand-off between two
//! busy threads costs what a channel's does. Everything about waiters (the
//! stack, the poller, the running count's changes) stays under `Core::state`.
//! A push and a waiter that joins the stack meet as in Dekker's algorithm: the
//! push stores its packet then reads `stacked`, the waiter stores `stacked`
//! then reads the queue, so at least one of them sees the other and no packet
//! waits beside a waiter that could take it. The waiter's side has a `SeqCst`
//! fence between its store and its read; the push's side needs none of its
//! own, because `SegQueue::push` claims its slot with a `SeqCst`
//! compare-exchange on the queue's tail, which the waiter's fence orders
//! against, before the push reads `stacked` with `SeqCst` (crossbeam-channel's
//! unbounded channel meets its sleeping receivers the same way).
//!
//! Lock order: `Core::state`, then a `Waiter::slot`. Nothing here calls the
//! kernel; the caller wakes the poller when a function says so.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;

use sync::{fence, AtomicBool, AtomicU64, AtomicUsize, Mutex, MutexGuard, Thread};

use super::op::Entry;
use crate::completion::Completion;

/// The primitives of the core: std's, or loom's when model checking
/// (`--cfg loom`), so every interleaving of its locks, atomics and wake-ups can
/// be explored.
#[cfg(not(loom))]
mod sync {
    pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize};
    pub(crate) use std::sync::{Mutex, MutexGuard};
    pub(crate) use std::thread::{current, Thread};

    /// The packet queue: FIFO, many producers and consumers, no lock.
    pub(crate) type Queue<T> = crossbeam_queue::SegQueue<T>;
}
#[cfg(loom)]
mod sync {
    pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize};
    pub(crate) use loom::sync::{Mutex, MutexGuard};
    pub(crate) use loom::thread::{current, Thread};

    /// The packet queue under loom: a locked `VecDeque` with `SegQueue`'s
    /// methods (loom cannot look inside crossbeam's atomics), so the model
    /// checks the protocol around the queue, taking the queue as linearizable.
    #[derive(Debug)]
    pub(crate) struct Queue<T>(Mutex<std::collections::VecDeque<T>>);

    impl<T> Queue<T> {
        pub(crate) fn new() -> Self {
            Queue(Mutex::new(std::collections::VecDeque::new()))
        }
        /// As `SegQueue::push`, whose `SeqCst` compare-exchange on the tail
        /// the fence stands for.
        pub(crate) fn push(&self, t: T) {
            self.0.lock().unwrap().push_back(t);
            fence(std::sync::atomic::Ordering::SeqCst);
        }
        pub(crate) fn pop(&self) -> Option<T> {
            self.0.lock().unwrap().pop_front()
        }
        pub(crate) fn len(&self) -> usize {
            self.0.lock().unwrap().len()
        }
        pub(crate) fn is_empty(&self) -> bool {
            self.0.lock().unwrap().is_empty()
        }
    }
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
#[derive(Debug)]
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
    /// Waiting threads, most recent last: served from the top (R5).
    stack: Vec<Arc<Waiter>>,
    poller: Option<Arc<Waiter>>,
    /// A thread that holds the poller's role while it runs: the poller (or
    /// the thread its reap served) will poll again at its next dequeue, so no
    /// sleeper is woken to take over. See [`Core::take_over`] for the bound.
    away: Option<Arc<Waiter>>,
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
    queue: sync::Queue<Entry>,
    /// On a cache line of its own: waiters lock it, producers only read the
    /// atomics beside it.
    state: crossbeam_utils::CachePadded<Mutex<State>>,
    concurrency: usize,
    /// Threads running on the port (R6). Changed only under `state`; read
    /// without it by a running thread that dequeues again.
    running: AtomicUsize,
    /// Set once, under `state`.
    closed: AtomicBool,
    /// Packets queued since the start; written by producers only, on a cache
    /// line of its own.
    pushed: crossbeam_utils::CachePadded<AtomicU64>,
    /// Operations accepted and not yet reaped: while non-zero, one waiter must
    /// sleep in the kernel. Paired with `stacked` (both `SeqCst`): a starter
    /// raises this then reads `stacked`; a waiter raises `stacked` then reads this.
    inflight: AtomicUsize,
    /// `state.stack.len()`, stored under `state`: a push that reads 0 here
    /// leaves its packets for a dequeue to take, without the lock.
    stacked: AtomicUsize,
    has_poller: AtomicBool,
    /// `state.away.is_some()`, for waiters deciding how long to sleep.
    away: AtomicBool,
}

/// How long a waiter sleeps, while a running thread holds the poller's role,
/// before it takes the role over ([`Core::take_over`]).
pub(crate) const AWAY_LIMIT: std::time::Duration = std::time::Duration::from_millis(10);

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
            queue: sync::Queue::new(),
            state: crossbeam_utils::CachePadded::new(Mutex::new(State::default())),
            concurrency,
            running: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            pushed: crossbeam_utils::CachePadded::new(AtomicU64::new(0)),
            inflight: AtomicUsize::new(0),
            stacked: AtomicUsize::new(0),
            has_poller: AtomicBool::new(false),
            away: AtomicBool::new(false),
        }
    }

    pub(crate) fn inflight(&self) -> usize {
        self.inflight.load(SeqCst)
    }

    #[cfg(test)]
    pub(crate) fn has_poller(&self) -> bool {
        self.has_poller.load(SeqCst)
    }

    /// An operation was accepted. A new poller is woken by unpark, and an
    /// existing one needs nothing.
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

    /// Moves up to `max` queued packets to `out`; returns how many.
    fn pop_into(&self, out: &mut Vec<Completion>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let Some(e) = self.queue.pop() else { break };
            out.push(e.into_completion());
            n += 1;
        }
        n
    }

    #[inline]
    fn pop_one(&self) -> Option<Completion> {
        self.queue.pop().map(Entry::into_completion)
    }

    /// A thread that runs on the port dequeues again: like Windows, which
    /// serves the calling thread before any waiter, it gives back its slot and
    /// takes it again at once when packets are queued and the count allows,
    /// with no lock. `Some(n)`: it keeps running; `None`: nothing was taken
    /// and it still holds its slot, to give back in [`Core::arrive`].
    pub(crate) fn take_again(&self, out: &mut Vec<Completion>, max: usize) -> Option<usize> {
        match self.may_take_again() {
            true => Some(self.pop_into(out, max)).filter(|&n| n > 0),
            false => None,
        }
    }

    /// [`Core::take_again`] for one packet.
    #[inline]
    pub(crate) fn take_one_again(&self) -> Option<Completion> {
        if self.may_take_again() {
            self.pop_one()
        } else {
            None
        }
    }

    fn may_take_again(&self) -> bool {
        // Above the limit (a thread came back from blocking), giving back the
        // slot leaves none to take again: the slow way decides.
        !self.closed.load(SeqCst) && self.running.load(Relaxed) <= self.concurrency
    }

    /// A dequeue arrives: take packets if the count allows, else join the stack
    /// (unless `poll_only`). `holding`: the caller ran on the port until now,
    /// and its slot is given back first.
    pub(crate) fn arrive(
        &self,
        me: &Arc<Waiter>,
        out: &mut Vec<Completion>,
        max: usize,
        poll_only: bool,
        holding: bool,
    ) -> Arrival {
        let mut st = guard(&self.state);
        if holding {
            self.running.fetch_sub(1, SeqCst);
        }
        if self.closed.load(SeqCst) {
            return Arrival::Closed;
        }
        // Back at the port: a role held while running is taken up again below
        // (this thread joins the stack on top and polls), kept if this thread
        // takes packets and runs on, or handed on if it only polled.
        let was_away = self.clear_away(&mut st, me);
        if poll_only {
            let n = self.take_slot(out, max);
            match (n, was_away) {
                (0, true) => self.ensure_poller(&mut st, None),
                (_, true) => self.set_away(&mut st, me),
                _ => {}
            }
            return match n {
                0 => Arrival::Empty,
                n => Arrival::Took(n),
            };
        }
        {
            let mut slot = me.slot();
            slot.status = Status::Waiting;
            slot.max = max;
            slot.got.clear();
        }
        // On the stack before looking at the queue (Dekker, see the top): a
        // push that missed us left its packet where we now find it.
        st.stack.push(me.clone());
        self.stacked.store(st.stack.len(), SeqCst);
        fence(SeqCst);
        if let n @ 1.. = self.take_slot(out, max) {
            // We are the top of the stack, the first to serve.
            st.stack.pop();
            self.stacked.store(st.stack.len(), SeqCst);
            me.slot().status = Status::Idle;
            if was_away {
                self.set_away(&mut st, me);
            }
            return Arrival::Took(n);
        }
        self.ensure_poller(&mut st, Some(me));
        Arrival::Queued
    }

    /// Under `state`: takes up to `max` packets and a slot, if the count allows.
    fn take_slot(&self, out: &mut Vec<Completion>, max: usize) -> usize {
        if self.running.load(SeqCst) >= self.concurrency {
            return 0;
        }
        let n = self.pop_into(out, max);
        if n > 0 {
            self.running.fetch_add(1, SeqCst);
        }
        n
    }

    /// Queues completions and hands them out. Returns true when the poller
    /// (which is not `me`) was served and must be woken from the kernel.
    pub(crate) fn push(
        &self,
        items: impl IntoIterator<Item = Entry>,
        me: Option<&Arc<Waiter>>,
    ) -> bool {
        self.enqueue(items) && self.hand_out(me)
    }

    /// Queues completions without handing them out, for a running thread that
    /// dequeues next and so takes them first; it calls [`Core::hand_out`]
    /// after. False when the port is closed (the items are dropped).
    pub(crate) fn enqueue(&self, items: impl IntoIterator<Item = Entry>) -> bool {
        if self.closed.load(SeqCst) {
            return false; // the items are dropped here
        }
        let mut n = 0;
        for e in items {
            self.queue.push(e);
            n += 1;
        }
        self.pushed.fetch_add(n, Relaxed);
        if self.closed.load(SeqCst) {
            // `close` may have emptied the queue before these landed.
            while self.pop_one().is_some() {}
            return false;
        }
        true
    }

    /// Hands queued packets to waiters, if any wait. Returns true when the
    /// poller (which is not `me`) was served and must be woken from the kernel.
    pub(crate) fn hand_out(&self, me: Option<&Arc<Waiter>>) -> bool {
        if self.stacked.load(SeqCst) == 0 || self.queue.is_empty() {
            return false; // nobody waits, or nothing to hand: no lock
        }
        let mut st = guard(&self.state);
        self.dispatch(&mut st, me)
    }

    /// The calling thread stops running on the port (it dequeues again, blocks,
    /// or exits). Returns true when the poller must be woken.
    pub(crate) fn release(&self, me: Option<&Arc<Waiter>>) -> bool {
        let mut st = guard(&self.state);
        if let Some(me) = me {
            self.clear_away(&mut st, me);
        }
        // Saturating: a thread never releases a slot it does not hold, but a
        // wrapped count would stop the port for good.
        let _ = self
            .running
            .fetch_update(SeqCst, SeqCst, |r| Some(r.saturating_sub(1)));
        self.dispatch(&mut st, me)
    }

    /// The calling thread runs again after blocking, even above the limit.
    pub(crate) fn reacquire(&self) {
        let _st = guard(&self.state);
        self.running.fetch_add(1, SeqCst);
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
    pub(crate) fn close(&self) -> (Vec<Completion>, bool) {
        let mut st = guard(&self.state);
        self.closed.store(true, SeqCst);
        for w in st.stack.drain(..) {
            w.slot().status = Status::Closed;
            w.thread.unpark();
        }
        self.stacked.store(0, SeqCst);
        let wake = st.poller.take().is_some();
        self.has_poller.store(false, SeqCst);
        st.away = None;
        self.away.store(false, SeqCst);
        let mut discarded = Vec::new();
        self.pop_into(&mut discarded, usize::MAX);
        (discarded, wake)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(SeqCst)
    }

    pub(crate) fn counts(&self) -> Counts {
        Counts {
            queued: self.queue.len(),
            running: self.running.load(SeqCst),
            waiting: self.stacked.load(SeqCst),
            completed: self.pushed.load(Relaxed),
        }
    }

    /// Hands queued packets to waiters, most recent first, while the
    /// concurrency count allows (R5, R6). `me` is the calling thread, which
    /// needs no wake-up.
    ///
    /// A poller that is served keeps the role while it runs (`away`): it
    /// polls again at its next dequeue, and no sleeper is woken to stand in.
    /// A poller whose reap served only others hands the role to the first of
    /// them the same way and goes back to waiting: it is awake already, and
    /// the thread that got the work comes back sooner than a sleeper could be
    /// woken.
    fn dispatch(&self, st: &mut State, me: Option<&Arc<Waiter>>) -> bool {
        let mut wake_poller = false;
        let mut first = None;
        while self.running.load(SeqCst) < self.concurrency {
            let Some(top) = st.stack.last() else { break };
            if !self.serve(top) {
                break;
            }
            let w = st.stack.pop().expect("the top was just served");
            let is_me = me.is_some_and(|m| Arc::ptr_eq(m, &w));
            if st.poller.as_ref().is_some_and(|p| Arc::ptr_eq(p, &w)) {
                st.poller = None;
                self.has_poller.store(false, SeqCst);
                wake_poller |= !is_me;
                self.set_away(st, &w);
            } else if !is_me {
                w.thread.unpark();
            }
            first.get_or_insert(w);
        }
        // The reaping poller served only others: the first of them polls next.
        let reaper = me.filter(|m| st.poller.as_ref().is_some_and(|p| Arc::ptr_eq(p, m)));
        if let (Some(m), Some(w)) = (reaper, first) {
            st.poller = None;
            self.has_poller.store(false, SeqCst);
            m.slot().status = Status::Waiting;
            self.set_away(st, &w);
        }
        self.stacked.store(st.stack.len(), SeqCst);
        self.ensure_poller(st, me);
        wake_poller
    }

    /// Under `state`: moves packets to `w`'s slot and counts it running;
    /// false (and nothing changed) when the queue is empty.
    fn serve(&self, w: &Waiter) -> bool {
        let mut slot = w.slot();
        let max = slot.max;
        if self.pop_into(&mut slot.got, max) == 0 {
            return false;
        }
        slot.status = Status::Served;
        self.running.fetch_add(1, SeqCst);
        true
    }

    fn set_away(&self, st: &mut State, w: &Arc<Waiter>) {
        st.away = Some(w.clone());
        self.away.store(true, SeqCst);
    }

    /// Ends `me`'s time away, if it was away; returns whether it was.
    fn clear_away(&self, st: &mut State, me: &Arc<Waiter>) -> bool {
        if !st.away.as_ref().is_some_and(|w| Arc::ptr_eq(w, me)) {
            return false;
        }
        st.away = None;
        self.away.store(false, SeqCst);
        true
    }

    /// True while a running thread holds the poller's role.
    pub(crate) fn poller_away(&self) -> bool {
        self.away.load(SeqCst)
    }

    /// A waiter that slept [`AWAY_LIMIT`] while the role was held by a
    /// running thread takes it over, so completions never wait longer than
    /// that for a thread that runs long (or blocks without saying so).
    pub(crate) fn take_over(&self, me: &Arc<Waiter>) {
        let mut st = guard(&self.state);
        if st.away.is_none() || st.poller.is_some() || self.closed.load(SeqCst) {
            return;
        }
        let mut slot = me.slot();
        if slot.status != Status::Waiting {
            return;
        }
        slot.status = Status::Polling;
        drop(slot);
        st.away = None;
        self.away.store(false, SeqCst);
        self.has_poller.store(true, SeqCst);
        st.poller = Some(me.clone());
    }

    /// While operations are in flight and threads wait, one of them must wait
    /// in the kernel: promote the most recent waiter, the one LIFO serves
    /// first. The completions it reaps are then mostly its own to take, with
    /// no other thread to wake, and the older waiters stay cold, as on
    /// Windows, where the kernel wakes the most recent waiter for each packet.
    /// (A thread that joins the stack above a poller already in the kernel
    /// leaves it there: moving the role would cost a wake-up of its own.)
    fn ensure_poller(&self, st: &mut State, me: Option<&Arc<Waiter>>) {
        if st.poller.is_some()
            || st.away.is_some()
            || self.closed.load(SeqCst)
            || self.inflight.load(SeqCst) == 0
        {
            return;
        }
        let Some(w) = st.stack.last().cloned() else {
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

impl Drop for Core {
    /// Makes every entry left into its completion (see [`Entry`]) and drops it.
    fn drop(&mut self) {
        while self.pop_one().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    //! The core alone, without a kernel: these also run under miri.

    use super::*;
    use crate::completion::Packet;

    fn packet(user: u64) -> Entry {
        Entry::Posted(Packet {
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

    /// With an operation in flight, `a` arrives and polls, then `b` waits above it.
    fn poller_and_waiter(core: &Core) -> (Arc<Waiter>, Arc<Waiter>) {
        core.op_started();
        let (a, b) = (waiter(), waiter());
        let mut out = Vec::new();
        core.arrive(&a, &mut out, 1, false, false);
        core.arrive(&b, &mut out, 1, false, false);
        (a, b)
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
        core.push([packet(0)], None);
        let mut out = Vec::new();
        assert!(matches!(
            core.arrive(&runner, &mut out, 1, false, false),
            Arrival::Took(1)
        ));
        let (a, b) = (waiter(), waiter());
        assert!(matches!(
            core.arrive(&a, &mut out, 1, false, false),
            Arrival::Queued
        ));
        assert!(matches!(
            core.arrive(&b, &mut out, 1, false, false),
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
    fn most_recent_waiter_polls_while_operations_are_in_flight() {
        let core = Core::new(4);
        let (a, b) = (waiter(), waiter());
        let mut out = Vec::new();
        assert!(matches!(
            core.arrive(&a, &mut out, 1, false, false),
            Arrival::Queued
        ));
        assert!(matches!(
            core.arrive(&b, &mut out, 1, false, false),
            Arrival::Queued
        ));
        assert!(!core.has_poller(), "nothing in flight: nobody polls");
        core.op_started();
        assert!(core.has_poller());
        assert_eq!(b.status(), Status::Polling);
        assert_eq!(a.status(), Status::Waiting);
        // A packet goes to b (LIFO), the poller: serving it means waking it
        // from the kernel. b keeps the role while it runs: a is not woken.
        assert!(core.push([packet(7)], None));
        assert_eq!(b.status(), Status::Served);
        assert!(core.poller_away());
        assert_eq!(a.status(), Status::Waiting);
        // A post still goes to a at once (no kernel involved).
        assert!(!core.push([packet(8)], None));
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
        assert!(!core.push([packet(2)], None));
        assert!(!core.push([packet(3)], None));
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
        core.push([packet(3)], None);
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
        assert!(!core.push([packet(9)], None));
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
        core.push([packet(2)], None);
        let w = waiter();
        // One still runs (a) and the limit is 1: the packet waits.
        assert!(matches!(
            core.arrive(&w, &mut out, 1, true, false),
            Arrival::Empty
        ));
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

    fn packet(user: u64) -> Entry {
        Entry::Posted(Packet {
            bytes: 0,
            key: 0,
            user,
        })
    }

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
            core.push([packet(0)], None);
            let runner = runner(&core);
            let waiter = spawn_dequeue(&core);
            let pusher = {
                let core = core.clone();
                thread::spawn(move || {
                    core.push([packet(1)], None);
                    core.push([packet(2)], None);
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
