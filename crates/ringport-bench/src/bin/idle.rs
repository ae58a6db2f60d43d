//! Server memory per idle connection: opens `--connections` connections to
//! each server, echoes one message on each, lets them sit, and reports the
//! growth of the server's resident memory (VmRSS) per connection.
//!
//! ```text
//! cargo run --release -p ringport-bench --bin idle -- [--connections 10000]
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use ringport_bench::args::Args;
use ringport_bench::server::{Running, ServerKind};
use ringport_bench::{machine, proc, stats};

const USAGE: &str = "usage: idle [--connections 10000] [--runs 3] [--threads 1] \
                     [--servers ringport-io_uring,ringport-epoll,tokio,mio,ceiling] [--bin-dir DIR]";
const MESSAGE: &[u8; 64] = &[0x5a; 64];
/// Time for the server to finish settling after the last echo.
const SETTLE: Duration = Duration::from_millis(500);

fn main() -> ExitCode {
    ringport_bench::args::main_with("idle", USAGE, run)
}

fn run() -> Result<(), String> {
    let flags = ["connections", "runs", "threads", "servers", "bin-dir"];
    let args = Args::parse(std::env::args().skip(1), &flags, &[]).map_err(|e| e.0)?;
    let conns: usize = args.get("connections", 10_000).map_err(|e| e.0)?;
    let runs: usize = args.get("runs", 3).map_err(|e| e.0)?;
    let threads: usize = args.get("threads", 1).map_err(|e| e.0)?;
    if conns == 0 || runs == 0 || threads == 0 {
        return Err("--connections, --runs and --threads must be at least 1".into());
    }
    let dir = match args.str("bin-dir") {
        Some(d) => PathBuf::from(d),
        None => own_dir()?,
    };
    let names = args
        .str("servers")
        .unwrap_or("ringport-io_uring,ringport-epoll,tokio,mio,ceiling");
    let limit = proc::raise_fd_limit().map_err(|e| format!("raising the descriptor limit: {e}"))?;
    if limit < conns as u64 + 64 {
        return Err(format!(
            "{conns} connections need more descriptors than the limit of {limit} (ulimit -n)"
        ));
    }
    eprintln!("machine: {}", machine::describe());
    println!("| server | server threads | connections | server RSS growth | per connection |");
    println!("|---|---:|---:|---:|---:|");
    for name in names.split(',') {
        let kind = ServerKind::by_name(name.trim(), &dir)
            .ok_or_else(|| format!("unknown server {name:?}"))?;
        if !kind.program.is_file() {
            return Err(missing(&kind.program));
        }
        let mut growth = Vec::new();
        let mut failure = None;
        for _ in 0..runs {
            match measure(&kind, threads, conns) {
                Ok(bytes) => growth.push(bytes),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        match (stats::median(&growth), failure) {
            (Some(g), None) => println!(
                "| {} | {threads} | {conns} | {:.1} MiB | {:.0} B |",
                kind.name,
                g / 1048576.0,
                g / conns as f64
            ),
            (_, e) => println!(
                "| {} | {threads} | {conns} | not measured: {} | |",
                kind.name,
                e.unwrap_or_default().replace('|', "/")
            ),
        }
    }
    eprintln!("machine after: {}", machine::describe());
    Ok(())
}

/// Server RSS growth in bytes from no connections to `conns` idle ones.
fn measure(kind: &ServerKind, threads: usize, conns: usize) -> Result<f64, String> {
    let server = kind.start(threads)?;
    let result = load(&server, conns);
    server.stop();
    result
}

fn load(server: &Running, conns: usize) -> Result<f64, String> {
    // One connection first, so lazily made per-thread state is in the baseline.
    let warm = echo_once(server)?;
    thread::sleep(SETTLE);
    let before = rss(server)?;
    let mut open = Vec::with_capacity(conns);
    for i in 0..conns {
        open.push(echo_once(server).map_err(|e| format!("connection {i}: {e}"))?);
    }
    thread::sleep(SETTLE);
    let after = rss(server)?;
    drop((warm, open));
    Ok(after.saturating_sub(before) as f64)
}

fn echo_once(server: &Running) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(server.addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(MESSAGE).map_err(|e| format!("send: {e}"))?;
    let mut back = [0u8; 64];
    s.read_exact(&mut back).map_err(|e| format!("echo: {e}"))?;
    if &back != MESSAGE {
        return Err("the echo differs from what was sent".into());
    }
    Ok(s)
}

fn rss(server: &Running) -> Result<u64, String> {
    proc::rss_bytes(server.pid()).map_err(|e| format!("server RSS: {e}"))
}

fn missing(p: &Path) -> String {
    format!(
        "missing {}; build it first with: cargo build --release --workspace",
        p.display()
    )
}

fn own_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating this program: {e}"))?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| "this program has no directory".into())
}
