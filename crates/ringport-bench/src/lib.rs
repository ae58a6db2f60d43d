//! Benchmarks for ringport, kept beside the peers they compare against.
//!
//! - [`handoff`]: `post` + `get` between two threads through a
//!   [`CompletionPort`](ringport::CompletionPort), against the same hand-off
//!   through crossbeam-channel's unbounded channel. Run by the criterion bench
//!   `benches/handoff.rs` and by the `handoff` binary, which prints a figure
//!   you can quote: `cargo run --release -p ringport-bench --bin handoff`.
//! - Peer echo servers of the same shape as `ringport serve`: `tokio_echo`
//!   (tokio's multi-thread runtime), `mio_echo` (mio, a poll per thread) and
//!   `uring_echo` (a hand-written io_uring server, the ceiling reference of
//!   DESIGN.md section 5).
//! - `compare`: runs `ringport bench --json` against each server and reports
//!   throughput, latency and server CPU time per message, as ratios.
//! - `idle`: the server memory that each idle connection costs.
//!
//! Benchmarks are not tests: nothing here asserts a speed.

pub mod args;
pub mod handoff;
#[cfg(target_os = "linux")]
pub mod listen;
pub mod machine;
pub mod proc;
pub mod server;
pub mod stats;
