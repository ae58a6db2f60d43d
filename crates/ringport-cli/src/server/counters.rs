//! The server's counters: what the hostile-client tests assert on, printed as
//! `key=value` lines on shutdown and as one line every `--stats-interval`.

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The counters bumped for every operation, kept by each thread in plain
/// integers and added to the shared ones in one go ([`Counters::flush`]): a
/// worker flushes after each batch and when it exits, so the shared totals lag
/// by at most a batch and are exact once the workers are gone. A locked add per
/// operation was about 8% of the server's user time (perf, 50 x 64 B).
#[derive(Clone, Copy, Default)]
struct Tally {
    submitted: u64,
    completed: u64,
    echoed: u64,
}

thread_local! {
    static TALLY: Cell<Tally> = const {
        Cell::new(Tally {
            submitted: 0,
            completed: 0,
            echoed: 0,
        })
    };
}

/// Live counters, shared by every worker.
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) accepted: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) closed_by_peer: AtomicU64,
    pub(crate) reset: AtomicU64,
    pub(crate) io_errors: AtomicU64,
    pub(crate) idle_timed_out: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) closed_at_shutdown: AtomicU64,
    pub(crate) paused: AtomicU64,
    pub(crate) resumed: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) ops_submitted: AtomicU64,
    pub(crate) ops_completed: AtomicU64,
    pub(crate) ops_cancelled: AtomicU64,
    pub(crate) bytes_echoed: AtomicU64,
    pub(crate) peak_conn_buffered: AtomicU64,
    pub(crate) workers_exited: AtomicU64,
    pub(crate) shutdown_forced: AtomicU64,
}

impl Counters {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    /// Adds to this thread's tally; straight to `shared` if the thread is
    /// past its thread-locals (exiting).
    fn tally(shared: &AtomicU64, n: u64, f: impl FnOnce(&mut Tally)) {
        let counted = TALLY.try_with(|t| {
            let mut v = t.get();
            f(&mut v);
            t.set(v);
        });
        if counted.is_err() {
            Self::add(shared, n);
        }
    }

    /// An accepted connection closed at shutdown before any port opened it
    /// (dealt to a port whose worker had left).
    pub(crate) fn closed_unopened(&self) {
        Self::inc(&self.closed_at_shutdown);
        Self::inc(&self.closed);
    }

    /// An operation the port accepted (`ops_submitted`), tallied.
    pub(crate) fn submitted(&self) {
        Self::tally(&self.ops_submitted, 1, |t| t.submitted += 1);
    }

    /// A completion dequeued (`ops_completed`), tallied.
    pub(crate) fn completed(&self) {
        Self::tally(&self.ops_completed, 1, |t| t.completed += 1);
    }

    /// Bytes sent back (`bytes_echoed`), tallied.
    pub(crate) fn echoed(&self, n: u64) {
        Self::tally(&self.bytes_echoed, n, |t| t.echoed += n);
    }

    /// Adds this thread's tally to the shared counters and clears it.
    pub(crate) fn flush(&self) {
        let Ok(t) = TALLY.try_with(Cell::take) else {
            return;
        };
        for (c, n) in [
            (&self.ops_submitted, t.submitted),
            (&self.ops_completed, t.completed),
            (&self.bytes_echoed, t.echoed),
        ] {
            if n > 0 {
                Self::add(c, n);
            }
        }
    }

    /// A consistent-enough copy of every counter.
    pub fn snapshot(&self) -> Snapshot {
        let g = |c: &AtomicU64| c.load(Relaxed);
        let accepted = g(&self.accepted);
        let closed = g(&self.closed);
        Snapshot {
            accepted,
            closed,
            active: accepted.saturating_sub(closed),
            closed_by_peer: g(&self.closed_by_peer),
            reset: g(&self.reset),
            io_errors: g(&self.io_errors),
            idle_timed_out: g(&self.idle_timed_out),
            rejected: g(&self.rejected),
            closed_at_shutdown: g(&self.closed_at_shutdown),
            paused: g(&self.paused),
            resumed: g(&self.resumed),
            accept_errors: g(&self.accept_errors),
            ops_submitted: g(&self.ops_submitted),
            ops_completed: g(&self.ops_completed),
            ops_cancelled: g(&self.ops_cancelled),
            bytes_echoed: g(&self.bytes_echoed),
            peak_conn_buffered: g(&self.peak_conn_buffered),
            workers_exited: g(&self.workers_exited),
            shutdown_forced: g(&self.shutdown_forced),
        }
    }

    /// Raises the per-connection high-water mark of buffered bytes.
    ///
    /// Called on every receive: a plain load first, so the usual case (no new
    /// high) does not write the shared line.
    pub(crate) fn peak(&self, buffered: usize) {
        let buffered = buffered as u64;
        if buffered > self.peak_conn_buffered.load(Relaxed) {
            self.peak_conn_buffered.fetch_max(buffered, Relaxed);
        }
    }
}

/// A copy of the counters at one moment.
///
/// `closed` counts every connection closed for any reason; `closed_by_peer`,
/// `reset`, `io_errors`, `idle_timed_out`, `rejected` and `closed_at_shutdown`
/// say why. After a clean shutdown `accepted == closed` and
/// `ops_submitted == ops_completed`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub accepted: u64,
    pub closed: u64,
    pub active: u64,
    pub closed_by_peer: u64,
    pub reset: u64,
    pub io_errors: u64,
    pub idle_timed_out: u64,
    pub rejected: u64,
    pub closed_at_shutdown: u64,
    pub paused: u64,
    pub resumed: u64,
    pub accept_errors: u64,
    pub ops_submitted: u64,
    pub ops_completed: u64,
    pub ops_cancelled: u64,
    pub bytes_echoed: u64,
    pub peak_conn_buffered: u64,
    pub workers_exited: u64,
    /// 1 when workers did not take their shutdown packets in time and the
    /// port was closed under them.
    pub shutdown_forced: u64,
}

impl Snapshot {
    /// Every counter as `(name, value)`, in a stable order.
    pub fn fields(&self) -> [(&'static str, u64); 19] {
        [
            ("accepted", self.accepted),
            ("closed", self.closed),
            ("active", self.active),
            ("closed_by_peer", self.closed_by_peer),
            ("reset", self.reset),
            ("io_errors", self.io_errors),
            ("idle_timed_out", self.idle_timed_out),
            ("rejected", self.rejected),
            ("closed_at_shutdown", self.closed_at_shutdown),
            ("paused", self.paused),
            ("resumed", self.resumed),
            ("accept_errors", self.accept_errors),
            ("ops_submitted", self.ops_submitted),
            ("ops_completed", self.ops_completed),
            ("ops_cancelled", self.ops_cancelled),
            ("bytes_echoed", self.bytes_echoed),
            ("peak_conn_buffered", self.peak_conn_buffered),
            ("workers_exited", self.workers_exited),
            ("shutdown_forced", self.shutdown_forced),
        ]
    }

    /// One `key=value` per line, for scripts and tests.
    pub fn lines(&self) -> String {
        let mut s = String::new();
        for (k, v) in self.fields() {
            let _ = writeln!(s, "{k}={v}");
        }
        s
    }

    /// The periodic one-line summary.
    pub fn one_line(&self) -> String {
        format!(
            "stats: active={} accepted={} closed={} reset={} idle_timed_out={} paused={} accept_errors={} bytes_echoed={} ops_in_flight={}",
            self.active,
            self.accepted,
            self.closed,
            self.reset,
            self.idle_timed_out,
            self.paused,
            self.accept_errors,
            self.bytes_echoed,
            self.ops_submitted.saturating_sub(self.ops_completed),
        )
    }
}
