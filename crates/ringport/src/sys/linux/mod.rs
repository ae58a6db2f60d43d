//! Linux: the port core in user space (queue, LIFO waiters, concurrency),
//! driving io_uring or, where that is unavailable, epoll.

mod backend;
mod bufring;
mod driver;
mod epoll;
mod handle;
mod op;
mod poller;
mod port;
mod posts;
mod thread;
mod uring;
mod waiters;

use std::io;

pub(crate) use handle::{Handle, Owned};
pub(crate) use port::Port;

/// Asks the CPU to bring the cache lines of `bytes` bytes at `p` into its
/// caches, without waiting for them. A hint only: it never faults and reads
/// nothing, so any address will do. A reap walks a chain of per-operation
/// and per-socket memory that the kernel's own work between two reaps has
/// evicted; touching each link in turn waits for one miss after another,
/// where a hint for every completion of the batch first lets them overlap.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = p.cast::<i8>();
        let mut off = 0;
        while off < bytes {
            // SAFETY: a prefetch is a hint: it does not access memory in the
            // sense of the abstract machine, cannot fault, and `wrapping_add`
            // makes no claim about the allocation.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off)) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, bytes);
}

/// `ECANCELED`: the Linux twin of `ERROR_OPERATION_ABORTED`.
pub(crate) fn is_aborted(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ECANCELED)
}
