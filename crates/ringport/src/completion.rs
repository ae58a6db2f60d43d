//! Completion packets, caller-made packets and the port's own errors.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::num::NonZeroU64;

use crate::handle::Handle;
use crate::sys;

/// The kind of operation a completion belongs to.
///
/// Win32 has no such field (the caller recognises its own `OVERLAPPED`); ringport
/// records it so a worker can dispatch on it without a side table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// [`CompletionPort::accept`](crate::CompletionPort::accept) (`AcceptEx`).
    Accept,
    /// [`CompletionPort::connect`](crate::CompletionPort::connect) (`ConnectEx`).
    Connect,
    /// [`CompletionPort::recv`](crate::CompletionPort::recv) (`WSARecv`).
    Recv,
    /// [`CompletionPort::send`](crate::CompletionPort::send) (`WSASend`).
    Send,
    /// [`CompletionPort::read_at`](crate::CompletionPort::read_at) (`ReadFile` with an offset).
    Read,
    /// [`CompletionPort::write_at`](crate::CompletionPort::write_at) (`WriteFile` with an offset).
    Write,
    /// A packet made by [`CompletionPort::post`](crate::CompletionPort::post)
    /// (`PostQueuedCompletionStatus`).
    Post,
}

/// Identifies one accepted operation, for [`CompletionPort::cancel`](crate::CompletionPort::cancel).
///
/// Ids are unique for the life of the port: an id never names a later operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(NonZeroU64);

impl OpId {
    /// The id of the backend's operation number `raw`. Stored plus one, so
    /// that `Option<OpId>` (in every [`Completion`]) takes 8 bytes, not 16.
    #[inline]
    pub(crate) fn new(raw: u64) -> OpId {
        // Saturating: no backend hands out `u64::MAX` (Linux tokens never
        // use the top bit, Windows counts from 1), and no input panics here.
        OpId(NonZeroU64::MIN.saturating_add(raw))
    }

    /// The backend's operation number.
    #[inline]
    pub(crate) fn raw(self) -> u64 {
        self.0.get() - 1
    }
}

/// A caller-made packet for [`CompletionPort::post`](crate::CompletionPort::post).
///
/// The three fields are those of `PostQueuedCompletionStatus`:
/// `dwNumberOfBytesTransferred`, `dwCompletionKey` and `lpOverlapped`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Packet {
    /// Reported as the completion's byte count.
    pub bytes: usize,
    /// Reported as the completion key.
    pub key: u64,
    /// Reported as the per-operation caller value.
    pub user: u64,
}

/// One dequeued completion packet: the twin of what `GetQueuedCompletionStatus`
/// returns (bytes, key, `OVERLAPPED`), plus everything the operation owned.
///
/// The buffer handed to the operation comes back here whatever the outcome:
/// success, error, cancellation or a closed handle. For a receive or a read its
/// length has grown by the bytes received; for a send or a write it is unchanged.
pub struct Completion {
    pub(crate) kind: OpKind,
    pub(crate) key: u64,
    pub(crate) user: u64,
    pub(crate) id: Option<OpId>,
    pub(crate) result: io::Result<usize>,
    pub(crate) buf: Option<Vec<u8>>,
    pub(crate) handle: Option<Handle>,
    /// Boxed: rare, and it would make every packet 32 bytes longer.
    pub(crate) accepted: Option<Box<(TcpStream, SocketAddr)>>,
}

impl Completion {
    /// A completion for a posted packet.
    #[inline]
    pub(crate) fn posted(p: Packet) -> Completion {
        Completion {
            kind: OpKind::Post,
            key: p.key,
            user: p.user,
            id: None,
            result: Ok(p.bytes),
            buf: None,
            handle: None,
            accepted: None,
        }
    }

    /// The operation this packet completes.
    pub fn kind(&self) -> OpKind {
        self.kind
    }

    /// The completion key given to [`associate`](crate::CompletionPort::associate)
    /// (or to [`post`](crate::CompletionPort::post)).
    pub fn key(&self) -> u64 {
        self.key
    }

    /// The per-operation caller value (the `OVERLAPPED` of Win32).
    pub fn user(&self) -> u64 {
        self.user
    }

    /// The id returned when the operation was started; `None` for a posted packet.
    pub fn id(&self) -> Option<OpId> {
        self.id
    }

    /// Bytes transferred, or the error the operation failed with.
    ///
    /// An `Err` here is a failed I/O (Win32: `GetQueuedCompletionStatus` returns
    /// `FALSE` with a non-NULL `OVERLAPPED`); it is never a timeout. For an
    /// accept, `Ok(0)`; the new socket is in [`take_accepted`](Self::take_accepted).
    pub fn result(&self) -> &io::Result<usize> {
        &self.result
    }

    /// Takes the result out, leaving `Ok(0)`.
    pub fn take_result(&mut self) -> io::Result<usize> {
        std::mem::replace(&mut self.result, Ok(0))
    }

    /// True when the operation ended because it was cancelled: by
    /// [`cancel`](crate::CompletionPort::cancel), by closing its handle, or by
    /// the port shutting down (Win32: `ERROR_OPERATION_ABORTED`).
    pub fn is_aborted(&self) -> bool {
        matches!(&self.result, Err(e) if sys::is_aborted(e))
    }

    /// The operation's buffer, if it had one, without taking it.
    pub fn buf(&self) -> Option<&Vec<u8>> {
        self.buf.as_ref()
    }

    /// Takes the operation's buffer back.
    pub fn take_buf(&mut self) -> Option<Vec<u8>> {
        self.buf.take()
    }

    /// The handle the operation ran on; `None` for a posted packet.
    pub fn handle(&self) -> Option<&Handle> {
        self.handle.as_ref()
    }

    /// For a successful accept: the new connected socket and the peer's address.
    ///
    /// The socket is not associated with any port yet.
    pub fn take_accepted(&mut self) -> Option<(TcpStream, SocketAddr)> {
        self.accepted.take().map(|a| *a)
    }
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("kind", &self.kind)
            .field("key", &self.key)
            .field("user", &self.user)
            .field("id", &self.id)
            .field("result", &self.result)
            .field("buf_len", &self.buf.as_ref().map(Vec::len))
            .field("accepted", &self.accepted.as_ref().map(|a| a.1))
            .finish()
    }
}

/// Why a dequeue returned no packet.
///
/// Win32 reports both through `GetQueuedCompletionStatus` returning `FALSE` with a
/// NULL `OVERLAPPED`: `WAIT_TIMEOUT` and `ERROR_ABANDONED_WAIT_0`. A failed I/O
/// is *not* one of these: it is a [`Completion`] whose [`result`](Completion::result)
/// is an error.
#[derive(Debug)]
pub enum GetError {
    /// The timeout elapsed with no packet for this thread (`WAIT_TIMEOUT`).
    TimedOut,
    /// The port was closed (`ERROR_ABANDONED_WAIT_0`).
    Closed,
    /// The kernel refused the wait itself (not an I/O failure).
    Os(io::Error),
}

impl fmt::Display for GetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GetError::TimedOut => f.write_str("timed out waiting for a completion"),
            GetError::Closed => f.write_str("completion port closed"),
            GetError::Os(e) => write!(f, "waiting on the completion port failed: {e}"),
        }
    }
}

impl std::error::Error for GetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GetError::Os(e) => Some(e),
            _ => None,
        }
    }
}

impl From<GetError> for io::Error {
    fn from(e: GetError) -> io::Error {
        match e {
            GetError::TimedOut => io::Error::new(io::ErrorKind::TimedOut, e),
            GetError::Closed => io::Error::new(io::ErrorKind::BrokenPipe, e),
            GetError::Os(e) => e,
        }
    }
}

/// An operation that was not started; it gives back what it was handed.
///
/// No completion will ever be queued for it (Win32: `WSARecv` failing with an
/// error other than `WSA_IO_PENDING`).
pub struct StartError {
    error: io::Error,
    buf: Option<Vec<u8>>,
}

impl StartError {
    pub(crate) fn new(error: io::Error, buf: Option<Vec<u8>>) -> StartError {
        StartError { error, buf }
    }

    /// Why the operation was refused.
    pub fn error(&self) -> &io::Error {
        &self.error
    }

    /// The buffer the operation was given, handed back.
    pub fn into_buf(self) -> Option<Vec<u8>> {
        self.buf
    }
}

impl fmt::Debug for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StartError")
            .field("error", &self.error)
            .field("buf_len", &self.buf.as_ref().map(Vec::len))
            .finish()
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "operation not started: {}", self.error)
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<StartError> for io::Error {
    fn from(e: StartError) -> io::Error {
        e.error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_ids_keep_their_number_and_order_and_take_no_tag() {
        assert_eq!(std::mem::size_of::<Option<OpId>>(), 8);
        for raw in [0, 1, 42, u64::from(u32::MAX) << 32, u64::MAX >> 1] {
            assert_eq!(OpId::new(raw).raw(), raw);
        }
        assert!(OpId::new(0) < OpId::new(1));
        assert_ne!(OpId::new(0), OpId::new(1));
    }

    /// Every dequeue moves a completion; keep it from growing unnoticed.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_completion_is_at_most_88_bytes() {
        assert!(std::mem::size_of::<Completion>() <= 88);
    }
}
