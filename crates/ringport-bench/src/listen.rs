//! What the hand-written peer servers share: one `SO_REUSEPORT` listener per
//! thread, and SIGTERM / SIGINT taken by the main thread alone.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// A listener on `addr` that other threads may bind too (`SO_REUSEPORT`):
/// the kernel spreads new connections across them.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// `threads` listeners on one address, each with `SO_REUSEPORT`, so the
/// kernel spreads new connections across them; the first picks the port if
/// `addr` has port 0. Returns the address they share.
///
/// # Errors
///
/// A socket could not be made, bound or put to listen.
pub fn listeners(addr: SocketAddr, threads: usize) -> io::Result<(SocketAddr, Vec<TcpListener>)> {
    let first = listen(addr)?;
    let addr = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..threads {
        all.push(listen(addr)?);
    }
    Ok((addr, all))
}

/// Blocks SIGTERM and SIGINT in this thread and every thread spawned after,
/// so that only [`wait_for`] receives them.
///
/// # Errors
///
/// `pthread_sigmask` failed.
pub fn block_signals() -> io::Result<libc::sigset_t> {
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

/// Waits for one of the signals of [`block_signals`], then ends the process.
///
/// # Errors
///
/// `sigwait` failed.
pub fn wait_for(set: &libc::sigset_t) -> io::Result<()> {
    let mut sig = 0;
    // SAFETY: `set` was initialised by block_signals; `sig` is a valid out pointer.
    let rc = unsafe { libc::sigwait(set, &mut sig) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // The workers hold no state worth draining; the kernel tears down the
    // rings and sockets.
    std::process::exit(0)
}
