//! The right to reap from the kernel: a mutex held by the one thread that
//! sleeps there (the poller), which other threads only `try_lock`.
//!
//! A thread the port named poller may find the lock still held by the previous
//! poller, which was woken (its wake-up is how the port hands it packets) but
//! has not left yet; or a newer poller may take the lock first and sleep, after
//! consuming that wake-up. A thread blocked inside `Mutex::lock` could then
//! wait for the whole of the other's sleep even though the port served it
//! meanwhile. So a thread that wants to sleep does not block on the mutex: it
//! parks, is unparked each time the lock is released, and gives up as soon as
//! the port says it is no longer the poller.

use std::sync::{Mutex, MutexGuard, TryLockError};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::waiters::lock;

/// A mutex whose waiters can give up while they wait.
#[derive(Debug)]
pub(crate) struct PollerLock<T> {
    inner: Mutex<T>,
    /// Threads parked until the lock is released.
    contenders: Mutex<Vec<Thread>>,
}

/// Holds a [`PollerLock`]; releasing it unparks the threads waiting for it.
#[derive(Debug)]
pub(crate) struct PollerGuard<'a, T> {
    guard: Option<MutexGuard<'a, T>>,
    lock: &'a PollerLock<T>,
}

impl<T> PollerLock<T> {
    pub(crate) fn new(value: T) -> PollerLock<T> {
        PollerLock {
            inner: Mutex::new(value),
            contenders: Mutex::new(Vec::new()),
        }
    }

    /// The lock if it is free now.
    pub(crate) fn try_lock(&self) -> Option<PollerGuard<'_, T>> {
        let guard = match self.inner.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        Some(PollerGuard {
            guard: Some(guard),
            lock: self,
        })
    }

    /// Waits for the lock while `still()` holds and `timeout` has not passed;
    /// `None` once either fails. `still` must not park the thread (a channel
    /// receive would): it would swallow the unpark that a release sends.
    pub(crate) fn lock_while(
        &self,
        still: &dyn Fn() -> bool,
        timeout: Option<Duration>,
    ) -> Option<PollerGuard<'_, T>> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            if let Some(g) = self.try_lock() {
                return Some(g);
            }
            lock(&self.contenders).push(std::thread::current());
            // Registered first, then tried and asked: a release after this
            // point unparks this thread, and so does a change of its status
            // (the port then wakes the holder out of the kernel, which
            // releases the lock). Asking before registering would lose a
            // change that lands in between.
            if let Some(g) = self.try_lock() {
                return Some(g);
            }
            if !still() {
                return None;
            }
            match deadline {
                None => std::thread::park(),
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => std::thread::park_timeout(left),
                    _ => return None,
                },
            }
        }
    }
}

impl<T> std::ops::Deref for PollerGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.guard.as_ref().expect("held until drop")
    }
}

impl<T> std::ops::DerefMut for PollerGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_mut().expect("held until drop")
    }
}

impl<T> Drop for PollerGuard<'_, T> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let waiting = std::mem::take(&mut *lock(&self.lock.contenders));
        for t in waiting {
            t.unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_waiter_gives_up_when_no_longer_wanted() {
        let lock = Arc::new(PollerLock::new(0u32));
        let held = lock.try_lock().unwrap();
        let wanted = Arc::new(AtomicBool::new(true));
        let t = {
            let (lock, wanted) = (lock.clone(), wanted.clone());
            std::thread::spawn(move || {
                let still = || wanted.load(Ordering::SeqCst);
                lock.lock_while(&still, None).is_some()
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        wanted.store(false, Ordering::SeqCst);
        // The port wakes a waiter whose status changed. The lock stays held
        // throughout: were it released, the waiter could rightly take it
        // first, which made this test race.
        t.thread().unpark();
        assert!(!t.join().unwrap());
        drop(held);
    }

    /// The waiter's status changes, and the holder releases and retakes the
    /// lock, right while the waiter asks whether it is still wanted: it must
    /// not park past that release (it did when it asked before registering).
    #[test]
    fn a_change_while_asking_is_not_lost() {
        use std::sync::mpsc;
        let lock = Arc::new(PollerLock::new(()));
        // Set by the holder once it has left and come back.
        let relocked = Arc::new(AtomicBool::new(false));
        let (to_holder, holder_rx) = mpsc::channel::<()>();
        let (held_tx, held_rx) = mpsc::channel();
        let holder = {
            let (lock, relocked) = (lock.clone(), relocked.clone());
            std::thread::spawn(move || {
                let mut g = lock.try_lock().unwrap();
                held_tx.send(()).unwrap();
                // Asked to: leave and come straight back (a new poller).
                if holder_rx.recv().is_ok() {
                    drop(g);
                    g = lock.try_lock().unwrap();
                    relocked.store(true, Ordering::SeqCst);
                }
                let _ = holder_rx.recv(); // hold until the test ends
                drop(g);
            })
        };
        held_rx.recv().unwrap();
        let (done_tx, done_rx) = mpsc::channel();
        let waiter = {
            let lock = lock.clone();
            std::thread::spawn(move || {
                let wanted = AtomicBool::new(true);
                let asked = AtomicBool::new(false);
                let still = || {
                    if !asked.swap(true, Ordering::SeqCst) {
                        // The first question: the status changes and the
                        // holder leaves and returns before the answer. (A
                        // spin, not a channel: a channel's own parking would
                        // swallow the unpark under test.)
                        wanted.store(false, Ordering::SeqCst);
                        to_holder.send(()).unwrap();
                        while !relocked.load(Ordering::SeqCst) {
                            std::hint::spin_loop();
                        }
                        return true;
                    }
                    wanted.load(Ordering::SeqCst)
                };
                let got = lock.lock_while(&still, None).is_some();
                done_tx.send(got).unwrap();
                to_holder
            })
        };
        let got = done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the waiter must not sleep through the release");
        assert!(!got);
        drop(waiter.join().unwrap());
        holder.join().unwrap();
    }

    #[test]
    fn a_waiter_gets_the_lock_when_released() {
        let lock = Arc::new(PollerLock::new(7u32));
        let held = lock.try_lock().unwrap();
        let t = {
            let lock = lock.clone();
            std::thread::spawn(move || lock.lock_while(&|| true, None).map(|g| *g))
        };
        std::thread::sleep(Duration::from_millis(20));
        drop(held);
        assert_eq!(t.join().unwrap(), Some(7));
    }

    #[test]
    fn a_waiter_times_out() {
        let lock = PollerLock::new(());
        let _held = lock.try_lock().unwrap();
        let start = Instant::now();
        assert!(lock
            .lock_while(&|| true, Some(Duration::from_millis(30)))
            .is_none());
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}
