//! Runs `ringport serve`, the tokio peer and the io_uring ceiling side by side
//! under the same `ringport bench --json` load, and reports throughput,
//! latency and server CPU time per message, with ratios against tokio and the
//! ceiling (medians of `--runs` runs, servers interleaved within each run and
//! in reverse order on every second run).
//!
//! ```text
//! cargo build --release --workspace
//! cargo run --release -p ringport-bench --bin compare -- [--runs 3] [--duration 5]
//! ```
//!
//! It builds nothing: the binaries are looked up beside its own executable
//! (`target/release/`), or in `--bin-dir`. Progress goes to stderr; markdown
//! tables and then one JSON object go to stdout.

mod measure;
mod plot;
mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use ringport_bench::args::Args;
use ringport_bench::machine;

use measure::{Load, Scenario};
use report::Row;
use ringport_bench::server::ServerKind;

const USAGE: &str = "\
usage: compare [--runs 3] [--duration 5] [--warmup 1] [--threads 1,2]
               [--servers ringport-io_uring,ringport-epoll,tokio,mio,ceiling]
               (also ringport-single: ringport with a receive per message, no multishot;
                ringport-unregistered: ringport naming sockets by number, not through its ring's file table;
                ringport-perthread: ringport with a port per worker, as io_uring has by default;
                ringport-oneport: ringport with one port for every worker (--ports shared);
                ringport-shared: one worker on ringport's shared ring, not a
                single-thread port's; ceiling-coop: the ceiling with ringport's COOP_TASKRUN ring setup;
                ceiling-single: the ceiling with a single-shot receive per message)
               [--loads 50x64,10x16384] [--pipeline 1] [--client-threads 1]
               [--bin-dir target/release] [--client PATH] [--svg PATH] [--json PATH]
               [--syscalls (count the server's system calls with perf stat)]
               [--pin (client on the last CPU, a one-thread server on the first, with taskset)]
       compare --judge FILE.json (the tables and budget verdicts of a saved --json report, again)
Build first: cargo build --release --workspace";

const FLAGS: &[&str] = &[
    "runs",
    "duration",
    "warmup",
    "threads",
    "servers",
    "loads",
    "pipeline",
    "client-threads",
    "bin-dir",
    "client",
    "svg",
    "json",
    "judge",
];

fn main() -> ExitCode {
    ringport_bench::args::main_with("compare", USAGE, run)
}

struct Config {
    runs: usize,
    threads: Vec<usize>,
    loads: Vec<Scenario>,
    servers: Vec<ServerKind>,
    client: PathBuf,
    load: Load,
}

fn run() -> Result<(), String> {
    let args =
        Args::parse(std::env::args().skip(1), FLAGS, &["syscalls", "pin"]).map_err(|e| e.0)?;
    if let Some(p) = args.str("judge") {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"))?;
        let v = serde_json::from_str(&text).map_err(|e| format!("{p}: not JSON: {e}"))?;
        let rows = report::rows_from_json(&v).map_err(|e| format!("{p}: {e}"))?;
        println!("{}", report::markdown(&rows));
        return Ok(());
    }
    let cfg = config(&args)?;
    let before = machine::describe();
    eprintln!("machine: {before}");
    let rows = measure_all(&cfg);
    let after = machine::describe();
    eprintln!("machine after: {after}");
    let md = report::markdown(&rows);
    let meta = serde_json::json!({
        "machine_before": before,
        "machine_after": after,
        "runs": cfg.runs,
        "duration_s": cfg.load.duration.as_secs_f64(),
        "warmup_s": cfg.load.warmup.as_secs_f64(),
        "pipeline": cfg.load.pipeline,
        "client_threads": cfg.load.client_threads,
        "syscalls_counted": cfg.load.syscalls,
        "pinned": cfg.load.pin.is_some(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
    });
    let json = report::to_json(&rows, meta);
    println!("{md}");
    println!(
        "```json\n{}\n```",
        serde_json::to_string_pretty(&json).unwrap_or_default()
    );
    if let Some(p) = args.str("json") {
        std::fs::write(p, json.to_string() + "\n").map_err(|e| format!("{p}: {e}"))?;
    }
    if let Some(p) = args.str("svg") {
        plot::svg(&rows, Path::new(p))?;
        eprintln!("plot written to {p}");
    }
    Ok(())
}

fn measure_all(cfg: &Config) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for sc in &cfg.loads {
        for &threads in &cfg.threads {
            for s in &cfg.servers {
                rows.push(Row {
                    scenario: *sc,
                    threads,
                    server: s.name,
                    banner: String::new(),
                    samples: Vec::new(),
                    failures: Vec::new(),
                });
            }
        }
    }
    for run in 1..=cfg.runs {
        for i in run_order(rows.len(), cfg.servers.len(), run) {
            let row = &mut rows[i];
            let Some(kind) = cfg.servers.iter().find(|s| s.name == row.server) else {
                continue;
            };
            // A server that could not start once is not retried.
            if row.samples.is_empty() && row.failures.iter().any(|f| f.contains("did not start")) {
                continue;
            }
            eprint!(
                "run {run}/{}: {} threads={} {} ... ",
                cfg.runs,
                row.scenario.label(),
                row.threads,
                row.server
            );
            match measure::run_once(&cfg.client, kind, row.threads, row.scenario, &cfg.load) {
                Ok((s, banner)) => {
                    eprintln!(
                        "{:.0} msgs/s, {:.1} MB/s, p99 {:.0} µs, {:.2} µs CPU/msg",
                        s.msgs_per_sec, s.mb_per_sec, s.p99_us, s.cpu_us_per_msg
                    );
                    row.banner = banner;
                    row.samples.push((run, s));
                }
                Err(e) => {
                    eprintln!("failed: {e}");
                    row.failures.push(e);
                }
            }
        }
    }
    rows
}

fn config(args: &Args) -> Result<Config, String> {
    let e = |e: ringport_bench::args::ArgError| e.0;
    let runs: usize = args.get("runs", 3).map_err(e)?;
    let duration: f64 = args.get("duration", 5.0).map_err(e)?;
    let warmup: f64 = args.get("warmup", 1.0).map_err(e)?;
    if runs == 0 || !(duration > 0.0 && duration < 3600.0) || !(0.0..3600.0).contains(&warmup) {
        return Err(
            "--runs must be at least 1, --duration and --warmup seconds in (0, 3600)".into(),
        );
    }
    let threads = list(args.str("threads").unwrap_or("1,2"), "--threads", |s| {
        s.parse::<usize>().ok().filter(|&n| n > 0)
    })?;
    let loads = list(
        args.str("loads").unwrap_or("50x64,10x16384"),
        "--loads",
        |s| {
            let (c, b) = s.split_once('x')?;
            let sc = Scenario {
                connections: c.parse().ok()?,
                size: b.parse().ok()?,
            };
            (sc.connections > 0 && sc.size > 0).then_some(sc)
        },
    )?;
    let bin_dir = match args.str("bin-dir") {
        Some(d) => PathBuf::from(d),
        None => own_dir()?,
    };
    let names = args
        .str("servers")
        .unwrap_or("ringport-io_uring,ringport-epoll,tokio,mio,ceiling");
    let servers = list(names, "--servers", |s| ServerKind::by_name(s, &bin_dir))?;
    let client = args
        .str("client")
        .map_or_else(|| bin_dir.join("ringport"), PathBuf::from);
    let mut missing: Vec<String> = servers
        .iter()
        .map(|s| s.program.clone())
        .chain([client.clone()])
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    missing.dedup();
    if !missing.is_empty() {
        return Err(format!(
            "missing {}; build them first with: cargo build --release --workspace",
            missing.join(", ")
        ));
    }
    let load = Load {
        duration: Duration::from_secs_f64(duration),
        warmup: Duration::from_secs_f64(warmup),
        pipeline: args.get("pipeline", 1).map_err(e)?,
        client_threads: args.get("client-threads", 1).map_err(e)?,
        syscalls: args.has("syscalls"),
        pin: match args.has("pin") {
            false => None,
            true => {
                let n = std::thread::available_parallelism().map_or(1, |n| n.get());
                if n < 2 {
                    return Err("--pin needs at least 2 CPUs".into());
                }
                Some(n)
            }
        },
    };
    Ok(Config {
        runs,
        threads,
        loads,
        servers,
        client,
        load,
    })
}

/// The order of the rows (`per_group` servers for each load and thread
/// count, in that order) in run `run`: every cell once per run, so drift in
/// machine load spreads evenly, and within each group the servers in reverse
/// order on every second run (A B C, C B A, ...), so no server always runs
/// first, on a machine that has just been quiet, or always last.
fn run_order(rows: usize, per_group: usize, run: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rows).collect();
    if run % 2 == 0 {
        order
            .chunks_mut(per_group.max(1))
            .for_each(<[usize]>::reverse);
    }
    order
}

fn list<T>(s: &str, flag: &str, f: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, String> {
    let v: Option<Vec<T>> = s.split(',').map(|x| f(x.trim())).collect();
    match v {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(format!("{flag}: cannot read {s:?}")),
    }
}

fn own_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating this program: {e}"))?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| "this program has no directory".into())
}

#[cfg(test)]
mod tests {
    use super::run_order;

    #[test]
    fn servers_go_in_reverse_order_on_every_second_run() {
        // Two groups (a load at two thread counts) of three servers.
        assert_eq!(run_order(6, 3, 1), [0, 1, 2, 3, 4, 5]);
        assert_eq!(run_order(6, 3, 2), [2, 1, 0, 5, 4, 3]);
        assert_eq!(run_order(6, 3, 3), [0, 1, 2, 3, 4, 5]);
        assert_eq!(run_order(0, 0, 2), [0usize; 0]);
    }
}
