//! Which port the calling thread runs on, for [`Stats::running`](crate::Stats).
//!
//! The kernel counts the threads running on a port itself and enforces the
//! concurrency limit with that count; it does not report it. This mirrors it
//! in user space: a thread runs on the port whose dequeue last returned a
//! packet to it, until it dequeues again, enters `blocking()`, or exits.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A port's count of running threads, shared with the threads that run on it.
#[derive(Debug, Default)]
pub(super) struct Running(AtomicUsize);

impl Running {
    pub(super) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// The calling thread's membership in one port's running count; leaving
/// (drop, including at thread exit) decrements it.
struct Member(Arc<Running>);

impl Drop for Member {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Member>> = const { RefCell::new(None) };
}

/// The calling thread starts running on the port that owns `count`.
pub(super) fn enter(count: &Arc<Running>) {
    count.0.fetch_add(1, Ordering::Relaxed);
    let old = CURRENT.with(|c| c.borrow_mut().replace(Member(count.clone())));
    drop(old);
}

/// The calling thread stops running on whatever port it ran on.
pub(super) fn leave() {
    // `try_with`: during thread exit the slot may already be gone (and with
    // it the membership, whose drop did the decrement).
    let old = CURRENT.try_with(|c| c.borrow_mut().take()).ok().flatten();
    drop(old);
}

/// True when the calling thread runs on the port that owns `count`.
pub(super) fn is_running_on(count: &Arc<Running>) -> bool {
    CURRENT
        .try_with(|c| matches!(&*c.borrow(), Some(m) if Arc::ptr_eq(&m.0, count)))
        .unwrap_or(false)
}
