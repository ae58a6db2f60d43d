//! Listeners, signals and the worker threads of the ceiling server.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::thread;

use socket2::{Domain, Protocol, Socket, Type};

use crate::worker::Worker;

/// Binds one `SO_REUSEPORT` listener per thread (the first picks the port if
/// `addr` has port 0), starts the workers, and waits for SIGTERM or SIGINT.
///
/// # Errors
///
/// Binding failed, or a ring could not be set up; a worker that fails later
/// ends the process with its error.
pub fn run(addr: SocketAddr, threads: usize) -> io::Result<()> {
    let first = listen(addr)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(listen(addr)?);
    }
    let signals = block_signals()?;
    let mut setups = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let (tx, rx) = std::sync::mpsc::channel();
        thread::Builder::new()
            .name(format!("uring-echo-{i}"))
            .spawn(move || match Worker::new(l) {
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

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// Blocks SIGTERM and SIGINT in this thread and every thread spawned after,
/// so that only [`wait_for`] receives them.
fn block_signals() -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it below.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame; the pointers live
    // for the calls; a null old-set pointer is allowed.
    let rc = unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(set)
}

fn wait_for(set: &libc::sigset_t) -> io::Result<()> {
    let mut sig = 0;
    // SAFETY: `set` was initialised by block_signals; `sig` is a valid out pointer.
    let rc = unsafe { libc::sigwait(set, &mut sig) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // The workers hold no state worth draining; the kernel tears the rings down.
    std::process::exit(0)
}
