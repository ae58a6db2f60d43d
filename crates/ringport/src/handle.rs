//! Handles associated with a port: the per-handle side of the IOCP model.

use std::fmt;
use std::io;
use std::sync::Arc;

use crate::sys;

/// What a [`Handle`] refers to; it decides which operations it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HandleKind {
    /// A listening TCP socket: [`accept`](crate::CompletionPort::accept).
    Listener,
    /// A connected TCP socket: [`recv`](crate::CompletionPort::recv),
    /// [`send`](crate::CompletionPort::send).
    Stream,
    /// A socket that is not connected yet (made with `socket2`):
    /// [`connect`](crate::CompletionPort::connect), then as a stream.
    Socket,
    /// A file: [`read_at`](crate::CompletionPort::read_at),
    /// [`write_at`](crate::CompletionPort::write_at).
    File,
}

mod sealed {
    pub trait Sealed {}
}

/// Things that can be associated with a completion port: `TcpListener`,
/// `TcpStream`, `File` and `socket2::Socket`.
///
/// Association takes ownership, as `CreateIoCompletionPort` ties the handle to
/// the port for the rest of its life.
pub trait Associate: sealed::Sealed {
    // The trait is sealed, so nobody outside the crate can name or call this.
    #[doc(hidden)]
    #[allow(private_interfaces)]
    fn into_sys(self) -> io::Result<sys::Owned>;
}

macro_rules! associate_via_sys {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Associate for $t {
            #[allow(private_interfaces)]
            fn into_sys(self) -> io::Result<sys::Owned> {
                sys::Owned::from_io(self)
            }
        }
    )*};
}

associate_via_sys!(
    std::net::TcpListener,
    std::net::TcpStream,
    std::fs::File,
    socket2::Socket
);

/// A socket or file associated with one [`CompletionPort`](crate::CompletionPort),
/// with its completion key (the per-handle data of IOCP).
///
/// `Handle` is a cheap clone: every operation in flight holds one, and each
/// [`Completion`](crate::Completion) hands one back, so a worker can start the
/// next operation on the same connection without a lookup table.
///
/// # Closing
///
/// [`close`](Handle::close) is `closesocket`/`CloseHandle`: every operation in
/// flight on the handle is cancelled and still completes once, as aborted
/// (unless it finished first). The descriptor itself is closed only after the
/// kernel has finished with the last of them, so its number is never reused
/// while an operation could still touch it. Dropping the last clone of a handle
/// that has no operation in flight closes it too.
///
/// # Platform behaviour
///
/// On Windows, `close` is `CancelIoEx(handle, NULL)` at once, and
/// `closesocket`/`CloseHandle` once the last cancelled operation's packet has
/// been dequeued (Windows itself would cancel the pending I/O at
/// `closesocket`, but the handle value could then be reused while packets for
/// it are still queued). On Linux the backend cancels the operations and
/// defers `close(2)` the same way.
#[derive(Clone)]
pub struct Handle {
    pub(crate) inner: Arc<sys::Handle>,
}

impl Handle {
    /// The completion key given at association.
    pub fn key(&self) -> u64 {
        self.inner.key()
    }

    /// What the handle refers to.
    pub fn kind(&self) -> HandleKind {
        self.inner.kind()
    }

    /// Closes the handle: cancels what is in flight on it, and closes the
    /// descriptor once the kernel is done with it.
    ///
    /// Operations started after this are refused. Closing twice does nothing.
    pub fn close(&self) {
        self.inner.close();
    }

    /// True once [`close`](Handle::close) was called (or the port closed).
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Runs `f` with a borrowed view of the socket, for options such as
    /// `set_nodelay` or `shutdown`.
    ///
    /// # Errors
    ///
    /// Fails when the handle is closed or `f` fails.
    pub fn with_socket<R>(
        &self,
        f: impl FnOnce(socket2::SockRef<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        self.inner.with_socket(f)
    }

    /// True when both values are clones of one handle.
    pub fn ptr_eq(&self, other: &Handle) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("key", &self.key())
            .field("kind", &self.kind())
            .field("closed", &self.is_closed())
            .finish()
    }
}
