//! Prints post+get hand-offs per second between two threads through a ringport
//! `CompletionPort`, beside the same hand-off through crossbeam-channel's
//! unbounded channel, in the same run (median of several runs, interleaved).
//!
//! ```text
//! cargo run --release -p ringport-bench --bin handoff [-- --runs 5 --count 1000000]
//! ```

use std::process::ExitCode;
use std::time::Duration;

use ringport::{Backend, CompletionPort};
use ringport_bench::args::Args;
use ringport_bench::handoff::{self, Pattern, Transport};
use ringport_bench::{machine, stats};

const USAGE: &str = "usage: handoff [--runs N (5)] [--count HAND-OFFS PER RUN (1000000)] \
                     [--pattern stream|batched|ping-pong|one-thread] [--backend auto|io_uring|epoll] [--json]";

fn main() -> ExitCode {
    ringport_bench::args::main_with("handoff", USAGE, run)
}

fn run() -> Result<(), String> {
    let args = Args::parse(
        std::env::args().skip(1),
        &["runs", "count", "pattern", "backend"],
        &["json"],
    )
    .map_err(|e| e.0)?;
    let runs: usize = args.get("runs", 5).map_err(|e| e.0)?;
    let count: u64 = args.get("count", 1_000_000).map_err(|e| e.0)?;
    if runs == 0 || count == 0 {
        return Err("--runs and --count must be at least 1".into());
    }
    let backend: Backend = args
        .str("backend")
        .unwrap_or("auto")
        .parse()
        .map_err(|e: std::io::Error| e.to_string())?;
    let port = CompletionPort::builder()
        .backend(backend)
        .build()
        .map_err(|e| format!("no completion port on backend {backend}: {e}"))?;
    eprintln!("machine: {}", machine::describe());
    eprintln!(
        "port backend: {} ({})",
        port.backend(),
        port.backend_reason()
    );
    drop(port);
    eprintln!("{count} hand-offs per run, median of {runs} runs, port and channel interleaved");
    let mut rows = Vec::new();
    let patterns = match args.str("pattern") {
        None => Pattern::ALL.to_vec(),
        Some("stream") => vec![Pattern::Stream],
        Some("batched") => vec![Pattern::StreamBatched],
        Some("ping-pong") => vec![Pattern::PingPong],
        Some("one-thread") => vec![Pattern::OneThread],
        Some(p) => {
            return Err(format!(
                "--pattern {p:?}: expected stream, batched, ping-pong or one-thread"
            ))
        }
    };
    for pattern in patterns {
        // Ping-pong wakes a sleeping thread per item; keep its runs short.
        let n = if pattern == Pattern::PingPong {
            (count / 50).max(1)
        } else {
            count
        };
        let (port, chan) = measure(backend, pattern, n, runs)?;
        rows.push((pattern, port, chan));
    }
    if args.has("json") {
        print_json(&rows, count, runs, backend);
    } else {
        print_table(&rows);
    }
    Ok(())
}

/// Median rate (per second) for the port and the channel.
fn measure(backend: Backend, pattern: Pattern, n: u64, runs: usize) -> Result<(f64, f64), String> {
    let mut port = Vec::new();
    let mut chan = Vec::new();
    // One warm-up of each, not counted.
    for t in [Transport::Port, Transport::Channel] {
        handoff::run_on(backend, t, pattern, n.min(100_000))
            .map_err(|e| format!("{t}, {pattern}: {e}"))?;
    }
    for _ in 0..runs {
        for (t, v) in [
            (Transport::Port, &mut port),
            (Transport::Channel, &mut chan),
        ] {
            let d = handoff::run_on(backend, t, pattern, n)
                .map_err(|e| format!("{t}, {pattern}: {e}"))?;
            v.push(rate(n, d));
        }
    }
    let med = |v: &[f64]| stats::median(v).ok_or("no measurement");
    Ok((med(&port)?, med(&chan)?))
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn unit(p: Pattern) -> &'static str {
    if p == Pattern::PingPong {
        "round trips/s"
    } else {
        "hand-offs/s"
    }
}

fn print_table(rows: &[(Pattern, f64, f64)]) {
    println!("| pattern | unit | ringport post+get | crossbeam unbounded | ringport / crossbeam |");
    println!("|---|---|---:|---:|---:|");
    for (p, port, chan) in rows {
        println!(
            "| {p} | {} | {} | {} | {:.2}x |",
            unit(*p),
            human(*port),
            human(*chan),
            port / chan
        );
    }
}

fn print_json(rows: &[(Pattern, f64, f64)], count: u64, runs: usize, backend: Backend) {
    let results: Vec<_> = rows
        .iter()
        .map(|(p, port, chan)| {
            serde_json::json!({
                "pattern": p.to_string(), "unit": unit(*p),
                "ringport_per_sec": port.round(), "crossbeam_per_sec": chan.round(),
                "ratio": port / chan,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "machine": machine::describe(), "backend": backend.to_string(), "count": count, "runs": runs, "results": results,
    });
    println!("{doc}");
}

/// 12.3 M or 456.7 k.
fn human(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else {
        format!("{:.1} k", x / 1e3)
    }
}
