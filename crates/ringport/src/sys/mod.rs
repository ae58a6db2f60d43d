//! The backend contract, and the one place that chooses a backend per platform.
//!
//! Every platform module provides the same four items, and nothing outside
//! `sys/` names a platform:
//!
//! - `Port`: one completion port.
//!   - `Port::new(&Builder, concurrency) -> io::Result<Port>` picks the backend
//!     (for `Backend::Auto`, the best that works here, logging why).
//!   - `backend()`, `backend_reason()`, `concurrency()`, `stats()`, `is_closed()`.
//!   - `associate(self: &Arc<Port>, Owned, key) -> io::Result<Arc<Handle>>`:
//!     refuses a descriptor already associated with any port (R2).
//!   - `start(&Arc<Handle>, Request, user) -> Result<OpId, StartError>`: an accepted
//!     operation owns its `Request` (buffer included) until its one completion
//!     hands everything back (R3, R4); a refused one hands it back at once.
//!   - `get(timeout)` and `get_many(out, max, timeout)`: FIFO packets, LIFO waiters, the concurrency
//!     count of the calling thread (R5..R8); `post(Packet)` (R9).
//!   - `cancel(&Handle, Option<OpId>)`: asks, never removes a completion (R10).
//!   - `submit()`: flushes batched submissions.
//!   - `enter_blocking() -> bool` / `leave_blocking()`: frees and retakes the
//!     calling thread's slot (R6).
//!   - `close()`: wakes every waiter with `Closed`, cancels what is in flight and
//!     frees buffers only once the kernel has let go of them (R12).
//! - `Handle`: an associated descriptor: `key()`, `kind()`, `close()` (cancels
//!   its operations; the descriptor is closed after the last one completes, R11),
//!   `is_closed()`, `with_socket(f)`.
//! - `Owned`: a descriptor taken from a std or socket2 type by `Owned::from_io`.
//! - `is_aborted(&io::Error)`: the platform's "operation cancelled" error.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::{is_aborted, Handle, Owned, Port};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::{is_aborted, Handle, Owned, Port};
