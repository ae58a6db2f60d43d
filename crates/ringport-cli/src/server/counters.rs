//! The server's counters: what the hostile-client tests assert on, printed as
//! `key=value` lines on shutdown and as one line every `--stats-interval`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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
