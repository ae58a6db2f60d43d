//! ringport: the Windows I/O completion port model, natively on Linux
//! (io_uring, with an epoll fallback) and on Windows (the real IOCP).
//!
//! A [`CompletionPort`] is a queue of completion packets shared by a pool of
//! threads. Sockets and files are [associated](CompletionPort::associate) with
//! it under a completion key; overlapped operations on them own their buffers
//! until their one completion packet hands everything back; threads
//! [dequeue](CompletionPort::get) packets, at most
//! [`concurrency`](Builder::concurrency) of them running at once, the most
//! recent waiter woken first.
//!
//! ```
//! use std::io::Write;
//! use std::net::{TcpListener, TcpStream};
//! use std::time::Duration;
//! use ringport::{CompletionPort, OpKind};
//!
//! # fn main() -> std::io::Result<()> {
//! let port = CompletionPort::new(0)?; // concurrency 0 = number of CPUs
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let mut client = TcpStream::connect(listener.local_addr()?)?;
//! let (server_side, _) = listener.accept()?;
//!
//! // CreateIoCompletionPort(socket, port, key = 7)
//! let sock = port.associate(server_side, 7)?;
//! // WSARecv with an OVERLAPPED whose caller value is 42
//! port.recv(&sock, Vec::with_capacity(4096), 42)?;
//!
//! client.write_all(b"hello")?;
//!
//! // GetQueuedCompletionStatus
//! let mut c = port.get(Some(Duration::from_secs(5)))?;
//! assert_eq!((c.kind(), c.key(), c.user()), (OpKind::Recv, 7, 42));
//! assert_eq!(c.take_result()?, 5);
//! assert_eq!(c.take_buf().unwrap(), b"hello"); // the buffer comes back
//! # Ok(())
//! # }
//! ```
//!
//! # Coming from Win32 IOCP
//!
//! | Win32 | ringport |
//! |---|---|
//! | `CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, n)` | [`CompletionPort::new(n)`](CompletionPort::new), [`CompletionPort::builder`] |
//! | `CreateIoCompletionPort(handle, port, key, 0)` | [`port.associate(io, key)`](CompletionPort::associate) → [`Handle`] |
//! | `OVERLAPPED` (per-I/O data) | the `user: u64` of each operation, [`Completion::user`], and the owned buffer |
//! | completion key (per-handle data) | [`Completion::key`], [`Handle::key`] |
//! | `AcceptEx` (+ `SO_UPDATE_ACCEPT_CONTEXT`) | [`port.accept(&listener, user)`](CompletionPort::accept), [`Completion::take_accepted`] |
//! | `ConnectEx` | [`port.connect(&socket, addr, user)`](CompletionPort::connect) |
//! | `WSARecv` / `WSASend` | [`port.recv`](CompletionPort::recv) / [`port.send`](CompletionPort::send) |
//! | `ReadFile` / `WriteFile` with `OVERLAPPED.Offset` | [`port.read_at`](CompletionPort::read_at) / [`port.write_at`](CompletionPort::write_at) |
//! | `WSA_IO_PENDING` (operation accepted) | `Ok(OpId)` |
//! | immediate failure (no packet will come) | `Err(StartError)`, buffer handed back |
//! | `GetQueuedCompletionStatus(port, .., timeout)` | [`port.get(timeout)`](CompletionPort::get); `None` = `INFINITE`, `Some(ZERO)` = poll |
//! | `GetQueuedCompletionStatusEx` | [`port.get_many(&mut out, max, timeout)`](CompletionPort::get_many) |
//! | `FALSE` + NULL `OVERLAPPED` + `WAIT_TIMEOUT` | [`GetError::TimedOut`] |
//! | `FALSE` + non-NULL `OVERLAPPED` (failed I/O) | `Ok(completion)` whose [`result`](Completion::result) is `Err` |
//! | `ERROR_ABANDONED_WAIT_0` (port closed) | [`GetError::Closed`] |
//! | `PostQueuedCompletionStatus(port, bytes, key, ov)` | [`port.post(Packet { bytes, key, user })`](CompletionPort::post) |
//! | `CancelIoEx(handle, ov)` / `CancelIoEx(handle, NULL)` | [`port.cancel(&h, Some(id))`](CompletionPort::cancel) / `port.cancel(&h, None)` |
//! | `ERROR_OPERATION_ABORTED` | [`Completion::is_aborted`] |
//! | `ERROR_NOT_FOUND` from `CancelIoEx` | `io::ErrorKind::NotFound` |
//! | `closesocket` / `CloseHandle` with I/O pending | [`Handle::close`] |
//! | `CloseHandle(port)` | [`port.close()`](CompletionPort::close), or drop the last clone |
//! | a running thread entering a wait frees its slot | [`port.blocking()`](CompletionPort::blocking) |
//! | 0-byte `WSARecv` completion = peer closed | the same: `Ok(0)` from a recv |
//!
//! # Rules
//!
//! - Every accepted operation produces exactly one completion: on success,
//!   error, cancellation, a closed handle, and a closed port (where the packet
//!   is discarded with the port, the buffer freed only after the kernel let go).
//! - Packets are dequeued FIFO; waiting threads are served LIFO.
//! - A thread counts as running from the moment a dequeue returns a packet to
//!   it until it dequeues again (or enters [`CompletionPort::blocking`]). While
//!   `concurrency` threads run, packets stay queued even if others wait.
//! - A running thread that dequeues again gives back its slot and, while the
//!   count allows, takes the head of the queue itself before any waiter, as
//!   the NT kernel's `KeRemoveQueue` does: a busy worker keeps working, and
//!   that dequeue takes no lock.
//! - [`get_many`](CompletionPort::get_many) counts as one dequeue.
//!
//! # Batching
//!
//! On io_uring, an operation started by a thread that is running on the port
//! (it is processing a completion) is batched: it reaches the kernel with the
//! thread's next dequeue, together with everything else it started, in one
//! system call, even while another thread waits in the kernel. A thread that is
//! not running on the port (say, the main thread before the workers start)
//! submits at once. [`CompletionPort::submit`] flushes by hand; a running
//! thread about to wait on something other than the port says so with
//! [`CompletionPort::blocking`], which submits too.
//!
//! # Backends
//!
//! [`Backend::Auto`] uses io_uring where the kernel allows it, else epoll,
//! logging the reason at `info` level; [`CompletionPort::backend_reason`] says it.
//! On Windows the port is the kernel's own ([`Backend::Iocp`]): each call is
//! the Win32 call of the table above, through `windows-sys`, with no
//! `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS` (every operation completes through
//! the port). The Windows build is tested under Wine in CI; see the
//! "Platform behaviour" paragraphs of [`CompletionPort`] for the differences.
//!
//! A port dequeued by one thread only ([`Builder::single_thread`]) gets an
//! io_uring ring of that thread's own (`SINGLE_ISSUER` + `DEFER_TASKRUN`).

#![warn(missing_docs)]

mod completion;
mod handle;
mod op;
mod pool;
mod port;
mod sys;

pub use completion::{Completion, GetError, OpId, OpKind, Packet, StartError};
pub use handle::{Associate, Handle, HandleKind};
pub use port::{Backend, Blocking, Builder, CompletionPort, Stats};
