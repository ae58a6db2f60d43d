//! The ceiling reference: a minimal echo server written directly on the
//! `io-uring` crate, the fastest shape known on this machine (DESIGN.md §5).
//!
//! One ring per thread, set up with `SINGLE_ISSUER` + `DEFER_TASKRUN`; one
//! `SO_REUSEPORT` listener per thread with a multishot accept; a multishot
//! receive per connection into a provided-buffer ring of 512 x 16 KiB per
//! thread; the echo is sent straight from the receive buffer, which goes back
//! to the ring when the send is done. It has none of ringport's guarantees
//! and is not meant to: it shows what the kernel allows.
//!
//! ```text
//! uring_echo --addr 127.0.0.1:0 --threads 1
//! ```
//!
//! Prints `listening on <addr> (backend: io_uring ceiling, ...)` and exits 0
//! on SIGTERM or Ctrl-C. On a kernel without the ring flags it falls back to
//! `COOP_TASKRUN` or a plain ring and says so; without multishot operations
//! or buffer rings it stops with an error naming what is missing.

#[cfg(target_os = "linux")]
mod bufring;
#[cfg(target_os = "linux")]
mod server;
#[cfg(target_os = "linux")]
mod worker;

use std::process::ExitCode;

const USAGE: &str = "usage: uring_echo [--addr 127.0.0.1:0] [--threads N (CPUs)]";

#[cfg(target_os = "linux")]
fn main() -> ExitCode {
    use ringport_bench::args::Args;
    let args = match Args::parse(std::env::args().skip(1), &["addr", "threads"], &[]) {
        Ok(a) => a,
        Err(e) if e.0 == "help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => return fail(&e),
    };
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let addr = match args.str("addr").unwrap_or("127.0.0.1:0").parse() {
        Ok(a) => a,
        Err(e) => return fail(&format_args!("--addr: {e}")),
    };
    let threads = match args.get("threads", cpus) {
        Ok(0) => return fail(&"--threads must be at least 1"),
        Ok(n) => n,
        Err(e) => return fail(&e),
    };
    match server::run(addr, threads) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

#[cfg(not(target_os = "linux"))]
fn main() -> ExitCode {
    let _ = USAGE;
    fail(&"the io_uring ceiling server runs only on Linux")
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("uring_echo: {e}");
    ExitCode::FAILURE
}
