//! The kernel side of a Linux port, behind one enum so the port core is
//! written once.
//!
//! A driver must:
//! - `start(op, token, now)`: begin the operation. `op` stays boxed and unmoved
//!   in the port's slab until the driver reports `token` from `reap`; `now`
//!   asks for the submission to reach the kernel before returning.
//! - `cancel(token, now)`: ask for cancellation; true if the operation never
//!   reached the kernel and the caller must complete it as cancelled.
//! - `reap(wait, out)`: report finished operations as `(token, result)`, the
//!   result a byte count, a new descriptor, or `-errno`; with `Wait::For`,
//!   sleep until one finishes, the timeout passes, or `wake` is called.
//! - `wake()`: make a sleeping `reap` return, from any thread, never lost.
//! - `submit()`: flush batched submissions.

use std::io;

use super::op::Op;
use super::uring::Uring;
pub(crate) use super::uring::Wait;

#[derive(Debug)]
pub(crate) enum Driver {
    Uring(Uring),
}

impl Driver {
    /// Begins `op`.
    ///
    /// # Safety
    ///
    /// `op` must stay at its address, and must not be dropped, until `reap`
    /// reports `token` (or the driver itself is dropped after a drain).
    pub(crate) unsafe fn start(&self, op: &mut Op, token: u64, now: bool) -> io::Result<()> {
        match self {
            Driver::Uring(u) => {
                let entry = Uring::prepare(op, token);
                // SAFETY: forwarded from this function's contract.
                unsafe { u.push(entry, now) }
            }
        }
    }

    pub(crate) fn cancel(&self, token: u64, now: bool) -> io::Result<bool> {
        match self {
            Driver::Uring(u) => u.cancel(token, now),
        }
    }

    pub(crate) fn reap(&self, wait: Wait<'_>, out: &mut Vec<(u64, i32)>) -> io::Result<()> {
        match self {
            Driver::Uring(u) => u.reap(wait, out),
        }
    }

    pub(crate) fn wake(&self) {
        match self {
            Driver::Uring(u) => u.wake(),
        }
    }

    pub(crate) fn submit(&self) -> io::Result<()> {
        match self {
            Driver::Uring(u) => u.submit(),
        }
    }
}
