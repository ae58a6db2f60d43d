//! Housekeeping: the thread that advances the coarse clock and posts a tick
//! every [`TICK_EVERY`], and what a worker does with the tick (re-arm
//! accepts after a back-off, close idle connections).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::conn::Why;
use super::{millis, signal, Shared, TICK, TICK_EVERY};

impl Shared {
    /// A worker dequeued a tick: re-arm accepts (unless backing off) and, when
    /// one is due, scan for idle connections.
    pub(super) fn tick(&self) {
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        if let Some(a) = &self.acceptor {
            a.top_up(self);
        }
        if let Some(idle) = self.cfg.idle_timeout {
            if self.idle_scan_due(idle) {
                self.close_idle(idle);
            }
        }
    }

    /// True at most once per scan interval (a quarter of the timeout, 50 ms
    /// to 1 s), for one worker.
    fn idle_scan_due(&self, idle: Duration) -> bool {
        let every = millis(idle / 4).clamp(50, 1000);
        let now = self.clock.now();
        let last = self.last_idle_scan.load(Ordering::Relaxed);
        now.saturating_sub(last) >= every
            && self
                .last_idle_scan
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Closes every connection silent for `idle`. The coarse clock a touch
    /// read may be up to one tick older than the touch, so the limit has one
    /// tick added and a connection is not closed early (see
    /// [`Config::idle_timeout`](super::Config::idle_timeout)).
    fn close_idle(&self, idle: Duration) {
        let now = self.clock.now();
        let limit = millis(idle).saturating_add(millis(TICK_EVERY));
        self.conns.each(|slot| {
            if slot.as_ref().is_some_and(|c| c.idle_for(now) >= limit) {
                self.close(slot, Why::Idle);
            }
        });
    }
}

/// The housekeeping thread: every tick, advance the coarse clock and post a
/// tick packet to every port; print the counters line when due.
pub(super) fn run(shards: &[Arc<Shared>], stop: &AtomicBool) {
    let cfg = &shards[0].cfg;
    let mut next_stats = cfg.stats_interval.map(|d| Instant::now() + d);
    while !stop.load(Ordering::SeqCst) {
        thread::sleep(TICK_EVERY);
        shards[0].clock.advance();
        for s in shards {
            if !s.stopping.load(Ordering::SeqCst) {
                let _ = signal(&s.port, TICK);
            }
        }
        if let (Some(due), Some(every)) = (next_stats, cfg.stats_interval) {
            if Instant::now() >= due {
                println!("{}", shards[0].counters.snapshot().one_line());
                next_stats = Some(due + every);
            }
        }
    }
}
