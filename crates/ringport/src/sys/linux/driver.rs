//! The kernel side of a Linux port, behind one enum so the port core is
//! written once.
//!
//! A driver must:
//! - `associate(handle)`: prepare a newly associated descriptor (epoll makes a
//!   socket non-blocking and registers it; io_uring needs nothing).
//! - `start(op, token, now, staged)`: begin the operation. `op` stays boxed
//!   and unmoved in the port's slab until the driver reports `token` from
//!   `reap`; `now` asks for the operation to reach the kernel before
//!   returning; otherwise io_uring leaves its entry in `staged` (the port's,
//!   under its lock) for the next `flush`. An error means it was not started.
//! - `flush(staged)`: move staged entries to the kernel's queue (entering the
//!   kernel only to make room; `submit` enters it).
//! - `cancel(token, handle)`: ask for cancellation; true if the operation never
//!   reached the kernel (or was removed before it transferred anything) and
//!   the caller must complete it as cancelled; false if its completion will
//!   still come from `reap`, with its own result or `-ECANCELED`.
//! - `reap(wait, out)`: report finished operations as `(token, result)`, the
//!   result a byte count, a new descriptor, or `-errno`. `Wait::No` never
//!   blocks; with `Wait::For`, one thread at a time (the poller) sleeps until
//!   an operation finishes, the timeout passes, or `wake` is called, while the
//!   others only take what is there.
//! - `wake()`: make a sleeping `reap` return, from any thread, never lost (a
//!   wake-up given before the poller sleeps ends its next sleep).
//! - `submit()`: flush batched operations.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use io_uring::squeue;

use super::epoll::{Epoll, Source};
use super::handle::Handle;
use super::op::Op;
use super::uring::{Filled, Finish, Uring};
use crate::handle::HandleKind;

/// How long a reap may wait.
pub(crate) enum Wait<'a> {
    /// Take what is there; skip the kernel if another thread is reaping.
    No,
    /// Sleep in the kernel until a completion, the timeout, or a wake-up, if
    /// the closure still says so once the right to sleep is held.
    For(Option<Duration>, &'a dyn Fn() -> bool),
}

// One driver per port: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Driver {
    Uring(Uring),
    Epoll(Epoll),
}

impl Driver {
    /// Prepares a descriptor just associated with the port.
    pub(crate) fn associate(&self, handle: &Handle) -> io::Result<()> {
        match self {
            Driver::Uring(u) => {
                if u.fix(handle.raw_fd()) {
                    handle.set_fixed();
                }
                Ok(())
            }
            Driver::Epoll(_) if handle.kind() == HandleKind::File => Ok(()),
            Driver::Epoll(e) => handle.set_readiness(e.register(handle.raw_fd())?),
        }
    }

    /// A single-thread port's first dequeue, on the dequeuing thread.
    pub(crate) fn claim(&self) -> io::Result<()> {
        match self {
            Driver::Uring(u) => u.claim(),
            Driver::Epoll(_) => Ok(()),
        }
    }

    /// `close` of a single-thread port no thread claimed: the caller claims it.
    pub(crate) fn adopt(&self) {
        if let Driver::Uring(u) = self {
            u.adopt();
        }
    }

    /// Undoes `associate` before the descriptor is closed.
    pub(crate) fn forget(&self, src: &Arc<Source>) {
        if let Driver::Epoll(e) = self {
            e.deregister(src);
        }
    }

    /// Closes the descriptor of a handle whose `associate` registered it
    /// (`Handle::is_fixed`): its slot in the file table is cleared first, or
    /// the kernel would keep the socket open. False: left for the owner of a
    /// single-thread port (see `Uring::unfix_and_close`).
    pub(crate) fn close_fixed(&self, fd: OwnedFd) -> bool {
        match self {
            Driver::Uring(u) => u.unfix_and_close(fd),
            Driver::Epoll(_) => {
                drop(fd);
                true
            }
        }
    }

    /// The owner's part of `close_fixed`: how many descriptors it closed.
    #[inline]
    pub(crate) fn owner_closes(&self) -> usize {
        match self {
            Driver::Uring(u) => u.unfix_deferred(),
            Driver::Epoll(_) => 0,
        }
    }

    /// The port closed and drained: forget the file table (see
    /// `Uring::drop_file_table`); how many waiting descriptors it closed.
    pub(crate) fn drop_file_table(&self) -> usize {
        match self {
            Driver::Uring(u) => u.drop_file_table(),
            Driver::Epoll(_) => 0,
        }
    }

    /// Begins `op`; with io_uring and not `now`, its entry waits in `staged`.
    ///
    /// # Safety
    ///
    /// `op` must stay at its address, and must not be dropped, until `reap`
    /// reports `token` (or the driver itself is dropped after a drain); so
    /// must the operations of the entries in `staged`.
    pub(crate) unsafe fn start(
        &self,
        op: &mut Op,
        token: u64,
        now: bool,
        staged: &mut Vec<squeue::Entry>,
    ) -> io::Result<()> {
        match self {
            Driver::Uring(u) => {
                let entry = u.prepare(op, token);
                // SAFETY: forwarded from this function's contract.
                unsafe { queue(u, entry, now, staged) };
                Ok(())
            }
            Driver::Epoll(e) => {
                // SAFETY: forwarded from this function's contract.
                unsafe { e.start(op, token, now) }
            }
        }
    }

    /// Arms a multishot receive for the pooled receives on `handle` under token
    /// `anchor` (see `handle::Multi`): queued in the kernel's submission
    /// queue at once (never staged, so that a cancel queued later is behind
    /// it), submitted if `now`; false when there are none here (epoll, the option
    /// off, or a kernel without buffer rings or multishot receives).
    pub(crate) fn arm_multi(&self, handle: &Handle, anchor: u64, now: bool) -> bool {
        let Driver::Uring(u) = self else {
            return false;
        };
        let Some(entry) = u.prepare_multi(handle.raw_fd(), handle.is_fixed(), anchor) else {
            return false;
        };
        // SAFETY: a multishot receive points to no memory of the process: its
        // buffers come from the ring, which outlives every entry.
        unsafe { push_queued(u, [entry], now) };
        true
    }

    /// Asks the kernel to cancel `token`, queued behind everything queued
    /// so far (its own entry included); submitted if `now`.
    pub(crate) fn cancel_behind(&self, token: u64, now: bool) -> io::Result<()> {
        match self {
            Driver::Uring(u) => u.cancel_behind(token, now),
            Driver::Epoll(_) => Ok(()),
        }
    }

    /// The kernel took every entry queued so far (io_uring), so none of them
    /// still names a descriptor by number.
    pub(crate) fn all_submitted(&self) -> bool {
        match self {
            Driver::Uring(u) => u.all_submitted(),
            Driver::Epoll(_) => true,
        }
    }

    /// Whether pooled receives may go through multishot receives now.
    pub(crate) fn multishot(&self) -> bool {
        match self {
            Driver::Uring(u) => u.multishot_on(),
            Driver::Epoll(_) => false,
        }
    }

    /// See [`Uring::multishot_refused`].
    pub(crate) fn multishot_refused(&self, res: i32) -> bool {
        match self {
            Driver::Uring(u) => u.multishot_refused(res),
            Driver::Epoll(_) => false,
        }
    }

    /// Moves staged entries into the kernel's submission queue, entering the
    /// kernel only if it is full.
    ///
    /// # Safety
    ///
    /// As for [`Driver::start`]: the entries' operations stay put until reaped.
    pub(crate) unsafe fn flush(&self, staged: &mut Vec<squeue::Entry>) {
        if let Driver::Uring(u) = self {
            // SAFETY: forwarded from this function's contract.
            unsafe { push_queued(u, staged.drain(..), false) };
        }
    }

    pub(crate) fn cancel(&self, token: u64, handle: &Handle) -> io::Result<bool> {
        match self {
            Driver::Uring(u) => u.cancel(token, false),
            Driver::Epoll(e) => Ok(e.cancel(token, handle)),
        }
    }

    /// `filled`: buffers the kernel picked for pooled receives, by token
    /// (io_uring; epoll fills them in the operation itself).
    /// `finish` takes in what was reaped, before any later reap's (io_uring
    /// calls it under its completion lock).
    pub(crate) fn reap(
        &self,
        wait: Wait<'_>,
        out: &mut Vec<(u64, i32)>,
        filled: &mut Filled,
        finish: &mut Finish<'_>,
    ) -> io::Result<()> {
        match self {
            Driver::Uring(u) => u.reap(wait, out, filled, finish),
            Driver::Epoll(e) => {
                let r = e.reap(wait, out);
                finish(out, filled);
                r
            }
        }
    }

    /// Buffers the kernel holds for pooled receives.
    pub(crate) fn ring_buffers(&self) -> usize {
        match self {
            Driver::Uring(u) => u.ring_buffers(),
            Driver::Epoll(_) => 0,
        }
    }

    /// The port leaves operations with the kernel: keep the memory they may
    /// still write into.
    pub(crate) fn leak_buffers(&self) {
        if let Driver::Uring(u) = self {
            u.leak_buffers();
        }
    }

    pub(crate) fn wake(&self) {
        match self {
            Driver::Uring(u) => u.wake(),
            Driver::Epoll(e) => e.wake(),
        }
    }

    pub(crate) fn submit(&self) -> io::Result<()> {
        match self {
            Driver::Uring(u) => u.submit(),
            Driver::Epoll(e) => {
                e.submit();
                Ok(())
            }
        }
    }
}

/// Stages `entry` in `staged`, or unless `now`; with `now`, pushes the staged
/// entries (older, so first) and it, and enters the kernel. Queued even if
/// entering the kernel fails, so the operation is started either way.
///
/// # Safety
///
/// As for [`Uring::push`], for `entry` and the staged entries.
unsafe fn queue(u: &Uring, entry: squeue::Entry, now: bool, staged: &mut Vec<squeue::Entry>) {
    if !now {
        staged.push(entry);
        return;
    }
    // SAFETY: forwarded from this function's contract.
    unsafe { push_queued(u, staged.drain(..).chain([entry]), true) };
}

/// [`Uring::push`], which queues every entry even when entering the kernel
/// fails: the next enter submits them, so the failure is only logged.
///
/// # Safety
///
/// As for [`Uring::push`].
unsafe fn push_queued(u: &Uring, entries: impl IntoIterator<Item = squeue::Entry>, now: bool) {
    // SAFETY: forwarded from this function's contract.
    if let Err(e) = unsafe { u.push(entries, now) } {
        log::warn!("ringport: io_uring submit failed: {e}");
    }
}
