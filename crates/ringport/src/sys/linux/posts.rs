//! How many packets were posted to a port, counted without a locked
//! instruction on the post.
//!
//! A shared counter costs each `post` an atomic add, a locked instruction
//! that was most of the post's own work in the hand-off profiles. Here
//! every thread counts its posts in a counter of its own, which only it
//! writes (a plain load and store), and the port adds the counters up when
//! asked ([`PostCount::total`]). A thread remembers the counters of the
//! last [`REMEMBERED`] ports it posted to; a counter no thread remembers
//! any more (the thread moved on, or exited) is folded into the port's
//! retired sum the next time the port registers a thread, so the port
//! keeps at most one counter per thread that still remembers it.

use std::cell::RefCell;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::atomic::{fence, AtomicU64};
use std::sync::{Arc, Mutex};

/// Ports a thread keeps its counters for; a thread that posts to more
/// ports in turn registers again (under the port's lock) as it comes back.
pub(crate) const REMEMBERED: usize = 4;

/// Gives every port's count its own number: counters are found by it, and
/// a number is never reused, so a thread's remembered counter can never be
/// taken for a later port's.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// One thread's posts to one port; only that thread writes it.
type Counter = Arc<AtomicU64>;

thread_local! {
    /// This thread's counters, most recently used first, by port id.
    static MINE: RefCell<Vec<(u64, Counter)>> = const { RefCell::new(Vec::new()) };
}

/// The posted packets of one port.
#[derive(Debug)]
pub(crate) struct PostCount {
    id: u64,
    counters: Mutex<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    /// A counter for each thread that may still add to it.
    live: Vec<Counter>,
    /// What counters no thread holds any more came to.
    retired: u64,
}

impl Counters {
    /// Folds the counters that only this list still holds into `retired`.
    fn fold(&mut self) {
        let mut retired = 0;
        self.live.retain(|c| {
            if Arc::strong_count(c) > 1 {
                return true;
            }
            // The owner's last add comes before its clone's drop, a
            // release; the fence makes that add visible to the load below.
            fence(Acquire);
            retired += c.load(Relaxed);
            false
        });
        self.retired += retired;
    }
}

/// Adds one to a counter only the calling thread writes.
#[inline]
fn bump(c: &AtomicU64) {
    c.store(c.load(Relaxed) + 1, Relaxed);
}

impl PostCount {
    pub(crate) fn new() -> PostCount {
        PostCount {
            id: NEXT_ID.fetch_add(1, Relaxed),
            counters: Mutex::new(Counters::default()),
        }
    }

    /// Counts one post by the calling thread.
    #[inline]
    pub(crate) fn add_one(&self) {
        let counted = MINE.try_with(|mine| {
            let Ok(mut mine) = mine.try_borrow_mut() else {
                return false;
            };
            match mine.iter().position(|(id, _)| *id == self.id) {
                Some(0) => {}
                Some(i) => mine[..=i].rotate_right(1),
                None => {
                    let c = self.register();
                    mine.insert(0, (self.id, c));
                    // A forgotten counter stays with its port, which folds
                    // it at its next registration.
                    mine.truncate(REMEMBERED);
                }
            }
            bump(&mine[0].1);
            true
        });
        if counted != Ok(true) {
            // Posted from a thread-local destructor: count it the slow way.
            self.lock().retired += 1;
        }
    }

    /// A new counter for the calling thread.
    #[cold]
    fn register(&self) -> Counter {
        let c = Counter::default();
        let mut counters = self.lock();
        counters.fold();
        counters.live.push(c.clone());
        c
    }

    /// Every post counted so far. Exact for every post that happened before
    /// the call (in the same thread, or before a join or any other
    /// synchronisation with the posting thread).
    pub(crate) fn total(&self) -> u64 {
        let counters = self.lock();
        let live: u64 = counters.live.iter().map(|c| c.load(Relaxed)).sum();
        counters.retired + live
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counters the port holds now (tests: they stay bounded).
    #[cfg(test)]
    pub(crate) fn live(&self) -> usize {
        self.lock().live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_thread_counts_every_post() {
        let p = PostCount::new();
        for _ in 0..1000 {
            p.add_one();
        }
        assert_eq!(p.total(), 1000);
        assert_eq!(p.live(), 1);
    }

    #[test]
    fn posts_from_several_threads_add_up_after_they_exit() {
        let each: u64 = if cfg!(miri) { 200 } else { 10_000 };
        let p = Arc::new(PostCount::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || (0..each).for_each(|_| p.add_one()))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(p.total(), 4 * each);
        // The exited threads' counters are folded at the next registration.
        std::thread::scope(|s| {
            s.spawn(|| p.add_one());
        });
        assert_eq!(p.total(), 4 * each + 1);
        assert!(p.live() <= 1, "{} counters kept", p.live());
    }

    /// A thread that posts to more ports in turn than it remembers registers
    /// again as it comes back; the counts stay exact and each port keeps at
    /// most one counter per thread.
    #[test]
    fn a_thread_posting_to_many_ports_in_turn_keeps_them_exact_and_bounded() {
        let ports: Vec<PostCount> = (0..REMEMBERED + 2).map(|_| PostCount::new()).collect();
        let rounds = if cfg!(miri) { 5 } else { 50 };
        for round in 1..=rounds {
            for p in &ports {
                p.add_one();
                assert_eq!(p.total(), round);
                assert!(p.live() <= 1, "{} counters kept", p.live());
            }
        }
        // Another thread's posts land beside this one's.
        std::thread::scope(|s| {
            s.spawn(|| ports[0].add_one());
        });
        assert_eq!(ports[0].total(), rounds + 1);
    }
}
