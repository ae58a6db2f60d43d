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
//! own, because `Queue::push` (crossbeam's `SegQueue`) claims its slot with a
//! `SeqCst` compare-exchange on the queue's tail, which the waiter's fence orders
//! against, before the push reads `stacked` with `SeqCst` (crossbeam-channel's
//! unbounded channel meets its sleeping receivers the same way).
//!
//! Lock order: `Core::state`, then a `Waiter::slot`. Nothing here calls the
//! kernel; the caller wakes the poller when a function says so.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;

use sync::{fence, AtomicBool, AtomicU64, AtomicUsize, Mutex, MutexGuard, Thread};

use super::op::Entry;
use super::posts::PostCount;
use crate::completion::{Completion, Packet};

/// The primitives of the core: std's, or loom's when model checking
/// (`--cfg loom`), so every interleaving of its locks, atomics and wake-ups can
/// be explored.
#[cfg(not(loom))]
mod sync {
    pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize};
    pub(crate) use std::sync::{Mutex, MutexGuard};
    pub(crate) use std::thread::{current, Thread};

    /// The packet queue: FIFO, many producers and consumers, no lock.
    pub(crate) use super::super::queue::Queue;
}
#[cfg(loom)]
mod sync {
    pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize};
    pub(crate) use loom::sync::{Mutex, MutexGuard};
    pub(crate) use loom::thread::{current, Thread};

    /// The packet queue under loom: a locked `VecDeque` with the queue's
    /// methods (loom cannot look inside crossbeam's atomics), so the model
    /// checks the protocol around the queue, taking the queue as linearizable.
    #[derive(Debug)]
    pub(crate) struct Queue<T>(Mutex<std::collections::VecDeque<T>>);

    impl<T> Queue<T> {
        pub(crate) fn new() -> Self {
            Queue(Mutex::new(std::collections::VecDeque::new()))
        }
        /// As `Queue::push`, whose `SeqCst` compare-exchange on the tail
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
    /// Reaped completions queued since the start; written by producers only,
    /// on a cache line of its own.
    pushed: crossbeam_utils::CachePadded<AtomicU64>,
    /// Packets posted since the start, counted by each posting thread.
    posts: PostCount,
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
            posts: PostCount::new(),
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
            e.push_into(out);
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

    /// [`Core::take_again`] for one packet, which the caller makes into its
    /// completion: a 24-byte entry travels back, not an 88-byte completion.
    #[inline]
    pub(crate) fn take_one_again(&self) -> Option<Entry> {
        if self.may_take_again() {
            self.queue.pop()
        } else {
            None
        }
    }

    /// A running thread that dequeues again with `n` completions it has just
    /// reaped takes the first of them (up to its `max`) without the queue
    /// when nothing is queued ahead of them and [`Core::take_again`] would let
    /// it take: the queue would hand it exactly those. Returns how many it
    /// takes so; they count as queued and taken (`Stats::completed`). The
    /// rest it queues ([`Core::enqueue`]), as a reap that came just after.
    #[inline]
    pub(crate) fn take_reaped(&self, n: usize, max: usize) -> usize {
        if n == 0 || !self.queue.is_empty() || !self.may_take_again() {
            return 0;
        }
        let k = n.min(max);
        self.pushed.fetch_add(k as u64, Relaxed);
        k
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
    /// (which is not `me`) was served and must be woken from the kernel. The
    /// port itself queues with [`Core::enqueue`] and [`Core::hand_out`]
    /// (reaped operations) or [`Core::push_posted`] (a post).
    #[cfg(test)]
    pub(crate) fn push(
        &self,
        items: impl IntoIterator<Item = Entry>,
        me: Option<&Arc<Waiter>>,
    ) -> bool {
        self.enqueue(items) && self.hand_out(me)
    }

    /// Queues one posted packet and hands it out, as `push` does. The
    /// hand-off's path: the entry is made here, next to the queue's push,
    /// not copied through an iterator (each copy of it stalled on store
    /// forwarding). The caller has found the port open (`Port::post`
    /// checks, to fail a post after `close`); false also when it closed
    /// since (the packet is dropped).
    #[inline]
    pub(crate) fn push_posted(&self, p: Packet) -> bool {
        self.queue.push(Entry::posted(p));
        self.posts.add_one();
        self.open_after_queuing() && self.hand_out(None)
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
        self.open_after_queuing()
    }

    /// After queuing: `close` may have emptied the queue before the new
    /// entries landed. False, with them dropped, when it has closed.
    #[inline]
    fn open_after_queuing(&self) -> bool {
        if self.closed.load(SeqCst) {
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

    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(SeqCst)
    }

    pub(crate) fn counts(&self) -> Counts {
        Counts {
            queued: self.queue.len(),
            running: self.running.load(SeqCst),
            waiting: self.stacked.load(SeqCst),
            completed: self.pushed.load(Relaxed) + self.posts.total(),
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
mod tests;

#[cfg(all(test, loom))]
mod loom_tests;
