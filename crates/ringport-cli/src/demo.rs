//! `ringport` with no arguments: an echo server and the load generator on
//! loopback, a progress bar, and a table.

use std::net::SocketAddr;
use std::time::Duration;

use ringport::Backend;

use crate::bench;
use crate::error::{Error, Result};
use crate::server::{self, Server};
use crate::ui;

/// The demo's knobs (all have defaults).
#[derive(Clone, Debug)]
pub struct Config {
    pub backend: Backend,
    pub duration: Duration,
    pub warmup: Duration,
    pub connections: usize,
    pub size: usize,
    pub pipeline: usize,
    /// Server worker threads (0 = one per CPU); default half the CPUs.
    pub server_threads: usize,
    pub client_threads: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            backend: Backend::Auto,
            duration: Duration::from_secs(5),
            warmup: Duration::from_millis(500),
            connections: 50,
            size: 1024,
            pipeline: 1,
            // Client and server share the machine: half the CPUs each.
            server_threads: half_the_cpus(),
            client_threads: half_the_cpus(),
        }
    }
}

fn half_the_cpus() -> usize {
    (std::thread::available_parallelism().map_or(1, usize::from) / 2).max(1)
}

/// Runs the demo and prints the table; Ok(true) when every byte came back.
///
/// # Errors
///
/// The server or the client port cannot start.
pub fn run(cfg: &Config) -> Result<bool> {
    let server = Server::start(server::Config {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        threads: cfg.server_threads,
        backend: cfg.backend,
        ..server::Config::default()
    })?;
    let plural = if server.threads() == 1 { "" } else { "s" };
    println!(
        "ringport demo: echo server on {} ({} worker thread{plural}, {}), {} connections x {} for {:.1} s",
        server.local_addr(),
        server.threads(),
        server.backend(),
        cfg.connections,
        ui::bytes(cfg.size as u64),
        cfg.duration.as_secs_f64()
    );
    let bcfg = bench::Config {
        addr: server.local_addr(),
        connections: cfg.connections,
        size: cfg.size,
        duration: cfg.duration,
        warmup: cfg.warmup,
        pipeline: cfg.pipeline,
        threads: cfg.client_threads,
        backend: cfg.backend,
    };
    let pb = ui::progress_bar(cfg.warmup + cfg.duration);
    let report = bench::run(&bcfg, |p| ui::show(&pb, p, cfg.warmup));
    pb.finish_and_clear();
    let threads = server.threads();
    let ports = match (server.ports(), threads) {
        (1, 1) => "1".to_string(),
        (1, _) => "1, shared by the workers".to_string(),
        (n, _) => format!("{n}, one per worker"),
    };
    let backend = format!("{} — {}", server.backend(), server.backend_reason());
    let counters = server.shutdown();
    let report = report?;
    let mut rows = vec![
        ("backend".to_string(), backend),
        ("server threads".to_string(), threads.to_string()),
        ("server ports".to_string(), ports),
        ("client threads".to_string(), cfg.client_threads.to_string()),
    ];
    rows.extend(ui::report_rows(&report));
    rows.push((
        "server".to_string(),
        format!(
            "{} accepted, {} closed, {} ops submitted = {} completed",
            counters.accepted, counters.closed, counters.ops_submitted, counters.ops_completed
        ),
    ));
    print!("{}", ui::table("ringport echo on loopback", &rows));
    if let Some(e) = &report.first_error {
        return Err(Error::msg(format!("the run had errors; first: {e}")));
    }
    Ok(report.ok() && report.bytes_verified > 0)
}
