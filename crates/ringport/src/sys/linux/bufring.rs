//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`, Linux 5.19) for
//! pooled receives: the kernel picks a buffer only when data arrives, so an
//! idle connection holds none.
//!
//! Every ring entry points into a `Vec<u8>` kept in `slots[bid]`. When a
//! completion names buffer `bid`, the kernel has consumed that entry and will
//! not touch the memory again: [`BufRing::take`] moves the `Vec` out to the
//! caller and publishes a fresh buffer under the same id at the tail. Only the
//! thread that reaps the ring's completions takes, so the slots need no lock
//! of their own: the completion queue's lock orders every take.

use std::alloc::{self, Layout};
use std::cell::UnsafeCell;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

use crate::pool::BufPool;

/// The buffer group id of the port's one ring.
pub(crate) const GROUP: u16 = 0;

#[derive(Debug)]
struct Slots {
    /// The local copy of the tail the kernel reads.
    tail: u16,
    /// `slots[bid]`: the buffer published under `bid`, while the kernel may
    /// pick it.
    slots: Vec<Option<Vec<u8>>>,
}

#[derive(Debug)]
pub(crate) struct BufRing {
    base: NonNull<BufRingEntry>,
    layout: Layout,
    entries: u16,
    size: u32,
    pool: Arc<BufPool>,
    /// Written by `new`, before the ring is shared, then only by `take`,
    /// whose callers hold the completion queue's lock.
    slots: UnsafeCell<Slots>,
}

// SAFETY: `base` points to memory owned by this ring; every write to it and to
// `slots` is made by `new` or by `take` under the completion queue's lock (see
// `take`), and the kernel's reads are ordered by the atomic tail store.
unsafe impl Send for BufRing {}
// SAFETY: as above: shared writes are serialized by the caller of `take`.
unsafe impl Sync for BufRing {}

impl BufRing {
    /// Registers a ring of `pool.count()` buffers (rounded up to a power of
    /// two, at most 32768) of `pool.size()` bytes, all published.
    pub(crate) fn new(submitter: &Submitter<'_>, pool: Arc<BufPool>) -> io::Result<BufRing> {
        let entries = pool.count().clamp(1, 1 << 15).next_power_of_two() as u16;
        let size = u32::try_from(pool.size()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "receive buffers over 4 GiB")
        })?;
        let bytes = usize::from(entries) * std::mem::size_of::<BufRingEntry>();
        let layout = Layout::from_size_align(bytes, 4096).map_err(io::Error::other)?;
        // SAFETY: the layout has a non-zero size (at least one entry).
        let base = NonNull::new(unsafe { alloc::alloc_zeroed(layout) })
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?
            .cast::<BufRingEntry>();
        let ring = BufRing {
            base,
            layout,
            entries,
            size,
            pool,
            slots: UnsafeCell::new(Slots {
                tail: 0,
                slots: (0..entries).map(|_| None).collect(),
            }),
        };
        // The memory stays allocated until `Drop`, and the driver unregisters
        // the ring (or leaks it) before dropping it.
        // SAFETY: page aligned, zeroed, `entries` entries long, outlives use.
        unsafe { submitter.register_buf_ring_with_flags(base.as_ptr() as u64, entries, GROUP, 0)? };
        {
            // SAFETY: the ring is not shared yet: nothing else can reach `slots`.
            let s = unsafe { &mut *ring.slots.get() };
            for bid in 0..entries {
                ring.publish(s, bid, ring.pool.take());
            }
            ring.store_tail(s.tail);
        }
        Ok(ring)
    }

    /// The size of each buffer, for the receive entry's length.
    pub(crate) fn buf_len(&self) -> u32 {
        self.size
    }

    /// Takes the buffer the kernel picked under `bid` (the completion's byte
    /// count says how much it wrote; the port sets the length from it), and
    /// publishes a fresh one from the pool in its place. The kernel consumed
    /// the entry, so it will not write into the buffer again.
    ///
    /// # Safety
    ///
    /// The caller holds the lock of the completion queue this ring's
    /// completions come from, so no two takes run at once.
    pub(crate) unsafe fn take(&self, bid: u16) -> Vec<u8> {
        // SAFETY: takes are serialized (this function's contract) and `new`
        // finished before the ring was shared.
        let s = unsafe { &mut *self.slots.get() };
        let buf = s.slots[usize::from(bid)]
            .take()
            .expect("the kernel names only published buffers");
        self.publish(s, bid, self.pool.take());
        self.store_tail(s.tail);
        buf
    }

    /// Buffers held by the ring: all of them, as each one taken is replaced
    /// at once.
    pub(crate) fn held(&self) -> usize {
        usize::from(self.entries)
    }

    /// Writes the entry for `buf` under `bid` at the local tail.
    fn publish(&self, s: &mut Slots, bid: u16, mut buf: Vec<u8>) {
        buf.clear();
        if buf.capacity() < self.size as usize {
            buf.reserve_exact(self.size as usize);
        }
        let index = usize::from(s.tail & (self.entries - 1));
        // SAFETY: `index` is below `entries`, within the allocation; the kernel
        // does not read this entry until the tail store that follows.
        let entry = unsafe { &mut *self.base.as_ptr().add(index) };
        entry.set_addr(buf.as_mut_ptr() as u64);
        entry.set_len(self.size);
        entry.set_bid(bid);
        s.slots[usize::from(bid)] = Some(buf);
        s.tail = s.tail.wrapping_add(1);
    }

    /// Makes every entry written so far visible to the kernel.
    fn store_tail(&self, tail: u16) {
        // SAFETY: the tail field lives in the ring's first entry, inside the allocation.
        let t = unsafe { BufRingEntry::tail(self.base.as_ptr()) } as *const AtomicU16;
        // The kernel reads the tail atomically; only this ring writes it.
        // SAFETY: `t` is a valid, aligned u16, as above.
        unsafe { (*t).store(tail, Ordering::Release) };
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // The driver unregisters the ring (or leaks it, when operations were
        // left with the kernel) before dropping it, so nothing reads this now.
        // SAFETY: allocated in `new` with this layout.
        unsafe { alloc::dealloc(self.base.as_ptr().cast(), self.layout) };
    }
}
