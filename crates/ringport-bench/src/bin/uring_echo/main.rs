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

const USAGE: &str =
    "usage: uring_echo [--addr 127.0.0.1:0] [--threads N (CPUs)] [--coop] [--single-shot]\n\
    --coop: set the rings up with COOP_TASKRUN, as ringport's shared ring is,\n\
    instead of SINGLE_ISSUER + DEFER_TASKRUN (to measure what those flags are worth)\n\
    --single-shot: one receive per message, armed again after each, as ringport's\n\
    pooled receives are, instead of one multishot receive per connection";

#[cfg(target_os = "linux")]
fn main() -> ExitCode {
    ringport_bench::args::main_with("uring_echo", USAGE, || {
        let (addr, threads, args) =
            ringport_bench::args::server_args_with(&["coop", "single-shot"])?;
        let setup = worker::Setup {
            coop: args.has("coop"),
            single_shot: args.has("single-shot"),
        };
        server::run(addr, threads, setup).map_err(|e| e.to_string())
    })
}

#[cfg(not(target_os = "linux"))]
fn main() -> ExitCode {
    ringport_bench::args::main_with("uring_echo", USAGE, || {
        Err("the io_uring ceiling server runs only on Linux".into())
    })
}
