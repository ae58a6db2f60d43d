//! `ringport`: the demo (no arguments), `serve` and `bench`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ringport::Backend;
use ringport_cli::{bench, demo, parse, server, ui, Error, Result};

/// An IOCP-model echo server and load generator on ringport.
///
/// Without a command, runs the demo: an echo server and the load generator on
/// loopback for a few seconds, then a table of the results.
#[derive(Parser, Debug)]
#[command(name = "ringport", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Echo server + load generator on loopback, then a results table (the default).
    Demo(DemoArgs),
    /// The echo server: one completion port, one worker per CPU.
    Serve(ServeArgs),
    /// Closed-loop load generator that checks every echoed byte.
    Bench(BenchArgs),
}

fn backend(s: &str) -> std::result::Result<Backend, String> {
    parse::backend(s)
}
fn duration(s: &str) -> std::result::Result<Duration, String> {
    parse::duration(s)
}
fn addr(s: &str) -> std::result::Result<SocketAddr, String> {
    parse::addr(s)
}
fn msg_size(s: &str) -> std::result::Result<usize, String> {
    parse::msg_size(s)
}
fn connections(s: &str) -> std::result::Result<usize, String> {
    parse::count(s, "connections", 100_000)
}
fn threads(s: &str) -> std::result::Result<usize, String> {
    parse::count(s, "threads", 1024)
}
fn ports(s: &str) -> std::result::Result<server::Ports, String> {
    s.parse()
}
fn pipeline(s: &str) -> std::result::Result<usize, String> {
    parse::count(s, "pipeline", 4096)
}
fn buffered(s: &str) -> std::result::Result<usize, String> {
    match parse::size(s)? {
        n if n < 4096 => Err("max-buffered must be at least 4K".into()),
        n if n > parse::MAX_SIZE => Err("max-buffered must be at most 16M".into()),
        n => Ok(n),
    }
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// auto, io_uring or epoll.
    #[arg(long, default_value = "auto", value_parser = backend)]
    backend: Backend,
    /// Measured time (seconds, or 500ms, 2s...).
    #[arg(long, default_value = "5", value_parser = duration)]
    duration: Duration,
    /// Warm-up before measuring.
    #[arg(long, default_value = "0.5", value_parser = duration)]
    warmup: Duration,
    /// Client connections.
    #[arg(long, visible_alias = "conns", default_value = "50", value_parser = connections)]
    connections: usize,
    /// Message size (64, 16K, 1M; at most 16M).
    #[arg(long, default_value = "1K", value_parser = msg_size)]
    size: usize,
    /// Messages in flight per connection.
    #[arg(long, default_value = "1", value_parser = pipeline)]
    pipeline: usize,
    /// Server worker threads [default: half the CPUs].
    #[arg(long, value_parser = threads)]
    server_threads: Option<usize>,
    /// Client threads [default: half the CPUs].
    #[arg(long, value_parser = threads)]
    client_threads: Option<usize>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free one; the real one is printed).
    #[arg(long, default_value = "127.0.0.1:7000", value_parser = addr)]
    addr: SocketAddr,
    /// Worker threads [default: one per CPU].
    #[arg(long, value_parser = threads)]
    threads: Option<usize>,
    /// Port concurrency: threads running at once [default: one per CPU].
    #[arg(long, value_parser = threads)]
    concurrency: Option<usize>,
    /// auto, io_uring or epoll.
    #[arg(long, default_value = "auto", value_parser = backend)]
    backend: Backend,
    /// Connections beyond this are closed as soon as they are accepted.
    #[arg(long, default_value = "100000", value_parser = connections)]
    max_connections: usize,
    /// Close connections with no I/O for this long (0 = never).
    #[arg(long, default_value = "300", value_parser = duration)]
    idle_timeout: Duration,
    /// Bytes a connection may have waiting to be echoed before it is no longer read.
    #[arg(long, default_value = "1M", value_parser = buffered)]
    max_buffered: usize,
    /// Print a counters line this often (0 = never).
    #[arg(long, default_value = "0", value_parser = duration)]
    stats_interval: Duration,
    /// Set SO_REUSEPORT so several servers can share the address.
    #[arg(long)]
    reuseport: bool,
    /// shared: every worker dequeues from one port; per-thread: a port per
    /// worker, connections dealt out in turn (each stays on one worker);
    /// auto: per-thread where io_uring gives each a ring of its own, else
    /// shared.
    #[arg(long, default_value = "auto", value_parser = ports)]
    ports: server::Ports,
    /// With one worker, keep the port's ring shared as with several (one
    /// worker otherwise gets a single-thread port; for comparing the two).
    #[arg(long)]
    shared_ring: bool,
    /// Pooled receives one at a time in the kernel instead of one multishot
    /// receive per socket (io_uring; for comparing the two).
    #[arg(long)]
    single_shot: bool,
    /// Name sockets by descriptor number instead of through the ring's
    /// registered file table (io_uring; for comparing the two).
    #[arg(long)]
    no_registered_files: bool,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// The echo server.
    #[arg(long, default_value = "127.0.0.1:7000", value_parser = addr)]
    addr: SocketAddr,
    /// Connections.
    #[arg(long, visible_alias = "conns", default_value = "50", value_parser = connections)]
    connections: usize,
    /// Message size (64, 16K, 1M; at most 16M).
    #[arg(long, default_value = "64", value_parser = msg_size)]
    size: usize,
    /// Measured time.
    #[arg(long, default_value = "5", value_parser = duration)]
    duration: Duration,
    /// Warm-up before measuring.
    #[arg(long, default_value = "1", value_parser = duration)]
    warmup: Duration,
    /// Messages in flight per connection.
    #[arg(long, default_value = "1", value_parser = pipeline)]
    pipeline: usize,
    /// Client threads.
    #[arg(long, default_value = "1", value_parser = threads)]
    threads: usize,
    /// Backend of the client's completion port.
    #[arg(long, default_value = "auto", value_parser = backend)]
    backend: Backend,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line: clap's first line, without its "error: " prefix.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            eprintln!("ringport: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let result = match cli.cmd {
        None => demo::run(&demo::Config::default()),
        Some(Cmd::Demo(a)) => demo(a),
        Some(Cmd::Serve(a)) => serve(a),
        Some(Cmd::Bench(a)) => bench(a),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ringport: {e}");
            ExitCode::FAILURE
        }
    }
}

fn demo(a: DemoArgs) -> Result<bool> {
    let d = demo::Config::default();
    demo::run(&demo::Config {
        backend: a.backend,
        duration: a.duration,
        warmup: a.warmup,
        connections: a.connections,
        size: a.size,
        pipeline: a.pipeline,
        server_threads: a.server_threads.unwrap_or(d.server_threads),
        client_threads: a.client_threads.unwrap_or(d.client_threads),
    })
}

fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

fn serve(a: ServeArgs) -> Result<bool> {
    // Install the handler first, so a signal during start-up is not lost.
    // `ctrlc` with its `termination` feature takes SIGINT, SIGTERM and SIGHUP
    // on Unix and Ctrl-C / Ctrl-Break / close on Windows.
    let (tx, stop) = std::sync::mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .map_err(|e| Error::msg(format!("cannot install the Ctrl-C/SIGTERM handler: {e}")))?;
    let server = server::Server::start(server::Config {
        addr: a.addr,
        threads: a.threads.unwrap_or(0),
        concurrency: a.concurrency.unwrap_or(0),
        backend: a.backend,
        max_connections: a.max_connections,
        idle_timeout: nonzero(a.idle_timeout),
        max_buffered: a.max_buffered,
        stats_interval: nonzero(a.stats_interval),
        reuseport: a.reuseport,
        ports: a.ports,
        shared_ring: a.shared_ring,
        single_shot: a.single_shot,
        unregistered: a.no_registered_files,
        ..server::Config::default()
    })?;
    println!(
        "listening on {} (backend: {}; {})",
        server.local_addr(),
        server.backend(),
        server.backend_reason()
    );
    let _ = stop.recv();
    eprintln!("ringport: shutting down");
    let (counters, by_port) = server.shutdown_by_port();
    println!("final counters:");
    print!("{}", counters.lines());
    if by_port.len() > 1 {
        for (i, n) in by_port.iter().enumerate() {
            println!("port{i}_admitted={n}");
        }
    }
    Ok(true)
}

fn bench(a: BenchArgs) -> Result<bool> {
    let cfg = bench::Config {
        addr: a.addr,
        connections: a.connections,
        size: a.size,
        duration: a.duration,
        warmup: a.warmup,
        pipeline: a.pipeline,
        threads: a.threads,
        backend: a.backend,
    };
    let pb = if a.json {
        indicatif::ProgressBar::hidden()
    } else {
        ui::progress_bar(cfg.warmup + cfg.duration)
    };
    let report = bench::run(&cfg, |p| ui::show(&pb, p, cfg.warmup));
    pb.finish_and_clear();
    let report = report?;
    if a.json {
        println!("{}", report.json());
    } else {
        let mut rows = vec![(
            "backend".to_string(),
            format!("{} (client side)", report.backend),
        )];
        rows.push(("client threads".to_string(), report.threads.to_string()));
        rows.extend(ui::report_rows(&report));
        print!(
            "{}",
            ui::table(&format!("ringport bench → {}", a.addr), &rows)
        );
    }
    if let Some(e) = &report.first_error {
        eprintln!("ringport: {e}");
    }
    Ok(report.ok())
}
