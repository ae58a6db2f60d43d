//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`): `COUNT` buffers of
//! `SIZE` bytes, `STRIDE` apart, that the kernel picks from for multishot
//! receives, and that the server gives back once the echo of their bytes has
//! been sent.

use std::alloc::Layout;
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// Buffers per ring (a power of two, as the kernel requires).
pub const COUNT: u16 = 512;
/// Bytes per buffer.
pub const SIZE: usize = 16 * 1024;
const PAGE: usize = 4096;
/// Bytes from one buffer's start to the next's. Buffers laid out a power of
/// two apart start in the same few cache sets, so the first lines of all of
/// them (a 64 B message is nothing else) compete for a handful of sets. On an
/// AMD EPYC VM (1 MiB L2) this nearly doubled the ceiling's CPU per 16 KiB
/// message (BENCHMARKS.md, "Runs AS to AV"). A few lines of padding spread
/// them out.
const STRIDE: usize = SIZE + 256;

/// The ring and its buffers. Both are leaked on purpose: they live as long as
/// the process, so the kernel can never hold an address of freed memory.
///
/// Both are kept as raw pointers, not references: the kernel writes into the
/// buffers and reads the entries behind Rust's back.
pub struct BufRing {
    entries: *mut BufRingEntry,
    bufs: *mut u8,
    /// Our copy of the tail; published to the kernel by [`BufRing::publish`].
    tail: u16,
}

impl BufRing {
    /// Allocates the ring and buffers, registers them as group `bgid` of
    /// `ring`, and hands every buffer to the kernel.
    ///
    /// # Errors
    ///
    /// The kernel lacks provided-buffer rings (before Linux 5.19), or memory.
    pub fn register(ring: &IoUring, bgid: u16) -> io::Result<BufRing> {
        let layout = Layout::from_size_align(usize::from(COUNT) * size_of::<BufRingEntry>(), PAGE)
            .map_err(io::Error::other)?;
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<BufRingEntry>();
        if raw.is_null() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        let bufs = vec![0u8; usize::from(COUNT) * STRIDE].leak().as_mut_ptr();
        // SAFETY: the ring memory is page-aligned, holds COUNT entries and is
        // leaked, so it stays valid until the ring is destroyed.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(raw as u64, COUNT, bgid, 0)
        }
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("registering a provided-buffer ring failed (needs Linux 5.19+): {e}"),
            )
        })?;
        let mut ring = BufRing {
            entries: raw,
            bufs,
            tail: 0,
        };
        (0..COUNT).for_each(|bid| ring.give_back(bid));
        ring.publish();
        Ok(ring)
    }

    /// The address of byte `offset` of buffer `bid`, for a send of its contents.
    pub fn addr(&self, bid: u16, offset: usize) -> *const u8 {
        let at = usize::from(bid % COUNT) * STRIDE + offset.min(SIZE);
        // SAFETY: `at` is below COUNT * STRIDE, within the buffer allocation.
        unsafe { self.bufs.add(at) }
    }

    /// Puts buffer `bid` back in the ring; the kernel sees it after [`publish`](Self::publish).
    pub fn give_back(&mut self, bid: u16) {
        let addr = self.addr(bid, 0) as u64;
        // The kernel only reads entries between its head and our published
        // tail, and this one is past that tail, so nobody else is using it.
        // SAFETY: the index is below COUNT (inside the ring); unused, as above.
        let e = unsafe { &mut *self.entries.add(usize::from(self.tail & (COUNT - 1))) };
        e.set_addr(addr);
        e.set_len(SIZE as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every buffer given back so far visible to the kernel.
    pub fn publish(&mut self) {
        // SAFETY: the tail field overlays the first entry's reserved field, inside
        // the ring memory we own; the kernel reads it, so it is written atomically.
        let tail = unsafe { BufRingEntry::tail(self.entries) };
        // SAFETY: `tail` is a valid, 2-byte aligned u16 inside our live allocation,
        // only ever accessed atomically from this thread and the kernel.
        let tail = unsafe { AtomicU16::from_ptr(tail.cast_mut()) };
        tail.store(self.tail, Ordering::Release);
    }
}
