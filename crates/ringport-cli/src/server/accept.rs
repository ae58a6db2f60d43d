//! Accepts kept in flight on the listener, with a back-off when they fail
//! (out of descriptors, say) so the loop neither spins nor stops.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ringport::{Completion, Handle};

use super::{lock, Counters, Shared};

/// Accepts in flight when all is well.
const ACCEPTS: usize = 16;
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(200);

struct Backoff {
    /// No accept is started before this.
    until: Instant,
    /// The next delay; reset to the first after a success.
    delay: Duration,
    /// After a failure only one accept probes until one succeeds.
    failing: bool,
}

pub(crate) struct Acceptor {
    listener: Handle,
    pending: AtomicUsize,
    backoff: Mutex<Backoff>,
}

impl Acceptor {
    pub(crate) fn new(listener: Handle) -> Acceptor {
        Acceptor {
            listener,
            pending: AtomicUsize::new(0),
            backoff: Mutex::new(Backoff {
                until: Instant::now(),
                delay: FIRST_BACKOFF,
                failing: false,
            }),
        }
    }

    /// Stops accepting: accepts in flight complete as aborted.
    pub(crate) fn close(&self) {
        self.listener.close();
    }

    /// Starts accepts until the target is in flight, unless backing off.
    pub(crate) fn top_up(&self, s: &Shared) {
        let target = {
            let b = lock(&self.backoff);
            if Instant::now() < b.until {
                return;
            }
            if b.failing {
                1
            } else {
                ACCEPTS
            }
        };
        while !s.stopping.load(Ordering::SeqCst) && self.pending.load(Ordering::SeqCst) < target {
            self.pending.fetch_add(1, Ordering::SeqCst);
            if !s.started(&s.port.accept(&self.listener, 0)) {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        }
    }

    pub(crate) fn completed(&self, s: &Shared, c: &mut Completion) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
        let aborted = c.is_aborted();
        match (c.take_result(), c.take_accepted()) {
            (Ok(_), Some((stream, _peer))) => {
                {
                    let mut b = lock(&self.backoff);
                    b.failing = false;
                    b.delay = FIRST_BACKOFF;
                }
                self.top_up(s);
                s.deal(stream);
            }
            _ if aborted || s.stopping.load(Ordering::SeqCst) => {}
            _ => {
                // EMFILE, ENFILE, ENOBUFS, ECONNABORTED...: count it and wait a
                // little before trying again; the tick re-arms the accept.
                Counters::inc(&s.counters.accept_errors);
                let mut b = lock(&self.backoff);
                b.failing = true;
                b.until = Instant::now() + b.delay;
                b.delay = (b.delay * 2).min(MAX_BACKOFF);
            }
        }
    }
}
