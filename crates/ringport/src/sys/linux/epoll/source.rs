//! A registered descriptor: its operations waiting for readiness, one FIFO
//! queue per direction, and what epoll last said about it.
//!
//! The descriptor is registered edge-triggered, so the driver remembers
//! readiness itself: a direction is ready from an event until a call on it
//! returns `EAGAIN`. Every attempt and every change to a queue happens under
//! the source's lock, so an edge that arrives while another thread attempts a
//! call is never lost (the event waits for the lock, then retries).

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard};

use super::io::{Attempt, Dir, Io};
use crate::sys::linux::waiters::lock;

/// One descriptor registered with a port's epoll instance.
#[derive(Debug)]
pub(crate) struct Source {
    pub(super) fd: RawFd,
    /// `epoll_event.u64` of this registration: slab index and generation.
    pub(super) key: u64,
    state: Mutex<Queues>,
}

#[derive(Debug)]
pub(super) struct Queues {
    read: VecDeque<Io>,
    write: VecDeque<Io>,
    readable: bool,
    writable: bool,
    /// A stream socket: a short receive means it is drained.
    stream: bool,
    /// The peer's FIN (or an error) was seen: a short receive then ends just
    /// before it, the next one returns 0, and no further edge will come, so
    /// readability must not be cleared (tokio keeps READ_CLOSED for the same
    /// reason).
    read_closed: bool,
    /// On the driver's list of sources to try at the next flush.
    pub(super) scheduled: bool,
}

impl Source {
    pub(super) fn new(fd: RawFd, key: u64, stream: bool) -> Source {
        Source {
            fd,
            key,
            state: Mutex::new(Queues {
                read: VecDeque::new(),
                write: VecDeque::new(),
                // Unknown until a call says otherwise: try first.
                readable: true,
                writable: true,
                stream,
                read_closed: false,
                scheduled: false,
            }),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Queues> {
        lock(&self.state)
    }
}

impl Queues {
    /// Queues `io` behind the others of its direction; true when it is at the
    /// head of a ready direction and should be tried.
    pub(super) fn push(&mut self, io: Io, dir: Dir) -> bool {
        let (q, ready) = self.dir(dir);
        q.push_back(io);
        q.len() == 1 && *ready
    }

    /// Records an event (`EPOLLIN`, `EPOLLOUT`, errors and hang-ups wake both).
    pub(super) fn on_event(&mut self, events: u32) {
        let err = libc::EPOLLERR | libc::EPOLLHUP;
        let readable = (libc::EPOLLIN | libc::EPOLLRDHUP | err) as u32;
        let writable = (libc::EPOLLOUT | err) as u32;
        self.readable |= events & readable != 0;
        self.read_closed |= events & (libc::EPOLLRDHUP | err) as u32 != 0;
        self.writable |= events & writable != 0;
    }

    /// Runs both directions: each head in turn while the direction is ready;
    /// finished operations go to `out` as `(token, result)`.
    ///
    /// # Safety
    ///
    /// Every queued `Io` names an `Op` still in the port's slab (the driver
    /// reports a token only after removing its `Io` from the queue).
    pub(super) unsafe fn run(&mut self, out: &mut Vec<(u64, i32)>) {
        let short_read_drains = self.stream && !self.read_closed;
        for dir in [Dir::Read, Dir::Write] {
            let (q, ready) = self.dir(dir);
            while *ready {
                let Some(io) = q.front_mut() else { break };
                // SAFETY: forwarded from this function's contract.
                match unsafe { io.attempt() } {
                    Attempt::Done(res) => {
                        // Saves the call that would only say EAGAIN.
                        *ready = !(short_read_drains && io.drained(res));
                        let token = io.token;
                        q.pop_front();
                        out.push((token, res));
                    }
                    Attempt::Again => *ready = false,
                }
            }
        }
    }

    /// Removes the operation with this token, if it is still waiting.
    pub(super) fn remove(&mut self, token: u64) -> Option<Io> {
        for q in [&mut self.read, &mut self.write] {
            if let Some(i) = q.iter().position(|io| io.token == token) {
                return q.remove(i);
            }
        }
        None
    }

    /// True when some queued head could make progress without a new event.
    pub(super) fn runnable(&self) -> bool {
        (self.readable && !self.read.is_empty()) || (self.writable && !self.write.is_empty())
    }

    fn dir(&mut self, dir: Dir) -> (&mut VecDeque<Io>, &mut bool) {
        match dir {
            Dir::Read => (&mut self.read, &mut self.readable),
            Dir::Write => (&mut self.write, &mut self.writable),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::Request;
    use crate::sys::linux::handle::{Handle, Owned};
    use crate::sys::linux::op::Op;
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;

    /// A non-blocking stream pair: (the handle of the side the queues work
    /// on, its peer).
    fn pair() -> (Arc<Handle>, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let owned = Owned::from_io(std::fs::File::from(std::os::fd::OwnedFd::from(a))).unwrap();
        let handle = Arc::new(Handle::new(owned, 0, std::sync::Weak::new()).unwrap());
        (handle, b)
    }

    /// A pool for `Io::prepare`; these tests make no pooled receives.
    fn pool() -> Arc<crate::pool::BufPool> {
        Arc::new(crate::pool::BufPool::new(1, 1))
    }

    fn source(a: &Handle) -> Source {
        Source::new(a.raw_fd(), 1, true)
    }

    // The boxes keep each `Op` at its address while the vector grows.
    #[allow(clippy::vec_box)]
    fn recv(ops: &mut Vec<Box<Op>>, a: &Arc<Handle>, cap: usize, token: u64) -> Io {
        ops.push(Op::new(
            Request::Recv(Vec::with_capacity(cap)),
            token,
            a.clone(),
        ));
        Io::prepare(ops.last_mut().unwrap(), token, &pool())
    }

    #[test]
    fn receives_wait_for_readiness_in_fifo_order() {
        let (a, mut b) = pair();
        let src = source(&a);
        let mut ops = Vec::new();
        let mut q = src.lock();
        assert!(q.push(recv(&mut ops, &a, 4, 10), Dir::Read), "head, ready");
        assert!(!q.push(recv(&mut ops, &a, 4, 11), Dir::Read), "behind");
        let mut out = Vec::new();
        // SAFETY: the ops the queued `Io`s point into live in `ops` until the end.
        unsafe { q.run(&mut out) };
        assert!(out.is_empty(), "nothing to read: EAGAIN, both wait");
        assert!(!q.runnable());
        b.write_all(b"abcdef").unwrap();
        q.on_event(libc::EPOLLIN as u32);
        // SAFETY: as above.
        unsafe { q.run(&mut out) };
        // The first takes a full buffer, the second the short rest, which
        // also says the socket is drained.
        assert_eq!(out, [(10, 4), (11, 2)]);
        assert!(!q.runnable());
        assert!(q.remove(11).is_none(), "finished operations are gone");
    }

    /// The FIN already seen: a short read must not clear readability, or the
    /// receive that would return 0 waits forever for an edge that never comes.
    #[test]
    fn a_short_read_before_the_fin_keeps_readability() {
        let (a, mut b) = pair();
        let src = source(&a);
        let mut ops = Vec::new();
        let mut q = src.lock();
        b.write_all(b"abc").unwrap();
        b.shutdown(std::net::Shutdown::Write).unwrap();
        q.on_event((libc::EPOLLIN | libc::EPOLLRDHUP) as u32);
        q.push(recv(&mut ops, &a, 8, 50), Dir::Read);
        q.push(recv(&mut ops, &a, 8, 51), Dir::Read);
        let mut out = Vec::new();
        // SAFETY: the ops live in `ops` until the end of the test.
        unsafe { q.run(&mut out) };
        assert_eq!(out, [(50, 3), (51, 0)]);
    }

    #[test]
    fn cancel_removes_only_waiting_operations() {
        let (a, _b) = pair();
        let src = source(&a);
        let mut ops = Vec::new();
        let mut q = src.lock();
        q.push(recv(&mut ops, &a, 4, 20), Dir::Read);
        q.push(recv(&mut ops, &a, 4, 21), Dir::Read);
        let mut out = Vec::new();
        // SAFETY: the ops live in `ops` until the end of the test.
        unsafe { q.run(&mut out) };
        let io = q.remove(20).expect("still waiting");
        assert_eq!(io.cancel_result(), None, "completes as cancelled");
        assert!(q.remove(20).is_none());
        assert!(q.remove(21).is_some());
    }

    #[test]
    fn sends_complete_whole_or_wait_for_room() {
        let (a, _b) = pair();
        let src = source(&a);
        let mut ops = [Op::new(Request::Send(vec![7; 8 << 20]), 30, a.clone())];
        let mut q = src.lock();
        q.push(Io::prepare(&mut ops[0], 30, &pool()), Dir::Write);
        let mut out = Vec::new();
        // SAFETY: the op lives in `ops` until the end of the test.
        unsafe { q.run(&mut out) };
        assert!(out.is_empty(), "8 MiB does not fit the socket buffer");
        let io = q.remove(30).expect("waiting for room");
        let sent = io.cancel_result().expect("some bytes went");
        assert!(sent > 0 && (sent as usize) < 8 << 20, "{sent}");
    }

    #[test]
    fn events_set_readiness_by_direction() {
        let (a, _b) = pair();
        let src = source(&a);
        let mut ops = Vec::new();
        let mut q = src.lock();
        q.push(recv(&mut ops, &a, 4, 40), Dir::Read);
        let mut out = Vec::new();
        // SAFETY: the ops live in `ops` until the end of the test.
        unsafe { q.run(&mut out) };
        assert!(!q.runnable());
        q.on_event(libc::EPOLLOUT as u32);
        assert!(!q.runnable(), "writability does not wake a receive");
        q.on_event(libc::EPOLLHUP as u32);
        assert!(q.runnable(), "a hang-up wakes both directions");
    }
}
