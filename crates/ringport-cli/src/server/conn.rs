//! One echo connection: one receive and at most one send in flight, a queue
//! of received bytes waiting to go back, and the pause that bounds it.
//!
//! A `Conn` lives in its slot of the connection table and is only ever used
//! under that slot's lock; it stays there after closing until its last
//! operation has completed ([`Conn::finished`]).

use std::collections::VecDeque;
use std::io;

use ringport::{Completion, Handle, OpKind};

use super::slots::Token;
use super::{Counters, Shared};

/// Why a connection was closed, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Why {
    /// The peer closed its side and everything was echoed.
    Peer,
    /// Connection reset or broken pipe.
    Reset,
    /// Another I/O error.
    Error,
    /// No I/O for `idle_timeout`.
    Idle,
    /// The server is shutting down.
    Shutdown,
}

pub(crate) struct Conn {
    /// The connection's slot: the completion key and every operation's `user`.
    token: Token,
    handle: Handle,
    /// The coarse clock when the last I/O completed (see [`super::clock`]).
    last_active: u64,
    recving: bool,
    sending: bool,
    /// Received buffers waiting for the send in flight to finish; boxed, and
    /// only made when a first buffer has to wait, so an idle connection's
    /// slot stays 64 bytes (its bytes are the budget that counts, DESIGN.md
    /// section 5).
    #[allow(clippy::box_collection)] // 8 bytes in the slot instead of 32
    queue: Option<Box<VecDeque<Vec<u8>>>>,
    /// Bytes received and not yet sent back (the send in flight included).
    buffered: usize,
    paused: bool,
    /// The peer sent its FIN: close once everything went back.
    eof: bool,
    closed: bool,
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

impl Conn {
    /// A connection associated under `token`, active as of `now`.
    pub(crate) fn new(token: Token, handle: Handle, now: u64) -> Conn {
        Conn {
            token,
            handle,
            last_active: now,
            recving: false,
            sending: false,
            queue: None,
            buffered: 0,
            paused: false,
            eof: false,
            closed: false,
        }
    }

    /// Milliseconds of the coarse clock since the last completed I/O.
    pub(crate) fn idle_for(&self, now: u64) -> u64 {
        now.saturating_sub(self.last_active)
    }

    fn touch(&mut self, s: &Shared) {
        self.last_active = s.clock.now();
    }

    /// Closed, with no operation left to complete: its slot can be reused.
    pub(crate) fn finished(&self) -> bool {
        self.closed && !self.recving && !self.sending
    }

    /// Starts the first receive.
    pub(crate) fn start(&mut self, s: &Shared) {
        if !self.closed && !self.recv(s) {
            self.close(s, Why::Error);
        }
    }

    /// Closes the connection once, counting why; operations in flight complete
    /// as aborted and are counted as they are dequeued.
    pub(crate) fn close(&mut self, s: &Shared, why: Why) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.queue = None;
        self.handle.close();
        let c = &s.counters;
        Counters::inc(&c.closed);
        Counters::inc(match why {
            Why::Peer => &c.closed_by_peer,
            Why::Reset => &c.reset,
            Why::Error => &c.io_errors,
            Why::Idle => &c.idle_timed_out,
            Why::Shutdown => &c.closed_at_shutdown,
        });
    }

    /// Starts a pooled receive (the port picks a buffer when data arrives, so
    /// an idle connection holds none); false if the port refused it.
    fn recv(&mut self, s: &Shared) -> bool {
        let ok = s.started(&s.port.recv_pooled(&self.handle, self.token.user()));
        self.recving = ok;
        ok
    }

    fn send(&mut self, s: &Shared, buf: Vec<u8>) -> bool {
        let ok = s.started(&s.port.send(&self.handle, buf, self.token.user()));
        self.sending = ok;
        ok
    }

    /// A receive or send of this connection completed.
    pub(crate) fn completed(&mut self, s: &Shared, c: &mut Completion) {
        let result = c.take_result();
        let buf = c.take_buf().unwrap_or_default();
        match c.kind() {
            OpKind::Recv => self.recving = false,
            _ => self.sending = false,
        }
        if self.closed {
            return;
        }
        let why = match (c.kind(), result) {
            (OpKind::Recv, Ok(n)) => self.received(s, buf, n),
            (OpKind::Send, Ok(n)) => self.sent(s, buf, n),
            (_, Err(e)) if is_reset(&e) => Some(Why::Reset),
            (_, Err(_)) => Some(Why::Error),
            _ => None,
        };
        if let Some(why) = why {
            self.close(s, why);
        }
    }

    fn received(&mut self, s: &Shared, buf: Vec<u8>, n: usize) -> Option<Why> {
        self.touch(s);
        if n == 0 {
            self.eof = true;
            return self.drained();
        }
        self.buffered += n;
        s.counters.peak(self.buffered);
        if self.sending {
            self.queue.get_or_insert_with(Box::default).push_back(buf);
        } else if !self.send(s, buf) {
            return Some(Why::Error);
        }
        if self.buffered >= s.cfg.max_buffered {
            self.paused = true;
            Counters::inc(&s.counters.paused);
        } else if !self.recv(s) {
            return Some(Why::Error);
        }
        None
    }

    fn sent(&mut self, s: &Shared, mut buf: Vec<u8>, n: usize) -> Option<Why> {
        if n == 0 && !buf.is_empty() {
            return Some(Why::Error);
        }
        self.touch(s);
        self.buffered -= n.min(self.buffered);
        s.counters.echoed(n as u64);
        if n < buf.len() {
            buf.drain(..n);
            return (!self.send(s, buf)).then_some(Why::Error);
        }
        s.port.recycle(buf);
        if let Some(next) = self.queue.as_mut().and_then(|q| q.pop_front()) {
            if !self.send(s, next) {
                return Some(Why::Error);
            }
        }
        if self.paused && self.buffered <= s.cfg.max_buffered / 2 && !self.eof {
            self.paused = false;
            Counters::inc(&s.counters.resumed);
            if !self.recv(s) {
                return Some(Why::Error);
            }
        }
        self.drained()
    }

    /// After the peer's FIN, the connection closes once nothing is left to send.
    fn drained(&self) -> Option<Why> {
        let queued = self.queue.as_ref().is_some_and(|q| !q.is_empty());
        (self.eof && !self.sending && !queued).then_some(Why::Peer)
    }
}
