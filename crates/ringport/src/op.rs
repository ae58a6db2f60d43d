//! Overlapped operations as the caller describes them, before a backend takes them.
//!
//! Every operation is defined once here; each backend turns a [`Request`] into
//! its own kernel call (an io_uring entry, a readiness retry, a Win32 call).

use std::io;
use std::net::SocketAddr;

use crate::completion::{OpKind, StartError};
use crate::handle::HandleKind;

/// One overlapped operation with everything it owns until it completes.
#[derive(Debug)]
pub(crate) enum Request {
    Accept,
    Connect(SocketAddr),
    Recv(Vec<u8>),
    /// A receive whose buffer comes from the port's pool when data arrives;
    /// `buf` holds it from then on (its length stays 0 until the completion
    /// sets it).
    RecvPooled {
        buf: Option<Vec<u8>>,
    },
    Send(Vec<u8>),
    Read(Vec<u8>, u64),
    Write(Vec<u8>, u64),
}

impl Request {
    pub(crate) fn kind(&self) -> OpKind {
        match self {
            Request::Accept => OpKind::Accept,
            Request::Connect(_) => OpKind::Connect,
            Request::Recv(_) | Request::RecvPooled { .. } => OpKind::Recv,
            Request::Send(_) => OpKind::Send,
            Request::Read(..) => OpKind::Read,
            Request::Write(..) => OpKind::Write,
        }
    }

    /// The buffer, handed back when the request is refused or completes.
    pub(crate) fn into_buf(self) -> Option<Vec<u8>> {
        match self {
            Request::Recv(b) | Request::Send(b) | Request::Read(b, _) | Request::Write(b, _) => {
                Some(b)
            }
            Request::RecvPooled { buf, .. } => buf,
            Request::Accept | Request::Connect(_) => None,
        }
    }

    /// Refuses a request that the handle cannot carry, giving the buffer back.
    /// The check itself is inline and by reference; only a refusal, which
    /// moves the request into its error, is out of line.
    #[inline]
    pub(crate) fn check(self, handle: HandleKind) -> Result<Request, StartError> {
        let ok = matches!(
            (&self, handle),
            (Request::Accept, HandleKind::Listener)
                | (Request::Connect(_), HandleKind::Socket)
                | (
                    Request::Recv(_) | Request::RecvPooled { .. } | Request::Send(_),
                    HandleKind::Stream | HandleKind::Socket
                )
                | (Request::Read(..) | Request::Write(..), HandleKind::File)
        );
        let full =
            matches!(&self, Request::Recv(b) | Request::Read(b, _) if b.capacity() == b.len());
        if ok && !full {
            return Ok(self);
        }
        Err(self.refuse_unfit(handle, ok))
    }

    /// The refusal of [`check`](Self::check): `fits` says the operation suits
    /// the handle (so the buffer is full).
    #[cold]
    #[inline(never)]
    fn refuse_unfit(self, handle: HandleKind, fits: bool) -> StartError {
        let msg = if fits {
            "receive buffer has no spare capacity".to_string()
        } else {
            format!(
                "{:?} is not an operation for a {handle:?} handle",
                self.kind()
            )
        };
        self.refuse(io::Error::new(io::ErrorKind::InvalidInput, msg))
    }

    /// The refusal for this request, carrying its buffer back.
    pub(crate) fn refuse(self, error: io::Error) -> StartError {
        StartError::new(error, self.into_buf())
    }
}
