//! The results: medians, ratios against tokio and the ceiling, as markdown and JSON.

use ringport_bench::stats::{median, median_ci};
use serde_json::json;

use std::path::Path;

use ringport_bench::server::ServerKind;

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
            p10_us: self.optional(|s| s.p10_us),
            p90_us: self.optional(|s| s.p90_us),
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
}

/// The row of `server` at this load and server thread count.
fn find_row<'a>(
    rows: &'a [Row],
    server: &str,
    connections: usize,
    size: usize,
    threads: usize,
) -> Option<&'a Row> {
    rows.iter().find(|r| {
        r.server == server
            && r.threads == threads
            && r.scenario.connections == connections
            && r.scenario.size == size
    })
}

/// Picks one figure out of a sample.
pub type Metric = fn(&Sample) -> f64;

/// `row`'s figure over its peer's, taken within each run (the two servers were
/// measured back to back), then the median of those per-run ratios.
fn peer_ratio(rows: &[Row], row: &Row, name: &str, f: Metric) -> Option<f64> {
    let sc = &row.scenario;
    let peer = find_row(rows, name, sc.connections, sc.size, row.threads)?;
    paired_ratio(row, peer, f)
}

/// The median over runs of `a`'s figure over `b`'s in the same run.
fn paired_ratio(a: &Row, b: &Row, f: Metric) -> Option<f64> {
    median(&values(&per_run(a, b, f)))
}

/// `a`'s figure over `b`'s, run by run, for the runs both have.
fn per_run(a: &Row, b: &Row, f: Metric) -> Vec<(usize, f64)> {
    a.samples
        .iter()
        .filter_map(|(run, s)| {
            let (_, p) = b.samples.iter().find(|(r, _)| r == run)?;
            Some((*run, ratio(f(s), f(p))?))
        })
        .collect()
}

fn values(v: &[(usize, f64)]) -> Vec<f64> {
    v.iter().map(|&(_, x)| x).collect()
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
    s.push_str(&shape(rows));
    s.push_str(&scaling(rows));
    s.push_str(&syscalls(rows));
    s.push_str(&budget_markdown(rows));
    s
}

/// A markdown table row: the row's load, server threads and server, then `cells`.
fn table_row(r: &Row, cells: &[String]) -> String {
    format!(
        "| {} | {} | {} | {} |\n",
        r.scenario.label(),
        r.threads,
        r.server,
        cells.join(" | ")
    )
}

/// Each row that has a median, with it, where `keep` holds for the median.
fn medians_where(rows: &[Row], keep: fn(&Sample) -> bool) -> Vec<(&Row, Sample)> {
    rows.iter()
        .filter_map(|r| r.median().map(|m| (r, m)))
        .filter(|(_, m)| keep(m))
        .collect()
}

/// The latency's distribution beside tokio's: where p50 and p99 differ for
/// different reasons (one distribution narrower, another with two modes),
/// the 10th and 90th percentiles show it.
fn shape(rows: &[Row]) -> String {
    let measured = medians_where(rows, |m| m.p10_us.is_some() && m.p90_us.is_some());
    if measured.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\n| load | server threads | server | p10 µs | p50 µs | p90 µs | p99 µs | p10 vs tokio | p50 vs tokio | p90 vs tokio | p99 vs tokio |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let f = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.0}"));
    for (r, m) in measured {
        let vs = |f: Metric| fmt_ratio(peer_ratio(rows, r, "tokio", f));
        s.push_str(&table_row(
            r,
            &[
                f(m.p10_us),
                f(Some(m.p50_us)),
                f(m.p90_us),
                f(Some(m.p99_us)),
                vs(|x| x.p10_us.unwrap_or(f64::NAN)),
                vs(|x| x.p50_us),
                vs(|x| x.p90_us.unwrap_or(f64::NAN)),
                vs(|x| x.p99_us),
            ],
        ));
    }
    s
}

/// System calls per echoed message, when they were counted.
fn syscalls(rows: &[Row]) -> String {
    let counted = medians_where(rows, |m| m.syscalls_per_msg.is_some());
    if counted.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\n| load | server threads | server | io_uring_enter per msg | system calls per msg |\n\
         |---|---:|---|---:|---:|\n",
    );
    let f = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.3}"));
    for (r, m) in counted {
        s.push_str(&table_row(
            r,
            &[f(m.uring_enters_per_msg), f(m.syscalls_per_msg)],
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
        let sc = &row.scenario;
        let hi_row = find_row(rows, row.server, sc.connections, sc.size, hi);
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
            "p10_us": s.p10_us, "p90_us": s.p90_us,
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
    json!({
        "meta": meta, "results": results,
        "budget": lines_json(&budget(rows)),
        "reference": lines_json(&reference(rows)),
    })
}

/// The rows of a JSON report that [`to_json`] wrote, to judge them again
/// (`compare --judge`) with this build's tables and lines.
///
/// # Errors
///
/// The JSON is not such a report, names a server this build does not know, or
/// has a row with failed runs: the JSON keeps no run numbers, so the runs of
/// such a row cannot be paired with its peers' again.
pub fn rows_from_json(v: &serde_json::Value) -> Result<Vec<Row>, String> {
    let results = v["results"]
        .as_array()
        .ok_or("not a compare report: no \"results\" list")?;
    results
        .iter()
        .map(|r| {
            let name = r["server"].as_str().ok_or("a result without a server")?;
            let server = ServerKind::by_name(name, Path::new(""))
                .ok_or_else(|| format!("unknown server {name:?}"))?
                .name;
            let count = |k: &str| {
                r[k].as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| format!("{name}: no {k:?}"))
            };
            let failures = r["failures"].as_array().map_or(0, Vec::len);
            if failures > 0 {
                return Err(format!(
                    "{name}: {failures} failed runs; the report keeps no run numbers, \
                     so its runs cannot be paired again"
                ));
            }
            let runs = r["runs"]
                .as_array()
                .ok_or_else(|| format!("{name}: no runs"))?;
            let samples = runs
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    Ok((
                        i + 1,
                        sample_from_json(s).ok_or(format!("{name}: run {}", i + 1))?,
                    ))
                })
                .collect::<Result<Vec<_>, String>>()?;
            Ok(Row {
                scenario: Scenario {
                    connections: count("connections")?,
                    size: count("size")?,
                },
                threads: count("server_threads")?,
                server,
                banner: r["banner"].as_str().unwrap_or_default().to_string(),
                samples,
                failures: Vec::new(),
            })
        })
        .collect()
}

/// One run's sample as [`to_json`] wrote it.
fn sample_from_json(s: &serde_json::Value) -> Option<Sample> {
    let num = |k: &str| s[k].as_f64();
    Some(Sample {
        msgs_per_sec: num("msgs_per_sec")?,
        mb_per_sec: num("mb_per_sec")?,
        p50_us: num("p50_us")?,
        p99_us: num("p99_us")?,
        p10_us: num("p10_us"),
        p90_us: num("p90_us"),
        cpu_us_per_msg: num("server_cpu_us_per_msg")?,
        user_us_per_msg: num("server_user_us_per_msg")?,
        cpu_util: num("server_cpu_util")?,
        uring_enters_per_msg: num("io_uring_enter_per_msg"),
        syscalls_per_msg: num("syscalls_per_msg"),
    })
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

/// The confidence asked of the interval around each budget line's median.
const LEVEL: f64 = 0.95;

/// One line of DESIGN.md section 5 that `compare` can judge, for one server.
#[derive(Debug)]
struct Line {
    server: &'static str,
    line: String,
    /// The ratio the line allows (at most, or at least).
    bound: f64,
    higher_is_better: bool,
    /// The ratio in each run, by run number.
    per_run: Vec<(usize, f64)>,
}

impl Line {
    fn meets(&self, r: f64) -> bool {
        if self.higher_is_better {
            r >= self.bound
        } else {
            r <= self.bound
        }
    }

    fn ci(&self) -> Option<ringport_bench::stats::Interval> {
        median_ci(&values(&self.per_run), LEVEL)
    }

    fn runs_met(&self) -> usize {
        self.per_run.iter().filter(|&&(_, r)| self.meets(r)).count()
    }

    /// Met when the whole confidence interval of the median meets the
    /// bound, not met when none of it does, else undecided: on a noisy
    /// machine a median a hair on either side says nothing by itself.
    fn verdict(&self) -> &'static str {
        match self.ci() {
            None => "not measured",
            Some(c) if self.meets(c.lo) && self.meets(c.hi) => "met",
            Some(c) if !self.meets(c.lo) && !self.meets(c.hi) => "not met",
            Some(_) => "undecided",
        }
    }
}

/// One one-thread echo line of DESIGN.md section 5: a server's figure over
/// `peer`'s at one load, within `bound`.
struct Spec {
    text: &'static str,
    peer: &'static str,
    connections: usize,
    size: usize,
    bound: f64,
    higher_is_better: bool,
    metric: Metric,
}

/// The one-thread echo lines, in the order DESIGN.md gives them.
const ECHO: [Spec; 5] = [
    Spec {
        text: "50 x 64 B, 1 thread: CPU/msg at most tokio's",
        peer: "tokio",
        connections: 50,
        size: 64,
        bound: 1.0,
        higher_is_better: false,
        metric: |s| s.cpu_us_per_msg,
    },
    Spec {
        text: "50 x 64 B, 1 thread: CPU/msg at most 1.05x the ceiling's",
        peer: "ceiling",
        connections: 50,
        size: 64,
        bound: 1.05,
        higher_is_better: false,
        metric: |s| s.cpu_us_per_msg,
    },
    Spec {
        text: "50 x 64 B, 1 thread: msgs/s at least tokio's",
        peer: "tokio",
        connections: 50,
        size: 64,
        bound: 1.0,
        higher_is_better: true,
        metric: |s| s.msgs_per_sec,
    },
    Spec {
        text: "50 x 64 B, 1 thread: p99 no worse than tokio's",
        peer: "tokio",
        connections: 50,
        size: 64,
        bound: 1.0,
        higher_is_better: false,
        metric: |s| s.p99_us,
    },
    Spec {
        text: "10 x 16 KiB, 1 thread: MB/s at least 0.9x the ceiling's",
        peer: "ceiling",
        connections: 10,
        size: 16384,
        bound: 0.9,
        higher_is_better: true,
        metric: |s| s.mb_per_sec,
    },
];

/// `spec` judged for `server`, or None when either server was not measured
/// at its load with one thread.
fn echo_line(rows: &[Row], server: &'static str, spec: &Spec) -> Option<Line> {
    let ours = find_row(rows, server, spec.connections, spec.size, 1)?;
    let peer = find_row(rows, spec.peer, spec.connections, spec.size, 1)?;
    let per_run = per_run(ours, peer, spec.metric);
    (!per_run.is_empty()).then(|| Line {
        server,
        line: spec.text.to_string(),
        bound: spec.bound,
        higher_is_better: spec.higher_is_better,
        per_run,
    })
}

/// The budget lines for every ringport server in `rows`, at one server
/// thread (and the gain to the most threads measured).
fn budget(rows: &[Row]) -> Vec<Line> {
    let find = |server: &str, conns, size, threads| find_row(rows, server, conns, size, threads);
    let hi = rows.iter().map(|r| r.threads).max().unwrap_or(1);
    let mut lines = Vec::new();
    // Each ringport server once, in the order measured (rows repeat the
    // servers for every load and thread count).
    let mut servers: Vec<&'static str> = Vec::new();
    for r in rows {
        if r.server.starts_with("ringport") && !servers.contains(&r.server) {
            servers.push(r.server);
        }
    }
    for server in servers {
        lines.extend(ECHO.iter().filter_map(|spec| echo_line(rows, server, spec)));
        if hi > 1 {
            for (conns, size, label) in [(50, 64, "64 B"), (10, 16384, "16 KiB")] {
                let gain =
                    |name: &str| match (find(name, conns, size, hi), find(name, conns, size, 1)) {
                        (Some(h), Some(l)) => per_run(h, l, |s| s.msgs_per_sec),
                        _ => Vec::new(),
                    };
                let (ours, tokio) = (gain(server), gain("tokio"));
                let rel: Vec<(usize, f64)> = ours
                    .iter()
                    .filter_map(|&(run, g)| {
                        let &(_, t) = tokio.iter().find(|(r, _)| *r == run)?;
                        Some((run, ratio(g, t)?))
                    })
                    .collect();
                if !rel.is_empty() {
                    lines.push(Line {
                        server,
                        line: format!("1 -> {hi} threads, {label}: msgs/s gain at least tokio's (ratio of the gains)"),
                        bound: 1.0,
                        higher_is_better: true,
                        per_run: rel,
                    });
                }
            }
        }
    }
    lines
}

/// The ceiling judged by the budget's lines against tokio: not a budget line,
/// a check of what the hand-written reference itself shows in the same run.
/// Where it is undecided too, ringport matching it cannot decide the line.
fn reference(rows: &[Row]) -> Vec<Line> {
    ECHO.iter()
        .filter(|spec| spec.peer == "tokio")
        .filter_map(|spec| echo_line(rows, "ceiling", spec))
        .collect()
}

/// Lines as JSON: every run's ratio, the median, its interval and verdict.
fn lines_json(lines: &[Line]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(|l| {
            json!({
                "server": l.server, "line": l.line, "bound": l.bound,
                "higher_is_better": l.higher_is_better,
                "per_run": l.per_run.iter().map(|&(r, x)| json!([r, x])).collect::<Vec<_>>(),
                "median": median(&values(&l.per_run)),
                "ci_lo": l.ci().map(|c| c.lo), "ci_hi": l.ci().map(|c| c.hi),
                "ci_confidence": l.ci().map(|c| c.confidence),
                "runs_met": l.runs_met(), "verdict": l.verdict(),
            })
        })
        .collect()
}

/// The budget lines as a table: every run's ratio, the median, its
/// confidence interval and the verdict it allows; then the ceiling judged by
/// the lines against tokio ([`reference`]).
fn budget_markdown(rows: &[Row]) -> String {
    let lines = budget(rows);
    if lines.is_empty() {
        return String::new();
    }
    let mut s = lines_table("budget line (DESIGN.md §5)", &lines);
    s.push_str(&format!(
        "\nThe interval: a distribution-free confidence interval of the median of the per-run \
         ratios (order statistics, at least {:.0}% where the runs allow; with fewer than 6 runs, \
         the range of all of them). Met: the whole interval meets the line; not met: none of it \
         does; undecided: the runs cannot tell.\n",
        LEVEL * 100.0
    ));
    let reference = reference(rows);
    if !reference.is_empty() {
        s.push_str(&lines_table(
            "the same line for the hand-written ceiling (a check, not a budget line)",
            &reference,
        ));
        s.push_str(
            "\nThe ceiling is the budget's reference. Where its own verdict against tokio is \
             undecided, a ringport that matches it cannot decide that line either.\n",
        );
    }
    s
}

/// A markdown table of judged lines under `heading`.
fn lines_table(heading: &str, lines: &[Line]) -> String {
    let mut s = format!(
        "\n| server | {heading} | ratio in each run | median | interval of the median | runs that meet it | verdict |\n\
         |---|---|---|---:|---|---:|---|\n"
    );
    for l in lines {
        let runs: Vec<String> = l.per_run.iter().map(|(_, r)| format!("{r:.2}")).collect();
        let ci = l.ci().map_or("-".into(), |c| {
            format!(
                "{:.2}x to {:.2}x ({:.0}%)",
                c.lo,
                c.hi,
                c.confidence * 100.0
            )
        });
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} of {} | {} |\n",
            l.server,
            l.line,
            runs.join(", "),
            fmt_ratio(median(&values(&l.per_run))),
            ci,
            l.runs_met(),
            l.per_run.len(),
            l.verdict(),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::{Sample, Scenario};

    fn sample(msgs: f64, cpu: f64, p99: f64) -> Sample {
        Sample {
            msgs_per_sec: msgs,
            mb_per_sec: msgs * 64.0 / 1e6,
            p50_us: p99 / 2.0,
            p99_us: p99,
            p10_us: Some(p99 / 4.0),
            p90_us: Some(p99 * 0.8),
            cpu_us_per_msg: cpu,
            user_us_per_msg: cpu / 10.0,
            cpu_util: 0.9,
            uring_enters_per_msg: None,
            syscalls_per_msg: None,
        }
    }

    fn row(server: &'static str, threads: usize, runs: &[(f64, f64, f64)]) -> Row {
        Row {
            scenario: Scenario {
                connections: 50,
                size: 64,
            },
            threads,
            server,
            banner: String::new(),
            samples: runs
                .iter()
                .enumerate()
                .map(|(i, &(m, c, p))| (i + 1, sample(m, c, p)))
                .collect(),
            failures: Vec::new(),
        }
    }

    fn verdict(lines: &[Line], text: &str) -> (&'static str, usize, Vec<f64>) {
        let l = lines.iter().find(|l| l.line.starts_with(text)).expect(text);
        (l.verdict(), l.runs_met(), values(&l.per_run))
    }

    #[test]
    fn shape_table_shows_the_percentiles_beside_tokio() {
        let mut rows = vec![
            row("ringport-io_uring", 1, &[(100.0, 4.0, 600.0); 3]),
            row("tokio", 1, &[(100.0, 5.0, 500.0); 3]),
        ];
        let t = shape(&rows);
        let ours = t
            .lines()
            .find(|l| l.contains("ringport-io_uring"))
            .expect(&t);
        // p10 150, p50 300, p90 480, p99 600; each 1.2x tokio's.
        assert!(
            ours.contains("| 150 | 300 | 480 | 600 | 1.20x | 1.20x | 1.20x | 1.20x |"),
            "{ours}"
        );
        assert!(
            t.lines().any(
                |l| l.contains("| tokio |") && l.ends_with("| 1.00x | 1.00x | 1.00x | 1.00x |")
            ),
            "{t}"
        );
        // A client that does not report p10 and p90: no table.
        for r in &mut rows {
            r.samples.iter_mut().for_each(|(_, s)| s.p10_us = None);
        }
        assert_eq!(shape(&rows), "");
    }

    #[test]
    fn the_ceiling_is_judged_by_the_lines_against_tokio() {
        let rows = vec![
            row("ringport-io_uring", 1, &[(105.0, 4.2, 505.0); 6]),
            row("tokio", 1, &[(100.0, 5.0, 500.0); 6]),
            // Faster than tokio and cheaper, p99 a tie: above in 3 of 6 runs.
            row(
                "ceiling",
                1,
                &[
                    (110.0, 4.0, 490.0),
                    (110.0, 4.0, 510.0),
                    (110.0, 4.0, 495.0),
                    (110.0, 4.0, 505.0),
                    (110.0, 4.0, 498.0),
                    (110.0, 4.0, 502.0),
                ],
            ),
        ];
        let r = reference(&rows);
        let texts: Vec<&str> = r.iter().map(|l| l.line.as_str()).collect();
        assert_eq!(
            texts,
            [
                "50 x 64 B, 1 thread: CPU/msg at most tokio's",
                "50 x 64 B, 1 thread: msgs/s at least tokio's",
                "50 x 64 B, 1 thread: p99 no worse than tokio's",
            ]
        );
        assert!(r.iter().all(|l| l.server == "ceiling"));
        assert_eq!(verdict(&r, "50 x 64 B, 1 thread: CPU/msg").0, "met");
        assert_eq!(verdict(&r, "50 x 64 B, 1 thread: msgs/s").0, "met");
        assert_eq!(verdict(&r, "50 x 64 B, 1 thread: p99").0, "undecided");
        assert_eq!(verdict(&r, "50 x 64 B, 1 thread: p99").1, 3);
        // The budget judges ringport only; ringport's line against the
        // ceiling is there, the ceiling's against itself is not.
        let b = budget(&rows);
        assert!(b.iter().all(|l| l.server == "ringport-io_uring"));
        assert_eq!(
            verdict(&b, "50 x 64 B, 1 thread: CPU/msg at most 1.05x").1,
            6
        );
        let md = markdown(&rows);
        assert!(
            md.contains(
                "| ceiling | 50 x 64 B, 1 thread: p99 no worse than tokio's | 0.98, 1.02, "
            ),
            "{md}"
        );
        let j = to_json(&rows, json!({}));
        assert_eq!(j["reference"].as_array().map(Vec::len), Some(3));
        assert_eq!(j["reference"][2]["verdict"], "undecided");
        assert_eq!(j["budget"][0]["server"], "ringport-io_uring");
        // No ceiling measured: no check.
        assert!(reference(&rows[..2]).is_empty());
        assert!(!markdown(&rows[..2]).contains("a check, not a budget line"));
    }

    #[test]
    fn a_saved_report_is_judged_again_the_same() {
        let rows = vec![
            row(
                "ringport-io_uring",
                1,
                &[(105.0, 4.2, 505.0), (98.0, 4.6, 490.0), (101.0, 4.4, 520.0)],
            ),
            row("tokio", 1, &[(100.0, 5.0, 500.0); 3]),
            row(
                "ceiling",
                1,
                &[
                    (110.0, 4.0, 490.0),
                    (108.0, 4.1, 530.0),
                    (111.0, 4.0, 499.0),
                ],
            ),
        ];
        let j = to_json(&rows, json!({}));
        // Through text, as `--json` writes it.
        let back = rows_from_json(&serde_json::from_str(&j.to_string()).unwrap()).unwrap();
        assert_eq!(markdown(&back), markdown(&rows));
        // The verdicts again (JSON text may move a ratio's last digit).
        let verdicts = |r: &[Row]| budget(r).iter().map(|l| l.verdict()).collect::<Vec<_>>();
        assert_eq!(verdicts(&back), verdicts(&rows));
        // A row with failed runs cannot be paired again.
        let mut failed = j.clone();
        failed["results"][1]["failures"] = json!(["run 2: server did not start"]);
        let e = rows_from_json(&failed).map(|_| ()).unwrap_err();
        assert!(e.starts_with("tokio: 1 failed runs"), "{e}");
        assert!(rows_from_json(&json!({})).is_err());
        let mut unknown = j;
        unknown["results"][0]["server"] = json!("nginx");
        assert!(rows_from_json(&unknown).is_err());
    }

    #[test]
    fn budget_lines_judge_the_interval_not_the_median() {
        // Six runs: the interval is the 1st to the 6th value (96.9%).
        let rows = vec![
            // CPU/msg always below tokio's: met. msgs/s above in 4 of 6 runs: undecided.
            // p99 always above tokio's: not met.
            row(
                "ringport-io_uring",
                1,
                &[
                    (110.0, 4.0, 600.0),
                    (90.0, 4.5, 700.0),
                    (105.0, 4.2, 650.0),
                    (95.0, 4.1, 620.0),
                    (101.0, 4.3, 610.0),
                    (102.0, 4.4, 640.0),
                ],
            ),
            row("tokio", 1, &[(100.0, 5.0, 500.0); 6]),
            row("ringport-io_uring", 2, &[(120.0, 4.0, 600.0); 6]),
            row("tokio", 2, &[(110.0, 5.0, 500.0); 6]),
        ];
        let lines = budget(&rows);
        let (v, met, runs) = verdict(&lines, "50 x 64 B, 1 thread: CPU/msg at most tokio's");
        assert_eq!((v, met), ("met", 6));
        assert_eq!(runs[0], 0.8);
        assert_eq!(
            verdict(&lines, "50 x 64 B, 1 thread: msgs/s").0,
            "undecided"
        );
        assert_eq!(verdict(&lines, "50 x 64 B, 1 thread: msgs/s").1, 4);
        assert_eq!(verdict(&lines, "50 x 64 B, 1 thread: p99").0, "not met");
        // No ceiling measured: no line against it.
        assert!(lines.iter().all(|l| !l.line.contains("ceiling")));
        // Gain: ours 120/110 (run 1) ... against tokio's 1.1 in every run.
        let (_, _, gains) = verdict(&lines, "1 -> 2 threads, 64 B");
        assert!((gains[0] - (120.0 / 110.0) / 1.1).abs() < 1e-12);
        // Two ringport servers, interleaved with the peers as `compare`
        // orders rows: each gets each line once.
        let mut two = rows;
        two.insert(1, row("ringport-epoll", 1, &[(100.0, 4.0, 600.0); 6]));
        two.insert(4, row("ringport-epoll", 2, &[(110.0, 4.0, 600.0); 6]));
        let lines = budget(&two);
        for server in ["ringport-io_uring", "ringport-epoll"] {
            let n = lines
                .iter()
                .filter(|l| l.server == server && l.line.starts_with("50 x 64 B, 1 thread: p99"))
                .count();
            assert_eq!(n, 1, "{server}");
        }
        let rows = two;
        assert!(markdown(&rows).contains(
            "| ringport-io_uring | 50 x 64 B, 1 thread: CPU/msg at most tokio's | 0.80, "
        ));
    }
}
