//! The port's packet queue: crossbeam-queue's `SegQueue` (version 0.3.14),
//! with two changes. The blocks its readers are done with are kept, a few at
//! a time, for its writers to fill again, instead of going back to the
//! allocator; and `push` and `pop` take their common case inline (see
//! [`Queue::push`]).
//!
//! Why: in a stream of posts from one thread to another, the writer
//! allocates a block every 31 packets and the reader frees it. glibc puts a
//! block freed by another thread back into the arena of the thread that
//! allocated it, under that arena's lock, once the freeing thread's own
//! cache is full; so the two threads meet on the lock, and the arena's top is
//! trimmed and grown again. In the profile of the stream hand-off that was
//! 22.7% of the samples in `futex` and 17.6% in page faults under
//! `_int_malloc` (BENCHMARKS.md, "Hand-off").
//!
//! Reuse is as safe as `free` and `malloc`: a block goes to the spares
//! exactly where `SegQueue` frees it (its destruction protocol has made sure
//! that no thread uses it or will), and a writer takes one exactly where
//! `SegQueue` allocates one, before it is published. An allocator may hand
//! back the very same address, so no thread can tell the difference. The
//! block pointers a thread loads from `head` and `tail` are followed only
//! after a successful compare-exchange of the index has shown them current,
//! so a stale pointer to a reused block is never followed; the others (a
//! block's `next`, the block whose destruction a reader takes over) stay
//! alive by crossbeam's own arguments, given at each use.
//!
//! The algorithm, its comments and its memory orderings are crossbeam's,
//! unchanged. Copyright (c) 2019 The Crossbeam Project Developers; MIT or
//! Apache-2.0, as ringport.
//!
//! Its own tests run natively, under miri, and under loom (`--cfg loom`),
//! which explores every interleaving of two or three threads over blocks of
//! three slots, so that a few values cross blocks and reuse them. The port
//! itself, under loom, uses a locked queue in its place (see
//! `waiters::sync`), so that the model of the port checks the protocol
//! around the queue.

#![cfg_attr(loom, allow(dead_code))] // under loom only the tests use it

use std::fmt;
use std::marker::PhantomData;
use std::ptr;
use std::sync::atomic::Ordering;

use crossbeam_utils::CachePadded;

use sync::{clear_ptr, clear_state, fence, index_mut, ptr_mut};
use sync::{AtomicPtr, AtomicU64, AtomicUsize, Backoff, Cell, LAP};

/// The primitives: std's and crossbeam's, or loom's under `--cfg loom`.
#[cfg(not(loom))]
mod sync {
    use std::cell::UnsafeCell;
    use std::mem::MaybeUninit;

    pub(super) use crossbeam_utils::Backoff;
    pub(super) use std::sync::atomic::{fence, AtomicPtr, AtomicU64, AtomicUsize};

    /// Each block covers one "lap" of indices.
    pub(super) const LAP: u64 = 32;

    /// A slot's value; all zeroes is an empty one.
    pub(super) struct Cell<T>(UnsafeCell<MaybeUninit<T>>);

    impl<T> Cell<T> {
        /// Writes the value.
        ///
        /// # Safety
        ///
        /// No other thread reads or writes the cell until the writer
        /// publishes the write (the slot's `WRITE` bit).
        #[inline(always)]
        pub(super) unsafe fn write(&self, value: T) {
            // SAFETY: exclusive for now (the caller's promise).
            unsafe { self.0.get().write(MaybeUninit::new(value)) }
        }

        /// Moves the value out.
        ///
        /// # Safety
        ///
        /// The cell holds a value whose write happened before, and it is
        /// moved out (or dropped) once.
        #[inline(always)]
        pub(super) unsafe fn read(&self) -> T {
            // SAFETY: initialized, and read once (the caller's promise).
            unsafe { self.0.get().read().assume_init() }
        }
    }

    /// An index through `&mut`: no other thread can touch it.
    #[inline(always)]
    pub(super) fn index_mut(a: &mut AtomicU64) -> u64 {
        *a.get_mut()
    }

    /// A block pointer through `&mut`.
    #[inline(always)]
    pub(super) fn ptr_mut<T>(a: &mut AtomicPtr<T>) -> *mut T {
        *a.get_mut()
    }

    /// Clears a block pointer through `&mut`.
    #[inline(always)]
    pub(super) fn clear_ptr<T>(a: &mut AtomicPtr<T>) {
        *a.get_mut() = std::ptr::null_mut();
    }

    /// Clears a slot's state through `&mut`.
    #[inline(always)]
    pub(super) fn clear_state(a: &mut AtomicUsize) {
        *a.get_mut() = 0;
    }
}

/// The primitives under loom: its atomics and cells, which it tracks, and a
/// backoff that yields to its scheduler (a spin it cannot see would never
/// end). Blocks of three slots.
#[cfg(loom)]
mod sync {
    use std::mem::MaybeUninit;

    pub(super) use loom::sync::atomic::{fence, AtomicPtr, AtomicU64, AtomicUsize};

    /// A lap of 4 indices: blocks of 3 slots.
    pub(super) const LAP: u64 = 4;

    /// Waits by handing the turn to another thread of the model.
    pub(super) struct Backoff;

    impl Backoff {
        pub(super) fn new() -> Backoff {
            Backoff
        }
        pub(super) fn spin(&self) {
            loom::thread::yield_now();
        }
        pub(super) fn snooze(&self) {
            loom::thread::yield_now();
        }
    }

    /// A slot's value, each access checked by loom for a data race.
    pub(super) struct Cell<T>(loom::cell::UnsafeCell<MaybeUninit<T>>);

    impl<T> Cell<T> {
        pub(super) fn new() -> Cell<T> {
            Cell(loom::cell::UnsafeCell::new(MaybeUninit::uninit()))
        }

        /// # Safety
        ///
        /// As the native `Cell::write`.
        pub(super) unsafe fn write(&self, value: T) {
            self.0.with_mut(|p| {
                // SAFETY: as the caller promised; loom checks it.
                unsafe { p.write(MaybeUninit::new(value)) }
            })
        }

        /// # Safety
        ///
        /// As the native `Cell::read`.
        pub(super) unsafe fn read(&self) -> T {
            self.0.with(|p| {
                // SAFETY: as the caller promised; loom checks it.
                unsafe { p.read().assume_init() }
            })
        }
    }

    /// As the native `index_mut`: loom's atomics lend their value to a
    /// closure, where std's give `&mut`.
    pub(super) fn index_mut(a: &mut AtomicU64) -> u64 {
        a.with_mut(|v| *v)
    }

    pub(super) fn ptr_mut<T>(a: &mut AtomicPtr<T>) -> *mut T {
        a.with_mut(|v| *v)
    }

    pub(super) fn clear_ptr<T>(a: &mut AtomicPtr<T>) {
        a.with_mut(|v| *v = std::ptr::null_mut());
    }

    pub(super) fn clear_state(a: &mut AtomicUsize) {
        a.with_mut(|v| *v = 0);
    }
}

// Bits indicating the state of a slot:
// * If a value has been written into the slot, `WRITE` is set.
// * If a value has been read from the slot, `READ` is set.
// * If the block is being destroyed, `DESTROY` is set.
const WRITE: usize = 1;
const READ: usize = 2;
const DESTROY: usize = 4;

// The maximum number of values a block can hold.
const BLOCK_CAP: usize = LAP as usize - 1;
// How many lower bits are reserved for metadata.
const SHIFT: usize = 1;
// Indicates that the block is not the last one.
const HAS_NEXT: u64 = 1;

/// Emptied blocks a queue keeps for reuse, at most. A reader frees a block
/// about as often as a writer needs one; a few absorb the bursts.
const SPARES: usize = 4;

/// A slot in a block.
struct Slot<T> {
    /// The value.
    value: Cell<T>,
    /// The state of the slot.
    state: AtomicUsize,
}

impl<T> Slot<T> {
    /// Waits until a value is written into the slot.
    fn wait_write(&self) {
        let backoff = Backoff::new();
        while self.state.load(Ordering::Acquire) & WRITE == 0 {
            backoff.snooze();
        }
    }
}

/// A block in a linked list: up to `BLOCK_CAP` values.
struct Block<T> {
    /// The next block in the linked list.
    next: AtomicPtr<Block<T>>,
    /// Slots for values.
    slots: [Slot<T>; BLOCK_CAP],
}

impl<T> Block<T> {
    #[cfg(not(loom))]
    const LAYOUT: std::alloc::Layout = {
        let layout = std::alloc::Layout::new::<Self>();
        assert!(layout.size() != 0, "a block holds an AtomicPtr");
        layout
    };

    /// A new, empty block from the allocator.
    #[cfg(not(loom))]
    fn alloc() -> *mut Self {
        // SAFETY: the layout is not zero-sized (checked in `LAYOUT`).
        let ptr = unsafe { std::alloc::alloc_zeroed(Self::LAYOUT) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(Self::LAYOUT)
        }
        // All zeroes is an empty block: a null `next`, no state bits set,
        // and values that are `MaybeUninit`.
        ptr.cast()
    }

    /// A new, empty block, its atomics made by loom (zeroed memory is not
    /// one of them).
    #[cfg(loom)]
    fn alloc() -> *mut Self {
        Box::into_raw(Box::new(Block {
            next: AtomicPtr::new(ptr::null_mut()),
            slots: std::array::from_fn(|_| Slot {
                value: Cell::new(),
                state: AtomicUsize::new(0),
            }),
        }))
    }

    /// Gives a block back to the allocator.
    ///
    /// # Safety
    ///
    /// `this` came from [`Block::alloc`] and was not freed since, and no
    /// thread uses it or will. (Values left in its slots are not dropped.)
    #[cfg(not(loom))]
    unsafe fn free(this: *mut Self) {
        // SAFETY: allocated with this layout (the caller's promise).
        unsafe { std::alloc::dealloc(this.cast(), Self::LAYOUT) }
    }

    /// Drops a block that `alloc` boxed.
    ///
    /// # Safety
    ///
    /// As the native `free`.
    #[cfg(loom)]
    unsafe fn free(this: *mut Self) {
        // SAFETY: boxed by `alloc` and not freed since (the caller's promise).
        drop(unsafe { Box::from_raw(this) });
    }

    /// Makes a block that no thread uses empty again, as from `alloc`.
    fn reset(&mut self) {
        clear_ptr(&mut self.next);
        for slot in &mut self.slots {
            clear_state(&mut slot.state);
        }
    }

    /// Waits until the next pointer is set.
    fn wait_next(&self) -> *mut Block<T> {
        let backoff = Backoff::new();
        loop {
            let next = self.next.load(Ordering::Acquire);
            if !next.is_null() {
                return next;
            }
            backoff.snooze();
        }
    }
}

/// A position in a queue.
struct Position<T> {
    /// The index in the queue.
    index: AtomicU64,
    /// The block in the linked list.
    block: AtomicPtr<Block<T>>,
}

impl<T> Position<T> {
    /// The index, then the block. In this order: the block is stored before
    /// the index that moves into it, so a thread that sees the index sees
    /// that block or a later one, and a later one fails its compare-exchange
    /// of the index.
    #[inline(always)]
    fn load(&self) -> (u64, *mut Block<T>) {
        let index = self.index.load(Ordering::Acquire);
        (index, self.block.load(Ordering::Acquire))
    }
}

/// An unbounded multi-producer multi-consumer FIFO queue that keeps its
/// emptied blocks: `SegQueue`'s methods, as far as the port uses them.
pub(crate) struct Queue<T> {
    /// The head of the queue.
    head: CachePadded<Position<T>>,
    /// The tail of the queue.
    tail: CachePadded<Position<T>>,
    /// Emptied blocks, reset, for the next writer that needs one; null
    /// where none is kept.
    spares: CachePadded<[AtomicPtr<Block<T>>; SPARES]>,
    /// Dropping a `Queue<T>` may drop values of type `T`.
    _marker: PhantomData<T>,
}

// SAFETY: as `SegQueue`'s: the queue moves `T`s between threads (hence
// `T: Send`), and every access to a slot is ordered by its state bits.
unsafe impl<T: Send> Send for Queue<T> {}
// SAFETY: as above; `&Queue` only pushes and pops whole values.
unsafe impl<T: Send> Sync for Queue<T> {}

impl<T> Queue<T> {
    /// A new, empty queue; it allocates at its first push.
    pub(crate) fn new() -> Queue<T> {
        Queue {
            head: CachePadded::new(Position {
                block: AtomicPtr::new(ptr::null_mut()),
                index: AtomicU64::new(0),
            }),
            tail: CachePadded::new(Position {
                block: AtomicPtr::new(ptr::null_mut()),
                index: AtomicU64::new(0),
            }),
            spares: CachePadded::new(std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut()))),
            _marker: PhantomData,
        }
    }

    /// An empty block for a writer: a spare if one is kept, else a new one.
    /// Only the caller has it until it publishes it.
    fn new_block(&self) -> *mut Block<T> {
        for spare in self.spares.iter() {
            if !spare.load(Ordering::Relaxed).is_null() {
                // Acquire: pairs with the release in `recycle`, so the reset
                // (and every read of the block before it) happens before
                // this writer fills it.
                let b = spare.swap(ptr::null_mut(), Ordering::Acquire);
                if !b.is_null() {
                    return b;
                }
            }
        }
        Block::alloc()
    }

    /// Keeps an emptied block for reuse, or frees it when the spares are
    /// full.
    ///
    /// # Safety
    ///
    /// As [`Block::free`]: `b` is this queue's, not already recycled or
    /// freed, no thread uses it and none will, and its values have been read
    /// or dropped (a reused slot is overwritten without a drop).
    unsafe fn recycle(&self, b: *mut Block<T>) {
        // SAFETY: no other thread uses the block (the caller's promise).
        unsafe { (*b).reset() };
        for spare in self.spares.iter() {
            if spare.load(Ordering::Relaxed).is_null()
                && spare
                    .compare_exchange(ptr::null_mut(), b, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
        }
        // SAFETY: as the caller promised; it was not kept.
        unsafe { Block::free(b) }
    }

    /// Sets the `DESTROY` bit in slots starting from `start`, and recycles
    /// the block when no thread still reads from it.
    ///
    /// # Safety
    ///
    /// `this` is a block of this queue, and the caller holds the right to
    /// destroy it: either it has just read the block's last slot
    /// (`start == 0`), or its `fetch_or(READ)` on slot `start - 1` found
    /// `DESTROY` set. Exactly one thread ever holds that right for a block,
    /// so it is recycled once.
    unsafe fn destroy(&self, this: *mut Block<T>, start: usize) {
        // It is not necessary to set the `DESTROY` bit in the last slot
        // because that slot has begun destruction of the block.
        for i in start..BLOCK_CAP - 1 {
            // SAFETY: `i < BLOCK_CAP`; the block is recycled only by the
            // holder of the right to destroy it (this thread), below.
            let slot = unsafe { (*this).slots.get_unchecked(i) };
            // Mark the `DESTROY` bit if a thread is still using the slot.
            if slot.state.load(Ordering::Acquire) & READ == 0
                && slot.state.fetch_or(DESTROY, Ordering::AcqRel) & READ == 0
            {
                // If a thread is still using the slot, it will continue
                // destruction of the block.
                return;
            }
        }
        // SAFETY: no thread is using the block: every slot has been read.
        unsafe { self.recycle(this) }
    }

    /// Pushes an element to the tail.
    ///
    /// The common case inline: a slot inside the tail block, claimed at the
    /// first try. Inlined, the value goes from the caller's registers
    /// straight into the slot; through a call it is copied from the stack
    /// in 16-byte pieces that the caller stored in other pieces, and that
    /// copy stalls on store forwarding (half of `push`'s samples in the
    /// one-thread hand-off's profile).
    #[inline]
    pub(crate) fn push(&self, value: T) {
        let (tail, block) = self.tail.load();
        let offset = ((tail >> SHIFT) % LAP) as usize;
        // Not the block's last slot (whose writer installs the next block)
        // nor its end, and not the first push: the first iteration of
        // `push_slow`'s loop, which would do just this.
        if offset + 1 < BLOCK_CAP
            && !block.is_null()
            && self
                .tail
                .index
                .compare_exchange_weak(
                    tail,
                    tail + (1 << SHIFT),
                    Ordering::SeqCst,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            // SAFETY: the compare-exchange gave this thread the slot at
            // `offset < BLOCK_CAP` of `block`, the tail block (the index did
            // not move since `block` was loaded); it lives until that slot
            // is read.
            unsafe { Self::write(block, offset, value) };
            return;
        }
        self.push_slow(value);
    }

    /// Writes a value into a slot this thread claimed, and marks it written.
    ///
    /// # Safety
    ///
    /// The slot at `offset < BLOCK_CAP` of the live block `block` was given
    /// to this thread by a compare-exchange of the tail index.
    #[inline]
    unsafe fn write(block: *mut Block<T>, offset: usize, value: T) {
        // SAFETY: as the caller promised; no reader touches the value
        // before `WRITE` is set.
        unsafe {
            let slot = (*block).slots.get_unchecked(offset);
            slot.value.write(value);
            slot.state.fetch_or(WRITE, Ordering::Release);
        }
    }

    /// [`Queue::push`]: crossbeam's loop, for every case.
    #[inline(never)]
    fn push_slow(&self, value: T) {
        let backoff = Backoff::new();
        let (mut tail, mut block) = self.tail.load();
        // A block taken in advance, only this thread's until it installs it.
        let mut next_block: *mut Block<T> = ptr::null_mut();

        loop {
            // Calculate the offset of the index into the block.
            let offset = ((tail >> SHIFT) % LAP) as usize;

            // If we reached the end of the block, wait until the next one is
            // installed.
            if offset == BLOCK_CAP {
                backoff.snooze();
                (tail, block) = self.tail.load();
                continue;
            }

            // If we're going to have to install the next block, take it in
            // advance in order to make the wait for other threads as short
            // as possible.
            if offset + 1 == BLOCK_CAP && next_block.is_null() {
                next_block = self.new_block();
            }

            // If this is the first push operation, we need to allocate the
            // first block.
            if block.is_null() {
                let new = match next_block.is_null() {
                    true => self.new_block(),
                    false => std::mem::replace(&mut next_block, ptr::null_mut()),
                };
                if self
                    .tail
                    .block
                    .compare_exchange(block, new, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
                {
                    self.head.block.store(new, Ordering::Release);
                    block = new;
                } else {
                    next_block = new;
                    (tail, block) = self.tail.load();
                    continue;
                }
            }

            let new_tail = tail + (1 << SHIFT);

            // Try advancing the tail forward.
            match self.tail.index.compare_exchange_weak(
                tail,
                new_tail,
                Ordering::SeqCst,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    // If we've reached the end of the block, install the
                    // next one.
                    if offset + 1 == BLOCK_CAP {
                        let next_index = new_tail.wrapping_add(1 << SHIFT);
                        self.tail.block.store(next_block, Ordering::Release);
                        self.tail.index.store(next_index, Ordering::Release);
                        // SAFETY: `block` is the tail block: the successful
                        // compare-exchange of the index proves it current,
                        // and it lives until its last slot, ours, is read.
                        unsafe { (*block).next.store(next_block, Ordering::Release) };
                    }

                    // Write the value into the slot.
                    // SAFETY: the compare-exchange gave this thread the slot
                    // at `offset < BLOCK_CAP` of the live block `block`.
                    unsafe { Self::write(block, offset, value) };
                    if offset + 1 != BLOCK_CAP && !next_block.is_null() {
                        // Taken in advance for an end another thread reached:
                        // never published. Recycled after the write, so the
                        // slot's reader does not wait on the reset.
                        // SAFETY: only this thread ever had it, and it holds
                        // no values.
                        unsafe { self.recycle(next_block) };
                    }
                    return;
                }
                Err(t) => {
                    tail = t;
                    block = self.tail.block.load(Ordering::Acquire);
                    backoff.spin();
                }
            }
        }
    }

    /// Pops the head element from the queue, or `None` if it is empty.
    ///
    /// The common case inline, as in [`Queue::push`]: a slot inside the head
    /// block, claimed at the first try, or an empty queue. Inlined, the
    /// value read from the slot reaches the caller in registers, not through
    /// a returned copy that it loads back in other pieces.
    #[inline(always)]
    pub(crate) fn pop(&self) -> Option<T> {
        let (head, block) = self.head.load();
        let offset = ((head >> SHIFT) % LAP) as usize;
        // Not the block's last slot (whose reader moves the head to the next
        // block) nor its end, and a first block in place: the first
        // iteration of `pop_slow`'s loop, which would do just this.
        if offset + 1 < BLOCK_CAP && !block.is_null() {
            let new_head = self.next_head(head)?;
            let claimed = self.head.index.compare_exchange_weak(
                head,
                new_head,
                Ordering::SeqCst,
                Ordering::Acquire,
            );
            if claimed.is_ok() {
                // SAFETY: the compare-exchange gave this thread the slot at
                // `offset`, not the block's last, of the head block `block`
                // (the index did not move since it was loaded).
                return Some(unsafe { self.read(block, offset) });
            }
        }
        self.pop_slow()
    }

    /// The head index after taking the slot at `head`, or `None` when the
    /// queue is empty: unless `head` knows a block follows (`HAS_NEXT`), it
    /// looks at the tail, and marks `HAS_NEXT` when the tail is in a later
    /// block.
    #[inline(always)]
    fn next_head(&self, head: u64) -> Option<u64> {
        let mut new_head = head + (1 << SHIFT);
        if new_head & HAS_NEXT == 0 {
            fence(Ordering::SeqCst);
            let tail = self.tail.index.load(Ordering::Relaxed);
            // If the tail equals the head, that means the queue is empty.
            if head >> SHIFT == tail >> SHIFT {
                return None;
            }
            // If head and tail are not in the same block, set `HAS_NEXT` in
            // head.
            if (head >> SHIFT) / LAP != (tail >> SHIFT) / LAP {
                new_head |= HAS_NEXT;
            }
        }
        Some(new_head)
    }

    /// Reads the value of a slot this thread claimed, not the block's last,
    /// and passes on the block's destruction if it was asked to.
    ///
    /// # Safety
    ///
    /// The slot at `offset < BLOCK_CAP - 1` of the live block `block` was
    /// given to this thread by a compare-exchange of the head index.
    #[inline]
    unsafe fn read(&self, block: *mut Block<T>, offset: usize) -> T {
        // SAFETY: as the caller promised: the block lives until this thread
        // sets `READ` (or destroys it), and the value is there once `WRITE`
        // is set.
        unsafe {
            let slot = (*block).slots.get_unchecked(offset);
            slot.wait_write();
            let value = slot.value.read();
            // Another thread wanted to destroy the block but couldn't
            // because we were busy reading from the slot.
            if slot.state.fetch_or(READ, Ordering::AcqRel) & DESTROY != 0 {
                self.destroy(block, offset + 1);
            }
            value
        }
    }

    /// Moves the head to the next block, reads the value of the block's
    /// last slot, and destroys the block: a reader that reaches a block's
    /// end holds the right to destroy it.
    ///
    /// # Safety
    ///
    /// The slot at `offset == BLOCK_CAP - 1` of the live block `block` was
    /// given to this thread by a compare-exchange of the head index to
    /// `new_head`.
    unsafe fn read_last(&self, block: *mut Block<T>, offset: usize, new_head: u64) -> T {
        // SAFETY: `block` lives until this thread destroys it, below.
        let next = unsafe { (*block).wait_next() };
        let mut next_index = (new_head & !HAS_NEXT).wrapping_add(1 << SHIFT);
        // SAFETY: `next` is alive: only this thread can move the head into
        // it, so none of its slots can be read, nor it destroyed, before the
        // stores below.
        if !unsafe { (*next).next.load(Ordering::Relaxed) }.is_null() {
            next_index |= HAS_NEXT;
        }
        self.head.block.store(next, Ordering::Release);
        self.head.index.store(next_index, Ordering::Release);
        // SAFETY: as the caller promised; the value is there once `WRITE` is
        // set, and this thread holds the right to destroy the block.
        unsafe {
            let slot = (*block).slots.get_unchecked(offset);
            slot.wait_write();
            let value = slot.value.read();
            self.destroy(block, 0);
            value
        }
    }

    /// [`Queue::pop`]: crossbeam's loop, for every case.
    #[inline(never)]
    fn pop_slow(&self) -> Option<T> {
        let backoff = Backoff::new();
        let (mut head, mut block) = self.head.load();

        loop {
            // Calculate the offset of the index into the block.
            let offset = ((head >> SHIFT) % LAP) as usize;

            // If we reached the end of the block, wait until the next one is
            // installed.
            if offset == BLOCK_CAP {
                backoff.snooze();
                (head, block) = self.head.load();
                continue;
            }

            let new_head = self.next_head(head)?;

            // The block can be null here only if the first push operation is
            // in progress. In that case, just wait until it gets initialized.
            if block.is_null() {
                backoff.snooze();
                (head, block) = self.head.load();
                continue;
            }

            // Try moving the head index forward.
            match self.head.index.compare_exchange_weak(
                head,
                new_head,
                Ordering::SeqCst,
                Ordering::Acquire,
            ) {
                Ok(_) if offset + 1 < BLOCK_CAP => {
                    // SAFETY: the compare-exchange gave this thread the slot
                    // at `offset`, not the block's last, of the head block
                    // `block` (the index did not move since it was loaded).
                    return Some(unsafe { self.read(block, offset) });
                }
                Ok(_) => {
                    // SAFETY: as above, for the block's last slot, claimed by
                    // moving the head index to `new_head`.
                    return Some(unsafe { self.read_last(block, offset, new_head) });
                }
                Err(h) => {
                    head = h;
                    block = self.head.block.load(Ordering::Acquire);
                    backoff.spin();
                }
            }
        }
    }

    /// Whether the queue is empty.
    pub(crate) fn is_empty(&self) -> bool {
        let head = self.head.index.load(Ordering::SeqCst);
        let tail = self.tail.index.load(Ordering::SeqCst);
        head >> SHIFT == tail >> SHIFT
    }

    /// The number of elements in the queue.
    pub(crate) fn len(&self) -> usize {
        loop {
            // Load the tail index, then load the head index.
            let mut tail = self.tail.index.load(Ordering::SeqCst);
            let mut head = self.head.index.load(Ordering::SeqCst);

            // If the tail index didn't change, we've got consistent indices
            // to work with.
            if self.tail.index.load(Ordering::SeqCst) == tail {
                // Erase the lower bits.
                tail &= !((1 << SHIFT) - 1);
                head &= !((1 << SHIFT) - 1);

                // Fix up indices if they fall onto block ends.
                if (tail >> SHIFT) & (LAP - 1) == LAP - 1 {
                    tail = tail.wrapping_add(1 << SHIFT);
                }
                if (head >> SHIFT) & (LAP - 1) == LAP - 1 {
                    head = head.wrapping_add(1 << SHIFT);
                }

                // Rotate indices so that head falls into the first block.
                let lap = (head >> SHIFT) / LAP;
                tail = tail.wrapping_sub((lap * LAP) << SHIFT);
                head = head.wrapping_sub((lap * LAP) << SHIFT);

                // Remove the lower bits.
                tail >>= SHIFT;
                head >>= SHIFT;

                // The difference minus the number of blocks between tail
                // and head.
                return (tail - head - tail / LAP) as usize;
            }
        }
    }

    /// Emptied blocks kept now (tests).
    #[cfg(test)]
    fn kept(&self) -> usize {
        let kept = self.spares.iter();
        kept.filter(|s| !s.load(Ordering::Relaxed).is_null())
            .count()
    }
}

impl<T> Drop for Queue<T> {
    fn drop(&mut self) {
        let mut head = index_mut(&mut self.head.index);
        let mut tail = index_mut(&mut self.tail.index);
        let mut block = ptr_mut(&mut self.head.block);

        // Erase the lower bits.
        head &= !((1 << SHIFT) - 1);
        tail &= !((1 << SHIFT) - 1);

        // SAFETY: `&mut self`: no other thread uses the queue. The slots
        // between `head` and `tail` hold values not yet read, dropped here
        // once each; every block of the list is freed once, after its last
        // slot, and the spares hold no values.
        unsafe {
            // Drop all values between `head` and `tail` and deallocate the
            // heap-allocated blocks.
            while head != tail {
                let offset = ((head >> SHIFT) % LAP) as usize;
                if offset < BLOCK_CAP {
                    // Drop the value in the slot.
                    let slot = (*block).slots.get_unchecked(offset);
                    drop(slot.value.read());
                } else {
                    // Deallocate the block and move to the next one.
                    let next = ptr_mut(&mut (*block).next);
                    Block::free(block);
                    block = next;
                }
                head = head.wrapping_add(1 << SHIFT);
            }

            // Deallocate the last remaining block.
            if !block.is_null() {
                Block::free(block);
            }
            for spare in self.spares.iter_mut() {
                let b = ptr_mut(spare);
                if !b.is_null() {
                    Block::free(b);
                }
            }
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("Queue { .. }")
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};
    use std::thread;
    use std::time::{Duration, Instant};

    /// Many blocks' worth, fewer under miri (it is slow).
    const N: u64 = if cfg!(miri) { 200 } else { 100_000 };

    #[test]
    fn queue_is_fifo_across_many_blocks_and_reuses_them() {
        let q = Queue::new();
        assert!(q.is_empty());
        assert_eq!(q.pop(), None);
        let mut next = 0;
        // Fill and drain in waves of several blocks, so blocks are emptied,
        // kept, and filled again.
        for wave in 1..=5u64 {
            let n = wave * 40;
            for i in 0..n {
                q.push(next + i);
                assert_eq!(q.len(), (i + 1) as usize);
            }
            for i in 0..n {
                assert_eq!(q.pop(), Some(next + i));
            }
            assert!(q.is_empty());
            assert_eq!(q.len(), 0);
            assert_eq!(q.pop(), None);
            next += n;
        }
        assert!(q.kept() > 0, "emptied blocks are kept");
        assert!(q.kept() <= SPARES);
    }

    #[test]
    fn producers_racing_from_an_empty_queue_lose_nothing() {
        // Four producers start together on a fresh queue, so they race for
        // the first block and, at every block's end, for the block taken in
        // advance (the losers recycle theirs). Each value arrives once.
        let rounds = if cfg!(miri) { 2 } else { 50 };
        let per = if cfg!(miri) { 40 } else { 2_000 };
        for _ in 0..rounds {
            let q = Arc::new(Queue::new());
            let start = Arc::new(Barrier::new(4));
            let producers: Vec<_> = (0..4u64)
                .map(|p| {
                    let (q, start) = (q.clone(), start.clone());
                    thread::spawn(move || {
                        start.wait();
                        for i in 0..per {
                            q.push(p * per + i);
                        }
                    })
                })
                .collect();
            for p in producers {
                p.join().unwrap();
            }
            assert_eq!(q.len(), 4 * per as usize);
            let mut all: Vec<u64> = std::iter::from_fn(|| q.pop()).collect();
            all.sort_unstable();
            assert_eq!(all, (0..4 * per).collect::<Vec<_>>());
        }
    }

    #[test]
    fn queue_drops_what_it_still_holds() {
        let marker = Arc::new(());
        {
            let q = Queue::new();
            for _ in 0..100 {
                q.push(marker.clone());
            }
            for _ in 0..40 {
                drop(q.pop());
            }
            assert_eq!(Arc::strong_count(&marker), 61);
        }
        assert_eq!(Arc::strong_count(&marker), 1, "every value dropped once");
    }

    #[test]
    fn queue_keeps_each_producers_order_between_threads() {
        // Two producers and two consumers: every value arrives once, and
        // each consumer sees each producer's values in the order pushed.
        let q = Arc::new(Queue::new());
        let start = Arc::new(Barrier::new(4));
        let producers: Vec<_> = (0..2u64)
            .map(|p| {
                let (q, start) = (q.clone(), start.clone());
                thread::spawn(move || {
                    start.wait();
                    for i in 0..N {
                        q.push((p, i));
                    }
                })
            })
            .collect();
        let taken = Arc::new(AtomicU64::new(0));
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let (q, start, taken) = (q.clone(), start.clone(), taken.clone());
                thread::spawn(move || {
                    start.wait();
                    let mut got = Vec::new();
                    let mut last = [None::<u64>; 2];
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while taken.load(Ordering::Relaxed) < 2 * N && Instant::now() < deadline {
                        let Some((p, i)) = q.pop() else {
                            thread::yield_now();
                            continue;
                        };
                        taken.fetch_add(1, Ordering::Relaxed);
                        let p = p as usize;
                        assert!(last[p].is_none_or(|l| l < i), "out of order");
                        last[p] = Some(i);
                        got.push((p, i));
                    }
                    got
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        let mut all: Vec<(usize, u64)> = Vec::new();
        for c in consumers {
            all.extend(c.join().unwrap());
        }
        assert!(q.is_empty());
        all.sort_unstable();
        let want: Vec<(usize, u64)> = (0..2).flat_map(|p| (0..N).map(move |i| (p, i))).collect();
        assert_eq!(all, want, "every value once");
    }
}

/// Model checks of the queue with loom (`--cfg loom`, blocks of 3 slots): run
/// with `RUSTFLAGS="--cfg loom" cargo test -p ringport --lib --release loom`.
/// Every interleaving within the preemption bound is explored; loom fails a
/// test on a data race on a slot's value, a lost value, or a thread that
/// never finishes.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// Context switches loom forces per execution, at most (loom's guide:
    /// two or three catch most bugs). At 4 the tests below take a few
    /// seconds; each is small because a reader that spins on an empty queue
    /// multiplies the interleavings (seven values pushed against a spinning
    /// reader did not finish in four minutes at 2).
    const PREEMPTIONS: usize = 4;

    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(PREEMPTIONS);
        b.check(f);
    }

    /// Runs `f` on the queue in a new thread of the model.
    fn spawn_on<R: Send + 'static>(
        q: &Arc<Queue<usize>>,
        f: impl FnOnce(&Queue<usize>) -> R + Send + 'static,
    ) -> thread::JoinHandle<R> {
        let q = q.clone();
        thread::spawn(move || f(&q))
    }

    /// Pops until `n` values have come, yielding while the queue is empty.
    fn pop_n(q: &Queue<usize>, n: usize) -> Vec<usize> {
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            match q.pop() {
                Some(v) => got.push(v),
                None => thread::yield_now(),
            }
        }
        got
    }

    #[test]
    fn loom_queue_hands_over_in_order_across_blocks_it_reuses() {
        // Three values pushed and popped first leave the first block
        // recycled, a spare; then four values cross the second block's end
        // while a reader takes them, and the writer takes the spare for the
        // third block in advance, as the reader may still be reading.
        model(|| {
            let q = Arc::new(Queue::new());
            (0..3).for_each(|i| q.push(i));
            assert_eq!(pop_n(&q, 3), [0, 1, 2]);
            assert_eq!(q.kept(), 1, "the emptied block is kept");
            let producer = spawn_on(&q, |q| (3..7).for_each(|i| q.push(i)));
            let got = pop_n(&q, 4);
            producer.join().unwrap();
            assert_eq!(got, [3, 4, 5, 6], "in order, each once");
            assert!(q.is_empty());
            assert_eq!(q.pop(), None);
        });
    }

    #[test]
    fn loom_queue_reuses_a_block_its_reader_is_just_recycling() {
        // Five values wait (a full first block and two in the second). The
        // reader empties the first block and recycles it while the writer,
        // at the second block's last slot, takes a block in advance: the
        // recycled one if it is there by then, whose reset and last reads
        // must happen before the writer fills it.
        model(|| {
            let q = Arc::new(Queue::new());
            (0..5).for_each(|i| q.push(i));
            let producer = spawn_on(&q, |q| (5..7).for_each(|i| q.push(i)));
            let got = pop_n(&q, 7);
            producer.join().unwrap();
            assert_eq!(got, (0..7).collect::<Vec<_>>(), "in order, each once");
            assert!(q.is_empty());
        });
    }

    #[test]
    fn loom_queue_readers_racing_through_a_blocks_end_lose_nothing() {
        // Two readers race over a block's last slot (the reader there moves
        // the head and destroys the block) and the slots before it (a
        // reader still busy there takes the destruction over). The block is
        // then reused by the writes after.
        model(|| {
            let q = Arc::new(Queue::new());
            (0..5).for_each(|i| q.push(i));
            let reader = spawn_on(&q, |q| std::iter::from_fn(|| q.pop()).collect::<Vec<_>>());
            let mine: Vec<usize> = std::iter::from_fn(|| q.pop()).collect();
            let theirs = reader.join().unwrap();
            for got in [&mine, &theirs] {
                assert!(got.windows(2).all(|w| w[0] < w[1]), "each reader in order");
            }
            let mut all = [mine, theirs].concat();
            all.sort_unstable();
            assert_eq!(all, (0..5).collect::<Vec<_>>(), "each value once");
            (5..9).for_each(|i| q.push(i));
            assert_eq!(pop_n(&q, 4), (5..9).collect::<Vec<_>>());
            assert!(q.is_empty());
        });
    }

    #[test]
    fn loom_queue_writers_racing_from_empty_lose_nothing() {
        // Two writers race for the first block, and at its last slot for
        // the next one, each taking one in advance (the loser recycles its
        // own).
        model(|| {
            let q = Arc::new(Queue::new());
            let writers: Vec<_> = (0..2)
                .map(|w| spawn_on(&q, move |q| (0..2).for_each(|i| q.push(w * 10 + i))))
                .collect();
            writers.into_iter().for_each(|w| w.join().unwrap());
            assert_eq!(q.len(), 4);
            let got: Vec<usize> = std::iter::from_fn(|| q.pop()).collect();
            for w in [0, 10] {
                let mine: Vec<_> = got.iter().filter(|&&v| v / 10 == w / 10).collect();
                assert_eq!(mine, [&w, &(w + 1)], "each writer's values in order, once");
            }
            assert!(q.is_empty());
        });
    }
}
