//! The results: medians, ratios against tokio and the ceiling, as markdown and JSON.

use ringport_bench::stats::median;
use serde_json::json;

use crate::measure::{Sample, Scenario};

/// Every run of one server at one scenario and thread count.
#[derive(Debug)]
pub struct Row {
    pub scenario: Scenario,
    pub threads: usize,
    pub server: &'static str,
    pub banner: String,
    /// (run number, what it measured), for the runs that succeeded.
    pub samples: Vec<(usize, Sample)>,
    pub failures: Vec<String>,
}

impl Row {
    /// The median of each field over the runs, taken field by field.
    pub fn median(&self) -> Option<Sample> {
        let m = |f: Metric| median(&self.samples.iter().map(|(_, s)| f(s)).collect::<Vec<_>>());
        Some(Sample {
            msgs_per_sec: m(|s| s.msgs_per_sec)?,
            mb_per_sec: m(|s| s.mb_per_sec)?,
            p50_us: m(|s| s.p50_us)?,
            p99_us: m(|s| s.p99_us)?,
            cpu_us_per_msg: m(|s| s.cpu_us_per_msg)?,
            user_us_per_msg: m(|s| s.user_us_per_msg)?,
            cpu_util: m(|s| s.cpu_util)?,
            uring_enters_per_msg: self.optional(|s| s.uring_enters_per_msg),
            syscalls_per_msg: self.optional(|s| s.syscalls_per_msg),
        })
    }

    /// The median of a figure only some runs have.
    fn optional(&self, f: fn(&Sample) -> Option<f64>) -> Option<f64> {
        let v: Vec<f64> = self.samples.iter().filter_map(|(_, s)| f(s)).collect();
        median(&v)
    }

    fn same_cell(&self, other: &Row) -> bool {
        self.threads == other.threads
            && self.scenario.connections == other.scenario.connections
            && self.scenario.size == other.scenario.size
    }
}

/// Picks one figure out of a sample.
pub type Metric = fn(&Sample) -> f64;

/// `row`'s figure over its peer's, taken within each run (the two servers were
/// measured back to back), then the median of those per-run ratios.
fn peer_ratio(rows: &[Row], row: &Row, name: &str, f: Metric) -> Option<f64> {
    let peer = rows.iter().find(|r| r.server == name && r.same_cell(row))?;
    paired_ratio(row, peer, f)
}

/// The median over runs of `a`'s figure over `b`'s in the same run.
fn paired_ratio(a: &Row, b: &Row, f: Metric) -> Option<f64> {
    let per_run: Vec<f64> = a
        .samples
        .iter()
        .filter_map(|(run, s)| {
            let (_, p) = b.samples.iter().find(|(r, _)| r == run)?;
            ratio(f(s), f(p))
        })
        .collect();
    median(&per_run)
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}x"))
}

/// Markdown tables: one row per server, scenario and thread count, then the
/// gain from one to two server threads.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str("| load | server threads | server | msgs/s | MB/s | p50 µs | p99 µs | server CPU µs/msg | of which user | server CPU | msgs/s vs tokio | CPU/msg vs tokio | p99 vs tokio | msgs/s vs ceiling | MB/s vs ceiling | CPU/msg vs ceiling |\n");
    s.push_str("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for row in rows {
        let Some(m) = row.median() else {
            let why = row
                .failures
                .first()
                .map_or("no successful run", String::as_str);
            s.push_str(&format!(
                "| {} | {} | {} | not measured: {} ||||||||||||||\n",
                row.scenario.label(),
                row.threads,
                row.server,
                why.replace('|', "/")
            ));
            continue;
        };
        let vs = |p: &str, f: Metric| fmt_ratio(peer_ratio(rows, row, p, f));
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.1} | {:.0} | {:.0} | {:.2} | {:.2} | {:.0}% | {} | {} | {} | {} | {} | {} |\n",
            row.scenario.label(),
            row.threads,
            row.server,
            m.msgs_per_sec,
            m.mb_per_sec,
            m.p50_us,
            m.p99_us,
            m.cpu_us_per_msg,
            m.user_us_per_msg,
            m.cpu_util * 100.0,
            vs("tokio", |x| x.msgs_per_sec),
            vs("tokio", |x| x.cpu_us_per_msg),
            vs("tokio", |x| x.p99_us),
            vs("ceiling", |x| x.msgs_per_sec),
            vs("ceiling", |x| x.mb_per_sec),
            vs("ceiling", |x| x.cpu_us_per_msg),
        ));
    }
    s.push_str(
        "\nMedians of the runs. Ratios: each server over its peer measured back to back \
         in the same run, median of those per-run ratios (msgs/s, MB/s: higher is better; \
         CPU/msg, p99: lower is better). Server CPU = utime + stime from /proc over the \
         measured window (\"of which user\": utime alone, the server's own work); 100% = one core.\n",
    );
    s.push_str(&scaling(rows));
    s.push_str(&syscalls(rows));
    s
}

/// System calls per echoed message, when they were counted.
fn syscalls(rows: &[Row]) -> String {
    let counted: Vec<(&Row, Sample)> = rows
        .iter()
        .filter_map(|r| r.median().map(|m| (r, m)))
        .filter(|(_, m)| m.syscalls_per_msg.is_some())
        .collect();
    if counted.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\n| load | server threads | server | io_uring_enter per msg | system calls per msg |\n\
         |---|---:|---|---:|---:|\n",
    );
    let f = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.3}"));
    for (r, m) in counted {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r.scenario.label(),
            r.threads,
            r.server,
            f(m.uring_enters_per_msg),
            f(m.syscalls_per_msg)
        ));
    }
    s.push_str("\nCounted with `perf stat -e syscalls:sys_enter_io_uring_enter,raw_syscalls:sys_enter -p <server>` over the measured window.\n");
    s
}

/// msgs/s with the most server threads over msgs/s with the fewest, per server.
fn scaling(rows: &[Row]) -> String {
    let (Some(lo), Some(hi)) = (
        rows.iter().map(|r| r.threads).min(),
        rows.iter().map(|r| r.threads).max(),
    ) else {
        return String::new();
    };
    if lo == hi {
        return String::new();
    }
    let mut s =
        format!("\n| load | server | msgs/s gain, {lo} → {hi} server threads (median of per-run ratios) |\n|---|---|---:|\n");
    for row in rows.iter().filter(|r| r.threads == lo) {
        let hi_row = rows.iter().find(|r| {
            r.threads == hi
                && r.server == row.server
                && r.scenario.size == row.scenario.size
                && r.scenario.connections == row.scenario.connections
        });
        let gain = hi_row.and_then(|h| paired_ratio(h, row, |s| s.msgs_per_sec));
        s.push_str(&format!(
            "| {} | {} | {} |\n",
            row.scenario.label(),
            row.server,
            fmt_ratio(gain)
        ));
    }
    s
}

/// Everything, medians and every sample, as one JSON value.
pub fn to_json(rows: &[Row], meta: serde_json::Value) -> serde_json::Value {
    let sample = |s: &Sample| {
        json!({
            "msgs_per_sec": s.msgs_per_sec, "mb_per_sec": s.mb_per_sec,
            "p50_us": s.p50_us, "p99_us": s.p99_us,
            "server_cpu_us_per_msg": s.cpu_us_per_msg, "server_cpu_util": s.cpu_util,
            "server_user_us_per_msg": s.user_us_per_msg,
            "io_uring_enter_per_msg": s.uring_enters_per_msg,
            "syscalls_per_msg": s.syscalls_per_msg,
        })
    };
    let results: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "connections": r.scenario.connections, "size": r.scenario.size,
                "server_threads": r.threads, "server": r.server, "banner": r.banner,
                "median": r.median().as_ref().map(sample),
                "runs": r.samples.iter().map(|(_, s)| sample(s)).collect::<Vec<_>>(),
                "vs_tokio": ratios(rows, r, "tokio"),
                "vs_ceiling": ratios(rows, r, "ceiling"),
                "failures": r.failures,
            })
        })
        .collect();
    json!({ "meta": meta, "results": results })
}

/// The per-run-median ratios of one row against a peer, as JSON.
fn ratios(rows: &[Row], row: &Row, peer: &str) -> serde_json::Value {
    json!({
        "msgs_per_sec": peer_ratio(rows, row, peer, |s| s.msgs_per_sec),
        "mb_per_sec": peer_ratio(rows, row, peer, |s| s.mb_per_sec),
        "p99_us": peer_ratio(rows, row, peer, |s| s.p99_us),
        "server_cpu_us_per_msg": peer_ratio(rows, row, peer, |s| s.cpu_us_per_msg),
    })
}
