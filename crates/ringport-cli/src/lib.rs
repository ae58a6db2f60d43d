//! The `ringport` tool as a library: the echo server, the load generator and
//! the demo, so that tests (and the bench crate) can drive them in process.
//!
//! - [`server::Server`]: the classic IOCP echo server on one
//!   [`ringport::CompletionPort`], one worker per CPU, with connection limits,
//!   an idle timeout, per-connection backpressure and counters.
//! - [`bench::run`]: a closed-loop, byte-verifying load generator whose client
//!   side is a completion port too.
//! - [`demo::run`]: both at once on loopback, with a results table.

pub mod bench;
pub mod demo;
pub mod error;
pub mod parse;
pub mod server;
pub mod ui;

pub use error::{Error, Result};
