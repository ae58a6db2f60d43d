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
        let stream = self.stream;
        for dir in [Dir::Read, Dir::Write] {
            let (q, ready) = self.dir(dir);
            while *ready {
                let Some(io) = q.front_mut() else { break };
                // SAFETY: forwarded from this function's contract.
                match unsafe { io.attempt() } {
                    Attempt::Done(res) => {
                        // Saves the call that would only say EAGAIN.
                        *ready = !(stream && io.drained(res));
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
