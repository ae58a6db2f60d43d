//! What the port knows about the calling thread: which port it counts as
//! running on (R6), and its reusable waiter.
//!
//! As on Windows, a thread runs on at most one port at a time: dequeuing from
//! another port, or exiting, gives the slot back.

use std::cell::{Cell, RefCell};
use std::ptr;
use std::sync::{Arc, Weak};

use super::port::Port;
use super::waiters::Waiter;

struct ThreadState {
    waiter: Arc<Waiter>,
    running_on: Option<Weak<Port>>,
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        RUNNING_ON.set(ptr::null());
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
    /// The address of `THREAD`'s `running_on` (null when none), read on every
    /// dequeue and start without a borrow or a lazy initialisation. The
    /// `Weak` keeps the allocation, so no other port can have this address
    /// while it is set.
    static RUNNING_ON: Cell<*const Port> = const { Cell::new(ptr::null()) };
}

/// This thread's waiter.
pub(crate) fn waiter() -> Arc<Waiter> {
    THREAD.with(|t| t.borrow().waiter.clone())
}

/// True when the calling thread counts as running on `port`.
#[inline]
pub(crate) fn is_running_on(port: &Port) -> bool {
    ptr::eq(RUNNING_ON.get(), port)
}

/// Stops counting the calling thread as running on whatever port it ran on,
/// and returns that port, if it still exists.
pub(crate) fn take_running() -> Option<Arc<Port>> {
    let on = THREAD
        .try_with(|t| t.borrow_mut().running_on.take())
        .ok()??;
    RUNNING_ON.set(ptr::null());
    on.upgrade()
}

/// Counts the calling thread as running on `port`.
pub(crate) fn set_running(port: &Arc<Port>) {
    let set = THREAD.try_with(|t| t.borrow_mut().running_on = Some(Arc::downgrade(port)));
    if set.is_ok() {
        RUNNING_ON.set(Arc::as_ptr(port));
    }
}
