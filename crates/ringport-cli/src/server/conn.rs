//! One echo connection: one receive and at most one send in flight, a queue
//! of received bytes waiting to go back, and the pause that bounds it.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use ringport::{Completion, Handle, OpKind};

use super::{lock, Counters, Shared};

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

#[derive(Default)]
struct State {
    recving: bool,
    sending: bool,
    /// Received buffers waiting for the send in flight to finish.
    queue: VecDeque<Vec<u8>>,
    /// Bytes received and not yet sent back (the send in flight included).
    buffered: usize,
    paused: bool,
    /// The peer sent its FIN: close once everything went back.
    eof: bool,
    closed: bool,
}

pub(crate) struct Conn {
    key: u64,
    handle: Handle,
    last_active: AtomicU64,
    state: Mutex<State>,
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
    pub(crate) fn new(key: u64, handle: Handle, s: &Shared) -> Conn {
        Conn {
            key,
            handle,
            last_active: AtomicU64::new(s.millis()),
            state: Mutex::new(State::default()),
        }
    }

    pub(crate) fn idle_for(&self, s: &Shared) -> Duration {
        let last = self.last_active.load(Ordering::Relaxed);
        Duration::from_millis(s.millis().saturating_sub(last))
    }

    fn touch(&self, s: &Shared) {
        self.last_active.store(s.millis(), Ordering::Relaxed);
    }

    /// Starts the first receive.
    pub(crate) fn start(&self, s: &Shared) {
        let mut st = lock(&self.state);
        if !self.recv(s, &mut st) {
            self.close_locked(s, &mut st, Why::Error);
        }
    }

    /// Closes the connection once, counting why; operations in flight complete
    /// as aborted and are counted as they are dequeued.
    pub(crate) fn close(&self, s: &Shared, why: Why) {
        let mut st = lock(&self.state);
        self.close_locked(s, &mut st, why);
    }

    fn close_locked(&self, s: &Shared, st: &mut State, why: Why) {
        if st.closed {
            return;
        }
        st.closed = true;
        st.queue.clear();
        self.handle.close();
        s.forget(self.key);
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
    fn recv(&self, s: &Shared, st: &mut State) -> bool {
        let ok = s.started(&s.port.recv_pooled(&self.handle, 0));
        st.recving = ok;
        ok
    }

    fn send(&self, s: &Shared, st: &mut State, buf: Vec<u8>) -> bool {
        let ok = s.started(&s.port.send(&self.handle, buf, 0));
        st.sending = ok;
        ok
    }

    /// A receive or send of this connection completed.
    pub(crate) fn completed(&self, s: &Shared, mut c: Completion) {
        let mut st = lock(&self.state);
        let result = c.take_result();
        let buf = c.take_buf().unwrap_or_default();
        match c.kind() {
            OpKind::Recv => st.recving = false,
            _ => st.sending = false,
        }
        if st.closed {
            return;
        }
        let why = match (c.kind(), result) {
            (OpKind::Recv, Ok(n)) => self.received(s, &mut st, buf, n),
            (OpKind::Send, Ok(n)) => self.sent(s, &mut st, buf, n),
            (_, Err(e)) if is_reset(&e) => Some(Why::Reset),
            (_, Err(_)) => Some(Why::Error),
            _ => None,
        };
        if let Some(why) = why {
            self.close_locked(s, &mut st, why);
        }
    }

    fn received(&self, s: &Shared, st: &mut State, buf: Vec<u8>, n: usize) -> Option<Why> {
        self.touch(s);
        if n == 0 {
            st.eof = true;
            return self.drained(st);
        }
        st.buffered += n;
        s.counters.peak(st.buffered);
        if st.sending {
            st.queue.push_back(buf);
        } else if !self.send(s, st, buf) {
            return Some(Why::Error);
        }
        if st.buffered >= s.cfg.max_buffered {
            st.paused = true;
            Counters::inc(&s.counters.paused);
        } else if !self.recv(s, st) {
            return Some(Why::Error);
        }
        None
    }

    fn sent(&self, s: &Shared, st: &mut State, mut buf: Vec<u8>, n: usize) -> Option<Why> {
        if n == 0 && !buf.is_empty() {
            return Some(Why::Error);
        }
        self.touch(s);
        st.buffered -= n.min(st.buffered);
        Counters::add(&s.counters.bytes_echoed, n as u64);
        if n < buf.len() {
            buf.drain(..n);
            return (!self.send(s, st, buf)).then_some(Why::Error);
        }
        s.port.recycle(buf);
        if let Some(next) = st.queue.pop_front() {
            if !self.send(s, st, next) {
                return Some(Why::Error);
            }
        }
        if st.paused && st.buffered <= s.cfg.max_buffered / 2 && !st.eof {
            st.paused = false;
            Counters::inc(&s.counters.resumed);
            if !self.recv(s, st) {
                return Some(Why::Error);
            }
        }
        self.drained(st)
    }

    /// After the peer's FIN, the connection closes once nothing is left to send.
    fn drained(&self, st: &State) -> Option<Why> {
        (st.eof && !st.sending && st.queue.is_empty()).then_some(Why::Peer)
    }
}
