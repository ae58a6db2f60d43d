//! Listeners, signals and the worker threads of the ceiling server.

use std::io;
use std::net::SocketAddr;
use std::thread;

use ringport_bench::listen::{block_signals, listeners, wait_for};

use crate::worker::{Setup, Worker};

/// Binds one `SO_REUSEPORT` listener per thread (the first picks the port if
/// `addr` has port 0), starts the workers, and waits for SIGTERM or SIGINT.
/// `setup`: the best ring setup, or what it is measured against.
///
/// # Errors
///
/// Binding failed, or a ring could not be set up; a worker that fails later
/// ends the process with its error.
pub fn run(addr: SocketAddr, threads: usize, setup: Setup) -> io::Result<()> {
    let (addr, listeners) = listeners(addr, threads)?;
    let signals = block_signals()?;
    let mut setups = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let (tx, rx) = std::sync::mpsc::channel();
        thread::Builder::new()
            .name(format!("uring-echo-{i}"))
            .spawn(move || match Worker::new(l, setup) {
                Ok(mut w) => {
                    let _ = tx.send(Ok(w.setup()));
                    if let Err(e) = w.run() {
                        eprintln!("uring_echo: worker {i}: {e}");
                        std::process::exit(1);
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            })?;
        setups.push(rx.recv().map_err(io::Error::other)??);
    }
    println!(
        "listening on {addr} (backend: io_uring ceiling, {threads} threads, {})",
        setups[0]
    );
    wait_for(&signals)
}
