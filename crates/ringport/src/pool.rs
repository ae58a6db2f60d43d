//! Receive buffers shared by every connection of a port, for
//! [`CompletionPort::recv_pooled`](crate::CompletionPort::recv_pooled).
//!
//! A pooled receive parks no buffer while its socket is idle: the buffer is
//! picked when data arrives (by the kernel from a provided-buffer ring on
//! io_uring, by the port on epoll) and handed to the caller in the
//! completion. [`CompletionPort::recycle`](crate::CompletionPort::recycle)
//! gives it back for reuse; a buffer that is simply dropped is replaced by a
//! new allocation.

use crossbeam_queue::ArrayQueue;

/// Free receive buffers of one size, at most `count` of them. Lock-free: a
/// buffer is taken on every pooled receive and given back on every recycle,
/// from any thread.
#[derive(Debug)]
pub(crate) struct BufPool {
    size: usize,
    free: ArrayQueue<Vec<u8>>,
}

impl BufPool {
    pub(crate) fn new(count: usize, size: usize) -> BufPool {
        BufPool {
            size: size.max(1),
            free: ArrayQueue::new(count.max(1)),
        }
    }

    /// The size of every buffer handed out.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// How many buffers the pool keeps (the provided-buffer ring's length).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))] // only io_uring asks
    pub(crate) fn count(&self) -> usize {
        self.free.capacity()
    }

    /// Free buffers kept for reuse.
    pub(crate) fn free_len(&self) -> usize {
        self.free.len()
    }

    /// An empty buffer with room for `size()` bytes: a recycled one if there is
    /// one, else a new allocation.
    pub(crate) fn take(&self) -> Vec<u8> {
        self.free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.size()))
    }

    /// Keeps `buf` for a later [`take`](BufPool::take) if it is big enough and
    /// the pool is not full; drops it otherwise.
    pub(crate) fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() < self.size {
            return;
        }
        buf.clear();
        // Full: the buffer is dropped here.
        let _ = self.free.push(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::BufPool;

    #[test]
    fn recycles_up_to_its_bound() {
        let pool = BufPool::new(2, 64);
        let a = pool.take();
        assert!(a.capacity() >= 64 && a.is_empty());
        let ptr = a.as_ptr();
        pool.give(a);
        let b = pool.take();
        assert_eq!(b.as_ptr(), ptr, "the recycled buffer comes back");
        pool.give(vec![0; 8]); // too small: dropped
        assert_ne!(pool.take().capacity(), 8);
        for _ in 0..5 {
            pool.give(Vec::with_capacity(64));
        }
        assert_eq!(pool.free_len(), 2);
    }

    #[test]
    fn handed_out_buffers_are_empty() {
        let pool = BufPool::new(1, 16);
        let mut a = pool.take();
        a.extend_from_slice(b"stale data");
        pool.give(a);
        assert!(pool.take().is_empty());
    }
}
