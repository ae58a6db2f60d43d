//! The epoll driver: the same contract as io_uring (see `driver.rs`), built on
//! readiness. An operation is tried when its descriptor is ready and finished
//! by the thread that tried it; its result goes through the port's queue like
//! any completion.
//!
//! - Sockets are registered once, at association, edge-triggered for both
//!   directions, and made non-blocking. Each keeps one FIFO queue of
//!   operations per direction ([`Source`]); only the head of a ready direction
//!   is tried, and `EAGAIN` puts it back to waiting for the next edge.
//! - Who tries an operation: the thread that starts it when the port asks for
//!   it now (`now`), else the next flush (`submit`, or any reap, which the
//!   starting thread does on its next dequeue); once it waited for readiness,
//!   the thread that reaps the event. No helper thread on the socket path.
//! - Files, which epoll cannot wait on, are read and written with
//!   `pread`/`pwrite` by the same flush, in the thread that flushes.
//! - One thread at a time waits in `epoll_wait` (the poller, holding the
//!   `poller` lock, a [`PollerLock`]); others only `try_lock` it. `wake` rings
//!   an eventfd that is registered level-triggered, so a wake-up given before
//!   the poller sleeps still ends that sleep: none is lost.
//! - Cancelling removes an operation still waiting in its queue (it completes
//!   with `ECANCELED`); one being tried finishes first, under the same lock. A
//!   connect removed this way may still complete in the kernel: as with
//!   `CancelIoEx` on `ConnectEx`, the socket should then be closed.
//! - Results found by a thread other than the poller (an operation tried at
//!   start, a flush) wait in `done` for the next reap; if the poller sleeps,
//!   it is woken to take them.

mod io;
mod source;
mod sys;

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use slab::Slab;

use self::io::{Attempt, Io};
pub(crate) use self::source::Source;
use super::driver::Wait;
use super::handle::Handle;
use super::op::Op;
use super::poller::PollerLock;
use super::waiters::lock;
use crate::pool::BufPool;

/// `epoll_event.u64` of the wake-up eventfd. Source keys never have the top
/// bit set (31-bit generations), so they cannot collide with it.
const WAKE: u64 = u64::MAX;
const GEN_MASK: u32 = 0x7fff_ffff;
/// Most events taken by one `epoll_wait`.
const MAX_EVENTS: usize = 1024;

/// Registered descriptors, by slab index; the generation in each key keeps a
/// late event for a closed descriptor from reaching a later one.
#[derive(Debug, Default)]
struct Sources {
    slab: Slab<Arc<Source>>,
    next_gen: u32,
}

impl Sources {
    fn get(&self, key: u64) -> Option<&Arc<Source>> {
        let index = (key & 0xffff_ffff) as usize;
        self.slab.get(index).filter(|s| s.key == key)
    }
}

/// A port's epoll instance and the operations it holds.
pub(crate) struct Epoll {
    epfd: OwnedFd,
    waker: OwnedFd,
    sources: Mutex<Sources>,
    /// Held by the one thread that waits in `epoll_wait`; its event buffer.
    poller: PollerLock<Vec<libc::epoll_event>>,
    /// Sources with a ready head, to try at the next flush.
    pending: Mutex<Vec<Arc<Source>>>,
    /// File operations to run at the next flush.
    files: Mutex<VecDeque<Io>>,
    /// Results found outside a reap, for the next one.
    done: Mutex<Vec<(u64, i32)>>,
    /// The eventfd was signalled and no reap has drained it yet.
    wake_pending: AtomicBool,
    /// The poller is in (or about to enter) a sleeping `epoll_wait`.
    sleeping: AtomicBool,
    max_events: usize,
    /// The port's receive buffers: a pooled receive takes one per attempt.
    pool: Arc<BufPool>,
}

impl std::fmt::Debug for Epoll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epoll")
            .field("epfd", &self.epfd)
            .field("sources", &lock(&self.sources).slab.len())
            .field("wake_pending", &self.wake_pending)
            .finish_non_exhaustive()
    }
}

impl Epoll {
    /// A new epoll instance taking at most `events` events per wait.
    pub(crate) fn new(events: usize, pool: Arc<BufPool>) -> std::io::Result<Epoll> {
        let epfd = sys::epoll_create()?;
        let waker = sys::eventfd()?;
        let level_in = libc::EPOLLIN as u32;
        sys::epoll_ctl(
            epfd.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            waker.as_raw_fd(),
            level_in,
            WAKE,
        )?;
        let empty = libc::epoll_event { events: 0, u64: 0 };
        Ok(Epoll {
            epfd,
            waker,
            sources: Mutex::default(),
            poller: PollerLock::new(vec![empty; events.clamp(1, MAX_EVENTS)]),
            pending: Mutex::default(),
            files: Mutex::default(),
            done: Mutex::default(),
            wake_pending: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            max_events: events.clamp(1, MAX_EVENTS),
            pool,
        })
    }

    /// What the driver runs with, for the backend reason.
    pub(crate) fn describe(&self) -> String {
        let events = self.max_events;
        format!("edge-triggered, {events} events per wait")
    }

    /// Makes `fd` non-blocking and registers it for both directions. Undone
    /// by [`deregister`](Self::deregister) before the descriptor is closed.
    pub(crate) fn register(&self, fd: RawFd) -> std::io::Result<Arc<Source>> {
        sys::set_nonblocking(fd)?;
        let stream = sys::is_stream(fd)?;
        let src = {
            let mut s = lock(&self.sources);
            s.next_gen = (s.next_gen + 1) & GEN_MASK;
            let gen = u64::from(s.next_gen);
            let entry = s.slab.vacant_entry();
            let src = Arc::new(Source::new(fd, (gen << 32) | entry.key() as u64, stream));
            entry.insert(src.clone());
            src
        };
        let events = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        let add = libc::EPOLL_CTL_ADD;
        if let Err(e) = sys::epoll_ctl(self.epfd.as_raw_fd(), add, fd, events, src.key) {
            self.forget(&src);
            return Err(e);
        }
        Ok(src)
    }

    /// Removes a registration made by [`register`](Self::register); called
    /// while the descriptor is still open, with no operation left on it.
    pub(crate) fn deregister(&self, src: &Source) {
        let del = libc::EPOLL_CTL_DEL;
        // It may be gone already (a dup closed elsewhere): nothing to undo then.
        let _ = sys::epoll_ctl(self.epfd.as_raw_fd(), del, src.fd, 0, 0);
        self.forget(src);
    }

    fn forget(&self, src: &Source) {
        let mut s = lock(&self.sources);
        let index = (src.key & 0xffff_ffff) as usize;
        if s.get(src.key).is_some() {
            s.slab.remove(index);
        }
    }

    /// Begins `op`: queues it and, if its direction is ready, tries it now or
    /// at the next flush.
    ///
    /// # Safety
    ///
    /// `op` must stay at its address, and must not be dropped, until `reap`
    /// reports `token` (or this driver is dropped after a drain).
    pub(crate) unsafe fn start(&self, op: &mut Op, token: u64, now: bool) -> std::io::Result<()> {
        let io = Io::prepare(op, token, &self.pool);
        let Some(dir) = io.dir() else {
            lock(&self.files).push_back(io);
            if now {
                self.submit();
            }
            return Ok(());
        };
        let Some(src) = op.handle.readiness() else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "socket is not registered with this port's epoll instance",
            ));
        };
        let mut q = src.lock();
        let first = q.push(io, dir);
        if now && q.runnable() {
            let mut out = Vec::new();
            // SAFETY: every queued `Io` names an `Op` still in the port's slab:
            // tokens are reported only after their `Io` left the queue.
            unsafe { q.run(&mut out) };
            drop(q);
            self.deliver(out);
        } else if first && !q.scheduled {
            q.scheduled = true;
            drop(q);
            lock(&self.pending).push(src.clone());
        }
        Ok(())
    }

    /// Cancels the operation `token` on `handle` if it is still waiting: true
    /// when it was removed without transferring anything (the caller completes
    /// it as cancelled). An operation being tried right now finishes first
    /// (the source lock orders the two); a send that moved some bytes
    /// completes with that count.
    pub(crate) fn cancel(&self, token: u64, handle: &Handle) -> bool {
        if let Some(src) = handle.readiness() {
            let removed = src.lock().remove(token);
            if let Some(io) = removed {
                return match io.cancel_result() {
                    None => true,
                    Some(sent) => {
                        self.deliver(vec![(token, sent)]);
                        false
                    }
                };
            }
        }
        let mut files = lock(&self.files);
        match files.iter().position(|io| io.token == token) {
            Some(i) => {
                files.remove(i);
                true
            }
            None => false,
        }
    }

    /// Tries what is scheduled now, in the calling thread.
    pub(crate) fn submit(&self) {
        let mut out = Vec::new();
        self.flush(&mut out);
        self.deliver(out);
    }

    /// Reports finished operations as `(token, result)`; with `Wait::For`,
    /// sleeps in `epoll_wait` (once) if nothing was found and `still()` holds.
    pub(crate) fn reap(&self, wait: Wait<'_>, out: &mut Vec<(u64, i32)>) -> std::io::Result<()> {
        let before = out.len();
        self.flush(out);
        self.take_done(out);
        let (mut events, timeout) = match wait {
            Wait::No => match self.poller.try_lock() {
                Some(g) => (g, Some(Duration::ZERO)),
                None => return Ok(()),
            },
            Wait::For(..) if out.len() > before => return Ok(()),
            Wait::For(t, still) => match self.poller.lock_while(still, t) {
                // Checked again with the lock held: the port may have served
                // this thread while it waited.
                Some(g) if still() => (g, t),
                _ => return Ok(()),
            },
        };
        if timeout == Some(Duration::ZERO) {
            return self.poll(&mut events, timeout, out);
        }
        // Paired with `deliver`: either it sees `sleeping` and wakes us, or we
        // see its results here and do not sleep.
        self.sleeping.store(true, SeqCst);
        let r = if self.idle() {
            self.poll(&mut events, timeout, out)
        } else {
            Ok(())
        };
        self.sleeping.store(false, SeqCst);
        drop(events);
        self.flush(out);
        self.take_done(out);
        r
    }

    /// Makes a sleeping `reap` return, from any thread; never lost: the
    /// eventfd stays readable until a reap drains it.
    pub(crate) fn wake(&self) {
        if self.wake_pending.swap(true, SeqCst) {
            return;
        }
        if let Err(e) = sys::eventfd_signal(self.waker.as_raw_fd()) {
            self.wake_pending.store(false, SeqCst);
            log::error!("ringport: waking the epoll poller failed: {e}");
        }
    }

    /// Runs the scheduled sources and the file operations into `out`.
    fn flush(&self, out: &mut Vec<(u64, i32)>) {
        let sources = std::mem::take(&mut *lock(&self.pending));
        for src in sources {
            let mut q = src.lock();
            q.scheduled = false;
            // SAFETY: as in `start`: queued `Io`s name live `Op`s.
            unsafe { q.run(out) };
        }
        let files = std::mem::take(&mut *lock(&self.files));
        for mut io in files {
            // SAFETY: the `Io` left the list (so no cancel can report it) and
            // its token is reported right here, after the call.
            let res = match unsafe { io.attempt() } {
                Attempt::Done(res) => res,
                Attempt::Again => -libc::EAGAIN,
            };
            out.push((io.token, res));
        }
    }

    /// Results found outside a reap go to `done`; a sleeping poller is woken
    /// to report them.
    fn deliver(&self, results: Vec<(u64, i32)>) {
        if results.is_empty() {
            return;
        }
        lock(&self.done).extend(results);
        if self.sleeping.load(SeqCst) {
            self.wake();
        }
    }

    fn take_done(&self, out: &mut Vec<(u64, i32)>) {
        out.append(&mut lock(&self.done));
    }

    /// Nothing waits to be flushed or reported.
    fn idle(&self) -> bool {
        lock(&self.done).is_empty()
            && lock(&self.pending).is_empty()
            && lock(&self.files).is_empty()
    }

    /// One `epoll_wait`, then the ready sources' heads are tried.
    fn poll(
        &self,
        events: &mut [libc::epoll_event],
        timeout: Option<Duration>,
        out: &mut Vec<(u64, i32)>,
    ) -> std::io::Result<()> {
        let n = sys::epoll_wait(self.epfd.as_raw_fd(), events, timeout)?;
        let mut woken = false;
        let mut ready = Vec::with_capacity(n);
        {
            let sources = lock(&self.sources);
            for ev in &events[..n] {
                let (key, flags) = (ev.u64, ev.events);
                if key == WAKE {
                    woken = true;
                } else if let Some(src) = sources.get(key) {
                    ready.push((src.clone(), flags));
                }
            }
        }
        if woken {
            // Drain first, then allow the next signal: a wake that comes in
            // between finds the flag still set, and this reap, which is
            // returning anyway, stands for it.
            sys::eventfd_drain(self.waker.as_raw_fd());
            self.wake_pending.store(false, SeqCst);
        }
        for (src, flags) in ready {
            let mut q = src.lock();
            q.on_event(flags);
            // SAFETY: as in `start`: queued `Io`s name live `Op`s.
            unsafe { q.run(out) };
        }
        Ok(())
    }
}
