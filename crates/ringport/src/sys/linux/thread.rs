//! What the port knows about the calling thread: which port it counts as
//! running on (R6), and its reusable waiter.
//!
//! As on Windows, a thread runs on at most one port at a time: dequeuing from
//! another port, or exiting, gives the slot back.

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use super::port::Port;
use super::waiters::Waiter;

struct ThreadState {
    waiter: Arc<Waiter>,
    running_on: Option<Weak<Port>>,
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        if let Some(port) = self.running_on.take().and_then(|w| w.upgrade()) {
            port.release_slot(Some(&self.waiter));
            // Operations this thread batched must not wait for a dequeue that
            // will never come.
            let _ = port.submit();
        }
    }
}

thread_local! {
    static THREAD: RefCell<ThreadState> = RefCell::new(ThreadState {
        waiter: Arc::new(Waiter::current()),
        running_on: None,
    });
}

/// This thread's waiter.
pub(crate) fn waiter() -> Arc<Waiter> {
    THREAD.with(|t| t.borrow().waiter.clone())
}

/// True when the calling thread counts as running on `port`.
pub(crate) fn is_running_on(port: &Port) -> bool {
    THREAD
        .try_with(|t| {
            t.borrow()
                .running_on
                .as_ref()
                .is_some_and(|w| std::ptr::eq(w.as_ptr(), port))
        })
        .unwrap_or(false)
}

/// Stops counting the calling thread as running on whatever port it ran on,
/// and returns that port, if it still exists.
pub(crate) fn take_running() -> Option<Arc<Port>> {
    THREAD
        .try_with(|t| t.borrow_mut().running_on.take())
        .ok()
        .flatten()
        .and_then(|w| w.upgrade())
}

/// Counts the calling thread as running on `port`.
pub(crate) fn set_running(port: &Arc<Port>) {
    let _ = THREAD.try_with(|t| t.borrow_mut().running_on = Some(Arc::downgrade(port)));
}
