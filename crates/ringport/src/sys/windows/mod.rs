//! Windows: the kernel's own I/O completion port.
//!
//! The queue, the LIFO wake-up of waiters and the concurrency limit are the
//! kernel's (`CreateIoCompletionPort`, `GetQueuedCompletionStatusEx`). This
//! module adds what the public API promises on top: operations that own their
//! buffers until their one packet is dequeued, posted packets told apart from
//! I/O packets, deferred close, a port close that wakes every waiter, and the
//! counters of [`Stats`](crate::Stats) the kernel does not report.
//!
//! Files:
//! - `port.rs`: the port, dequeue, post, close.
//! - `op.rs`: one operation in flight (an `OVERLAPPED` first, then what it
//!   owns), and the one hand-off of it to the kernel and back.
//! - `socket.rs`, `file.rs`: the Win32 calls that start each operation.
//! - `owned.rs`: descriptors taken from std and socket2 types.
//! - `associate.rs`: tying a descriptor to the port and untying it, and one
//!   port per open file (R2).
//! - `handle.rs`: associated handles, deferred close (R11).
//! - `thread.rs`: which port the calling thread runs on (for `Stats::running`).
//!
//! No operation uses `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS`: every operation
//! that was started completes through the port, even when the call finished
//! at once, which keeps "exactly one packet per operation" trivially true.

mod associate;
mod file;
mod handle;
mod op;
mod owned;
mod port;
mod socket;
mod thread;

use std::io;

use windows_sys::Win32::Foundation::ERROR_OPERATION_ABORTED;

pub(crate) use handle::Handle;
pub(crate) use owned::Owned;
pub(crate) use port::Port;

/// `ERROR_OPERATION_ABORTED` (also `WSA_OPERATION_ABORTED`, the same number).
pub(crate) fn is_aborted(e: &io::Error) -> bool {
    e.raw_os_error() == Some(ERROR_OPERATION_ABORTED as i32)
}

/// The calling thread's last Win32 error.
fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// The calling thread's last Winsock error.
fn wsa_error() -> io::Error {
    // SAFETY: reads a thread-local error code; no arguments.
    io::Error::from_raw_os_error(unsafe {
        windows_sys::Win32::Networking::WinSock::WSAGetLastError()
    })
}
