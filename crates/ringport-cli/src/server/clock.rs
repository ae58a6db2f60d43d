//! A coarse millisecond clock for idle bookkeeping: the housekeeper reads the
//! real clock once per tick and stores it here, so a worker marking a
//! connection active pays one relaxed load instead of a `clock_gettime`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Milliseconds since the server started, as of the housekeeper's last tick.
///
/// It never runs ahead of the real time and never goes back; it lags by at
/// most one tick, plus however late the housekeeper thread wakes.
#[repr(align(64))] // read on every message, written once a tick: keep it off the counters' lines
pub(crate) struct CoarseClock {
    epoch: Instant,
    ms: AtomicU64,
}

impl CoarseClock {
    pub(crate) fn new() -> CoarseClock {
        CoarseClock {
            epoch: Instant::now(),
            ms: AtomicU64::new(0),
        }
    }

    /// The time as of the last [`advance`](Self::advance).
    pub(crate) fn now(&self) -> u64 {
        self.ms.load(Relaxed)
    }

    /// Reads the real clock and publishes it (the housekeeper, once per tick;
    /// `Instant` is monotonic, so the stored value never decreases).
    pub(crate) fn advance(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.ms.store(ms, Relaxed);
    }
}
